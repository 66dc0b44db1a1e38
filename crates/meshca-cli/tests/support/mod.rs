//! What every test that drives the built `meshca` binary needs.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

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

pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("meshca-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

pub fn testdata(rel: &str) -> String {
    s(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(rel))
}

pub fn has_openssl() -> bool {
    let found = Command::new("openssl").arg("version").output().map(|o| o.status.success()).unwrap_or(false);
    if !found {
        eprintln!("SKIPPED openssl checks: no openssl on PATH");
    }
    found
}
