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
    pub(crate) mgmt_cluster: String,
    #[command(flatten)]
    pub(crate) kube: KubeArgs,
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
