//! `nomad_iis`: a Nomad task driver that hosts web applications the IIS way, on Linux.
//!
//! This binary is glue. It picks a mode and hands over to the crates that do the work:
//! - a subcommand (`run`, `host`) wins over everything;
//! - otherwise, with Nomad's magic cookie in the environment, it runs as a driver plugin
//!   ([`plugin_mode`]);
//! - with neither, it explains itself on stderr and exits 1, as go-plugin plugins do.

#![forbid(unsafe_code)]

mod capture_engines;
mod management_args;
mod plugin_mode;
mod standalone;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Under Nomad stdout carries only the handshake, so help and version are answered for
    // people only; with the cookie they are plugin arguments (and rejected as such on stderr).
    let by_hand = !nomad_plugin::transport::launched_by_nomad();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("run") => standalone::main(&args[2..]),
        Some("host") => plugin_mode::host_main(&args[2..]),
        Some("-h" | "--help" | "help") if by_hand => {
            plugin_mode::print_usage();
            ExitCode::SUCCESS
        }
        Some("-V" | "--version" | "version") if by_hand => {
            use std::io::Write as _;
            // A closed stdout must not panic the binary.
            let _ = writeln!(std::io::stdout(), "nomad_iis {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => plugin_mode::main(&args[1..]),
    }
}
