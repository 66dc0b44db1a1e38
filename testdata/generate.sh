#!/usr/bin/env bash
# Regenerates testdata/openssl/ with the system OpenSSL (>= 1.1.1; LibreSSL will not do), and a
# few RFC 5280 fixtures openssl cannot make with python3's pyca/cryptography (run it with the
# test command's .venv first on PATH: PATH=.venv/bin:$PATH testdata/generate.sh).
# Each directory is a bundle or key that breaks (or exercises) exactly one rule meshca checks.
# Re-running gives the same structure with new keys, serials and dates; tests depend only on
# the structure. Certificates are valid for ~10 years from generation.
set -euo pipefail
cd "$(dirname "$0")"
out=openssl
rm -rf "$out"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ec256() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
rsa() { openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:$2" -out "$1" 2>/dev/null; }

# mkroot KEY CERT SUBJECT [EXTRA_EXT...]
mkroot() {
  local key=$1 cert=$2 subj=$3; shift 3
  local ext=(-addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
             -addext "subjectKeyIdentifier=hash")
  if [ $# -gt 0 ]; then ext=("$@"); fi
  openssl req -x509 -new -key "$key" -subj "$subj" -days 3650 -sha256 "${ext[@]}" -out "$cert" 2>/dev/null
}

# mkcert KEY SUBJECT CA_CERT CA_KEY EXTFILE_TEXT OUT [DIGEST] [DAYS]
mkcert() {
  local key=$1 subj=$2 ca=$3 cakey=$4 exttext=$5 outcert=$6 md=${7:-sha256} days=${8:-3000}
  printf '%s\n' "$exttext" > "$tmp/ext"
  openssl req -new -key "$key" -subj "$subj" -out "$tmp/csr" 2>/dev/null
  openssl x509 -req -in "$tmp/csr" -CA "$ca" -CAkey "$cakey" -set_serial "0x$(openssl rand -hex 16)" \
    -days "$days" "-$md" -extfile "$tmp/ext" -out "$outcert" 2>/dev/null
}

CA_EXT='basicConstraints=critical,CA:true,pathlen:0
keyUsage=critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=DNS:istiod.istio-system.svc'

# bundle DIR CA_CERT CA_KEY CHAIN_FILES... -- ROOT_FILES...
bundle() {
  local dir=$out/$1 cert=$2 key=$3; shift 3
  mkdir -p "$dir"
  cp "$cert" "$dir/ca-cert.pem"
  cp "$key" "$dir/ca-key.pem"
  : > "$dir/cert-chain.pem"
  while [ "$1" != "--" ]; do cat "$1" >> "$dir/cert-chain.pem"; shift; done
  shift
  : > "$dir/root-cert.pem"
  for r in "$@"; do cat "$r" >> "$dir/root-cert.pem"; done
}

# The shared root and a good cluster bundle.
ec256 "$tmp/root.key"; mkroot "$tmp/root.key" "$tmp/root.pem" "/O=Istio/CN=Root CA"
ec256 "$tmp/c1.key"
mkcert "$tmp/c1.key" "/O=Istio/CN=Intermediate CA/L=cluster1" "$tmp/root.pem" "$tmp/root.key" "$CA_EXT" "$tmp/c1.pem"
bundle good "$tmp/c1.pem" "$tmp/c1.key" "$tmp/c1.pem" "$tmp/root.pem" -- "$tmp/root.pem"
# The root as a signer (the seed's management Secret: all four files are the root).
bundle root-signer "$tmp/root.pem" "$tmp/root.key" "$tmp/root.pem" -- "$tmp/root.pem"

# cert-manager layout of the good bundle.
mkdir -p "$out/good-tls"
cp "$tmp/c1.pem" "$out/good-tls/tls.crt"; cp "$tmp/c1.key" "$out/good-tls/tls.key"; cp "$tmp/root.pem" "$out/good-tls/ca.crt"

# Three levels, as in the seed's Option 3: root (external PKI) -> management CA -> cluster CA.
ec256 "$tmp/mgmt.key"
mkcert "$tmp/mgmt.key" "/O=Istio/CN=Management CA" "$tmp/root.pem" "$tmp/root.key" \
  "basicConstraints=critical,CA:true,pathlen:1
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid" "$tmp/mgmt.pem"
bundle mgmt-signer "$tmp/mgmt.pem" "$tmp/mgmt.key" "$tmp/mgmt.pem" "$tmp/root.pem" -- "$tmp/root.pem"
ec256 "$tmp/c3.key"
mkcert "$tmp/c3.key" "/O=Istio/CN=Intermediate CA/L=cluster3" "$tmp/mgmt.pem" "$tmp/mgmt.key" "$CA_EXT" "$tmp/c3.pem"
bundle three-level "$tmp/c3.pem" "$tmp/c3.key" "$tmp/c3.pem" "$tmp/mgmt.pem" "$tmp/root.pem" -- "$tmp/root.pem"
# The middle certificate left out: cluster CA followed directly by the root.
bundle chain-gap "$tmp/c3.pem" "$tmp/c3.key" "$tmp/c3.pem" "$tmp/root.pem" -- "$tmp/root.pem"

# A management CA with pathlen:0 that nonetheless signed a cluster CA.
ec256 "$tmp/mgmt0.key"
mkcert "$tmp/mgmt0.key" "/O=Istio/CN=Management CA pathlen 0" "$tmp/root.pem" "$tmp/root.key" \
  "basicConstraints=critical,CA:true,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash" "$tmp/mgmt0.pem"
bundle mgmt0-signer "$tmp/mgmt0.pem" "$tmp/mgmt0.key" "$tmp/mgmt0.pem" "$tmp/root.pem" -- "$tmp/root.pem"
ec256 "$tmp/c4.key"
mkcert "$tmp/c4.key" "/O=Istio/CN=Intermediate CA/L=cluster4" "$tmp/mgmt0.pem" "$tmp/mgmt0.key" "$CA_EXT" "$tmp/c4.pem"
bundle pathlen-exceeded "$tmp/c4.pem" "$tmp/c4.key" "$tmp/c4.pem" "$tmp/mgmt0.pem" "$tmp/root.pem" -- "$tmp/root.pem"

# cert-chain.pem in the wrong order (root first).
bundle wrong-order "$tmp/c1.pem" "$tmp/c1.key" "$tmp/root.pem" "$tmp/c1.pem" -- "$tmp/root.pem"

# ca-key.pem from another key.
ec256 "$tmp/other.key"
bundle key-mismatch "$tmp/c1.pem" "$tmp/other.key" "$tmp/c1.pem" "$tmp/root.pem" -- "$tmp/root.pem"

# root-cert.pem holds a different root.
ec256 "$tmp/root2.key"; mkroot "$tmp/root2.key" "$tmp/root2.pem" "/O=Other/CN=Other Root CA"
bundle untrusted-root "$tmp/c1.pem" "$tmp/c1.key" "$tmp/c1.pem" -- "$tmp/root2.pem"

# A root with the same name as ours but another key: names link, the signature does not.
mkroot "$tmp/root2.key" "$tmp/impostor.pem" "/O=Istio/CN=Root CA"
bundle bad-signature "$tmp/c1.pem" "$tmp/c1.key" "$tmp/c1.pem" "$tmp/impostor.pem" -- "$tmp/impostor.pem"

# root-cert.pem holds an intermediate besides the root.
bundle not-a-root "$tmp/c1.pem" "$tmp/c1.key" "$tmp/c1.pem" "$tmp/root.pem" -- "$tmp/root.pem" "$tmp/c1.pem"

# A "CA" that is a server certificate (CA:FALSE), as in istio#27605.
ec256 "$tmp/srv.key"
mkcert "$tmp/srv.key" "/O=Istio/CN=istiod" "$tmp/root.pem" "$tmp/root.key" \
  "basicConstraints=critical,CA:false
keyUsage=critical,digitalSignature,keyEncipherment
subjectAltName=DNS:istiod.istio-system.svc" "$tmp/srv.pem"
bundle not-ca "$tmp/srv.pem" "$tmp/srv.key" "$tmp/srv.pem" "$tmp/root.pem" -- "$tmp/root.pem"

# A CA whose keyUsage lacks keyCertSign.
ec256 "$tmp/noks.key"
mkcert "$tmp/noks.key" "/O=Istio/CN=Intermediate CA/L=noks" "$tmp/root.pem" "$tmp/root.key" \
  "basicConstraints=critical,CA:true,pathlen:0
keyUsage=critical,digitalSignature,cRLSign" "$tmp/noks.pem"
bundle no-keycertsign "$tmp/noks.pem" "$tmp/noks.key" "$tmp/noks.pem" "$tmp/root.pem" -- "$tmp/root.pem"

# A CA with EKU serverAuth only (istio#27193).
ec256 "$tmp/eku.key"
mkcert "$tmp/eku.key" "/O=Istio/CN=Intermediate CA/L=eku" "$tmp/root.pem" "$tmp/root.key" "$CA_EXT
extendedKeyUsage=serverAuth" "$tmp/eku.pem"
bundle ca-eku-server-only "$tmp/eku.pem" "$tmp/eku.key" "$tmp/eku.pem" "$tmp/root.pem" -- "$tmp/root.pem"

# A CA with EKU serverAuth+clientAuth: allowed.
mkcert "$tmp/eku.key" "/O=Istio/CN=Intermediate CA/L=eku-both" "$tmp/root.pem" "$tmp/root.key" "$CA_EXT
extendedKeyUsage=serverAuth,clientAuth" "$tmp/eku2.pem"
bundle ca-eku-both "$tmp/eku2.pem" "$tmp/eku.key" "$tmp/eku2.pem" "$tmp/root.pem" -- "$tmp/root.pem"

# Signed with SHA-1 (LibreSSL defaults, istio#38049).
ec256 "$tmp/sha1.key"
mkcert "$tmp/sha1.key" "/O=Istio/CN=Intermediate CA/L=sha1" "$tmp/root.pem" "$tmp/root.key" "$CA_EXT" "$tmp/sha1.pem" sha1
bundle sha1 "$tmp/sha1.pem" "$tmp/sha1.key" "$tmp/sha1.pem" "$tmp/root.pem" -- "$tmp/root.pem"

# An RSA 1024 intermediate.
rsa "$tmp/r1024.key" 1024
mkcert "$tmp/r1024.key" "/O=Istio/CN=Intermediate CA/L=rsa1024" "$tmp/root.pem" "$tmp/root.key" "$CA_EXT" "$tmp/r1024.pem"
bundle rsa1024 "$tmp/r1024.pem" "$tmp/r1024.key" "$tmp/r1024.pem" "$tmp/root.pem" -- "$tmp/root.pem"

# An Ed25519 root and intermediate.
openssl genpkey -algorithm ed25519 -out "$tmp/ed.key"
openssl req -x509 -new -key "$tmp/ed.key" -subj "/O=Istio/CN=Ed Root" -days 3650 \
  -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign" -out "$tmp/edroot.pem" 2>/dev/null
bundle ed25519 "$tmp/edroot.pem" "$tmp/ed.key" "$tmp/edroot.pem" -- "$tmp/edroot.pem"

# An RSA-2048 root issued SHA-256 chain with the key in PKCS#1, and an RSA cluster CA.
rsa "$tmp/rroot.key" 2048; mkroot "$tmp/rroot.key" "$tmp/rroot.pem" "/O=Istio/CN=RSA Root CA"
openssl rsa -in "$tmp/rroot.key" -traditional -out "$tmp/rroot-pkcs1.key" 2>/dev/null
bundle rsa-root-signer "$tmp/rroot.pem" "$tmp/rroot-pkcs1.key" "$tmp/rroot.pem" -- "$tmp/rroot.pem"

# Keys in every format (for import tests).
mkdir -p "$out/keys"
rsa "$out/keys/rsa2048-pkcs8.pem" 2048
openssl rsa -in "$out/keys/rsa2048-pkcs8.pem" -traditional -out "$out/keys/rsa2048-pkcs1.pem" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -out "$out/keys/p256-sec1-with-params.pem"
openssl ec -in "$out/keys/p256-sec1-with-params.pem" -out "$out/keys/p256-sec1.pem" 2>/dev/null
openssl pkey -in "$out/keys/p256-sec1.pem" -out "$out/keys/p256-pkcs8.pem"
# Without the embedded public key (ring cannot load these as they are; meshca computes it).
openssl ec -in "$out/keys/p256-sec1.pem" -no_public -out "$out/keys/p256-sec1-nopub.pem" 2>/dev/null
openssl pkey -in "$out/keys/p256-sec1-nopub.pem" -out "$out/keys/p256-pkcs8-nopub.pem"
openssl ecparam -name secp384r1 -genkey -noout -out "$out/keys/p384-sec1.pem"
openssl pkcs8 -topk8 -v2 aes256 -in "$out/keys/p256-pkcs8.pem" -passout pass:secret -out "$out/keys/encrypted-pkcs8.pem"
openssl rsa -in "$out/keys/rsa2048-pkcs8.pem" -traditional -aes256 -passout pass:secret -out "$out/keys/encrypted-pkcs1.pem" 2>/dev/null
cp "$tmp/ed.key" "$out/keys/ed25519.pem"
openssl ecparam -name secp256k1 -genkey -noout -out "$out/keys/secp256k1.pem"
cp "$tmp/r1024.key" "$out/keys/rsa1024.pem"

# CSRs made by OpenSSL, as a cluster using its own tooling would send.
mkdir -p "$out/csr"
openssl req -new -key "$out/keys/p256-pkcs8.pem" -subj "/O=Istio/CN=Intermediate CA/L=csr-cluster" -out "$out/csr/p256.csr"
openssl req -new -key "$out/keys/rsa2048-pkcs8.pem" -subj "/CN=whatever the requester asks" \
  -addext "basicConstraints=critical,CA:true" -out "$out/csr/rsa2048.csr"
cp "$out/csr/p256.csr" "$out/csr/tampered.csr"
# Flip one character of the subject inside the base64 body: same structure, broken signature.
python3 - "$out/csr/tampered.csr" <<'PY'
import base64, sys
path = sys.argv[1]
lines = open(path).read().strip().splitlines()
der = bytearray(base64.b64decode("".join(lines[1:-1])))
i = der.find(b"csr-cluster")
der[i] ^= 0x01
body = base64.b64encode(bytes(der)).decode()
open(path, "w").write(lines[0] + "\n" + "\n".join(body[j:j+64] for j in range(0, len(body), 64)) + "\n" + lines[-1] + "\n")
PY
# RFC 5280 rules (issue: strict where consumers are strict): one bundle or workload chain per
# rule under rfc5280/, built on the good bundle's root and intermediate. Bundles are directories;
# workload chains are rfc5280/leaf-<rule>.pem (leaf, then the good intermediate) checked against
# good/root-cert.pem.
rfc5280_fixtures() {
  local rdir=$out/rfc5280 root=$out/root-signer/ca-cert.pem rootkey=$out/root-signer/ca-key.pem
  local ca=$out/good/ca-cert.pem cakey=$out/good/ca-key.pem
  mkdir -p "$rdir"
  local LEAF_EXT='basicConstraints=critical,CA:false
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
authorityKeyIdentifier=keyid
subjectAltName=critical,URI:spiffe://cluster.local/ns/default/sa/default'
  ec256 "$tmp/leaf.key"
  # A CA below the good root with extra extension lines; bundle it as DIR. (`bundle` sets a
  # global `r`: this function's directory is `rdir`.)
  ca_with() {
    local dir=$1 ext=$2
    ec256 "$tmp/$dir.key"
    mkcert "$tmp/$dir.key" "/O=Istio/CN=Intermediate CA/L=$dir" "$root" "$rootkey" "$ext" "$tmp/$dir.pem"
    out=$rdir bundle "$dir" "$tmp/$dir.pem" "$tmp/$dir.key" "$tmp/$dir.pem" "$root" -- "$root"
  }
  ca_with unknown-critical "$CA_EXT
1.2.3.4.5=critical,ASN1:NULL"
  ca_with nc-bad-dns "$CA_EXT
nameConstraints=critical,permitted;DNS:bad..name"
  ca_with nc-bad-ip "$CA_EXT
2.5.29.30=critical,DER:300ba009300787050a000000ff"
  ca_with nc-empty "$CA_EXT
2.5.29.30=critical,DER:3000"
  ca_with nc-uri "$CA_EXT
nameConstraints=critical,permitted;URI:spiffe://cluster.local"
  ca_with nc-good "$CA_EXT
nameConstraints=critical,permitted;DNS:istio-system.svc,excluded;IP:10.0.0.0/255.0.0.0"
  ca_with warn-aki-issuer-serial "basicConstraints=critical,CA:true,pathlen:0
keyUsage=critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer:always
subjectAltName=DNS:istiod.istio-system.svc"
  ca_with warn-policy-constraints "$CA_EXT
policyConstraints=requireExplicitPolicy:0"
  # Roots that break one CA rule each, with a good intermediate below.
  root_with() {
    local dir=$1; shift
    ec256 "$tmp/$dir-root.key"
    mkroot "$tmp/$dir-root.key" "$tmp/$dir-root.pem" "/O=Istio/CN=Root CA $dir" "$@"
    ec256 "$tmp/$dir.key"
    mkcert "$tmp/$dir.key" "/O=Istio/CN=Intermediate CA/L=$dir" "$tmp/$dir-root.pem" "$tmp/$dir-root.key" "$CA_EXT" "$tmp/$dir.pem"
    out=$rdir bundle "$dir" "$tmp/$dir.pem" "$tmp/$dir.key" "$tmp/$dir.pem" "$tmp/$dir-root.pem" -- "$tmp/$dir-root.pem"
    # A workload leaf below, for the same root judged as a workload chain's trust anchor.
    mkcert "$tmp/leaf.key" "/O=workload" "$tmp/$dir.pem" "$tmp/$dir.key" "$LEAF_EXT" "$tmp/$dir-leaf.pem" sha256 30
    cat "$tmp/$dir-leaf.pem" "$tmp/$dir.pem" > "$rdir/$dir/leaf.pem"
  }
  root_with root-unknown-critical -addext "basicConstraints=critical,CA:true" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -addext "1.2.3.4.5=critical,ASN1:NULL"
  root_with root-ca-false -addext "basicConstraints=critical,CA:false" -addext "keyUsage=critical,keyCertSign,cRLSign"
  root_with root-no-keycertsign -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,digitalSignature,cRLSign"
  root_with root-nc-violated -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "nameConstraints=critical,permitted;DNS:example.com"
  # Workload leaves under the good intermediate: leaf-<rule>.pem holds the leaf, then the
  # intermediate.
  leaf_with() {
    local name=$1 keyfile=$2 ext=$3
    mkcert "$keyfile" "/O=workload" "$ca" "$cakey" "$ext" "$tmp/leaf-$name.pem" sha256 30
    cat "$tmp/leaf-$name.pem" "$ca" > "$rdir/leaf-$name.pem"
  }
  leaf_with good "$tmp/leaf.key" "$LEAF_EXT"
  rsa "$tmp/leaf1024.key" 1024
  leaf_with rsa1024 "$tmp/leaf1024.key" "$LEAF_EXT"
  openssl genpkey -genparam -algorithm DSA -pkeyopt dsa_paramgen_bits:2048 -out "$tmp/dsa.param" 2>/dev/null
  openssl genpkey -paramfile "$tmp/dsa.param" -out "$tmp/leafdsa.key" 2>/dev/null
  leaf_with dsa "$tmp/leafdsa.key" "$LEAF_EXT"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-192 -out "$tmp/leafp192.key" 2>/dev/null
  leaf_with p192 "$tmp/leafp192.key" "$LEAF_EXT"
  leaf_with keycertsign "$tmp/leaf.key" "basicConstraints=critical,CA:false
keyUsage=critical,digitalSignature,keyCertSign
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=critical,URI:spiffe://cluster.local/ns/default/sa/default"
  leaf_with unknown-critical "$tmp/leaf.key" "$LEAF_EXT
1.2.3.4.5=critical,ASN1:NULL"
  for usage in clientAuth serverAuth; do
    leaf_with "eku-$usage-only" "$tmp/leaf.key" "basicConstraints=critical,CA:false
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$usage
authorityKeyIdentifier=keyid
subjectAltName=critical,URI:spiffe://cluster.local/ns/default/sa/default"
  done
  leaf_with no-eku "$tmp/leaf.key" "basicConstraints=critical,CA:false
keyUsage=critical,digitalSignature,keyEncipherment
authorityKeyIdentifier=keyid
subjectAltName=critical,URI:spiffe://cluster.local/ns/default/sa/default"
  # What openssl's req/x509 cannot leave out or mark (they add basicConstraints, SKI and AKI
  # themselves): built with pyca/cryptography (the test command's .venv has it).
  python3 - "$rdir" "$root" "$rootkey" <<'PY'
import datetime, os, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
rdir, root_pem, root_key_pem = sys.argv[1:4]
root = x509.load_pem_x509_certificate(open(root_pem, "rb").read())
root_key = serialization.load_pem_private_key(open(root_key_pem, "rb").read(), None)
now = datetime.datetime.now(datetime.timezone.utc)
def name(cn, l=None):
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Istio"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    return x509.Name(attrs + ([x509.NameAttribute(NameOID.LOCALITY_NAME, l)] if l else []))
def pem(c):
    return c.public_bytes(serialization.Encoding.PEM)
def key_pem(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
KU = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
def write(d, ca, key, chain, roots):
    os.makedirs(f"{rdir}/{d}", exist_ok=True)
    open(f"{rdir}/{d}/ca-cert.pem", "wb").write(pem(ca))
    open(f"{rdir}/{d}/ca-key.pem", "wb").write(key_pem(key))
    open(f"{rdir}/{d}/cert-chain.pem", "wb").write(b"".join(pem(c) for c in chain))
    open(f"{rdir}/{d}/root-cert.pem", "wb").write(b"".join(pem(c) for c in roots))
def inter(d, ski, aki_critical):
    key = ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder().subject_name(name("Intermediate CA", d)).issuer_name(root.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=3000))
         .add_extension(x509.BasicConstraints(True, 0), True).add_extension(KU, True)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), aki_critical))
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    c = b.sign(root_key, hashes.SHA256())
    write(d, c, key, [c, root], [root])
inter("warn-critical-aki", True, True)
inter("warn-no-ski", False, False)
# A root without basicConstraints, and a good intermediate below it.
rk = ec.generate_private_key(ec.SECP256R1())
r = (x509.CertificateBuilder().subject_name(name("Root CA root-no-bc")).issuer_name(name("Root CA root-no-bc"))
     .public_key(rk.public_key()).serial_number(x509.random_serial_number())
     .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=3650))
     .add_extension(KU, True).add_extension(x509.SubjectKeyIdentifier.from_public_key(rk.public_key()), False)
     .sign(rk, hashes.SHA256()))
ik = ec.generate_private_key(ec.SECP256R1())
i = (x509.CertificateBuilder().subject_name(name("Intermediate CA", "root-no-bc")).issuer_name(r.subject)
     .public_key(ik.public_key()).serial_number(x509.random_serial_number())
     .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=3000))
     .add_extension(x509.BasicConstraints(True, 0), True).add_extension(KU, True)
     .add_extension(x509.SubjectKeyIdentifier.from_public_key(ik.public_key()), False)
     .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(rk.public_key()), False)
     .sign(rk, hashes.SHA256()))
write("root-no-bc", i, ik, [i, r], [r])
lk = ec.generate_private_key(ec.SECP256R1())
leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "workload")]))
        .issuer_name(i.subject).public_key(lk.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(False, None), True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/default")]), True)
        .sign(ik, hashes.SHA256()))
open(f"{rdir}/root-no-bc/leaf.pem", "wb").write(pem(leaf) + pem(i))
PY
  date -u +%s > "$rdir/GENERATED_AT"
}
rfc5280_fixtures

# A CSR signed with SHA-1 (refused as such), and one whose subject names two localities (L).
openssl req -new -sha1 -key "$out/keys/p256-pkcs8.pem" -subj "/O=Istio/CN=Intermediate CA/L=csr-cluster" \
  -out "$out/csr/sha1.csr" 2>/dev/null
openssl req -new -key "$out/keys/p256-pkcs8.pem" -subj "/O=Istio/CN=Intermediate CA/L=one/L=two" \
  -out "$out/csr/two-localities.csr"

# The PEM forms Go's pem.Decode and OpenSSL read besides openssl's own 64 columns: 76 columns
# (base64(1), MIME) with CRLF, one long line, trailing white space, text around the blocks.
pem_forms() {
  python3 - "$@" <<'PY'
import base64, re, sys
src, dst_dir = sys.argv[1], sys.argv[2]
name = src.rsplit("/", 1)[-1].rsplit(".", 1)
blocks = re.findall(r"-----BEGIN ([A-Z ]+)-----\n(.*?)-----END \1-----", open(src).read(), re.S)
def render(cols, eol, pad=""):
    out = []
    for label, body in blocks:
        b64 = "".join(body.split())
        lines = [b64[i:i + cols] for i in range(0, len(b64), cols)]
        out.append(eol.join([f"-----BEGIN {label}-----" + pad] + [l + pad for l in lines] + [f"-----END {label}-----" + pad]) + eol)
    return "".join(out)
forms = {
    "76col-crlf": render(76, "\r\n"),
    "one-line": render(10**6, "\n"),
    "trailing-space": render(64, "\n", " \t"),
    "with-text": "subject=made by hand\n" + render(64, "\n").replace("-----\n-----BEGIN", "-----\nnext:\n-----BEGIN") + "end of file\n",
}
for form, text in forms.items():
    open(f"{dst_dir}/{name[0]}-{form}.{name[1]}", "w", newline="").write(text)
PY
}
mkdir -p "$out/pem-forms"
pem_forms "$out/good/cert-chain.pem" "$out/pem-forms"
pem_forms "$out/good/ca-key.pem" "$out/pem-forms"
pem_forms "$out/csr/p256.csr" "$out/pem-forms"

date -u +%s > "$out/GENERATED_AT"
echo "wrote $(find "$out" -type f | wc -l) files under testdata/$out"

# Sidecar secret dumps as `istioctl proxy-config secret <pod> -o json|yaml` print them, from
# Istio's sample workload certificate (inspect/verify --proxy-secret input).
mkdir -p proxy-secrets
python3 - <<'PY'
import base64, json
chain = base64.b64encode(open("istio-samples/workload-foo-cert.pem", "rb").read()).decode()
roots = base64.b64encode(open("istio-samples/workload-foo-root-certs.pem", "rb").read()).decode()
t = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
dump = {"dynamicActiveSecrets": [
    {"name": "default", "versionInfo": "0", "lastUpdated": "2022-11-08T09:53:16.743Z",
     "secret": {"@type": t, "name": "default", "tlsCertificate": {
         "certificateChain": {"inlineBytes": chain}, "privateKey": {"inlineBytes": "W3JlZGFjdGVkXQ=="}}}},
    {"name": "ROOTCA", "versionInfo": "0", "lastUpdated": "2022-11-08T09:53:16.743Z",
     "secret": {"@type": t, "name": "ROOTCA", "validationContext": {"trustedCa": {"inlineBytes": roots}}}}]}
open("proxy-secrets/foo.json", "w").write(json.dumps(dump, indent=2) + "\n")
yaml = ["dynamicActiveSecrets:"]
for s in dump["dynamicActiveSecrets"]:
    yaml += [f"- lastUpdated: \"{s['lastUpdated']}\"", f"  name: {s['name']}", "  secret:",
             f"    '@type': {t}", f"    name: {s['name']}"]
    if "tlsCertificate" in s["secret"]:
        yaml += ["    tlsCertificate:", "      certificateChain:", f"        inlineBytes: {chain}",
                 "      privateKey:", "        inlineBytes: W3JlZGFjdGVkXQ=="]
    else:
        yaml += ["    validationContext:", "      trustedCa:", f"        inlineBytes: {roots}"]
open("proxy-secrets/foo.yaml", "w").write("\n".join(yaml) + "\n")
PY
