//! The fleet's revocation list and CRL set as stored: one Secret, `<policy>-revocations` in the
//! policy's namespace of the management cluster (`revocations.json` and `ca-crl.pem`), written
//! through the one [`Writer`] before any bundle that depends on it. The core builds and checks
//! the set ([`meshca::CrlSet`]); this module reads, converts and saves. The jobs that change the
//! list (revoke, unrevoke, rebuild) are in the `revocation` module.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use meshca::{Cacerts, Certificate, Crl, CrlProfile, CrlSet, Files, RevocationReason, Revoked, SigningCa, CA_CRL};

use crate::context::Options;
use crate::error::Error;
use crate::policy::{Policy, VaultSigner};
use crate::refusal::RevocationRefusal as Refusal;
use crate::signer::Remote;
use crate::store::{SecretRef, Store};
use crate::vault::Vault;
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
    fn check_against_or(&self, roots: &[&Certificate], previous: &[String], location: &str) -> Result<(), Error> {
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

/// A CRL fetched from a PKI is fetched again, and the PKI asked to re-sign it, once less than
/// this is left before its nextUpdate (OpenBao's CRLs last 72 hours by default).
pub const UPSTREAM_REFRESH: Duration = Duration::days(1);

/// An upstream CRL the operator supplies is warned about (a note, `status`, a metric) once
/// less than this (or half its validity, if that is shorter) is left before its nextUpdate.
pub const UPSTREAM_WARNING: Duration = Duration::days(3);

/// A signing CA whose CRL the fleet's set carries, and who makes it: meshca with the CA's key
/// (a Secret, a token); the PKI that holds it (`signs: clusters`), which revokes and signs; and
/// for a CA the PKI issued (a management intermediate), the PKI makes the CRL of the CA above.
#[derive(Clone, Copy, Debug)]
pub struct CrlSigner<'a> {
    ca: &'a SigningCa,
    remote: Option<&'a Remote>,
    issued_by: Option<&'a VaultSigner>,
}

impl<'a> CrlSigner<'a> {
    /// `ca`, held by `remote` when a PKI holds it, issued by the PKI `issued_by`.
    pub fn new(ca: &'a SigningCa, remote: Option<&'a Remote>, issued_by: Option<&'a VaultSigner>) -> Self {
        CrlSigner { ca, remote, issued_by }
    }

    /// The CA.
    pub fn ca(&self) -> &'a SigningCa {
        self.ca
    }

    /// The PKI that holds it, if one does.
    pub fn remote(&self) -> Option<&'a Remote> {
        self.remote
    }

    /// The CA's certificate.
    pub fn cert(&self) -> &'a Certificate {
        self.ca.bundle().ca_cert()
    }

    /// Whether a PKI holds the CA (its CRL is the PKI's: revocations cannot be taken back).
    pub fn held_by_pki(&self) -> bool {
        self.remote.is_some()
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
    /// The operator supplies it, and less than [`UPSTREAM_WARNING`] (or half its validity) is
    /// left.
    pub expiring: bool,
}

/// The revocation list with its CRL set, as a run uses it.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// The list.
    pub list: RevocationList,
    /// The CRL set: the root's CRL, then one per intermediate in use.
    set: CrlSet,
    changed: bool,
    /// The CRLs of the CAs above the signing CAs, as this run found them.
    upstream: Vec<UpstreamCrl>,
    /// What the run should tell its operator about them.
    notes: Vec<String>,
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

    /// Brings the CRL of each of `signers` up to date with the entries it issued (every entry
    /// must be one of theirs, or of `known`), and makes sure the set holds a current CRL of
    /// every CA above each of them:
    /// - a CA whose key meshca holds (a Secret, a token) signs its CRL here;
    /// - a CA a PKI holds (`signs: clusters`): what meshca revoked is revoked at the PKI (not
    ///   on a dry run), and the PKI's CRL is fetched, checked to list every entry, and taken;
    /// - the CA above a management intermediate: its CRL is fetched from the PKI that issued it;
    /// - any other CA above: from the CRLs the operator supplies (`opts.upstream_crls`, else the
    ///   policy's `mgmtServerCa.upstreamCrlSecretRef`), warned about well before they expire.
    ///
    /// A CA left without a current CRL stops the run before anything is written: an expired
    /// CRL is never published.
    pub fn refresh_signers(
        &mut self,
        signers: &[CrlSigner<'_>],
        known: &[&Certificate],
        store: &dyn Store,
        policy: &Policy,
        opts: &Options,
    ) -> Result<(), Error> {
        let now = opts.now;
        let cas: Vec<&Certificate> = signers.iter().map(CrlSigner::cert).chain(known.iter().copied()).collect();
        // A signing CA replaced meanwhile (a management intermediate renewed): its CRL stays in
        // the set until it lapses, and its entries with it. Once it lapsed, what they revoked
        // chains through a CA no verifier accepts any more, and they go.
        let ours = |issuer: &String| cas.iter().any(|c| c.subject() == *issuer);
        let standing: Vec<String> =
            self.set.crls().iter().filter(|c| c.next_update() > now).map(Crl::issuer).filter(|i| !ours(i)).collect();
        let lapsed: Vec<String> = self.set.crls().iter().filter(|c| c.next_update() <= now).map(Crl::issuer).collect();
        let before = self.list.revoked.len();
        self.list.revoked.retain(|r| ours(&r.issuer) || standing.contains(&r.issuer) || !lapsed.contains(&r.issuer));
        self.changed |= self.list.revoked.len() != before;
        self.list.check_against_or(&cas, &standing, REVOCATIONS_FILE)?;
        self.upstream.clear();
        let mut supplied: Option<Vec<(Crl, String)>> = None;
        for s in signers {
            let ca = s.cert();
            match s.remote {
                None => self.sign_own(s.ca, now)?,
                Some(Remote::Ready(vault)) => self.take_pki_crl(vault, ca, opts)?,
                Some(Remote::Down(down)) => {
                    let entries = self.entries_of(ca)?;
                    let held = self.set.of(ca).filter(|c| c.check(ca, now, CA_CRL).is_ok());
                    if !held.is_some_and(|c| lists_all(c, &entries)) {
                        return Err(down.error());
                    }
                    self.notes.push(format!("{}; meshca publishes the PKI's CRL as last fetched", down.error()));
                }
            }
            let path = s.ca.bundle().path();
            for (i, above) in path.iter().enumerate().skip(1).filter(|(_, c)| *c != ca) {
                let pki = s.issued_by.filter(|_| i == 1);
                self.upstream_crl(above, pki, store, policy, opts, &mut supplied)?;
            }
        }
        Ok(())
    }

    /// The entries `ca` issued, as the core's CRL takes them.
    fn entries_of(&self, ca: &Certificate) -> Result<Vec<Revoked>, Error> {
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
    fn sign_own(&mut self, signer: &SigningCa, now: OffsetDateTime) -> Result<(), Error> {
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

    /// The CRL of `ca`, which the PKI `vault` holds: every entry of `ca` revoked there first
    /// (not on a dry run), re-signed when it is about to expire, then checked and taken.
    fn take_pki_crl(&mut self, vault: &Vault, ca: &Certificate, opts: &Options) -> Result<(), Error> {
        let now = opts.now;
        let entries = self.entries_of(ca)?;
        let mut crl = vault.issuer_crl()?;
        let missing: Vec<&Revoked> = entries.iter().filter(|e| !revokes_serial(&crl, &e.serial)).collect();
        if !missing.is_empty() && !opts.dry_run {
            for e in &missing {
                vault.revoke(&e.serial)?;
            }
            crl = vault.issuer_crl()?;
        }
        if crl.next_update() - now <= UPSTREAM_REFRESH && !opts.dry_run {
            match vault.rotate_crl().and_then(|()| vault.issuer_crl()) {
                Ok(fresh) => crl = fresh,
                Err(e) => self
                    .notes
                    .push(format!("the PKI's CRL of {} expires soon, and re-signing it failed: {e}", ca.subject())),
            }
        }
        if !opts.dry_run && !lists_all(&crl, &entries) {
            return Err(Error::Provider {
                provider: vault.describe(),
                call: "reading the issuer's CRL".into(),
                fault: crate::error::ProviderFault::BadAnswer,
                detail: "the issuer's CRL does not list every certificate meshca revoked there".into(),
            });
        }
        let changed = self.set.import(crl, ca, now, "the issuer's CRL").map_err(|e| Error::Provider {
            provider: vault.describe(),
            call: "reading the issuer's CRL".into(),
            fault: crate::error::ProviderFault::BadAnswer,
            detail: e.to_string(),
        })?;
        self.changed |= changed;
        Ok(())
    }

    /// Makes sure the set holds a current CRL of `above`, a CA above a signing CA: from the
    /// PKI `pki` that issued the signing CA when given, else from the CRLs the operator
    /// supplies (read once per run into `supplied`).
    fn upstream_crl(
        &mut self,
        above: &Certificate,
        pki: Option<&VaultSigner>,
        store: &dyn Store,
        policy: &Policy,
        opts: &Options,
        supplied: &mut Option<Vec<(Crl, String)>>,
    ) -> Result<(), Error> {
        let now = opts.now;
        let name = above.subject();
        let fix = "supply a current CRL of that CA (spec.config.mgmtServerCa.upstreamCrlSecretRef, or the operator's \
                   upstream CRLs), or have the PKI re-sign its CRL"
            .to_owned();
        let mut source = String::new();
        if let Some(v) = pki {
            source = crate::vault::Connect::of(v, None).describe();
            if !self.set.holds_current(above, now, UPSTREAM_REFRESH) {
                let fetched = crate::signer::connect_vault(store, v, opts).and_then(|vault| {
                    let crl = vault.issuer_crl()?;
                    if crl.next_update() - now <= UPSTREAM_REFRESH && !opts.dry_run && vault.rotate_crl().is_ok() {
                        return vault.issuer_crl();
                    }
                    Ok(crl)
                });
                match fetched {
                    Ok(crl) => match self.set.import(crl, above, now, "the PKI's CRL") {
                        Ok(changed) => self.changed |= changed,
                        Err(e) => self.notes.push(format!("the CRL {source} gave for {name} was not taken: {e}")),
                    },
                    Err(e) => self.notes.push(format!("could not fetch the CRL of {name}: {e}")),
                }
            }
        } else {
            let pool = match supplied {
                Some(pool) => pool,
                None => supplied.insert(supplied_crls(store, policy, opts)?),
            };
            for (crl, from) in pool.iter().filter(|(c, _)| c.is_issued_by_name(above)) {
                source.clone_from(from);
                match self.set.import(crl.clone(), above, now, from) {
                    Ok(changed) => self.changed |= changed,
                    Err(e) if !self.set.holds_current(above, now, Duration::ZERO) => {
                        return Err(Error::UpstreamCrl { ca: name, problem: format!("{from}: {e}"), fix });
                    }
                    Err(_) => {}
                }
            }
        }
        let Some(held) = self.set.of(above).filter(|c| c.check(above, now, CA_CRL).is_ok()) else {
            let problem = match self.set.of(above) {
                Some(c) if c.next_update() <= now => {
                    format!("the one held expired at {}", meshca::format_time(c.next_update()))
                }
                _ if source.is_empty() => "none was supplied".to_owned(),
                _ => format!("none that verifies came from {source}"),
            };
            return Err(Error::UpstreamCrl { ca: name, problem, fix });
        };
        let next_update = held.next_update();
        // Well before it lapses: with less than UPSTREAM_WARNING, or half its validity, left.
        let warn_within = UPSTREAM_WARNING.min((next_update - held.this_update()) / 2);
        let expiring = pki.is_none() && next_update - now < warn_within;
        if expiring {
            tracing::warn!(ca = %name, next_update = %meshca::format_time(next_update), "an upstream CRL expires soon");
            self.notes.push(format!(
                "the upstream CRL of {name} expires {}: supply a newer one before then, or meshca stops publishing \
                 CRLs and every run fails",
                meshca::format_time(next_update)
            ));
        }
        if source.is_empty() {
            source = "held".into();
        }
        self.upstream.push(UpstreamCrl { ca: name, source, next_update, expiring });
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

/// Whether `crl` lists every one of `entries`.
fn lists_all(crl: &Crl, entries: &[Revoked]) -> bool {
    entries.iter().all(|e| revokes_serial(crl, &e.serial))
}

fn revokes_serial(crl: &Crl, serial: &[u8]) -> bool {
    let want = meshca::canonical_serial(serial);
    crl.entries().iter().any(|r| meshca::canonical_serial(&r.serial) == want)
}

/// The CRLs the operator supplies for upstream CAs: the run's (`opts.upstream_crls`), else the
/// policy's `mgmtServerCa.upstreamCrlSecretRef`; each with where it came from.
fn supplied_crls(store: &dyn Store, policy: &Policy, opts: &Options) -> Result<Vec<(Crl, String)>, Error> {
    let (pem, from) = match (&opts.upstream_crls, &policy.upstream_crl) {
        (Some(pem), _) => (pem.clone(), "the upstream CRLs given".to_owned()),
        (None, Some((name, key))) => {
            let secret = SecretRef::new(&opts.mgmt_cluster, &name.namespace, &name.name);
            let location = store.location(&secret);
            let files = store.read(&secret)?.ok_or_else(|| Error::PolicySecret {
                field: "spec.config.mgmtServerCa.upstreamCrlSecretRef".into(),
                secret: secret.to_string(),
                problem: format!("not found at {location}"),
                fix: "create it with the PEM CRLs of the CAs above the signing CA",
            })?;
            let pem = files.get(key).map(<[u8]>::to_vec).ok_or_else(|| Error::PolicySecret {
                field: "spec.config.mgmtServerCa.upstreamCrlSecretRef.key".into(),
                secret: secret.to_string(),
                problem: format!("({location}) has no key `{key}`"),
                fix: "put the PEM CRLs of the CAs above the signing CA there",
            })?;
            (pem, format!("{location}/{key}"))
        }
        (None, None) => return Ok(Vec::new()),
    };
    let crls = Crl::from_pem_all(&pem, &from).map_err(Error::core(from.clone()))?;
    Ok(crls.into_iter().map(|c| (c, from.clone())).collect())
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
