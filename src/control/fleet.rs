//! The fleet's routing table on NATS JetStream: one master routing.db,
//! published as numbered revisions, followed by every POP's edge.
//!
//! - [`revision`]: what a revision is (number, digest, who, when, rows);
//!   plain data, no IO.
//! - [`follower`]: what a following edge does with the current revision it
//!   sees (install, adopt, keep a hand edit, ignore an older one); no IO,
//!   no clock.
//! - [`status`]: each POP's report and how `geoedge db status` reads it
//!   (current, behind, silent, diverged); no IO, `now` passed in.
//! - [`file`](mod@file): routing.db files: a consistent copy of the master,
//!   its digest and validation, the install beside routing.db by rename, and
//!   the record of the installed revision.
//! - [`creds`]: reading a NATS credentials file (refused when group- or
//!   world-readable) and making users for the server's configuration.
//! - [`store`]: the NATS adapter: connect, the buckets, publish with
//!   compare-and-swap, the log, the status keys.
//! - [`follow`]: the task `geoedge run` runs to follow the current
//!   revision, and the counters its metrics read.
//! - [`lease`]: the task that lends this POP's backends' slots to the
//!   other edges and borrows theirs (core NATS `geoedge.lease.POP`), so a
//!   backend's hard limit holds across the fleet.
//! - [`load`]: the task that shares backend load with the other edges
//!   (core NATS subjects `geoedge.load.POP`), so scoring counts the
//!   fleet's connections against each soft limit.
//!
//! Layout in JetStream (one bucket name, [`FLEET_BUCKET`]): the key-value
//! bucket holds `current` (the current revision's record; moved only by
//! compare-and-swap), `rev.N` (each revision's record, for the log) and
//! `status.POP` (each POP's report); the object store holds the files,
//! named by their sha256, so a rollback points at the object it restores.
//!
//! [`FLEET_BUCKET`]: crate::control::config::defaults::FLEET_BUCKET

pub mod creds;
pub mod file;
pub mod follow;
pub mod follower;
pub mod lease;
pub mod load;
pub mod revision;
pub mod status;
pub mod store;

/// The key naming the current revision.
pub const CURRENT_KEY: &str = "current";
/// The prefix of each revision's record (`rev.12`).
pub const REVISION_KEY_PREFIX: &str = "rev.";
/// The prefix of each POP's status key (`status.fra`).
pub const STATUS_KEY_PREFIX: &str = "status.";
/// The prefix of the subjects edges publish their load on
/// (`geoedge.load.fra`).
pub const LOAD_SUBJECT_PREFIX: &str = "geoedge.load.";
/// The prefix of the subjects a POP answers lease requests on
/// (`geoedge.lease.fra`).
pub const LEASE_SUBJECT_PREFIX: &str = "geoedge.lease.";
