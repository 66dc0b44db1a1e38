//! SPIFFE IDs of Istio's form: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use core::fmt;
use core::str::FromStr;

use crate::error::{Error, Result};

/// The longest SPIFFE ID (SPIFFE ID specification, section 2.3), in bytes.
pub const MAX_SPIFFE_ID_BYTES: usize = 2048;

/// A validated Istio workload identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// Builds `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`, validating each part.
    pub fn workload(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self> {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    /// The trust domain (e.g. `cluster.local`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Kubernetes service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

/// `spiffe://<trust_domain>/<path>` for a service that is not an Istio workload (e.g. meshca's
/// own bundle endpoint, `meshca/bundle-endpoint`): each part checked as the SPIFFE ID
/// specification says (section 2).
pub fn service_id(trust_domain: &str, path: &str) -> Result<String> {
    let id = format!("spiffe://{trust_domain}/{path}");
    let bad = |reason: String| Error::InvalidSpiffeId { id: id.chars().take(80).collect(), reason };
    trust_domain_problem(trust_domain).map_err(|p| bad(p.to_string()))?;
    for segment in path.split('/') {
        validate_segment("path segment", segment).map_err(|p| bad(p.to_string()))?;
    }
    if id.len() > MAX_SPIFFE_ID_BYTES {
        return Err(bad(format!("it is {} bytes long; a SPIFFE ID has at most 2048", id.len())));
    }
    Ok(id)
}

/// Checks a trust domain as the SPIFFE spec defines it (lowercase letters, digits, `.`, `-`, `_`):
/// an [`Error::InvalidParameter`] for `trust domain` says what is wrong.
pub fn validate_trust_domain(td: &str) -> Result<()> {
    trust_domain_problem(td)
        .map_err(|problem| Error::InvalidParameter { field: "trust domain".into(), reason: problem.to_string() })
}

/// What is wrong with a trust domain or a path segment (the messages both errors carry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NameProblem {
    Empty(&'static str),
    TrustDomainTooLong,
    TrustDomainChar(char),
    EmptyLabel,
    DotSegment(&'static str),
    SegmentChar(&'static str, char),
}

impl core::fmt::Display for NameProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NameProblem::Empty(what) => write!(f, "the {what} is empty"),
            NameProblem::TrustDomainTooLong => f.write_str("the trust domain is longer than 255 characters"),
            NameProblem::TrustDomainChar(c) => {
                write!(f, "the trust domain may hold only lowercase letters, digits, '.', '-' and '_', not {c:?}")
            }
            NameProblem::EmptyLabel => {
                f.write_str("the trust domain has an empty label (a leading, trailing or doubled '.')")
            }
            NameProblem::DotSegment(what) => write!(f, "the {what} may not be `.` or `..`"),
            NameProblem::SegmentChar(what, c) => {
                write!(f, "the {what} may hold only letters, digits, '.', '-' and '_', not {c:?}")
            }
        }
    }
}

fn trust_domain_problem(td: &str) -> core::result::Result<(), NameProblem> {
    if td.is_empty() {
        return Err(NameProblem::Empty("trust domain"));
    }
    if td.len() > 255 {
        return Err(NameProblem::TrustDomainTooLong);
    }
    if let Some(c) =
        td.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        return Err(NameProblem::TrustDomainChar(c));
    }
    // A trust domain is a DNS-like name: no empty labels (`a..b`, a leading or trailing dot).
    if td.split('.').any(str::is_empty) {
        return Err(NameProblem::EmptyLabel);
    }
    Ok(())
}

fn validate_segment(what: &'static str, s: &str) -> core::result::Result<(), NameProblem> {
    if s.is_empty() {
        return Err(NameProblem::Empty(what));
    }
    if s == "." || s == ".." {
        return Err(NameProblem::DotSegment(what));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))) {
        return Err(NameProblem::SegmentChar(what, c));
    }
    Ok(())
}

impl FromStr for SpiffeId {
    type Err = Error;

    fn from_str(id: &str) -> Result<Self> {
        let shown: String = id.chars().take(80).collect();
        let bad = |reason: String| Error::InvalidSpiffeId { id: shown.clone(), reason };
        // SPIFFE ID spec 2.3: at most 2048 bytes.
        if id.len() > MAX_SPIFFE_ID_BYTES {
            return Err(bad(format!("it is {} bytes long; a SPIFFE ID has at most 2048", id.len())));
        }
        let rest = id.strip_prefix("spiffe://").ok_or_else(|| bad("it does not start with spiffe://".into()))?;
        let (td, path) = rest.split_once('/').ok_or_else(|| bad("it has no path".into()))?;
        trust_domain_problem(td).map_err(|p| bad(p.to_string()))?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", ns, "sa", sa] => {
                validate_segment("namespace", ns).map_err(|p| bad(p.to_string()))?;
                validate_segment("service account", sa).map_err(|p| bad(p.to_string()))?;
                Ok(SpiffeId {
                    trust_domain: td.to_owned(),
                    namespace: (*ns).to_owned(),
                    service_account: (*sa).to_owned(),
                })
            }
            _ => Err(bad(format!("the path `/{path}` is not /ns/<namespace>/sa/<service-account>"))),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_ids() {
        let id: SpiffeId = "spiffe://cluster.local/ns/bookinfo/sa/reviews-v3".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "bookinfo");
        assert_eq!(id.service_account(), "reviews-v3");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/bookinfo/sa/reviews-v3");
    }

    #[test]
    fn rejects_malformed_ids() {
        for (id, needle) in [
            ("http://cluster.local/ns/a/sa/b", "spiffe://"),
            ("spiffe://Cluster.Local/ns/a/sa/b", "lowercase"),
            ("spiffe://cluster.local", "no path"),
            ("spiffe://cluster.local/ns/a/sa/", "service account is empty"),
            ("spiffe://cluster.local/ns/a/b/c", "/ns/<namespace>/sa/"),
            ("spiffe://cluster.local/ns/../sa/b", "`.` or `..`"),
            ("spiffe://cluster.local/ns/a b/sa/b", "' '"),
            ("spiffe:///ns/a/sa/b", "empty"),
            ("spiffe://a..b/ns/a/sa/b", "empty label"),
            ("spiffe://.a/ns/a/sa/b", "empty label"),
            ("spiffe://a./ns/a/sa/b", "empty label"),
            ("spiffe://a/ns//sa/b", "namespace is empty"),
        ] {
            let e = id.parse::<SpiffeId>().unwrap_err().to_string();
            assert!(e.contains(needle), "{id}: {e}");
        }
        let long = format!("spiffe://cluster.local/ns/a/sa/{}", "b".repeat(MAX_SPIFFE_ID_BYTES));
        let e = long.parse::<SpiffeId>().unwrap_err().to_string();
        assert!(e.contains("at most 2048"), "{e}");
        assert!(e.len() < 400, "the message does not echo a huge input: {e}");
        let max = format!("spiffe://cluster.local/ns/a/sa/{}", "b".repeat(MAX_SPIFFE_ID_BYTES - 31));
        assert_eq!(max.len(), MAX_SPIFFE_ID_BYTES);
        assert!(max.parse::<SpiffeId>().is_ok());
    }
}
