#![allow(clippy::unwrap_used)]
//! Helpers shared by the integration tests: fixtures, a pinned clock, a seeded RNG, and an
//! independent rustls-webpki check of workload chains.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::path::{Path, PathBuf};

use meshca::Files;
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

pub use meshca_testkit::rng;
pub use meshca_testkit::verify::webpki as webpki_verify;
