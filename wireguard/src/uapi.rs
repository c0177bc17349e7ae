//! The cross-platform WireGuard configuration protocol, as text: what `wg`
//! writes to `/var/run/wireguard/<iface>.sock` and what it expects back.
//!
//! A request is `get=1` or `set=1` on its own line, then (for `set`)
//! `key=value` lines, ended by a blank line. Keys and preshared keys are
//! lowercase hex on this socket (not base64). A `get` is answered with the
//! interface's keys, then each peer starting at its `public_key=` line,
//! then `errno=0` and a blank line; a `set` with `errno=0` (or the error's
//! errno) and a blank line. Times are UNIX seconds and nanoseconds.
//!
//! This module only parses and renders; [`SetRequest::apply`] applies a
//! parsed `set` to a [`Peers`] table. Differences from wireguard-go:
//! preshared keys are refused (`EINVAL`) unless all zero, and
//! `replace_peers` keeps the session of every listed peer that already
//! existed (the table is reconciled, not emptied and refilled).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use crate::key::{PrivateKey, PublicKey};
use crate::peer::{PeerConfig, PeerId};
use crate::peers::{ConfigError, Peers, Reconciled};

/// `EINVAL`: a value or key the interface does not accept.
pub const EINVAL: i32 = 22;
/// `EPROTO`: a line that is not `key=value`, or an unknown operation.
pub const EPROTO: i32 = 71;
/// `EADDRINUSE`: the listen port could not be bound.
pub const EADDRINUSE: i32 = 98;
/// `EIO`: the request could not be read or applied.
pub const EIO: i32 = 5;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UapiError {
    /// The first line is neither `get=1` nor `set=1`.
    #[error("unknown operation {0:?}")]
    UnknownOperation(String),
    /// A line is not `key=value`.
    #[error("line {0:?} is not key=value")]
    NotKeyValue(String),
    /// A key this interface does not know (at device or peer level).
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    /// A value that does not parse for its key.
    #[error("invalid value {value:?} for {key}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
    },
    /// A non-zero preshared key (not supported).
    #[error("preshared keys are not supported")]
    PresharedKey,
    /// The configuration was refused by the peer table.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl UapiError {
    /// The errno answered on the socket (positive, as in `errno=22`).
    pub fn errno(&self) -> i32 {
        match self {
            Self::UnknownOperation(_) | Self::NotKeyValue(_) => EPROTO,
            _ => EINVAL,
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `get=1`: report the configuration and counters.
    Get,
    /// `set=1`: change the configuration.
    Set(SetRequest),
}

/// A `set=1` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetRequest {
    /// A new private key.
    pub private_key: Option<PrivateKey>,
    /// A new listen port.
    pub listen_port: Option<u16>,
    /// A new firewall mark (0: none).
    pub fwmark: Option<u32>,
    /// Remove every peer not listed below.
    pub replace_peers: bool,
    /// Per-peer changes, in order.
    pub peers: Vec<PeerSet>,
}

/// The changes to one peer in a `set=1` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSet {
    /// Which peer (created unless `update_only`).
    pub public_key: PublicKey,
    /// Remove this peer.
    pub remove: bool,
    /// Only change an existing peer; never create it.
    pub update_only: bool,
    /// A new endpoint.
    pub endpoint: Option<SocketAddr>,
    /// A new persistent keepalive interval (0: off).
    pub persistent_keepalive: Option<u16>,
    /// Drop the peer's allowed IPs before adding those below.
    pub replace_allowed_ips: bool,
    /// Allowed IPs to add.
    pub allowed_ips: Vec<IpNet>,
}

impl PeerSet {
    fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            remove: false,
            update_only: false,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

fn invalid(key: &str, value: &str) -> UapiError {
    UapiError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

fn parse_true(key: &str, value: &str) -> Result<bool, UapiError> {
    if value == "true" {
        Ok(true)
    } else {
        Err(invalid(key, value))
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, UapiError> {
    value.parse().map_err(|_| invalid(key, value))
}

/// Parses a whole request: its operation line and, for `set`, its
/// `key=value` lines. A trailing blank line (and anything after it) is
/// ignored.
pub fn parse_request(text: &str) -> Result<Request, UapiError> {
    let mut lines = text.split('\n').take_while(|l| !l.is_empty());
    match lines.next() {
        Some("get=1") => {
            // A get carries nothing else.
            match lines.next() {
                None => Ok(Request::Get),
                Some(extra) => Err(UapiError::UnknownKey(extra.to_owned())),
            }
        }
        Some("set=1") => parse_set(lines).map(Request::Set),
        other => Err(UapiError::UnknownOperation(
            other.unwrap_or_default().to_owned(),
        )),
    }
}

fn parse_set<'a>(lines: impl Iterator<Item = &'a str>) -> Result<SetRequest, UapiError> {
    let mut set = SetRequest::default();
    for line in lines {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| UapiError::NotKeyValue(line.to_owned()))?;
        if key == "public_key" {
            let public_key = PublicKey::from_hex(value).map_err(|_| invalid(key, value))?;
            set.peers.push(PeerSet::new(public_key));
            continue;
        }
        match set.peers.last_mut() {
            None => match key {
                "private_key" => {
                    set.private_key =
                        Some(PrivateKey::from_hex(value).map_err(|_| invalid(key, value))?);
                }
                "listen_port" => set.listen_port = Some(parse_num(key, value)?),
                "fwmark" => set.fwmark = Some(parse_num(key, value)?),
                "replace_peers" => set.replace_peers = parse_true(key, value)?,
                _ => return Err(UapiError::UnknownKey(key.to_owned())),
            },
            Some(peer) => match key {
                "remove" => peer.remove = parse_true(key, value)?,
                "update_only" => peer.update_only = parse_true(key, value)?,
                "endpoint" => peer.endpoint = Some(parse_num(key, value)?),
                "persistent_keepalive_interval" => {
                    peer.persistent_keepalive = Some(parse_num(key, value)?);
                }
                "replace_allowed_ips" => {
                    peer.replace_allowed_ips = parse_true(key, value)?;
                    // Lines apply in order: what came before is replaced too.
                    peer.allowed_ips.clear();
                }
                "allowed_ip" => peer.allowed_ips.push(parse_num(key, value)?),
                "preshared_key" => {
                    let zero = value.len() == 64 && value.bytes().all(|b| b == b'0');
                    if !zero {
                        return Err(UapiError::PresharedKey);
                    }
                }
                "protocol_version" => {
                    if value != "1" {
                        return Err(invalid(key, value));
                    }
                }
                _ => return Err(UapiError::UnknownKey(key.to_owned())),
            },
        }
    }
    Ok(set)
}

impl SetRequest {
    /// Applies the private key and the peer changes to `peers` at `now`
    /// (the listen port and fwmark are the device's to apply). Peers with
    /// our own public key are ignored, as `wg` expects.
    pub fn apply(&self, peers: &mut Peers, now: Instant) -> Result<Reconciled, UapiError> {
        if let Some(key) = &self.private_key {
            peers.set_private_key(key.clone());
        }
        let own = *peers.public_key();
        let mut desired: Vec<PeerConfig> = if self.replace_peers {
            Vec::new()
        } else {
            peers.configs()
        };
        let mut forced_endpoints = Vec::new();
        for change in self.peers.iter().filter(|p| p.public_key != own) {
            let pos = desired
                .iter()
                .position(|c| c.public_key == change.public_key);
            if change.remove {
                if let Some(pos) = pos {
                    desired.remove(pos);
                }
                continue;
            }
            let pos = match pos {
                Some(pos) => pos,
                None if change.update_only && peers.id_of(&change.public_key).is_none() => {
                    continue;
                }
                None => {
                    // New, or listed again after `replace_peers`: exactly as
                    // listed (an existing peer still keeps its session).
                    desired.push(PeerConfig::new(change.public_key));
                    desired.len() - 1
                }
            };
            let config = &mut desired[pos];
            if let Some(endpoint) = change.endpoint {
                config.endpoint = Some(endpoint);
                forced_endpoints.push((change.public_key, endpoint));
            }
            if let Some(k) = change.persistent_keepalive {
                config.persistent_keepalive = (k > 0).then_some(k);
            }
            if change.replace_allowed_ips {
                config.allowed_ips.clear();
            }
            config
                .allowed_ips
                .extend(change.allowed_ips.iter().copied());
        }
        let done = peers.reconcile(&desired, now)?;
        // An endpoint set explicitly wins over where the peer roamed.
        for (key, endpoint) in forced_endpoints {
            peers.set_endpoint(&key, endpoint);
        }
        Ok(done)
    }
}

/// Renders the answer to `get=1`: our private key and listen port, then each
/// peer (ordered by key) with its endpoint, allowed IPs, last handshake as
/// UNIX time, counters and keepalive, then `errno=0` and a blank line.
/// `now` and `wall_now` are the caller's clocks at the same instant.
pub fn render_get(peers: &Peers, listen_port: u16, now: Instant, wall_now: SystemTime) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "private_key={}", peers.private_key().to_hex());
    if listen_port != 0 {
        let _ = writeln!(out, "listen_port={listen_port}");
    }
    let mut routes: HashMap<PeerId, Vec<IpNet>> = HashMap::new();
    for (net, id) in peers.routes().iter() {
        routes.entry(id).or_default().push(net);
    }
    let mut list: Vec<_> = peers.iter().collect();
    list.sort_by_key(|p| *p.public_key());
    for peer in list {
        let stats = peer.stats();
        let _ = writeln!(out, "public_key={}", peer.public_key().to_hex());
        if let Some(endpoint) = peer.endpoint() {
            let _ = writeln!(out, "endpoint={endpoint}");
        }
        let mut nets = routes.remove(&peer.id()).unwrap_or_default();
        nets.sort();
        for net in nets {
            let _ = writeln!(out, "allowed_ip={net}");
        }
        let since_epoch = stats
            .last_handshake_wall(now, wall_now)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let _ = writeln!(out, "last_handshake_time_sec={}", since_epoch.as_secs());
        let _ = writeln!(
            out,
            "last_handshake_time_nsec={}",
            since_epoch.subsec_nanos()
        );
        let _ = writeln!(out, "rx_bytes={}", stats.rx_bytes);
        let _ = writeln!(out, "tx_bytes={}", stats.tx_bytes);
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            peer.persistent_keepalive().unwrap_or(0)
        );
        out.push_str("protocol_version=1\n");
    }
    out.push_str("errno=0\n\n");
    out
}

/// The answer to a `set=1` (or to a refused request): `errno=N` and a blank
/// line.
pub fn render_errno(errno: i32) -> String {
    format!("errno={errno}\n\n")
}

#[cfg(test)]
mod tests;
