//! What `inspect` shows: each certificate's essentials, as data (`--json`) and as a tree that
//! reads at a glance in a terminal.

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
    let status = if now < c.not_before() {
        "not yet valid"
    } else if now > c.not_after() {
        "expired"
    } else {
        "valid"
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

/// Writes `certs` (leaf or lowest CA first, root last, as in a chain file) as a tree from the
/// root down. Certificates that do not chain are listed flat.
pub fn write_tree(out: &mut String, certs: &[CertView], indent: &str) {
    let chained = certs.windows(2).all(|w| w[0].issuer == w[1].subject);
    let ordered: Vec<&CertView> = if chained { certs.iter().rev().collect() } else { certs.iter().collect() };
    for (depth, v) in ordered.iter().enumerate() {
        let pad = if chained && depth > 0 { format!("{}└─ ", "   ".repeat(depth - 1)) } else { String::new() };
        let cont = if chained { "   ".repeat(depth) } else { String::new() };
        let ca = match (v.ca, v.pathlen) {
            (true, Some(p)) => format!("CA pathlen {p}"),
            (true, None) => "CA".into(),
            (false, _) => "not a CA".into(),
        };
        out.push_str(&format!("{indent}{pad}{}  [{}]\n", v.subject, v.role));
        let d = format!("{indent}{cont}   ");
        if !v.sans.is_empty() {
            out.push_str(&format!("{d}SAN       {}\n", v.sans.join(", ")));
        }
        out.push_str(&format!("{d}issuer    {}\n", v.issuer));
        out.push_str(&format!("{d}key       {}, {ca}, {}\n", v.key, v.signature_algorithm));
        if !v.key_usage.is_empty() || !v.extended_key_usage.is_empty() {
            let mut u = v.key_usage.join(" ");
            if !v.extended_key_usage.is_empty() {
                u.push_str(&format!("; EKU {}", v.extended_key_usage.join(" ")));
            }
            out.push_str(&format!("{d}usage     {u}\n"));
        }
        let when = match v.status {
            "valid" => format!("{} left", v.remaining),
            "expired" => format!("EXPIRED {} ago", v.remaining.trim_start_matches('-')),
            _ => "NOT YET VALID".into(),
        };
        out.push_str(&format!(
            "{d}valid     {} .. {} ({when})\n",
            meshca::format_time(v.not_before),
            meshca::format_time(v.not_after)
        ));
        out.push_str(&format!("{d}serial    {}\n{d}sha256    {}\n", v.serial, v.sha256));
    }
}
