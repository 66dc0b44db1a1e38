//! Secret stores. The embedded default is a directory that mirrors Kubernetes Secrets on disk:
//! `STORE/<cluster>/<namespace>/<secret>/<key>`.
//!
//! A Secret directory is laid out the way kubelet projects a Secret into a pod (and so the way
//! istiod sees `/etc/cacerts`): the files live in a hidden timestamped directory, `..data` is a
//! symlink to it, and each key is a symlink `key -> ..data/key`. Replacing a Secret writes a new
//! data directory and swaps `..data` with one atomic rename, so a reader or a crash sees either
//! the whole old bundle or the whole new one, never a mix. Plain directories of regular files
//! (as `meshca root-ca --out` writes) read the same way.
//!
//! Durability is paid once per batch, not per file (Linux): writers running at the same time
//! (the reconcile's workers) each write their data directory without syncing, then share one
//! `syncfs` of the store's filesystem, then each swap `..data`, then share a second `syncfs`
//! before any of them reports its write done. A crash before the first sync leaves only
//! unreferenced data directories (removed by the next run); a crash between the syncs leaves
//! each Secret wholly old or wholly new; a write reported done is on disk. Elsewhere, or where
//! a Secret lives on another filesystem than the store root, each file and directory is
//! synced on its own, as before.

use std::path::{Path, PathBuf};

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, DirBuilder, OpenOptions};
use meshca::Files;

use crate::distribution::LabelSelector;
use crate::error::Error;
use crate::fs::{is_key_file, IoError};

/// Names a Secret in a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretRef {
    /// Cluster name.
    pub cluster: String,
    /// Namespace.
    pub namespace: String,
    /// Secret name.
    pub name: String,
}

impl SecretRef {
    /// `cluster`/`namespace`/`name`.
    pub fn new(cluster: &str, namespace: &str, name: &str) -> Self {
        SecretRef { cluster: cluster.into(), namespace: namespace.into(), name: name.into() }
    }

    /// The `istio-system/cacerts` Secret of `cluster`.
    pub fn cacerts(cluster: &str) -> Self {
        SecretRef::new(cluster, "istio-system", "cacerts")
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}/{}", self.cluster, self.namespace, self.name)
    }
}

/// Labels and annotations a write puts on a Secret (stores without metadata ignore them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteMeta {
    /// Labels, e.g. `app.kubernetes.io/managed-by: meshca`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Annotations, e.g. the root fingerprint and notAfter.
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl WriteMeta {
    /// Only meshca's managed-by label: what every Secret meshca owns carries.
    pub fn managed() -> Self {
        let mut meta = WriteMeta::default();
        meta.labels.insert(crate::manifest::MANAGED_BY.0.into(), crate::manifest::MANAGED_BY.1.into());
        meta
    }
}

/// Where Secrets are read and written. Implementations make each write atomic per Secret, and
/// may be called from several threads at once (the reconcile loop works on clusters in
/// parallel), each call concerning one Secret.
pub trait Store: Sync {
    /// A human-readable location of a Secret (a path, or a cluster/namespace/name).
    fn location(&self, secret: &SecretRef) -> String;
    /// The Secret's data, or `None` if it does not exist.
    fn read(&self, secret: &SecretRef) -> Result<Option<Files>, Error>;
    /// Creates or replaces the Secret's data as a whole. A store with concurrent writers replaces
    /// only the version it last read and returns [`Error::Conflict`] otherwise; a store that
    /// knows who wrote a Secret refuses to replace one meshca does not manage
    /// ([`Error::NotManaged`]).
    fn write(&self, secret: &SecretRef, files: &Files, meta: &WriteMeta) -> Result<(), Error>;
    /// The labels and annotations of an existing Secret, or `None` if it does not exist.
    /// A store that keeps no metadata says what it can: the directory store records what
    /// meshca wrote beside the data.
    fn meta(&self, secret: &SecretRef) -> Result<Option<WriteMeta>, Error>;
    /// Restarts istiod in `cluster` so a new CA is used at once (`autoRestartPods`), stamping
    /// the restart with `now`. Returns what was restarted, or `None` where the store cannot
    /// restart anything.
    fn restart_istiod(&self, cluster: &str, now: time::OffsetDateTime) -> Result<Option<String>, Error> {
        let _ = (cluster, now);
        Ok(None)
    }
    /// The roots istiod in `cluster` says it loaded: `root-cert.pem` of the ConfigMap
    /// `istio-system/istio-ca-root-cert` it publishes in every namespace. `None` when there is
    /// none (istiod absent or not started yet) or the store cannot see one (the directory store).
    fn istiod_roots(&self, cluster: &str) -> Result<Option<Vec<u8>>, Error> {
        let _ = cluster;
        Ok(None)
    }
    /// The clusters that hold a `cacerts` Secret, where the store can tell (the directory store
    /// can; a Kubernetes store knows only the clusters it was given, and says none). A root
    /// rotation waits for these too, even when a run names only some.
    fn clusters_with_cacerts(&self) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }
    /// How many writers this store makes durable together: a store that shares the cost of
    /// making writes durable among concurrent writers (the directory store's filesystem sync)
    /// gains from that many at once, whatever the number of cores. 1, the default: none.
    fn batch_writers(&self) -> usize {
        1
    }
    /// Whether `cluster` serves ClusterTrustBundles (certificates.k8s.io, v1 or v1beta1). The
    /// default (the directory store's mirror) always does.
    fn has_trust_bundles(&self, cluster: &str) -> Result<bool, Error> {
        let _ = cluster;
        Ok(true)
    }
    /// The PEM `object` holds in `cluster` (a ConfigMap's under `key`), and whether meshca
    /// manages it; `None` when it does not exist. The default keeps each object as a
    /// Secret-shaped mirror ([`mirror_of`]): how the directory store holds them.
    fn read_trust(&self, cluster: &str, object: &TrustObject, key: &str) -> Result<Option<Held>, Error> {
        let secret = mirror_of(cluster, object);
        let Some(files) = self.read(&secret)?.filter(|f| f.iter().next().is_some()) else { return Ok(None) };
        let managed = self.meta(&secret)?.is_some_and(|m| is_managed(&m));
        let pem = files.get(mirror_key(object, key)).map(<[u8]>::to_vec).unwrap_or_default();
        Ok(Some(Held { pem, managed }))
    }
    /// Creates or replaces `object` with `pem` (a ClusterTrustBundle with `signer_name`), labelled
    /// as meshca's. Refuses one meshca does not manage ([`Error::NotManaged`]).
    fn write_trust(
        &self,
        cluster: &str,
        object: &TrustObject,
        key: &str,
        pem: &str,
        signer_name: &str,
    ) -> Result<(), Error> {
        let secret = mirror_of(cluster, object);
        if let Some(held) = self.read_trust(cluster, object, key)? {
            if !held.managed {
                return Err(Error::NotManaged { location: self.location(&secret) });
            }
        }
        let mut files = Files::new();
        files.insert(mirror_key(object, key).to_owned(), pem.as_bytes().to_vec());
        if matches!(object, TrustObject::ClusterTrustBundle { .. }) {
            files.insert("signerName".to_owned(), signer_name.as_bytes().to_vec());
        }
        self.write(&secret, &files, &WriteMeta::managed())
    }
    /// Deletes `object` if meshca manages it (one it does not manage is left alone: `Ok(false)`).
    /// Returns whether it was deleted.
    ///
    /// The default leaves an empty mirror behind (a tombstone: read as absent), so the
    /// directory store never removes a directory.
    fn delete_trust(&self, cluster: &str, object: &TrustObject) -> Result<bool, Error> {
        match self.read_trust(cluster, object, "")? {
            Some(held) if held.managed => {
                self.write(&mirror_of(cluster, object), &Files::new(), &WriteMeta::managed())?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    /// The namespaces of `cluster` whose labels `selector` matches, at most `limit` (more:
    /// [`Error::Store`]). The default reads the directory store's mirror: the Secret
    /// `_cluster/namespaces` holds one file per namespace, its labels as a JSON object.
    fn namespaces(&self, cluster: &str, selector: &LabelSelector, limit: usize) -> Result<Vec<String>, Error> {
        let secret = SecretRef::new(cluster, "_cluster", "namespaces");
        let Some(files) = self.read(&secret)? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for (ns, labels) in files.iter() {
            let labels: std::collections::BTreeMap<String, String> =
                serde_json::from_slice(labels).map_err(|e| Error::Store {
                    location: self.location(&secret),
                    detail: format!("{ns}: the labels are not a JSON object of strings: {e}"),
                })?;
            if selector.matches(&labels) {
                out.push(ns.to_owned());
            }
        }
        if out.len() > limit {
            return Err(too_many_namespaces(&self.location(&secret), out.len(), limit));
        }
        Ok(out)
    }
    /// The namespaces of `cluster` in which meshca's ConfigMap `name` exists.
    fn managed_config_maps(&self, cluster: &str, name: &str) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for ns in self.namespaces(cluster, &LabelSelector::everything(), usize::MAX)? {
            let object = TrustObject::ConfigMap { namespace: ns.clone(), name: name.to_owned() };
            if self.read_trust(cluster, &object, "")?.is_some_and(|h| h.managed) {
                out.push(ns);
            }
        }
        Ok(out)
    }
}

/// A trust object meshca publishes in a workload cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrustObject {
    /// A ClusterTrustBundle (certificates.k8s.io), cluster-scoped.
    ClusterTrustBundle {
        /// Its name, e.g. `meshca.dev:istio:live`.
        name: String,
    },
    /// A ConfigMap.
    ConfigMap {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl std::fmt::Display for TrustObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustObject::ClusterTrustBundle { name } => write!(f, "ClusterTrustBundle {name}"),
            TrustObject::ConfigMap { namespace, name } => write!(f, "ConfigMap {namespace}/{name}"),
        }
    }
}

/// What a trust object holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The PEM roots.
    pub pem: Vec<u8>,
    /// Whether meshca manages the object (its managed-by label).
    pub managed: bool,
}

/// Where the directory store mirrors a trust object: a ClusterTrustBundle as the Secret-shaped
/// `<cluster>/_clustertrustbundles/<name, ':' as '_'>`, a ConfigMap as
/// `<cluster>/<namespace>/_configmap.<name>`. Neither can be a real Secret's place (no
/// namespace or Secret name has a `_`).
pub fn mirror_of(cluster: &str, object: &TrustObject) -> SecretRef {
    match object {
        TrustObject::ClusterTrustBundle { name } => {
            SecretRef::new(cluster, "_clustertrustbundles", &name.replace(':', "_"))
        }
        TrustObject::ConfigMap { namespace, name } => SecretRef::new(cluster, namespace, &format!("_configmap.{name}")),
    }
}

fn mirror_key<'k>(object: &TrustObject, key: &'k str) -> &'k str {
    match object {
        TrustObject::ClusterTrustBundle { .. } => "trustBundle",
        TrustObject::ConfigMap { .. } => key,
    }
}

/// Whether `meta` carries meshca's managed-by label.
pub fn is_managed(meta: &WriteMeta) -> bool {
    let (k, v) = crate::manifest::MANAGED_BY;
    meta.labels.get(k).is_some_and(|l| l == v)
}

/// The error for a selector that matches more namespaces than meshca writes ConfigMaps into.
pub fn too_many_namespaces(location: &str, found: usize, limit: usize) -> Error {
    Error::Store {
        location: location.to_owned(),
        detail: format!(
            "the namespace selector matches {found} namespaces, more than the {limit} meshca writes a ConfigMap \
             into; narrow trustDistribution.configMaps.namespaceSelector"
        ),
    }
}

/// The ConfigMap istiod publishes its trusted roots in (key `root-cert.pem`), in every namespace.
pub const ISTIO_CA_ROOT_CERT: &str = "istio-ca-root-cert";

/// The directory store.
///
/// Every path it opens is resolved inside the store root by capability (cap-std): a `Dir` for
/// the root, then each cluster, namespace and Secret directory opened without following
/// symlinks. A planted symlink, a `..data` link that leads anywhere but a data directory meshca
/// made, or a key link that leads elsewhere makes that one Secret an
/// [`Error::UnsafeStorePath`]: nothing in it is read, written or removed, and other Secrets
/// are unaffected. Nothing meshca does deletes, writes or changes permissions outside the root.
#[derive(Clone, Debug)]
pub struct DirStore {
    root: PathBuf,
    batch: std::sync::Arc<GroupSync>,
}

/// Writers that share one filesystem sync (group commit). A writer asks for a sync that
/// *starts* after it asked: if one is running, it waits for that one to end and for the next,
/// which it or another waiting writer runs for everyone waiting; so each sync covers every
/// writer that finished its writes before it began.
///
/// Every sync goes through one descriptor of the store root, opened before the first write
/// ([`GroupSync::watch`]): the kernel reports a writeback error once, to each descriptor that
/// was open when it happened, so a descriptor opened just for the sync could miss an error of
/// background writeback and call lost data durable.
#[derive(Debug, Default)]
struct GroupSync {
    root: std::sync::OnceLock<cap_std::fs::File>,
    state: std::sync::Mutex<SyncState>,
    turn: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Syncs begun and ended (numbered from 1), and the last that failed (0: none).
    started: u64,
    ended: u64,
    last_failed: u64,
    running: bool,
    /// The failed sync's OS error number, or its kind when it had none.
    last_error: Option<Result<i32, std::io::ErrorKind>>,
}

impl SyncState {
    /// What a writer waiting for sync `needed` is told, once that sync has ended: `Ok` if it
    /// and every later sync that has ended succeeded (a later failure may be an error writing
    /// back this writer's pages, reported to the sync that ran after it).
    fn outcome(&self, needed: u64) -> Option<std::io::Result<()>> {
        if self.ended < needed {
            return None;
        }
        if self.last_failed < needed {
            return Some(Ok(()));
        }
        Some(Err(match self.last_error {
            Some(Ok(errno)) => std::io::Error::from_raw_os_error(errno),
            Some(Err(kind)) => kind.into(),
            None => std::io::ErrorKind::Other.into(),
        }))
    }
}

impl GroupSync {
    /// Keeps a descriptor of the store `root` for the syncs, if none is kept yet. Called before
    /// a batched write, so an error writing it back reaches the next sync.
    fn watch(&self, root: &Dir) -> std::io::Result<()> {
        if self.root.get().is_none() {
            // A readable descriptor: syncfs refuses the path-only ones cap-std keeps for `Dir`.
            let _ = self.root.set(root.open(".")?);
        }
        Ok(())
    }

    /// Returns once a sync of the store's filesystem that began after this call has ended, with
    /// [`SyncState::outcome`].
    fn sync(&self) -> std::io::Result<()> {
        let lock = || self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut st = lock();
        let needed = st.started + 1;
        loop {
            if let Some(outcome) = st.outcome(needed) {
                return outcome;
            }
            if st.running {
                st = self.turn.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            st.running = true;
            st.started += 1;
            let this = st.started;
            drop(st);
            let result = match self.root.get() {
                Some(root) => syncfs(root),
                None => Err(std::io::ErrorKind::NotFound.into()),
            };
            st = lock();
            st.running = false;
            st.ended = this;
            if let Err(e) = &result {
                st.last_failed = this;
                st.last_error = Some(e.raw_os_error().ok_or(e.kind()));
            }
            self.turn.notify_all();
        }
    }
}

/// Flushes every dirty page and inode of `dir`'s filesystem to disk.
#[cfg(target_os = "linux")]
fn syncfs(fd: &cap_std::fs::File) -> std::io::Result<()> {
    rustix::fs::syncfs(fd).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn syncfs(_fd: &cap_std::fs::File) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Whether a Secret directory's writes can be made durable by a sync of the store root's
/// filesystem (Linux, and the same filesystem: a mount inside the store is synced file by file).
fn batched(root: &cap_std::fs::File, secret_dir: &Dir) -> bool {
    #[cfg(target_os = "linux")]
    {
        use cap_std::fs::MetadataExt;
        match (root.metadata(), secret_dir.dir_metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev(),
            _ => false,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (root, secret_dir);
        false
    }
}

const DATA_LINK: &str = "..data";
/// Inside a data directory: the labels and annotations meshca wrote with the data (hidden, so
/// it is not one of the Secret's keys).
const META_FILE: &str = ".meshca-meta.json";
/// The lock file in the store root (a cluster name never starts with '.').
pub const LOCK_FILE: &str = ".meshca.lock";
/// The most the lock file holds: one line naming the run that holds it.
const LOCK_MAX_BYTES: u64 = 512;

/// Whether `name` is a data directory name meshca makes: `..<nanos>_<pid>_<counter>`.
fn is_data_dir_name(name: &str) -> bool {
    name.strip_prefix("..").is_some_and(|rest| {
        let parts: Vec<&str> = rest.split('_').collect();
        parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Whether `name` is a temporary link meshca makes while swapping: `.<name>.link-<stamp>`.
fn is_temp_link_name(name: &str) -> bool {
    name.starts_with('.')
        && name.rsplit_once(".link-").is_some_and(|(_, stamp)| is_data_dir_name(&format!("..{stamp}")))
}

fn dir_builder() -> DirBuilder {
    let mut b = DirBuilder::new();
    #[cfg(unix)]
    cap_std::fs::DirBuilderExt::mode(&mut b, 0o700);
    b
}

fn kind(m: &cap_std::fs::Metadata) -> &'static str {
    let ft = m.file_type();
    #[cfg(unix)]
    {
        use cap_std::fs::FileTypeExt;
        let device = ft.is_block_device() || ft.is_char_device();
        crate::fs::describe_kind(ft.is_dir(), ft.is_symlink(), ft.is_file(), ft.is_fifo(), ft.is_socket(), device)
    }
    #[cfg(not(unix))]
    crate::fs::describe_kind(ft.is_dir(), ft.is_symlink(), ft.is_file(), false, false, false)
}

/// A Secret directory, opened and checked: what its entries are.
struct SecretDir {
    dir: Dir,
    path: PathBuf,
    /// The data directory `..data` points at, if the Secret has one.
    data: Option<String>,
    /// Visible names that are links through `..data`.
    links: Vec<String>,
    /// Visible names that are regular files (a directory written by hand or by `--out`).
    plain: Vec<String>,
}

impl DirStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirStore { root: root.into(), batch: std::sync::Arc::default() }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding a Secret's keys.
    pub fn dir(&self, secret: &SecretRef) -> PathBuf {
        self.root.join(&secret.cluster).join(&secret.namespace).join(&secret.name)
    }

    fn check_names(secret: &SecretRef) -> Result<(), Error> {
        for (what, part) in [("cluster", &secret.cluster), ("namespace", &secret.namespace), ("secret", &secret.name)] {
            // Each part becomes a path component: refuse anything that could leave the store.
            let ok = !part.is_empty()
                && !part.starts_with('.')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(Error::UnsafeName { what, name: part.clone() });
            }
        }
        Ok(())
    }

    /// The root as a capability, or `None` when it does not exist and `create` is false.
    fn open_root(&self, create: bool) -> Result<Option<Dir>, Error> {
        let io = |action: &'static str| {
            let path = self.root.clone();
            move |source| Error::from(IoError { path, action, source })
        };
        match Dir::open_ambient_dir(&self.root, ambient_authority()) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = std::fs::DirBuilder::new();
                b.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
                b.create(&self.root).map_err(io("create the store directory"))?;
                Dir::open_ambient_dir(&self.root, ambient_authority()).map(Some).map_err(io("open the store"))
            }
            Err(e) => Err(io("open the store")(e)),
        }
    }

    /// Opens directory `name` inside `parent` without following a symlink; creates it (0700)
    /// when missing and `create` is set.
    fn descend(parent: &Dir, parent_path: &Path, name: &str, create: bool) -> Result<Option<Dir>, Error> {
        let path = parent_path.join(name);
        let io = |action: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| Error::from(IoError { path, action, source })
        };
        // The common case costs one open; only a failure is looked at more closely.
        let err = match parent.open_dir_nofollow(name) {
            Ok(d) => return Ok(Some(d)),
            Err(e) => e,
        };
        match parent.symlink_metadata(name) {
            Ok(m) if m.is_symlink() => {
                Err(Error::UnsafeStorePath { path, problem: "is a symlink where the store keeps a directory".into() })
            }
            Ok(m) if !m.is_dir() => {
                Err(Error::UnsafeStorePath { path, problem: format!("is {}, not a directory", kind(&m)) })
            }
            Ok(_) => Err(io("open the directory", &path)(err)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Ok(None);
                }
                match parent.create_dir_with(name, &dir_builder()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io("create the directory", &path)(e)),
                }
                parent.open_dir_nofollow(name).map(Some).map_err(io("open the directory", &path))
            }
            Err(e) => Err(io("inspect", &path)(e)),
        }
    }

    /// Opens a Secret's directory (creating the path when `create`), without following links.
    fn open_secret(&self, secret: &SecretRef, create: bool) -> Result<Option<(Dir, PathBuf)>, Error> {
        Self::check_names(secret)?;
        let Some(mut dir) = self.open_root(create)? else { return Ok(None) };
        let mut path = self.root.clone();
        for part in [&secret.cluster, &secret.namespace, &secret.name] {
            let Some(next) = Self::descend(&dir, &path, part, create)? else { return Ok(None) };
            path.push(part);
            dir = next;
        }
        Ok(Some((dir, path)))
    }

    /// Checks every entry of a Secret directory against the layout meshca writes.
    fn check_secret(dir: Dir, path: PathBuf) -> Result<SecretDir, Error> {
        let unsafe_path = |name: &str, problem: String| Error::UnsafeStorePath { path: path.join(name), problem };
        let io = |action: &'static str| {
            let path = path.clone();
            move |source| Error::from(IoError { path, action, source })
        };
        let data = match dir.symlink_metadata(DATA_LINK) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("inspect")(e)),
            Ok(m) if !m.is_symlink() => {
                return Err(unsafe_path(DATA_LINK, format!("is {}, not a link to a data directory", kind(&m))))
            }
            Ok(_) => {
                let target = dir.read_link_contents(DATA_LINK).map_err(io("read the ..data link"))?;
                let name = target.to_str().filter(|t| is_data_dir_name(t)).ok_or_else(|| {
                    unsafe_path(
                        DATA_LINK,
                        format!("points to `{}`, not to a data directory meshca made beside it", target.display()),
                    )
                })?;
                match dir.symlink_metadata(name) {
                    Ok(m) if m.is_dir() => Some(name.to_owned()),
                    Ok(m) => return Err(unsafe_path(name, format!("is {}, not a data directory", kind(&m)))),
                    // Gone: a writer swapped `..data` and removed the old data directory since the
                    // link was read (a reader retries), or the link dangles.
                    Err(source) => {
                        return Err(IoError { path: path.join(name), action: "open the data directory", source }.into())
                    }
                }
            }
        };
        let (mut links, mut plain) = (Vec::new(), Vec::new());
        for entry in dir.entries().map_err(io("read the directory"))? {
            let entry = entry.map_err(io("read the directory"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if links.len() + plain.len() >= crate::fs::MAX_DIR_ENTRIES {
                return Err(unsafe_path("", format!("holds more than {} keys", crate::fs::MAX_DIR_ENTRIES)));
            }
            let m = dir.symlink_metadata(&name).map_err(io("inspect"))?;
            if m.is_symlink() {
                let target = dir.read_link_contents(&name).map_err(io("read a key link"))?;
                if data.is_none() || target != Path::new(DATA_LINK).join(&name) {
                    return Err(unsafe_path(
                        &name,
                        format!("is a link to `{}`; a key links only to `..data/{name}`", target.display()),
                    ));
                }
                links.push(name);
            } else if m.is_file() {
                plain.push(name);
            } else {
                return Err(unsafe_path(&name, format!("is {}, not a regular file", kind(&m))));
            }
        }
        // A regular file beside `..data` (put there by hand) is what a consumer opening that
        // name sees: read as such, and replaced by a link on the next write.
        Ok(SecretDir { dir, path, data, links, plain })
    }

    /// Reads the regular files of `dir` (a data directory, or a plain Secret directory):
    /// each opened without following links or blocking, bounded in size.
    fn read_regular_files(dir: &Dir, path: &Path, names: Option<&[String]>) -> Result<Files, Error> {
        let mut files = Files::new();
        let listed: Vec<String> = match names {
            Some(n) => n.to_vec(),
            None => {
                let mut v = Vec::new();
                for entry in
                    dir.entries().map_err(|source| IoError { path: path.to_owned(), action: "read", source })?
                {
                    let entry = entry.map_err(|source| IoError { path: path.to_owned(), action: "read", source })?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !name.starts_with('.') {
                        v.push(name);
                    }
                    if v.len() > crate::fs::MAX_DIR_ENTRIES {
                        return Err(Error::UnsafeStorePath {
                            path: path.to_owned(),
                            problem: format!("holds more than {} keys", crate::fs::MAX_DIR_ENTRIES),
                        });
                    }
                }
                v
            }
        };
        for name in listed {
            let file_path = path.join(&name);
            let mut opts = OpenOptions::new();
            opts.read(true).follow(FollowSymlinks::No);
            #[cfg(unix)]
            cap_std::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK | libc::O_NOCTTY);
            let f = match dir.open_with(&name, &opts) {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return Err(Error::UnsafeStorePath {
                        path: file_path,
                        problem: "is a symlink inside a data directory".into(),
                    })
                }
                Err(source) => return Err(IoError { path: file_path, action: "read", source }.into()),
            };
            let m = f.metadata().map_err(|source| IoError { path: file_path.clone(), action: "inspect", source })?;
            if !m.is_file() {
                return Err(Error::UnsafeStorePath { path: file_path, problem: format!("is {}", kind(&m)) });
            }
            files.insert(name, crate::fs::read_bounded(f.into_std(), &file_path)?);
        }
        Ok(files)
    }

    /// What a consumer opening `<secret>/<key>` sees (istiod opens `/etc/cacerts/<key>`): the
    /// keys that link through `..data`, from the data directory; a regular file beside
    /// `..data`, as it stands; a key of the data directory with no visible name is absent.
    fn read_secret(checked: &SecretDir) -> Result<Files, Error> {
        let mut files = Self::read_regular_files(&checked.dir, &checked.path, Some(&checked.plain))?;
        let Some(data) = &checked.data else { return Ok(files) };
        let data_dir = Self::descend(&checked.dir, &checked.path, data, false)?.ok_or_else(|| IoError {
            path: checked.path.join(data),
            action: "open the data directory",
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        let linked = Self::read_regular_files(&data_dir, &checked.path.join(data), None)?;
        for name in &checked.links {
            if let Some(content) = linked.get(name) {
                files.insert(name.clone(), content.to_vec());
            }
        }
        Ok(files)
    }

    /// Takes the store's exclusive lock for a run that writes, waiting up to `timeout`. While it
    /// waits, `waiting` is called once with who holds the lock. Once held, debris of runs that
    /// crashed or lost a race (data directories and temporary links no `..data` names) is
    /// removed. The lock is released when the guard drops (or the process ends).
    pub fn lock(
        &self,
        timeout: std::time::Duration,
        command: &str,
        mut waiting: impl FnMut(&str),
    ) -> Result<StoreLock, Error> {
        let root = self.open_root(true)?.unwrap_or_else(|| unreachable!("open_root(create) returns a directory"));
        let path = self.root.join(LOCK_FILE);
        let io = |action: &'static str| {
            let path = path.clone();
            move |source| Error::from(IoError { path, action, source })
        };
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).follow(FollowSymlinks::No);
        #[cfg(unix)]
        cap_std::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        #[cfg(unix)]
        cap_std::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK | libc::O_NOCTTY);
        let file = match root.open_with(LOCK_FILE, &opts) {
            Ok(f) => f.into_std(),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(Error::UnsafeStorePath { path, problem: "is a symlink, not meshca's lock file".into() })
            }
            Err(e) => match root.symlink_metadata(LOCK_FILE) {
                Ok(m) if !m.is_file() => {
                    return Err(Error::UnsafeStorePath {
                        path,
                        problem: format!("is {}, not meshca's lock file", kind(&m)),
                    })
                }
                _ => return Err(io("open the lock file")(e)),
            },
        };
        Self::check_lock_file(&file, &path)?;
        let started = std::time::Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = Self::lock_holder(&file);
                    if started.elapsed() >= timeout {
                        return Err(Error::LockTimeout { path, holder, waited_secs: timeout.as_secs() });
                    }
                    if !told {
                        waiting(&holder);
                        told = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io("lock")(e)),
            }
        }
        // Checked again now that it is held: a link made while this run waited is refused too,
        // before a byte is written.
        Self::check_lock_file(&file, &path)?;
        // Who holds it, for the next run that waits (the content is informational only).
        let me = format!(
            "pid {} ({command}) since {}",
            std::process::id(),
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
        );
        {
            use std::io::{Seek, Write};
            let mut f = &file;
            let _ =
                f.set_len(0).and_then(|_| f.seek(std::io::SeekFrom::Start(0))).and_then(|_| f.write_all(me.as_bytes()));
        }
        let removed = self.remove_debris(&root)?;
        Ok(StoreLock { file, removed_debris: removed })
    }

    /// meshca writes the lock file (it records who holds it, and empties it on release), so it
    /// must be a file meshca made: a regular file with one link, owned by the user running
    /// meshca, holding nothing but a holder line. A hard link to a file elsewhere (its link
    /// count says so), a file of another user, or one with other content is refused before
    /// anything is written to it.
    fn check_lock_file(file: &std::fs::File, path: &Path) -> Result<(), Error> {
        let refuse = |problem: String| Error::UnsafeStorePath { path: path.to_owned(), problem };
        let m = file
            .metadata()
            .map_err(|source| Error::from(IoError { path: path.to_owned(), action: "inspect", source }))?;
        if !m.is_file() {
            return Err(refuse(format!("is {}, not meshca's lock file", crate::fs::kind_of(&m.file_type()))));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if m.nlink() != 1 {
                return Err(refuse(format!(
                    "has {} hard links: it is not meshca's lock file but a link to a file elsewhere; remove it \
                     (the file it links to is left untouched)",
                    m.nlink()
                )));
            }
            if m.uid() != crate::fs::effective_uid() {
                return Err(refuse(format!(
                    "belongs to user {}, not to the user running meshca; remove it if no run of meshca holds it",
                    m.uid()
                )));
            }
        }
        if m.len() > LOCK_MAX_BYTES {
            return Err(refuse(format!("holds {} bytes: not meshca's lock file; remove it", m.len())));
        }
        if m.len() > 0 && !Self::lock_holder_raw(file).starts_with("pid ") {
            return Err(refuse("holds something other than the line meshca writes; remove it".into()));
        }
        Ok(())
    }

    fn lock_holder_raw(file: &std::fs::File) -> String {
        use std::io::{Read, Seek};
        let mut buf = Vec::new();
        let mut f = file;
        let _ = f.seek(std::io::SeekFrom::Start(0)).and_then(|_| f.take(LOCK_MAX_BYTES).read_to_end(&mut buf));
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn lock_holder(file: &std::fs::File) -> String {
        use std::io::{Read, Seek};
        let mut s = String::new();
        let mut f = file;
        let _ = f.seek(std::io::SeekFrom::Start(0)).and_then(|_| f.take(200).read_to_string(&mut s));
        let s: String = s.chars().filter(|c| !c.is_control()).collect();
        if s.is_empty() {
            "a run that has not said who it is".into()
        } else {
            s
        }
    }

    /// Removes, in every Secret directory, data directories and temporary links of meshca's own
    /// naming that `..data` does not point at. Secrets that fail [`Self::check_secret`] are
    /// left alone. Returns how many entries were removed.
    fn remove_debris(&self, root: &Dir) -> Result<usize, Error> {
        let mut removed = 0;
        let subdirs = |d: &Dir| -> Vec<String> {
            d.entries()
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        };
        for cluster in subdirs(root) {
            let cpath = self.root.join(&cluster);
            let Ok(Some(cdir)) = Self::descend(root, &self.root, &cluster, false) else { continue };
            for ns in subdirs(&cdir) {
                let npath = cpath.join(&ns);
                let Ok(Some(ndir)) = Self::descend(&cdir, &cpath, &ns, false) else { continue };
                for secret in subdirs(&ndir) {
                    let spath = npath.join(&secret);
                    let Ok(Some(sdir)) = Self::descend(&ndir, &npath, &secret, false) else { continue };
                    let Ok(checked) = Self::check_secret(sdir, spath) else { continue };
                    removed += Self::remove_secret_debris(&checked);
                }
            }
        }
        Ok(removed)
    }

    fn remove_secret_debris(checked: &SecretDir) -> usize {
        let mut removed = 0;
        let Ok(entries) = checked.dir.entries() else { return 0 };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(m) = checked.dir.symlink_metadata(&name) else { continue };
            let gone = if is_data_dir_name(&name) && m.is_dir() && checked.data.as_deref() != Some(name.as_str()) {
                // cap-std removes a tree without following links in it, and only inside the store.
                checked.dir.remove_dir_all(&name).is_ok()
            } else if is_temp_link_name(&name) && m.is_symlink() {
                checked.dir.remove_file_or_symlink(&name).is_ok()
            } else {
                false
            };
            removed += usize::from(gone);
        }
        removed
    }

    /// Replaces a Secret's data with `files` (see the module docs): a new data directory, then
    /// one atomic rename of `..data`, then the key links.
    fn write_secret(&self, secret: &SecretRef, files: &Files, meta: &WriteMeta) -> Result<(), Error> {
        let (dir, path) = self.open_secret(secret, true)?.unwrap_or_else(|| unreachable!("created"));
        let durable = self.durability(&dir)?;
        let checked = Self::check_secret(dir, path)?;
        // A directory of plain files (written by hand or by `--out`): first move its current
        // content behind `..data` so every later step swaps between two consistent states.
        if checked.data.is_none() && !checked.plain.is_empty() {
            let current = Self::read_regular_files(&checked.dir, &checked.path, Some(&checked.plain))?;
            Self::swap_data(&checked, &current, &WriteMeta::default(), durable)?;
            let SecretDir { dir, path, .. } = checked;
            let checked = Self::check_secret(dir, path)?;
            return Self::swap_data(&checked, files, meta, durable);
        }
        Self::swap_data(&checked, files, meta, durable)
    }

    /// How a write into `secret_dir` is made durable: with the batch when a sync of the kept
    /// store descriptor's filesystem covers it, else file by file.
    fn durability(&self, secret_dir: &Dir) -> Result<Durable<'_>, Error> {
        if let Some(root) = self.open_root(false)? {
            if self.batch.watch(&root).is_ok() {
                if let Some(kept) = self.batch.root.get() {
                    if batched(kept, secret_dir) {
                        return Ok(Durable::Batch(&self.batch));
                    }
                }
            }
        }
        Ok(Durable::EachFile)
    }

    /// What the data directory's meta file says. A `..data` Secret without one was written by
    /// a meshca before meta files (only meshca makes that layout) and counts as managed with no
    /// policy named; a directory of plain files was made by hand or by `--out` and is not.
    fn read_meta(checked: &SecretDir) -> Result<WriteMeta, Error> {
        let Some(data) = &checked.data else { return Ok(WriteMeta::default()) };
        let data_dir = Self::descend(&checked.dir, &checked.path, data, false)?.ok_or_else(|| IoError {
            path: checked.path.join(data),
            action: "open the data directory",
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        let path = checked.path.join(data).join(META_FILE);
        let mut opts = OpenOptions::new();
        opts.read(true).follow(FollowSymlinks::No);
        #[cfg(unix)]
        cap_std::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK | libc::O_NOCTTY);
        let f = match data_dir.open_with(META_FILE, &opts) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(WriteMeta::managed()),
            Err(_) => {
                return Err(Error::UnsafeStorePath { path, problem: "cannot be opened as a regular file".into() })
            }
        };
        let m = f.metadata().map_err(|source| IoError { path: path.clone(), action: "inspect", source })?;
        if !m.is_file() || m.len() > 64 * 1024 {
            return Err(Error::UnsafeStorePath { path, problem: "is not meshca's metadata file".into() });
        }
        let bytes = crate::fs::read_bounded(f.into_std(), &path)?;
        #[derive(serde::Deserialize)]
        struct Raw {
            #[serde(default)]
            labels: std::collections::BTreeMap<String, String>,
            #[serde(default)]
            annotations: std::collections::BTreeMap<String, String>,
        }
        let raw: Raw = serde_json::from_slice(&bytes)
            .map_err(|_| Error::UnsafeStorePath { path, problem: "is not meshca's metadata (JSON)".into() })?;
        Ok(WriteMeta { labels: raw.labels, annotations: raw.annotations })
    }

    fn swap_data(checked: &SecretDir, files: &Files, meta: &WriteMeta, durable: Durable<'_>) -> Result<(), Error> {
        let (dir, path) = (&checked.dir, &checked.path);
        let io = |action: &'static str, name: &str| {
            let path = path.join(name);
            move |source| Error::from(IoError { path, action, source })
        };
        let data_name = format!("..{}", unique_stamp());
        dir.create_dir_with(&data_name, &dir_builder()).map_err(io("create the data directory", &data_name))?;
        // The data directory is invisible until `..data` points at it, so its files need durable
        // contents but no rename of their own: the swap below is the one commit point.
        let written = (|| -> Result<(), Error> {
            let data_dir = dir.open_dir_nofollow(&data_name).map_err(io("open the data directory", &data_name))?;
            let meta_json = serde_json::to_vec(&serde_json::json!({
                "labels": meta.labels, "annotations": meta.annotations,
            }))
            .unwrap_or_default();
            for (name, data) in files.iter().chain([(META_FILE, meta_json.as_slice())]) {
                let mode = if is_key_file(name) { 0o600 } else { 0o644 };
                let file_path = format!("{data_name}/{name}");
                let mut opts = OpenOptions::new();
                opts.write(true).create_new(true).follow(FollowSymlinks::No);
                #[cfg(unix)]
                cap_std::fs::OpenOptionsExt::mode(&mut opts, mode);
                let mut f = data_dir.open_with(name, &opts).map_err(io("create", &file_path))?;
                use std::io::Write;
                f.write_all(data).map_err(io("write", &file_path))?;
                if let Durable::EachFile = durable {
                    f.sync_all().map_err(io("flush to disk", &file_path))?;
                }
            }
            match durable {
                Durable::EachFile => sync(&data_dir).map_err(io("flush the directory", &data_name)),
                // Every file and the data directory's entries, with other writers' batches.
                Durable::Batch(group) => group.sync().map_err(io("flush to disk", &data_name)),
            }
        })();
        if let Err(e) = written {
            let _ = dir.remove_dir_all(&data_name);
            return Err(e);
        }
        // The atomic step: a new symlink renamed over `..data`.
        replace_symlink(dir, path, DATA_LINK, &data_name)?;
        // User-visible names point through `..data`; add any new ones, then drop ones no longer in
        // the Secret (e.g. after switching layout). Plain files are replaced by links atomically.
        for (name, _) in files.iter() {
            let want = format!("{DATA_LINK}/{name}");
            if dir.read_link_contents(name).ok().as_deref() != Some(Path::new(&want)) {
                replace_symlink(dir, path, name, &want)?;
            }
        }
        for name in checked.links.iter().chain(&checked.plain) {
            if !files.contains(name) {
                // Checked above: a link through ..data, or a plain file now copied behind it.
                dir.remove_file_or_symlink(name).map_err(io("remove a stale key", name))?;
            }
        }
        match durable {
            Durable::EachFile => sync(dir).map_err(io("flush the directory", ""))?,
            Durable::Batch(group) => group.sync().map_err(io("flush the directory", ""))?,
        }
        if let Some(old) = &checked.data {
            if *old != data_name {
                let _ = dir.remove_dir_all(old);
            }
        }
        Ok(())
    }
}

/// How many writers of one run share a filesystem sync: enough that 1,000 first issuances pay
/// a few dozen syncs, few enough that the threads cost nothing next to the syncs they share.
const BATCH_WRITERS: usize = 32;

/// How a write is made durable: each file and directory synced on its own, or one filesystem
/// sync shared with the writers of the same batch.
#[derive(Clone, Copy)]
enum Durable<'a> {
    EachFile,
    Batch(&'a GroupSync),
}

/// The store's exclusive lock, held until dropped.
#[derive(Debug)]
pub struct StoreLock {
    file: std::fs::File,
    /// How many debris entries of earlier runs were removed when the lock was taken.
    pub removed_debris: usize,
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Emptied on release, so a run that changed nothing leaves every byte of the store as
        // it was; the kernel releases the lock itself when the file closes (or the process dies).
        let _ = self.file.set_len(0);
    }
}

fn sync(dir: &Dir) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        dir.open(".")?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

impl Store for DirStore {
    fn location(&self, secret: &SecretRef) -> String {
        self.dir(secret).display().to_string()
    }

    /// `STORE/<cluster>/istio-system/istio-ca-root-cert/root-cert.pem`, where whoever syncs the
    /// store with a cluster mirrors the ConfigMap istiod publishes (read as the store reads a
    /// Secret: no symlinks out, bounded size).
    fn istiod_roots(&self, cluster: &str) -> Result<Option<Vec<u8>>, Error> {
        let secret = SecretRef::new(cluster, "istio-system", ISTIO_CA_ROOT_CERT);
        Ok(self.read(&secret)?.and_then(|f| f.get("root-cert.pem").map(<[u8]>::to_vec)))
    }

    fn clusters_with_cacerts(&self) -> Result<Vec<String>, Error> {
        let Some(root) = self.open_root(false)? else { return Ok(Vec::new()) };
        let entries = root.entries().map_err(|source| IoError { path: self.root.clone(), action: "list", source })?;
        let mut found: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            // A directory whose name is not a cluster name is not a cluster (a backup, a note):
            // it is left out rather than failing every command that lists the clusters.
            .filter(|c| meshca::validate_cluster_name(c).is_ok())
            .filter(|c| matches!(self.open_secret(&SecretRef::cacerts(c), false), Ok(Some(_))))
            .collect();
        found.sort();
        Ok(found)
    }

    fn read(&self, secret: &SecretRef) -> Result<Option<Files>, Error> {
        // A writer holding the lock may swap `..data` while this reads (a dry run takes no lock):
        // read from the data directory `..data` names, then check it still names it.
        let gone = |e: &Error| matches!(e, Error::Io(io) if io.source.kind() == std::io::ErrorKind::NotFound);
        let mut last = None;
        for _ in 0..8 {
            let Some((dir, path)) = self.open_secret(secret, false)? else { return Ok(None) };
            let read = Self::check_secret(dir, path).and_then(|checked| Ok((Self::read_secret(&checked)?, checked)));
            let (files, checked) = match read {
                Ok(r) => r,
                Err(e) if gone(&e) => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let now = checked.dir.read_link_contents(DATA_LINK).ok();
            if now.as_deref().and_then(Path::to_str) != checked.data.as_deref() {
                continue;
            }
            return Ok(if files.is_empty() { None } else { Some(files) });
        }
        // Still missing after every retry: a dangling `..data`, not a race.
        if let Some(e) = last {
            return Err(e);
        }
        Err(Error::Store {
            location: self.location(secret),
            detail: "it kept changing while being read; is another writer running without the lock?".into(),
        })
    }

    fn write(&self, secret: &SecretRef, files: &Files, meta: &WriteMeta) -> Result<(), Error> {
        self.write_secret(secret, files, meta)
    }

    fn batch_writers(&self) -> usize {
        if cfg!(target_os = "linux") {
            BATCH_WRITERS
        } else {
            1
        }
    }

    fn meta(&self, secret: &SecretRef) -> Result<Option<WriteMeta>, Error> {
        let Some((dir, path)) = self.open_secret(secret, false)? else { return Ok(None) };
        let checked = Self::check_secret(dir, path)?;
        if checked.data.is_none() && checked.plain.is_empty() {
            return Ok(None);
        }
        Self::read_meta(&checked).map(Some)
    }
}

fn replace_symlink(dir: &Dir, path: &Path, name: &str, target: &str) -> Result<(), Error> {
    let tmp = format!(".{name}.link-{}", unique_stamp());
    dir.symlink(target, &tmp).map_err(|source| IoError {
        path: path.join(&tmp),
        action: "create a symlink",
        source,
    })?;
    dir.rename(&tmp, dir, name).map_err(|source| {
        let _ = dir.remove_file_or_symlink(&tmp);
        Error::from(IoError { path: path.join(name), action: "swap in", source })
    })
}

fn unique_stamp() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{nanos}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("meshca-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn files(pairs: &[(&str, &str)]) -> Files {
        pairs.iter().map(|(k, v)| (*k, v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn write_read_replace_and_clean_up() {
        let root = tempdir("rw");
        let store = DirStore::new(&root);
        let s = SecretRef::cacerts("c1");
        assert_eq!(store.read(&s).unwrap(), None);
        let v1 = files(&[("ca-cert.pem", "1"), ("ca-key.pem", "k1")]);
        store.write(&s, &v1, &WriteMeta::default()).unwrap();
        assert_eq!(store.read(&s).unwrap(), Some(v1));
        let v2 = files(&[("tls.crt", "2"), ("tls.key", "k2")]);
        store.write(&s, &v2, &WriteMeta::default()).unwrap();
        assert_eq!(store.read(&s).unwrap(), Some(v2), "old keys are gone after a layout change");
        // One data directory remains, plus the link and the keys.
        let dir = store.dir(&s);
        let hidden: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".."))
            .collect();
        assert_eq!(hidden.len(), 2, "{hidden:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = std::fs::canonicalize(dir.join("tls.key")).unwrap();
            assert_eq!(std::fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn syncs_ended(group: &GroupSync) -> u64 {
        group.state.lock().unwrap().ended
    }

    /// Each writer returns only after a sync that began after it asked; writers waiting
    /// together share syncs.
    #[test]
    fn a_group_sync_covers_every_writer_that_asked_before_it_began() {
        let root = tempdir("group-sync");
        std::fs::create_dir_all(&root).unwrap();
        let group = GroupSync::default();
        group.watch(&Dir::open_ambient_dir(&root, ambient_authority()).unwrap()).unwrap();
        let writers = 24;
        std::thread::scope(|s| {
            for _ in 0..writers {
                s.spawn(|| {
                    for _ in 0..5 {
                        let asked = group.state.lock().unwrap().started;
                        group.sync().unwrap();
                        let st = group.state.lock().unwrap();
                        assert!(st.ended > asked, "returned before a sync that began after the call ended");
                    }
                });
            }
        });
        let st = group.state.lock().unwrap();
        assert!(!st.running);
        assert!(st.ended <= writers * 5 + 1, "{} syncs", st.ended);
        println!("{} writes made durable by {} syncs", writers * 5, st.ended - 1);
        drop(st);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A sync that failed fails the writers that waited for it, and a writer is not told its
    /// write is durable while a failure after it asked is on record.
    #[test]
    fn a_failed_sync_is_reported_to_every_writer_it_covered() {
        let eio = |st: &SyncState, needed| st.outcome(needed).map(|r| r.map_err(|e| e.raw_os_error()));
        let mut st = SyncState { started: 3, ended: 2, last_failed: 0, running: true, last_error: None };
        assert_eq!(eio(&st, 3), None, "sync 3 is still running");
        st.ended = 3;
        assert_eq!(eio(&st, 3), Some(Ok(())));
        st.last_failed = 3;
        st.last_error = Some(Ok(libc::EIO));
        assert_eq!(eio(&st, 3), Some(Err(Some(libc::EIO))));
        assert_eq!(eio(&st, 2), Some(Err(Some(libc::EIO))), "a failure after the writer's sync counts");
        assert_eq!(eio(&st, 4), None);
        st.ended = 4;
        assert_eq!(eio(&st, 4), Some(Ok(())), "a success after the failure covers only later writers");
        // Through a real group: no descriptor to sync through is a failure, not a success.
        let group = GroupSync::default();
        assert!(group.sync().is_err());
        let st = group.state.lock().unwrap();
        assert_eq!((st.ended, st.last_failed), (1, 1));
    }

    #[test]
    fn directory_store_writes_share_the_batch_sync() {
        let root = tempdir("batched");
        let store = DirStore::new(&root);
        let s = SecretRef::cacerts("c1");
        let v1 = files(&[("ca-cert.pem", "1"), ("ca-key.pem", "k1")]);
        store.write(&s, &v1, &WriteMeta::default()).unwrap();
        assert_eq!(store.read(&s).unwrap(), Some(v1));
        if cfg!(target_os = "linux") {
            assert_eq!(syncs_ended(&store.batch), 2, "the staged data directory, then the swap");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_plain_directory_is_converted_without_a_mixed_state() {
        let root = tempdir("plain");
        let store = DirStore::new(&root);
        let s = SecretRef::new("mgmt", "gloo-mesh", "ca");
        crate::fs::write_files(&store.dir(&s), &files(&[("ca-cert.pem", "old"), ("extra.txt", "x")])).unwrap();
        store.write(&s, &files(&[("ca-cert.pem", "new")]), &WriteMeta::default()).unwrap();
        // A write replaces the Secret's whole data, as a Kubernetes replace does.
        assert_eq!(store.read(&s).unwrap(), Some(files(&[("ca-cert.pem", "new")])));
        let plain = std::fs::read_dir(store.dir(&s))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file())
            .count();
        assert_eq!(plain, 0, "every key is now a link through ..data");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn names_that_would_leave_the_store_are_refused() {
        let store = DirStore::new(tempdir("names"));
        for bad in ["..", "../x", "a/b", ".hidden", ""] {
            assert!(store.read(&SecretRef::cacerts(bad)).is_err(), "{bad}");
        }
    }

    #[cfg(unix)]
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                out.extend(snapshot(&p));
            } else if m.is_file() {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            } else {
                out.push((p.clone(), std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes()));
            }
        }
        out.sort();
        out
    }

    #[cfg(unix)]
    fn outside_with_victim(tag: &str) -> (PathBuf, Vec<(PathBuf, Vec<u8>)>) {
        let outside = tempdir(&format!("{tag}-outside"));
        std::fs::create_dir_all(outside.join("precious")).unwrap();
        std::fs::write(outside.join("precious/data"), b"keep me").unwrap();
        let snap = snapshot(&outside);
        (outside, snap)
    }

    #[test]
    #[cfg(unix)]
    fn a_planted_data_link_is_refused_and_nothing_outside_is_deleted() {
        let root = tempdir("planted-data");
        let store = DirStore::new(&root);
        let s = SecretRef::cacerts("c1");
        store.write(&s, &files(&[("ca-cert.pem", "1")]), &WriteMeta::default()).unwrap();
        let (outside, before) = outside_with_victim("planted-data");
        let dir = store.dir(&s);
        std::fs::remove_file(dir.join(DATA_LINK)).unwrap();
        std::os::unix::fs::symlink(outside.join("precious"), dir.join(DATA_LINK)).unwrap();
        for e in [
            store.read(&s).unwrap_err(),
            store.write(&s, &files(&[("ca-cert.pem", "2")]), &WriteMeta::default()).unwrap_err(),
        ] {
            assert!(matches!(e, Error::UnsafeStorePath { .. }), "{e}");
            assert!(e.to_string().contains("..data: points to"), "{e}");
        }
        // A relative link that climbs out is refused the same way.
        std::fs::remove_file(dir.join(DATA_LINK)).unwrap();
        std::os::unix::fs::symlink("../../../../x", dir.join(DATA_LINK)).unwrap();
        assert!(matches!(store.read(&s).unwrap_err(), Error::UnsafeStorePath { .. }));
        assert_eq!(snapshot(&outside), before, "nothing outside the store changed");
        // Debris clean-up under the lock leaves the refused Secret alone too.
        drop(store.lock(std::time::Duration::from_secs(1), "test", |_| {}).unwrap());
        assert_eq!(snapshot(&outside), before);
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn symlinked_cluster_namespace_or_secret_directories_are_refused() {
        for (level, part) in [("cluster", 1), ("namespace", 2), ("secret", 3)] {
            let root = tempdir(&format!("symdir-{level}"));
            let store = DirStore::new(&root);
            let (outside, before) = outside_with_victim(&format!("symdir-{level}"));
            let s = SecretRef::cacerts("c1");
            let parts = ["c1", "istio-system", "cacerts"];
            let mut link = root.clone();
            for p in &parts[..part - 1] {
                link.push(p);
            }
            std::fs::create_dir_all(&link).unwrap();
            link.push(parts[part - 1]);
            std::os::unix::fs::symlink(&outside, &link).unwrap();
            let e = store.write(&s, &files(&[("ca-key.pem", "secret key")]), &WriteMeta::default()).unwrap_err();
            assert!(matches!(e, Error::UnsafeStorePath { ref path, .. } if *path == link), "{level}: {e}");
            assert!(e.to_string().contains("is a symlink"), "{e}");
            assert!(matches!(store.read(&s).unwrap_err(), Error::UnsafeStorePath { .. }), "{level}");
            assert_eq!(snapshot(&outside), before, "{level}: no key was written through the link");
            // Another cluster in the same store still works.
            store.write(&SecretRef::cacerts("c2"), &files(&[("ca-cert.pem", "x")]), &WriteMeta::default()).unwrap();
            std::fs::remove_dir_all(&root).unwrap();
            std::fs::remove_dir_all(&outside).unwrap();
        }
    }

    #[test]
    #[cfg(unix)]
    fn a_key_link_that_leads_elsewhere_is_refused() {
        let root = tempdir("keylink");
        let store = DirStore::new(&root);
        let s = SecretRef::cacerts("c1");
        store.write(&s, &files(&[("ca-cert.pem", "1"), ("ca-key.pem", "k")]), &WriteMeta::default()).unwrap();
        let (outside, before) = outside_with_victim("keylink");
        let key = store.dir(&s).join("ca-key.pem");
        std::fs::remove_file(&key).unwrap();
        std::os::unix::fs::symlink(outside.join("precious/data"), &key).unwrap();
        let e = store.write(&s, &files(&[("ca-cert.pem", "2")]), &WriteMeta::default()).unwrap_err();
        assert!(e.to_string().contains("ca-key.pem: is a link to"), "{e}");
        assert!(matches!(store.read(&s).unwrap_err(), Error::UnsafeStorePath { .. }));
        assert_eq!(snapshot(&outside), before);
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn special_files_are_reported_and_never_block() {
        let root = tempdir("fifo");
        let store = DirStore::new(&root);
        let s = SecretRef::new("mgmt", "gloo-mesh", "ca");
        let dir = store.dir(&s);
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("mkfifo").arg(dir.join("ca-cert.pem")).status().unwrap();
        assert!(status.success());
        let e = store.read(&s).unwrap_err();
        assert!(e.to_string().contains("ca-cert.pem: is a FIFO, not a regular file"), "{e}");
        std::fs::remove_file(dir.join("ca-cert.pem")).unwrap();
        std::fs::create_dir(dir.join("ca-cert.pem")).unwrap();
        let e = store.read(&s).unwrap_err();
        assert!(e.to_string().contains("ca-cert.pem: is a directory, not a regular file"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn debris_of_meshca_is_removed_under_the_lock_and_nothing_else() {
        let root = tempdir("debris");
        let store = DirStore::new(&root);
        let s = SecretRef::cacerts("c1");
        store.write(&s, &files(&[("ca-cert.pem", "1")]), &WriteMeta::default()).unwrap();
        let dir = store.dir(&s);
        std::fs::create_dir(dir.join("..1700000000000000000_42_7")).unwrap();
        std::fs::write(dir.join("..1700000000000000000_42_7/ca-key.pem"), b"old").unwrap();
        std::os::unix::fs::symlink("..1700000000000000000_42_7", dir.join("...data.link-1700000000000000000_42_8"))
            .unwrap();
        std::fs::create_dir(dir.join("..user-notes")).unwrap();
        std::fs::write(dir.join(".keep"), b"mine").unwrap();
        let lock = store.lock(std::time::Duration::from_secs(1), "test", |_| {}).unwrap();
        assert_eq!(lock.removed_debris, 2);
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left.len(), 5, "{left:?}");
        assert!(left.contains(&"..user-notes".to_owned()) && left.contains(&".keep".to_owned()), "{left:?}");
        assert_eq!(store.read(&s).unwrap(), Some(files(&[("ca-cert.pem", "1")])));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_second_writer_waits_for_the_lock_and_times_out_naming_the_holder() {
        let root = tempdir("lock");
        let store = DirStore::new(&root);
        let held = store.lock(std::time::Duration::from_secs(1), "reconcile", |_| {}).unwrap();
        let mut told = Vec::new();
        let e =
            store.lock(std::time::Duration::from_millis(300), "quickstart", |h| told.push(h.to_owned())).unwrap_err();
        assert_eq!(told.len(), 1, "told once while waiting");
        assert!(told[0].contains(&format!("pid {} (reconcile)", std::process::id())), "{told:?}");
        assert!(matches!(e, Error::LockTimeout { .. }), "{e}");
        assert!(e.to_string().contains("(reconcile)"), "{e}");
        drop(held);
        drop(store.lock(std::time::Duration::from_secs(1), "again", |_| {}).unwrap());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn a_planted_lock_file_link_is_refused_and_its_target_untouched() {
        let root = tempdir("locklink");
        std::fs::create_dir_all(&root).unwrap();
        let (outside, before) = outside_with_victim("locklink");
        std::os::unix::fs::symlink(outside.join("precious/data"), root.join(LOCK_FILE)).unwrap();
        let e = DirStore::new(&root).lock(std::time::Duration::from_secs(1), "test", |_| {}).unwrap_err();
        assert!(matches!(e, Error::UnsafeStorePath { .. }), "{e}");
        assert_eq!(snapshot(&outside), before, "the link's target was not truncated or written");
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn a_lock_file_meshca_did_not_make_is_refused_untouched() {
        let root = tempdir("lockhard");
        std::fs::create_dir_all(&root).unwrap();
        let (outside, before) = outside_with_victim("lockhard");
        // A hard link to a file outside the store: same inode, two links.
        std::fs::hard_link(outside.join("precious/data"), root.join(LOCK_FILE)).unwrap();
        let store = DirStore::new(&root);
        let e = store.lock(std::time::Duration::from_secs(1), "test", |_| {}).unwrap_err();
        assert!(matches!(e, Error::UnsafeStorePath { .. }), "{e}");
        assert!(e.to_string().contains("2 hard links"), "{e}");
        assert_eq!(snapshot(&outside), before, "the linked file was not truncated or written");
        // A regular file with one link but content meshca never writes: refused, kept as it was.
        std::fs::remove_file(root.join(LOCK_FILE)).unwrap();
        std::fs::write(root.join(LOCK_FILE), b"-----BEGIN PRIVATE KEY-----\n").unwrap();
        let e = store.lock(std::time::Duration::from_secs(1), "test", |_| {}).unwrap_err();
        assert!(e.to_string().contains("other than the line meshca writes"), "{e}");
        assert!(!e.to_string().contains("BEGIN"), "the content is not echoed: {e}");
        assert_eq!(std::fs::read(root.join(LOCK_FILE)).unwrap(), b"-----BEGIN PRIVATE KEY-----\n");
        // A directory in its place.
        std::fs::remove_file(root.join(LOCK_FILE)).unwrap();
        std::fs::create_dir(root.join(LOCK_FILE)).unwrap();
        assert!(matches!(
            store.lock(std::time::Duration::from_secs(1), "t", |_| {}),
            Err(Error::UnsafeStorePath { .. })
        ));
        // meshca's own lock, left by a crashed run, is taken over as before.
        std::fs::remove_dir(root.join(LOCK_FILE)).unwrap();
        std::fs::write(root.join(LOCK_FILE), b"pid 1 (reconcile) since 2026-01-01T00:00:00Z").unwrap();
        drop(store.lock(std::time::Duration::from_secs(1), "test", |_| {}).unwrap());
        assert_eq!(std::fs::read(root.join(LOCK_FILE)).unwrap(), b"", "emptied on release");
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn readers_see_what_a_consumer_opening_each_name_sees() {
        let root = tempdir("mountview");
        let store = DirStore::new(&root);
        let s = SecretRef::cacerts("c1");
        let v1 = files(&[("ca-cert.pem", "c"), ("root-cert.pem", "r"), ("ca-crl.pem", "l")]);
        store.write(&s, &v1, &WriteMeta::default()).unwrap();
        let dir = store.dir(&s);
        // A missing top-level link: istiod sees no root-cert.pem, and neither do readers.
        std::fs::remove_file(dir.join("root-cert.pem")).unwrap();
        let got = store.read(&s).unwrap().unwrap();
        assert_eq!(got.get("root-cert.pem"), None, "{got:?}");
        assert_eq!(crate::fs::read_files(&dir).unwrap().get("root-cert.pem"), None);
        // A top-level name replaced by a regular file: that file is what is seen.
        std::fs::remove_file(dir.join("ca-crl.pem")).unwrap();
        std::fs::write(dir.join("ca-crl.pem"), b"foreign").unwrap();
        assert_eq!(store.read(&s).unwrap().unwrap().get("ca-crl.pem"), Some(&b"foreign"[..]));
        assert_eq!(crate::fs::read_files(&dir).unwrap().get("ca-crl.pem"), Some(&b"foreign"[..]));
        // The next write puts every name back as a link through ..data.
        store.write(&s, &v1, &WriteMeta::default()).unwrap();
        assert_eq!(store.read(&s).unwrap(), Some(v1.clone()));
        assert_eq!(crate::fs::read_files(&dir).unwrap(), v1);
        for name in ["ca-cert.pem", "root-cert.pem", "ca-crl.pem"] {
            assert_eq!(std::fs::read_link(dir.join(name)).unwrap(), Path::new("..data").join(name));
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn the_metadata_meshca_records_is_read_as_hostile_input() {
        let root = tempdir("meta");
        let store = DirStore::new(&root);
        let s = SecretRef::cacerts("c1");
        let mut meta = WriteMeta::managed();
        meta.annotations.insert("meshca.dev/policy".into(), "ns/p".into());
        store.write(&s, &files(&[("ca-cert.pem", "1")]), &meta).unwrap();
        assert_eq!(store.meta(&s).unwrap(), Some(meta));
        assert_eq!(store.read(&s).unwrap(), Some(files(&[("ca-cert.pem", "1")])), "not one of the Secret's keys");
        assert_eq!(store.meta(&SecretRef::cacerts("absent")).unwrap(), None);
        let data = std::fs::canonicalize(store.dir(&s).join(DATA_LINK)).unwrap();
        let (outside, before) = outside_with_victim("meta");
        // A link planted in its place, garbage, a huge file: refused, the link's target untouched.
        std::fs::remove_file(data.join(META_FILE)).unwrap();
        std::os::unix::fs::symlink(outside.join("precious/data"), data.join(META_FILE)).unwrap();
        assert!(matches!(store.meta(&s), Err(Error::UnsafeStorePath { .. })));
        std::fs::remove_file(data.join(META_FILE)).unwrap();
        std::fs::write(data.join(META_FILE), b"{not json").unwrap();
        assert!(matches!(store.meta(&s), Err(Error::UnsafeStorePath { .. })));
        std::fs::write(data.join(META_FILE), vec![b' '; 100 * 1024]).unwrap();
        assert!(matches!(store.meta(&s), Err(Error::UnsafeStorePath { .. })));
        assert_eq!(snapshot(&outside), before);
        // A plain directory made by hand is not meshca's.
        let plain = SecretRef::new("mgmt", "gloo-mesh", "ca");
        crate::fs::write_files(&store.dir(&plain), &files(&[("ca-cert.pem", "x")])).unwrap();
        assert_eq!(store.meta(&plain).unwrap(), Some(WriteMeta::default()));
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn a_reader_never_sees_a_half_swapped_secret() {
        let root = tempdir("torn");
        let store = DirStore::new(&root);
        let s = SecretRef::cacerts("c1");
        let version = |n: usize| files(&[("a", &n.to_string()), ("b", &n.to_string()), ("c", &n.to_string())]);
        store.write(&s, &version(0), &WriteMeta::default()).unwrap();
        let writer = {
            let (store, s) = (store.clone(), s.clone());
            std::thread::spawn(move || {
                for n in 1..300 {
                    store.write(&s, &version(n), &WriteMeta::default()).unwrap();
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() {
            let got = store.read(&s).unwrap().unwrap();
            let values: Vec<&[u8]> = got.iter().map(|(_, v)| v).collect();
            assert_eq!(values.len(), 3, "{got:?}");
            assert!(values.iter().all(|v| *v == values[0]), "mixed versions: {got:?}");
            // The same holds for a reader that names the directory (verify, inspect).
            let got = crate::fs::read_files(&store.dir(&s)).unwrap();
            let values: Vec<&[u8]> = got.iter().map(|(_, v)| v).collect();
            assert!(values.len() == 3 && values.iter().all(|v| *v == values[0]), "mixed versions: {got:?}");
            reads += 1;
        }
        writer.join().unwrap();
        assert!(reads > 0);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
