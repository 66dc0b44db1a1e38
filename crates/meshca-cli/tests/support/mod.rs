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
