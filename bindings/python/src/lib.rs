//! Python bindings: conversions, the clock and exceptions. Every PKI decision is the core's.

// Methods mirror Python keyword-argument signatures, which are long by design.
#![allow(clippy::too_many_arguments)]

use std::path::PathBuf;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use time::{Duration, OffsetDateTime};

use meshca::{
    Cacerts, Csr, Files, IntermediateParams, KeyAlgorithm, Layout, Leaf, LeafParams, PrivateKey, RootParams,
    RotationPolicy, SigningCa, SpiffeId,
};

create_exception!(meshca, MeshcaError, PyException, "Base class of every error meshca raises for bad input.");
create_exception!(
    meshca,
    BundleInvalidError,
    MeshcaError,
    "A CA bundle failed validation (the message names the file and the fix)."
);
create_exception!(
    meshca,
    KeyUnsupportedError,
    MeshcaError,
    "A private key is encrypted, of an unsupported type or size, or malformed."
);
create_exception!(
    meshca,
    CsrInvalidError,
    MeshcaError,
    "A certificate signing request is malformed or its signature fails."
);
create_exception!(meshca, PolicyInvalidError, MeshcaError, "A rotation policy value is out of range.");
create_exception!(
    meshca,
    InvalidParameterError,
    MeshcaError,
    "A parameter (cluster name, SPIFFE ID, lifetime, layout...) is invalid."
);
create_exception!(
    meshca,
    IssuanceError,
    MeshcaError,
    "The signing CA cannot issue what was asked (expired, pathlen, ...)."
);
create_exception!(meshca, TrustError, MeshcaError, "Bundles do not share a root, or a workload chain does not verify.");
create_exception!(meshca, FileError, MeshcaError, "A file or directory could not be read or written.");
create_exception!(
    meshca,
    Pkcs11Error,
    MeshcaError,
    "A PKCS#11 module, token, PIN or key failed, or is not what the URI names (the message never shows the PIN)."
);

create_exception!(
    meshca,
    ProviderError,
    MeshcaError,
    "The PKI that signs (OpenBao/Vault) failed, refused, or answered with a certificate meshca refuses (the message never shows the token)."
);

/// The one mapping from core errors to Python exceptions; messages are kept intact.
/// A core error on its way to Python.
struct CoreError(meshca::Error);

/// An edge (meshca-ops) error on its way to Python.
struct OpsError(meshca_ops::Error);

impl From<CoreError> for PyErr {
    fn from(CoreError(e): CoreError) -> PyErr {
        use meshca::Error as E;
        let msg = e.to_string();
        match e {
            E::WeakRsaKey { holder: meshca::KeyHolder::PrivateKey | meshca::KeyHolder::Csr, .. }
            | E::EncryptedKey { .. }
            | E::Ed25519Key { .. }
            | E::UnknownCurve { .. }
            | E::UnsupportedKeyAlgorithm { .. }
            | E::KeyParse { .. }
            | E::UnknownKeyAlgorithmName { .. } => KeyUnsupportedError::new_err(msg),
            E::Csr { .. } => CsrInvalidError::new_err(msg),
            E::InvalidSpiffeId { .. } | E::InvalidParameter { .. } => InvalidParameterError::new_err(msg),
            E::SignerCannotIssueCa { .. }
            | E::SignerNotValid { .. }
            | E::IssuerNameNotRepresentable { .. }
            | E::Issuance { .. } => IssuanceError::new_err(msg),
            E::RootMismatch { .. } | E::LeafUntrusted { .. } | E::LeafProfile { .. } => TrustError::new_err(msg),
            E::ExternalKey { .. } => Pkcs11Error::new_err(msg),
            _ => BundleInvalidError::new_err(msg),
        }
    }
}

impl From<OpsError> for PyErr {
    fn from(OpsError(e): OpsError) -> PyErr {
        match e {
            e @ (meshca_ops::Error::Provider { .. }
            | meshca_ops::Error::Core { source: meshca::Error::ProviderCertificate { .. }, .. }) => {
                ProviderError::new_err(e.to_string())
            }
            meshca_ops::Error::Core { context, source } => {
                let py = PyErr::from(CoreError(source));
                Python::attach(|py_| {
                    let msg = format!("{context}: {}", py.value(py_));
                    PyErr::from_type(py.get_type(py_), msg)
                })
            }
            meshca_ops::Error::Io(io) => FileError::new_err(io.to_string()),
            e @ meshca_ops::Error::Pkcs11 { .. } => Pkcs11Error::new_err(e.to_string()),
            other => MeshcaError::new_err(other.to_string()),
        }
    }
}

fn core_err(e: meshca::Error) -> PyErr {
    CoreError(e).into()
}

fn cli_err(e: meshca_ops::Error) -> PyErr {
    OpsError(e).into()
}

/// What opens a token key from Python: the PIN from `pin_file`, else `$MESHCA_PKCS11_PIN` (never
/// a string argument: it would sit in scripts and tracebacks).
fn token_access(uri: &str, module: PathBuf, pin_file: Option<PathBuf>) -> PyResult<meshca_ops::pkcs11::KeyAccess> {
    use meshca_ops::pkcs11::{KeyAccess, KeyUri, Pin, PIN_ENV};
    let uri = KeyUri::parse(uri).map_err(cli_err)?;
    let pin = match pin_file {
        Some(f) => Pin::from_file(&f).map_err(cli_err)?,
        None => match std::env::var(PIN_ENV) {
            Ok(v) => Pin::new(&v).map_err(cli_err)?,
            Err(_) => {
                return Err(Pkcs11Error::new_err(format!(
                    "{uri}: the token needs its user PIN: pass pin_file, or set ${PIN_ENV}"
                )))
            }
        },
    };
    Ok(KeyAccess { module, uri, pin })
}

/// A root's parameters from the keyword arguments both root constructors take.
fn root_params(
    common_name: &str,
    organization: &str,
    ttl_days: i64,
    key: &str,
    pathlen: Option<u8>,
) -> PyResult<RootParams> {
    let mut p = RootParams::default();
    p.common_name = common_name.to_owned();
    p.organization = organization.to_owned();
    p.ttl = days(ttl_days, "ttl_days")?;
    p.key = key_alg(key)?;
    p.pathlen = pathlen;
    Ok(p)
}

// ---- the clock ----------------------------------------------------------------------------

/// `now` from Python: `None` reads the clock (the only place meshca does); a datetime must be
/// timezone-aware.
fn now_from(now: Option<&Bound<'_, PyAny>>) -> PyResult<OffsetDateTime> {
    let Some(dt) = now else { return Ok(OffsetDateTime::now_utc()) };
    if dt.getattr("tzinfo")?.is_none() || dt.call_method0("utcoffset")?.is_none() {
        return Err(InvalidParameterError::new_err(
            "now must be a timezone-aware datetime, e.g. datetime.now(timezone.utc)",
        ));
    }
    let ts: f64 = dt.call_method0("timestamp")?.extract()?;
    OffsetDateTime::from_unix_timestamp_nanos((ts * 1e9).round() as i128)
        .map_err(|e| InvalidParameterError::new_err(format!("now is out of range: {e}")))
}

fn to_datetime<'py>(py: Python<'py>, t: OffsetDateTime) -> PyResult<Bound<'py, PyAny>> {
    let dt = py.import("datetime")?;
    let utc = dt.getattr("timezone")?.getattr("utc")?;
    dt.getattr("datetime")?.call_method1("fromtimestamp", (t.unix_timestamp(), utc))
}

// ---- conversions --------------------------------------------------------------------------

fn key_alg(name: &str) -> PyResult<KeyAlgorithm> {
    name.parse::<KeyAlgorithm>().map_err(core_err)
}

fn layout(name: &str) -> PyResult<Layout> {
    name.parse::<Layout>().map_err(core_err)
}

fn days(n: i64, field: &str) -> PyResult<Duration> {
    meshca::bounds::ca_ttl_days(n).map_err(|e| InvalidParameterError::new_err(format!("{field} {e}")))
}

/// An integer argument in `lo..=hi`; anything else (a huge int, a float, a string) raises
/// `InvalidParameterError` naming the field and the range, never `OverflowError`.
fn int_in(v: &Bound<'_, PyAny>, field: &str, lo: i64, hi: i64) -> PyResult<i64> {
    let out_of_range = || {
        let shown: String = v.str().map(|s| s.to_string()).unwrap_or_default().chars().take(40).collect();
        InvalidParameterError::new_err(format!("{field} must be an integer from {lo} to {hi}, got {shown}"))
    };
    if v.is_instance_of::<pyo3::types::PyBool>() || !v.is_instance_of::<pyo3::types::PyInt>() {
        return Err(out_of_range());
    }
    v.extract::<i64>().ok().filter(|n| (lo..=hi).contains(n)).ok_or_else(out_of_range)
}

fn ttl_days_arg(v: &Bound<'_, PyAny>) -> PyResult<i64> {
    let (lo, hi) = meshca::bounds::CA_TTL_DAYS;
    int_in(v, "ttl_days", lo, hi)
}

/// A policy's `ttl_days`: out of range is a policy error, as the policy's other bounds are.
fn policy_ttl_days_arg(v: &Bound<'_, PyAny>) -> PyResult<i64> {
    ttl_days_arg(v).map_err(|e| Python::attach(|py| PolicyInvalidError::new_err(e.value(py).to_string())))
}

fn ttl_hours_arg(v: &Bound<'_, PyAny>) -> PyResult<i64> {
    int_in(v, "ttl_hours", 1, meshca::MAX_LEAF_TTL.whole_hours())
}

fn pathlen_arg(v: &Bound<'_, PyAny>) -> PyResult<u8> {
    int_in(v, "pathlen", 0, 255).map(|n| n as u8)
}

fn opt_pathlen_arg(v: &Bound<'_, PyAny>) -> PyResult<Option<u8>> {
    if v.is_none() {
        return Ok(None);
    }
    pathlen_arg(v).map(Some)
}

fn files_from(dict: &Bound<'_, PyDict>) -> PyResult<Files> {
    let mut files = Files::new();
    for (k, v) in dict.iter() {
        let name: String = k.extract()?;
        let data: Vec<u8> =
            if let Ok(s) = v.cast::<PyString>() { s.extract::<String>()?.into_bytes() } else { v.extract()? };
        files.insert(name, data);
    }
    Ok(files)
}

fn files_to<'py>(py: Python<'py>, files: &Files) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in files.iter() {
        d.set_item(k, PyBytes::new(py, v))?;
    }
    Ok(d)
}

fn pem_of(certs: &[meshca::Certificate]) -> Vec<u8> {
    certs.iter().map(meshca::Certificate::to_pem).collect::<String>().into_bytes()
}

fn load_verify(ctx: &Bound<'_, PyAny>, roots: &[meshca::Certificate]) -> PyResult<()> {
    let pem = String::from_utf8(pem_of(roots)).unwrap_or_default();
    let kwargs = PyDict::new(ctx.py());
    kwargs.set_item("cadata", pem)?;
    ctx.call_method("load_verify_locations", (), Some(&kwargs))?;
    Ok(())
}

// ---- Cacerts ------------------------------------------------------------------------------

/// A validated Istio CA bundle (`cacerts`). Reading is validating: an instance is known-good.
#[pyclass(module = "meshca", name = "Cacerts", frozen)]
#[derive(Clone)]
struct PyCacerts {
    inner: Cacerts,
}

#[pymethods]
impl PyCacerts {
    /// Reads and validates a bundle directory (either layout).
    #[staticmethod]
    #[pyo3(signature = (path, now = None))]
    fn from_dir(path: PathBuf, now: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let now = now_from(now)?;
        let files = meshca_ops::fs::read_files(&path).map_err(|e| cli_err(e.into()))?;
        let inner = Cacerts::from_files(&files, now)
            .map_err(|e| cli_err(meshca_ops::Error::Core { context: path.display().to_string(), source: e }))?;
        Ok(PyCacerts { inner })
    }

    /// Validates a bundle given as `{file name: bytes}` (either layout).
    #[staticmethod]
    #[pyo3(signature = (files, now = None))]
    fn from_files(files: &Bound<'_, PyDict>, now: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let now = now_from(now)?;
        Ok(PyCacerts { inner: Cacerts::from_files(&files_from(files)?, now).map_err(core_err)? })
    }

    /// The same intermediate and key with `root-cert.pem` replaced by `root_cert_pem` (one or
    /// more roots; the bundle's chain must reach one of them), validated like any bundle.
    #[pyo3(signature = (root_cert_pem, now = None))]
    fn with_trust_bundle(&self, root_cert_pem: &[u8], now: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let now = now_from(now)?;
        let roots = meshca::parse_roots(root_cert_pem, "root_cert_pem", now).map_err(core_err)?;
        Ok(PyCacerts { inner: meshca::with_trust_bundle(&self.inner, roots, now).map_err(core_err)? })
    }

    /// The bundle's files in the Istio layout: `{"ca-cert.pem": b"...", ...}`.
    #[getter]
    fn files<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        files_to(py, &self.inner.to_files(Layout::Istio))
    }

    /// The bundle's files in `layout` ("istio" or "tls").
    #[pyo3(signature = (layout = "istio"))]
    fn to_files<'py>(&self, py: Python<'py>, layout: &str) -> PyResult<Bound<'py, PyDict>> {
        files_to(py, &self.inner.to_files(self::layout(layout)?))
    }

    /// Writes the bundle into `dir`: each file atomically, the key 0600. Returns the paths.
    /// Refuses to replace a different bundle already there unless `overwrite` is true.
    #[pyo3(signature = (dir, layout = "istio", overwrite = false))]
    fn write(&self, dir: PathBuf, layout: &str, overwrite: bool) -> PyResult<Vec<String>> {
        let files = self.inner.to_files(self::layout(layout)?);
        if !overwrite {
            let names = [Layout::Istio.files(), Layout::Tls.files()].concat();
            let existing = names.iter().filter(|n| dir.join(n).exists()).collect::<Vec<_>>();
            let same = existing.iter().all(|n| {
                files.get(n).is_some_and(|want| meshca_ops::fs::read_input(&dir.join(n)).is_ok_and(|have| have == want))
            });
            if !existing.is_empty() && !same {
                return Err(FileError::new_err(format!(
                    "{}: already holds a different bundle; meshca does not overwrite CA material unless you pass \
                     overwrite=True",
                    dir.display()
                )));
            }
        }
        let written = meshca_ops::fs::write_files(&dir, &files).map_err(|e| cli_err(e.into()))?;
        Ok(written.into_iter().map(|p| p.display().to_string()).collect())
    }

    /// A Kubernetes Secret manifest for `kubectl apply -f -`.
    #[pyo3(signature = (name = "cacerts", namespace = "istio-system", layout = "istio"))]
    fn secret_manifest(&self, name: &str, namespace: &str, layout: &str) -> PyResult<String> {
        Ok(meshca_ops::manifest::secret_manifest(&self.inner, name, namespace, self::layout(layout)?))
    }

    /// The earliest notAfter on the chain (tz-aware UTC datetime).
    #[getter]
    fn not_after<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_datetime(py, self.inner.not_after())
    }

    /// The signing CA's notBefore.
    #[getter]
    fn not_before<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_datetime(py, self.inner.ca_cert().not_before())
    }

    /// SHA-256 fingerprint of the root the chain reaches (hex with colons).
    #[getter]
    fn root_fingerprint(&self) -> String {
        self.inner.root_fingerprint()
    }

    /// Subject of the signing CA (RFC 4514).
    #[getter]
    fn subject(&self) -> String {
        self.inner.ca_cert().subject()
    }

    /// The cluster name in the subject's L attribute, if any.
    #[getter]
    fn cluster(&self) -> Option<String> {
        self.inner.ca_cert().locality()
    }

    /// The signing key's type, e.g. "ECDSA P-256".
    #[getter]
    fn key_type(&self) -> String {
        self.inner.ca_key().key_type().to_string()
    }

    /// `ca-cert.pem`.
    #[getter]
    fn ca_cert_pem<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.ca_cert().to_pem().as_bytes())
    }

    /// `cert-chain.pem` (ca-cert up to and including the root).
    #[getter]
    fn cert_chain_pem<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &pem_of(self.inner.path()))
    }

    /// `root-cert.pem` (every trusted root).
    #[getter]
    fn root_cert_pem<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &pem_of(self.inner.roots()))
    }

    /// Non-fatal findings.
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.inner.warnings().iter().map(ToString::to_string).collect()
    }

    /// Makes `ssl_context` trust this bundle's roots (trustme style).
    fn configure_trust(&self, ssl_context: &Bound<'_, PyAny>) -> PyResult<()> {
        load_verify(ssl_context, self.inner.roots())
    }

    /// Verifies a workload chain (PEM, leaf first) against this bundle's roots with
    /// rustls-webpki; returns its SPIFFE ID.
    #[pyo3(signature = (cert_chain_pem, now = None))]
    fn verify_workload(&self, cert_chain_pem: &[u8], now: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
        let now = now_from(now)?;
        let chain = meshca::parse_certificates(cert_chain_pem, "cert_chain_pem").map_err(core_err)?;
        Ok(meshca::verify_workload_chain(&chain, self.inner.roots(), now).map_err(core_err)?.to_string())
    }

    /// Checks a `ca-crl.pem` against this bundle as Envoy applies it: a current CRL signed by
    /// each CA of the bundle's chain, and none of them revoked. Raises otherwise.
    #[pyo3(signature = (crl_pem, now = None))]
    fn check_crl_set(&self, crl_pem: &[u8], now: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let crls = meshca::Crl::from_pem_all(crl_pem, "ca-crl.pem").map_err(core_err)?;
        meshca::check_crl_set(&crls, self.inner.path(), now_from(now)?, "ca-crl.pem").map_err(core_err)
    }

    fn __repr__(&self) -> String {
        format!(
            "<Cacerts {} ({}) until {}, root {}>",
            self.inner.ca_cert().subject(),
            self.inner.ca_key().key_type(),
            meshca::format_time(self.inner.not_after()),
            &self.inner.root_fingerprint()[..23]
        )
    }
}

// ---- Leaf ---------------------------------------------------------------------------------

/// A workload certificate with its key, chain and trust bundle.
/// A CA chain verified up to a trusted root without its key: a peer cluster's cert-chain.pem
/// and root-cert.pem, Istio's istio-ca-root-cert ConfigMap, a sidecar's ROOTCA.
#[pyclass(module = "meshca", name = "TrustChain", frozen)]
struct PyTrustChain {
    inner: meshca::TrustChain,
}

#[pymethods]
impl PyTrustChain {
    /// Verifies `cert_chain_pem` (lowest CA first; the root optional) against `root_cert_pem`
    /// at `now` by every rule a cacerts bundle is held to, except the key.
    #[staticmethod]
    #[pyo3(signature = (cert_chain_pem, root_cert_pem, now = None))]
    fn from_pems(cert_chain_pem: &[u8], root_cert_pem: &[u8], now: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let inner = meshca::TrustChain::from_pems(cert_chain_pem, root_cert_pem, now_from(now)?).map_err(core_err)?;
        Ok(PyTrustChain { inner })
    }

    /// Subject of the chain's first certificate (RFC 4514).
    #[getter]
    fn subject(&self) -> String {
        self.inner.first().subject()
    }

    /// The earliest notAfter on the chain (tz-aware UTC datetime).
    #[getter]
    fn not_after<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_datetime(py, self.inner.not_after())
    }

    /// SHA-256 fingerprint of the root the chain reaches (hex with colons).
    #[getter]
    fn root_fingerprint(&self) -> String {
        self.inner.root_fingerprint()
    }

    /// Non-fatal findings (RFC 5280 profile deviations verifiers accept).
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.inner.warnings().iter().map(ToString::to_string).collect()
    }

    fn __repr__(&self) -> String {
        format!("<TrustChain {} -> root {}>", self.inner.first().subject(), self.inner.root().subject())
    }
}

#[pyclass(module = "meshca", name = "Leaf", frozen)]
struct PyLeaf {
    inner: Leaf,
}

#[pymethods]
impl PyLeaf {
    /// The leaf, then its CA chain up to the root (PEM).
    #[getter]
    fn cert_chain_pem<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.cert_chain_pem().as_bytes())
    }

    /// The leaf certificate alone (PEM).
    #[getter]
    fn cert_pem<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.cert().to_pem().as_bytes())
    }

    /// The private key (PKCS#8 PEM).
    #[getter]
    fn private_key_pem<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.key_pem().as_bytes())
    }

    /// The issuing cluster's `root-cert.pem`.
    #[getter]
    fn root_cert_pem<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.root_cert_pem().as_bytes())
    }

    /// The SPIFFE ID (URI SAN).
    #[getter]
    fn spiffe_id(&self) -> String {
        self.inner.cert().uri_sans().into_iter().next().unwrap_or_default()
    }

    /// notAfter.
    #[getter]
    fn not_after<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_datetime(py, self.inner.cert().not_after())
    }

    /// Loads this certificate and key into `ssl_context` (trustme style). The key passes through
    /// a private temporary directory (0700, file 0600) that is removed at once.
    fn configure_cert(&self, ssl_context: &Bound<'_, PyAny>) -> PyResult<()> {
        let dir = std::env::temp_dir().join(format!(
            "meshca-{}-{}",
            std::process::id(),
            OffsetDateTime::now_utc().unix_timestamp_nanos()
        ));
        let mut files = Files::new();
        files.insert("cert-chain.pem", self.inner.cert_chain_pem().into_bytes());
        files.insert("key.pem", self.inner.key_pem().as_bytes().to_vec());
        let result = meshca_ops::fs::write_files(&dir, &files).map_err(|e| cli_err(e.into())).and_then(|_| {
            let kwargs = PyDict::new(ssl_context.py());
            kwargs.set_item("certfile", dir.join("cert-chain.pem"))?;
            kwargs.set_item("keyfile", dir.join("key.pem"))?;
            ssl_context.call_method("load_cert_chain", (), Some(&kwargs)).map(|_| ())
        });
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// Makes `ssl_context` trust the issuing cluster's roots.
    fn configure_trust(&self, ssl_context: &Bound<'_, PyAny>) -> PyResult<()> {
        load_verify(ssl_context, self.inner.roots())
    }

    /// Writes cert-chain.pem, key.pem (0600) and root-cert.pem into `dir`.
    fn write(&self, dir: PathBuf) -> PyResult<Vec<String>> {
        let written = meshca_ops::fs::write_files(&dir, &self.inner.to_files()).map_err(|e| cli_err(e.into()))?;
        Ok(written.into_iter().map(|p| p.display().to_string()).collect())
    }

    fn __repr__(&self) -> String {
        format!("<Leaf {} until {}>", self.spiffe_id(), meshca::format_time(self.inner.cert().not_after()))
    }
}

// ---- SigningCa ----------------------------------------------------------------------------

/// A CA that signs: a root, or an intermediate whose root lives elsewhere.
#[pyclass(module = "meshca", name = "SigningCa", frozen)]
struct PySigningCa {
    inner: SigningCa,
    /// The PKI that signs this CA's intermediates (`from_vault`): issuance goes through it.
    remote: Option<std::sync::Arc<meshca_ops::vault::Vault>>,
}

impl PySigningCa {
    fn local(inner: SigningCa) -> Self {
        PySigningCa { inner, remote: None }
    }
}

#[pymethods]
impl PySigningCa {
    /// Generates a self-signed root (Istio's tools/certs profile).
    #[staticmethod]
    #[pyo3(signature = (common_name = "Root CA", organization = "Istio", ttl_days = 3650, key = "ecdsa-p256", pathlen = None, now = None))]
    fn generate_root(
        common_name: &str,
        organization: &str,
        #[pyo3(from_py_with = ttl_days_arg)] ttl_days: i64,
        key: &str,
        #[pyo3(from_py_with = opt_pathlen_arg)] pathlen: Option<u8>,
        now: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let now = now_from(now)?;
        let p = root_params(common_name, organization, ttl_days, key, pathlen)?;
        Ok(PySigningCa::local(SigningCa::generate_root(&p, &mut meshca::OsRng, now).map_err(core_err)?))
    }

    /// Reads a signing CA from a bundle directory.
    #[staticmethod]
    #[pyo3(signature = (path, now = None))]
    fn from_dir(path: PathBuf, now: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        Ok(PySigningCa::local(SigningCa::new(PyCacerts::from_dir(path, now)?.inner)))
    }

    /// Reads a signing CA from `{file name: bytes}`.
    #[staticmethod]
    #[pyo3(signature = (files, now = None))]
    fn from_files(files: &Bound<'_, PyDict>, now: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        Ok(PySigningCa::local(SigningCa::new(PyCacerts::from_files(files, now)?.inner)))
    }

    /// Generates a root whose key is made inside a PKCS#11 token (not extractable, it never
    /// leaves): `uri` names the key (`pkcs11:token=meshca;object=root-ca`), `module` the token's
    /// shared library. The PIN comes from `pin_file`, else `$MESHCA_PKCS11_PIN`. The signer's
    /// files hold no key.
    #[staticmethod]
    #[pyo3(signature = (uri, module, pin_file = None, common_name = "Root CA", organization = "Istio", ttl_days = 3650, key = "ecdsa-p256", pathlen = None, now = None))]
    #[allow(clippy::too_many_arguments)]
    fn generate_root_in_token(
        uri: &str,
        module: PathBuf,
        pin_file: Option<PathBuf>,
        common_name: &str,
        organization: &str,
        #[pyo3(from_py_with = ttl_days_arg)] ttl_days: i64,
        key: &str,
        #[pyo3(from_py_with = opt_pathlen_arg)] pathlen: Option<u8>,
        now: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let now = now_from(now)?;
        let p = root_params(common_name, organization, ttl_days, key, pathlen)?;
        // Checked before the key is made, so a refused name leaves no key object behind.
        meshca::validate_subject_attr("common_name", &p.common_name).map_err(core_err)?;
        meshca::validate_subject_attr("organization", &p.organization).map_err(core_err)?;
        let access = token_access(uri, module, pin_file)?;
        let token_key = meshca_ops::pkcs11::TokenKey::generate(&access, p.key).map_err(cli_err)?;
        Ok(PySigningCa::local(
            SigningCa::generate_root_with_key(&p, token_key, &mut meshca::OsRng, now).map_err(core_err)?,
        ))
    }

    /// A signer whose key is in a PKCS#11 token: the public files (`ca-cert.pem`,
    /// `cert-chain.pem`, `root-cert.pem`) from the directory `path`, the key `uri` through
    /// `module`, the PIN from `pin_file`, else `$MESHCA_PKCS11_PIN`. Signs exactly as a signer
    /// with its key in a file does.
    #[staticmethod]
    #[pyo3(signature = (path, uri, module, pin_file = None, now = None))]
    fn from_pkcs11(
        path: PathBuf,
        uri: &str,
        module: PathBuf,
        pin_file: Option<PathBuf>,
        now: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let now = now_from(now)?;
        let files = meshca_ops::fs::read_files(&path).map_err(|e| cli_err(e.into()))?;
        let access = token_access(uri, module, pin_file)?;
        let token_key = meshca_ops::pkcs11::TokenKey::open(&access).map_err(cli_err)?;
        let inner = SigningCa::from_public_files(&files, token_key, now)
            .map_err(|e| cli_err(meshca_ops::Error::Core { context: path.display().to_string(), source: e }))?;
        Ok(PySigningCa::local(inner))
    }

    /// A signer whose key stays in an OpenBao/Vault PKI: `issue_intermediate` makes the key and a
    /// CSR here, has the PKI sign it (`sign-intermediate`), and checks the certificate against
    /// meshca's profile. The token comes from `token_file`, else `$VAULT_TOKEN`, else
    /// `$BAO_TOKEN` (never a string argument). `ca_cert_file`: the PEM CA of the server's TLS.
    #[staticmethod]
    #[pyo3(signature = (address, mount = "pki", issuer = "default", token_file = None, ca_cert_file = None, now = None))]
    fn from_vault(
        address: &str,
        mount: &str,
        issuer: &str,
        token_file: Option<PathBuf>,
        ca_cert_file: Option<PathBuf>,
        now: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        use meshca_ops::vault::{Connect, Login, Vault, VaultToken, CALL_TIMEOUT};
        let now = now_from(now)?;
        let address = meshca_ops::policy::vault_address(address).ok_or_else(|| {
            InvalidParameterError::new_err(
                "address must be an https:// URL without credentials, query or fragment (http:// only to a loopback \
                 address)",
            )
        })?;
        if !meshca_ops::policy::vault_path(mount) || !meshca_ops::policy::vault_path(issuer) || issuer.contains('/') {
            return Err(InvalidParameterError::new_err("mount and issuer are paths of letters, digits, '-', '_', '.'"));
        }
        let token = match token_file {
            Some(f) => {
                let bytes = meshca_ops::fs::read_input(&f).map_err(|e| cli_err(e.into()))?;
                VaultToken::from_bytes(&bytes, &f.display().to_string()).map_err(cli_err)?
            }
            None => {
                let var = ["VAULT_TOKEN", "BAO_TOKEN"].into_iter().find_map(|v| std::env::var_os(v).map(|t| (v, t)));
                let (name, value) = var.ok_or_else(|| {
                    ProviderError::new_err(
                        "the PKI needs a token: pass token_file, or set $VAULT_TOKEN (or $BAO_TOKEN)",
                    )
                })?;
                VaultToken::from_bytes(value.as_encoded_bytes(), &format!("${name}")).map_err(cli_err)?
            }
        };
        let ca_cert_pem = match ca_cert_file {
            Some(f) => Some(meshca_ops::fs::read_input(&f).map_err(|e| cli_err(e.into()))?),
            None => None,
        };
        let connect = Connect {
            address,
            mount: mount.to_owned(),
            issuer: issuer.to_owned(),
            ca_cert_pem,
            call_timeout: CALL_TIMEOUT,
        };
        let vault = Vault::login(connect, Login::Token(token)).map_err(cli_err)?;
        let files = vault.issuer_files().map_err(cli_err)?;
        let cert = meshca::parse_certificates(files.get(meshca::CA_CERT).unwrap_or_default(), "the issuer")
            .map_err(core_err)?;
        let key = cert
            .first()
            .and_then(|c| meshca_ops::vault::ProviderKey::of(c, vault.describe()))
            .ok_or_else(|| ProviderError::new_err("the PKI's issuer has a key istiod cannot use"))?;
        let inner = SigningCa::from_public_files(&files, std::sync::Arc::new(key), now).map_err(core_err)?;
        Ok(PySigningCa { inner, remote: Some(std::sync::Arc::new(vault)) })
    }

    /// The key's PKCS#11 URI when it is in a token, else `None`.
    #[getter]
    fn key_uri(&self) -> Option<String> {
        self.inner.bundle().ca_key().external()
    }

    /// Uses a bundle as a signer.
    #[staticmethod]
    fn from_cacerts(cacerts: &PyCacerts) -> Self {
        PySigningCa::local(SigningCa::new(cacerts.inner.clone()))
    }

    /// The signer's own bundle (for a root: all four files hold the root).
    #[getter]
    fn cacerts(&self) -> PyCacerts {
        PyCacerts { inner: self.inner.bundle().clone() }
    }

    /// The signer's `root-cert.pem`.
    #[getter]
    fn root_cert_pem<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &pem_of(self.inner.bundle().roots()))
    }

    /// Signs a CRL listing `revoked` (`(serial_hex, reason)` pairs, revoked at `now`), valid
    /// `days` from `now`, with CRL number `number` (RFC 5280: it only grows per issuer).
    #[pyo3(signature = (revoked = Vec::new(), number = 1, days = 7, now = None))]
    fn sign_crl(
        &self,
        revoked: Vec<(String, String)>,
        number: u64,
        #[pyo3(from_py_with = crl_days_arg)] days: i64,
        now: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyCrl> {
        let now = now_from(now)?;
        let entries = revoked
            .iter()
            .map(|(serial, reason)| Ok(meshca::Revoked::of_serial(serial_arg(serial)?, now, reason_arg(reason)?)))
            .collect::<PyResult<Vec<_>>>()?;
        let ca = self.inner.bundle().ca_cert();
        let start = now - meshca::BACKDATE.min(now - ca.not_before());
        let end = (now + Duration::days(days)).min(ca.not_after());
        Ok(PyCrl { inner: self.inner.sign_crl(&entries, start, end, number).map_err(core_err)? })
    }

    /// Issues a cluster's intermediate as a complete `cacerts` bundle.
    #[pyo3(signature = (cluster, ttl_days = 365, key = "ecdsa-p256", trust_domain = "cluster.local", organization = "Istio", pathlen = 0, now = None))]
    fn issue_intermediate(
        &self,
        cluster: &str,
        #[pyo3(from_py_with = ttl_days_arg)] ttl_days: i64,
        key: &str,
        trust_domain: &str,
        organization: &str,
        #[pyo3(from_py_with = pathlen_arg)] pathlen: u8,
        now: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyCacerts> {
        let now = now_from(now)?;
        meshca::validate_trust_domain(trust_domain).map_err(|e| match e {
            meshca::Error::InvalidParameter { reason, .. } => {
                InvalidParameterError::new_err(format!("trust_domain: {reason}"))
            }
            other => core_err(other),
        })?;
        let mut p = IntermediateParams::new(cluster);
        p.ttl = days(ttl_days, "ttl_days")?;
        p.key = key_alg(key)?;
        p.organization = organization.to_owned();
        p.pathlen = pathlen;
        if let Some(vault) = &self.remote {
            let request = meshca::CaRequest::new(&p, &mut meshca::OsRng).map_err(core_err)?;
            let answer = vault.sign_intermediate(&request).map_err(cli_err)?;
            let issued = request
                .accept(&answer, self.inner.bundle().roots(), &vault.describe(), now)
                .map_err(|e| cli_err(meshca_ops::Error::Core { context: cluster.to_owned(), source: e }))?;
            return Ok(PyCacerts { inner: issued.value });
        }
        let issued = self.inner.issue_intermediate(&p, &mut meshca::OsRng, now).map_err(core_err)?;
        Ok(PyCacerts { inner: issued.value })
    }

    /// Issues a workload certificate as istiod does.
    #[pyo3(signature = (spiffe_id, ttl_hours = 24, key = "ecdsa-p256", now = None))]
    fn issue_leaf(
        &self,
        spiffe_id: &str,
        #[pyo3(from_py_with = ttl_hours_arg)] ttl_hours: i64,
        key: &str,
        now: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyLeaf> {
        let now = now_from(now)?;
        let id: SpiffeId = spiffe_id.parse().map_err(core_err)?;
        let mut p = LeafParams::new(id);
        p.ttl = Duration::hours(ttl_hours);
        p.key = key_alg(key)?;
        Ok(PyLeaf { inner: self.inner.issue_leaf(&p, &mut meshca::OsRng, now).map_err(core_err)?.value })
    }

    /// Signs a cluster's CSR with the intermediate profile. Returns `ca-cert.pem`,
    /// `cert-chain.pem` and `root-cert.pem`; the cluster adds its own `ca-key.pem`.
    #[pyo3(signature = (csr_pem, cluster = None, ttl_days = 365, organization = "Istio", pathlen = 0, now = None))]
    fn sign_csr<'py>(
        &self,
        py: Python<'py>,
        csr_pem: &[u8],
        cluster: Option<&str>,
        #[pyo3(from_py_with = ttl_days_arg)] ttl_days: i64,
        organization: &str,
        #[pyo3(from_py_with = pathlen_arg)] pathlen: u8,
        now: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let now = now_from(now)?;
        let csr = Csr::from_pem(csr_pem, "csr_pem").map_err(core_err)?;
        let cluster =
            cluster.map(str::to_owned).or_else(|| csr.requested_cluster().map(str::to_owned)).ok_or_else(|| {
                InvalidParameterError::new_err(format!(
                    "the CSR names no cluster (subject {}); pass cluster=",
                    csr.subject()
                ))
            })?;
        let mut p = IntermediateParams::new(&cluster);
        p.ttl = days(ttl_days, "ttl_days")?;
        p.organization = organization.to_owned();
        p.pathlen = pathlen;
        let signed = self.inner.sign_intermediate_csr(&csr, &p, &mut meshca::OsRng, now).map_err(core_err)?;
        files_to(py, &signed.value.to_files())
    }

    /// Makes `ssl_context` trust this signer's roots.
    fn configure_trust(&self, ssl_context: &Bound<'_, PyAny>) -> PyResult<()> {
        load_verify(ssl_context, self.inner.bundle().roots())
    }

    fn __repr__(&self) -> String {
        let b = self.inner.bundle();
        format!("<SigningCa {} until {}>", b.ca_cert().subject(), meshca::format_time(b.not_after()))
    }
}

// ---- rotation -----------------------------------------------------------------------------

/// What to do with one cluster's bundle.
#[pyclass(module = "meshca", name = "Plan", frozen)]
struct PyPlan {
    action: &'static str,
    reason: String,
    recheck_at: Option<OffsetDateTime>,
    roots: Vec<meshca::Certificate>,
}

#[pymethods]
impl PyPlan {
    /// "keep", "issue", or "update-trust" (only `root-cert.pem` must change: see `roots_pem`).
    #[getter]
    fn action(&self) -> &'static str {
        self.action
    }

    /// Why.
    #[getter]
    fn reason(&self) -> String {
        self.reason.clone()
    }

    /// For "update-trust": the roots `root-cert.pem` should hold (pass to
    /// `Cacerts.with_trust_bundle`); else None.
    #[getter]
    fn roots_pem<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        (!self.roots.is_empty()).then(|| PyBytes::new(py, &pem_of(&self.roots)))
    }

    /// For "keep" and "update-trust": when the bundle enters its grace period; else None.
    #[getter]
    fn recheck_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.recheck_at.map(|t| to_datetime(py, t)).transpose()
    }

    fn __repr__(&self) -> String {
        match self.recheck_at {
            Some(t) => format!("<Plan {} until {}>", self.action, meshca::format_time(t)),
            None => format!("<Plan {}: {}>", self.action, self.reason),
        }
    }
}

/// `ttlDays` and `secretRotationGracePeriodRatio` of a RootTrustPolicy.
#[pyclass(module = "meshca", name = "RotationPolicy", frozen)]
struct PyRotationPolicy {
    inner: RotationPolicy,
}

#[pymethods]
impl PyRotationPolicy {
    #[new]
    #[pyo3(signature = (ttl_days, grace_ratio, key = "ecdsa-p256", organization = "Istio", pathlen = 0, passive_roots = None, now = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        #[pyo3(from_py_with = policy_ttl_days_arg)] ttl_days: i64,
        grace_ratio: f64,
        key: &str,
        organization: &str,
        #[pyo3(from_py_with = pathlen_arg)] pathlen: u8,
        passive_roots: Option<&[u8]>,
        now: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let ttl =
            meshca::bounds::ca_ttl_days(ttl_days).map_err(|e| PolicyInvalidError::new_err(format!("ttl_days {e}")))?;
        let mut inner =
            RotationPolicy::new(ttl, grace_ratio).map_err(|e| PolicyInvalidError::new_err(e.to_string()))?;
        inner.key = key_alg(key)?;
        inner.organization = organization.to_owned();
        inner.pathlen = pathlen;
        if let Some(pem) = passive_roots {
            // Roots every cluster trusts besides the signer's (passiveCertificateAuthorities),
            // checked as roots valid at `now`.
            inner.passive_roots = meshca::parse_roots(pem, "passive_roots", now_from(now)?).map_err(core_err)?;
        }
        Ok(PyRotationPolicy { inner })
    }

    /// Lifetime of an intermediate, in days.
    #[getter]
    fn ttl_days(&self) -> i64 {
        self.inner.ttl.whole_days()
    }

    /// The grace ratio.
    #[getter]
    fn grace_ratio(&self) -> f64 {
        self.inner.grace_ratio
    }

    /// Decides whether `current` (a Cacerts, a dict of files that may be invalid, or None) is
    /// kept or re-issued by `signer`. `cluster` defaults to the bundle's subject L.
    #[pyo3(signature = (current, signer, now = None, cluster = None))]
    fn plan(
        &self,
        current: &Bound<'_, PyAny>,
        signer: &PySigningCa,
        now: Option<&Bound<'_, PyAny>>,
        cluster: Option<&str>,
    ) -> PyResult<PyPlan> {
        let now = now_from(now)?;
        let parsed: Option<Result<Cacerts, meshca::Error>> = if current.is_none() {
            None
        } else if let Ok(c) = current.cast::<PyCacerts>() {
            Some(Ok(c.get().inner.clone()))
        } else if let Ok(d) = current.cast::<PyDict>() {
            Some(Cacerts::from_files(&files_from(d)?, now))
        } else {
            return Err(InvalidParameterError::new_err("current must be a Cacerts, a dict of files, or None"));
        };
        let cluster = match (cluster, &parsed) {
            (Some(c), _) => c.to_owned(),
            (None, Some(Ok(b))) => b.ca_cert().locality().unwrap_or_default(),
            _ => String::new(),
        };
        let cur = meshca::Current::of(parsed.as_ref());
        // The core names the action and its reason: nothing is decided or invented here.
        let plan = meshca::plan(&self.inner, &signer.inner, &cluster, cur, &meshca::Facts::NONE, now);
        Ok(PyPlan {
            action: plan.action(),
            reason: plan.reason(),
            recheck_at: plan.recheck_at(),
            roots: plan.roots().to_vec(),
        })
    }

    fn __repr__(&self) -> String {
        format!("RotationPolicy(ttl_days={}, grace_ratio={})", self.ttl_days(), self.inner.grace_ratio)
    }
}

// ---- CRLs ---------------------------------------------------------------------------------

/// `(serial_hex, revoked_at, reason)`.
type CrlEntry<'py> = (String, Bound<'py, PyAny>, Option<String>);

/// A certificate revocation list (one `X509 CRL` block of a `ca-crl.pem`).
#[pyclass(module = "meshca", name = "Crl", frozen)]
struct PyCrl {
    inner: meshca::Crl,
}

fn first_cert(pem: &[u8], what: &str) -> PyResult<meshca::Certificate> {
    meshca::parse_certificates(pem, what)
        .map_err(core_err)?
        .into_iter()
        .next()
        .ok_or_else(|| InvalidParameterError::new_err(format!("{what}: no certificate")))
}

#[pymethods]
impl PyCrl {
    /// Every CRL of a PEM file (`ca-crl.pem` holds one per CA).
    #[staticmethod]
    fn from_pem(pem: &[u8]) -> PyResult<Vec<PyCrl>> {
        Ok(meshca::Crl::from_pem_all(pem, "crl_pem")
            .map_err(core_err)?
            .into_iter()
            .map(|inner| PyCrl { inner })
            .collect())
    }

    /// The issuer's name.
    #[getter]
    fn issuer(&self) -> String {
        self.inner.issuer()
    }

    /// thisUpdate (tz-aware UTC datetime).
    #[getter]
    fn this_update<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_datetime(py, self.inner.this_update())
    }

    /// nextUpdate (tz-aware UTC datetime): the CRL is stale after it.
    #[getter]
    fn next_update<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_datetime(py, self.inner.next_update())
    }

    /// The revoked certificates as `(serial_hex, revoked_at, reason)`; reason is `None` when
    /// the CRL gives none.
    #[getter]
    fn entries<'py>(&self, py: Python<'py>) -> PyResult<Vec<CrlEntry<'py>>> {
        self.inner
            .entries()
            .into_iter()
            .map(|r| Ok((r.serial_hex(), to_datetime(py, r.revoked_at)?, r.reason.map(|x| x.name().to_owned()))))
            .collect()
    }

    /// Whether this CRL lists the first certificate of `cert_pem` (by issuer and serial).
    fn revokes(&self, cert_pem: &[u8]) -> PyResult<bool> {
        Ok(self.inner.revokes(&first_cert(cert_pem, "cert_pem")?))
    }

    /// Checks the CRL as Envoy and OpenSSL do before using it: issued and signed by `issuer`'s
    /// CA certificate, which may sign CRLs, and current at `now`. Raises otherwise.
    #[pyo3(signature = (issuer, now = None))]
    fn check(&self, issuer: &PyCacerts, now: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.inner.check(issuer.inner.ca_cert(), now_from(now)?, "crl").map_err(core_err)
    }

    /// PEM (`-----BEGIN X509 CRL-----`).
    #[getter]
    fn pem<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.to_pem().as_bytes())
    }

    fn __repr__(&self) -> String {
        format!(
            "Crl(issuer={:?}, entries={}, next_update={})",
            self.inner.issuer(),
            self.inner.entries().len(),
            meshca::format_time(self.inner.next_update())
        )
    }
}

fn reason_arg(reason: &str) -> PyResult<meshca::RevocationReason> {
    reason.parse().map_err(core_err)
}

fn serial_arg(hex: &str) -> PyResult<Vec<u8>> {
    meshca::parse_serial(hex).map_err(core_err)
}

/// The whole fleet's `ca-crl.pem`, as `meshca revoke` publishes it: a CRL signed by `root`
/// listing the CA certificates of `revoked` (for `reason`), valid `days`, with CRL number
/// `number`; and an entry-less CRL signed by each bundle of `bundles` and `revoked` (with its
/// own key), valid until that bundle's CA expires. Every bundle of `bundles` not revoked is
/// checked to verify under the set as Envoy applies it (a CRL for each CA of its chain).
#[pyfunction]
#[pyo3(signature = (root, bundles, revoked = Vec::new(), reason = "keyCompromise", number = 1, days = 7, now = None))]
#[allow(clippy::too_many_arguments)]
fn fleet_crl_set<'py>(
    py: Python<'py>,
    root: &PySigningCa,
    bundles: Vec<PyRef<'py, PyCacerts>>,
    revoked: Vec<PyRef<'py, PyCacerts>>,
    reason: &str,
    number: u64,
    #[pyo3(from_py_with = crl_days_arg)] days: i64,
    now: Option<&Bound<'_, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let now = now_from(now)?;
    let reason = reason_arg(reason)?;
    let root_ca = root.inner.bundle().ca_cert();
    if !root_ca.is_self_signed() {
        return Err(InvalidParameterError::new_err(format!(
            "root: {} is not self-signed; the CRL revoking a cluster CA is its issuer's, and every CA of a chain needs one",
            root_ca.subject()
        )));
    }
    let entries: Vec<meshca::Revoked> =
        revoked.iter().map(|b| meshca::Revoked::of(b.inner.ca_cert(), now, reason)).collect();
    // The windows are the core's CRL profile with `days` of validity; the root CRL is signed
    // with the number asked for, and the core covers every intermediate and checks the set.
    let profile = meshca::CrlProfile::new(Duration::days(days), meshca::CrlProfile::DEFAULT.root_refresh);
    let root_crl = root
        .inner
        .sign_crl(&entries, profile.this_update(root_ca, now), profile.root_next_update(root_ca, now), number)
        .map_err(core_err)?;
    let mut set = meshca::CrlSet::new(vec![root_crl]);
    for b in bundles.iter().chain(revoked.iter()) {
        set.cover(&profile, &b.inner, now).map_err(core_err)?;
    }
    for b in bundles.iter().filter(|b| !revoked.iter().any(|r| r.inner.ca_cert() == b.inner.ca_cert())) {
        set.check(b.inner.path(), now, "ca-crl.pem").map_err(core_err)?;
    }
    Ok(PyBytes::new(py, set.to_pem().as_bytes()))
}

fn crl_days_arg(v: &Bound<'_, PyAny>) -> PyResult<i64> {
    int_in(v, "days", 1, 366)
}

// ---- functions ----------------------------------------------------------------------------

/// Checks that every bundle trusts every other's root; returns the shared root's fingerprint.
#[pyfunction]
fn verify_same_root(bundles: &Bound<'_, PyList>) -> PyResult<String> {
    let mut owned = Vec::new();
    for (i, b) in bundles.iter().enumerate() {
        let c = b.cast::<PyCacerts>().map_err(|_| InvalidParameterError::new_err("bundles must be Cacerts"))?;
        let inner = c.get().inner.clone();
        let name = inner.ca_cert().locality().unwrap_or_else(|| format!("bundle #{}", i + 1));
        owned.push((name, inner));
    }
    let refs: Vec<(&str, &Cacerts)> = owned.iter().map(|(n, b)| (n.as_str(), b)).collect();
    Ok(meshca::check_mutual_trust(&refs).map_err(core_err)?.fingerprint)
}

/// Verifies a workload chain (PEM, leaf first) against roots (PEM) with rustls-webpki; returns
/// the SPIFFE ID.
#[pyfunction]
#[pyo3(signature = (cert_chain_pem, root_cert_pem, now = None, crl_pem = None))]
fn verify_workload_chain(
    cert_chain_pem: &[u8],
    root_cert_pem: &[u8],
    now: Option<&Bound<'_, PyAny>>,
    crl_pem: Option<&[u8]>,
) -> PyResult<String> {
    let now = now_from(now)?;
    let chain = meshca::parse_certificates(cert_chain_pem, "cert_chain_pem").map_err(core_err)?;
    let roots = meshca::parse_certificates(root_cert_pem, "root_cert_pem").map_err(core_err)?;
    let id = match crl_pem {
        // As Envoy applies a ca-crl.pem: a CRL for every CA of the chain, none revoking it.
        Some(pem) => {
            let crls = meshca::Crl::from_pem_all(pem, "crl_pem").map_err(core_err)?;
            meshca::verify_workload_chain_with_crls(&chain, &roots, &crls, now).map_err(core_err)?
        }
        None => meshca::verify_workload_chain(&chain, &roots, now).map_err(core_err)?,
    };
    Ok(id.to_string())
}

/// The SPIFFE bundle (a JWK Set: one `x509-svid` key per root, `spiffe_sequence`,
/// `spiffe_refresh_hint`) of the roots in `roots_pem`, as `meshca bundle` prints it.
#[pyfunction]
#[pyo3(signature = (roots_pem, sequence, refresh_hint_seconds = 300))]
fn spiffe_bundle(roots_pem: &[u8], sequence: u64, refresh_hint_seconds: i64) -> PyResult<String> {
    let roots = meshca::parse_certificates(roots_pem, "roots_pem").map_err(core_err)?;
    let hint = meshca::refresh_hint("refresh_hint_seconds", refresh_hint_seconds).map_err(core_err)?;
    Ok(meshca::TrustSet::new(roots).map_err(core_err)?.spiffe_bundle(sequence, hint))
}

/// In a cluster: a new key and a CSR for its intermediate. Returns `(key_pem, csr_pem)`.
#[pyfunction]
#[pyo3(signature = (cluster, key = "ecdsa-p256", organization = "Istio"))]
fn make_csr<'py>(
    py: Python<'py>,
    cluster: &str,
    key: &str,
    organization: &str,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let k = PrivateKey::generate(key_alg(key)?, &mut meshca::OsRng).map_err(core_err)?;
    let csr = Csr::generate_pem(cluster, organization, &k).map_err(core_err)?;
    Ok((PyBytes::new(py, k.to_pkcs8_pem().as_bytes()), PyBytes::new(py, csr.as_bytes())))
}

/// The issuance log (spec.config.auditLog) of a policy in a directory store, to read and
/// verify: `AuditLog(store, policy_yaml, mgmt_cluster="mgmt", trusted_key=None,
/// pkcs11_module=None)`. Checkpoints are checked with `trusted_key` (a verifier key kept
/// earlier) when given, else with the policy's key: its Secret, or the public key in its token,
/// reached through `pkcs11_module` (no PIN).
#[pyclass(name = "AuditLog", module = "meshca", frozen)]
struct PyAuditLog {
    store: meshca_ops::store::DirStore,
    policy: meshca_ops::policy::Policy,
    mgmt: String,
    trusted: Option<meshca::tlog::VerifierKey>,
    token: meshca_ops::reconcile::TokenAccess,
}

impl PyAuditLog {
    /// The key checkpoints are checked with: the one kept, else the policy's.
    fn key(&self) -> PyResult<meshca::tlog::VerifierKey> {
        match &self.trusted {
            Some(k) => Ok(k.clone()),
            None => meshca_ops::audit::verifier(&self.store, &self.policy, &self.mgmt, &self.token).map_err(cli_err),
        }
    }
}

fn entry_dict<'py>(py: Python<'py>, index: u64, e: &meshca::tlog::LogEntry) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("index", index)?;
    d.set_item("kind", e.kind.as_str())?;
    d.set_item("cluster", &e.cluster)?;
    d.set_item("reason", &e.reason)?;
    d.set_item("policy", &e.policy)?;
    d.set_item("generation", e.generation)?;
    d.set_item("time", meshca::format_time(e.time))?;
    d.set_item("serial", e.serial())?;
    d.set_item("name", e.name())?;
    d.set_item("sha256", e.der_sha256())?;
    d.set_item("der", PyBytes::new(py, &e.der))?;
    Ok(d)
}

#[pymethods]
impl PyAuditLog {
    #[new]
    #[pyo3(signature = (store, policy_yaml, mgmt_cluster = "mgmt", trusted_key = None, pkcs11_module = None))]
    fn new(
        store: PathBuf,
        policy_yaml: &str,
        mgmt_cluster: &str,
        trusted_key: Option<&str>,
        pkcs11_module: Option<PathBuf>,
    ) -> PyResult<Self> {
        let policy = meshca_ops::policy::parse(policy_yaml, "policy_yaml").map_err(cli_err)?;
        meshca_ops::audit::config(&policy).map_err(cli_err)?;
        let trusted = trusted_key.map(meshca::tlog::VerifierKey::parse).transpose().map_err(core_err)?;
        Ok(PyAuditLog {
            store: meshca_ops::store::DirStore::new(store),
            policy,
            mgmt: mgmt_cluster.to_owned(),
            trusted,
            token: meshca_ops::reconcile::TokenAccess::new(pkcs11_module, None),
        })
    }

    /// Every entry, in order, as dicts (index, kind, cluster, reason, policy, generation, time,
    /// serial, name, sha256, der).
    fn entries<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let mut all = Vec::new();
        meshca_ops::audit::entries(&self.store, &self.policy, &self.mgmt, &mut |i, e| {
            all.push((i, e));
            Ok(())
        })
        .map_err(cli_err)?;
        all.iter().map(|(i, e)| entry_dict(py, *i, e)).collect()
    }

    /// The current signed checkpoint (C2SP signed note), its signature checked.
    fn checkpoint(&self) -> PyResult<String> {
        Ok(meshca_ops::audit::checkpoint(&self.store, &self.policy, &self.mgmt, &self.key()?).map_err(cli_err)?.0)
    }

    /// The log's verifier key (`name+hash+base64`).
    fn verifier_key(&self) -> PyResult<String> {
        Ok(self.key()?.to_string())
    }

    /// Verifies the log (and its consistency with `since`, a checkpoint kept earlier) and that
    /// every CA in `clusters`' bundles is in it (default: every cluster of the store but the
    /// management one). Returns a dict: ok, size, checkpoint_size, consistency_proof,
    /// unaccounted (dicts: cluster, file, kind, name, sha256). A log that does not verify
    /// raises.
    #[pyo3(signature = (since = None, clusters = None))]
    fn verify<'py>(
        &self,
        py: Python<'py>,
        since: Option<&[u8]>,
        clusters: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        use meshca_ops::store::Store;
        let clusters = match clusters {
            Some(c) => c,
            None => {
                self.store.clusters_with_cacerts().map_err(cli_err)?.into_iter().filter(|c| *c != self.mgmt).collect()
            }
        };
        let key = self.key()?;
        let r = meshca_ops::audit::verify(&self.store, &self.policy, &self.mgmt, &key, &clusters, since)
            .map_err(cli_err)?;
        let d = PyDict::new(py);
        d.set_item("ok", r.ok())?;
        d.set_item("size", r.entries)?;
        d.set_item("checkpoint_size", r.checkpoint.size)?;
        let proof: Vec<Bound<'py, PyBytes>> =
            r.since.iter().flat_map(|(_, p)| p.iter().map(|h| PyBytes::new(py, h))).collect();
        d.set_item("consistency_proof", proof)?;
        let mut unaccounted = Vec::new();
        for u in &r.unaccounted {
            let x = PyDict::new(py);
            x.set_item("cluster", &u.cluster)?;
            x.set_item("file", &u.file)?;
            x.set_item("kind", u.kind)?;
            x.set_item("name", &u.name)?;
            x.set_item("sha256", &u.sha256)?;
            unaccounted.push(x);
        }
        d.set_item("unaccounted", unaccounted)?;
        Ok(d)
    }

    /// The inclusion proof of the CA certificate with serial `serial` (hex): a dict with index,
    /// tree_size, root_hash, leaf, leaf_hash, path (bytes, leaf to root) and checkpoint.
    fn prove<'py>(&self, py: Python<'py>, serial: &str) -> PyResult<Bound<'py, PyDict>> {
        let serial = meshca::parse_serial(serial).map_err(core_err)?;
        let p =
            meshca_ops::audit::prove(&self.store, &self.policy, &self.mgmt, &self.key()?, &serial).map_err(cli_err)?;
        let d = PyDict::new(py);
        d.set_item("index", p.index)?;
        d.set_item("tree_size", p.checkpoint.size)?;
        d.set_item("root_hash", PyBytes::new(py, &p.checkpoint.root))?;
        d.set_item("leaf", PyBytes::new(py, &p.leaf))?;
        d.set_item("leaf_hash", PyBytes::new(py, &meshca::tlog::leaf_hash(&p.leaf)))?;
        let path: Vec<Bound<'py, PyBytes>> = p.path.iter().map(|h| PyBytes::new(py, h)).collect();
        d.set_item("path", path)?;
        d.set_item("checkpoint", &p.note)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("AuditLog(policy={}/{})", self.policy.namespace, self.policy.name)
    }
}

#[pymodule]
fn _meshca(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyCacerts>()?;
    m.add_class::<PyTrustChain>()?;
    m.add_class::<PySigningCa>()?;
    m.add_class::<PyLeaf>()?;
    m.add_class::<PyRotationPolicy>()?;
    m.add_class::<PyPlan>()?;
    m.add_class::<PyCrl>()?;
    m.add_class::<PyAuditLog>()?;
    m.add_function(wrap_pyfunction!(fleet_crl_set, m)?)?;
    m.add_function(wrap_pyfunction!(verify_same_root, m)?)?;
    m.add_function(wrap_pyfunction!(verify_workload_chain, m)?)?;
    m.add_function(wrap_pyfunction!(make_csr, m)?)?;
    m.add_function(wrap_pyfunction!(spiffe_bundle, m)?)?;
    for (name, ty) in [
        ("MeshcaError", py.get_type::<MeshcaError>()),
        ("BundleInvalidError", py.get_type::<BundleInvalidError>()),
        ("KeyUnsupportedError", py.get_type::<KeyUnsupportedError>()),
        ("CsrInvalidError", py.get_type::<CsrInvalidError>()),
        ("PolicyInvalidError", py.get_type::<PolicyInvalidError>()),
        ("InvalidParameterError", py.get_type::<InvalidParameterError>()),
        ("IssuanceError", py.get_type::<IssuanceError>()),
        ("TrustError", py.get_type::<TrustError>()),
        ("FileError", py.get_type::<FileError>()),
        ("Pkcs11Error", py.get_type::<Pkcs11Error>()),
        ("ProviderError", py.get_type::<ProviderError>()),
    ] {
        m.add(name, ty)?;
    }
    Ok(())
}
