//! `nomad_iis run JOBFILE`. Placeholder: filled in by its owner.

use std::ffi::OsString;
use std::process::ExitCode;

pub fn main(_args: &[OsString]) -> ExitCode {
    ExitCode::FAILURE
}
