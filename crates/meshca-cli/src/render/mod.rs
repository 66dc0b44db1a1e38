//! The human forms of what commands report: words, tables, summaries. The library reports
//! typed values; the words users read are chosen here.

mod reconcile;
mod rotation;

pub(crate) use reconcile::render_report;
pub(crate) use rotation::render_rotation;

pub(crate) fn short(fp: &str) -> String {
    fp.chars().take(23).collect::<String>() + "…"
}
