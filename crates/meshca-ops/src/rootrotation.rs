//! Root rotation over a [`Store`]: the core's state machine, persisted as a Secret beside the
//! policy (`<policy>-root-rotation`, key `state.json`) so any run resumes it and a repeated run
//! changes nothing. The incoming signer is kept as `<signer>-next` until the rotation completes,
//! when it replaces the policy's signer.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use meshca::{Cacerts, Entropy, Files, Layout, Phase, RootRotation, SigningCa, Step};

use crate::error::Error;
use crate::policy::Policy;
use crate::store::{SecretRef, Store, WriteMeta};

const STATE_KEY: &str = "state.json";

/// What meshca writes for a rotation carries its managed-by label, like every Secret it owns.
fn managed() -> WriteMeta {
    let mut meta = WriteMeta::default();
    meta.labels.insert(crate::manifest::MANAGED_BY.0.into(), crate::manifest::MANAGED_BY.1.into());
    meta
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Persisted {
    phase: String,
    phase_completed_at: Option<i64>,
    dwell_seconds: i64,
    old_root_pem: String,
    new_root_pem: String,
    /// Every cluster any run of this rotation has seen: a step waits for all of them, even
    /// when a run names only some.
    #[serde(default)]
    clusters: std::collections::BTreeSet<String>,
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::AddingNewRoot => "AddingNewRoot",
        Phase::PropagatingIntermediates => "PropagatingIntermediates",
        Phase::DeletingOldRoot => "DeletingOldRoot",
        Phase::Complete => "Complete",
        Phase::RollingBackIntermediates => "RollingBackIntermediates",
        Phase::RollingBackRoot => "RollingBackRoot",
        Phase::RolledBack => "RolledBack",
        _ => "Unknown",
    }
}

fn phase_from(name: &str) -> Option<Phase> {
    [
        Phase::AddingNewRoot,
        Phase::PropagatingIntermediates,
        Phase::DeletingOldRoot,
        Phase::Complete,
        Phase::RollingBackIntermediates,
        Phase::RollingBackRoot,
        Phase::RolledBack,
    ]
    .into_iter()
    .find(|p| phase_name(*p) == name)
}

/// Where a policy's rotation state and incoming signer live.
pub fn state_secret(policy: &Policy, mgmt: &str) -> SecretRef {
    SecretRef::new(mgmt, &policy.namespace, &format!("{}-root-rotation", policy.name))
}

/// The incoming signer's Secret.
pub fn next_signer_secret(policy: &Policy, mgmt: &str) -> SecretRef {
    let (ns, name) = policy.signer.secret();
    SecretRef::new(mgmt, ns, &format!("{name}-next"))
}

/// Reads the persisted rotation, if any.
pub fn load(store: &dyn Store, policy: &Policy, mgmt: &str) -> Result<Option<RootRotation>, Error> {
    Ok(load_with_clusters(store, policy, mgmt)?.map(|(r, _)| r))
}

type Clusters = std::collections::BTreeSet<String>;

fn load_with_clusters(
    store: &dyn Store,
    policy: &Policy,
    mgmt: &str,
) -> Result<Option<(RootRotation, Clusters)>, Error> {
    let secret = state_secret(policy, mgmt);
    let Some(files) = store.read(&secret)? else { return Ok(None) };
    let bad = |d: String| Error::Input(format!("{}: {d}", store.location(&secret)));
    let raw = files.get(STATE_KEY).ok_or_else(|| bad(format!("no {STATE_KEY}")))?;
    let p: Persisted = serde_json::from_slice(raw).map_err(|e| bad(format!("{STATE_KEY} is not valid: {e}")))?;
    let cert = |pem: &str| {
        meshca::parse_certificates(pem.as_bytes(), STATE_KEY)
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| bad("no root".into()))
    };
    let (old, new) = (cert(&p.old_root_pem)?, cert(&p.new_root_pem)?);
    let phase = phase_from(&p.phase).ok_or_else(|| bad(format!("unknown phase {}", p.phase)))?;
    let mut r = RootRotation::start_from_roots(old, new, Duration::seconds(p.dwell_seconds));
    r.phase = phase;
    r.phase_completed_at = p.phase_completed_at.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
    Ok(Some((r, p.clusters)))
}

/// Persists `r` and the clusters seen so far (one atomic Secret write).
fn save(store: &dyn Store, policy: &Policy, mgmt: &str, r: &RootRotation, clusters: &Clusters) -> Result<(), Error> {
    let p = Persisted {
        phase: phase_name(r.phase).into(),
        phase_completed_at: r.phase_completed_at.map(OffsetDateTime::unix_timestamp),
        dwell_seconds: r.dwell.whole_seconds(),
        old_root_pem: r.old_root.to_pem(),
        new_root_pem: r.new_root.to_pem(),
        clusters: clusters.clone(),
    };
    let mut files = Files::new();
    files.insert(STATE_KEY, serde_json::to_vec_pretty(&p).unwrap_or_default());
    store.write(&state_secret(policy, mgmt), &files, &managed())
}

/// Starts a rotation to `new`: stores the new signer as `<signer>-next` and the state.
/// Refuses while another rotation is under way, and a new CA with the same root.
pub fn start(
    store: &dyn Store,
    policy: &Policy,
    mgmt: &str,
    current: &SigningCa,
    new: &SigningCa,
    dwell: Duration,
    clusters: &[String],
) -> Result<RootRotation, Error> {
    if let Some(r) = load(store, policy, mgmt)? {
        if !matches!(r.phase, Phase::Complete | Phase::RolledBack) {
            return Err(Error::Input(format!(
                "a root rotation is already under way (phase {}); finish or roll it back first",
                phase_name(r.phase)
            )));
        }
    }
    let r = RootRotation::start(current, new, dwell).map_err(Error::core("rotate-root start"))?;
    store.write(&next_signer_secret(policy, mgmt), &new.bundle().to_files(Layout::Istio), &managed())?;
    save(store, policy, mgmt, &r, &clusters.iter().cloned().collect())?;
    Ok(r)
}

/// One cluster's outcome in a rotation run.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ClusterStep {
    /// Cluster name.
    pub cluster: String,
    /// `converged` (rewritten now), `done` (already at this phase's target) or `FAILED: ...`.
    pub outcome: String,
}

/// A rotation run: what each cluster did and where the rotation is now.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct RotationReport {
    /// The phase the run worked on.
    pub phase: String,
    /// Per cluster.
    pub clusters: Vec<ClusterStep>,
    /// What the state machine said afterwards.
    pub step: String,
    /// The phase now.
    pub now_phase: String,
}

/// Applies the current phase to every cluster, then lets the state machine move on and saves
/// it. On completion the new signer replaces the policy's signer.
pub fn run(
    store: &dyn Store,
    policy: &Policy,
    mgmt: &str,
    clusters: &[String],
    rng: &mut dyn Entropy,
    now: OffsetDateTime,
    dry_run: bool,
) -> Result<Option<RotationReport>, Error> {
    let Some((r, mut known)) = load_with_clusters(store, policy, mgmt)? else { return Ok(None) };
    if matches!(r.phase, Phase::Complete | Phase::RolledBack) {
        return Ok(None);
    }
    known.extend(clusters.iter().cloned());
    let (ns, name) = policy.signer.secret();
    let signer_ref = SecretRef::new(mgmt, ns, name);
    let read_signer = |s: &SecretRef| -> Result<SigningCa, Error> {
        let files = store.read(s)?.ok_or_else(|| Error::Input(format!("{}: missing", store.location(s))))?;
        SigningCa::from_files(&files, now).map_err(Error::core(store.location(s)))
    };
    let old = read_signer(&signer_ref)?;
    let new = read_signer(&next_signer_secret(policy, mgmt))?;
    let mut results = Vec::new();
    let mut bundles: Vec<(String, Option<Cacerts>)> = Vec::new();
    for cluster in clusters {
        let secret = SecretRef::cacerts(cluster);
        let current = store.read(&secret).ok().flatten().and_then(|f| Cacerts::from_files(&f, now).ok());
        let params = policy.rotation.intermediate_params(cluster);
        let outcome = match r.converge(current.as_ref(), &old, &new, &params, rng, now) {
            Ok(None) => {
                bundles.push((cluster.clone(), current));
                "done".to_owned()
            }
            Ok(Some(b)) => {
                let write = if dry_run { Ok(()) } else { store.write(&secret, &b.to_files(Layout::Istio), &managed()) };
                match write {
                    Ok(()) => {
                        bundles.push((cluster.clone(), Some(b)));
                        if dry_run { "would converge" } else { "converged" }.to_owned()
                    }
                    Err(e) => {
                        bundles.push((cluster.clone(), current));
                        format!("FAILED: {e}")
                    }
                }
            }
            Err(e) => {
                bundles.push((cluster.clone(), current));
                format!("FAILED: {e}")
            }
        };
        results.push(ClusterStep { cluster: cluster.clone(), outcome });
    }
    // Clusters seen by earlier runs but not named in this one still count: read them as they are.
    for cluster in known.iter().filter(|c| !clusters.contains(c)) {
        let current =
            store.read(&SecretRef::cacerts(cluster)).ok().flatten().and_then(|f| Cacerts::from_files(&f, now).ok());
        bundles.push((cluster.clone(), current));
    }
    let views: Vec<(&str, Option<&Cacerts>)> = bundles.iter().map(|(n, b)| (n.as_str(), b.as_ref())).collect();
    let (next, step) = r.step(&views, now);
    let step_text = match &step {
        Step::Converging { pending } => format!("waiting for {}", pending.join(", ")),
        Step::Dwelling { until } => format!("every cluster is done; next step at {}", meshca::format_time(*until)),
        Step::Advanced { to } => format!("advanced to {}", phase_name(*to)),
        Step::Finished => format!("finished ({})", phase_name(next.phase)),
        _ => format!("{step:?}"),
    };
    if !dry_run {
        if next.phase == Phase::Complete {
            // The new signer becomes the policy's signer; the old root is gone everywhere. That
            // Secret is the user's: a store that guards unmanaged Secrets (Kubernetes) needs
            // --adopt for this write.
            store.write(&signer_ref, &new.bundle().to_files(Layout::Istio), &WriteMeta::default())?;
        }
        save(store, policy, mgmt, &next, &known)?;
    }
    Ok(Some(RotationReport {
        phase: phase_name(r.phase).into(),
        clusters: results,
        step: step_text,
        now_phase: phase_name(next.phase).into(),
    }))
}

/// Rolls the rotation back (before step 3) and saves it.
pub fn rollback(store: &dyn Store, policy: &Policy, mgmt: &str) -> Result<RootRotation, Error> {
    let (r, known) =
        load_with_clusters(store, policy, mgmt)?.ok_or_else(|| Error::Input("no root rotation is under way".into()))?;
    let back = r.rollback().map_err(Error::core("rotate-root rollback"))?;
    save(store, policy, mgmt, &back, &known)?;
    Ok(back)
}

/// The phase's name as shown to users.
pub fn describe(r: &RootRotation) -> String {
    phase_name(r.phase).to_owned()
}
