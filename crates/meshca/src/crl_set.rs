//! The fleet's CRL set (`ca-crl.pem`), as every cluster publishes it: the root's CRL listing
//! the revoked intermediates, and one entry-less CRL per intermediate in use, each signed by
//! its own CA (Envoy refuses a chain through a CA without a CRL once any is given:
//! docs/istiod-crl.md). The validity windows live in one [`CrlProfile`]; the one
//! [`BACKDATE`](crate::BACKDATE) is the certificates'. Where the set is stored, and the list of
//! revocations it is built from, are the caller's (meshca-ops keeps both in one Secret).

use time::{Duration, OffsetDateTime};

use crate::bundle::Cacerts;
use crate::ca::SigningCa;
use crate::cert::Certificate;
use crate::crl::{check_crl_set, Crl, RevocationReason, Revoked};
use crate::error::{Error, Result};
use crate::profile::BACKDATE;

/// How long the CRLs of a set are valid, and when the root's is re-signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CrlProfile {
    /// How long a root CRL is valid (its nextUpdate is this after it is signed, and never after
    /// the root expires).
    pub root_validity: Duration,
    /// A root CRL with less than this left before its nextUpdate is re-signed.
    pub root_refresh: Duration,
}

impl Default for CrlProfile {
    fn default() -> Self {
        CrlProfile::DEFAULT
    }
}

impl CrlProfile {
    /// A week's validity, re-signed with four days left: a run every few days keeps it fresh.
    pub const DEFAULT: CrlProfile = CrlProfile { root_validity: Duration::days(7), root_refresh: Duration::days(4) };

    /// A profile with root CRLs valid `root_validity` (re-signed with less than
    /// `root_refresh` left).
    pub fn new(root_validity: Duration, root_refresh: Duration) -> Self {
        CrlProfile { root_validity, root_refresh }
    }

    /// When a CRL signed by `ca` at `now` starts: backdated like a certificate, never before
    /// `ca` itself.
    pub fn this_update(&self, ca: &Certificate, now: OffsetDateTime) -> OffsetDateTime {
        (now - BACKDATE).max(ca.not_before())
    }

    /// When the root CRL signed by `root` at `now` ends.
    pub fn root_next_update(&self, root: &Certificate, now: OffsetDateTime) -> OffsetDateTime {
        (now + self.root_validity).min(root.not_after())
    }
}

/// A CRL set: the root's CRL first, then one per intermediate in use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrlSet {
    crls: Vec<Crl>,
}

impl CrlSet {
    /// The set holding `crls` (as read from a stored `ca-crl.pem`).
    pub fn new(crls: Vec<Crl>) -> Self {
        CrlSet { crls }
    }

    /// The CRLs.
    pub fn crls(&self) -> &[Crl] {
        &self.crls
    }

    /// The set as `ca-crl.pem` holds it.
    pub fn to_pem(&self) -> String {
        self.crls.iter().map(Crl::to_pem).collect()
    }

    /// The CRL named for `ca` (the root's, or an intermediate's).
    pub fn of(&self, ca: &Certificate) -> Option<&Crl> {
        self.crls.iter().find(|c| c.is_issued_by_name(ca))
    }

    /// Brings the root's CRL up to date with `entries`: it is re-signed by `signer` (a root)
    /// when an entry changed, when it has less than the profile's refresh left, or when it does
    /// not verify under the root; intermediates' CRLs that expired are dropped. Returns the CRL
    /// number it signed with (`last_number` + 1), or `None` when the CRL in the set stays.
    /// Whether the set changed at all is [`CrlSet::refresh_root`]'s second value.
    pub fn refresh_root(
        &mut self,
        profile: &CrlProfile,
        signer: &SigningCa,
        entries: &[Revoked],
        last_number: u64,
        now: OffsetDateTime,
    ) -> Result<(Option<u64>, bool)> {
        let root = signer.bundle().ca_cert();
        if !root.is_self_signed() {
            return Err(Error::CrlSignerNotRoot { subject: root.subject() });
        }
        self.refresh_signer(profile, signer, entries, last_number, now)
    }

    /// [`CrlSet::refresh_root`] for any signing CA, a root or not (a management intermediate
    /// under an upstream PKI): its CRL lists `entries`, valid until the profile's root
    /// validity or the CA's own notAfter, whichever is first. The CRLs of the CAs above it are
    /// the upstream's ([`CrlSet::import`]).
    pub fn refresh_signer(
        &mut self,
        profile: &CrlProfile,
        signer: &SigningCa,
        entries: &[Revoked],
        last_number: u64,
        now: OffsetDateTime,
    ) -> Result<(Option<u64>, bool)> {
        let root = signer.bundle().ca_cert();
        let before = self.crls.len();
        self.crls.retain(|c| c.is_issued_by_name(root) || c.next_update() > now);
        let dropped = self.crls.len() != before;
        let current = self.crls.iter().position(|c| c.is_issued_by_name(root));
        let fresh = current.map(|i| &self.crls[i]).is_some_and(|c| {
            c.check(root, now, crate::CA_CRL).is_ok()
                && c.next_update() - now > profile.root_refresh
                && same_serials(&c.entries(), entries)
        });
        if fresh {
            return Ok((None, dropped));
        }
        // RFC 5280 5.2.3: the CRL number only grows; at its maximum it cannot, and wrapping to 0
        // would make every consumer keep the older CRL.
        let number = last_number.checked_add(1).ok_or(Error::CrlNumberExhausted { number: last_number })?;
        let crl =
            signer.sign_crl(entries, profile.this_update(root, now), profile.root_next_update(root, now), number)?;
        match current {
            Some(i) => self.crls[i] = crl,
            None => self.crls.insert(0, crl),
        }
        Ok((Some(number), true))
    }

    /// Makes sure the set holds a current CRL of `bundle`'s intermediate, signing an entry-less
    /// one valid until the intermediate expires with `bundle`'s own key if not. A CRL of the
    /// same name that does not verify under it (an older intermediate of that name) is dropped.
    /// Returns whether the set changed.
    pub fn cover(&mut self, profile: &CrlProfile, bundle: &Cacerts, now: OffsetDateTime) -> Result<bool> {
        let ca = bundle.ca_cert();
        if self.crls.iter().any(|c| c.is_issued_by_name(ca) && c.check(ca, now, crate::CA_CRL).is_ok()) {
            return Ok(false);
        }
        self.crls.retain(|c| !c.is_issued_by_name(ca));
        let crl = SigningCa::new(bundle.clone()).sign_crl(&[], profile.this_update(ca, now), ca.not_after(), 1)?;
        self.crls.push(crl);
        Ok(true)
    }

    /// Takes `crl`, a CRL of `issuer` from elsewhere (the upstream PKI of a signing CA that is
    /// not a root), in place of the one the set holds for it, unless the held one is as new.
    /// A CRL that does not verify under `issuer`, is not valid yet or expired is refused:
    /// publishing it would make every chain through `issuer` fail. Returns whether the set
    /// changed.
    pub fn import(&mut self, crl: Crl, issuer: &Certificate, now: OffsetDateTime, file: &str) -> Result<bool> {
        crl.check(issuer, now, file)?;
        let held = self.crls.iter().position(|c| c.is_issued_by_name(issuer));
        if let Some(i) = held {
            let h = &self.crls[i];
            if h.check(issuer, now, file).is_ok() && (h.this_update(), h.number()) >= (crl.this_update(), crl.number())
            {
                return Ok(false);
            }
            self.crls[i] = crl;
        } else {
            self.crls.push(crl);
        }
        Ok(true)
    }

    /// Whether the set holds a CRL of `ca` that verifies and is valid at `now` for more than
    /// `left` still.
    pub fn holds_current(&self, ca: &Certificate, now: OffsetDateTime, left: Duration) -> bool {
        self.of(ca).is_some_and(|c| c.check(ca, now, crate::CA_CRL).is_ok() && c.next_update() - now > left)
    }

    /// Drops the CRL of `ca` (a root no cluster trusts any more).
    pub fn forget(&mut self, ca: &Certificate) {
        self.crls.retain(|c| !c.is_issued_by_name(ca));
    }

    /// Checks the set against the path of a bundle it is published with, as Envoy applies it
    /// ([`check_crl_set`]).
    pub fn check(&self, path: &[Certificate], now: OffsetDateTime, file: &str) -> Result<()> {
        check_crl_set(&self.crls, path, now, file)
    }
}

/// Whether two CRLs' entries are the same serials with the same reasons, in any order.
fn same_serials(a: &[Revoked], b: &[Revoked]) -> bool {
    let key = |r: &Revoked| (crate::canonical_serial(&r.serial).to_vec(), r.reason.map(RevocationReason::name));
    let mut x: Vec<_> = a.iter().map(key).collect();
    let mut y: Vec<_> = b.iter().map(key).collect();
    x.sort();
    y.sort();
    x == y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IntermediateParams, RootParams};
    use rand_chacha::rand_core::SeedableRng;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("a valid time")
    }

    fn fleet() -> (SigningCa, Cacerts) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let root = SigningCa::generate_root(&RootParams::default(), &mut rng, t0()).expect("root");
        let east = root.issue_intermediate(&IntermediateParams::new("east"), &mut rng, t0()).expect("east").value;
        (root, east)
    }

    #[test]
    fn the_root_crl_is_resigned_only_when_due_or_changed() {
        let (root, east) = fleet();
        let p = CrlProfile::DEFAULT;
        let mut set = CrlSet::default();
        assert_eq!(set.refresh_root(&p, &root, &[], 0, t0()).expect("first"), (Some(1), true));
        assert!(set.cover(&p, &east, t0()).expect("cover"));
        assert!(!set.cover(&p, &east, t0()).expect("again"), "a current CRL is kept");
        // Two days on, with nothing changed, the CRL stays (more than root_refresh left).
        assert_eq!(set.refresh_root(&p, &root, &[], 1, t0() + Duration::days(2)).expect("fresh"), (None, false));
        // Four days on it is due.
        let (n, changed) = set.refresh_root(&p, &root, &[], 1, t0() + Duration::days(4)).expect("due");
        assert_eq!((n, changed), (Some(2), true));
        // An entry changes it at once.
        let revoked = [Revoked::of(east.ca_cert(), t0(), RevocationReason::KeyCompromise)];
        assert_eq!(set.refresh_root(&p, &root, &revoked, 2, t0() + Duration::days(4)).expect("entry").0, Some(3));
        assert!(set.of(root.bundle().ca_cert()).is_some_and(|c| c.revokes(east.ca_cert())));
        // Windows: backdated, and never past the root's notAfter.
        let crl = set.of(root.bundle().ca_cert()).expect("root CRL");
        assert_eq!(crl.this_update(), t0() + Duration::days(4) - BACKDATE);
        assert_eq!(crl.next_update(), t0() + Duration::days(11));
    }

    #[test]
    fn the_set_checks_as_envoy_applies_it() {
        let (root, east) = fleet();
        let p = CrlProfile::DEFAULT;
        let mut set = CrlSet::default();
        set.refresh_root(&p, &root, &[], 0, t0()).expect("root CRL");
        assert!(set.check(east.path(), t0(), "ca-crl.pem").is_err(), "east has no CRL yet");
        set.cover(&p, &east, t0()).expect("cover");
        set.check(east.path(), t0(), "ca-crl.pem").expect("every CA of the path has its current CRL");
        let stale = t0() + Duration::days(8);
        assert!(set.check(east.path(), stale, "ca-crl.pem").is_err(), "the root CRL lapsed");
    }

    #[test]
    fn an_intermediate_signs_its_own_crl_and_the_one_above_comes_from_upstream() {
        let (root, _) = fleet();
        let p = CrlProfile::DEFAULT;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let mut params = IntermediateParams::new("management");
        params.pathlen = 1;
        let mgmt = SigningCa::new(root.issue_intermediate(&params, &mut rng, t0()).expect("mgmt").value);
        let cluster = mgmt.issue_intermediate(&IntermediateParams::new("west"), &mut rng, t0()).expect("west").value;
        let north = mgmt.issue_intermediate(&IntermediateParams::new("north"), &mut rng, t0()).expect("north").value;
        let mut set = CrlSet::default();
        let revoked = [Revoked::of(north.ca_cert(), t0(), RevocationReason::KeyCompromise)];
        assert_eq!(set.refresh_signer(&p, &mgmt, &revoked, 0, t0()).expect("signed"), (Some(1), true));
        set.cover(&p, &cluster, t0()).expect("cover");
        let path = cluster.path();
        assert!(set.check(path, t0(), "ca-crl.pem").is_err(), "the root's CRL is missing");
        // The upstream's CRL: refused when it is not the issuer's, or expired; taken when it is.
        let upstream = root.sign_crl(&[], t0() - BACKDATE, t0() + Duration::days(3), 7).expect("upstream");
        let e = set.import(upstream.clone(), mgmt.bundle().ca_cert(), t0(), "upstream").expect_err("not its CRL");
        assert!(e.to_string().contains("upstream"), "{e}");
        let e = set.import(upstream.clone(), root.bundle().ca_cert(), t0() + Duration::days(4), "upstream");
        assert!(e.is_err(), "an expired upstream CRL is refused");
        assert!(set.import(upstream.clone(), root.bundle().ca_cert(), t0(), "upstream").expect("taken"));
        assert!(!set.import(upstream, root.bundle().ca_cert(), t0(), "upstream").expect("again"), "not newer");
        set.check(path, t0(), "ca-crl.pem").expect("every CA of the path has its CRL");
        assert!(set.holds_current(root.bundle().ca_cert(), t0(), Duration::days(2)));
        assert!(!set.holds_current(root.bundle().ca_cert(), t0(), Duration::days(3)));
        assert!(set.of(mgmt.bundle().ca_cert()).is_some_and(|c| c.revokes(north.ca_cert())));
    }

    #[test]
    fn a_number_at_its_maximum_and_a_non_root_signer_are_refused() {
        let (root, east) = fleet();
        let p = CrlProfile::DEFAULT;
        let mut set = CrlSet::default();
        let e = set.refresh_root(&p, &root, &[], u64::MAX, t0()).expect_err("no larger number");
        assert!(matches!(e, Error::CrlNumberExhausted { number: u64::MAX }), "{e}");
        let e = set.refresh_root(&p, &SigningCa::new(east), &[], 0, t0()).expect_err("not a root");
        assert!(matches!(e, Error::CrlSignerNotRoot { .. }), "{e}");
        assert!(set.crls().is_empty(), "a refused refresh leaves the set as it was");
    }
}
