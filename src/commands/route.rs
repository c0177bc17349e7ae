//! `geoedge route IP`: the decision a fresh client from IP would get, as JSON.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use geoedge_geoip::{GeoDb, Lookup};
use geoedge_routing::{loader, watcher, Explanation, Request, Router, RoutingTable};
use serde_json::json;

use crate::control::config::Settings;

/// Loads the table and the database named by the settings (or the embedded
/// samples) and prints the explanation.
pub fn run(settings: &Settings, ip: IpAddr) -> anyhow::Result<ExitCode> {
    let table = Arc::new(RoutingTable::new());
    match &settings.routing_db {
        Some(path) => {
            watcher::load_into(&table, path)
                .with_context(|| format!("loading {}", path.display()))?;
        }
        None => {
            table
                .apply(&loader::sample(), 0)
                .context("the embedded sample table")?;
        }
    }
    let db = match &settings.geoip {
        Some(path) => GeoDb::open(path).with_context(|| format!("loading {}", path.display()))?,
        None => GeoDb::sample(),
    };
    if table
        .snapshot()
        .region_index(settings.region.as_str())
        .is_none()
    {
        tracing::warn!(region = %settings.region, "this POP's region is not in the routing table");
    }
    let router = Router::new(table, settings.region.clone(), settings.bindings);
    let lookup = db.lookup(ip);
    let explanation = router.explain(&Request {
        app: &settings.app,
        ip,
        location: lookup.location(),
        exclude: &[],
    });
    let out = render(
        ip,
        &lookup,
        &explanation,
        settings,
        db.info().database_type.as_str(),
    );
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

fn render(
    ip: IpAddr,
    lookup: &Lookup,
    e: &Explanation,
    settings: &Settings,
    database_type: &str,
) -> serde_json::Value {
    let loc = lookup.location();
    let point = e.placement.point;
    json!({
        "client": {
            "ip": ip.to_string(),
            "country": loc.and_then(|l| l.country),
            "continent": loc.and_then(|l| l.continent),
            "subdivision": loc.and_then(|l| l.subdivision),
            "region": e.region,
            "latitude": point.map(|p| p.latitude),
            "longitude": point.map(|p| p.longitude),
            "located": e.placement.located,
            "geoip": lookup.label(),
        },
        "app": settings.app,
        "pop_region": settings.region,
        "geoip_database": database_type,
        "backend": e.backend,
        "decision": e.kind,
        "reason": e.reason,
        "candidates": e.candidates,
    })
}
