//! `meshca status` in words: per cluster the CA's expiry and time left, the next rotation,
//! whether istiod loaded the roots, when the CA was issued and what the next run would do; the
//! roots; a root rotation's phase; the revocation list.

use time::OffsetDateTime;

use meshca_ops::reconcile::{Action, Report};
use meshca_ops::rootrotation::{RotationReport, StepState};
use meshca_ops::store::Store;

use super::short;

pub(crate) struct Paint(pub(crate) bool);

impl Paint {
    fn with(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

fn left(now: OffsetDateTime, t: OffsetDateTime) -> String {
    if t <= now {
        "expired".into()
    } else {
        meshca::human_duration(t - now)
    }
}

pub(crate) fn render_status(r: &Report, policy: &str, store: &dyn Store, paint: &Paint) -> String {
    let now = r.at;
    let mut s = format!("policy {policy} at {}\n", meshca::format_time(now));
    if r.signer.created {
        s.push_str("no signing CA yet: the next reconcile creates it (mgmtServerCa.generated)\n");
    }
    let width = r.clusters.iter().map(|c| c.cluster.len()).max().unwrap_or(7).max(7);
    s.push_str(&format!(
        "{:<width$}  {:<32}  {:<20}  {:<10}  {:<20}  {}\n",
        "CLUSTER", "CA EXPIRES (LEFT)", "NEXT ROTATION", "TRUST", "ISSUED", "NEXT RUN / ERROR"
    ));
    for c in &r.clusters {
        let expires =
            c.not_after.map(|t| format!("{} ({})", meshca::format_time(t), left(now, t))).unwrap_or_else(|| "-".into());
        let trust = c.trust.as_ref().map_or("-", |t| t.name());
        let trust_col = match trust {
            "in-sync" => paint.with("32", &format!("{trust:<10}")),
            "stale" => paint.with("31", &format!("{trust:<10}")),
            _ => paint.with("33", &format!("{trust:<10}")),
        };
        // When the CA in place was issued (its notBefore, backdated by meshca::BACKDATE).
        let issued = store
            .read(&meshca_ops::store::SecretRef::cacerts(&c.cluster))
            .ok()
            .flatten()
            .and_then(|f| f.get(meshca::CA_CERT).map(<[u8]>::to_vec))
            .and_then(|pem| meshca::parse_certificates(&pem, meshca::CA_CERT).ok())
            .and_then(|certs| certs.into_iter().next())
            .map(|cert| meshca::format_time(cert.not_before() + meshca::BACKDATE))
            .unwrap_or_else(|| "-".into());
        let next = match c.action {
            Action::Kept => "keep".to_owned(),
            Action::Failed => paint.with("31", &format!("FAILED: {}", c.reason)),
            Action::WouldIssue => format!("issue: {}", c.reason),
            Action::WouldRotate => format!("rotate: {}", c.reason),
            Action::WouldUpdateTrust => format!("update trust: {}", c.reason),
            _ => c.reason.clone(),
        };
        let next_rotation = c.next_check.map(meshca::format_time).unwrap_or_else(|| "-".into());
        s.push_str(&format!(
            "{:<width$}  {expires:<32}  {next_rotation:<20}  {trust_col}  {issued:<20}  {next}\n",
            c.cluster
        ));
        if let Some(meshca_ops::reconcile::TrustState::Stale { missing, extra }) = &c.trust {
            s.push_str(&format!(
                "{:<width$}  istiod has not loaded {} root(s) meshca wrote, and publishes {} other(s)\n",
                "",
                missing.len(),
                extra.len()
            ));
        }
    }
    for root in &r.roots {
        s.push_str(&format!(
            "root {} sha256 {} expires {} ({})\n",
            root.subject,
            short(&root.fingerprint),
            meshca::format_time(root.not_after),
            left(now, root.not_after)
        ));
    }
    s.push_str("root rotation: none under way\n");
    if let Some(c) = &r.crl {
        s.push_str(&format!(
            "revoked: {} CA{}{}; root CRL #{} valid until {}\n",
            c.revoked.len(),
            if c.revoked.len() == 1 { "" } else { "s" },
            c.revoked.iter().map(|e| format!(" {} (serial {})", e.cluster, e.serial)).collect::<String>(),
            c.crl_number,
            c.next_update.map(meshca::format_time).unwrap_or_else(|| "-".into())
        ));
    }
    if !r.trust.ok {
        s.push_str(&paint.with("31", &format!("TRUST CHECK FAILED: {}\n", r.trust.error.as_deref().unwrap_or(""))));
    }
    s
}

pub(crate) fn render_status_rotation(r: &RotationReport, paint: &Paint) -> String {
    let mut s = format!("root rotation {} -> {}: phase {}\n", r.old_root, r.new_root, r.now_phase);
    match r.steps.last() {
        Some(StepState::Converging { pending }) => {
            s.push_str(&format!("waiting for {} cluster(s): {}\n", pending.len(), meshca::list_bounded(pending, 10)))
        }
        Some(StepState::Dwelling { until }) => {
            s.push_str(&format!("every cluster is done; the next step may begin at {}\n", meshca::format_time(*until)))
        }
        Some(StepState::Distributing { lagging }) => s.push_str(&format!(
            "every cluster is done; the new root's intermediates wait for {} trust target(s): {}\n",
            lagging.len(),
            meshca::list_bounded(lagging, 10)
        )),
        _ => {}
    }
    for (cluster, error) in r.failed_clusters() {
        s.push_str(&paint.with("31", &format!("{cluster}: FAILED: {error}\n")));
    }
    s
}
