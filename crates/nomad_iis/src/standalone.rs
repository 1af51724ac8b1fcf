//! `nomad_iis run JOBFILE`: argument parsing for the standalone mode (the work is in crate
//! `standalone`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Runs the `iis` tasks of a Nomad job file on this machine, without Nomad.
#[derive(Debug, Parser)]
#[command(name = "nomad_iis run", version)]
struct RunArgs {
    /// A Nomad job file (HCL), or a file holding just the body of a task's `config {}` block.
    job_file: PathBuf,
    /// Give a port label a fixed port instead of a free one, e.g. `--port http=8080`.
    #[arg(long = "port", value_name = "LABEL=PORT", value_parser = parse_port)]
    ports: Vec<(String, u16)>,
    /// Where the hosts' runtime folders go (default: the temp folder).
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// Where the tasks' stdout (access log) goes instead of this console, e.g. a file or
    /// `/dev/null` (which turns the access log off).
    #[arg(long, value_name = "PATH")]
    stdout: Option<PathBuf>,
    /// The Management API over the tasks of this run.
    #[command(flatten)]
    management: crate::management_args::ManagementArgs,
    /// Allow process dumps through the Management API (they hold the process's secrets).
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, default_value_t = false)]
    procdump_accept_eula: bool,
}

fn parse_port(s: &str) -> Result<(String, u16), String> {
    let (label, port) = s
        .split_once('=')
        .ok_or_else(|| format!("expected LABEL=PORT, got {s:?}"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("{port:?} is not a port number (1-65535)"))?;
    if label.is_empty() || port == 0 {
        return Err(format!(
            "expected LABEL=PORT with a port from 1 to 65535, got {s:?}"
        ));
    }
    Ok((label.to_owned(), port))
}

pub fn main(args: &[OsString]) -> ExitCode {
    let argv = std::iter::once(OsString::from("nomad_iis run")).chain(args.iter().cloned());
    let parsed = match RunArgs::try_parse_from(argv) {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NOMAD_IIS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let host_binary = match std::env::current_exe() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("nomad_iis run: cannot find my own binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let management = match parsed.management.settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("nomad_iis run: {e}");
            return ExitCode::from(2);
        }
    };
    let options = standalone::RunOptions {
        management,
        procdump_accept_eula: parsed.procdump_accept_eula,
        capture: Some(crate::capture_engines::engines()),
        job_file: parsed.job_file,
        ports: parsed.ports.into_iter().collect::<BTreeMap<_, _>>(),
        runtime_root: parsed.runtime_dir,
        host_binary,
        stdout_path: parsed.stdout,
    };
    match standalone::run(options) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("nomad_iis run: {e:#}");
            ExitCode::FAILURE
        }
    }
}
