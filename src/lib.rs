//! geoedge as a library: the edge of one point of presence.
//!
//! Three layers, each a folder, with dependencies pointing one way
//! (`commands` → `control` → `data`; the member crates `geoedge-routing`,
//! `geoedge-geoip` and `geoedge-wireguard` below all three):
//!
//! - [`data`]: the data plane, one client connection's path: admission,
//!   the PROXY protocol, the connection pipeline, dialing, the relay and
//!   splice. It reports through counters it owns and knows nothing of the
//!   control plane or the metrics exporter.
//! - [`control`]: the control plane: settings, the process's life
//!   (signals, reloads, stop), worker threads, readiness, active health
//!   checks, sd_notify, logging and the metrics exporter.
//! - [`commands`]: the command line and each command (`run`, `demo`,
//!   `route`, `db`, `probe`, `wg`, `check-host`).
//!
//! The binary (`src/main.rs`) parses the command line and hands it to
//! [`commands::cli::run`]. docs/architecture.md has the folder map.

pub mod commands;
pub mod control;
pub mod data;
