//! Every setting's default and bounds, written once. [`Settings::resolve`]
//! applies them after the flags, the environment and the file are merged,
//! so all three are held to the same bounds with the same message, and
//! `--help` shows the defaults from here ([`shown`]). The binding and
//! backend-health defaults are the routing core's own
//! ([`BindingConfig::default`], [`HealthConfig::default`]).
//!
//! [`Settings::resolve`]: super::Settings::resolve

use std::ops::RangeInclusive;
use std::time::Duration;

use anyhow::bail;
use geoedge_routing::{BindingConfig, HealthConfig};
use geoedge_wireguard::engine::REKEY_AFTER_TIME;

/// `region`
pub const REGION: &str = "eu";
/// The longest `pop` name (it is a key of the fleet's status bucket).
pub const POP_NAME_MAX: usize = 64;
/// The fleet's JetStream buckets: the key-value bucket (current revision,
/// the revision log, each POP's status) and the object store (the
/// routing.db files) share this name.
pub const FLEET_BUCKET: &str = "geoedge_routing";
/// A following edge compares its installed routing.db with the current
/// revision this often, whatever its watch says (anti-entropy).
pub const FLEET_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// A following edge writes its status key this often.
pub const FLEET_STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// `geoedge db status` marks a POP silent when its status is older.
pub const FLEET_SILENT_AFTER: Duration = Duration::from_secs(30);
/// How long a connect to the NATS servers, and each request, may take.
pub const NATS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the first publish waits for the fleet's buckets to be made
/// (a replicated stream's leader elected).
pub const BUCKET_CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// An edge reports its backend load to the others this often.
pub const LOAD_INTERVAL: Duration = Duration::from_millis(250);
/// ... and at once when a backend's count moved by this many since the
/// last report.
pub const LOAD_BIG_CHANGE: u32 = 32;
/// Another edge's load report counts this long (four intervals).
pub const LOAD_MAX_AGE: Duration = Duration::from_secs(1);
/// `lease_fallback`
pub const LEASE_FALLBACK: &str = "share";
/// How long a lease of another POP's backend lasts (from its request).
pub const LEASE_TERM: Duration = Duration::from_secs(3);
/// How often leases are renewed, asked for and expired.
pub const LEASE_TICK: Duration = Duration::from_millis(250);
/// How long a client waits for a lease of the backend that would serve
/// it (another POP's, asked for at once) before it goes to the next best:
/// as long as a request may take ([`LEASE_REQUEST_TIMEOUT`]), so that it
/// decides on the owner's answer, or on the owner being unreachable.
pub const LEASE_WAIT: Duration = LEASE_REQUEST_TIMEOUT;
/// The fewest slots a lease request asks for.
pub const LEASE_MIN_SLOTS: u32 = 4;
/// A lease request unanswered this long counts as unanswered (the owner
/// unreachable: the fallback applies).
pub const LEASE_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// The NATS client pings its server this often and leaves it for another
/// after three pings go unanswered: a server cut off (its TCP connection
/// silently dead) is left within about 10 s instead of 3 minutes.
pub const NATS_PING_INTERVAL: Duration = Duration::from_secs(3);
/// After a failed follow step, the next try waits this long at first,
/// doubling up to [`FLEET_RETRY_MAX`].
pub const FLEET_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between two follow tries.
pub const FLEET_RETRY_MAX: Duration = Duration::from_secs(10);
/// `app`
pub const APP: &str = "default";
/// `listen`
pub const LISTEN: &str = "0.0.0.0:8080";
/// `send_proxy_protocol`
pub const SEND_PROXY_PROTOCOL: &str = "off";
/// `geoedge demo`'s `listen`: loopback only.
pub const DEMO_LISTEN: &str = "127.0.0.1:8080";
/// `geoedge demo`'s `proxy_protocol_from`: loopback, so that `geoedge
/// probe` can claim any client address.
pub const DEMO_PROXY_PROTOCOL_FROM: &[&str] = &["127.0.0.0/8", "::1/128"];
/// `geoedge demo`'s `send_proxy_protocol`: its backends greet each client
/// by the address they are told.
pub const DEMO_SEND_PROXY_PROTOCOL: &str = "v1";
/// `connect_timeout`
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// `connect_attempts`
pub const CONNECT_ATTEMPTS: u32 = 2;
/// `connect_attempts`' bounds.
pub const CONNECT_ATTEMPTS_RANGE: RangeInclusive<u32> = 1..=16;
/// `idle_timeout`
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// `half_close`
pub const HALF_CLOSE: bool = true;
/// `splice`
pub const SPLICE: bool = true;
/// `proxy_header_timeout`
pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// `drain_timeout`
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// `client_max_connections`' bounds (unset: no cap).
pub const CLIENT_MAX_CONNECTIONS_RANGE: RangeInclusive<u32> = 1..=(1 << 24);
/// `client_rate`
pub const CLIENT_RATE: &str = "off";
/// The period of a rate that routing.db's `apps` gives a count and no
/// period, when the `client_rate` setting has none either.
pub const CLIENT_RATE_PERIOD: Duration = Duration::from_secs(60);
/// `client_ipv4_prefix`
pub const CLIENT_IPV4_PREFIX: u8 = 32;
/// `client_ipv6_prefix`
pub const CLIENT_IPV6_PREFIX: u8 = 64;
/// `client_table_size`: at about 100 bytes a client, 10 MB.
pub const CLIENT_TABLE_SIZE: usize = 100_000;
/// `client_table_size`'s bounds.
pub const CLIENT_TABLE_SIZE_RANGE: RangeInclusive<usize> = 1..=100_000_000;
/// `access_log`
pub const ACCESS_LOG: &str = "off";
/// `access_log_format`
pub const ACCESS_LOG_FORMAT: &str = "text";
/// Access-log lines waiting for the writer at most; past it, lines are
/// dropped (and counted) rather than a worker waiting.
pub const ACCESS_LOG_QUEUE: usize = 64 * 1024;
/// How long shutdown waits for the access log's queued lines to be written.
pub const ACCESS_LOG_FLUSH: Duration = Duration::from_secs(2);
/// `workers`' bounds (the default is one per CPU).
pub const WORKERS_RANGE: RangeInclusive<usize> = 1..=1024;
/// `engine`: each worker's connections on the worker's own epoll loop
/// (`tokio`: on a tokio runtime per worker).
pub const ENGINE: &str = "epoll";
/// `binding_ipv4_prefix`' bounds.
pub const BINDING_IPV4_PREFIX_RANGE: RangeInclusive<u8> = 0..=32;
/// `binding_ipv6_prefix`' bounds.
pub const BINDING_IPV6_PREFIX_RANGE: RangeInclusive<u8> = 0..=128;
/// `wg_listen_port`
pub const WG_LISTEN_PORT: u16 = 51820;
/// `wg_attach`
pub const WG_ATTACH: bool = false;
/// `wg_mtu`
pub const WG_MTU: u16 = 1420;
/// `wg_rekey_after`'s bounds; the default is WireGuard's own, the upper
/// bound.
pub const WG_REKEY_AFTER_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=REKEY_AFTER_TIME;
/// `metrics_listen`
pub const METRICS_LISTEN: &str = "127.0.0.1:9090";
/// `metrics_backend_series`: per-backend metric series are exported while
/// routing.db holds at most this many backends (at about 30 series a
/// backend, 1,000 backends make a scrape of 30k lines).
pub const METRICS_BACKEND_SERIES: usize = 1000;
/// `admin_write`: the admin endpoints only read unless this is on.
pub const ADMIN_WRITE: bool = false;
/// `log_format`
pub const LOG_FORMAT: &str = "text";
/// `health_check_interval`
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// `health_check_timeout`
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// `health_check_max_rate`: at the default interval, up to 2,000 backends
/// are each checked every interval.
pub const HEALTH_CHECK_MAX_RATE: u32 = 1000;
/// `health_check_max_rate`'s bounds.
pub const HEALTH_CHECK_MAX_RATE_RANGE: RangeInclusive<u32> = 1..=1_000_000;
/// `health_check_rise` and `health_check_fall`'s bounds.
pub const RISE_FALL_RANGE: RangeInclusive<u32> = 1..=100;
/// `eject_after`'s bounds (0 turns ejection off).
pub const EJECT_AFTER_RANGE: RangeInclusive<u32> = 0..=1000;
/// The longest of the health durations (interval, timeout, backoffs).
pub const HEALTH_DURATION_MAX: Duration = Duration::from_secs(3600);

/// `value`, or an error naming `key` and the bounds when it is outside.
pub fn bounded<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: &RangeInclusive<T>,
) -> anyhow::Result<T> {
    if !range.contains(&value) {
        bail!("{key} {value}: {} to {}", range.start(), range.end());
    }
    Ok(value)
}

/// The defaults `geoedge demo --help` shows where the demo's own differ
/// from [`shown`] (the demo applies them in `commands::cli::run`).
pub fn demo_shown() -> Vec<(&'static str, String)> {
    vec![
        ("listen", DEMO_LISTEN.into()),
        ("proxy_protocol_from", DEMO_PROXY_PROTOCOL_FROM.join(",")),
        ("send_proxy_protocol", DEMO_SEND_PROXY_PROTOCOL.into()),
    ]
}

/// The default each setting's `--help` shows, by setting (the flag's id).
pub fn shown() -> Vec<(&'static str, String)> {
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let on = |b: bool| if b { "on" } else { "off" }.to_owned();
    let bindings = BindingConfig::default();
    let health = HealthConfig::default();
    vec![
        ("region", REGION.into()),
        ("pop", "the region".into()),
        ("lease_fallback", LEASE_FALLBACK.into()),
        ("app", APP.into()),
        ("binding_ttl", d(bindings.ttl)),
        ("binding_ipv4_prefix", bindings.ipv4_prefix.to_string()),
        ("binding_ipv6_prefix", bindings.ipv6_prefix.to_string()),
        ("binding_max_entries", bindings.max_entries.to_string()),
        ("listen", LISTEN.into()),
        ("send_proxy_protocol", SEND_PROXY_PROTOCOL.into()),
        ("connect_timeout", d(CONNECT_TIMEOUT)),
        ("connect_attempts", CONNECT_ATTEMPTS.to_string()),
        ("idle_timeout", d(IDLE_TIMEOUT)),
        ("half_close", on(HALF_CLOSE)),
        ("splice", on(SPLICE)),
        ("proxy_header_timeout", d(PROXY_HEADER_TIMEOUT)),
        ("drain_timeout", d(DRAIN_TIMEOUT)),
        ("workers", "one per CPU".into()),
        ("engine", ENGINE.into()),
        ("client_max_connections", "no cap".into()),
        ("client_rate", CLIENT_RATE.into()),
        ("client_ipv4_prefix", CLIENT_IPV4_PREFIX.to_string()),
        ("client_ipv6_prefix", CLIENT_IPV6_PREFIX.to_string()),
        ("client_table_size", CLIENT_TABLE_SIZE.to_string()),
        ("access_log", ACCESS_LOG.into()),
        ("access_log_format", ACCESS_LOG_FORMAT.into()),
        ("wg_listen_port", WG_LISTEN_PORT.to_string()),
        ("wg_attach", on(WG_ATTACH)),
        ("wg_mtu", WG_MTU.to_string()),
        (
            "wg_rekey_after",
            format!("{}s, WireGuard's own", WG_REKEY_AFTER_RANGE.end().as_secs()),
        ),
        ("metrics_listen", METRICS_LISTEN.into()),
        ("metrics_backend_series", METRICS_BACKEND_SERIES.to_string()),
        ("admin_write", on(ADMIN_WRITE)),
        ("log_format", LOG_FORMAT.into()),
        ("health_check_interval", d(HEALTH_CHECK_INTERVAL)),
        ("health_check_timeout", d(HEALTH_CHECK_TIMEOUT)),
        ("health_check_max_rate", HEALTH_CHECK_MAX_RATE.to_string()),
        ("health_check_rise", health.rise.to_string()),
        ("health_check_fall", health.fall.to_string()),
        ("eject_after", health.eject_after.to_string()),
        ("eject_backoff", d(health.backoff)),
        ("eject_backoff_max", d(health.backoff_max)),
    ]
}
