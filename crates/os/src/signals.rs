//! SIGTERM and SIGINT, taken as ordinary code instead of in a handler.
//!
//! As PID 1 in a container the agent gets no default signal handling, so
//! without this `docker stop` and Kubernetes would wait out their grace period
//! and kill it. The signals are blocked in every thread and taken by one
//! thread with `sigwait`, so the exit path runs as ordinary code, not inside a
//! signal handler.

use std::io;

fn termination_signals() -> libc::sigset_t {
    // SAFETY: plain signal-set manipulation on a local, zero-initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks SIGTERM and SIGINT in this thread and so in every thread spawned
/// after it. Call before any other thread is started.
pub fn block_termination() -> io::Result<()> {
    let set = termination_signals();
    // SAFETY: `set` is a valid signal set; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits until SIGTERM or SIGINT (blocked beforehand by
/// [`block_termination`]) arrives and returns its number.
pub fn wait_for_termination() -> i32 {
    let set = termination_signals();
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` is a valid signal set; `signal` is written by sigwait.
    while unsafe { libc::sigwait(&set, &mut signal) } != 0 {}
    signal
}
