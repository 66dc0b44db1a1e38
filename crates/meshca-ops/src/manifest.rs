//! Kubernetes Secret manifests for `kubectl apply -f -` and GitOps.

use base64::Engine;

use meshca::{Cacerts, Layout};

/// The label meshca puts on what it writes.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "meshca");

/// A Secret manifest (YAML, base64 `data`) holding `bundle` in `layout`, labelled as managed by
/// meshca and annotated with the root fingerprint and notAfter.
pub fn secret_manifest(bundle: &Cacerts, name: &str, namespace: &str, layout: Layout) -> String {
    secret_manifest_with_crl(bundle, None, name, namespace, layout)
}

/// [`secret_manifest`] with the bundle's CRL set (`ca-crl.pem`, as read beside it and checked
/// with [`meshca::bundle_crls`]): a Secret applied without it would drop the CRLs istiod gives
/// Envoy.
pub fn secret_manifest_with_crl(
    bundle: &Cacerts,
    crl_pem: Option<&[u8]>,
    name: &str,
    namespace: &str,
    layout: Layout,
) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut y = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    {}: {}\n  \
         annotations:\n    meshca.dev/root-fingerprint: \"{}\"\n    meshca.dev/not-after: \"{}\"\ntype: Opaque\ndata:\n",
        MANAGED_BY.0,
        MANAGED_BY.1,
        bundle.root_fingerprint(),
        meshca::format_time(bundle.not_after())
    );
    let mut files = bundle.to_files(layout);
    if let Some(pem) = crl_pem {
        files.insert(meshca::CA_CRL, pem.to_vec());
    }
    for (key, data) in files.iter() {
        y.push_str(&format!("  {key}: {}\n", b64.encode(data)));
    }
    y
}
