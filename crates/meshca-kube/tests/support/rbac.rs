//! The RBAC shipped in deploy/, read as the API server would apply it, and a check that every
//! request a test API server logged is allowed by it.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use serde_json::Value;

/// One RBAC rule: namespace (`None`: cluster-wide), API groups, resources, verbs.
pub type Rule = (Option<String>, Vec<String>, Vec<String>, Vec<String>);

/// The rules the files under deploy/ (`files`, relative to it) grant the service account
/// `subject`.
pub fn rules(files: &[&str], subject: &str) -> Vec<Rule> {
    let read = |f: &str| std::fs::read_to_string(format!("{}/../../deploy/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let text = files.iter().map(|f| read(f)).collect::<Vec<_>>().join("\n---\n");
    let docs: Vec<Value> = text.split("\n---\n").map(|d| serde_saphyr::from_str(d).unwrap()).collect();
    let strings =
        |v: &Value| -> Vec<String> { v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect() };
    let ours = |b: &Value| {
        b["subjects"].as_array().unwrap().iter().any(|s| s["name"] == subject && s["kind"] == "ServiceAccount")
    };
    let mut rules = Vec::new();
    for b in docs.iter().filter(|d| (d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding") && ours(d)) {
        let cluster_wide = b["kind"] == "ClusterRoleBinding";
        let ns = (!cluster_wide).then(|| b["metadata"]["namespace"].as_str().unwrap().to_owned());
        let role = docs
            .iter()
            .find(|d| d["kind"] == b["roleRef"]["kind"] && d["metadata"]["name"] == b["roleRef"]["name"])
            .unwrap_or_else(|| panic!("no role for {b}"));
        for r in role["rules"].as_array().unwrap() {
            rules.push((ns.clone(), strings(&r["apiGroups"]), strings(&r["resources"]), strings(&r["verbs"])));
        }
    }
    rules
}

/// Every request in `log` ("METHOD /path?query", from the test API server) is one `rules`
/// allow: a call meshca makes on a real cluster will not be forbidden.
pub fn assert_allows(rules: &[Rule], log: &[String]) {
    for line in log {
        let (method, uri) = line.split_once(' ').unwrap();
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (group, rest) = if segs[0] == "api" { ("", &segs[2..]) } else { (segs[1], &segs[3..]) };
        if rest.is_empty() {
            // Discovery (/apis/<group>/<version>): every authenticated user may read it
            // (system:discovery), no grant needed.
            continue;
        }
        let (ns, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
            _ => (None, rest),
        };
        let resource = match rest {
            [r, _, sub, ..] => format!("{r}/{sub}"),
            [r, ..] => (*r).to_owned(),
            [] => panic!("{line}"),
        };
        let verb = match (method, rest.len()) {
            ("GET", 1) if query.contains("watch=true") || query.contains("watch=1") => "watch",
            ("GET", 1) => "list",
            ("GET", _) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", _) => "delete",
            _ => panic!("{line}"),
        };
        let allowed = rules.iter().any(|(rns, groups, resources, verbs)| {
            (rns.is_none() || rns.as_deref() == ns)
                && groups.iter().any(|g| g == group)
                && resources.contains(&resource)
                && verbs.iter().any(|v| v == verb)
        });
        assert!(allowed, "deploy/ does not allow {verb} {resource} in {ns:?} (group {group:?}): {line}");
    }
}
