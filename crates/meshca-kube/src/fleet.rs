//! The controller's watches beyond its policies: in every workload cluster the
//! `istio-system/cacerts` Secret (a field selector on its name), and in the management cluster
//! the remote-secret set (clusters added or removed) and the Secrets the policies name (signing,
//! passive and incoming CAs). A change that is not meshca's own write asks for a pass at once;
//! the planned requeue stays as the backstop. A workload cluster's `cacerts` changing, or its
//! remote secret added, edited or removed, asks for that cluster only (recorded in `Changes`);
//! a Secret a policy names, or a re-list of the remote secrets, for every cluster.
//!
//! Each watch is kube-runtime's watcher: a watch that ends (the server's timeoutSeconds, a
//! dropped connection) is resumed from its resourceVersion without a re-list, and nothing is
//! triggered by the resumption itself. The controller's own writes come back as events too;
//! they are recognised by their data's hash ([`crate::store::Written`]) and ignored, so a pass
//! that writes does not cause another.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// What the watches saw change, numbered, so each policy's pass can ask what changed since its
/// last one: the workload clusters whose `cacerts` or remote secret changed (a pass over those
/// is enough), or something that needs every cluster (a Secret a policy names, a re-list).
/// Bounded by the number of clusters.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// The number of the last change recorded (0: none).
    last: u64,
    /// Each cluster's last `cacerts` change.
    clusters: BTreeMap<String, u64>,
    /// The last change that needs every cluster.
    fleet: u64,
}

/// What a pass must cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every workload cluster.
    Fleet,
    /// Only these, whose `cacerts` or remote secret changed or which joined the fleet (empty:
    /// clusters only left it).
    Clusters(Vec<String>),
}

impl Changes {
    /// The number of the last change recorded: a pass that starts now covers every change up
    /// to it.
    pub(crate) fn last(&self) -> u64 {
        self.last
    }

    /// Records a change of `cluster`'s `cacerts`, or (`None`) one that needs every cluster.
    pub(crate) fn record(&mut self, cluster: Option<&str>) {
        self.last += 1;
        match cluster {
            Some(c) => {
                self.clusters.insert(c.to_owned(), self.last);
            }
            None => self.fleet = self.last,
        }
    }

    /// What changed after change `since`: every cluster, the clusters whose `cacerts` changed,
    /// or nothing (`None`).
    pub(crate) fn since(&self, since: u64) -> Option<Scope> {
        if self.fleet > since {
            return Some(Scope::Fleet);
        }
        let changed: Vec<String> = self.clusters.iter().filter(|(_, &n)| n > since).map(|(c, _)| c.clone()).collect();
        (!changed.is_empty()).then_some(Scope::Clusters(changed))
    }
}

/// The running `cacerts` watches, by cluster: the kubeconfig each was started with, and its task.
type Watches = HashMap<String, (Vec<u8>, tokio::task::JoinHandle<()>)>;

/// The change log the watches write and the passes read.
pub(crate) type ChangeLog = Arc<Mutex<Changes>>;

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
    /// Where each change is recorded before a pass is asked for.
    pub(crate) changes: ChangeLog,
}

/// Where a watch reports a change: the log, and the trigger.
#[derive(Clone)]
struct Ask {
    changes: ChangeLog,
    trigger: mpsc::Sender<()>,
}

impl Ask {
    /// Records a change of `cluster`'s `cacerts` (or, `None`, one that needs every cluster)
    /// and asks for a pass.
    fn ask(&self, cluster: Option<&str>, why: &str) {
        tracing::info!(why, "change seen: reconciling");
        self.changes.lock().unwrap_or_else(|p| p.into_inner()).record(cluster);
        // A pass already asked for covers this change too: it reads the log when it starts.
        let _ = self.trigger.try_send(());
    }

    /// Records a change of each of `clusters` and asks for one pass (none when empty).
    fn ask_clusters(&self, clusters: &BTreeSet<String>, why: &str) {
        if clusters.is_empty() {
            return;
        }
        tracing::info!(why, clusters = %meshca::list_bounded(clusters, 10), "change seen: reconciling");
        let mut log = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        for c in clusters {
            log.record(Some(c));
        }
        drop(log);
        let _ = self.trigger.try_send(());
    }
}

fn is_ours(written: &Written, key: &str, s: &Secret) -> bool {
    let data = s.data.iter().flatten().map(|(k, v)| (k.as_str(), v.0.as_slice()));
    written.lock().unwrap_or_else(|p| p.into_inner()).get(key) == Some(&data_hash(data))
}

/// Watches one Secret stream, asking for a pass on every change someone else made: of
/// `cluster` only when `scoped` (its `cacerts`), else of every cluster. The first list is not a
/// change (the controller's first pass reads it all); a later re-list is, as a deletion may
/// have happened while the watch was down.
async fn watch_secrets(
    api: Api<Secret>,
    config: watcher::Config,
    cluster: String,
    scoped: bool,
    written: Written,
    relevant: impl Fn(&str, &str) -> bool + Send,
    asks: Ask,
) {
    let scope = scoped.then_some(cluster.as_str());
    let ask = |why: &str| asks.ask(scope, why);
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut listed = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(s)) => {
                let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
                if relevant(&ns, &name) && !is_ours(&written, &written_key(&cluster, &ns, &name), &s) {
                    ask(&format!("{cluster}: {ns}/{name} changed"));
                }
            }
            Ok(Event::Delete(s)) => {
                let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
                if relevant(&ns, &name) {
                    written.lock().unwrap_or_else(|p| p.into_inner()).remove(&written_key(&cluster, &ns, &name));
                    ask(&format!("{cluster}: {ns}/{name} deleted"));
                }
            }
            Ok(Event::InitDone) => {
                if listed {
                    ask(&format!("{cluster}: watch re-listed"));
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

    fn asks(&self) -> Ask {
        Ask { changes: self.changes.clone(), trigger: self.trigger.clone() }
    }

    /// One task per workload cluster, watching its `cacerts`: the watches in `running` whose
    /// cluster's kubeconfig is unchanged go on (no re-list), the others are replaced or, for a
    /// cluster no longer listed, stopped. When the remote secrets cannot be read, `running`
    /// goes on as it is.
    async fn cluster_watches(&self, cache: &crate::clusters::ClientCache, mut running: Watches) -> Watches {
        let clients = match crate::clusters::clients_from_remote_secrets_cached(
            &self.mgmt,
            &self.remote_secret_namespace,
            WATCH_CLIENT_TIMEOUT,
            cache,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the remote secrets; cacerts watches wait for the next change");
                return running;
            }
        };
        let watches = clients
            .into_iter()
            .filter(|(name, _)| *name != self.mgmt_cluster)
            .map(|(name, client)| {
                let kubeconfig = cache.kubeconfig_of(&name).unwrap_or_default();
                if let Some((was, task)) = running.remove(&name) {
                    if was == kubeconfig && !task.is_finished() {
                        return (name, (kubeconfig, task));
                    }
                    task.abort();
                }
                let api: Api<Secret> = Api::namespaced(client, "istio-system");
                let config = watcher::Config::default()
                    .timeout(crate::controller::watch_timeout(WATCH_CLIENT_TIMEOUT))
                    .fields("metadata.name=cacerts");
                let task = tokio::spawn(watch_secrets(
                    api,
                    config,
                    name.clone(),
                    true,
                    self.written.clone(),
                    |_, name| name == "cacerts",
                    self.asks(),
                ));
                (name, (kubeconfig, task))
            })
            .collect();
        for (_, (_, task)) in running {
            task.abort();
        }
        watches
    }

    /// Runs until the process ends.
    pub(crate) async fn run(self) {
        let remote: Api<Secret> = Api::namespaced(self.mgmt.clone(), &self.remote_secret_namespace);
        let config = self.watch_config().labels(crate::clusters::REMOTE_SECRET_SELECTOR);
        let mut remotes = watcher::watcher(remote, config).default_backoff().boxed();
        let cache = crate::clusters::ClientCache::default();
        let mut clusters = self.cluster_watches(&cache, Watches::new()).await;
        let mut namespaces: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut listed = false;
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                event = remotes.next() => {
                    // The clusters an added, edited or deleted remote secret names (its data's
                    // keys); a re-list may have missed deletions: every cluster.
                    let changed: Option<Option<BTreeSet<String>>> = match event {
                        None => break,
                        Some(Ok(Event::Apply(s) | Event::Delete(s))) => {
                            Some(Some(s.data.iter().flatten().map(|(k, _)| k.clone()).collect()))
                        }
                        Some(Ok(Event::InitDone)) => std::mem::replace(&mut listed, true).then_some(None),
                        Some(Ok(_)) => None,
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "remote secret watch failed; retrying with backoff");
                            None
                        }
                    };
                    if let Some(named) = changed {
                        let before: BTreeSet<String> = clusters.keys().cloned().collect();
                        clusters = self.cluster_watches(&cache, std::mem::take(&mut clusters)).await;
                        match named {
                            Some(mut named) => {
                                // A key removed from a secret shows only as a cluster gone.
                                let after: BTreeSet<String> = clusters.keys().cloned().collect();
                                named.extend(before.symmetric_difference(&after).cloned());
                                named.remove(&self.mgmt_cluster);
                                self.asks().ask_clusters(&named, "a remote secret changed");
                            }
                            None => self.asks().ask(None, "the remote secrets were listed again"),
                        }
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
                            false,
                            self.written.clone(),
                            relevant,
                            self.asks(),
                        ));
                        namespaces.insert(ns, task);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_covers_the_clusters_changed_since_the_last_or_the_fleet() {
        let mut c = Changes::default();
        assert_eq!(c.since(0), None, "nothing changed");
        c.record(Some("east"));
        let after_east = c.last();
        c.record(Some("west"));
        c.record(Some("east"));
        assert_eq!(c.since(0), Some(Scope::Clusters(vec!["east".into(), "west".into()])));
        assert_eq!(c.since(after_east), Some(Scope::Clusters(vec!["east".into(), "west".into()])));
        let seen = c.last();
        assert_eq!(c.since(seen), None, "a pass that saw them all has nothing left");
        c.record(None);
        c.record(Some("east"));
        assert_eq!(c.since(seen), Some(Scope::Fleet), "a fleet change covers the clusters' too");
        assert_eq!(c.since(c.last()), None);
        assert_eq!(c.clusters.len(), 2, "one entry per cluster, however many changes");
    }
}
