//! The `geoedge` binary's end-to-end tests, one test binary (`cargo test
//! --test e2e`): each module is one file of tests against real `geoedge`
//! processes, named after what it covers; `cargo test --test e2e faults::`
//! runs one of them. The scaffolding they share (the geoedge process,
//! backends, namespaces, skip reasons, `sqlite3`) is the test kit
//! (`src/tests/kit`, crate `geoedge-testkit`), which each module takes as
//! `support`.
//!
//! One binary links the dependency tree once instead of once a file. Its
//! tests run in parallel threads like any test binary's; those that must not
//! share the machine (several geoedge processes, floods, load with timed
//! criteria) take the kit's `HEAVY` lock, so they run one at a time across
//! all modules.

mod access_log;
mod admin;
mod backends;
mod check_host;
mod cli;
mod client_limits;
mod deploy;
mod docs;
mod edge;
mod engine;
mod faults;
mod fleet;
mod health;
mod lab;
mod lifecycle;
mod metrics;
mod sni;
mod wireguard;
mod wireguard_pop;
