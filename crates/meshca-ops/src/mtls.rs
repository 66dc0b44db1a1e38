//! A real mutual-TLS handshake between two workloads over loopback TCP, each trusting only its
//! cluster's `root-cert.pem`: the seed's Step 3 ("workloads can talk across clusters") without a
//! cluster. Peers are authenticated by SPIFFE ID, as Envoy does, not by host name.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use meshca::{Certificate, Leaf};

/// Why a handshake failed, from each side's point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeError {
    /// The client's error, if it failed.
    pub client: Option<String>,
    /// The server's error, if it failed.
    pub server: Option<String>,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.client, &self.server) {
            (Some(c), Some(s)) => write!(f, "client: {c}; server: {s}"),
            (Some(c), None) => write!(f, "client: {c}"),
            (None, Some(s)) => write!(f, "server: {s}"),
            (None, None) => f.write_str("handshake failed"),
        }
    }
}

impl std::error::Error for HandshakeError {}

fn setup(e: impl std::fmt::Display) -> HandshakeError {
    HandshakeError { client: Some(format!("setup: {e}")), server: None }
}

/// What the handshake established.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Handshake {
    /// `TLSv1_3`, ...
    pub protocol: String,
    /// The negotiated cipher suite.
    pub cipher_suite: String,
    /// The server's SPIFFE ID as the client verified it.
    pub server_id: String,
    /// The client's SPIFFE ID as the server verified it.
    pub client_id: String,
    /// What the client read back from the server.
    pub response: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn der_chain(leaf: &Leaf) -> Vec<CertificateDer<'static>> {
    leaf.chain().iter().map(|c| CertificateDer::from(c.der().to_vec())).collect()
}

fn key_der(leaf: &Leaf) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(leaf.key().pkcs8_der().to_vec().into())
}

fn root_store(roots: &[Certificate]) -> Result<RootCertStore, HandshakeError> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store
            .add(CertificateDer::from(r.der().to_vec()))
            .map_err(|e| setup(format!("unusable root {}: {e}", r.subject())))?;
    }
    Ok(store)
}

/// One side's failure inside the handshake: any of the I/O, TLS and name errors it meets.
type SideResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Why [`handshake_all_pairs`] failed: a probe could not be issued, or a pair did not connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The cluster's bundle could not issue its probe workload.
    #[error("{cluster}: cannot issue a probe workload: {source}")]
    Issue {
        /// The cluster.
        cluster: String,
        /// Why.
        source: meshca::Error,
    },
    /// A workload of `client` could not complete a handshake with one of `server`.
    #[error("{client} -> {server}: {source}")]
    Handshake {
        /// The client's cluster.
        client: String,
        /// The server's cluster.
        server: String,
        /// Each side's account.
        source: HandshakeError,
    },
}

fn spiffe_of(der: &CertificateDer<'_>) -> Option<String> {
    Certificate::from_der(der, "peer", 1).ok()?.uri_sans().into_iter().next()
}

/// Verifies the server's chain with webpki (serverAuth) against the trusted roots and checks its
/// SPIFFE ID, instead of a DNS name.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Vec<CertificateDer<'static>>,
    expected_id: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let anchors: Vec<_> = self
            .roots
            .iter()
            .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
            .collect::<Result<_, _>>()
            .map_err(|e| rustls::Error::General(format!("bad trust anchor: {e}")))?;
        let ee = webpki::EndEntityCert::try_from(end_entity).map_err(|e| rustls::Error::General(format!("{e}")))?;
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| match e {
            webpki::Error::UnknownIssuer => rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            other => {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(other))))
            }
        })?;
        let id = spiffe_of(end_entity)
            .ok_or_else(|| rustls::Error::General("server certificate carries no SPIFFE ID".into()))?;
        if let Some(want) = &self.expected_id {
            if &id != want {
                return Err(rustls::Error::General(format!("server is {id}, expected {want}")));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A clock fixed at one instant, so a handshake can be rehearsed at a future time (`--at`).
#[derive(Debug)]
struct FixedTime(UnixTime);

impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

/// The cross-cluster promise, tested for real: a probe workload of each cluster
/// (`spiffe://cluster.local/ns/default/sa/<cluster>`, issued by its bundle) completes a handshake
/// with a probe workload of every other cluster, both ways, each side trusting only its own
/// cluster's `root-cert.pem`, at `at`. Returns the probes (for other verifiers to check too), or
/// the first failure naming both clusters.
pub fn handshake_all_pairs(
    bundles: &[(&str, &meshca::Cacerts)],
    rng: &mut dyn meshca::Entropy,
    at: time::OffsetDateTime,
) -> Result<Vec<Leaf>, ProbeError> {
    let mut leaves = Vec::with_capacity(bundles.len());
    for (name, b) in bundles {
        let issue = |source| ProbeError::Issue { cluster: (*name).to_owned(), source };
        let id = meshca::SpiffeId::workload("cluster.local", "default", name).map_err(issue)?;
        let leaf =
            meshca::SigningCa::new((*b).clone()).issue_leaf(&meshca::LeafParams::new(id), rng, at).map_err(issue)?;
        leaves.push(leaf.value);
    }
    for (i, ((client, cb), cl)) in bundles.iter().zip(&leaves).enumerate() {
        for (j, ((server, sb), sl)) in bundles.iter().zip(&leaves).enumerate() {
            if i != j {
                handshake_at(cl, cb.roots(), sl, sb.roots(), at).map_err(|source| ProbeError::Handshake {
                    client: (*client).to_owned(),
                    server: (*server).to_owned(),
                    source,
                })?;
            }
        }
    }
    Ok(leaves)
}

/// [`handshake`] as if at `at` (both sides verify certificates at that time).
pub fn handshake_at(
    client: &Leaf,
    client_trust: &[Certificate],
    server: &Leaf,
    server_trust: &[Certificate],
    at: time::OffsetDateTime,
) -> Result<Handshake, HandshakeError> {
    let secs = u64::try_from(at.unix_timestamp()).map_err(setup)?;
    let clock: Arc<dyn rustls::time_provider::TimeProvider> =
        Arc::new(FixedTime(UnixTime::since_unix_epoch(Duration::from_secs(secs))));
    handshake_with_clock(client, client_trust, server, server_trust, Some(clock))
}

/// Runs one request over mutual TLS on 127.0.0.1: `server` presents its chain and requires a
/// client certificate chaining to `server_trust`; `client` presents its chain and requires the
/// server to chain to `client_trust` and carry `server`'s SPIFFE ID. Returns what both sides
/// verified, or the first side's error.
pub fn handshake(
    client: &Leaf,
    client_trust: &[Certificate],
    server: &Leaf,
    server_trust: &[Certificate],
) -> Result<Handshake, HandshakeError> {
    handshake_with_clock(client, client_trust, server, server_trust, None)
}

fn handshake_with_clock(
    client: &Leaf,
    client_trust: &[Certificate],
    server: &Leaf,
    server_trust: &[Certificate],
    clock: Option<Arc<dyn rustls::time_provider::TimeProvider>>,
) -> Result<Handshake, HandshakeError> {
    let provider = provider();
    let clock = clock.unwrap_or_else(|| Arc::new(rustls::time_provider::DefaultTimeProvider));
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(server_trust)?), provider.clone())
            .build()
            .map_err(setup)?;
    let server_config = rustls::ServerConfig::builder_with_details(provider.clone(), clock.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(setup)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(der_chain(server), key_der(server))
        .map_err(setup)?;

    let verifier = SpiffeServerVerifier {
        roots: client_trust.iter().map(|c| CertificateDer::from(c.der().to_vec())).collect(),
        expected_id: server.cert().uri_sans().into_iter().next(),
        provider: provider.clone(),
    };
    let client_config = rustls::ClientConfig::builder_with_details(provider, clock)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(setup)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(der_chain(client), key_der(client))
        .map_err(setup)?;

    let listener = TcpListener::bind("127.0.0.1:0").map_err(setup)?;
    let addr = listener.local_addr().map_err(setup)?;
    let server_thread = std::thread::spawn(move || -> SideResult<String> {
        let (tcp, _) = listener.accept()?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let conn = rustls::ServerConnection::new(Arc::new(server_config))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut line = String::new();
        BufReader::new(&mut tls).read_line(&mut line)?;
        let client_id = tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(spiffe_of)
            .ok_or("client presented no SPIFFE ID")?;
        let reply = format!("200 OK: {} for {client_id}\n", line.trim());
        tls.write_all(reply.as_bytes())?;
        tls.conn.send_close_notify();
        let _ = tls.flush();
        Ok(client_id)
    });

    let client_result = (|| -> SideResult<Handshake> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        // Envoy's SNI for an outbound cluster; the name is not what is verified.
        let sni = ServerName::try_from("outbound_.9080_._.reviews.bookinfo.svc.cluster.local")?;
        let conn = rustls::ClientConnection::new(Arc::new(client_config), sni)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(b"GET /reviews/3\n")?;
        let mut response = String::new();
        BufReader::new(&mut tls).read_line(&mut response)?;
        Ok(Handshake {
            protocol: tls.conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default(),
            cipher_suite: tls.conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default(),
            server_id: tls.conn.peer_certificates().and_then(|c| c.first()).and_then(spiffe_of).unwrap_or_default(),
            client_id: String::new(),
            response: response.trim().to_owned(),
        })
    })();
    let server_result = server_thread.join().unwrap_or_else(|_| Err("server thread panicked".into()));
    match (client_result, server_result) {
        (Ok(mut hs), Ok(client_id)) => {
            hs.client_id = client_id;
            Ok(hs)
        }
        (c, s) => {
            Err(HandshakeError { client: c.err().map(|e| e.to_string()), server: s.err().map(|e| e.to_string()) })
        }
    }
}
