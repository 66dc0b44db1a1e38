//! `meshca quickstart`: the whole workflow in a fresh local store.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use time::{Duration, OffsetDateTime};

use meshca::{Cacerts, IntermediateParams, LeafParams, RootParams, SigningCa, SpiffeId};
use meshca_ops::reconcile::{self, Options};
use meshca_ops::store::{DirStore, SecretRef, Store};
use meshca_ops::writer::{Owner, Writer};
use meshca_ops::{fs, mtls, policy, Error};

use crate::args::LockArgs;
use crate::failure::{CmdResult, Failure};
use crate::io::{load_bundle, load_policy, lock_store};
use crate::render::{render_report, short};

#[derive(Args, Debug)]
pub(crate) struct QuickstartArgs {
    /// Where to put the store, the policy and the workload certificates.
    #[arg(long, default_value = "meshca-quickstart")]
    pub(crate) dir: PathBuf,
    #[command(flatten)]
    pub(crate) lock: LockArgs,
}

pub(crate) fn run(a: QuickstartArgs) -> CmdResult {
    let dir = &a.dir;
    let store_dir = dir.join("store");
    let store = DirStore::new(&store_dir);
    let _lock = lock_store(&store, &a.lock, "quickstart")?;
    let policy_path = dir.join("policy.yaml");
    let now = OffsetDateTime::now_utc();
    let rng = &mut meshca::OsRng;
    outln!("meshca quickstart: the multi-cluster CA workflow end to end in {}", dir.display());
    outln!(
        "(the steps of Gloo Mesh Enterprise's guide \"Manage Istio intermediate CAs\" at docs.solo.io, on a local \
         store that mirrors Kubernetes Secrets)\n"
    );

    // Step 1: the root CA as the management cluster's Secret.
    let pol = policy::parse(policy::SEED_POLICY, "policy.yaml")?;
    let (ns, name) = pol.signer.secret();
    let mgmt_secret = SecretRef::new("mgmt", ns, name);
    let signer_dir = store.dir(&mgmt_secret);
    match store.read(&mgmt_secret)? {
        Some(_) => outln!("Step 1  root CA exists, reusing it   {}", signer_dir.display()),
        None => {
            let root = SigningCa::generate_root(&RootParams::default(), rng, now).map_err(Error::core("root"))?;
            // The user's CA, as `meshca root-ca` would leave it: not labelled as meshca's.
            Writer::new(&store, &pol, None, now, false).write_signer(&mgmt_secret, &root, Owner::User)?;
            outln!("Step 1  root CA {} -> {}", root.bundle().ca_cert().subject(), signer_dir.display());
            outln!("        (what `meshca root-ca --out {}` does)", signer_dir.display());
        }
    }

    // Step 2: the seed's policy, reconciled onto three clusters, then verified.
    if !policy_path.exists() {
        fs::write_file_atomic(&policy_path, policy::SEED_POLICY.as_bytes(), 0o644).map_err(Error::from)?;
    }
    let pol = load_policy(&policy_path)?;
    let clusters: Vec<String> = ["cluster1", "cluster2", "cluster3"].map(String::from).to_vec();
    outln!("Step 2  policy {} (ttlDays 1, secretRotationGracePeriodRatio 0.1)", policy_path.display());
    outln!(
        "        meshca reconcile --policy {} --store {} --cluster cluster1 --cluster cluster2 --cluster cluster3",
        policy_path.display(),
        store_dir.display()
    );
    let report = reconcile::reconcile(&store, &pol, &Options::new(now, clusters.clone()), rng, &mut |_, _| {})?;
    for line in render_report(&report, &pol, true).lines() {
        outln!("        {line}");
    }
    if !report.ok() {
        return Ok(ExitCode::from(1));
    }
    let mut bundles = Vec::new();
    for c in &clusters {
        bundles.push((c.as_str(), load_bundle(&store.dir(&SecretRef::cacerts(c)), now)?.0));
    }
    let refs: Vec<(&str, &Cacerts)> = bundles.iter().map(|(n, b)| (*n, b)).collect();
    let shared = meshca::check_mutual_trust(&refs).map_err(Error::core("verify"))?;
    meshca::check_cross_cluster(&refs, rng, now).map_err(Error::core("verify"))?;
    outln!("        verified: every cluster's cacerts shares root {} ({})", shared.subject, short(&shared.fingerprint));

    // Step 3: a workload in each cluster; real mTLS across clusters.
    let workloads = [("cluster1", "productpage"), ("cluster2", "reviews"), ("cluster3", "ratings")];
    let mut leaves = Vec::new();
    outln!("Step 3  workload certificates, as istiod issues them:");
    for ((cluster, sa), (_, bundle)) in workloads.iter().zip(&bundles) {
        let id = SpiffeId::workload("cluster.local", "bookinfo", sa).map_err(Error::core("workload"))?;
        let leaf = SigningCa::new(bundle.clone())
            .issue_leaf(&LeafParams::new(id.clone()), rng, now)
            .map_err(Error::core(*cluster))?
            .value;
        let wdir = dir.join("workloads").join(cluster);
        fs::write_files(&wdir, &leaf.to_files()).map_err(Error::from)?;
        outln!("        {cluster}  {id}  -> {}", wdir.display());
        leaves.push(leaf);
    }
    for (i, j) in [(0usize, 1usize), (1, 2), (2, 0)] {
        let hs = mtls::handshake(&leaves[i], bundles[i].1.roots(), &leaves[j], bundles[j].1.roots()).map_err(|e| {
            Failure { code: 1, message: format!("mTLS {} -> {} failed: {e}", workloads[i].0, workloads[j].0) }
        })?;
        outln!(
            "        mTLS {} {} -> {} {}: {} {}, each side verified the other",
            workloads[i].0,
            workloads[i].1,
            workloads[j].0,
            workloads[j].1,
            hs.protocol,
            hs.cipher_suite
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
        Err(e) => outln!(
            "        refused: cluster2 reviews rejects a workload from a cluster with another root ({})",
            e.server.as_deref().unwrap_or("refused")
        ),
    }

    let c1 = store.dir(&SecretRef::cacerts("cluster1"));
    let tomorrow = meshca::format_time(now + Duration::hours(22));
    outln!("\nAll done. Next:");
    outln!("  meshca inspect {}", c1.display());
    outln!(
        "  meshca verify {}",
        clusters.iter().map(|c| store.dir(&SecretRef::cacerts(c)).display().to_string()).collect::<Vec<_>>().join(" ")
    );
    outln!("  meshca secret {} | kubectl --context <cluster1> apply -f -", c1.display());
    outln!(
        "  meshca reconcile --policy {} --store {} --cluster cluster1 --cluster cluster2 --cluster cluster3 --at {tomorrow}",
        policy_path.display(),
        store_dir.display()
    );
    outln!("    (rehearse rotation: 22 h from now every intermediate is inside its 10% grace period)");
    outln!(
        "  meshca verify --at {tomorrow} {}",
        clusters.iter().map(|c| store.dir(&SecretRef::cacerts(c)).display().to_string()).collect::<Vec<_>>().join(" ")
    );
    outln!("    (after that run the store holds bundles valid from then on: check them at that time)");
    Ok(ExitCode::SUCCESS)
}
