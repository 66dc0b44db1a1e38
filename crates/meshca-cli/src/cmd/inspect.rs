//! `meshca inspect`: what a bundle directory, PEM file or sidecar secret dump holds.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use time::OffsetDateTime;

use meshca::{Cacerts, Csr, PrivateKey};
use meshca_ops::describe::cert_view;

use crate::render::write_tree;
use meshca_ops::{fs, proxy, Error};

use crate::failure::CmdResult;
use crate::io::read_input;
use crate::render::short;

#[derive(Args, Debug)]
pub(crate) struct InspectArgs {
    /// A bundle directory, a PEM file (certificates, key or CSR), or a sidecar secret dump.
    pub(crate) path: PathBuf,
    /// As of this time (RFC 3339) instead of now.
    #[arg(long, value_parser = crate::args::time)]
    pub(crate) at: Option<OffsetDateTime>,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn run(a: InspectArgs) -> CmdResult {
    let now = crate::args::now_or(a.at);
    let path = &a.path;
    let mut out = String::new();
    let json = if path.is_dir() {
        inspect_dir(path, now, &mut out)?
    } else {
        let data = read_input(path)?;
        inspect_file(path, &data, now, &mut out)?
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
    } else {
        out!("{out}");
    }
    // A bundle directory that is not a valid bundle is a failed check, shown and exit 1.
    let invalid = json.get("valid") == Some(&serde_json::Value::Bool(false));
    Ok(if invalid { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn inspect_dir(dir: &Path, now: OffsetDateTime, out: &mut String) -> Result<serde_json::Value, Error> {
    let files = fs::read_files(dir)?;
    if files.contains(meshca_ops::pkcs11::KEY_URI_FILE) && !files.contains(meshca::CA_KEY) {
        return Ok(inspect_token_ca(dir, &files, now, out));
    }
    // The one bundle check: the bundle, then its ca-crl.pem against its own chain.
    let bundle =
        Cacerts::from_files(&files, now).and_then(|b| meshca::bundle_crls(&files, b.path(), now).map(|crls| (b, crls)));
    match &bundle {
        Ok((b, crls)) => {
            out.push_str(&format!(
                "{}: valid {} bundle, signing CA {} ({})\n",
                dir.display(),
                b.layout().name(),
                b.ca_cert().subject(),
                b.ca_key().key_type()
            ));
            out.push_str(&format!(
                "chain ({} certificates, signing CA first in the files; shown from the root):\n",
                b.path().len()
            ));
            let views: Vec<_> = b.path().iter().map(|c| cert_view(c, now)).collect();
            write_tree(out, b.path(), &views, "  ");
            out.push_str(&format!(
                "trust bundle ({} root{}):\n",
                b.roots().len(),
                if b.roots().len() == 1 { "" } else { "s" }
            ));
            for r in b.roots() {
                let mark = if r == b.root() { " <- this chain's root" } else { "" };
                out.push_str(&format!("  {} sha256 {}{mark}\n", r.subject(), short(&r.fingerprint_sha256())));
            }
            out.push_str(&format!("private key: {} (matches the signing CA)\n", b.ca_key().key_type()));
            if !crls.is_empty() {
                out.push_str(&format!(
                    "{}: {} CRL(s), one current CRL for each CA of the chain, none revoking it\n",
                    meshca::CA_CRL,
                    crls.len()
                ));
            }
            for w in b.warnings() {
                out.push_str(&format!("warning: {w}\n"));
            }
            Ok(serde_json::json!({
                "path": dir.display().to_string(),
                "valid": true,
                "layout": b.layout().name(),
                "chain": views,
                "roots": b.roots().iter().map(|r| cert_view(r, now)).collect::<Vec<_>>(),
                "keyType": b.ca_key().key_type().to_string(),
                "crls": crls.len(),
                "warnings": b.warnings().iter().map(ToString::to_string).collect::<Vec<_>>(),
            }))
        }
        Err(e) => {
            out.push_str(&format!("{}: NOT a valid bundle: {e}\n", dir.display()));
            let mut per_file = serde_json::Map::new();
            for (name, data) in files.iter() {
                if fs::is_key_file(name) {
                    let kind = PrivateKey::from_pem(data, name).map(|k| k.key_type().to_string());
                    out.push_str(&format!(
                        "{name}: private key, {}\n",
                        kind.as_ref().map_or_else(|e| e.to_string(), Clone::clone)
                    ));
                    continue;
                }
                if let Ok(certs) = meshca::parse_certificates(data, name) {
                    out.push_str(&format!("{name}:\n"));
                    let views: Vec<_> = certs.iter().map(|c| cert_view(c, now)).collect();
                    write_tree(out, &certs, &views, "  ");
                    per_file.insert(name.to_owned(), serde_json::to_value(&views).unwrap_or_default());
                }
            }
            Ok(
                serde_json::json!({"path": dir.display().to_string(), "valid": false, "error": e.to_string(), "files": per_file}),
            )
        }
    }
}

/// A CA whose key is in a token (`root-ca --key-uri`): its public files are checked as a chain
/// up to its roots; the key is named, not opened (inspect needs no PIN).
fn inspect_token_ca(dir: &Path, files: &meshca::Files, now: OffsetDateTime, out: &mut String) -> serde_json::Value {
    let get = |n: &str| files.get(n).unwrap_or_default();
    let uri = String::from_utf8_lossy(get(meshca_ops::pkcs11::KEY_URI_FILE)).trim().to_owned();
    let uri = match meshca_ops::pkcs11::KeyUri::parse(&uri) {
        Ok(u) => u.to_string(),
        Err(_) => format!("(not a PKCS#11 URI: {} is unusable)", meshca_ops::pkcs11::KEY_URI_FILE),
    };
    let chain = meshca::TrustChain::from_pems(get(meshca::CERT_CHAIN), get(meshca::ROOT_CERT), now);
    match chain {
        Ok(t) => {
            out.push_str(&format!(
                "{}: valid signing CA {}, its key in a PKCS#11 token: {uri}\n",
                dir.display(),
                t.first().subject()
            ));
            let views: Vec<_> = t.path().iter().map(|c| cert_view(c, now)).collect();
            write_tree(out, t.path(), &views, "  ");
            serde_json::json!({"path": dir.display().to_string(), "valid": true, "keyUri": uri, "chain": views})
        }
        Err(e) => {
            out.push_str(&format!("{}: NOT a valid signing CA: {e}\n", dir.display()));
            serde_json::json!({"path": dir.display().to_string(), "valid": false, "keyUri": uri, "error": e.to_string()})
        }
    }
}

fn inspect_file(path: &Path, data: &[u8], now: OffsetDateTime, out: &mut String) -> Result<serde_json::Value, Error> {
    let name = path.display().to_string();
    let text = String::from_utf8_lossy(data);
    if text.contains("inlineBytes") || text.contains("inlineString") || text.trim_start().starts_with('{') {
        let s = proxy::parse(&text, &name)?;
        let roots: Vec<_> = s.roots.iter().map(|c| cert_view(c, now)).collect();
        let chain: Vec<_> = s.chain.iter().map(|c| cert_view(c, now)).collect();
        out.push_str(&format!("{name}: sidecar secrets\nROOTCA (trusted roots):\n"));
        write_tree(out, &s.roots, &roots, "  ");
        out.push_str("default (workload certificate chain):\n");
        write_tree(out, &s.chain, &chain, "  ");
        let trusted = meshca::verify_workload_chain(&s.chain, &s.roots, now);
        out.push_str(&match &trusted {
            Ok(id) => format!("the workload chain ({id}) verifies against ROOTCA\n"),
            Err(e) => format!("the workload chain does NOT verify against ROOTCA: {e}\n"),
        });
        return Ok(
            serde_json::json!({"path": name, "kind": "proxy-secret", "roots": roots, "chain": chain, "chainTrusted": trusted.is_ok()}),
        );
    }
    if text.contains("-----BEGIN X509 CRL-----") {
        let crls = meshca::Crl::from_pem_all(data, &name).map_err(Error::core("inspect"))?;
        out.push_str(&format!("{name}: {} CRL{}\n", crls.len(), if crls.len() == 1 { "" } else { "s" }));
        let mut views = Vec::new();
        for c in &crls {
            let stale = if c.next_update() <= now { " (STALE: consumers refuse it)" } else { "" };
            out.push_str(&format!(
                "  issuer {}\n    thisUpdate {}  nextUpdate {}{stale}\n",
                c.issuer(),
                meshca::format_time(c.this_update()),
                meshca::format_time(c.next_update())
            ));
            let entries = c.entries();
            if entries.is_empty() {
                out.push_str("    no revoked certificates\n");
            }
            for e in &entries {
                out.push_str(&format!(
                    "    revoked serial {} at {} ({})\n",
                    e.serial_hex(),
                    meshca::format_time(e.revoked_at),
                    e.reason.map_or("no reason given", |r| r.name())
                ));
            }
            views.push(serde_json::json!({
                "issuer": c.issuer(),
                "thisUpdate": meshca::format_time(c.this_update()),
                "nextUpdate": meshca::format_time(c.next_update()),
                "stale": c.next_update() <= now,
                "revoked": entries.iter().map(|e| serde_json::json!({
                    "serial": e.serial_hex(),
                    "revokedAt": meshca::format_time(e.revoked_at),
                    "reason": e.reason.map(|r| r.name()),
                })).collect::<Vec<_>>(),
            }));
        }
        return Ok(serde_json::json!({"path": name, "kind": "crl", "crls": views}));
    }
    if text.contains("PRIVATE KEY-----") {
        let k = PrivateKey::from_pem(data, &name).map_err(Error::core("inspect"))?;
        out.push_str(&format!("{name}: private key, {}\n", k.key_type()));
        return Ok(serde_json::json!({"path": name, "kind": "private-key", "keyType": k.key_type().to_string()}));
    }
    if text.contains("CERTIFICATE REQUEST-----") {
        let c = Csr::from_pem(data, &name).map_err(Error::core("inspect"))?;
        out.push_str(&format!(
            "{name}: certificate request from {} ({} key), signature valid\n",
            c.subject(),
            c.key_type()
        ));
        return Ok(
            serde_json::json!({"path": name, "kind": "csr", "subject": c.subject(), "keyType": c.key_type().to_string()}),
        );
    }
    let certs = meshca::parse_certificates(data, &name).map_err(Error::core("inspect"))?;
    let views: Vec<_> = certs.iter().map(|c| cert_view(c, now)).collect();
    out.push_str(&format!("{name}: {} certificate{}\n", certs.len(), if certs.len() == 1 { "" } else { "s" }));
    write_tree(out, &certs, &views, "  ");
    Ok(serde_json::json!({"path": name, "kind": "certificates", "certificates": views}))
}
