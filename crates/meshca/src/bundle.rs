//! The Istio `cacerts` bundle: parsed from a map of file name to bytes, validated at parse time
//! (parse, don't validate: a [`Cacerts`] value is known-good), serialized to either layout.

use std::collections::BTreeMap;
use std::sync::Arc;

use core::fmt;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::cert::Certificate;
use crate::chain::{Sources, TrustChain, ISTIO_SOURCES};
use crate::error::{Error, Result};
use crate::external::{CaKey, ExternalKey};
use crate::key::PrivateKey;

/// `ca-cert.pem`: the signing CA certificate.
pub const CA_CERT: &str = "ca-cert.pem";
/// `ca-key.pem`: the signing CA's private key.
pub const CA_KEY: &str = "ca-key.pem";
/// `cert-chain.pem`: ca-cert first, then each issuer up to the root.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// `root-cert.pem`: the trusted root(s).
pub const ROOT_CERT: &str = "root-cert.pem";
/// cert-manager layout: certificate (and chain).
pub const TLS_CRT: &str = "tls.crt";
/// cert-manager layout: private key.
pub const TLS_KEY: &str = "tls.key";
/// cert-manager layout: trusted CA(s).
pub const CA_CRT: &str = "ca.crt";
/// The fleet's CRLs, beside a bundle (istiod reads it from the `cacerts` mount; see
/// docs/istiod-crl.md). Not part of [`Cacerts`]: checked with [`crate::check_crl_set`].
pub const CA_CRL: &str = "ca-crl.pem";

const ISTIO_FILES: [&str; 4] = [CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT];
const TLS_FILES: [&str; 3] = [TLS_CRT, TLS_KEY, CA_CRT];

/// Which file names a bundle uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Layout {
    /// `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`, `root-cert.pem` (Istio's plug-in CA layout).
    #[default]
    Istio,
    /// `tls.crt`, `tls.key`, `ca.crt` (cert-manager style, istiod >= 1.15).
    Tls,
}

impl Layout {
    /// The file names this layout uses.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            Layout::Istio => &ISTIO_FILES,
            Layout::Tls => &TLS_FILES,
        }
    }

    /// `istio` or `tls`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Istio => "istio",
            Layout::Tls => "tls",
        }
    }
}

impl core::str::FromStr for Layout {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "istio" => Ok(Layout::Istio),
            "tls" => Ok(Layout::Tls),
            other => Err(Error::InvalidParameter {
                field: "layout".into(),
                reason: format!("unknown layout `{other}`; choose `istio` or `tls`"),
            }),
        }
    }
}

/// File name -> contents, as in a Secret's `data` or a directory. Contents are zeroized on drop
/// (the key file is among them) and `Debug` shows only names and sizes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Files(BTreeMap<String, Zeroizing<Vec<u8>>>);

impl Files {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a file.
    pub fn insert(&mut self, name: impl Into<String>, data: impl Into<Vec<u8>>) {
        self.0.insert(name.into(), Zeroizing::new(data.into()));
    }

    /// A file's contents.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(|v| v.as_slice())
    }

    /// Whether a file is present.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// File names and contents, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no files.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn names(&self) -> String {
        if self.0.is_empty() {
            "no files".into()
        } else {
            crate::text::list_bounded(self.0.keys(), 20)
        }
    }
}

impl<K: Into<String>, V: Into<Vec<u8>>> FromIterator<(K, V)> for Files {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut files = Files::new();
        for (k, v) in iter {
            files.insert(k, v);
        }
        files
    }
}

impl fmt::Debug for Files {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter().map(|(k, v)| (k, format!("{} bytes", v.len())))).finish()
    }
}

/// Something worth telling the user about a bundle that is nonetheless valid.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// A certificate's notAfter is later than its issuer's (Istio's tools/certs makes these: root
    /// and intermediate both get 3650 days, seconds apart). Harmless until the issuer expires.
    OutlivesIssuer {
        /// Subject of the certificate.
        subject: String,
        /// Subject of its issuer.
        issuer: String,
    },
    /// A root in the trust bundle that this bundle's chain does not use has expired.
    ExpiredExtraRoot {
        /// Subject of the root.
        subject: String,
    },
    /// A key identifier RFC 5280 requires is absent (4.2.1.1, 4.2.1.2).
    MissingKeyIdentifier {
        /// Subject of the certificate.
        subject: String,
        /// `subjectKeyIdentifier` or `authorityKeyIdentifier`.
        which: &'static str,
    },
    /// A key identifier is marked critical (RFC 5280: MUST be non-critical).
    CriticalKeyIdentifier {
        /// Subject of the certificate.
        subject: String,
        /// `subjectKeyIdentifier` or `authorityKeyIdentifier`.
        which: &'static str,
    },
    /// An authorityKeyIdentifier without keyIdentifier, or with issuer and serial (CA/Browser
    /// Forum Baseline Requirements 7.1.2 forbid both).
    AuthorityKeyIdForm {
        /// Subject of the certificate.
        subject: String,
    },
    /// policyConstraints is not critical (RFC 5280 4.2.1.11: conforming CAs MUST mark it).
    NonCriticalPolicyConstraints {
        /// Subject of the certificate.
        subject: String,
    },
    /// A workload certificate without extendedKeyUsage (istiod's carry serverAuth+clientAuth).
    LeafWithoutEku {
        /// Subject (or SPIFFE ID) of the leaf.
        subject: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::OutlivesIssuer { subject, issuer } => write!(
                f,
                "{subject} expires after its issuer {issuer}; workload certificates stop verifying when the \
                 issuer expires, so plan rotation by the issuer's date"
            ),
            Warning::ExpiredExtraRoot { subject } => {
                write!(f, "root-cert.pem holds an expired root {subject}; remove it from the trust bundle")
            }
            Warning::MissingKeyIdentifier { subject, which } => {
                write!(f, "{subject} has no {which} (RFC 5280 requires one); chain building is slower and less certain")
            }
            Warning::CriticalKeyIdentifier { subject, which } => write!(
                f,
                "{subject} marks {which} critical (RFC 5280: MUST be non-critical); rustls-webpki (ztunnel) refuses \
                 such a certificate anywhere but as a trust anchor"
            ),
            Warning::AuthorityKeyIdForm { subject } => write!(
                f,
                "{subject}'s authorityKeyIdentifier lacks keyIdentifier or carries issuer and serial, which the \
                 CA/Browser Forum forbids"
            ),
            Warning::NonCriticalPolicyConstraints { subject } => {
                write!(f, "{subject} has a non-critical policyConstraints (RFC 5280 4.2.1.11: MUST be critical)")
            }
            Warning::LeafWithoutEku { subject } => write!(
                f,
                "the workload certificate {subject} has no extendedKeyUsage; istiod's carry serverAuth and clientAuth"
            ),
        }
    }
}

/// A validated Istio CA bundle: a signing CA certificate with its key, the chain from it to a
/// root, and the trusted roots. Also the shape of a signing CA (for a root, all four files are the
/// root, as in the seed's management Secret).
#[derive(Clone)]
pub struct Cacerts {
    ca_key: CaKey,
    /// ca-cert first, up to and including the root the chain reaches (completed from the roots).
    trust: TrustChain,
    layout: Layout,
}

impl fmt::Debug for Cacerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cacerts")
            .field("ca_cert", self.ca_cert())
            .field("ca_key", &self.ca_key)
            .field("chain_len", &self.trust.cert_chain().len())
            .field("root", &self.root().subject())
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// Parses a trust bundle on its own (a passive root, or the roots of a CA about to be trusted):
/// every certificate must be a self-signed CA, with accepted algorithms, valid at `now`. `file`
/// names it in errors.
pub fn parse_roots(pem: &[u8], file: &str, now: OffsetDateTime) -> Result<Vec<Certificate>> {
    let roots = Certificate::from_pem_all(pem, file)?;
    for r in &roots {
        r.check_algorithms(file)?;
        if !r.is_self_signed() {
            return Err(Error::NotARoot { file: file.into(), subject: r.subject() });
        }
        if !r.is_ca() {
            return Err(Error::NotCa { file: file.into(), subject: r.subject() });
        }
        crate::rfc5280::check_critical_extensions(r, file)?;
        r.check_validity(file, now)?;
    }
    Ok(roots)
}

impl Cacerts {
    /// Parses and validates a bundle in either layout at time `now`. Every rule failure is its
    /// own [`Error`] variant naming the file and certificate.
    pub fn from_files(files: &Files, now: OffsetDateTime) -> Result<Self> {
        let layout = detect_layout(files)?;
        let get = |name: &str| files.get(name).unwrap_or_default();
        match layout {
            Layout::Istio => {
                let ca_cert = one_ca_cert(get(CA_CERT))?;
                let ca_key = PrivateKey::from_pem(get(CA_KEY), CA_KEY)?;
                let (chain, roots) = chain_and_roots(&ca_cert, get(CERT_CHAIN), get(ROOT_CERT))?;
                Self::assemble(ca_cert, ca_key.into(), chain, roots, Layout::Istio, now)
            }
            Layout::Tls => {
                let mut chain = Certificate::from_pem_all(get(TLS_CRT), TLS_CRT)?;
                let ca_key = PrivateKey::from_pem(get(TLS_KEY), TLS_KEY)?;
                let roots = Certificate::from_pem_all(get(CA_CRT), CA_CRT)?;
                // istiod: chain = tls.crt + ca.crt; the roots complete it below.
                chain.retain(|c| !roots.contains(c));
                if chain.is_empty() {
                    return Err(Error::ChainOrder {
                        file: TLS_CRT.into(),
                        found: "only certificates that are also in ca.crt".into(),
                        expected: "the signing CA certificate".into(),
                    });
                }
                let ca_cert = chain[0].clone();
                Self::assemble(ca_cert, ca_key.into(), chain, roots, Layout::Tls, now)
            }
        }
    }

    /// Reads a signing CA whose key is in a token: `ca-cert.pem`, `cert-chain.pem` and
    /// `root-cert.pem`, validated exactly as [`Cacerts::from_files`] does, with `key` checked to
    /// hold `ca-cert.pem`'s public key. A `ca-key.pem` beside them is refused: a CA has one key,
    /// and a copy on disk would defeat the token.
    pub fn from_public_files(files: &Files, key: Arc<dyn ExternalKey>, now: OffsetDateTime) -> Result<Self> {
        if files.contains(CA_KEY) || files.contains(TLS_KEY) {
            return Err(Error::ExternalKeyBundle {
                file: CA_KEY.into(),
                detail: format!(
                    "present, but the CA key is {}; remove the key file (or use the key file and no token)",
                    key.describe()
                ),
            });
        }
        let get = |name: &'static str| {
            files.get(name).ok_or_else(|| Error::MissingFile {
                missing: name.into(),
                present: files.names(),
                expected: "ca-cert.pem, cert-chain.pem, root-cert.pem (the key is in the token)",
            })
        };
        let ca_cert = one_ca_cert(get(CA_CERT)?)?;
        let (chain, roots) = chain_and_roots(&ca_cert, get(CERT_CHAIN)?, get(ROOT_CERT)?)?;
        Self::assemble(ca_cert, CaKey::External(key), chain, roots, Layout::Istio, now)
    }

    /// Builds a bundle from parts (e.g. a CSR-signed certificate plus the cluster's own key) and
    /// validates it exactly as [`Cacerts::from_files`] does. `chain` starts with `ca_cert`.
    pub fn from_parts(
        ca_key: impl Into<CaKey>,
        chain: Vec<Certificate>,
        roots: Vec<Certificate>,
        now: OffsetDateTime,
    ) -> Result<Self> {
        let ca_key = ca_key.into();
        let ca_cert = chain
            .first()
            .cloned()
            .ok_or_else(|| Error::EmptyPem { file: CERT_CHAIN.into(), expected: "CERTIFICATE" })?;
        if roots.is_empty() {
            return Err(Error::EmptyPem { file: ROOT_CERT.into(), expected: "CERTIFICATE" });
        }
        Self::assemble(ca_cert, ca_key, chain, roots, Layout::Istio, now)
    }

    /// A bundle for a CA certificate this crate just issued under `signer`, built without
    /// re-checking what is already known: the signer is a validated bundle, the issuer name and
    /// path length were checked at issuance, and the certificate carries `key`'s public key.
    /// Debug builds (and so every test) still run the full validation and compare.
    pub(crate) fn issued(ca_cert: Certificate, key: PrivateKey, signer: &Cacerts, now: OffsetDateTime) -> Self {
        let bundle = Cacerts {
            ca_key: CaKey::Local(key),
            trust: TrustChain::extended(ca_cert, &signer.trust),
            layout: Layout::Istio,
        };
        debug_assert_eq!(
            Cacerts::from_parts(bundle.ca_key.clone(), bundle.path().to_vec(), bundle.roots().to_vec(), now)
                .map(|full| (full.path().to_vec(), full.warnings().to_vec())),
            Ok((bundle.path().to_vec(), bundle.warnings().to_vec())),
            "an issued bundle must pass full validation"
        );
        bundle
    }

    fn assemble(
        ca_cert: Certificate,
        ca_key: CaKey,
        chain: Vec<Certificate>,
        roots: Vec<Certificate>,
        layout: Layout,
        now: OffsetDateTime,
    ) -> Result<Self> {
        let src = match layout {
            Layout::Istio => ISTIO_SOURCES,
            Layout::Tls => Sources { cert: TLS_CRT, chain: TLS_CRT, roots: CA_CRT },
        };
        let key_file = match layout {
            Layout::Istio => CA_KEY,
            Layout::Tls => TLS_KEY,
        };
        // The key is checked against a certificate whose algorithms are known to be acceptable.
        ca_cert.check_algorithms(src.cert)?;
        if ca_cert.public_key_raw() != ca_key.public_key_raw() {
            return Err(Error::KeyMismatch {
                key_file: ca_key.external().unwrap_or_else(|| key_file.into()),
                cert_file: src.cert.into(),
                subject: ca_cert.subject(),
            });
        }
        let trust = TrustChain::verify(chain, roots, src, now)?;
        Ok(Cacerts { ca_key, trust, layout })
    }

    /// The signing CA certificate (`ca-cert.pem`).
    pub fn ca_cert(&self) -> &Certificate {
        self.trust.first()
    }

    /// The signing CA's private key: `ca-key.pem`, or a key in a token.
    pub fn ca_key(&self) -> &CaKey {
        &self.ca_key
    }

    /// The public part: the chain verified up to its root.
    pub fn trust_chain(&self) -> &TrustChain {
        &self.trust
    }

    /// ca-cert, each issuer, and the root the chain reaches.
    pub fn path(&self) -> &[Certificate] {
        self.trust.path()
    }

    /// `cert-chain.pem` as read (it may leave out the root).
    pub fn cert_chain(&self) -> &[Certificate] {
        self.trust.cert_chain()
    }

    /// The root this bundle's chain reaches.
    pub fn root(&self) -> &Certificate {
        self.trust.root()
    }

    /// Every root in `root-cert.pem` (more than one during a root rotation).
    pub fn roots(&self) -> &[Certificate] {
        self.trust.roots()
    }

    /// Whether `cert` is one of this bundle's trusted roots.
    pub fn trusts_root(&self, cert: &Certificate) -> bool {
        self.trust.trusts_root(cert)
    }

    /// The layout the bundle was read in (or [`Layout::Istio`] for issued bundles).
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Non-fatal findings.
    pub fn warnings(&self) -> &[Warning] {
        self.trust.warnings()
    }

    /// The earliest notAfter on the path: after it, nothing this CA signs verifies.
    pub fn not_after(&self) -> OffsetDateTime {
        self.trust.not_after()
    }

    /// The SHA-256 fingerprint of the root the chain reaches.
    pub fn root_fingerprint(&self) -> String {
        self.trust.root_fingerprint()
    }

    /// The bundle as files in `layout`. `cert-chain.pem` always runs up to and including the root
    /// (Istio's recommended form); `tls.crt` holds the chain without the root, `ca.crt` the roots.
    pub fn to_files(&self, layout: Layout) -> Files {
        let pem_of = |certs: &[Certificate]| certs.iter().map(Certificate::to_pem).collect::<String>().into_bytes();
        let mut files = Files::new();
        // A key in a token has no file: only the public files are written.
        let key = self.ca_key.local().map(PrivateKey::to_pkcs8_pem);
        match layout {
            Layout::Istio => {
                files.insert(CA_CERT, self.ca_cert().to_pem().into_bytes());
                if let Some(key) = &key {
                    files.insert(CA_KEY, key.as_bytes().to_vec());
                }
                files.insert(CERT_CHAIN, pem_of(self.path()));
                files.insert(ROOT_CERT, pem_of(self.roots()));
            }
            Layout::Tls => {
                let path = self.path();
                let without_root = &path[..path.len() - 1];
                let chain = if without_root.is_empty() { path } else { without_root };
                files.insert(TLS_CRT, pem_of(chain));
                if let Some(key) = &key {
                    files.insert(TLS_KEY, key.as_bytes().to_vec());
                }
                files.insert(CA_CRT, pem_of(self.roots()));
            }
        }
        files
    }
}

/// `ca-cert.pem`: exactly one certificate (the chain belongs in cert-chain.pem).
fn one_ca_cert(pem: &[u8]) -> Result<Certificate> {
    let ca_certs = Certificate::from_pem_all(pem, CA_CERT)?;
    if ca_certs.len() > 1 {
        return Err(Error::TooManyCertificates { file: CA_CERT.into(), count: ca_certs.len(), chain_file: CERT_CHAIN });
    }
    Ok(ca_certs.into_iter().next().unwrap_or_else(|| unreachable!("decode_all is non-empty")))
}

/// `cert-chain.pem` (starting with `ca_cert`) and `root-cert.pem`.
fn chain_and_roots(
    ca_cert: &Certificate,
    chain_pem: &[u8],
    roots_pem: &[u8],
) -> Result<(Vec<Certificate>, Vec<Certificate>)> {
    let chain = Certificate::from_pem_all(chain_pem, CERT_CHAIN)?;
    let roots = Certificate::from_pem_all(roots_pem, ROOT_CERT)?;
    if chain[0] != *ca_cert {
        return Err(Error::ChainOrder {
            file: CERT_CHAIN.into(),
            found: chain[0].subject(),
            expected: ca_cert.subject(),
        });
    }
    Ok((chain, roots))
}

fn detect_layout(files: &Files) -> Result<Layout> {
    let present_istio = ISTIO_FILES.iter().filter(|f| files.contains(f)).count();
    let present_tls = TLS_FILES.iter().filter(|f| files.contains(f)).count();
    let (layout, names, expected) = if present_istio > 0 {
        // istiod prefers the classic layout when ca-cert.pem is there.
        (Layout::Istio, &ISTIO_FILES[..], "ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem")
    } else if present_tls > 0 {
        (Layout::Tls, &TLS_FILES[..], "tls.crt, tls.key, ca.crt")
    } else {
        return Err(Error::NoBundle { present: files.names() });
    };
    if let Some(missing) = names.iter().find(|f| !files.contains(f)) {
        return Err(Error::MissingFile { missing: (*missing).into(), present: files.names(), expected });
    }
    Ok(layout)
}
