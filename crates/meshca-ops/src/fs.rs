//! Reading and writing bundle directories: key files 0600, every file written atomically
//! (temporary file in the same directory, fsync, rename), never half-written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use meshca::Files;

/// An I/O failure, naming the path and what was being done.
#[derive(Debug)]
pub struct IoError {
    /// The path involved.
    pub path: PathBuf,
    /// What meshca was doing.
    pub action: &'static str,
    /// The operating system's error.
    pub source: io::Error,
}

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: cannot {}: {}", self.path.display(), self.action, self.source)
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> IoError + 'a {
    move |source| IoError { path: path.to_owned(), action, source }
}

/// Whether a file name holds private key material (and so is written 0600).
pub fn is_key_file(name: &str) -> bool {
    name.ends_with("key.pem") || name.ends_with(".key")
}

/// Writes `data` to `path` atomically: a temporary file beside it (created with `mode`, so a
/// key is never readable by others even for an instant), fsync, rename over `path`, fsync the
/// directory. A crash leaves either the old file or the new one.
pub fn write_file_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), IoError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = unique_temp(dir, &name);
    let result = (|| {
        write_new_file(&tmp, data, mode)?;
        fs::rename(&tmp, path).map_err(io_err(path, "replace"))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` (which must not exist) with `mode` and durable contents: for files inside a
/// directory no reader sees yet, where the directory's later atomic swap is the commit point.
pub fn write_new_file(path: &Path, data: &[u8], mode: u32) -> Result<(), IoError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(io_err(path, "create"))?;
    f.write_all(data).map_err(io_err(path, "write"))?;
    f.sync_all().map_err(io_err(path, "flush to disk"))
}

fn unique_temp(dir: &Path, name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// fsync a directory so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), IoError> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir, "flush the directory"))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Creates `dir` (and parents) with mode 0700 for new directories.
pub fn create_dir_private(dir: &Path) -> Result<(), IoError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(io_err(dir, "create the directory"))
}

/// Writes every file of `files` into `dir` (created if needed), each atomically, key files 0600
/// and the rest 0644. Returns the paths written, in name order.
pub fn write_files(dir: &Path, files: &Files) -> Result<Vec<PathBuf>, IoError> {
    create_dir_private(dir)?;
    let mut written = Vec::with_capacity(files.len());
    for (name, data) in files.iter() {
        let path = dir.join(name);
        let mode = if is_key_file(name) { 0o600 } else { 0o644 };
        write_file_atomic(&path, data, mode)?;
        written.push(path);
    }
    Ok(written)
}

/// Reads the regular files of `dir` (following symlinks, as kubelet's projected Secret volumes
/// need) into a file map, skipping hidden entries (`..data`, temporary files) and subdirectories.
pub fn read_files(dir: &Path) -> Result<Files, IoError> {
    let mut files = Files::new();
    let entries = fs::read_dir(dir).map_err(io_err(dir, "read the directory"))?;
    for entry in entries {
        let entry = entry.map_err(io_err(dir, "read the directory"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let meta = fs::metadata(&path).map_err(io_err(&path, "inspect"))?;
        if !meta.is_file() {
            continue;
        }
        files.insert(name, fs::read(&path).map_err(io_err(&path, "read"))?);
    }
    Ok(files)
}

/// Whether `dir` exists and holds anything.
pub fn is_nonempty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("meshca-fs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    #[cfg(unix)]
    fn keys_are_0600_and_others_0644_and_round_trip() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempdir("modes");
        let files: Files = [("ca-key.pem", b"k".to_vec()), ("ca-cert.pem", b"c".to_vec())].into_iter().collect();
        let written = write_files(&d, &files).unwrap();
        assert_eq!(written.len(), 2);
        let mode = |n: &str| fs::metadata(d.join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("ca-key.pem"), 0o600);
        assert_eq!(mode("ca-cert.pem"), 0o644);
        assert_eq!(read_files(&d).unwrap(), files);
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(&d).unwrap().count(), 2);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn replacing_keeps_old_content_until_the_rename() {
        let d = tempdir("replace");
        create_dir_private(&d).unwrap();
        let p = d.join("ca-cert.pem");
        write_file_atomic(&p, b"old", 0o644).unwrap();
        write_file_atomic(&p, b"new", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let d = tempdir("fail");
        create_dir_private(&d).unwrap();
        // Renaming a file over a non-empty directory fails after the temp file was written.
        fs::create_dir(d.join("ca-cert.pem")).unwrap();
        fs::write(d.join("ca-cert.pem").join("x"), b"x").unwrap();
        let e = write_file_atomic(&d.join("ca-cert.pem"), b"new", 0o644).unwrap_err();
        assert!(e.to_string().contains("ca-cert.pem: cannot replace"), "{e}");
        let names: Vec<_> = fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["ca-cert.pem"]);
        fs::remove_dir_all(&d).unwrap();
    }
}
