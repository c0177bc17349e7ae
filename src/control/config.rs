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

use crate::data::proxy_protocol::Version;
use geoedge_wireguard::engine::REKEY_AFTER_TIME;

mod health;
mod layer;
mod values;

pub use health::{CheckOptions, DEFAULT_MAX_RATE};

pub use layer::Layer;
use values::parse_cidr;
pub use values::{DurationOrOff, HumanDuration};

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
    /// Whether a backend's end-of-file half-closes the client connection
    /// (true) or closes it (false).
    pub half_close: bool,
    /// Whether bulk transfers are spliced (true) or copied (false).
    pub splice: bool,
    /// Deadline for a trusted source's PROXY header.
    pub proxy_header_timeout: Duration,
    /// How long shutdown waits for open connections.
    pub drain_timeout: Duration,
    /// Worker threads (each a single-threaded runtime with its own
    /// listeners).
    pub workers: usize,
    /// The global connection limit; `None`: derived from the descriptor
    /// limit at start ([`crate::data::admission::default_max_connections`]),
    /// which also caps a value set here
    /// ([`crate::data::admission::effective_max_connections`]).
    pub max_connections: Option<usize>,
    /// The WireGuard backhaul, when configured.
    pub wireguard: Option<WgSettings>,
    /// The metrics and health listener (`None`: off).
    pub metrics_listen: Option<SocketAddr>,
    /// Per-backend metric series while routing.db holds at most this many
    /// backends ([`DEFAULT_METRICS_BACKEND_SERIES`]).
    pub metrics_backend_series: usize,
    /// Rise and fall thresholds and passive ejection, for every backend.
    pub health: HealthConfig,
    /// Active health checks (`None`: off).
    pub health_checks: Option<CheckOptions>,
}

/// Per-backend metric series are exported while routing.db holds at most
/// this many backends, unless `metrics_backend_series` says otherwise: at
/// about 30 series a backend, 1,000 backends make a scrape of 30k lines.
pub const DEFAULT_METRICS_BACKEND_SERIES: usize = 1000;

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
        let (health, health_checks) = health::settings(&l)?;
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
            half_close: l.half_close.unwrap_or(true),
            splice: l.splice.unwrap_or(true),
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
            metrics_backend_series: l
                .metrics_backend_series
                .map_or(DEFAULT_METRICS_BACKEND_SERIES, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX)
                }),
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
