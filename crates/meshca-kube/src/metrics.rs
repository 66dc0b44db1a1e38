//! The controller's Prometheus metrics and health endpoints: `/metrics` (OpenMetrics text, from
//! `prometheus-client`), `/healthz` (the process serves) and `/readyz` (the policy watch has
//! listed once and, with leader election, this replica leads).
//!
//! Every series carries `policy` (`namespace/name`). Gauges describing the fleet's state are
//! replaced as a whole per policy after each pass, so a cluster that left the mesh does not
//! linger; counters only grow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use meshca_ops::reconcile::{Action, Report};
use meshca_ops::rootrotation::RotationReport;

/// `policy`, `cluster`: a cluster's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    policy: String,
    cluster: String,
}

/// `policy`, `fingerprint`: a root's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RootLabels {
    policy: String,
    fingerprint: String,
}

/// `policy`, `cluster`, `state`: whether istiod publishes the roots meshca wrote.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrustLabels {
    policy: String,
    cluster: String,
    state: String,
}

/// `policy`, `cluster`, `reason`: a counted event of a cluster (`cluster` empty for a pass that
/// failed before any cluster).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    policy: String,
    cluster: String,
    reason: String,
}

/// `policy`, `ca`, `source`: an upstream CRL the fleet's set carries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    policy: String,
    ca: String,
    source: String,
}

/// `policy`, `phase`: the root rotation's phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadLabels {
    policy: String,
    cluster: String,
    result: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    policy: String,
    phase: String,
}

/// The label sets a policy's state gauges were last set with, to drop those not set again.
#[derive(Default)]
struct Seen {
    ca_not_after: Vec<ClusterLabels>,
    next_rotation: Vec<ClusterLabels>,
    root_not_after: Vec<RootLabels>,
    trust: Vec<TrustLabels>,
    phase: Vec<PhaseLabels>,
    upstream: Vec<UpstreamLabels>,
}

/// The controller's metrics and readiness.
pub struct Metrics {
    registry: Registry,
    ca_not_after: Family<ClusterLabels, Gauge>,
    next_rotation: Family<ClusterLabels, Gauge>,
    root_not_after: Family<RootLabels, Gauge>,
    trust_in_sync: Family<TrustLabels, Gauge>,
    rotations: Family<ReasonLabels, Counter>,
    errors: Family<ReasonLabels, Counter>,
    revocations: Family<ReasonLabels, Counter>,
    provider_errors: Family<ReasonLabels, Counter>,
    phase: Family<PhaseLabels, Gauge>,
    upstream_crl: Family<UpstreamLabels, Gauge>,
    workload: Family<WorkloadLabels, Counter>,
    bundle_sequence: Family<PolicyLabels, Gauge>,
    distribution_lagging: Family<PolicyLabels, Gauge>,
    distribution_failed: Family<PolicyLabels, Gauge>,
    audit_size: Family<PolicyLabels, Gauge>,
    audit_checkpoint: Family<PolicyLabels, Gauge>,
    seen: Mutex<HashMap<String, Seen>>,
    synced: AtomicBool,
    leading: AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("ready", &self.ready()).finish_non_exhaustive()
    }
}

/// Every series name `/metrics` serves (counters with their `_total`).
pub const SERIES: [&str; 16] = [
    "meshca_ca_not_after_timestamp_seconds",
    "meshca_ca_next_rotation_timestamp_seconds",
    "meshca_root_not_after_timestamp_seconds",
    "meshca_cluster_trust_in_sync",
    "meshca_rotations_total",
    "meshca_reconcile_errors_total",
    "meshca_revocations_total",
    "meshca_root_rotation_phase",
    "meshca_provider_errors_total",
    "meshca_upstream_crl_next_update_timestamp_seconds",
    "meshca_workload_certificates_total",
    "meshca_spiffe_bundle_sequence",
    "meshca_trust_distribution_lagging_targets",
    "meshca_trust_distribution_failed_targets",
    "meshca_audit_log_tree_size",
    "meshca_audit_log_checkpoint_size",
];

/// The `phase` label when no root rotation runs; the others are the phases' names, from the
/// one table of phases (meshca-ops' `PhaseName`).
pub const NOT_ROTATING: &str = "NotRotating";

/// Every root-rotation phase the `phase` label takes: [`NOT_ROTATING`], then each phase.
pub fn phase_labels() -> impl Iterator<Item = &'static str> {
    std::iter::once(NOT_ROTATING).chain(meshca_ops::rootrotation::PhaseName::all().map(|p| p.name()))
}

fn cluster(policy: &str, cluster: &str) -> ClusterLabels {
    ClusterLabels { policy: policy.to_owned(), cluster: cluster.to_owned() }
}

fn reason(policy: &str, cluster: &str, reason: &str) -> ReasonLabels {
    ReasonLabels { policy: policy.to_owned(), cluster: cluster.to_owned(), reason: reason.to_owned() }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every series registered, none set yet; not ready.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            ca_not_after: Family::default(),
            next_rotation: Family::default(),
            root_not_after: Family::default(),
            trust_in_sync: Family::default(),
            rotations: Family::default(),
            errors: Family::default(),
            revocations: Family::default(),
            provider_errors: Family::default(),
            phase: Family::default(),
            upstream_crl: Family::default(),
            workload: Family::default(),
            bundle_sequence: Family::default(),
            distribution_lagging: Family::default(),
            audit_size: Family::default(),
            audit_checkpoint: Family::default(),
            distribution_failed: Family::default(),
            seen: Mutex::new(HashMap::new()),
            synced: AtomicBool::new(false),
            leading: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register(
            "meshca_ca_not_after_timestamp_seconds",
            "When each cluster's intermediate CA expires (Unix seconds)",
            m.ca_not_after.clone(),
        );
        registry.register(
            "meshca_ca_next_rotation_timestamp_seconds",
            "When meshca next re-issues each cluster's intermediate (Unix seconds)",
            m.next_rotation.clone(),
        );
        registry.register(
            "meshca_root_not_after_timestamp_seconds",
            "When each root of the trust bundle expires (Unix seconds)",
            m.root_not_after.clone(),
        );
        registry.register(
            "meshca_cluster_trust_in_sync",
            "1 when istiod publishes (istio-ca-root-cert) the roots meshca wrote; state says in-sync, stale or \
             unobserved",
            m.trust_in_sync.clone(),
        );
        registry.register("meshca_rotations", "Intermediates issued, by cluster and reason", m.rotations.clone());
        registry.register(
            "meshca_reconcile_errors",
            "Clusters a pass failed for, by cluster and error kind",
            m.errors.clone(),
        );
        registry.register("meshca_revocations", "Cluster CAs revoked, by cluster and reason", m.revocations.clone());
        registry.register(
            "meshca_provider_errors",
            "Calls to the PKI that signs (OpenBao/Vault) that failed, by reason (unreachable, timeout, sealed, ...)",
            m.provider_errors.clone(),
        );
        registry.register(
            "meshca_upstream_crl_next_update_timestamp_seconds",
            "When each CRL of a CA above the signing CA (from the PKI, or supplied) lapses (Unix seconds): meshca \
             publishes no expired CRL, so every run fails after it",
            m.upstream_crl.clone(),
        );
        registry.register(
            "meshca_workload_certificates",
            "Workload certificate requests meshca answered as the Kubernetes signer (RA mode), by cluster, result \
             (issued, failed) and reason (a refusal's rule)",
            m.workload.clone(),
        );
        registry.register(
            "meshca_spiffe_bundle_sequence",
            "spiffe_sequence of the trust set published (spec.config.trustDistribution): it moves on every change",
            m.bundle_sequence.clone(),
        );
        registry.register(
            "meshca_trust_distribution_lagging_targets",
            "Trust targets (ClusterTrustBundles, ConfigMaps, the SPIFFE bundle) a root rotation waits for before \
             intermediates from the new root go out",
            m.distribution_lagging.clone(),
        );
        registry.register(
            "meshca_trust_distribution_failed_targets",
            "Trust targets the last pass could not write (e.g. a ConfigMap meshca does not manage)",
            m.distribution_failed.clone(),
        );
        registry.register(
            "meshca_audit_log_tree_size",
            "Entries in the issuance log (spec.config.auditLog): every CA certificate and CRL written",
            m.audit_size.clone(),
        );
        registry.register(
            "meshca_audit_log_checkpoint_size",
            "Entries the issuance log's last signed checkpoint covers (below the tree size only between a crashed \
             append and the next run)",
            m.audit_checkpoint.clone(),
        );
        registry.register(
            "meshca_root_rotation_phase",
            "1 for the root rotation's current phase (NotRotating when none runs)",
            m.phase.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail but for a formatter error, which would be a bug.
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts one workload request of `policy` in `cluster` answered: `result` `issued` (reason
    /// `Issued`) or `failed` (the refusal's reason).
    pub fn observe_workload(&self, policy: &str, cluster: &str, result: &str, reason: &str) {
        let l = WorkloadLabels {
            policy: policy.to_owned(),
            cluster: cluster.to_owned(),
            result: result.to_owned(),
            reason: reason.to_owned(),
        };
        self.workload.get_or_create(&l).inc();
    }

    /// Whether `/readyz` says ready.
    pub fn ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed) && self.leading.load(Ordering::Relaxed)
    }

    /// The policy watch listed once (the controller knows every policy).
    pub fn set_synced(&self, v: bool) {
        self.synced.store(v, Ordering::Relaxed);
    }

    /// This replica holds the leader lease (or runs without leader election).
    pub fn set_leading(&self, v: bool) {
        self.leading.store(v, Ordering::Relaxed);
    }

    fn replace<L>(family: &Family<L, Gauge>, old: &mut Vec<L>, new: Vec<(L, i64)>)
    where
        L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug,
    {
        for l in old.iter() {
            if !new.iter().any(|(n, _)| n == l) {
                family.remove(l);
            }
        }
        *old = new.iter().map(|(l, _)| l.clone()).collect();
        for (l, v) in new {
            family.get_or_create(&l).set(v);
        }
    }

    /// Records a reconcile pass of `policy` (`namespace/name`).
    pub fn observe_report(&self, policy: &str, r: &Report) {
        self.observe_report_rows(policy, r, &r.clusters);
    }

    /// Records a pass that acted on `acted` (some of the fleet's clusters): the gauges from
    /// `r`, the fleet as it now stands; the counters from `acted` only.
    pub fn observe_report_rows(&self, policy: &str, r: &Report, acted: &[meshca_ops::reconcile::ClusterResult]) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let seen = seen.entry(policy.to_owned()).or_default();
        let per_cluster = |pick: &dyn Fn(&meshca_ops::reconcile::ClusterResult) -> Option<i64>| {
            r.clusters.iter().filter_map(|c| pick(c).map(|v| (cluster(policy, &c.cluster), v))).collect::<Vec<_>>()
        };
        Self::replace(
            &self.ca_not_after,
            &mut seen.ca_not_after,
            per_cluster(&|c| c.not_after.map(|t| t.unix_timestamp())),
        );
        Self::replace(
            &self.next_rotation,
            &mut seen.next_rotation,
            per_cluster(&|c| c.next_check.map(|t| t.unix_timestamp())),
        );
        let roots = r
            .roots
            .iter()
            .map(|root| {
                let l = RootLabels { policy: policy.to_owned(), fingerprint: root.fingerprint.clone() };
                (l, root.not_after.unix_timestamp())
            })
            .collect();
        Self::replace(&self.root_not_after, &mut seen.root_not_after, roots);
        let trust = r
            .clusters
            .iter()
            .filter_map(|c| {
                let t = c.trust.as_ref()?;
                let v = i64::from(t.name() == "in-sync");
                let l =
                    TrustLabels { policy: policy.to_owned(), cluster: c.cluster.clone(), state: t.name().to_owned() };
                Some((l, v))
            })
            .collect();
        Self::replace(&self.trust_in_sync, &mut seen.trust, trust);
        let upstream = r
            .crl
            .iter()
            .flat_map(|c| c.upstream.iter())
            .map(|u| {
                let l = UpstreamLabels { policy: policy.to_owned(), ca: u.ca.clone(), source: u.source.clone() };
                (l, u.next_update.unix_timestamp())
            })
            .collect();
        Self::replace(&self.upstream_crl, &mut seen.upstream, upstream);
        for c in acted {
            match c.action {
                Action::Issued | Action::Rotated => {
                    self.rotations
                        .get_or_create(&reason(policy, &c.cluster, c.issue_reason.unwrap_or("unknown")))
                        .inc();
                }
                Action::Failed => {
                    let kind = c.error_kind.map(meshca_ops::error::ErrorKind::name).unwrap_or_else(|| "unknown".into());
                    self.errors.get_or_create(&reason(policy, &c.cluster, &kind)).inc();
                }
                Action::Kept
                | Action::TrustUpdated
                | Action::WouldIssue
                | Action::WouldRotate
                | Action::WouldUpdateTrust => {}
            }
        }
        self.set_phase(seen, policy, NOT_ROTATING);
    }

    /// Records a root-rotation pass of `policy`.
    pub fn observe_rotation(&self, policy: &str, r: &RotationReport) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let seen = seen.entry(policy.to_owned()).or_default();
        let phase = if r.finished { NOT_ROTATING } else { r.now_phase.name() };
        self.set_phase(seen, policy, phase);
        for (cluster, _) in r.failed_clusters() {
            self.errors.get_or_create(&reason(policy, cluster, "rotation")).inc();
        }
    }

    fn set_phase(&self, seen: &mut Seen, policy: &str, current: &str) {
        let all = phase_labels()
            .map(|p| (PhaseLabels { policy: policy.to_owned(), phase: p.to_owned() }, i64::from(p == current)))
            .collect();
        Self::replace(&self.phase, &mut seen.phase, all);
    }

    /// Records what a pass of `policy` published beyond the mesh, and how many targets a root
    /// rotation waits for.
    pub fn observe_distribution(
        &self,
        policy: &str,
        distribution: Option<&meshca_ops::distribution::Distribution>,
        lagging: usize,
    ) {
        let l = PolicyLabels { policy: policy.to_owned() };
        let Some(d) = distribution else {
            self.bundle_sequence.remove(&l);
            self.distribution_lagging.remove(&l);
            self.distribution_failed.remove(&l);
            return;
        };
        self.bundle_sequence.get_or_create(&l).set(i64::try_from(d.sequence).unwrap_or(i64::MAX));
        self.distribution_lagging.get_or_create(&l).set(i64::try_from(lagging).unwrap_or(i64::MAX));
        let failed =
            d.targets.iter().filter(|t| matches!(t.outcome, meshca_ops::distribution::TargetOutcome::Failed { .. }));
        self.distribution_failed.get_or_create(&l).set(i64::try_from(failed.count()).unwrap_or(i64::MAX));
    }

    /// Records the issuance log of `policy`: its size and its last checkpoint's.
    pub fn observe_audit(&self, policy: &str, size: u64, checkpoint_size: u64) {
        let l = PolicyLabels { policy: policy.to_owned() };
        self.audit_size.get_or_create(&l).set(i64::try_from(size).unwrap_or(i64::MAX));
        self.audit_checkpoint.get_or_create(&l).set(i64::try_from(checkpoint_size).unwrap_or(i64::MAX));
    }

    /// Records a pass of `policy` that failed before any cluster (signer, token, policy).
    pub fn observe_failure(&self, policy: &str, kind: meshca_ops::error::ErrorKind) {
        self.errors.get_or_create(&reason(policy, "", &kind.name())).inc();
    }

    /// Records a call to the PKI that signs that failed, by its reason
    /// ([`meshca_ops::error::ProviderFault::name`]).
    pub fn observe_provider_error(&self, policy: &str, fault: meshca_ops::error::ProviderFault) {
        self.provider_errors.get_or_create(&reason(policy, "", &fault.name())).inc();
    }

    /// Records a revocation.
    pub fn observe_revocation(&self, policy: &str, cluster: &str, reason: &str) {
        self.revocations.get_or_create(&self::reason(policy, cluster, reason)).inc();
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let m = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.render())
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let m = metrics.clone();
                async move {
                    match (m.synced.load(Ordering::Relaxed), m.leading.load(Ordering::Relaxed)) {
                        (true, true) => (StatusCode::OK, "ready\n"),
                        (false, _) => {
                            (StatusCode::SERVICE_UNAVAILABLE, "not ready: the policy watch has not listed yet\n")
                        }
                        (true, false) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: this replica does not hold the leader lease\n",
                        ),
                    }
                }
            }),
        );
    axum::serve(listener, app).await
}
