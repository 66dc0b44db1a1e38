//! The CLI with the signing CA's key in SoftHSM2, as the README's "Keep the CA key in an HSM"
//! section runs it: tokens made with `softhsm2-util`, each test with its own `SOFTHSM2_CONF`,
//! every certificate checked by `openssl verify`. Skipped, loudly, when SoftHSM2 is absent
//! (`MESHCA_REQUIRE_SOFTHSM=1` makes that a failure).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{s, snapshot, tempdir, OpensslVerify, Out, BIN};

use meshca_testkit::softhsm::PIN;

fn module() -> Option<PathBuf> {
    let found = meshca_testkit::softhsm::module_path();
    if found.is_none() {
        assert!(std::env::var_os("MESHCA_REQUIRE_SOFTHSM").is_none(), "SoftHSM2 is required but not installed");
        eprintln!("SKIPPED PKCS#11 CLI tests: SoftHSM2 is not installed (apt-get install softhsm2)");
    }
    found
}

/// A SoftHSM2 configuration of the test's own, with one token labelled `meshca`.
struct Hsm {
    dir: PathBuf,
    conf: PathBuf,
    module: PathBuf,
    pin_file: PathBuf,
}

impl Hsm {
    fn new(tag: &str) -> Option<Hsm> {
        let module = module()?;
        let dir = tempdir(&format!("p11-{tag}"));
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!("directories.tokendir = {}\nobjectstore.backend = file\n", s(&dir.join("tokens"))),
        )
        .unwrap();
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", "meshca", "--so-pin", "so-4711", "--pin", PIN])
            .output()
            .expect("softhsm2-util runs");
        assert!(out.status.success(), "softhsm2-util: {}", String::from_utf8_lossy(&out.stderr));
        let pin_file = dir.join("pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
        Some(Hsm { dir, conf, module, pin_file })
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .env_remove("MESHCA_PKCS11_PIN")
            .env_remove("MESHCA_PKCS11_MODULE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let out = self.run(args, env);
        assert_eq!(out.code, 0, "meshca {args:?}\n{}", out.all());
        assert!(!out.all().contains(PIN), "the PIN was printed: {}", out.all());
        out
    }
}

fn openssl_verify(root: &Path, untrusted: Option<&Path>, cert: &Path) {
    let v = OpensslVerify::new(cert).strict().roots(root);
    let v = untrusted.map_or(v.clone(), |u| v.untrusted(u));
    v.run().unwrap_or_else(|e| panic!("openssl verify {}: {e}", cert.display()));
}

#[test]
fn a_root_in_the_token_signs_intermediates_csrs_and_leaves() {
    let Some(hsm) = Hsm::new("root") else { return };
    let (d, m, pin) = (&hsm.dir, s(&hsm.module), s(&hsm.pin_file));
    let root = s(&d.join("root"));
    let uri = "pkcs11:token=meshca;object=root-ca";
    let out = hsm.ok(&["root-ca", "--out", &root, "--key-uri", uri, "--pkcs11-module", &m, "--pin-file", &pin], &[]);
    assert!(out.stdout.contains("key generated in the token: pkcs11:token=meshca;object=root-ca"), "{}", out.all());
    assert!(!d.join("root/ca-key.pem").exists(), "a token-held root writes no key file");
    assert_eq!(std::fs::read_to_string(d.join("root/ca-key.uri")).unwrap(), format!("{uri}\n"));
    for f in ["ca-cert.pem", "cert-chain.pem", "root-cert.pem"] {
        assert!(d.join("root").join(f).is_file(), "{f}");
    }
    openssl_verify(&d.join("root/root-cert.pem"), None, &d.join("root/ca-cert.pem"));
    let out = hsm.ok(&["inspect", &root], &[]);
    assert!(out.stdout.contains("its key in a PKCS#11 token: pkcs11:token=meshca;object=root-ca"), "{}", out.all());

    // The directory names its key; the module from the environment, the PIN from the environment.
    let env = [("MESHCA_PKCS11_MODULE", m.as_str()), ("MESHCA_PKCS11_PIN", PIN)];
    let c1 = s(&d.join("c1"));
    hsm.ok(&["intermediate", "--ca", &root, "--cluster", "c1", "--out", &c1], &env);
    openssl_verify(&d.join("root/root-cert.pem"), None, &d.join("c1/ca-cert.pem"));
    hsm.ok(&["verify", &c1], &[]);
    let leaf = s(&d.join("leaf"));
    hsm.ok(&["leaf", "--ca", &c1, "--spiffe", "spiffe://cluster.local/ns/default/sa/app", "--out", &leaf], &[]);
    openssl_verify(&d.join("root/root-cert.pem"), Some(&d.join("leaf/cert-chain.pem")), &d.join("leaf/cert-chain.pem"));

    // A management intermediate whose key is made in the token by `csr --key-uri`, signed by
    // the root (the external PKI here), then used with --ca-key-uri to sign a cluster.
    let mgmt = s(&d.join("mgmt"));
    let muri = "pkcs11:token=meshca;object=mgmt-ca";
    hsm.ok(&["csr", "--cluster", "mgmt", "--out", &mgmt, "--key-uri", muri], &env);
    assert!(!d.join("mgmt/ca-key.pem").exists());
    hsm.ok(
        &["sign-csr", "--ca", &root, "--csr", &s(&d.join("mgmt/ca-csr.pem")), "--out", &mgmt, "--pathlen", "1"],
        &env,
    );
    let c2 = s(&d.join("c2"));
    std::fs::remove_file(d.join("mgmt/ca-key.uri")).unwrap();
    hsm.ok(&["intermediate", "--ca", &mgmt, "--ca-key-uri", muri, "--cluster", "c2", "--out", &c2], &env);
    openssl_verify(&d.join("root/root-cert.pem"), Some(&d.join("c2/cert-chain.pem")), &d.join("c2/ca-cert.pem"));
}

#[test]
fn token_problems_are_clear_and_name_the_flag_to_fix_them() {
    let Some(hsm) = Hsm::new("errors") else { return };
    let (d, m, pin) = (&hsm.dir, s(&hsm.module), s(&hsm.pin_file));
    let root = s(&d.join("root"));
    let uri = "pkcs11:token=meshca;object=root-ca";
    // A root with a key file first; then --force with a token key replaces it, key file and all.
    hsm.ok(&["root-ca", "--out", &root], &[]);
    assert!(d.join("root/ca-key.pem").is_file());
    // A name the profile refuses fails before any key is made in the token...
    let long_cn = "x".repeat(65);
    let out = hsm.run(
        &[
            "root-ca",
            "--out",
            &root,
            "--force",
            "--cn",
            &long_cn,
            "--key-uri",
            uri,
            "--pkcs11-module",
            &m,
            "--pin-file",
            &pin,
        ],
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(d.join("root/ca-key.pem").is_file(), "the refused run left the earlier root as it was");
    // ...so the same label is still free.
    let out = hsm
        .ok(&["root-ca", "--out", &root, "--force", "--key-uri", uri, "--pkcs11-module", &m, "--pin-file", &pin], &[]);
    assert!(out.stdout.contains("the earlier root's key"), "{}", out.all());
    assert!(!d.join("root/ca-key.pem").exists(), "the earlier root's key file is gone");
    let c1 = s(&d.join("c1"));

    let out = hsm.run(&["intermediate", "--ca", &root, "--cluster", "c1", "--out", &c1, "--pin-file", &pin], &[]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("--pkcs11-module"), "{}", out.all());

    let out = hsm.run(&["intermediate", "--ca", &root, "--cluster", "c1", "--out", &c1, "--pkcs11-module", &m], &[]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("--pin-file FILE, or $MESHCA_PKCS11_PIN"), "{}", out.all());

    let wrong = "wrong-pin-9999";
    let out = hsm.run(
        &["intermediate", "--ca", &root, "--cluster", "c1", "--out", &c1, "--pkcs11-module", &m],
        &[("MESHCA_PKCS11_PIN", wrong)],
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("CKR_PIN_INCORRECT") && !out.all().contains(wrong), "{}", out.all());

    let out = hsm.run(
        &[
            "intermediate",
            "--ca",
            &root,
            "--ca-key-uri",
            "pkcs11:token=meshca;object=nope",
            "--cluster",
            "c1",
            "--out",
            &c1,
        ],
        &[("MESHCA_PKCS11_MODULE", m.as_str()), ("MESHCA_PKCS11_PIN", PIN)],
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("no private key"), "{}", out.all());

    let out = hsm.run(
        &["root-ca", "--out", &s(&d.join("r2")), "--key-uri", "pkcs11:object=x?pin-value=1234", "--pkcs11-module", &m],
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("does not take a PIN inside a URI") && !out.all().contains("1234"), "{}", out.all());

    // A ca-key.uri that is something else (a key file copied there by mistake): not shown.
    let bad = d.join("bad-ca");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["ca-cert.pem", "cert-chain.pem", "root-cert.pem"] {
        std::fs::copy(d.join("root").join(f), bad.join(f)).unwrap();
    }
    std::fs::write(bad.join("ca-key.uri"), "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n").unwrap();
    let out = hsm.run(&["intermediate", "--ca", &s(&bad), "--cluster", "c1", "--out", &c1, "--pkcs11-module", &m], &[]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("is not a PKCS#11 URI (contents not shown)") && !out.all().contains("MIGHAgEA"),
        "{}",
        out.all()
    );

    let not_module = d.join("not-a-module.so");
    std::fs::write(&not_module, "not a library").unwrap();
    let out = hsm.run(
        &[
            "intermediate",
            "--ca",
            &root,
            "--cluster",
            "c1",
            "--out",
            &c1,
            "--pkcs11-module",
            &s(&not_module),
            "--pin-file",
            &pin,
        ],
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("is not a loadable shared library"), "{}", out.all());
    assert!(!d.join("c1").exists(), "nothing was written by the failed runs");
}

const POLICY: &str = "\
apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata:
  name: root-trust-policy
  namespace: gloo-mesh
spec:
  config:
    intermediateCertOptions:
      secretRotationGracePeriodRatio: 0.1
      ttlDays: 1
    mgmtServerCa:
      secretRef:
        name: my-root-trust-policy.gloo-mesh
        namespace: gloo-mesh
      pkcs11:
        uri: pkcs11:token=meshca;object=root-ca
        pinSecretRef:
          name: meshca-hsm-pin
";

#[test]
fn reconcile_signs_the_quickstart_clusters_through_the_token_and_a_removed_token_touches_none() {
    let Some(hsm) = Hsm::new("fleet") else { return };
    let (d, m, pin) = (&hsm.dir, s(&hsm.module), s(&hsm.pin_file));
    // The quickstart's layout: the signer Secret holds the root's public files only, the PIN
    // sits in its own Secret.
    let store = d.join("store");
    let signer = store.join("mgmt/gloo-mesh/my-root-trust-policy.gloo-mesh");
    hsm.ok(
        &[
            "root-ca",
            "--out",
            &s(&signer),
            "--key-uri",
            "pkcs11:token=meshca;object=root-ca",
            "--pkcs11-module",
            &m,
            "--pin-file",
            &pin,
        ],
        &[],
    );
    std::fs::remove_file(signer.join("ca-key.uri")).unwrap();
    std::fs::create_dir_all(store.join("mgmt/gloo-mesh/meshca-hsm-pin")).unwrap();
    std::fs::write(store.join("mgmt/gloo-mesh/meshca-hsm-pin/pin"), format!("{PIN}\n")).unwrap();
    let policy = d.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let base: Vec<String> = ["reconcile", "--policy", &s(&policy), "--store", &s(&store)]
        .into_iter()
        .chain(["--cluster", "cluster1", "--cluster", "cluster2", "--cluster", "cluster3"])
        .map(String::from)
        .collect();
    let run = |extra: &[&str], ok: bool| {
        let argv: Vec<&str> = base.iter().map(String::as_str).chain(extra.iter().copied()).collect();
        if ok {
            hsm.ok(&argv, &[])
        } else {
            hsm.run(&argv, &[])
        }
    };

    let out = run(&[], false);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("--pkcs11-module"), "{}", out.all());

    let out = run(&["--pkcs11-module", &m], true);
    assert!(out.stdout.contains("cluster1") && out.stdout.contains("issued"), "{}", out.all());
    for c in ["cluster1", "cluster2", "cluster3"] {
        let b = store.join(c).join("istio-system/cacerts");
        openssl_verify(&signer.join("root-cert.pem"), None, &b.join("ca-cert.pem"));
        hsm.ok(&["verify", &s(&b)], &[]);
    }

    // The token goes away (removed, its directory gone): the next run, when every cluster is
    // due to rotate, refuses before writing anything.
    let before = snapshot(&store);
    std::fs::remove_dir_all(d.join("tokens")).unwrap();
    std::fs::create_dir_all(d.join("tokens")).unwrap();
    let later = (time::OffsetDateTime::now_utc() + time::Duration::hours(23))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let out = run(&["--pkcs11-module", &m, "--at", &later], false);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("no token matches"), "{}", out.all());
    assert_eq!(snapshot(&store), before, "a run that could not reach the token changed the store");
}

/// The README's "Keep the CA key in an HSM" block, run as written (only the module path is the
/// one found here, when it differs), in a directory of its own, with this build's `meshca`.
#[test]
fn the_readme_hsm_section_runs_as_written() {
    let Some(module) = module() else { return };
    let (dir, ok, all) = support::run_readme_block(
        "## Keep the CA key in an HSM",
        "p11-readme",
        &[("/usr/lib/softhsm/libsofthsm2.so", &s(&module))],
        &["MESHCA_PKCS11_PIN"],
    );
    assert!(ok, "the README's HSM block failed:\n{all}");
    assert!(all.contains("its key in a PKCS#11 token") && all.contains("cluster1/ca-cert.pem: OK"), "{all}");
    for c in ["cluster1", "cluster2", "cluster3"] {
        assert!(dir.join("store").join(c).join("istio-system/cacerts/ca-cert.pem").is_file(), "{c}");
    }
    assert!(!dir.join("hsm-root/ca-key.pem").exists());
}

fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The issuance log's key in the token (README "Every CA on the record"): the run that writes
/// needs the module and the PIN, the auditor only the module (or the verifier key kept), and
/// every proof and the checkpoint's Ed25519 signature are checked by the independent verifier
/// (hashlib and `openssl pkeyutl`).
#[test]
fn the_issuance_log_key_in_the_token_signs_checkpoints_openssl_verifies() {
    let Some(hsm) = Hsm::new("log") else { return };
    let (d, m, pin) = (&hsm.dir, s(&hsm.module), s(&hsm.pin_file));
    let pol = d.join("policy.yaml");
    std::fs::write(
        &pol,
        "apiVersion: admin.gloo.solo.io/v2\nkind: RootTrustPolicy\nmetadata:\n  name: mesh\n  namespace: gloo-mesh\n\
         spec:\n  config:\n    mgmtServerCa:\n      generated: {}\n    auditLog:\n      pkcs11:\n        \
         uri: pkcs11:token=meshca;object=audit-log\n",
    )
    .unwrap();
    let target = [s(&pol), s(&d.join("store"))];
    let with = |args: &[&str]| {
        let mut v = args.to_vec();
        v.extend(["--policy", &target[0], "--store", &target[1]]);
        v.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    let reconcile = with(&["reconcile", "--cluster", "east", "--cluster", "west"]);

    // No module: a usage error naming the flag, and nothing written.
    let out = hsm.run(&argv(&reconcile), &[]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("issuance log's key") && out.stderr.contains("--pkcs11-module"), "{}", out.stderr);
    assert!(!d.join("store/east").exists());
    // A dry run logs nothing, so it needs no token.
    let mut dry = reconcile.clone();
    dry.push("--dry-run".into());
    hsm.ok(&argv(&dry), &[]);
    assert!(!d.join("store/east").exists());
    let mut writing = reconcile.clone();
    writing.extend(["--pkcs11-module".into(), m.clone(), "--pin-file".into(), pin.clone()]);
    hsm.ok(&argv(&writing), &[]);

    // The auditor: the module, no PIN.
    let vkey = hsm.ok(&argv(&with(&["audit", "checkpoint", "--verifier-key", "--pkcs11-module", &m])), &[]).stdout;
    assert!(vkey.starts_with("meshca.dev/gloo-mesh/mesh+"), "{vkey}");
    let log = hsm.ok(&argv(&with(&["audit", "log"])), &[]).stdout;
    let serials: Vec<&str> = log.lines().filter_map(|l| l.split('\t').nth(5)).collect();
    assert_eq!(serials.len(), 3, "the root and two intermediates: {log}");
    for serial in serials {
        let proof = hsm.ok(&argv(&with(&["audit", "prove", "--serial", serial, "--pkcs11-module", &m])), &[]).stdout;
        assert_eq!(support::rfc6962(&["inclusion", vkey.trim()], &proof).trim(), "ok", "{proof}");
    }
    // Or the verifier key kept: neither module nor store key needed.
    let kept = hsm.ok(&argv(&with(&["audit", "verify", "--trusted-key", vkey.trim()])), &[]);
    assert!(kept.stdout.contains("every CA in the clusters is in the log"), "{}", kept.stdout);
    // A key that is not the log's verifies nothing.
    let (stranger, _) = meshca::tlog::LogKey::generate("meshca.dev/gloo-mesh/mesh", &mut meshca::OsRng).unwrap();
    let out = hsm.run(&argv(&with(&["audit", "verify", "--trusted-key", &stranger.verifier().to_string()])), &[]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("no signature by meshca.dev/gloo-mesh/mesh+"), "{}", out.stderr);
    let out = hsm.run(&argv(&with(&["audit", "verify", "--trusted-key", "not-a-key"])), &[]);
    assert!(out.code == 1 && out.stderr.contains("--trusted-key"), "{}", out.all());

    // A root rotation started from the command line logs the incoming root through the token.
    let next = s(&d.join("next-root"));
    hsm.ok(&["root-ca", "--out", &next], &[]);
    let mut start = with(&["rotate-root", "start", "--new-ca", &next, "--cluster", "east", "--cluster", "west"]);
    let out = hsm.run(&argv(&start), &[]);
    assert!(out.code == 2 && out.stderr.contains("--pkcs11-module"), "{}", out.all());
    start.extend(["--pkcs11-module".into(), m.clone(), "--pin-file".into(), pin.clone()]);
    hsm.ok(&argv(&start), &[]);
    let log = hsm.ok(&argv(&with(&["audit", "log"])), &[]).stdout;
    let rotation: Vec<&str> = log.lines().filter(|l| l.split('\t').nth(4) == Some("root-rotation")).collect();
    assert!(rotation.iter().any(|l| l.split('\t').nth(2) == Some("root")), "{log}");
    let kept = hsm.ok(&argv(&with(&["audit", "verify", "--trusted-key", vkey.trim()])), &[]);
    assert!(kept.stdout.contains("every CA in the clusters is in the log"), "{}", kept.stdout);
}

/// The README's "The log key in an HSM" block, run as written (the module path is the one
/// found here), in a directory of its own, with this build's `meshca`.
#[test]
fn the_readme_log_key_in_an_hsm_block_runs_as_written() {
    let Some(module) = module() else { return };
    let (dir, ok, all) = support::run_readme_block(
        "### The log key in an HSM",
        "p11-readme-log",
        &[("/usr/lib/softhsm/libsofthsm2.so", &s(&module))],
        &["MESHCA_PKCS11_PIN"],
    );
    assert!(ok, "the README's log key block failed:\n{all}");
    assert!(all.contains("every CA in the clusters is in the log"), "{all}");
    let vkey = std::fs::read_to_string(dir.join("log.vkey")).unwrap();
    assert!(vkey.starts_with("meshca.dev/gloo-mesh/mesh+"), "{vkey}");
    assert!(!dir.join("store/mgmt/gloo-mesh/mesh-audit-key").exists(), "no key Secret beside the token's key");
}
