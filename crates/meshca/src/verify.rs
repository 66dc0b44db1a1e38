//! Independent verification: workload chains through rustls-webpki (the verifier rustls uses),
//! and trust between clusters' bundles.

use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;

use crate::bundle::{Cacerts, Warning};
use crate::ca::{LeafParams, SigningCa};
use crate::cert::Certificate;
use crate::chain::{self, TrustChain};
use crate::error::{Error, Result};
use crate::rfc5280;
use crate::rng::Entropy;
use crate::spiffe::SpiffeId;

/// A workload chain that verified, and what is worth telling about it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedWorkload {
    /// The leaf's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// Profile deviations that verifiers accept (a leaf without EKU, a missing key identifier).
    pub warnings: Vec<Warning>,
}

/// Verifies a workload chain (leaf first, then intermediates; a root in it is harmless) against
/// `roots` at `now` with rustls-webpki, for both client and server use as mTLS needs, and
/// checks the leaf is a workload certificate of Istio's form. Returns its SPIFFE ID.
pub fn verify_workload_chain(chain: &[Certificate], roots: &[Certificate], now: OffsetDateTime) -> Result<SpiffeId> {
    verify_workload(chain, roots, now).map(|v| v.spiffe_id)
}

const LEAF: &str = "the workload certificate";
const CHAIN: &str = "the workload chain";
const ROOTS: &str = "the trust bundle";

/// [`verify_workload_chain`], with the warnings. Every rule a `cacerts` bundle is held to
/// applies to the chain's CAs and the root it reaches (RFC 5280: keys, critical extensions,
/// CA constraints, name constraints, validity at the same whole second); the leaf must be a
/// workload certificate (no CA, no keyCertSign, one SPIFFE ID), and rustls-webpki must agree.
pub fn verify_workload(chain: &[Certificate], roots: &[Certificate], now: OffsetDateTime) -> Result<VerifiedWorkload> {
    verify_workload_revocation(chain, roots, None, now)
}

/// [`verify_workload_chain`] under revocation, as Envoy applies a `ca-crl.pem`: every CA in the
/// path must have a CRL among `crls` (signed by its issuer, current at `now`), and none may list
/// the certificate below it. A chain through a revoked intermediate is refused, and so is a
/// chain for one of whose CAs no CRL is given (Envoy refuses those too: the reason a fleet's
/// CRL file carries one CRL per CA, see docs/istiod-crl.md).
pub fn verify_workload_chain_with_crls(
    chain: &[Certificate],
    roots: &[Certificate],
    crls: &[crate::Crl],
    now: OffsetDateTime,
) -> Result<SpiffeId> {
    verify_workload_revocation(chain, roots, Some(crls), now).map(|v| v.spiffe_id)
}

fn verify_workload_revocation(
    chain: &[Certificate],
    roots: &[Certificate],
    crls: Option<&[crate::Crl]>,
    now: OffsetDateTime,
) -> Result<VerifiedWorkload> {
    let untrusted = |detail: String| Error::LeafUntrusted {
        what: chain.first().map(Certificate::subject).unwrap_or_else(|| "empty chain".into()),
        trust: format!("{} root(s)", roots.len()),
        detail,
    };
    let leaf = chain.first().ok_or_else(|| untrusted("the chain is empty".into()))?;
    let profile = |detail: String| Error::LeafProfile { what: "workload certificate".into(), detail };
    if leaf.is_ca() {
        return Err(profile("it is a CA certificate, not a workload certificate".into()));
    }
    if leaf.allows_cert_sign() == Some(true) {
        return Err(profile("it asserts keyCertSign, which only a CA may; it is not a workload certificate".into()));
    }
    leaf.check_algorithms(LEAF)?;
    rfc5280::check_critical_extensions(leaf, LEAF)?;
    leaf.check_validity(LEAF, now)?;
    let uris = leaf.uri_sans();
    let [uri] = uris.as_slice() else {
        return Err(profile(format!("it must carry exactly one URI SAN (a SPIFFE ID), found {}", uris.len())));
    };
    let id: SpiffeId = uri.parse()?;

    // The CA part: every path from the leaf through the intermediates as sent up to a root of
    // `roots` (issuer by name, then signature), shortest first; the first that passes every
    // CA rule is the chain's path, as a path-building verifier (webpki, Go, OpenSSL) would find
    // it: a chain that also offers an expired or otherwise bad route is judged by its good one.
    // With no route at all, webpki below says why.
    let intermediates: Vec<Certificate> = chain[1..].iter().filter(|c| !roots.contains(c)).cloned().collect();
    let routes = candidate_paths(leaf, &intermediates, roots);
    let mut ca_path: Vec<Certificate> = Vec::new();
    let mut first_error = None;
    for route in routes {
        match check_route(&route, leaf, now) {
            Ok(()) => {
                ca_path = route;
                first_error = None;
                break;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }

    let anchor_ders: Vec<CertificateDer<'_>> = roots.iter().map(|r| CertificateDer::from(r.der())).collect();
    let anchors = anchor_ders
        .iter()
        .map(|d| webpki::anchor_from_trusted_cert(d).map_err(|e| untrusted(format!("unusable root: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    let intermediates: Vec<CertificateDer<'_>> = chain[1..].iter().map(|c| CertificateDer::from(c.der())).collect();
    let leaf_der = CertificateDer::from(leaf.der());
    let ee = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| untrusted(format!("{e}")))?;
    let secs = u64::try_from(now.unix_timestamp()).map_err(|_| untrusted("time before 1970".into()))?;
    let time = UnixTime::since_unix_epoch(core::time::Duration::from_secs(secs));
    // One path verification (each signature once), for client use; the same path serves a TLS
    // server when the leaf's extendedKeyUsage, if present, also names serverAuth, which is all
    // webpki's server check adds.
    let parsed_crls = crls
        .unwrap_or_default()
        .iter()
        .map(|c| webpki::BorrowedCertRevocationList::from_der(c.der()).map(webpki::CertRevocationList::from))
        .collect::<core::result::Result<Vec<_>, _>>()
        .map_err(|e| untrusted(format!("a CRL rustls-webpki cannot read: {e:?}")))?;
    let crl_refs: Vec<&webpki::CertRevocationList<'_>> = parsed_crls.iter().collect();
    let revocation = match crls {
        None => None,
        Some(_) => Some(
            webpki::RevocationOptionsBuilder::new(&crl_refs)
                .map_err(|_| untrusted("revocation was asked for, but no CRL was given".into()))?
                .with_depth(webpki::RevocationCheckDepth::Chain)
                .with_status_policy(webpki::UnknownStatusPolicy::Deny)
                .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
                .build(),
        ),
    };
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        time,
        webpki::KeyUsage::client_auth(),
        revocation,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertRevoked => {
            untrusted("a certificate of the chain is revoked by the CRL of its issuer".into())
        }
        webpki::Error::UnknownRevocationStatus => untrusted(
            "no CRL covers one of the chain's CAs; with a CRL for any CA of a chain, Envoy wants one for all".into(),
        ),
        webpki::Error::CrlExpired { .. } => untrusted("a CRL of the chain is past its nextUpdate".into()),
        e => untrusted(format!("as a TLS client: {e:?}")),
    })?;
    if leaf.eku().is_some_and(|ekus| !ekus.contains(&crate::cert::OID_SERVER_AUTH)) {
        return Err(untrusted(
            "as a TLS server: its extendedKeyUsage does not include serverAuth (mTLS needs both)".into(),
        ));
    }

    let mut warnings = Vec::new();
    if leaf.eku().is_none() {
        warnings.push(Warning::LeafWithoutEku { subject: id.to_string() });
    }
    for c in chain.iter().chain(roots.iter().filter(|r| ca_path.contains(r))) {
        rfc5280::profile_warnings(c, &mut warnings);
    }
    warnings.dedup();
    Ok(VerifiedWorkload { spiffe_id: id, warnings })
}

/// The most routes and the longest CA path [`candidate_paths`] explores: bounded work for any
/// chain (MAX_PEM_BLOCKS bounds the certificates themselves).
const MAX_ROUTES: usize = 16;
const MAX_CA_DEPTH: usize = 8;

/// Every CA path (lowest CA first, a root of `roots` last) from `leaf` through `intermediates`,
/// each certificate's issuer found by name and checked by signature; shortest first.
fn candidate_paths(leaf: &Certificate, intermediates: &[Certificate], roots: &[Certificate]) -> Vec<Vec<Certificate>> {
    fn walk(
        below: &Certificate,
        path: &mut Vec<Certificate>,
        intermediates: &[Certificate],
        roots: &[Certificate],
        out: &mut Vec<Vec<Certificate>>,
        budget: &mut usize,
    ) {
        if out.len() >= MAX_ROUTES || *budget == 0 || path.len() >= MAX_CA_DEPTH {
            return;
        }
        *budget -= 1;
        let roots_named = issuers_of(below, roots);
        for r in &roots_named {
            let mut found = path.clone();
            found.push((*r).clone());
            out.push(found);
        }
        for c in issuers_of(below, intermediates) {
            if !path.contains(c) {
                path.push(c.clone());
                walk(c, path, intermediates, roots, out, budget);
                path.pop();
            }
        }
    }
    // The issuers of `below` among `candidates`, by name and key identifier; a signature is
    // checked only where those leave a choice (webpki verifies every signature of the path
    // once, below).
    fn issuers_of<'a>(below: &Certificate, candidates: &'a [Certificate]) -> Vec<&'a Certificate> {
        let named: Vec<&Certificate> = candidates.iter().filter(|c| c.subject_der() == below.issuer_der()).collect();
        let by_key_id: Vec<&Certificate> = match below.authority_key_id() {
            Some(aki) => named.iter().copied().filter(|c| c.subject_key_id().as_ref() == Some(&aki)).collect(),
            None => named.clone(),
        };
        let signed =
            |list: Vec<&'a Certificate>| list.into_iter().filter(|c| below.verify_signed_by(c).is_ok()).collect();
        match by_key_id.as_slice() {
            // No key identifier matches (an issuer without one): the signature decides.
            [] => signed(named),
            [_] => by_key_id,
            _ => signed(by_key_id),
        }
    }
    let mut out = Vec::new();
    let mut budget = 64;
    walk(leaf, &mut Vec::new(), intermediates, roots, &mut out, &mut budget);
    out.sort_by_key(Vec::len);
    out
}

/// Every rule a `cacerts` bundle is held to, over one CA route of a workload chain (lowest CA
/// first, the root last), and the route's name constraints over the leaf.
fn check_route(route: &[Certificate], leaf: &Certificate, now: OffsetDateTime) -> Result<()> {
    let n = route.len() - 1;
    for (i, c) in route.iter().enumerate() {
        let file = if i < n { CHAIN } else { ROOTS };
        c.check_algorithms(file)?;
        rfc5280::check_critical_extensions(c, file)?;
    }
    let file_at = |depth: usize| if depth < n { CHAIN } else { ROOTS };
    chain::check_ca_path(route, &file_at, now)?;
    for (i, ca) in route.iter().enumerate() {
        if let Some(nc) = rfc5280::name_constraints(ca, file_at(i))? {
            rfc5280::check_names_within(&nc, ca, leaf, LEAF)?;
        }
    }
    Ok(())
}

/// The root every bundle shares.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedRoot {
    /// Its subject.
    pub subject: String,
    /// Its SHA-256 fingerprint.
    pub fingerprint: String,
}

/// Checks that every bundle trusts the root every other bundle's chain reaches (the seed's
/// Step 2, generalised to trust bundles holding several roots during a rotation). Pairs are
/// checked against the first bundle before all others, so the error names the bundle that
/// differs from the first.
pub fn check_mutual_trust(bundles: &[(&str, &Cacerts)]) -> Result<SharedRoot> {
    let chains: Vec<(&str, &TrustChain)> = bundles.iter().map(|(n, b)| (*n, b.trust_chain())).collect();
    check_mutual_trust_chains(&chains)
}

/// [`check_mutual_trust`] over public chains (a peer's `cert-chain.pem` and `root-cert.pem`,
/// no key needed): every chain's root is trusted by every other's trust bundle.
pub fn check_mutual_trust_chains(bundles: &[(&str, &TrustChain)]) -> Result<SharedRoot> {
    let mut check = TrustCheck::new();
    for (name, chain) in bundles {
        check.add(name, chain);
    }
    check.finish()
}

/// The mutual trust check, fed one chain at a time so a caller with thousands of clusters need
/// not hold their bundles: it keeps only the distinct roots the chains reach and the distinct
/// trust bundles (one or two of each, or a few during a root rotation), so its memory stays
/// flat and its time linear in the number of chains, where comparing every pair was quadratic.
#[derive(Clone, Debug, Default)]
pub struct TrustCheck {
    /// Each distinct root a chain reaches, with the earliest chain (by position) that reached it.
    roots: Vec<(usize, String, Certificate)>,
    /// Each distinct trust bundle, with the earliest chain that carried it.
    trust: Vec<(usize, String, Vec<Certificate>)>,
    added: usize,
}

impl TrustCheck {
    /// An empty check.
    pub fn new() -> Self {
        TrustCheck::default()
    }

    /// Adds a chain (named for errors) after those added before it.
    pub fn add(&mut self, name: &str, chain: &TrustChain) {
        self.add_at(self.added, name, chain);
    }

    /// Adds the chain at `position` in the caller's order (for chains checked out of order, as
    /// by several threads): the result and its messages are those of adding them in order.
    pub fn add_at(&mut self, position: usize, name: &str, chain: &TrustChain) {
        self.added += 1;
        fn keep<T>(
            list: &mut Vec<(usize, String, T)>,
            position: usize,
            name: &str,
            same: impl Fn(&T) -> bool,
            new: impl FnOnce() -> T,
        ) {
            match list.iter_mut().find(|(_, _, v)| same(v)) {
                Some(entry) if position < entry.0 => {
                    entry.0 = position;
                    entry.1 = name.to_owned();
                }
                Some(_) => {}
                None => list.push((position, name.to_owned(), new())),
            }
        }
        keep(&mut self.roots, position, name, |r| r == chain.root(), || chain.root().clone());
        keep(&mut self.trust, position, name, |t| t.as_slice() == chain.roots(), || chain.roots().to_vec());
    }

    /// Whether every chain added so far reaches a root that every trust bundle added trusts;
    /// the shared root is the first chain's. Checked in the order added, so a mismatch names
    /// the first chain whose root is missing and the first bundle that misses it.
    pub fn finish(&self) -> Result<SharedRoot> {
        let mut roots: Vec<&(usize, String, Certificate)> = self.roots.iter().collect();
        let mut trust: Vec<&(usize, String, Vec<Certificate>)> = self.trust.iter().collect();
        roots.sort_by_key(|e| e.0);
        trust.sort_by_key(|e| e.0);
        let Some((_, _, first)) = roots.first() else {
            return Err(Error::InvalidParameter { field: "bundles".into(), reason: "no bundle to compare".into() });
        };
        for (_, name_a, root) in &roots {
            for (_, name_b, roots) in &trust {
                if !roots.contains(root) {
                    return Err(Error::RootMismatch {
                        reference: name_a.clone(),
                        other: name_b.clone(),
                        root: root.subject(),
                        fingerprint: root.fingerprint_sha256(),
                        other_roots: crate::text::list_bounded(
                            roots.iter().map(|r| format!("{} ({})", r.subject(), short_fp(&r.fingerprint_sha256()))),
                            10,
                        ),
                    });
                }
            }
        }
        Ok(SharedRoot { subject: first.subject(), fingerprint: first.fingerprint_sha256() })
    }
}

/// Issues a short-lived probe workload certificate from every bundle and verifies each with
/// rustls-webpki against every bundle's `root-cert.pem`: proof that a workload in any cluster
/// is trusted by every other, not only that the files look alike.
pub fn check_cross_cluster(bundles: &[(&str, &Cacerts)], rng: &mut dyn Entropy, now: OffsetDateTime) -> Result<()> {
    let id = SpiffeId::workload("meshca.probe", "meshca", "probe")?;
    let mut params = LeafParams::new(id);
    params.ttl = time::Duration::hours(1);
    for (name_a, a) in bundles {
        let leaf = SigningCa::new((*a).clone()).issue_leaf(&params, rng, now)?.value;
        for (name_b, b) in bundles {
            verify_workload_chain(&leaf.chain(), b.roots(), now).map_err(|e| Error::LeafUntrusted {
                what: format!("a workload certificate from {name_a}"),
                trust: format!("{name_b}'s root-cert.pem"),
                detail: match e {
                    Error::LeafUntrusted { detail, .. } => detail,
                    other => other.to_string(),
                },
            })?;
        }
    }
    Ok(())
}

fn short_fp(fp: &str) -> String {
    fp.chars().take(23).collect::<String>() + "…"
}
