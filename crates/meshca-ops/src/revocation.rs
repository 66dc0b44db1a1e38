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
//! writer (`crate::writer::Writer`) before any bundle that depends on it (see `revocation_list`).

use serde::Serialize;
use time::Duration;

use meshca::{Certificate, Crl, RevocationReason, CA_CRL};

use crate::error::Error;
use crate::policy::Policy;
pub use crate::refusal::RevocationRefusal as Refusal;
pub use crate::revocation_list::{
    hex, list_secret, load, normalize_serial, CrlSummary, Fleet, RevocationList, RevokedCa, MAX_REVOKED,
    REVOCATIONS_FILE, ROOT_CRL_REFRESH, ROOT_CRL_VALIDITY,
};
use crate::store::{SecretRef, Store};

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
    /// The run: the revoked cluster re-issued, every bundle given the new CRL set (during a
    /// root rotation, the rotation's current step, carrying both roots' CRLs).
    pub run: crate::reconcile::Run,
}

impl RevocationReport {
    /// The report of a rebuilt list: its entries, and the run.
    pub fn rebuilt(entries: Vec<RevokedCa>, run: crate::reconcile::Run) -> Self {
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

/// Revokes the current CA of each of `clusters` at once, as the controller's revoke annotation
/// asks: every entry is recorded on the list, and the policy runs once (one CRL update, one
/// re-issue of each). Each is revoked deliberately (a replacement named again is revoked). A
/// cluster whose current CA is on the list already (recorded by an earlier pass whose re-issue
/// did not finish) adds no entry: the run replaces it. Nothing is written unless every cluster
/// can be revoked.
#[allow(clippy::too_many_arguments)]
pub fn revoke_clusters(
    store: &dyn Store,
    policy: &Policy,
    opts: &crate::reconcile::Options,
    clusters: &[String],
    reason: RevocationReason,
    rng: &mut dyn meshca::Entropy,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RevocationReport, Error> {
    let wanted: Vec<Wanted<'_>> =
        clusters.iter().map(|c| Wanted { cluster: c, serial: None, deliberate: true }).collect();
    revoke_entries(store, policy, opts, &wanted, true, reason, rng, progress)
}

/// One CA to revoke: `cluster`'s current one, or the one with `serial`; `deliberate` when the
/// operator named it (a replacement of an earlier revocation is then revoked too).
struct Wanted<'a> {
    cluster: &'a str,
    serial: Option<&'a str>,
    deliberate: bool,
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
    let wanted = [Wanted { cluster, serial, deliberate }];
    revoke_entries(store, policy, opts, &wanted, false, reason, rng, progress)
}

/// Records an entry for each of `wanted` on the list (all checked before any is recorded), and
/// runs the policy once with the new list. With `skip_revoked`, a CA already on the list is
/// skipped instead of refused.
#[allow(clippy::too_many_arguments)]
fn revoke_entries(
    store: &dyn Store,
    policy: &Policy,
    opts: &crate::reconcile::Options,
    wanted: &[Wanted<'_>],
    skip_revoked: bool,
    reason: RevocationReason,
    rng: &mut dyn meshca::Entropy,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RevocationReport, Error> {
    let ra = crate::ra::RaStore::wrap(store, policy, &opts.mgmt_cluster);
    let store: &dyn Store = match &ra {
        Some(r) => r,
        None => store,
    };
    // What the command line named is checked before the signer is loaded (loading a
    // `generated` one the first time creates it).
    for w in wanted {
        if !opts.clusters.iter().any(|c| c == w.cluster) {
            return Err(Refusal::UnknownCluster {
                cluster: w.cluster.to_owned(),
                known: meshca::list_bounded(&opts.clusters, 10),
            }
            .into());
        }
        if w.serial.is_some_and(|s| normalize_serial(s).is_none()) {
            return Err(Refusal::BadSerial.into());
        }
    }
    let signing = signing_cas(store, policy, opts, rng)?;
    let signer_cas: Vec<&Certificate> = signing.iter().map(|s| s.ca.bundle().ca_cert()).collect();
    // The signing CA itself (a management intermediate) is the upstream PKI's to revoke.
    for w in wanted {
        let Some(serial) = w.serial.and_then(normalize_serial) else { continue };
        if let Some(s) =
            signing.iter().find(|s| hex(meshca::canonical_serial(s.ca.bundle().ca_cert().serial_bytes())) == serial)
        {
            let colons: Vec<String> =
                serial.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            let how = match &s.issued_by {
                Some(v) => format!("bao write {}/revoke serial_number={}", v.mount, colons.join(":")),
                None => "at the CA that issued it".to_owned(),
            };
            return Err(Refusal::UpstreamRevokes { signer: s.ca.bundle().ca_cert().subject(), serial, how }.into());
        }
    }
    let stored = load(store, policy, &opts.mgmt_cluster)?;
    let mut list = stored.as_ref().map(|f| f.list.clone()).unwrap_or_default();
    let list_location = store.location(&list_secret(policy, &opts.mgmt_cluster));
    list.check_against(&signer_cas, &list_location)?;
    let mut entries = Vec::new();
    for w in wanted {
        if list.revoked.len() >= MAX_REVOKED {
            return Err(Refusal::Full.into());
        }
        match entry_for(store, opts, &list, &signer_cas, w, reason) {
            Ok(entry) => {
                list.revoked.push(entry.clone());
                entries.push(entry);
            }
            Err(Error::Revocation(Refusal::AlreadyRevoked { .. })) if skip_revoked => {}
            Err(e) => return Err(e),
        }
    }
    run_with(store, policy, opts, list, entries, rng, progress)
}

/// The list entry for one wanted CA, checked against `list` and the signing roots (the first
/// the one issuing now: an older CA recorded by serial alone is taken to be its).
fn entry_for(
    store: &dyn Store,
    opts: &crate::reconcile::Options,
    list: &RevocationList,
    signers: &[&Certificate],
    w: &Wanted<'_>,
    reason: RevocationReason,
) -> Result<RevokedCa, Error> {
    let (cluster, deliberate) = (w.cluster, w.deliberate);
    let signer_ca = signers.first().copied().ok_or(Refusal::NoSigner)?;
    // Named clusters and serials were checked by the caller.
    let wanted = w.serial.and_then(normalize_serial);
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
    // The current CA, named by serial (`named`) or not.
    let current_entry = |ca: Certificate, named: bool| -> Result<RevokedCa, Error> {
        if !signers.iter().any(|s| ca.is_issued_by(s)) {
            return Err(Refusal::NotIssuedBySigner {
                cluster: cluster.to_owned(),
                issuer: ca.issuer(),
                signer: meshca::list_bounded(signers.iter().map(|s| s.subject()), 2),
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
    Ok(entry)
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
    let ra = crate::ra::RaStore::wrap(store, policy, &opts.mgmt_cluster);
    let store: &dyn Store = match &ra {
        Some(r) => r,
        None => store,
    };
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
    // What a PKI revoked stays revoked there: its CRL would go on listing it.
    let pki_signs =
        |v: Option<&crate::policy::VaultSigner>| v.is_some_and(|v| v.signs == crate::policy::Signs::Clusters);
    if pki_signs(policy.vault.as_ref()) || pki_signs(policy.root_rotation.as_ref().and_then(|r| r.new_vault.as_ref())) {
        for s in signing_cas(store, policy, opts, rng)?.iter().filter(|s| s.remote.is_some()) {
            let subject = s.ca.bundle().ca_cert().subject();
            if let Some(r) = taken.iter().find(|r| r.issuer == subject) {
                return Err(Refusal::RevokedAtPki {
                    cluster: r.cluster.clone(),
                    serial: r.serial.clone(),
                    provider: s.ca.bundle().ca_key().external().unwrap_or_default(),
                }
                .into());
            }
        }
    }
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
    let ra = crate::ra::RaStore::wrap(store, policy, &opts.mgmt_cluster);
    let store: &dyn Store = match &ra {
        Some(r) => r,
        None => store,
    };
    if rotation_under_way(store, policy, opts)?.is_some() {
        return Err(Refusal::RebuildDuringRootRotation.into());
    }
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
        opts.intent = crate::context::Intent::Revise(list);
        crate::reconcile::reconcile(store, policy, &opts, rng, progress)?
    } else {
        let mut fleet = Fleet::rebuilt(list, set);
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
    opts.intent = crate::context::Intent::Revise(list);
    // During a root rotation the rotation's step publishes the list (both roots' CRLs) and
    // re-issues the revoked intermediate from the phase's signer.
    let run = if rotation_under_way(store, policy, &opts)?.is_some() {
        crate::reconcile::run(store, policy, &opts, rng, progress)?
    } else {
        crate::reconcile::Run::Reconciled(crate::reconcile::reconcile(store, policy, &opts, rng, progress)?)
    };
    Ok(RevocationReport { entries, run })
}

fn rotation_under_way(
    store: &dyn Store,
    policy: &Policy,
    opts: &crate::reconcile::Options,
) -> Result<Option<crate::rootrotation::Stored>, Error> {
    Ok(crate::rootrotation::load(store, policy, &opts.mgmt_cluster)?.filter(|s| s.in_progress()))
}

/// The signing CAs whose CRLs may list a cluster intermediate: the policy's signer; during a
/// root rotation, the signer of its current phase first, then the other.
fn signing_cas(
    store: &dyn Store,
    policy: &Policy,
    opts: &crate::reconcile::Options,
    rng: &mut dyn meshca::Entropy,
) -> Result<Vec<crate::signer::Opened>, Error> {
    let Some(rotation) = rotation_under_way(store, policy, opts)? else {
        let loaded = crate::signer::load(store, policy, opts, rng)?;
        return Ok(vec![crate::signer::Opened { ca: loaded.ca, remote: loaded.remote, issued_by: loaded.issued_by }]);
    };
    let signers = crate::signer::Signers::new(store, policy, opts);
    let old_ref = signers.policy_secret();
    let mut notes = Vec::new();
    let old = signers
        .open(&old_ref, rng, &mut notes)?
        .ok_or_else(|| Error::SignerNotFound { secret: old_ref.to_string(), location: store.location(&old_ref) })?;
    let new = signers.open(&rotation.new_signer, rng, &mut notes).ok().flatten();
    let mut all: Vec<crate::signer::Opened> = [Some(old), new].into_iter().flatten().collect();
    if rotation.rotation.target_signer() == meshca::Signer::New {
        all.reverse();
    }
    Ok(all)
}

fn held(list: &RevocationList) -> String {
    if list.revoked.is_empty() {
        return "no entries".into();
    }
    meshca::list_bounded(list.revoked.iter().map(|r| format!("{} (serial {})", r.cluster, r.serial)), 10)
}
