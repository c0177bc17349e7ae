//! The datapath around the peer table, without IO: an IP packet from the
//! TUN becomes a datagram for a peer's endpoint, a datagram from the network
//! becomes an IP packet for the TUN (or a handshake reply), and a timer tick
//! becomes retransmits, rekeys and keepalives.
//!
//! Rules it keeps:
//! - every output buffer is checked before boringtun sees it, so boringtun
//!   never panics on a short buffer (encapsulate needs `len + 32` and at
//!   least 148 bytes; decapsulate needs the datagram's length);
//! - a datagram is decapsulated with `Some(sender)`, so that under load
//!   boringtun answers with a cookie instead of failing;
//! - after a handshake message produced a reply, packets that were queued
//!   waiting for the session are flushed ([`Engine::flush`]);
//! - a decrypted packet is written to the TUN only if its source address
//!   routes back to the peer that sent it;
//! - a peer's endpoint follows the address its last authenticated datagram
//!   came from (roaming);
//! - a datagram that is malformed, unauthenticated, replayed or for no peer
//!   gets no reply, only a count;
//! - under load (more than [`HANDSHAKE_RATE_LIMIT`] handshake messages in a
//!   second), an initiation with a valid cookie still costs a
//!   Diffie-Hellman only if its source address has a token left
//!   ([`crate::ratelimit::SourceLimiter`]), and an initiation already seen
//!   to be from an unknown key costs none
//!   ([`crate::ratelimit::UnknownInitiations`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Packet, Tunn, TunnResult};

pub use crate::drops::{DropReason, EngineStats};
use crate::key::PrivateKey;
use crate::peer::PeerId;
use crate::peers::{Peers, HANDSHAKE_RATE_LIMIT};
use crate::ratelimit::{Admission, SourceLimiter, UnknownInitiations};

/// WireGuard's data message overhead (header and tag).
pub const OVERHEAD: usize = 32;

/// The smallest output buffer boringtun accepts (a handshake initiation).
pub const MIN_BUFFER: usize = 148;

/// A buffer size that fits any IP packet (64 KiB) plus the overhead.
pub const MAX_BUFFER: usize = 65_535 + OVERHEAD;

/// WireGuard's `REKEY_AFTER_TIME`: boringtun starts a new handshake when a
/// session it initiated is this old; [`Engine::set_rekey_after`] can only
/// shorten it.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);

const MSG_INIT: u8 = 1;
const MSG_RESPONSE: u8 = 2;
const MSG_COOKIE: u8 = 3;
const MSG_DATA: u8 = 4;
const COOKIE_REPLY_LEN: usize = 64;

/// Why a handshake initiation was not attributed to a peer.
enum Refusal {
    /// Under load without a valid cookie: answer with this cookie reply.
    Cookie([u8; COOKIE_REPLY_LEN]),
    /// Dropped.
    Drop(DropReason),
}

/// A datagram to send, borrowed from the caller's output buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// The peer it is for (`None`: a cookie reply to an unidentified sender).
    pub peer: Option<PeerId>,
    /// Where to send it.
    pub endpoint: SocketAddr,
    /// The datagram.
    pub datagram: &'a [u8],
}

/// A datagram to send, owned (from [`Engine::poll_timers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedTransmit {
    /// The peer it is for.
    pub peer: PeerId,
    /// Where to send it.
    pub endpoint: SocketAddr,
    /// The datagram.
    pub datagram: Vec<u8>,
}

/// What to do after handling one packet or datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Send this datagram. After one that answered a datagram, call
    /// [`Engine::flush`] until it returns `None`.
    Send(Transmit<'a>),
    /// Write this IP packet to the TUN.
    WriteTun(&'a [u8]),
    /// Nothing to do (a keepalive arrived, or a packet waits for a handshake
    /// already under way).
    Done,
    /// Dropped, and why (already counted).
    Drop(DropReason),
}

/// The sans-IO WireGuard datapath for one interface.
#[derive(Debug)]
pub struct Engine {
    peers: Peers,
    stats: EngineStats,
    /// The longest packet ever queued into a `Tunn`: a flush buffer must fit
    /// it plus the overhead.
    max_tun_packet: usize,
    /// Peers that may have packets queued behind a handshake that just
    /// completed.
    pending_flush: Vec<PeerId>,
    last_rate_reset: Option<Instant>,
    /// Handshake initiations with a valid MAC1 checked since the last reset
    /// of the shared rate limiter. boringtun counts each of them too (and
    /// more: the peer's `Tunn` counts an initiation again, and responses),
    /// and both counts are reset together, so while this one is at the
    /// limit boringtun is under load as well and has checked the cookie.
    handshakes_this_second: u64,
    /// The shared rate limiter those initiations were counted against (a
    /// new key brings a new limiter, whose count starts at 0).
    counted_for: usize,
    /// Per-source token buckets for initiations under load.
    limiter: SourceLimiter,
    /// Initiations already known to be from unknown keys.
    unknown: UnknownInitiations,
    /// Sessions we initiated are rekeyed once this old (at most
    /// [`REKEY_AFTER_TIME`], which boringtun applies by itself).
    rekey_after: Duration,
    scratch: Vec<u8>,
}

impl Engine {
    /// An engine with no peers for the interface with `private_key`.
    pub fn new(private_key: PrivateKey) -> Self {
        Self::with_peers(Peers::new(private_key))
    }

    /// An engine around an existing table.
    pub fn with_peers(peers: Peers) -> Self {
        Self {
            peers,
            stats: EngineStats::default(),
            max_tun_packet: 0,
            pending_flush: Vec::new(),
            last_rate_reset: None,
            handshakes_this_second: 0,
            counted_for: 0,
            limiter: SourceLimiter::default(),
            unknown: UnknownInitiations::default(),
            rekey_after: REKEY_AFTER_TIME,
            scratch: vec![0u8; MIN_BUFFER.max(OVERHEAD + 16)],
        }
    }

    /// The peer table.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// The peer table, to reconfigure it (a key that was no peer's may be
    /// one now: the initiations known to be from unknown keys are
    /// forgotten).
    pub fn peers_mut(&mut self) -> &mut Peers {
        self.unknown.clear();
        &mut self.peers
    }

    /// How many source addresses the handshake limiter tracks now.
    pub fn rate_limited_sources(&self) -> usize {
        self.limiter.len()
    }

    /// The interface's counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Rekeys sessions we initiated once they are `after` old, instead of
    /// after [`REKEY_AFTER_TIME`] (longer values are capped to it: boringtun
    /// rekeys then regardless). The rekey is a new handshake started by
    /// [`Engine::poll_timers`]; the old session carries traffic until the
    /// new one is up.
    pub fn set_rekey_after(&mut self, after: Duration) {
        self.rekey_after = after.min(REKEY_AFTER_TIME);
    }

    /// How old a session we initiated gets before it is rekeyed.
    pub fn rekey_after(&self) -> Duration {
        self.rekey_after
    }

    fn drop(&mut self, reason: DropReason) -> Action<'static> {
        self.stats.count(reason);
        Action::Drop(reason)
    }

    /// Handles an IP packet read from the TUN: routes it by destination
    /// through the allowed IPs and encapsulates it into `out` (which must
    /// hold `packet.len() + 32` and at least 148 bytes). Without a session
    /// the packet waits in the peer's queue and a handshake initiation is
    /// returned instead (or `Done` if one is under way).
    pub fn handle_tun_packet<'a>(&mut self, packet: &[u8], out: &'a mut [u8]) -> Action<'a> {
        let Some(dst) = Tunn::dst_address(packet) else {
            return self.drop(DropReason::NotIp);
        };
        let Some(id) = self.peers.route(dst) else {
            return self.drop(DropReason::NoRoute);
        };
        if out.len() < (packet.len() + OVERHEAD).max(MIN_BUFFER) {
            return self.drop(DropReason::BufferTooSmall);
        }
        let Some(peer) = self.peers.get_mut(id) else {
            return self.drop(DropReason::NoRoute);
        };
        let Some(endpoint) = peer.endpoint else {
            return self.drop(DropReason::NoEndpoint);
        };
        self.max_tun_packet = self.max_tun_packet.max(packet.len());
        match peer.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(d) => {
                peer.stats.tx_bytes += d.len() as u64;
                peer.sent_since_tick = true;
                if d.first() == Some(&MSG_INIT) {
                    peer.stats.handshake_initiations_sent += 1;
                }
                Action::Send(Transmit {
                    peer: Some(id),
                    endpoint,
                    datagram: d,
                })
            }
            TunnResult::Err(e) => self.drop(DropReason::from_wg(&e)),
            _ => Action::Done,
        }
    }

    /// Handles a datagram received from `from` at `now`, using `out` (at
    /// least the datagram's length and 148 bytes) for the result.
    pub fn handle_datagram<'a>(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        out: &'a mut [u8],
        now: Instant,
    ) -> Action<'a> {
        if out.len() < datagram.len().max(MIN_BUFFER) {
            return self.drop(DropReason::BufferTooSmall);
        }
        let Ok(packet) = Tunn::parse_incoming_packet(datagram) else {
            return self.drop(DropReason::Malformed);
        };
        let kind = datagram[0];
        let id = match packet {
            Packet::HandshakeInit(_) => match self.initiation_sender(from, datagram, now) {
                Ok(id) => Some(id),
                Err(Refusal::Drop(reason)) => return self.drop(reason),
                Err(Refusal::Cookie(cookie)) => {
                    self.stats.cookie_replies += 1;
                    out[..cookie.len()].copy_from_slice(&cookie);
                    return Action::Send(Transmit {
                        peer: None,
                        endpoint: from,
                        datagram: &out[..cookie.len()],
                    });
                }
            },
            Packet::HandshakeResponse(p) => self.peers.by_receiver_index(p.receiver_idx),
            Packet::PacketCookieReply(p) => self.peers.by_receiver_index(p.receiver_idx),
            Packet::PacketData(p) => self.peers.by_receiver_index(p.receiver_idx),
        };
        let Some(id) = id else {
            return self.drop(DropReason::UnknownIndex);
        };
        self.handle_from_peer(id, kind, from, datagram, out, now)
    }

    /// Who sent a handshake initiation: its MACs, the load and the
    /// sender's share are checked before the Diffie-Hellman that reveals
    /// the sender's static key.
    fn initiation_sender(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<PeerId, Refusal> {
        let limiter = Arc::as_ptr(self.peers.rate_limiter()) as usize;
        if limiter != self.counted_for {
            self.counted_for = limiter;
            self.handshakes_this_second = 0;
        }
        let under_load = self.handshakes_this_second >= HANDSHAKE_RATE_LIMIT;
        if under_load && self.limiter.exhausted(from.ip(), now) {
            // Its source has no token left: not even worth the MACs. Not
            // counted towards the load either (boringtun does not see it).
            self.limiter.note_limited();
            return Err(Refusal::Drop(DropReason::RateLimited));
        }
        let mut cookie = [0u8; COOKIE_REPLY_LEN];
        let verified =
            self.peers
                .rate_limiter()
                .verify_packet(Some(from.ip()), datagram, &mut cookie);
        // boringtun counts a message once its MAC1 is valid (it answered, or
        // passed it): so does this count, so that it never runs ahead of
        // boringtun's. Counting a bad MAC1 too would let anyone put this
        // count under load while boringtun is not, and then charge
        // initiations whose cookie nobody checked to the address they claim.
        if matches!(
            verified,
            Ok(_) | Err(TunnResult::WriteToNetwork(_) | TunnResult::Err(WireGuardError::UnderLoad))
        ) {
            self.handshakes_this_second += 1;
        }
        match verified {
            Ok(verified) => {
                // Under load boringtun passes only a valid cookie, which
                // proves the sender receives at `from`: its share is taken
                // from that address's bucket, so a spoofed flood cannot use
                // up another address's tokens.
                if under_load {
                    match self.limiter.check(from.ip(), now) {
                        Admission::Allowed => {}
                        Admission::Limited => return Err(Refusal::Drop(DropReason::RateLimited)),
                        Admission::TableFull => {
                            return Err(Refusal::Drop(DropReason::RateLimiterFull))
                        }
                    }
                }
                if self.unknown.contains(datagram) {
                    self.stats.unknown_peer_replays += 1;
                    return Err(Refusal::Drop(DropReason::UnknownPeer));
                }
                match self.peers.sender_of(&verified) {
                    Some(id) => Ok(id),
                    None => {
                        self.unknown.insert(datagram);
                        Err(Refusal::Drop(DropReason::UnknownPeer))
                    }
                }
            }
            Err(TunnResult::WriteToNetwork(c)) if c.len() == COOKIE_REPLY_LEN => {
                Err(Refusal::Cookie(cookie))
            }
            Err(TunnResult::Err(e)) => Err(Refusal::Drop(DropReason::from_wg(&e))),
            Err(_) => Err(Refusal::Drop(DropReason::Malformed)),
        }
    }

    /// A datagram of message type `kind` identified as coming from peer `id`.
    fn handle_from_peer<'a>(
        &mut self,
        id: PeerId,
        kind: u8,
        from: SocketAddr,
        datagram: &[u8],
        out: &'a mut [u8],
        now: Instant,
    ) -> Action<'a> {
        let Some(peer) = self.peers.get_mut(id) else {
            return self.drop(DropReason::UnknownIndex);
        };
        // The result borrows `out` only, so the table is free again below.
        match peer.tunn.decapsulate(Some(from.ip()), datagram, out) {
            TunnResult::WriteToNetwork(reply) => {
                if reply.first() == Some(&MSG_COOKIE) {
                    // Under load: the sender is not authenticated yet.
                    self.stats.cookie_replies += 1;
                    return Action::Send(Transmit {
                        peer: None,
                        endpoint: from,
                        datagram: reply,
                    });
                }
                if let Some(peer) = self.authenticated(id, from, datagram.len()) {
                    peer.stats.tx_bytes += reply.len() as u64;
                    peer.sent_since_tick = true;
                    if kind == MSG_INIT || kind == MSG_RESPONSE {
                        peer.stats.handshakes_completed += 1;
                        peer.stats.last_handshake = Some(now);
                        peer.initiated_session = kind == MSG_RESPONSE;
                    }
                    if kind == MSG_INIT {
                        peer.stats.handshake_initiations_received += 1;
                    }
                }
                if !self.pending_flush.contains(&id) {
                    self.pending_flush.push(id);
                }
                Action::Send(Transmit {
                    peer: Some(id),
                    endpoint: from,
                    datagram: reply,
                })
            }
            TunnResult::WriteToTunnelV4(packet, src) => {
                self.deliver(id, from, datagram.len(), packet, src.into())
            }
            TunnResult::WriteToTunnelV6(packet, src) => {
                self.deliver(id, from, datagram.len(), packet, src.into())
            }
            TunnResult::Done => {
                if kind == MSG_DATA {
                    // An authenticated keepalive.
                    self.authenticated(id, from, datagram.len());
                }
                Action::Done
            }
            TunnResult::Err(e) => self.drop(DropReason::from_wg(&e)),
        }
    }

    /// Peer `id` sent an authenticated datagram of `len` bytes from `from`:
    /// it roams there and its receive counter moves.
    fn authenticated(
        &mut self,
        id: PeerId,
        from: SocketAddr,
        len: usize,
    ) -> Option<&mut crate::peer::Peer> {
        let peer = self.peers.get_mut(id)?;
        peer.endpoint = Some(from);
        peer.stats.rx_bytes += len as u64;
        Some(peer)
    }

    /// A packet decrypted from peer `id`: written to the TUN only if its
    /// source `src` routes back to that peer.
    fn deliver<'a>(
        &mut self,
        id: PeerId,
        from: SocketAddr,
        len: usize,
        packet: &'a mut [u8],
        src: IpAddr,
    ) -> Action<'a> {
        let allowed = self.peers.route(src) == Some(id);
        let Some(peer) = self.authenticated(id, from, len) else {
            return self.drop(DropReason::UnknownIndex);
        };
        if !allowed {
            peer.stats.source_not_allowed += 1;
            return self.drop(DropReason::SourceNotAllowed);
        }
        Action::WriteTun(packet)
    }

    /// Sends what queued behind a handshake that just completed: call after
    /// any [`Action::Send`] from [`Engine::handle_datagram`], until `None`.
    /// `out` must hold the longest packet handed to
    /// [`Engine::handle_tun_packet`] plus 32 bytes ([`MAX_BUFFER`] always
    /// does).
    pub fn flush<'a>(&mut self, out: &'a mut [u8]) -> Option<Transmit<'a>> {
        let need = (self.max_tun_packet + OVERHEAD).max(MIN_BUFFER);
        while let Some(&id) = self.pending_flush.last() {
            if out.len() < need {
                self.pending_flush.clear();
                self.stats.count(DropReason::BufferTooSmall);
                return None;
            }
            let Some(peer) = self.peers.get_mut(id) else {
                self.pending_flush.pop();
                continue;
            };
            let Some(endpoint) = peer.endpoint else {
                self.pending_flush.pop();
                continue;
            };
            let len = match peer.tunn.decapsulate(None, &[], out) {
                TunnResult::WriteToNetwork(d) => d.len(),
                _ => {
                    self.pending_flush.pop();
                    continue;
                }
            };
            peer.stats.tx_bytes += len as u64;
            peer.sent_since_tick = true;
            if out.first() == Some(&MSG_INIT) {
                peer.stats.handshake_initiations_sent += 1;
            }
            return Some(Transmit {
                peer: Some(id),
                endpoint,
                datagram: &out[..len],
            });
        }
        None
    }

    /// Whether packets may still be queued behind a completed handshake
    /// (call [`Engine::flush`] again).
    pub fn has_pending_flush(&self) -> bool {
        !self.pending_flush.is_empty()
    }

    /// Runs every peer's timers at `now` (call every 100–250 ms): handshake
    /// retransmits and rekeys, keepalives, persistent keepalives; resets the
    /// shared handshake rate limiter once a second. Returns the datagrams to
    /// send.
    pub fn poll_timers(&mut self, now: Instant) -> Vec<OwnedTransmit> {
        let reset_due = match self.last_rate_reset {
            None => true,
            Some(last) => {
                now.checked_duration_since(last).unwrap_or(Duration::ZERO) >= Duration::from_secs(1)
            }
        };
        if reset_due {
            self.peers.rate_limiter().reset_count();
            self.handshakes_this_second = 0;
            self.last_rate_reset = Some(now);
        }
        self.limiter.collect(now);
        let mut sends = Vec::new();
        let scratch = &mut self.scratch;
        let rekey_after = self.rekey_after;
        for peer in self.peers.iter_mut() {
            let mut out: Vec<Vec<u8>> = Vec::new();
            if let TunnResult::WriteToNetwork(d) = peer.tunn.update_timers(scratch) {
                out.push(d.to_vec());
            }
            let rekey_due = rekey_after < REKEY_AFTER_TIME
                && peer.initiated_session
                && peer.stats.last_handshake.is_some_and(|at| {
                    now.checked_duration_since(at).unwrap_or(Duration::ZERO) >= rekey_after
                });
            if rekey_due && peer.endpoint.is_some() {
                // Not forced: nothing is sent while a handshake is under way.
                if let TunnResult::WriteToNetwork(d) =
                    peer.tunn.format_handshake_initiation(scratch, false)
                {
                    out.push(d.to_vec());
                }
            }
            if peer.endpoint.is_some() && peer.take_keepalive_due(now) {
                if let TunnResult::WriteToNetwork(d) = peer.tunn.encapsulate(&[], scratch) {
                    out.push(d.to_vec());
                }
            }
            let Some(endpoint) = peer.endpoint else {
                continue;
            };
            for datagram in out {
                peer.stats.tx_bytes += datagram.len() as u64;
                if datagram.first() == Some(&MSG_INIT) {
                    peer.stats.handshake_initiations_sent += 1;
                }
                sends.push(OwnedTransmit {
                    peer: peer.id,
                    endpoint,
                    datagram,
                });
            }
        }
        sends
    }
}

#[cfg(test)]
mod tests;
