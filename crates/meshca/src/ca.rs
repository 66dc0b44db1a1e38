//! Issuance: a signing CA (a root, or an intermediate whose root lives elsewhere) issues
//! per-cluster intermediates, workload leaves, and certificates for CSRs.

use core::fmt;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::bundle::{Cacerts, Files};
use crate::cert::{Certificate, PublicKeyKind};
use crate::error::{Error, Result};
use crate::external::{check_external_signature, CaKey, ExternalKey, RcgenSigner};
use crate::key::{KeyAlgorithm, KeyType, PrivateKey};
use crate::pem;
use crate::profile::{self, Common, BACKDATE};
use crate::rng::Entropy;
use crate::spiffe::SpiffeId;

/// The longest workload certificate istiod issues by default (`MAX_WORKLOAD_CERT_TTL`).
pub const MAX_LEAF_TTL: Duration = Duration::days(90);

/// Parameters of a new root CA. Defaults follow Istio's tools/certs (`O=Istio, CN=Root CA`,
/// 3650 days) with an ECDSA P-256 key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RootParams {
    /// Subject CN.
    pub common_name: String,
    /// Subject O.
    pub organization: String,
    /// Lifetime.
    pub ttl: Duration,
    /// Key to generate.
    pub key: KeyAlgorithm,
    /// pathLenConstraint; `None` (Istio's choice) leaves the depth open.
    pub pathlen: Option<u8>,
}

impl Default for RootParams {
    fn default() -> Self {
        RootParams {
            common_name: "Root CA".into(),
            organization: "Istio".into(),
            ttl: Duration::days(3650),
            key: KeyAlgorithm::EcdsaP256,
            pathlen: None,
        }
    }
}

/// Parameters of a per-cluster intermediate (`cacerts`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IntermediateParams {
    /// Cluster name, written to the subject's L attribute.
    pub cluster: String,
    /// Subject O.
    pub organization: String,
    /// Subject CN.
    pub common_name: String,
    /// Lifetime (clamped to the signer's).
    pub ttl: Duration,
    /// Key to generate (ignored when signing a CSR: the CSR brings the key).
    pub key: KeyAlgorithm,
    /// pathLenConstraint; 0 (Istio's choice) lets the cluster CA sign only workloads.
    pub pathlen: u8,
}

impl IntermediateParams {
    /// Istio's defaults for `cluster`: O=Istio, CN=Intermediate CA, 365 days, P-256, pathlen 0.
    pub fn new(cluster: &str) -> Self {
        IntermediateParams {
            cluster: cluster.to_owned(),
            organization: "Istio".into(),
            common_name: "Intermediate CA".into(),
            ttl: Duration::days(365),
            key: KeyAlgorithm::EcdsaP256,
            pathlen: 0,
        }
    }
}

/// Parameters of a workload certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeafParams {
    /// The workload identity.
    pub spiffe_id: SpiffeId,
    /// Lifetime (istiod: 24 h default, 90 days at most).
    pub ttl: Duration,
    /// Key to generate.
    pub key: KeyAlgorithm,
}

impl LeafParams {
    /// A 24-hour P-256 certificate for `spiffe_id`.
    pub fn new(spiffe_id: SpiffeId) -> Self {
        LeafParams { spiffe_id, ttl: Duration::hours(24), key: KeyAlgorithm::EcdsaP256 }
    }
}

/// The longest CA lifetime meshca issues: 36500 days (100 years). Bounds every lifetime field
/// (`--days`, `ttlDays`, Python's `days=`) so date arithmetic can never overflow.
pub const MAX_CA_TTL: Duration = Duration::days(crate::bounds::CA_TTL_DAYS.1);

/// Checks a cluster name. It names a Kubernetes cluster (an Istio cluster ID, a kubeconfig
/// context, a remote secret's key), becomes the subject's L attribute and a directory name in
/// the store, so it must be a DNS label as Kubernetes names are (RFC 1123): 1 to 63 lowercase
/// letters, digits and '-', starting and ending with a letter or digit.
pub fn validate_cluster_name(name: &str) -> Result<()> {
    let shown = crate::text::printable(name, 70);
    let bad =
        |reason: &str| Error::InvalidParameter { field: "cluster".into(), reason: format!("`{shown}`: {reason}") };
    if name.is_empty() || name.len() > 63 {
        return Err(bad("a cluster name is a DNS label of 1 to 63 characters"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(bad(&format!(
            "a cluster name is a DNS label (RFC 1123: lowercase letters, digits and '-'), not {c:?}"
        )));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(bad("a cluster name is a DNS label, which starts and ends with a letter or digit"));
    }
    Ok(())
}

/// Checks a subject attribute meshca writes (CN, O): RFC 5280 Appendix A bounds both at 64
/// characters (`ub-common-name`, `ub-organization-name`), and a control character in a name
/// breaks every tool that prints it.
pub fn validate_subject_attr(field: &str, value: &str) -> Result<()> {
    let bad = |reason: String| Error::InvalidParameter { field: field.into(), reason };
    let n = value.chars().count();
    if n == 0 || n > 64 {
        return Err(bad(format!("must have 1 to 64 characters (RFC 5280 Appendix A), got {n}")));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(bad(format!("must be printable, but holds the control character {c:?}")));
    }
    Ok(())
}

/// Something issued, and whether its notAfter was cut to the signer's.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Issued<T> {
    /// What was issued.
    pub value: T,
    /// `Some(requested notAfter)` if the lifetime was clamped to the signer's notAfter.
    pub clamped_from: Option<OffsetDateTime>,
}

/// A workload certificate with its key, chain and trust bundle, as a sidecar holds them.
#[derive(Clone, Debug)]
pub struct Leaf {
    cert: Certificate,
    key: PrivateKey,
    ca_path: Vec<Certificate>,
    roots: Vec<Certificate>,
}

impl Leaf {
    /// The workload certificate.
    pub fn cert(&self) -> &Certificate {
        &self.cert
    }

    /// Its private key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// The leaf, then the issuing CA's chain up to and including the root.
    pub fn chain(&self) -> Vec<Certificate> {
        let mut v = vec![self.cert.clone()];
        v.extend(self.ca_path.iter().cloned());
        v
    }

    /// The trust bundle (`root-cert.pem`) of the issuing cluster.
    pub fn roots(&self) -> &[Certificate] {
        &self.roots
    }

    /// `cert-chain.pem`: leaf first, then the CA chain up to the root.
    pub fn cert_chain_pem(&self) -> String {
        self.chain().iter().map(Certificate::to_pem).collect()
    }

    /// `key.pem` (PKCS#8).
    pub fn key_pem(&self) -> zeroize::Zeroizing<String> {
        self.key.to_pkcs8_pem()
    }

    /// `root-cert.pem`.
    pub fn root_cert_pem(&self) -> String {
        self.roots.iter().map(Certificate::to_pem).collect()
    }

    /// The three files a sidecar holds, under the names istio-agent writes them
    /// ([`LEAF_FILES`]: `cert-chain.pem`, `key.pem`, `root-cert.pem`).
    pub fn to_files(&self) -> crate::Files {
        let mut files = crate::Files::new();
        files.insert(LEAF_FILES[0], self.cert_chain_pem().into_bytes());
        files.insert(LEAF_FILES[1], self.key_pem().as_bytes().to_vec());
        files.insert(LEAF_FILES[2], self.root_cert_pem().into_bytes());
        files
    }
}

/// The files of a workload certificate: `cert-chain.pem`, `key.pem`, `root-cert.pem`.
pub const LEAF_FILES: [&str; 3] = [crate::bundle::CERT_CHAIN, "key.pem", crate::bundle::ROOT_CERT];

/// A PKCS#10 certificate request whose self-signature verified.
#[derive(Clone)]
pub struct Csr {
    subject: String,
    locality: Option<String>,
    key_type: KeyType,
    public_key_raw: Vec<u8>,
}

impl fmt::Debug for Csr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Csr").field("subject", &self.subject).field("key_type", &self.key_type).finish()
    }
}

impl Csr {
    /// Makes a CSR for a per-cluster intermediate, signed by `key` (which stays with the caller).
    pub fn generate_pem(cluster: &str, organization: &str, key: &PrivateKey) -> Result<String> {
        Self::generate_pem_with(cluster, organization, &CaKey::Local(key.clone()))
    }

    /// [`Csr::generate_pem`] for a key that may be in a token (`meshca csr --key-uri`): the
    /// request's self-signature is checked before it is returned.
    pub fn generate_pem_with(cluster: &str, organization: &str, key: &CaKey) -> Result<String> {
        Self::generate_pem_named(cluster, organization, "Intermediate CA", key, None)
    }

    /// [`Csr::generate_pem_with`] with the subject's common name given.
    pub(crate) fn generate_pem_named(
        cluster: &str,
        organization: &str,
        common_name: &str,
        key: &CaKey,
        name_serial: Option<&str>,
    ) -> Result<String> {
        validate_cluster_name(cluster)?;
        validate_subject_attr("organization", organization)?;
        validate_subject_attr("common name", common_name)?;
        let signer = RcgenSigner::new(key);
        let req = profile::intermediate_request(cluster, organization, common_name, name_serial)?
            .serialize_request(&signer)
            .map_err(|e| signer.error("a CSR", e))?;
        let pem = pem::encode("CERTIFICATE REQUEST", req.der());
        if let CaKey::External(k) = key {
            Csr::from_pem(pem.as_bytes(), "CSR").map_err(|e| Error::ExternalKey {
                key: k.describe(),
                detail: format!("the CSR it signed does not verify ({e})"),
            })?;
        }
        Ok(pem)
    }

    /// Reads the first `CERTIFICATE REQUEST` (or `NEW CERTIFICATE REQUEST`) block and checks its
    /// signature and key. `file` names it in errors.
    pub fn from_pem(data: &[u8], file: &str) -> Result<Self> {
        let blocks = pem::decode_all(file, "CERTIFICATE REQUEST", data)?;
        let block = blocks
            .iter()
            .find(|b| b.label == "CERTIFICATE REQUEST" || b.label == "NEW CERTIFICATE REQUEST")
            .ok_or_else(|| Error::EmptyPem { file: file.to_owned(), expected: "CERTIFICATE REQUEST" })?;
        Self::from_der(&block.der, file)
    }

    /// Parses a DER CSR and verifies its self-signature (proof that the requester holds the key).
    pub fn from_der(der_bytes: &[u8], file: &str) -> Result<Self> {
        use der::Decode;
        let bad = |detail: String| Error::Csr { file: file.to_owned(), detail };
        let req = x509_cert::request::CertReq::from_der(der_bytes)
            .map_err(|e| bad(format!("not a PKCS#10 certificate request ({e})")))?;
        let spki = &req.info.public_key;
        let kind = crate::cert::spki_kind(spki);
        let key_type = match kind {
            PublicKeyKind::Supported(t) => t,
            PublicKeyKind::WeakRsa { bits } => {
                return Err(Error::WeakRsaKey {
                    file: file.to_owned(),
                    what: "the CSR's key".into(),
                    holder: crate::error::KeyHolder::Csr,
                    bits,
                })
            }
            PublicKeyKind::Unsupported(alg) => {
                return Err(bad(format!(
                    "the CSR's {alg} key is not usable by istiod; use ECDSA P-256/P-384 or RSA >= 2048"
                )))
            }
        };
        if let Some(alg) = crate::cert::weak_signature_name(req.algorithm.oid) {
            return Err(bad(format!(
                "the CSR is signed with {alg}, which meshca refuses (a broken hash); re-create it with SHA-256 \
                 (`openssl req -sha256`, or `meshca csr`)"
            )));
        }
        let raw = spki.subject_public_key.raw_bytes().to_vec();
        let tbs = crate::cert::tbs_range(der_bytes).map_err(|e| bad(e.to_string()))?;
        let sig = req.signature.as_bytes().ok_or_else(|| bad("malformed signature".into()))?;
        crate::cert::verify_signature(req.algorithm.oid, key_type, &raw, &der_bytes[tbs], sig).map_err(|_| {
            bad("the CSR's signature does not verify with its own public key; it was altered or is corrupt".into())
        })?;
        let subject = crate::cert::name_string(&req.info.subject);
        let localities = crate::cert::name_attrs(&req.info.subject, crate::cert::OID_L);
        if localities.len() > 1 {
            return Err(bad(format!(
                "the CSR's subject names {} localities (L); meshca reads the cluster from L, so it must be one",
                localities.len()
            )));
        }
        let locality = localities.into_iter().next();
        Ok(Csr { subject, locality, key_type, public_key_raw: raw })
    }

    /// The subject the requester asked for (informational: the profile decides the real one).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The cluster the requester names (subject L, as meshca's and Istio's CSRs carry it).
    pub fn requested_cluster(&self) -> Option<&str> {
        self.locality.as_deref()
    }

    /// The requested key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }
}

/// The public half of a CSR, in the form rcgen signs over.
struct RequestedKey<'a> {
    raw: &'a [u8],
    alg: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for RequestedKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.raw
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

/// A CA certificate signed for a CSR: the cluster combines it with its own key.
#[derive(Clone, Debug)]
pub struct SignedCa {
    chain: Vec<Certificate>,
    roots: Vec<Certificate>,
}

impl SignedCa {
    /// The issued CA certificate.
    pub fn cert(&self) -> &Certificate {
        &self.chain[0]
    }

    /// The issued certificate, then the signer's chain up to the root (`cert-chain.pem`).
    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    /// The trust bundle (`root-cert.pem`).
    pub fn roots(&self) -> &[Certificate] {
        &self.roots
    }

    /// The files of a `cacerts` bundle except `ca-key.pem`, which only the cluster holds.
    pub fn to_files(&self) -> Files {
        let pem_of = |c: &[Certificate]| c.iter().map(Certificate::to_pem).collect::<String>().into_bytes();
        let mut files = Files::new();
        files.insert(crate::bundle::CA_CERT, self.chain[0].to_pem().into_bytes());
        files.insert(crate::bundle::CERT_CHAIN, pem_of(&self.chain));
        files.insert(crate::bundle::ROOT_CERT, pem_of(&self.roots));
        files
    }

    /// Joins the cluster's key to make a complete, validated bundle.
    pub fn into_cacerts(self, key: PrivateKey, now: OffsetDateTime) -> Result<Cacerts> {
        Cacerts::from_parts(key, self.chain, self.roots, now)
    }
}

/// A CA that signs: the `ca-cert.pem`/`ca-key.pem` of a valid bundle.
#[derive(Clone, Debug)]
pub struct SigningCa {
    bundle: Cacerts,
}

impl SigningCa {
    /// Uses a validated bundle as a signer.
    pub fn new(bundle: Cacerts) -> Self {
        SigningCa { bundle }
    }

    /// Parses and validates a signer from files (either layout) at `now`.
    pub fn from_files(files: &Files, now: OffsetDateTime) -> Result<Self> {
        Cacerts::from_files(files, now).map(Self::new)
    }

    /// Generates a self-signed root. The returned signer's files are the seed's management
    /// Secret: ca-cert, cert-chain and root-cert all hold the root.
    pub fn generate_root(params: &RootParams, rng: &mut dyn Entropy, now: OffsetDateTime) -> Result<Self> {
        check_ttl("ttl", params.ttl)?;
        validate_subject_attr("common name", &params.common_name)?;
        validate_subject_attr("organization", &params.organization)?;
        let key = PrivateKey::generate(params.key, rng)?;
        let common = Common { serial: random_serial(rng), not_before: now - BACKDATE, not_after: now + params.ttl };
        let cert = profile::root(common, &params.common_name, &params.organization, params.pathlen)
            .self_signed(key.pair())
            .map_err(|e| Error::Issuance { what: "a root", detail: e.to_string() })?;
        let cert = Certificate::from_der(cert.der(), "root", 1)?;
        let bundle = Cacerts::from_parts(key, vec![cert.clone()], vec![cert], now)?;
        Ok(SigningCa { bundle })
    }

    /// Generates a self-signed root whose key is already in a token: `key` signs the root
    /// certificate (and, later, everything the root issues). `params.key` is not used; the root
    /// carries `key`'s type. The returned signer's files hold no key.
    pub fn generate_root_with_key(
        params: &RootParams,
        key: Arc<dyn ExternalKey>,
        rng: &mut dyn Entropy,
        now: OffsetDateTime,
    ) -> Result<Self> {
        check_ttl("ttl", params.ttl)?;
        validate_subject_attr("common name", &params.common_name)?;
        validate_subject_attr("organization", &params.organization)?;
        let ca_key = CaKey::External(key);
        let common = Common { serial: random_serial(rng), not_before: now - BACKDATE, not_after: now + params.ttl };
        let signer = RcgenSigner::new(&ca_key);
        let cert = profile::root(common, &params.common_name, &params.organization, params.pathlen)
            .self_signed(&signer)
            .map_err(|e| signer.error("a root", e))?;
        let cert = Certificate::from_der(cert.der(), "root", 1)?;
        check_external_signature(&ca_key, &cert, &cert)?;
        let bundle = Cacerts::from_parts(ca_key, vec![cert.clone()], vec![cert], now)?;
        Ok(SigningCa { bundle })
    }

    /// Reads a signer whose key is in a token (see [`Cacerts::from_public_files`]).
    pub fn from_public_files(files: &Files, key: Arc<dyn ExternalKey>, now: OffsetDateTime) -> Result<Self> {
        Cacerts::from_public_files(files, key, now).map(Self::new)
    }

    /// The signer's bundle.
    pub fn bundle(&self) -> &Cacerts {
        &self.bundle
    }

    /// Consumes the signer, returning its bundle.
    pub fn into_bundle(self) -> Cacerts {
        self.bundle
    }

    /// Issues a per-cluster intermediate with a new key and returns it as a complete `cacerts`
    /// bundle: ca-cert, its key, the chain up to the root, and the signer's trust bundle.
    pub fn issue_intermediate(
        &self,
        params: &IntermediateParams,
        rng: &mut dyn Entropy,
        now: OffsetDateTime,
    ) -> Result<Issued<Cacerts>> {
        self.check_can_issue_ca(now)?;
        let key = PrivateKey::generate(params.key, rng)?;
        let signed = self.sign_ca(key.public_key_raw(), key.key_type(), params, rng, now)?;
        let cert = signed.value.chain[0].clone();
        let bundle = Cacerts::issued(cert, key, &self.bundle, now);
        Ok(Issued { value: bundle, clamped_from: signed.clamped_from })
    }

    /// Signs a per-cluster intermediate for `csr`; the profile (from `params`), not the CSR,
    /// decides subject and extensions. The cluster's key never leaves the cluster.
    pub fn sign_intermediate_csr(
        &self,
        csr: &Csr,
        params: &IntermediateParams,
        rng: &mut dyn Entropy,
        now: OffsetDateTime,
    ) -> Result<Issued<SignedCa>> {
        self.check_can_issue_ca(now)?;
        self.sign_ca(&csr.public_key_raw, csr.key_type, params, rng, now)
    }

    fn sign_ca(
        &self,
        public_key_raw: &[u8],
        key_type: KeyType,
        params: &IntermediateParams,
        rng: &mut dyn Entropy,
        now: OffsetDateTime,
    ) -> Result<Issued<SignedCa>> {
        validate_cluster_name(&params.cluster)?;
        check_ttl("ttl", params.ttl)?;
        validate_subject_attr("common name", &params.common_name)?;
        validate_subject_attr("organization", &params.organization)?;
        let (common, clamped_from) = self.window(params.ttl, rng, now);
        let p =
            profile::intermediate(common, &params.cluster, &params.organization, &params.common_name, params.pathlen)?;
        let cert = self.sign(&p, public_key_raw, key_type, "an intermediate")?;
        let mut chain = vec![cert];
        chain.extend(self.bundle.path().iter().cloned());
        Ok(Issued { value: SignedCa { chain, roots: self.bundle.roots().to_vec() }, clamped_from })
    }

    /// Issues a workload certificate as istiod would, with a new key.
    pub fn issue_leaf(&self, params: &LeafParams, rng: &mut dyn Entropy, now: OffsetDateTime) -> Result<Issued<Leaf>> {
        self.check_valid_at(now)?;
        if params.ttl <= Duration::ZERO || params.ttl > MAX_LEAF_TTL {
            return Err(Error::InvalidParameter {
                field: "ttl".into(),
                reason: format!(
                    "a workload certificate lives more than 0 and at most 90 days (istiod's MAX_WORKLOAD_CERT_TTL), got {}",
                    crate::time_fmt::human_duration(params.ttl)
                ),
            });
        }
        let key = PrivateKey::generate(params.key, rng)?;
        let (common, clamped_from) = self.window(params.ttl, rng, now);
        let p = profile::leaf(common, &params.spiffe_id)?;
        let cert = self.sign(&p, key.public_key_raw(), key.key_type(), "a workload certificate")?;
        let leaf = Leaf { cert, key, ca_path: self.bundle.path().to_vec(), roots: self.bundle.roots().to_vec() };
        Ok(Issued { value: leaf, clamped_from })
    }

    /// An X509-SVID for one of meshca's own services (`spiffe://<trust_domain>/<path>`, e.g.
    /// the bundle endpoint's), with the workload profile: empty subject, the SPIFFE ID as the
    /// critical URI SAN, serverAuth and clientAuth, `ttl` (clamped to this CA).
    pub fn issue_service_svid(
        &self,
        trust_domain: &str,
        path: &str,
        ttl: Duration,
        rng: &mut dyn Entropy,
        now: OffsetDateTime,
    ) -> Result<Issued<Leaf>> {
        self.check_valid_at(now)?;
        let id = crate::spiffe::service_id(trust_domain, path)?;
        if ttl <= Duration::ZERO || ttl > MAX_LEAF_TTL {
            return Err(Error::InvalidParameter {
                field: "ttl".into(),
                reason: "more than 0 and at most 90 days".into(),
            });
        }
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256, rng)?;
        let (common, clamped_from) = self.window(ttl, rng, now);
        let p = profile::leaf_for_uri(common, &id, &[])?;
        let cert = self.sign(&p, key.public_key_raw(), key.key_type(), "a service SVID")?;
        let leaf = Leaf { cert, key, ca_path: self.bundle.path().to_vec(), roots: self.bundle.roots().to_vec() };
        Ok(Issued { value: leaf, clamped_from })
    }

    pub(crate) fn sign(
        &self,
        params: &rcgen::CertificateParams,
        public_key_raw: &[u8],
        key_type: KeyType,
        what: &'static str,
    ) -> Result<Certificate> {
        let ca = self.bundle.ca_cert();
        let signer = RcgenSigner::new(self.bundle.ca_key());
        let issuer = rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(ca.der()), &signer)
            .map_err(|_| Error::IssuerNameNotRepresentable { subject: ca.subject() })?;
        let subject_key = RequestedKey { raw: public_key_raw, alg: key_type.rcgen_alg() };
        let issued = params.signed_by(&subject_key, &issuer).map_err(|e| signer.error(what, e))?;
        let cert = Certificate::from_der(issued.der(), "issued certificate", 1)?;
        check_external_signature(self.bundle.ca_key(), &cert, ca)?;
        // rcgen rebuilds the issuer name from parsed attributes; verifiers link certificates by
        // exact name bytes, so refuse rather than hand out a certificate that would not chain.
        if cert.issuer_der() != ca.subject_der() {
            return Err(Error::IssuerNameNotRepresentable { subject: ca.subject() });
        }
        Ok(cert)
    }

    /// Serial and validity for a new certificate: backdated notBefore, notAfter clamped to the
    /// earliest notAfter on the signer's path.
    pub(crate) fn window(
        &self,
        ttl: Duration,
        rng: &mut dyn Entropy,
        now: OffsetDateTime,
    ) -> (Common, Option<OffsetDateTime>) {
        let requested = now + ttl;
        let limit = self.bundle.not_after();
        let (not_after, clamped_from) = if requested > limit { (limit, Some(requested)) } else { (requested, None) };
        let not_before = (now - BACKDATE).max(self.bundle.ca_cert().not_before());
        (Common { serial: random_serial(rng), not_before, not_after }, clamped_from)
    }

    pub(crate) fn check_valid_at(&self, now: OffsetDateTime) -> Result<()> {
        let ca = self.bundle.ca_cert();
        let not_before = self.bundle.path().iter().map(Certificate::not_before).max().unwrap_or(ca.not_before());
        let not_after = self.bundle.not_after();
        if now < not_before || now >= not_after {
            return Err(Error::SignerNotValid { subject: ca.subject(), now, not_before, not_after });
        }
        Ok(())
    }

    /// Whether a CA may be issued below this signer: every pathLenConstraint on the signer's
    /// path must leave room for one more CA (RFC 5280 4.2.1.9).
    fn check_can_issue_ca(&self, now: OffsetDateTime) -> Result<()> {
        self.check_valid_at(now)?;
        let path = self.bundle.path();
        for (depth, c) in path.iter().enumerate() {
            if let Some(Some(p)) = c.ca_pathlen() {
                let below = 1 + path[..depth].iter().filter(|b| !b.is_self_issued()).count();
                if usize::from(p) < below {
                    return Err(Error::SignerCannotIssueCa {
                        subject: self.bundle.ca_cert().subject(),
                        pathlen: p,
                        constrained: c.subject(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// A CA lifetime: positive and at most [`MAX_CA_TTL`].
pub(crate) fn check_ttl(field: &str, ttl: Duration) -> Result<()> {
    if ttl <= Duration::ZERO || ttl > MAX_CA_TTL {
        return Err(Error::InvalidParameter {
            field: field.into(),
            reason: format!(
                "a CA lifetime is more than 0 and at most 36500 days, got {}",
                crate::time_fmt::human_duration(ttl)
            ),
        });
    }
    Ok(())
}

/// 126 random bits in 16 octets, positive as a DER INTEGER (RFC 5280 4.1.2.2; istiod uses 128).
fn random_serial(rng: &mut dyn Entropy) -> rcgen::SerialNumber {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x40;
    rcgen::SerialNumber::from_slice(&bytes)
}
