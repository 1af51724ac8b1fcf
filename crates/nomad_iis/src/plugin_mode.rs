//! Plugin mode (started by Nomad) and the `host` subcommand. Placeholder: filled in by its owner.

use std::ffi::OsString;
use std::process::ExitCode;

pub fn print_usage() {}

pub fn main(_args: &[OsString]) -> ExitCode {
    ExitCode::FAILURE
}

pub fn host_main(_args: &[OsString]) -> ExitCode {
    ExitCode::FAILURE
}
