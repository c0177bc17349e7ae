//! Writes the sample database built from `SAMPLE_ENTRIES`.
//!
//! ```text
//! cargo run -p geoedge-geoip --features fixture-writer --example make_fixture -- geoip/fixtures/geoedge-sample.mmdb
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: make_fixture <output.mmdb>");
        return ExitCode::from(2);
    };
    let bytes = geoedge_geoip::fixture::build_sample();
    if let Err(e) = std::fs::write(&out, &bytes) {
        eprintln!("cannot write {}: {e}", out.to_string_lossy());
        return ExitCode::FAILURE;
    }
    println!("wrote {} ({} bytes)", out.to_string_lossy(), bytes.len());
    ExitCode::SUCCESS
}
