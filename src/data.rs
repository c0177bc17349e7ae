//! The data plane: everything on one client connection's path, from the
//! accept to the last byte relayed. Depends on the member crates only,
//! never on [`crate::control`] or [`crate::commands`]; what it counts it
//! keeps in counters of its own ([`conn_stats`]) that the metrics exporter
//! reads.

pub mod admission;
pub mod conn_stats;
pub mod dialer;
pub mod event_loop;
pub mod health_log;
pub mod lease_wait;
pub mod pair;
pub mod per_client;
pub mod proxy;
pub use geoedge_proxy_protocol as proxy_protocol;
pub mod relay;
pub mod splice;
pub mod throttle;
