//! Why a job refused to act, one enum per job (re-exported by each job as `Refusal`). Kept apart
//! from the jobs so that the error type, which carries them, depends on no job.

use crate::phase::PhaseName;

/// The most entries the revocation list may hold (a 50 MB list would be refused by the store's
/// size bound first; this keeps the CRL every proxy loads small).
pub const MAX_REVOKED: usize = 10_000;

/// Why a root rotation command or step was refused. Each says what to do instead.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootRotationRefusal {
    /// A rotation is already under way.
    #[error("a root rotation is already under way (phase {phase}); finish or roll it back first")]
    AlreadyUnderWay {
        /// Its phase.
        phase: PhaseName,
    },
    /// The policy's `rootRotation` drives rotation for this policy.
    #[error(
        "the policy's spec.config.rootRotation drives root rotation for this policy; edit it instead of starting one \
         by hand"
    )]
    DrivenByPolicy,
    /// No rotation is under way.
    #[error("no root rotation is under way")]
    NoRotation,
    /// `rootRotation` was removed once the old root is being deleted.
    #[error(
        "spec.config.rootRotation was removed, but the rotation to {new_root} is already deleting the old root \
         (step 3) and cannot be rolled back; put rootRotation back, or set mgmtServerCa to {new_signer}"
    )]
    CannotRollBack {
        /// Subject of the incoming root.
        new_root: String,
        /// The incoming signer's Secret.
        new_signer: String,
    },
    /// `mgmtServerCa` still names the CA of the root a completed rotation removed.
    #[error(
        "mgmtServerCa ({signer}) chains to {old_root}, the root the completed rotation removed from every cluster; \
         set mgmtServerCa to {new_signer} (the new root), or put rootRotation back"
    )]
    SignerOnRemovedRoot {
        /// The policy's signer Secret.
        signer: String,
        /// Subject of the removed root.
        old_root: String,
        /// The incoming signer's Secret.
        new_signer: String,
    },
    /// `rootRotation` names another CA than the rotation under way.
    #[error(
        "spec.config.rootRotation names {named} (root {named_root}), but the rotation under way goes to \
         {under_way_root}; let it finish or roll it back before naming another CA"
    )]
    OtherRotationUnderWay {
        /// The Secret the policy names.
        named: String,
        /// Its root's subject.
        named_root: String,
        /// The root the rotation under way goes to.
        under_way_root: String,
    },
    /// The signer changed to another root while the rotation still issues from the old one.
    #[error(
        "the root rotation ({old_root} -> {new_root}) still issues from the old CA in phase {phase}, but \
         mgmtServerCa ({location}) now chains to {now_root}; put the old CA back until the rotation completes, or \
         roll it back"
    )]
    SignerChanged {
        /// The root being retired.
        old_root: String,
        /// The incoming root.
        new_root: String,
        /// The phase.
        phase: PhaseName,
        /// The signer Secret.
        location: String,
        /// The root the signer chains to now.
        now_root: String,
    },
    /// The incoming CA now chains to another root than the rotation started with.
    #[error(
        "the incoming CA {location} now chains to {now_root}, not to {new_root} the rotation was started with; put \
         that CA back, or roll the rotation back and start another"
    )]
    IncomingChanged {
        /// The incoming signer Secret.
        location: String,
        /// The root it chains to now.
        now_root: String,
        /// The root the rotation goes to.
        new_root: String,
    },
    /// The incoming CA's Secret is gone.
    #[error("the incoming signing CA {location} disappeared")]
    IncomingDisappeared {
        /// Where it was.
        location: String,
    },
    /// A cluster to forget still holds a bundle.
    #[error(
        "{cluster} still holds a cacerts ({location}), so every run would count it again; remove it from the store \
         first"
    )]
    ClusterStillPresent {
        /// The cluster.
        cluster: String,
        /// Its cacerts.
        location: String,
    },
    /// `rotate-root start` on a policy whose signing key is in a token: on completion the
    /// incoming CA would replace the policy's signer Secret, which names a token key.
    #[error(
        "the policy's signing key is in a PKCS#11 token (spec.config.mgmtServerCa.pkcs11), and a rotation \
         started by hand ends by writing the incoming CA over the policy's signer Secret; name the incoming CA \
         in spec.config.rootRotation.newMgmtServerCa instead (meshca then signs with it until mgmtServerCa is \
         pointed at it)"
    )]
    SignerKeyInToken,
    /// `rotate-root start` on a policy whose PKI signs (`mgmtServerCa.vault`): the rotation's
    /// incoming CA would replace what the PKI holds.
    #[error(
        "the policy's signing CA is held by the PKI at {provider} (spec.config.mgmtServerCa.vault), which a rotation \
         started by hand cannot hand over to; name the incoming CA in spec.config.rootRotation.newMgmtServerCa \
         (a secretRef, with its own vault or pkcs11 if the PKI or a token holds it) and meshca runs the same three \
         steps"
    )]
    SignerInProvider {
        /// The PKI's address.
        provider: String,
    },
}

/// Why a revocation command was refused. Each says what to do instead.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationRefusal {
    /// `crl rebuild` with a signing CA that is not a root: the list is rebuilt from a root's
    /// CRL.
    #[error(
        "the signing CA ({signer}) is not a root: the list is rebuilt from the newest CRL a root signed, and this \
         policy's CRLs come from {signer}; restore the list's Secret from a backup instead"
    )]
    SignerNotRoot {
        /// The signing CA's subject.
        signer: String,
    },
    /// The CA named is the signing CA itself (a management intermediate): its CRL is the
    /// upstream PKI's to sign.
    #[error(
        "serial {serial} is the signing CA {signer} itself: the CRL that revokes it is the PKI's above it, not \
         meshca's. Revoke it there ({how}), then let meshca issue a new management intermediate (remove its \
         Secret and reconcile); every cluster is re-issued under the new one"
    )]
    UpstreamRevokes {
        /// The signing CA.
        signer: String,
        /// Its serial.
        serial: String,
        /// The command that revokes it at the PKI.
        how: String,
    },
    /// Taking back a revocation the PKI made: a PKI's revocations are final.
    #[error(
        "{cluster}'s CA (serial {serial}) was revoked at the PKI that signed it ({provider}), and a PKI's revocations \
         cannot be taken back: re-issue the cluster instead (meshca rotate)"
    )]
    RevokedAtPki {
        /// The cluster.
        cluster: String,
        /// The serial.
        serial: String,
        /// The PKI.
        provider: String,
    },
    /// `crl rebuild` while a root rotation is under way: the list would be rebuilt from one
    /// root's CRL, dropping the other's entries.
    #[error(
        "a root rotation is under way, and the list holds the revocations of both roots; rebuilding it from one \
         root's CRL would drop the other's: finish or roll the rotation back first"
    )]
    RebuildDuringRootRotation,
    /// No signing CA could be read to revoke under.
    #[error("no signing CA could be read: revocation needs the CA whose CRL lists the intermediate")]
    NoSigner,
    /// The cluster is not one of the run's clusters.
    #[error("{cluster} is not one of this policy's clusters ({known})")]
    UnknownCluster {
        /// The cluster asked for.
        cluster: String,
        /// The clusters known.
        known: String,
    },
    /// The cluster has no bundle to revoke.
    #[error("{cluster} has no cacerts at {location} to revoke; nothing it holds could be trusted")]
    NoBundle {
        /// The cluster.
        cluster: String,
        /// Its cacerts.
        location: String,
    },
    /// The cluster's CA was not issued by this policy's signing CA.
    #[error(
        "{cluster}'s ca-cert.pem is issued by {issuer}, not by this policy's signing CA {signer}: its CRL is not ours \
         to sign, so revoking it here would make no one refuse it"
    )]
    NotIssuedBySigner {
        /// The cluster.
        cluster: String,
        /// Its CA's issuer.
        issuer: String,
        /// The signing CA.
        signer: String,
    },
    /// The cluster's current CA is on the list already (a revocation whose re-issue failed):
    /// a plain reconcile replaces it.
    #[error("{cluster}'s current CA (serial {serial}) is revoked already; reconcile to replace it")]
    AlreadyRevoked {
        /// The cluster.
        cluster: String,
        /// The serial.
        serial: String,
    },
    /// Nothing on the list matches.
    #[error("no revoked CA matches {what}; the list holds {held}")]
    NotRevoked {
        /// What was asked for.
        what: String,
        /// What the list holds.
        held: String,
    },
    /// The cluster's current CA is the replacement its last revocation issued.
    #[error(
        "{cluster} was revoked already, and its current CA (serial {serial}) is the replacement that revocation \
         issued; to revoke that one too, name its serial"
    )]
    ReplacementOfRevoked {
        /// The cluster.
        cluster: String,
        /// The replacement's serial.
        serial: String,
    },
    /// A serial that is not hex.
    #[error("the serial is not hex (as `crl show` and `inspect` print serials); value not shown")]
    BadSerial,
    /// `crl rebuild` found no CRL signed by the root anywhere.
    #[error(
        "no CRL signed by this policy's root ({root}) was found in {searched}: there is nothing to rebuild the list \
         from. If no revocation was ever made, remove {location}; otherwise restore it from a backup"
    )]
    NothingToRebuild {
        /// The root.
        root: String,
        /// Where meshca looked.
        searched: String,
        /// The list's Secret.
        location: String,
    },
    /// The list is full.
    #[error("the revocation list holds {MAX_REVOKED} entries already; clear entries whose CAs have expired")]
    Full,
}
