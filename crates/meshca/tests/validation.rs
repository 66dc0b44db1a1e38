#![allow(clippy::unwrap_used)]
//! One test per bundle validation rule, each from a fixture made by testdata/generate.sh (or
//! from a good fixture with one file removed or garbled).

mod common;

use common::{fixture_now, istio_sample, load_dir, read};
use meshca::{Cacerts, Error, Files, Layout, Warning};

fn parse(dir: &str) -> Result<Cacerts, Error> {
    Cacerts::from_files(&load_dir(dir), fixture_now())
}

fn err(dir: &str) -> Error {
    match parse(dir) {
        Ok(_) => panic!("{dir} was accepted"),
        Err(e) => e,
    }
}

#[test]
fn good_bundle_is_accepted_in_both_layouts() {
    let b = parse("openssl/good").unwrap();
    assert_eq!(b.layout(), Layout::Istio);
    assert_eq!(b.ca_cert().locality().as_deref(), Some("cluster1"));
    assert_eq!(b.path().len(), 2);
    assert!(b.warnings().is_empty(), "{:?}", b.warnings());
    let t = parse("openssl/good-tls").unwrap();
    assert_eq!(t.layout(), Layout::Tls);
    assert_eq!(t.ca_cert(), b.ca_cert());
    assert_eq!(t.root(), b.root());
}

#[test]
fn three_level_chain_is_accepted() {
    let b = parse("openssl/three-level").unwrap();
    let subjects: Vec<_> = b.path().iter().map(|c| c.common_name().unwrap()).collect();
    assert_eq!(subjects, ["Intermediate CA", "Management CA", "Root CA"]);
}

#[test]
fn no_files_at_all() {
    let e = Cacerts::from_files(&Files::new(), fixture_now()).unwrap_err();
    assert!(matches!(e, Error::NoBundle { .. }), "{e}");
    assert!(e.to_string().contains("tls.crt"), "{e}");
}

#[test]
fn partial_bundle_names_the_missing_file() {
    let mut files = Files::new();
    for (name, data) in load_dir("openssl/good").iter() {
        if name != "cert-chain.pem" {
            files.insert(name, data.to_vec());
        }
    }
    let e = Cacerts::from_files(&files, fixture_now()).unwrap_err();
    match &e {
        Error::MissingFile { missing, .. } => assert_eq!(missing, "cert-chain.pem"),
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("istiod refuses a partial bundle"), "{e}");
}

#[test]
fn garbled_pem_names_the_file() {
    let mut files = load_dir("openssl/good");
    let mut chain = files.get("root-cert.pem").unwrap().to_vec();
    let mid = chain.len() / 2;
    chain[mid] = b'!';
    files.insert("root-cert.pem", chain);
    let e = Cacerts::from_files(&files, fixture_now()).unwrap_err();
    assert!(matches!(&e, Error::Pem { file, .. } if file == "root-cert.pem"), "{e}");
}

#[test]
fn key_in_certificate_file_is_refused() {
    let mut files = load_dir("openssl/good");
    files.insert("ca-cert.pem", files.get("ca-key.pem").unwrap().to_vec());
    let e = Cacerts::from_files(&files, fixture_now()).unwrap_err();
    assert!(
        matches!(&e, Error::UnexpectedPemLabel { file, label, .. } if file == "ca-cert.pem" && label == "PRIVATE KEY"),
        "{e}"
    );
}

#[test]
fn ca_cert_with_several_certificates_is_refused() {
    let mut files = load_dir("openssl/good");
    files.insert("ca-cert.pem", files.get("cert-chain.pem").unwrap().to_vec());
    let e = Cacerts::from_files(&files, fixture_now()).unwrap_err();
    assert!(matches!(e, Error::TooManyCertificates { count: 2, .. }), "{e}");
}

#[test]
fn chain_must_start_with_ca_cert() {
    let e = err("openssl/wrong-order");
    match &e {
        Error::ChainOrder { file, found, expected } => {
            assert_eq!(file, "cert-chain.pem");
            assert!(found.contains("Root CA"), "{found}");
            assert!(expected.contains("cluster1"), "{expected}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn each_chain_certificate_must_be_followed_by_its_issuer() {
    let e = err("openssl/chain-gap");
    match &e {
        Error::ChainBroken { index, issuer, next, .. } => {
            assert_eq!(*index, 1);
            assert!(issuer.contains("Management CA"), "{issuer}");
            assert!(next.contains("Root CA"), "{next}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_same_name_impostor_issuer_fails_the_signature_check() {
    let e = err("openssl/bad-signature");
    assert!(matches!(&e, Error::BadSignature { subject, .. } if subject.contains("cluster1")), "{e}");
}

#[test]
fn chain_must_reach_a_root_in_root_cert() {
    let e = err("openssl/untrusted-root");
    match &e {
        Error::UntrustedChain { roots_file, roots, .. } => {
            assert_eq!(roots_file, "root-cert.pem");
            assert!(roots.contains("Other Root CA"), "{roots}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn root_cert_holds_only_roots() {
    let e = err("openssl/not-a-root");
    assert!(matches!(&e, Error::NotARoot { subject, .. } if subject.contains("cluster1")), "{e}");
}

#[test]
fn key_must_match_ca_cert() {
    let e = err("openssl/key-mismatch");
    match &e {
        Error::KeyMismatch { key_file, cert_file, .. } => {
            assert_eq!((key_file.as_str(), cert_file.as_str()), ("ca-key.pem", "ca-cert.pem"));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn signing_ca_must_be_a_ca() {
    let e = err("openssl/not-ca");
    assert!(matches!(&e, Error::NotCa { file, .. } if file == "ca-cert.pem"), "{e}");
    assert!(e.to_string().contains("not authorized to sign"), "{e}");
}

#[test]
fn ca_key_usage_must_allow_cert_sign() {
    let e = err("openssl/no-keycertsign");
    assert!(matches!(e, Error::NoKeyCertSign { .. }), "{e}");
}

#[test]
fn path_length_constraints_hold() {
    let e = err("openssl/pathlen-exceeded");
    match &e {
        Error::PathLenExceeded { subject, pathlen, below, file } => {
            assert!(subject.contains("Management CA pathlen 0"), "{subject}");
            assert_eq!((*pathlen, *below), (0, 1));
            assert_eq!(file, "cert-chain.pem");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn ca_eku_must_allow_server_and_client_auth() {
    let e = err("openssl/ca-eku-server-only");
    assert!(matches!(e, Error::CaEkuTooNarrow { missing: "clientAuth", .. }), "{e}");
    assert!(parse("openssl/ca-eku-both").is_ok());
}

#[test]
fn expired_and_not_yet_valid_name_the_certificate() {
    let files = load_dir("openssl/good");
    let b = Cacerts::from_files(&files, fixture_now()).unwrap();
    let after = b.ca_cert().not_after() + time::Duration::seconds(1);
    let e = Cacerts::from_files(&files, after).unwrap_err();
    assert!(
        matches!(&e, Error::Expired { file, subject, .. } if file == "ca-cert.pem" && subject.contains("cluster1")),
        "{e}"
    );
    let before = b.ca_cert().not_before() - time::Duration::seconds(1);
    let e = Cacerts::from_files(&files, before).unwrap_err();
    assert!(matches!(e, Error::NotYetValid { .. }), "{e}");
    // One second inside either edge is fine.
    assert!(Cacerts::from_files(&files, b.ca_cert().not_after()).is_ok());
}

#[test]
fn sha1_signatures_are_refused() {
    let e = err("openssl/sha1");
    assert!(matches!(e, Error::WeakSignature { algorithm: "ecdsa-with-SHA1", .. }), "{e}");
}

#[test]
fn rsa_below_2048_is_refused() {
    let e = err("openssl/rsa1024");
    assert!(matches!(e, Error::WeakRsaKey { bits: 1024, .. }), "{e}");
}

#[test]
fn ed25519_is_refused() {
    let e = err("openssl/ed25519");
    assert!(matches!(e, Error::UnsupportedSignature { .. } | Error::Ed25519Key { .. }), "{e}");
    assert!(e.to_string().contains("Ed25519"), "{e}");
}

// ---- Istio's own samples (facts file: each must be handled as stated) ----------------------

#[test]
fn istio_sample_is_accepted_though_its_chain_omits_the_root() {
    let b = Cacerts::from_files(&istio_sample(""), fixture_now()).unwrap();
    assert_eq!(b.cert_chain().len(), 1);
    assert_eq!(b.path().len(), 2, "the root is completed from root-cert.pem");
    assert_eq!(b.ca_key().key_type(), meshca::KeyType::Rsa { bits: 2048 });
}

#[test]
fn istio_alt_sample_is_accepted() {
    let b = Cacerts::from_files(&istio_sample("-alt"), fixture_now()).unwrap();
    assert_eq!(b.ca_key().key_type(), meshca::KeyType::Rsa { bits: 4096 });
}

#[test]
fn istio_alt_2_key_mismatch_is_refused_naming_both_files() {
    let mut files = istio_sample("");
    files.insert("ca-cert.pem", read("istio-samples/ca-cert-alt-2.pem"));
    files.insert("ca-key.pem", read("istio-samples/ca-key-alt-2.pem"));
    files.insert("cert-chain.pem", read("istio-samples/ca-cert-alt-2.pem"));
    let e = Cacerts::from_files(&files, fixture_now()).unwrap_err();
    assert!(matches!(e, Error::KeyMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("ca-key.pem") && msg.contains("ca-cert.pem"), "{msg}");
}

#[test]
fn combined_root_bundles_are_trust_bundles() {
    for combined in ["root-cert-combined.pem", "root-cert-combined-2.pem"] {
        for variant in ["", "-alt"] {
            let mut files = istio_sample(variant);
            files.insert("root-cert.pem", read(&format!("istio-samples/{combined}")));
            let b = Cacerts::from_files(&files, fixture_now()).unwrap_or_else(|e| panic!("{combined}{variant}: {e}"));
            assert!(b.roots().len() >= 2);
            assert!(b.trusts_root(b.root()));
        }
    }
}

#[test]
fn tools_certs_style_intermediate_outliving_its_root_is_a_warning_only() {
    // Istio's alt sample: intermediate and root made with the same lifetime.
    let b = Cacerts::from_files(&istio_sample("-alt"), fixture_now()).unwrap();
    let outlives = b.path()[0].not_after() > b.path()[1].not_after();
    assert_eq!(outlives, b.warnings().iter().any(|w| matches!(w, Warning::OutlivesIssuer { .. })));
}
