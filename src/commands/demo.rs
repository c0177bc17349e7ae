//! `geoedge demo`: the whole edge on an embedded default, offline and
//! without root. A routing.db is generated in a temporary directory, three
//! in-process backends stand for three regions, the embedded sample mmdb
//! locates clients, and the proxy listens on 127.0.0.1, trusting PROXY
//! headers from loopback so `geoedge probe ADDR --as IP` can claim any
//! client address. Metrics and health checks are served on
//! `--metrics-listen`, as by `geoedge run`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use geoedge_routing::loader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::control::config::Settings;
use crate::control::metrics::Metrics;
use crate::control::readiness::Health;
use crate::data::proxy_protocol::{self, Header, Parse};

/// The demo backends: id, region, country, city, coordinates.
const BACKENDS: &[(&str, &str, &str, &str, f64, f64)] = &[
    ("eu-demo", "eu", "GB", "London", 51.5074, -0.1278),
    ("us-demo", "us", "US", "Ashburn", 39.0438, -77.4874),
    ("sa-demo", "sa", "BR", "São Paulo", -23.5505, -46.6333),
];

/// A backend that greets each connection with its id and the client it was
/// told about (by the PROXY v1 header geoedge sends), then echoes.
async fn backend(listener: TcpListener, id: &'static str, region: &'static str) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut filled = 0;
            let mut client = String::from("unknown");
            let mut rest = Vec::new();
            // geoedge sends a PROXY v1 header first.
            while filled < buf.len() {
                match stream.read(&mut buf[filled..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => filled += n,
                }
                match proxy_protocol::parse(&buf[..filled]) {
                    Ok(Parse::Complete { header, consumed }) => {
                        if let Header::Proxied { source, .. } = header {
                            client = source.ip().to_string();
                        }
                        rest = buf[consumed..filled].to_vec();
                        break;
                    }
                    Ok(Parse::Incomplete) => continue,
                    Err(_) => return,
                }
            }
            let greeting = format!("backend={id} region={region} client={client}\n");
            if stream.write_all(greeting.as_bytes()).await.is_err()
                || stream.write_all(&rest).await.is_err()
            {
                return;
            }
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// The `demo` command; `takeover`: start beside another geoedge on the
/// same address.
pub fn run(settings: &Settings, takeover: bool) -> anyhow::Result<ExitCode> {
    let mut addrs: Vec<SocketAddr> = settings.listen.iter().map(|l| l.addr).collect();
    addrs.extend(settings.metrics_listen);
    let others = crate::commands::run::others(&addrs, takeover)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let dir = tempfile::Builder::new().prefix("geoedge-demo-").tempdir()?;
    let db = dir.path().join("routing.db");
    let mut addrs: Vec<SocketAddr> = Vec::new();
    runtime.block_on(async {
        for &(id, region, ..) in BACKENDS {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(l.local_addr()?);
            tokio::spawn(backend(l, id, region));
        }
        anyhow::Ok(())
    })?;
    write_routing_db(&db, &addrs)?;
    let mut settings = settings.clone();
    settings.routing_db = Some(db.clone());
    let edge = crate::commands::run::start(&settings, &db)?;
    crate::commands::run::take_bindings(&edge, &others);
    let health = Arc::new(Health::default());
    let metrics = Metrics::new(Arc::clone(&health))?;
    crate::commands::run::register(&metrics, &edge, &settings, &db)?;
    runtime.block_on(async {
        let _endpoints = match settings.metrics_listen {
            Some(addr) => Some(
                metrics
                    .serve(addr)
                    .await
                    .context("serving metrics (--metrics-listen ADDR, or off)")?,
            ),
            None => None,
        };
        let listeners = crate::commands::run::bind(&settings)?;
        let listen = listeners
            .addrs()
            .first()
            .map(|(_, a)| *a)
            .context("the demo has no listener")?;
        print_tour(&settings, listen, &db, &addrs);
        let signals = crate::control::lifecycle::Signals::install()?;
        crate::commands::run::serve(&edge, listeners, &settings, signals, None, &health).await
    })?;
    println!("geoedge demo: stopped");
    Ok(ExitCode::SUCCESS)
}

fn write_routing_db(db: &std::path::Path, addrs: &[SocketAddr]) -> anyhow::Result<()> {
    loader::init(db, true)?;
    let conn = rusqlite::Connection::open(db)?;
    conn.execute("DELETE FROM backends", [])?;
    for (&(id, region, country, _, lat, lon), addr) in BACKENDS.iter().zip(addrs) {
        conn.execute(
            "INSERT INTO backends (id, region, country, latitude, longitude, wg_ip, port, soft_limit, hard_limit)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 100, 200)",
            rusqlite::params![id, region, country, lat, lon, addr.ip().to_string(), addr.port()],
        )?;
    }
    Ok(())
}

fn print_tour(settings: &Settings, listen: SocketAddr, db: &std::path::Path, addrs: &[SocketAddr]) {
    let exe = std::env::args().next().unwrap_or_else(|| "geoedge".into());
    println!();
    println!(
        "geoedge demo: an edge POP in region {} on {listen}",
        settings.region
    );
    println!("  routing.db: {}", db.display());
    for (&(id, region, country, city, ..), addr) in BACKENDS.iter().zip(addrs) {
        println!("  backend {id:8} region {region} ({city}, {country}) on {addr}");
    }
    println!();
    println!("Watch geo routing (each probe claims a client address in a PROXY header):");
    println!("  {exe} probe {listen} --as 81.2.69.1      # London     -> eu-demo");
    println!("  {exe} probe {listen} --as 207.237.0.1    # New York   -> us-demo");
    println!("  {exe} probe {listen} --as 200.160.0.1    # São Paulo  -> sa-demo");
    println!("  {exe} probe {listen} --as 202.248.0.1    # Tokyo: nearest by distance");
    println!("Watch stickiness: drain a backend while a client is bound to it:");
    println!(
        "  sqlite3 {} \"UPDATE backends SET healthy = 0 WHERE id = 'eu-demo'\"",
        db.display()
    );
    println!("  {exe} probe {listen} --as 81.2.69.1      # now us-demo, the next nearest");
    println!(
        "  sqlite3 {} \"UPDATE backends SET healthy = 1 WHERE id = 'eu-demo'\"",
        db.display()
    );
    println!(
        "  {exe} probe {listen} --as 81.2.69.1      # still us-demo: the client is bound to it"
    );
    if let Some(m) = settings.metrics_listen {
        println!("Metrics and health checks (--metrics-listen):");
        println!("  curl -s http://{m}/metrics | grep ^edge_backend");
        println!("  curl -s http://{m}/readyz");
    }
    println!("Explain a decision:");
    println!(
        "  {exe} route --routing-db {} --region {} 81.2.69.1",
        db.display(),
        settings.region
    );
    println!("Stop with Ctrl-C.");
}

/// `geoedge probe ADDR --as IP`: a client that claims `claim` in a PROXY v1
/// header and prints the first line the backend answers with.
pub fn probe(
    addr: SocketAddr,
    claim: std::net::IpAddr,
    message: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let timeout = std::time::Duration::from_secs(5);
        let mut stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("connecting to {addr}"))?;
        let mut header = Vec::new();
        let source = SocketAddr::new(claim, 40000);
        let destination = if claim.is_ipv4() == addr.is_ipv4() {
            addr
        } else {
            SocketAddr::new(
                if claim.is_ipv4() {
                    [127, 0, 0, 1].into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                },
                addr.port(),
            )
        };
        proxy_protocol::encode_v1(source, destination, &mut header);
        if let Some(m) = message {
            header.extend_from_slice(m.as_bytes());
        }
        stream.write_all(&header).await?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.len() < 1024 {
            match tokio::time::timeout(timeout, stream.read(&mut byte)).await {
                Ok(Ok(1)) if byte[0] == b'\n' => break,
                Ok(Ok(1)) => line.push(byte[0]),
                Ok(Ok(_)) | Ok(Err(_)) => break,
                Err(_) => anyhow::bail!("no answer within {timeout:?}"),
            }
        }
        if line.is_empty() {
            // The edge closes the connection the same way for both; its
            // log and edge_connections_total{result} tell them apart.
            anyhow::bail!(
                "the connection closed without an answer: the edge has no backend for {claim}, or every connect to one failed (its log and edge_connections_total say which)"
            );
        }
        println!("{}", String::from_utf8_lossy(&line));
        Ok(ExitCode::SUCCESS)
    })
}
