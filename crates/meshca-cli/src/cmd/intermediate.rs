//! `meshca intermediate`: a cluster's intermediate CA as a `cacerts` bundle.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use time::OffsetDateTime;

use meshca::{IntermediateParams, KeyAlgorithm, Layout};
use meshca_ops::{fs, Error};

use crate::failure::{refused, CmdResult};
use crate::io::{days, guard_overwrite, load_ca, print_written};

#[derive(Args, Debug)]
pub(crate) struct IntermediateArgs {
    /// The signing CA: a bundle directory (a root from `root-ca`, or a management intermediate
    /// whose cert-chain.pem runs up to an external root).
    #[arg(long, required_unless_present = "vault_addr", conflicts_with = "vault_addr")]
    pub(crate) ca: Option<PathBuf>,
    /// The signing CA's key in a PKCS#11 token (RFC 7512, e.g. pkcs11:token=meshca;object=root-ca),
    /// for a --ca directory that holds only the public files.
    #[arg(long, value_name = "URI")]
    pub(crate) ca_key_uri: Option<String>,
    #[command(flatten)]
    pub(crate) pkcs11: crate::args::Pkcs11Args,
    #[command(flatten)]
    pub(crate) vault: crate::args::VaultArgs,
    /// Cluster name (written to the subject's L).
    #[arg(long)]
    pub(crate) cluster: String,
    /// Directory to write the bundle into.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Lifetime in days, 1 to 36500 (clamped to the signer's).
    #[arg(long, default_value_t = 365)]
    pub(crate) days: i64,
    /// Key algorithm: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096.
    #[arg(long, default_value = "ecdsa-p256")]
    pub(crate) key: KeyAlgorithm,
    /// pathLenConstraint (0: the cluster CA signs only workloads).
    #[arg(long, default_value_t = 0)]
    pub(crate) pathlen: u8,
    /// The mesh's trust domain; checked, and used in the suggested `meshca leaf` command.
    #[arg(long, default_value = "cluster.local")]
    pub(crate) trust_domain: String,
    /// Subject organization.
    #[arg(long, default_value = "Istio")]
    pub(crate) org: String,
    /// File names: istio (ca-cert.pem ...) or tls (tls.crt, tls.key, ca.crt).
    #[arg(long, default_value = "istio")]
    pub(crate) layout: Layout,
    /// Issue as if at this time (RFC 3339).
    #[arg(long, value_parser = crate::args::time)]
    pub(crate) at: Option<OffsetDateTime>,
    /// Replace a bundle already in --out.
    #[arg(long)]
    pub(crate) force: bool,
}

pub(crate) fn run(a: IntermediateArgs) -> CmdResult {
    let now = crate::args::now_or(a.at);
    meshca::validate_trust_domain(&a.trust_domain).map_err(|e| refused(format!("--trust-domain: {e}")))?;
    guard_overwrite(&a.out, &[Layout::Istio.files(), Layout::Tls.files()].concat(), a.force)?;
    let mut p = IntermediateParams::new(&a.cluster);
    p.ttl = days(a.days, "--days")?;
    p.key = a.key;
    p.pathlen = a.pathlen;
    p.organization = a.org;
    let issued = match &a.ca {
        Some(ca) => {
            let signer = load_ca(ca, a.ca_key_uri.as_deref(), &a.pkcs11, now)?;
            signer.issue_intermediate(&p, &mut meshca::OsRng, now).map_err(Error::core(&a.cluster))?
        }
        // The PKI signs; meshca makes the key and checks the answer against its profile.
        None => {
            let vault = a.vault.connect()?;
            let issuer = vault.issuer_files()?;
            let roots = meshca::parse_roots(issuer.get(meshca::ROOT_CERT).unwrap_or_default(), "the PKI's root", now)
                .map_err(Error::core(vault.describe()))?;
            let request = meshca::CaRequest::new(&p, &mut meshca::OsRng).map_err(Error::core(&a.cluster))?;
            let answer = vault.sign_intermediate(&request)?;
            request.accept(&answer, &roots, &vault.describe(), now).map_err(Error::core(&a.cluster))?
        }
    };
    let bundle = issued.value;
    let written = fs::write_files(&a.out, &bundle.to_files(a.layout)).map_err(Error::from)?;
    let c = bundle.ca_cert();
    outln!("{} ({}), expires {}", c.subject(), a.key.key_type(), meshca::format_time(c.not_after()));
    if let Some(wanted) = issued.clamped_from {
        outln!("  note: lifetime cut to the signing CA's notAfter (asked for {})", meshca::format_time(wanted));
    }
    outln!("  chain {} -> root {}", bundle.path().len(), bundle.root().subject());
    print_written(&written);
    outln!("next: meshca secret {} | kubectl --context <{}> apply -f -", a.out.display(), a.cluster);
    outln!(
        "      meshca leaf --ca {} --spiffe spiffe://{}/ns/default/sa/default --out {}-workload",
        a.out.display(),
        a.trust_domain,
        a.cluster
    );
    Ok(ExitCode::SUCCESS)
}
