//! Settings: every one is a command-line flag, a `GEOEDGE_*` environment
//! variable and a key of the TOML file named by `--config`. Flags win over
//! the environment, the environment over the file, the file over the
//! defaults. An unknown key in the file is an error.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use geoedge_routing::{AppId, BindingConfig, HealthConfig, RegionId};
use ipnet::IpNet;

use crate::data::proxy::ProxyOptions;
use crate::data::proxy_protocol::Version;
use geoedge_wireguard::engine::REKEY_AFTER_TIME;

pub mod defaults;
mod health;
mod layer;
mod values;

pub use health::CheckOptions;

pub use layer::Layer;
use values::parse_cidr;
pub use values::{DurationOrOff, HumanDuration};

/// The settings a SIGHUP applies at once (to new connections): swapped
/// whole, so nothing decides field by field what applies live.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LiveSettings {
    /// How the proxy treats connections (PROXY protocol, connect, relay).
    #[serde(flatten)]
    pub proxy: ProxyOptions,
    /// How long shutdown waits for open connections.
    pub drain_timeout: Duration,
    /// The global connection limit; `None`: derived from the descriptor
    /// limit at start ([`crate::data::admission::default_max_connections`]),
    /// which also caps a value set here
    /// ([`crate::data::admission::effective_max_connections`]).
    pub max_connections: Option<usize>,
}

/// Settings resolved from all layers, with defaults filled in: the live
/// half ([`LiveSettings`]) and those fixed at start. Serialized (by key)
/// only to tell two sets apart.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    /// routing.db path; `None` means the embedded sample table.
    pub routing_db: Option<PathBuf>,
    /// mmdb path; `None` means the embedded sample database.
    pub geoip: Option<PathBuf>,
    /// This POP's region.
    #[serde(serialize_with = "crate::data::proxy::as_debug")]
    pub region: RegionId,
    /// The app decisions are for.
    #[serde(serialize_with = "crate::data::proxy::as_debug")]
    pub app: AppId,
    /// Binding table settings.
    #[serde(serialize_with = "crate::data::proxy::as_debug")]
    pub bindings: BindingConfig,
    /// Client listeners.
    #[serde(serialize_with = "crate::data::proxy::as_debug")]
    pub listen: Vec<ListenSpec>,
    /// What a SIGHUP applies at once.
    #[serde(flatten)]
    pub live: LiveSettings,
    /// Worker threads (each a single-threaded runtime with its own
    /// listeners).
    pub workers: usize,
    /// How each worker runs its client connections: on a tokio runtime
    /// (the default) or on its own epoll loop. Fixed at start, like
    /// `workers`: a SIGHUP that changes it is logged as needing a restart.
    pub engine: Engine,
    /// The WireGuard backhaul, when configured.
    #[serde(serialize_with = "crate::data::proxy::as_debug")]
    pub wireguard: Option<WgSettings>,
    /// The metrics and health listener (`None`: off).
    pub metrics_listen: Option<SocketAddr>,
    /// Per-backend metric series while routing.db holds at most this many
    /// backends ([`defaults::METRICS_BACKEND_SERIES`]).
    pub metrics_backend_series: usize,
    /// Whether the admin endpoints may change state (`DELETE /bindings`).
    pub admin_write: bool,
    /// Rise and fall thresholds and passive ejection, for every backend.
    #[serde(serialize_with = "crate::data::proxy::as_debug")]
    pub health: HealthConfig,
    /// Active health checks (`None`: off).
    #[serde(serialize_with = "crate::data::proxy::as_debug")]
    pub health_checks: Option<CheckOptions>,
    /// The fleet's routing table on NATS (`None`: no `--nats`, routing.db
    /// is only read from disk).
    #[serde(serialize_with = "crate::data::proxy::as_debug")]
    pub fleet: Option<FleetSettings>,
    /// Clients tracked at once for the per-client limits.
    pub client_table_size: usize,
    /// The access log (`None`: off).
    #[serde(serialize_with = "crate::data::proxy::as_debug")]
    pub access_log: Option<AccessLogSettings>,
}

/// Where the fleet's routing table is published and followed
/// ([`crate::control::fleet`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSettings {
    /// NATS servers (`nats://host:port`), tried in turn.
    pub servers: Vec<String>,
    /// Credentials file, when the servers ask for one.
    pub creds: Option<PathBuf>,
    /// This POP's name: its status key; the owner of the backends of the
    /// region of the same name.
    pub pop: String,
    /// Without a valid lease of another POP's backend.
    pub lease_fallback: geoedge_routing::global::Fallback,
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

/// How each worker thread runs its client connections (`engine`), fixed
/// at start: a change takes a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// A single-threaded tokio runtime per worker, a task per connection:
    /// every feature, as on the epoll engine.
    Tokio,
    /// The default: each worker's own edge-triggered epoll loop accepts,
    /// connects and relays without a runtime (less CPU per connection, a
    /// quarter of the memory per idle one); a client whose decision waits
    /// for another POP's lease waits in the loop too. Bulk transfers splice
    /// as on the tokio engine (unless `splice` is off).
    #[default]
    Epoll,
}

impl Engine {
    /// The name the setting is written with: `tokio` or `epoll`.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Tokio => "tokio",
            Engine::Epoll => "epoll",
        }
    }
}

impl FromStr for Engine {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim() {
            "tokio" => Ok(Engine::Tokio),
            "epoll" => Ok(Engine::Epoll),
            other => bail!("engine {other:?}: expected tokio or epoll"),
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
    let value = value.unwrap_or(defaults::METRICS_LISTEN).trim();
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
    /// The app whose backends serve this listener's clients; for a
    /// listener that reads the ClientHello, the app of server names that
    /// no route matches and of hellos without one.
    pub app: AppId,
    /// Where to listen.
    pub addr: SocketAddr,
    /// The listener reads the TLS ClientHello and picks the app from its
    /// server name (`sni_listen`).
    pub sni: bool,
}

impl ListenSpec {
    /// Parses `[APP=]ADDR` as the setting `key` gives it.
    fn parse(s: &str, key: &str, sni: bool) -> anyhow::Result<Self> {
        let (app, addr) = match s.split_once('=') {
            Some((app, addr)) if !app.trim().is_empty() => (app.trim(), addr),
            Some(_) => bail!("{key} {s:?}: empty app name"),
            None => ("default", s),
        };
        let addr = addr
            .trim()
            .parse()
            .with_context(|| format!("{key} {s:?}: not an ADDR:PORT"))?;
        Ok(ListenSpec {
            app: AppId::new(app),
            addr,
            sni,
        })
    }
}

impl FromStr for ListenSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        ListenSpec::parse(s, "listen", false)
    }
}

/// Where access-log lines go, and how they look (`access_log`,
/// `access_log_format`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    /// stdout, journald or a file.
    pub sink: geoedge_access_log::Sink,
    /// text or json.
    pub format: geoedge_access_log::Format,
}

/// The access log: `None` when off. The format is checked even when off.
fn access_log(l: &Layer) -> anyhow::Result<Option<AccessLogSettings>> {
    let format = l
        .access_log_format
        .as_deref()
        .unwrap_or(defaults::ACCESS_LOG_FORMAT)
        .trim();
    let format = match format {
        "text" => geoedge_access_log::Format::Text,
        "json" => geoedge_access_log::Format::Json,
        other => bail!("access_log_format {other:?}: expected text or json"),
    };
    let sink = l
        .access_log
        .as_deref()
        .unwrap_or(defaults::ACCESS_LOG)
        .trim();
    if sink == "off" {
        return Ok(None);
    }
    if sink.is_empty() {
        bail!("access_log \"\": expected off, stdout, journald or a file path");
    }
    let sink = sink
        .parse::<geoedge_access_log::Sink>()
        .map_err(|e| anyhow::anyhow!("access_log {sink:?}: {e}"))?;
    Ok(Some(AccessLogSettings { sink, format }))
}

/// The per-client rate: `None` when off.
fn client_rate(value: Option<&str>) -> anyhow::Result<Option<geoedge_client_limits::Rate>> {
    match value.unwrap_or(defaults::CLIENT_RATE).trim() {
        "off" => Ok(None),
        other => other
            .parse::<geoedge_client_limits::Rate>()
            .map(Some)
            .map_err(|e| {
                anyhow::anyhow!(
                    "client_rate {other:?}: {e} (expected N/DURATION, e.g. 10/60s, or off)"
                )
            }),
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
        let fleet = fleet(&l)?;
        let bindings = BindingConfig::default();
        let (health, health_checks) = health::settings(&l)?;
        // Without any listener named, the default one; `sni_listen` adds
        // listeners that read the ClientHello.
        let plain = match (&l.listen, &l.sni_listen) {
            (Some(listen), _) => listen.clone(),
            (None, Some(_)) => Vec::new(),
            (None, None) => vec![defaults::LISTEN.into()],
        };
        let mut listen = plain
            .iter()
            .map(|s| ListenSpec::parse(s, "listen", false))
            .collect::<anyhow::Result<Vec<ListenSpec>>>()?;
        for s in l.sni_listen.iter().flatten() {
            listen.push(ListenSpec::parse(s, "sni_listen", true)?);
        }
        for (i, a) in listen.iter().enumerate() {
            if let Some(b) = listen[..i]
                .iter()
                .find(|b| b.addr == a.addr && a.addr.port() != 0)
            {
                bail!(
                    "{} is named twice (as {} and {}): one listener per address",
                    a.addr,
                    if b.sni { "sni_listen" } else { "listen" },
                    if a.sni { "sni_listen" } else { "listen" }
                );
            }
        }
        let client_limit_exempt = l
            .client_limit_exempt
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|s| parse_cidr(s))
            .collect::<anyhow::Result<Vec<IpNet>>>()?;
        let client_rate = client_rate(l.client_rate.as_deref())?;
        let access_log = access_log(&l)?;
        let proxy_protocol_from = l
            .proxy_protocol_from
            .unwrap_or_default()
            .iter()
            .map(|s| parse_cidr(s))
            .collect::<anyhow::Result<Vec<IpNet>>>()?;
        let send_proxy_protocol = match l
            .send_proxy_protocol
            .as_deref()
            .unwrap_or(defaults::SEND_PROXY_PROTOCOL)
        {
            "off" => None,
            other => Some(other.parse::<Version>().map_err(|_| {
                anyhow::anyhow!("send_proxy_protocol {other:?}: expected off, v1 or v2")
            })?),
        };
        let or = |d: Option<HumanDuration>, default: Duration| d.map_or(default, |d| d.0);
        let wireguard = match l.wg_interface {
            None => None,
            Some(interface) => {
                if interface.is_empty() || interface.len() > 15 {
                    bail!("wg_interface {interface:?}: 1 to 15 characters");
                }
                let attach = l.wg_attach.unwrap_or(defaults::WG_ATTACH);
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
                    listen_port: l.wg_listen_port.unwrap_or(defaults::WG_LISTEN_PORT),
                    private_key_file: l
                        .wg_private_key_file
                        .context("wg_interface needs wg_private_key_file")?,
                    addresses,
                    mtu: l.wg_mtu.unwrap_or(defaults::WG_MTU),
                    attach,
                    rekey_after: match l.wg_rekey_after {
                        None => *defaults::WG_REKEY_AFTER_RANGE.end(),
                        Some(d) if defaults::WG_REKEY_AFTER_RANGE.contains(&d.0) => d.0,
                        Some(d) => bail!(
                            "wg_rekey_after {}: between {}s and {}s (WireGuard rekeys after {}s by itself)",
                            humantime::format_duration(d.0),
                            defaults::WG_REKEY_AFTER_RANGE.start().as_secs(),
                            defaults::WG_REKEY_AFTER_RANGE.end().as_secs(),
                            REKEY_AFTER_TIME.as_secs()
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
            region: RegionId::new(l.region.as_deref().unwrap_or(defaults::REGION)),
            app: AppId::new(l.app.as_deref().unwrap_or(defaults::APP)),
            bindings: BindingConfig {
                ttl: l.binding_ttl.map_or(bindings.ttl, |d| d.0),
                max_entries: l.binding_max_entries.unwrap_or(bindings.max_entries),
                ipv4_prefix: match l.binding_ipv4_prefix {
                    None => bindings.ipv4_prefix,
                    Some(p) => defaults::bounded(
                        "binding_ipv4_prefix",
                        p,
                        &defaults::BINDING_IPV4_PREFIX_RANGE,
                    )?,
                },
                ipv6_prefix: match l.binding_ipv6_prefix {
                    None => bindings.ipv6_prefix,
                    Some(p) => defaults::bounded(
                        "binding_ipv6_prefix",
                        p,
                        &defaults::BINDING_IPV6_PREFIX_RANGE,
                    )?,
                },
            },
            listen,
            live: LiveSettings {
                proxy: ProxyOptions {
                    proxy_protocol_from,
                    send_proxy_protocol,
                    connect_timeout: or(l.connect_timeout, defaults::CONNECT_TIMEOUT),
                    connect_attempts: match l.connect_attempts {
                        None => defaults::CONNECT_ATTEMPTS,
                        Some(n) => defaults::bounded(
                            "connect_attempts",
                            n,
                            &defaults::CONNECT_ATTEMPTS_RANGE,
                        )?,
                    },
                    idle_timeout: or(l.idle_timeout, defaults::IDLE_TIMEOUT),
                    half_close: l.half_close.unwrap_or(defaults::HALF_CLOSE),
                    splice: l.splice.unwrap_or(defaults::SPLICE),
                    proxy_header_timeout: or(
                        l.proxy_header_timeout,
                        defaults::PROXY_HEADER_TIMEOUT,
                    ),
                    client_max_connections: l
                        .client_max_connections
                        .map(|n| {
                            defaults::bounded(
                                "client_max_connections",
                                n,
                                &defaults::CLIENT_MAX_CONNECTIONS_RANGE,
                            )
                        })
                        .transpose()?,
                    client_rate,
                    client_limit_exempt,
                    client_ipv4_prefix: match l.client_ipv4_prefix {
                        None => defaults::CLIENT_IPV4_PREFIX,
                        Some(p) => defaults::bounded(
                            "client_ipv4_prefix",
                            p,
                            &defaults::BINDING_IPV4_PREFIX_RANGE,
                        )?,
                    },
                    client_ipv6_prefix: match l.client_ipv6_prefix {
                        None => defaults::CLIENT_IPV6_PREFIX,
                        Some(p) => defaults::bounded(
                            "client_ipv6_prefix",
                            p,
                            &defaults::BINDING_IPV6_PREFIX_RANGE,
                        )?,
                    },
                },
                drain_timeout: or(l.drain_timeout, defaults::DRAIN_TIMEOUT),
                max_connections: match l.max_connections {
                    None => None,
                    Some(0) => bail!("max_connections 0: at least 1"),
                    Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                },
            },
            workers: match l.workers {
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
                Some(n) => defaults::bounded("workers", n, &defaults::WORKERS_RANGE)?,
            },
            engine: l.engine.as_deref().unwrap_or(defaults::ENGINE).parse()?,
            wireguard,
            metrics_listen,
            metrics_backend_series: l
                .metrics_backend_series
                .map_or(defaults::METRICS_BACKEND_SERIES, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX)
                }),
            admin_write: l.admin_write.unwrap_or(defaults::ADMIN_WRITE),
            health,
            health_checks,
            fleet,
            client_table_size: match l.client_table_size {
                None => defaults::CLIENT_TABLE_SIZE,
                Some(n) => {
                    defaults::bounded("client_table_size", n, &defaults::CLIENT_TABLE_SIZE_RANGE)?
                }
            },
            access_log,
        })
    }
}

/// The fleet settings: `None` without a NATS server. A `pop` or
/// `lease_fallback` given is checked either way: a bad value is an error
/// even on an edge that does not use it yet (the region, which `pop`
/// defaults to, is checked as a POP name only in a fleet).
fn fleet(l: &Layer) -> anyhow::Result<Option<FleetSettings>> {
    let in_fleet = l.nats.iter().flatten().any(|s| !s.trim().is_empty());
    let pop = l
        .pop
        .clone()
        .or_else(|| l.region.clone())
        .unwrap_or_else(|| defaults::REGION.to_owned());
    if (in_fleet || l.pop.is_some())
        && (pop.is_empty()
            || pop.len() > defaults::POP_NAME_MAX
            || !pop
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        bail!(
            "pop {pop:?}: 1 to {} letters, digits, '-' or '_' (it names the POP's status key)",
            defaults::POP_NAME_MAX
        );
    }
    let lease_fallback = match l
        .lease_fallback
        .as_deref()
        .unwrap_or(defaults::LEASE_FALLBACK)
        .trim()
    {
        "strict" => geoedge_routing::global::Fallback::Strict,
        "share" => geoedge_routing::global::Fallback::Share,
        other => bail!("lease_fallback {other:?}: expected strict or share"),
    };
    let servers: Vec<String> = l
        .nats
        .iter()
        .flatten()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if servers.is_empty() {
        return Ok(None);
    }
    for s in &servers {
        let hostport = s.split_once("://").map_or(s.as_str(), |(_, rest)| rest);
        if hostport.is_empty() || hostport.contains(char::is_whitespace) {
            bail!("nats {s:?}: expected nats://HOST:PORT");
        }
    }
    Ok(Some(FleetSettings {
        servers,
        creds: l.nats_creds.clone(),
        pop,
        lease_fallback,
    }))
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
    fn a_bad_lease_fallback_or_pop_is_refused_with_or_without_nats() {
        for nats in [None, Some(vec!["nats://127.0.0.1:4222".to_owned()])] {
            let layer = |fallback: &str, pop: &str| Layer {
                nats: nats.clone(),
                lease_fallback: Some(fallback.into()),
                pop: Some(pop.into()),
                ..Layer::default()
            };
            let e = fleet(&layer("bogus", "eu")).unwrap_err().to_string();
            assert!(e.contains("expected strict or share"), "{e}");
            let e = fleet(&layer("share", "e u")).unwrap_err().to_string();
            assert!(e.contains("pop \"e u\""), "{e}");
            let ok = fleet(&layer(" strict ", "fra")).unwrap();
            assert_eq!(ok.is_some(), nats.is_some());
            if let Some(f) = ok {
                assert_eq!(f.lease_fallback, geoedge_routing::global::Fallback::Strict);
                assert_eq!(f.pop, "fra");
            }
        }
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

    /// The settings layer as the flags and the environment give it.
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        settings: Layer,
    }

    fn engine_of(args: &[&str], file: Option<&Path>) -> anyhow::Result<Engine> {
        let flags = <Flags as clap::Parser>::try_parse_from(args)?;
        Settings::resolve(flags.settings, file).map(|s| s.engine)
    }

    #[test]
    fn engine_from_the_flag_or_the_file() {
        // Unset: epoll, the default, which is what `defaults::ENGINE` says.
        assert_eq!(engine_of(&["geoedge"], None).unwrap(), Engine::Epoll);
        assert_eq!(
            defaults::ENGINE.parse::<Engine>().unwrap(),
            Engine::default()
        );
        assert_eq!(
            engine_of(&["geoedge", "--engine", "epoll"], None).unwrap(),
            Engine::Epoll
        );
        assert_eq!(
            engine_of(&["geoedge", "--engine=tokio"], None).unwrap(),
            Engine::Tokio
        );
        // The file, under the flags.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.toml");
        std::fs::write(&file, "engine = 'epoll'\n").unwrap();
        assert_eq!(engine_of(&["geoedge"], Some(&file)).unwrap(), Engine::Epoll);
        assert_eq!(
            engine_of(&["geoedge", "--engine", "tokio"], Some(&file)).unwrap(),
            Engine::Tokio
        );
        for e in [Engine::Tokio, Engine::Epoll] {
            assert_eq!(e.as_str().parse::<Engine>().unwrap(), e);
        }
    }

    /// Set in the copy of this test binary that
    /// [`engine_from_the_environment`] runs with `GEOEDGE_ENGINE` set (so
    /// that no test changes the environment of the others).
    const ENGINE_CHILD: &str = "GEOEDGE_TEST_ENGINE_CHILD";

    #[test]
    fn engine_from_the_environment() {
        if std::env::var_os(ENGINE_CHILD).is_some() {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("g.toml");
            std::fs::write(&file, "engine = 'epoll'\n").unwrap();
            // The variable wins over the file and the default, the flag
            // over the variable.
            assert_eq!(engine_of(&["geoedge"], Some(&file)).unwrap(), Engine::Tokio);
            assert_eq!(engine_of(&["geoedge"], None).unwrap(), Engine::Tokio);
            assert_eq!(
                engine_of(&["geoedge", "--engine", "epoll"], None).unwrap(),
                Engine::Epoll
            );
            return;
        }
        let name = "control::config::tests::engine_from_the_environment";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1"])
            .env(ENGINE_CHILD, "1")
            .env("GEOEDGE_ENGINE", "tokio")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // An unknown value from the variable is refused as from the flag.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1"])
            .env(ENGINE_CHILD, "1")
            .env("GEOEDGE_ENGINE", "uring")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success() && stdout.contains("expected tokio or epoll"),
            "{stdout}"
        );
    }

    #[test]
    fn an_unknown_engine_is_refused_with_the_choices() {
        for bad in ["uring", "Tokio", "", "epoll,tokio"] {
            let e = bad.parse::<Engine>().unwrap_err().to_string();
            assert_eq!(
                e,
                format!("engine {:?}: expected tokio or epoll", bad.trim())
            );
        }
        let l: Layer = toml::from_str("engine = 'uring'").unwrap();
        let e = Settings::resolve(l, None).unwrap_err().to_string();
        assert_eq!(e, "engine \"uring\": expected tokio or epoll");
        // Not a string in the file: refused when the file is read.
        assert!(toml::from_str::<Layer>("engine = 1").is_err());
    }

    #[test]
    fn a_changed_engine_needs_a_restart() {
        let settings = |toml: &str| Settings::resolve(toml::from_str(toml).unwrap(), None).unwrap();
        let old = settings("listen = ['127.0.0.1:1']\nworkers = 2");
        let new = settings("listen = ['127.0.0.1:1']\nworkers = 2\nengine = 'tokio'");
        let changes = crate::control::lifecycle::diff(&old, &new);
        assert_eq!(changes.restart, vec!["engine".to_owned()]);
        assert!(changes.live.is_empty());
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
