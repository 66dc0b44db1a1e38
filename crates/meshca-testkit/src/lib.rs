//! What meshca's test suites share, written once: a pinned clock and seeded randomness, temporary
//! and victim directories with snapshots (to show a run wrote nothing outside its store), the
//! independent verifiers every issued certificate and CRL is checked by (rustls-webpki directly,
//! `openssl verify`), and SoftHSM2 tokens. Not published; a dev-dependency of the workspace's
//! crates, used by their integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bao;
pub mod csr;
#[cfg(feature = "hsm")]
pub mod fleet;
#[cfg(feature = "hsm")]
pub mod softhsm;
pub mod spiffe_client;
pub mod verify;

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

/// A fixed instant: 2030-01-01T00:00:00Z. Tests that need time to pass add to it.
pub fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_893_456_000).expect("a valid time")
}

/// A deterministic random source (ChaCha20 from `seed`): the same keys and serials every run.
pub fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    rand_core::SeedableRng::seed_from_u64(seed)
}

/// A fresh, empty directory for one test: `<tmp>/meshca-<tag>-<pid>`, emptied if it existed.
pub fn tempdir(tag: &str) -> PathBuf {
    let d = temp_path(tag);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A path in the temporary directory for one test that does not exist yet (for a command
/// that creates it): `<tmp>/meshca-<tag>-<pid>`, removed if it existed.
pub fn temp_path(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("meshca-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Every regular file and link under `dir` (recursively, links not followed), with its bytes
/// or its target, sorted: two snapshots are equal when nothing under `dir` changed. A missing
/// directory gives an empty snapshot.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries {
        let p = entry.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.extend(snapshot(&p));
        } else if m.is_symlink() {
            out.push((p.clone(), std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes()));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
        }
    }
    out.sort();
    out
}

/// A directory outside any store with a file in it, and its snapshot: a planted link points
/// here, and the test shows afterwards that nothing here changed.
pub fn victim(parent: &Path) -> (PathBuf, Vec<(PathBuf, Vec<u8>)>) {
    let outside = parent.join("outside");
    std::fs::create_dir_all(outside.join("precious")).unwrap();
    std::fs::write(outside.join("precious/data"), b"keep me").unwrap();
    let snap = snapshot(&outside);
    (outside, snap)
}
