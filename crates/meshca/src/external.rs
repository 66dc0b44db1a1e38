//! CA keys that live outside this process: an HSM or any PKCS#11 token, a cloud KMS.
//!
//! The core crate does no I/O, so it does not talk to a token itself: the caller hands it an
//! [`ExternalKey`] (meshca-ops implements one over PKCS#11) and meshca asks that key to sign each
//! certificate's to-be-signed bytes. Issuance is otherwise the same code path as for a key in
//! memory (rcgen's remote-key signing); every signature an external key returns is verified
//! against the CA certificate's public key before the certificate is handed out, so a token that
//! answers with the wrong key or a corrupt signature is an error, not a certificate that fails in
//! istiod.

use core::fmt;
use std::sync::{Arc, Mutex};

use der::asn1::UintRef;
use der::{Encode, Sequence};

use crate::error::{Error, Result};
use crate::key::{KeyType, PrivateKey};

/// A signing key held elsewhere. Implementations must be usable from several threads (reconcile
/// issues on every core) and must never put key material or a PIN in `describe` or an error.
pub trait ExternalKey: Send + Sync {
    /// The key's type: ECDSA P-256 or P-384, or RSA 2048 to 4096.
    fn key_type(&self) -> KeyType;

    /// The public key as it appears in a certificate's subjectPublicKey BIT STRING: the
    /// uncompressed EC point, or the PKCS#1 `RSAPublicKey` DER.
    fn public_key_raw(&self) -> &[u8];

    /// Signs `message` (a certificate's or CSR's to-be-signed bytes) and returns the X.509
    /// signature value: for ECDSA the DER `Ecdsa-Sig-Value` over SHA-256 (P-256) or SHA-384
    /// (P-384), for RSA PKCS#1 v1.5 with SHA-256. [`ecdsa_signature_to_der`] converts the raw
    /// `r || s` that PKCS#11's CKM_ECDSA returns. The error says what failed, for the operator.
    fn sign(&self, message: &[u8]) -> core::result::Result<Vec<u8>, SignError>;

    /// Names the key in messages and `Debug` output (a PKCS#11 URI without its PIN).
    fn describe(&self) -> String;
}

/// Why an [`ExternalKey`] did not sign. Never holds key material or a PIN.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The key's provider answered the call with an error code (a PKCS#11 function's `CKR_*`,
    /// a signing service's error status).
    #[error("{call} returned {code}")]
    Refused {
        /// The call (`C_Sign`, an API path).
        call: String,
        /// What it returned (`CKR_DEVICE_REMOVED`, an HTTP status).
        code: String,
    },
    /// The provider answered with a signature of the wrong shape.
    #[error("{mechanism} returned {len} bytes, not {expected}")]
    Malformed {
        /// The mechanism or method (`CKM_ECDSA`).
        mechanism: &'static str,
        /// How many bytes came back.
        len: usize,
        /// What was expected (`r || s`).
        expected: &'static str,
    },
    /// The provider could not be reached or used at all (a library error, a connection
    /// refused): what it said.
    #[error("{0}")]
    Unavailable(String),
}

/// A CA's private key: in memory, or held by an [`ExternalKey`].
#[derive(Clone)]
#[non_exhaustive]
pub enum CaKey {
    /// A key meshca holds (read from `ca-key.pem`, or generated).
    Local(PrivateKey),
    /// A key in a token; meshca only asks it to sign.
    External(Arc<dyn ExternalKey>),
}

impl CaKey {
    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        match self {
            CaKey::Local(k) => k.key_type(),
            CaKey::External(k) => k.key_type(),
        }
    }

    /// The raw public key (see [`PrivateKey::public_key_raw`]).
    pub fn public_key_raw(&self) -> &[u8] {
        match self {
            CaKey::Local(k) => k.public_key_raw(),
            CaKey::External(k) => k.public_key_raw(),
        }
    }

    /// The key, when meshca holds it (and so can write `ca-key.pem`).
    pub fn local(&self) -> Option<&PrivateKey> {
        match self {
            CaKey::Local(k) => Some(k),
            CaKey::External(_) => None,
        }
    }

    /// The external key's description, when it is one.
    pub fn external(&self) -> Option<String> {
        match self {
            CaKey::Local(_) => None,
            CaKey::External(k) => Some(k.describe()),
        }
    }
}

impl From<PrivateKey> for CaKey {
    fn from(k: PrivateKey) -> Self {
        CaKey::Local(k)
    }
}

impl fmt::Debug for CaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaKey::Local(k) => k.fmt(f),
            CaKey::External(k) => {
                f.debug_struct("ExternalKey").field("key", &k.describe()).field("key_type", &k.key_type()).finish()
            }
        }
    }
}

#[derive(Sequence)]
struct EcdsaSigValue<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// Encodes a raw ECDSA signature (`r || s`, each half the curve's size, as PKCS#11 CKM_ECDSA
/// returns it) as the DER `Ecdsa-Sig-Value` X.509 carries (RFC 3279 2.2.3). `None` for an odd
/// length or an empty half.
pub fn ecdsa_signature_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 2 * 66 {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let sig = EcdsaSigValue { r: UintRef::new(r).ok()?, s: UintRef::new(s).ok()? };
    sig.to_der().ok()
}

/// rcgen's view of a [`CaKey`]: the public key and algorithm, and a signer that keeps the
/// external key's error for the caller (rcgen only says "remote key error").
pub(crate) struct RcgenSigner<'a> {
    key: &'a CaKey,
    error: Mutex<Option<SignError>>,
}

impl<'a> RcgenSigner<'a> {
    pub(crate) fn new(key: &'a CaKey) -> Self {
        RcgenSigner { key, error: Mutex::new(None) }
    }

    /// Maps an rcgen failure to an error, with the external key's own reason when it failed.
    pub(crate) fn error(&self, what: &'static str, e: rcgen::Error) -> Error {
        let kept = self.error.lock().map(|mut g| g.take()).unwrap_or(None);
        match (kept, self.key) {
            (Some(e), CaKey::External(k)) => Error::ExternalKey { key: k.describe(), detail: e.to_string() },
            _ => Error::Issuance { what, detail: e.to_string() },
        }
    }
}

impl rcgen::PublicKeyData for RcgenSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.key.public_key_raw()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.key.key_type().rcgen_alg()
    }
}

impl rcgen::SigningKey for RcgenSigner<'_> {
    fn sign(&self, msg: &[u8]) -> core::result::Result<Vec<u8>, rcgen::Error> {
        match self.key {
            CaKey::Local(k) => rcgen::SigningKey::sign(k.pair(), msg),
            CaKey::External(k) => k.sign(msg).map_err(|e| {
                if let Ok(mut g) = self.error.lock() {
                    *g = Some(e);
                }
                rcgen::Error::RemoteKeyError
            }),
        }
    }
}

/// After an external key signed `cert`, checks the signature under `signer`'s public key: a
/// token that signed with another key, or returned garbage, is caught here.
pub(crate) fn check_external_signature(
    key: &CaKey,
    cert: &crate::Certificate,
    signer: &crate::Certificate,
) -> Result<()> {
    if let CaKey::External(k) = key {
        cert.verify_signed_by(signer).map_err(|e| Error::ExternalKey {
            key: k.describe(),
            detail: format!(
                "the signature it returned does not verify under {}'s public key ({e:?}); the key \
                 object is not the one the CA certificate was issued for",
                signer.subject()
            ),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_ecdsa_signatures_become_der() {
        // r has its top bit set (gets a 0x00 pad), s has leading zeros (stripped).
        let mut raw = vec![0x80; 32];
        raw.extend([0u8, 0, 1].iter().chain([7u8; 29].iter()));
        let der = ecdsa_signature_to_der(&raw).unwrap();
        assert_eq!(&der[..5], &[0x30, 32 + 3 + 30 + 2, 0x02, 33, 0x00]);
        let s_at = 2 + 2 + 33;
        assert_eq!(&der[s_at..s_at + 3], &[0x02, 30, 1]);
        assert!(ecdsa_signature_to_der(&[1, 2, 3]).is_none());
        assert!(ecdsa_signature_to_der(&[]).is_none());
    }
}
