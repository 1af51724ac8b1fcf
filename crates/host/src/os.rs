//! The operating-system interface of worker processes that needs `unsafe`: the code that runs
//! in the forked child between `fork` and `exec`.
//!
//! This is the only module of the crate allowed `unsafe` (the crate root denies it everywhere
//! else). What runs in the child must be async-signal-safe: two raw system calls, no
//! allocation, no locks.

#![allow(unsafe_code)]

use nix::sys::signal::Signal;

/// Makes the child started by `command` receive SIGKILL when the host dies, however it dies
/// (kill -9 included), so no worker outlives its host.
///
/// Linux delivers the signal when the *thread* that forked the child exits. Workers are spawned
/// from the host's spawner thread (`worker::Spawner`), which lives as long as any pool; the
/// explicit stop at exit and `kill_on_drop` cover the orderly paths. If the host died between `fork` and the `prctl`
/// call, the child sees a different parent and exits at once.
pub(crate) fn die_with_host(command: &mut tokio::process::Command) {
    let host = nix::unistd::getpid();
    // SAFETY: the closure makes only the `prctl` and `getppid` system calls (both
    // async-signal-safe) and returns an error value built from a raw errno without
    // allocating, as `pre_exec` requires.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                .map_err(|errno| std::io::Error::from_raw_os_error(errno as i32))?;
            if nix::unistd::getppid() != host {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
