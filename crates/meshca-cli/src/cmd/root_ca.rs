//! `meshca root-ca`: a root CA as a signing bundle.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use time::OffsetDateTime;

use meshca::{KeyAlgorithm, Layout, RootParams, SigningCa};
use meshca_ops::{fs, Error};

use crate::failure::CmdResult;
use crate::io::{days, guard_overwrite, print_written};

#[derive(Args, Debug)]
pub(crate) struct RootCaArgs {
    /// Directory to write ca-cert.pem, ca-key.pem, cert-chain.pem and root-cert.pem into.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Key algorithm: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096.
    #[arg(long, default_value = "ecdsa-p256")]
    pub(crate) key: KeyAlgorithm,
    /// Lifetime in days (1 to 36500).
    #[arg(long, default_value_t = 3650)]
    pub(crate) days: i64,
    /// Subject common name.
    #[arg(long, default_value = "Root CA")]
    pub(crate) cn: String,
    /// Subject organization.
    #[arg(long, default_value = "Istio")]
    pub(crate) org: String,
    /// pathLenConstraint (default: none, as Istio's root).
    #[arg(long)]
    pub(crate) pathlen: Option<u8>,
    /// Replace CA material already in --out.
    #[arg(long)]
    pub(crate) force: bool,
}

pub(crate) fn run(a: RootCaArgs) -> CmdResult {
    guard_overwrite(&a.out, Layout::Istio.files(), a.force)?;
    let mut p = RootParams::default();
    p.key = a.key;
    p.ttl = days(a.days, "--days")?;
    p.common_name = a.cn;
    p.organization = a.org;
    p.pathlen = a.pathlen;
    let now = OffsetDateTime::now_utc();
    let root = SigningCa::generate_root(&p, &mut meshca::OsRng, now).map_err(Error::core("root-ca"))?;
    let written = fs::write_files(&a.out, &root.bundle().to_files(Layout::Istio)).map_err(Error::from)?;
    let c = root.bundle().ca_cert();
    println!("root CA {} ({}), expires {}", c.subject(), a.key.key_type(), meshca::format_time(c.not_after()));
    println!("  sha256 {}", c.fingerprint_sha256());
    print_written(&written);
    println!("next: meshca intermediate --ca {} --cluster cluster1 --out cluster1", a.out.display());
    Ok(ExitCode::SUCCESS)
}
