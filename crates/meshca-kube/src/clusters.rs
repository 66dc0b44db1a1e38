//! Kubernetes clients for clusters: from kubeconfig contexts (the CLI), or from Istio's own
//! multicluster remote secrets (the controller), so Istio users configure nothing new.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::Error;

/// The label istioctl puts on remote secrets.
pub const REMOTE_SECRET_SELECTOR: &str = "istio/multiCluster=true";

fn config_err(context: impl Into<String>, detail: impl std::fmt::Display) -> Error {
    Error::Config { context: context.into(), detail: detail.to_string() }
}

/// A client for `context` in `kubeconfig` (default: `$KUBECONFIG` or `~/.kube/config`);
/// `context` `None` is the current context.
pub async fn client_for_context(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    timeout: Duration,
) -> Result<Client, Error> {
    let where_ = format!(
        "kubeconfig {} context {}",
        kubeconfig.map(|p| p.display().to_string()).unwrap_or_else(|| "(default)".into()),
        context.unwrap_or("(current)")
    );
    let kc = match kubeconfig {
        Some(p) => Kubeconfig::read_from(p).map_err(|e| config_err(&where_, e))?,
        None => Kubeconfig::read().map_err(|e| config_err(&where_, e))?,
    };
    let options = KubeConfigOptions { context: context.map(str::to_owned), ..Default::default() };
    let mut config = Config::from_custom_kubeconfig(kc, &options).await.map_err(|e| config_err(&where_, e))?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    Client::try_from(config).map_err(|e| config_err(&where_, e))
}

/// Clusters from Istio's remote secrets in `namespace` on the management cluster: Secrets
/// labelled `istio/multiCluster=true` whose data maps a cluster name to a kubeconfig.
pub async fn clients_from_remote_secrets(
    mgmt: &Client,
    namespace: &str,
    timeout: Duration,
) -> Result<Vec<(String, Client)>, Error> {
    clients_from_remote_secrets_cached(mgmt, namespace, timeout, &ClientCache::default()).await
}

/// The clients built from remote secrets, by cluster name and the exact kubeconfig bytes they
/// were built from. Building one (the kubeconfig parsed, a TLS configuration with its roots) is
/// the costliest step of a pass over a few changed clusters in a large fleet; a cached client
/// also keeps its connections. A changed kubeconfig builds a new client; a cluster no longer
/// listed is dropped, so the cache holds the fleet of the last listing and nothing more.
#[derive(Default)]
pub struct ClientCache(std::sync::Mutex<std::collections::HashMap<String, (Vec<u8>, Client)>>);

impl std::fmt::Debug for ClientCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Kubeconfigs carry tokens and keys: only the count.
        let n = self.0.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("ClientCache").field("clients", &n).finish()
    }
}

impl ClientCache {
    /// The kubeconfig `cluster`'s client was built from, at the last listing.
    pub(crate) fn kubeconfig_of(&self, cluster: &str) -> Option<Vec<u8>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(cluster).map(|(b, _)| b.clone())
    }
}

/// [`clients_from_remote_secrets`], reusing the clients in `cache` whose kubeconfig is
/// unchanged.
pub async fn clients_from_remote_secrets_cached(
    mgmt: &Client,
    namespace: &str,
    timeout: Duration,
    cache: &ClientCache,
) -> Result<Vec<(String, Client)>, Error> {
    let api: Api<Secret> = Api::namespaced(mgmt.clone(), namespace);
    let list = api.list(&ListParams::default().labels(REMOTE_SECRET_SELECTOR)).await.map_err(|source| Error::Kube {
        context: format!("listing remote secrets ({REMOTE_SECRET_SELECTOR}) in {namespace}"),
        source,
    })?;
    let mut out = Vec::new();
    let held = std::mem::take(&mut *cache.0.lock().unwrap_or_else(|p| p.into_inner()));
    let mut kept = std::collections::HashMap::new();
    for secret in list.items {
        let secret_name = secret.metadata.name.clone().unwrap_or_default();
        for (cluster, kubeconfig) in secret.data.iter().flatten() {
            if let Some((bytes, client)) = held.get(cluster).filter(|(b, _)| *b == kubeconfig.0) {
                out.push((cluster.clone(), client.clone()));
                kept.insert(cluster.clone(), (bytes.clone(), client.clone()));
                continue;
            }
            let context = format!("remote secret {namespace}/{secret_name} key {cluster}");
            let text = std::str::from_utf8(&kubeconfig.0).map_err(|e| config_err(&context, e))?;
            let kc = Kubeconfig::from_yaml(text).map_err(|e| config_err(&context, e))?;
            let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| config_err(&context, e))?;
            config.connect_timeout = Some(timeout);
            config.read_timeout = Some(timeout);
            let client = Client::try_from(config).map_err(|e| config_err(&context, e))?;
            kept.insert(cluster.clone(), (kubeconfig.0.clone(), client.clone()));
            out.push((cluster.clone(), client));
        }
    }
    *cache.0.lock().unwrap_or_else(|p| p.into_inner()) = kept;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
