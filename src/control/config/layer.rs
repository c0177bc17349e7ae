//! [`Layer`]: one layer of settings as the flags, the environment or the
//! TOML file give it (every field optional), and how two layers stack.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{DurationOrOff, HumanDuration};

/// One layer of settings: what the flags and environment gave, or what the
/// file gave. Every field is optional; [`Layer::over`] stacks two layers.
#[derive(Debug, Clone, Default, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// routing.db to read (`geoedge route` without one uses the embedded sample table).
    #[arg(long, env = "GEOEDGE_ROUTING_DB", global = true, value_name = "PATH")]
    pub routing_db: Option<PathBuf>,

    /// MaxMind DB (GeoIP2/GeoLite2 City or Country, DB-IP City Lite); without one the embedded sample is used.
    #[arg(long, env = "GEOEDGE_GEOIP", global = true, value_name = "PATH")]
    pub geoip: Option<PathBuf>,

    /// This POP's region: clients GeoIP cannot locate are placed here.
    #[arg(long, env = "GEOEDGE_REGION", global = true, value_name = "ID")]
    pub region: Option<String>,

    /// App whose backends are chosen.
    #[arg(long, env = "GEOEDGE_APP", global = true, value_name = "APP")]
    pub app: Option<String>,

    /// A client keeps its backend until its binding has been idle this long.
    #[arg(
        long,
        env = "GEOEDGE_BINDING_TTL",
        global = true,
        value_name = "DURATION"
    )]
    pub binding_ttl: Option<HumanDuration>,

    /// IPv4 clients share a binding per network of this prefix length.
    #[arg(
        long,
        env = "GEOEDGE_BINDING_IPV4_PREFIX",
        global = true,
        value_name = "BITS"
    )]
    pub binding_ipv4_prefix: Option<u8>,

    /// IPv6 clients share a binding per network of this prefix length.
    #[arg(
        long,
        env = "GEOEDGE_BINDING_IPV6_PREFIX",
        global = true,
        value_name = "BITS"
    )]
    pub binding_ipv6_prefix: Option<u8>,

    /// At most this many bindings are kept; when full, clients seen only once go first.
    #[arg(
        long,
        env = "GEOEDGE_BINDING_MAX_ENTRIES",
        global = true,
        value_name = "N"
    )]
    pub binding_max_entries: Option<usize>,

    /// Client listener, `ADDR` or `APP=ADDR` to serve one app (repeatable; comma-separated in the variable).
    #[arg(
        long,
        env = "GEOEDGE_LISTEN",
        global = true,
        value_name = "[APP=]ADDR",
        value_delimiter = ','
    )]
    pub listen: Option<Vec<String>>,

    /// Accept a PROXY v1/v2 header only from these sources and take the client address from it (repeatable CIDR).
    #[arg(
        long,
        env = "GEOEDGE_PROXY_PROTOCOL_FROM",
        global = true,
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub proxy_protocol_from: Option<Vec<String>>,

    /// PROXY protocol header sent to backends: off, v1 or v2.
    #[arg(
        long,
        env = "GEOEDGE_SEND_PROXY_PROTOCOL",
        global = true,
        value_name = "off|v1|v2"
    )]
    pub send_proxy_protocol: Option<String>,

    /// Give up connecting to a backend after this long.
    #[arg(
        long,
        env = "GEOEDGE_CONNECT_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub connect_timeout: Option<HumanDuration>,

    /// Backends tried per client before giving up, the best first.
    #[arg(
        long,
        env = "GEOEDGE_CONNECT_ATTEMPTS",
        global = true,
        value_name = "N"
    )]
    pub connect_attempts: Option<u32>,

    /// Close a connection after no byte moved either way for this long
    /// (checked every eighth of it, so up to an eighth later).
    #[arg(
        long,
        env = "GEOEDGE_IDLE_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub idle_timeout: Option<HumanDuration>,

    /// When a backend ends its side, keep the client's open (half-close) until the client ends its own; off: close the client connection once the backend's last bytes are passed on.
    #[arg(long, env = "GEOEDGE_HALF_CLOSE", global = true, value_name = "on|off",
          value_parser = clap::builder::BoolishValueParser::new(), hide_possible_values = true)]
    pub half_close: Option<bool>,

    /// Move bulk transfers (past 256 KiB, in big reads) with splice(2) through a pooled pipe; off: copy them through the relay buffer, which some hosts move faster (measure with benches/load).
    #[arg(long, env = "GEOEDGE_SPLICE", global = true, value_name = "on|off",
          value_parser = clap::builder::BoolishValueParser::new(), hide_possible_values = true)]
    pub splice: Option<bool>,

    /// A trusted source must send its whole PROXY header within this long.
    #[arg(
        long,
        env = "GEOEDGE_PROXY_HEADER_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub proxy_header_timeout: Option<HumanDuration>,

    /// On SIGTERM/SIGINT, wait this long for open connections to finish.
    #[arg(
        long,
        env = "GEOEDGE_DRAIN_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub drain_timeout: Option<HumanDuration>,

    /// Worker threads serving client connections, each with its own epoll loop (or runtime) and its own SO_REUSEPORT listener per address.
    #[arg(long, env = "GEOEDGE_WORKERS", global = true, value_name = "N")]
    pub workers: Option<usize>,

    /// How each worker runs client connections: epoll (its own epoll loop, less CPU per connection) or tokio (a runtime per worker), every feature on either [default: epoll]; fixed at start.
    #[arg(
        long,
        env = "GEOEDGE_ENGINE",
        global = true,
        value_name = "epoll|tokio"
    )]
    pub engine: Option<String>,

    /// Client connections open at once, over all listeners; more are closed at once [default and maximum: what the descriptor limit holds, (RLIMIT_NOFILE - reserve) / 2; a larger value is lowered to it, with a warning].
    #[arg(long, env = "GEOEDGE_MAX_CONNECTIONS", global = true, value_name = "N")]
    pub max_connections: Option<u64>,

    /// WireGuard interface name; setting it turns the backhaul on (peers come from routing.db's wg_peers).
    #[arg(long, env = "GEOEDGE_WG_INTERFACE", global = true, value_name = "NAME")]
    pub wg_interface: Option<String>,

    /// WireGuard UDP listen port.
    #[arg(
        long,
        env = "GEOEDGE_WG_LISTEN_PORT",
        global = true,
        value_name = "PORT"
    )]
    pub wg_listen_port: Option<u16>,

    /// File holding this POP's WireGuard private key (mode 0600 or stricter).
    #[arg(
        long,
        env = "GEOEDGE_WG_PRIVATE_KEY_FILE",
        global = true,
        value_name = "PATH"
    )]
    pub wg_private_key_file: Option<PathBuf>,

    /// Overlay address of the WireGuard interface, with its prefix (repeatable), e.g. 10.77.0.1/16.
    #[arg(
        long,
        env = "GEOEDGE_WG_ADDRESS",
        global = true,
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub wg_address: Option<Vec<String>>,

    /// MTU of the WireGuard interface.
    #[arg(long, env = "GEOEDGE_WG_MTU", global = true, value_name = "BYTES")]
    pub wg_mtu: Option<u16>,

    /// Attach to an existing TUN interface of that name instead of creating one (no CAP_NET_ADMIN needed); the flag alone means on.
    #[arg(long, env = "GEOEDGE_WG_ATTACH", global = true, value_name = "on|off",
          num_args = 0..=1, default_missing_value = "on",
          value_parser = clap::builder::BoolishValueParser::new(), hide_possible_values = true)]
    pub wg_attach: Option<bool>,

    /// Rekey WireGuard sessions this POP initiated once they are this old, 1s to 120s.
    #[arg(
        long,
        env = "GEOEDGE_WG_REKEY_AFTER",
        global = true,
        value_name = "DURATION"
    )]
    pub wg_rekey_after: Option<HumanDuration>,

    /// Listener for /metrics, /healthz and /readyz, or `off`; never a client listener's address.
    #[arg(
        long,
        env = "GEOEDGE_METRICS_LISTEN",
        global = true,
        value_name = "ADDR|off"
    )]
    pub metrics_listen: Option<String>,

    /// Per-backend series on /metrics while routing.db holds at most this many backends; above it only the per-region series (edge_region_*).
    #[arg(
        long,
        env = "GEOEDGE_METRICS_BACKEND_SERIES",
        global = true,
        value_name = "N"
    )]
    pub metrics_backend_series: Option<u64>,

    /// Let the admin endpoints on the metrics listener change state (DELETE /bindings clears bindings); off: they only read (docs/admin.md).
    #[arg(long, env = "GEOEDGE_ADMIN_WRITE", global = true, value_name = "on|off",
          value_parser = clap::builder::BoolishValueParser::new(), hide_possible_values = true)]
    pub admin_write: Option<bool>,

    /// Log format on stderr: text or json (filtered by RUST_LOG).
    #[arg(
        long,
        env = "GEOEDGE_LOG_FORMAT",
        global = true,
        value_name = "text|json"
    )]
    pub log_format: Option<String>,

    /// Connect to every backend this often to check it, or `off`.
    #[arg(
        long,
        env = "GEOEDGE_HEALTH_CHECK_INTERVAL",
        global = true,
        value_name = "DURATION|off"
    )]
    pub health_check_interval: Option<DurationOrOff>,

    /// A health check fails when its connect takes longer than this.
    #[arg(
        long,
        env = "GEOEDGE_HEALTH_CHECK_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub health_check_timeout: Option<HumanDuration>,

    /// Active health checks per second at most over all backends: a table too large to check every interval at this rate is checked less often.
    #[arg(
        long,
        env = "GEOEDGE_HEALTH_CHECK_MAX_RATE",
        global = true,
        value_name = "N"
    )]
    pub health_check_max_rate: Option<u32>,

    /// Consecutive successful checks that bring a down backend back up.
    #[arg(
        long,
        env = "GEOEDGE_HEALTH_CHECK_RISE",
        global = true,
        value_name = "N"
    )]
    pub health_check_rise: Option<u32>,

    /// Consecutive failed checks that take a backend down.
    #[arg(
        long,
        env = "GEOEDGE_HEALTH_CHECK_FALL",
        global = true,
        value_name = "N"
    )]
    pub health_check_fall: Option<u32>,

    /// Eject a backend after this many consecutive failed connects to it; 0 turns ejection off.
    #[arg(long, env = "GEOEDGE_EJECT_AFTER", global = true, value_name = "N")]
    pub eject_after: Option<u32>,

    /// An ejected backend gets a trial connect after this long, doubled after each failed trial.
    #[arg(
        long,
        env = "GEOEDGE_EJECT_BACKOFF",
        global = true,
        value_name = "DURATION"
    )]
    pub eject_backoff: Option<HumanDuration>,

    /// NATS server of the fleet's routing table (repeatable; comma-separated in the variable); without one, routing.db is only read from disk.
    #[arg(
        long,
        env = "GEOEDGE_NATS",
        global = true,
        value_name = "URL",
        value_delimiter = ','
    )]
    pub nats: Option<Vec<String>>,

    /// NATS credentials: a user nkey seed (`geoedge db nats-user`) or a `.creds` file; refused when group- or world-readable.
    #[arg(long, env = "GEOEDGE_NATS_CREDS", global = true, value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,

    /// With no valid lease of another POP's backend while its owner is unreachable (or no other backend takes the client): `strict` admits no client there, `share` up to hard_limit / number of POPs.
    #[arg(
        long,
        env = "GEOEDGE_LEASE_FALLBACK",
        global = true,
        value_name = "strict|share"
    )]
    pub lease_fallback: Option<String>,

    /// This POP's name in the fleet (unique; its status key); default: the region.
    #[arg(long, env = "GEOEDGE_POP", global = true, value_name = "NAME")]
    pub pop: Option<String>,

    /// Listener that reads the TLS ClientHello and picks the app from its server name (routing.db's sni_routes), `ADDR` or `DEFAULT_APP=ADDR` for names no route matches and hellos without one (repeatable; comma-separated in the variable).
    #[arg(
        long,
        env = "GEOEDGE_SNI_LISTEN",
        global = true,
        value_name = "[DEFAULT_APP=]ADDR",
        value_delimiter = ','
    )]
    pub sni_listen: Option<Vec<String>>,

    /// Connections one client (its address masked to the client prefix) may have open at once, per app; routing.db's apps table overrides it per app.
    #[arg(
        long,
        env = "GEOEDGE_CLIENT_MAX_CONNECTIONS",
        global = true,
        value_name = "N"
    )]
    pub client_max_connections: Option<u32>,

    /// New connections one client may open per period, per app, e.g. 10/60s (sliding window), or `off`; routing.db's apps table overrides it per app.
    #[arg(
        long,
        env = "GEOEDGE_CLIENT_RATE",
        global = true,
        value_name = "N/DURATION|off"
    )]
    pub client_rate: Option<String>,

    /// Clients never held to the per-client limits (repeatable CIDR; comma-separated in the variable).
    #[arg(
        long,
        env = "GEOEDGE_CLIENT_LIMIT_EXEMPT",
        global = true,
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub client_limit_exempt: Option<Vec<String>>,

    /// IPv4 clients share their per-client limits per network of this prefix length.
    #[arg(
        long,
        env = "GEOEDGE_CLIENT_IPV4_PREFIX",
        global = true,
        value_name = "BITS"
    )]
    pub client_ipv4_prefix: Option<u8>,

    /// IPv6 clients share their per-client limits per network of this prefix length.
    #[arg(
        long,
        env = "GEOEDGE_CLIENT_IPV6_PREFIX",
        global = true,
        value_name = "BITS"
    )]
    pub client_ipv6_prefix: Option<u8>,

    /// Clients tracked at once for the per-client limits; when full, the least recently seen is forgotten.
    #[arg(
        long,
        env = "GEOEDGE_CLIENT_TABLE_SIZE",
        global = true,
        value_name = "N"
    )]
    pub client_table_size: Option<usize>,

    /// One line per connection when it ends: off, stdout, journald or a file PATH (reopened on SIGUSR1 and SIGHUP, for logrotate).
    #[arg(
        long,
        env = "GEOEDGE_ACCESS_LOG",
        global = true,
        value_name = "off|stdout|journald|PATH"
    )]
    pub access_log: Option<String>,

    /// Access log lines as text (one line, HAProxy-like order) or json (one object per line).
    #[arg(
        long,
        env = "GEOEDGE_ACCESS_LOG_FORMAT",
        global = true,
        value_name = "text|json"
    )]
    pub access_log_format: Option<String>,

    /// The longest backoff of an ejected backend.
    #[arg(
        long,
        env = "GEOEDGE_EJECT_BACKOFF_MAX",
        global = true,
        value_name = "DURATION"
    )]
    pub eject_backoff_max: Option<HumanDuration>,
}

macro_rules! stack {
    ($top:expr, $bottom:expr, $($f:ident),* $(,)?) => {
        Layer { $($f: $top.$f.or($bottom.$f),)* }
    };
}

impl Layer {
    /// This layer's values, and `below`'s where this one has none.
    pub fn over(self, below: Layer) -> Layer {
        stack!(
            self,
            below,
            routing_db,
            geoip,
            region,
            app,
            binding_ttl,
            binding_ipv4_prefix,
            binding_ipv6_prefix,
            binding_max_entries,
            listen,
            proxy_protocol_from,
            send_proxy_protocol,
            connect_timeout,
            connect_attempts,
            idle_timeout,
            half_close,
            splice,
            proxy_header_timeout,
            drain_timeout,
            workers,
            engine,
            max_connections,
            wg_interface,
            wg_listen_port,
            wg_private_key_file,
            wg_address,
            wg_mtu,
            wg_attach,
            wg_rekey_after,
            metrics_listen,
            metrics_backend_series,
            admin_write,
            log_format,
            health_check_interval,
            health_check_timeout,
            health_check_max_rate,
            health_check_rise,
            health_check_fall,
            eject_after,
            eject_backoff,
            eject_backoff_max,
            nats,
            nats_creds,
            lease_fallback,
            pop,
            sni_listen,
            client_max_connections,
            client_rate,
            client_limit_exempt,
            client_ipv4_prefix,
            client_ipv6_prefix,
            client_table_size,
            access_log,
            access_log_format,
        )
    }

    /// Reads a TOML settings file (a regular file: see
    /// [`geoedge_geoip::regular`]).
    pub fn from_file(path: &Path) -> anyhow::Result<Layer> {
        // Anything but a regular file (a FIFO above all, which would block
        // the read until someone writes to it) is refused at once.
        let text = geoedge_geoip::regular::read_regular_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let layer: Layer =
            toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
        Ok(layer)
    }
}
