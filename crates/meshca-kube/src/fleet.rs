//! The controller's watches beyond its policies: in every workload cluster the
//! `istio-system/cacerts` Secret (a field selector on its name), and in the management cluster
//! the remote-secret set (clusters added or removed) and the Secrets the policies name (signing,
//! passive and incoming CAs). A change that is not meshca's own write asks for a pass at once;
//! the planned requeue stays as the backstop.
//!
//! Each watch is kube-runtime's watcher: a watch that ends (the server's timeoutSeconds, a
//! dropped connection) is resumed from its resourceVersion without a re-list, and nothing is
//! triggered by the resumption itself. The controller's own writes come back as events too;
//! they are recognised by their data's hash ([`crate::store::Written`]) and ignored, so a pass
//! that writes does not cause another.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;

use crate::store::{data_hash, written_key, Written};

/// The Secrets (namespace, name) in the management cluster the policies name; the controller
/// adds to it as it reads policies.
pub type Referenced = Arc<Mutex<BTreeSet<(String, String)>>>;

/// The read timeout of the clients the workload-cluster watches use: their watches may then be
/// held open for minutes (the server ends each a quarter under it, see
/// [`crate::controller::watch_timeout`]), instead of being bounded by the per-call timeout of
/// the reconcile's API calls. Fewer watch requests: about 16 an hour per cluster.
pub const WATCH_CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// What the watches need.
pub(crate) struct FleetWatch {
    pub(crate) mgmt: Client,
    pub(crate) mgmt_cluster: String,
    pub(crate) remote_secret_namespace: String,
    pub(crate) watch_secs: u32,
    pub(crate) written: Written,
    pub(crate) referenced: Referenced,
    /// Asks for a pass over every policy (a full channel means one is already asked for).
    pub(crate) trigger: mpsc::Sender<()>,
}

fn ask(trigger: &mpsc::Sender<()>, why: &str) {
    tracing::info!(why, "change seen: reconciling");
    // A pass already asked for covers this change too.
    let _ = trigger.try_send(());
}

fn is_ours(written: &Written, key: &str, s: &Secret) -> bool {
    let data = s.data.iter().flatten().map(|(k, v)| (k.as_str(), v.0.as_slice()));
    written.lock().unwrap_or_else(|p| p.into_inner()).get(key) == Some(&data_hash(data))
}

/// Watches one Secret stream, asking for a pass on every change someone else made. The first
/// list is not a change (the controller's first pass reads it all); a later re-list is, as a
/// deletion may have happened while the watch was down.
async fn watch_secrets(
    api: Api<Secret>,
    config: watcher::Config,
    cluster: String,
    written: Written,
    relevant: impl Fn(&str, &str) -> bool + Send,
    trigger: mpsc::Sender<()>,
) {
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut listed = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(s)) => {
                let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
                if relevant(&ns, &name) && !is_ours(&written, &written_key(&cluster, &ns, &name), &s) {
                    ask(&trigger, &format!("{cluster}: {ns}/{name} changed"));
                }
            }
            Ok(Event::Delete(s)) => {
                let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
                if relevant(&ns, &name) {
                    written.lock().unwrap_or_else(|p| p.into_inner()).remove(&written_key(&cluster, &ns, &name));
                    ask(&trigger, &format!("{cluster}: {ns}/{name} deleted"));
                }
            }
            Ok(Event::InitDone) => {
                if listed {
                    ask(&trigger, &format!("{cluster}: watch re-listed"));
                }
                listed = true;
            }
            Ok(Event::Init | Event::InitApply(_)) => {}
            Err(e) => tracing::debug!(cluster, error = %e, "watch failed; retrying with backoff"),
        }
    }
}

impl FleetWatch {
    fn watch_config(&self) -> watcher::Config {
        watcher::Config::default().timeout(self.watch_secs)
    }

    /// One task per workload cluster, watching its `cacerts`.
    async fn cluster_watches(&self) -> HashMap<String, tokio::task::JoinHandle<()>> {
        let clients = match crate::clusters::clients_from_remote_secrets(
            &self.mgmt,
            &self.remote_secret_namespace,
            WATCH_CLIENT_TIMEOUT,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the remote secrets; cacerts watches wait for the next change");
                return HashMap::new();
            }
        };
        clients
            .into_iter()
            .filter(|(name, _)| *name != self.mgmt_cluster)
            .map(|(name, client)| {
                let api: Api<Secret> = Api::namespaced(client, "istio-system");
                let config = watcher::Config::default()
                    .timeout(crate::controller::watch_timeout(WATCH_CLIENT_TIMEOUT))
                    .fields("metadata.name=cacerts");
                let task = tokio::spawn(watch_secrets(
                    api,
                    config,
                    name.clone(),
                    self.written.clone(),
                    |_, name| name == "cacerts",
                    self.trigger.clone(),
                ));
                (name, task)
            })
            .collect()
    }

    /// Runs until the process ends.
    pub(crate) async fn run(self) {
        let remote: Api<Secret> = Api::namespaced(self.mgmt.clone(), &self.remote_secret_namespace);
        let config = self.watch_config().labels(crate::clusters::REMOTE_SECRET_SELECTOR);
        let mut remotes = watcher::watcher(remote, config).default_backoff().boxed();
        let mut clusters = self.cluster_watches().await;
        let mut namespaces: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut listed = false;
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                event = remotes.next() => {
                    let changed = match event {
                        None => break,
                        Some(Ok(Event::Apply(_) | Event::Delete(_))) => true,
                        Some(Ok(Event::InitDone)) => std::mem::replace(&mut listed, true),
                        Some(Ok(_)) => false,
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "remote secret watch failed; retrying with backoff");
                            false
                        }
                    };
                    if changed {
                        for (_, task) in clusters.drain() {
                            task.abort();
                        }
                        clusters = self.cluster_watches().await;
                        ask(&self.trigger, "the remote secrets changed");
                    }
                }
                _ = tick.tick() => {
                    // A watch per namespace holding Secrets a policy names (signing CAs live
                    // with their policies), started when a policy first names one there.
                    let wanted: BTreeSet<String> = self
                        .referenced
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .map(|(ns, _)| ns.clone())
                        .collect();
                    for ns in wanted {
                        if namespaces.contains_key(&ns) {
                            continue;
                        }
                        let api: Api<Secret> = Api::namespaced(self.mgmt.clone(), &ns);
                        let referenced = self.referenced.clone();
                        let relevant = move |ns: &str, name: &str| {
                            referenced
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .contains(&(ns.to_owned(), name.to_owned()))
                        };
                        let task = tokio::spawn(watch_secrets(
                            api,
                            self.watch_config(),
                            self.mgmt_cluster.clone(),
                            self.written.clone(),
                            relevant,
                            self.trigger.clone(),
                        ));
                        namespaces.insert(ns, task);
                    }
                }
            }
        }
    }
}
