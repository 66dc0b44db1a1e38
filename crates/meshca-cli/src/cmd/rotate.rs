//! `meshca rotate`: re-issue clusters' intermediates now, whatever the rotation plan says.
//!
//! The forced rotation Gloo Mesh cannot do (gloo-mesh#809): each named cluster gets a new key and
//! intermediate under the policy's signer through the same reconcile (and the same one writer)
//! as every other run. The old intermediate is not revoked: workload certificates it signed keep
//! verifying (they chain to the same root) until they expire.

use std::collections::BTreeSet;
use std::process::ExitCode;

use clap::Args;
use time::OffsetDateTime;

use meshca_ops::reconcile::{self, Intent, RotateNow};
use meshca_ops::store::{DirStore, Store};

use crate::args::{ClusterSpec, LockArgs, StoreArgs};
use crate::failure::{refused, usage, CmdResult};
use crate::io::{check_future_at, load_policy, Fleet, Writes};
use crate::render::render_report;

#[derive(Args, Debug)]
pub(crate) struct RotateArgs {
    #[command(flatten)]
    pub(crate) pkcs11: crate::args::Pkcs11Args,
    #[command(flatten)]
    pub(crate) target: StoreArgs,
    #[command(flatten)]
    pub(crate) upstream: crate::args::UpstreamCrlArgs,
    /// A cluster to re-issue now; repeat for each. With --kube: NAME=CONTEXT.
    #[arg(long = "cluster", value_name = "NAME", required_unless_present = "all", conflicts_with = "all")]
    pub(crate) clusters: Vec<ClusterSpec>,
    /// Every cluster that has a cacerts bundle in the directory store.
    #[arg(long)]
    pub(crate) all: bool,
    /// Act as if at this time (RFC 3339).
    #[arg(long, value_parser = crate::args::time)]
    pub(crate) at: Option<OffsetDateTime>,
    /// Show what would change; write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) lock: LockArgs,
}

pub(crate) fn run(a: RotateArgs) -> CmdResult {
    let now = crate::args::now_or(a.at);
    let future = check_future_at(now, a.target.kube.kube, a.dry_run)?;
    let pol = load_policy(&a.target.policy)?;
    let token = a.pkcs11.token(&pol, &a.target.policy, !a.dry_run)?;
    let mgmt = a.target.mgmt_cluster.name.clone();
    let clusters = if a.all {
        let Some(dir) = &a.target.store else {
            return Err(usage("with --kube, name the clusters to rotate: --cluster NAME=CONTEXT (repeat)"));
        };
        let found: Vec<ClusterSpec> = DirStore::new(dir)
            .clusters_with_cacerts()?
            .into_iter()
            .filter(|c| *c != mgmt)
            .map(|name| ClusterSpec { name, context: None })
            .collect();
        if found.is_empty() {
            return Err(refused(format!("{}: no cluster has a cacerts bundle to rotate", dir.display())));
        }
        found
    } else {
        for c in &a.clusters {
            let name = c.name.as_str();
            meshca::validate_cluster_name(name).map_err(|e| refused(format!("--cluster: {e}")))?;
            if name == mgmt {
                return Err(refused(format!("cluster `{name}` is the management cluster (--mgmt-cluster)")));
            }
        }
        a.clusters.clone()
    };
    let mut fleet = Fleet::open(
        &a.target,
        &clusters,
        Some(Writes { lock: &a.lock, command: "rotate" }),
        now,
        a.dry_run,
        token,
        &a.upstream,
    )?;
    crate::io::require_bundles(fleet.store(), &fleet.opened.clusters)?;
    // A root rotation re-issues every cluster through its own steps: a forced rotation in the
    // middle would only race it.
    if meshca_ops::rootrotation::load(fleet.store(), &pol, &fleet.opened.mgmt)?.is_some_and(|s| s.in_progress()) {
        return Err(refused(
            "a root rotation is under way: its steps re-issue every cluster; rotate after it finishes (meshca \
             rotate-root status)",
        ));
    }
    fleet.opts.intent =
        Intent::RotateNow(RotateNow::Only(fleet.opened.clusters.iter().cloned().collect::<BTreeSet<_>>()));
    let (store, opts) = (fleet.store(), &fleet.opts);
    let report = match reconcile::run(store, &pol, opts, &mut meshca::OsRng, &mut |_, _| {})? {
        reconcile::Run::Reconciled(report) => report,
        reconcile::Run::RootRotation(rot) => {
            // The policy asked for a root rotation and this run started it: say so, rotate nothing else.
            out!("{}", crate::render::render_rotation(&rot, opts.dry_run));
            return Err(refused("the policy started a root rotation instead; rotate after it finishes"));
        }
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        out!("{}", render_report(&report, &pol, true));
    }
    if future && !a.dry_run {
        errln!(
            "note: --at {t} is in the future: the store now holds certificates not valid before then",
            t = meshca::format_time(now)
        );
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
