//! Drives the built `meshca` binary: every command, every documented exit code, bad inputs,
//! rotation over time with `--at`, and the system OpenSSL on what it writes.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;

mod support;
use support::*;

/// Table rows (lines starting with a cluster name) whose action is `action`.
fn rows(out: &Out, action: &str) -> usize {
    out.stdout.lines().filter(|l| l.starts_with('c') && l.contains(&format!("  {action}  "))).count()
}

/// `openssl verify` of `cert` (its first certificate) with `chain` as untrusted intermediates.
fn openssl_verify(root: &Path, chain: &Path, cert: &Path, purpose: Option<&str>) -> bool {
    let v = OpensslVerify::new(cert).roots(root).untrusted(chain);
    purpose.map_or(v.clone(), |p| v.purpose(p)).run().is_ok()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn root_intermediate_leaf_and_openssl_agrees() {
    let d = tempdir("ril");
    let root = d.join("root");
    let c1 = d.join("c1");
    let w = d.join("w");
    ok(&["root-ca", "--out", &s(&root), "--cn", "Acme Root", "--org", "Acme"]);
    let out = ok(&["intermediate", "--ca", &s(&root), "--cluster", "cluster1", "--out", &s(&c1)]);
    assert!(out.stdout.contains("L=cluster1,CN=Intermediate CA,O=Istio"), "{}", out.stdout);
    ok(&["leaf", "--ca", &s(&c1), "--spiffe", "spiffe://cluster.local/ns/default/sa/sleep", "--out", &s(&w)]);
    #[cfg(unix)]
    {
        assert_eq!(mode(&root.join("ca-key.pem")), 0o600);
        assert_eq!(mode(&c1.join("ca-key.pem")), 0o600);
        assert_eq!(mode(&w.join("key.pem")), 0o600);
        assert_eq!(mode(&c1.join("ca-cert.pem")), 0o644);
    }
    if has_openssl() {
        assert!(openssl_verify(&root.join("root-cert.pem"), &c1.join("cert-chain.pem"), &c1.join("ca-cert.pem"), None));
        for purpose in ["sslclient", "sslserver"] {
            assert!(openssl_verify(
                &w.join("root-cert.pem"),
                &w.join("cert-chain.pem"),
                &w.join("cert-chain.pem"),
                Some(purpose)
            ));
        }
    }
    // Refuses to overwrite a bundle without --force, then replaces it with --force.
    let before = std::fs::read(c1.join("ca-key.pem")).unwrap();
    let again = meshca(&["intermediate", "--ca", &s(&root), "--cluster", "cluster1", "--out", &s(&c1)]);
    assert_eq!(again.code, 1, "{}", again.all());
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_eq!(std::fs::read(c1.join("ca-key.pem")).unwrap(), before, "nothing was touched");
    ok(&["intermediate", "--ca", &s(&root), "--cluster", "cluster1", "--out", &s(&c1), "--force"]);
    assert_ne!(std::fs::read(c1.join("ca-key.pem")).unwrap(), before);
    // The tls layout.
    let t = d.join("t");
    ok(&[
        "intermediate",
        "--ca",
        &s(&root),
        "--cluster",
        "c2",
        "--out",
        &s(&t),
        "--layout",
        "tls",
        "--key",
        "ecdsa-p384",
    ]);
    assert!(t.join("tls.crt").is_file() && t.join("tls.key").is_file() && t.join("ca.crt").is_file());
    ok(&["verify", &s(&c1), &s(&t)]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn signers_from_elsewhere_rsa_three_levels_and_pathlen() {
    let d = tempdir("signers");
    // A PKCS#1 RSA root made by OpenSSL, an RSA-2048 cluster CA under it.
    let rsa = d.join("rsa");
    ok(&[
        "intermediate",
        "--ca",
        &testdata("openssl/rsa-root-signer"),
        "--cluster",
        "r",
        "--out",
        &s(&rsa),
        "--key",
        "rsa-2048",
    ]);
    // Option 3: a management CA whose root lives elsewhere.
    let three = d.join("three");
    let out = ok(&["intermediate", "--ca", &testdata("openssl/mgmt-signer"), "--cluster", "c3", "--out", &s(&three)]);
    assert!(out.stdout.contains("chain 3"), "{}", out.stdout);
    if has_openssl() {
        assert!(openssl_verify(
            &rsa.join("root-cert.pem"),
            &rsa.join("cert-chain.pem"),
            &rsa.join("ca-cert.pem"),
            None
        ));
        assert!(openssl_verify(
            &three.join("root-cert.pem"),
            &three.join("cert-chain.pem"),
            &three.join("ca-cert.pem"),
            None
        ));
    }
    // Istio's sample CA (PKCS#1 key, chain without the root, a root whose subject has an
    // EMAIL attribute) signs a cluster CA whose issuer name verifiers link byte for byte.
    let sample = d.join("sample");
    let out = ok(&["intermediate", "--ca", &testdata("istio-samples"), "--cluster", "x", "--out", &s(&sample)]);
    assert!(out.stdout.contains("EMAIL=testrootca@istio.io"), "{}", out.stdout);
    ok(&["leaf", "--ca", &s(&sample), "--spiffe", "spiffe://cluster.local/ns/a/sa/b", "--out", &s(&d.join("w"))]);
    if has_openssl() {
        assert!(openssl_verify(
            &sample.join("root-cert.pem"),
            &sample.join("cert-chain.pem"),
            &sample.join("ca-cert.pem"),
            None
        ));
    }
    // A pathlen:0 management CA may sign workloads, not CAs.
    let e = meshca(&[
        "intermediate",
        "--ca",
        &testdata("openssl/mgmt0-signer"),
        "--cluster",
        "x",
        "--out",
        &s(&d.join("y0")),
    ]);
    assert_eq!(e.code, 1, "{}", e.all());
    assert!(e.stderr.contains("cannot issue an intermediate CA"), "{}", e.stderr);
    // A non-CA signer is refused, naming the file and the fix.
    let e = meshca(&["intermediate", "--ca", &testdata("openssl/not-ca"), "--cluster", "x", "--out", &s(&d.join("y"))]);
    assert_eq!(e.code, 1);
    assert!(
        e.stderr.contains("signing CA") && e.stderr.contains("ca-cert.pem") && e.stderr.contains("not a CA"),
        "{}",
        e.stderr
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn csr_flow_never_moves_the_cluster_key() {
    let d = tempdir("csr");
    let root = d.join("root");
    let c = d.join("edge");
    ok(&["root-ca", "--out", &s(&root)]);
    ok(&["csr", "--cluster", "edge-1", "--out", &s(&c)]);
    let key_before = std::fs::read(c.join("ca-key.pem")).unwrap();
    let out = ok(&["sign-csr", "--ca", &s(&root), "--csr", &s(&c.join("ca-csr.pem")), "--out", &s(&c)]);
    assert!(out.stdout.contains("now a complete cacerts bundle"), "{}", out.stdout);
    assert!(out.stdout.contains("L=edge-1"), "{}", out.stdout);
    assert_eq!(std::fs::read(c.join("ca-key.pem")).unwrap(), key_before);
    ok(&["verify", &s(&c)]);
    // An OpenSSL CSR that names no cluster needs --cluster.
    let e = meshca(&[
        "sign-csr",
        "--ca",
        &s(&root),
        "--csr",
        &testdata("openssl/csr/rsa2048.csr"),
        "--out",
        &s(&d.join("o")),
    ]);
    assert_eq!(e.code, 2, "{}", e.all());
    assert!(e.stderr.contains("pass --cluster"), "{}", e.stderr);
    ok(&[
        "sign-csr",
        "--ca",
        &s(&root),
        "--csr",
        &testdata("openssl/csr/rsa2048.csr"),
        "--out",
        &s(&d.join("o")),
        "--cluster",
        "o",
    ]);
    // A tampered CSR is refused.
    let e = meshca(&[
        "sign-csr",
        "--ca",
        &s(&root),
        "--csr",
        &testdata("openssl/csr/tampered.csr"),
        "--out",
        &s(&d.join("t")),
    ]);
    assert_eq!(e.code, 1);
    assert!(e.stderr.contains("signature does not verify"), "{}", e.stderr);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn verify_exit_codes_and_messages() {
    let d = tempdir("verify");
    let (r1, r2) = (d.join("r1"), d.join("r2"));
    ok(&["root-ca", "--out", &s(&r1)]);
    ok(&["root-ca", "--out", &s(&r2)]);
    let [a, b, c] = ["a", "b", "c"].map(|n| d.join(n));
    ok(&["intermediate", "--ca", &s(&r1), "--cluster", "a", "--out", &s(&a)]);
    ok(&["intermediate", "--ca", &s(&r1), "--cluster", "b", "--out", &s(&b)]);
    ok(&["intermediate", "--ca", &s(&r2), "--cluster", "c", "--out", &s(&c)]);
    let good = ok(&["verify", &s(&a), &s(&b)]);
    assert!(good.stdout.contains("all 2 bundles share root"), "{}", good.stdout);
    assert!(good.stdout.contains("trusted by every other"), "{}", good.stdout);

    let bad = meshca(&["verify", &s(&a), &s(&b), &s(&c)]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains(&format!("{} does not trust", s(&c))), "names the odd one: {}", bad.stderr);

    // A refused bundle: one line on stderr naming the bundle, the file, the problem and the fix.
    std::fs::remove_file(b.join("root-cert.pem")).unwrap();
    let bad = meshca(&["verify", &s(&a), &s(&b)]);
    assert_eq!(bad.code, 1);
    let line = bad.stderr.lines().find(|l| l.contains("FAIL")).unwrap();
    assert!(
        line.contains(&s(&b)) && line.contains("root-cert.pem is missing") && line.contains("provide all of"),
        "{line}"
    );

    // --at: after cluster a expires it fails; --json is parseable and says so.
    let json = meshca(&["verify", &s(&a), "--at", "2099-01-01T00:00:00Z", "--json"]);
    assert_eq!(json.code, 1);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["bundles"][0]["error"].as_str().unwrap().contains("expired"), "{v}");

    assert_eq!(meshca(&["verify"]).code, 2);
    assert_eq!(meshca(&["verify", &s(&a), "--at", "yesterday"]).code, 2);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A sidecar secret dump as `istioctl proxy-config secret <pod> -o json` prints it.
fn envoy_dump(leaf_dir: &Path) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let chain = b64.encode(std::fs::read(leaf_dir.join("cert-chain.pem")).unwrap());
    let root = b64.encode(std::fs::read(leaf_dir.join("root-cert.pem")).unwrap());
    serde_json::json!({
      "dynamicActiveSecrets": [
        {"name": "default", "versionInfo": "2026-11-28 00:00:00", "lastUpdated": "2026-11-28T00:00:00Z",
         "secret": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "name": "default",
           "tlsCertificate": {"certificateChain": {"inlineBytes": chain}, "privateKey": {"inlineBytes": "W3JlZGFjdGVkXQ=="}}}},
        {"name": "ROOTCA", "versionInfo": "2026-11-28 00:00:00", "lastUpdated": "2026-11-28T00:00:00Z",
         "secret": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "name": "ROOTCA",
           "validationContext": {"trustedCa": {"inlineBytes": root}}}}
      ]
    })
}

/// The same dump in YAML, laid out as the seed's `-o yaml` excerpt.
fn envoy_dump_yaml(leaf_dir: &Path) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let chain = b64.encode(std::fs::read(leaf_dir.join("cert-chain.pem")).unwrap());
    let root = b64.encode(std::fs::read(leaf_dir.join("root-cert.pem")).unwrap());
    format!(
        "dynamicActiveSecrets:\n- lastUpdated: \"2022-11-08T09:53:16.743Z\"\n  name: default\n  secret:\n    '@type': \
         type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n    name: default\n    tlsCertificate:\n      \
         certificateChain:\n        inlineBytes: {chain}\n      privateKey:\n        inlineBytes: W3JlZGFjdGVkXQ==\n- \
         lastUpdated: \"2022-11-08T09:53:16.743Z\"\n  name: ROOTCA\n  secret:\n    '@type': \
         type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n    name: ROOTCA\n    validationContext:\n      \
         trustedCa:\n        inlineBytes: {root}\n"
    )
}

#[test]
fn proxy_secret_dumps_are_compared() {
    let d = tempdir("proxy");
    let (r1, r2) = (d.join("r1"), d.join("r2"));
    ok(&["root-ca", "--out", &s(&r1)]);
    ok(&["root-ca", "--out", &s(&r2)]);
    for (name, root) in [("c1", &r1), ("c2", &r1), ("c3", &r2)] {
        ok(&["intermediate", "--ca", &s(root), "--cluster", name, "--out", &s(&d.join(name))]);
        let sa = format!("spiffe://cluster.local/ns/bookinfo/sa/{name}-app");
        ok(&["leaf", "--ca", &s(&d.join(name)), "--spiffe", &sa, "--out", &s(&d.join(format!("{name}-w")))]);
    }
    let a = d.join("productpage.json");
    std::fs::write(&a, serde_json::to_string_pretty(&envoy_dump(&d.join("c1-w"))).unwrap()).unwrap();
    let b = d.join("reviews.yaml");
    std::fs::write(&b, envoy_dump_yaml(&d.join("c2-w"))).unwrap();
    let c = d.join("stranger.json");
    std::fs::write(&c, envoy_dump(&d.join("c3-w")).to_string()).unwrap();

    let out = ok(&["verify", "--proxy-secret", &s(&a), "--proxy-secret", &s(&b)]);
    assert!(out.stdout.contains("spiffe://cluster.local/ns/bookinfo/sa/c1-app"), "{}", out.stdout);
    assert!(out.stdout.contains("all 2 proxies trust the same root"), "{}", out.stdout);
    let bad = meshca(&["verify", "--proxy-secret", &s(&a), "--proxy-secret", &s(&c)]);
    assert_eq!(bad.code, 1, "{}", bad.all());
    assert!(bad.stderr.contains("is not trusted by"), "{}", bad.stderr);

    let shown = ok(&["inspect", &s(&b)]);
    assert!(
        shown.stdout.contains("ROOTCA") && shown.stdout.contains("URI:spiffe://cluster.local/ns/bookinfo/sa/c2-app"),
        "{}",
        shown.stdout
    );
    assert!(shown.stdout.contains("verifies against ROOTCA"), "{}", shown.stdout);
    let e = meshca(&["inspect", &s(&d.join("c1/ca-cert.pem"))]);
    assert_eq!(e.code, 0);
    std::fs::write(d.join("junk.json"), "{\"nothing\": 1}").unwrap();
    let e = meshca(&["verify", "--proxy-secret", &s(&d.join("junk.json"))]);
    assert_eq!(e.code, 1);
    assert!(e.stderr.contains("no trustedCa or certificateChain"), "{}", e.stderr);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn inspect_shows_and_never_leaks_keys() {
    let d = tempdir("inspect");
    let root = d.join("root");
    ok(&["root-ca", "--out", &s(&root), "--key", "ecdsa-p384"]);
    let out = ok(&["inspect", &s(&root)]);
    assert!(out.stdout.contains("valid istio bundle") && out.stdout.contains("ECDSA P-384"), "{}", out.stdout);
    let key_pem = std::fs::read_to_string(root.join("ca-key.pem")).unwrap();
    let body = key_pem.lines().nth(1).unwrap();
    let out = ok(&["inspect", &s(&root.join("ca-key.pem"))]);
    assert!(out.stdout.contains("private key, ECDSA P-384"), "{}", out.stdout);
    assert!(!out.all().contains(&body[..16]));
    let json = ok(&["inspect", &s(&root), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["chain"][0]["role"], "root");
    assert!(!json.stdout.contains(&body[..16]));
    // An invalid bundle is still shown, with why it is invalid, and the check fails (exit 1).
    let out = meshca(&["inspect", &testdata("openssl/wrong-order")]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("NOT a valid bundle") && out.stdout.contains("first certificate"), "{}", out.stdout);
    let out = ok(&["inspect", &testdata("openssl/csr/p256.csr")]);
    assert!(out.stdout.contains("L=csr-cluster"), "{}", out.stdout);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn secret_manifest_round_trips() {
    let d = tempdir("secret");
    let root = d.join("root");
    let c = d.join("c");
    ok(&["root-ca", "--out", &s(&root)]);
    ok(&["intermediate", "--ca", &s(&root), "--cluster", "c1", "--out", &s(&c)]);
    let b64 = base64::engine::general_purpose::STANDARD;
    for (layout, keys) in [
        ("istio", vec!["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]),
        ("tls", vec!["ca.crt", "tls.crt", "tls.key"]),
    ] {
        let out = ok(&["secret", &s(&c), "--layout", layout, "--namespace", "istio-system"]);
        let v: serde_json::Value = serde_saphyr::from_str(&out.stdout).unwrap();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Secret");
        assert_eq!(v["metadata"]["name"], "cacerts");
        assert_eq!(v["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshca");
        let data = v["data"].as_object().unwrap();
        assert_eq!(data.keys().map(String::as_str).collect::<Vec<_>>(), keys);
        if layout == "istio" {
            let cert = b64.decode(data["ca-cert.pem"].as_str().unwrap()).unwrap();
            assert_eq!(cert, std::fs::read(c.join("ca-cert.pem")).unwrap());
        }
    }
    // An invalid bundle is not turned into a manifest.
    let e = meshca(&["secret", &testdata("openssl/key-mismatch")]);
    assert_eq!(e.code, 1);
    assert!(e.stdout.is_empty() && e.stderr.contains("does not match"), "{}", e.all());
    std::fs::remove_dir_all(&d).unwrap();
}

use meshca_ops::policy::SEED_POLICY;

/// A store with the seed's management Secret and policy. Returns (store, policy path).
fn seed_store(tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    let d = tempdir(tag);
    let store = d.join("store");
    ok(&["root-ca", "--out", &s(&store.join("mgmt/gloo-mesh/my-root-trust-policy.gloo-mesh"))]);
    let policy = d.join("policy.yaml");
    std::fs::write(&policy, SEED_POLICY).unwrap();
    (d, store, policy)
}

#[test]
fn reconcile_issues_keeps_and_rotates_over_time() {
    let (d, store, policy) = seed_store("reconcile");
    let (st, pol) = (s(&store), s(&policy));
    let base = ["reconcile", "--policy", &pol, "--store", &st, "--cluster", "cluster1", "--cluster", "cluster2"];
    let t0 = "2030-01-01T00:00:00Z";
    // Certificates are issued at --at; the root from root-ca is valid from now for 10 years.
    let first = ok(&[&base[..], &["--at", t0]].concat());
    assert_eq!(rows(&first, "issued"), 2, "{}", first.stdout);
    assert!(first.stdout.contains("All share root"), "{}", first.stdout);
    let c1 = store.join("cluster1/istio-system/cacerts");
    if has_openssl() {
        let at = 1_893_456_060; // 2030-01-01T00:01:00Z
        let verdict = OpensslVerify::new(&c1.join("ca-cert.pem"))
            .at(time::OffsetDateTime::from_unix_timestamp(at).unwrap())
            .roots(&c1.join("root-cert.pem"))
            .untrusted(&c1.join("cert-chain.pem"))
            .run();
        verdict.unwrap();
    }

    // Idempotent: a second run inside the validity window changes no byte.
    let before = snapshot(&store);
    let second = ok(&[&base[..], &["--at", "2030-01-01T12:00:00Z"]].concat());
    assert_eq!(rows(&second, "kept"), 2, "{}", second.stdout);
    assert_eq!(snapshot(&store), before);

    // The grace point: 10% of (24 h + 5 min backdate) before expiry = 2.4 h + 30 s.
    let just_before = ok(&[&base[..], &["--at", "2030-01-01T21:35:00Z"]].concat());
    assert_eq!(rows(&just_before, "kept"), 2, "{}", just_before.stdout);
    let dry = ok(&[&base[..], &["--at", "2030-01-01T21:36:00Z", "--dry-run"]].concat());
    assert_eq!(rows(&dry, "would rotate"), 2, "{}", dry.stdout);
    assert_eq!(snapshot(&store), before, "--dry-run writes nothing");
    let rotated = ok(&[&base[..], &["--at", "2030-01-01T21:36:00Z", "--json"]].concat());
    let v: serde_json::Value = serde_json::from_str(&rotated.stdout).unwrap();
    assert_eq!(v["clusters"][0]["action"], "rotated");
    assert!(v["clusters"][0]["reason"].as_str().unwrap().contains("grace period"), "{v}");
    assert_eq!(v["trust"]["ok"], true);
    assert_ne!(snapshot(&store), before);
    ok(&["verify", &s(&c1), &s(&store.join("cluster2/istio-system/cacerts")), "--at", "2030-01-01T22:00:00Z"]);

    // Long after expiry: the expired bundle is replaced.
    let late = ok(&[&base[..], &["--at", "2030-03-01T00:00:00Z"]].concat());
    assert!(late.stdout.contains("expired"), "{}", late.stdout);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn reconcile_one_broken_cluster_does_not_stop_the_others() {
    let (d, store, policy) = seed_store("partial");
    // cluster2's Secret path is a file, not a directory: reading it fails.
    std::fs::create_dir_all(store.join("cluster2/istio-system")).unwrap();
    std::fs::write(store.join("cluster2/istio-system/cacerts"), b"not a directory").unwrap();
    let list = d.join("clusters.txt");
    std::fs::write(&list, "# workload clusters\ncluster1\ncluster2   # broken\n\ncluster3\n").unwrap();
    let out = meshca(&["reconcile", "--policy", &s(&policy), "--store", &s(&store), "--clusters-file", &s(&list)]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("cluster2  FAILED"), "{}", out.stdout);
    assert_eq!(rows(&out, "issued"), 2, "{}", out.stdout);
    assert!(store.join("cluster3/istio-system/cacerts/ca-cert.pem").is_file());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn reconcile_refuses_bad_policies_and_signers() {
    let (d, store, policy) = seed_store("badpolicy");
    let run = |text: &str| {
        std::fs::write(&policy, text).unwrap();
        meshca(&["reconcile", "--policy", &s(&policy), "--store", &s(&store), "--cluster", "c1"])
    };
    for (from, to, want) in [
        (
            "secretRotationGracePeriodRatio: 0.1",
            "secretRotationGracePeriodRatio: 1.5",
            "spec.config.intermediateCertOptions.secretRotationGracePeriodRatio must be in (0,1), got 1.5",
        ),
        ("ttlDays: 1", "ttlDays: 0", "spec.config.intermediateCertOptions.ttlDays must be between 1 and 36500, got 0"),
        ("ttlDays: 1", "ttlDays: 1\n      keyAlgorithm: ed25519", "unknown key algorithm `ed25519`"),
        ("ttlDays: 1", "ttlDays: 1\n      ttlHours: 3", "unknown field `ttlHours`"),
    ] {
        let out = run(&SEED_POLICY.replace(from, to));
        assert_eq!(out.code, 1, "{to}: {}", out.all());
        assert!(out.stderr.contains(want), "{to}: {}", out.stderr);
        assert!(out.stderr.contains("policy.yaml"), "names the file: {}", out.stderr);
        assert!(!store.join("c1").exists(), "nothing written for a bad policy");
    }
    // A signer that is not a CA.
    let mgmt = store.join("mgmt/gloo-mesh/my-root-trust-policy.gloo-mesh");
    std::fs::remove_dir_all(&mgmt).unwrap();
    copy_dir(Path::new(&testdata("openssl/not-ca")), &mgmt);
    let out = run(SEED_POLICY);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("signing CA") && out.stderr.contains("not a CA"), "{}", out.stderr);
    // No signer at all: say how to make one.
    std::fs::remove_dir_all(&mgmt).unwrap();
    let out = run(SEED_POLICY);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("meshca root-ca --out"), "{}", out.stderr);
    // Usage errors.
    assert_eq!(meshca(&["reconcile", "--policy", &s(&policy), "--store", &s(&store)]).code, 2);
    // A bad cluster name is refused input (exit 1), not a usage error.
    assert_eq!(meshca(&["reconcile", "--policy", &s(&policy), "--store", &s(&store), "--cluster", "../x"]).code, 1);
    assert_eq!(meshca(&["root-ca", "--out", &s(&d.join("r")), "--key", "dsa-1024"]).code, 2);
    std::fs::remove_dir_all(&d).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn generated_root_is_created_once() {
    let d = tempdir("generated");
    let store = d.join("store");
    let policy = d.join("p.yaml");
    std::fs::write(
        &policy,
        SEED_POLICY.replace(
            "secretRef:\n        name: my-root-trust-policy.gloo-mesh\n        namespace: gloo-mesh",
            "generated:\n        ttlDays: 3650",
        ),
    )
    .unwrap();
    let args = ["reconcile", "--policy", &s(&policy), "--store", &s(&store), "--cluster", "c1"];
    let first = ok(&args);
    assert!(first.stdout.contains("(created now)"), "{}", first.stdout);
    let root_dir = store.join("mgmt/gloo-mesh/root-trust-policy.gloo-mesh");
    let root = std::fs::read(root_dir.join("ca-cert.pem")).unwrap();
    let second = ok(&args);
    assert!(!second.stdout.contains("(created now)"), "{}", second.stdout);
    assert_eq!(std::fs::read(root_dir.join("ca-cert.pem")).unwrap(), root);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn many_clusters_stay_readable() {
    let (d, store, policy) = seed_store("many");
    let list = d.join("clusters.txt");
    std::fs::write(&list, (1..=60).map(|i| format!("c{i:03}\n")).collect::<String>()).unwrap();
    let args = ["reconcile", "--policy", &s(&policy), "--store", &s(&store), "--clusters-file", &s(&list)];
    let first = ok(&args);
    assert!(first.stdout.contains("60 clusters: 60 issued."), "{}", first.stdout);
    let second = ok(&args);
    assert!(second.stdout.contains("... and 60 clusters kept unchanged"), "{}", second.stdout);
    assert!(second.stdout.lines().count() < 10, "{}", second.stdout);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn quickstart_proves_cross_cluster_mtls_and_reruns() {
    let d = tempdir("quickstart");
    let dir = d.join("qs");
    let out = ok(&["quickstart", "--dir", &s(&dir)]);
    assert_eq!(out.stdout.matches("each side verified the other").count(), 3, "{}", out.stdout);
    assert!(out.stdout.contains("refused: cluster2 reviews rejects"), "{}", out.stdout);
    assert!(out.stdout.contains("meshca inspect"), "{}", out.stdout);
    for c in ["cluster1", "cluster2", "cluster3"] {
        assert!(dir.join(format!("store/{c}/istio-system/cacerts/ca-key.pem")).is_file());
        assert!(dir.join(format!("workloads/{c}/cert-chain.pem")).is_file());
    }
    let again = ok(&["quickstart", "--dir", &s(&dir)]);
    assert!(again.stdout.contains("reusing it"), "{}", again.stdout);
    assert_eq!(again.stdout.matches("  kept  ").count(), 3, "{}", again.stdout);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn istio_sample_sidecar_dumps_verify() {
    // testdata/proxy-secrets: Istio's sample workload certificate in the format
    // `istioctl proxy-config secret -o json|yaml` prints.
    let out = ok(&[
        "verify",
        "--proxy-secret",
        &testdata("proxy-secrets/foo.json"),
        "--proxy-secret",
        &testdata("proxy-secrets/foo.yaml"),
    ]);
    assert!(out.stdout.contains("spiffe://trust-domain-foo/ns/foo/sa/foo"), "{}", out.stdout);
    let json = ok(&["inspect", &testdata("proxy-secrets/foo.yaml"), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["kind"], "proxy-secret");
    assert_eq!(v["chainTrusted"], true);
    assert_eq!(v["chain"][0]["sans"][0], "URI:spiffe://trust-domain-foo/ns/foo/sa/foo");
    // Before the workload certificate's notBefore it does not verify.
    assert_eq!(
        meshca(&["verify", "--proxy-secret", &testdata("proxy-secrets/foo.json"), "--at", "2023-01-01T00:00:00Z"]).code,
        1
    );
}

#[test]
fn verify_judges_a_public_chain_without_its_key_and_shows_warnings() {
    let d = tempdir("public-chain");
    let peer = d.join("peer");
    std::fs::create_dir_all(&peer).unwrap();
    for f in ["cert-chain.pem", "root-cert.pem"] {
        std::fs::copy(testdata(&format!("openssl/good/{f}")), peer.join(f)).unwrap();
    }
    let out = ok(&["verify", &s(&peer), &testdata("openssl/good"), "--at", "2027-01-01T00:00:00Z"]);
    assert!(out.stdout.contains("public chain only"), "{}", out.stdout);
    assert!(out.stdout.contains("all 2 bundles share root"), "{}", out.stdout);
    let json = ok(&["verify", &s(&peer), "--json", "--at", "2027-01-01T00:00:00Z"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["bundles"][0]["publicOnly"], true);
    // A public chain that does not reach its roots is refused like a bundle.
    std::fs::copy(testdata("istio-samples/root-cert.pem"), peer.join("root-cert.pem")).unwrap();
    assert_eq!(meshca(&["verify", &s(&peer), "--at", "2027-01-01T00:00:00Z"]).code, 1);
    // Profile deviations are warnings: shown, in --json too, and the bundle still verifies.
    let warned = testdata("openssl/rfc5280/warn-aki-issuer-serial");
    let out = ok(&["verify", &warned, "--at", "2027-01-01T00:00:00Z"]);
    assert!(out.stdout.contains("warning:") && out.stdout.contains("CA/Browser Forum"), "{}", out.stdout);
    let json = ok(&["verify", &warned, "--json", "--at", "2027-01-01T00:00:00Z"]);
    assert!(json.stdout.contains("CA/Browser Forum"), "{}", json.stdout);
    let out = ok(&["inspect", &warned, "--at", "2027-01-01T00:00:00Z"]);
    assert!(out.stdout.contains("warning:"), "{}", out.stdout);
    // A rule failure names the certificate and the fix.
    let out = meshca(&["verify", &testdata("openssl/rfc5280/unknown-critical"), "--at", "2027-01-01T00:00:00Z"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("critical extension 1.2.3.4.5"), "{}", out.stderr);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn version_completions_and_man_page() {
    let v = ok(&["--version"]);
    // Built from this repository: the version and the commit.
    let line = v.stdout.trim();
    assert!(line.starts_with(&format!("meshca {}", env!("CARGO_PKG_VERSION"))), "{line}");
    let head =
        Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok().filter(|o| o.status.success());
    if let Some(head) = head {
        let commit = String::from_utf8_lossy(&head.stdout).trim().to_owned();
        assert!(line.ends_with(&format!("(commit {commit})")), "{line} vs {commit}");
    }
    for (shell, needle) in [("bash", "_meshca()"), ("zsh", "#compdef meshca"), ("fish", "complete -c meshca")] {
        let out = ok(&["completions", shell]);
        assert!(out.stdout.contains(needle), "{shell}");
        assert!(out.stdout.contains("reconcile") && out.stdout.contains("rotate-root"), "{shell} completes commands");
    }
    assert_eq!(meshca(&["completions", "tcsh"]).code, 2);
    let man = ok(&["man"]);
    assert!(man.stdout.starts_with(".ie") || man.stdout.contains(".TH meshca 1"), "{}", &man.stdout[..80]);
    assert!(man.stdout.contains("quickstart"), "the man page lists the commands");
}

/// `meshca rotate`: the named clusters get a new key and intermediate now, the others are left
/// as they were, and a workload certificate of the old intermediate still verifies (the old
/// intermediate is not revoked; everything chains to the same root).
#[test]
fn rotate_reissues_only_the_named_clusters_now() {
    let d = tempdir("rotate");
    let dir = d.join("qs");
    ok(&["quickstart", "--dir", &s(&dir)]);
    let store = dir.join("store");
    let (policy, st) = (s(&dir.join("policy.yaml")), s(&store));
    let bundle = |c: &str| store.join(c).join("istio-system/cacerts");
    let read = |c: &str, f: &str| std::fs::read(bundle(c).join(f)).unwrap();
    let before: Vec<(Vec<u8>, Vec<u8>)> =
        ["cluster1", "cluster2", "cluster3"].iter().map(|c| (read(c, "ca-cert.pem"), read(c, "ca-key.pem"))).collect();
    // A workload of cluster2 from its current intermediate, to check after the rotation.
    let leaf = d.join("old-leaf");
    ok(&[
        "leaf",
        "--ca",
        &s(&bundle("cluster2")),
        "--spiffe",
        "spiffe://cluster.local/ns/default/sa/app",
        "--out",
        &s(&leaf),
    ]);

    let out = ok(&["rotate", "--policy", &policy, "--store", &st, "--cluster", "cluster2", "--dry-run"]);
    assert!(out.stdout.contains("would rotate") || out.stdout.contains("would-rotate"), "{}", out.all());
    assert_eq!(read("cluster2", "ca-cert.pem"), before[1].0, "a dry run writes nothing");

    let out = ok(&["rotate", "--policy", &policy, "--store", &st, "--cluster", "cluster2"]);
    assert!(out.stdout.contains("rotation asked for now"), "{}", out.all());
    assert_ne!(read("cluster2", "ca-cert.pem"), before[1].0, "cluster2 has a new intermediate");
    assert_ne!(read("cluster2", "ca-key.pem"), before[1].1, "and a new key");
    assert_eq!(read("cluster1", "ca-cert.pem"), before[0].0, "cluster1 is left as it was");
    assert_eq!(read("cluster3", "ca-cert.pem"), before[2].0, "cluster3 is left as it was");
    ok(&["verify", &s(&bundle("cluster1")), &s(&bundle("cluster2")), &s(&bundle("cluster3"))]);
    if has_openssl() {
        // The old intermediate's workload still verifies against cluster1's trust (not revoked).
        assert!(openssl_verify(
            &bundle("cluster1").join("root-cert.pem"),
            &leaf.join("cert-chain.pem"),
            &leaf.join("cert-chain.pem"),
            None
        ));
    }

    let out = ok(&["rotate", "--policy", &policy, "--store", &st, "--all", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let actions: Vec<&str> =
        report["clusters"].as_array().unwrap().iter().map(|c| c["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["rotated", "rotated", "rotated"], "{}", out.stdout);
    assert_ne!(read("cluster1", "ca-cert.pem"), before[0].0);

    // The management cluster named as a workload cluster: refused input, exit 1, as in every
    // command that takes cluster names (the one rule of the README's "Exit codes"; rotate said 2).
    let out = meshca(&["rotate", "--policy", &policy, "--store", &st, "--cluster", "mgmt"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let out = meshca(&["rotate", "--policy", &policy, "--store", &st]);
    assert_eq!(out.code, 2, "neither --cluster nor --all: {}", out.all());
}

/// `meshca inspect` on a CRL file: issuer, update times, entries, and staleness.
#[test]
fn inspect_shows_a_crl() {
    let d = tempdir("inspect-crl");
    let root = d.join("root");
    ok(&["root-ca", "--out", &s(&root)]);
    ok(&["intermediate", "--ca", &s(&root), "--cluster", "c2", "--out", &s(&d.join("c2"))]);
    let now = time::OffsetDateTime::now_utc();
    let files: meshca::Files = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    let signer = meshca::SigningCa::from_files(&files, now).unwrap();
    let c2 = meshca::Certificate::from_pem_all(&std::fs::read(d.join("c2/ca-cert.pem")).unwrap(), "c2").unwrap();
    let revoked = meshca::Revoked::of(&c2[0], now, meshca::RevocationReason::KeyCompromise);
    let crl = signer.sign_crl(&[revoked], now, now + time::Duration::days(7), 1).unwrap();
    let path = d.join("ca-crl.pem");
    std::fs::write(&path, crl.to_pem()).unwrap();
    let out = ok(&["inspect", &s(&path)]);
    assert!(out.stdout.contains("1 CRL") && out.stdout.contains("issuer CN=Root CA,O=Istio"), "{}", out.stdout);
    let serial: String = c2[0].serial_hex().replace(':', "");
    assert!(
        out.stdout.contains(&format!("revoked serial {serial}")) && out.stdout.contains("keyCompromise"),
        "{}",
        out.stdout
    );
    let later = (now + time::Duration::days(8)).format(&time::format_description::well_known::Rfc3339).unwrap();
    let out = ok(&["inspect", &s(&path), "--at", &later, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["kind"], "crl");
    assert_eq!(v["crls"][0]["stale"], true);
    assert_eq!(v["crls"][0]["revoked"][0]["reason"], "keyCompromise");
}

#[test]
fn bundle_prints_the_trust_set_the_run_published() {
    let (d, store, policy) = seed_store("bundle");
    let (st, pol) = (s(&store), s(&policy));
    let out = meshca(&["bundle", "--policy", &pol, "--store", &st]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("no trust set is published"), "{}", out.all());
    assert!(out.stderr.contains("add spec.config.trustDistribution"), "{}", out.all());
    std::fs::write(
        &policy,
        format!("{SEED_POLICY}    trustDistribution:\n      spiffeBundle: {{refreshHintSeconds: 120}}\n"),
    )
    .unwrap();
    let run = ok(&["reconcile", "--policy", &pol, "--store", &st, "--cluster", "cluster1"]);
    assert!(
        run.stdout.contains("trust beyond the mesh: spiffe_sequence 1 (the set changed); 1 written"),
        "{}",
        run.stdout
    );
    let root =
        std::fs::read_to_string(store.join("mgmt/gloo-mesh/my-root-trust-policy.gloo-mesh/root-cert.pem")).unwrap();
    let pem = ok(&["bundle", "--policy", &pol, "--store", &st, "--format", "pem"]);
    assert_eq!(pem.stdout, root);
    let doc = ok(&["bundle", "--policy", &pol, "--store", &st]);
    let v: serde_json::Value = serde_json::from_str(&doc.stdout).unwrap();
    assert_eq!((v["spiffe_sequence"].as_u64(), v["spiffe_refresh_hint"].as_u64()), (Some(1), Some(120)));
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let body: String = root.lines().filter(|l| !l.starts_with("-----")).collect();
    assert_eq!(keys[0]["x5c"][0].as_str(), Some(body.as_str()), "x5c is the root's DER");
    assert_eq!(keys[0]["use"], "x509-svid");
    // The ClusterTrustBundle mirror reached the cluster.
    assert!(store.join("cluster1/_clustertrustbundles/meshca.dev_istio_live/trustBundle").is_file());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn audit_proofs_verify_independently_and_a_planted_ca_exits_1() {
    let d = tempdir("audit");
    let store = d.join("store");
    let pol = d.join("policy.yaml");
    std::fs::write(
        &pol,
        "apiVersion: admin.gloo.solo.io/v2\nkind: RootTrustPolicy\nmetadata:\n  name: mesh\n  namespace: gloo-mesh\n\
         spec:\n  config:\n    mgmtServerCa:\n      generated: {}\n    auditLog: {}\n",
    )
    .unwrap();
    let t = [s(&pol), s(&store)];
    let run = |args: &[&str]| {
        let mut v = args.to_vec();
        v.extend(["--policy", &t[0], "--store", &t[1]]);
        meshca(&v)
    };
    let okw = |args: &[&str]| {
        let out = run(args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.all());
        out
    };
    okw(&["reconcile", "--cluster", "east", "--cluster", "west"]);
    let kept = d.join("kept.note");
    std::fs::write(&kept, okw(&["audit", "checkpoint"]).stdout).unwrap();
    let vkey = okw(&["audit", "checkpoint", "--verifier-key"]).stdout;
    okw(&["rotate", "--cluster", "east"]);
    let now = d.join("now.note");
    std::fs::write(&now, okw(&["audit", "checkpoint"]).stdout).unwrap();

    // Inclusion of each intermediate, checked by the independent verifier.
    let log = okw(&["audit", "log"]).stdout;
    let serials: Vec<&str> = log
        .lines()
        .filter(|l| l.split('\t').nth(2) == Some("intermediate"))
        .filter_map(|l| l.split('\t').nth(5))
        .collect();
    assert_eq!(serials.len(), 3, "{log}");
    for serial in &serials {
        let proof = okw(&["audit", "prove", "--serial", serial]).stdout;
        assert_eq!(rfc6962(&["inclusion", vkey.trim()], &proof).trim(), "ok", "{proof}");
        // A proof with a path element changed does not verify.
        let zero = format!("path: {}A=", "A".repeat(42));
        let bent: Vec<String> = proof
            .lines()
            .scan(false, |done, l| {
                let swap = !*done && l.starts_with("path: ");
                *done |= swap;
                Some(if swap { zero.clone() } else { l.to_owned() })
            })
            .collect();
        assert_ne!(rfc6962(&["inclusion", vkey.trim()], &(bent.join("\n") + "\n")).trim(), "ok");
    }
    // Consistency from the kept checkpoint to now.
    let verified = okw(&["audit", "verify", "--since", &s(&kept)]);
    assert!(verified.stdout.contains("every CA in the clusters is in the log"), "{}", verified.stdout);
    assert_eq!(rfc6962(&["consistency", vkey.trim(), &s(&kept), &s(&now)], &verified.stdout).trim(), "ok");

    // An intermediate planted by hand: unaccounted for, exit 1.
    let root = d.join("root");
    ok(&["root-ca", "--out", &s(&root)]);
    ok(&[
        "intermediate",
        "--ca",
        &s(&root),
        "--cluster",
        "rogue",
        "--out",
        &s(&store.join("rogue/istio-system/cacerts")),
    ]);
    let out = run(&["audit", "verify"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("UNACCOUNTED FOR: intermediate") && out.stdout.contains("rogue"), "{}", out.stdout);
}
