//! Running one child program as its supervisor (`exec`): a set of signals
//! taken as ordinary code with `sigwaitinfo`, `kill` to pass them on, the
//! child subreaper flag, and `waitpid(-1, WNOHANG)` to reap every child.
//!
//! A container's first process is PID 1: the kernel gives it no default
//! signal actions and re-parents every orphan to it, so a supervisor that
//! neither forwards signals nor reaps leaves `docker stop` waiting and
//! zombies piling up. Which signals to forward and what status to exit with
//! is the caller's policy; these wrappers only report what the kernel said.
//!
//! The child must not inherit the blocked mask, and std's `Command` passes
//! it on: [`unblock_signals_in_child`] empties it between fork and exec.

use std::io;

pub use libc::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH};

/// A set of signals.
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    pub fn new(signals: &[i32]) -> SignalSet {
        // SAFETY: a zeroed sigset_t is plain memory that sigemptyset then
        // initialises; sigaddset only reads the number (an invalid one is
        // refused with EINVAL and leaves the set as it was).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &signal in signals {
                libc::sigaddset(&mut set, signal);
            }
            SignalSet(set)
        }
    }

    /// Blocks the set in the calling thread, and so in every thread it
    /// spawns afterwards: call before any other thread exists, so that only
    /// [`SignalSet::wait`] takes these signals.
    pub fn block(&self) -> io::Result<()> {
        // SAFETY: `self.0` is an initialised signal set; the old mask is not
        // asked for.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }

    /// Waits for one signal of the set (blocked beforehand) and returns its
    /// number. Pending signals are taken one at a time; a wait cut short by
    /// another signal's handler (`EINTR`) is resumed.
    pub fn wait(&self) -> i32 {
        loop {
            // SAFETY: `self.0` is an initialised signal set; a null info
            // pointer is allowed.
            let signal = unsafe { libc::sigwaitinfo(&self.0, std::ptr::null_mut()) };
            if signal > 0 {
                return signal;
            }
        }
    }
}

/// Makes this process the reaper of its descendants' orphans, as PID 1 is
/// (`PR_SET_CHILD_SUBREAPER`), so that grandchildren whose parent exits are
/// re-parented here and reaped by [`reap`] even when this is not PID 1.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `signal` to the process `pid`.
pub fn send(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill takes plain integers; a positive pid names one process.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `signal` to this process itself: with the signal blocked in every
/// thread it stays pending until [`SignalSet::wait`] takes it, which makes
/// it a wake-up for the waiting thread.
pub fn send_self(signal: i32) -> io::Result<()> {
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    send(pid.unsigned_abs(), signal)
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it.
    Killed(i32),
}

/// Reaps one child that has ended, without waiting: its pid and how it
/// ended, or `None` when no child has ended (or there are none).
pub fn reap() -> io::Result<Option<(u32, Ended)>> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a live c_int for waitpid to write.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid == 0 {
            return Ok(None);
        }
        if pid < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => return Ok(None),
                _ => return Err(e),
            }
        }
        let ended = if libc::WIFSIGNALED(status) {
            Ended::Killed(libc::WTERMSIG(status))
        } else if libc::WIFEXITED(status) {
            Ended::Exited(libc::WEXITSTATUS(status))
        } else {
            // Stopped or continued: only reported with WUNTRACED/WCONTINUED,
            // which are not asked for.
            continue;
        };
        return Ok(Some((pid.unsigned_abs(), ended)));
    }
}

// No unit test: `reap` takes any child of the process, which would steal
// those of the other tests running beside it. tests/integration/test_exec.py
// covers it (exit statuses, signals, zombies under a PID namespace).

/// Makes `command`'s child start with no signal blocked: a process started
/// from a thread that blocks signals (as a supervisor's do, for
/// [`SignalSet::wait`]) would otherwise inherit the mask across `exec`, and a
/// program that never unblocks them would never get SIGTERM. std's `Command`
/// keeps the mask (checked by the agent's `exec` tests).
pub fn unblock_signals_in_child(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let none = SignalSet::new(&[]);
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: sigprocmask is one, on a set built
    // beforehand (copied into the closure), and it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::sigprocmask(libc::SIG_SETMASK, &none.0, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
