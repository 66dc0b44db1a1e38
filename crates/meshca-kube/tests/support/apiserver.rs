//! A small Kubernetes API server for tests: the real HTTP API over a socket, for the real
//! `kube::Client`. It keeps objects in memory with the semantics meshca relies on:
//! resourceVersion on every write, 409 Conflict on a stale resourceVersion, 404, AlreadyExists
//! on create, label selectors, JSON merge patches, the status subresource, `generateName`, and
//! watch streams. Faults (HTTP errors, delays, a concurrent writer) can be injected per request.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// Where an object lives: its collection path (`api/v1/secrets`), namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub collection: String,
    pub namespace: String,
    pub name: String,
}

/// An injected fault.
#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer with this HTTP status (a Kubernetes Status body).
    Status(u16),
    /// Wait this long before answering (to trip client timeouts).
    Delay(Duration),
    /// Another writer changes the object just before this request is served (a PUT then gets 409).
    ConcurrentWrite,
}

#[derive(Clone, Debug)]
pub struct Fault {
    pub method: Option<Method>,
    pub path_contains: String,
    pub kind: FaultKind,
    pub remaining: usize,
}

#[derive(Clone, Debug)]
struct WatchEvent {
    kind: &'static str,
    key: Key,
    rv: u64,
    object: Value,
}

/// How many events the watch cache keeps.
const HISTORY: usize = 20_000;

#[derive(Default)]
struct Inner {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    faults: Vec<Fault>,
    writes: usize,
    log: Vec<String>,
    /// Service account tokens this server vouches for in a TokenReview: token -> (namespace, name).
    tokens: BTreeMap<String, (String, String)>,
    /// The last [`HISTORY`] events, oldest first.
    history: std::collections::VecDeque<WatchEvent>,
    /// The certificates.k8s.io versions that serve ClusterTrustBundles (discovery and routes).
    ctb_versions: Vec<String>,
}

pub struct ServerState {
    inner: Mutex<Inner>,
    events: broadcast::Sender<WatchEvent>,
    /// Watch events handed to a client's stream (a test waits for its change to be delivered).
    delivered: std::sync::atomic::AtomicUsize,
}

/// A running server; dropped with the test's runtime.
#[derive(Clone)]
pub struct ApiServer {
    pub url: String,
    state: Arc<ServerState>,
}

fn status(code: u16, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message.into(), "reason": reason, "code": code,
    });
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn ok(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// A label selector in the API's query syntax: `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
/// `k notin (a,b)`, `k` and `!k`, ANDed (commas inside parentheses belong to the set).
fn labels_match(obj: &Value, selector: &str) -> bool {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    let labels = &obj["metadata"]["labels"];
    let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
    let set = |s: &str| -> Vec<String> {
        s.trim().trim_start_matches('(').trim_end_matches(')').split(',').map(|v| v.trim().to_owned()).collect()
    };
    terms.into_iter().map(str::trim).filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, vs)) = term.split_once(" notin ") {
            return get(k).is_none_or(|v| !set(vs).iter().any(|x| x == v));
        }
        if let Some((k, vs)) = term.split_once(" in ") {
            return get(k).is_some_and(|v| set(vs).iter().any(|x| x == v));
        }
        if let Some((k, v)) = term.split_once("!=") {
            return get(k) != Some(v);
        }
        if let Some((k, v)) = term.split_once('=') {
            return get(k) == Some(v.trim_start_matches('='));
        }
        match term.strip_prefix('!') {
            Some(k) => get(k).is_none() && labels.get(k).is_none(),
            None => labels.get(term).is_some(),
        }
    })
}

/// Discovery of a certificates.k8s.io version (an APIResourceList), or `None` when the server
/// does not serve it.
fn certificates_discovery(version: &str, ctb: &[String]) -> Option<Value> {
    let mut resources = match version {
        "v1" => vec!["certificatesigningrequests"],
        "v1beta1" => vec!["podcertificaterequests"],
        "v1alpha1" => vec![],
        _ => return None,
    };
    if ctb.iter().any(|v| v == version) {
        resources.push("clustertrustbundles");
    } else if resources.is_empty() {
        return None;
    }
    let list: Vec<Value> = resources
        .iter()
        .map(|r| json!({"name": r, "singularName": "", "namespaced": false, "kind": "", "verbs": ["get", "list"]}))
        .collect();
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("certificates.k8s.io/{version}"), "resources": list}),
    )
}

struct Route {
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => (format!("api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("apis/{g}/{v}"), rest),
        _ => return None,
    };
    let s = |x: &&str| Some((*x).to_owned());
    Some(match rest {
        ["namespaces", ns, res] => {
            Route { collection: format!("{prefix}/{res}"), namespace: s(ns), name: None, sub: None }
        }
        ["namespaces", ns, res, name] => {
            Route { collection: format!("{prefix}/{res}"), namespace: s(ns), name: s(name), sub: None }
        }
        ["namespaces", ns, res, name, sub] => {
            Route { collection: format!("{prefix}/{res}"), namespace: s(ns), name: s(name), sub: s(sub) }
        }
        [res] => Route { collection: format!("{prefix}/{res}"), namespace: None, name: None, sub: None },
        // Cluster-scoped objects (CertificateSigningRequests) and their subresources.
        [res, name] if *res != "namespaces" => {
            Route { collection: format!("{prefix}/{res}"), namespace: None, name: s(name), sub: None }
        }
        [res, name, sub] if *res != "namespaces" => {
            Route { collection: format!("{prefix}/{res}"), namespace: None, name: s(name), sub: s(sub) }
        }
        _ => return None,
    })
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Collections whose objects have a status subresource (writes to the main resource keep it).
fn has_status_subresource(collection: &str) -> bool {
    collection.ends_with("/roottrustpolicies")
        || collection.ends_with("/deployments")
        || collection.ends_with("/certificatesigningrequests")
        || collection.ends_with("/podcertificaterequests")
}

/// The API server's rules for a PodCertificateRequest's status (certificates.k8s.io/v1beta1
/// validation): the chain never changed once set, and set together with notBefore, notAfter
/// and beginRefreshAt, for at least an hour; at most one of Issued, Denied and Failed.
fn pcr_status_problem(old: &Value, new: &Value) -> Option<String> {
    let chain = |v: &Value| v["status"]["certificateChain"].as_str().map(str::to_owned).filter(|c| !c.is_empty());
    if let Some(a) = chain(old) {
        if Some(&a) != chain(new).as_ref() {
            return Some("status.certificateChain: immutable once set".into());
        }
    }
    let terminal = new["status"]["conditions"].as_array().map_or(0, |cs| {
        cs.iter().filter(|c| ["Issued", "Denied", "Failed"].contains(&c["type"].as_str().unwrap_or(""))).count()
    });
    if terminal > 1 {
        return Some("status.conditions: at most one of Issued, Denied, Failed".into());
    }
    if chain(old).is_none() && chain(new).is_some() {
        let t = |f: &str| {
            new["status"][f]
                .as_str()
                .and_then(|v| time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).ok())
        };
        let (Some(nb), Some(na), Some(_)) = (t("notBefore"), t("notAfter"), t("beginRefreshAt")) else {
            return Some("status: notBefore, notAfter and beginRefreshAt are set with certificateChain".into());
        };
        if na - nb < time::Duration::hours(1) {
            return Some("status.notAfter: the certificate must live at least an hour".into());
        }
    }
    None
}

/// A field selector (`spec.signerName=x,metadata.name=y`): each dotted path equals its value.
fn fields_match(obj: &Value, selector: Option<&String>) -> bool {
    selector.is_none_or(|sel| {
        sel.split(',').filter(|t| !t.is_empty()).all(|term| {
            let Some((path, want)) = term.split_once('=') else { return false };
            let got = path.split('.').try_fold(obj, |v, k| v.get(k));
            got.and_then(Value::as_str) == Some(want)
        })
    })
}

/// The API server's rules for a CSR's status (certificates.k8s.io/v1 validation): a
/// certificate only on an approved, not denied or failed request, and never changed once set.
fn csr_status_problem(old: &Value, new: &Value) -> Option<String> {
    let cert = |v: &Value| v["status"]["certificate"].as_str().map(str::to_owned).filter(|c| !c.is_empty());
    let has = |v: &Value, t: &str| {
        v["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == t && c["status"] == "True"))
    };
    match (cert(old), cert(new)) {
        (Some(a), b) if Some(&a) != b.as_ref() => {
            Some("status.certificate: updates may not modify existing certificate content".into())
        }
        (None, Some(_)) if !has(new, "Approved") => Some("status.certificate: the request is not approved".into()),
        (None, Some(_)) if has(new, "Denied") || has(new, "Failed") => {
            Some("status.certificate: the request is denied or failed".into())
        }
        _ => None,
    }
}

impl ServerState {
    fn bump(inner: &mut Inner, obj: &mut Value) -> u64 {
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(inner.rv.to_string());
        inner.rv
    }

    fn publish(&self, kind: &'static str, key: &Key, rv: u64, object: &Value) {
        let ev = WatchEvent { kind, key: key.clone(), rv, object: object.clone() };
        // The watch cache: a watch resumed from a resourceVersion is replayed what came after it
        // (kube-runtime resumes every watch the server ends), as the API server does.
        let mut inner = self.inner.lock().unwrap();
        inner.history.push_back(ev.clone());
        if inner.history.len() > HISTORY {
            inner.history.pop_front();
        }
        // Sent under the lock, so the buffer and the live stream agree on the order.
        let _ = self.events.send(ev);
    }
}

async fn handle(State(st): State<Arc<ServerState>>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    // Faults first.
    let fault = {
        let mut inner = st.inner.lock().unwrap();
        inner.log.push(format!("{method} {uri}"));
        let found = inner.faults.iter_mut().find(|f| {
            f.remaining > 0 && f.method.as_ref().is_none_or(|m| *m == method) && path.contains(&f.path_contains)
        });
        found.map(|f| {
            f.remaining -= 1;
            f.kind.clone()
        })
    };
    match fault {
        Some(FaultKind::Status(code)) => return status(code, "InternalError", format!("injected fault on {path}")),
        Some(FaultKind::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultKind::ConcurrentWrite) => {
            if let Some(r) = route(&path) {
                let key = Key {
                    collection: r.collection,
                    namespace: r.namespace.unwrap_or_default(),
                    name: r.name.unwrap_or_default(),
                };
                let mut inner = st.inner.lock().unwrap();
                if let Some(mut obj) = inner.objects.get(&key).cloned() {
                    obj["metadata"]["annotations"]["other-writer"] = json!("was here");
                    let rv = ServerState::bump(&mut inner, &mut obj);
                    inner.objects.insert(key.clone(), obj.clone());
                    drop(inner);
                    st.publish("MODIFIED", &key, rv, &obj);
                }
            }
        }
        None => {}
    }
    if method == Method::POST && path == "/apis/authentication.k8s.io/v1/tokenreviews" {
        return token_review(&st, &body);
    }
    if let ["apis", "certificates.k8s.io", version] = path.trim_matches('/').split('/').collect::<Vec<_>>()[..] {
        let served = st.inner.lock().unwrap().ctb_versions.clone();
        return match certificates_discovery(version, &served) {
            Some(list) => ok(200, &list),
            None => status(404, "NotFound", format!("the server could not find the requested resource ({path})")),
        };
    }
    if let ["apis", "certificates.k8s.io", version, "clustertrustbundles", ..] =
        path.trim_matches('/').split('/').collect::<Vec<_>>()[..]
    {
        if !st.inner.lock().unwrap().ctb_versions.iter().any(|v| v == version) {
            return status(404, "NotFound", format!("the server could not find the requested resource ({path})"));
        }
    }
    let Some(r) = route(&path) else { return status(404, "NotFound", format!("no route for {path}")) };
    let q = query(&uri);
    let body: Value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
    match (method.clone(), &r.name) {
        (Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => watch(st, r, q),
        (Method::GET, None) => list(&st, &r, &q),
        (Method::GET, Some(name)) => {
            let key = Key { collection: r.collection, namespace: r.namespace.unwrap_or_default(), name: name.clone() };
            match st.inner.lock().unwrap().objects.get(&key) {
                Some(obj) => ok(200, obj),
                None => status(404, "NotFound", format!("{} \"{name}\" not found", key.collection)),
            }
        }
        (Method::POST, None) => create(&st, r, body),
        (Method::PUT, Some(_)) => replace(&st, r, body),
        (Method::PATCH, Some(_)) => patch(&st, r, body),
        (Method::DELETE, Some(name)) => {
            let key = Key { collection: r.collection, namespace: r.namespace.unwrap_or_default(), name: name.clone() };
            let mut inner = st.inner.lock().unwrap();
            inner.writes += 1;
            // DeleteOptions.preconditions: deleted only as the client read it.
            if let (Some(want), Some(obj)) =
                (body["preconditions"]["resourceVersion"].as_str(), inner.objects.get(&key))
            {
                if obj["metadata"]["resourceVersion"].as_str() != Some(want) {
                    return status(
                        409,
                        "Conflict",
                        format!("Precondition failed: ResourceVersion in precondition: {want}"),
                    );
                }
            }
            match inner.objects.remove(&key) {
                Some(obj) => {
                    let rv = inner.rv + 1;
                    inner.rv = rv;
                    drop(inner);
                    st.publish("DELETED", &key, rv, &obj);
                    ok(200, &obj)
                }
                None => status(404, "NotFound", format!("\"{name}\" not found")),
            }
        }
        _ => status(405, "MethodNotAllowed", format!("{method} {path}")),
    }
}

fn list(st: &ServerState, r: &Route, q: &BTreeMap<String, String>) -> Response {
    let inner = st.inner.lock().unwrap();
    let selector = q.get("labelSelector").cloned().unwrap_or_default();
    let fields = q.get("fieldSelector").cloned();
    let items: Vec<Value> = inner
        .objects
        .iter()
        .filter(|(k, _)| k.collection == r.collection && r.namespace.as_ref().is_none_or(|ns| *ns == k.namespace))
        .filter(|(_, v)| labels_match(v, &selector) && fields_match(v, fields.as_ref()))
        .map(|(_, v)| v.clone())
        .collect();
    ok(
        200,
        &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items}),
    )
}

/// The watch event that ends a watch whose resourceVersion is older than the watch cache:
/// 410 Gone, after which a client lists again.
fn gone_status() -> Value {
    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version", "reason": "Expired", "code": 410}})
}

fn watch(st: Arc<ServerState>, r: Route, q: BTreeMap<String, String>) -> Response {
    let since: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let selector = q.get("labelSelector").cloned().unwrap_or_default();
    let fields = q.get("fieldSelector").cloned();
    let timeout = Duration::from_secs(q.get("timeoutSeconds").and_then(|v| v.parse().ok()).unwrap_or(290));
    // Subscribed under the lock that orders publishing: the backlog (events after `since` in
    // the watch cache) and the live stream meet without a gap or a repeat.
    let (rx, backlog, expired) = {
        let inner = st.inner.lock().unwrap();
        let rx = st.events.subscribe();
        let backlog: std::collections::VecDeque<WatchEvent> = if since == 0 {
            Default::default()
        } else {
            inner.history.iter().filter(|e| e.rv > since).cloned().collect()
        };
        let expired =
            since > 0 && inner.history.len() >= HISTORY && inner.history.front().is_some_and(|e| e.rv > since + 1);
        (rx, backlog, expired)
    };
    let deadline = tokio::time::Instant::now() + timeout;
    // The state: the backlog and the subscription, or None once the watch has ended with an error.
    let start = if expired { None } else { Some((backlog, rx)) };
    let gone_first = expired;
    let stream = futures::stream::unfold((start, gone_first), move |(state, gone_first)| {
        let (r_coll, r_ns, selector, fields) =
            (r.collection.clone(), r.namespace.clone(), selector.clone(), fields.clone());
        let st = st.clone();
        async move {
            if gone_first {
                return Some((Ok::<_, Infallible>(Bytes::from(format!("{}\n", gone_status()))), (None, false)));
            }
            let (mut backlog, mut rx) = state?;
            loop {
                let next = match backlog.pop_front() {
                    Some(ev) => Ok(Ok(ev)),
                    None => tokio::time::timeout_at(deadline, rx.recv()).await,
                };
                let ev = match next {
                    Err(_) => return None,
                    Ok(Err(broadcast::error::RecvError::Closed)) => return None,
                    // A watcher too slow for the event buffer: as the API server does when a
                    // watch falls behind its cache, the watch ends with 410 Gone and the client
                    // lists again (never a silent gap).
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                        let line = format!("{}\n", gone_status());
                        return Some((Ok::<_, Infallible>(Bytes::from(line)), (None, false)));
                    }
                    Ok(Ok(ev)) => ev,
                };
                if ev.rv <= since
                    || ev.key.collection != r_coll
                    || r_ns.as_ref().is_some_and(|ns| *ns != ev.key.namespace)
                    || !labels_match(&ev.object, &selector)
                    || !fields_match(&ev.object, fields.as_ref())
                {
                    continue;
                }
                let line = format!("{}\n", json!({"type": ev.kind, "object": ev.object}));
                st.delivered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return Some((Ok::<_, Infallible>(Bytes::from(line)), (Some((backlog, rx)), false)));
            }
        }
    });
    Response::builder().status(200).header("content-type", "application/json").body(Body::from_stream(stream)).unwrap()
}

fn create(st: &ServerState, r: Route, mut obj: Value) -> Response {
    let ns = r.namespace.unwrap_or_default();
    let mut inner = st.inner.lock().unwrap();
    inner.writes += 1;
    let name = match obj["metadata"]["name"].as_str() {
        Some(n) => n.to_owned(),
        None => match obj["metadata"]["generateName"].as_str() {
            Some(prefix) => format!("{prefix}{:05x}", inner.rv + 1),
            None => return status(422, "Invalid", "metadata.name or generateName is required"),
        },
    };
    let key = Key { collection: r.collection, namespace: ns.clone(), name: name.clone() };
    if inner.objects.contains_key(&key) {
        return status(409, "AlreadyExists", format!("{} \"{name}\" already exists", key.collection));
    }
    obj["metadata"]["name"] = json!(name);
    obj["metadata"]["namespace"] = json!(ns);
    obj["metadata"]["uid"] = json!(format!("uid-{}", inner.rv + 1));
    obj["metadata"]["generation"] = json!(1);
    let created = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    obj["metadata"]["creationTimestamp"] =
        json!(created.format(&time::format_description::well_known::Rfc3339).unwrap());
    let rv = ServerState::bump(&mut inner, &mut obj);
    inner.objects.insert(key.clone(), obj.clone());
    drop(inner);
    st.publish("ADDED", &key, rv, &obj);
    ok(201, &obj)
}

/// Stores `new` in place of `old`, keeping server-owned metadata, bumping generation when the
/// spec changed and keeping status when the collection has a status subresource.
fn store_update(st: &ServerState, key: Key, old: &Value, mut new: Value, status_only: bool) -> Response {
    let mut inner = st.inner.lock().unwrap();
    inner.writes += 1;
    if status_only {
        let mut updated = old.clone();
        updated["status"] = new["status"].clone();
        new = updated;
    } else {
        if has_status_subresource(&key.collection) {
            new["status"] = old["status"].clone();
        }
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        let bump = if old.get("spec") != new.get("spec") { 1 } else { 0 };
        new["metadata"]["generation"] = json!(generation + bump);
    }
    for f in ["uid", "creationTimestamp", "name", "namespace"] {
        new["metadata"][f] = old["metadata"][f].clone();
    }
    let rv = ServerState::bump(&mut inner, &mut new);
    inner.objects.insert(key.clone(), new.clone());
    drop(inner);
    st.publish("MODIFIED", &key, rv, &new);
    ok(200, &new)
}

fn replace(st: &ServerState, r: Route, obj: Value) -> Response {
    let key =
        Key { collection: r.collection, namespace: r.namespace.unwrap_or_default(), name: r.name.unwrap_or_default() };
    let Some(old) = st.inner.lock().unwrap().objects.get(&key).cloned() else {
        return status(404, "NotFound", format!("\"{}\" not found", key.name));
    };
    if let Some(want) = obj["metadata"]["resourceVersion"].as_str() {
        if Some(want) != old["metadata"]["resourceVersion"].as_str() {
            return status(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on \"{}\": the object has been modified; please apply your changes to the latest version and try again", key.name),
            );
        }
    }
    let status_only = matches!(r.sub.as_deref(), Some("status" | "approval"));
    if status_only && key.collection.ends_with("/certificatesigningrequests") {
        if let Some(problem) = csr_status_problem(&old, &obj) {
            return status(422, "Invalid", problem);
        }
    }
    if status_only && key.collection.ends_with("/podcertificaterequests") {
        if let Some(problem) = pcr_status_problem(&old, &obj) {
            return status(422, "Invalid", problem);
        }
    }
    store_update(st, key, &old, obj, status_only)
}

fn patch(st: &ServerState, r: Route, patch: Value) -> Response {
    let key =
        Key { collection: r.collection, namespace: r.namespace.unwrap_or_default(), name: r.name.unwrap_or_default() };
    let Some(old) = st.inner.lock().unwrap().objects.get(&key).cloned() else {
        return status(404, "NotFound", format!("\"{}\" not found", key.name));
    };
    let mut new = old.clone();
    merge(&mut new, &patch);
    store_update(st, key, &old, new, r.sub.as_deref() == Some("status"))
}

/// authentication.k8s.io/v1 TokenReview, as the API server answers it (201, status.authenticated
/// and the service account's user for a token it issued; authenticated false otherwise).
fn token_review(st: &ServerState, body: &Bytes) -> Response {
    let review: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let known = st.inner.lock().unwrap().tokens.get(token).cloned();
    let status = match known {
        Some((ns, name)) => json!({
            "authenticated": true,
            "user": {"username": format!("system:serviceaccount:{ns}:{name}"), "uid": format!("uid-{name}"),
                     "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}")]},
        }),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    ok(201, &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status}))
}

impl ApiServer {
    /// A service account token (a JWT with the legacy claims; its signature is not checked by
    /// anyone but this server, through TokenReview) this server vouches for.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        use base64::Engine;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/service-account.name": name,
            "kubernetes.io/serviceaccount/service-account.uid": format!("uid-{name}"),
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
        });
        let n = self.state.inner.lock().unwrap().tokens.len();
        let token = format!("{}.{}.c2lnLXtufQ{n}", b64(&json!({"alg": "RS256", "typ": "JWT"})), b64(&claims));
        self.state.inner.lock().unwrap().tokens.insert(token.clone(), (namespace.to_owned(), name.to_owned()));
        token
    }

    /// Starts a server on 127.0.0.1 (a free port) on the current runtime.
    pub async fn start() -> ApiServer {
        let (events, _) = broadcast::channel(4096);
        let inner = Inner { ctb_versions: vec!["v1beta1".into()], ..Inner::default() };
        let state = Arc::new(ServerState { inner: Mutex::new(inner), events, delivered: Default::default() });
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ApiServer { url, state }
    }

    /// A kube client for this server, with short timeouts.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().unwrap());
        config.connect_timeout = Some(Duration::from_secs(2));
        config.read_timeout = Some(Duration::from_secs(5));
        kube::Client::try_from(config).unwrap()
    }

    /// A kubeconfig (YAML) whose one context reaches this server.
    pub fn kubeconfig(&self, name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {}\ncontexts:\n- name: {name}\n  \
             context:\n    cluster: {name}\n    user: {name}\ncurrent-context: {name}\nusers:\n- name: {name}\n  user:\n    token: test\n",
            self.url
        )
    }

    pub fn get(&self, collection: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = Key { collection: collection.into(), namespace: namespace.into(), name: name.into() };
        self.state.inner.lock().unwrap().objects.get(&key).cloned()
    }

    /// Puts an object directly (as another writer would), bumping its resourceVersion.
    pub fn put(&self, collection: &str, namespace: &str, mut obj: Value) {
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let key = Key { collection: collection.into(), namespace: namespace.into(), name };
        let mut inner = self.state.inner.lock().unwrap();
        obj["metadata"]["namespace"] = json!(namespace);
        if obj["metadata"]["generation"].is_null() {
            obj["metadata"]["generation"] = json!(1);
        }
        let rv = ServerState::bump(&mut inner, &mut obj);
        let existed = inner.objects.insert(key.clone(), obj.clone()).is_some();
        drop(inner);
        self.state.publish(if existed { "MODIFIED" } else { "ADDED" }, &key, rv, &obj);
    }

    /// Deletes an object directly (as another writer would), publishing the DELETED event.
    pub fn delete(&self, collection: &str, namespace: &str, name: &str) {
        let key = Key { collection: collection.into(), namespace: namespace.into(), name: name.into() };
        let mut inner = self.state.inner.lock().unwrap();
        if let Some(obj) = inner.objects.remove(&key) {
            let rv = inner.rv + 1;
            inner.rv = rv;
            drop(inner);
            self.state.publish("DELETED", &key, rv, &obj);
        }
    }

    pub fn list(&self, collection: &str) -> Vec<Value> {
        let inner = self.state.inner.lock().unwrap();
        inner.objects.iter().filter(|(k, _)| k.collection == collection).map(|(_, v)| v.clone()).collect()
    }

    pub fn fault(&self, method: Option<Method>, path_contains: &str, kind: FaultKind, times: usize) {
        self.state.inner.lock().unwrap().faults.push(Fault {
            method,
            path_contains: path_contains.into(),
            kind,
            remaining: times,
        });
    }

    /// The certificates.k8s.io versions that serve ClusterTrustBundles (default `v1beta1`, as
    /// Kubernetes 1.33 to 1.35; none: a server without the API).
    pub fn serve_cluster_trust_bundles(&self, versions: &[&str]) {
        self.state.inner.lock().unwrap().ctb_versions = versions.iter().map(|v| (*v).to_owned()).collect();
    }

    pub fn clear_faults(&self) {
        self.state.inner.lock().unwrap().faults.clear();
    }

    /// How many watch events the server has handed to clients' streams.
    pub fn delivered(&self) -> usize {
        self.state.delivered.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many writes (POST, PUT, PATCH, DELETE) the server has served.
    pub fn writes(&self) -> usize {
        self.state.inner.lock().unwrap().writes
    }

    pub fn log(&self) -> Vec<String> {
        self.state.inner.lock().unwrap().log.clone()
    }
}

/// The collection paths used in tests.
pub const SECRETS: &str = "api/v1/secrets";
pub const CONFIGMAPS: &str = "api/v1/configmaps";
pub const DEPLOYMENTS: &str = "apis/apps/v1/deployments";
pub const LEASES: &str = "apis/coordination.k8s.io/v1/leases";
pub const EVENTS: &str = "apis/events.k8s.io/v1/events";
pub const POLICIES: &str = "apis/meshca.dev/v1alpha1/roottrustpolicies";
pub const NAMESPACES: &str = "api/v1/namespaces";
