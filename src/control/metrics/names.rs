//! Every metric geoedge exports, in one place: name, type, help text and
//! label names. The collectors build their series from these definitions,
//! `docs/metrics.md` lists them (a unit test checks it does), and the label
//! values always come from small fixed enums or from routing.db (backend
//! ids, regions, WireGuard peer keys), never from a client's address or an
//! error's text.

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Counts in buckets, with a sum and a count.
    Histogram,
}

/// One metric's definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Def {
    /// Full name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Help text (the `# HELP` line).
    pub help: &'static str,
    /// Label names, in order.
    pub labels: &'static [&'static str],
}

const fn def(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    labels: &'static [&'static str],
) -> Def {
    Def {
        name,
        kind,
        help,
        labels,
    }
}

use Kind::{Counter, Gauge, Histogram};

// --- Connections (counted by the proxy) ---

/// Client connections by outcome (`result`: [`ConnResult`](super::ConnResult)).
pub const CONNECTIONS_TOTAL: Def = def(
    "edge_connections_total",
    Counter,
    "Client connections by outcome: ok (relayed to a backend), no_backend, connect_failed, bad_proxy_header, proxy_header_timeout, over_limit (closed at once at the connection limit), local_error (refused at once: this host could not open a backend socket), loop (the edge itself, come back through a backend), client_limit and client_rate (a client over its per-client cap or rate, closed before any backend is dialed), not_tls (an sni_listen listener got no TLS ClientHello).",
    &["result"],
);
/// Client connections open now.
pub const CONNECTIONS_CURRENT: Def = def(
    "edge_connections_current",
    Gauge,
    "Client connections open now, from accept to close (including those still reading a PROXY header).",
    &[],
);
/// Bytes relayed, by direction.
pub const BYTES_TOTAL: Def = def(
    "edge_bytes_total",
    Counter,
    "Payload bytes relayed: up is client to backend, down is backend to client (PROXY headers not counted).",
    &["direction"],
);

/// The global connection limit.
pub const CONNECTIONS_LIMIT: Def = def(
    "edge_connections_limit",
    Gauge,
    "Client connections open at once at most (--max-connections, or derived from the descriptor limit); more are closed at once and counted over_limit.",
    &[],
);
/// Accept errors by kind.
pub const ACCEPT_ERRORS_TOTAL: Def = def(
    "edge_accept_errors_total",
    Counter,
    "Failed accepts on the client listeners by reason: out_of_fds (EMFILE/ENFILE, accepting pauses 100 ms), aborted (skipped at once), no_memory, other.",
    &["reason"],
);

/// Clients the per-client limits track now.
pub const CLIENT_TABLE_ENTRIES: Def = def(
    "edge_client_table_entries",
    Gauge,
    "Clients (masked addresses, per app) the per-client limits track now; at most --client-table-size.",
    &[],
);
/// Clients the per-client limits can track at once.
pub const CLIENT_TABLE_CAPACITY: Def = def(
    "edge_client_table_capacity",
    Gauge,
    "Clients the per-client limits can track at once: --client-table-size, rounded up to a multiple of the table's 64 shards.",
    &[],
);
/// Clients forgotten to make room.
pub const CLIENT_TABLE_EVICTIONS_TOTAL: Def = def(
    "edge_client_table_evictions_total",
    Counter,
    "Clients the per-client limits forgot, least recently seen first, to make room for others (the table was full).",
    &[],
);
/// ClientHellos read on sni_listen listeners, by what their name matched.
pub const SNI_HELLOS_TOTAL: Def = def(
    "edge_sni_hellos_total",
    Counter,
    "TLS ClientHellos read on sni_listen listeners, by result: routed (sni_routes matched the server name), unmatched (no route: the listener's default app), no_sni (no server name: the default app).",
    &["result"],
);
/// Access-log lines by result.
pub const ACCESS_LOG_LINES_TOTAL: Def = def(
    "edge_access_log_lines_total",
    Counter,
    "Access-log lines by result: written, dropped (the sink was slower than the traffic and the queue was full; no worker waits), failed (the write failed, e.g. disk full).",
    &["result"],
);

// --- Backends (read from the routing table at scrape time) ---

/// Connections held per backend.
pub const BACKEND_CONNECTIONS_CURRENT: Def = def(
    "edge_backend_connections_current",
    Gauge,
    "Connections held on a backend now (counted from the moment it is chosen).",
    &["backend", "region"],
);
/// Connections on a backend across the fleet.
pub const BACKEND_GLOBAL_CONNECTIONS: Def = def(
    "edge_backend_global_connections",
    Gauge,
    "Connections on a backend across the fleet: this edge's plus those the other edges last reported (equal to edge_backend_connections_current without --nats).",
    &["backend"],
);
/// Soft limit per backend.
pub const BACKEND_SOFT_LIMIT: Def = def(
    "edge_backend_soft_limit",
    Gauge,
    "The backend's soft limit: above it, the backend yields new clients to peers as near.",
    &["backend"],
);
/// Hard limit per backend.
pub const BACKEND_HARD_LIMIT: Def = def(
    "edge_backend_hard_limit",
    Gauge,
    "The backend's hard limit: it never holds more connections than this.",
    &["backend"],
);
/// Whether a backend takes new clients at all.
pub const BACKEND_ELIGIBLE: Def = def(
    "edge_backend_eligible",
    Gauge,
    "1 when the backend takes new clients (healthy, not deleted, weight above 0, and neither down by active checks nor ejected), else 0.",
    &["backend"],
);
/// Connect duration per backend.
pub const BACKEND_CONNECT_DURATION: Def = def(
    "edge_backend_connect_duration_seconds",
    Histogram,
    "Time to open a TCP connection to the backend, successful connects only.",
    &["backend"],
);
/// Connect failures per backend and reason.
pub const CONNECT_FAILURES_TOTAL: Def = def(
    "edge_connect_failures_total",
    Counter,
    "Failed connects to a backend by reason: refused, timeout, unreachable, other, local (this host was out of descriptors, memory, buffers or source ports; not counted against the backend).",
    &["backend", "reason"],
);

/// Whether a backend's health lets it take clients.
pub const BACKEND_UP: Def = def(
    "edge_backend_up",
    Gauge,
    "1 when the backend's health lets it take clients: healthy in routing.db, not down by active checks, not ejected after connect failures; else 0.",
    &["backend"],
);
/// A backend's health state, one series per state.
pub const BACKEND_HEALTH_STATE: Def = def(
    "edge_backend_health_state",
    Gauge,
    "1 for the backend's current health state (up, down by active checks, ejected after connect failures, operator_down: healthy = 0 in routing.db), 0 for the others.",
    &["backend", "state"],
);
/// Ejections per backend.
pub const BACKEND_EJECTIONS_TOTAL: Def = def(
    "edge_backend_ejections_total",
    Counter,
    "Times the backend was ejected after consecutive failed connects or a connection loop through it, including again after a failed trial connect.",
    &["backend"],
);

// --- Backends by region (always; the per-backend series above only while
// the table has at most --metrics-backend-series backends) ---

/// Backends per region and health state.
pub const REGION_BACKENDS: Def = def(
    "edge_region_backends",
    Gauge,
    "Backends in routing.db per region and health state (up, down, ejected, operator_down).",
    &["region", "state"],
);
/// Connections per region.
pub const REGION_CONNECTIONS_CURRENT: Def = def(
    "edge_region_connections_current",
    Gauge,
    "Connections this edge holds now to the backends of a region.",
    &["region"],
);
/// Connect failures per region and reason.
pub const REGION_CONNECT_FAILURES_TOTAL: Def = def(
    "edge_region_connect_failures_total",
    Counter,
    "Failed connects to the backends of a region by reason, summed over the backends now in routing.db (a removed backend's count leaves the sum).",
    &["region", "reason"],
);
/// Connect duration per region.
pub const REGION_CONNECT_DURATION: Def = def(
    "edge_region_connect_duration_seconds",
    Histogram,
    "Time to open a TCP connection to a backend of the region, successful connects only, summed over the backends now in routing.db.",
    &["region"],
);
/// Ejections per region.
pub const REGION_EJECTIONS_TOTAL: Def = def(
    "edge_region_backend_ejections_total",
    Counter,
    "Ejections of the backends of a region after consecutive failed connects, summed over the backends now in routing.db.",
    &["region"],
);
/// Backends whose own series are left out.
pub const BACKENDS_OMITTED: Def = def(
    "edge_metrics_backends_omitted",
    Gauge,
    "Backends whose per-backend series are left out of this scrape because routing.db holds more than --metrics-backend-series backends (0: every backend has its series).",
    &[],
);

/// Active health checks by result.
pub const HEALTH_CHECKS_TOTAL: Def = def(
    "edge_health_checks_total",
    Counter,
    "Active health checks of backends by result: ok, refused, timeout, unreachable, other, local (this host could not open the socket; not counted against the backend).",
    &["result"],
);

// --- Routing ---

/// Decisions by tier.
pub const ROUTING_DECISIONS_TOTAL: Def = def(
    "edge_routing_decisions_total",
    Counter,
    "Routing decisions by how they were reached: sticky, country, region, distance, none (no backend could take the client).",
    &["tier"],
);
/// Reloads by result.
pub const ROUTING_RELOADS_TOTAL: Def = def(
    "edge_routing_reloads_total",
    Counter,
    "routing.db loads by result: applied, or refused as unreadable, locked, invalid or emptied (the previous table keeps serving).",
    &["result"],
);
/// Generation of the table in service.
pub const ROUTING_GENERATION: Def = def(
    "edge_routing_generation",
    Gauge,
    "Generation of the routing table in service (+1 per applied change).",
    &[],
);
/// When the last reload applied.
pub const ROUTING_LAST_RELOAD: Def = def(
    "edge_routing_last_reload_timestamp_seconds",
    Gauge,
    "Unix time of the last applied routing.db load.",
    &[],
);
/// Sticky bindings held.
pub const BINDINGS_CURRENT: Def = def(
    "edge_bindings_current",
    Gauge,
    "Sticky client bindings held now.",
    &[],
);
/// Bindings evicted from a full table.
pub const BINDING_EVICTIONS_TOTAL: Def = def(
    "edge_binding_evictions_total",
    Counter,
    "Bindings of clients seen once evicted because the binding table was full.",
    &[],
);
/// Bindings expired.
pub const BINDING_EXPIRATIONS_TOTAL: Def = def(
    "edge_binding_expirations_total",
    Counter,
    "Bindings dropped after being idle for the binding TTL.",
    &[],
);

// --- GeoIP ---

/// Lookups by result.
pub const GEOIP_LOOKUPS_TOTAL: Def = def(
    "edge_geoip_lookups_total",
    Counter,
    "GeoIP lookups by result: found, not_found, private, error, no_database.",
    &["result"],
);
/// Build time of the database in service.
pub const GEOIP_BUILD_EPOCH: Def = def(
    "edge_geoip_build_epoch_seconds",
    Gauge,
    "build_epoch of the GeoIP database in service (Unix time the vendor built it).",
    &[],
);
/// GeoIP reloads by result.
pub const GEOIP_RELOADS_TOTAL: Def = def(
    "edge_geoip_reloads_total",
    Counter,
    "GeoIP database reloads by result: ok, failed (the previous database keeps serving).",
    &["result"],
);

// --- WireGuard (sampled from the device once a second) ---

/// Peers configured.
pub const WIREGUARD_PEERS: Def = def(
    "edge_wireguard_peers",
    Gauge,
    "WireGuard peers configured on the backhaul interface.",
    &[],
);
/// Bytes per peer and direction.
pub const WIREGUARD_PEER_BYTES_TOTAL: Def = def(
    "edge_wireguard_peer_bytes_total",
    Counter,
    "WireGuard datagram bytes per peer: rx authenticated from the peer, tx sent to it.",
    &["peer", "direction"],
);
/// Last handshake per peer.
pub const WIREGUARD_PEER_LAST_HANDSHAKE: Def = def(
    "edge_wireguard_peer_last_handshake_timestamp_seconds",
    Gauge,
    "Unix time of the last completed handshake with the peer (0: none yet).",
    &["peer"],
);
/// Handshakes by result.
pub const WIREGUARD_HANDSHAKES_TOTAL: Def = def(
    "edge_wireguard_handshakes_total",
    Counter,
    "WireGuard handshakes by result: completed, unknown_peer (initiation from a key not configured), under_load (refused under load for want of a sender address: 0 from the device; a flood shows in cookie replies and drops).",
    &["result"],
);
/// Invalid datagrams.
pub const WIREGUARD_INVALID_PACKETS_TOTAL: Def = def(
    "edge_wireguard_invalid_packets_total",
    Counter,
    "Datagrams on the WireGuard port that failed a check (malformed, unknown key or index, failed authentication, replayed, out of order, source not allowed).",
    &[],
);

/// Every packet or datagram the WireGuard engine dropped, by reason.
pub const WIREGUARD_DROPS_TOTAL: Def = def(
    "edge_wireguard_drops_total",
    Counter,
    "Packets and datagrams the WireGuard engine dropped, by reason: not_ip, no_route, no_endpoint, buffer_too_small, malformed, unknown_peer, unknown_index, unauthenticated, replayed, unexpected, under_load, expired, source_not_allowed, rate_limited (an initiation with a valid cookie, under load, from a source past its share), rate_limiter_full (the same from a new source while the per-source table is full).",
    &["reason"],
);
/// Cookie replies sent.
pub const WIREGUARD_COOKIE_REPLIES_TOTAL: Def = def(
    "edge_wireguard_cookie_replies_total",
    Counter,
    "Cookie replies sent: handshake messages without a valid cookie while more than 100 arrive in a second.",
    &[],
);
/// Unknown-key initiations recognized without a key agreement.
pub const WIREGUARD_UNKNOWN_PEER_REPLAYS_TOTAL: Def = def(
    "edge_wireguard_unknown_peer_replays_total",
    Counter,
    "Of the initiations from unknown keys, those recognized as a replay of one already decrypted, without a second Diffie-Hellman.",
    &[],
);

/// Source addresses the handshake limiter tracks.
pub const WIREGUARD_RATE_LIMITER_SOURCES: Def = def(
    "edge_wireguard_rate_limiter_sources",
    Gauge,
    "Source addresses (IPv4, or IPv6 /64) the per-source handshake limiter tracks now; at its cap, initiations from new sources under load are dropped as rate_limiter_full.",
    &[],
);

// --- The process ---

/// Config reloads (SIGHUP) by result.
pub const CONFIG_RELOADS_TOTAL: Def = def(
    "edge_config_reloads_total",
    Counter,
    "Config reloads on SIGHUP by result: applied, or failed (the file or a value in it is invalid; the settings in force stay).",
    &["result"],
);

/// Connections the metrics listener closed itself.
pub const METRICS_CONNECTIONS_CLOSED_TOTAL: Def = def(
    "edge_metrics_connections_closed_total",
    Counter,
    "Connections the metrics and health listener closed itself, by reason: header_timeout (no complete request within 2 s), evicted (the oldest one without a request, closed for a new one at 512 open), over_limit (a new one, closed at once: 512 open and all answering), timeout (open for 10 s).",
    &["reason"],
);

/// Whether the edge is ready.
pub const READY: Def = def(
    "edge_ready",
    Gauge,
    "1 while /readyz answers ready (routing and GeoIP loaded, listeners bound, not draining), else 0.",
    &[],
);

// --- The fleet's routing table (with --nats) ---

/// The routing.db revision installed from the fleet's NATS bucket.
pub const FLEET_REVISION: Def = def(
    "edge_fleet_revision",
    Gauge,
    "The fleet routing.db revision installed here (0: none yet).",
    &[],
);
/// The current revision last seen.
pub const FLEET_CURRENT_REVISION: Def = def(
    "edge_fleet_current_revision",
    Gauge,
    "The fleet's current routing.db revision, as last seen (0: none seen yet).",
    &[],
);
/// Seconds since the follower last read the current revision.
pub const FLEET_SYNC_AGE: Def = def(
    "edge_fleet_sync_age_seconds",
    Gauge,
    "Seconds since this edge last read the fleet's current revision (since it started, before the first read).",
    &[],
);
/// Revisions installed.
pub const FLEET_INSTALLS_TOTAL: Def = def(
    "edge_fleet_installs_total",
    Counter,
    "Fleet routing.db revisions installed by this edge.",
    &[],
);
/// Failed follow steps by reason.
pub const FLEET_FOLLOW_ERRORS_TOTAL: Def = def(
    "edge_fleet_follow_errors_total",
    Counter,
    "Failed steps following the fleet's routing table, by reason: connect (no NATS server), bucket (buckets missing or refused), watch (current revision unreadable), fetch, digest (file's sha256 is not its revision's: never installed), invalid (file fails validation: never installed), install (write or rename failed), status (status key not written).",
    &["reason"],
);
/// The age of the freshest load report from another edge.
pub const FLEET_LOAD_REPORT_AGE: Def = def(
    "edge_fleet_load_report_age_seconds",
    Gauge,
    "Age of the freshest load report from another edge of the fleet; NaN while no report counts (none yet, or all older than 1 s).",
    &[],
);
/// Edges whose load reports count now.
pub const FLEET_LOAD_REPORTERS: Def = def(
    "edge_fleet_load_reporters",
    Gauge,
    "Other edges whose load reports count now (received within the last second).",
    &[],
);
/// Slots of other POPs' backends this edge holds by lease.
pub const FLEET_LEASE_SLOTS: Def = def(
    "edge_fleet_lease_slots",
    Gauge,
    "Slots of other POPs' backends this edge holds by unexpired lease (a client takes one while connected).",
    &[],
);
/// Slots of this POP's backends lent to other edges.
pub const FLEET_LENT_SLOTS: Def = def(
    "edge_fleet_lent_slots",
    Gauge,
    "Slots of this POP's backends lent to other edges now (reserved against their hard limits).",
    &[],
);
/// Lease requests by result.
pub const FLEET_LEASE_REQUESTS_TOTAL: Def = def(
    "edge_fleet_lease_requests_total",
    Counter,
    "Lease requests this edge sent to the owners of other POPs' backends, by result: granted (all slots asked), partial, refused (no room), unanswered (no answer within 1 s: the fallback applies).",
    &["result"],
);
/// Clients to other POPs' backends by how they were admitted.
pub const FLEET_LEASE_ADMISSIONS_TOTAL: Def = def(
    "edge_fleet_lease_admissions_total",
    Counter,
    "Clients this edge tried to send to other POPs' backends, by result: lease (within a lease), fallback (no valid lease and the owner silent, or no other backend: lease_fallback share), refused (no slot: the next best backend is tried), waiting (no lease yet, asked for at once: the client waits for the answer, at most 1 s).",
    &["result"],
);
/// Spills spread over the next backends with room.
pub const FLEET_SPILLS_SPREAD_TOTAL: Def = def(
    "edge_fleet_spills_spread_total",
    Counter,
    "Decisions that spilled (a nearer backend at its soft limit by the fleet's load) and were spread over the next backends with room in proportion to their headroom.",
    &[],
);
/// routing.db edited by hand since the install.
pub const FLEET_DIVERGED: Def = def(
    "edge_fleet_diverged",
    Gauge,
    "1 while routing.db differs from the installed fleet revision (edited by hand); the next publish replaces it.",
    &[],
);

/// Every metric above, in the order they are documented (the tests check
/// the conventions and the documentation against it).
#[cfg(test)]
pub const ALL: &[Def] = &[
    CONNECTIONS_TOTAL,
    CONNECTIONS_CURRENT,
    BYTES_TOTAL,
    CONNECTIONS_LIMIT,
    ACCEPT_ERRORS_TOTAL,
    CLIENT_TABLE_ENTRIES,
    CLIENT_TABLE_CAPACITY,
    CLIENT_TABLE_EVICTIONS_TOTAL,
    SNI_HELLOS_TOTAL,
    ACCESS_LOG_LINES_TOTAL,
    BACKEND_CONNECTIONS_CURRENT,
    BACKEND_GLOBAL_CONNECTIONS,
    BACKEND_SOFT_LIMIT,
    BACKEND_HARD_LIMIT,
    BACKEND_ELIGIBLE,
    BACKEND_CONNECT_DURATION,
    CONNECT_FAILURES_TOTAL,
    BACKEND_UP,
    BACKEND_HEALTH_STATE,
    BACKEND_EJECTIONS_TOTAL,
    REGION_BACKENDS,
    REGION_CONNECTIONS_CURRENT,
    REGION_CONNECT_FAILURES_TOTAL,
    REGION_CONNECT_DURATION,
    REGION_EJECTIONS_TOTAL,
    BACKENDS_OMITTED,
    HEALTH_CHECKS_TOTAL,
    ROUTING_DECISIONS_TOTAL,
    ROUTING_RELOADS_TOTAL,
    ROUTING_GENERATION,
    ROUTING_LAST_RELOAD,
    BINDINGS_CURRENT,
    BINDING_EVICTIONS_TOTAL,
    BINDING_EXPIRATIONS_TOTAL,
    GEOIP_LOOKUPS_TOTAL,
    GEOIP_BUILD_EPOCH,
    GEOIP_RELOADS_TOTAL,
    WIREGUARD_PEERS,
    WIREGUARD_PEER_BYTES_TOTAL,
    WIREGUARD_PEER_LAST_HANDSHAKE,
    WIREGUARD_HANDSHAKES_TOTAL,
    WIREGUARD_INVALID_PACKETS_TOTAL,
    WIREGUARD_DROPS_TOTAL,
    WIREGUARD_COOKIE_REPLIES_TOTAL,
    WIREGUARD_UNKNOWN_PEER_REPLAYS_TOTAL,
    WIREGUARD_RATE_LIMITER_SOURCES,
    CONFIG_RELOADS_TOTAL,
    FLEET_REVISION,
    FLEET_CURRENT_REVISION,
    FLEET_SYNC_AGE,
    FLEET_INSTALLS_TOTAL,
    FLEET_FOLLOW_ERRORS_TOTAL,
    FLEET_DIVERGED,
    FLEET_LOAD_REPORT_AGE,
    FLEET_LOAD_REPORTERS,
    FLEET_LEASE_SLOTS,
    FLEET_LENT_SLOTS,
    FLEET_LEASE_REQUESTS_TOTAL,
    FLEET_LEASE_ADMISSIONS_TOTAL,
    FLEET_SPILLS_SPREAD_TOTAL,
    METRICS_CONNECTIONS_CLOSED_TOTAL,
    READY,
];

/// Metrics of the process collector (from the `prometheus` crate), listed
/// in the documentation beside geoedge's own.
#[cfg(test)]
pub const PROCESS: &[&str] = &[
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_the_conventions() {
        let mut seen = std::collections::HashSet::new();
        for d in ALL {
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert!(d.name.starts_with("edge_"), "{}", d.name);
            assert!(
                d.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                d.name
            );
            match d.kind {
                Kind::Counter => assert!(d.name.ends_with("_total"), "{}", d.name),
                _ => assert!(!d.name.ends_with("_total"), "{}", d.name),
            }
            if d.kind == Kind::Histogram {
                assert!(d.name.ends_with("_seconds"), "{}", d.name);
            }
            assert!(!d.help.is_empty());
            for l in d.labels {
                assert!(
                    [
                        "result",
                        "direction",
                        "backend",
                        "region",
                        "reason",
                        "tier",
                        "peer",
                        "state"
                    ]
                    .contains(l),
                    "{}: label {l} is not one of the bounded ones",
                    d.name
                );
            }
        }
    }

    #[test]
    fn docs_list_every_metric() {
        let doc = include_str!("../../../docs/metrics.md");
        for d in ALL {
            assert!(
                doc.contains(&format!("`{}`", d.name)),
                "docs/metrics.md does not list {}",
                d.name
            );
        }
        for name in PROCESS {
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/metrics.md: {name}"
            );
        }
    }
}
