//! What commands share at the edge: reading the files a user names, opening the store (a
//! directory or Kubernetes), taking the store's lock, loading bundles, signers and policies.

use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};

use meshca::{Cacerts, SigningCa};
use meshca_ops::store::{DirStore, Store, StoreLock};
use meshca_ops::{fs, policy, Error};

use crate::args::{ClusterSpec, KubeArgs, LockArgs, StoreArgs};
use crate::failure::{refused, usage, Failure};

/// A CA lifetime flag (`--days`) within the core's bounds.
pub(crate) fn days(n: i64, flag: &str) -> Result<Duration, Failure> {
    meshca::bounds::ca_ttl_days(n).map_err(|e| usage(format!("{flag} {e}")))
}

/// Reads a file the user named: a regular file, bounded in size.
pub(crate) fn read_input(path: &Path) -> Result<Vec<u8>, Failure> {
    fs::read_input(path).map_err(|e| Failure::from(Error::Io(e)))
}

/// Reads a text file the user named; the error never shows its content.
pub(crate) fn read_text(path: &Path) -> Result<String, Failure> {
    String::from_utf8(read_input(path)?)
        .map_err(|e| refused(format!("{}: not UTF-8 text (byte {})", path.display(), e.utf8_error().valid_up_to())))
}

/// Takes the directory store's lock for a run that writes, telling the user who holds it while
/// it waits.
pub(crate) fn lock_store(store: &DirStore, lock: &LockArgs, command: &str) -> Result<StoreLock, Failure> {
    let root = store.root().display().to_string();
    let held = store
        .lock(std::time::Duration::from_secs(lock.lock_timeout), command, |holder| {
            errln!("meshca: waiting up to {} s for the store {root}, held by {holder}", lock.lock_timeout)
        })
        .map_err(Failure::from)?;
    if held.removed_debris > 0 {
        errln!("meshca: removed {} leftover entries of interrupted runs from {root}", held.removed_debris);
    }
    Ok(held)
}

/// What a run at a future `--at` time leaves behind: certificates not valid yet.
pub(crate) fn check_future_at(at: OffsetDateTime, kube: bool, dry_run: bool) -> Result<bool, Failure> {
    let future = at > OffsetDateTime::now_utc() + Duration::minutes(5);
    if future && kube && !dry_run {
        return Err(usage(format!(
            "--at {} is in the future: certificates issued now for that time would not be valid yet, and istiod \
             would refuse them; rehearse with --dry-run, or on a directory store",
            meshca::format_time(at)
        )));
    }
    Ok(future && !dry_run)
}

/// A bundle directory, judged by the one bundle check: the bundle, then its `ca-crl.pem`
/// against its own chain ([`meshca::bundle_crls`]). Returns the bundle and the CRL file as read.
pub(crate) fn load_bundle(dir: &Path, now: OffsetDateTime) -> Result<(Cacerts, Option<Vec<u8>>), Error> {
    let files = fs::read_files(dir)?;
    let bundle = Cacerts::from_files(&files, now).map_err(Error::core(dir.display()))?;
    meshca::bundle_crls(&files, bundle.path(), now).map_err(Error::core(dir.display()))?;
    Ok((bundle, files.get(meshca::CA_CRL).map(<[u8]>::to_vec)))
}

pub(crate) fn load_signer(dir: &Path, now: OffsetDateTime) -> Result<SigningCa, Error> {
    let files = fs::read_files(dir)?;
    let signer = SigningCa::from_files(&files, now).map_err(Error::core(format!("signing CA {}", dir.display())))?;
    check_signer_crls(&files, &signer, dir, now)?;
    Ok(signer)
}

/// A signing CA directory that carries a `ca-crl.pem` must not be revoked by it: nothing it
/// signed would be accepted where that CRL is in use.
fn check_signer_crls(files: &meshca::Files, signer: &SigningCa, dir: &Path, now: OffsetDateTime) -> Result<(), Error> {
    meshca::bundle_crls(files, signer.bundle().path(), now)
        .map(|_| ())
        .map_err(Error::core(format!("signing CA {}", dir.display())))
}

/// A `--ca DIR` signer whose key may be in a token: `key_uri` (`--ca-key-uri`) or the
/// directory's `ca-key.uri` (written by `meshca root-ca --key-uri`) names it; otherwise the
/// directory's `ca-key.pem` is the key.
pub(crate) fn load_ca(
    dir: &Path,
    key_uri: Option<&str>,
    p11: &crate::args::Pkcs11Args,
    now: OffsetDateTime,
) -> Result<SigningCa, Failure> {
    use meshca_ops::pkcs11::{TokenKey, KEY_URI_FILE};
    let files = fs::read_files(dir).map_err(Error::from)?;
    // What the file holds is shown only if it is a URI (it might be a key file put there by mistake).
    let from_file = files.get(KEY_URI_FILE).map(|b| String::from_utf8_lossy(b).trim().to_owned());
    if let Some(u) = &from_file {
        if key_uri.is_none() && meshca_ops::pkcs11::KeyUri::parse(u).is_err() && !u.starts_with("pkcs11:") {
            return Err(crate::failure::refused(format!(
                "{}: is not a PKCS#11 URI (contents not shown); it should hold one line like \
                 pkcs11:token=meshca;object=root-ca",
                dir.join(KEY_URI_FILE).display()
            )));
        }
    }
    let uri = match (key_uri, from_file) {
        (Some(u), _) => u.to_owned(),
        (None, Some(u)) if !files.contains(meshca::CA_KEY) => u,
        (None, _) => return Ok(load_signer(dir, now)?),
    };
    let key = TokenKey::open(&p11.access(&uri)?)?;
    let signer =
        SigningCa::from_public_files(&files, key, now).map_err(Error::core(format!("signing CA {}", dir.display())))?;
    check_signer_crls(&files, &signer, dir, now)?;
    Ok(signer)
}

/// Refuses to replace any of `names` in `dir` unless `force`.
pub(crate) fn guard_overwrite(dir: &Path, names: &[&str], force: bool) -> Result<(), Error> {
    if !force && names.iter().any(|n| dir.join(n).exists()) {
        return Err(Error::WouldOverwrite { path: dir.to_owned() });
    }
    Ok(())
}

pub(crate) fn print_written(paths: &[PathBuf]) {
    for p in paths {
        outln!("  wrote {}", p.display());
    }
}

/// `NAME=CONTEXT` (or `NAME`, meaning the context of the same name) as `--kube` reaches it.
pub(crate) fn cluster_context(spec: &ClusterSpec) -> Result<(String, String), Failure> {
    meshca::validate_cluster_name(&spec.name).map_err(|e| refused(e.to_string()))?;
    match spec.context.as_deref() {
        Some("") => Err(usage(format!("--cluster {spec}: the context after '=' is empty"))),
        Some(ctx) => Ok((spec.name.clone(), ctx.to_owned())),
        None => Ok((spec.name.clone(), spec.name.clone())),
    }
}

/// The one rule for the workload clusters a command line names (README, "Exit codes"): each a
/// cluster name, none twice, and not the management cluster. Breaking it is refused input
/// (exit 1, as any refused input), in every command.
pub(crate) fn check_workload_clusters(names: &[String], mgmt: &str) -> Result<(), Failure> {
    meshca::validate_cluster_name(mgmt).map_err(|e| refused(format!("--mgmt-cluster: {e}")))?;
    let mut seen = std::collections::HashSet::new();
    for c in names {
        meshca::validate_cluster_name(c).map_err(|e| refused(e.to_string()))?;
        if !seen.insert(c.as_str()) {
            return Err(refused(format!("cluster `{c}` is named twice")));
        }
        if c == mgmt {
            return Err(refused(format!(
                "cluster `{c}` is the management cluster (--mgmt-cluster), not a workload cluster"
            )));
        }
    }
    Ok(())
}

/// For commands that act on clusters that exist (rotate, revoke, unrevoke, crl clear): each
/// named cluster must hold a `cacerts`. A name with none is a typo until shown otherwise (a
/// rotate or revoke of it would issue a CA for a cluster that never existed): refused,
/// suggesting the nearest name the store has (exit 1).
pub(crate) fn require_bundles(store: &dyn Store, names: &[String]) -> Result<(), Failure> {
    for c in names {
        if store.read(&meshca_ops::store::SecretRef::cacerts(c))?.is_some() {
            continue;
        }
        let known = store.clusters_with_cacerts().unwrap_or_default();
        let nearest = known
            .iter()
            .chain(names.iter())
            .filter(|k| *k != c)
            .map(|k| (edit_distance(k, c), k))
            .filter(|(d, _)| *d <= 2)
            .min();
        let hint = nearest.map(|(_, k)| format!("; did you mean `{k}`?")).unwrap_or_default();
        return Err(refused(format!(
            "{c} has no cacerts at {}: this command acts on clusters that exist{hint}",
            store.location(&meshca_ops::store::SecretRef::cacerts(c))
        )));
    }
    Ok(())
}

/// Levenshtein distance, for "did you mean" (names are DNS labels: at most 63 bytes).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(x != y)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The store a command works on, with the names of its clusters.
pub(crate) struct Opened {
    pub(crate) store: Box<dyn Store>,
    /// The management cluster's name.
    pub(crate) mgmt: String,
    /// Workload cluster names (without `=CONTEXT`).
    pub(crate) clusters: Vec<String>,
    /// Keeps the Kubernetes store's runtime alive.
    pub(crate) _rt: Option<tokio::runtime::Runtime>,
}

/// The directory store at `dir`, or with `--kube` the clusters' Kubernetes APIs (`mgmt` and
/// each cluster as NAME[=CONTEXT]).
pub(crate) fn open_store(target: &StoreArgs, clusters: &[ClusterSpec]) -> Result<Opened, Failure> {
    let (dir, kube, mgmt) = (target.store.as_deref(), &target.kube, &target.mgmt_cluster);
    let names = ClusterSpec::names(clusters);
    check_workload_clusters(&names, &mgmt.name)?;
    if !kube.kube {
        if let Some(spec) = clusters.iter().chain([mgmt]).find(|c| c.context.is_some()) {
            return Err(usage(format!(
                "{spec}: NAME=CONTEXT names a kubeconfig context and needs --kube; the directory store takes NAME"
            )));
        }
        let dir = dir.ok_or_else(|| usage("give --store DIR, or --kube"))?;
        return Ok(Opened { store: Box::new(DirStore::new(dir)), mgmt: mgmt.name.clone(), clusters: names, _rt: None });
    }
    let specs = clusters.iter().map(cluster_context).collect::<Result<Vec<_>, _>>()?;
    let (rt, store) = kube_store(kube, Some((mgmt.name.clone(), mgmt.context.clone())), &specs)?;
    Ok(Opened { store: Box::new(store), mgmt: mgmt.name.clone(), clusters: names, _rt: Some(rt) })
}

/// What a command that runs a job over the fleet opens, once, for every such command: the
/// store over the named clusters, the directory store's lock (for a run that writes it), and
/// the run context at `now`.
pub(crate) struct Fleet {
    pub(crate) opened: Opened,
    pub(crate) opts: meshca_ops::reconcile::Options,
    _lock: Option<StoreLock>,
}

/// When a command takes the directory store's lock: a run that writes it, named for the
/// waiting message.
pub(crate) struct Writes<'a> {
    pub(crate) lock: &'a LockArgs,
    pub(crate) command: &'a str,
}

impl Fleet {
    /// Opens `target` over `clusters` (checked: [`check_workload_clusters`]); locks the
    /// directory store when `writes` is given and this is not a dry run; and the run context at
    /// `now` with `token`.
    pub(crate) fn open(
        target: &StoreArgs,
        clusters: &[ClusterSpec],
        writes: Option<Writes<'_>>,
        now: time::OffsetDateTime,
        dry_run: bool,
        token: meshca_ops::reconcile::TokenAccess,
        upstream: &crate::args::UpstreamCrlArgs,
    ) -> Result<Fleet, Failure> {
        let opened = open_store(target, clusters)?;
        let lock = match (&target.store, writes) {
            (Some(dir), Some(w)) if !dry_run => Some(lock_store(&DirStore::new(dir), w.lock, w.command)?),
            _ => None,
        };
        let opts = meshca_ops::reconcile::Options::new(now, opened.clusters.clone())
            .dry_run(dry_run)
            .mgmt(&opened.mgmt)
            .token(token)
            // A policy whose PKI signs (mgmtServerCa.vault) without `auth` uses the operator's
            // token: $VAULT_TOKEN, then $BAO_TOKEN.
            .provider(meshca_ops::context::ProviderAccess::with_token(crate::args::vault_token(None)?))
            .upstream_crls(upstream.upstream_crl.as_deref().map(read_input).transpose()?);
        Ok(Fleet { opened, opts, _lock: lock })
    }

    /// The store.
    pub(crate) fn store(&self) -> &dyn Store {
        self.opened.store.as_ref()
    }
}

/// A runtime and a Kubernetes store over kubeconfig contexts. `mgmt` with no context is the
/// current context. The runtime must outlive the store.
pub(crate) fn kube_store(
    k: &KubeArgs,
    mgmt: Option<(String, Option<String>)>,
    clusters: &[(String, String)],
) -> Result<(tokio::runtime::Runtime, meshca_kube::KubeStore), Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure { code: 1, message: format!("cannot start the async runtime: {e}") })?;
    let timeout = std::time::Duration::from_secs(k.timeout);
    let mut map = std::collections::BTreeMap::new();
    let kc = k.kubeconfig.as_deref();
    let connect = |ctx: Option<&str>| {
        rt.block_on(meshca_kube::clusters::client_for_context(kc, ctx, timeout))
            .map_err(|e| Failure { code: 1, message: e.to_string() })
    };
    if let Some((name, ctx)) = mgmt {
        map.insert(name, connect(ctx.as_deref())?);
    }
    for (name, ctx) in clusters {
        map.insert(name.clone(), connect(Some(ctx))?);
    }
    let store = meshca_kube::KubeStore::new(rt.handle().clone(), map).adopt(k.adopt).timeout(timeout);
    Ok((rt, store))
}

pub(crate) fn load_policy(path: &Path) -> Result<policy::Policy, Failure> {
    let text = read_text(path)?;
    Ok(policy::parse(&text, &path.display().to_string())?)
}
