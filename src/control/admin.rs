//! The admin endpoints on the metrics listener (docs/admin.md): a running
//! edge's live view, as JSON.
//!
//! - `GET /explain?client=IP[&app=APP]`: `geoedge route`'s JSON for that
//!   client, from the edge's own router (live counts and health), with the
//!   client's binding and, in a fleet, the remote load the edge holds.
//! - `GET /bindings`: how many bindings, and the table's capacity.
//! - `GET /bindings?client=IP[&app=APP]`: the client's binding, or 404.
//! - `DELETE /bindings[?client=IP[&app=APP]]`: clears one binding or all;
//!   403 unless `--admin-write on`.
//! - `GET /backends`: every backend's state and load.
//! - `GET /revision`: the routing.db generation in force, its last
//!   reload, and in a fleet the installed revision.
//!
//! Every answer is computed inline from what the edge holds in memory:
//! locks are taken briefly (a binding shard, a lease holder), never across
//! an await, and nothing goes over the network. Until the edge has loaded
//! its tables the endpoints answer 503.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use geoedge_geoip::{GeoIp, Lookup};
use geoedge_routing::global::LeaseView;
use geoedge_routing::{AppId, BindingInfo, Explanation, HealthState, RegionId, Request, Router};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::control::fleet::follow::FollowState;

/// The paths the admin endpoints answer.
pub const PATHS: &[&str] = &["/explain", "/bindings", "/backends", "/revision"];

/// The longest app name a query may give (routing.db's ids are short).
const MAX_APP_LEN: usize = 255;

/// An answer: a status and a JSON body.
pub type Answer = (StatusCode, Value);

/// What the admin endpoints answer from: set once the edge is loaded.
#[derive(Default)]
pub struct Admin {
    /// `--admin-write`: whether DELETE is allowed.
    write: AtomicBool,
    /// The loaded edge.
    edge: OnceLock<AdminEdge>,
    /// In a fleet, the follower's state.
    fleet: OnceLock<AdminFleet>,
}

/// What a loaded edge shows.
pub struct AdminEdge {
    /// The edge's router: tables, bindings, live counts, health.
    pub router: Arc<Router>,
    /// The GeoIP database in force.
    pub geoip: Arc<GeoIp>,
    /// The app a query without `app=` is about: the first listener's.
    pub app: AppId,
    /// This POP's region.
    pub region: RegionId,
    /// The routing.db followed.
    pub routing_db: PathBuf,
}

/// The fleet side of an edge (`--nats`).
pub struct AdminFleet {
    /// This POP's name.
    pub pop: String,
    /// The follower's state (revisions, load reports).
    pub state: Arc<FollowState>,
}

/// A query string's parameters (`client`, `app`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// `client=IP`.
    pub client: Option<IpAddr>,
    /// `app=APP`.
    pub app: Option<String>,
}

/// Parses a query string: `client` (an IPv4 or IPv6 address) and `app`,
/// each at most once, percent-encoding allowed; anything else is an error
/// (the message says what).
pub fn parse_query(query: Option<&str>) -> Result<Query, String> {
    let mut q = Query::default();
    let Some(query) = query.filter(|s| !s.is_empty()) else {
        return Ok(q);
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key)?;
        let value = decode(value)?;
        if value.is_empty() {
            return Err(format!("{key}: empty value"));
        }
        match key.as_str() {
            "client" => {
                if q.client.is_some() {
                    return Err("client given twice".into());
                }
                let ip: IpAddr = value
                    .parse()
                    .map_err(|_| format!("client {value:?}: not an IPv4 or IPv6 address"))?;
                q.client = Some(ip);
            }
            "app" => {
                if q.app.is_some() {
                    return Err("app given twice".into());
                }
                if value.len() > MAX_APP_LEN || value.chars().any(char::is_control) {
                    return Err("app: not an app name".into());
                }
                q.app = Some(value);
            }
            other => return Err(format!("unknown parameter {other:?} (client, app)")),
        }
    }
    Ok(q)
}

/// Percent-decodes one query component (`+` is a space).
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| "a bad percent-encoding".to_owned())?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8".to_owned())
}

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    (status, json!({ "error": message.into() }))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Admin {
    /// Sets `--admin-write`.
    pub fn set_write(&self, write: bool) {
        self.write.store(write, Ordering::Relaxed);
    }

    /// Whether writes are allowed.
    pub fn write(&self) -> bool {
        self.write.load(Ordering::Relaxed)
    }

    /// The loaded edge: the endpoints answer from now on. Only the first
    /// call counts.
    pub fn set_edge(&self, edge: AdminEdge) {
        let _ = self.edge.set(edge);
    }

    /// The fleet's follower (`--nats`). Only the first call counts.
    pub fn set_fleet(&self, fleet: AdminFleet) {
        let _ = self.fleet.set(fleet);
    }

    /// The answer for `method` on `path` with `query`; `None` when `path`
    /// is not an admin path.
    pub fn handle(&self, method: &Method, path: &str, query: Option<&str>) -> Option<Answer> {
        if !PATHS.contains(&path) {
            return None;
        }
        let read = method == Method::GET || method == Method::HEAD;
        let delete = method == Method::DELETE && path == "/bindings";
        if !read && !delete {
            let allowed = if path == "/bindings" {
                "GET, HEAD or DELETE"
            } else {
                "GET or HEAD"
            };
            return Some(error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{allowed} only"),
            ));
        }
        let q = match parse_query(query) {
            Ok(q) => q,
            Err(e) => return Some(error(StatusCode::BAD_REQUEST, e)),
        };
        if delete && !self.write() {
            return Some(error(
                StatusCode::FORBIDDEN,
                "admin writes are off: start the edge with --admin-write on to clear bindings",
            ));
        }
        let Some(edge) = self.edge.get() else {
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting: the routing table is not loaded yet",
            ));
        };
        let now = Instant::now();
        Some(match path {
            "/explain" => match q.client {
                None => error(StatusCode::BAD_REQUEST, "client=IP is required"),
                Some(ip) => self.explain(edge, ip, &app_of(edge, &q), now),
            },
            "/bindings" if delete => clear(edge, &q),
            "/bindings" => bindings(edge, &q, now),
            "/backends" => self.backends(edge, now),
            _ => self.revision(edge),
        })
    }

    /// `/explain`: the JSON of `geoedge route` from the live router.
    fn explain(&self, edge: &AdminEdge, ip: IpAddr, app: &AppId, now: Instant) -> Answer {
        // The database itself, not the edge's lookup cache: an operator's
        // question neither fills nor counts in it.
        let (lookup, database_type) = match edge.geoip.current() {
            Some(db) => (db.lookup(ip), db.info().database_type.clone()),
            None => (edge.geoip.lookup(ip), String::new()),
        };
        let explanation = edge.router.explain(&Request {
            app,
            ip,
            location: lookup.location(),
            exclude: &[],
        });
        let mut out = route_json(ip, &lookup, &explanation, app, &edge.region, &database_type);
        out["binding"] = binding_json(edge.router.bindings().peek(app, ip, now));
        out["routing_generation"] = json!(edge.router.table().generation());
        if let Some(fleet) = self.fleet.get() {
            let snap = edge.router.table().snapshot();
            let gate = edge.router.leases();
            if let Some(candidates) = out["candidates"].as_array_mut() {
                for c in candidates {
                    let Some(b) = c["id"].as_str().and_then(|id| snap.backend(id)) else {
                        continue;
                    };
                    let lease = gate.and_then(|g| g.view(b, now));
                    fleet_fields(
                        c,
                        b.load.active(),
                        b.load.remote(),
                        lease.as_ref(),
                        b.load.lent(),
                    );
                }
            }
            out["spread"] = json!(explanation.spread);
            out["fleet"] = json!({
                "pop": fleet.pop,
                "load_reporters": fleet.state.load_reporters.load(Ordering::Relaxed),
            });
        }
        (StatusCode::OK, out)
    }

    /// `/backends`: every backend of the table in force.
    fn backends(&self, edge: &AdminEdge, now: Instant) -> Answer {
        let snap = edge.router.table().snapshot();
        let gate = edge.router.leases();
        let fleet = self.fleet.get().is_some();
        let list: Vec<Value> = snap
            .backends
            .iter()
            .map(|b| {
                let state = b.load.health().state(b.healthy);
                let active = b.load.active();
                let mut v = json!({
                    "id": b.id,
                    "app": b.app,
                    "region": b.region,
                    "addr": b.addr.to_string(),
                    "state": state.as_str(),
                    "deleted": b.deleted,
                    "active": active,
                    "soft_limit": b.soft_limit,
                    "hard_limit": b.hard_limit,
                    "weight": b.weight,
                    "eligible": b.statically_eligible()
                        && state == HealthState::Up
                        && b.load.reserved() < b.hard_limit,
                });
                if fleet {
                    let lease = gate.and_then(|g| g.view(b, now));
                    fleet_fields(
                        &mut v,
                        active,
                        b.load.remote(),
                        lease.as_ref(),
                        b.load.lent(),
                    );
                }
                v
            })
            .collect();
        (
            StatusCode::OK,
            json!({
                "routing_generation": edge.router.table().generation(),
                "backends": list,
            }),
        )
    }

    /// `/revision`: the routing table in force and how it got there.
    fn revision(&self, edge: &AdminEdge) -> Answer {
        let table = edge.router.table();
        let stats = table.stats();
        let snap = table.snapshot();
        let last = stats.last_applied_unix.load(Ordering::Relaxed);
        let last_error = stats.last_error.lock().clone();
        let fleet = self.fleet.get().map(|f| {
            let s = &f.state;
            json!({
                "pop": f.pop,
                "installed_revision": s.installed.load(Ordering::Relaxed),
                "current_revision": s.current.load(Ordering::Relaxed),
                "diverged": s.diverged.load(Ordering::Relaxed),
                "last_sync_unix_ms": match s.last_sync_ms.load(Ordering::Relaxed) {
                    0 => None,
                    ms => Some(ms),
                },
            })
        });
        (
            StatusCode::OK,
            json!({
                "routing_db": edge.routing_db.display().to_string(),
                "routing_generation": table.generation(),
                "schema_version": snap.schema_version,
                "backends": snap.backends.len(),
                "last_reload_unix": if last == 0 { None } else { Some(last) },
                "last_reload": if last_error.is_some() { "rejected" } else { "applied" },
                "last_error": last_error,
                "reloads_applied": stats.applied.load(Ordering::Relaxed),
                "reloads_rejected": stats.rejected_total(),
                "fleet": fleet,
            }),
        )
    }
}

/// The app a query is about: its `app=`, or the edge's default.
fn app_of(edge: &AdminEdge, q: &Query) -> AppId {
    q.app
        .as_deref()
        .map_or_else(|| edge.app.clone(), AppId::new)
}

/// A binding as the endpoints show it (`null` without one).
fn binding_json(b: Option<BindingInfo>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => json!({
            "backend": b.backend,
            "network": format!("{}/{}", b.network.0, b.network.1),
            "idle_ms": ms(b.idle),
            "expires_in_ms": ms(b.expires_in),
            "protected": b.protected,
        }),
    }
}

/// `GET /bindings`: the table's size, or one client's binding.
fn bindings(edge: &AdminEdge, q: &Query, now: Instant) -> Answer {
    let table = edge.router.bindings();
    let Some(ip) = q.client else {
        let config = table.config();
        let stats = table.stats();
        return (
            StatusCode::OK,
            json!({
                "count": table.len(),
                "capacity": table.capacity(),
                "ttl_ms": ms(config.ttl),
                "ipv4_prefix": config.ipv4_prefix,
                "ipv6_prefix": config.ipv6_prefix,
                "evictions": stats.evictions.load(Ordering::Relaxed),
                "expirations": stats.expirations.load(Ordering::Relaxed),
            }),
        );
    };
    let app = app_of(edge, q);
    match table.peek(&app, ip, now) {
        None => error(
            StatusCode::NOT_FOUND,
            format!("no binding for client {ip} (app {})", app.as_str()),
        ),
        Some(b) => {
            let mut v = binding_json(Some(b));
            v["client"] = json!(ip.to_string());
            v["app"] = json!(app);
            (StatusCode::OK, v)
        }
    }
}

/// `DELETE /bindings`: one client's binding, or every one.
fn clear(edge: &AdminEdge, q: &Query) -> Answer {
    let table = edge.router.bindings();
    match q.client {
        None => {
            let cleared = table.clear();
            tracing::info!(cleared, "admin: every binding cleared");
            (StatusCode::OK, json!({ "cleared": cleared }))
        }
        Some(ip) => {
            let app = app_of(edge, q);
            let removed = table.unbind_client(&app, ip);
            tracing::info!(client = %ip, app = %app.as_str(), cleared = removed.is_some(), "admin: binding cleared");
            (
                StatusCode::OK,
                json!({
                    "cleared": u8::from(removed.is_some()),
                    "client": ip.to_string(),
                    "app": app,
                    "backend": removed,
                }),
            )
        }
    }
}

/// `geoedge route`'s JSON: the client, the decision and every candidate.
/// The admin endpoint's `/explain` answers the same object with live
/// fields added (one format for both: docs/admin.md).
pub fn route_json(
    ip: IpAddr,
    lookup: &Lookup,
    e: &Explanation,
    app: &AppId,
    region: &RegionId,
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
        "app": app,
        "pop_region": region,
        "geoip_database": database_type,
        "backend": e.backend,
        "decision": e.kind,
        "reason": e.reason,
        "candidates": e.candidates,
    })
}

/// A candidate's fleet figures: this POP's connections (`own`), the other
/// POPs' (`remote`), their sum the candidate is scored by (`global`), what
/// this POP holds of it (`lease`: another POP's backend) and what it lent
/// of it to the others (`lent`: its own).
pub fn fleet_fields(
    c: &mut serde_json::Value,
    own: u32,
    remote: u32,
    lease: Option<&LeaseView>,
    lent: u32,
) {
    c["own"] = json!(own);
    c["remote"] = json!(remote);
    c["global"] = json!(own.saturating_add(remote));
    c["lease"] = json!(lease);
    c["lent"] = json!(lent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_names_a_client_and_an_app_once_each() {
        assert_eq!(parse_query(None), Ok(Query::default()));
        assert_eq!(parse_query(Some("")), Ok(Query::default()));
        assert_eq!(
            parse_query(Some("client=81.2.69.142&app=web")),
            Ok(Query {
                client: Some("81.2.69.142".parse().unwrap()),
                app: Some("web".into()),
            })
        );
        // IPv6, plain or percent-encoded; IPv4-mapped stays as given.
        for q in ["client=2001:db8::1", "client=2001%3Adb8%3A%3A1"] {
            assert_eq!(
                parse_query(Some(q)).unwrap().client,
                Some("2001:db8::1".parse().unwrap())
            );
        }
        assert_eq!(
            parse_query(Some("app=my+app&")).unwrap().app.as_deref(),
            Some("my app")
        );
    }

    #[test]
    fn a_bad_query_says_what_is_wrong() {
        for (q, says) in [
            ("client=81.2.69", "not an IPv4 or IPv6 address"),
            ("client=81.2.69.142/24", "not an IPv4 or IPv6 address"),
            ("client=", "empty value"),
            ("client", "empty value"),
            ("client=1.2.3.4&client=1.2.3.5", "twice"),
            ("app=a&app=b", "twice"),
            ("ip=1.2.3.4", "unknown parameter"),
            ("client=%zz", "percent-encoding"),
            ("client=%4", "percent-encoding"),
            ("client=%+1", "percent-encoding"),
            ("app=%ff", "UTF-8"),
            ("app=%0a", "not an app name"),
        ] {
            let e = parse_query(Some(q)).unwrap_err();
            assert!(e.contains(says), "{q}: {e}");
        }
        let long = format!("app={}", "a".repeat(MAX_APP_LEN + 1));
        assert!(parse_query(Some(&long)).is_err());
    }

    /// An admin over the sample routing.db, with a binding made by a decision.
    fn admin(write: bool) -> (Admin, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("routing.db");
        geoedge_routing::loader::init(&db, true).unwrap();
        let table = Arc::new(geoedge_routing::RoutingTable::new());
        geoedge_routing::watcher::load_into(&table, &db).unwrap();
        let router = Arc::new(Router::new(
            table,
            RegionId::new("eu"),
            geoedge_routing::BindingConfig::default(),
        ));
        let a = Admin::default();
        a.set_write(write);
        a.set_edge(AdminEdge {
            router,
            geoip: Arc::new(GeoIp::with_db(geoedge_geoip::GeoDb::sample())),
            app: AppId::default_app(),
            region: RegionId::new("eu"),
            routing_db: db,
        });
        (a, dir)
    }

    fn get(a: &Admin, method: Method, path: &str, query: &str) -> Answer {
        a.handle(&method, path, Some(query)).expect("an admin path")
    }

    #[test]
    fn the_endpoints_answer_json_and_guard_their_writes() {
        let (a, _dir) = admin(false);
        assert!(a.handle(&Method::GET, "/metrics", None).is_none());
        let edge = a.edge.get().unwrap();
        let ip: IpAddr = "81.2.69.142".parse().unwrap();
        let (status, v) = get(&a, Method::GET, "/explain", "client=81.2.69.142");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["binding"], Value::Null);
        assert!(v["candidates"][0]["health"].is_string(), "{v}");
        assert_eq!(
            get(&a, Method::GET, "/explain", "").0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            get(&a, Method::GET, "/explain", "client=nope").0,
            StatusCode::BAD_REQUEST
        );
        // A decision binds the client: /explain and /bindings find it.
        let lookup = edge.geoip.lookup(ip);
        let route = edge
            .router
            .decide(
                &Request {
                    app: &edge.app,
                    ip,
                    location: lookup.location(),
                    exclude: &[],
                },
                Instant::now(),
            )
            .unwrap();
        let chosen = route.backend().id.as_str().to_owned();
        let (_, v) = get(&a, Method::GET, "/explain", "client=81.2.69.142");
        assert_eq!(v["binding"]["backend"], chosen.as_str());
        let held = v["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == chosen.as_str())
            .unwrap();
        assert_eq!(held["active"], 1);
        let (status, v) = get(&a, Method::GET, "/bindings", "client=81.2.69.142");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["backend"], chosen.as_str());
        assert_eq!(v["network"], "81.2.69.142/32");
        assert_eq!(
            get(&a, Method::GET, "/bindings", "client=81.2.69.143").0,
            StatusCode::NOT_FOUND
        );
        let (_, v) = get(&a, Method::GET, "/bindings", "");
        assert_eq!(v["count"], 1);
        // Writes are off.
        assert_eq!(
            get(&a, Method::DELETE, "/bindings", "").0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            get(&a, Method::DELETE, "/backends", "").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        a.set_write(true);
        let (status, v) = get(&a, Method::DELETE, "/bindings", "client=81.2.69.142");
        assert_eq!((status, v["cleared"].clone()), (StatusCode::OK, json!(1)));
        assert_eq!(
            get(&a, Method::GET, "/bindings", "client=81.2.69.142").0,
            StatusCode::NOT_FOUND
        );
        drop(route);
        let (_, v) = get(&a, Method::GET, "/backends", "");
        let backends = v["backends"].as_array().unwrap();
        assert!(!backends.is_empty());
        assert!(backends.iter().all(|b| b["active"] == 0), "{v}");
        let (_, v) = get(&a, Method::GET, "/revision", "");
        assert_eq!(v["routing_generation"], 1);
        assert_eq!(v["last_reload"], "applied");
        assert_eq!(v["fleet"], Value::Null);
    }

    #[test]
    fn in_a_fleet_candidates_and_backends_show_the_remote_load_the_edge_holds() {
        let (a, _dir) = admin(false);
        let state = Arc::new(FollowState::default());
        state.installed.store(7, Ordering::Relaxed);
        state.current.store(8, Ordering::Relaxed);
        a.set_fleet(AdminFleet {
            pop: "eu".into(),
            state,
        });
        let edge = a.edge.get().unwrap();
        let snap = edge.router.table().snapshot();
        let b = &snap.backends[0];
        b.load.set_remote(3);
        let (_, v) = get(&a, Method::GET, "/explain", "client=81.2.69.142");
        let c = v["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == b.id.as_str())
            .unwrap();
        assert_eq!(
            (&c["own"], &c["remote"], &c["global"], &c["lent"]),
            (&json!(0), &json!(3), &json!(3), &json!(0)),
            "{c}"
        );
        assert_eq!(c["lease"], Value::Null);
        assert_eq!(v["fleet"]["pop"], "eu");
        assert!(v["spread"].is_array());
        let (_, v) = get(&a, Method::GET, "/backends", "");
        let row = v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == b.id.as_str())
            .unwrap();
        assert_eq!(row["remote"], 3);
        let (_, v) = get(&a, Method::GET, "/revision", "");
        assert_eq!(v["fleet"]["installed_revision"], 7);
        assert_eq!(v["fleet"]["current_revision"], 8);
        assert_eq!(v["fleet"]["last_sync_unix_ms"], Value::Null);
    }

    #[test]
    fn before_the_edge_is_loaded_the_endpoints_answer_503() {
        let a = Admin::default();
        let (status, v) = get(&a, Method::GET, "/backends", "");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(v["error"].is_string());
    }
}
