#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ from testdata/ (the corpus itself is not committed).
set -euo pipefail
cd "$(dirname "$0")"
td=../testdata
rm -rf corpus && mkdir -p corpus/{bundle_files,private_key_pem,csr_sign,policy_yaml,inspect_pem,proxy_secret,crl_pem,key_uri,workload_request}
i=0
for d in "$td"/openssl/*/; do
  [ -f "$d/ca-cert.pem" ] || continue
  i=$((i+1))
  { printf '\x00'; cat "$d/ca-cert.pem"; printf '\x00'; cat "$d/ca-key.pem"; printf '\x00'; cat "$d/cert-chain.pem"; printf '\x00'; cat "$d/root-cert.pem"; } > "corpus/bundle_files/$i"
done
# One bundle per RFC 5280 rule (critical extensions, name constraints, root profiles, warnings).
for d in "$td"/openssl/rfc5280/*/; do
  i=$((i+1))
  { printf '\x00'; cat "$d/ca-cert.pem"; printf '\x00'; cat "$d/ca-key.pem"; printf '\x00'; cat "$d/cert-chain.pem"; printf '\x00'; cat "$d/root-cert.pem"; } > "corpus/bundle_files/$i"
done
cp "$td"/openssl/rfc5280/leaf-*.pem corpus/inspect_pem/
{ printf '\x01'; cat "$td/openssl/good-tls/tls.crt"; printf '\x00'; cat "$td/openssl/good-tls/tls.key"; printf '\x00'; cat "$td/openssl/good-tls/ca.crt"; } > corpus/bundle_files/tls
cp "$td"/openssl/keys/*.pem corpus/private_key_pem/
cp "$td"/istio-samples/ca-key*.pem corpus/private_key_pem/
cp "$td"/openssl/csr/*.csr corpus/csr_sign/
# Workload requests: every CSR form (the signer refuses an intermediate's: no URI SAN) and the
# workload CSRs of testdata/workload-csr/ (one SPIFFE ID; two; a CA; other trust domains).
cp "$td"/openssl/csr/*.csr corpus/workload_request/
cp "$td"/workload-csr/* corpus/workload_request/ 2>/dev/null || true
# The PEM forms Go and OpenSSL read (76 columns with CRLF, one line, trailing space, text around).
cp "$td"/openssl/pem-forms/*.csr corpus/csr_sign/
cp "$td"/openssl/pem-forms/cert-chain-*.pem corpus/inspect_pem/
cp "$td"/openssl/pem-forms/ca-key-*.pem corpus/private_key_pem/
cp "$td"/istio-samples/*cert*.pem corpus/inspect_pem/
cp "$td"/openssl/good/cert-chain.pem corpus/inspect_pem/good-chain.pem
cp "$td"/policies/*.yaml corpus/policy_yaml/ 2>/dev/null || true
cp "$td"/proxy-secrets/* corpus/proxy_secret/ 2>/dev/null || true
echo "seeded: $(find corpus -type f | wc -l) files"
# Key URIs: the forms users write, and a key pasted where a URI belongs.
printf 'pkcs11:token=meshca;object=root-ca' > corpus/key_uri/plain
printf 'pkcs11:token=My%%20Token;object=ca;id=%%01%%02;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so' > corpus/key_uri/full
{ printf 'pkcs11:object='; cat "$td"/openssl/keys/p256-pkcs8.pem; } > corpus/key_uri/pasted-key
# Inputs the fuzzer once found, kept as seeds so every smoke run tries them again.
for f in "$td"/fuzz-regressions/key_uri-*; do cp "$f" corpus/key_uri/; done
# A CRL made with OpenSSL (where it is installed), for the CRL parser.
if command -v openssl >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/k" -out "$tmp/c" \
    -subj "/O=Istio/CN=Intermediate CA/L=cluster1" -days 2 2>/dev/null
  touch "$tmp/index.txt"
  echo 01 > "$tmp/crlnumber"
  printf '[ca]\ndefault_ca=d\n[d]\ndatabase=%s/index.txt\ncrlnumber=%s/crlnumber\ndefault_md=sha256\ndefault_crl_days=7\n' \
    "$tmp" "$tmp" > "$tmp/cnf"
  openssl ca -gencrl -config "$tmp/cnf" -keyfile "$tmp/k" -cert "$tmp/c" -out corpus/crl_pem/openssl.pem 2>/dev/null || true
  rm -rf "$tmp"
fi
