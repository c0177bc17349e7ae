//! The command line: subcommands and their arguments (clap), dispatched to
//! the command modules.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Layer, Settings};

/// geoedge: a geo-aware TCP edge proxy.
#[derive(Debug, Parser)]
#[command(name = "geoedge", version, about)]
pub struct Cli {
    /// TOML settings file; every key is also a flag and a GEOEDGE_* variable.
    #[arg(long, env = "GEOEDGE_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Settings shared by the commands.
    #[command(flatten)]
    pub settings: Layer,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print, as JSON, the decision a fresh client from IP would get, with every candidate scored.
    Route {
        /// The client address.
        ip: IpAddr,
    },
    /// Create and check routing.db files.
    #[command(subcommand)]
    Db(DbCommand),
}

/// `geoedge db …`
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create a routing.db with the schema and a sample region and country map and backends.
    Init {
        /// The file to create (must not exist).
        path: PathBuf,
        /// Create only the schema, with no sample rows.
        #[arg(long)]
        empty: bool,
    },
    /// Validate a routing.db; exit non-zero and list every row-level error when invalid.
    Check {
        /// The file to check.
        path: PathBuf,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = || Settings::resolve(cli.settings.clone(), cli.config.as_deref());
    match &cli.command {
        Command::Route { ip } => crate::route_cmd::run(&settings()?, *ip),
        Command::Db(DbCommand::Init { path, empty }) => crate::db_cmd::init(path, !*empty),
        Command::Db(DbCommand::Check { path }) => crate::db_cmd::check(path),
    }
}
