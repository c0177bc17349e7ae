//! The control plane: settings (flags, environment, file) and their live
//! half, the process's life (signals, reloads, draining stop), the worker
//! threads that run the data plane, readiness, active health checks,
//! sd_notify, logging, the Prometheus exporter, and the fleet's routing
//! table on NATS JetStream (publish and follow). Uses [`crate::data`];
//! never [`crate::commands`].

pub mod active_checks;
pub mod admin;
pub mod bindings_file;
pub mod config;
pub mod fleet;
pub mod handover;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod readiness;
pub mod sd_notify;
pub mod secret_file;
pub mod table_events;
pub mod takeover;
pub mod workers;
