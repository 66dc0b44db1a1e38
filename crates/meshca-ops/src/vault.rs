//! OpenBao and Vault PKI as the signer (the same HTTP API): log in, read the issuer's
//! certificates, and have it sign a CA request. Every certificate it returns goes through the
//! core's profile check ([`meshca::CaRequest::accept`]) before anything is written.
//!
//! API calls used (OpenBao/Vault PKI secrets engine and auth methods):
//! - `GET  /v1/<mount>/issuer/<ref>/json`: the issuer's certificate and `ca_chain` (no auth).
//! - `POST /v1/<mount>/issuer/<ref>/sign-intermediate`: `csr`, `common_name`, `ttl`,
//!   `max_path_length`, `use_csr_values=true`, `format=pem`.
//! - `POST /v1/auth/<approle>/login` (`role_id`, `secret_id`) and
//!   `POST /v1/auth/<kubernetes>/login` (`role`, `jwt`): a client token.
//!
//! Time is bounded (connect 5 s, each call 30 s), answers are bounded (1 MiB), no redirect is
//! followed, no proxy is taken from the environment, and the token is sent only in the
//! `X-Vault-Token` header: never in a message, a log line or `Debug`.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use serde_json::{json, Value};
use zeroize::Zeroizing;

use meshca::{CaRequest, Crl, ExternalKey, KeyType, ProviderAnswer, SignError};

use crate::error::{Error, ProviderFault};
use crate::policy::VaultSigner;

/// How long a connection may take.
pub const CONNECT_TIMEOUT: StdDuration = StdDuration::from_secs(5);
/// How long a whole call may take (a 4096-bit RSA signature on a busy server included).
pub const CALL_TIMEOUT: StdDuration = StdDuration::from_secs(30);
/// The largest answer read.
pub const MAX_ANSWER: u64 = 1 << 20;
/// How much of the provider's own error text a message carries.
const MAX_DETAIL: usize = 300;

/// A Vault/OpenBao token. Its `Debug` does not show it.
#[derive(Clone)]
pub struct VaultToken(Zeroizing<String>);

impl std::fmt::Debug for VaultToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultToken(not shown)")
    }
}

impl VaultToken {
    /// A token from a file's or a variable's bytes (surrounding whitespace trimmed). `source`
    /// names where it came from, in errors, which never show the value.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self, Error> {
        let text = std::str::from_utf8(bytes).map(str::trim).unwrap_or("");
        if text.is_empty() || text.len() > 4096 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Provider {
                provider: source.to_owned(),
                call: "reading the token".into(),
                fault: ProviderFault::NoCredentials,
                detail: "it is empty, longer than 4096 bytes, or not printable ASCII (value not shown)".into(),
            });
        }
        Ok(VaultToken(Zeroizing::new(text.to_owned())))
    }
}

/// How to reach the server: the policy's settings as the caller resolved them.
#[derive(Clone, Debug)]
pub struct Connect {
    /// Base address, no trailing `/`.
    pub address: String,
    /// PKI mount.
    pub mount: String,
    /// Issuer reference.
    pub issuer: String,
    /// The server's TLS CA (PEM), when not the Mozilla set.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// How long one call may take.
    pub call_timeout: StdDuration,
}

impl Connect {
    /// The provider as messages name it: address, mount and issuer (never a token).
    pub fn describe(&self) -> String {
        describe(self)
    }

    /// The settings of a checked policy section.
    pub fn of(v: &VaultSigner, ca_cert_pem: Option<Vec<u8>>) -> Self {
        Connect {
            address: v.address.clone(),
            mount: v.mount.clone(),
            issuer: v.issuer.clone(),
            ca_cert_pem,
            call_timeout: CALL_TIMEOUT,
        }
    }
}

/// What to log in with.
#[derive(Clone, Debug)]
pub enum Login {
    /// A token already.
    Token(VaultToken),
    /// AppRole.
    AppRole {
        /// Auth mount.
        mount: String,
        /// Role ID.
        role_id: String,
        /// Secret ID.
        secret_id: VaultToken,
    },
    /// Kubernetes, with a service account token.
    Kubernetes {
        /// Auth mount.
        mount: String,
        /// Role.
        role: String,
        /// The service account JWT.
        jwt: VaultToken,
    },
}

/// A logged-in client of one PKI mount and issuer.
pub struct Vault {
    agent: ureq::Agent,
    connect: Connect,
    token: VaultToken,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("provider", &self.describe()).finish()
    }
}

impl Vault {
    /// Connects and logs in.
    pub fn login(connect: Connect, login: Login) -> Result<Self, Error> {
        let agent = agent(&connect)?;
        let mut vault = Vault { agent, connect, token: VaultToken(Zeroizing::new(String::new())) };
        vault.token = match login {
            Login::Token(t) => t,
            Login::AppRole { mount, role_id, secret_id } => vault.login_with(
                &format!("auth/{mount}/login"),
                "login (AppRole)",
                json!({"role_id": role_id, "secret_id": secret_id.0.as_str()}),
            )?,
            Login::Kubernetes { mount, role, jwt } => vault.login_with(
                &format!("auth/{mount}/login"),
                "login (Kubernetes)",
                json!({"role": role, "jwt": jwt.0.as_str()}),
            )?,
        };
        Ok(vault)
    }

    /// The provider as messages name it: address, mount and issuer.
    pub fn describe(&self) -> String {
        describe(&self.connect)
    }

    fn login_with(&self, path: &str, call: &str, body: Value) -> Result<VaultToken, Error> {
        let answer = self.call("POST", path, call, Some(body), false)?;
        let token = answer
            .pointer("/auth/client_token")
            .and_then(Value::as_str)
            .ok_or_else(|| self.fault(call, ProviderFault::BadAnswer, "the answer has no auth.client_token".into()))?;
        VaultToken::from_bytes(token.as_bytes(), &self.describe())
    }

    /// The issuer's public files: `ca-cert.pem` (the issuer), `cert-chain.pem` (the issuer up
    /// to its root) and `root-cert.pem` (the self-signed certificates of that chain).
    pub fn issuer_files(&self) -> Result<meshca::Files, Error> {
        let path = format!("{}/issuer/{}/json", self.connect.mount, self.connect.issuer);
        let call = format!("GET {path}");
        let answer = self.call("GET", &path, &call, None, true)?;
        let cert = answer.pointer("/data/certificate").and_then(Value::as_str).unwrap_or_default();
        let chain: Vec<&str> = answer
            .pointer("/data/ca_chain")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if cert.is_empty() || chain.is_empty() {
            return Err(self.fault(&call, ProviderFault::BadAnswer, "no certificate or ca_chain in the answer".into()));
        }
        // One PEM block per entry; joined with a newline, as an entry may not end with one.
        let chain = chain.join("\n");
        let parsed = meshca::parse_certificates(chain.as_bytes(), "the issuer's ca_chain")
            .map_err(Error::core(format!("{}: {call}", self.describe())))?;
        let roots: String = parsed.iter().filter(|c| c.is_self_signed()).map(meshca::Certificate::to_pem).collect();
        if roots.is_empty() {
            return Err(self.fault(
                &call,
                ProviderFault::BadAnswer,
                "the issuer's ca_chain does not reach a root (no self-signed certificate); import the root into \
                 the mount's issuers"
                    .into(),
            ));
        }
        let mut files = meshca::Files::new();
        files.insert(meshca::CA_CERT, cert.as_bytes().to_vec());
        files.insert(meshca::CERT_CHAIN, chain.into_bytes());
        files.insert(meshca::ROOT_CERT, roots.into_bytes());
        Ok(files)
    }

    /// Has the issuer sign `request` (`sign-intermediate`) and returns the answer, unchecked:
    /// the caller checks it with [`CaRequest::accept`].
    pub fn sign_intermediate(&self, request: &CaRequest) -> Result<ProviderAnswer, Error> {
        let path = format!("{}/issuer/{}/sign-intermediate", self.connect.mount, self.connect.issuer);
        let call = format!("POST {path}");
        let p = request.params();
        let body = json!({
            "csr": request.csr_pem(),
            "common_name": p.common_name,
            "ttl": format!("{}s", p.ttl.whole_seconds()),
            "max_path_length": p.pathlen,
            "use_csr_values": true,
            "exclude_cn_from_sans": true,
            "format": "pem",
        });
        let answer = self.call("POST", &path, &call, Some(body), true)?;
        let certificate = answer.pointer("/data/certificate").and_then(Value::as_str).unwrap_or_default();
        if certificate.is_empty() {
            return Err(self.fault(&call, ProviderFault::BadAnswer, "no data.certificate in the answer".into()));
        }
        let mut chain = String::new();
        match answer.pointer("/data/ca_chain").and_then(Value::as_array) {
            Some(a) => a.iter().filter_map(Value::as_str).for_each(|c| {
                chain.push_str(c);
                chain.push('\n');
            }),
            None => chain.push_str(answer.pointer("/data/issuing_ca").and_then(Value::as_str).unwrap_or_default()),
        }
        Ok(ProviderAnswer { certificate: certificate.as_bytes().to_vec(), chain: chain.into_bytes() })
    }

    /// The issuer's current CRL (`GET <mount>/issuer/<ref>/crl`), unchecked: the caller checks
    /// it against the issuer's certificate before it is published.
    pub fn issuer_crl(&self) -> Result<Crl, Error> {
        let path = format!("{}/issuer/{}/crl", self.connect.mount, self.connect.issuer);
        let call = format!("GET {path}");
        let answer = self.call("GET", &path, &call, None, true)?;
        let pem = answer.pointer("/data/crl").and_then(Value::as_str).unwrap_or_default();
        if pem.is_empty() {
            return Err(self.fault(&call, ProviderFault::BadAnswer, "no data.crl in the answer".into()));
        }
        let mut crls = Crl::from_pem_all(pem.as_bytes(), "the issuer's CRL")
            .map_err(|e| self.fault(&call, ProviderFault::BadAnswer, e.to_string()))?;
        match (crls.pop(), crls.is_empty()) {
            (Some(crl), true) => Ok(crl),
            _ => Err(self.fault(&call, ProviderFault::BadAnswer, "data.crl does not hold exactly one CRL".into())),
        }
    }

    /// Revokes the certificate with `serial` (bytes, as the certificate holds it) at the PKI
    /// (`POST <mount>/revoke`); its CRL lists it from then on.
    pub fn revoke(&self, serial: &[u8]) -> Result<(), Error> {
        let path = format!("{}/revoke", self.connect.mount);
        let call = format!("POST {path}");
        let hex: Vec<String> = meshca::canonical_serial(serial).iter().map(|b| format!("{b:02x}")).collect();
        self.call("POST", &path, &call, Some(json!({ "serial_number": hex.join(":") })), true).map(|_| ())
    }

    /// Has the PKI re-sign its CRLs now (`GET <mount>/crl/rotate`), for one about to expire.
    pub fn rotate_crl(&self) -> Result<(), Error> {
        let path = format!("{}/crl/rotate", self.connect.mount);
        let call = format!("GET {path}");
        self.call("GET", &path, &call, None, true).map(|_| ())
    }

    fn fault(&self, call: &str, fault: ProviderFault, detail: String) -> Error {
        Error::Provider { provider: self.describe(), call: call.to_owned(), fault, detail }
    }

    fn call(&self, method: &str, path: &str, call: &str, body: Option<Value>, auth: bool) -> Result<Value, Error> {
        let url = format!("{}/v1/{path}", self.connect.address);
        let sent = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if auth {
                    r = r.header("X-Vault-Token", self.token.0.as_str());
                }
                r.call()
            }
            (_, body) => {
                let mut r = self.agent.post(&url);
                if auth {
                    r = r.header("X-Vault-Token", self.token.0.as_str());
                }
                r.send_json(body.unwrap_or(Value::Null))
            }
        };
        let mut response = sent.map_err(|e| self.fault(call, transport_fault(&e), transport_detail(&e)))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| self.fault(call, transport_fault(&e), transport_detail(&e)))?;
        let value: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return value.ok_or_else(|| {
                self.fault(call, ProviderFault::BadAnswer, format!("HTTP {status} with a body that is not JSON"))
            });
        }
        let said = value
            .as_ref()
            .and_then(|v| v.get("errors"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
            .unwrap_or_default();
        let fault = match status {
            503 if said.contains("sealed") => ProviderFault::Sealed,
            401 | 403 => ProviderFault::PermissionDenied,
            // A login refused for its credentials ("invalid role or secret ID").
            400 if path.starts_with("auth/") => ProviderFault::PermissionDenied,
            404 => ProviderFault::NotFound,
            400..=499 => ProviderFault::Refused,
            _ => ProviderFault::ServerError,
        };
        let said = if said.is_empty() { String::new() } else { format!(": {}", bounded(&said)) };
        Err(self.fault(call, fault, format!("HTTP {status}{said}")))
    }
}

fn describe(c: &Connect) -> String {
    format!("{} (mount {}, issuer {})", c.address, c.mount, c.issuer)
}

/// The provider's text, printable and bounded: it reaches terminals and status.
fn bounded(text: &str) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match clean.char_indices().nth(MAX_DETAIL) {
        Some((i, _)) => format!("{}...", &clean[..i]),
        None => clean,
    }
}

fn transport_fault(e: &ureq::Error) -> ProviderFault {
    match e {
        ureq::Error::Timeout(_) => ProviderFault::Timeout,
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => ProviderFault::Timeout,
        ureq::Error::Io(_)
        | ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::Tls(_)
        | ureq::Error::Rustls(_) => ProviderFault::Unreachable,
        _ => ProviderFault::BadAnswer,
    }
}

fn transport_detail(e: &ureq::Error) -> String {
    bounded(&e.to_string())
}

fn agent(c: &Connect) -> Result<ureq::Agent, Error> {
    use ureq::tls::{RootCerts, TlsConfig};
    let bad = |detail: String| Error::Provider {
        provider: describe(c),
        call: "reading caCertSecretRef".into(),
        fault: ProviderFault::Unreachable,
        detail,
    };
    let roots = match &c.ca_cert_pem {
        None => RootCerts::WebPki,
        Some(pem) => {
            let certs = meshca::parse_certificates(pem, "the server's TLS CA").map_err(|e| bad(e.to_string()))?;
            let ders: Vec<ureq::tls::Certificate<'static>> =
                certs.iter().map(|c| ureq::tls::Certificate::from_der(c.der()).to_owned()).collect();
            RootCerts::new_with_certs(&ders)
        }
    };
    let tls = TlsConfig::builder()
        .root_certs(roots)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(c.call_timeout))
        .user_agent(concat!("meshca/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent())
}

/// The issuer's key as the core sees a signing CA's key: its public half. The PKI API signs
/// certificate requests, not raw bytes, so a raw signature (a CRL) is refused: meshca's jobs
/// send every certificate through [`Vault::sign_intermediate`] instead.
#[derive(Debug)]
pub struct ProviderKey {
    key_type: KeyType,
    public_key_raw: Vec<u8>,
    provider: String,
}

impl ProviderKey {
    /// The key of the issuer certificate `ca_cert`, held by `provider`.
    pub fn of(ca_cert: &meshca::Certificate, provider: String) -> Option<Self> {
        Some(ProviderKey { key_type: ca_cert.key_type()?, public_key_raw: ca_cert.public_key_raw().to_vec(), provider })
    }
}

impl ExternalKey for ProviderKey {
    fn key_type(&self) -> KeyType {
        self.key_type
    }

    fn public_key_raw(&self) -> &[u8] {
        &self.public_key_raw
    }

    fn sign(&self, _message: &[u8]) -> Result<Vec<u8>, SignError> {
        Err(SignError::Refused {
            call: "a raw signature (a CRL, a root)".into(),
            code: "not offered by the PKI API, which signs certificate requests only".into(),
        })
    }

    fn describe(&self) -> String {
        self.provider.clone()
    }
}
