//! meshca-kube against a Kubernetes API served over a socket (tests/support/apiserver.rs),
//! driven by the real `kube::Client`; and, when MESHCA_E2E_KUBECONFIG is set, a real cluster.
#![allow(clippy::unwrap_used)]

#[path = "support/apiserver.rs"]
mod apiserver;
#[path = "support/rbac.rs"]
mod rbac;

use meshca_testkit::softhsm;
use std::collections::BTreeMap;
use std::time::Duration;

use apiserver::{ApiServer, FaultKind, DEPLOYMENTS, EVENTS, POLICIES, SECRETS};
use axum::http::Method;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use serde_json::{json, Value};
use time::OffsetDateTime;

use meshca::{Cacerts, Files, Layout, RootParams, SigningCa};
use meshca_kube::leader::{self, LeaseConfig};
use meshca_kube::{clusters, controller, KubeStore};
use meshca_ops::error::ErrorKind;
use meshca_ops::policy;
use meshca_ops::reconcile::{self, Action, Options, Report};
use meshca_ops::store::{SecretRef, Store, WriteMeta};

const SIGNER: &str = "my-root-trust-policy.gloo-mesh";

fn secret_json(name: &str, files: &Files, labels: &[(&str, &str)]) -> Value {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    if !labels.is_empty() {
        s.metadata.labels = Some(labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect());
    }
    s.data = Some(files.iter().map(|(k, v)| (k.to_owned(), ByteString(v.to_vec()))).collect());
    let mut v = serde_json::to_value(&s).unwrap();
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    v
}

fn files_of(secret: &Value) -> Files {
    let s: Secret = serde_json::from_value(secret.clone()).unwrap();
    s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()
}

/// A management server holding the seed's signing CA Secret.
async fn mgmt_with_root() -> (ApiServer, SigningCa) {
    let mgmt = ApiServer::start().await;
    let root = SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, OffsetDateTime::now_utc()).unwrap();
    mgmt.put(SECRETS, "gloo-mesh", secret_json(SIGNER, &root.bundle().to_files(Layout::Istio), &[]));
    (mgmt, root)
}

async fn servers(n: usize) -> Vec<ApiServer> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(ApiServer::start().await);
    }
    v
}

fn store_for(mgmt: &ApiServer, clusters: &[(&str, &ApiServer)]) -> KubeStore {
    let mut map = BTreeMap::new();
    map.insert("mgmt".to_owned(), mgmt.client());
    for (name, s) in clusters {
        map.insert((*name).to_owned(), s.client());
    }
    KubeStore::new(tokio::runtime::Handle::current(), map)
}

/// Runs the synchronous reconcile loop off the async workers, as the controller does.
async fn run(store: KubeStore, text: &str, clusters: &[&str], now: OffsetDateTime) -> Report {
    let pol = policy::parse(text, "policy.yaml").unwrap();
    let opts = Options::new(now, clusters.iter().map(|c| (*c).to_owned()).collect());
    tokio::task::spawn_blocking(move || {
        reconcile::reconcile(&store, &pol, &opts, &mut meshca::OsRng, &mut |_, _| {}).unwrap()
    })
    .await
    .unwrap()
}

fn actions(r: &Report) -> Vec<(String, Action)> {
    r.clusters.iter().map(|c| (c.cluster.clone(), c.action)).collect()
}

fn cacerts_at(server: &ApiServer, now: OffsetDateTime) -> Cacerts {
    let s = server.get(SECRETS, "istio-system", "cacerts").expect("cacerts exists");
    Cacerts::from_files(&files_of(&s), now).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_creates_replaces_and_guards() {
    let c1 = ApiServer::start().await;
    let mut map = BTreeMap::new();
    map.insert("c1".to_owned(), c1.client());
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        let store = KubeStore::new(handle.clone(), map.clone());
        let s = SecretRef::cacerts("c1");
        assert_eq!(store.read(&s).unwrap(), None);
        let v1: Files = [("ca-cert.pem", b"one".to_vec())].into_iter().collect();
        let mut meta = WriteMeta::default();
        meta.labels.insert("app.kubernetes.io/managed-by".into(), "meshca".into());
        store.write(&s, &v1, &meta).unwrap();
        assert_eq!(store.read(&s).unwrap(), Some(v1.clone()));
        let v2: Files = [("ca-cert.pem", b"two".to_vec())].into_iter().collect();
        store.write(&s, &v2, &meta).unwrap();
        assert_eq!(store.read(&s).unwrap(), Some(v2.clone()));
        (store, s, v2, meta)
    })
    .await
    .unwrap();
    let (store, s, v2, meta) = result;
    let obj = c1.get(SECRETS, "istio-system", "cacerts").unwrap();
    assert_eq!(obj["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshca");
    // Another writer changes it after our read: our replace carries a stale version -> Conflict.
    let mut other = obj.clone();
    other["data"]["extra"] = json!("eA==");
    c1.put(SECRETS, "istio-system", other);
    let err = tokio::task::spawn_blocking(move || store.write(&s, &v2, &meta).unwrap_err()).await.unwrap();
    assert!(matches!(err, meshca_ops::Error::Conflict { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_across_clusters_is_idempotent() {
    let (mgmt, root) = mgmt_with_root().await;
    let cs = servers(2).await;
    let now = OffsetDateTime::now_utc();
    let first = run(store_for(&mgmt, &[("c1", &cs[0]), ("c2", &cs[1])]), policy::SEED_POLICY, &["c1", "c2"], now).await;
    assert_eq!(actions(&first), [("c1".into(), Action::Issued), ("c2".into(), Action::Issued)]);
    assert!(first.trust.ok, "{:?}", first.trust);
    let (b1, b2) = (cacerts_at(&cs[0], now), cacerts_at(&cs[1], now));
    meshca::check_mutual_trust(&[("c1", &b1), ("c2", &b2)]).unwrap();
    assert_eq!(b1.root(), root.bundle().root());
    let obj = cs[0].get(SECRETS, "istio-system", "cacerts").unwrap();
    assert_eq!(obj["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshca");
    assert_eq!(obj["metadata"]["annotations"]["meshca.dev/root-fingerprint"], json!(root.bundle().root_fingerprint()));
    assert_eq!(obj["metadata"]["annotations"]["meshca.dev/policy"], "gloo-mesh/root-trust-policy");

    let writes = (cs[0].writes(), cs[1].writes(), mgmt.writes());
    let second = run(
        store_for(&mgmt, &[("c1", &cs[0]), ("c2", &cs[1])]),
        policy::SEED_POLICY,
        &["c1", "c2"],
        now + time::Duration::hours(1),
    )
    .await;
    assert_eq!(actions(&second), [("c1".into(), Action::Kept), ("c2".into(), Action::Kept)]);
    assert_eq!((cs[0].writes(), cs[1].writes(), mgmt.writes()), writes, "a second run writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_race_is_reread_and_replanned() {
    let (mgmt, _) = mgmt_with_root().await;
    let c1 = ApiServer::start().await;
    let now = OffsetDateTime::now_utc();
    run(store_for(&mgmt, &[("c1", &c1)]), policy::SEED_POLICY, &["c1"], now).await;
    let before = cacerts_at(&c1, now);
    // Into the grace period; another writer touches cacerts between our read and our write.
    let later = now + time::Duration::hours(22);
    c1.fault(Some(Method::PUT), "/secrets/cacerts", FaultKind::ConcurrentWrite, 1);
    let r = run(store_for(&mgmt, &[("c1", &c1)]), policy::SEED_POLICY, &["c1"], later).await;
    assert_eq!(r.clusters[0].action, Action::Rotated, "{:?}", r.clusters[0]);
    let puts = c1.log().iter().filter(|l| l.starts_with("PUT")).count();
    assert_eq!(puts, 2, "one conflicting PUT, then one after re-reading: {:?}", c1.log());
    let after = cacerts_at(&c1, later);
    assert_ne!(after.ca_cert(), before.ca_cert());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_old_bundles_and_say_which_cluster_and_why() {
    let (mgmt, _) = mgmt_with_root().await;
    let cs = servers(3).await;
    let now = OffsetDateTime::now_utc();
    let all = [("c1", &cs[0]), ("c2", &cs[1]), ("c3", &cs[2])];
    run(store_for(&mgmt, &all), policy::SEED_POLICY, &["c1", "c2", "c3"], now).await;
    let old: Vec<Cacerts> = cs.iter().map(|s| cacerts_at(s, now)).collect();

    // c1 answers 500 to writes, c2 is too slow, c4 is unreachable; c3 is healthy.
    cs[0].fault(Some(Method::PUT), "/secrets/cacerts", FaultKind::Status(500), 100);
    cs[1].fault(Some(Method::GET), "/secrets/cacerts", FaultKind::Delay(Duration::from_secs(3)), 100);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut dead = kube::Config::new(dead_url.parse().unwrap());
    dead.connect_timeout = Some(Duration::from_secs(1));
    let mut map = BTreeMap::new();
    map.insert("mgmt".to_owned(), mgmt.client());
    for (n, s) in all {
        map.insert(n.to_owned(), s.client());
    }
    map.insert("c4".to_owned(), kube::Client::try_from(dead).unwrap());
    let store = KubeStore::new(tokio::runtime::Handle::current(), map).timeout(Duration::from_secs(1));
    let later = now + time::Duration::hours(22);
    let r = run(store, policy::SEED_POLICY, &["c1", "c2", "c3", "c4"], later).await;
    let by: BTreeMap<_, _> = r.clusters.iter().map(|c| (c.cluster.as_str(), c)).collect();
    assert_eq!(by["c1"].action, Action::Failed);
    assert!(by["c1"].reason.contains("HTTP 500"), "{}", by["c1"].reason);
    assert_eq!(by["c2"].action, Action::Failed);
    assert!(by["c2"].reason.contains("timed out"), "{}", by["c2"].reason);
    assert_eq!(by["c3"].action, Action::Rotated);
    assert_eq!(by["c4"].action, Action::Failed);
    assert!(by["c4"].reason.to_lowercase().contains("connect"), "{}", by["c4"].reason);
    assert!(!r.ok());
    // Every cluster holds either its old valid bundle or the new one, never a broken one.
    cs[1].clear_faults();
    assert_eq!(cacerts_at(&cs[0], later).ca_cert(), old[0].ca_cert());
    assert_eq!(cacerts_at(&cs[1], later).ca_cert(), old[1].ca_cert());
    assert_ne!(cacerts_at(&cs[2], later).ca_cert(), old[2].ca_cert());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_cacerts_is_replaced_only_with_adopt() {
    let (mgmt, _) = mgmt_with_root().await;
    let c1 = ApiServer::start().await;
    let now = OffsetDateTime::now_utc();
    // An existing installation's own cacerts, from another root.
    let other = SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, now).unwrap();
    let theirs =
        other.issue_intermediate(&meshca::IntermediateParams::new("c1"), &mut meshca::OsRng, now).unwrap().value;
    c1.put(SECRETS, "istio-system", secret_json("cacerts", &theirs.to_files(Layout::Istio), &[]));
    let r = run(store_for(&mgmt, &[("c1", &c1)]), policy::SEED_POLICY, &["c1"], now).await;
    assert_eq!(r.clusters[0].action, Action::Failed);
    // The library says what is wrong and that meshca can adopt it; the CLI names the flag.
    assert_eq!(r.clusters[0].error_kind, Some(ErrorKind::NotManaged));
    assert!(r.clusters[0].reason.contains("unless told to adopt it"), "{}", r.clusters[0].reason);
    assert_eq!(cacerts_at(&c1, now).ca_cert(), theirs.ca_cert(), "left alone");
    let r = run(store_for(&mgmt, &[("c1", &c1)]).adopt(true), policy::SEED_POLICY, &["c1"], now).await;
    assert_eq!(r.clusters[0].action, Action::Rotated, "{}", r.clusters[0].reason);
    assert!(r.clusters[0].reason.contains("root changed"), "{}", r.clusters[0].reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clusters_in_one_run() {
    let (mgmt, _) = mgmt_with_root().await;
    let cs = servers(200).await;
    let names: Vec<String> = (0..200).map(|i| format!("cluster{i:03}")).collect();
    let pairs: Vec<(&str, &ApiServer)> = names.iter().map(String::as_str).zip(cs.iter()).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let r = run(store_for(&mgmt, &pairs), policy::SEED_POLICY, &refs, OffsetDateTime::now_utc()).await;
    assert_eq!(r.counts(), [(Action::Issued, 200)]);
    assert!(r.trust.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_restart_pods_restarts_istiod() {
    let (mgmt, _) = mgmt_with_root().await;
    let c1 = ApiServer::start().await;
    c1.put(DEPLOYMENTS, "istio-system", json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "istiod", "labels": {"app": "istiod"}},
        "spec": {"selector": {"matchLabels": {"app": "istiod"}}, "template": {"metadata": {"labels": {"app": "istiod"}}, "spec": {"containers": []}}}
    }));
    let text = policy::SEED_POLICY
        .replace("    intermediateCertOptions:", "    autoRestartPods: true\n    intermediateCertOptions:");
    let r = run(store_for(&mgmt, &[("c1", &c1)]), &text, &["c1"], OffsetDateTime::now_utc()).await;
    assert_eq!(r.clusters[0].restarted.as_deref(), Some("restarted istiod (istiod)"));
    let d = c1.get(DEPLOYMENTS, "istio-system", "istiod").unwrap();
    assert!(d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string(), "{d}");
}

/// An Istio remote secret (what `istioctl create-remote-secret` makes) for `server`.
fn remote_secret(cluster: &str, server: &ApiServer) -> Value {
    let files: Files = [(cluster, server.kubeconfig(cluster).into_bytes())].into_iter().collect();
    secret_json(&format!("istio-remote-secret-{cluster}"), &files, &[("istio/multiCluster", "true")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_come_from_istio_remote_secrets() {
    let (mgmt, _) = mgmt_with_root().await;
    let cs = servers(2).await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &cs[0]));
    mgmt.put(SECRETS, "istio-system", remote_secret("west", &cs[1]));
    mgmt.put(SECRETS, "istio-system", secret_json("unrelated", &Files::new(), &[]));
    let found =
        clusters::clients_from_remote_secrets(&mgmt.client(), "istio-system", Duration::from_secs(5)).await.unwrap();
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["east", "west"]);
    // The clients reach the right servers.
    let api: kube::Api<Secret> = kube::Api::namespaced(found[1].1.clone(), "istio-system");
    assert!(api.get_opt("cacerts").await.unwrap().is_none());
    assert!(cs[1].log().iter().any(|l| l.contains("/secrets/cacerts")));
}

/// The controller's passes reuse the clients of unchanged kubeconfigs; a changed one is
/// rebuilt (it reaches its new server) and a removed one is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_secret_clients_are_rebuilt_only_when_their_kubeconfig_changes() {
    let (mgmt, _) = mgmt_with_root().await;
    let cs = servers(3).await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &cs[0]));
    mgmt.put(SECRETS, "istio-system", remote_secret("west", &cs[1]));
    let cache = clusters::ClientCache::default();
    let client = mgmt.client();
    let list = || clusters::clients_from_remote_secrets_cached(&client, "istio-system", Duration::from_secs(5), &cache);
    assert_eq!(list().await.unwrap().len(), 2);
    assert_eq!(format!("{cache:?}"), "ClientCache { clients: 2 }", "only the count: kubeconfigs hold credentials");
    // east now points at the third server: its client is built anew and reaches it.
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &cs[2]));
    mgmt.delete(SECRETS, "istio-system", "istio-remote-secret-west");
    let found = list().await.unwrap();
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["east"]);
    assert_eq!(format!("{cache:?}"), "ClientCache { clients: 1 }", "west was dropped");
    let before = cs[0].log().len();
    let api: kube::Api<Secret> = kube::Api::namespaced(found[0].1.clone(), "istio-system");
    assert!(api.get_opt("cacerts").await.unwrap().is_none());
    assert!(cs[2].log().iter().any(|l| l.contains("/secrets/cacerts")), "the new server is asked");
    assert_eq!(cs[0].log().len(), before, "the old server is not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time() {
    let mgmt = ApiServer::start().await;
    let client = mgmt.client();
    let cfg = |id: &str| LeaseConfig {
        namespace: "meshca-system".into(),
        name: "meshca-controller".into(),
        identity: id.into(),
        duration: Duration::from_secs(2),
    };
    // The time is passed in: the lease expires when the clock says so, without sleeping.
    let t0 = OffsetDateTime::now_utc();
    assert!(leader::try_acquire(&client, &cfg("a"), t0).await.unwrap());
    assert!(!leader::try_acquire(&client, &cfg("b"), t0).await.unwrap(), "b must wait while a holds it");
    assert!(leader::try_acquire(&client, &cfg("a"), t0).await.unwrap(), "a renews");
    let later = t0 + time::Duration::milliseconds(3100);
    assert!(leader::try_acquire(&client, &cfg("b"), later).await.unwrap(), "b takes an expired lease");
    let lease = mgmt.get(apiserver::LEASES, "meshca-system", "meshca-controller").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}

fn policy_cr(ttl_days: u32) -> Value {
    json!({
        "apiVersion": "meshca.dev/v1alpha1", "kind": "RootTrustPolicy",
        "metadata": {"name": "root-trust-policy"},
        "spec": {"config": {
            "intermediateCertOptions": {"secretRotationGracePeriodRatio": 0.1, "ttlDays": ttl_days},
            "mgmtServerCa": {"secretRef": {"name": SIGNER, "namespace": "gloo-mesh"}},
        }},
    })
}

/// How many watch requests `server` received whose path holds `what`: a watch the server ended
/// and the client resumed shows up as one more. Waiting for one more after a change means the
/// change's event was delivered (the stream before it carried it): the observable event a test
/// waits for instead of sleeping.
fn watches(server: &ApiServer, what: &str) -> usize {
    server.log().iter().filter(|l| l.contains(what) && l.contains("watch=true")).count()
}

/// The controller, running until [`Controller::stop`].
struct Controller {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), meshca_kube::Error>>,
}

/// Starts the controller on `mgmt` with `cfg`.
fn start_controller(mgmt: kube::Client, cfg: controller::ControllerConfig) -> Controller {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(mgmt, cfg, async move {
        let _ = stopped.await;
    }));
    Controller { stop, task }
}

impl Controller {
    /// Asks it to stop, and checks that it stopped cleanly within `limit`.
    async fn stop(self, limit: Duration) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(limit, self.task).await.unwrap().unwrap().unwrap();
    }
}

/// The status of the policy `gloo-mesh/root-trust-policy`.
fn policy_status(m: &ApiServer) -> Value {
    m.get(POLICIES, "gloo-mesh", "root-trust-policy").unwrap()["status"].clone()
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_reconciles_policies_writes_status_and_events() {
    let (mgmt, _) = mgmt_with_root().await;
    let cs = servers(2).await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &cs[0]));
    mgmt.put(SECRETS, "istio-system", remote_secret("west", &cs[1]));
    mgmt.put(POLICIES, "gloo-mesh", policy_cr(30));

    let mut cfg = controller::ControllerConfig::new("replica-a");
    cfg.lease = Some(LeaseConfig {
        namespace: "meshca-system".into(),
        name: "meshca-controller".into(),
        identity: "replica-a".into(),
        duration: Duration::from_secs(15),
    });
    let controller = start_controller(mgmt.client(), cfg);

    wait_for("status ACCEPTED", || policy_status(&mgmt)["state"] == "ACCEPTED").await;
    let st = policy_status(&mgmt);
    assert_eq!(st["observedGeneration"], 1);
    assert_eq!(st["clusters"]["east"]["action"], "issued");
    assert!(st["clusters"]["west"]["lastRotation"].is_string(), "{st}");
    assert!(st["nextCheck"].is_string(), "{st}");
    assert_eq!(st["conditions"][0]["type"], "Ready");
    assert_eq!(st["conditions"][0]["status"], "True");
    let now = OffsetDateTime::now_utc();
    let east = cacerts_at(&cs[0], now);
    assert_eq!(east.ca_cert().not_after() - east.ca_cert().not_before(), time::Duration::days(30) + meshca::BACKDATE);
    // One Issued event per cluster; kube's Recorder folds repeats into one object's series.count.
    let issued_events = |m: &ApiServer| {
        m.list(EVENTS)
            .iter()
            .filter(|e| e["reason"] == "Issued" && e["regarding"]["name"] == "root-trust-policy")
            .map(|e| e["series"]["count"].as_u64().unwrap_or(1))
            .sum::<u64>()
    };
    wait_for("two Issued events", || issued_events(&mgmt) == 2).await;

    // Lowering ttlDays is a spec change (generation 2): the controller re-issues.
    let mut cr = mgmt.get(POLICIES, "gloo-mesh", "root-trust-policy").unwrap();
    cr["spec"]["config"]["intermediateCertOptions"]["ttlDays"] = json!(7);
    cr["metadata"]["generation"] = json!(2);
    mgmt.put(POLICIES, "gloo-mesh", cr);
    wait_for("generation 2 observed", || policy_status(&mgmt)["observedGeneration"] == 2).await;
    let st = policy_status(&mgmt);
    assert_eq!(st["clusters"]["east"]["action"], "rotated", "{st}");
    assert!(st["clusters"]["east"]["reason"].as_str().unwrap().contains("ttl"), "{st}");

    // An invalid policy is reported in status, naming the field.
    let mut cr = mgmt.get(POLICIES, "gloo-mesh", "root-trust-policy").unwrap();
    cr["spec"]["config"]["intermediateCertOptions"]["secretRotationGracePeriodRatio"] = json!(1.5);
    cr["metadata"]["generation"] = json!(3);
    mgmt.put(POLICIES, "gloo-mesh", cr);
    wait_for("INVALID", || policy_status(&mgmt)["state"] == "INVALID").await;
    assert!(policy_status(&mgmt)["message"]
        .as_str()
        .unwrap()
        .contains("secretRotationGracePeriodRatio must be in (0,1), got 1.5"));

    controller.stop(Duration::from_secs(10)).await;
    let lease = mgmt.get(apiserver::LEASES, "meshca-system", "meshca-controller").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    assert_shipped_rbac_allows(&mgmt.log());
}

fn leaf_of(bundle: &Cacerts, now: OffsetDateTime) -> Vec<meshca::Certificate> {
    let id = meshca::SpiffeId::workload("cluster.local", "default", "app").unwrap();
    let signer = SigningCa::new(bundle.clone());
    signer.issue_leaf(&meshca::LeafParams::new(id), &mut meshca::OsRng, now).unwrap().value.chain()
}

/// How a cluster's proxies judge a workload chain: its bundle's roots and ca-crl.pem.
fn accepted_by(server: &ApiServer, chain: &[meshca::Certificate], now: OffsetDateTime) -> Result<(), String> {
    let files = files_of(&server.get(SECRETS, "istio-system", "cacerts").unwrap());
    let bundle = Cacerts::from_files(&files, now).unwrap();
    let crls = meshca::Crl::from_pem_all(files.get("ca-crl.pem").ok_or("no ca-crl.pem")?, "ca-crl.pem").unwrap();
    meshca::verify_workload_chain_with_crls(chain, bundle.roots(), &crls, now).map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_revokes_a_cluster_ca_named_in_the_annotation_once_per_value() {
    let (mgmt, _) = mgmt_with_root().await;
    let cs = servers(3).await;
    for (name, server) in ["east", "west", "south"].iter().zip(&cs) {
        mgmt.put(SECRETS, "istio-system", remote_secret(name, server));
    }
    mgmt.put(POLICIES, "gloo-mesh", policy_cr(30));
    let cfg = controller::ControllerConfig::new("replica-a");
    let metrics = cfg.metrics.clone();
    let controller = start_controller(mgmt.client(), cfg);
    wait_for("status ACCEPTED", || policy_status(&mgmt)["state"] == "ACCEPTED").await;
    let now = OffsetDateTime::now_utc();
    let old_west = cacerts_at(&cs[1], now);
    let (old_leaf, east_leaf) = (leaf_of(&old_west, now), leaf_of(&cacerts_at(&cs[0], now), now));

    let annotate = |value: &str| {
        let mut cr = mgmt.get(POLICIES, "gloo-mesh", "root-trust-policy").unwrap();
        cr["metadata"]["annotations"] = json!({ controller::REVOKE_ANNOTATION: value });
        mgmt.put(POLICIES, "gloo-mesh", cr);
    };
    annotate("west");
    wait_for("the revocation handled", || policy_status(&mgmt)["revocation"]["handledRequest"] == "west").await;
    let st = policy_status(&mgmt);
    assert_eq!(st["revocation"]["revoked"][0]["cluster"], "west", "{st}");
    assert_eq!(st["revocation"]["revoked"][0]["reason"], "keyCompromise");
    // The next pass comes before the root's CRL needs re-signing, not in 27 days.
    let (next, crl_next) = (st["nextCheck"].as_str().unwrap(), st["revocation"]["crlNextUpdate"].as_str().unwrap());
    assert!(next < crl_next, "next check {next} must come before the CRL's nextUpdate {crl_next}");
    let new_west = cacerts_at(&cs[1], now);
    assert_ne!(new_west.ca_cert(), old_west.ca_cert(), "west must get a new intermediate");
    let crl = |s: &ApiServer| s.get(SECRETS, "istio-system", "cacerts").unwrap()["data"]["ca-crl.pem"].clone();
    assert!(crl(&cs[0]).is_string());
    assert!(crl(&cs[0]) == crl(&cs[1]) && crl(&cs[1]) == crl(&cs[2]), "every cluster carries the same set");
    // East and south refuse what west's old intermediate signed; accept the others.
    for server in [&cs[0], &cs[2]] {
        let e = accepted_by(server, &old_leaf, now).unwrap_err();
        assert!(e.contains("revoked"), "{e}");
        accepted_by(server, &leaf_of(&new_west, now), now).unwrap();
        accepted_by(server, &east_leaf, now).unwrap();
    }
    let revoked_events = |m: &ApiServer| m.list(EVENTS).iter().filter(|e| e["reason"] == "Revoked").count();
    wait_for("a Revoked event", || revoked_events(&mgmt) == 1).await;

    // The same value again (a status write, a requeue) revokes nothing more.
    let writes_of_west = new_west.ca_cert().clone();
    let mut cr = mgmt.get(POLICIES, "gloo-mesh", "root-trust-policy").unwrap();
    cr["metadata"]["labels"] = json!({"touched": "yes"});
    mgmt.put(POLICIES, "gloo-mesh", cr);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(cacerts_at(&cs[1], now).ca_cert(), &writes_of_west);
    assert_eq!(policy_status(&mgmt)["revocation"]["revoked"].as_array().unwrap().len(), 1);

    // A new nonce revokes west's current CA too; a bad reason is reported, nothing revoked.
    annotate("west@2");
    wait_for("second revocation", || policy_status(&mgmt)["revocation"]["handledRequest"] == "west@2").await;
    assert_eq!(policy_status(&mgmt)["revocation"]["revoked"].as_array().unwrap().len(), 2);
    let text = metrics.render();
    let p = r#"policy="gloo-mesh/root-trust-policy",cluster="west""#;
    let revocations = series(&text, "meshca_revocations_total", &format!(r#"{p},reason="keyCompromise""#));
    assert_eq!(revocations, Some(2.0), "{text}");
    assert_eq!(series(&text, "meshca_rotations_total", &format!(r#"{p},reason="revoked""#)), Some(2.0), "{text}");
    let mut cr = mgmt.get(POLICIES, "gloo-mesh", "root-trust-policy").unwrap();
    cr["metadata"]["annotations"] =
        json!({ controller::REVOKE_ANNOTATION: "east@3", controller::REVOKE_REASON_ANNOTATION: "because" });
    mgmt.put(POLICIES, "gloo-mesh", cr);
    // Reported (a note and an InvalidRevocation Event) and ignored: the policy is still served.
    wait_for("the bad request noted", || {
        policy_status(&mgmt)["notes"].to_string().contains("meshca.dev/revoke-reason")
    })
    .await;
    assert_eq!(policy_status(&mgmt)["state"], "ACCEPTED", "{}", policy_status(&mgmt));
    assert_eq!(policy_status(&mgmt)["revocation"]["revoked"].as_array().unwrap().len(), 2, "nothing more revoked");
    wait_for("an InvalidRevocation event", || mgmt.list(EVENTS).iter().any(|e| e["reason"] == "InvalidRevocation"))
        .await;
    controller.stop(Duration::from_secs(10)).await;
    assert_shipped_rbac_allows(&mgmt.log());
}

/// One HTTP/1.1 GET over a socket: (status code, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let path = path.to_owned();
    let text = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: meshca\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    })
    .await
    .unwrap();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// The value of the series `name{labels}` in an OpenMetrics text.
fn series(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_metrics_and_trust_state_are_scraped_over_http() {
    let (mgmt, root) = mgmt_with_root().await;
    let cs = servers(2).await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &cs[0]));
    mgmt.put(SECRETS, "istio-system", remote_secret("west", &cs[1]));
    // istiod in east publishes the root it loaded, as it does in every namespace; west has none.
    let root_pem = String::from_utf8(root.bundle().root().to_pem().into_bytes()).unwrap();
    cs[0].put(
        apiserver::CONFIGMAPS,
        "istio-system",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio-ca-root-cert"}, "data": {"root-cert.pem": root_pem}}),
    );
    // A third cluster whose API server is gone: its failures are counted.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let kc = cs[0].kubeconfig("gone").replace(&cs[0].url, &format!("http://{dead}"));
    let files: Files = [("gone", kc.into_bytes())].into_iter().collect();
    mgmt.put(
        SECRETS,
        "istio-system",
        secret_json("istio-remote-secret-gone", &files, &[("istio/multiCluster", "true")]),
    );
    mgmt.put(POLICIES, "gloo-mesh", policy_cr(30));
    let mut cfg = controller::ControllerConfig::new("replica-a");
    cfg.timeout = Duration::from_secs(3);
    let metrics = cfg.metrics.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(meshca_kube::metrics::serve(listener, metrics));
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    let controller = start_controller(mgmt.client(), cfg);
    wait_for("status FAILED for gone", || policy_status(&mgmt)["state"] == "FAILED").await;
    let st = policy_status(&mgmt);
    assert_eq!(st["clusters"]["gone"]["action"], "failed", "{st}");
    assert_eq!(st["clusters"]["gone"]["error"], "store", "{st}");
    assert_eq!(st["clusters"]["east"]["action"], "issued", "{st}");
    assert_eq!(st["clusters"]["east"]["trust"], "in-sync", "{st}");
    assert_eq!(st["clusters"]["west"]["trust"], "unobserved", "{st}");
    let mut ready = http_get(addr, "/readyz").await;
    for _ in 0..50 {
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = http_get(addr, "/readyz").await;
    }
    assert_eq!(ready.0, 200, "{}", ready.1);

    let (code, text) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200);
    let now = OffsetDateTime::now_utc();
    let p = r#"policy="gloo-mesh/root-trust-policy""#;
    for (i, cluster) in ["east", "west"].iter().enumerate() {
        let b = cacerts_at(&cs[i], now);
        let at = |n: &str| series(&text, n, &format!(r#"{p},cluster="{cluster}""#));
        assert_eq!(at("meshca_ca_not_after_timestamp_seconds"), Some(b.not_after().unix_timestamp() as f64), "{text}");
        let rotate_at: OffsetDateTime = b.not_after() - (b.not_after() - b.ca_cert().not_before()) * 0.1;
        assert_eq!(at("meshca_ca_next_rotation_timestamp_seconds"), Some(rotate_at.unix_timestamp() as f64), "{text}");
        let issued = series(&text, "meshca_rotations_total", &format!(r#"{p},cluster="{cluster}",reason="missing""#));
        assert_eq!(issued, Some(1.0), "{text}");
    }
    assert_eq!(
        series(&text, "meshca_cluster_trust_in_sync", &format!(r#"{p},cluster="east",state="in-sync""#)),
        Some(1.0)
    );
    assert_eq!(
        series(&text, "meshca_cluster_trust_in_sync", &format!(r#"{p},cluster="west",state="unobserved""#)),
        Some(0.0)
    );
    let fp = root.bundle().root().fingerprint_sha256();
    assert_eq!(
        series(&text, "meshca_root_not_after_timestamp_seconds", &format!(r#"{p},fingerprint="{fp}""#)),
        Some(root.bundle().root().not_after().unix_timestamp() as f64),
        "{text}"
    );
    assert_eq!(series(&text, "meshca_root_rotation_phase", &format!(r#"{p},phase="NotRotating""#)), Some(1.0));
    assert_eq!(series(&text, "meshca_root_rotation_phase", &format!(r#"{p},phase="AddingNewRoot""#)), Some(0.0));
    let errors = series(&text, "meshca_reconcile_errors_total", &format!(r#"{p},cluster="gone",reason="store""#));
    assert!(errors.is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(series(&text, "meshca_ca_not_after_timestamp_seconds", &format!(r#"{p},cluster="gone""#)), None);
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");

    controller.stop(Duration::from_secs(10)).await;
    assert_shipped_rbac_allows(&mgmt.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_repair_a_deleted_or_tampered_cacerts_and_follow_remote_secrets_within_seconds() {
    let (mgmt, _) = mgmt_with_root().await;
    let cs = servers(3).await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &cs[0]));
    mgmt.put(SECRETS, "istio-system", remote_secret("west", &cs[1]));
    // 30-day CAs: the planned requeue is weeks away, so only a watch can explain a repair.
    mgmt.put(POLICIES, "gloo-mesh", policy_cr(30));
    let mut cfg = controller::ControllerConfig::new("replica-a");
    // Watches the server ends every 3 s (timeoutSeconds), resumed from their resourceVersion.
    cfg.timeout = Duration::from_secs(4);
    let controller = start_controller(mgmt.client(), cfg);
    wait_for("status ACCEPTED", || policy_status(&mgmt)["state"] == "ACCEPTED").await;
    let now = OffsetDateTime::now_utc();
    let cacerts = |s: &ApiServer| s.get(SECRETS, "istio-system", "cacerts");

    // Idle, with the watches closed by the server every few seconds: no writes at all, over
    // two resumptions of the policy watch.
    let writes = (mgmt.writes(), cs[0].writes(), cs[1].writes());
    let p = watches(&mgmt, "roottrustpolicies");
    wait_for("the policy watch resumed twice", || watches(&mgmt, "roottrustpolicies") >= p + 2).await;
    assert_eq!((mgmt.writes(), cs[0].writes(), cs[1].writes()), writes, "no reconcile storm while idle");

    // Deleted: rewritten within seconds, by a pass over east alone (west sees no request but
    // its watch's).
    let before = cacerts_at(&cs[0], now);
    let calls = |s: &ApiServer, from: usize| s.log()[from..].iter().filter(|l| !l.contains("watch=true")).count();
    let west_log = cs[1].log().len();
    // Two events follow: the deletion's, then the rewrite's.
    let delivered = cs[0].delivered() + 2;
    cs[0].delete(SECRETS, "istio-system", "cacerts");
    wait_for("east's cacerts rewritten", || cacerts(&cs[0]).is_some()).await;
    assert_eq!(calls(&cs[1], west_log), 0, "west untouched: {:?}", &cs[1].log()[west_log..]);
    let after = cacerts_at(&cs[0], now);
    assert_ne!(after.ca_cert(), before.ca_cert(), "a new intermediate");
    // Our own write came back as an event and caused nothing more: once the event was handed
    // to the controller's watch, no write follows while the policy watch resumes once more.
    let settled = cs[0].writes();
    wait_for("the rewrite's event delivered", || cs[0].delivered() >= delivered).await;
    let p = watches(&mgmt, "roottrustpolicies");
    wait_for("the policy watch resumed", || watches(&mgmt, "roottrustpolicies") > p).await;
    assert_eq!(cs[0].writes(), settled, "a write of ours does not trigger another pass");

    // Tampered (managed label kept, data edited by hand): replaced by a valid bundle.
    let mut tampered = cacerts(&cs[1]).unwrap();
    tampered["data"]["ca-cert.pem"] = json!("bm90IGEgY2VydGlmaWNhdGU=");
    cs[1].put(SECRETS, "istio-system", tampered);
    wait_for("west's cacerts repaired", || {
        Cacerts::from_files(&files_of(&cacerts(&cs[1]).unwrap()), OffsetDateTime::now_utc()).is_ok()
    })
    .await;

    // A new remote secret: the cluster is issued at once, by a pass over it alone; a removed
    // one leaves the status, and costs the other clusters nothing. (Before a cluster fails
    // below: a failed cluster's retries are passes over every cluster.)
    let (east_log, west_log) = (cs[0].log().len(), cs[1].log().len());
    mgmt.put(SECRETS, "istio-system", remote_secret("south", &cs[2]));
    wait_for("south issued", || cacerts(&cs[2]).is_some()).await;
    wait_for("south in the status", || policy_status(&mgmt)["clusters"].get("south").is_some()).await;
    assert_eq!(calls(&cs[0], east_log), 0, "east untouched: {:?}", &cs[0].log()[east_log..]);
    assert_eq!(calls(&cs[1], west_log), 0, "west untouched: {:?}", &cs[1].log()[west_log..]);
    let (east_log, south_log) = (cs[0].log().len(), cs[2].log().len());
    mgmt.delete(SECRETS, "istio-system", "istio-remote-secret-west");
    wait_for("west gone from status", || policy_status(&mgmt)["clusters"].get("west").is_none()).await;
    assert!(policy_status(&mgmt)["clusters"].get("east").is_some(), "east's row kept");
    assert_eq!(calls(&cs[0], east_log), 0, "east untouched: {:?}", &cs[0].log()[east_log..]);
    assert_eq!(calls(&cs[2], south_log), 0, "south untouched: {:?}", &cs[2].log()[south_log..]);

    // Unmanaged (no label): reported, never replaced.
    let mut by_hand = cacerts(&cs[0]).unwrap();
    by_hand["metadata"]["labels"] = json!({});
    by_hand["data"]["ca-cert.pem"] = json!("bm90IGEgY2VydGlmaWNhdGU=");
    cs[0].put(SECRETS, "istio-system", by_hand.clone());
    wait_for("east reported as not managed", || policy_status(&mgmt)["clusters"]["east"]["error"] == "not-managed")
        .await;
    assert_eq!(cacerts(&cs[0]).unwrap()["data"], by_hand["data"], "an unmanaged cacerts is left alone");

    controller.stop(Duration::from_secs(10)).await;
    assert_shipped_rbac_allows(&mgmt.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_signing_ca_is_noticed_by_its_watch() {
    let (mgmt, _) = mgmt_with_root().await;
    let cs = servers(1).await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &cs[0]));
    mgmt.put(POLICIES, "gloo-mesh", policy_cr(30));
    let mut cfg = controller::ControllerConfig::new("replica-a");
    cfg.timeout = Duration::from_secs(4);
    let controller = start_controller(mgmt.client(), cfg);
    wait_for("status ACCEPTED", || policy_status(&mgmt)["state"] == "ACCEPTED").await;
    // The namespace watch starts when the policy first names the Secret: wait for its watch.
    wait_for("the signer's namespace watched", || watches(&mgmt, "/namespaces/gloo-mesh/secrets") > 0).await;
    let mut p = RootParams::default();
    p.common_name = "Root CA 2".into();
    let new = SigningCa::generate_root(&p, &mut meshca::OsRng, OffsetDateTime::now_utc()).unwrap();
    let mut signer = mgmt.get(SECRETS, "gloo-mesh", SIGNER).unwrap();
    signer["data"] = secret_json(SIGNER, &new.bundle().to_files(Layout::Istio), &[])["data"].clone();
    mgmt.put(SECRETS, "gloo-mesh", signer);
    wait_for("east re-issued under the new root", || {
        cs[0].get(SECRETS, "istio-system", "cacerts").is_some_and(|s| {
            Cacerts::from_files(&files_of(&s), OffsetDateTime::now_utc()).is_ok_and(|b| b.root() == new.bundle().root())
        })
    })
    .await;
    controller.stop(Duration::from_secs(10)).await;
    assert_shipped_rbac_allows(&mgmt.log());
}

/// Runs the whole policy (root rotation included) off the async workers: the phase it ends in.
async fn run_phase(store: KubeStore, text: &str, clusters: &[&str], now: OffsetDateTime) -> String {
    let pol = policy::parse(text, "policy.yaml").unwrap();
    let opts = Options::new(now, clusters.iter().map(|c| (*c).to_owned()).collect());
    tokio::task::spawn_blocking(move || {
        match reconcile::run(&store, &pol, &opts, &mut meshca::OsRng, &mut |_, _| {}).unwrap() {
            reconcile::Run::RootRotation(r) => r.now_phase.to_string(),
            reconcile::Run::Reconciled(_) => "NotRotating".into(),
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_rotation_step_waits_until_istiod_publishes_the_roots_meshca_wrote() {
    let (mgmt, old) = mgmt_with_root().await;
    let mut p = RootParams::default();
    p.common_name = "Root CA 2".into();
    let new = SigningCa::generate_root(&p, &mut meshca::OsRng, OffsetDateTime::now_utc()).unwrap();
    mgmt.put(SECRETS, "gloo-mesh", secret_json("new-ca", &new.bundle().to_files(Layout::Istio), &[]));
    let cs = servers(2).await;
    let plain = policy::SEED_POLICY.replace("ttlDays: 1", "ttlDays: 30");
    let now = OffsetDateTime::now_utc();
    let store = || store_for(&mgmt, &[("east", &cs[0]), ("west", &cs[1])]);
    assert!(run(store(), &plain, &["east", "west"], now).await.ok());
    // istiod in east publishes what it loaded: the old root only, for now. West has no istiod.
    let publish = |roots: &[&meshca::Certificate]| {
        let pem: String = roots.iter().map(|r| r.to_pem()).collect();
        cs[0].put(
            apiserver::CONFIGMAPS,
            "istio-system",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio-ca-root-cert"}, "data": {"root-cert.pem": pem}}),
        );
    };
    publish(&[old.bundle().root()]);
    let rotating = plain.replace(
        "    mgmtServerCa:",
        "    rootRotation:\n      newMgmtServerCa:\n        secretRef:\n          name: new-ca\n      dwellHours: 0\n    mgmtServerCa:",
    );
    // The new root is added everywhere, but east's istiod has not loaded it: the step holds.
    for _ in 0..2 {
        assert_eq!(run_phase(store(), &rotating, &["east", "west"], now).await, "AddingNewRoot");
    }
    assert_eq!(cacerts_at(&cs[0], now).roots().len(), 2, "the bundle carries both roots");
    // istiod reloads (both roots published): the rotation moves on.
    let both = cacerts_at(&cs[0], now);
    publish(&both.roots().iter().collect::<Vec<_>>());
    let phase = run_phase(store(), &rotating, &["east", "west"], now).await;
    assert_ne!(phase, "AddingNewRoot", "moves on once istiod loaded the new root");
    // This step's bundles are written and east's istiod loads them; with
    // waitForUnobservedIstiod, west (no istio-ca-root-cert) still holds the step.
    let waiting = rotating.replace("  config:\n", "  config:\n    waitForUnobservedIstiod: true\n");
    assert_ne!(waiting, rotating);
    assert_eq!(run_phase(store(), &waiting, &["east", "west"], now).await, phase, "east's istiod is behind");
    let now_roots = cacerts_at(&cs[0], now);
    publish(&now_roots.roots().iter().collect::<Vec<_>>());
    let held = run_phase(store(), &waiting, &["east", "west"], now).await;
    assert_eq!(held, phase, "west's unobserved istiod holds the step");
    // Without it (the default), west does not hold it.
    assert_ne!(run_phase(store(), &rotating, &["east", "west"], now).await, phase);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_signs_through_a_token_with_the_pin_in_a_secret() {
    let Some(hsm) = softhsm::softhsm("controller_signs_through_a_token_with_the_pin_in_a_secret") else { return };
    use meshca_ops::pkcs11::{KeyAccess, KeyUri, Pin, TokenKey};
    let token = hsm.new_token("controller");
    let uri = format!("pkcs11:token={token};object=root-ca");
    let access = KeyAccess {
        module: hsm.module.clone(),
        uri: KeyUri::parse(&uri).unwrap(),
        pin: Pin::new(softhsm::PIN).unwrap(),
    };
    let key = TokenKey::generate(&access, meshca::KeyAlgorithm::EcdsaP256).unwrap();
    let now = OffsetDateTime::now_utc();
    let root = SigningCa::generate_root_with_key(&RootParams::default(), key, &mut meshca::OsRng, now).unwrap();
    let mgmt = ApiServer::start().await;
    let public = root.bundle().to_files(Layout::Istio);
    assert!(!public.contains(meshca::CA_KEY));
    mgmt.put(SECRETS, "gloo-mesh", secret_json(SIGNER, &public, &[]));
    let pin_secret = |pin: &str| secret_json("hsm-pin", &[("pin", pin)].into_iter().collect(), &[]);
    mgmt.put(SECRETS, "gloo-mesh", pin_secret("wrong-pin-1234"));
    let east = ApiServer::start().await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &east));
    let mut cr = policy_cr(30);
    cr["spec"]["config"]["mgmtServerCa"]["pkcs11"] = json!({"uri": uri, "pinSecretRef": {"name": "hsm-pin"}});
    mgmt.put(POLICIES, "gloo-mesh", cr);

    let mut cfg = controller::ControllerConfig::new("replica-a");
    cfg.token = reconcile::TokenAccess::new(Some(hsm.module.clone()), None);
    let controller = start_controller(mgmt.client(), cfg);

    // A PIN the token refuses: reported as the signing key being unavailable, no cluster touched.
    wait_for("FAILED", || policy_status(&mgmt)["state"] == "FAILED").await;
    let st = policy_status(&mgmt);
    assert_eq!(st["conditions"][0]["reason"], "SigningKeyUnavailable", "{st}");
    let message = st["message"].as_str().unwrap();
    assert!(message.contains("CKR_PIN_INCORRECT") && !message.contains("wrong-pin-1234"), "{message}");
    assert!(east.get(SECRETS, "istio-system", "cacerts").is_none(), "nothing written with the token unavailable");

    // The right PIN in the Secret (and the policy touched, so it is looked at now).
    mgmt.put(SECRETS, "gloo-mesh", pin_secret(&format!("{}\n", softhsm::PIN)));
    let mut cr = mgmt.get(POLICIES, "gloo-mesh", "root-trust-policy").unwrap();
    cr["metadata"]["annotations"] = json!({"touched": "1"});
    mgmt.put(POLICIES, "gloo-mesh", cr);
    wait_for("ACCEPTED", || policy_status(&mgmt)["state"] == "ACCEPTED").await;
    let bundle = cacerts_at(&east, OffsetDateTime::now_utc());
    assert_eq!(bundle.root(), root.bundle().root());
    bundle.ca_cert().verify_signed_by(root.bundle().root()).unwrap();
    let signer = mgmt.get(SECRETS, "gloo-mesh", SIGNER).unwrap();
    assert!(!files_of(&signer).contains(meshca::CA_KEY), "the signer Secret still holds no key");

    controller.stop(Duration::from_secs(10)).await;
}

fn vault_cr(vault: Value) -> Value {
    let mut cr = policy_cr(30);
    cr["spec"]["config"]["mgmtServerCa"] = json!({ "vault": vault });
    cr
}

/// Touches the policy (an annotation), so the controller looks at it now.
fn touch(mgmt: &ApiServer, n: u32) {
    let mut cr = mgmt.get(POLICIES, "gloo-mesh", "root-trust-policy").unwrap();
    cr["metadata"]["annotations"] = json!({ "touched": n.to_string() });
    mgmt.put(POLICIES, "gloo-mesh", cr);
}

/// The controller with OpenBao's PKI signing every cluster intermediate, logged in with the
/// Kubernetes auth method: OpenBao reviews the controller's service account token with the
/// (in-crate) management API server's TokenReview.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_signs_through_openbao_logged_in_as_its_service_account() {
    let Some(bao) =
        meshca_testkit::bao::Bao::start("controller_signs_through_openbao_logged_in_as_its_service_account")
    else {
        return;
    };
    let root = meshca::parse_certificates(bao.pki_root("pki", "Bao Root").as_bytes(), "root").unwrap().remove(0);
    let mgmt = ApiServer::start().await;
    bao.kubernetes_auth(&mgmt.url, "gloo-mesh", "meshca", "pki");
    let cs = servers(2).await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &cs[0]));
    mgmt.put(SECRETS, "istio-system", remote_secret("west", &cs[1]));
    mgmt.put(POLICIES, "gloo-mesh", vault_cr(json!({"address": bao.addr, "auth": {"kubernetes": {"role": "meshca"}}})));
    // The pod's token file: first one that claims the right service account but that the API
    // server does not vouch for (its signature altered).
    let dir = meshca_testkit::tempdir("kube-vault");
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{}x", mgmt.service_account_token("gloo-mesh", "meshca"))).unwrap();

    let mut cfg = controller::ControllerConfig::new("replica-a");
    cfg.provider.service_account_token = Some(token_file.clone());
    let metrics = cfg.metrics.clone();
    let controller = start_controller(mgmt.client(), cfg);

    // The API server's TokenReview says no, so OpenBao refuses the login: the signing key is
    // unavailable, nothing is written, and the provider's reason is counted.
    wait_for("FAILED", || policy_status(&mgmt)["state"] == "FAILED").await;
    let st = policy_status(&mgmt);
    assert_eq!(st["conditions"][0]["reason"], "SigningKeyUnavailable", "{st}");
    assert!(st["message"].as_str().unwrap().contains("login (Kubernetes)"), "{st}");
    assert!(cs[0].get(SECRETS, "istio-system", "cacerts").is_none());
    let text = metrics.render();
    assert_eq!(
        series(
            &text,
            "meshca_provider_errors_total",
            r#"policy="gloo-mesh/root-trust-policy",cluster="",reason="permission-denied""#
        )
        .map(|v| v >= 1.0),
        Some(true),
        "{text}"
    );
    assert!(mgmt.log().iter().any(|l| l.contains("tokenreviews")), "OpenBao asked the API server");

    // The controller's own service account token: signed by the PKI, checked, written.
    std::fs::write(&token_file, mgmt.service_account_token("gloo-mesh", "meshca")).unwrap();
    touch(&mgmt, 1);
    wait_for("ACCEPTED", || policy_status(&mgmt)["state"] == "ACCEPTED").await;
    let now = OffsetDateTime::now_utc();
    let bundles = [cacerts_at(&cs[0], now), cacerts_at(&cs[1], now)];
    for b in &bundles {
        assert_eq!(b.roots(), std::slice::from_ref(&root));
        assert_eq!(b.cert_chain().last(), Some(&root));
    }
    meshca_ops::mtls::handshake_all_pairs(&[("east", &bundles[0]), ("west", &bundles[1])], &mut meshca::OsRng, now)
        .unwrap();
    let kept = files_of(&mgmt.get(SECRETS, "gloo-mesh", "root-trust-policy.gloo-mesh").unwrap());
    assert!(!kept.contains(meshca::CA_KEY) && kept.contains(meshca::CA_CERT), "the PKI's public issuer files only");

    // Sealed: the clusters that need no signature are kept; one whose cacerts is deleted needs
    // one and fails, typed, and gets nothing.
    bao.seal();
    cs[0].delete(SECRETS, "istio-system", "cacerts");
    touch(&mgmt, 2);
    // The pass the deletion asks for covers east alone; the one the touch asks for, both.
    wait_for("east failed, west kept", || {
        let st = policy_status(&mgmt);
        st["clusters"]["east"]["action"] == "failed" && st["clusters"]["west"]["action"] == "kept"
    })
    .await;
    let st = policy_status(&mgmt);
    assert!(st["clusters"]["east"]["reason"].as_str().unwrap().contains("sealed"), "{st}");
    assert_eq!(st["clusters"]["west"]["action"], "kept", "{st}");
    assert!(cs[0].get(SECRETS, "istio-system", "cacerts").is_none());
    let text = metrics.render();
    assert!(
        series(
            &text,
            "meshca_provider_errors_total",
            r#"policy="gloo-mesh/root-trust-policy",cluster="",reason="sealed""#
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );

    controller.stop(Duration::from_secs(10)).await;
}

/// The controller keeping a management intermediate OpenBao signed (its key in a Secret beside
/// the policy), logged in with a token from a Secret, and signing the clusters itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_keeps_a_management_intermediate_signed_by_openbao() {
    let Some(bao) = meshca_testkit::bao::Bao::start("controller_keeps_a_management_intermediate_signed_by_openbao")
    else {
        return;
    };
    let root = meshca::parse_certificates(bao.pki_root("pki", "Bao Root").as_bytes(), "root").unwrap().remove(0);
    let token = bao.meshca_token("pki");
    let mgmt = ApiServer::start().await;
    let east = ApiServer::start().await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &east));
    mgmt.put(SECRETS, "gloo-mesh", secret_json("bao-token", &[("token", token.as_str())].into_iter().collect(), &[]));
    mgmt.put(
        POLICIES,
        "gloo-mesh",
        vault_cr(json!({
            "address": bao.addr, "signs": "managementIntermediate", "ttlDays": 90,
            "auth": {"tokenSecretRef": {"name": "bao-token", "key": "token"}},
        })),
    );
    let cfg = controller::ControllerConfig::new("replica-a");
    let controller = start_controller(mgmt.client(), cfg);
    wait_for("ACCEPTED", || policy_status(&mgmt)["state"] == "ACCEPTED").await;
    let now = OffsetDateTime::now_utc();
    let m =
        SigningCa::from_files(&files_of(&mgmt.get(SECRETS, "gloo-mesh", "root-trust-policy.gloo-mesh").unwrap()), now)
            .unwrap();
    assert_eq!(m.bundle().root(), &root);
    let b = cacerts_at(&east, now);
    assert_eq!(b.cert_chain(), &[b.ca_cert().clone(), m.bundle().ca_cert().clone(), root.clone()]);
    let st = policy_status(&mgmt);
    assert!(st.to_string().contains("renewed"), "the status notes the management intermediate: {st}");
    assert!(!st.to_string().contains(&token));
    controller.stop(Duration::from_secs(10)).await;
}

/// An idle controller's watch is ended by the server before the client's per-call read timeout
/// would cut it (the "watch stream failed ... error reading a body" every 20 s of #14), and is
/// resumed from its resourceVersion without a re-list or a reconcile: no writes while idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watch_is_resumed_quietly_within_the_call_timeout() {
    assert_eq!(controller::watch_timeout(Duration::from_secs(20)), 15);
    assert_eq!(controller::watch_timeout(Duration::from_secs(2)), 1);
    assert_eq!(controller::watch_timeout(Duration::from_secs(3600)), 290);
    let (mgmt, _) = mgmt_with_root().await;
    let east = ApiServer::start().await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &east));
    mgmt.put(POLICIES, "gloo-mesh", policy_cr(30));
    let mut cfg = controller::ControllerConfig::new("replica-a");
    cfg.timeout = Duration::from_secs(2);
    let controller = start_controller(mgmt.client(), cfg);
    wait_for("ACCEPTED", || policy_status(&mgmt)["state"] == "ACCEPTED").await;
    // The pass that wrote ACCEPTED has published its Events by the time the first watch ends.
    wait_for("the first policy watch", || watches(&mgmt, "roottrustpolicies") >= 1).await;
    let (writes, east_writes) = (mgmt.writes(), east.writes());
    // The server ends each watch after a second: wait for three of them.
    wait_for("three policy watches", || watches(&mgmt, "roottrustpolicies") >= 3).await;
    let watches: Vec<String> =
        mgmt.log().into_iter().filter(|l| l.contains("roottrustpolicies") && l.contains("watch=true")).collect();
    assert!(watches.len() >= 3, "the watch was resumed after each server-side end: {watches:?}");
    assert!(watches.iter().all(|l| l.contains("timeoutSeconds=1")), "{watches:?}");
    let lists = mgmt
        .log()
        .into_iter()
        .filter(|l| l.starts_with("GET") && l.contains("roottrustpolicies") && !l.contains("watch=true"))
        .count();
    assert_eq!(lists, 1, "resumed from the resourceVersion, not re-listed");
    assert_eq!((mgmt.writes(), east.writes()), (writes, east_writes), "no reconcile while idle");
    controller.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_drives_a_root_rotation_named_in_the_policy() {
    let (mgmt, old) = mgmt_with_root().await;
    let mut p = RootParams::default();
    p.common_name = "Root CA 2".into();
    let new = SigningCa::generate_root(&p, &mut meshca::OsRng, OffsetDateTime::now_utc()).unwrap();
    mgmt.put(SECRETS, "gloo-mesh", secret_json("new-ca", &new.bundle().to_files(Layout::Istio), &[]));
    let cs = servers(2).await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &cs[0]));
    mgmt.put(SECRETS, "istio-system", remote_secret("west", &cs[1]));
    // The clusters start under the old root; then the policy names the new CA (no dwell, so
    // the test does not wait a day between steps).
    let store = store_for(&mgmt, &[("east", &cs[0]), ("west", &cs[1])]);
    let report = run(store, &policy::SEED_POLICY.replace("ttlDays: 1", "ttlDays: 30"), &["east", "west"], {
        OffsetDateTime::now_utc()
    })
    .await;
    assert!(report.ok(), "{report:?}");
    let mut cr = policy_cr(30);
    cr["spec"]["config"]["rootRotation"] =
        json!({"newMgmtServerCa": {"secretRef": {"name": "new-ca"}}, "dwellHours": 0});
    mgmt.put(POLICIES, "gloo-mesh", cr);

    let controller = start_controller(mgmt.client(), controller::ControllerConfig::new("replica-a"));
    let notes = |m: &ApiServer, reason: &str| -> Vec<String> {
        m.list(EVENTS)
            .iter()
            .filter(|e| e["reason"] == reason)
            .map(|e| e["note"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    wait_for("RootRotationComplete", || !notes(&mgmt, "RootRotationComplete").is_empty()).await;
    assert_eq!(notes(&mgmt, "RootRotationStarted").len(), 1);
    for (reason, want) in [
        (
            "RootRotationPropagatingIntermediates",
            "AddingNewRoot -> PropagatingIntermediates (PROPAGATING_NEW_INTERMEDIATE)",
        ),
        ("RootRotationDeletingOldRoot", "PropagatingIntermediates -> DeletingOldRoot (DELETING_OLD_ROOT)"),
        ("RootRotationComplete", "DeletingOldRoot -> Complete (FINISHED)"),
    ] {
        let got = notes(&mgmt, reason).join("\n");
        assert!(got.contains(want) && got.contains("CN=Root CA,O=Istio -> CN=Root CA 2,O=Istio"), "{reason}: {got}");
    }
    // Then the usual loop takes over, signing with the new CA.
    wait_for("NOT_ROTATING", || policy_status(&mgmt)["rotation"]["state"] == "NOT_ROTATING").await;
    let st = policy_status(&mgmt);
    assert_eq!(st["state"], "ACCEPTED", "{st}");
    assert!(st["rotation"]["phase"].is_null(), "the finished rotation's fields are cleared: {st}");
    assert_eq!(
        st["rotation"]["phases"],
        json!(["AddingNewRoot", "PropagatingIntermediates", "DeletingOldRoot", "Complete"]),
        "every phase reached is in status, over all passes: {st}"
    );
    assert!(st["notes"].to_string().contains("point spec.config.mgmtServerCa at it"), "{st}");
    let now = OffsetDateTime::now_utc();
    for c in &cs {
        let b = cacerts_at(c, now);
        assert_eq!(b.roots(), std::slice::from_ref(new.bundle().root()));
        assert_eq!(b.root(), new.bundle().root());
    }
    // The user's signer Secret was not touched; the rotation's state lives beside the policy.
    let signer = files_of(&mgmt.get(SECRETS, "gloo-mesh", SIGNER).unwrap());
    assert_eq!(signer.get(meshca::ROOT_CERT).unwrap(), old.bundle().root().to_pem().as_bytes());
    assert_shipped_rbac_allows(&mgmt.log());
    let state = mgmt.get(SECRETS, "gloo-mesh", "root-trust-policy-root-rotation").unwrap();
    assert!(String::from_utf8(files_of(&state).get("state.json").unwrap().to_vec()).unwrap().contains("Complete"));
    controller.stop(Duration::from_secs(10)).await;
}

/// Every request in `log` is one deploy/'s management-cluster RBAC (controller/controller.yaml
/// and access.yaml) grants the controller's service account.
fn assert_shipped_rbac_allows(log: &[String]) {
    rbac::assert_allows(&rbac::rules(&["controller/controller.yaml", "access.yaml"], "meshca-controller"), log);
}

#[test]
fn the_crd_is_valid_yaml_for_our_resource() {
    let yaml = meshca_kube::crd::crd_yaml();
    let crd: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(crd["spec"]["group"], meshca_kube::crd::GROUP);
    assert_eq!(crd["spec"]["names"]["plural"], meshca_kube::crd::PLURAL);
    assert_eq!(crd["spec"]["versions"][0]["name"], meshca_kube::crd::VERSION);
    let props = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["config"]
        ["properties"];
    let ttl = &props["intermediateCertOptions"]["properties"]["ttlDays"];
    assert_eq!(ttl["minimum"].as_f64(), Some(1.0), "the core's bounds");
    assert_eq!(ttl["maximum"].as_f64(), Some(meshca::bounds::CA_TTL_DAYS.1 as f64));
    let secret_ref = &props["mgmtServerCa"]["properties"]["secretRef"];
    assert_eq!(secret_ref["required"][0], "name");
    // Every Secret reference is the one type: the same fields and the same required name.
    for other in [
        &props["passiveCertificateAuthorities"]["items"]["properties"]["secretRef"],
        &props["rootRotation"]["properties"]["newMgmtServerCa"]["properties"]["secretRef"],
    ] {
        assert_eq!(other["properties"], secret_ref["properties"]);
        assert_eq!(other["required"], secret_ref["required"]);
    }
    assert_eq!(crd["spec"]["versions"][0]["subresources"]["status"], json!({}));
    // The committed deploy/crd.yaml is exactly what `meshca crd` prints.
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/crd.yaml")).unwrap();
    assert_eq!(committed, yaml, "deploy/crd.yaml is stale: regenerate it with `meshca crd > deploy/crd.yaml`");
}

/// Checks `v` against a structural OpenAPI v3 schema the way the API server does, and more
/// strictly: a field the schema does not name is an error here (the API server would prune it
/// silently, and meshca would never see it).
fn structural_errors(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    if v.is_null() && schema["nullable"] == true {
        return;
    }
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "" => preserve,
        other => panic!("{path}: schema type {other} unknown to this check"),
    };
    if !ok {
        out.push(format!("{path}: expected {ty}, got {v}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            out.push(format!("{path}: {v} is not one of {allowed:?}"));
        }
    }
    if let Some(x) = v.as_f64() {
        let exclusive = |k: &str| schema[k] == true;
        if let Some(min) = schema["minimum"].as_f64() {
            if x < min || (exclusive("exclusiveMinimum") && x == min) {
                out.push(format!("{path}: {x} is below the minimum {min}"));
            }
        }
        if let Some(max) = schema["maximum"].as_f64() {
            if x > max || (exclusive("exclusiveMaximum") && x == max) {
                out.push(format!("{path}: {x} is above the maximum {max}"));
            }
        }
    }
    if let (Some(s), Some(max)) = (v.as_str(), schema["maxLength"].as_u64()) {
        if s.chars().count() as u64 > max {
            out.push(format!("{path}: longer than {max}"));
        }
    }
    if let Some(obj) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            if !obj.contains_key(r.as_str().unwrap_or("")) {
                out.push(format!("{path}: missing required {r}"));
            }
        }
        for (k, child) in obj {
            let sub = &schema["properties"][k];
            if !sub.is_null() {
                structural_errors(sub, child, &format!("{path}.{k}"), out);
            } else if schema["additionalProperties"].is_object() {
                structural_errors(&schema["additionalProperties"], child, &format!("{path}.{k}"), out);
            } else if !preserve {
                out.push(format!("{path}.{k}: not in the schema (the API server would drop it)"));
            }
        }
    }
    if let Some(items) = v.as_array() {
        for (i, item) in items.iter().enumerate() {
            structural_errors(&schema["items"], item, &format!("{path}[{i}]"), out);
        }
    }
}

fn policy_schema() -> Value {
    let crd: Value = serde_saphyr::from_str(&meshca_kube::crd::crd_yaml()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn the_derived_crd_accepts_the_seed_and_every_policy_under_testdata() {
    let schema = policy_schema();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/policies");
    let mut checked = vec![("seed", policy::SEED_POLICY.to_owned())];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        checked.push((Box::leak(p.display().to_string().into_boxed_str()), std::fs::read_to_string(&p).unwrap()));
    }
    assert!(checked.len() >= 4, "{checked:?}");
    for (name, text) in &checked {
        let mut v: Value = serde_saphyr::from_str(text).unwrap();
        // What the API server holds for the object: the body without apiVersion/kind/metadata checks.
        for k in ["apiVersion", "kind", "metadata"] {
            v.as_object_mut().unwrap().remove(k);
        }
        let mut errors = Vec::new();
        structural_errors(&schema, &v, "", &mut errors);
        assert!(errors.is_empty(), "{name}: {errors:?}");
        // And meshca's own parser agrees.
        policy::parse(text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn the_derived_crd_refuses_what_meshca_refuses() {
    let schema = policy_schema();
    let with = |config: Value| json!({"spec": {"config": config}});
    for (bad, why) in [
        (with(json!({"intermediateCertOptions": {"ttlDays": 0}})), "below the minimum"),
        (with(json!({"intermediateCertOptions": {"ttlDays": 36501}})), "above the maximum"),
        (with(json!({"intermediateCertOptions": {"secretRotationGracePeriodRatio": 1.0}})), "above the maximum"),
        (with(json!({"intermediateCertOptions": {"secretRotationGracePeriodRatio": 0}})), "below the minimum"),
        (with(json!({"intermediateCertOptions": {"rsaKeySizeBytes": 1024}})), "not one of"),
        (with(json!({"intermediateCertOptions": {"colour": "blue"}})), "not in the schema"),
        (with(json!({"rootRotation": {"dwellHours": 1}})), "missing required"),
        (with(json!({"mgmtServerCa": {"secretRef": {"namespace": "x"}}})), "missing required"),
    ] {
        let mut errors = Vec::new();
        structural_errors(&schema, &bad, "", &mut errors);
        assert!(errors.iter().any(|e| e.contains(why)), "{bad}: {errors:?}");
    }
    // The status the controller writes fits the schema too.
    let mut status = meshca_kube::crd::PolicyStatus::default();
    status.rotation = Some(meshca_kube::crd::RotationStatus::not_rotating());
    let mut errors = Vec::new();
    structural_errors(&schema, &json!({"spec": {"config": {}}, "status": status}), "", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
}

/// The same reconcile and verify against a real cluster. Set MESHCA_E2E_KUBECONFIG to a
/// kubeconfig whose current context is the management cluster, and MESHCA_E2E_CLUSTERS to
/// `name=context,...` for workload clusters (default: `cluster1=<current context>`). The signing
/// CA is created in gloo-mesh/my-root-trust-policy.gloo-mesh if absent; cacerts are written to
/// istio-system (which must exist) and are left there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs cluster"]
async fn e2e_against_a_real_cluster() {
    let Ok(path) = std::env::var("MESHCA_E2E_KUBECONFIG") else {
        panic!("set MESHCA_E2E_KUBECONFIG to run this test");
    };
    let path = std::path::PathBuf::from(path);
    let t = Duration::from_secs(30);
    let mgmt = clusters::client_for_context(Some(&path), None, t).await.unwrap();
    let spec = std::env::var("MESHCA_E2E_CLUSTERS").unwrap_or_default();
    let mut map = BTreeMap::new();
    map.insert("mgmt".to_owned(), mgmt.clone());
    let mut names = Vec::new();
    for pair in spec.split(',').filter(|s| !s.is_empty()) {
        let (name, ctx) = pair.split_once('=').unwrap();
        map.insert(name.to_owned(), clusters::client_for_context(Some(&path), Some(ctx), t).await.unwrap());
        names.push(name.to_owned());
    }
    if names.is_empty() {
        map.insert("cluster1".to_owned(), mgmt.clone());
        names.push("cluster1".to_owned());
    }
    let now = OffsetDateTime::now_utc();
    let store = KubeStore::new(tokio::runtime::Handle::current(), map);
    let text = policy::SEED_POLICY.replace(
        "secretRef:\n        name: my-root-trust-policy.gloo-mesh\n        namespace: gloo-mesh",
        "generated:\n        ttlDays: 3650",
    );
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let report = run(store, &text, &refs, now).await;
    assert!(report.ok(), "{report:?}");
}

/// `kubectl kustomize deploy/` (when kubectl is on PATH) renders the controller with the image,
/// namespace and replicas set where deploy/ says, and moves nothing else: the access in the
/// policies' and Istio's namespaces stays there, bound to the controller wherever it runs.
#[test]
fn the_manifests_render_with_kustomize_and_its_fields_take_effect() {
    let has_kubectl =
        std::process::Command::new("kubectl").arg("version").arg("--client").output().is_ok_and(|o| o.status.success());
    if !has_kubectl {
        eprintln!("SKIPPED kustomize render: no kubectl on PATH");
        return;
    }
    let src = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy"));
    let dir = std::env::temp_dir().join(format!("meshca-kustomize-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for f in
        ["kustomization.yaml", "crd.yaml", "access.yaml", "controller/kustomization.yaml", "controller/controller.yaml"]
    {
        std::fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let edit = |f: &str, from: &str, to: &str| {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(text.contains(from), "{f}: {from}");
        std::fs::write(dir.join(f), text.replace(from, to)).unwrap();
    };
    let render = || {
        let o = std::process::Command::new("kubectl").arg("kustomize").arg(&dir).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8(o.stdout).unwrap();
        text.split("\n---\n").map(|d| serde_saphyr::from_str::<Value>(d).unwrap()).collect::<Vec<Value>>()
    };
    let find = |docs: &[Value], kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{kind} {name}"))
    };
    let defaults = render();
    assert_eq!(
        find(&defaults, "Deployment", "meshca-controller")["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/meshca/meshca:0.1.0"
    );
    edit("kustomization.yaml", "newTag: 0.1.0", "newTag: 9.9.9");
    edit("kustomization.yaml", "count: 2", "count: 3");
    edit("controller/kustomization.yaml", "namespace: meshca-system", "namespace: platform-ca");
    let docs = render();
    let deploy = find(&docs, "Deployment", "meshca-controller");
    assert_eq!(deploy["spec"]["template"]["spec"]["containers"][0]["image"], "ghcr.io/meshca/meshca:9.9.9");
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(deploy["metadata"]["namespace"], "platform-ca");
    assert_eq!(find(&docs, "Namespace", "platform-ca")["kind"], "Namespace");
    assert_eq!(find(&docs, "Role", "meshca-leader-election")["metadata"]["namespace"], "platform-ca");
    for (role, ns) in [("meshca-signing-ca", "gloo-mesh"), ("meshca-remote-secrets", "istio-system")] {
        assert_eq!(find(&docs, "Role", role)["metadata"]["namespace"], ns);
        let binding = find(&docs, "RoleBinding", role);
        assert_eq!(binding["metadata"]["namespace"], ns);
        assert_eq!(binding["subjects"][0]["namespace"], "platform-ca", "{role} binds the moved ServiceAccount");
    }
    assert_eq!(find(&docs, "ClusterRoleBinding", "meshca-controller")["subjects"][0]["namespace"], "platform-ca");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The shipped alert rules: the structure Prometheus loads, every metric they name is one the
/// controller serves, and `promtool check rules` accepts them where promtool is installed.
#[test]
fn the_alert_rules_name_served_metrics_and_promtool_accepts_them() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/monitoring/meshca-alerts.yaml");
    let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let rules = doc["groups"][0]["rules"].as_array().unwrap();
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["MeshcaClusterCAExpiringSoon", "MeshcaRootExpiringSoon", "MeshcaClusterTrustStale", "MeshcaReconcileErrors"]
    );
    for r in rules {
        let expr = r["expr"].as_str().unwrap();
        let used: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("meshca_"))
            .collect();
        assert!(!used.is_empty(), "{expr}");
        for m in used {
            assert!(meshca_kube::metrics::SERIES.contains(&m), "{m} is not a series the controller serves");
        }
        assert!(r["labels"]["severity"].is_string() && r["annotations"]["summary"].is_string(), "{r}");
    }
    match std::process::Command::new("promtool").args(["check", "rules", path]).output() {
        Ok(o) => {
            assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
        }
        Err(_) => eprintln!("SKIPPED promtool check rules: no promtool on PATH"),
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// The controller over a fleet of workload clusters (each its own API server on a socket; 200
/// unless MESHCA_MEASURE_CLUSTERS says): time to the first pass, the process's resident memory,
/// the API requests of an idle window extrapolated to an hour, and what repairing one deleted
/// `cacerts` costs (requests beyond the watches', and which clusters saw them). A measurement,
/// not a check (so ignored): run it with
///   cargo test --release -p meshca-kube --test kube -- --ignored measure_ --nocapture
/// (BENCHMARKS.md has the numbers). MESHCA_MEASURE_IDLE_SECS sets the window (default 60).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand, see BENCHMARKS.md"]
async fn measure_the_controller_over_a_fleet() {
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let idle = env("MESHCA_MEASURE_IDLE_SECS", 60);
    let n = usize::try_from(env("MESHCA_MEASURE_CLUSTERS", 200)).unwrap();
    let (mgmt, _) = mgmt_with_root().await;
    let cs = servers(n).await;
    for (i, s) in cs.iter().enumerate() {
        mgmt.put(SECRETS, "istio-system", remote_secret(&format!("cluster{i:04}"), s));
    }
    mgmt.put(POLICIES, "gloo-mesh", policy_cr(30));
    let before = rss_kib();
    let started = std::time::Instant::now();
    let cfg = controller::ControllerConfig::new("replica-a");
    let controller = start_controller(mgmt.client(), cfg);
    for _ in 0..3000 {
        if policy_status(&mgmt)["state"] == "ACCEPTED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(policy_status(&mgmt)["state"], "ACCEPTED");
    let first_pass = started.elapsed();
    let logs = || std::iter::once(&mgmt).chain(cs.iter()).map(|s| s.log().len()).collect::<Vec<_>>();
    let requests = |from: &[usize]| -> usize { logs().iter().zip(from).map(|(now, then)| now - then).sum() };
    let writes = || cs.iter().map(ApiServer::writes).sum::<usize>() + mgmt.writes();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (l0, w0) = (logs(), writes());
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let (idle_requests, w1) = (requests(&l0), writes());
    let after = rss_kib();
    assert_eq!(w1, w0, "no writes while idle");

    // One cluster's cacerts deleted: the requests until it is rewritten and the status says so.
    let marks = logs();
    let repaired = std::time::Instant::now();
    cs[0].delete(SECRETS, "istio-system", "cacerts");
    for _ in 0..600 {
        if cs[0].get(SECRETS, "istio-system", "cacerts").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cs[0].get(SECRETS, "istio-system", "cacerts").is_some(), "cluster0000 repaired");
    let repair = repaired.elapsed();
    // Let the pass finish (its status write) before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let servers: Vec<&ApiServer> = std::iter::once(&mgmt).chain(cs.iter()).collect();
    let mut touched = 0;
    let mut calls = 0;
    for (s, from) in servers.iter().zip(&marks) {
        let made = s.log()[*from..].iter().filter(|l| !l.contains("watch=true")).count();
        calls += made;
        touched += usize::from(made > 0);
    }
    println!(
        "{n} clusters: first pass {first_pass:?}; RSS {before} KiB before the controller, {after} KiB after \
         (test API servers included); idle {idle} s: {idle_requests} requests ({} writes), about {} requests/hour; \
         one deleted cacerts repaired in {repair:?} with {calls} requests (watches aside) to {touched} API servers \
         (the management cluster's included)",
        w1 - w0,
        idle_requests as u64 * 3600 / idle
    );
    controller.stop(Duration::from_secs(30)).await;
}

/// Revokes `cluster` with the policy `text` over `store`, off the async workers.
async fn revoke_over(
    store: KubeStore,
    text: &str,
    clusters: &[&str],
    cluster: &str,
    now: OffsetDateTime,
) -> reconcile::Run {
    let pol = policy::parse(text, "policy.yaml").unwrap();
    let opts = Options::new(now, clusters.iter().map(|c| (*c).to_owned()).collect());
    let cluster = cluster.to_owned();
    tokio::task::spawn_blocking(move || {
        let r = meshca_ops::revocation::revoke(
            &store,
            &pol,
            &opts,
            &cluster,
            meshca::RevocationReason::KeyCompromise,
            &mut meshca::OsRng,
            &mut |_, _| {},
        )
        .unwrap();
        assert!(r.run.ok(), "{r:?}");
        r.run
    })
    .await
    .unwrap()
}

/// The rehearsal check over the API servers (the test kit's), off the async workers.
async fn rehearse_over(
    store: KubeStore,
    clusters: &[&str],
    revoked: Vec<(String, Cacerts)>,
    now: OffsetDateTime,
    when: String,
) {
    let names: Vec<String> = clusters.iter().map(|c| (*c).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let dir = meshca_testkit::tempdir("kube-rehearse");
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        meshca_testkit::fleet::rehearse(&store, &dir, &names, &revoked, now, &when);
    })
    .await
    .unwrap();
}

/// Root rotation and revocation together over real Kubernetes API servers: a cluster revoked
/// before the rotation, one revoked in step 2, the rehearsal check after every run, and at the
/// end only the new root's CRL and revocations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_rotation_with_revocations_runs_over_the_api_servers() {
    let (mgmt, old) = mgmt_with_root().await;
    let mut p = RootParams::default();
    p.common_name = "Root CA 2".into();
    let new = SigningCa::generate_root(&p, &mut meshca::OsRng, OffsetDateTime::now_utc()).unwrap();
    mgmt.put(SECRETS, "gloo-mesh", secret_json("new-ca", &new.bundle().to_files(Layout::Istio), &[]));
    let cs = servers(3).await;
    let names = ["east", "west", "north"];
    let store = || store_for(&mgmt, &[("east", &cs[0]), ("west", &cs[1]), ("north", &cs[2])]);
    let plain = policy::SEED_POLICY.replace("ttlDays: 1", "ttlDays: 30");
    let t = OffsetDateTime::now_utc();
    assert!(run(store(), &plain, &names, t).await.ok());
    let mut revoked = vec![("west".to_owned(), cacerts_at(&cs[1], t))];
    revoke_over(store(), &plain, &names, "west", t).await;
    rehearse_over(store(), &names, revoked.clone(), t, "revoked west".into()).await;
    let rotating = plain.replace(
        "    mgmtServerCa:",
        "    rootRotation:\n      newMgmtServerCa:\n        secretRef:\n          name: new-ca\n      dwellHours: 1\n    mgmtServerCa:",
    );
    let mut phases = Vec::new();
    for h in 1..12 {
        let at = t + time::Duration::hours(h) + time::Duration::seconds(h);
        let phase = run_phase(store(), &rotating, &names, at).await;
        if phase == "PropagatingIntermediates" && revoked.len() == 1 {
            revoked.push(("north".into(), cacerts_at(&cs[2], at)));
            assert!(matches!(
                revoke_over(store(), &rotating, &names, "north", at).await,
                reconcile::Run::RootRotation(_)
            ));
        }
        rehearse_over(store(), &names, revoked.clone(), at, format!("hour {h}, {phase}")).await;
        if phases.last() != Some(&phase) {
            phases.push(phase.clone());
        }
        if phase == "NotRotating" {
            break;
        }
    }
    assert_eq!(phases, ["AddingNewRoot", "PropagatingIntermediates", "DeletingOldRoot", "Complete", "NotRotating"]);
    let list = mgmt.get(SECRETS, "gloo-mesh", "root-trust-policy-revocations").expect("the list");
    let list: Value = serde_json::from_slice(files_of(&list).get("revocations.json").unwrap()).unwrap();
    assert_eq!(list["revoked"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["revoked"][0]["cluster"], "north");
    for s in &cs {
        let files = files_of(&s.get(SECRETS, "istio-system", "cacerts").unwrap());
        let crls = meshca::Crl::from_pem_all(files.get(meshca::CA_CRL).unwrap(), "ca-crl.pem").unwrap();
        assert!(crls.iter().all(|c| !c.is_issued_by_name(old.bundle().root())), "the old root's CRL is gone");
        assert!(crls.iter().any(|c| c.is_issued_by_name(new.bundle().root())));
    }
}

/// Under a signing CA of the user's own PKI, the controller publishes the root's CRL the
/// operator supplies (`upstreamCrlSecretRef`), and says well before it lapses that it needs
/// replacing: a False `UpstreamCrlCurrent` condition, a note, and its nextUpdate as a metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_warns_before_an_upstream_crl_lapses() {
    let t = OffsetDateTime::now_utc();
    let mut p = RootParams::default();
    p.common_name = "Corp Root".into();
    let corp = SigningCa::generate_root(&p, &mut meshca::OsRng, t).unwrap();
    let mut params = meshca::IntermediateParams::new("mesh");
    params.pathlen = 1;
    params.ttl = time::Duration::days(1000);
    let issuing = corp.issue_intermediate(&params, &mut meshca::OsRng, t).unwrap().value;
    let mgmt = ApiServer::start().await;
    mgmt.put(SECRETS, "gloo-mesh", secret_json(SIGNER, &issuing.to_files(Layout::Istio), &[]));
    // Valid two more days: inside the warning window.
    let crl = corp.sign_crl(&[], t - time::Duration::days(5), t + time::Duration::days(2), 3).unwrap();
    mgmt.put(
        SECRETS,
        "gloo-mesh",
        secret_json("corp-crls", &[(meshca::CA_CRL, crl.to_pem())].into_iter().collect(), &[]),
    );
    let cs = servers(2).await;
    for (name, server) in ["east", "west"].iter().zip(&cs) {
        mgmt.put(SECRETS, "istio-system", remote_secret(name, server));
    }
    let text = format!(
        "{}      upstreamCrlSecretRef: {{name: corp-crls}}\n",
        policy::SEED_POLICY.replace("ttlDays: 1", "ttlDays: 30")
    );
    let store = || store_for(&mgmt, &[("east", &cs[0]), ("west", &cs[1])]);
    assert!(run(store(), &text, &["east", "west"], t).await.ok());
    revoke_over(store(), &text, &["east", "west"], "west", t).await;
    let mut cr = policy_cr(30);
    cr["spec"]["config"]["mgmtServerCa"]["upstreamCrlSecretRef"] = json!({"name": "corp-crls"});
    mgmt.put(POLICIES, "gloo-mesh", cr);
    let cfg = controller::ControllerConfig::new("replica-a");
    let metrics = cfg.metrics.clone();
    let controller = start_controller(mgmt.client(), cfg);
    let condition = |st: &Value| {
        st["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "UpstreamCrlCurrent").cloned())
    };
    wait_for("the UpstreamCrlCurrent condition", || condition(&policy_status(&mgmt)).is_some()).await;
    let st = policy_status(&mgmt);
    let c = condition(&st).unwrap();
    assert_eq!((c["status"].as_str(), c["reason"].as_str()), (Some("False"), Some("UpstreamCrlExpiring")), "{st}");
    assert!(c["message"].as_str().unwrap().contains("CN=Corp Root"), "{c}");
    assert_eq!(st["state"], "ACCEPTED", "still publishing: {st}");
    let text = metrics.render();
    let line =
        text.lines().find(|l| l.starts_with("meshca_upstream_crl_next_update_timestamp_seconds{")).expect("the series");
    assert!(
        line.contains("ca=\"CN=Corp Root,O=Istio\"") && line.ends_with(&crl.next_update().unix_timestamp().to_string()),
        "{line}"
    );
    controller.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_signs_for_a_policy_with_workload_signing() {
    let (mgmt, root) = mgmt_with_root().await;
    let cs = servers(2).await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &cs[0]));
    mgmt.put(SECRETS, "istio-system", remote_secret("west", &cs[1]));
    let mut cr = policy_cr(30);
    cr["spec"]["config"]["workloadSigning"] = json!({"signerName": "meshca.dev/istio", "clusters": ["east"]});
    mgmt.put(POLICIES, "gloo-mesh", cr);
    let mut cfg = controller::ControllerConfig::new("replica-a");
    cfg.timeout = Duration::from_secs(4);
    let controller = start_controller(mgmt.client(), cfg);
    wait_for("status ACCEPTED", || policy_status(&mgmt)["state"] == "ACCEPTED").await;
    assert!(cs[0].get(SECRETS, "istio-system", "cacerts").is_none(), "east: RA mode, no CA key");
    assert!(cs[0].get(SECRETS, "istio-system", "external-ca-cert").is_some());
    assert!(cs[1].get(SECRETS, "istio-system", "cacerts").is_some(), "west as before");

    // istiod in east asks; the controller's signer answers. West's requests are not its own.
    let csrs = "apis/certificates.k8s.io/v1/certificatesigningrequests";
    let pem = meshca_testkit::csr::spiffe_request("spiffe://cluster.local/ns/shop/sa/checkout");
    let request = |name: &str| {
        json!({
            "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": name, "creationTimestamp": meshca::format_time(OffsetDateTime::now_utc())},
            "spec": {"request": ByteString(pem.as_bytes().to_vec()), "signerName": "meshca.dev/istio",
                     "username": "system:serviceaccount:istio-system:istiod", "usages": ["digital signature", "client auth"]},
            "status": {"conditions": [{"type": "Approved", "status": "True", "reason": "IstiodApproved"}]},
        })
    };
    cs[0].put(csrs, "", request("east-1"));
    cs[1].put(csrs, "", request("west-1"));
    let issued = |s: &ApiServer, n: &str| {
        s.get(csrs, "", n).and_then(|c| c["status"]["certificate"].as_str().map(str::to_owned))
    };
    wait_for("east's request answered", || issued(&cs[0], "east-1").is_some()).await;
    let der: ByteString = serde_json::from_value(json!(issued(&cs[0], "east-1").unwrap())).unwrap();
    let chain = meshca::Certificate::from_pem_all(&der.0, "status.certificate").unwrap();
    meshca_testkit::verify::webpki(&chain, root.bundle().roots(), OffsetDateTime::now_utc()).unwrap();
    assert!(issued(&cs[1], "west-1").is_none(), "west keeps its CA key: meshca does not sign for it");
    controller.stop(Duration::from_secs(10)).await;
    assert_shipped_rbac_allows(&mgmt.log());
}

fn namespace_json(name: &str, labels: &[(&str, &str)]) -> Value {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// `spec.config.trustDistribution` through the API: the ClusterTrustBundle in the version each
/// server's discovery offers (v1beta1, v1, none), the ConfigMaps of the namespaces that match,
/// a hand-made ConfigMap of the same name untouched, a namespace that stops matching cleaned
/// up, and every request allowed by deploy/workload-cluster/rbac.yaml.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_distribution_follows_discovery_and_the_namespace_selector() {
    use apiserver::{CONFIGMAPS, NAMESPACES};
    let (mgmt, root) = mgmt_with_root().await;
    let ws = servers(3).await;
    let (east, west, south) = (&ws[0], &ws[1], &ws[2]);
    west.serve_cluster_trust_bundles(&["v1beta1", "v1"]);
    south.serve_cluster_trust_bundles(&[]);
    for s in &ws {
        s.put(NAMESPACES, "", namespace_json("app", &[("trust", "mesh")]));
        s.put(NAMESPACES, "", namespace_json("team-b", &[("team", "b")]));
        s.put(NAMESPACES, "", namespace_json("other", &[]));
    }
    let hand = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "meshca-trust-bundle"}, "data": {"root-certs.pem": "theirs"}});
    west.put(CONFIGMAPS, "app", hand.clone());
    let text = format!(
        "{}    trustDistribution:\n      configMaps:\n        namespaceSelector:\n          matchExpressions:\n          \
         - {{key: trust, operator: In, values: [mesh]}}\n",
        policy::SEED_POLICY
    );
    let clusters = [("east", east), ("west", west), ("south", south)];
    let now = OffsetDateTime::now_utc();
    let report = run(store_for(&mgmt, &clusters), &text, &["east", "west", "south"], now).await;
    assert!(report.ok(), "{report:?}");
    let root_pem = root.bundle().root().to_pem();
    let d = report.distribution.as_ref().expect("published");
    assert!(d.notes.iter().any(|n| n.starts_with("south serves no ClusterTrustBundles")), "{:?}", d.notes);
    for (server, version) in [(east, "v1beta1"), (west, "v1")] {
        let ctb = server
            .get(&format!("apis/certificates.k8s.io/{version}/clustertrustbundles"), "", "meshca.dev:istio:live")
            .unwrap_or_else(|| panic!("no {version} ClusterTrustBundle"));
        assert_eq!(ctb["spec"]["signerName"], "meshca.dev/istio");
        assert_eq!(ctb["spec"]["trustBundle"], root_pem.as_str());
        assert_eq!(ctb["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshca");
    }
    assert!(east.list("apis/certificates.k8s.io/v1/clustertrustbundles").is_empty());
    assert!(west.list("apis/certificates.k8s.io/v1beta1/clustertrustbundles").is_empty(), "v1 preferred");
    for s in [east, south] {
        let cm = s.get(CONFIGMAPS, "app", "meshca-trust-bundle").expect("a ConfigMap in app");
        assert_eq!(cm["data"]["root-certs.pem"], root_pem.as_str());
        assert!(s.get(CONFIGMAPS, "other", "meshca-trust-bundle").is_none());
        assert!(s.get(CONFIGMAPS, "team-b", "meshca-trust-bundle").is_none());
    }
    assert_eq!(west.get(CONFIGMAPS, "app", "meshca-trust-bundle").unwrap()["data"], hand["data"], "not meshca's");
    assert!(d.targets.iter().any(|t| t.cluster == "west"
        && t.object == "ConfigMap app/meshca-trust-bundle"
        && matches!(t.outcome, meshca_ops::distribution::TargetOutcome::Failed { .. })));

    // `app` stops matching in east: its ConfigMap goes; a second run otherwise writes nothing.
    east.put(NAMESPACES, "", namespace_json("app", &[]));
    let writes = east.writes();
    let again = run(store_for(&mgmt, &clusters), &text, &["east", "west", "south"], now).await;
    assert!(east.get(CONFIGMAPS, "app", "meshca-trust-bundle").is_none());
    assert_eq!(east.writes(), writes + 1, "one delete, nothing rewritten: {:?}", again.distribution);
    let rules = rbac::rules(&["workload-cluster/rbac.yaml"], "meshca-remote");
    for s in &ws {
        rbac::assert_allows(&rules, &s.log());
    }
}

/// The controller serves the policy's SPIFFE bundle on its endpoint (`https_spiffe`): a client
/// holding only the bootstrap bundle (the root) fetches it, checking the endpoint's X509-SVID
/// `spiffe://cluster.local/meshca/bundle-endpoint`; the document is the published version. A
/// flood of connections that never speak is bounded and never holds a pass back, and once it
/// ends the endpoint serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_serves_the_spiffe_bundle_over_https_spiffe_and_survives_a_flood() {
    use meshca_kube::bundle_endpoint::MAX_CONNECTIONS;
    use meshca_testkit::spiffe_client::{fetch, Expect};
    let (mgmt, root) = mgmt_with_root().await;
    let cs = servers(1).await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &cs[0]));
    let (endpoint, addr, metrics, controller) =
        serve_bundles(&mgmt, json!({"spiffeBundle": {"refreshHintSeconds": 60}})).await;
    wait_for("the bundle served", || endpoint.identity("gloo-mesh/root-trust-policy").is_some()).await;
    let policy_label = "policy=\"gloo-mesh/root-trust-policy\"";
    wait_for("the sequence metric", || {
        series(&metrics.render(), "meshca_spiffe_bundle_sequence", policy_label) == Some(1.0)
    })
    .await;
    let text = metrics.render();
    assert_eq!(series(&text, "meshca_trust_distribution_lagging_targets", policy_label), Some(0.0), "{text}");

    let roots = vec![root.bundle().root().clone()];
    let id = "spiffe://cluster.local/meshca/bundle-endpoint";
    let get = move |path: &'static str, expect: Expect| {
        let roots = roots.clone();
        tokio::task::spawn_blocking(move || fetch(addr, path, &roots, expect))
    };
    for path in ["/", "/gloo-mesh/root-trust-policy"] {
        let (code, body) = get(path, Expect::Spiffe(id.into())).await.unwrap().unwrap();
        assert_eq!(code, 200, "{path}: {body}");
        let doc: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((doc["spiffe_sequence"].as_u64(), doc["spiffe_refresh_hint"].as_u64()), (Some(1), Some(60)));
        assert_eq!(doc["keys"].as_array().unwrap().len(), 1);
    }
    assert_eq!(get("/other/policy", Expect::Spiffe(id.into())).await.unwrap().unwrap().0, 404);
    // The wrong identity, or a client that expects a DNS name, is refused by the client's checks.
    assert!(get("/", Expect::Spiffe("spiffe://cluster.local/other".into())).await.unwrap().is_err());
    assert!(get("/", Expect::Dns("localhost".into())).await.unwrap().is_err());
    // Another root alone does not validate the endpoint.
    let other =
        SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, OffsetDateTime::now_utc()).unwrap();
    let stranger = fetch_with(addr, other.bundle().root().clone(), id).await;
    assert!(stranger.is_err(), "{stranger:?}");

    // A flood: more connections than the bound, none of which speaks.
    let mut flood = Vec::new();
    for _ in 0..MAX_CONNECTIONS + 50 {
        flood.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // A pass still runs (a spec change is observed) while the flood holds every slot.
    let mut cr = mgmt.get(POLICIES, "gloo-mesh", "root-trust-policy").unwrap();
    cr["spec"]["config"]["intermediateCertOptions"]["ttlDays"] = json!(7);
    cr["metadata"]["generation"] = json!(2);
    mgmt.put(POLICIES, "gloo-mesh", cr);
    wait_for("generation 2 observed under the flood", || policy_status(&mgmt)["observedGeneration"] == 2).await;
    drop(flood);
    let mut served = false;
    for _ in 0..100 {
        if let Ok(Ok((200, _))) = get("/", Expect::Spiffe(id.into())).await {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the endpoint serves again once the flood ends");
    controller.stop(Duration::from_secs(10)).await;
}

async fn fetch_with(addr: std::net::SocketAddr, root: meshca::Certificate, id: &str) -> std::io::Result<(u16, String)> {
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        meshca_testkit::spiffe_client::fetch(addr, "/", &[root], meshca_testkit::spiffe_client::Expect::Spiffe(id))
    })
    .await
    .unwrap()
}

/// `https_web`: the endpoint serves with the certificate in servingCertSecretRef (made by another
/// CA, for a DNS name), and an ordinary HTTPS client checking that name under that CA fetches
/// the bundle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_endpoint_serves_with_a_web_certificate_from_a_secret() {
    use meshca_testkit::spiffe_client::{fetch, web_serving_cert, Expect};
    let (mgmt, root) = mgmt_with_root().await;
    let cs = servers(1).await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &cs[0]));
    let (ca_pem, cert_pem, key_pem) = web_serving_cert("bundle.example");
    let mut tls = Files::new();
    tls.insert("tls.crt", cert_pem.into_bytes());
    tls.insert("tls.key", key_pem.into_bytes());
    mgmt.put(SECRETS, "gloo-mesh", secret_json("bundle-tls", &tls, &[]));
    let td = json!({"spiffeBundle": {"profile": "https_web", "servingCertSecretRef": {"name": "bundle-tls"}}});
    let (endpoint, addr, _, controller) = serve_bundles(&mgmt, td).await;
    wait_for("the bundle served", || endpoint.identity("gloo-mesh/root-trust-policy").is_some()).await;
    let web_ca = meshca::parse_certificates(ca_pem.as_bytes(), "web CA").unwrap();
    let (code, body) =
        tokio::task::spawn_blocking(move || fetch(addr, "/", &web_ca, Expect::Dns("bundle.example".into())))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(code, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    let x5c = doc["keys"][0]["x5c"][0].as_str().unwrap().to_owned();
    let pem_body: String = root.bundle().root().to_pem().lines().filter(|l| !l.starts_with("-----")).collect();
    assert_eq!(x5c, pem_body, "the key is the mesh's root");
    // The mesh's root alone does not make the web certificate trusted.
    let mesh_root = vec![root.bundle().root().clone()];
    let refused =
        tokio::task::spawn_blocking(move || fetch(addr, "/", &mesh_root, Expect::Dns("bundle.example".into())))
            .await
            .unwrap();
    assert!(refused.is_err(), "{refused:?}");
    controller.stop(Duration::from_secs(10)).await;
}

/// The policy `policy_cr(30)` with `trust_distribution`, a bundle endpoint on a free port, and the
/// controller serving on it: `(endpoint, its address, the metrics, the controller)`.
async fn serve_bundles(
    mgmt: &ApiServer,
    trust_distribution: Value,
) -> (
    meshca_kube::bundle_endpoint::BundleEndpoint,
    std::net::SocketAddr,
    std::sync::Arc<meshca_kube::metrics::Metrics>,
    Controller,
) {
    let mut cr = policy_cr(30);
    cr["spec"]["config"]["trustDistribution"] = trust_distribution;
    mgmt.put(POLICIES, "gloo-mesh", cr);
    let endpoint = meshca_kube::bundle_endpoint::BundleEndpoint::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(endpoint.clone().serve(listener));
    let mut cfg = controller::ControllerConfig::new("replica-a");
    cfg.bundle_endpoint = Some(endpoint.clone());
    let metrics = cfg.metrics.clone();
    (endpoint, addr, metrics, start_controller(mgmt.client(), cfg))
}

/// `spec.config.auditLog` under the controller: the pass logs the root and each cluster's
/// intermediate before writing them, the tree size and checkpoint are metrics, and each entry
/// is an Event; the log it kept verifies against the clusters over the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_logs_every_ca_it_writes_with_metrics_and_events() {
    let (mgmt, _root) = mgmt_with_root().await;
    let cs = servers(1).await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &cs[0]));
    let mut cr = policy_cr(30);
    cr["spec"]["config"]["auditLog"] = json!({});
    mgmt.put(POLICIES, "gloo-mesh", cr);
    let cfg = controller::ControllerConfig::new("replica-a");
    let metrics = cfg.metrics.clone();
    let _controller = start_controller(mgmt.client(), cfg);
    let label = "policy=\"gloo-mesh/root-trust-policy\"";
    wait_for("the tree size metric", || series(&metrics.render(), "meshca_audit_log_tree_size", label) == Some(2.0))
        .await;
    assert_eq!(series(&metrics.render(), "meshca_audit_log_checkpoint_size", label), Some(2.0));
    let logged = || mgmt.list(EVENTS).iter().filter(|e| e["reason"] == "Logged").count();
    wait_for("an Event per entry", || logged() == 2).await;
    let notes: Vec<String> =
        mgmt.list(EVENTS).iter().filter(|e| e["reason"] == "Logged").map(|e| e["note"].to_string()).collect();
    assert!(notes.iter().any(|n| n.contains("intermediate") && n.contains("for east")), "{notes:?}");
    let checkpoint = mgmt.get(SECRETS, "gloo-mesh", "root-trust-policy-audit-log").expect("the checkpoint Secret");
    assert!(checkpoint["data"]["checkpoint"].is_string());
}

/// The controller keeping the issuance log with its key in a token (`auditLog.pkcs11`, the PIN
/// in a Secret): the key is made in the token on the first pass, every checkpoint verifies
/// against the token's public key, and no key Secret is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_signs_the_issuance_log_with_a_key_in_a_token() {
    let Some(hsm) = softhsm::softhsm("controller_signs_the_issuance_log_with_a_key_in_a_token") else { return };
    let token = hsm.new_token("log");
    let uri = format!("pkcs11:token={token};object=audit-log");
    let (mgmt, _root) = mgmt_with_root().await;
    let cs = servers(1).await;
    mgmt.put(SECRETS, "istio-system", remote_secret("east", &cs[0]));
    let pin = format!("{}\n", softhsm::PIN);
    mgmt.put(SECRETS, "gloo-mesh", secret_json("hsm-pin", &[("pin", pin.as_str())].into_iter().collect(), &[]));
    let mut cr = policy_cr(30);
    cr["spec"]["config"]["auditLog"] = json!({"pkcs11": {"uri": uri, "pinSecretRef": {"name": "hsm-pin"}}});
    mgmt.put(POLICIES, "gloo-mesh", cr);
    let mut cfg = controller::ControllerConfig::new("replica-a");
    cfg.token = reconcile::TokenAccess::new(Some(hsm.module.clone()), None);
    let metrics = cfg.metrics.clone();
    let controller = start_controller(mgmt.client(), cfg);
    let label = "policy=\"gloo-mesh/root-trust-policy\"";
    wait_for("the checkpoint size metric", || {
        series(&metrics.render(), "meshca_audit_log_checkpoint_size", label) == Some(2.0)
    })
    .await;
    assert!(cs[0].get(SECRETS, "istio-system", "cacerts").is_some());
    let public = meshca_ops::pkcs11::ed25519_public_key(&hsm.module, &uri.parse().unwrap()).unwrap();
    let key = meshca::tlog::VerifierKey::ed25519("meshca.dev/gloo-mesh/root-trust-policy", &public).unwrap();
    let head = mgmt.get(SECRETS, "gloo-mesh", "root-trust-policy-audit-log").expect("the checkpoint Secret");
    let note = files_of(&head).get("checkpoint").unwrap().to_vec();
    assert_eq!(meshca::tlog::open_checkpoint(&note, &key).unwrap().size, 2);
    assert!(mgmt.get(SECRETS, "gloo-mesh", "root-trust-policy-audit-key").is_none(), "no key Secret");
    controller.stop(Duration::from_secs(10)).await;
}
