//! The run context every job is handed: when it runs, whether it writes, which clusters, how to
//! reach a token-held key, and what the operator asked for beyond converging.

use time::OffsetDateTime;

use crate::policy::Policy;
use crate::store::{SecretRef, Store};
use crate::writer::Writer;

/// How a run behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// The time to plan and issue at (the clock, or a rehearsal time).
    pub now: OffsetDateTime,
    /// Plan only; write nothing.
    pub dry_run: bool,
    /// The cluster holding the signing CA Secret.
    pub mgmt_cluster: String,
    /// Workload clusters.
    pub clusters: Vec<String>,
    /// The policy object's generation (Kubernetes), recorded on what is written.
    pub policy_generation: Option<i64>,
    /// Sign with this Secret instead of the policy's `mgmtServerCa` (set by [`run`] after a
    /// policy-driven root rotation completed).
    pub signer_override: Option<SecretRef>,
    /// How to reach a signing key kept in a PKCS#11 token (`mgmtServerCa.pkcs11`).
    pub token: TokenAccess,
    /// Clusters to re-issue now, whatever the plan says (`meshca rotate`).
    pub rotate_now: RotateNow,
    /// Use this revocation list instead of the stored one (`revoke`, `unrevoke` and their dry
    /// runs): the run saves it (unless a dry run) before it writes any bundle.
    pub revocations: Option<crate::revocation_list::RevocationList>,
}

/// Which clusters a run re-issues now even where the plan would keep them (the gloo-mesh#809
/// ask: a forced rotation, without revoking the old intermediate).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotateNow {
    /// None: follow the plan.
    #[default]
    None,
    /// Every cluster of the run.
    All,
    /// These clusters.
    Only(std::collections::BTreeSet<String>),
}

impl RotateNow {
    pub(crate) fn wants(&self, cluster: &str) -> bool {
        match self {
            RotateNow::None => false,
            RotateNow::All => true,
            RotateNow::Only(set) => set.contains(cluster),
        }
    }
}

/// What the operator gives for a policy whose signing key is in a token.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct TokenAccess {
    /// The PKCS#11 module meshca may load (a policy's `module` must name this one).
    pub module: Option<std::path::PathBuf>,
    /// The PIN, overriding the policy's `pinSecretRef`.
    pub pin: Option<crate::pkcs11::Pin>,
}

impl TokenAccess {
    /// Access through `module`, the PIN from the policy's Secret unless `pin` is given.
    pub fn new(module: Option<std::path::PathBuf>, pin: Option<crate::pkcs11::Pin>) -> Self {
        TokenAccess { module, pin }
    }
}

impl Options {
    /// Options for `clusters` at `now`, management cluster `mgmt`.
    pub fn new(now: OffsetDateTime, clusters: Vec<String>) -> Self {
        Options {
            now,
            dry_run: false,
            mgmt_cluster: "mgmt".into(),
            clusters,
            policy_generation: None,
            signer_override: None,
            token: TokenAccess::default(),
            rotate_now: RotateNow::None,
            revocations: None,
        }
    }

    pub(crate) fn writer<'a>(&self, store: &'a dyn Store, policy: &'a Policy) -> Writer<'a> {
        Writer::new(store, policy, self.policy_generation, self.now, self.dry_run)
    }
}
