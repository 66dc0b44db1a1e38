//! The issuance log: every CA certificate and CRL a policy's runs write, appended before it is
//! written anywhere (see [`crate::writer::Writer`]); an issuance that cannot be logged does not
//! happen. The tree and the checkpoints are the core's ([`meshca::tlog`]); this module keeps
//! them in the store, beside the policy, in Secrets small enough for etcd:
//!
//! - `<policy>-audit-log-NNNNNN`: a segment, `first` (the index of its first entry, decimal) and
//!   `entries` (each entry as a 4-byte big-endian length and the entry's leaf bytes); at most
//!   [`SEGMENT_ENTRIES`] entries and [`SEGMENT_BYTES`] bytes;
//! - `<policy>-audit-log`: `checkpoint`, the last signed checkpoint (C2SP signed note);
//! - the log key: in the Secret the policy names (`log.key`, Ed25519 PKCS#8 PEM), or in a
//!   PKCS#11 token (`spec.config.auditLog.pkcs11`, an Ed25519 key signing with `CKM_EDDSA`),
//!   generated when absent.
//!
//! Readers check checkpoints with a [`VerifierKey`]: the one [`verifier`] derives from the
//! policy's key (its Secret, or the token's public key object, read without a PIN), or one the
//! user kept, which trusts nothing in the store.
//!
//! The segments are the log; the checkpoint signs a prefix of them. An append first checks that
//! the segments still reproduce the last checkpoint (a rewritten or truncated log stops every
//! issuance), then writes the segments, then the new checkpoint. A crash between the two leaves
//! entries past the checkpoint; the next append signs them (none lost, none appended twice: an
//! entry whose DER is already in the log is not appended again).

use std::collections::{BTreeMap, HashSet};

use meshca::tlog::{self, Checkpoint, Hash, LogEntry, LogKey, RootBuilder, VerifierKey};
use meshca::{Certificate, Crl, Files};
use time::OffsetDateTime;

use crate::context::TokenAccess;
use crate::error::Error;
use crate::pkcs11::Ed25519Key;
use crate::policy::{AuditLogConfig, Policy};
use crate::store::{SecretRef, Store, WriteMeta};

/// Entries per segment Secret at most (a tlog-tiles tile's width).
pub const SEGMENT_ENTRIES: usize = 256;
/// Entry bytes per segment Secret at most: well under etcd's object limit.
pub const SEGMENT_BYTES: usize = 512 * 1024;
/// Segments at most (256 million entries).
pub const MAX_SEGMENTS: u64 = 1_000_000;
/// The key file in the log key Secret.
pub const LOG_KEY_FILE: &str = "log.key";
const ENTRIES: &str = "entries";
const FIRST: &str = "first";
const CHECKPOINT: &str = "checkpoint";
/// The policy field of a log key in a token.
const TOKEN_FIELD: &str = "spec.config.auditLog.pkcs11";

/// Reasons a [`crate::writer::Writer`] records.
pub mod reason {
    /// A CA or CRL written for the first time (a new cluster, a generated root).
    pub const ISSUE: &str = "issue";
    /// A cluster's intermediate replaced before it expires.
    pub const ROTATE: &str = "rotate";
    /// A CRL issued by a revocation.
    pub const REVOKE: &str = "revoke";
    /// Written by a root rotation step.
    pub const ROOT_ROTATION: &str = "root-rotation";
}

/// The policy's log configuration, or an error naming the field that would add it.
pub fn config(policy: &Policy) -> Result<&AuditLogConfig, Error> {
    policy.audit_log.as_ref().ok_or_else(|| Error::Core {
        context: format!("policy {}/{}", policy.namespace, policy.name),
        source: meshca::Error::Log { detail: "the policy keeps no issuance log (add spec.config.auditLog)".into() },
    })
}

/// The Secret of the last checkpoint.
pub fn head_secret(policy: &Policy, mgmt: &str) -> SecretRef {
    SecretRef::new(mgmt, &policy.namespace, &format!("{}-audit-log", policy.name))
}

/// The Secret of segment `n`.
pub fn segment_secret(policy: &Policy, mgmt: &str, n: u64) -> SecretRef {
    SecretRef::new(mgmt, &policy.namespace, &format!("{}-audit-log-{n:06}", policy.name))
}

fn key_secret(cfg: &AuditLogConfig, mgmt: &str) -> SecretRef {
    SecretRef::new(mgmt, &cfg.key.namespace, &cfg.key.name)
}

fn log_error(location: String, detail: impl Into<String>) -> Error {
    Error::Core { context: location, source: meshca::Error::Log { detail: detail.into() } }
}

/// Reads the log key from its Secret; with `create`, generates it (0600, managed) when the
/// Secret is absent. Refused when the policy keeps the key in a token.
pub fn load_key(store: &dyn Store, policy: &Policy, mgmt: &str, create: bool) -> Result<Option<LogKey>, Error> {
    let cfg = config(policy)?;
    if let Some(k) = &cfg.token {
        return Err(log_error(
            TOKEN_FIELD.into(),
            format!("the log key is in a PKCS#11 token ({}), not in a Secret", k.uri),
        ));
    }
    let secret = key_secret(cfg, mgmt);
    let location = store.location(&secret);
    if let Some(files) = store.read(&secret)? {
        let pem = files
            .get(LOG_KEY_FILE)
            .ok_or_else(|| log_error(location.clone(), format!("has no {LOG_KEY_FILE} (an Ed25519 PKCS#8 PEM key)")))?;
        return LogKey::from_pkcs8_pem(&cfg.origin, pem).map(Some).map_err(Error::core(location));
    }
    if !create {
        return Ok(None);
    }
    let (key, pem) = LogKey::generate(&cfg.origin, &mut meshca::OsRng).map_err(Error::core(&location))?;
    let mut files = Files::new();
    files.insert(LOG_KEY_FILE, pem.to_vec());
    store.write(&secret, &files, &WriteMeta::managed())?;
    Ok(Some(key))
}

/// The log's signing key, where the policy keeps it.
enum Signer {
    Secret(LogKey),
    Token(Ed25519Key, VerifierKey),
}

impl Signer {
    /// The policy's log key (`token`: the module and PIN meshca's operator gave), generated
    /// when absent.
    fn open(store: &dyn Store, policy: &Policy, mgmt: &str, token: &TokenAccess) -> Result<Signer, Error> {
        let cfg = config(policy)?;
        let Some(k) = &cfg.token else {
            let key = load_key(store, policy, mgmt, true)?;
            return key.map(Signer::Secret).ok_or_else(|| log_error(String::new(), "no log key"));
        };
        let access = crate::signer::token_access(store, mgmt, token, k, TOKEN_FIELD, k.uri.clone())?;
        let key = Ed25519Key::open(&access, true)?;
        let vk = VerifierKey::ed25519(&cfg.origin, key.public_key()).map_err(Error::core(key.uri()))?;
        Ok(Signer::Token(key, vk))
    }

    fn verifier(&self) -> VerifierKey {
        match self {
            Signer::Secret(k) => k.verifier(),
            Signer::Token(_, vk) => vk.clone(),
        }
    }

    /// The signed note of `cp`; a token's signature is checked before it is used.
    fn sign(&self, cp: &Checkpoint, location: &str) -> Result<String, Error> {
        match self {
            Signer::Secret(k) => k.sign(cp).map_err(Error::core(location)),
            Signer::Token(k, vk) => {
                let sig = k.sign(cp.body().as_bytes())?;
                cp.note(vk, &sig).map_err(Error::core(k.uri()))
            }
        }
    }
}

/// The verifier key of the policy's log: from its key Secret, or from the token's public key
/// object (no PIN needed; `token` gives the module).
pub fn verifier(store: &dyn Store, policy: &Policy, mgmt: &str, token: &TokenAccess) -> Result<VerifierKey, Error> {
    let cfg = config(policy)?;
    if let Some(k) = &cfg.token {
        let module = crate::signer::token_module(token, k, TOKEN_FIELD)?;
        let public = crate::pkcs11::ed25519_public_key(&module, &k.uri)?;
        return VerifierKey::ed25519(&cfg.origin, &public).map_err(Error::core(k.uri.to_string()));
    }
    let key = load_key(store, policy, mgmt, false)?;
    key.map(|k| k.verifier()).ok_or_else(|| {
        let cfg = policy.audit_log.as_ref().map(|c| key_secret(c, mgmt));
        log_error(
            cfg.map(|s| store.location(&s)).unwrap_or_default(),
            "the log key Secret is not there: nothing was logged yet",
        )
    })
}

fn decode_segment(bytes: &[u8], location: &str) -> Result<Vec<Vec<u8>>, Error> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let bad = || log_error(location.to_string(), "the segment's entries are truncated or malformed");
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > tlog::MAX_LOG_ENTRY_BYTES || len > tail.len() || out.len() >= SEGMENT_ENTRIES {
            return Err(bad());
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    Ok(out)
}

fn encode_segment(leaves: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in leaves {
        out.extend_from_slice(&(l.len() as u32).to_be_bytes());
        out.extend_from_slice(l);
    }
    out
}

/// What one pass over the log found.
#[derive(Debug, Default)]
struct Scan {
    size: u64,
    builder: RootBuilder,
    /// Roots at the sizes asked for.
    roots_at: BTreeMap<u64, Hash>,
    /// The last segment: its number, first index and leaves.
    last: Option<(u64, u64, Vec<Vec<u8>>)>,
}

/// What [`scan`] hands each entry to: its index, leaf bytes and leaf hash.
type EachLeaf<'a> = dyn FnMut(u64, &[u8], &Hash) -> Result<(), Error> + 'a;

/// Reads the log's segments in order, in one segment's memory, handing each entry to `each`,
/// and records the root at each size in `at`.
fn scan(store: &dyn Store, policy: &Policy, mgmt: &str, at: &[u64], each: &mut EachLeaf<'_>) -> Result<Scan, Error> {
    let mut s = Scan::default();
    for size in at.iter().filter(|&&n| n == 0) {
        s.roots_at.insert(*size, s.builder.root());
    }
    for n in 0..MAX_SEGMENTS {
        let secret = segment_secret(policy, mgmt, n);
        let Some(files) = store.read(&secret)? else { break };
        let location = store.location(&secret);
        let first = files.get(FIRST).and_then(|f| std::str::from_utf8(f).ok()).and_then(|f| f.parse::<u64>().ok());
        if first != Some(s.size) {
            return Err(log_error(
                location,
                format!("the segment does not start at entry {}: entries were removed or moved", s.size),
            ));
        }
        let leaves = decode_segment(files.get(ENTRIES).unwrap_or_default(), &location)?;
        if leaves.is_empty() {
            return Err(log_error(location, "the segment is empty"));
        }
        for leaf in &leaves {
            let hash = tlog::leaf_hash(leaf);
            each(s.size, leaf, &hash)?;
            s.builder.push(hash);
            s.size += 1;
            if at.contains(&s.size) {
                s.roots_at.insert(s.size, s.builder.root());
            }
        }
        s.last = Some((n, first.unwrap_or(0), leaves));
    }
    Ok(s)
}

fn read_checkpoint(store: &dyn Store, policy: &Policy, mgmt: &str) -> Result<Option<Vec<u8>>, Error> {
    Ok(store.read(&head_secret(policy, mgmt))?.and_then(|f| f.get(CHECKPOINT).map(<[u8]>::to_vec)))
}

/// Checks that the segments still hold the tree `cp` signed.
fn check_prefix(s: &Scan, cp: &Checkpoint, what: &str, location: &str) -> Result<(), Error> {
    match s.roots_at.get(&cp.size) {
        None => Err(log_error(
            location.to_string(),
            format!("{what} covers {} entries but the log holds {}: the log was truncated", cp.size, s.size),
        )),
        Some(r) if *r != cp.root => Err(log_error(
            location.to_string(),
            format!("the log's first {} entries are not those {what} signed: the log was rewritten or forked", cp.size),
        )),
        Some(_) => Ok(()),
    }
}

/// The log's Secrets are meshca's: one of the same name that someone else made (no managed-by
/// label) is never replaced, whatever the store guards by itself.
fn refuse_unmanaged(store: &dyn Store, secret: &SecretRef) -> Result<(), Error> {
    match store.meta(secret)? {
        Some(meta) if !crate::store::is_managed(&meta) => Err(Error::Occupied {
            location: store.location(secret),
            owner: "is not managed by meshca: the issuance log does not replace it".into(),
        }),
        _ => Ok(()),
    }
}

/// Appends `entries` whose DER is not yet in the log and signs a new checkpoint; returns the
/// indices appended. Fails (and nothing is appended) when the log no longer matches its last
/// checkpoint, or an entry cannot be logged.
pub fn append(
    store: &dyn Store,
    policy: &Policy,
    mgmt: &str,
    token: &TokenAccess,
    entries: Vec<LogEntry>,
) -> Result<Vec<u64>, Error> {
    // One append at a time in this process: a run writes its clusters in parallel, and two
    // appends reading the same tail would each write a segment without the other's entry.
    // Across processes the directory store's lock, and the controller's leadership, hold.
    static APPENDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = APPENDING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let cfg = config(policy)?;
    let head = head_secret(policy, mgmt);
    let head_location = store.location(&head);
    // The last checkpoint is checked with the public key only: a write that logs nothing new
    // needs no signing, and so no PIN and no login.
    let last = match read_checkpoint(store, policy, mgmt)? {
        Some(note) => {
            let vk = verifier(store, policy, mgmt, token)?;
            Some((tlog::open_checkpoint(&note, &vk).map_err(Error::core(&head_location))?, vk))
        }
        None => None,
    };
    let (last, signed_by) = last.unzip();
    let mut known = HashSet::new();
    let at: Vec<u64> = last.iter().map(|c| c.size).collect();
    let mut scan = scan(store, policy, mgmt, &at, &mut |_, leaf, _| {
        let e = LogEntry::decode(leaf).map_err(Error::core("an issuance log entry"))?;
        known.insert(e.der_sha256());
        Ok(())
    })?;
    if let Some(cp) = &last {
        check_prefix(&scan, cp, "the last checkpoint", &head_location)?;
    }
    let mut fresh = Vec::new();
    for e in entries {
        if known.insert(e.der_sha256()) {
            fresh.push(e.encode().map_err(Error::core(format!("logging a {} for {}", e.kind.as_str(), e.cluster)))?);
        }
    }
    if fresh.is_empty() && last.as_ref().is_some_and(|c| c.size == scan.size) {
        return Ok(Vec::new());
    }
    // Before any segment is written: a key that cannot sign leaves the log as it was.
    let key = Signer::open(store, policy, mgmt, token)?;
    if signed_by.is_some_and(|vk| vk != key.verifier()) {
        return Err(log_error(head_location, "the log key is not the key that signed the last checkpoint"));
    }
    // Fill the last segment, then new ones.
    let (mut n, mut first, mut leaves) = match scan.last.take() {
        Some((n, first, leaves)) => (n, first, leaves),
        None => (0, 0, Vec::new()),
    };
    let mut indices = Vec::new();
    let mut dirty = false;
    let meta = WriteMeta::managed();
    let write = |n: u64, first: u64, leaves: &[Vec<u8>]| -> Result<(), Error> {
        let mut files = Files::new();
        files.insert(FIRST, first.to_string().into_bytes());
        files.insert(ENTRIES, encode_segment(leaves));
        let secret = segment_secret(policy, mgmt, n);
        refuse_unmanaged(store, &secret)?;
        store.write(&secret, &files, &meta)
    };
    refuse_unmanaged(store, &head)?;
    for leaf in fresh {
        let bytes: usize = leaves.iter().map(|l| l.len() + 4).sum();
        if !leaves.is_empty() && (leaves.len() >= SEGMENT_ENTRIES || bytes + leaf.len() + 4 > SEGMENT_BYTES) {
            if dirty {
                write(n, first, &leaves)?;
            }
            first += leaves.len() as u64;
            n += 1;
            leaves.clear();
        }
        if n >= MAX_SEGMENTS {
            return Err(log_error(head_location, "the log is full"));
        }
        scan.builder.push(tlog::leaf_hash(&leaf));
        indices.push(scan.size);
        scan.size += 1;
        leaves.push(leaf);
        dirty = true;
    }
    if dirty {
        write(n, first, &leaves)?;
    }
    let cp = Checkpoint { origin: cfg.origin.clone(), size: scan.size, root: scan.builder.root() };
    let note = key.sign(&cp, &head_location)?;
    let mut files = Files::new();
    files.insert(CHECKPOINT, note.into_bytes());
    store.write(&head, &files, &meta)?;
    Ok(indices)
}

/// The log's current signed checkpoint (its signature checked with `key`), as the note text
/// users keep.
pub fn checkpoint(
    store: &dyn Store,
    policy: &Policy,
    mgmt: &str,
    key: &VerifierKey,
) -> Result<(String, Checkpoint), Error> {
    config(policy)?;
    let location = store.location(&head_secret(policy, mgmt));
    let note = read_checkpoint(store, policy, mgmt)?
        .ok_or_else(|| log_error(location.clone(), "there is no checkpoint: nothing was logged yet"))?;
    let cp = tlog::open_checkpoint(&note, key).map_err(Error::core(&location))?;
    Ok((String::from_utf8_lossy(&note).into_owned(), cp))
}

/// Hands every entry of the log, in order, to `each` (one segment in memory at a time).
pub fn entries(
    store: &dyn Store,
    policy: &Policy,
    mgmt: &str,
    each: &mut dyn FnMut(u64, LogEntry) -> Result<(), Error>,
) -> Result<u64, Error> {
    config(policy)?;
    let s = scan(store, policy, mgmt, &[], &mut |i, leaf, _| {
        each(i, LogEntry::decode(leaf).map_err(Error::core(format!("issuance log entry {i}")))?)
    })?;
    Ok(s.size)
}

/// A CA certificate or CRL found in a cluster's bundle that the log does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unaccounted {
    /// The cluster.
    pub cluster: String,
    /// The bundle file it is in.
    pub file: String,
    /// `root`, `intermediate` or `crl`.
    pub kind: &'static str,
    /// Subject (CRL: issuer).
    pub name: String,
    /// SHA-256 of its DER.
    pub sha256: String,
}

/// What `meshca audit verify` found.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AuditReport {
    /// The current checkpoint (verified) and its note.
    pub checkpoint: Checkpoint,
    /// The note text.
    pub note: String,
    /// Entries in the segments (past the checkpoint when a run crashed between the two writes).
    pub entries: u64,
    /// The checkpoint the user kept, when given, and the consistency proof from it to now.
    pub since: Option<(Checkpoint, Vec<Hash>)>,
    /// CA certificates and CRLs checked in the clusters' bundles.
    pub checked: usize,
    /// Those not in the log.
    pub unaccounted: Vec<Unaccounted>,
}

impl AuditReport {
    /// Whether everything in the clusters is accounted for.
    pub fn ok(&self) -> bool {
        self.unaccounted.is_empty()
    }
}

fn bundle_targets(store: &dyn Store, cluster: &str) -> Result<Vec<(String, Unaccounted)>, Error> {
    let Some(files) = store.read(&SecretRef::cacerts(cluster))? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for file in [meshca::CA_CERT, meshca::CERT_CHAIN, meshca::ROOT_CERT, meshca::CA_CRT, meshca::TLS_CRT] {
        let Some(pem) = files.get(file) else { continue };
        for c in Certificate::from_pem_all(pem, file).map_err(Error::core(format!("cluster {cluster}")))? {
            if !c.is_ca() {
                continue;
            }
            let kind = if c.is_self_signed() { "root" } else { "intermediate" };
            let sha = tlog::der_sha256(c.der());
            if out.iter().any(|(s, _)| *s == sha) {
                continue; // the same CA in ca-cert.pem and cert-chain.pem: one finding
            }
            out.push((
                sha.clone(),
                Unaccounted { cluster: cluster.into(), file: file.into(), kind, name: c.subject(), sha256: sha },
            ));
        }
    }
    if let Some(pem) = files.get(meshca::CA_CRL) {
        for c in Crl::from_pem_all(pem, meshca::CA_CRL).map_err(Error::core(format!("cluster {cluster}")))? {
            let sha = tlog::der_sha256(c.der());
            out.push((
                sha.clone(),
                Unaccounted {
                    cluster: cluster.into(),
                    file: meshca::CA_CRL.into(),
                    kind: "crl",
                    name: c.issuer(),
                    sha256: sha,
                },
            ));
        }
    }
    Ok(out)
}

/// Verifies the log: its checkpoint's signature, that the segments reproduce it, that it extends
/// `since` (a checkpoint the user kept), and that every CA certificate and CRL in `clusters`'
/// bundles is in it. Both checkpoints are checked with `key`. One pass over the log. Memory:
/// one segment, the log's right edge, and the clusters' CAs; with `since`, also 32 bytes per
/// entry, to build the consistency proof.
pub fn verify(
    store: &dyn Store,
    policy: &Policy,
    mgmt: &str,
    key: &VerifierKey,
    clusters: &[String],
    since: Option<&[u8]>,
) -> Result<AuditReport, Error> {
    let (note, cp) = checkpoint(store, policy, mgmt, key)?;
    let since =
        since.map(|n| tlog::open_checkpoint(n, key).map_err(Error::core("the checkpoint given"))).transpose()?;
    let mut targets: BTreeMap<String, Vec<Unaccounted>> = BTreeMap::new();
    let mut checked = 0;
    // An RA-mode cluster's intermediate is kept on the management side (its `cacerts` as
    // RaStore reads it); its own `cacerts` is checked too: one planted there is unaccounted for.
    let ra = crate::ra::RaStore::wrap(store, policy, mgmt);
    for cluster in clusters {
        let mut found = bundle_targets(store, cluster)?;
        if let Some(ra) = &ra {
            found.extend(bundle_targets(ra, cluster)?);
        }
        let mut seen = HashSet::new();
        for (sha, u) in found {
            if seen.insert(sha.clone()) {
                targets.entry(sha).or_default().push(u);
                checked += 1;
            }
        }
    }
    let mut at = vec![cp.size];
    at.extend(since.iter().map(|s| s.size));
    // The leaf hashes the consistency proof is built from, gathered in the same pass.
    let mut leaves = Vec::new();
    let s = scan(store, policy, mgmt, &at, &mut |i, leaf, hash| {
        let e = LogEntry::decode(leaf).map_err(Error::core(format!("issuance log entry {i}")))?;
        targets.remove(&e.der_sha256());
        if since.is_some() && i < cp.size {
            leaves.push(*hash);
        }
        Ok(())
    })?;
    let head = store.location(&head_secret(policy, mgmt));
    check_prefix(&s, &cp, "the current checkpoint", &head)?;
    let since = match since {
        None => None,
        Some(old) => {
            if old.size > cp.size {
                return Err(log_error(
                    head,
                    format!(
                        "the checkpoint given covers {} entries, the log's only {}: the log was truncated",
                        old.size, cp.size
                    ),
                ));
            }
            check_prefix(&s, &old, "the checkpoint given", &head)?;
            let proof = tlog::consistency_proof(&leaves, old.size).map_err(Error::core(&head))?;
            tlog::verify_consistency(old.size, cp.size, &old.root, &cp.root, &proof).map_err(Error::core(&head))?;
            Some((old, proof))
        }
    };
    Ok(AuditReport {
        checkpoint: cp,
        note,
        entries: s.size,
        since,
        checked,
        unaccounted: targets.into_values().flatten().collect(),
    })
}

/// An inclusion proof of one entry in the current checkpoint's tree.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InclusionProof {
    /// The entry's index.
    pub index: u64,
    /// The entry.
    pub entry: LogEntry,
    /// The leaf bytes (what the leaf hash is over).
    pub leaf: Vec<u8>,
    /// The checkpoint the proof leads to, and its note.
    pub checkpoint: Checkpoint,
    /// The note text.
    pub note: String,
    /// The audit path, leaf to root.
    pub path: Vec<Hash>,
}

/// Proves that the CA certificate with serial `serial` (content octets) is in the log's current
/// checkpoint (the first such entry; the checkpoint checked with `key`). The proof is checked
/// before it is returned.
pub fn prove(
    store: &dyn Store,
    policy: &Policy,
    mgmt: &str,
    key: &VerifierKey,
    serial: &[u8],
) -> Result<InclusionProof, Error> {
    let (note, cp) = checkpoint(store, policy, mgmt, key)?;
    let want = tlog::hex(meshca::canonical_serial(serial));
    let mut found = None;
    let mut leaves = Vec::new();
    scan(store, policy, mgmt, &[], &mut |i, leaf, hash| {
        if i < cp.size {
            leaves.push(*hash);
            if found.is_none() {
                let e = LogEntry::decode(leaf).map_err(Error::core(format!("issuance log entry {i}")))?;
                if e.kind != tlog::EntryKind::Crl && e.serial().as_deref() == Some(want.as_str()) {
                    found = Some((i, e, leaf.to_vec()));
                }
            }
        }
        Ok(())
    })?;
    let location = store.location(&head_secret(policy, mgmt));
    let (index, entry, leaf) = found.ok_or_else(|| {
        let shown = if want.is_empty() { "0" } else { want.as_str() };
        log_error(
            location.clone(),
            format!("no CA certificate with serial {shown} is in the log's {} entries", cp.size),
        )
    })?;
    if tlog::tree_root(&leaves) != cp.root {
        return Err(log_error(
            location,
            "the log's entries are not those its checkpoint signed: the log was rewritten",
        ));
    }
    let path = tlog::inclusion_proof(&leaves, index).map_err(Error::core(&location))?;
    tlog::verify_inclusion(&leaves[index as usize], index, cp.size, &path, &cp.root).map_err(Error::core(&location))?;
    Ok(InclusionProof { index, entry, leaf, checkpoint: cp, note, path })
}

/// The log's end, as the controller reports it after a pass.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Tail {
    /// Entries in the log.
    pub size: u64,
    /// Entries the last checkpoint signs.
    pub checkpoint_size: u64,
    /// The first `limit` entries from index `from` on.
    pub entries: Vec<(u64, LogEntry)>,
    /// Entries from `from` on beyond those.
    pub more: u64,
}

/// The log's size, its checkpoint's (signature checked with the policy's [`verifier`], when
/// there is a checkpoint), and up to `limit` entries from index `from` on.
pub fn tail(
    store: &dyn Store,
    policy: &Policy,
    mgmt: &str,
    token: &TokenAccess,
    from: u64,
    limit: usize,
) -> Result<Tail, Error> {
    let location = store.location(&head_secret(policy, mgmt));
    let checkpoint_size = match read_checkpoint(store, policy, mgmt)? {
        Some(note) => {
            let key = verifier(store, policy, mgmt, token)?;
            tlog::open_checkpoint(&note, &key).map_err(Error::core(&location))?.size
        }
        None => 0,
    };
    let mut t = Tail { checkpoint_size, ..Tail::default() };
    t.size = entries(store, policy, mgmt, &mut |i, e| {
        if i >= from {
            if t.entries.len() < limit {
                t.entries.push((i, e));
            } else {
                t.more += 1;
            }
        }
        Ok(())
    })?;
    Ok(t)
}

/// The entries a write of these certificates and CRLs to `cluster` logs.
pub(crate) fn entries_for(
    policy: &Policy,
    generation: Option<i64>,
    cluster: &str,
    reason: &str,
    certs: &[&Certificate],
    crls: &[Crl],
    now: OffsetDateTime,
) -> Vec<LogEntry> {
    let who = format!("{}/{}", policy.namespace, policy.name);
    let mut out: Vec<LogEntry> = certs
        .iter()
        .filter(|c| c.is_ca())
        .map(|c| LogEntry::for_certificate(c, cluster, reason, &who, generation, now))
        .collect();
    out.extend(crls.iter().map(|c| LogEntry::for_crl(c, cluster, reason, &who, generation, now)));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::policy::{self, SEED_POLICY};
    use crate::reconcile::{self, Options};
    use crate::store::DirStore;
    use meshca::{IntermediateParams, Layout, RootParams, SigningCa};

    const CLUSTERS: [&str; 2] = ["east", "west"];

    struct Fleet {
        dir: std::path::PathBuf,
        store: DirStore,
        policy: Policy,
        root: SigningCa,
    }

    impl Drop for Fleet {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn opts(clusters: &[&str]) -> Options {
        Options::new(meshca_testkit::t0(), clusters.iter().map(|c| (*c).to_owned()).collect())
    }

    /// Two clusters issued by a policy that keeps the log.
    fn fleet(tag: &str) -> Fleet {
        let dir = meshca_testkit::tempdir(&format!("audit-{tag}"));
        let store = DirStore::new(&dir);
        let root = SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, meshca_testkit::t0()).unwrap();
        let signer = SecretRef::new("mgmt", "gloo-mesh", "my-root-trust-policy.gloo-mesh");
        store.write(&signer, &root.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
        let policy = policy::parse(&format!("{SEED_POLICY}    auditLog: {{}}\n"), "policy.yaml").unwrap();
        let r = reconcile::reconcile(&store, &policy, &opts(&CLUSTERS), &mut meshca::OsRng, &mut |_, _| {}).unwrap();
        assert!(r.ok(), "{r:?}");
        Fleet { dir, store, policy, root }
    }

    fn vk(f: &Fleet) -> VerifierKey {
        verifier(&f.store, &f.policy, "mgmt", &TokenAccess::default()).unwrap()
    }

    fn audit(f: &Fleet, since: Option<&[u8]>) -> Result<AuditReport, Error> {
        let clusters: Vec<String> =
            f.store.clusters_with_cacerts().unwrap().into_iter().filter(|c| c != "mgmt").collect();
        verify(&f.store, &f.policy, "mgmt", &vk(f), &clusters, since)
    }

    fn all_entries(f: &Fleet) -> Vec<LogEntry> {
        let mut v = Vec::new();
        entries(&f.store, &f.policy, "mgmt", &mut |_, e| {
            v.push(e);
            Ok(())
        })
        .unwrap();
        v
    }

    #[test]
    fn every_ca_a_run_writes_is_logged_once_before_it_lands() {
        let f = fleet("once");
        let logged = all_entries(&f);
        // The root once (first written with east's bundle), each cluster's intermediate once.
        assert_eq!(logged.len(), 3, "{logged:?}");
        assert_eq!(logged.iter().filter(|e| e.kind == tlog::EntryKind::Root).count(), 1);
        let r = audit(&f, None).unwrap();
        assert!(r.ok(), "{:?}", r.unaccounted);
        assert_eq!((r.checkpoint.size, r.entries), (3, 3));
        // A second run writes nothing and logs nothing.
        reconcile::reconcile(&f.store, &f.policy, &opts(&CLUSTERS), &mut meshca::OsRng, &mut |_, _| {}).unwrap();
        assert_eq!(all_entries(&f).len(), 3);
    }

    #[test]
    fn a_replaced_intermediate_is_logged_as_a_rotation() {
        let f = fleet("rotation");
        let mut later = opts(&CLUSTERS);
        later.now = meshca_testkit::t0() + time::Duration::days(1);
        let r = reconcile::reconcile(&f.store, &f.policy, &later, &mut meshca::OsRng, &mut |_, _| {}).unwrap();
        assert!(r.ok(), "{r:?}");
        let got: Vec<(&str, String, String)> =
            all_entries(&f).into_iter().map(|e| (e.kind.as_str(), e.reason.clone(), e.cluster.clone())).collect();
        // The first run's three entries (in the order the bundles were written), then the
        // second run's two.
        let mut reasons: Vec<(&str, &str)> = got.iter().map(|(k, r, _)| (*k, r.as_str())).collect();
        reasons[..3].sort();
        assert_eq!(
            reasons,
            [
                ("intermediate", "issue"),
                ("intermediate", "issue"),
                ("root", "issue"),
                ("intermediate", "rotate"),
                ("intermediate", "rotate")
            ],
            "{got:?}"
        );
        let mut rotated: Vec<&str> = got[3..].iter().map(|(_, _, c)| c.as_str()).collect();
        rotated.sort();
        assert_eq!(rotated, CLUSTERS, "{got:?}");
    }

    #[test]
    fn an_intermediate_planted_by_hand_is_unaccounted_for() {
        let f = fleet("planted");
        let planted = f
            .root
            .issue_intermediate(&IntermediateParams::new("rogue"), &mut meshca::OsRng, meshca_testkit::t0())
            .unwrap();
        f.store
            .write(&SecretRef::cacerts("rogue"), &planted.value.to_files(Layout::Istio), &WriteMeta::default())
            .unwrap();
        let r = audit(&f, None).unwrap();
        assert!(!r.ok());
        assert_eq!(r.unaccounted.len(), 1, "{:?}", r.unaccounted);
        let u = &r.unaccounted[0];
        assert_eq!((u.cluster.as_str(), u.kind, u.file.as_str()), ("rogue", "intermediate", meshca::CA_CERT));
    }

    fn segment(f: &Fleet, n: u64) -> Files {
        f.store.read(&segment_secret(&f.policy, "mgmt", n)).unwrap().unwrap()
    }

    #[test]
    fn a_rewritten_truncated_or_forked_log_is_detected_from_an_older_checkpoint() {
        let f = fleet("tamper");
        let (kept, _) = checkpoint(&f.store, &f.policy, "mgmt", &vk(&f)).unwrap();
        let original = segment(&f, 0);
        let leaves = decode_segment(original.get(ENTRIES).unwrap(), "").unwrap();

        // Truncated: the last entry removed, the checkpoint re-signed by someone holding the key.
        let mut files = original.clone();
        files.insert(ENTRIES, encode_segment(&leaves[..2]));
        f.store.write(&segment_secret(&f.policy, "mgmt", 0), &files, &WriteMeta::managed()).unwrap();
        let err = audit(&f, Some(kept.as_bytes())).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        // ... and no issuance builds on it.
        let err = append(&f.store, &f.policy, "mgmt", &TokenAccess::default(), Vec::new()).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");

        // Rewritten: an entry replaced by another of the same form.
        let mut forged = LogEntry::decode(&leaves[1]).unwrap();
        forged.cluster = "elsewhere".into();
        let mut rewritten = leaves.clone();
        rewritten[1] = forged.encode().unwrap();
        files.insert(ENTRIES, encode_segment(&rewritten));
        f.store.write(&segment_secret(&f.policy, "mgmt", 0), &files, &WriteMeta::managed()).unwrap();
        let err = audit(&f, None).unwrap_err().to_string();
        assert!(err.contains("rewritten"), "{err}");

        // Forked: the rewritten log re-signed with the log key; the kept checkpoint tells.
        let key = load_key(&f.store, &f.policy, "mgmt", false).unwrap().unwrap();
        let hashes: Vec<Hash> = rewritten.iter().map(|l| tlog::leaf_hash(l)).collect();
        let cp = Checkpoint {
            origin: f.policy.audit_log.as_ref().unwrap().origin.clone(),
            size: 3,
            root: tlog::tree_root(&hashes),
        };
        let mut head = Files::new();
        head.insert(CHECKPOINT, key.sign(&cp).unwrap().into_bytes());
        f.store.write(&head_secret(&f.policy, "mgmt"), &head, &WriteMeta::managed()).unwrap();
        assert!(audit(&f, None).is_ok(), "the fork is consistent with itself");
        let err = audit(&f, Some(kept.as_bytes())).unwrap_err().to_string();
        assert!(err.contains("rewritten or forked"), "{err}");
    }

    /// A store whose writes of `cacerts` fail: the crash between the log append and the write.
    struct FailingBundles<'a>(&'a DirStore);

    impl Store for FailingBundles<'_> {
        fn location(&self, s: &SecretRef) -> String {
            self.0.location(s)
        }
        fn read(&self, s: &SecretRef) -> Result<Option<Files>, Error> {
            self.0.read(s)
        }
        fn write(&self, s: &SecretRef, files: &Files, meta: &WriteMeta) -> Result<(), Error> {
            if s.name == "cacerts" {
                return Err(Error::Store { location: self.0.location(s), detail: "killed".into() });
            }
            self.0.write(s, files, meta)
        }
        fn meta(&self, s: &SecretRef) -> Result<Option<WriteMeta>, Error> {
            self.0.meta(s)
        }
    }

    #[test]
    fn a_run_stopped_between_the_log_and_the_write_loses_no_entry_and_repeats_none() {
        let f = fleet("crash");
        let before = f.store.read(&SecretRef::cacerts("north")).unwrap();
        assert!(before.is_none());
        let failing = FailingBundles(&f.store);
        let r =
            reconcile::reconcile(&failing, &f.policy, &opts(&["north"]), &mut meshca::OsRng, &mut |_, _| {}).unwrap();
        assert!(!r.ok());
        assert!(f.store.read(&SecretRef::cacerts("north")).unwrap().is_none(), "the failed run wrote no bundle");
        assert_eq!(all_entries(&f).len(), 4, "the intermediate was logged before the write failed");
        let r =
            reconcile::reconcile(&f.store, &f.policy, &opts(&["north"]), &mut meshca::OsRng, &mut |_, _| {}).unwrap();
        assert!(r.ok(), "{r:?}");
        let logged = all_entries(&f);
        let unique: HashSet<String> = logged.iter().map(LogEntry::der_sha256).collect();
        assert_eq!((logged.len(), unique.len()), (5, 5), "the retry's intermediate once, nothing twice");
        let report = audit(&f, None).unwrap();
        assert!(report.ok(), "{:?}", report.unaccounted);
        assert_eq!(report.checkpoint.size, 5);
    }

    #[test]
    fn a_secret_of_the_log_s_name_that_meshca_did_not_make_is_never_replaced() {
        let f = fleet("occupied");
        let head = head_secret(&f.policy, "mgmt");
        let mut theirs = Files::new();
        theirs.insert("notes", b"someone else's".to_vec());
        f.store.write(&head, &theirs, &WriteMeta::default()).unwrap();
        let planted = f
            .root
            .issue_intermediate(&IntermediateParams::new("north"), &mut meshca::OsRng, meshca_testkit::t0())
            .unwrap();
        let cert = planted.value.ca_cert().clone();
        let entries = entries_for(&f.policy, None, "north", reason::ISSUE, &[&cert], &[], meshca_testkit::t0());
        let err = append(&f.store, &f.policy, "mgmt", &TokenAccess::default(), entries).unwrap_err();
        assert!(matches!(err, Error::Occupied { .. }), "{err}");
        assert_eq!(f.store.read(&head).unwrap().unwrap(), theirs, "untouched");
        assert_eq!(all_entries(&f).len(), 3, "nothing appended");
    }

    #[test]
    fn a_log_of_100000_entries_is_appended_segment_by_segment_and_verified() {
        let f = fleet("large");
        let now = meshca_testkit::t0();
        let many: Vec<LogEntry> = (0u32..100_000)
            .map(|i| {
                let c = f.root.bundle().ca_cert();
                let mut e = LogEntry::for_certificate(c, "bulk", "issue", "gloo-mesh/p", None, now);
                e.der = i.to_be_bytes().to_vec();
                e
            })
            .collect();
        let added = append(&f.store, &f.policy, "mgmt", &TokenAccess::default(), many).unwrap();
        assert_eq!(added.len(), 100_000);
        assert!(f.store.read(&segment_secret(&f.policy, "mgmt", 100_003 / SEGMENT_ENTRIES as u64)).unwrap().is_some());
        let r = audit(&f, None).unwrap();
        assert_eq!(r.checkpoint.size, 100_003);
        assert!(r.ok());
        for n in 0..3 {
            let seg = segment(&f, n);
            assert!(decode_segment(seg.get(ENTRIES).unwrap(), "").unwrap().len() <= SEGMENT_ENTRIES);
        }
    }
}
