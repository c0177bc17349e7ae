//! WireGuard peers as routing.db describes them (`wg_peers`): validated with
//! the rest of the table, so a bad peer row keeps the whole last good table
//! in service, exactly like a bad backend row.

use std::fmt;
use std::net::SocketAddr;

use ipnet::IpNet;

use crate::model::RegionId;
use crate::peer_key::PeerKey;
use crate::raw::{Value, WgPeerRow};
use crate::row_error::RowError;

/// Where a peer is reached: an address, or a host name resolved when the
/// peer is configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An IP literal and port.
    Addr(SocketAddr),
    /// A DNS name and port.
    Host(String, u16),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Addr(a) => write!(f, "{a}"),
            Endpoint::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

impl Endpoint {
    /// Parses `ip:port`, `[v6]:port` or `name:port`.
    pub fn parse(s: &str) -> Option<Endpoint> {
        let s = s.trim();
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Some(Endpoint::Addr(a));
        }
        let (host, port) = s.rsplit_once(':')?;
        let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        (host.len() <= 253 && host.split('.').all(label_ok))
            .then(|| Endpoint::Host(host.to_ascii_lowercase(), port))
    }
}

/// One validated `wg_peers` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeer {
    /// The peer's public key.
    pub public_key: PeerKey,
    /// Where to send to it, if we initiate.
    pub endpoint: Option<Endpoint>,
    /// Overlay networks routed to it.
    pub allowed_ips: Vec<IpNet>,
    /// Keepalive interval in seconds (`None`: off).
    pub persistent_keepalive: Option<u16>,
    /// The region it serves, when set.
    pub region: Option<RegionId>,
}

/// Validates the `wg_peers` rows; `region_known` says whether a region id exists.
pub(crate) fn validate(
    rows: &[WgPeerRow],
    region_known: impl Fn(&str) -> bool,
    errors: &mut Vec<RowError>,
) -> Vec<WgPeer> {
    let mut peers: Vec<WgPeer> = Vec::with_capacity(rows.len());
    for r in rows {
        let row = match &r.public_key {
            Value::Text(k) if !k.trim().is_empty() => format!("{:?}", k.trim()),
            _ => format!("rowid {}", r.rowid),
        };
        let mut mine: Vec<RowError> = Vec::new();
        let mut err = |column: &'static str, message: String| {
            mine.push(RowError {
                table: "wg_peers",
                row: row.clone(),
                column: Some(column),
                message,
            })
        };
        let key = match &r.public_key {
            Value::Text(k) => match k.parse::<PeerKey>() {
                Ok(k) => Some(k),
                Err(e) => {
                    err("public_key", e.to_string());
                    None
                }
            },
            other => {
                err(
                    "public_key",
                    format!("expected base64 text, found {}", other.type_name()),
                );
                None
            }
        };
        let endpoint = match &r.endpoint {
            Value::Null => None,
            Value::Text(t) if t.trim().is_empty() => None,
            Value::Text(t) => match Endpoint::parse(t) {
                Some(e) => Some(e),
                None => {
                    err("endpoint", format!("{t:?} is not host:port"));
                    None
                }
            },
            other => {
                err(
                    "endpoint",
                    format!("expected host:port text, found {}", other.type_name()),
                );
                None
            }
        };
        let mut allowed_ips = Vec::new();
        match &r.allowed_ips {
            Value::Text(t) => {
                for part in t.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    match part.parse::<IpNet>() {
                        Ok(n) => allowed_ips.push(n.trunc()),
                        Err(_) => err("allowed_ips", format!("{part:?} is not a CIDR")),
                    }
                }
            }
            other => err(
                "allowed_ips",
                format!(
                    "expected comma-separated CIDRs, found {}",
                    other.type_name()
                ),
            ),
        }
        let keepalive = match &r.persistent_keepalive {
            Value::Null => None,
            Value::Integer(0) => None,
            Value::Integer(n) if (1..=65535).contains(n) => Some(*n as u16),
            other => {
                err(
                    "persistent_keepalive",
                    format!("{other:?} is not 0..=65535 seconds"),
                );
                None
            }
        };
        let region = match &r.region {
            Value::Null => None,
            Value::Text(t) if region_known(t.trim()) => Some(RegionId::new(t.trim())),
            Value::Text(t) => {
                err("region", format!("unknown region {:?}", t.trim()));
                None
            }
            other => {
                err(
                    "region",
                    format!("expected a region id, found {}", other.type_name()),
                );
                None
            }
        };
        if let Some(k) = key {
            if peers.iter().any(|p| p.public_key == k) {
                err("public_key", "duplicate peer".into());
            }
        }
        if !mine.is_empty() {
            errors.append(&mut mine);
            continue;
        }
        if let Some(public_key) = key {
            peers.push(WgPeer {
                public_key,
                endpoint,
                allowed_ips,
                persistent_keepalive: keepalive,
                region,
            });
        }
    }
    peers.sort_by_key(|p| p.public_key);
    peers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, endpoint: Option<&str>, ips: &str) -> WgPeerRow {
        WgPeerRow {
            rowid: 1,
            public_key: key.into(),
            endpoint: endpoint.into(),
            allowed_ips: ips.into(),
            persistent_keepalive: Value::Null,
            region: Value::Null,
        }
    }

    const KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    #[test]
    fn valid_rows_and_endpoint_forms() {
        let mut errors = Vec::new();
        let peers = validate(
            &[row(KEY, Some("[fd00::1]:51820"), "10.77.0.0/24, fd77::/64")],
            |_| true,
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(peers[0].allowed_ips.len(), 2);
        assert_eq!(
            Endpoint::parse("pop-eu.example.net:51820"),
            Some(Endpoint::Host("pop-eu.example.net".into(), 51820))
        );
        assert_eq!(Endpoint::parse("bad host:1"), None);
        assert_eq!(Endpoint::parse("host:0"), None);
    }

    #[test]
    fn bad_rows_are_reported() {
        let mut errors = Vec::new();
        let mut ka = row(KEY, None, "10.0.0.0/8");
        ka.persistent_keepalive = Value::Integer(70000);
        let mut region = row("AAAA", None, "10.0.0.0/8");
        region.region = "mars".into();
        validate(
            &[
                row("not-a-key", None, "10.0.0.0/8"),
                row(KEY, Some("nowhere"), "10.0.0.0/33"),
                ka,
                region,
            ],
            |r| r == "eu",
            &mut errors,
        );
        let has = |col: &str| errors.iter().any(|e| e.column == Some(col));
        for col in [
            "public_key",
            "endpoint",
            "allowed_ips",
            "persistent_keepalive",
            "region",
        ] {
            assert!(has(col), "{col}: {errors:#?}");
        }
    }
}
