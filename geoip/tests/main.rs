//! geoedge-geoip's integration tests, one test binary (`cargo test -p
//! geoedge-geoip --test geoip`): a module a file. The mmdb tests need the
//! `mmdb` feature (a default one); `fixture_writer` and `live_reload` the
//! `fixture-writer` feature (`--all-features`).

#[cfg(feature = "mmdb")]
mod bad_input;
#[cfg(feature = "mmdb")]
mod common;
#[cfg(feature = "mmdb")]
mod fixture_lookup;
#[cfg(feature = "fixture-writer")]
mod fixture_writer;
#[cfg(feature = "fixture-writer")]
mod live_reload;
#[cfg(feature = "mmdb")]
mod real_db;
