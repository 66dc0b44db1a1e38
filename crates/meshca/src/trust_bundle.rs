//! The fleet's trust set as it is published beyond the mesh: a SPIFFE bundle (the SPIFFE Trust
//! Domain and Bundle specification: an RFC 7517 JWK Set with one `x509-svid` key per root,
//! `spiffe_sequence` and `spiffe_refresh_hint`), the same roots as PEM, and the bookkeeping that
//! makes the sequence increase on every change and tells when a new root has been published long
//! enough to be used.
//!
//! Pure: the roots, the previous version and `now` come in; the document and the next version
//! come out. Where the version is kept, and who serves the document, is the caller's business.

use time::{Duration, OffsetDateTime};

use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use der::Decode;

use crate::cert::{Certificate, PublicKeyKind};
use crate::error::{Error, Result};
use crate::key::KeyType;

/// `spiffe_refresh_hint` when the policy names none, in seconds (5 minutes).
pub const DEFAULT_REFRESH_HINT_SECONDS: i64 = 300;

/// The refresh hints, bounded: at least 10 seconds (a hint shorter than a round trip only loads the
/// endpoint), at most a week.
pub const REFRESH_HINT_SECONDS: (i64, i64) = (10, 7 * 24 * 3600);

/// How many refresh hints a new root is published before it is used: the SPIFFE Federation
/// specification asks for a root to be published before anything signed by it is presented, and
/// a consumer that polls at the hint has then fetched it with room for two missed polls.
pub const HINTS_BEFORE_USE: i32 = 3;

/// The roots every party outside the mesh should trust: distinct certificates, one per key, in
/// the order given (the current root first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustSet {
    roots: Vec<Certificate>,
}

impl TrustSet {
    /// The set of `roots`, in order, without repeats: a second certificate for a key already
    /// in the set (a root re-issued over the same key) is left out, as a JWK Set holds a key
    /// once. Each root must be a CA with a key a JWK can carry (ECDSA P-256/P-384, RSA).
    pub fn new(roots: impl IntoIterator<Item = Certificate>) -> Result<Self> {
        let mut kept: Vec<Certificate> = Vec::new();
        for root in roots {
            if !root.is_ca() {
                return Err(Error::InvalidParameter {
                    field: "trust set".into(),
                    reason: format!("{} is not a CA certificate", root.subject()),
                });
            }
            jwk_params(&root)?;
            if !kept.iter().any(|k| k.public_key_raw() == root.public_key_raw()) {
                kept.push(root);
            }
        }
        Ok(TrustSet { roots: kept })
    }

    /// The roots, in order.
    pub fn roots(&self) -> &[Certificate] {
        &self.roots
    }

    /// Whether `root` is in the set (by its key and certificate).
    pub fn contains(&self, root: &Certificate) -> bool {
        self.roots.iter().any(|r| r == root || r.public_key_raw() == root.public_key_raw())
    }

    /// The roots as concatenated PEM (what `root-cert.pem`, a ConfigMap or a ClusterTrustBundle
    /// holds).
    pub fn pem(&self) -> String {
        self.roots.iter().map(Certificate::to_pem).collect()
    }

    /// The SHA-256 fingerprints of the roots, sorted: two sets are the same set when these are
    /// equal, whatever the order.
    pub fn fingerprints(&self) -> Vec<String> {
        let mut f: Vec<String> = self.roots.iter().map(Certificate::fingerprint_sha256).collect();
        f.sort();
        f
    }

    /// The SPIFFE bundle: a JWK Set with one key per root (`use: x509-svid`, the key's
    /// parameters, and `x5c` holding exactly that root), `spiffe_sequence` and
    /// `spiffe_refresh_hint` (whole seconds). Keys of other trust domains are never here: the
    /// set is one trust domain's.
    pub fn spiffe_bundle(&self, sequence: u64, refresh_hint: Duration) -> String {
        let mut out = String::from("{\n  \"keys\": [");
        for (i, root) in self.roots.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Checked when the set was made.
            let params = jwk_params(root).unwrap_or_default();
            out.push_str("\n    {\n      \"use\": \"x509-svid\"");
            for (name, value) in params {
                out.push_str(&format!(",\n      \"{name}\": \"{value}\""));
            }
            out.push_str(&format!(",\n      \"x5c\": [\"{}\"]\n    }}", Base64::encode_string(root.der())));
        }
        if !self.roots.is_empty() {
            out.push_str("\n  ");
        }
        out.push_str(&format!(
            "],\n  \"spiffe_sequence\": {sequence},\n  \"spiffe_refresh_hint\": {}\n}}\n",
            refresh_hint.whole_seconds().max(0)
        ));
        out
    }
}

/// A root's JWK members besides `use` and `x5c` (RFC 7518 section 6): `kty`, and `crv`, `x`, `y`
/// for an EC key, or `n`, `e` for an RSA key, in base64url without padding.
fn jwk_params(root: &Certificate) -> Result<Vec<(&'static str, String)>> {
    let bad = |reason: String| Error::InvalidParameter { field: "trust set".into(), reason };
    let raw = root.public_key_raw();
    let ec = |crv: &'static str, len: usize| {
        // An uncompressed point: 0x04, then X and Y of `len` bytes each.
        if raw.len() != 1 + 2 * len || raw[0] != 4 {
            return Err(bad(format!("{}: its {crv} key is not an uncompressed point", root.subject())));
        }
        Ok(vec![
            ("kty", "EC".to_owned()),
            ("crv", crv.to_owned()),
            ("x", Base64UrlUnpadded::encode_string(&raw[1..1 + len])),
            ("y", Base64UrlUnpadded::encode_string(&raw[1 + len..])),
        ])
    };
    match root.public_key_kind() {
        PublicKeyKind::Supported(KeyType::EcdsaP256) => ec("P-256", 32),
        PublicKeyKind::Supported(KeyType::EcdsaP384) => ec("P-384", 48),
        PublicKeyKind::Supported(KeyType::Rsa { .. }) => {
            let key = pkcs1::RsaPublicKey::from_der(raw)
                .map_err(|e| bad(format!("{}: its RSA key cannot be read: {e}", root.subject())))?;
            Ok(vec![
                ("kty", "RSA".to_owned()),
                ("n", Base64UrlUnpadded::encode_string(key.modulus.as_bytes())),
                ("e", Base64UrlUnpadded::encode_string(key.public_exponent.as_bytes())),
            ])
        }
        PublicKeyKind::WeakRsa { bits } => Err(bad(format!("{}: an RSA key of {bits} bits", root.subject()))),
        PublicKeyKind::Unsupported(what) => {
            Err(bad(format!("{}: a {what} key, which a SPIFFE bundle here cannot carry", root.subject())))
        }
    }
}

/// Which version of the trust set is published: `spiffe_sequence`, the set it numbers, and when
/// that set was first published. Kept by the caller between runs (so the sequence survives
/// restarts and leader changes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleVersion {
    /// `spiffe_sequence`: increases by one on every change of the set.
    pub sequence: u64,
    /// The set's fingerprints ([`TrustSet::fingerprints`]).
    pub fingerprints: Vec<String>,
    /// When this set was first published.
    pub published_at: OffsetDateTime,
}

impl BundleVersion {
    /// The version to publish `set` under at `now`: this one when the set is the same, else the
    /// next sequence number from `now` (the first is 1). Returns whether it changed.
    pub fn next(previous: Option<&BundleVersion>, set: &TrustSet, now: OffsetDateTime) -> (BundleVersion, bool) {
        let fingerprints = set.fingerprints();
        match previous {
            Some(p) if p.fingerprints == fingerprints => (p.clone(), false),
            Some(p) => {
                (BundleVersion { sequence: p.sequence.saturating_add(1), fingerprints, published_at: now }, true)
            }
            None => (BundleVersion { sequence: 1, fingerprints, published_at: now }, true),
        }
    }

    /// When a root first published in this version may be used: [`HINTS_BEFORE_USE`] refresh
    /// hints after it was published.
    pub fn usable_from(&self, refresh_hint: Duration) -> OffsetDateTime {
        self.published_at.saturating_add(refresh_hint.saturating_mul(HINTS_BEFORE_USE))
    }

    /// Whether `root` is in this version.
    pub fn holds(&self, root: &Certificate) -> bool {
        self.fingerprints.contains(&root.fingerprint_sha256())
    }
}

/// Parses a SPIFFE bundle endpoint's `refreshHintSeconds` (field `field`), within
/// [`REFRESH_HINT_SECONDS`].
pub fn refresh_hint(field: &str, seconds: i64) -> Result<Duration> {
    let (min, max) = REFRESH_HINT_SECONDS;
    if !(min..=max).contains(&seconds) {
        return Err(Error::InvalidParameter {
            field: field.to_owned(),
            reason: format!("must be between {min} and {max} seconds, not {seconds}"),
        });
    }
    Ok(Duration::seconds(seconds))
}
