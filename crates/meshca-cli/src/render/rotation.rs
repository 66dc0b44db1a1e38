//! A root rotation run.

use meshca_ops::rootrotation::{Notice, RotationReport, StepOutcome, StepState};

/// What happened to the rotation itself.
fn notice_words(n: Notice) -> &'static str {
    match n {
        Notice::StartedByPolicy => "started by spec.config.rootRotation",
        Notice::RollingBack => "rolling back: spec.config.rootRotation was removed",
        _ => "changed",
    }
}

/// One cluster's outcome.
fn outcome_words(o: &StepOutcome) -> String {
    match o {
        StepOutcome::Done => "done".into(),
        StepOutcome::Converged { restarted, restart_error } => {
            let mut s = "converged".to_owned();
            if let Some(r) = restarted {
                s.push_str(&format!("; {r}"));
            }
            if let Some(e) = restart_error {
                s.push_str(&format!("; autoRestartPods: {e}"));
            }
            s
        }
        StepOutcome::WouldConverge => "would converge".into(),
        StepOutcome::Failed { error } => format!("FAILED: {error}"),
        other => format!("{other:?}"),
    }
}

/// What the state machine said.
fn step_words(step: &StepState) -> String {
    match step {
        StepState::Converging { pending } => format!("waiting for {}", meshca::list_bounded(pending, 10)),
        StepState::Dwelling { until } => format!("every cluster is done; next step at {}", meshca::format_time(*until)),
        StepState::Advanced { to } => format!("advanced to {to}"),
        StepState::Finished { phase } => format!("finished ({phase})"),
        StepState::Distributing { lagging } => {
            format!("every cluster is done; waiting for trust distribution: {}", meshca::list_bounded(lagging, 10))
        }
        other => format!("{other:?}"),
    }
}

/// The human form of a root rotation run.
pub(crate) fn render_rotation(rot: &RotationReport, dry_run: bool) -> String {
    let mut s = String::new();
    if let Some(n) = rot.notice {
        s.push_str(&format!("root rotation {}: {} -> {}\n", notice_words(n), rot.old_root, rot.new_root));
    }
    // A run that finds a dwell over begins the next step: the clusters below are its work.
    let mut phases = rot.phase.to_string();
    for p in &rot.entered {
        phases.push_str(&format!(" -> {p}"));
    }
    s.push_str(&format!("root rotation, phase {phases}{}\n", if dry_run { " (dry run)" } else { "" }));
    for c in &rot.clusters {
        s.push_str(&format!("  {:<12} {}\n", c.cluster, outcome_words(&c.outcome)));
    }
    let steps: Vec<String> = rot.steps.iter().map(step_words).collect();
    s.push_str(&format!("{}; now in phase {}\n", steps.join("; "), rot.now_phase));
    if let Some(d) = &rot.distribution {
        s.push_str(&super::reconcile::distribution_lines(d));
    }
    s
}
