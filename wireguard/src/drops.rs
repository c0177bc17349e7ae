//! Why the engine dropped a packet or datagram ([`DropReason`]) and what
//! it counted for the whole interface ([`EngineStats`]).

use boringtun::noise::errors::WireGuardError;

/// Why a packet or datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// From the TUN: not an IPv4 or IPv6 packet.
    NotIp,
    /// From the TUN: no peer's allowed IPs hold the destination.
    NoRoute,
    /// The peer has no endpoint to send to yet.
    NoEndpoint,
    /// The output buffer is too small for this packet.
    BufferTooSmall,
    /// Not a well-formed WireGuard message.
    Malformed,
    /// A handshake initiation from a key that is not a peer.
    UnknownPeer,
    /// A message whose receiver index is no peer's.
    UnknownIndex,
    /// Failed authentication (MAC, AEAD tag, key, timestamp).
    Unauthenticated,
    /// A replayed or too old data message.
    Replayed,
    /// A message that does not fit the handshake state (e.g. a response to
    /// no initiation, data for no session).
    Unexpected,
    /// A handshake refused under load without a sender address.
    UnderLoad,
    /// The peer's handshake attempts expired.
    Expired,
    /// Decrypted, but its source address is not among the peer's allowed IPs.
    SourceNotAllowed,
    /// A handshake initiation with a valid cookie, under load, from a source
    /// address that used up its share (see [`crate::ratelimit`]).
    RateLimited,
    /// A handshake initiation with a valid cookie, under load, from a new
    /// source address while the per-source table is full.
    RateLimiterFull,
}

impl DropReason {
    pub(crate) fn from_wg(e: &WireGuardError) -> Self {
        use WireGuardError as E;
        match e {
            E::InvalidMac
            | E::InvalidAeadTag
            | E::WrongKey
            | E::WrongIndex
            | E::InvalidTai64nTimestamp
            | E::WrongTai64nTimestamp => Self::Unauthenticated,
            E::DuplicateCounter | E::InvalidCounter => Self::Replayed,
            E::UnexpectedPacket | E::NoCurrentSession | E::WrongPacketType => Self::Unexpected,
            E::UnderLoad => Self::UnderLoad,
            E::ConnectionExpired => Self::Expired,
            E::DestinationBufferTooSmall => Self::BufferTooSmall,
            E::IncorrectPacketLength | E::InvalidPacket | E::LockFailed => Self::Malformed,
        }
    }

    /// Every reason, in the order of [`EngineStats`]'s fields.
    pub const ALL: [DropReason; 15] = [
        Self::NotIp,
        Self::NoRoute,
        Self::NoEndpoint,
        Self::BufferTooSmall,
        Self::Malformed,
        Self::UnknownPeer,
        Self::UnknownIndex,
        Self::Unauthenticated,
        Self::Replayed,
        Self::Unexpected,
        Self::UnderLoad,
        Self::Expired,
        Self::SourceNotAllowed,
        Self::RateLimited,
        Self::RateLimiterFull,
    ];

    /// A short snake_case name (a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotIp => "not_ip",
            Self::NoRoute => "no_route",
            Self::NoEndpoint => "no_endpoint",
            Self::BufferTooSmall => "buffer_too_small",
            Self::Malformed => "malformed",
            Self::UnknownPeer => "unknown_peer",
            Self::UnknownIndex => "unknown_index",
            Self::Unauthenticated => "unauthenticated",
            Self::Replayed => "replayed",
            Self::Unexpected => "unexpected",
            Self::UnderLoad => "under_load",
            Self::Expired => "expired",
            Self::SourceNotAllowed => "source_not_allowed",
            Self::RateLimited => "rate_limited",
            Self::RateLimiterFull => "rate_limiter_full",
        }
    }

    /// Whether the drop concerns a datagram from the network that failed
    /// checks (as opposed to a local packet with nowhere to go).
    pub fn is_invalid_datagram(self) -> bool {
        matches!(
            self,
            Self::Malformed
                | Self::UnknownPeer
                | Self::UnknownIndex
                | Self::Unauthenticated
                | Self::Replayed
                | Self::Unexpected
                | Self::SourceNotAllowed
        )
    }
}

/// Counters for the whole interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Packets from the TUN that were not IP.
    pub not_ip: u64,
    /// Packets from the TUN for no peer.
    pub no_route: u64,
    /// Packets for a peer without an endpoint.
    pub no_endpoint: u64,
    /// Packets or datagrams too large for the buffer given.
    pub buffer_too_small: u64,
    /// Datagrams that were not WireGuard messages.
    pub malformed: u64,
    /// Handshake initiations from unknown keys.
    pub unknown_peer: u64,
    /// Messages for unknown receiver indices.
    pub unknown_index: u64,
    /// Messages that failed authentication.
    pub unauthenticated: u64,
    /// Replayed data messages.
    pub replayed: u64,
    /// Messages out of handshake order.
    pub unexpected: u64,
    /// Handshakes refused under load because they came without a sender
    /// address (never, from the device: it always has one; a flood shows
    /// as `cookie_replies` and `rate_limited` instead).
    pub under_load: u64,
    /// Packets for peers whose handshakes expired.
    pub expired: u64,
    /// Decrypted packets whose source is not the peer's.
    pub source_not_allowed: u64,
    /// Handshake initiations with a valid cookie dropped under load because
    /// their source address used up its share ([`crate::ratelimit`]).
    pub rate_limited: u64,
    /// Handshake initiations with a valid cookie dropped under load because
    /// the per-source table was full of other sources.
    pub rate_limiter_full: u64,
    /// Cookie replies sent (handshakes while under load).
    pub cookie_replies: u64,
    /// Of `unknown_peer`: initiations recognized as from an unknown key
    /// without a Diffie-Hellman (seen before).
    pub unknown_peer_replays: u64,
    /// Not a counter: the source addresses the handshake limiter tracks at
    /// the time of the snapshot (filled in by `Device::stats`; at
    /// most [`crate::ratelimit::MAX_SOURCES`]).
    pub rate_limiter_sources: u64,
}

impl EngineStats {
    /// Datagrams from the network that failed a check (every reason for
    /// which [`DropReason::is_invalid_datagram`] holds).
    pub fn invalid_datagrams(&self) -> u64 {
        self.malformed
            + self.unknown_peer
            + self.unknown_index
            + self.unauthenticated
            + self.replayed
            + self.unexpected
            + self.source_not_allowed
    }

    pub(crate) fn count(&mut self, reason: DropReason) {
        let c = match reason {
            DropReason::NotIp => &mut self.not_ip,
            DropReason::NoRoute => &mut self.no_route,
            DropReason::NoEndpoint => &mut self.no_endpoint,
            DropReason::BufferTooSmall => &mut self.buffer_too_small,
            DropReason::Malformed => &mut self.malformed,
            DropReason::UnknownPeer => &mut self.unknown_peer,
            DropReason::UnknownIndex => &mut self.unknown_index,
            DropReason::Unauthenticated => &mut self.unauthenticated,
            DropReason::Replayed => &mut self.replayed,
            DropReason::Unexpected => &mut self.unexpected,
            DropReason::UnderLoad => &mut self.under_load,
            DropReason::Expired => &mut self.expired,
            DropReason::SourceNotAllowed => &mut self.source_not_allowed,
            DropReason::RateLimited => &mut self.rate_limited,
            DropReason::RateLimiterFull => &mut self.rate_limiter_full,
        };
        *c += 1;
    }

    /// The count of drops for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::NotIp => self.not_ip,
            DropReason::NoRoute => self.no_route,
            DropReason::NoEndpoint => self.no_endpoint,
            DropReason::BufferTooSmall => self.buffer_too_small,
            DropReason::Malformed => self.malformed,
            DropReason::UnknownPeer => self.unknown_peer,
            DropReason::UnknownIndex => self.unknown_index,
            DropReason::Unauthenticated => self.unauthenticated,
            DropReason::Replayed => self.replayed,
            DropReason::Unexpected => self.unexpected,
            DropReason::UnderLoad => self.under_load,
            DropReason::Expired => self.expired,
            DropReason::SourceNotAllowed => self.source_not_allowed,
            DropReason::RateLimited => self.rate_limited,
            DropReason::RateLimiterFull => self.rate_limiter_full,
        }
    }
}
