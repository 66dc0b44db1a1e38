//! The signing CA's key in a PKCS#11 token, against SoftHSM2 (skipped, loudly, when it is not
//! installed). Each test makes its own token. Everything issued through the token is checked by
//! rustls-webpki directly, by `openssl verify`, and by meshca's own bundle validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use meshca::{
    Cacerts, Certificate, ExternalKey, IntermediateParams, KeyAlgorithm, Layout, LeafParams, RootParams, SigningCa,
    SpiffeId,
};
use meshca_ops::error::{Error, ErrorKind};
use meshca_ops::pkcs11::{KeyAccess, KeyUri, Pin, TokenKey};
use meshca_ops::policy;
use meshca_ops::reconcile::{self, Action, Options, Run, TokenAccess};
use meshca_ops::store::{DirStore, SecretRef, Store, WriteMeta};
use meshca_testkit::softhsm::{softhsm, SoftHsm, PIN};
use meshca_testkit::tempdir;
use time::OffsetDateTime;

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn access(hsm: &SoftHsm, token: &str, object: &str, pin: &str) -> KeyAccess {
    KeyAccess {
        module: hsm.module.clone(),
        uri: KeyUri::parse(&format!("pkcs11:token={token};object={object}")).unwrap(),
        pin: Pin::new(pin).unwrap(),
    }
}

/// rustls-webpki, directly (the test kit's), failing the test with its verdict.
fn webpki_verify(chain: &[Certificate], roots: &[Certificate], at: OffsetDateTime) {
    meshca_testkit::verify::webpki(chain, roots, at).unwrap_or_else(|e| panic!("rustls-webpki refused the chain: {e}"));
}

/// `openssl verify -x509_strict` of `leaf` with `untrusted` intermediates and `roots`.
fn openssl_verify(dir: &Path, leaf: &Certificate, untrusted: &[Certificate], roots: &[Certificate]) {
    meshca_testkit::verify::openssl_verify_certs(dir, leaf, untrusted, roots)
        .unwrap_or_else(|e| panic!("openssl verify: {e}"));
}

/// A read-write session of the test's own on `token` (through the module meshca loaded),
/// logged in as the user when `login`.
fn own_session(hsm: &SoftHsm, token: &str, login: bool) -> cryptoki::session::Session {
    let ctx = meshca_ops::pkcs11::module(&hsm.module).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == token)
        .unwrap();
    let s = ctx.open_rw_session(slot).unwrap();
    if login {
        s.login(UserType::User, Some(&AuthPin::from(PIN)))
            .or_else(|e| match e {
                cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _) => Ok(()),
                e => Err(e),
            })
            .unwrap();
    }
    s
}

/// A root whose key was made in the token: the private key is sensitive and not extractable,
/// and asking the token for its value fails. Checked through cryptoki on a session of its own,
/// not through meshca.
fn assert_key_stays_in_token(hsm: &SoftHsm, token: &str, object: &str) {
    let s = own_session(hsm, token, true);
    let keys = s
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::Label(object.as_bytes().to_vec())])
        .unwrap();
    assert_eq!(keys.len(), 1);
    let attrs = s
        .get_attributes(keys[0], &[AttributeType::Extractable, AttributeType::Sensitive, AttributeType::Token])
        .unwrap();
    assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Token(true)), "{attrs:?}");
    let value = s.get_attribute_info(keys[0], &[AttributeType::Value, AttributeType::PrivateExponent]).unwrap();
    assert!(value.iter().all(|v| matches!(v, AttributeInfo::Sensitive | AttributeInfo::TypeInvalid)), "{value:?}");
    // C_GetAttributeValue of CKA_VALUE itself (not just its size) is refused too.
    assert!(s.get_attributes(keys[0], &[AttributeType::Value]).map(|a| a.is_empty()).unwrap_or(true));
}

#[test]
fn a_root_made_in_the_token_issues_what_every_verifier_accepts() {
    let Some(hsm) = softhsm("a_root_made_in_the_token_issues_what_every_verifier_accepts") else { return };
    let dir = tempdir("root");
    let t = now();
    for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384, KeyAlgorithm::Rsa2048] {
        let token = hsm.new_token("root");
        let key = TokenKey::generate(&access(hsm, &token, "root-ca", PIN), alg).unwrap();
        assert_key_stays_in_token(hsm, &token, "root-ca");
        assert!(key.is_unextractable().unwrap());
        assert_key_stays_in_token(hsm, &token, "root-ca");
        assert!(key.key_type().matches(alg), "{alg}: {}", key.key_type());

        let root = SigningCa::generate_root_with_key(&RootParams::default(), key, &mut meshca::OsRng, t).unwrap();
        let files = root.bundle().to_files(Layout::Istio);
        assert!(!files.contains(meshca::CA_KEY), "a token-held root writes no key file");
        assert_eq!(root.bundle().root().key_type(), Some(alg.key_type()));

        // Reopened from the public files and the URI alone, as every later command does.
        let reopened = TokenKey::open(&access(hsm, &token, "root-ca", PIN)).unwrap();
        let root = SigningCa::from_public_files(&files, reopened, t).unwrap();
        let inter = root.issue_intermediate(&IntermediateParams::new("c1"), &mut meshca::OsRng, t).unwrap().value;
        let inter = Cacerts::from_files(&inter.to_files(Layout::Istio), t).expect("meshca's bundle validation");
        assert_eq!(inter.root(), root.bundle().root());
        let leaf = SigningCa::new(inter.clone())
            .issue_leaf(
                &LeafParams::new(SpiffeId::workload("cluster.local", "default", "app").unwrap()),
                &mut meshca::OsRng,
                t,
            )
            .unwrap()
            .value;
        webpki_verify(&leaf.chain(), root.bundle().roots(), t);
        openssl_verify(&dir, leaf.cert(), &leaf.chain()[1..], root.bundle().roots());
        meshca::verify_workload_chain(&leaf.chain(), root.bundle().roots(), t).unwrap();

        // A CSR signed by the token: the key for an intermediate an external PKI signs.
        let csr_key = TokenKey::generate(&access(hsm, &token, "mgmt-intermediate", PIN), alg).unwrap();
        let pem = meshca::Csr::generate_pem_with("mgmt", "meshca", &meshca::CaKey::External(csr_key.clone())).unwrap();
        let csr = meshca::Csr::from_pem(pem.as_bytes(), "csr.pem").unwrap();
        let mut mgmt_params = IntermediateParams::new("mgmt");
        mgmt_params.pathlen = 1; // it signs the clusters' intermediates
        let signed = root.sign_intermediate_csr(&csr, &mgmt_params, &mut meshca::OsRng, t).unwrap().value;
        let mgmt = SigningCa::from_public_files(&signed.to_files(), csr_key, t).unwrap();
        let c2 = mgmt.issue_intermediate(&IntermediateParams::new("c2"), &mut meshca::OsRng, t).unwrap().value;
        let c2 = Cacerts::from_files(&c2.to_files(Layout::Istio), t).unwrap();
        let leaf = SigningCa::new(c2)
            .issue_leaf(
                &LeafParams::new(SpiffeId::workload("cluster.local", "ns", "b").unwrap()),
                &mut meshca::OsRng,
                t,
            )
            .unwrap()
            .value;
        webpki_verify(&leaf.chain(), root.bundle().roots(), t);
        openssl_verify(&dir, leaf.cert(), &leaf.chain()[1..], root.bundle().roots());
    }
}

#[test]
fn token_failures_are_clear_errors_that_never_show_the_pin() {
    let Some(hsm) = softhsm("token_failures_are_clear_errors_that_never_show_the_pin") else { return };
    let token = hsm.new_token("fail");
    let key = TokenKey::generate(&access(hsm, &token, "root-ca", PIN), KeyAlgorithm::EcdsaP256).unwrap();
    let root = SigningCa::generate_root_with_key(&RootParams::default(), key, &mut meshca::OsRng, now()).unwrap();

    let wrong = "not-the-pin-0000";
    let e = TokenKey::open(&access(hsm, &token, "root-ca", wrong)).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Hsm);
    assert!(msg.contains("CKR_PIN_INCORRECT") && msg.contains(&format!("token={token}")), "{msg}");
    assert!(!msg.contains(wrong) && !format!("{e:?}").contains(wrong), "{msg}");

    let msg = TokenKey::open(&access(hsm, &token, "no-such-key", PIN)).unwrap_err().to_string();
    assert!(msg.contains("no private key") && msg.contains("object=no-such-key"), "{msg}");

    let msg = TokenKey::open(&access(hsm, "no-such-token", "root-ca", PIN)).unwrap_err().to_string();
    assert!(msg.contains("no token matches") && msg.contains(&token), "{msg}");

    // The same label twice would make the URI ambiguous: refused, and the first key is intact.
    let msg =
        TokenKey::generate(&access(hsm, &token, "root-ca", PIN), KeyAlgorithm::EcdsaP256).unwrap_err().to_string();
    assert!(msg.contains("already holds an object labelled root-ca"), "{msg}");

    let dir = tempdir("notmodule");
    let text = dir.join("module.so");
    std::fs::write(&text, "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n").unwrap();
    let mut a = access(hsm, &token, "root-ca", PIN);
    a.module = text.clone();
    let msg = TokenKey::open(&a).unwrap_err().to_string();
    assert!(msg.contains("is not a loadable shared library") && !msg.contains("MIGHAgEA"), "{msg}");
    if let Some(libc) = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    {
        a.module = libc;
        let msg = TokenKey::open(&a).unwrap_err().to_string();
        assert!(msg.contains("not a PKCS#11 module (no C_GetFunctionList)"), "{msg}");
    }

    // A token key that is not the CA certificate's key: refused when the signer is assembled.
    let other = TokenKey::generate(&access(hsm, &token, "other", PIN), KeyAlgorithm::EcdsaP256).unwrap();
    let e = SigningCa::from_public_files(&root.bundle().to_files(Layout::Istio), other, now()).unwrap_err();
    assert!(matches!(e, meshca::Error::KeyMismatch { ref key_file, .. } if key_file.contains("object=other")), "{e}");

    // Public files with a ca-key.pem beside them: one CA, one key.
    let mut files = root.bundle().to_files(Layout::Istio);
    files.insert(meshca::CA_KEY, b"whatever".to_vec());
    let again = TokenKey::open(&access(hsm, &token, "root-ca", PIN)).unwrap();
    let e = SigningCa::from_public_files(&files, again, now()).unwrap_err();
    assert!(e.to_string().contains("ca-key.pem: present, but the CA key is pkcs11:"), "{e}");
}

const POLICY: &str = "\
apiVersion: admin.gloo.solo.io/v2
kind: RootTrustPolicy
metadata:
  name: root-trust-policy
  namespace: gloo-mesh
spec:
  config:
    intermediateCertOptions:
      ttlDays: 30
    mgmtServerCa:
      secretRef:
        name: hsm-root
      pkcs11:
        uri: pkcs11:token=TOKEN;object=root-ca
        pinSecretRef:
          name: hsm-pin
";

fn run(store: &dyn Store, text: &str, token: TokenAccess, t: OffsetDateTime) -> Result<Run, Error> {
    let policy = policy::parse(text, "policy.yaml").unwrap();
    let mut opts = Options::new(t, ["c1", "c2", "c3"].map(String::from).to_vec());
    opts.token = token;
    reconcile::run(store, &policy, &opts, &mut meshca::OsRng, &mut |_, _| {})
}

#[test]
fn reconcile_signs_three_clusters_through_the_token_and_touches_none_when_it_fails() {
    let Some(hsm) = softhsm("reconcile_signs_three_clusters_through_the_token_and_touches_none_when_it_fails") else {
        return;
    };
    let t = now();
    let token = hsm.new_token("fleet");
    let key = TokenKey::generate(&access(hsm, &token, "root-ca", PIN), KeyAlgorithm::EcdsaP256).unwrap();
    let root = SigningCa::generate_root_with_key(&RootParams::default(), key, &mut meshca::OsRng, t).unwrap();
    let dir = tempdir("fleet");
    let store = DirStore::new(dir.join("store"));
    let mgmt = |name: &str| SecretRef::new("mgmt", "gloo-mesh", name);
    store.write(&mgmt("hsm-root"), &root.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    let text = POLICY.replace("TOKEN", &token);
    let module = TokenAccess::new(Some(hsm.module.clone()), None);

    // No PIN Secret yet: refused before anything is written.
    let e = run(&store, &text, module.clone(), t).unwrap_err();
    assert!(e.to_string().contains("pinSecretRef") && e.to_string().contains("not found"), "{e}");
    // A wrong PIN in the Secret: refused, no cluster touched.
    store.write(&mgmt("hsm-pin"), &[("pin", "wrong-pin\n")].into_iter().collect(), &WriteMeta::default()).unwrap();
    let e = run(&store, &text, module.clone(), t).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Hsm, "{e}");
    assert!(e.to_string().contains("CKR_PIN_INCORRECT"), "{e}");
    // No module given (the policy cannot choose one): refused.
    let e = run(&store, &text, TokenAccess::default(), t).unwrap_err();
    assert!(e.to_string().contains("no module was given"), "{e}");
    let e = run(
        &store,
        &text.replace("        uri:", "        module: /usr/lib/other.so\n        uri:"),
        module.clone(),
        t,
    )
    .unwrap_err();
    assert!(e.to_string().contains("expects the PKCS#11 module /usr/lib/other.so"), "{e}");
    for c in ["c1", "c2", "c3"] {
        assert!(store.read(&SecretRef::cacerts(c)).unwrap().is_none(), "{c} was written by a failed run");
    }

    store.write(&mgmt("hsm-pin"), &[("pin", format!("{PIN}\n"))].into_iter().collect(), &WriteMeta::default()).unwrap();
    let Run::Reconciled(report) = run(&store, &text, module.clone(), t).unwrap() else { panic!("no rotation asked") };
    assert!(report.ok(), "{report:?}");
    assert!(report.clusters.iter().all(|c| c.action == Action::Issued), "{report:?}");
    assert_eq!(report.signer.key.as_deref(), Some(format!("pkcs11:token={token};object=root-ca").as_str()));
    let bundles: Vec<Cacerts> = ["c1", "c2", "c3"]
        .iter()
        .map(|c| Cacerts::from_files(&store.read(&SecretRef::cacerts(c)).unwrap().unwrap(), t).unwrap())
        .collect();
    for b in &bundles {
        assert_eq!(b.root(), root.bundle().root());
        b.ca_cert().verify_signed_by(root.bundle().root()).unwrap();
    }
    let named: Vec<(&str, &Cacerts)> = ["c1", "c2", "c3"].into_iter().zip(&bundles).collect();
    meshca_ops::mtls::handshake_all_pairs(&named, &mut meshca::OsRng, t).unwrap();
    // The signer Secret still holds no key.
    assert!(!store.read(&mgmt("hsm-root")).unwrap().unwrap().contains(meshca::CA_KEY));
    let _: Arc<dyn ExternalKey> = TokenKey::open(&access(hsm, &token, "root-ca", PIN)).unwrap();
}

/// The case the second signer loader broke: the policy's root key is in the token, the
/// incoming root is named by `rootRotation`, and every run of the rotation reads the old
/// signer through the token. Each step is followed by real handshakes between every pair.
#[test]
fn the_root_rotates_away_from_a_key_held_in_the_token() {
    let Some(hsm) = softhsm("the_root_rotates_away_from_a_key_held_in_the_token") else { return };
    let t = now();
    let token = hsm.new_token("rotate");
    let key = TokenKey::generate(&access(hsm, &token, "root-ca", PIN), KeyAlgorithm::EcdsaP256).unwrap();
    let old = SigningCa::generate_root_with_key(&RootParams::default(), key, &mut meshca::OsRng, t).unwrap();
    let mut p = RootParams::default();
    p.common_name = "Root CA 2".into();
    let new = SigningCa::generate_root(&p, &mut meshca::OsRng, t).unwrap();
    let dir = tempdir("rotate");
    let store = DirStore::new(dir.join("store"));
    let mgmt = |name: &str| SecretRef::new("mgmt", "gloo-mesh", name);
    store.write(&mgmt("hsm-root"), &old.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    store.write(&mgmt("new-ca"), &new.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    store.write(&mgmt("hsm-pin"), &[("pin", format!("{PIN}\n"))].into_iter().collect(), &WriteMeta::default()).unwrap();
    let module = TokenAccess::new(Some(hsm.module.clone()), None);
    let plain = POLICY.replace("TOKEN", &token);
    let Run::Reconciled(first) = run(&store, &plain, module.clone(), t).unwrap() else { panic!("no rotation asked") };
    assert!(first.ok(), "{first:?}");

    let rotating = format!(
        "{plain}    rootRotation:\n      newMgmtServerCa:\n        secretRef: {{name: new-ca}}\n      dwellHours: 1\n"
    );
    let clusters = ["c1", "c2", "c3"];
    let talk = |at: OffsetDateTime, when: &str| {
        let bundles: Vec<Cacerts> = clusters
            .iter()
            .map(|c| Cacerts::from_files(&store.read(&SecretRef::cacerts(c)).unwrap().unwrap(), at).unwrap())
            .collect();
        let named: Vec<(&str, &Cacerts)> = clusters.into_iter().zip(&bundles).collect();
        meshca_ops::mtls::handshake_all_pairs(&named, &mut meshca::OsRng, at).unwrap_or_else(|e| panic!("{when}: {e}"));
        bundles
    };
    let mut phases = Vec::new();
    let mut done = None;
    for h in 1..20 {
        let at = t + time::Duration::hours(h) + time::Duration::seconds(h);
        match run(&store, &rotating, module.clone(), at).unwrap() {
            Run::RootRotation(r) => {
                assert!(!r.failed(), "{r:?}");
                if phases.last() != Some(&r.now_phase) {
                    phases.push(r.now_phase);
                }
            }
            Run::Reconciled(report) => {
                done = Some((report, at));
                break;
            }
        }
        talk(at, &format!("hour {h}, {phases:?}"));
    }
    let (report, at) = done.unwrap_or_else(|| panic!("the rotation did not finish: {phases:?}"));
    assert_eq!(phases, ["AddingNewRoot", "PropagatingIntermediates", "DeletingOldRoot", "Complete"]);
    assert!(report.ok(), "{report:?}");
    for b in talk(at, "after the rotation") {
        assert_eq!(b.roots(), std::slice::from_ref(new.bundle().root()));
        b.ca_cert().verify_signed_by(new.bundle().root()).unwrap();
    }
    // The token's key was used and never left it; the signer Secret still holds no key.
    assert_key_stays_in_token(hsm, &token, "root-ca");
    // Started by hand, a rotation would end by writing the incoming CA over the signer Secret
    // the policy keys from the token: refused, naming the way that works.
    let mut opts = Options::new(at, clusters.map(String::from).to_vec());
    opts.token = module;
    let policy = policy::parse(&plain, "policy.yaml").unwrap();
    let (current, _) = reconcile::load_signer(&store, &policy, &opts, &mut meshca::OsRng).unwrap();
    let e = meshca_ops::rootrotation::start(&store, &policy, &opts, &current, &new, time::Duration::hours(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("rootRotation.newMgmtServerCa"), "{e}");
    assert!(!store.read(&mgmt("hsm-root")).unwrap().unwrap().contains(meshca::CA_KEY));
}

/// The migration users need most: the quickstart's root in a Secret to a root made in their
/// HSM, by the same three steps, with CRLs in use throughout: a cluster revoked before the
/// rotation, one revoked during step 2 (its CRL signed through the token), and one revoked
/// after it under the token-held root. At every step every pair of clusters passes the
/// rehearsal check (rustls-webpki and `openssl -crl_check_all`).
#[test]
fn the_quickstart_root_moves_into_the_token_with_revocations_throughout() {
    let Some(hsm) = softhsm("the_quickstart_root_moves_into_the_token_with_revocations_throughout") else { return };
    let t = now();
    let token = hsm.new_token("migrate");
    let key = TokenKey::generate(&access(hsm, &token, "root-2", PIN), KeyAlgorithm::EcdsaP256).unwrap();
    let mut p = RootParams::default();
    p.common_name = "HSM Root".into();
    let new = SigningCa::generate_root_with_key(&p, key, &mut meshca::OsRng, t).unwrap();
    let dir = tempdir("migrate");
    let store = DirStore::new(dir.join("store"));
    let mgmt = |name: &str| SecretRef::new("mgmt", "gloo-mesh", name);
    store.write(&mgmt("hsm-root"), &new.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    store.write(&mgmt("hsm-pin"), &[("pin", format!("{PIN}\n"))].into_iter().collect(), &WriteMeta::default()).unwrap();
    let module = TokenAccess::new(Some(hsm.module.clone()), None);
    // The quickstart's policy: a generated root in a Secret.
    let quickstart = meshca_testkit::fleet::GENERATED_ROOT_POLICY;
    let clusters = ["c1", "c2", "c3"];
    let opts = |at: OffsetDateTime| {
        let mut o = Options::new(at, clusters.map(String::from).to_vec());
        o.token = module.clone();
        o
    };
    let text_policy = |text: &str| policy::parse(text, "policy.yaml").unwrap();
    let Run::Reconciled(first) = run(&store, quickstart, module.clone(), t).unwrap() else { panic!() };
    assert!(first.ok(), "{first:?}");
    let old_root =
        Cacerts::from_files(&store.read(&SecretRef::cacerts("c1")).unwrap().unwrap(), t).unwrap().root().clone();
    let revoke = |text: &str, cluster: &str, at: OffsetDateTime| {
        meshca_testkit::fleet::revoke(&store, &text_policy(text), &opts(at), cluster);
    };
    let check = |at: OffsetDateTime, when: &str| {
        let refused =
            meshca_testkit::verify::refused_pairs(&dir, &meshca_testkit::fleet::peers(&store, &clusters, at), at);
        assert!(refused.is_empty(), "{when}: {refused:#?}");
    };
    revoke(quickstart, "c2", t);
    check(t, "after revoking c2 under the quickstart's root");

    let rotating = format!(
        "{quickstart}    rootRotation:\n      newMgmtServerCa:\n        secretRef: {{name: hsm-root}}\n        pkcs11:\n          \
         uri: pkcs11:token={token};object=root-2\n          pinSecretRef: {{name: hsm-pin}}\n      dwellHours: 1\n"
    );
    let mut phases: Vec<meshca_ops::rootrotation::PhaseName> = Vec::new();
    let mut end = None;
    let mut revoked_in_step_2 = false;
    for h in 1..20 {
        let at = t + time::Duration::hours(h) + time::Duration::seconds(h);
        if h == 3 && phases.last().map(ToString::to_string).as_deref() == Some("PropagatingIntermediates") {
            // During step 2: c1's intermediate (from the token-held root) is revoked; the new
            // root's CRL is signed through the token.
            revoke(&rotating, "c1", at);
            check(at, "revoked c1 in step 2");
            revoked_in_step_2 = true;
        }
        match run(&store, &rotating, module.clone(), at).unwrap() {
            Run::RootRotation(r) => {
                assert!(!r.failed(), "{r:?}");
                if phases.last() != Some(&r.now_phase) {
                    phases.push(r.now_phase);
                }
            }
            Run::Reconciled(report) => {
                assert!(report.ok(), "{report:?}");
                end = Some(at);
                break;
            }
        }
        check(at, &format!("hour {h}, {phases:?}"));
    }
    let at = end.unwrap_or_else(|| panic!("the rotation did not finish: {phases:?}"));
    assert_eq!(phases, ["AddingNewRoot", "PropagatingIntermediates", "DeletingOldRoot", "Complete"]);
    assert!(revoked_in_step_2);
    check(at, "after the rotation");
    // The set carries the token-held root's CRL, signed in the token, listing c1's revoked CA.
    let list = meshca_ops::revocation::load(&store, &text_policy(quickstart), "mgmt").unwrap().unwrap();
    let root_crl = list.crls().iter().find(|c| c.is_issued_by_name(new.bundle().root())).expect("the HSM root's CRL");
    root_crl.check(new.bundle().root(), at, "ca-crl.pem").unwrap();
    assert_eq!(root_crl.entries().len(), 1);
    assert!(list.crls().iter().all(|c| !c.is_issued_by_name(&old_root)));
    // The user points mgmtServerCa at the token-held root: revocation goes on through it.
    let moved = format!(
        "{}      secretRef: {{name: hsm-root}}\n      pkcs11:\n        uri: pkcs11:token={token};object=root-2\n        \
         pinSecretRef: {{name: hsm-pin}}\n",
        quickstart.replace("      generated: {}\n", "")
    );
    let Run::Reconciled(r) = run(&store, &moved, module.clone(), at).unwrap() else { panic!() };
    assert!(r.ok(), "{r:?}");
    let later = at + time::Duration::hours(1);
    revoke(&moved, "c3", later);
    check(later, "c3 revoked under the token-held root");
    let list = meshca_ops::revocation::load(&store, &text_policy(&moved), "mgmt").unwrap().unwrap();
    assert_eq!(list.list.revoked.len(), 2);
    assert_key_stays_in_token(hsm, &token, "root-2");
    assert!(!store.read(&mgmt("hsm-root")).unwrap().unwrap().contains(meshca::CA_KEY));
}

/// The error a run stopped with: its own, or the first cluster's in its report.
fn run_failure(r: Result<Run, Error>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(Run::Reconciled(report)) => {
            assert!(!report.ok(), "the run should have failed: {report:?}");
            format!("{report:?}")
        }
        Ok(other) => panic!("the run should have failed: {other:?}"),
    }
}

/// The issuance log's key in the token (spec.config.auditLog.pkcs11): generated there as an
/// Ed25519 key that stays in it, signing every checkpoint through CKM_EDDSA, its public half
/// read back without a PIN. Without a PIN, or with a key of another kind at the URI, the run
/// stops before any cluster is written: an issuance that cannot be logged does not happen.
#[test]
fn the_issuance_log_signs_every_checkpoint_with_an_ed25519_key_in_the_token() {
    use meshca_ops::audit;
    let Some(hsm) = softhsm("the_issuance_log_signs_every_checkpoint_with_an_ed25519_key_in_the_token") else {
        return;
    };
    let t = now();
    let token = hsm.new_token("log");
    let dir = tempdir("log-in-token");
    let store = DirStore::new(dir.join("store"));
    let root = SigningCa::generate_root(&RootParams::default(), &mut meshca::OsRng, t).unwrap();
    let signer = SecretRef::new("mgmt", "gloo-mesh", "my-root-trust-policy.gloo-mesh");
    store.write(&signer, &root.bundle().to_files(Layout::Istio), &WriteMeta::default()).unwrap();
    let with_key = |object: &str| {
        let text = format!(
            "{}    auditLog:\n      pkcs11:\n        uri: pkcs11:token={token};object={object}\n",
            policy::SEED_POLICY
        );
        policy::parse(&text, "policy.yaml").unwrap()
    };
    let run = |policy: &policy::Policy, token: TokenAccess| {
        let mut opts = Options::new(t, vec!["east".into(), "west".into()]);
        opts.token = token;
        reconcile::run(&store, policy, &opts, &mut meshca::OsRng, &mut |_, _| {})
    };
    let module_only = TokenAccess::new(Some(hsm.module.clone()), None);
    let with_pin = TokenAccess::new(Some(hsm.module.clone()), Some(Pin::new(PIN).unwrap()));
    let untouched = || {
        for c in ["east", "west"] {
            assert!(store.read(&SecretRef::cacerts(c)).unwrap().is_none(), "{c} was written without its log entry");
        }
    };

    // No PIN for the log key: nothing is logged, so nothing is written.
    let policy = with_key("audit-log");
    let e = run_failure(run(&policy, module_only.clone()));
    assert!(e.contains("spec.config.auditLog.pkcs11") && e.contains("no PIN"), "{e}");
    untouched();
    // An ECDSA key at the URI is not a log key.
    TokenKey::generate(&access(hsm, &token, "p256", PIN), KeyAlgorithm::EcdsaP256).unwrap();
    let e = run_failure(run(&with_key("p256"), with_pin.clone()));
    assert!(e.contains("not Ed25519"), "{e}");
    untouched();

    // With the PIN: the key is made in the token and signs the log of every CA written.
    let Run::Reconciled(report) = run(&policy, with_pin.clone()).unwrap() else { panic!("no rotation asked") };
    assert!(report.ok(), "{report:?}");
    assert_key_stays_in_token(hsm, &token, "audit-log");
    let key_secret = SecretRef::new("mgmt", "gloo-mesh", "root-trust-policy-audit-key");
    assert!(store.read(&key_secret).unwrap().is_none(), "a log key in a Secret was made beside the token's");
    assert!(audit::load_key(&store, &policy, "mgmt", true).unwrap_err().to_string().contains("PKCS#11 token"));
    // Anyone with the module reads the verifier key; no PIN.
    let vk = audit::verifier(&store, &policy, "mgmt", &module_only).unwrap();
    assert_eq!(vk.name(), "meshca.dev/gloo-mesh/root-trust-policy");
    let clusters = vec!["east".to_owned(), "west".to_owned()];
    let r = audit::verify(&store, &policy, "mgmt", &vk, &clusters, None).unwrap();
    assert!(r.ok() && r.unaccounted.is_empty(), "{r:?}");
    assert_eq!((r.entries, r.checkpoint.size), (3, 3), "the root and two intermediates");
    let (kept, _) = audit::checkpoint(&store, &policy, "mgmt", &vk).unwrap();
    // The token's public key object, read here through cryptoki, is the one the note names.
    let s = own_session(hsm, &token, false);
    let public =
        s.find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY), Attribute::Label(b"audit-log".to_vec())]).unwrap();
    let point = match s.get_attributes(public[0], &[AttributeType::EcPoint]).unwrap().pop() {
        Some(Attribute::EcPoint(p)) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(&point[point.len() - 32..], vk.public_key());

    // A later run that issues a new intermediate reopens the same key (no second one is made),
    // and the log stays consistent with the checkpoint kept.
    let mut later = Options::new(t + time::Duration::days(1), clusters.clone());
    later.token = with_pin.clone();
    let r = reconcile::run(&store, &policy, &later, &mut meshca::OsRng, &mut |_, _| {}).unwrap();
    let Run::Reconciled(report) = r else { panic!("no rotation asked") };
    assert!(report.ok(), "{report:?}");
    assert_eq!(audit::verifier(&store, &policy, "mgmt", &module_only).unwrap(), vk);
    let r = audit::verify(&store, &policy, "mgmt", &vk, &clusters, Some(kept.as_bytes())).unwrap();
    assert!(r.ok() && r.entries == 5 && r.since.is_some(), "{r:?}");
    // A key from anywhere else verifies nothing.
    let (stranger, _) = meshca::tlog::LogKey::generate(vk.name(), &mut meshca::OsRng).unwrap();
    assert!(audit::verify(&store, &policy, "mgmt", &stranger.verifier(), &clusters, None).is_err());

    // The key removed from the token: a run that would log is refused, and no new key takes
    // the old one's place (it could not sign on from the last checkpoint).
    let rw = own_session(hsm, &token, true);
    let label = [Attribute::Label(b"audit-log".to_vec())];
    for o in rw.find_objects(&label).unwrap() {
        rw.destroy_object(o).unwrap();
    }
    let before = meshca_testkit::snapshot(&dir.join("store"));
    let mut third = Options::new(t + time::Duration::days(2), clusters.clone());
    third.token = with_pin;
    let e = run_failure(reconcile::run(&store, &policy, &third, &mut meshca::OsRng, &mut |_, _| {}));
    assert!(e.contains("0 public key objects"), "{e}");
    assert!(rw.find_objects(&label).unwrap().is_empty(), "a new log key was made in the old one's place");
    assert_eq!(meshca_testkit::snapshot(&dir.join("store")), before, "a run that could not log changed the store");
}
