//! Secret stores. The embedded default is a directory that mirrors Kubernetes Secrets on disk:
//! `STORE/<cluster>/<namespace>/<secret>/<key>`.
//!
//! A Secret directory is laid out the way kubelet projects a Secret into a pod (and so the way
//! istiod sees `/etc/cacerts`): the files live in a hidden timestamped directory, `..data` is a
//! symlink to it, and each key is a symlink `key -> ..data/key`. Replacing a Secret writes a new
//! data directory and swaps `..data` with one atomic rename, so a reader or a crash sees either
//! the whole old bundle or the whole new one, never a mix. Plain directories of regular files
//! (as `meshca root-ca --out` writes) read the same way.

use std::fs;
use std::path::{Path, PathBuf};

use meshca::Files;

use crate::error::Error;
use crate::fs::{create_dir_private, is_key_file, sync_dir, write_new_file, IoError};

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

/// Where Secrets are read and written. Implementations make each write atomic per Secret.
pub trait Store {
    /// A human-readable location of a Secret (a path, or a cluster/namespace/name).
    fn location(&self, secret: &SecretRef) -> String;
    /// The Secret's data, or `None` if it does not exist.
    fn read(&self, secret: &SecretRef) -> Result<Option<Files>, Error>;
    /// Creates or replaces the Secret's data as a whole. A store with concurrent writers replaces
    /// only the version it last read and returns [`Error::Conflict`] otherwise; a store that
    /// knows who wrote a Secret refuses to replace one meshca does not manage
    /// ([`Error::NotManaged`]).
    fn write(&self, secret: &SecretRef, files: &Files, meta: &WriteMeta) -> Result<(), Error>;
    /// Restarts istiod in `cluster` so a new CA is used at once (`autoRestartPods`). Returns
    /// what was restarted, or `None` where the store cannot restart anything.
    fn restart_istiod(&self, cluster: &str) -> Result<Option<String>, Error> {
        let _ = cluster;
        Ok(None)
    }
    /// The clusters that hold a `cacerts` Secret, where the store can tell (the directory store
    /// can; a Kubernetes store knows only the clusters it was given, and says none). A root
    /// rotation waits for these too, even when a run names only some.
    fn clusters_with_cacerts(&self) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }
}

/// The directory store.
#[derive(Clone, Debug)]
pub struct DirStore {
    root: PathBuf,
}

const DATA_LINK: &str = "..data";

impl DirStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirStore { root: root.into() }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding a Secret's keys.
    pub fn dir(&self, secret: &SecretRef) -> PathBuf {
        self.root.join(&secret.cluster).join(&secret.namespace).join(&secret.name)
    }

    fn checked_dir(&self, secret: &SecretRef) -> Result<PathBuf, Error> {
        for (what, part) in [("cluster", &secret.cluster), ("namespace", &secret.namespace), ("secret", &secret.name)] {
            // Each part becomes a path component: refuse anything that could leave the store.
            let ok = !part.is_empty()
                && !part.starts_with('.')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(Error::Input(format!(
                    "{what} name `{part}` cannot be used in the directory store (letters, digits, '-', '_', '.'; not \
                     starting with '.')"
                )));
            }
        }
        Ok(self.dir(secret))
    }
}

impl Store for DirStore {
    fn location(&self, secret: &SecretRef) -> String {
        self.dir(secret).display().to_string()
    }

    fn clusters_with_cacerts(&self) -> Result<Vec<String>, Error> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(crate::fs::IoError { path: self.root.clone(), action: "list", source: e }.into()),
        };
        let mut found: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|c| self.checked_dir(&SecretRef::cacerts(c)).is_ok_and(|d| d.is_dir()))
            .collect();
        found.sort();
        Ok(found)
    }

    fn read(&self, secret: &SecretRef) -> Result<Option<Files>, Error> {
        let dir = self.checked_dir(secret)?;
        if !dir.exists() {
            return Ok(None);
        }
        let files = crate::fs::read_files(&dir)?;
        Ok(if files.is_empty() { None } else { Some(files) })
    }

    fn write(&self, secret: &SecretRef, files: &Files, _meta: &WriteMeta) -> Result<(), Error> {
        let dir = self.checked_dir(secret)?;
        write_secret_dir(&dir, files)?;
        Ok(())
    }
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> IoError {
    let path = path.to_owned();
    move |source| IoError { path, action, source }
}

/// Replaces the contents of a Secret directory atomically (see the module docs).
pub fn write_secret_dir(dir: &Path, files: &Files) -> Result<(), IoError> {
    create_dir_private(dir)?;
    // A directory of plain files (written by hand or by `--out`): first move its current
    // content behind `..data` so every later step swaps between two consistent states.
    if has_plain_files(dir)? && !dir.join(DATA_LINK).exists() {
        let current = crate::fs::read_files(dir)?;
        swap_data(dir, &current)?;
    }
    swap_data(dir, files)
}

fn has_plain_files(dir: &Path) -> Result<bool, IoError> {
    for entry in fs::read_dir(dir).map_err(io(dir, "read the directory"))? {
        let entry = entry.map_err(io(dir, "read the directory"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ft = entry.file_type().map_err(io(&entry.path(), "inspect"))?;
        if !name.starts_with('.') && ft.is_file() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn swap_data(dir: &Path, files: &Files) -> Result<(), IoError> {
    let stamp = unique_stamp();
    let data_name = format!("..{stamp}");
    let data_dir = dir.join(&data_name);
    create_dir_private(&data_dir)?;
    // The data directory is invisible until `..data` points at it, so its files need durable
    // contents but no rename of their own: the swap below is the one commit point.
    let written = (|| {
        for (name, data) in files.iter() {
            let mode = if is_key_file(name) { 0o600 } else { 0o644 };
            write_new_file(&data_dir.join(name), data, mode)?;
        }
        sync_dir(&data_dir)
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&data_dir);
        return Err(e);
    }
    let old_target = fs::read_link(dir.join(DATA_LINK)).ok();
    // The atomic step: a new symlink renamed over `..data`.
    replace_symlink(dir, DATA_LINK, Path::new(&data_name))?;
    // User-visible names point through `..data`; add any new ones, then drop ones no longer in
    // the Secret (e.g. after switching layout). Plain files are replaced by links atomically.
    for (name, _) in files.iter() {
        let link = dir.join(name);
        let want = Path::new(DATA_LINK).join(name);
        if fs::read_link(&link).ok().as_deref() != Some(want.as_path()) {
            replace_symlink(dir, name, &want)?;
        }
    }
    for entry in fs::read_dir(dir).map_err(io(dir, "read the directory"))? {
        let entry = entry.map_err(io(dir, "read the directory"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || files.contains(&name) {
            continue;
        }
        if entry.file_type().map(|t| t.is_symlink()).unwrap_or(false) {
            fs::remove_file(entry.path()).map_err(io(&entry.path(), "remove a stale key"))?;
        }
    }
    sync_dir(dir)?;
    if let Some(old) = old_target {
        if old != Path::new(&data_name) {
            let _ = fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(())
}

fn replace_symlink(dir: &Path, name: &str, target: &Path) -> Result<(), IoError> {
    let tmp = dir.join(format!(".{name}.link-{}", unique_stamp()));
    #[cfg(unix)]
    std::os::unix::fs::symlink(target, &tmp).map_err(io(&tmp, "create a symlink"))?;
    #[cfg(not(unix))]
    return Err(IoError {
        path: tmp,
        action: "create a symlink",
        source: std::io::Error::new(std::io::ErrorKind::Unsupported, "the directory store needs a Unix file system"),
    });
    #[cfg(unix)]
    {
        let dest = dir.join(name);
        fs::rename(&tmp, &dest).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            IoError { path: dest, action: "swap in", source: e }
        })
    }
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
        let _ = fs::remove_dir_all(&d);
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
        let hidden: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".."))
            .collect();
        assert_eq!(hidden.len(), 2, "{hidden:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = fs::canonicalize(dir.join("tls.key")).unwrap();
            assert_eq!(fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        fs::remove_dir_all(&root).unwrap();
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
        let plain =
            fs::read_dir(store.dir(&s)).unwrap().filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file()).count();
        assert_eq!(plain, 0, "every key is now a link through ..data");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn names_that_would_leave_the_store_are_refused() {
        let store = DirStore::new(tempdir("names"));
        for bad in ["..", "../x", "a/b", ".hidden", ""] {
            assert!(store.read(&SecretRef::cacerts(bad)).is_err(), "{bad}");
        }
    }
}
