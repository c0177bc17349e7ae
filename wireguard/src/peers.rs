//! The peer table: one boringtun `Tunn` per peer, found by public key, by
//! the 24-bit index in a message's receiver field, by the static key inside
//! a handshake initiation, and by allowed IP.
//!
//! [`Peers::reconcile`] moves the table to a desired list of peers while
//! disturbing as little as it can: an unchanged peer keeps its `Tunn` and
//! session; a changed endpoint only moves where we send (no new handshake);
//! changed allowed IPs only change routing; a changed key is another peer
//! (the old one is removed, the new one added). It reads no clock.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn};
use boringtun::x25519;
use ipnet::IpNet;

use crate::allowed_ips::AllowedIps;
use crate::key::{PrivateKey, PublicKey};
use crate::peer::{Peer, PeerConfig, PeerId, PeerStats};

/// Handshake messages per second (all peers together) before the shared
/// rate limiter asks for cookies. An initiation is counted twice (once to
/// find its sender, once by its peer's `Tunn`), so this allows about half as
/// many initiations.
pub const HANDSHAKE_RATE_LIMIT: u64 = 100;

/// The largest index a peer can have (indices are 24 bits).
const MAX_INDEX: u32 = (1 << 24) - 1;

/// Why a configuration was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The same public key appears twice in the desired peers.
    #[error("peer {0} is listed twice")]
    DuplicatePeer(PublicKey),
    /// A peer has our own public key.
    #[error("peer {0} has the interface's own public key")]
    OwnKey(PublicKey),
    /// More peers than 24-bit indices.
    #[error("too many peers (at most {MAX_INDEX})")]
    TooManyPeers,
}

/// What [`Peers::reconcile`] changed, by peer key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Peers added (with a fresh `Tunn`).
    pub added: Vec<PublicKey>,
    /// Peers removed (with their sessions).
    pub removed: Vec<PublicKey>,
    /// Peers whose configured endpoint changed.
    pub endpoint_changed: Vec<PublicKey>,
    /// Peers whose allowed IPs changed.
    pub allowed_ips_changed: Vec<PublicKey>,
    /// Peers whose persistent keepalive changed.
    pub keepalive_changed: Vec<PublicKey>,
}

impl Reconciled {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.endpoint_changed.is_empty()
            && self.allowed_ips_changed.is_empty()
            && self.keepalive_changed.is_empty()
    }
}

/// Truncated, deduplicated, in first-seen order.
fn normalize(nets: &[IpNet]) -> Vec<IpNet> {
    let mut seen = HashSet::new();
    nets.iter()
        .map(IpNet::trunc)
        .filter(|n| seen.insert(*n))
        .collect()
}

fn same_set(a: &[IpNet], b: &[IpNet]) -> bool {
    let a: HashSet<IpNet> = a.iter().map(IpNet::trunc).collect();
    let b: HashSet<IpNet> = b.iter().map(IpNet::trunc).collect();
    a == b
}

/// The peer table.
pub struct Peers {
    private_key: PrivateKey,
    public_key: PublicKey,
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    rate_limiter: Arc<RateLimiter>,
    by_id: HashMap<PeerId, Peer>,
    by_key: HashMap<PublicKey, PeerId>,
    routes: AllowedIps<PeerId>,
    next_index: u32,
}

impl Peers {
    /// An empty table for the interface with `private_key`; the first index
    /// is drawn at random (so indices differ across restarts).
    pub fn new(private_key: PrivateKey) -> Self {
        let mut seed = [0u8; 4];
        let first = match getrandom::fill(&mut seed) {
            Ok(()) => u32::from_le_bytes(seed),
            Err(_) => 1,
        };
        Self::with_first_index(private_key, first)
    }

    /// An empty table whose first peer gets index `first` (masked to 24
    /// bits; 0 becomes 1).
    pub fn with_first_index(private_key: PrivateKey, first: u32) -> Self {
        let secret = private_key.to_x25519();
        let public = x25519::PublicKey::from(&secret);
        let first = (first & MAX_INDEX).max(1);
        Self {
            public_key: private_key.public_key(),
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            private_key,
            secret,
            public,
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            routes: AllowedIps::new(),
            next_index: first,
        }
    }

    /// Our private key.
    pub fn private_key(&self) -> &PrivateKey {
        &self.private_key
    }

    /// Our public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The rate limiter shared by every peer's `Tunn`; its count must be
    /// reset every second ([`crate::engine::Engine::poll_timers`] does).
    pub fn rate_limiter(&self) -> &Arc<RateLimiter> {
        &self.rate_limiter
    }

    /// Changes our private key: every session is dropped (the next packet
    /// starts a new handshake). The same key again changes nothing; returns
    /// whether it changed.
    pub fn set_private_key(&mut self, private_key: PrivateKey) -> bool {
        if private_key == self.private_key {
            return false;
        }
        self.secret = private_key.to_x25519();
        self.public = x25519::PublicKey::from(&self.secret);
        self.public_key = private_key.public_key();
        self.private_key = private_key;
        self.rate_limiter = Arc::new(RateLimiter::new(&self.public, HANDSHAKE_RATE_LIMIT));
        for peer in self.by_id.values_mut() {
            peer.tunn.set_static_private(
                self.secret.clone(),
                self.public,
                Some(Arc::clone(&self.rate_limiter)),
            );
        }
        true
    }

    /// How many peers.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there is no peer.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// A peer by handle.
    pub fn get(&self, id: PeerId) -> Option<&Peer> {
        self.by_id.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        self.by_id.get_mut(&id)
    }

    /// The handle of the peer with `key`.
    pub fn id_of(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    /// The peer with `key`.
    pub fn by_key(&self, key: &PublicKey) -> Option<&Peer> {
        self.id_of(key).and_then(|id| self.by_id.get(&id))
    }

    /// The peer a message with this receiver index (a handshake response,
    /// cookie reply or data message) is for: boringtun puts the peer's index
    /// in the top 24 bits.
    pub fn by_receiver_index(&self, receiver_index: u32) -> Option<PeerId> {
        let id = PeerId(receiver_index >> 8);
        self.by_id.contains_key(&id).then_some(id)
    }

    /// The peer a packet to `dst` goes to (longest allowed-IPs match).
    pub fn route(&self, dst: IpAddr) -> Option<PeerId> {
        self.routes.lookup(dst)
    }

    /// The allowed-IPs table.
    pub fn routes(&self) -> &AllowedIps<PeerId> {
        &self.routes
    }

    /// The sender of a handshake initiation whose MACs were already checked:
    /// decrypts its static key (one Diffie-Hellman) and looks it up.
    pub(crate) fn sender_of(&self, packet: &Packet<'_>) -> Option<PeerId> {
        let Packet::HandshakeInit(init) = packet else {
            return None;
        };
        let half = parse_handshake_anon(&self.secret, &self.public, init).ok()?;
        self.id_of(&PublicKey::from_bytes(half.peer_static_public))
    }

    /// Every peer, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.by_id.values()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        self.by_id.values_mut()
    }

    /// Every peer's configuration (configured endpoints), ordered by key.
    pub fn configs(&self) -> Vec<PeerConfig> {
        let mut v: Vec<PeerConfig> = self.iter().map(Peer::config).collect();
        v.sort_by_key(|c| c.public_key);
        v
    }

    /// Sends to the peer with `key` at `endpoint` from now on (as `wg set
    /// … endpoint` does); returns whether the peer exists.
    pub fn set_endpoint(&mut self, key: &PublicKey, endpoint: SocketAddr) -> bool {
        match self.id_of(key).and_then(|id| self.by_id.get_mut(&id)) {
            Some(peer) => {
                peer.endpoint = Some(endpoint);
                true
            }
            None => false,
        }
    }

    fn allocate_index(&mut self) -> Result<PeerId, ConfigError> {
        if self.by_id.len() >= MAX_INDEX as usize {
            return Err(ConfigError::TooManyPeers);
        }
        loop {
            let id = PeerId(self.next_index);
            self.next_index = if self.next_index >= MAX_INDEX {
                1
            } else {
                self.next_index + 1
            };
            if !self.by_id.contains_key(&id) {
                return Ok(id);
            }
        }
    }

    fn add(&mut self, config: &PeerConfig) -> Result<PeerId, ConfigError> {
        let id = self.allocate_index()?;
        let tunn = Tunn::new(
            self.secret.clone(),
            config.public_key.to_x25519(),
            None,
            // Persistent keepalives are ours (so they can change without a
            // new Tunn, and run on the caller's clock).
            None,
            id.0,
            Some(Arc::clone(&self.rate_limiter)),
        );
        let peer = Peer {
            id,
            public_key: config.public_key,
            configured_endpoint: config.endpoint,
            endpoint: config.endpoint,
            allowed_ips: normalize(&config.allowed_ips),
            persistent_keepalive: config.persistent_keepalive.filter(|k| *k > 0),
            last_keepalive: None,
            sent_since_tick: false,
            initiated_session: false,
            tunn,
            stats: PeerStats::default(),
        };
        self.by_id.insert(id, peer);
        self.by_key.insert(config.public_key, id);
        Ok(id)
    }

    /// Removes the peer with `key` (its session and routes); returns its
    /// configuration.
    pub fn remove(&mut self, key: &PublicKey) -> Option<PeerConfig> {
        let id = self.by_key.remove(key)?;
        let peer = self.by_id.remove(&id)?;
        self.routes.remove_handle(id);
        Some(peer.config())
    }

    /// Rebuilds the routes from every peer's allowed IPs, in `order` (a
    /// network listed by two peers goes to the later one).
    fn rebuild_routes(&mut self, order: &[PeerConfig]) {
        self.routes.clear();
        for config in order {
            if let Some(id) = self.id_of(&config.public_key) {
                for net in &config.allowed_ips {
                    self.routes.insert(*net, id);
                }
            }
        }
    }

    /// Moves the table to exactly the `desired` peers (see the module
    /// documentation). Refuses (changing nothing) a key listed twice or
    /// equal to our own. `now` is the caller's clock; nothing in reconciling
    /// depends on it yet (a peer whose persistent keepalive is turned on
    /// sends one at the next timer tick).
    pub fn reconcile(
        &mut self,
        desired: &[PeerConfig],
        _now: Instant,
    ) -> Result<Reconciled, ConfigError> {
        let mut wanted = HashSet::new();
        for c in desired {
            if c.public_key == self.public_key {
                return Err(ConfigError::OwnKey(c.public_key));
            }
            if !wanted.insert(c.public_key) {
                return Err(ConfigError::DuplicatePeer(c.public_key));
            }
        }
        if desired.len() > MAX_INDEX as usize {
            return Err(ConfigError::TooManyPeers);
        }

        let mut done = Reconciled::default();
        let mut gone: Vec<PublicKey> = self
            .by_key
            .keys()
            .filter(|k| !wanted.contains(k))
            .copied()
            .collect();
        gone.sort();
        for key in gone {
            self.remove(&key);
            done.removed.push(key);
        }
        let mut routing_changed = !done.removed.is_empty();

        for c in desired {
            let Some(peer) = self
                .id_of(&c.public_key)
                .and_then(|id| self.by_id.get_mut(&id))
            else {
                self.add(c)?;
                done.added.push(c.public_key);
                routing_changed = true;
                continue;
            };
            if peer.configured_endpoint != c.endpoint {
                peer.configured_endpoint = c.endpoint;
                if c.endpoint.is_some() {
                    peer.endpoint = c.endpoint;
                }
                done.endpoint_changed.push(c.public_key);
            }
            if !same_set(&peer.allowed_ips, &c.allowed_ips) {
                peer.allowed_ips = normalize(&c.allowed_ips);
                done.allowed_ips_changed.push(c.public_key);
                routing_changed = true;
            }
            let keepalive = c.persistent_keepalive.filter(|k| *k > 0);
            if peer.persistent_keepalive != keepalive {
                if peer.persistent_keepalive.is_none() {
                    // Turned on: the first one goes out at the next tick.
                    peer.last_keepalive = None;
                }
                peer.persistent_keepalive = keepalive;
                done.keepalive_changed.push(c.public_key);
            }
        }
        if routing_changed {
            self.rebuild_routes(desired);
        }
        Ok(done)
    }
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("public_key", &self.public_key)
            .field("peers", &self.by_id.values().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
