//! meshca: PKI for Istio multi-cluster trust.
//!
//! Every Istio cluster's istiod signs workload certificates with the intermediate CA in the
//! Secret `istio-system/cacerts`. meshca issues those intermediates from one shared root (or an
//! intermediate whose root lives in an external PKI), issues SPIFFE workload certificates as
//! istiod does, validates bundles more strictly than istiod, checks that clusters trust each
//! other, and plans rotation.
//!
//! This crate is pure: it never touches files, the network, the environment or the clock.
//! Every time-dependent function takes `now`; all randomness comes from the `rng` argument
//! (an [`Entropy`]: pass [`OsRng`] outside tests, a seeded RNG in tests).
//!
//! ```
//! use meshca::{IntermediateParams, LeafParams, RootParams, SigningCa, SpiffeId};
//! # fn main() -> Result<(), meshca::Error> {
//! let now = time::OffsetDateTime::now_utc(); // the caller owns the clock
//! let rng = &mut meshca::OsRng;
//! let root = SigningCa::generate_root(&RootParams::default(), rng, now)?;
//! let cluster1 = root.issue_intermediate(&IntermediateParams::new("cluster1"), rng, now)?.value;
//! let files = cluster1.to_files(meshca::Layout::Istio); // ca-cert.pem, ca-key.pem, ...
//! assert_eq!(files.len(), 4);
//! let id = SpiffeId::workload("cluster.local", "bookinfo", "reviews")?;
//! let leaf = SigningCa::new(cluster1).issue_leaf(&LeafParams::new(id), rng, now)?.value;
//! meshca::verify_workload_chain(&leaf.chain(), root.bundle().roots(), now)?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod bounds;
mod bundle;
mod ca;
mod cert;
mod chain;
mod crl;
mod crl_set;
mod error;
mod external;
mod key;
mod pem;
mod profile;
mod provider;
mod rfc5280;
mod rng;
mod rootrotation;
mod rotation;
// The workspace's only `unsafe`: AWS-LC's RSA generator with a progress callback.
#[cfg(feature = "aws-lc")]
#[allow(unsafe_code)]
mod rsa_keygen;
mod spiffe;
mod text;
mod time_fmt;
pub mod tlog;
mod trust_bundle;
mod verify;
mod workload;

pub use bundle::{
    parse_roots, Cacerts, Files, Layout, Warning, CA_CERT, CA_CRL, CA_CRT, CA_KEY, CERT_CHAIN, ROOT_CERT, TLS_CRT,
    TLS_KEY,
};
pub use ca::{
    validate_cluster_name, validate_subject_attr, Csr, IntermediateParams, Issued, Leaf, LeafParams, RootParams,
    SignedCa, SigningCa, LEAF_FILES, MAX_CA_TTL, MAX_LEAF_TTL,
};
pub use cert::{Certificate, PublicKeyKind, SignatureError};
pub use chain::TrustChain;
pub use crl::{
    bundle_crls, canonical_serial, check_crl_set, check_peer_crl_sets, parse_serial, Crl, RevocationReason, Revoked,
    CRL_LABEL, MAX_CRL_DER_BYTES,
};
pub use crl_set::{CrlProfile, CrlSet};
pub use error::{Error, KeyHolder, Result};
pub use external::{ecdsa_signature_to_der, CaKey, ExternalKey, SignError};
pub use key::{KeyAlgorithm, KeyType, PrivateKey};
pub use pem::{MAX_INPUT_BYTES, MAX_PEM_BLOCKS};
pub use profile::{BACKDATE, ISTIOD_SAN};
pub use provider::{CaRequest, ProviderAnswer, LIFETIME_SLACK};
/// RustCrypto's RNG trait: every `CryptoRngCore` is an [`Entropy`].
pub use rand_core::CryptoRngCore;
pub use rng::{Entropy, OsRng};
pub use rootrotation::{with_trust_bundle, Converge, Phase, RootRotation, Signer, Step};
pub use rotation::{plan, same_roots, union_roots, Current, Facts, IssueReason, Plan, RotationPolicy, MIN_GRACE};
pub use spiffe::{service_id, validate_trust_domain, SpiffeId, MAX_SPIFFE_ID_BYTES};
pub use text::{list_bounded, printable};
pub use time_fmt::human_duration;
pub use trust_bundle::{
    refresh_hint, BundleVersion, TrustSet, DEFAULT_REFRESH_HINT_SECONDS, HINTS_BEFORE_USE, REFRESH_HINT_SECONDS,
};
pub use verify::{
    check_cross_cluster, check_mutual_trust, check_mutual_trust_chains, verify_workload, verify_workload_chain,
    verify_workload_chain_with_crls, SharedRoot, TrustCheck, VerifiedWorkload,
};
pub use workload::{
    workload_ttl, PodKeyRequest, Refusal, RefusalReason, WorkloadCert, WorkloadRequest, WorkloadRules,
    MAX_REQUEST_BYTES, MIN_POD_CERT_TTL, MIN_WORKLOAD_TTL, WORKLOAD_USAGES,
};

/// Formats a time as RFC 3339 in UTC, whole seconds, as meshca's messages do.
pub fn format_time(t: time::OffsetDateTime) -> String {
    time_fmt::rfc3339(t)
}

/// Parses every certificate of a PEM file (`file` names it in errors).
pub fn parse_certificates(pem: &[u8], file: &str) -> Result<Vec<Certificate>> {
    Certificate::from_pem_all(pem, file)
}

/// The README's examples, compiled and run as doctests so they cannot drift from the API.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
