//! `meshca`: Istio multi-cluster CA material in one binary.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use meshca::{
    Cacerts, Csr, Files, IntermediateParams, KeyAlgorithm, Layout, LeafParams, PrivateKey, RootParams, SigningCa,
    SpiffeId,
};
use meshca_ops::describe::{cert_view, write_tree};
use meshca_ops::reconcile::{self, Action, Options, Report};
use meshca_ops::store::{DirStore, SecretRef, Store, WriteMeta};
use meshca_ops::{fs, manifest, mtls, policy, proxy, Error};

const EXIT_HELP: &str = "\
Exit codes: 0 success; 1 a check failed or meshca refused an input (invalid bundle, key, CSR or
policy; a cluster that failed to reconcile); 2 usage error.";

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
    RootCa(RootCaArgs),
    /// Issue a cluster's intermediate CA as a `cacerts` bundle (Istio's `make <cluster>-cacerts`).
    Intermediate(IntermediateArgs),
    /// Issue a workload certificate as istiod would (SPIFFE URI SAN, empty subject).
    Leaf(LeafArgs),
    /// In a cluster: make a key and a CSR for its intermediate; the key never leaves.
    Csr(CsrArgs),
    /// At the CA: sign a cluster's CSR with the intermediate profile.
    SignCsr(SignCsrArgs),
    /// Validate bundles and check they share a root; or compare sidecars' secrets.
    Verify(VerifyArgs),
    /// Show what a bundle directory, PEM file or sidecar secret dump holds.
    Inspect(InspectArgs),
    /// Print a bundle as a Kubernetes Secret manifest for `kubectl apply -f -`.
    Secret(SecretArgs),
    /// Issue, rotate or keep every cluster's `cacerts` per a RootTrustPolicy.
    Reconcile(ReconcileArgs),
    /// The whole workflow in a fresh local store: root, policy, three clusters, verification,
    /// and a real mTLS handshake between clusters.
    Quickstart(QuickstartArgs),
    /// Run the Kubernetes controller: watch RootTrustPolicy objects, keep every workload
    /// cluster's cacerts rotated (clusters from Istio's remote secrets).
    Controller(ControllerArgs),
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
    RotateRoot(RotateRootCommand),
}

#[derive(Subcommand, Debug)]
enum RotateRootCommand {
    /// Begin rotating to the signing CA in --new-ca (a new root, or an intermediate under one).
    Start(RotateStartArgs),
    /// Show the phase and, per cluster, whether it has reached the phase's target.
    Status(RotateCommonArgs),
    /// Roll back (possible until the old root starts being removed).
    Rollback(RotateCommonArgs),
    /// Stop waiting for the --cluster clusters: they left the mesh (a step waits for every
    /// cluster any run of the rotation has seen).
    Forget(RotateCommonArgs),
}

#[derive(Args, Debug)]
struct RotateCommonArgs {
    /// The RootTrustPolicy YAML.
    #[arg(long)]
    policy: PathBuf,
    /// The directory store.
    #[arg(long, required_unless_present = "kube", conflicts_with = "kube")]
    store: Option<PathBuf>,
    /// Workload clusters: for `status`, the ones to show; for `start`, every cluster the
    /// rotation must wait for (runs add the clusters they name); for `forget`, the ones to
    /// drop. With --kube: NAME=CONTEXT.
    #[arg(long = "cluster", value_name = "NAME")]
    clusters: Vec<String>,
    /// The management cluster. With --kube: NAME[=CONTEXT] (default: the current context).
    #[arg(long, default_value = "mgmt")]
    mgmt_cluster: String,
    #[command(flatten)]
    kube: KubeArgs,
    /// As of this time (RFC 3339).
    #[arg(long)]
    at: Option<String>,
    #[command(flatten)]
    lock: LockArgs,
}

impl RotateCommonArgs {
    /// The directory store's lock, for a subcommand that writes it (none with --kube).
    fn lock_store(&self, command: &str) -> Result<Option<meshca_ops::store::StoreLock>, Failure> {
        self.store.as_ref().map(|dir| lock_store(&DirStore::new(dir), &self.lock, command)).transpose()
    }
}

/// How long a run that writes the directory store waits for another run to release it.
#[derive(Args, Debug, Clone)]
struct LockArgs {
    /// Seconds to wait for another meshca run that holds the store's lock (0 to 86400).
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    lock_timeout: u64,
}

#[derive(Args, Debug)]
struct RotateStartArgs {
    #[command(flatten)]
    common: RotateCommonArgs,
    /// The new signing CA bundle directory.
    #[arg(long)]
    new_ca: PathBuf,
    /// Wait this long after every cluster completes a step before the next (default: 24 h, the
    /// longest workload certificate lifetime istiod issues by default; 0 to 8760).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(i64).range(0..=8760))]
    dwell_hours: i64,
}

/// Where Kubernetes clusters are found: `--kube` with kubeconfig contexts.
#[derive(Args, Debug, Clone)]
struct KubeArgs {
    /// Use the Kubernetes API of real clusters instead of a directory store.
    #[arg(long)]
    kube: bool,
    /// The kubeconfig (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, requires = "kube")]
    kubeconfig: Option<PathBuf>,
    /// Let meshca replace a `cacerts` it did not create (a hand-made one).
    #[arg(long, requires = "kube")]
    adopt: bool,
    /// Bound on each Kubernetes API call, in seconds (1 to 3600).
    #[arg(long, default_value_t = 20, requires = "kube", value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
}

#[derive(Args, Debug)]
struct ControllerArgs {
    /// The kubeconfig of the management cluster (default: in-cluster config, else $KUBECONFIG).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// kubeconfig context of the management cluster.
    #[arg(long)]
    context: Option<String>,
    /// Watch policies in this namespace only (default: all).
    #[arg(long)]
    namespace: Option<String>,
    /// Where Istio's remote secrets (istio/multiCluster=true) are.
    #[arg(long, default_value = "istio-system")]
    remote_secret_namespace: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, default_value = "meshca-system")]
    lease_namespace: String,
    /// This replica's identity (default: $POD_NAME, else the host name).
    #[arg(long)]
    identity: Option<String>,
    /// Name of the management cluster in reports.
    #[arg(long, default_value = "mgmt")]
    mgmt_cluster: String,
    /// Let meshca replace `cacerts` Secrets it did not create.
    #[arg(long)]
    adopt: bool,
    /// Bound on each Kubernetes API call, in seconds (1 to 3600).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
}

#[derive(Args, Debug)]
struct RootCaArgs {
    /// Directory to write ca-cert.pem, ca-key.pem, cert-chain.pem and root-cert.pem into.
    #[arg(long)]
    out: PathBuf,
    /// Key algorithm: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096.
    #[arg(long, default_value = "ecdsa-p256")]
    key: KeyAlgorithm,
    /// Lifetime in days (1 to 36500).
    #[arg(long, default_value_t = 3650)]
    days: i64,
    /// Subject common name.
    #[arg(long, default_value = "Root CA")]
    cn: String,
    /// Subject organization.
    #[arg(long, default_value = "Istio")]
    org: String,
    /// pathLenConstraint (default: none, as Istio's root).
    #[arg(long)]
    pathlen: Option<u8>,
    /// Replace CA material already in --out.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct IntermediateArgs {
    /// The signing CA: a bundle directory (a root from `root-ca`, or a management intermediate
    /// whose cert-chain.pem runs up to an external root).
    #[arg(long)]
    ca: PathBuf,
    /// Cluster name (written to the subject's L).
    #[arg(long)]
    cluster: String,
    /// Directory to write the bundle into.
    #[arg(long)]
    out: PathBuf,
    /// Lifetime in days, 1 to 36500 (clamped to the signer's).
    #[arg(long, default_value_t = 365)]
    days: i64,
    /// Key algorithm: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096.
    #[arg(long, default_value = "ecdsa-p256")]
    key: KeyAlgorithm,
    /// pathLenConstraint (0: the cluster CA signs only workloads).
    #[arg(long, default_value_t = 0)]
    pathlen: u8,
    /// The mesh's trust domain; checked, and used in the suggested `meshca leaf` command.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Subject organization.
    #[arg(long, default_value = "Istio")]
    org: String,
    /// File names: istio (ca-cert.pem ...) or tls (tls.crt, tls.key, ca.crt).
    #[arg(long, default_value = "istio")]
    layout: Layout,
    /// Issue as if at this time (RFC 3339).
    #[arg(long)]
    at: Option<String>,
    /// Replace a bundle already in --out.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct LeafArgs {
    /// The issuing CA bundle (a cluster's cacerts).
    #[arg(long)]
    ca: PathBuf,
    /// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>
    #[arg(long)]
    spiffe: String,
    /// Directory for cert-chain.pem, key.pem, root-cert.pem.
    #[arg(long)]
    out: PathBuf,
    /// Lifetime in hours (istiod: 24; 1 to 2160, istiod's 90-day maximum).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(i64).range(1..=2160))]
    hours: i64,
    /// Key algorithm.
    #[arg(long, default_value = "ecdsa-p256")]
    key: KeyAlgorithm,
    /// Issue as if at this time (RFC 3339).
    #[arg(long)]
    at: Option<String>,
    /// Replace files already in --out.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct CsrArgs {
    /// Cluster name (the CSR's subject L).
    #[arg(long)]
    cluster: String,
    /// Directory for ca-key.pem (kept here) and ca-csr.pem (send this one).
    #[arg(long)]
    out: PathBuf,
    /// Key algorithm.
    #[arg(long, default_value = "ecdsa-p256")]
    key: KeyAlgorithm,
    /// Subject organization.
    #[arg(long, default_value = "Istio")]
    org: String,
    /// Replace a key already in --out.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct SignCsrArgs {
    /// The signing CA bundle directory.
    #[arg(long)]
    ca: PathBuf,
    /// The CSR (PEM).
    #[arg(long)]
    csr: PathBuf,
    /// Directory for ca-cert.pem, cert-chain.pem, root-cert.pem. If it holds the cluster's
    /// ca-key.pem (as `meshca csr` leaves it), the result is a complete, validated bundle.
    #[arg(long)]
    out: PathBuf,
    /// Lifetime in days (1 to 36500).
    #[arg(long, default_value_t = 365)]
    days: i64,
    /// Cluster name (default: the CSR's subject L). The profile, not the CSR, decides the rest.
    #[arg(long)]
    cluster: Option<String>,
    /// pathLenConstraint.
    #[arg(long, default_value_t = 0)]
    pathlen: u8,
    /// Subject organization.
    #[arg(long, default_value = "Istio")]
    org: String,
    /// Sign as if at this time (RFC 3339).
    #[arg(long)]
    at: Option<String>,
    /// Replace certificates already in --out.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// Bundle directories (either layout).
    dirs: Vec<PathBuf>,
    /// With --kube: a cluster as NAME=CONTEXT whose istio-system/cacerts is checked; repeat.
    #[arg(long = "cluster", value_name = "NAME=CONTEXT", requires = "kube")]
    clusters: Vec<String>,
    #[command(flatten)]
    kube: KubeArgs,
    /// A sidecar's `istioctl proxy-config secret <pod> -o json` (or yaml); repeat for each.
    #[arg(long = "proxy-secret", value_name = "FILE")]
    proxy_secrets: Vec<PathBuf>,
    /// Check as of this time (RFC 3339) instead of now.
    #[arg(long)]
    at: Option<String>,
    /// Skip issuing a probe workload certificate from each bundle for the cross-cluster check.
    #[arg(long)]
    no_probe: bool,
    /// Machine-readable output on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// A bundle directory, a PEM file (certificates, key or CSR), or a sidecar secret dump.
    path: PathBuf,
    /// As of this time (RFC 3339) instead of now.
    #[arg(long)]
    at: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct SecretArgs {
    /// The bundle directory.
    dir: PathBuf,
    /// Secret name.
    #[arg(long, default_value = "cacerts")]
    name: String,
    /// Namespace.
    #[arg(long, default_value = "istio-system")]
    namespace: String,
    /// Key names: istio or tls.
    #[arg(long, default_value = "istio")]
    layout: Layout,
    /// Validate as of this time (RFC 3339).
    #[arg(long)]
    at: Option<String>,
}

#[derive(Args, Debug)]
struct ReconcileArgs {
    /// The RootTrustPolicy YAML (Gloo's admin.gloo.solo.io/v2 as written, or meshca.dev/v1alpha1).
    #[arg(long)]
    policy: PathBuf,
    /// The directory store: STORE/<cluster>/<namespace>/<secret>/<key>.
    #[arg(long, required_unless_present = "kube", conflicts_with = "kube")]
    store: Option<PathBuf>,
    /// A workload cluster; repeat for each. With --kube: NAME=CONTEXT (CONTEXT defaults to NAME).
    #[arg(long = "cluster", value_name = "NAME", required_unless_present = "clusters_file")]
    clusters: Vec<String>,
    /// A file with one cluster name per line (# comments allowed).
    #[arg(long, conflicts_with = "clusters")]
    clusters_file: Option<PathBuf>,
    /// The cluster holding the signing CA Secret. With --kube: NAME[=CONTEXT] (default: the
    /// current context).
    #[arg(long, default_value = "mgmt")]
    mgmt_cluster: String,
    #[command(flatten)]
    kube: KubeArgs,
    /// Plan and act as if at this time (RFC 3339): rehearse rotation.
    #[arg(long)]
    at: Option<String>,
    /// Show what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// List every cluster even when there are many.
    #[arg(long, short)]
    verbose: bool,
    #[command(flatten)]
    lock: LockArgs,
}

#[derive(Args, Debug)]
struct QuickstartArgs {
    /// Where to put the store, the policy and the workload certificates.
    #[arg(long, default_value = "meshca-quickstart")]
    dir: PathBuf,
    #[command(flatten)]
    lock: LockArgs,
}

/// An error and the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure { code: 1, message: e.to_string() }
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure { code: 2, message: message.into() }
}

/// Refused input (a bad cluster name, SPIFFE ID or file): exit 1, as any other refusal.
fn refused(message: impl Into<String>) -> Failure {
    Failure { code: 1, message: message.into() }
}

type CmdResult = Result<ExitCode, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::RootCa(a) => root_ca(a),
        Command::Intermediate(a) => intermediate(a),
        Command::Leaf(a) => leaf(a),
        Command::Csr(a) => csr(a),
        Command::SignCsr(a) => sign_csr(a),
        Command::Verify(a) => verify(a),
        Command::Inspect(a) => inspect(a),
        Command::Secret(a) => secret(a),
        Command::Reconcile(a) => reconcile_cmd(a),
        Command::Quickstart(a) => quickstart(a),
        Command::Controller(a) => controller(a),
        Command::RotateRoot(c) => rotate_root(c),
        Command::Crd => {
            print!("{}", meshca_kube::crd::CRD_YAML);
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "meshca",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            let mut out = Vec::new();
            match page.render(&mut out) {
                Ok(()) => {
                    use std::io::Write;
                    let _ = std::io::stdout().write_all(&out);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(Failure { code: 1, message: format!("cannot render the man page: {e}") }),
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("meshca: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn parse_at(at: &Option<String>) -> Result<OffsetDateTime, Failure> {
    match at {
        None => Ok(OffsetDateTime::now_utc()),
        Some(s) => OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|e| usage(format!("--at {s}: not an RFC 3339 time like 2026-11-28T12:00:00Z ({e})"))),
    }
}

fn days(n: i64, flag: &str) -> Result<Duration, Failure> {
    let max = meshca::MAX_CA_TTL.whole_days();
    if !(1..=max).contains(&n) {
        return Err(usage(format!("{flag} must be between 1 and {max}, got {n}")));
    }
    Ok(Duration::days(n))
}

/// Reads a file the user named: a regular file, bounded in size.
fn read_input(path: &Path) -> Result<Vec<u8>, Failure> {
    fs::read_input(path).map_err(|e| Failure::from(Error::Io(e)))
}

/// Reads a text file the user named; the error never shows its content.
fn read_text(path: &Path) -> Result<String, Failure> {
    String::from_utf8(read_input(path)?)
        .map_err(|e| refused(format!("{}: not UTF-8 text (byte {})", path.display(), e.utf8_error().valid_up_to())))
}

/// Takes the directory store's lock for a run that writes, telling the user who holds it while
/// it waits.
fn lock_store(store: &DirStore, lock: &LockArgs, command: &str) -> Result<meshca_ops::store::StoreLock, Failure> {
    let root = store.root().display().to_string();
    let held = store
        .lock(std::time::Duration::from_secs(lock.lock_timeout), command, |holder| {
            eprintln!("meshca: waiting up to {} s for the store {root}, held by {holder}", lock.lock_timeout)
        })
        .map_err(|e| match e {
            e @ Error::LockTimeout { .. } => Failure { code: 1, message: format!("{e} (--lock-timeout)") },
            e => Failure::from(e),
        })?;
    if held.removed_debris > 0 {
        eprintln!("meshca: removed {} leftover entries of interrupted runs from {root}", held.removed_debris);
    }
    Ok(held)
}

/// What a run at a future `--at` time leaves behind: certificates not valid yet.
fn check_future_at(at: OffsetDateTime, kube: bool, dry_run: bool) -> Result<bool, Failure> {
    let future = at > OffsetDateTime::now_utc() + Duration::minutes(5);
    if future && kube && !dry_run {
        return Err(usage(format!(
            "--at {} is in the future: certificates issued now for that time would not be valid yet, and istiod \
             would refuse them; rehearse with --dry-run, or on a directory store",
            meshca::format_time(at)
        )));
    }
    Ok(future && !dry_run)
}

fn load_bundle(dir: &Path, now: OffsetDateTime) -> Result<Cacerts, Error> {
    let files = fs::read_files(dir)?;
    Cacerts::from_files(&files, now).map_err(Error::core(dir.display()))
}

/// What `verify` judged in a directory: a whole bundle, or only its public chain (no key).
enum Verified {
    Bundle(Box<Cacerts>),
    Public(meshca::TrustChain),
}

impl Verified {
    fn chain(&self) -> &meshca::TrustChain {
        match self {
            Verified::Bundle(b) => b.trust_chain(),
            Verified::Public(t) => t,
        }
    }
}

/// A bundle directory, or one without a key (a peer's cert-chain.pem and root-cert.pem, or
/// tls.crt and ca.crt): then every rule but the key match is checked.
fn load_for_verify(dir: &Path, now: OffsetDateTime) -> Result<Verified, Error> {
    let files = fs::read_files(dir)?;
    let public = |chain: &str, roots: &str| files.get(chain).zip(files.get(roots));
    let keyless = !files.contains(meshca::CA_KEY) && !files.contains(meshca::TLS_KEY);
    let found = public(meshca::CERT_CHAIN, meshca::ROOT_CERT).or_else(|| public(meshca::TLS_CRT, meshca::CA_CRT));
    match found {
        Some((chain, roots)) if keyless => {
            meshca::TrustChain::from_pems(chain, roots, now).map(Verified::Public).map_err(Error::core(dir.display()))
        }
        _ => {
            Cacerts::from_files(&files, now).map(|b| Verified::Bundle(Box::new(b))).map_err(Error::core(dir.display()))
        }
    }
}

fn load_signer(dir: &Path, now: OffsetDateTime) -> Result<SigningCa, Error> {
    let files = fs::read_files(dir)?;
    SigningCa::from_files(&files, now).map_err(Error::core(format!("signing CA {}", dir.display())))
}

/// Refuses to replace any of `names` in `dir` unless `force`.
fn guard_overwrite(dir: &Path, names: &[&str], force: bool) -> Result<(), Error> {
    if !force && names.iter().any(|n| dir.join(n).exists()) {
        return Err(Error::WouldOverwrite { path: dir.to_owned() });
    }
    Ok(())
}

fn print_written(paths: &[PathBuf]) {
    for p in paths {
        println!("  wrote {}", p.display());
    }
}

fn root_ca(a: RootCaArgs) -> CmdResult {
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

fn intermediate(a: IntermediateArgs) -> CmdResult {
    let now = parse_at(&a.at)?;
    meshca::validate_trust_domain(&a.trust_domain).map_err(|e| refused(format!("--trust-domain: {e}")))?;
    guard_overwrite(&a.out, &[Layout::Istio.files(), Layout::Tls.files()].concat(), a.force)?;
    let signer = load_signer(&a.ca, now)?;
    let mut p = IntermediateParams::new(&a.cluster);
    p.ttl = days(a.days, "--days")?;
    p.key = a.key;
    p.pathlen = a.pathlen;
    p.organization = a.org;
    let issued = signer.issue_intermediate(&p, &mut meshca::OsRng, now).map_err(Error::core(&a.cluster))?;
    let bundle = issued.value;
    let written = fs::write_files(&a.out, &bundle.to_files(a.layout)).map_err(Error::from)?;
    let c = bundle.ca_cert();
    println!("{} ({}), expires {}", c.subject(), a.key.key_type(), meshca::format_time(c.not_after()));
    if let Some(wanted) = issued.clamped_from {
        println!("  note: lifetime cut to the signing CA's notAfter (asked for {})", meshca::format_time(wanted));
    }
    println!("  chain {} -> root {}", bundle.path().len(), bundle.root().subject());
    print_written(&written);
    println!("next: meshca secret {} | kubectl --context <{}> apply -f -", a.out.display(), a.cluster);
    println!(
        "      meshca leaf --ca {} --spiffe spiffe://{}/ns/default/sa/default --out {}-workload",
        a.out.display(),
        a.trust_domain,
        a.cluster
    );
    Ok(ExitCode::SUCCESS)
}

fn leaf(a: LeafArgs) -> CmdResult {
    let now = parse_at(&a.at)?;
    let id: SpiffeId = a.spiffe.parse().map_err(|e: meshca::Error| refused(format!("--spiffe: {e}")))?;
    guard_overwrite(&a.out, &["cert-chain.pem", "key.pem", "root-cert.pem"], a.force)?;
    let signer = load_signer(&a.ca, now)?;
    let mut p = LeafParams::new(id);
    p.ttl = Duration::hours(a.hours);
    p.key = a.key;
    let issued = signer.issue_leaf(&p, &mut meshca::OsRng, now).map_err(Error::core("leaf"))?;
    let l = issued.value;
    let mut files = Files::new();
    files.insert("cert-chain.pem", l.cert_chain_pem().into_bytes());
    files.insert("key.pem", l.key_pem().as_bytes().to_vec());
    files.insert("root-cert.pem", l.root_cert_pem().into_bytes());
    let written = fs::write_files(&a.out, &files).map_err(Error::from)?;
    println!("{} ({}), expires {}", a.spiffe, a.key.key_type(), meshca::format_time(l.cert().not_after()));
    if issued.clamped_from.is_some() {
        println!("  note: lifetime cut to the issuing CA's notAfter");
    }
    print_written(&written);
    Ok(ExitCode::SUCCESS)
}

fn csr(a: CsrArgs) -> CmdResult {
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

fn sign_csr(a: SignCsrArgs) -> CmdResult {
    let now = parse_at(&a.at)?;
    guard_overwrite(&a.out, &["ca-cert.pem", "cert-chain.pem", "root-cert.pem"], a.force)?;
    let signer = load_signer(&a.ca, now)?;
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
    println!(
        "{} for key {} ({}), expires {}",
        signed.cert().subject(),
        request.key_type(),
        csr_file,
        meshca::format_time(signed.cert().not_after())
    );
    print_written(&written);
    if let Some(b) = complete {
        println!(
            "{} is now a complete cacerts bundle, valid until {}",
            a.out.display(),
            meshca::format_time(b.not_after())
        );
    } else {
        println!("the cluster adds its ca-key.pem to these three files to complete its cacerts bundle");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct BundleStatus {
    path: String,
    ok: bool,
    error: Option<String>,
    subject: Option<String>,
    #[serde(with = "reconcile::rfc3339_opt")]
    not_after: Option<OffsetDateTime>,
    root_fingerprint: Option<String>,
    warnings: Vec<String>,
    /// Checked without a key (the directory held only the public chain).
    public_only: bool,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ProxyStatus {
    path: String,
    ok: bool,
    spiffe_id: Option<String>,
    root_fingerprints: Vec<String>,
    errors: Vec<String>,
    warnings: Vec<String>,
}

/// `NAME=CONTEXT` (or `NAME`, meaning the context of the same name).
fn cluster_context(spec: &str) -> Result<(String, String), Failure> {
    let (name, ctx) = spec.split_once('=').unwrap_or((spec, spec));
    meshca::validate_cluster_name(name).map_err(|e| refused(e.to_string()))?;
    if ctx.is_empty() {
        return Err(usage(format!("--cluster {spec}: the context after '=' is empty")));
    }
    Ok((name.to_owned(), ctx.to_owned()))
}

/// The store a command works on, with the names of its clusters.
struct Opened {
    store: Box<dyn Store>,
    /// The management cluster's name.
    mgmt: String,
    /// Workload cluster names (without `=CONTEXT`).
    clusters: Vec<String>,
    /// Keeps the Kubernetes store's runtime alive.
    _rt: Option<tokio::runtime::Runtime>,
}

/// The directory store at `dir`, or with `--kube` the clusters' Kubernetes APIs (`mgmt` and
/// each cluster as NAME[=CONTEXT]).
fn open_store(dir: Option<&Path>, kube: &KubeArgs, mgmt: &str, clusters: &[String]) -> Result<Opened, Failure> {
    let name = |spec: &str| spec.split('=').next().unwrap_or(spec).to_owned();
    let names: Vec<String> = clusters.iter().map(|c| name(c)).collect();
    if !kube.kube {
        if let Some(spec) = clusters.iter().chain([&mgmt.to_owned()]).find(|c| c.contains('=')) {
            return Err(usage(format!(
                "{spec}: NAME=CONTEXT names a kubeconfig context and needs --kube; the directory store takes NAME"
            )));
        }
        for c in &names {
            meshca::validate_cluster_name(c).map_err(|e| refused(e.to_string()))?;
        }
        let dir = dir.ok_or_else(|| usage("give --store DIR, or --kube"))?;
        return Ok(Opened { store: Box::new(DirStore::new(dir)), mgmt: name(mgmt), clusters: names, _rt: None });
    }
    let specs = clusters.iter().map(|c| cluster_context(c)).collect::<Result<Vec<_>, _>>()?;
    let (mgmt_name, mgmt_ctx) = match mgmt.split_once('=') {
        Some((n, c)) => (n.to_owned(), Some(c.to_owned())),
        None => (mgmt.to_owned(), None),
    };
    let (rt, store) = kube_store(kube, Some((mgmt_name.clone(), mgmt_ctx)), &specs)?;
    Ok(Opened { store: Box::new(store), mgmt: mgmt_name, clusters: names, _rt: Some(rt) })
}

/// A runtime and a Kubernetes store over kubeconfig contexts. `mgmt` with no context is the
/// current context. The runtime must outlive the store.
fn kube_store(
    k: &KubeArgs,
    mgmt: Option<(String, Option<String>)>,
    clusters: &[(String, String)],
) -> Result<(tokio::runtime::Runtime, meshca_kube::KubeStore), Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure { code: 1, message: format!("cannot start the async runtime: {e}") })?;
    let timeout = std::time::Duration::from_secs(k.timeout);
    let mut map = std::collections::BTreeMap::new();
    let kc = k.kubeconfig.as_deref();
    let connect = |ctx: Option<&str>| {
        rt.block_on(meshca_kube::clusters::client_for_context(kc, ctx, timeout))
            .map_err(|e| Failure { code: 1, message: e.to_string() })
    };
    if let Some((name, ctx)) = mgmt {
        map.insert(name, connect(ctx.as_deref())?);
    }
    for (name, ctx) in clusters {
        map.insert(name.clone(), connect(Some(ctx))?);
    }
    let store = meshca_kube::KubeStore::new(rt.handle().clone(), map).adopt(k.adopt).timeout(timeout);
    Ok((rt, store))
}

fn verify(a: VerifyArgs) -> CmdResult {
    if a.dirs.is_empty() && a.proxy_secrets.is_empty() && a.clusters.is_empty() {
        return Err(usage("give bundle directories, --kube --cluster NAME=CONTEXT, or --proxy-secret FILE; see `meshca verify --help`"));
    }
    let now = parse_at(&a.at)?;
    let mut ok = true;
    let mut statuses = Vec::new();
    let mut bundles: Vec<(String, Verified)> = Vec::new();
    // Each source: a name to show and the bundle or why it was refused.
    let mut sources: Vec<(String, Result<Verified, Error>)> =
        a.dirs.iter().map(|d| (d.display().to_string(), load_for_verify(d, now))).collect();
    let mut _rt = None;
    if a.kube.kube {
        let clusters = a.clusters.iter().map(|c| cluster_context(c)).collect::<Result<Vec<_>, _>>()?;
        let (rt, store) = kube_store(&a.kube, None, &clusters)?;
        for (name, _) in &clusters {
            let secret = SecretRef::cacerts(name);
            let loc = store.location(&secret);
            let got = store.read(&secret).and_then(|f| match f {
                None => Err(Error::Input(format!("{loc}: no cacerts Secret (reconcile this cluster first)"))),
                Some(files) => {
                    Cacerts::from_files(&files, now).map(|b| Verified::Bundle(Box::new(b))).map_err(Error::core(&loc))
                }
            });
            sources.push((name.clone(), got));
        }
        _rt = Some(rt);
    }
    for (name, loaded) in sources {
        match loaded {
            Ok(v) => {
                let (b, public_only) = (v.chain(), matches!(v, Verified::Public(_)));
                if !a.json {
                    let left = meshca::human_duration(b.not_after() - now);
                    println!(
                        "OK    {name}: {}, expires {} (in {left}), root sha256 {}",
                        b.first().subject(),
                        meshca::format_time(b.not_after()),
                        short(&b.root_fingerprint())
                    );
                    if public_only {
                        println!("      public chain only: no private key here, so the key match was not checked");
                    }
                    for w in b.warnings() {
                        println!("      warning: {w}");
                    }
                }
                statuses.push(BundleStatus {
                    path: name.clone(),
                    ok: true,
                    error: None,
                    subject: Some(b.first().subject()),
                    not_after: Some(b.not_after()),
                    root_fingerprint: Some(b.root_fingerprint()),
                    warnings: b.warnings().iter().map(ToString::to_string).collect(),
                    public_only,
                });
                bundles.push((name, v));
            }
            Err(e) => {
                ok = false;
                // The error names the bundle, the file, what is wrong and the fix.
                eprintln!("FAIL  {e}");
                statuses.push(BundleStatus {
                    path: name.clone(),
                    ok: false,
                    error: Some(e.to_string()),
                    subject: None,
                    not_after: None,
                    root_fingerprint: None,
                    warnings: Vec::new(),
                    public_only: false,
                });
            }
        }
    }
    let mut trust = serde_json::Value::Null;
    if bundles.len() > 1 {
        let chains: Vec<(&str, &meshca::TrustChain)> = bundles.iter().map(|(n, v)| (n.as_str(), v.chain())).collect();
        // The probe issues a workload certificate from each bundle, so it needs their keys.
        let keyed: Vec<(&str, &Cacerts)> = bundles
            .iter()
            .filter_map(|(n, v)| match v {
                Verified::Bundle(b) => Some((n.as_str(), b.as_ref())),
                Verified::Public(_) => None,
            })
            .collect();
        let result = meshca::check_mutual_trust_chains(&chains).and_then(|shared| {
            if !a.no_probe && keyed.len() > 1 {
                meshca::check_cross_cluster(&keyed, &mut meshca::OsRng, now)?;
            }
            Ok(shared)
        });
        match result {
            Ok(shared) => {
                if !a.json {
                    println!(
                        "OK    all {} bundles share root {} (sha256 {})",
                        chains.len(),
                        shared.subject,
                        shared.fingerprint
                    );
                    if !a.no_probe && keyed.len() > 1 {
                        println!("OK    a workload certificate from each is trusted by every other's root-cert.pem");
                    }
                }
                trust = serde_json::json!({"ok": true, "rootFingerprint": shared.fingerprint});
            }
            Err(e) => {
                ok = false;
                eprintln!("FAIL  {e}");
                trust = serde_json::json!({"ok": false, "error": e.to_string()});
            }
        }
    }
    let proxies = verify_proxies(&a.proxy_secrets, now, a.json, &mut ok);
    if a.json {
        let out = serde_json::json!({
            "at": meshca::format_time(now),
            "ok": ok,
            "bundles": statuses,
            "trust": trust,
            "proxies": proxies,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn verify_proxies(paths: &[PathBuf], now: OffsetDateTime, json: bool, ok: &mut bool) -> Vec<ProxyStatus> {
    let mut parsed = Vec::new();
    let mut statuses = Vec::new();
    for p in paths {
        let name = p.display().to_string();
        let result = fs::read_input(p)
            .map_err(Error::Io)
            .and_then(|data| String::from_utf8(data).map_err(|_| Error::Input(format!("{name}: not UTF-8 text"))))
            .and_then(|text| proxy::parse(&text, &name));
        match result {
            Ok(s) => parsed.push(s),
            Err(e) => {
                *ok = false;
                eprintln!("FAIL  {e}");
                statuses.push(ProxyStatus {
                    path: name,
                    ok: false,
                    spiffe_id: None,
                    root_fingerprints: vec![],
                    errors: vec![e.to_string()],
                    warnings: vec![],
                });
            }
        }
    }
    for a in &parsed {
        let mut st = ProxyStatus {
            path: a.source.clone(),
            ok: true,
            spiffe_id: a.chain.first().and_then(|c| c.uri_sans().into_iter().next()),
            root_fingerprints: a.roots.iter().map(|r| r.fingerprint_sha256()).collect(),
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        if !json {
            println!(
                "proxy {}: workload {}, trusts {}",
                a.source,
                st.spiffe_id.as_deref().unwrap_or("(no workload certificate)"),
                a.roots
                    .iter()
                    .map(|r| format!("{} ({})", r.subject(), short(&r.fingerprint_sha256())))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for b in &parsed {
            if a.chain.is_empty() {
                st.errors.push(format!("{}: no workload certificate chain (`default` secret) in the dump", a.source));
                break;
            }
            match meshca::verify_workload(&a.chain, &b.roots, now) {
                Ok(v) => {
                    if !json && a.source != b.source {
                        println!("OK    {}'s workload chain is trusted by {}'s ROOTCA", a.source, b.source);
                    }
                    for w in v.warnings.iter().map(ToString::to_string) {
                        if !st.warnings.contains(&w) {
                            st.warnings.push(w);
                        }
                    }
                }
                Err(e) => st
                    .errors
                    .push(format!("{}'s workload chain is not trusted by {}'s ROOTCA: {e}", a.source, b.source)),
            }
        }
        if !json {
            for w in &st.warnings {
                println!("      warning: {w}");
            }
        }
        for e in &st.errors {
            eprintln!("FAIL  {e}");
        }
        if !st.errors.is_empty() {
            st.ok = false;
            *ok = false;
        }
        statuses.push(st);
    }
    if parsed.len() > 1 && *ok && !json {
        println!("OK    all {} proxies trust the same root and each other's workloads", parsed.len());
    }
    statuses
}

fn short(fp: &str) -> String {
    fp.chars().take(23).collect::<String>() + "…"
}

fn inspect(a: InspectArgs) -> CmdResult {
    let now = parse_at(&a.at)?;
    let path = &a.path;
    let mut out = String::new();
    let json = if path.is_dir() {
        inspect_dir(path, now, &mut out)?
    } else {
        let data = read_input(path)?;
        inspect_file(path, &data, now, &mut out)?
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
    } else {
        print!("{out}");
    }
    // A bundle directory that is not a valid bundle is a failed check, shown and exit 1.
    let invalid = json.get("valid") == Some(&serde_json::Value::Bool(false));
    Ok(if invalid { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn inspect_dir(dir: &Path, now: OffsetDateTime, out: &mut String) -> Result<serde_json::Value, Error> {
    let files = fs::read_files(dir)?;
    let bundle = Cacerts::from_files(&files, now);
    match &bundle {
        Ok(b) => {
            out.push_str(&format!(
                "{}: valid {} bundle, signing CA {} ({})\n",
                dir.display(),
                b.layout().name(),
                b.ca_cert().subject(),
                b.ca_key().key_type()
            ));
            out.push_str(&format!(
                "chain ({} certificates, signing CA first in the files; shown from the root):\n",
                b.path().len()
            ));
            let views: Vec<_> = b.path().iter().map(|c| cert_view(c, now)).collect();
            write_tree(out, b.path(), &views, "  ");
            out.push_str(&format!(
                "trust bundle ({} root{}):\n",
                b.roots().len(),
                if b.roots().len() == 1 { "" } else { "s" }
            ));
            for r in b.roots() {
                let mark = if r == b.root() { " <- this chain's root" } else { "" };
                out.push_str(&format!("  {} sha256 {}{mark}\n", r.subject(), short(&r.fingerprint_sha256())));
            }
            out.push_str(&format!("private key: {} (matches the signing CA)\n", b.ca_key().key_type()));
            for w in b.warnings() {
                out.push_str(&format!("warning: {w}\n"));
            }
            Ok(serde_json::json!({
                "path": dir.display().to_string(),
                "valid": true,
                "layout": b.layout().name(),
                "chain": views,
                "roots": b.roots().iter().map(|r| cert_view(r, now)).collect::<Vec<_>>(),
                "keyType": b.ca_key().key_type().to_string(),
                "warnings": b.warnings().iter().map(ToString::to_string).collect::<Vec<_>>(),
            }))
        }
        Err(e) => {
            out.push_str(&format!("{}: NOT a valid bundle: {e}\n", dir.display()));
            let mut per_file = serde_json::Map::new();
            for (name, data) in files.iter() {
                if fs::is_key_file(name) {
                    let kind = PrivateKey::from_pem(data, name).map(|k| k.key_type().to_string());
                    out.push_str(&format!(
                        "{name}: private key, {}\n",
                        kind.as_ref().map_or_else(|e| e.to_string(), Clone::clone)
                    ));
                    continue;
                }
                if let Ok(certs) = meshca::parse_certificates(data, name) {
                    out.push_str(&format!("{name}:\n"));
                    let views: Vec<_> = certs.iter().map(|c| cert_view(c, now)).collect();
                    write_tree(out, &certs, &views, "  ");
                    per_file.insert(name.to_owned(), serde_json::to_value(&views).unwrap_or_default());
                }
            }
            Ok(
                serde_json::json!({"path": dir.display().to_string(), "valid": false, "error": e.to_string(), "files": per_file}),
            )
        }
    }
}

fn inspect_file(path: &Path, data: &[u8], now: OffsetDateTime, out: &mut String) -> Result<serde_json::Value, Error> {
    let name = path.display().to_string();
    let text = String::from_utf8_lossy(data);
    if text.contains("inlineBytes") || text.contains("inlineString") || text.trim_start().starts_with('{') {
        let s = proxy::parse(&text, &name)?;
        let roots: Vec<_> = s.roots.iter().map(|c| cert_view(c, now)).collect();
        let chain: Vec<_> = s.chain.iter().map(|c| cert_view(c, now)).collect();
        out.push_str(&format!("{name}: sidecar secrets\nROOTCA (trusted roots):\n"));
        write_tree(out, &s.roots, &roots, "  ");
        out.push_str("default (workload certificate chain):\n");
        write_tree(out, &s.chain, &chain, "  ");
        let trusted = meshca::verify_workload_chain(&s.chain, &s.roots, now);
        out.push_str(&match &trusted {
            Ok(id) => format!("the workload chain ({id}) verifies against ROOTCA\n"),
            Err(e) => format!("the workload chain does NOT verify against ROOTCA: {e}\n"),
        });
        return Ok(
            serde_json::json!({"path": name, "kind": "proxy-secret", "roots": roots, "chain": chain, "chainTrusted": trusted.is_ok()}),
        );
    }
    if text.contains("PRIVATE KEY-----") {
        let k = PrivateKey::from_pem(data, &name).map_err(Error::core("inspect"))?;
        out.push_str(&format!("{name}: private key, {}\n", k.key_type()));
        return Ok(serde_json::json!({"path": name, "kind": "private-key", "keyType": k.key_type().to_string()}));
    }
    if text.contains("CERTIFICATE REQUEST-----") {
        let c = Csr::from_pem(data, &name).map_err(Error::core("inspect"))?;
        out.push_str(&format!(
            "{name}: certificate request from {} ({} key), signature valid\n",
            c.subject(),
            c.key_type()
        ));
        return Ok(
            serde_json::json!({"path": name, "kind": "csr", "subject": c.subject(), "keyType": c.key_type().to_string()}),
        );
    }
    let certs = meshca::parse_certificates(data, &name).map_err(Error::core("inspect"))?;
    let views: Vec<_> = certs.iter().map(|c| cert_view(c, now)).collect();
    out.push_str(&format!("{name}: {} certificate{}\n", certs.len(), if certs.len() == 1 { "" } else { "s" }));
    write_tree(out, &certs, &views, "  ");
    Ok(serde_json::json!({"path": name, "kind": "certificates", "certificates": views}))
}

fn secret(a: SecretArgs) -> CmdResult {
    let now = parse_at(&a.at)?;
    policy::check_name("--name", &a.name).map_err(usage)?;
    policy::check_name("--namespace", &a.namespace).map_err(usage)?;
    let b = load_bundle(&a.dir, now)?;
    print!("{}", manifest::secret_manifest(&b, &a.name, &a.namespace, a.layout));
    Ok(ExitCode::SUCCESS)
}

fn read_clusters(a: &ReconcileArgs) -> Result<Vec<String>, Failure> {
    let mut clusters = a.clusters.clone();
    let mgmt = a.mgmt_cluster.split('=').next().unwrap_or(&a.mgmt_cluster);
    if let Some(f) = &a.clusters_file {
        let text = read_text(f)?;
        let mut seen = std::collections::HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            // The message names the file and line, never the line's text: the file might not
            // be what it should be (a key file given by mistake).
            let at = format!("{}:{}", f.display(), i + 1);
            let name = line.split('=').next().unwrap_or(line);
            if let Err(e) = meshca::validate_cluster_name(name) {
                let why = match e {
                    meshca::Error::InvalidParameter { reason, .. } => {
                        reason.split_once(": ").map_or(reason.clone(), |(_, r)| r.to_owned())
                    }
                    other => other.to_string(),
                };
                return Err(refused(format!("{at}: not a cluster name: {why}")));
            }
            if !seen.insert(name.to_owned()) {
                return Err(refused(format!("{at}: cluster `{name}` is listed twice")));
            }
            if name == mgmt {
                return Err(refused(format!(
                    "{at}: cluster `{name}` is the management cluster (--mgmt-cluster); list only workload clusters"
                )));
            }
            clusters.push(line.to_owned());
        }
    }
    let mut seen = std::collections::HashSet::new();
    for spec in &clusters {
        let c = spec.split('=').next().unwrap_or(spec);
        meshca::validate_cluster_name(c).map_err(|e| refused(e.to_string()))?;
        if !seen.insert(c) {
            return Err(refused(format!("cluster `{c}` is listed twice")));
        }
        if c == mgmt {
            return Err(refused(format!(
                "cluster `{c}` is the management cluster (--mgmt-cluster); list only workload clusters"
            )));
        }
    }
    if clusters.is_empty() {
        return Err(usage("no clusters: pass --cluster NAME (repeatable) or --clusters-file FILE"));
    }
    Ok(clusters)
}

fn reconcile_cmd(a: ReconcileArgs) -> CmdResult {
    let now = parse_at(&a.at)?;
    let future = check_future_at(now, a.kube.kube, a.dry_run)?;
    let clusters = read_clusters(&a)?;
    let pol = load_policy(&a.policy)?;
    let opened = open_store(a.store.as_deref(), &a.kube, &a.mgmt_cluster, &clusters)?;
    let _lock = match &a.store {
        Some(dir) if !a.dry_run => Some(lock_store(&DirStore::new(dir), &a.lock, "reconcile")?),
        _ => None,
    };
    let store = opened.store.as_ref();
    let mut opts = Options::new(now, opened.clusters.clone());
    opts.dry_run = a.dry_run;
    opts.mgmt_cluster = opened.mgmt.clone();
    let show_progress = !a.json && std::io::stderr().is_terminal() && opts.clusters.len() > 20;
    let mut progress = |done: usize, total: usize| {
        if show_progress {
            eprint!("\r  reconciling {done}/{total}");
            if done == total {
                eprint!("\r{}\r", " ".repeat(40));
            }
        }
    };
    // While a root rotation is under way (or the policy asks for one), the run applies its
    // current step instead of the usual loop.
    let report = match reconcile::run(store, &pol, &opts, &mut meshca::OsRng, &mut progress)? {
        reconcile::Run::RootRotation(rot) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rot).unwrap_or_default());
            } else {
                print!("{}", render_rotation(&rot, opts.dry_run));
            }
            return Ok(if rot.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS });
        }
        reconcile::Run::Reconciled(report) => report,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", render_report(&report, &pol, a.verbose));
    }
    if future && report.clusters.iter().any(|c| matches!(c.action, Action::Issued | Action::Rotated)) {
        eprintln!(
            "note: --at {t} is in the future: the store now holds certificates not valid before then; check them \
             with `meshca verify --at {t}`",
            t = meshca::format_time(now)
        );
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The human form of a root rotation run.
fn render_rotation(rot: &meshca_ops::rootrotation::RotationReport, dry_run: bool) -> String {
    let mut s = String::new();
    if let Some(n) = &rot.notice {
        s.push_str(&format!("root rotation {}: {} -> {}\n", n, rot.old_root, rot.new_root));
    }
    // A run that finds a dwell over begins the next step: the clusters below are its work.
    let mut phases = rot.phase.clone();
    for p in &rot.entered {
        phases.push_str(&format!(" -> {p}"));
    }
    s.push_str(&format!("root rotation, phase {phases}{}\n", if dry_run { " (dry run)" } else { "" }));
    for c in &rot.clusters {
        s.push_str(&format!("  {:<12} {}\n", c.cluster, c.outcome));
    }
    s.push_str(&format!("{}; now in phase {}\n", rot.step, rot.now_phase));
    s
}

/// The human form of a reconcile run: a header, one line per cluster (only the changes when
/// there are many, unless `verbose`), and a summary.
fn render_report(r: &Report, pol: &policy::Policy, verbose: bool) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "policy {} ({}) at {}{}\n",
        pol.name,
        pol.api_version,
        meshca::format_time(r.at),
        if r.dry_run { ", dry run: nothing written" } else { "" }
    ));
    s.push_str(&format!(
        "signer {}{} root sha256 {}\n       {}\n",
        r.signer.subject,
        if r.signer.created { " (created now)" } else { "" },
        short(&r.signer.root_fingerprint),
        r.signer.location
    ));
    let many = r.clusters.len() > 50 && !verbose;
    let width = r.clusters.iter().map(|c| c.cluster.len()).max().unwrap_or(7).max(7);
    s.push_str(&format!(
        "{:<width$}  {:<12}  {:<20}  {:<20}  {}\n",
        "CLUSTER", "ACTION", "EXPIRES", "NEXT CHECK", "REASON"
    ));
    let mut hidden = 0;
    for c in &r.clusters {
        if many && c.action == Action::Kept {
            hidden += 1;
            continue;
        }
        let t = |t: Option<OffsetDateTime>| t.map(meshca::format_time).unwrap_or_else(|| "-".into());
        s.push_str(&format!(
            "{:<width$}  {:<12}  {:<20}  {:<20}  {}\n",
            c.cluster,
            c.action.word(),
            t(c.not_after),
            t(c.next_check),
            c.reason
        ));
        for w in &c.warnings {
            s.push_str(&format!("{:<width$}  warning: {w}\n", ""));
        }
    }
    if hidden > 0 {
        s.push_str(&format!("... and {hidden} clusters kept unchanged (--verbose lists them)\n"));
    }
    let counts: Vec<String> = r.counts().iter().map(|(a, n)| format!("{n} {}", a.word())).collect();
    let failed = r.clusters.iter().filter(|c| c.action == Action::Failed).count();
    let total = r.clusters.len();
    if failed == 0 {
        s.push_str(&format!("{total} cluster{}: {}.", if total == 1 { "" } else { "s" }, counts.join(", ")));
    } else {
        s.push_str(&format!("{} of {total} clusters reconciled: {}.", total - failed, counts.join(", ")));
    }
    if failed == total {
        // Nothing to compare: no cluster ended with a bundle this run could check.
    } else if r.trust.ok && failed > 0 {
        s.push_str(&format!(
            " Those share root {} (sha256 {}).",
            r.signer.root,
            short(r.trust.root_fingerprint.as_deref().unwrap_or(""))
        ));
    } else if r.trust.ok {
        s.push_str(&format!(
            " All share root {} (sha256 {}).",
            r.signer.root,
            short(r.trust.root_fingerprint.as_deref().unwrap_or(""))
        ));
    } else {
        s.push_str(&format!("\nTRUST CHECK FAILED: {}", r.trust.error.as_deref().unwrap_or("")));
    }
    if let Some(n) = r.next_check {
        s.push_str(&format!(" Next check due {}.", meshca::format_time(n)));
    }
    s.push('\n');
    if pol.auto_restart_pods && r.clusters.iter().any(|c| matches!(c.action, Action::Issued | Action::Rotated)) {
        s.push_str("note: autoRestartPods is set; the directory store cannot restart istiod, restart it where the bundle was applied\n");
    }
    for n in &r.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}

fn load_policy(path: &Path) -> Result<policy::Policy, Failure> {
    let text = read_text(path)?;
    Ok(policy::parse(&text, &path.display().to_string())?)
}

fn rotate_root(c: RotateRootCommand) -> CmdResult {
    use meshca_ops::rootrotation;
    match c {
        RotateRootCommand::Start(a) => {
            let c = &a.common;
            let now = parse_at(&c.at)?;
            let pol = load_policy(&c.policy)?;
            let opened = open_store(c.store.as_deref(), &c.kube, &c.mgmt_cluster, &c.clusters)?;
            let _lock = c.lock_store("rotate-root start")?;
            let store = opened.store.as_ref();
            let (ns, name) = pol.signer.secret();
            let current_ref = SecretRef::new(&opened.mgmt, ns, name);
            let current = store
                .read(&current_ref)?
                .ok_or_else(|| usage(format!("{}: no signing CA", store.location(&current_ref))))?;
            let current = SigningCa::from_files(&current, now).map_err(Error::core("current signing CA"))?;
            let new = load_signer(&a.new_ca, now)?;
            let dwell = Duration::hours(a.dwell_hours);
            let r = rootrotation::start(store, &pol, &opened.mgmt, &current, &new, dwell, &opened.clusters)?;
            println!("root rotation started: {} -> {}", r.old_root.subject(), r.new_root.subject());
            println!(
                "  old sha256 {}\n  new sha256 {}",
                short(&r.old_root.fingerprint_sha256()),
                short(&r.new_root.fingerprint_sha256())
            );
            println!(
                "  step 1 of 3: every cluster's root-cert.pem gains the new root; run `meshca reconcile` to apply it"
            );
            Ok(ExitCode::SUCCESS)
        }
        RotateRootCommand::Status(a) => {
            let now = parse_at(&a.at)?;
            let pol = load_policy(&a.policy)?;
            let opened = open_store(a.store.as_deref(), &a.kube, &a.mgmt_cluster, &a.clusters)?;
            let store = opened.store.as_ref();
            let Some(stored) = rootrotation::load(store, &pol, &opened.mgmt)? else {
                match &pol.root_rotation {
                    Some(_) => println!("no root rotation under way; the next `meshca reconcile` starts the one spec.config.rootRotation names"),
                    None => println!("no root rotation under way"),
                }
                return Ok(ExitCode::SUCCESS);
            };
            let r = &stored.rotation;
            println!("phase {} ({} -> {})", rootrotation::describe(r), r.old_root.subject(), r.new_root.subject());
            println!(
                "  started by {}; incoming signer {}",
                if stored.started_by_policy { "spec.config.rootRotation" } else { "rotate-root start" },
                store.location(&stored.new_signer)
            );
            if let Some(t) = r.phase_completed_at {
                println!(
                    "  every cluster done since {}; next step at {}",
                    meshca::format_time(t),
                    meshca::format_time(t + r.dwell)
                );
            }
            let mut shown: Vec<&String> = opened.clusters.iter().collect();
            shown.extend(stored.clusters.iter().filter(|c| !opened.clusters.contains(c)));
            for cl in shown {
                let state = match store.read(&SecretRef::cacerts(cl)) {
                    Err(e) => format!("not reachable: {e}"),
                    Ok(None) => "pending (no cacerts yet)".to_owned(),
                    Ok(Some(files)) => match Cacerts::from_files(&files, now) {
                        Ok(b) if r.is_done(&b) => "done".to_owned(),
                        Ok(_) => "pending".to_owned(),
                        Err(e) => format!("pending (not valid at {}: {e})", meshca::format_time(now)),
                    },
                };
                println!("  {cl:<12} {state}");
            }
            Ok(ExitCode::SUCCESS)
        }
        RotateRootCommand::Forget(a) => {
            let pol = load_policy(&a.policy)?;
            if a.clusters.is_empty() {
                return Err(usage("name the clusters to forget with --cluster NAME"));
            }
            let opened = open_store(a.store.as_deref(), &a.kube, &a.mgmt_cluster, &[])?;
            let _lock = a.lock_store("rotate-root forget")?;
            for c in &a.clusters {
                if rootrotation::forget(opened.store.as_ref(), &pol, &opened.mgmt, c)? {
                    println!("forgot {c}: the rotation no longer waits for it");
                } else {
                    println!("{c}: not known to the rotation; nothing to forget");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RotateRootCommand::Rollback(a) => {
            let pol = load_policy(&a.policy)?;
            let opened = open_store(a.store.as_deref(), &a.kube, &a.mgmt_cluster, &a.clusters)?;
            let _lock = a.lock_store("rotate-root rollback")?;
            let r = rootrotation::rollback(opened.store.as_ref(), &pol, &opened.mgmt)?;
            println!("rolling back: phase {}; run `meshca reconcile` to apply it", rootrotation::describe(&r));
            if pol.root_rotation.is_some() {
                println!(
                    "  spec.config.rootRotation still names the new CA; remove it (it will not start again by itself)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn controller(a: ControllerArgs) -> CmdResult {
    let identity = a
        .identity
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("meshca-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure { code: 1, message: format!("cannot start the async runtime: {e}") })?;
    let timeout = std::time::Duration::from_secs(a.timeout);
    rt.block_on(async move {
        let client = if a.kubeconfig.is_none() && a.context.is_none() {
            let config =
                kube::Config::infer().await.map_err(|e| Failure { code: 1, message: format!("kubeconfig: {e}") })?;
            kube::Client::try_from(config).map_err(|e| Failure { code: 1, message: e.to_string() })?
        } else {
            meshca_kube::clusters::client_for_context(a.kubeconfig.as_deref(), a.context.as_deref(), timeout)
                .await
                .map_err(|e| Failure { code: 1, message: e.to_string() })?
        };
        let mut cfg = meshca_kube::controller::ControllerConfig::new(&identity);
        cfg.namespace = a.namespace;
        cfg.mgmt_cluster = a.mgmt_cluster;
        cfg.remote_secret_namespace = a.remote_secret_namespace;
        cfg.adopt = a.adopt;
        cfg.timeout = timeout;
        cfg.lease = Some(meshca_kube::leader::LeaseConfig {
            namespace: a.lease_namespace,
            name: "meshca-controller".into(),
            identity: identity.clone(),
            duration: std::time::Duration::from_secs(15),
        });
        eprintln!("meshca controller {identity}: waiting for the leader lease, then watching RootTrustPolicy objects");
        meshca_kube::controller::run(client, cfg, shutdown_signal())
            .await
            .map_err(|e| Failure { code: 1, message: e.to_string() })
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM (Kubernetes stops pods with SIGTERM).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn quickstart(a: QuickstartArgs) -> CmdResult {
    let dir = &a.dir;
    let store_dir = dir.join("store");
    let store = DirStore::new(&store_dir);
    let _lock = lock_store(&store, &a.lock, "quickstart")?;
    let policy_path = dir.join("policy.yaml");
    let now = OffsetDateTime::now_utc();
    let rng = &mut meshca::OsRng;
    println!("meshca quickstart: the multi-cluster CA workflow end to end in {}", dir.display());
    println!(
        "(the steps of Gloo Mesh Enterprise's guide \"Manage Istio intermediate CAs\" at docs.solo.io, on a local \
         store that mirrors Kubernetes Secrets)\n"
    );

    // Step 1: the root CA as the management cluster's Secret.
    let pol = policy::parse(policy::SEED_POLICY, "policy.yaml")?;
    let (ns, name) = pol.signer.secret();
    let mgmt_secret = SecretRef::new("mgmt", ns, name);
    let signer_dir = store.dir(&mgmt_secret);
    match store.read(&mgmt_secret)? {
        Some(_) => println!("Step 1  root CA exists, reusing it   {}", signer_dir.display()),
        None => {
            let root = SigningCa::generate_root(&RootParams::default(), rng, now).map_err(Error::core("root"))?;
            store.write(&mgmt_secret, &root.bundle().to_files(Layout::Istio), &WriteMeta::default())?;
            println!("Step 1  root CA {} -> {}", root.bundle().ca_cert().subject(), signer_dir.display());
            println!("        (what `meshca root-ca --out {}` does)", signer_dir.display());
        }
    }

    // Step 2: the seed's policy, reconciled onto three clusters, then verified.
    if !policy_path.exists() {
        fs::write_file_atomic(&policy_path, policy::SEED_POLICY.as_bytes(), 0o644).map_err(Error::from)?;
    }
    let pol = load_policy(&policy_path)?;
    let clusters: Vec<String> = ["cluster1", "cluster2", "cluster3"].map(String::from).to_vec();
    println!("Step 2  policy {} (ttlDays 1, secretRotationGracePeriodRatio 0.1)", policy_path.display());
    println!(
        "        meshca reconcile --policy {} --store {} --cluster cluster1 --cluster cluster2 --cluster cluster3",
        policy_path.display(),
        store_dir.display()
    );
    let report = reconcile::reconcile(&store, &pol, &Options::new(now, clusters.clone()), rng, &mut |_, _| {})?;
    for line in render_report(&report, &pol, true).lines() {
        println!("        {line}");
    }
    if !report.ok() {
        return Ok(ExitCode::from(1));
    }
    let mut bundles = Vec::new();
    for c in &clusters {
        bundles.push((c.as_str(), load_bundle(&store.dir(&SecretRef::cacerts(c)), now)?));
    }
    let refs: Vec<(&str, &Cacerts)> = bundles.iter().map(|(n, b)| (*n, b)).collect();
    let shared = meshca::check_mutual_trust(&refs).map_err(Error::core("verify"))?;
    meshca::check_cross_cluster(&refs, rng, now).map_err(Error::core("verify"))?;
    println!(
        "        verified: every cluster's cacerts shares root {} ({})",
        shared.subject,
        short(&shared.fingerprint)
    );

    // Step 3: a workload in each cluster; real mTLS across clusters.
    let workloads = [("cluster1", "productpage"), ("cluster2", "reviews"), ("cluster3", "ratings")];
    let mut leaves = Vec::new();
    println!("Step 3  workload certificates, as istiod issues them:");
    for ((cluster, sa), (_, bundle)) in workloads.iter().zip(&bundles) {
        let id = SpiffeId::workload("cluster.local", "bookinfo", sa).map_err(Error::core("workload"))?;
        let leaf = SigningCa::new(bundle.clone())
            .issue_leaf(&LeafParams::new(id.clone()), rng, now)
            .map_err(Error::core(*cluster))?
            .value;
        let mut files = Files::new();
        files.insert("cert-chain.pem", leaf.cert_chain_pem().into_bytes());
        files.insert("key.pem", leaf.key_pem().as_bytes().to_vec());
        files.insert("root-cert.pem", leaf.root_cert_pem().into_bytes());
        let wdir = dir.join("workloads").join(cluster);
        fs::write_files(&wdir, &files).map_err(Error::from)?;
        println!("        {cluster}  {id}  -> {}", wdir.display());
        leaves.push(leaf);
    }
    for (i, j) in [(0usize, 1usize), (1, 2), (2, 0)] {
        let hs = mtls::handshake(&leaves[i], bundles[i].1.roots(), &leaves[j], bundles[j].1.roots()).map_err(|e| {
            Failure { code: 1, message: format!("mTLS {} -> {} failed: {e}", workloads[i].0, workloads[j].0) }
        })?;
        println!(
            "        mTLS {} {} -> {} {}: {} {}, each side verified the other",
            workloads[i].0, workloads[i].1, workloads[j].0, workloads[j].1, hs.protocol, hs.cipher_suite
        );
    }
    // And what meshca prevents: a cluster whose intermediate comes from another root.
    let stranger_root = SigningCa::generate_root(&RootParams::default(), rng, now).map_err(Error::core("root"))?;
    let stranger = stranger_root
        .issue_intermediate(&IntermediateParams::new("stranger"), rng, now)
        .map_err(Error::core("root"))?
        .value;
    let id = SpiffeId::workload("cluster.local", "bookinfo", "intruder").map_err(Error::core("workload"))?;
    let intruder =
        SigningCa::new(stranger.clone()).issue_leaf(&LeafParams::new(id), rng, now).map_err(Error::core("leaf"))?.value;
    // The intruder even trusts the real root; only the server's verdict on it matters.
    match mtls::handshake(&intruder, bundles[1].1.roots(), &leaves[1], bundles[1].1.roots()) {
        Ok(_) => return Err(Failure { code: 1, message: "a workload from a foreign root was accepted".into() }),
        Err(e) => println!(
            "        refused: cluster2 reviews rejects a workload from a cluster with another root ({})",
            e.server.as_deref().unwrap_or("refused")
        ),
    }

    let c1 = store.dir(&SecretRef::cacerts("cluster1"));
    let tomorrow = meshca::format_time(now + Duration::hours(22));
    println!("\nAll done. Next:");
    println!("  meshca inspect {}", c1.display());
    println!(
        "  meshca verify {}",
        clusters.iter().map(|c| store.dir(&SecretRef::cacerts(c)).display().to_string()).collect::<Vec<_>>().join(" ")
    );
    println!("  meshca secret {} | kubectl --context <cluster1> apply -f -", c1.display());
    println!(
        "  meshca reconcile --policy {} --store {} --cluster cluster1 --cluster cluster2 --cluster cluster3 --at {tomorrow}",
        policy_path.display(),
        store_dir.display()
    );
    println!("    (rehearse rotation: 22 h from now every intermediate is inside its 10% grace period)");
    println!(
        "  meshca verify --at {tomorrow} {}",
        clusters.iter().map(|c| store.dir(&SecretRef::cacerts(c)).display().to_string()).collect::<Vec<_>>().join(" ")
    );
    println!("    (after that run the store holds bundles valid from then on: check them at that time)");
    Ok(ExitCode::SUCCESS)
}
