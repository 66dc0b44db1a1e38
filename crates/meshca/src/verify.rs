//! Independent verification: workload chains through rustls-webpki (the verifier rustls uses),
//! and trust between clusters' bundles.

use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;

use crate::bundle::Cacerts;
use crate::ca::{LeafParams, SigningCa};
use crate::cert::Certificate;
use crate::error::{Error, Result};
use crate::rng::Entropy;
use crate::spiffe::SpiffeId;

/// Verifies a workload chain (leaf first, then intermediates; a root in it is harmless) against
/// `roots` at `now` with rustls-webpki, for both client and server use as mTLS needs, and
/// checks the leaf is a workload certificate of Istio's form. Returns its SPIFFE ID.
pub fn verify_workload_chain(chain: &[Certificate], roots: &[Certificate], now: OffsetDateTime) -> Result<SpiffeId> {
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
    let uris = leaf.uri_sans();
    let [uri] = uris.as_slice() else {
        return Err(profile(format!("it must carry exactly one URI SAN (a SPIFFE ID), found {}", uris.len())));
    };
    let id: SpiffeId = uri.parse()?;

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
    for (usage, name) in [(webpki::KeyUsage::client_auth(), "client"), (webpki::KeyUsage::server_auth(), "server")] {
        ee.verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &anchors, &intermediates, time, usage, None, None)
            .map_err(|e| untrusted(format!("as a TLS {name}: {e:?}")))?;
    }
    Ok(id)
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
    let Some(first) = bundles.first() else {
        return Err(Error::InvalidParameter { field: "bundles".into(), reason: "no bundle to compare".into() });
    };
    let pairs = bundles
        .iter()
        .map(|b| (first, b))
        .chain(bundles.iter().map(|a| (a, first)))
        .chain(bundles.iter().flat_map(|a| bundles.iter().map(move |b| (a, b))));
    for ((name_a, a), (name_b, b)) in pairs {
        if !b.trusts_root(a.root()) {
            return Err(Error::RootMismatch {
                reference: (*name_a).to_owned(),
                other: (*name_b).to_owned(),
                root: a.root().subject(),
                fingerprint: a.root_fingerprint(),
                other_roots: b
                    .roots()
                    .iter()
                    .map(|r| format!("{} ({})", r.subject(), short_fp(&r.fingerprint_sha256())))
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
    }
    let (_, first) = first;
    Ok(SharedRoot { subject: first.root().subject(), fingerprint: first.root_fingerprint() })
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
