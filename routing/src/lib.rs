//! geoedge's routing core: the routing.db schema, the live routing table,
//! proximity-and-load scoring, and sticky bindings.
//!
//! The cores do no IO and read no clock: [`snapshot`] validation,
//! [`diff`], [`score`], [`bindings`], [`health`] and [`router`] take rows,
//! locations, results and `now` as arguments, so they are unit-tested, property-tested and
//! fuzzed without a runtime. The adapters sit at the edge behind the
//! `sqlite` feature: [`loader`] reads and creates routing.db files with
//! rusqlite, [`migrate`] upgrades older ones to the current schema, and
//! [`watcher`] reloads one when it changes.
//!
//! The edge proxy calls [`Router::decide`] for every connection; the returned
//! [`Reservation`] counts the connection against its backend until dropped.
//!
//! No unsafe code outside [`loader`], which installs a non-blocking `open`
//! into SQLite's VFS through its C interface: `unsafe_code` is denied in
//! every other module, and forbidden outright in a build without `sqlite`
//! (the sans-IO core).

#![cfg_attr(not(feature = "sqlite"), forbid(unsafe_code))]
#![cfg_attr(feature = "sqlite", deny(unsafe_code))]

pub mod bindings;
pub mod builtin;
pub mod connect;
pub mod diff;
pub mod global;
pub mod health;
pub mod model;
pub mod peer_key;
pub mod raw;
pub mod raw_diff;
pub mod router;
pub mod row_error;
pub mod score;
pub mod shard;
pub mod snapshot;
pub mod table;
pub mod wg_peers;

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(feature = "sqlite")]
#[allow(unsafe_code)] // SQLite's VFS hook (see the module)
pub mod loader;
#[cfg(feature = "sqlite")]
pub mod migrate;
#[cfg(feature = "sqlite")]
pub mod triggers;
#[cfg(feature = "sqlite")]
pub mod watcher;

pub use bindings::{
    BindingConfig, BindingInfo, BindingKey, BindingStats, Bindings, ExportedBinding,
};
pub use connect::{ConnectFailure, ConnectHistogram, ConnectStats, CONNECT_BUCKETS_SECONDS};
pub use diff::SnapshotDiff;
pub use health::{BackendHealth, CheckStats, HealthChange, HealthConfig, HealthState};
pub use model::{AppId, Backend, BackendId, BackendLoad, PopId, Region, RegionId};
pub use peer_key::{PeerKey, PeerKeyError};
pub use raw::RawTable;
pub use router::{
    Candidate, DecisionKind, DecisionStats, Explanation, NoRoute, Request, Route, Router,
    SpreadShare,
};
pub use score::{Placement, Tier, WhyNot};
pub use snapshot::{AppLimits, InvalidTable, RowError, Snapshot};
pub use table::{Applied, RejectReason, Rejected, ReloadStats, Reservation, RoutingTable};
pub use wg_peers::{Endpoint, WgPeer};
