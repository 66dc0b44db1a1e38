//! meshca as the Kubernetes signer for istiod's RA mode, against the in-crate API server
//! speaking certificates.k8s.io/v1 (the status and approval subresources, the API server's
//! rules for status.certificate): istiod's flow (create, approve, wait, read, delete) gets a
//! certificate that rustls-webpki verifies under the root; every refusal is a Failed condition
//! with its rule, an Event and a metric; denied requests and other signers' are never signed; a
//! signer restarted mid-burst answers each request once.
#![allow(clippy::unwrap_used)]

#[path = "support/apiserver.rs"]
mod apiserver;
#[path = "support/rbac.rs"]
mod rbac;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use apiserver::{ApiServer, EVENTS, SECRETS};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use meshca::{Certificate, Files, Layout, RootParams, SigningCa};
use meshca_kube::metrics::Metrics;
use meshca_kube::signer::{self, SignerConfig};
use meshca_kube::KubeStore;
use meshca_ops::policy::{self, SEED_POLICY};
use meshca_ops::reconcile::{self, Options};
use meshca_testkit::csr::{request, spiffe_request, San};
use serde_json::{json, Value};
use time::OffsetDateTime;

const SIGNER: &str = "my-root-trust-policy.gloo-mesh";
const SIGNER_NAME: &str = "meshca.dev/istio";
const ISTIOD: &str = "system:serviceaccount:istio-system:istiod";
const CSRS: &str = "apis/certificates.k8s.io/v1/certificatesigningrequests";
const ID: &str = "spiffe://cluster.local/ns/shop/sa/checkout";

fn secret_json(name: &str, files: &Files) -> Value {
    let data: serde_json::Map<String, Value> =
        files.iter().map(|(k, v)| (k.to_owned(), json!(k8s_openapi::ByteString(v.to_vec())))).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data})
}

fn policy_text() -> String {
    SEED_POLICY.replace("ttlDays: 1", "ttlDays: 30") + "    workloadSigning:\n      signerName: meshca.dev/istio\n"
}

/// A management server with the signing CA, a workload server `east`, and east's intermediate
/// issued in RA mode (kept on the management side).
async fn fleet() -> (ApiServer, ApiServer, SigningCa) {
    let mgmt = ApiServer::start().await;
    let root = SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, OffsetDateTime::now_utc()).unwrap();
    mgmt.put(SECRETS, "gloo-mesh", secret_json(SIGNER, &root.bundle().to_files(Layout::Istio)));
    let east = ApiServer::start().await;
    let map: BTreeMap<String, kube::Client> =
        [("mgmt".to_owned(), mgmt.client()), ("east".to_owned(), east.client())].into();
    let pol = policy::parse(&policy_text(), "policy.yaml").unwrap();
    let handle = tokio::runtime::Handle::current();
    let report = tokio::task::spawn_blocking(move || {
        let store = KubeStore::new(handle, map);
        let opts = Options::new(OffsetDateTime::now_utc(), vec!["east".into()]);
        reconcile::reconcile(&store, &pol, &opts, &mut meshca::OsRng, &mut |_, _| {}).unwrap()
    })
    .await
    .unwrap();
    assert!(report.ok(), "{report:?}");
    assert!(east.get(SECRETS, "istio-system", "cacerts").is_none(), "no CA key in an RA cluster");
    assert!(east.get(SECRETS, "istio-system", "external-ca-cert").is_some());
    assert!(mgmt.get(SECRETS, "gloo-mesh", "meshca-ra-east").is_some());
    (mgmt, east, root)
}

fn start(mgmt: &ApiServer, east: &ApiServer, metrics: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
    let mut cfg = SignerConfig::new(policy::parse(&policy_text(), "policy.yaml").unwrap(), "mgmt", metrics);
    cfg.watch_secs = 3;
    let clusters: BTreeMap<String, kube::Client> = [("east".to_owned(), east.client())].into();
    let mgmt = mgmt.client();
    tokio::spawn(async move {
        signer::run(cfg, mgmt, clusters).await.unwrap();
    })
}

fn csr_object(
    name: &str,
    pem: &str,
    signer: &str,
    username: &str,
    expiration: Option<i32>,
) -> CertificateSigningRequest {
    serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": k8s_openapi::ByteString(pem.as_bytes().to_vec()),
            "signerName": signer,
            "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
            "username": username,
            "expirationSeconds": expiration,
        },
    }))
    .unwrap()
}

/// Adds a condition (`Approved`, `Denied`) through the approval subresource, as istiod does.
async fn condition(api: &Api<CertificateSigningRequest>, name: &str, type_: &str) {
    let mut csr = api.get(name).await.unwrap();
    let status = csr.status.get_or_insert_with(Default::default);
    status.conditions.get_or_insert_with(Vec::new).push(
        serde_json::from_value(
            json!({"type": type_, "status": "True", "reason": "IstiodApproved", "message": "istiod"}),
        )
        .unwrap(),
    );
    api.replace_subresource("approval", name, &PostParams::default(), &csr).await.unwrap();
}

/// What istiod does: create, approve, wait (up to 20 s) for a certificate or a Failed
/// condition, read it, delete it. Returns the request as it was answered.
async fn istiod(api: &Api<CertificateSigningRequest>, csr: CertificateSigningRequest) -> CertificateSigningRequest {
    let name = csr.metadata.name.clone().unwrap();
    api.create(&PostParams::default(), &csr).await.unwrap();
    condition(api, &name, "Approved").await;
    for _ in 0..200 {
        let got = api.get(&name).await.unwrap();
        let status = got.status.clone().unwrap_or_default();
        let failed = status.conditions.iter().flatten().any(|c| c.type_ == "Failed");
        if status.certificate.is_some() || failed {
            api.delete(&name, &DeleteParams::default()).await.unwrap();
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name}: no answer in 20 s");
}

fn chain_of(csr: &CertificateSigningRequest) -> Vec<Certificate> {
    let pem = &csr.status.as_ref().unwrap().certificate.as_ref().unwrap().0;
    Certificate::from_pem_all(pem, "status.certificate").unwrap()
}

fn failed_reason(csr: &CertificateSigningRequest) -> Option<String> {
    assert!(csr.status.as_ref().unwrap().certificate.is_none(), "a refused request carries no certificate");
    let conditions = csr.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "Failed").and_then(|c| c.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_s_flow_gets_a_certificate_that_verifies_and_a_refusal_names_its_rule() {
    let (mgmt, east, root) = fleet().await;
    let metrics = Arc::new(Metrics::new());
    let task = start(&mgmt, &east, metrics.clone());
    let api: Api<CertificateSigningRequest> = Api::all(east.client());

    let before = OffsetDateTime::now_utc();
    let answered = istiod(&api, csr_object("csr-ok", &spiffe_request(ID), SIGNER_NAME, ISTIOD, Some(3600))).await;
    let chain = chain_of(&answered);
    assert_eq!(chain.len(), 2, "the certificate and east's intermediate, no root");
    meshca_testkit::verify::webpki(&chain, root.bundle().roots(), OffsetDateTime::now_utc()).unwrap();
    assert_eq!(chain[0].uri_sans(), [ID]);
    let life = chain[0].not_after() - before;
    assert!(life <= time::Duration::seconds(3600) && life > time::Duration::seconds(3500), "{life}");
    assert!(east.get(CSRS, "", "csr-ok").is_none(), "istiod deleted it");
    // The intermediate that signed is the one kept on the management side.
    let kept: Secret = serde_json::from_value(mgmt.get(SECRETS, "gloo-mesh", "meshca-ra-east").unwrap()).unwrap();
    let kept_cert = &kept.data.unwrap()["ca-cert.pem"].0;
    assert_eq!(chain[1].to_pem().as_bytes(), &kept_cert[..]);

    // Refusals: a Failed condition naming the rule, an Event, a metric.
    let p256 = &meshca_testkit::csr::P256;
    let two_uris = request(p256, &[San::Uri(ID), San::Uri("spiffe://cluster.local/ns/a/sa/b")], false);
    let cases = [
        ("csr-two-uris", two_uris, ISTIOD, "SanNotAllowed"),
        ("csr-other-td", spiffe_request("spiffe://evil.example/ns/shop/sa/checkout"), ISTIOD, "IdentityNotAllowed"),
        ("csr-a-ca", request(p256, &[San::Uri(ID)], true), ISTIOD, "CaNotAllowed"),
        ("csr-not-istiod", spiffe_request(ID), "system:serviceaccount:shop:checkout", "RequesterNotAllowed"),
    ];
    for (name, pem, user, reason) in cases {
        let answered = istiod(&api, csr_object(name, &pem, SIGNER_NAME, user, None)).await;
        assert_eq!(failed_reason(&answered).as_deref(), Some(reason), "{name}");
    }
    let text = metrics.render();
    assert!(text.contains(r#"meshca_workload_certificates_total{policy="gloo-mesh/root-trust-policy",cluster="east",result="issued",reason="Issued"} 1"#), "{text}");
    assert!(text.contains(r#"result="failed",reason="SanNotAllowed"} 1"#), "{text}");
    let events: Vec<Value> = east.list(EVENTS);
    assert!(events.iter().any(|e| e["reason"] == "CaNotAllowed" && e["regarding"]["name"] == "csr-a-ca"), "{events:?}");
    task.abort();
    assert_workload_rbac_allows(&east.log());
}

/// meshca's requests to a workload cluster (the reconcile's and the signer's; not the test's
/// own, made as istiod: create, approve, delete) are allowed by
/// deploy/workload-cluster/rbac.yaml, which also grants `sign` on the signer name.
fn assert_workload_rbac_allows(log: &[String]) {
    let istiod = |l: &&String| {
        l.contains("/approval") || l.starts_with("DELETE ") || l.starts_with("POST /apis/certificates.k8s.io/")
    };
    let ours: Vec<String> = log.iter().filter(|l| !istiod(l)).cloned().collect();
    let rules = rbac::rules(&["workload-cluster/rbac.yaml"], "meshca-remote");
    rbac::assert_allows(&rules, &ours);
    assert!(
        rules.iter().any(|(_, g, r, v)| g == &["certificates.k8s.io"] && r == &["signers"] && v == &["sign"]),
        "sign on the signer name"
    );
    assert!(!rules.iter().any(|(_, _, r, _)| r.iter().any(|r| r.ends_with("/approval"))), "approve stays istiod's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_unapproved_and_other_signers_requests_are_never_signed() {
    let (mgmt, east, _) = fleet().await;
    let task = start(&mgmt, &east, Arc::new(Metrics::new()));
    let api: Api<CertificateSigningRequest> = Api::all(east.client());
    let pem = spiffe_request(ID);
    api.create(&PostParams::default(), &csr_object("denied", &pem, SIGNER_NAME, ISTIOD, None)).await.unwrap();
    condition(&api, "denied", "Denied").await;
    condition(&api, "denied", "Approved").await;
    api.create(&PostParams::default(), &csr_object("pending", &pem, SIGNER_NAME, ISTIOD, None)).await.unwrap();
    api.create(&PostParams::default(), &csr_object("other", &pem, "example.com/other", ISTIOD, None)).await.unwrap();
    condition(&api, "other", "Approved").await;
    // A request after them, answered: the signer has seen the ones before.
    let answered = istiod(&api, csr_object("after", &pem, SIGNER_NAME, ISTIOD, None)).await;
    assert!(chain_of(&answered).len() == 2);
    for name in ["denied", "pending", "other"] {
        let csr = api.get(name).await.unwrap();
        assert!(csr.status.and_then(|s| s.certificate).is_none(), "{name} was signed");
    }
    let writes = east.log().iter().filter(|l| l.contains("/status") && !l.contains("/after/")).count();
    assert_eq!(writes, 0, "{:?}", east.log());
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_restarted_mid_burst_answers_each_request_once() {
    let (mgmt, east, root) = fleet().await;
    let api: Api<CertificateSigningRequest> = Api::all(east.client());
    let first = start(&mgmt, &east, Arc::new(Metrics::new()));
    let names: Vec<String> = (0..30).map(|i| format!("burst-{i}")).collect();
    for name in &names {
        api.create(&PostParams::default(), &csr_object(name, &spiffe_request(ID), SIGNER_NAME, ISTIOD, None))
            .await
            .unwrap();
        condition(&api, name, "Approved").await;
    }
    // Stop the first signer once it has answered some, start another.
    let issued = |east: &ApiServer| {
        east.list(CSRS).iter().filter(|c| c["status"]["certificate"].as_str().is_some_and(|c| !c.is_empty())).count()
    };
    for _ in 0..200 {
        if issued(&east) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.abort();
    // Stopped: its tasks (one per cluster, their workers) end with it.
    assert!(first.await.unwrap_err().is_cancelled());
    let second = start(&mgmt, &east, Arc::new(Metrics::new()));
    for _ in 0..300 {
        if issued(&east) == names.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(issued(&east), names.len());
    let log = east.log();
    for name in &names {
        let writes = log.iter().filter(|l| l.starts_with("PUT ") && l.contains(&format!("/{name}/status"))).count();
        assert_eq!(writes, 1, "{name} answered {writes} times");
        let csr = api.get(name).await.unwrap();
        meshca_testkit::verify::webpki(&chain_of(&csr), root.bundle().roots(), OffsetDateTime::now_utc()).unwrap();
    }
    second.abort();
}

/// Not a test: the signer's throughput through the in-crate API servers, as istiod drives it
/// (create, approve, wait for the certificate through a watch, delete; 20 requests in flight
/// per cluster, as istiod's client limit allows about 20 a second). Prints certificates per
/// second and the request-to-certificate latency (p50, p99) for 1 and 10 clusters:
/// `MESHCA_MEASURE_CSRS=N cargo test --release -p meshca-kube --test signer -- --ignored measure_ --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand (BENCHMARKS.md)"]
async fn measure_signer_throughput() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio::sync::oneshot;
    let per_cluster: usize = std::env::var("MESHCA_MEASURE_CSRS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    for clusters in [1usize, 10] {
        let mgmt = ApiServer::start().await;
        let root =
            SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, OffsetDateTime::now_utc()).unwrap();
        mgmt.put(SECRETS, "gloo-mesh", secret_json(SIGNER, &root.bundle().to_files(Layout::Istio)));
        let mut servers = Vec::new();
        for _ in 0..clusters {
            servers.push(ApiServer::start().await);
        }
        let names: Vec<String> = (0..clusters).map(|i| format!("c{i}")).collect();
        let mut map: BTreeMap<String, kube::Client> = [("mgmt".to_owned(), mgmt.client())].into();
        for (n, s) in names.iter().zip(&servers) {
            map.insert(n.clone(), s.client());
        }
        let pol = policy::parse(&policy_text(), "policy.yaml").unwrap();
        let (handle, m2, n2) = (tokio::runtime::Handle::current(), map.clone(), names.clone());
        tokio::task::spawn_blocking(move || {
            let opts = Options::new(OffsetDateTime::now_utc(), n2);
            reconcile::reconcile(&KubeStore::new(handle, m2), &pol, &opts, &mut meshca::OsRng, &mut |_, _| {}).unwrap()
        })
        .await
        .unwrap();
        let mut cfg =
            SignerConfig::new(policy::parse(&policy_text(), "policy.yaml").unwrap(), "mgmt", Arc::new(Metrics::new()));
        cfg.watch_secs = 3;
        map.remove("mgmt");
        let task = tokio::spawn(signer::run(cfg, mgmt.client(), map));
        let pem = spiffe_request(ID);
        let started = std::time::Instant::now();
        let mut drivers = Vec::new();
        for s in &servers {
            let (api, pem) = (Api::<CertificateSigningRequest>::all(s.client()), pem.clone());
            // istiod waits on a watch: each request's waiter is told when its certificate is in.
            let waiting: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>> = Arc::default();
            let watch = {
                let (api, waiting) = (api.clone(), waiting.clone());
                tokio::spawn(async move {
                    let config = kube::runtime::watcher::Config::default().timeout(3);
                    let mut events = kube::runtime::watcher::watcher(api, config).boxed();
                    while let Some(e) = events.next().await {
                        use kube::runtime::watcher::Event;
                        if let Ok(Event::Apply(c) | Event::InitApply(c)) = e {
                            if c.status.and_then(|s| s.certificate).is_some() {
                                if let Some(tx) = waiting.lock().unwrap().remove(&c.metadata.name.unwrap_or_default()) {
                                    let _ = tx.send(());
                                }
                            }
                        }
                    }
                })
            };
            drivers.push(tokio::spawn(async move {
                let lat = Arc::new(Mutex::new(Vec::new()));
                futures::StreamExt::for_each_concurrent(futures::stream::iter(0..per_cluster), 20, |i| {
                    let (api, pem, lat, waiting) = (api.clone(), pem.clone(), lat.clone(), waiting.clone());
                    async move {
                        let name = format!("m-{i}");
                        let (tx, rx) = oneshot::channel();
                        waiting.lock().unwrap().insert(name.clone(), tx);
                        let t0 = std::time::Instant::now();
                        api.create(&PostParams::default(), &csr_object(&name, &pem, SIGNER_NAME, ISTIOD, None))
                            .await
                            .unwrap();
                        condition(&api, &name, "Approved").await;
                        if tokio::time::timeout(Duration::from_secs(60), rx).await.is_err() {
                            let got = api.get(&name).await.unwrap();
                            panic!("{name}: no certificate seen in 60 s; the request: {:?}", got.status);
                        }
                        lat.lock().unwrap().push(t0.elapsed());
                        api.delete(&name, &DeleteParams::default()).await.unwrap();
                    }
                })
                .await;
                watch.abort();
                let v = lat.lock().unwrap().clone();
                v
            }));
        }
        let mut lat: Vec<Duration> = Vec::new();
        for d in drivers {
            lat.extend(d.await.unwrap());
        }
        let elapsed = started.elapsed();
        task.abort();
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        println!(
            "signer, {clusters} cluster(s), {} certificates: {:.0} per second; request to certificate p50 {:.1} ms, p99 {:.1} ms",
            lat.len(),
            lat.len() as f64 / elapsed.as_secs_f64(),
            pct(0.50).as_secs_f64() * 1000.0,
            pct(0.99).as_secs_f64() * 1000.0
        );
    }
}

const PCRS: &str = "apis/certificates.k8s.io/v1beta1/podcertificaterequests";

/// A PodCertificateRequest as the kubelet makes it for a pod of `shop` running as `sa`.
fn pcr(name: &str, signer: &str, sa: &str, key: &[u8], max_seconds: Option<i32>) -> Value {
    json!({
        "apiVersion": "certificates.k8s.io/v1beta1", "kind": "PodCertificateRequest",
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": meshca::format_time(OffsetDateTime::now_utc())},
        "spec": {
            "signerName": signer, "podName": "checkout-7d9f", "podUID": "3f1a-uid", "serviceAccountName": sa,
            "serviceAccountUID": "sa-uid", "nodeName": "node-1", "nodeUID": "node-uid",
            "pkixPublicKey": k8s_openapi::ByteString(key.to_vec()), "proofOfPossession": k8s_openapi::ByteString(vec![1, 2, 3]),
            "maxExpirationSeconds": max_seconds,
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_certificate_requests_are_issued_for_the_pod_s_identity_or_denied() {
    use meshca_testkit::csr::{public_key, ED25519, P256};
    let (mgmt, east, root) = fleet().await;
    let mut cfg = SignerConfig::new(
        policy::parse(
            &policy_text()
                .replace("signerName: meshca.dev/istio\n", "signerName: meshca.dev/istio\n      mode: both\n"),
            "policy.yaml",
        )
        .unwrap(),
        "mgmt",
        Arc::new(Metrics::new()),
    );
    cfg.watch_secs = 3;
    let task = tokio::spawn(signer::run(cfg, mgmt.client(), [("east".to_owned(), east.client())].into()));
    let before = OffsetDateTime::now_utc();
    east.put(PCRS, "shop", pcr("pod-ok", SIGNER_NAME, "checkout", &public_key(&P256), Some(7200)));
    east.put(PCRS, "shop", pcr("pod-ed25519", SIGNER_NAME, "checkout", &public_key(&ED25519), None));
    east.put(PCRS, "shop", pcr("pod-other", "example.com/other", "checkout", &public_key(&P256), None));
    let answered = |name: &str| {
        east.get(PCRS, "shop", name).filter(|p| p["status"]["conditions"].as_array().is_some_and(|c| !c.is_empty()))
    };
    for _ in 0..200 {
        if answered("pod-ok").is_some() && answered("pod-ed25519").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ok = answered("pod-ok").expect("pod-ok answered");
    assert_eq!(ok["status"]["conditions"][0]["type"], "Issued");
    let chain =
        Certificate::from_pem_all(ok["status"]["certificateChain"].as_str().unwrap().as_bytes(), "chain").unwrap();
    meshca_testkit::verify::webpki(&chain, root.bundle().roots(), OffsetDateTime::now_utc()).unwrap();
    assert_eq!(chain[0].uri_sans(), [ID], "the pod's namespace and service account");
    let t = |f: &str| {
        OffsetDateTime::parse(ok["status"][f].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert_eq!(t("notAfter"), chain[0].not_after());
    let life = t("notAfter") - before;
    assert!(life <= time::Duration::hours(2) && life > time::Duration::minutes(119), "maxExpirationSeconds: {life}");
    assert!(t("beginRefreshAt") > before && t("beginRefreshAt") < t("notAfter"));
    let denied = answered("pod-ed25519").expect("pod-ed25519 answered");
    assert_eq!(denied["status"]["conditions"][0]["type"], "Denied");
    assert_eq!(denied["status"]["conditions"][0]["reason"], "UnsupportedKeyType");
    assert!(denied["status"]["certificateChain"].is_null());
    assert!(answered("pod-other").is_none(), "another signer's request is left alone");
    task.abort();
    assert_workload_rbac_allows(&east.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_revocation_the_next_request_is_signed_by_the_new_intermediate_at_once() {
    let (mgmt, east, root) = fleet().await;
    let mut cfg =
        SignerConfig::new(policy::parse(&policy_text(), "policy.yaml").unwrap(), "mgmt", Arc::new(Metrics::new()));
    cfg.watch_secs = 3;
    // Reloading on a timer would take an hour: only the Secret's watch can explain a reload.
    cfg.reload_after = Duration::from_secs(3600);
    let task = tokio::spawn(signer::run(cfg, mgmt.client(), [("east".to_owned(), east.client())].into()));
    let api: Api<CertificateSigningRequest> = Api::all(east.client());
    let kept = |mgmt: &ApiServer| {
        let s: Secret = serde_json::from_value(mgmt.get(SECRETS, "gloo-mesh", "meshca-ra-east").unwrap()).unwrap();
        s.data.unwrap()["ca-cert.pem"].0.clone()
    };
    let first = istiod(&api, csr_object("before", &spiffe_request(ID), SIGNER_NAME, ISTIOD, None)).await;
    assert_eq!(chain_of(&first)[1].to_pem().as_bytes(), &kept(&mgmt)[..]);
    let old = kept(&mgmt);

    // East's key leaked: revoked, and a new intermediate kept on the management side.
    let map: BTreeMap<String, kube::Client> =
        [("mgmt".to_owned(), mgmt.client()), ("east".to_owned(), east.client())].into();
    let (handle, pol) = (tokio::runtime::Handle::current(), policy::parse(&policy_text(), "policy.yaml").unwrap());
    tokio::task::spawn_blocking(move || {
        let store = KubeStore::new(handle, map);
        let opts = Options::new(OffsetDateTime::now_utc(), vec!["east".into()]);
        meshca_ops::revocation::revoke_clusters(
            &store,
            &pol,
            &opts,
            &["east".to_owned()],
            meshca::RevocationReason::KeyCompromise,
            &mut meshca::OsRng,
            &mut |_, _| {},
        )
        .unwrap()
    })
    .await
    .unwrap();
    assert_ne!(kept(&mgmt), old, "a new intermediate");
    // The signer sees the Secret change on its watch; the next request gets the new one.
    for _ in 0..100 {
        let after = istiod(&api, csr_object("after", &spiffe_request(ID), SIGNER_NAME, ISTIOD, None)).await;
        let chain = chain_of(&after);
        if chain[1].to_pem().as_bytes() == &kept(&mgmt)[..] {
            meshca_testkit::verify::webpki(&chain, root.bundle().roots(), OffsetDateTime::now_utc()).unwrap();
            task.abort();
            return;
        }
        assert_eq!(chain[1].to_pem().as_bytes(), &old[..]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("still signing with the revoked intermediate after 5 s");
}
