//! `meshca revoke`, `meshca unrevoke` and `meshca crl`: revoke a compromised cluster CA (a new
//! key and intermediate for it at once, and a CRL set every cluster's bundle carries, so every
//! other cluster refuses what the old one signed), take a revocation back, show the list.
//!
//! The fleet's list and CRL set live beside the policy, in the Secret `<policy>-revocations` of
//! the management cluster (docs/istiod-crl.md has why the set holds one CRL per CA).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use time::OffsetDateTime;

use meshca::RevocationReason;
use meshca_ops::reconcile::Options;
use meshca_ops::revocation::{self, RevocationReport, Selector};
use meshca_ops::store::{DirStore, Store};

use crate::args::{ClusterSpec, LockArgs, StoreArgs};
use crate::failure::{refused, usage, CmdResult, Failure};
use crate::io::{check_future_at, load_policy, open_store, Fleet, Writes};
use crate::render::render_report;

/// The flags every revocation command shares: where the fleet is, and how to act.
#[derive(Args, Debug)]
pub(crate) struct FleetArgs {
    #[command(flatten)]
    pub(crate) pkcs11: crate::args::Pkcs11Args,
    #[command(flatten)]
    pub(crate) target: StoreArgs,
    #[command(flatten)]
    pub(crate) upstream: crate::args::UpstreamCrlArgs,
    /// Another cluster of the fleet, which must get the new CRL set; repeat for each. With the
    /// directory store, every cluster with a cacerts is one already. With --kube:
    /// NAME=CONTEXT, and every workload cluster must be named (a cluster left out keeps
    /// accepting the revoked CA).
    #[arg(long = "peer", value_name = "NAME")]
    pub(crate) peers: Vec<ClusterSpec>,
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

#[derive(Args, Debug)]
pub(crate) struct RevokeArgs {
    /// The cluster whose intermediate is compromised. With --kube: NAME=CONTEXT.
    #[arg(long, value_name = "NAME")]
    pub(crate) cluster: ClusterSpec,
    /// Why: keyCompromise (the default), superseded or cessationOfOperation.
    #[arg(long, default_value = "keyCompromise", value_parser = parse_reason)]
    pub(crate) reason: RevocationReason,
    /// Revoke the cluster's CA with this serial (hex): the current one named on purpose (also
    /// the replacement an earlier revoke issued), or one whose ca-cert.pem is damaged.
    #[arg(long, value_name = "HEX")]
    pub(crate) serial: Option<String>,
    #[command(flatten)]
    pub(crate) fleet: FleetArgs,
}

#[derive(Args, Debug)]
pub(crate) struct UnrevokeArgs {
    /// Take back every revocation of this cluster's CAs. With --kube: NAME=CONTEXT.
    #[arg(long, value_name = "NAME", required_unless_present = "serial", conflicts_with = "serial")]
    pub(crate) cluster: Option<ClusterSpec>,
    /// Take back the revocation of this serial (hex, as `meshca crl show` prints it).
    #[arg(long, value_name = "HEX")]
    pub(crate) serial: Option<String>,
    #[command(flatten)]
    pub(crate) fleet: FleetArgs,
}

#[derive(Subcommand, Debug)]
pub(crate) enum CrlCommand {
    /// Take back every revocation: publish a CRL set without entries (never an empty file:
    /// istiod keeps the last CRL it read, istio#61073).
    Clear(FleetArgs),
    /// Show the revocation list and the CRL set as stored beside the policy.
    Show(ShowArgs),
    /// Rebuild a damaged or lost revocation list from the CRLs published (the list's own CRL
    /// set, or any cluster's ca-crl.pem): every serial the root's newest CRL lists stays
    /// revoked, and each is named with its cluster where the set tells it.
    Rebuild(FleetArgs),
}

#[derive(Args, Debug)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    pub(crate) target: StoreArgs,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

fn parse_reason(s: &str) -> Result<RevocationReason, String> {
    s.parse().map_err(|e: meshca::Error| e.to_string())
}

/// The fleet's clusters: `cluster` (if any) and the peers, or with the directory store every
/// cluster holding a cacerts.
fn fleet_clusters(f: &FleetArgs, cluster: Option<&ClusterSpec>) -> Result<Vec<ClusterSpec>, Failure> {
    let mgmt = f.target.mgmt_cluster.name.as_str();
    let mut out: Vec<ClusterSpec> = cluster.cloned().into_iter().collect();
    for spec in &f.peers {
        if out.iter().any(|c| c.name == spec.name) {
            return Err(refused(format!("--peer {}: named twice", spec.name)));
        }
        out.push(spec.clone());
    }
    if let (Some(dir), false) = (&f.target.store, f.target.kube.kube) {
        for c in DirStore::new(dir).clusters_with_cacerts()? {
            if c != mgmt && !out.iter().any(|o| o.name == c) {
                out.push(ClusterSpec { name: c, context: None });
            }
        }
    } else if f.peers.is_empty() && cluster.is_some() {
        return Err(usage(
            "with --kube, name every other workload cluster with --peer NAME=CONTEXT: each must get the CRL set, or \
             it keeps accepting the revoked CA",
        ));
    }
    for c in &out {
        meshca::validate_cluster_name(&c.name).map_err(|e| refused(format!("--cluster/--peer: {e}")))?;
        if c.name == mgmt {
            return Err(refused(format!("cluster `{}` is the management cluster (--mgmt-cluster)", c.name)));
        }
    }
    if out.is_empty() {
        return Err(refused("no workload cluster to publish the CRL set to"));
    }
    Ok(out)
}

fn act(
    f: &FleetArgs,
    cluster: Option<&ClusterSpec>,
    verb: &str,
    run: impl FnOnce(&dyn Store, &meshca_ops::policy::Policy, &Options) -> Result<RevocationReport, meshca_ops::Error>,
) -> CmdResult {
    let now = crate::args::now_or(f.at);
    let future = check_future_at(now, f.target.kube.kube, f.dry_run)?;
    let pol = load_policy(&f.target.policy)?;
    let token = f.pkcs11.token(&pol, &f.target.policy, !f.dry_run)?;
    let clusters = fleet_clusters(f, cluster)?;
    let fleet = Fleet::open(
        &f.target,
        &clusters,
        Some(Writes { lock: &f.lock, command: verb }),
        now,
        f.dry_run,
        token,
        &f.upstream,
    )?;
    crate::io::require_bundles(fleet.store(), &fleet.opened.clusters)?;
    let report = run(fleet.store(), &pol, &fleet.opts)?;
    if f.json {
        outln!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        out!("{}", render_entries(verb, &report, f.dry_run));
        match &report.run {
            meshca_ops::reconcile::Run::Reconciled(run) => out!("{}", render_report(run, &pol, true)),
            meshca_ops::reconcile::Run::RootRotation(rot) => {
                out!("{}", crate::render::render_rotation(rot, f.dry_run));
            }
        }
    }
    if future && !f.dry_run {
        errln!(
            "note: --at {} is in the future: the store now holds a CRL not valid before then",
            meshca::format_time(now)
        );
    }
    Ok(if report.run.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub(crate) fn run_revoke(a: RevokeArgs) -> CmdResult {
    let name = a.cluster.name.clone();
    let target = a.serial.clone().map_or(revocation::Target::Current, revocation::Target::Serial);
    act(&a.fleet, Some(&a.cluster), "revoke", |store, pol, opts| {
        revocation::revoke_ca(store, pol, opts, &name, &target, a.reason, &mut meshca::OsRng, &mut |_, _| {})
    })
}

pub(crate) fn run_unrevoke(a: UnrevokeArgs) -> CmdResult {
    let which = match (&a.cluster, &a.serial) {
        (Some(c), _) => Selector::Cluster(c.name.clone()),
        (None, Some(s)) => Selector::Serial(s.clone()),
        (None, None) => return Err(usage("give --cluster NAME or --serial HEX")),
    };
    act(&a.fleet, a.cluster.as_ref(), "unrevoke", |store, pol, opts| {
        revocation::unrevoke(store, pol, opts, &which, &mut meshca::OsRng, &mut |_, _| {})
    })
}

pub(crate) fn run_crl(c: CrlCommand) -> CmdResult {
    match c {
        CrlCommand::Clear(f) => act(&f, None, "crl clear", |store, pol, opts| {
            revocation::unrevoke(store, pol, opts, &Selector::All, &mut meshca::OsRng, &mut |_, _| {})
        }),
        CrlCommand::Show(a) => show(a),
        CrlCommand::Rebuild(f) => rebuild(&f),
    }
}

fn rebuild(f: &FleetArgs) -> CmdResult {
    let mut rebuilt = None;
    let code = act(f, None, "crl rebuild", |store, pol, opts| {
        let r = revocation::rebuild(store, pol, opts, &mut meshca::OsRng, &mut |_, _| {})?;
        let report =
            RevocationReport::rebuilt(r.entries.clone(), meshca_ops::reconcile::Run::Reconciled(r.run.clone()));
        rebuilt = Some(r);
        Ok(report)
    })?;
    if let (Some(r), false) = (rebuilt, f.json) {
        errln!(
            "rebuilt from the CRL #{} found at {}: {} entr{}{}",
            r.crl_number,
            r.source,
            r.entries.len(),
            if r.entries.len() == 1 { "y" } else { "ies" },
            if r.unattributed > 0 {
                format!(
                    "; {} name no cluster (their own CRL was not in the set) and are kept as `unknown`",
                    r.unattributed
                )
            } else {
                String::new()
            }
        );
    }
    Ok(code)
}

fn show(a: ShowArgs) -> CmdResult {
    let pol = load_policy(&a.target.policy)?;
    let opened = open_store(&a.target, &[])?;
    let store = opened.store.as_ref();
    let secret = revocation::list_secret(&pol, &opened.mgmt);
    let location = store.location(&secret);
    let Some(fleet) = revocation::load(store, &pol, &opened.mgmt)? else {
        if a.json {
            outln!("null");
        } else {
            outln!("no revocation was ever made for policy {} ({location} does not exist)", pol.name);
        }
        return Ok(ExitCode::SUCCESS);
    };
    if a.json {
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            location: &'a str,
            list: &'a revocation::RevocationList,
            crls: Vec<CrlShown>,
        }
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct CrlShown {
            issuer: String,
            entries: usize,
            this_update: String,
            next_update: String,
        }
        let crls = fleet
            .crls()
            .iter()
            .map(|c| CrlShown {
                issuer: c.issuer(),
                entries: c.entries().len(),
                this_update: meshca::format_time(c.this_update()),
                next_update: meshca::format_time(c.next_update()),
            })
            .collect();
        let shown = Shown { location: &location, list: &fleet.list, crls };
        outln!("{}", serde_json::to_string_pretty(&shown).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    outln!("revocation list {location} (root CRL number {})", fleet.list.crl_number);
    out!("{}", render_list(&fleet.list.revoked));
    outln!("CRL set ({} CRLs, in every cluster's ca-crl.pem):", fleet.crls().len());
    for c in fleet.crls() {
        outln!(
            "  {}  {} entr{}  next update {}",
            c.issuer(),
            c.entries().len(),
            if c.entries().len() == 1 { "y" } else { "ies" },
            meshca::format_time(c.next_update())
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn render_list(revoked: &[revocation::RevokedCa]) -> String {
    if revoked.is_empty() {
        return "  no CA is revoked\n".into();
    }
    let mut s = String::new();
    for r in revoked {
        s.push_str(&format!(
            "  {}  serial {}  {}  revoked {}  ({})\n",
            r.cluster,
            r.serial,
            r.subject,
            meshca::format_time(r.revoked_at),
            r.reason
        ));
    }
    s
}

fn render_entries(verb: &str, r: &RevocationReport, dry_run: bool) -> String {
    let done = match (verb, dry_run) {
        ("revoke", false) => "revoked",
        ("revoke", true) => "would revoke",
        ("crl rebuild", false) => "rebuilt the list",
        ("crl rebuild", true) => "would rebuild the list",
        (_, false) => "took back",
        (_, true) => "would take back",
    };
    if r.entries.is_empty() {
        return format!("{done}: nothing (the list was empty); the CRL set is republished\n");
    }
    format!("{done}:\n{}", render_list(&r.entries))
}
