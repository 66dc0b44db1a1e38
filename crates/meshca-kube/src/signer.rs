//! meshca as the Kubernetes signer for istiod's RA mode (`EXTERNAL_CA=ISTIOD_RA_KUBERNETES_API`,
//! `K8S_SIGNER=<signerName>`): in each workload cluster a policy's `workloadSigning` covers, it
//! watches the `certificates.k8s.io/v1` CertificateSigningRequests for its signer name and
//! answers each approved one through the `/status` subresource, signing with that cluster's
//! intermediate, which is kept on the management side ([`meshca_ops::ra`]). With `mode:
//! podCertificate` or `both` it answers the `certificates.k8s.io/v1beta1` PodCertificateRequests
//! for its name the same way ([`pod_answered`]).
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
use k8s_openapi::api::certificates::v1beta1::PodCertificateRequest;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use kube::api::{ListParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
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
    /// How long a loaded intermediate is used before it is read again. A change to its Secret
    /// (a rotation, a revocation) is seen at once through a watch; this bounds a missed event.
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
    /// The policy's `workloadSigning` rules, every request is checked against.
    rules: meshca::WorkloadRules,
    store: KubeStore,
    cas: Mutex<HashMap<String, (Instant, Arc<SigningCa>)>>,
    /// Counts the intermediates forgotten: a load that began before one is not kept (what it
    /// read may be the replaced intermediate).
    forgotten: std::sync::atomic::AtomicU64,
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
        let epoch = self.forgotten.load(Ordering::SeqCst);
        let Some(ca) = meshca_ops::ra::signing_ca(&self.store, &self.cfg.policy, &self.cfg.mgmt_cluster, cluster, now)?
        else {
            return Ok(None);
        };
        let ca = Arc::new(ca);
        let mut cas = self.cas.lock().unwrap_or_else(|p| p.into_inner());
        if self.forgotten.load(Ordering::SeqCst) == epoch {
            cas.insert(cluster.to_owned(), (Instant::now(), ca.clone()));
        }
        Ok(Some(ca))
    }
}

/// A kind of request the signer answers: CertificateSigningRequests (istiod's RA mode) and
/// PodCertificateRequests (the kubelet, for pods with a podCertificate projected volume).
pub trait SignerRequest:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The kind, in logs.
    const KIND: &'static str;
    /// Whether objects live in namespaces.
    const NAMESPACED: bool;
    /// The API of the objects in `namespace` (`None`: all, or a cluster-scoped kind).
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
    /// Where this request stands for the signer `signer_name` at `now`.
    fn standing(&self, signer_name: &str, now: OffsetDateTime) -> Standing;
    /// The answer to this request, signed with `ca`; the error is the signer's.
    fn answer(
        &self,
        ca: &SigningCa,
        rules: &meshca::WorkloadRules,
        rng: &mut dyn meshca::Entropy,
        now: OffsetDateTime,
    ) -> Result<Answer, meshca::Error>;
    /// This request with `answer` in its status, for `/status`.
    fn answered(&self, answer: &Answer, now: OffsetDateTime) -> Self;
}

impl SignerRequest for CertificateSigningRequest {
    const KIND: &'static str = "CertificateSigningRequest";
    const NAMESPACED: bool = false;

    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }

    fn standing(&self, signer_name: &str, now: OffsetDateTime) -> Standing {
        standing(self, signer_name, now)
    }

    fn answer(
        &self,
        ca: &SigningCa,
        rules: &meshca::WorkloadRules,
        rng: &mut dyn meshca::Entropy,
        now: OffsetDateTime,
    ) -> Result<Answer, meshca::Error> {
        answer(self, ca, rules, rng, now)
    }

    fn answered(&self, answer: &Answer, now: OffsetDateTime) -> Self {
        answered(self, answer, now)
    }
}

impl SignerRequest for PodCertificateRequest {
    const KIND: &'static str = "PodCertificateRequest";
    const NAMESPACED: bool = true;

    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }

    fn standing(&self, signer_name: &str, now: OffsetDateTime) -> Standing {
        pod_standing(self, signer_name, now)
    }

    fn answer(
        &self,
        ca: &SigningCa,
        rules: &meshca::WorkloadRules,
        rng: &mut dyn meshca::Entropy,
        now: OffsetDateTime,
    ) -> Result<Answer, meshca::Error> {
        pod_answer(self, ca, rules, rng, now)
    }

    fn answered(&self, answer: &Answer, now: OffsetDateTime) -> Self {
        pod_answered(self, answer, now)
    }
}

/// Where a PodCertificateRequest stands for the signer `signer_name` at `now`: no approval step
/// (the API server checked the pod, its key and the proof of possession).
pub fn pod_standing(pcr: &PodCertificateRequest, signer_name: &str, now: OffsetDateTime) -> Standing {
    if pcr.spec.signer_name != signer_name {
        return Standing::OtherSigner;
    }
    let status = pcr.status.as_ref();
    let has = |t: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"))
    };
    if status.and_then(|s| s.certificate_chain.as_ref()).is_some_and(|c| !c.is_empty()) || has("Issued") {
        return Standing::Issued;
    }
    if has("Failed") {
        return Standing::Failed;
    }
    if has("Denied") {
        return Standing::Denied;
    }
    let created = pcr.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second());
    if created.is_some_and(|c| now.unix_timestamp().saturating_sub(c) > MAX_REQUEST_AGE.as_secs() as i64) {
        return Standing::Stale;
    }
    Standing::ToSign
}

/// Answers a pod's request: its key, for its own identity (the request's namespace and
/// service account), for `maxExpirationSeconds`.
pub fn pod_answer(
    pcr: &PodCertificateRequest,
    ca: &SigningCa,
    rules: &meshca::WorkloadRules,
    rng: &mut dyn meshca::Entropy,
    now: OffsetDateTime,
) -> Result<Answer, meshca::Error> {
    let ns = pcr.metadata.namespace.as_deref().unwrap_or_default();
    let mut req = meshca::PodKeyRequest::new(&pcr.spec.pkix_public_key.0, ns, &pcr.spec.service_account_name);
    req.max_expiration_seconds = pcr.spec.max_expiration_seconds.map(i64::from);
    Ok(match ca.sign_pod_key(&req, rules, rng, now)? {
        Ok(cert) => Answer::Issue(Box::new(cert)),
        Err(refusal) => Answer::Refuse(refusal),
    })
}

/// `pcr` with its answer: the chain, notBefore, notAfter, beginRefreshAt (half-way through the
/// certificate's life from now) and an `Issued` condition; or a `Denied` condition, with the
/// standard reason `UnsupportedKeyType` for a key meshca does not sign, else the rule's.
pub fn pod_answered(pcr: &PodCertificateRequest, answer: &Answer, now: OffsetDateTime) -> PodCertificateRequest {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    let mut out = pcr.clone();
    let generation = pcr.metadata.generation;
    let status = out.status.get_or_insert_with(Default::default);
    let condition = |type_: &str, reason: &str, message: String| Condition {
        type_: type_.into(),
        status: "True".into(),
        reason: reason.into(),
        message,
        last_transition_time: time_of(now),
        observed_generation: generation,
    };
    match answer {
        Answer::Issue(cert) => {
            let not_after = cert.cert.not_after();
            status.certificate_chain = Some(cert.chain_pem());
            status.not_before = Some(time_of(cert.cert.not_before()));
            status.not_after = Some(time_of(not_after));
            status.begin_refresh_at = Some(time_of(now + (not_after - now) / 2));
            status.conditions.get_or_insert_with(Vec::new).push(condition(
                "Issued",
                "Issued",
                format!("issued for {}", cert.spiffe_id),
            ));
        }
        Answer::Refuse(r) => {
            let reason = match r.reason {
                meshca::RefusalReason::KeyNotAllowed => "UnsupportedKeyType",
                other => other.as_str(),
            };
            status.conditions.get_or_insert_with(Vec::new).push(condition("Denied", reason, r.message.clone()));
        }
    }
    out
}

/// Runs the signer for every workload cluster of `clusters` the policy's `workloadSigning`
/// covers (CertificateSigningRequests, PodCertificateRequests or both, as its `mode` says),
/// until the task is dropped. `mgmt` reads the intermediates.
pub async fn run(cfg: SignerConfig, mgmt: Client, clusters: BTreeMap<String, Client>) -> Result<(), Error> {
    let Some(ws) = cfg.policy.workload_signing.clone() else {
        return Err(Error::Config {
            context: format!("RootTrustPolicy {}", cfg.policy_key),
            detail: "spec.config.workloadSigning is not set: there is nothing to sign for".into(),
        });
    };
    let store = KubeStore::new(tokio::runtime::Handle::current(), [(cfg.mgmt_cluster.clone(), mgmt.clone())].into());
    let shared = Arc::new(Shared {
        cfg,
        rules: ws.rules.clone(),
        store,
        cas: Mutex::new(HashMap::new()),
        forgotten: Default::default(),
    });
    // A JoinSet aborts its tasks when dropped: a signer stopped (its task aborted by the
    // controller or a test) stops signing in every cluster at once.
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(forget_replaced_intermediates(mgmt, shared.clone()));
    for (name, client) in clusters {
        if name == shared.cfg.mgmt_cluster || !ws.covers(&name) {
            continue;
        }
        let signer = ws.signer_name.clone();
        if ws.mode.csr() {
            tracing::info!(cluster = %name, signer = %signer, "signing CertificateSigningRequests");
            let (n, c, s, sn) = (name.clone(), client.clone(), shared.clone(), signer.clone());
            tasks.spawn(sign_cluster::<CertificateSigningRequest>(n, c, s, sn));
        }
        if ws.mode.pod_certificate() {
            tracing::info!(cluster = %name, signer = %signer, "signing PodCertificateRequests");
            tasks.spawn(sign_cluster::<PodCertificateRequest>(name, client, shared.clone(), signer));
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Watches the Secrets beside the policy that keep RA intermediates, and forgets a loaded
/// intermediate as soon as its Secret changes: after a rotation or a revocation the next
/// request is signed with the new one, not with a revoked one for up to
/// [`SignerConfig::reload_after`] (which stays as the backstop of a missed event).
async fn forget_replaced_intermediates(mgmt: Client, shared: Arc<Shared>) {
    use k8s_openapi::api::core::v1::Secret;
    let api: Api<Secret> = Api::namespaced(mgmt, &shared.cfg.policy.namespace);
    let (k, v) = meshca_ops::manifest::MANAGED_BY;
    let config = watcher::Config::default().labels(&format!("{k}={v}")).timeout(shared.cfg.watch_secs);
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let forget = |cluster: Option<&str>| {
        let mut cas = shared.cas.lock().unwrap_or_else(|p| p.into_inner());
        shared.forgotten.fetch_add(1, Ordering::SeqCst);
        match cluster {
            Some(c) => {
                cas.remove(c);
            }
            None => cas.clear(),
        }
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(s) | watcher::Event::Delete(s)) => {
                if let Some(cluster) = s.name_any().strip_prefix("meshca-ra-") {
                    forget(Some(cluster));
                }
            }
            // A re-list may have missed changes: forget them all.
            Ok(watcher::Event::InitDone) => forget(None),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "intermediate watch failed; retrying with backoff"),
        }
    }
}

/// Aborts a task when dropped (the watch loop's helpers end with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A request in the queue: its namespace (for namespaced kinds) and name.
type Named = (Option<String>, String);

struct Queue {
    tx: tokio::sync::mpsc::Sender<Named>,
    queued: Mutex<HashSet<Named>>,
    overflowed: AtomicBool,
}

impl Queue {
    fn push(&self, item: Named) {
        if !self.queued.lock().unwrap_or_else(|p| p.into_inner()).insert(item.clone()) {
            return;
        }
        if self.tx.try_send(item.clone()).is_err() {
            self.queued.lock().unwrap_or_else(|p| p.into_inner()).remove(&item);
            if !self.overflowed.swap(true, Ordering::Relaxed) {
                tracing::warn!("the signing queue is full; requests wait for the next listing");
            }
        }
    }

    fn done(&self, item: &Named) {
        self.queued.lock().unwrap_or_else(|p| p.into_inner()).remove(item);
    }
}

fn named<R: SignerRequest>(r: &R) -> Named {
    (r.meta().namespace.clone().filter(|_| R::NAMESPACED), r.name_any())
}

async fn sign_cluster<R: SignerRequest>(cluster: String, client: Client, shared: Arc<Shared>, signer_name: String) {
    let all: Api<R> = R::api(client.clone(), None);
    let (tx, rx) = tokio::sync::mpsc::channel::<Named>(shared.cfg.queue.max(1));
    let queue = Arc::new(Queue { tx, queued: Mutex::new(HashSet::new()), overflowed: AtomicBool::new(false) });
    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: "meshca-signer".into(), instance: Some(shared.cfg.identity.clone()) },
    );
    let worker =
        {
            let (queue, shared, cluster, signer_name) =
                (queue.clone(), shared.clone(), cluster.clone(), signer_name.clone());
            let concurrency = shared.cfg.concurrency.max(1);
            AbortOnDrop(tokio::spawn(
                futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|n| (n, rx)) })
                    .for_each_concurrent(concurrency, move |item: Named| {
                        let (client, queue, shared, cluster, signer_name, recorder) = (
                            client.clone(),
                            queue.clone(),
                            shared.clone(),
                            cluster.clone(),
                            signer_name.clone(),
                            recorder.clone(),
                        );
                        async move {
                            let api = R::api(client, item.0.as_deref());
                            let retry = handle(&api, &shared, &recorder, &cluster, &signer_name, &item.1).await;
                            queue.done(&item);
                            if retry {
                                // The signer could not sign (its intermediate not issued yet, the
                                // management cluster unreachable): tried again for as long as the
                                // request waits.
                                tokio::spawn(async move {
                                    tokio::time::sleep(RETRY_AFTER).await;
                                    queue.push(item);
                                });
                            }
                        }
                    }),
            ))
        };
    // Requests dropped by a full queue are picked up by a listing once there is room.
    let relist = {
        let (api, queue, shared, signer_name) = (all.clone(), queue.clone(), shared.clone(), signer_name.clone());
        AbortOnDrop(tokio::spawn(async move {
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
                        for r in list.items.iter().filter(|r| r.standing(&signer_name, now) == Standing::ToSign) {
                            queue.push(named(r));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::store::describe(&e), "cannot list requests");
                        queue.overflowed.store(true, Ordering::Relaxed);
                    }
                }
            }
        }))
    };
    let config =
        watcher::Config::default().fields(&format!("spec.signerName={signer_name}")).timeout(shared.cfg.watch_secs);
    let mut events = watcher::watcher(all, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r)) => {
                if r.standing(&signer_name, (shared.cfg.clock)()) == Standing::ToSign {
                    queue.push(named(&r));
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(cluster, kind = R::KIND, error = %e, "request watch failed; retrying with backoff")
            }
        }
    }
    drop((worker, relist));
}

/// Why the signer could not answer a request (the request waits and is tried again).
#[derive(Debug, thiserror::Error)]
enum Unavailable {
    /// The management cluster could not be read, or what it holds is not a valid bundle.
    #[error(transparent)]
    Store(meshca_ops::Error),
    /// The policy has not issued the cluster's intermediate yet.
    #[error("no intermediate for {cluster} yet ({kept}): the policy has not issued it")]
    NotIssued {
        /// The cluster.
        cluster: String,
        /// Where it will be kept.
        kept: String,
    },
    /// The intermediate cannot sign (not valid now, its key unusable).
    #[error(transparent)]
    Signer(meshca::Error),
}

/// How long a request the signer could not sign waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Answers the request `name` as it is now (read again: the watch may be behind). Returns
/// whether to try again later (the signer, not the request, failed).
async fn handle<R: SignerRequest>(
    api: &Api<R>,
    shared: &Arc<Shared>,
    recorder: &Recorder,
    cluster: &str,
    signer_name: &str,
    name: &str,
) -> bool {
    let policy_key = &shared.cfg.policy_key;
    for _attempt in 0..2 {
        let req = match api.get_opt(name).await {
            Ok(Some(c)) => c,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(cluster, request = name, error = %crate::store::describe(&e), "cannot read the request");
                return true;
            }
        };
        let now = (shared.cfg.clock)();
        if req.standing(signer_name, now) != Standing::ToSign {
            return false;
        }
        let (s, c, r) = (shared.clone(), cluster.to_owned(), req.clone());
        let decided = tokio::task::spawn_blocking(move || {
            let Some(ca) = s.ca(&c).map_err(Unavailable::Store)? else {
                let kept = s.store.location(&meshca_ops::ra::key_secret(&s.cfg.mgmt_cluster, &s.cfg.policy, &c));
                return Err(Unavailable::NotIssued { cluster: c, kept });
            };
            r.answer(&ca, &s.rules, &mut meshca::OsRng, now).map_err(Unavailable::Signer)
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
        let body = req.answered(&answer, now);
        match api.replace_status(name, &PostParams::default(), &body).await {
            Ok(_) => {
                match &answer {
                    Answer::Issue(cert) => {
                        shared.cfg.metrics.observe_workload(policy_key, cluster, "issued", "Issued");
                        tracing::debug!(cluster, kind = R::KIND, request = name, id = %cert.spiffe_id, "issued");
                    }
                    Answer::Refuse(r) => {
                        shared.cfg.metrics.observe_workload(policy_key, cluster, "failed", r.reason.as_str());
                        tracing::warn!(cluster, kind = R::KIND, request = name, reason = r.reason.as_str(), message = %r.message, "refused");
                        let ev = Event {
                            type_: EventType::Warning,
                            reason: r.reason.as_str().into(),
                            note: Some(r.message.chars().take(1000).collect()),
                            action: "Sign".into(),
                            secondary: None,
                        };
                        if let Err(e) = recorder.publish(&ev, &req.object_ref(&())).await {
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
    fn a_pod_s_request_needs_no_approval_and_is_answered_once() {
        let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let pcr = |signer: &str, created: OffsetDateTime, status: serde_json::Value| -> PodCertificateRequest {
            serde_json::from_value(json!({
                "metadata": {"name": "p", "namespace": "shop", "creationTimestamp": meshca::format_time(created)},
                "spec": {"signerName": signer, "podName": "p", "podUID": "u", "serviceAccountName": "sa",
                         "serviceAccountUID": "su", "nodeName": "n", "nodeUID": "nu", "pkixPublicKey": "", "proofOfPossession": ""},
                "status": status,
            }))
            .unwrap()
        };
        let s = |signer, created, status| pod_standing(&pcr(signer, created, status), "meshca.dev/istio", now);
        let cond = |t: &str| json!({"conditions": [{"type": t, "status": "True", "reason": "R", "message": "", "lastTransitionTime": "2030-01-01T00:00:00Z"}]});
        assert_eq!(s("meshca.dev/istio", now, json!({})), Standing::ToSign);
        assert_eq!(s("example.com/x", now, json!({})), Standing::OtherSigner);
        assert_eq!(s("meshca.dev/istio", now, cond("Issued")), Standing::Issued);
        assert_eq!(s("meshca.dev/istio", now, json!({"certificateChain": "x"})), Standing::Issued);
        assert_eq!(s("meshca.dev/istio", now, cond("Denied")), Standing::Denied);
        assert_eq!(s("meshca.dev/istio", now, cond("Failed")), Standing::Failed);
        assert_eq!(s("meshca.dev/istio", now - time::Duration::hours(2), json!({})), Standing::Stale);
        // A refusal of the key is the standard UnsupportedKeyType denial.
        let refusal = Refusal { reason: meshca::RefusalReason::KeyNotAllowed, message: "an Ed25519 key".into() };
        let out = pod_answered(&pcr("meshca.dev/istio", now, json!({})), &Answer::Refuse(refusal), now);
        let c = &out.status.unwrap().conditions.unwrap()[0];
        assert_eq!((c.type_.as_str(), c.reason.as_str(), c.status.as_str()), ("Denied", "UnsupportedKeyType", "True"));
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
