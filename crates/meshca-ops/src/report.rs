//! What a run did, as typed values every front end renders: the CLI into words and JSON, the
//! controller into status and metrics, Python into objects.

use serde::Serialize;
use time::OffsetDateTime;

use meshca::{Cacerts, Certificate};

use crate::error::ErrorKind;
use crate::serde_time::{rfc3339, rfc3339_opt};

// Exhaustive on purpose (not `#[non_exhaustive]`): the CLI, the controller and the metrics
// match every outcome, and a new one must be a compile error in each. (A plain comment: the
// doc comment is the CRD's description.)
/// What happened to one cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The bundle is valid and outside its grace period.
    Kept,
    /// The cluster had no bundle; one was written.
    Issued,
    /// The bundle was replaced.
    Rotated,
    /// Only the trust bundle (`root-cert.pem`) was rewritten: a passive root came or went.
    TrustUpdated,
    /// Dry run: would issue.
    WouldIssue,
    /// Dry run: would rotate.
    WouldRotate,
    /// Dry run: would rewrite the trust bundle.
    WouldUpdateTrust,
    /// Something failed; the cluster keeps what it had.
    Failed,
}

/// One cluster's outcome.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ClusterResult {
    /// Cluster name.
    pub cluster: String,
    /// What happened.
    pub action: Action,
    /// Why (the plan's reason, or the error).
    pub reason: String,
    /// What kind of error made the cluster fail (or a write fail), if one did.
    pub error_kind: Option<ErrorKind>,
    /// Where the bundle lives.
    pub location: String,
    /// The bundle's notAfter after this run.
    #[serde(with = "rfc3339_opt")]
    pub not_after: Option<OffsetDateTime>,
    /// When the next run should look at this cluster.
    #[serde(with = "rfc3339_opt")]
    pub next_check: Option<OffsetDateTime>,
    /// Warnings about the bundle.
    pub warnings: Vec<String>,
    /// When this run wrote a new bundle (issued or rotated).
    #[serde(with = "rfc3339_opt")]
    pub rotated_at: Option<OffsetDateTime>,
    /// What `autoRestartPods` restarted after the new bundle landed.
    pub restarted: Option<String>,
    /// Why a new intermediate was issued, as a stable label (`grace-period`, `revoked`, ...;
    /// see [`meshca::IssueReason::label`]), when the plan issued one.
    pub issue_reason: Option<&'static str>,
    /// Whether istiod loaded the roots this bundle holds (`None` when the cluster has no valid
    /// bundle).
    pub trust: Option<TrustState>,
}

impl ClusterResult {
    /// A cluster's result before anything succeeded: failed, for `reason`.
    pub(crate) fn failed(cluster: &str, location: String, reason: String) -> Self {
        ClusterResult {
            cluster: cluster.to_owned(),
            action: Action::Failed,
            reason,
            error_kind: None,
            location,
            not_after: None,
            next_check: None,
            warnings: Vec::new(),
            rotated_at: None,
            restarted: None,
            trust: None,
            issue_reason: None,
        }
    }
}

/// What istiod in a cluster publishes as its trusted roots (`istio-ca-root-cert`) against the
/// roots meshca wrote to its `cacerts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
#[non_exhaustive]
pub enum TrustState {
    /// istiod publishes exactly the roots meshca wrote.
    InSync,
    /// istiod publishes other roots: it has not (yet) loaded what meshca wrote.
    Stale {
        /// SHA-256 of roots meshca wrote that istiod does not publish.
        missing: Vec<String>,
        /// SHA-256 of roots istiod publishes that meshca did not write.
        extra: Vec<String>,
    },
    /// No `istio-ca-root-cert` to compare with: istiod absent or not started (or the store
    /// cannot see it).
    Unobserved,
}

impl TrustState {
    /// `in-sync`, `stale` or `unobserved` (the metric's `state` label).
    pub fn name(&self) -> &'static str {
        match self {
            TrustState::InSync => "in-sync",
            TrustState::Stale { .. } => "stale",
            TrustState::Unobserved => "unobserved",
        }
    }

    /// Compares istiod's published roots (`None`: none published) with a bundle's.
    pub fn of(published: Option<&[u8]>, bundle: &Cacerts) -> TrustState {
        let Some(pem) = published else { return TrustState::Unobserved };
        let wrote: Vec<String> = bundle.roots().iter().map(Certificate::fingerprint_sha256).collect();
        // What istiod publishes is read leniently: an unparsable ConfigMap is as stale as one
        // with other roots (its roots are listed as missing).
        let seen: Vec<String> = meshca::parse_certificates(pem, "istio-ca-root-cert")
            .map(|certs| certs.iter().map(Certificate::fingerprint_sha256).collect())
            .unwrap_or_default();
        let missing: Vec<String> = wrote.iter().filter(|f| !seen.contains(f)).cloned().collect();
        let extra: Vec<String> = seen.iter().filter(|f| !wrote.contains(f)).cloned().collect();
        if missing.is_empty() && extra.is_empty() {
            TrustState::InSync
        } else {
            TrustState::Stale { missing, extra }
        }
    }
}

/// The signing CA as used in this run.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SignerInfo {
    /// Where it lives.
    pub location: String,
    /// Its subject.
    pub subject: String,
    /// Subject of the root its chain reaches.
    pub root: String,
    /// SHA-256 of that root.
    pub root_fingerprint: String,
    /// Whether this run created it (`mgmtServerCa.generated`).
    pub created: bool,
    /// The key's PKCS#11 URI, when it is in a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The cross-cluster trust check.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Trust {
    /// Whether all clusters trust each other's roots.
    pub ok: bool,
    /// The shared root's SHA-256, when `ok`.
    pub root_fingerprint: Option<String>,
    /// Why not, otherwise.
    pub error: Option<String>,
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Report {
    /// Policy name.
    pub policy: String,
    /// The time the run planned at.
    #[serde(with = "rfc3339")]
    pub at: OffsetDateTime,
    /// Dry run?
    pub dry_run: bool,
    /// The signer.
    pub signer: SignerInfo,
    /// One entry per cluster, in the order given.
    pub clusters: Vec<ClusterResult>,
    /// Whether every cluster's bundle trusts every other's root.
    pub trust: Trust,
    /// The earliest next check over all clusters.
    #[serde(with = "rfc3339_opt")]
    pub next_check: Option<OffsetDateTime>,
    /// Notes about the policy (fields accepted but not acted on here).
    pub notes: Vec<String>,
    /// The fleet's revocation list and CRL set, once a revocation was ever made.
    pub crl: Option<Box<crate::revocation_list::CrlSummary>>,
    /// Every root of the trust bundle the clusters should hold.
    pub roots: Vec<RootInfo>,
    /// Why the PKI that signs (`mgmtServerCa.vault`) could not be used this run, when it could
    /// not: the clusters that needed a signature failed, the others were kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_fault: Option<crate::error::ProviderFault>,
    /// What `trustDistribution` published this run, when the policy has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Box<crate::distribution::Distribution>>,
}

/// A root of the trust bundle.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RootInfo {
    /// Its subject.
    pub subject: String,
    /// SHA-256 of it.
    pub fingerprint: String,
    /// Its notAfter.
    #[serde(with = "rfc3339")]
    pub not_after: OffsetDateTime,
}

impl Report {
    /// Whether every cluster ended valid and all trust each other.
    pub fn ok(&self) -> bool {
        self.trust.ok && self.clusters.iter().all(|c| c.action != Action::Failed)
    }

    /// Counts per action, in table order.
    pub fn counts(&self) -> Vec<(Action, usize)> {
        [
            Action::Issued,
            Action::Rotated,
            Action::TrustUpdated,
            Action::Kept,
            Action::WouldIssue,
            Action::WouldRotate,
            Action::WouldUpdateTrust,
            Action::Failed,
        ]
        .into_iter()
        .map(|a| (a, self.clusters.iter().filter(|c| c.action == a).count()))
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}
