//! meshca's operations at the edge of the pure core: files (atomic, keys 0600), Secret stores
//! (the directory store here; the Kubernetes store in meshca-kube), the RootTrustPolicy, the
//! reconcile loop, root rotation, inspection, and the mTLS proof. The core decides everything
//! about certificates; this crate reads, writes and reports. Shared by the `meshca` binary, the
//! Kubernetes crate, the Python bindings and the examples.
//!
//! # Layers
//!
//! ```text
//! meshca (pure: bytes in, typed values and decisions out; `now` and randomness are arguments)
//!   └─ meshca-ops (this crate): Store trait + DirStore, policy, the one Secret writer,
//!        reconcile, root rotation, typed reports and errors
//!        ├─ meshca-kube: KubeStore (kube-rs), the controller, the CRD
//!        ├─ meshca-cli: flags, files, rendering of reports into words
//!        └─ bindings/python
//! ```
//!
//! Data flows one way: a [`store::Store`] yields bytes, the core turns them into typed values
//! and a [`meshca::Plan`], [`reconcile`] and [`rootrotation`] act on the plan through the one
//! [`writer::Writer`] (validate, label, write atomically, read back), and the run is returned as
//! a typed [`reconcile::Report`] or [`rootrotation::RotationReport`]. Errors are one
//! [`Error`] enum whose messages name the Secret, file or field and never a command-line flag.
//!
//! # Example
//!
//! Reconcile the seed's policy onto two clusters of a directory store:
//!
//! ```
//! use meshca_ops::reconcile::{self, Action, Options};
//! use meshca_ops::store::{DirStore, SecretRef};
//! use meshca_ops::writer::{Owner, Writer};
//! use meshca_ops::policy;
//!
//! let dir = std::env::temp_dir().join(format!("meshca-ops-doc-{}", std::process::id()));
//! let store = DirStore::new(&dir);
//! let now = time::OffsetDateTime::now_utc();
//! let pol = policy::parse(policy::SEED_POLICY, "policy.yaml")?;
//!
//! // The signing CA the policy names, where the policy says it is.
//! let root = meshca::SigningCa::generate_root(&meshca::RootParams::default(), &mut meshca::OsRng, now)?;
//! let (namespace, name) = pol.signer.secret();
//! let signer = SecretRef::new("mgmt", namespace, name);
//! Writer::new(&store, &pol, None, now, false).write_signer(&signer, &root, Owner::User)?;
//!
//! let opts = Options::new(now, vec!["east".into(), "west".into()]);
//! let report = reconcile::reconcile(&store, &pol, &opts, &mut meshca::OsRng, &mut |_, _| {})?;
//! assert!(report.ok());
//! assert!(report.clusters.iter().all(|c| c.action == Action::Issued));
//!
//! // A second run at the same time keeps both.
//! let again = reconcile::reconcile(&store, &pol, &opts, &mut meshca::OsRng, &mut |_, _| {})?;
//! assert!(again.clusters.iter().all(|c| c.action == Action::Kept));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod audit;
pub mod context;
pub mod crl_sources;
pub mod describe;
pub mod distribution;
pub mod error;
pub mod fs;
pub mod manifest;
pub mod mtls;
mod phase;
pub mod pkcs11;
pub mod policy;
pub mod proxy;
pub mod ra;
pub mod reconcile;
pub mod refusal;
pub mod report;
pub mod revocation;
pub mod revocation_list;
pub mod rootrotation;
mod serde_time;
pub mod signer;
pub mod store;
pub mod vault;
pub mod writer;

pub use error::Error;
