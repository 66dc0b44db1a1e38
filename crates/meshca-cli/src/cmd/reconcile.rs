//! `meshca reconcile`: issue, rotate or keep every cluster's `cacerts` per a RootTrustPolicy.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use time::OffsetDateTime;

use meshca_ops::reconcile::{self, Action};

use crate::args::{ClusterSpec, LockArgs, StoreArgs};
use crate::failure::{refused, usage, CmdResult, Failure};
use crate::io::{check_future_at, load_policy, read_text, Fleet, Writes};
use crate::render::{render_report, render_rotation};

#[derive(Args, Debug)]
pub(crate) struct ReconcileArgs {
    #[command(flatten)]
    pub(crate) pkcs11: crate::args::Pkcs11Args,
    #[command(flatten)]
    pub(crate) target: StoreArgs,
    #[command(flatten)]
    pub(crate) upstream: crate::args::UpstreamCrlArgs,
    /// A workload cluster; repeat for each. With --kube: NAME=CONTEXT (CONTEXT defaults to NAME).
    #[arg(long = "cluster", value_name = "NAME", required_unless_present = "clusters_file")]
    pub(crate) clusters: Vec<ClusterSpec>,
    /// A file with one cluster name per line (# comments allowed).
    #[arg(long, conflicts_with = "clusters")]
    pub(crate) clusters_file: Option<PathBuf>,
    /// Plan and act as if at this time (RFC 3339): rehearse rotation.
    #[arg(long, value_parser = crate::args::time)]
    pub(crate) at: Option<OffsetDateTime>,
    /// Show what would change; write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
    /// List every cluster even when there are many.
    #[arg(long, short)]
    pub(crate) verbose: bool,
    #[command(flatten)]
    pub(crate) lock: LockArgs,
}

fn read_clusters(a: &ReconcileArgs) -> Result<Vec<ClusterSpec>, Failure> {
    let mut clusters = a.clusters.clone();
    let mgmt = a.target.mgmt_cluster.name.as_str();
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
            let Ok(spec) = line.parse::<ClusterSpec>();
            let name = spec.name.as_str();
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
            clusters.push(spec.clone());
        }
    }
    crate::io::check_workload_clusters(&ClusterSpec::names(&clusters), mgmt)?;
    if clusters.is_empty() {
        return Err(usage("no clusters: pass --cluster NAME (repeatable) or --clusters-file FILE"));
    }
    Ok(clusters)
}

pub(crate) fn run(a: ReconcileArgs) -> CmdResult {
    let now = crate::args::now_or(a.at);
    let future = check_future_at(now, a.target.kube.kube, a.dry_run)?;
    let clusters = read_clusters(&a)?;
    let pol = load_policy(&a.target.policy)?;
    let token = a.pkcs11.token(&pol, &a.target.policy, !a.dry_run)?;
    let fleet = Fleet::open(
        &a.target,
        &clusters,
        Some(Writes { lock: &a.lock, command: "reconcile" }),
        now,
        a.dry_run,
        token,
        &a.upstream,
    )?;
    let (store, opts) = (fleet.store(), &fleet.opts);
    let show_progress = !a.json && std::io::stderr().is_terminal() && opts.clusters.len() > 20;
    let mut progress = |done: usize, total: usize| {
        if show_progress {
            err!("\r  reconciling {done}/{total}");
            if done == total {
                err!("\r{}\r", " ".repeat(40));
            }
        }
    };
    // While a root rotation is under way (or the policy asks for one), the run applies its
    // current step instead of the usual loop.
    let report = match reconcile::run(store, &pol, opts, &mut meshca::OsRng, &mut progress)? {
        reconcile::Run::RootRotation(rot) => {
            if a.json {
                outln!("{}", serde_json::to_string_pretty(&rot).unwrap_or_default());
            } else {
                out!("{}", render_rotation(&rot, opts.dry_run));
            }
            return Ok(if rot.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS });
        }
        reconcile::Run::Reconciled(report) => report,
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        out!("{}", render_report(&report, &pol, a.verbose));
    }
    // A CRL is signed for the run's time as a certificate is: a run that only re-signed the
    // fleet's CRLs (a trust update, or the revocation list's own Secret) wrote them for then too.
    let wrote =
        report.clusters.iter().any(|c| matches!(c.action, Action::Issued | Action::Rotated | Action::TrustUpdated));
    if future && (wrote || report.crl.is_some()) {
        errln!(
            "note: --at {t} is in the future: the store now holds certificates or CRLs not valid before then; check \
             them with `meshca verify --at {t}`",
            t = meshca::format_time(now)
        );
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
