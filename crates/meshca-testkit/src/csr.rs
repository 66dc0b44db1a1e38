//! Workload certificate requests as istiod and hostile requesters make them: rcgen for the
//! well-formed ones (any SANs, a CA bit), the system `openssl req` for what rcgen refuses to
//! make (SHA-1 signatures, RSA-1024 keys).

use rcgen::{CertificateParams, DistinguishedName, IsCa, KeyPair, SanType, SignatureAlgorithm};

/// The request signature algorithms the suites use, so they need not depend on rcgen.
pub use rcgen::{PKCS_ECDSA_P256_SHA256 as P256, PKCS_ECDSA_P384_SHA384 as P384};

/// A SAN of a test request.
#[derive(Clone, Debug)]
pub enum San {
    /// A URI (a SPIFFE ID).
    Uri(&'static str),
    /// A DNS name.
    Dns(&'static str),
    /// An IPv4 address.
    Ip([u8; 4]),
    /// An email address.
    Email(&'static str),
}

/// A PEM request signed by a new key of `alg` (`rcgen::PKCS_ECDSA_P256_SHA256`, ...), with
/// `sans`, asking for a CA when `ca`.
pub fn request(alg: &'static SignatureAlgorithm, sans: &[San], ca: bool) -> String {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = sans
        .iter()
        .map(|s| match s {
            San::Uri(u) => SanType::URI((*u).try_into().unwrap()),
            San::Dns(d) => SanType::DnsName((*d).try_into().unwrap()),
            San::Ip(ip) => SanType::IpAddress(std::net::IpAddr::from(*ip)),
            San::Email(e) => SanType::Rfc822Name((*e).try_into().unwrap()),
        })
        .collect();
    if ca {
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    p.serialize_request(&key).unwrap().pem().unwrap()
}

/// A P-256 request for `spiffe_id` alone, as istio-agent makes it.
pub fn spiffe_request(spiffe_id: &'static str) -> String {
    request(&rcgen::PKCS_ECDSA_P256_SHA256, &[San::Uri(spiffe_id)], false)
}

/// `openssl req -new` with `args` (key and digest options), a URI SAN of `spiffe_id` and an
/// empty-ish subject: the PEM request, or `None` where openssl is not installed.
pub fn openssl_request(args: &[&str], spiffe_id: &str) -> Option<String> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = crate::tempdir(&format!("openssl-req-{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let out = dir.join("req.pem");
    let san = format!("subjectAltName=URI:{spiffe_id}");
    let status = std::process::Command::new("openssl")
        .args(["req", "-new", "-nodes", "-subj", "/O=test", "-addext", &san, "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(&out)
        .args(args)
        .output()
        .ok()?;
    assert!(status.status.success(), "openssl req: {}", String::from_utf8_lossy(&status.stderr));
    let pem = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    Some(pem)
}

/// The DER SubjectPublicKeyInfo of a new key of `alg` (a PodCertificateRequest's
/// `spec.pkixPublicKey`), e.g. [`P256`] or `rcgen::PKCS_ED25519`.
pub fn public_key(alg: &'static SignatureAlgorithm) -> Vec<u8> {
    rcgen::PublicKeyData::subject_public_key_info(&KeyPair::generate_for(alg).unwrap())
}

/// Ed25519, which Kubernetes allows in a PodCertificateRequest and meshca does not sign.
pub use rcgen::PKCS_ED25519 as ED25519;
