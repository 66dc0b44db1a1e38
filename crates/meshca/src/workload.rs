//! Signing a workload's own certificate request, as a Kubernetes signer does for istiod in RA
//! mode (a `CertificateSigningRequest`) or for the kubelet (a `PodCertificateRequest`).
//!
//! The requester's approval (istiod approves its own requests) says nothing the signer can
//! rely on, so every rule is checked again here, on the request's bytes: its self-signature,
//! its key, exactly one URI SAN that is a SPIFFE workload ID in the trust domain, no other
//! names unless allowed, no CA, the usages of a workload certificate, and, where the caller
//! knows them, the requester and the pod's identity. A request that breaks a rule is refused
//! with a [`Refusal`] naming the rule; what meshca issues is its own profile (istiod's leaf:
//! empty subject, critical URI SAN, digitalSignature and keyEncipherment, serverAuth and
//! clientAuth, CA:FALSE), never the extensions the request carries.

use core::fmt;

use der::{Decode, Encode};
use time::{Duration, OffsetDateTime};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName};

use crate::ca::SigningCa;
use crate::cert::Certificate;
use crate::error::Result;
use crate::key::KeyType;
use crate::rng::Entropy;
use crate::spiffe::SpiffeId;
use crate::PublicKeyKind;

/// The largest request read, in bytes (PEM or DER): a CSR with one SAN and an RSA-4096 key is
/// under 2 KiB.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The shortest lifetime a request may ask for (Kubernetes' own minimum for
/// `spec.expirationSeconds`): 10 minutes.
pub const MIN_WORKLOAD_TTL: Duration = Duration::seconds(600);

/// The Kubernetes key usages a workload certificate may carry (certificates.k8s.io/v1
/// `spec.usages`).
pub const WORKLOAD_USAGES: [&str; 4] = ["digital signature", "key encipherment", "server auth", "client auth"];

const OID_EXTENSION_REQUEST: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.14");
const OID_SAN: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.17");
const OID_BASIC_CONSTRAINTS: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.19");

/// What a workload signer allows (the policy's `workloadSigning`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkloadRules {
    /// The trust domain every SPIFFE ID must be in.
    pub trust_domain: String,
    /// The longest lifetime issued; a longer request is shortened to it.
    pub max_ttl: Duration,
    /// The key types a request may carry.
    pub key_types: Vec<KeyType>,
    /// Whether DNS SANs beside the SPIFFE ID are allowed (copied into the certificate). IP and
    /// email SANs never are.
    pub allow_dns_sans: bool,
    /// The requesters allowed (`spec.username`, e.g. istiod's service account); empty: any.
    pub requesters: Vec<String>,
}

impl WorkloadRules {
    /// `trust_domain`, 24 hours at most, ECDSA P-256/P-384 and RSA 2048-4096, no DNS SANs, any
    /// requester.
    pub fn new(trust_domain: &str) -> Self {
        WorkloadRules {
            trust_domain: trust_domain.to_owned(),
            max_ttl: Duration::hours(24),
            key_types: vec![
                KeyType::EcdsaP256,
                KeyType::EcdsaP384,
                KeyType::Rsa { bits: 2048 },
                KeyType::Rsa { bits: 3072 },
                KeyType::Rsa { bits: 4096 },
            ],
            allow_dns_sans: false,
            requesters: Vec::new(),
        }
    }
}

/// One request to sign, as the Kubernetes object carries it.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct WorkloadRequest<'a> {
    /// The PKCS#10 request, PEM (`spec.request` of a CSR) or DER (`spec.pkixPublicKey` is not
    /// a CSR: a PodCertificateRequest's proof is checked by the caller).
    pub csr: &'a [u8],
    /// The lifetime asked for (`spec.expirationSeconds`, `spec.maxExpirationSeconds`).
    pub expiration_seconds: Option<i64>,
    /// The usages asked for (`spec.usages`); `None` where the object has none.
    pub usages: Option<&'a [String]>,
    /// Who asked (`spec.username`), where known.
    pub requester: Option<&'a str>,
    /// The identity the request must name, where the caller knows it (a pod's namespace and
    /// service account).
    pub identity: Option<(&'a str, &'a str)>,
}

impl<'a> WorkloadRequest<'a> {
    /// A request of `csr` with nothing else known.
    pub fn new(csr: &'a [u8]) -> Self {
        WorkloadRequest { csr, expiration_seconds: None, usages: None, requester: None, identity: None }
    }
}

/// Why a request is refused: a stable, CamelCase reason (a Kubernetes condition reason and a
/// metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RefusalReason {
    /// Not a PKCS#10 request, or too large.
    MalformedRequest,
    /// Its self-signature does not verify.
    BadSignature,
    /// Signed with a broken hash (SHA-1, MD5).
    WeakSignature,
    /// A key type or size the rules do not allow.
    KeyNotAllowed,
    /// Not exactly one URI SAN, or a DNS/IP/email/other SAN not allowed.
    SanNotAllowed,
    /// The URI is not a SPIFFE workload ID in the trust domain, or not the pod's.
    IdentityNotAllowed,
    /// It asks for a CA certificate.
    CaNotAllowed,
    /// A usage other than a workload certificate's.
    UsageNotAllowed,
    /// The requester is not one the rules allow.
    RequesterNotAllowed,
}

impl RefusalReason {
    /// The reason as a Kubernetes condition reason and a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::MalformedRequest => "MalformedRequest",
            RefusalReason::BadSignature => "BadSignature",
            RefusalReason::WeakSignature => "WeakSignature",
            RefusalReason::KeyNotAllowed => "KeyNotAllowed",
            RefusalReason::SanNotAllowed => "SanNotAllowed",
            RefusalReason::IdentityNotAllowed => "IdentityNotAllowed",
            RefusalReason::CaNotAllowed => "CaNotAllowed",
            RefusalReason::UsageNotAllowed => "UsageNotAllowed",
            RefusalReason::RequesterNotAllowed => "RequesterNotAllowed",
        }
    }
}

/// A refused request: the rule it broke and a message for the requester. The message never
/// repeats the request's bytes beyond a bounded, printable excerpt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The rule.
    pub reason: RefusalReason,
    /// What was wrong and what would be accepted.
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message)
    }
}

fn refuse<T>(reason: RefusalReason, message: impl Into<String>) -> core::result::Result<T, Refusal> {
    Err(Refusal { reason, message: message.into() })
}

/// A signed workload certificate.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkloadCert {
    /// The certificate.
    pub cert: Certificate,
    /// The signer's CA certificates, from the one that signed up to (not including) the root.
    pub intermediates: Vec<Certificate>,
    /// The identity it was issued for.
    pub spiffe_id: SpiffeId,
    /// `Some(asked notAfter)` when the lifetime was shortened (to the rules' maximum or to the
    /// signing CA's notAfter).
    pub clamped_from: Option<OffsetDateTime>,
}

impl WorkloadCert {
    /// The certificate and its intermediates, PEM, leaf first (`status.certificate`). The root
    /// is left out: the requester trusts it already (istiod: meshConfig `caCertificates`).
    pub fn chain_pem(&self) -> String {
        core::iter::once(&self.cert).chain(&self.intermediates).map(Certificate::to_pem).collect()
    }
}

/// What the request asks for, checked against the rules.
struct Checked {
    key_type: KeyType,
    public_key_raw: Vec<u8>,
    id: SpiffeId,
    dns: Vec<String>,
}

fn check(req: &WorkloadRequest<'_>, rules: &WorkloadRules) -> core::result::Result<Checked, Refusal> {
    use RefusalReason as R;
    if let Some(requester) = req.requester {
        if !rules.requesters.is_empty() && !rules.requesters.iter().any(|r| r == requester) {
            return refuse(
                R::RequesterNotAllowed,
                format!(
                    "requested by {}; this signer signs only for {}",
                    crate::printable(requester, 120),
                    crate::list_bounded(&rules.requesters, 5)
                ),
            );
        }
    }
    if let Some(usages) = req.usages {
        if let Some(u) = usages.iter().find(|u| !WORKLOAD_USAGES.contains(&u.as_str())) {
            return refuse(
                R::UsageNotAllowed,
                format!(
                    "usage {:?} is not a workload certificate's; allowed: {}",
                    crate::printable(u, 60),
                    WORKLOAD_USAGES.join(", ")
                ),
            );
        }
    }
    if req.csr.len() > MAX_REQUEST_BYTES {
        return refuse(
            R::MalformedRequest,
            format!("the request is {} bytes; at most {MAX_REQUEST_BYTES}", req.csr.len()),
        );
    }
    let der = if req.csr.starts_with(b"-----") {
        let blocks = crate::pem::decode_all("request", "CERTIFICATE REQUEST", req.csr)
            .map_err(|e| Refusal { reason: R::MalformedRequest, message: e.to_string() })?;
        let mut reqs = blocks.into_iter().filter(|b| b.label == "CERTIFICATE REQUEST");
        match (reqs.next(), reqs.next()) {
            (Some(b), None) => b.der.to_vec(),
            (None, _) => return refuse(R::MalformedRequest, "no CERTIFICATE REQUEST PEM block"),
            (Some(_), Some(_)) => return refuse(R::MalformedRequest, "more than one CERTIFICATE REQUEST block"),
        }
    } else {
        req.csr.to_vec()
    };
    let csr = x509_cert::request::CertReq::from_der(&der)
        .map_err(|e| Refusal { reason: R::MalformedRequest, message: format!("not a PKCS#10 request ({e})") })?;
    let spki = &csr.info.public_key;
    let key_type = match crate::cert::spki_kind(spki) {
        PublicKeyKind::Supported(t) => t,
        PublicKeyKind::WeakRsa { bits } => {
            return refuse(R::KeyNotAllowed, format!("an RSA key of {bits} bits; at least 2048"))
        }
        PublicKeyKind::Unsupported(alg) => {
            return refuse(R::KeyNotAllowed, format!("a {alg} key; use ECDSA P-256/P-384 or RSA >= 2048"))
        }
    };
    if !rules.key_types.contains(&key_type) {
        return refuse(R::KeyNotAllowed, format!("a {key_type} key, which this signer's policy does not allow"));
    }
    if let Some(alg) = crate::cert::weak_signature_name(csr.algorithm.oid) {
        return refuse(R::WeakSignature, format!("signed with {alg}; sign the request with SHA-256 or better"));
    }
    let raw = spki.subject_public_key.raw_bytes().to_vec();
    let tbs =
        crate::cert::tbs_range(&der).map_err(|e| Refusal { reason: R::MalformedRequest, message: e.to_string() })?;
    let sig = csr
        .signature
        .as_bytes()
        .ok_or_else(|| Refusal { reason: R::MalformedRequest, message: "malformed signature".into() })?;
    if crate::cert::verify_signature(csr.algorithm.oid, key_type, &raw, &der[tbs], sig).is_err() {
        return refuse(R::BadSignature, "its signature does not verify with its own key (altered, or not its key)");
    }
    // The extensions it asks for: the SANs, and never a CA.
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    for attr in csr.info.attributes.iter().filter(|a| a.oid == OID_EXTENSION_REQUEST) {
        for value in attr.values.iter() {
            let bytes = value.to_der().map_err(|e| Refusal { reason: R::MalformedRequest, message: e.to_string() })?;
            let exts = x509_cert::ext::Extensions::from_der(&bytes).map_err(|e| Refusal {
                reason: R::MalformedRequest,
                message: format!("its extension request does not parse ({e})"),
            })?;
            for ext in &exts {
                if ext.extn_id == OID_BASIC_CONSTRAINTS {
                    let bc = BasicConstraints::from_der(ext.extn_value.as_bytes()).map_err(|e| Refusal {
                        reason: R::MalformedRequest,
                        message: format!("its basicConstraints does not parse ({e})"),
                    })?;
                    if bc.ca {
                        return refuse(R::CaNotAllowed, "it asks for a CA certificate (basicConstraints cA=TRUE)");
                    }
                }
                if ext.extn_id == OID_SAN {
                    let san = SubjectAltName::from_der(ext.extn_value.as_bytes()).map_err(|e| Refusal {
                        reason: R::MalformedRequest,
                        message: format!("its subjectAltName does not parse ({e})"),
                    })?;
                    for name in san.0 {
                        match name {
                            GeneralName::UniformResourceIdentifier(u) => uris.push(u.to_string()),
                            GeneralName::DnsName(d) => dns.push(d.to_string()),
                            GeneralName::IpAddress(_) => {
                                return refuse(R::SanNotAllowed, "an IP address SAN; workload certificates carry none")
                            }
                            GeneralName::Rfc822Name(_) => {
                                return refuse(R::SanNotAllowed, "an email SAN; workload certificates carry none")
                            }
                            _ => return refuse(R::SanNotAllowed, "a SAN other than URI or DNS"),
                        }
                    }
                }
            }
        }
    }
    let uri = match uris.as_slice() {
        [one] => one,
        [] => return refuse(R::SanNotAllowed, "no URI SAN; exactly one, the workload's SPIFFE ID"),
        many => {
            return refuse(R::SanNotAllowed, format!("{} URI SANs; exactly one, the workload's SPIFFE ID", many.len()))
        }
    };
    if !dns.is_empty() && !rules.allow_dns_sans {
        return refuse(
            R::SanNotAllowed,
            format!(
                "DNS SANs ({}) beside the SPIFFE ID; this signer's policy allows none",
                crate::list_bounded(dns.iter().map(|d| crate::printable(d, 80)), 3)
            ),
        );
    }
    for d in &dns {
        if !is_dns_name(d) {
            return refuse(R::SanNotAllowed, format!("DNS SAN {:?} is not a DNS name", crate::printable(d, 80)));
        }
    }
    let id: SpiffeId =
        uri.parse().map_err(|e: crate::Error| Refusal { reason: R::IdentityNotAllowed, message: e.to_string() })?;
    if id.trust_domain() != rules.trust_domain {
        return refuse(
            R::IdentityNotAllowed,
            format!("{id} is in trust domain {}; this signer signs for {}", id.trust_domain(), rules.trust_domain),
        );
    }
    if let Some((ns, sa)) = req.identity {
        if id.namespace() != ns || id.service_account() != sa {
            return refuse(
                R::IdentityNotAllowed,
                format!(
                    "{id} is not the requesting pod's identity (namespace {}, service account {})",
                    crate::printable(ns, 63),
                    crate::printable(sa, 253)
                ),
            );
        }
    }
    Ok(Checked { key_type, public_key_raw: raw, id, dns })
}

/// A pod's request for a certificate of its own key (a Kubernetes PodCertificateRequest): the
/// identity is the pod's (its namespace and service account, as the API server recorded them),
/// the key a PKIX SubjectPublicKeyInfo whose possession the API server checked.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct PodKeyRequest<'a> {
    /// `spec.pkixPublicKey`: the DER SubjectPublicKeyInfo.
    pub public_key: &'a [u8],
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod's service account.
    pub service_account: &'a str,
    /// `spec.maxExpirationSeconds` (the API server's default: 24 hours).
    pub max_expiration_seconds: Option<i64>,
}

impl<'a> PodKeyRequest<'a> {
    /// A request for `public_key` by a pod of `namespace` running as `service_account`.
    pub fn new(public_key: &'a [u8], namespace: &'a str, service_account: &'a str) -> Self {
        PodKeyRequest { public_key, namespace, service_account, max_expiration_seconds: None }
    }
}

/// The shortest certificate a PodCertificateRequest may get (the API server refuses shorter):
/// one hour.
pub const MIN_POD_CERT_TTL: Duration = Duration::hours(1);

fn check_pod(req: &PodKeyRequest<'_>, rules: &WorkloadRules) -> core::result::Result<Checked, Refusal> {
    use RefusalReason as R;
    if req.public_key.len() > MAX_REQUEST_BYTES {
        return refuse(
            R::MalformedRequest,
            format!("the key is {} bytes; at most {MAX_REQUEST_BYTES}", req.public_key.len()),
        );
    }
    let spki = spki::SubjectPublicKeyInfoOwned::from_der(req.public_key)
        .map_err(|e| Refusal { reason: R::MalformedRequest, message: format!("not a PKIX public key ({e})") })?;
    let allowed = || rules.key_types.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let key_type = match crate::cert::spki_kind(&spki) {
        PublicKeyKind::Supported(t) if rules.key_types.contains(&t) => t,
        PublicKeyKind::Supported(t) => {
            return refuse(R::KeyNotAllowed, format!("a {t} key; this signer signs {}", allowed()))
        }
        PublicKeyKind::WeakRsa { bits } => {
            return refuse(R::KeyNotAllowed, format!("an RSA key of {bits} bits; this signer signs {}", allowed()))
        }
        PublicKeyKind::Unsupported(alg) => {
            return refuse(R::KeyNotAllowed, format!("a {alg} key; this signer signs {}", allowed()))
        }
    };
    let id = SpiffeId::workload(&rules.trust_domain, req.namespace, req.service_account)
        .map_err(|e| Refusal { reason: R::IdentityNotAllowed, message: e.to_string() })?;
    Ok(Checked { key_type, public_key_raw: spki.subject_public_key.raw_bytes().to_vec(), id, dns: Vec::new() })
}

/// A DNS name as RFC 1123 allows it in a SAN: labels of letters, digits and '-', not starting
/// or ending with '-', at most 63 bytes each and 253 in all. No wildcards.
fn is_dns_name(d: &str) -> bool {
    d.len() <= 253
        && !d.is_empty()
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The lifetime to issue: what was asked (default: the maximum) within
/// [[`MIN_WORKLOAD_TTL`], `max`]. The signing CA's notAfter shortens it further at issuance.
pub fn workload_ttl(asked_seconds: Option<i64>, max: Duration) -> Duration {
    let asked = asked_seconds.map_or(max, Duration::seconds);
    asked.clamp(MIN_WORKLOAD_TTL, max.max(MIN_WORKLOAD_TTL))
}

impl SigningCa {
    /// Checks `req` against `rules` and, when it passes, signs its key into a workload
    /// certificate for its SPIFFE ID, valid from now (backdated as every meshca certificate)
    /// for [`workload_ttl`], clamped to this CA's notAfter.
    ///
    /// The outer error is the signer's (this CA not valid at `now`, its key unusable): retry
    /// later. The inner one is the request's: refuse it, with the reason.
    pub fn sign_workload_request(
        &self,
        req: &WorkloadRequest<'_>,
        rules: &WorkloadRules,
        rng: &mut dyn Entropy,
        now: OffsetDateTime,
    ) -> Result<core::result::Result<WorkloadCert, Refusal>> {
        self.check_valid_at(now)?;
        let checked = match check(req, rules) {
            Ok(c) => c,
            Err(r) => return Ok(Err(r)),
        };
        let ttl = workload_ttl(req.expiration_seconds, rules.max_ttl);
        let asked = req.expiration_seconds.map(Duration::seconds);
        self.issue_checked(checked, ttl, asked, Duration::ZERO, rng, now).map(Ok)
    }

    /// Checks a pod's key against `rules` and, when it passes, issues a workload certificate
    /// for the pod's own identity (`spiffe://<td>/ns/<namespace>/sa/<service account>`), valid
    /// for `max_expiration_seconds` (24 hours when absent) within [1 hour, the rules' maximum],
    /// and at least [`MIN_POD_CERT_TTL`]: a CA that ends sooner is the signer's error (retry
    /// once the policy has rotated it).
    pub fn sign_pod_key(
        &self,
        req: &PodKeyRequest<'_>,
        rules: &WorkloadRules,
        rng: &mut dyn Entropy,
        now: OffsetDateTime,
    ) -> Result<core::result::Result<WorkloadCert, Refusal>> {
        self.check_valid_at(now)?;
        let checked = match check_pod(req, rules) {
            Ok(c) => c,
            Err(r) => return Ok(Err(r)),
        };
        let asked = Duration::seconds(req.max_expiration_seconds.unwrap_or(86_400));
        let ttl = asked.clamp(MIN_POD_CERT_TTL, rules.max_ttl.max(MIN_POD_CERT_TTL));
        self.issue_checked(checked, ttl, Some(asked), MIN_POD_CERT_TTL, rng, now).map(Ok)
    }

    /// Issues what `checked` asks for, for `ttl` (clamped to this CA's notAfter, and refused
    /// when that leaves less than `at_least`); `asked` is the lifetime the request named.
    fn issue_checked(
        &self,
        checked: Checked,
        ttl: Duration,
        asked: Option<Duration>,
        at_least: Duration,
        rng: &mut dyn Entropy,
        now: OffsetDateTime,
    ) -> Result<WorkloadCert> {
        let (common, clamped_by_ca) = self.window(ttl, rng, now);
        if common.not_after - now < at_least {
            return Err(crate::Error::InvalidParameter {
                field: "signing CA".into(),
                reason: format!(
                    "{} ends at {}, too soon for a certificate of at least {}; the intermediate must be \
                     rotated first",
                    self.bundle().ca_cert().subject(),
                    crate::format_time(common.not_after),
                    crate::time_fmt::human_duration(at_least)
                ),
            });
        }
        let p = crate::profile::leaf_with_dns(common, &checked.id, &checked.dns)?;
        let cert = self.sign(&p, &checked.public_key_raw, checked.key_type, "a workload certificate")?;
        let path = self.bundle().path();
        let intermediates = path[..path.len().saturating_sub(1)].to_vec();
        let shortened = asked.filter(|a| *a > ttl).and_then(|a| now.checked_add(a));
        Ok(WorkloadCert { cert, intermediates, spiffe_id: checked.id, clamped_from: shortened.or(clamped_by_ca) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_kept_within_ten_minutes_and_the_maximum() {
        let max = Duration::hours(24);
        assert_eq!(workload_ttl(None, max), max);
        assert_eq!(workload_ttl(Some(3600), max), Duration::hours(1));
        assert_eq!(workload_ttl(Some(60), max), MIN_WORKLOAD_TTL);
        assert_eq!(workload_ttl(Some(-5), max), MIN_WORKLOAD_TTL);
        assert_eq!(workload_ttl(Some(i64::MAX), max), max);
        assert_eq!(workload_ttl(Some(7 * 86_400), max), max);
        assert_eq!(workload_ttl(Some(3600), Duration::seconds(1)), MIN_WORKLOAD_TTL, "a maximum under the minimum");
    }

    #[test]
    fn dns_names_are_labels_without_wildcards() {
        for ok in ["a", "reviews.default.svc", "a-b.c1", &"a".repeat(63)] {
            assert!(is_dns_name(ok), "{ok}");
        }
        for bad in ["", "*.svc", "-a", "a-", "a..b", "a b", &"a".repeat(64), "é.svc"] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }
}
