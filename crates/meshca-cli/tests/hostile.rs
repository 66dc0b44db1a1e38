//! The built `meshca` binary against hostile and careless input: planted links in the store,
//! concurrent runs, special files, odd PEM, huge files and numbers, names beyond the
//! standards' limits, key files in the wrong place, and the exit codes and messages of each.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshca_ops::policy::SEED_POLICY;

mod support;
use support::*;

/// A store with a root and the seed policy; returns (dir, policy path, store path).
fn store_with_signer(tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    let d = tempdir(tag);
    let store = d.join("store");
    let policy = d.join("policy.yaml");
    std::fs::write(&policy, SEED_POLICY).unwrap();
    ok(&["root-ca", "--out", &s(&store.join("mgmt/gloo-mesh/my-root-trust-policy.gloo-mesh"))]);
    (d, policy, store)
}

fn reconcile(policy: &Path, store: &Path, clusters: &[&str], extra: &[&str]) -> Out {
    let mut args = vec!["reconcile", "--policy"];
    let (p, st) = (s(policy), s(store));
    args.extend([p.as_str(), "--store", st.as_str()]);
    let cluster_args: Vec<String> = clusters.iter().map(|c| format!("--cluster={c}")).collect();
    args.extend(cluster_args.iter().map(String::as_str));
    args.extend(extra);
    meshca(&args)
}

#[test]
#[cfg(unix)]
fn planted_links_refuse_one_cluster_and_the_others_are_reconciled() {
    let (d, policy, store) = store_with_signer("planted");
    ok(&["reconcile", "--policy", &s(&policy), "--store", &s(&store), "--cluster", "c1", "--cluster", "c2"]);
    let (outside, before) = victim(&d);
    // c1: ..data points outside (a write used to remove_dir_all its target).
    let c1 = store.join("c1/istio-system/cacerts");
    std::fs::remove_file(c1.join("..data")).unwrap();
    std::os::unix::fs::symlink(outside.join("precious"), c1.join("..data")).unwrap();
    // c2: the cluster directory itself is a link (a new CA key used to land at its target).
    std::fs::remove_dir_all(store.join("c2")).unwrap();
    std::os::unix::fs::symlink(&outside, store.join("c2")).unwrap();
    // c3: a fresh cluster, untouched by any of this.
    let out = reconcile(&policy, &store, &["c1", "c2", "c3"], &["--at", "2030-01-01T00:00:00Z"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("..data: points to"), "{}", out.stdout);
    assert!(out.stdout.contains("c2: is a symlink where the store keeps a directory"), "{}", out.stdout);
    assert!(out.stdout.contains("1 of 3 clusters reconciled"), "{}", out.stdout);
    assert!(store.join("c3/istio-system/cacerts/ca-key.pem").exists());
    assert_eq!(snapshot(&outside), before, "nothing outside the store was written or removed");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
#[cfg(unix)]
fn every_cluster_failing_says_so() {
    let (d, policy, store) = store_with_signer("allfail");
    let (outside, _) = victim(&d);
    for c in ["c1", "c2", "c3"] {
        std::os::unix::fs::symlink(&outside, store.join(c)).unwrap();
    }
    let out = reconcile(&policy, &store, &["c1", "c2", "c3"], &[]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("0 of 3 clusters reconciled"), "{}", out.stdout);
    assert!(!out.stdout.contains("share root"), "{}", out.stdout);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_second_run_waits_for_the_lock_and_times_out_naming_the_holder() {
    let (d, policy, store) = store_with_signer("lock");
    let held = meshca_ops::store::DirStore::new(&store).lock(Duration::from_secs(1), "test holder", |_| {}).unwrap();
    let started = Instant::now();
    let out = reconcile(&policy, &store, &["c1"], &["--lock-timeout", "1"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(out.stderr.contains("waiting up to 1 s") && out.stderr.contains("(test holder)"), "{}", out.stderr);
    assert!(
        out.stderr.contains("did not release it within 1 s") && out.stderr.contains("--lock-timeout"),
        "{}",
        out.stderr
    );
    assert!(!store.join("c1").exists(), "nothing was written without the lock");
    // A dry run takes no lock.
    assert_eq!(reconcile(&policy, &store, &["c1"], &["--dry-run", "--lock-timeout", "0"]).code, 0);
    // Released: a waiting run proceeds.
    let waiting = Command::new(BIN)
        .args(["reconcile", "--policy", &s(&policy), "--store", &s(&store), "--cluster", "c1", "--lock-timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(held);
    let o = waiting.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn concurrent_runs_do_not_interleave() {
    let (d, policy, store) = store_with_signer("concurrent");
    let clusters: Vec<String> = (1..=6).map(|i| format!("c{i}")).collect();
    let mut args = vec!["reconcile".to_owned(), "--policy".into(), s(&policy), "--store".into(), s(&store)];
    for c in &clusters {
        args.extend(["--cluster".into(), c.clone()]);
    }
    let runs: Vec<_> = (0..2)
        .map(|_| Command::new(BIN).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    let outs: Vec<String> = runs
        .into_iter()
        .map(|r| {
            let o = r.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).into_owned()
        })
        .collect();
    // One run issued every cluster; the other found them all and kept them.
    let issued: usize = outs.iter().map(|o| o.lines().filter(|l| l.contains("  issued  ")).count()).sum();
    let kept: usize = outs.iter().map(|o| o.lines().filter(|l| l.contains("  kept  ")).count()).sum();
    assert_eq!((issued, kept), (6, 6), "{outs:?}");
    // Debris of a crashed run (meshca's naming only) is removed by the next run that writes.
    let c1 = store.join("c1/istio-system/cacerts");
    std::fs::create_dir(c1.join("..1700000000000000000_1_1")).unwrap();
    std::fs::create_dir(c1.join("..not-meshcas")).unwrap();
    let out = reconcile(&policy, &store, &["c1"], &[]);
    assert!(out.stderr.contains("removed 1 leftover entries"), "{}", out.stderr);
    assert!(!c1.join("..1700000000000000000_1_1").exists() && c1.join("..not-meshcas").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
#[cfg(unix)]
fn special_files_are_named_and_never_block() {
    let (d, _, _) = store_with_signer("special");
    let b = d.join("bundle");
    ok(&["root-ca", "--out", &s(&d.join("root"))]);
    ok(&["intermediate", "--ca", &s(&d.join("root")), "--cluster", "c1", "--out", &s(&b)]);
    std::fs::remove_file(b.join("ca-cert.pem")).unwrap();
    std::fs::create_dir(b.join("ca-cert.pem")).unwrap();
    for cmd in ["verify", "inspect"] {
        let out = meshca(&[cmd, &s(&b)]);
        assert_eq!(out.code, 1, "{cmd}: {}", out.all());
        assert!(
            out.all().contains("ca-cert.pem: cannot read: not a regular file (it is a directory)"),
            "{}",
            out.all()
        );
        assert!(!out.all().contains("missing"), "{}", out.all());
    }
    std::fs::remove_dir(b.join("ca-cert.pem")).unwrap();
    assert!(Command::new("mkfifo").arg(b.join("ca-cert.pem")).status().unwrap().success());
    let started = Instant::now();
    let out = meshca(&["verify", &s(&b)]);
    assert!(started.elapsed() < Duration::from_secs(20), "reading a FIFO must not block");
    assert!(out.all().contains("not a regular file (it is a FIFO)"), "{}", out.all());
    let fifo = d.join("policy-fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let out = meshca(&["inspect", &s(&fifo)]);
    assert_eq!(out.code, 1);
    assert!(out.all().contains("(it is a FIFO)"), "{}", out.all());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn pem_as_go_and_openssl_read_it() {
    let d = tempdir("pemforms");
    for form in ["76col-crlf", "one-line", "trailing-space", "with-text"] {
        let chain = testdata(&format!("openssl/pem-forms/cert-chain-{form}.pem"));
        let out = ok(&["inspect", &chain]);
        assert!(out.stdout.contains("2 certificates"), "{form}: {}", out.stdout);
        let key = testdata(&format!("openssl/pem-forms/ca-key-{form}.pem"));
        ok(&["inspect", &key]);
        let csr = testdata(&format!("openssl/pem-forms/p256-{form}.csr"));
        let out_dir = d.join(form);
        ok(&["sign-csr", "--ca", &testdata("openssl/root-signer"), "--csr", &csr, "--out", &s(&out_dir)]);
        // A whole bundle in this form verifies as the original does.
        let b = d.join(format!("bundle-{form}"));
        std::fs::create_dir_all(&b).unwrap();
        for f in ["ca-cert.pem", "root-cert.pem"] {
            std::fs::copy(testdata(&format!("openssl/good/{f}")), b.join(f)).unwrap();
        }
        std::fs::copy(&chain, b.join("cert-chain.pem")).unwrap();
        std::fs::copy(&key, b.join("ca-key.pem")).unwrap();
        ok(&["verify", &s(&b), "--no-probe"]);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn huge_files_and_certificate_counts_are_refused_quickly() {
    let d = tempdir("huge");
    let big = d.join("big.pem");
    std::fs::File::create(&big).unwrap().set_len(50 * 1024 * 1024).unwrap();
    let started = Instant::now();
    let out = meshca(&["inspect", &s(&big)]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("larger than 16 MiB"), "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(20));
    let root = std::fs::read_to_string(testdata("istio-samples/root-cert.pem")).unwrap();
    let many = d.join("many.pem");
    std::fs::write(&many, root.repeat(10_001)).unwrap();
    let out = meshca(&["inspect", &s(&many)]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("more than 10000 PEM blocks"), "{}", out.stderr);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn numbers_out_of_range_are_usage_errors_not_panics() {
    let d = tempdir("numbers");
    ok(&["root-ca", "--out", &s(&d.join("root"))]);
    ok(&["intermediate", "--ca", &s(&d.join("root")), "--cluster", "c1", "--out", &s(&d.join("c1"))]);
    let c1 = s(&d.join("c1"));
    let leaf_out = s(&d.join("leaf"));
    let leaf = |hours: &str| {
        let hours = format!("--hours={hours}");
        meshca(&["leaf", "--ca", &c1, "--spiffe", "spiffe://cluster.local/ns/a/sa/b", "--out", &leaf_out, &hours])
    };
    for hours in ["2562047788015216", "9223372036854775807", "0", "-5", "2161"] {
        let out = leaf(hours);
        assert_eq!(out.code, 2, "--hours {hours}: {}", out.all());
        assert!(out.stderr.contains("1..=2160"), "{}", out.stderr);
    }
    assert_eq!(leaf("2160").code, 0);
    for days in ["36501", "9223372036854775807", "0"] {
        let out = meshca(&["root-ca", "--out", &s(&d.join("r2")), "--days", days]);
        assert_eq!(out.code, 2, "--days {days}: {}", out.all());
        assert!(out.stderr.contains("36500"), "{}", out.stderr);
    }
    let (sd, policy, store) = store_with_signer("numbers-rot");
    let out = meshca(&[
        "rotate-root",
        "start",
        "--policy",
        &s(&policy),
        "--store",
        &s(&store),
        "--new-ca",
        &s(&d.join("root")),
        "--dwell-hours",
        "9223372036854775807",
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("0..=8760"), "{}", out.stderr);
    // The same bounds in the policy, as errors naming the field.
    for (from, to, needle) in [
        ("ttlDays: 1", "ttlDays: 9223372036854775807", "ttlDays must be between 1 and 36500"),
        ("secretRotationGracePeriodRatio: 0.1", "secretRotationGracePeriodRatio: 0.0000001", "at least a minute"),
    ] {
        let p = sd.join("bad.yaml");
        assert!(SEED_POLICY.contains(from), "{from}");
        std::fs::write(&p, SEED_POLICY.replacen(from, to, 1)).unwrap();
        let out = reconcile(&p, &store, &["c1"], &[]);
        assert_eq!(out.code, 1, "{to}: {}", out.all());
        assert!(out.stderr.contains(needle), "{to}: {}", out.stderr);
    }
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::remove_dir_all(&sd).unwrap();
}

#[test]
fn names_beyond_the_standards_limits_are_refused_with_exit_1() {
    let (d, policy, store) = store_with_signer("names");
    let root = s(&store.join("mgmt/gloo-mesh/my-root-trust-policy.gloo-mesh"));
    let long = "c".repeat(64);
    for bad in [long.as_str(), "Cluster1", "c_1", "c.1", "-c", "c-"] {
        let out = reconcile(&policy, &store, &[bad], &[]);
        assert_eq!(out.code, 1, "{bad}: {}", out.all());
        assert!(out.stderr.contains("DNS label"), "{bad}: {}", out.stderr);
        let out = meshca(&["intermediate", "--ca", &root, &format!("--cluster={bad}"), "--out", &s(&d.join("x"))]);
        assert_eq!(out.code, 1, "{bad}: {}", out.all());
    }
    assert_eq!(reconcile(&policy, &store, &[&"c".repeat(63)], &["--dry-run"]).code, 0);
    // A clusters file: the file and line are named, the line's text is not.
    let f = d.join("clusters.txt");
    std::fs::write(&f, "# fleet\nc1\n\nNot_A_Name\n").unwrap();
    let out = meshca(&["reconcile", "--policy", &s(&policy), "--store", &s(&store), "--clusters-file", &s(&f)]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains(&format!("{}:4: not a cluster name", f.display())), "{}", out.stderr);
    assert!(!out.stderr.contains("Not_A_Name"), "{}", out.stderr);
    std::fs::write(&f, "c1\nc2\nc1\n").unwrap();
    let out = meshca(&["reconcile", "--policy", &s(&policy), "--store", &s(&store), "--clusters-file", &s(&f)]);
    assert!(out.stderr.contains(":3: cluster `c1` is listed twice"), "{}", out.stderr);
    // NAME=CONTEXT is for --kube only: a usage error on the directory store.
    let out = reconcile(&policy, &store, &["c1=ctx1"], &[]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("needs --kube"), "{}", out.stderr);
    // Subject attributes within RFC 5280's upper bounds.
    for (flag, value) in [("--org", "o".repeat(65)), ("--cn", "n".repeat(65)), ("--org", "bad\u{7}org".into())] {
        let out = meshca(&["root-ca", "--out", &s(&d.join("r")), flag, &value]);
        assert_eq!(out.code, 1, "{flag}: {}", out.all());
        assert!(out.stderr.contains("64 characters") || out.stderr.contains("printable"), "{}", out.stderr);
    }
    ok(&["root-ca", "--out", &s(&d.join("r")), "--org", &"o".repeat(64)]);
    // SPIFFE IDs as the SPIFFE ID spec bounds them.
    ok(&["intermediate", "--ca", &root, "--cluster", "c9", "--out", &s(&d.join("c9"))]);
    for id in [format!("spiffe://cluster.local/ns/a/sa/{}", "b".repeat(2048)), "spiffe://a..b/ns/a/sa/b".into()] {
        let out = meshca(&["leaf", "--ca", &s(&d.join("c9")), "--spiffe", &id, "--out", &s(&d.join("l"))]);
        assert_eq!(out.code, 1, "{}", out.all());
        assert!(out.stderr.len() < 1000, "the message does not echo a huge ID");
    }
    // CSRs: SHA-1 named as such, two localities refused.
    let out =
        meshca(&["sign-csr", "--ca", &root, "--csr", &testdata("openssl/csr/sha1.csr"), "--out", &s(&d.join("s"))]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("signed with ecdsa-with-SHA1, which meshca refuses"), "{}", out.stderr);
    assert!(out.stderr.contains("re-create it with SHA-256"), "{}", out.stderr);
    let two = testdata("openssl/csr/two-localities.csr");
    let out = meshca(&["sign-csr", "--ca", &root, "--csr", &two, "--out", &s(&d.join("s"))]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("names 2 localities"), "{}", out.stderr);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_key_file_given_as_any_input_never_reaches_the_output() {
    let (d, _, store) = store_with_signer("leak");
    let key_file = testdata("openssl/keys/rsa2048-pkcs1.pem");
    let key = std::fs::read_to_string(&key_file).unwrap();
    let secrets: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(secrets.len() > 10);
    let leaked = |out: &Out| secrets.iter().any(|l| out.all().contains(&l[8..40]));
    let root = s(&store.join("mgmt/gloo-mesh/my-root-trust-policy.gloo-mesh"));
    // A bundle directory whose certificate files are key files.
    let b = d.join("bundle");
    std::fs::create_dir_all(&b).unwrap();
    for f in ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"] {
        std::fs::copy(&key_file, b.join(f)).unwrap();
    }
    let runs: Vec<Vec<String>> = vec![
        vec![
            "reconcile".into(),
            "--policy".into(),
            key_file.clone(),
            "--store".into(),
            s(&store),
            "--cluster".into(),
            "c1".into(),
        ],
        vec![
            "reconcile".into(),
            "--policy".into(),
            testdata("policies/seed.yaml"),
            "--store".into(),
            s(&store),
            "--clusters-file".into(),
            key_file.clone(),
        ],
        vec![
            "sign-csr".into(),
            "--ca".into(),
            root.clone(),
            "--csr".into(),
            key_file.clone(),
            "--out".into(),
            s(&d.join("o")),
        ],
        vec!["verify".into(), s(&b)],
        vec!["inspect".into(), s(&b)],
        vec!["inspect".into(), s(&b), "--json".into()],
        vec!["verify".into(), "--proxy-secret".into(), key_file.clone()],
        vec![
            "intermediate".into(),
            "--ca".into(),
            s(&b),
            "--cluster".into(),
            "c1".into(),
            "--out".into(),
            s(&d.join("i")),
        ],
    ];
    for args in runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = meshca(&args);
        assert_ne!(out.code, 0, "{args:?}: {}", out.all());
        assert!(!leaked(&out), "{args:?} printed key material:\n{}", out.all());
    }

    // A key URI that continues with the key: in a `ca-key.uri` file, a policy's `pkcs11.uri`,
    // and a flag, as text and %-encoded. Refused, and not one piece of it is printed, whatever
    // the command (status --json included).
    let encoded: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
    let leaked_encoded = |out: &Out| {
        secrets.iter().any(|l| {
            let piece: String = l[8..20].bytes().map(|b| format!("%{b:02X}")).collect();
            out.all().contains(&piece)
        })
    };
    for uri in [format!("pkcs11:{key}"), format!("pkcs11:object={encoded}"), format!("pkcs11:token=t;object={key}")] {
        let tok = d.join("token-ca");
        let _ = std::fs::remove_dir_all(&tok);
        std::fs::create_dir_all(&tok).unwrap();
        for f in ["ca-cert.pem", "cert-chain.pem", "root-cert.pem"] {
            std::fs::copy(store.join("mgmt/gloo-mesh/my-root-trust-policy.gloo-mesh").join(f), tok.join(f)).unwrap();
        }
        std::fs::write(tok.join("ca-key.uri"), &uri).unwrap();
        let policy = d.join("uri-policy.yaml");
        let indented = uri.replace('\n', "\n          ");
        std::fs::write(
            &policy,
            SEED_POLICY.replace(
                "    mgmtServerCa:\n",
                &format!("    mgmtServerCa:\n      pkcs11:\n        uri: |-\n          {indented}\n"),
            ),
        )
        .unwrap();
        let (p, st, t) = (s(&policy), s(&store), s(&tok));
        let spiffe = "spiffe://cluster.local/ns/a/sa/b";
        let runs: Vec<Vec<&str>> = vec![
            vec![
                "leaf",
                "--ca",
                &t,
                "--spiffe",
                spiffe,
                "--out",
                "/nonexistent-meshca-out",
                "--pkcs11-module",
                "/x.so",
            ],
            vec!["inspect", &t],
            vec!["inspect", &t, "--json"],
            vec!["status", "--policy", &p, "--store", &st],
            vec!["status", "--policy", &p, "--store", &st, "--json"],
            vec!["reconcile", "--policy", &p, "--store", &st, "--cluster", "c1", "--pkcs11-module", "/x.so"],
            vec!["root-ca", "--out", "/nonexistent-meshca-out", "--key-uri", &uri, "--pkcs11-module", "/x.so"],
        ];
        for args in runs {
            let out = meshca(&args);
            assert!(!leaked(&out) && !leaked_encoded(&out), "{args:?} printed key material:\n{}", out.all());
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn future_at_is_refused_on_kubernetes_and_flagged_on_the_directory_store() {
    let (d, policy, store) = store_with_signer("future");
    let out = meshca(&[
        "reconcile",
        "--policy",
        &s(&policy),
        "--kube",
        "--cluster",
        "c1=ctx",
        "--at",
        "2099-01-01T00:00:00Z",
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("in the future") && out.stderr.contains("--dry-run"), "{}", out.stderr);
    let out = reconcile(&policy, &store, &["c1"], &["--at", "2030-01-01T00:00:00Z"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("meshca verify --at 2030-01-01T00:00:00Z"), "{}", out.stderr);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn the_quickstart_hints_work_as_printed() {
    let d = tempdir("qs-hints");
    let out = ok(&["quickstart", "--dir", &s(&d.join("qs"))]);
    assert!(out.stdout.contains("\"Manage Istio intermediate CAs\"") && !out.stdout.contains("shared/reference"));
    let hints: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("  meshca ")).collect();
    let reconcile_at = hints.iter().find(|l| l.contains("reconcile") && l.contains("--at")).unwrap();
    let verify_at = hints.iter().find(|l| l.contains("verify --at")).unwrap();
    for hint in [reconcile_at, verify_at] {
        let args: Vec<&str> = hint.split_whitespace().skip(1).collect();
        let o = Command::new(BIN).args(&args).current_dir(std::env::current_dir().unwrap()).output().unwrap();
        assert!(
            o.status.success(),
            "{hint}\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// The clusters `meshca quickstart` makes.
const QS_CLUSTERS: [&str; 3] = ["cluster1", "cluster2", "cluster3"];

/// A fresh quickstart (a root, the seed's policy, three clusters) in `tempdir(tag)/qs`:
/// (the temporary directory, the quickstart's, its policy and its store).
fn quickstart(tag: &str) -> (PathBuf, PathBuf, String, String) {
    let d = tempdir(tag);
    let qs = d.join("qs");
    ok(&["quickstart", "--dir", &s(&qs)]);
    let (policy, store) = (s(&qs.join("policy.yaml")), s(&qs.join("store")));
    (d, qs, policy, store)
}

/// Runs meshca with its stdout a pipe whose reader is already gone (`meshca ... | head -c 0`).
fn with_closed_stdout(args: &[&str]) -> Out {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
#[cfg(unix)]
fn a_closed_stdout_is_a_quiet_exit_and_the_work_is_done() {
    let d = tempdir("epipe");
    let qs = d.join("qs");
    // quickstart with nobody reading: the whole directory is still made, and nothing panics.
    let out = with_closed_stdout(&["quickstart", "--dir", &s(&qs)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let (policy, store) = (s(&qs.join("policy.yaml")), s(&qs.join("store")));
    let dirs: Vec<String> = ["cluster1", "cluster2", "cluster3"]
        .iter()
        .map(|c| s(&qs.join(format!("store/{c}/istio-system/cacerts"))))
        .collect();
    let mut verify = vec!["verify"];
    verify.extend(dirs.iter().map(String::as_str));
    ok(&verify);
    let bundle = dirs[0].clone();
    for args in [
        vec!["status", "--policy", &policy, "--store", &store],
        vec!["status", "--policy", &policy, "--store", &store, "--json"],
        verify.clone(),
        vec!["inspect", &bundle],
        vec!["crl", "show", "--policy", &policy, "--store", &store],
        vec!["rotate-root", "status", "--policy", &policy, "--store", &store],
        vec!["completions", "bash"],
        vec!["man"],
        vec!["crd"],
        vec!["secret", &bundle],
    ] {
        let out = with_closed_stdout(&args);
        assert!(!out.stderr.contains("panicked") && out.code != 101, "{args:?}: {} {}", out.code, out.stderr);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn one_exit_code_rule_for_cluster_names_and_typos_create_no_ca() {
    let (d, qs, policy, store) = quickstart("cluster-name-rule");
    let before = snapshot(&qs.join("store"));
    let base = ["--policy", policy.as_str(), "--store", store.as_str()];
    let with = |cmd: &[&str], extra: &[&str]| -> Vec<String> {
        cmd.iter().chain(base.iter()).chain(extra.iter()).map(|x| (*x).to_owned()).collect()
    };
    // A name that is not a cluster name, the management cluster as a workload cluster, a name
    // twice: refused input, exit 1, in every command that takes cluster names.
    for bad in
        [&["--cluster", "Bad_Name"][..], &["--cluster", "mgmt"], &["--cluster", "cluster1", "--cluster", "cluster1"]]
    {
        for cmd in [&["reconcile"][..], &["status"], &["rotate"], &["rotate-root", "status"]] {
            let args = with(cmd, bad);
            let out = meshca(&args.iter().map(String::as_str).collect::<Vec<_>>());
            assert_eq!(out.code, 1, "{args:?}: {}", out.all());
        }
        let peer: Vec<&str> = bad.iter().map(|x| if *x == "--cluster" { "--peer" } else { x }).collect();
        let args = with(&["revoke"], &[&["--cluster", "cluster1"][..], &peer].concat());
        let out = meshca(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(out.code, 1, "{args:?}: {}", out.all());
    }
    // A typo of a cluster that exists: refused with the nearest name, and no CA is made.
    let out = meshca(&with(&["rotate"], &["--cluster", "clustr2"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("did you mean `cluster2`"), "{}", out.stderr);
    let out = meshca(
        &with(&["revoke"], &["--cluster", "cluster1", "--peer", "typo"]).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("typo has no cacerts"), "{}", out.stderr);
    assert_eq!(snapshot(&qs.join("store")), before, "nothing was written");
    assert!(!qs.join("store/clustr2").exists() && !qs.join("store/typo").exists());
    // A stray directory that is not a cluster name is not a cluster: status still works.
    std::fs::create_dir_all(qs.join("store/Old_Backup/istio-system/cacerts")).unwrap();
    std::fs::write(qs.join("store/Old_Backup/istio-system/cacerts/ca-cert.pem"), b"x").unwrap();
    ok(&["status", "--policy", &policy, "--store", &store]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_crl_written_for_a_future_at_is_noted_like_a_certificate() {
    let (d, _, policy, store) = quickstart("future-crl");
    ok(&["revoke", "--policy", &policy, "--store", &store, "--cluster", "cluster2"]);
    // 20 hours on: whatever the intermediates need, the root CRL and the intermediates' CRLs
    // are signed for then, and the run says so.
    let at = (time::OffsetDateTime::now_utc() + time::Duration::hours(20))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let out = reconcile(Path::new(&policy), Path::new(&store), &QS_CLUSTERS, &["--at", &at]);
    assert!(out.stderr.contains("certificates or CRLs not valid before then"), "{}", out.all());
    std::fs::remove_dir_all(&d).unwrap();
}

/// Copies a bundle directory as a consumer sees it (links followed) into a plain directory.
fn copy_bundle(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            std::fs::write(to.join(&name), std::fs::read(e.path()).unwrap()).unwrap();
        }
    }
}

#[test]
#[cfg(unix)]
fn one_bundle_check_with_its_crls_in_every_command_that_judges_a_bundle() {
    let (d, qs, policy, store) = quickstart("one-check");
    let bundle = |c: &str| qs.join(format!("store/{c}/istio-system/cacerts"));
    let stolen = d.join("stolen");
    copy_bundle(&bundle("cluster2"), &stolen);
    ok(&["revoke", "--policy", &policy, "--store", &store, "--cluster", "cluster2"]);
    // The stolen bundle with the fleet's set, which revokes its CA; and a bundle whose
    // ca-crl.pem is garbage.
    std::fs::write(stolen.join("ca-crl.pem"), std::fs::read(bundle("cluster1").join("ca-crl.pem")).unwrap()).unwrap();
    let garbage = d.join("garbage");
    copy_bundle(&bundle("cluster1"), &garbage);
    std::fs::write(garbage.join("ca-crl.pem"), b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n").unwrap();
    for dir in [&stolen, &garbage] {
        let out = meshca(&["inspect", &s(dir)]);
        assert_eq!(out.code, 1, "inspect {}: {}", dir.display(), out.all());
        assert!(out.stdout.contains("NOT a valid bundle"), "{}", out.stdout);
        assert_eq!(meshca(&["verify", &s(dir)]).code, 1, "verify {}", dir.display());
        assert_eq!(meshca(&["secret", &s(dir)]).code, 1, "secret {}", dir.display());
        let out = meshca(&[
            "leaf",
            "--ca",
            &s(dir),
            "--spiffe",
            "spiffe://cluster.local/ns/a/sa/b",
            "--out",
            &s(&d.join("leaf")),
        ]);
        assert_eq!(out.code, 1, "leaf --ca {}: {}", dir.display(), out.all());
        assert!(!d.join("leaf").exists(), "nothing was signed");
    }
    // A good bundle: inspect counts its CRLs, and the manifest carries ca-crl.pem.
    let out = ok(&["inspect", &s(&bundle("cluster1"))]);
    assert!(out.stdout.contains("ca-crl.pem: "), "{}", out.stdout);
    assert!(ok(&["secret", &s(&bundle("cluster1"))]).stdout.contains("  ca-crl.pem: "));

    // verify applies each cluster's set to the others' chains as Envoy does: an intermediate
    // the fleet's sets do not cover is refused by the clusters that hold one.
    let signer = s(&qs.join("store/mgmt/gloo-mesh/my-root-trust-policy.gloo-mesh"));
    let uncovered = d.join("uncovered");
    ok(&["intermediate", "--ca", &signer, "--cluster", "cluster9", "--out", &s(&uncovered)]);
    let out = meshca(&["verify", &s(&bundle("cluster1")), &s(&uncovered)]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("has no CRL issued by"), "{}", out.stderr);

    // A top-level name missing from a Secret directory: what istiod opens is gone, so verify
    // fails; reconcile repairs it.
    std::fs::remove_file(bundle("cluster3").join("root-cert.pem")).unwrap();
    assert_eq!(meshca(&["verify", &s(&bundle("cluster3"))]).code, 1);
    let out = reconcile(Path::new(&policy), Path::new(&store), &QS_CLUSTERS, &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    ok(&["verify", &s(&bundle("cluster1")), &s(&bundle("cluster2")), &s(&bundle("cluster3"))]);
    assert!(std::fs::symlink_metadata(bundle("cluster3").join("root-cert.pem")).unwrap().is_symlink());
    std::fs::remove_dir_all(&d).unwrap();
}

/// A cacerts directory's data directories that `..data` does not point to: a batch staged and
/// not yet swapped in, or an old one not yet removed.
#[cfg(target_os = "linux")]
fn unswapped(secret: &Path) -> usize {
    let current = std::fs::read_link(secret.join("..data")).ok();
    let Ok(entries) = std::fs::read_dir(secret) else { return 0 };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("..") && name != "..data" && current.as_deref() != Some(Path::new(&*name))
        })
        .count()
}

/// kill -9 while a batch of Secrets is staged (data directories written and synced together,
/// `..data` links not all swapped): every Secret is still wholly the bundle it had, or wholly
/// a new one whose key signs workloads that rustls-webpki accepts under its root, or absent if
/// it never had one; the next run removes the debris and finishes the job.
#[test]
#[cfg(target_os = "linux")]
fn a_run_killed_inside_a_batch_leaves_every_secret_whole_and_the_next_run_finishes() {
    use meshca_ops::store::{DirStore, SecretRef, Store};
    use time::format_description::well_known::Rfc3339;
    let (d, policy, store) = store_with_signer("killed-batch");
    let names: Vec<String> = (1..=300).map(|i| format!("c{i}")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    // Half the fleet has bundles, so the killed run both rotates and issues.
    let start = time::OffsetDateTime::now_utc() + time::Duration::minutes(1);
    let at = |days: i64| (start + time::Duration::days(days)).format(&Rfc3339).unwrap();
    let first = reconcile(&policy, &store, &all[..150], &["--at", &at(0)]);
    assert_eq!(first.code, 0, "{}", first.all());
    let dir = DirStore::new(&store);
    let mut killed_mid_batch = 0;
    for attempt in 1..=5_i64 {
        // Every bundle is due for rotation (a day's lifetime) at each attempt's time.
        let when = at(2 * attempt);
        let before: Vec<_> = all.iter().map(|c| dir.read(&SecretRef::cacerts(c)).unwrap()).collect();
        let links = |c: &str| std::fs::read_link(store.join(c).join("istio-system/cacerts/..data")).ok();
        let links_before: Vec<_> = all.iter().map(|c| links(c)).collect();
        // The first attempt kills at the first batch staged; the others once some Secrets
        // were swapped too, so old and new bundles meet in one store.
        let swapped = || attempt == 1 || all.iter().zip(&links_before).any(|(c, l)| links(c) != *l);
        let mut args = vec!["reconcile", "--policy"];
        let (p, st) = (s(&policy), s(&store));
        args.extend([p.as_str(), "--store", st.as_str(), "--at", when.as_str()]);
        let flags: Vec<String> = all.iter().map(|c| format!("--cluster={c}")).collect();
        args.extend(flags.iter().map(String::as_str));
        let mut child = Command::new(BIN).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let staged = loop {
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            if all.iter().any(|c| unswapped(&store.join(c).join("istio-system/cacerts")) > 0) && swapped() {
                child.kill().unwrap();
                break true;
            }
            assert!(Instant::now() < deadline, "the run neither staged a batch nor ended");
        };
        let status = child.wait().unwrap();
        let killed = staged && status.code().is_none();
        let now = time::OffsetDateTime::parse(&when, &Rfc3339).unwrap();
        let (mut old, mut new) = (0, 0);
        for (c, had) in all.iter().zip(&before) {
            let Some(files) = dir.read(&SecretRef::cacerts(c)).unwrap() else {
                assert!(had.is_none(), "attempt {attempt}: {c} lost its bundle");
                continue;
            };
            if had.as_ref() == Some(&files) {
                old += 1;
                continue;
            }
            new += 1;
            let bundle = meshca::Cacerts::from_files(&files, now).unwrap_or_else(|e| panic!("{c}: a torn bundle: {e}"));
            let chain = meshca_testkit::fleet::workload(&bundle, "probe", now);
            meshca_testkit::verify::webpki(&chain, bundle.roots(), now)
                .unwrap_or_else(|e| panic!("attempt {attempt}: {c}: rustls-webpki refused its workload: {e}"));
        }
        println!("attempt {attempt}: killed inside a batch: {killed}; {old} bundles old, {new} new");
        if killed && old > 0 && new > 0 {
            killed_mid_batch += 1;
        }
        // The next run takes the lock, removes what the killed one left, and finishes.
        let out = reconcile(&policy, &store, &all, &["--at", &when]);
        assert_eq!(out.code, 0, "{}", out.all());
        assert!(out.stdout.contains("300 clusters"), "{}", out.stdout);
        for c in &all {
            let secret = store.join(c).join("istio-system/cacerts");
            assert_eq!(unswapped(&secret), 0, "attempt {attempt}: {c}: debris left behind");
            let files = dir.read(&SecretRef::cacerts(c)).unwrap().unwrap();
            meshca::Cacerts::from_files(&files, now).unwrap_or_else(|e| panic!("{c}: {e}"));
        }
        if killed_mid_batch > 0 {
            break;
        }
    }
    assert!(killed_mid_batch > 0, "no attempt killed the run with old and new bundles side by side");
    std::fs::remove_dir_all(&d).unwrap();
}
