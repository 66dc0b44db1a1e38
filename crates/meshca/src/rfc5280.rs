//! RFC 5280 rules that apply to every certificate meshca judges, whatever its role: critical
//! extensions, name constraints, the validity window, and the profile deviations worth a
//! warning. Chains ([`crate::TrustChain`]) and workload paths both call these, so each rule has
//! one implementation.

use der::Encode;
use time::OffsetDateTime;
use x509_cert::ext::pkix::constraints::name::{GeneralSubtree, NameConstraints};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::AuthorityKeyIdentifier;

use crate::bundle::Warning;
use crate::cert::Certificate;
use crate::error::{Error, Result};

/// Extensions meshca (or the verifiers it must agree with: Go, rustls-webpki, BoringSSL)
/// understands. A critical extension not listed makes the certificate unusable (RFC 5280 4.2:
/// "A certificate-using system MUST reject the certificate if it encounters a critical
/// extension it does not recognize").
const KNOWN_EXTENSIONS: &[(&str, &str)] = &[
    ("2.5.29.14", "subjectKeyIdentifier"),
    ("2.5.29.15", "keyUsage"),
    ("2.5.29.17", "subjectAltName"),
    ("2.5.29.19", "basicConstraints"),
    ("2.5.29.30", "nameConstraints"),
    ("2.5.29.31", "cRLDistributionPoints"),
    ("2.5.29.32", "certificatePolicies"),
    ("2.5.29.33", "policyMappings"),
    ("2.5.29.35", "authorityKeyIdentifier"),
    ("2.5.29.36", "policyConstraints"),
    ("2.5.29.37", "extendedKeyUsage"),
    ("2.5.29.54", "inhibitAnyPolicy"),
    ("1.3.6.1.5.5.7.1.1", "authorityInfoAccess"),
    ("1.3.6.1.4.1.11129.2.4.2", "signedCertificateTimestampList"),
];

const OID_SKI: &str = "2.5.29.14";
const OID_AKI: &str = "2.5.29.35";
const OID_POLICY_CONSTRAINTS: &str = "2.5.29.36";

/// The whole second of `now`: certificates carry whole seconds, and every check (meshca's and
/// the webpki path) compares at that precision, so a certificate is valid or expired for all
/// of them alike.
pub(crate) fn whole_second(now: OffsetDateTime) -> OffsetDateTime {
    now - time::Duration::nanoseconds(i64::from(now.nanosecond()))
}

/// RFC 5280 4.1.2.5: valid from notBefore through notAfter, both inclusive.
pub(crate) fn check_validity(c: &Certificate, file: &str, now: OffsetDateTime) -> Result<()> {
    let t = whole_second(now);
    if t < c.not_before() {
        return Err(Error::NotYetValid { file: file.into(), subject: c.subject(), not_before: c.not_before(), now: t });
    }
    if t > c.not_after() {
        return Err(Error::Expired { file: file.into(), subject: c.subject(), not_after: c.not_after(), now: t });
    }
    Ok(())
}

/// RFC 5280 4.2: no critical extension meshca does not understand.
pub(crate) fn check_critical_extensions(c: &Certificate, file: &str) -> Result<()> {
    for ext in c.extensions() {
        let oid = ext.extn_id.to_string();
        if ext.critical && !KNOWN_EXTENSIONS.iter().any(|(known, _)| *known == oid) {
            return Err(Error::UnknownCriticalExtension { file: file.into(), subject: c.subject(), oid });
        }
    }
    Ok(())
}

/// Profile deviations that istiod and Go accept and real bundles carry: warnings, not errors.
pub(crate) fn profile_warnings(c: &Certificate, out: &mut Vec<Warning>) {
    let subject = || c.subject();
    let ext = |oid: &str| c.extensions().iter().find(|e| e.extn_id.to_string() == oid);
    // Issuer name = subject name stands in for "self-signed": the exemption is the same for
    // every root, and checking the signature again here would cost one verification per bundle.
    let self_signed = c.is_self_issued();
    // RFC 5280 4.2.1.2: a CA MUST carry a subjectKeyIdentifier; 4.2.1.1: every certificate but a
    // self-signed one MUST carry an authorityKeyIdentifier.
    if c.is_ca() && ext(OID_SKI).is_none() {
        out.push(Warning::MissingKeyIdentifier { subject: subject(), which: "subjectKeyIdentifier" });
    }
    if !self_signed && ext(OID_AKI).is_none() {
        out.push(Warning::MissingKeyIdentifier { subject: subject(), which: "authorityKeyIdentifier" });
    }
    // Both MUST be non-critical; rustls-webpki does not know them and refuses a critical one on
    // any certificate but a trust anchor.
    for (oid, which) in [(OID_SKI, "subjectKeyIdentifier"), (OID_AKI, "authorityKeyIdentifier")] {
        if ext(oid).is_some_and(|e| e.critical) {
            out.push(Warning::CriticalKeyIdentifier { subject: subject(), which });
        }
    }
    // CA/Browser Forum BR 7.1.2: keyIdentifier present, authorityCertIssuer and serial absent.
    if let Some((_, aki)) = c.ext::<AuthorityKeyIdentifier>() {
        if aki.key_identifier.is_none()
            || aki.authority_cert_issuer.is_some()
            || aki.authority_cert_serial_number.is_some()
        {
            out.push(Warning::AuthorityKeyIdForm { subject: subject() });
        }
    }
    // RFC 5280 4.2.1.11: conforming CAs MUST mark policyConstraints critical.
    if ext(OID_POLICY_CONSTRAINTS).is_some_and(|e| !e.critical) {
        out.push(Warning::NonCriticalPolicyConstraints { subject: subject() });
    }
}

/// The certificate's nameConstraints, decoded and checked (RFC 5280 4.2.1.10), if it has any.
pub(crate) fn name_constraints(c: &Certificate, file: &str) -> Result<Option<NameConstraints>> {
    let bad = |detail: String| Error::MalformedNameConstraints { file: file.into(), subject: c.subject(), detail };
    let nc = match c.tbs().get::<NameConstraints>() {
        Ok(None) => return Ok(None),
        Ok(Some((_, nc))) => nc,
        Err(e) => return Err(bad(format!("it does not decode ({e})"))),
    };
    let permitted = nc.permitted_subtrees.as_deref().unwrap_or_default();
    let excluded = nc.excluded_subtrees.as_deref().unwrap_or_default();
    if permitted.is_empty() && excluded.is_empty() {
        return Err(bad("permittedSubtrees and excludedSubtrees are both empty or absent".into()));
    }
    if !c.is_ca() {
        return Err(bad("name constraints belong only in a CA certificate".into()));
    }
    for (list, which) in [(permitted, "permitted"), (excluded, "excluded")] {
        for subtree in list {
            check_subtree(subtree).map_err(|e| bad(format!("{which} subtree {}: {e}", show_name(&subtree.base))))?;
        }
    }
    Ok(Some(nc))
}

/// Why a name constraint's subtree is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SubtreeProblem {
    MinimumMaximum,
    DnsLeadingDot,
    NotDns,
    IpLength(usize),
    MaskNotContiguous,
    NotMailbox,
    Uri,
}

impl core::fmt::Display for SubtreeProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SubtreeProblem::MinimumMaximum => f.write_str("minimum must be 0 and maximum absent (RFC 5280 4.2.1.10)"),
            SubtreeProblem::DnsLeadingDot => f.write_str(
                "a dNSName constraint has no leading '.' (RFC 5280 4.2.1.10: `example.com` already covers every name \
                 below it)",
            ),
            SubtreeProblem::NotDns => {
                f.write_str("not a DNS name (labels of letters, digits and '-', at most 63 each)")
            }
            SubtreeProblem::IpLength(n) => {
                write!(f, "an iPAddress constraint is an address and a mask, 8 (IPv4) or 32 (IPv6) bytes, not {n}")
            }
            SubtreeProblem::MaskNotContiguous => f.write_str("the mask is not contiguous"),
            SubtreeProblem::NotMailbox => f.write_str("not a mailbox, a host or a domain"),
            SubtreeProblem::Uri => f.write_str(
                "a URI constraint: rustls-webpki (ztunnel) and pyca/cryptography refuse every chain through a CA \
                 that carries one, and Istio's workload identities are URIs; constrain DNS names instead, or remove \
                 it",
            ),
        }
    }
}

fn check_subtree(s: &GeneralSubtree) -> core::result::Result<(), SubtreeProblem> {
    if s.minimum != 0 || s.maximum.is_some() {
        return Err(SubtreeProblem::MinimumMaximum);
    }
    match &s.base {
        GeneralName::DnsName(d) => {
            // RFC 5280 4.2.1.10: a dNSName constraint is a name to which labels may be added on
            // the left; the leading '.' of the rfc822Name and URI forms is malformed here.
            let name = d.as_str();
            if name.starts_with('.') {
                return Err(SubtreeProblem::DnsLeadingDot);
            }
            valid_dns(name).then_some(()).ok_or(SubtreeProblem::NotDns)
        }
        GeneralName::IpAddress(ip) => {
            let b = ip.as_bytes();
            if b.len() != 8 && b.len() != 32 {
                return Err(SubtreeProblem::IpLength(b.len()));
            }
            let mask = &b[b.len() / 2..];
            let bits: Vec<bool> = mask.iter().flat_map(|m| (0..8).rev().map(move |i| m >> i & 1 == 1)).collect();
            if bits.windows(2).any(|w| !w[0] && w[1]) {
                return Err(SubtreeProblem::MaskNotContiguous);
            }
            Ok(())
        }
        GeneralName::Rfc822Name(m) => {
            let m = m.as_str();
            let domain = match m.rsplit_once('@') {
                Some((local, domain)) if !local.is_empty() && !local.contains(['@', ' ']) => domain,
                Some(_) => return Err(SubtreeProblem::NotMailbox),
                None => m.strip_prefix('.').unwrap_or(m),
            };
            valid_dns(domain).then_some(()).ok_or(SubtreeProblem::NotMailbox)
        }
        GeneralName::DirectoryName(_) => Ok(()),
        GeneralName::UniformResourceIdentifier(_) => Err(SubtreeProblem::Uri),
        // otherName, x400Address, ediPartyName, registeredID: meshca does not evaluate them, and
        // RFC 5280 4.2.1.10 asks only that a later certificate carrying a name of such a form
        // be refused ([`check_names_within`]), not the CA that constrains it.
        _ => Ok(()),
    }
}

/// Whether a name form is one [`matches`] evaluates.
fn evaluated(n: &GeneralName) -> bool {
    matches!(
        n,
        GeneralName::DnsName(_)
            | GeneralName::IpAddress(_)
            | GeneralName::Rfc822Name(_)
            | GeneralName::DirectoryName(_)
    )
}

fn valid_dns(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn show_name(n: &GeneralName) -> String {
    let s = match n {
        GeneralName::DnsName(d) => format!("DNS:{}", d.as_str()),
        GeneralName::Rfc822Name(m) => format!("email:{}", m.as_str()),
        GeneralName::UniformResourceIdentifier(u) => format!("URI:{}", u.as_str()),
        GeneralName::IpAddress(ip) => format!("IP:{}", crate::cert::hex_colon(ip.as_bytes())),
        GeneralName::DirectoryName(d) => format!("DirName:{}", crate::cert::name_string(d)),
        _ => "(other form)".into(),
    };
    s.chars().take(120).collect()
}

/// RFC 5280 6.1.3 (b), (c): `below`'s own names (subject, and its SAN dNSName, iPAddress and
/// rfc822Name entries) satisfy the constraints `nc` of the CA `above`.
pub(crate) fn check_names_within(
    nc: &NameConstraints,
    above: &Certificate,
    below: &Certificate,
    file: &str,
) -> Result<()> {
    let mut names: Vec<GeneralName> = below.san_names();
    if !below.tbs().subject.0.is_empty() {
        names.push(GeneralName::DirectoryName(below.tbs().subject.clone()));
    }
    let permitted = nc.permitted_subtrees.as_deref().unwrap_or_default();
    let excluded = nc.excluded_subtrees.as_deref().unwrap_or_default();
    for name in &names {
        let fail = |why: &str| Error::NameConstraintViolation {
            file: file.into(),
            subject: below.subject(),
            name: show_name(name),
            constrained_by: above.subject(),
            why: why.into(),
        };
        // RFC 5280 4.2.1.10: a name of a form the constraints constrain must be processed or
        // the certificate refused; meshca refuses what it does not evaluate.
        let same_form = |s: &GeneralSubtree| std::mem::discriminant(&s.base) == std::mem::discriminant(name);
        if !evaluated(name) && permitted.iter().chain(excluded).any(same_form) {
            return Err(fail("its CA constrains names of this form, which meshca does not evaluate"));
        }
        if excluded.iter().any(|s| matches(&s.base, name) == Some(true)) {
            return Err(fail("it is in an excluded subtree"));
        }
        let same_kind: Vec<bool> = permitted.iter().filter_map(|s| matches(&s.base, name)).collect();
        if !same_kind.is_empty() && !same_kind.contains(&true) {
            return Err(fail("it is outside every permitted subtree of its kind"));
        }
    }
    Ok(())
}

/// Whether `name` falls in `constraint`, or `None` when they are of different kinds.
fn matches(constraint: &GeneralName, name: &GeneralName) -> Option<bool> {
    match (constraint, name) {
        (GeneralName::DnsName(c), GeneralName::DnsName(n)) => Some(dns_within(n.as_str(), c.as_str())),
        (GeneralName::IpAddress(c), GeneralName::IpAddress(n)) => {
            let (c, n) = (c.as_bytes(), n.as_bytes());
            if c.len() != 2 * n.len() {
                // An IPv4 address is never inside an IPv6 subtree and vice versa.
                return Some(false);
            }
            let (addr, mask) = c.split_at(n.len());
            Some(n.iter().zip(addr).zip(mask).all(|((n, a), m)| n & m == a & m))
        }
        (GeneralName::Rfc822Name(c), GeneralName::Rfc822Name(n)) => {
            let (c, n) = (c.as_str().to_ascii_lowercase(), n.as_str().to_ascii_lowercase());
            let domain = n.rsplit_once('@').map_or(n.as_str(), |(_, d)| d);
            Some(if c.contains('@') {
                c == n
            } else if let Some(suffix) = c.strip_prefix('.') {
                domain.len() > suffix.len() && domain.ends_with(&format!(".{suffix}"))
            } else {
                domain == c
            })
        }
        (GeneralName::DirectoryName(c), GeneralName::DirectoryName(n)) => {
            let der = |rdn: &x509_cert::name::RelativeDistinguishedName| rdn.to_der().ok();
            Some(c.0.len() <= n.0.len() && c.0.iter().zip(&n.0).all(|(a, b)| der(a).is_some() && der(a) == der(b)))
        }
        _ => None,
    }
}

/// RFC 5280 4.2.1.10: adding labels on the left of the constraint; a leading '.' means only
/// names below it.
fn dns_within(name: &str, constraint: &str) -> bool {
    let (name, constraint) = (name.to_ascii_lowercase(), constraint.to_ascii_lowercase());
    match constraint.strip_prefix('.') {
        Some(suffix) => name.len() > suffix.len() + 1 && name.ends_with(&format!(".{suffix}")),
        None => name == constraint || name.ends_with(&format!(".{constraint}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::asn1::ObjectIdentifier;

    fn is_known_extension(oid: ObjectIdentifier) -> bool {
        let oid = oid.to_string();
        KNOWN_EXTENSIONS.iter().any(|(k, _)| *k == oid)
    }

    #[test]
    fn dns_and_ip_matching_follow_rfc5280() {
        assert!(dns_within("istiod.istio-system.svc", "svc"));
        assert!(dns_within("svc", "svc"));
        assert!(!dns_within("svc", ".svc"));
        assert!(dns_within("a.svc", ".svc"));
        assert!(!dns_within("notsvc", "svc"));
        assert!(dns_within("ISTIOD.Example.com", "example.COM"));
        assert!(valid_dns("a-b.c") && !valid_dns("a..b") && !valid_dns("-a") && !valid_dns("a_b") && !valid_dns(""));
        assert!(is_known_extension(ObjectIdentifier::new_unwrap("2.5.29.19")));
        assert!(!is_known_extension(ObjectIdentifier::new_unwrap("1.2.3.4")));
    }
}
