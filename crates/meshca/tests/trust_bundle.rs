//! The fleet's trust set as a SPIFFE bundle: each key's JWK parameters rebuild the root's own
//! public key (by RustCrypto's encoders, not meshca's reading), `x5c` is exactly that root,
//! the JWK Set holds a key once, and `spiffe_sequence` moves only when the set changes.
#![allow(clippy::unwrap_used)]

mod common;

use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use common::{fixture_now, rng};
use der::{Decode, Encode};
use meshca::{
    BundleVersion, Certificate, IntermediateParams, KeyAlgorithm, RootParams, SigningCa, TrustSet,
    DEFAULT_REFRESH_HINT_SECONDS,
};
use spki::EncodePublicKey;
use time::Duration;

fn root(cn: &str, key: KeyAlgorithm, seed: u64) -> Certificate {
    let mut p = RootParams::default();
    p.common_name = cn.into();
    p.key = key;
    SigningCa::generate_root(&p, &mut rng(seed), fixture_now()).unwrap().bundle().root().clone()
}

fn spki_der(cert: &Certificate) -> Vec<u8> {
    let c = x509_cert::Certificate::from_der(cert.der()).unwrap();
    c.tbs_certificate.subject_public_key_info.to_der().unwrap()
}

fn b64url(v: &serde_json::Value, name: &str) -> Vec<u8> {
    Base64UrlUnpadded::decode_vec(v[name].as_str().unwrap_or_else(|| panic!("no {name} in {v}"))).unwrap()
}

/// The SPKI a JWK describes, encoded by RustCrypto from the JWK's own members.
fn jwk_spki(k: &serde_json::Value) -> Vec<u8> {
    match (k["kty"].as_str().unwrap(), k["crv"].as_str()) {
        ("EC", Some(crv)) => {
            let mut point = vec![4u8];
            point.extend(b64url(k, "x"));
            point.extend(b64url(k, "y"));
            match crv {
                "P-256" => p256::PublicKey::from_sec1_bytes(&point).unwrap().to_public_key_der().unwrap().to_vec(),
                "P-384" => p384::PublicKey::from_sec1_bytes(&point).unwrap().to_public_key_der().unwrap().to_vec(),
                other => panic!("curve {other}"),
            }
        }
        ("RSA", None) => {
            let n = rsa::BigUint::from_bytes_be(&b64url(k, "n"));
            let e = rsa::BigUint::from_bytes_be(&b64url(k, "e"));
            rsa::RsaPublicKey::new(n, e).unwrap().to_public_key_der().unwrap().to_vec()
        }
        other => panic!("kty {other:?}"),
    }
}

#[test]
fn every_key_is_its_root_and_the_document_follows_the_spec() {
    let roots = vec![
        root("Root P-256", KeyAlgorithm::EcdsaP256, 1),
        root("Root P-384", KeyAlgorithm::EcdsaP384, 2),
        root("Root RSA", KeyAlgorithm::Rsa2048, 3),
    ];
    let set = TrustSet::new(roots.clone()).unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&set.spiffe_bundle(7, Duration::seconds(DEFAULT_REFRESH_HINT_SECONDS))).unwrap();
    assert_eq!(doc["spiffe_sequence"], 7);
    assert_eq!(doc["spiffe_refresh_hint"], 300);
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    for (k, root) in keys.iter().zip(&roots) {
        assert_eq!(k["use"], "x509-svid", "{k}");
        let x5c = k["x5c"].as_array().unwrap();
        assert_eq!(x5c.len(), 1, "x5c holds exactly the root: {k}");
        assert_eq!(Base64::decode_vec(x5c[0].as_str().unwrap()).unwrap(), root.der());
        assert_eq!(jwk_spki(k), spki_der(root), "{}: the JWK's parameters are not the root's key", root.subject());
    }
    assert_eq!(keys[2]["e"], "AQAB");
    // The PEM form is the same roots.
    let pem = meshca::parse_certificates(set.pem().as_bytes(), "set").unwrap();
    assert_eq!(pem, roots);
}

#[test]
fn a_key_is_held_once_and_only_cas_are_roots() {
    let now = fixture_now();
    let mut p = RootParams::default();
    p.common_name = "Root".into();
    let ca = SigningCa::generate_root(&p, &mut rng(5), now).unwrap();
    let r = ca.bundle().root().clone();
    let other = root("Other", KeyAlgorithm::EcdsaP256, 6);
    let set = TrustSet::new([r.clone(), other.clone(), r.clone()]).unwrap();
    assert_eq!(set.roots(), [r.clone(), other.clone()]);
    let doc: serde_json::Value = serde_json::from_str(&set.spiffe_bundle(1, Duration::minutes(5))).unwrap();
    assert_eq!(doc["keys"].as_array().unwrap().len(), 2);
    // A leaf-ish certificate (an intermediate is a CA, a workload leaf is not) is refused.
    let inter = ca.issue_intermediate(&IntermediateParams::new("c1"), &mut rng(7), now).unwrap().value;
    assert!(TrustSet::new([inter.ca_cert().clone()]).is_ok());
    let leaf = SigningCa::new(inter)
        .issue_leaf(
            &meshca::LeafParams::new(meshca::SpiffeId::workload("cluster.local", "ns", "sa").unwrap()),
            &mut rng(8),
            now,
        )
        .unwrap()
        .value;
    let err = TrustSet::new([leaf.cert().clone()]).unwrap_err().to_string();
    assert!(err.contains("not a CA"), "{err}");
}

#[test]
fn the_sequence_moves_on_every_change_and_only_then() {
    let t0 = fixture_now();
    let (a, b) = (root("A", KeyAlgorithm::EcdsaP256, 11), root("B", KeyAlgorithm::EcdsaP256, 12));
    let one = TrustSet::new([a.clone()]).unwrap();
    let (v1, changed) = BundleVersion::next(None, &one, t0);
    assert!(changed);
    assert_eq!(v1.sequence, 1);
    // The same set, in another order or later: the same version.
    let (same, changed) = BundleVersion::next(Some(&v1), &one, t0 + Duration::hours(1));
    assert!(!changed);
    assert_eq!(same, v1);
    let two = TrustSet::new([a.clone(), b.clone()]).unwrap();
    let later = t0 + Duration::hours(2);
    let (v2, changed) = BundleVersion::next(Some(&v1), &two, later);
    assert!(changed);
    assert_eq!((v2.sequence, v2.published_at), (2, later));
    assert!(v2.holds(&b) && !v1.holds(&b));
    let swapped = TrustSet::new([b.clone(), a.clone()]).unwrap();
    assert!(!BundleVersion::next(Some(&v2), &swapped, later + Duration::hours(1)).1);
    // Back to one root is a change too: the sequence never goes back.
    let (v3, _) = BundleVersion::next(Some(&v2), &one, later + Duration::hours(3));
    assert_eq!(v3.sequence, 3);
    // A root is usable three refresh hints after it was published.
    assert_eq!(v2.usable_from(Duration::minutes(5)), later + Duration::minutes(15));
    // The sequence saturates rather than wrapping.
    let top = BundleVersion { sequence: u64::MAX, ..v3.clone() };
    assert_eq!(BundleVersion::next(Some(&top), &two, later).0.sequence, u64::MAX);
}

#[test]
fn the_refresh_hint_is_bounded() {
    assert_eq!(meshca::refresh_hint("hint", 300).unwrap(), Duration::minutes(5));
    for bad in [0, 9, -1, i64::MAX] {
        let err = meshca::refresh_hint("trustDistribution.spiffeBundle.refreshHintSeconds", bad).unwrap_err();
        assert!(err.to_string().contains("refreshHintSeconds"), "{err}");
    }
}

#[test]
fn the_bundle_endpoint_svid_is_a_spiffe_leaf_verifiers_accept() {
    let now = fixture_now();
    let ca = SigningCa::generate_root(&RootParams::default(), &mut rng(21), now).unwrap();
    let inter = ca.issue_intermediate(&IntermediateParams::new("mgmt"), &mut rng(22), now).unwrap().value;
    for signer in [ca.clone(), SigningCa::new(inter)] {
        let svid = signer
            .issue_service_svid("prod.example", "meshca/bundle-endpoint", Duration::hours(24), &mut rng(23), now)
            .unwrap()
            .value;
        assert_eq!(svid.cert().uri_sans(), ["spiffe://prod.example/meshca/bundle-endpoint"]);
        assert_eq!(svid.cert().san_critical(), Some(true), "empty subject: a critical SAN");
        assert!(!svid.cert().is_ca());
        common::webpki_verify(&svid.chain(), ca.bundle().roots(), now + Duration::minutes(1)).unwrap();
        if meshca_testkit::verify::openssl_available() {
            let dir = meshca_testkit::tempdir("svid-openssl");
            let chain = svid.chain();
            meshca_testkit::verify::openssl_verify_certs_at(
                &dir,
                &chain[0],
                &chain[1..],
                ca.bundle().roots(),
                Some(now + Duration::minutes(1)),
            )
            .unwrap();
        }
    }
    for (td, path) in [("Bad!", "meshca/x"), ("td", "meshca//x"), ("td", "../x"), ("td", "")] {
        let err = ca.issue_service_svid(td, path, Duration::hours(1), &mut rng(24), now).unwrap_err();
        assert!(matches!(err, meshca::Error::InvalidSpiffeId { .. }), "{td} {path}: {err}");
    }
}
