//! A restart by a second process under 2,000 new connections a second, in
//! a network namespace of this test's own (so that it can turn
//! `net.ipv4.tcp_migrate_req` on without touching the host's).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::*;
use super::{claim, client, edge_cmd, raise_own_nofile, value, HEAVY};

/// A network namespace of this test's own with loopback up (deleted when
/// dropped), and what the restart test runs inside it.
struct NetNs(Netns);

impl NetNs {
    fn new(tag: &str) -> NetNs {
        let name = format!("geLc{tag}{}", std::process::id());
        // One left by an earlier run of this process id (quietly: `ip`
        // complains about a namespace that is not there).
        if Path::new("/run/netns").join(&name).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
        NetNs(Netns::new(name))
    }

    fn sysctl(&self, key: &str, value: &str) {
        self.0.sysctl(key, value);
    }

    /// Makes `cmd` start inside the namespace.
    fn command(&self, cmd: &mut Command) {
        self.0.enter_on_spawn(cmd);
    }

    /// A backend in the namespace on a thread and runtime of its own (so
    /// the load cannot starve it) with a full backlog: it greets each
    /// connection at once, then reads it to the end.
    fn backend(&self) -> SocketAddr {
        let (tx, rx) = std::sync::mpsc::channel();
        self.0.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
                let listener = socket.listen(4096).unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let _ = stream.write_all(b"backend=be\n").await;
                        let mut sink = [0u8; 1024];
                        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                    });
                }
            });
        });
        rx.recv().unwrap()
    }

    /// A tokio runtime whose threads live in the namespace: run what needs
    /// its sockets there with `spawn`.
    fn runtime(&self) -> tokio::runtime::Runtime {
        // Its threads are spawned by this thread, which is in the namespace.
        self.0
            .spawn(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap()
            })
            .join()
            .unwrap()
    }
}

/// What a paced load saw.
#[derive(Debug, Default)]
struct Load {
    /// Connections opened.
    attempted: usize,
    /// Connections the backend greeted.
    greeted: usize,
    /// Why the others failed.
    failed: Vec<&'static str>,
    /// How long opening them took.
    paced: Duration,
    /// How long until the last one ended.
    took: Duration,
}

/// Opens `per_sec` new connections a second for `dur`, each greeted by the
/// backend and closed.
async fn paced_load(addr: SocketAddr, per_sec: usize, dur: Duration) -> Load {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let per_tick = per_sec / 1000;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..dur.as_millis() as usize {
        tick.tick().await;
        for k in 0..per_tick {
            let ip = claim((t * per_tick + k) % 60_000);
            // Each closes as soon as it is greeted.
            set.spawn(async move { client(addr, ip).await.map(drop) });
        }
    }
    let paced = start.elapsed();
    let mut load = Load::default();
    while let Some(r) = set.join_next().await {
        load.attempted += 1;
        match r.unwrap() {
            Ok(_) => load.greeted += 1,
            Err(why) => load.failed.push(why),
        }
    }
    load.took = start.elapsed();
    load.paced = paced;
    load
}

/// Item 10: a second process starts on the same address (SO_REUSEPORT,
/// `--takeover`) while 2,000 new connections a second arrive, then the first gets
/// SIGTERM: no connection is refused or reset. With
/// `net.ipv4.tcp_migrate_req` the connections queued on the first
/// process's listeners when it closes them move to the second's.
#[test]
fn a_restart_by_a_second_process_refuses_nothing_at_2000_connections_a_second() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip("network namespaces need root");
        return;
    }
    if !Path::new("/proc/sys/net/ipv4/tcp_migrate_req").exists() {
        skip("this kernel has no net.ipv4.tcp_migrate_req (Linux 5.14)");
        return;
    }
    let _heavy = HEAVY.blocking_lock();
    raise_own_nofile();
    let ns = NetNs::new("r");
    ns.sysctl("net.ipv4.tcp_migrate_req", "1");
    let rt = ns.runtime();
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    add_backend(&db, "be", "eu", "GB", ns.backend(), 10_000, 10_000);
    let start_edge = |listen: &str| {
        // The second takes over from the first (without it, it would be
        // refused: the first serves the address).
        let takeover: &[&str] = if listen.ends_with(":0") {
            &[]
        } else {
            &["--takeover"]
        };
        let mut args = edge_args(&db, &["--workers", "2", "--drain-timeout", "5s"]);
        args.extend_from_slice(takeover);
        assert_eq!(args[1], "--listen");
        args[2] = listen;
        let mut cmd = edge_cmd(&args);
        ns.command(&mut cmd);
        Edge::spawn(cmd, "listening ")
    };
    let ok = |metrics: SocketAddr| {
        rt.block_on(rt.spawn(async move {
            tokio::task::spawn_blocking(move || {
                value(metrics, r#"edge_connections_total{result="ok"}"#)
            })
            .await
            .unwrap()
        }))
        .unwrap()
    };

    let mut old = start_edge("127.0.0.1:0");
    let addr = old.addr;
    let load = rt.spawn(paced_load(addr, 2000, Duration::from_secs(4)));
    std::thread::sleep(Duration::from_secs(1));
    let new = start_edge(&addr.to_string());
    assert_eq!(new.addr, addr);
    std::thread::sleep(Duration::from_millis(500));
    let by_old = ok(old.metrics.unwrap());
    let term = Instant::now();
    old.signal("TERM");
    let status = old.wait(Duration::from_secs(7));
    let old_exited = term.elapsed();
    let load = rt.block_on(load).unwrap();
    let by_new = ok(new.metrics.unwrap());
    let taken: Vec<String> = old
        .log()
        .into_iter()
        .filter(|l| l.contains("stopped accepting"))
        .collect();
    eprintln!(
        "handover: {} connections opened in {:.2} s ({:.0} a second), the last done after {:.2} s, {} greeted, failed: {:?}; \
         the old process proxied {by_old} before SIGTERM and exited ({status}) {old_exited:?} after it, \
         the new one {by_new}; {taken:?}",
        load.attempted,
        load.paced.as_secs_f64(),
        load.attempted as f64 / load.paced.as_secs_f64(),
        load.took.as_secs_f64(),
        load.greeted,
        load.failed
    );
    for l in old.log().iter().chain(new.log().iter()) {
        if l.contains("WARN") || l.contains("ERROR") {
            eprintln!("{l}");
        }
    }
    assert!(status.success(), "{status}");
    assert_eq!(load.attempted, 8000);
    assert!(
        load.failed.is_empty(),
        "refused or reset: {:?}",
        load.failed
    );
    assert!(by_old > 0.0 && by_new > 0.0, "both processes served");
    drop(new);
    rt.shutdown_background();
}
