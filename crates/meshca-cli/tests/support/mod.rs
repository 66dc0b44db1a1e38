//! What every test that drives the built `meshca` binary needs.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::path::Path;
use std::process::Command;

pub use meshca_testkit::verify::{openssl_available as has_openssl, OpensslVerify};
pub use meshca_testkit::{snapshot, tempdir, victim};

pub const BIN: &str = env!("CARGO_BIN_EXE_meshca");

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

pub fn meshca(args: &[&str]) -> Out {
    let o = Command::new(BIN).args(args).output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

pub fn ok(args: &[&str]) -> Out {
    let out = meshca(args);
    assert_eq!(out.code, 0, "meshca {args:?}\n{}", out.all());
    out
}

pub fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

pub fn testdata(rel: &str) -> String {
    s(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(rel))
}

/// Runs the independent RFC 6962 verifier (Python's hashlib, the openssl CLI) over `input`.
pub fn rfc6962(args: &[&str], input: &str) -> String {
    use std::io::Write;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/rfc6962.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the first ```sh block after `heading` in the README as written (each `(from, to)` of
/// `replace` substituted, e.g. a module path found elsewhere here), under `bash -euo pipefail`
/// in a new directory of its own, with this build's `meshca` first on PATH and `unset` removed
/// from the environment. Returns the directory, whether the block succeeded, and its output.
pub fn run_readme_block(
    heading: &str,
    tag: &str,
    replace: &[(&str, &str)],
    unset: &[&str],
) -> (std::path::PathBuf, bool, String) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split(heading).nth(1).unwrap_or_else(|| panic!("the README has no {heading}"));
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("\n```").next()).expect("a sh block");
    let script = replace.iter().fold(block.to_owned(), |s, (from, to)| {
        assert!(s.contains(from), "the README's block has no {from}");
        s.replace(from, to)
    });
    let dir = tempdir(tag);
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", s(bin_dir), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", &script]).current_dir(&dir).env("PATH", path);
    for v in unset {
        cmd.env_remove(v);
    }
    let out = cmd.output().expect("bash runs");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (dir, out.status.success(), all)
}
