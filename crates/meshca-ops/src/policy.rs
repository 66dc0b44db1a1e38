//! The RootTrustPolicy file: Gloo Mesh's `admin.gloo.solo.io/v2` YAML accepted as written, and
//! meshca's own `meshca.dev/v1alpha1` with the same spec. Unknown or invalid fields are errors
//! that name the field path.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::Duration;

use meshca::{KeyAlgorithm, RootParams, RotationPolicy};

use crate::error::Error;

/// Gloo Mesh's API version, as in the seed.
pub const GLOO_API_VERSION: &str = "admin.gloo.solo.io/v2";
/// meshca's own API version (same spec).
pub const MESHCA_API_VERSION: &str = "meshca.dev/v1alpha1";

/// The seed's policy (shared/reference): intermediates live one day and rotate with 10% left.
pub const SEED_POLICY: &str = "\
apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata:
  name: root-trust-policy
  namespace: gloo-mesh
spec:
  config:
    intermediateCertOptions:
      secretRotationGracePeriodRatio: 0.1
      ttlDays: 1
    mgmtServerCa:
      secretRef:
        name: my-root-trust-policy.gloo-mesh
        namespace: gloo-mesh
";

/// Where the signing CA comes from.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SignerSource {
    /// An existing Secret on the management cluster (`mgmtServerCa.secretRef`).
    SecretRef {
        /// Secret name.
        name: String,
        /// Secret namespace.
        namespace: String,
    },
    /// A root meshca creates on first run and stores as `<policy>.<namespace>` in the policy's
    /// namespace (`mgmtServerCa.generated`), as Gloo Mesh does.
    Generated {
        /// Secret name.
        name: String,
        /// Secret namespace.
        namespace: String,
        /// The root to create.
        root: RootParams,
    },
    /// The PKI of `mgmtServerCa.vault` signs. With `signs: managementIntermediate` this Secret
    /// (`secretRef`, or `<policy>.<namespace>`) holds the management intermediate meshca keeps;
    /// with `signs: clusters` it names the signer in reports and is never written.
    Provider {
        /// Secret name.
        name: String,
        /// Secret namespace.
        namespace: String,
    },
}

impl SignerSource {
    /// Namespace and name of the signing CA Secret.
    pub fn secret(&self) -> (&str, &str) {
        match self {
            SignerSource::SecretRef { name, namespace }
            | SignerSource::Generated { name, namespace, .. }
            | SignerSource::Provider { name, namespace } => (namespace, name),
        }
    }
}

/// `mgmtServerCa.pkcs11`, checked: the signing CA's key in a token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignerKey {
    /// The key.
    pub uri: crate::pkcs11::KeyUri,
    /// The module the policy expects (it must be the one meshca was given).
    pub module: Option<std::path::PathBuf>,
    /// The PIN's Secret on the management cluster, and its key.
    pub pin: Option<(SecretName, String)>,
}

/// `mgmtServerCa.vault`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VaultSigner {
    /// The server's base address, without a trailing `/`.
    pub address: String,
    /// The PKI mount.
    pub mount: String,
    /// The issuer reference (`default` when the policy names none).
    pub issuer: String,
    /// What the PKI signs.
    pub signs: Signs,
    /// The management intermediate's lifetime (`signs: managementIntermediate`).
    pub ttl: Duration,
    /// The Secret key holding the CA of the server's TLS.
    pub ca_cert: Option<(SecretName, String)>,
    /// How to log in.
    pub auth: VaultAuth,
}

/// What the PKI signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signs {
    /// Every cluster intermediate.
    Clusters,
    /// The management intermediate meshca keeps.
    ManagementIntermediate,
}

/// How meshca logs in to the PKI.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VaultAuth {
    /// The token meshca's operator gives it (`VAULT_TOKEN`, `--vault-token-file`).
    Given,
    /// A token in a Secret.
    Token(SecretName, String),
    /// AppRole: the role ID, the secret ID's Secret and key, the method's mount.
    AppRole {
        /// The role ID (not a secret).
        role_id: String,
        /// The secret ID's Secret and key.
        secret_id: (SecretName, String),
        /// The auth method's path.
        mount: String,
    },
    /// Kubernetes: the role and the method's mount; the JWT is the service account's token.
    Kubernetes {
        /// The role.
        role: String,
        /// The auth method's path.
        mount: String,
    },
}

/// A Secret on the management cluster named by the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecretName {
    /// Namespace (defaults to the policy's).
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// `spec.config.rootRotation` (a meshca extension): rotate the root to this signing CA, through
/// the three steps, by itself.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AutoRootRotation {
    /// `newMgmtServerCa.secretRef`: the incoming signing CA (a bundle like `mgmtServerCa`'s).
    pub new_signer: SecretName,
    /// `newMgmtServerCa.pkcs11`: the incoming CA's key in a token.
    pub new_key: Option<SignerKey>,
    /// `newMgmtServerCa.vault`: the PKI that holds the incoming CA.
    pub new_vault: Option<VaultSigner>,
    /// `dwellHours`: the wait after each step completes everywhere (default 24 h, istiod's
    /// workload certificate lifetime, so every proxy renews under the new trust).
    pub dwell: Duration,
}

/// The default dwell: istiod's default workload certificate TTL.
pub const DEFAULT_DWELL: Duration = Duration::hours(24);

/// A parsed, checked policy.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Policy {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (default `gloo-mesh`).
    pub namespace: String,
    /// `apiVersion` as written.
    pub api_version: String,
    /// The signing CA.
    pub signer: SignerSource,
    /// Where the signing CA's key is, when it is in a token (`mgmtServerCa.pkcs11`).
    pub signer_key: Option<SignerKey>,
    /// The PKI that signs, when it is OpenBao/Vault (`mgmtServerCa.vault`).
    pub vault: Option<VaultSigner>,
    /// `mgmtServerCa.upstreamCrlSecretRef`: the Secret and key of the upstream CRLs.
    pub upstream_crl: Option<(SecretName, String)>,
    /// How intermediates are issued and rotated.
    pub rotation: RotationPolicy,
    /// `spec.config.autoRestartPods`.
    pub auto_restart_pods: bool,
    /// `spec.config.passiveCertificateAuthorities[].secretRef`: Secrets whose roots every
    /// cluster trusts (`root-cert.pem`, or `ca.crt`), never used to sign.
    pub passive: Vec<SecretName>,
    /// `spec.config.rootRotation`: the automatic root rotation, if one is asked for.
    pub root_rotation: Option<AutoRootRotation>,
    /// `spec.config.waitForUnobservedIstiod`.
    pub wait_for_unobserved_istiod: bool,
    /// `spec.config.workloadSigning`: meshca is the Kubernetes signer for these clusters.
    pub workload_signing: Option<WorkloadSigning>,
    /// `spec.config.trustDistribution`: where the fleet's trust set is published beyond the mesh.
    pub trust_distribution: Option<TrustDistribution>,
    /// `spec.config.auditLog`: the issuance log, when kept.
    pub audit_log: Option<AuditLogConfig>,
    /// Fields accepted but not acted on by this edge, for the user to know.
    pub notes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPolicy {
    api_version: String,
    kind: String,
    metadata: RawMeta,
    spec: PolicySpec,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMeta {
    name: String,
    namespace: Option<String>,
    // labels, annotations, uid, generation... are Kubernetes' business.
    #[serde(flatten)]
    _rest: serde_json::Map<String, Value>,
}

/// The typed `spec` of a RootTrustPolicy, as written (Gloo Mesh's fields plus meshca's
/// extensions). [`parse`] checks it into a [`Policy`]; the Kubernetes crate derives the
/// CustomResourceDefinition's schema from these types (feature `schema`), so a field added here
/// is in the schema by construction.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct PolicySpec {
    /// `spec.config`.
    pub config: PolicyConfig,
    /// `spec.applyToMeshes`: Gloo Mesh's mesh selection (accepted, not acted on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::preserved_list"))]
    pub apply_to_meshes: Option<Value>,
}

/// `spec.config`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct PolicyConfig {
    /// The signing CA: an existing Secret, or a root meshca generates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mgmt_server_ca: Option<MgmtServerCa>,
    /// Gloo Mesh's agent-side CA (refused: meshca issues every cluster's intermediate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::preserved_object"))]
    pub agent_ca: Option<Value>,
    /// How intermediates are issued and rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_cert_options: Option<CertOptions>,
    /// Restart istiod after a new intermediate lands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_restart_pods: Option<bool>,
    /// Secrets whose roots every cluster trusts, never used to sign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_certificate_authorities: Option<Vec<CaSecret>>,
    /// meshca's extension: rotate the root to this CA, step by step, by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_rotation: Option<RootRotationSpec>,
    /// meshca's extension: whether a root-rotation step also waits for clusters where what
    /// istiod loaded cannot be seen (no `istio-ca-root-cert`: istiod absent or not started).
    /// Default false: such a cluster has no workloads signed by it to break, and waiting would
    /// hold every rotation on a cluster without istiod. A cluster whose istiod publishes other
    /// roots than meshca wrote always holds the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_unobserved_istiod: Option<bool>,
    /// meshca's extension: meshca signs workload certificates itself, as the Kubernetes signer
    /// istiod's RA mode asks (and for PodCertificateRequests), so the clusters named keep no CA
    /// key: their intermediates stay on the management side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_signing: Option<WorkloadSigningSpec>,
    /// meshca's extension: publish the fleet's trust set (every root in use, the incoming one
    /// during a root rotation, the passive ones) beyond the mesh: a SPIFFE bundle endpoint,
    /// ClusterTrustBundles and ConfigMaps in the workload clusters. A root rotation waits for
    /// every target before intermediates from the new root go out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_distribution: Option<TrustDistributionSpec>,
    /// meshca's extension: keep a transparency log (RFC 6962 Merkle tree, C2SP signed-note
    /// checkpoints) of every CA certificate and CRL this policy's runs write, beside the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<AuditLogSpec>,
}

/// `spec.config.auditLog`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct AuditLogSpec {
    /// The log's origin, the first line of every checkpoint (default
    /// `meshca.dev/<namespace>/<name>` of the policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The Secret holding the log's Ed25519 key (`log.key`, PKCS#8 PEM). meshca generates it
    /// when absent (default `<policy>-audit-key` beside the policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_ref: Option<SecretRefSpec>,
    /// The log's Ed25519 key in a PKCS#11 token instead (`CKK_EC_EDWARDS`, signing with
    /// `CKM_EDDSA`), as `mgmtServerCa.pkcs11`: meshca generates it there, not extractable, when
    /// no key matches the URI. Excludes keySecretRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<Pkcs11Spec>,
}

/// The issuance log a policy keeps (`spec.config.auditLog`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditLogConfig {
    /// The checkpoint origin and key name.
    pub origin: String,
    /// The Secret of the log key (unused when the key is in a token).
    pub key: SecretName,
    /// The log key in a PKCS#11 token (`spec.config.auditLog.pkcs11`), instead of the Secret.
    pub token: Option<SignerKey>,
}

/// `spec.config.trustDistribution`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct TrustDistributionSpec {
    /// The trust domain the SPIFFE bundle is for (default: workloadSigning's, else
    /// `cluster.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// The SPIFFE bundle endpoint (served by `meshca controller --bundle-endpoint-addr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_bundle: Option<SpiffeBundleSpec>,
    /// Whether each workload cluster gets the ClusterTrustBundles `meshca.dev:istio:live` (and
    /// `meshca.dev:istio:canary` during a root rotation), signer `meshca.dev/istio` (default
    /// true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_trust_bundles: Option<bool>,
    /// A ConfigMap with the trust set in each namespace that matches, in every workload cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_maps: Option<ConfigMapsSpec>,
}

/// `spec.config.trustDistribution.spiffeBundle`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct SpiffeBundleSpec {
    /// `spiffe_refresh_hint`, in seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = meshca::REFRESH_HINT_SECONDS.0, max = meshca::REFRESH_HINT_SECONDS.1)))]
    pub refresh_hint_seconds: Option<i64>,
    /// The endpoint profile: `https_spiffe` (meshca issues and rotates the endpoint's own
    /// X509-SVID, `spiffe://<trust domain>/meshca/bundle-endpoint`; the default) or `https_web`
    /// (a serving certificate from `servingCertSecretRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// `https_web`: the Secret with the serving certificate (`tls.crt`, `tls.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_cert_secret_ref: Option<SecretRefSpec>,
}

/// `spec.config.trustDistribution.configMaps`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct ConfigMapsSpec {
    /// The ConfigMap's name (default `meshca-trust-bundle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The key the PEM roots are under (default `root-certs.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Which namespaces get it (required, as trust-manager asks: `{}` is every namespace).
    pub namespace_selector: LabelSelectorSpec,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, ANDed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct LabelSelectorSpec {
    /// Labels that must be present with these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<std::collections::BTreeMap<String, String>>,
    /// Requirements on labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<LabelRequirementSpec>>,
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct LabelRequirementSpec {
    /// The label.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values (`In`, `NotIn`: at least one; `Exists`, `DoesNotExist`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

/// `spec.config.workloadSigning`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct WorkloadSigningSpec {
    /// The Kubernetes signer name (istiod's `K8S_SIGNER`), e.g. `meshca.dev/istio`.
    pub signer_name: String,
    /// What is signed: `csr` (CertificateSigningRequests), `podCertificate`
    /// (PodCertificateRequests) or `both` (default `csr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The longest workload certificate, in hours (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = meshca::bounds::LEAF_TTL_HOURS.0, max = meshca::bounds::LEAF_TTL_HOURS.1)))]
    pub max_ttl_hours: Option<i64>,
    /// The trust domain every SPIFFE ID must be in (default `cluster.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// The clusters signed for (default: every cluster of the policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<String>>,
    /// Whether DNS SANs beside the SPIFFE ID are signed (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_dns_sans: Option<bool>,
    /// The key types a request may carry, named as `keyAlgorithm` names them (`ecdsa-p256`,
    /// `ecdsa-p384`, `rsa-2048`, `rsa-3072`, `rsa-4096`; default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_algorithms: Option<Vec<String>>,
    /// Who may request (a CSR's `spec.username`; default istiod's service account,
    /// `system:serviceaccount:istio-system:istiod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requesters: Option<Vec<String>>,
}

/// A CA held in a Secret (`{secretRef: {...}}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct CaSecret {
    /// The Secret.
    pub secret_ref: SecretRefSpec,
}

/// `spec.config.rootRotation`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct RootRotationSpec {
    /// The incoming signing CA.
    pub new_mgmt_server_ca: IncomingCa,
    /// Hours to wait after each step completes everywhere (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = meshca::bounds::DWELL_HOURS.0, max = meshca::bounds::DWELL_HOURS.1)))]
    pub dwell_hours: Option<i64>,
}

/// `spec.config.rootRotation.newMgmtServerCa`: the incoming signing CA, held as
/// `mgmtServerCa` may hold one: in the Secret, its key in a PKCS#11 token, or by an
/// OpenBao/Vault PKI (the Secret then keeps the PKI's issuer, or the management intermediate).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct IncomingCa {
    /// The Secret.
    pub secret_ref: SecretRefSpec,
    /// Its key in a PKCS#11 token, as `mgmtServerCa.pkcs11`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<Pkcs11Spec>,
    /// The PKI that holds it, as `mgmtServerCa.vault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultSpec>,
}

/// `spec.config.mgmtServerCa`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct MgmtServerCa {
    /// Generate a root on first run, with these options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<CertOptions>,
    /// An existing Secret with the signing CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRefSpec>,
    /// meshca's extension: the signing CA's private key is in a PKCS#11 token (an HSM), and
    /// `secretRef` holds only its public files (ca-cert.pem, cert-chain.pem, root-cert.pem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<Pkcs11Spec>,
    /// meshca's extension: an OpenBao or Vault PKI secrets engine signs, either every cluster's
    /// intermediate or a management intermediate meshca keeps and renews.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultSpec>,
    /// meshca's extension: a Secret with the CRLs (PEM) of the CAs above the signing CA, for an
    /// upstream PKI meshca cannot reach; with CRLs in use, each CA of every chain needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_crl_secret_ref: Option<CrlSecretRef>,
}

/// A Secret's key holding CRLs (namespace defaults to the policy's, key to `ca-crl.pem`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CrlSecretRef {
    /// Name.
    pub name: String,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Secret's key (default `ca-crl.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `mgmtServerCa.vault`: the OpenBao/Vault PKI that signs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct VaultSpec {
    /// The server (`https://vault.example:8200`; `http://` only to a loopback address).
    pub address: String,
    /// The PKI secrets engine's path (default `pki`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// The issuer to sign with (`issuer_ref`; default the mount's default issuer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `clusters` (default): the PKI signs every cluster intermediate. `managementIntermediate`:
    /// it signs a management intermediate meshca keeps, renews, and signs clusters with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signs: Option<String>,
    /// The lifetime of the management intermediate (`signs: managementIntermediate`; default
    /// twice `intermediateCertOptions.ttlDays`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_days: Option<i64>,
    /// The CA that serves the server's TLS (default: the Mozilla root set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_secret_ref: Option<KeyRefSpec>,
    /// How meshca logs in (default: the token its operator gives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<VaultAuthSpec>,
}

/// `mgmtServerCa.vault.auth`: one of the three.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct VaultAuthSpec {
    /// A Secret holding a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<KeyRefSpec>,
    /// AppRole login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role: Option<AppRoleSpec>,
    /// Kubernetes login with the controller's service account token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesAuthSpec>,
}

/// `auth.appRole`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct AppRoleSpec {
    /// The role ID.
    pub role_id: String,
    /// The Secret holding the secret ID.
    pub secret_id_secret_ref: KeyRefSpec,
    /// The auth method's path (default `approle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
}

/// `auth.kubernetes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct KubernetesAuthSpec {
    /// The role to log in as.
    pub role: String,
    /// The auth method's path (default `kubernetes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
}

/// A key of a Secret: `{name, namespace, key}` (namespace defaults to the policy's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeyRefSpec {
    /// Name.
    pub name: String,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Secret's key.
    pub key: String,
}

/// `mgmtServerCa.pkcs11`: where the signing CA's key is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct Pkcs11Spec {
    /// The key, as an RFC 7512 PKCS#11 URI (`pkcs11:token=meshca;object=root-ca`), without a PIN.
    pub uri: String,
    /// The module (shared library) the key's token is reached through. meshca loads only the
    /// module its operator names; when set here, it must be that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// The Secret holding the token's user PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_secret_ref: Option<PinSecretRef>,
}

/// A key of a Secret (namespace defaults to the policy's, key to `pin`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PinSecretRef {
    /// Name.
    pub name: String,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Secret's key holding the PIN (default `pin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A Secret by name (namespace defaults to the policy's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SecretRefSpec {
    /// Name.
    pub name: String,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Certificate options (`intermediateCertOptions`, `mgmtServerCa.generated`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct CertOptions {
    /// Lifetime in days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = meshca::bounds::CA_TTL_DAYS.0, max = meshca::bounds::CA_TTL_DAYS.1)))]
    pub ttl_days: Option<i64>,
    /// RSA key size (Gloo's name; it holds bits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [2048, 3072, 4096])))]
    pub rsa_key_size_bytes: Option<i64>,
    /// meshca's extension: the key algorithm by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(extend("enum" = ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096"]))
    )]
    pub key_algorithm: Option<String>,
    /// Subject organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(max = 64)))]
    pub org_name: Option<String>,
    /// Rotate when less than this fraction of the lifetime remains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(extend("minimum" = 0, "exclusiveMinimum" = true, "maximum" = 1, "exclusiveMaximum" = true))
    )]
    pub secret_rotation_grace_period_ratio: Option<f64>,
    /// pathLenConstraint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 255)))]
    pub path_len: Option<i64>,
}

/// Schemas the derive cannot infer: Gloo's free-form fields, kept as written by the API server.
/// The Kubernetes crate's CRD uses these too.
#[cfg(feature = "schema")]
pub mod schema {
    use schemars::{json_schema, Schema, SchemaGenerator};

    /// An object whose fields the API server keeps as they are.
    pub fn preserved_object(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "object", "nullable": true, "x-kubernetes-preserve-unknown-fields": true})
    }

    /// A list of such objects.
    pub fn preserved_list(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "nullable": true,
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        })
    }
}

/// Parses a policy file's text. `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Policy, Error> {
    let value: Value = serde_saphyr::from_str(text).map_err(|e| Error::Policy {
        file: file.to_owned(),
        detail: format!("not valid YAML: {}", crate::error::yaml_error(&e)),
    })?;
    parse_value(value, file)
}

/// Parses a policy already decoded to JSON (a Kubernetes custom resource). `source` names it in
/// errors. Server-populated metadata (uid, generation, managedFields...) and `status` are ignored.
pub fn parse_value(value: Value, file: &str) -> Result<Policy, Error> {
    let bad = |detail: String| Error::Policy { file: file.to_owned(), detail };
    if !value.is_object() {
        let what = match &value {
            Value::Null => "empty",
            Value::Array(_) => "a list",
            Value::String(_) => "a string (a PEM file, perhaps)",
            _ => "a single value",
        };
        return Err(bad(format!(
            "the document is {what}, not a RootTrustPolicy (a mapping with apiVersion, kind, metadata and spec); is \
             this the policy file?"
        )));
    }
    // Serde's messages quote the offending value: redacted, so a file that is not what it
    // should be never reaches the terminal through an error.
    let raw: RawPolicy = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = crate::error::redact(&e.into_inner().to_string());
        if path == "." || path.is_empty() {
            bad(inner)
        } else {
            bad(format!("{path}: {inner}"))
        }
    })?;

    if raw.api_version != GLOO_API_VERSION && raw.api_version != MESHCA_API_VERSION {
        return Err(bad(format!(
            "apiVersion must be {GLOO_API_VERSION} or {MESHCA_API_VERSION}, got {}",
            raw.api_version
        )));
    }
    if raw.kind != "RootTrustPolicy" {
        return Err(bad(format!("kind must be RootTrustPolicy, got {}", raw.kind)));
    }
    let mut generated_ratio_note = false;
    let namespace = raw.metadata.namespace.clone().unwrap_or_else(|| "gloo-mesh".into());
    require_name("metadata.name", &raw.metadata.name, &bad)?;
    require_name("metadata.namespace", &namespace, &bad)?;
    let cfg = raw.spec.config;
    if cfg.agent_ca.is_some() {
        return Err(bad("spec.config.agentCa is not supported: meshca issues every cluster's intermediate from \
                        one signing CA so that they share a root; use spec.config.mgmtServerCa"
            .into()));
    }
    let mgmt = cfg.mgmt_server_ca.ok_or_else(|| {
        bad("spec.config.mgmtServerCa is required: give secretRef (your CA) or generated (meshca creates a root)"
            .into())
    })?;
    let signer_key = match mgmt.pkcs11 {
        None => None,
        Some(_) if mgmt.generated.is_some() => {
            return Err(bad("spec.config.mgmtServerCa.pkcs11 goes with secretRef (the CA's public files), not \
                            generated: generate the root inside the token first (meshca root-ca with a key URI) and \
                            store its public files in the Secret"
                .into()))
        }
        Some(k) => Some(parse_signer_key("spec.config.mgmtServerCa.pkcs11", k, &namespace, &bad)?),
    };
    let upstream_crl = match mgmt.upstream_crl_secret_ref {
        None => None,
        Some(r) => Some(secret_key_ref(
            "spec.config.mgmtServerCa.upstreamCrlSecretRef",
            r.namespace.unwrap_or_else(|| namespace.clone()),
            r.name,
            r.key.unwrap_or_else(|| meshca::CA_CRL.into()),
            &bad,
        )?),
    };
    let vault_spec = mgmt.vault;
    if vault_spec.is_some() && mgmt.generated.is_some() {
        return Err(bad("spec.config.mgmtServerCa.vault goes alone or with secretRef (where meshca keeps the \
                        management intermediate), not with generated"
            .into()));
    }
    check_key_with_vault("spec.config.mgmtServerCa", signer_key.as_ref(), vault_spec.as_ref(), &bad)?;
    let signer = match (mgmt.secret_ref, mgmt.generated) {
        (r, None) if vault_spec.is_some() => {
            let (name, ns) = match r {
                Some(r) => (r.name, r.namespace.unwrap_or_else(|| namespace.clone())),
                None => (format!("{}.{}", raw.metadata.name, namespace), namespace.clone()),
            };
            require_name("spec.config.mgmtServerCa.secretRef.name", &name, &bad)?;
            require_name("spec.config.mgmtServerCa.secretRef.namespace", &ns, &bad)?;
            SignerSource::Provider { name, namespace: ns }
        }
        (Some(_), Some(_)) => {
            return Err(bad("spec.config.mgmtServerCa: give either secretRef or generated, not both".into()))
        }
        (None, None) => return Err(bad("spec.config.mgmtServerCa needs secretRef or generated".into())),
        (Some(r), None) => {
            let ns = r.namespace.unwrap_or_else(|| namespace.clone());
            require_name("spec.config.mgmtServerCa.secretRef.name", &r.name, &bad)?;
            require_name("spec.config.mgmtServerCa.secretRef.namespace", &ns, &bad)?;
            SignerSource::SecretRef { name: r.name, namespace: ns }
        }
        (None, Some(g)) => {
            let base = "spec.config.mgmtServerCa.generated";
            let mut root = RootParams::default();
            if let Some(days) = g.ttl_days {
                root.ttl = days_field(base, days, &bad)?;
            }
            root.key = key_field(base, &g, &bad)?.unwrap_or(root.key);
            if let Some(org) = g.org_name {
                meshca::validate_subject_attr(&format!("{base}.orgName"), &org).map_err(|e| bad(e.to_string()))?;
                root.organization = org;
            }
            root.pathlen = match g.path_len {
                Some(p) => Some(u8::try_from(p).map_err(|_| bad(format!("{base}.pathLen must be 0..255, got {p}")))?),
                None => None,
            };
            if g.secret_rotation_grace_period_ratio.is_some() {
                generated_ratio_note = true;
            }
            SignerSource::Generated {
                name: format!("{}.{}", raw.metadata.name, namespace),
                namespace: namespace.clone(),
                root,
            }
        }
    };

    let base = "spec.config.intermediateCertOptions";
    let opts = cfg.intermediate_cert_options.unwrap_or_default();
    let ttl = match opts.ttl_days {
        Some(d) => days_field(base, d, &bad)?,
        None => Duration::days(365),
    };
    let ratio = opts.secret_rotation_grace_period_ratio.unwrap_or(0.1);
    meshca::bounds::grace_ratio(ratio).map_err(|e| bad(format!("{base}.secretRotationGracePeriodRatio {e}")))?;
    let mut rotation = RotationPolicy::new(ttl, ratio).map_err(|e| bad(format!("{base}: {e}")))?;
    if let Some(key) = key_field(base, &opts, &bad)? {
        rotation.key = key;
    }
    if let Some(org) = opts.org_name {
        if org.is_empty() {
            return Err(bad(format!("{base}.orgName must not be empty")));
        }
        meshca::validate_subject_attr(&format!("{base}.orgName"), &org).map_err(|e| bad(e.to_string()))?;
        rotation.organization = org;
    }
    if let Some(p) = opts.path_len {
        rotation.pathlen = u8::try_from(p).map_err(|_| bad(format!("{base}.pathLen must be 0..255, got {p}")))?;
    }

    let secret_name = |field: String, r: SecretRefSpec| -> Result<SecretName, Error> {
        let ns = r.namespace.unwrap_or_else(|| namespace.clone());
        require_name(&format!("{field}.name"), &r.name, &bad)?;
        require_name(&format!("{field}.namespace"), &ns, &bad)?;
        Ok(SecretName { namespace: ns, name: r.name })
    };
    let vault = match vault_spec {
        None => None,
        Some(v) => Some(vault_signer("spec.config.mgmtServerCa.vault", v, &namespace, ttl, &bad)?),
    };
    let mut passive = Vec::new();
    for (i, p) in cfg.passive_certificate_authorities.unwrap_or_default().into_iter().enumerate() {
        passive.push(secret_name(format!("spec.config.passiveCertificateAuthorities[{i}].secretRef"), p.secret_ref)?);
    }
    let root_rotation = match cfg.root_rotation {
        None => None,
        Some(r) => {
            let base = "spec.config.rootRotation";
            let incoming = r.new_mgmt_server_ca;
            let new_signer = secret_name(format!("{base}.newMgmtServerCa.secretRef"), incoming.secret_ref)?;
            let new_key = incoming
                .pkcs11
                .map(|k| parse_signer_key(&format!("{base}.newMgmtServerCa.pkcs11"), k, &namespace, &bad))
                .transpose()?;
            check_key_with_vault(&format!("{base}.newMgmtServerCa"), new_key.as_ref(), incoming.vault.as_ref(), &bad)?;
            let new_vault = incoming
                .vault
                .map(|v| vault_signer(&format!("{base}.newMgmtServerCa.vault"), v, &namespace, ttl, &bad))
                .transpose()?;
            let (ns, name) = signer.secret();
            if new_signer.namespace == ns && new_signer.name == name {
                return Err(bad(format!(
                    "{base}.newMgmtServerCa names the same Secret as mgmtServerCa ({ns}/{name}); name the incoming CA's \
                     Secret"
                )));
            }
            let dwell = match r.dwell_hours {
                None => DEFAULT_DWELL,
                Some(h) => meshca::bounds::dwell_hours(h).map_err(|e| bad(format!("{base}.dwellHours {e}")))?,
            };
            Some(AutoRootRotation { new_signer, new_key, new_vault, dwell })
        }
    };

    let workload_signing = cfg.workload_signing.map(|w| workload_signing(w, &bad)).transpose()?;
    let trust_distribution = cfg
        .trust_distribution
        .map(|t| crate::distribution::check_spec(t, &namespace, workload_signing.as_ref(), &bad))
        .transpose()?;

    let audit_log = match cfg.audit_log {
        None => None,
        Some(a) => {
            let origin = a.origin.unwrap_or_else(|| format!("meshca.dev/{namespace}/{}", raw.metadata.name));
            meshca::tlog::check_origin(&origin).map_err(|_| {
                bad("spec.config.auditLog.origin must be 1 to 200 printable characters without spaces".into())
            })?;
            if a.pkcs11.is_some() && a.key_secret_ref.is_some() {
                return Err(bad(
                    "spec.config.auditLog has both keySecretRef and pkcs11: the log key is in one place; keep one"
                        .into(),
                ));
            }
            let token =
                a.pkcs11.map(|k| parse_signer_key("spec.config.auditLog.pkcs11", k, &namespace, &bad)).transpose()?;
            let key = secret_name(
                "spec.config.auditLog.keySecretRef".into(),
                a.key_secret_ref
                    .unwrap_or(SecretRefSpec { name: format!("{}-audit-key", raw.metadata.name), namespace: None }),
            )?;
            Some(AuditLogConfig { origin, key, token })
        }
    };

    let mut notes = Vec::new();
    if generated_ratio_note {
        notes.push(
            "spec.config.mgmtServerCa.generated.secretRotationGracePeriodRatio is accepted but a generated \
                    root is not rotated automatically; plan a root rotation before it expires"
                .into(),
        );
    }
    if raw.spec.apply_to_meshes.is_some() {
        notes.push(
            "spec.applyToMeshes is not used to select clusters here; the clusters come from the command line".into(),
        );
    }
    Ok(Policy {
        name: raw.metadata.name,
        namespace,
        api_version: raw.api_version,
        signer,
        signer_key,
        vault,
        upstream_crl,
        rotation,
        auto_restart_pods: cfg.auto_restart_pods.unwrap_or(false),
        wait_for_unobserved_istiod: cfg.wait_for_unobserved_istiod.unwrap_or(false),
        workload_signing,
        trust_distribution,
        audit_log,
        passive,
        root_rotation,
        notes,
    })
}

pub use crate::distribution::{ConfigMapTarget, EndpointProfile, LabelSelector, TrustDistribution};

/// What is signed for the workloads of RA-mode clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkloadSigningMode {
    /// CertificateSigningRequests (istiod's RA mode).
    Csr,
    /// PodCertificateRequests.
    PodCertificate,
    /// Both.
    Both,
}

impl WorkloadSigningMode {
    /// Whether CertificateSigningRequests are signed.
    pub fn csr(self) -> bool {
        matches!(self, WorkloadSigningMode::Csr | WorkloadSigningMode::Both)
    }

    /// Whether PodCertificateRequests are signed.
    pub fn pod_certificate(self) -> bool {
        matches!(self, WorkloadSigningMode::PodCertificate | WorkloadSigningMode::Both)
    }
}

/// `spec.config.workloadSigning`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkloadSigning {
    /// The Kubernetes signer name.
    pub signer_name: String,
    /// What is signed.
    pub mode: WorkloadSigningMode,
    /// The rules every request is checked against.
    pub rules: meshca::WorkloadRules,
    /// The clusters signed for; `None`: every cluster of the policy.
    pub clusters: Option<Vec<String>>,
}

impl WorkloadSigning {
    /// Whether `cluster` is signed for (its CA key stays on the management side).
    pub fn covers(&self, cluster: &str) -> bool {
        self.clusters.as_ref().is_none_or(|c| c.iter().any(|n| n == cluster))
    }
}

/// istiod's service account, the requester of every CSR in RA mode.
pub const ISTIOD_REQUESTER: &str = "system:serviceaccount:istio-system:istiod";

/// A Kubernetes signer name (certificates.k8s.io): `<domain>/<path>`, the domain a DNS
/// subdomain, at most 571 characters as the API server allows. The `kubernetes.io` signers are
/// Kubernetes' own.
fn signer_name_problem(name: &str) -> Option<&'static str> {
    let Some((domain, path)) = name.split_once('/') else { return Some("it has no '/': <domain>/<path>") };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 571 || domain.len() > 253 || !domain.split('.').all(label_ok) || !domain.contains('.') {
        return Some("its domain is not a DNS subdomain of at least two labels");
    }
    if path.is_empty() || path.len() > 316 || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("its path is empty, too long or has blanks");
    }
    if domain == "kubernetes.io" || domain.ends_with(".kubernetes.io") {
        return Some("kubernetes.io signers are Kubernetes' own");
    }
    None
}

fn workload_signing(w: WorkloadSigningSpec, bad: &dyn Fn(String) -> Error) -> Result<WorkloadSigning, Error> {
    let base = "spec.config.workloadSigning";
    if let Some(p) = signer_name_problem(&w.signer_name) {
        return Err(bad(format!(
            "{base}.signerName {:?} is not a Kubernetes signer name: {p} (e.g. meshca.dev/istio)",
            meshca::printable(&w.signer_name, 80)
        )));
    }
    let mode = match w.mode.as_deref() {
        None | Some("csr") => WorkloadSigningMode::Csr,
        Some("podCertificate") => WorkloadSigningMode::PodCertificate,
        Some("both") => WorkloadSigningMode::Both,
        Some(other) => {
            return Err(bad(format!(
                "{base}.mode {:?} is not one of csr, podCertificate, both",
                meshca::printable(other, 40)
            )))
        }
    };
    let td = w.trust_domain.unwrap_or_else(|| "cluster.local".into());
    meshca::validate_trust_domain(&td).map_err(|e| bad(format!("{base}.trustDomain: {e}")))?;
    let mut rules = meshca::WorkloadRules::new(&td);
    if let Some(h) = w.max_ttl_hours {
        rules.max_ttl = meshca::bounds::leaf_ttl_hours(h).map_err(|e| bad(format!("{base}.maxTtlHours {e}")))?;
    }
    rules.allow_dns_sans = w.allow_dns_sans.unwrap_or(false);
    if let Some(names) = w.key_algorithms {
        if names.is_empty() {
            return Err(bad(format!("{base}.keyAlgorithms is empty; leave it out for every key type meshca signs")));
        }
        rules.key_types = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                n.parse::<meshca::KeyAlgorithm>()
                    .map(meshca::KeyAlgorithm::key_type)
                    .map_err(|e| bad(format!("{base}.keyAlgorithms[{i}]: {e}")))
            })
            .collect::<Result<_, _>>()?;
    }
    rules.requesters = w.requesters.unwrap_or_else(|| vec![ISTIOD_REQUESTER.to_owned()]);
    if rules.requesters.is_empty() {
        return Err(bad(format!("{base}.requesters is empty; leave it out for istiod's service account")));
    }
    let clusters = match w.clusters {
        None => None,
        Some(c) if c.is_empty() => {
            return Err(bad(format!("{base}.clusters is empty; leave it out for every cluster")));
        }
        Some(c) => {
            for (i, name) in c.iter().enumerate() {
                meshca::validate_cluster_name(name).map_err(|e| bad(format!("{base}.clusters[{i}]: {e}")))?;
            }
            Some(c)
        }
    };
    Ok(WorkloadSigning { signer_name: w.signer_name, mode, rules, clusters })
}

/// An OpenBao/Vault address as meshca accepts it: `https://host[:port][/path]`, or `http://` to
/// a loopback address only (a token must not cross a network in clear), without credentials,
/// query or fragment; returned without a trailing `/`. `None` when it is not one.
pub fn vault_address(address: &str) -> Option<String> {
    let address = address.trim_end_matches('/');
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| address.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/'])));
    let https = address.strip_prefix("https://").is_some_and(|host| !host.is_empty());
    let plain = !address.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '@'));
    ((https || loopback) && plain && address.len() <= 2048).then(|| address.to_owned())
}

/// Whether `value` can be an OpenBao/Vault mount or issuer path: letters, digits, `-`, `_`, `.`
/// in `/`-separated segments, none `.` or `..`, at most 128 bytes.
pub fn vault_path(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// A policy's reference to one key of a Secret (`pinSecretRef`, `caCertSecretRef`, ...) at
/// `field`, checked: the Secret's name and namespace, and the key's name. The value that failed
/// is not shown: a key file pasted here must not reach a terminal, a log or the policy's status.
fn secret_key_ref(
    field: &str,
    namespace: String,
    name: String,
    key: String,
    bad: Bad<'_>,
) -> Result<(SecretName, String), Error> {
    require_name(&format!("{field}.name"), &name, bad)?;
    require_name(&format!("{field}.namespace"), &namespace, bad)?;
    if key.is_empty() || key.len() > 253 || !key.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
        return Err(bad(format!(
            "{field}.key is not a Secret key (letters, digits, '-', '.' and '_'; at most 253; value not shown)"
        )));
    }
    Ok((SecretName { namespace, name }, key))
}

/// Checks a `pkcs11` field (`base`): the key's URI, its module and PIN Secret.
fn parse_signer_key(base: &str, k: Pkcs11Spec, namespace: &str, bad: Bad<'_>) -> Result<SignerKey, Error> {
    let uri = crate::pkcs11::KeyUri::parse(&k.uri).map_err(|e| bad(format!("{base}.uri: {e}")))?;
    let pin = match k.pin_secret_ref {
        None => None,
        Some(r) => Some(secret_key_ref(
            &format!("{base}.pinSecretRef"),
            r.namespace.unwrap_or_else(|| namespace.to_owned()),
            r.name,
            r.key.unwrap_or_else(|| "pin".into()),
            bad,
        )?),
    };
    let module = k.module.filter(|m| !m.is_empty()).map(std::path::PathBuf::from);
    Ok(SignerKey { uri, module, pin })
}

/// A token key beside a PKI (`base.pkcs11` with `base.vault`) is the management
/// intermediate's, renewed as `LABEL-<time>`.
fn check_key_with_vault(
    base: &str,
    key: Option<&SignerKey>,
    vault: Option<&VaultSpec>,
    bad: Bad<'_>,
) -> Result<(), Error> {
    let Some(v) = vault else { return Ok(()) };
    let signs_management = v.signs.as_deref() == Some("managementIntermediate");
    if key.is_some() && !signs_management {
        return Err(bad(format!(
            "{base}.pkcs11 with vault is the management intermediate's key: it goes with signs: \
             managementIntermediate (with signs: clusters no CA key is kept here)"
        )));
    }
    if key.is_some_and(|k| k.uri.object.is_none()) {
        return Err(bad(format!(
            "{base}.pkcs11.uri needs object=LABEL: each renewal makes a new key LABEL-<time> in the token"
        )));
    }
    Ok(())
}

/// Checks a `vault` field (`base`).
fn vault_signer(
    base: &str,
    v: VaultSpec,
    namespace: &str,
    cluster_ttl: Duration,
    bad: Bad<'_>,
) -> Result<VaultSigner, Error> {
    let address = vault_address(&v.address).ok_or_else(|| {
        bad(format!(
            "{base}.address must be an https:// URL without credentials, query or fragment (http:// only to a \
             loopback address, as `bao server -dev` listens); value not shown"
        ))
    })?;
    let path_part = |field: &str, value: Option<String>, default: &str| -> Result<String, Error> {
        let value = value.unwrap_or_else(|| default.to_owned());
        if !vault_path(&value) {
            return Err(bad(format!(
                "{base}.{field} must be a path of letters, digits, '-', '_', '.' separated by '/' (at most 128)"
            )));
        }
        Ok(value)
    };
    let mount = path_part("mount", v.mount, "pki")?;
    let issuer = path_part("issuer", v.issuer, "default")?;
    if issuer.contains('/') {
        return Err(bad(format!("{base}.issuer is an issuer name or ID, without '/'")));
    }
    let signs = match v.signs.as_deref() {
        None | Some("clusters") => Signs::Clusters,
        Some("managementIntermediate") => Signs::ManagementIntermediate,
        Some(_) => return Err(bad(format!("{base}.signs must be clusters or managementIntermediate"))),
    };
    let ttl = match v.ttl_days {
        Some(d) => days_field(base, d, bad)?,
        None => std::cmp::min(cluster_ttl * 2_i32, meshca::MAX_CA_TTL),
    };
    if signs == Signs::ManagementIntermediate && ttl <= cluster_ttl {
        return Err(bad(format!(
            "{base}.ttlDays must be longer than intermediateCertOptions.ttlDays: the management intermediate \
             outlives the cluster intermediates it signs"
        )));
    }
    let key_ref = |field: String, r: KeyRefSpec| {
        secret_key_ref(&field, r.namespace.unwrap_or_else(|| namespace.to_owned()), r.name, r.key, bad)
    };
    let ca_cert = v.ca_cert_secret_ref.map(|r| key_ref(format!("{base}.caCertSecretRef"), r)).transpose()?;
    let auth = match v.auth {
        None => VaultAuth::Given,
        Some(a) => match (a.token_secret_ref, a.app_role, a.kubernetes) {
            (None, None, None) => VaultAuth::Given,
            (Some(t), None, None) => {
                let (secret, key) = key_ref(format!("{base}.auth.tokenSecretRef"), t)?;
                VaultAuth::Token(secret, key)
            }
            (None, Some(r), None) => {
                if r.role_id.is_empty() || r.role_id.len() > 256 || r.role_id.chars().any(char::is_control) {
                    return Err(bad(format!("{base}.auth.appRole.roleId must be 1 to 256 printable characters")));
                }
                VaultAuth::AppRole {
                    role_id: r.role_id,
                    secret_id: key_ref(format!("{base}.auth.appRole.secretIdSecretRef"), r.secret_id_secret_ref)?,
                    mount: path_part("auth.appRole.mount", r.mount, "approle")?,
                }
            }
            (None, None, Some(k)) => {
                if k.role.is_empty() || k.role.len() > 256 || k.role.chars().any(char::is_control) {
                    return Err(bad(format!("{base}.auth.kubernetes.role must be 1 to 256 printable characters")));
                }
                VaultAuth::Kubernetes {
                    role: k.role,
                    mount: path_part("auth.kubernetes.mount", k.mount, "kubernetes")?,
                }
            }
            _ => return Err(bad(format!("{base}.auth: give one of tokenSecretRef, appRole, kubernetes"))),
        },
    };
    Ok(VaultSigner { address, mount, issuer, signs, ttl, ca_cert, auth })
}

/// `bad` turns a message into the policy's error (it names the file).
type Bad<'a> = &'a dyn Fn(String) -> Error;

fn days_field(base: &str, days: i64, bad: Bad<'_>) -> Result<Duration, Error> {
    meshca::bounds::ca_ttl_days(days).map_err(|e| bad(format!("{base}.ttlDays {e}")))
}

fn key_field(base: &str, o: &CertOptions, bad: Bad<'_>) -> Result<Option<KeyAlgorithm>, Error> {
    let from_rsa = match o.rsa_key_size_bytes {
        // Gloo's field is named bytes but holds bits (4096).
        Some(bits) => Some(KeyAlgorithm::rsa(usize::try_from(bits).unwrap_or(0)).map_err(|_| {
            bad(format!("{base}.rsaKeySizeBytes must be 2048, 3072 or 4096 (it is a size in bits), got {bits}"))
        })?),
        None => None,
    };
    let named = match &o.key_algorithm {
        Some(name) => Some(name.parse::<KeyAlgorithm>().map_err(|e| bad(format!("{base}.keyAlgorithm: {e}")))?),
        None => None,
    };
    match (named, from_rsa) {
        (Some(a), Some(b)) if a != b => {
            Err(bad(format!("{base}: keyAlgorithm {a} contradicts rsaKeySizeBytes ({b}); give only one")))
        }
        (a, b) => Ok(a.or(b)),
    }
}

/// What a Kubernetes name may be; the value that failed is not shown (it may be anything, a
/// key pasted by mistake).
const NAME_RULE: &str = "is not a Kubernetes name (lowercase letters, digits, '-' and '.'; value not shown)";

/// Kubernetes object names (RFC 1123 subdomain): they become directory names in the store. An
/// [`meshca::Error::InvalidParameter`] names `field`.
pub fn check_name(field: &str, name: &str) -> Result<(), meshca::Error> {
    if is_kube_name(name) {
        return Ok(());
    }
    Err(meshca::Error::InvalidParameter { field: field.to_owned(), reason: NAME_RULE.to_owned() })
}

fn require_name(field: &str, name: &str, bad: Bad<'_>) -> Result<(), Error> {
    if is_kube_name(name) {
        return Ok(());
    }
    Err(bad(format!("{field} {NAME_RULE}")))
}

fn is_kube_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, "policy.yaml").unwrap_err().to_string()
    }

    #[test]
    fn the_audit_log_field_names_its_key_in_one_place_and_refuses_a_bad_origin() {
        let with = |log: &str| format!("{SEED_POLICY}    auditLog:{log}\n");
        let p = parse(&with(" {}"), "policy.yaml").unwrap();
        let a = p.audit_log.unwrap();
        assert_eq!(a.origin, "meshca.dev/gloo-mesh/root-trust-policy");
        assert_eq!((a.key.namespace.as_str(), a.key.name.as_str()), ("gloo-mesh", "root-trust-policy-audit-key"));
        assert!(a.token.is_none());
        let p = parse(
            &with("\n      pkcs11:\n        uri: pkcs11:token=hsm;object=log\n        pinSecretRef: {name: hsm-pin}"),
            "policy.yaml",
        )
        .unwrap();
        let k = p.audit_log.unwrap().token.unwrap();
        assert_eq!(k.uri.to_string(), "pkcs11:token=hsm;object=log");
        assert_eq!(k.pin.map(|(s, key)| (s.name, key)), Some(("hsm-pin".into(), "pin".into())));
        let both = with("\n      keySecretRef: {name: k}\n      pkcs11: {uri: 'pkcs11:token=hsm;object=log'}");
        assert!(err(&both).contains("both keySecretRef and pkcs11"), "{}", err(&both));
        let bad_uri = with("\n      pkcs11: {uri: 'pkcs11:token=hsm'}");
        assert!(err(&bad_uri).contains("spec.config.auditLog.pkcs11.uri"), "{}", err(&bad_uri));
        for origin in ["'has space'", "''", &format!("'{}'", "a".repeat(201))] {
            let e = err(&with(&format!("\n      origin: {origin}")));
            assert!(e.contains("spec.config.auditLog.origin"), "{origin}: {e}");
            assert!(!e.contains("has space"), "the refused value is not echoed: {e}");
        }
    }

    #[test]
    fn the_seed_policy_is_accepted_as_written() {
        let p = parse(SEED_POLICY, "policy.yaml").unwrap();
        assert_eq!(p.name, "root-trust-policy");
        assert_eq!(p.signer.secret(), ("gloo-mesh", "my-root-trust-policy.gloo-mesh"));
        assert_eq!(p.rotation.ttl, Duration::days(1));
        assert_eq!(p.rotation.grace_ratio, 0.1);
        assert_eq!(p.rotation.key, KeyAlgorithm::EcdsaP256);
    }

    #[test]
    fn meshca_api_version_and_generated_root() {
        let text = SEED_POLICY.replace(GLOO_API_VERSION, MESHCA_API_VERSION).replace(
            "secretRef:\n        name: my-root-trust-policy.gloo-mesh\n        namespace: gloo-mesh",
            "generated:\n        ttlDays: 730\n        rsaKeySizeBytes: 4096\n        orgName: acme",
        );
        let p = parse(&text, "p.yaml").unwrap();
        match &p.signer {
            SignerSource::Generated { name, namespace, root } => {
                assert_eq!((name.as_str(), namespace.as_str()), ("root-trust-policy.gloo-mesh", "gloo-mesh"));
                assert_eq!(root.key, KeyAlgorithm::Rsa4096);
                assert_eq!(root.organization, "acme");
                assert_eq!(root.ttl, Duration::days(730));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_fields_are_named_by_path() {
        let cases = [
            (
                "secretRotationGracePeriodRatio: 0.1",
                "secretRotationGracePeriodRatio: 1.5",
                "spec.config.intermediateCertOptions.secretRotationGracePeriodRatio must be in (0,1), got 1.5",
            ),
            (
                "ttlDays: 1",
                "ttlDays: 0",
                "spec.config.intermediateCertOptions.ttlDays must be between 1 and 36500, got 0",
            ),
            (
                "ttlDays: 1",
                "ttlDays: 1\n      colour: blue",
                "spec.config.intermediateCertOptions.colour: unknown field `colour`, expected one of `ttlDays`",
            ),
            ("ttlDays: 1", "ttlDays: one", "spec.config.intermediateCertOptions.ttlDays: invalid type"),
            ("ttlDays: 1", "ttlDays: 1\n      keyAlgorithm: dsa", "keyAlgorithm: unknown key algorithm `dsa`"),
            ("ttlDays: 1", "ttlDays: 1\n      rsaKeySizeBytes: 512", "rsaKeySizeBytes must be 2048, 3072 or 4096"),
            ("kind: RootTrustPolicy", "kind: TrustPolicy", "kind must be RootTrustPolicy"),
            ("apiVersion: admin.gloo.solo.io/v2", "apiVersion: v1", "apiVersion must be"),
        ];
        for (from, to, want) in cases {
            let e = err(&SEED_POLICY.replace(from, to));
            assert!(e.starts_with("policy.yaml: "), "{e}");
            assert!(e.contains(want), "{to}: {e}");
        }
    }

    #[test]
    fn workload_signing_is_checked_field_by_field() {
        let with = |ws: &str| format!("{SEED_POLICY}    workloadSigning:\n{ws}");
        let p = parse(&with("      signerName: meshca.dev/istio\n"), "policy.yaml").unwrap();
        let ws = p.workload_signing.unwrap();
        assert_eq!(ws.mode, WorkloadSigningMode::Csr);
        assert_eq!(ws.rules.trust_domain, "cluster.local");
        assert_eq!(ws.rules.max_ttl, time::Duration::hours(24));
        assert_eq!(ws.rules.requesters, [ISTIOD_REQUESTER]);
        assert!(ws.covers("any") && !ws.rules.allow_dns_sans);
        let p = parse(
            &with(
                "      signerName: example.com/mesh\n      mode: both\n      maxTtlHours: 2\n      trustDomain: prod.example\n      clusters: [east]\n      allowDnsSans: true\n",
            ),
            "policy.yaml",
        )
        .unwrap();
        let ws = p.workload_signing.unwrap();
        assert!(ws.mode.csr() && ws.mode.pod_certificate());
        assert!(ws.covers("east") && !ws.covers("west"));
        assert_eq!(ws.rules.max_ttl, time::Duration::hours(2));
        assert!(ws.rules.allow_dns_sans);
        let p = parse(&with("      signerName: meshca.dev/istio\n      keyAlgorithms: [ecdsa-p256, rsa-3072]\n"), "p")
            .unwrap();
        let keys = p.workload_signing.unwrap().rules.key_types;
        assert_eq!(keys, [meshca::KeyType::EcdsaP256, meshca::KeyType::Rsa { bits: 3072 }]);
        let cases = [
            ("      signerName: istio\n", "workloadSigning.signerName \"istio\" is not a Kubernetes signer name"),
            ("      signerName: kubernetes.io/kube-apiserver-client\n", "kubernetes.io signers are Kubernetes' own"),
            ("      signerName: meshca.dev/istio\n      mode: all\n", "workloadSigning.mode \"all\" is not one of"),
            (
                "      signerName: meshca.dev/istio\n      maxTtlHours: 0\n",
                "workloadSigning.maxTtlHours must be between 1",
            ),
            ("      signerName: meshca.dev/istio\n      clusters: []\n", "workloadSigning.clusters is empty"),
            ("      signerName: meshca.dev/istio\n      clusters: [East_1]\n", "workloadSigning.clusters[0]"),
            ("      signerName: meshca.dev/istio\n      trustDomain: Bad/TD\n", "workloadSigning.trustDomain"),
            ("      signerName: meshca.dev/istio\n      requesters: []\n", "workloadSigning.requesters is empty"),
            ("      signerName: meshca.dev/istio\n      keyAlgorithms: []\n", "workloadSigning.keyAlgorithms is empty"),
            (
                "      signerName: meshca.dev/istio\n      keyAlgorithms: [ed25519]\n",
                "workloadSigning.keyAlgorithms[0]",
            ),
        ];
        for (ws, want) in cases {
            let e = err(&with(ws));
            assert!(e.contains(want), "{ws}: {e}");
        }
    }

    #[test]
    fn passive_cas_and_root_rotation() {
        let text = include_str!("../../../testdata/policies/root-rotation.yaml");
        let p = parse(text, "root-rotation.yaml").unwrap();
        assert_eq!(p.passive, [SecretName { namespace: "gloo-mesh".into(), name: "partner-root".into() }]);
        let auto = p.root_rotation.as_ref().unwrap();
        assert_eq!(auto.new_signer, SecretName { namespace: "gloo-mesh".into(), name: "root-ca-2".into() });
        assert_eq!(auto.dwell, Duration::hours(24));
        // Without dwellHours: istiod's default workload lifetime.
        let p = parse(&text.replace("      dwellHours: 24\n", ""), "p.yaml").unwrap();
        assert_eq!(p.root_rotation.unwrap().dwell, DEFAULT_DWELL);
        let cases = [
            ("dwellHours: 24", "dwellHours: -1", "spec.config.rootRotation.dwellHours must be between 0 and 8760"),
            ("name: root-ca-2", "name: my-root-trust-policy.gloo-mesh", "names the same Secret as mgmtServerCa"),
            // The field is named; the value that failed is not printed (issue 23, class 3).
            (
                "name: partner-root",
                "name: Partner",
                "passiveCertificateAuthorities[0].secretRef.name is not a Kubernetes",
            ),
            ("dwellHours: 24", "dwellHours: 24\n      auto: true", "spec.config.rootRotation.auto: unknown field"),
            ("    - secretRef:\n        name: partner-root\n", "    - {}\n", "missing field `secretRef`"),
        ];
        for (from, to, want) in cases {
            assert!(text.contains(from), "{from}");
            let e = err(&text.replace(from, to));
            assert!(e.contains(want), "{to}: {e}");
        }
        assert!(!err(&text.replace("name: partner-root", "name: Partner")).contains("Partner"));
    }

    fn vault_policy(vault: &str) -> String {
        SEED_POLICY.replace(
            "mgmtServerCa:\n      secretRef:\n        name: my-root-trust-policy.gloo-mesh\n        namespace: gloo-mesh\n",
            &format!("mgmtServerCa:\n      vault:\n{vault}"),
        )
    }

    #[test]
    fn the_vault_signer_is_read_with_its_defaults_and_each_auth() {
        let p = parse(&vault_policy("        address: https://vault.example:8200/\n"), "p.yaml").unwrap();
        let v = p.vault.unwrap();
        assert_eq!(
            (v.address.as_str(), v.mount.as_str(), v.issuer.as_str(), v.signs, &v.auth),
            ("https://vault.example:8200", "pki", "default", Signs::Clusters, &VaultAuth::Given)
        );
        assert_eq!(v.ttl, Duration::days(2), "twice the intermediates' lifetime");
        assert_eq!(p.signer.secret(), ("gloo-mesh", "root-trust-policy.gloo-mesh"));
        let p = parse(
            &vault_policy(
                "        address: http://127.0.0.1:8200\n        mount: pki/int\n        issuer: meshca\n        \
                 signs: managementIntermediate\n        ttlDays: 30\n        caCertSecretRef: {name: vault-ca, key: \
                 ca.crt}\n        auth:\n          appRole: {roleId: r-1, secretIdSecretRef: {name: s, key: id}}\n",
            ),
            "p.yaml",
        )
        .unwrap();
        let v = p.vault.unwrap();
        assert_eq!(
            (v.mount.as_str(), v.issuer.as_str(), v.signs),
            ("pki/int", "meshca", Signs::ManagementIntermediate)
        );
        assert_eq!(v.ca_cert.unwrap().1, "ca.crt");
        assert!(
            matches!(v.auth, VaultAuth::AppRole { ref role_id, ref mount, .. } if role_id == "r-1" && mount == "approle")
        );
        let p = parse(
            &vault_policy("        address: https://v\n        auth:\n          kubernetes: {role: meshca}\n"),
            "p.yaml",
        )
        .unwrap();
        assert!(
            matches!(p.vault.unwrap().auth, VaultAuth::Kubernetes { ref role, ref mount } if role == "meshca" && mount == "kubernetes")
        );
    }

    #[test]
    fn a_vault_signer_that_cannot_work_is_refused_by_field() {
        let cases = [
            ("        address: http://vault.example:8200\n", "address must be an https:// URL"),
            ("        address: https://user:pw@vault\n", "without credentials"),
            ("        address: http://localhost.evil.example\n", "https:// URL"),
            ("        address: https://v\n        mount: ../sys\n", "vault.mount must be a path"),
            ("        address: https://v\n        issuer: a/b\n", "without '/'"),
            ("        address: https://v\n        signs: everything\n", "signs must be clusters or managementIntermediate"),
            ("        address: https://v\n        signs: managementIntermediate\n        ttlDays: 1\n", "must be longer"),
            (
                "        address: https://v\n        auth:\n          kubernetes: {role: a}\n          tokenSecretRef: {name: t, key: k}\n",
                "give one of",
            ),
            ("        address: https://v\n        auth:\n          tokenSecretRef: {name: t, key: 'a b'}\n", "not a Secret key"),
            ("        address: https://v\n        unknown: 1\n", "unknown"),
        ];
        for (vault, expected) in cases {
            let e = err(&vault_policy(vault));
            assert!(e.contains(expected), "{vault}: {e}");
        }
        let with_pkcs11 = vault_policy("        address: https://v\n      pkcs11: {uri: 'pkcs11:token=a;object=b'}\n");
        assert!(err(&with_pkcs11).contains("goes with signs: managementIntermediate"), "{}", err(&with_pkcs11));
        let no_object = vault_policy(
            "        address: https://v\n        signs: managementIntermediate\n      pkcs11: {uri: 'pkcs11:token=a;id=%01'}\n",
        );
        assert!(err(&no_object).contains("needs object=LABEL"), "{}", err(&no_object));
        let ok = vault_policy(
            "        address: https://v\n        signs: managementIntermediate\n      pkcs11: {uri: 'pkcs11:token=a;object=m'}\n",
        );
        assert!(parse(&ok, "p.yaml").unwrap().signer_key.is_some());
        // The value that failed is not echoed.
        assert!(!err(&vault_policy("        address: http://secret-host.example\n")).contains("secret-host"));
    }

    #[test]
    fn structural_mistakes_are_explained() {
        assert!(err("a: [").contains("not valid YAML"));
        let agent = SEED_POLICY.replace("mgmtServerCa:", "agentCa: {}\n    mgmtServerCa:");
        assert!(err(&agent).contains("agentCa is not supported"));
        let none = SEED_POLICY.replace("mgmtServerCa:\n      secretRef:\n        name: my-root-trust-policy.gloo-mesh\n        namespace: gloo-mesh\n", "");
        assert!(err(&none).contains("mgmtServerCa is required"), "{}", err(&none));
        let bad_name = SEED_POLICY.replace("name: my-root-trust-policy.gloo-mesh", "name: ../../etc");
        assert!(err(&bad_name).contains("not a Kubernetes name"));
    }

    #[test]
    fn org_names_are_bounded_as_x509_bounds_them() {
        let long = "o".repeat(65);
        for (from, to) in [
            ("ttlDays: 1", format!("ttlDays: 1\n      orgName: {long}")),
            ("ttlDays: 1", "ttlDays: 1\n      orgName: \"a\\u0007b\"".to_owned()),
        ] {
            let e = parse(&SEED_POLICY.replacen(from, &to, 1), "p.yaml").unwrap_err().to_string();
            assert!(e.contains("spec.config.intermediateCertOptions.orgName"), "{e}");
            assert!(e.contains("64 characters") || e.contains("printable"), "{e}");
        }
        let ok = SEED_POLICY.replacen("ttlDays: 1", &format!("ttlDays: 1\n      orgName: {}", "o".repeat(64)), 1);
        assert!(parse(&ok, "p.yaml").is_ok());
    }
}
