//! `multicluster OUT`: a root, `cacerts` bundles for cluster1 and cluster2, and a workload
//! certificate in each, verified against each other.
//!
//! ```text
//! OUT/root-ca/                 the signing CA (all four files hold the root, as a management Secret)
//! OUT/<cluster>/               ca-cert.pem ca-key.pem cert-chain.pem root-cert.pem
//! OUT/<cluster>/leaf/          cert-chain.pem (leaf first, then up to the root) key.pem root-cert.pem
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use meshca::{IntermediateParams, Layout, LeafParams, RootParams, SigningCa, SpiffeId};
use meshca_ops::fs;

const CLUSTERS: [&str; 2] = ["cluster1", "cluster2"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out] = args.as_slice() else {
        eprintln!("usage: multicluster OUT\n  writes a root CA, cacerts for cluster1 and cluster2, and a workload leaf in each");
        return ExitCode::from(2);
    };
    match run(Path::new(out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("multicluster: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    if fs::is_nonempty_dir(out) {
        return Err(format!(
            "{} already holds files; meshca never overwrites CA keys. Choose a new directory or remove it",
            out.display()
        )
        .into());
    }
    let now = time::OffsetDateTime::now_utc();
    let rng = &mut meshca::OsRng;

    let root = SigningCa::generate_root(&RootParams::default(), rng, now)?;
    let root_dir = out.join("root-ca");
    fs::write_files(&root_dir, &root.bundle().to_files(Layout::Istio))?;
    let rc = root.bundle().ca_cert();
    println!("root CA      {}  {}", rc.subject(), rc.key_type().map(|k| k.to_string()).unwrap_or_default());
    println!("             sha256 {}", rc.fingerprint_sha256());
    println!("             expires {}  -> {}/", meshca::format_time(rc.not_after()), root_dir.display());

    let mut bundles = Vec::new();
    let mut leaves = Vec::new();
    for cluster in CLUSTERS {
        let bundle = root.issue_intermediate(&IntermediateParams::new(cluster), rng, now)?.value;
        let dir = out.join(cluster);
        let written = fs::write_files(&dir, &bundle.to_files(Layout::Istio))?;
        println!(
            "{cluster:<12} {}  expires {}",
            bundle.ca_cert().subject(),
            meshca::format_time(bundle.ca_cert().not_after())
        );
        print_paths(&written);

        let id = SpiffeId::workload("cluster.local", "default", &format!("{cluster}-workload"))?;
        let leaf = SigningCa::new(bundle.clone()).issue_leaf(&LeafParams::new(id.clone()), rng, now)?.value;
        let written = fs::write_files(&dir.join("leaf"), &leaf.to_files())?;
        println!("{:<12} workload {id}  expires {}", "", meshca::format_time(leaf.cert().not_after()));
        print_paths(&written);
        bundles.push((cluster, bundle));
        leaves.push((cluster, leaf));
    }

    // Check what was written, as a user would: every bundle trusts the shared root, and each
    // cluster's workload certificate verifies against the other cluster's root-cert.pem.
    let refs: Vec<(&str, &meshca::Cacerts)> = bundles.iter().map(|(n, b)| (*n, b)).collect();
    let shared = meshca::check_mutual_trust(&refs)?;
    for (from, leaf) in &leaves {
        for (to, bundle) in &bundles {
            meshca::verify_workload_chain(&leaf.chain(), bundle.roots(), now)?;
            if from != to {
                println!("verified     {from}'s workload is trusted by {to}'s root-cert.pem");
            }
        }
    }
    println!("shared root  {} ({})", shared.subject, shared.fingerprint);
    println!("next         cargo run -p meshca-examples --bin check -- {}", join(out, &CLUSTERS));
    Ok(())
}

fn print_paths(paths: &[PathBuf]) {
    for p in paths {
        println!("{:<12} {}", "", p.display());
    }
}

fn join(out: &Path, clusters: &[&str]) -> String {
    clusters.iter().map(|c| out.join(c).display().to_string()).collect::<Vec<_>>().join(" ")
}
