//! The one error type of the CLI crate. Messages name the file or field and what would fix it.

use std::path::PathBuf;

pub use crate::fs::IoError;

/// Everything the CLI edge can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),

    /// The policy file is not a valid RootTrustPolicy.
    #[error("{file}: {detail}")]
    Policy {
        /// The policy file.
        file: String,
        /// What is wrong, naming the field path.
        detail: String,
    },

    /// The core refused something; `context` says which bundle or input.
    #[error("{context}: {source}")]
    Core {
        /// Which bundle, directory or input.
        context: String,
        /// The core's error.
        #[source]
        source: meshca::Error,
    },

    /// An output location already holds something different.
    #[error(
        "{}: already holds a different bundle; meshca does not overwrite CA material unless you pass --force",
        path.display()
    )]
    WouldOverwrite {
        /// The directory.
        path: PathBuf,
    },

    /// Someone else changed the Secret since it was read (HTTP 409); re-read and re-plan.
    #[error("{location}: changed by someone else since it was read (conflict); re-reading")]
    Conflict {
        /// The Secret.
        location: String,
    },

    /// The Secret exists but was not written by meshca.
    #[error(
        "{location}: exists but is not managed by meshca (no app.kubernetes.io/managed-by=meshca label); it was \
         probably made by hand. meshca leaves it alone; pass --adopt to let meshca replace it"
    )]
    NotManaged {
        /// The Secret.
        location: String,
    },

    /// Something in the directory store is not what meshca writes there (a symlink where a
    /// directory belongs, a `..data` link that leads elsewhere): meshca refuses the Secret and
    /// touches nothing of it.
    #[error(
        "{}: {problem}; meshca refuses this Secret and changes nothing in it (it never follows a link out of \
         the store, nor writes or deletes through one): inspect it, then move it away or fix it by hand",
        path.display()
    )]
    UnsafeStorePath {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },

    /// Another run holds the store's lock and did not release it in time.
    #[error(
        "{}: another meshca run holds the store's lock ({holder}) and did not release it within {waited_secs} s; \
         wait for it to finish, or wait longer",
        path.display()
    )]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as it wrote itself into the lock file.
        holder: String,
        /// How long this run waited.
        waited_secs: u64,
    },

    /// A store (Kubernetes API, file system) failed in a way that is not the input's fault.
    #[error("{location}: {detail}")]
    Store {
        /// Which cluster, Secret or object.
        location: String,
        /// What failed (HTTP status, timeout, connection refused...).
        detail: String,
    },

    /// Any other bad input (a flag value, an unreadable dump).
    #[error("{0}")]
    Input(String),
}

impl Error {
    /// Wraps a core error with the bundle or input it concerns.
    pub fn core(context: impl std::fmt::Display) -> impl FnOnce(meshca::Error) -> Error {
        let context = context.to_string();
        move |source| Error::Core { context, source }
    }
}
