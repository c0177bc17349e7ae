//! `geoedge db init` and `geoedge db check`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use geoedge_routing::loader;

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
                "{}: ok: schema version {}, {} backends ({} live) in {} apps, {} regions{}, {} countries mapped{}",
                path.display(),
                s.schema_version,
                s.len(),
                s.live_len(),
                s.apps().len(),
                s.regions.len(),
                if s.builtin_regions { " (built-in)" } else { "" },
                s.country_map.len(),
                if s.builtin_countries { " (built-in)" } else { "" },
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
