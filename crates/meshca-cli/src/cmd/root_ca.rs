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
    /// Generate the key inside this PKCS#11 token instead (RFC 7512 URI, e.g.
    /// pkcs11:token=meshca;object=root-ca): not extractable, it never leaves the token. --out then
    /// gets only the public files and ca-key.uri naming the key.
    #[arg(long, value_name = "URI")]
    pub(crate) key_uri: Option<String>,
    #[command(flatten)]
    pub(crate) pkcs11: crate::args::Pkcs11Args,
}

pub(crate) fn run(a: RootCaArgs) -> CmdResult {
    let mut guarded = Layout::Istio.files().to_vec();
    guarded.push(meshca_ops::pkcs11::KEY_URI_FILE);
    guard_overwrite(&a.out, &guarded, a.force)?;
    let mut p = RootParams::default();
    p.key = a.key;
    p.ttl = days(a.days, "--days")?;
    p.common_name = a.cn;
    p.organization = a.org;
    p.pathlen = a.pathlen;
    let now = OffsetDateTime::now_utc();
    let (root, files) = match &a.key_uri {
        None => {
            let root = SigningCa::generate_root(&p, &mut meshca::OsRng, now).map_err(Error::core("root-ca"))?;
            let files = root.bundle().to_files(Layout::Istio);
            (root, files)
        }
        Some(uri) => {
            // Checked before the key is made: a refused name would leave a key object behind
            // under the label, and the next attempt would find the label taken.
            meshca::validate_subject_attr("--cn", &p.common_name).map_err(Error::core("root-ca"))?;
            meshca::validate_subject_attr("--org", &p.organization).map_err(Error::core("root-ca"))?;
            let access = a.pkcs11.access(uri)?;
            let key = meshca_ops::pkcs11::TokenKey::generate(&access, a.key)?;
            let uri = key.uri().to_owned();
            let root =
                SigningCa::generate_root_with_key(&p, key, &mut meshca::OsRng, now).map_err(Error::core("root-ca"))?;
            let mut files = root.bundle().to_files(Layout::Istio);
            files.insert(meshca_ops::pkcs11::KEY_URI_FILE, format!("{uri}\n"));
            outln!("key generated in the token: {uri} (not extractable)");
            (root, files)
        }
    };
    let written = fs::write_files(&a.out, &files).map_err(Error::from)?;
    let stale_key = a.out.join(meshca::CA_KEY);
    if a.key_uri.is_some() && stale_key.symlink_metadata().is_ok() {
        // With --force over an earlier root: its key file would sit beside a certificate it
        // does not match. Removed only once the new files are in place.
        std::fs::remove_file(&stale_key).map_err(|e| {
            crate::failure::refused(format!("{}: cannot remove the earlier root's key: {e}", stale_key.display()))
        })?;
        outln!("  removed {} (the earlier root's key)", stale_key.display());
    }
    let c = root.bundle().ca_cert();
    outln!("root CA {} ({}), expires {}", c.subject(), a.key.key_type(), meshca::format_time(c.not_after()));
    outln!("  sha256 {}", c.fingerprint_sha256());
    print_written(&written);
    let module = if a.key_uri.is_some() { " --pkcs11-module <module> --pin-file <pin-file>" } else { "" };
    outln!("next: meshca intermediate --ca {}{module} --cluster cluster1 --out cluster1", a.out.display());
    Ok(ExitCode::SUCCESS)
}
