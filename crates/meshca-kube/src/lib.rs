//! Kubernetes I/O for meshca, on kube-rs: Secrets to and from the core's `Cacerts`, clusters from
//! kubeconfig contexts or Istio's multicluster remote secrets, and a controller for the
//! RootTrustPolicy custom resource. It makes no PKI decision of its own: the reconcile loop and
//! the rotation plan come from meshca-ops and the core.
//!
//! # Layers
//!
//! [`KubeStore`] implements meshca-ops's [`Store`](meshca_ops::store::Store) over one kube-rs
//! client per cluster, so the same [`reconcile`](meshca_ops::reconcile) and
//! [`rootrotation`](meshca_ops::rootrotation) code runs against real clusters that runs against
//! a directory in tests and the quickstart. The [`controller`] adds what only Kubernetes has:
//! watching [`crd::RootTrustPolicy`] objects, status, Events and leader election. The CRD is
//! derived from the typed spec meshca-ops parses and the typed status the controller writes.
//!
//! # Example
//!
//! A policy as a custom resource, and the CRD that admits it:
//!
//! ```
//! use meshca_kube::crd::{crd_yaml, RootTrustPolicy};
//!
//! let yaml = meshca_ops::policy::SEED_POLICY.replace("admin.gloo.solo.io/v2", "meshca.dev/v1alpha1");
//! let obj: RootTrustPolicy = serde_saphyr::from_str(&yaml)?;
//! let ttl = obj.spec.config.intermediate_cert_options.as_ref().and_then(|o| o.ttl_days);
//! assert_eq!(ttl, Some(1));
//! assert!(crd_yaml().contains("name: roottrustpolicies.meshca.dev"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Reconciling real clusters from kubeconfig contexts (needs clusters, so not run here):
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rt = tokio::runtime::Runtime::new()?;
//! let timeout = Duration::from_secs(20);
//! let mut clients = BTreeMap::new();
//! for (name, context) in [("mgmt", "kind-mgmt"), ("east", "kind-east")] {
//!     clients.insert(name.to_owned(), rt.block_on(meshca_kube::clusters::client_for_context(None, Some(context), timeout))?);
//! }
//! let store = meshca_kube::KubeStore::new(rt.handle().clone(), clients);
//! let policy = meshca_ops::policy::parse(meshca_ops::policy::SEED_POLICY, "policy.yaml")?;
//! let opts = meshca_ops::reconcile::Options::new(time::OffsetDateTime::now_utc(), vec!["east".into()]);
//! let run = meshca_ops::reconcile::run(&store, &policy, &opts, &mut meshca::OsRng, &mut |_, _| {})?;
//! println!("{run:?}");
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod bundle_endpoint;
pub mod clusters;
pub mod controller;
pub mod crd;
pub mod fleet;
pub mod leader;
pub mod metrics;
pub mod signer;
pub mod store;
mod trust;

pub use store::KubeStore;

/// Errors outside the [`meshca_ops::store::Store`] contract (connecting, the controller).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A kubeconfig, context or remote secret could not be turned into a client.
    #[error("{context}: {detail}")]
    Config {
        /// Which kubeconfig, context or Secret.
        context: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A Kubernetes API call failed.
    #[error("{context}: {}", store::describe(source))]
    Kube {
        /// What was being done, where.
        context: String,
        /// kube-rs's error.
        #[source]
        source: kube::Error,
    },
    /// The reconcile loop or a store failed.
    #[error(transparent)]
    Ops(#[from] meshca_ops::Error),
    /// Leadership was lost; the process should stop so another replica takes over.
    #[error("lost the leader lease {0}")]
    LostLease(String),
}
