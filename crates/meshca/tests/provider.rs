#![allow(clippy::unwrap_used)]
//! A CA certificate signed by someone else's PKI: meshca's profile check of the answer. The
//! "provider" here is a meshca signer answering the CSR, made to answer wrongly in each way a
//! provider's role or mount settings can; the real OpenBao server is in meshca-ops' tests.

mod common;

use common::{rng, webpki_verify};
use meshca::{
    CaRequest, Certificate, Csr, Error, IntermediateParams, LeafParams, ProviderAnswer, RootParams, SigningCa, SpiffeId,
};
use time::{Duration, OffsetDateTime};

fn now() -> OffsetDateTime {
    meshca_testkit::t0()
}

fn provider_root(seed: u64) -> SigningCa {
    SigningCa::generate_root(&RootParams::default(), &mut rng(seed), now()).unwrap()
}

/// The provider signs `req`'s CSR with `params` (what it was told, or what its role overrides).
fn answer(provider: &SigningCa, req: &CaRequest, params: &IntermediateParams) -> ProviderAnswer {
    let csr = Csr::from_pem(req.csr_pem().as_bytes(), "csr").unwrap();
    let signed = provider.sign_intermediate_csr(&csr, params, &mut rng(77), now()).unwrap().value;
    let pem = |c: &[Certificate]| c.iter().map(Certificate::to_pem).collect::<String>().into_bytes();
    ProviderAnswer { certificate: signed.cert().to_pem().into_bytes(), chain: pem(&signed.chain()[1..]) }
}

fn request(cluster: &str, seed: u64) -> CaRequest {
    let mut p = IntermediateParams::new(cluster);
    p.ttl = Duration::days(30);
    CaRequest::new(&p, &mut rng(seed)).unwrap()
}

fn refusal(e: Error) -> String {
    match e {
        Error::ProviderCertificate { problem, .. } => problem,
        other => panic!("expected a provider refusal, got {other:?}: {other}"),
    }
}

#[test]
fn a_well_signed_answer_becomes_a_bundle_that_verifies() {
    let root = provider_root(1);
    let req = request("east", 2);
    let a = answer(&root, &req, req.params());
    let issued = req.accept(&a, root.bundle().roots(), "bao", now()).unwrap();
    let bundle = issued.value;
    assert!(issued.clamped_from.is_none());
    assert_eq!(bundle.ca_cert().locality().as_deref(), Some("east"));
    assert_eq!(bundle.cert_chain().len(), 2, "cert-chain.pem runs to the root");
    assert_eq!(bundle.root(), root.bundle().root());
    let leaf = SigningCa::new(bundle.clone())
        .issue_leaf(&LeafParams::new(SpiffeId::workload("cluster.local", "ns", "sa").unwrap()), &mut rng(3), now())
        .unwrap()
        .value;
    webpki_verify(&leaf.chain(), root.bundle().roots(), now()).unwrap();
}

#[test]
fn a_provider_with_its_own_intermediate_gives_a_chain_to_the_root() {
    let root = provider_root(4);
    // The provider's issuing CA sits under its root (root -> provider intermediate -> cluster).
    let mut p = IntermediateParams::new("pki-int");
    p.pathlen = 1;
    let issuing = SigningCa::new(root.issue_intermediate(&p, &mut rng(5), now()).unwrap().value);
    let req = request("west", 6);
    let mut a = answer(&issuing, &req, req.params());
    // The provider lists its chain root first: the order is tolerated, the path is rebuilt.
    let chain = Certificate::from_pem_all(&a.chain, "c").unwrap();
    a.chain = chain.iter().rev().map(Certificate::to_pem).collect::<String>().into_bytes();
    let bundle = req.accept(&a, root.bundle().roots(), "bao", now()).unwrap().value;
    assert_eq!(bundle.cert_chain().len(), 3);
    assert_eq!(bundle.cert_chain()[1], *issuing.bundle().ca_cert());
    let leaf = SigningCa::new(bundle)
        .issue_leaf(&LeafParams::new(SpiffeId::workload("cluster.local", "ns", "sa").unwrap()), &mut rng(7), now())
        .unwrap()
        .value;
    webpki_verify(&leaf.chain(), root.bundle().roots(), now()).unwrap();
    // Without the root in the answer, the root comes from the trust bundle.
    let req = request("west", 8);
    let mut a = answer(&issuing, &req, req.params());
    a.chain = issuing.bundle().ca_cert().to_pem().into_bytes();
    assert_eq!(req.accept(&a, root.bundle().roots(), "bao", now()).unwrap().value.cert_chain().len(), 3);
}

#[test]
fn what_a_provider_gets_wrong_is_refused_and_named() {
    let root = provider_root(10);
    let trust = root.bundle().roots();

    // A role that drops use_csr_values: the subject is the role's, not the cluster's.
    let req = request("east", 11);
    let a = answer(&root, &req, &IntermediateParams::new("somewhere-else"));
    let p = refusal(req.accept(&a, trust, "bao", now()).unwrap_err());
    assert!(p.contains("subject") && p.contains("L=east"), "{p}");

    // A path length above what was asked.
    let req = request("east", 12);
    let mut params = req.params().clone();
    params.pathlen = 2;
    let a = answer(&root, &req, &params);
    let p = refusal(req.accept(&a, trust, "bao", now()).unwrap_err());
    assert!(p.contains("path length is 2"), "{p}");

    // A TTL the mount's max lease TTL cut.
    let req = request("east", 13);
    let mut params = req.params().clone();
    params.ttl = Duration::days(3);
    let a = answer(&root, &req, &params);
    let p = refusal(req.accept(&a, trust, "bao", now()).unwrap_err());
    assert!(p.contains("lifetime was cut"), "{p}");

    // A certificate for someone else's key.
    let req = request("east", 14);
    let other = request("east", 15);
    let a = answer(&root, &other, req.params());
    let p = refusal(req.accept(&a, trust, "bao", now()).unwrap_err());
    assert!(p.contains("another key"), "{p}");

    // A leaf where a CA was asked for.
    let req = request("east", 16);
    let leaf = root
        .issue_leaf(&LeafParams::new(SpiffeId::workload("cluster.local", "ns", "sa").unwrap()), &mut rng(17), now())
        .unwrap()
        .value;
    let a =
        ProviderAnswer { certificate: leaf.cert().to_pem().into_bytes(), chain: root.bundle().root().to_pem().into() };
    let p = refusal(req.accept(&a, trust, "bao", now()).unwrap_err());
    assert!(p.contains("not a CA certificate"), "{p}");

    // Signed under a root the fleet does not trust.
    let req = request("east", 18);
    let stranger = provider_root(19);
    let a = answer(&stranger, &req, req.params());
    let p = refusal(req.accept(&a, trust, "bao", now()).unwrap_err());
    assert!(p.contains("trust bundle does not hold"), "{p}");

    // No issuer in the chain.
    let req = request("east", 20);
    let mut a = answer(&root, &req, req.params());
    a.chain.clear();
    let p = refusal(req.accept(&a, trust, "bao", now()).unwrap_err());
    assert!(p.contains("does not hold its issuer"), "{p}");

    // Two certificates where one was asked for.
    let req = request("east", 21);
    let mut a = answer(&root, &req, req.params());
    a.certificate.extend_from_slice(root.bundle().root().to_pem().as_bytes());
    let p = refusal(req.accept(&a, trust, "bao", now()).unwrap_err());
    assert!(p.contains("2 certificates"), "{p}");

    // Garbage is a parse error naming the answer, never a panic.
    let req = request("east", 22);
    let a = ProviderAnswer {
        certificate: b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
        chain: vec![],
    };
    let e = req.accept(&a, trust, "bao", now()).unwrap_err();
    assert!(e.to_string().contains("the provider's certificate"), "{e}");
}

#[test]
fn an_issuer_near_its_end_clamps_and_says_so() {
    let mut p = RootParams::default();
    p.ttl = Duration::days(10);
    let root = SigningCa::generate_root(&p, &mut rng(30), now()).unwrap();
    let req = request("east", 31);
    let a = answer(&root, &req, req.params());
    let issued = req.accept(&a, root.bundle().roots(), "bao", now()).unwrap();
    assert!(issued.clamped_from.is_some(), "30 days asked of a root with 10 left");
    assert_eq!(issued.value.not_after(), root.bundle().not_after());
}

#[test]
fn the_request_is_the_profiles_subject_and_a_fresh_key() {
    let a = request("east", 40);
    let b = request("east", 41);
    let csr = Csr::from_pem(a.csr_pem().as_bytes(), "csr").unwrap();
    assert_eq!(csr.requested_cluster(), Some("east"));
    assert!(csr.subject().contains("CN=Intermediate CA") && csr.subject().contains("O=Istio"), "{}", csr.subject());
    assert_ne!(a.csr_pem(), b.csr_pem());
    assert!(!format!("{a:?}").contains("PRIVATE"), "Debug shows no key");
    let mut p = IntermediateParams::new("bad/name");
    p.ttl = Duration::days(1);
    assert!(CaRequest::new(&p, &mut rng(42)).is_err());
}
