//! The one error a command returns: a message and the exit code it maps to. Library errors
//! name no flags; the hints that do are added here, where the flags are known.

use std::process::ExitCode;

use meshca_ops::rootrotation::Refusal;
use meshca_ops::Error;

/// An error and the exit code it maps to.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let mut message = e.to_string();
        if let Some(h) = hint(&e) {
            message.push_str(&h);
        }
        Failure { code: 1, message }
    }
}

/// What the user can pass or run to get past `e`, in this binary's words.
pub(crate) fn hint(e: &Error) -> Option<String> {
    Some(match e {
        Error::WouldOverwrite { .. } => "; pass --force to replace it".into(),
        Error::NotManaged { .. } => "; pass --adopt to let meshca replace it".into(),
        Error::SignerNotFound { location, .. } => format!(", or create it with `meshca root-ca --out {location}`"),
        Error::LockTimeout { .. } => " (--lock-timeout)".into(),
        Error::Rotation(Refusal::DrivenByPolicy) => " (rather than running rotate-root start)".into(),
        Error::Revocation(meshca_ops::revocation::Refusal::ReplacementOfRevoked { cluster, serial }) => {
            format!(": meshca revoke --cluster {cluster} --serial {serial}")
        }
        _ => return None,
    })
}

/// A usage error: exit 2.
pub(crate) fn usage(message: impl Into<String>) -> Failure {
    Failure { code: 2, message: message.into() }
}

/// Refused input (a bad cluster name, SPIFFE ID or file): exit 1, as any other refusal.
pub(crate) fn refused(message: impl Into<String>) -> Failure {
    Failure { code: 1, message: message.into() }
}

/// What a command returns.
pub(crate) type CmdResult = Result<ExitCode, Failure>;
