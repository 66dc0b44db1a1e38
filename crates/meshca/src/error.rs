//! The one error type of the core crate.
//!
//! Every variant says what was wrong, where (file, certificate subject) and, in its message, what
//! would fix it: a user reading the message should not need the source. Variants never carry key
//! material; the only bytes they quote are certificate names and public data.

use time::OffsetDateTime;

use crate::time_fmt::rfc3339;

/// Everything that can go wrong in meshca's core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- bundle layout -------------------------------------------------------------------
    /// No file of either bundle layout was given.
    #[error(
        "no CA bundle files found (have: {present}); expected ca-cert.pem, ca-key.pem, cert-chain.pem and \
         root-cert.pem (Istio layout) or tls.crt, tls.key and ca.crt (cert-manager layout)"
    )]
    NoBundle {
        /// The file names that were present.
        present: String,
    },

    /// Some but not all files of a layout are present. istiod refuses to start on such a bundle
    /// (`incomplete signing CA bundle detected`).
    #[error(
        "incomplete CA bundle: {missing} is missing (have: {present}); istiod refuses a partial bundle, \
         so provide all of {expected}"
    )]
    MissingFile {
        /// The missing file.
        missing: String,
        /// The file names that were present.
        present: String,
        /// All files the layout needs.
        expected: &'static str,
    },

    // ---- PEM -----------------------------------------------------------------------------
    /// The file is not PEM, or a block is malformed.
    #[error("{file}: not valid PEM ({detail}); expected `-----BEGIN {expected}-----` blocks")]
    Pem {
        /// File name.
        file: String,
        /// The PEM label that was expected.
        expected: &'static str,
        /// What the decoder said.
        detail: String,
    },

    /// The file holds no block of the expected kind.
    #[error("{file}: holds no `{expected}` PEM block; the file is empty or holds something else")]
    EmptyPem {
        /// File name.
        file: String,
        /// The PEM label that was expected.
        expected: &'static str,
    },

    /// An input is larger than meshca reads.
    #[error(
        "{file}: is {size} bytes; meshca reads at most {} MiB from one file (a Secret holds at most 1 MiB); \
         is this the right file?",
        limit / (1024 * 1024)
    )]
    InputTooLarge {
        /// File name.
        file: String,
        /// Its size, or the size read so far.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },

    /// A PEM file holds more blocks than meshca reads.
    #[error("{file}: holds more than {limit} PEM blocks; split it, or remove what does not belong")]
    TooManyPemBlocks {
        /// File name.
        file: String,
        /// The limit.
        limit: usize,
    },

    /// A PEM block has a label other than the one expected.
    #[error("{file}: PEM block #{index} is `{label}`, expected `{expected}`; remove it or put it in the right file")]
    UnexpectedPemLabel {
        /// File name.
        file: String,
        /// 1-based block number.
        index: usize,
        /// The label found.
        label: String,
        /// The label expected.
        expected: &'static str,
    },

    /// A file that must hold exactly one certificate holds several.
    #[error(
        "{file}: holds {count} certificates but must hold only the signing CA certificate; \
         put the issuers into {chain_file}"
    )]
    TooManyCertificates {
        /// File name.
        file: String,
        /// How many certificates it holds.
        count: usize,
        /// Where the others belong.
        chain_file: &'static str,
    },

    // ---- certificates --------------------------------------------------------------------
    /// DER that is not an X.509 certificate.
    #[error("{file}: certificate #{index} is not a valid X.509 certificate ({detail})")]
    CertificateParse {
        /// File name.
        file: String,
        /// 1-based position in the file.
        index: usize,
        /// What the decoder said.
        detail: String,
    },

    /// cert-chain.pem does not start with ca-cert.pem.
    #[error(
        "{file}: the first certificate is {found}, not ca-cert.pem's {expected}; istiod caps workload \
         lifetimes and reports expiry from the first certificate, so the chain must start with the \
         signing CA and run up towards the root"
    )]
    ChainOrder {
        /// The chain file.
        file: String,
        /// Subject of the first certificate found.
        found: String,
        /// Subject of the signing CA.
        expected: String,
    },

    /// A certificate in the chain is not followed by its issuer.
    #[error(
        "{file}: certificate #{index} ({subject}) was issued by {issuer}, but the next certificate is \
         {next}; order the chain from the signing CA up to the root, each issuer right after the \
         certificate it signed"
    )]
    ChainBroken {
        /// The chain file.
        file: String,
        /// 1-based position of the certificate whose issuer does not follow.
        index: usize,
        /// Its subject.
        subject: String,
        /// The issuer it names.
        issuer: String,
        /// The subject of the certificate that follows instead.
        next: String,
    },

    /// A signature in the chain does not verify.
    #[error(
        "{file}: the signature on {subject} does not verify with the public key of {issuer}; the two \
         certificates share a name but not a key (mixed-up CAs, or a re-generated issuer)"
    )]
    BadSignature {
        /// The file holding the certificate.
        file: String,
        /// Subject of the signed certificate.
        subject: String,
        /// Subject of the supposed issuer.
        issuer: String,
    },

    /// The chain does not end at a root in the trust bundle.
    #[error(
        "{file}: the chain ends at {subject}, issued by {issuer}, which is not among the roots in \
         {roots_file} ({roots}); put the root that issued this chain into {roots_file} (istiod says \
         `x509: certificate signed by unknown authority`)"
    )]
    UntrustedChain {
        /// The chain file.
        file: String,
        /// Subject of the last certificate of the chain.
        subject: String,
        /// Issuer it names.
        issuer: String,
        /// The roots file.
        roots_file: String,
        /// Subjects of the roots present.
        roots: String,
    },

    /// A certificate in the trust bundle is not a self-signed root.
    #[error(
        "{file}: {subject} is not self-signed, so it is not a root; root-cert.pem must hold only roots \
         (move intermediates into the chain file)"
    )]
    NotARoot {
        /// The roots file.
        file: String,
        /// Subject of the offending certificate.
        subject: String,
    },

    /// A certificate used as a CA is not a CA.
    #[error(
        "{file}: {subject} is not a CA certificate (basicConstraints CA:TRUE is missing); istiod says \
         `certificate is not authorized to sign other certificates`. Use a CA certificate here, not a \
         server or workload certificate"
    )]
    NotCa {
        /// File name.
        file: String,
        /// Subject.
        subject: String,
    },

    /// A CA certificate's keyUsage does not allow signing certificates.
    #[error(
        "{file}: {subject} has a keyUsage extension without keyCertSign, so it may not sign \
         certificates (RFC 5280 4.2.1.3); re-issue it with keyUsage keyCertSign"
    )]
    NoKeyCertSign {
        /// File name.
        file: String,
        /// Subject.
        subject: String,
    },

    /// A path length constraint is violated.
    #[error(
        "{file}: {subject} has pathLenConstraint {pathlen} but {below} CA certificate(s) stand below it \
         (RFC 5280 4.2.1.9); re-issue it with a larger pathlen or shorten the chain"
    )]
    PathLenExceeded {
        /// File name.
        file: String,
        /// Subject of the constrained CA.
        subject: String,
        /// Its pathLenConstraint.
        pathlen: u8,
        /// CA certificates below it.
        below: usize,
    },

    /// A CA carries an EKU that excludes serverAuth or clientAuth.
    #[error(
        "{file}: {subject} has an extendedKeyUsage without {missing}; workload certificates under it \
         fail verification (istio#27193). Remove the EKU from the CA or include serverAuth and \
         clientAuth"
    )]
    CaEkuTooNarrow {
        /// File name.
        file: String,
        /// Subject.
        subject: String,
        /// Which usages are missing.
        missing: &'static str,
    },

    /// A certificate has expired.
    #[error(
        "{file}: {subject} expired at {} (it is now {}); issue a new one (`cert chain has expired`)",
        rfc3339(*not_after), rfc3339(*now)
    )]
    Expired {
        /// File name.
        file: String,
        /// Subject.
        subject: String,
        /// Its notAfter.
        not_after: OffsetDateTime,
        /// The time of the check.
        now: OffsetDateTime,
    },

    /// A certificate is not valid yet.
    #[error(
        "{file}: {subject} is not valid before {} (it is now {}); check the clock of the machine that \
         issued it, or wait",
        rfc3339(*not_before), rfc3339(*now)
    )]
    NotYetValid {
        /// File name.
        file: String,
        /// Subject.
        subject: String,
        /// Its notBefore.
        not_before: OffsetDateTime,
        /// The time of the check.
        now: OffsetDateTime,
    },

    /// A certificate carries a critical extension meshca does not understand.
    #[error(
        "{file}: {subject} carries a critical extension {oid} that meshca does not recognise; RFC 5280 4.2 \
         requires refusing it (rustls, as in ztunnel, refuses every certificate it signs): re-issue it without \
         that extension or with it non-critical"
    )]
    UnknownCriticalExtension {
        /// File name.
        file: String,
        /// Subject.
        subject: String,
        /// The extension's OID.
        oid: String,
    },

    /// A nameConstraints extension that does not decode or holds a malformed subtree.
    #[error("{file}: {subject} has malformed nameConstraints (RFC 5280 4.2.1.10): {detail}; re-issue the CA")]
    MalformedNameConstraints {
        /// File name.
        file: String,
        /// Subject.
        subject: String,
        /// What is wrong.
        detail: String,
    },

    /// A certificate's own name violates a name constraint of a CA above it.
    #[error(
        "{file}: {subject} has the name {name}, which the nameConstraints of {constrained_by} forbid ({why}); \
         every verifier refuses this chain: re-issue it within the constraints"
    )]
    NameConstraintViolation {
        /// File name.
        file: String,
        /// The certificate whose name is out of bounds.
        subject: String,
        /// The name.
        name: String,
        /// The constraining CA.
        constrained_by: String,
        /// Why it is outside.
        why: String,
    },

    /// A certificate is signed with a broken hash (SHA-1, MD5).
    #[error(
        "{file}: {subject} is signed with {algorithm}, which istiod (Go >= 1.18) rejects; re-issue it \
         with SHA-256 (LibreSSL's openssl on macOS is a common cause, istio#38049)"
    )]
    WeakSignature {
        /// File name.
        file: String,
        /// Subject.
        subject: String,
        /// Name of the algorithm.
        algorithm: &'static str,
    },

    /// A certificate is signed with an algorithm meshca does not verify.
    #[error(
        "{file}: {subject} is signed with an unsupported algorithm ({algorithm}); use ECDSA with \
         SHA-256/384 or RSA PKCS#1 v1.5 with SHA-256/384/512"
    )]
    UnsupportedSignature {
        /// File name.
        file: String,
        /// Subject.
        subject: String,
        /// OID or name of the algorithm.
        algorithm: String,
    },

    /// A certificate's public key is not usable by istiod.
    #[error(
        "{file}: {subject} has a {algorithm} public key, which istiod cannot use; use ECDSA P-256, \
         ECDSA P-384 or RSA of at least 2048 bits"
    )]
    UnsupportedPublicKey {
        /// File name.
        file: String,
        /// Subject.
        subject: String,
        /// What kind of key it is.
        algorithm: String,
    },

    /// An RSA key is shorter than 2048 bits.
    #[error("{file}: {what} is an RSA key of {bits} bits; istiod and meshca need at least 2048 bits")]
    WeakRsaKey {
        /// File name.
        file: String,
        /// Subject of the certificate, or "the private key".
        what: String,
        /// Whose key it is.
        holder: KeyHolder,
        /// Its size.
        bits: usize,
    },

    /// The private key does not belong to the certificate.
    #[error(
        "{key_file} does not match {cert_file} ({subject}): the public keys differ (istiod says `the \
         cert does not match the key`); put the key that was issued with this certificate in {key_file}"
    )]
    KeyMismatch {
        /// The key file.
        key_file: String,
        /// The certificate file.
        cert_file: String,
        /// Subject of the certificate.
        subject: String,
    },

    // ---- private keys --------------------------------------------------------------------
    /// The private key is encrypted.
    #[error(
        "{file}: the private key is encrypted; istiod cannot read encrypted keys. Decrypt it first, e.g. \
         `openssl pkey -in {file} -out plain.pem`"
    )]
    EncryptedKey {
        /// File name.
        file: String,
    },

    /// An Ed25519 key (istiod cannot sign with it).
    #[error("{file}: the private key is Ed25519, which istiod cannot use; use ECDSA P-256/P-384 or RSA >= 2048")]
    Ed25519Key {
        /// File name.
        file: String,
    },

    /// An EC key on a curve other than P-256/P-384.
    #[error("{file}: the EC private key is on curve {curve}; istiod supports only P-256 and P-384")]
    UnknownCurve {
        /// File name.
        file: String,
        /// Curve OID or name.
        curve: String,
    },

    /// A key of an algorithm meshca does not know.
    #[error("{file}: unsupported private key algorithm {algorithm}; use ECDSA P-256/P-384 or RSA >= 2048")]
    UnsupportedKeyAlgorithm {
        /// File name.
        file: String,
        /// OID of the algorithm.
        algorithm: String,
    },

    /// A private key that does not parse.
    #[error(
        "{file}: not a usable private key ({detail}); expected PEM `PRIVATE KEY` (PKCS#8), \
         `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1)"
    )]
    KeyParse {
        /// File name.
        file: String,
        /// What went wrong (never key bytes).
        detail: String,
    },

    /// An unknown key algorithm name, e.g. on the command line.
    #[error("unknown key algorithm `{name}`; choose one of ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096")]
    UnknownKeyAlgorithmName {
        /// The name given.
        name: String,
    },

    // ---- issuance ------------------------------------------------------------------------
    /// A SPIFFE ID that is not of Istio's form.
    #[error(
        "invalid SPIFFE ID `{id}`: {reason}; expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    InvalidSpiffeId {
        /// The ID given.
        id: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A parameter out of range.
    #[error("{field}: {reason}")]
    InvalidParameter {
        /// The parameter (or policy field path).
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// The signer's path length constraints leave no room for another CA below it.
    #[error(
        "{subject} cannot issue an intermediate CA: its chain allows no further CA below it \
         (pathLenConstraint {pathlen} on {constrained}); sign with a CA whose pathlen allows it, or \
         issue workload certificates from it directly"
    )]
    SignerCannotIssueCa {
        /// Subject of the signing CA.
        subject: String,
        /// The binding constraint.
        pathlen: u8,
        /// The certificate carrying it.
        constrained: String,
    },

    /// The signer is not valid at the time of issuance.
    #[error(
        "the signing CA {subject} is not valid at {} (valid {} to {}); renew the signing CA first",
        rfc3339(*now), rfc3339(*not_before), rfc3339(*not_after)
    )]
    SignerNotValid {
        /// Subject of the signing CA.
        subject: String,
        /// The time of issuance.
        now: OffsetDateTime,
        /// The signer's notBefore.
        not_before: OffsetDateTime,
        /// The earliest notAfter on the signer's path.
        not_after: OffsetDateTime,
    },

    /// The signer's subject name cannot be reproduced byte-for-byte as an issuer name.
    #[error(
        "the signing CA's subject {subject} cannot be copied exactly into issued certificates \
         (multi-valued or unusual name attributes); verifiers would not link them. Use a CA with a \
         simple subject name"
    )]
    IssuerNameNotRepresentable {
        /// Subject of the signing CA.
        subject: String,
    },

    /// A PKCS#10 request that does not parse or whose signature fails.
    #[error("{file}: {detail}")]
    Csr {
        /// The CSR file.
        file: String,
        /// What is wrong.
        detail: String,
    },

    /// The certificate builder failed (an internal error, reported rather than hidden).
    #[error("issuing {what} failed: {detail}")]
    Issuance {
        /// What was being issued.
        what: &'static str,
        /// What failed.
        detail: String,
    },

    /// A CRL that does not parse, or that its consumers would refuse.
    #[error("{file}: {detail}")]
    Crl {
        /// The CRL file (and which CRL in it).
        file: String,
        /// What is wrong and what would fix it.
        detail: String,
    },

    /// The root CRL's number is at its maximum: the next could not be larger (RFC 5280 5.2.3).
    #[error(
        "crlNumber is {number}, the largest meshca keeps: the next root CRL could not have a larger number (RFC \
         5280 5.2.3); only a new root starts a new sequence"
    )]
    CrlNumberExhausted {
        /// The number reached.
        number: u64,
    },

    /// A fleet's root CRL was to be signed by a CA that is not a root.
    #[error("{subject} is not a root: the CRL revoking a cluster CA is its issuer's, the root's; sign with the root")]
    CrlSignerNotRoot {
        /// Subject of the signing CA.
        subject: String,
    },

    /// A CA key held outside meshca (an HSM, a PKCS#11 token) failed to sign, or signed wrongly.
    #[error("the CA key {key} could not sign: {detail}")]
    ExternalKey {
        /// The key (a PKCS#11 URI, without its PIN).
        key: String,
        /// What failed.
        detail: String,
    },

    /// A provider (OpenBao/Vault, a cloud CA) answered a CA request with a certificate meshca's
    /// profile refuses; nothing was written.
    #[error("{provider} signed {cluster}'s CA wrongly: {problem}; {fix}")]
    ProviderCertificate {
        /// The provider (its address and mount, never a token).
        provider: String,
        /// The cluster (or management CA) the certificate was for.
        cluster: String,
        /// What is wrong with it.
        problem: String,
        /// What would fix it on the provider's side.
        fix: &'static str,
    },

    /// A signer's files hold `ca-key.pem` although its key is in a token, or lack the certificate
    /// files a token-held CA needs.
    #[error("{file}: {detail}")]
    ExternalKeyBundle {
        /// The file at fault.
        file: String,
        /// What is wrong and what would fix it.
        detail: String,
    },

    // ---- cross-bundle checks -------------------------------------------------------------
    /// Two bundles do not trust each other's root.
    #[error(
        "{other} does not trust {reference}'s root ({root}, SHA-256 {fingerprint}): its root-cert.pem \
         holds {other_roots}. Workloads between them fail with TLSV1_ALERT_UNKNOWN_CA; issue \
         {other}'s bundle from the shared root"
    )]
    RootMismatch {
        /// The bundle whose root is not trusted.
        reference: String,
        /// The bundle that does not trust it.
        other: String,
        /// Subject of the root.
        root: String,
        /// Its SHA-256 fingerprint.
        fingerprint: String,
        /// Subjects and fingerprints of what the other bundle trusts.
        other_roots: String,
    },

    /// A workload certificate chain does not verify.
    #[error("{what}: workload chain does not verify against {trust}: {detail}")]
    LeafUntrusted {
        /// Which chain.
        what: String,
        /// Which trust bundle.
        trust: String,
        /// The verifier's reason.
        detail: String,
    },

    /// A workload certificate is not of Istio's form.
    #[error("{what}: {detail}")]
    LeafProfile {
        /// Which certificate.
        what: String,
        /// What is wrong.
        detail: String,
    },

    /// The issuance log: an entry, proof or checkpoint that is malformed or does not verify.
    #[error("issuance log: {detail}")]
    Log {
        /// What is wrong and, where it helps, what would fix it.
        detail: String,
    },
}

/// The core crate's result type.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Whose key an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyHolder {
    /// A certificate's public key.
    Certificate,
    /// A private key file.
    PrivateKey,
    /// A certificate request's public key.
    Csr,
}
