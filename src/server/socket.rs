//! The sockets the server speaks on: TCP (IPv4 or IPv6) and unix. The rest
//! of the server sees one [`Listener`] and one [`Stream`] type, so a
//! connection is served the same way whichever socket brought it.
//!
//! An accepted socket is made non-blocking (the poller and the workers never
//! wait on a client) and, for TCP, gets no-delay and, on the API's listener,
//! a TTL (IPv6: hop limit) of 1, so that no packet of it crosses a router even
//! when the agent is bound beyond loopback by mistake.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::os;

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A client connection.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    pub fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l) => l.set_nonblocking(true),
        }
    }

    /// The next connection, prepared; `ttl_one` as in `server::Settings`.
    pub fn accept(&self, ttl_one: bool) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept()?;
                stream.set_nonblocking(true)?;
                if ttl_one {
                    match peer {
                        SocketAddr::V4(_) => stream.set_ttl(1)?,
                        SocketAddr::V6(_) => os::io::set_hop_limit(&stream, 1)?,
                    }
                }
                stream.set_nodelay(true)?;
                Ok(Stream::Tcp(stream))
            }
            Listener::Unix(l) => {
                let (stream, _) = l.accept()?;
                stream.set_nonblocking(true)?;
                Ok(Stream::Unix(stream))
            }
        }
    }
}

/// Creates the unix socket at `path` with `mode` and group `gid`. A socket
/// file left by an agent that died is replaced; a live one (something
/// answers there) or a file that is not a socket is an error, never removed.
pub fn bind_unix(path: &Path, mode: u32, gid: Option<u32>) -> Result<UnixListener, String> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(format!(
                "unix_socket_path {shown} exists and is not a socket; remove it or choose another path"
            ))
        }
        Ok(_) if UnixStream::connect(path).is_ok() => {
            return Err(format!(
                "unix_socket_path {shown} is in use by a running process; stop it or choose another path"
            ))
        }
        Ok(_) => std::fs::remove_file(path)
            .map_err(|e| format!("cannot replace the stale socket {shown}: {e}"))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot check unix_socket_path {shown}: {e}")),
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("cannot listen on {shown}: {e}"))?;
    // Until these run the socket has the umask's mode, which (022 or
    // stricter) lets nobody but the owner connect.
    let set_up = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::os::unix::fs::chown(path, None, gid));
    if let Err(e) = set_up {
        let _ = std::fs::remove_file(path);
        return Err(format!("cannot set the mode or group of {shown}: {e}"));
    }
    Ok(listener)
}

/// A group's id: a number as it is, a name looked up in `/etc/group`.
pub fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let table = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("cannot read /etc/group to find group {group}: {e}"))?;
    gid_in(&table, group)
        .ok_or_else(|| format!("unix_socket_group {group}: no such group in /etc/group"))
}

/// The id of `name` in the text of an `/etc/group` file.
fn gid_in(table: &str, name: &str) -> Option<u32> {
    table.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.trim().parse().ok()
    })
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

impl Stream {
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, TcpListener};

    #[test]
    fn accepted_sockets_never_block_and_keep_their_packets_local() {
        for ip in ["127.0.0.1", "::1"] {
            let listener = TcpListener::bind((ip, 0)).unwrap();
            let addr = listener.local_addr().unwrap();
            let _client = TcpStream::connect(addr).unwrap();
            let Stream::Tcp(accepted) = Listener::Tcp(listener).accept(true).unwrap() else {
                panic!("a TCP listener gave another stream");
            };
            assert!(accepted.nodelay().unwrap());
            let e = (&accepted).read(&mut [0u8; 16]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{ip}");
            if addr.ip() == Ipv6Addr::LOCALHOST {
                assert_eq!(os::io::hop_limit(&accepted).unwrap(), 1);
            } else {
                assert_eq!(accepted.ttl().unwrap(), 1);
            }
        }
    }

    #[test]
    fn groups_by_number_or_name() {
        let table = "root:x:0:\n# comment\nbroken\napp:x:1001:alice,bob\nweird:x:notanumber:\n";
        assert_eq!(gid_in(table, "app"), Some(1001));
        assert_eq!(gid_in(table, "root"), Some(0));
        assert_eq!(gid_in(table, "weird"), None);
        assert_eq!(gid_in(table, "ap"), None);
        assert_eq!(group_id("4242"), Ok(4242));
    }

    #[test]
    fn unix_sockets_get_their_mode_replace_stale_ones_and_spare_the_rest() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("sma-sock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        let live = bind_unix(&path, 0o640, None).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
        let e = bind_unix(&path, 0o660, None).unwrap_err();
        assert!(e.contains("in use"), "{e}");
        drop(live); // the file stays, as after a crash
        let again = bind_unix(&path, 0o660, None).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o660);
        drop(again);
        let plain = dir.join("plain");
        std::fs::write(&plain, b"keep me").unwrap();
        let e = bind_unix(&plain, 0o660, None).unwrap_err();
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unix_streams_read_and_write_like_tcp() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let (a, b) = (Stream::Unix(a), Stream::Unix(b));
        assert_eq!((&b).write(b"ping").unwrap(), 4);
        let mut buf = [0u8; 8];
        assert_eq!((&a).read(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"ping");
        b.shutdown_write().unwrap();
        assert_eq!((&a).read(&mut buf).unwrap(), 0);
    }
}
