//! The controller: watches RootTrustPolicy objects on the management cluster, runs the same
//! reconcile loop as the CLI against every workload cluster (found through Istio's remote
//! secrets), writes status and Events, and requeues each policy at the next rotation time the
//! core's plan computed. Failures back off exponentially.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::store::Writer;
use kube::runtime::{watcher, Controller, PredicateConfig, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tracing::Instrument;

use meshca_ops::reconcile::{self, Action as Outcome, Options, Report, Run};
use meshca_ops::rootrotation::{Notice, RotationReport, StepOutcome, StepState};

use crate::crd::{
    ClusterStatus, Condition, PolicyState, PolicyStatus, RevocationStatus, RevokedStatus, RotationClusterStatus,
    RotationStatus,
};
use crate::leader::{self, Clock, LeaseConfig};
use crate::store::KubeStore;
use crate::{clusters, crd, Error};

/// Annotation on a RootTrustPolicy asking the controller to revoke cluster CAs:
/// `CLUSTER[,CLUSTER...][@NONCE]`. Each value is acted on once (the value handled is kept in
/// `status.revocation.handledRequest`); change the nonce to revoke the same cluster again, e.g.
/// `kubectl annotate roottrustpolicy P meshca.dev/revoke="c2@$(date -u +%FT%TZ)" --overwrite`.
pub const REVOKE_ANNOTATION: &str = "meshca.dev/revoke";

/// Annotation: why (`keyCompromise`, the default, `superseded` or `cessationOfOperation`).
pub const REVOKE_REASON_ANNOTATION: &str = "meshca.dev/revoke-reason";

/// A revocation asked for through [`REVOKE_ANNOTATION`], not yet handled.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RevokeRequest {
    value: String,
    clusters: Vec<String>,
    reason: meshca::RevocationReason,
}

/// Why a revocation request annotation cannot be acted on (its message goes to status and an
/// event; the value itself is not repeated).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum BadRequest {
    #[error("annotation {REVOKE_ANNOTATION}: longer than 4096 bytes")]
    TooLong,
    #[error("annotation {REVOKE_ANNOTATION}: {0}")]
    Cluster(String),
    #[error("annotation {REVOKE_ANNOTATION}: names no cluster; give CLUSTER[,CLUSTER...][@NONCE]")]
    NoCluster,
    #[error("annotation {REVOKE_REASON_ANNOTATION}: {0}")]
    Reason(String),
}

/// What a pass reads back from the policy's own status, read once. The status is JSON here: the
/// controller watches `DynamicObject`, not `Api<RootTrustPolicy>`, because a policy whose spec
/// does not deserialize must still get a status saying why (`InvalidPolicy`; the kube test
/// `a_spec_that_does_not_deserialize_still_gets_a_status` shows why), and a typed watch would fail
/// on it instead. Everything else works on typed values from here on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Previous {
    /// The revoke annotation value last handled.
    handled_request: Option<String>,
    /// The rotation last reported: its old and new root.
    rotation_roots: Option<(String, String)>,
    /// The phases the last rotation reached (absent when status has none).
    phases: Option<Vec<String>>,
    /// Each cluster's last rotation time, as written.
    last_rotation: BTreeMap<String, String>,
    /// The clusters status lists.
    clusters: Vec<String>,
}

impl Previous {
    fn of(obj: &DynamicObject) -> Previous {
        let status = obj.data.get("status");
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let rotation = status.and_then(|s| s.get("rotation"));
        let clusters = status.and_then(|s| s.get("clusters")).and_then(Value::as_object);
        Previous {
            handled_request: text(status.and_then(|s| s.get("revocation")).and_then(|r| r.get("handledRequest"))),
            rotation_roots: text(rotation.and_then(|r| r.get("oldRoot")))
                .zip(text(rotation.and_then(|r| r.get("newRoot")))),
            phases: rotation
                .and_then(|r| r.get("phases"))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()),
            last_rotation: clusters
                .into_iter()
                .flatten()
                .filter_map(|(c, v)| text(v.get("lastRotation")).map(|t| (c.clone(), t)))
                .collect(),
            clusters: clusters.into_iter().flatten().map(|(c, _)| c.clone()).collect(),
        }
    }
}

/// Reads the policy's revocation request from its `annotations`: `None` when there is none or
/// it is the one `handled` already; an error (for status) when it names no valid cluster or
/// reason.
fn revoke_request(
    annotations: &BTreeMap<String, String>,
    handled: Option<&str>,
) -> Result<Option<RevokeRequest>, BadRequest> {
    let Some(value) = annotations.get(REVOKE_ANNOTATION) else { return Ok(None) };
    if handled == Some(value.as_str()) {
        return Ok(None);
    }
    if value.len() > 4096 {
        return Err(BadRequest::TooLong);
    }
    let names = value.split('@').next().unwrap_or_default();
    let mut clusters = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        meshca::validate_cluster_name(name).map_err(|e| BadRequest::Cluster(e.to_string()))?;
        if !clusters.iter().any(|c| c == name) {
            clusters.push(name.to_owned());
        }
    }
    if clusters.is_empty() {
        return Err(BadRequest::NoCluster);
    }
    let reason = match annotations.get(REVOKE_REASON_ANNOTATION) {
        Some(r) => r.parse().map_err(|e: meshca::Error| BadRequest::Reason(e.to_string()))?,
        None => meshca::RevocationReason::KeyCompromise,
    };
    Ok(Some(RevokeRequest { value: value.clone(), clusters, reason }))
}

/// What re-runs a policy: a new generation (a spec change) or a new revocation request; not
/// the controller's own status writes.
fn trigger_key(obj: &DynamicObject) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.metadata.generation.hash(&mut h);
    obj.annotations().get(REVOKE_ANNOTATION).hash(&mut h);
    Some(h.finish())
}

/// How the controller runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ControllerConfig {
    /// Watch policies in this namespace only (`None`: all namespaces).
    pub namespace: Option<String>,
    /// The management cluster's name in reports and the store.
    pub mgmt_cluster: String,
    /// Where Istio's remote secrets live on the management cluster.
    pub remote_secret_namespace: String,
    /// Replace `cacerts` Secrets meshca did not create.
    pub adopt: bool,
    /// Bound on each API call.
    pub timeout: Duration,
    /// Leader election (`None`: run unconditionally, e.g. in tests with one replica).
    pub lease: Option<LeaseConfig>,
    /// This replica's name, for Events.
    pub identity: String,
    /// Where the controller reads the time (the wall clock; tests may pin it).
    pub clock: Clock,
    /// The PKCS#11 module a policy's `mgmtServerCa.pkcs11` key is reached through (the PIN comes
    /// from the policy's `pinSecretRef`). One session pool per key is kept across passes.
    pub token: meshca_ops::reconcile::TokenAccess,
    /// How a policy's `mgmtServerCa.vault` PKI is logged in to beyond what the policy says (the
    /// service account token's path for `auth.kubernetes`; a token for a policy without `auth`).
    pub provider: meshca_ops::context::ProviderAccess,
    /// Where the controller records its metrics and readiness (served by
    /// [`crate::metrics::serve`]).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The SPIFFE bundle endpoint the policies' bundles are served on, when there is one
    /// ([`crate::bundle_endpoint::BundleEndpoint::serve`]): each pass publishes its policy's.
    pub bundle_endpoint: Option<crate::bundle_endpoint::BundleEndpoint>,
}

impl ControllerConfig {
    /// Defaults: all namespaces, management cluster `mgmt`, remote secrets in `istio-system`.
    pub fn new(identity: &str) -> Self {
        ControllerConfig {
            namespace: None,
            mgmt_cluster: "mgmt".into(),
            remote_secret_namespace: "istio-system".into(),
            adopt: false,
            timeout: Duration::from_secs(20),
            lease: None,
            identity: identity.to_owned(),
            clock: OffsetDateTime::now_utc,
            token: meshca_ops::reconcile::TokenAccess::default(),
            provider: meshca_ops::context::ProviderAccess::default(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            bundle_endpoint: None,
        }
    }
}

struct Ctx {
    /// What meshca last wrote, so the fleet's watches skip its own writes.
    written: crate::store::Written,
    /// What each cluster's discovery said of ClusterTrustBundles, across passes.
    discovery: crate::store::DiscoveryCache,
    /// The management-cluster Secrets the policies name.
    referenced: crate::fleet::Referenced,
    mgmt: Client,
    cfg: ControllerConfig,
    ar: ApiResource,
    recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
    /// The status this replica last wrote to each policy (by namespace/name and uid). A pass
    /// reads the policy from the watch cache, which may not have seen that write yet (a pass a
    /// fleet watch triggers can start before the status patch's own event arrives): read from
    /// a stale status, the phases a rotation reached would be lost and a revoke request handled
    /// twice. Only the leader writes status, and it exits when it loses the lease, so what it
    /// remembers is never older than the cache.
    written_status: Mutex<HashMap<String, Value>>,
    /// The issuance log entries this replica announced as Events, per policy.
    audit_seen: Mutex<HashMap<String, u64>>,
    /// What the fleet's watches saw change.
    changes: crate::fleet::ChangeLog,
    /// Each policy's last pass over the fleet (by namespace/name and uid), brought up to date
    /// by the passes over changed clusters since.
    last_pass: Mutex<HashMap<String, LastPass>>,
    /// The workload clusters' clients, rebuilt only when a remote secret's kubeconfig changes.
    clients: clusters::ClientCache,
    /// The Kubernetes signer of each policy with `workloadSigning` (by namespace/name): what it
    /// was started for, and its task.
    signers: Signers,
}

/// The Kubernetes signers the controller runs, by policy: what each was started for, its task.
type Signers = Arc<Mutex<HashMap<String, (u64, tokio::task::JoinHandle<()>)>>>;

/// A policy's view of the fleet after its last pass: what the watches had seen change when it
/// began, the generation it ran for, and every cluster's row.
#[derive(Clone, Debug)]
struct LastPass {
    seen: u64,
    generation: Option<i64>,
    report: Report,
}

/// What a pass of a policy covers: the clusters whose `cacerts` or remote secret changed since
/// its last pass, and the clusters that joined the fleet since, when that pass is of the same
/// generation, nothing needs the fleet (a revoke request, whose lists every cluster needs; a
/// root rotation, after which there is no last pass) and no planned check is due; else every
/// workload cluster. Clusters that left need no work: [`merged`] drops their rows, and when
/// nothing else changed the scope is empty.
fn scope_of(
    last: Option<&LastPass>,
    changes: &crate::fleet::Changes,
    generation: Option<i64>,
    now: OffsetDateTime,
    revoking: bool,
    workload: &[String],
) -> crate::fleet::Scope {
    use crate::fleet::Scope;
    let Some(last) = last else { return Scope::Fleet };
    // Sets: a fleet of a thousand clusters is compared on every pass.
    let workload_set: std::collections::HashSet<&str> = workload.iter().map(String::as_str).collect();
    if revoking || last.generation != generation || last.report.next_check.is_some_and(|t| t <= now) {
        return Scope::Fleet;
    }
    match changes.since(last.seen) {
        Some(Scope::Clusters(changed)) => {
            let known: std::collections::HashSet<&str> =
                last.report.clusters.iter().map(|c| c.cluster.as_str()).collect();
            let removed = known.iter().any(|c| !workload_set.contains(c));
            let mut scope: BTreeSet<String> =
                changed.into_iter().filter(|c| workload_set.contains(c.as_str())).collect();
            scope.extend(workload.iter().filter(|c| !known.contains(c.as_str())).cloned());
            if scope.is_empty() && !removed {
                // Only clusters that are not (or no longer) in the fleet changed.
                Scope::Fleet
            } else {
                Scope::Clusters(scope.into_iter().collect())
            }
        }
        // Nothing changed: a planned requeue, a retry, or a policy event of its own.
        Some(Scope::Fleet) | None => Scope::Fleet,
    }
}

/// The fleet's report after a pass over some of its clusters: `last`'s rows of the clusters
/// still in `workload`, with the pass's replacing theirs (the others are carried as that pass
/// left them), and the pass's view of the signer, roots and lists. With it, whether it speaks
/// for the fleet: not when the pass found the fleet's trust whole under another root than the
/// last pass did (then only a pass over every cluster can say). A pass that found trust broken
/// reports that.
fn merged(last: &Report, pass: &Report, workload: &[String]) -> (Report, bool) {
    let mut r = last.clone();
    let workload: std::collections::HashSet<&str> = workload.iter().map(String::as_str).collect();
    r.clusters.retain(|c| workload.contains(c.cluster.as_str()));
    for row in &pass.clusters {
        match r.clusters.iter_mut().find(|c| c.cluster == row.cluster) {
            Some(slot) => *slot = row.clone(),
            None => r.clusters.push(row.clone()),
        }
    }
    r.at = pass.at;
    r.signer = pass.signer.clone();
    r.roots = pass.roots.clone();
    r.crl = pass.crl.clone();
    r.notes = pass.notes.clone();
    r.provider_fault = pass.provider_fault;
    // The earlier of the two: a replaced row's old time only brings a pass forward.
    r.next_check = match (last.next_check, pass.next_check) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let same_root = pass.trust.root_fingerprint == last.trust.root_fingerprint;
    if !pass.trust.ok || !same_root {
        r.trust = pass.trust.clone();
    }
    (r, !pass.trust.ok || same_root)
}

impl Ctx {
    fn status_key(obj: &DynamicObject) -> String {
        format!("{}#{}", key(obj), obj.uid().unwrap_or_default())
    }

    /// `obj` with the status fields a pass reads back (`rotation`, and
    /// `revocation.handledRequest`) as this replica last wrote them.
    fn with_written_status(&self, obj: &DynamicObject) -> DynamicObject {
        let written = self.written_status.lock().unwrap_or_else(|p| p.into_inner());
        overlay_status(obj, written.get(&Self::status_key(obj)))
    }

    fn remember_status(&self, obj: &DynamicObject, status: &Value) {
        self.written_status.lock().unwrap_or_else(|p| p.into_inner()).insert(Self::status_key(obj), status.clone());
    }
}

/// `obj` with the status fields a pass reads back (`rotation`, `revocation.handledRequest`)
/// taken from `written`, the status last written, where it has them.
fn overlay_status(obj: &DynamicObject, written: Option<&Value>) -> DynamicObject {
    let mut obj = obj.clone();
    let Some(w) = written else { return obj };
    let status = obj.data.as_object_mut().map(|m| {
        let s = m.entry("status").or_insert_with(|| json!({}));
        if !s.is_object() {
            *s = json!({});
        }
        s
    });
    if let Some(status) = status.and_then(Value::as_object_mut) {
        if let Some(rotation) = w.get("rotation") {
            status.insert("rotation".into(), rotation.clone());
        }
        if let Some(handled) = w.get("revocation").and_then(|r| r.get("handledRequest")) {
            let revocation = status.entry("revocation").or_insert_with(|| json!({}));
            if let Some(r) = revocation.as_object_mut() {
                r.insert("handledRequest".into(), handled.clone());
            }
        }
    }
    obj
}

/// Runs until `shutdown` resolves (or leadership is lost, which is an error: exit and let
/// another replica take over).
pub async fn run(
    mgmt: Client,
    cfg: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    if let Some(lease) = &cfg.lease {
        leader::acquire(&mgmt, lease, cfg.clock).await?;
        tracing::info!(lease = %format!("{}/{}", lease.namespace, lease.name), "holding the leader lease");
    }
    cfg.metrics.set_leading(true);
    let ar = crd::api_resource();
    let api: Api<DynamicObject> = match &cfg.namespace {
        Some(ns) => Api::namespaced_with(mgmt.clone(), ns, &ar),
        None => Api::all_with(mgmt.clone(), &ar),
    };
    let recorder = Recorder::new(
        mgmt.clone(),
        Reporter { controller: "meshca-controller".into(), instance: Some(cfg.identity.clone()) },
    );
    let lease = cfg.lease.clone();
    let clock = cfg.clock;
    let watch_secs = watch_timeout(cfg.timeout);
    let written: crate::store::Written = Arc::default();
    let referenced: crate::fleet::Referenced = Arc::default();
    let (trigger_tx, trigger_rx) = tokio::sync::mpsc::channel::<()>(1);
    let change_log: crate::fleet::ChangeLog = Arc::default();
    let fleet = crate::fleet::FleetWatch {
        mgmt: mgmt.clone(),
        mgmt_cluster: cfg.mgmt_cluster.clone(),
        remote_secret_namespace: cfg.remote_secret_namespace.clone(),
        watch_secs,
        written: written.clone(),
        referenced: referenced.clone(),
        trigger: trigger_tx,
        changes: change_log.clone(),
    };
    let fleet_task = tokio::spawn(fleet.run());
    let signers: Signers = Arc::default();
    let changes = futures::stream::unfold(trigger_rx, |mut rx| async move { rx.recv().await.map(|()| ((), rx)) });
    let ctx = Arc::new(Ctx {
        written,
        discovery: crate::store::DiscoveryCache::default(),
        referenced,
        mgmt: mgmt.clone(),
        cfg,
        ar: ar.clone(),
        recorder,
        failures: Mutex::new(HashMap::new()),
        written_status: Mutex::new(HashMap::new()),
        audit_seen: Mutex::new(HashMap::new()),
        changes: change_log,
        last_pass: Mutex::new(HashMap::new()),
        clients: clusters::ClientCache::default(),
        signers: signers.clone(),
    });
    // Trigger on spec changes (generation), not on our own status writes: a status write would
    // otherwise start another full pass over every cluster. Time-based requeues still run.
    let writer = Writer::new(ar.clone());
    let reader = writer.as_reader();
    // Ready once the first list of policies is in.
    let metrics = ctx.cfg.metrics.clone();
    // The server ends each watch (timeoutSeconds) before the client's read timeout, the
    // per-call bound, would cut it as an error: kube-runtime's watcher then resumes from the
    // last resourceVersion, quietly, with no re-list and no reconcile.
    let trigger = watcher(api, watcher::Config::default().timeout(watch_secs))
        .default_backoff()
        .map_ok(move |event| {
            if matches!(event, watcher::Event::InitDone) {
                metrics.set_synced(true);
            }
            event
        })
        .reflect(writer)
        .applied_objects()
        .predicate_filter(trigger_key, PredicateConfig::default());
    let controller = Controller::for_stream_with(trigger, reader, ar)
        // A cacerts deleted or edited, a cluster added or removed, a signer replaced: a pass now.
        .reconcile_all_on(changes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile_policy, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::warn!(error = %e, "controller");
            }
        });
    let result = match lease {
        Some(lease) => {
            tokio::select! {
                () = controller => Ok(()),
                lost = leader::keep(mgmt, lease, clock) => Err(lost),
            }
        }
        None => {
            controller.await;
            Ok(())
        }
    };
    fleet_task.abort();
    for (_, (_, task)) in signers.lock().unwrap_or_else(|p| p.into_inner()).drain() {
        task.abort();
    }
    result
}

/// Runs the Kubernetes signer of `policy` (its `workloadSigning`) over the workload clusters
/// it covers, restarting it when the policy's spec or those clusters' kubeconfigs change, and
/// stopping it when the policy no longer asks for it. Only the leader reconciles, so only the
/// leader signs.
fn ensure_signer(
    ctx: &Ctx,
    obj: &DynamicObject,
    policy: &meshca_ops::policy::Policy,
    clients: &BTreeMap<String, Client>,
) {
    use std::hash::{Hash, Hasher};
    let policy_key = key(obj);
    let mut signers = ctx.signers.lock().unwrap_or_else(|p| p.into_inner());
    let covered: BTreeMap<String, Client> = match &policy.workload_signing {
        Some(ws) => clients
            .iter()
            .filter(|(n, _)| **n != ctx.cfg.mgmt_cluster && ws.covers(n))
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect(),
        None => BTreeMap::new(),
    };
    let Some(ws) = policy.workload_signing.as_ref().filter(|_| !covered.is_empty()) else {
        // Nothing to sign for (no workloadSigning, or none of its clusters in the fleet).
        if let Some((_, task)) = signers.remove(&policy_key) {
            task.abort();
        }
        return;
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.data.get("spec").map(Value::to_string).hash(&mut h);
    for name in covered.keys() {
        name.hash(&mut h);
        ctx.clients.kubeconfig_of(name).hash(&mut h);
    }
    let fingerprint = h.finish();
    if let Some((f, task)) = signers.get(&policy_key) {
        if *f == fingerprint && !task.is_finished() {
            return;
        }
        task.abort();
    }
    let mut cfg = crate::signer::SignerConfig::new(policy.clone(), &ctx.cfg.mgmt_cluster, ctx.cfg.metrics.clone());
    cfg.policy_key = policy_key.clone();
    cfg.identity = ctx.cfg.identity.clone();
    cfg.clock = ctx.cfg.clock;
    cfg.watch_secs = watch_timeout(ctx.cfg.timeout);
    tracing::info!(signer = %ws.signer_name, clusters = covered.len(), "starting the Kubernetes signer");
    let mgmt = ctx.mgmt.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = crate::signer::run(cfg, mgmt, covered).await {
            tracing::warn!(error = %e, "the Kubernetes signer stopped");
        }
    });
    signers.insert(policy_key, (fingerprint, task));
}

fn key(obj: &DynamicObject) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Exponential backoff: 5 s, 10 s, 20 s ... up to 5 minutes.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs((5u64 << failures.min(6)).min(300))
}

/// How long the API server may hold a policy watch open: a quarter (at least a second) under
/// the per-call timeout the clients read with, and at most kube-runtime's usual 290 s.
pub fn watch_timeout(call_timeout: Duration) -> u32 {
    let secs = call_timeout.as_secs();
    u32::try_from(secs.saturating_sub((secs / 4).max(1)).clamp(1, 290)).unwrap_or(290)
}

fn error_policy(obj: Arc<DynamicObject>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let mut f = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let n = f.entry(key(&obj)).or_insert(0);
    *n += 1;
    tracing::warn!(policy = %key(&obj), error = %err, retry_in = ?backoff(*n), "reconcile failed");
    Action::requeue(backoff(*n))
}

async fn reconcile_policy(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let span = tracing::info_span!("policy", policy = %key(&obj), generation = obj.metadata.generation);
    reconcile_policy_in(obj, ctx).instrument(span).await
}

/// One pass over a policy: parse -> discover -> run(intent) -> publish -> requeue, each step a
/// function of its own.
async fn reconcile_policy_in(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let obj = Arc::new(ctx.with_written_status(&obj));
    let now = (ctx.cfg.clock)();
    let generation = obj.metadata.generation;
    let prev = Previous::of(&obj);
    let policy = match parse_policy(&obj) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "invalid policy");
            set_status(
                &ctx,
                &obj,
                &prev,
                not_ready(PolicyState::Invalid, "InvalidPolicy", &e.to_string(), now, generation),
            )
            .await?;
            publish(&ctx, &obj, EventType::Warning, "InvalidPolicy", "Validate", &e.to_string()).await;
            // Nothing to do until someone edits the policy.
            return Ok(Action::await_change());
        }
    };
    let clients = discover(&ctx).await?;
    ensure_signer(&ctx, &obj, &policy, &clients);
    let workload: Vec<String> = clients.keys().filter(|n| **n != ctx.cfg.mgmt_cluster).cloned().collect();
    if workload.is_empty() {
        let msg = format!(
            "no workload clusters: no remote secrets labelled {} in {}",
            clusters::REMOTE_SECRET_SELECTOR,
            ctx.cfg.remote_secret_namespace
        );
        tracing::warn!("{msg}");
        set_status(&ctx, &obj, &prev, not_ready(PolicyState::Warning, "NoClusters", &msg, now, generation)).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    // A request that cannot be read is reported and ignored: the pass goes on (a typo in an
    // annotation must not stop rotations).
    let (request, request_note) = match revoke_request(obj.annotations(), prev.handled_request.as_deref()) {
        Ok(r) => (r, None),
        Err(bad) => {
            let msg = bad.to_string();
            tracing::warn!(error = %msg, "invalid revocation request; ignored");
            publish(&ctx, &obj, EventType::Warning, "InvalidRevocation", "Revoke", &msg).await;
            (None, Some(format!("{msg}; nothing was revoked")))
        }
    };
    remember_referenced(&ctx, &policy);
    let pass_key = Ctx::status_key(&obj);
    let (seen, scope) = {
        let changes = ctx.changes.lock().unwrap_or_else(|p| p.into_inner());
        let last = ctx.last_pass.lock().unwrap_or_else(|p| p.into_inner());
        let scope = scope_of(last.get(&pass_key), &changes, generation, now, request.is_some(), &workload);
        (changes.last(), scope)
    };
    let partial = matches!(scope, crate::fleet::Scope::Clusters(_));
    let clusters = match scope {
        crate::fleet::Scope::Clusters(changed) => {
            tracing::info!(clusters = %meshca::list_bounded(&changed, 10), "a pass over the clusters that changed");
            changed
        }
        crate::fleet::Scope::Fleet => workload.clone(),
    };
    // Clusters left the fleet and nothing else changed: no cluster to touch, and the last
    // pass's view of the signer and roots stands; the merge below drops the rows that left.
    let nothing_to_run = if partial && clusters.is_empty() {
        ctx.last_pass.lock().unwrap_or_else(|p| p.into_inner()).get(&pass_key).map(|last| {
            let mut r = last.report.clone();
            r.clusters.clear();
            r.at = now;
            r
        })
    } else {
        None
    };
    let store = KubeStore::new(tokio::runtime::Handle::current(), clients)
        .adopt(ctx.cfg.adopt)
        .timeout(ctx.cfg.timeout)
        .record_writes(ctx.written.clone())
        .discovery_cache(ctx.discovery.clone());
    let opts = Options::new(now, clusters)
        .mgmt(&ctx.cfg.mgmt_cluster)
        .generation(generation)
        .token(ctx.cfg.token.clone())
        .provider(ctx.cfg.provider.clone());
    let span = tracing::Span::current();
    let asked = request.clone();
    let endpoint = ctx.cfg.bundle_endpoint.clone().map(|e| (e, key(&obj)));
    // The issuance log's entries past those this replica announced.
    let audit_from = policy
        .audit_log
        .as_ref()
        .map(|_| ctx.audit_seen.lock().unwrap_or_else(|p| p.into_inner()).get(&key(&obj)).copied());
    let ((revoked, run), logged) = match nothing_to_run {
        Some(report) => ((Vec::new(), Ok(Run::Reconciled(report))), None),
        None => tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                let tail = |from: u64, limit: usize| {
                    meshca_ops::audit::tail(&store, &policy, &opts.mgmt_cluster, &opts.token, from, limit)
                };
                // On this replica's first pass, the entries the pass itself appends.
                let audit_from = audit_from.map(|seen| seen.or_else(|| tail(u64::MAX, 0).ok().map(|t| t.size)));
                let pass = run_pass(&store, &policy, &opts, asked);
                if let Some((endpoint, policy_key)) = endpoint {
                    serve_bundle(&store, &policy, &opts, &endpoint, &policy_key);
                }
                let logged = audit_from.map(|from| tail(from.unwrap_or(u64::MAX), EVENTS_PER_PASS));
                (pass, logged)
            })
        })
        .await
        .map_err(|e| Error::Config {
            context: format!("RootTrustPolicy {}", key(&obj)),
            detail: format!("reconcile task failed: {e}"),
        })?,
    };
    if let Some(logged) = logged {
        announce_log(&ctx, &obj, logged).await;
    }
    for r in &revoked {
        ctx.cfg.metrics.observe_revocation(&key(&obj), &r.cluster, &r.reason);
        let note =
            format!("{}: intermediate serial {} revoked ({}); a new one replaces it", r.cluster, r.serial, r.reason);
        tracing::warn!(cluster = %r.cluster, serial = %r.serial, reason = %r.reason, "revoked");
        publish(&ctx, &obj, EventType::Warning, "Revoked", "Revoke", &note).await;
    }
    let last = ctx.last_pass.lock().unwrap_or_else(|p| p.into_inner()).remove(&pass_key);
    let mut requeue_now = false;
    let (mut report, pass) = match run {
        Ok(Run::Reconciled(r)) => {
            // A pass over changed clusters reports the fleet as its last pass left it, with
            // their rows replaced; counters count what this pass did.
            let fleet = match (partial, &last) {
                (false, _) => r.clone(),
                (true, Some(last)) => {
                    let (fleet, speaks) = merged(&last.report, &r, &workload);
                    requeue_now = !speaks;
                    fleet
                }
                (true, None) => {
                    requeue_now = true;
                    r.clone()
                }
            };
            ctx.cfg.metrics.observe_report_rows(&key(&obj), &fleet, &r.clusters);
            ctx.cfg.metrics.observe_distribution(&key(&obj), r.distribution.as_deref(), 0);
            if !requeue_now {
                let entry = LastPass { seen, generation, report: fleet.clone() };
                ctx.last_pass.lock().unwrap_or_else(|p| p.into_inner()).insert(pass_key, entry);
            }
            (fleet, r)
        }
        Ok(Run::RootRotation(rot)) => {
            ctx.cfg.metrics.observe_rotation(&key(&obj), &rot);
            let lagging = match rot.steps.last() {
                Some(StepState::Distributing { lagging }) => lagging.len(),
                _ => 0,
            };
            ctx.cfg.metrics.observe_distribution(&key(&obj), rot.distribution.as_deref(), lagging);
            return rotation_step(&ctx, &obj, &prev, &rot, now, generation).await;
        }
        Err(e) => {
            ctx.cfg.metrics.observe_failure(&key(&obj), e.kind());
            if let meshca_ops::Error::Provider { fault, .. } = &e {
                ctx.cfg.metrics.observe_provider_error(&key(&obj), *fault);
            }
            // Nothing could be done for any cluster: the signer or a passive CA is missing or
            // invalid, or the root rotation refused to go on (the message says why and what to do).
            // No cluster was touched.
            let reason = failure_reason(e.kind());
            tracing::warn!(error = %e, reason, "cannot reconcile");
            set_status(&ctx, &obj, &prev, not_ready(PolicyState::Failed, reason, &e.to_string(), now, generation))
                .await?;
            publish(&ctx, &obj, EventType::Warning, reason, "Reconcile", &e.to_string()).await;
            return Err(e.into());
        }
    };
    report.notes.extend(request_note);
    if let Some(fault) = report.provider_fault {
        ctx.cfg.metrics.observe_provider_error(&key(&obj), fault);
    }
    let handled = request.map(|r| r.value);
    set_status(&ctx, &obj, &prev, status_of(&report, &prev, handled, now, generation)).await?;
    publish_clusters(&ctx, &obj, &pass).await;
    let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let count = failures.entry(key(&obj)).or_insert(0);
    let failed = report.clusters.iter().any(|c| c.action == Outcome::Failed) || !report.trust.ok;
    let wait = requeue_after(failed, report.next_check, now, count);
    if *count == 0 {
        failures.remove(&key(&obj));
    }
    if requeue_now {
        // The clusters that changed and the rest disagree on the root: a pass over all now.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    Ok(Action::requeue(wait))
}

/// Issuance log entries announced as Events per pass at most (one more Event counts the rest).
const EVENTS_PER_PASS: usize = 20;

/// Records the issuance log after a pass: its size and checkpoint as metrics, an Event per
/// entry this replica has not announced yet.
async fn announce_log(ctx: &Ctx, obj: &DynamicObject, logged: Result<meshca_ops::audit::Tail, meshca_ops::Error>) {
    let t = match logged {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the issuance log");
            publish(ctx, obj, EventType::Warning, "AuditLogUnreadable", "Audit", &e.to_string()).await;
            return;
        }
    };
    ctx.cfg.metrics.observe_audit(&key(obj), t.size, t.checkpoint_size);
    ctx.audit_seen.lock().unwrap_or_else(|p| p.into_inner()).insert(key(obj), t.size);
    for (i, e) in &t.entries {
        let note = format!(
            "issuance log entry {i}: {} {} for {} ({}), serial {}",
            e.kind.as_str(),
            meshca::printable(&e.name().unwrap_or_default(), 120),
            e.cluster,
            e.reason,
            e.serial().unwrap_or_else(|| "-".into())
        );
        // Related: the log, at this entry (the recorder folds Events that differ in their note
        // alone into one series; each entry is its own Event).
        let related = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            namespace: obj.metadata.namespace.clone(),
            name: obj.metadata.name.as_ref().map(|n| format!("{n}-audit-log")),
            field_path: Some(format!("entries[{i}]")),
            ..Default::default()
        };
        let ev = Event {
            type_: EventType::Normal,
            reason: "Logged".into(),
            note: Some(note),
            action: "Audit".into(),
            secondary: Some(related),
        };
        if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&ctx.ar)).await {
            tracing::warn!(error = %crate::store::describe(&e), "cannot publish event");
        }
    }
    if t.more > 0 {
        let note = format!("{} more issuance log entries (meshca audit log lists them)", t.more);
        publish(ctx, obj, EventType::Normal, "Logged", "Audit", &note).await;
    }
}

/// Parses the policy object's spec (its status aside) with the rules the CLI applies.
fn parse_policy(obj: &DynamicObject) -> Result<meshca_ops::policy::Policy, meshca_ops::Error> {
    let mut value = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
    }
    meshca_ops::policy::parse_value(value, &format!("RootTrustPolicy {}", key(obj)))
}

/// The clusters of the fleet: the management cluster, and each workload cluster an Istio remote
/// secret names.
async fn discover(ctx: &Ctx) -> Result<BTreeMap<String, Client>, Error> {
    let mut clients: BTreeMap<String, Client> = BTreeMap::new();
    clients.insert(ctx.cfg.mgmt_cluster.clone(), ctx.mgmt.clone());
    for (name, client) in clusters::clients_from_remote_secrets_cached(
        &ctx.mgmt,
        &ctx.cfg.remote_secret_namespace,
        ctx.cfg.timeout,
        &ctx.clients,
    )
    .await?
    {
        clients.insert(name, client);
    }
    Ok(clients)
}

/// Records the management-cluster Secrets `policy` names, so their watch triggers a pass.
fn remember_referenced(ctx: &Ctx, policy: &meshca_ops::policy::Policy) {
    let mut referenced = ctx.referenced.lock().unwrap_or_else(|p| p.into_inner());
    let (ns, name) = policy.signer.secret();
    referenced.insert((ns.to_owned(), name.to_owned()));
    for p in &policy.passive {
        referenced.insert((p.namespace.clone(), p.name.clone()));
    }
    if let Some(r) = &policy.root_rotation {
        referenced.insert((r.new_signer.namespace.clone(), r.new_signer.name.clone()));
    }
}

/// The pass itself (blocking: the store's calls wait on the runtime): with a revoke request,
/// every cluster it names is revoked and the policy runs once; else the usual run. Returns the
/// entries revoked and the run.
fn run_pass(
    store: &dyn meshca_ops::store::Store,
    policy: &meshca_ops::policy::Policy,
    opts: &Options,
    request: Option<RevokeRequest>,
) -> (Vec<meshca_ops::revocation::RevokedCa>, Result<Run, meshca_ops::Error>) {
    let Some(r) = request else {
        return (Vec::new(), reconcile::run(store, policy, opts, &mut meshca::OsRng, &mut |_, _| {}));
    };
    match meshca_ops::revocation::revoke_clusters(
        store,
        policy,
        opts,
        &r.clusters,
        r.reason,
        &mut meshca::OsRng,
        &mut |_, _| {},
    ) {
        Ok(report) => (report.entries, Ok(report.run)),
        Err(e) => (Vec::new(), Err(e)),
    }
}

/// Hands the bundle endpoint what the pass published for `policy`, with the identity its
/// profile serves with (an `https_spiffe` SVID renewed half-way through its life). A failure is
/// logged and the endpoint goes on serving what it had.
fn serve_bundle(
    store: &dyn meshca_ops::store::Store,
    policy: &meshca_ops::policy::Policy,
    opts: &Options,
    endpoint: &crate::bundle_endpoint::BundleEndpoint,
    policy_key: &str,
) {
    use meshca_ops::distribution;
    if policy.trust_distribution.as_ref().and_then(|t| t.spiffe_bundle.as_ref()).is_none() {
        endpoint.forget(policy_key);
        return;
    }
    let published = match distribution::load(store, policy, &opts.mgmt_cluster) {
        Ok(Some(p)) => p,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "the SPIFFE bundle could not be read; the endpoint serves what it had");
            return;
        }
    };
    let current = endpoint.identity(policy_key);
    let identity = match distribution::serving_identity(store, policy, opts, current.as_ref(), &mut meshca::OsRng) {
        Ok(Some(i)) => i,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "no identity for the SPIFFE bundle endpoint; it serves what it had");
            return;
        }
    };
    if let Err(e) = endpoint.publish(policy_key, published.spiffe_bundle(policy), identity) {
        tracing::warn!(error = %e, "the SPIFFE bundle endpoint keeps what it had");
    }
}

/// The Ready reason of a pass that could do nothing: a token (HSM) that cannot be reached, or
/// refuses the PIN, and a failed revocation each have their own, so alerts and `kubectl get`
/// tell them from a bad policy.
fn failure_reason(kind: meshca_ops::error::ErrorKind) -> &'static str {
    match kind {
        meshca_ops::error::ErrorKind::Hsm | meshca_ops::error::ErrorKind::Provider => "SigningKeyUnavailable",
        meshca_ops::error::ErrorKind::Revocation => "RevocationFailed",
        _ => "CannotReconcile",
    }
}

/// An Event for each cluster issued, rotated or failed.
async fn publish_clusters(ctx: &Ctx, obj: &DynamicObject, report: &Report) {
    for c in &report.clusters {
        tracing::info!(cluster = %c.cluster, action = ?c.action, reason = %c.reason, "cluster");
        let Some((type_, reason, action)) = cluster_event(c.action) else { continue };
        let mut note = format!("{}: {}", c.cluster, c.reason);
        if let Some(r) = &c.restarted {
            note.push_str(&format!("; {r}"));
        }
        publish(ctx, obj, type_, reason, action, &note).await;
    }
}

/// The Event a cluster's outcome gets (type, reason, action), if any.
fn cluster_event(action: Outcome) -> Option<(EventType, &'static str, &'static str)> {
    match action {
        Outcome::Issued => Some((EventType::Normal, "Issued", "Issue")),
        Outcome::Rotated => Some((EventType::Normal, "Rotated", "Rotate")),
        Outcome::Failed => Some((EventType::Warning, "ClusterFailed", "Reconcile")),
        Outcome::Kept
        | Outcome::TrustUpdated
        | Outcome::WouldIssue
        | Outcome::WouldRotate
        | Outcome::WouldUpdateTrust => None,
    }
}

/// When to look at the policy again after a usual run: at the next rotation time the core's
/// plan computed (`next_check`; at least 5 s, an hour when it named none); a run that `failed`
/// (a cluster, or the trust check) backs off, counting `failures` (reset on success).
fn requeue_after(
    failed: bool,
    next_check: Option<OffsetDateTime>,
    now: OffsetDateTime,
    failures: &mut u32,
) -> Duration {
    let until_next = next_check
        .map(|t| Duration::from_secs(u64::try_from((t - now).whole_seconds()).unwrap_or(0)))
        .unwrap_or(Duration::from_secs(3600))
        .max(Duration::from_secs(5));
    if failed {
        *failures += 1;
        until_next.min(backoff(*failures))
    } else {
        *failures = 0;
        until_next
    }
}

/// Reports a root rotation run: status with the rotation's state and a `RootRotation`
/// condition, an Event when it starts, moves to another step, finishes or rolls back, and a
/// requeue at the time the next step may begin.
async fn rotation_step(
    ctx: &Ctx,
    obj: &DynamicObject,
    prev: &Previous,
    rot: &RotationReport,
    now: OffsetDateTime,
    generation: Option<i64>,
) -> Result<Action, Error> {
    set_status(ctx, obj, prev, rotation_status(rot, prev, now, generation)).await?;
    let summary = format!("{} -> {}", rot.old_root, rot.new_root);
    tracing::info!(phase = %rot.phase, now_phase = %rot.now_phase, "root rotation: {summary}");
    if let Some(n) = rot.notice {
        let (reason, what) = match n {
            Notice::RollingBack => ("RootRotationRollingBack", "rolling back: spec.config.rootRotation was removed"),
            _ => ("RootRotationStarted", "started by spec.config.rootRotation"),
        };
        publish(ctx, obj, EventType::Normal, reason, "RotateRoot", &format!("{what}: {summary}")).await;
    }
    let mut from = rot.phase;
    for to in &rot.entered {
        // One reason per phase reached (RootRotationPropagatingIntermediates, ...Complete): the
        // event recorder folds events with the same reason into one, keeping the first note.
        let reason = format!("RootRotation{to}");
        let note = format!("{summary}: {from} -> {to} ({})", to.gloo_state());
        publish(ctx, obj, EventType::Normal, &reason, "RotateRoot", &note).await;
        from = *to;
    }
    for (cluster, error) in rot.failed_clusters() {
        tracing::warn!(cluster, error, "root rotation step failed");
        publish(ctx, obj, EventType::Warning, "ClusterFailed", "RotateRoot", &format!("{cluster}: FAILED: {error}"))
            .await;
    }
    let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let count = failures.entry(key(obj)).or_insert(0);
    let wait = rotation_wait(rot.failed(), rot.next_step_at, rot.finished || !rot.entered.is_empty(), now, count);
    if *count == 0 {
        failures.remove(&key(obj));
    }
    Ok(Action::requeue(wait))
}

/// When to look again after a root rotation step: a `failed` step backs off, counting
/// `failures` (reset otherwise); a dwell ends at `next_step_at`; a rotation that `moved_on` (a
/// phase just began, or it finished and the usual loop takes over) goes on at once; waiting for a cluster the run could not
/// see looks again in a minute, not in a busy loop (`meshca rotate-root forget` drops a cluster
/// that left the mesh).
fn rotation_wait(
    failed: bool,
    next_step_at: Option<OffsetDateTime>,
    moved_on: bool,
    now: OffsetDateTime,
    failures: &mut u32,
) -> Duration {
    if failed {
        *failures += 1;
        return backoff(*failures);
    }
    *failures = 0;
    if let Some(t) = next_step_at {
        Duration::from_secs(u64::try_from((t - now).whole_seconds()).unwrap_or(0)).max(Duration::from_secs(1))
    } else if moved_on {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(60)
    }
}

/// A cluster's outcome in `status.rotation.clusters`.
fn cluster_status(o: &StepOutcome) -> RotationClusterStatus {
    let (error, restarted) = match o {
        StepOutcome::Failed { error } => (Some(error.clone()), None),
        StepOutcome::Converged { restarted, restart_error } => {
            (None, restarted.clone().or_else(|| restart_error.as_ref().map(|e| format!("autoRestartPods: {e}"))))
        }
        _ => (None, None),
    };
    RotationClusterStatus { outcome: o.kind().into(), error, restarted }
}

/// Where the rotation stands after the run's last pass, in a few words for conditions.
fn where_it_stands(rot: &RotationReport) -> (Vec<String>, String) {
    match rot.steps.last() {
        Some(StepState::Converging { pending }) => {
            (pending.clone(), format!("waiting for {} cluster(s) to reach the phase's target", pending.len()))
        }
        Some(StepState::Dwelling { until }) => {
            (Vec::new(), format!("every cluster is done; the next step may begin at {}", meshca::format_time(*until)))
        }
        Some(StepState::Distributing { lagging }) => (
            lagging.clone(),
            format!("every cluster is done; waiting for {} trust distribution target(s)", lagging.len()),
        ),
        _ if rot.finished => (Vec::new(), "finished".into()),
        _ => (Vec::new(), "moving on".into()),
    }
}

/// Every phase this rotation reached, over all passes: what status said so far (for the same
/// old and new root), then what this run entered.
fn phases_reached(rot: &RotationReport, prev: &Previous) -> Vec<String> {
    let same = prev.rotation_roots.as_ref().is_some_and(|(old, new)| *old == rot.old_root && *new == rot.new_root);
    let mut phases: Vec<String> = if same { prev.phases.clone().unwrap_or_default() } else { Vec::new() };
    for p in std::iter::once(rot.phase.to_string()).chain(rot.entered.iter().map(ToString::to_string)) {
        if phases.last() != Some(&p) {
            phases.push(p);
        }
    }
    phases
}

fn rotation_status(
    rot: &RotationReport,
    prev: &Previous,
    now: OffsetDateTime,
    generation: Option<i64>,
) -> PolicyStatus {
    let clusters = rot.clusters.iter().map(|c| (c.cluster.clone(), cluster_status(&c.outcome))).collect();
    let failed: Vec<&str> = rot.failed_clusters().map(|(c, _)| c).collect();
    let (pending, step) = where_it_stands(rot);
    let (state, ready_reason, ready_msg) = if failed.is_empty() {
        (PolicyState::Accepted, "RootRotating", format!("root rotation {}: {step}", rot.now_phase))
    } else {
        (PolicyState::Failed, "ClustersFailed", format!("failed: {}", meshca::list_bounded(&failed, 10)))
    };
    let phases = phases_reached(rot, prev);
    PolicyStatus {
        observed_generation: generation,
        state: Some(state),
        message: Some(ready_msg.clone()),
        rotation: Some(RotationStatus {
            state: rot.now_phase.gloo_state().into(),
            phase: Some(rot.now_phase.to_string()),
            old_root: Some(rot.old_root.clone()),
            new_root: Some(rot.new_root.clone()),
            pending: Some(pending),
            next_step_at: rot.next_step_at.map(meshca::format_time),
            phases: Some(phases),
            clusters: Some(clusters),
        }),
        conditions: vec![
            condition("Ready", failed.is_empty(), ready_reason, &ready_msg, now, generation),
            condition("RootRotation", !rot.finished, rot.now_phase.name(), &step, now, generation),
        ],
        ..Default::default()
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: OffsetDateTime,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: meshca::format_time(now),
        observed_generation: generation,
    }
}

/// The status of a policy that is not (yet) being applied: its state, and a Ready=False condition
/// with the same reason and message.
fn not_ready(
    state: PolicyState,
    reason: &str,
    message: &str,
    now: OffsetDateTime,
    generation: Option<i64>,
) -> PolicyStatus {
    PolicyStatus {
        observed_generation: generation,
        state: Some(state),
        message: Some(message.into()),
        conditions: vec![condition("Ready", false, reason, message, now, generation)],
        ..Default::default()
    }
}

fn status_of(
    report: &Report,
    prev: &Previous,
    handled: Option<String>,
    now: OffsetDateTime,
    generation: Option<i64>,
) -> PolicyStatus {
    let handled = handled.or_else(|| prev.handled_request.clone());
    let revocation = report.crl.as_ref().map(|c| RevocationStatus {
        handled_request: handled.clone(),
        revoked: c
            .revoked
            .iter()
            .map(|r| RevokedStatus {
                cluster: r.cluster.clone(),
                serial: r.serial.clone(),
                revoked_at: meshca::format_time(r.revoked_at),
                reason: r.reason.clone(),
            })
            .collect(),
        crl_number: Some(c.crl_number),
        crl_next_update: c.next_update.map(meshca::format_time),
        list: Some(c.location.clone()),
    });
    let clusters = report
        .clusters
        .iter()
        .map(|c| {
            let last_rotation = match c.rotated_at {
                Some(t) => Some(meshca::format_time(t)),
                None => prev.last_rotation.get(&c.cluster).cloned(),
            };
            let status = ClusterStatus {
                action: Some(c.action),
                reason: Some(c.reason.clone()),
                not_after: c.not_after.map(meshca::format_time),
                next_check: c.next_check.map(meshca::format_time),
                last_rotation,
                trust: c.trust.as_ref().map(|t| t.name().to_owned()),
                error: c.error_kind.map(meshca_ops::error::ErrorKind::name),
            };
            (c.cluster.clone(), status)
        })
        .collect();
    let failed: Vec<&str> =
        report.clusters.iter().filter(|c| c.action == Outcome::Failed).map(|c| c.cluster.as_str()).collect();
    let warned = report.clusters.iter().any(|c| !c.warnings.is_empty());
    let (state, reason, message) = if !failed.is_empty() {
        (PolicyState::Failed, "ClustersFailed", format!("failed: {}", meshca::list_bounded(&failed, 10)))
    } else if !report.trust.ok {
        (PolicyState::Failed, "TrustCheckFailed", report.trust.error.clone().unwrap_or_default())
    } else if warned {
        (PolicyState::Warning, "Reconciled", format!("{} clusters reconciled, with warnings", report.clusters.len()))
    } else {
        (
            PolicyState::Accepted,
            "Reconciled",
            format!("{} clusters share root {}", report.clusters.len(), report.signer.root),
        )
    };
    let ready = matches!(state, PolicyState::Accepted | PolicyState::Warning);
    PolicyStatus {
        observed_generation: generation,
        state: Some(state),
        message: Some(message.clone()),
        root_fingerprint: report.trust.root_fingerprint.clone(),
        next_check: report.next_check.map(meshca::format_time),
        clusters: Some(clusters),
        // The usual loop ran: no rotation is under way. The last rotation's fields are
        // cleared but for the phases it reached (its Events remain).
        rotation: Some(RotationStatus { phases: prev.phases.clone(), ..RotationStatus::not_rotating() }),
        notes: Some(report.notes.clone()),
        revocation,
        conditions: std::iter::once(condition("Ready", ready, reason, &message, now, generation))
            .chain(upstream_condition(report, now, generation))
            .collect(),
    }
}

/// `UpstreamCrlCurrent`, when the fleet's CRL set carries CRLs of CAs above the signing CA:
/// False (reason `UpstreamCrlExpiring`) once one the operator supplies is close to its
/// nextUpdate, naming it, so it is replaced before meshca must stop publishing.
fn upstream_condition(report: &Report, now: OffsetDateTime, generation: Option<i64>) -> Option<Condition> {
    let upstream = &report.crl.as_ref()?.upstream;
    if upstream.is_empty() {
        return None;
    }
    let expiring: Vec<String> = upstream
        .iter()
        .filter(|u| u.expiring)
        .map(|u| format!("{} ({}, expires {})", u.ca, u.source, meshca::format_time(u.next_update)))
        .collect();
    Some(if expiring.is_empty() {
        let message = format!("{} upstream CRL(s) current", upstream.len());
        condition("UpstreamCrlCurrent", true, "UpstreamCrlCurrent", &message, now, generation)
    } else {
        let message = format!("supply a newer CRL of {}", meshca::list_bounded(&expiring, 5));
        condition("UpstreamCrlCurrent", false, "UpstreamCrlExpiring", &message, now, generation)
    })
}

async fn set_status(ctx: &Ctx, obj: &DynamicObject, prev: &Previous, status: PolicyStatus) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.mgmt.clone(), &obj.namespace().unwrap_or_default(), &ctx.ar);
    let mut patch = json!({ "status": status });
    // A merge patch keeps map keys it does not name: a cluster that left the mesh is removed
    // from status.clusters by naming it with null.
    if let Some(new) = patch["status"]["clusters"].as_object_mut() {
        for gone in &prev.clusters {
            new.entry(gone.clone()).or_insert(Value::Null);
        }
    }
    api.patch_status(&obj.name_any(), &PatchParams::default(), &Patch::Merge(patch.clone()))
        .await
        .map_err(|source| Error::Kube { context: format!("status of RootTrustPolicy {}", key(obj)), source })?;
    ctx.remember_status(obj, &patch["status"]);
    Ok(())
}

async fn publish(ctx: &Ctx, obj: &DynamicObject, type_: EventType, reason: &str, action: &str, note: &str) {
    let ev = Event { type_, reason: reason.into(), note: Some(note.into()), action: action.into(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&ctx.ar)).await {
        // Events are best effort; the status carries the same facts.
        tracing::warn!(reason, error = %crate::store::describe(&e), "cannot publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(status: Value) -> DynamicObject {
        let mut obj = DynamicObject::new("root-trust-policy", &crd::api_resource()).within("gloo-mesh");
        obj.metadata.annotations = Some([(REVOKE_ANNOTATION.to_owned(), "west@2".to_owned())].into());
        obj.data = json!({ "status": status });
        obj
    }

    #[test]
    fn a_pass_reads_back_the_status_it_wrote_even_from_a_stale_cache() {
        // The cache still shows the status before the last write.
        let stale =
            policy(json!({"rotation": {"phases": ["AddingNewRoot"]}, "revocation": {"handledRequest": "west"}}));
        let written = json!({
            "rotation": {"phases": ["AddingNewRoot", "PropagatingIntermediates"], "oldRoot": "A", "newRoot": "B"},
            "revocation": {"handledRequest": "west@2", "crlNumber": 2},
        });
        let fresh = overlay_status(&stale, Some(&written));
        assert_eq!(fresh.data["status"]["rotation"], written["rotation"]);
        assert_eq!(fresh.data["status"]["revocation"]["handledRequest"], "west@2");
        // So the request it handled is not handled twice.
        let request = |o: &DynamicObject| revoke_request(o.annotations(), Previous::of(o).handled_request.as_deref());
        assert_eq!(request(&stale).map(|r| r.is_some()), Ok(true));
        assert_eq!(request(&fresh).map(|r| r.is_some()), Ok(false));
        // Nothing written yet by this replica: the cache as it is.
        assert_eq!(overlay_status(&stale, None).data, stale.data);
        // A status with no rotation or revocation yet gains them.
        let bare = overlay_status(&policy(Value::Null), Some(&written));
        assert_eq!(bare.data["status"]["revocation"]["handledRequest"], "west@2");
    }

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_893_456_000 + secs).expect("a valid time")
    }

    #[test]
    fn a_usual_run_requeues_at_the_plan_s_next_check_and_backs_off_on_failure() {
        let mut failures = 0;
        assert_eq!(requeue_after(false, Some(at(600)), at(0), &mut failures), Duration::from_secs(600));
        assert_eq!(requeue_after(false, Some(at(1)), at(0), &mut failures), Duration::from_secs(5), "at least 5 s");
        assert_eq!(requeue_after(false, None, at(0), &mut failures), Duration::from_secs(3600));
        // Failing: 10 s, 20 s, ... never later than the next check; success resets the count.
        assert_eq!(requeue_after(true, Some(at(600)), at(0), &mut failures), Duration::from_secs(10));
        assert_eq!(requeue_after(true, Some(at(600)), at(0), &mut failures), Duration::from_secs(20));
        assert_eq!(requeue_after(true, Some(at(15)), at(0), &mut failures), Duration::from_secs(15));
        assert_eq!(failures, 3);
        requeue_after(false, Some(at(600)), at(0), &mut failures);
        assert_eq!(failures, 0);
        for _ in 0..20 {
            requeue_after(true, None, at(0), &mut failures);
        }
        assert_eq!(requeue_after(true, None, at(0), &mut failures), Duration::from_secs(300), "capped at 5 min");
    }

    #[test]
    fn a_rotation_step_requeues_at_its_dwell_at_once_or_in_a_minute() {
        let mut failures = 0;
        assert_eq!(rotation_wait(false, Some(at(3600)), false, at(0), &mut failures), Duration::from_secs(3600));
        assert_eq!(rotation_wait(false, Some(at(-5)), false, at(0), &mut failures), Duration::from_secs(1));
        assert_eq!(rotation_wait(false, None, true, at(0), &mut failures), Duration::from_secs(1), "a phase began");
        assert_eq!(rotation_wait(false, None, false, at(0), &mut failures), Duration::from_secs(60), "waiting");
        assert_eq!(rotation_wait(true, Some(at(3600)), true, at(0), &mut failures), Duration::from_secs(10));
        assert_eq!(failures, 1);
        rotation_wait(false, None, false, at(0), &mut failures);
        assert_eq!(failures, 0);
    }

    #[test]
    fn a_revoke_request_is_read_once_per_value_and_refused_with_why() {
        let ann = |v: &str, reason: Option<&str>| {
            let mut m = BTreeMap::from([(REVOKE_ANNOTATION.to_owned(), v.to_owned())]);
            if let Some(r) = reason {
                m.insert(REVOKE_REASON_ANNOTATION.to_owned(), r.to_owned());
            }
            m
        };
        let r = revoke_request(&ann("east, west,east@2026-12-03", Some("superseded")), None).unwrap().unwrap();
        assert_eq!(r.clusters, ["east", "west"], "trimmed, each once");
        assert_eq!(r.reason, meshca::RevocationReason::Superseded);
        assert_eq!(revoke_request(&ann("east@1", None), Some("east@1")), Ok(None), "handled already");
        assert_eq!(revoke_request(&BTreeMap::new(), None), Ok(None));
        assert_eq!(revoke_request(&ann("@nonce", None), None), Err(BadRequest::NoCluster));
        assert!(matches!(revoke_request(&ann("East!", None), None), Err(BadRequest::Cluster(_))));
        assert!(matches!(revoke_request(&ann("east", Some("fired")), None), Err(BadRequest::Reason(_))));
        assert_eq!(revoke_request(&ann(&"a,".repeat(3000), None), None), Err(BadRequest::TooLong));
        let e = BadRequest::NoCluster.to_string();
        assert!(e.starts_with("annotation meshca.dev/revoke: "), "{e}");
    }

    /// Why the controller watches `DynamicObject`: a spec that does not deserialize as a
    /// RootTrustPolicy (a typed watch would fail on it and never report it) still parses far
    /// enough to get an InvalidPolicy status naming the field.
    #[test]
    fn a_spec_that_does_not_deserialize_still_gets_a_status() {
        let mut obj = DynamicObject::new("root-trust-policy", &crd::api_resource()).within("gloo-mesh");
        let spec = json!({"config": {"intermediateCertOptions": {"ttlDays": "thirty"},
            "mgmtServerCa": {"generated": {}}}});
        obj.data = json!({ "spec": spec.clone() });
        let typed: Result<crd::RootTrustPolicySpec, _> = serde_json::from_value(spec);
        assert!(typed.is_err(), "a typed watch could not even read it");
        let e = parse_policy(&obj).unwrap_err().to_string();
        assert!(e.contains("RootTrustPolicy gloo-mesh/root-trust-policy") && e.contains("ttlDays"), "{e}");
        let status = not_ready(PolicyState::Invalid, "InvalidPolicy", &e, at(0), Some(1));
        assert_eq!(status.state, Some(PolicyState::Invalid));
        assert_eq!(status.conditions[0].reason, "InvalidPolicy");
    }

    #[test]
    fn the_previous_status_is_read_once_into_typed_fields() {
        let obj = policy(json!({
            "revocation": {"handledRequest": "west@1"},
            "rotation": {"oldRoot": "A", "newRoot": "B", "phases": ["AddingNewRoot"]},
            "clusters": {"east": {"lastRotation": "2030-01-01T00:00:00Z"}, "west": {"action": "kept"}},
        }));
        let p = Previous::of(&obj);
        assert_eq!(p.handled_request.as_deref(), Some("west@1"));
        assert_eq!(p.rotation_roots, Some(("A".to_owned(), "B".to_owned())));
        assert_eq!(p.phases, Some(vec!["AddingNewRoot".to_owned()]));
        assert_eq!(p.last_rotation.get("east").map(String::as_str), Some("2030-01-01T00:00:00Z"));
        assert_eq!(p.clusters, ["east", "west"]);
        // A status that is not an object, or none: nothing is carried over.
        assert_eq!(Previous::of(&policy(json!("garbage"))), Previous::default());
    }

    #[test]
    fn each_outcome_has_its_event_and_each_failure_kind_its_reason() {
        assert_eq!(cluster_event(Outcome::Issued).map(|e| e.1), Some("Issued"));
        assert_eq!(cluster_event(Outcome::Rotated).map(|e| e.1), Some("Rotated"));
        assert_eq!(cluster_event(Outcome::Failed).map(|e| (e.1, e.2)), Some(("ClusterFailed", "Reconcile")));
        assert!(cluster_event(Outcome::Kept).is_none() && cluster_event(Outcome::WouldIssue).is_none());
        assert_eq!(failure_reason(meshca_ops::error::ErrorKind::Hsm), "SigningKeyUnavailable");
        assert_eq!(failure_reason(meshca_ops::error::ErrorKind::Provider), "SigningKeyUnavailable");
        assert_eq!(failure_reason(meshca_ops::error::ErrorKind::Revocation), "RevocationFailed");
    }

    /// Reports of real runs over the directory store: three clusters issued, then east alone
    /// rotated an hour before its 1-day intermediate ends.
    fn reports(tag: &str) -> (Report, Report) {
        use meshca::{Layout, RootParams, SigningCa};
        use meshca_ops::store::{DirStore, SecretRef, Store, WriteMeta};
        let dir = meshca_testkit::tempdir(&format!("kube-scope-{tag}"));
        let store = DirStore::new(&dir);
        let root = SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, at(0)).unwrap();
        let signer = SecretRef::new("mgmt", "gloo-mesh", "my-root-trust-policy.gloo-mesh");
        store.write(&signer, &root.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
        let policy = meshca_ops::policy::parse(meshca_ops::policy::SEED_POLICY, "policy.yaml").unwrap();
        let run = |clusters: &[&str], now| {
            let opts = Options::new(now, clusters.iter().map(|c| (*c).to_owned()).collect()).mgmt("mgmt");
            match reconcile::run(&store, &policy, &opts, &mut meshca::OsRng, &mut |_, _| {}).unwrap() {
                Run::Reconciled(r) => r,
                Run::RootRotation(r) => panic!("no rotation was asked for: {r:?}"),
            }
        };
        let fleet = run(&["east", "west", "south"], at(0));
        let east = run(&["east"], at(23 * 3600));
        std::fs::remove_dir_all(&dir).unwrap();
        (fleet, east)
    }

    #[test]
    fn a_cluster_change_costs_that_cluster_and_anything_else_the_fleet() {
        use crate::fleet::{Changes, Scope};
        let (fleet, _) = reports("scope");
        let workload: Vec<String> = ["east", "west", "south"].map(String::from).to_vec();
        let mut changes = Changes::default();
        let last = LastPass { seen: changes.last(), generation: Some(1), report: fleet.clone() };
        let scope = |last: Option<&LastPass>, c: &Changes, generation, now, revoking, workload: &[String]| {
            scope_of(last, c, generation, now, revoking, workload)
        };
        assert_eq!(scope(None, &changes, Some(1), at(60), false, &workload), Scope::Fleet, "no pass yet");
        assert_eq!(scope(Some(&last), &changes, Some(1), at(60), false, &workload), Scope::Fleet, "nothing changed");
        changes.record(Some("west"));
        let west = Scope::Clusters(vec!["west".into()]);
        assert_eq!(scope(Some(&last), &changes, Some(1), at(60), false, &workload), west);
        assert_eq!(scope(Some(&last), &changes, Some(2), at(60), false, &workload), Scope::Fleet, "a policy change");
        assert_eq!(scope(Some(&last), &changes, Some(1), at(60), true, &workload), Scope::Fleet, "a revoke request");
        let due = fleet.next_check.unwrap();
        assert_eq!(scope(Some(&last), &changes, Some(1), due, false, &workload), Scope::Fleet, "the planned check");
        // A remote secret added: the cluster it names, beside the ones that changed.
        let grown: Vec<String> = workload.iter().cloned().chain(["north".to_owned()]).collect();
        changes.record(Some("north"));
        let west_north = Scope::Clusters(vec!["north".into(), "west".into()]);
        assert_eq!(scope(Some(&last), &changes, Some(1), at(60), false, &grown), west_north, "a cluster more");
        changes.record(Some("gone"));
        assert_eq!(scope(Some(&last), &changes, Some(1), at(60), false, &workload), west, "only clusters of the fleet");
        // A cluster that joined without a recorded change (its secret seen by the pass first)
        // is covered too.
        let quiet = Changes::default();
        let mut only_gone = Changes::default();
        only_gone.record(Some("gone"));
        assert_eq!(
            scope(Some(&last), &only_gone, Some(1), at(60), false, &grown),
            Scope::Clusters(vec!["north".into()])
        );
        assert_eq!(scope(Some(&last), &quiet, Some(1), at(60), false, &grown), Scope::Fleet, "a planned pass");
        // A remote secret removed: nothing to run, the row goes (see the merge test); a change
        // of a cluster in neither the fleet nor the last pass is a full pass, as before.
        let mut left = Changes::default();
        left.record(Some("south"));
        let shrunk: Vec<String> = ["east", "west"].map(String::from).to_vec();
        assert_eq!(
            scope(Some(&last), &left, Some(1), at(60), false, &shrunk),
            Scope::Clusters(vec![]),
            "a cluster fewer"
        );
        assert_eq!(scope(Some(&last), &only_gone, Some(1), at(60), false, &workload), Scope::Fleet);
        changes.record(None);
        assert_eq!(scope(Some(&last), &changes, Some(1), at(60), false, &workload), Scope::Fleet, "a signer change");
    }

    #[test]
    fn a_pass_over_one_cluster_replaces_its_row_and_keeps_the_others() {
        let (fleet, east) = reports("merge");
        assert_eq!(east.clusters.len(), 1);
        assert_eq!(east.clusters[0].action, Outcome::Rotated);
        let all: Vec<String> = ["east", "west", "south"].map(String::from).to_vec();
        let (merged, speaks) = merged(&fleet, &east, &all);
        assert!(speaks, "the same root");
        let rows: Vec<(&str, Outcome)> = merged.clusters.iter().map(|c| (c.cluster.as_str(), c.action)).collect();
        assert_eq!(rows, [("east", Outcome::Rotated), ("west", Outcome::Issued), ("south", Outcome::Issued)]);
        assert_eq!(merged.next_check, fleet.next_check.min(east.next_check), "the earlier check");
        assert!(merged.trust.ok);
        // A pass that found another root cannot speak for the fleet; one that found trust
        // broken says so.
        let mut other = east.clone();
        other.trust.root_fingerprint = Some("another".into());
        assert!(!super::merged(&fleet, &other, &all).1);
        other.trust.ok = false;
        let (broken, speaks) = super::merged(&fleet, &other, &all);
        assert!(speaks && !broken.trust.ok);
        assert_eq!(broken.clusters.len(), 3);
        // A cluster that left the fleet: its row goes, the others stay as they were.
        let mut none = east.clone();
        none.clusters.clear();
        let (left, speaks) = super::merged(&fleet, &none, &["east".to_owned(), "west".to_owned()]);
        assert!(speaks);
        let rows: Vec<&str> = left.clusters.iter().map(|c| c.cluster.as_str()).collect();
        assert_eq!(rows, ["east", "west"]);
        assert_eq!(left.clusters[0].action, Outcome::Issued, "east's row as the fleet pass left it");
    }
}
