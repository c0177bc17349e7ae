//! The systemd notification protocol (`Type=notify`, `Type=notify-reload`)
//! and the watchdog, without libsystemd: one datagram per message to the
//! unix socket named by `NOTIFY_SOCKET` (a path, or `@name` in the
//! abstract namespace). Outside systemd (no `NOTIFY_SOCKET`) every call is
//! a no-op.
//!
//! The watchdog (`WATCHDOG_USEC`, honouring `WATCHDOG_PID`) is fed from the
//! data path: each worker runtime ticks its [`Heartbeats`] entry from a
//! task of its own, and the main runtime sends `WATCHDOG=1` every half
//! period only while every worker has ticked within that half period
//! ([`Heartbeats::stale`]). A worker whose thread is stuck stops the pings,
//! and systemd restarts the service.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often workers tick without a watchdog.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);

/// Sends notifications to the service manager.
#[derive(Debug)]
pub struct Notifier {
    /// The socket and where to send, when `NOTIFY_SOCKET` names one.
    target: Option<(UnixDatagram, SocketAddr)>,
    /// The watchdog period, when systemd asked for one for this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Notifier::new(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// From the variables' values; `pid` is this process's.
    pub fn new(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Notifier {
        let target = socket.and_then(|s| {
            let addr = match s.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
                None if s.starts_with('/') => SocketAddr::from_pathname(s),
                None => {
                    tracing::warn!(
                        socket = s,
                        "NOTIFY_SOCKET is neither a path nor @name; not notifying"
                    );
                    return None;
                }
            };
            let addr = match addr {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(socket = s, "NOTIFY_SOCKET: {e}; not notifying");
                    return None;
                }
            };
            match UnixDatagram::unbound() {
                Ok(sock) => Some((sock, addr)),
                Err(e) => {
                    tracing::warn!("cannot open a socket for NOTIFY_SOCKET: {e}");
                    None
                }
            }
        });
        let for_us = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(pid));
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us && target.is_some())
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// The watchdog period, when there is one.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How often the workers should tick their heartbeat: four times per
    /// watchdog period, at most once a second.
    pub fn tick(&self) -> Duration {
        self.watchdog
            .map_or(DEFAULT_TICK, |w| (w / 4).min(DEFAULT_TICK))
    }

    /// Sends one message (`KEY=VALUE` lines); failures are logged at debug
    /// (the manager may be gone while we drain).
    pub fn send(&self, message: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
                tracing::debug!("notifying the service manager failed: {e}");
            }
        }
    }

    /// Listeners bound, tables loaded: serving.
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=serving");
    }

    /// A config reload starts (`Type=notify-reload` waits for the
    /// `READY=1` that follows).
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nSTATUS=reloading the config\nMONOTONIC_USEC={}",
            monotonic_usec()
        ));
    }

    /// A config reload is over.
    pub fn reloaded(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// Stopping: draining open connections.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=draining");
    }

    /// The watchdog ping.
    pub fn watchdog_ping(&self) {
        self.send("WATCHDOG=1");
    }
}

/// `CLOCK_MONOTONIC` in microseconds, as systemd wants for `RELOADING=1`.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// When each worker last ticked, as milliseconds after a common base.
#[derive(Debug)]
pub struct Heartbeats {
    /// The instant the ticks are counted from.
    base: Instant,
    /// How often each worker ticks.
    tick: Duration,
    /// Per worker: milliseconds after `base` of its last tick.
    beats: Vec<AtomicU64>,
}

impl Heartbeats {
    /// Heartbeats for `workers` workers ticking every `tick`, all fresh now.
    pub fn new(workers: usize, tick: Duration) -> Heartbeats {
        Heartbeats {
            base: Instant::now(),
            tick,
            beats: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// How often each worker ticks.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    /// Worker `i` is alive at `now`.
    pub fn beat(&self, i: usize, now: Instant) {
        if let Some(b) = self.beats.get(i) {
            b.store(self.millis(now), Ordering::Relaxed);
        }
    }

    /// The first worker that has not ticked within `max_age` of `now`, and
    /// how long ago it last did.
    pub fn stale(&self, now: Instant, max_age: Duration) -> Option<(usize, Duration)> {
        let now = self.millis(now);
        self.beats.iter().enumerate().find_map(|(i, b)| {
            let age = Duration::from_millis(now.saturating_sub(b.load(Ordering::Relaxed)));
            (age > max_age).then_some((i, age))
        })
    }
}

/// Pings the watchdog every half period while every worker ticks; runs
/// until aborted. Does nothing without a watchdog.
pub async fn feed_watchdog(notifier: std::sync::Arc<Notifier>, beats: std::sync::Arc<Heartbeats>) {
    let Some(period) = notifier.watchdog() else {
        return;
    };
    let half = period / 2;
    let mut every = tokio::time::interval(half);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut withheld = false;
    loop {
        every.tick().await;
        match beats.stale(Instant::now(), half) {
            None => {
                if std::mem::take(&mut withheld) {
                    tracing::info!("every worker ticks again: feeding the watchdog");
                }
                notifier.watchdog_ping();
            }
            Some((worker, age)) => {
                if !std::mem::replace(&mut withheld, true) {
                    tracing::error!(
                        worker,
                        "worker {worker} has not run for {age:?}: withholding the watchdog ping"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_only_for_this_process_and_with_a_socket() {
        let n = Notifier::new(Some("/run/x.sock"), Some("2000000"), None, 7);
        assert_eq!(n.watchdog(), Some(Duration::from_secs(2)));
        assert_eq!(n.tick(), Duration::from_millis(500));
        let n = Notifier::new(Some("/run/x.sock"), Some("2000000"), Some("8"), 7);
        assert_eq!(n.watchdog(), None, "another process's watchdog");
        let n = Notifier::new(Some("@abstract"), Some("60000000"), Some("7"), 7);
        assert_eq!(n.watchdog(), Some(Duration::from_secs(60)));
        assert_eq!(n.tick(), DEFAULT_TICK);
        let n = Notifier::new(None, Some("2000000"), None, 7);
        assert_eq!(n.watchdog(), None, "nowhere to send it");
        let n = Notifier::new(Some("relative"), None, None, 7);
        assert!(n.target.is_none());
        n.ready(); // a no-op
    }

    #[test]
    fn a_worker_that_stops_ticking_is_stale() {
        let beats = Heartbeats::new(3, Duration::from_millis(100));
        let t0 = beats.base;
        let half = Duration::from_millis(250);
        assert_eq!(beats.stale(t0 + Duration::from_millis(200), half), None);
        for i in 0..3 {
            beats.beat(i, t0 + Duration::from_millis(300));
        }
        beats.beat(0, t0 + Duration::from_millis(600));
        beats.beat(2, t0 + Duration::from_millis(600));
        // Worker 1 last ticked at 300 ms.
        assert_eq!(
            beats.stale(t0 + Duration::from_millis(600), half),
            Some((1, Duration::from_millis(300)))
        );
        beats.beat(1, t0 + Duration::from_millis(650));
        assert_eq!(beats.stale(t0 + Duration::from_millis(700), half), None);
    }

    #[test]
    fn messages_reach_a_real_datagram_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(Some(path.to_str().unwrap()), Some("1000000"), None, 1);
        n.ready();
        n.watchdog_ping();
        n.stopping();
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        for _ in 0..3 {
            let k = server.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..k]).into_owned());
        }
        assert!(got[0].starts_with("READY=1\n"), "{got:?}");
        assert_eq!(got[1], "WATCHDOG=1");
        assert!(got[2].starts_with("STOPPING=1\n"));

        let name = format!("geoedge-notify-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let n = Notifier::new(Some(&format!("@{name}")), None, None, 1);
        n.reloading();
        let k = server.recv(&mut buf).unwrap();
        let msg = String::from_utf8_lossy(&buf[..k]).into_owned();
        assert!(
            msg.starts_with("RELOADING=1\n") && msg.contains("MONOTONIC_USEC="),
            "{msg}"
        );
    }
}
