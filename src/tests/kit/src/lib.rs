//! The scaffolding geoedge's tests share, written once: network namespaces
//! and veth pairs ([`netns`]), why a test skips ([`mod@skip`]), the
//! `sqlite3`, `ip` and other commands ([`cmd`]), the `geoedge` process
//! ([`process`]), echo backends and PROXY clients ([`backend`]), HTTP
//! scrapes of the metrics listener ([`http`]), real `nats-server`s
//! ([`nats`]), TCP/IP packet builders ([`packet`]), the WireGuard handshake
//! flooder (`handshake_flood`, feature `wireguard`) and the lock the heavy
//! tests take ([`HEAVY`]).
//!
//! Everything is re-exported at the top, so a test file says
//! `use geoedge_testkit::*;`. The kit is a dev-dependency only. Without its
//! default feature `io` it is [`packet`] and [`alloc`] (a counting global
//! allocator) alone, with no dependencies (what the fuzz targets take).

pub mod alloc;
#[cfg(feature = "io")]
pub mod backend;
#[cfg(feature = "io")]
pub mod cmd;
#[cfg(feature = "wireguard")]
pub mod handshake_flood;
#[cfg(feature = "io")]
pub mod http;
#[cfg(feature = "io")]
pub mod nats;
#[cfg(feature = "io")]
pub mod netns;
pub mod packet;
#[cfg(feature = "io")]
pub mod process;
#[cfg(feature = "io")]
pub mod skip;

#[cfg(feature = "io")]
pub use backend::*;
#[cfg(feature = "io")]
pub use cmd::*;
#[cfg(feature = "io")]
pub use http::*;
#[cfg(feature = "io")]
pub use nats::*;
#[cfg(feature = "io")]
pub use netns::*;
#[cfg(feature = "io")]
pub use process::*;
#[cfg(feature = "io")]
pub use skip::*;

/// Held by the tests that must not share the machine with each other:
/// those that run several geoedge processes, floods or load whose pass
/// criteria are times or CPU shares. One lock for the whole test binary, so
/// tests from different files of it never overlap either. Take it with
/// `HEAVY.lock().await` in async tests and `HEAVY.blocking_lock()` in
/// plain ones; a failed test does not poison it.
#[cfg(feature = "io")]
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until `cond` holds, looking every 10 ms. A test whose condition
/// never comes panics with `what()` once `give_up` has passed: a guard
/// against a hang, not a timing target (give it generously).
#[cfg(feature = "io")]
pub async fn until(
    what: impl FnOnce() -> String,
    give_up: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) {
    let waited = tokio::time::timeout(give_up, async {
        while !cond() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    if waited.is_err() {
        panic!("{}", what());
    }
}
