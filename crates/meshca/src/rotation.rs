//! The rotation plan: a pure function of (policy, signer, current bundle, facts, now), where the
//! facts are what the fleet knows beyond the bundle (its revocations, whether CRLs are in use, a
//! rotation asked for).

use core::fmt;

use time::{Duration, OffsetDateTime};

use crate::bundle::Cacerts;
use crate::ca::{IntermediateParams, SigningCa};
use crate::cert::Certificate;
use crate::crl::Revoked;
use crate::error::{Error, Result};
use crate::key::KeyAlgorithm;
use crate::time_fmt::rfc3339;

/// How per-cluster intermediates are issued and when they are rotated (RootTrustPolicy's
/// `intermediateCertOptions`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RotationPolicy {
    /// Lifetime of an intermediate (`ttlDays`).
    pub ttl: Duration,
    /// Rotate when less than `lifetime * grace_ratio` remains (`secretRotationGracePeriodRatio`,
    /// in (0, 1)).
    pub grace_ratio: f64,
    /// Key algorithm of new intermediates.
    pub key: KeyAlgorithm,
    /// Subject O of new intermediates (`orgName`).
    pub organization: String,
    /// pathLenConstraint of new intermediates.
    pub pathlen: u8,
    /// Roots every cluster trusts besides the signer's, never used to sign
    /// (`passiveCertificateAuthorities`): how a new root is announced before it signs, and how
    /// an old one stays trusted after it stopped signing.
    pub passive_roots: Vec<Certificate>,
}

/// The shortest grace period a policy may give: rotation starts at least this long before expiry.
pub const MIN_GRACE: Duration = Duration::minutes(1);

impl RotationPolicy {
    /// A policy with `ttl` and `grace_ratio`, P-256 keys, O=Istio, pathlen 0. Refuses a
    /// non-positive ttl and a ratio outside (0, 1).
    pub fn new(ttl: Duration, grace_ratio: f64) -> Result<Self> {
        let p = RotationPolicy {
            ttl,
            grace_ratio,
            key: KeyAlgorithm::EcdsaP256,
            organization: "Istio".into(),
            pathlen: 0,
            passive_roots: Vec::new(),
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks the bounds (for policies built field by field).
    pub fn validate(&self) -> Result<()> {
        if self.ttl <= Duration::ZERO || self.ttl > crate::ca::MAX_CA_TTL {
            return Err(Error::InvalidParameter {
                field: "ttlDays".into(),
                reason: "must be between 1 and 36500 days".into(),
            });
        }
        crate::bounds::grace_ratio(self.grace_ratio).map_err(|e| Error::InvalidParameter {
            field: "secretRotationGracePeriodRatio".into(),
            reason: e.to_string(),
        })?;
        // A ratio so small that rotation starts less than a minute before expiry leaves no time to
        // distribute the new intermediate: istiod would run on an expired CA.
        let grace = self.ttl.as_seconds_f64() * self.grace_ratio;
        if grace < MIN_GRACE.as_seconds_f64() {
            return Err(Error::InvalidParameter {
                field: "secretRotationGracePeriodRatio".into(),
                reason: format!(
                    "{} of a {} lifetime starts rotation {:.1} s before expiry; meshca needs at least a minute \
                     (a ratio of at least {:.2e} for this ttl)",
                    self.grace_ratio,
                    crate::time_fmt::human_duration(self.ttl),
                    grace,
                    MIN_GRACE.as_seconds_f64() / self.ttl.as_seconds_f64()
                ),
            });
        }
        Ok(())
    }

    /// The intermediate parameters this policy issues for `cluster`.
    pub fn intermediate_params(&self, cluster: &str) -> IntermediateParams {
        let mut p = IntermediateParams::new(cluster);
        p.ttl = self.ttl;
        p.key = self.key;
        p.organization = self.organization.clone();
        p.pathlen = self.pathlen;
        p
    }

    /// The trust bundle (`root-cert.pem`) every cluster should hold under `signer`: the
    /// signer's roots, then the passive roots it does not already have.
    pub fn trust_bundle(&self, signer: &SigningCa) -> Vec<Certificate> {
        union_roots(signer.bundle().roots(), &self.passive_roots)
    }

    /// When a certificate valid from `not_before` to `not_after` enters its grace period.
    pub fn rotate_at(&self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> OffsetDateTime {
        let lifetime = not_after - not_before;
        not_after - lifetime * self.grace_ratio
    }
}

/// What a cluster has now.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Current<'a> {
    /// No bundle.
    Missing,
    /// A bundle that failed validation, with the reason.
    Invalid(&'a Error),
    /// A valid bundle.
    Valid(&'a Cacerts),
}

impl<'a> Current<'a> {
    /// What a cluster has, from reading its bundle: nothing, or the result of parsing it.
    pub fn of(parsed: Option<&'a Result<Cacerts>>) -> Self {
        match parsed {
            None => Current::Missing,
            Some(Ok(b)) => Current::Valid(b),
            Some(Err(e)) => Current::Invalid(e),
        }
    }
}

/// Why a new intermediate is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssueReason {
    /// The cluster has no bundle.
    Missing,
    /// The bundle is not valid yet.
    NotYetValid(String),
    /// The bundle is invalid (expired, broken, ...).
    Invalid(String),
    /// Less than `lifetime * ratio` remains.
    GracePeriod {
        /// When the grace period began.
        rotate_at: OffsetDateTime,
        /// When the bundle expires.
        not_after: OffsetDateTime,
    },
    /// The bundle does not trust the signer's root.
    RootChanged {
        /// The root the bundle trusts now.
        current: String,
        /// The signer's root.
        signer: String,
    },
    /// The bundle's CA was not issued by the signing CA.
    SignerChanged {
        /// Who issued the bundle's CA.
        current_issuer: String,
        /// The signing CA.
        signer: String,
    },
    /// Someone asked for a new intermediate now, whatever the plan said (`meshca rotate`): the
    /// old one is not revoked, and what it signed stays valid until it expires.
    Requested,
    /// The cluster's intermediate is on the fleet's revocation list (`meshca revoke`).
    Revoked,
    /// The bundle was issued with other parameters than the policy now asks for.
    ParametersChanged {
        /// Which parameter.
        field: &'static str,
        /// Its value in the bundle.
        current: String,
        /// The policy's value.
        wanted: String,
    },
}

impl IssueReason {
    /// A short stable name for metrics and machine-readable reports: `missing`,
    /// `not-yet-valid`, `invalid`, `grace-period`, `root-changed`, `signer-changed`,
    /// `requested`, `revoked`, `parameters-changed`.
    pub fn label(&self) -> &'static str {
        match self {
            IssueReason::Missing => "missing",
            IssueReason::NotYetValid(_) => "not-yet-valid",
            IssueReason::Invalid(_) => "invalid",
            IssueReason::GracePeriod { .. } => "grace-period",
            IssueReason::RootChanged { .. } => "root-changed",
            IssueReason::SignerChanged { .. } => "signer-changed",
            IssueReason::Requested => "requested",
            IssueReason::Revoked => "revoked",
            IssueReason::ParametersChanged { .. } => "parameters-changed",
        }
    }
}

impl fmt::Display for IssueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IssueReason::Missing => f.write_str("no cacerts bundle yet"),
            IssueReason::NotYetValid(e) => write!(f, "bundle not yet valid: {e}"),
            IssueReason::Invalid(e) => write!(f, "bundle invalid: {e}"),
            IssueReason::GracePeriod { rotate_at, not_after } => {
                write!(f, "inside the grace period since {} (expires {})", rfc3339(*rotate_at), rfc3339(*not_after))
            }
            IssueReason::RootChanged { current, signer } => {
                write!(f, "root changed: bundle trusts {current}, signer's root is {signer}")
            }
            IssueReason::SignerChanged { current_issuer, signer } => {
                write!(f, "signer changed: bundle CA issued by {current_issuer}, signer is {signer}")
            }
            IssueReason::ParametersChanged { field, current, wanted } => {
                write!(f, "policy changed: {field} is {current}, policy wants {wanted}")
            }
            IssueReason::Requested => f.write_str("rotation asked for now (the old intermediate is not revoked)"),
            IssueReason::Revoked => f.write_str("the intermediate is revoked: a new key and certificate replace it"),
        }
    }
}

/// The plan for one cluster. Exhaustive on purpose: every job matches it, and a new plan must
/// be a compile error in each of them rather than fall into a catch-all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The bundle is fine until `recheck_at`, when it enters its grace period.
    Keep {
        /// When to look again.
        recheck_at: OffsetDateTime,
    },
    /// Issue a new intermediate.
    Issue {
        /// Why.
        reason: IssueReason,
    },
    /// The intermediate is fine but the trust bundle is not the policy's (a passive root was
    /// added or removed): rewrite `root-cert.pem` only, keeping the intermediate and its key.
    UpdateTrust {
        /// The roots `root-cert.pem` should hold.
        roots: Vec<Certificate>,
        /// When the intermediate enters its grace period.
        recheck_at: OffsetDateTime,
    },
}

impl Plan {
    /// The action's name, as reports and the bindings print it: `keep`, `issue` or
    /// `update-trust`.
    pub fn action(&self) -> &'static str {
        match self {
            Plan::Keep { .. } => "keep",
            Plan::Issue { .. } => "issue",
            Plan::UpdateTrust { .. } => "update-trust",
        }
    }

    /// Why, in words.
    pub fn reason(&self) -> String {
        match self {
            Plan::Keep { .. } => "valid, outside the grace period".into(),
            Plan::Issue { reason } => reason.to_string(),
            Plan::UpdateTrust { .. } => "the trust bundle is not the policy's (a passive root came or went)".into(),
        }
    }

    /// When to look at the cluster again (none for an issue: it is acted on now).
    pub fn recheck_at(&self) -> Option<OffsetDateTime> {
        match self {
            Plan::Keep { recheck_at } | Plan::UpdateTrust { recheck_at, .. } => Some(*recheck_at),
            Plan::Issue { .. } => None,
        }
    }

    /// The roots `root-cert.pem` should hold, for a trust update (none otherwise).
    pub fn roots(&self) -> &[Certificate] {
        match self {
            Plan::UpdateTrust { roots, .. } => roots,
            Plan::Keep { .. } | Plan::Issue { .. } => &[],
        }
    }
}

/// What the fleet knows about a cluster beyond its bundle, for [`plan`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Facts<'a> {
    /// The intermediates the fleet revoked (the entries of the signer's CRL): a bundle whose
    /// CA is one of them is replaced.
    pub revoked: &'a [Revoked],
    /// The fleet publishes CRLs: every intermediate needs one of its own, so one whose keyUsage
    /// lacks cRLSign (made elsewhere, e.g. by Istio's tools/certs) is replaced.
    pub crls_in_use: bool,
    /// The operator asked to re-issue this cluster now (a forced rotation, without revoking).
    pub rotate_now: bool,
}

impl<'a> Facts<'a> {
    /// No revocations, no CRLs, nothing asked for: the plan follows the policy alone.
    pub const NONE: Facts<'static> = Facts { revoked: &[], crls_in_use: false, rotate_now: false };

    /// Facts with `revoked` entries, CRLs in use or not, a rotation asked for or not.
    pub fn new(revoked: &'a [Revoked], crls_in_use: bool, rotate_now: bool) -> Self {
        Facts { revoked, crls_in_use, rotate_now }
    }

    fn revokes(&self, ca: &Certificate) -> bool {
        let serial = crate::canonical_serial(ca.serial_bytes());
        self.revoked.iter().any(|r| crate::canonical_serial(&r.serial) == serial)
    }
}

/// Decides whether `cluster`'s bundle is kept or re-issued under `policy` by `signer` at `now`,
/// given what the fleet knows (`facts`). A bundle the policy would keep is still re-issued when
/// its intermediate is revoked, when CRLs are in use and it may not sign one, or when a
/// rotation was asked for, in that order.
pub fn plan(
    policy: &RotationPolicy,
    signer: &SigningCa,
    cluster: &str,
    current: Current<'_>,
    facts: &Facts<'_>,
    now: OffsetDateTime,
) -> Plan {
    let planned = plan_by_policy(policy, signer, cluster, current, now);
    let Current::Valid(bundle) = current else { return planned };
    match planned {
        Plan::Keep { .. } | Plan::UpdateTrust { .. } => {}
        Plan::Issue { .. } => return planned,
    }
    // Past the policy's checks the bundle's CA is the signer's (SignerChanged otherwise), so a
    // serial on the signer's CRL is this CA's.
    let ca = bundle.ca_cert();
    if facts.revokes(ca) {
        return Plan::Issue { reason: IssueReason::Revoked };
    }
    if facts.crls_in_use && ca.allows_crl_sign() == Some(false) {
        return Plan::Issue {
            reason: IssueReason::ParametersChanged {
                field: "keyUsage",
                current: "no cRLSign".into(),
                wanted: "cRLSign (the fleet publishes CRLs)".into(),
            },
        };
    }
    if facts.rotate_now {
        return Plan::Issue { reason: IssueReason::Requested };
    }
    planned
}

/// The policy's own rules: validity, root, signer, parameters, grace period, trust bundle.
fn plan_by_policy(
    policy: &RotationPolicy,
    signer: &SigningCa,
    cluster: &str,
    current: Current<'_>,
    now: OffsetDateTime,
) -> Plan {
    let issue = |reason| Plan::Issue { reason };
    let bundle = match current {
        Current::Missing => return issue(IssueReason::Missing),
        Current::Invalid(e @ Error::NotYetValid { .. }) => return issue(IssueReason::NotYetValid(e.to_string())),
        Current::Invalid(e) => return issue(IssueReason::Invalid(e.to_string())),
        Current::Valid(b) => b,
    };
    if now < bundle.ca_cert().not_before() {
        return issue(IssueReason::NotYetValid(format!("notBefore {}", rfc3339(bundle.ca_cert().not_before()))));
    }
    let signer_root = signer.bundle().root();
    if !bundle.trusts_root(signer_root) {
        return issue(IssueReason::RootChanged { current: bundle.root().subject(), signer: signer_root.subject() });
    }
    let signer_ca = signer.bundle().ca_cert();
    let ca = bundle.ca_cert();
    if ca.issuer_der() != signer_ca.subject_der() || ca.verify_signed_by(signer_ca).is_err() {
        return issue(IssueReason::SignerChanged { current_issuer: ca.issuer(), signer: signer_ca.subject() });
    }
    if let Some(reason) = parameters_changed(policy, cluster, bundle) {
        return issue(reason);
    }
    let not_after = bundle.not_after();
    let rotate_at = policy.rotate_at(ca.not_before(), not_after);
    if now >= rotate_at {
        return issue(IssueReason::GracePeriod { rotate_at, not_after });
    }
    // The trust bundle must be the signer's roots plus the passive ones, as a set (compared in
    // place: this runs for every kept cluster on every pass).
    let (signer_roots, passive) = (signer.bundle().roots(), &policy.passive_roots);
    let wanted = |r: &Certificate| signer_roots.contains(r) || passive.contains(r);
    let complete = signer_roots.iter().chain(passive).all(|r| bundle.trusts_root(r));
    if !complete || !bundle.roots().iter().all(wanted) {
        return Plan::UpdateTrust { roots: policy.trust_bundle(signer), recheck_at: rotate_at };
    }
    Plan::Keep { recheck_at: rotate_at }
}

/// `first`, then each of `more` not already in it (a trust bundle is a set; order is kept so
/// files come out stable).
pub fn union_roots(first: &[Certificate], more: &[Certificate]) -> Vec<Certificate> {
    let mut all = first.to_vec();
    for r in more {
        if !all.contains(r) {
            all.push(r.clone());
        }
    }
    all
}

/// Whether two trust bundles hold the same set of roots.
pub fn same_roots(a: &[Certificate], b: &[Certificate]) -> bool {
    a.iter().all(|r| b.contains(r)) && b.iter().all(|r| a.contains(r))
}

fn parameters_changed(policy: &RotationPolicy, cluster: &str, bundle: &Cacerts) -> Option<IssueReason> {
    let ca = bundle.ca_cert();
    let changed =
        |field, current: String, wanted: String| Some(IssueReason::ParametersChanged { field, current, wanted });
    let key_type = ca.key_type();
    if key_type != Some(policy.key.key_type()) {
        let current = key_type.map_or_else(|| "unsupported".into(), |k| k.to_string());
        return changed("key algorithm", current, policy.key.key_type().to_string());
    }
    if ca.organization().as_deref() != Some(policy.organization.as_str()) {
        return changed("organization", ca.organization().unwrap_or_default(), policy.organization.clone());
    }
    if ca.locality().as_deref() != Some(cluster) {
        return changed("cluster (subject L)", ca.locality().unwrap_or_default(), cluster.to_owned());
    }
    if ca.ca_pathlen() != Some(Some(policy.pathlen)) {
        let current = match ca.ca_pathlen() {
            Some(Some(p)) => p.to_string(),
            _ => "none".into(),
        };
        return changed("pathlen", current, policy.pathlen.to_string());
    }
    // A lifetime longer than the policy allows means ttlDays was lowered (gloo-mesh#1154: changed
    // parameters did not re-issue). Shorter is fine: clamping to the signer shortens it.
    let lifetime = ca.not_after() - ca.not_before();
    if lifetime > policy.ttl + crate::profile::BACKDATE + Duration::minutes(1) {
        return changed("ttl", crate::time_fmt::human_duration(lifetime), crate::time_fmt::human_duration(policy.ttl));
    }
    None
}
