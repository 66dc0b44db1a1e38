//! CRLs: signed by meshca, read back, checked, and applied to workload chains the way Envoy
//! applies a `ca-crl.pem` (a CRL for every CA of a chain, or the chain fails), by rustls-webpki
//! directly and by `openssl verify -crl_check_all`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use meshca::{
    Certificate, Crl, IntermediateParams, Leaf, LeafParams, RevocationReason, Revoked, RootParams, SigningCa, SpiffeId,
};

use time::{Duration, OffsetDateTime};

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_893_456_000).unwrap()
}

struct Fleet {
    root: SigningCa,
    c1: SigningCa,
    c2_old: SigningCa,
    c2_new: SigningCa,
    c3: SigningCa,
}

fn fleet() -> Fleet {
    let mut rng = common::rng(7);
    let root = SigningCa::generate_root(&RootParams::default(), &mut rng, now()).unwrap();
    let mut inter =
        |c: &str| SigningCa::new(root.issue_intermediate(&IntermediateParams::new(c), &mut rng, now()).unwrap().value);
    let (c1, c2_old, c2_new, c3) = (inter("c1"), inter("c2"), inter("c2"), inter("c3"));
    Fleet { root, c1, c2_old, c2_new, c3 }
}

fn leaf(ca: &SigningCa, sa: &str) -> Leaf {
    let id = SpiffeId::workload("cluster.local", "default", sa).unwrap();
    ca.issue_leaf(&LeafParams::new(id), &mut common::rng(9), now()).unwrap().value
}

/// The fleet's CRL file after revoking c2's old intermediate: the root's CRL listing it, and an
/// empty CRL from every intermediate still in use.
fn fleet_crls(f: &Fleet, t: OffsetDateTime) -> Vec<Crl> {
    let week = t + Duration::days(7);
    let revoked = Revoked::of(f.c2_old.bundle().ca_cert(), t, RevocationReason::KeyCompromise);
    let mut crls = vec![f.root.sign_crl(&[revoked], t, week, 1).unwrap()];
    for ca in [&f.c1, &f.c2_new, &f.c3] {
        crls.push(ca.sign_crl(&[], t, week, 1).unwrap());
    }
    crls
}

use meshca_testkit::verify::{openssl_available, webpki_with_crls, OpensslVerify};

#[test]
fn a_revoked_intermediate_is_refused_and_every_other_chain_verifies() {
    let f = fleet();
    let roots = f.root.bundle().roots().to_vec();
    let crls = fleet_crls(&f, now());
    let old = leaf(&f.c2_old, "old");
    let at = now() + Duration::hours(1);

    let e = webpki_with_crls(&old.chain(), &roots, &crls, at).unwrap_err();
    assert_eq!(e.to_string(), "CertRevoked");
    let e = meshca::verify_workload_chain_with_crls(&old.chain(), &roots, &crls, at).unwrap_err();
    assert!(e.to_string().contains("revoked by the CRL of its issuer"), "{e}");
    // Without the CRLs the old chain is fine: the CRL is what refuses it.
    meshca::verify_workload_chain(&old.chain(), &roots, at).unwrap();

    for (ca, sa) in [(&f.c1, "a"), (&f.c2_new, "b"), (&f.c3, "c")] {
        let l = leaf(ca, sa);
        webpki_with_crls(&l.chain(), &roots, &crls, at).unwrap();
        meshca::verify_workload_chain_with_crls(&l.chain(), &roots, &crls, at).unwrap();
    }

    // A root CRL alone breaks every chain: no CRL covers the leaf's issuer (Envoy, like
    // OpenSSL's -crl_check_all, refuses these).
    let fine = leaf(&f.c1, "a");
    assert_eq!(
        webpki_with_crls(&fine.chain(), &roots, &crls[..1], at).unwrap_err().to_string(),
        "UnknownRevocationStatus"
    );
    let e = meshca::verify_workload_chain_with_crls(&fine.chain(), &roots, &crls[..1], at).unwrap_err();
    assert!(e.to_string().contains("no CRL covers one of the chain's CAs"), "{e}");
    // A stale CRL refuses its chains too.
    let late = now() + Duration::days(8);
    let e = meshca::verify_workload_chain_with_crls(&fine.chain(), &roots, &fleet_crls(&f, now()), late);
    assert!(e.is_err());
}

#[test]
fn a_crl_set_built_by_the_core_is_applied_by_webpki_as_envoy_applies_it() {
    let f = fleet();
    let roots = f.root.bundle().roots().to_vec();
    let profile = meshca::CrlProfile::DEFAULT;
    let mut set = meshca::CrlSet::default();
    let revoked = [Revoked::of(f.c2_old.bundle().ca_cert(), now(), RevocationReason::KeyCompromise)];
    assert_eq!(set.refresh_root(&profile, &f.root, &revoked, 0, now()).unwrap(), (Some(1), true));
    for ca in [&f.c1, &f.c2_new, &f.c3, &f.c2_old] {
        assert!(set.cover(&profile, ca.bundle(), now()).unwrap());
    }
    let at = now() + Duration::hours(1);
    assert_eq!(
        webpki_with_crls(&leaf(&f.c2_old, "old").chain(), &roots, set.crls(), at).unwrap_err().to_string(),
        "CertRevoked"
    );
    for (ca, sa) in [(&f.c1, "a"), (&f.c2_new, "b"), (&f.c3, "c")] {
        webpki_with_crls(&leaf(ca, sa).chain(), &roots, set.crls(), at).unwrap();
        set.check(ca.bundle().path(), at, "ca-crl.pem").unwrap();
    }
    // Past the profile's validity the root CRL is stale for webpki too.
    let late = now() + profile.root_validity + Duration::minutes(1);
    assert!(webpki_with_crls(&leaf(&f.c1, "a").chain(), &roots, set.crls(), late).is_err());
}

#[test]
fn a_chain_is_judged_by_every_peer_s_crl_set() {
    let f = fleet();
    let crls = fleet_crls(&f, now());
    let at = now() + Duration::hours(1);
    let peers = [("west", crls.as_slice()), ("north", &[][..])];
    // c1 is covered by west's set; north publishes none and checks nothing.
    meshca::check_peer_crl_sets(f.c1.bundle().path(), peers, at).unwrap();
    // c2's old intermediate is revoked (and so not covered) by west's set: west refuses it.
    let (peer, e) = meshca::check_peer_crl_sets(f.c2_old.bundle().path(), peers, at).unwrap_err();
    assert_eq!(peer, "west");
    assert!(e.to_string().starts_with("west/ca-crl.pem: "), "{e}");
    assert!(e.to_string().contains("L=c2,"), "{e}");
    // Once west's set is stale it refuses every chain.
    let (peer, _) = meshca::check_peer_crl_sets(f.c1.bundle().path(), peers, now() + Duration::days(8)).unwrap_err();
    assert_eq!(peer, "west");
}

#[test]
fn crls_read_back_with_their_entries_and_are_checked_as_consumers_check_them() {
    let f = fleet();
    let crls = fleet_crls(&f, now());
    let pem: String = crls.iter().map(Crl::to_pem).collect();
    let back = Crl::from_pem_all(pem.as_bytes(), "ca-crl.pem").unwrap();
    assert_eq!(back, crls);
    let root_crl = &back[0];
    assert_eq!(root_crl.issuer(), f.root.bundle().ca_cert().subject());
    let entries = root_crl.entries();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].serial, f.c2_old.bundle().ca_cert().serial_bytes());
    assert_eq!(entries[0].reason, Some(RevocationReason::KeyCompromise));
    assert_eq!(entries[0].revoked_at, now());
    assert!(root_crl.revokes(f.c2_old.bundle().ca_cert()));
    assert!(!root_crl.revokes(f.c2_new.bundle().ca_cert()));
    assert_eq!(root_crl.next_update(), now() + Duration::days(7));

    let root = f.root.bundle().ca_cert();
    root_crl.check(root, now(), "ca-crl.pem").unwrap();
    let e = root_crl.check(f.c1.bundle().ca_cert(), now(), "ca-crl.pem").unwrap_err().to_string();
    assert!(e.contains("is issued by"), "{e}");
    let e = root_crl.check(root, now() + Duration::days(7), "ca-crl.pem").unwrap_err().to_string();
    assert!(e.contains("is stale since"), "{e}");
    // A CRL read an instant before it starts (a PKI's clock, a long run) is taken; further
    // ahead than the backdating allowance, it is refused.
    let starts = root_crl.this_update();
    root_crl.check(root, starts - meshca::BACKDATE, "ca-crl.pem").unwrap();
    let e =
        root_crl.check(root, starts - meshca::BACKDATE - Duration::seconds(1), "ca-crl.pem").unwrap_err().to_string();
    assert!(e.contains("not valid yet"), "{e}");
    assert!(root_crl.is_current_at(starts - meshca::BACKDATE));
    assert!(!root_crl.is_current_at(starts - meshca::BACKDATE - Duration::seconds(1)));
    assert!(!root_crl.is_current_at(root_crl.next_update()));
    // The last representable instant is past the window, not a panic.
    let last = time::PrimitiveDateTime::MAX.assume_utc();
    assert!(!root_crl.is_current_at(last));
    assert!(root_crl.check(root, last, "ca-crl.pem").unwrap_err().to_string().contains("is stale since"));
    // One flipped bit in the signed part: the signature fails.
    let mut der = root_crl.der().to_vec();
    let i = der.len() / 3;
    der[i] ^= 1;
    if let Ok(tampered) = Crl::from_der(&der, "tampered") {
        assert!(tampered.check(root, now(), "tampered").is_err());
    }

    assert!(Crl::from_pem_all(b"no crl here", "x").is_err());
    let cert_pem = root.to_pem();
    let e = Crl::from_pem_all(cert_pem.as_bytes(), "ca-crl.pem").unwrap_err().to_string();
    assert!(e.contains("CERTIFICATE"), "{e}");
    assert_eq!("superseded".parse::<RevocationReason>().unwrap(), RevocationReason::Superseded);
    assert!("fired".parse::<RevocationReason>().unwrap_err().to_string().contains("keyCompromise"));
    assert!(f.root.sign_crl(&[], now(), now(), 1).is_err(), "nextUpdate after thisUpdate");
}

fn openssl_crl_check_all(
    dir: &Path,
    chain: &[Certificate],
    roots: &[Certificate],
    crls: &[Crl],
    at: i64,
) -> (bool, String) {
    let pem = |c: &[Certificate]| c.iter().map(Certificate::to_pem).collect::<String>();
    std::fs::write(dir.join("leaf.pem"), chain[0].to_pem()).unwrap();
    std::fs::write(dir.join("chain.pem"), pem(&chain[1..])).unwrap();
    std::fs::write(dir.join("roots.pem"), pem(roots)).unwrap();
    std::fs::write(dir.join("ca-crl.pem"), crls.iter().map(Crl::to_pem).collect::<String>()).unwrap();
    let at = OffsetDateTime::from_unix_timestamp(at).unwrap();
    let verdict = OpensslVerify::new(&dir.join("leaf.pem"))
        .strict()
        .at(at)
        .roots(&dir.join("roots.pem"))
        .untrusted(&dir.join("chain.pem"))
        .crls(&dir.join("ca-crl.pem"))
        .run();
    (verdict.is_ok(), verdict.err().map(|e| e.to_string()).unwrap_or_default())
}

#[test]
fn openssl_crl_check_all_agrees() {
    if !openssl_available() {
        eprintln!("SKIPPED openssl_crl_check_all_agrees: no openssl on PATH");
        return;
    }
    let f = fleet();
    let dir = std::env::temp_dir().join(format!("meshca-crl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let roots = f.root.bundle().roots().to_vec();
    let crls = fleet_crls(&f, now());
    let at = (now() + Duration::hours(1)).unix_timestamp();
    // The revoked intermediate's leaf: refused (no CRL of c2's old intermediate is published,
    // which alone refuses its chain at depth 0).
    let old = leaf(&f.c2_old, "old").chain();
    let (ok, out) = openssl_crl_check_all(&dir, &old, &roots, &crls, at);
    assert!(!ok && out.contains("unable to get certificate CRL"), "{out}");
    // Even with a CRL from the old intermediate itself (one an attacker holding its key could
    // make), the root's entry refuses it at depth 1.
    let mut with_own = crls.clone();
    with_own.push(f.c2_old.sign_crl(&[], now(), now() + Duration::days(7), 1).unwrap());
    let (ok, out) = openssl_crl_check_all(&dir, &old, &roots, &with_own, at);
    assert!(!ok && out.contains("certificate revoked") && out.contains("error 23 at 1 depth"), "{out}");
    for ca in [&f.c1, &f.c2_new, &f.c3] {
        let (ok, out) = openssl_crl_check_all(&dir, &leaf(ca, "a").chain(), &roots, &crls, at);
        assert!(ok, "{}: {out}", ca.bundle().ca_cert().serial_hex());
    }
    let (ok, out) = openssl_crl_check_all(&dir, &leaf(&f.c1, "a").chain(), &roots, &crls[..1], at);
    assert!(!ok && out.contains("unable to get certificate CRL"), "a root CRL alone: {out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_crl_larger_than_any_meshca_uses_is_refused_before_it_is_parsed() {
    // 8.9 MB of CRL once cost 586 MB to parse; past the bound nothing is parsed at all.
    let der = vec![0x30u8; meshca::MAX_CRL_DER_BYTES + 1];
    let e = meshca::Crl::from_der(&der, "ca-crl.pem").unwrap_err().to_string();
    assert!(e.contains("meshca reads CRLs of at most 1024 KiB"), "{e}");
    let pem = pem_rfc7468::encode_string("X509 CRL", pem_rfc7468::LineEnding::LF, &der).unwrap();
    let e = meshca::Crl::from_pem_all(pem.as_bytes(), "ca-crl.pem").unwrap_err().to_string();
    assert!(e.contains("at most 1024 KiB"), "{e}");
}
