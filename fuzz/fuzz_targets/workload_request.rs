//! A workload's request as the Kubernetes signer reads it (a CSR's spec.request, a pod's
//! pkixPublicKey): never a panic, and whatever is signed is a workload certificate for one
//! SPIFFE ID of the trust domain, never a CA.
#![no_main]
#[path = "../common/root.rs"]
mod root;

use rand_core::SeedableRng;
use root::signer;

fn check(signed: &meshca::WorkloadCert, td: &str) {
    let uris = signed.cert.uri_sans();
    assert_eq!(uris.len(), 1, "one URI SAN");
    assert!(uris[0].starts_with(&format!("spiffe://{td}/ns/")), "{}", uris[0]);
    assert!(!signed.cert.is_ca(), "never a CA");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (ca, now) = signer();
    let mut rules = meshca::WorkloadRules::new("cluster.local");
    rules.allow_dns_sans = data.first().is_some_and(|b| b & 1 == 1);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
    let mut req = meshca::WorkloadRequest::new(data);
    req.expiration_seconds = data.get(1..9).map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    if let Ok(Ok(signed)) = ca.sign_workload_request(&req, &rules, &mut rng, *now) {
        check(&signed, "cluster.local");
    }
    let pod = meshca::PodKeyRequest::new(data, "shop", "checkout");
    if let Ok(Ok(signed)) = ca.sign_pod_key(&pod, &rules, &mut rng, *now) {
        check(&signed, "cluster.local");
    }
});
