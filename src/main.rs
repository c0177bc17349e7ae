//! The `geoedge` binary: command-line parsing and the glue between the
//! routing core, GeoIP and (in later commands) the network.

mod cli;
mod config;
mod db_cmd;
mod route_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("geoedge: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr (stdout carries command output), filtered by `RUST_LOG`
/// (default `warn` for one-shot commands).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
