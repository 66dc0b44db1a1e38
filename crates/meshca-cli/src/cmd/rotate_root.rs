//! `meshca rotate-root start|status|rollback|forget`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use time::OffsetDateTime;

use meshca::{Cacerts, SigningCa};
use meshca_ops::reconcile::Options;
use meshca_ops::store::{DirStore, SecretRef, StoreLock};
use meshca_ops::Error;

use crate::args::{ClusterSpec, LockArgs, StoreArgs};
use crate::failure::{usage, CmdResult, Failure};
use crate::io::{load_policy, load_signer, lock_store, open_store};
use crate::render::short;

#[derive(Subcommand, Debug)]
pub(crate) enum RotateRootCommand {
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
pub(crate) struct RotateCommonArgs {
    #[command(flatten)]
    pub(crate) target: StoreArgs,
    /// Workload clusters: for `status`, the ones to show; for `start`, every cluster the
    /// rotation must wait for (runs add the clusters they name); for `forget`, the ones to
    /// drop. With --kube: NAME=CONTEXT.
    #[arg(long = "cluster", value_name = "NAME")]
    pub(crate) clusters: Vec<ClusterSpec>,
    /// As of this time (RFC 3339).
    #[arg(long, value_parser = crate::args::time)]
    pub(crate) at: Option<OffsetDateTime>,
    #[command(flatten)]
    pub(crate) lock: LockArgs,
    /// The token of a key the policy keeps in one (the issuance log's, the signing CA's).
    #[command(flatten)]
    pub(crate) pkcs11: crate::args::Pkcs11Args,
}

impl RotateCommonArgs {
    /// The directory store's lock, for a subcommand that writes it (none with --kube).
    fn lock_store(&self, command: &str) -> Result<Option<StoreLock>, Failure> {
        self.target.store.as_ref().map(|dir| lock_store(&DirStore::new(dir), &self.lock, command)).transpose()
    }

    /// The run's options at `now` for the opened store's clusters; for a subcommand that
    /// writes CAs (`signs`, the policy), the token of a key the policy keeps in one.
    fn options(
        &self,
        opened: &crate::io::Opened,
        signs: Option<&meshca_ops::policy::Policy>,
    ) -> Result<Options, Failure> {
        let mut opts = Options::new(crate::args::now_or(self.at), opened.clusters.clone());
        opts.mgmt_cluster = opened.mgmt.clone();
        if let Some(pol) = signs {
            opts.token = self.pkcs11.token(pol, &self.target.policy, true)?;
        }
        Ok(opts)
    }
}

#[derive(Args, Debug)]
pub(crate) struct RotateStartArgs {
    #[command(flatten)]
    pub(crate) common: RotateCommonArgs,
    /// The new signing CA bundle directory.
    #[arg(long)]
    pub(crate) new_ca: PathBuf,
    /// Wait this long after every cluster completes a step before the next (default: 24 h, the
    /// longest workload certificate lifetime istiod issues by default; 0 to 8760).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(i64).range(meshca::bounds::DWELL_HOURS.0..=meshca::bounds::DWELL_HOURS.1))]
    pub(crate) dwell_hours: i64,
}

pub(crate) fn run(c: RotateRootCommand) -> CmdResult {
    use meshca_ops::rootrotation;
    match c {
        RotateRootCommand::Start(a) => {
            let c = &a.common;
            let pol = load_policy(&c.target.policy)?;
            let opened = open_store(&c.target, &c.clusters)?;
            let _lock = c.lock_store("rotate-root start")?;
            let opts = c.options(&opened, Some(&pol))?;
            let store = opened.store.as_ref();
            let (ns, name) = pol.signer.secret();
            let current_ref = SecretRef::new(&opened.mgmt, ns, name);
            let current = store
                .read(&current_ref)?
                .ok_or_else(|| usage(format!("{}: no signing CA", store.location(&current_ref))))?;
            let current = SigningCa::from_files(&current, opts.now).map_err(Error::core("current signing CA"))?;
            let new = load_signer(&a.new_ca, opts.now)?;
            let dwell = meshca::bounds::dwell_hours(a.dwell_hours).map_err(|e| usage(format!("--dwell-hours {e}")))?;
            let r = rootrotation::start(store, &pol, &opts, &current, &new, dwell)?;
            outln!("root rotation started: {} -> {}", r.old_root.subject(), r.new_root.subject());
            outln!(
                "  old sha256 {}\n  new sha256 {}",
                short(&r.old_root.fingerprint_sha256()),
                short(&r.new_root.fingerprint_sha256())
            );
            outln!(
                "  step 1 of 3: every cluster's root-cert.pem gains the new root; run `meshca reconcile` to apply it"
            );
            Ok(ExitCode::SUCCESS)
        }
        RotateRootCommand::Status(a) => {
            let pol = load_policy(&a.target.policy)?;
            let opened = open_store(&a.target, &a.clusters)?;
            let now = crate::args::now_or(a.at);
            let store = opened.store.as_ref();
            let Some(stored) = rootrotation::load(store, &pol, &opened.mgmt)? else {
                match &pol.root_rotation {
                    Some(_) => outln!("no root rotation under way; the next `meshca reconcile` starts the one spec.config.rootRotation names"),
                    None => outln!("no root rotation under way"),
                }
                return Ok(ExitCode::SUCCESS);
            };
            let r = &stored.rotation;
            let phase = rootrotation::PhaseName(r.phase);
            outln!("phase {phase} ({} -> {})", r.old_root.subject(), r.new_root.subject());
            outln!(
                "  started by {}; incoming signer {}",
                if stored.started_by_policy { "spec.config.rootRotation" } else { "rotate-root start" },
                store.location(&stored.new_signer)
            );
            if let Some(t) = r.phase_completed_at {
                outln!(
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
                outln!("  {cl:<12} {state}");
            }
            Ok(ExitCode::SUCCESS)
        }
        RotateRootCommand::Forget(a) => {
            let pol = load_policy(&a.target.policy)?;
            if a.clusters.is_empty() {
                return Err(usage("name the clusters to forget with --cluster NAME"));
            }
            let opened = open_store(&a.target, &[])?;
            let _lock = a.lock_store("rotate-root forget")?;
            let opts = a.options(&opened, None)?;
            for c in ClusterSpec::names(&a.clusters) {
                if rootrotation::forget(opened.store.as_ref(), &pol, &opts, &c)? {
                    outln!("forgot {c}: the rotation no longer waits for it");
                } else {
                    outln!("{c}: not known to the rotation; nothing to forget");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RotateRootCommand::Rollback(a) => {
            let pol = load_policy(&a.target.policy)?;
            let opened = open_store(&a.target, &a.clusters)?;
            let _lock = a.lock_store("rotate-root rollback")?;
            let r = rootrotation::rollback(opened.store.as_ref(), &pol, &a.options(&opened, None)?)?;
            outln!("rolling back: phase {}; run `meshca reconcile` to apply it", rootrotation::PhaseName(r.phase));
            if pol.root_rotation.is_some() {
                outln!(
                    "  spec.config.rootRotation still names the new CA; remove it (it will not start again by itself)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
