//! Plugin mode (started by Nomad) and the `host` subcommand. Placeholder: filled in by its owner.

use std::ffi::OsString;
use std::process::ExitCode;

pub fn print_usage() {}

pub fn main(_args: &[OsString]) -> ExitCode {
    ExitCode::FAILURE
}

pub fn host_main(args: &[OsString]) -> ExitCode {
    // Interim wiring until the plugin-mode branch lands: `host --runtime-dir DIR`.
    match (args.first().and_then(|a| a.to_str()), args.get(1)) {
        (Some("--runtime-dir"), Some(dir)) => {
            let code = host::run_from_runtime_dir(std::path::Path::new(dir));
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        _ => ExitCode::FAILURE,
    }
}
