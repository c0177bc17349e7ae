//! The `geoedge` binary: command-line parsing and the glue between the
//! routing core, GeoIP and (in later commands) the network.

mod cli;
mod config;
mod db_cmd;
mod demo;
mod dialer;
mod proxy;
mod proxy_protocol;
mod relay;
mod route_cmd;
mod run_cmd;
mod wg;
mod wg_key;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.default_log_level());
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("geoedge: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr (stdout carries command output), filtered by `RUST_LOG`
/// (default `info` for `run` and `demo`, `warn` for one-shot commands).
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
