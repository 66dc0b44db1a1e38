//! The CLI with OpenBao's PKI as the signer, against a real `bao server -dev` (skipped, loudly,
//! without `bao`; `.ci/run` makes that a failure): the flags, the words, the exit codes, and the
//! README's "Your PKI signs" block as written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use meshca_testkit::bao::{bao_path, Bao};
use support::{s, tempdir, BIN};

fn meshca_env(args: &[&str], env: &[(&str, &str)]) -> support::Out {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("VAULT_TOKEN").env_remove("BAO_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    support::Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn intermediate_is_signed_by_the_pki_with_the_token_from_a_file_or_the_environment() {
    let Some(bao) = Bao::start("intermediate_is_signed_by_the_pki_with_the_token_from_a_file_or_the_environment")
    else {
        return;
    };
    let root = bao.pki_root("pki", "CLI Root");
    let dir = tempdir("cli-vault");
    let out = s(&dir.join("east"));

    // No token: a usage error naming where a token comes from; nothing written.
    let o = meshca_env(&["intermediate", "--vault-addr", &bao.addr, "--cluster", "east", "--out", &out], &[]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stderr.contains("--vault-token-file") && o.stderr.contains("VAULT_TOKEN"), "{}", o.all());
    assert!(!dir.join("east").exists());
    // An address that would send the token in clear over a network: refused.
    let o = meshca_env(
        &["intermediate", "--vault-addr", "http://vault.example:8200", "--cluster", "east", "--out", &out],
        &[("VAULT_TOKEN", &bao.root_token)],
    );
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stderr.contains("https://"), "{}", o.all());
    // --ca and --vault-addr together: a usage error.
    let o = meshca_env(&["intermediate", "--ca", "x", "--vault-addr", &bao.addr, "--cluster", "e", "--out", &out], &[]);
    assert_eq!(o.code, 2, "{}", o.all());

    // A wrong token: typed, the token never printed, exit 1.
    let o = meshca_env(
        &["intermediate", "--vault-addr", &bao.addr, "--cluster", "east", "--out", &out],
        &[("BAO_TOKEN", "s.not-a-real-token-4711")],
    );
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.stderr.contains("permission denied"), "{}", o.all());
    assert!(!o.all().contains("not-a-real-token-4711"));

    // From a token file.
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{}\n", bao.root_token)).unwrap();
    let o = meshca_env(
        &[
            "intermediate",
            "--vault-addr",
            &bao.addr,
            "--vault-token-file",
            &s(&token_file),
            "--cluster",
            "east",
            "--out",
            &out,
            "--days",
            "30",
        ],
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(!o.all().contains(&bao.root_token));
    let bundle = meshca::Cacerts::from_files(
        &meshca_ops::fs::read_files(&dir.join("east")).unwrap(),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert_eq!(bundle.root().to_pem(), root.trim_end().to_owned() + "\n");
    assert_eq!(bundle.ca_cert().locality().as_deref(), Some("east"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.join("east/ca-key.pem")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    if support::has_openssl() {
        let v = support::OpensslVerify::new(&dir.join("east/ca-cert.pem")).roots(&dir.join("east/root-cert.pem"));
        v.run().unwrap();
    }
    // Longer than the PKI's own root: OpenBao signs it anyway (sign-intermediate does not cap
    // at the issuer by default); meshca refuses it.
    let west = s(&dir.join("west"));
    let token = [("VAULT_TOKEN", bao.root_token.as_str())];
    let o = meshca_env(
        &["intermediate", "--vault-addr", &bao.addr, "--cluster", "west", "--out", &west, "--days", "36000"],
        &token,
    );
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.stderr.contains("not inside its issuer's"), "{}", o.all());
    // The mount's max lease TTL cuts what was asked: refused, naming the fix.
    bao.bao(&["secrets", "tune", "-max-lease-ttl=240h", "pki"]);
    let o = meshca_env(
        &["intermediate", "--vault-addr", &bao.addr, "--cluster", "west", "--out", &west, "--days", "30"],
        &token,
    );
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.stderr.contains("lifetime was cut") && o.stderr.contains("max-lease-ttl"), "{}", o.all());
    assert!(!dir.join("west").exists());
}

/// The README's "Your PKI signs" block, run as written (on a free port instead of 8200), in a
/// directory of its own, with this build's `meshca` and the tests' `bao`.
#[test]
fn the_readme_pki_section_runs_as_written() {
    let Some(bao) = bao_path() else {
        // Bao::start says SKIPPED, or fails when OpenBao is required.
        assert!(Bao::start("the_readme_pki_section_runs_as_written").is_none());
        return;
    };
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("## Your PKI signs").nth(1).expect("the README has the section");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("\n```").next()).expect("a sh block");
    assert!(block.contains("127.0.0.1:8200"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let script = block.replace("127.0.0.1:8200", &format!("127.0.0.1:{port}"));
    let dir = tempdir("vault-readme");
    let path = format!(
        "{}:{}:{}",
        s(Path::new(BIN).parent().unwrap()),
        s(bao.parent().unwrap()),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &format!("trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}")])
        .current_dir(&dir)
        .env("PATH", path)
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_ADDR")
        .output()
        .expect("bash runs");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the README's PKI block failed:\n{all}");
    assert!(all.contains("cluster1/ca-cert.pem: OK"), "{all}");
    for c in ["cluster1", "cluster2", "cluster3"] {
        assert!(dir.join("store").join(c).join("istio-system/cacerts/ca-cert.pem").is_file(), "{c}");
    }
    assert!(
        !dir.join("store/mgmt/gloo-mesh/root-trust-policy.gloo-mesh/ca-key.pem").exists(),
        "no CA key above the clusters"
    );
}

/// `reconcile`, `status`, `rotate`, `revoke` and `unrevoke` over a policy whose PKI signs every
/// cluster: the words and exit codes only the binary shows.
#[test]
fn the_policy_commands_work_with_a_pki_signer_and_revoke_revokes_at_the_pki() {
    let Some(bao) = Bao::start("the_policy_commands_work_with_a_pki_signer_and_revoke_revokes_at_the_pki") else {
        return;
    };
    bao.pki_root("pki", "CLI Root");
    let dir = tempdir("cli-vault-policy");
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: meshca.dev/v1alpha1\nkind: RootTrustPolicy\nmetadata: {{name: p, namespace: gloo-mesh}}\nspec:\n  \
             config:\n    intermediateCertOptions: {{ttlDays: 30}}\n    mgmtServerCa:\n      vault: {{address: {}}}\n",
            bao.addr
        ),
    )
    .unwrap();
    let store = s(&dir.join("store"));
    let base = |cmd: &str| vec![cmd.to_owned(), "--policy".into(), s(&policy), "--store".into(), store.clone()];
    let with = |mut v: Vec<String>, more: &[&str]| {
        v.extend(more.iter().map(|m| (*m).to_owned()));
        v
    };
    let run = |args: Vec<String>, token: bool| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = if token { vec![("BAO_TOKEN", bao.root_token.as_str())] } else { vec![] };
        meshca_env(&args, &env)
    };
    let clusters = ["--cluster", "east", "--cluster", "west"];

    // No token anywhere: exit 1, saying where one comes from.
    let o = run(with(base("reconcile"), &clusters), false);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.stderr.contains("no credentials") && o.stderr.contains("VAULT_TOKEN"), "{}", o.all());

    let o = run(with(base("reconcile"), &clusters), true);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(!o.all().contains(&bao.root_token));
    let issued = bao.issued("pki");
    let o = run(with(base("status"), &clusters), true);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(bao.issued("pki"), issued, "status asked the PKI to sign");
    let o = run(with(base("rotate"), &["--cluster", "east"]), true);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(bao.issued("pki"), issued + 1);

    // revoke: made at the PKI, whose CRL every cluster then carries.
    let east = dir.join("store/east/istio-system/cacerts/ca-cert.pem");
    let serial =
        meshca::parse_certificates(&std::fs::read(&east).unwrap(), "ca-cert.pem").unwrap()[0].serial_bytes().to_vec();
    let o = run(with(base("revoke"), &["--cluster", "east", "--peer", "west"]), true);
    assert_eq!(o.code, 0, "{}", o.all());
    let pem = bao.bao(&["read", "-field=crl", "pki/issuer/default/crl"]);
    let crl = meshca::Crl::from_pem_all(pem.as_bytes(), "crl").unwrap().remove(0);
    assert!(crl.entries().iter().any(|e| meshca::canonical_serial(&e.serial) == meshca::canonical_serial(&serial)));
    let west_set = std::fs::read(dir.join("store/west/istio-system/cacerts/ca-crl.pem")).unwrap();
    assert!(meshca::Crl::from_pem_all(&west_set, "ca-crl.pem").unwrap().iter().any(|c| c.der() == crl.der()));
    // A PKI's revocation cannot be taken back: exit 1, saying so, nothing changed.
    let before = meshca_testkit::snapshot(&dir.join("store"));
    let o = run(with(base("unrevoke"), &["--cluster", "east"]), true);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.stderr.contains("cannot be taken back"), "{}", o.all());
    assert_eq!(meshca_testkit::snapshot(&dir.join("store")), before, "a refused unrevoke changed the store");
}

/// `--vault-ca-cert`: the server's TLS CA, the only one trusted.
#[test]
fn intermediate_over_tls_trusts_the_ca_given() {
    let Some(bao) = Bao::start_tls("intermediate_over_tls_trusts_the_ca_given") else { return };
    bao.pki_root("pki", "CLI Root");
    let dir = tempdir("cli-vault-tls");
    let token = [("VAULT_TOKEN", bao.root_token.as_str())];
    let out = s(&dir.join("east"));
    let o = meshca_env(
        &["intermediate", "--vault-addr", &bao.addr, "--cluster", "east", "--out", &out, "--days", "30"],
        &token,
    );
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.stderr.contains("unreachable"), "{}", o.all());
    assert!(!dir.join("east").exists());
    let ca = s(bao.ca_cert.as_ref().unwrap());
    let o = meshca_env(
        &[
            "intermediate",
            "--vault-addr",
            &bao.addr,
            "--vault-ca-cert",
            &ca,
            "--cluster",
            "east",
            "--out",
            &out,
            "--days",
            "30",
        ],
        &token,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(dir.join("east/ca-cert.pem").is_file());
}
