//! The reconcile loop: for each cluster, ask the core's rotation plan, then issue, rotate or keep,
//! against any [`Store`]. It makes no PKI decision of its own.

use time::OffsetDateTime;

use meshca::{plan, Cacerts, Certificate, Current, Entropy, Facts, IssueReason, Plan, SigningCa};

use crate::error::{Error, ErrorKind};
use crate::policy::Policy;
use crate::revocation_list as revocation;
use crate::rootrotation::{self, RotationReport};
use crate::store::{SecretRef, Store};
use crate::writer::Writer;

/// How often a cluster is re-read and re-planned when someone else wrote its Secret between
/// our read and our write.
const CONFLICT_RETRIES: usize = 3;

pub use crate::context::{Intent, Options, RotateNow, TokenAccess};
pub use crate::report::{Action, ClusterResult, Report, RootInfo, SignerInfo, Trust, TrustState};
pub use crate::signer::load_signer;

/// Reads the policy's passive roots (`passiveCertificateAuthorities`): each Secret's
/// `root-cert.pem`, or `ca.crt`, every certificate a self-signed CA valid at `now`.
pub fn passive_roots(
    store: &dyn Store,
    policy: &Policy,
    mgmt: &str,
    now: OffsetDateTime,
) -> Result<Vec<Certificate>, Error> {
    let mut roots: Vec<Certificate> = Vec::new();
    for (i, p) in policy.passive.iter().enumerate() {
        let secret = SecretRef::new(mgmt, &p.namespace, &p.name);
        let location = store.location(&secret);
        let field = format!("spec.config.passiveCertificateAuthorities[{i}]");
        let files = store.read(&secret)?.ok_or_else(|| Error::PolicySecret {
            field: field.clone(),
            secret: secret.to_string(),
            problem: format!("not found at {location}"),
            fix: "create it with the root to trust",
        })?;
        let (key, pem) = [meshca::ROOT_CERT, meshca::CA_CRT]
            .into_iter()
            .find_map(|k| files.get(k).map(|pem| (k, pem)))
            .ok_or_else(|| Error::PolicySecret {
                field: field.clone(),
                secret: secret.to_string(),
                problem: format!("({location}) has neither {} nor {}", meshca::ROOT_CERT, meshca::CA_CRT),
                fix: "put the root to trust in one",
            })?;
        let found = meshca::parse_roots(pem, &format!("{location}/{key}"), now).map_err(Error::core(field))?;
        roots = meshca::union_roots(&roots, &found);
    }
    Ok(roots)
}

/// What [`run`] did (exhaustive: a caller must show every kind of run). As JSON, the report
/// it holds.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Run {
    /// The usual loop: issue, rotate or keep each cluster's intermediate.
    Reconciled(Report),
    /// A root rotation is under way; the run applied its current step instead.
    RootRotation(RotationReport),
}

impl Run {
    /// Whether every cluster succeeded (and, for the usual loop, the fleet's trust checks out).
    pub fn ok(&self) -> bool {
        match self {
            Run::Reconciled(r) => r.ok(),
            Run::RootRotation(r) => !r.failed(),
        }
    }

    /// The usual loop's report, if the run was one.
    pub fn reconciled(&self) -> Option<&Report> {
        match self {
            Run::Reconciled(r) => Some(r),
            Run::RootRotation(_) => None,
        }
    }
}

/// One run of a policy, as the CLI and the controller do it: the root rotation under way (or
/// one the policy asks for) first, else the usual loop, with the policy's passive roots in
/// every trust bundle.
pub fn run(
    store: &dyn Store,
    policy: &Policy,
    opts: &Options,
    rng: &mut dyn Entropy,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Run, Error> {
    let ra = crate::ra::RaStore::wrap(store, policy, &opts.mgmt_cluster);
    let store: &dyn Store = match &ra {
        Some(r) => r,
        None => store,
    };
    let passive = passive_roots(store, policy, &opts.mgmt_cluster, opts.now)?;
    let outcome = rootrotation::run(store, policy, &passive, opts, rng)?;
    match outcome {
        rootrotation::Outcome::Rotating(r) => Ok(Run::RootRotation(r)),
        rootrotation::Outcome::Idle { signer, notes } => {
            let mut opts = opts.clone();
            if signer.is_some() {
                opts.signer_override = signer;
            }
            let mut report = reconcile_with(store, policy, &passive, &opts, rng, progress)?;
            report.notes.extend(notes);
            Ok(Run::Reconciled(report))
        }
    }
}

/// Runs the loop (without root rotation: see [`run`]), reading the policy's passive roots.
/// `progress(done, total)` is called after each cluster.
pub fn reconcile(
    store: &dyn Store,
    policy: &Policy,
    opts: &Options,
    rng: &mut dyn Entropy,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report, Error> {
    let ra = crate::ra::RaStore::wrap(store, policy, &opts.mgmt_cluster);
    let store: &dyn Store = match &ra {
        Some(r) => r,
        None => store,
    };
    let passive = passive_roots(store, policy, &opts.mgmt_cluster, opts.now)?;
    reconcile_with(store, policy, &passive, opts, rng, progress)
}

fn reconcile_with(
    store: &dyn Store,
    policy: &Policy,
    passive: &[Certificate],
    opts: &Options,
    rng: &mut dyn Entropy,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report, Error> {
    let with_passive;
    let policy = if passive.is_empty() {
        policy
    } else {
        let mut p = policy.clone();
        p.rotation.passive_roots = passive.to_vec();
        with_passive = p;
        &with_passive
    };
    let loaded = crate::signer::load(store, policy, opts, rng)?;
    let (signer, signer_info, remote, issued_by) = (loaded.ca, loaded.info, loaded.remote, loaded.issued_by);
    let mut fleet = match opts.intent.revocations() {
        Some(list) => {
            // The caller's list replaces the stored one; a stored one that cannot be read (the
            // dry run of a rebuild) only lends no CRLs.
            let stored = revocation::load(store, policy, &opts.mgmt_cluster).ok().flatten();
            Some(revocation::Fleet::with_list(stored, list.clone()))
        }
        None => revocation::load(store, policy, &opts.mgmt_cluster)?,
    };
    let mut prepared = Prepared::default();
    if let Some(fleet) = fleet.as_mut() {
        let crl_signer = crate::crl_sources::CrlSigner::new(&signer, remote.as_ref(), issued_by.as_ref());
        prepared = prepare_crls(store, policy, crl_signer, fleet, opts, rng)?;
    }
    let crl_pem = fleet.as_ref().map(revocation::Fleet::crl_pem);
    let revoked = fleet.as_ref().map(revocation::Fleet::entries).unwrap_or_default();
    let ctx = Ctx {
        signer: &signer,
        remote: remote.as_ref(),
        fleet: fleet.as_ref(),
        revoked,
        crl_pem: crl_pem.as_deref(),
        prepared: &prepared,
    };
    // Each bundle is dropped once it is added to the trust check, which keeps only the distinct
    // roots and trust bundles: memory stays flat however many clusters there are. Results keep
    // the clusters' order, and the check judges as if in that order, whichever worker finished
    // first.
    let total = opts.clusters.len();
    let mut results: Vec<Option<ClusterResult>> = vec![None; total];
    let mut trust_check = meshca::TrustCheck::new();
    let mut checked_any = false;
    let mut done = 0;
    let mut take = |i: usize, result: ClusterResult, bundle: Option<Cacerts>| {
        if let Some(b) = bundle {
            trust_check.add_at(i, &result.cluster, b.trust_chain());
            checked_any = true;
        }
        results[i] = Some(result);
        done += 1;
        progress(done, total);
    };
    // With CRLs in use, a new intermediate's CRL must be in every other cluster's ca-crl.pem
    // before that intermediate is (istio#61075): the clusters keeping theirs are written first.
    let (issuing, others): (Vec<usize>, Vec<usize>) =
        (0..total).partition(|&i| prepared.bundles.contains_key(&opts.clusters[i]));
    for mut batch in [others, issuing] {
        // Between the two batches: no new intermediate is written while a peer lacks its CRL.
        if ctx.fleet.is_some() && batch.iter().any(|&i| prepared.bundles.contains_key(&opts.clusters[i])) {
            let lacking = peers_lacking_the_set(store, policy, &ctx, opts);
            if !lacking.is_empty() {
                batch.retain(|&i| {
                    let cluster = &opts.clusters[i];
                    let peers: Vec<&String> = lacking.iter().filter(|p| *p != cluster).collect();
                    if peers.is_empty() {
                        return true;
                    }
                    let (result, kept) = held_back(store, cluster, &peers, opts);
                    take(i, result, kept);
                    false
                });
            }
        }
        if batch.is_empty() {
            continue;
        }
        let workers = workers_for(batch.len(), store.batch_writers(), rng);
        if workers.is_empty() {
            for &i in &batch {
                let (result, bundle) = reconcile_one(store, policy, &ctx, &opts.clusters[i], opts, rng);
                take(i, result, bundle);
            }
        } else {
            in_parallel(store, policy, &ctx, opts, &batch, workers, &mut take);
        }
    }
    let results: Vec<ClusterResult> = results.into_iter().flatten().collect();
    let checked = if checked_any {
        trust_check.finish().map(|s| s.fingerprint).map_err(|e| e.to_string())
    } else {
        Err("no cluster has a valid bundle".to_owned())
    };
    let trust = match checked {
        Ok(fp) => Trust { ok: true, root_fingerprint: Some(fp), error: None },
        Err(e) => Trust { ok: false, root_fingerprint: None, error: Some(e) },
    };
    let mut next_check = results.iter().filter_map(|r| r.next_check).min();
    // An upstream CRL is fetched again (or warned about) before it lapses: come back by then.
    if let Some(t) = fleet.as_ref().and_then(|f| f.upstream().iter().map(|u| u.next_update).min()) {
        let due = t - crate::crl_sources::UPSTREAM_REFRESH;
        next_check = Some(next_check.map_or(due, |n| n.min(due)));
    }
    // The root's CRL is re-signed once under ROOT_CRL_REFRESH is left: come back by then (a
    // 30-day intermediate would otherwise leave it stale for weeks).
    if let Some(refresh) = fleet
        .as_ref()
        .and_then(|f| f.summary(String::new(), &signer).next_update)
        .map(|t| t - revocation::ROOT_CRL_REFRESH)
    {
        next_check = Some(next_check.map_or(refresh, |n| n.min(refresh)));
    }
    // The trust set every bundle holds now, published beyond the mesh. The clusters' bundles
    // are written by now: a failure here is the run's note, not the run's failure.
    let (distribution, distribution_note) = match &policy.trust_distribution {
        None => (None, None),
        Some(_) => {
            let published = meshca::TrustSet::new(policy.rotation.trust_bundle(&signer))
                .map_err(Error::core("spec.config.trustDistribution"))
                .and_then(|set| crate::distribution::publish(store, policy, opts, &set, None));
            match published {
                Ok(d) => (d.map(Box::new), None),
                Err(e) => (None, Some(format!("the trust set was not published beyond the mesh: {e}"))),
            }
        }
    };
    Ok(Report {
        policy: policy.name.clone(),
        at: opts.now,
        dry_run: opts.dry_run,
        signer: signer_info,
        clusters: results,
        trust,
        next_check,
        notes: policy
            .notes
            .iter()
            .cloned()
            .chain(loaded.notes)
            .chain(fleet.as_ref().map(|f| f.notes().to_vec()).unwrap_or_default())
            .chain(distribution_note)
            .collect(),
        provider_fault: match &remote {
            Some(crate::signer::Remote::Down(d)) => Some(d.fault()),
            _ => None,
        },
        roots: policy
            .rotation
            .trust_bundle(&signer)
            .iter()
            .map(|r| RootInfo { subject: r.subject(), fingerprint: r.fingerprint_sha256(), not_after: r.not_after() })
            .collect(),
        distribution,
        crl: fleet.map(|f| {
            Box::new(f.summary(store.location(&revocation::list_secret(policy, &opts.mgmt_cluster)), &signer))
        }),
    })
}

/// The clusters of the fleet (every cluster of this run, and every other cluster the store
/// knows to hold a `cacerts`) whose bundle does not carry the CRL set about to cover the new
/// intermediates: Envoy, like `openssl -crl_check_all`, refuses a chain in which some CA has no
/// CRL, so a new intermediate must not reach any cluster before its CRL reaches all of them
/// (istio#61075). A cluster that holds no CRL set checks none and accepts it. A cluster being
/// re-issued in this run that still holds a valid, unrevoked intermediate is first given the
/// new set with the intermediate it has (a trust-only write), so several clusters can be
/// re-issued in one run. Clusters with no bundle, an invalid one, or
/// a revoked intermediate have no workload the new intermediate's could break. A dry run
/// writes nothing and so holds nothing back.
fn peers_lacking_the_set(store: &dyn Store, policy: &Policy, ctx: &Ctx<'_>, opts: &Options) -> Vec<String> {
    let (Some(fleet), Some(pem)) = (ctx.fleet, ctx.crl_pem) else { return Vec::new() };
    if opts.dry_run {
        return Vec::new();
    }
    let mut fleet_clusters: std::collections::BTreeSet<String> = opts.clusters.iter().cloned().collect();
    match store.clusters_with_cacerts() {
        Ok(found) => fleet_clusters.extend(found),
        Err(e) => tracing::warn!(error = %e, "cannot list the store's clusters; checking the run's clusters only"),
    }
    fleet_clusters.remove(&opts.mgmt_cluster);
    let writer = opts.writer(store, policy).with_crls(Some((pem, fleet.crls())));
    let mut lacking = Vec::new();
    for cluster in fleet_clusters {
        let secret = SecretRef::cacerts(&cluster);
        let files = match store.read(&secret) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(_) => {
                lacking.push(cluster);
                continue;
            }
        };
        // The set it holds is the new one; or it holds none, and so checks no CRL at all.
        if files.get(meshca::CA_CRL).is_none_or(|held| held == pem) {
            continue;
        }
        let Ok(bundle) = Cacerts::from_files(&files, opts.now) else { continue };
        if fleet.is_revoked(bundle.ca_cert()) {
            continue;
        }
        if ctx.prepared.bundles.contains_key(&cluster) && writer.write_bundle(&secret, &bundle).is_ok() {
            continue;
        }
        lacking.push(cluster);
    }
    lacking
}

/// The result of a cluster whose new intermediate was held back because `peers` lack its CRL:
/// it keeps what it has.
fn held_back(store: &dyn Store, cluster: &str, peers: &[&String], opts: &Options) -> (ClusterResult, Option<Cacerts>) {
    let secret = SecretRef::cacerts(cluster);
    let kept = store.read(&secret).ok().flatten().and_then(|f| Cacerts::from_files(&f, opts.now).ok());
    let mut result = ClusterResult::failed(
        cluster,
        store.location(&secret),
        format!(
            "its new intermediate was not written: the CRL set that covers it has not reached {} yet, whose \
             workloads would refuse it (a cluster that checks CRLs needs one for every intermediate in use); \
             reconcile every cluster of the fleet together",
            meshca::list_bounded(peers, 10)
        ),
    );
    result.error_kind = Some(ErrorKind::Revocation);
    result.not_after = kept.as_ref().map(Cacerts::not_after);
    (result, kept)
}

/// What a run's workers share.
struct Ctx<'a> {
    signer: &'a SigningCa,
    /// The PKI that signs each cluster intermediate, when one does (`signs: clusters`).
    remote: Option<&'a crate::signer::Remote>,
    fleet: Option<&'a revocation::Fleet>,
    /// The fleet's revocations, as the core's plan takes them.
    revoked: Vec<meshca::Revoked>,
    crl_pem: Option<&'a [u8]>,
    prepared: &'a Prepared,
}

/// Intermediates issued ahead of the run, so their CRLs could be published first; and the
/// clusters whose issuance failed then.
#[derive(Default)]
struct Prepared {
    bundles: std::collections::BTreeMap<String, Cacerts>,
    failed: std::collections::BTreeMap<String, (String, ErrorKind)>,
    /// What preparing read, parsed and planned for each cluster: the cluster's first attempt
    /// acts on it instead of reading and planning it again.
    first: std::collections::BTreeMap<String, Seen>,
}

/// A cluster's bundle as read (`None`: absent), parsed, and the plan for it.
struct Seen {
    files: Option<meshca::Files>,
    parsed: Option<meshca::Result<Cacerts>>,
    plan: Plan,
}

/// The core's plan for a cluster, given what the run knows: the fleet's revocations and
/// whether it publishes CRLs (`revoked` is `fleet`'s entries), and what the operator asked for.
fn plan_for(
    policy: &Policy,
    ctx_signer: &SigningCa,
    fleet: Option<&revocation::Fleet>,
    revoked: &[meshca::Revoked],
    cluster: &str,
    current: Current<'_>,
    opts: &Options,
) -> Plan {
    let facts = Facts::new(revoked, fleet.is_some(), opts.intent.rotate_now().wants(cluster));
    plan(&policy.rotation, ctx_signer, cluster, current, &facts, opts.now)
}

/// With a revocation list: brings the root's CRL up to date, gives every intermediate in use a
/// CRL, issues (without writing) the intermediates this run will replace and adds their CRLs,
/// and saves the list and set. Bundles are written after this, carrying the saved set.
fn prepare_crls(
    store: &dyn Store,
    policy: &Policy,
    crl_signer: crate::crl_sources::CrlSigner<'_>,
    fleet: &mut revocation::Fleet,
    opts: &Options,
    rng: &mut dyn Entropy,
) -> Result<Prepared, Error> {
    let now = opts.now;
    let (signer, remote) = (crl_signer.ca(), crl_signer.remote());
    crate::crl_sources::refresh_signers(fleet, &[crl_signer], &[], store, policy, opts)?;
    let revoked = fleet.entries();
    let mut prepared = Prepared::default();
    for cluster in &opts.clusters {
        // A cluster that cannot be read is reported by the run itself.
        let Ok(files) = store.read(&SecretRef::cacerts(cluster)) else { continue };
        let parsed = files.as_ref().map(|f| Cacerts::from_files(f, now));
        let current = Current::of(parsed.as_ref());
        let planned = plan_for(policy, signer, Some(fleet), &revoked, cluster, current, opts);
        let valid = parsed.as_ref().and_then(|p| p.as_ref().ok()).cloned();
        prepared.first.insert(cluster.clone(), Seen { files, parsed, plan: planned.clone() });
        match planned {
            Plan::Issue { .. } => {
                match crate::signer::issue_bundle(&policy.rotation, signer, remote, cluster, opts, rng) {
                    Ok(bundle) => {
                        // The intermediate replaced keeps a CRL while its workloads' certificates live
                        // on; a revoked one too, so that taking the revocation back (`unrevoke`)
                        // makes them verify again (the root's CRL refuses them meanwhile).
                        if let Some(old) = &valid {
                            // One that cannot sign CRLs (or is not ours) gets none: its workloads'
                            // certificates are refused once CRLs are in use, until they renew.
                            if let Err(e) = fleet.cover(old, now) {
                                tracing::warn!(cluster = %cluster, error = %e, "no CRL for the intermediate being replaced");
                            }
                        }
                        fleet.cover(&bundle, now)?;
                        prepared.bundles.insert(cluster.clone(), bundle);
                    }
                    Err(e) => {
                        prepared.failed.insert(cluster.clone(), (e.to_string(), e.kind()));
                    }
                }
            }
            _ => {
                if let Some(b) = &valid {
                    fleet.cover(b, now)?;
                }
            }
        }
    }
    fleet.save(&opts.writer(store, policy), policy, &opts.mgmt_cluster)?;
    Ok(prepared)
}

/// The most threads a run uses: issuing (key generation, signing) and validating are CPU work
/// per cluster; a Kubernetes store also overlaps API round trips.
const MAX_WORKERS: usize = 8;

/// One entropy source per worker thread when the run's source can fork (the OS generator), and
/// more than one cluster and one core (or a store that makes concurrent writes durable
/// together, `batch_writers` of them): else none, and the run stays on this thread.
fn workers_for(clusters: usize, batch_writers: usize, rng: &mut dyn Entropy) -> Vec<Box<dyn Entropy + Send>> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let n = cores.min(MAX_WORKERS).max(batch_writers).min(clusters);
    if n < 2 {
        return Vec::new();
    }
    (0..n).map_while(|_| rng.fork()).collect()
}

/// Reconciles every cluster on `workers.len()` threads (clusters handed out one at a time, so
/// a slow cluster does not hold up a share of others), passing each result to `take` with the
/// cluster's position as it arrives.
fn in_parallel(
    store: &dyn Store,
    policy: &Policy,
    ctx: &Ctx<'_>,
    opts: &Options,
    batch: &[usize],
    workers: Vec<Box<dyn Entropy + Send>>,
    take: &mut dyn FnMut(usize, ClusterResult, Option<Cacerts>),
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, ClusterResult, Option<Cacerts>)>(workers.len());
    std::thread::scope(|scope| {
        for mut rng in workers {
            let (tx, next) = (tx.clone(), &next);
            let span = tracing::Span::current();
            scope.spawn(move || {
                let _entered = span.enter();
                while let Some(&i) = batch.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let Some(cluster) = opts.clusters.get(i) else { break };
                    let (result, bundle) = reconcile_one(store, policy, ctx, cluster, opts, rng.as_mut());
                    if tx.send((i, result, bundle)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, result, bundle) in rx {
            take(i, result, bundle);
        }
    });
}

fn reconcile_one(
    store: &dyn Store,
    policy: &Policy,
    ctx: &Ctx<'_>,
    cluster: &str,
    opts: &Options,
    rng: &mut dyn Entropy,
) -> (ClusterResult, Option<Cacerts>) {
    let _span = tracing::info_span!("cluster", cluster).entered();
    let mut attempt = 0;
    loop {
        attempt += 1;
        // The first attempt acts on what preparing read; a retry after a conflict reads afresh.
        let first = if attempt == 1 { ctx.prepared.first.get(cluster) } else { None };
        match reconcile_attempt(store, policy, ctx, cluster, first, opts, rng) {
            Attempt::Conflict(_) if attempt < CONFLICT_RETRIES => {
                tracing::debug!(attempt, "the Secret changed while meshca worked; re-reading");
                continue;
            }
            Attempt::Conflict(mut result) => {
                result.reason =
                    format!("{} (gave up after {attempt} conflicting writes by someone else)", result.reason);
                return (result, None);
            }
            Attempt::Done(mut result, bundle) => {
                // Read-only, so a dry run (`meshca status`) reports it too.
                if let Some(b) = &bundle {
                    result.trust = Some(match store.istiod_roots(cluster) {
                        Ok(published) => TrustState::of(published.as_deref(), b),
                        Err(e) => {
                            result.warnings.push(format!("cannot read what istiod loaded: {e}"));
                            TrustState::Unobserved
                        }
                    });
                }
                return (result, bundle.map(|b| *b));
            }
        }
    }
}

enum Attempt {
    Done(ClusterResult, Option<Box<Cacerts>>),
    /// Someone else wrote the Secret between our read and our write: read and plan again.
    Conflict(ClusterResult),
}

#[allow(clippy::too_many_arguments)]
fn reconcile_attempt(
    store: &dyn Store,
    policy: &Policy,
    ctx: &Ctx<'_>,
    cluster: &str,
    first: Option<&Seen>,
    opts: &Options,
    rng: &mut dyn Entropy,
) -> Attempt {
    let secret = SecretRef::cacerts(cluster);
    let mut result = ClusterResult::failed(cluster, store.location(&secret), String::new());
    let now = opts.now;
    let signer = ctx.signer;
    let writer = opts.writer(store, policy).with_crls(ctx.crl_pem.zip(ctx.fleet.map(revocation::Fleet::crls)));
    let (existing, parsed, planned) = match first {
        Some(seen) => (seen.files.clone(), seen.parsed.clone(), seen.plan.clone()),
        None => {
            let existing = match store.read(&secret) {
                Ok(f) => f,
                Err(e) => {
                    result.reason = e.to_string();
                    result.error_kind = Some(e.kind());
                    return Attempt::Done(result, None);
                }
            };
            let parsed = existing.as_ref().map(|f| Cacerts::from_files(f, now));
            let planned =
                plan_for(policy, signer, ctx.fleet, &ctx.revoked, cluster, Current::of(parsed.as_ref()), opts);
            (existing, parsed, planned)
        }
    };
    match planned {
        Plan::Keep { recheck_at } => {
            let Some(Ok(bundle)) = parsed else { unreachable!("the plan keeps only a valid bundle") };
            let crl_differs =
                ctx.crl_pem.is_some() && existing.as_ref().and_then(|f| f.get(meshca::CA_CRL)) != ctx.crl_pem;
            if crl_differs {
                result.reason = format!("{} (the fleet's revocation list) updated", meshca::CA_CRL);
                result.next_check = Some(recheck_at);
                let written = writer.because(crate::audit::reason::REVOKE).write_bundle(&secret, &bundle);
                return trust_written(result, written, bundle, opts);
            }
            result.action = Action::Kept;
            result.reason = "valid, outside the grace period".into();
            result.not_after = Some(bundle.not_after());
            result.next_check = Some(recheck_at);
            result.warnings = bundle.warnings().iter().map(ToString::to_string).collect();
            Attempt::Done(result, Some(Box::new(bundle)))
        }
        Plan::UpdateTrust { roots, recheck_at } => {
            let Some(Ok(bundle)) = parsed else { unreachable!("the plan updates only a valid bundle") };
            let (added, removed) = (
                roots.iter().filter(|r| !bundle.trusts_root(r)).count(),
                bundle.roots().iter().filter(|r| !roots.contains(r)).count(),
            );
            result.reason = format!("trust bundle changed: {added} root(s) added, {removed} removed");
            result.next_check = Some(recheck_at);
            let written = meshca::with_trust_bundle(&bundle, roots, now)
                .map_err(Error::core(format!("trust bundle for {cluster}")))
                .and_then(|b| writer.write_bundle(&secret, &b));
            if !opts.dry_run && written.is_ok() {
                result.rotated_at = Some(now);
            }
            trust_written(result, written, bundle, opts)
        }
        Plan::Issue { reason } => {
            let existed = !matches!(reason, IssueReason::Missing);
            result.reason = reason.to_string();
            result.issue_reason = Some(reason.label());
            if let Some((message, kind)) = ctx.prepared.failed.get(cluster) {
                result.reason = format!("{}; {message}", result.reason);
                result.error_kind = Some(*kind);
                return Attempt::Done(result, parsed.and_then(Result::ok).map(Box::new));
            }
            if opts.dry_run && ctx.remote.is_some() {
                // A dry run never asks the PKI to sign: it would issue a real certificate.
                result.action = if existed { Action::WouldRotate } else { Action::WouldIssue };
                result.reason = format!("{}; the PKI would sign it", result.reason);
                return Attempt::Done(result, parsed.and_then(Result::ok).map(Box::new));
            }
            // The issuance log records a replaced intermediate as a rotation.
            let writer = if existed { writer.because(crate::audit::reason::ROTATE) } else { writer };
            match issue_and_write(ctx, policy, cluster, &writer, &secret, opts, rng) {
                Ok(bundle) => {
                    result.action = match (existed, opts.dry_run) {
                        (false, false) => Action::Issued,
                        (true, false) => Action::Rotated,
                        (false, true) => Action::WouldIssue,
                        (true, true) => Action::WouldRotate,
                    };
                    result.not_after = Some(bundle.not_after());
                    result.next_check =
                        Some(policy.rotation.rotate_at(bundle.ca_cert().not_before(), bundle.not_after()));
                    result.warnings = bundle.warnings().iter().map(ToString::to_string).collect();
                    if !opts.dry_run {
                        result.rotated_at = Some(now);
                        if policy.auto_restart_pods {
                            match store.restart_istiod(cluster, now) {
                                Ok(what) => result.restarted = what,
                                Err(e) => result.warnings.push(format!("autoRestartPods: {e}")),
                            }
                        }
                    }
                    Attempt::Done(result, Some(Box::new(bundle)))
                }
                Err(Error::Conflict { .. }) => {
                    result.reason = format!("{}; the Secret changed while meshca worked", result.reason);
                    Attempt::Conflict(result)
                }
                Err(e) => {
                    result.reason = format!("{}; {e}", result.reason);
                    result.error_kind = Some(e.kind());
                    // The cluster keeps what it had; count it only if it is still valid.
                    let kept = parsed.and_then(Result::ok);
                    Attempt::Done(result, kept.map(Box::new))
                }
            }
        }
    }
}

/// The outcome of rewriting a kept bundle's trust files (`root-cert.pem`, `ca-crl.pem`): on a
/// failure the cluster keeps `kept`.
fn trust_written(mut result: ClusterResult, written: Result<Cacerts, Error>, kept: Cacerts, opts: &Options) -> Attempt {
    match written {
        Ok(b) => {
            result.action = if opts.dry_run { Action::WouldUpdateTrust } else { Action::TrustUpdated };
            result.not_after = Some(b.not_after());
            result.warnings = b.warnings().iter().map(ToString::to_string).collect();
            Attempt::Done(result, Some(Box::new(b)))
        }
        Err(Error::Conflict { .. }) => Attempt::Conflict(result),
        Err(e) => {
            result.reason = format!("{}; {e}", result.reason);
            result.error_kind = Some(e.kind());
            Attempt::Done(result, Some(Box::new(kept)))
        }
    }
}

fn issue_and_write(
    ctx: &Ctx<'_>,
    policy: &Policy,
    cluster: &str,
    writer: &Writer<'_>,
    secret: &SecretRef,
    opts: &Options,
    rng: &mut dyn Entropy,
) -> Result<Cacerts, Error> {
    let issued = match ctx.prepared.bundles.get(cluster) {
        Some(b) => b.clone(),
        // With CRLs in use, only an intermediate whose CRL went out with the set may be written.
        None if ctx.fleet.is_some() => {
            return Err(Error::Store {
                location: secret.to_string(),
                detail: "its plan changed after the CRL set was prepared (someone wrote it meanwhile); the next run \
                         issues it"
                    .into(),
            })
        }
        None => crate::signer::issue_bundle(&policy.rotation, ctx.signer, ctx.remote, cluster, opts, rng)?,
    };
    writer.write_bundle(secret, &issued)
}

/// Issues a cluster's intermediate (with the policy's trust bundle), without writing it.
pub use crate::serde_time::{rfc3339, rfc3339_opt};
