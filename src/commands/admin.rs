//! `geoedge admin ADDR …` and `geoedge route --live ADDR IP`: a running
//! edge's admin endpoints ([`crate::control::admin`], docs/admin.md) on
//! its metrics listener, asked over HTTP/1.1 (hyper's client connection,
//! one request per connection) and printed as text or JSON.
//!
//! Exit status: 0 when the edge answered 2xx; 1 when it answered an
//! error (no binding, writes off, a bad query: its message on stderr); 2
//! when it could not be asked.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// How long one request may take, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What `geoedge admin` asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// `GET /bindings[?client=IP]`.
    Bindings(Option<IpAddr>),
    /// `DELETE /bindings[?client=IP]`.
    ClearBindings(Option<IpAddr>),
    /// `GET /backends`.
    Backends,
    /// `GET /revision`.
    Revision,
}

/// One request to the admin endpoints at `addr`: the status and the JSON
/// body.
pub fn request(
    addr: SocketAddr,
    method: Method,
    target: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let answer = runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, exchange(addr, method.clone(), target))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {TIMEOUT:?}"))?
    });
    let (status, body) = answer.with_context(|| format!("{method} http://{addr}{target}"))?;
    let value = serde_json::from_slice(&body).with_context(|| {
        format!(
            "{method} http://{addr}{target}: {status}, not JSON (is {addr} a geoedge metrics listener?)"
        )
    })?;
    Ok((status, value))
}

async fn exchange(
    addr: SocketAddr,
    method: Method,
    target: &str,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .context("connecting")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    let conn = tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(target)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let res = sender
        .send_request(req)
        .await
        .context("sending the request")?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes();
    conn.abort();
    Ok((status, body))
}

/// A query string for `client` and `app`.
fn query(client: Option<IpAddr>, app: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(ip) = client {
        parts.push(format!("client={}", encode(&ip.to_string())));
    }
    if let Some(app) = app {
        parts.push(format!("app={}", encode(app)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An error answer: its message on stderr, exit 1.
fn refused(status: StatusCode, body: &Value) -> ExitCode {
    let message = body["error"].as_str().unwrap_or("no message");
    eprintln!("geoedge: {status}: {message}");
    ExitCode::from(1)
}

fn pretty(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `geoedge route --live ADDR IP`: what `geoedge route IP` prints, from
/// the running edge (live counts, health, the client's binding).
pub fn explain(addr: SocketAddr, ip: IpAddr, app: Option<&str>) -> anyhow::Result<ExitCode> {
    let (status, body) = request(
        addr,
        Method::GET,
        &format!("/explain{}", query(Some(ip), app)),
    )?;
    if !status.is_success() {
        return Ok(refused(status, &body));
    }
    pretty(&body)?;
    Ok(ExitCode::SUCCESS)
}

/// `geoedge admin ADDR …`.
pub fn run(
    addr: SocketAddr,
    ask: &Ask,
    app: Option<&str>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let (method, target) = match ask {
        Ask::Bindings(client) => (Method::GET, format!("/bindings{}", query(*client, app))),
        Ask::ClearBindings(client) => (
            Method::DELETE,
            format!("/bindings{}", query(*client, client.and(app))),
        ),
        Ask::Backends => (Method::GET, "/backends".to_owned()),
        Ask::Revision => (Method::GET, "/revision".to_owned()),
    };
    let (status, body) = request(addr, method, &target)?;
    if !status.is_success() {
        return Ok(refused(status, &body));
    }
    if as_json {
        pretty(&body)?;
    } else {
        print!("{}", text(ask, &body));
    }
    Ok(ExitCode::SUCCESS)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn secs(ms: &Value) -> String {
    ms.as_u64()
        .map_or_else(|| "-".into(), |ms| format!("{}s", ms / 1000))
}

/// The text form of an answer.
pub fn text(ask: &Ask, v: &Value) -> String {
    match ask {
        Ask::Bindings(None) => format!(
            "bindings {} of {} (ttl {}, keyed by IPv4 /{} and IPv6 /{})\n",
            s(&v["count"]),
            s(&v["capacity"]),
            secs(&v["ttl_ms"]),
            s(&v["ipv4_prefix"]),
            s(&v["ipv6_prefix"]),
        ),
        Ask::Bindings(Some(_)) => format!(
            "{} app {}: {} (network {}, idle {}, expires in {}{})\n",
            s(&v["client"]),
            s(&v["app"]),
            s(&v["backend"]),
            s(&v["network"]),
            secs(&v["idle_ms"]),
            secs(&v["expires_in_ms"]),
            if v["protected"] == Value::Bool(true) {
                ", protected"
            } else {
                ""
            },
        ),
        Ask::ClearBindings(None) => format!("cleared {} bindings\n", s(&v["cleared"])),
        Ask::ClearBindings(Some(_)) => match &v["backend"] {
            Value::Null => format!("{} app {}: no binding\n", s(&v["client"]), s(&v["app"])),
            b => format!(
                "{} app {}: binding to {} cleared\n",
                s(&v["client"]),
                s(&v["app"]),
                s(b)
            ),
        },
        Ask::Backends => {
            let mut rows = vec![[
                "ID", "APP", "REGION", "ADDR", "STATE", "ACTIVE", "SOFT", "HARD", "WEIGHT",
                "ELIGIBLE",
            ]
            .map(String::from)
            .to_vec()];
            for b in v["backends"].as_array().into_iter().flatten() {
                rows.push(
                    [
                        "id",
                        "app",
                        "region",
                        "addr",
                        "state",
                        "active",
                        "soft_limit",
                        "hard_limit",
                        "weight",
                        "eligible",
                    ]
                    .iter()
                    .map(|k| {
                        if *k == "eligible" {
                            if b[k] == Value::Bool(true) {
                                "yes"
                            } else {
                                "no"
                            }
                            .to_owned()
                        } else {
                            s(&b[k])
                        }
                    })
                    .collect(),
                );
            }
            table(&rows)
        }
        Ask::Revision => {
            let mut out = format!(
                "{}: generation {}, schema version {}, backends {}\n",
                s(&v["routing_db"]),
                s(&v["routing_generation"]),
                s(&v["schema_version"]),
                s(&v["backends"]),
            );
            out.push_str(&format!(
                "last reload {} at unix {} ({} applied, {} rejected)\n",
                s(&v["last_reload"]),
                s(&v["last_reload_unix"]),
                s(&v["reloads_applied"]),
                s(&v["reloads_rejected"]),
            ));
            if let Some(e) = v["last_error"].as_str() {
                out.push_str(&format!("not in service: {e}\n"));
            }
            let f = &v["fleet"];
            if !f.is_null() {
                out.push_str(&format!(
                    "fleet pop {} revision {} installed, {} current{}\n",
                    s(&f["pop"]),
                    s(&f["installed_revision"]),
                    s(&f["current_revision"]),
                    if f["diverged"] == Value::Bool(true) {
                        ", routing.db diverged from it"
                    } else {
                        ""
                    },
                ));
            }
            out
        }
    }
}

/// Rows as columns padded to their widest cell.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded_so_the_endpoint_reads_them_back() {
        let q = query(Some("2001:db8::1".parse().unwrap()), Some("my app&x"));
        assert_eq!(q, "?client=2001%3Adb8%3A%3A1&app=my%20app%26x");
        let parsed = crate::control::admin::parse_query(q.strip_prefix('?')).unwrap();
        assert_eq!(parsed.client, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(parsed.app.as_deref(), Some("my app&x"));
        assert_eq!(query(None, None), "");
    }

    #[test]
    fn backends_print_as_aligned_columns() {
        let v = serde_json::json!({"backends": [
            {"id": "b1", "app": "default", "region": "eu", "addr": "10.0.0.1:80", "state": "up",
             "active": 1, "soft_limit": 100, "hard_limit": 200, "weight": 1, "eligible": true},
            {"id": "backend-2", "app": "default", "region": "us", "addr": "10.0.0.2:80",
             "state": "operator_down", "active": 0, "soft_limit": 100, "hard_limit": 200,
             "weight": 1, "eligible": false},
        ]});
        let t = text(&Ask::Backends, &v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID         APP"), "{t}");
        assert!(
            lines[2].contains("operator_down") && lines[2].ends_with("no"),
            "{t}"
        );
    }
}
