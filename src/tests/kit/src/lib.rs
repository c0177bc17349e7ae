//! The scaffolding geoedge's tests share, written once: network namespaces
//! and veth pairs ([`netns`]), why a test skips ([`skip`]), the `sqlite3`,
//! `ip` and other commands ([`cmd`]), the `geoedge` process ([`process`]),
//! echo backends and PROXY clients ([`backend`]), HTTP scrapes of the
//! metrics listener ([`http`]), TCP/IP packet builders ([`packet`]) and the
//! lock the heavy tests take ([`HEAVY`]).
//!
//! Everything is re-exported at the top, so a test file says
//! `use geoedge_testkit::*;`. The kit is a dev-dependency only.

pub mod backend;
pub mod cmd;
pub mod http;
pub mod netns;
pub mod packet;
pub mod process;
pub mod skip;

pub use backend::*;
pub use cmd::*;
pub use http::*;
pub use netns::*;
pub use process::*;
pub use skip::*;

/// Held by the tests that must not share the machine with each other:
/// those that run several geoedge processes, floods or load whose pass
/// criteria are times or CPU shares. One lock for the whole test binary, so
/// tests from different files of it never overlap either. Take it with
/// `HEAVY.lock().await` in async tests and `HEAVY.blocking_lock()` in
/// plain ones; a failed test does not poison it.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
