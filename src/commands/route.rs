//! `geoedge route IP`: the decision a fresh client from IP would get, as JSON.
//! With NATS settings, the fleet's load reports are heard for a second
//! first: each candidate then shows this POP's own connections, the other
//! POPs', the global sum it is scored by, and this POP's lease of it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use geoedge_geoip::GeoDb;
use geoedge_routing::{loader, watcher, Request, Router, RoutingTable, SpreadShare};
use serde_json::json;

use crate::control::config::defaults::LOAD_MAX_AGE;
use crate::control::config::{FleetSettings, Settings};
use crate::control::fleet::load::{self, LoadReport};

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
    let fleet = match &settings.fleet {
        Some(fleet) => {
            let heard = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?
                .block_on(load::listen(fleet, LOAD_MAX_AGE))?;
            let view = FleetView::new(fleet, heard);
            // This process holds no connection: every count is reported.
            for b in &table.snapshot().backends {
                let (own, remote) = view.counts(b.id.as_str());
                b.load.set_remote(own.saturating_add(remote));
            }
            Some(view)
        }
        None => None,
    };
    let mut router = Router::new(table, settings.region.clone(), settings.bindings);
    if fleet.is_some() {
        router = router.with_spill_spread(0);
    }
    let lookup = db.lookup(ip);
    let explanation = router.explain(&Request {
        app: &settings.app,
        ip,
        location: lookup.location(),
        exclude: &[],
    });
    let mut out = crate::control::admin::route_json(
        ip,
        &lookup,
        &explanation,
        &settings.app,
        &settings.region,
        db.info().database_type.as_str(),
    );
    if let Some(view) = &fleet {
        view.annotate(&mut out, &explanation.spread);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// What the fleet's load reports said, from this POP's point of view.
struct FleetView {
    /// This POP.
    pop: String,
    /// The last report of each POP heard.
    heard: HashMap<String, LoadReport>,
}

impl FleetView {
    fn new(fleet: &FleetSettings, heard: HashMap<String, LoadReport>) -> Self {
        FleetView {
            pop: fleet.pop.clone(),
            heard,
        }
    }

    /// This POP's connections to `backend` and the other POPs'.
    fn counts(&self, backend: &str) -> (u32, u32) {
        let mut own = 0u32;
        let mut remote = 0u32;
        for (pop, r) in &self.heard {
            let live = r.backends.get(backend).map_or(0, |(live, _)| *live);
            if *pop == self.pop {
                own = own.saturating_add(live);
            } else {
                remote = remote.saturating_add(live);
            }
        }
        (own, remote)
    }

    /// Adds the fleet's figures, and the spread of a spill, to `geoedge
    /// route`'s JSON.
    fn annotate(&self, out: &mut serde_json::Value, spread: &[SpreadShare]) {
        out["spread"] = json!(spread);
        let own_report = self.heard.get(&self.pop);
        if let Some(candidates) = out["candidates"].as_array_mut() {
            for c in candidates {
                let id = c["id"].as_str().unwrap_or_default().to_owned();
                let (own, remote) = self.counts(&id);
                crate::control::admin::fleet_fields(
                    c,
                    own,
                    remote,
                    own_report.and_then(|r| r.leases.get(&id)),
                    own_report
                        .and_then(|r| r.lent.get(&id))
                        .copied()
                        .unwrap_or(0),
                );
            }
        }
        let mut reporting: Vec<&String> = self.heard.keys().collect();
        reporting.sort();
        out["fleet"] = json!({
            "pop": self.pop,
            "reporting": reporting,
            "heard_own_report": own_report.is_some(),
        });
    }
}
