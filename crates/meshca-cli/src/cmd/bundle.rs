//! `meshca bundle`: the fleet's trust set as the last run published it (what the controller's
//! SPIFFE bundle endpoint serves): a SPIFFE bundle (a JWK Set with `spiffe_sequence` and
//! `spiffe_refresh_hint`) or the roots as PEM. Reads only.

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::args::StoreArgs;
use crate::failure::{refused, CmdResult};
use crate::io::{load_policy, open_store};

/// The document's form.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Format {
    /// A SPIFFE bundle (JWK Set), as a bundle endpoint serves it.
    Spiffe,
    /// The roots, as PEM.
    Pem,
}

#[derive(Args, Debug)]
pub(crate) struct BundleArgs {
    #[command(flatten)]
    pub(crate) target: StoreArgs,
    /// The document's form.
    #[arg(long, value_enum, default_value = "spiffe")]
    pub(crate) format: Format,
}

pub(crate) fn run(a: BundleArgs) -> CmdResult {
    let pol = load_policy(&a.target.policy)?;
    let opened = open_store(&a.target, &[])?;
    let published = meshca_ops::distribution::load(opened.store.as_ref(), &pol, &opened.mgmt)?;
    let Some(p) = published else {
        let state = meshca_ops::distribution::state_secret(&pol, &opened.mgmt);
        let hint = if pol.trust_distribution.is_some() {
            "run `meshca reconcile` (or the controller) once to publish it"
        } else {
            "add spec.config.trustDistribution to the policy, then run `meshca reconcile` (or the controller)"
        };
        return Err(refused(format!(
            "no trust set is published for policy {} yet ({} does not exist): {hint}",
            pol.name,
            opened.store.location(&state)
        )));
    };
    match a.format {
        Format::Spiffe => out!("{}", p.spiffe_bundle(&pol)),
        Format::Pem => out!("{}", p.set.pem()),
    }
    Ok(ExitCode::SUCCESS)
}
