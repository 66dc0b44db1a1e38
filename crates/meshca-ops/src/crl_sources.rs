//! Where the fleet's CRLs come from, for every kind of signing CA: signed with the CA's key (a
//! Secret, a token), fetched from the PKI that holds it or issued it, or supplied by the
//! operator for an upstream meshca cannot reach. The list and set themselves are
//! `revocation_list`'s; the core checks every CRL taken ([`meshca::CrlSet::import`]).

use time::Duration;

use meshca::{Certificate, Crl, Revoked, SigningCa, CA_CRL};

use crate::context::Options;
use crate::error::Error;
use crate::policy::{Policy, VaultSigner};
use crate::revocation_list::{Fleet, UpstreamCrl, REVOCATIONS_FILE};
use crate::signer::{Opened, Remote};
use crate::store::{SecretRef, Store};
use crate::vault::Vault;

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

impl<'a> From<&'a Opened> for CrlSigner<'a> {
    /// The CA as the fleet's CRL set needs it: who signs its CRL, and where the CRL of the CA
    /// above it comes from.
    fn from(o: &'a Opened) -> Self {
        CrlSigner::new(&o.ca, o.remote.as_ref(), o.issued_by.as_ref())
    }
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
    fleet: &mut Fleet,
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
        fleet.set.crls().iter().filter(|c| c.next_update() > now).map(Crl::issuer).filter(|i| !ours(i)).collect();
    let lapsed: Vec<String> = fleet.set.crls().iter().filter(|c| c.next_update() <= now).map(Crl::issuer).collect();
    let before = fleet.list.revoked.len();
    fleet.list.revoked.retain(|r| ours(&r.issuer) || standing.contains(&r.issuer) || !lapsed.contains(&r.issuer));
    fleet.changed |= fleet.list.revoked.len() != before;
    fleet.list.check_against_or(&cas, &standing, REVOCATIONS_FILE)?;
    fleet.upstream.clear();
    let mut supplied: Option<Vec<(Crl, String)>> = None;
    for s in signers {
        let ca = s.cert();
        match s.remote {
            None => fleet.sign_own(s.ca, now)?,
            Some(Remote::Ready(vault)) => take_pki_crl(fleet, vault, ca, opts)?,
            Some(Remote::Down(down)) => {
                let entries = fleet.entries_of(ca)?;
                let held = fleet.set.of(ca).filter(|c| c.check(ca, now, CA_CRL).is_ok());
                if !held.is_some_and(|c| lists_all(c, &entries)) {
                    return Err(down.error());
                }
                fleet.notes.push(format!("{}; meshca publishes the PKI's CRL as last fetched", down.error()));
            }
        }
        let path = s.ca.bundle().path();
        for (i, above) in path.iter().enumerate().skip(1).filter(|(_, c)| *c != ca) {
            let pki = s.issued_by.filter(|_| i == 1);
            upstream_crl(fleet, above, pki, store, policy, opts, &mut supplied)?;
        }
    }
    Ok(())
}

/// The CRL of `ca`, which the PKI `vault` holds: every entry of `ca` revoked there first
/// (not on a dry run), re-signed when it is about to expire, then checked and taken.
fn take_pki_crl(fleet: &mut Fleet, vault: &Vault, ca: &Certificate, opts: &Options) -> Result<(), Error> {
    let now = opts.now;
    let entries = fleet.entries_of(ca)?;
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
            Err(e) => fleet
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
    let changed = fleet.set.import(crl, ca, now, "the issuer's CRL").map_err(|e| Error::Provider {
        provider: vault.describe(),
        call: "reading the issuer's CRL".into(),
        fault: crate::error::ProviderFault::BadAnswer,
        detail: e.to_string(),
    })?;
    fleet.changed |= changed;
    Ok(())
}

/// Makes sure the set holds a current CRL of `above`, a CA above a signing CA: from the
/// PKI `pki` that issued the signing CA when given, else from the CRLs the operator
/// supplies (read once per run into `supplied`).
fn upstream_crl(
    fleet: &mut Fleet,
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
        if !fleet.set.holds_current(above, now, UPSTREAM_REFRESH) {
            let fetched = crate::signer::connect_vault(store, v, opts).and_then(|vault| {
                let crl = vault.issuer_crl()?;
                if crl.next_update() - now <= UPSTREAM_REFRESH && !opts.dry_run && vault.rotate_crl().is_ok() {
                    return vault.issuer_crl();
                }
                Ok(crl)
            });
            match fetched {
                Ok(crl) => match fleet.set.import(crl, above, now, "the PKI's CRL") {
                    Ok(changed) => fleet.changed |= changed,
                    Err(e) => fleet.notes.push(format!("the CRL {source} gave for {name} was not taken: {e}")),
                },
                Err(e) => fleet.notes.push(format!("could not fetch the CRL of {name}: {e}")),
            }
        }
    } else {
        let pool = match supplied {
            Some(pool) => pool,
            None => supplied.insert(supplied_crls(store, policy, opts)?),
        };
        // Every one of its CRLs supplied is tried (the newest valid one is kept); what was wrong
        // with the last refused one is said only if none is left to publish.
        let mut refused = None;
        for (crl, from) in pool.iter().filter(|(c, _)| c.is_issued_by_name(above)) {
            source.clone_from(from);
            match fleet.set.import(crl.clone(), above, now, from) {
                Ok(changed) => fleet.changed |= changed,
                Err(e) => refused = Some(format!("{from}: {e}")),
            }
        }
        if let Some(problem) = refused.filter(|_| !fleet.set.holds_current(above, now, Duration::ZERO)) {
            return Err(Error::UpstreamCrl { ca: name, problem, fix });
        }
    }
    let Some(held) = fleet.set.of(above).filter(|c| c.check(above, now, CA_CRL).is_ok()) else {
        let problem = match fleet.set.of(above) {
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
        fleet.notes.push(format!(
            "the upstream CRL of {name} expires {}: supply a newer one before then, or meshca stops publishing \
             CRLs and every run fails",
            meshca::format_time(next_update)
        ));
    }
    if source.is_empty() {
        source = "held".into();
    }
    fleet.upstream.push(UpstreamCrl { ca: name, source, next_update, expiring });
    Ok(())
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
