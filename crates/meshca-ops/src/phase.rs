//! Root rotation phases by name: the one table of the names stored, reported and shown in
//! status, and Gloo Mesh's rotation state names beside them.

use meshca::Phase;
use serde::Serialize;

/// Every phase: its name in the stored state and in reports, and Gloo Mesh's name for the
/// rotation state (meshca adds ROLLED_BACK). One table, so the three cannot drift apart.
pub(crate) const PHASES: [(Phase, &str, &str); 7] = [
    (Phase::AddingNewRoot, "AddingNewRoot", "ADDING_NEW_ROOT"),
    (Phase::PropagatingIntermediates, "PropagatingIntermediates", "PROPAGATING_NEW_INTERMEDIATE"),
    (Phase::DeletingOldRoot, "DeletingOldRoot", "DELETING_OLD_ROOT"),
    (Phase::Complete, "Complete", "FINISHED"),
    (Phase::RollingBackIntermediates, "RollingBackIntermediates", "ROLLING_BACK"),
    (Phase::RollingBackRoot, "RollingBackRoot", "ROLLING_BACK"),
    (Phase::RolledBack, "RolledBack", "ROLLED_BACK"),
];

pub(crate) fn phase_name(p: Phase) -> &'static str {
    PHASES.iter().find(|(q, ..)| *q == p).map_or("Unknown", |(_, name, _)| name)
}

pub(crate) fn phase_from(name: &str) -> Option<Phase> {
    PHASES.iter().find(|(_, n, _)| *n == name).map(|(p, ..)| *p)
}

impl PhaseName {
    /// Every phase, in the table's order (the metrics' `phase` label values).
    pub fn all() -> impl Iterator<Item = PhaseName> {
        PHASES.iter().map(|(p, ..)| PhaseName(*p))
    }
}

/// A phase in reports and status: serializes (and displays) as its name (`AddingNewRoot`, ...),
/// and knows Gloo Mesh's name for the rotation state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhaseName(pub Phase);

impl PhaseName {
    /// The name (`AddingNewRoot`, ...).
    pub fn name(self) -> &'static str {
        phase_name(self.0)
    }

    /// Gloo Mesh's rotation state name (`ADDING_NEW_ROOT`, ...; meshca adds `ROLLED_BACK`).
    pub fn gloo_state(self) -> &'static str {
        PHASES.iter().find(|(q, ..)| *q == self.0).map_or("UNKNOWN", |(.., gloo)| gloo)
    }
}

impl std::fmt::Display for PhaseName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for PhaseName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl PartialEq<&str> for PhaseName {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}
