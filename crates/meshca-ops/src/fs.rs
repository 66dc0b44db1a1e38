//! Reading and writing bundle directories: key files 0600, every file written atomically
//! (temporary file in the same directory, fsync, rename), never half-written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use meshca::Files;

pub use crate::error::IoError;

fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> IoError + 'a {
    move |source| IoError { path: path.to_owned(), action, source }
}

/// The user meshca runs as (its effective uid): files meshca made belong to it.
#[cfg(unix)]
pub(crate) fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
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

/// The most bytes meshca reads from one file: the core's input limit (16 MiB).
pub const MAX_FILE_BYTES: usize = meshca::MAX_INPUT_BYTES;

/// The most entries meshca looks at in one bundle directory.
pub const MAX_DIR_ENTRIES: usize = 256;

/// The file names a bundle directory may hold: a non-regular file under one of these names is
/// reported as such rather than skipped (skipping would make it look "missing").
const BUNDLE_NAMES: &[&str] = &[
    meshca::CA_CERT,
    meshca::CA_KEY,
    meshca::CERT_CHAIN,
    meshca::ROOT_CERT,
    meshca::TLS_CRT,
    meshca::TLS_KEY,
    meshca::CA_CRT,
    "ca-crl.pem",
];

/// What kind of file system object `ft` is, for messages ("a directory", "a FIFO").
pub fn kind_of(ft: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let device = ft.is_block_device() || ft.is_char_device();
        describe_kind(ft.is_dir(), ft.is_symlink(), ft.is_file(), ft.is_fifo(), ft.is_socket(), device)
    }
    #[cfg(not(unix))]
    describe_kind(ft.is_dir(), ft.is_symlink(), ft.is_file(), false, false, false)
}

/// The words for a kind of file system object, from its type bits.
pub(crate) fn describe_kind(dir: bool, link: bool, file: bool, fifo: bool, socket: bool, device: bool) -> &'static str {
    match (dir, link, file, fifo, socket, device) {
        (true, ..) => "a directory",
        (_, true, ..) => "a symlink",
        (_, _, true, ..) => "a regular file",
        (_, _, _, true, ..) => "a FIFO",
        (_, _, _, _, true, _) => "a socket",
        (.., true) => "a device",
        _ => "not a regular file",
    }
}

pub(crate) fn not_regular(path: &Path, what: &str) -> IoError {
    IoError {
        path: path.to_owned(),
        action: "read",
        source: io::Error::new(io::ErrorKind::InvalidInput, format!("not a regular file (it is {what})")),
    }
}

/// Reads a whole file that a user named (following symlinks, as paths on the command line are
/// followed): it must be a regular file of at most [`MAX_FILE_BYTES`]. It is opened without
/// blocking, so a FIFO never hangs meshca and a device is never read.
pub fn read_input(path: &Path) -> Result<Vec<u8>, IoError> {
    read_bounded(open_input(path)?, path)
}

/// Opens a file that a user named for reading: the one gate every input file passes (bundle
/// files, PIN files, policies). Opened without blocking, so a FIFO never hangs meshca, and
/// refused unless it is a regular file, so a device or a directory is never read. The caller
/// bounds how much it reads.
pub fn open_input(path: &Path) -> Result<File, IoError> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK | libc::O_NOCTTY);
    let f = opts.open(path).map_err(io_err(path, "read"))?;
    let meta = f.metadata().map_err(io_err(path, "inspect"))?;
    if !meta.is_file() {
        return Err(not_regular(path, kind_of(&meta.file_type())));
    }
    Ok(f)
}

/// Reads at most [`MAX_FILE_BYTES`] from an open regular file, refusing a larger one.
pub fn read_bounded(f: impl io::Read, path: &Path) -> Result<Vec<u8>, IoError> {
    use std::io::Read;
    let mut data = Vec::new();
    f.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut data).map_err(io_err(path, "read"))?;
    if data.len() > MAX_FILE_BYTES {
        return Err(IoError {
            path: path.to_owned(),
            action: "read",
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {} MiB, the most meshca reads from one file", MAX_FILE_BYTES / (1024 * 1024)),
            ),
        });
    }
    Ok(data)
}

/// Reads a bundle directory into a file map: its regular files, skipping hidden entries
/// (`..data`, temporary files) and unrelated subdirectories. A bundle file name that is not a
/// regular file (a directory, FIFO, socket or device called `ca-cert.pem`) is an error.
///
/// A directory laid out as kubelet projects a Secret (and as the directory store writes it:
/// `..data` a link to a data directory, each key a link through it) is read from the data
/// directory `..data` names, and `..data` is read again afterwards: if a writer swapped it
/// meanwhile, the read starts over, so the files always come from one version, never a mix.
pub fn read_files(dir: &Path) -> Result<Files, IoError> {
    let data_link = dir.join("..data");
    for _ in 0..8 {
        let Ok(target) = fs::read_link(&data_link) else {
            return read_plain_dir(dir);
        };
        match read_plain_dir(&dir.join(&target)) {
            Ok(files) if fs::read_link(&data_link).ok().as_deref() == Some(target.as_path()) => {
                return mount_view(dir, files)
            }
            // Swapped while reading (the old data directory may even be gone): read again.
            Ok(_) => continue,
            Err(e) if e.source.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Err(IoError {
        path: data_link,
        action: "read a consistent version",
        source: io::Error::other("it kept changing while being read; is another writer running?"),
    })
}

/// What a consumer that opens `dir/<key>` sees (istiod opens `/etc/cacerts/root-cert.pem`, not
/// `..data/root-cert.pem`): each visible name that links through `..data` has the data
/// directory's content (`data`, read as one version); a visible name that is anything else (a
/// regular file put there by hand, a link elsewhere) is read as it stands; a key of the data
/// directory with no visible name is absent, as it is to istiod.
fn mount_view(dir: &Path, data: Files) -> Result<Files, IoError> {
    read_dir_view(dir, Some(&data))
}

fn read_plain_dir(dir: &Path) -> Result<Files, IoError> {
    read_dir_view(dir, None)
}

/// The visible files of `dir` (hidden entries and unrelated subdirectories skipped, at most
/// [`MAX_DIR_ENTRIES`] looked at), each read through the input gate; with `data`, a name that
/// links to `..data/<name>` takes its content from `data` instead.
fn read_dir_view(dir: &Path, data: Option<&Files>) -> Result<Files, IoError> {
    let mut files = Files::new();
    let entries = fs::read_dir(dir).map_err(io_err(dir, "read the directory"))?;
    for (i, entry) in entries.enumerate() {
        let entry = entry.map_err(io_err(dir, "read the directory"))?;
        if i >= MAX_DIR_ENTRIES {
            return Err(IoError {
                path: dir.to_owned(),
                action: "read the directory",
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("it holds more than {MAX_DIR_ENTRIES} entries; is this a bundle directory?"),
                ),
            });
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if let Some(data) = data {
            if fs::read_link(&path).ok().is_some_and(|t| t == Path::new("..data").join(&name)) {
                if let Some(content) = data.get(&name) {
                    files.insert(name, content.to_vec());
                }
                continue;
            }
        }
        let meta = fs::metadata(&path).map_err(io_err(&path, "inspect"))?;
        if !meta.is_file() {
            if BUNDLE_NAMES.contains(&name.as_str()) {
                return Err(not_regular(&path, kind_of(&meta.file_type())));
            }
            continue;
        }
        files.insert(name, read_input(&path)?);
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

    #[test]
    #[cfg(unix)]
    fn special_and_huge_inputs_are_refused_without_blocking() {
        let d = tempdir("special");
        create_dir_private(&d).unwrap();
        // A FIFO: opening it for reading would block until a writer comes.
        let fifo = d.join("policy.yaml");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let e = read_input(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file (it is a FIFO)"), "{e}");
        // A device is never read (/dev/zero would never end).
        let e = read_input(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("not a regular file (it is a device)"), "{e}");
        let e = read_input(&d).unwrap_err().to_string();
        assert!(e.contains("not a regular file (it is a directory)"), "{e}");
        // Larger than the limit: refused after reading at most limit + 1 bytes.
        let big = d.join("big.pem");
        File::create(&big).unwrap().set_len(MAX_FILE_BYTES as u64 + 1).unwrap();
        let e = read_input(&big).unwrap_err().to_string();
        assert!(e.contains("larger than 16 MiB"), "{e}");
        File::create(&big).unwrap().set_len(MAX_FILE_BYTES as u64).unwrap();
        assert_eq!(read_input(&big).unwrap().len(), MAX_FILE_BYTES);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn a_bundle_file_that_is_not_regular_is_named_not_missing() {
        let d = tempdir("notregular");
        create_dir_private(&d).unwrap();
        fs::write(d.join("ca-key.pem"), b"k").unwrap();
        fs::create_dir(d.join("ca-cert.pem")).unwrap();
        let e = read_files(&d).unwrap_err().to_string();
        assert!(e.contains("ca-cert.pem: cannot read: not a regular file (it is a directory)"), "{e}");
        fs::remove_dir(d.join("ca-cert.pem")).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(d.join("root-cert.pem")).status().unwrap().success());
        let e = read_files(&d).unwrap_err().to_string();
        assert!(e.contains("root-cert.pem: cannot read: not a regular file (it is a FIFO)"), "{e}");
        fs::remove_file(d.join("root-cert.pem")).unwrap();
        // Unrelated subdirectories are not part of a bundle.
        fs::create_dir(d.join("workloads")).unwrap();
        assert_eq!(read_files(&d).unwrap().len(), 1);
        fs::remove_dir_all(&d).unwrap();
    }
}
