//! A second geoedge on an address another serves: refused (exit 2, naming
//! the other's pid) unless it takes over (`--takeover`), and a takeover
//! carries the old process's sticky bindings, so a restart does not move
//! clients.

use std::io::{BufRead, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::edge_cmd;
use super::support::*;

/// The backend a client claiming `claim` reaches through `edge` (blocking,
/// for [`until`]'s conditions), or `None`.
fn backend_for(edge: SocketAddr, claim: IpAddr) -> Option<String> {
    let mut s = std::net::TcpStream::connect(edge).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let header = format!("PROXY TCP4 {claim} 127.0.0.1 40000 {}\r\n", edge.port());
    s.write_all(header.as_bytes()).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("backend="))
        .map(str::to_owned)
}

/// `geoedge ARGS` run to its end: exit code and stderr.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let out = edge_cmd(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_port_exits_2_naming_the_first_unless_it_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let be = Backend::start("be").await;
    add_backend(&db, "be", "eu", "GB", be.addr, 1000, 1000);
    let first = Edge::spawn(edge_cmd(&edge_args(&db, &[])), "listening ");
    let addr = first.addr.to_string();
    let claim: IpAddr = "81.2.69.10".parse().unwrap();

    // The same address, then the wildcard of its port (and its own metrics
    // port): refused, naming the first.
    for listen in [addr.clone(), format!("0.0.0.0:{}", first.addr.port())] {
        let mut args = edge_args(&db, &[]);
        args[2] = &listen;
        let (code, stderr) = refused(&args);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "is served by another geoedge (pid {})",
                first.pid()
            )) && stderr.contains("--takeover"),
            "{stderr}"
        );
    }
    // The first serves on.
    let (addr_c, be_c) = (first.addr, claim);
    let served = tokio::task::spawn_blocking(move || backend_for(addr_c, be_c))
        .await
        .unwrap();
    assert_eq!(served.as_deref(), Some("be"));

    // Taking over: it starts beside the first, on the same address.
    let mut args = edge_args(&db, &["--takeover"]);
    args[2] = &addr;
    let second = Edge::spawn(edge_cmd(&args), "listening ");
    assert_eq!(second.addr, first.addr);
    let pid = format!("pid={}", first.pid());
    until(
        || format!("no takeover logged: {:#?}", second.log()),
        Duration::from_secs(10),
        || {
            second
                .log()
                .iter()
                .any(|l| l.contains("taking over") && l.contains(&pid))
        },
    )
    .await;
    // GEOEDGE_TAKEOVER does the same.
    let mut args = edge_args(&db, &[]);
    args[2] = &addr;
    let mut cmd = edge_cmd(&args);
    cmd.env("GEOEDGE_TAKEOVER", "1");
    let third = Edge::spawn(cmd, "listening ");
    assert_eq!(third.addr, first.addr);
}

#[test]
fn a_second_demo_on_the_same_port_exits_2_naming_the_first_unless_it_takes_over() {
    let listen = format!("127.0.0.1:{}", free_port());
    let first = Edge::spawn(edge_cmd(&["demo", "--listen", &listen]), "listening ");
    let (code, stderr) = refused(&["demo", "--listen", &listen]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{listen} is served by another geoedge (pid {})",
            first.pid()
        )),
        "{stderr}"
    );
    let second = Edge::spawn(
        edge_cmd(&["demo", "--listen", &listen, "--takeover"]),
        "listening ",
    );
    assert_eq!(second.addr, first.addr);
}

/// 50 clients bound to a backend that a fresh decision no longer picks (a
/// nearer one was added since): an edge restarted with `--takeover` keeps
/// them there after the old one stops, where an edge without the old
/// one's bindings sends them to the nearer backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_takeover_keeps_clients_on_their_backends() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let far = Backend::start("far").await;
    let near = Backend::start("near").await;
    // The clients are in GB (the sample mmdb's 81.2.69.0/24); only a
    // backend in DE at first.
    add_backend(&db, "far", "eu", "DE", far.addr, 1000, 1000);
    let clients: Vec<IpAddr> = (10..60)
        .map(|i| format!("81.2.69.{i}").parse().unwrap())
        .collect();
    // Fresh clients: a new one each time (a client seen once is bound).
    let fresh = std::sync::atomic::AtomicU8::new(100);
    let fresh = || {
        let i = fresh.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        IpAddr::from([81, 2, 69, i.min(250)])
    };
    let mut old = Edge::spawn(edge_cmd(&edge_args(&db, &[])), "listening ");
    let addr = old.addr;
    let through = |edge: SocketAddr, who: Vec<IpAddr>| {
        tokio::task::spawn_blocking(move || {
            who.into_iter()
                .map(|c| backend_for(edge, c))
                .collect::<Vec<_>>()
        })
    };
    let all = |b: &str| vec![Some(b.to_owned()); 50];
    assert_eq!(through(addr, clients.clone()).await.unwrap(), all("far"));

    // A backend in the clients' country: fresh clients go there, bound
    // ones stay.
    add_backend(&db, "near", "eu", "GB", near.addr, 1000, 1000);
    until(
        || "the old edge never routed a fresh client to the new backend".into(),
        Duration::from_secs(20),
        || backend_for(addr, fresh()).as_deref() == Some("near"),
    )
    .await;
    assert_eq!(through(addr, clients.clone()).await.unwrap(), all("far"));

    // The restart: the new process takes over, then the old one stops.
    let mut args = edge_args(&db, &["--takeover"]);
    let listen = addr.to_string();
    args[2] = &listen;
    let new = Edge::spawn(edge_cmd(&args), "listening ");
    // The bindings were imported before it bound its listeners: the 50
    // clients and the fresh ones (bound to either backend).
    let imported = || {
        new.log().iter().find_map(|l| {
            let l = l.split_once("took over the bindings")?.1;
            let n = l.split_once("imported=")?.1.split_whitespace().next()?;
            n.parse::<usize>().ok()
        })
    };
    until(
        || format!("no bindings taken over: {:#?}", new.log()),
        Duration::from_secs(10),
        || imported().is_some(),
    )
    .await;
    assert!(imported().unwrap() > 50, "{:?}", imported());
    old.signal("TERM");
    assert!(old.wait(Duration::from_secs(40)).success());
    assert_eq!(through(addr, clients.clone()).await.unwrap(), all("far"));

    // Without the old one's bindings (an edge on another port, a copy of
    // the table without the bindings the old one left beside it): the
    // nearer backend.
    let other = tempfile::tempdir().unwrap();
    let copy = other.path().join("routing.db");
    std::fs::copy(&db, &copy).unwrap();
    let control = Edge::spawn(edge_cmd(&edge_args(&copy, &[])), "listening ");
    assert_eq!(through(control.addr, clients).await.unwrap(), all("near"));
    drop(new);
}

/// A plain restart (the old process stops, then a new one starts, as
/// `systemctl restart` does): the bindings the old one left beside
/// routing.db keep the clients on their backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_then_start_keeps_clients_on_their_backends() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let far = Backend::start("far").await;
    let near = Backend::start("near").await;
    add_backend(&db, "far", "eu", "DE", far.addr, 1000, 1000);
    let clients: Vec<IpAddr> = (10..40)
        .map(|i| format!("81.2.69.{i}").parse().unwrap())
        .collect();
    let through = |edge: SocketAddr, who: Vec<IpAddr>| {
        tokio::task::spawn_blocking(move || {
            who.into_iter()
                .map(|c| backend_for(edge, c))
                .collect::<Vec<_>>()
        })
    };
    let all = |b: &str| vec![Some(b.to_owned()); 30];
    let mut old = Edge::spawn(edge_cmd(&edge_args(&db, &[])), "listening ");
    let addr = old.addr;
    assert_eq!(through(addr, clients.clone()).await.unwrap(), all("far"));
    add_backend(&db, "near", "eu", "GB", near.addr, 1000, 1000);
    // A new client each time (one seen once is bound).
    let fresh = std::sync::atomic::AtomicU8::new(100);
    until(
        || "the old edge never routed a fresh client to the new backend".into(),
        Duration::from_secs(20),
        || {
            let i = fresh.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            backend_for(addr, IpAddr::from([81, 2, 69, i.min(250)])).as_deref() == Some("near")
        },
    )
    .await;
    old.signal("TERM");
    assert!(old.wait(Duration::from_secs(40)).success());
    let saved = dir.path().join("routing.db.bindings");
    assert!(saved.exists(), "{:#?}", old.log());

    let mut args = edge_args(&db, &[]);
    let listen = addr.to_string();
    args[2] = &listen;
    let new = Edge::spawn(edge_cmd(&args), "listening ");
    assert!(
        new.log()
            .iter()
            .any(|l| l.contains("sticky bindings of the previous run restored")),
        "{:#?}",
        new.log()
    );
    assert!(!saved.exists(), "read once");
    assert_eq!(through(addr, clients).await.unwrap(), all("far"));
    // A fresh client: the nearer backend.
    assert_eq!(
        backend_for(addr, "81.2.69.252".parse().unwrap()).as_deref(),
        Some("near")
    );
}
