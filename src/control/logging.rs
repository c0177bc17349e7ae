//! Logs through `tracing` on stderr (stdout carries command output):
//! filtered by `RUST_LOG` (`info` by default for the long-running commands,
//! `warn` for one-shot ones), as text or as one JSON object per line
//! (`--log-format json`).
//!
//! What is logged where: each client connection runs in a `conn` span
//! carrying `client`, `country` and `backend`; its events are at debug.
//! Reloads are at info, refused reloads and failures at warn, and a failure
//! that repeats (a backend refusing every connect, an accept loop out of
//! descriptors) is logged once per interval with the count of the ones
//! suppressed in between (see [`crate::data::throttle`]).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::control::config::LogFormat;

/// Installs the global subscriber.
pub fn init(default_level: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Colours only on a terminal (never into journald or a file), and not
    // when NO_COLOR is set.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        // The current span's fields (client, country, backend) go with each
        // event; the whole span list would repeat them.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
