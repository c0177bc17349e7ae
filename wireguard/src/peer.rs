//! One peer: its configuration, its boringtun `Tunn` (the Noise handshake
//! and session state) and its counters.
//!
//! A [`Peer`] lives in the [`crate::peers::Peers`] table, which owns it and
//! gives it a unique 24-bit index ([`PeerId`]). The core reads no clock:
//! times are the `now` the caller passed in.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::Tunn;
use ipnet::IpNet;

use crate::key::{PrivateKey, PublicKey};

/// What the operator wants for one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's static public key: who it is.
    pub public_key: PublicKey,
    /// Where to send to it before it has sent anything (it roams after).
    pub endpoint: Option<SocketAddr>,
    /// The networks routed to it, and the sources accepted from it.
    pub allowed_ips: Vec<IpNet>,
    /// Send a keepalive this often (seconds) even when idle; `None` or 0: never.
    pub persistent_keepalive: Option<u16>,
}

impl PeerConfig {
    /// A peer with no endpoint, no allowed IPs and no keepalive.
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            endpoint: None,
            allowed_ips: Vec::new(),
            persistent_keepalive: None,
        }
    }
}

/// What the operator wants for the interface itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Our static private key.
    pub private_key: PrivateKey,
    /// The UDP port to listen on; 0 picks a free one.
    pub listen_port: u16,
}

/// A peer's handle in the table: its 24-bit index, as it appears (shifted
/// left by 8) in the handshake and data messages it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub(crate) u32);

impl PeerId {
    /// The 24-bit index.
    pub fn index(self) -> u32 {
        self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}

/// A peer's counters, for `wg show` and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Bytes of authenticated WireGuard datagrams received from the peer.
    pub rx_bytes: u64,
    /// Bytes of WireGuard datagrams sent to the peer.
    pub tx_bytes: u64,
    /// When the last handshake completed (the caller's clock).
    pub last_handshake: Option<Instant>,
    /// Handshakes completed, as initiator or responder.
    pub handshakes_completed: u64,
    /// Handshake initiations sent (first tries and retries).
    pub handshake_initiations_sent: u64,
    /// Valid handshake initiations received and answered.
    pub handshake_initiations_received: u64,
    /// Authenticated packets dropped because their inner source address is
    /// not among the peer's allowed IPs.
    pub source_not_allowed: u64,
}

impl PeerStats {
    /// The last handshake as wall-clock time, given the caller's `now` on
    /// both clocks (monotonic `now`, wall-clock `wall_now`).
    pub fn last_handshake_wall(&self, now: Instant, wall_now: SystemTime) -> Option<SystemTime> {
        let at = self.last_handshake?;
        let ago = now.checked_duration_since(at).unwrap_or(Duration::ZERO);
        wall_now.checked_sub(ago)
    }
}

/// One peer in the table.
pub struct Peer {
    pub(crate) id: PeerId,
    pub(crate) public_key: PublicKey,
    /// The endpoint the configuration asked for.
    pub(crate) configured_endpoint: Option<SocketAddr>,
    /// Where we send now: the configured endpoint until the peer roams.
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) allowed_ips: Vec<IpNet>,
    pub(crate) persistent_keepalive: Option<u16>,
    /// When the last persistent keepalive went out; `None`: send one at the
    /// next tick.
    pub(crate) last_keepalive: Option<Instant>,
    /// Something was sent to the peer since the last timer tick, so no
    /// keepalive is needed until an interval passes without traffic.
    pub(crate) sent_since_tick: bool,
    /// The current session began with our initiation (a response came
    /// back), so rekeying it is ours to do.
    pub(crate) initiated_session: bool,
    pub(crate) tunn: Tunn,
    pub(crate) stats: PeerStats,
}

impl Peer {
    /// The peer's handle (its 24-bit index).
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The peer's static public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// Where datagrams for the peer go now (the configured endpoint until the
    /// peer sends from elsewhere).
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    /// The networks routed to the peer (those another peer took since are
    /// not listed).
    pub fn allowed_ips(&self) -> &[IpNet] {
        &self.allowed_ips
    }

    /// The persistent keepalive interval in seconds, if any.
    pub fn persistent_keepalive(&self) -> Option<u16> {
        self.persistent_keepalive.filter(|k| *k > 0)
    }

    /// The peer's counters.
    pub fn stats(&self) -> &PeerStats {
        &self.stats
    }

    /// Whether the peer's handshake attempts expired (90 s without
    /// success); the next packet for it starts over.
    pub fn is_expired(&self) -> bool {
        self.tunn.is_expired()
    }

    /// The configuration this peer was given (with the configured, not the
    /// roamed, endpoint).
    pub fn config(&self) -> PeerConfig {
        PeerConfig {
            public_key: self.public_key,
            endpoint: self.configured_endpoint,
            allowed_ips: self.allowed_ips.clone(),
            persistent_keepalive: self.persistent_keepalive,
        }
    }

    /// Whether a persistent keepalive is due at `now`; marks it sent.
    pub(crate) fn take_keepalive_due(&mut self, now: Instant) -> bool {
        let Some(interval) = self.persistent_keepalive() else {
            return false;
        };
        // Traffic went out since the last tick: it did the keepalive's job.
        if std::mem::take(&mut self.sent_since_tick) && self.last_keepalive.is_some() {
            self.last_keepalive = Some(now);
            return false;
        }
        let due = match self.last_keepalive {
            None => true,
            Some(last) => {
                now.checked_duration_since(last).unwrap_or(Duration::ZERO)
                    >= Duration::from_secs(u64::from(interval))
            }
        };
        if due {
            self.last_keepalive = Some(now);
        }
        due
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("public_key", &self.public_key)
            .field("endpoint", &self.endpoint)
            .field("allowed_ips", &self.allowed_ips)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
