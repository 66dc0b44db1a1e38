//! A client of a SPIFFE bundle endpoint as the SPIFFE Federation specification describes one
//! (section 5.2, `https_spiffe`): it trusts only a bootstrap bundle, checks the server's chain
//! with rustls-webpki (serverAuth) and that the server's X509-SVID is the SPIFFE ID it expects,
//! never a DNS name. Or (`https_web`) an ordinary HTTPS client with a DNS name.

use std::io::{Read, Write};
use std::sync::Arc;

use meshca::Certificate;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Whom the client expects at the other end.
#[derive(Clone, Debug)]
pub enum Expect {
    /// `https_spiffe`: this SPIFFE ID, under the bootstrap bundle.
    Spiffe(String),
    /// `https_web`: this DNS name, under the given roots.
    Dns(String),
}

#[derive(Debug)]
struct Verifier {
    roots: Vec<CertificateDer<'static>>,
    expect: Expect,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let bad = |e: String| rustls::Error::General(e);
        let anchors: Vec<_> = self
            .roots
            .iter()
            .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("bootstrap bundle: {e}")))?;
        let ee = webpki::EndEntityCert::try_from(end_entity).map_err(|e| bad(e.to_string()))?;
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| bad(format!("chain: {e}")))?;
        match &self.expect {
            Expect::Spiffe(id) => {
                let cert =
                    Certificate::from_der(end_entity, "server certificate", 1).map_err(|e| bad(e.to_string()))?;
                let uris = cert.uri_sans();
                if uris != [id.clone()] {
                    return Err(bad(format!("the server is {uris:?}, not {id}")));
                }
            }
            Expect::Dns(name) => {
                let name = ServerName::try_from(name.clone()).map_err(|e| bad(e.to_string()))?;
                ee.verify_is_valid_for_subject_name(&name).map_err(|e| bad(format!("name: {e}")))?;
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

/// `GET path` from the endpoint at `addr`, trusting only `roots`: the HTTP status and body.
pub fn fetch(
    addr: std::net::SocketAddr,
    path: &str,
    roots: &[Certificate],
    expect: Expect,
) -> std::io::Result<(u16, String)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Verifier {
        roots: roots.iter().map(|r| CertificateDer::from(r.der().to_vec())).collect(),
        expect: expect.clone(),
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let host = match &expect {
        Expect::Dns(name) => name.clone(),
        Expect::Spiffe(_) => "bundle-endpoint.invalid".to_owned(),
    };
    let name = ServerName::try_from(host.clone()).map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(tls, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // A server that closes without close_notify after a complete response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other(format!("no HTTP response: {text}")))?;
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, body.to_owned()))
}

/// A web serving certificate for `dns` (as a public CA would issue one, made with rcgen, not
/// meshca): `(ca_pem, cert_pem, key_pem)`, valid from an hour ago for a day.
pub fn web_serving_cert(dns: &str) -> (String, String, String) {
    let now = time::OffsetDateTime::now_utc();
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "Web CA");
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    (ca.not_before, ca.not_after) = (now - time::Duration::hours(1), now + time::Duration::days(1));
    let ca_cert = ca.self_signed(&ca_key).expect("a CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut leaf = rcgen::CertificateParams::new(vec![dns.to_owned()]).expect("leaf params");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    (leaf.not_before, leaf.not_after) = (now - time::Duration::hours(1), now + time::Duration::days(1));
    let cert = leaf.signed_by(&key, &issuer).expect("a serving certificate");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}
