//! Root rotation rehearsed with `--at` on the directory store: at every step (and with one
//! cluster a step ahead), a workload of any cluster completes a real mutual-TLS handshake
//! (rustls) with a workload of every other, and `openssl verify` agrees.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use meshca::Cacerts;
use meshca_ops::policy::SEED_POLICY;
use meshca_testkit::verify::OpensslVerify;

const BIN: &str = env!("CARGO_BIN_EXE_meshca");

fn run(args: &[&str]) -> (i32, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
    )
}

fn ok(args: &[&str]) -> String {
    let (code, out) = run(args);
    assert_eq!(code, 0, "meshca {args:?}\n{out}");
    out
}

fn at(hours: i64) -> String {
    // A fixed day, so the rehearsal does not depend on the clock.
    let t = time::OffsetDateTime::from_unix_timestamp(1_893_456_000).unwrap() + time::Duration::hours(hours);
    meshca::format_time(t)
}

struct Setup {
    dir: PathBuf,
    store: String,
    policy: String,
    new_ca: String,
}

fn setup(tag: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("meshca-rotate-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("store");
    ok(&["root-ca", "--out", store.join("mgmt/gloo-mesh/my-root-trust-policy.gloo-mesh").to_str().unwrap()]);
    ok(&["root-ca", "--out", dir.join("new-root").to_str().unwrap(), "--cn", "Root CA 2"]);
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, SEED_POLICY.replace("ttlDays: 1", "ttlDays: 30")).unwrap();
    let new_ca = dir.join("new-root").to_str().unwrap().to_owned();
    Setup { store: store.to_str().unwrap().to_owned(), policy: policy.to_str().unwrap().to_owned(), new_ca, dir }
}

/// `rotate-root start` to the set-up's second root, with a one-hour dwell.
fn start_args(s: &Setup) -> Vec<&str> {
    let new_ca = s.new_ca.as_str();
    vec!["rotate-root", "start", "--policy", &s.policy, "--store", &s.store, "--new-ca", new_ca, "--dwell-hours", "1"]
}

fn reconcile(s: &Setup, clusters: &[&str], hours: i64) -> String {
    let mut args = vec!["reconcile", "--policy", &s.policy, "--store", &s.store];
    for c in clusters {
        args.extend(["--cluster", c]);
    }
    let when = at(hours);
    args.extend(["--at", &when]);
    ok(&args)
}

fn bundle(s: &Setup, cluster: &str, hours: i64) -> Cacerts {
    let dir = Path::new(&s.store).join(cluster).join("istio-system/cacerts");
    let files = meshca_ops::fs::read_files(&dir).unwrap();
    let now = time::OffsetDateTime::parse(&at(hours), &time::format_description::well_known::Rfc3339).unwrap();
    Cacerts::from_files(&files, now).unwrap()
}

/// Real handshakes (rustls) between workloads of every pair of clusters, each side trusting
/// only its own cluster's root-cert.pem; and `openssl verify` of each leaf against every other
/// cluster's root-cert.pem.
fn assert_all_pairs_talk(s: &Setup, clusters: &[&str], hours: i64, when: &str) {
    let bundles: Vec<Cacerts> = clusters.iter().map(|c| bundle(s, c, hours)).collect();
    let now = time::OffsetDateTime::parse(&at(hours), &time::format_description::well_known::Rfc3339).unwrap();
    let named: Vec<(&str, &Cacerts)> = clusters.iter().copied().zip(&bundles).collect();
    // A real TLS 1.3 handshake per ordered pair, each side trusting only its own root-cert.pem,
    // both verifying certificates at the rehearsal time.
    let leaves = meshca_ops::mtls::handshake_all_pairs(&named, &mut meshca::OsRng, now)
        .unwrap_or_else(|e| panic!("{when}: {e}"));
    for (i, leaf) in leaves.iter().enumerate() {
        assert_eq!(leaf.cert().uri_sans(), [format!("spiffe://cluster.local/ns/default/sa/{}", clusters[i])]);
        for (j, b) in bundles.iter().enumerate() {
            if i != j {
                openssl_verify(s, leaf, b, when);
            }
        }
    }
}

fn openssl_verify(s: &Setup, leaf: &meshca::Leaf, trust: &Cacerts, when: &str) {
    if !meshca_testkit::verify::openssl_available() {
        return;
    }
    let chain = s.dir.join("leaf-chain.pem");
    let roots = s.dir.join("trust.pem");
    std::fs::write(&chain, leaf.cert_chain_pem()).unwrap();
    std::fs::write(&roots, trust.roots().iter().map(meshca::Certificate::to_pem).collect::<String>()).unwrap();
    let at = leaf.cert().not_before() + time::Duration::minutes(10);
    let verdict = OpensslVerify::new(&chain).at(at).roots(&roots).untrusted(&chain).run();
    verdict.unwrap_or_else(|e| panic!("{when}: openssl: {e}"));
}

#[test]
fn a_rehearsed_rotation_never_breaks_a_handshake() {
    let s = setup("full");
    let all = ["c1", "c2", "c3"];
    reconcile(&s, &all, 0);
    ok(&start_args(&s));
    // A second start while one is under way is refused.
    assert_eq!(run(&start_args(&s)).0, 1);
    let mut hours = 0;
    for (i, phase) in ["AddingNewRoot", "PropagatingIntermediates", "DeletingOldRoot"].into_iter().enumerate() {
        // c1 goes first (a mix of neighbouring steps), then the rest. After the first step, the
        // run that finds the dwell over begins the next step at once.
        let out = reconcile(&s, &["c1"], hours);
        if i > 0 {
            assert!(out.contains(&format!("advanced to {phase}")), "{out}");
        }
        assert!(out.contains(&format!("now in phase {phase}")), "{out}");
        // The other clusters are waited for even when this run names only c1 (and `start` was
        // given no --cluster): the store shows they hold a cacerts.
        assert!(out.contains("waiting for c2, c3"), "{out}");
        assert_all_pairs_talk(&s, &all, hours, &format!("{phase}, c1 ahead"));
        let out = reconcile(&s, &all, hours);
        assert!(out.contains("every cluster is done"), "{out}");
        assert_all_pairs_talk(&s, &all, hours, phase);
        // Idempotent: the same run again changes nothing.
        let before = std::fs::read(Path::new(&s.store).join("c2/istio-system/cacerts/root-cert.pem")).unwrap();
        let again = reconcile(&s, &all, hours);
        assert_eq!(again.matches("  done").count(), 3, "{again}");
        assert_eq!(std::fs::read(Path::new(&s.store).join("c2/istio-system/cacerts/root-cert.pem")).unwrap(), before);
        hours += 2;
    }
    let out = reconcile(&s, &all, hours);
    assert!(out.contains("finished (Complete)"), "{out}");
    let final_bundle = bundle(&s, "c1", hours);
    assert_eq!(final_bundle.roots().len(), 1);
    assert_eq!(final_bundle.root().common_name().as_deref(), Some("Root CA 2"));
    // Afterwards the ordinary reconcile continues under the new root.
    let out = reconcile(&s, &all, hours);
    assert!(out.contains("3 clusters: 3 kept."), "{out}");
    std::fs::remove_dir_all(&s.dir).unwrap();
}

#[test]
fn rollback_resume_and_refusals() {
    let s = setup("rollback");
    let all = ["c1", "c2"];
    reconcile(&s, &all, 0);
    // The same root is no rotation.
    let same = Path::new(&s.store).join("mgmt/gloo-mesh/my-root-trust-policy.gloo-mesh");
    let (code, out) =
        run(&["rotate-root", "start", "--policy", &s.policy, "--store", &s.store, "--new-ca", same.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("same root"), "{out}");
    ok(&start_args(&s));

    // A write fails for c2 (its Secret path is a file): c1 converges, the step waits for c2.
    let c2 = Path::new(&s.store).join("c2/istio-system/cacerts");
    let saved = s.dir.join("c2-saved");
    std::fs::rename(&c2, &saved).unwrap();
    std::fs::write(&c2, b"broken").unwrap();
    let (code, out) = run(&[
        "reconcile",
        "--policy",
        &s.policy,
        "--store",
        &s.store,
        "--cluster",
        "c1",
        "--cluster",
        "c2",
        "--at",
        &at(0),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("waiting for c2"), "{out}");
    // Put it back: the next run resumes where the last stopped.
    std::fs::remove_file(&c2).unwrap();
    std::fs::rename(&saved, &c2).unwrap();
    let out = reconcile(&s, &all, 0);
    assert!(out.contains("c1           done") && out.contains("c2           converged"), "{out}");
    // Step 2 begins with a run naming only c1: c1 gets its new intermediate, c2 is waited for.
    let out = reconcile(&s, &["c1"], 1);
    assert!(out.contains("advanced to PropagatingIntermediates; waiting for c2"), "{out}");

    // A cluster that left the mesh would hold every step back; forget drops it.
    let c9 = Path::new(&s.store).join("c9/istio-system/cacerts");
    std::fs::create_dir_all(c9.parent().unwrap()).unwrap();
    let out = reconcile(&s, &["c9"], 1);
    assert!(out.contains("waiting for"), "{out}");
    let forget = ["rotate-root", "forget", "--policy", &s.policy, "--store", &s.store, "--cluster", "c9"];
    let (code, out) = run(&forget);
    assert!(code == 1 && out.contains("c9 still holds a cacerts"), "{out}");
    std::fs::remove_dir_all(Path::new(&s.store).join("c9")).unwrap();
    let out = reconcile(&s, &all, 1);
    assert!(out.contains("waiting for c9"), "{out}");
    assert!(ok(&forget).contains("forgot c9"), "forget");
    assert!(ok(&forget).contains("not known"), "forget twice");
    let out = reconcile(&s, &all, 1);
    assert!(!out.contains("c9"), "{out}");

    // Roll back before step 3: intermediates from the old signer, then the new root removed.
    ok(&["rotate-root", "rollback", "--policy", &s.policy, "--store", &s.store]);
    for h in 2..6 {
        reconcile(&s, &all, h);
        assert_all_pairs_talk(&s, &all, h, &format!("rollback +{h}h"));
    }
    let b = bundle(&s, "c1", 5);
    assert_eq!(b.roots().len(), 1);
    assert_eq!(b.root().common_name().as_deref(), Some("Root CA"));
    let (_, status) = run(&["rotate-root", "status", "--policy", &s.policy, "--store", &s.store]);
    assert!(status.contains("RolledBack"), "{status}");
    std::fs::remove_dir_all(&s.dir).unwrap();
}

#[test]
fn one_policy_change_rotates_the_root_by_itself() {
    let s = setup("policy");
    let all = ["c1", "c2", "c3"];
    reconcile(&s, &all, 0);
    let incoming = Path::new(&s.store).join("mgmt/gloo-mesh/root-ca-2");
    ok(&["root-ca", "--out", incoming.to_str().unwrap(), "--cn", "Root CA 2"]);
    let mut text = std::fs::read_to_string(&s.policy).unwrap();
    text.push_str(
        "    rootRotation:\n      newMgmtServerCa:\n        secretRef: {name: root-ca-2}\n      dwellHours: 1\n",
    );
    std::fs::write(&s.policy, text).unwrap();
    let status = || ok(&["rotate-root", "status", "--policy", &s.policy, "--store", &s.store]);
    assert!(status().contains("the next `meshca reconcile` starts"), "{}", status());

    let out = reconcile(&s, &["c1"], 1);
    assert!(out.contains("root rotation started by spec.config.rootRotation"), "{out}");
    assert!(status().contains("started by spec.config.rootRotation"), "{}", status());
    let mut phases = Vec::new();
    for hours in 1..12 {
        // c1 first, then every cluster: at each point all pairs still talk.
        let first = reconcile(&s, &["c1"], hours);
        assert_all_pairs_talk(&s, &all, hours, &format!("+{hours}h, c1 ahead"));
        let out = reconcile(&s, &all, hours);
        assert_all_pairs_talk(&s, &all, hours, &format!("+{hours}h"));
        for p in [&first, &out].iter().filter_map(|o| o.lines().find_map(|l| l.split("now in phase ").nth(1))) {
            if phases.last().map(String::as_str) != Some(p) {
                phases.push(p.to_owned());
            }
        }
        if !out.contains("now in phase") {
            // The usual loop again, signing with the CA the policy named.
            assert!(out.contains("3 clusters: 3 kept."), "{out}");
            assert!(out.contains("root-ca-2"), "{out}");
            assert!(out.contains("point spec.config.mgmtServerCa at it"), "{out}");
            break;
        }
    }
    assert_eq!(phases, ["AddingNewRoot", "PropagatingIntermediates", "DeletingOldRoot", "Complete"]);
    assert_eq!(bundle(&s, "c3", 12).root().common_name().as_deref(), Some("Root CA 2"));
    std::fs::remove_dir_all(&s.dir).unwrap();
}

/// The README's "Rotating the root" walkthrough, run as written (bash, `meshca` on PATH).
#[test]
fn the_readme_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = &readme[readme.find("### Rotating the root").unwrap()..];
    let script = section.split("```sh\n").nth(1).unwrap().split("\n```").next().unwrap();
    let dir = std::env::temp_dir().join(format!("meshca-readme-rotation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let o = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(&dir)
        .env("PATH", path)
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{out}");
    for want in [
        "root rotation started by spec.config.rootRotation",
        "phase AddingNewRoot -> PropagatingIntermediates",
        "phase PropagatingIntermediates -> DeletingOldRoot",
        "finished (Complete)",
        "3 clusters: 3 kept. All share root CN=Root CA 2,O=Istio",
        "OK    all 3 bundles share root CN=Root CA 2,O=Istio",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert_eq!(out.matches("  done").count(), 3 + 3, "step 3's run and status: every cluster done\n{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
