//! Root rotation over a [`Store`]: the core's state machine, persisted as a Secret beside the
//! policy (`<policy>-root-rotation`, key `state.json`) so any run resumes it and a repeated run
//! changes nothing.
//!
//! A rotation starts one of two ways:
//! - from the policy: `spec.config.rootRotation.newMgmtServerCa` names the incoming signing CA;
//!   the next run starts the sequence and every run after it moves it on. Removing
//!   `rootRotation` before step 3 rolls it back. When it completes, meshca signs with the new CA
//!   until the policy's `mgmtServerCa` is pointed at it (the user's Secrets are never rewritten);
//! - from the command line (`meshca rotate-root start --new-ca DIR`): the incoming signer is
//!   kept as `<signer>-next` and replaces the policy's signer Secret when the rotation completes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use meshca::{Cacerts, Certificate, Entropy, Files, Layout, Phase, RootRotation, Signer, SigningCa, Step};

use crate::error::Error;
use crate::policy::{AutoRootRotation, Policy};
use crate::store::{SecretRef, Store, WriteMeta};

const STATE_KEY: &str = "state.json";

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
    clusters: BTreeSet<String>,
    /// Where the incoming signer is read from; absent: `<signer>-next` (`rotate-root start`).
    #[serde(default)]
    new_signer: Option<PersistedRef>,
    /// Started by the policy's `rootRotation` (else by `rotate-root start`).
    #[serde(default)]
    started_by_policy: bool,
}

#[derive(Serialize, Deserialize)]
struct PersistedRef {
    namespace: String,
    name: String,
}

/// A rotation as stored.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Stored {
    /// The state machine.
    pub rotation: RootRotation,
    /// Every cluster a run of it has seen.
    pub clusters: BTreeSet<String>,
    /// The incoming signer's Secret.
    pub new_signer: SecretRef,
    /// Whether the policy's `rootRotation` started it (else `rotate-root start`).
    pub started_by_policy: bool,
}

impl Stored {
    fn in_progress(&self) -> bool {
        !matches!(self.rotation.phase, Phase::Complete | Phase::RolledBack)
    }
}

/// Every phase: its name in the stored state and in reports, and Gloo Mesh's name for the
/// rotation state (meshca adds ROLLED_BACK). One table, so the three cannot drift apart.
const PHASES: [(Phase, &str, &str); 7] = [
    (Phase::AddingNewRoot, "AddingNewRoot", "ADDING_NEW_ROOT"),
    (Phase::PropagatingIntermediates, "PropagatingIntermediates", "PROPAGATING_NEW_INTERMEDIATE"),
    (Phase::DeletingOldRoot, "DeletingOldRoot", "DELETING_OLD_ROOT"),
    (Phase::Complete, "Complete", "FINISHED"),
    (Phase::RollingBackIntermediates, "RollingBackIntermediates", "ROLLING_BACK"),
    (Phase::RollingBackRoot, "RollingBackRoot", "ROLLING_BACK"),
    (Phase::RolledBack, "RolledBack", "ROLLED_BACK"),
];

fn phase_name(p: Phase) -> &'static str {
    PHASES.iter().find(|(q, ..)| *q == p).map_or("Unknown", |(_, name, _)| name)
}

fn phase_from(name: &str) -> Option<Phase> {
    PHASES.iter().find(|(_, n, _)| *n == name).map(|(p, ..)| *p)
}

/// Gloo Mesh's rotation state name (ADDING_NEW_ROOT, ...) for a phase as reports name it.
pub fn gloo_state(phase: &str) -> &'static str {
    PHASES.iter().find(|(_, n, _)| *n == phase).map_or("UNKNOWN", |(.., gloo)| gloo)
}

/// Where a policy's rotation state lives.
pub fn state_secret(policy: &Policy, mgmt: &str) -> SecretRef {
    SecretRef::new(mgmt, &policy.namespace, &format!("{}-root-rotation", policy.name))
}

/// The incoming signer's Secret for a rotation started by `rotate-root start`.
pub fn next_signer_secret(policy: &Policy, mgmt: &str) -> SecretRef {
    let (ns, name) = policy.signer.secret();
    SecretRef::new(mgmt, ns, &format!("{name}-next"))
}

fn signer_secret(policy: &Policy, mgmt: &str) -> SecretRef {
    let (ns, name) = policy.signer.secret();
    SecretRef::new(mgmt, ns, name)
}

fn auto_signer_secret(auto: &AutoRootRotation, mgmt: &str) -> SecretRef {
    SecretRef::new(mgmt, &auto.new_signer.namespace, &auto.new_signer.name)
}

/// Reads the persisted rotation, if any.
pub fn load(store: &dyn Store, policy: &Policy, mgmt: &str) -> Result<Option<Stored>, Error> {
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
    let mut rotation = RootRotation::start_from_roots(old, new, Duration::seconds(p.dwell_seconds));
    rotation.phase = phase;
    rotation.phase_completed_at = p.phase_completed_at.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
    let new_signer = match p.new_signer {
        Some(r) => SecretRef::new(mgmt, &r.namespace, &r.name),
        None => next_signer_secret(policy, mgmt),
    };
    Ok(Some(Stored { rotation, clusters: p.clusters, new_signer, started_by_policy: p.started_by_policy }))
}

/// Persists a rotation (one atomic Secret write).
fn save(store: &dyn Store, policy: &Policy, mgmt: &str, s: &Stored) -> Result<(), Error> {
    let r = &s.rotation;
    let p = Persisted {
        phase: phase_name(r.phase).into(),
        phase_completed_at: r.phase_completed_at.map(OffsetDateTime::unix_timestamp),
        dwell_seconds: r.dwell.whole_seconds(),
        old_root_pem: r.old_root.to_pem(),
        new_root_pem: r.new_root.to_pem(),
        clusters: s.clusters.clone(),
        new_signer: Some(PersistedRef { namespace: s.new_signer.namespace.clone(), name: s.new_signer.name.clone() }),
        started_by_policy: s.started_by_policy,
    };
    let mut files = Files::new();
    files.insert(STATE_KEY, serde_json::to_vec_pretty(&p).unwrap_or_default());
    store.write(&state_secret(policy, mgmt), &files, &WriteMeta::managed())
}

fn read_signer(store: &dyn Store, s: &SecretRef, now: OffsetDateTime) -> Result<Option<SigningCa>, Error> {
    match store.read(s)? {
        None => Ok(None),
        Some(files) => SigningCa::from_files(&files, now)
            .map(Some)
            .map_err(Error::core(format!("signing CA {}", store.location(s)))),
    }
}

/// `cluster`'s cacerts if it can be read and is valid at `now`: anything else is not yet at any
/// phase's target.
fn valid_bundle(store: &dyn Store, cluster: &str, now: OffsetDateTime) -> Option<Cacerts> {
    store.read(&SecretRef::cacerts(cluster)).ok().flatten().and_then(|f| Cacerts::from_files(&f, now).ok())
}

fn require_signer(store: &dyn Store, s: &SecretRef, now: OffsetDateTime) -> Result<SigningCa, Error> {
    read_signer(store, s, now)?
        .ok_or_else(|| Error::Input(format!("signing CA Secret {s} not found at {}", store.location(s))))
}

/// Starts a rotation to `new` from the command line: stores the new signer as `<signer>-next`
/// and the state. Refuses while another rotation is under way, and a new CA with the same root.
pub fn start(
    store: &dyn Store,
    policy: &Policy,
    mgmt: &str,
    current: &SigningCa,
    new: &SigningCa,
    dwell: Duration,
    clusters: &[String],
) -> Result<RootRotation, Error> {
    if let Some(s) = load(store, policy, mgmt)? {
        if s.in_progress() {
            return Err(Error::Input(format!(
                "a root rotation is already under way (phase {}); finish or roll it back first",
                phase_name(s.rotation.phase)
            )));
        }
    }
    if policy.root_rotation.is_some() {
        return Err(Error::Input(
            "the policy's spec.config.rootRotation drives root rotation for this policy; edit it instead of \
             running rotate-root start"
                .into(),
        ));
    }
    let rotation = RootRotation::start(current, new, dwell).map_err(Error::core("rotate-root start"))?;
    let next = next_signer_secret(policy, mgmt);
    store.write(&next, &new.bundle().to_files(Layout::Istio), &WriteMeta::managed())?;
    let stored =
        Stored { rotation, clusters: clusters.iter().cloned().collect(), new_signer: next, started_by_policy: false };
    save(store, policy, mgmt, &stored)?;
    Ok(stored.rotation)
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
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RotationReport {
    /// What happened to the rotation itself this run, if anything beyond a step: `started`
    /// (by the policy) or `rolling back` (the policy withdrew it).
    pub notice: Option<String>,
    /// The phase the run worked on.
    pub phase: String,
    /// Per cluster.
    pub clusters: Vec<ClusterStep>,
    /// What the state machine said afterwards.
    pub step: String,
    /// The phase now.
    pub now_phase: String,
    /// Every phase this run entered, in order (a run that finds a dwell over begins the next
    /// step at once, so it may enter two).
    pub entered: Vec<String>,
    /// Subject of the root being retired.
    pub old_root: String,
    /// Subject of the incoming root.
    pub new_root: String,
    /// When the next step may begin (every cluster is done and the dwell is running).
    #[serde(with = "crate::reconcile::rfc3339_opt")]
    pub next_step_at: Option<OffsetDateTime>,
    /// Whether the rotation (or its rollback) finished in this run.
    pub finished: bool,
}

impl RotationReport {
    /// Whether some cluster failed.
    pub fn failed(&self) -> bool {
        self.clusters.iter().any(|c| c.outcome.starts_with("FAILED"))
    }
}

/// What a run does about root rotation.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// A rotation is under way: this run applied its current step.
    Rotating(RotationReport),
    /// No rotation under way: reconcile as usual, signing with `signer` when a finished
    /// rotation says so (else the policy's signer).
    Idle {
        /// The signer to use instead of the policy's.
        signer: Option<SecretRef>,
        /// Notes for the user.
        notes: Vec<String>,
    },
}

enum Todo {
    Idle { signer: Option<SecretRef>, notes: Vec<String> },
    Rotate { stored: Box<Stored>, notice: Option<String> },
}

/// Decides from the policy and the stored state whether a rotation runs, and starts or rolls
/// back a policy-driven one (saved unless `dry_run`).
fn resolve(
    store: &dyn Store,
    policy: &Policy,
    mgmt: &str,
    clusters: &[String],
    now: OffsetDateTime,
    dry_run: bool,
) -> Result<Todo, Error> {
    let stored = load(store, policy, mgmt)?;
    let signer_ref = signer_secret(policy, mgmt);
    let idle = |signer, notes| Ok(Todo::Idle { signer, notes });
    let Some(auto) = &policy.root_rotation else {
        return match stored {
            Some(s) if s.in_progress() && !s.started_by_policy => {
                Ok(Todo::Rotate { stored: Box::new(s), notice: None })
            }
            Some(s) if s.in_progress() => {
                let back = s.rotation.rollback().map_err(|_| {
                    Error::Input(format!(
                        "spec.config.rootRotation was removed, but the rotation to {} is already deleting the old \
                         root (step 3) and cannot be rolled back; put rootRotation back, or set mgmtServerCa to {}",
                        s.rotation.new_root.subject(),
                        s.new_signer
                    ))
                })?;
                if back.phase == s.rotation.phase {
                    // Already rolling back: carry on (keeping the dwell's start).
                    return Ok(Todo::Rotate { stored: Box::new(s), notice: None });
                }
                let stored = Stored { rotation: back, ..s };
                if !dry_run {
                    save(store, policy, mgmt, &stored)?;
                }
                Ok(Todo::Rotate {
                    stored: Box::new(stored),
                    notice: Some("rolling back: spec.config.rootRotation was removed".into()),
                })
            }
            Some(s) if s.rotation.phase == Phase::Complete && s.started_by_policy => {
                // Signing with the root every cluster just stopped trusting would break all traffic.
                let signer = read_signer(store, &signer_ref, now)?;
                if signer.is_some_and(|c| *c.bundle().root() == s.rotation.old_root) {
                    return Err(Error::Input(format!(
                        "mgmtServerCa ({signer_ref}) chains to {}, the root the completed rotation removed from \
                         every cluster; set mgmtServerCa to {} (the new root), or put rootRotation back",
                        s.rotation.old_root.subject(),
                        s.new_signer
                    )));
                }
                idle(None, Vec::new())
            }
            _ => idle(None, Vec::new()),
        };
    };
    let new_ref = auto_signer_secret(auto, mgmt);
    let old = require_signer(store, &signer_ref, now)?;
    let new = read_signer(store, &new_ref, now)?.ok_or_else(|| {
        Error::Input(format!(
            "spec.config.rootRotation.newMgmtServerCa: Secret {new_ref} not found at {}; create it with the incoming \
             CA's ca-cert.pem, ca-key.pem, cert-chain.pem and root-cert.pem",
            store.location(&new_ref)
        ))
    })?;
    let (old_root, new_root) = (old.bundle().root(), new.bundle().root());
    match stored {
        Some(s) if s.in_progress() => {
            if s.rotation.new_root != *new_root {
                return Err(Error::Input(format!(
                    "spec.config.rootRotation names {new_ref} (root {}), but the rotation under way goes to {}; \
                     let it finish or roll it back before naming another CA",
                    new_root.subject(),
                    s.rotation.new_root.subject()
                )));
            }
            Ok(Todo::Rotate { stored: Box::new(s), notice: None })
        }
        Some(s) if s.rotation.new_root == *new_root && s.rotation.old_root == *old_root => {
            if s.rotation.phase == Phase::Complete {
                let note = format!(
                    "the root rotation to {} is complete and meshca signs with {new_ref}; point \
                     spec.config.mgmtServerCa at it and remove spec.config.rootRotation",
                    new_root.subject()
                );
                idle(Some(new_ref), vec![note])
            } else {
                let note = "the root rotation named by spec.config.rootRotation was rolled back; remove it, or name \
                            another CA to rotate again"
                    .to_owned();
                idle(None, vec![note])
            }
        }
        _ if old_root == new_root => {
            let note = "spec.config.rootRotation.newMgmtServerCa chains to the same root as mgmtServerCa: there is no \
                        root to rotate; remove rootRotation"
                .to_owned();
            idle(None, vec![note])
        }
        _ => {
            let rotation = RootRotation::start(&old, &new, auto.dwell)
                .map_err(Error::core("spec.config.rootRotation.newMgmtServerCa"))?;
            let stored = Stored {
                rotation,
                clusters: clusters.iter().cloned().collect(),
                new_signer: new_ref,
                started_by_policy: true,
            };
            if !dry_run {
                save(store, policy, mgmt, &stored)?;
            }
            Ok(Todo::Rotate { stored: Box::new(stored), notice: Some("started by spec.config.rootRotation".into()) })
        }
    }
}

/// Applies the current phase of the rotation under way (starting or rolling back one the policy
/// asks for) to every cluster, lets the state machine move on and saves it. On completion of a
/// rotation started by `rotate-root start`, the new signer replaces the policy's signer.
#[allow(clippy::too_many_arguments)]
pub fn run(
    store: &dyn Store,
    policy: &Policy,
    passive: &[Certificate],
    mgmt: &str,
    clusters: &[String],
    rng: &mut dyn Entropy,
    now: OffsetDateTime,
    dry_run: bool,
) -> Result<Outcome, Error> {
    let (mut stored, notice) = match resolve(store, policy, mgmt, clusters, now, dry_run)? {
        Todo::Idle { signer, notes } => return Ok(Outcome::Idle { signer, notes }),
        Todo::Rotate { stored, notice } => (*stored, notice),
    };
    // Every cluster the store can see holding a cacerts counts too: a run naming only some
    // clusters must not let a step begin before the others have finished the last one.
    stored.clusters.extend(clusters.iter().cloned());
    stored.clusters.extend(store.clusters_with_cacerts()?);
    // The signers are read once per run: a second pass (below) must not change them, and on
    // Kubernetes each read is an API call.
    let old = require_signer(store, &signer_secret(policy, mgmt), now)?;
    let new = read_signer(store, &stored.new_signer, now)?;
    let signers = (&old, new.as_ref());
    let (mut report, next) = pass(store, policy, passive, mgmt, clusters, stored, signers, rng, now, dry_run)?;
    if !dry_run && next.in_progress() && report.phase != report.now_phase {
        // A step just began: apply it now rather than on the next run (its own dwell starts
        // once every cluster has done it).
        let (second, _) = pass(store, policy, passive, mgmt, clusters, next, signers, rng, now, dry_run)?;
        let step = format!("{}; {}", report.step, second.step);
        let mut entered = report.entered;
        entered.extend(second.entered.iter().cloned());
        report = RotationReport { phase: report.phase, step, entered, ..second };
    }
    report.notice = notice;
    Ok(Outcome::Rotating(report))
}

/// Applies the stored rotation's current phase once: converges every cluster, steps the state
/// machine and saves it. Returns the report and the state as saved.
#[allow(clippy::too_many_arguments)]
fn pass(
    store: &dyn Store,
    policy: &Policy,
    passive: &[Certificate],
    mgmt: &str,
    clusters: &[String],
    stored: Stored,
    (old, new): (&SigningCa, Option<&SigningCa>),
    rng: &mut dyn Entropy,
    now: OffsetDateTime,
    dry_run: bool,
) -> Result<(RotationReport, Stored), Error> {
    let r = stored.rotation.clone().with_extra_roots(passive.to_vec());
    let known = stored.clusters.clone();
    let signer_ref = signer_secret(policy, mgmt);
    // Each signer must still chain to the root the rotation was started with; otherwise every
    // run would issue from the wrong CA and no cluster would ever be done.
    if r.target_signer() == Signer::Old && *old.bundle().root() != r.old_root {
        return Err(Error::Input(format!(
            "the root rotation ({}) still issues from the old CA in phase {}, but mgmtServerCa ({}) now chains to {}; \
             put the old CA back until the rotation completes, or roll it back",
            describe_pair(&r),
            phase_name(r.phase),
            store.location(&signer_ref),
            old.bundle().root().subject()
        )));
    }
    if let Some(n) = new.filter(|n| *n.bundle().root() != r.new_root) {
        return Err(Error::Input(format!(
            "the incoming CA {} now chains to {}, not to {} the rotation was started with; put that CA back, or roll \
             the rotation back and start another",
            store.location(&stored.new_signer),
            n.bundle().root().subject(),
            r.new_root.subject()
        )));
    }
    let mut rotation_policy = policy.rotation.clone();
    rotation_policy.passive_roots = passive.to_vec();
    let mut results = Vec::new();
    let mut bundles: Vec<(String, Option<Cacerts>)> = Vec::new();
    for cluster in clusters {
        let secret = SecretRef::cacerts(cluster);
        let current = valid_bundle(store, cluster, now);
        let outcome = match r.converge(current.as_ref(), old, new, &rotation_policy, cluster, rng, now) {
            Ok(None) => {
                bundles.push((cluster.clone(), current));
                "done".to_owned()
            }
            Ok(Some(b)) => {
                let write = if dry_run {
                    Ok(())
                } else {
                    store.write(&secret, &b.to_files(Layout::Istio), &WriteMeta::managed())
                };
                match write {
                    Ok(()) => {
                        let new_ca = current.as_ref().is_none_or(|c| c.ca_cert() != b.ca_cert());
                        bundles.push((cluster.clone(), Some(b)));
                        let mut outcome = if dry_run { "would converge" } else { "converged" }.to_owned();
                        if new_ca && policy.auto_restart_pods && !dry_run {
                            // A new intermediate, as in the usual loop: restart istiod if asked.
                            match store.restart_istiod(cluster) {
                                Ok(Some(what)) => outcome.push_str(&format!("; {what}")),
                                Ok(None) => {}
                                Err(e) => outcome.push_str(&format!("; autoRestartPods: {e}")),
                            }
                        }
                        outcome
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
        bundles.push((cluster.clone(), valid_bundle(store, cluster, now)));
    }
    let views: Vec<(&str, Option<&Cacerts>)> = bundles.iter().map(|(n, b)| (n.as_str(), b.as_ref())).collect();
    let (next, step) = r.step(&views, now);
    let (step_text, next_step_at) = match &step {
        Step::Converging { pending } => (format!("waiting for {}", pending.join(", ")), None),
        Step::Dwelling { until } => {
            (format!("every cluster is done; next step at {}", meshca::format_time(*until)), Some(*until))
        }
        Step::Advanced { to } => (format!("advanced to {}", phase_name(*to)), None),
        Step::Finished => (format!("finished ({})", phase_name(next.phase)), None),
        _ => (format!("{step:?}"), None),
    };
    if !dry_run && next.phase == Phase::Complete && !stored.started_by_policy {
        // `rotate-root start`: the new signer becomes the policy's signer. That Secret is the
        // user's: a store that guards unmanaged Secrets (Kubernetes) needs --adopt. (A
        // policy-driven rotation leaves it alone: the policy names the new CA.)
        let new = new.ok_or_else(|| {
            Error::Input(format!("the incoming signing CA {} disappeared", store.location(&stored.new_signer)))
        })?;
        store.write(&signer_ref, &new.bundle().to_files(Layout::Istio), &WriteMeta::default())?;
    }
    let saved = Stored { rotation: next.clone(), clusters: known, ..stored };
    if !dry_run {
        save(store, policy, mgmt, &saved)?;
    }
    let report = RotationReport {
        notice: None,
        phase: phase_name(r.phase).into(),
        clusters: results,
        step: step_text,
        now_phase: phase_name(next.phase).into(),
        entered: if next.phase == r.phase { Vec::new() } else { vec![phase_name(next.phase).into()] },
        old_root: r.old_root.subject(),
        new_root: r.new_root.subject(),
        next_step_at,
        finished: matches!(step, Step::Finished),
    };
    Ok((report, saved))
}

/// Stops waiting for `cluster` (it left the mesh): a step waits for every cluster any run of
/// the rotation has seen. Returns whether it was known.
pub fn forget(store: &dyn Store, policy: &Policy, mgmt: &str, cluster: &str) -> Result<bool, Error> {
    let mut s = load(store, policy, mgmt)?.ok_or_else(|| Error::Input("no root rotation is under way".into()))?;
    if store.clusters_with_cacerts()?.iter().any(|c| c == cluster) {
        let at = store.location(&SecretRef::cacerts(cluster));
        return Err(Error::Input(format!(
            "{cluster} still holds a cacerts ({at}), so every run would count it again; remove it from the store first"
        )));
    }
    let known = s.clusters.remove(cluster);
    if known {
        save(store, policy, mgmt, &s)?;
    }
    Ok(known)
}

/// Rolls the rotation back (before step 3) and saves it.
pub fn rollback(store: &dyn Store, policy: &Policy, mgmt: &str) -> Result<RootRotation, Error> {
    let s = load(store, policy, mgmt)?.ok_or_else(|| Error::Input("no root rotation is under way".into()))?;
    let back = s.rotation.rollback().map_err(Error::core("rotate-root rollback"))?;
    save(store, policy, mgmt, &Stored { rotation: back.clone(), ..s })?;
    Ok(back)
}

fn describe_pair(r: &RootRotation) -> String {
    format!("{} -> {}", r.old_root.subject(), r.new_root.subject())
}

/// The phase's name as shown to users.
pub fn describe(r: &RootRotation) -> String {
    phase_name(r.phase).to_owned()
}
