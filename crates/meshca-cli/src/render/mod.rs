//! The human forms of what commands report: words, tables, summaries. The library reports
//! typed values; the words users read are chosen here.

mod inspect;
mod reconcile;
mod rotation;
mod status;

pub(crate) use inspect::write_tree;
pub(crate) use reconcile::render_report;
pub(crate) use rotation::render_rotation;
pub(crate) use status::{render_status, render_status_rotation, Paint};

pub(crate) fn short(fp: &str) -> String {
    fp.chars().take(23).collect::<String>() + "…"
}
