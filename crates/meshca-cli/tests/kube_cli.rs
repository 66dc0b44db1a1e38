//! `meshca reconcile --kube` and `meshca verify --kube` against Kubernetes API servers speaking
//! the real HTTP API over sockets (the test server of meshca-kube), through a kubeconfig.
#![allow(clippy::unwrap_used)]

#[path = "../../meshca-kube/tests/support/apiserver.rs"]
mod apiserver;

use std::process::Command;

use apiserver::{ApiServer, SECRETS};
use base64::Engine;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_meshca");

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// One kubeconfig with a context per (name, server).
fn kubeconfig(servers: &[(&str, &ApiServer)]) -> String {
    let mut clusters = String::new();
    let mut contexts = String::new();
    let mut users = String::new();
    for (name, s) in servers {
        clusters += &format!("- name: {name}\n  cluster:\n    server: {}\n", s.url);
        contexts += &format!("- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n");
        users += &format!("- name: {name}\n  user:\n    token: test\n");
    }
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n{clusters}contexts:\n{contexts}users:\n{users}current-context: {}\n",
        servers[0].0
    )
}

/// Three API servers (management, cluster1, c2), the seed's signing CA on the management one,
/// a kubeconfig with a context for each, and the seed policy.
struct Setup {
    rt: tokio::runtime::Runtime,
    mgmt: ApiServer,
    c1: ApiServer,
    c2: ApiServer,
    dir: std::path::PathBuf,
    kc: String,
    pol: String,
}

fn setup(tag: &str) -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (mgmt, c1, c2) =
        rt.block_on(async { (ApiServer::start().await, ApiServer::start().await, ApiServer::start().await) });
    let d = std::env::temp_dir().join(format!("meshca-kube-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();

    // The seed's Step 1: the root as a Secret on the management cluster.
    let root = d.join("root");
    assert_eq!(run(&["root-ca", "--out", root.to_str().unwrap()]).0, 0);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut data = serde_json::Map::new();
    for f in ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"] {
        data.insert(f.into(), json!(b64.encode(std::fs::read(root.join(f)).unwrap())));
    }
    mgmt.put(SECRETS, "gloo-mesh", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "my-root-trust-policy.gloo-mesh"}, "data": data}));

    let kc = d.join("kubeconfig");
    std::fs::write(&kc, kubeconfig(&[("mgmt-ctx", &mgmt), ("ctx-1", &c1), ("c2", &c2)])).unwrap();
    let policy = d.join("policy.yaml");
    std::fs::write(&policy, meshca_ops::policy::SEED_POLICY).unwrap();
    let (kc, pol) = (kc.to_str().unwrap().to_owned(), policy.to_str().unwrap().to_owned());
    Setup { rt, mgmt, c1, c2, dir: d, kc, pol }
}

/// `meshca <cmd> --kube` flags for the set-up's clusters.
fn kube_flags(s: &Setup) -> Vec<&str> {
    vec![
        "--kube",
        "--kubeconfig",
        &s.kc,
        "--policy",
        &s.pol,
        "--mgmt-cluster",
        "mgmt=mgmt-ctx",
        "--cluster",
        "cluster1=ctx-1",
        "--cluster",
        "c2",
    ]
}

#[test]
fn reconcile_and_verify_through_kubeconfig_contexts() {
    let s = setup("reconcile");
    let kc = s.kc.as_str();
    let args = [&["reconcile"][..], &kube_flags(&s)].concat();
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cluster1  issued") && out.contains("c2        issued"), "{out}");
    assert!(out.contains("cluster1: istio-system/cacerts") || out.contains("All share root"), "{out}");
    let secret = s.c1.get(SECRETS, "istio-system", "cacerts").unwrap();
    assert_eq!(secret["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshca");
    let (code, out, _) = run(&args);
    assert_eq!(code, 0);
    assert!(out.contains("2 clusters: 2 kept."), "{out}");

    let (code, out, err) =
        run(&["verify", "--kube", "--kubeconfig", kc, "--cluster", "cluster1=ctx-1", "--cluster", "c2=c2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("all 2 bundles share root"), "{out}");

    // A cluster whose API is down: one FAIL line, exit 1.
    let (code, _, err) = run(&[
        "verify",
        "--kube",
        "--kubeconfig",
        kc,
        "--cluster",
        "cluster1=ctx-1",
        "--cluster",
        "nope=no-such-context",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no-such-context"), "{err}");
    std::fs::remove_dir_all(&s.dir).unwrap();
}

#[test]
fn rotate_root_through_kubeconfig_contexts() {
    let s = setup("rotate");
    let reconcile = |extra: &[&str]| run(&[&["reconcile"][..], &kube_flags(&s), extra].concat());
    assert_eq!(reconcile(&[]).0, 0);
    let new_ca = s.dir.join("new-root");
    assert_eq!(run(&["root-ca", "--out", new_ca.to_str().unwrap(), "--cn", "Root CA 2"]).0, 0);
    let start =
        [&["rotate-root", "start"][..], &kube_flags(&s), &["--new-ca", new_ca.to_str().unwrap(), "--dwell-hours", "0"]]
            .concat();
    let (code, out, err) = run(&start);
    assert_eq!(code, 0, "{out}{err}");
    // The state and the incoming signer live beside the policy on the management cluster.
    assert!(s.mgmt.get(SECRETS, "gloo-mesh", "root-trust-policy-root-rotation").is_some());
    assert!(s.mgmt.get(SECRETS, "gloo-mesh", "my-root-trust-policy.gloo-mesh-next").is_some());
    let status = [&["rotate-root", "status"][..], &kube_flags(&s)].concat();
    let (_, out, _) = run(&status);
    assert!(out.contains("phase AddingNewRoot") && out.contains("cluster1     pending"), "{out}");
    // With no dwell the steps follow each other at once, up to the completion, which replaces
    // the user's signer Secret: refused without --adopt, naming it.
    let refused = (0..5).map(|_| reconcile(&[])).find(|(code, _, _)| *code != 0);
    let (code, out, err) = refused.expect("the completion needs --adopt");
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("--adopt"), "{err}");
    let (_, out, _) = run(&status);
    assert!(out.contains("phase DeletingOldRoot") && out.contains("c2           done"), "{out}");
    let (code, out, err) = reconcile(&["--adopt"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("now in phase Complete"), "{out}");
    let (_, out, _) = run(&status);
    assert!(out.contains("phase Complete") && out.contains("c2           done"), "{out}");
    // Both clusters trust only the new root, and verify says they share it.
    let (code, out, err) =
        run(&["verify", "--kube", "--kubeconfig", &s.kc, "--cluster", "cluster1=ctx-1", "--cluster", "c2=c2"]);
    assert_eq!(code, 0, "{out}{err}");
    let new_root = std::fs::read_to_string(new_ca.join("root-cert.pem")).unwrap();
    for c in [&s.c1, &s.c2] {
        let secret = c.get(SECRETS, "istio-system", "cacerts").unwrap();
        let root = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["root-cert.pem"].as_str().unwrap())
            .unwrap();
        assert_eq!(String::from_utf8(root).unwrap(), new_root);
    }
    std::fs::remove_dir_all(&s.dir).unwrap();
    drop(s.rt);
}

#[test]
fn crd_prints_the_committed_manifest() {
    let (code, out, _) = run(&["crd"]);
    assert_eq!(code, 0);
    assert_eq!(out, std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/crd.yaml")).unwrap());
}

#[test]
fn revoke_and_unrevoke_through_kubeconfig_contexts() {
    let s = setup("revoke");
    let kc = s.kc.as_str();
    let reconcile = [&["reconcile"][..], &kube_flags(&s)].concat();
    assert_eq!(run(&reconcile).0, 0);
    let old_c2 = s.c2.get(SECRETS, "istio-system", "cacerts").unwrap();
    let base = ["--kube", "--kubeconfig", kc, "--policy", &s.pol, "--mgmt-cluster", "mgmt=mgmt-ctx"];

    // Under --kube every other cluster must be named: one left out would keep accepting.
    let (code, _, err) = run(&[&["revoke"][..], &base, &["--cluster", "c2"]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--peer"), "{err}");

    let (code, out, err) =
        run(&[&["revoke"][..], &base, &["--cluster", "c2", "--peer", "cluster1=ctx-1", "--json"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["entries"][0]["cluster"], "c2");
    let new_c2 = s.c2.get(SECRETS, "istio-system", "cacerts").unwrap();
    assert_ne!(new_c2["data"]["ca-key.pem"], old_c2["data"]["ca-key.pem"], "c2 must get a new key");
    let c1 = s.c1.get(SECRETS, "istio-system", "cacerts").unwrap();
    assert!(c1["data"]["ca-crl.pem"].is_string(), "cluster1 must carry the CRL set: {c1}");
    assert_eq!(c1["data"]["ca-crl.pem"], new_c2["data"]["ca-crl.pem"]);
    // The list lives beside the policy, on the management cluster, managed by meshca.
    let list = s.mgmt.get(SECRETS, "gloo-mesh", "root-trust-policy-revocations").unwrap();
    assert_eq!(list["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshca");
    assert!(list["data"]["revocations.json"].is_string());

    // status --kube: a row per cluster, the revoked CA listed, istiod unobserved (no ConfigMap).
    let (code, out, err) = run(&[&["status"][..], &base, &["--cluster", "cluster1=ctx-1", "--cluster", "c2"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.lines().any(|l| l.starts_with("cluster1") && l.contains("unobserved") && l.ends_with("keep")), "{out}");
    assert!(out.contains("revoked: 1 CA c2 (serial"), "{out}");

    // verify --kube honours the set: both current bundles pass.
    let (code, out, err) =
        run(&["verify", "--kube", "--kubeconfig", kc, "--cluster", "cluster1=ctx-1", "--cluster", "c2=c2"]);
    assert_eq!(code, 0, "{out}{err}");

    let (code, out, err) = run(&[&["unrevoke"][..], &base, &["--cluster", "c2", "--peer", "cluster1=ctx-1"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = run(&[
        "crl",
        "show",
        "--kube",
        "--kubeconfig",
        kc,
        "--policy",
        &s.pol,
        "--mgmt-cluster",
        "mgmt=mgmt-ctx",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["list"]["revoked"].as_array().unwrap().len(), 0, "{shown}");
    assert_eq!(shown["crls"][0]["entries"], 0);
    std::fs::remove_dir_all(&s.dir).unwrap();
}

#[test]
fn signer_answers_istiod_s_requests_for_the_clusters_the_policy_names() {
    let s = setup("signer");
    let ra = format!(
        "{}    workloadSigning:\n      signerName: meshca.dev/istio\n      clusters: [cluster1]\n",
        meshca_ops::policy::SEED_POLICY
    );
    std::fs::write(&s.pol, ra).unwrap();
    let args = [&["reconcile"][..], &kube_flags(&s)].concat();
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(s.c1.get(SECRETS, "istio-system", "cacerts").is_none(), "RA mode: no CA key in cluster1");
    assert!(s.c2.get(SECRETS, "istio-system", "cacerts").is_some());
    let signer_flags = |clusters: &[&'static str]| {
        let mut v =
            vec!["signer", "--kube", "--kubeconfig", &s.kc, "--policy", &s.pol, "--mgmt-cluster", "mgmt=mgmt-ctx"];
        for c in clusters {
            v.extend(["--cluster", c]);
        }
        v.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    // Refused before anything runs: a cluster the policy does not cover; no --kube.
    let (code, _, err) = run(&signer_flags(&["c2"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--cluster c2") && err.contains("workloadSigning.clusters"), "{err}");
    let (code, _, err) = run(&["signer", "--policy", &s.pol, "--store", "/nonexistent", "--cluster", "cluster1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("give --kube"), "{err}");

    let mut child = Command::new(BIN)
        .args(signer_flags(&["cluster1=ctx-1"]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pem = meshca_testkit::csr::spiffe_request("spiffe://cluster.local/ns/shop/sa/checkout");
    let b64 = base64::engine::general_purpose::STANDARD;
    let csrs = "apis/certificates.k8s.io/v1/certificatesigningrequests";
    s.c1.put(csrs, "", json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "csr-1", "creationTimestamp": meshca::format_time(time::OffsetDateTime::now_utc())},
        "spec": {"request": b64.encode(&pem), "signerName": "meshca.dev/istio",
                 "username": "system:serviceaccount:istio-system:istiod", "usages": ["digital signature", "server auth", "client auth"]},
        "status": {"conditions": [{"type": "Approved", "status": "True", "reason": "IstiodApproved"}]},
    }));
    let mut chain = None;
    for _ in 0..200 {
        if let Some(c) =
            s.c1.get(csrs, "", "csr-1").and_then(|c| c["status"]["certificate"].as_str().map(str::to_owned))
        {
            chain = Some(b64.decode(c).unwrap());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let chain =
        chain.unwrap_or_else(|| panic!("no certificate; signer said: {}", String::from_utf8_lossy(&out.stderr)));
    let certs = meshca::Certificate::from_pem_all(&chain, "status.certificate").unwrap();
    let root =
        meshca::Certificate::from_pem_all(&std::fs::read(s.dir.join("root/root-cert.pem")).unwrap(), "root").unwrap();
    meshca_testkit::verify::webpki(&certs, &root, time::OffsetDateTime::now_utc()).unwrap();
    drop(s.rt);
    std::fs::remove_dir_all(&s.dir).unwrap();
}
