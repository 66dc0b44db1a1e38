//! meshca as the Kubernetes signer for istiod's RA mode (`EXTERNAL_CA=ISTIOD_RA_KUBERNETES_API`,
//! `K8S_SIGNER=<signerName>`): in each workload cluster a policy's `workloadSigning` covers, it
//! watches the `certificates.k8s.io/v1` CertificateSigningRequests for its signer name and
//! answers each approved one through the `/status` subresource, signing with that cluster's
//! intermediate, which is kept on the management side ([`meshca_ops::ra`]).
//!
//! The contract (KEP-1513):
//! - acts only on requests for its signer name that are approved and neither denied, failed
//!   nor issued yet, and created less than an hour ago (kube-controller-manager removes approved
//!   requests after an hour; istiod waits a minute);
//! - re-checks every rule of [`meshca::WorkloadRules`] on the request itself (istiod approved it,
//!   so the approval says nothing), and the requester (`spec.username`);
//! - `status.certificate`: the workload certificate, then the cluster's intermediates up to (not
//!   including) the root; istiod takes the root from meshConfig `caCertificates`;
//! - anything refused gets a `Failed` condition whose reason names the rule, an Event, and
//!   `meshca_workload_certificates_total{result="failed",reason}`;
//! - every write carries the resourceVersion it read, so two signers (a restart, a second
//!   replica) never both answer one request.
//!
//! Throughput: the watch only queues names (a bounded queue per cluster); requests are
//! answered concurrently off the watch task, signing on the blocking pool; there is no
//! client-side rate limit. A full queue drops names and lists again once it has room.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use kube::api::{ListParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use meshca::{Refusal, SigningCa, WorkloadRequest};
use meshca_ops::policy::Policy;
use time::OffsetDateTime;

use crate::metrics::Metrics;
use crate::store::KubeStore;
use crate::Error;
use meshca_ops::store::Store;

/// Requests older than this are left alone: kube-controller-manager removes approved requests
/// an hour after they were made, and the requester stopped waiting long before.
pub const MAX_REQUEST_AGE: Duration = Duration::from_secs(3600);

/// How a request stands for this signer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Approved, not denied, failed or issued: to be answered.
    ToSign,
    /// For another signer.
    OtherSigner,
    /// Not approved (yet).
    NotApproved,
    /// Denied by an approver.
    Denied,
    /// Failed (by this signer or another).
    Failed,
    /// Answered already.
    Issued,
    /// Made more than [`MAX_REQUEST_AGE`] ago.
    Stale,
}

fn has_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Where `csr` stands for the signer `signer_name` at `now`.
pub fn standing(csr: &CertificateSigningRequest, signer_name: &str, now: OffsetDateTime) -> Standing {
    if csr.spec.signer_name != signer_name {
        return Standing::OtherSigner;
    }
    if csr.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some_and(|c| !c.0.is_empty()) {
        return Standing::Issued;
    }
    if has_condition(csr, "Failed") {
        return Standing::Failed;
    }
    if has_condition(csr, "Denied") {
        return Standing::Denied;
    }
    if !has_condition(csr, "Approved") {
        return Standing::NotApproved;
    }
    let created = csr.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second());
    let age = created.map(|c| now.unix_timestamp().saturating_sub(c));
    if age.is_some_and(|a| a > MAX_REQUEST_AGE.as_secs() as i64) {
        return Standing::Stale;
    }
    Standing::ToSign
}

/// The answer to one request.
#[derive(Debug)]
pub enum Answer {
    /// `status.certificate`: the certificate and the intermediates, PEM.
    Issue(Box<meshca::WorkloadCert>),
    /// A `Failed` condition.
    Refuse(Refusal),
}

/// Answers `csr` with `ca` under `rules` at `now`. The error is the signer's (its CA not valid,
/// its key unusable): the request is left for a later try.
pub fn answer(
    csr: &CertificateSigningRequest,
    ca: &SigningCa,
    rules: &meshca::WorkloadRules,
    rng: &mut dyn meshca::Entropy,
    now: OffsetDateTime,
) -> Result<Answer, meshca::Error> {
    let mut req = WorkloadRequest::new(&csr.spec.request.0);
    req.expiration_seconds = csr.spec.expiration_seconds.map(i64::from);
    req.usages = csr.spec.usages.as_deref();
    // The requester is named by the API server, so it is always there; a request without one
    // is refused when the rules name requesters.
    req.requester = Some(csr.spec.username.as_deref().unwrap_or(""));
    Ok(match ca.sign_workload_request(&req, rules, rng, now)? {
        Ok(cert) => Answer::Issue(Box::new(cert)),
        Err(refusal) => Answer::Refuse(refusal),
    })
}

fn time_of(now: OffsetDateTime) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_second(now.unix_timestamp())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// `csr` with its answer in its status, ready for `/status`.
pub fn answered(csr: &CertificateSigningRequest, answer: &Answer, now: OffsetDateTime) -> CertificateSigningRequest {
    let mut out = csr.clone();
    let status = out.status.get_or_insert_with(Default::default);
    match answer {
        Answer::Issue(cert) => status.certificate = Some(ByteString(cert.chain_pem().into_bytes())),
        Answer::Refuse(r) => status.conditions.get_or_insert_with(Vec::new).push(CertificateSigningRequestCondition {
            type_: "Failed".into(),
            status: "True".into(),
            reason: Some(r.reason.as_str().into()),
            message: Some(r.message.clone()),
            last_update_time: Some(time_of(now)),
            last_transition_time: Some(time_of(now)),
        }),
    }
    out
}

/// What the signer needs.
pub struct SignerConfig {
    /// The policy (with `workloadSigning`).
    pub policy: Policy,
    /// `namespace/name` of the policy, for metrics.
    pub policy_key: String,
    /// The management cluster's name and client (where the intermediates are kept).
    pub mgmt_cluster: String,
    /// This replica's name, in Events.
    pub identity: String,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// How long a loaded intermediate is used before it is read again (a rotation or
    /// revocation reaches the signer within this).
    pub reload_after: Duration,
    /// The requests queued per cluster at most.
    pub queue: usize,
    /// The requests answered at once per cluster.
    pub concurrency: usize,
    /// How long the API server may hold a request watch open (a quarter under the clients'
    /// read timeout: see [`crate::controller::watch_timeout`]).
    pub watch_secs: u32,
    /// The clock.
    pub clock: fn() -> OffsetDateTime,
}

impl std::fmt::Debug for SignerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerConfig").field("policy", &self.policy_key).field("queue", &self.queue).finish()
    }
}

impl SignerConfig {
    /// Defaults for `policy`: intermediates reloaded every 5 s, 1,024 queued and 16 answered at
    /// once per cluster, the system clock.
    pub fn new(policy: Policy, mgmt_cluster: &str, metrics: Arc<Metrics>) -> Self {
        let policy_key = format!("{}/{}", policy.namespace, policy.name);
        SignerConfig {
            policy,
            policy_key,
            mgmt_cluster: mgmt_cluster.to_owned(),
            identity: "meshca-signer".into(),
            metrics,
            reload_after: Duration::from_secs(5),
            queue: 1024,
            concurrency: 16,
            watch_secs: 290,
            clock: OffsetDateTime::now_utc,
        }
    }
}

struct Shared {
    cfg: SignerConfig,
    store: KubeStore,
    cas: Mutex<HashMap<String, (Instant, Arc<SigningCa>)>>,
}

impl Shared {
    /// `cluster`'s intermediate (blocking: call on the blocking pool).
    fn ca(&self, cluster: &str) -> Result<Option<Arc<SigningCa>>, meshca_ops::Error> {
        if let Some((at, ca)) = self.cas.lock().unwrap_or_else(|p| p.into_inner()).get(cluster) {
            if at.elapsed() < self.cfg.reload_after {
                return Ok(Some(ca.clone()));
            }
        }
        let now = (self.cfg.clock)();
        let Some(ca) = meshca_ops::ra::signing_ca(&self.store, &self.cfg.policy, &self.cfg.mgmt_cluster, cluster, now)?
        else {
            return Ok(None);
        };
        let ca = Arc::new(ca);
        self.cas.lock().unwrap_or_else(|p| p.into_inner()).insert(cluster.to_owned(), (Instant::now(), ca.clone()));
        Ok(Some(ca))
    }
}

/// Runs the signer for every workload cluster of `clusters` the policy's `workloadSigning`
/// covers, until the task is dropped. `mgmt` reads the intermediates.
pub async fn run(cfg: SignerConfig, mgmt: Client, clusters: BTreeMap<String, Client>) -> Result<(), Error> {
    let Some(ws) = cfg.policy.workload_signing.clone() else {
        return Err(Error::Config {
            context: format!("RootTrustPolicy {}", cfg.policy_key),
            detail: "spec.config.workloadSigning is not set: there is nothing to sign for".into(),
        });
    };
    if !ws.mode.csr() {
        tracing::warn!(
            "workloadSigning.mode is podCertificate: PodCertificateRequests are not signed yet; nothing to do"
        );
    }
    let store = KubeStore::new(tokio::runtime::Handle::current(), [(cfg.mgmt_cluster.clone(), mgmt)].into());
    let shared = Arc::new(Shared { cfg, store, cas: Mutex::new(HashMap::new()) });
    let mut tasks = Vec::new();
    for (name, client) in clusters {
        if name == shared.cfg.mgmt_cluster || !ws.covers(&name) || !ws.mode.csr() {
            continue;
        }
        tracing::info!(cluster = %name, signer = %ws.signer_name, "signing CertificateSigningRequests");
        tasks.push(tokio::spawn(sign_cluster(name, client, shared.clone(), ws.signer_name.clone())));
    }
    futures::future::join_all(tasks).await;
    Ok(())
}

struct Queue {
    tx: tokio::sync::mpsc::Sender<String>,
    queued: Mutex<HashSet<String>>,
    overflowed: AtomicBool,
}

impl Queue {
    fn push(&self, name: &str) {
        if !self.queued.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned()) {
            return;
        }
        if self.tx.try_send(name.to_owned()).is_err() {
            self.queued.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
            if !self.overflowed.swap(true, Ordering::Relaxed) {
                tracing::warn!("the signing queue is full; requests wait for the next listing");
            }
        }
    }

    fn done(&self, name: &str) {
        self.queued.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }
}

async fn sign_cluster(cluster: String, client: Client, shared: Arc<Shared>, signer_name: String) {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(shared.cfg.queue.max(1));
    let queue = Arc::new(Queue { tx, queued: Mutex::new(HashSet::new()), overflowed: AtomicBool::new(false) });
    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: "meshca-signer".into(), instance: Some(shared.cfg.identity.clone()) },
    );
    let worker =
        {
            let (api, queue, shared, cluster, signer_name) =
                (api.clone(), queue.clone(), shared.clone(), cluster.clone(), signer_name.clone());
            let concurrency = shared.cfg.concurrency.max(1);
            tokio::spawn(
                futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|n| (n, rx)) })
                    .for_each_concurrent(concurrency, move |name| {
                        let (api, queue, shared, cluster, signer_name, recorder) = (
                            api.clone(),
                            queue.clone(),
                            shared.clone(),
                            cluster.clone(),
                            signer_name.clone(),
                            recorder.clone(),
                        );
                        async move {
                            let retry = handle(&api, &shared, &recorder, &cluster, &signer_name, &name).await;
                            queue.done(&name);
                            if retry {
                                // The signer could not sign (its intermediate not issued yet,
                                // the management cluster unreachable): tried again for as long
                                // as the request waits.
                                tokio::spawn(async move {
                                    tokio::time::sleep(RETRY_AFTER).await;
                                    queue.push(&name);
                                });
                            }
                        }
                    }),
            )
        };
    // Requests dropped by a full queue are picked up by a listing once there is room.
    let relist = {
        let (api, queue, shared, signer_name) = (api.clone(), queue.clone(), shared.clone(), signer_name.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if queue.tx.capacity() * 2 < shared.cfg.queue || !queue.overflowed.swap(false, Ordering::Relaxed) {
                    continue;
                }
                let lp = ListParams::default().fields(&format!("spec.signerName={signer_name}"));
                match api.list(&lp).await {
                    Ok(list) => {
                        let now = (shared.cfg.clock)();
                        for csr in list.items.iter().filter(|c| standing(c, &signer_name, now) == Standing::ToSign) {
                            queue.push(&csr.name_any());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::store::describe(&e), "cannot list requests");
                        queue.overflowed.store(true, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let config =
        watcher::Config::default().fields(&format!("spec.signerName={signer_name}")).timeout(shared.cfg.watch_secs);
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(csr) | watcher::Event::InitApply(csr)) => {
                if standing(&csr, &signer_name, (shared.cfg.clock)()) == Standing::ToSign {
                    queue.push(&csr.name_any());
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(cluster, error = %e, "request watch failed; retrying with backoff"),
        }
    }
    worker.abort();
    relist.abort();
}

/// How long a request the signer could not sign waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Answers the request `name` as it is now (read again: the watch may be behind). Returns
/// whether to try again later (the signer, not the request, failed).
async fn handle(
    api: &Api<CertificateSigningRequest>,
    shared: &Arc<Shared>,
    recorder: &Recorder,
    cluster: &str,
    signer_name: &str,
    name: &str,
) -> bool {
    let policy_key = &shared.cfg.policy_key;
    for _attempt in 0..2 {
        let csr = match api.get_opt(name).await {
            Ok(Some(c)) => c,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(cluster, request = name, error = %crate::store::describe(&e), "cannot read the request");
                return true;
            }
        };
        let now = (shared.cfg.clock)();
        if standing(&csr, signer_name, now) != Standing::ToSign {
            return false;
        }
        let (s, c, req) = (shared.clone(), cluster.to_owned(), csr.clone());
        let decided = tokio::task::spawn_blocking(move || {
            let Some(ca) = s.ca(&c).map_err(|e| e.to_string())? else {
                return Err(format!(
                    "no intermediate for {c} yet ({}): the policy has not issued it",
                    s.store.location(&meshca_ops::ra::key_secret(&s.cfg.mgmt_cluster, &s.cfg.policy, &c))
                ));
            };
            let rules = &s
                .cfg
                .policy
                .workload_signing
                .as_ref()
                .map(|w| w.rules.clone())
                .unwrap_or_else(|| meshca::WorkloadRules::new("cluster.local"));
            answer(&req, &ca, rules, &mut meshca::OsRng, now).map_err(|e| e.to_string())
        })
        .await;
        let answer = match decided {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                shared.cfg.metrics.observe_workload(policy_key, cluster, "error", "SignerUnavailable");
                tracing::warn!(cluster, request = name, error = %e, "cannot sign; the request waits");
                return true;
            }
            Err(e) => {
                tracing::warn!(cluster, request = name, error = %e, "signing task failed");
                return true;
            }
        };
        let body = answered(&csr, &answer, now);
        match api.replace_status(name, &PostParams::default(), &body).await {
            Ok(_) => {
                match &answer {
                    Answer::Issue(cert) => {
                        shared.cfg.metrics.observe_workload(policy_key, cluster, "issued", "Issued");
                        tracing::debug!(cluster, request = name, id = %cert.spiffe_id, "issued");
                    }
                    Answer::Refuse(r) => {
                        shared.cfg.metrics.observe_workload(policy_key, cluster, "failed", r.reason.as_str());
                        tracing::warn!(cluster, request = name, reason = r.reason.as_str(), message = %r.message, "refused");
                        let ev = Event {
                            type_: EventType::Warning,
                            reason: r.reason.as_str().into(),
                            note: Some(r.message.chars().take(1000).collect()),
                            action: "Sign".into(),
                            secondary: None,
                        };
                        if let Err(e) = recorder.publish(&ev, &csr.object_ref(&())).await {
                            tracing::debug!(error = %crate::store::describe(&e), "cannot publish event");
                        }
                    }
                }
                return false;
            }
            // Changed since it was read (another replica, an approver): read it again.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                tracing::warn!(cluster, request = name, error = %crate::store::describe(&e), "cannot answer the request");
                return true;
            }
        }
    }
    // Changed twice while it was answered: read again later.
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn csr(signer: &str, created: OffsetDateTime, status: serde_json::Value) -> CertificateSigningRequest {
        serde_json::from_value(json!({
            "metadata": {"name": "r", "creationTimestamp": meshca::format_time(created)},
            "spec": {"request": "", "signerName": signer},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn only_approved_unanswered_recent_requests_for_this_signer_are_signed() {
        let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let approved = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        let with =
            |t: &str| json!({"conditions": [{"type": "Approved", "status": "True"}, {"type": t, "status": "True"}]});
        let s = |signer, created, status| standing(&csr(signer, created, status), "meshca.dev/istio", now);
        assert_eq!(s("meshca.dev/istio", now, approved.clone()), Standing::ToSign);
        assert_eq!(s("example.com/x", now, approved.clone()), Standing::OtherSigner);
        assert_eq!(s("meshca.dev/istio", now, json!({})), Standing::NotApproved);
        let not_true = json!({"conditions": [{"type": "Approved", "status": "False"}]});
        assert_eq!(s("meshca.dev/istio", now, not_true), Standing::NotApproved);
        assert_eq!(s("meshca.dev/istio", now, with("Denied")), Standing::Denied);
        assert_eq!(s("meshca.dev/istio", now, with("Failed")), Standing::Failed);
        let issued = json!({"certificate": "Zm9v", "conditions": [{"type": "Approved", "status": "True"}]});
        assert_eq!(s("meshca.dev/istio", now, issued), Standing::Issued);
        let hour = time::Duration::seconds(MAX_REQUEST_AGE.as_secs() as i64);
        assert_eq!(s("meshca.dev/istio", now - hour, approved.clone()), Standing::ToSign, "at the hour");
        assert_eq!(s("meshca.dev/istio", now - hour - time::Duration::SECOND, approved), Standing::Stale);
    }

    #[test]
    fn a_refusal_is_a_failed_condition_naming_its_rule() {
        let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let c = csr("meshca.dev/istio", now, json!({"conditions": [{"type": "Approved", "status": "True"}]}));
        let refusal =
            Refusal { reason: meshca::RefusalReason::SanNotAllowed, message: "2 URI SANs; exactly one".into() };
        let out = answered(&c, &Answer::Refuse(refusal), now);
        let failed = out.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "Failed").unwrap();
        assert_eq!((failed.status.as_str(), failed.reason.as_deref()), ("True", Some("SanNotAllowed")));
        assert_eq!(failed.message.as_deref(), Some("2 URI SANs; exactly one"));
        assert_eq!(failed.last_update_time.unwrap().0.as_second(), now.unix_timestamp());
    }
}
