//! What `inspect` shows about each certificate, as data: its essentials ([`CertView`], also
//! `--json`) and which certificate of a file issued which ([`issuers`]). The CLI draws the tree.

use serde::Serialize;
use time::OffsetDateTime;

use meshca::Certificate;

/// One certificate, summarised.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CertView {
    /// root, intermediate CA, or workload.
    pub role: &'static str,
    /// RFC 4514 subject.
    pub subject: String,
    /// RFC 4514 issuer.
    pub issuer: String,
    /// subjectAltNames.
    pub sans: Vec<String>,
    /// Key type (`ECDSA P-256`, `RSA 4096`, ...).
    pub key: String,
    /// Serial, hex.
    pub serial: String,
    /// SHA-256 fingerprint of the DER.
    pub sha256: String,
    /// notBefore.
    #[serde(serialize_with = "ser_time")]
    pub not_before: OffsetDateTime,
    /// notAfter.
    #[serde(serialize_with = "ser_time")]
    pub not_after: OffsetDateTime,
    /// Time left at the time of inspection (negative when expired), e.g. `364d 23h`.
    pub remaining: String,
    /// `valid`, `expired` or `not yet valid`.
    pub status: &'static str,
    /// basicConstraints CA.
    pub ca: bool,
    /// pathLenConstraint.
    pub pathlen: Option<u8>,
    /// keyUsage.
    pub key_usage: Vec<&'static str>,
    /// extendedKeyUsage.
    pub extended_key_usage: Vec<String>,
    /// Signature algorithm.
    pub signature_algorithm: String,
}

fn ser_time<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&meshca::format_time(*t))
}

/// Summarises `c` as of `now`.
pub fn cert_view(c: &Certificate, now: OffsetDateTime) -> CertView {
    let role = if !c.is_ca() {
        "workload"
    } else if c.is_self_signed() {
        "root"
    } else {
        "intermediate CA"
    };
    let status = match c.check_validity("", now) {
        Err(meshca::Error::NotYetValid { .. }) => "not yet valid",
        Err(meshca::Error::Expired { .. }) => "expired",
        _ => "valid",
    };
    CertView {
        role,
        subject: c.subject(),
        issuer: c.issuer(),
        sans: c.san_strings(),
        key: match c.public_key_kind() {
            meshca::PublicKeyKind::Supported(k) => k.to_string(),
            meshca::PublicKeyKind::WeakRsa { bits } => format!("RSA {bits} (too small)"),
            meshca::PublicKeyKind::Unsupported(a) => format!("{a} (unsupported)"),
            _ => "unknown".into(),
        },
        serial: c.serial_hex(),
        sha256: c.fingerprint_sha256(),
        not_before: c.not_before(),
        not_after: c.not_after(),
        remaining: meshca::human_duration(c.not_after() - now),
        status,
        ca: c.is_ca(),
        pathlen: c.ca_pathlen().flatten(),
        key_usage: c.key_usage_names(),
        extended_key_usage: c.eku_names(),
        signature_algorithm: c.signature_algorithm(),
    }
}

/// How many same-subject candidates are tried as a certificate's issuer.
const MAX_ISSUER_CANDIDATES: usize = 4;

/// For each certificate, the index of its issuer among `certs`, if one is there: a certificate
/// whose subject is this one's issuer, whose key identifier (when both carry one) matches,
/// and whose key verifies the signature. Self-signed certificates have none, so two unrelated
/// roots with the same subject are two roots. Linear in `certs`: a subject index, and at most
/// a few signature checks per certificate.
pub fn issuers(certs: &[Certificate]) -> Vec<Option<usize>> {
    let mut by_subject: std::collections::HashMap<String, Vec<usize>> = std::collections::HashMap::new();
    for (i, c) in certs.iter().enumerate() {
        by_subject.entry(c.subject()).or_default().push(i);
    }
    certs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.is_self_signed() {
                return None;
            }
            let aki = c.authority_key_id();
            by_subject
                .get(&c.issuer())?
                .iter()
                .copied()
                .filter(|&j| j != i)
                .filter(|&j| match (&aki, certs[j].subject_key_id()) {
                    (Some(a), Some(s)) => *a == s,
                    _ => true,
                })
                .take(MAX_ISSUER_CANDIDATES)
                .find(|&j| c.verify_signed_by(&certs[j]).is_ok())
        })
        .collect()
}
