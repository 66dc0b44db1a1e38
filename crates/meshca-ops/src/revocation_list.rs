//! The fleet's revocation list and CRL set as stored: one Secret, `<policy>-revocations` in the
//! policy's namespace of the management cluster (`revocations.json` and `ca-crl.pem`), written
//! through the one [`Writer`] before any bundle that depends on it. The core builds and checks
//! the set ([`meshca::CrlSet`]); this module reads, converts and saves. The jobs that change the
//! list (revoke, unrevoke, rebuild) are in the `revocation` module.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use meshca::{Cacerts, Certificate, Crl, CrlProfile, CrlSet, Files, RevocationReason, Revoked, SigningCa, CA_CRL};

use crate::error::Error;
use crate::policy::Policy;
use crate::refusal::RevocationRefusal as Refusal;
use crate::store::{SecretRef, Store};
use crate::writer::Writer;

/// The revocation list's file in its Secret.
pub const REVOCATIONS_FILE: &str = "revocations.json";

/// How long a root CRL is valid (its nextUpdate minus its thisUpdate): the core's profile.
pub const ROOT_CRL_VALIDITY: Duration = meshca::CrlProfile::DEFAULT.root_validity;

/// A root CRL is re-signed once less than this is left before its nextUpdate, so every
/// cluster holds a fresh one days before the old one goes stale: the core's profile.
pub const ROOT_CRL_REFRESH: Duration = meshca::CrlProfile::DEFAULT.root_refresh;

pub use crate::refusal::MAX_REVOKED;

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

    /// The entry as the core's CRL takes it.
    fn to_core(&self) -> Result<Revoked, EntryProblem> {
        let serial = unhex(&self.serial).ok_or(EntryProblem::Serial)?;
        let reason: RevocationReason = self.reason.parse().map_err(EntryProblem::Reason)?;
        Ok(Revoked::of_serial(serial, self.revoked_at, reason))
    }
}

/// Why a stored entry does not convert (the value itself is not shown).
#[derive(Debug, thiserror::Error)]
enum EntryProblem {
    #[error("`serial` is not hex (value not shown)")]
    Serial,
    #[error("{0}")]
    Reason(meshca::Error),
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
    /// Checks the list against the roots that sign its CRLs (one; two during a root rotation),
    /// as every load does before the list is used: each entry names a valid cluster, a CA issued
    /// by one of `roots` (an entry of another CA would sit in no CRL a verifier reads, meaning
    /// nothing), and never a root itself (a root CRL revoking its own root would make every
    /// chain of the fleet fail). Entries are named by position; nothing of a value that failed
    /// is shown.
    pub fn check_against(&self, roots: &[&Certificate], location: &str) -> Result<(), Error> {
        self.check_against_or(roots, &[], location)
    }

    /// [`RevocationList::check_against`], entries of the CAs named `previous` allowed too (a
    /// signing CA replaced meanwhile whose CRL still stands).
    pub(crate) fn check_against_or(
        &self,
        roots: &[&Certificate],
        previous: &[String],
        location: &str,
    ) -> Result<(), Error> {
        let bad = |detail: String| Error::RevocationList { location: location.to_owned(), detail };
        let names = meshca::list_bounded(roots.iter().map(|r| r.subject()), 2);
        for (i, r) in self.revoked.iter().enumerate() {
            let at = format!("{REVOCATIONS_FILE}: entry {} of {}", i + 1, self.revoked.len());
            if meshca::validate_cluster_name(&r.cluster).is_err() {
                return Err(bad(format!("{at}: `cluster` is not a cluster name (a DNS label)")));
            }
            if previous.contains(&r.issuer) {
                continue;
            }
            let Some(root) = roots.iter().find(|root| r.issuer == root.subject()) else {
                return Err(bad(format!(
                    "{at} ({}): was issued by another CA, not by this policy's root {names}; only the root's own \
                     intermediates can be on its CRL",
                    r.cluster
                )));
            };
            let root_serial = hex(meshca::canonical_serial(root.serial_bytes()));
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

/// A CRL of a CA above a signing CA, as the set carries it (for reports, metrics, status).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct UpstreamCrl {
    /// The CA.
    pub ca: String,
    /// Where it came from: the PKI, or the CRLs the operator supplies.
    pub source: String,
    /// Its nextUpdate.
    #[serde(with = "time::serde::rfc3339")]
    pub next_update: OffsetDateTime,
    /// The operator supplies it, and less than the warning window (three days, or half its
    /// validity) is left.
    pub expiring: bool,
}

/// The revocation list with its CRL set, as a run uses it.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// The list.
    pub list: RevocationList,
    /// The CRL set: the root's CRL, then one per intermediate in use.
    pub(crate) set: CrlSet,
    pub(crate) changed: bool,
    /// The CRLs of the CAs above the signing CAs, as this run found them.
    pub(crate) upstream: Vec<UpstreamCrl>,
    /// What the run should tell its operator about them.
    pub(crate) notes: Vec<String>,
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
    #[serde(with = "crate::serde_time::rfc3339_opt")]
    pub next_update: Option<OffsetDateTime>,
    /// How many CRLs the set holds (the root's and one per intermediate in use).
    pub crls: usize,
    /// The CRLs of the CAs above the signing CA (from the PKI, or supplied).
    pub upstream: Vec<UpstreamCrl>,
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
    Ok(Some(Fleet { list, set: CrlSet::new(crls), changed: false, upstream: Vec::new(), notes: Vec::new() }))
}

impl Fleet {
    /// A fleet with `list` and the CRLs stored before (if any); `changed` so it is saved.
    pub fn with_list(stored: Option<Fleet>, list: RevocationList) -> Self {
        let set = stored.map(|f| f.set).unwrap_or_default();
        Fleet { list, set, changed: true, upstream: Vec::new(), notes: Vec::new() }
    }

    /// A fleet with `list` and the CRLs `crls` (a set rebuilt from the clusters' bundles);
    /// `changed` so it is saved.
    pub fn rebuilt(list: RevocationList, crls: Vec<Crl>) -> Self {
        Fleet { list, set: CrlSet::new(crls), changed: true, upstream: Vec::new(), notes: Vec::new() }
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
            upstream: self.upstream.clone(),
            location,
        }
    }

    /// Brings the root's CRL up to date with the list (the core re-signs it when an entry
    /// changed, when it is due for refresh, or when it does not verify under `signer`), and
    /// drops the intermediates' CRLs that expired.
    pub fn refresh_root(&mut self, signer: &SigningCa, now: OffsetDateTime) -> Result<(), Error> {
        self.refresh_roots(&[signer], &[], now)
    }

    /// [`Fleet::refresh_root`] for each of `signers` (the two roots of a root rotation): each
    /// root's CRL lists the entries it issued. Every entry must be one of theirs, or of
    /// `known` (a root whose CRL stays as it is this run: the incoming one of a rollback after
    /// its CA was withdrawn).
    pub fn refresh_roots(
        &mut self,
        signers: &[&SigningCa],
        known: &[&Certificate],
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let roots: Vec<&Certificate> = signers.iter().map(|s| s.bundle().ca_cert()).collect();
        if let Some(root) = roots.iter().find(|r| !r.is_self_signed()) {
            return Err(Refusal::SignerNotRoot { signer: root.subject() }.into());
        }
        let all: Vec<&Certificate> = roots.iter().chain(known).copied().collect();
        self.list.check_against(&all, REVOCATIONS_FILE)?;
        for signer in signers {
            self.sign_own(signer, now)?;
        }
        Ok(())
    }

    /// The entries `ca` issued, as the core's CRL takes them.
    pub(crate) fn entries_of(&self, ca: &Certificate) -> Result<Vec<Revoked>, Error> {
        self.list
            .revoked
            .iter()
            .filter(|r| r.issuer == ca.subject())
            .map(|r| {
                r.to_core()
                    .map_err(|e| Error::RevocationList { location: REVOCATIONS_FILE.into(), detail: e.to_string() })
            })
            .collect()
    }

    /// Re-signs the CRL of `signer` (whose key meshca holds) when its entries changed or it is
    /// due.
    pub(crate) fn sign_own(&mut self, signer: &SigningCa, now: OffsetDateTime) -> Result<(), Error> {
        let ca = signer.bundle().ca_cert();
        let entries = self.entries_of(ca)?;
        let (number, changed) = self
            .set
            .refresh_signer(&CrlProfile::DEFAULT, signer, &entries, self.list.crl_number, now)
            .map_err(|e| match e {
                e @ meshca::Error::CrlNumberExhausted { .. } => {
                    Error::RevocationList { location: REVOCATIONS_FILE.into(), detail: e.to_string() }
                }
                e => Error::core(format!("the CRL of {}", ca.subject()))(e),
            })?;
        if let Some(n) = number {
            self.list.crl_number = n;
        }
        self.changed |= changed;
        Ok(())
    }

    /// What the run should tell its operator about the upstream CRLs.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The CRLs of the CAs above the signing CAs, as this run found them.
    pub fn upstream(&self) -> &[UpstreamCrl] {
        &self.upstream
    }

    /// Takes the CAs of `chain` (a signing CA and those above it, up to a root) out of the set,
    /// as a finished root rotation takes that root out of every trust bundle: their CRLs, and
    /// the entries they issued (what they revoked chains to a root no cluster trusts any more).
    pub fn forget_chain(&mut self, chain: &[&Certificate]) {
        let before = (self.list.revoked.len(), self.set.crls().len());
        self.list.revoked.retain(|r| !chain.iter().any(|c| r.issuer == c.subject()));
        for c in chain {
            self.set.forget(c);
        }
        self.changed |= before != (self.list.revoked.len(), self.set.crls().len());
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
