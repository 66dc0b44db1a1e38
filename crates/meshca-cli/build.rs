//! `meshca --version`: the crate version, and the git commit when built from meshca's own
//! repository (`cargo install --path crates/meshca-cli`, a checkout's `cargo build`). Built from
//! a published package there is no repository, and the version stands alone.

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let dir = Path::new(&manifest);
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rerun-if-changed=build.rs");
    // Only meshca's own repository: a package unpacked inside some other repository must not
    // report that repository's commit.
    let ours = git(dir, &["rev-parse", "--show-toplevel"])
        .filter(|top| Path::new(top).join("crates/meshca-cli/Cargo.toml").is_file());
    let full = match ours.as_ref().and_then(|_| git(dir, &["rev-parse", "--short=12", "HEAD"])) {
        Some(commit) => {
            if let Some(git_dir) = git(dir, &["rev-parse", "--absolute-git-dir"]) {
                println!("cargo:rerun-if-changed={git_dir}/HEAD");
                if let Some(head_ref) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
                    println!("cargo:rerun-if-changed={git_dir}/{head_ref}");
                }
                println!("cargo:rerun-if-changed={git_dir}/packed-refs");
            }
            format!("{version} (commit {commit})")
        }
        None => version,
    };
    println!("cargo:rustc-env=MESHCA_VERSION={full}");
}
