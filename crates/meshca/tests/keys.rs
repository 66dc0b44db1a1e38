#![allow(clippy::unwrap_used)]
//! Private key import in every format istiod reads, and each refusal with its own error.

mod common;

use common::read;
use meshca::{Error, KeyAlgorithm, KeyType, PrivateKey};

fn load(name: &str) -> Result<PrivateKey, Error> {
    PrivateKey::from_pem(&read(&format!("openssl/keys/{name}")), name)
}

#[test]
fn imports_pkcs8_pkcs1_and_sec1() {
    let cases = [
        ("rsa2048-pkcs8.pem", KeyType::Rsa { bits: 2048 }),
        ("rsa2048-pkcs1.pem", KeyType::Rsa { bits: 2048 }),
        ("p256-pkcs8.pem", KeyType::EcdsaP256),
        ("p256-sec1.pem", KeyType::EcdsaP256),
        ("p256-sec1-with-params.pem", KeyType::EcdsaP256),
        ("p256-sec1-nopub.pem", KeyType::EcdsaP256),
        ("p256-pkcs8-nopub.pem", KeyType::EcdsaP256),
        ("p384-sec1.pem", KeyType::EcdsaP384),
    ];
    for (name, want) in cases {
        let key = load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.key_type(), want, "{name}");
        // Export is PKCS#8 and re-imports to the same public key.
        let pem = key.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{name}");
        let again = PrivateKey::from_pem(pem.as_bytes(), "again").unwrap();
        assert_eq!(again.public_key_raw(), key.public_key_raw(), "{name}");
    }
    // PKCS#1 and PKCS#8 forms of one key are the same key.
    assert_eq!(
        load("rsa2048-pkcs1.pem").unwrap().public_key_raw(),
        load("rsa2048-pkcs8.pem").unwrap().public_key_raw()
    );
    assert_eq!(load("p256-sec1.pem").unwrap().public_key_raw(), load("p256-pkcs8.pem").unwrap().public_key_raw());
    // Without an embedded public key, meshca computes it: same key.
    assert_eq!(
        load("p256-pkcs8-nopub.pem").unwrap().public_key_raw(),
        load("p256-pkcs8.pem").unwrap().public_key_raw()
    );
}

#[test]
fn istio_sample_pkcs1_key_imports() {
    let key = PrivateKey::from_pem(&read("istio-samples/ca-key.pem"), "ca-key.pem").unwrap();
    assert_eq!(key.key_type(), KeyType::Rsa { bits: 2048 });
}

#[test]
fn encrypted_keys_are_refused() {
    for name in ["encrypted-pkcs8.pem", "encrypted-pkcs1.pem"] {
        let e = load(name).unwrap_err();
        assert!(matches!(&e, Error::EncryptedKey { file } if file == name), "{name}: {e}");
        assert!(e.to_string().contains("openssl pkey"), "{e}");
    }
}

#[test]
fn ed25519_is_refused() {
    assert!(matches!(load("ed25519.pem").unwrap_err(), Error::Ed25519Key { .. }));
}

#[test]
fn unknown_curves_are_refused() {
    let e = load("secp256k1.pem").unwrap_err();
    assert!(matches!(&e, Error::UnknownCurve { curve, .. } if curve.contains("secp256k1")), "{e}");
}

#[test]
fn small_rsa_is_refused() {
    assert!(matches!(load("rsa1024.pem").unwrap_err(), Error::WeakRsaKey { bits: 1024, .. }));
}

#[test]
fn a_certificate_is_not_a_key() {
    let e = PrivateKey::from_pem(&read("openssl/good/ca-cert.pem"), "ca-key.pem").unwrap_err();
    assert!(matches!(e, Error::KeyParse { .. }), "{e}");
    assert!(e.to_string().starts_with("ca-key.pem:"), "{e}");
}

#[test]
fn errors_never_quote_key_bytes() {
    let pem = String::from_utf8(read("openssl/keys/encrypted-pkcs1.pem")).unwrap();
    let body_line = pem.lines().find(|l| l.len() == 64).unwrap();
    let e = PrivateKey::from_pem(pem.as_bytes(), "k.pem").unwrap_err();
    assert!(!format!("{e} {e:?}").contains(&body_line[..20]));
}

#[test]
fn generates_every_algorithm() {
    let mut rng = common::rng(11);
    for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384, KeyAlgorithm::Rsa2048] {
        let key = PrivateKey::generate(alg, &mut rng).unwrap();
        assert!(key.key_type().matches(alg), "{alg}");
    }
}

/// The OS generator's fast paths (AWS-LC by default, else ring for ECDSA) make keys of the type
/// asked for, in a form every consumer reads: each signs a root and an intermediate that
/// rustls-webpki verifies, and its PKCS#8 reads back as the same key.
#[test]
fn os_generators_make_every_algorithm_and_the_keys_sign_verifiable_chains() {
    use meshca::{IntermediateParams, LeafParams, RootParams, SigningCa, SpiffeId};
    let now = time::OffsetDateTime::now_utc();
    for alg in [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
    ] {
        let key = PrivateKey::generate(alg, &mut meshca::OsRng).unwrap();
        assert!(key.key_type().matches(alg), "{alg}: {}", key.key_type());
        let again = PrivateKey::from_pem(key.to_pkcs8_pem().as_bytes(), "key.pem").unwrap();
        assert_eq!(again.public_key_raw(), key.public_key_raw(), "{alg}");
        let mut rp = RootParams::default();
        rp.key = alg;
        let root = SigningCa::generate_root(&rp, &mut meshca::OsRng, now).unwrap();
        let mut ip = IntermediateParams::new("c1");
        ip.key = alg;
        let ca = root.issue_intermediate(&ip, &mut meshca::OsRng, now).unwrap().value;
        let id = SpiffeId::workload("cluster.local", "default", "sa").unwrap();
        let leaf = SigningCa::new(ca).issue_leaf(&LeafParams::new(id), &mut meshca::OsRng, now).unwrap().value;
        common::webpki_verify(&leaf.chain(), leaf.roots(), now).unwrap_or_else(|e| panic!("{alg}: {e}"));
    }
}
