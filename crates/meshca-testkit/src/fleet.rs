//! A fleet as its workloads see it, read from any store: for each cluster a fresh workload,
//! its trust bundle and its CRL set, ready for [`crate::verify::refused_pairs`]. (With the
//! `hsm` feature: it reads through meshca-ops' store.)

use meshca::{Cacerts, Crl, LeafParams, SigningCa, SpiffeId};
use meshca_ops::store::{SecretRef, Store};
use time::OffsetDateTime;

use crate::verify::Peer;

/// Each of `clusters` as its peers see it at `at`: a workload issued by its current
/// intermediate, its `root-cert.pem` and its `ca-crl.pem`. Panics (a test helper) when a
/// cluster has no valid bundle.
pub fn peers(store: &dyn Store, clusters: &[&str], at: OffsetDateTime) -> Vec<Peer> {
    clusters.iter().map(|c| peer_of(store, c, at)).collect()
}

fn peer_of(store: &dyn Store, cluster: &str, at: OffsetDateTime) -> Peer {
    let files = store.read(&SecretRef::cacerts(cluster)).expect("readable").expect("a bundle");
    let b = Cacerts::from_files(&files, at).unwrap_or_else(|e| panic!("{cluster}: {e}"));
    let crls = files.get(meshca::CA_CRL).map(|p| Crl::from_pem_all(p, "ca-crl.pem").expect("CRLs")).unwrap_or_default();
    Peer { name: cluster.into(), chain: workload(&b, "probe", at), roots: b.roots().to_vec(), crls }
}

/// A workload certificate (with its intermediates) issued by `bundle`'s intermediate.
pub fn workload(bundle: &Cacerts, sa: &str, at: OffsetDateTime) -> Vec<meshca::Certificate> {
    let id = SpiffeId::workload("cluster.local", "default", sa).expect("an id");
    SigningCa::new(bundle.clone())
        .issue_leaf(&LeafParams::new(id), &mut meshca::OsRng, at)
        .expect("a leaf")
        .value
        .chain()
}

/// The rehearsal check at one point of a job: every pair of `clusters` completes mTLS as its
/// verifiers see it ([`crate::verify::refused_pairs`]: rustls-webpki and `openssl verify
/// -crl_check_all`), and a workload of each of `revoked` (intermediates taken out of use) is
/// refused by every cluster. Panics naming `when` otherwise.
pub fn rehearse(
    store: &dyn Store,
    dir: &std::path::Path,
    clusters: &[&str],
    revoked: &[(String, Cacerts)],
    at: OffsetDateTime,
    when: &str,
) {
    let all = peers(store, clusters, at);
    let refused = crate::verify::refused_pairs(dir, &all, at);
    assert!(refused.is_empty(), "{when}: {refused:#?}");
    for (cluster, gone) in revoked {
        let chain = workload(gone, "stolen", at);
        for verifier in &all {
            let thief = Peer { name: format!("revoked {cluster}"), chain: chain.clone(), ..verifier.clone() };
            let refused = crate::verify::refused_pairs(dir, &[thief], at);
            for tool in ["(rustls-webpki)", "(openssl)"] {
                assert!(
                    refused.iter().any(|r| r.contains(tool))
                        || !crate::verify::openssl_available() && tool == "(openssl)",
                    "{when}: {cluster}'s revoked intermediate is trusted by {} per {tool}: {refused:?}",
                    verifier.name
                );
            }
        }
    }
}

/// Every trust bundle of `now` is a superset or a subset of the one of `before` (istiod's
/// rule for a change of roots), cluster by cluster.
pub fn assert_roots_only_grow_or_shrink(
    before: &[Vec<meshca::Certificate>],
    now: &[Vec<meshca::Certificate>],
    when: &str,
) {
    for (b, a) in before.iter().zip(now) {
        let sub = a.iter().all(|r| b.contains(r));
        let sup = b.iter().all(|r| a.contains(r));
        assert!(sub || sup, "{when}: a trust bundle went from {b:?} to {a:?}");
    }
}

/// Each cluster's trust bundle.
pub fn roots(store: &dyn Store, clusters: &[&str], at: OffsetDateTime) -> Vec<Vec<meshca::Certificate>> {
    clusters
        .iter()
        .map(|c| {
            let files = store.read(&SecretRef::cacerts(c)).expect("readable").expect("a bundle");
            Cacerts::from_files(&files, at).unwrap_or_else(|e| panic!("{c}: {e}")).roots().to_vec()
        })
        .collect()
}

/// The quickstart's kind of policy: a root meshca generates and keeps in a Secret beside the
/// policy, 30-day intermediates (where a test starts a migration from).
pub const GENERATED_ROOT_POLICY: &str = "apiVersion: meshca.dev/v1alpha1
kind: RootTrustPolicy
metadata:
  name: fleet
  namespace: gloo-mesh
spec:
  config:
    intermediateCertOptions:
      ttlDays: 30
    mgmtServerCa:
      generated: {}
";

/// Revokes `cluster`'s current CA (keyCompromise) under `policy` with `opts`, and checks that
/// the run it made succeeded.
pub fn revoke(
    store: &dyn Store,
    policy: &meshca_ops::policy::Policy,
    opts: &meshca_ops::reconcile::Options,
    cluster: &str,
) -> meshca_ops::revocation::RevocationReport {
    let r = meshca_ops::revocation::revoke(
        store,
        policy,
        opts,
        cluster,
        meshca::RevocationReason::KeyCompromise,
        &mut meshca::OsRng,
        &mut |_, _| {},
    )
    .unwrap_or_else(|e| panic!("revoking {cluster}: {e}"));
    assert!(r.run.ok(), "revoking {cluster}: {r:?}");
    r
}

/// A store whose writes to one cluster fail, as when its API server is down; everything else
/// goes to `inner`.
pub struct FailWrites<'a> {
    /// The store.
    pub inner: &'a dyn Store,
    /// The cluster whose writes fail.
    pub cluster: &'a str,
}

impl std::fmt::Debug for FailWrites<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailWrites").field("cluster", &self.cluster).finish_non_exhaustive()
    }
}

impl Store for FailWrites<'_> {
    fn location(&self, secret: &SecretRef) -> String {
        self.inner.location(secret)
    }
    fn read(&self, secret: &SecretRef) -> Result<Option<meshca::Files>, meshca_ops::error::Error> {
        self.inner.read(secret)
    }
    fn meta(&self, secret: &SecretRef) -> Result<Option<meshca_ops::store::WriteMeta>, meshca_ops::error::Error> {
        self.inner.meta(secret)
    }
    fn clusters_with_cacerts(&self) -> Result<Vec<String>, meshca_ops::error::Error> {
        self.inner.clusters_with_cacerts()
    }
    fn write(
        &self,
        secret: &SecretRef,
        files: &meshca::Files,
        meta: &meshca_ops::store::WriteMeta,
    ) -> Result<(), meshca_ops::error::Error> {
        if secret.cluster == self.cluster {
            return Err(meshca_ops::error::Error::Store {
                location: self.location(secret),
                detail: "connection refused".into(),
            });
        }
        self.inner.write(secret, files, meta)
    }
}
