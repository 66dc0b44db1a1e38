//! The reconcile loop: for each cluster, ask the core's rotation plan, then issue, rotate or keep,
//! against any [`Store`]. It makes no PKI decision of its own.

use serde::Serialize;
use time::OffsetDateTime;

use meshca::{plan, Cacerts, Current, Entropy, IssueReason, Layout, Plan, SigningCa};

use crate::error::Error;
use crate::policy::{Policy, SignerSource};
use crate::store::{SecretRef, Store, WriteMeta};

/// How often a cluster is re-read and re-planned when someone else wrote its Secret between
/// our read and our write.
const CONFLICT_RETRIES: usize = 3;

/// How a run behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// The time to plan and issue at (`--at`, or the clock).
    pub now: OffsetDateTime,
    /// Plan only; write nothing.
    pub dry_run: bool,
    /// The cluster holding the signing CA Secret.
    pub mgmt_cluster: String,
    /// Workload clusters.
    pub clusters: Vec<String>,
    /// The policy object's generation (Kubernetes), recorded on what is written.
    pub policy_generation: Option<i64>,
}

impl Options {
    /// Options for `clusters` at `now`, management cluster `mgmt`.
    pub fn new(now: OffsetDateTime, clusters: Vec<String>) -> Self {
        Options { now, dry_run: false, mgmt_cluster: "mgmt".into(), clusters, policy_generation: None }
    }
}

/// What happened to one cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Action {
    /// The bundle is valid and outside its grace period.
    Kept,
    /// The cluster had no bundle; one was written.
    Issued,
    /// The bundle was replaced.
    Rotated,
    /// Dry run: would issue.
    WouldIssue,
    /// Dry run: would rotate.
    WouldRotate,
    /// Something failed; the cluster keeps what it had.
    Failed,
}

impl Action {
    /// The word shown in the table.
    pub fn word(self) -> &'static str {
        match self {
            Action::Kept => "kept",
            Action::Issued => "issued",
            Action::Rotated => "rotated",
            Action::WouldIssue => "would issue",
            Action::WouldRotate => "would rotate",
            Action::Failed => "FAILED",
        }
    }
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
}

impl Report {
    /// Whether every cluster ended valid and all trust each other.
    pub fn ok(&self) -> bool {
        self.trust.ok && self.clusters.iter().all(|c| c.action != Action::Failed)
    }

    /// Counts per action, in table order.
    pub fn counts(&self) -> Vec<(Action, usize)> {
        [Action::Issued, Action::Rotated, Action::Kept, Action::WouldIssue, Action::WouldRotate, Action::Failed]
            .into_iter()
            .map(|a| (a, self.clusters.iter().filter(|c| c.action == a).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Loads (or, for `generated`, creates) the signing CA. Errors here stop the run: without a
/// signer nothing can be decided.
pub fn load_signer(
    store: &dyn Store,
    policy: &Policy,
    opts: &Options,
    rng: &mut dyn Entropy,
) -> Result<(SigningCa, SignerInfo), Error> {
    let (namespace, name) = policy.signer.secret();
    let secret = SecretRef::new(&opts.mgmt_cluster, namespace, name);
    let location = store.location(&secret);
    let existing = store.read(&secret)?;
    let (signer, created) = match (existing, &policy.signer) {
        (Some(files), _) => {
            let signer =
                SigningCa::from_files(&files, opts.now).map_err(Error::core(format!("signing CA {location}")))?;
            (signer, false)
        }
        (None, SignerSource::Generated { root, .. }) => {
            let signer = SigningCa::generate_root(root, rng, opts.now).map_err(Error::core("generating the root"))?;
            if !opts.dry_run {
                store.write(&secret, &signer.bundle().to_files(Layout::Istio), &managed_meta(policy, opts, None))?;
            }
            (signer, true)
        }
        (None, SignerSource::SecretRef { .. }) => {
            return Err(Error::Input(format!(
                "signing CA Secret {secret} not found at {location}; create it with `meshca root-ca --out {location}` \
                 or put your CA's ca-cert.pem, ca-key.pem, cert-chain.pem and root-cert.pem there"
            )))
        }
    };
    let b = signer.bundle();
    let info = SignerInfo {
        location,
        subject: b.ca_cert().subject(),
        root: b.root().subject(),
        root_fingerprint: b.root_fingerprint(),
        created,
    };
    Ok((signer, info))
}

/// Runs the loop. `progress(done, total)` is called after each cluster.
pub fn reconcile(
    store: &dyn Store,
    policy: &Policy,
    opts: &Options,
    rng: &mut dyn Entropy,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report, Error> {
    let (signer, signer_info) = load_signer(store, policy, opts, rng)?;
    let mut results = Vec::with_capacity(opts.clusters.len());
    let mut bundles: Vec<(String, Cacerts)> = Vec::new();
    for (i, cluster) in opts.clusters.iter().enumerate() {
        let (result, bundle) = reconcile_one(store, policy, &signer, cluster, opts, rng);
        if let Some(b) = bundle {
            bundles.push((cluster.clone(), b));
        }
        results.push(result);
        progress(i + 1, opts.clusters.len());
    }
    let refs: Vec<(&str, &Cacerts)> = bundles.iter().map(|(n, b)| (n.as_str(), b)).collect();
    let checked = if refs.is_empty() {
        Err("no cluster has a valid bundle".to_owned())
    } else {
        meshca::check_mutual_trust(&refs).map(|s| s.fingerprint).map_err(|e| e.to_string())
    };
    let trust = match checked {
        Ok(fp) => Trust { ok: true, root_fingerprint: Some(fp), error: None },
        Err(e) => Trust { ok: false, root_fingerprint: None, error: Some(e) },
    };
    let next_check = results.iter().filter_map(|r| r.next_check).min();
    Ok(Report {
        policy: policy.name.clone(),
        at: opts.now,
        dry_run: opts.dry_run,
        signer: signer_info,
        clusters: results,
        trust,
        next_check,
        notes: policy.notes.clone(),
    })
}

fn reconcile_one(
    store: &dyn Store,
    policy: &Policy,
    signer: &SigningCa,
    cluster: &str,
    opts: &Options,
    rng: &mut dyn Entropy,
) -> (ClusterResult, Option<Cacerts>) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match reconcile_attempt(store, policy, signer, cluster, opts, rng) {
            Attempt::Conflict(_) if attempt < CONFLICT_RETRIES => continue,
            Attempt::Conflict(mut result) => {
                result.reason =
                    format!("{} (gave up after {attempt} conflicting writes by someone else)", result.reason);
                return (result, None);
            }
            Attempt::Done(result, bundle) => return (result, bundle.map(|b| *b)),
        }
    }
}

enum Attempt {
    Done(ClusterResult, Option<Box<Cacerts>>),
    /// Someone else wrote the Secret between our read and our write: read and plan again.
    Conflict(ClusterResult),
}

fn reconcile_attempt(
    store: &dyn Store,
    policy: &Policy,
    signer: &SigningCa,
    cluster: &str,
    opts: &Options,
    rng: &mut dyn Entropy,
) -> Attempt {
    let secret = SecretRef::cacerts(cluster);
    let location = store.location(&secret);
    let mut result = ClusterResult {
        cluster: cluster.to_owned(),
        action: Action::Failed,
        reason: String::new(),
        location,
        not_after: None,
        next_check: None,
        warnings: Vec::new(),
        rotated_at: None,
        restarted: None,
    };
    let now = opts.now;
    let existing = match store.read(&secret) {
        Ok(f) => f,
        Err(e) => {
            result.reason = e.to_string();
            return Attempt::Done(result, None);
        }
    };
    let parsed = existing.as_ref().map(|f| Cacerts::from_files(f, now));
    let current = match &parsed {
        None => Current::Missing,
        Some(Ok(b)) => Current::Valid(b),
        Some(Err(e)) => Current::Invalid(e),
    };
    match plan(&policy.rotation, signer, cluster, current, now) {
        Plan::Keep { recheck_at } => {
            let Some(Ok(bundle)) = parsed else { unreachable!("the plan keeps only a valid bundle") };
            result.action = Action::Kept;
            result.reason = "valid, outside the grace period".into();
            result.not_after = Some(bundle.not_after());
            result.next_check = Some(recheck_at);
            result.warnings = bundle.warnings().iter().map(ToString::to_string).collect();
            Attempt::Done(result, Some(Box::new(bundle)))
        }
        Plan::Issue { reason } => {
            let existed = !matches!(reason, IssueReason::Missing);
            result.reason = reason.to_string();
            match issue_and_write(store, policy, signer, cluster, &secret, opts, rng) {
                Ok(bundle) => {
                    result.action = match (existed, opts.dry_run) {
                        (false, false) => Action::Issued,
                        (true, false) => Action::Rotated,
                        (false, true) => Action::WouldIssue,
                        (true, true) => Action::WouldRotate,
                    };
                    result.not_after = Some(bundle.not_after());
                    result.next_check =
                        Some(policy.rotation.rotate_at(bundle.ca_cert().not_before(), bundle.not_after()));
                    result.warnings = bundle.warnings().iter().map(ToString::to_string).collect();
                    if !opts.dry_run {
                        result.rotated_at = Some(now);
                        if policy.auto_restart_pods {
                            match store.restart_istiod(cluster) {
                                Ok(what) => result.restarted = what,
                                Err(e) => result.warnings.push(format!("autoRestartPods: {e}")),
                            }
                        }
                    }
                    Attempt::Done(result, Some(Box::new(bundle)))
                }
                Err(Error::Conflict { .. }) => {
                    result.reason = format!("{}; the Secret changed while meshca worked", result.reason);
                    Attempt::Conflict(result)
                }
                Err(e) => {
                    result.reason = format!("{}; {e}", result.reason);
                    // The cluster keeps what it had; count it only if it is still valid.
                    let kept = parsed.and_then(Result::ok);
                    Attempt::Done(result, kept.map(Box::new))
                }
            }
        }
        _ => {
            result.reason = "the core returned a plan this version of meshca does not know".into();
            Attempt::Done(result, None)
        }
    }
}

/// The labels and annotations meshca puts on what it writes.
fn managed_meta(policy: &Policy, opts: &Options, bundle: Option<&Cacerts>) -> WriteMeta {
    let mut meta = WriteMeta::default();
    meta.labels.insert(crate::manifest::MANAGED_BY.0.into(), crate::manifest::MANAGED_BY.1.into());
    meta.annotations.insert("meshca.dev/policy".into(), format!("{}/{}", policy.namespace, policy.name));
    if let Some(g) = opts.policy_generation {
        meta.annotations.insert("meshca.dev/policy-generation".into(), g.to_string());
    }
    if let Some(b) = bundle {
        meta.annotations.insert("meshca.dev/root-fingerprint".into(), b.root_fingerprint());
        meta.annotations.insert("meshca.dev/not-after".into(), meshca::format_time(b.not_after()));
    }
    meta
}

fn issue_and_write(
    store: &dyn Store,
    policy: &Policy,
    signer: &SigningCa,
    cluster: &str,
    secret: &SecretRef,
    opts: &Options,
    rng: &mut dyn Entropy,
) -> Result<Cacerts, Error> {
    let now = opts.now;
    let params = policy.rotation.intermediate_params(cluster);
    let issued = signer.issue_intermediate(&params, rng, now).map_err(Error::core(format!("issuing for {cluster}")))?;
    let files = issued.value.to_files(Layout::Istio);
    // The exact bytes about to be written must validate; a bundle that does not is never written.
    let checked = Cacerts::from_files(&files, now).map_err(Error::core(format!("new bundle for {cluster}")))?;
    if opts.dry_run {
        return Ok(checked);
    }
    store.write(secret, &files, &managed_meta(policy, opts, Some(&checked)))?;
    // Read back what landed, as istiod will.
    let landed = store
        .read(secret)?
        .ok_or_else(|| Error::Input(format!("{}: the bundle just written is not there", store.location(secret))))?;
    Cacerts::from_files(&landed, now).map_err(Error::core(format!("bundle written for {cluster}")))
}

/// Serde helpers: timestamps as RFC 3339 strings.
pub mod rfc3339 {
    use serde::Serializer;
    use time::OffsetDateTime;

    /// Serializes a time as RFC 3339, UTC, whole seconds.
    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&meshca::format_time(*t))
    }
}

/// Serde helpers: optional timestamps as RFC 3339 strings or null.
pub mod rfc3339_opt {
    use serde::Serializer;
    use time::OffsetDateTime;

    /// Serializes an optional time as RFC 3339 or null.
    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&meshca::format_time(*t)),
            None => s.serialize_none(),
        }
    }
}
