//! The RootTrustPolicy custom resource in meshca's API group, with the same spec as Gloo Mesh's
//! `admin.gloo.solo.io/v2` policy (so the seed's YAML works after changing `apiVersion`).
//!
//! The CustomResourceDefinition is derived (kube's `CustomResource` with schemars) from the
//! typed spec meshca-ops parses ([`meshca_ops::policy::PolicyConfig`] and the types under it)
//! and from the typed [`PolicyStatus`] the controller writes: a field added to either is in the
//! schema by construction, with the same bounds the core checks ([`meshca::bounds`]).

use std::collections::BTreeMap;

use kube::core::{ApiResource, GroupVersionKind};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use meshca_ops::policy::PolicyConfig;
use meshca_ops::reconcile::Action;

/// API group.
pub const GROUP: &str = "meshca.dev";
/// API version.
pub const VERSION: &str = "v1alpha1";
/// Kind.
pub const KIND: &str = "RootTrustPolicy";
/// Plural resource name.
pub const PLURAL: &str = "roottrustpolicies";

/// The spec of a RootTrustPolicy (`spec.config` and Gloo's `spec.applyToMeshes`).
// clippy reads the repeated `printcolumn(... type_ = "string" ...)` as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "meshca.dev",
    version = "v1alpha1",
    kind = "RootTrustPolicy",
    plural = "roottrustpolicies",
    shortname = "rtp",
    namespaced,
    status = "PolicyStatus",
    doc = "How every workload cluster's Istio intermediate CA is issued, rotated and trusted (Gloo Mesh's RootTrustPolicy spec).",
    label("app.kubernetes.io/managed-by", "meshca"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Rotation", type_ = "string", json_path = ".status.rotation.state"),
    printcolumn(name = "Next check", type_ = "string", json_path = ".status.nextCheck"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RootTrustPolicySpec {
    /// The signing CA, intermediate options, passive roots and root rotation.
    pub config: PolicyConfig,
    /// Gloo Mesh's mesh selection (accepted, not acted on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "meshca_ops::policy::schema::preserved_list")]
    pub apply_to_meshes: Option<Value>,
}

/// The policy's state in `status.state` (Gloo Mesh's words).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum PolicyState {
    /// Every cluster reconciled and all share the root.
    Accepted,
    /// Reconciled, with warnings (or no clusters yet).
    Warning,
    /// Some cluster failed, or the trust check did.
    Failed,
    /// The policy itself is invalid.
    Invalid,
}

/// `status`: what the controller last did, as the policy's readers (kubectl, dashboards) see it.
/// Top-level fields left out are kept as they were (the controller merges); inner fields of
/// `rotation` and `clusters` are written whole.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct PolicyStatus {
    /// The policy generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The overall state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PolicyState>,
    /// A sentence for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// SHA-256 of the root every cluster shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_fingerprint: Option<String>,
    /// The earliest next check over all clusters (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check: Option<String>,
    /// Per workload cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<BTreeMap<String, ClusterStatus>>,
    /// The root rotation, if one ran (`state: NOT_ROTATING` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,
    /// Notes about the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<Vec<String>>,
    /// The fleet's revocation list and CRL set, once a cluster CA was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationStatus>,
    /// `Ready`, and `RootRotation` while one runs.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One workload cluster in `status.clusters`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ClusterStatus {
    /// What the last run did.
    pub action: Option<Action>,
    /// Why.
    pub reason: Option<String>,
    /// The bundle's notAfter (RFC 3339).
    pub not_after: Option<String>,
    /// When the controller looks at it next (RFC 3339).
    pub next_check: Option<String>,
    /// When meshca last wrote a new bundle (RFC 3339).
    pub last_rotation: Option<String>,
    /// Whether istiod loaded the roots meshca wrote (`istio-ca-root-cert`): `in-sync`, `stale`
    /// or `unobserved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<String>,
    /// The last error's kind, when the cluster failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `status.rotation`. Every field is written (null when not rotating), so a merge clears the
/// fields of a finished rotation.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RotationStatus {
    /// Gloo Mesh's rotation state (`ADDING_NEW_ROOT`, ..., `NOT_ROTATING`).
    pub state: String,
    /// meshca's phase name.
    pub phase: Option<String>,
    /// Subject of the root being retired.
    pub old_root: Option<String>,
    /// Subject of the incoming root.
    pub new_root: Option<String>,
    /// The clusters the current step waits for.
    pub pending: Option<Vec<String>>,
    /// When the next step may begin (RFC 3339).
    pub next_step_at: Option<String>,
    /// Every phase the rotation reached, over all its passes, in order (kept once it is over).
    pub phases: Option<Vec<String>>,
    /// What the last run did per cluster.
    pub clusters: Option<BTreeMap<String, RotationClusterStatus>>,
}

/// `status.revocation`: what the controller revoked, and the CRL set every bundle carries.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RevocationStatus {
    /// The value of the `meshca.dev/revoke` annotation last acted on: the controller acts on
    /// the annotation once per value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_request: Option<String>,
    /// The revoked cluster CAs.
    #[serde(default)]
    pub revoked: Vec<RevokedStatus>,
    /// The root CRL's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_number: Option<u64>,
    /// The root CRL's nextUpdate (RFC 3339): it is re-signed well before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_next_update: Option<String>,
    /// Where the list lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
}

/// One revoked cluster CA in `status.revocation.revoked`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RevokedStatus {
    /// The cluster.
    pub cluster: String,
    /// The serial (hex).
    pub serial: String,
    /// When (RFC 3339).
    pub revoked_at: String,
    /// Why.
    pub reason: String,
}

/// One cluster in `status.rotation.clusters`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RotationClusterStatus {
    /// `done`, `converged`, `would-converge` or `failed`.
    pub outcome: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What `autoRestartPods` restarted, or why it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted: Option<String>,
}

impl RotationStatus {
    /// No rotation under way.
    pub fn not_rotating() -> Self {
        RotationStatus { state: "NOT_ROTATING".into(), ..Default::default() }
    }
}

/// A condition, as Kubernetes API conventions define them.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Condition {
    /// `Ready`, `RootRotation`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// For humans.
    pub message: String,
    /// RFC 3339.
    pub last_transition_time: String,
    /// The generation it describes.
    pub observed_generation: Option<i64>,
}

/// The resource for kube-rs's dynamic API.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// The CustomResourceDefinition as YAML (`meshca crd | kubectl apply -f -`). The schema lets the
/// API server reject malformed policies early; meshca validates again and reports in `status`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = RootTrustPolicy::crd();
    serde_saphyr::to_string(&crd).unwrap_or_default()
}
