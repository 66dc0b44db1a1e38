//! Certificate profiles: one function per role, each extension with its source.
//!
//! The profiles decide every extension; a CSR contributes only its public key.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::spiffe::SpiffeId;

/// The SAN Istio's tools/certs puts on every per-cluster intermediate.
pub const ISTIOD_SAN: &str = "istiod.istio-system.svc";

/// X.520 serialNumber (2.5.4.5), in a cluster intermediate's subject.
const SERIAL_NUMBER_OID: [u64; 4] = [2, 5, 4, 5];

/// How far notBefore is backdated, so clusters whose clocks run slightly behind the issuer's
/// accept a certificate at once (istiod backdates workload certificates by 2 minutes).
pub const BACKDATE: time::Duration = time::Duration::minutes(5);

/// Validity window and serial shared by every profile.
pub(crate) struct Common {
    pub(crate) serial: SerialNumber,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
}

fn base(common: Common, dn: DistinguishedName) -> CertificateParams {
    let mut p = CertificateParams::default();
    // RFC 5280 4.1.2.2: positive, unique, at most 20 octets; ours are 127 random bits.
    p.serial_number = Some(common.serial);
    // RFC 5280 4.1.2.5.
    p.not_before = common.not_before;
    p.not_after = common.not_after;
    p.distinguished_name = dn;
    p
}

/// Root CA (Istio tools/certs `root-ca`): O=<org>, CN=<cn>.
pub(crate) fn root(common: Common, common_name: &str, organization: &str, pathlen: Option<u8>) -> CertificateParams {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, organization);
    dn.push(DnType::CommonName, common_name);
    let mut p = base(common, dn);
    // RFC 5280 4.2.1.9: CA:TRUE, critical (rcgen always marks basicConstraints critical).
    // Istio's root has no pathlen; one may be set to bound the hierarchy.
    p.is_ca = IsCa::Ca(match pathlen {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    // RFC 5280 4.2.1.3: keyCertSign + cRLSign for a CA; digitalSignature as Istio's root has it.
    // rcgen marks keyUsage critical.
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    // RFC 5280 4.2.1.2: subjectKeyIdentifier (rcgen writes it for CAs; SHA-256 truncated to 160 bits).
    // No authorityKeyIdentifier: it is self-signed (4.2.1.1 allows omitting it).
    p
}

/// Per-cluster intermediate (Istio tools/certs `<cluster>-cacerts`):
/// O=<org>, CN=Intermediate CA, L=<cluster>, serialNumber=<the certificate's serial, hex>.
///
/// The serialNumber attribute (X.520 2.5.4.5) makes every intermediate's name its own: a CRL is
/// found by its issuer's name (rustls-webpki takes the first CRL whose issuer name matches), so a
/// cluster's rotated-out intermediate and its successor, both live for a while, need distinct
/// names for each one's CRL to be found (docs/istiod-crl.md).
pub(crate) fn intermediate(
    common: Common,
    cluster: &str,
    organization: &str,
    common_name: &str,
    pathlen: u8,
) -> Result<CertificateParams> {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, organization);
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::LocalityName, cluster);
    let serial_hex: String = common.serial.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    dn.push(
        DnType::CustomDnType(SERIAL_NUMBER_OID.to_vec()),
        rcgen::DnValue::PrintableString(
            serial_hex
                .try_into()
                .map_err(|_| Error::Issuance { what: "an intermediate", detail: "serial is not printable".into() })?,
        ),
    );
    let mut p = base(common, dn);
    // RFC 5280 4.2.1.9: CA:TRUE pathlen:<n> critical; Istio uses pathlen:0 so a cluster CA
    // issues only workload certificates.
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(pathlen));
    // RFC 5280 4.2.1.3, critical: keyCertSign + cRLSign; digitalSignature as Istio's has it.
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    // Istio tools/certs: SAN DNS:istiod.istio-system.svc (subject is non-empty, so not critical).
    p.subject_alt_names = vec![SanType::DnsName(
        ISTIOD_SAN
            .try_into()
            .map_err(|_| Error::Issuance { what: "an intermediate", detail: "istiod SAN is not IA5".into() })?,
    )];
    // RFC 5280 4.2.1.1: authorityKeyIdentifier = the issuer's subjectKeyIdentifier.
    p.use_authority_key_identifier_extension = true;
    // No extendedKeyUsage: a CA EKU without clientAuth breaks istiod (istio#27193).
    Ok(p)
}

/// Workload certificate exactly as istiod issues it (security/pkg/pki/util/generate_cert.go).
pub(crate) fn leaf(common: Common, id: &SpiffeId) -> Result<CertificateParams> {
    leaf_with_dns(common, id, &[])
}

/// [`leaf`] with DNS SANs after the SPIFFE ID (a workload request the policy lets name them).
pub(crate) fn leaf_with_dns(common: Common, id: &SpiffeId, dns: &[String]) -> Result<CertificateParams> {
    leaf_for_uri(common, &id.to_string(), dns)
}

/// The workload profile for any SPIFFE ID (checked by the caller) and DNS SANs.
pub(crate) fn leaf_for_uri(common: Common, id: &str, dns: &[String]) -> Result<CertificateParams> {
    // Empty subject: the identity is the URI SAN alone.
    let mut p = base(common, DistinguishedName::new());
    // RFC 5280 4.2.1.6: with an empty subject the SAN extension MUST be critical; rcgen marks it
    // critical exactly when the subject is empty.
    p.subject_alt_names = vec![SanType::URI(
        id.to_owned()
            .try_into()
            .map_err(|_| Error::InvalidSpiffeId { id: id.to_owned(), reason: "not an IA5 string".into() })?,
    )];
    for d in dns {
        p.subject_alt_names.push(SanType::DnsName(d.clone().try_into().map_err(|_| Error::Issuance {
            what: "a workload certificate",
            detail: "a DNS SAN is not an IA5 string".into(),
        })?));
    }
    // istiod: keyUsage digitalSignature | keyEncipherment (critical).
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    // istiod: EKU serverAuth + clientAuth, for both ends of mTLS.
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    // istiod: basicConstraints CA:FALSE (critical).
    p.is_ca = IsCa::ExplicitNoCa;
    // RFC 5280 4.2.1.1: AKI links the leaf to its issuer's key (Go adds it too).
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// A CSR for a per-cluster intermediate: the subject meshca will issue, so the request reads
/// right to a human; the signer's profile decides the real extensions. `name_serial`, when
/// given, is the subject's serialNumber: a CA another PKI signs keeps the subject asked for, so
/// the request itself must make its name its own (see [`intermediate`]).
pub(crate) fn intermediate_request(
    cluster: &str,
    organization: &str,
    common_name: &str,
    name_serial: Option<&str>,
) -> Result<CertificateParams> {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, organization);
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::LocalityName, cluster);
    if let Some(serial) = name_serial {
        dn.push(
            DnType::CustomDnType(SERIAL_NUMBER_OID.to_vec()),
            rcgen::DnValue::PrintableString(
                serial
                    .to_owned()
                    .try_into()
                    .map_err(|_| Error::Issuance { what: "a CSR", detail: "serialNumber is not printable".into() })?,
            ),
        );
    }
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    Ok(p)
}

/// The subject serialNumber of a CA requested from another PKI: its key's SHA-256, the first
/// 16 bytes in hex. Each request makes a new key, so each such CA's name is its own.
pub(crate) fn request_name_serial(public_key_raw: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, public_key_raw).as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The subject serialNumber (X.520 2.5.4.5) of `cert`, if any.
pub(crate) fn name_serial(cert: &crate::cert::Certificate) -> Option<String> {
    cert.subject_attr(der::asn1::ObjectIdentifier::new_unwrap("2.5.4.5"))
}
