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
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use meshca_ops::reconcile::{Action, Report};
use meshca_ops::rootrotation::RotationReport;

type Labels = Vec<(String, String)>;

/// The label sets a policy's state gauges were last set with, to drop those not set again.
#[derive(Default)]
struct Seen {
    ca_not_after: Vec<Labels>,
    next_rotation: Vec<Labels>,
    root_not_after: Vec<Labels>,
    trust: Vec<Labels>,
    phase: Vec<Labels>,
}

/// The controller's metrics and readiness.
pub struct Metrics {
    registry: Registry,
    ca_not_after: Family<Labels, Gauge>,
    next_rotation: Family<Labels, Gauge>,
    root_not_after: Family<Labels, Gauge>,
    trust_in_sync: Family<Labels, Gauge>,
    rotations: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    revocations: Family<Labels, Counter>,
    phase: Family<Labels, Gauge>,
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
pub const SERIES: [&str; 8] = [
    "meshca_ca_not_after_timestamp_seconds",
    "meshca_ca_next_rotation_timestamp_seconds",
    "meshca_root_not_after_timestamp_seconds",
    "meshca_cluster_trust_in_sync",
    "meshca_rotations_total",
    "meshca_reconcile_errors_total",
    "meshca_revocations_total",
    "meshca_root_rotation_phase",
];

/// Every root-rotation phase the `phase` label takes, `NotRotating` when none runs.
pub const PHASE_LABELS: [&str; 8] = [
    "NotRotating",
    "AddingNewRoot",
    "PropagatingIntermediates",
    "DeletingOldRoot",
    "Complete",
    "RollingBackIntermediates",
    "RollingBackRoot",
    "RolledBack",
];

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
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
            phase: Family::default(),
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

    fn replace(family: &Family<Labels, Gauge>, old: &mut Vec<Labels>, new: Vec<(Labels, i64)>) {
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
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let seen = seen.entry(policy.to_owned()).or_default();
        let per_cluster = |pick: &dyn Fn(&meshca_ops::reconcile::ClusterResult) -> Option<i64>| {
            r.clusters
                .iter()
                .filter_map(|c| pick(c).map(|v| (labels(&[("policy", policy), ("cluster", &c.cluster)]), v)))
                .collect::<Vec<_>>()
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
                (labels(&[("policy", policy), ("fingerprint", &root.fingerprint)]), root.not_after.unix_timestamp())
            })
            .collect();
        Self::replace(&self.root_not_after, &mut seen.root_not_after, roots);
        let trust = r
            .clusters
            .iter()
            .filter_map(|c| {
                let t = c.trust.as_ref()?;
                let v = i64::from(t.name() == "in-sync");
                Some((labels(&[("policy", policy), ("cluster", &c.cluster), ("state", t.name())]), v))
            })
            .collect();
        Self::replace(&self.trust_in_sync, &mut seen.trust, trust);
        for c in &r.clusters {
            match c.action {
                Action::Issued | Action::Rotated => {
                    let reason = c.issue_reason.unwrap_or("unknown");
                    self.rotations
                        .get_or_create(&labels(&[("policy", policy), ("cluster", &c.cluster), ("reason", reason)]))
                        .inc();
                }
                Action::Failed => {
                    let reason =
                        c.error_kind.map(meshca_ops::error::ErrorKind::name).unwrap_or_else(|| "unknown".into());
                    self.errors
                        .get_or_create(&labels(&[("policy", policy), ("cluster", &c.cluster), ("reason", &reason)]))
                        .inc();
                }
                _ => {}
            }
        }
        self.set_phase(seen, policy, "NotRotating");
    }

    /// Records a root-rotation pass of `policy`.
    pub fn observe_rotation(&self, policy: &str, r: &RotationReport) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let seen = seen.entry(policy.to_owned()).or_default();
        let phase = if r.finished { "NotRotating" } else { r.now_phase.name() };
        self.set_phase(seen, policy, phase);
        for (cluster, _) in r.failed_clusters() {
            self.errors
                .get_or_create(&labels(&[("policy", policy), ("cluster", cluster), ("reason", "rotation")]))
                .inc();
        }
    }

    fn set_phase(&self, seen: &mut Seen, policy: &str, current: &str) {
        let all = PHASE_LABELS
            .iter()
            .map(|p| (labels(&[("policy", policy), ("phase", p)]), i64::from(*p == current)))
            .collect();
        Self::replace(&self.phase, &mut seen.phase, all);
    }

    /// Records a pass of `policy` that failed before any cluster (signer, token, policy).
    pub fn observe_failure(&self, policy: &str, kind: meshca_ops::error::ErrorKind) {
        self.errors.get_or_create(&labels(&[("policy", policy), ("cluster", ""), ("reason", &kind.name())])).inc();
    }

    /// Records a revocation.
    pub fn observe_revocation(&self, policy: &str, cluster: &str, reason: &str) {
        self.revocations.get_or_create(&labels(&[("policy", policy), ("cluster", cluster), ("reason", reason)])).inc();
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
