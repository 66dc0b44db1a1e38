//! Signing CA keys in an HSM or any PKCS#11 token (SoftHSM2 in tests), through `cryptoki`.
//!
//! Keys are named by RFC 7512 URIs (`pkcs11:token=meshca;object=root-ca`). meshca generates a
//! key pair inside the token (private key `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`), or opens an
//! existing one, and the token signs: ECDSA P-256/P-384 as `CKM_ECDSA` over a SHA-256/384 digest
//! computed here (the raw `r || s` re-encoded as DER), RSA 2048-4096 as `CKM_SHA256_RSA_PKCS`.
//! A [`TokenKey`] is a [`meshca::ExternalKey`]: the core issues through it exactly as it does
//! with a key in memory, and checks every signature it returns.
//!
//! A module is a shared library meshca loads into its own process, so which module may be
//! loaded is the operator's decision (a path given to the program), never a policy's: a policy
//! may name a module only to say which one it expects. Each module is loaded and initialised
//! once per process; keys are kept open (a small pool of logged-in sessions) and reused across
//! reconcile passes. PINs live in [`Pin`], which zeroizes and never prints.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use meshca::{ExternalKey, KeyAlgorithm, KeyType, SignError};
use zeroize::Zeroizing;

use crate::error::Error;

/// The file beside a token-held CA's public files that names its key (`meshca root-ca
/// --key-uri` writes it; commands that read a CA directory open the key it names).
pub const KEY_URI_FILE: &str = "ca-key.uri";

/// The environment variable naming the PKCS#11 module when none is given.
pub const MODULE_ENV: &str = "MESHCA_PKCS11_MODULE";
/// The environment variable holding the token PIN when no PIN file is given.
pub const PIN_ENV: &str = "MESHCA_PKCS11_PIN";

/// A PIN file is a line, not a document: anything larger is not a PIN.
const MAX_PIN_FILE: u64 = 1024;
/// Sessions kept open per key: enough for reconcile's workers to sign in parallel.
const MAX_SESSIONS: usize = 4;

const OID_P256_DER: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384_DER: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

// ---- URIs -------------------------------------------------------------------------------------

/// A parsed RFC 7512 PKCS#11 URI naming one private key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyUri {
    /// `token`: the token label.
    pub token: Option<String>,
    /// `manufacturer`: the token's manufacturer ID.
    pub manufacturer: Option<String>,
    /// `model`: the token's model.
    pub model: Option<String>,
    /// `serial`: the token's serial number.
    pub serial: Option<String>,
    /// `slot-id`: the slot number.
    pub slot_id: Option<u64>,
    /// `object`: the key's `CKA_LABEL`.
    pub object: Option<String>,
    /// `id`: the key's `CKA_ID` (bytes).
    pub id: Option<Vec<u8>>,
    /// `?module-path=`: the module the URI was written for.
    pub module_path: Option<PathBuf>,
}

impl KeyUri {
    /// Parses `pkcs11:...`: one line of the RFC 7512 grammar, each attribute within the size
    /// PKCS#11 gives it. Refuses what meshca cannot honour rather than ignoring it: an unknown
    /// attribute, a repeated one, an object type other than `private`, and a PIN in the URI
    /// (`pin-value`, `pin-source`: a PIN in a URI reaches shell history, process lists and logs;
    /// give it separately). A refused URI is never echoed, whole or in part, not even
    /// %-encoded: it may be a key pasted in the wrong place. Only the names of attributes are
    /// shown, when they are short lowercase words.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = |detail: String| Error::Pkcs11 { key: REFUSED_URI.into(), detail };
        let rest = text.strip_prefix("pkcs11:").ok_or_else(|| {
            bad("a PKCS#11 URI starts with `pkcs11:` (RFC 7512), e.g. pkcs11:token=meshca;object=root-ca".into())
        })?;
        if text.len() > MAX_URI_BYTES {
            return Err(bad(format!("{} bytes is not a key URI (at most {MAX_URI_BYTES})", text.len())));
        }
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        // RFC 7512 section 2.3: pk11-path and pk11-query characters (unreserved, %-escapes and
        // the reserved characters each part allows). A line break, a space or a byte outside
        // ASCII ends the URI as far as the grammar goes.
        let grammar = "a key URI is one line of letters, digits, %-escapes and -._~:[]@!$'()*+,=& (RFC 7512 \
                       section 2.3), e.g. pkcs11:token=meshca;object=root-ca";
        if let Some(c) = path.chars().find(|&c| !(is_pk11_char(c) || c == ';' || c == '&')) {
            return Err(bad(format!("holds {}, which its path may not hold: {grammar}", describe_char(c))));
        }
        if let Some(c) = query.unwrap_or("").chars().find(|&c| !(is_pk11_char(c) || "/?|&".contains(c))) {
            return Err(bad(format!("holds {}, which its query may not hold: {grammar}", describe_char(c))));
        }
        let mut uri = KeyUri::default();
        let mut seen = Vec::new();
        for part in path.split(';').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| bad("an attribute has no `=value`".into()))?;
            let shown = shown_name(name);
            if seen.contains(&name) {
                return Err(bad(format!("{shown} appears twice")));
            }
            seen.push(name);
            let bytes = pct_decode(value).ok_or_else(|| bad(format!("{shown} has a bad %-escape")))?;
            // Labels, serials and names are short printable text in PKCS#11 (CK_TOKEN_INFO fixes
            // the token's at 32 or 16 bytes); anything else is not a key's name.
            let text_value = |max: usize| {
                let v = String::from_utf8(bytes.clone())
                    .map_err(|_| bad(format!("{shown} is not UTF-8 once %-decoded")))?;
                if v.len() > max {
                    return Err(bad(format!("{shown} is {} bytes once %-decoded; PKCS#11 allows {max}", v.len())));
                }
                if v.chars().any(char::is_control) {
                    return Err(bad(format!("{shown} holds a control character once %-decoded")));
                }
                Ok(v)
            };
            match name {
                "token" => uri.token = Some(text_value(32)?),
                "manufacturer" => uri.manufacturer = Some(text_value(32)?),
                "model" => uri.model = Some(text_value(16)?),
                "serial" => uri.serial = Some(text_value(16)?),
                "object" => uri.object = Some(text_value(MAX_LABEL_BYTES)?),
                "id" => {
                    if bytes.len() > MAX_ID_BYTES {
                        return Err(bad(format!("`id` is {} bytes; meshca takes at most {MAX_ID_BYTES}", bytes.len())));
                    }
                    uri.id = Some(bytes)
                }
                "slot-id" => {
                    uri.slot_id =
                        Some(text_value(20)?.parse().map_err(|_| bad("`slot-id` is not a slot number".into()))?)
                }
                "type" => {
                    if text_value(16)? != "private" {
                        return Err(
                            bad("meshca signs with a private key: `type` must be `private` or left out".into()),
                        );
                    }
                }
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer" => {
                    return Err(bad(format!("{shown} is not supported; name the token by token, serial or slot-id")))
                }
                vendor if vendor.starts_with("x-") => {}
                _ => return Err(bad(format!("unknown path attribute {shown} (RFC 7512 section 2.3)"))),
            }
        }
        for part in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| bad("a query attribute has no `=value`".into()))?;
            let shown = shown_name(name);
            match name {
                "pin-value" | "pin-source" => {
                    return Err(bad(format!(
                        "{shown}: meshca does not take a PIN inside a URI (it would reach shell history, process \
                         lists and logs); give the PIN from a file or the environment"
                    )))
                }
                "module-path" => {
                    let bytes = pct_decode(value).ok_or_else(|| bad("`module-path` has a bad %-escape".into()))?;
                    let s = String::from_utf8(bytes).map_err(|_| bad("`module-path` is not UTF-8".into()))?;
                    if s.is_empty() || s.chars().any(char::is_control) {
                        return Err(bad("`module-path` is empty or holds a control character".into()));
                    }
                    uri.module_path = Some(PathBuf::from(s));
                }
                vendor if vendor.starts_with("x-") => {}
                _ => return Err(bad(format!("unknown query attribute {shown}"))),
            }
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(bad("names no key: give `object=<label>` (or `id=`)".into()));
        }
        Ok(uri)
    }

    fn matches_token(&self, slot: Slot, info: &cryptoki::slot::TokenInfo) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have.trim_end());
        eq(&self.token, info.label())
            && eq(&self.manufacturer, info.manufacturer_id())
            && eq(&self.model, info.model())
            && eq(&self.serial, info.serial_number())
            && self.slot_id.is_none_or(|id| id == slot.id())
    }

    fn key_template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut t = vec![Attribute::Class(class)];
        if let Some(label) = &self.object {
            t.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &self.id {
            t.push(Attribute::Id(id.clone()));
        }
        t
    }
}

impl fmt::Display for KeyUri {
    /// The canonical form: path attributes %-encoded where RFC 7512 requires it; no PIN.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let text = [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
        ];
        for (name, v) in text {
            if let Some(v) = v {
                parts.push(format!("{name}={}", pct_encode(v.as_bytes(), false)));
            }
        }
        if let Some(s) = self.slot_id {
            parts.push(format!("slot-id={s}"));
        }
        if let Some(o) = &self.object {
            parts.push(format!("object={}", pct_encode(o.as_bytes(), false)));
        }
        if let Some(id) = &self.id {
            parts.push(format!("id={}", pct_encode(id, false)));
        }
        write!(f, "pkcs11:{}", parts.join(";"))?;
        if let Some(m) = &self.module_path {
            write!(f, "?module-path={}", pct_encode(m.to_string_lossy().as_bytes(), true))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for KeyUri {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        KeyUri::parse(s)
    }
}

/// What messages say in place of a key URI that was refused.
const REFUSED_URI: &str = "key URI (not shown)";
/// The longest key URI meshca takes: a key is named in a line, not a document. (What meshca
/// prints of a URI it took is never longer than what it took, so it always parses back.)
const MAX_URI_BYTES: usize = 4096;
/// The longest `object` label meshca takes.
const MAX_LABEL_BYTES: usize = 128;
/// The longest `id` meshca takes (a SHA-1 or SHA-256 of the public key is 20 or 32 bytes).
const MAX_ID_BYTES: usize = 64;

/// RFC 7512 `pk11-pchar` less the part-specific extras: unreserved, `%` of a %-escape, and
/// `pk11-res-avail`.
fn is_pk11_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~%:[]@!$'()*+,=".contains(c)
}

/// A refused character, described without printing it raw (it may be a control character).
fn describe_char(c: char) -> String {
    match c {
        '\n' | '\r' => "a line break".into(),
        ' ' => "a space".into(),
        c if c.is_control() || !c.is_ascii() => format!("the character U+{:04X}", u32::from(c)),
        c => format!("`{c}`"),
    }
}

/// An attribute name for a message: shown when it is a short lowercase word (a typo of a
/// known name), otherwise not at all.
fn shown_name(name: &str) -> String {
    if !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        format!("`{name}`")
    } else {
        "an attribute (name not shown)".into()
    }
}

fn pct_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// %-encodes a value for the URI's path (`query` false) or query, leaving exactly the characters
/// RFC 7512's grammar allows there, so that what meshca prints parses back to the same value.
fn pct_encode(b: &[u8], query: bool) -> String {
    b.iter()
        .map(|&c| {
            let ch = char::from(c);
            let kept = c.is_ascii()
                && ch != '%'
                && (is_pk11_char(ch) || (!query && ch == '&') || (query && "/?|".contains(ch)));
            if kept {
                ch.to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

// ---- PINs -------------------------------------------------------------------------------------

/// A token PIN. Zeroized on drop; `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// A PIN from a value (an environment variable, a Secret's key). One trailing newline is
    /// dropped, as `echo pin > file` and `kubectl create secret --from-file` leave one.
    pub fn new(value: &str) -> Result<Self, Error> {
        let v = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(value);
        if v.is_empty() {
            return Err(Error::Pkcs11 { key: "PIN".into(), detail: "the PIN is empty".into() });
        }
        if v.len() > MAX_PIN_FILE as usize || v.contains(['\n', '\0']) {
            return Err(Error::Pkcs11 {
                key: "PIN".into(),
                detail: "is not a PIN (more than one line, a NUL, or over 1 KiB); contents not shown".into(),
            });
        }
        Ok(Pin(Zeroizing::new(v.to_owned())))
    }

    /// Reads a PIN file (one line, at most 1 KiB).
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        use std::io::Read;
        let bad = |detail: String| Error::Pkcs11 { key: format!("PIN file {}", path.display()), detail };
        // Through the one input gate: a FIFO, a device or a directory is refused, never waited on.
        let file = crate::fs::open_input(path).map_err(|e| bad(format!("cannot be read: {}", e.source)))?;
        let mut buf = Zeroizing::new(Vec::new());
        file.take(MAX_PIN_FILE + 1).read_to_end(&mut buf).map_err(|e| bad(format!("cannot be read: {e}")))?;
        if buf.len() as u64 > MAX_PIN_FILE {
            return Err(bad("is over 1 KiB: not a PIN file; contents not shown".into()));
        }
        let text = std::str::from_utf8(&buf).map_err(|_| bad("is not UTF-8 text; contents not shown".into()))?;
        Pin::new(text).map_err(|e| match e {
            Error::Pkcs11 { detail, .. } => bad(detail),
            other => other,
        })
    }

    /// A PIN held in a Secret's key (the policy's `pinSecretRef`).
    pub fn from_bytes(value: &[u8], source: &str) -> Result<Self, Error> {
        let text = std::str::from_utf8(value).map_err(|_| Error::Pkcs11 {
            key: source.into(),
            detail: "the PIN is not UTF-8 text; contents not shown".into(),
        })?;
        Pin::new(text).map_err(|e| match e {
            Error::Pkcs11 { detail, .. } => Error::Pkcs11 { key: source.into(), detail },
            other => other,
        })
    }

    fn secret(&self) -> cryptoki::types::AuthPin {
        cryptoki::types::AuthPin::from(self.0.as_str())
    }

    fn fingerprint(&self) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(..)")
    }
}

// ---- modules ----------------------------------------------------------------------------------

/// Loads `path` (once per process) and initialises it. Exposed so that tests and tools that
/// set tokens up use the same loaded module as meshca (a module is initialised once per process).
pub fn module(path: &Path) -> Result<Pkcs11, Error> {
    loaded(path).map(|(_, m)| m)
}

fn loaded(path: &Path) -> Result<(PathBuf, Pkcs11), Error> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let bad = |detail: String| Error::Pkcs11 { key: format!("PKCS#11 module {}", path.display()), detail };
    let canonical = std::fs::canonicalize(path).map_err(|e| bad(format!("cannot be opened: {e}")))?;
    if !canonical.is_file() {
        return Err(bad("is not a file; give the path of the token's PKCS#11 shared library".into()));
    }
    let mut modules = MODULES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = modules.get(&canonical) {
        return Ok((canonical, m.clone()));
    }
    let m = Pkcs11::new(&canonical).map_err(|e| {
        bad(match e {
            CkError::LibraryLoading(e) => format!("is not a loadable shared library: {e}"),
            CkError::MissingSymbol(s) => format!("is a shared library but not a PKCS#11 module (no {s})"),
            other => format!("is not a usable PKCS#11 module: {}", ck(&other)),
        })
    })?;
    match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(bad(format!("C_Initialize failed: {}", ck(&e)))),
    }
    modules.insert(canonical.clone(), m.clone());
    Ok((canonical, m))
}

fn ck(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("{f} returned {}", rv_name(*rv)),
        other => other.to_string(),
    }
}

/// `CKR_PIN_INCORRECT` from `PinIncorrect`.
fn rv_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR");
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn find_slot(ctx: &Pkcs11, uri: &KeyUri, key: &str) -> Result<Slot, Error> {
    let bad = |detail: String| Error::Pkcs11 { key: key.into(), detail };
    let slots = ctx.get_slots_with_token().map_err(|e| bad(format!("listing tokens: {}", ck(&e))))?;
    let mut labels = Vec::new();
    let mut found = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else { continue };
        if !info.token_initialized() {
            continue;
        }
        labels.push(info.label().trim_end().to_owned());
        if uri.matches_token(slot, &info) {
            found.push(slot);
        }
    }
    match found.len() {
        1 => Ok(found[0]),
        0 => Err(bad(format!(
            "no token matches (tokens present: {}); check the URI's token= (or that the token is plugged in)",
            if labels.is_empty() { "none".into() } else { meshca::list_bounded(&labels, 10) }
        ))),
        n => Err(bad(format!("{n} tokens match; add token=, serial= or slot-id= to name one"))),
    }
}

/// Logs in to the token in `slot`. Login state belongs to the process, not the session: once
/// one key is open, a later login "succeeds" with any PIN (CKR_USER_ALREADY_LOGGED_IN). So the
/// PIN that logged in is remembered (as a digest), and a different PIN logs out and in again:
/// a wrong PIN is refused even while another key on the token is open.
fn login(module: &Path, slot: Slot, session: &Session, pin: &Pin, key: &str) -> Result<(), Error> {
    type Logins = Mutex<HashMap<(PathBuf, u64), [u8; 32]>>;
    static LOGINS: OnceLock<Logins> = OnceLock::new();
    let mut logins = LOGINS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    let at = (module.to_path_buf(), slot.id());
    let result = match session.login(UserType::User, Some(&pin.secret())) {
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) if logins.get(&at) == Some(&pin.fingerprint()) => Ok(()),
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
            let _ = session.logout();
            session.login(UserType::User, Some(&pin.secret()))
        }
        other => other,
    };
    logins.remove(&at);
    if result.is_ok() {
        logins.insert(at, pin.fingerprint());
    }
    match result {
        Ok(()) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(Error::Pkcs11 {
            key: key.into(),
            detail: "the token refused the PIN (CKR_PIN_INCORRECT); check the PIN (repeated wrong PINs lock the \
                     token)"
                .into(),
        }),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Error::Pkcs11 {
            key: key.into(),
            detail: "the token's user PIN is locked (CKR_PIN_LOCKED); its security officer must reset it".into(),
        }),
        Err(e) => Err(Error::Pkcs11 { key: key.into(), detail: format!("login failed: {}", ck(&e)) }),
    }
}

// ---- keys -------------------------------------------------------------------------------------

/// A private key in a token, with a pool of logged-in sessions. Signs for the core.
pub struct TokenKey {
    uri: String,
    key_type: KeyType,
    public_raw: Vec<u8>,
    handle: ObjectHandle,
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey").field("uri", &self.uri).field("key_type", &self.key_type).finish_non_exhaustive()
    }
}

/// What opens a key: the module to load, the URI, the PIN.
#[derive(Clone, Debug)]
pub struct KeyAccess {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The key.
    pub uri: KeyUri,
    /// The token's user PIN.
    pub pin: Pin,
}

type KeyCache = Mutex<HashMap<(PathBuf, String, [u8; 32]), Arc<TokenKey>>>;

fn key_cache() -> &'static KeyCache {
    static KEYS: OnceLock<KeyCache> = OnceLock::new();
    KEYS.get_or_init(Default::default)
}

impl TokenKey {
    /// Opens an existing private key: finds the one token the URI names, logs in, finds exactly
    /// one private key and its public half. Opened keys are kept (per module, URI and PIN) and
    /// reused; a key that failed to sign is dropped and opened afresh next time.
    pub fn open(access: &KeyAccess) -> Result<Arc<TokenKey>, Error> {
        let uri = access.uri.to_string();
        let cache_key = (access.module.clone(), uri.clone(), access.pin.fingerprint());
        if let Some(k) = key_cache().lock().unwrap_or_else(|p| p.into_inner()).get(&cache_key) {
            return Ok(k.clone());
        }
        let (ctx, slot, first, handle) = find_private(access, &uri)?;
        let bad = |detail: String| Error::Pkcs11 { key: uri.clone(), detail };
        let handle = handle.ok_or_else(|| {
            bad("no private key with that object=/id= on the token; check the label, or create the key (a root \
                 generated into the token)"
                .into())
        })?;
        let (key_type, public_raw) = read_public(&first, &access.uri, handle).map_err(|e| bad(e.to_string()))?;
        let key = Self::pooled(&ctx, slot, uri, key_type, public_raw, handle, first);
        key_cache().lock().unwrap_or_else(|p| p.into_inner()).insert(cache_key, key.clone());
        Ok(key)
    }

    /// Generates a key pair inside the token: token objects, the private key sensitive, not
    /// extractable, sign-only. Refuses when a key with that label or ID already exists there
    /// (two keys under one name would make the URI ambiguous).
    pub fn generate(access: &KeyAccess, alg: KeyAlgorithm) -> Result<Arc<TokenKey>, Error> {
        let uri_text = access.uri.to_string();
        let bad = |detail: String| Error::Pkcs11 { key: uri_text.clone(), detail };
        let (mechanism, public) = match alg.key_type() {
            KeyType::EcdsaP256 | KeyType::EcdsaP384 => {
                let oid = if alg.key_type() == KeyType::EcdsaP256 { OID_P256_DER } else { OID_P384_DER };
                (Mechanism::EccKeyPairGen, vec![Attribute::EcParams(oid.to_vec())])
            }
            KeyType::Rsa { bits } => (
                Mechanism::RsaPkcsKeyPairGen,
                vec![Attribute::ModulusBits((bits as u64).into()), Attribute::PublicExponent(vec![1, 0, 1])],
            ),
            other => return Err(bad(format!("cannot generate a {other} key in a token"))),
        };
        let (ctx, slot, session, handle, with_id) = generate_pair(access, &mechanism, public, &alg.to_string())?;
        let (key_type, public_raw) = read_public(&session, &with_id, handle).map_err(|e| bad(e.to_string()))?;
        Ok(Self::pooled(&ctx, slot, uri_text, key_type, public_raw, handle, session))
    }

    fn pooled(
        ctx: &Pkcs11,
        slot: Slot,
        uri: String,
        key_type: KeyType,
        public_raw: Vec<u8>,
        handle: ObjectHandle,
        first: Session,
    ) -> Arc<TokenKey> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_SESSIONS);
        let mut sessions = vec![Mutex::new(first)];
        for _ in 1..n {
            // Login state is per application and token: the later sessions share it.
            match ctx.open_ro_session(slot) {
                Ok(s) => sessions.push(Mutex::new(s)),
                Err(_) => break,
            }
        }
        Arc::new(TokenKey { uri, key_type, public_raw, handle, sessions, next: AtomicUsize::new(0) })
    }

    /// The key's URI (canonical, no PIN).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Whether the private key object is marked not extractable and sensitive, and its value
    /// cannot be read: what meshca requires of a key it generated.
    pub fn is_unextractable(&self) -> Result<bool, Error> {
        let s = self.session();
        let attrs = s
            .get_attributes(self.handle, &[AttributeType::Extractable, AttributeType::Sensitive])
            .map_err(|e| Error::Pkcs11 { key: self.uri.clone(), detail: ck(&e) })?;
        let flag = |t: AttributeType| {
            attrs.iter().find_map(|a| match (a, t) {
                (Attribute::Extractable(v), AttributeType::Extractable) => Some(*v),
                (Attribute::Sensitive(v), AttributeType::Sensitive) => Some(*v),
                _ => None,
            })
        };
        // The secret part: CKA_VALUE for EC keys, CKA_PRIVATE_EXPONENT for RSA ones.
        let secret = s
            .get_attribute_info(self.handle, &[AttributeType::Value, AttributeType::PrivateExponent])
            .map_err(|e| Error::Pkcs11 { key: self.uri.clone(), detail: ck(&e) })?;
        let value_hidden = secret.iter().all(|i| matches!(i, AttributeInfo::Sensitive | AttributeInfo::TypeInvalid))
            && secret.iter().any(|i| matches!(i, AttributeInfo::Sensitive));
        Ok(flag(AttributeType::Extractable) == Some(false)
            && flag(AttributeType::Sensitive) == Some(true)
            && value_hidden)
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        for s in &self.sessions {
            if let Ok(g) = s.try_lock() {
                return g;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
        self.sessions[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget(&self) {
        key_cache().lock().unwrap_or_else(|p| p.into_inner()).retain(|_, k| !std::ptr::eq(Arc::as_ptr(k), self));
    }
}

impl ExternalKey for TokenKey {
    fn key_type(&self) -> KeyType {
        self.key_type
    }

    fn public_key_raw(&self) -> &[u8] {
        &self.public_raw
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let signed = match self.key_type {
            KeyType::EcdsaP256 | KeyType::EcdsaP384 => {
                let alg =
                    if self.key_type == KeyType::EcdsaP256 { &ring::digest::SHA256 } else { &ring::digest::SHA384 };
                let digest = ring::digest::digest(alg, message);
                self.session()
                    .sign(&Mechanism::Ecdsa, self.handle, digest.as_ref())
                    .map_err(|e| sign_error(&e))
                    .and_then(|raw| {
                        meshca::ecdsa_signature_to_der(&raw).ok_or(SignError::Malformed {
                            mechanism: "CKM_ECDSA",
                            len: raw.len(),
                            expected: "r || s",
                        })
                    })
            }
            KeyType::Rsa { .. } => {
                self.session().sign(&Mechanism::Sha256RsaPkcs, self.handle, message).map_err(|e| sign_error(&e))
            }
            // KeyType is the core's, open to new kinds: one meshca-ops does not know is refused,
            // never signed with another kind's mechanism.
            other => Err(SignError::Unavailable(format!("meshca-ops cannot sign with a {other:?} key in a token"))),
        };
        if signed.is_err() {
            // A session the token dropped (removed, restarted) is not reused: open afresh next time.
            self.forget();
        }
        signed
    }

    fn describe(&self) -> String {
        self.uri.clone()
    }
}

/// Finds the one token `access` names, logs in on a new session, and finds the private key
/// matching the URI: `None` when there is none, an error when several match (`uri` is the URI's
/// text, for messages).
fn find_private(access: &KeyAccess, uri: &str) -> Result<(Pkcs11, Slot, Session, Option<ObjectHandle>), Error> {
    let (path, ctx) = loaded(&access.module)?;
    let slot = find_slot(&ctx, &access.uri, uri)?;
    let bad = |detail: String| Error::Pkcs11 { key: uri.into(), detail };
    let session = ctx.open_ro_session(slot).map_err(|e| bad(format!("opening a session: {}", ck(&e))))?;
    login(&path, slot, &session, &access.pin, uri)?;
    let handles = session
        .find_objects(&access.uri.key_template(ObjectClass::PRIVATE_KEY))
        .map_err(|e| bad(format!("searching the token: {}", ck(&e))))?;
    match handles.as_slice() {
        [h] => Ok((ctx, slot, session, Some(*h))),
        [] => Ok((ctx, slot, session, None)),
        many => Err(bad(format!("{} private keys match; add id= to name one", many.len()))),
    }
}

/// Generates a key pair with `mechanism` inside the token `access` names: token objects
/// labelled by the URI's `object=` (required), the private key sensitive, not extractable,
/// sign-only; `public` adds the public template's algorithm attributes. Refuses when an object
/// with that label or ID exists (two keys under one name would make the URI ambiguous).
/// Returns the logged-in read-write session, the private key and the URI with its ID.
fn generate_pair(
    access: &KeyAccess,
    mechanism: &Mechanism<'_>,
    public_params: Vec<Attribute>,
    alg: &str,
) -> Result<(Pkcs11, Slot, Session, ObjectHandle, KeyUri), Error> {
    let uri_text = access.uri.to_string();
    let bad = |detail: String| Error::Pkcs11 { key: uri_text.clone(), detail };
    let Some(label) = access.uri.object.clone() else {
        return Err(bad("a key to generate needs a label: give object=<label>".into()));
    };
    let (path, ctx) = loaded(&access.module)?;
    let slot = find_slot(&ctx, &access.uri, &uri_text)?;
    let session = ctx.open_rw_session(slot).map_err(|e| bad(format!("opening a session: {}", ck(&e))))?;
    login(&path, slot, &session, &access.pin, &uri_text)?;
    let mut existing = session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|e| bad(format!("searching the token: {}", ck(&e))))?;
    if let Some(id) = &access.uri.id {
        existing.extend(session.find_objects(&[Attribute::Id(id.clone())]).unwrap_or_default());
    }
    if !existing.is_empty() {
        return Err(bad(format!(
            "the token already holds an object labelled {label}; meshca does not replace keys: pick another object= \
             or sign with the existing key"
        )));
    }
    let id = match &access.uri.id {
        Some(id) => id.clone(),
        None => session.generate_random_vec(16).map_err(|e| bad(format!("C_GenerateRandom: {}", ck(&e))))?,
    };
    let common = |private: bool| {
        vec![
            Attribute::Token(true),
            Attribute::Private(private),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ]
    };
    let mut public = common(false);
    public.push(Attribute::Verify(true));
    public.extend(public_params);
    let mut private = common(true);
    private.extend([
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Derive(false),
    ]);
    let (_, handle) = session
        .generate_key_pair(mechanism, &public, &private)
        .map_err(|e| bad(format!("generating a {alg} key pair: {}", ck(&e))))?;
    let with_id = KeyUri { id: Some(id), ..access.uri.clone() };
    Ok((ctx, slot, session, handle, with_id))
}

// ---- Ed25519 (the issuance log's key) ---------------------------------------------------------

/// `CKA_EC_PARAMS` of Ed25519: the OID id-Ed25519 (RFC 8410), or the PrintableString
/// `edwards25519` that PKCS#11 3.0 also allows.
const ED25519_PARAMS_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const ED25519_PARAMS_NAME: &[u8] = b"\x13\x0cedwards25519";

/// An Ed25519 key in a token (`CKK_EC_EDWARDS`, signing with `CKM_EDDSA`): the issuance log's
/// checkpoint key ([`crate::audit`]). It signs notes, not certificates, so it is not an
/// [`ExternalKey`]. `Debug` shows its URI only.
pub struct Ed25519Key {
    uri: String,
    public: [u8; 32],
    handle: ObjectHandle,
    session: Mutex<Session>,
}

impl fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Key").field("uri", &self.uri).finish_non_exhaustive()
    }
}

impl Ed25519Key {
    /// Opens the Ed25519 private key `access` names (exactly one) and its public half. When no
    /// private key matches, generates one with `create` (see [`Ed25519Key::generate`]).
    pub fn open(access: &KeyAccess, create: bool) -> Result<Ed25519Key, Error> {
        let uri = access.uri.to_string();
        let (_, _, session, handle) = find_private(access, &uri)?;
        let handle = match handle {
            Some(h) => h,
            None if create => {
                drop(session);
                return Self::generate(access);
            }
            None => {
                return Err(Error::Pkcs11 {
                    key: uri,
                    detail: "no private key with that object=/id= on the token; check the label".into(),
                })
            }
        };
        let public =
            ed25519_public(&session, &access.uri).map_err(|e| Error::Pkcs11 { key: uri.clone(), detail: e })?;
        Ok(Ed25519Key { uri, public, handle, session: Mutex::new(session) })
    }

    /// Generates an Ed25519 key pair in the token (as [`TokenKey::generate`]: sensitive, not
    /// extractable, never replacing an object of that label).
    pub fn generate(access: &KeyAccess) -> Result<Ed25519Key, Error> {
        let uri = access.uri.to_string();
        let params = vec![Attribute::EcParams(ED25519_PARAMS_OID.to_vec())];
        let (_, _, session, handle, with_id) =
            generate_pair(access, &Mechanism::EccEdwardsKeyPairGen, params, "Ed25519")?;
        let public = ed25519_public(&session, &with_id).map_err(|e| Error::Pkcs11 { key: uri.clone(), detail: e })?;
        Ok(Ed25519Key { uri, public, handle, session: Mutex::new(session) })
    }

    /// The key's URI (canonical, no PIN).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The raw public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// Signs `message` with pure Ed25519 (`CKM_EDDSA` without parameters): the 64-byte
    /// signature. The caller checks it against [`Ed25519Key::public_key`].
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        session
            .sign(&Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)), self.handle, message)
            .map_err(|e| Error::Pkcs11 { key: self.uri.clone(), detail: format!("signing: {}", ck(&e)) })
    }
}

/// The public half of the Ed25519 key `uri` names, read from its public key object without
/// logging in (public key objects are not private): what a log's auditor needs, no PIN.
pub fn ed25519_public_key(module: &Path, uri: &KeyUri) -> Result<[u8; 32], Error> {
    let text = uri.to_string();
    let bad = |detail: String| Error::Pkcs11 { key: text.clone(), detail };
    let (_, ctx) = loaded(module)?;
    let slot = find_slot(&ctx, uri, &text)?;
    let session = ctx.open_ro_session(slot).map_err(|e| bad(format!("opening a session: {}", ck(&e))))?;
    ed25519_public(&session, uri).map_err(|e| {
        bad(if e.starts_with("0 ") {
            format!(
                "{e}; read without logging in, so a token that shows public keys only after login hides it: check \
                 against the verifier key you kept instead"
            )
        } else {
            e
        })
    })
}

/// Reads the one public key object matching `uri`, which must be an Ed25519 key.
fn ed25519_public(session: &Session, uri: &KeyUri) -> Result<[u8; 32], String> {
    let publics = session.find_objects(&uri.key_template(ObjectClass::PUBLIC_KEY)).map_err(|e| ck(&e))?;
    let [public] = publics.as_slice() else {
        return Err(format!(
            "{} public key objects match the key's label/ID (need exactly one, to read the Ed25519 key)",
            publics.len()
        ));
    };
    let attrs = session
        .get_attributes(*public, &[AttributeType::KeyType, AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(|e| ck(&e))?;
    let (mut kind, mut params, mut point) = (None, None, None);
    for a in attrs {
        match a {
            Attribute::KeyType(k) => kind = Some(k),
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    if kind != Some(CkKeyType::EC_EDWARDS) {
        return Err(format!(
            "the key is {}, not Ed25519 (CKK_EC_EDWARDS); the issuance log signs with Ed25519",
            kind.map_or_else(|| "of no CKA_KEY_TYPE".into(), |k| format!("a {k} key"))
        ));
    }
    if !matches!(params.as_deref(), Some(ED25519_PARAMS_OID | ED25519_PARAMS_NAME)) {
        return Err("the Edwards key is not on edwards25519 (Ed448 is not what the log signs with)".into());
    }
    let point = point.ok_or_else(|| "the public key has no CKA_EC_POINT".to_string())?;
    // PKCS#11 3.0 says a DER OCTET STRING; some tokens return the bare 32 bytes.
    let raw = match point.as_slice() {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        bare if bare.len() == 32 => bare,
        _ => return Err("CKA_EC_POINT is not a 32-byte Ed25519 key (bare or as an OCTET STRING)".into()),
    };
    raw.try_into().map_err(|_| "CKA_EC_POINT is not 32 bytes".to_string())
}

/// Why a token's key object is not one meshca can sign with (its messages are what the
/// operator reads after the key's URI).
#[derive(Debug, thiserror::Error)]
enum KeyObjectError {
    /// A PKCS#11 call failed (`C_GetAttributeValue returned CKR_...`).
    #[error("{0}")]
    Call(String),
    /// An attribute the key needs is absent or unusable.
    #[error("{0}")]
    Missing(&'static str),
    /// An RSA key outside the sizes meshca signs with.
    #[error("an RSA key of {0} bits; meshca signs with RSA 2048 to 8192")]
    RsaSize(usize),
    /// A key type meshca does not sign with.
    #[error("a {0} key; meshca signs with ECDSA P-256/P-384 or RSA")]
    KeyKind(String),
    /// Not exactly one public key object beside the private one.
    #[error("{0} public key objects match the key's label/ID (need exactly one, to read the EC point)")]
    PublicObjects(usize),
    /// The public key would not encode.
    #[error("{0}")]
    Der(der::Error),
}

/// A failed `C_Sign`, typed for the core.
fn sign_error(e: &CkError) -> SignError {
    match e {
        CkError::Pkcs11(rv, f) => SignError::Refused { call: f.to_string(), code: rv_name(*rv) },
        other => SignError::Unavailable(other.to_string()),
    }
}

/// Reads the public half (the public key object with the same label/ID; for RSA the private
/// object's public attributes do) as the core wants it.
fn read_public(session: &Session, uri: &KeyUri, private: ObjectHandle) -> Result<(KeyType, Vec<u8>), KeyObjectError> {
    let attr = |h: ObjectHandle, t: AttributeType| -> Result<Option<Attribute>, KeyObjectError> {
        Ok(session.get_attributes(h, &[t]).map_err(|e| KeyObjectError::Call(ck(&e)))?.into_iter().next())
    };
    let kind = match attr(private, AttributeType::KeyType)? {
        Some(Attribute::KeyType(k)) => k,
        _ => return Err(KeyObjectError::Missing("the key object has no CKA_KEY_TYPE")),
    };
    if kind == CkKeyType::RSA {
        let (Some(Attribute::Modulus(n)), Some(Attribute::PublicExponent(e))) =
            (attr(private, AttributeType::Modulus)?, attr(private, AttributeType::PublicExponent)?)
        else {
            return Err(KeyObjectError::Missing("the RSA key object does not show its modulus and public exponent"));
        };
        let bits = meshca_bits(&n);
        if !(2048..=8192).contains(&bits) {
            return Err(KeyObjectError::RsaSize(bits));
        }
        return Ok((KeyType::Rsa { bits }, rsa_public_key_der(&n, &e)?));
    }
    if kind != CkKeyType::EC {
        return Err(KeyObjectError::KeyKind(kind.to_string()));
    }
    let publics =
        session.find_objects(&uri.key_template(ObjectClass::PUBLIC_KEY)).map_err(|e| KeyObjectError::Call(ck(&e)))?;
    let [public] = publics.as_slice() else {
        return Err(KeyObjectError::PublicObjects(publics.len()));
    };
    let params = match attr(*public, AttributeType::EcParams)? {
        Some(Attribute::EcParams(p)) => p,
        _ => return Err(KeyObjectError::Missing("the public key has no CKA_EC_PARAMS")),
    };
    let key_type = match params.as_slice() {
        OID_P256_DER => KeyType::EcdsaP256,
        OID_P384_DER => KeyType::EcdsaP384,
        _ => return Err(KeyObjectError::Missing("an EC key on a curve other than P-256 or P-384")),
    };
    let point = match attr(*public, AttributeType::EcPoint)? {
        Some(Attribute::EcPoint(p)) => p,
        _ => return Err(KeyObjectError::Missing("the public key has no CKA_EC_POINT")),
    };
    let size = if key_type == KeyType::EcdsaP256 { 65 } else { 97 };
    // PKCS#11 says DER OCTET STRING; some tokens return the bare point.
    let raw = if point.len() == size { point } else { unwrap_octet_string(&point, size)? };
    if raw.first() != Some(&0x04) {
        return Err(KeyObjectError::Missing("CKA_EC_POINT is not an uncompressed point"));
    }
    Ok((key_type, raw))
}

fn unwrap_octet_string(der: &[u8], size: usize) -> Result<Vec<u8>, KeyObjectError> {
    match der {
        [0x04, len, rest @ ..] if usize::from(*len) == size && rest.len() == size => Ok(rest.to_vec()),
        _ => Err(KeyObjectError::Missing("CKA_EC_POINT is neither an EC point nor a DER OCTET STRING holding one")),
    }
}

fn meshca_bits(be: &[u8]) -> usize {
    match be.iter().position(|&b| b != 0) {
        Some(i) => (be.len() - i) * 8 - be[i].leading_zeros() as usize,
        None => 0,
    }
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Result<Vec<u8>, KeyObjectError> {
    use der::Encode;
    #[derive(der::Sequence)]
    struct RsaPublicKey<'a> {
        n: der::asn1::UintRef<'a>,
        e: der::asn1::UintRef<'a>,
    }
    let key = RsaPublicKey {
        n: der::asn1::UintRef::new(n).map_err(KeyObjectError::Der)?,
        e: der::asn1::UintRef::new(e).map_err(KeyObjectError::Der)?,
    };
    key.to_der().map_err(KeyObjectError::Der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_and_print_canonically() {
        let u = KeyUri::parse("pkcs11:token=meshca;object=root%20ca;id=%01%ff?module-path=/usr/lib/x.so").unwrap();
        assert_eq!(u.token.as_deref(), Some("meshca"));
        assert_eq!(u.object.as_deref(), Some("root ca"));
        assert_eq!(u.id.as_deref(), Some(&[1u8, 0xff][..]));
        assert_eq!(u.module_path.as_deref(), Some(Path::new("/usr/lib/x.so")));
        assert_eq!(u.to_string(), "pkcs11:token=meshca;object=root%20ca;id=%01%FF?module-path=/usr/lib/x.so");
        assert_eq!(KeyUri::parse(&u.to_string()).unwrap(), u);
        // Whatever parses prints in a form that parses back to the same value: a '/' or '%'
        // in a label, a '&' in the module's path, raw id bytes.
        for text in ["pkcs11:object=a%2Fb%25c;token=x&y", "pkcs11:id=abc?module-path=/opt/a%26b/m.so"] {
            let u = KeyUri::parse(text).unwrap();
            assert_eq!(KeyUri::parse(&u.to_string()).unwrap(), u, "{text} -> {u}");
        }
    }

    #[test]
    fn uris_that_cannot_be_honoured_are_refused() {
        for (uri, needle) in [
            ("token=a;object=b", "starts with `pkcs11:`"),
            ("pkcs11:token=a", "names no key"),
            ("pkcs11:object=a;object=b", "appears twice"),
            ("pkcs11:object=a;colour=red", "unknown path attribute `colour`"),
            ("pkcs11:object=a;type=cert", "must be `private`"),
            ("pkcs11:object=a%zz", "bad %-escape"),
            ("pkcs11:object=a;slot-id=x", "slot number"),
        ] {
            let e = KeyUri::parse(uri).unwrap_err().to_string();
            assert!(e.contains(needle), "{uri}: {e}");
        }
        let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n";
        let e = KeyUri::parse(key).unwrap_err().to_string();
        assert!(!e.contains("MIGHAgEA") && e.contains("not shown"), "{e}");
        let e = KeyUri::parse("pkcs11:object=a?pin-value=123456").unwrap_err().to_string();
        assert!(e.contains("does not take a PIN") && !e.contains("123456"), "{e}");
        let e = KeyUri::parse("pkcs11:object=a/b").unwrap_err().to_string();
        assert!(e.contains("`/`, which its path may not hold"), "{e}");
        assert!(KeyUri::parse("pkcs11:object=a;x-vendor=1").is_ok());
    }

    #[test]
    fn a_key_uri_is_one_line_of_rfc7512_and_a_refused_one_is_never_echoed() {
        let body = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg";
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
        let encoded: String = pem.bytes().map(|b| format!("%{b:02X}")).collect();
        for uri in [
            // A key after `pkcs11:`, as a line, as an attribute value, %-encoded, as a name.
            format!("pkcs11:{pem}"),
            format!("pkcs11:object={pem}"),
            format!("pkcs11:token=t\n{body}"),
            format!("pkcs11:object={encoded}"),
            format!("pkcs11:object=a;{body}=1"),
            format!("pkcs11:object={body}{body}{body}"),
            format!("pkcs11:object=a;id={encoded}"),
            format!("pkcs11:object=a?module-path={encoded}"),
            format!("pkcs11:object=a;x-v=1 {body}"),
            format!("pkcs11:object=a;{}", "x".repeat(2000)),
        ] {
            let e = KeyUri::parse(&uri).unwrap_err();
            let shown = format!("{e} {e:?}");
            for piece in [body, &body[..12], "BEGIN", "%2D%2D", "xxxxxxxx"] {
                assert!(!shown.contains(piece), "{piece} echoed for {uri:?}: {shown}");
            }
            assert!(shown.contains("key URI (not shown)"), "{shown}");
        }
        // What the grammar allows still parses.
        let u =
            KeyUri::parse("pkcs11:token=My%20Token;object=ca-2026;id=%01%02;type=private?module-path=/usr/lib/x.so")
                .unwrap();
        assert_eq!(u.token.as_deref(), Some("My Token"));
    }

    #[test]
    #[cfg(unix)]
    fn a_pin_file_that_is_not_a_regular_file_is_refused_at_once() {
        let dir = std::env::temp_dir().join(format!("meshca-pin-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("pin");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        // Nobody writes to the FIFO: a blocking open would hang here for ever.
        let e = Pin::from_file(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file (it is a FIFO)"), "{e}");
        let e = Pin::from_file(&dir).unwrap_err().to_string();
        assert!(e.contains("not a regular file (it is a directory)"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pins_never_print_and_are_one_line() {
        let p = Pin::new("1234\n").unwrap();
        assert_eq!(format!("{p:?}"), "Pin(..)");
        assert_eq!(p.0.as_str(), "1234");
        assert!(Pin::new("").is_err());
        let e = Pin::new("12\n34").unwrap_err().to_string();
        assert!(!e.contains("12"), "{e}");
        let dir = std::env::temp_dir().join(format!("meshca-pin-{}", std::process::id()));
        std::fs::write(&dir, vec![b'1'; 5000]).unwrap();
        let e = Pin::from_file(&dir).unwrap_err().to_string();
        assert!(e.contains("over 1 KiB"), "{e}");
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn rv_names_are_the_ckr_constants() {
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(rv_name(RvError::TokenNotPresent), "CKR_TOKEN_NOT_PRESENT");
    }

    #[test]
    fn rsa_public_keys_encode_as_pkcs1() {
        let der = rsa_public_key_der(&[0x80, 0, 0, 1], &[1, 0, 1]).unwrap();
        assert_eq!(der, [0x30, 12, 0x02, 5, 0, 0x80, 0, 0, 1, 0x02, 3, 1, 0, 1]);
        assert_eq!(meshca_bits(&[0, 0x80, 0]), 16);
    }
}
