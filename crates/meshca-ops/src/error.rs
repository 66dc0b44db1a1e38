//! The one error type of meshca-ops. Messages name the file or field and what would fix it.

use std::path::PathBuf;

/// An I/O failure, naming the path and what was being done.
#[derive(Debug)]
pub struct IoError {
    /// The path involved.
    pub path: PathBuf,
    /// What meshca was doing.
    pub action: &'static str,
    /// The operating system's error.
    pub source: std::io::Error,
}

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: cannot {}: {}", self.path.display(), self.action, self.source)
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Everything meshca-ops can report. Messages name the file, Secret or field, never a
/// command-line flag (the CLI adds those as hints).
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

    /// An output location already holds something different (the caller may offer a way to
    /// replace it on purpose).
    #[error("{}: already holds a different bundle; meshca does not overwrite CA material unless told to", path.display())]
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
         probably made by hand. meshca leaves it alone unless told to adopt it"
    )]
    NotManaged {
        /// The Secret.
        location: String,
    },

    /// A Secret meshca would create (a generated CA, the incoming CA of a root rotation, its
    /// own state) exists already and is not this policy's: meshca never replaces it.
    #[error(
        "{location}: meshca would create this Secret, but one of that name already exists and {owner}; meshca \
         never replaces a Secret it did not make: move it away (or rename the policy), then run again"
    )]
    Occupied {
        /// The Secret.
        location: String,
        /// Whose it is: "is not managed by meshca" or "belongs to policy ns/name".
        owner: String,
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

    /// A name that cannot be a path component of the directory store.
    #[error(
        "{what} name `{name}` cannot be used in the directory store (letters, digits, '-', '_', '.'; not \
         starting with '.')"
    )]
    UnsafeName {
        /// cluster, namespace or secret.
        what: &'static str,
        /// The name.
        name: String,
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

    /// The signing CA's Secret does not exist.
    #[error(
        "signing CA Secret {secret} not found at {location}; put your CA's ca-cert.pem, ca-key.pem, cert-chain.pem \
         and root-cert.pem there"
    )]
    SignerNotFound {
        /// The Secret.
        secret: String,
        /// Where the store looked.
        location: String,
    },

    /// A Secret the policy names does not exist, or lacks what it must hold.
    #[error("{field}: Secret {secret} {problem}; {fix}")]
    PolicySecret {
        /// The policy field naming the Secret.
        field: String,
        /// The Secret and where it was looked for.
        secret: String,
        /// `not found at <location>`, `(<location>) has neither ...`.
        problem: String,
        /// What to put there.
        fix: &'static str,
    },

    /// A root rotation's stored state cannot be read.
    #[error("{location}: {detail}")]
    RotationState {
        /// The state Secret.
        location: String,
        /// What is wrong with it.
        detail: String,
    },

    /// The root rotation refused to go on (or to start, roll back, forget).
    #[error(transparent)]
    Rotation(#[from] crate::refusal::RootRotationRefusal),

    /// A revocation command was refused.
    #[error(transparent)]
    Revocation(#[from] crate::refusal::RevocationRefusal),

    /// The stored revocation list (or its CRL set) is unreadable.
    #[error("{location}: {detail}")]
    RevocationList {
        /// The Secret holding it.
        location: String,
        /// What is wrong with it.
        detail: String,
    },

    /// A CA above the signing CA has no current CRL to publish (with CRLs in use, Envoy refuses
    /// every chain through a CA without one): nothing is written.
    #[error(
        "no current CRL of {ca} (a CA above the signing CA) to publish: {problem}; with CRLs in use every CA of \
         every chain needs one, and meshca publishes no expired CRL: {fix}"
    )]
    UpstreamCrl {
        /// The CA.
        ca: String,
        /// What was found.
        problem: String,
        /// What would fix it.
        fix: String,
    },

    /// A PKCS#11 module, token, PIN or key failed, or was not what the URI names. Nothing is
    /// written when this happens.
    #[error("{key}: {detail}")]
    Pkcs11 {
        /// The key URI (never with a PIN), module or PIN source.
        key: String,
        /// What failed and what would fix it.
        detail: String,
    },

    /// The PKI that signs (OpenBao/Vault) failed or refused a call. Nothing is written when this
    /// happens; every cluster keeps the bundle it had.
    #[error("{provider}: {call}: {fault}: {detail}; {}", fault.fix())]
    Provider {
        /// The provider, as its address and mount (never a token).
        provider: String,
        /// The call (`POST pki/issuer/default/sign-intermediate`, `login (AppRole)`).
        call: String,
        /// What kind of failure.
        fault: ProviderFault,
        /// What the provider said (its own error messages, bounded), or what failed to reach it.
        detail: String,
    },

    /// A sidecar's secret dump (`istioctl proxy-config secret -o json`) is not usable.
    #[error("{source_name}: {detail}")]
    ProxyDump {
        /// The dump's file name.
        source_name: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// What kind of [`Error`] it is, without its details: for reports, status and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file or directory could not be read or written.
    Io,
    /// The policy is invalid.
    Policy,
    /// The core refused a bundle, key or input.
    Invalid,
    /// Would overwrite CA material.
    WouldOverwrite,
    /// Someone else wrote the Secret meanwhile.
    Conflict,
    /// The Secret exists and is not meshca's.
    NotManaged,
    /// The directory store holds something meshca does not write.
    UnsafeStorePath,
    /// Another run holds the store's lock.
    LockTimeout,
    /// The store (API server, file system) failed.
    Store,
    /// A Secret meshca needs is missing or incomplete.
    MissingSecret,
    /// The root rotation refused, or its state is unreadable.
    Rotation,
    /// The HSM (PKCS#11 module, token, PIN or key) failed.
    Hsm,
    /// A revocation was refused, or the revocation list is unreadable.
    Revocation,
    /// The PKI that signs (OpenBao/Vault) failed, refused, or answered wrongly.
    Provider,
}

impl ErrorKind {
    /// The kind as reports, status and metric labels write it (`store`, `not-managed`, ...;
    /// the same as its serialized form).
    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| "unknown".into())
    }
}

impl Error {
    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io(_) => ErrorKind::Io,
            Error::Core { source: meshca::Error::ExternalKey { .. }, .. } => ErrorKind::Hsm,
            Error::Core { source: meshca::Error::ProviderCertificate { .. }, .. } => ErrorKind::Provider,
            Error::Policy { .. } => ErrorKind::Policy,
            Error::Core { .. } | Error::UnsafeName { .. } | Error::ProxyDump { .. } => ErrorKind::Invalid,
            Error::WouldOverwrite { .. } => ErrorKind::WouldOverwrite,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::NotManaged { .. } | Error::Occupied { .. } => ErrorKind::NotManaged,
            Error::UnsafeStorePath { .. } => ErrorKind::UnsafeStorePath,
            Error::LockTimeout { .. } => ErrorKind::LockTimeout,
            Error::Store { .. } => ErrorKind::Store,
            Error::SignerNotFound { .. } | Error::PolicySecret { .. } => ErrorKind::MissingSecret,
            Error::RotationState { .. } | Error::Rotation(_) => ErrorKind::Rotation,
            Error::Pkcs11 { .. } => ErrorKind::Hsm,
            Error::Provider { .. } => ErrorKind::Provider,
            Error::Revocation(_) | Error::RevocationList { .. } | Error::UpstreamCrl { .. } => ErrorKind::Revocation,
        }
    }

    /// Wraps a core error with the bundle or input it concerns.
    pub fn core(context: impl std::fmt::Display) -> impl FnOnce(meshca::Error) -> Error {
        let context = context.to_string();
        move |source| Error::Core { context, source }
    }
}

/// A parser's message with every value it quotes taken out: a policy, clusters file or dump
/// that is really a key file must not reach a terminal or a log through an error. Field names
/// (short identifiers in backticks) stay; quoted strings and anything else in backticks go.
pub fn redact(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(i) = rest.find(['"', '`']) {
        out.push_str(&rest[..i]);
        let quote = rest[i..].chars().next().unwrap_or('"');
        let after = &rest[i + 1..];
        let Some(end) = after.find(quote) else {
            out.push_str("(value not shown)");
            rest = "";
            break;
        };
        let inner = &after[..end];
        let identifier = quote == '`'
            && inner.len() <= 64
            && inner.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'));
        if identifier {
            out.push('`');
            out.push_str(inner);
            out.push('`');
        } else {
            out.push_str("(value not shown)");
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    let mut out: String = out.chars().filter(|c| !c.is_control()).take(400).collect();
    if out.len() >= 400 {
        out.push('…');
    }
    out
}

/// A YAML syntax error as `line L, column C: what` (never the source snippet the parser can
/// render: it would show the file's content).
pub fn yaml_error(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").trim_start_matches("error: ");
    // saphyr starts its message with the location; keep ours, which does not depend on that.
    let what = first.split_once(": ").filter(|(l, _)| l.starts_with("line ")).map_or(first, |(_, w)| w);
    match e.location() {
        Some(l) => format!("line {}, column {}: {}", l.line(), l.column(), redact(what)),
        None => redact(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_field_names_and_drops_values() {
        let m = redact("invalid type: string \"-----BEGIN PRIVATE KEY----- MIIEsecret\", expected struct RawPolicy");
        assert_eq!(m, "invalid type: string (value not shown), expected struct RawPolicy");
        let m = redact("unknown field `colour`, expected one of `ttlDays`, `orgName`");
        assert_eq!(m, "unknown field `colour`, expected one of `ttlDays`, `orgName`");
        let m = redact("invalid value: `MIIEsecret value with spaces`, expected x");
        assert_eq!(m, "invalid value: (value not shown), expected x");
        assert_eq!(redact("unterminated \"MIIE"), "unterminated (value not shown)");
        let e = serde_saphyr::from_str::<serde_json::Value>("key: \"MIIEsecretvalue\n").unwrap_err();
        let m = yaml_error(&e);
        assert!(m.starts_with("line 1, column 6: ") && !m.contains("MIIE"), "{m}");
    }
}

/// Why a call to the PKI that signs failed: the `reason` label of
/// `meshca_provider_errors_total`, and the fix each one needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ProviderFault {
    /// No connection (refused, no route, DNS, TLS).
    Unreachable,
    /// It did not answer in time.
    Timeout,
    /// The server is sealed.
    Sealed,
    /// The token or login was refused (401/403).
    PermissionDenied,
    /// The mount, issuer or auth method does not exist (404).
    NotFound,
    /// It refused the request (another 4xx).
    Refused,
    /// It failed (5xx other than sealed).
    ServerError,
    /// It answered with something that is not the API's answer.
    BadAnswer,
    /// meshca has no credentials to give it.
    NoCredentials,
}

impl ProviderFault {
    /// The label (`unreachable`, `sealed`, ...).
    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| "unknown".into())
    }

    /// What would fix it.
    pub fn fix(self) -> &'static str {
        match self {
            ProviderFault::Unreachable => "check the address, that the server runs, and its TLS CA (caCertSecretRef)",
            ProviderFault::Timeout => "the server is slow or a network path drops packets; meshca retries next pass",
            ProviderFault::Sealed => "unseal it (bao operator unseal); meshca retries next pass",
            ProviderFault::PermissionDenied => {
                "give the token or role a policy allowing update on <mount>/issuer/<ref>/sign-intermediate and read \
                 on <mount>/issuer/<ref>/json"
            }
            ProviderFault::NotFound => "check mount and issuer (bao secrets list; bao list <mount>/issuers)",
            ProviderFault::Refused => "fix what it names; meshca sends a CSR, a TTL and max_path_length",
            ProviderFault::ServerError => "see the server's log; meshca retries next pass",
            ProviderFault::BadAnswer => "check that the address is OpenBao or Vault, not a proxy's error page",
            ProviderFault::NoCredentials => {
                "set mgmtServerCa.vault.auth, or give meshca a token (VAULT_TOKEN, BAO_TOKEN or a token file)"
            }
        }
    }
}

impl std::fmt::Display for ProviderFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProviderFault::Unreachable => "unreachable",
            ProviderFault::Timeout => "timed out",
            ProviderFault::Sealed => "sealed",
            ProviderFault::PermissionDenied => "permission denied",
            ProviderFault::NotFound => "not found",
            ProviderFault::Refused => "refused",
            ProviderFault::ServerError => "server error",
            ProviderFault::BadAnswer => "bad answer",
            ProviderFault::NoCredentials => "no credentials",
        })
    }
}
