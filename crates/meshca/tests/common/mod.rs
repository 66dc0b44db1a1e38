#![allow(clippy::unwrap_used)]
//! Helpers shared by the integration tests: fixtures, a pinned clock, a seeded RNG, and an
//! independent rustls-webpki check of workload chains.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use meshca::{Certificate, Files};
use rand_core::SeedableRng;
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;

pub fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(rel)
}

/// Every regular file of a directory, as a bundle's file map.
pub fn load_dir(rel: &str) -> Files {
    let dir = testdata(rel);
    let mut files = Files::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            files.insert(entry.file_name().to_string_lossy().into_owned(), std::fs::read(entry.path()).unwrap());
        }
    }
    files
}

pub fn read(rel: &str) -> Vec<u8> {
    std::fs::read(testdata(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The Istio sample bundle `variant` ("" or "-alt"), as Istio's docs tell users to copy it.
pub fn istio_sample(variant: &str) -> Files {
    let f = |name: &str| read(&format!("istio-samples/{name}{variant}.pem"));
    [
        ("ca-cert.pem", f("ca-cert")),
        ("ca-key.pem", f("ca-key")),
        ("cert-chain.pem", f("cert-chain")),
        ("root-cert.pem", f("root-cert")),
    ]
    .into_iter()
    .collect()
}

/// One day after the OpenSSL fixtures were generated: inside every fixture's validity.
pub fn fixture_now() -> OffsetDateTime {
    let secs: i64 = String::from_utf8(read("openssl/GENERATED_AT")).unwrap().trim().parse().unwrap();
    OffsetDateTime::from_unix_timestamp(secs).unwrap() + time::Duration::days(1)
}

pub fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}

/// Verifies `chain` (leaf first) against `roots` with rustls-webpki for both TLS client and
/// server use: the independent verifier every issued chain must satisfy.
pub fn webpki_verify(chain: &[Certificate], roots: &[Certificate], now: OffsetDateTime) -> Result<(), String> {
    let root_ders: Vec<CertificateDer<'_>> = roots.iter().map(|r| CertificateDer::from(r.der())).collect();
    let anchors: Vec<_> = root_ders.iter().map(|d| webpki::anchor_from_trusted_cert(d).unwrap()).collect();
    let inter: Vec<CertificateDer<'_>> = chain[1..].iter().map(|c| CertificateDer::from(c.der())).collect();
    let leaf = CertificateDer::from(chain[0].der());
    let ee = webpki::EndEntityCert::try_from(&leaf).map_err(|e| format!("{e:?}"))?;
    let t = UnixTime::since_unix_epoch(core::time::Duration::from_secs(now.unix_timestamp() as u64));
    for usage in [webpki::KeyUsage::client_auth(), webpki::KeyUsage::server_auth()] {
        ee.verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &anchors, &inter, t, usage, None, None)
            .map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}
