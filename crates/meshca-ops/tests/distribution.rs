//! Trust beyond the mesh over the directory store: the trust set reaches every workload
//! cluster's ClusterTrustBundles and the ConfigMaps of the namespaces that match, follows the
//! selector both ways, never touches a ConfigMap meshca does not manage, numbers each change of
//! the set, and a root rotation's intermediates wait for all of it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use meshca::{Certificate, Layout, RootParams, SigningCa};
use meshca_ops::distribution::{self, CTB_CANARY, CTB_LIVE};
use meshca_ops::policy::{self, Policy, SEED_POLICY};
use meshca_ops::reconcile::{self, Options, Run};
use meshca_ops::rootrotation::{PhaseName, StepState};
use meshca_ops::store::{DirStore, SecretRef, Store, TrustObject, WriteMeta};
use time::{Duration, OffsetDateTime};

const CLUSTERS: [&str; 2] = ["c1", "c2"];
const SIGNER: &str = "my-root-trust-policy.gloo-mesh";

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_893_456_000).unwrap()
}

fn secret(name: &str) -> SecretRef {
    SecretRef::new("mgmt", "gloo-mesh", name)
}

fn store(tag: &str) -> DirStore {
    let dir = meshca_testkit::tempdir(&format!("dist-{tag}"));
    let s = DirStore::new(dir.join("store"));
    let root = SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, t0()).unwrap();
    s.write(&secret(SIGNER), &root.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    s
}

fn policy(extra: &str) -> Policy {
    let text = format!("{}{extra}", SEED_POLICY.replace("ttlDays: 1", "ttlDays: 30"));
    policy::parse(&text, "policy.yaml").unwrap()
}

const DIST: &str = "    trustDistribution:
      spiffeBundle: {refreshHintSeconds: 600}
      configMaps:
        namespaceSelector: {matchLabels: {trust: mesh}}
";

fn run(store: &dyn Store, policy: &Policy, now: OffsetDateTime) -> Run {
    let mut opts = Options::new(now, CLUSTERS.iter().map(|c| (*c).to_owned()).collect());
    opts.mgmt_cluster = "mgmt".into();
    reconcile::run(store, policy, &opts, &mut meshca::OsRng, &mut |_, _| {}).unwrap()
}

/// Gives `cluster` these namespaces and labels (the directory store's mirror of them).
fn namespaces(store: &DirStore, cluster: &str, ns: &[(&str, &[(&str, &str)])]) {
    let mut files = meshca::Files::new();
    for (name, labels) in ns {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        files.insert(*name, serde_json::to_vec(&labels).unwrap());
    }
    store.write(&SecretRef::new(cluster, "_cluster", "namespaces"), &files, &WriteMeta::default()).unwrap();
}

fn cm(ns: &str) -> TrustObject {
    TrustObject::ConfigMap { namespace: ns.into(), name: "meshca-trust-bundle".into() }
}

fn ctb(name: &str) -> TrustObject {
    TrustObject::ClusterTrustBundle { name: name.into() }
}

/// The roots `object` holds in `cluster`, `None` when it is absent.
fn held(store: &dyn Store, cluster: &str, object: &TrustObject) -> Option<Vec<Certificate>> {
    let h = store.read_trust(cluster, object, "root-certs.pem").unwrap()?;
    Some(meshca::parse_certificates(&h.pem, "held").unwrap())
}

fn signer_root(store: &dyn Store) -> Certificate {
    let files = store.read(&secret(SIGNER)).unwrap().unwrap();
    meshca::parse_certificates(files.get(meshca::ROOT_CERT).unwrap(), "root").unwrap().remove(0)
}

#[test]
fn the_trust_set_reaches_every_target_and_follows_the_selector() {
    let s = store("targets");
    for c in CLUSTERS {
        namespaces(&s, c, &[("app", &[("trust", "mesh")]), ("other", &[]), ("hand", &[("trust", "mesh")])]);
    }
    // A ConfigMap of the same name someone made by hand: never touched.
    let hand = meshca_ops::store::mirror_of("c1", &cm("hand"));
    let mut theirs = meshca::Files::new();
    theirs.insert("root-certs.pem", b"theirs".to_vec());
    s.write(&hand, &theirs, &WriteMeta::default()).unwrap();

    let p = policy(DIST);
    let Run::Reconciled(r) = run(&s, &p, t0()) else { panic!("no rotation was asked for") };
    let root = signer_root(&s);
    let d = r.distribution.as_ref().expect("published");
    assert_eq!((d.sequence, d.changed), (1, true));
    for c in CLUSTERS {
        assert_eq!(held(&s, c, &ctb(CTB_LIVE)), Some(vec![root.clone()]), "{c}");
        assert_eq!(held(&s, c, &ctb(CTB_CANARY)), None, "{c}: no rotation, no canary");
        assert_eq!(held(&s, c, &cm("app")), Some(vec![root.clone()]), "{c}");
        assert_eq!(held(&s, c, &cm("other")), None, "{c}: not selected");
    }
    assert_eq!(held(&s, "c2", &cm("hand")), Some(vec![root.clone()]));
    let failed: Vec<_> =
        d.targets.iter().filter(|t| matches!(t.outcome, distribution::TargetOutcome::Failed { .. })).collect();
    assert_eq!(failed.len(), 1, "{d:?}");
    assert_eq!((failed[0].cluster.as_str(), failed[0].object.as_str()), ("c1", "ConfigMap hand/meshca-trust-bundle"));
    assert!(format!("{:?}", failed[0].outcome).contains("not managed by meshca"), "{:?}", failed[0]);
    assert_eq!(s.read(&hand).unwrap().unwrap().get("root-certs.pem").unwrap(), b"theirs");

    // Nothing changed: nothing written, the same sequence.
    let Run::Reconciled(again) = run(&s, &p, t0() + Duration::hours(1)) else { panic!() };
    let d = again.distribution.unwrap();
    assert_eq!((d.sequence, d.changed), (1, false));
    assert!(d.targets.iter().all(|t| t.cluster == "c1" && t.object.contains("hand")), "{:?}", d.targets);

    // `app` stops matching and `other` starts: the first loses meshca's ConfigMap, the second gets it.
    namespaces(&s, "c2", &[("app", &[]), ("other", &[("trust", "mesh")])]);
    run(&s, &p, t0() + Duration::hours(2));
    assert_eq!(held(&s, "c2", &cm("app")), None);
    assert_eq!(held(&s, "c2", &cm("other")), Some(vec![root.clone()]));
    assert_eq!(held(&s, "c1", &cm("app")), Some(vec![root]), "c1's namespaces did not change");

    // A selector over every namespace is bounded: past the bound, that cluster's ConfigMaps are
    // refused as a whole and named, not written part way (the bound is MAX_NAMESPACES in a run).
    let many: Vec<String> = (0..12).map(|i| format!("ns-{i}")).collect();
    let refs: Vec<(&str, &[(&str, &str)])> = many.iter().map(|n| (n.as_str(), &[][..])).collect();
    namespaces(&s, "c2", &refs);
    let every = distribution::LabelSelector::everything();
    assert_eq!(s.namespaces("c2", &every, 12).unwrap().len(), 12);
    let err = s.namespaces("c2", &every, 11).unwrap_err().to_string();
    assert!(err.contains("matches 12 namespaces, more than the 11"), "{err}");
    assert!(err.contains("narrow trustDistribution.configMaps.namespaceSelector"), "{err}");
}

#[test]
fn the_sequence_is_kept_beside_the_policy_and_moves_with_the_set() {
    let s = store("sequence");
    let p = policy(DIST);
    run(&s, &p, t0());
    let first = distribution::load(&s, &p, "mgmt").unwrap().unwrap();
    assert_eq!(first.version.sequence, 1);
    // A passive root joins the trust set: a new version, published now.
    let other = SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, t0()).unwrap();
    s.write(&secret("passive"), &other.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    let with_passive = policy(&format!(
        "{DIST}    passiveCertificateAuthorities:\n    - secretRef: {{name: passive, namespace: gloo-mesh}}\n"
    ));
    let later = t0() + Duration::hours(5);
    let Run::Reconciled(r) = run(&s, &with_passive, later) else { panic!() };
    assert_eq!(r.distribution.unwrap().sequence, 2);
    let second = distribution::load(&s, &with_passive, "mgmt").unwrap().unwrap();
    assert_eq!((second.version.sequence, second.version.published_at), (2, later));
    assert!(second.set.contains(other.bundle().root()));
    let doc: serde_json::Value = serde_json::from_str(&second.spiffe_bundle(&with_passive)).unwrap();
    assert_eq!(doc["spiffe_sequence"], 2);
    assert_eq!(doc["spiffe_refresh_hint"], 600);
    assert_eq!(doc["keys"].as_array().unwrap().len(), 2);
    // A dry run publishes nothing.
    let mut opts = Options::new(later + Duration::hours(1), CLUSTERS.iter().map(|c| (*c).to_owned()).collect());
    opts.mgmt_cluster = "mgmt".into();
    let opts = opts.dry_run(true);
    reconcile::run(&s, &p, &opts, &mut meshca::OsRng, &mut |_, _| {}).unwrap();
    assert_eq!(distribution::load(&s, &p, "mgmt").unwrap().unwrap().version.sequence, 2);
}

#[test]
fn a_root_rotation_waits_for_every_target_to_carry_the_new_root() {
    let s = store("gate");
    for c in CLUSTERS {
        namespaces(&s, c, &[("app", &[("trust", "mesh")])]);
    }
    let p0 = policy(DIST);
    run(&s, &p0, t0());
    let old_root = signer_root(&s);
    let mut params = RootParams::default();
    params.common_name = "Root CA 2".into();
    let new = SigningCa::generate_root(&params, &mut meshca::OsRng, t0()).unwrap();
    s.write(&secret("new-ca"), &new.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    let new_root = new.bundle().root().clone();
    // The SPIFFE bundle's hint is an hour: the new root must be served for three before use,
    // longer than the dwell of one hour.
    let dist = DIST.replace("600", "3600");
    let p = policy(&format!(
        "{dist}    rootRotation:\n      newMgmtServerCa:\n        secretRef: {{name: new-ca}}\n      dwellHours: 1\n"
    ));
    // A ConfigMap meshca does not manage in c2's selected namespace holds the rotation too.
    let hand = meshca_ops::store::mirror_of("c2", &cm("app"));
    s.write(&hand, &meshca::Files::new(), &WriteMeta::default()).unwrap();
    let mut theirs = meshca::Files::new();
    theirs.insert("root-certs.pem", old_root.to_pem().into_bytes());
    s.write(&hand, &theirs, &WriteMeta::default()).unwrap();

    let start = t0() + Duration::hours(1);
    let Run::RootRotation(r) = run(&s, &p, start) else { panic!("the rotation starts") };
    assert_eq!(r.now_phase, PhaseName(meshca::Phase::AddingNewRoot));
    for c in CLUSTERS {
        assert_eq!(held(&s, c, &ctb(CTB_LIVE)), Some(vec![old_root.clone(), new_root.clone()]), "{c}");
        assert_eq!(held(&s, c, &ctb(CTB_CANARY)), Some(vec![new_root.clone()]), "{c}");
    }
    assert_eq!(held(&s, "c1", &cm("app")), Some(vec![old_root.clone(), new_root.clone()]));
    // Past the dwell, the step holds: the bundle has carried the new root for less than three
    // hints, and c2's ConfigMap is not meshca's.
    let Run::RootRotation(r) = run(&s, &p, start + Duration::minutes(90)) else { panic!() };
    let Some(StepState::Distributing { lagging }) = r.steps.last() else { panic!("{:?}", r.steps) };
    assert_eq!(lagging.len(), 2, "{lagging:?}");
    assert!(lagging[0].contains("c2: ConfigMap app/meshca-trust-bundle"), "{lagging:?}");
    assert!(lagging[1].contains("the SPIFFE bundle"), "{lagging:?}");
    assert_eq!(r.now_phase, PhaseName(meshca::Phase::AddingNewRoot));
    let intermediates_root = |c: &str| {
        let f = s.read(&SecretRef::cacerts(c)).unwrap().unwrap();
        meshca::Cacerts::from_files(&f, start + Duration::hours(4)).unwrap().root().clone()
    };
    assert!(CLUSTERS.iter().all(|c| intermediates_root(c) == old_root));
    // Three hints on, only the ConfigMap holds it.
    let Run::RootRotation(r) = run(&s, &p, start + Duration::hours(3)) else { panic!() };
    let Some(StepState::Distributing { lagging }) = r.steps.last() else { panic!("{:?}", r.steps) };
    assert_eq!(lagging, &["c2: ConfigMap app/meshca-trust-bundle"]);
    // Its owner hands it to meshca (the managed-by label): the next run fills it and moves on.
    s.write(&hand, &theirs, &WriteMeta::managed()).unwrap();
    let Run::RootRotation(r) = run(&s, &p, start + Duration::hours(3) + Duration::minutes(5)) else { panic!() };
    assert!(r.entered.contains(&PhaseName(meshca::Phase::PropagatingIntermediates)), "{:?}", r.steps);
    assert!(CLUSTERS.iter().all(|c| intermediates_root(c) == new_root));
    assert_eq!(held(&s, "c2", &cm("app")), Some(vec![old_root, new_root]));
}

#[test]
fn the_bundle_endpoint_identity_per_profile() {
    let s = store("identity");
    let opts = |now| {
        let mut o = Options::new(now, CLUSTERS.iter().map(|c| (*c).to_owned()).collect());
        o.mgmt_cluster = "mgmt".into();
        o
    };
    // https_spiffe: an SVID from the signer, kept until half-way, then renewed.
    let p = policy("    trustDistribution:\n      trustDomain: prod.example\n      spiffeBundle: {}\n");
    let first = distribution::serving_identity(&s, &p, &opts(t0()), None, &mut meshca::OsRng).unwrap().unwrap();
    assert_eq!(first.spiffe_id.as_deref(), Some("spiffe://prod.example/meshca/bundle-endpoint"));
    let leaf = Certificate::from_der(&first.chain[0], "svid", 1).unwrap();
    meshca_testkit::verify::webpki(&[leaf], &[signer_root(&s)], t0() + Duration::minutes(1)).unwrap();
    let kept =
        distribution::serving_identity(&s, &p, &opts(t0() + Duration::hours(11)), Some(&first), &mut meshca::OsRng)
            .unwrap()
            .unwrap();
    assert_eq!(kept.chain, first.chain);
    let renewed =
        distribution::serving_identity(&s, &p, &opts(t0() + Duration::hours(13)), Some(&first), &mut meshca::OsRng)
            .unwrap()
            .unwrap();
    assert_ne!(renewed.chain, first.chain);

    // https_web: the Secret's tls.crt and tls.key, checked against each other.
    let web = policy(
        "    trustDistribution:\n      spiffeBundle: {profile: https_web, servingCertSecretRef: {name: web-tls}}\n",
    );
    let err = distribution::serving_identity(&s, &web, &opts(t0()), None, &mut meshca::OsRng).unwrap_err().to_string();
    assert!(err.contains("servingCertSecretRef") && err.contains("not found"), "{err}");
    let ca = SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, t0()).unwrap();
    let a = ca.issue_service_svid("web.example", "a", Duration::hours(24), &mut meshca::OsRng, t0()).unwrap().value;
    let b = ca.issue_service_svid("web.example", "b", Duration::hours(24), &mut meshca::OsRng, t0()).unwrap().value;
    let tls = |crt: &meshca::Leaf, key: &meshca::Leaf| {
        let mut f = meshca::Files::new();
        f.insert("tls.crt", crt.cert().to_pem().into_bytes());
        f.insert("tls.key", key.key_pem().as_bytes().to_vec());
        f
    };
    s.write(&secret("web-tls"), &tls(&a, &b), &WriteMeta::default()).unwrap();
    let err = distribution::serving_identity(&s, &web, &opts(t0()), None, &mut meshca::OsRng).unwrap_err().to_string();
    assert!(err.contains("tls.key is not the key of the first certificate"), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "no key material in messages: {err}");
    s.write(&secret("web-tls"), &tls(&a, &a), &WriteMeta::default()).unwrap();
    let id = distribution::serving_identity(&s, &web, &opts(t0()), None, &mut meshca::OsRng).unwrap().unwrap();
    assert_eq!(id.chain, [a.cert().der().to_vec()]);
    assert!(id.renew_at.is_none() && id.spiffe_id.is_none());
    let shown = format!("{id:?}");
    assert!(!shown.contains("key"), "Debug shows no key: {shown}");
}

#[test]
fn the_readme_s_trust_distribution_block_is_a_policy_meshca_accepts() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("## Trust beyond the mesh").nth(1).expect("the README has the section");
    let block = section.split("```yaml\n").nth(1).unwrap().split("```").next().unwrap();
    let fields: String =
        block.lines().skip_while(|l| !l.contains("trustDistribution:")).map(|l| format!("{l}\n")).collect();
    let p = policy(&fields);
    let td = p.trust_distribution.unwrap();
    assert_eq!(td.trust_domain, "cluster.local");
    assert_eq!(td.refresh_hint(), Duration::minutes(5));
    assert!(td.cluster_trust_bundles);
    let cm = td.config_maps.unwrap();
    let labels = |v: &str| [("meshca.dev/trust".to_owned(), v.to_owned())].into_iter().collect();
    assert!(cm.selector.matches(&labels("true")) && !cm.selector.matches(&labels("false")));
}
