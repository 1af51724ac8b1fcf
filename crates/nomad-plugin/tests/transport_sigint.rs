//! `ignore_sigint` in its own test binary, because it changes the whole process's SIGINT
//! disposition and a failure kills the process.

use std::time::Duration;

use nomad_plugin::transport::{TransportError, ignore_sigint};

/// SIGINT's bit in the `/proc/<pid>/status` signal masks (signal n is bit n - 1).
const SIGINT_BIT: u64 = 1 << 1;

/// Reads one hexadecimal signal mask line (`SigCgt`, `SigPnd`, `ShdPnd`) of this process.
fn signal_mask(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{name} missing from /proc/self/status"));
    u64::from_str_radix(value.trim(), 16).expect("hex mask")
}

#[test]
fn ignoring_sigint_needs_a_runtime() {
    assert!(matches!(
        ignore_sigint(),
        Err(TransportError::NoRuntime { .. })
    ));
}

#[tokio::test]
async fn sigint_is_caught_and_does_not_end_the_process() {
    ignore_sigint().expect("handler installed");
    assert_ne!(
        signal_mask("SigCgt") & SIGINT_BIT,
        0,
        "SIGINT is not caught"
    );

    let status = std::process::Command::new("kill")
        .arg("-INT")
        .arg(std::process::id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());

    // Wait until the signal is no longer pending, i.e. it has been delivered to the handler;
    // reaching the assertion below at all shows the process survived it.
    while (signal_mask("SigPnd") | signal_mask("ShdPnd")) & SIGINT_BIT != 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_ne!(signal_mask("SigCgt") & SIGINT_BIT, 0);
}
