//! RA mode over the directory store, in milliseconds: a cluster meshca signs workload
//! certificates for keeps no CA key (only its roots, in `external-ca-cert`); its intermediate
//! is kept beside the policy on the management side, every job works on it unchanged, and a
//! workload certificate signed with it is trusted by the other clusters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use meshca::{Cacerts, Layout, RootParams, SigningCa, WorkloadRequest};
use meshca_ops::policy::{self, Policy, SEED_POLICY};
use meshca_ops::reconcile::{self, Options};
use meshca_ops::store::{DirStore, SecretRef, Store, WriteMeta};
use meshca_ops::{ra, revocation};
use meshca_testkit::csr::spiffe_request;
use meshca_testkit::{t0, tempdir};

const SIGNER: &str = "my-root-trust-policy.gloo-mesh";

fn opts(clusters: &[&str]) -> Options {
    let mut o = Options::new(t0(), clusters.iter().map(|c| (*c).to_owned()).collect());
    o.mgmt_cluster = "mgmt".into();
    o
}

fn ra_policy() -> Policy {
    let text = SEED_POLICY.replace("ttlDays: 1", "ttlDays: 30")
        + "    workloadSigning:\n      signerName: meshca.dev/istio\n      clusters: [east]\n";
    policy::parse(&text, "policy.yaml").unwrap()
}

fn fleet(tag: &str) -> (std::path::PathBuf, DirStore, SigningCa) {
    let dir = tempdir(&format!("ra-{tag}"));
    let store = DirStore::new(dir.join("store"));
    let root = SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, t0()).unwrap();
    store
        .write(
            &SecretRef::new("mgmt", "gloo-mesh", SIGNER),
            &root.bundle().to_files(Layout::Istio),
            &WriteMeta::default(),
        )
        .unwrap();
    (dir, store, root)
}

#[test]
fn an_ra_cluster_gets_only_its_roots_and_its_intermediate_signs_workloads_the_fleet_trusts() {
    let (dir, store, root) = fleet("roots");
    let policy = ra_policy();
    let r =
        reconcile::reconcile(&store, &policy, &opts(&["east", "west"]), &mut meshca::OsRng, &mut |_, _| {}).unwrap();
    assert!(r.ok(), "{r:?}");
    let east = dir.join("store/east/istio-system");
    assert!(!east.join("cacerts").exists(), "no CA key in an RA cluster");
    let roots = std::fs::read(east.join("external-ca-cert/root-cert.pem")).unwrap();
    assert_eq!(roots, root.bundle().root().to_pem().as_bytes());
    assert_eq!(
        std::fs::read_dir(east.join("external-ca-cert"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count(),
        1,
        "only root-cert.pem"
    );
    // The key is on the management side, 0600.
    let kept = dir.join("store/mgmt/gloo-mesh/meshca-ra-east/ca-key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o600);
    // West, not named, is as before.
    assert!(dir.join("store/west/istio-system/cacerts/ca-key.pem").exists());
    assert!(!dir.join("store/west/istio-system/external-ca-cert").exists());

    // The signer's CA for east chains to the root; a workload of east is trusted by west.
    let ca = ra::signing_ca(&store, &policy, "mgmt", "east", t0()).unwrap().unwrap();
    let rules = policy.workload_signing.as_ref().unwrap().rules.clone();
    let pem = spiffe_request("spiffe://cluster.local/ns/shop/sa/checkout");
    let signed = ca
        .sign_workload_request(&WorkloadRequest::new(pem.as_bytes()), &rules, &mut meshca::OsRng, t0())
        .unwrap()
        .unwrap();
    let west = Cacerts::from_files(&store.read(&SecretRef::cacerts("west")).unwrap().unwrap(), t0()).unwrap();
    let chain: Vec<meshca::Certificate> = std::iter::once(signed.cert.clone()).chain(signed.intermediates).collect();
    meshca_testkit::verify::webpki(&chain, west.roots(), t0()).unwrap();
    assert_eq!(ra::signing_ca(&store, &policy, "mgmt", "west", t0()).unwrap().map(|_| ()), None, "west is not RA");

    // A second pass changes nothing; a revocation re-issues east's intermediate on the
    // management side, and the fleet's CRLs name the old one.
    let before = std::fs::read(&kept).unwrap();
    let again =
        reconcile::reconcile(&store, &policy, &opts(&["east", "west"]), &mut meshca::OsRng, &mut |_, _| {}).unwrap();
    assert!(again.ok());
    assert_eq!(std::fs::read(&kept).unwrap(), before, "nothing to do");
    let old_serial = ca.bundle().ca_cert().serial_hex();
    let rev = revocation::revoke_clusters(
        &store,
        &policy,
        &opts(&["east", "west"]),
        &["east".to_owned()],
        meshca::RevocationReason::KeyCompromise,
        &mut meshca::OsRng,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(rev.entries.len(), 1);
    assert_eq!(rev.entries[0].serial, old_serial.replace(':', ""));
    assert_ne!(std::fs::read(&kept).unwrap(), before, "a new intermediate, kept on the management side");
    assert!(!east.join("cacerts").exists());
    let west_crl = store.read(&SecretRef::cacerts("west")).unwrap().unwrap();
    let crls = meshca::Crl::from_pem_all(west_crl.get(meshca::CA_CRL).unwrap(), "ca-crl.pem").unwrap();
    let refused = meshca_testkit::verify::webpki_with_crls(&chain, west.roots(), &crls, t0()).unwrap_err();
    assert_eq!(refused.to_string(), "CertRevoked", "west refuses a workload of the old intermediate");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_external_ca_cert_made_by_hand_is_never_replaced_and_nothing_is_kept_for_it() {
    let (dir, store, _) = fleet("hand");
    let hand = SecretRef::new("east", "istio-system", "external-ca-cert");
    let mut files = meshca::Files::new();
    files.insert("root-cert.pem".to_owned(), b"by hand".to_vec());
    std::fs::create_dir_all(dir.join("store/east/istio-system/external-ca-cert")).unwrap();
    std::fs::write(dir.join("store/east/istio-system/external-ca-cert/root-cert.pem"), b"by hand").unwrap();
    let r = reconcile::reconcile(&store, &ra_policy(), &opts(&["east"]), &mut meshca::OsRng, &mut |_, _| {}).unwrap();
    assert!(!r.ok());
    assert_eq!(store.read(&hand).unwrap().unwrap(), files, "left alone");
    assert!(
        !dir.join("store/mgmt/gloo-mesh/meshca-ra-east").exists(),
        "the roots go first: no intermediate without them"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_readme_s_workload_signing_block_is_a_policy_meshca_accepts() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section =
        readme.split("## No CA key in workload clusters (RA mode)").nth(1).expect("the README has the section");
    let block = section.split("```yaml\n").nth(1).unwrap().split("```").next().unwrap();
    let fields: String =
        block.lines().skip_while(|l| !l.contains("workloadSigning:")).map(|l| format!("{l}\n")).collect();
    let text = format!("{SEED_POLICY}{fields}");
    let p = policy::parse(&text, "README.md").unwrap();
    let ws = p.workload_signing.unwrap();
    assert_eq!(ws.signer_name, "meshca.dev/istio");
    assert!(ws.covers("cluster1") && !ws.covers("cluster2"));
    assert_eq!(ws.rules.max_ttl, time::Duration::hours(24));
}

/// The issuance log covers RA clusters: their intermediates, kept on the management side, are
/// logged as they are written, and `verify` checks that Secret as well as the cluster's own
/// `cacerts`. An intermediate planted in either is unaccounted for.
#[test]
fn an_ra_cluster_s_intermediate_is_in_the_log_and_one_planted_beside_it_is_not() {
    use meshca_ops::audit;
    let (_dir, store, root) = fleet("audit");
    let text = SEED_POLICY.replace("ttlDays: 1", "ttlDays: 30")
        + "    workloadSigning:\n      signerName: meshca.dev/istio\n      clusters: [east]\n    auditLog: {}\n";
    let policy = policy::parse(&text, "policy.yaml").unwrap();
    let r =
        reconcile::reconcile(&store, &policy, &opts(&["east", "west"]), &mut meshca::OsRng, &mut |_, _| {}).unwrap();
    assert!(r.ok(), "{r:?}");
    let token = reconcile::TokenAccess::default();
    let key = audit::verifier(&store, &policy, "mgmt", &token).unwrap();
    let clusters = vec!["east".to_owned(), "west".to_owned()];
    let report = audit::verify(&store, &policy, "mgmt", &key, &clusters, None).unwrap();
    assert!(report.ok(), "{report:?}");
    // east's intermediate and root (management side), west's intermediate and root: the root
    // is counted once per cluster.
    assert_eq!(report.checked, 4, "{report:?}");

    let planted = |secret: SecretRef| {
        let rogue =
            root.issue_intermediate(&meshca::IntermediateParams::new("rogue"), &mut meshca::OsRng, t0()).unwrap();
        store.write(&secret, &rogue.value.to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    };
    planted(ra::key_secret("mgmt", &policy, "east"));
    let report = audit::verify(&store, &policy, "mgmt", &key, &clusters, None).unwrap();
    let found: Vec<(&str, &str)> = report.unaccounted.iter().map(|u| (u.cluster.as_str(), u.kind)).collect();
    assert_eq!(found, [("east", "intermediate")], "{report:?}");
    planted(SecretRef::cacerts("east"));
    let report = audit::verify(&store, &policy, "mgmt", &key, &clusters, None).unwrap();
    assert_eq!(report.unaccounted.len(), 2, "{report:?}");
}
