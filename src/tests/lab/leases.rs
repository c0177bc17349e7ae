//! Hard limits across the fleet by lease, in the lab: one backend of POP
//! eu, `eu-3`, with `hard_limit = 30`, is the best choice of GB clients at
//! every POP (eu-1 and eu-2 are drained). It is a backend of this test's,
//! listening on eu's overlay address inside eu's namespace, that counts
//! the connections it holds (those that sent geoedge's PROXY header: the
//! active health checks send nothing) by the POP that dialed them, and the
//! most it ever held at once.
//!
//! - Each POP is sent 20 GB clients, held open (us and sa first one each,
//!   so that they hold a lease before the burst): eu-3 never holds more
//!   than 30 and every other client is served by its next choice, a
//!   backend of us or sa.
//! - eu cut off from NATS (`lab.sh cut eu nats`: its tunnel, clients and
//!   backends stay reachable, so what the other POPs send can be counted
//!   at the backend): once eu has let every loan run out, us and sa, with
//!   the default `--lease-fallback share`, each hold at most their share
//!   (30 / 3 = 10) or what they held by lease before, and admit by
//!   fallback; healed, their lease requests are answered again.
//! - us and sa restarted with `--lease-fallback strict`: cut off again,
//!   neither sends eu-3 one more client; healed, leases resume and eu-3
//!   never holds more than 30 while every POP sends it more clients.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

/// eu-3's hard (and soft) limit.
const LIMIT: u32 = 30;
/// The fallback share of each POP with `share`: the limit over 3 POPs.
const SHARE: u32 = LIMIT / 3;
const BACKEND: &str = "eu-3";
const PORT: u16 = 9003;

/// What the counting backend saw.
#[derive(Debug, Default, Clone)]
struct Tally {
    /// Connections open now, by the address they came from (the overlay
    /// address of the POP that dialed them).
    now: BTreeMap<String, u32>,
    /// The most open at once since the backend started.
    max: u32,
    /// The most open at once since the last mark.
    max_since: u32,
    /// The most open at once from each POP since the last mark.
    peer_max_since: BTreeMap<String, u32>,
    /// Connections opened since the last mark, by POP.
    opened_since: BTreeMap<String, u32>,
    /// Every moment a connection took the count over the limit, since the
    /// last mark.
    over: Vec<String>,
}

impl Tally {
    fn total(&self) -> u32 {
        self.now.values().sum()
    }

    fn from(&self, pop: &str) -> u32 {
        self.now.get(&overlay(pop)).copied().unwrap_or(0)
    }
}

/// A backend in a namespace that counts the connections it holds.
struct Counting {
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Counting {
    /// Listens on `addr` inside namespace `netns`.
    fn start(netns: &str, addr: SocketAddr) -> Counting {
        let listener = spawn_in(Some(netns), move || TcpListener::bind(addr))
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("binding {addr} in {netns}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let tally = Arc::new(Mutex::new(Tally::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let (t, s) = (Arc::clone(&tally), Arc::clone(&stop));
        let accept = std::thread::spawn(move || {
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, peer)) => {
                        let (t, s) = (Arc::clone(&t), Arc::clone(&s));
                        conns.push(std::thread::spawn(move || {
                            serve_counted(conn, peer.ip(), &t, &s, started)
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
                conns.retain(|c| !c.is_finished());
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Counting {
            tally,
            stop,
            accept: Some(accept),
        }
    }

    fn tally(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    /// Starts the "since" figures afresh.
    fn mark(&self) {
        let mut t = self.tally.lock().unwrap();
        t.max_since = t.total();
        t.peer_max_since = t.now.clone();
        t.opened_since.clear();
        t.over.clear();
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// One connection: counted once geoedge's PROXY header arrives, greeted
/// like the lab's other backends, echoed, uncounted at its end.
fn serve_counted(
    mut s: TcpStream,
    peer: IpAddr,
    tally: &Mutex<Tally>,
    stop: &AtomicBool,
    started: Instant,
) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 1024];
    let mut header = Vec::new();
    let rest = loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                header.extend_from_slice(&buf[..n]);
                if let Some(i) = header.iter().position(|b| *b == b'\n') {
                    break header.split_off(i + 1);
                }
                if header.len() > 256 {
                    return;
                }
            }
            Err(e) if timed_out(&e) => {}
            Err(_) => return,
        }
    };
    let line = String::from_utf8_lossy(&header).into_owned();
    let client = line
        .split_whitespace()
        .nth(2)
        .unwrap_or("unknown")
        .to_owned();
    let peer = peer.to_string();
    {
        let mut t = tally.lock().unwrap();
        *t.now.entry(peer.clone()).or_default() += 1;
        let (total, mine) = (t.total(), t.now[&peer]);
        t.max = t.max.max(total);
        t.max_since = t.max_since.max(total);
        let m = t.peer_max_since.entry(peer.clone()).or_default();
        *m = (*m).max(mine);
        *t.opened_since.entry(peer.clone()).or_default() += 1;
        if total > LIMIT {
            let what = format!(
                "{:?} after the backend started: {total} open {:?}, the last from {peer} (client {client})",
                started.elapsed(),
                t.now
            );
            t.over.push(what);
        }
    }
    let greeting = format!("backend={BACKEND} region=eu client={client} peer={peer}\n");
    if s.write_all(greeting.as_bytes()).is_ok() && (rest.is_empty() || s.write_all(&rest).is_ok()) {
        while !stop.load(Ordering::SeqCst) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if timed_out(&e) => {}
                Err(_) => break,
            }
        }
    }
    let mut t = tally.lock().unwrap();
    if let Some(n) = t.now.get_mut(&peer) {
        *n -= 1;
    }
}

/// Sends each POP its clients, the POPs at once, each POP's one after the
/// other (a few ms apart): every client is held open.
fn send(lab: &Lab, clients: Vec<(&'static str, Vec<IpAddr>)>) -> Vec<Held> {
    let wan = format!("{}-wan", lab.name);
    let threads: Vec<_> = clients
        .into_iter()
        .map(|(pop, ips)| {
            spawn_in(Some(&wan), move || {
                ips.into_iter()
                    .map(|ip| {
                        let h = open(pop, ip);
                        std::thread::sleep(Duration::from_millis(20));
                        h
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect()
}

/// POP `pop`'s metrics (its listener is on its underlay address).
fn metrics(lab: &Lab, pop: &str) -> String {
    let addr: SocketAddr = format!("{}:9090", underlay(pop)).parse().unwrap();
    spawn_in(Some(&format!("{}-wan", lab.name)), move || scrape(addr))
        .join()
        .unwrap()
}

/// One series of a scrape (0 when absent).
fn value(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or(0.0)
}

/// The lease figures of POP `pop`: requests by result, admissions by
/// result, slots held, slots lent.
fn leases(lab: &Lab, pop: &str) -> BTreeMap<String, f64> {
    let text = metrics(lab, pop);
    let mut out = BTreeMap::new();
    for r in ["granted", "partial", "refused", "unanswered"] {
        let s = format!("edge_fleet_lease_requests_total{{result=\"{r}\"}}");
        out.insert(format!("requests_{r}"), value(&text, &s));
    }
    for r in ["lease", "fallback", "refused"] {
        let s = format!("edge_fleet_lease_admissions_total{{result=\"{r}\"}}");
        out.insert(format!("admitted_{r}"), value(&text, &s));
    }
    out.insert("slots".into(), value(&text, "edge_fleet_lease_slots"));
    out.insert("lent".into(), value(&text, "edge_fleet_lent_slots"));
    let s = format!("edge_backend_connections_current{{backend=\"{BACKEND}\",region=\"eu\"}}");
    out.insert("at_eu3".into(), value(&text, &s));
    out
}

/// Lease requests of `pop` that were answered (granted, partial or refused).
fn answered(l: &BTreeMap<String, f64>) -> f64 {
    l["requests_granted"] + l["requests_partial"] + l["requests_refused"]
}

/// Fresh GB clients (a client that was served keeps its binding).
fn fresh(gb: &mut Clients, n: usize) -> Vec<IpAddr> {
    (0..n).map(|_| gb.next()).collect()
}

/// Checks that every held client not at eu-3 went to its next choice, a
/// backend of us or sa, and that the backend's count by POP is the
/// greetings'.
fn check_served(held: &[Held], backend: &Counting, why: &str) {
    for h in held {
        if h.greeting.backend != BACKEND {
            assert!(
                ["us", "sa"].contains(&h.greeting.region.as_str()),
                "{why}: a GB client at {} went to {:?}",
                h.pop,
                h.greeting
            );
        }
        assert_eq!(h.greeting.peer, overlay(h.pop), "{why}: {:?}", h.greeting);
    }
    let t = backend.tally();
    for pop in POPS {
        let greeted = held
            .iter()
            .filter(|h| h.pop == pop && h.greeting.backend == BACKEND)
            .count() as u32;
        assert_eq!(
            t.from(pop),
            greeted,
            "{why}: eu-3 holds {:?}, {greeted} clients of {pop} were greeted by it",
            t.now
        );
    }
}

/// How many of `held` are at eu-3, by POP.
fn at_backend(held: &[Held]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for h in held.iter().filter(|h| h.greeting.backend == BACKEND) {
        *m.entry(h.pop).or_default() += 1;
    }
    m
}

/// Waits until eu lends nothing: every lease of eu-3 has run out, at eu
/// and (counted from the request's send) earlier at the borrowers.
async fn until_loans_ran_out(lab: &Lab, why: &str) {
    until(
        || format!("{why}: eu still lends: {:?}", leases(lab, "eu")),
        Duration::from_secs(90),
        || leases(lab, "eu")["lent"] == 0.0,
    )
    .await;
}

/// Waits until `pop` has had a lease request answered since `before`.
async fn until_answered(lab: &Lab, pop: &str, before: f64, why: &str) {
    until(
        || {
            format!(
                "{why}: no lease request of {pop} answered: {:?}",
                leases(lab, pop)
            )
        },
        Duration::from_secs(90),
        || answered(&leases(lab, pop)) > before,
    )
    .await;
}

/// Waits until eu-3 holds exactly what `held` says.
async fn until_counted(backend: &Counting, held: &[Held], why: &str) {
    let want = at_backend(held);
    until(
        || {
            format!(
                "{why}: eu-3 holds {:?}, the clients {want:?}",
                backend.tally().now
            )
        },
        Duration::from_secs(30),
        || {
            let t = backend.tally();
            POPS.iter()
                .all(|p| t.from(p) as usize == want.get(p).copied().unwrap_or(0))
        },
    )
    .await;
}

/// Waits until eu-3's health lets it take clients at `pop`.
async fn until_up(lab: &Lab, pop: &str) {
    let series = format!("edge_backend_up{{backend=\"{BACKEND}\"}}");
    until(
        || format!("eu-3 is not up at {pop}: {}", metrics(lab, pop)),
        Duration::from_secs(60),
        || value(&metrics(lab, pop), &series) == 1.0,
    )
    .await;
}

#[tokio::test]
async fn leases_hold_a_backend_to_its_hard_limit_across_three_pops() {
    if skipped(skip_reason()) {
        return;
    }
    let _heavy = HEAVY.lock().await;
    let started = Instant::now();
    let lab = Lab::new("l");
    let mut phases = Vec::new();
    let t = Instant::now();
    lab.ok(&["up"]);
    phases.push(("up", t.elapsed()));
    let t = Instant::now();

    // eu-3: the counting backend on eu's overlay address, hard limit 30;
    // eu-1 and eu-2 drained, so eu-3 is every POP's best for GB clients.
    let backend = Counting::start(
        &format!("{}-eu", lab.name),
        format!("{}:{PORT}", overlay("eu")).parse().unwrap(),
    );
    let master = lab.master();
    sqlite3(
        &master,
        &format!(
            "INSERT INTO backends (id, region, country, wg_ip, port, soft_limit, hard_limit) \
             VALUES ('{BACKEND}', 'eu', 'DE', '{}', {PORT}, {LIMIT}, {LIMIT}); \
             UPDATE backends SET healthy = 0 WHERE id IN ('eu-1', 'eu-2');",
            overlay("eu")
        ),
    );
    let rev = published(&lab.ok(&["push", "-m", "eu-3, hard limit 30"]));
    until_applied(&lab, &POPS, rev, "eu-3 published").await;
    for pop in POPS {
        until_up(&lab, pop).await;
    }
    phases.push(("eu-3 published and up everywhere", t.elapsed()));
    let t = Instant::now();

    // 20 held GB clients at every POP. us and sa first send one each and
    // wait for their lease (the first is admitted by the fallback share
    // while eu-3 is empty), then every POP sends the rest at once.
    let mut gb = Clients(0);
    let mut held = send(
        &lab,
        vec![("us", fresh(&mut gb, 1)), ("sa", fresh(&mut gb, 1))],
    );
    for pop in ["us", "sa"] {
        until(
            || format!("no lease at {pop}: {:?}", leases(&lab, pop)),
            Duration::from_secs(60),
            || leases(&lab, pop)["slots"] > 0.0,
        )
        .await;
    }
    held.extend(send(
        &lab,
        vec![
            ("eu", fresh(&mut gb, 20)),
            ("us", fresh(&mut gb, 19)),
            ("sa", fresh(&mut gb, 19)),
        ],
    ));
    assert_eq!(held.len(), 60);
    until_counted(&backend, &held, "the burst").await;
    let burst = backend.tally();
    let burst_leases: Vec<_> = POPS.iter().map(|p| (*p, leases(&lab, p))).collect();
    eprintln!(
        "burst: eu-3 holds {:?} (most at once {}), by greeting {:?}; leases {burst_leases:?}",
        burst.now,
        burst.max,
        at_backend(&held)
    );
    assert!(
        burst.max <= LIMIT,
        "eu-3 held {} at once during the burst: {:#?}",
        burst.max,
        burst.over
    );
    check_served(&held, &backend, "the burst");
    assert!(
        burst.total() > 0 && burst.from("us") + burst.from("sa") > 0,
        "no POP reached eu-3 by lease: {:?}",
        burst.now
    );
    phases.push(("60 held clients", t.elapsed()));
    let t = Instant::now();

    // eu cut off from NATS, every POP with the default `share`: once eu's
    // loans ran out, us and sa admit by fallback, each up to its share.
    let before = (leases(&lab, "us"), leases(&lab, "sa"));
    lab.ok(&["cut", "eu", "nats"]);
    until_loans_ran_out(&lab, "eu cut off, share").await;
    let held_before = backend.tally();
    backend.mark();
    let cut_clients = send(
        &lab,
        vec![("us", fresh(&mut gb, 15)), ("sa", fresh(&mut gb, 15))],
    );
    let cut = backend.tally();
    let during = (leases(&lab, "us"), leases(&lab, "sa"));
    eprintln!(
        "eu cut off from NATS, share: eu-3 held {:?} before, {:?} after 15 more clients at us and sa \
         (most at once since the cut {}, per POP {:?}; over the limit, as share allows: {:#?}); \
         us {:?}; sa {:?}",
        held_before.now,
        cut.now,
        cut.max_since,
        cut.peer_max_since,
        cut.over,
        during.0,
        during.1
    );
    for (pop, l, b) in [("us", &during.0, &before.0), ("sa", &during.1, &before.1)] {
        let had = held_before.from(pop);
        let bound = had.max(SHARE);
        let most = cut.peer_max_since.get(&overlay(pop)).copied().unwrap_or(0);
        assert!(
            most <= bound,
            "{pop} held {most} at eu-3 while cut off from its owner (share {SHARE}, {had} by lease before)"
        );
        if had < SHARE {
            assert!(
                l["admitted_fallback"] > b["admitted_fallback"],
                "{pop} admitted nobody by fallback with {had} of {SHARE} held: {l:?}"
            );
        }
    }
    for (pop, b) in [("us", &before.0), ("sa", &before.1)] {
        until(
            || {
                format!(
                    "{pop} counted no unanswered lease request: {:?}",
                    leases(&lab, pop)
                )
            },
            Duration::from_secs(60),
            || leases(&lab, pop)["requests_unanswered"] > b["requests_unanswered"],
        )
        .await;
    }
    for h in &cut_clients {
        if h.greeting.backend != BACKEND {
            assert!(
                ["us", "sa"].contains(&h.greeting.region.as_str()),
                "{:?}",
                h.greeting
            );
        }
    }
    // Healed: leases resume; the clients admitted by fallback leave.
    let answered_before = (answered(&during.0), answered(&during.1));
    lab.ok(&["heal", "eu"]);
    until_answered(&lab, "us", answered_before.0, "eu healed, share").await;
    until_answered(&lab, "sa", answered_before.1, "eu healed, share").await;
    drop(cut_clients);
    until_counted(&backend, &held, "the fallback's clients gone").await;
    assert!(backend.tally().total() <= LIMIT, "{:?}", backend.tally());
    phases.push(("eu cut off from NATS and healed, share", t.elapsed()));
    let t = Instant::now();

    // us and sa restarted with `strict` (their clients go with them).
    held.retain(|h| h.pop == "eu");
    until_counted(&backend, &held, "us and sa's clients gone").await;
    for pop in ["us", "sa"] {
        lab.ok(&["edge", "stop", pop]);
        lab.ok(&["edge", "start", pop, "--lease-fallback", "strict"]);
    }
    for pop in ["us", "sa"] {
        until_up(&lab, pop).await;
    }
    // Restarted with a revision installed, each owner gives its own
    // backends only the fallback (with strict: none) for one lease term
    // (3 s from its start), until what it lent before has run out
    // (docs/routing.md): its clients would find no backend yet.
    tokio::time::sleep(Duration::from_secs(4)).await;
    backend.mark();
    held.extend(send(
        &lab,
        vec![("us", fresh(&mut gb, 10)), ("sa", fresh(&mut gb, 10))],
    ));
    until_counted(&backend, &held, "strict, before the cut").await;
    check_served(&held, &backend, "strict, before the cut");
    let strict = backend.tally();
    assert!(
        strict.max_since <= LIMIT,
        "eu-3 held {} at once: {:#?}",
        strict.max_since,
        strict.over
    );

    // Cut off again: once the loans ran out, neither us nor sa sends eu-3
    // one more client.
    let before = (leases(&lab, "us"), leases(&lab, "sa"));
    lab.ok(&["cut", "eu", "nats"]);
    until_loans_ran_out(&lab, "eu cut off, strict").await;
    let held_before = backend.tally();
    backend.mark();
    let cut_clients = send(
        &lab,
        vec![("us", fresh(&mut gb, 10)), ("sa", fresh(&mut gb, 10))],
    );
    let cut = backend.tally();
    let during = (leases(&lab, "us"), leases(&lab, "sa"));
    eprintln!(
        "eu cut off from NATS, strict: eu-3 held {:?} before, {:?} after 10 more clients at us and sa \
         (opened since the cut {:?}); us {:?}; sa {:?}",
        held_before.now, cut.now, cut.opened_since, during.0, during.1
    );
    for (pop, l, b) in [("us", &during.0, &before.0), ("sa", &during.1, &before.1)] {
        let opened = cut.opened_since.get(&overlay(pop)).copied().unwrap_or(0);
        assert_eq!(
            opened, 0,
            "{pop}, strict, sent eu-3 {opened} clients while cut off from its owner"
        );
        assert_eq!(
            l["admitted_fallback"], b["admitted_fallback"],
            "{pop} admitted by fallback with strict: {l:?}"
        );
        assert!(
            l["admitted_refused"] > b["admitted_refused"],
            "{pop} refused nobody: {l:?}"
        );
    }
    for h in &cut_clients {
        assert_ne!(h.greeting.backend, BACKEND);
        assert!(["us", "sa"].contains(&h.greeting.region.as_str()));
    }
    held.extend(cut_clients);

    // Healed: leases resume, and eu-3 never goes over its limit while
    // every POP sends it more clients.
    let answered_before = (answered(&during.0), answered(&during.1));
    lab.ok(&["heal", "eu"]);
    until_answered(&lab, "us", answered_before.0, "eu healed, strict").await;
    until_answered(&lab, "sa", answered_before.1, "eu healed, strict").await;
    backend.mark();
    held.extend(send(
        &lab,
        vec![
            ("eu", fresh(&mut gb, 5)),
            ("us", fresh(&mut gb, 5)),
            ("sa", fresh(&mut gb, 5)),
        ],
    ));
    until_counted(&backend, &held, "after the heal").await;
    check_served(&held, &backend, "after the heal");
    let end = backend.tally();
    let end_leases: Vec<_> = POPS.iter().map(|p| (*p, leases(&lab, p))).collect();
    eprintln!(
        "after the heal: eu-3 holds {:?} (most at once since the heal {}); leases {end_leases:?}",
        end.now, end.max_since
    );
    assert!(
        end.max_since <= LIMIT && end.total() <= LIMIT,
        "eu-3 held {} at once after the heal: {:#?}",
        end.max_since,
        end.over
    );
    phases.push(("strict: cut off from NATS and healed", t.elapsed()));

    drop(held);
    drop(backend);
    lab.ok(&["down"]);
    let left = lab.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
    eprintln!(
        "leases across three POPs in {:?}: {phases:?}; eu-3 held at most {} at once outside the share phase",
        started.elapsed(),
        strict.max_since.max(burst.max).max(end.max_since)
    );
}
