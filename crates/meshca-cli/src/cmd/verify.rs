//! `meshca verify`: bundles, their shared root, a probe workload each; or sidecars' secrets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use time::OffsetDateTime;

use meshca::Cacerts;
use meshca_ops::store::{SecretRef, Store};
use meshca_ops::{fs, proxy, reconcile, Error};

use crate::args::{ClusterSpec, KubeArgs};
use crate::failure::{usage, CmdResult};
use crate::io::{cluster_context, kube_store};
use crate::render::short;

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// Bundle directories (either layout).
    pub(crate) dirs: Vec<PathBuf>,
    /// With --kube: a cluster as NAME=CONTEXT whose istio-system/cacerts is checked; repeat.
    #[arg(long = "cluster", value_name = "NAME=CONTEXT", requires = "kube")]
    pub(crate) clusters: Vec<ClusterSpec>,
    #[command(flatten)]
    pub(crate) kube: KubeArgs,
    /// A sidecar's `istioctl proxy-config secret <pod> -o json` (or yaml); repeat for each.
    #[arg(long = "proxy-secret", value_name = "FILE")]
    pub(crate) proxy_secrets: Vec<PathBuf>,
    /// Check as of this time (RFC 3339) instead of now.
    #[arg(long, value_parser = crate::args::time)]
    pub(crate) at: Option<OffsetDateTime>,
    /// Skip issuing a probe workload certificate from each bundle for the cross-cluster check.
    #[arg(long)]
    pub(crate) no_probe: bool,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What `verify` judged in a directory: a whole bundle, or only its public chain (no key).
enum Verified {
    Bundle(Box<Cacerts>),
    Public(meshca::TrustChain),
}

impl Verified {
    fn chain(&self) -> &meshca::TrustChain {
        match self {
            Verified::Bundle(b) => b.trust_chain(),
            Verified::Public(t) => t,
        }
    }
}

/// A bundle as read, with the CRLs its `ca-crl.pem` holds (none without one).
type Loaded = (Verified, Vec<meshca::Crl>);

/// A bundle directory, or one without a key (a peer's cert-chain.pem and root-cert.pem, or
/// tls.crt and ca.crt): then every rule but the key match is checked.
fn load_for_verify(dir: &Path, now: OffsetDateTime) -> Result<Loaded, Error> {
    let files = fs::read_files(dir)?;
    let v = load_files(&files, dir, now)?;
    let crls = crls_of(&files, &v, now).map_err(Error::core(dir.display()))?;
    Ok((v, crls))
}

/// The bundle's `ca-crl.pem`, checked as Envoy applies it to the bundle's own chain
/// ([`meshca::bundle_crls`], the check every command applies).
fn crls_of(files: &meshca::Files, v: &Verified, now: OffsetDateTime) -> Result<Vec<meshca::Crl>, meshca::Error> {
    meshca::bundle_crls(files, v.chain().path(), now)
}

fn load_files(files: &meshca::Files, dir: &Path, now: OffsetDateTime) -> Result<Verified, Error> {
    let public = |chain: &str, roots: &str| files.get(chain).zip(files.get(roots));
    let keyless = !files.contains(meshca::CA_KEY) && !files.contains(meshca::TLS_KEY);
    let found = public(meshca::CERT_CHAIN, meshca::ROOT_CERT).or_else(|| public(meshca::TLS_CRT, meshca::CA_CRT));
    match found {
        Some((chain, roots)) if keyless => {
            meshca::TrustChain::from_pems(chain, roots, now).map(Verified::Public).map_err(Error::core(dir.display()))
        }
        _ => Cacerts::from_files(files, now).map(|b| Verified::Bundle(Box::new(b))).map_err(Error::core(dir.display())),
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct BundleStatus {
    path: String,
    ok: bool,
    error: Option<String>,
    subject: Option<String>,
    #[serde(with = "reconcile::rfc3339_opt")]
    not_after: Option<OffsetDateTime>,
    root_fingerprint: Option<String>,
    warnings: Vec<String>,
    /// Checked without a key (the directory held only the public chain).
    public_only: bool,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ProxyStatus {
    path: String,
    ok: bool,
    spiffe_id: Option<String>,
    root_fingerprints: Vec<String>,
    errors: Vec<String>,
    warnings: Vec<String>,
}

pub(crate) fn run(a: VerifyArgs) -> CmdResult {
    if a.dirs.is_empty() && a.proxy_secrets.is_empty() && a.clusters.is_empty() {
        return Err(usage("give bundle directories, --kube --cluster NAME=CONTEXT, or --proxy-secret FILE; see `meshca verify --help`"));
    }
    let now = crate::args::now_or(a.at);
    let mut ok = true;
    let mut statuses = Vec::new();
    let mut bundles: Vec<(String, Verified)> = Vec::new();
    // Each source: a name to show and the bundle or why it was refused.
    let mut sources: Vec<(String, Result<Loaded, Error>)> =
        a.dirs.iter().map(|d| (d.display().to_string(), load_for_verify(d, now))).collect();
    let mut _rt = None;
    if a.kube.kube {
        let clusters = a.clusters.iter().map(cluster_context).collect::<Result<Vec<_>, _>>()?;
        let (rt, store) = kube_store(&a.kube, None, &clusters)?;
        for (name, _) in &clusters {
            let secret = SecretRef::cacerts(name);
            let loc = store.location(&secret);
            let got = store.read(&secret).and_then(|f| match f {
                None => Err(Error::Store {
                    location: loc.clone(),
                    detail: "no cacerts Secret (reconcile this cluster first)".into(),
                }),
                Some(files) => {
                    let v = Cacerts::from_files(&files, now)
                        .map(|b| Verified::Bundle(Box::new(b)))
                        .map_err(Error::core(&loc))?;
                    let crls = crls_of(&files, &v, now).map_err(Error::core(&loc))?;
                    Ok((v, crls))
                }
            });
            sources.push((name.clone(), got));
        }
        _rt = Some(rt);
    }
    // Each cluster's CRL set applied to every other cluster's chain, as Envoy applies it
    // (crl_check_all): a CRL for every CA of the peer's chain, current and signed by it, and
    // none revoked. A bundle that some other cluster's set does not cover fails: that cluster
    // refuses its workloads.
    let all_crls: Vec<(String, Vec<meshca::Crl>)> = sources
        .iter()
        .filter_map(|(n, l)| l.as_ref().ok().map(|(_, c)| (n.clone(), c.clone())))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let with_crls = all_crls.len();
    let sources: Vec<(String, Result<Verified, Error>)> = sources
        .into_iter()
        .map(|(name, loaded)| {
            let checked = loaded.and_then(|(v, _)| {
                let peers =
                    all_crls.iter().filter(|(other, _)| *other != name).map(|(n, c)| (n.as_str(), c.as_slice()));
                meshca::check_peer_crl_sets(v.chain().path(), peers, now).map_err(|(other, e)| Error::Core {
                    context: format!("{name} (as {other} judges it: {other} refuses its workloads)"),
                    source: e,
                })?;
                Ok(v)
            });
            (name, checked)
        })
        .collect();
    let total_sources = sources.len();
    for (name, loaded) in sources {
        match loaded {
            Ok(v) => {
                let (b, public_only) = (v.chain(), matches!(v, Verified::Public(_)));
                if !a.json {
                    let left = meshca::human_duration(b.not_after() - now);
                    outln!(
                        "OK    {name}: {}, expires {} (in {left}), root sha256 {}",
                        b.first().subject(),
                        meshca::format_time(b.not_after()),
                        short(&b.root_fingerprint())
                    );
                    if public_only {
                        outln!("      public chain only: no private key here, so the key match was not checked");
                    }
                    for w in b.warnings() {
                        outln!("      warning: {w}");
                    }
                }
                statuses.push(BundleStatus {
                    path: name.clone(),
                    ok: true,
                    error: None,
                    subject: Some(b.first().subject()),
                    not_after: Some(b.not_after()),
                    root_fingerprint: Some(b.root_fingerprint()),
                    warnings: b.warnings().iter().map(ToString::to_string).collect(),
                    public_only,
                });
                bundles.push((name, v));
            }
            Err(e) => {
                ok = false;
                // The error names the bundle, the file, what is wrong and the fix.
                errln!("FAIL  {e}");
                statuses.push(BundleStatus {
                    path: name.clone(),
                    ok: false,
                    error: Some(e.to_string()),
                    subject: None,
                    not_after: None,
                    root_fingerprint: None,
                    warnings: Vec::new(),
                    public_only: false,
                });
            }
        }
    }
    if with_crls > 0 && with_crls < total_sources && !a.json {
        outln!(
            "      warning: {with_crls} of {total_sources} bundles carry a {}: those without do not refuse revoked CAs",
            meshca::CA_CRL
        );
    }
    let mut trust = serde_json::Value::Null;
    if bundles.len() > 1 {
        let chains: Vec<(&str, &meshca::TrustChain)> = bundles.iter().map(|(n, v)| (n.as_str(), v.chain())).collect();
        // The probe issues a workload certificate from each bundle, so it needs their keys.
        let keyed: Vec<(&str, &Cacerts)> = bundles
            .iter()
            .filter_map(|(n, v)| match v {
                Verified::Bundle(b) => Some((n.as_str(), b.as_ref())),
                Verified::Public(_) => None,
            })
            .collect();
        let result = meshca::check_mutual_trust_chains(&chains).and_then(|shared| {
            if !a.no_probe && keyed.len() > 1 {
                meshca::check_cross_cluster(&keyed, &mut meshca::OsRng, now)?;
            }
            Ok(shared)
        });
        match result {
            Ok(shared) => {
                if !a.json {
                    outln!(
                        "OK    all {} bundles share root {} (sha256 {})",
                        chains.len(),
                        shared.subject,
                        shared.fingerprint
                    );
                    if !a.no_probe && keyed.len() > 1 {
                        outln!("OK    a workload certificate from each is trusted by every other's root-cert.pem");
                    }
                }
                trust = serde_json::json!({"ok": true, "rootFingerprint": shared.fingerprint});
            }
            Err(e) => {
                ok = false;
                errln!("FAIL  {e}");
                trust = serde_json::json!({"ok": false, "error": e.to_string()});
            }
        }
    }
    let proxies = verify_proxies(&a.proxy_secrets, now, a.json, &mut ok);
    if a.json {
        let out = serde_json::json!({
            "at": meshca::format_time(now),
            "ok": ok,
            "bundles": statuses,
            "trust": trust,
            "proxies": proxies,
        });
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn verify_proxies(paths: &[PathBuf], now: OffsetDateTime, json: bool, ok: &mut bool) -> Vec<ProxyStatus> {
    let mut parsed = Vec::new();
    let mut statuses = Vec::new();
    for p in paths {
        let name = p.display().to_string();
        let result = fs::read_input(p)
            .map_err(Error::Io)
            .and_then(|data| {
                String::from_utf8(data)
                    .map_err(|_| Error::ProxyDump { source_name: name.clone(), detail: "not UTF-8 text".into() })
            })
            .and_then(|text| proxy::parse(&text, &name));
        match result {
            Ok(s) => parsed.push(s),
            Err(e) => {
                *ok = false;
                errln!("FAIL  {e}");
                statuses.push(ProxyStatus {
                    path: name,
                    ok: false,
                    spiffe_id: None,
                    root_fingerprints: vec![],
                    errors: vec![e.to_string()],
                    warnings: vec![],
                });
            }
        }
    }
    for a in &parsed {
        let mut st = ProxyStatus {
            path: a.source.clone(),
            ok: true,
            spiffe_id: a.chain.first().and_then(|c| c.uri_sans().into_iter().next()),
            root_fingerprints: a.roots.iter().map(|r| r.fingerprint_sha256()).collect(),
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        if !json {
            outln!(
                "proxy {}: workload {}, trusts {}",
                a.source,
                st.spiffe_id.as_deref().unwrap_or("(no workload certificate)"),
                a.roots
                    .iter()
                    .map(|r| format!("{} ({})", r.subject(), short(&r.fingerprint_sha256())))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for b in &parsed {
            if a.chain.is_empty() {
                st.errors.push(format!("{}: no workload certificate chain (`default` secret) in the dump", a.source));
                break;
            }
            match meshca::verify_workload(&a.chain, &b.roots, now) {
                Ok(v) => {
                    if !json && a.source != b.source {
                        outln!("OK    {}'s workload chain is trusted by {}'s ROOTCA", a.source, b.source);
                    }
                    for w in v.warnings.iter().map(ToString::to_string) {
                        if !st.warnings.contains(&w) {
                            st.warnings.push(w);
                        }
                    }
                }
                Err(e) => st
                    .errors
                    .push(format!("{}'s workload chain is not trusted by {}'s ROOTCA: {e}", a.source, b.source)),
            }
        }
        if !json {
            for w in &st.warnings {
                outln!("      warning: {w}");
            }
        }
        for e in &st.errors {
            errln!("FAIL  {e}");
        }
        if !st.errors.is_empty() {
            st.ok = false;
            *ok = false;
        }
        statuses.push(st);
    }
    if parsed.len() > 1 && *ok && !json {
        outln!("OK    all {} proxies trust the same root and each other's workloads", parsed.len());
    }
    statuses
}
