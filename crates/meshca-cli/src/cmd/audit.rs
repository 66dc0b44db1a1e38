//! `meshca audit`: the policy's issuance log (spec.config.auditLog): list it, print its signed
//! checkpoint, verify it from a checkpoint kept earlier and against every cluster's bundle, and
//! prove one CA's inclusion. Reads only.

use std::path::PathBuf;
use std::process::ExitCode;

use base64ct::{Base64, Encoding};
use clap::{Args, Subcommand};

use crate::args::{ClusterSpec, StoreArgs};
use crate::failure::{refused, CmdResult};
use crate::io::{load_policy, open_store};
use meshca_ops::audit;

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// List the log's entries: index, time, kind, cluster, reason, serial, name.
    Log(LogArgs),
    /// Print the log's current signed checkpoint (a C2SP signed note): the file to keep.
    Checkpoint(CheckpointArgs),
    /// Verify the log: its checkpoint, its consistency with a checkpoint kept earlier
    /// (--since), and that every CA certificate and CRL in every cluster's bundle is in it (exit
    /// 1 when one is unaccounted for).
    Verify(VerifyArgs),
    /// Print the inclusion proof of a CA certificate (RFC 6962: leaf, index, tree size, audit
    /// path, and the checkpoint it leads to).
    Prove(ProveArgs),
}

/// Which key the log's checkpoints must be signed by.
#[derive(Args, Debug)]
pub(crate) struct KeyArgs {
    /// The log's verifier key you kept (name+hash+base64, as `meshca audit checkpoint
    /// --verifier-key` printed it): checkpoints are checked with it, not with a key the store or
    /// the token holds.
    #[arg(long, value_name = "VERIFIER_KEY")]
    pub(crate) trusted_key: Option<String>,
    /// The PKCS#11 module of the token holding the log key (spec.config.auditLog.pkcs11): its
    /// public key is read, without a PIN.
    #[arg(long, value_name = "PATH", env = meshca_ops::pkcs11::MODULE_ENV)]
    pub(crate) pkcs11_module: Option<PathBuf>,
}

impl KeyArgs {
    /// The verifier key: the one kept, else the policy's (its Secret, or its token's public key).
    fn verifier(
        &self,
        store: &dyn meshca_ops::store::Store,
        pol: &meshca_ops::policy::Policy,
        mgmt: &str,
    ) -> Result<meshca::tlog::VerifierKey, crate::failure::Failure> {
        if let Some(k) = &self.trusted_key {
            return meshca::tlog::VerifierKey::parse(k).map_err(|e| refused(format!("--trusted-key: {e}")));
        }
        let token = meshca_ops::reconcile::TokenAccess::new(self.pkcs11_module.clone(), None);
        Ok(audit::verifier(store, pol, mgmt, &token)?)
    }
}

#[derive(Args, Debug)]
pub(crate) struct LogArgs {
    #[command(flatten)]
    pub(crate) target: StoreArgs,
}

#[derive(Args, Debug)]
pub(crate) struct CheckpointArgs {
    #[command(flatten)]
    pub(crate) target: StoreArgs,
    /// Print the log's verifier key (name+hash+base64, as Go's sumdb/note) instead.
    #[arg(long)]
    pub(crate) verifier_key: bool,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pub(crate) target: StoreArgs,
    /// A checkpoint printed by `meshca audit checkpoint` earlier: the log must extend it.
    #[arg(long, value_name = "CHECKPOINT_FILE")]
    pub(crate) since: Option<PathBuf>,
    /// A workload cluster; repeat for each (default with the directory store: every cluster
    /// holding a cacerts). With --kube: NAME=CONTEXT, required.
    #[arg(long = "cluster", value_name = "NAME")]
    pub(crate) clusters: Vec<ClusterSpec>,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
}

#[derive(Args, Debug)]
pub(crate) struct ProveArgs {
    #[command(flatten)]
    pub(crate) target: StoreArgs,
    /// The CA certificate's serial number, hex (colons allowed).
    #[arg(long, value_name = "HEX")]
    pub(crate) serial: String,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
}

fn b64(h: &[u8]) -> String {
    Base64::encode_string(h)
}

pub(crate) fn run(c: AuditCommand) -> CmdResult {
    match c {
        AuditCommand::Log(a) => {
            let pol = load_policy(&a.target.policy)?;
            let opened = open_store(&a.target, &[])?;
            let size = audit::entries(opened.store.as_ref(), &pol, &opened.mgmt, &mut |i, e| {
                outln!(
                    "{i}\t{}\t{}\t{}\t{}\t{}\t{}",
                    meshca::format_time(e.time),
                    e.kind.as_str(),
                    e.cluster,
                    e.reason,
                    e.serial().unwrap_or_else(|| "-".into()),
                    meshca::printable(&e.name().unwrap_or_else(|| "(unparsable)".into()), 200)
                );
                Ok(())
            })?;
            errln!("{size} entries");
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint(a) => {
            let pol = load_policy(&a.target.policy)?;
            let opened = open_store(&a.target, &[])?;
            let key = a.key.verifier(opened.store.as_ref(), &pol, &opened.mgmt)?;
            if a.verifier_key {
                outln!("{key}");
            } else {
                let (note, _) = audit::checkpoint(opened.store.as_ref(), &pol, &opened.mgmt, &key)?;
                outln!("{}", note.trim_end_matches('\n'));
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Prove(a) => {
            let pol = load_policy(&a.target.policy)?;
            let serial = meshca::parse_serial(&a.serial).map_err(|e| refused(format!("--serial: {e}")))?;
            let opened = open_store(&a.target, &[])?;
            let key = a.key.verifier(opened.store.as_ref(), &pol, &opened.mgmt)?;
            let p = audit::prove(opened.store.as_ref(), &pol, &opened.mgmt, &key, &serial)?;
            outln!("origin: {}", p.checkpoint.origin);
            outln!("tree size: {}", p.checkpoint.size);
            outln!("root hash: {}", b64(&p.checkpoint.root));
            outln!("leaf index: {}", p.index);
            outln!("leaf hash: {}", b64(&meshca::tlog::leaf_hash(&p.leaf)));
            outln!("leaf: {}", b64(&p.leaf));
            for h in &p.path {
                outln!("path: {}", b64(h));
            }
            outln!(
                "entry: {} {} for {} ({}), logged {}",
                p.entry.kind.as_str(),
                a.serial,
                p.entry.cluster,
                p.entry.reason,
                meshca::format_time(p.entry.time)
            );
            outln!("checkpoint:");
            outln!("{}", p.note.trim_end_matches('\n'));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify(a: VerifyArgs) -> CmdResult {
    let pol = load_policy(&a.target.policy)?;
    let since = match &a.since {
        None => None,
        Some(p) => Some(crate::io::read_input(p)?),
    };
    let opened = open_store(&a.target, &a.clusters)?;
    let store = opened.store.as_ref();
    let clusters: Vec<String> = if !a.clusters.is_empty() {
        opened.clusters.clone()
    } else if a.target.kube.kube {
        return Err(refused("with --kube, name every workload cluster: --cluster NAME=CONTEXT"));
    } else {
        store.clusters_with_cacerts()?.into_iter().filter(|c| *c != opened.mgmt).collect()
    };
    let key = a.key.verifier(store, &pol, &opened.mgmt)?;
    let r = audit::verify(store, &pol, &opened.mgmt, &key, &clusters, since.as_deref())?;
    outln!("log {}: {} entries, checkpoint signed at {} entries", r.checkpoint.origin, r.entries, r.checkpoint.size);
    if r.entries > r.checkpoint.size {
        outln!(
            "  {} entries past the checkpoint (a run stopped between logging and signing; the next run signs them)",
            r.entries - r.checkpoint.size
        );
    }
    if let Some((old, proof)) = &r.since {
        outln!("consistent with the checkpoint kept at {} entries (root {})", old.size, b64(&old.root));
        for h in proof {
            outln!("consistency proof: {}", b64(h));
        }
    }
    outln!("{} CA certificates and CRLs in {} clusters checked", r.checked, clusters.len());
    for u in &r.unaccounted {
        outln!(
            "UNACCOUNTED FOR: {} {} in {} {} (sha256 {}): not in the log",
            u.kind,
            meshca::printable(&u.name, 200),
            u.cluster,
            u.file,
            u.sha256
        );
    }
    if r.ok() {
        outln!("every CA in the clusters is in the log");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}
