//! Revocation rules over the directory store, in milliseconds: what a CRL set lets through
//! between clusters (checked with rustls-webpki applying each verifier's `ca-crl.pem` to the
//! peer's chain, as Envoy does with `crl_check_all`), and how the list is validated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use meshca::Layout;
use meshca::{Cacerts, Crl, LeafParams, RevocationReason, RootParams, SigningCa, SpiffeId};
use meshca_ops::error::Error;
use meshca_ops::policy::{self, Policy, SEED_POLICY};
use meshca_ops::reconcile::{self, Action, Intent, Options, RotateNow};
use meshca_ops::revocation;
use meshca_ops::store::{DirStore, SecretRef, Store, WriteMeta};
use time::{Duration, OffsetDateTime};

const CLUSTERS: [&str; 3] = ["c1", "c2", "c3"];
const SIGNER: &str = "my-root-trust-policy.gloo-mesh";

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_893_456_000).unwrap()
}

struct Fleet {
    dir: PathBuf,
    store: DirStore,
    policy: Policy,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn opts(at: OffsetDateTime, clusters: &[&str]) -> Options {
    let mut o = Options::new(at, clusters.iter().map(|c| (*c).to_owned()).collect());
    o.mgmt_cluster = "mgmt".into();
    o
}

/// Three clusters under one root, all issued.
fn fleet(tag: &str) -> Fleet {
    let dir = std::env::temp_dir().join(format!("meshca-ops-rev-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = DirStore::new(dir.join("store"));
    let root = SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, t0()).unwrap();
    let signer = SecretRef::new("mgmt", "gloo-mesh", SIGNER);
    store.write(&signer, &root.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    let policy = policy::parse(&SEED_POLICY.replace("ttlDays: 1", "ttlDays: 30"), "policy.yaml").unwrap();
    let r = reconcile::reconcile(&store, &policy, &opts(t0(), &CLUSTERS), &mut meshca::OsRng, &mut |_, _| {}).unwrap();
    assert!(r.ok(), "{r:?}");
    Fleet { dir, store, policy }
}

fn bundle(f: &Fleet, c: &str, at: OffsetDateTime) -> (Cacerts, Vec<Crl>) {
    let files = f.store.read(&SecretRef::cacerts(c)).unwrap().unwrap();
    let crls = files.get(meshca::CA_CRL).map(|p| Crl::from_pem_all(p, "ca-crl.pem").unwrap()).unwrap_or_default();
    (Cacerts::from_files(&files, at).unwrap(), crls)
}

/// Every pair (a, b): a workload of a, verified by b's roots and b's CRL set applied to every
/// CA of the chain. Returns the pairs that fail.
fn refused_pairs(f: &Fleet, at: OffsetDateTime) -> Vec<(String, String)> {
    let id = SpiffeId::workload("cluster.local", "default", "probe").unwrap();
    let mut refused = Vec::new();
    for a in CLUSTERS {
        let (ba, _) = bundle(f, a, at);
        let leaf = SigningCa::new(ba).issue_leaf(&LeafParams::new(id.clone()), &mut meshca::OsRng, at).unwrap().value;
        for b in CLUSTERS {
            let (bb, crls) = bundle(f, b, at);
            if meshca::verify_workload_chain_with_crls(&leaf.chain(), bb.roots(), &crls, at).is_err() {
                refused.push((a.to_owned(), b.to_owned()));
            }
        }
    }
    refused
}

fn fp(b: &Cacerts) -> String {
    b.ca_cert().fingerprint_sha256()
}

fn revoke(f: &Fleet, c: &str, at: OffsetDateTime) -> revocation::RevocationReport {
    revocation::revoke(
        &f.store,
        &f.policy,
        &opts(at, &CLUSTERS),
        c,
        RevocationReason::KeyCompromise,
        &mut meshca::OsRng,
        &mut |_, _| {},
    )
    .unwrap()
}

#[test]
fn no_intermediate_is_written_before_every_peer_holds_its_crl() {
    let f = fleet("gate");
    let at = t0() + Duration::hours(1);
    assert!(revoke(&f, "c2", at).run.ok());
    assert!(refused_pairs(&f, at).is_empty(), "after the revocation every pair trusts each other");
    let before: Vec<Cacerts> = CLUSTERS.iter().map(|c| bundle(&f, c, at).0).collect();

    // `rotate --cluster c1` (a run naming a subset): c1's peers are not in the run, so they
    // cannot get the new intermediate's CRL first: c1 keeps what it has, naming them.
    let at = at + Duration::hours(1);
    let mut o = opts(at, &["c1"]);
    o.intent = Intent::RotateNow(RotateNow::All);
    let r = reconcile::reconcile(&f.store, &f.policy, &o, &mut meshca::OsRng, &mut |_, _| {}).unwrap();
    let c1 = &r.clusters[0];
    assert_eq!(c1.action, Action::Failed, "{c1:?}");
    assert!(c1.reason.contains("has not reached c2, c3 yet"), "{}", c1.reason);
    assert_eq!(fp(&bundle(&f, "c1", at).0), fp(&before[0]), "c1 keeps its intermediate");
    assert!(refused_pairs(&f, at).is_empty());

    // A peer that cannot be written (its API down) holds back every new intermediate.
    let down = meshca_testkit::fleet::FailWrites { inner: &f.store, cluster: "c3" };
    let mut o = opts(at, &CLUSTERS);
    o.intent = Intent::RotateNow(RotateNow::All);
    let r = reconcile::reconcile(&down, &f.policy, &o, &mut meshca::OsRng, &mut |_, _| {}).unwrap();
    assert!(r.clusters.iter().all(|c| c.action == Action::Failed), "{r:?}");
    assert!(r.clusters[0].reason.contains("has not reached c3 yet"), "{}", r.clusters[0].reason);
    for (c, old) in CLUSTERS.iter().zip(&before) {
        assert_eq!(fp(&bundle(&f, c, at).0), fp(old), "{c} keeps its intermediate");
    }
    assert!(refused_pairs(&f, at).is_empty());

    // Every cluster re-issued in one run: each first gets the new set with the intermediate it
    // has, then its new intermediate; every pair trusts each other at the end.
    let mut o = opts(at, &CLUSTERS);
    o.intent = Intent::RotateNow(RotateNow::All);
    let r = reconcile::reconcile(&f.store, &f.policy, &o, &mut meshca::OsRng, &mut |_, _| {}).unwrap();
    assert!(r.ok() && r.clusters.iter().all(|c| c.action == Action::Rotated), "{r:?}");
    for (c, old) in CLUSTERS.iter().zip(&before) {
        assert_ne!(fp(&bundle(&f, c, at).0), fp(old), "{c} was re-issued");
    }
    assert!(refused_pairs(&f, at).is_empty(), "{:?}", refused_pairs(&f, at));
}

/// Rewrites the stored revocation list through `edit`, as a careless or hostile hand would.
fn tamper(f: &Fleet, edit: impl FnOnce(&mut serde_json::Value)) {
    let secret = revocation::list_secret(&f.policy, "mgmt");
    let mut files = f.store.read(&secret).unwrap().unwrap();
    let mut list: serde_json::Value = serde_json::from_slice(files.get(revocation::REVOCATIONS_FILE).unwrap()).unwrap();
    edit(&mut list);
    files.insert(revocation::REVOCATIONS_FILE, serde_json::to_vec(&list).unwrap());
    f.store.write(&secret, &files, &WriteMeta::managed()).unwrap();
}

#[test]
fn the_revocation_list_is_validated_against_the_signer_on_every_load() {
    let f = fleet("listcheck");
    let at = t0() + Duration::hours(1);
    assert!(revoke(&f, "c2", at).run.ok());
    let root = bundle(&f, "c1", at).0.roots()[0].clone();
    let root_serial = revocation::hex(meshca::canonical_serial(root.serial_bytes()));
    let snapshot = || CLUSTERS.iter().map(|c| f.store.read(&SecretRef::cacerts(c)).unwrap()).collect::<Vec<_>>();
    let run = |hours: i64| {
        reconcile::reconcile(
            &f.store,
            &f.policy,
            &opts(at + Duration::hours(hours), &CLUSTERS),
            &mut meshca::OsRng,
            &mut |_, _| {},
        )
    };
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "the root itself",
            Box::new(move |l| {
                l["revoked"][0]["serial"] = root_serial.clone().into();
            }),
            "names the root itself",
        ),
        (
            "another root's CA",
            Box::new(|l| l["revoked"][0]["issuer"] = "CN=Someone Else".into()),
            "issued by another CA",
        ),
        (
            "an invalid cluster",
            Box::new(|l| l["revoked"][0]["cluster"] = "Bad_Name\u{1b}[2J".into()),
            "not a cluster name",
        ),
        ("crlNumber at its maximum", Box::new(|l| l["crlNumber"] = u64::MAX.into()), "the largest meshca keeps"),
    ];
    for (what, edit, needle) in cases {
        let good = f.store.read(&revocation::list_secret(&f.policy, "mgmt")).unwrap().unwrap();
        tamper(&f, edit);
        let before = snapshot();
        // 100 hours on: the root CRL is due for its refresh, so the list is used.
        let e = run(100).unwrap_err().to_string();
        assert!(e.contains(needle), "{what}: {e}");
        assert!(!e.contains('\u{1b}'), "{what}: no escape sequence printed: {e}");
        assert_eq!(snapshot(), before, "{what}: no bundle changed");
        f.store.write(&revocation::list_secret(&f.policy, "mgmt"), &good, &WriteMeta::managed()).unwrap();
    }
    assert!(run(100).unwrap().ok(), "the restored list works again");
}

#[test]
fn a_second_revoke_of_a_cluster_does_not_revoke_its_fresh_replacement_unless_named() {
    let f = fleet("twice");
    let at = t0() + Duration::hours(1);
    assert!(revoke(&f, "c2", at).run.ok());
    let fresh = bundle(&f, "c2", at).0;
    let o = opts(at + Duration::minutes(5), &CLUSTERS);
    let e = revocation::revoke(
        &f.store,
        &f.policy,
        &o,
        "c2",
        RevocationReason::KeyCompromise,
        &mut meshca::OsRng,
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("is the replacement that revocation issued"), "{e}");
    assert_eq!(fp(&bundle(&f, "c2", at).0), fp(&fresh), "the replacement is untouched");
    // Named by its serial, it is revoked on purpose.
    let serial = revocation::hex(fresh.ca_cert().serial_bytes());
    let r = revocation::revoke_ca(
        &f.store,
        &f.policy,
        &o,
        "c2",
        &revocation::Target::Serial(serial.clone()),
        RevocationReason::KeyCompromise,
        &mut meshca::OsRng,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(r.run.ok());
    assert_ne!(fp(&bundle(&f, "c2", at).0), fp(&fresh));
    assert!(refused_pairs(&f, at + Duration::minutes(5)).is_empty());
}

#[test]
fn a_cluster_whose_ca_cert_is_damaged_is_revoked_by_serial() {
    let f = fleet("damaged");
    let at = t0() + Duration::hours(1);
    let old = bundle(&f, "c3", at).0;
    let serial = revocation::hex(old.ca_cert().serial_bytes());
    let secret = SecretRef::cacerts("c3");
    let mut files = f.store.read(&secret).unwrap().unwrap();
    files.insert(meshca::CA_CERT, b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n".to_vec());
    f.store.write(&secret, &files, &WriteMeta::managed()).unwrap();
    let o = opts(at, &CLUSTERS);
    assert!(revocation::revoke(
        &f.store,
        &f.policy,
        &o,
        "c3",
        RevocationReason::KeyCompromise,
        &mut meshca::OsRng,
        &mut |_, _| {}
    )
    .is_err());
    let r = revocation::revoke_ca(
        &f.store,
        &f.policy,
        &o,
        "c3",
        &revocation::Target::Serial(serial.clone()),
        RevocationReason::KeyCompromise,
        &mut meshca::OsRng,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(r.run.ok(), "{r:?}");
    // What the old c3 CA signed is refused by every cluster now.
    let id = SpiffeId::workload("cluster.local", "default", "stolen").unwrap();
    let stolen = SigningCa::new(old).issue_leaf(&LeafParams::new(id), &mut meshca::OsRng, at).unwrap().value;
    for c in CLUSTERS {
        let (b, crls) = bundle(&f, c, at);
        assert!(meshca::verify_workload_chain_with_crls(&stolen.chain(), b.roots(), &crls, at).is_err(), "{c}");
    }
    assert!(refused_pairs(&f, at).is_empty());
}

#[test]
fn a_damaged_or_lost_list_is_rebuilt_from_the_crls_published_and_nothing_is_taken_back() {
    let f = fleet("rebuild");
    let at = t0() + Duration::hours(1);
    let old_c2 = bundle(&f, "c2", at).0;
    let report = revoke(&f, "c2", at);
    assert!(report.run.ok());
    let revoked = report.entries[0].clone();
    let secret = revocation::list_secret(&f.policy, "mgmt");
    let id = SpiffeId::workload("cluster.local", "default", "stolen").unwrap();
    let stolen = SigningCa::new(old_c2).issue_leaf(&LeafParams::new(id), &mut meshca::OsRng, at).unwrap().value;
    let refused_everywhere = |at: OffsetDateTime| {
        CLUSTERS.iter().all(|c| {
            let (b, crls) = bundle(&f, c, at);
            meshca::verify_workload_chain_with_crls(&stolen.chain(), b.roots(), &crls, at).is_err()
        })
    };
    let rebuild = |dry_run: bool| {
        let mut o = opts(at + Duration::hours(2), &CLUSTERS);
        o.dry_run = dry_run;
        revocation::rebuild(&f.store, &f.policy, &o, &mut meshca::OsRng, &mut |_, _| {})
    };
    for damage in ["garbage", "lost"] {
        // The list damaged (every run stops), or its Secret gone altogether.
        match damage {
            "garbage" => {
                let mut files = f.store.read(&secret).unwrap().unwrap();
                files.insert(revocation::REVOCATIONS_FILE, b"{not json".to_vec());
                f.store.write(&secret, &files, &WriteMeta::managed()).unwrap();
                let o = opts(at + Duration::hours(2), &CLUSTERS);
                assert!(reconcile::reconcile(&f.store, &f.policy, &o, &mut meshca::OsRng, &mut |_, _| {}).is_err());
            }
            _ => std::fs::remove_dir_all(f.store.dir(&secret)).unwrap(),
        }
        let dry = rebuild(true).unwrap();
        assert_eq!(dry.entries.len(), 1, "{dry:?}");
        let r = rebuild(false).unwrap();
        assert!(r.run.ok(), "{damage}: {r:?}");
        assert_eq!(r.unattributed, 0);
        let e = &r.entries[0];
        assert_eq!(
            (e.cluster.as_str(), e.serial.as_str()),
            ("c2", revoked.serial.trim_start_matches("00")),
            "{damage}"
        );
        let list = revocation::load(&f.store, &f.policy, "mgmt").unwrap().unwrap().list;
        assert_eq!(list.revoked.len(), 1);
        assert!(list.crl_number >= 1);
        assert!(refused_everywhere(at + Duration::hours(2)), "{damage}: the revoked CA stays refused");
        assert!(refused_pairs(&f, at + Duration::hours(2)).is_empty());
    }
    // Nothing signed by the root anywhere: refused, saying so.
    std::fs::remove_dir_all(f.store.dir(&secret)).unwrap();
    for c in CLUSTERS {
        let s = SecretRef::cacerts(c);
        let files: meshca::Files = f
            .store
            .read(&s)
            .unwrap()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != meshca::CA_CRL)
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect();
        f.store.write(&s, &files, &WriteMeta::managed()).unwrap();
    }
    let e = rebuild(false).unwrap_err().to_string();
    assert!(e.contains("no CRL signed by this policy's root"), "{e}");
}

/// The controller's revoke annotation may name several clusters: one pass records them all and
/// re-issues each once, and a CA revoked already is not an error (an earlier pass recorded it).
#[test]
fn several_clusters_are_revoked_in_one_pass() {
    let f = fleet("many");
    let at = t0() + Duration::hours(1);
    let old: Vec<Cacerts> = CLUSTERS.iter().map(|c| bundle(&f, c, at).0).collect();
    let named = ["c1".to_owned(), "c3".to_owned()];
    let r = revocation::revoke_clusters(
        &f.store,
        &f.policy,
        &opts(at, &CLUSTERS),
        &named,
        RevocationReason::KeyCompromise,
        &mut meshca::OsRng,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(r.run.ok(), "{r:?}");
    let entries: Vec<&str> = r.entries.iter().map(|e| e.cluster.as_str()).collect();
    assert_eq!(entries, ["c1", "c3"]);
    // One run: one root CRL, numbered once.
    assert_eq!(r.run.reconciled().unwrap().crl.as_ref().map(|c| c.crl_number), Some(1), "{r:?}");
    let now: Vec<Cacerts> = CLUSTERS.iter().map(|c| bundle(&f, c, at).0).collect();
    assert_ne!(fp(&now[0]), fp(&old[0]), "c1 re-issued");
    assert_eq!(fp(&now[1]), fp(&old[1]), "c2 kept");
    assert_ne!(fp(&now[2]), fp(&old[2]), "c3 re-issued");
    assert!(refused_pairs(&f, at).is_empty(), "every pair trusts each other after the pass");

    // A cluster named but not in the run is refused before anything is written.
    let before = f.store.read(&revocation::list_secret(&f.policy, "mgmt")).unwrap();
    let e = revocation::revoke_clusters(
        &f.store,
        &f.policy,
        &opts(at, &CLUSTERS),
        &["c2".to_owned(), "c9".to_owned()],
        RevocationReason::KeyCompromise,
        &mut meshca::OsRng,
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("c9"), "{e}");
    assert_eq!(f.store.read(&revocation::list_secret(&f.policy, "mgmt")).unwrap(), before, "the list is as it was");
}

/// A store that counts the reads of each cluster's cacerts.
struct CountingReads<'a> {
    inner: &'a DirStore,
    reads: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
}

impl Store for CountingReads<'_> {
    fn location(&self, secret: &SecretRef) -> String {
        self.inner.location(secret)
    }
    fn read(&self, secret: &SecretRef) -> Result<Option<meshca::Files>, Error> {
        if *secret == SecretRef::cacerts(&secret.cluster) {
            *self.reads.lock().unwrap().entry(secret.cluster.clone()).or_default() += 1;
        }
        self.inner.read(secret)
    }
    fn write(&self, secret: &SecretRef, files: &meshca::Files, meta: &WriteMeta) -> Result<(), Error> {
        self.inner.write(secret, files, meta)
    }
    fn meta(&self, secret: &SecretRef) -> Result<Option<WriteMeta>, Error> {
        self.inner.meta(secret)
    }
    fn clusters_with_cacerts(&self) -> Result<Vec<String>, Error> {
        self.inner.clusters_with_cacerts()
    }
}

/// With CRLs in use, a run reads each cluster once before it acts on it (preparing the CRL set
/// and acting share the read); the writer's read-back of what it wrote is the only other read.
#[test]
fn a_revocation_pass_reads_each_cluster_once_before_acting() {
    let f = fleet("reads");
    let at = t0() + Duration::hours(1);
    revoke(&f, "c2", at);
    let counting = CountingReads { inner: &f.store, reads: Default::default() };
    let r =
        reconcile::reconcile(&counting, &f.policy, &opts(at, &CLUSTERS), &mut meshca::OsRng, &mut |_, _| {}).unwrap();
    assert!(r.ok() && r.clusters.iter().all(|c| c.action == Action::Kept), "{r:?}");
    let reads = counting.reads.lock().unwrap().clone();
    assert_eq!(reads.values().copied().collect::<Vec<_>>(), [1, 1, 1], "{reads:?}");
}

/// The signing CA is an intermediate of the user's own PKI (its root's key is not meshca's):
/// revocation needs the root's CRL, which the operator supplies in the Secret the policy names
/// (`mgmtServerCa.upstreamCrlSecretRef`). It is published with the set, warned about well
/// before it expires, and never published expired.
#[test]
fn under_an_upstream_root_the_operator_supplies_its_crl_and_meshca_never_publishes_it_expired() {
    let dir = std::env::temp_dir().join(format!("meshca-ops-rev-upstream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = DirStore::new(dir.join("store"));
    let mut p = RootParams::default();
    p.common_name = "Corp Root".into();
    let corp = SigningCa::generate_root(&p, &mut meshca::OsRng, t0()).unwrap();
    let mut params = meshca::IntermediateParams::new("mesh");
    params.pathlen = 1;
    params.ttl = Duration::days(3 * 365);
    let issuing = corp.issue_intermediate(&params, &mut meshca::OsRng, t0()).unwrap().value;
    let mgmt = |name: &str| SecretRef::new("mgmt", "gloo-mesh", name);
    store.write(&mgmt(SIGNER), &issuing.to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    let text = SEED_POLICY.replace("ttlDays: 1", "ttlDays: 30");
    let plain = policy::parse(&text, "policy.yaml").unwrap();
    // The seed policy ends inside mgmtServerCa: the field goes beside secretRef.
    let with_ref =
        policy::parse(&format!("{text}      upstreamCrlSecretRef: {{name: corp-crls}}\n"), "policy.yaml").unwrap();
    let f = Fleet { dir, store, policy: with_ref.clone() };
    let r = reconcile::reconcile(&f.store, &plain, &opts(t0(), &CLUSTERS), &mut meshca::OsRng, &mut |_, _| {}).unwrap();
    assert!(r.ok(), "{r:?}");
    let snapshot = |at| {
        CLUSTERS.map(|c| {
            f.store
                .read(&SecretRef::cacerts(c))
                .unwrap()
                .map(|f| (fp(&Cacerts::from_files(&f, at).unwrap()), f.get(meshca::CA_CRL).map(<[u8]>::to_vec)))
        })
    };
    let before = snapshot(t0());
    let revoke_with = |policy: &Policy, at| {
        revocation::revoke(
            &f.store,
            policy,
            &opts(at, &CLUSTERS),
            "c2",
            RevocationReason::KeyCompromise,
            &mut meshca::OsRng,
            &mut |_, _| {},
        )
    };
    // No upstream CRL at all: refused, naming the CA and the fix; nothing written.
    let e = revoke_with(&plain, t0()).unwrap_err().to_string();
    assert!(e.contains("CN=Corp Root") && e.contains("upstreamCrlSecretRef") && e.contains("none was supplied"), "{e}");
    assert_eq!(snapshot(t0()), before);
    // The policy names a Secret that does not exist yet: refused naming the field.
    let e = revoke_with(&with_ref, t0()).unwrap_err().to_string();
    assert!(e.contains("spec.config.mgmtServerCa.upstreamCrlSecretRef") && e.contains("not found"), "{e}");
    // A CRL of the right name but another key (a forgery): not taken.
    let forger = SigningCa::generate_root(&p, &mut meshca::OsRng, t0()).unwrap();
    let forged = forger.sign_crl(&[], t0() - meshca::BACKDATE, t0() + Duration::days(7), 1).unwrap();
    let supply = |crl: &Crl| {
        f.store
            .write(&mgmt("corp-crls"), &[(meshca::CA_CRL, crl.to_pem())].into_iter().collect(), &WriteMeta::default())
            .unwrap();
    };
    supply(&forged);
    let e = revoke_with(&with_ref, t0()).unwrap_err().to_string();
    assert!(e.contains("CN=Corp Root") && e.contains("signature"), "{e}");
    assert_eq!(snapshot(t0()), before);
    // The real one, valid a week: the revocation goes through, and every pair passes the
    // rehearsal check with the whole chain's CRLs.
    let week = corp.sign_crl(&[], t0() - meshca::BACKDATE, t0() + Duration::days(7), 1).unwrap();
    supply(&week);
    let c2_before = bundle(&f, "c2", t0()).0;
    let r = revoke_with(&with_ref, t0()).unwrap();
    assert!(r.run.ok(), "{r:?}");
    let summary = r.run.reconciled().unwrap().crl.clone().unwrap();
    assert_eq!(summary.upstream.len(), 1);
    assert!(!summary.upstream[0].expiring);
    meshca_testkit::fleet::rehearse(&f.store, &f.dir, &CLUSTERS, &[("c2".into(), c2_before)], t0(), "revoked");
    // Five days on, two are left: a warning in the notes and the summary.
    let at = t0() + Duration::days(5);
    let r =
        reconcile::reconcile(&f.store, &with_ref, &opts(at, &CLUSTERS), &mut meshca::OsRng, &mut |_, _| {}).unwrap();
    assert!(r.ok(), "{r:?}");
    assert!(r.notes.iter().any(|n| n.contains("CN=Corp Root") && n.contains("supply a newer one")), "{:?}", r.notes);
    assert!(r.crl.as_ref().unwrap().upstream[0].expiring);
    // Eight days on it has expired: the run refuses, every cluster keeps what it had.
    let at = t0() + Duration::days(8);
    let held = snapshot(t0() + Duration::days(5));
    let e = reconcile::reconcile(&f.store, &with_ref, &opts(at, &CLUSTERS), &mut meshca::OsRng, &mut |_, _| {})
        .unwrap_err();
    assert!(e.to_string().contains("expired") && e.to_string().contains("CN=Corp Root"), "{e}");
    assert_eq!(e.kind(), meshca_ops::error::ErrorKind::Revocation);
    assert_eq!(snapshot(t0() + Duration::days(5)), held);
    // A current one supplied: published again.
    supply(&corp.sign_crl(&[], at - meshca::BACKDATE, at + Duration::days(7), 2).unwrap());
    let r =
        reconcile::reconcile(&f.store, &with_ref, &opts(at, &CLUSTERS), &mut meshca::OsRng, &mut |_, _| {}).unwrap();
    assert!(r.ok(), "{r:?}");
    meshca_testkit::fleet::rehearse(&f.store, &f.dir, &CLUSTERS, &[], at, "a current CRL supplied again");
    // The signing CA itself is the upstream's to revoke: refused, saying so.
    let serial = hex_of(issuing.ca_cert());
    let e = revocation::revoke_ca(
        &f.store,
        &with_ref,
        &opts(at, &CLUSTERS),
        "c1",
        &revocation::Target::Serial(serial),
        RevocationReason::KeyCompromise,
        &mut meshca::OsRng,
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("is the signing CA") && e.contains("PKI's above it"), "{e}");
}

fn hex_of(c: &meshca::Certificate) -> String {
    meshca::canonical_serial(c.serial_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}
