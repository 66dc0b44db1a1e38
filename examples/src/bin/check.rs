//! `check DIR...`: validates each directory as a `cacerts` bundle (Istio or cert-manager layout)
//! at the current time, then checks that all of them share a root. One line per bundle; exit 0
//! only if everything holds.

use std::path::Path;
use std::process::ExitCode;

use meshca::Cacerts;

fn main() -> ExitCode {
    let dirs: Vec<String> = std::env::args().skip(1).collect();
    if dirs.is_empty() || dirs.iter().any(|d| d == "-h" || d == "--help") {
        eprintln!(
            "usage: check DIR...\n  validates each bundle directory and that all share a root; exit 0 only if all hold"
        );
        return ExitCode::from(2);
    }
    let now = time::OffsetDateTime::now_utc();
    let mut ok = true;
    let mut bundles: Vec<(&str, Cacerts)> = Vec::new();
    for dir in &dirs {
        let parsed = meshca_ops::fs::read_files(Path::new(dir))
            .map_err(|e| e.to_string())
            .and_then(|files| Cacerts::from_files(&files, now).map_err(|e| e.to_string()));
        match parsed {
            Ok(b) => {
                let ca = b.ca_cert();
                let left = meshca::human_duration(b.not_after() - now);
                println!("OK    {dir}: {}, expires {} (in {left})", ca.subject(), meshca::format_time(b.not_after()));
                for w in b.warnings() {
                    println!("      warning: {w}");
                }
                bundles.push((dir, b));
            }
            Err(e) => {
                ok = false;
                println!("FAIL  {dir}: {e}");
            }
        }
    }
    if bundles.len() > 1 {
        let refs: Vec<(&str, &Cacerts)> = bundles.iter().map(|(n, b)| (*n, b)).collect();
        match meshca::check_mutual_trust(&refs) {
            Ok(shared) => {
                println!("OK    all {} bundles share root {} ({})", bundles.len(), shared.subject, shared.fingerprint)
            }
            Err(e) => {
                ok = false;
                println!("FAIL  {e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
