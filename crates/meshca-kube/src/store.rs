//! A [`Store`] over the Kubernetes API of several clusters. The reconcile loop is synchronous;
//! each call here runs on a tokio runtime `Handle` (call it from outside the runtime or from
//! `spawn_blocking`) and is bounded by a timeout.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use meshca::Files;
use meshca_ops::distribution::LabelSelector;
use meshca_ops::store::{Held, SecretRef, Store, TrustObject, WriteMeta};
use meshca_ops::Error;

/// The label istiod's Deployments carry (`app=istiod`).
pub const ISTIOD_SELECTOR: &str = "app=istiod";

/// Secrets in many clusters, one kube client each.
pub struct KubeStore {
    rt: tokio::runtime::Handle,
    clusters: BTreeMap<String, Client>,
    adopt: bool,
    timeout: Duration,
    /// What each Secret looked like when last read: replace only that version.
    seen: Mutex<HashMap<SecretRef, Option<Secret>>>,
    /// Where writes are recorded (the data's hash per Secret), so the controller's watches can
    /// tell its own writes from someone else's.
    written: Option<Written>,
    /// The ClusterTrustBundle resource each cluster serves, as discovery last said.
    ctb: DiscoveryCache,
}

/// What discovery said of each cluster's ClusterTrustBundles, and when: shared by the stores of
/// a controller's passes ([`KubeStore::discovery_cache`]), so a cluster without the API is asked
/// (and reported) once per [`crate::store::DISCOVERY_TTL`], not on every pass.
pub type DiscoveryCache = std::sync::Arc<Mutex<HashMap<String, (std::time::Instant, Option<kube::api::ApiResource>)>>>;

/// How long a discovery answer stands.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(600);

/// The hash of the data meshca last wrote, per Secret (`cluster/namespace/name`).
pub type Written = std::sync::Arc<Mutex<HashMap<String, u64>>>;

/// The key of a Secret in [`Written`].
pub fn written_key(cluster: &str, namespace: &str, name: &str) -> String {
    format!("{cluster}/{namespace}/{name}")
}

/// A hash of a Secret's data (name and bytes of every key, in order).
pub fn data_hash<'a>(data: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (k, v) in data {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore").field("clusters", &self.clusters.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl KubeStore {
    /// A store over `clusters` (name -> client), running calls on `rt`.
    pub fn new(rt: tokio::runtime::Handle, clusters: BTreeMap<String, Client>) -> Self {
        KubeStore {
            rt,
            clusters,
            adopt: false,
            timeout: Duration::from_secs(20),
            seen: Mutex::new(HashMap::new()),
            written: None,
            ctb: DiscoveryCache::default(),
        }
    }

    /// Records every write's data hash in `written`.
    #[must_use]
    pub fn record_writes(mut self, written: Written) -> Self {
        self.written = Some(written);
        self
    }

    /// Lets writes replace `cacerts` Secrets meshca did not create (`--adopt`).
    #[must_use]
    pub fn adopt(mut self, adopt: bool) -> Self {
        self.adopt = adopt;
        self
    }

    /// Bounds every API call (default 20 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The cluster names this store reaches.
    pub fn cluster_names(&self) -> Vec<String> {
        self.clusters.keys().cloned().collect()
    }

    pub(crate) fn ctb_cache(&self) -> &DiscoveryCache {
        &self.ctb
    }

    /// Shares `cache` of discovery answers with other stores (the controller's passes).
    #[must_use]
    pub fn discovery_cache(mut self, cache: DiscoveryCache) -> Self {
        self.ctb = cache;
        self
    }

    pub(crate) fn client(&self, cluster: &str) -> Result<Client, Error> {
        self.clusters.get(cluster).cloned().ok_or_else(|| Error::Store {
            location: cluster.to_owned(),
            detail: "no Kubernetes client for this cluster (name it with its kubeconfig context)".into(),
        })
    }

    pub(crate) fn run<T>(&self, location: &str, fut: impl Future<Output = Result<T, kube::Error>>) -> Result<T, Error> {
        let timeout = self.timeout;
        match self.rt.block_on(async move { tokio::time::timeout(timeout, fut).await }) {
            Err(_) => {
                Err(Error::Store { location: location.to_owned(), detail: format!("timed out after {timeout:?}") })
            }
            Ok(Err(kube::Error::Api(s))) if s.is_conflict() || s.is_already_exists() => {
                Err(Error::Conflict { location: location.to_owned() })
            }
            Ok(Err(e)) => Err(Error::Store { location: location.to_owned(), detail: describe(&e) }),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// The Secret as this store last read it; read now if it never was, so a replace carries
    /// the version seen.
    fn last_seen(&self, secret: &SecretRef) -> Result<Option<Secret>, Error> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(secret).cloned();
        match seen {
            Some(prev) => Ok(prev),
            None => {
                self.read(secret)?;
                Ok(self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(secret).cloned().flatten())
            }
        }
    }

    fn is_managed(secret: &Secret) -> bool {
        let (k, v) = meshca_ops::manifest::MANAGED_BY;
        secret.metadata.labels.as_ref().and_then(|l| l.get(k)).map(String::as_str) == Some(v)
    }
}

/// A kube-rs error as a user reads it: the HTTP status and the server's message, or the
/// transport failure (connection refused, TLS, DNS).
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {} {}: {}", s.code, s.reason, s.message),
        other => {
            let mut msg = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                let text = s.to_string();
                if !msg.contains(&text) {
                    msg.push_str(": ");
                    msg.push_str(&text);
                }
                src = s.source();
            }
            msg
        }
    }
}

pub use meshca_ops::store::ISTIO_CA_ROOT_CERT;

impl Store for KubeStore {
    fn location(&self, secret: &SecretRef) -> String {
        secret.to_string()
    }

    fn read(&self, secret: &SecretRef) -> Result<Option<Files>, Error> {
        let api: Api<Secret> = Api::namespaced(self.client(&secret.cluster)?, &secret.namespace);
        let name = secret.name.clone();
        let got = self.run(&self.location(secret), async move { api.get_opt(&name).await })?;
        let files =
            got.as_ref().map(|s| s.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect::<Files>());
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(secret.clone(), got);
        Ok(files)
    }

    fn meta(&self, secret: &SecretRef) -> Result<Option<WriteMeta>, Error> {
        Ok(self.last_seen(secret)?.map(|s| WriteMeta {
            labels: s.metadata.labels.unwrap_or_default(),
            annotations: s.metadata.annotations.unwrap_or_default(),
        }))
    }

    fn write(&self, secret: &SecretRef, files: &Files, meta: &WriteMeta) -> Result<(), Error> {
        let location = self.location(secret);
        let previous = self.last_seen(secret)?;
        let mut obj = match &previous {
            Some(existing) => {
                if !self.adopt && !Self::is_managed(existing) {
                    return Err(Error::NotManaged { location });
                }
                existing.clone()
            }
            None => {
                let mut s = Secret::default();
                s.metadata.name = Some(secret.name.clone());
                s.metadata.namespace = Some(secret.namespace.clone());
                s.type_ = Some("Opaque".into());
                s
            }
        };
        obj.metadata.labels.get_or_insert_with(BTreeMap::new).extend(meta.labels.clone());
        obj.metadata.annotations.get_or_insert_with(BTreeMap::new).extend(meta.annotations.clone());
        obj.metadata.managed_fields = None;
        obj.data = Some(files.iter().map(|(k, v)| (k.to_owned(), ByteString(v.to_vec()))).collect());
        obj.string_data = None;
        let api: Api<Secret> = Api::namespaced(self.client(&secret.cluster)?, &secret.namespace);
        let name = secret.name.clone();
        // Recorded before the write: its watch event may arrive before the call returns.
        let key = written_key(&secret.cluster, &secret.namespace, &secret.name);
        let before = self
            .written
            .as_ref()
            .map(|w| w.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), data_hash(files.iter())));
        let result = if previous.is_some() {
            self.run(&location, async move { api.replace(&name, &PostParams::default(), &obj).await })
        } else {
            self.run(&location, async move { api.create(&PostParams::default(), &obj).await })
        };
        let written = match result {
            Ok(w) => w,
            Err(e) => {
                if let (Some(w), Some(before)) = (&self.written, before) {
                    let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
                    match before {
                        Some(h) => w.insert(key, h),
                        None => w.remove(&key),
                    };
                }
                return Err(e);
            }
        };
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(secret.clone(), Some(written));
        Ok(())
    }

    fn istiod_roots(&self, cluster: &str) -> Result<Option<Vec<u8>>, Error> {
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(self.client(cluster)?, "istio-system");
        let location = format!("{cluster}: istio-system/configmaps/{ISTIO_CA_ROOT_CERT}");
        let cm = self.run(&location, async move { api.get_opt(ISTIO_CA_ROOT_CERT).await })?;
        Ok(cm.and_then(|c| c.data).and_then(|mut d| d.remove("root-cert.pem")).map(String::into_bytes))
    }

    fn has_trust_bundles(&self, cluster: &str) -> Result<bool, Error> {
        Ok(self.ctb_resource(cluster)?.is_some())
    }

    fn read_trust(&self, cluster: &str, object: &TrustObject, key: &str) -> Result<Option<Held>, Error> {
        self.read_trust_object(cluster, object, key)
    }

    fn write_trust(
        &self,
        cluster: &str,
        object: &TrustObject,
        key: &str,
        pem: &str,
        signer: &str,
    ) -> Result<(), Error> {
        self.write_trust_object(cluster, object, key, pem, signer)
    }

    fn delete_trust(&self, cluster: &str, object: &TrustObject) -> Result<bool, Error> {
        self.delete_trust_object(cluster, object)
    }

    fn namespaces(&self, cluster: &str, selector: &LabelSelector, limit: usize) -> Result<Vec<String>, Error> {
        self.list_namespaces(cluster, selector, limit)
    }

    fn managed_config_maps(&self, cluster: &str, name: &str) -> Result<Vec<String>, Error> {
        self.list_managed_config_maps(cluster, name)
    }

    fn restart_istiod(&self, cluster: &str, now: time::OffsetDateTime) -> Result<Option<String>, Error> {
        let api: Api<Deployment> = Api::namespaced(self.client(cluster)?, "istio-system");
        let location = format!("{cluster}: istio-system/deployments");
        let stamp = meshca::format_time(now);
        let list_api = api.clone();
        let list =
            self.run(&location, async move { list_api.list(&ListParams::default().labels(ISTIOD_SELECTOR)).await })?;
        let names: Vec<String> = list.items.iter().filter_map(|d| d.metadata.name.clone()).collect();
        if names.is_empty() {
            return Ok(Some(format!("no istiod Deployment ({ISTIOD_SELECTOR}) in istio-system to restart")));
        }
        for name in &names {
            // What `kubectl rollout restart` does: a new pod-template annotation.
            let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": stamp,
            }}}}});
            let (api, name) = (api.clone(), name.clone());
            self.run(&location, async move {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
            })?;
        }
        Ok(Some(format!("restarted istiod ({})", names.join(", "))))
    }
}
