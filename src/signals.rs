//! Clean exit on SIGTERM and SIGINT.
//!
//! As PID 1 in a container the agent gets no default signal handling, so
//! without this `docker stop` and Kubernetes would wait out their grace period
//! and kill it. The signals are blocked in every thread and taken by one
//! thread with `sigwait`, so the exit path runs as ordinary code, not inside a
//! signal handler.

use std::io;

/// Blocks SIGTERM and SIGINT in this thread (and so in every thread spawned
/// after it) and starts the thread that waits for them and runs `on_signal`.
/// Call before any other thread is started.
pub fn exit_on_termination(on_signal: impl FnOnce(i32) + Send + 'static) -> io::Result<()> {
    // SAFETY: plain signal-set manipulation on a local, zero-initialised set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        set
    };
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut signal: libc::c_int = 0;
            // SAFETY: `set` is a valid signal set; `signal` is written by sigwait.
            while unsafe { libc::sigwait(&set, &mut signal) } != 0 {}
            on_signal(signal);
        })?;
    Ok(())
}
