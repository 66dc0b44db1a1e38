//! `meshca csr`: a cluster's key and CSR; the key never leaves.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use meshca::{Csr, Files, KeyAlgorithm, PrivateKey};
use meshca_ops::{fs, Error};

use crate::failure::CmdResult;
use crate::io::{guard_overwrite, print_written};

#[derive(Args, Debug)]
pub(crate) struct CsrArgs {
    /// Cluster name (the CSR's subject L).
    #[arg(long)]
    pub(crate) cluster: String,
    /// Directory for ca-key.pem (kept here) and ca-csr.pem (send this one).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Key algorithm.
    #[arg(long, default_value = "ecdsa-p256")]
    pub(crate) key: KeyAlgorithm,
    /// Subject organization.
    #[arg(long, default_value = "Istio")]
    pub(crate) org: String,
    /// Replace a key already in --out.
    #[arg(long)]
    pub(crate) force: bool,
}

pub(crate) fn run(a: CsrArgs) -> CmdResult {
    guard_overwrite(&a.out, &["ca-key.pem", "ca-csr.pem"], a.force)?;
    let key = PrivateKey::generate(a.key, &mut meshca::OsRng).map_err(Error::core("csr"))?;
    let csr_pem = Csr::generate_pem(&a.cluster, &a.org, &key).map_err(Error::core("csr"))?;
    let mut files = Files::new();
    files.insert("ca-key.pem", key.to_pkcs8_pem().as_bytes().to_vec());
    files.insert("ca-csr.pem", csr_pem.into_bytes());
    let written = fs::write_files(&a.out, &files).map_err(Error::from)?;
    println!("key ({}) and CSR for cluster {}", a.key.key_type(), a.cluster);
    print_written(&written);
    println!(
        "next: send {} to the CA; it runs: meshca sign-csr --ca <ca-dir> --csr ca-csr.pem --out {}",
        a.out.join("ca-csr.pem").display(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
