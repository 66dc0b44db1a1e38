//! CA certificates signed by someone else's PKI (OpenBao/Vault, a cloud CA): meshca makes the
//! key and the request, the provider signs, and meshca checks what came back against its own
//! profile before anything is written. Trust but verify: a provider's role or mount settings
//! can silently change a certificate (drop the requested subject, cut the lifetime, issue a leaf
//! instead of a CA), and istiod would only find out when workloads fail.
//!
//! Pure, like the rest of this crate: the caller carries the request to the provider and the
//! answer back.

use time::{Duration, OffsetDateTime};

use crate::bundle::Cacerts;
use crate::ca::{check_ttl, validate_cluster_name, validate_subject_attr, Csr, IntermediateParams, Issued};
use crate::cert::Certificate;
use crate::error::{Error, Result};
use crate::external::CaKey;
use crate::key::PrivateKey;
use crate::rng::Entropy;

/// How much shorter than asked a provider's certificate may be before it counts as cut: the
/// provider's clock, its backdating and the time the request took.
pub const LIFETIME_SLACK: Duration = Duration::minutes(5);

/// A CA certificate meshca asks a provider for: the new key (it stays here), the CSR the
/// provider signs, and what the answer must look like.
pub struct CaRequest {
    key: CaKey,
    csr_pem: String,
    params: IntermediateParams,
    /// The subject serialNumber asked for.
    name_serial: String,
}

impl core::fmt::Debug for CaRequest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CaRequest").field("cluster", &self.params.cluster).field("ttl", &self.params.ttl).finish()
    }
}

/// What a provider answered: the issued certificate and the chain above it (the issuer, any
/// intermediates, and usually the root), each as PEM.
#[derive(Clone, Debug, Default)]
pub struct ProviderAnswer {
    /// The issued certificate (one PEM block).
    pub certificate: Vec<u8>,
    /// The issuer's chain, issuer first (PEM blocks; the issued certificate, if repeated, and
    /// the order are tolerated).
    pub chain: Vec<u8>,
}

impl CaRequest {
    /// A new key and its CSR for the CA `params` describes (a cluster intermediate with
    /// pathlen 0, or a management intermediate with room below it).
    pub fn new(params: &IntermediateParams, rng: &mut dyn Entropy) -> Result<Self> {
        validate_cluster_name(&params.cluster)?;
        check_ttl("ttl", params.ttl)?;
        validate_subject_attr("common name", &params.common_name)?;
        validate_subject_attr("organization", &params.organization)?;
        let key = PrivateKey::generate(params.key, rng)?;
        Self::with_key(params, CaKey::Local(key))
    }

    /// A request for `key`, made elsewhere (a new key in a PKCS#11 token): the CSR is signed
    /// by it and checked. `params.key` is not used.
    pub fn with_key(params: &IntermediateParams, key: CaKey) -> Result<Self> {
        validate_cluster_name(&params.cluster)?;
        check_ttl("ttl", params.ttl)?;
        // Its name is its own (serialNumber from the new key), as every CA meshca issues:
        // verifiers find a CA's CRL by its name, and a renewed CA lives beside the one it
        // replaces for a while.
        let name_serial = crate::profile::request_name_serial(key.public_key_raw());
        let csr_pem = Csr::generate_pem_named(
            &params.cluster,
            &params.organization,
            &params.common_name,
            &key,
            Some(&name_serial),
        )?;
        Ok(CaRequest { key, csr_pem, params: params.clone(), name_serial })
    }

    /// The PKCS#10 request to send (PEM).
    pub fn csr_pem(&self) -> &str {
        &self.csr_pem
    }

    /// What the request asks for.
    pub fn params(&self) -> &IntermediateParams {
        &self.params
    }

    /// Checks `answer` against the profile and joins it to the key: a CA certificate (CA:TRUE,
    /// the requested path length or less, keyCertSign and cRLSign), for this key and the
    /// requested subject (O, CN, L = the cluster), valid now and for the requested lifetime or
    /// until the issuer expires, whichever is first, inside the issuer's validity, and chaining
    /// to one of `trust` (the policy's trust bundle). `provider` names the provider in errors;
    /// each error says what the provider did wrong and how to fix it there.
    pub fn accept(
        self,
        answer: &ProviderAnswer,
        trust: &[Certificate],
        provider: &str,
        now: OffsetDateTime,
    ) -> Result<Issued<Cacerts>> {
        let wrong = |problem: String, fix: &'static str| Error::ProviderCertificate {
            provider: provider.to_owned(),
            cluster: self.params.cluster.clone(),
            problem,
            fix,
        };
        let issued = Certificate::from_pem_all(&answer.certificate, "the provider's certificate")?;
        let [cert] = <[Certificate; 1]>::try_from(issued)
            .map_err(|v| wrong(format!("it answered with {} certificates where one was expected", v.len()), FIX_API))?;
        let mut above = if answer.chain.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else {
            Certificate::from_pem_all(&answer.chain, "the provider's ca_chain")?
        };
        above.retain(|c| c != &cert);

        match cert.ca_pathlen() {
            None => {
                return Err(wrong(
                    "it is not a CA certificate (no basicConstraints CA:TRUE): the provider issued a leaf".into(),
                    "sign with the PKI's sign-intermediate endpoint (or a CA-issuing template), not a role's sign \
                     endpoint",
                ))
            }
            Some(None) => {
                return Err(wrong(
                    format!("it has no path length constraint; a cluster CA needs pathlen <= {}", self.params.pathlen),
                    "pass max_path_length to sign-intermediate (meshca sends it; check that nothing strips it)",
                ))
            }
            Some(Some(p)) if p > self.params.pathlen => {
                return Err(wrong(
                    format!("its path length is {p}, more than the {} asked for", self.params.pathlen),
                    "pass max_path_length to sign-intermediate (meshca sends it; check that nothing strips it)",
                ))
            }
            Some(Some(_)) => {}
        }
        if cert.allows_cert_sign() != Some(true) || cert.allows_crl_sign() != Some(true) {
            return Err(wrong(
                format!("its key usage is [{}], not keyCertSign and cRLSign", cert.key_usage_names().join(", ")),
                "issue it as a CA (sign-intermediate), with the default key usage",
            ));
        }
        if let Some(missing) = cert.eku_missing_for_mtls() {
            return Err(wrong(
                format!("it restricts extended key usage without {missing}; istiod's workload certificates would fail"),
                "leave extended key usage off CA certificates",
            ));
        }
        if cert.public_key_raw() != self.key.public_key_raw() {
            return Err(wrong("the certificate is for another key than the request's".into(), FIX_API));
        }
        let want = (&self.params.organization, &self.params.common_name, &self.params.cluster);
        let got = (cert.organization(), cert.common_name(), cert.locality());
        // The serialNumber asked for, or the certificate's own serial (meshca's profile): either
        // makes the name its own; a subject without one would share its CRL's name.
        let own_serial: String = cert.serial_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let serial_ok = crate::profile::name_serial(&cert).is_some_and(|s| s == self.name_serial || s == own_serial);
        if got.0.as_ref() != Some(want.0)
            || got.1.as_ref() != Some(want.1)
            || got.2.as_ref() != Some(want.2)
            || !serial_ok
        {
            return Err(wrong(
                format!(
                    "its subject is `{}`, not the requested O={}, CN={}, L={}, serialNumber={}",
                    cert.subject(),
                    want.0,
                    want.1,
                    want.2,
                    self.name_serial
                ),
                "sign with use_csr_values=true (meshca sends it; a role or template that overrides the subject drops \
                 it)",
            ));
        }
        let issuer = above.iter().find(|c| cert.is_issued_by(c)).cloned().ok_or_else(|| {
            wrong(
                format!("its ca_chain does not hold its issuer ({})", cert.issuer()),
                "answer with the issuing CA's chain (the PKI's ca_chain)",
            )
        })?;
        if cert.not_before() < issuer.not_before() || cert.not_after() > issuer.not_after() {
            return Err(wrong(
                format!(
                    "its validity ({} to {}) is not inside its issuer's ({} to {})",
                    crate::format_time(cert.not_before()),
                    crate::format_time(cert.not_after()),
                    crate::format_time(issuer.not_before()),
                    crate::format_time(issuer.not_after())
                ),
                "the provider must not issue beyond its own CA's lifetime (OpenBao: leaf_not_after_behavior=err or \
                 truncate)",
            ));
        }
        // The lifetime asked for, from when the provider started it (its clock, not ours: a
        // rehearsal at a later `now` still measures what the provider cut).
        let asked = cert.not_before() + self.params.ttl;
        let expected = asked.min(issuer.not_after());
        if cert.not_after() + LIFETIME_SLACK < expected {
            return Err(wrong(
                format!(
                    "its lifetime was cut: it runs {} to {}, {} were asked for",
                    crate::format_time(cert.not_before()),
                    crate::format_time(cert.not_after()),
                    crate::time_fmt::human_duration(self.params.ttl),
                ),
                "raise the mount's max lease TTL (bao secrets tune -max-lease-ttl=87600h pki), or lower \
                 intermediateCertOptions.ttlDays",
            ));
        }
        let mut chain = vec![cert];
        let mut pool = above;
        // Order the path from the issued certificate up, as cert-chain.pem carries it.
        while let Some(pos) = pool.iter().position(|c| chain.last().is_some_and(|last| last.is_issued_by(c))) {
            let next = pool.swap_remove(pos);
            let done = next.is_self_signed();
            chain.push(next);
            if done {
                break;
            }
        }
        let top = chain.last().cloned().unwrap_or_else(|| chain[0].clone());
        if !trust.iter().any(|r| r == &top || top.is_issued_by(r)) {
            return Err(wrong(
                format!("it chains to {}, which the policy's trust bundle does not hold", top.subject()),
                "sign with the issuer whose root the fleet trusts, or rotate the root first (meshca rotate-root)",
            ));
        }
        if !top.is_self_signed() {
            let root = trust.iter().find(|r| top.is_issued_by(r)).cloned();
            chain.extend(root);
        }
        let bundle = Cacerts::from_parts(self.key, chain, trust.to_vec(), now)?;
        let clamped_from = (asked > issuer.not_after()).then_some(asked);
        Ok(Issued { value: bundle, clamped_from })
    }
}

const FIX_API: &str = "check the provider's answer (meshca sends one CSR to sign-intermediate)";
