//! A parsed X.509 certificate with the accessors meshca's checks and `inspect` need, and
//! signature verification of one certificate by another (ring).

use core::fmt;

use der::asn1::{ObjectIdentifier, PrintableStringRef, TeletexStringRef, Utf8StringRef};
use der::{Decode, Encode, Reader, SliceReader};
use time::OffsetDateTime;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};

use crate::error::{Error, Result};
use crate::key::{self, KeyType};
use crate::pem;

pub(crate) const OID_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
pub(crate) const OID_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
const OID_ANY_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37.0");
pub(crate) const OID_O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
pub(crate) const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
pub(crate) const OID_L: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.7");
const OID_DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");

/// What a certificate's public key is, including kinds istiod cannot use.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublicKeyKind {
    /// A key type meshca and istiod support.
    Supported(KeyType),
    /// An RSA key below 2048 bits.
    WeakRsa {
        /// Modulus size.
        bits: usize,
    },
    /// Anything else (Ed25519, other curves, DSA...).
    Unsupported(String),
}

/// The signature algorithms meshca verifies, and the ones it names in order to refuse them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SigAlg {
    RsaSha256,
    RsaSha384,
    RsaSha512,
    EcdsaSha256,
    EcdsaSha384,
    Weak(&'static str),
}

/// A signature algorithm meshca does not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UnsupportedAlg {
    RsaPss,
    Ed25519,
    Other(ObjectIdentifier),
}

impl fmt::Display for UnsupportedAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnsupportedAlg::RsaPss => f.write_str("RSASSA-PSS (1.2.840.113549.1.1.10)"),
            UnsupportedAlg::Ed25519 => f.write_str("Ed25519 (1.3.101.112)"),
            UnsupportedAlg::Other(oid) => write!(f, "{oid}"),
        }
    }
}

impl SigAlg {
    fn from_oid(oid: ObjectIdentifier) -> core::result::Result<Self, UnsupportedAlg> {
        Ok(match oid.to_string().as_str() {
            "1.2.840.113549.1.1.11" => SigAlg::RsaSha256,
            "1.2.840.113549.1.1.12" => SigAlg::RsaSha384,
            "1.2.840.113549.1.1.13" => SigAlg::RsaSha512,
            "1.2.840.10045.4.3.2" => SigAlg::EcdsaSha256,
            "1.2.840.10045.4.3.3" => SigAlg::EcdsaSha384,
            "1.2.840.113549.1.1.5" => SigAlg::Weak("sha1WithRSAEncryption"),
            "1.2.840.113549.1.1.4" => SigAlg::Weak("md5WithRSAEncryption"),
            "1.2.840.10045.4.1" => SigAlg::Weak("ecdsa-with-SHA1"),
            "1.2.840.10040.4.3" => SigAlg::Weak("dsa-with-SHA1"),
            "1.2.840.113549.1.1.2" => SigAlg::Weak("md2WithRSAEncryption"),
            "1.2.840.113549.1.1.10" => return Err(UnsupportedAlg::RsaPss),
            "1.3.101.112" => return Err(UnsupportedAlg::Ed25519),
            _ => return Err(UnsupportedAlg::Other(oid)),
        })
    }

    fn name(self) -> &'static str {
        match self {
            SigAlg::RsaSha256 => "sha256WithRSAEncryption",
            SigAlg::RsaSha384 => "sha384WithRSAEncryption",
            SigAlg::RsaSha512 => "sha512WithRSAEncryption",
            SigAlg::EcdsaSha256 => "ecdsa-with-SHA256",
            SigAlg::EcdsaSha384 => "ecdsa-with-SHA384",
            SigAlg::Weak(name) => name,
        }
    }
}

/// An X.509 certificate: the exact DER it came as, plus a parsed view.
#[derive(Clone)]
pub struct Certificate {
    der: Vec<u8>,
    parsed: x509_cert::Certificate,
    tbs: core::ops::Range<usize>,
    /// Whether the signature verifies with the certificate's own key, computed once.
    self_signed: std::sync::OnceLock<bool>,
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}
impl Eq for Certificate {}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject())
            .field("issuer", &self.issuer())
            .field("not_after", &crate::time_fmt::rfc3339(self.not_after()))
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Parses one DER certificate. `file` and `index` (1-based) name it in errors.
    pub fn from_der(der_bytes: &[u8], file: &str, index: usize) -> Result<Self> {
        let bad = |detail: String| Error::CertificateParse { file: file.to_owned(), index, detail };
        let parsed = x509_cert::Certificate::from_der(der_bytes).map_err(|e| bad(e.to_string()))?;
        let tbs = tbs_range(der_bytes).map_err(|e| bad(e.to_string()))?;
        // Every extension meshca reads must decode, once (RFC 5280 4.2: at most one instance
        // each); the accessors below can then treat "absent" as absent, never as "malformed".
        let t = &parsed.tbs_certificate;
        let check = |name: &str, r: core::result::Result<bool, der::Error>| {
            r.map(|_| ()).map_err(|e| bad(format!("malformed or repeated {name} extension ({e})")))
        };
        check("basicConstraints", t.get::<BasicConstraints>().map(|o| o.is_some()))?;
        check("keyUsage", t.get::<KeyUsage>().map(|o| o.is_some()))?;
        check("extendedKeyUsage", t.get::<ExtendedKeyUsage>().map(|o| o.is_some()))?;
        check("subjectAltName", t.get::<SubjectAltName>().map(|o| o.is_some()))?;
        check("subjectKeyIdentifier", t.get::<SubjectKeyIdentifier>().map(|o| o.is_some()))?;
        check("authorityKeyIdentifier", t.get::<AuthorityKeyIdentifier>().map(|o| o.is_some()))?;
        Ok(Certificate { der: der_bytes.to_vec(), parsed, tbs, self_signed: std::sync::OnceLock::new() })
    }

    /// Parses every `CERTIFICATE` block of a PEM file; other blocks are an error.
    pub fn from_pem_all(data: &[u8], file: &str) -> Result<Vec<Self>> {
        let blocks = pem::decode_all(file, "CERTIFICATE", data)?;
        let mut certs = Vec::with_capacity(blocks.len());
        for (i, block) in blocks.iter().enumerate() {
            if block.label != "CERTIFICATE" {
                return Err(Error::UnexpectedPemLabel {
                    file: file.to_owned(),
                    index: i + 1,
                    label: block.label.clone(),
                    expected: "CERTIFICATE",
                });
            }
            certs.push(Certificate::from_der(&block.der, file, i + 1)?);
        }
        Ok(certs)
    }

    /// The DER bytes, exactly as read or issued.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// PEM (`-----BEGIN CERTIFICATE-----`).
    pub fn to_pem(&self) -> String {
        pem::encode("CERTIFICATE", &self.der)
    }

    pub(crate) fn tbs(&self) -> &x509_cert::TbsCertificate {
        &self.parsed.tbs_certificate
    }

    /// Subject as an RFC 4514 string; `(empty)` for an empty subject (workload certificates).
    pub fn subject(&self) -> String {
        name_string(&self.tbs().subject)
    }

    /// Issuer as an RFC 4514 string.
    pub fn issuer(&self) -> String {
        name_string(&self.tbs().issuer)
    }

    pub(crate) fn subject_der(&self) -> Vec<u8> {
        self.tbs().subject.to_der().unwrap_or_default()
    }

    pub(crate) fn issuer_der(&self) -> Vec<u8> {
        self.tbs().issuer.to_der().unwrap_or_default()
    }

    /// The first value of a subject attribute (e.g. [`OID_O`]), if present and a string.
    pub(crate) fn subject_attr(&self, oid: ObjectIdentifier) -> Option<String> {
        name_attr(&self.tbs().subject, oid)
    }

    /// Common name (CN) of the subject.
    pub fn common_name(&self) -> Option<String> {
        self.subject_attr(OID_CN)
    }

    /// Organization (O) of the subject.
    pub fn organization(&self) -> Option<String> {
        self.subject_attr(OID_O)
    }

    /// Locality (L) of the subject: meshca and Istio's tools/certs put the cluster name there.
    pub fn locality(&self) -> Option<String> {
        self.subject_attr(OID_L)
    }

    /// Whether subject and issuer are the same name (self-issued, RFC 5280 6.1).
    pub fn is_self_issued(&self) -> bool {
        self.tbs().subject == self.tbs().issuer
    }

    /// Whether the certificate is self-issued and its signature verifies with its own key.
    pub fn is_self_signed(&self) -> bool {
        *self.self_signed.get_or_init(|| self.is_self_issued() && self.verify_signed_by(self).is_ok())
    }

    /// notBefore.
    pub fn not_before(&self) -> OffsetDateTime {
        to_offset(self.tbs().validity.not_before.to_unix_duration())
    }

    /// notAfter.
    pub fn not_after(&self) -> OffsetDateTime {
        to_offset(self.tbs().validity.not_after.to_unix_duration())
    }

    /// RFC 5280 4.1.2.5: valid at `now` (whole seconds, as the certificate carries), from
    /// notBefore through notAfter, both inclusive; else [`Error::NotYetValid`] or
    /// [`Error::Expired`] naming `file`. The one validity check every path uses.
    pub fn check_validity(&self, file: &str, now: OffsetDateTime) -> crate::Result<()> {
        crate::rfc5280::check_validity(self, file, now)
    }

    /// Serial number as lowercase hex with colons.
    pub fn serial_hex(&self) -> String {
        hex_colon(self.tbs().serial_number.as_bytes())
    }

    /// Serial number: the DER INTEGER's content octets.
    pub fn serial_bytes(&self) -> &[u8] {
        self.tbs().serial_number.as_bytes()
    }

    /// SHA-256 fingerprint of the DER, lowercase hex with colons (as `openssl x509 -fingerprint`).
    pub fn fingerprint_sha256(&self) -> String {
        hex_colon(ring::digest::digest(&ring::digest::SHA256, &self.der).as_ref())
    }

    /// Every extension, as encoded.
    pub(crate) fn extensions(&self) -> &[x509_cert::ext::Extension] {
        self.tbs().extensions.as_deref().unwrap_or_default()
    }

    /// The subjectAltName entries, decoded.
    pub(crate) fn san_names(&self) -> Vec<GeneralName> {
        self.ext::<SubjectAltName>().map(|(_, san)| san.0).unwrap_or_default()
    }

    pub(crate) fn ext<'a, T: Decode<'a> + der::oid::AssociatedOid>(&'a self) -> Option<(bool, T)> {
        // `from_der` refused certificates whose extensions of these types do not decode.
        self.tbs().get::<T>().ok().flatten()
    }

    /// `Some(pathlen)` if basicConstraints says CA:TRUE (`pathlen` `None` when unconstrained).
    pub fn ca_pathlen(&self) -> Option<Option<u8>> {
        match self.ext::<BasicConstraints>() {
            Some((_, bc)) if bc.ca => Some(bc.path_len_constraint),
            _ => None,
        }
    }

    /// Whether basicConstraints says CA:TRUE.
    pub fn is_ca(&self) -> bool {
        self.ca_pathlen().is_some()
    }

    /// `None` if there is no keyUsage extension, else whether it includes keyCertSign.
    pub fn allows_cert_sign(&self) -> Option<bool> {
        self.ext::<KeyUsage>().map(|(_, ku)| ku.0.contains(KeyUsages::KeyCertSign))
    }

    /// Whether keyUsage allows signing CRLs (`None` without a keyUsage extension).
    pub fn allows_crl_sign(&self) -> Option<bool> {
        self.ext::<KeyUsage>().map(|(_, ku)| ku.0.contains(KeyUsages::CRLSign))
    }

    /// keyUsage names, in RFC 5280 order.
    pub fn key_usage_names(&self) -> Vec<&'static str> {
        let Some((_, ku)) = self.ext::<KeyUsage>() else {
            return Vec::new();
        };
        [
            (KeyUsages::DigitalSignature, "digitalSignature"),
            (KeyUsages::NonRepudiation, "nonRepudiation"),
            (KeyUsages::KeyEncipherment, "keyEncipherment"),
            (KeyUsages::DataEncipherment, "dataEncipherment"),
            (KeyUsages::KeyAgreement, "keyAgreement"),
            (KeyUsages::KeyCertSign, "keyCertSign"),
            (KeyUsages::CRLSign, "cRLSign"),
        ]
        .into_iter()
        .filter(|(flag, _)| ku.0.contains(*flag))
        .map(|(_, name)| name)
        .collect()
    }

    /// The extendedKeyUsage OIDs, `None` if the extension is absent.
    pub(crate) fn eku(&self) -> Option<Vec<ObjectIdentifier>> {
        self.ext::<ExtendedKeyUsage>().map(|(_, eku)| eku.0)
    }

    /// extendedKeyUsage as names (`serverAuth`, `clientAuth`, or the OID).
    pub fn eku_names(&self) -> Vec<String> {
        self.eku()
            .unwrap_or_default()
            .into_iter()
            .map(|oid| match oid {
                OID_SERVER_AUTH => "serverAuth".to_owned(),
                OID_CLIENT_AUTH => "clientAuth".to_owned(),
                OID_ANY_EKU => "anyExtendedKeyUsage".to_owned(),
                other => other.to_string(),
            })
            .collect()
    }

    /// If an EKU is present, which of serverAuth/clientAuth it lacks (anyExtendedKeyUsage allows both).
    pub(crate) fn eku_missing_for_mtls(&self) -> Option<&'static str> {
        let ekus = self.eku()?;
        if ekus.contains(&OID_ANY_EKU) {
            return None;
        }
        match (ekus.contains(&OID_SERVER_AUTH), ekus.contains(&OID_CLIENT_AUTH)) {
            (true, true) => None,
            (true, false) => Some("clientAuth"),
            (false, true) => Some("serverAuth"),
            (false, false) => Some("serverAuth and clientAuth"),
        }
    }

    /// subjectAltName entries as `DNS:...`, `URI:...`, `IP:...`, `email:...`.
    pub fn san_strings(&self) -> Vec<String> {
        let Some((_, san)) = self.ext::<SubjectAltName>() else {
            return Vec::new();
        };
        san.0
            .iter()
            .map(|name| match name {
                GeneralName::DnsName(s) => format!("DNS:{}", s.as_str()),
                GeneralName::UniformResourceIdentifier(s) => format!("URI:{}", s.as_str()),
                GeneralName::Rfc822Name(s) => format!("email:{}", s.as_str()),
                GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
                    4 => {
                        let b = ip.as_bytes();
                        format!("IP:{}.{}.{}.{}", b[0], b[1], b[2], b[3])
                    }
                    16 => {
                        let mut octets = [0u8; 16];
                        octets.copy_from_slice(ip.as_bytes());
                        format!("IP:{}", std::net::Ipv6Addr::from(octets))
                    }
                    _ => "IP:(malformed)".to_owned(),
                },
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// URI SANs (SPIFFE IDs for workload certificates).
    pub fn uri_sans(&self) -> Vec<String> {
        self.san_strings().into_iter().filter_map(|s| s.strip_prefix("URI:").map(str::to_owned)).collect()
    }

    /// Whether the subjectAltName extension is marked critical.
    pub fn san_critical(&self) -> Option<bool> {
        self.ext::<SubjectAltName>().map(|(critical, _)| critical)
    }

    /// subjectKeyIdentifier, hex with colons.
    pub fn subject_key_id(&self) -> Option<String> {
        self.ext::<SubjectKeyIdentifier>().map(|(_, ski)| hex_colon(ski.0.as_bytes()))
    }

    /// subjectKeyIdentifier, as bytes.
    pub(crate) fn subject_key_id_bytes(&self) -> Option<Vec<u8>> {
        self.ext::<SubjectKeyIdentifier>().map(|(_, ski)| ski.0.as_bytes().to_vec())
    }

    /// authorityKeyIdentifier keyIdentifier, hex with colons.
    pub fn authority_key_id(&self) -> Option<String> {
        self.ext::<AuthorityKeyIdentifier>().and_then(|(_, aki)| aki.key_identifier.map(|k| hex_colon(k.as_bytes())))
    }

    /// The certificate's public key type.
    pub fn public_key_kind(&self) -> PublicKeyKind {
        spki_kind(&self.tbs().subject_public_key_info)
    }

    /// The key type if supported.
    pub fn key_type(&self) -> Option<KeyType> {
        match self.public_key_kind() {
            PublicKeyKind::Supported(t) => Some(t),
            _ => None,
        }
    }

    /// The subjectPublicKey BIT STRING contents.
    pub fn public_key_raw(&self) -> &[u8] {
        self.tbs().subject_public_key_info.subject_public_key.raw_bytes()
    }

    /// Name of the signature algorithm.
    pub fn signature_algorithm(&self) -> String {
        match SigAlg::from_oid(self.parsed.signature_algorithm.oid) {
            Ok(alg) => alg.name().to_owned(),
            Err(unsupported) => unsupported.to_string(),
        }
    }

    /// Refuses weak or unknown signature algorithms and unusable public keys. `file` names the
    /// source in errors.
    pub(crate) fn check_algorithms(&self, file: &str) -> Result<()> {
        match SigAlg::from_oid(self.parsed.signature_algorithm.oid) {
            Ok(SigAlg::Weak(algorithm)) => {
                return Err(Error::WeakSignature { file: file.to_owned(), subject: self.subject(), algorithm })
            }
            Err(unsupported) => {
                return Err(Error::UnsupportedSignature {
                    file: file.to_owned(),
                    subject: self.subject(),
                    algorithm: unsupported.to_string(),
                })
            }
            Ok(_) => {}
        }
        match self.public_key_kind() {
            PublicKeyKind::Supported(_) => Ok(()),
            PublicKeyKind::WeakRsa { bits } => Err(Error::WeakRsaKey {
                file: file.to_owned(),
                what: self.subject(),
                holder: crate::error::KeyHolder::Certificate,
                bits,
            }),
            PublicKeyKind::Unsupported(algorithm) => {
                Err(Error::UnsupportedPublicKey { file: file.to_owned(), subject: self.subject(), algorithm })
            }
        }
    }

    /// Whether `issuer` issued this certificate: its name is this one's issuer and its key
    /// verifies the signature.
    pub fn is_issued_by(&self, issuer: &Certificate) -> bool {
        self.issuer_der() == issuer.subject_der() && self.verify_signed_by(issuer).is_ok()
    }

    /// Verifies this certificate's signature with `issuer`'s public key.
    pub fn verify_signed_by(&self, issuer: &Certificate) -> core::result::Result<(), SignatureError> {
        let key_type = issuer.key_type().ok_or(SignatureError::Unsupported)?;
        let signature = self.parsed.signature.as_bytes().ok_or(SignatureError::Invalid)?;
        verify_signature(
            self.parsed.signature_algorithm.oid,
            key_type,
            issuer.public_key_raw(),
            &self.der[self.tbs.clone()],
            signature,
        )
    }
}

/// What kind of key a SubjectPublicKeyInfo holds.
pub(crate) fn spki_kind(spki: &spki::SubjectPublicKeyInfoOwned) -> PublicKeyKind {
    let oid = spki.algorithm.oid;
    if oid == key::OID_RSA_ENCRYPTION {
        return match pkcs1::RsaPublicKey::from_der(spki.subject_public_key.raw_bytes()) {
            Ok(k) => {
                let bits = key::uint_bits(k.modulus.as_bytes());
                if bits < 2048 {
                    PublicKeyKind::WeakRsa { bits }
                } else if !bits.is_multiple_of(8) {
                    // Go, BoringSSL and ring refuse moduli of odd sizes; so does meshca.
                    PublicKeyKind::Unsupported(format!("RSA with a {bits}-bit modulus (not a multiple of 8)"))
                } else {
                    PublicKeyKind::Supported(KeyType::Rsa { bits })
                }
            }
            Err(_) => PublicKeyKind::Unsupported("malformed RSA".into()),
        };
    }
    if oid == key::OID_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        return match curve {
            Some(c) if c == key::OID_P256 => PublicKeyKind::Supported(KeyType::EcdsaP256),
            Some(c) if c == key::OID_P384 => PublicKeyKind::Supported(KeyType::EcdsaP384),
            Some(c) => PublicKeyKind::Unsupported(format!("EC {}", key::curve_name(c))),
            None => PublicKeyKind::Unsupported("EC with explicit parameters".into()),
        };
    }
    if oid == key::OID_ED25519 {
        return PublicKeyKind::Unsupported("Ed25519".into());
    }
    if oid == OID_DSA {
        return PublicKeyKind::Unsupported("DSA".into());
    }
    PublicKeyKind::Unsupported(oid.to_string())
}

/// The name of a signature algorithm with a broken hash (SHA-1, MD5, MD2), if `oid` is one.
pub(crate) fn weak_signature_name(oid: ObjectIdentifier) -> Option<&'static str> {
    match SigAlg::from_oid(oid) {
        Ok(SigAlg::Weak(name)) => Some(name),
        _ => None,
    }
}

/// Verifies `signature` over `message` made with algorithm `alg_oid` by a key of `key_type`
/// whose subjectPublicKey bits are `public_key_raw`.
pub(crate) fn verify_signature(
    alg_oid: ObjectIdentifier,
    key_type: KeyType,
    public_key_raw: &[u8],
    message: &[u8],
    signature: &[u8],
) -> core::result::Result<(), SignatureError> {
    use ring::signature as sig;
    let alg = SigAlg::from_oid(alg_oid).map_err(|_| SignatureError::Unsupported)?;
    let ring_alg: &dyn sig::VerificationAlgorithm = match (alg, key_type) {
        (SigAlg::RsaSha256, KeyType::Rsa { .. }) => &sig::RSA_PKCS1_2048_8192_SHA256,
        (SigAlg::RsaSha384, KeyType::Rsa { .. }) => &sig::RSA_PKCS1_2048_8192_SHA384,
        (SigAlg::RsaSha512, KeyType::Rsa { .. }) => &sig::RSA_PKCS1_2048_8192_SHA512,
        (SigAlg::EcdsaSha256, KeyType::EcdsaP256) => &sig::ECDSA_P256_SHA256_ASN1,
        (SigAlg::EcdsaSha384, KeyType::EcdsaP256) => &sig::ECDSA_P256_SHA384_ASN1,
        (SigAlg::EcdsaSha256, KeyType::EcdsaP384) => &sig::ECDSA_P384_SHA256_ASN1,
        (SigAlg::EcdsaSha384, KeyType::EcdsaP384) => &sig::ECDSA_P384_SHA384_ASN1,
        _ => return Err(SignatureError::Unsupported),
    };
    sig::UnparsedPublicKey::new(ring_alg, public_key_raw)
        .verify(message, signature)
        .map_err(|_| SignatureError::Invalid)
}

/// Why a signature check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature is wrong for this key.
    Invalid,
    /// The algorithm or key combination is not one meshca verifies.
    Unsupported,
}

/// The byte range of `tbsCertificate` (or `certificationRequestInfo`) inside a signed structure,
/// so signatures are checked over the exact bytes received rather than a re-encoding.
pub(crate) fn tbs_range(signed: &[u8]) -> der::Result<core::ops::Range<usize>> {
    let mut outer = SliceReader::new(signed)?;
    let header = der::Header::decode(&mut outer)?;
    let start: usize = outer.position().try_into()?;
    let mut inner = SliceReader::new(&signed[start..])?;
    let tbs = inner.tlv_bytes()?;
    let _ = header;
    Ok(start..start + tbs.len())
}

fn to_offset(d: core::time::Duration) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + d
}

/// The first value of attribute `oid` in `name`, if it is a string.
pub(crate) fn name_attr(name: &x509_cert::name::Name, oid: ObjectIdentifier) -> Option<String> {
    name_attrs(name, oid).into_iter().next()
}

/// Every value of attribute `oid` in `name` that is a string, in order.
pub(crate) fn name_attrs(name: &x509_cert::name::Name, oid: ObjectIdentifier) -> Vec<String> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == oid)
        .filter_map(|atv| {
            let any = &atv.value;
            Utf8StringRef::try_from(any)
                .map(|s| s.as_str().to_owned())
                .or_else(|_| PrintableStringRef::try_from(any).map(|s| s.as_str().to_owned()))
                .or_else(|_| TeletexStringRef::try_from(any).map(|s| s.as_str().to_owned()))
                .ok()
        })
        .collect()
}

pub(crate) fn name_string(name: &x509_cert::name::Name) -> String {
    if name.0.is_empty() {
        "(empty)".to_owned()
    } else {
        name.to_string()
    }
}

pub(crate) fn hex_colon(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::oid::AssociatedOid;

    #[test]
    fn hex_colon_formats() {
        assert_eq!(hex_colon(&[0x0a, 0xff, 0]), "0a:ff:00");
        assert_eq!(hex_colon(&[]), "");
    }

    #[test]
    fn a_repeated_extension_is_refused() {
        // An OpenSSL-made CA with its keyUsage extension appended twice.
        let pem = include_str!("../../../testdata/openssl/good/ca-cert.pem");
        let cert = Certificate::from_pem_all(pem.as_bytes(), "c").unwrap().remove(0);
        let mut parsed = cert.parsed.clone();
        let exts = parsed.tbs_certificate.extensions.as_mut().unwrap();
        let ku = exts.iter().find(|e| e.extn_id == x509_cert::ext::pkix::KeyUsage::OID).unwrap().clone();
        exts.push(ku);
        let der = parsed.to_der().unwrap();
        let e = Certificate::from_der(&der, "ca-cert.pem", 1).unwrap_err();
        assert!(e.to_string().contains("malformed or repeated keyUsage extension"), "{e}");
    }

    #[test]
    fn garbage_der_is_a_named_parse_error() {
        let e = Certificate::from_der(&[0x30, 0x03, 0x02, 0x01, 0x01], "ca-cert.pem", 1).unwrap_err();
        assert!(e.to_string().starts_with("ca-cert.pem: certificate #1 is not a valid X.509"), "{e}");
    }
}
