//! `meshca leaf`: a workload certificate as istiod issues it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use time::OffsetDateTime;

use meshca::{KeyAlgorithm, LeafParams, SpiffeId};
use meshca_ops::{fs, Error};

use crate::failure::{refused, usage, CmdResult};
use crate::io::{guard_overwrite, load_ca, print_written};

#[derive(Args, Debug)]
pub(crate) struct LeafArgs {
    /// The issuing CA bundle (a cluster's cacerts).
    #[arg(long)]
    pub(crate) ca: PathBuf,
    /// The signing CA's key in a PKCS#11 token (RFC 7512, e.g. pkcs11:token=meshca;object=root-ca),
    /// for a --ca directory that holds only the public files.
    #[arg(long, value_name = "URI")]
    pub(crate) ca_key_uri: Option<String>,
    #[command(flatten)]
    pub(crate) pkcs11: crate::args::Pkcs11Args,
    /// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>
    #[arg(long)]
    pub(crate) spiffe: String,
    /// Directory for cert-chain.pem, key.pem, root-cert.pem.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Lifetime in hours (istiod: 24; 1 to 2160, istiod's 90-day maximum).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(i64).range(meshca::bounds::LEAF_TTL_HOURS.0..=meshca::bounds::LEAF_TTL_HOURS.1))]
    pub(crate) hours: i64,
    /// Key algorithm.
    #[arg(long, default_value = "ecdsa-p256")]
    pub(crate) key: KeyAlgorithm,
    /// Issue as if at this time (RFC 3339).
    #[arg(long, value_parser = crate::args::time)]
    pub(crate) at: Option<OffsetDateTime>,
    /// Replace files already in --out.
    #[arg(long)]
    pub(crate) force: bool,
}

pub(crate) fn run(a: LeafArgs) -> CmdResult {
    let now = crate::args::now_or(a.at);
    let id: SpiffeId = a.spiffe.parse().map_err(|e: meshca::Error| refused(format!("--spiffe: {e}")))?;
    guard_overwrite(&a.out, &meshca::LEAF_FILES, a.force)?;
    let signer = load_ca(&a.ca, a.ca_key_uri.as_deref(), &a.pkcs11, now)?;
    let mut p = LeafParams::new(id);
    p.ttl = meshca::bounds::leaf_ttl_hours(a.hours).map_err(|e| usage(format!("--hours {e}")))?;
    p.key = a.key;
    let issued = signer.issue_leaf(&p, &mut meshca::OsRng, now).map_err(Error::core("leaf"))?;
    let l = issued.value;
    let written = fs::write_files(&a.out, &l.to_files()).map_err(Error::from)?;
    outln!("{} ({}), expires {}", a.spiffe, a.key.key_type(), meshca::format_time(l.cert().not_after()));
    if issued.clamped_from.is_some() {
        outln!("  note: lifetime cut to the issuing CA's notAfter");
    }
    print_written(&written);
    Ok(ExitCode::SUCCESS)
}
