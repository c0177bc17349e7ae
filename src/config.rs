//! Settings: every one is a command-line flag, a `GEOEDGE_*` environment
//! variable and a key of the TOML file named by `--config`. Flags win over
//! the environment, the environment over the file, the file over the
//! defaults. An unknown key in the file is an error.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use geoedge_routing::{AppId, BindingConfig, HealthConfig, RegionId};
use ipnet::IpNet;

use crate::health_check::CheckOptions;
use crate::proxy_protocol::Version;
use geoedge_wireguard::engine::REKEY_AFTER_TIME;

/// A CIDR, or a bare address meaning just that host.
fn parse_cidr(s: &str) -> anyhow::Result<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .with_context(|| format!("proxy_protocol_from {s:?}: not a CIDR or address"))
}

/// A duration written the human way (`600s`, `10m`, `1h 30m`), or a bare
/// number of seconds in the TOML file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s).map(HumanDuration)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(HumanDuration(Duration::from_secs(s))),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration, or `off` (also `0`): for settings that a zero turns off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationOrOff(pub Option<Duration>);

impl FromStr for DurationOrOff {
    type Err = humantime::DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" | "0" => Ok(DurationOrOff(None)),
            t => humantime::parse_duration(t).map(|d| DurationOrOff((!d.is_zero()).then_some(d))),
        }
    }
}

impl<'de> serde::Deserialize<'de> for DurationOrOff {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(DurationOrOff((s > 0).then(|| Duration::from_secs(s)))),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

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

    /// This POP's region: clients GeoIP cannot locate are placed here [default: eu].
    #[arg(long, env = "GEOEDGE_REGION", global = true, value_name = "ID")]
    pub region: Option<String>,

    /// App whose backends are chosen [default: default].
    #[arg(long, env = "GEOEDGE_APP", global = true, value_name = "APP")]
    pub app: Option<String>,

    /// A client keeps its backend until its binding has been idle this long [default: 600s].
    #[arg(
        long,
        env = "GEOEDGE_BINDING_TTL",
        global = true,
        value_name = "DURATION"
    )]
    pub binding_ttl: Option<HumanDuration>,

    /// IPv4 clients share a binding per network of this prefix length [default: 32].
    #[arg(long, env = "GEOEDGE_BINDING_IPV4_PREFIX", global = true, value_name = "BITS",
          value_parser = clap::value_parser!(u8).range(0..=32))]
    pub binding_ipv4_prefix: Option<u8>,

    /// IPv6 clients share a binding per network of this prefix length [default: 128].
    #[arg(long, env = "GEOEDGE_BINDING_IPV6_PREFIX", global = true, value_name = "BITS",
          value_parser = clap::value_parser!(u8).range(0..=128))]
    pub binding_ipv6_prefix: Option<u8>,

    /// At most this many bindings are kept; the least recently used go first [default: 1000000].
    #[arg(
        long,
        env = "GEOEDGE_BINDING_MAX_ENTRIES",
        global = true,
        value_name = "N"
    )]
    pub binding_max_entries: Option<usize>,

    /// Client listener, `ADDR` or `APP=ADDR` to serve one app (repeatable; comma-separated in the variable) [default: 0.0.0.0:8080].
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

    /// PROXY protocol header sent to backends: off, v1 or v2 [default: off].
    #[arg(
        long,
        env = "GEOEDGE_SEND_PROXY_PROTOCOL",
        global = true,
        value_name = "off|v1|v2"
    )]
    pub send_proxy_protocol: Option<String>,

    /// Give up connecting to a backend after this long [default: 3s].
    #[arg(
        long,
        env = "GEOEDGE_CONNECT_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub connect_timeout: Option<HumanDuration>,

    /// Backends tried per client before giving up, the best first [default: 2].
    #[arg(long, env = "GEOEDGE_CONNECT_ATTEMPTS", global = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub connect_attempts: Option<u32>,

    /// Close a connection after no byte moved either way for this long [default: 10m].
    #[arg(
        long,
        env = "GEOEDGE_IDLE_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub idle_timeout: Option<HumanDuration>,

    /// A trusted source must send its whole PROXY header within this long [default: 3s].
    #[arg(
        long,
        env = "GEOEDGE_PROXY_HEADER_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub proxy_header_timeout: Option<HumanDuration>,

    /// On SIGTERM/SIGINT, wait this long for open connections to finish [default: 30s].
    #[arg(
        long,
        env = "GEOEDGE_DRAIN_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub drain_timeout: Option<HumanDuration>,

    /// Worker threads serving client connections, each with its own runtime and its own SO_REUSEPORT listener per address [default: one per CPU].
    #[arg(long, env = "GEOEDGE_WORKERS", global = true, value_name = "N")]
    pub workers: Option<usize>,

    /// Client connections open at once, over all listeners; more are closed at once [default: from the descriptor limit, (RLIMIT_NOFILE - reserve) / 2].
    #[arg(long, env = "GEOEDGE_MAX_CONNECTIONS", global = true, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// WireGuard interface name; setting it turns the backhaul on (peers come from routing.db's wg_peers).
    #[arg(long, env = "GEOEDGE_WG_INTERFACE", global = true, value_name = "NAME")]
    pub wg_interface: Option<String>,

    /// WireGuard UDP listen port [default: 51820].
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

    /// MTU of the WireGuard interface [default: 1420].
    #[arg(long, env = "GEOEDGE_WG_MTU", global = true, value_name = "BYTES")]
    pub wg_mtu: Option<u16>,

    /// Attach to an existing TUN interface of that name instead of creating one (no CAP_NET_ADMIN needed).
    #[arg(long, env = "GEOEDGE_WG_ATTACH", global = true, value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true")]
    pub wg_attach: Option<bool>,

    /// Rekey WireGuard sessions this POP initiated once they are this old, 1s to 120s [default: 120s, WireGuard's own].
    #[arg(
        long,
        env = "GEOEDGE_WG_REKEY_AFTER",
        global = true,
        value_name = "DURATION"
    )]
    pub wg_rekey_after: Option<HumanDuration>,

    /// Listener for /metrics, /healthz and /readyz, or `off`; never a client listener's address [default: 127.0.0.1:9090].
    #[arg(
        long,
        env = "GEOEDGE_METRICS_LISTEN",
        global = true,
        value_name = "ADDR|off"
    )]
    pub metrics_listen: Option<String>,

    /// Log format on stderr: text or json (filtered by RUST_LOG) [default: text].
    #[arg(
        long,
        env = "GEOEDGE_LOG_FORMAT",
        global = true,
        value_name = "text|json"
    )]
    pub log_format: Option<String>,

    /// Connect to every backend this often to check it, or `off` [default: 2s].
    #[arg(
        long,
        env = "GEOEDGE_HEALTH_CHECK_INTERVAL",
        global = true,
        value_name = "DURATION|off"
    )]
    pub health_check_interval: Option<DurationOrOff>,

    /// A health check fails when its connect takes longer than this [default: 1s].
    #[arg(
        long,
        env = "GEOEDGE_HEALTH_CHECK_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub health_check_timeout: Option<HumanDuration>,

    /// Consecutive successful checks that bring a down backend back up [default: 2].
    #[arg(long, env = "GEOEDGE_HEALTH_CHECK_RISE", global = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub health_check_rise: Option<u32>,

    /// Consecutive failed checks that take a backend down [default: 3].
    #[arg(long, env = "GEOEDGE_HEALTH_CHECK_FALL", global = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub health_check_fall: Option<u32>,

    /// Eject a backend after this many consecutive failed connects to it; 0 turns ejection off [default: 3].
    #[arg(long, env = "GEOEDGE_EJECT_AFTER", global = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub eject_after: Option<u32>,

    /// An ejected backend gets a trial connect after this long, doubled after each failed trial [default: 1s].
    #[arg(
        long,
        env = "GEOEDGE_EJECT_BACKOFF",
        global = true,
        value_name = "DURATION"
    )]
    pub eject_backoff: Option<HumanDuration>,

    /// The longest backoff of an ejected backend [default: 30s].
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
            proxy_header_timeout,
            drain_timeout,
            workers,
            max_connections,
            wg_interface,
            wg_listen_port,
            wg_private_key_file,
            wg_address,
            wg_mtu,
            wg_attach,
            wg_rekey_after,
            metrics_listen,
            log_format,
            health_check_interval,
            health_check_timeout,
            health_check_rise,
            health_check_fall,
            eject_after,
            eject_backoff,
            eject_backoff_max,
        )
    }

    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> anyhow::Result<Layer> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let layer: Layer =
            toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
        if layer.binding_ipv4_prefix.is_some_and(|p| p > 32) {
            bail!(
                "config file {}: binding_ipv4_prefix must be 0..=32",
                path.display()
            );
        }
        for (key, v) in [
            ("health_check_rise", layer.health_check_rise),
            ("health_check_fall", layer.health_check_fall),
        ] {
            if v.is_some_and(|n| !(1..=100).contains(&n)) {
                bail!("config file {}: {key} must be 1..=100", path.display());
            }
        }
        if layer.eject_after.is_some_and(|n| n > 1000) {
            bail!(
                "config file {}: eject_after must be 0..=1000",
                path.display()
            );
        }
        if layer.binding_ipv6_prefix.is_some_and(|p| p > 128) {
            bail!(
                "config file {}: binding_ipv6_prefix must be 0..=128",
                path.display()
            );
        }
        Ok(layer)
    }
}

/// Settings resolved from all layers, with defaults filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    /// routing.db path; `None` means the embedded sample table.
    pub routing_db: Option<PathBuf>,
    /// mmdb path; `None` means the embedded sample database.
    pub geoip: Option<PathBuf>,
    /// This POP's region.
    pub region: RegionId,
    /// The app decisions are for.
    pub app: AppId,
    /// Binding table settings.
    pub bindings: BindingConfig,
    /// Client listeners.
    pub listen: Vec<ListenSpec>,
    /// Sources whose PROXY headers are believed.
    pub proxy_protocol_from: Vec<IpNet>,
    /// PROXY header sent to backends.
    pub send_proxy_protocol: Option<Version>,
    /// Per-attempt connect timeout.
    pub connect_timeout: Duration,
    /// Backends tried per client.
    pub connect_attempts: u32,
    /// Idle timeout of a relayed connection.
    pub idle_timeout: Duration,
    /// Deadline for a trusted source's PROXY header.
    pub proxy_header_timeout: Duration,
    /// How long shutdown waits for open connections.
    pub drain_timeout: Duration,
    /// Worker threads (each a single-threaded runtime with its own
    /// listeners).
    pub workers: usize,
    /// The global connection limit; `None`: derived from the descriptor
    /// limit at start ([`crate::admission::default_max_connections`]).
    pub max_connections: Option<usize>,
    /// The WireGuard backhaul, when configured.
    pub wireguard: Option<WgSettings>,
    /// The metrics and health listener (`None`: off).
    pub metrics_listen: Option<SocketAddr>,
    /// Rise and fall thresholds and passive ejection, for every backend.
    pub health: HealthConfig,
    /// Active health checks (`None`: off).
    pub health_checks: Option<CheckOptions>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => bail!("log_format {other:?}: expected text or json"),
        }
    }
}

/// The log format named by the flags, the environment or the config file,
/// read before anything else so that the first lines are in it. A config
/// file that cannot be read is reported later, by [`Settings::resolve`].
pub fn early_log_format(cli: &Layer, config: Option<&Path>) -> LogFormat {
    let named = cli.log_format.clone().or_else(|| {
        config
            .and_then(|p| Layer::from_file(p).ok())
            .and_then(|l| l.log_format)
    });
    named.and_then(|s| s.parse().ok()).unwrap_or_default()
}

/// The metrics listener: an address, or `off`. It must not be one of the
/// client listeners: metrics are never served on a client-facing port.
fn metrics_listen(
    value: Option<&str>,
    listen: &[ListenSpec],
) -> anyhow::Result<Option<SocketAddr>> {
    let value = value.unwrap_or("127.0.0.1:9090").trim();
    if value == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = value
        .parse()
        .with_context(|| format!("metrics_listen {value:?}: not an ADDR:PORT or off"))?;
    let overlaps = |a: IpAddr, b: IpAddr| a.is_unspecified() || b.is_unspecified() || a == b;
    if addr.port() != 0 {
        if let Some(l) = listen
            .iter()
            .find(|l| l.addr.port() == addr.port() && overlaps(l.addr.ip(), addr.ip()))
        {
            bail!(
                "metrics_listen {addr} overlaps the client listener {}: metrics are never served on a client-facing port",
                l.addr
            );
        }
    }
    Ok(Some(addr))
}

/// The WireGuard interface settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgSettings {
    /// Interface name.
    pub interface: String,
    /// UDP listen port.
    pub listen_port: u16,
    /// Private key file.
    pub private_key_file: PathBuf,
    /// Overlay addresses (empty when attaching).
    pub addresses: Vec<IpNet>,
    /// MTU.
    pub mtu: u16,
    /// Attach to an existing TUN instead of creating one.
    pub attach: bool,
    /// Sessions this POP initiated are rekeyed once this old.
    pub rekey_after: Duration,
}

/// A client listener: an address, and the app it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// The app whose backends serve this listener's clients.
    pub app: AppId,
    /// Where to listen.
    pub addr: SocketAddr,
}

impl FromStr for ListenSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (app, addr) = match s.split_once('=') {
            Some((app, addr)) if !app.trim().is_empty() => (app.trim(), addr),
            Some(_) => bail!("listen {s:?}: empty app name"),
            None => ("default", s),
        };
        let addr = addr
            .trim()
            .parse()
            .with_context(|| format!("listen {s:?}: not an ADDR:PORT"))?;
        Ok(ListenSpec {
            app: AppId::new(app),
            addr,
        })
    }
}

impl Settings {
    /// Resolves the flags/environment layer over the config file (if any) over the defaults.
    pub fn resolve(cli: Layer, config: Option<&Path>) -> anyhow::Result<Settings> {
        let file = match config {
            Some(p) => Layer::from_file(p)?,
            None => Layer::default(),
        };
        let l = cli.over(file);
        let defaults = BindingConfig::default();
        let (health, health_checks) = crate::health_check::settings(&l)?;
        let listen = l
            .listen
            .unwrap_or_else(|| vec!["0.0.0.0:8080".into()])
            .iter()
            .map(|s| s.parse())
            .collect::<anyhow::Result<Vec<ListenSpec>>>()?;
        let proxy_protocol_from = l
            .proxy_protocol_from
            .unwrap_or_default()
            .iter()
            .map(|s| parse_cidr(s))
            .collect::<anyhow::Result<Vec<IpNet>>>()?;
        let send_proxy_protocol = match l.send_proxy_protocol.as_deref().unwrap_or("off") {
            "off" => None,
            other => Some(other.parse::<Version>().map_err(|_| {
                anyhow::anyhow!("send_proxy_protocol {other:?}: expected off, v1 or v2")
            })?),
        };
        let secs = |d: Option<HumanDuration>, default: u64| {
            d.map_or(Duration::from_secs(default), |d| d.0)
        };
        let wireguard = match l.wg_interface {
            None => None,
            Some(interface) => {
                if interface.is_empty() || interface.len() > 15 {
                    bail!("wg_interface {interface:?}: 1 to 15 characters");
                }
                let attach = l.wg_attach.unwrap_or(false);
                let addresses = l
                    .wg_address
                    .unwrap_or_default()
                    .iter()
                    .map(|a| {
                        a.trim()
                            .parse::<IpNet>()
                            .with_context(|| format!("wg_address {a:?}: not a CIDR"))
                    })
                    .collect::<anyhow::Result<Vec<IpNet>>>()?;
                if addresses.is_empty() && !attach {
                    bail!("wg_interface {interface:?} needs wg_address (or wg_attach to an existing TUN)");
                }
                Some(WgSettings {
                    interface,
                    listen_port: l.wg_listen_port.unwrap_or(51820),
                    private_key_file: l
                        .wg_private_key_file
                        .context("wg_interface needs wg_private_key_file")?,
                    addresses,
                    mtu: l.wg_mtu.unwrap_or(1420),
                    attach,
                    rekey_after: match l.wg_rekey_after {
                        None => REKEY_AFTER_TIME,
                        Some(d) if (Duration::from_secs(1)..=REKEY_AFTER_TIME).contains(&d.0) => d.0,
                        Some(d) => bail!(
                            "wg_rekey_after {}: between 1s and 120s (WireGuard rekeys after 120s by itself)",
                            humantime::format_duration(d.0)
                        ),
                    },
                })
            }
        };
        let metrics_listen = metrics_listen(l.metrics_listen.as_deref(), &listen)?;
        // Logging is set up before the settings are resolved
        // ([`early_log_format`]); a bad value is still an error here.
        l.log_format
            .as_deref()
            .map(str::parse::<LogFormat>)
            .transpose()?;
        Ok(Settings {
            routing_db: l.routing_db,
            geoip: l.geoip,
            region: RegionId::new(l.region.as_deref().unwrap_or("eu")),
            app: AppId::new(l.app.as_deref().unwrap_or("default")),
            bindings: BindingConfig {
                ttl: l.binding_ttl.map_or(defaults.ttl, |d| d.0),
                max_entries: l.binding_max_entries.unwrap_or(defaults.max_entries),
                ipv4_prefix: l.binding_ipv4_prefix.unwrap_or(defaults.ipv4_prefix),
                ipv6_prefix: l.binding_ipv6_prefix.unwrap_or(defaults.ipv6_prefix),
            },
            listen,
            proxy_protocol_from,
            send_proxy_protocol,
            connect_timeout: secs(l.connect_timeout, 3),
            connect_attempts: match l.connect_attempts {
                None => 2,
                Some(n @ 1..=16) => n,
                Some(n) => bail!("connect_attempts {n}: 1 to 16"),
            },
            idle_timeout: secs(l.idle_timeout, 600),
            proxy_header_timeout: secs(l.proxy_header_timeout, 3),
            drain_timeout: secs(l.drain_timeout, 30),
            workers: match l.workers {
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
                Some(n @ 1..=1024) => n,
                Some(n) => bail!("workers {n}: 1 to 1024"),
            },
            max_connections: match l.max_connections {
                None => None,
                Some(0) => bail!("max_connections 0: at least 1"),
                Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            },
            wireguard,
            metrics_listen,
            health,
            health_checks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_parse_and_unknown_keys_fail() {
        let l: Layer =
            toml::from_str("region = 'us'\nbinding_ttl = '10m'\nbinding_max_entries = 5").unwrap();
        assert_eq!(l.region.as_deref(), Some("us"));
        assert_eq!(l.binding_ttl.unwrap().0, Duration::from_secs(600));
        let l: Layer = toml::from_str("binding_ttl = 30").unwrap();
        assert_eq!(l.binding_ttl.unwrap().0, Duration::from_secs(30));
        let err = toml::from_str::<Layer>("regoin = 'us'")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn metrics_listener_is_never_a_client_port() {
        let listen = |s: &str| vec![s.parse::<ListenSpec>().unwrap()];
        assert_eq!(
            metrics_listen(None, &listen("0.0.0.0:8080")).unwrap(),
            Some("127.0.0.1:9090".parse().unwrap())
        );
        assert_eq!(
            metrics_listen(Some("off"), &listen("0.0.0.0:8080")).unwrap(),
            None
        );
        for (metrics, client) in [
            ("127.0.0.1:8080", "0.0.0.0:8080"),
            ("0.0.0.0:8080", "10.0.0.1:8080"),
            ("10.0.0.1:8080", "api=10.0.0.1:8080"),
        ] {
            let err = metrics_listen(Some(metrics), &listen(client)).unwrap_err();
            assert!(err.to_string().contains("client-facing"), "{err}");
        }
        // Another address on the same port, or port 0, is fine.
        assert!(metrics_listen(Some("10.0.0.2:8080"), &listen("10.0.0.1:8080")).is_ok());
        assert!(metrics_listen(Some("127.0.0.1:0"), &listen("127.0.0.1:0")).is_ok());
        assert!(metrics_listen(Some("nine"), &[]).is_err());
    }

    #[test]
    fn log_format_from_the_flag_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.toml");
        std::fs::write(&file, "log_format = 'json'\n").unwrap();
        assert_eq!(
            early_log_format(&Layer::default(), Some(&file)),
            LogFormat::Json
        );
        let flag = Layer {
            log_format: Some("text".into()),
            ..Layer::default()
        };
        assert_eq!(early_log_format(&flag, Some(&file)), LogFormat::Text);
        assert_eq!(early_log_format(&Layer::default(), None), LogFormat::Text);
        assert!("yaml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn wireguard_rekey_time_is_bounded_by_wireguards_own() {
        let wg = |rekey: Option<&str>| {
            let mut toml = String::from(
                "wg_interface = 'wg0'\nwg_address = ['10.77.0.1/24']\nwg_private_key_file = '/k'\n",
            );
            if let Some(r) = rekey {
                toml.push_str(&format!("wg_rekey_after = '{r}'\n"));
            }
            let l: Layer = toml::from_str(&toml).unwrap();
            Settings::resolve(l, None).map(|s| s.wireguard.unwrap().rekey_after)
        };
        assert_eq!(wg(None).unwrap(), REKEY_AFTER_TIME);
        assert_eq!(wg(Some("3s")).unwrap(), Duration::from_secs(3));
        assert_eq!(wg(Some("2m")).unwrap(), REKEY_AFTER_TIME);
        for bad in ["500ms", "121s", "1h"] {
            let e = wg(Some(bad)).unwrap_err().to_string();
            assert!(
                e.contains("wg_rekey_after") && e.contains("120s"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn upper_layer_wins() {
        let top = Layer {
            region: Some("sa".into()),
            ..Layer::default()
        };
        let bottom = Layer {
            region: Some("us".into()),
            app: Some("api".into()),
            ..Layer::default()
        };
        let l = top.over(bottom);
        assert_eq!(
            (l.region.as_deref(), l.app.as_deref()),
            (Some("sa"), Some("api"))
        );
    }
}
