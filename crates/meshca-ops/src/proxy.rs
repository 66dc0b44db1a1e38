//! Envoy secret dumps as `istioctl proxy-config secret <pod> -o json|yaml` prints them: the
//! `ROOTCA` secret's `validationContext.trustedCa` and the `default` secret's
//! `tlsCertificate.certificateChain`, base64 `inlineBytes` (or PEM `inlineString`).

use base64::Engine;
use serde_json::Value;

use meshca::Certificate;

use crate::error::Error;

/// What one sidecar holds.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProxySecret {
    /// Where it was read from.
    pub source: String,
    /// The trusted roots (ROOTCA).
    pub roots: Vec<Certificate>,
    /// The workload chain (default), leaf first.
    pub chain: Vec<Certificate>,
}

/// Parses a dump (JSON or YAML). `source` names it in errors.
pub fn parse(text: &str, source: &str) -> Result<ProxySecret, Error> {
    let bad = |detail: String| Error::ProxyDump { source_name: source.to_owned(), detail };
    let value: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text)
            .map_err(|e| bad(format!("not valid JSON: {}", crate::error::redact(&e.to_string()))))?
    } else {
        serde_saphyr::from_str(text)
            .map_err(|e| bad(format!("not valid YAML or JSON: {}", crate::error::yaml_error(&e))))?
    };
    let mut roots_pem = Vec::new();
    let mut chain_pem = Vec::new();
    walk(&value, None, &mut roots_pem, &mut chain_pem, &bad)?;
    if roots_pem.is_empty() && chain_pem.is_empty() {
        return Err(bad(
            "no trustedCa or certificateChain found; expected the output of `istioctl proxy-config secret <pod> -o json`"
                .into(),
        ));
    }
    let certs = |pems: &[Vec<u8>], what: &str| -> Result<Vec<Certificate>, Error> {
        let mut out = Vec::new();
        for pem in pems {
            out.extend(meshca::parse_certificates(pem, &format!("{source} ({what})")).map_err(Error::core(source))?);
        }
        Ok(out)
    };
    Ok(ProxySecret {
        source: source.to_owned(),
        roots: certs(&roots_pem, "ROOTCA")?,
        chain: certs(&chain_pem, "default")?,
    })
}

fn walk(
    v: &Value,
    parent: Option<&str>,
    roots: &mut Vec<Vec<u8>>,
    chain: &mut Vec<Vec<u8>>,
    bad: &dyn Fn(String) -> Error,
) -> Result<(), Error> {
    match v {
        Value::Object(map) => {
            if let Some(p @ ("trustedCa" | "certificateChain")) = parent {
                let data = if let Some(Value::String(b64)) = map.get("inlineBytes") {
                    base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| {
                        bad(format!("{p}.inlineBytes is not base64: {}", crate::error::redact(&e.to_string())))
                    })?
                } else if let Some(Value::String(pem)) = map.get("inlineString") {
                    pem.clone().into_bytes()
                } else {
                    return Ok(());
                };
                if p == "trustedCa" { roots } else { chain }.push(data);
                return Ok(());
            }
            for (k, child) in map {
                walk(child, Some(k), roots, chain, bad)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|i| walk(i, parent, roots, chain, bad)),
        _ => Ok(()),
    }
}
