//! Certificate revocation lists (RFC 5280 section 5): signed by a [`SigningCa`], read from
//! PEM (`X509 CRL`), checked against their issuer, and applied when a workload chain is
//! verified ([`crate::verify_workload_chain_with_crls`]).
//!
//! What istiod and Envoy do with a CRL (and why a fleet needs one per CA in every chain) is
//! written down in docs/istiod-crl.md.

use core::fmt;
use core::ops::Range;

use der::Decode;
use time::OffsetDateTime;

use crate::ca::SigningCa;
use crate::cert::{tbs_range, Certificate, SignatureError};
use crate::error::{Error, Result};
use crate::external::RcgenSigner;
use crate::pem;

/// The PEM label of a CRL.
pub const CRL_LABEL: &str = "X509 CRL";

/// Why a certificate was revoked (RFC 5280 5.3.1), as far as meshca revokes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevocationReason {
    /// The CA's key leaked (the default).
    #[default]
    KeyCompromise,
    /// Replaced by a newer certificate.
    Superseded,
    /// The cluster is gone.
    CessationOfOperation,
    /// No reason given (a CRL read from elsewhere may say so).
    Unspecified,
}

impl RevocationReason {
    /// Every reason meshca revokes with, in `--help` order.
    pub const ALL: [RevocationReason; 3] =
        [RevocationReason::KeyCompromise, RevocationReason::Superseded, RevocationReason::CessationOfOperation];

    /// RFC 5280's name: `keyCompromise`, `superseded`, `cessationOfOperation`, `unspecified`.
    pub fn name(self) -> &'static str {
        match self {
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::Unspecified => "unspecified",
        }
    }

    fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        [RevocationReason::Unspecified, RevocationReason::KeyCompromise]
            .into_iter()
            .chain(Self::ALL)
            .find(|r| r.code() == code)
    }

    fn rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for RevocationReason {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|r| r.name().eq_ignore_ascii_case(s.trim())).ok_or_else(|| Error::InvalidParameter {
            field: "reason".into(),
            reason: format!(
                "`{}` is not a revocation reason meshca uses: keyCompromise, superseded or cessationOfOperation",
                s.chars().take(64).collect::<String>()
            ),
        })
    }
}

/// One revoked certificate: its serial number (DER INTEGER content, big-endian), when, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Revoked {
    /// The certificate's serial number bytes.
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why (`None` when a CRL read from elsewhere gives no reason).
    pub reason: Option<RevocationReason>,
}

impl Revoked {
    /// An entry for `cert`, revoked at `at` for `reason`.
    pub fn of(cert: &Certificate, at: OffsetDateTime, reason: RevocationReason) -> Self {
        Revoked { serial: cert.serial_bytes().to_vec(), revoked_at: at, reason: Some(reason) }
    }

    /// An entry for the serial `serial` (DER INTEGER content), revoked at `at` for `reason`.
    pub fn of_serial(serial: Vec<u8>, at: OffsetDateTime, reason: RevocationReason) -> Self {
        Revoked { serial, revoked_at: at, reason: Some(reason) }
    }

    /// The serial as colon-free lowercase hex (as `openssl crl -text` shows it, without colons).
    pub fn serial_hex(&self) -> String {
        self.serial.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A parsed CRL. Its signature is checked by [`Crl::check`], not on parsing.
#[derive(Clone)]
pub struct Crl {
    der: Vec<u8>,
    parsed: x509_cert::crl::CertificateList,
    tbs: Range<usize>,
}

impl fmt::Debug for Crl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crl")
            .field("issuer", &self.issuer())
            .field("entries", &self.entries().len())
            .field("next_update", &self.next_update())
            .finish()
    }
}

impl PartialEq for Crl {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}
impl Eq for Crl {}

impl Crl {
    /// Reads one DER CRL. `file` names it in errors.
    pub fn from_der(der_bytes: &[u8], file: &str) -> Result<Self> {
        let bad = |detail: String| Error::Crl { file: file.to_owned(), detail };
        // Parsing costs many times the input in memory: a CRL meshca would use is far smaller
        // (10,000 entries of some 40 bytes), so anything larger is refused before it is parsed.
        if der_bytes.len() > MAX_CRL_DER_BYTES {
            return Err(bad(format!(
                "is {} bytes; meshca reads CRLs of at most {} KiB (some 20,000 entries)",
                der_bytes.len(),
                MAX_CRL_DER_BYTES / 1024
            )));
        }
        let parsed =
            x509_cert::crl::CertificateList::from_der(der_bytes).map_err(|e| bad(format!("not a DER CRL: {e}")))?;
        let tbs = tbs_range(der_bytes).map_err(|e| bad(e.to_string()))?;
        if parsed.tbs_cert_list.next_update.is_none() {
            return Err(bad(
                "has no nextUpdate: RFC 5280 5.1.2.5 requires one, and Envoy and OpenSSL cannot tell when it goes stale"
                    .into(),
            ));
        }
        if parsed.signature_algorithm != parsed.tbs_cert_list.signature {
            return Err(bad("its two signature algorithm fields differ (RFC 5280 5.1.1.2)".into()));
        }
        Ok(Crl { der: der_bytes.to_vec(), parsed, tbs })
    }

    /// Reads every `X509 CRL` block of a PEM file (`ca-crl.pem` holds one per CA).
    pub fn from_pem_all(data: &[u8], file: &str) -> Result<Vec<Self>> {
        let blocks = pem::decode_all(file, CRL_LABEL, data)?;
        let mut out = Vec::with_capacity(blocks.len());
        for (i, block) in blocks.iter().enumerate() {
            if block.label != CRL_LABEL {
                return Err(Error::UnexpectedPemLabel {
                    file: file.to_owned(),
                    index: i + 1,
                    label: block.label.clone(),
                    expected: CRL_LABEL,
                });
            }
            out.push(Crl::from_der(&block.der, &format!("{file} (CRL #{})", i + 1))?);
        }
        if out.is_empty() {
            return Err(Error::EmptyPem { file: file.to_owned(), expected: CRL_LABEL });
        }
        Ok(out)
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// PEM (`-----BEGIN X509 CRL-----`).
    pub fn to_pem(&self) -> String {
        pem::encode(CRL_LABEL, &self.der)
    }

    /// The issuer's name, as the certificates show names.
    pub fn issuer(&self) -> String {
        crate::cert::name_string(&self.parsed.tbs_cert_list.issuer)
    }

    fn issuer_der(&self) -> Vec<u8> {
        der::Encode::to_der(&self.parsed.tbs_cert_list.issuer).unwrap_or_default()
    }

    /// Whether `ca` is this CRL's issuer by name (the signature is [`Crl::check`]'s).
    pub fn is_issued_by_name(&self, ca: &Certificate) -> bool {
        self.issuer_der() == ca.subject_der()
    }

    /// thisUpdate.
    pub fn this_update(&self) -> OffsetDateTime {
        to_time(self.parsed.tbs_cert_list.this_update)
    }

    /// nextUpdate (always present: [`Crl::from_der`] requires it).
    pub fn next_update(&self) -> OffsetDateTime {
        self.parsed.tbs_cert_list.next_update.map(to_time).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// The revoked certificates.
    pub fn entries(&self) -> Vec<Revoked> {
        let reason_oid = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.21");
        self.parsed
            .tbs_cert_list
            .revoked_certificates
            .iter()
            .flatten()
            .map(|r| Revoked {
                serial: r.serial_number.as_bytes().to_vec(),
                revoked_at: to_time(r.revocation_date),
                reason: r
                    .crl_entry_extensions
                    .iter()
                    .flatten()
                    .find(|e| e.extn_id == reason_oid)
                    .and_then(|e| e.extn_value.as_bytes().get(2).copied())
                    .and_then(RevocationReason::from_code),
            })
            .collect()
    }

    /// The CRL number (RFC 5280 5.2.3), when the CRL has one that fits in 64 bits.
    pub fn number(&self) -> Option<u64> {
        let oid = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.20");
        let ext = self.parsed.tbs_cert_list.crl_extensions.iter().flatten().find(|e| e.extn_id == oid)?;
        let int = der::asn1::UintRef::from_der(ext.extn_value.as_bytes()).ok()?;
        let bytes = canonical_serial(int.as_bytes());
        if bytes.len() > 8 {
            return None;
        }
        Some(bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
    }

    /// What the issuer's name says of a meshca cluster intermediate (`O=..., CN=..., L=<cluster>,
    /// serialNumber=<serial hex>`): the cluster (X.520 localityName) and the serial (X.520
    /// serialNumber, decoded from hex), where the name has them.
    pub fn issuer_cluster_and_serial(&self) -> (Option<String>, Option<Vec<u8>>) {
        let locality = der::asn1::ObjectIdentifier::new_unwrap("2.5.4.7");
        let serial = der::asn1::ObjectIdentifier::new_unwrap("2.5.4.5");
        let text = |v: &der::asn1::Any| -> Option<String> {
            v.decode_as::<der::asn1::Utf8StringRef<'_>>()
                .map(|s| s.as_str().to_owned())
                .or_else(|_| v.decode_as::<der::asn1::PrintableStringRef<'_>>().map(|s| s.as_str().to_owned()))
                .ok()
        };
        let (mut cluster, mut number) = (None, None);
        for rdn in self.parsed.tbs_cert_list.issuer.0.iter() {
            for atv in rdn.0.iter() {
                if atv.oid == locality {
                    cluster = text(&atv.value);
                } else if atv.oid == serial {
                    number = text(&atv.value).and_then(|h| parse_serial(&h).ok());
                }
            }
        }
        (cluster, number)
    }

    /// Whether this CRL revokes `cert` (its issuer is this CRL's, and its serial is listed).
    pub fn revokes(&self, cert: &Certificate) -> bool {
        cert.issuer_der() == self.issuer_der()
            && self.entries().iter().any(|r| canonical_serial(&r.serial) == canonical_serial(cert.serial_bytes()))
    }

    /// Verifies the signature with `issuer`'s public key.
    pub fn verify_signed_by(&self, issuer: &Certificate) -> core::result::Result<(), SignatureError> {
        let key_type = issuer.key_type().ok_or(SignatureError::Unsupported)?;
        let signature = self.parsed.signature.as_bytes().ok_or(SignatureError::Invalid)?;
        crate::cert::verify_signature(
            self.parsed.signature_algorithm.oid,
            key_type,
            issuer.public_key_raw(),
            &self.der[self.tbs.clone()],
            signature,
        )
    }

    /// Whether `now` lies in the CRL's window, with the allowance before thisUpdate that
    /// [`Crl::check`] explains.
    pub fn is_current_at(&self, now: OffsetDateTime) -> bool {
        self.started_by(now) && now < self.next_update()
    }

    /// Whether `now` is at most [`BACKDATE`](crate::BACKDATE) before thisUpdate (checked
    /// arithmetic: neither time can make it panic).
    fn started_by(&self, now: OffsetDateTime) -> bool {
        self.this_update().checked_sub(crate::BACKDATE).is_none_or(|t| t <= now)
    }

    /// What a consumer checks before it uses the CRL: `issuer` is its issuer by name and by
    /// signature, may sign CRLs (a keyUsage without cRLSign makes OpenSSL and Envoy refuse it),
    /// and `now` lies in [thisUpdate - [`BACKDATE`](crate::BACKDATE), nextUpdate).
    ///
    /// The allowance before thisUpdate is the one meshca gives clusters by backdating what it
    /// signs, granted the other way: a PKI signs its CRL at its own clock, and in the middle of
    /// a run whose `now` was read when it started (a revocation that first re-issues a
    /// cluster takes seconds), so a CRL signed an instant ago can start after `now`; a
    /// consumer reads it later still. A CRL that starts further ahead is refused: its signer's
    /// clock is wrong, and consumers would refuse it too.
    pub fn check(&self, issuer: &Certificate, now: OffsetDateTime, file: &str) -> Result<()> {
        let bad = |detail: String| Error::Crl { file: file.to_owned(), detail };
        if !self.is_issued_by_name(issuer) {
            return Err(bad(format!("is issued by {}, not by {}", self.issuer(), issuer.subject())));
        }
        self.verify_signed_by(issuer)
            .map_err(|e| bad(format!("its signature does not verify under {}'s key ({e:?})", issuer.subject())))?;
        if issuer.allows_crl_sign() == Some(false) {
            return Err(bad(format!("{} has a keyUsage without cRLSign: it may not sign CRLs", issuer.subject())));
        }
        if !self.started_by(now) {
            return Err(bad(format!("is not valid yet (thisUpdate {})", crate::format_time(self.this_update()))));
        }
        if now >= self.next_update() {
            return Err(bad(format!(
                "is stale since {} (nextUpdate): Envoy refuses every chain it covers; sign a new one",
                crate::format_time(self.next_update())
            )));
        }
        Ok(())
    }
}

/// Checks a CRL set (`ca-crl.pem`) against the path of the bundle it is published with, as
/// Envoy applies it (every CA of a chain needs its CRL once any is given, docs/istiod-crl.md):
/// every certificate of `path` (ca-cert up to the root) has exactly one CRL named for it in
/// `crls`, signed by it and current at `now` (two CRLs with one issuer name would leave
/// rustls-webpki checking the first against the wrong key), and no CRL of the set lists any
/// certificate of `path` (a bundle whose own CA is revoked is refused: nothing it signs would be
/// accepted). `file` names the CRL file in errors.
pub fn check_crl_set(crls: &[Crl], path: &[Certificate], now: OffsetDateTime, file: &str) -> Result<()> {
    let bad = |detail: String| Error::Crl { file: file.to_owned(), detail };
    for cert in path {
        let named: Vec<&Crl> = crls.iter().filter(|c| c.is_issued_by_name(cert)).collect();
        match named.as_slice() {
            [] => {
                return Err(bad(format!(
                    "has no CRL issued by {}: with CRLs in use, Envoy refuses every chain through a CA without one",
                    cert.subject()
                )))
            }
            [one] => one.check(cert, now, file)?,
            more => {
                return Err(bad(format!(
                    "has {} CRLs issued by the name {}: a verifier would check one of them against the wrong key",
                    more.len(),
                    cert.subject()
                )))
            }
        }
    }
    for cert in path {
        if let Some(crl) = crls.iter().find(|c| c.revokes(cert)) {
            return Err(bad(format!(
                "the CRL of {} revokes {} (serial {}), which this bundle uses: nothing it signs would be accepted",
                crl.issuer(),
                cert.subject(),
                crate::cert::hex_colon(cert.serial_bytes()),
            )));
        }
    }
    Ok(())
}

/// Checks a cluster's chain `path` against the CRL set of every peer cluster, as each peer's
/// Envoy applies it ([`check_crl_set`]: a CRL for every CA of the chain, current and signed by
/// it, none revoking it). Peers without CRLs check nothing. The first peer whose set refuses the
/// chain is returned with why: that peer refuses the cluster's workloads. Errors name the file
/// as `<peer>/ca-crl.pem`.
pub fn check_peer_crl_sets<'a>(
    path: &[Certificate],
    peers: impl IntoIterator<Item = (&'a str, &'a [Crl])>,
    now: OffsetDateTime,
) -> core::result::Result<(), (&'a str, Error)> {
    for (peer, crls) in peers {
        if crls.is_empty() {
            continue;
        }
        let file = format!("{peer}/{}", crate::CA_CRL);
        check_crl_set(crls, path, now, &file).map_err(|e| (peer, e))?;
    }
    Ok(())
}

/// The largest CRL (DER) meshca parses.
pub const MAX_CRL_DER_BYTES: usize = 1024 * 1024;

/// The CRL set a bundle carries (its `ca-crl.pem`, none when it has none), checked as Envoy
/// applies it to the bundle's own chain `path` ([`check_crl_set`]): the one check of a bundle's
/// CRLs that every command judging a bundle applies, after the bundle itself parsed.
pub fn bundle_crls(files: &crate::Files, path: &[Certificate], now: OffsetDateTime) -> Result<Vec<Crl>> {
    let Some(pem) = files.get(crate::CA_CRL) else { return Ok(Vec::new()) };
    let crls = Crl::from_pem_all(pem, crate::CA_CRL)?;
    check_crl_set(&crls, path, now, crate::CA_CRL)?;
    Ok(crls)
}

/// Reads a serial number written in hex (`6e:bb:47`, `6EBB47`; at most 20 octets, RFC 5280
/// 4.1.2.2), as `openssl x509 -serial` and `meshca crl show` print it.
pub fn parse_serial(s: &str) -> Result<Vec<u8>> {
    let clean: String = s.trim().chars().filter(|c| *c != ':').collect();
    let bad = || Error::InvalidParameter {
        field: "serial".into(),
        reason: "is not a hex serial number of at most 20 octets (value not shown)".into(),
    };
    if clean.is_empty() || !clean.len().is_multiple_of(2) || clean.len() > 42 {
        return Err(bad());
    }
    (0..clean.len())
        .step_by(2)
        .map(|i| clean.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(bad))
        .collect()
}

/// A serial without leading zero octets (DER keeps one for a set top bit), so two encodings of
/// one serial compare equal.
pub fn canonical_serial(serial: &[u8]) -> &[u8] {
    let start = serial.iter().position(|&b| b != 0).unwrap_or(serial.len());
    &serial[start..]
}

fn to_time(t: x509_cert::time::Time) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + t.to_unix_duration()
}

impl SigningCa {
    /// Signs a CRL listing `revoked`, valid from `this_update` until `next_update`, with CRL
    /// number `number` (monotonic per issuer: RFC 5280 5.2.3). The result is checked as a
    /// consumer would ([`Crl::check`]) before it is returned.
    pub fn sign_crl(
        &self,
        revoked: &[Revoked],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
        number: u64,
    ) -> Result<Crl> {
        let failed = |detail: String| Error::Issuance { what: "a CRL", detail };
        if next_update <= this_update {
            return Err(Error::InvalidParameter {
                field: "nextUpdate".into(),
                reason: "must be after thisUpdate".into(),
            });
        }
        let ca = self.bundle().ca_cert();
        let signer = RcgenSigner::new(self.bundle().ca_key());
        let issuer = rcgen::Issuer::from_ca_cert_der(&rustls_pki_types::CertificateDer::from(ca.der()), &signer)
            .map_err(|_| Error::IssuerNameNotRepresentable { subject: ca.subject() })?;
        let params = rcgen::CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: rcgen::SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(&r.serial),
                    revocation_time: r.revoked_at,
                    reason_code: r.reason.map(RevocationReason::rcgen),
                    invalidity_date: None,
                })
                .collect(),
            // The CRL's authorityKeyIdentifier must be the issuer's own subjectKeyIdentifier,
            // whoever computed it (a CA an upstream PKI issued uses its own method): OpenSSL
            // matches a CRL to its issuer by it, and finds none otherwise.
            key_identifier_method: match ca.subject_key_id_bytes() {
                Some(id) => rcgen::KeyIdMethod::PreSpecified(id),
                None => rcgen::KeyIdMethod::Sha256,
            },
        };
        let crl = params.signed_by(&issuer).map_err(|e| match signer.error("a CRL", e) {
            e @ Error::ExternalKey { .. } => e,
            other => failed(other.to_string()),
        })?;
        let crl = Crl::from_der(crl.der(), "issued CRL")?;
        if crl.issuer_der() != ca.subject_der() {
            return Err(Error::IssuerNameNotRepresentable { subject: ca.subject() });
        }
        crl.check(ca, this_update, "issued CRL")?;
        Ok(crl)
    }
}
