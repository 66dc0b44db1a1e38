//! The one writer of the Secrets meshca manages. Every path that changes a cluster's bundle or
//! the management cluster's CA material (reconcile, root rotation, `rotate-root start`) goes
//! through here, so each write is checked and labelled the same way:
//!
//! 1. the exact bytes about to be written are parsed and validated as istiod will read them (a
//!    bundle that does not validate is never written);
//! 2. the Secret carries `app.kubernetes.io/managed-by: meshca` and the policy's annotations
//!    (policy, generation, root fingerprint, notAfter);
//! 3. the store writes it atomically, replacing only the version it last read: someone else's
//!    write in between is an [`Error::Conflict`], for the caller to re-read and re-plan;
//! 4. what landed is read back and validated again, and that is what the caller reports.
//!
//! When the policy keeps an issuance log (`spec.config.auditLog`), every CA certificate and CRL
//! about to be written that the log does not hold yet is appended to it between 2 and 3 (see
//! [`crate::audit`]): one that cannot be logged is not written.
//!
//! A dry run does 1 and returns without writing.

use time::OffsetDateTime;

use meshca::{Cacerts, Crl, Files, Layout, SigningCa, CA_CRL};

use crate::context::TokenAccess;
use crate::error::Error;
use crate::policy::Policy;
use crate::store::{SecretRef, Store, WriteMeta};

/// Annotation: the policy (`namespace/name`) that wrote a Secret.
pub const POLICY_ANNOTATION: &str = "meshca.dev/policy";
/// Annotation: the policy's `metadata.generation` when it was written.
pub const GENERATION_ANNOTATION: &str = "meshca.dev/policy-generation";
/// Annotation: the SHA-256 of the root the bundle chains to.
pub const ROOT_FINGERPRINT_ANNOTATION: &str = "meshca.dev/root-fingerprint";
/// Annotation: the bundle's notAfter (RFC 3339).
pub const NOT_AFTER_ANNOTATION: &str = "meshca.dev/not-after";

/// Who a signing CA Secret belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Owner {
    /// meshca made it and may replace it (a generated root, the incoming CA of a rotation).
    Meshca,
    /// The user's Secret (the policy's `mgmtServerCa`): written without meshca's label, and a
    /// store that guards Secrets it did not make refuses to replace it unless told to adopt.
    User,
}

/// Writes the Secrets of one policy's run.
#[derive(Clone, Copy)]
pub struct Writer<'a> {
    store: &'a dyn Store,
    policy: &'a Policy,
    generation: Option<i64>,
    now: OffsetDateTime,
    dry_run: bool,
    crls: Option<(&'a [u8], &'a [Crl])>,
    mgmt: &'a str,
    token: &'a TokenAccess,
    reason: &'static str,
}

/// No token access: a writer given none reaches no token.
static NO_TOKEN: TokenAccess = TokenAccess { module: None, pin: None };

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("policy", &self.policy.name)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

impl<'a> Writer<'a> {
    /// A writer for `policy` (at `generation`, when the policy is a Kubernetes object) into
    /// `store`, validating at `now`. With `dry_run` nothing is written.
    pub fn new(
        store: &'a dyn Store,
        policy: &'a Policy,
        generation: Option<i64>,
        now: OffsetDateTime,
        dry_run: bool,
    ) -> Self {
        Writer {
            store,
            policy,
            generation,
            now,
            dry_run,
            crls: None,
            mgmt: "mgmt",
            token: &NO_TOKEN,
            reason: crate::audit::reason::ISSUE,
        }
    }

    /// The same writer, keeping the policy's issuance log in management cluster `mgmt`
    /// (default `mgmt`, as [`crate::context::Options`]), its key reached with `token` when the
    /// policy keeps it in a PKCS#11 token.
    pub fn log_in(mut self, mgmt: &'a str, token: &'a TokenAccess) -> Self {
        self.mgmt = mgmt;
        self.token = token;
        self
    }

    /// The same writer, recording `reason` (see [`crate::audit::reason`]) in the log entries
    /// of what it writes.
    pub fn because(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }

    /// Appends to the issuance log, when the policy keeps one, the CA certificates and CRLs
    /// about to be written to `cluster`.
    fn record(&self, cluster: &str, certs: &[&meshca::Certificate], crls: &[Crl]) -> Result<(), Error> {
        if self.policy.audit_log.is_none() || self.dry_run {
            return Ok(());
        }
        let entries =
            crate::audit::entries_for(self.policy, self.generation, cluster, self.reason, certs, crls, self.now);
        crate::audit::append(self.store, self.policy, self.mgmt, self.token, entries).map(|_| ())
    }

    /// The same writer, putting the fleet's CRL set (`ca-crl.pem` as `pem`, parsed as `crls`;
    /// see the `revocation` module) into every bundle it writes. Each bundle's set is checked
    /// against that bundle's path first ([`meshca::check_crl_set`]): a CRL for each of its CAs,
    /// current, signed by it, and none of its CAs revoked.
    pub fn with_crls(mut self, set: Option<(&'a [u8], &'a [Crl])>) -> Self {
        self.crls = set;
        self
    }

    /// Whether this writer writes nothing.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn meta(&self, bundle: Option<&Cacerts>) -> WriteMeta {
        let mut meta = WriteMeta::managed();
        let p = self.policy;
        meta.annotations.insert(POLICY_ANNOTATION.into(), format!("{}/{}", p.namespace, p.name));
        if let Some(g) = self.generation {
            meta.annotations.insert(GENERATION_ANNOTATION.into(), g.to_string());
        }
        if let Some(b) = bundle {
            meta.annotations.insert(ROOT_FINGERPRINT_ANNOTATION.into(), b.root_fingerprint());
            meta.annotations.insert(NOT_AFTER_ANNOTATION.into(), meshca::format_time(b.not_after()));
        }
        meta
    }

    /// Refuses to write `secret` when it exists and is another policy's, or, where meshca is
    /// about to create it (`creating`), when it is not meshca's at all. Checked on a dry run
    /// too, so a rehearsal shows the refusal.
    fn guard(&self, secret: &SecretRef, creating: bool) -> Result<(), Error> {
        let Some(meta) = self.store.meta(secret)? else { return Ok(()) };
        let (k, v) = crate::manifest::MANAGED_BY;
        let ours = format!("{}/{}", self.policy.namespace, self.policy.name);
        let owner = if creating && meta.labels.get(k).map(String::as_str) != Some(v) {
            format!("is not managed by meshca (no {k}={v} label)")
        } else {
            match meta.annotations.get(POLICY_ANNOTATION) {
                Some(other) if *other != ours => {
                    format!("belongs to another policy ({POLICY_ANNOTATION}={})", meshca::printable(other, 80))
                }
                _ => return Ok(()),
            }
        };
        Err(Error::Occupied { location: self.store.location(secret), owner })
    }

    /// Writes a cluster's `cacerts` and returns the bundle that landed (on a dry run, the
    /// validated bundle that would have been written).
    pub fn write_bundle(&self, secret: &SecretRef, bundle: &Cacerts) -> Result<Cacerts, Error> {
        let cluster = &secret.cluster;
        let mut files = bundle.to_files(Layout::Istio);
        let checked =
            Cacerts::from_files(&files, self.now).map_err(Error::core(format!("new bundle for {cluster}")))?;
        if let Some((pem, crls)) = self.crls {
            check_crls(crls, &checked, self.now).map_err(Error::core(format!("new bundle for {cluster}")))?;
            files.insert(CA_CRL, pem.to_vec());
        }
        self.guard(secret, false)?;
        if self.dry_run {
            return Ok(checked);
        }
        let certs: Vec<&meshca::Certificate> = checked.path().iter().chain(checked.roots()).collect();
        self.record(cluster, &certs, self.crls.map(|(_, c)| c).unwrap_or_default())?;
        self.store.write(secret, &files, &self.meta(Some(&checked)))?;
        let landed = self.read_back(secret)?;
        let bundle =
            Cacerts::from_files(&landed, self.now).map_err(Error::core(format!("bundle written for {cluster}")))?;
        if landed.get(CA_CRL) != self.crls.map(|(pem, _)| pem) {
            return Err(Error::Store {
                location: self.store.location(secret),
                detail: format!("the {CA_CRL} read back differs from the one just written"),
            });
        }
        Ok(bundle)
    }

    /// Writes a signing CA (the management cluster's CA material) after checking that it
    /// still is one, and reads it back.
    pub fn write_signer(&self, secret: &SecretRef, signer: &SigningCa, owner: Owner) -> Result<(), Error> {
        let location = self.store.location(secret);
        let files = signer.bundle().to_files(Layout::Istio);
        SigningCa::from_files(&files, self.now).map_err(Error::core(format!("signing CA {location}")))?;
        if owner == Owner::Meshca {
            self.guard(secret, true)?;
        }
        if self.dry_run {
            return Ok(());
        }
        let b = signer.bundle();
        let certs: Vec<&meshca::Certificate> = b.path().iter().chain(b.roots()).collect();
        self.record(&secret.cluster, &certs, &[])?;
        let meta = match owner {
            Owner::Meshca => self.meta(Some(signer.bundle())),
            Owner::User => WriteMeta::default(),
        };
        self.store.write(secret, &files, &meta)?;
        let landed = self.read_back(secret)?;
        SigningCa::from_files(&landed, self.now).map(|_| ()).map_err(Error::core(format!("signing CA {location}")))
    }

    /// Writes meshca's own state (a root rotation's `state.json`), labelled as managed, and
    /// checks that the same bytes landed.
    pub fn write_state(&self, secret: &SecretRef, files: &Files) -> Result<(), Error> {
        self.guard(secret, true)?;
        if self.dry_run {
            return Ok(());
        }
        self.store.write(secret, files, &self.meta(None))?;
        let landed = self.read_back(secret)?;
        if landed != *files {
            return Err(Error::Store {
                location: self.store.location(secret),
                detail: "what was read back differs from what was just written".into(),
            });
        }
        Ok(())
    }

    fn read_back(&self, secret: &SecretRef) -> Result<Files, Error> {
        self.store.read(secret)?.ok_or_else(|| Error::Store {
            location: self.store.location(secret),
            detail: "the Secret just written is not there".into(),
        })
    }
}

/// Checks a CRL set against the bundle it goes with: every CRL is current at `now`, and the
/// bundle's own path is covered and not revoked.
pub fn check_crls(crls: &[Crl], bundle: &Cacerts, now: OffsetDateTime) -> Result<(), meshca::Error> {
    for crl in crls {
        if !crl.is_current_at(now) {
            return Err(meshca::Error::Crl {
                file: CA_CRL.into(),
                detail: format!(
                    "the CRL of {} is valid from {} to {}, not now",
                    crl.issuer(),
                    meshca::format_time(crl.this_update()),
                    meshca::format_time(crl.next_update())
                ),
            });
        }
    }
    meshca::check_crl_set(crls, bundle.path(), now, CA_CRL)
}
