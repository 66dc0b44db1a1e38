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
    /// How to reach a signing key kept in a PKCS#11 token (`mgmtServerCa.pkcs11`).
    pub token: TokenAccess,
    /// How to log in to the PKI that signs (`mgmtServerCa.vault`), beyond what the policy says.
    pub provider: ProviderAccess,
    /// What the run is asked to do beyond converging.
    pub intent: Intent,
    /// CRLs of the CAs above the signing CA that the operator gives (PEM, the CLI's
    /// `--upstream-crl FILE`), taken before the policy's `mgmtServerCa.upstreamCrlSecretRef`.
    pub upstream_crls: Option<Vec<u8>>,
    /// Sign with this Secret instead of the policy's `mgmtServerCa`: set by the run itself
    /// (`reconcile::run`) after a policy-driven root rotation completed.
    pub(crate) signer_override: Option<SecretRef>,
}

/// What a run is asked to do beyond converging every cluster to the policy: each job is the
/// one pass (`reconcile::run`) with an intent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Intent {
    /// Issue, rotate or keep each cluster as the plan says.
    #[default]
    Converge,
    /// Re-issue these clusters now, whatever the plan says (`meshca rotate`).
    RotateNow(RotateNow),
    /// Publish this revocation list instead of the stored one (`revoke`, `unrevoke`, `crl
    /// rebuild` and their dry runs): the run saves it (unless a dry run) before it writes any
    /// bundle.
    Revise(crate::revocation_list::RevocationList),
}

impl Intent {
    /// The clusters a run re-issues now.
    pub(crate) fn rotate_now(&self) -> &RotateNow {
        const NONE: RotateNow = RotateNow::None;
        match self {
            Intent::RotateNow(r) => r,
            Intent::Converge | Intent::Revise(_) => &NONE,
        }
    }

    /// The revocation list the run publishes instead of the stored one.
    pub(crate) fn revocations(&self) -> Option<&crate::revocation_list::RevocationList> {
        match self {
            Intent::Revise(list) => Some(list),
            Intent::Converge | Intent::RotateNow(_) => None,
        }
    }
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

/// What meshca's operator gives it to log in to the PKI that signs.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ProviderAccess {
    /// A token (the CLI's `VAULT_TOKEN`, `BAO_TOKEN` or `--vault-token-file`), used when the
    /// policy names no `auth`.
    pub token: Option<crate::vault::VaultToken>,
    /// Where the service account token is, for `auth.kubernetes` (default
    /// [`SERVICE_ACCOUNT_TOKEN`]).
    pub service_account_token: Option<std::path::PathBuf>,
    /// How long one call may take (default [`crate::vault::CALL_TIMEOUT`]).
    pub call_timeout: Option<std::time::Duration>,
}

/// Where Kubernetes mounts a pod's service account token.
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

impl ProviderAccess {
    /// A token given by the operator.
    pub fn with_token(token: Option<crate::vault::VaultToken>) -> Self {
        ProviderAccess { token, service_account_token: None, call_timeout: None }
    }
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
            token: TokenAccess::default(),
            provider: ProviderAccess::default(),
            intent: Intent::Converge,
            upstream_crls: None,
            signer_override: None,
        }
    }

    /// A dry run (plan only, write nothing), or not.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// The management cluster (the signing CA's Secret is there).
    pub fn mgmt(mut self, cluster: &str) -> Self {
        self.mgmt_cluster = cluster.to_owned();
        self
    }

    /// How a token-held signing key is reached.
    pub fn token(mut self, token: TokenAccess) -> Self {
        self.token = token;
        self
    }

    /// How to log in to the PKI that signs, beyond what the policy says.
    pub fn provider(mut self, provider: ProviderAccess) -> Self {
        self.provider = provider;
        self
    }

    /// The policy object's generation, recorded on what is written.
    pub fn generation(mut self, generation: Option<i64>) -> Self {
        self.policy_generation = generation;
        self
    }

    /// What the run is asked to do beyond converging.
    pub fn intent(mut self, intent: Intent) -> Self {
        self.intent = intent;
        self
    }

    /// The upstream CRLs the operator gives (PEM).
    pub fn upstream_crls(mut self, pem: Option<Vec<u8>>) -> Self {
        self.upstream_crls = pem;
        self
    }

    pub(crate) fn writer<'a>(&'a self, store: &'a dyn Store, policy: &'a Policy) -> Writer<'a> {
        Writer::new(store, policy, self.policy_generation, self.now, self.dry_run)
            .log_in(&self.mgmt_cluster, &self.token)
    }
}
