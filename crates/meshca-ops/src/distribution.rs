//! Trust beyond the mesh (`spec.config.trustDistribution`): the fleet's trust set (every root
//! the clusters trust: the current one, the incoming one during a root rotation, the passive
//! ones) published where gateways, VMs, SPIRE federations and applications read it:
//!
//! - a SPIFFE bundle: its version (`spiffe_sequence`, the set, when it was first published) is
//!   kept beside the policy in the Secret `<policy>-trust-bundle` (`state.json`), so the sequence
//!   survives restarts and leader changes, and what a bundle endpoint serves is read from there;
//! - in every workload cluster, the ClusterTrustBundle `meshca.dev:istio:live` (signer
//!   `meshca.dev/istio`) with the trust set, and during a root rotation
//!   `meshca.dev:istio:canary` with the incoming root (KEP-3257's live/canary pattern);
//! - a ConfigMap (`meshca-trust-bundle`, key `root-certs.pem` by default) in each namespace the
//!   selector matches, removed where a namespace stops matching; one meshca does not manage is
//!   never touched.
//!
//! A root rotation's second step (intermediates from the new root) waits for [`lagging`] to be
//! empty: every target holds the incoming root, and the bundle has carried it for
//! [`meshca::HINTS_BEFORE_USE`] refresh hints.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use meshca::{BundleVersion, Certificate, Files, TrustSet};

use crate::context::Options;
use crate::error::Error;
use crate::policy::{
    ConfigMapsSpec, LabelSelectorSpec, Policy, SecretName, SpiffeBundleSpec, TrustDistributionSpec, WorkloadSigning,
};
use crate::store::{SecretRef, Store, TrustObject};
use crate::writer::Writer;

/// The ClusterTrustBundles' signer name.
pub const CTB_SIGNER: &str = "meshca.dev/istio";
/// The ClusterTrustBundle with the trust set.
pub const CTB_LIVE: &str = "meshca.dev:istio:live";
/// The ClusterTrustBundle with the incoming root, during a root rotation.
pub const CTB_CANARY: &str = "meshca.dev:istio:canary";
/// The ConfigMap's name when the policy names none.
pub const DEFAULT_CONFIG_MAP: &str = "meshca-trust-bundle";
/// The ConfigMap's key when the policy names none.
pub const DEFAULT_CONFIG_MAP_KEY: &str = "root-certs.pem";
/// The most namespaces of one cluster meshca writes the ConfigMap into: a selector matching
/// more is refused for that cluster, not written part way.
pub const MAX_NAMESPACES: usize = 5_000;
/// The path of the bundle endpoint's own SPIFFE ID (`https_spiffe`).
pub const ENDPOINT_SVID_PATH: &str = "meshca/bundle-endpoint";

const STATE_KEY: &str = "state.json";

/// `spec.config.trustDistribution`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustDistribution {
    /// The trust domain of the SPIFFE bundle.
    pub trust_domain: String,
    /// The SPIFFE bundle endpoint, when one is asked for.
    pub spiffe_bundle: Option<SpiffeEndpoint>,
    /// Whether ClusterTrustBundles are written.
    pub cluster_trust_bundles: bool,
    /// The ConfigMaps, when asked for.
    pub config_maps: Option<ConfigMapTarget>,
}

impl TrustDistribution {
    /// The refresh hint of the SPIFFE bundle (the default without an endpoint).
    pub fn refresh_hint(&self) -> Duration {
        self.spiffe_bundle.as_ref().map_or(Duration::seconds(meshca::DEFAULT_REFRESH_HINT_SECONDS), |s| s.refresh_hint)
    }
}

/// `trustDistribution.spiffeBundle`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpiffeEndpoint {
    /// `spiffe_refresh_hint`.
    pub refresh_hint: Duration,
    /// How the endpoint authenticates itself.
    pub profile: EndpointProfile,
}

/// The SPIFFE bundle endpoint profiles (SPIFFE Federation, section 5).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointProfile {
    /// `https_spiffe`: an X509-SVID meshca issues for `spiffe://<td>/meshca/bundle-endpoint`.
    HttpsSpiffe,
    /// `https_web`: a serving certificate from a Secret (`tls.crt`, `tls.key`).
    HttpsWeb {
        /// That Secret.
        serving: SecretName,
    },
}

/// `trustDistribution.configMaps`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigMapTarget {
    /// The ConfigMap's name.
    pub name: String,
    /// The key the roots are under.
    pub key: String,
    /// Which namespaces get it.
    pub selector: LabelSelector,
}

/// A Kubernetes label selector, checked: `matchLabels` and `matchExpressions`, ANDed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    labels: BTreeMap<String, String>,
    expressions: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
    values: BTreeSet<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// The selector that matches every namespace (`{}`).
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// Whether `labels` match, as the API server decides it.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    Operator::In => value.is_some_and(|v| r.values.contains(v)),
                    Operator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// The selector in the API server's `labelSelector` query syntax
    /// (`k=v,k in (a,b),!k`).
    pub fn to_query(&self) -> String {
        let mut parts: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for r in &self.expressions {
            let values = || r.values.iter().cloned().collect::<Vec<_>>().join(",");
            parts.push(match r.operator {
                Operator::In => format!("{} in ({})", r.key, values()),
                Operator::NotIn => format!("{} notin ({})", r.key, values()),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        parts.join(",")
    }

    fn parse(spec: LabelSelectorSpec, base: &str, bad: &dyn Fn(String) -> Error) -> Result<Self, Error> {
        let mut selector = LabelSelector::default();
        for (k, v) in spec.match_labels.unwrap_or_default() {
            label_key(&k).map_err(|p| bad(format!("{base}.matchLabels: key {:?} {p}", meshca::printable(&k, 80))))?;
            label_value(&v).map_err(|p| bad(format!("{base}.matchLabels.{k}: value {p}")))?;
            selector.labels.insert(k, v);
        }
        for (i, e) in spec.match_expressions.unwrap_or_default().into_iter().enumerate() {
            let at = format!("{base}.matchExpressions[{i}]");
            label_key(&e.key).map_err(|p| bad(format!("{at}.key {p}")))?;
            let operator = match e.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(bad(format!(
                        "{at}.operator {:?} is not one of In, NotIn, Exists, DoesNotExist",
                        meshca::printable(other, 40)
                    )))
                }
            };
            let values = e.values.unwrap_or_default();
            match operator {
                Operator::In | Operator::NotIn if values.is_empty() => {
                    return Err(bad(format!("{at}.values must name at least one value for {}", e.operator)))
                }
                Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                    return Err(bad(format!("{at}.values must be empty for {}", e.operator)))
                }
                _ => {}
            }
            for (j, v) in values.iter().enumerate() {
                label_value(v).map_err(|p| bad(format!("{at}.values[{j}] {p}")))?;
            }
            selector.expressions.push(Requirement { key: e.key, operator, values: values.into_iter().collect() });
        }
        Ok(selector)
    }
}

/// A label name part or value: at most 63 characters, alphanumerics with `-`, `_`, `.` inside.
fn label_name(s: &str) -> bool {
    s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn label_key(k: &str) -> Result<(), &'static str> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if !label_name(name) {
        return Err(
            "is not a label key: a name of at most 63 alphanumerics, '-', '_', '.' (after an optional prefix/)",
        );
    }
    if prefix.is_some_and(|p| p.is_empty() || crate::policy::check_name("prefix", p).is_err()) {
        return Err("has a prefix that is not a DNS subdomain");
    }
    Ok(())
}

fn label_value(v: &str) -> Result<(), &'static str> {
    if v.is_empty() || label_name(v) {
        return Ok(());
    }
    Err("is not a label value: at most 63 alphanumerics, '-', '_', '.', starting and ending alphanumeric")
}

/// Checks `spec.config.trustDistribution` (`namespace`: the policy's; `signing`: its
/// workloadSigning, whose trust domain is the default).
pub(crate) fn check_spec(
    spec: TrustDistributionSpec,
    namespace: &str,
    signing: Option<&WorkloadSigning>,
    bad: &dyn Fn(String) -> Error,
) -> Result<TrustDistribution, Error> {
    let base = "spec.config.trustDistribution";
    let trust_domain = spec
        .trust_domain
        .or_else(|| signing.map(|s| s.rules.trust_domain.clone()))
        .unwrap_or_else(|| "cluster.local".into());
    meshca::validate_trust_domain(&trust_domain).map_err(|e| bad(format!("{base}.trustDomain: {e}")))?;
    let spiffe_bundle = spec.spiffe_bundle.map(|s| endpoint(s, namespace, bad)).transpose()?;
    let config_maps = match spec.config_maps {
        None => None,
        Some(ConfigMapsSpec { name, key, namespace_selector }) => {
            let at = format!("{base}.configMaps");
            let name = name.unwrap_or_else(|| DEFAULT_CONFIG_MAP.into());
            crate::policy::check_name(&format!("{at}.name"), &name).map_err(|e| bad(e.to_string()))?;
            let key = key.unwrap_or_else(|| DEFAULT_CONFIG_MAP_KEY.into());
            let key_ok = !key.is_empty()
                && key.len() <= 253
                && key != "."
                && key != ".."
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !key_ok {
                return Err(bad(format!(
                    "{at}.key {:?} is not a ConfigMap key (alphanumerics, '-', '_', '.')",
                    meshca::printable(&key, 80)
                )));
            }
            let selector = LabelSelector::parse(namespace_selector, &format!("{at}.namespaceSelector"), bad)?;
            Some(ConfigMapTarget { name, key, selector })
        }
    };
    Ok(TrustDistribution {
        trust_domain,
        spiffe_bundle,
        cluster_trust_bundles: spec.cluster_trust_bundles.unwrap_or(true),
        config_maps,
    })
}

fn endpoint(s: SpiffeBundleSpec, namespace: &str, bad: &dyn Fn(String) -> Error) -> Result<SpiffeEndpoint, Error> {
    let base = "spec.config.trustDistribution.spiffeBundle";
    let refresh_hint = match s.refresh_hint_seconds {
        None => Duration::seconds(meshca::DEFAULT_REFRESH_HINT_SECONDS),
        Some(secs) => {
            meshca::refresh_hint(&format!("{base}.refreshHintSeconds"), secs).map_err(|e| bad(e.to_string()))?
        }
    };
    let profile = match (s.profile.as_deref(), s.serving_cert_secret_ref) {
        (None | Some("https_spiffe"), None) => EndpointProfile::HttpsSpiffe,
        (None | Some("https_spiffe"), Some(_)) => {
            return Err(bad(format!(
                "{base}.servingCertSecretRef goes with profile https_web; https_spiffe serves an SVID meshca issues"
            )))
        }
        (Some("https_web"), Some(r)) => {
            let ns = r.namespace.unwrap_or_else(|| namespace.to_owned());
            for (field, v) in [("name", &r.name), ("namespace", &ns)] {
                crate::policy::check_name(&format!("{base}.servingCertSecretRef.{field}"), v)
                    .map_err(|e| bad(e.to_string()))?;
            }
            EndpointProfile::HttpsWeb { serving: SecretName { namespace: ns, name: r.name } }
        }
        (Some("https_web"), None) => {
            return Err(bad(format!(
                "{base}.profile https_web needs servingCertSecretRef (a Secret with tls.crt and tls.key)"
            )))
        }
        (Some(other), _) => {
            return Err(bad(format!(
                "{base}.profile {:?} is not one of https_spiffe, https_web",
                meshca::printable(other, 40)
            )))
        }
    };
    Ok(SpiffeEndpoint { refresh_hint, profile })
}

/// Where the published version is kept: `<policy>-trust-bundle` beside the policy.
pub fn state_secret(policy: &Policy, mgmt: &str) -> SecretRef {
    SecretRef::new(mgmt, &policy.namespace, &format!("{}-trust-bundle", policy.name))
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Persisted {
    sequence: u64,
    published_at: i64,
    roots_pem: String,
}

/// The trust set as published, and its version.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Published {
    /// The version (`spiffe_sequence`, when first published).
    pub version: BundleVersion,
    /// The roots.
    pub set: TrustSet,
}

impl Published {
    /// The SPIFFE bundle document (a JWK Set) for `policy`.
    pub fn spiffe_bundle(&self, policy: &Policy) -> String {
        let hint = policy
            .trust_distribution
            .as_ref()
            .map_or(Duration::seconds(meshca::DEFAULT_REFRESH_HINT_SECONDS), TrustDistribution::refresh_hint);
        self.set.spiffe_bundle(self.version.sequence, hint)
    }
}

/// The version published last, if any.
pub fn load(store: &dyn Store, policy: &Policy, mgmt: &str) -> Result<Option<Published>, Error> {
    let secret = state_secret(policy, mgmt);
    let Some(files) = store.read(&secret)? else { return Ok(None) };
    let bad = |detail: String| Error::Store {
        location: store.location(&secret),
        detail: format!(
            "the published trust set cannot be read ({detail}); delete this Secret and the next run \
                         publishes the set again, with the sequence starting over"
        ),
    };
    let raw = files.get(STATE_KEY).ok_or_else(|| bad(format!("no {STATE_KEY}")))?;
    let p: Persisted = serde_json::from_slice(raw).map_err(|e| bad(format!("{STATE_KEY} is not valid: {e}")))?;
    let roots = meshca::parse_certificates(p.roots_pem.as_bytes(), STATE_KEY).map_err(|e| bad(e.to_string()))?;
    let set = TrustSet::new(roots).map_err(|e| bad(e.to_string()))?;
    let published_at =
        OffsetDateTime::from_unix_timestamp(p.published_at).map_err(|e| bad(format!("publishedAt: {e}")))?;
    let version = BundleVersion { sequence: p.sequence, fingerprints: set.fingerprints(), published_at };
    Ok(Some(Published { version, set }))
}

/// What a run did to one trust object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case", rename_all_fields = "camelCase")]
#[non_exhaustive]
pub enum TargetOutcome {
    /// It holds the trust set already.
    Current,
    /// Written now (or, on a dry run, would be).
    Written,
    /// Removed now (its namespace no longer matches, or the rotation ended).
    Removed,
    /// Not written: why.
    Failed {
        /// Why.
        error: String,
    },
}

/// One trust object's outcome.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Target {
    /// The cluster.
    pub cluster: String,
    /// The object, e.g. `ConfigMap app/meshca-trust-bundle`.
    pub object: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: TargetOutcome,
}

/// What a run published.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Distribution {
    /// `spiffe_sequence` now.
    pub sequence: u64,
    /// Whether the set changed in this run.
    pub changed: bool,
    /// The trust objects written, removed or failed (those already current are not listed).
    pub targets: Vec<Target>,
    /// Clusters without the ClusterTrustBundle API, and other notes.
    pub notes: Vec<String>,
}

/// Publishes `live` (and, during a root rotation, the incoming root as the canary) for the
/// clusters of `opts`: the version beside the policy, then each cluster's trust objects. A
/// failed object is reported in its [`Target`] and never stops the others; `None` when the
/// policy distributes nothing.
pub fn publish(
    store: &dyn Store,
    policy: &Policy,
    opts: &Options,
    live: &TrustSet,
    canary: Option<&Certificate>,
) -> Result<Option<Distribution>, Error> {
    let Some(td) = policy.trust_distribution.as_ref() else { return Ok(None) };
    let mgmt = &opts.mgmt_cluster;
    let previous = load(store, policy, mgmt)?;
    let (version, changed) = BundleVersion::next(previous.as_ref().map(|p| &p.version), live, opts.now);
    if changed {
        let p = Persisted {
            sequence: version.sequence,
            published_at: version.published_at.unix_timestamp(),
            roots_pem: live.pem(),
        };
        let mut files = Files::new();
        files.insert(STATE_KEY, serde_json::to_vec_pretty(&p).unwrap_or_default());
        Writer::new(store, policy, opts.policy_generation, opts.now, opts.dry_run)
            .write_state(&state_secret(policy, mgmt), &files)?;
    }
    let live_pem = live.pem();
    let canary_pem = canary.map(Certificate::to_pem);
    let mut out = Distribution { sequence: version.sequence, changed, targets: Vec::new(), notes: Vec::new() };
    for cluster in &opts.clusters {
        let mut record = |object: &TrustObject, result: Result<Option<TargetOutcome>, Error>| {
            let outcome = match result {
                Ok(None) => return,
                Ok(Some(o)) => o,
                Err(e) => TargetOutcome::Failed { error: e.to_string() },
            };
            out.targets.push(Target { cluster: cluster.clone(), object: object.to_string(), outcome });
        };
        if td.cluster_trust_bundles {
            match store.has_trust_bundles(cluster) {
                Ok(false) => out.notes.push(format!(
                    "{cluster} serves no ClusterTrustBundles (certificates.k8s.io v1beta1 from Kubernetes 1.33, or v1): \
                     its trust reaches it through the other targets only"
                )),
                Err(e) => record(&ctb(CTB_LIVE), Err(e)),
                Ok(true) => {
                    let live_obj = ctb(CTB_LIVE);
                    record(&live_obj, put(store, cluster, &live_obj, "", &live_pem, opts.dry_run));
                    let canary_obj = ctb(CTB_CANARY);
                    let result = match &canary_pem {
                        Some(pem) => put(store, cluster, &canary_obj, "", pem, opts.dry_run),
                        None => remove(store, cluster, &canary_obj, opts.dry_run),
                    };
                    record(&canary_obj, result);
                }
            }
        }
        if let Some(cm) = &td.config_maps {
            let matching = match store.namespaces(cluster, &cm.selector, MAX_NAMESPACES) {
                Ok(m) => m,
                Err(e) => {
                    let what = TrustObject::ConfigMap { namespace: "*".into(), name: cm.name.clone() };
                    record(&what, Err(e));
                    continue;
                }
            };
            for ns in &matching {
                let object = TrustObject::ConfigMap { namespace: ns.clone(), name: cm.name.clone() };
                record(&object, put(store, cluster, &object, &cm.key, &live_pem, opts.dry_run));
            }
            match store.managed_config_maps(cluster, &cm.name) {
                Ok(held) => {
                    for ns in held.into_iter().filter(|ns| !matching.contains(ns)) {
                        let object = TrustObject::ConfigMap { namespace: ns, name: cm.name.clone() };
                        record(&object, remove(store, cluster, &object, opts.dry_run));
                    }
                }
                Err(e) => {
                    let what = TrustObject::ConfigMap { namespace: "*".into(), name: cm.name.clone() };
                    record(&what, Err(e));
                }
            }
        }
    }
    Ok(Some(out))
}

fn ctb(name: &str) -> TrustObject {
    TrustObject::ClusterTrustBundle { name: name.to_owned() }
}

/// Writes `pem` to `object` unless it holds it already.
fn put(
    store: &dyn Store,
    cluster: &str,
    object: &TrustObject,
    key: &str,
    pem: &str,
    dry_run: bool,
) -> Result<Option<TargetOutcome>, Error> {
    match store.read_trust(cluster, object, key)? {
        Some(h) if h.managed && h.pem == pem.as_bytes() => return Ok(None),
        Some(h) if !h.managed => {
            return Err(Error::NotManaged { location: format!("{cluster}: {object}") });
        }
        _ => {}
    }
    if !dry_run {
        store.write_trust(cluster, object, key, pem, CTB_SIGNER)?;
    }
    Ok(Some(TargetOutcome::Written))
}

fn remove(
    store: &dyn Store,
    cluster: &str,
    object: &TrustObject,
    dry_run: bool,
) -> Result<Option<TargetOutcome>, Error> {
    match store.read_trust(cluster, object, "")? {
        Some(h) if h.managed => {
            if !dry_run {
                store.delete_trust(cluster, object)?;
            }
            Ok(Some(TargetOutcome::Removed))
        }
        _ => Ok(None),
    }
}

/// What still lacks `root` among the policy's targets for `clusters`: each trust object that
/// does not hold it, and the SPIFFE bundle until it has carried it for
/// [`meshca::HINTS_BEFORE_USE`] refresh hints (with the time it will have). Empty when the
/// policy distributes nothing. A cluster without the ClusterTrustBundle API lacks none.
pub fn lagging(
    store: &dyn Store,
    policy: &Policy,
    opts: &Options,
    clusters: &BTreeSet<String>,
    root: &Certificate,
) -> Result<Vec<String>, Error> {
    let Some(td) = policy.trust_distribution.as_ref() else { return Ok(Vec::new()) };
    let holds =
        |pem: &[u8]| meshca::parse_certificates(pem, "trust bundle").is_ok_and(|certs| certs.iter().any(|c| c == root));
    let mut out = Vec::new();
    for cluster in clusters {
        if td.cluster_trust_bundles && store.has_trust_bundles(cluster).unwrap_or(true) {
            let object = ctb(CTB_LIVE);
            let held = store.read_trust(cluster, &object, "").ok().flatten();
            if !held.is_some_and(|h| holds(&h.pem)) {
                out.push(format!("{cluster}: {object}"));
            }
        }
        if let Some(cm) = &td.config_maps {
            match store.namespaces(cluster, &cm.selector, MAX_NAMESPACES) {
                Ok(namespaces) => {
                    for ns in namespaces {
                        let object = TrustObject::ConfigMap { namespace: ns, name: cm.name.clone() };
                        let held = store.read_trust(cluster, &object, &cm.key).ok().flatten();
                        if !held.is_some_and(|h| holds(&h.pem)) {
                            out.push(format!("{cluster}: {object}"));
                        }
                    }
                }
                Err(_) => out.push(format!("{cluster}: ConfigMaps {} (the namespaces cannot be listed)", cm.name)),
            }
        }
    }
    if td.spiffe_bundle.is_some() {
        match load(store, policy, &opts.mgmt_cluster)? {
            Some(p) if p.version.holds(root) => {
                let from = p.version.usable_from(td.refresh_hint());
                if opts.now < from {
                    out.push(format!("the SPIFFE bundle (served with the new root until {from})"));
                }
            }
            _ => out.push("the SPIFFE bundle (does not carry the new root yet)".into()),
        }
    }
    Ok(out)
}

/// The certificate and key a SPIFFE bundle endpoint serves with.
#[derive(Clone)]
#[non_exhaustive]
pub struct ServingIdentity {
    /// The certificate chain, leaf first (DER).
    pub chain: Vec<Vec<u8>>,
    /// The private key (PKCS#8 DER).
    pub key: zeroize::Zeroizing<Vec<u8>>,
    /// When meshca issues the next one (`https_spiffe`: half-way through its life); `None` for a
    /// serving certificate from a Secret (read again on every pass).
    pub renew_at: Option<OffsetDateTime>,
    /// The SPIFFE ID it proves (`https_spiffe`).
    pub spiffe_id: Option<String>,
}

impl std::fmt::Debug for ServingIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingIdentity")
            .field("chain", &self.chain.len())
            .field("renew_at", &self.renew_at)
            .field("spiffe_id", &self.spiffe_id)
            .finish_non_exhaustive()
    }
}

/// How long the bundle endpoint's own X509-SVID lives (`https_spiffe`).
pub const ENDPOINT_SVID_TTL: Duration = Duration::hours(24);

/// The identity the policy's bundle endpoint serves with: for `https_spiffe`, `current` while it
/// is not due, else a new X509-SVID for `spiffe://<trust domain>/meshca/bundle-endpoint` issued
/// by the policy's signer (whatever holds its key); for `https_web`, the serving Secret's
/// `tls.crt` and `tls.key`. `None` when the policy has no bundle endpoint.
pub fn serving_identity(
    store: &dyn Store,
    policy: &Policy,
    opts: &Options,
    current: Option<&ServingIdentity>,
    rng: &mut dyn meshca::Entropy,
) -> Result<Option<ServingIdentity>, Error> {
    let Some(td) = policy.trust_distribution.as_ref() else { return Ok(None) };
    let Some(endpoint) = td.spiffe_bundle.as_ref() else { return Ok(None) };
    match &endpoint.profile {
        EndpointProfile::HttpsSpiffe => {
            if let Some(c) = current.filter(|c| c.renew_at.is_some_and(|r| opts.now < r) && c.spiffe_id.is_some()) {
                return Ok(Some(c.clone()));
            }
            let loaded = crate::signer::load(store, policy, opts, rng)?;
            let svid = loaded
                .ca
                .issue_service_svid(&td.trust_domain, ENDPOINT_SVID_PATH, ENDPOINT_SVID_TTL, rng, opts.now)
                .map_err(Error::core("the SPIFFE bundle endpoint's X509-SVID"))?
                .value;
            let (nb, na) = (svid.cert().not_before(), svid.cert().not_after());
            // The leaf and its intermediates; not the root, which the client holds.
            let mut chain = svid.chain();
            if chain.len() > 1 {
                chain.pop();
            }
            Ok(Some(ServingIdentity {
                chain: chain.iter().map(|c| c.der().to_vec()).collect(),
                key: zeroize::Zeroizing::new(svid.key().pkcs8_der().to_vec()),
                renew_at: Some(nb + (na - nb) / 2),
                spiffe_id: svid.cert().uri_sans().into_iter().next(),
            }))
        }
        EndpointProfile::HttpsWeb { serving } => {
            let secret = SecretRef::new(&opts.mgmt_cluster, &serving.namespace, &serving.name);
            let location = store.location(&secret);
            let bad = |problem: String| Error::PolicySecret {
                field: "spec.config.trustDistribution.spiffeBundle.servingCertSecretRef".into(),
                secret: secret.to_string(),
                problem,
                fix: "give it tls.crt (the serving certificate, then its chain) and tls.key (its key), as a \
                      kubernetes.io/tls Secret holds them",
            };
            let files = store.read(&secret)?.ok_or_else(|| bad(format!("not found at {location}")))?;
            let crt = files.get("tls.crt").ok_or_else(|| bad("it has no tls.crt".into()))?;
            let key = files.get("tls.key").ok_or_else(|| bad("it has no tls.key".into()))?;
            let chain = meshca::parse_certificates(crt, "tls.crt").map_err(|e| bad(e.to_string()))?;
            let key = meshca::PrivateKey::from_pem(key, "tls.key").map_err(|e| bad(e.to_string()))?;
            let leaf = chain.first().ok_or_else(|| bad("tls.crt holds no certificate".into()))?;
            if leaf.public_key_raw() != key.public_key_raw() {
                return Err(bad("tls.key is not the key of the first certificate in tls.crt".into()));
            }
            if opts.now > leaf.not_after() {
                return Err(bad(format!("its certificate expired at {}", meshca::format_time(leaf.not_after()))));
            }
            Ok(Some(ServingIdentity {
                chain: chain.iter().map(|c| c.der().to_vec()).collect(),
                key: zeroize::Zeroizing::new(key.pkcs8_der().to_vec()),
                renew_at: None,
                spiffe_id: None,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{parse, SEED_POLICY};

    fn with(td: &str) -> Result<TrustDistribution, String> {
        parse(&format!("{SEED_POLICY}    trustDistribution:\n{td}"), "policy.yaml")
            .map(|p| p.trust_distribution.expect("parsed"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_policy_is_checked_field_by_field() {
        let td = with("      clusterTrustBundles: true\n").unwrap();
        assert_eq!(td.trust_domain, "cluster.local");
        assert!(td.cluster_trust_bundles && td.spiffe_bundle.is_none() && td.config_maps.is_none());
        assert_eq!(td.refresh_hint(), Duration::minutes(5));
        let td = with(
            "      trustDomain: prod.example\n      spiffeBundle: {refreshHintSeconds: 60, profile: https_web, \
             servingCertSecretRef: {name: web-tls}}\n      configMaps:\n        namespaceSelector:\n          \
             matchExpressions: [{key: team, operator: In, values: [a, b]}, {key: legacy, operator: DoesNotExist}]\n",
        )
        .unwrap();
        assert_eq!(td.trust_domain, "prod.example");
        let ep = td.spiffe_bundle.unwrap();
        assert_eq!(ep.refresh_hint, Duration::minutes(1));
        assert_eq!(
            ep.profile,
            EndpointProfile::HttpsWeb { serving: SecretName { namespace: "gloo-mesh".into(), name: "web-tls".into() } }
        );
        let cm = td.config_maps.unwrap();
        assert_eq!((cm.name.as_str(), cm.key.as_str()), (DEFAULT_CONFIG_MAP, DEFAULT_CONFIG_MAP_KEY));
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        assert!(cm.selector.matches(&labels(&[("team", "a")])));
        assert!(!cm.selector.matches(&labels(&[("team", "c")])));
        assert!(!cm.selector.matches(&labels(&[("team", "a"), ("legacy", "")])));
        assert_eq!(cm.selector.to_query(), "team in (a,b),!legacy");
        let cases = [
            ("      spiffeBundle: {refreshHintSeconds: 1}\n", "spiffeBundle.refreshHintSeconds: must be between 10"),
            ("      spiffeBundle: {profile: https}\n", "spiffeBundle.profile \"https\" is not one of"),
            ("      spiffeBundle: {profile: https_web}\n", "https_web needs servingCertSecretRef"),
            ("      configMaps: {}\n", "namespaceSelector"),
            ("      configMaps: {key: a/b, namespaceSelector: {}}\n", "configMaps.key \"a/b\" is not a ConfigMap key"),
            ("      configMaps: {name: Bad_Name, namespaceSelector: {}}\n", "configMaps.name"),
            (
                "      configMaps: {namespaceSelector: {matchExpressions: [{key: a, operator: Has}]}}\n",
                "matchExpressions[0].operator \"Has\" is not one of",
            ),
            (
                "      configMaps: {namespaceSelector: {matchExpressions: [{key: a, operator: In}]}}\n",
                "matchExpressions[0].values must name at least one value",
            ),
            (
                "      configMaps: {namespaceSelector: {matchLabels: {\"-x\": z}}}\n",
                "matchLabels: key \"-x\" is not a label key",
            ),
            ("      trustDomain: Bad!\n", "trustDistribution.trustDomain"),
        ];
        for (td, needle) in cases {
            let err = with(td).unwrap_err();
            assert!(err.contains(needle), "{td}: {err}");
        }
    }
}
