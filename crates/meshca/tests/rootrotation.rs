//! The root-rotation state machine: a full walk, idempotence, rollback, refusals, and the
//! invariant that a workload issued by any cluster's current intermediate is trusted by every
//! other cluster's current root-cert.pem, at every step and with clusters one step apart.
#![allow(clippy::unwrap_used)]

mod common;

use common::{fixture_now, rng, webpki_verify};
use meshca::{
    Cacerts, Error, IntermediateParams, LeafParams, Phase, RootParams, RootRotation, RotationPolicy, SigningCa,
    SpiffeId, Step,
};
use time::{Duration, OffsetDateTime};

const CLUSTERS: [&str; 3] = ["c1", "c2", "c3"];

struct Mesh {
    old: SigningCa,
    new: SigningCa,
    bundles: Vec<Cacerts>,
}

fn mesh(now: OffsetDateTime) -> Mesh {
    let old = SigningCa::generate_root(&RootParams::default(), &mut rng(1), now).unwrap();
    let mut p = RootParams::default();
    p.common_name = "Root CA 2".into();
    let new = SigningCa::generate_root(&p, &mut rng(2), now).unwrap();
    let bundles = CLUSTERS
        .iter()
        .enumerate()
        .map(|(i, c)| old.issue_intermediate(&IntermediateParams::new(c), &mut rng(10 + i as u64), now).unwrap().value)
        .collect();
    Mesh { old, new, bundles }
}

/// Every cluster's workload is trusted by every cluster's root-cert.pem (rustls-webpki).
fn assert_mutual_mtls(bundles: &[Cacerts], now: OffsetDateTime, when: &str) {
    let id = SpiffeId::workload("cluster.local", "default", "app").unwrap();
    for (i, a) in bundles.iter().enumerate() {
        let leaf = SigningCa::new(a.clone())
            .issue_leaf(&LeafParams::new(id.clone()), &mut rng(100 + i as u64), now)
            .unwrap()
            .value;
        for (j, b) in bundles.iter().enumerate() {
            webpki_verify(&leaf.chain(), b.roots(), now).unwrap_or_else(|e| {
                panic!("{when}: a workload of {} is not trusted by {}: {e}", CLUSTERS[i], CLUSTERS[j])
            });
        }
    }
}

/// The clusters' policy: a year, so nothing is due for rotation in these tests unless they say so.
fn policy() -> RotationPolicy {
    RotationPolicy::new(Duration::days(365), 0.1).unwrap()
}

fn converge_all(r: &RootRotation, m: &Mesh, bundles: &mut [Cacerts], now: OffsetDateTime, only: &[usize]) {
    for &i in only {
        if let Some(b) = r
            .converge(Some(&bundles[i]), &m.old, Some(&m.new), &policy(), CLUSTERS[i], &mut rng(50 + i as u64), now)
            .unwrap()
        {
            bundles[i] = b;
        }
    }
}

fn step(r: &RootRotation, bundles: &[Cacerts], now: OffsetDateTime) -> (RootRotation, Step) {
    let views: Vec<(&str, Option<&Cacerts>)> = CLUSTERS.iter().copied().zip(bundles.iter().map(Some)).collect();
    r.step(&views, now)
}

#[test]
fn a_full_rotation_never_breaks_cross_cluster_trust() {
    let mut now = fixture_now();
    let m = mesh(now);
    let mut bundles = m.bundles.clone();
    let dwell = Duration::hours(24);
    let mut r = RootRotation::start(&m.old, &m.new, dwell).unwrap();
    assert_mutual_mtls(&bundles, now, "before");
    let mut phases = vec![r.phase];
    while !matches!(r.phase, Phase::Complete) {
        // Some clusters move first: the mix of neighbouring steps must hold too.
        let (partial, _) = step(&r, &bundles, now);
        assert!(matches!(partial.phase, p if p == r.phase), "no advance before convergence");
        converge_all(&r, &m, &mut bundles, now, &[0]);
        assert_mutual_mtls(&bundles, now, &format!("{:?}, c1 ahead", r.phase));
        converge_all(&r, &m, &mut bundles, now, &[1, 2]);
        assert_mutual_mtls(&bundles, now, &format!("{:?}, all", r.phase));
        // Converged: wait out the dwell, then advance. A second call is idempotent.
        let (r1, s1) = step(&r, &bundles, now);
        assert_eq!(s1, Step::Dwelling { until: now + dwell });
        assert_eq!(step(&r1, &bundles, now), (r1.clone(), Step::Dwelling { until: now + dwell }));
        now += dwell;
        let (r2, s2) = step(&r1, &bundles, now);
        assert!(matches!(s2, Step::Advanced { .. } | Step::Finished), "{s2:?}");
        r = r2;
        phases.push(r.phase);
    }
    assert_eq!(
        phases,
        [Phase::AddingNewRoot, Phase::PropagatingIntermediates, Phase::DeletingOldRoot, Phase::Complete]
    );
    for b in &bundles {
        assert_eq!(b.roots(), [m.new.bundle().root().clone()]);
        assert_eq!(b.root(), m.new.bundle().root());
    }
}

#[test]
fn each_step_only_adds_or_only_removes_roots() {
    let now = fixture_now();
    let m = mesh(now);
    let r = RootRotation::start(&m.old, &m.new, Duration::ZERO).unwrap();
    let (o, n) = (m.old.bundle().root().clone(), m.new.bundle().root().clone());
    let at = |p: Phase| {
        let mut x = r.clone();
        x.phase = p;
        x.target_roots()
    };
    // {old} -> {old,new} -> {old,new} -> {new}: supersets, then a subset; never disjoint.
    assert_eq!(at(Phase::AddingNewRoot), [o.clone(), n.clone()]);
    assert_eq!(at(Phase::PropagatingIntermediates), [o.clone(), n.clone()]);
    assert_eq!(at(Phase::DeletingOldRoot), [n]);
    assert_eq!(at(Phase::RollingBackRoot), [o]);
}

#[test]
fn rollback_before_step_three_restores_the_old_root() {
    let mut now = fixture_now();
    let m = mesh(now);
    let mut bundles = m.bundles.clone();
    let r = RootRotation::start(&m.old, &m.new, Duration::ZERO).unwrap();
    converge_all(&r, &m, &mut bundles, now, &[0, 1, 2]);
    let (r, _) = step(&r, &bundles, now);
    assert_eq!(r.phase, Phase::PropagatingIntermediates);
    converge_all(&r, &m, &mut bundles, now, &[0]);
    let mut r = r.rollback().unwrap();
    assert_eq!(r.phase, Phase::RollingBackIntermediates);
    while r.phase != Phase::RolledBack {
        converge_all(&r, &m, &mut bundles, now, &[2]);
        assert_mutual_mtls(&bundles, now, &format!("{:?}, c3 ahead", r.phase));
        converge_all(&r, &m, &mut bundles, now, &[0, 1]);
        assert_mutual_mtls(&bundles, now, &format!("{:?}", r.phase));
        now += Duration::seconds(1);
        r = step(&r, &bundles, now).0;
        r = step(&r, &bundles, now).0;
    }
    for b in &bundles {
        assert_eq!(b.roots(), [m.old.bundle().root().clone()]);
    }
    // After the old root starts going away, there is no way back.
    let mut r = RootRotation::start(&m.old, &m.new, Duration::ZERO).unwrap();
    r.phase = Phase::DeletingOldRoot;
    assert!(matches!(r.rollback(), Err(Error::InvalidParameter { .. })));
}

#[test]
fn refuses_the_same_root_and_waits_for_missing_clusters() {
    let now = fixture_now();
    let m = mesh(now);
    let e = RootRotation::start(&m.old, &m.old, Duration::ZERO).unwrap_err();
    assert!(e.to_string().contains("same root"), "{e}");
    // A management intermediate under the old root is the same root too.
    let mut p = IntermediateParams::new("mgmt");
    p.pathlen = 1;
    let mgmt = SigningCa::new(m.old.issue_intermediate(&p, &mut rng(3), now).unwrap().value);
    assert!(RootRotation::start(&m.old, &mgmt, Duration::ZERO).is_err());
    // A cluster without a valid bundle holds the step back, by name.
    let r = RootRotation::start(&m.old, &m.new, Duration::ZERO).unwrap();
    let (same, s) = r.step(&[("c1", None)], now);
    assert_eq!(same.phase, Phase::AddingNewRoot);
    assert_eq!(s, Step::Converging { pending: vec!["c1".into()] });
}

#[test]
fn passive_roots_stay_trusted_in_every_phase() {
    let mut now = fixture_now();
    let m = mesh(now);
    let mut p = RootParams::default();
    p.common_name = "Partner Root".into();
    let partner = SigningCa::generate_root(&p, &mut rng(4), now).unwrap().bundle().root().clone();
    let mut bundles = m.bundles.clone();
    let mut r = RootRotation::start(&m.old, &m.new, Duration::ZERO).unwrap().with_extra_roots(vec![partner.clone()]);
    while r.phase != Phase::Complete {
        converge_all(&r, &m, &mut bundles, now, &[0, 1, 2]);
        for b in &bundles {
            assert!(b.trusts_root(&partner), "{:?}: the passive root was dropped", r.phase);
            assert!(r.is_done(b));
        }
        assert_mutual_mtls(&bundles, now, &format!("{:?} with a passive root", r.phase));
        now += Duration::seconds(1);
        r = step(&r, &bundles, now).0;
        r = step(&r, &bundles, now).0;
    }
    assert_eq!(bundles[0].roots(), [m.new.bundle().root().clone(), partner]);
}

#[test]
fn an_intermediate_due_for_rotation_is_reissued_mid_rotation() {
    // A one-day intermediate, rotating with 10% left, inside a rotation whose dwell is longer
    // than that: without re-issue it would expire while the rotation waits.
    let now = fixture_now();
    let m = mesh(now);
    let short = RotationPolicy::new(Duration::days(1), 0.1).unwrap();
    let r = RootRotation::start(&m.old, &m.new, Duration::days(3)).unwrap();
    let b0 = m.old.issue_intermediate(&short.intermediate_params("c1"), &mut rng(20), now).unwrap().value;
    let step1 = r.converge(Some(&b0), &m.old, Some(&m.new), &short, "c1", &mut rng(21), now).unwrap().unwrap();
    assert_eq!(step1.ca_cert(), b0.ca_cert(), "step 1 changes only the trust bundle");
    assert!(r.converge(Some(&step1), &m.old, Some(&m.new), &short, "c1", &mut rng(22), now).unwrap().is_none());
    let late = now + Duration::hours(23);
    let renewed = r.converge(Some(&step1), &m.old, Some(&m.new), &short, "c1", &mut rng(23), late).unwrap().unwrap();
    assert_ne!(renewed.ca_cert(), step1.ca_cert(), "in its grace period: re-issued");
    assert_eq!(renewed.root(), m.old.bundle().root(), "by the phase's signer");
    assert!(r.is_done(&renewed));
    // A phase that signs with the new CA needs it; the old-signer phases do not.
    let mut p2 = r.clone();
    p2.phase = Phase::PropagatingIntermediates;
    let e = p2.converge(Some(&step1), &m.old, None, &short, "c1", &mut rng(24), now).unwrap_err();
    assert!(e.to_string().contains("incoming CA"), "{e}");
    let back = p2.rollback().unwrap();
    assert!(back.converge(Some(&step1), &m.old, None, &short, "c1", &mut rng(25), now).is_ok());
}

#[test]
fn a_revoked_intermediate_is_reissued_by_the_phases_signer_and_crls_follow_the_trusted_roots() {
    let now = fixture_now();
    let m = mesh(now);
    let mut r = RootRotation::start(&m.old, &m.new, Duration::hours(1)).unwrap();
    let b0 = &m.bundles[0];
    let revoked = [meshca::Revoked::of(b0.ca_cert(), now, meshca::RevocationReason::KeyCompromise)];
    let facts = meshca::Facts::new(&revoked, true, false);
    // Step 1 would only change the trust bundle; revoked, the intermediate is replaced, by the
    // old signer (the phase's), inside the step's trust bundle.
    let plain = r.converge(Some(b0), &m.old, Some(&m.new), &policy(), "c1", &mut rng(30), now).unwrap().unwrap();
    assert_eq!(plain.ca_cert(), b0.ca_cert());
    let fresh =
        r.converge_with(Some(b0), &m.old, Some(&m.new), &policy(), &facts, "c1", &mut rng(31), now).unwrap().unwrap();
    assert_ne!(fresh.ca_cert(), b0.ca_cert(), "a revoked intermediate is replaced");
    assert_eq!(fresh.root(), m.old.bundle().root());
    assert!(r.is_done(&fresh));
    // In step 2 the replacement comes from the new signer.
    r.phase = Phase::PropagatingIntermediates;
    let fresh =
        r.converge_with(Some(b0), &m.old, Some(&m.new), &policy(), &facts, "c1", &mut rng(32), now).unwrap().unwrap();
    assert_eq!(fresh.root(), m.new.bundle().root());
    // Both roots' CRLs while both may be trusted; the removed one leaves when it finishes.
    let (old_root, new_root) = (m.old.bundle().root(), m.new.bundle().root());
    for phase in [Phase::AddingNewRoot, Phase::PropagatingIntermediates, Phase::DeletingOldRoot, Phase::RollingBackRoot]
    {
        r.phase = phase;
        assert_eq!(r.crl_roots(), [old_root, new_root], "{phase:?}");
        assert_eq!(r.removed_root(), None);
    }
    r.phase = Phase::Complete;
    assert_eq!((r.crl_roots(), r.removed_root()), (vec![new_root], Some(old_root)));
    r.phase = Phase::RolledBack;
    assert_eq!((r.crl_roots(), r.removed_root()), (vec![old_root], Some(new_root)));
    // Two roots of one name cannot share a CRL set: verifiers pick a CRL by its issuer's name.
    r.check_crl_names().unwrap();
    let twin = SigningCa::generate_root(&RootParams::default(), &mut rng(3), now).unwrap();
    let e = RootRotation::start(&m.old, &twin, Duration::hours(1)).unwrap().check_crl_names().unwrap_err();
    assert!(e.to_string().contains("same name"), "{e}");
}
