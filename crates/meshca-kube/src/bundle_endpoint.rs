//! The SPIFFE bundle endpoint (`meshca controller --bundle-endpoint-addr`; SPIFFE Federation,
//! sections 4 and 5): each policy with `trustDistribution.spiffeBundle` has its SPIFFE bundle
//! served over HTTPS, at `/<namespace>/<name>` (and at `/` when there is one such policy), as the
//! controller's last pass published it beside the policy. The TLS identity is the endpoint
//! profile's: `https_spiffe`, an X509-SVID meshca issues and renews half-way through its life;
//! `https_web`, a serving certificate from a Secret.
//!
//! Bounded so a flood never reaches a pass: at most [`MAX_CONNECTIONS`] connections at once
//! (more are closed at once), each with [`IO_TIMEOUT`] for its handshake and for its request,
//! a request head of at most [`MAX_REQUEST_BYTES`], one response per connection. A pass only
//! swaps what is served, under a lock no connection holds while it waits on the network.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use meshca_ops::distribution::ServingIdentity;

/// The most connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a connection may take for its TLS handshake, and then for its request.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head read.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// What cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The serving key is not one TLS can sign with.
    #[error("the bundle endpoint's key cannot be used for TLS: {0}")]
    Key(String),
}

struct Served {
    document: Arc<Vec<u8>>,
    identity: ServingIdentity,
    key: Arc<CertifiedKey>,
}

/// What the endpoint serves, shared between the controller (which replaces it after each pass)
/// and the connections.
#[derive(Clone, Default)]
pub struct BundleEndpoint {
    served: Arc<RwLock<BTreeMap<String, Served>>>,
}

impl std::fmt::Debug for BundleEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let policies: Vec<String> = self.read().keys().cloned().collect();
        f.debug_struct("BundleEndpoint").field("policies", &policies).finish()
    }
}

impl BundleEndpoint {
    /// Nothing served yet.
    pub fn new() -> Self {
        BundleEndpoint::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Served>> {
        self.served.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves `document` for the policy `policy` (`namespace/name`) with `identity`.
    pub fn publish(&self, policy: &str, document: String, identity: ServingIdentity) -> Result<(), EndpointError> {
        let chain: Vec<CertificateDer<'static>> =
            identity.chain.iter().map(|c| CertificateDer::from(c.clone())).collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.to_vec()));
        let signing =
            rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| EndpointError::Key(e.to_string()))?;
        let served = Served {
            document: Arc::new(document.into_bytes()),
            identity,
            key: Arc::new(CertifiedKey::new(chain, signing)),
        };
        self.served.write().unwrap_or_else(|p| p.into_inner()).insert(policy.to_owned(), served);
        Ok(())
    }

    /// Stops serving `policy`'s bundle.
    pub fn forget(&self, policy: &str) {
        self.served.write().unwrap_or_else(|p| p.into_inner()).remove(policy);
    }

    /// The identity `policy`'s bundle is served with now.
    pub fn identity(&self, policy: &str) -> Option<ServingIdentity> {
        self.read().get(policy).map(|s| s.identity.clone())
    }

    /// The document at `path`: `/<namespace>/<name>`, or `/` when one policy is served.
    fn document(&self, path: &str) -> Option<Arc<Vec<u8>>> {
        let served = self.read();
        match path.trim_matches('/') {
            "" if served.len() == 1 => served.values().next().map(|s| s.document.clone()),
            p => served.get(p).map(|s| s.document.clone()),
        }
    }

    /// Serves connections from `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "bundle endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Over the bound, a connection is closed at once: nothing waits, nothing queues.
            let Ok(permit) = permits.clone().try_acquire_owned() else { continue };
            let (acceptor, endpoint) = (acceptor.clone(), self.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let Ok(Ok(mut tls)) = tokio::time::timeout(IO_TIMEOUT, acceptor.accept(tcp)).await else { return };
                let Ok(Ok(Some(path))) = tokio::time::timeout(IO_TIMEOUT, request_path(&mut tls)).await else { return };
                let response = match path.and_then(|p| endpoint.document(&p)) {
                    Some(doc) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            doc.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&doc);
                        r
                    }
                    None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                };
                let _ = tokio::time::timeout(IO_TIMEOUT, async {
                    tls.write_all(&response).await?;
                    tls.shutdown().await
                })
                .await;
            });
        }
    }
}

/// Reads a request head (at most [`MAX_REQUEST_BYTES`]): `Ok(Some(Some(path)))` for a GET,
/// `Ok(Some(None))` for anything else answered 404, `Ok(None)` when the connection ends first.
async fn request_path<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Option<Option<String>>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() >= MAX_REQUEST_BYTES {
            return Ok(Some(None));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n.min(MAX_REQUEST_BYTES - buf.len())]);
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    Ok(Some(match (parts.next(), parts.next()) {
        (Some("GET"), Some(path)) => Some(path.split('?').next().unwrap_or("/").to_owned()),
        _ => None,
    }))
}

/// The TLS identity: the first policy's (by namespace/name).
#[derive(Debug)]
struct Resolver(BundleEndpoint);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().values().next().map(|s| s.key.clone())
    }
}
