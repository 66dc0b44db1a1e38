#![allow(clippy::unwrap_used)]
//! The rotation plan, with `now` pinned at the boundaries.

mod common;

use common::{fixture_now, rng};
use meshca::{
    plan, Cacerts, Current, Error, Facts, IntermediateParams, IssueReason, KeyAlgorithm, Plan, RevocationReason,
    Revoked, RootParams, RotationPolicy, SigningCa,
};
use time::{Duration, OffsetDateTime};

fn t0() -> OffsetDateTime {
    fixture_now()
}

fn setup(ttl_days: i64, ratio: f64) -> (RotationPolicy, SigningCa, Cacerts) {
    let policy = RotationPolicy::new(Duration::days(ttl_days), ratio).unwrap();
    let root = SigningCa::generate_root(&RootParams::default(), &mut rng(1), t0()).unwrap();
    let bundle = root.issue_intermediate(&policy.intermediate_params("c1"), &mut rng(2), t0()).unwrap().value;
    (policy, root, bundle)
}

#[test]
fn keep_until_exactly_the_grace_point_then_issue() {
    // The seed's policy: ttlDays 1, ratio 0.1 -> rotate 2.4 h (+ the backdate's share) before expiry.
    let (policy, root, bundle) = setup(1, 0.1);
    let ca = bundle.ca_cert();
    let lifetime = ca.not_after() - ca.not_before();
    let grace = policy.rotate_at(ca.not_before(), ca.not_after());
    assert_eq!(ca.not_after() - grace, lifetime * 0.1);
    assert!((ca.not_after() - grace) > Duration::hours(2) + Duration::minutes(24));

    let just_before = grace - Duration::seconds(1);
    assert_eq!(
        plan(&policy, &root, "c1", Current::Valid(&bundle), &Facts::NONE, just_before),
        Plan::Keep { recheck_at: grace }
    );
    match plan(&policy, &root, "c1", Current::Valid(&bundle), &Facts::NONE, grace) {
        Plan::Issue { reason: IssueReason::GracePeriod { rotate_at, not_after } } => {
            assert_eq!(rotate_at, grace);
            assert_eq!(not_after, ca.not_after());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_fresh_bundle_is_kept_and_says_when_to_look_again() {
    let (policy, root, bundle) = setup(365, 0.25);
    match plan(&policy, &root, "c1", Current::Valid(&bundle), &Facts::NONE, t0()) {
        Plan::Keep { recheck_at } => {
            let remaining = bundle.ca_cert().not_after() - recheck_at;
            let lifetime = bundle.ca_cert().not_after() - bundle.ca_cert().not_before();
            assert_eq!(remaining, lifetime * 0.25);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_and_invalid_bundles_are_issued() {
    let (policy, root, bundle) = setup(30, 0.5);
    assert_eq!(
        plan(&policy, &root, "c1", Current::Missing, &Facts::NONE, t0()),
        Plan::Issue { reason: IssueReason::Missing }
    );
    let expired_at = bundle.ca_cert().not_after() + Duration::seconds(1);
    let err = Cacerts::from_files(&bundle.to_files(meshca::Layout::Istio), expired_at).unwrap_err();
    assert!(matches!(err, Error::Expired { .. }));
    match plan(&policy, &root, "c1", Current::Invalid(&err), &Facts::NONE, expired_at) {
        Plan::Issue { reason: IssueReason::Invalid(msg) } => assert!(msg.contains("expired"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let early = bundle.ca_cert().not_before() - Duration::hours(1);
    let err = Cacerts::from_files(&bundle.to_files(meshca::Layout::Istio), early).unwrap_err();
    assert!(matches!(
        plan(&policy, &root, "c1", Current::Invalid(&err), &Facts::NONE, early),
        Plan::Issue { reason: IssueReason::NotYetValid(_) }
    ));
}

#[test]
fn a_new_root_or_signer_forces_reissue() {
    let (policy, _root, bundle) = setup(30, 0.5);
    let other_root = SigningCa::generate_root(&RootParams::default(), &mut rng(9), t0()).unwrap();
    assert!(matches!(
        plan(&policy, &other_root, "c1", Current::Valid(&bundle), &Facts::NONE, t0()),
        Plan::Issue { reason: IssueReason::RootChanged { .. } }
    ));
    // Same root, different signing CA (a management intermediate took over).
    let (_, root, _) = setup(30, 0.5);
    let mut mp = IntermediateParams::new("mgmt");
    mp.pathlen = 1;
    let mgmt = SigningCa::new(root.issue_intermediate(&mp, &mut rng(2), t0()).unwrap().value);
    let under_root = root.issue_intermediate(&policy.intermediate_params("c1"), &mut rng(3), t0()).unwrap().value;
    assert!(matches!(
        plan(&policy, &mgmt, "c1", Current::Valid(&under_root), &Facts::NONE, t0()),
        Plan::Issue { reason: IssueReason::SignerChanged { .. } }
    ));
}

#[test]
fn changed_policy_parameters_force_reissue() {
    let (policy, root, bundle) = setup(30, 0.5);
    let mut p = policy.clone();
    p.key = KeyAlgorithm::EcdsaP384;
    assert!(matches!(
        plan(&p, &root, "c1", Current::Valid(&bundle), &Facts::NONE, t0()),
        Plan::Issue { reason: IssueReason::ParametersChanged { field: "key algorithm", .. } }
    ));
    let mut p = policy.clone();
    p.organization = "Acme".into();
    assert!(matches!(
        plan(&p, &root, "c1", Current::Valid(&bundle), &Facts::NONE, t0()),
        Plan::Issue { reason: IssueReason::ParametersChanged { field: "organization", .. } }
    ));
    // The bundle of another cluster copied here.
    assert!(matches!(
        plan(&policy, &root, "c2", Current::Valid(&bundle), &Facts::NONE, t0()),
        Plan::Issue { reason: IssueReason::ParametersChanged { field: "cluster (subject L)", .. } }
    ));
    // ttlDays lowered: a 30-day bundle under a 7-day policy is re-issued.
    let mut p = policy.clone();
    p.ttl = Duration::days(7);
    assert!(matches!(
        plan(&p, &root, "c1", Current::Valid(&bundle), &Facts::NONE, t0()),
        Plan::Issue { reason: IssueReason::ParametersChanged { field: "ttl", .. } }
    ));
    // Raised: kept (it will rotate at its own grace point).
    let mut p = policy.clone();
    p.ttl = Duration::days(60);
    assert!(matches!(plan(&p, &root, "c1", Current::Valid(&bundle), &Facts::NONE, t0()), Plan::Keep { .. }));
}

#[test]
fn a_clamped_bundle_does_not_thrash() {
    // A root with 10 days left and a 365-day policy: the intermediate is clamped to 10 days and
    // must be kept, not re-issued on every run.
    let mut rp = RootParams::default();
    rp.ttl = Duration::days(10);
    let root = SigningCa::generate_root(&rp, &mut rng(5), t0()).unwrap();
    let policy = RotationPolicy::new(Duration::days(365), 0.2).unwrap();
    let b = root.issue_intermediate(&policy.intermediate_params("c1"), &mut rng(6), t0()).unwrap().value;
    assert!(matches!(
        plan(&policy, &root, "c1", Current::Valid(&b), &Facts::NONE, t0() + Duration::hours(1)),
        Plan::Keep { .. }
    ));
}

#[test]
fn policy_bounds_are_enforced() {
    for ratio in [0.0, 1.0, 1.5, -0.1, f64::NAN] {
        let e = RotationPolicy::new(Duration::days(1), ratio).unwrap_err();
        assert!(e.to_string().contains("secretRotationGracePeriodRatio: must be in (0,1)"), "{e}");
    }
    let e = RotationPolicy::new(Duration::ZERO, 0.5).unwrap_err();
    assert!(e.to_string().contains("ttlDays"), "{e}");
}

#[test]
fn passive_roots_change_only_the_trust_bundle() {
    let (mut policy, root, bundle) = setup(365, 0.1);
    let mut p = RootParams::default();
    p.common_name = "Next Root".into();
    let next = SigningCa::generate_root(&p, &mut rng(3), t0()).unwrap().bundle().root().clone();
    policy.passive_roots = vec![next.clone()];
    let Plan::UpdateTrust { roots, recheck_at } =
        plan(&policy, &root, "c1", Current::Valid(&bundle), &Facts::NONE, t0())
    else {
        panic!("a new passive root must update the trust bundle")
    };
    assert_eq!(roots, [root.bundle().root().clone(), next.clone()]);
    assert_eq!(recheck_at, policy.rotate_at(bundle.ca_cert().not_before(), bundle.not_after()));
    let updated = meshca::with_trust_bundle(&bundle, roots, t0()).unwrap();
    assert!(matches!(plan(&policy, &root, "c1", Current::Valid(&updated), &Facts::NONE, t0()), Plan::Keep { .. }));
    // Withdrawing the passive root shrinks it back; the signer's own root is never dropped.
    policy.passive_roots.clear();
    match plan(&policy, &root, "c1", Current::Valid(&updated), &Facts::NONE, t0()) {
        Plan::UpdateTrust { roots, .. } => assert_eq!(roots, [root.bundle().root().clone()]),
        other => panic!("{other:?}"),
    }
    // A passive root listed twice, or equal to the signer's, is one root.
    policy.passive_roots = vec![root.bundle().root().clone(), root.bundle().root().clone()];
    assert!(matches!(plan(&policy, &root, "c1", Current::Valid(&bundle), &Facts::NONE, t0()), Plan::Keep { .. }));
}

#[test]
fn parse_roots_accepts_only_self_signed_valid_cas() {
    let (_, root, bundle) = setup(365, 0.1);
    let pem = root.bundle().root().to_pem();
    assert_eq!(meshca::parse_roots(pem.as_bytes(), "passive", t0()).unwrap().len(), 1);
    let not_root = bundle.ca_cert().to_pem();
    assert!(matches!(
        meshca::parse_roots(not_root.as_bytes(), "passive", t0()),
        Err(Error::NotARoot { file, .. }) if file == "passive"
    ));
    let late = root.bundle().root().not_after() + Duration::seconds(1);
    assert!(matches!(meshca::parse_roots(pem.as_bytes(), "passive", late), Err(Error::Expired { .. })));
    assert!(matches!(meshca::parse_roots(b"", "passive", t0()), Err(Error::EmptyPem { .. })));
}

#[test]
fn the_fleet_s_facts_replace_a_bundle_the_policy_would_keep() {
    let (policy, root, bundle) = setup(30, 0.2);
    let keep = |facts: &Facts<'_>| plan(&policy, &root, "c1", Current::Valid(&bundle), facts, t0());
    assert!(matches!(keep(&Facts::NONE), Plan::Keep { .. }));
    // Its serial on the signer's CRL: replaced, and revocation comes before a requested rotation.
    let entry = [Revoked::of(bundle.ca_cert(), t0(), RevocationReason::KeyCompromise)];
    assert_eq!(keep(&Facts::new(&entry, true, true)), Plan::Issue { reason: IssueReason::Revoked });
    // Another serial on the CRL, CRLs in use (meshca's intermediates may sign CRLs): kept.
    let other = root.issue_intermediate(&policy.intermediate_params("c2"), &mut rng(3), t0()).unwrap().value;
    let other_entry = [Revoked::of(other.ca_cert(), t0(), RevocationReason::KeyCompromise)];
    assert!(matches!(keep(&Facts::new(&other_entry, true, false)), Plan::Keep { .. }));
    // Asked for: re-issued, the old intermediate not revoked.
    assert_eq!(keep(&Facts::new(&[], false, true)), Plan::Issue { reason: IssueReason::Requested });
    // A plan that issues anyway keeps its own reason.
    assert_eq!(
        plan(&policy, &root, "c1", Current::Missing, &Facts::new(&entry, true, true), t0()),
        Plan::Issue { reason: IssueReason::Missing }
    );
}

#[test]
fn a_plan_names_its_action_and_reason_for_reports_and_bindings() {
    let (policy, root, bundle) = setup(30, 0.2);
    let kept = plan(&policy, &root, "c1", Current::Valid(&bundle), &Facts::NONE, t0());
    assert_eq!((kept.action(), kept.reason().as_str()), ("keep", "valid, outside the grace period"));
    assert!(kept.recheck_at().is_some_and(|t| t > t0()));
    let issued = plan(&policy, &root, "c1", Current::Missing, &Facts::NONE, t0());
    assert_eq!((issued.action(), issued.recheck_at()), ("issue", None));
    assert_eq!(issued.reason(), IssueReason::Missing.to_string());
    assert!(issued.roots().is_empty());
}
