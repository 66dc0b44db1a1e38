//! RA mode: the clusters meshca signs workload certificates for (`workloadSigning`) keep no CA
//! key. Their intermediate (with its key) is kept on the management side, in the Secret
//! `<policy namespace>/meshca-ra-<cluster>` of the management cluster, and the workload
//! cluster gets only the roots: `istio-system/external-ca-cert` (`root-cert.pem`), the Secret
//! istiod mounts at `/etc/external-ca-cert` in RA mode.
//!
//! [`RaStore`] makes this a property of the store, so every job (reconcile, rotation, root
//! rotation, revocation) works on RA clusters unchanged: each job reads and writes a cluster's
//! `cacerts`, and for an RA cluster that is the management-side Secret. A write sends the roots
//! to the workload cluster first, then the bundle to the management side: the signer (which
//! reads the management side) never signs with an intermediate whose roots the cluster lacks.

use meshca::Files;

use crate::distribution::LabelSelector;
use crate::error::Error;
use crate::policy::Policy;
use crate::store::{Held, SecretRef, Store, TrustObject, WriteMeta};

/// The Secret in an RA-mode workload cluster that holds the roots (istiod's
/// `/etc/external-ca-cert`).
pub const ROOTS_SECRET: (&str, &str) = ("istio-system", "external-ca-cert");

/// Where an RA cluster's intermediate and key are kept: in the management cluster, beside the
/// policy.
pub fn key_secret(mgmt_cluster: &str, policy: &Policy, cluster: &str) -> SecretRef {
    SecretRef::new(mgmt_cluster, &policy.namespace, &format!("meshca-ra-{cluster}"))
}

/// A store in which each RA cluster's `cacerts` is its management-side Secret, and a write of
/// it also writes the cluster's roots Secret.
pub struct RaStore<'a> {
    inner: &'a dyn Store,
    mgmt_cluster: String,
    policy: &'a Policy,
}

impl std::fmt::Debug for RaStore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaStore").field("mgmt_cluster", &self.mgmt_cluster).field("policy", &self.policy.name).finish()
    }
}

impl<'a> RaStore<'a> {
    /// `inner`, with `policy`'s RA clusters redirected; `None` when the policy has none.
    pub fn wrap(inner: &'a dyn Store, policy: &'a Policy, mgmt_cluster: &str) -> Option<Self> {
        policy.workload_signing.as_ref()?;
        Some(RaStore { inner, mgmt_cluster: mgmt_cluster.to_owned(), policy })
    }

    /// The management-side Secret `secret` stands for, when it is an RA cluster's `cacerts`.
    fn redirect(&self, secret: &SecretRef) -> Option<SecretRef> {
        let ws = self.policy.workload_signing.as_ref()?;
        (secret.namespace == "istio-system"
            && secret.name == "cacerts"
            && secret.cluster != self.mgmt_cluster
            && ws.covers(&secret.cluster))
        .then(|| key_secret(&self.mgmt_cluster, self.policy, &secret.cluster))
    }
}

impl Store for RaStore<'_> {
    fn location(&self, secret: &SecretRef) -> String {
        match self.redirect(secret) {
            Some(kept) => format!("{} (RA mode: kept on the management side)", self.inner.location(&kept)),
            None => self.inner.location(secret),
        }
    }

    fn read(&self, secret: &SecretRef) -> Result<Option<Files>, Error> {
        self.inner.read(&self.redirect(secret).unwrap_or_else(|| secret.clone()))
    }

    fn write(&self, secret: &SecretRef, files: &Files, meta: &WriteMeta) -> Result<(), Error> {
        let Some(kept) = self.redirect(secret) else { return self.inner.write(secret, files, meta) };
        // The roots first: the signer reads the management side, so what it signs with is
        // never ahead of what the cluster trusts.
        let mut roots = Files::new();
        if let Some(pem) = files.get(meshca::ROOT_CERT) {
            roots.insert(meshca::ROOT_CERT.to_owned(), pem.to_vec());
        }
        let roots_secret = SecretRef::new(&secret.cluster, ROOTS_SECRET.0, ROOTS_SECRET.1);
        // An `external-ca-cert` someone else made (a switch to RA mode by hand) is theirs.
        if self.inner.read(&roots_secret)?.is_some() {
            let (k, v) = crate::manifest::MANAGED_BY;
            let ours = self.inner.meta(&roots_secret)?.is_some_and(|m| m.labels.get(k).is_some_and(|l| l == v));
            if !ours {
                return Err(Error::NotManaged { location: self.inner.location(&roots_secret) });
            }
        }
        self.inner.write(&roots_secret, &roots, &WriteMeta::managed())?;
        self.inner.write(&kept, files, meta)
    }

    fn meta(&self, secret: &SecretRef) -> Result<Option<WriteMeta>, Error> {
        self.inner.meta(&self.redirect(secret).unwrap_or_else(|| secret.clone()))
    }

    fn restart_istiod(&self, cluster: &str, now: time::OffsetDateTime) -> Result<Option<String>, Error> {
        self.inner.restart_istiod(cluster, now)
    }

    fn istiod_roots(&self, cluster: &str) -> Result<Option<Vec<u8>>, Error> {
        self.inner.istiod_roots(cluster)
    }

    fn clusters_with_cacerts(&self) -> Result<Vec<String>, Error> {
        self.inner.clusters_with_cacerts()
    }

    fn batch_writers(&self) -> usize {
        self.inner.batch_writers()
    }

    // The trust objects are the workload cluster's own, as they are without RA mode.
    fn has_trust_bundles(&self, cluster: &str) -> Result<bool, Error> {
        self.inner.has_trust_bundles(cluster)
    }

    fn read_trust(&self, cluster: &str, object: &TrustObject, key: &str) -> Result<Option<Held>, Error> {
        self.inner.read_trust(cluster, object, key)
    }

    fn write_trust(
        &self,
        cluster: &str,
        object: &TrustObject,
        key: &str,
        pem: &str,
        signer: &str,
    ) -> Result<(), Error> {
        self.inner.write_trust(cluster, object, key, pem, signer)
    }

    fn delete_trust(&self, cluster: &str, object: &TrustObject) -> Result<bool, Error> {
        self.inner.delete_trust(cluster, object)
    }

    fn namespaces(&self, cluster: &str, selector: &LabelSelector, limit: usize) -> Result<Vec<String>, Error> {
        self.inner.namespaces(cluster, selector, limit)
    }

    fn managed_config_maps(&self, cluster: &str, name: &str) -> Result<Vec<String>, Error> {
        self.inner.managed_config_maps(cluster, name)
    }
}

/// The CA an RA cluster's workload certificates are signed with: its intermediate, as the jobs
/// keep it on the management side. `None` while the policy has not issued it yet.
pub fn signing_ca(
    store: &dyn Store,
    policy: &Policy,
    mgmt_cluster: &str,
    cluster: &str,
    now: time::OffsetDateTime,
) -> Result<Option<meshca::SigningCa>, Error> {
    let secret = key_secret(mgmt_cluster, policy, cluster);
    let Some(files) = store.read(&secret)? else { return Ok(None) };
    let ca = meshca::SigningCa::from_files(&files, now)
        .map_err(|source| Error::Core { context: store.location(&secret), source })?;
    Ok(Some(ca))
}
