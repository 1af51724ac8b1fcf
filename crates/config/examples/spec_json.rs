//! Prints the JSON form of the task or driver spec for the Go golden tool:
//! `cargo run -p nomad-iis-config --example spec_json -- task|driver`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let spec = match std::env::args().nth(1).as_deref() {
        Some("task") => config::TaskConfig::spec(),
        Some("driver") => config::DriverConfig::spec(),
        _ => {
            eprintln!("usage: spec_json task|driver");
            return ExitCode::from(2);
        }
    };
    let json = nomad_plugin::hclspec::to_json(&spec);
    let written = serde_json::to_string_pretty(&json)
        .map_err(std::io::Error::other)
        .and_then(|text| writeln!(std::io::stdout(), "{text}"));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spec_json: {e}");
            ExitCode::FAILURE
        }
    }
}
