//! `cargo bench -p meshca-benches`: every operation a user waits on, and the floor they are
//! measured against (ring P-256 key generation + one ECDSA signature).
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use time::OffsetDateTime;

use meshca::{
    Cacerts, Csr, Current, IntermediateParams, KeyAlgorithm, Layout, LeafParams, PrivateKey, RootParams,
    RotationPolicy, SigningCa, SpiffeId,
};
use meshca_ops::policy;
use meshca_ops::reconcile::{self, Options, Report, Run};
use meshca_ops::store::{DirStore, SecretRef, Store, WriteMeta};

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn root(key: KeyAlgorithm) -> SigningCa {
    let mut p = RootParams::default();
    p.key = key;
    SigningCa::generate_root(&p, &mut meshca::OsRng, now()).unwrap()
}

fn inter(key: KeyAlgorithm) -> IntermediateParams {
    let mut p = IntermediateParams::new("cluster1");
    p.key = key;
    p
}

fn floor(c: &mut Criterion) {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let msg = [7u8; 600]; // about the size of a TBSCertificate
    c.bench_function("floor/ring_p256_keygen_plus_sign", |b| {
        b.iter(|| {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
            black_box(kp.sign(&rng, &msg).unwrap());
        })
    });
    // The same with AWS-LC, the generator and signer `meshca::OsRng` uses: the key is made and
    // signs without a PKCS#8 round trip. The lower of the two floors is the one to compare with.
    c.bench_function("floor/awslc_p256_keygen_plus_sign", |b| {
        use aws_lc_rs::signature::{EcdsaKeyPair as LcPair, ECDSA_P256_SHA256_ASN1_SIGNING as LC_P256};
        let lc_rng = aws_lc_rs::rand::SystemRandom::new();
        b.iter(|| {
            let kp = LcPair::generate(&LC_P256).unwrap();
            black_box(kp.sign(&lc_rng, &msg).unwrap());
        })
    });
}

/// What RSA and P-384 issuance cannot go below: AWS-LC generating the key (the generator
/// meshca::OsRng uses), no certificate.
fn keygen_floor(c: &mut Criterion) {
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_ASN1_SIGNING};
    c.bench_function("floor/awslc_p384_keygen", |b| {
        b.iter(|| black_box(EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).unwrap()))
    });
    let mut g = c.benchmark_group("floor_rsa");
    g.sample_size(30);
    g.bench_function("awslc_rsa2048_keygen", |b| b.iter(|| black_box(KeyPair::generate(KeySize::Rsa2048).unwrap())));
    g.bench_function("awslc_rsa4096_keygen", |b| b.iter(|| black_box(KeyPair::generate(KeySize::Rsa4096).unwrap())));
    g.finish();
}

fn issuance(c: &mut Criterion) {
    let mut g = c.benchmark_group("issue");
    g.bench_function("root_p256", |b| b.iter(|| black_box(root(KeyAlgorithm::EcdsaP256))));
    let p256 = root(KeyAlgorithm::EcdsaP256);
    for (name, key) in [("intermediate_p256", KeyAlgorithm::EcdsaP256), ("intermediate_p384", KeyAlgorithm::EcdsaP384)]
    {
        let params = inter(key);
        g.bench_function(name, |b| {
            b.iter(|| black_box(p256.issue_intermediate(&params, &mut meshca::OsRng, now()).unwrap()))
        });
    }
    let cluster = SigningCa::new(
        p256.issue_intermediate(&inter(KeyAlgorithm::EcdsaP256), &mut meshca::OsRng, now()).unwrap().value,
    );
    let leaf = LeafParams::new(SpiffeId::workload("cluster.local", "default", "app").unwrap());
    g.bench_function("leaf_p256", |b| {
        b.iter(|| black_box(cluster.issue_leaf(&leaf, &mut meshca::OsRng, now()).unwrap()))
    });
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256, &mut meshca::OsRng).unwrap();
    let csr = Csr::from_pem(Csr::generate_pem("edge", "Istio", &key).unwrap().as_bytes(), "csr").unwrap();
    let params = IntermediateParams::new("edge");
    g.bench_function("sign_csr_p256", |b| {
        b.iter(|| black_box(p256.sign_intermediate_csr(&csr, &params, &mut meshca::OsRng, now()).unwrap()))
    });
    g.finish();

    // RSA is slow: fewer samples (at least 30 keys each: the prime search varies a lot).
    let mut g = c.benchmark_group("issue_rsa");
    g.sample_size(30);
    let params = inter(KeyAlgorithm::Rsa4096);
    g.bench_function("intermediate_rsa4096", |b| {
        b.iter(|| black_box(p256.issue_intermediate(&params, &mut meshca::OsRng, now()).unwrap()))
    });
    let mut leaf_rsa = leaf.clone();
    leaf_rsa.key = KeyAlgorithm::Rsa2048;
    g.bench_function("leaf_rsa2048", |b| {
        b.iter(|| black_box(cluster.issue_leaf(&leaf_rsa, &mut meshca::OsRng, now()).unwrap()))
    });
    g.sample_size(10);
    g.bench_function("root_rsa4096", |b| b.iter(|| black_box(root(KeyAlgorithm::Rsa4096))));
    let rsa_root = root(KeyAlgorithm::Rsa4096);
    let params = inter(KeyAlgorithm::Rsa2048);
    g.bench_function("intermediate_rsa2048_under_rsa4096", |b| {
        b.iter(|| black_box(rsa_root.issue_intermediate(&params, &mut meshca::OsRng, now()).unwrap()))
    });
    g.finish();
}

fn validation_and_plan(c: &mut Criterion) {
    let r = root(KeyAlgorithm::EcdsaP256);
    let bundle = r.issue_intermediate(&inter(KeyAlgorithm::EcdsaP256), &mut meshca::OsRng, now()).unwrap().value;
    let files = bundle.to_files(Layout::Istio);
    c.bench_function("validate/bundle_parse_and_validate_p256", |b| {
        b.iter(|| black_box(Cacerts::from_files(black_box(&files), now()).unwrap()))
    });
    let policy = RotationPolicy::new(time::Duration::days(365), 0.1).unwrap();
    c.bench_function("plan/rotation_plan", |b| {
        b.iter(|| {
            black_box(meshca::plan(&policy, &r, "cluster1", Current::Valid(&bundle), &meshca::Facts::NONE, now()))
        })
    });
}

/// A directory store at `dir` holding the policy's signing CA (a new P-256 root).
fn signed_store(pol: &policy::Policy, dir: &std::path::Path) -> DirStore {
    let store = DirStore::new(dir);
    let (ns, name) = pol.signer.secret();
    let root_files = root(KeyAlgorithm::EcdsaP256).bundle().to_files(Layout::Istio);
    store.write(&SecretRef::new("mgmt", ns, name), &root_files, &WriteMeta::default()).unwrap();
    store
}

/// One reconcile run as the CLI and the controller do it (`reconcile::run`), expecting the
/// usual loop (no root rotation).
fn reconcile(store: &DirStore, pol: &policy::Policy, opts: &Options) -> Report {
    match reconcile::run(store, pol, opts, &mut meshca::OsRng, &mut |_, _| {}).unwrap() {
        Run::Reconciled(r) => r,
        Run::RootRotation(r) => panic!("no rotation was asked for: {r:?}"),
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn store_dir(base: &std::path::Path, tag: &str) -> PathBuf {
    let d = base.join(format!("meshca-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The disk the temp directory is on (every write fsynced), and tmpfs where available (fsync is
/// free there: what remains is meshca's own work).
fn store_bases() -> Vec<(&'static str, PathBuf)> {
    let mut v = vec![("reconcile_dir_store", std::env::temp_dir())];
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        v.push(("reconcile_dir_store_tmpfs", shm));
    }
    v
}

fn reconcile_clusters(c: &mut Criterion) {
    let pol = policy::parse(policy::SEED_POLICY, "policy.yaml").unwrap();
    for (group, base) in store_bases() {
        let mut g = c.benchmark_group(group);
        g.sample_size(10);
        for n in [10usize, 100, 1000] {
            let clusters: Vec<String> = (0..n).map(|i| format!("c{i:04}")).collect();
            g.throughput(Throughput::Elements(n as u64));
            // A first run: every cluster issued and written.
            g.bench_function(format!("issue_{n}"), |b| {
                b.iter_batched(
                    || signed_store(&pol, &store_dir(&base, &format!("issue{n}"))),
                    |store| {
                        let opts = Options::new(now(), clusters.clone());
                        let r = reconcile(&store, &pol, &opts);
                        assert!(r.ok());
                        // Returned, so criterion drops it (removing the store) outside the timing.
                        RemoveOnDrop(store.root().to_owned())
                    },
                    BatchSize::PerIteration,
                )
            });
            // A steady-state run: every cluster read, validated and kept.
            let dir = store_dir(&base, &format!("keep{n}"));
            let store = signed_store(&pol, &dir);
            let opts = Options::new(now(), clusters.clone());
            reconcile(&store, &pol, &opts);
            g.bench_function(format!("keep_{n}"), |b| b.iter(|| black_box(reconcile(&store, &pol, &opts))));
            let _ = std::fs::remove_dir_all(&dir);
        }
        g.finish();
    }
}

/// The first run of a policy-driven root rotation over 1,000 clusters on tmpfs: the rotation
/// starts and step 1 rewrites every cluster's `root-cert.pem` (old + new) around the same
/// intermediate, each bundle validated before it is written.
fn root_rotation(c: &mut Criterion) {
    let shm = PathBuf::from("/dev/shm");
    if !shm.is_dir() {
        return;
    }
    let base = policy::SEED_POLICY.replace("ttlDays: 1", "ttlDays: 30");
    let plain = policy::parse(&base, "policy.yaml").unwrap();
    let rotating = policy::parse(
        &format!("{base}    rootRotation:\n      newMgmtServerCa:\n        secretRef: {{name: new-ca}}\n"),
        "policy.yaml",
    )
    .unwrap();
    let n = 1000usize;
    let clusters: Vec<String> = (0..n).map(|i| format!("c{i:04}")).collect();
    let opts = Options::new(now(), clusters);
    let mut g = c.benchmark_group("root_rotation_tmpfs");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("start_and_step1_{n}"), |b| {
        b.iter_batched(
            || {
                let store = signed_store(&plain, &store_dir(&shm, "rotate"));
                reconcile(&store, &plain, &opts);
                let new = root(KeyAlgorithm::EcdsaP256).bundle().to_files(Layout::Istio);
                store.write(&SecretRef::new("mgmt", "gloo-mesh", "new-ca"), &new, &WriteMeta::default()).unwrap();
                store
            },
            |store| {
                let run = reconcile::run(&store, &rotating, &opts, &mut meshca::OsRng, &mut |_, _| {}).unwrap();
                let Run::RootRotation(r) = run else { panic!("the rotation must start") };
                assert!(!r.failed() && r.now_phase == "AddingNewRoot");
                RemoveOnDrop(store.root().to_owned())
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// `inspect` and `verify` of a 10,000-certificate trust bundle (the most certificates meshca reads
/// from one file): both must stay linear in the bundle's size.
fn large_trust_bundle(c: &mut Criterion) {
    let signer = root(KeyAlgorithm::EcdsaP256);
    let bundle = signer.issue_intermediate(&inter(KeyAlgorithm::EcdsaP256), &mut meshca::OsRng, now()).unwrap().value;
    let roots_pem = signer.bundle().root().to_pem().repeat(meshca::MAX_PEM_BLOCKS);
    let mut files = bundle.to_files(Layout::Istio);
    files.insert("root-cert.pem", roots_pem.clone().into_bytes());
    let mut g = c.benchmark_group("trust_bundle_10000");
    g.sample_size(10);
    g.throughput(Throughput::Elements(meshca::MAX_PEM_BLOCKS as u64));
    g.bench_function("inspect", |b| {
        b.iter(|| {
            let certs = meshca::parse_certificates(roots_pem.as_bytes(), "root-cert.pem").unwrap();
            let views: Vec<_> = certs.iter().map(|c| meshca_ops::describe::cert_view(c, now())).collect();
            // Who issued whom (the signature checks); the CLI draws the tree from it in linear
            // time (its render tests check that on 2,000 roots and a 13-deep chain).
            black_box((views, meshca_ops::describe::issuers(&certs)))
        })
    });
    g.bench_function("verify_bundle", |b| b.iter(|| black_box(Cacerts::from_files(&files, now()).unwrap())));
    g.finish();
}

/// The signing CA's key in SoftHSM2 (PKCS#11) against the same key type in memory: one P-256
/// intermediate each (the cluster's own key is generated in memory either way), and the floor,
/// one CKM_ECDSA signature through the token. Skipped when SoftHSM2 is not installed.
fn hsm(c: &mut Criterion) {
    use meshca_ops::pkcs11::{KeyAccess, KeyUri, Pin, TokenKey};
    let module = meshca_testkit::softhsm::module_path();
    let Some(module) = module else {
        eprintln!("SKIPPED hsm/*: SoftHSM2 is not installed (apt-get install softhsm2)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("meshca-bench-softhsm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\n", dir.join("tokens").display()),
    )
    .unwrap();
    // Before the module is loaded in this process: it reads the variable once.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let made = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "bench", "--so-pin", "so-1234", "--pin", "1234"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let access = KeyAccess {
        module,
        uri: KeyUri::parse("pkcs11:token=bench;object=root-ca").unwrap(),
        pin: Pin::new("1234").unwrap(),
    };
    let key = TokenKey::generate(&access, KeyAlgorithm::EcdsaP256).unwrap();
    let in_token =
        SigningCa::generate_root_with_key(&RootParams::default(), key.clone(), &mut meshca::OsRng, now()).unwrap();
    let in_memory = root(KeyAlgorithm::EcdsaP256);
    let params = inter(KeyAlgorithm::EcdsaP256);
    let mut g = c.benchmark_group("hsm");
    g.bench_function("intermediate_p256_key_in_memory", |b| {
        b.iter(|| black_box(in_memory.issue_intermediate(&params, &mut meshca::OsRng, now()).unwrap()))
    });
    g.bench_function("intermediate_p256_key_in_softhsm", |b| {
        b.iter(|| black_box(in_token.issue_intermediate(&params, &mut meshca::OsRng, now()).unwrap()))
    });
    let tbs = vec![0x5a; 600];
    g.bench_function("floor_softhsm_ecdsa_p256_sign", |b| {
        b.iter(|| black_box(meshca::ExternalKey::sign(key.as_ref(), &tbs).unwrap()))
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(
    benches,
    floor,
    keygen_floor,
    issuance,
    validation_and_plan,
    reconcile_clusters,
    root_rotation,
    large_trust_bundle,
    hsm
);
criterion_main!(benches);
