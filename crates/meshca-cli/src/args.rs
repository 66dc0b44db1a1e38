//! Flag groups shared by several commands, flattened into each (`#[command(flatten)]`), and
//! the value parsers that turn flag text into typed values.

use std::path::PathBuf;

use clap::Args;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `--at`: an RFC 3339 time. Commands take `Option<OffsetDateTime>` and default to the clock.
pub(crate) fn time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("not an RFC 3339 time like 2026-11-28T12:00:00Z ({e})"))
}

/// A cluster as a command line names it: `NAME`, or with `--kube` `NAME=CONTEXT` (a kubeconfig
/// context; CONTEXT defaults to NAME). The one place `NAME=CONTEXT` is split; the name is
/// checked where each command checks its clusters (refused input, exit 1), not here (clap's
/// usage errors exit 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClusterSpec {
    /// The cluster's name.
    pub(crate) name: String,
    /// The kubeconfig context, when given (`=CONTEXT`; possibly empty, which `--kube` refuses).
    pub(crate) context: Option<String>,
}

impl std::str::FromStr for ClusterSpec {
    type Err = std::convert::Infallible;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        Ok(match spec.split_once('=') {
            Some((name, context)) => ClusterSpec { name: name.to_owned(), context: Some(context.to_owned()) },
            None => ClusterSpec { name: spec.to_owned(), context: None },
        })
    }
}

impl std::fmt::Display for ClusterSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.context {
            Some(c) => write!(f, "{}={c}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl ClusterSpec {
    /// The names of `specs`.
    pub(crate) fn names(specs: &[ClusterSpec]) -> Vec<String> {
        specs.iter().map(|c| c.name.clone()).collect()
    }
}

/// The time a command works at: `--at`, else now.
pub(crate) fn now_or(at: Option<OffsetDateTime>) -> OffsetDateTime {
    at.unwrap_or_else(OffsetDateTime::now_utc)
}

/// How long a run that writes the directory store waits for another run to release it.
#[derive(Args, Debug, Clone)]
pub(crate) struct LockArgs {
    /// Seconds to wait for another meshca run that holds the store's lock (0 to 86400).
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub(crate) lock_timeout: u64,
}

/// Where Kubernetes clusters are found: `--kube` with kubeconfig contexts.
#[derive(Args, Debug, Clone)]
pub(crate) struct KubeArgs {
    /// Use the Kubernetes API of real clusters instead of a directory store.
    #[arg(long)]
    pub(crate) kube: bool,
    /// The kubeconfig (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, requires = "kube")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Let meshca replace a `cacerts` it did not create (a hand-made one).
    #[arg(long, requires = "kube")]
    pub(crate) adopt: bool,
    /// Bound on each Kubernetes API call, in seconds (1 to 3600).
    #[arg(long, default_value_t = 20, requires = "kube", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) timeout: u64,
}

/// A policy's store: a directory (`--store`) or Kubernetes (`--kube`), with its management
/// cluster.
#[derive(Args, Debug, Clone)]
pub(crate) struct StoreArgs {
    /// The RootTrustPolicy YAML (Gloo's admin.gloo.solo.io/v2 as written, or meshca.dev/v1alpha1).
    #[arg(long)]
    pub(crate) policy: PathBuf,
    /// The directory store: STORE/<cluster>/<namespace>/<secret>/<key>.
    #[arg(long, required_unless_present = "kube", conflicts_with = "kube")]
    pub(crate) store: Option<PathBuf>,
    /// The cluster holding the signing CA Secret. With --kube: NAME[=CONTEXT] (default: the
    /// current context).
    #[arg(long, default_value = "mgmt")]
    pub(crate) mgmt_cluster: ClusterSpec,
    #[command(flatten)]
    pub(crate) kube: KubeArgs,
}

/// CRLs the operator supplies, for the commands that run a policy (and so publish its CRL set).
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct UpstreamCrlArgs {
    /// PEM CRLs of the CAs above the signing CA (an upstream PKI meshca cannot reach), published
    /// with the fleet's CRL set; taken before the policy's mgmtServerCa.upstreamCrlSecretRef.
    #[arg(long, value_name = "FILE")]
    pub(crate) upstream_crl: Option<PathBuf>,
}

/// How a CA key kept in a PKCS#11 token (an HSM, SoftHSM2) is reached. The PIN is never a
/// flag value: it comes from a file or the environment.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct Pkcs11Args {
    /// The PKCS#11 module (shared library) of the token holding the CA key, e.g.
    /// /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, value_name = "PATH", env = meshca_ops::pkcs11::MODULE_ENV)]
    pub(crate) pkcs11_module: Option<PathBuf>,
    /// A file holding the token's user PIN (otherwise $MESHCA_PKCS11_PIN).
    #[arg(long, value_name = "FILE")]
    pub(crate) pin_file: Option<PathBuf>,
}

impl Pkcs11Args {
    /// The PIN: `--pin-file`, else `$MESHCA_PKCS11_PIN`, else none.
    pub(crate) fn pin(&self) -> Result<Option<meshca_ops::pkcs11::Pin>, crate::failure::Failure> {
        use meshca_ops::pkcs11::{Pin, PIN_ENV};
        if let Some(f) = &self.pin_file {
            return Ok(Some(Pin::from_file(f)?));
        }
        match std::env::var(PIN_ENV) {
            Ok(v) => Ok(Some(Pin::new(&v).map_err(|e| crate::failure::refused(format!("${PIN_ENV}: {e}")))?)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(crate::failure::refused(format!("${PIN_ENV} is not UTF-8"))),
        }
    }

    /// What opens the key `uri`: the module and a PIN are both required.
    pub(crate) fn access(&self, uri: &str) -> Result<meshca_ops::pkcs11::KeyAccess, crate::failure::Failure> {
        use crate::failure::usage;
        let uri = meshca_ops::pkcs11::KeyUri::parse(uri)?;
        let module = self.pkcs11_module.clone().ok_or_else(|| {
            usage(format!(
                "{uri} is a key in a PKCS#11 token: give its module with --pkcs11-module PATH (or $MESHCA_PKCS11_MODULE)"
            ))
        })?;
        if let Some(expected) = &uri.module_path {
            let same = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            if same(expected) != same(&module) {
                return Err(usage(format!(
                    "{uri} names the module {}, but --pkcs11-module is {}",
                    expected.display(),
                    module.display()
                )));
            }
        }
        let pin = self.pin()?.ok_or_else(|| {
            usage(format!("{uri}: the token needs its user PIN: --pin-file FILE, or $MESHCA_PKCS11_PIN"))
        })?;
        Ok(meshca_ops::pkcs11::KeyAccess { module, uri, pin })
    }

    /// What a policy run passes on (the policy names the key; its PIN may be in a Secret).
    /// Refused, naming the flag, when the policy keeps its signing key in a token, or (for a
    /// run that `writes`) its issuance log's key, and no module is given.
    pub(crate) fn token(
        &self,
        policy: &meshca_ops::policy::Policy,
        policy_file: &std::path::Path,
        writes: bool,
    ) -> Result<meshca_ops::reconcile::TokenAccess, crate::failure::Failure> {
        // The log key signs only what is written: a dry run or status needs no token for it.
        let log_key = policy.audit_log.as_ref().and_then(|a| a.token.as_ref()).filter(|_| writes);
        for (what, k) in [("the signing key", policy.signer_key.as_ref()), ("the issuance log's key", log_key)] {
            if let (Some(k), None) = (k, &self.pkcs11_module) {
                return Err(crate::failure::usage(format!(
                    "{}: {what} is in a PKCS#11 token ({}): give its module with --pkcs11-module PATH (or \
                     $MESHCA_PKCS11_MODULE)",
                    policy_file.display(),
                    k.uri
                )));
            }
        }
        Ok(meshca_ops::reconcile::TokenAccess::new(self.pkcs11_module.clone(), self.pin()?))
    }
}

/// The OpenBao/Vault PKI that signs, for commands that take it on the command line. The token
/// comes from a file or the environment, never from a flag's value.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct VaultArgs {
    /// The OpenBao/Vault server (https://, or http:// to a loopback address): its PKI signs.
    #[arg(long, value_name = "URL")]
    pub(crate) vault_addr: Option<String>,
    /// The PKI secrets engine's path.
    #[arg(long, value_name = "PATH", default_value = "pki", requires = "vault_addr")]
    pub(crate) vault_mount: String,
    /// The issuer to sign with (issuer_ref).
    #[arg(long, value_name = "REF", default_value = "default", requires = "vault_addr")]
    pub(crate) vault_issuer: String,
    /// A file holding the token (else $VAULT_TOKEN, then $BAO_TOKEN).
    #[arg(long, value_name = "FILE", requires = "vault_addr")]
    pub(crate) vault_token_file: Option<std::path::PathBuf>,
    /// The PEM CA that serves the server's TLS (default: the Mozilla root set).
    #[arg(long, value_name = "FILE", requires = "vault_addr")]
    pub(crate) vault_ca_cert: Option<std::path::PathBuf>,
}

impl VaultArgs {
    /// Connects with the token given, refusing (naming the flags) without one.
    pub(crate) fn connect(&self) -> Result<meshca_ops::vault::Vault, crate::failure::Failure> {
        use crate::failure::usage;
        let given = self.vault_addr.as_deref().unwrap_or_default();
        let address = meshca_ops::policy::vault_address(given).ok_or_else(|| {
            usage(
                "--vault-addr must be an https:// URL without credentials, query or fragment (http:// only to a \
                   loopback address)",
            )
        })?;
        if !meshca_ops::policy::vault_path(&self.vault_mount) {
            return Err(usage("--vault-mount must be a path of letters, digits, '-', '_', '.' separated by '/'"));
        }
        if !meshca_ops::policy::vault_path(&self.vault_issuer) || self.vault_issuer.contains('/') {
            return Err(usage("--vault-issuer must be an issuer name or ID (letters, digits, '-', '_', '.')"));
        }
        let token = vault_token(self.vault_token_file.as_deref())?
            .ok_or_else(|| usage("the PKI needs a token: --vault-token-file FILE, or $VAULT_TOKEN (or $BAO_TOKEN)"))?;
        let ca_cert_pem = match &self.vault_ca_cert {
            Some(f) => Some(meshca_ops::fs::read_input(f).map_err(meshca_ops::Error::from)?),
            None => None,
        };
        let connect = meshca_ops::vault::Connect {
            address,
            mount: self.vault_mount.clone(),
            issuer: self.vault_issuer.clone(),
            ca_cert_pem,
            call_timeout: meshca_ops::vault::CALL_TIMEOUT,
        };
        Ok(meshca_ops::vault::Vault::login(connect, meshca_ops::vault::Login::Token(token))?)
    }
}

/// The token for the PKI: `file`, else `$VAULT_TOKEN`, else `$BAO_TOKEN`; `None` without any.
pub(crate) fn vault_token(
    file: Option<&std::path::Path>,
) -> Result<Option<meshca_ops::vault::VaultToken>, crate::failure::Failure> {
    use meshca_ops::vault::VaultToken;
    if let Some(f) = file {
        let bytes = meshca_ops::fs::read_input(f).map_err(meshca_ops::Error::from)?;
        return Ok(Some(VaultToken::from_bytes(&bytes, &f.display().to_string())?));
    }
    for var in ["VAULT_TOKEN", "BAO_TOKEN"] {
        if let Some(v) = std::env::var_os(var) {
            return Ok(Some(VaultToken::from_bytes(v.as_encoded_bytes(), &format!("${var}"))?));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_is_parsed_as_rfc3339_or_refused_with_an_example() {
        assert_eq!(time("2026-11-28T12:00:00Z").map(|t| t.unix_timestamp()), Ok(1_795_867_200));
        let e = time("tomorrow").unwrap_err();
        assert!(e.starts_with("not an RFC 3339 time like 2026-11-28T12:00:00Z"), "{e}");
    }
}
