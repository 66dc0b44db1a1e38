//! Root rotation driven by the policy, over the directory store: the automatic sequence
//! (`spec.config.rootRotation`), Gloo Mesh's manual one (`passiveCertificateAuthorities`), a
//! withdrawal that rolls back, and a crash between every pair of writes. At every point a
//! workload of each cluster completes a real mutual-TLS handshake (rustls) with a workload of
//! every other, each side trusting only its own `root-cert.pem`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;

use meshca::{Cacerts, Certificate, Files, Layout, RootParams, SigningCa};
use meshca_ops::error::Error;
use meshca_ops::policy::{self, Policy, SEED_POLICY};
use meshca_ops::reconcile::{self, Action, Options, Run};
use meshca_ops::rootrotation::PhaseName;
use meshca_ops::store::{DirStore, SecretRef, Store, WriteMeta};
use time::{Duration, OffsetDateTime};

const CLUSTERS: [&str; 3] = ["c1", "c2", "c3"];
const SIGNER: &str = "my-root-trust-policy.gloo-mesh";

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_893_456_000).unwrap()
}

struct Mesh {
    dir: PathBuf,
    store: DirStore,
    old: SigningCa,
    new: SigningCa,
}

fn secret(name: &str) -> SecretRef {
    SecretRef::new("mgmt", "gloo-mesh", name)
}

/// A store with the old root as the policy's signer, the new one in `new-ca`, and every cluster
/// reconciled under the old root.
fn mesh(tag: &str) -> Mesh {
    let dir = std::env::temp_dir().join(format!("meshca-ops-rot-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = DirStore::new(dir.join("store"));
    let old = SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, t0()).unwrap();
    let mut p = RootParams::default();
    p.common_name = "Root CA 2".into();
    let new = SigningCa::generate_root(&p, &mut meshca::OsRng, t0()).unwrap();
    store.write(&secret(SIGNER), &old.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    store.write(&secret("new-ca"), &new.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    let m = Mesh { dir, store, old, new };
    match run(&m.store, &seed(""), 0).unwrap() {
        Run::Reconciled(r) => assert!(r.ok() && r.clusters.iter().all(|c| c.action == Action::Issued)),
        Run::RootRotation(r) => panic!("no rotation was asked for: {r:?}"),
    }
    m
}

/// The seed policy (30-day intermediates) with `extra` appended under `spec.config`.
fn seed(extra: &str) -> Policy {
    let text = format!("{}{extra}", SEED_POLICY.replace("ttlDays: 1", "ttlDays: 30"));
    policy::parse(&text, "policy.yaml").unwrap()
}

const AUTO: &str =
    "    rootRotation:\n      newMgmtServerCa:\n        secretRef: {name: new-ca}\n      dwellHours: 1\n";

fn at(hours: i64) -> OffsetDateTime {
    t0() + Duration::hours(hours) + Duration::seconds(hours)
}

fn run(store: &dyn Store, policy: &Policy, hours: i64) -> Result<Run, Error> {
    let mut opts = Options::new(at(hours), CLUSTERS.iter().map(|c| (*c).to_owned()).collect());
    opts.mgmt_cluster = "mgmt".into();
    reconcile::run(store, policy, &opts, &mut meshca::OsRng, &mut |_, _| {})
}

fn bundles(store: &DirStore, now: OffsetDateTime) -> Vec<Cacerts> {
    CLUSTERS
        .iter()
        .map(|c| {
            let files = store.read(&SecretRef::cacerts(c)).unwrap().expect("a bundle");
            Cacerts::from_files(&files, now).unwrap_or_else(|e| panic!("{c}: {e}"))
        })
        .collect()
}

/// Real handshakes between workloads of every pair of clusters, at `now`.
fn assert_all_pairs_talk(store: &DirStore, now: OffsetDateTime, when: &str) {
    let bundles = bundles(store, now);
    let named: Vec<(&str, &Cacerts)> = CLUSTERS.iter().copied().zip(&bundles).collect();
    let probes = meshca_ops::mtls::handshake_all_pairs(&named, &mut meshca::OsRng, now)
        .unwrap_or_else(|e| panic!("{when}: {e}"));
    assert_eq!(probes.len(), CLUSTERS.len());
}

/// Every cluster's files as they are (to show that nothing was written).
fn snapshot(store: &DirStore, now: OffsetDateTime) -> Vec<Files> {
    bundles(store, now).iter().map(|b| b.to_files(Layout::Istio)).collect()
}

fn roots_of(store: &DirStore, now: OffsetDateTime) -> Vec<Vec<Certificate>> {
    bundles(store, now).iter().map(|b| b.roots().to_vec()).collect()
}

/// Runs the policy hour by hour until the usual loop takes over; returns the phases seen and
/// the last run. Checks the handshakes after every run.
fn drive(m: &Mesh, policy: &Policy, from: i64) -> (Vec<PhaseName>, reconcile::Report, i64) {
    let mut phases = Vec::new();
    for h in from..from + 20 {
        match run(&m.store, policy, h).unwrap() {
            Run::RootRotation(r) => {
                assert!(!r.failed(), "{r:?}");
                if phases.last() != Some(&r.now_phase) {
                    phases.push(r.now_phase);
                }
            }
            Run::Reconciled(report) => return (phases, report, h),
        }
        assert_all_pairs_talk(&m.store, at(h), &format!("hour {h}, {phases:?}"));
    }
    panic!("the rotation did not finish: {phases:?}");
}

#[test]
fn naming_the_new_ca_in_the_policy_rotates_by_itself() {
    let m = mesh("auto");
    let policy = seed(AUTO);
    let (old_root, new_root) = (m.old.bundle().root().clone(), m.new.bundle().root().clone());
    let (phases, report, h) = drive(&m, &policy, 1);
    assert_eq!(phases, ["AddingNewRoot", "PropagatingIntermediates", "DeletingOldRoot", "Complete"]);
    assert!(report.ok(), "{report:?}");
    for (b, roots) in bundles(&m.store, at(h)).iter().zip(roots_of(&m.store, at(h))) {
        assert_eq!(roots, std::slice::from_ref(&new_root));
        assert_eq!(b.root(), &new_root);
    }
    // meshca now signs with the CA the policy named, and says how to make that permanent;
    // the user's own Secret still holds the old CA.
    assert!(report.signer.location.ends_with("new-ca"), "{}", report.signer.location);
    assert!(report.notes.iter().any(|n| n.contains("point spec.config.mgmtServerCa at it")), "{:?}", report.notes);
    let kept = m.store.read(&secret(SIGNER)).unwrap().unwrap();
    assert_eq!(kept.get(meshca::ROOT_CERT).unwrap(), old_root.to_pem().as_bytes());
    // A second run changes nothing.
    let before = bundles(&m.store, at(h));
    let Run::Reconciled(again) = run(&m.store, &policy, h).unwrap() else { panic!("rotation restarted") };
    assert!(again.clusters.iter().all(|c| c.action == Action::Kept), "{again:?}");
    assert_eq!(bundles(&m.store, at(h)).iter().map(|b| b.ca_cert().clone()).collect::<Vec<_>>(), {
        before.iter().map(|b| b.ca_cert().clone()).collect::<Vec<_>>()
    });
    // The user points mgmtServerCa at the new CA and drops rootRotation: nothing to do.
    let swapped = policy::parse(
        &SEED_POLICY
            .replace("ttlDays: 1", "ttlDays: 30")
            .replace("name: my-root-trust-policy.gloo-mesh", "name: new-ca"),
        "policy.yaml",
    )
    .unwrap();
    let Run::Reconciled(done) = run(&m.store, &swapped, h).unwrap() else { panic!() };
    assert!(done.ok() && done.clusters.iter().all(|c| c.action == Action::Kept), "{done:?}");
    // Dropping rootRotation but keeping the old mgmtServerCa would sign under a root nobody
    // trusts any more: refused, naming the fix.
    let e = run(&m.store, &seed(""), h).unwrap_err().to_string();
    assert!(e.contains("set mgmtServerCa to") && e.contains("new-ca"), "{e}");
}

#[test]
fn swapping_a_signer_mid_rotation_is_refused_before_anything_is_written() {
    let m = mesh("swap");
    let Run::RootRotation(_) = run(&m.store, &seed(AUTO), 1).unwrap() else { panic!() };
    let before = snapshot(&m.store, at(1));
    // Step 1 still issues from the old CA: pointing mgmtServerCa at the new one now is refused.
    m.store.write(&secret("copy"), &m.new.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    let swapped =
        SEED_POLICY.replace("ttlDays: 1", "ttlDays: 30").replace("name: my-root-trust-policy.gloo-mesh", "name: copy");
    let e = run(&m.store, &policy::parse(&format!("{swapped}{AUTO}"), "p.yaml").unwrap(), 1).unwrap_err().to_string();
    assert!(e.contains("put the old CA back until the rotation completes"), "{e}");
    // The incoming CA replaced by another root mid-rotation: refused too.
    let mut p = RootParams::default();
    p.common_name = "Root CA 3".into();
    let third = SigningCa::generate_root(&p, &mut meshca::OsRng, t0()).unwrap();
    m.store.write(&secret("new-ca"), &third.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    let e = run(&m.store, &seed(AUTO), 1).unwrap_err().to_string();
    assert!(e.contains("the rotation under way goes to CN=Root CA 2"), "{e}");
    assert_eq!(before, snapshot(&m.store, at(1)), "nothing was written");
}

#[test]
fn an_invalid_incoming_ca_is_refused_naming_it() {
    let m = mesh("invalid");
    let before = snapshot(&m.store, at(1));
    // The incoming CA's key does not match its certificate.
    let mut files = m.new.bundle().to_files(Layout::Istio);
    files.insert(meshca::CA_KEY, m.old.bundle().to_files(Layout::Istio).get(meshca::CA_KEY).unwrap().to_vec());
    m.store.write(&secret("new-ca"), &files, &WriteMeta::default()).unwrap();
    let e = run(&m.store, &seed(AUTO), 1).unwrap_err().to_string();
    assert!(e.contains("new-ca") && e.contains("does not match"), "{e}");
    // Missing altogether.
    let missing = seed(&AUTO.replace("new-ca", "no-such-ca"));
    let e = run(&m.store, &missing, 1).unwrap_err().to_string();
    assert!(e.contains("newMgmtServerCa") && e.contains("no-such-ca") && e.contains("not found"), "{e}");
    // The same root as the current signer: nothing to rotate, said so, and the usual loop runs.
    m.store.write(&secret("new-ca"), &m.old.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    let Run::Reconciled(r) = run(&m.store, &seed(AUTO), 1).unwrap() else { panic!("no rotation to the same root") };
    assert!(r.notes.iter().any(|n| n.contains("no root to rotate")), "{:?}", r.notes);
    assert!(meshca_ops::rootrotation::load(&m.store, &seed(AUTO), "mgmt").unwrap().is_none(), "no state saved");
    assert_eq!(before, snapshot(&m.store, at(1)), "no cluster was touched");
}

#[test]
fn withdrawing_the_rotation_before_step_three_rolls_it_back() {
    let m = mesh("withdraw");
    let old_root = m.old.bundle().root().clone();
    // Start and finish step 1; the run after its dwell begins step 2.
    for h in 1..=2 {
        let Run::RootRotation(r) = run(&m.store, &seed(AUTO), h).unwrap() else { panic!() };
        assert!(!r.failed());
    }
    assert!(bundles(&m.store, at(2)).iter().all(|b| b.root() != &old_root), "step 2 is done");
    let (phases, report, h) = drive(&m, &seed(""), 4);
    assert_eq!(phases, ["RollingBackIntermediates", "RollingBackRoot", "RolledBack"]);
    assert!(report.ok());
    for roots in roots_of(&m.store, at(h)) {
        assert_eq!(roots, std::slice::from_ref(&old_root));
    }
    assert_all_pairs_talk(&m.store, at(h), "rolled back");
}

#[test]
fn passive_roots_make_the_gloo_manual_sequence_safe() {
    let m = mesh("passive");
    let (old_root, new_root) = (m.old.bundle().root().clone(), m.new.bundle().root().clone());
    let passive = |name: &str| {
        format!("    passiveCertificateAuthorities:\n    - secretRef: {{name: {name}, namespace: gloo-mesh}}\n")
    };
    let expect = |p: &Policy, h: i64, action: Action, roots: &[&Certificate]| {
        let Run::Reconciled(r) = run(&m.store, p, h).unwrap() else { panic!() };
        assert!(r.ok(), "{r:?}");
        assert!(r.clusters.iter().all(|c| c.action == action), "{action:?}: {r:?}");
        for got in roots_of(&m.store, at(h)) {
            assert_eq!(got.iter().collect::<Vec<_>>(), roots);
        }
        assert_all_pairs_talk(&m.store, at(h), &format!("{action:?}"));
    };
    // 1. The new root is trusted everywhere; intermediates and their keys stay.
    let before = bundles(&m.store, at(1));
    expect(&seed(&passive("new-ca")), 1, Action::TrustUpdated, &[&old_root, &new_root]);
    for (a, b) in before.iter().zip(bundles(&m.store, at(1))) {
        assert_eq!(a.ca_cert(), b.ca_cert());
        assert_eq!(a.ca_key().public_key_raw(), b.ca_key().public_key_raw());
    }
    expect(&seed(&passive("new-ca")), 1, Action::Kept, &[&old_root, &new_root]);
    // 2. Swap: the new CA signs, the old root stays trusted as passive.
    let swapped = |extra: &str| {
        let text = format!(
            "{}{extra}",
            SEED_POLICY
                .replace("ttlDays: 1", "ttlDays: 30")
                .replace("name: my-root-trust-policy.gloo-mesh", "name: new-ca")
        );
        policy::parse(&text, "policy.yaml").unwrap()
    };
    expect(&swapped(&passive(SIGNER)), 25, Action::Rotated, &[&new_root, &old_root]);
    // 3. The old root goes.
    expect(&swapped(""), 49, Action::TrustUpdated, &[&new_root]);
    // A passive Secret that is not a root is refused before anything is written.
    let mut files = Files::new();
    files.insert(meshca::ROOT_CERT, bundles(&m.store, at(49))[0].ca_cert().to_pem());
    m.store.write(&secret("not-a-root"), &files, &WriteMeta::default()).unwrap();
    let e = run(&m.store, &swapped(&passive("not-a-root")), 50).unwrap_err().to_string();
    assert!(e.contains("passiveCertificateAuthorities[0]") && e.contains("not self-signed"), "{e}");
    let e = run(&m.store, &swapped(&passive("missing")), 50).unwrap_err().to_string();
    assert!(e.contains("passiveCertificateAuthorities[0]") && e.contains("not found"), "{e}");
}

/// A store that dies after `budget` writes: every later write fails, as if the process had
/// been killed there (each write itself is atomic, as the directory store's are).
struct Crashing<'a> {
    inner: &'a DirStore,
    budget: AtomicUsize,
    writes: AtomicUsize,
}

impl Store for Crashing<'_> {
    fn location(&self, secret: &SecretRef) -> String {
        self.inner.location(secret)
    }
    fn read(&self, secret: &SecretRef) -> Result<Option<Files>, Error> {
        self.inner.read(secret)
    }
    fn clusters_with_cacerts(&self) -> Result<Vec<String>, Error> {
        self.inner.clusters_with_cacerts()
    }
    fn meta(&self, secret: &SecretRef) -> Result<Option<WriteMeta>, Error> {
        self.inner.meta(secret)
    }
    fn write(&self, secret: &SecretRef, files: &Files, meta: &WriteMeta) -> Result<(), Error> {
        if self.writes.load(SeqCst) >= self.budget.load(SeqCst) {
            return Err(Error::Store { location: self.location(secret), detail: "killed".into() });
        }
        self.writes.fetch_add(1, SeqCst);
        self.inner.write(secret, files, meta)
    }
}

/// How a rotation is begun: by the policy, or by `rotate-root start` (two writes of its own:
/// the incoming signer as `<signer>-next`, then the state).
#[derive(Clone, Copy, Debug)]
enum Mode {
    Policy,
    Command,
}

impl Mode {
    fn policy(self) -> Policy {
        match self {
            Mode::Policy => seed(AUTO),
            Mode::Command => seed(""),
        }
    }

    /// Begins the rotation if it is not under way yet (a user re-runs the command after a crash).
    fn begin(self, store: &dyn Store, m: &Mesh) -> Result<(), Error> {
        if let Mode::Command = self {
            let policy = self.policy();
            if meshca_ops::rootrotation::load(store, &policy, "mgmt")?.is_none() {
                let clusters: Vec<String> = CLUSTERS.iter().map(|c| (*c).to_owned()).collect();
                let opts = Options::new(at(0), clusters);
                meshca_ops::rootrotation::start(store, &policy, &opts, &m.old, &m.new, Duration::hours(1))?;
            }
        }
        Ok(())
    }
}

#[test]
fn a_crash_between_any_two_writes_resumes_without_breaking_trust() {
    for mode in [Mode::Policy, Mode::Command] {
        // Count the writes of an uninterrupted rotation.
        let m = mesh(&format!("crash-count-{mode:?}"));
        let counting = Crashing { inner: &m.store, budget: AtomicUsize::new(usize::MAX), writes: AtomicUsize::new(0) };
        mode.begin(&counting, &m).unwrap();
        let mut h = 1;
        while let Run::RootRotation(_) = run(&counting, &mode.policy(), h).unwrap() {
            h += 1;
        }
        let total = counting.writes.load(SeqCst);
        assert!(total >= 10, "{mode:?}: three steps over three clusters write at least ten times, got {total}");
        println!("{mode:?}: an uninterrupted rotation writes {total} times; crashing after each of them");
        let _ = std::fs::remove_dir_all(&m.dir);

        for crash_after in 0..total {
            let when = format!("{mode:?}, crash after write {crash_after} of {total}");
            let m = mesh(&format!("crash-{mode:?}-{crash_after}"));
            let dying =
                Crashing { inner: &m.store, budget: AtomicUsize::new(crash_after), writes: AtomicUsize::new(0) };
            let mut h = 1;
            // Run until the process "dies" (the first refused write).
            let mut died = mode.begin(&dying, &m).is_err();
            while !died {
                died = result_refused(&run(&dying, &mode.policy(), h));
                assert_all_pairs_talk(&m.store, at(h), &format!("{when}, hour {h}"));
                h += 1;
            }
            // A new process resumes from what the store holds.
            mode.begin(&m.store, &m).unwrap();
            let (_, report, end) = drive(&m, &mode.policy(), h);
            assert!(report.ok(), "{when}: {report:?}");
            for b in bundles(&m.store, at(end)) {
                assert_eq!(b.roots(), [m.new.bundle().root().clone()], "{when}");
                assert_eq!(b.root(), m.new.bundle().root(), "{when}");
            }
            let _ = std::fs::remove_dir_all(&m.dir);
        }
    }
}

/// Whether a run hit the dead store: an error, or a cluster that failed to be written.
fn result_refused(r: &Result<Run, Error>) -> bool {
    match r {
        Err(_) => true,
        Ok(Run::RootRotation(rot)) => rot.failed(),
        Ok(Run::Reconciled(rep)) => !rep.ok(),
    }
}

/// Every Secret in the management cluster, as (name, bytes), for "nothing changed" checks.
fn mgmt_secrets(store: &DirStore) -> Vec<(String, Option<Files>)> {
    ["my-root-trust-policy.gloo-mesh-next", "root-trust-policy-root-rotation", "root-trust-policy-revocations"]
        .iter()
        .map(|n| ((*n).to_owned(), store.read(&secret(n)).unwrap()))
        .collect()
}

#[test]
fn a_secret_meshca_would_create_that_is_not_its_own_is_refused_untouched() {
    let m = mesh("occupied");
    let policy = seed("");
    let opts = Options::new(at(0), CLUSTERS.iter().map(|c| (*c).to_owned()).collect());
    let next = secret(&format!("{SIGNER}-next"));
    // Another CA, with its key, where `rotate-root start` would put the incoming one: made by
    // hand (no managed-by label).
    let other = SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, t0()).unwrap();
    m.store.write(&next, &other.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    let before = mgmt_secrets(&m.store);
    let e = meshca_ops::rootrotation::start(&m.store, &policy, &opts, &m.old, &m.new, Duration::hours(1)).unwrap_err();
    assert!(matches!(e, Error::Occupied { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains(&format!("{SIGNER}-next")) && text.contains("is not managed by meshca"), "{text}");
    assert_eq!(mgmt_secrets(&m.store), before, "nothing was written, the other CA is as it was");
    assert!(meshca_ops::rootrotation::load(&m.store, &policy, "mgmt").unwrap().is_none(), "no rotation started");

    // The same Secret managed by meshca for another policy: refused too.
    let mut meta = WriteMeta::managed();
    meta.annotations.insert(meshca_ops::writer::POLICY_ANNOTATION.into(), "team-b/\u{1b}[31mother".into());
    m.store.write(&next, &other.bundle().to_files(Layout::Istio), &meta).unwrap();
    let e = meshca_ops::rootrotation::start(&m.store, &policy, &opts, &m.old, &m.new, Duration::hours(1)).unwrap_err();
    assert!(e.to_string().contains("belongs to another policy"), "{e}");
    assert!(!e.to_string().contains('\u{1b}'), "no escape sequence from the store reaches the message: {e}");

    // Every Secret meshca creates goes through the same rule: its own state too, on a dry run
    // as well (so a rehearsal shows the refusal).
    let revocations = meshca_ops::revocation::list_secret(&policy, "mgmt");
    let users: Files = [("revocations.json", b"{}".to_vec())].into_iter().collect();
    m.store.write(&revocations, &users, &WriteMeta::default()).unwrap();
    for dry_run in [true, false] {
        let w = meshca_ops::writer::Writer::new(&m.store, &policy, None, at(0), dry_run);
        let e = w.write_state(&revocations, &Files::new()).unwrap_err();
        assert!(matches!(e, Error::Occupied { .. }), "{e}");
    }
    assert_eq!(m.store.read(&revocations).unwrap(), Some(users));
    std::fs::remove_dir_all(&m.dir).unwrap();
}

/// An incoming CA valid for `days` days from t0, stored as `new-ca`.
fn short_lived_new_ca(m: &Mesh, days: i64) -> SigningCa {
    let mut p = RootParams::default();
    p.common_name = "Root CA short".into();
    p.ttl = Duration::days(days);
    let new = SigningCa::generate_root(&p, &mut meshca::OsRng, t0()).unwrap();
    m.store.write(&secret("new-ca"), &new.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    new
}

#[test]
fn an_incoming_ca_that_cannot_see_the_rotation_through_is_refused_at_the_start() {
    let m = mesh("short-new");
    // 10 days: less than three dwells plus the policy's 30-day intermediates.
    let new = short_lived_new_ca(&m, 10);
    let before = bundles(&m.store, at(1));
    let e = run(&m.store, &seed(AUTO), 1).unwrap_err().to_string();
    assert!(e.contains("before a rotation begun now could finish"), "{e}");
    assert!(meshca_ops::rootrotation::load(&m.store, &seed(AUTO), "mgmt").unwrap().is_none(), "nothing started");
    for (a, b) in before.iter().zip(bundles(&m.store, at(1))) {
        assert_eq!(a.ca_cert(), b.ca_cert());
    }
    // The same by hand (rotate-root start).
    let opts = Options::new(at(1), CLUSTERS.iter().map(|c| (*c).to_owned()).collect());
    let e = meshca_ops::rootrotation::start(&m.store, &seed(""), &opts, &m.old, &new, Duration::hours(1)).unwrap_err();
    assert!(e.to_string().contains("before a rotation begun now could finish"), "{e}");
}

#[test]
fn a_rotation_whose_incoming_ca_lapsed_still_rolls_back() {
    let m = mesh("lapsed");
    // Valid long enough to start (30 days of intermediates and three dwells), then it lapses.
    short_lived_new_ca(&m, 31);
    let Run::RootRotation(r) = run(&m.store, &seed(AUTO), 1).unwrap() else { panic!("the rotation starts") };
    assert!(!r.failed(), "{r:?}");
    // 40 days on the incoming CA has expired: withdrawing the rotation takes every cluster back
    // to the old root all the same, and the runs after it are ordinary ones.
    let (phases, report, h) = drive(&m, &seed(""), 24 * 40);
    assert_eq!(phases.last(), Some(&PhaseName(meshca::Phase::RolledBack)), "{phases:?}");
    assert!(report.ok(), "{report:?}");
    let old_root = m.old.bundle().root().clone();
    for roots in roots_of(&m.store, at(h)) {
        assert_eq!(roots, std::slice::from_ref(&old_root));
    }
    assert!(run(&m.store, &seed(""), h + 1).is_ok(), "and the run after it too");
}

fn opts_at(hours: i64) -> Options {
    let mut o = Options::new(at(hours), CLUSTERS.iter().map(|c| (*c).to_owned()).collect());
    o.mgmt_cluster = "mgmt".into();
    o
}

fn revoke(m: &Mesh, policy: &Policy, cluster: &str, hours: i64) -> meshca_ops::revocation::RevocationReport {
    meshca_testkit::fleet::revoke(&m.store, policy, &opts_at(hours), cluster)
}

/// The rehearsal check at one point of a rotation (the test kit's): every pair of clusters
/// completes mTLS (rustls-webpki and `openssl verify -crl_check_all` applying the verifier's
/// CRL set), each trust bundle is a superset or subset of what it was (`before`), and each
/// revoked intermediate's workloads are refused by every cluster.
fn rehearse(m: &Mesh, now: OffsetDateTime, before: &[Vec<Certificate>], revoked: &[(String, Cacerts)], when: &str) {
    meshca_testkit::fleet::rehearse(&m.store, &m.dir, &CLUSTERS, revoked, now, when);
    meshca_testkit::fleet::assert_roots_only_grow_or_shrink(before, &roots_of(&m.store, now), when);
}

fn current(m: &Mesh, cluster: &str, now: OffsetDateTime) -> Cacerts {
    let files = m.store.read(&SecretRef::cacerts(cluster)).unwrap().unwrap();
    Cacerts::from_files(&files, now).unwrap()
}

#[test]
fn a_fleet_with_revocations_rotates_its_root_and_revokes_during_the_rotation() {
    let m = mesh("crls");
    let (old_root, new_root) = (m.old.bundle().root().clone(), m.new.bundle().root().clone());
    let mut revoked = vec![("c2".to_owned(), current(&m, "c2", at(0)))];
    revoke(&m, &seed(""), "c2", 0);
    rehearse(&m, at(0), &roots_of(&m.store, at(0)), &revoked, "after revoking c2");
    let policy = seed(AUTO);
    let mut phases: Vec<PhaseName> = Vec::new();
    let mut h = 1;
    let mut revoked_during = Vec::new();
    loop {
        assert!(h < 20, "the rotation did not finish: {phases:?}");
        let before = roots_of(&m.store, at(h - 1));
        let phase_before = phases.last().map(|p| p.to_string());
        // Once in step 1 and once in step 2, a cluster is revoked mid-rotation: its
        // intermediate (of the old root, then of the new) is re-issued by the phase's signer.
        let target = match phase_before.as_deref() {
            Some("AddingNewRoot") if revoked_during.is_empty() => Some("c3"),
            Some("PropagatingIntermediates") if revoked_during.len() == 1 => Some("c1"),
            _ => None,
        };
        let outcome = match target {
            Some(c) => {
                revoked.push((c.to_owned(), current(&m, c, at(h))));
                revoked_during.push(c);
                revoke(&m, &policy, c, h).run
            }
            None => run(&m.store, &policy, h).unwrap(),
        };
        match outcome {
            Run::RootRotation(r) => {
                assert!(!r.failed(), "{r:?}");
                if phases.last() != Some(&r.now_phase) {
                    phases.push(r.now_phase);
                }
            }
            Run::Reconciled(report) => {
                assert!(report.ok(), "{report:?}");
                rehearse(&m, at(h), &before, &revoked, &format!("hour {h}, after the rotation"));
                break;
            }
        }
        rehearse(&m, at(h), &before, &revoked, &format!("hour {h}, {phases:?}"));
        h += 1;
    }
    assert_eq!(phases, ["AddingNewRoot", "PropagatingIntermediates", "DeletingOldRoot", "Complete"]);
    assert_eq!(revoked_during, ["c3", "c1"]);
    // The old root left with its CRL and what it revoked; the new root's revocation stays.
    let list = meshca_ops::revocation::load(&m.store, &policy, "mgmt").unwrap().unwrap();
    assert_eq!(list.list.revoked.iter().map(|r| r.cluster.as_str()).collect::<Vec<_>>(), ["c1"]);
    assert!(list.list.revoked.iter().all(|r| r.issuer == new_root.subject()));
    assert!(list.crls().iter().all(|c| !c.is_issued_by_name(&old_root)), "the old root's CRL is gone");
    for b in bundles(&m.store, at(h)) {
        assert_eq!(b.roots(), std::slice::from_ref(&new_root));
    }
    for (c, files) in CLUSTERS.iter().map(|c| (c, m.store.read(&SecretRef::cacerts(c)).unwrap().unwrap())) {
        let crls = meshca::Crl::from_pem_all(files.get(meshca::CA_CRL).unwrap(), "ca-crl.pem").unwrap();
        assert!(crls.iter().all(|crl| !crl.is_issued_by_name(&old_root)), "{c} still carries the old root's CRL");
    }
}

#[test]
fn a_rolled_back_rotation_with_revocations_keeps_the_old_roots_and_drops_the_new_ones() {
    let m = mesh("crls-back");
    let (old_root, new_root) = (m.old.bundle().root().clone(), m.new.bundle().root().clone());
    let mut revoked = vec![("c2".to_owned(), current(&m, "c2", at(0)))];
    revoke(&m, &seed(""), "c2", 0);
    for h in 1..=2 {
        let before = roots_of(&m.store, at(h - 1));
        let Run::RootRotation(r) = run(&m.store, &seed(AUTO), h).unwrap() else { panic!() };
        assert!(!r.failed(), "{r:?}");
        rehearse(&m, at(h), &before, &revoked, &format!("hour {h}"));
    }
    // In step 2: c1's new intermediate (under the new root) is revoked, then the rotation is
    // withdrawn.
    revoked.push(("c1".to_owned(), current(&m, "c1", at(2))));
    assert_eq!(revoked[1].1.root(), &new_root);
    let before = roots_of(&m.store, at(2));
    let r = revoke(&m, &seed(AUTO), "c1", 2);
    assert!(matches!(r.run, Run::RootRotation(_)), "{r:?}");
    rehearse(&m, at(2), &before, &revoked, "revoked in step 2");
    let mut h = 3;
    loop {
        assert!(h < 20, "the rollback did not finish");
        let before = roots_of(&m.store, at(h - 1));
        let done = matches!(run(&m.store, &seed(""), h).unwrap(), Run::Reconciled(_));
        rehearse(&m, at(h), &before, &revoked, &format!("hour {h}, rolling back"));
        if done {
            break;
        }
        h += 1;
    }
    for b in bundles(&m.store, at(h)) {
        assert_eq!(b.roots(), std::slice::from_ref(&old_root));
    }
    let list = meshca_ops::revocation::load(&m.store, &seed(""), "mgmt").unwrap().unwrap();
    assert_eq!(list.list.revoked.iter().map(|r| r.cluster.as_str()).collect::<Vec<_>>(), ["c2"]);
    assert!(list.crls().iter().all(|c| !c.is_issued_by_name(&new_root)), "the new root's CRL is gone");
}

#[test]
fn a_rotation_to_a_root_of_the_same_name_is_refused_once_crls_are_published() {
    let m = mesh("crls-twin");
    revoke(&m, &seed(""), "c2", 0);
    let twin = SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, t0()).unwrap();
    m.store.write(&secret("new-ca"), &twin.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    let before = snapshot(&m.store, at(1));
    let e = run(&m.store, &seed(AUTO), 1).unwrap_err().to_string();
    assert!(e.contains("same name") && e.contains("another name"), "{e}");
    assert!(meshca_ops::rootrotation::load(&m.store, &seed(AUTO), "mgmt").unwrap().is_none(), "no state saved");
    assert_eq!(before, snapshot(&m.store, at(1)), "no cluster was touched");
}

/// With CRLs in use, a step's new intermediates wait while a peer cannot be given the set
/// that covers them (its API down): every cluster keeps what it had, every pair still talks,
/// and the step goes on once the peer is back.
#[test]
fn a_peer_that_cannot_take_the_crl_set_holds_the_new_intermediates_back() {
    let m = mesh("crls-down");
    revoke(&m, &seed(""), "c2", 0);
    let policy = seed(AUTO);
    // Step 1 everywhere (no new intermediate yet).
    let Run::RootRotation(r) = run(&m.store, &policy, 1).unwrap() else { panic!() };
    assert!(!r.failed(), "{r:?}");
    let before: Vec<String> = bundles(&m.store, at(1)).iter().map(|b| b.ca_cert().fingerprint_sha256()).collect();
    // Step 2 with c3's API down.
    let down = meshca_testkit::fleet::FailWrites { inner: &m.store, cluster: "c3" };
    let Run::RootRotation(r) = run(&down, &policy, 2).unwrap() else { panic!() };
    let failed: Vec<(&str, &str)> = r.failed_clusters().collect();
    assert_eq!(failed.len(), 3, "{r:?}");
    assert!(failed.iter().any(|(c, e)| *c == "c1" && e.contains("has not reached c3")), "{failed:?}");
    let after: Vec<String> = bundles(&m.store, at(2)).iter().map(|b| b.ca_cert().fingerprint_sha256()).collect();
    assert_eq!(after, before, "no new intermediate was written");
    rehearse(&m, at(2), &roots_of(&m.store, at(1)), &[], "c3 down in step 2");
    // c3 is back: the step completes.
    let held = roots_of(&m.store, at(2));
    let Run::RootRotation(r) = run(&m.store, &policy, 2).unwrap() else { panic!() };
    assert!(!r.failed(), "{r:?}");
    assert!(bundles(&m.store, at(2)).iter().all(|b| b.root() == m.new.bundle().root()));
    rehearse(&m, at(2), &held, &[], "c3 back in step 2");
}

/// The signer is an intermediate of the user's own PKI (its root's CRL supplied in a Secret),
/// the fleet publishes CRLs, and the root moves to one of meshca's own: a revocation before
/// and one in step 2, the rehearsal check at every step, and the upstream's CRLs and entries
/// gone with the old root.
#[test]
fn a_signer_under_an_upstream_root_rotates_with_revocations() {
    let m = mesh("crls-upstream");
    let mut p = RootParams::default();
    p.common_name = "Corp Root".into();
    let corp = SigningCa::generate_root(&p, &mut meshca::OsRng, t0()).unwrap();
    let mut params = meshca::IntermediateParams::new("mesh");
    params.pathlen = 1;
    params.ttl = Duration::days(1000);
    let issuing = corp.issue_intermediate(&params, &mut meshca::OsRng, t0()).unwrap().value;
    m.store.write(&secret(SIGNER), &issuing.to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    let crl = corp.sign_crl(&[], t0() - meshca::BACKDATE, t0() + Duration::days(30), 1).unwrap();
    m.store
        .write(&secret("corp-crls"), &[(meshca::CA_CRL, crl.to_pem())].into_iter().collect(), &WriteMeta::default())
        .unwrap();
    const UPSTREAM: &str = "      upstreamCrlSecretRef: {name: corp-crls}\n";
    let plain = seed(UPSTREAM);
    // Every cluster re-issued under the corp intermediate, then c2 revoked.
    let Run::Reconciled(r) = run(&m.store, &plain, 0).unwrap() else { panic!() };
    assert!(r.ok(), "{r:?}");
    assert!(bundles(&m.store, at(0)).iter().all(|b| b.root() == corp.bundle().root()));
    let mut revoked = vec![("c2".to_owned(), current(&m, "c2", at(0)))];
    revoke(&m, &plain, "c2", 0);
    rehearse(&m, at(0), &roots_of(&m.store, at(0)), &revoked, "c2 revoked under the corp intermediate");
    let policy = seed(&format!("{UPSTREAM}{AUTO}"));
    let mut phases: Vec<PhaseName> = Vec::new();
    for h in 1..20 {
        let before = roots_of(&m.store, at(h - 1));
        let done = match run(&m.store, &policy, h).unwrap() {
            Run::RootRotation(r) => {
                assert!(!r.failed(), "hour {h}: {r:?}");
                if phases.last() != Some(&r.now_phase) {
                    phases.push(r.now_phase);
                }
                false
            }
            Run::Reconciled(r) => {
                assert!(r.ok(), "{r:?}");
                true
            }
        };
        if phases.last().map(ToString::to_string).as_deref() == Some("PropagatingIntermediates") && revoked.len() == 1 {
            revoked.push(("c1".into(), current(&m, "c1", at(h))));
            assert_eq!(revoked[1].1.root(), m.new.bundle().root());
            let r = revoke(&m, &policy, "c1", h);
            assert!(matches!(r.run, Run::RootRotation(_)), "{r:?}");
        }
        rehearse(&m, at(h), &before, &revoked, &format!("hour {h}, {phases:?}"));
        if done {
            break;
        }
    }
    assert_eq!(phases, ["AddingNewRoot", "PropagatingIntermediates", "DeletingOldRoot", "Complete"]);
    let list = meshca_ops::revocation::load(&m.store, &policy, "mgmt").unwrap().unwrap();
    assert_eq!(list.list.revoked.iter().map(|r| r.cluster.as_str()).collect::<Vec<_>>(), ["c1"]);
    for gone in [issuing.ca_cert(), corp.bundle().root()] {
        assert!(list.crls().iter().all(|c| !c.is_issued_by_name(gone)), "{} left the set", gone.subject());
    }
}
