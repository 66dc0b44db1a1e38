//! The independent verifiers: rustls-webpki called directly (what ztunnel uses), and the
//! system's `openssl verify` (what istiod's Go and Envoy's BoringSSL agree with on these
//! profiles). meshca's own checks are never the only judge of what it issues.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use meshca::{Certificate, Crl};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;

/// Why an independent verifier refused (or could not run): what it said, typed by who said it.
#[derive(Debug)]
pub enum Rejected {
    /// rustls-webpki's verdict (`CertRevoked`, `UnknownIssuer`, ...).
    Webpki(webpki::Error),
    /// rustls-webpki was given no CRL to apply.
    NoCrls,
    /// `openssl` exited unsuccessfully: what it printed (stdout, then stderr).
    Openssl(String),
    /// A file the check needed could not be written, or `openssl` could not be started.
    Io(std::io::Error),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The variant's name, as the tests compare it (`CertRevoked`).
            Rejected::Webpki(e) => write!(f, "{e:?}"),
            Rejected::NoCrls => f.write_str("CrlsRequired (no CRL was given)"),
            Rejected::Openssl(printed) => f.write_str(printed),
            Rejected::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Rejected {}

fn unix(at: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.unix_timestamp().max(0) as u64))
}

/// The DER of `roots`, and of `chain` split into its leaf and intermediates.
fn ders<'a>(
    chain: &'a [Certificate],
    roots: &'a [Certificate],
) -> (Vec<CertificateDer<'a>>, CertificateDer<'a>, Vec<CertificateDer<'a>>) {
    let der = |c: &'a Certificate| CertificateDer::from(c.der());
    (roots.iter().map(der).collect(), der(&chain[0]), chain[1..].iter().map(der).collect())
}

fn anchors<'a>(root_ders: &'a [CertificateDer<'a>]) -> Result<Vec<rustls_pki_types::TrustAnchor<'a>>, Rejected> {
    root_ders.iter().map(|d| webpki::anchor_from_trusted_cert(d).map_err(Rejected::Webpki)).collect()
}

/// rustls-webpki, directly: `chain` (leaf first) is an end entity under `roots` at `at`, for
/// TLS client and server use alike.
pub fn webpki(chain: &[Certificate], roots: &[Certificate], at: OffsetDateTime) -> Result<(), Rejected> {
    let (root_ders, leaf, inter) = ders(chain, roots);
    let anchors = anchors(&root_ders)?;
    let ee = webpki::EndEntityCert::try_from(&leaf).map_err(Rejected::Webpki)?;
    for usage in [webpki::KeyUsage::client_auth(), webpki::KeyUsage::server_auth()] {
        ee.verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &anchors, &inter, unix(at), usage, None, None)
            .map_err(Rejected::Webpki)?;
    }
    Ok(())
}

/// rustls-webpki with `crls` applied to the whole chain, an unknown status refused and stale
/// CRLs enforced (Envoy's rule for `ca-crl.pem`), for client use.
pub fn webpki_with_crls(
    chain: &[Certificate],
    roots: &[Certificate],
    crls: &[Crl],
    at: OffsetDateTime,
) -> Result<(), Rejected> {
    let (root_ders, ee_der, inter) = ders(chain, roots);
    let anchors = anchors(&root_ders)?;
    let ee = webpki::EndEntityCert::try_from(&ee_der).map_err(Rejected::Webpki)?;
    let parsed = crls
        .iter()
        .map(|c| webpki::BorrowedCertRevocationList::from_der(c.der()).map(Into::into).map_err(Rejected::Webpki))
        .collect::<Result<Vec<webpki::CertRevocationList<'_>>, _>>()?;
    let refs: Vec<&webpki::CertRevocationList<'_>> = parsed.iter().collect();
    let revocation = webpki::RevocationOptionsBuilder::new(&refs)
        .map_err(|_| Rejected::NoCrls)?
        .with_depth(webpki::RevocationCheckDepth::Chain)
        .with_status_policy(webpki::UnknownStatusPolicy::Deny)
        .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
        .build();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &inter,
        unix(at),
        webpki::KeyUsage::client_auth(),
        Some(revocation),
        None,
    )
    .map(|_| ())
    .map_err(Rejected::Webpki)
}

/// Whether the system has `openssl` (tests that need it say so and skip when it has not).
pub fn openssl_available() -> bool {
    let found = Command::new("openssl").arg("version").output().map(|o| o.status.success()).unwrap_or(false);
    if !found {
        eprintln!("SKIPPED openssl checks: no openssl on PATH");
    }
    found
}

/// Runs `openssl` with `args`: whether it succeeded and what it printed (stdout, then stderr);
/// `None` when there is no `openssl` to run.
pub fn openssl(args: &[&str]) -> Option<(bool, String)> {
    let o = Command::new("openssl").args(args).output().ok()?;
    Some((o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))))
}

/// `openssl verify` of the first certificate of a file, built up as the test needs it.
#[derive(Clone, Debug)]
pub struct OpensslVerify {
    args: Vec<OsString>,
    cert: OsString,
}

impl OpensslVerify {
    /// Verifies the first certificate of `cert` (a PEM file).
    pub fn new(cert: &Path) -> Self {
        OpensslVerify { args: vec!["verify".into()], cert: cert.into() }
    }

    fn arg(mut self, flag: &str, value: impl Into<OsString>) -> Self {
        self.args.push(flag.into());
        self.args.push(value.into());
        self
    }

    /// The trusted roots (`-CAfile`).
    pub fn roots(self, file: &Path) -> Self {
        self.arg("-CAfile", file)
    }

    /// Untrusted intermediates (`-untrusted`).
    pub fn untrusted(self, file: &Path) -> Self {
        self.arg("-untrusted", file)
    }

    /// The purpose checked (`-purpose sslclient`, ...).
    pub fn purpose(self, purpose: &str) -> Self {
        self.arg("-purpose", purpose)
    }

    /// Strict X.509 (`-x509_strict`).
    pub fn strict(mut self) -> Self {
        self.args.push("-x509_strict".into());
        self
    }

    /// The CRLs of `file`, checked for every CA of the chain (`-crl_check_all`), as Envoy does.
    pub fn crls(mut self, file: &Path) -> Self {
        self.args.push("-crl_check_all".into());
        self.arg("-CRLfile", file)
    }

    /// Verify as of `at` (`-attime`).
    pub fn at(self, at: OffsetDateTime) -> Self {
        self.arg("-attime", at.unix_timestamp().to_string())
    }

    /// Runs it: `Err` holds what openssl printed.
    pub fn run(self) -> Result<(), Rejected> {
        let out = Command::new("openssl").args(&self.args).arg(&self.cert).output().map_err(Rejected::Io)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Rejected::Openssl(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }
}

/// Writes `leaf`, `untrusted` and `roots` as PEM files into `dir` and verifies the leaf with
/// `openssl verify -x509_strict -purpose sslclient`.
pub fn openssl_verify_certs(
    dir: &Path,
    leaf: &Certificate,
    untrusted: &[Certificate],
    roots: &[Certificate],
) -> Result<(), Rejected> {
    openssl_verify_certs_at(dir, leaf, untrusted, roots, None)
}

/// [`openssl_verify_certs`] as of `at` (`-attime`), for rehearsals at a later time.
pub fn openssl_verify_certs_at(
    dir: &Path,
    leaf: &Certificate,
    untrusted: &[Certificate],
    roots: &[Certificate],
    at: Option<OffsetDateTime>,
) -> Result<(), Rejected> {
    let pem = |c: &[Certificate]| c.iter().map(Certificate::to_pem).collect::<String>();
    let (l, u, r) = (dir.join("leaf.pem"), dir.join("untrusted.pem"), dir.join("roots.pem"));
    std::fs::write(&l, leaf.to_pem()).map_err(Rejected::Io)?;
    std::fs::write(&u, pem(untrusted)).map_err(Rejected::Io)?;
    std::fs::write(&r, pem(roots)).map_err(Rejected::Io)?;
    let v = OpensslVerify::new(&l).strict().purpose("sslclient").roots(&r).untrusted(&u);
    match at {
        Some(at) => v.at(at).run(),
        None => v.run(),
    }
}

/// One cluster as its peers see it: a workload's chain (leaf first), and what the cluster's
/// proxies check a peer's chain against (`root-cert.pem`, `ca-crl.pem`).
#[derive(Clone, Debug)]
pub struct Peer {
    /// The cluster.
    pub name: String,
    /// A workload certificate of the cluster, with its intermediates.
    pub chain: Vec<Certificate>,
    /// The cluster's trust bundle.
    pub roots: Vec<Certificate>,
    /// The cluster's CRL set (empty: it checks none).
    pub crls: Vec<Crl>,
}

/// Every ordered pair (a, b): a workload of a, as b's proxies check it: rustls-webpki with b's
/// roots and, when b publishes CRLs, b's set applied to every CA of the chain (unknown status
/// refused); and `openssl verify -x509_strict` (with `-crl_check_all` then), when there is an
/// `openssl`. Returns each refusal as `a -> b (verifier): why`.
pub fn refused_pairs(dir: &Path, peers: &[Peer], at: OffsetDateTime) -> Vec<String> {
    let openssl = openssl_available();
    let pem = |c: &[Certificate]| c.iter().map(Certificate::to_pem).collect::<String>();
    let mut refused = Vec::new();
    for a in peers {
        for b in peers {
            let webpki = if b.crls.is_empty() {
                webpki(&a.chain, &b.roots, at)
            } else {
                webpki_with_crls(&a.chain, &b.roots, &b.crls, at)
            };
            if let Err(e) = webpki {
                refused.push(format!("{} -> {} (rustls-webpki): {e}", a.name, b.name));
            }
            if !openssl {
                continue;
            }
            let files =
                [("leaf.pem", pem(&a.chain[..1])), ("untrusted.pem", pem(&a.chain[1..])), ("roots.pem", pem(&b.roots))];
            let crl_pem: String = b.crls.iter().map(Crl::to_pem).collect();
            let written = files
                .iter()
                .chain(std::iter::once(&("crls.pem", crl_pem)))
                .try_for_each(|(name, text)| std::fs::write(dir.join(name), text));
            let v = written.map_err(Rejected::Io).and_then(|()| {
                let v = OpensslVerify::new(&dir.join("leaf.pem"))
                    .strict()
                    .purpose("sslclient")
                    .roots(&dir.join("roots.pem"))
                    .untrusted(&dir.join("untrusted.pem"))
                    .at(at);
                if b.crls.is_empty() { v } else { v.crls(&dir.join("crls.pem")) }.run()
            });
            if let Err(e) = v {
                refused.push(format!("{} -> {} (openssl): {e}", a.name, b.name));
            }
        }
    }
    refused
}
