//! OpenBao's PKI as the signer, against a real `bao server -dev` on loopback (skipped, loudly,
//! when `bao` is not installed; `.ci/run` makes that a failure). Each test runs its own server.
//! Everything the PKI signs is checked by meshca's profile, then by rustls-webpki directly,
//! `openssl verify`, and real TLS handshakes between the clusters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use meshca::{Cacerts, Certificate};
use meshca_ops::context::ProviderAccess;
use meshca_ops::error::{Error, ErrorKind, ProviderFault};
use meshca_ops::policy;
use meshca_ops::reconcile::{self, Action, Intent, Options, Report, RotateNow, Run};
use meshca_ops::store::{DirStore, SecretRef, Store, WriteMeta};
use meshca_ops::vault::VaultToken;
use meshca_testkit::bao::{Bao, Fault, FaultProxy};
use meshca_testkit::tempdir;
use time::{Duration, OffsetDateTime};

const CLUSTERS: [&str; 3] = ["east", "west", "north"];

fn policy_text(addr: &str, extra: &str) -> String {
    format!(
        "apiVersion: meshca.dev/v1alpha1
kind: RootTrustPolicy
metadata:
  name: fleet
  namespace: gloo-mesh
spec:
  config:
    intermediateCertOptions:
      ttlDays: 30
      secretRotationGracePeriodRatio: 0.2
    mgmtServerCa:
      vault:
        address: {addr}
{extra}"
    )
}

fn opts(at: OffsetDateTime, token: Option<&str>) -> Options {
    let token = token.map(|t| VaultToken::from_bytes(t.as_bytes(), "test").unwrap());
    Options::new(at, CLUSTERS.map(String::from).to_vec()).provider(ProviderAccess::with_token(token))
}

fn run(store: &dyn Store, text: &str, opts: &Options) -> Result<Report, Error> {
    let policy = policy::parse(text, "policy.yaml").unwrap();
    match reconcile::run(store, &policy, opts, &mut meshca::OsRng, &mut |_, _| {})? {
        Run::Reconciled(r) => Ok(r),
        Run::RootRotation(_) => panic!("no root rotation was asked for"),
    }
}

fn bundles(store: &dyn Store, at: OffsetDateTime) -> Vec<Cacerts> {
    CLUSTERS
        .iter()
        .map(|c| Cacerts::from_files(&store.read(&SecretRef::cacerts(c)).unwrap().unwrap(), at).unwrap())
        .collect()
}

fn files(store: &dyn Store) -> Vec<Option<meshca::Files>> {
    CLUSTERS.iter().map(|c| store.read(&SecretRef::cacerts(c)).unwrap()).collect()
}

/// Workloads of every cluster complete mTLS with every other (real rustls handshakes), and each
/// leaf verifies with rustls-webpki directly and with `openssl verify` against every other
/// cluster's root-cert.pem.
fn interop(bundles: &[Cacerts], at: OffsetDateTime, tag: &str) {
    let named: Vec<(&str, &Cacerts)> = CLUSTERS.into_iter().zip(bundles).collect();
    meshca_ops::mtls::handshake_all_pairs(&named, &mut meshca::OsRng, at).unwrap();
    let dir = tempdir(tag);
    for (i, b) in bundles.iter().enumerate() {
        let id = meshca::SpiffeId::workload("cluster.local", "ns", "sa").unwrap();
        let leaf = meshca::SigningCa::new(b.clone())
            .issue_leaf(&meshca::LeafParams::new(id), &mut meshca::OsRng, at)
            .unwrap()
            .value;
        let other = &bundles[(i + 1) % bundles.len()];
        meshca_testkit::verify::webpki(&leaf.chain(), other.roots(), at).unwrap();
        let chain = leaf.chain();
        meshca_testkit::verify::openssl_verify_certs_at(&dir, &chain[0], &chain[1..], other.roots(), Some(at))
            .unwrap_or_else(|e| panic!("openssl verify: {e}"));
    }
}

fn root_of(pem: &str) -> Certificate {
    meshca::parse_certificates(pem.as_bytes(), "root").unwrap().remove(0)
}

#[test]
fn the_pki_signs_every_cluster_intermediate_and_meshca_keeps_no_ca_key() {
    let Some(bao) = Bao::start("the_pki_signs_every_cluster_intermediate_and_meshca_keeps_no_ca_key") else { return };
    let root = root_of(&bao.pki_root("pki", "Bao Root"));
    let token = bao.meshca_token("pki");
    let dir = tempdir("vault-clusters");
    let store = DirStore::new(dir.join("store"));
    let text = policy_text(&bao.addr, "");
    let t = OffsetDateTime::now_utc();

    // No token given and no auth in the policy: refused before anything is written.
    let e = run(&store, &text, &opts(t, None)).unwrap_err();
    assert!(matches!(e, Error::Provider { fault: ProviderFault::NoCredentials, .. }), "{e}");
    assert!(files(&store).iter().all(Option::is_none));

    // A dry run plans, and never asks the PKI to sign.
    let before = bao.issued("pki");
    let r = run(&store, &text, &opts(t, Some(&token)).dry_run(true)).unwrap();
    assert!(r.clusters.iter().all(|c| c.action == Action::WouldIssue), "{r:?}");
    assert_eq!(bao.issued("pki"), before, "a dry run issued a certificate at the PKI");

    let r = run(&store, &text, &opts(t, Some(&token))).unwrap();
    assert!(r.ok(), "{r:?}");
    assert!(r.clusters.iter().all(|c| c.action == Action::Issued), "{r:?}");
    assert!(r.signer.location.contains(&bao.addr), "{:?}", r.signer);
    assert_eq!(bao.issued("pki"), before + 3);
    let bs = bundles(&store, t);
    for (b, c) in bs.iter().zip(CLUSTERS) {
        assert_eq!(b.roots(), std::slice::from_ref(&root), "root-cert.pem is the PKI's root");
        assert_eq!(b.cert_chain().last(), Some(&root), "cert-chain.pem runs to the root");
        assert_eq!(b.ca_cert().ca_pathlen(), Some(Some(0)));
        assert_eq!(b.ca_cert().locality().as_deref(), Some(c));
        assert!(b.not_after() - b.ca_cert().not_before() >= Duration::days(30));
    }
    interop(&bs, t, "vault-clusters-verify");
    // No CA key above the clusters exists here: beside the clusters, only the PKI's public
    // issuer files are kept (to plan while it is down).
    let kept = store.read(&SecretRef::new("mgmt", "gloo-mesh", "fleet.gloo-mesh")).unwrap().unwrap();
    assert_eq!(
        kept.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        ["ca-cert.pem", "cert-chain.pem", "provider", "root-cert.pem"]
    );

    // The next run keeps them and asks the PKI nothing more.
    let r = run(&store, &text, &opts(t, Some(&token))).unwrap();
    assert!(r.clusters.iter().all(|c| c.action == Action::Kept), "{r:?}");
    assert_eq!(bao.issued("pki"), before + 3);

    // The token is never shown.
    let shown = format!("{r:?} {}", serde_json::to_string(&r).unwrap());
    assert!(!shown.contains(&token));
}

#[test]
fn a_provider_with_its_own_intermediate_and_approle_login() {
    let Some(bao) = Bao::start("a_provider_with_its_own_intermediate_and_approle_login") else { return };
    let root = root_of(&bao.pki_root("pki", "Bao Root"));
    let issuing = root_of(&bao.pki_intermediate("pki_int", "pki"));
    let (role_id, secret_id) = bao.approle("pki_int");
    let dir = tempdir("vault-approle");
    let store = DirStore::new(dir.join("store"));
    store
        .write(
            &SecretRef::new("mgmt", "gloo-mesh", "approle"),
            &[("secret-id", format!("{secret_id}\n"))].into_iter().collect(),
            &WriteMeta::default(),
        )
        .unwrap();
    let text = policy_text(
        &bao.addr,
        &format!(
            "        mount: pki_int
        auth:
          appRole:
            roleId: {role_id}
            secretIdSecretRef: {{name: approle, key: secret-id}}
"
        ),
    );
    let t = OffsetDateTime::now_utc();
    let r = run(&store, &text, &opts(t, None)).unwrap();
    assert!(r.ok() && r.clusters.iter().all(|c| c.action == Action::Issued), "{r:?}");
    let bs = bundles(&store, t);
    for b in &bs {
        assert_eq!(b.cert_chain().len(), 3, "cluster -> provider intermediate -> root");
        assert_eq!(b.cert_chain()[1], issuing);
        assert_eq!(b.roots(), std::slice::from_ref(&root));
    }
    interop(&bs, t, "vault-approle-verify");

    // A wrong secret ID: the login is refused, typed, and nothing changes.
    store
        .write(
            &SecretRef::new("mgmt", "gloo-mesh", "approle"),
            &[("secret-id", "not-the-secret-id")].into_iter().collect(),
            &WriteMeta::default(),
        )
        .unwrap();
    let before = files(&store);
    let r = run(&store, &text, &opts(t, None).intent(Intent::RotateNow(RotateNow::All))).unwrap();
    assert_eq!(r.provider_fault, Some(ProviderFault::PermissionDenied), "{r:?}");
    for c in &r.clusters {
        assert_eq!((c.action, c.error_kind), (Action::Failed, Some(ErrorKind::Provider)), "{c:?}");
        assert!(c.reason.contains("login (AppRole)") && !c.reason.contains("not-the-secret-id"), "{}", c.reason);
    }
    assert_eq!(files(&store), before);

    // A token in a Secret, with a mount that does not exist: typed, with the fix.
    let token_secret = |token: &str| {
        store
            .write(
                &SecretRef::new("mgmt", "gloo-mesh", "bao-token"),
                &[("token", token.to_owned())].into_iter().collect(),
                &WriteMeta::default(),
            )
            .unwrap()
    };
    token_secret(&bao.root_token);
    let text = policy_text(
        &bao.addr,
        "        mount: nope\n        auth:\n          tokenSecretRef: {name: bao-token, key: token}\n",
    );
    // (Another mount than the issuer kept: nothing to plan with, so the run stops.)
    let e = run(&store, &text, &opts(t, None)).unwrap_err();
    assert!(matches!(e, Error::Provider { fault: ProviderFault::NotFound, .. }), "{e}");
    assert!(!e.to_string().contains(&bao.root_token));
    // A token whose policy covers another mount: permission denied.
    let token = bao.meshca_token("pki_int");
    token_secret(&token);
    // (The issuer's certificates are public; the signature is what is denied, cluster by cluster.)
    let text = policy_text(&bao.addr, "        auth:\n          tokenSecretRef: {name: bao-token, key: token}\n");
    let r = run(&store, &text, &opts(t, None)).unwrap();
    for c in &r.clusters {
        assert_eq!((c.action, c.error_kind), (Action::Failed, Some(ErrorKind::Provider)), "{c:?}");
        assert!(c.reason.contains("permission denied") && c.reason.contains("sign-intermediate"), "{}", c.reason);
        assert!(!c.reason.contains(&token));
    }
    assert_eq!(files(&store), before);
}

#[test]
fn the_management_intermediate_is_signed_by_the_pki_and_renewed_before_its_grace_runs_out() {
    let Some(bao) =
        Bao::start("the_management_intermediate_is_signed_by_the_pki_and_renewed_before_its_grace_runs_out")
    else {
        return;
    };
    let root = root_of(&bao.pki_root("pki", "Bao Root"));
    let token = bao.meshca_token("pki");
    let dir = tempdir("vault-mgmt");
    let store = DirStore::new(dir.join("store"));
    let text = policy_text(&bao.addr, "        signs: managementIntermediate\n        ttlDays: 90\n");
    let mgmt = SecretRef::new("mgmt", "gloo-mesh", "fleet.gloo-mesh");
    let t = OffsetDateTime::now_utc();

    let r = run(&store, &text, &opts(t, Some(&token))).unwrap();
    assert!(r.ok() && r.clusters.iter().all(|c| c.action == Action::Issued), "{r:?}");
    assert!(r.notes.iter().any(|n| n.contains("renewed")), "{:?}", r.notes);
    let first = meshca::SigningCa::from_files(&store.read(&mgmt).unwrap().unwrap(), t).unwrap();
    let m = first.bundle().ca_cert();
    assert_eq!(m.ca_pathlen(), Some(Some(1)), "room for the cluster CAs below it");
    assert!(m.verify_signed_by(&root).is_ok());
    let bs = bundles(&store, t);
    for b in &bs {
        assert_eq!(b.cert_chain(), &[b.ca_cert().clone(), m.clone(), root.clone()]);
    }
    interop(&bs, t, "vault-mgmt-verify");

    // Halfway through its life: kept, nothing asked of the PKI.
    let issued = bao.issued("pki");
    let r = run(&store, &text, &opts(t + Duration::days(45), Some(&token))).unwrap();
    assert!(!r.notes.iter().any(|n| n.contains("renew")), "{:?}", r.notes);
    assert_eq!(bao.issued("pki"), issued);

    // With the PKI down when the renewal is due: the current one keeps signing, and says so.
    let proxy = FaultProxy::start(&bao.addr);
    let via_proxy = policy_text(&proxy.addr, "        signs: managementIntermediate\n        ttlDays: 90\n");
    proxy.set(Fault::Answer(503, r#"{"errors":["Vault is sealed"]}"#.into()));
    let at = t + Duration::days(80);
    let r = run(&store, &via_proxy, &opts(at, Some(&token))).unwrap();
    assert!(
        r.notes.iter().any(|n| n.contains("renewing the management intermediate failed") && n.contains("sealed")),
        "{:?}",
        r.notes
    );
    let kept = meshca::SigningCa::from_files(&store.read(&mgmt).unwrap().unwrap(), at).unwrap();
    assert_eq!(kept.bundle().ca_cert(), m);

    // Inside the grace (20% of 90 days) with the PKI back: a new key, signed by the PKI; the
    // clusters under the old one still verify against the same root.
    proxy.set(Fault::Pass);
    let r = run(&store, &via_proxy, &opts(at, Some(&token))).unwrap();
    assert!(r.notes.iter().any(|n| n.contains("was renewed")), "{:?}", r.notes);
    let renewed = meshca::SigningCa::from_files(&store.read(&mgmt).unwrap().unwrap(), at).unwrap();
    assert_ne!(renewed.bundle().ca_cert(), m);
    assert_ne!(renewed.bundle().ca_cert().public_key_raw(), m.public_key_raw(), "a new key each time");
    assert_eq!(bao.issued("pki"), issued + 1);
    let bs = bundles(&store, at);
    interop(&bs, at, "vault-mgmt-renewed-verify");
}

#[test]
fn a_provider_that_is_down_slow_sealed_or_wrong_leaves_every_bundle_as_it_was() {
    let Some(bao) = Bao::start("a_provider_that_is_down_slow_sealed_or_wrong_leaves_every_bundle_as_it_was") else {
        return;
    };
    bao.pki_root("pki", "Bao Root");
    // A role whose sign endpoint issues leaves: the server answers a CSR with a non-CA.
    bao.bao(&[
        "write",
        "pki/roles/leaf",
        "allow_any_name=true",
        "enforce_hostnames=false",
        "max_ttl=8760h",
        "key_type=any",
        "allowed_serial_numbers=*",
    ]);
    // The root token: the rewritten call needs more than meshca's policy allows.
    let token = bao.root_token.clone();
    let proxy = FaultProxy::start(&bao.addr);
    let dir = tempdir("vault-faults");
    let store = DirStore::new(dir.join("store"));
    let text = policy_text(&proxy.addr, "");
    let t = OffsetDateTime::now_utc();
    let r = run(&store, &text, &opts(t, Some(&token))).unwrap();
    assert!(r.ok(), "{r:?}");
    let before = files(&store);
    let rotate = || opts(t, Some(&token)).intent(Intent::RotateNow(RotateNow::All));

    // Signing answered by a leaf (a sign/<role> endpoint): refused by the profile check.
    proxy.set(Fault::Rewrite("/issuer/default/sign-intermediate".into(), "/sign/leaf".into()));
    let r = run(&store, &text, &rotate()).unwrap();
    for c in &r.clusters {
        assert_eq!(c.error_kind, Some(ErrorKind::Provider), "{c:?}");
        assert!(c.reason.contains("not a CA certificate"), "{}", c.reason);
    }
    assert_eq!(files(&store), before);

    // The PKI failing when the run starts: the run plans with the issuer as last read; the
    // clusters asked to rotate fail with the typed reason, the others are kept.
    let down = |fault: ProviderFault, what: &str| {
        let r = run(&store, &text, &rotate()).unwrap();
        assert_eq!(r.provider_fault, Some(fault), "{what}: {r:?}");
        for c in &r.clusters {
            assert_eq!((c.action, c.error_kind), (Action::Failed, Some(ErrorKind::Provider)), "{what}: {c:?}");
        }
        assert!(r.notes.iter().any(|n| n.contains("as last read")), "{what}: {:?}", r.notes);
        let r = run(&store, &text, &opts(t, Some(&token))).unwrap();
        assert!(r.clusters.iter().all(|c| c.action == Action::Kept), "{what}: {r:?}");
        assert_eq!(files(&store), before, "{what}");
    };
    proxy.set(Fault::Answer(500, r#"{"errors":["internal error"]}"#.into()));
    down(ProviderFault::ServerError, "5xx");
    proxy.set(Fault::Answer(200, "<html>a proxy's page</html>".into()));
    down(ProviderFault::BadAnswer, "not the API");

    // Sealed (the real server, sealed).
    proxy.set(Fault::Pass);
    bao.seal();
    down(ProviderFault::Sealed, "sealed");
    let r = run(&store, &text, &rotate()).unwrap();
    assert!(r.clusters[0].reason.contains("unseal"), "{}", r.clusters[0].reason);

    // Never reached, with nothing read before: the run stops, typed.
    let empty = DirStore::new(dir.join("empty"));
    let e = run(&empty, &text, &opts(t, Some(&token))).unwrap_err();
    assert!(matches!(e, Error::Provider { fault: ProviderFault::Sealed, .. }), "{e}");

    // Stopped mid-run: the issuer was read, then the server went away before signing.
    let mut bao = bao;
    drop(proxy);
    let bao2 = Bao::start("restart").unwrap();
    bao2.pki_root("pki", "Another Root");
    let token2 = bao2.meshca_token("pki");
    let proxy = FaultProxy::start(&bao2.addr);
    let text2 = policy_text(&proxy.addr, "");
    let dir2 = tempdir("vault-faults-2");
    let store2 = DirStore::new(dir2.join("store"));
    let o = opts(t, Some(&token2));
    let r = run(&store2, &text2, &o).unwrap();
    assert!(r.ok(), "{r:?}");
    let before2 = files(&store2);
    // The server answers the issuer read and one signature, then stops: one cluster is
    // re-issued (and verifies), the others fail typed and keep what they had.
    proxy.set(Fault::StopAfter(2));
    let r = run(&store2, &text2, &o.clone().intent(Intent::RotateNow(RotateNow::All))).unwrap();
    let rotated: Vec<_> = r.clusters.iter().filter(|c| c.action == Action::Rotated).collect();
    assert_eq!(rotated.len(), 1, "{r:?}");
    for c in r.clusters.iter().filter(|c| c.action != Action::Rotated) {
        assert_eq!((c.action, c.error_kind), (Action::Failed, Some(ErrorKind::Provider)), "{c:?}");
        assert!(c.reason.contains("unreachable") || c.reason.contains("bad answer"), "{}", c.reason);
    }
    let after = files(&store2);
    let changed = after.iter().zip(&before2).filter(|(a, b)| a != b).count();
    assert_eq!(changed, 1);
    interop(&bundles(&store2, t), t, "vault-midrun-verify");
    let before2 = after;
    proxy.set(Fault::Pass);
    let mut bao2 = bao2;
    bao2.stop();
    proxy.set(Fault::Pass);
    let r = run(&store2, &text2, &o.clone().intent(Intent::RotateNow(RotateNow::All))).unwrap();
    assert_eq!(r.provider_fault, Some(ProviderFault::Unreachable), "{r:?}");
    assert!(r.clusters.iter().all(|c| c.action == Action::Failed), "{r:?}");
    assert_eq!(files(&store2), before2);

    // Slow: the server accepts and never answers; the call times out (shortened here from 30 s).
    proxy.set(Fault::Hang);
    let mut o = o.intent(Intent::RotateNow(RotateNow::All));
    o.provider.call_timeout = Some(std::time::Duration::from_millis(500));
    let r = run(&store2, &text2, &o).unwrap();
    assert_eq!(r.provider_fault, Some(ProviderFault::Timeout), "{r:?}");
    assert!(r.clusters.iter().all(|c| c.action == Action::Failed), "{r:?}");
    assert_eq!(files(&store2), before2);
    bao.stop();
}

/// `signs: managementIntermediate` with `mgmtServerCa.pkcs11`: each renewal makes a new key in
/// the token (`LABEL-<time>`, never extractable), the PKI signs its CSR, and the Secret holds only
/// the public files and the key's URI.
#[test]
fn the_management_intermediate_key_is_made_in_the_token_at_each_renewal() {
    let test = "the_management_intermediate_key_is_made_in_the_token_at_each_renewal";
    let Some(hsm) = meshca_testkit::softhsm::softhsm(test) else { return };
    let Some(bao) = Bao::start(test) else { return };
    let root = root_of(&bao.pki_root("pki", "Bao Root"));
    let token = bao.meshca_token("pki");
    let label = hsm.new_token("mgmt-int");
    let dir = tempdir("vault-mgmt-hsm");
    let store = DirStore::new(dir.join("store"));
    store
        .write(
            &SecretRef::new("mgmt", "gloo-mesh", "hsm-pin"),
            &[("pin", meshca_testkit::softhsm::PIN)].into_iter().collect(),
            &WriteMeta::default(),
        )
        .unwrap();
    let text = policy_text(
        &bao.addr,
        &format!(
            "        signs: managementIntermediate\n        ttlDays: 90\n      pkcs11:\n        uri: \
             pkcs11:token={label};object=mgmt\n        pinSecretRef: {{name: hsm-pin}}\n"
        ),
    );
    let mgmt = SecretRef::new("mgmt", "gloo-mesh", "fleet.gloo-mesh");
    let with_token = |at: OffsetDateTime| {
        opts(at, Some(&token)).token(meshca_ops::reconcile::TokenAccess::new(Some(hsm.module.clone()), None))
    };
    let t = OffsetDateTime::now_utc();

    // Without the module the operator names, nothing is made or written.
    let e = run(&store, &text, &opts(t, Some(&token))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Hsm, "{e}");
    assert!(store.read(&mgmt).unwrap().is_none());

    let r = run(&store, &text, &with_token(t)).unwrap();
    assert!(r.ok() && r.clusters.iter().all(|c| c.action == Action::Issued), "{r:?}");
    let first = store.read(&mgmt).unwrap().unwrap();
    assert!(!first.contains(meshca::CA_KEY), "the key stays in the token");
    let uri = String::from_utf8(first.get("ca-key.uri").unwrap().to_vec()).unwrap();
    assert!(uri.starts_with(&format!("pkcs11:token={label};object=mgmt-")), "{uri}");
    let bs = bundles(&store, t);
    let m = meshca::parse_certificates(first.get(meshca::CA_CERT).unwrap(), "m").unwrap().remove(0);
    for b in &bs {
        assert_eq!(b.cert_chain(), &[b.ca_cert().clone(), m.clone(), root.clone()]);
    }
    interop(&bs, t, "vault-mgmt-hsm-verify");

    // A later run reads the key the Secret names, through the token.
    let r = run(&store, &text, &with_token(t + Duration::days(10))).unwrap();
    assert!(r.clusters.iter().all(|c| c.action == Action::Kept), "{r:?}");

    // Renewal: a new key in the token, a new URI; the clusters move to it and verify.
    let at = t + Duration::days(80);
    let r = run(&store, &text, &with_token(at)).unwrap();
    assert!(r.notes.iter().any(|n| n.contains("was renewed")), "{:?}", r.notes);
    let renewed = store.read(&mgmt).unwrap().unwrap();
    let uri2 = String::from_utf8(renewed.get("ca-key.uri").unwrap().to_vec()).unwrap();
    assert_ne!(uri, uri2);
    assert!(!renewed.contains(meshca::CA_KEY));
    interop(&bundles(&store, at), at, "vault-mgmt-hsm-renewed-verify");

    // A Secret whose ca-key.uri names some other key is refused, naming the file.
    let mut tampered = renewed.clone();
    tampered.insert("ca-key.uri", format!("pkcs11:token={label};object=root-ca\n").into_bytes());
    store.write(&mgmt, &tampered, &WriteMeta::default()).unwrap();
    let e = run(&store, &text, &with_token(at)).unwrap_err();
    assert!(e.to_string().contains("ca-key.uri does not name a key renewed"), "{e}");
}

/// Over TLS: the server's CA from `caCertSecretRef` is the only one trusted; without it (the
/// Mozilla set) the server's certificate is refused, typed, and nothing is written.
#[test]
fn tls_to_the_pki_trusts_the_ca_the_policy_names_and_nothing_else() {
    let Some(bao) = Bao::start_tls("tls_to_the_pki_trusts_the_ca_the_policy_names_and_nothing_else") else { return };
    assert!(bao.addr.starts_with("https://"));
    bao.pki_root("pki", "Bao Root");
    let token = bao.meshca_token("pki");
    let dir = tempdir("vault-tls");
    let store = DirStore::new(dir.join("store"));
    let t = OffsetDateTime::now_utc();

    let e = run(&store, &policy_text(&bao.addr, ""), &opts(t, Some(&token))).unwrap_err();
    assert!(matches!(e, Error::Provider { fault: ProviderFault::Unreachable, .. }), "{e}");
    assert!(e.to_string().contains("caCertSecretRef"), "the fix names the field: {e}");
    assert!(files(&store).iter().all(Option::is_none));

    let ca = std::fs::read(bao.ca_cert.as_ref().unwrap()).unwrap();
    store
        .write(
            &SecretRef::new("mgmt", "gloo-mesh", "bao-ca"),
            &[("ca.crt", ca)].into_iter().collect(),
            &WriteMeta::default(),
        )
        .unwrap();
    let text = policy_text(&bao.addr, "        caCertSecretRef: {name: bao-ca, key: ca.crt}\n");
    let r = run(&store, &text, &opts(t, Some(&token))).unwrap();
    assert!(r.ok() && r.clusters.iter().all(|c| c.action == Action::Issued), "{r:?}");
    interop(&bundles(&store, t), t, "vault-tls-verify");

    // Another CA in the Secret: refused again.
    let other = meshca::SigningCa::generate_root(&meshca::RootParams::default(), &mut meshca::OsRng, t).unwrap();
    store
        .write(
            &SecretRef::new("mgmt", "gloo-mesh", "bao-ca"),
            &[("ca.crt", other.bundle().root().to_pem())].into_iter().collect(),
            &WriteMeta::default(),
        )
        .unwrap();
    let r = run(&store, &text, &opts(t, Some(&token)).intent(Intent::RotateNow(RotateNow::All))).unwrap();
    assert_eq!(r.provider_fault, Some(ProviderFault::Unreachable), "{r:?}");
}

fn revoke_in(
    store: &dyn Store,
    text: &str,
    o: &Options,
    cluster: &str,
) -> Result<meshca_ops::revocation::RevocationReport, Error> {
    let policy = policy::parse(text, "policy.yaml").unwrap();
    meshca_ops::revocation::revoke(
        store,
        &policy,
        o,
        cluster,
        meshca::RevocationReason::KeyCompromise,
        &mut meshca::OsRng,
        &mut |_, _| {},
    )
}

fn current(store: &dyn Store, cluster: &str, at: OffsetDateTime) -> Cacerts {
    Cacerts::from_files(&store.read(&SecretRef::cacerts(cluster)).unwrap().unwrap(), at).unwrap()
}

/// The serials the CRL at `path` of the PKI lists (read with the bao CLI, not meshca).
fn pki_crl_serials(bao: &Bao, path: &str) -> Vec<Vec<u8>> {
    let pem = bao.bao(&["read", "-field=crl", path]);
    let crl = meshca::Crl::from_pem_all(pem.as_bytes(), path).unwrap().remove(0);
    crl.entries().iter().map(|r| meshca::canonical_serial(&r.serial).to_vec()).collect()
}

/// Revocation under a management intermediate the PKI signs: meshca signs the CRL of its
/// management intermediate, and the set carries the PKI's own CRL of the CA above it, fetched
/// from the issuer's CRL endpoint. Revoking the management intermediate itself is the PKI's
/// job: refused, with the OpenBao command.
#[test]
fn revocation_under_a_management_intermediate_carries_the_pkis_crl() {
    let Some(bao) = Bao::start("revocation_under_a_management_intermediate_carries_the_pkis_crl") else { return };
    let root = root_of(&bao.pki_root("pki", "Bao Root"));
    // The PKI's CRLs last 100 days here, so the runs below can look months ahead.
    bao.bao(&["write", "pki/config/crl", "expiry=2400h"]);
    bao.bao(&["read", "pki/crl/rotate"]);
    let token = bao.meshca_token("pki");
    let dir = tempdir("vault-mgmt-crl");
    let store = DirStore::new(dir.join("store"));
    let text = policy_text(&bao.addr, "        signs: managementIntermediate\n        ttlDays: 90\n");
    let t = OffsetDateTime::now_utc();
    assert!(run(&store, &text, &opts(t, Some(&token))).unwrap().ok());
    let west = current(&store, "west", t);
    let r = revoke_in(&store, &text, &opts(t, Some(&token)), "west").unwrap();
    assert!(r.run.ok(), "{r:?}");
    let crl = r.run.reconciled().unwrap().crl.clone().unwrap();
    assert_eq!(crl.upstream.len(), 1, "{crl:?}");
    assert!(crl.upstream[0].ca.contains("Bao Root") && crl.upstream[0].source.contains(&bao.addr), "{crl:?}");
    meshca_testkit::fleet::rehearse(&store, &dir, &CLUSTERS, &[("west".into(), west)], t, "revoked west");
    // The root's CRL in every bundle is the PKI's own (it verifies under the root).
    let set = store.read(&SecretRef::cacerts("east")).unwrap().unwrap();
    let crls = meshca::Crl::from_pem_all(set.get(meshca::CA_CRL).unwrap(), "ca-crl.pem").unwrap();
    crls.iter().find(|c| c.is_issued_by_name(&root)).unwrap().check(&root, t, "root CRL").unwrap();
    // The management intermediate itself: the PKI's to revoke.
    let m = meshca::SigningCa::from_files(
        &store.read(&SecretRef::new("mgmt", "gloo-mesh", "fleet.gloo-mesh")).unwrap().unwrap(),
        t,
    )
    .unwrap();
    let serial: String =
        meshca::canonical_serial(m.bundle().ca_cert().serial_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let policy = policy::parse(&text, "policy.yaml").unwrap();
    let e = meshca_ops::revocation::revoke_ca(
        &store,
        &policy,
        &opts(t, Some(&token)),
        "east",
        &meshca_ops::revocation::Target::Serial(serial),
        meshca::RevocationReason::KeyCompromise,
        &mut meshca::OsRng,
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bao write pki/revoke serial_number=") && e.contains("is the signing CA"), "{e}");
    // Months of runs every three days: the management intermediate is renewed (at 90% of its
    // 90 days) with CRLs in use. The old one's CRL stands until it lapses, with its entries;
    // then they go. Every run is rehearsed.
    let entries = || meshca_ops::revocation::load(&store, &policy, "mgmt").unwrap().unwrap().list.revoked.len();
    let mut renewed_at = None;
    // (OpenBao dates what it signs from the real clock: its certificates end 90 real days on.)
    for day in (3..=87).step_by(3) {
        let at = t + Duration::days(day);
        let r = run(&store, &text, &opts(at, Some(&token))).unwrap();
        assert!(r.ok(), "day {day}: {r:?}");
        meshca_testkit::fleet::rehearse(&store, &dir, &CLUSTERS, &[], at, &format!("day {day}"));
        if renewed_at.is_none() && r.notes.iter().any(|n| n.contains("was renewed")) {
            renewed_at = Some(day);
            assert_eq!(entries(), 1, "the old management intermediate's CRL still stands");
        }
        if renewed_at.is_some_and(|d| day > d + 8) {
            assert_eq!(entries(), 0, "day {day}: the old CRL lapsed, and its entries with it");
        }
    }
    assert!(renewed_at.is_some_and(|d| d < 88), "{renewed_at:?}");
}

/// `signs: clusters`: the CRL that revokes a cluster intermediate is the PKI's. meshca revokes
/// it there and publishes the issuer's CRL, checked to list it; a dry run revokes nothing at
/// the PKI; a PKI's revocation cannot be taken back.
#[test]
fn with_the_pki_signing_every_cluster_a_revocation_is_made_at_the_pki() {
    let Some(bao) = Bao::start("with_the_pki_signing_every_cluster_a_revocation_is_made_at_the_pki") else { return };
    let root = root_of(&bao.pki_root("pki", "Bao Root"));
    let token = bao.meshca_token("pki");
    let dir = tempdir("vault-clusters-crl");
    let store = DirStore::new(dir.join("store"));
    let text = policy_text(&bao.addr, "");
    let t = OffsetDateTime::now_utc();
    assert!(run(&store, &text, &opts(t, Some(&token))).unwrap().ok());
    let east = current(&store, "east", t);
    let serial = meshca::canonical_serial(east.ca_cert().serial_bytes()).to_vec();
    let r = revoke_in(&store, &text, &opts(t, Some(&token)).dry_run(true), "east").unwrap();
    assert!(r.run.ok(), "{r:?}");
    assert!(!pki_crl_serials(&bao, "pki/issuer/default/crl").contains(&serial), "a dry run revoked at the PKI");
    let r = revoke_in(&store, &text, &opts(t, Some(&token)), "east").unwrap();
    assert!(r.run.ok(), "{r:?}");
    assert!(pki_crl_serials(&bao, "pki/issuer/default/crl").contains(&serial), "the PKI's CRL lists east's CA");
    // The PKI signed its CRL at its clock, seconds after `t` (the run re-issued east first):
    // taken, and from here on checked when it is read.
    let t = OffsetDateTime::now_utc();
    assert_ne!(current(&store, "east", t).ca_cert(), east.ca_cert(), "east was re-issued by the PKI");
    meshca_testkit::fleet::rehearse(&store, &dir, &CLUSTERS, &[("east".into(), east)], t, "revoked east");
    let set = store.read(&SecretRef::cacerts("west")).unwrap().unwrap();
    let crls = meshca::Crl::from_pem_all(set.get(meshca::CA_CRL).unwrap(), "ca-crl.pem").unwrap();
    let root_crl = crls.iter().find(|c| c.is_issued_by_name(&root)).unwrap();
    root_crl.check(&root, t, "root CRL").unwrap();
    assert!(root_crl.entries().iter().any(|e| meshca::canonical_serial(&e.serial) == serial.as_slice()));
    let policy = policy::parse(&text, "policy.yaml").unwrap();
    let e = meshca_ops::revocation::unrevoke(
        &store,
        &policy,
        &opts(t, Some(&token)),
        &meshca_ops::revocation::Selector::Cluster("east".into()),
        &mut meshca::OsRng,
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("cannot be taken back"), "{e}");
}

/// The migration users need most, to their PKI: from the quickstart's root in a Secret to a
/// root the PKI holds (`newMgmtServerCa.vault`), by the three steps, with a revocation before
/// the rotation and one during it, the rehearsal check at every step. First the way back
/// (withdrawn in step 2, the PKI signing every cluster), then all the way to a management
/// intermediate the PKI signs.
#[test]
fn the_quickstart_root_moves_to_the_pki_and_back_and_then_for_good() {
    let Some(bao) = Bao::start("the_quickstart_root_moves_to_the_pki_and_back_and_then_for_good") else { return };
    let pki_root = root_of(&bao.pki_root("pki", "Bao Root"));
    let token = bao.meshca_token("pki");
    let t = OffsetDateTime::now_utc();
    let quickstart = meshca_testkit::fleet::GENERATED_ROOT_POLICY;
    let rotating = |signs: &str| {
        format!(
            "{quickstart}    rootRotation:\n      newMgmtServerCa:\n        secretRef: {{name: bao-ca}}\n        vault:\n          \
             address: {}\n          signs: {signs}\n          ttlDays: 90\n      dwellHours: 1\n",
            bao.addr
        )
    };
    let at = |h: i64| t + Duration::hours(h) + Duration::seconds(h);
    for (signs, withdraw) in [("clusters", true), ("managementIntermediate", false)] {
        let dir = tempdir(&format!("vault-migrate-{signs}"));
        let store = DirStore::new(dir.join("store"));
        let o = |h: i64| opts(at(h), Some(&token));
        let mut revoked = vec![("north".to_owned(), {
            assert!(run(&store, quickstart, &o(0)).unwrap().ok());
            current(&store, "north", at(0))
        })];
        assert!(revoke_in(&store, quickstart, &o(0), "north").unwrap().run.ok());
        let old_root = current(&store, "east", at(0)).root().clone();
        let text = rotating(signs);
        let policy = policy::parse(&text, "policy.yaml").unwrap();
        let mut phases: Vec<String> = Vec::new();
        let mut finished = false;
        for h in 1..20 {
            let before = meshca_testkit::fleet::roots(&store, &CLUSTERS, at(h - 1));
            // Withdrawn (rootRotation removed) once east was revoked in step 2.
            let policy_now = if withdraw && revoked.len() == 2 {
                policy::parse(quickstart, "policy.yaml").unwrap()
            } else {
                policy.clone()
            };
            match reconcile::run(&store, &policy_now, &o(h), &mut meshca::OsRng, &mut |_, _| {}).unwrap() {
                Run::RootRotation(r) => {
                    assert!(!r.failed(), "{signs}, hour {h}: {r:?}");
                    if phases.last() != Some(&r.now_phase.to_string()) {
                        phases.push(r.now_phase.to_string());
                    }
                }
                Run::Reconciled(r) => {
                    assert!(r.ok(), "{signs}, hour {h}: {r:?}");
                    finished = true;
                }
            }
            if phases.last().map(String::as_str) == Some("PropagatingIntermediates") && revoked.len() == 1 {
                // In step 2: east's intermediate (from the PKI-held CA) is revoked.
                revoked.push(("east".into(), current(&store, "east", at(h))));
                assert_eq!(revoked[1].1.root(), &pki_root);
                let r = revoke_in(&store, &text, &o(h), "east").unwrap();
                assert!(matches!(r.run, Run::RootRotation(_)) && r.run.ok(), "{signs}: {r:?}");
            }
            let when = format!("{signs}, hour {h}, {phases:?}");
            meshca_testkit::fleet::rehearse(&store, &dir, &CLUSTERS, &revoked, at(h), &when);
            let now_roots = meshca_testkit::fleet::roots(&store, &CLUSTERS, at(h));
            meshca_testkit::fleet::assert_roots_only_grow_or_shrink(&before, &now_roots, &when);
            if finished {
                break;
            }
        }
        assert!(finished, "{signs}: {phases:?}");
        let expected = if withdraw {
            vec![
                "AddingNewRoot",
                "PropagatingIntermediates",
                "RollingBackIntermediates",
                "RollingBackRoot",
                "RolledBack",
            ]
        } else {
            vec!["AddingNewRoot", "PropagatingIntermediates", "DeletingOldRoot", "Complete"]
        };
        assert_eq!(phases, expected, "{signs}");
        let end_root = if withdraw { &old_root } else { &pki_root };
        for c in CLUSTERS {
            let b = current(&store, c, at(19));
            assert_eq!(b.roots(), std::slice::from_ref(end_root), "{signs}: {c}");
        }
    }
}

/// The other way: from a root the PKI holds (the PKI signing every cluster, or a management
/// intermediate) to a root in a Secret, with a cluster revoked before the rotation; the
/// rehearsal check at every step, and the PKI's CRLs and revocations gone with its root.
#[test]
fn the_root_moves_out_of_the_pki_into_a_secret() {
    let Some(bao) = Bao::start("the_root_moves_out_of_the_pki_into_a_secret") else { return };
    let pki_root = root_of(&bao.pki_root("pki", "Bao Root"));
    let token = bao.meshca_token("pki");
    for signs in ["clusters", "managementIntermediate"] {
        leave_the_pki(&bao, &pki_root, &token, signs);
    }
}

fn leave_the_pki(bao: &Bao, pki_root: &Certificate, token: &str, signs: &str) {
    let token = token.to_owned();
    let dir = tempdir(&format!("vault-leave-{signs}"));
    let store = DirStore::new(dir.join("store"));
    let t = OffsetDateTime::now_utc();
    let at = |h: i64| t + Duration::hours(h) + Duration::seconds(h);
    let mut p = meshca::RootParams::default();
    p.common_name = "Own Root".into();
    let own = meshca::SigningCa::generate_root(&p, &mut meshca::OsRng, t).unwrap();
    store
        .write(
            &SecretRef::new("mgmt", "gloo-mesh", "own-ca"),
            &own.bundle().to_files(meshca::Layout::Istio),
            &WriteMeta::default(),
        )
        .unwrap();
    let text = policy_text(&bao.addr, &format!("        signs: {signs}\n        ttlDays: 90\n"));
    assert!(run(&store, &text, &opts(t, Some(&token))).unwrap().ok());
    let revoked = vec![("west".to_owned(), current(&store, "west", t))];
    assert!(revoke_in(&store, &text, &opts(t, Some(&token)), "west").unwrap().run.ok());
    let rotating = format!(
        "{text}    rootRotation:\n      newMgmtServerCa:\n        secretRef: {{name: own-ca}}\n      dwellHours: 1\n"
    );
    let policy = policy::parse(&rotating, "policy.yaml").unwrap();
    let mut phases: Vec<String> = Vec::new();
    for h in 1..20 {
        let before = meshca_testkit::fleet::roots(&store, &CLUSTERS, at(h - 1));
        let done = match reconcile::run(&store, &policy, &opts(at(h), Some(&token)), &mut meshca::OsRng, &mut |_, _| {})
            .unwrap()
        {
            Run::RootRotation(r) => {
                assert!(!r.failed(), "{signs}, hour {h}: {r:?}");
                if phases.last() != Some(&r.now_phase.to_string()) {
                    phases.push(r.now_phase.to_string());
                }
                false
            }
            Run::Reconciled(r) => {
                assert!(r.ok(), "{r:?}");
                true
            }
        };
        let when = format!("{signs}, hour {h}, {phases:?}");
        meshca_testkit::fleet::rehearse(&store, &dir, &CLUSTERS, &revoked, at(h), &when);
        let now_roots = meshca_testkit::fleet::roots(&store, &CLUSTERS, at(h));
        meshca_testkit::fleet::assert_roots_only_grow_or_shrink(&before, &now_roots, &when);
        if done {
            break;
        }
    }
    assert_eq!(phases, ["AddingNewRoot", "PropagatingIntermediates", "DeletingOldRoot", "Complete"]);
    let list = meshca_ops::revocation::load(&store, &policy, "mgmt").unwrap().unwrap();
    assert!(list.list.revoked.is_empty(), "the PKI's revocations left with its root");
    assert!(list.crls().iter().all(|c| !c.is_issued_by_name(pki_root)), "{signs}");
    for c in CLUSTERS {
        assert_eq!(current(&store, c, at(19)).roots(), std::slice::from_ref(own.bundle().root()));
    }
}
