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
    /// Generate the key inside this PKCS#11 token instead (e.g. for a management intermediate
    /// an external PKI signs): --out gets ca-csr.pem and ca-key.uri, no key file.
    #[arg(long, value_name = "URI")]
    pub(crate) key_uri: Option<String>,
    #[command(flatten)]
    pub(crate) pkcs11: crate::args::Pkcs11Args,
}

pub(crate) fn run(a: CsrArgs) -> CmdResult {
    guard_overwrite(&a.out, &["ca-key.pem", "ca-csr.pem", meshca_ops::pkcs11::KEY_URI_FILE], a.force)?;
    let mut files = Files::new();
    match &a.key_uri {
        None => {
            let key = PrivateKey::generate(a.key, &mut meshca::OsRng).map_err(Error::core("csr"))?;
            let csr_pem = Csr::generate_pem(&a.cluster, &a.org, &key).map_err(Error::core("csr"))?;
            files.insert("ca-key.pem", key.to_pkcs8_pem().as_bytes().to_vec());
            files.insert("ca-csr.pem", csr_pem.into_bytes());
        }
        Some(uri) => {
            let key = meshca_ops::pkcs11::TokenKey::generate(&a.pkcs11.access(uri)?, a.key)?;
            let uri = key.uri().to_owned();
            let csr_pem = Csr::generate_pem_with(&a.cluster, &a.org, &meshca::CaKey::External(key))
                .map_err(Error::core("csr"))?;
            files.insert("ca-csr.pem", csr_pem.into_bytes());
            files.insert(meshca_ops::pkcs11::KEY_URI_FILE, format!("{uri}\n").into_bytes());
            outln!("key generated in the token: {uri} (not extractable)");
        }
    }
    let written = fs::write_files(&a.out, &files).map_err(Error::from)?;
    outln!("key ({}) and CSR for cluster {}", a.key.key_type(), a.cluster);
    print_written(&written);
    outln!(
        "next: send {} to the CA; it runs: meshca sign-csr --ca <ca-dir> --csr ca-csr.pem --out {}",
        a.out.join("ca-csr.pem").display(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
