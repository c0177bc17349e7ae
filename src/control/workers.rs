//! Worker threads for client connections (named `ge-worker-N`: the kernel
//! keeps 15 bytes of a thread's name, shown by `top -H`, `ps -L` and perf),
//! each with its own `SO_REUSEPORT` listener for every client address, so
//! the kernel spreads new connections over the workers and a connection
//! stays on the thread that accepted it (no work stealing, no cross-thread
//! wake-ups on the relay path). Control work (reloads, metrics, signals,
//! the WireGuard device) stays on the main runtime.
//!
//! The listeners are bound before the workers start: the first for each
//! address as asked (port 0 picks a port), the others on the address the
//! first got. `SO_REUSEPORT` also lets a new geoedge process bind the same
//! addresses while an old one drains: only one started with `--takeover`
//! does ([`crate::control::takeover`] refuses the others before they bind).
//!
//! With `engine = "epoll"` ([`Engine::Epoll`], the default) each thread
//! runs the worker's epoll loop ([`crate::data::event_loop`]) over its
//! listeners and ticks its entry of the [`Heartbeats`] at each of its
//! sweeps, so a worker whose thread is stuck stops feeding the systemd
//! watchdog; a task on the control plane's runtime wakes the loop when the
//! edge stops accepting and when the drain is over, and every lease answer
//! wakes it (its clients waiting for one are decided for again).
//!
//! With `engine = "tokio"` ([`Engine::Tokio`]) each thread runs a
//! single-threaded tokio runtime, and a task on it ticks the heartbeat.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use geoedge_routing::AppId;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, watch};

use crate::control::config::{Engine, Settings};
use crate::control::sd_notify::Heartbeats;
use crate::data::dialer::TcpDialer;
use crate::data::proxy::{Proxy, Service};

pub use crate::data::admission::BACKLOG;

/// Every worker's listeners, bound and listening.
#[derive(Debug)]
pub struct Listeners {
    /// `per_worker[i]`: worker `i`'s listener for each client address.
    per_worker: Vec<Vec<(Service, std::net::TcpListener)>>,
}

impl Listeners {
    /// The number of workers (one listener set each).
    pub fn workers(&self) -> usize {
        self.per_worker.len()
    }

    /// The address each client listener got, in the order of the settings.
    pub fn addrs(&self) -> Vec<(AppId, SocketAddr)> {
        self.per_worker
            .first()
            .map(|ls| {
                ls.iter()
                    .filter_map(|(s, l)| Some((s.app.clone(), l.local_addr().ok()?)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A listening socket with `SO_REUSEPORT`, non-blocking.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Accepted sockets inherit TCP_NODELAY and keepalive from here.
    crate::data::dialer::tune(socket2::SockRef::from(&socket))?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Binds every client listener once per worker. Prints `listening APP ADDR`
/// on stdout for each address.
pub fn bind(settings: &Settings) -> anyhow::Result<Listeners> {
    let workers = settings.workers.max(1);
    let mut per_worker: Vec<Vec<(Service, std::net::TcpListener)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for spec in &settings.listen {
        let first =
            reuseport_listener(spec.addr).with_context(|| format!("binding {}", spec.addr))?;
        let addr = first.local_addr()?;
        let service = Service {
            app: spec.app.clone(),
            sni: spec.sni,
        };
        if spec.sni {
            println!("listening sni {} {addr}", spec.app);
            tracing::info!(default_app = %spec.app, %addr, workers, "listening, routing by the ClientHello's server name");
        } else {
            println!("listening {} {addr}", spec.app);
            tracing::info!(app = %spec.app, %addr, workers, "listening");
        }
        per_worker[0].push((service.clone(), first));
        for listeners in per_worker.iter_mut().skip(1) {
            let more = reuseport_listener(addr)
                .with_context(|| format!("binding {addr} again for another worker"))?;
            listeners.push((service.clone(), more));
        }
    }
    Ok(Listeners { per_worker })
}

/// How far ahead a worker's timer driver always has a deadline: the
/// worker's heartbeat ticks at least this often. Arming a timer earlier
/// than every deadline the driver knows of makes tokio wake the driver
/// through its eventfd (a `write` system call, then an extra `epoll_wait`),
/// and each connection arms one: its connect timeout. With the tick in the
/// wheel, no connect or PROXY header timeout (never under a second in
/// practice) is the earliest, so arming them costs no system call; the
/// tick costs four wake-ups a second.
const TIMER_HORIZON: std::time::Duration = std::time::Duration::from_millis(250);

/// The running workers.
pub struct Workers {
    /// The worker threads, one per worker.
    threads: Vec<JoinHandle<()>>,
    /// The number of workers.
    count: usize,
    /// One message per worker once it has stopped accepting.
    stopped: mpsc::Receiver<()>,
    /// Set when the workers may drop their runtimes (after the drain).
    done: watch::Sender<bool>,
}

/// Starts one worker per listener set, serving until `stop` is set.
pub fn spawn(
    proxy: &Arc<Proxy<TcpDialer>>,
    listeners: Listeners,
    engine: Engine,
    stop: &watch::Receiver<bool>,
    beats: &Arc<Heartbeats>,
) -> anyhow::Result<Workers> {
    let count = listeners.per_worker.len();
    let (stopped_tx, stopped) = mpsc::channel(count.max(1));
    let (done, done_rx) = watch::channel(false);
    let mut threads = Vec::with_capacity(count);
    for (i, set) in listeners.per_worker.into_iter().enumerate() {
        if engine == Engine::Epoll {
            threads.push(spawn_epoll(
                i,
                proxy,
                set,
                stop,
                &done_rx,
                stopped_tx.clone(),
                beats,
            )?);
            continue;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a worker's runtime")?;
        let (proxy, stop, stopped_tx, mut done_rx, beats) = (
            Arc::clone(proxy),
            stop.clone(),
            stopped_tx.clone(),
            done_rx.clone(),
            Arc::clone(beats),
        );
        let thread = std::thread::Builder::new()
            .name(format!("ge-worker-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    // Ends with the runtime, after the drain. The same
                    // tick keeps the timer driver's horizon close (see
                    // [`TIMER_HORIZON`]).
                    tokio::spawn(async move {
                        let period = beats.tick().min(TIMER_HORIZON);
                        let mut every = tokio::time::interval(period);
                        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        loop {
                            every.tick().await;
                            beats.beat(i, std::time::Instant::now());
                        }
                    });
                    let mut serving = Vec::with_capacity(set.len());
                    for (app, listener) in set {
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(l) => serving.push(tokio::spawn(Arc::clone(&proxy).serve(
                                l,
                                app,
                                stop.clone(),
                            ))),
                            Err(e) => tracing::error!("worker {i}: listener: {e}"),
                        }
                    }
                    for s in serving {
                        let _ = s.await;
                    }
                    let _ = stopped_tx.send(()).await;
                    // Connections keep running here while the edge drains.
                    let _ = done_rx.wait_for(|d| *d).await;
                });
            })
            .context("starting a worker thread")?;
        threads.push(thread);
    }
    tracing::info!(engine = engine.as_str(), workers = count, "workers started");
    Ok(Workers {
        threads,
        count,
        stopped,
        done,
    })
}

/// Worker `i` with the epoll engine: its loop's thread (see the module
/// documentation). Must be called on the control plane's runtime, which
/// wakes the loop when the edge stops accepting and when the drain ends.
fn spawn_epoll(
    i: usize,
    proxy: &Arc<Proxy<TcpDialer>>,
    set: Vec<(Service, std::net::TcpListener)>,
    stop: &watch::Receiver<bool>,
    done: &watch::Receiver<bool>,
    stopped: mpsc::Sender<()>,
    beats: &Arc<Heartbeats>,
) -> anyhow::Result<JoinHandle<()>> {
    use crate::data::event_loop::{Control, EventLoop};
    let (event_loop, waker) = EventLoop::new(set).context("starting a worker's epoll loop")?;
    let control = Control {
        stop: stop.clone(),
        done: done.clone(),
        stopped: Box::new(move || {
            let _ = stopped.blocking_send(());
        }),
        beat: {
            let beats = Arc::clone(beats);
            Box::new(move |now| beats.beat(i, now))
        },
    };
    // A lease answer wakes the loop: its clients waiting for one are
    // decided for again at once.
    let wake = Arc::clone(&waker);
    proxy.lease_wait.on_answer(Box::new(move || {
        let _ = wake.wake();
    }));
    // The loop polls with a timeout; the waker makes it see a stop and the
    // drain's end at once.
    let (mut stop, mut done) = (stop.clone(), done.clone());
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        let _ = waker.wake();
        let _ = done.wait_for(|d| *d).await;
        let _ = waker.wake();
    });
    let proxy = Arc::clone(proxy);
    std::thread::Builder::new()
        .name(format!("ge-worker-{i}"))
        .spawn(move || {
            if let Err(e) = event_loop.run(&proxy, control) {
                tracing::error!("worker {i}: epoll loop: {e}");
            }
        })
        .context("starting a worker thread")
}

impl Workers {
    /// Resolves once every worker has stopped accepting.
    pub async fn stopped(&mut self) {
        for _ in 0..self.count {
            if self.stopped.recv().await.is_none() {
                break;
            }
        }
    }

    /// Lets the workers drop their runtimes (closing whatever connections
    /// are still open) and waits for the threads to end.
    pub async fn finish(self) {
        let _ = self.done.send(true);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux hands the listener's TCP_NODELAY and keepalive settings down
    /// to accepted sockets, which is why accepting sets none.
    #[test]
    fn accepted_sockets_inherit_nodelay_and_keepalive() {
        let listener = reuseport_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        listener.set_nonblocking(false).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let s = socket2::SockRef::from(&accepted);
        assert!(s.tcp_nodelay().unwrap());
        assert!(s.keepalive().unwrap());
        assert_eq!(
            s.tcp_keepalive_time().unwrap(),
            std::time::Duration::from_secs(60)
        );
        assert_eq!(
            s.tcp_keepalive_interval().unwrap(),
            std::time::Duration::from_secs(10)
        );
        // And a second listener can share the address.
        let again = reuseport_listener(listener.local_addr().unwrap()).unwrap();
        assert_eq!(again.local_addr().unwrap(), listener.local_addr().unwrap());
    }
}
