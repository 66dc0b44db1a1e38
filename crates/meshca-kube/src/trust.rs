//! The trust objects of `spec.config.trustDistribution` in a workload cluster, over the
//! Kubernetes API: ClusterTrustBundles (certificates.k8s.io, `v1` when the server offers it,
//! else `v1beta1`, as discovery says; none on a server without the API), ConfigMaps, and the
//! namespaces a selector matches. Every object meshca writes carries its managed-by label;
//! one without it is never replaced or deleted.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, PostParams, Preconditions};
use kube::Api;
use serde_json::json;

use meshca_ops::distribution::LabelSelector;
use meshca_ops::store::{Held, TrustObject};
use meshca_ops::Error;

use crate::store::KubeStore;

/// The ClusterTrustBundle versions meshca writes, preferred first.
pub(crate) const CTB_VERSIONS: [&str; 2] = ["v1", "v1beta1"];

fn managed(labels: Option<&BTreeMap<String, String>>) -> bool {
    let (k, v) = meshca_ops::manifest::MANAGED_BY;
    labels.and_then(|l| l.get(k)).map(String::as_str) == Some(v)
}

fn managed_labels() -> BTreeMap<String, String> {
    let (k, v) = meshca_ops::manifest::MANAGED_BY;
    BTreeMap::from([(k.to_owned(), v.to_owned())])
}

impl KubeStore {
    /// The ClusterTrustBundle resource `cluster` serves (discovery, asked once per cluster and
    /// remembered), `None` when it serves none.
    pub(crate) fn ctb_resource(&self, cluster: &str) -> Result<Option<ApiResource>, Error> {
        let before = self.ctb_cache().lock().unwrap_or_else(|p| p.into_inner()).get(cluster).cloned();
        if let Some((at, known)) = &before {
            if at.elapsed() < crate::store::DISCOVERY_TTL {
                return Ok(known.clone());
            }
        }
        let client = self.client(cluster)?;
        let mut found = None;
        for version in CTB_VERSIONS {
            let gv = format!("certificates.k8s.io/{version}");
            let c = client.clone();
            let location = format!("{cluster}: discovery of {gv}");
            let list = self.run(&location, async move {
                match c.list_api_group_resources(&gv).await {
                    Ok(l) => Ok(Some(l)),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                    Err(e) => Err(e),
                }
            })?;
            if list.is_some_and(|l| l.resources.iter().any(|r| r.name == "clustertrustbundles")) {
                found = Some(ApiResource {
                    group: "certificates.k8s.io".into(),
                    version: version.into(),
                    api_version: format!("certificates.k8s.io/{version}"),
                    kind: "ClusterTrustBundle".into(),
                    plural: "clustertrustbundles".into(),
                });
                break;
            }
        }
        // Said once: not again while the cluster still serves none.
        if found.is_none() && !before.as_ref().is_some_and(|(_, known)| known.is_none()) {
            tracing::warn!(
                cluster,
                "the cluster serves no ClusterTrustBundles (certificates.k8s.io v1 or v1beta1); the trust set reaches \
                 it through the other targets"
            );
        }
        self.ctb_cache()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cluster.to_owned(), (std::time::Instant::now(), found.clone()));
        Ok(found)
    }

    fn ctb_api(&self, cluster: &str) -> Result<(Api<DynamicObject>, String), Error> {
        let ar = self.ctb_resource(cluster)?.ok_or_else(|| Error::Store {
            location: cluster.to_owned(),
            detail: "serves no ClusterTrustBundles".into(),
        })?;
        let version = ar.api_version.clone();
        Ok((Api::all_with(self.client(cluster)?, &ar), version))
    }

    fn get_ctb(&self, cluster: &str, name: &str) -> Result<Option<DynamicObject>, Error> {
        let (api, _) = self.ctb_api(cluster)?;
        let n = name.to_owned();
        self.run(&format!("{cluster}: ClusterTrustBundle {name}"), async move { api.get_opt(&n).await })
    }

    fn get_cm(&self, cluster: &str, namespace: &str, name: &str) -> Result<Option<ConfigMap>, Error> {
        let api: Api<ConfigMap> = Api::namespaced(self.client(cluster)?, namespace);
        let n = name.to_owned();
        self.run(&format!("{cluster}: ConfigMap {namespace}/{name}"), async move { api.get_opt(&n).await })
    }

    pub(crate) fn read_trust_object(
        &self,
        cluster: &str,
        object: &TrustObject,
        key: &str,
    ) -> Result<Option<Held>, Error> {
        match object {
            TrustObject::ClusterTrustBundle { name } => Ok(self.get_ctb(cluster, name)?.map(|o| Held {
                pem: o.data["spec"]["trustBundle"].as_str().unwrap_or_default().as_bytes().to_vec(),
                managed: managed(o.metadata.labels.as_ref()),
            })),
            TrustObject::ConfigMap { namespace, name } => Ok(self.get_cm(cluster, namespace, name)?.map(|c| Held {
                pem: c.data.as_ref().and_then(|d| d.get(key)).map(|s| s.as_bytes().to_vec()).unwrap_or_default(),
                managed: managed(c.metadata.labels.as_ref()),
            })),
        }
    }

    pub(crate) fn write_trust_object(
        &self,
        cluster: &str,
        object: &TrustObject,
        key: &str,
        pem: &str,
        signer: &str,
    ) -> Result<(), Error> {
        let location = format!("{cluster}: {object}");
        match object {
            TrustObject::ClusterTrustBundle { name } => {
                let (api, api_version) = self.ctb_api(cluster)?;
                let existing = self.get_ctb(cluster, name)?;
                let mut obj: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": api_version, "kind": "ClusterTrustBundle",
                    "metadata": {"name": name, "labels": managed_labels()},
                    "spec": {"signerName": signer, "trustBundle": pem},
                }))
                .map_err(|e| Error::Store { location: location.clone(), detail: e.to_string() })?;
                match existing {
                    Some(e) if !managed(e.metadata.labels.as_ref()) => Err(Error::NotManaged { location }),
                    Some(e) => {
                        obj.metadata.resource_version = e.metadata.resource_version;
                        let n = name.clone();
                        self.run(&location, async move { api.replace(&n, &PostParams::default(), &obj).await })?;
                        Ok(())
                    }
                    None => {
                        self.run(&location, async move { api.create(&PostParams::default(), &obj).await })?;
                        Ok(())
                    }
                }
            }
            TrustObject::ConfigMap { namespace, name } => {
                let api: Api<ConfigMap> = Api::namespaced(self.client(cluster)?, namespace);
                let mut cm = ConfigMap::default();
                cm.metadata.name = Some(name.clone());
                cm.metadata.namespace = Some(namespace.clone());
                cm.metadata.labels = Some(managed_labels());
                cm.data = Some(BTreeMap::from([(key.to_owned(), pem.to_owned())]));
                match self.get_cm(cluster, namespace, name)? {
                    Some(e) if !managed(e.metadata.labels.as_ref()) => Err(Error::NotManaged { location }),
                    Some(e) => {
                        cm.metadata.resource_version = e.metadata.resource_version;
                        let n = name.clone();
                        self.run(&location, async move { api.replace(&n, &PostParams::default(), &cm).await })?;
                        Ok(())
                    }
                    None => {
                        self.run(&location, async move { api.create(&PostParams::default(), &cm).await })?;
                        Ok(())
                    }
                }
            }
        }
    }

    pub(crate) fn delete_trust_object(&self, cluster: &str, object: &TrustObject) -> Result<bool, Error> {
        let location = format!("{cluster}: {object}");
        // Deleted only as read: if someone took it over meanwhile, the precondition fails.
        let guard = |rv: Option<String>, uid: Option<String>| DeleteParams {
            preconditions: Some(Preconditions { resource_version: rv, uid }),
            ..DeleteParams::default()
        };
        match object {
            TrustObject::ClusterTrustBundle { name } => {
                let Some(e) = self.get_ctb(cluster, name)?.filter(|e| managed(e.metadata.labels.as_ref())) else {
                    return Ok(false);
                };
                let (api, _) = self.ctb_api(cluster)?;
                let (n, dp) = (name.clone(), guard(e.metadata.resource_version, e.metadata.uid));
                self.run(&location, async move { api.delete(&n, &dp).await.map(|_| ()) })?;
            }
            TrustObject::ConfigMap { namespace, name } => {
                let Some(e) = self.get_cm(cluster, namespace, name)?.filter(|e| managed(e.metadata.labels.as_ref()))
                else {
                    return Ok(false);
                };
                let api: Api<ConfigMap> = Api::namespaced(self.client(cluster)?, namespace);
                let (n, dp) = (name.clone(), guard(e.metadata.resource_version, e.metadata.uid));
                self.run(&location, async move { api.delete(&n, &dp).await.map(|_| ()) })?;
            }
        }
        Ok(true)
    }

    pub(crate) fn list_namespaces(
        &self,
        cluster: &str,
        selector: &LabelSelector,
        limit: usize,
    ) -> Result<Vec<String>, Error> {
        let api: Api<Namespace> = Api::all(self.client(cluster)?);
        let location = format!("{cluster}: namespaces");
        // One page past the bound is enough to know it is exceeded.
        let lp = ListParams::default()
            .labels(&selector.to_query())
            .limit(u32::try_from(limit.saturating_add(1)).unwrap_or(u32::MAX));
        let list = self.run(&location, async move { api.list(&lp).await })?;
        let more = list.metadata.continue_.as_deref().is_some_and(|c| !c.is_empty());
        let names: Vec<String> = list.items.into_iter().filter_map(|n| n.metadata.name).collect();
        if names.len() > limit || more {
            return Err(meshca_ops::store::too_many_namespaces(&location, names.len(), limit));
        }
        Ok(names)
    }

    pub(crate) fn list_managed_config_maps(&self, cluster: &str, name: &str) -> Result<Vec<String>, Error> {
        let api: Api<ConfigMap> = Api::all(self.client(cluster)?);
        let (k, v) = meshca_ops::manifest::MANAGED_BY;
        let lp = ListParams::default().labels(&format!("{k}={v}")).fields(&format!("metadata.name={name}"));
        let list = self.run(&format!("{cluster}: ConfigMaps {name}"), async move { api.list(&lp).await })?;
        Ok(list.items.into_iter().filter_map(|c| c.metadata.namespace).collect())
    }
}
