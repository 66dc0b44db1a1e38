//! A CA chain verified up to a trusted root, without a private key: what can be judged of a
//! peer cluster's `cert-chain.pem` + `root-cert.pem`, Istio's `istio-ca-root-cert` ConfigMap,
//! a ClusterTrustBundle or a sidecar's ROOTCA. [`crate::Cacerts`] is a `TrustChain` plus the
//! key that matches its first certificate; every chain rule lives here, once.

use time::OffsetDateTime;

use crate::bundle::{Warning, CERT_CHAIN, ROOT_CERT};
use crate::cert::Certificate;
use crate::error::{Error, Result};
use crate::rfc5280;

/// The files certificates came from, for messages: the first certificate of the chain, the
/// rest of the chain, and the trust bundle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sources {
    pub(crate) cert: &'static str,
    pub(crate) chain: &'static str,
    pub(crate) roots: &'static str,
}

/// Istio's layout: `ca-cert.pem`, `cert-chain.pem`, `root-cert.pem`.
pub(crate) const ISTIO_SOURCES: Sources = Sources { cert: crate::bundle::CA_CERT, chain: CERT_CHAIN, roots: ROOT_CERT };

/// A chain of CA certificates, lowest first, that verifies up to a self-signed root of a trust
/// bundle at a given time, by every rule meshca applies to a `cacerts` bundle except the key.
#[derive(Clone, Debug)]
pub struct TrustChain {
    /// The chain's certificates, then the root it reaches when the chain leaves it out.
    path: Vec<Certificate>,
    /// How many certificates of `path` came from the chain itself.
    chain_len: usize,
    roots: Vec<Certificate>,
    warnings: Vec<Warning>,
}

impl TrustChain {
    /// Parses and verifies a chain (`cert-chain.pem`: the lowest CA first, each issuer after it,
    /// the root optional) against a trust bundle (`root-cert.pem`) at `now`.
    pub fn from_pems(chain_pem: &[u8], roots_pem: &[u8], now: OffsetDateTime) -> Result<Self> {
        let chain = Certificate::from_pem_all(chain_pem, CERT_CHAIN)?;
        let roots = Certificate::from_pem_all(roots_pem, ROOT_CERT)?;
        Self::from_certificates(chain, roots, now)
    }

    /// Verifies already parsed certificates, as [`TrustChain::from_pems`] does.
    pub fn from_certificates(chain: Vec<Certificate>, roots: Vec<Certificate>, now: OffsetDateTime) -> Result<Self> {
        Self::verify(chain, roots, Sources { cert: CERT_CHAIN, ..ISTIO_SOURCES }, now)
    }

    pub(crate) fn verify(
        chain: Vec<Certificate>,
        roots: Vec<Certificate>,
        src: Sources,
        now: OffsetDateTime,
    ) -> Result<Self> {
        let first = chain.first().ok_or_else(|| Error::EmptyPem { file: src.chain.into(), expected: "CERTIFICATE" })?;
        if roots.is_empty() {
            return Err(Error::EmptyPem { file: src.roots.into(), expected: "CERTIFICATE" });
        }
        // Algorithms and extensions first: no other check is meaningful over a SHA-1 signature, a
        // 1024-bit key or an extension whose meaning is unknown.
        let each = |f: &dyn Fn(&Certificate, &str) -> Result<()>| -> Result<()> {
            f(first, src.cert)?;
            chain.iter().try_for_each(|c| f(c, src.chain))?;
            roots.iter().try_for_each(|r| f(r, src.roots))
        };
        each(&|c, file| c.check_algorithms(file))?;
        each(&|c, file| rfc5280::check_critical_extensions(c, file))?;
        for r in &roots {
            if !r.is_self_signed() {
                return Err(Error::NotARoot { file: src.roots.into(), subject: r.subject() });
            }
        }

        // Walk the chain: each certificate must be signed by the next.
        for (i, pair) in chain.windows(2).enumerate() {
            let (child, parent) = (&pair[0], &pair[1]);
            if child.issuer_der() != parent.subject_der() {
                return Err(Error::ChainBroken {
                    file: src.chain.into(),
                    index: i + 1,
                    subject: child.subject(),
                    issuer: child.issuer(),
                    next: parent.subject(),
                });
            }
            if child.verify_signed_by(parent).is_err() {
                return Err(Error::BadSignature {
                    file: src.chain.into(),
                    subject: child.subject(),
                    issuer: parent.subject(),
                });
            }
        }

        // The chain reaches a root in the trust bundle: either it ends with one, or its last
        // certificate is signed by one (Istio's samples ship cert-chain.pem without the root).
        let chain_len = chain.len();
        let last = chain[chain_len - 1].clone();
        let mut path = chain;
        // A root byte-identical to one in the trust bundle was verified as self-signed above.
        let reached = if let Some(i) = roots.iter().position(|r| *r == last) {
            Some(i)
        } else if last.is_self_signed() {
            roots
                .iter()
                .position(|r| r.subject_der() == last.subject_der() && r.public_key_raw() == last.public_key_raw())
        } else {
            let found =
                roots.iter().position(|r| r.subject_der() == last.issuer_der() && last.verify_signed_by(r).is_ok());
            if let Some(i) = found {
                path.push(roots[i].clone());
            }
            found
        };
        if reached.is_none() {
            return Err(Error::UntrustedChain {
                file: src.chain.into(),
                subject: last.subject(),
                issuer: last.issuer(),
                roots_file: src.roots.into(),
                roots: crate::text::list_bounded(roots.iter().map(Certificate::subject), 10),
            });
        }

        let file_at = |depth: usize| {
            if depth == 0 {
                src.cert
            } else if depth < chain_len {
                src.chain
            } else {
                src.roots
            }
        };
        check_ca_path(&path, &file_at, now)?;

        let mut warnings = Vec::new();
        for pair in path.windows(2) {
            if pair[0].not_after() > pair[1].not_after() {
                warnings.push(Warning::OutlivesIssuer { subject: pair[0].subject(), issuer: pair[1].subject() });
            }
        }
        for c in &path {
            rfc5280::profile_warnings(c, &mut warnings);
        }
        let root = &path[path.len() - 1];
        for r in &roots {
            if r != root && matches!(r.check_validity("", now), Err(Error::Expired { .. })) {
                warnings.push(Warning::ExpiredExtraRoot { subject: r.subject() });
            }
        }
        Ok(TrustChain { path, chain_len, roots, warnings })
    }

    /// A chain this crate just built from a validated signer's (`signer`) and one more
    /// certificate below it: nothing to re-check.
    pub(crate) fn extended(ca_cert: Certificate, signer: &TrustChain) -> Self {
        let mut path = Vec::with_capacity(signer.path.len() + 1);
        path.push(ca_cert);
        path.extend(signer.path.iter().cloned());
        TrustChain { chain_len: path.len(), path, roots: signer.roots.clone(), warnings: signer.warnings.clone() }
    }

    /// The chain's first certificate (the signing CA of a bundle).
    pub fn first(&self) -> &Certificate {
        &self.path[0]
    }

    /// The chain, then the root it reaches.
    pub fn path(&self) -> &[Certificate] {
        &self.path
    }

    /// The chain as given (it may leave out the root).
    pub fn cert_chain(&self) -> &[Certificate] {
        &self.path[..self.chain_len]
    }

    /// The root the chain reaches.
    pub fn root(&self) -> &Certificate {
        &self.path[self.path.len() - 1]
    }

    /// Every root of the trust bundle.
    pub fn roots(&self) -> &[Certificate] {
        &self.roots
    }

    /// Whether `cert` is one of the trusted roots.
    pub fn trusts_root(&self, cert: &Certificate) -> bool {
        self.roots.iter().any(|r| r == cert)
    }

    /// Non-fatal findings.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The earliest notAfter on the path: after it, nothing the chain's CA signs verifies.
    pub fn not_after(&self) -> OffsetDateTime {
        self.path.iter().map(Certificate::not_after).min().unwrap_or_else(|| self.path[0].not_after())
    }

    /// The SHA-256 fingerprint of the root the chain reaches.
    pub fn root_fingerprint(&self) -> String {
        self.root().fingerprint_sha256()
    }
}

/// The CA rules on every certificate of `path` (lowest first, root last): CA:TRUE, keyCertSign,
/// pathLenConstraint (RFC 5280 4.2.1.9), an EKU that allows mTLS, the validity window, and name
/// constraints of each CA over the certificates below it (4.2.1.10). `file_at(depth)` names the
/// file a certificate came from.
pub(crate) fn check_ca_path(
    path: &[Certificate],
    file_at: &dyn Fn(usize) -> &'static str,
    now: OffsetDateTime,
) -> Result<()> {
    for (depth, c) in path.iter().enumerate() {
        let file = file_at(depth);
        let Some(pathlen) = c.ca_pathlen() else {
            return Err(Error::NotCa { file: file.into(), subject: c.subject() });
        };
        if c.allows_cert_sign() == Some(false) {
            return Err(Error::NoKeyCertSign { file: file.into(), subject: c.subject() });
        }
        // CAs below this one on the path, not counting self-issued ones (RFC 5280 4.2.1.9).
        let below = path[..depth].iter().filter(|b| !b.is_self_issued()).count();
        if let Some(p) = pathlen {
            if usize::from(p) < below {
                return Err(Error::PathLenExceeded { file: file.into(), subject: c.subject(), pathlen: p, below });
            }
        }
        if let Some(missing) = c.eku_missing_for_mtls() {
            return Err(Error::CaEkuTooNarrow { file: file.into(), subject: c.subject(), missing });
        }
        c.check_validity(file, now)?;
        if let Some(nc) = rfc5280::name_constraints(c, file)? {
            for (d, b) in path[..depth].iter().enumerate() {
                // Self-issued CAs below are exempt (RFC 5280 6.1.3 (b), (c)): name constraints
                // apply to a self-issued certificate only when it is the final one of the path,
                // and a CA path never holds the final (end-entity) certificate; the verifier of
                // a workload chain checks the leaf itself.
                if !b.is_self_issued() {
                    rfc5280::check_names_within(&nc, c, b, file_at(d))?;
                }
            }
        }
    }
    Ok(())
}
