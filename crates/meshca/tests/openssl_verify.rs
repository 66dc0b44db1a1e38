#![allow(clippy::unwrap_used)]
//! The system `openssl verify` and `openssl x509 -text` on what meshca issues: an independent
//! implementation agreeing with ours. Skipped, with a message, only when openssl is absent.

mod common;

use std::path::Path;

use common::{fixture_now, load_dir, rng};
use meshca::{IntermediateParams, KeyAlgorithm, Layout, LeafParams, RootParams, SigningCa, SpiffeId};

fn openssl() -> Option<&'static str> {
    meshca_testkit::verify::openssl_available().then_some("openssl")
}

fn write(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p.to_string_lossy().into_owned()
}

/// `openssl` with `args` (present: [`openssl`] was checked first).
fn run(args: &[&str]) -> (bool, String) {
    meshca_testkit::verify::openssl(args).expect("openssl runs")
}

/// `openssl verify` of the cluster CA and of a workload leaf, for one signer and key type.
fn verify_chain(signer: &SigningCa, key: KeyAlgorithm, tag: &str) {
    let dir = std::env::temp_dir().join(format!("meshca-openssl-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let now = fixture_now();
    let mut ip = IntermediateParams::new(tag);
    ip.key = key;
    let bundle = signer.issue_intermediate(&ip, &mut rng(1), now).unwrap().value;
    let files = bundle.to_files(Layout::Istio);
    let root = write(&dir, "root-cert.pem", files.get("root-cert.pem").unwrap());
    let chain = write(&dir, "cert-chain.pem", files.get("cert-chain.pem").unwrap());
    let ca = write(&dir, "ca-cert.pem", files.get("ca-cert.pem").unwrap());
    let at = now.unix_timestamp().to_string();
    let (ok, out) = run(&["verify", "-attime", &at, "-CAfile", &root, "-untrusted", &chain, &ca]);
    assert!(ok && out.contains(": OK"), "{tag}: {out}");

    let id = SpiffeId::workload("cluster.local", "default", "sleep").unwrap();
    let leaf = SigningCa::new(bundle).issue_leaf(&LeafParams::new(id), &mut rng(2), now).unwrap().value;
    let leaf_path = write(&dir, "leaf.pem", leaf.cert().to_pem().as_bytes());
    let leaf_chain = write(&dir, "leaf-chain.pem", leaf.cert_chain_pem().as_bytes());
    for purpose in ["sslclient", "sslserver"] {
        let (ok, out) = run(&[
            "verify",
            "-attime",
            &at,
            "-purpose",
            purpose,
            "-CAfile",
            &root,
            "-untrusted",
            &leaf_chain,
            &leaf_path,
        ]);
        assert!(ok && out.contains(": OK"), "{tag} {purpose}: {out}");
    }
    // An unrelated root must not verify it (the check can fail).
    let stranger = SigningCa::generate_root(&RootParams::default(), &mut rng(3), now).unwrap();
    let other = write(&dir, "other-root.pem", stranger.bundle().ca_cert().to_pem().as_bytes());
    let (ok, _) = run(&["verify", "-attime", &at, "-CAfile", &other, "-untrusted", &leaf_chain, &leaf_path]);
    assert!(!ok, "{tag}: a stranger's root verified our leaf");

    // The profile as OpenSSL reads it.
    let (_, text) = run(&["x509", "-in", &ca, "-noout", "-text"]);
    assert!(text.contains("X509v3 Basic Constraints: critical") && text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("X509v3 Key Usage: critical") && text.contains("Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("DNS:istiod.istio-system.svc"), "{text}");
    let (_, text) = run(&["x509", "-in", &leaf_path, "-noout", "-text"]);
    assert!(text.contains("X509v3 Subject Alternative Name: critical"), "{text}");
    assert!(text.contains("URI:spiffe://cluster.local/ns/default/sa/sleep"), "{text}");
    assert!(text.contains("TLS Web Server Authentication, TLS Web Client Authentication"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn openssl_verifies_ecdsa_chains() {
    if openssl().is_none() {
        return;
    }
    let root = SigningCa::generate_root(&RootParams::default(), &mut rng(10), fixture_now()).unwrap();
    verify_chain(&root, KeyAlgorithm::EcdsaP256, "p256");
    verify_chain(&root, KeyAlgorithm::EcdsaP384, "p384");
}

#[test]
fn openssl_verifies_rsa_and_three_level_chains() {
    if openssl().is_none() {
        return;
    }
    let now = fixture_now();
    let rsa_root = SigningCa::from_files(&load_dir("openssl/rsa-root-signer"), now).unwrap();
    verify_chain(&rsa_root, KeyAlgorithm::Rsa2048, "rsa");
    let mgmt = SigningCa::from_files(&load_dir("openssl/mgmt-signer"), now).unwrap();
    verify_chain(&mgmt, KeyAlgorithm::EcdsaP256, "three-level");
}

#[test]
fn openssl_reads_the_pkcs8_key_we_write_and_it_matches_the_cert() {
    if openssl().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("meshca-openssl-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = SigningCa::generate_root(&RootParams::default(), &mut rng(20), fixture_now()).unwrap();
    let files = root.bundle().to_files(Layout::Istio);
    let key = write(&dir, "ca-key.pem", files.get("ca-key.pem").unwrap());
    let cert = write(&dir, "ca-cert.pem", files.get("ca-cert.pem").unwrap());
    let (ok1, pub_from_key) = run(&["pkey", "-in", &key, "-pubout"]);
    let (ok2, pub_from_cert) = run(&["x509", "-in", &cert, "-noout", "-pubkey"]);
    assert!(ok1 && ok2);
    assert_eq!(pub_from_key, pub_from_cert);
    std::fs::remove_dir_all(&dir).unwrap();
}
