#![allow(clippy::unwrap_used)]
//! Issuance: every certificate meshca issues is verified by rustls-webpki directly (RSA and
//! ECDSA, two and three levels), and its profile is checked field by field.

mod common;

use common::{fixture_now, istio_sample, load_dir, read, rng, webpki_verify};
use meshca::{
    Cacerts, Csr, Error, IntermediateParams, KeyAlgorithm, KeyType, Layout, LeafParams, PrivateKey, RootParams,
    SigningCa, SpiffeId,
};
use time::{Duration, OffsetDateTime};

fn now() -> OffsetDateTime {
    fixture_now()
}

fn leaf_params(ns: &str) -> LeafParams {
    LeafParams::new(SpiffeId::workload("cluster.local", ns, "default").unwrap())
}

fn root(key: KeyAlgorithm, seed: u64) -> SigningCa {
    let mut p = RootParams::default();
    p.key = key;
    SigningCa::generate_root(&p, &mut rng(seed), now()).unwrap()
}

fn intermediate(signer: &SigningCa, cluster: &str, key: KeyAlgorithm, seed: u64) -> Cacerts {
    let mut p = IntermediateParams::new(cluster);
    p.key = key;
    signer.issue_intermediate(&p, &mut rng(seed), now()).unwrap().value
}

/// Issues a leaf from `bundle` and verifies it with webpki against `roots`.
fn leaf_verifies(bundle: &Cacerts, roots: &[meshca::Certificate]) {
    let leaf = SigningCa::new(bundle.clone()).issue_leaf(&leaf_params("ns1"), &mut rng(99), now()).unwrap().value;
    webpki_verify(&leaf.chain(), roots, now()).unwrap();
}

#[test]
fn root_profile_matches_istio_tools_certs() {
    let r = root(KeyAlgorithm::EcdsaP256, 1);
    let c = r.bundle().ca_cert();
    assert_eq!(c.subject(), "CN=Root CA,O=Istio");
    assert!(c.is_self_signed());
    assert_eq!(c.ca_pathlen(), Some(None));
    assert_eq!(c.key_usage_names(), ["digitalSignature", "keyCertSign", "cRLSign"]);
    assert!(c.subject_key_id().is_some());
    let life = c.not_after() - c.not_before();
    assert_eq!(life, Duration::days(3650) + meshca::BACKDATE);
    // The seed's management Secret: all four files hold the root.
    let files = r.bundle().to_files(Layout::Istio);
    let pem = c.to_pem().into_bytes();
    for f in ["ca-cert.pem", "cert-chain.pem", "root-cert.pem"] {
        assert_eq!(files.get(f).unwrap(), &pem[..], "{f}");
    }
}

#[test]
fn ecdsa_two_level_chain_verifies_and_has_istio_profiles() {
    let r = root(KeyAlgorithm::EcdsaP256, 2);
    let c1 = intermediate(&r, "cluster1", KeyAlgorithm::EcdsaP256, 3);
    let ca = c1.ca_cert();
    assert_eq!(ca.organization().as_deref(), Some("Istio"));
    assert_eq!(ca.common_name().as_deref(), Some("Intermediate CA"));
    assert_eq!(ca.locality().as_deref(), Some("cluster1"));
    assert_eq!(ca.ca_pathlen(), Some(Some(0)));
    assert_eq!(ca.san_strings(), ["DNS:istiod.istio-system.svc"]);
    assert_eq!(ca.authority_key_id(), r.bundle().ca_cert().subject_key_id());
    assert!(ca.eku_names().is_empty(), "a CA EKU breaks istiod");
    assert_eq!(c1.path().len(), 2);

    let issued = SigningCa::new(c1.clone()).issue_leaf(&leaf_params("bookinfo"), &mut rng(4), now()).unwrap();
    assert!(issued.clamped_from.is_none());
    let leaf = issued.value;
    let cert = leaf.cert();
    assert_eq!(cert.subject(), "(empty)");
    assert_eq!(cert.uri_sans(), ["spiffe://cluster.local/ns/bookinfo/sa/default"]);
    assert_eq!(cert.san_critical(), Some(true));
    assert_eq!(cert.key_usage_names(), ["digitalSignature", "keyEncipherment"]);
    assert_eq!(cert.eku_names(), ["serverAuth", "clientAuth"]);
    assert!(!cert.is_ca());
    assert_eq!(cert.not_after() - cert.not_before(), Duration::hours(24) + meshca::BACKDATE);
    assert!(cert.not_before() < now() - Duration::minutes(4));
    // At least 64 bits of serial (ours: 16 octets).
    assert!(cert.serial_hex().split(':').count() >= 8);
    assert_eq!(leaf.chain().len(), 3);
    webpki_verify(&leaf.chain(), r.bundle().roots(), now()).unwrap();
    assert_eq!(meshca::verify_workload_chain(&leaf.chain(), c1.roots(), now()).unwrap().namespace(), "bookinfo");
}

#[test]
fn p384_and_rsa_intermediates_verify() {
    let r = root(KeyAlgorithm::EcdsaP384, 5);
    let c = intermediate(&r, "p384", KeyAlgorithm::EcdsaP384, 6);
    assert_eq!(c.ca_key().key_type(), KeyType::EcdsaP384);
    leaf_verifies(&c, r.bundle().roots());

    // RSA-2048 cluster CA under an RSA root whose key is PKCS#1 (made by OpenSSL).
    let rsa_root = SigningCa::from_files(&load_dir("openssl/rsa-root-signer"), now()).unwrap();
    let c = intermediate(&rsa_root, "rsa", KeyAlgorithm::Rsa2048, 7);
    assert_eq!(c.ca_key().key_type(), KeyType::Rsa { bits: 2048 });
    leaf_verifies(&c, rsa_root.bundle().roots());
}

#[test]
fn rsa_4096_istio_sample_signs_leaves_and_its_pathlen_forbids_cas() {
    // Istio's alt sample is a cluster CA (RSA 4096, PKCS#8, pathlen:0).
    let signer = SigningCa::from_files(&istio_sample("-alt"), now()).unwrap();
    assert_eq!(signer.bundle().ca_key().key_type(), KeyType::Rsa { bits: 4096 });
    leaf_verifies(signer.bundle(), signer.bundle().roots());
    let e = signer.issue_intermediate(&IntermediateParams::new("c"), &mut rng(8), now()).unwrap_err();
    assert!(matches!(e, Error::SignerCannotIssueCa { pathlen: 0, .. }), "{e}");
}

#[test]
fn istio_sample_whose_chain_lacks_the_root_signs_leaves_with_full_chains() {
    let signer = SigningCa::from_files(&istio_sample(""), now()).unwrap();
    let leaf = signer.issue_leaf(&leaf_params("foo"), &mut rng(9), now()).unwrap().value;
    let chain = leaf.chain();
    assert_eq!(chain.len(), 3, "leaf, sample CA, and the root completed from root-cert.pem");
    assert!(chain[2].is_self_signed());
    webpki_verify(&chain, signer.bundle().roots(), now()).unwrap();
}

#[test]
fn three_level_chain_under_an_external_root() {
    // Option 3 of the seed: the root lives in an external PKI; the management CA signs.
    let mgmt = SigningCa::from_files(&load_dir("openssl/mgmt-signer"), now()).unwrap();
    let c = intermediate(&mgmt, "cluster7", KeyAlgorithm::EcdsaP256, 10);
    let cns: Vec<_> = c.path().iter().map(|x| x.common_name().unwrap()).collect();
    assert_eq!(cns, ["Intermediate CA", "Management CA", "Root CA"]);
    leaf_verifies(&c, c.roots());
    // The issued bundle re-parses from its own files in both layouts.
    for layout in [Layout::Istio, Layout::Tls] {
        let again = Cacerts::from_files(&c.to_files(layout), now()).unwrap();
        assert_eq!(again.path(), c.path());
        assert_eq!(again.ca_key().public_key_raw(), c.ca_key().public_key_raw());
    }
}

#[test]
fn pathlen_zero_signer_refuses_to_issue_a_ca_but_issues_leaves() {
    let mgmt0 = SigningCa::from_files(&load_dir("openssl/mgmt0-signer"), now()).unwrap();
    let e = mgmt0.issue_intermediate(&IntermediateParams::new("c"), &mut rng(1), now()).unwrap_err();
    assert!(matches!(e, Error::SignerCannotIssueCa { pathlen: 0, .. }), "{e}");
    let leaf = mgmt0.issue_leaf(&leaf_params("x"), &mut rng(2), now()).unwrap().value;
    webpki_verify(&leaf.chain(), mgmt0.bundle().roots(), now()).unwrap();
    // A cluster CA (pathlen 0) cannot issue a CA either.
    let r = root(KeyAlgorithm::EcdsaP256, 3);
    let c = intermediate(&r, "c1", KeyAlgorithm::EcdsaP256, 4);
    assert!(matches!(
        SigningCa::new(c).issue_intermediate(&IntermediateParams::new("c2"), &mut rng(5), now()),
        Err(Error::SignerCannotIssueCa { .. })
    ));
}

#[test]
fn lifetimes_are_clamped_to_the_signer_and_the_caller_is_told() {
    let mut p = RootParams::default();
    p.ttl = Duration::days(30);
    let r = SigningCa::generate_root(&p, &mut rng(12), now()).unwrap();
    let issued = r.issue_intermediate(&IntermediateParams::new("c1"), &mut rng(13), now()).unwrap();
    assert_eq!(issued.clamped_from, Some(now() + Duration::days(365)));
    assert_eq!(issued.value.ca_cert().not_after(), r.bundle().ca_cert().not_after());
    leaf_verifies(&issued.value, r.bundle().roots());
}

#[test]
fn issuance_with_an_expired_signer_is_refused() {
    let r = root(KeyAlgorithm::EcdsaP256, 14);
    let later = r.bundle().not_after() + Duration::days(1);
    let e = r.issue_intermediate(&IntermediateParams::new("c"), &mut rng(15), later).unwrap_err();
    assert!(matches!(e, Error::SignerNotValid { .. }), "{e}");
}

#[test]
fn bad_parameters_are_refused() {
    let r = root(KeyAlgorithm::EcdsaP256, 16);
    for bad in ["", "../etc", "a b", "-x"] {
        let e = r.issue_intermediate(&IntermediateParams::new(bad), &mut rng(1), now()).unwrap_err();
        assert!(matches!(&e, Error::InvalidParameter { field, .. } if field == "cluster"), "{bad}: {e}");
    }
    let mut lp = leaf_params("a");
    lp.ttl = Duration::days(91);
    assert!(matches!(r.issue_leaf(&lp, &mut rng(1), now()), Err(Error::InvalidParameter { .. })));
    let mut ip = IntermediateParams::new("c");
    ip.ttl = Duration::ZERO;
    assert!(matches!(r.issue_intermediate(&ip, &mut rng(1), now()), Err(Error::InvalidParameter { .. })));
}

#[test]
fn csr_flow_keeps_the_cluster_key_in_the_cluster() {
    let r = root(KeyAlgorithm::EcdsaP256, 17);
    // In the cluster: a key and a CSR.
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256, &mut rng(18)).unwrap();
    let csr_pem = Csr::generate_pem("edge-1", "Istio", &key).unwrap();
    // At the CA: only the CSR.
    let csr = Csr::from_pem(csr_pem.as_bytes(), "edge-1.csr").unwrap();
    assert_eq!(csr.key_type(), KeyType::EcdsaP256);
    assert_eq!(csr.requested_cluster(), Some("edge-1"));
    let signed = r.sign_intermediate_csr(&csr, &IntermediateParams::new("edge-1"), &mut rng(19), now()).unwrap().value;
    let files = signed.to_files();
    assert!(!files.contains("ca-key.pem"), "the CA never sees or writes the cluster key");
    // Back in the cluster: join the key.
    let bundle = signed.into_cacerts(key, now()).unwrap();
    assert_eq!(bundle.ca_cert().locality().as_deref(), Some("edge-1"));
    leaf_verifies(&bundle, r.bundle().roots());
}

#[test]
fn openssl_csrs_get_the_profile_not_what_they_ask_for() {
    let r = root(KeyAlgorithm::EcdsaP256, 20);
    let csr = Csr::from_pem(&read("openssl/csr/rsa2048.csr"), "rsa2048.csr").unwrap();
    assert_eq!(csr.key_type(), KeyType::Rsa { bits: 2048 });
    assert_eq!(csr.requested_cluster(), None);
    assert_eq!(csr.subject(), "CN=whatever the requester asks");
    let signed = r.sign_intermediate_csr(&csr, &IntermediateParams::new("c9"), &mut rng(21), now()).unwrap().value;
    let cert = signed.cert();
    let serial: String = cert.serial_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(cert.subject(), format!("SERIALNUMBER={serial},L=c9,CN=Intermediate CA,O=Istio"));
    assert_eq!(cert.ca_pathlen(), Some(Some(0)), "pathlen from the profile, not the CSR's unconstrained CA:true");
    let key = PrivateKey::from_pem(&read("openssl/keys/rsa2048-pkcs8.pem"), "k").unwrap();
    let bundle = signed.into_cacerts(key, now()).unwrap();
    leaf_verifies(&bundle, r.bundle().roots());

    // A CSR joined with the wrong key is refused as a mismatch.
    let csr = Csr::from_pem(&read("openssl/csr/p256.csr"), "p256.csr").unwrap();
    let signed = r.sign_intermediate_csr(&csr, &IntermediateParams::new("c10"), &mut rng(22), now()).unwrap().value;
    let wrong = PrivateKey::generate(KeyAlgorithm::EcdsaP256, &mut rng(23)).unwrap();
    assert!(matches!(signed.into_cacerts(wrong, now()), Err(Error::KeyMismatch { .. })));
}

#[test]
fn tampered_csr_is_refused() {
    let e = Csr::from_pem(&read("openssl/csr/tampered.csr"), "tampered.csr").unwrap_err();
    assert!(matches!(&e, Error::Csr { file, detail } if file == "tampered.csr" && detail.contains("signature")), "{e}");
    let e = Csr::from_pem(&read("openssl/good/ca-cert.pem"), "x.csr").unwrap_err();
    assert!(matches!(e, Error::EmptyPem { .. }), "{e}");
}

#[test]
fn clusters_under_one_root_trust_each_other_and_a_stranger_is_named() {
    let r = root(KeyAlgorithm::EcdsaP256, 24);
    let c1 = intermediate(&r, "cluster1", KeyAlgorithm::EcdsaP256, 25);
    let c2 = intermediate(&r, "cluster2", KeyAlgorithm::EcdsaP384, 26);
    // A leaf from each cluster verifies against the other's root-cert.pem.
    let l1 = SigningCa::new(c1.clone()).issue_leaf(&leaf_params("a"), &mut rng(27), now()).unwrap().value;
    let l2 = SigningCa::new(c2.clone()).issue_leaf(&leaf_params("b"), &mut rng(28), now()).unwrap().value;
    webpki_verify(&l1.chain(), c2.roots(), now()).unwrap();
    webpki_verify(&l2.chain(), c1.roots(), now()).unwrap();
    let shared = meshca::check_mutual_trust(&[("cluster1", &c1), ("cluster2", &c2)]).unwrap();
    assert_eq!(shared.fingerprint, r.bundle().root_fingerprint());
    meshca::check_cross_cluster(&[("cluster1", &c1), ("cluster2", &c2)], &mut rng(29), now()).unwrap();

    let other = root(KeyAlgorithm::EcdsaP256, 30);
    let c3 = intermediate(&other, "cluster3", KeyAlgorithm::EcdsaP256, 31);
    let l3 = SigningCa::new(c3.clone()).issue_leaf(&leaf_params("c"), &mut rng(32), now()).unwrap().value;
    assert!(webpki_verify(&l3.chain(), c1.roots(), now()).is_err(), "the independent verifier agrees");
    for order in
        [vec![("cluster1", &c1), ("cluster2", &c2), ("cluster3", &c3)], vec![("cluster3", &c3), ("cluster1", &c1)]]
    {
        let e = meshca::check_mutual_trust(&order).unwrap_err();
        match &e {
            Error::RootMismatch { reference, other, .. } => {
                assert!(reference == "cluster3" || other == "cluster3", "{e}");
            }
            other => panic!("{other}"),
        }
    }
    let e = meshca::check_cross_cluster(&[("cluster1", &c1), ("cluster3", &c3)], &mut rng(33), now()).unwrap_err();
    assert!(e.to_string().contains("cluster3"), "{e}");
}

#[test]
fn the_mismatch_names_the_odd_cluster_not_the_reference() {
    let r = root(KeyAlgorithm::EcdsaP256, 34);
    let other = root(KeyAlgorithm::EcdsaP256, 35);
    let a = intermediate(&r, "a", KeyAlgorithm::EcdsaP256, 36);
    let b = intermediate(&r, "b", KeyAlgorithm::EcdsaP256, 37);
    let odd = intermediate(&other, "odd", KeyAlgorithm::EcdsaP256, 38);
    let e = meshca::check_mutual_trust(&[("a", &a), ("b", &b), ("odd", &odd)]).unwrap_err();
    assert!(matches!(&e, Error::RootMismatch { other, reference, .. } if other == "odd" && reference == "a"), "{e}");
}
