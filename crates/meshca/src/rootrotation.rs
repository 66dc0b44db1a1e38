//! Zero-downtime root rotation as a pure state machine: state and time in, next state and the
//! bundle each cluster should hold out. Three steps, each starting only when every cluster has
//! completed the previous one and a dwell time has passed (so every proxy has renewed its
//! workload certificate under the new trust):
//!
//! 1. adding the new root: every `root-cert.pem` becomes old + new; intermediates unchanged;
//! 2. propagating new intermediates, signed by the new signer; `root-cert.pem` still old + new;
//! 3. deleting the old root: `root-cert.pem` holds only the new root.
//!
//! Each step's root set is a superset or a subset of the previous one, as istiod requires.
//! Before step 3 the rotation can be rolled back (intermediates from the old signer again, then
//! the new root removed).

use time::{Duration, OffsetDateTime};

use crate::bundle::Cacerts;
use crate::ca::SigningCa;
use crate::cert::Certificate;
use crate::error::{Error, Result};
use crate::rng::Entropy;
use crate::rotation::{plan, same_roots, union_roots, Current, Facts, Plan, RotationPolicy};

/// Where a rotation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Step 1: trust bundles gain the new root.
    AddingNewRoot,
    /// Step 2: intermediates are re-issued by the new signer.
    PropagatingIntermediates,
    /// Step 3: trust bundles lose the old root.
    DeletingOldRoot,
    /// Finished: every cluster trusts and chains to the new root only.
    Complete,
    /// Rolling back: intermediates from the old signer, trust bundles old + new.
    RollingBackIntermediates,
    /// Rolling back: trust bundles lose the new root.
    RollingBackRoot,
    /// Rolled back: every cluster is as before the rotation.
    RolledBack,
}

/// Which signer issues intermediates in a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signer {
    /// The signer being retired.
    Old,
    /// The incoming signer.
    New,
}

/// A rotation in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RootRotation {
    /// The root being retired.
    pub old_root: Certificate,
    /// The incoming root.
    pub new_root: Certificate,
    /// The current phase.
    pub phase: Phase,
    /// When every cluster had completed the current phase (`None` while some have not).
    pub phase_completed_at: Option<OffsetDateTime>,
    /// How long to wait after a phase completes before the next begins.
    pub dwell: Duration,
    /// Roots trusted in every phase besides the two being rotated (the policy's passive roots;
    /// not part of the persisted state).
    pub extra_roots: Vec<Certificate>,
}

/// What the state machine says after looking at the clusters. Exhaustive on purpose, as
/// [`crate::Plan`] is: the jobs match every step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Some clusters have not reached the current phase's target yet.
    Converging {
        /// Those clusters.
        pending: Vec<String>,
    },
    /// Every cluster is done; the next phase begins at this time.
    Dwelling {
        /// When.
        until: OffsetDateTime,
    },
    /// The phase advanced (the returned state has the new phase).
    Advanced {
        /// The new phase.
        to: Phase,
    },
    /// The rotation (or its rollback) is finished.
    Finished,
}

impl RootRotation {
    /// Starts rotating from `old` to `new`. Refuses a new signer that chains to the same root.
    /// (Both signers are validated bundles by construction.) `dwell` defaults in callers to the
    /// longest workload certificate lifetime, so every proxy renews under the new trust.
    pub fn start(old: &SigningCa, new: &SigningCa, dwell: Duration) -> Result<Self> {
        let (old_root, new_root) = (old.bundle().root().clone(), new.bundle().root().clone());
        if old_root == new_root || old_root.public_key_raw() == new_root.public_key_raw() {
            return Err(Error::InvalidParameter {
                field: "new signing CA".into(),
                reason: format!(
                    "it chains to the same root ({}) as the current one; a root rotation needs a new root",
                    old_root.subject()
                ),
            });
        }
        if dwell < Duration::ZERO {
            return Err(Error::InvalidParameter { field: "dwell".into(), reason: "must not be negative".into() });
        }
        Ok(RootRotation::start_from_roots(old_root, new_root, dwell))
    }

    /// Checks that an incoming signing CA can see a rotation begun at `now` through: the
    /// rotation takes at least three dwells (root added, intermediates propagated, old root
    /// removed), and the first intermediates it signs live `intermediate_ttl`. A CA that expires
    /// before then would be accepted and then stop every run once it lapsed.
    pub fn check_incoming(
        new: &SigningCa,
        now: OffsetDateTime,
        dwell: Duration,
        intermediate_ttl: Duration,
    ) -> Result<()> {
        let needed = now + dwell * 3 + intermediate_ttl;
        let expires = new.bundle().not_after();
        if expires < needed {
            return Err(Error::InvalidParameter {
                field: "new signing CA".into(),
                reason: format!(
                    "it expires at {}, before a rotation begun now could finish and the first intermediates it \
                     signs run their lifetime ({}: three dwells of {} and {} of intermediate); give a CA valid \
                     until after then",
                    crate::time_fmt::rfc3339(expires),
                    crate::time_fmt::rfc3339(needed),
                    crate::time_fmt::human_duration(dwell),
                    crate::time_fmt::human_duration(intermediate_ttl),
                ),
            });
        }
        Ok(())
    }

    /// Whether the rotation is going back to the old root (or went back): the incoming CA
    /// signs nothing any more.
    pub fn is_rolling_back(&self) -> bool {
        matches!(self.phase, Phase::RollingBackIntermediates | Phase::RollingBackRoot | Phase::RolledBack)
    }

    /// A rotation between two roots at its first phase, without checking signers (for state
    /// read back from storage; [`RootRotation::start`] is the checked way to begin one).
    pub fn start_from_roots(old_root: Certificate, new_root: Certificate, dwell: Duration) -> Self {
        RootRotation {
            old_root,
            new_root,
            phase: Phase::AddingNewRoot,
            phase_completed_at: None,
            dwell,
            extra_roots: Vec::new(),
        }
    }

    /// The same rotation with `roots` trusted in every phase as well.
    #[must_use]
    pub fn with_extra_roots(mut self, roots: Vec<Certificate>) -> Self {
        self.extra_roots = roots;
        self
    }

    /// The trust bundle (`root-cert.pem`) every cluster should hold in the current phase (plus
    /// the extra roots).
    pub fn target_roots(&self) -> Vec<Certificate> {
        let rotating = match self.phase {
            Phase::AddingNewRoot | Phase::PropagatingIntermediates | Phase::RollingBackIntermediates => {
                vec![self.old_root.clone(), self.new_root.clone()]
            }
            Phase::DeletingOldRoot | Phase::Complete => vec![self.new_root.clone()],
            Phase::RollingBackRoot | Phase::RolledBack => vec![self.old_root.clone()],
        };
        union_roots(&rotating, &self.extra_roots)
    }

    /// Which signer's intermediate every cluster should hold in the current phase. In step 1
    /// the existing intermediate (old signer) stays: only the trust bundle changes.
    pub fn target_signer(&self) -> Signer {
        match self.phase {
            Phase::AddingNewRoot | Phase::RollingBackIntermediates | Phase::RollingBackRoot | Phase::RolledBack => {
                Signer::Old
            }
            Phase::PropagatingIntermediates | Phase::DeletingOldRoot | Phase::Complete => Signer::New,
        }
    }

    /// Whether `bundle` is what the current phase wants: exactly the target roots, and a chain
    /// reaching the target signer's root.
    pub fn is_done(&self, bundle: &Cacerts) -> bool {
        let same_set = same_roots(bundle.roots(), &self.target_roots());
        let root = match self.target_signer() {
            Signer::Old => &self.old_root,
            Signer::New => &self.new_root,
        };
        same_set && bundle.root() == root
    }

    /// Looks at every cluster's current bundle (`None`: missing or invalid) and moves the
    /// rotation on when all are done and the dwell has passed. Calling it again with the same
    /// input changes nothing.
    pub fn step(&self, clusters: &[(&str, Option<&Cacerts>)], now: OffsetDateTime) -> (Self, Step) {
        let mut next = self.clone();
        if matches!(self.phase, Phase::Complete | Phase::RolledBack) {
            return (next, Step::Finished);
        }
        let pending: Vec<String> = clusters
            .iter()
            .filter(|(_, b)| !b.is_some_and(|b| self.is_done(b)))
            .map(|(n, _)| (*n).to_owned())
            .collect();
        if !pending.is_empty() {
            next.phase_completed_at = None;
            return (next, Step::Converging { pending });
        }
        let completed = *next.phase_completed_at.get_or_insert(now);
        let until = completed + self.dwell;
        if now < until {
            return (next, Step::Dwelling { until });
        }
        next.phase = match self.phase {
            Phase::AddingNewRoot => Phase::PropagatingIntermediates,
            Phase::PropagatingIntermediates => Phase::DeletingOldRoot,
            Phase::DeletingOldRoot => Phase::Complete,
            Phase::RollingBackIntermediates => Phase::RollingBackRoot,
            Phase::RollingBackRoot => Phase::RolledBack,
            Phase::Complete | Phase::RolledBack => unreachable!("handled above"),
        };
        next.phase_completed_at = None;
        let to = next.phase;
        let step =
            if matches!(to, Phase::Complete | Phase::RolledBack) { Step::Finished } else { Step::Advanced { to } };
        (next, step)
    }

    /// The roots whose CRLs the fleet's CRL set carries in the current phase: every root some
    /// cluster may still trust. Both, until the rotation (or its rollback) finishes, so a
    /// cluster one step behind still finds a current CRL for every CA of every chain it
    /// accepts; then only the root kept.
    pub fn crl_roots(&self) -> Vec<&Certificate> {
        match self.phase {
            Phase::Complete => vec![&self.new_root],
            Phase::RolledBack => vec![&self.old_root],
            _ => vec![&self.old_root, &self.new_root],
        }
    }

    /// The root the finished rotation (or rollback) took out of every trust bundle: its CRL,
    /// and the revocations it signed, leave the fleet's CRL set with it. `None` while it is
    /// under way.
    pub fn removed_root(&self) -> Option<&Certificate> {
        match self.phase {
            Phase::Complete => Some(&self.old_root),
            Phase::RolledBack => Some(&self.new_root),
            _ => None,
        }
    }

    /// Checks that the rotation can carry a CRL set: Envoy, OpenSSL and rustls-webpki pick a
    /// CA's CRL by its issuer name, so two roots of one name would each be checked against the
    /// other's CRL, and every chain of one of them refused.
    pub fn check_crl_names(&self) -> Result<()> {
        if self.old_root.subject_der() == self.new_root.subject_der() {
            return Err(Error::InvalidParameter {
                field: "new signing CA".into(),
                reason: format!(
                    "its root has the same name as the current root ({}), and the fleet publishes CRLs, which \
                     verifiers pick by their issuer's name; give the new root another name (e.g. a year in its \
                     common name)",
                    self.old_root.subject()
                ),
            });
        }
        Ok(())
    }

    /// Rolls back. Allowed until the old root starts being deleted (step 3): after that,
    /// workloads may already hold certificates only the new root verifies.
    pub fn rollback(&self) -> Result<Self> {
        let phase = match self.phase {
            Phase::AddingNewRoot => Phase::RollingBackRoot,
            Phase::PropagatingIntermediates => Phase::RollingBackIntermediates,
            // Already rolling back: nothing changes (the dwell keeps its start).
            Phase::RollingBackIntermediates | Phase::RollingBackRoot | Phase::RolledBack => return Ok(self.clone()),
            Phase::DeletingOldRoot | Phase::Complete => {
                return Err(Error::InvalidParameter {
                    field: "rollback".into(),
                    reason: "the old root is already being removed (step 3); finish the rotation, or rotate again"
                        .into(),
                })
            }
        };
        Ok(RootRotation { phase, phase_completed_at: None, ..self.clone() })
    }
}

impl RootRotation {
    /// The bundle `cluster` should hold now, or `None` if `current` already is it: a new trust
    /// bundle around the same intermediate, or a new intermediate from the phase's signer (under
    /// `policy`) inside the phase's trust bundle. An intermediate that is in the phase's shape
    /// but due for rotation by `policy` (grace period, changed parameters) is re-issued too, so
    /// a long rotation never lets one expire. `new` may be `None` in phases that sign with the
    /// old signer (a rollback after the incoming CA was withdrawn).
    #[allow(clippy::too_many_arguments)]
    pub fn converge(
        &self,
        current: Option<&Cacerts>,
        old: &SigningCa,
        new: Option<&SigningCa>,
        policy: &RotationPolicy,
        cluster: &str,
        rng: &mut dyn Entropy,
        now: OffsetDateTime,
    ) -> Result<Option<Cacerts>> {
        self.converge_with(current, old, new, policy, &Facts::NONE, cluster, rng, now)
    }

    /// [`RootRotation::converge`], given what the fleet knows (`facts`): an intermediate the
    /// fleet revoked is re-issued by the phase's signer, as the usual plan would.
    #[allow(clippy::too_many_arguments)]
    pub fn converge_with(
        &self,
        current: Option<&Cacerts>,
        old: &SigningCa,
        new: Option<&SigningCa>,
        policy: &RotationPolicy,
        facts: &Facts<'_>,
        cluster: &str,
        rng: &mut dyn Entropy,
        now: OffsetDateTime,
    ) -> Result<Option<Cacerts>> {
        match self.target(current, old, new, policy, facts, cluster, now)? {
            Converge::Keep => Ok(None),
            Converge::Retrust(b) => Ok(Some(*b)),
            Converge::Issue { signer, roots } => {
                let ca = match signer {
                    Signer::Old => old,
                    Signer::New => new.ok_or_else(incoming_missing)?,
                };
                let issued = ca.issue_intermediate(&policy.intermediate_params(cluster), rng, now)?.value;
                with_trust_bundle(&issued, roots, now).map(Some)
            }
        }
    }

    /// What `cluster` needs in the current phase, decided without issuing anything: keep its
    /// bundle, the same intermediate inside the phase's trust bundle, or a new intermediate
    /// from the phase's signer (issued by the caller, by whatever holds that signer's key, and
    /// put inside `roots` with [`with_trust_bundle`]). `new` may be `None` in phases that sign
    /// with the old signer; it is only read for its policy plan.
    #[allow(clippy::too_many_arguments)]
    pub fn target(
        &self,
        current: Option<&Cacerts>,
        old: &SigningCa,
        new: Option<&SigningCa>,
        policy: &RotationPolicy,
        facts: &Facts<'_>,
        cluster: &str,
        now: OffsetDateTime,
    ) -> Result<Converge> {
        let which = self.target_signer();
        let (signer, signer_root) = match which {
            Signer::Old => (old, &self.old_root),
            Signer::New => (new.ok_or_else(incoming_missing)?, &self.new_root),
        };
        let due =
            |b: &Cacerts| matches!(plan(policy, signer, cluster, Current::Valid(b), facts, now), Plan::Issue { .. });
        let roots = self.target_roots();
        match current {
            Some(b) if self.is_done(b) && !due(b) => Ok(Converge::Keep),
            // The intermediate is already the right signer's: only the trust bundle changes.
            Some(b) if b.root() == signer_root && !due(b) => {
                with_trust_bundle(b, roots, now).map(|b| Converge::Retrust(Box::new(b)))
            }
            _ => Ok(Converge::Issue { signer: which, roots }),
        }
    }
}

/// What a cluster needs in a phase of a root rotation ([`RootRotation::target`]). Exhaustive
/// on purpose, as [`Step`] is: the jobs match every case.
#[derive(Clone, Debug)]
pub enum Converge {
    /// Its bundle is what the phase wants.
    Keep,
    /// The same intermediate, inside the phase's trust bundle.
    Retrust(Box<Cacerts>),
    /// A new intermediate from `signer`, inside `roots`.
    Issue {
        /// Which signer issues it.
        signer: Signer,
        /// The phase's trust bundle.
        roots: Vec<Certificate>,
    },
}

fn incoming_missing() -> Error {
    Error::InvalidParameter {
        field: "new signing CA".into(),
        reason: "this phase issues from the incoming CA, which is not available".into(),
    }
}

/// `bundle` with its trust bundle replaced by `roots` (step 1 and 3 change only `root-cert.pem`),
/// validated like any bundle: its chain must still reach one of `roots`.
pub fn with_trust_bundle(bundle: &Cacerts, roots: Vec<Certificate>, now: OffsetDateTime) -> Result<Cacerts> {
    Cacerts::from_parts(bundle.ca_key().clone(), bundle.path().to_vec(), roots, now)
}
