//! meshca's operations at the edge of the pure core: files (atomic, keys 0600), Secret stores
//! (the directory store here; the Kubernetes store in meshca-kube), the RootTrustPolicy, the
//! reconcile loop, inspection, and the mTLS proof. The core decides everything about
//! certificates; this crate reads, writes and reports. Shared by the `meshca` binary, the
//! Kubernetes crate, the Python bindings and the examples.
#![warn(missing_docs)]

pub mod describe;
pub mod error;
pub mod fs;
pub mod manifest;
pub mod mtls;
pub mod policy;
pub mod proxy;
pub mod reconcile;
pub mod rootrotation;
pub mod store;

pub use error::Error;
