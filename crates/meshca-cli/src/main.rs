//! `meshca`: Istio multi-cluster CA material in one binary.
//!
//! Layout: this file parses the command line and maps results to exit codes; [`args`] holds the
//! flag groups several commands share; each command is a module under [`cmd`] (its flags and
//! `run`); [`render`] turns typed reports into the words users read; [`io`] reads what users
//! name and opens stores; [`failure`] is the one error a command returns, with the flag hints
//! the libraries leave out.

#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[macro_use]
mod output;
mod args;
mod cmd;
mod failure;
mod io;
mod render;

use failure::Failure;

const EXIT_HELP: &str = "\
Exit codes: 0 success; 1 a check failed or meshca refused an input (invalid bundle, key, CSR or
policy; a cluster name it will not act on; a cluster that failed to reconcile); 2 usage error.";

/// PKI for Istio multi-cluster trust: a shared root, a `cacerts` intermediate per cluster,
/// SPIFFE workload certificates, verification and rotation.
///
/// New here? Run `meshca quickstart`: it does the whole multi-cluster workflow in a local
/// directory (no cluster needed) and tells you what to run next.
#[derive(Parser, Debug)]
#[command(name = "meshca", version = env!("MESHCA_VERSION"), after_help = EXIT_HELP, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a root CA as a signing bundle (all four files hold the root, like Gloo's
    /// management Secret).
    RootCa(cmd::root_ca::RootCaArgs),
    /// Issue a cluster's intermediate CA as a `cacerts` bundle (Istio's `make <cluster>-cacerts`).
    Intermediate(cmd::intermediate::IntermediateArgs),
    /// Issue a workload certificate as istiod would (SPIFFE URI SAN, empty subject).
    Leaf(cmd::leaf::LeafArgs),
    /// In a cluster: make a key and a CSR for its intermediate; the key never leaves.
    Csr(cmd::csr::CsrArgs),
    /// At the CA: sign a cluster's CSR with the intermediate profile.
    SignCsr(cmd::sign_csr::SignCsrArgs),
    /// Validate bundles and check they share a root; or compare sidecars' secrets.
    Verify(cmd::verify::VerifyArgs),
    /// Show what a bundle directory, PEM file or sidecar secret dump holds.
    Inspect(cmd::inspect::InspectArgs),
    /// Print a bundle as a Kubernetes Secret manifest for `kubectl apply -f -`.
    Secret(cmd::secret::SecretArgs),
    /// Issue, rotate or keep every cluster's `cacerts` per a RootTrustPolicy.
    Reconcile(cmd::reconcile::ReconcileArgs),
    /// Re-issue clusters' intermediates now, whatever the rotation plan says (--cluster NAME or
    /// --all); the old intermediate is not revoked and stays trusted until it expires.
    Rotate(cmd::rotate::RotateArgs),
    /// The fleet at a glance: each cluster's CA expiry, next rotation, whether istiod loaded
    /// what meshca wrote, the roots, a root rotation's phase and the revocation list (nothing
    /// is written).
    Status(cmd::status::StatusArgs),
    /// Print the fleet's trust set as the last run published it: a SPIFFE bundle (JWK Set) or
    /// PEM (spec.config.trustDistribution; what the controller's bundle endpoint serves).
    Bundle(cmd::bundle::BundleArgs),
    /// Revoke a compromised cluster CA: a new key and intermediate for it now, and a CRL set in
    /// every cluster's bundle so every other cluster refuses what the old one signed.
    Revoke(cmd::revoke::RevokeArgs),
    /// Take a revocation back: the CRL set is republished without it.
    Unrevoke(cmd::revoke::UnrevokeArgs),
    /// The fleet's revocation list and CRL set: show it, or clear every entry.
    #[command(subcommand)]
    Crl(cmd::revoke::CrlCommand),
    /// The whole workflow in a fresh local store: root, policy, three clusters, verification,
    /// and a real mTLS handshake between clusters.
    Quickstart(cmd::quickstart::QuickstartArgs),
    /// Be the Kubernetes signer for istiod's RA mode: answer the CertificateSigningRequests of
    /// the clusters the policy's workloadSigning covers, with their intermediates kept on the
    /// management side (--kube, --cluster NAME=CONTEXT).
    Signer(cmd::signer::SignerArgs),
    /// Run the Kubernetes controller: watch RootTrustPolicy objects, keep every workload
    /// cluster's cacerts rotated (clusters from Istio's remote secrets).
    Controller(cmd::controller::ControllerArgs),
    /// Print the RootTrustPolicy CustomResourceDefinition (`meshca crd | kubectl apply -f -`).
    Crd,
    /// Print shell completions: `meshca completions bash > /etc/bash_completion.d/meshca`
    /// (zsh: into a directory on $fpath as `_meshca`; fish: ~/.config/fish/completions/meshca.fish).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `meshca man > /usr/local/share/man/man1/meshca.1`.
    Man,
    /// Rotate the root without downtime: start, show status, roll back, forget a cluster. (Or
    /// name the new CA in the policy's spec.config.rootRotation.) `reconcile` applies the
    /// current step (new root added everywhere, new intermediates, old root removed).
    #[command(subcommand)]
    RotateRoot(cmd::rotate_root::RotateRootCommand),
    /// The issuance log (spec.config.auditLog): every CA certificate and CRL meshca wrote, in
    /// an RFC 6962 Merkle tree with signed checkpoints: log, checkpoint, verify, prove.
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::RootCa(a) => cmd::root_ca::run(a),
        Command::Intermediate(a) => cmd::intermediate::run(a),
        Command::Leaf(a) => cmd::leaf::run(a),
        Command::Csr(a) => cmd::csr::run(a),
        Command::SignCsr(a) => cmd::sign_csr::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Secret(a) => cmd::secret::run(a),
        Command::Reconcile(a) => cmd::reconcile::run(a),
        Command::Rotate(a) => cmd::rotate::run(a),
        Command::Status(a) => cmd::status::run(a),
        Command::Bundle(a) => cmd::bundle::run(a),
        Command::Revoke(a) => cmd::revoke::run_revoke(a),
        Command::Unrevoke(a) => cmd::revoke::run_unrevoke(a),
        Command::Crl(c) => cmd::revoke::run_crl(c),
        Command::Quickstart(a) => cmd::quickstart::run(a),
        Command::Controller(a) => cmd::controller::run(a),
        Command::Signer(a) => cmd::signer::run(a),
        Command::RotateRoot(c) => cmd::rotate_root::run(c),
        Command::Audit(c) => cmd::audit::run(c),
        Command::Crd => {
            out!("{}", meshca_kube::crd::crd_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            // Rendered whole, then written: clap_complete panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "meshca", &mut script);
            output::stdout_bytes(&script);
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            let mut out = Vec::new();
            match page.render(&mut out) {
                Ok(()) => {
                    output::stdout_bytes(&out);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(Failure { code: 1, message: format!("cannot render the man page: {e}") }),
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            errln!("meshca: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
