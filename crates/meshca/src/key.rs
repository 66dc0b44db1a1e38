//! Private keys: generation, import from every PEM format istiod accepts, PKCS#8 export.
//!
//! ring signs only with PKCS#8 keys, so PKCS#1 (`RSA PRIVATE KEY`) and SEC1 (`EC PRIVATE KEY`)
//! inputs are converted to PKCS#8 on import (pkcs1/sec1/pkcs8 crates). Key bytes live in
//! zeroizing buffers and never reach `Debug`, `Display` or an error message.

use core::fmt;
use core::str::FromStr;

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use pkcs8::{DecodePrivateKey, EncodePrivateKey};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::pem;
use crate::rng::Entropy;

pub(crate) const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(crate) const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub(crate) const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub(crate) const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
pub(crate) const OID_ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");

/// Which key to generate for a new certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256: fast, small, istiod's ECC choice. The default.
    #[default]
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcdsaP384,
    /// RSA 2048 (istiod's default for workloads).
    Rsa2048,
    /// RSA 3072.
    Rsa3072,
    /// RSA 4096 (Istio's tools/certs and Gloo Mesh default for CAs).
    Rsa4096,
}

impl KeyAlgorithm {
    /// Every algorithm, in the order `--help` lists them.
    pub const ALL: [KeyAlgorithm; 5] = [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
    ];

    /// The name used on the command line and in policies: `ecdsa-p256`, `rsa-4096`, ...
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
            KeyAlgorithm::Rsa3072 => "rsa-3072",
            KeyAlgorithm::Rsa4096 => "rsa-4096",
        }
    }

    /// The RSA algorithm for a key size in bits (Gloo's `rsaKeySizeBytes` is really bits).
    pub fn rsa(bits: usize) -> Result<Self> {
        match bits {
            2048 => Ok(KeyAlgorithm::Rsa2048),
            3072 => Ok(KeyAlgorithm::Rsa3072),
            4096 => Ok(KeyAlgorithm::Rsa4096),
            other => Err(Error::UnknownKeyAlgorithmName { name: format!("rsa-{other}") }),
        }
    }

    /// The key type a key of this algorithm has.
    pub fn key_type(self) -> KeyType {
        match self {
            KeyAlgorithm::EcdsaP256 => KeyType::EcdsaP256,
            KeyAlgorithm::EcdsaP384 => KeyType::EcdsaP384,
            KeyAlgorithm::Rsa2048 => KeyType::Rsa { bits: 2048 },
            KeyAlgorithm::Rsa3072 => KeyType::Rsa { bits: 3072 },
            KeyAlgorithm::Rsa4096 => KeyType::Rsa { bits: 4096 },
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        KeyAlgorithm::ALL
            .into_iter()
            .find(|a| a.name() == norm || a.name().replace('-', "") == norm)
            .ok_or_else(|| Error::UnknownKeyAlgorithmName { name: s.to_owned() })
    }
}

/// The type of an existing key (private key or certificate public key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyType {
    /// ECDSA P-256.
    EcdsaP256,
    /// ECDSA P-384.
    EcdsaP384,
    /// RSA with a modulus of `bits` bits.
    Rsa {
        /// Modulus size.
        bits: usize,
    },
}

impl KeyType {
    /// Whether a key of this type is what `alg` would generate.
    pub fn matches(self, alg: KeyAlgorithm) -> bool {
        self == alg.key_type()
    }

    pub(crate) fn rcgen_alg(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyType::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyType::Rsa { bits } => write!(f, "RSA {bits}"),
        }
    }
}

/// A private key meshca can sign with. Zeroized on drop; `Debug` shows only its type.
pub struct PrivateKey {
    key_type: KeyType,
    pkcs8: Zeroizing<Vec<u8>>,
    pair: Pair,
}

/// What signs for a [`PrivateKey`]: rcgen's key pair, loaded from the PKCS#8, or (AWS-LC) the
/// ECDSA key pair the generator just made, which signs without its PKCS#8 being parsed again
/// (the parse recomputes and checks the public point: a third of a P-256 issuance).
pub(crate) enum Pair {
    Loaded(rcgen::KeyPair),
    #[cfg(feature = "aws-lc")]
    Fresh {
        key: aws_lc_rs::signature::EcdsaKeyPair,
        alg: &'static rcgen::SignatureAlgorithm,
    },
}

impl rcgen::PublicKeyData for Pair {
    fn der_bytes(&self) -> &[u8] {
        match self {
            Pair::Loaded(p) => p.der_bytes(),
            #[cfg(feature = "aws-lc")]
            Pair::Fresh { key, .. } => aws_lc_rs::signature::KeyPair::public_key(key).as_ref(),
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Pair::Loaded(p) => p.algorithm(),
            #[cfg(feature = "aws-lc")]
            Pair::Fresh { alg, .. } => alg,
        }
    }
}

impl rcgen::SigningKey for Pair {
    fn sign(&self, msg: &[u8]) -> core::result::Result<Vec<u8>, rcgen::Error> {
        match self {
            Pair::Loaded(p) => p.sign(msg),
            #[cfg(feature = "aws-lc")]
            Pair::Fresh { key, .. } => key
                .sign(&aws_lc_rs::rand::SystemRandom::new(), msg)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| rcgen::Error::RingUnspecified),
        }
    }
}

impl PrivateKey {
    /// Generates a key. All randomness comes from `entropy`: its own generator if it has one
    /// ([`crate::OsRng`]: AWS-LC, whose ECDSA keys sign without a PKCS#8 round trip, or ring
    /// without the `aws-lc` feature), else the RustCrypto `p256`/`p384`/`rsa` crates over its
    /// RNG (reproducible under a seeded RNG).
    pub fn generate(alg: KeyAlgorithm, entropy: &mut dyn Entropy) -> Result<Self> {
        let failed = |e: &dyn fmt::Display| Error::Issuance { what: "a private key", detail: e.to_string() };
        if let Some(key) = entropy.key(alg) {
            return key;
        }
        if let Some(pkcs8) = entropy.ecdsa_pkcs8(alg) {
            return Self::from_normalized_pkcs8(alg.key_type(), pkcs8, "generated key");
        }
        if let KeyType::Rsa { bits } = alg.key_type() {
            if let Some(pkcs8) = entropy.rsa_pkcs8(bits) {
                return Self::from_normalized_pkcs8(alg.key_type(), pkcs8, "generated key");
            }
        }
        let mut rng = entropy.rng();
        let doc = match alg {
            KeyAlgorithm::EcdsaP256 => p256::SecretKey::random(&mut rng).to_pkcs8_der(),
            KeyAlgorithm::EcdsaP384 => p384::SecretKey::random(&mut rng).to_pkcs8_der(),
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                let KeyType::Rsa { bits } = alg.key_type() else { unreachable!() };
                rsa::RsaPrivateKey::new(&mut rng, bits).map_err(|e| failed(&e))?.to_pkcs8_der()
            }
        }
        .map_err(|e| failed(&e))?;
        Self::from_normalized_pkcs8(alg.key_type(), Zeroizing::new(doc.as_bytes().to_vec()), "generated key")
    }

    /// Reads the first private key in `pem`: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`)
    /// or SEC1 (`EC PRIVATE KEY`, with or without a leading `EC PARAMETERS` block). `file` names
    /// the source in errors.
    pub fn from_pem(pem_data: &[u8], file: &str) -> Result<Self> {
        let blocks = pem::decode_all(file, "PRIVATE KEY", pem_data)?;
        let mut curve_hint = None;
        for block in &blocks {
            match block.label.as_str() {
                "EC PARAMETERS" => {
                    curve_hint = Some(ObjectIdentifier::from_der(&block.der).map_err(|e| Error::KeyParse {
                        file: file.to_owned(),
                        detail: format!("EC PARAMETERS block is not a named curve: {e}"),
                    })?);
                }
                "PRIVATE KEY" => return Self::from_pkcs8_der(&block.der, file),
                "RSA PRIVATE KEY" => return Self::from_pkcs1_der(&block.der, file),
                "EC PRIVATE KEY" => return Self::from_sec1_der(&block.der, curve_hint, file),
                "ENCRYPTED PRIVATE KEY" => return Err(Error::EncryptedKey { file: file.to_owned() }),
                other => {
                    return Err(Error::KeyParse {
                        file: file.to_owned(),
                        detail: format!("found a `{other}` PEM block, not a private key"),
                    })
                }
            }
        }
        Err(Error::EmptyPem { file: file.to_owned(), expected: "PRIVATE KEY" })
    }

    /// Reads a PKCS#8 `PrivateKeyInfo`.
    pub fn from_pkcs8_der(der_bytes: &[u8], file: &str) -> Result<Self> {
        let bad = |detail: String| Error::KeyParse { file: file.to_owned(), detail };
        let info = pkcs8::PrivateKeyInfo::try_from(der_bytes).map_err(|e| bad(format!("PKCS#8: {e}")))?;
        let oid = info.algorithm.oid;
        if oid == OID_RSA_ENCRYPTION {
            let bits = rsa_bits(info.private_key, file)?;
            return Self::from_normalized_pkcs8(KeyType::Rsa { bits }, Zeroizing::new(der_bytes.to_vec()), file);
        }
        if oid == OID_EC_PUBLIC_KEY {
            let curve = info.algorithm.parameters_oid().map_err(|_| bad("EC key without a named curve".into()))?;
            let key_type = if curve == OID_P256 {
                KeyType::EcdsaP256
            } else if curve == OID_P384 {
                KeyType::EcdsaP384
            } else {
                return Err(Error::UnknownCurve { file: file.to_owned(), curve: curve_name(curve) });
            };
            // Fast path: ring reads it as is when the public key is embedded (OpenSSL's and
            // ring's keys). Otherwise re-encode through p256/p384, which computes the public key
            // ring requires.
            if let Ok(k) = Self::from_normalized_pkcs8(key_type, Zeroizing::new(der_bytes.to_vec()), file) {
                return Ok(k);
            }
            let (key_type, doc) = if curve == OID_P256 {
                let k = p256::SecretKey::from_pkcs8_der(der_bytes).map_err(|e| bad(e.to_string()))?;
                (KeyType::EcdsaP256, k.to_pkcs8_der())
            } else if curve == OID_P384 {
                let k = p384::SecretKey::from_pkcs8_der(der_bytes).map_err(|e| bad(e.to_string()))?;
                (KeyType::EcdsaP384, k.to_pkcs8_der())
            } else {
                return Err(Error::UnknownCurve { file: file.to_owned(), curve: curve_name(curve) });
            };
            let doc = doc.map_err(|e| bad(e.to_string()))?;
            return Self::from_normalized_pkcs8(key_type, Zeroizing::new(doc.as_bytes().to_vec()), file);
        }
        if oid == OID_ED25519 || oid == OID_ED448 {
            return Err(Error::Ed25519Key { file: file.to_owned() });
        }
        Err(Error::UnsupportedKeyAlgorithm { file: file.to_owned(), algorithm: oid.to_string() })
    }

    /// Reads a PKCS#1 `RSAPrivateKey` and wraps it as PKCS#8.
    pub fn from_pkcs1_der(der_bytes: &[u8], file: &str) -> Result<Self> {
        let bits = rsa_bits(der_bytes, file)?;
        let info = pkcs8::PrivateKeyInfo::new(
            spki::AlgorithmIdentifierRef { oid: OID_RSA_ENCRYPTION, parameters: Some(der::asn1::AnyRef::NULL) },
            der_bytes,
        );
        let doc = info.to_der().map_err(|e| Error::KeyParse { file: file.to_owned(), detail: e.to_string() })?;
        Self::from_normalized_pkcs8(KeyType::Rsa { bits }, Zeroizing::new(doc), file)
    }

    /// Reads a SEC1 `ECPrivateKey`; `curve_hint` is the curve of a preceding `EC PARAMETERS`
    /// block, used when the key itself names none.
    pub fn from_sec1_der(der_bytes: &[u8], curve_hint: Option<ObjectIdentifier>, file: &str) -> Result<Self> {
        let bad = |detail: String| Error::KeyParse { file: file.to_owned(), detail };
        let parsed = sec1::EcPrivateKey::try_from(der_bytes).map_err(|e| bad(format!("SEC1: {e}")))?;
        let curve = parsed
            .parameters
            .and_then(|p| p.named_curve())
            .or(curve_hint)
            .ok_or_else(|| bad("EC key names no curve and no EC PARAMETERS block precedes it".into()))?;
        let (key_type, doc) = if curve == OID_P256 {
            let k = p256::SecretKey::from_slice(parsed.private_key).map_err(|e| bad(e.to_string()))?;
            (KeyType::EcdsaP256, k.to_pkcs8_der())
        } else if curve == OID_P384 {
            let k = p384::SecretKey::from_slice(parsed.private_key).map_err(|e| bad(e.to_string()))?;
            (KeyType::EcdsaP384, k.to_pkcs8_der())
        } else {
            return Err(Error::UnknownCurve { file: file.to_owned(), curve: curve_name(curve) });
        };
        let doc = doc.map_err(|e| bad(e.to_string()))?;
        Self::from_normalized_pkcs8(key_type, Zeroizing::new(doc.as_bytes().to_vec()), file)
    }

    fn from_normalized_pkcs8(key_type: KeyType, pkcs8: Zeroizing<Vec<u8>>, file: &str) -> Result<Self> {
        if let KeyType::Rsa { bits } = key_type {
            if bits < 2048 {
                return Err(Error::WeakRsaKey {
                    file: file.to_owned(),
                    what: "the private key".into(),
                    holder: crate::error::KeyHolder::PrivateKey,
                    bits,
                });
            }
        }
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(&pkcs8[..]);
        let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, key_type.rcgen_alg()).map_err(|e| {
            Error::KeyParse { file: file.to_owned(), detail: format!("rejected by the signing backend: {e}") }
        })?;
        Ok(PrivateKey { key_type, pkcs8, pair: Pair::Loaded(pair) })
    }

    /// A key AWS-LC has just generated, kept as it is for signing; its PKCS#8 is made once, for
    /// [`PrivateKey::pkcs8_der`] and the `ca-key.pem` it becomes.
    #[cfg(feature = "aws-lc")]
    pub(crate) fn from_fresh_ecdsa(alg: KeyAlgorithm, key: aws_lc_rs::signature::EcdsaKeyPair) -> Result<Self> {
        let failed = |detail: String| Error::Issuance { what: "a private key", detail };
        let key_type = alg.key_type();
        if matches!(key_type, KeyType::Rsa { .. }) {
            return Err(failed(format!("{alg} is not an ECDSA algorithm")));
        }
        let doc = key.to_pkcs8v1().map_err(|e| failed(e.to_string()))?;
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        Ok(PrivateKey { key_type, pkcs8, pair: Pair::Fresh { key, alg: key_type.rcgen_alg() } })
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), the form Istio's tools/certs writes.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem::encode("PRIVATE KEY", &self.pkcs8))
    }

    /// PKCS#8 DER.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The raw public key as it appears in a certificate's subjectPublicKey BIT STRING (the EC
    /// point, or the PKCS#1 `RSAPublicKey`).
    pub fn public_key_raw(&self) -> &[u8] {
        rcgen::PublicKeyData::der_bytes(&self.pair)
    }

    pub(crate) fn pair(&self) -> &Pair {
        &self.pair
    }
}

impl Clone for PrivateKey {
    fn clone(&self) -> Self {
        Self::from_normalized_pkcs8(self.key_type, self.pkcs8.clone(), "key")
            .unwrap_or_else(|_| unreachable!("a key that loaded once loads again"))
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        // AWS-LC clears a key's memory when it frees it (`OPENSSL_free` cleanses).
        match &mut self.pair {
            Pair::Loaded(p) => p.zeroize(),
            #[cfg(feature = "aws-lc")]
            Pair::Fresh { .. } => {}
        }
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("key_type", &self.key_type).finish_non_exhaustive()
    }
}

fn rsa_bits(pkcs1_der: &[u8], file: &str) -> Result<usize> {
    let key = pkcs1::RsaPrivateKey::try_from(pkcs1_der)
        .map_err(|e| Error::KeyParse { file: file.to_owned(), detail: format!("PKCS#1: {e}") })?;
    Ok(uint_bits(key.modulus.as_bytes()))
}

/// Bit length of a big-endian unsigned integer.
pub(crate) fn uint_bits(be: &[u8]) -> usize {
    let be = match be.iter().position(|&b| b != 0) {
        Some(i) => &be[i..],
        None => return 0,
    };
    be.len() * 8 - be[0].leading_zeros() as usize
}

pub(crate) fn curve_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.3.132.0.10" => "secp256k1 (1.3.132.0.10)".into(),
        "1.3.132.0.35" => "P-521 (1.3.132.0.35)".into(),
        "1.3.36.3.3.2.8.1.1.7" => "brainpoolP256r1 (1.3.36.3.3.2.8.1.1.7)".into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        for alg in KeyAlgorithm::ALL {
            assert_eq!(alg.name().parse::<KeyAlgorithm>().unwrap(), alg);
        }
        assert_eq!("ECDSA_P384".parse::<KeyAlgorithm>().unwrap(), KeyAlgorithm::EcdsaP384);
        let e = "dsa-1024".parse::<KeyAlgorithm>().unwrap_err();
        assert!(e.to_string().contains("ecdsa-p256"), "{e}");
    }

    #[test]
    fn debug_never_shows_key_material() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256, &mut rng).unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "PrivateKey { key_type: EcdsaP256, .. }");
        let pem = key.to_pkcs8_pem();
        let body: String = pem.lines().nth(1).unwrap().chars().take(24).collect();
        assert!(!shown.contains(&body));
    }

    #[test]
    fn generation_is_deterministic_under_a_seeded_rng() {
        use rand_core::SeedableRng;
        let a = PrivateKey::generate(KeyAlgorithm::EcdsaP384, &mut rand_chacha::ChaCha20Rng::seed_from_u64(7)).unwrap();
        let b = PrivateKey::generate(KeyAlgorithm::EcdsaP384, &mut rand_chacha::ChaCha20Rng::seed_from_u64(7)).unwrap();
        assert_eq!(a.pkcs8_der(), b.pkcs8_der());
        assert_eq!(a.key_type(), KeyType::EcdsaP384);
    }

    #[test]
    fn os_rng_takes_ring_fast_path_and_keys_load() {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384] {
            let a = PrivateKey::generate(alg, &mut crate::OsRng).unwrap();
            let b = PrivateKey::generate(alg, &mut crate::OsRng).unwrap();
            assert!(a.key_type().matches(alg));
            assert_ne!(a.public_key_raw(), b.public_key_raw());
            let again = PrivateKey::from_pem(a.to_pkcs8_pem().as_bytes(), "k").unwrap();
            assert_eq!(again.public_key_raw(), a.public_key_raw());
        }
        assert!(crate::OsRng.ecdsa_pkcs8(KeyAlgorithm::Rsa2048).is_none(), "RSA goes through the rsa crate");
    }

    /// The key AWS-LC hands over signs without a PKCS#8 round trip: its signatures verify (ring,
    /// another implementation) under the public key it reports, and its PKCS#8 loads back to
    /// the same key.
    #[cfg(feature = "aws-lc")]
    #[test]
    fn a_fresh_key_signs_and_its_pkcs8_is_the_same_key() {
        use rcgen::SigningKey;
        for (alg, ring_alg) in [
            (KeyAlgorithm::EcdsaP256, &ring::signature::ECDSA_P256_SHA256_ASN1),
            (KeyAlgorithm::EcdsaP384, &ring::signature::ECDSA_P384_SHA384_ASN1),
        ] {
            let key = crate::OsRng.key(alg).expect("AWS-LC makes ECDSA keys").unwrap();
            assert!(matches!(key.pair(), Pair::Fresh { .. }));
            let sig = key.pair().sign(b"tbs").unwrap();
            ring::signature::UnparsedPublicKey::new(ring_alg, key.public_key_raw()).verify(b"tbs", &sig).unwrap();
            let loaded = PrivateKey::from_pkcs8_der(key.pkcs8_der(), "k").unwrap();
            assert_eq!(loaded.public_key_raw(), key.public_key_raw());
            assert_eq!(loaded.key_type(), alg.key_type());
            assert!(matches!(loaded.pair(), Pair::Loaded(_)));
        }
        assert!(crate::OsRng.key(KeyAlgorithm::Rsa2048).is_none());
    }

    #[test]
    fn pkcs8_pem_round_trips() {
        use rand_core::SeedableRng;
        let key =
            PrivateKey::generate(KeyAlgorithm::EcdsaP256, &mut rand_chacha::ChaCha20Rng::seed_from_u64(3)).unwrap();
        let back = PrivateKey::from_pem(key.to_pkcs8_pem().as_bytes(), "k.pem").unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
    }

    #[test]
    fn uint_bits_counts_significant_bits() {
        assert_eq!(uint_bits(&[0, 0x01, 0]), 9);
        assert_eq!(uint_bits(&[0x80, 0]), 16);
        assert_eq!(uint_bits(&[]), 0);
    }

    use rand_core::SeedableRng;
}
