#!/usr/bin/env python3
"""An RFC 6962 / RFC 9162 verifier independent of meshca: Python's hashlib for the Merkle tree,
the openssl CLI for the Ed25519 signature of the C2SP signed-note checkpoint.

  rfc6962.py inclusion VKEY < `meshca audit prove` output
  rfc6962.py consistency VKEY OLD_CHECKPOINT NEW_CHECKPOINT < `meshca audit verify --since` output

Prints "ok" and exits 0, or says what failed and exits 1.
"""
import base64
import hashlib
import os
import subprocess
import sys
import tempfile


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf_hash, index, size, path, root):
    # RFC 9162 2.1.3.2
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = node(p, r)
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first, second, first_hash, second_hash, path):
    # RFC 9162 2.1.4.2
    if first == second:
        return not path and first_hash == second_hash
    if first == 0 or first > second or not path:
        return False
    if first & (first - 1) == 0:
        path = [first_hash] + path
    fn, sn = first - 1, second - 1
    while fn % 2 == 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0


def open_note(note, vkey):
    """C2SP signed-note: check the Ed25519 signature by vkey; return (origin, size, root)."""
    name, key_hash, key_b64 = vkey.strip().split("+", 2)
    key = base64.b64decode(key_b64)
    if key[0] != 1 or len(key) != 33:
        fail("not an Ed25519 verifier key")
    if hashlib.sha256(name.encode() + b"\n" + key).digest()[:4].hex() != key_hash:
        fail("verifier key hash")
    body, sigs = note.split("\n\n", 1)
    body += "\n"
    for line in sigs.splitlines():
        if not line.startswith("\u2014 " + name + " "):
            continue
        blob = base64.b64decode(line.rsplit(" ", 1)[1])
        if blob[:4].hex() != key_hash:
            continue
        with tempfile.TemporaryDirectory() as d:
            spki = bytes.fromhex("302a300506032b6570032100") + key[1:]
            pub = os.path.join(d, "pub.pem")
            with open(pub, "w") as f:
                f.write("-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(spki).decode() + "\n-----END PUBLIC KEY-----\n")
            for fname, data in (("msg", body.encode()), ("sig", blob[4:])):
                with open(os.path.join(d, fname), "wb") as f:
                    f.write(data)
            r = subprocess.run(
                ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin",
                 "-in", os.path.join(d, "msg"), "-sigfile", os.path.join(d, "sig")],
                capture_output=True,
            )
            if r.returncode != 0:
                fail("openssl: the checkpoint signature does not verify: " + r.stdout.decode() + r.stderr.decode())
        lines = body.split("\n")
        return lines[0], int(lines[1]), base64.b64decode(lines[2])
    fail("no signature by " + name)


def main():
    mode = sys.argv[1]
    text = sys.stdin.read()
    if mode == "inclusion":
        head, note = text.split("checkpoint:\n", 1)
        fields = {}
        path = []
        for line in head.splitlines():
            k, v = line.split(": ", 1)
            if k == "path":
                path.append(base64.b64decode(v))
            else:
                fields[k] = v
        origin, size, root = open_note(note, sys.argv[2])
        leaf = base64.b64decode(fields["leaf"])
        leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()
        if base64.b64decode(fields["leaf hash"]) != leaf_hash:
            fail("leaf hash")
        if size != int(fields["tree size"]) or root != base64.b64decode(fields["root hash"]):
            fail("the proof is not of the signed checkpoint")
        if not verify_inclusion(leaf_hash, int(fields["leaf index"]), size, path, root):
            fail("inclusion proof")
    elif mode == "consistency":
        old = open_note(open(sys.argv[3]).read(), sys.argv[2])
        new = open_note(open(sys.argv[4]).read(), sys.argv[2])
        proof = [base64.b64decode(l.split(": ", 1)[1]) for l in text.splitlines() if l.startswith("consistency proof: ")]
        if not verify_consistency(old[1], new[1], old[2], new[2], proof):
            fail("consistency proof")
    else:
        fail("unknown mode " + mode)
    print("ok")


main()
