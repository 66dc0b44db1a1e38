#![allow(clippy::unwrap_used)]
//! Signing workload requests (istiod's RA mode, PodCertificateRequests): what passes is issued
//! with meshca's leaf profile and verified by rustls-webpki and `openssl verify` against the
//! root; every rule refuses with its reason, and a refused request is never signed.

mod common;

use common::{rng, webpki_verify};
use meshca::{
    IntermediateParams, KeyType, RefusalReason, RootParams, SigningCa, WorkloadCert, WorkloadRequest, WorkloadRules,
};
use meshca_testkit::csr::{openssl_request, request, spiffe_request, San};
use meshca_testkit::t0;
use time::{Duration, OffsetDateTime};

const ID: &str = "spiffe://cluster.local/ns/shop/sa/checkout";

fn now() -> OffsetDateTime {
    t0()
}

/// A root and, under it, a cluster's intermediate (`days` long).
fn cluster_ca(days: i64) -> (SigningCa, SigningCa) {
    let root = SigningCa::generate_root(&RootParams::default(), &mut rng(1), now()).unwrap();
    let mut p = IntermediateParams::new("east");
    p.ttl = Duration::days(days);
    let cluster = SigningCa::new(root.issue_intermediate(&p, &mut rng(2), now()).unwrap().value);
    (root, cluster)
}

fn rules() -> WorkloadRules {
    let mut r = WorkloadRules::new("cluster.local");
    r.requesters = vec!["system:serviceaccount:istio-system:istiod".into()];
    r
}

fn sign(ca: &SigningCa, req: &WorkloadRequest<'_>, rules: &WorkloadRules) -> Result<WorkloadCert, RefusalReason> {
    ca.sign_workload_request(req, rules, &mut rng(3), now()).unwrap().map_err(|r| {
        assert!(!r.message.is_empty());
        r.reason
    })
}

fn verifies(root: &SigningCa, signed: &WorkloadCert) {
    let chain: Vec<meshca::Certificate> =
        std::iter::once(signed.cert.clone()).chain(signed.intermediates.iter().cloned()).collect();
    webpki_verify(&chain, root.bundle().roots(), now()).unwrap();
    if meshca_testkit::verify::openssl_available() {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = meshca_testkit::tempdir(&format!(
            "workload-openssl-{}",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        meshca_testkit::verify::openssl_verify_certs_at(
            &dir,
            &signed.cert,
            &signed.intermediates,
            root.bundle().roots(),
            Some(now()),
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn istiod_s_request_is_signed_with_the_leaf_profile_and_verifies_under_the_root() {
    let (root, cluster) = cluster_ca(365);
    let pem = spiffe_request(ID);
    let usages: Vec<String> = meshca::WORKLOAD_USAGES.iter().map(|u| (*u).to_owned()).collect();
    let mut req = WorkloadRequest::new(pem.as_bytes());
    req.usages = Some(&usages);
    req.requester = Some("system:serviceaccount:istio-system:istiod");
    req.expiration_seconds = Some(3600);
    let signed = sign(&cluster, &req, &rules()).unwrap();
    verifies(&root, &signed);
    let c = &signed.cert;
    assert_eq!(c.uri_sans(), [ID]);
    assert_eq!(c.san_critical(), Some(true), "empty subject: the SAN is critical");
    assert!(!c.is_ca());
    assert_eq!(c.key_usage_names(), ["digitalSignature", "keyEncipherment"]);
    assert_eq!(c.not_after(), now() + Duration::hours(1), "expirationSeconds honoured");
    assert_eq!(signed.clamped_from, None);
    assert_eq!(signed.intermediates.len(), 1, "the cluster's intermediate, not the root");
    assert_eq!(signed.intermediates[0], *cluster.bundle().ca_cert());
    let chain = signed.chain_pem();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(chain.starts_with(&c.to_pem()));
    // The request's key is the certificate's.
    let csr = meshca::Csr::from_pem(pem.as_bytes(), "req").unwrap();
    assert_eq!(c.key_type(), Some(csr.key_type()));
}

#[test]
fn lifetimes_are_clamped_to_the_maximum_and_to_the_intermediate() {
    let (root, cluster) = cluster_ca(365);
    let pem = spiffe_request(ID);
    let mut req = WorkloadRequest::new(pem.as_bytes());
    req.expiration_seconds = Some(7 * 86_400);
    let signed = sign(&cluster, &req, &rules()).unwrap();
    assert_eq!(signed.cert.not_after(), now() + Duration::hours(24), "maxTtlHours");
    assert_eq!(signed.clamped_from, Some(now() + Duration::days(7)));
    req.expiration_seconds = Some(60);
    let short = sign(&cluster, &req, &rules()).unwrap();
    assert_eq!(short.cert.not_after(), now() + Duration::seconds(600), "Kubernetes' 10-minute minimum");
    verifies(&root, &short);
    // An intermediate that ends in 2 hours: the certificate ends with it.
    let mut p = IntermediateParams::new("west");
    p.ttl = Duration::hours(2);
    let ending = SigningCa::new(root.issue_intermediate(&p, &mut rng(4), now()).unwrap().value);
    req.expiration_seconds = None;
    let clamped = sign(&ending, &req, &rules()).unwrap();
    assert_eq!(clamped.cert.not_after(), ending.bundle().ca_cert().not_after());
    assert!(clamped.clamped_from.is_some());
    verifies(&root, &clamped);
    // A signer past its notAfter is the signer's error, not the request's.
    assert!(ending.sign_workload_request(&req, &rules(), &mut rng(5), now() + Duration::hours(3)).is_err());
}

#[test]
fn every_rule_refuses_with_its_reason() {
    use RefusalReason as R;
    let (root, cluster) = cluster_ca(365);
    let p256 = &meshca_testkit::csr::P256;
    let cases: Vec<(&str, String, R)> = vec![
        (
            "two URIs",
            request(p256, &[San::Uri(ID), San::Uri("spiffe://cluster.local/ns/a/sa/b")], false),
            R::SanNotAllowed,
        ),
        ("no URI", request(p256, &[San::Dns("checkout.shop.svc")], false), R::SanNotAllowed),
        ("a DNS SAN", request(p256, &[San::Uri(ID), San::Dns("checkout.shop.svc")], false), R::SanNotAllowed),
        ("an IP SAN", request(p256, &[San::Uri(ID), San::Ip([10, 0, 0, 1])], false), R::SanNotAllowed),
        ("an email SAN", request(p256, &[San::Uri(ID), San::Email("a@example.com")], false), R::SanNotAllowed),
        ("another trust domain", spiffe_request("spiffe://evil.example/ns/shop/sa/checkout"), R::IdentityNotAllowed),
        ("not a workload ID", spiffe_request("spiffe://cluster.local/admin"), R::IdentityNotAllowed),
        ("not SPIFFE", spiffe_request("https://cluster.local/ns/shop/sa/checkout"), R::IdentityNotAllowed),
        ("a CA", request(p256, &[San::Uri(ID)], true), R::CaNotAllowed),
        (
            "garbage",
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into(),
            R::MalformedRequest,
        ),
        ("no PEM", "hello".into(), R::MalformedRequest),
        ("oversized", format!("{}{}", spiffe_request(ID), " ".repeat(meshca::MAX_REQUEST_BYTES)), R::MalformedRequest),
    ];
    for (what, pem, reason) in &cases {
        let req = WorkloadRequest::new(pem.as_bytes());
        assert_eq!(sign(&cluster, &req, &rules()).err(), Some(*reason), "{what}");
    }
    // A tampered request: its signature no longer verifies.
    let pem = spiffe_request(ID);
    let csr = pem_der(&pem);
    let mut tampered = csr.clone();
    let last = tampered.len() - 3;
    tampered[last] ^= 0x01;
    assert_eq!(sign(&cluster, &WorkloadRequest::new(&tampered), &rules()).err(), Some(R::BadSignature));
    assert!(sign(&cluster, &WorkloadRequest::new(&csr), &rules()).is_ok(), "DER is read too");
    // Rules around the request.
    let mut req = WorkloadRequest::new(pem.as_bytes());
    let ca_usage = vec!["digital signature".to_owned(), "cert sign".to_owned()];
    req.usages = Some(&ca_usage);
    assert_eq!(sign(&cluster, &req, &rules()).err(), Some(R::UsageNotAllowed));
    let mut req = WorkloadRequest::new(pem.as_bytes());
    req.requester = Some("system:serviceaccount:shop:checkout");
    assert_eq!(sign(&cluster, &req, &rules()).err(), Some(R::RequesterNotAllowed));
    let mut req = WorkloadRequest::new(pem.as_bytes());
    req.identity = Some(("shop", "cart"));
    assert_eq!(sign(&cluster, &req, &rules()).err(), Some(R::IdentityNotAllowed), "not the pod's identity");
    req.identity = Some(("shop", "checkout"));
    verifies(&root, &sign(&cluster, &req, &rules()).unwrap());
    let mut p256_only = rules();
    p256_only.key_types = vec![KeyType::EcdsaP256];
    let p384 = request(&meshca_testkit::csr::P384, &[San::Uri(ID)], false);
    assert_eq!(sign(&cluster, &WorkloadRequest::new(p384.as_bytes()), &p256_only).err(), Some(R::KeyNotAllowed));
    assert!(sign(&cluster, &WorkloadRequest::new(p384.as_bytes()), &rules()).is_ok());
    // DNS SANs when the policy allows them: copied after the SPIFFE ID.
    let mut dns_ok = rules();
    dns_ok.allow_dns_sans = true;
    let with_dns = request(p256, &[San::Uri(ID), San::Dns("checkout.shop.svc")], false);
    let signed = sign(&cluster, &WorkloadRequest::new(with_dns.as_bytes()), &dns_ok).unwrap();
    assert_eq!(signed.cert.san_strings(), [format!("URI:{ID}"), "DNS:checkout.shop.svc".to_owned()]);
    verifies(&root, &signed);
}

#[test]
fn openssl_made_requests_with_a_broken_hash_or_a_short_rsa_key_are_refused() {
    let (root, cluster) = cluster_ca(365);
    let Some(sha1) = openssl_request(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-sha1"], ID) else {
        eprintln!("SKIP: openssl is not installed");
        return;
    };
    assert_eq!(
        sign(&cluster, &WorkloadRequest::new(sha1.as_bytes()), &rules()).err(),
        Some(RefusalReason::WeakSignature)
    );
    let rsa1024 = openssl_request(&["-newkey", "rsa:1024"], ID).unwrap();
    assert_eq!(
        sign(&cluster, &WorkloadRequest::new(rsa1024.as_bytes()), &rules()).err(),
        Some(RefusalReason::KeyNotAllowed)
    );
    let rsa2048 = openssl_request(&["-newkey", "rsa:2048"], ID).unwrap();
    let signed = sign(&cluster, &WorkloadRequest::new(rsa2048.as_bytes()), &rules()).unwrap();
    assert_eq!(signed.cert.key_type(), Some(KeyType::Rsa { bits: 2048 }));
    verifies(&root, &signed);
}

fn pem_der(pem: &str) -> Vec<u8> {
    pem_rfc7468::decode_vec(pem.as_bytes()).unwrap().1
}

#[test]
fn a_pod_s_key_is_signed_for_the_pod_s_own_identity() {
    use meshca::PodKeyRequest;
    use meshca_testkit::csr::{public_key, ED25519, P256};
    let (root, cluster) = cluster_ca(365);
    let spki = public_key(&P256);
    let req = PodKeyRequest::new(&spki, "shop", "checkout");
    let signed = cluster.sign_pod_key(&req, &rules(), &mut rng(6), now()).unwrap().unwrap();
    verifies(&root, &signed);
    assert_eq!(signed.cert.uri_sans(), [ID]);
    assert_eq!(signed.cert.not_after(), now() + Duration::hours(24), "the API server's default");
    assert!(spki.ends_with(signed.cert.public_key_raw()), "the pod's key is the certificate's");
    let mut two_hours = req;
    two_hours.max_expiration_seconds = Some(7200);
    let signed = cluster.sign_pod_key(&two_hours, &rules(), &mut rng(7), now()).unwrap().unwrap();
    assert_eq!(signed.cert.not_after(), now() + Duration::hours(2));
    let mut long = req;
    long.max_expiration_seconds = Some(91 * 86_400);
    let signed = cluster.sign_pod_key(&long, &rules(), &mut rng(8), now()).unwrap().unwrap();
    assert_eq!(signed.cert.not_after(), now() + Duration::hours(24), "maxTtlHours");
    assert!(signed.clamped_from.is_some());
    // Refused: a key meshca does not sign, an identity that is not one.
    let ed = public_key(&ED25519);
    let refused = cluster.sign_pod_key(&PodKeyRequest::new(&ed, "shop", "checkout"), &rules(), &mut rng(9), now());
    assert_eq!(refused.unwrap().unwrap_err().reason, RefusalReason::KeyNotAllowed);
    let refused = cluster.sign_pod_key(&PodKeyRequest::new(&spki, "shop/x", "a"), &rules(), &mut rng(9), now());
    assert_eq!(refused.unwrap().unwrap_err().reason, RefusalReason::IdentityNotAllowed);
    let refused = cluster.sign_pod_key(&PodKeyRequest::new(b"junk", "shop", "a"), &rules(), &mut rng(9), now());
    assert_eq!(refused.unwrap().unwrap_err().reason, RefusalReason::MalformedRequest);
    // An intermediate ending within the hour cannot give a pod its hour: the signer's error.
    let mut p = IntermediateParams::new("ending");
    p.ttl = Duration::minutes(50);
    let ending = SigningCa::new(root.issue_intermediate(&p, &mut rng(10), now()).unwrap().value);
    assert!(ending.sign_pod_key(&req, &rules(), &mut rng(11), now()).is_err());
}
