//! Drives the built example binaries as a new user would, and checks what they write with the
//! system OpenSSL.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where an example writes: a path that does not exist yet.
fn tempdir(tag: &str) -> PathBuf {
    meshca_testkit::temp_path(&format!("examples-{tag}"))
}

fn run(bin: &str, args: &[&Path]) -> (i32, String) {
    let o = Command::new(bin).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
    )
}

fn openssl_ok(args: &[&str]) -> Option<bool> {
    meshca_testkit::verify::openssl(args).map(|(ok, _)| ok)
}

#[test]
fn multicluster_then_check() {
    let out = tempdir("mc");
    let (code, text) = run(env!("CARGO_BIN_EXE_multicluster"), &[&out]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("cluster1's workload is trusted by cluster2's root-cert.pem"), "{text}");
    for cluster in ["cluster1", "cluster2"] {
        for f in [
            "ca-cert.pem",
            "ca-key.pem",
            "cert-chain.pem",
            "root-cert.pem",
            "leaf/cert-chain.pem",
            "leaf/key.pem",
            "leaf/root-cert.pem",
        ] {
            assert!(out.join(cluster).join(f).is_file(), "{cluster}/{f} missing");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in ["ca-key.pem", "leaf/key.pem"] {
                let mode = std::fs::metadata(out.join(cluster).join(key)).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{cluster}/{key}");
            }
        }
    }

    // OpenSSL agrees: cluster1's leaf verifies against cluster2's root-cert.pem, for both purposes.
    let p = |rel: &str| out.join(rel).to_string_lossy().into_owned();
    let leaf_chain = p("cluster1/leaf/cert-chain.pem");
    let root2 = p("cluster2/root-cert.pem");
    for purpose in ["sslclient", "sslserver"] {
        if let Some(ok) =
            openssl_ok(&["verify", "-purpose", purpose, "-CAfile", &root2, "-untrusted", &leaf_chain, &leaf_chain])
        {
            assert!(ok, "openssl verify -purpose {purpose} failed");
        } else {
            eprintln!("SKIPPED openssl checks: no openssl on PATH");
        }
    }

    let (code, text) = run(env!("CARGO_BIN_EXE_check"), &[&out.join("cluster1"), &out.join("cluster2")]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("OK ")).count(), 3, "{text}");

    // A second run refuses to overwrite the CA keys.
    let (code, text) = run(env!("CARGO_BIN_EXE_multicluster"), &[&out]);
    assert_eq!(code, 1);
    assert!(text.contains("never overwrites"), "{text}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn check_fails_on_a_bad_bundle_and_on_a_foreign_root() {
    let a = tempdir("a");
    let b = tempdir("b");
    assert_eq!(run(env!("CARGO_BIN_EXE_multicluster"), &[&a]).0, 0);
    assert_eq!(run(env!("CARGO_BIN_EXE_multicluster"), &[&b]).0, 0);
    // Two meshes with different roots: each bundle is fine, together they are not.
    let (code, text) = run(env!("CARGO_BIN_EXE_check"), &[&a.join("cluster1"), &b.join("cluster2")]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAIL") && text.contains("does not trust"), "{text}");

    // A bundle with a file missing: one FAIL line naming the file.
    std::fs::remove_file(a.join("cluster2/cert-chain.pem")).unwrap();
    let (code, text) = run(env!("CARGO_BIN_EXE_check"), &[&a.join("cluster1"), &a.join("cluster2")]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("cert-chain.pem is missing"), "{text}");

    // No arguments: usage, exit 2.
    assert_eq!(run(env!("CARGO_BIN_EXE_check"), &[]).0, 2);
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}
