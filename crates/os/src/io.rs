//! Socket waits and reads the standard library does not offer: `ppoll(2)`
//! on many descriptors with a precise timeout, and `read(2)` into a vector's
//! spare capacity.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

pub use libc::pollfd as PollFd;

/// A descriptor to watch for input. A negative `fd` is skipped by the kernel,
/// which lets a caller keep a slot's index while not watching it.
pub fn poll_in(fd: RawFd) -> PollFd {
    PollFd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Waits until one of `fds` is ready or `wait` has passed; returns how many
/// are ready. An interrupted wait is reported as `ErrorKind::Interrupted`.
pub fn poll(fds: &mut [PollFd], wait: Duration) -> io::Result<usize> {
    let timeout = timespec(wait);
    // SAFETY: `fds` is a live, correctly sized slice of pollfd and `timeout`
    // a valid timespec; a null signal mask leaves the mask alone.
    let ready = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &timeout,
            std::ptr::null(),
        )
    };
    if ready < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ready as usize)
}

/// Whether `fd` has input (or end of file) within `wait`.
pub fn readable_within(fd: &impl AsRawFd, wait: Duration) -> bool {
    let mut fds = [poll_in(fd.as_raw_fd())];
    matches!(poll(&mut fds, wait), Ok(n) if n > 0)
}

/// Whole seconds and nanoseconds: a wait of a second or more keeps its
/// seconds (a timespec with only the sub-second part would silently shorten
/// it). Waits are clamped to 68 years, which a 32-bit `time_t` holds too (the
/// conversion goes through the field's type: libc marks the `time_t` alias
/// deprecated on musl).
fn timespec(wait: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: i32::try_from(wait.as_secs()).unwrap_or(i32::MAX).into(),
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    }
}

/// Reads up to `room` bytes onto the end of `buf`. Reading into the spare
/// capacity instead of a zeroed buffer keeps a request from paying a memset,
/// and an idle worker from holding a read buffer.
pub fn read_appending(stream: &impl AsRawFd, buf: &mut Vec<u8>, room: usize) -> io::Result<usize> {
    buf.reserve(room);
    let spare = buf.spare_capacity_mut();
    let room = room.min(spare.len());
    // SAFETY: `spare` is writable memory of at least `room` bytes owned by
    // `buf`; read(2) writes at most `room` bytes into it and returns how many.
    let n = unsafe { libc::read(stream.as_raw_fd(), spare.as_mut_ptr().cast(), room) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: read(2) initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Sets an IPv6 socket's unicast hop limit, IPv6's TTL (std sets only
/// IPv4's `IP_TTL`).
pub fn set_hop_limit(socket: &impl AsRawFd, hops: u8) -> io::Result<()> {
    let value = libc::c_int::from(hops);
    // SAFETY: `value` is a live c_int and its size is passed with it; the fd
    // is open for as long as `socket` is borrowed.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_UNICAST_HOPS,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether an error says the process or the system ran out of descriptors,
/// buffers or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`): a condition
/// that passes, unlike a broken socket.
pub fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// An IPv6 socket's unicast hop limit (for the tests of `set_hop_limit`'s
/// callers).
pub fn hop_limit(socket: &impl AsRawFd) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live and describe a c_int-sized buffer.
    let done = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_UNICAST_HOPS,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// `open(2)`'s flag that refuses a symlink as the last component (its value
/// differs between x86_64 and aarch64), for `OpenOptionsExt::custom_flags`.
pub const NO_FOLLOW: i32 = libc::O_NOFOLLOW;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    #[test]
    fn timeouts_keep_their_whole_seconds() {
        let t = timespec(Duration::from_millis(2_500));
        assert_eq!((t.tv_sec, t.tv_nsec), (2, 500_000_000));
        let t = timespec(Duration::from_millis(2));
        assert_eq!((t.tv_sec, t.tv_nsec), (0, 2_000_000));
        // Typed through the field, as in `timespec`.
        let mut clamped = timespec(Duration::ZERO);
        clamped.tv_sec = i32::MAX.into();
        assert_eq!(timespec(Duration::MAX).tv_sec, clamped.tv_sec);
    }

    #[test]
    fn waits_reads_and_appends() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();

        // Nothing sent: the wait lasts (about) as long as asked, not less.
        let started = Instant::now();
        assert!(!readable_within(&server, Duration::from_millis(50)));
        assert!(started.elapsed() >= Duration::from_millis(45));

        client.write_all(b"world").unwrap();
        assert!(readable_within(&server, Duration::from_secs(5)));
        let mut buf = b"hello ".to_vec();
        let n = read_appending(&server, &mut buf, 3).unwrap();
        assert_eq!(n, 3);
        assert_eq!(buf, b"hello wor");

        drop(client);
        let mut fds = [poll_in(server.as_raw_fd()), poll_in(-1)];
        assert_eq!(poll(&mut fds, Duration::from_secs(5)).unwrap(), 1);
        assert!(fds[0].revents != 0 && fds[1].revents == 0);
    }
}
