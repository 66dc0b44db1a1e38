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

use meshca::{Cacerts, Certificate, Converge, Entropy, Facts, Files, Phase, RootRotation, Signer, SigningCa, Step};

use crate::context::Options;
use crate::error::Error;
pub use crate::phase::PhaseName;
use crate::phase::{phase_from, phase_name};
use crate::policy::{AutoRootRotation, Policy};
pub use crate::refusal::RootRotationRefusal as Refusal;
use crate::revocation_list::Fleet;
use crate::signer::{Opened, Signers};
use crate::store::{SecretRef, Store};
use crate::writer::{Owner, Writer};

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
    /// Whether the rotation is still under way (not complete, not rolled back).
    pub fn in_progress(&self) -> bool {
        !matches!(self.rotation.phase, Phase::Complete | Phase::RolledBack)
    }
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
    let bad = |detail: String| Error::RotationState { location: store.location(&secret), detail };
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

/// Persists a rotation (one atomic Secret write; nothing on a dry run).
fn save(w: &Writer<'_>, policy: &Policy, mgmt: &str, s: &Stored) -> Result<(), Error> {
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
    w.write_state(&state_secret(policy, mgmt), &files)
}

/// `cluster`'s cacerts if it can be read and is valid at `now`: anything else is not yet at any
/// phase's target.
fn valid_bundle(store: &dyn Store, cluster: &str, now: OffsetDateTime) -> Option<Cacerts> {
    store.read(&SecretRef::cacerts(cluster)).ok().flatten().and_then(|f| Cacerts::from_files(&f, now).ok())
}

/// Starts a rotation to `new` by hand (without editing the policy): stores the new signer as
/// `<signer>-next` and the state. Refuses while another rotation is under way, and a new CA
/// with the same root.
pub fn start(
    store: &dyn Store,
    policy: &Policy,
    opts: &Options,
    current: &SigningCa,
    new: &SigningCa,
    dwell: Duration,
) -> Result<RootRotation, Error> {
    let mgmt = &opts.mgmt_cluster;
    if let Some(s) = load(store, policy, mgmt)? {
        if s.in_progress() {
            return Err(Refusal::AlreadyUnderWay { phase: PhaseName(s.rotation.phase) }.into());
        }
    }
    if policy.root_rotation.is_some() {
        return Err(Refusal::DrivenByPolicy.into());
    }
    if policy.signer_key.is_some() {
        return Err(Refusal::SignerKeyInToken.into());
    }
    if let Some(v) = &policy.vault {
        return Err(Refusal::SignerInProvider { provider: v.address.clone() }.into());
    }
    RootRotation::check_incoming(new, opts.now, dwell, policy.rotation.ttl)
        .map_err(Error::core("starting the root rotation"))?;
    let rotation = RootRotation::start(current, new, dwell).map_err(Error::core("starting the root rotation"))?;
    check_crl_names(store, policy, mgmt, &rotation)?;
    let w = writer(store, policy, opts);
    let next = next_signer_secret(policy, mgmt);
    w.write_signer(&next, new, Owner::Meshca)?;
    let stored = Stored {
        rotation,
        clusters: opts.clusters.iter().cloned().collect(),
        new_signer: next,
        started_by_policy: false,
    };
    save(&w, policy, mgmt, &stored)?;
    Ok(stored.rotation)
}

fn writer<'a>(store: &'a dyn Store, policy: &'a Policy, opts: &'a Options) -> Writer<'a> {
    Writer::new(store, policy, opts.policy_generation, opts.now, opts.dry_run)
        .log_in(&opts.mgmt_cluster, &opts.token)
        .because(crate::audit::reason::ROOT_ROTATION)
}

/// What a rotation run did to one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case", rename_all_fields = "camelCase")]
#[non_exhaustive]
pub enum StepOutcome {
    /// Already at this phase's target: nothing written.
    Done,
    /// Rewritten now to this phase's target.
    Converged {
        /// What `autoRestartPods` restarted (a new intermediate only).
        restarted: Option<String>,
        /// Why the restart failed, if it did (the bundle was written all the same).
        restart_error: Option<String>,
    },
    /// Dry run: would be rewritten.
    WouldConverge,
    /// The cluster could not be brought to the target; it keeps what it had.
    Failed {
        /// Why.
        error: String,
    },
}

impl StepOutcome {
    /// The outcome's name as serialized (`done`, `converged`, `would-converge`, `failed`).
    pub fn kind(&self) -> &'static str {
        match self {
            StepOutcome::Done => "done",
            StepOutcome::Converged { .. } => "converged",
            StepOutcome::WouldConverge => "would-converge",
            StepOutcome::Failed { .. } => "failed",
        }
    }
}

/// One cluster's outcome in a rotation run.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ClusterStep {
    /// Cluster name.
    pub cluster: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: StepOutcome,
}

/// What the state machine said after a pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case", rename_all_fields = "camelCase")]
#[non_exhaustive]
pub enum StepState {
    /// Some clusters have not reached the phase's target.
    Converging {
        /// Those clusters.
        pending: Vec<String>,
    },
    /// Every cluster is done; the dwell runs until `until`.
    Dwelling {
        /// When the next step may begin.
        #[serde(with = "crate::serde_time::rfc3339")]
        until: OffsetDateTime,
    },
    /// The rotation moved to the next phase.
    Advanced {
        /// That phase.
        to: PhaseName,
    },
    /// The rotation (or its rollback) finished.
    Finished {
        /// The final phase.
        phase: PhaseName,
    },
    /// Every cluster is done and the dwell has passed, but intermediates from the new root
    /// wait for `spec.config.trustDistribution`: these targets do not carry the new root yet
    /// (or the SPIFFE bundle has not carried it long enough).
    Distributing {
        /// The targets that lag.
        lagging: Vec<String>,
    },
}

/// What happened to the rotation itself in a run, beyond a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Notice {
    /// The policy's `rootRotation` started it.
    StartedByPolicy,
    /// The policy's `rootRotation` was removed: rolling back.
    RollingBack,
}

/// A rotation run: what each cluster did and where the rotation is now.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RotationReport {
    /// What happened to the rotation itself this run, if anything beyond a step.
    pub notice: Option<Notice>,
    /// The phase the run worked on.
    pub phase: PhaseName,
    /// Per cluster.
    pub clusters: Vec<ClusterStep>,
    /// What the state machine said after each pass (a run that begins a step applies it at
    /// once, so it may hold two).
    pub steps: Vec<StepState>,
    /// The phase now.
    pub now_phase: PhaseName,
    /// Every phase this run entered, in order.
    pub entered: Vec<PhaseName>,
    /// Subject of the root being retired.
    pub old_root: String,
    /// Subject of the incoming root.
    pub new_root: String,
    /// When the next step may begin (every cluster is done and the dwell is running).
    #[serde(with = "crate::serde_time::rfc3339_opt")]
    pub next_step_at: Option<OffsetDateTime>,
    /// Whether the rotation (or its rollback) finished in this run.
    pub finished: bool,
    /// What `trustDistribution` published this run, when the policy has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Box<crate::distribution::Distribution>>,
}

impl RotationReport {
    /// Whether some cluster failed.
    pub fn failed(&self) -> bool {
        self.failed_clusters().next().is_some()
    }

    /// The clusters that failed, with why.
    pub fn failed_clusters(&self) -> impl Iterator<Item = (&str, &str)> {
        self.clusters.iter().filter_map(|c| match &c.outcome {
            StepOutcome::Failed { error } => Some((c.cluster.as_str(), error.as_str())),
            _ => None,
        })
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
    Rotate { stored: Box<Stored>, notice: Option<Notice> },
}

/// Decides from the policy and the stored state whether a rotation runs, and starts or rolls
/// back a policy-driven one (saved unless a dry run).
fn resolve(store: &dyn Store, policy: &Policy, opts: &Options, rng: &mut dyn Entropy) -> Result<Todo, Error> {
    let signers = Signers::new(store, policy, opts);
    let (mgmt, now) = (opts.mgmt_cluster.as_str(), opts.now);
    let w = writer(store, policy, opts);
    let stored = load(store, policy, mgmt)?;
    let signer_ref = signer_secret(policy, mgmt);
    let idle = |signer, notes| Ok(Todo::Idle { signer, notes });
    let Some(auto) = &policy.root_rotation else {
        return match stored {
            Some(s) if s.in_progress() && !s.started_by_policy => {
                Ok(Todo::Rotate { stored: Box::new(s), notice: None })
            }
            Some(s) if s.in_progress() => {
                let back = s.rotation.rollback().map_err(|_| Refusal::CannotRollBack {
                    new_root: s.rotation.new_root.subject(),
                    new_signer: s.new_signer.to_string(),
                })?;
                if back.phase == s.rotation.phase {
                    // Already rolling back: carry on (keeping the dwell's start).
                    return Ok(Todo::Rotate { stored: Box::new(s), notice: None });
                }
                let stored = Stored { rotation: back, ..s };
                save(&w, policy, mgmt, &stored)?;
                Ok(Todo::Rotate { stored: Box::new(stored), notice: Some(Notice::RollingBack) })
            }
            Some(s) if s.rotation.phase == Phase::Complete && s.started_by_policy => {
                // Signing with the root every cluster just stopped trusting would break all traffic.
                let signer = signers.read(&signer_ref, now)?;
                if signer.is_some_and(|c| *c.bundle().root() == s.rotation.old_root) {
                    return Err(Refusal::SignerOnRemovedRoot {
                        signer: signer_ref.to_string(),
                        old_root: s.rotation.old_root.subject(),
                        new_signer: s.new_signer.to_string(),
                    }
                    .into());
                }
                idle(None, Vec::new())
            }
            _ => idle(None, Vec::new()),
        };
    };
    let new_ref = auto_signer_secret(auto, mgmt);
    let old = signers.require(&signer_ref, now)?;
    // Going back to the old root needs nothing of the incoming CA: one that lapsed or broke
    // meanwhile does not stop the way back.
    if let Some(s) = stored.as_ref().filter(|s| s.rotation.is_rolling_back()) {
        if let Err(e) = signers.read(&new_ref, now) {
            if s.in_progress() {
                tracing::warn!(error = %e, "the incoming CA is unusable; carrying on with the roll-back");
                return Ok(Todo::Rotate { stored: Box::new(s.clone()), notice: None });
            }
            let note = format!(
                "the root rotation named by spec.config.rootRotation was rolled back, and its CA is no longer usable \
                 ({e}); remove rootRotation"
            );
            return idle(None, vec![note]);
        }
    }
    // A CA the PKI holds is read through it (a management intermediate made the first time).
    let mut notes = Vec::new();
    let new = signers.open(&new_ref, rng, &mut notes)?.map(|o| o.ca);
    for note in notes {
        tracing::info!(note = %note, "the incoming CA");
    }
    let new = new.ok_or_else(|| Error::PolicySecret {
        field: "spec.config.rootRotation.newMgmtServerCa".into(),
        secret: new_ref.to_string(),
        problem: format!("not found at {}", store.location(&new_ref)),
        fix: if auto.new_key.is_some() {
            "create it with the incoming CA's public files (ca-cert.pem, cert-chain.pem, root-cert.pem); its key \
             stays in the token newMgmtServerCa.pkcs11 names"
        } else {
            "create it with the incoming CA's ca-cert.pem, ca-key.pem, cert-chain.pem and root-cert.pem, or name \
             where the CA is held (newMgmtServerCa.pkcs11 or .vault)"
        },
    })?;
    let (old_root, new_root) = (old.bundle().root(), new.bundle().root());
    match stored {
        Some(s) if s.in_progress() => {
            if s.rotation.new_root != *new_root {
                return Err(Refusal::OtherRotationUnderWay {
                    named: new_ref.to_string(),
                    named_root: new_root.subject(),
                    under_way_root: s.rotation.new_root.subject(),
                }
                .into());
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
            RootRotation::check_incoming(&new, now, auto.dwell, policy.rotation.ttl)
                .map_err(Error::core("spec.config.rootRotation.newMgmtServerCa"))?;
            let rotation = RootRotation::start(&old, &new, auto.dwell)
                .map_err(Error::core("spec.config.rootRotation.newMgmtServerCa"))?;
            check_crl_names(store, policy, mgmt, &rotation)?;
            let stored = Stored {
                rotation,
                clusters: opts.clusters.iter().cloned().collect(),
                new_signer: new_ref,
                started_by_policy: true,
            };
            save(&w, policy, mgmt, &stored)?;
            Ok(Todo::Rotate { stored: Box::new(stored), notice: Some(Notice::StartedByPolicy) })
        }
    }
}

/// With a CRL set in use, the two roots must have different names (see
/// [`RootRotation::check_crl_names`]): checked before anything is written.
fn check_crl_names(store: &dyn Store, policy: &Policy, mgmt: &str, rotation: &RootRotation) -> Result<(), Error> {
    if store.read(&crate::revocation_list::list_secret(policy, mgmt))?.is_some() {
        rotation.check_crl_names().map_err(Error::core("the root rotation with the fleet's CRLs"))?;
    }
    Ok(())
}

/// Applies the current phase of the rotation under way (starting or rolling back one the policy
/// asks for) to `opts.clusters`, lets the state machine move on and saves it. On completion of
/// a rotation started by [`start`], the new signer replaces the policy's signer.
pub fn run(
    store: &dyn Store,
    policy: &Policy,
    passive: &[Certificate],
    opts: &Options,
    rng: &mut dyn Entropy,
) -> Result<Outcome, Error> {
    let signers = Signers::new(store, policy, opts);
    let (mut stored, notice) = match resolve(store, policy, opts, rng)? {
        Todo::Idle { signer, notes } => return Ok(Outcome::Idle { signer, notes }),
        Todo::Rotate { stored, notice } => (*stored, notice),
    };
    // Every cluster the store can see holding a cacerts counts too: a run naming only some
    // clusters must not let a step begin before the others have finished the last one.
    stored.clusters.extend(opts.clusters.iter().cloned());
    stored.clusters.extend(store.clusters_with_cacerts()?);
    // The signers are read once per run: a second pass (below) must not change them, and on
    // Kubernetes each read is an API call.
    let old_ref = signer_secret(policy, &opts.mgmt_cluster);
    let mut notes = Vec::new();
    let old = signers
        .open(&old_ref, rng, &mut notes)?
        .ok_or_else(|| Error::SignerNotFound { secret: old_ref.to_string(), location: store.location(&old_ref) })?;
    let new = match signers.open(&stored.new_signer, rng, &mut notes) {
        Ok(n) => n,
        // The way back signs with the old CA only: a lapsed incoming CA does not stop it.
        Err(e) if stored.rotation.is_rolling_back() => {
            tracing::warn!(error = %e, "the incoming CA is unusable; the roll-back does not need it");
            None
        }
        Err(e) => return Err(e),
    };
    for note in notes {
        tracing::info!(note = %note, "a signing CA of the root rotation");
    }
    let signers = (&old, new.as_ref());
    let (mut report, next) = pass(store, policy, passive, opts, stored, signers, rng)?;
    if !opts.dry_run && next.in_progress() && report.phase != report.now_phase {
        // A step just began: apply it now rather than on the next run (its own dwell starts
        // once every cluster has done it).
        let (second, _) = pass(store, policy, passive, opts, next, signers, rng)?;
        let mut steps = report.steps;
        steps.extend(second.steps.iter().cloned());
        let mut entered = report.entered;
        entered.extend(second.entered.iter().copied());
        let distribution = second.distribution.clone().or(report.distribution);
        report = RotationReport { phase: report.phase, steps, entered, distribution, ..second };
    }
    report.notice = notice;
    Ok(Outcome::Rotating(report))
}

/// Applies the stored rotation's current phase once: converges every cluster, steps the state
/// machine and saves it. Returns the report and the state as saved.
fn pass(
    store: &dyn Store,
    policy: &Policy,
    passive: &[Certificate],
    opts: &Options,
    stored: Stored,
    (old_opened, new_opened): (&Opened, Option<&Opened>),
    rng: &mut dyn Entropy,
) -> Result<(RotationReport, Stored), Error> {
    let (old, new) = (&old_opened.ca, new_opened.map(|n| &n.ca));
    let (mgmt, now, clusters) = (opts.mgmt_cluster.as_str(), opts.now, &opts.clusters);
    let w = writer(store, policy, opts);
    let r = stored.rotation.clone().with_extra_roots(passive.to_vec());
    let known = stored.clusters.clone();
    let signer_ref = signer_secret(policy, mgmt);
    // Each signer must still chain to the root the rotation was started with; otherwise every
    // run would issue from the wrong CA and no cluster would ever be done.
    if r.target_signer() == Signer::Old && *old.bundle().root() != r.old_root {
        return Err(Refusal::SignerChanged {
            old_root: r.old_root.subject(),
            new_root: r.new_root.subject(),
            phase: PhaseName(r.phase),
            location: store.location(&signer_ref),
            now_root: old.bundle().root().subject(),
        }
        .into());
    }
    if let Some(n) = new.filter(|n| *n.bundle().root() != r.new_root) {
        return Err(Refusal::IncomingChanged {
            location: store.location(&stored.new_signer),
            now_root: n.bundle().root().subject(),
            new_root: r.new_root.subject(),
        }
        .into());
    }
    // Beyond the mesh first: the phase's trust set, and the incoming root as the canary while
    // it is coming in.
    let distribution = match &policy.trust_distribution {
        None => None,
        Some(_) => {
            let live = meshca::TrustSet::new(r.target_roots()).map_err(Error::core("spec.config.trustDistribution"))?;
            let canary =
                matches!(r.phase, Phase::AddingNewRoot | Phase::PropagatingIntermediates).then_some(&r.new_root);
            crate::distribution::publish(store, policy, opts, &live, canary)?.map(Box::new)
        }
    };
    let mut rotation_policy = policy.rotation.clone();
    rotation_policy.passive_roots = passive.to_vec();
    // The fleet's CRL set, when it publishes one: the CRLs of both roots while either may be
    // trusted, one for every intermediate in use, saved before any bundle that needs it.
    let mut fleet = crl_fleet(store, policy, opts, &r, (old_opened, new_opened))?;
    let revoked = fleet.as_ref().map(Fleet::entries).unwrap_or_default();
    let facts = Facts::new(&revoked, fleet.is_some(), false);
    // First what each cluster should hold, nothing written yet.
    let mut planned = Vec::new();
    for cluster in clusters {
        let _span = tracing::info_span!("cluster", cluster = cluster.as_str()).entered();
        let current = valid_bundle(store, cluster, now);
        let target =
            converge(&r, current.as_ref(), (old_opened, new_opened), &rotation_policy, &facts, cluster, rng, opts)
                .map_err(|e| e.to_string());
        planned.push((cluster.clone(), current, target));
    }
    let crl_pem = match fleet.as_mut() {
        Some(f) => {
            for (cluster, current, target) in &planned {
                // The intermediate in use keeps its CRL while its workloads' certificates live on.
                if let Some(c) = current.as_ref().filter(|c| !f.is_revoked(c.ca_cert())) {
                    if let Err(e) = f.cover(c, now) {
                        tracing::warn!(cluster = %cluster, error = %e, "no CRL for the intermediate in use");
                    }
                }
                if let Ok(Some(t)) = target {
                    f.cover(t, now)?;
                }
            }
            for cluster in known.iter().filter(|c| !clusters.contains(c)) {
                if let Some(c) = valid_bundle(store, cluster, now).filter(|c| !f.is_revoked(c.ca_cert())) {
                    if let Err(e) = f.cover(&c, now) {
                        tracing::warn!(cluster = %cluster, error = %e, "no CRL for the intermediate in use");
                    }
                }
            }
            f.save(&w, policy, mgmt)?;
            Some(f.crl_pem())
        }
        None => None,
    };
    let w = w.with_crls(crl_pem.as_deref().zip(fleet.as_ref().map(Fleet::crls)));
    let new_intermediate =
        |current: &Option<Cacerts>, t: &Cacerts| current.as_ref().is_none_or(|c| c.ca_cert() != t.ca_cert());
    // With CRLs in use, every cluster gets the set before any new intermediate is written
    // (istio#61075): bundles that keep their intermediate first (a cluster about to get a new
    // one is given the set with the one it has), then the new intermediates, each only once
    // every peer holds the set.
    let gate = fleet.as_ref().zip(crl_pem.as_deref()).filter(|_| !opts.dry_run);
    if let Some((f, pem)) = gate {
        for (cluster, current, target) in &planned {
            let secret = SecretRef::cacerts(cluster);
            let Some(c) = current.as_ref().filter(|c| !f.is_revoked(c.ca_cert())) else { continue };
            let keeps = matches!(target, Ok(Some(t)) if !new_intermediate(current, t));
            if !keeps && held_set(store, cluster).as_deref() != Some(pem) {
                if let Err(e) = w.write_bundle(&secret, c) {
                    tracing::warn!(cluster = %cluster, error = %e, "could not give the CRL set to the bundle in use");
                }
            }
        }
    }
    // The clusters whose bundle in use lacks the set, read once the others are written (just
    // before the first new intermediate): a cluster that could not be given it holds them back.
    let lacking_now = |f: &Fleet, pem: &[u8]| -> Vec<String> {
        let mut peers: BTreeSet<String> = known.iter().cloned().chain(clusters.iter().cloned()).collect();
        peers.extend(store.clusters_with_cacerts().unwrap_or_default());
        peers.remove(mgmt);
        peers
            .into_iter()
            .filter(|p| match valid_bundle(store, p, now) {
                Some(b) if !f.is_revoked(b.ca_cert()) => held_set(store, p).is_some_and(|h| h != pem),
                Some(_) => false,
                None => store.read(&SecretRef::cacerts(p)).is_err(),
            })
            .collect()
    };
    let mut lacking: Option<Vec<String>> = None;
    // Those that keep their intermediate are written first.
    planned.sort_by_key(|(_, c, t)| matches!(t, Ok(Some(t)) if new_intermediate(c, t)));
    let mut results = Vec::new();
    let mut bundles: Vec<(String, Option<Cacerts>)> = Vec::new();
    for (cluster, current, target) in planned {
        let _span = tracing::info_span!("cluster", cluster = cluster.as_str()).entered();
        let held_back = match (&target, gate) {
            (Ok(Some(t)), Some((f, pem))) if new_intermediate(&current, t) => {
                let lacking = lacking.get_or_insert_with(|| lacking_now(f, pem));
                let peers: Vec<&String> = lacking.iter().filter(|p| **p != cluster).collect();
                (!peers.is_empty()).then(|| {
                    format!(
                        "its new intermediate was not written: the CRL set that covers it has not reached {} yet, \
                         whose workloads would refuse it; run the rotation over every cluster of the fleet",
                        meshca::list_bounded(peers, 10)
                    )
                })
            }
            _ => None,
        };
        let converged = match held_back {
            Some(why) => Err(why),
            None => target.and_then(|target| match target {
                None => Ok(None),
                Some(b) => w.write_bundle(&SecretRef::cacerts(&cluster), &b).map(Some).map_err(|e| e.to_string()),
            }),
        };
        let outcome = match converged {
            Ok(None) => {
                bundles.push((cluster.clone(), current));
                StepOutcome::Done
            }
            Ok(Some(b)) if opts.dry_run => {
                // What the step would see once this is written.
                bundles.push((cluster.clone(), Some(b)));
                StepOutcome::WouldConverge
            }
            Ok(Some(b)) => {
                let new_ca = current.as_ref().is_none_or(|c| c.ca_cert() != b.ca_cert());
                bundles.push((cluster.clone(), Some(b)));
                let (mut restarted, mut restart_error) = (None, None);
                if new_ca && policy.auto_restart_pods {
                    // A new intermediate, as in the usual loop: restart istiod if asked.
                    match store.restart_istiod(&cluster, now) {
                        Ok(what) => restarted = what,
                        Err(e) => restart_error = Some(e.to_string()),
                    }
                }
                StepOutcome::Converged { restarted, restart_error }
            }
            Err(error) => {
                bundles.push((cluster.clone(), current));
                StepOutcome::Failed { error }
            }
        };
        results.push(ClusterStep { cluster: cluster.clone(), outcome });
    }
    // The report keeps the order the run named the clusters in.
    results.sort_by_key(|r| clusters.iter().position(|c| *c == r.cluster));
    // Clusters seen by earlier runs but not named in this one still count: read them as they are.
    for cluster in known.iter().filter(|c| !clusters.contains(c)) {
        bundles.push((cluster.clone(), valid_bundle(store, cluster, now)));
    }
    // A cluster is at the step's target only once its istiod publishes the roots meshca wrote
    // (istio-ca-root-cert); where that cannot be seen, per spec.config.waitForUnobservedIstiod.
    let mut istiod_pending = Vec::new();
    for (cluster, bundle) in &mut bundles {
        let Some(b) = bundle.as_ref() else { continue };
        let state = match store.istiod_roots(cluster) {
            Ok(published) => crate::report::TrustState::of(published.as_deref(), b),
            Err(_) => crate::report::TrustState::Unobserved,
        };
        let holds = match state {
            crate::report::TrustState::InSync => false,
            crate::report::TrustState::Unobserved => policy.wait_for_unobserved_istiod,
            _ => true,
        };
        if holds && !opts.dry_run {
            istiod_pending.push(cluster.clone());
            *bundle = None;
        }
    }
    let views: Vec<(&str, Option<&Cacerts>)> = bundles.iter().map(|(n, b)| (n.as_str(), b.as_ref())).collect();
    let (mut next, step) = r.step(&views, now);
    // Intermediates from the new root go out only once everything beyond the mesh that trusts
    // the fleet carries it: held at the end of step 1, the dwell done.
    let mut lagging = Vec::new();
    if r.phase == Phase::AddingNewRoot && matches!(step, Step::Advanced { .. }) {
        let mut all: BTreeSet<String> = known.clone();
        all.extend(clusters.iter().cloned());
        all.remove(mgmt);
        lagging = crate::distribution::lagging(store, policy, opts, &all, &r.new_root)?;
        if !lagging.is_empty() {
            next = r.clone();
            next.phase_completed_at = Some(r.phase_completed_at.unwrap_or(now));
            tracing::info!(targets = ?lagging, "the new root's intermediates wait for trust distribution");
        }
    }
    if !istiod_pending.is_empty() {
        tracing::info!(clusters = ?istiod_pending, "waiting for istiod to load the roots meshca wrote");
    }
    let state = match &step {
        _ if !lagging.is_empty() => StepState::Distributing { lagging },
        Step::Converging { pending } => StepState::Converging { pending: pending.clone() },
        Step::Dwelling { until } => StepState::Dwelling { until: *until },
        Step::Advanced { to } => StepState::Advanced { to: PhaseName(*to) },
        Step::Finished => StepState::Finished { phase: PhaseName(next.phase) },
    };
    if !opts.dry_run && next.phase == Phase::Complete && !stored.started_by_policy {
        // Started by hand: the new signer becomes the policy's signer. That Secret is the
        // user's: a store that guards unmanaged Secrets (Kubernetes) refuses unless told to
        // adopt it. (A policy-driven rotation leaves it alone: the policy names the new CA.)
        let new = new.ok_or_else(|| Refusal::IncomingDisappeared { location: store.location(&stored.new_signer) })?;
        w.write_signer(&signer_ref, new, Owner::User)?;
    }
    if let (Some(f), Some(removed)) = (fleet.as_mut(), next.removed_root()) {
        // Finished: the root no cluster trusts any more leaves the CRL set with what it revoked;
        // the next run publishes the set without it.
        let chain: Vec<&Certificate> = [Some(old_opened), new_opened]
            .into_iter()
            .flatten()
            .find(|o| o.ca.bundle().root() == removed)
            .map_or_else(|| vec![removed], |o| o.ca.bundle().path().iter().collect());
        f.forget_chain(&chain);
        f.save(&writer(store, policy, opts), policy, mgmt)?;
    }
    let saved = Stored { rotation: next.clone(), clusters: known, ..stored };
    save(&writer(store, policy, opts), policy, mgmt, &saved)?;
    let report = RotationReport {
        notice: None,
        phase: PhaseName(r.phase),
        clusters: results,
        next_step_at: match state {
            StepState::Dwelling { until } => Some(until),
            _ => None,
        },
        finished: matches!(state, StepState::Finished { .. }),
        steps: vec![state],
        now_phase: PhaseName(next.phase),
        entered: if next.phase == r.phase { Vec::new() } else { vec![PhaseName(next.phase)] },
        old_root: r.old_root.subject(),
        new_root: r.new_root.subject(),
        distribution,
    };
    Ok((report, saved))
}

/// The bundle `cluster` should hold in `r`'s phase ([`RootRotation::target`]), or `None` if
/// it holds it: a new intermediate is issued by whatever holds the phase signer's key (the
/// Secret, a token, or the PKI, whose answer the core checks first).
#[allow(clippy::too_many_arguments)]
fn converge(
    r: &RootRotation,
    current: Option<&Cacerts>,
    (old, new): (&Opened, Option<&Opened>),
    rotation: &meshca::RotationPolicy,
    facts: &Facts<'_>,
    cluster: &str,
    rng: &mut dyn Entropy,
    opts: &Options,
) -> Result<Option<Cacerts>, Error> {
    let context = || format!("the root rotation's bundle for {cluster}");
    match r
        .target(current, &old.ca, new.map(|n| &n.ca), rotation, facts, cluster, opts.now)
        .map_err(Error::core(context()))?
    {
        Converge::Keep => Ok(None),
        Converge::Retrust(b) => Ok(Some(*b)),
        Converge::Issue { signer, roots } => {
            let opened = if signer == Signer::Old {
                old
            } else {
                new.ok_or_else(|| {
                    Error::core(context())(meshca::Error::InvalidParameter {
                        field: "new signing CA".into(),
                        reason: "this phase issues from the incoming CA, which is not available".into(),
                    })
                })?
            };
            let issued = crate::signer::issue_bundle(rotation, &opened.ca, opened.remote.as_ref(), cluster, opts, rng)?;
            meshca::with_trust_bundle(&issued, roots, opts.now).map(Some).map_err(Error::core(context()))
        }
    }
}

/// The `ca-crl.pem` a cluster's bundle holds, if any.
fn held_set(store: &dyn Store, cluster: &str) -> Option<Vec<u8>> {
    store.read(&SecretRef::cacerts(cluster)).ok().flatten().and_then(|f| f.get(meshca::CA_CRL).map(<[u8]>::to_vec))
}

/// The fleet's revocation list and CRL set for a pass of `r` (the list the run's intent
/// carries, or the stored one), with the CRL of each root `r` publishes brought up to date by
/// its signer; `None` when the fleet publishes no CRLs.
fn crl_fleet(
    store: &dyn Store,
    policy: &Policy,
    opts: &Options,
    r: &RootRotation,
    (old, new): (&Opened, Option<&Opened>),
) -> Result<Option<Fleet>, Error> {
    let stored = crate::revocation_list::load(store, policy, &opts.mgmt_cluster)?;
    let mut fleet = match opts.intent.revocations() {
        Some(list) => Fleet::with_list(stored, list.clone()),
        None => match stored {
            Some(f) => f,
            None => return Ok(None),
        },
    };
    r.check_crl_names().map_err(Error::core("the root rotation with the fleet's CRLs"))?;
    let opened: Vec<&Opened> = [Some(old), new].into_iter().flatten().collect();
    let signers: Vec<crate::crl_sources::CrlSigner<'_>> = r
        .crl_roots()
        .into_iter()
        .filter_map(|root| {
            opened.iter().find(|o| o.ca.bundle().root() == root).map(|o| crate::crl_sources::CrlSigner::from(*o))
        })
        .collect();
    let mut known: Vec<&Certificate> = vec![&r.old_root, &r.new_root];
    known.extend(opened.iter().map(|o| o.ca.bundle().ca_cert()));
    crate::crl_sources::refresh_signers(&mut fleet, &signers, &known, store, policy, opts)?;
    Ok(Some(fleet))
}

/// Stops waiting for `cluster` (it left the mesh): a step waits for every cluster any run of
/// the rotation has seen. Returns whether it was known.
pub fn forget(store: &dyn Store, policy: &Policy, opts: &Options, cluster: &str) -> Result<bool, Error> {
    let mgmt = &opts.mgmt_cluster;
    let mut s = load(store, policy, mgmt)?.ok_or(Refusal::NoRotation)?;
    if store.clusters_with_cacerts()?.iter().any(|c| c == cluster) {
        let location = store.location(&SecretRef::cacerts(cluster));
        return Err(Refusal::ClusterStillPresent { cluster: cluster.to_owned(), location }.into());
    }
    let known = s.clusters.remove(cluster);
    if known {
        save(&writer(store, policy, opts), policy, mgmt, &s)?;
    }
    Ok(known)
}

/// Rolls the rotation back (before step 3) and saves it.
pub fn rollback(store: &dyn Store, policy: &Policy, opts: &Options) -> Result<RootRotation, Error> {
    let mgmt = &opts.mgmt_cluster;
    let s = load(store, policy, mgmt)?.ok_or(Refusal::NoRotation)?;
    let back = s.rotation.rollback().map_err(Error::core("rolling the root rotation back"))?;
    save(&writer(store, policy, opts), policy, mgmt, &Stored { rotation: back.clone(), ..s })?;
    Ok(back)
}
