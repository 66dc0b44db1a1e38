//! The inspect tree: certificates of a file drawn as a forest, each under its issuer, that
//! reads at a glance in a terminal (the data is meshca-ops' `describe`).

use meshca::Certificate;
use meshca_ops::describe::{issuers, CertView};

/// How deep the drawing indents; deeper certificates are drawn at this depth with their depth
/// written out, so output stays linear in the input however long a chain is.
const MAX_DRAWN_DEPTH: usize = 8;

/// Writes `certs` (with `views[i]` the view of `certs[i]`) as a forest: each root, or each
/// certificate whose issuer is not in the file, then what it issued beneath it, in file order.
pub(crate) fn write_tree(out: &mut String, certs: &[Certificate], views: &[CertView], indent: &str) {
    let parents = issuers(certs);
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); certs.len()];
    for (i, p) in parents.iter().enumerate() {
        if let Some(p) = p {
            children[*p].push(i);
        }
    }
    let mut drawn = vec![false; certs.len()];
    // Tops first; then whatever is left (certificates on an issuer cycle, as cross-signing makes).
    let tops = (0..certs.len()).filter(|&i| parents[i].is_none()).chain(0..certs.len());
    for top in tops {
        if drawn[top] {
            continue;
        }
        let mut stack = vec![(top, 0usize)];
        while let Some((i, depth)) = stack.pop() {
            if std::mem::replace(&mut drawn[i], true) {
                continue;
            }
            if let Some(v) = views.get(i) {
                write_one(out, v, depth, indent);
            }
            stack.extend(children[i].iter().rev().map(|&c| (c, depth + 1)));
        }
    }
}

fn write_one(out: &mut String, v: &CertView, depth: usize, indent: &str) {
    let shown = depth.min(MAX_DRAWN_DEPTH);
    let pad = if shown > 0 { format!("{}└─ ", "   ".repeat(shown - 1)) } else { String::new() };
    let deep = if depth > MAX_DRAWN_DEPTH { format!("(depth {depth}) ") } else { String::new() };
    let cont = "   ".repeat(shown);
    let ca = match (v.ca, v.pathlen) {
        (true, Some(p)) => format!("CA pathlen {p}"),
        (true, None) => "CA".into(),
        (false, _) => "not a CA".into(),
    };
    out.push_str(&format!("{indent}{pad}{deep}{}  [{}]\n", v.subject, v.role));
    let d = format!("{indent}{cont}   ");
    if !v.sans.is_empty() {
        out.push_str(&format!("{d}SAN       {}\n", v.sans.join(", ")));
    }
    out.push_str(&format!("{d}issuer    {}\n", v.issuer));
    out.push_str(&format!("{d}key       {}, {ca}, {}\n", v.key, v.signature_algorithm));
    if !v.key_usage.is_empty() || !v.extended_key_usage.is_empty() {
        let mut u = v.key_usage.join(" ");
        if !v.extended_key_usage.is_empty() {
            u.push_str(&format!("; EKU {}", v.extended_key_usage.join(" ")));
        }
        out.push_str(&format!("{d}usage     {u}\n"));
    }
    let when = match v.status {
        "valid" => format!("{} left", v.remaining),
        "expired" => format!("EXPIRED {} ago", v.remaining.trim_start_matches('-')),
        _ => "NOT YET VALID".into(),
    };
    out.push_str(&format!(
        "{d}valid     {} .. {} ({when})\n",
        meshca::format_time(v.not_before),
        meshca::format_time(v.not_after)
    ));
    out.push_str(&format!("{d}serial    {}\n{d}sha256    {}\n", v.serial, v.sha256));
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshca::{IntermediateParams, RootParams, SigningCa};
    use meshca_ops::describe::{cert_view, issuers};
    use time::OffsetDateTime;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    fn draw(certs: &[Certificate]) -> String {
        let views: Vec<_> = certs.iter().map(|c| cert_view(c, now())).collect();
        let mut out = String::new();
        write_tree(&mut out, certs, &views, "");
        out
    }

    #[test]
    fn same_subject_roots_are_separate_roots_and_a_chain_is_a_tree() {
        let rng = &mut meshca::OsRng;
        let a = SigningCa::generate_root(&RootParams::default(), rng, now()).expect("issued");
        let b = SigningCa::generate_root(&RootParams::default(), rng, now()).expect("issued");
        let inter = b.issue_intermediate(&IntermediateParams::new("c1"), rng, now()).expect("issued").value;
        // The chain file order: the intermediate, then both roots of the same name.
        let certs = vec![inter.ca_cert().clone(), a.bundle().root().clone(), b.bundle().root().clone()];
        assert_eq!(issuers(&certs), vec![Some(2), None, None], "signed by b, not by a of the same subject");
        let out = draw(&certs);
        let tops: Vec<&str> = out.lines().filter(|l| l.starts_with("O=") || l.starts_with("CN=")).collect();
        assert_eq!(tops.len(), 2, "{out}");
        assert!(out.contains("└─ "), "{out}");
    }

    #[test]
    fn deep_chains_and_many_roots_draw_in_linear_space() {
        let rng = &mut meshca::OsRng;
        let mut signer = SigningCa::generate_root(&RootParams::default(), rng, now()).expect("issued");
        let mut certs = vec![signer.bundle().root().clone()];
        for depth in 0..12u8 {
            let mut p = IntermediateParams::new(&format!("level{depth}"));
            p.pathlen = 12 - depth;
            let next = signer.issue_intermediate(&p, rng, now()).expect("issued").value;
            certs.push(next.ca_cert().clone());
            signer = SigningCa::new(next);
        }
        let out = draw(&certs);
        assert!(out.contains("(depth 12)"), "{out}");
        let widest = out.lines().map(|l| l.chars().take_while(|c| *c == ' ' || *c == '└' || *c == '─').count());
        assert!(widest.max().unwrap_or(0) <= 3 * MAX_DRAWN_DEPTH + 6, "{out}");
        // The same root many times: every copy is a root, drawn flat.
        let root = certs[0].clone();
        let many = vec![root; 2000];
        let out = draw(&many);
        assert_eq!(
            out.lines().filter(|l| l.starts_with("O=Istio, CN=Root CA") || l.starts_with("CN=Root CA")).count(),
            2000
        );
        assert!(!out.contains("└─"), "identical roots are not a chain");
    }
}
