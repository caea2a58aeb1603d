//! Process-wide limits and signals to child processes.

use std::io;

/// A crash or `gcore` must not write cached secrets to disk: no core dumps,
/// and non-dumpable also keeps other processes of the same user from
/// attaching with ptrace or reading /proc/PID/mem. Both steps are tried
/// even if one fails (a sandbox may forbid either); returns what failed, for
/// the caller to report.
pub fn forbid_core_dumps() -> Vec<&'static str> {
    let mut failed = Vec::new();
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        failed.push("could not mark the process non-dumpable");
    }
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `none` is a valid rlimit that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
        failed.push("could not disable core dumps");
    }
    failed
}

/// Raises the soft open-file limit to the hard one. Idle keep-alive clients
/// each hold a descriptor; the default soft limit (often 1024) would cap them
/// well below what the hard limit allows.
pub fn raise_fd_limit() -> io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur >= limit.rlim_max {
        return Ok(());
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends SIGKILL to every process in the group `group` (a child started with
/// `process_group(0)` leads a group of its own id).
pub fn kill_process_group(group: u32) {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return;
    };
    // SAFETY: killpg takes plain integers; a group that no longer exists is
    // reported as ESRCH, which is ignored on purpose.
    unsafe { libc::killpg(group, libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_limit_ends_at_the_hard_limit() {
        raise_fd_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid, writable rlimit.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }

    #[test]
    fn killing_a_group_ends_its_members() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        kill_process_group(child.id());
        let status = child.wait().unwrap();
        assert!(!status.success());
    }
}
