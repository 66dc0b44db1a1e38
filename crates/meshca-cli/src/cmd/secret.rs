//! `meshca secret`: a bundle as a Kubernetes Secret manifest.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use time::OffsetDateTime;

use meshca::Layout;
use meshca_ops::{manifest, policy};

use crate::failure::{usage, CmdResult};
use crate::io::load_bundle;

#[derive(Args, Debug)]
pub(crate) struct SecretArgs {
    /// The bundle directory.
    pub(crate) dir: PathBuf,
    /// Secret name.
    #[arg(long, default_value = "cacerts")]
    pub(crate) name: String,
    /// Namespace.
    #[arg(long, default_value = "istio-system")]
    pub(crate) namespace: String,
    /// Key names: istio or tls.
    #[arg(long, default_value = "istio")]
    pub(crate) layout: Layout,
    /// Validate as of this time (RFC 3339).
    #[arg(long, value_parser = crate::args::time)]
    pub(crate) at: Option<OffsetDateTime>,
}

pub(crate) fn run(a: SecretArgs) -> CmdResult {
    let now = crate::args::now_or(a.at);
    policy::check_name("--name", &a.name).map_err(|e| usage(e.to_string()))?;
    policy::check_name("--namespace", &a.namespace).map_err(|e| usage(e.to_string()))?;
    let (b, crl) = load_bundle(&a.dir, now)?;
    out!("{}", manifest::secret_manifest_with_crl(&b, crl.as_deref(), &a.name, &a.namespace, a.layout));
    Ok(ExitCode::SUCCESS)
}
