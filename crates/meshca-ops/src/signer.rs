//! The one signer loader: every job (reconcile, root rotation, revocation) gets its signing
//! CAs here, whatever holds their keys.
//!
//! A signing CA is a Secret with the public files (`ca-cert.pem`, `cert-chain.pem`,
//! `root-cert.pem`) and a key: the Secret's own `ca-key.pem`, or a [`KeySource`] the policy
//! names for that Secret (today a PKCS#11 token, `mgmtServerCa.pkcs11`). A new key source (a
//! PKI such as OpenBao, a cloud KMS) is one new implementation of [`KeySource`] and one line in
//! [`Signers::key_source`]; no job changes.

use std::sync::Arc;

use meshca::{Entropy, ExternalKey, SigningCa};
use time::OffsetDateTime;

use crate::context::{Options, TokenAccess};
use crate::error::Error;
use crate::policy::{Policy, SecretName, SignerKey, SignerSource, Signs, VaultAuth, VaultSigner};
use crate::report::SignerInfo;
use crate::store::{SecretRef, Store};
use crate::vault::{Connect, Login, ProviderKey, Vault, VaultToken};
use crate::writer::Owner;

/// Where a signing CA's private key is kept, when it is not the Secret's own `ca-key.pem`.
pub trait KeySource: std::fmt::Debug {
    /// Opens the key of the signing CA whose public files are in `secret` of `store`.
    fn open(&self, store: &dyn Store, secret: &SecretRef) -> Result<Arc<dyn ExternalKey>, Error>;
}

/// A key in a PKCS#11 token, as the policy's `mgmtServerCa.pkcs11` names it, reached the way
/// the operator allowed ([`crate::context::TokenAccess`]).
#[derive(Debug)]
pub struct Pkcs11Source<'a> {
    key: &'a crate::policy::SignerKey,
    opts: &'a Options,
}

impl KeySource for Pkcs11Source<'_> {
    fn open(&self, store: &dyn Store, secret: &SecretRef) -> Result<Arc<dyn ExternalKey>, Error> {
        // A management intermediate renewed in the token names its own key (`ca-key.uri`): one
        // of the policy's, `LABEL-<time>` beside the policy's `object=LABEL`.
        let named = store.read(secret)?.and_then(|f| f.get(crate::pkcs11::KEY_URI_FILE).map(<[u8]>::to_vec));
        let uri = match named {
            None => self.key.uri.clone(),
            Some(text) => renewed_key_uri(&self.key.uri, &text).ok_or_else(|| Error::Pkcs11 {
                key: store.location(secret),
                detail: format!(
                    "{} does not name a key renewed from the policy's {} (same token, object=LABEL-<time>)",
                    crate::pkcs11::KEY_URI_FILE,
                    self.key.uri
                ),
            })?,
        };
        let access = token_access(store, &self.opts.mgmt_cluster, &self.opts.token, self.key, MGMT_PKCS11, uri)?;
        Ok(crate::pkcs11::TokenKey::open(&access)?)
    }
}

/// `text` as a key URI when it names `base` itself (as `meshca root-ca --key-uri` writes it
/// beside a root's files) or a key renewed from it (same token attributes, object
/// `<base object>-<digits>`); `None` otherwise.
fn renewed_key_uri(base: &crate::pkcs11::KeyUri, text: &[u8]) -> Option<crate::pkcs11::KeyUri> {
    let uri = crate::pkcs11::KeyUri::parse(std::str::from_utf8(text).ok()?.trim()).ok()?;
    let same_token = (&uri.token, &uri.manufacturer, &uri.model, &uri.serial, &uri.slot_id)
        == (&base.token, &base.manufacturer, &base.model, &base.serial, &base.slot_id);
    if same_token && (&uri.object, &uri.id) == (&base.object, &base.id) {
        return Some(base.clone());
    }
    let suffix = uri.object.as_deref()?.strip_prefix(base.object.as_deref()?)?.strip_prefix('-')?;
    (same_token && uri.id.is_none() && !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())).then_some(uri)
}

/// The signer loader of a run: which Secret holds the policy's signer, and which key source
/// each signing CA uses.
pub struct Signers<'a> {
    store: &'a dyn Store,
    policy: &'a Policy,
    opts: &'a Options,
}

impl std::fmt::Debug for Signers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signers").field("policy", &self.policy.name).field("mgmt", &self.opts.mgmt_cluster).finish()
    }
}

impl<'a> Signers<'a> {
    /// The loader for a run of `policy` over `store` with `opts`.
    pub fn new(store: &'a dyn Store, policy: &'a Policy, opts: &'a Options) -> Self {
        Signers { store, policy, opts }
    }

    /// The Secret of the policy's signing CA (`mgmtServerCa`) on the management cluster.
    pub fn policy_secret(&self) -> SecretRef {
        let (namespace, name) = self.policy.signer.secret();
        SecretRef::new(&self.opts.mgmt_cluster, namespace, name)
    }

    /// The Secret of the incoming signing CA the policy's `rootRotation` names, if any.
    pub fn incoming_secret(&self) -> Option<SecretRef> {
        let auto = self.policy.root_rotation.as_ref()?;
        Some(SecretRef::new(&self.opts.mgmt_cluster, &auto.new_signer.namespace, &auto.new_signer.name))
    }

    /// What holds the CA of `secret` besides the Secret: the token of its key and the PKI, as
    /// the policy names them for its signer (`mgmtServerCa`) and for the incoming one
    /// (`rootRotation.newMgmtServerCa`); neither for any other Secret.
    fn held(&self, secret: &SecretRef) -> (Option<&'a SignerKey>, Option<&'a VaultSigner>) {
        if *secret == self.policy_secret() {
            return (self.policy.signer_key.as_ref(), self.policy.vault.as_ref());
        }
        match self.policy.root_rotation.as_ref() {
            Some(auto) if self.incoming_secret().as_ref() == Some(secret) => {
                (auto.new_key.as_ref(), auto.new_vault.as_ref())
            }
            _ => (None, None),
        }
    }

    /// The key source of the CA in `secret`: the token the policy names for it; `None`, the
    /// Secret's own `ca-key.pem`, otherwise.
    pub fn key_source(&self, secret: &SecretRef) -> Option<Box<dyn KeySource + 'a>> {
        let key = self.held(secret).0?;
        Some(Box::new(Pkcs11Source { key, opts: self.opts }) as Box<dyn KeySource>)
    }

    /// The PKI that signs every cluster intermediate, when the policy says so for `secret`
    /// (`vault` with `signs: clusters`).
    fn provider_for(&self, secret: &SecretRef) -> Option<&'a VaultSigner> {
        self.held(secret).1.filter(|v| v.signs == Signs::Clusters)
    }

    /// The signing CA in `secret` ready to issue, as a job that signs with it needs it: read
    /// as [`Signers::read`] does; for a CA the PKI holds, logged in to the PKI (`signs:
    /// clusters`: it signs each intermediate), or the management intermediate made or renewed
    /// through it. `None` when there is no such CA (yet).
    pub fn open(
        &self,
        secret: &SecretRef,
        rng: &mut dyn Entropy,
        notes: &mut Vec<String>,
    ) -> Result<Option<Opened>, Error> {
        let now = self.opts.now;
        match self.held(secret) {
            (_, Some(v)) if v.signs == Signs::Clusters => {
                let vault = connect_vault(self.store, v, self.opts)?;
                let ca = provider_ca(&vault.describe(), &vault.issuer_files()?, now)?;
                Ok(Some(Opened { ca, remote: Some(Remote::Ready(Arc::new(vault))), issued_by: None }))
            }
            (key, Some(v)) => {
                let current = self.read(secret, now)?;
                let (ca, _) =
                    management_intermediate(self.store, self.policy, v, key, secret, current, self.opts, rng, notes)?;
                Ok(Some(Opened { ca, remote: None, issued_by: Some(v.clone()) }))
            }
            _ => Ok(self.read(secret, now)?.map(|ca| Opened { ca, remote: None, issued_by: None })),
        }
    }

    /// The signing CA in `secret`, valid at `now`, with its key from wherever it is kept;
    /// `None` when the Secret does not exist.
    pub fn read(&self, secret: &SecretRef, now: OffsetDateTime) -> Result<Option<SigningCa>, Error> {
        if let Some(v) = self.provider_for(secret) {
            let vault = connect_vault(self.store, v, self.opts)?;
            return provider_ca(&vault.describe(), &vault.issuer_files()?, now).map(Some);
        }
        let Some(files) = self.store.read(secret)? else { return Ok(None) };
        let context = || format!("signing CA {}", self.store.location(secret));
        let signer = match self.key_source(secret) {
            Some(source) => {
                let key = source.open(self.store, secret)?;
                SigningCa::from_public_files(&files, key, now).map_err(Error::core(context()))?
            }
            None => SigningCa::from_files(&files, now).map_err(Error::core(context()))?,
        };
        Ok(Some(signer))
    }

    /// As [`Signers::read`], the Secret's absence an error.
    pub fn require(&self, secret: &SecretRef, now: OffsetDateTime) -> Result<SigningCa, Error> {
        self.read(secret, now)?
            .ok_or_else(|| Error::SignerNotFound { secret: secret.to_string(), location: self.store.location(secret) })
    }
}

/// Loads (or, for `generated`, creates) the signing CA of a run: the policy's, or the one
/// `opts.signer_override` names. Errors here stop the run: without a signer nothing can be
/// decided.
pub fn load_signer(
    store: &dyn Store,
    policy: &Policy,
    opts: &Options,
    rng: &mut dyn Entropy,
) -> Result<(SigningCa, SignerInfo), Error> {
    let loaded = load(store, policy, opts, rng)?;
    Ok((loaded.ca, loaded.info))
}

/// A signing CA ready to issue ([`Signers::open`]).
#[derive(Debug)]
pub struct Opened {
    /// The CA (with the key, or the PKI's public half of it).
    pub ca: SigningCa,
    /// The PKI that signs each intermediate in its name, when one does.
    pub remote: Option<Remote>,
    /// The PKI that issued the CA (a management intermediate): the CRL of the CA above it is
    /// that PKI's.
    pub issued_by: Option<VaultSigner>,
}

/// The signer of a run, as [`load`] found it.
#[derive(Debug)]
pub struct Loaded {
    /// The signing CA: its certificates, and its key (or the provider's public half of it).
    pub ca: SigningCa,
    /// What reports say about it.
    pub info: SignerInfo,
    /// The PKI that signs each cluster intermediate (`signs: clusters`): issuance goes through
    /// it, never through `ca`'s key.
    pub remote: Option<Remote>,
    /// What the run should tell its operator (a renewal that failed and was deferred).
    pub notes: Vec<String>,
    /// The PKI that issued the signing CA (a management intermediate).
    pub issued_by: Option<VaultSigner>,
}

/// The file of the kept issuer Secret (`signs: clusters`) naming the PKI, mount and issuer it
/// came from.
pub const PROVIDER_FILE: &str = "provider";

/// The PKI that signs cluster intermediates, as the run found it.
#[derive(Debug)]
pub enum Remote {
    /// Logged in; it signs.
    Ready(Arc<Vault>),
    /// It failed when the run began: the run plans with its issuer as last read, and every
    /// cluster that needs a signature fails with this.
    Down(ProviderDown),
}

/// A provider failure kept to be reported for each cluster it stops.
#[derive(Clone, Debug)]
pub struct ProviderDown {
    provider: String,
    call: String,
    fault: crate::error::ProviderFault,
    detail: String,
}

impl ProviderDown {
    /// The error, as the cluster's result says it.
    pub fn error(&self) -> Error {
        Error::Provider {
            provider: self.provider.clone(),
            call: self.call.clone(),
            fault: self.fault,
            detail: self.detail.clone(),
        }
    }

    /// Why.
    pub fn fault(&self) -> crate::error::ProviderFault {
        self.fault
    }
}

/// [`load_signer`], with the provider that signs cluster intermediates and the notes of a
/// management intermediate's renewal.
pub fn load(store: &dyn Store, policy: &Policy, opts: &Options, rng: &mut dyn Entropy) -> Result<Loaded, Error> {
    let signers = Signers::new(store, policy, opts);
    let secret = opts.signer_override.clone().unwrap_or_else(|| signers.policy_secret());
    let location = store.location(&secret);
    let mut notes = Vec::new();
    let mut remote = None;
    let mut issued_by = None;
    let (held_key, held_vault) = signers.held(&secret);
    let (signer, created) = match held_vault {
        Some(v) if v.signs == Signs::Clusters => {
            let fetched = connect_vault(store, v, opts).and_then(|vault| {
                let files = vault.issuer_files()?;
                Ok((vault, files))
            });
            match fetched {
                Ok((vault, mut files)) => {
                    let ca = provider_ca(&vault.describe(), &files, opts.now)?;
                    files.insert(PROVIDER_FILE, vault.describe().into_bytes());
                    // What the PKI said, kept (public files only), so that a pass while it is
                    // down can still plan, keep and re-trust the clusters that need no signature.
                    if !opts.dry_run && store.read(&secret)?.as_ref() != Some(&files) {
                        opts.writer(store, policy).write_state(&secret, &files)?;
                    }
                    remote = Some(Remote::Ready(Arc::new(vault)));
                    (ca, false)
                }
                Err(Error::Provider { provider, call, fault, detail }) => {
                    let down = ProviderDown { provider, call, fault, detail };
                    // Only what this same PKI, mount and issuer said: a policy that now names
                    // another must not be planned against the old one.
                    let cached =
                        store.read(&secret)?.filter(|f| f.get(PROVIDER_FILE) == Some(down.provider.as_bytes()));
                    let Some(cached) = cached else { return Err(down.error()) };
                    let ca = provider_ca(&down.provider, &cached, opts.now)?;
                    tracing::warn!(error = %down.error(), "the PKI that signs is unavailable; planning with its issuer as last read");
                    notes.push(format!(
                        "{}; meshca planned with the PKI's issuer as last read ({location}); clusters that need a \
                         signature wait for the PKI",
                        down.error()
                    ));
                    remote = Some(Remote::Down(down));
                    (ca, false)
                }
                Err(e) => return Err(e),
            }
        }
        Some(v) => {
            let current = signers.read(&secret, opts.now)?;
            issued_by = Some(v.clone());
            management_intermediate(store, policy, v, held_key, &secret, current, opts, rng, &mut notes)?
        }
        _ => match (signers.read(&secret, opts.now)?, &policy.signer) {
            (Some(signer), _) => (signer, false),
            (None, SignerSource::Generated { root, .. }) if opts.signer_override.is_none() => {
                let signer =
                    SigningCa::generate_root(root, rng, opts.now).map_err(Error::core("generating the root"))?;
                opts.writer(store, policy).write_signer(&secret, &signer, Owner::Meshca)?;
                (signer, true)
            }
            (None, _) => return Err(Error::SignerNotFound { secret: secret.to_string(), location }),
        },
    };
    let b = signer.bundle();
    let info = SignerInfo {
        location: match held_vault {
            Some(v) if v.signs == Signs::Clusters => Connect::of(v, None).describe(),
            _ => location,
        },
        subject: b.ca_cert().subject(),
        root: b.root().subject(),
        root_fingerprint: b.root_fingerprint(),
        created,
        key: b.ca_key().external(),
    };
    Ok(Loaded { ca: signer, info, remote, notes, issued_by })
}

/// A new intermediate for `cluster` under `rotation` from `signer`, issued by `remote` (the
/// PKI, its answer checked by the core) when one signs, else with the signer's key; inside the
/// rotation's trust bundle (the signer's roots and the passive ones).
pub(crate) fn issue_bundle(
    rotation: &meshca::RotationPolicy,
    signer: &SigningCa,
    remote: Option<&Remote>,
    cluster: &str,
    opts: &Options,
    rng: &mut dyn Entropy,
) -> Result<meshca::Cacerts, Error> {
    let now = opts.now;
    let params = rotation.intermediate_params(cluster);
    if let Some(remote) = remote {
        let vault = match remote {
            Remote::Ready(v) => v,
            Remote::Down(down) => return Err(down.error()),
        };
        // The PKI signs; meshca checks its answer against the profile and the policy's trust
        // bundle (passive roots included) before anything is written.
        let request = meshca::CaRequest::new(&params, rng).map_err(Error::core(format!("issuing for {cluster}")))?;
        let answer = vault.sign_intermediate(&request)?;
        let trust = rotation.trust_bundle(signer);
        return request
            .accept(&answer, &trust, &vault.describe(), now)
            .map(|issued| issued.value)
            .map_err(Error::core(format!("issuing for {cluster}")));
    }
    let mut issued =
        signer.issue_intermediate(&params, rng, now).map_err(Error::core(format!("issuing for {cluster}")))?.value;
    if !rotation.passive_roots.is_empty() {
        issued = meshca::with_trust_bundle(&issued, rotation.trust_bundle(signer), now)
            .map_err(Error::core(format!("trust bundle for {cluster}")))?;
    }
    Ok(issued)
}

/// The issuer of the PKI `provider` as a signing CA, from its public `files`: its
/// certificates, and its key's public half.
fn provider_ca(provider: &str, files: &meshca::Files, now: OffsetDateTime) -> Result<SigningCa, Error> {
    let context = || format!("the issuer of {provider}");
    let cert = meshca::parse_certificates(files.get(meshca::CA_CERT).unwrap_or_default(), "the issuer's certificate")
        .map_err(Error::core(context()))?;
    let key = cert.first().and_then(|c| ProviderKey::of(c, provider.to_owned())).ok_or_else(|| Error::Provider {
        provider: provider.to_owned(),
        call: "reading the issuer".into(),
        fault: crate::error::ProviderFault::BadAnswer,
        detail: "the issuer's certificate has a key istiod cannot use (ECDSA P-256/P-384 or RSA >= 2048 needed)".into(),
    })?;
    SigningCa::from_public_files(files, Arc::new(key), now).map_err(Error::core(context()))
}

/// The management intermediate (`signs: managementIntermediate`): the one in `secret` while
/// more than the policy's grace ratio of its life is left; else a new key, signed by the PKI,
/// checked, and written before it signs anything. A renewal that fails while the current one
/// is still valid is deferred, with a note; without a valid one the run stops.
#[allow(clippy::too_many_arguments)]
fn management_intermediate(
    store: &dyn Store,
    policy: &Policy,
    v: &VaultSigner,
    signer_key: Option<&SignerKey>,
    secret: &SecretRef,
    current: Option<SigningCa>,
    opts: &Options,
    rng: &mut dyn Entropy,
    notes: &mut Vec<String>,
) -> Result<(SigningCa, bool), Error> {
    let now = opts.now;
    let due = match &current {
        None => Some("there is none yet".to_owned()),
        Some(ca) => {
            let c = ca.bundle().ca_cert();
            let at = policy.rotation.rotate_at(c.not_before(), ca.bundle().not_after());
            (now >= at).then(|| {
                format!("less than the grace ratio of its life is left (renewal due {})", meshca::format_time(at))
            })
        }
    };
    let Some(why) = due else {
        return current
            .map(|c| (c, false))
            .ok_or_else(|| Error::SignerNotFound { secret: secret.to_string(), location: store.location(secret) });
    };
    if opts.dry_run {
        return match current {
            Some(ca) => {
                notes.push(format!("the management intermediate would be renewed through {}: {why}", v.address));
                Ok((ca, false))
            }
            None => Err(Error::SignerNotFound { secret: secret.to_string(), location: store.location(secret) }),
        };
    }
    let renewed = (|| -> Result<SigningCa, Error> {
        let vault = connect_vault(store, v, opts)?;
        let trust = provider_ca(&vault.describe(), &vault.issuer_files()?, now)?;
        let mut params = policy.rotation.intermediate_params("management");
        params.common_name = format!("{} management intermediate", policy.name);
        params.ttl = v.ttl;
        params.pathlen = policy.rotation.pathlen.saturating_add(1);
        let request = match signer_key {
            // A new key in the token each renewal, `LABEL-<time>`; the Secret names it.
            Some(k) => {
                let mut uri = k.uri.clone();
                uri.object = Some(format!("{}-{}", k.uri.object.as_deref().unwrap_or("meshca"), now.unix_timestamp()));
                let access = token_access(store, &opts.mgmt_cluster, &opts.token, k, MGMT_PKCS11, uri)?;
                let key = crate::pkcs11::TokenKey::generate(&access, params.key)?;
                meshca::CaRequest::with_key(&params, meshca::CaKey::External(key))
            }
            None => meshca::CaRequest::new(&params, rng),
        }
        .map_err(Error::core("the management intermediate"))?;
        let answer = vault.sign_intermediate(&request)?;
        let issued = request
            .accept(&answer, trust.bundle().roots(), &vault.describe(), now)
            .map_err(Error::core(format!("the management intermediate from {}", vault.describe())))?;
        let ca = SigningCa::new(issued.value);
        match ca.bundle().ca_key().external() {
            // The public files and the key's URI; the key stays in the token.
            Some(uri) => {
                let mut files = ca.bundle().to_files(meshca::Layout::Istio);
                files.insert(crate::pkcs11::KEY_URI_FILE, format!("{uri}\n").into_bytes());
                opts.writer(store, policy).write_state(secret, &files)?;
            }
            None => opts.writer(store, policy).write_signer(secret, &ca, Owner::Meshca)?,
        }
        Ok(ca)
    })();
    match (renewed, current) {
        (Ok(ca), _) => {
            notes.push(format!(
                "the management intermediate was renewed through {} ({why}); it expires {}",
                v.address,
                meshca::format_time(ca.bundle().not_after())
            ));
            Ok((ca, true))
        }
        (Err(e), Some(ca)) if ca.bundle().not_after() > now => {
            tracing::warn!(error = %e, "renewing the management intermediate failed; keeping the current one");
            notes.push(format!(
                "renewing the management intermediate failed ({e}); meshca keeps signing with the current one, which \
                 expires {}, and retries every run",
                meshca::format_time(ca.bundle().not_after())
            ));
            Ok((ca, false))
        }
        (Err(e), _) => Err(e),
    }
}

/// The value of `key` in the management cluster's Secret `name`, which the policy's `field`
/// names; its absence an error saying `fix`.
fn secret_key(
    store: &dyn Store,
    mgmt: &str,
    name: &SecretName,
    key: &str,
    field: &str,
    fix: &'static str,
) -> Result<Vec<u8>, Error> {
    let r = SecretRef::new(mgmt, &name.namespace, &name.name);
    let location = store.location(&r);
    let files = store.read(&r)?.ok_or_else(|| Error::PolicySecret {
        field: field.to_owned(),
        secret: r.to_string(),
        problem: format!("not found at {location}"),
        fix,
    })?;
    files.get(key).map(<[u8]>::to_vec).ok_or_else(|| Error::PolicySecret {
        field: format!("{field}.key"),
        secret: r.to_string(),
        problem: format!("({location}) has no key `{key}`"),
        fix,
    })
}

/// Logs in to the PKI of `v` with what the policy names (a Secret's token, AppRole, the
/// service account) or, without `auth`, the token meshca's operator gave.
pub fn connect_vault(store: &dyn Store, v: &VaultSigner, opts: &Options) -> Result<Vault, Error> {
    let secret_value = |(name, key): &(SecretName, String), field: &str, fix: &'static str| {
        secret_key(store, &opts.mgmt_cluster, name, key, field, fix)
    };
    let base = "spec.config.mgmtServerCa.vault";
    let ca_cert = v
        .ca_cert
        .as_ref()
        .map(|r| secret_value(r, &format!("{base}.caCertSecretRef"), "put the PEM CA of the server's TLS there"))
        .transpose()?;
    let mut connect = Connect::of(v, ca_cert);
    if let Some(t) = opts.provider.call_timeout {
        connect.call_timeout = t;
    }
    let describe = connect.describe();
    let login = match &v.auth {
        VaultAuth::Given => Login::Token(opts.provider.token.clone().ok_or_else(|| Error::Provider {
            provider: describe.clone(),
            call: "login".into(),
            fault: crate::error::ProviderFault::NoCredentials,
            detail: format!("{base}.auth is not set and no token was given"),
        })?),
        VaultAuth::Token(name, key) => {
            let field = format!("{base}.auth.tokenSecretRef");
            let value = secret_value(&(name.clone(), key.clone()), &field, "put a token with the PKI policy there")?;
            Login::Token(VaultToken::from_bytes(&value, &field)?)
        }
        VaultAuth::AppRole { role_id, secret_id, mount } => {
            let field = format!("{base}.auth.appRole.secretIdSecretRef");
            let value = secret_value(secret_id, &field, "put the AppRole's secret ID there")?;
            Login::AppRole {
                mount: mount.clone(),
                role_id: role_id.clone(),
                secret_id: VaultToken::from_bytes(&value, &field)?,
            }
        }
        VaultAuth::Kubernetes { role, mount } => {
            let path = opts
                .provider
                .service_account_token
                .clone()
                .unwrap_or_else(|| crate::context::SERVICE_ACCOUNT_TOKEN.into());
            let jwt = crate::fs::read_input(&path).map_err(|e| Error::Provider {
                provider: describe.clone(),
                call: "login (Kubernetes)".into(),
                fault: crate::error::ProviderFault::NoCredentials,
                detail: format!("cannot read the service account token {}: {e}", path.display()),
            })?;
            Login::Kubernetes {
                mount: mount.clone(),
                role: role.clone(),
                jwt: VaultToken::from_bytes(&jwt, &path.display().to_string())?,
            }
        }
    };
    Vault::login(connect, login)
}

/// The policy field of the signing CA's token key.
const MGMT_PKCS11: &str = "spec.config.mgmtServerCa.pkcs11";

/// The PKCS#11 module for the token key `k` (policy field `field`): the one meshca's operator
/// allowed, which the policy, when it names one, must agree with.
pub(crate) fn token_module(token: &TokenAccess, k: &SignerKey, field: &str) -> Result<std::path::PathBuf, Error> {
    let uri_text = k.uri.to_string();
    let bad = |detail: String| Error::Pkcs11 { key: uri_text.clone(), detail };
    let expected = k.module.clone().or_else(|| k.uri.module_path.clone());
    match (&token.module, expected) {
        (Some(given), Some(expected)) => {
            let same = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            if same(given) != same(&expected) {
                return Err(bad(format!(
                    "{field} expects the PKCS#11 module {}, but meshca was given {}; meshca loads only the module its \
                     operator names",
                    expected.display(),
                    given.display()
                )));
            }
            Ok(given.clone())
        }
        (Some(given), None) => Ok(given.clone()),
        (None, Some(expected)) => Err(bad(format!(
            "{field} expects the PKCS#11 module {}; meshca loads a module only when its operator names it",
            expected.display()
        ))),
        (None, None) => Err(bad(format!("{field}: the key is in a PKCS#11 token, and no module was given"))),
    }
}

/// How to reach the key `uri` of the policy's token key `k` (policy field `field`): the
/// module (see [`token_module`]), the PIN given or read from `pinSecretRef` on `mgmt`.
pub(crate) fn token_access(
    store: &dyn Store,
    mgmt: &str,
    token: &TokenAccess,
    k: &SignerKey,
    field: &str,
    uri: crate::pkcs11::KeyUri,
) -> Result<crate::pkcs11::KeyAccess, Error> {
    use crate::pkcs11::{KeyAccess, Pin};
    let module = token_module(token, k, field)?;
    let pin = match (&token.pin, &k.pin) {
        (Some(pin), _) => pin.clone(),
        (None, Some((secret, key))) => {
            let field = format!("{field}.pinSecretRef");
            let value = secret_key(store, mgmt, secret, key, &field, "put the token's user PIN there")?;
            let location = store.location(&SecretRef::new(mgmt, &secret.namespace, &secret.name));
            Pin::from_bytes(&value, &format!("{location}/{key}"))?
        }
        (None, None) => {
            return Err(Error::Pkcs11 {
                key: k.uri.to_string(),
                detail: format!("no PIN for the token: set {field}.pinSecretRef, or give the PIN to meshca"),
            })
        }
    };
    Ok(KeyAccess { module, uri, pin })
}

#[cfg(test)]
mod tests {
    use super::renewed_key_uri;
    use crate::pkcs11::KeyUri;

    #[test]
    fn a_secret_names_the_policys_key_or_one_renewed_from_it_and_nothing_else() {
        let base = KeyUri::parse("pkcs11:token=meshca;object=mgmt").unwrap();
        let named = |text: &str| renewed_key_uri(&base, text.as_bytes()).map(|u| u.to_string());
        assert_eq!(named("pkcs11:token=meshca;object=mgmt\n"), Some(base.to_string()));
        assert_eq!(
            named("pkcs11:token=meshca;object=mgmt-1796000000"),
            Some("pkcs11:token=meshca;object=mgmt-1796000000".into())
        );
        for other in [
            "pkcs11:token=other;object=mgmt-1796000000",
            "pkcs11:token=meshca;object=root-ca",
            "pkcs11:token=meshca;object=mgmt-",
            "pkcs11:token=meshca;object=mgmt-12x",
            "pkcs11:token=meshca;object=mgmtx-12",
            "pkcs11:token=meshca;object=mgmt-12;id=%01",
            "not a uri",
        ] {
            assert_eq!(named(other), None, "{other}");
        }
        assert_eq!(renewed_key_uri(&base, &[0xff, 0xfe]), None);
    }
}
