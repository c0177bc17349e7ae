//! `geoedge db init`, `geoedge db check` and `geoedge db migrate`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use geoedge_routing::{loader, migrate as migration};

/// Creates a routing.db.
pub fn init(path: &Path, sample: bool) -> anyhow::Result<ExitCode> {
    loader::init(path, sample).with_context(|| format!("creating {}", path.display()))?;
    println!(
        "created {} (schema version {}{})",
        path.display(),
        geoedge_routing::snapshot::SCHEMA_VERSION,
        if sample {
            ", sample regions, countries and backends"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Validates a routing.db, listing every row-level error.
pub fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let raw = loader::load(path).with_context(|| format!("reading {}", path.display()))?;
    match geoedge_routing::snapshot::build(&raw, |_| Default::default()) {
        Ok(s) => {
            println!(
                "{}: ok: schema version {}, {} backends ({}) in {} apps, {} regions{}, {} countries mapped{}{}",
                path.display(),
                s.schema_version,
                s.len(),
                backend_counts(&s),
                s.apps().len(),
                s.regions.len(),
                if s.builtin_regions { " (built-in)" } else { "" },
                s.country_map.len(),
                if s.builtin_countries { " (built-in)" } else { "" },
                extra_counts(&s),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(invalid) => {
            println!(
                "{}: invalid: {} errors",
                path.display(),
                invalid.errors.len()
            );
            for e in &invalid.errors {
                println!("  {e}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// How many backends take new clients ("live"), how many are drained
/// (`healthy = 0` or `weight = 0`: kept, but given no new client) and how
/// many soft-deleted: "5 live, 1 drained"; the last two only when there
/// are any.
fn backend_counts(s: &geoedge_routing::Snapshot) -> String {
    let drained = s
        .backends
        .iter()
        .filter(|b| !b.deleted && !b.statically_eligible())
        .count();
    let deleted = s.len() - s.live_len();
    let mut out = format!("{} live", s.live_len() - drained);
    if drained > 0 {
        out.push_str(&format!(", {drained} drained"));
    }
    if deleted > 0 {
        out.push_str(&format!(", {deleted} deleted"));
    }
    out
}

/// The counts of the optional tables that have rows (", 1 app limits, 2
/// sni routes"), so a table without them reads as before.
fn extra_counts(s: &geoedge_routing::Snapshot) -> String {
    let mut out = String::new();
    if s.app_limits_len() > 0 {
        out.push_str(&format!(", {} app limits", s.app_limits_len()));
    }
    if s.sni_routes_len() > 0 {
        out.push_str(&format!(", {} sni routes", s.sni_routes_len()));
    }
    out
}

/// Upgrades a routing.db in place to the current schema version, then
/// validates it (exit 1 when the migrated table is invalid).
pub fn migrate(path: &Path) -> anyhow::Result<ExitCode> {
    let m = migration::migrate(path).with_context(|| format!("migrating {}", path.display()))?;
    match &m.backup {
        None => println!(
            "{}: already at schema version {}; nothing to do",
            path.display(),
            m.to
        ),
        Some(backup) => println!(
            "{}: migrated from schema version {} to {} (backup: {}); created tables: {}; created triggers: {}",
            path.display(),
            m.from,
            m.to,
            backup.display(),
            if m.created.is_empty() {
                "none".to_owned()
            } else {
                m.created.join(", ")
            },
            m.triggers.len()
        ),
    }
    check(path)
}
