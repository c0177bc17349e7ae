//! The `geoedge` binary: command-line parsing and the glue between the
//! routing core, GeoIP and (in later commands) the network.

mod check_host;
mod cli;
mod config;
mod db_cmd;
mod demo;
mod dialer;
mod health;
mod logging;
mod metrics;
mod proxy;
mod proxy_protocol;
mod relay;
mod route_cmd;
mod run_cmd;
mod splice;
mod throttle;
mod wg;
mod wg_key;
mod workers;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(
        cli.default_log_level(),
        config::early_log_format(&cli.settings, cli.config.as_deref()),
    );
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("geoedge: {e:#}");
            ExitCode::from(2)
        }
    }
}
