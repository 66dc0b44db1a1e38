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

use crate::context::Options;
use crate::error::Error;
use crate::policy::{Policy, SignerSource};
use crate::report::SignerInfo;
use crate::store::{SecretRef, Store};
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
    fn open(&self, store: &dyn Store, _secret: &SecretRef) -> Result<Arc<dyn ExternalKey>, Error> {
        open_token_key(store, self.key, self.opts)
    }
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

    /// The key source of the CA in `secret`: the policy's token for its own signer Secret when
    /// the policy keeps that key in a token; `None`, the Secret's own `ca-key.pem`, otherwise.
    pub fn key_source(&self, secret: &SecretRef) -> Option<Box<dyn KeySource + 'a>> {
        let key = self.policy.signer_key.as_ref()?;
        (*secret == self.policy_secret()).then(|| Box::new(Pkcs11Source { key, opts: self.opts }) as Box<dyn KeySource>)
    }

    /// The signing CA in `secret`, valid at `now`, with its key from wherever it is kept;
    /// `None` when the Secret does not exist.
    pub fn read(&self, secret: &SecretRef, now: OffsetDateTime) -> Result<Option<SigningCa>, Error> {
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
    let signers = Signers::new(store, policy, opts);
    let secret = opts.signer_override.clone().unwrap_or_else(|| signers.policy_secret());
    let location = store.location(&secret);
    let (signer, created) = match (signers.read(&secret, opts.now)?, &policy.signer) {
        (Some(signer), _) => (signer, false),
        (None, SignerSource::Generated { root, .. }) if opts.signer_override.is_none() => {
            let signer = SigningCa::generate_root(root, rng, opts.now).map_err(Error::core("generating the root"))?;
            opts.writer(store, policy).write_signer(&secret, &signer, Owner::Meshca)?;
            (signer, true)
        }
        (None, _) => return Err(Error::SignerNotFound { secret: secret.to_string(), location }),
    };
    let b = signer.bundle();
    let info = SignerInfo {
        location,
        subject: b.ca_cert().subject(),
        root: b.root().subject(),
        root_fingerprint: b.root_fingerprint(),
        created,
        key: b.ca_key().external(),
    };
    Ok((signer, info))
}

/// Opens the policy's token-held signing key: the module the operator allowed (which the
/// policy, when it names one, must agree with), the PIN given or read from `pinSecretRef`.
fn open_token_key(
    store: &dyn Store,
    k: &crate::policy::SignerKey,
    opts: &Options,
) -> Result<Arc<dyn ExternalKey>, Error> {
    use crate::pkcs11::{KeyAccess, Pin, TokenKey};
    let field = "spec.config.mgmtServerCa.pkcs11";
    let uri_text = k.uri.to_string();
    let bad = |detail: String| Error::Pkcs11 { key: uri_text.clone(), detail };
    let expected = k.module.clone().or_else(|| k.uri.module_path.clone());
    let module = match (&opts.token.module, expected) {
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
            given.clone()
        }
        (Some(given), None) => given.clone(),
        (None, Some(expected)) => {
            return Err(bad(format!(
                "{field} expects the PKCS#11 module {}; meshca loads a module only when its operator names it",
                expected.display()
            )))
        }
        (None, None) => return Err(bad("the signing key is in a PKCS#11 token, and no module was given".into())),
    };
    let pin = match (&opts.token.pin, &k.pin) {
        (Some(pin), _) => pin.clone(),
        (None, Some((secret, key))) => {
            let r = SecretRef::new(&opts.mgmt_cluster, &secret.namespace, &secret.name);
            let location = store.location(&r);
            let files = store.read(&r)?.ok_or_else(|| Error::PolicySecret {
                field: format!("{field}.pinSecretRef"),
                secret: r.to_string(),
                problem: format!("not found at {location}"),
                fix: "create it with the token's user PIN",
            })?;
            let value = files.get(key).ok_or_else(|| Error::PolicySecret {
                field: format!("{field}.pinSecretRef.key"),
                secret: r.to_string(),
                problem: format!("({location}) has no key `{key}`"),
                fix: "put the token's user PIN under that key",
            })?;
            Pin::from_bytes(value, &format!("{location}/{key}"))?
        }
        (None, None) => {
            return Err(bad(format!("no PIN for the token: set {field}.pinSecretRef, or give the PIN to meshca")))
        }
    };
    let key = TokenKey::open(&KeyAccess { module, uri: k.uri.clone(), pin })?;
    Ok(key)
}
