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
