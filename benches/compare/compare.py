#!/usr/bin/env python3
"""Times the same CA operations with the tools users would otherwise use, in one run, and writes
BENCHMARKS.md: OpenSSL's command line (the seed's manual workflow, process start included, as a
user pays it), pyca/cryptography in one Python process, meshca's Python binding in the same
process, and meshca's Rust numbers from criterion (`cargo bench -p meshca-benches`).

Run from the repository root, after `./scripts/test.sh` (which builds .venv) and `cargo bench`:
    .venv/bin/python benches/compare/compare.py [--runs N] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import cryptography
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import meshca

REPO = Path(__file__).resolve().parents[2]
NOW = datetime.datetime.now(datetime.timezone.utc)


def interleaved(fns: List[Optional[Callable[[], object]]], runs: List[int]) -> List[Optional[tuple]]:
    """Times every function in one interleaved loop (a round calls each once, in turn), so machine
    noise falls on all of them alike. Returns (median, p90) per function, None where absent."""
    samples: List[List[float]] = [[] for _ in fns]
    for f in fns:
        if f:
            f()  # warm up
    for i in range(max(runs)):
        for k, f in enumerate(fns):
            if f and i < runs[k]:
                t = time.perf_counter()
                f()
                samples[k].append(time.perf_counter() - t)
    out: List[Optional[tuple]] = []
    for s in samples:
        if not s:
            out.append(None)
            continue
        s.sort()
        out.append((statistics.median(s), s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]))
    return out


# ---- pyca/cryptography: the same profiles, built by hand ------------------------------------


def py_name(**attrs: str) -> x509.Name:
    oids = {"O": NameOID.ORGANIZATION_NAME, "CN": NameOID.COMMON_NAME, "L": NameOID.LOCALITY_NAME}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in attrs.items()])


def py_key(kind: str):
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(65537, int(kind.removeprefix("rsa")))


def py_root(kind: str = "p256"):
    key = py_key(kind)
    name = py_name(O="Istio", CN="Root CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(minutes=5))
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def py_intermediate(root_key, root_cert, kind: str = "p256"):
    key = py_key(kind)
    cert = (
        x509.CertificateBuilder()
        .subject_name(py_name(O="Istio", CN="Intermediate CA", L="cluster1"))
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(minutes=5))
        .not_valid_after(NOW + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("istiod.istio-system.svc")]), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    # A bundle is files: serialise what istiod reads.
    key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    cert.public_bytes(serialization.Encoding.PEM)
    return key, cert


def py_leaf(ca_key, ca_cert, kind: str = "p256"):
    key = py_key(kind)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(minutes=5))
        .not_valid_after(NOW + datetime.timedelta(hours=24))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/app")]),
            critical=True,
        )
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


# ---- OpenSSL command line: the seed's manual steps ------------------------------------------

ROOT_CONF = """[ req ]
prompt = no
distinguished_name = dn
x509_extensions = ext
[ dn ]
O = Istio
CN = Root CA
[ ext ]
basicConstraints = critical, CA:true
keyUsage = critical, digitalSignature, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

INT_EXT = """basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, digitalSignature, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:istiod.istio-system.svc
"""

LEAF_EXT = """basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = critical, URI:spiffe://cluster.local/ns/default/sa/app
authorityKeyIdentifier = keyid
"""


def sh(*args: str, cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)


def keygen_args(kind: str, out: str) -> List[str]:
    if kind.startswith("rsa"):
        return ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{kind[3:]}", "-out", out]
    curve = {"p256": "P-256", "p384": "P-384"}[kind]
    return ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{curve}", "-out", out]


def ossl_root(d: Path, kind: str = "p256") -> None:
    (d / "root.conf").write_text(ROOT_CONF)
    sh(*keygen_args(kind, "root.key"), cwd=d)
    sh("openssl", "req", "-x509", "-new", "-key", "root.key", "-config", "root.conf", "-days", "3650", "-sha256", "-out", "root.pem", cwd=d)


def ossl_intermediate(d: Path, kind: str = "p256") -> None:
    (d / "int.ext").write_text(INT_EXT)
    sh(*keygen_args(kind, "c1.key"), cwd=d)
    sh("openssl", "req", "-new", "-key", "c1.key", "-subj", "/O=Istio/CN=Intermediate CA/L=cluster1", "-out", "c1.csr", cwd=d)
    sh("openssl", "x509", "-req", "-in", "c1.csr", "-CA", "root.pem", "-CAkey", "root.key", "-set_serial", "0x" + os.urandom(16).hex(),
       "-days", "365", "-sha256", "-extfile", "int.ext", "-out", "c1.pem", cwd=d)


def ossl_leaf(d: Path, kind: str = "p256") -> None:
    (d / "leaf.ext").write_text(LEAF_EXT)
    sh(*keygen_args(kind, "leaf.key"), cwd=d)
    sh("openssl", "req", "-new", "-key", "leaf.key", "-subj", "/", "-out", "leaf.csr", cwd=d)
    sh("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "c1.pem", "-CAkey", "c1.key", "-set_serial", "0x" + os.urandom(16).hex(),
       "-days", "1", "-sha256", "-extfile", "leaf.ext", "-out", "leaf.pem", cwd=d)


# ---- criterion ---------------------------------------------------------------------------------


def criterion_median(group: str, bench: str) -> Optional[float]:
    # A benchmark group is a directory; a plain `bench_function("a/b")` is stored as `a_b`.
    root = REPO / "target" / "criterion"
    for path in (root / group / bench, root / f"{group}_{bench}"):
        try:
            return json.loads((path / "new" / "estimates.json").read_text())["median"]["point_estimate"] / 1e9
        except (OSError, KeyError, ValueError):
            continue
    return None


def floor_of(row: str) -> Optional[float]:
    """The floor a row is compared with: generating its new key (and, for P-256, one signature)."""
    if "RSA-4096 intermediate" in row:
        return criterion_median("floor_rsa", "awslc_rsa4096_keygen")
    if "RSA-2048" in row:
        return criterion_median("floor_rsa", "awslc_rsa2048_keygen")
    if "P-384" in row:
        return criterion_median("floor", "awslc_p384_keygen")
    return criterion_median("floor", "ring_p256_keygen_plus_sign")


def fmt(seconds: Optional[float]) -> str:
    if seconds is None:
        return "n/a"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return "n/a" if a is None or b is None else f"{a / b:.1f}x"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    ossl = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return (
        f"{os.cpu_count()} cores ({cpu}){mem}, {platform.system()} {platform.release()}; {ossl}; "
        f"Python {platform.python_version()}, cryptography {cryptography.__version__}; {rustc}"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30, help="runs per in-process operation (OpenSSL CLI: a third)")
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = ap.parse_args()
    runs, cli_runs = args.runs, max(5, args.runs // 3)

    tmp = Path(tempfile.mkdtemp(prefix="meshca-compare-"))
    ossl_root(tmp)
    rsa_dir = tmp / "rsa"
    rsa_dir.mkdir()
    ossl_root(rsa_dir, "rsa4096")
    ossl_intermediate(tmp)

    py_root_key, py_root_cert = py_root()
    py_rsa_root_key, py_rsa_root_cert = py_root("rsa4096")
    py_c1_key, py_c1_cert = py_intermediate(py_root_key, py_root_cert)

    m_root = meshca.SigningCa.generate_root()
    m_rsa_root = meshca.SigningCa.generate_root(key="rsa-4096")
    m_c1 = meshca.SigningCa.from_cacerts(m_root.issue_intermediate("cluster1"))
    m_files = m_root.issue_intermediate("cluster1").files
    spiffe = "spiffe://cluster.local/ns/default/sa/app"

    rows = [
        # (operation, openssl, pyca, meshca python, (criterion group, bench))
        ("root CA, P-256", lambda: ossl_root(tmp), lambda: py_root(), lambda: meshca.SigningCa.generate_root(), ("issue", "root_p256")),
        ("cluster intermediate bundle, P-256", lambda: ossl_intermediate(tmp), lambda: py_intermediate(py_root_key, py_root_cert),
         lambda: m_root.issue_intermediate("cluster1"), ("issue", "intermediate_p256")),
        ("cluster intermediate bundle, P-384", lambda: ossl_intermediate(tmp, "p384"), lambda: py_intermediate(py_root_key, py_root_cert, "p384"),
         lambda: m_root.issue_intermediate("cluster1", key="ecdsa-p384"), ("issue", "intermediate_p384")),
        ("RSA-2048 intermediate under RSA-4096 root", lambda: ossl_intermediate(rsa_dir, "rsa2048"),
         lambda: py_intermediate(py_rsa_root_key, py_rsa_root_cert, "rsa2048"),
         lambda: m_rsa_root.issue_intermediate("cluster1", key="rsa-2048"), ("issue_rsa", "intermediate_rsa2048_under_rsa4096")),
        ("RSA-4096 intermediate bundle (Gloo's default) under P-256", lambda: ossl_intermediate(tmp, "rsa4096"),
         lambda: py_intermediate(py_root_key, py_root_cert, "rsa4096"),
         lambda: m_root.issue_intermediate("cluster1", key="rsa-4096"), ("issue_rsa", "intermediate_rsa4096")),
        ("workload leaf, P-256, SPIFFE SAN", lambda: ossl_leaf(tmp), lambda: py_leaf(py_c1_key, py_c1_cert),
         lambda: m_c1.issue_leaf(spiffe), ("issue", "leaf_p256")),
        ("workload leaf, RSA-2048, SPIFFE SAN", lambda: ossl_leaf(tmp, "rsa2048"), lambda: py_leaf(py_c1_key, py_c1_cert, "rsa2048"),
         lambda: m_c1.issue_leaf(spiffe, key="rsa-2048"), ("issue_rsa", "leaf_rsa2048")),
        ("bundle parse + validation", None, None, lambda: meshca.Cacerts.from_files(m_files), ("validate", "bundle_parse_and_validate_p256")),
    ]
    results = []
    for name, o, p, m, (group, bench) in rows:
        print(f"timing: {name}", file=sys.stderr)
        t_ossl, t_py, t_m = interleaved([o, p, m], [cli_runs, runs, runs])
        results.append((name, t_ossl, t_py, t_m, criterion_median(group, bench), floor_of(name)))
    floor = criterion_median("floor", "ring_p256_keygen_plus_sign")
    awslc_floor = criterion_median("floor", "awslc_p256_keygen_plus_sign")
    by_name = {r[0]: r for r in results}

    def speedup(row: str) -> Optional[float]:
        """pyca's median over the binding's: >= 1.0 means the binding is at least as fast."""
        _, _, p, m, _, _ = by_name[row]
        return p[0] / m[0] if p and m else None

    def over(row: str, f: Optional[float]) -> Optional[float]:
        r = by_name[row][4]
        return r / f if r is not None and f else None

    def x(v: Optional[float]) -> str:
        return "n/a" if v is None else f"{v:.2f}x"

    def verdict(v: Optional[float], target: float, at_least: bool) -> str:
        if v is None:
            return "not measured"
        return "met" if (v >= target if at_least else v <= target) else "not met"

    targets = [
        ("RSA-4096 intermediate (Gloo's default), binding vs pyca (pyca / binding)",
         speedup("RSA-4096 intermediate bundle (Gloo's default) under P-256"), ">= 1.0x", 1.0, True),
        ("RSA-2048 workload leaf, binding vs pyca (pyca / binding)",
         speedup("workload leaf, RSA-2048, SPIFFE SAN"), ">= 1.0x", 1.0, True),
        ("P-256 intermediate, Rust / ring floor", over("cluster intermediate bundle, P-256", floor), "<= 1.25x", 1.25, False),
        ("P-256 leaf, Rust / ring floor", over("workload leaf, P-256, SPIFFE SAN", floor), "<= 1.25x", 1.25, False),
        ("P-256 intermediate, Rust / AWS-LC floor", over("cluster intermediate bundle, P-256", awslc_floor), "(see note)", 1.25, False),
        ("P-256 leaf, Rust / AWS-LC floor", over("workload leaf, P-256, SPIFFE SAN", awslc_floor), "(see note)", 1.25, False),
    ]

    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}.",
        "",
        "Reproduce: `cargo bench -p meshca-benches` (criterion; Rust column and floors; this run took only "
        "`-- '^(floor|issue|validate|hsm)'`), then "
        "`.venv/bin/python benches/compare/compare.py` (the other columns, in one run; `.venv` is the one "
        "`./scripts/test.sh` builds). The durable-write ratio: `benches/scale.sh`; the controller: the "
        "command in its section below.",
        "",
        "Medians per operation (p90 in brackets), all tools timed in one interleaved loop (each round runs "
        "every tool once, so machine noise falls on all alike). OpenSSL is the seed's manual workflow on the command line (key generation, "
        "CSR and signing as separate `openssl` processes, as a user runs them); pyca/cryptography builds the "
        "same profile in one Python process; meshca Python is the binding in that same process; meshca Rust is "
        "criterion's median. meshca's issuance also validates the bundle it returns (chain, key match, "
        "constraints), which the others do not.",
        "",
        "| operation | OpenSSL CLI | pyca/cryptography | meshca (Python) | meshca (Rust) | pyca / meshca-Python | Rust / floor |",
        "|---|---|---|---|---|---|---|",
    ]
    med = lambda t: t[0] if t else None  # noqa: E731
    both = lambda t: f"{fmt(t[0])} ({fmt(t[1])})" if t else "n/a"  # noqa: E731
    for name, o, p, m, r, row_floor in results:
        lines.append(
            f"| {name} | {both(o)} | {both(p)} | {both(m)} | {fmt(r)} | {ratio(med(p), med(m))} | {ratio(r, row_floor)} |"
        )
    lines += [
        "",
        "Targets (issue #27), from this one run:",
        "",
        "| target | measured | goal | |",
        "|---|---|---|---|",
    ]
    for name, v, goal, target, at_least in targets:
        lines.append(f"| {name} | {x(v)} | {goal} | {verdict(v, target, at_least) if goal != '(see note)' else ''} |")
    lines += [
        "",
        f"Floors (the crypto the operation cannot avoid; criterion): P-256 rows, ring P-256 key generation + one "
        f"ECDSA signature = {fmt(floor)} (`floor/ring_p256_keygen_plus_sign`), the same with AWS-LC (the backend "
        f"meshca signs with) = {fmt(awslc_floor)} (`floor/awslc_p256_keygen_plus_sign`); P-384, AWS-LC P-384 key generation = "
        f"{fmt(criterion_median('floor', 'awslc_p384_keygen'))}; RSA rows, AWS-LC key generation of the new key = "
        f"{fmt(criterion_median('floor_rsa', 'awslc_rsa2048_keygen'))} (2048) / "
        f"{fmt(criterion_median('floor_rsa', 'awslc_rsa4096_keygen'))} (4096), one generator on one core: "
        "meshca races one RSA key on every idle core, so its RSA rows can sit below this floor.",
        "",
    ]
    extra = REPO / "benches" / "compare" / "NOTES.md"
    if extra.exists():
        lines.append(extra.read_text().strip())
        lines.append("")
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
