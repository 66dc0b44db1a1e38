//! Revoking a cluster CA: the fleet's revocation list, stored beside the policy, and the CRL set
//! (`ca-crl.pem`) every cluster's bundle carries once a revocation was ever made.
//!
//! The set holds what Envoy needs for every chain of the fleet to verify (docs/istiod-crl.md):
//! one CRL signed by the root, listing the revoked cluster intermediates, re-signed well before
//! its nextUpdate; and one entry-less CRL per cluster intermediate whose workloads may still be
//! in use, signed with that intermediate's key when meshca first sees it (or issues it), valid
//! until the intermediate expires. A revoked intermediate keeps its own CRL in the set, so taking
//! the revocation back (`unrevoke`) makes what it signed verify again.
//!
//! Once the set exists it is never withdrawn: istiod keeps the last non-empty CRL it read
//! (istio#61073), so taking every revocation back publishes a set with no entries instead.
//!
//! The list and the set live in one Secret, `<policy>-revocations` in the policy's namespace of
//! the management cluster (`revocations.json` and `ca-crl.pem`), written through the one
//! [`Writer`] before any bundle that depends on it.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use meshca::{Cacerts, Certificate, Crl, CrlProfile, CrlSet, Files, RevocationReason, Revoked, SigningCa, CA_CRL};

use crate::error::Error;
use crate::policy::Policy;
use crate::store::{SecretRef, Store};
use crate::writer::Writer;

/// The revocation list's file in its Secret.
pub const REVOCATIONS_FILE: &str = "revocations.json";

/// How long a root CRL is valid (its nextUpdate minus its thisUpdate): the core's profile.
pub const ROOT_CRL_VALIDITY: Duration = meshca::CrlProfile::DEFAULT.root_validity;

/// A root CRL is re-signed once less than this is left before its nextUpdate, so every
/// cluster holds a fresh one days before the old one goes stale: the core's profile.
pub const ROOT_CRL_REFRESH: Duration = meshca::CrlProfile::DEFAULT.root_refresh;

/// The most entries the list may hold (a 50 MB list would be refused by the store's size bound
/// first; this keeps the CRL every proxy loads small).
pub const MAX_REVOKED: usize = 10_000;

/// Where a policy's revocation list and CRL set live.
pub fn list_secret(policy: &Policy, mgmt: &str) -> SecretRef {
    SecretRef::new(mgmt, &policy.namespace, &format!("{}-revocations", policy.name))
}

/// One revoked cluster intermediate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RevokedCa {
    /// The cluster it was issued for.
    pub cluster: String,
    /// Its serial number, lowercase hex without separators.
    pub serial: String,
    /// Its subject.
    pub subject: String,
    /// Its issuer (the root that lists it).
    pub issuer: String,
    /// SHA-256 of the certificate.
    pub fingerprint: String,
    /// Its notAfter (after it, the entry could be dropped).
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// Why: `keyCompromise`, `superseded` or `cessationOfOperation`.
    pub reason: String,
}

impl RevokedCa {
    /// The entry for `cert` of `cluster`, revoked at `at` for `reason`.
    pub fn of(cluster: &str, cert: &Certificate, at: OffsetDateTime, reason: RevocationReason) -> Self {
        RevokedCa {
            cluster: cluster.to_owned(),
            serial: hex(cert.serial_bytes()),
            subject: cert.subject(),
            issuer: cert.issuer(),
            fingerprint: cert.fingerprint_sha256(),
            not_after: cert.not_after(),
            revoked_at: at,
            reason: reason.name().to_owned(),
        }
    }

    /// Whether this entry is `cert`.
    pub fn is(&self, cert: &Certificate) -> bool {
        self.issuer == cert.issuer()
            && normalize_serial(&self.serial).is_some_and(|s| s == hex(meshca::canonical_serial(cert.serial_bytes())))
    }

    fn to_core(&self) -> Result<Revoked, String> {
        let serial = unhex(&self.serial).ok_or_else(|| "`serial` is not hex (value not shown)".to_owned())?;
        let reason: RevocationReason = self.reason.parse().map_err(|e: meshca::Error| e.to_string())?;
        Ok(Revoked::of_serial(serial, self.revoked_at, reason))
    }
}

/// The stored list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct RevocationList {
    /// The revoked intermediates, oldest first.
    #[serde(default)]
    pub revoked: Vec<RevokedCa>,
    /// The CRL number of the newest root CRL (RFC 5280 5.2.3: it only grows).
    #[serde(default)]
    pub crl_number: u64,
}

impl RevocationList {
    /// Checks the list against the root that signs its CRL, as every load does before the list
    /// is used: each entry names a valid cluster, a CA issued by `root` (an entry of another
    /// root would sit in this root's CRL, meaning nothing), and never `root` itself (a root CRL
    /// revoking its own root would make every chain of the fleet fail). Entries are named by
    /// position; nothing of a value that failed is shown.
    pub fn check_against(&self, root: &Certificate, location: &str) -> Result<(), Error> {
        let bad = |detail: String| Error::RevocationList { location: location.to_owned(), detail };
        let root_serial = hex(meshca::canonical_serial(root.serial_bytes()));
        for (i, r) in self.revoked.iter().enumerate() {
            let at = format!("{REVOCATIONS_FILE}: entry {} of {}", i + 1, self.revoked.len());
            if meshca::validate_cluster_name(&r.cluster).is_err() {
                return Err(bad(format!("{at}: `cluster` is not a cluster name (a DNS label)")));
            }
            if r.issuer != root.subject() {
                return Err(bad(format!(
                    "{at} ({}): was issued by another CA, not by this policy's root {}; only the root's own \
                     intermediates can be on its CRL",
                    r.cluster,
                    root.subject()
                )));
            }
            if normalize_serial(&r.serial).as_deref() == Some(root_serial.as_str()) {
                return Err(bad(format!(
                    "{at} ({}): names the root itself (serial {root_serial}); a root cannot be revoked by its own \
                     CRL",
                    r.cluster
                )));
            }
        }
        Ok(())
    }
}

/// Why a revocation command was refused. Each says what to do instead.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The signing CA is not a root: the CRL that revokes an intermediate is its issuer's.
    #[error(
        "the signing CA ({signer}) is not a root: with CRLs in use, every CA of a chain needs one, and the CRL of \
         {signer} can only come from the PKI above it; revocation needs a self-signed signing CA"
    )]
    SignerNotRoot {
        /// The signing CA's subject.
        signer: String,
    },
    /// A root rotation is under way.
    #[error("a root rotation is under way; finish or roll it back before revoking, or the two would fight over the trust bundles")]
    RootRotationUnderWay,
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

/// The revocation list with its CRL set, as a run uses it.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// The list.
    pub list: RevocationList,
    /// The CRL set: the root's CRL, then one per intermediate in use.
    set: CrlSet,
    changed: bool,
}

/// What the fleet's CRL set holds, for reports.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CrlSummary {
    /// Revoked intermediates.
    pub revoked: Vec<RevokedCa>,
    /// The root CRL's number.
    pub crl_number: u64,
    /// The root CRL's nextUpdate: it is re-signed before then.
    #[serde(with = "crate::reconcile::rfc3339_opt")]
    pub next_update: Option<OffsetDateTime>,
    /// How many CRLs the set holds (the root's and one per intermediate in use).
    pub crls: usize,
    /// Where the list lives.
    pub location: String,
}

/// Reads the stored list and CRL set; `None` when no revocation was ever made.
pub fn load(store: &dyn Store, policy: &Policy, mgmt: &str) -> Result<Option<Fleet>, Error> {
    let secret = list_secret(policy, mgmt);
    let Some(files) = store.read(&secret)? else { return Ok(None) };
    let location = store.location(&secret);
    let bad = |detail: String| Error::RevocationList { location: location.clone(), detail };
    let raw = files.get(REVOCATIONS_FILE).ok_or_else(|| bad(format!("no {REVOCATIONS_FILE}")))?;
    let list: RevocationList = serde_json::from_slice(raw)
        .map_err(|e| bad(format!("{REVOCATIONS_FILE} is not valid: {}", crate::error::redact(&e.to_string()))))?;
    if list.revoked.len() > MAX_REVOKED {
        return Err(bad(format!("{REVOCATIONS_FILE} holds more than {MAX_REVOKED} entries")));
    }
    for (i, r) in list.revoked.iter().enumerate() {
        let at = format!("{REVOCATIONS_FILE}: entry {} of {}", i + 1, list.revoked.len());
        r.to_core().map_err(|e| bad(format!("{at}: {e}")))?;
        // Every field is printed by `crl show` and `status`: text with a control character (a
        // terminal escape sequence) or longer than any name meshca writes is not one of ours.
        for (field, value) in [("subject", &r.subject), ("issuer", &r.issuer), ("fingerprint", &r.fingerprint)] {
            if value.len() > 1024 || value.chars().any(char::is_control) {
                return Err(bad(format!("{at}: `{field}` holds a control character or is too long (not shown)")));
            }
        }
        if meshca::validate_cluster_name(&r.cluster).is_err() {
            return Err(bad(format!("{at}: `cluster` is not a cluster name (a DNS label; not shown)")));
        }
    }
    let crls = match files.get(CA_CRL) {
        Some(pem) => Crl::from_pem_all(pem, CA_CRL).map_err(|e| bad(e.to_string()))?,
        None => Vec::new(),
    };
    Ok(Some(Fleet { list, set: CrlSet::new(crls), changed: false }))
}

impl Fleet {
    /// A fleet with `list` and the CRLs stored before (if any); `changed` so it is saved.
    pub fn with_list(stored: Option<Fleet>, list: RevocationList) -> Self {
        let set = stored.map(|f| f.set).unwrap_or_default();
        Fleet { list, set, changed: true }
    }

    /// Whether `cert` is on the list.
    pub fn is_revoked(&self, cert: &Certificate) -> bool {
        self.list.revoked.iter().any(|r| r.is(cert))
    }

    /// The list's entries as the core's plan and CRLs take them (an entry that does not convert
    /// was refused when the list was read).
    pub fn entries(&self) -> Vec<Revoked> {
        self.list.revoked.iter().filter_map(|r| r.to_core().ok()).collect()
    }

    /// The CRL set as `ca-crl.pem` holds it.
    pub fn crl_pem(&self) -> Vec<u8> {
        self.set.to_pem().into_bytes()
    }

    /// The CRLs.
    pub fn crls(&self) -> &[Crl] {
        self.set.crls()
    }

    /// What the set holds, for a report.
    pub fn summary(&self, location: String, signer: &SigningCa) -> CrlSummary {
        let root = self.set.of(signer.bundle().ca_cert());
        CrlSummary {
            revoked: self.list.revoked.clone(),
            crl_number: self.list.crl_number,
            next_update: root.map(Crl::next_update),
            crls: self.set.crls().len(),
            location,
        }
    }

    /// Brings the root's CRL up to date with the list (the core re-signs it when an entry
    /// changed, when it is due for refresh, or when it does not verify under `signer`), and
    /// drops the intermediates' CRLs that expired.
    pub fn refresh_root(&mut self, signer: &SigningCa, now: OffsetDateTime) -> Result<(), Error> {
        let root = signer.bundle().ca_cert();
        if !root.is_self_signed() {
            return Err(Refusal::SignerNotRoot { signer: root.subject() }.into());
        }
        self.list.check_against(root, REVOCATIONS_FILE)?;
        let entries = self
            .list
            .revoked
            .iter()
            .map(|r| r.to_core().map_err(|detail| Error::RevocationList { location: REVOCATIONS_FILE.into(), detail }))
            .collect::<Result<Vec<Revoked>, Error>>()?;
        let (number, changed) = self
            .set
            .refresh_root(&CrlProfile::DEFAULT, signer, &entries, self.list.crl_number, now)
            .map_err(|e| match e {
                e @ meshca::Error::CrlNumberExhausted { .. } => {
                    Error::RevocationList { location: REVOCATIONS_FILE.into(), detail: e.to_string() }
                }
                e => Error::core("the root's CRL".to_owned())(e),
            })?;
        if let Some(n) = number {
            self.list.crl_number = n;
        }
        self.changed |= changed;
        Ok(())
    }

    /// Makes sure the set holds a current CRL of `bundle`'s intermediate (the core signs an
    /// entry-less one with `bundle`'s own key if not).
    pub fn cover(&mut self, bundle: &Cacerts, now: OffsetDateTime) -> Result<(), Error> {
        let changed = self
            .set
            .cover(&CrlProfile::DEFAULT, bundle, now)
            .map_err(Error::core(format!("the CRL of {}", bundle.ca_cert().subject())))?;
        self.changed |= changed;
        Ok(())
    }

    /// Saves the list and set if they changed (on a dry run, nothing).
    pub fn save(&mut self, writer: &Writer<'_>, policy: &Policy, mgmt: &str) -> Result<(), Error> {
        if !self.changed {
            return Ok(());
        }
        let mut files = Files::new();
        files.insert(REVOCATIONS_FILE, serde_json::to_vec_pretty(&self.list).unwrap_or_default());
        files.insert(CA_CRL, self.crl_pem());
        writer.write_state(&list_secret(policy, mgmt), &files)?;
        self.changed = false;
        Ok(())
    }
}

/// Lowercase hex without separators.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    meshca::parse_serial(s).ok()
}

/// Normalizes a serial given by a user (`AB:CD`, `abcd`, leading zeros) for comparison.
pub fn normalize_serial(s: &str) -> Option<String> {
    let bytes = unhex(s.trim())?;
    Some(hex(meshca::canonical_serial(&bytes)))
}

/// A value from the list or the command line, for a message: no control characters, bounded.
fn clip(s: &str) -> String {
    meshca::printable(s, 64)
}

/// What `revoke` or `unrevoke` did: the entries it added or took back, and the run that
/// re-issued and published.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RevocationReport {
    /// Entries added (revoke) or taken back (unrevoke).
    pub entries: Vec<RevokedCa>,
    /// The run: the revoked cluster re-issued, every bundle given the new CRL set.
    pub run: crate::reconcile::Report,
}

impl RevocationReport {
    /// The report of a rebuilt list: its entries, and the run.
    pub fn rebuilt(entries: Vec<RevokedCa>, run: crate::reconcile::Report) -> Self {
        RevocationReport { entries, run }
    }
}

/// Which entries `unrevoke` takes back.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Selector {
    /// Every entry of this cluster.
    Cluster(String),
    /// The entry with this serial (hex, colons allowed).
    Serial(String),
    /// Every entry (`crl clear`).
    All,
}

/// Revokes `cluster`'s current intermediate: records it (serial, issuer, fingerprint, time,
/// reason) on the list, and runs the policy with it, which re-issues the cluster with a new key
/// at once, re-signs the root's CRL, and writes the CRL set to every other cluster before the
/// new intermediate. With `opts.dry_run`, plans it all and writes nothing.
///
/// A cluster revoked before whose current intermediate is the replacement that revocation
/// issued is refused ([`Refusal::ReplacementOfRevoked`]): a second revoke by mistake would
/// otherwise revoke the fresh CA; [`revoke_ca`] with [`Target::Serial`] revokes it on purpose.
pub fn revoke(
    store: &dyn Store,
    policy: &Policy,
    opts: &crate::reconcile::Options,
    cluster: &str,
    reason: RevocationReason,
    rng: &mut dyn meshca::Entropy,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RevocationReport, Error> {
    revoke_which(store, policy, opts, cluster, None, false, reason, rng, progress)
}

/// Which CA of a cluster [`revoke_ca`] revokes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// Its current intermediate, refused when that is the replacement an earlier revocation
    /// issued (what [`revoke`] does).
    Current,
    /// Its current intermediate, also when it is such a replacement: for a caller whose every
    /// request is deliberate (the controller's `meshca.dev/revoke` annotation takes a new
    /// value, with a nonce, for each request).
    CurrentDeliberately,
    /// The CA with this serial (hex, colons allowed): the current one named on purpose, or one
    /// whose `ca-cert.pem` is damaged or gone, recorded by serial alone.
    Serial(String),
}

/// Revokes the CA of `cluster` that `target` names, as [`revoke`] does.
#[allow(clippy::too_many_arguments)]
pub fn revoke_ca(
    store: &dyn Store,
    policy: &Policy,
    opts: &crate::reconcile::Options,
    cluster: &str,
    target: &Target,
    reason: RevocationReason,
    rng: &mut dyn meshca::Entropy,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RevocationReport, Error> {
    let (serial, deliberate) = match target {
        Target::Current => (None, false),
        Target::CurrentDeliberately => (None, true),
        Target::Serial(s) => (Some(s.as_str()), true),
    };
    revoke_which(store, policy, opts, cluster, serial, deliberate, reason, rng, progress)
}

#[allow(clippy::too_many_arguments)]
fn revoke_which(
    store: &dyn Store,
    policy: &Policy,
    opts: &crate::reconcile::Options,
    cluster: &str,
    serial: Option<&str>,
    deliberate: bool,
    reason: RevocationReason,
    rng: &mut dyn meshca::Entropy,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RevocationReport, Error> {
    refuse_during_root_rotation(store, policy, opts)?;
    if !opts.clusters.iter().any(|c| c == cluster) {
        return Err(Refusal::UnknownCluster {
            cluster: cluster.to_owned(),
            known: meshca::list_bounded(&opts.clusters, 10),
        }
        .into());
    }
    let wanted = match serial {
        None => None,
        Some(s) => Some(normalize_serial(s).ok_or(Refusal::BadSerial)?),
    };
    let secret = SecretRef::cacerts(cluster);
    let location = store.location(&secret);
    let no_bundle = || Refusal::NoBundle { cluster: cluster.to_owned(), location: location.clone() };
    let files = store.read(&secret)?;
    // The CA certificate alone: a bundle broken otherwise (a tampered key) is still revocable.
    let current = files.as_ref().and_then(|f| f.get(meshca::CA_CERT)).map(|pem| {
        meshca::parse_certificates(pem, meshca::CA_CERT)
            .map_err(Error::core(format!("{cluster}'s cacerts")))
            .and_then(|certs| certs.into_iter().next().ok_or_else(|| no_bundle().into()))
    });
    let (signer, _) = crate::reconcile::load_signer(store, policy, opts, rng)?;
    let signer_ca = signer.bundle().ca_cert();
    if !signer_ca.is_self_signed() {
        return Err(Refusal::SignerNotRoot { signer: signer_ca.subject() }.into());
    }
    let stored = load(store, policy, &opts.mgmt_cluster)?;
    let mut list = stored.as_ref().map(|f| f.list.clone()).unwrap_or_default();
    let list_location = store.location(&list_secret(policy, &opts.mgmt_cluster));
    list.check_against(signer_ca, &list_location)?;
    if list.revoked.len() >= MAX_REVOKED {
        return Err(Refusal::Full.into());
    }
    // The current CA, named by serial (`named`) or not.
    let current_entry = |ca: Certificate, named: bool| -> Result<RevokedCa, Error> {
        if !ca.is_issued_by(signer_ca) {
            return Err(Refusal::NotIssuedBySigner {
                cluster: cluster.to_owned(),
                issuer: ca.issuer(),
                signer: signer_ca.subject(),
            }
            .into());
        }
        if list.revoked.iter().any(|r| r.is(&ca)) {
            return Err(Refusal::AlreadyRevoked { cluster: cluster.to_owned(), serial: hex(ca.serial_bytes()) }.into());
        }
        // Issued as the replacement of this cluster's last revocation (its notBefore is that
        // revocation's time, backdated): a second revoke by mistake, unless named.
        let replaced = list
            .revoked
            .iter()
            .filter(|r| r.cluster == cluster)
            .map(|r| r.revoked_at)
            .max()
            .is_some_and(|at| ca.not_before() + meshca::BACKDATE + Duration::minutes(1) >= at);
        if replaced && !named {
            return Err(
                Refusal::ReplacementOfRevoked { cluster: cluster.to_owned(), serial: hex(ca.serial_bytes()) }.into()
            );
        }
        Ok(RevokedCa::of(cluster, &ca, opts.now, reason))
    };
    let entry = match (current, wanted) {
        (Some(Ok(ca)), None) => current_entry(ca, deliberate)?,
        (Some(Ok(ca)), Some(w)) if w == hex(meshca::canonical_serial(ca.serial_bytes())) => current_entry(ca, true)?,
        // No readable CA certificate, or an older CA named by serial: recorded by serial.
        (_, Some(w)) => {
            if list.revoked.iter().any(|r| normalize_serial(&r.serial).as_deref() == Some(w.as_str())) {
                return Err(Refusal::AlreadyRevoked { cluster: cluster.to_owned(), serial: w }.into());
            }
            if files.is_none() {
                return Err(no_bundle().into());
            }
            RevokedCa {
                cluster: cluster.to_owned(),
                serial: w,
                subject: "(unknown: recorded by serial)".into(),
                issuer: signer_ca.subject(),
                fingerprint: String::new(),
                not_after: signer_ca.not_after(),
                revoked_at: opts.now,
                reason: reason.name().to_owned(),
            }
        }
        (Some(Err(e)), None) => return Err(e),
        (None, None) => return Err(no_bundle().into()),
    };
    list.revoked.push(entry.clone());
    run_with(store, policy, opts, list, vec![entry], rng, progress)
}

/// Takes entries back off the list and publishes the CRL set without them (never an empty
/// file: istiod would keep the old CRL, istio#61073). What the revoked intermediates signed
/// verifies again until it expires; the clusters keep the intermediates they have now.
pub fn unrevoke(
    store: &dyn Store,
    policy: &Policy,
    opts: &crate::reconcile::Options,
    which: &Selector,
    rng: &mut dyn meshca::Entropy,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RevocationReport, Error> {
    refuse_during_root_rotation(store, policy, opts)?;
    let stored = load(store, policy, &opts.mgmt_cluster)?;
    let mut list = stored.map(|f| f.list).unwrap_or_default();
    let wanted_serial = match which {
        Selector::Serial(s) => Some(normalize_serial(s).ok_or_else(|| Refusal::NotRevoked {
            what: "a serial that is not hex (not shown)".into(),
            held: held(&list),
        })?),
        _ => None,
    };
    let matches = |r: &RevokedCa| match which {
        Selector::Cluster(c) => r.cluster == *c,
        Selector::Serial(_) => normalize_serial(&r.serial) == wanted_serial,
        Selector::All => true,
    };
    let (taken, kept): (Vec<RevokedCa>, Vec<RevokedCa>) = list.revoked.drain(..).partition(|r| matches(r));
    if taken.is_empty() && *which != Selector::All {
        let what = match which {
            Selector::Cluster(c) => format!("cluster {c}"),
            Selector::Serial(s) => format!("serial {}", clip(s)),
            Selector::All => unreachable!("handled above"),
        };
        list.revoked = kept;
        return Err(Refusal::NotRevoked { what, held: held(&list) }.into());
    }
    list.revoked = kept;
    run_with(store, policy, opts, list, taken, rng, progress)
}

/// What [`rebuild`] made of the CRLs it found.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RebuildReport {
    /// Where the root's CRL was read (the list's Secret, or a cluster's `cacerts`).
    pub source: String,
    /// The root CRL's number.
    pub crl_number: u64,
    /// The entries rebuilt, one per serial the root's CRL lists.
    pub entries: Vec<RevokedCa>,
    /// How many of them name no cluster (their intermediate's own CRL was not found): kept, with
    /// the cluster `unknown`, so that nothing the CRL revokes is taken back.
    pub unattributed: usize,
    /// The run that saved the list and republished the set.
    pub run: crate::reconcile::Report,
}

/// Rebuilds the revocation list from the CRLs published, for a list that is damaged or lost:
/// the newest CRL the policy's root signed, read from the list's own Secret or from any
/// cluster's `ca-crl.pem`, lists every revoked serial; each intermediate's own CRL in the same
/// set names its cluster (`L=`) and lifetime. Every serial the root's CRL lists stays revoked,
/// attributed or not (nothing is taken back silently), and the CRL number goes on from the
/// one found. The rebuilt list is saved with the set it came in, then the policy is run as
/// usual (a dry run saves nothing and plans with the rebuilt list).
pub fn rebuild(
    store: &dyn Store,
    policy: &Policy,
    opts: &crate::reconcile::Options,
    rng: &mut dyn meshca::Entropy,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RebuildReport, Error> {
    refuse_during_root_rotation(store, policy, opts)?;
    let (signer, _) = crate::reconcile::load_signer(store, policy, opts, rng)?;
    let root = signer.bundle().ca_cert();
    if !root.is_self_signed() {
        return Err(Refusal::SignerNotRoot { signer: root.subject() }.into());
    }
    let secret = list_secret(policy, &opts.mgmt_cluster);
    let mut sources = vec![secret.clone()];
    sources.extend(opts.clusters.iter().map(|c| SecretRef::cacerts(c)));
    // The newest root CRL (highest number) of any source, with the set it came in.
    let mut best: Option<(String, Vec<Crl>, usize)> = None;
    for source in &sources {
        let Ok(Some(files)) = store.read(source) else { continue };
        let Some(Ok(crls)) = files.get(CA_CRL).map(|pem| Crl::from_pem_all(pem, CA_CRL)) else { continue };
        let Some(i) = crls.iter().position(|c| c.is_issued_by_name(root) && c.verify_signed_by(root).is_ok()) else {
            continue;
        };
        let newer = best.as_ref().is_none_or(|(_, set, j)| crls[i].number() > set[*j].number());
        if newer {
            best = Some((store.location(source), crls, i));
        }
    }
    let Some((source, set, i)) = best else {
        return Err(Refusal::NothingToRebuild {
            root: root.subject(),
            searched: meshca::list_bounded(sources.iter().map(|s| store.location(s)), 5),
            location: store.location(&secret),
        }
        .into());
    };
    let root_crl = &set[i];
    let mut unattributed = 0;
    let mut entries = Vec::new();
    for r in root_crl.entries().into_iter().take(MAX_REVOKED) {
        let serial = meshca::canonical_serial(&r.serial).to_vec();
        let own = set.iter().find(|c| {
            c.issuer_cluster_and_serial().1.as_deref().map(meshca::canonical_serial) == Some(serial.as_slice())
        });
        let cluster =
            own.and_then(|c| c.issuer_cluster_and_serial().0).filter(|c| meshca::validate_cluster_name(c).is_ok());
        unattributed += usize::from(cluster.is_none());
        entries.push(RevokedCa {
            cluster: cluster.unwrap_or_else(|| "unknown".into()),
            serial: hex(&serial),
            subject: own.map_or_else(
                || "(unknown: rebuilt from the root's CRL)".into(),
                |c| meshca::printable(&c.issuer(), 256),
            ),
            issuer: root.subject(),
            fingerprint: String::new(),
            not_after: own.map_or_else(|| root.not_after(), Crl::next_update),
            revoked_at: r.revoked_at,
            reason: r.reason.unwrap_or(RevocationReason::Unspecified).name().to_owned(),
        });
    }
    let list = RevocationList { revoked: entries.clone(), crl_number: root_crl.number().unwrap_or(0) };
    let crl_number = list.crl_number;
    let run = if opts.dry_run {
        let mut opts = opts.clone();
        opts.revocations = Some(list);
        crate::reconcile::reconcile(store, policy, &opts, rng, progress)?
    } else {
        let mut fleet = Fleet { list, set: CrlSet::new(set), changed: true };
        fleet.save(&opts.writer(store, policy), policy, &opts.mgmt_cluster)?;
        crate::reconcile::reconcile(store, policy, opts, rng, progress)?
    };
    Ok(RebuildReport { source, crl_number, entries, unattributed, run })
}

fn run_with(
    store: &dyn Store,
    policy: &Policy,
    opts: &crate::reconcile::Options,
    list: RevocationList,
    entries: Vec<RevokedCa>,
    rng: &mut dyn meshca::Entropy,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RevocationReport, Error> {
    let mut opts = opts.clone();
    opts.revocations = Some(list);
    let run = crate::reconcile::reconcile(store, policy, &opts, rng, progress)?;
    Ok(RevocationReport { entries, run })
}

fn refuse_during_root_rotation(
    store: &dyn Store,
    policy: &Policy,
    opts: &crate::reconcile::Options,
) -> Result<(), Error> {
    if crate::rootrotation::load(store, policy, &opts.mgmt_cluster)?.is_some_and(|s| s.in_progress()) {
        return Err(Refusal::RootRotationUnderWay.into());
    }
    Ok(())
}

fn held(list: &RevocationList) -> String {
    if list.revoked.is_empty() {
        return "no entries".into();
    }
    meshca::list_bounded(list.revoked.iter().map(|r| format!("{} (serial {})", r.cluster, r.serial)), 10)
}
