#![allow(clippy::unwrap_used)]
//! RFC 5280 on every certificate meshca judges: one fixture per rule (testdata/generate.sh,
//! `rfc5280_fixtures`), each checked as a `cacerts` bundle, as a public chain without the key
//! ([`TrustChain`]) and, where it applies, as a workload chain; the independent verifiers
//! (rustls-webpki here, the system OpenSSL where present) are asked where they have a view.

mod common;

use common::{load_dir, read, webpki_verify};
use meshca::{Cacerts, Certificate, Error, TrustChain, Warning};
use time::OffsetDateTime;

fn now() -> OffsetDateTime {
    let secs: i64 = String::from_utf8(read("openssl/rfc5280/GENERATED_AT")).unwrap().trim().parse().unwrap();
    OffsetDateTime::from_unix_timestamp(secs).unwrap() + time::Duration::days(1)
}

fn bundle(dir: &str) -> Result<Cacerts, Error> {
    Cacerts::from_files(&load_dir(&format!("openssl/rfc5280/{dir}")), now())
}

/// The same directory judged without its key.
fn public(dir: &str) -> Result<TrustChain, Error> {
    let files = load_dir(&format!("openssl/rfc5280/{dir}"));
    TrustChain::from_pems(files.get("cert-chain.pem").unwrap(), files.get("root-cert.pem").unwrap(), now())
}

/// A workload chain under the good intermediate, against the good root.
fn leaf(name: &str) -> (Vec<Certificate>, Vec<Certificate>) {
    let chain = meshca::parse_certificates(&read(&format!("openssl/rfc5280/leaf-{name}.pem")), "chain").unwrap();
    let roots = meshca::parse_certificates(&read("openssl/good/root-cert.pem"), "roots").unwrap();
    (chain, roots)
}

/// The workload chain in a root-* bundle directory (leaf.pem: leaf, then its intermediate) and
/// that bundle's roots.
fn leaf_under(dir: &str) -> (Vec<Certificate>, Vec<Certificate>) {
    let files = load_dir(&format!("openssl/rfc5280/{dir}"));
    let chain = meshca::parse_certificates(files.get("leaf.pem").unwrap(), "leaf.pem").unwrap();
    let roots = meshca::parse_certificates(files.get("root-cert.pem").unwrap(), "root-cert.pem").unwrap();
    (chain, roots)
}

use meshca_testkit::verify::openssl;

/// `openssl verify` of a bundle directory's ca-cert.pem against its roots, at the fixtures' time.
fn openssl_verify_bundle(dir: &str) -> Option<(bool, String)> {
    let d = common::testdata(&format!("openssl/rfc5280/{dir}"));
    let p = |f: &str| d.join(f).to_string_lossy().into_owned();
    let at = now().unix_timestamp().to_string();
    openssl(&["verify", "-attime", &at, "-CAfile", &p("root-cert.pem"), &p("ca-cert.pem")])
}

#[test]
fn the_good_leaf_passes_every_rule_and_webpki() {
    let (chain, roots) = leaf("good");
    let v = meshca::verify_workload(&chain, &roots, now()).unwrap();
    assert_eq!(v.spiffe_id.to_string(), "spiffe://cluster.local/ns/default/sa/default");
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    webpki_verify(&chain, &roots, now()).unwrap();
}

#[test]
fn weak_or_forbidden_leaf_keys_are_refused() {
    for (name, needle) in [("rsa1024", "1024 bits"), ("dsa", "DSA"), ("p192", "EC")] {
        let (chain, roots) = leaf(name);
        let e = meshca::verify_workload_chain(&chain, &roots, now()).unwrap_err();
        assert!(matches!(e, Error::WeakRsaKey { .. } | Error::UnsupportedPublicKey { .. }), "{name}: {e}");
        assert!(e.to_string().contains(needle), "{name}: {e}");
        assert!(e.to_string().contains("the workload certificate"), "names the certificate: {e}");
    }
    // OpenSSL agrees at security level 2 (112-bit) on RSA-1024 and P-192; it accepts DSA-2048,
    // which istiod's Go and rustls do not support.
    let td = |rel: &str| common::testdata(rel).to_string_lossy().into_owned();
    for name in ["rsa1024", "p192"] {
        let (ca, root, leaf) = (
            td("openssl/good/ca-cert.pem"),
            td("openssl/good/root-cert.pem"),
            td(&format!("openssl/rfc5280/leaf-{name}.pem")),
        );
        if let Some((ok, out)) = openssl(&["verify", "-auth_level", "2", "-CAfile", &root, "-untrusted", &ca, &leaf]) {
            assert!(!ok, "{name}: {out}");
        }
    }
}

#[test]
fn a_leaf_that_can_sign_certificates_is_not_a_workload_certificate() {
    let (chain, roots) = leaf("keycertsign");
    let e = meshca::verify_workload_chain(&chain, &roots, now()).unwrap_err();
    assert!(matches!(e, Error::LeafProfile { .. }) && e.to_string().contains("keyCertSign"), "{e}");
}

#[test]
fn unknown_critical_extensions_are_refused_everywhere() {
    for dir in ["unknown-critical", "root-unknown-critical"] {
        let e = bundle(dir).unwrap_err();
        assert!(matches!(e, Error::UnknownCriticalExtension { ref oid, .. } if oid == "1.2.3.4.5"), "{dir}: {e}");
        assert!(matches!(public(dir).unwrap_err(), Error::UnknownCriticalExtension { .. }), "{dir}");
    }
    let (chain, roots) = leaf("unknown-critical");
    let e = meshca::verify_workload_chain(&chain, &roots, now()).unwrap_err();
    assert!(matches!(e, Error::UnknownCriticalExtension { .. }), "{e}");
    // rustls-webpki agrees on the leaf; OpenSSL on the intermediate.
    assert!(webpki_verify(&chain, &roots, now()).unwrap_err().to_string().contains("UnsupportedCriticalExtension"));
    if let Some((ok, out)) = openssl_verify_bundle("unknown-critical") {
        assert!(!ok && out.contains("unhandled critical extension"), "{out}");
    }
}

#[test]
fn malformed_name_constraints_are_refused() {
    for (dir, needle) in [
        ("nc-bad-dns", "not a DNS name"),
        ("nc-bad-ip", "8 (IPv4) or 32 (IPv6) bytes, not 5"),
        ("nc-empty", "both empty or absent"),
        ("nc-uri", "rustls-webpki"),
    ] {
        let e = bundle(dir).unwrap_err();
        assert!(matches!(e, Error::MalformedNameConstraints { .. }), "{dir}: {e}");
        assert!(e.to_string().contains(needle), "{dir}: {e}");
        assert!(matches!(public(dir).unwrap_err(), Error::MalformedNameConstraints { .. }), "{dir}");
    }
    // Well-formed constraints that the CA's own names satisfy are accepted.
    bundle("nc-good").unwrap();
}

#[test]
fn a_lower_ca_outside_its_roots_name_constraints_is_refused() {
    let e = bundle("root-nc-violated").unwrap_err();
    assert!(matches!(e, Error::NameConstraintViolation { .. }), "{e}");
    assert!(e.to_string().contains("DNS:istiod.istio-system.svc"), "{e}");
    if let Some((ok, out)) = openssl_verify_bundle("root-nc-violated") {
        assert!(!ok && out.contains("subtree violation"), "OpenSSL agrees: {out}");
    }
}

#[test]
fn roots_must_be_cas_that_sign_certificates() {
    for (dir, is) in [("root-no-bc", "NotCa"), ("root-ca-false", "NotCa"), ("root-no-keycertsign", "NoKeyCertSign")] {
        let e = bundle(dir).unwrap_err();
        let got = match e {
            Error::NotCa { .. } => "NotCa",
            Error::NoKeyCertSign { .. } => "NoKeyCertSign",
            _ => "other",
        };
        assert_eq!(got, is, "{dir}: {e}");
        assert!(e.to_string().contains(&format!("Root CA {dir}")), "names the root: {e}");
        assert!(matches!(public(dir).unwrap_err(), Error::NotCa { .. } | Error::NoKeyCertSign { .. }), "{dir}");
        let d = common::testdata(&format!("openssl/rfc5280/{dir}"));
        let p = |f: &str| d.join(f).to_string_lossy().into_owned();
        if let Some((ok, out)) = openssl(&[
            "verify",
            "-x509_strict",
            "-attime",
            &now().unix_timestamp().to_string(),
            "-CAfile",
            &p("root-cert.pem"),
            &p("ca-cert.pem"),
        ]) {
            assert!(!ok, "OpenSSL -x509_strict agrees on {dir}: {out}");
        }
        // The same root as a workload chain's trust anchor: refused too (rustls-webpki treats an
        // anchor as a name and a key only, so meshca checks it itself).
        let (chain, roots) = leaf_under(dir);
        let e = meshca::verify_workload_chain(&chain, &roots, now()).unwrap_err();
        assert!(matches!(e, Error::NotCa { .. } | Error::NoKeyCertSign { .. }), "{dir}: {e}");
        assert!(e.to_string().contains("the trust bundle"), "{e}");
    }
}

#[test]
fn the_validity_window_is_inclusive_at_the_second_for_bundles_and_leaves() {
    let (chain, roots) = leaf("good");
    let not_after = chain[0].not_after();
    // At notAfter to the second (and within that second): valid for both paths.
    for t in [not_after, not_after + time::Duration::milliseconds(999)] {
        meshca::verify_workload_chain(&chain, &roots, t).unwrap();
    }
    let e = meshca::verify_workload_chain(&chain, &roots, not_after + time::Duration::seconds(1)).unwrap_err();
    assert!(matches!(e, Error::Expired { .. }), "{e}");
    let b = bundle("nc-good").unwrap();
    let end = b.ca_cert().not_after();
    let files = load_dir("openssl/rfc5280/nc-good");
    assert!(Cacerts::from_files(&files, end + time::Duration::milliseconds(500)).is_ok());
    assert!(matches!(Cacerts::from_files(&files, end + time::Duration::seconds(1)), Err(Error::Expired { .. })));
}

#[test]
fn profile_deviations_are_warnings_and_the_bundle_still_loads() {
    for (dir, want) in [
        ("warn-critical-aki", "CriticalKeyIdentifier"),
        ("warn-no-ski", "MissingKeyIdentifier"),
        ("warn-aki-issuer-serial", "AuthorityKeyIdForm"),
        ("warn-policy-constraints", "NonCriticalPolicyConstraints"),
    ] {
        let b = bundle(dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
        let kinds: Vec<&str> = b
            .warnings()
            .iter()
            .map(|w| match w {
                Warning::CriticalKeyIdentifier { .. } => "CriticalKeyIdentifier",
                Warning::MissingKeyIdentifier { .. } => "MissingKeyIdentifier",
                Warning::AuthorityKeyIdForm { .. } => "AuthorityKeyIdForm",
                Warning::NonCriticalPolicyConstraints { .. } => "NonCriticalPolicyConstraints",
                _ => "other",
            })
            .collect();
        assert!(kinds.contains(&want), "{dir}: {:?}", b.warnings());
        assert!(b.warnings().iter().any(|w| w.to_string().contains("Intermediate CA")), "names the certificate");
        assert_eq!(public(dir).unwrap().warnings(), b.warnings(), "{dir}: the same rules without the key");
    }
    let (chain, roots) = leaf("no-eku");
    let v = meshca::verify_workload(&chain, &roots, now()).unwrap();
    assert!(v.warnings.iter().any(|w| matches!(w, Warning::LeafWithoutEku { .. })), "{:?}", v.warnings);
}

#[test]
fn a_public_chain_is_judged_like_a_bundle_without_the_key() {
    let files = load_dir("openssl/good");
    let t = TrustChain::from_pems(files.get("cert-chain.pem").unwrap(), files.get("root-cert.pem").unwrap(), now())
        .unwrap();
    let b = Cacerts::from_files(&files, now()).unwrap();
    assert_eq!(t.path(), b.path());
    assert_eq!(t.root_fingerprint(), b.root_fingerprint());
    assert_eq!(b.trust_chain().path(), t.path());
    // The rules that need no key still apply: a chain that does not reach the roots is refused.
    let other = read("istio-samples/root-cert.pem");
    let e = TrustChain::from_pems(files.get("cert-chain.pem").unwrap(), &other, now()).unwrap_err();
    assert!(matches!(e, Error::UntrustedChain { .. }), "{e}");
    // Istio's own samples, without their keys.
    let chain = read("istio-samples/cert-chain.pem");
    TrustChain::from_pems(&chain, &other, now()).unwrap();
}

/// mTLS needs a workload certificate both sides accept: one path verification serves both
/// uses, and a leaf whose extendedKeyUsage names only one of them is refused for the other,
/// as rustls (webpki) and `openssl verify -purpose` refuse it.
#[test]
fn a_leaf_for_only_one_side_of_mtls_is_refused() {
    for (name, missing) in [("eku-clientAuth-only", "as a TLS server"), ("eku-serverAuth-only", "as a TLS client")] {
        let (chain, roots) = leaf(name);
        let e = meshca::verify_workload(&chain, &roots, now()).unwrap_err().to_string();
        assert!(e.contains(missing), "{name}: {e}");
        let purpose = if missing.ends_with("server") { "sslserver" } else { "sslclient" };
        let p = common::testdata(&format!("openssl/rfc5280/leaf-{name}.pem"));
        let r = common::testdata("openssl/good/root-cert.pem");
        let at = now().unix_timestamp().to_string();
        let (p, r) = (p.to_string_lossy().into_owned(), r.to_string_lossy().into_owned());
        if let Some((ok, out)) =
            openssl(&["verify", "-attime", &at, "-purpose", purpose, "-CAfile", &r, "-untrusted", &p, &p])
        {
            assert!(!ok, "openssl accepts {name} as {purpose}: {out}");
        }
    }
    let (chain, roots) = leaf("good");
    assert!(meshca::verify_workload(&chain, &roots, now()).is_ok());
}
