//! `meshca status`: the fleet at a glance, from the same run the controller makes, planned and
//! not written: per cluster the CA's expiry and time left, the next rotation, whether istiod
//! loaded the roots meshca wrote, when the CA was issued and what the next run would do (or the
//! error); the roots with their expiry; a root rotation's phase and the clusters it waits for;
//! the revocation list.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Args;
use time::OffsetDateTime;

use meshca_ops::reconcile::{self, Run};
use meshca_ops::store::{DirStore, Store};

use crate::args::{ClusterSpec, StoreArgs};
use crate::failure::{refused, usage, CmdResult};
use crate::io::{load_policy, Fleet};
use crate::render::{render_status, render_status_rotation, Paint};

#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) pkcs11: crate::args::Pkcs11Args,
    #[command(flatten)]
    pub(crate) target: StoreArgs,
    #[command(flatten)]
    pub(crate) upstream: crate::args::UpstreamCrlArgs,
    /// A workload cluster; repeat for each (default with the directory store: every cluster
    /// holding a cacerts). With --kube: NAME=CONTEXT, required.
    #[arg(long = "cluster", value_name = "NAME")]
    pub(crate) clusters: Vec<ClusterSpec>,
    /// As of this time (RFC 3339) instead of now.
    #[arg(long, value_parser = crate::args::time)]
    pub(crate) at: Option<OffsetDateTime>,
    /// Machine-readable output: the run's report as `reconcile --dry-run --json` prints it.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn run(a: StatusArgs) -> CmdResult {
    let now = crate::args::now_or(a.at);
    let pol = load_policy(&a.target.policy)?;
    let token = a.pkcs11.token(&pol, &a.target.policy, false)?;
    let mgmt = a.target.mgmt_cluster.name.clone();
    let clusters = if !a.clusters.is_empty() {
        a.clusters.clone()
    } else if let (Some(dir), false) = (&a.target.store, a.target.kube.kube) {
        DirStore::new(dir)
            .clusters_with_cacerts()?
            .into_iter()
            .filter(|c| *c != mgmt)
            .map(|name| ClusterSpec { name, context: None })
            .collect()
    } else {
        return Err(usage("with --kube, name the clusters: --cluster NAME=CONTEXT (repeat)"));
    };
    if clusters.is_empty() {
        return Err(refused("no workload cluster holds a cacerts yet; run `meshca reconcile` first"));
    }
    // Status plans and writes nothing: a dry run, without the store's lock.
    let fleet = Fleet::open(&a.target, &clusters, None, now, true, token, &a.upstream)?;
    let (store, opts) = (fleet.store(), &fleet.opts);
    let run = reconcile::run(store, &pol, opts, &mut meshca::OsRng, &mut |_, _| {})?;
    if a.json {
        let v = match &run {
            Run::Reconciled(r) => serde_json::to_value(r),
            Run::RootRotation(r) => serde_json::to_value(r),
        };
        outln!("{}", v.map(|v| serde_json::to_string_pretty(&v).unwrap_or_default()).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    let paint = Paint(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    match &run {
        Run::Reconciled(r) => out!("{}", render_status(r, &pol.name, store, &paint)),
        Run::RootRotation(r) => out!("{}", render_status_rotation(r, &paint)),
    }
    let ok = match &run {
        Run::Reconciled(r) => r.ok(),
        Run::RootRotation(r) => !r.failed(),
    };
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
