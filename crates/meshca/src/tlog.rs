//! The issuance log's pure parts: RFC 6962 Merkle tree hashing, inclusion and consistency
//! proofs (RFC 9162 2.1.3 and 2.1.4 for verification), the log's entries, and checkpoints in
//! the C2SP signed-note / tlog-checkpoint format signed with Ed25519.
//!
//! Hashes and signatures are ring's (SHA-256 and Ed25519), already this crate's primitives: a
//! second SHA-2 and Ed25519 stack for the same few functions would add code to build and audit,
//! not strength. The proofs are checked in tests by an independent verifier.
//!
//! Nothing here reads or writes: the store layout, appending and the audit live in meshca-ops.

use base64ct::{Base64, Encoding};
use ring::digest::SHA256;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::cert::Certificate;
use crate::crl::Crl;
use crate::error::{Error, Result};

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

/// The largest entry meshca logs: a certificate or CRL of at most this many DER bytes plus
/// its record. A larger one cannot be logged, so it is not issued.
pub const MAX_LOG_ENTRY_BYTES: usize = 256 * 1024;
/// The largest signed note meshca reads.
pub const MAX_NOTE_BYTES: usize = 16 * 1024;
/// The largest tree a proof may describe (2^40 entries: far beyond any fleet).
pub const MAX_TREE_SIZE: u64 = 1 << 40;

fn log_err(detail: impl Into<String>) -> Error {
    Error::Log { detail: detail.into() }
}

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut ctx = ring::digest::Context::new(&SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// RFC 6962 2.1: the hash of a leaf, `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256(&[&[0], data])
}

/// RFC 6962 2.1: the hash of an interior node, `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[1], left, right])
}

/// The largest power of two smaller than `n` (`n` >= 2).
fn split(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// RFC 6962 2.1: the Merkle Tree Hash of the leaves whose hashes are `leaves`.
pub fn tree_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => sha256(&[]),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&tree_root(&leaves[..k]), &tree_root(&leaves[k..]))
        }
    }
}

/// A tree root computed one leaf at a time in O(log n) memory: the right edge of the tree
/// (one hash per set bit of the size).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootBuilder {
    size: u64,
    /// Perfect subtrees, largest first: (hash, height).
    stack: Vec<(Hash, u32)>,
}

impl RootBuilder {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next leaf (its hash).
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (leaf, 0);
        while let Some(&(top, h)) = self.stack.last() {
            if h != node.1 {
                break;
            }
            self.stack.pop();
            node = (node_hash(&top, &node.0), h + 1);
        }
        self.stack.push(node);
        self.size += 1;
    }

    /// How many leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The Merkle Tree Hash of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(&(mut acc, _)) = it.next() else { return sha256(&[]) };
        for (h, _) in it {
            acc = node_hash(h, &acc);
        }
        acc
    }
}

/// RFC 6962 2.1.1: the audit path of leaf `index` in the tree of `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>> {
    let m = usize::try_from(index)
        .ok()
        .filter(|&m| m < leaves.len())
        .ok_or_else(|| log_err(format!("entry {index} is not in a log of {} entries", leaves.len())))?;
    let mut proof = Vec::new();
    path(m, leaves, &mut proof);
    Ok(proof)
}

fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
    let n = d.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, &d[..k], out);
        out.push(tree_root(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(tree_root(&d[..k]));
    }
}

/// RFC 6962 2.1.2: the consistency proof from the tree of the first `old_size` leaves to the
/// tree of all `leaves`. Empty when `old_size` is 0 or all of them.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>> {
    let m = usize::try_from(old_size).ok().filter(|&m| m <= leaves.len()).ok_or_else(|| {
        log_err(format!("a checkpoint of {old_size} entries is larger than the log's {} entries", leaves.len()))
    })?;
    let mut proof = Vec::new();
    if m > 0 && m < leaves.len() {
        subproof(m, leaves, true, &mut proof);
    }
    Ok(proof)
}

fn subproof(m: usize, d: &[Hash], whole: bool, out: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !whole {
            out.push(tree_root(d));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &d[..k], whole, out);
        out.push(tree_root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(tree_root(&d[..k]));
    }
}

/// RFC 9162 2.1.3.2: checks that `leaf` (a leaf hash) is entry `index` of the tree of `size`
/// entries whose root is `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<()> {
    if index >= size || size > MAX_TREE_SIZE {
        return Err(log_err(format!("entry {index} cannot be in a tree of {size} entries")));
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(log_err("the inclusion proof is longer than the tree is deep"));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 || r != *root {
        return Err(log_err(format!(
            "the inclusion proof of entry {index} does not lead to the root of {size} entries"
        )));
    }
    Ok(())
}

/// RFC 9162 2.1.4.2: checks that the tree of `old_size` entries with root `old_root` is a
/// prefix of the tree of `new_size` entries with root `new_root`.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<()> {
    if old_size > new_size || new_size > MAX_TREE_SIZE {
        return Err(log_err(format!(
            "a log of {new_size} entries cannot extend one of {old_size}: entries were removed"
        )));
    }
    if old_size == new_size {
        if !proof.is_empty() || old_root != new_root {
            return Err(log_err(format!("two different trees of {old_size} entries: the log was rewritten")));
        }
        return Ok(());
    }
    if old_size == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(log_err("a consistency proof from the empty tree is empty"))
        };
    }
    let bad = || {
        log_err(format!(
            "the log of {new_size} entries does not extend the checkpoint of {old_size}: it was rewritten or forked"
        ))
    };
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (first, rest) = path.split_first().ok_or_else(bad)?;
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return Err(bad());
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if fr != *old_root || sr != *new_root || sn != 0 {
        return Err(bad());
    }
    Ok(())
}

// ---- entries ---------------------------------------------------------------------------------

/// What a log entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// A self-signed CA certificate.
    Root,
    /// A CA certificate signed by another CA (management or cluster intermediate).
    Intermediate,
    /// A CRL.
    Crl,
}

impl EntryKind {
    /// The word in the entry and in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Root => "root",
            EntryKind::Intermediate => "intermediate",
            EntryKind::Crl => "crl",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "root" => EntryKind::Root,
            "intermediate" => EntryKind::Intermediate,
            "crl" => EntryKind::Crl,
            _ => return None,
        })
    }
}

const ENTRY_MAGIC: &str = "meshca-log-entry v1";
const MAX_FIELD_BYTES: usize = 256;

/// One entry of the issuance log: the DER of a CA certificate or CRL and the record of why it
/// was written. Its leaf is [`LogEntry::encode`]'s bytes: a header of `key value` lines, a blank
/// line, then the DER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Certificate or CRL.
    pub kind: EntryKind,
    /// The cluster it was written to (the management cluster for signing CAs).
    pub cluster: String,
    /// Why: `issue`, `rotate`, `revoke`, `root-rotation:<step>`, ... (see the ops crate).
    pub reason: String,
    /// The policy (`namespace/name`) whose run wrote it.
    pub policy: String,
    /// The policy's `metadata.generation`, when it is a Kubernetes object.
    pub generation: Option<i64>,
    /// When it was logged (whole seconds).
    pub time: OffsetDateTime,
    /// The certificate's or CRL's DER.
    pub der: Vec<u8>,
}

fn check_field(name: &str, v: &str) -> Result<()> {
    if v.is_empty() || v.len() > MAX_FIELD_BYTES || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(log_err(format!(
            "the entry's {name} must be 1 to {MAX_FIELD_BYTES} printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

impl LogEntry {
    /// An entry for a CA certificate (root or intermediate, from the certificate).
    pub fn for_certificate(
        cert: &Certificate,
        cluster: &str,
        reason: &str,
        policy: &str,
        generation: Option<i64>,
        now: OffsetDateTime,
    ) -> Self {
        let kind = if cert.is_self_signed() { EntryKind::Root } else { EntryKind::Intermediate };
        Self::new(kind, cert.der().to_vec(), cluster, reason, policy, generation, now)
    }

    /// An entry for a CRL.
    pub fn for_crl(
        crl: &Crl,
        cluster: &str,
        reason: &str,
        policy: &str,
        generation: Option<i64>,
        now: OffsetDateTime,
    ) -> Self {
        Self::new(EntryKind::Crl, crl.der().to_vec(), cluster, reason, policy, generation, now)
    }

    fn new(
        kind: EntryKind,
        der: Vec<u8>,
        cluster: &str,
        reason: &str,
        policy: &str,
        generation: Option<i64>,
        now: OffsetDateTime,
    ) -> Self {
        let time = now.replace_nanosecond(0).unwrap_or(now);
        LogEntry { kind, cluster: cluster.into(), reason: reason.into(), policy: policy.into(), generation, time, der }
    }

    /// The leaf bytes. Fails when a field is not loggable or the entry is too large: such an
    /// issuance cannot be logged.
    pub fn encode(&self) -> Result<Vec<u8>> {
        check_field("cluster", &self.cluster)?;
        check_field("reason", &self.reason)?;
        check_field("policy", &self.policy)?;
        let mut head = format!(
            "{ENTRY_MAGIC}\nkind {}\ncluster {}\nreason {}\npolicy {}\n",
            self.kind.as_str(),
            self.cluster,
            self.reason,
            self.policy
        );
        if let Some(g) = self.generation {
            head.push_str(&format!("generation {g}\n"));
        }
        head.push_str(&format!("time {}\nsha256 {}\n\n", crate::format_time(self.time), hex(&sha256(&[&self.der]))));
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.der);
        if out.len() > MAX_LOG_ENTRY_BYTES {
            return Err(log_err(format!(
                "a {} of {} bytes is larger than the {MAX_LOG_ENTRY_BYTES} bytes the log takes",
                self.kind.as_str(),
                self.der.len()
            )));
        }
        Ok(out)
    }

    /// Reads an entry back from its leaf bytes (hostile input: any malformation is an error).
    pub fn decode(leaf: &[u8]) -> Result<Self> {
        if leaf.len() > MAX_LOG_ENTRY_BYTES {
            return Err(log_err("an entry is larger than the log takes"));
        }
        let sep = leaf.windows(2).position(|w| w == b"\n\n").ok_or_else(|| log_err("an entry has no header"))?;
        let head = std::str::from_utf8(&leaf[..sep]).map_err(|_| log_err("an entry's header is not UTF-8"))?;
        let der = leaf[sep + 2..].to_vec();
        let mut lines = head.split('\n');
        if lines.next() != Some(ENTRY_MAGIC) {
            return Err(log_err(format!("an entry does not start with {ENTRY_MAGIC:?}")));
        }
        let (mut kind, mut cluster, mut reason, mut policy, mut generation, mut time, mut sum) =
            (None, None, None, None, None, None, None);
        for line in lines {
            let (k, v) = line.split_once(' ').ok_or_else(|| log_err("an entry's header line has no value"))?;
            let slot = match k {
                "kind" => &mut kind,
                "cluster" => &mut cluster,
                "reason" => &mut reason,
                "policy" => &mut policy,
                "generation" => &mut generation,
                "time" => &mut time,
                "sha256" => &mut sum,
                _ => return Err(log_err("an entry's header has an unknown field")),
            };
            if slot.replace(v).is_some() {
                return Err(log_err("an entry's header repeats a field"));
            }
        }
        fn need<'a>(v: Option<&'a str>, name: &str) -> Result<&'a str> {
            v.ok_or_else(|| log_err(format!("an entry has no {name}")))
        }
        let kind = EntryKind::parse(need(kind, "kind")?).ok_or_else(|| log_err("an entry's kind is unknown"))?;
        let time = time::OffsetDateTime::parse(need(time, "time")?, &time::format_description::well_known::Rfc3339)
            .map_err(|_| log_err("an entry's time is not RFC 3339"))?;
        let generation = match generation {
            Some(g) => Some(g.parse::<i64>().map_err(|_| log_err("an entry's generation is not a number"))?),
            None => None,
        };
        if need(sum, "sha256")? != hex(&sha256(&[&der])) {
            return Err(log_err("an entry's sha256 does not match its DER"));
        }
        let e = LogEntry {
            kind,
            cluster: need(cluster, "cluster")?.into(),
            reason: need(reason, "reason")?.into(),
            policy: need(policy, "policy")?.into(),
            generation,
            time,
            der,
        };
        check_field("cluster", &e.cluster)?;
        check_field("reason", &e.reason)?;
        check_field("policy", &e.policy)?;
        Ok(e)
    }

    /// The SHA-256 of the DER, lowercase hex without separators: what the audit matches
    /// certificates and CRLs found in clusters against.
    pub fn der_sha256(&self) -> String {
        hex(&sha256(&[&self.der]))
    }

    /// The certificate's serial (canonical lowercase hex, no separators), or for a CRL its
    /// number in hex; `None` when the DER does not parse.
    pub fn serial(&self) -> Option<String> {
        match self.kind {
            EntryKind::Crl => Crl::from_der(&self.der, "log entry").ok()?.number().map(|n| format!("{n:x}")),
            _ => {
                let c = Certificate::from_der(&self.der, "log entry", 0).ok()?;
                Some(hex(crate::crl::canonical_serial(c.serial_bytes())))
            }
        }
    }

    /// The certificate's subject, or the CRL's issuer; `None` when the DER does not parse.
    pub fn name(&self) -> Option<String> {
        match self.kind {
            EntryKind::Crl => Crl::from_der(&self.der, "log entry").ok().map(|c| c.issuer()),
            _ => Certificate::from_der(&self.der, "log entry", 0).ok().map(|c| c.subject()),
        }
    }
}

/// The SHA-256 of `der`, lowercase hex: the key [`LogEntry::der_sha256`] is matched on.
pub fn der_sha256(der: &[u8]) -> String {
    hex(&sha256(&[der]))
}

/// Lowercase hex without separators.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- checkpoints and signed notes -------------------------------------------------------------

/// A checkpoint (C2SP tlog-checkpoint): the log's origin, its size and root hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name, unique to it (its first line).
    pub origin: String,
    /// The number of entries.
    pub size: u64,
    /// The root hash of those entries.
    pub root: Hash,
}

impl Checkpoint {
    /// The note body the signature covers.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, Base64::encode_string(&self.root))
    }
}

/// Checks a log origin: one line of printable ASCII (C2SP: a schema-less URL is customary).
pub fn check_origin(origin: &str) -> Result<()> {
    if origin.is_empty() || origin.len() > 200 || !origin.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(log_err("a log origin is 1 to 200 printable ASCII characters without spaces"));
    }
    Ok(())
}

const ED25519_ALG: u8 = 0x01;
/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410), followed by the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let h = sha256(&[name.as_bytes(), b"\n", &[ED25519_ALG], public]);
    [h[0], h[1], h[2], h[3]]
}

/// A note verifier key (the `name+hash+base64` form of Go's `golang.org/x/mod/sumdb/note`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    public: [u8; 32],
}

impl VerifierKey {
    /// The verifier of the Ed25519 public key `public` (32 bytes) under log name `name`: how a
    /// key held elsewhere (a PKCS#11 token) is named.
    pub fn ed25519(name: &str, public: &[u8]) -> Result<Self> {
        check_origin(name)?;
        let public: [u8; 32] =
            public.try_into().map_err(|_| log_err("an Ed25519 public key is 32 bytes: this one is not"))?;
        Ok(VerifierKey { name: name.into(), id: key_id(name, &public), public })
    }

    /// The key's name (the log's origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// Parses `name+hash+base64(0x01 || public key)`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| log_err(format!("a verifier key is name+hash+base64 of an Ed25519 key: {why}"));
        let s = s.trim();
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("it has fewer than three parts"));
        };
        check_origin(name).map_err(|_| bad("the name is not printable ASCII"))?;
        let key = Base64::decode_vec(key).map_err(|_| bad("the key is not base64"))?;
        let (&[ED25519_ALG], public) = key.split_at(1.min(key.len())) else { return Err(bad("not an Ed25519 key")) };
        let public: [u8; 32] = public.try_into().map_err(|_| bad("the key is not 32 bytes"))?;
        let want = key_id(name, &public);
        if id.len() != 8 || hex(&want) != id {
            return Err(bad("the hash does not match the name and key"));
        }
        Ok(VerifierKey { name: name.into(), id: want, public })
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut k = vec![ED25519_ALG];
        k.extend_from_slice(&self.public);
        write!(f, "{}+{}+{}", self.name, hex(&self.id), Base64::encode_string(&k))
    }
}

/// The log's signing key: Ed25519, named by the log's origin. `Debug` shows the name only.
pub struct LogKey {
    name: String,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKey").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The PEM label of the log key file.
pub const LOG_KEY_LABEL: &str = "PRIVATE KEY";

impl LogKey {
    /// A new key from 32 bytes of `rng`, returned with its PKCS#8 PEM (to store, 0600).
    pub fn generate(name: &str, rng: &mut dyn crate::Entropy) -> Result<(Self, Zeroizing<Vec<u8>>)> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill(seed.as_mut());
        let mut der = Zeroizing::new(ED25519_PKCS8_PREFIX.to_vec());
        der.extend_from_slice(seed.as_ref());
        let pem = pem_rfc7468::encode_string(LOG_KEY_LABEL, pem_rfc7468::LineEnding::LF, &der)
            .map_err(|_| log_err("could not encode the log key"))?;
        let key = Self::from_pkcs8_pem(name, pem.as_bytes())?;
        Ok((key, Zeroizing::new(pem.into_bytes())))
    }

    /// Reads an Ed25519 PKCS#8 PEM key (`openssl genpkey -algorithm ed25519`) for log `name`.
    /// Errors never quote the file.
    pub fn from_pkcs8_pem(name: &str, pem: &[u8]) -> Result<Self> {
        check_origin(name)?;
        let bad = || {
            log_err(
                "the log key is not an Ed25519 private key in PKCS#8 PEM (make one with `openssl genpkey -algorithm \
                 ed25519`)",
            )
        };
        if pem.len() > MAX_NOTE_BYTES {
            return Err(bad());
        }
        let (label, der) = pem_rfc7468::decode_vec(pem).map_err(|_| bad())?;
        let der = Zeroizing::new(der);
        if label != LOG_KEY_LABEL {
            return Err(bad());
        }
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| bad())?;
        Ok(LogKey { name: name.into(), pair })
    }

    /// The verifier key anyone checks checkpoints with.
    pub fn verifier(&self) -> VerifierKey {
        let public: [u8; 32] = self.pair.public_key().as_ref().try_into().unwrap_or([0; 32]);
        VerifierKey { name: self.name.clone(), id: key_id(&self.name, &public), public }
    }

    /// Signs `checkpoint` into a signed note (its origin must be the key's name).
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<String> {
        let sig = self.pair.sign(checkpoint.body().as_bytes());
        checkpoint.note(&self.verifier(), sig.as_ref())
    }
}

impl Checkpoint {
    /// The signed note of this checkpoint with `signature`, made over [`Checkpoint::body`] by
    /// the key `key` names (held elsewhere: a PKCS#11 token). The signature is checked first: a
    /// signer that returns anything but a valid signature by that key is refused.
    pub fn note(&self, key: &VerifierKey, signature: &[u8]) -> Result<String> {
        if self.origin != key.name {
            return Err(log_err("the checkpoint's origin is not the log key's name"));
        }
        let body = self.body();
        UnparsedPublicKey::new(&ED25519, &key.public)
            .verify(body.as_bytes(), signature)
            .map_err(|_| log_err(format!("the log key's signer returned no valid signature by {key}")))?;
        let mut blob = key.id.to_vec();
        blob.extend_from_slice(signature);
        Ok(format!("{body}\n\u{2014} {} {}\n", key.name, Base64::encode_string(&blob)))
    }
}

/// Parses a signed checkpoint note and checks its signature by `key` (other signatures are
/// allowed and ignored, as C2SP says). Hostile input: bounded and strict.
pub fn open_checkpoint(note: &[u8], key: &VerifierKey) -> Result<Checkpoint> {
    let cp = parse_checkpoint(note)?;
    let text = std::str::from_utf8(note).map_err(|_| log_err("a checkpoint is not UTF-8"))?;
    let (body, sigs) = text.split_once("\n\n").ok_or_else(|| log_err("a checkpoint has no signature"))?;
    let body = format!("{body}\n");
    let mut found = false;
    for line in sigs.lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            return Err(log_err("a checkpoint signature line does not start with an em dash"));
        };
        let (name, blob) = rest.split_once(' ').ok_or_else(|| log_err("a checkpoint signature line is malformed"))?;
        let blob = Base64::decode_vec(blob).map_err(|_| log_err("a checkpoint signature is not base64"))?;
        if name != key.name || blob.len() != 68 || blob[..4] != key.id {
            continue;
        }
        UnparsedPublicKey::new(&ED25519, &key.public)
            .verify(body.as_bytes(), &blob[4..])
            .map_err(|_| log_err(format!("the checkpoint's signature by {} does not verify", key.name)))?;
        found = true;
    }
    if !found {
        return Err(log_err(format!("the checkpoint carries no signature by {}+{}", key.name, hex(&key.id))));
    }
    if cp.origin != key.name {
        return Err(log_err(format!("the checkpoint is of log {}, not {}", cp.origin, key.name)));
    }
    Ok(cp)
}

/// Parses a checkpoint note's body without checking any signature.
pub fn parse_checkpoint(note: &[u8]) -> Result<Checkpoint> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(log_err(format!("a checkpoint is larger than {MAX_NOTE_BYTES} bytes")));
    }
    let text = std::str::from_utf8(note).map_err(|_| log_err("a checkpoint is not UTF-8"))?;
    let (body, _) =
        text.split_once("\n\n").ok_or_else(|| log_err("a checkpoint has no blank line before its signatures"))?;
    let mut lines = body.split('\n');
    let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
        return Err(log_err("a checkpoint has fewer than three lines"));
    };
    check_origin(origin)?;
    if size.is_empty() || (size.len() > 1 && size.starts_with('0')) || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(log_err("a checkpoint's size is not a decimal number"));
    }
    let size: u64 = size.parse().map_err(|_| log_err("a checkpoint's size is out of range"))?;
    if size > MAX_TREE_SIZE {
        return Err(log_err("a checkpoint's size is out of range"));
    }
    let root: Hash = Base64::decode_vec(root)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| log_err("a checkpoint's root hash is not 32 bytes of base64"))?;
    Ok(Checkpoint { origin: origin.into(), size, root })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("leaf {i}").as_bytes())).collect()
    }

    #[test]
    fn the_streaming_root_is_the_recursive_root() {
        let all = leaves(70);
        let mut b = RootBuilder::new();
        assert_eq!(b.root(), tree_root(&[]));
        for (i, l) in all.iter().enumerate() {
            b.push(*l);
            assert_eq!(b.root(), tree_root(&all[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn every_inclusion_and_consistency_proof_verifies_and_a_changed_one_does_not() {
        let all = leaves(33);
        for n in 1..=all.len() {
            let root = tree_root(&all[..n]);
            for m in 0..n {
                let p = inclusion_proof(&all[..n], m as u64).unwrap();
                verify_inclusion(&all[m], m as u64, n as u64, &p, &root).unwrap();
                assert!(verify_inclusion(&all[(m + 1) % n], m as u64, n as u64, &p, &root).is_err() || n == 1);
                assert!(
                    verify_inclusion(&all[m], m as u64, n as u64, &p, &tree_root(&all[..n - 1])).is_err() || n == 1
                );
            }
            for m in 0..=n {
                let old = tree_root(&all[..m]);
                let p = consistency_proof(&all[..n], m as u64).unwrap();
                verify_consistency(m as u64, n as u64, &old, &root, &p).unwrap();
                if m > 0 && m < n {
                    let forged = tree_root(&leaves(m + 1)[1..]);
                    assert!(verify_consistency(m as u64, n as u64, &forged, &root, &p).is_err());
                }
            }
        }
        assert!(verify_consistency(5, 4, &tree_root(&all[..5]), &tree_root(&all[..4]), &[]).is_err());
    }

    #[test]
    fn entries_round_trip_and_malformed_ones_are_refused() {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let e = LogEntry::new(EntryKind::Crl, vec![1, 2, 3], "east", "revoke", "ns/p", Some(4), t);
        let bytes = e.encode().unwrap();
        assert_eq!(LogEntry::decode(&bytes).unwrap(), e);
        let mut tampered = bytes.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(LogEntry::decode(&tampered).is_err());
        assert!(LogEntry::decode(b"meshca-log-entry v1\nkind crl\n\n").is_err());
        let bad = LogEntry { cluster: "a b".into(), ..e };
        assert!(bad.encode().is_err());
    }

    #[test]
    fn checkpoints_sign_and_verify_and_altered_ones_do_not() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let (key, pem) = LogKey::generate("meshca.example/log", &mut rng).unwrap();
        assert!(!format!("{key:?}").contains(std::str::from_utf8(&pem).unwrap()));
        let cp = Checkpoint { origin: "meshca.example/log".into(), size: 12, root: [9; 32] };
        let note = key.sign(&cp).unwrap();
        let vk = VerifierKey::parse(&key.verifier().to_string()).unwrap();
        assert_eq!(open_checkpoint(note.as_bytes(), &vk).unwrap(), cp);
        let altered = note.replace("\n12\n", "\n13\n");
        assert!(open_checkpoint(altered.as_bytes(), &vk).is_err());
        let (other, _) = LogKey::generate("meshca.example/log", &mut rng).unwrap();
        assert!(open_checkpoint(note.as_bytes(), &other.verifier()).is_err());
        assert_eq!(LogKey::from_pkcs8_pem("meshca.example/log", &pem).unwrap().verifier(), key.verifier());
    }

    #[test]
    fn a_signature_made_elsewhere_makes_the_same_note_and_a_wrong_one_is_refused() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(8);
        let (key, _) = LogKey::generate("meshca.example/log", &mut rng).unwrap();
        let vk = VerifierKey::ed25519("meshca.example/log", key.verifier().public_key()).unwrap();
        assert_eq!(vk, key.verifier());
        let cp = Checkpoint { origin: "meshca.example/log".into(), size: 3, root: [1; 32] };
        // Ed25519 is deterministic: the token's signature over the body is the key's.
        let sig = key.pair.sign(cp.body().as_bytes());
        assert_eq!(cp.note(&vk, sig.as_ref()).unwrap(), key.sign(&cp).unwrap());
        assert_eq!(open_checkpoint(cp.note(&vk, sig.as_ref()).unwrap().as_bytes(), &vk).unwrap(), cp);
        // A signer that lies (another body, another key, garbage, nothing) is caught here.
        let other = Checkpoint { size: 4, ..cp.clone() };
        assert!(cp.note(&vk, key.pair.sign(other.body().as_bytes()).as_ref()).is_err());
        let (stranger, _) = LogKey::generate("meshca.example/log", &mut rng).unwrap();
        assert!(cp.note(&vk, stranger.pair.sign(cp.body().as_bytes()).as_ref()).is_err());
        assert!(cp.note(&vk, &[0; 64]).is_err());
        assert!(cp.note(&vk, &[]).is_err());
        let elsewhere = VerifierKey::ed25519("another/log", vk.public_key()).unwrap();
        assert!(cp.note(&elsewhere, sig.as_ref()).is_err(), "origin and key name differ");
        assert!(VerifierKey::ed25519("meshca.example/log", &[0; 31]).is_err());
        assert!(VerifierKey::ed25519("has space", &[0; 32]).is_err());
    }
}
