//! TCP ports for tests that must name one before anything listens on it (a Nomad port mapping,
//! a static `port = N` in a job, `nomad_iis run --port`).
//!
//! Binding port 0 and releasing it races: until the host binds it, the kernel may hand the same
//! ephemeral port to any other `bind(0)` or outgoing connection of the tests running in
//! parallel. These ports come from below the kernel's ephemeral range instead, which it never
//! hands out by itself, and test processes running at the same time agree on them through a
//! reservation: an abstract unix socket named after the port, held until the process exits
//! (the kernel drops it then, so nothing is left behind even when a test fails).

#![allow(dead_code)]

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::sync::Mutex;

/// Ports handed out here: below Linux's default ephemeral range (32768–60999).
const RANGE: std::ops::Range<u16> = 20_000..32_000;

/// Reservations held by this process.
static HELD: Mutex<Vec<UnixListener>> = Mutex::new(Vec::new());

/// A port no other test holds and nothing listens on, reserved for the rest of this process.
pub fn free_port() -> u16 {
    let span = u32::from(RANGE.end - RANGE.start);
    // Start where another process is unlikely to: spread by pid and time.
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for step in 0..span {
        let port = RANGE.start + ((seed.wrapping_add(step)) % span) as u16;
        let Ok(name) = SocketAddr::from_abstract_name(format!("nomad_iis-test-port-{port}")) else {
            continue;
        };
        let Ok(reservation) = UnixListener::bind_addr(&name) else {
            continue; // another test process holds it
        };
        // Something outside the tests (a service) may listen there already: a port reserved
        // here that cannot be bound is kept reserved and skipped.
        let usable = std::net::TcpListener::bind(("0.0.0.0", port)).is_ok();
        HELD.lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(reservation);
        if usable {
            return port;
        }
    }
    panic!("no free test port in {RANGE:?}");
}
