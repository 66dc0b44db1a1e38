//! `meshca sign-csr`: a cluster's CSR signed with the intermediate profile.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use time::OffsetDateTime;

use meshca::{Csr, IntermediateParams, PrivateKey};
use meshca_ops::{fs, Error};

use crate::failure::{usage, CmdResult};
use crate::io::{days, guard_overwrite, load_ca, print_written, read_input};

#[derive(Args, Debug)]
pub(crate) struct SignCsrArgs {
    /// The signing CA bundle directory.
    #[arg(long)]
    pub(crate) ca: PathBuf,
    /// The signing CA's key in a PKCS#11 token (RFC 7512, e.g. pkcs11:token=meshca;object=root-ca),
    /// for a --ca directory that holds only the public files.
    #[arg(long, value_name = "URI")]
    pub(crate) ca_key_uri: Option<String>,
    #[command(flatten)]
    pub(crate) pkcs11: crate::args::Pkcs11Args,
    /// The CSR (PEM).
    #[arg(long)]
    pub(crate) csr: PathBuf,
    /// Directory for ca-cert.pem, cert-chain.pem, root-cert.pem. If it holds the cluster's
    /// ca-key.pem (as `meshca csr` leaves it), the result is a complete, validated bundle.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Lifetime in days (1 to 36500).
    #[arg(long, default_value_t = 365)]
    pub(crate) days: i64,
    /// Cluster name (default: the CSR's subject L). The profile, not the CSR, decides the rest.
    #[arg(long)]
    pub(crate) cluster: Option<String>,
    /// pathLenConstraint.
    #[arg(long, default_value_t = 0)]
    pub(crate) pathlen: u8,
    /// Subject organization.
    #[arg(long, default_value = "Istio")]
    pub(crate) org: String,
    /// Sign as if at this time (RFC 3339).
    #[arg(long, value_parser = crate::args::time)]
    pub(crate) at: Option<OffsetDateTime>,
    /// Replace certificates already in --out.
    #[arg(long)]
    pub(crate) force: bool,
}

pub(crate) fn run(a: SignCsrArgs) -> CmdResult {
    let now = crate::args::now_or(a.at);
    guard_overwrite(&a.out, &["ca-cert.pem", "cert-chain.pem", "root-cert.pem"], a.force)?;
    let signer = load_ca(&a.ca, a.ca_key_uri.as_deref(), &a.pkcs11, now)?;
    let csr_file = a.csr.display().to_string();
    let data = read_input(&a.csr)?;
    let request = Csr::from_pem(&data, &csr_file).map_err(Error::core("sign-csr"))?;
    let cluster = match (&a.cluster, request.requested_cluster()) {
        (Some(c), _) => c.clone(),
        (None, Some(c)) => c.to_owned(),
        (None, None) => {
            return Err(usage(format!(
                "{csr_file}: the CSR names no cluster (subject L; it asks for {}); pass --cluster",
                request.subject()
            )))
        }
    };
    let mut p = IntermediateParams::new(&cluster);
    p.ttl = days(a.days, "--days")?;
    p.pathlen = a.pathlen;
    p.organization = a.org;
    let issued = signer.sign_intermediate_csr(&request, &p, &mut meshca::OsRng, now).map_err(Error::core(&cluster))?;
    let signed = issued.value;
    // With the cluster's key beside it, check the whole bundle before writing anything.
    let key_path = a.out.join("ca-key.pem");
    let complete = if key_path.exists() {
        let key_pem = read_input(&key_path)?;
        let key = PrivateKey::from_pem(&key_pem, &key_path.display().to_string()).map_err(Error::core("sign-csr"))?;
        Some(signed.clone().into_cacerts(key, now).map_err(Error::core(a.out.display()))?)
    } else {
        None
    };
    let written = fs::write_files(&a.out, &signed.to_files()).map_err(Error::from)?;
    outln!(
        "{} for key {} ({}), expires {}",
        signed.cert().subject(),
        request.key_type(),
        csr_file,
        meshca::format_time(signed.cert().not_after())
    );
    print_written(&written);
    if let Some(b) = complete {
        outln!(
            "{} is now a complete cacerts bundle, valid until {}",
            a.out.display(),
            meshca::format_time(b.not_after())
        );
    } else {
        outln!("the cluster adds its ca-key.pem to these three files to complete its cacerts bundle");
    }
    Ok(ExitCode::SUCCESS)
}
