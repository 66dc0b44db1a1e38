//! `meshca revoke`, `unrevoke` and `crl` on a three-cluster directory store (the quickstart's),
//! checked from outside: rustls-webpki through `verify_workload_chain_with_crls`, `openssl
//! verify -crl_check_all`, and real TLS 1.2 mTLS handshakes between `openssl s_server` and
//! `openssl s_client`, both with `-crl_check_all` and each cluster's `ca-crl.pem`, as Envoy
//! applies it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{has_openssl, meshca, ok, s, tempdir, OpensslVerify};

fn cacerts(store: &Path, cluster: &str) -> PathBuf {
    store.join(cluster).join("istio-system").join("cacerts")
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn serial_hex(cert_pem: &[u8]) -> String {
    let cert = meshca::parse_certificates(cert_pem, "ca-cert.pem").unwrap().remove(0);
    cert.serial_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A workload's files: `cert-chain.pem` (leaf first), `key.pem`.
struct Workload {
    dir: PathBuf,
}

impl Workload {
    fn chain(&self) -> PathBuf {
        self.dir.join("cert-chain.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

/// How a cluster's proxies judge a peer: its bundle's root-cert.pem and ca-crl.pem.
struct Trust {
    roots: PathBuf,
    crl: PathBuf,
}

fn trust_of(store: &Path, cluster: &str) -> Trust {
    let d = cacerts(store, cluster);
    Trust { roots: d.join("root-cert.pem"), crl: d.join("ca-crl.pem") }
}

fn webpki_accepts(w: &Workload, t: &Trust) -> Result<(), String> {
    let chain = meshca::parse_certificates(&read(&w.chain()), "cert-chain.pem").unwrap();
    let roots = meshca::parse_certificates(&read(&t.roots), "root-cert.pem").unwrap();
    let crls = meshca::Crl::from_pem_all(&read(&t.crl), "ca-crl.pem").unwrap();
    let now = time::OffsetDateTime::now_utc();
    meshca::verify_workload_chain_with_crls(&chain, &roots, &crls, now).map(|_| ()).map_err(|e| e.to_string())
}

fn openssl_verify(w: &Workload, t: &Trust) -> Result<(), meshca_testkit::verify::Rejected> {
    OpensslVerify::new(&w.chain()).roots(&t.roots).crls(&t.crl).untrusted(&w.chain()).run()
}

/// One mTLS handshake (TLS 1.2, so the server's verdict on the client's certificate reaches
/// the client within the handshake): `server` presents its chain and checks the client's under
/// `server_trust`; `client` the same the other way. Ok when both ends accepted.
fn handshake(server: &Workload, server_trust: &Trust, client: &Workload, client_trust: &Trust) -> Result<(), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // s_server and s_client take one CRL with -CRL; a CAfile holds the roots and every CRL.
    let combined = |t: &Trust, tag: &str| {
        let p = std::env::temp_dir().join(format!("meshca-trust-{tag}-{port}-{}.pem", std::process::id()));
        std::fs::write(&p, [read(&t.roots), read(&t.crl)].concat()).unwrap();
        p
    };
    let side = |w: &Workload, t: &Trust, tag: &str| {
        vec![
            "-tls1_2".to_owned(),
            "-cert".into(),
            s(&w.chain()),
            "-cert_chain".into(),
            s(&w.chain()),
            "-key".into(),
            s(&w.key()),
            "-CAfile".into(),
            s(&combined(t, tag)),
            "-crl_check_all".into(),
            "-verify_return_error".into(),
        ]
    };
    let mut srv = Command::new("openssl")
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-naccept", "1", "-Verify", "3"])
        .args(side(server, server_trust, "server"))
        // s_server ends the connection when its stdin closes: keep it open.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // s_server prints ACCEPT once it listens.
    let mut lines = BufReader::new(srv.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("ACCEPT") {
            break;
        }
    }
    let client_out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-verify", "3", "-brief"])
        .args(side(client, client_trust, "client"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let _ = srv.kill();
    let srv_out = srv.wait_with_output().unwrap();
    let text = format!(
        "client: {}{}\nserver: {}",
        String::from_utf8_lossy(&client_out.stdout),
        String::from_utf8_lossy(&client_out.stderr),
        String::from_utf8_lossy(&srv_out.stderr)
    );
    let established = text.contains("CONNECTION ESTABLISHED") && text.contains("Verification: OK");
    if client_out.status.success() && established && !text.contains("ERROR") && !text.contains("alert") {
        Ok(())
    } else {
        Err(text)
    }
}

fn leaf(store: &Path, cluster: &str, out: &Path) -> Workload {
    ok(&[
        "leaf",
        "--ca",
        &s(&cacerts(store, cluster)),
        "--spiffe",
        &format!("spiffe://cluster.local/ns/{cluster}/sa/after"),
        "--out",
        &s(out),
    ]);
    Workload { dir: out.to_path_buf() }
}

fn crl_show(policy: &str, store: &str) -> serde_json::Value {
    let out = ok(&["crl", "show", "--policy", policy, "--store", store, "--json"]);
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn a_revoked_cluster_ca_is_replaced_and_refused_everywhere_and_unrevoke_takes_it_back() {
    if !has_openssl() {
        return;
    }
    let d = tempdir("revoke");
    let q = d.join("q");
    ok(&["quickstart", "--dir", &s(&q)]);
    let (store, policy) = (q.join("store"), s(&q.join("policy.yaml")));
    let st = s(&store);
    let old = |c: &str| Workload { dir: q.join("workloads").join(c) };
    let c2 = cacerts(&store, "cluster2");
    let (old_key, old_cert) = (read(&c2.join("ca-key.pem")), read(&c2.join("ca-cert.pem")));
    // A copy of cluster2's bundle before, as an attacker holding it would have it.
    let stolen = d.join("stolen");
    std::fs::create_dir_all(&stolen).unwrap();
    for f in ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"] {
        std::fs::write(stolen.join(f), read(&c2.join(f))).unwrap();
    }
    // Before any revocation: no CRL anywhere, everyone accepts everyone.
    assert!(!cacerts(&store, "cluster1").join("ca-crl.pem").exists());
    assert_eq!(crl_show(&policy, &st), serde_json::Value::Null);

    // A dry run plans the whole thing and writes nothing.
    let dry = ok(&["revoke", "--policy", &policy, "--store", &st, "--cluster", "cluster2", "--dry-run"]);
    assert!(dry.stdout.contains("would revoke"), "{}", dry.stdout);
    assert!(dry.stdout.contains("would rotate"), "{}", dry.stdout);
    assert_eq!(read(&c2.join("ca-key.pem")), old_key);
    assert!(!cacerts(&store, "cluster1").join("ca-crl.pem").exists());
    assert_eq!(crl_show(&policy, &st), serde_json::Value::Null);

    let out = ok(&["revoke", "--policy", &policy, "--store", &st, "--cluster", "cluster2", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["entries"][0]["cluster"], "cluster2");
    assert_eq!(report["entries"][0]["serial"], serial_hex(&old_cert));
    assert_eq!(report["entries"][0]["reason"], "keyCompromise");
    assert_eq!(report["run"]["crl"]["revoked"].as_array().unwrap().len(), 1);

    // cluster2 has a new key and intermediate; every bundle carries the same CRL set.
    assert_ne!(read(&c2.join("ca-key.pem")), old_key, "cluster2 must get a new key");
    assert_ne!(read(&c2.join("ca-cert.pem")), old_cert);
    let set = read(&c2.join("ca-crl.pem"));
    assert!(!set.is_empty());
    for c in ["cluster1", "cluster3"] {
        assert_eq!(read(&cacerts(&store, c).join("ca-crl.pem")), set, "{c} must carry the fleet's CRL set");
    }
    let shown = crl_show(&policy, &st);
    assert_eq!(shown["list"]["crlNumber"], 1);
    assert_eq!(shown["crls"][0]["entries"], 1, "the root's CRL lists the revoked intermediate: {shown}");

    let (t1, t3) = (trust_of(&store, "cluster1"), trust_of(&store, "cluster3"));
    let new2 = leaf(&store, "cluster2", &d.join("new2"));
    // The workload certificate cluster2's old intermediate signed is refused by the others.
    for t in [&t1, &t3] {
        let e = webpki_accepts(&old("cluster2"), t).unwrap_err();
        assert!(e.contains("revoked"), "{e}");
        let e = openssl_verify(&old("cluster2"), t).unwrap_err().to_string();
        assert!(e.contains("certificate revoked"), "{e}");
    }
    let e = handshake(&old("cluster2"), &trust_of(&store, "cluster2"), &old("cluster1"), &t1).unwrap_err();
    assert!(e.contains("revoked"), "cluster1's client must refuse the old cluster2 server: {e}");
    let e = handshake(&old("cluster3"), &t3, &old("cluster2"), &trust_of(&store, "cluster2")).unwrap_err();
    assert!(e.contains("revoked") || e.contains("alert"), "cluster3's server must refuse the old cluster2 client: {e}");
    // New cluster2 workloads and every cluster1/cluster3 workload still talk mTLS.
    let t2 = trust_of(&store, "cluster2");
    for t in [&t1, &t3] {
        webpki_accepts(&new2, t).unwrap();
        openssl_verify(&new2, t).unwrap();
    }
    handshake(&new2, &t2, &old("cluster1"), &t1).unwrap();
    handshake(&old("cluster1"), &t1, &new2, &t2).unwrap();
    handshake(&old("cluster3"), &t3, &old("cluster1"), &t1).unwrap();
    handshake(&old("cluster1"), &t1, &old("cluster3"), &t3).unwrap();

    // verify: the fleet passes; the stolen bundle is refused, named for the CRL that revokes it.
    ok(&["verify", &s(&cacerts(&store, "cluster1")), &s(&c2), &s(&cacerts(&store, "cluster3"))]);
    let bad = meshca(&["verify", "--no-probe", &s(&cacerts(&store, "cluster1")), &s(&stolen)]);
    assert_eq!(bad.code, 1, "{}", bad.all());
    assert!(bad.stderr.contains("revokes") && bad.stderr.contains("stolen"), "{}", bad.stderr);
    // inspect shows the set.
    let shown = ok(&["inspect", &s(&c2.join("ca-crl.pem"))]);
    assert!(shown.stdout.contains("CN=Root CA"), "{}", shown.stdout);

    // A plain reconcile changes nothing: no CRL churn, no re-issue.
    let again = ok(&[
        "reconcile",
        "--policy",
        &policy,
        "--store",
        &st,
        "--cluster",
        "cluster1",
        "--cluster",
        "cluster2",
        "--cluster",
        "cluster3",
    ]);
    assert!(again.stdout.contains("3 clusters: 3 kept"), "{}", again.stdout);
    assert_eq!(read(&c2.join("ca-crl.pem")), set);

    // A cluster without a bundle has nothing to revoke; nothing is written.
    let e = meshca(&["revoke", "--policy", &policy, "--store", &st, "--cluster", "cluster9"]);
    assert_eq!(e.code, 1);
    assert!(e.stderr.contains("cluster9 has no cacerts"), "{}", e.stderr);
    assert_eq!(read(&c2.join("ca-crl.pem")), set);

    // unrevoke: the old cluster2 workload verifies again (its CRL stayed in the set).
    let back = ok(&["unrevoke", "--policy", &policy, "--store", &st, "--cluster", "cluster2"]);
    assert!(back.stdout.contains("took back"), "{}", back.stdout);
    let t1 = trust_of(&store, "cluster1");
    webpki_accepts(&old("cluster2"), &t1).unwrap();
    openssl_verify(&old("cluster2"), &t1).unwrap();
    handshake(&old("cluster2"), &trust_of(&store, "cluster2"), &old("cluster1"), &t1).unwrap();
    let shown = crl_show(&policy, &st);
    assert_eq!(shown["list"]["revoked"].as_array().unwrap().len(), 0);
    assert_eq!(shown["crls"][0]["entries"], 0);
    let e = meshca(&["unrevoke", "--policy", &policy, "--store", &st, "--cluster", "cluster2"]);
    assert_eq!(e.code, 1);
    assert!(e.stderr.contains("no revoked CA matches cluster cluster2"), "{}", e.stderr);

    // crl clear after a second revocation: an entry-less set, never an empty file.
    ok(&["revoke", "--policy", &policy, "--store", &st, "--cluster", "cluster3", "--reason", "superseded"]);
    assert_eq!(crl_show(&policy, &st)["crls"][0]["entries"], 1);
    ok(&["crl", "clear", "--policy", &policy, "--store", &st]);
    let shown = crl_show(&policy, &st);
    assert_eq!(shown["crls"][0]["entries"], 0);
    for c in ["cluster1", "cluster2", "cluster3"] {
        let pem = read(&cacerts(&store, c).join("ca-crl.pem"));
        assert!(String::from_utf8_lossy(&pem).contains("BEGIN X509 CRL"), "{c}: {}", pem.len());
    }

    // The root's CRL is re-signed before its nextUpdate: 3.5 days on, under 4 days are left.
    let number = shown["list"]["crlNumber"].as_u64().unwrap();
    let next = shown["crls"][0]["nextUpdate"].as_str().unwrap().to_owned();
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(84);
    let at = meshca::format_time(later);
    ok(&[
        "reconcile",
        "--policy",
        &policy,
        "--store",
        &st,
        "--cluster",
        "cluster1",
        "--cluster",
        "cluster2",
        "--cluster",
        "cluster3",
        "--at",
        &at,
    ]);
    let shown = crl_show(&policy, &st);
    assert_eq!(shown["list"]["crlNumber"].as_u64().unwrap(), number + 1, "{shown}");
    let next_now = shown["crls"][0]["nextUpdate"].as_str().unwrap();
    assert!(next_now > next.as_str(), "re-signed CRL must reach further: {next_now} vs {next}");
    // The intermediates' CRLs that expired are gone; the set still covers every bundle at that time.
    ok(&["verify", "--at", &at, &s(&cacerts(&store, "cluster1")), &s(&c2), &s(&cacerts(&store, "cluster3"))]);
    let _ = std::fs::remove_dir_all(&d);
}

/// The README's "When a cluster CA is compromised" block, run as written (bash, `meshca` on
/// PATH) in a directory where `meshca quickstart` ran.
#[test]
fn the_readme_revocation_block_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("## When a cluster CA is compromised").nth(1).expect("the README has the section");
    let script = section.split("```sh\n").nth(1).unwrap().split("\n```").next().unwrap();
    let dir = tempdir("readme-revoke");
    let bin_dir = Path::new(support::BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let run = |script: &str| {
        let o = Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(&dir)
            .env("PATH", &path)
            .output()
            .unwrap();
        let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{out}");
        out
    };
    run("meshca quickstart > /dev/null");
    let out = run(script);
    for want in [
        "would revoke:",
        "revoked:\n  cluster2  serial",
        "OK    all 2 bundles share root",
        "CRL set (5 CRLs, in every cluster's ca-crl.pem)",
        "took back:",
        "took back: nothing (the list was empty); the CRL set is republished",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `meshca status` on the quickstart's store: every cluster's row, the root, and the trust state
/// from the mirrored istio-ca-root-cert (in sync, stale, unobserved).
#[test]
fn status_shows_each_cluster_and_what_istiod_loaded() {
    let d = tempdir("status");
    let q = d.join("q");
    ok(&["quickstart", "--dir", &s(&q)]);
    let (store, policy) = (q.join("store"), s(&q.join("policy.yaml")));
    let st = s(&store);
    let out = ok(&["status", "--policy", &policy, "--store", &st]);
    for c in ["cluster1", "cluster2", "cluster3"] {
        let row = out.stdout.lines().find(|l| l.starts_with(c)).unwrap_or_else(|| panic!("{c}: {}", out.stdout));
        assert!(row.contains("unobserved") && row.ends_with("keep"), "{row}");
    }
    assert!(out.stdout.contains("root CN=Root CA,O=Istio"), "{}", out.stdout);
    assert!(!out.stdout.contains('\x1b'), "no colours off a terminal");
    // What istiod publishes, mirrored into the store: cluster1 loaded the root, cluster2 another.
    let roots = read(&cacerts(&store, "cluster1").join("root-cert.pem"));
    let mirror = |c: &str, pem: &[u8]| {
        let dir = store.join(c).join("istio-system").join("istio-ca-root-cert");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("root-cert.pem"), pem).unwrap();
    };
    mirror("cluster1", &roots);
    let other = d.join("other");
    ok(&["root-ca", "--out", &s(&other)]);
    mirror("cluster2", &read(&other.join("root-cert.pem")));
    let out = ok(&["status", "--policy", &policy, "--store", &st, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let trust = |i: usize| v["clusters"][i]["trust"].clone();
    assert_eq!(trust(0)["state"], "in-sync", "{v}");
    assert_eq!(trust(1)["state"], "stale", "{v}");
    assert_eq!(trust(1)["missing"].as_array().unwrap().len(), 1);
    assert_eq!(trust(1)["extra"].as_array().unwrap().len(), 1);
    assert_eq!(trust(2)["state"], "unobserved");
    assert_eq!(v["dryRun"], true, "status writes nothing");
    let out = ok(&["status", "--policy", &policy, "--store", &st]);
    assert!(out.stdout.contains("istiod has not loaded 1 root(s) meshca wrote"), "{}", out.stdout);
    let _ = std::fs::remove_dir_all(&d);
}

/// An intermediate made elsewhere whose keyUsage lacks cRLSign (Istio's tools/certs makes them
/// so) cannot sign its CRL: once the fleet publishes CRLs, it is replaced, not left to have
/// its workloads refused everywhere.
#[test]
fn an_intermediate_that_cannot_sign_crls_is_replaced_when_crls_come_in() {
    if !has_openssl() {
        return;
    }
    let d = tempdir("no-crl-sign");
    let q = d.join("q");
    ok(&["quickstart", "--dir", &s(&q)]);
    let (store, policy) = (q.join("store"), s(&q.join("policy.yaml")));
    let st = s(&store);
    let signer = store.join("mgmt").join("gloo-mesh").join("my-root-trust-policy.gloo-mesh");
    let w = d.join("work");
    std::fs::create_dir_all(&w).unwrap();
    std::fs::write(
        w.join("ext.cnf"),
        "[ext]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,digitalSignature,keyCertSign\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\nsubjectAltName=DNS:istiod.istio-system.svc\n",
    )
    .unwrap();
    let sh = |args: &[&str]| {
        let o = Command::new("openssl").args(args).current_dir(&w).output().unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    sh(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "k.pem"]);
    sh(&["pkcs8", "-topk8", "-nocrypt", "-in", "k.pem", "-out", "ca-key.pem"]);
    sh(&["req", "-new", "-key", "ca-key.pem", "-subj", "/O=Istio/CN=Intermediate CA/L=cluster3", "-out", "c.csr"]);
    let (root_cert, root_key) = (s(&signer.join("ca-cert.pem")), s(&signer.join("ca-key.pem")));
    sh(&[
        "x509",
        "-req",
        "-in",
        "c.csr",
        "-CA",
        &root_cert,
        "-CAkey",
        &root_key,
        "-set_serial",
        "0x5eed0c0ffee5eed0c0ffee",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-extensions",
        "ext",
        "-out",
        "ca-cert.pem",
    ]);
    let root_pem = read(&signer.join("root-cert.pem"));
    let c3 = cacerts(&store, "cluster3");
    std::fs::remove_dir_all(&c3).unwrap();
    std::fs::create_dir_all(&c3).unwrap();
    std::fs::write(c3.join("ca-cert.pem"), read(&w.join("ca-cert.pem"))).unwrap();
    std::fs::write(c3.join("ca-key.pem"), read(&w.join("ca-key.pem"))).unwrap();
    std::fs::write(c3.join("cert-chain.pem"), [read(&w.join("ca-cert.pem")), root_pem.clone()].concat()).unwrap();
    std::fs::write(c3.join("root-cert.pem"), &root_pem).unwrap();
    let before = read(&c3.join("ca-cert.pem"));
    // Without CRLs it is kept, as any valid bundle.
    let kept = ok(&[
        "reconcile",
        "--policy",
        &policy,
        "--store",
        &st,
        "--cluster",
        "cluster1",
        "--cluster",
        "cluster2",
        "--cluster",
        "cluster3",
    ]);
    assert!(kept.stdout.contains("3 clusters: 3 kept"), "{}", kept.stdout);
    let out = ok(&["revoke", "--policy", &policy, "--store", &st, "--cluster", "cluster2"]);
    let row = out.stdout.lines().find(|l| l.starts_with("cluster3")).unwrap();
    assert!(row.contains("rotated") && row.contains("no cRLSign"), "{row}");
    assert_ne!(read(&c3.join("ca-cert.pem")), before);
    ok(&["verify", &s(&cacerts(&store, "cluster1")), &s(&cacerts(&store, "cluster2")), &s(&c3)]);
    let _ = std::fs::remove_dir_all(&d);
}

/// Hostile or careless inputs of the revocation commands: a revocation list that is really a
/// key file, garbage in the stored CRL set, a serial that is not hex, and an istio-ca-root-cert
/// mirror holding no certificate. Each is a clear error (or a stale trust state), and nothing
/// of the file's content is echoed.
#[test]
fn hostile_revocation_inputs_are_refused_without_echoing_them() {
    let d = tempdir("revoke-hostile");
    let q = d.join("q");
    ok(&["quickstart", "--dir", &s(&q)]);
    let (store, policy) = (q.join("store"), s(&q.join("policy.yaml")));
    let st = s(&store);
    ok(&["revoke", "--policy", &policy, "--store", &st, "--cluster", "cluster2"]);
    let list = store.join("mgmt").join("gloo-mesh").join("root-trust-policy-revocations");
    let c1 = read(&cacerts(&store, "cluster1").join("ca-crl.pem"));
    let replace = |name: &str, data: &[u8]| {
        // The Secret directory is ..data links; replace it with a plain directory as a hand edit would.
        let files: Vec<(String, Vec<u8>)> = ["revocations.json", "ca-crl.pem"]
            .iter()
            .map(|f| ((*f).to_owned(), if *f == name { data.to_vec() } else { read(&list.join(f)) }))
            .collect();
        std::fs::remove_dir_all(&list).unwrap();
        std::fs::create_dir_all(&list).unwrap();
        for (f, bytes) in files {
            std::fs::write(list.join(f), bytes).unwrap();
        }
    };
    let good_list = read(&list.join("revocations.json"));
    let key = read(&cacerts(&store, "cluster1").join("ca-key.pem"));
    replace("revocations.json", &key);
    let e = meshca(&["crl", "show", "--policy", &policy, "--store", &st]);
    assert_eq!(e.code, 1, "{}", e.all());
    assert!(e.stderr.contains("revocations.json is not valid"), "{}", e.stderr);
    assert!(!e.all().contains("PRIVATE KEY") && !e.all().contains("MII"), "no key material echoed: {}", e.all());
    // A reconcile refuses to go on with an unreadable list: every bundle keeps what it had.
    let r = meshca(&[
        "reconcile",
        "--policy",
        &policy,
        "--store",
        &st,
        "--cluster",
        "cluster1",
        "--cluster",
        "cluster2",
        "--cluster",
        "cluster3",
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(read(&cacerts(&store, "cluster1").join("ca-crl.pem")), c1);
    replace("revocations.json", &good_list);
    replace("ca-crl.pem", b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n");
    let e = meshca(&["crl", "show", "--policy", &policy, "--store", &st]);
    assert_eq!(e.code, 1, "{}", e.all());
    assert!(e.stderr.contains("ca-crl.pem"), "{}", e.stderr);
    replace("ca-crl.pem", &c1);
    ok(&["crl", "show", "--policy", &policy, "--store", &st]);
    let e = meshca(&["unrevoke", "--policy", &policy, "--store", &st, "--serial", "not-hex-at-all"]);
    assert_eq!(e.code, 1, "{}", e.all());
    assert!(e.stderr.contains("not hex"), "{}", e.stderr);
    let e = meshca(&["revoke", "--policy", &policy, "--store", &st, "--cluster", "cluster2", "--reason", "because"]);
    assert_eq!(e.code, 2, "{}", e.all());
    assert!(e.stderr.contains("keyCompromise, superseded or cessationOfOperation"), "{}", e.stderr);
    // An istio-ca-root-cert mirror with no certificate in it: istiod's trust is stale, not an error.
    let mirror = store.join("cluster3").join("istio-system").join("istio-ca-root-cert");
    std::fs::create_dir_all(&mirror).unwrap();
    std::fs::write(mirror.join("root-cert.pem"), &key).unwrap();
    let out = ok(&["status", "--policy", &policy, "--store", &st, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["clusters"][2]["trust"]["state"], "stale", "{v}");
    assert!(!out.all().contains("PRIVATE KEY"));
    let _ = std::fs::remove_dir_all(&d);
}

/// `--upstream-crl FILE`: under a signing CA of the user's own PKI (an intermediate whose root
/// meshca has no key of), revocation needs the root's CRL. Without it, refused (exit 1) naming
/// the CA and the fix; with it, published; an expired one, refused.
#[test]
fn revocation_under_an_upstream_root_takes_its_crl_from_a_file() {
    let dir = tempdir("revoke-upstream");
    let store = dir.join("store");
    let now = time::OffsetDateTime::now_utc();
    let mut p = meshca::RootParams::default();
    p.common_name = "Corp Root".into();
    let corp = meshca::SigningCa::generate_root(&p, &mut meshca::OsRng, now).unwrap();
    let mut params = meshca::IntermediateParams::new("mesh");
    params.pathlen = 1;
    params.ttl = time::Duration::days(3 * 365);
    let issuing = corp.issue_intermediate(&params, &mut meshca::OsRng, now).unwrap().value;
    let signer = store.join("mgmt/gloo-mesh/corp-issuing");
    std::fs::create_dir_all(&signer).unwrap();
    for (name, data) in issuing.to_files(meshca::Layout::Istio).iter() {
        std::fs::write(signer.join(name), data).unwrap();
    }
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: meshca.dev/v1alpha1\nkind: RootTrustPolicy\nmetadata: {name: fleet, namespace: gloo-mesh}\nspec:\n  \
         config:\n    intermediateCertOptions: {ttlDays: 30}\n    mgmtServerCa:\n      secretRef: {name: corp-issuing}\n",
    )
    .unwrap();
    let (pol, st) = (s(&policy), s(&store));
    for c in ["cluster1", "cluster2", "cluster3"] {
        ok(&["reconcile", "--policy", &pol, "--store", &st, "--cluster", c]);
    }
    let before = read(&cacerts(&store, "cluster2").join("ca-cert.pem"));
    let refused = meshca(&["revoke", "--policy", &pol, "--store", &st, "--cluster", "cluster2"]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.stderr.contains("CN=Corp Root") && refused.stderr.contains("upstreamCrlSecretRef"),
        "{}",
        refused.all()
    );
    assert!(!refused.stderr.contains("--upstream-crl"), "library messages name no flags: {}", refused.stderr);
    assert_eq!(read(&cacerts(&store, "cluster2").join("ca-cert.pem")), before, "nothing written");
    let expired = corp.sign_crl(&[], now - time::Duration::days(9), now - time::Duration::days(2), 1).unwrap();
    let file = dir.join("corp.crl");
    std::fs::write(&file, expired.to_pem()).unwrap();
    let out =
        meshca(&["revoke", "--policy", &pol, "--store", &st, "--cluster", "cluster2", "--upstream-crl", &s(&file)]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("expired"), "{}", out.all());
    let current = corp.sign_crl(&[], now - time::Duration::minutes(5), now + time::Duration::days(7), 2).unwrap();
    std::fs::write(&file, current.to_pem()).unwrap();
    let out = ok(&[
        "revoke",
        "--policy",
        &pol,
        "--store",
        &st,
        "--cluster",
        "cluster2",
        "--upstream-crl",
        &s(&file),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["run"]["crl"]["upstream"][0]["ca"], "CN=Corp Root,O=Istio", "{report}");
    // Every cluster's set carries the root's CRL; openssl checks the whole chain with it.
    for c in ["cluster1", "cluster2", "cluster3"] {
        let crls = meshca::Crl::from_pem_all(&read(&cacerts(&store, c).join("ca-crl.pem")), "ca-crl.pem").unwrap();
        assert!(crls.iter().any(|crl| crl.der() == current.der()), "{c}");
    }
    let w = leaf(&store, "cluster1", &dir.join("w1"));
    let t = trust_of(&store, "cluster3");
    assert!(webpki_accepts(&w, &t).is_ok());
    if has_openssl() {
        openssl_verify(&w, &t).unwrap();
    }
}
