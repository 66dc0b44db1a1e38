//! A reconcile run as a table.

use time::OffsetDateTime;

use meshca_ops::policy;
use meshca_ops::reconcile::{Action, Report};

use super::short;

/// A cluster's reason, with what to pass to get past it where this binary has a flag for it.
fn reason_with_hint(c: &meshca_ops::reconcile::ClusterResult) -> String {
    match c.error_kind {
        Some(meshca_ops::error::ErrorKind::NotManaged) => {
            format!("{}; pass --adopt to let meshca replace it", c.reason)
        }
        _ => c.reason.clone(),
    }
}

/// The word for what happened to a cluster, as the table shows it.
pub(crate) fn action_word(a: Action) -> &'static str {
    match a {
        Action::Kept => "kept",
        Action::Issued => "issued",
        Action::Rotated => "rotated",
        Action::TrustUpdated => "trust updated",
        Action::WouldIssue => "would issue",
        Action::WouldRotate => "would rotate",
        Action::WouldUpdateTrust => "would update trust",
        Action::Failed => "FAILED",
    }
}

/// The human form of a reconcile run: a header, one line per cluster (only the changes when
/// there are many, unless `verbose`), and a summary.
pub(crate) fn render_report(r: &Report, pol: &policy::Policy, verbose: bool) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "policy {} ({}) at {}{}\n",
        pol.name,
        pol.api_version,
        meshca::format_time(r.at),
        if r.dry_run { ", dry run: nothing written" } else { "" }
    ));
    s.push_str(&format!(
        "signer {}{} root sha256 {}\n       {}\n",
        r.signer.subject,
        if r.signer.created { " (created now)" } else { "" },
        short(&r.signer.root_fingerprint),
        r.signer.location
    ));
    let many = r.clusters.len() > 50 && !verbose;
    let width = r.clusters.iter().map(|c| c.cluster.len()).max().unwrap_or(7).max(7);
    s.push_str(&format!(
        "{:<width$}  {:<12}  {:<20}  {:<20}  {}\n",
        "CLUSTER", "ACTION", "EXPIRES", "NEXT CHECK", "REASON"
    ));
    let mut hidden = 0;
    for c in &r.clusters {
        if many && c.action == Action::Kept {
            hidden += 1;
            continue;
        }
        let t = |t: Option<OffsetDateTime>| t.map(meshca::format_time).unwrap_or_else(|| "-".into());
        s.push_str(&format!(
            "{:<width$}  {:<12}  {:<20}  {:<20}  {}\n",
            c.cluster,
            action_word(c.action),
            t(c.not_after),
            t(c.next_check),
            reason_with_hint(c)
        ));
        for w in &c.warnings {
            s.push_str(&format!("{:<width$}  warning: {w}\n", ""));
        }
    }
    if hidden > 0 {
        s.push_str(&format!("... and {hidden} clusters kept unchanged (--verbose lists them)\n"));
    }
    let counts: Vec<String> = r.counts().iter().map(|(a, n)| format!("{n} {}", action_word(*a))).collect();
    let failed = r.clusters.iter().filter(|c| c.action == Action::Failed).count();
    let total = r.clusters.len();
    if failed == 0 {
        s.push_str(&format!("{total} cluster{}: {}.", if total == 1 { "" } else { "s" }, counts.join(", ")));
    } else {
        s.push_str(&format!("{} of {total} clusters reconciled: {}.", total - failed, counts.join(", ")));
    }
    if failed == total {
        // Nothing to compare: no cluster ended with a bundle this run could check.
    } else if r.trust.ok && failed > 0 {
        s.push_str(&format!(
            " Those share root {} (sha256 {}).",
            r.signer.root,
            short(r.trust.root_fingerprint.as_deref().unwrap_or(""))
        ));
    } else if r.trust.ok {
        s.push_str(&format!(
            " All share root {} (sha256 {}).",
            r.signer.root,
            short(r.trust.root_fingerprint.as_deref().unwrap_or(""))
        ));
    } else {
        s.push_str(&format!("\nTRUST CHECK FAILED: {}", r.trust.error.as_deref().unwrap_or("")));
    }
    if let Some(n) = r.next_check {
        s.push_str(&format!(" Next check due {}.", meshca::format_time(n)));
    }
    s.push('\n');
    if pol.auto_restart_pods && r.clusters.iter().any(|c| matches!(c.action, Action::Issued | Action::Rotated)) {
        s.push_str("note: autoRestartPods is set; the directory store cannot restart istiod, restart it where the bundle was applied\n");
    }
    if let Some(c) = &r.crl {
        s.push_str(&format!(
            "CRL set: {} CRLs, {} revoked CA{}, root CRL #{} valid until {} (reconcile re-signs it before then); \
             list in {}\n",
            c.crls,
            c.revoked.len(),
            if c.revoked.len() == 1 { "" } else { "s" },
            c.crl_number,
            c.next_update.map(meshca::format_time).unwrap_or_else(|| "-".into()),
            c.location
        ));
    }
    if let Some(d) = &r.distribution {
        s.push_str(&distribution_lines(d));
    }
    for n in &r.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}

/// What a run published beyond the mesh: the SPIFFE bundle's sequence, the trust objects it
/// wrote, removed or could not write, and its notes.
pub(crate) fn distribution_lines(d: &meshca_ops::distribution::Distribution) -> String {
    use meshca_ops::distribution::TargetOutcome;
    let count = |f: fn(&TargetOutcome) -> bool| d.targets.iter().filter(|t| f(&t.outcome)).count();
    let mut s = format!(
        "trust beyond the mesh: spiffe_sequence {}{}; {} written, {} removed, {} failed\n",
        d.sequence,
        if d.changed { " (the set changed)" } else { "" },
        count(|o| matches!(o, TargetOutcome::Written)),
        count(|o| matches!(o, TargetOutcome::Removed)),
        count(|o| matches!(o, TargetOutcome::Failed { .. })),
    );
    for t in &d.targets {
        if let TargetOutcome::Failed { error } = &t.outcome {
            s.push_str(&format!("  {}: {}: FAILED: {error}\n", t.cluster, t.object));
        }
    }
    for n in &d.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}
