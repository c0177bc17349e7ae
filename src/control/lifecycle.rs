//! The signals `geoedge run` answers and the config reload: SIGTERM and
//! SIGINT stop it (see `run_cmd::serve`), SIGHUP re-reads the `--config`
//! file with the flags and environment layered over it as at start.
//!
//! A reload applies what can change while running, for new connections:
//! the connect timeout and attempts, the idle and PROXY header timeouts,
//! the PROXY protocol settings, the connection limit and the drain
//! timeout; [`ProxyOptions`] are swapped whole (one atomic store), so a
//! connection sees either the old or the new ones. Settings that need a
//! restart (listeners, workers, WireGuard, the metrics listener, the
//! tables, region, app, bindings and backend health) are logged as such and keep their
//! started values. An invalid file is logged once per SIGHUP and counted,
//! and the settings in force stay. A reload that changed nothing is logged
//! at debug only (a SIGHUP storm does not flood the log).
//!
//! The file is read on a thread of its own ([`read_in_background`]) and the
//! result sent back, so the task that waits for SIGTERM never waits on a
//! file: a stop is handled while a read is still pending (and the read is
//! abandoned). The read itself refuses anything but a regular file (a FIFO
//! would block it until someone writes to it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::control::config::Settings;
use crate::data::admission::ConnLimit;
use crate::data::proxy::ProxyOptions;

/// Re-resolves the settings as at start (flags and environment over the
/// config file over the defaults).
pub type Resolve = Arc<dyn Fn() -> anyhow::Result<Settings> + Send + Sync>;

/// A config read under way on its own thread.
pub type PendingRead = tokio::sync::oneshot::Receiver<anyhow::Result<Settings>>;

/// Starts re-reading the settings with `resolve` on a thread of its own;
/// the result comes back on the returned channel. The thread is never
/// joined: a read that hangs holds only that thread, and the process exits
/// without waiting for it.
pub fn read_in_background(resolve: &Resolve) -> PendingRead {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let resolve = Arc::clone(resolve);
    let spawned = std::thread::Builder::new()
        .name("config-read".into())
        .spawn(move || {
            let _ = tx.send(resolve());
        });
    if let Err(e) = spawned {
        // The sender went with the closure: the read ends at once, failed.
        tracing::error!("cannot start a thread to read the config: {e}");
    }
    rx
}

/// The result of a pending read, once it ends.
pub fn read_result(
    received: Result<anyhow::Result<Settings>, tokio::sync::oneshot::error::RecvError>,
) -> anyhow::Result<Settings> {
    received.unwrap_or_else(|_| Err(anyhow::anyhow!("the config read ended without a result")))
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// SIGTERM or SIGINT: stop accepting and drain.
    Stop,
    /// SIGHUP: re-read the config (and reopen the access log's file).
    Reload,
    /// SIGUSR1: reopen the access log's file (logrotate moved it).
    Reopen,
}

/// The signal handlers, installed once (from then on SIGHUP no longer
/// terminates the process).
pub struct Signals {
    /// SIGTERM.
    term: Signal,
    /// SIGINT.
    int: Signal,
    /// SIGHUP.
    hup: Signal,
    /// SIGUSR1.
    usr1: Signal,
}

impl Signals {
    /// Installs the handlers; call inside a tokio runtime.
    pub fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            usr1: signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?,
        })
    }

    /// The next signal.
    pub async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.term.recv() => Asked::Stop,
            _ = self.int.recv() => Asked::Stop,
            _ = self.hup.recv() => Asked::Reload,
            _ = self.usr1.recv() => Asked::Reopen,
        }
    }
}

/// Config reloads by result, for `edge_config_reloads_total`.
#[derive(Debug, Default)]
pub struct ConfigReloads {
    /// Reloads that applied (including those that changed nothing).
    pub applied: AtomicU64,
    /// Reloads refused: the file or a value in it is invalid.
    pub failed: AtomicU64,
}

/// The proxy's options from the settings.
pub fn proxy_options(s: &Settings) -> ProxyOptions {
    s.live.proxy.clone()
}

/// What differs between the settings in force and newly read ones.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Settings applied at once (to new connections).
    pub live: Vec<String>,
    /// Settings that only a restart applies.
    pub restart: Vec<String>,
}

/// Compares two sets of settings key by key (the names are the TOML
/// keys): a key of [`LiveSettings`](crate::control::config::LiveSettings)
/// that differs applies live, any other needs a restart. The keys come from the settings' own structure, so a
/// new setting is compared (and sorted live or not) without a list to keep.
pub fn diff(old: &Settings, new: &Settings) -> Changes {
    let keys = |s: &Settings| match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let live_keys = match serde_json::to_value(&old.live) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (old, new) = (keys(old), keys(new));
    let mut c = Changes::default();
    for (key, value) in &old {
        if new.get(key) != Some(value) {
            let list = if live_keys.contains_key(key) {
                &mut c.live
            } else {
                &mut c.restart
            };
            list.push(key.clone());
        }
    }
    c
}

/// The connection limit `settings` ask for, lowered (with a warning) to
/// `allowed`, what the descriptor limit holds.
pub fn max_connections(settings: &Settings, allowed: usize) -> usize {
    let (limit, lowered) =
        crate::data::admission::effective_max_connections(settings.live.max_connections, allowed);
    if lowered {
        tracing::warn!(
            asked = settings.live.max_connections,
            descriptors_allow = allowed,
            "--max-connections is above what the descriptor limit holds (two descriptors a client, after the reserve): using {allowed}; raise the descriptor limit (LimitNOFILE=) to allow more"
        );
    }
    limit
}

/// What a reload works on.
pub struct Live<'a> {
    /// The proxy's options, swapped whole.
    pub options: &'a arc_swap::ArcSwap<ProxyOptions>,
    /// The global connection limit.
    pub limit: &'a ConnLimit,
    /// The limit when the settings name none.
    pub default_max: usize,
    /// Reloads by result.
    pub stats: &'a ConfigReloads,
}

/// Applies the result of a config read (on SIGHUP) to `live`, updating
/// `current`. Returns a status line for the service manager.
pub fn reload(live: &Live<'_>, current: &mut Settings, read: anyhow::Result<Settings>) -> String {
    let new = match read {
        Ok(new) => new,
        Err(e) => {
            live.stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!("config reload refused, the settings in force stay: {e:#}");
            return "serving; the last config reload was refused".into();
        }
    };
    let changes = diff(current, &new);
    live.options.store(Arc::new(proxy_options(&new)));
    live.limit.set_max(max_connections(&new, live.default_max));
    // The live half, swapped whole; the rest keep their started values.
    current.live = new.live;
    live.stats.applied.fetch_add(1, Ordering::Relaxed);
    if changes == Changes::default() {
        tracing::debug!("config reloaded: nothing changed");
    } else if changes.live.is_empty() {
        tracing::info!("config reloaded: nothing that applies live changed");
    } else {
        tracing::info!(
            changed = %changes.live.join(","),
            max_connections = live.limit.max(),
            "config reloaded"
        );
    }
    if !changes.restart.is_empty() {
        tracing::warn!(
            changed = %changes.restart.join(","),
            "config changes that apply only at a restart (kept as started): {}",
            changes.restart.join(", ")
        );
    }
    "serving".into()
}

/// Resolves on SIGTERM or SIGINT.
pub async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::control::config::Layer;

    fn settings(toml: &str) -> Settings {
        let l: Layer = toml::from_str(toml).unwrap();
        Settings::resolve(l, None).unwrap()
    }

    #[test]
    fn live_and_restart_settings_are_told_apart() {
        let old = settings("listen = ['127.0.0.1:1']\nworkers = 2");
        let new = settings(
            "listen = ['127.0.0.1:2']\nworkers = 2\nconnect_timeout = '1s'\nmax_connections = 9",
        );
        assert_eq!(
            diff(&old, &new),
            Changes {
                live: vec!["connect_timeout".into(), "max_connections".into()],
                restart: vec!["listen".into()],
            }
        );
        assert_eq!(diff(&old, &old), Changes::default());
    }

    /// What a reload works on, owned by a test: the proxy's options from
    /// `current`, a limit whose default is 100, the reload counts.
    struct Held {
        options: arc_swap::ArcSwap<ProxyOptions>,
        limit: ConnLimit,
        stats: ConfigReloads,
    }

    impl Held {
        fn new(current: &Settings) -> Self {
            Self {
                options: arc_swap::ArcSwap::from_pointee(proxy_options(current)),
                limit: ConnLimit::new(100),
                stats: ConfigReloads::default(),
            }
        }

        fn live(&self) -> Live<'_> {
            Live {
                options: &self.options,
                limit: &self.limit,
                default_max: 100,
                stats: &self.stats,
            }
        }
    }

    #[test]
    fn a_reload_swaps_the_live_settings_and_keeps_the_rest() {
        let mut current = settings("listen = ['127.0.0.1:1']\nworkers = 2");
        let held = Held::new(&current);
        let (live, options, limit, stats) = (held.live(), &held.options, &held.limit, &held.stats);
        let next = || -> anyhow::Result<Settings> {
            Ok(settings(
                "listen = ['127.0.0.1:2']\nworkers = 3\nidle_timeout = '5s'\nhalf_close = false\nsplice = false\nmax_connections = 7\ndrain_timeout = '2s'",
            ))
        };
        assert!(options.load().half_close, "on by default");
        assert!(options.load().splice, "on by default");
        reload(&live, &mut current, next());
        assert_eq!(options.load().idle_timeout, Duration::from_secs(5));
        assert!(!options.load().half_close);
        assert!(!options.load().splice);
        assert_eq!(limit.max(), 7);
        assert_eq!(current.live.drain_timeout, Duration::from_secs(2));
        assert_eq!(current.workers, 2, "needs a restart");
        assert_eq!(current.listen[0].addr.port(), 1, "needs a restart");

        // An invalid config keeps everything.
        let bad = || -> anyhow::Result<Settings> { anyhow::bail!("config file x: unknown field") };
        reload(&live, &mut current, bad());
        assert_eq!(limit.max(), 7);
        assert_eq!(options.load().idle_timeout, Duration::from_secs(5));
        assert_eq!(stats.applied.load(Ordering::Relaxed), 1);
        assert_eq!(stats.failed.load(Ordering::Relaxed), 1);

        // Without a limit in the file, the default comes back.
        let plain = settings("listen = ['127.0.0.1:1']\nworkers = 2");
        reload(&live, &mut current, Ok(plain));
        assert_eq!(limit.max(), 100);
    }

    /// A value for every live key that differs from its default.
    const EVERY_LIVE_SETTING: &str = "listen = ['127.0.0.1:1']
workers = 2
proxy_protocol_from = ['10.0.0.0/8']
send_proxy_protocol = 'v2'
connect_timeout = '1s'
connect_attempts = 5
idle_timeout = '5s'
half_close = false
splice = false
proxy_header_timeout = '9s'
drain_timeout = '2s'
max_connections = 7
client_max_connections = 3
client_rate = '10/60s'
client_limit_exempt = ['192.0.2.0/24']
client_ipv4_prefix = 24
client_ipv6_prefix = 48";

    #[test]
    fn every_live_setting_is_reported_and_applied_by_a_reload() {
        let mut current = settings("listen = ['127.0.0.1:1']\nworkers = 2");
        let new = settings(EVERY_LIVE_SETTING);
        // Every key of the live half: one added to `LiveSettings` without a
        // value above fails here.
        let serde_json::Value::Object(keys) = serde_json::to_value(&new.live).unwrap() else {
            panic!("the live settings are a map")
        };
        let mut keys: Vec<String> = keys.keys().cloned().collect();
        keys.sort();
        let mut reported = diff(&current, &new).live;
        reported.sort();
        assert_eq!(reported, keys, "a live setting is not changed by the test");
        assert!(diff(&current, &new).restart.is_empty());

        let held = Held::new(&current);
        let (live, options, limit) = (held.live(), &held.options, &held.limit);
        reload(&live, &mut current, Ok(new.clone()));
        assert_eq!(current.live, new.live);
        assert_eq!(**options.load(), new.live.proxy);
        assert_eq!(Some(limit.max()), new.live.max_connections);
    }
}
