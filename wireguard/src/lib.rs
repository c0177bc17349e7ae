//! geoedge's WireGuard backhaul: a userspace WireGuard interface built on
//! boringtun's `noise::Tunn`, driven by geoedge's own loop.
//!
//! The cores are sans-IO and read no clock (time is passed in):
//! - [`key`] parses, generates and derives Curve25519 keys in the formats of
//!   the `wg` tool;
//! - [`allowed_ips`] is the longest-prefix-match table of cryptokey routing;
//! - [`peer`] and [`peers`] hold each peer's configuration, `Tunn` and
//!   counters, and reconcile the table with a desired configuration;
//! - [`engine`] is the datapath: TUN packets to datagrams and back, timers;
//! - [`ratelimit`] bounds the handshake work one source address can cause;
//! - [`gro`] merges decrypted TCP segments into super-packets for a TUN
//!   with offload;
//! - [`uapi`] is the text of the `wg` configuration protocol.
//!
//! With the `io` feature, [`device`] runs an interface: a TUN, a UDP socket
//! and the configuration socket `wg show` talks to, on tokio.
//!
//! Unsafe code lives only in the `io` adapters that call the C library
//! directly (the UDP socket's forced buffer sizes and the configuration
//! socket's umask),
//! each allowed it by name where this file declares it; `unsafe_code` is denied everywhere
//! else, the cores included.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod allowed_ips;
#[cfg(feature = "io")]
pub mod device;
mod drops;
pub mod engine;
pub mod gro;
pub mod key;
pub mod peer;
pub mod peers;
pub mod ratelimit;
pub mod uapi;
#[cfg(feature = "io")]
#[allow(unsafe_code)] // setsockopt: SO_RCVBUFFORCE and SO_SNDBUFFORCE
mod udp;

pub use allowed_ips::AllowedIps;
#[cfg(feature = "io")]
pub use device::{Device, DeviceConfig, DeviceError, TunSetup};
pub use engine::{Action, DropReason, Engine, EngineStats, OwnedTransmit, Transmit};
pub use key::{KeyError, PrivateKey, PublicKey};
pub use peer::{InterfaceConfig, Peer, PeerConfig, PeerId, PeerStats};
pub use peers::{ConfigError, Peers, Reconciled};
