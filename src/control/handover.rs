//! Sticky bindings handed from a running geoedge to the one taking over
//! from it (`--takeover`), so that a restart does not move clients.
//!
//! Every `run` and `demo` serves its binding table on the abstract unix
//! socket `geoedge-handover-PID` (abstract: no file, no permissions to
//! set; scoped to the network namespace, which the two processes share as
//! they share the listeners' port). The new process, once it has loaded
//! its routing table and before it binds its listeners, connects to the
//! pid [`crate::control::takeover::check`] found and reads the dump:
//!
//! ```text
//! geoedge-bindings 1
//! b APP CLIENT BACKEND IDLE_SECS p|-     (tab-separated, one a binding)
//! end COUNT
//! ```
//!
//! The old side copies the table out one shard at a time (never holding a
//! shard's lock while it writes) and answers only a peer of its own user
//! or root; the new side accepts only the pid it meant to reach (both by
//! `SO_PEERCRED`), imports each binding as it arrives whose backend its
//! own table has (for the same app), and gives up after
//! [`HANDOVER_TIMEOUT`], keeping what it imported by then. The format is
//! versioned by its first line; an unknown version imports nothing.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use geoedge_routing::{AppId, BackendId, ExportedBinding, Router};
use tokio::io::AsyncWriteExt;

/// The first line of a dump.
pub const VERSION_LINE: &str = "geoedge-bindings 1";

/// How long a start waits for the old process's bindings at most.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest line read (an app and a backend id of routing.db, an
/// address and two numbers).
const MAX_LINE: u64 = 4096;

/// The abstract socket name of the geoedge with this pid.
pub fn socket_name(pid: u32) -> String {
    format!("geoedge-handover-{pid}")
}

fn socket_addr(pid: u32) -> std::io::Result<UnixAddr> {
    UnixAddr::from_abstract_name(socket_name(pid).as_bytes())
}

/// The pid and uid of a unix socket's peer (`SO_PEERCRED`).
fn peer(socket: &impl AsRawFd) -> Option<(u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for the size given.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some((cred.pid as u32, cred.uid))
}

/// One binding as a dump line (`None`: a name that cannot be written in
/// one, which routing.db's ids never are).
pub fn line(b: &ExportedBinding) -> Option<String> {
    let (app, backend) = (b.app.as_str(), b.backend.as_str());
    let plain = |s: &str| !s.is_empty() && !s.contains(['\t', '\n', '\r']);
    (plain(app) && plain(backend)).then(|| {
        format!(
            "b\t{app}\t{}\t{backend}\t{}\t{}\n",
            b.client,
            b.idle.as_secs(),
            if b.protected { "p" } else { "-" }
        )
    })
}

/// A dump line read back (`None`: not a binding line).
pub fn parse(line: &str) -> Option<ExportedBinding> {
    let mut f = line.trim_end_matches(['\n', '\r']).split('\t');
    if f.next()? != "b" {
        return None;
    }
    let app = AppId::new(f.next()?);
    let client = f.next()?.parse().ok()?;
    let backend = BackendId::new(f.next()?);
    let idle = Duration::from_secs(f.next()?.parse().ok()?);
    let protected = match f.next()? {
        "p" => true,
        "-" => false,
        _ => return None,
    };
    f.next().is_none().then_some(ExportedBinding {
        app,
        client,
        backend,
        idle,
        protected,
    })
}

/// Serves this process's binding table to a geoedge taking over, until
/// the task is aborted. Must run inside the runtime; `None` (logged) when
/// the socket cannot be made.
pub fn serve(router: Arc<Router>) -> Option<tokio::task::JoinHandle<()>> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() } as u32;
    let listener = socket_addr(me)
        .and_then(|a| UnixListener::bind_addr(&a))
        .and_then(|l| {
            l.set_nonblocking(true)?;
            tokio::net::UnixListener::from_std(l)
        });
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("the bindings handover socket @{}: {e}; a geoedge taking over from this one starts without its bindings", socket_name(me));
            return None;
        }
    };
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    Some(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            match peer(&stream) {
                Some((pid, peer_uid)) if peer_uid == uid || peer_uid == 0 => {
                    let router = Arc::clone(&router);
                    tokio::spawn(async move {
                        let started = Instant::now();
                        match send(stream, &router).await {
                            Ok(n) => {
                                tracing::info!(pid, bindings = n, took = ?started.elapsed(), "handed the bindings over to the geoedge taking over")
                            }
                            Err(e) => tracing::warn!(pid, "handing the bindings over: {e}"),
                        }
                    });
                }
                other => {
                    tracing::warn!(peer = ?other, "refused a bindings handover to a process of another user")
                }
            }
        }
    }))
}

/// Writes the dump, one shard's bindings at a time.
async fn send(stream: tokio::net::UnixStream, router: &Router) -> std::io::Result<usize> {
    let mut out = tokio::io::BufWriter::with_capacity(1 << 16, stream);
    out.write_all(format!("{VERSION_LINE}\n").as_bytes())
        .await?;
    let mut count = 0;
    for chunk in router.bindings().export(Instant::now()) {
        let mut text = String::with_capacity(chunk.len() * 48);
        for b in &chunk {
            if let Some(l) = line(b) {
                text.push_str(&l);
                count += 1;
            }
        }
        out.write_all(text.as_bytes()).await?;
    }
    out.write_all(format!("end\t{count}\n").as_bytes()).await?;
    out.flush().await?;
    Ok(count)
}

/// What a handover brought.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Bindings read.
    pub read: usize,
    /// Bindings imported.
    pub imported: usize,
    /// Bindings to a backend this table does not have (for that app).
    pub unknown_backend: usize,
    /// Whether the dump arrived whole.
    pub complete: bool,
}

/// Reads a dump from `input`, importing each binding whose backend `router`'s
/// table has, until its end or `deadline`.
pub fn import(
    input: impl Read,
    router: &Router,
    deadline: Instant,
    set_timeout: impl FnMut(Duration) -> std::io::Result<()>,
) -> anyhow::Result<Received> {
    import_aged(input, router, deadline, Duration::ZERO, set_timeout)
}

/// [`import`], for a dump written `age` ago: each binding has been idle
/// that much longer (one idle past the table's TTL is dropped).
pub fn import_aged(
    input: impl Read,
    router: &Router,
    deadline: Instant,
    age: Duration,
    mut set_timeout: impl FnMut(Duration) -> std::io::Result<()>,
) -> anyhow::Result<Received> {
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let mut buf = Vec::new();
    let mut next = |reader: &mut BufReader<_>, buf: &mut Vec<u8>| -> anyhow::Result<bool> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            anyhow::bail!("timed out after {HANDOVER_TIMEOUT:?}");
        }
        if reader.buffer().is_empty() {
            set_timeout(left)?;
        }
        buf.clear();
        let n = reader.by_ref().take(MAX_LINE).read_until(b'\n', buf)?;
        Ok(n > 0 && buf.last() == Some(&b'\n'))
    };
    if !next(&mut reader, &mut buf)? || buf != format!("{VERSION_LINE}\n").as_bytes() {
        anyhow::bail!(
            "the other geoedge speaks another handover format ({:?})",
            String::from_utf8_lossy(&buf).trim_end()
        );
    }
    let snapshot = router.table().snapshot();
    let bindings = router.bindings();
    let mut got = Received::default();
    while next(&mut reader, &mut buf)? {
        let Ok(text) = std::str::from_utf8(&buf) else {
            continue;
        };
        if let Some(count) = text.strip_prefix("end\t") {
            got.complete = count.trim_end().parse() == Ok(got.read);
            break;
        }
        let Some(mut b) = parse(text) else {
            continue;
        };
        b.idle += age;
        got.read += 1;
        if snapshot
            .backend(b.backend.as_str())
            .is_none_or(|be| be.app != b.app)
        {
            got.unknown_backend += 1;
        } else if bindings.import(&b, Instant::now()) {
            got.imported += 1;
        }
    }
    Ok(got)
}

/// Reads the bindings of the geoedge `pid` into `router`'s table, until
/// `deadline`.
pub fn fetch(pid: u32, router: &Router, deadline: Instant) -> anyhow::Result<Received> {
    let stream = socket_addr(pid)
        .and_then(|a| UnixStream::connect_addr(&a))
        .with_context(|| format!("connecting to @{}", socket_name(pid)))?;
    match peer(&stream) {
        Some((p, _)) if p == pid => {}
        other => anyhow::bail!(
            "@{} is held by another process ({other:?}), not geoedge {pid}",
            socket_name(pid)
        ),
    }
    let timeouts = stream.try_clone()?;
    import(&stream, router, deadline, |left| {
        timeouts.set_read_timeout(Some(left))
    })
}

/// Fetches the bindings of the geoedge `pid` into `router`'s table for
/// [`HANDOVER_TIMEOUT`] at most (logged; a failure only costs the
/// bindings).
pub fn receive(pid: u32, router: &Router) {
    let started = Instant::now();
    let result = fetch(pid, router, started + HANDOVER_TIMEOUT);
    match result {
        Ok(got) if got.complete => tracing::info!(
            pid,
            imported = got.imported,
            unknown_backend = got.unknown_backend,
            took = ?started.elapsed(),
            "took over the bindings of the geoedge this one takes over from"
        ),
        Ok(got) => tracing::warn!(
            pid,
            imported = got.imported,
            read = got.read,
            "the bindings handover ended early; starting with those imported"
        ),
        Err(e) => tracing::warn!(
            pid,
            imported = router.bindings().len(),
            "taking over the bindings: {e:#}; starting with those imported"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geoedge_routing::{BindingConfig, RegionId, RoutingTable};

    /// A router over the sample routing.db (app `default`, backends
    /// `eu-lhr-1`, `eu-fra-1`, ...).
    fn router(max_entries: usize) -> (Arc<Router>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("routing.db");
        geoedge_routing::loader::init(&db, true).unwrap();
        let table = Arc::new(RoutingTable::new());
        geoedge_routing::watcher::load_into(&table, &db).unwrap();
        let config = BindingConfig {
            max_entries,
            ..BindingConfig::default()
        };
        (
            Arc::new(Router::new(table, RegionId::new("eu"), config)),
            dir,
        )
    }

    fn never(_: Duration) -> std::io::Result<()> {
        Ok(())
    }

    #[test]
    fn a_dump_is_imported_for_the_backends_this_table_has() {
        let (r, _dir) = router(1000);
        let later = Instant::now() + HANDOVER_TIMEOUT;
        let dump = format!(
            "{VERSION_LINE}\n\
             b\tdefault\t198.51.100.1\teu-lhr-1\t3\tp\n\
             b\tdefault\t198.51.100.2\tgone-1\t3\t-\n\
             b\tother-app\t198.51.100.3\teu-lhr-1\t3\t-\n\
             garbage\n\
             b\tdefault\t2001:db8::\teu-fra-1\t0\t-\n\
             end\t4\n"
        );
        let got = import(dump.as_bytes(), &r, later, never).unwrap();
        assert_eq!(
            got,
            Received {
                read: 4,
                imported: 2,
                unknown_backend: 2,
                complete: true
            }
        );
        let b = r.bindings();
        let k = b.key(&AppId::new("default"), "198.51.100.1".parse().unwrap());
        assert_eq!(b.lookup(&k, Instant::now()).unwrap().as_str(), "eu-lhr-1");

        // Cut short: what came is kept, and said to be incomplete.
        let (r, _dir) = router(1000);
        let cut = &dump[..dump.find("garbage").unwrap()];
        let got = import(cut.as_bytes(), &r, later, never).unwrap();
        assert!(!got.complete);
        assert_eq!(got.imported, 1);
        // Another version: nothing.
        let other = dump.replace(VERSION_LINE, "geoedge-bindings 2");
        assert!(import(other.as_bytes(), &r, later, never).is_err());
        // Past the deadline: nothing more is read.
        let (r, _dir) = router(1000);
        assert!(import(dump.as_bytes(), &r, Instant::now(), never).is_err());
        assert_eq!(r.bindings().len(), 0);
    }

    /// The old side and the new in one process: 200,000 bindings streamed
    /// over the abstract socket, every one imported.
    #[test]
    fn a_large_table_streams_over_the_socket() {
        let (old, _d1) = router(300_000);
        let now = Instant::now();
        for i in 0..200_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            let k = old.bindings().key(&AppId::new("default"), ip.into());
            let be = if i % 2 == 0 { "eu-lhr-1" } else { "eu-fra-1" };
            old.bindings().bind(k, BackendId::new(be), now);
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = {
            let _in = rt.enter();
            serve(Arc::clone(&old)).unwrap()
        };
        let (new, _d2) = router(300_000);
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() } as u32;
        let started = Instant::now();
        let got = fetch(me, &new, Instant::now() + Duration::from_secs(60)).unwrap();
        eprintln!("200,000 bindings handed over in {:?}", started.elapsed());
        server.abort();
        assert!(got.complete);
        assert_eq!(got.imported, 200_000);
        assert_eq!(new.bindings().len(), 200_000);
    }

    #[test]
    fn a_binding_line_reads_back_as_written() {
        let b = ExportedBinding {
            app: AppId::new("api"),
            client: "2001:db8:1:2::".parse().unwrap(),
            backend: BackendId::new("eu-1"),
            idle: Duration::from_secs(42),
            protected: true,
        };
        let l = line(&b).unwrap();
        assert_eq!(l, "b\tapi\t2001:db8:1:2::\teu-1\t42\tp\n");
        assert_eq!(parse(&l), Some(b.clone()));
        for bad in [
            "b\tapi\tnot-an-ip\teu-1\t42\tp\n",
            "b\tapi\t10.0.0.1\teu-1\t42\tx\n",
            "b\tapi\t10.0.0.1\teu-1\t42\tp\textra\n",
            "b\tapi\t10.0.0.1\teu-1\n",
            "x\tapi\t10.0.0.1\teu-1\t42\tp\n",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let tab = ExportedBinding {
            backend: BackendId::new("a\tb"),
            ..b
        };
        assert_eq!(line(&tab), None);
    }
}
