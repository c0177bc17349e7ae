//! The `geoedge` binary: parses the command line and runs the command
//! (the library, `src/lib.rs`, does the rest).

use geoedge::commands::cli;
use geoedge::control::{config, logging};

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc for the worker threads' short-lived
/// per-connection allocations: 1.0% of a proxy-bound worker's CPU on new
/// connections where glibc's took 1.8% (docs/benchmarks.md, "Where
/// geoedge's time goes", issue 22).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse_args();
    // Before any thread uses SQLite: its opens never wait on a FIFO.
    geoedge_routing::loader::nonblocking_opens();
    if !cli.long_running() {
        // A one-shot command piped into `head` ends quietly when the pipe
        // closes, as other command-line tools do, instead of failing to
        // print. (The servers keep SIGPIPE ignored: a client closing its
        // socket must only fail that write.)
        // SAFETY: setting a signal's disposition to its default before any
        // thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
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
