//! geoedge-geoip's integration tests, one test binary (`cargo test -p
//! geoedge-geoip --test geoip`): a module a file. `fixture_writer` and
//! `live_reload` need the `fixture-writer` feature (`--all-features`).

mod bad_input;
mod common;
mod fixture_lookup;
#[cfg(feature = "fixture-writer")]
mod fixture_writer;
#[cfg(feature = "fixture-writer")]
mod live_reload;
mod real_db;
