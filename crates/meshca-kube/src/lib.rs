//! Kubernetes I/O for meshca, on kube-rs: Secrets to and from the core's `Cacerts`, clusters from
//! kubeconfig contexts or Istio's multicluster remote secrets, and a controller for the
//! RootTrustPolicy custom resource. It makes no PKI decision of its own: the reconcile loop and
//! the rotation plan come from meshca-ops and the core.
#![warn(missing_docs)]

pub mod clusters;
pub mod controller;
pub mod crd;
pub mod leader;
pub mod store;

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
