//! The sockets the server speaks on: TCP (IPv4 or IPv6) and unix. The rest
//! of the server sees one [`Listener`] and one [`Stream`] type, so a
//! connection is served the same way whichever socket brought it.
//!
//! An accepted socket is made non-blocking (the workers never
//! wait on a client) and, for TCP, gets no-delay and, on the API's listener,
//! a TTL (IPv6: hop limit) of 1, so that no packet of it crosses a router even
//! when the agent is bound beyond loopback. The unix socket's file gets its
//! mode and group before anyone else can reach it (`bind_unix`); a group name
//! is looked up in `/etc/group` (a scratch image has none: give a number).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

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
                        // An IPv4 client of a dual-stack `::` listener: its
                        // packets are IPv4, which IP_TTL governs.
                        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => {
                            stream.set_ttl(1)?
                        }
                        SocketAddr::V6(_) => {
                            secrets_manager_agent_os::io::set_hop_limit(&stream, 1)?
                        }
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

/// Why [`bind_unix`] could not make the unix socket. `Display` names the
/// path, what failed and what to do.
#[derive(Debug)]
pub enum BindError {
    /// Something other than a socket is at the path: never removed.
    NotASocket {
        path: PathBuf,
    },
    /// A socket is there and something answers (or may): never removed.
    InUse {
        path: PathBuf,
    },
    /// A socket left by an agent that died could not be removed.
    Stale {
        path: PathBuf,
        source: io::Error,
    },
    /// The path could not be looked at.
    Check {
        path: PathBuf,
        source: io::Error,
    },
    /// The private directory next to the path could not be made.
    PrivateDir {
        dir: PathBuf,
        path: PathBuf,
        source: io::Error,
    },
    Listen {
        path: PathBuf,
        source: io::Error,
    },
    Group {
        path: PathBuf,
        gid: Option<u32>,
        source: io::Error,
    },
    Mode {
        path: PathBuf,
        source: io::Error,
    },
    /// The socket could not be renamed into place.
    Move {
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::NotASocket { path } => write!(
                f,
                "unix_socket_path {} exists and is not a socket; remove it or choose another path",
                path.display()
            ),
            BindError::InUse { path } => write!(
                f,
                "unix_socket_path {} is in use (or not ours to test); stop what listens there \
                 or choose another path",
                path.display()
            ),
            BindError::Stale { path, source } => write!(
                f,
                "cannot replace the stale socket {}: {source}",
                path.display()
            ),
            BindError::Check { path, source } => write!(
                f,
                "cannot check unix_socket_path {}: {source}",
                path.display()
            ),
            BindError::PrivateDir { dir, path, source } => write!(
                f,
                "cannot create {} next to {}: {source}",
                dir.display(),
                path.display()
            ),
            BindError::Listen { path, source } => {
                write!(f, "cannot listen on {}: {source}", path.display())
            }
            BindError::Group { path, gid, source } => write!(
                f,
                "cannot give {} group {gid:?}: {source} (the agent must belong to that group, \
                 or run as root)",
                path.display()
            ),
            BindError::Mode { path, source } => {
                write!(f, "cannot set the mode of {}: {source}", path.display())
            }
            BindError::Move { path, source } => {
                write!(f, "cannot move the socket to {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BindError::NotASocket { .. } | BindError::InUse { .. } => None,
            BindError::Stale { source, .. }
            | BindError::Check { source, .. }
            | BindError::PrivateDir { source, .. }
            | BindError::Listen { source, .. }
            | BindError::Group { source, .. }
            | BindError::Mode { source, .. }
            | BindError::Move { source, .. } => Some(source),
        }
    }
}

/// Creates the unix socket at `path` with `mode` and group `gid`. A socket
/// file left by an agent that died is replaced; a live one (anything but
/// "connection refused" there) or a file that is not a socket is an error,
/// never removed.
///
/// The socket is made, given its group and mode in a new directory only this
/// process can enter, and then renamed into place: someone who can write
/// the socket's directory (the other container of a shared volume) can
/// neither connect before the mode is set nor swap in a symlink that would
/// turn the chown and chmod onto another file (`rename` replaces a symlink,
/// it does not follow it).
pub fn bind_unix(path: &Path, mode: u32, gid: Option<u32>) -> Result<UnixListener, BindError> {
    let at = || path.to_path_buf();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(BindError::NotASocket { path: at() })
        }
        Ok(_) => match UnixStream::connect(path) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
                .map_err(|source| BindError::Stale { path: at(), source })?,
            _ => return Err(BindError::InUse { path: at() }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(BindError::Check { path: at(), source }),
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let private = parent.join(format!(".sma-{}.tmp", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|source| BindError::PrivateDir {
            dir: private.clone(),
            path: at(),
            source,
        })?;
    let made = private.join("s");
    let result = UnixListener::bind(&made)
        .map_err(|source| BindError::Listen { path: at(), source })
        .and_then(|listener| {
            std::os::unix::fs::chown(&made, None, gid)
                .map_err(|source| BindError::Group {
                    path: at(),
                    gid,
                    source,
                })
                .and_then(|()| {
                    std::fs::set_permissions(&made, std::fs::Permissions::from_mode(mode))
                        .map_err(|source| BindError::Mode { path: at(), source })
                })
                .and_then(|()| {
                    std::fs::rename(&made, path)
                        .map_err(|source| BindError::Move { path: at(), source })
                })
                .map(|()| listener)
        });
    let _ = std::fs::remove_file(&made);
    let _ = std::fs::remove_dir(&private);
    result
}

/// Why [`group_id`] found no group id. `Display` says what to give instead.
#[derive(Debug)]
pub enum GroupError {
    /// `/etc/group` could not be read (a scratch image has none).
    Unreadable { group: String, source: io::Error },
    /// No line of `/etc/group` names the group.
    Unknown { group: String },
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupError::Unreadable { group, source } => write!(
                f,
                "cannot read /etc/group to find group {group}: {source} (give the group as a \
                 number)"
            ),
            GroupError::Unknown { group } => write!(
                f,
                "unix_socket_group {group}: no such group in /etc/group (give the group as a \
                 number)"
            ),
        }
    }
}

impl std::error::Error for GroupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GroupError::Unreadable { source, .. } => Some(source),
            GroupError::Unknown { .. } => None,
        }
    }
}

/// A group's id: a number as it is, a name looked up in `/etc/group`.
pub fn group_id(group: &str) -> Result<u32, GroupError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let table = std::fs::read_to_string("/etc/group").map_err(|source| GroupError::Unreadable {
        group: group.to_owned(),
        source,
    })?;
    id_in(&table, group).ok_or_else(|| GroupError::Unknown {
        group: group.to_owned(),
    })
}

/// The id of `name` in the text of an `/etc/group` or `/etc/passwd` file:
/// both keep it in the third field (templates look users up with it).
pub fn id_in(table: &str, name: &str) -> Option<u32> {
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
                assert_eq!(
                    secrets_manager_agent_os::io::hop_limit(&accepted).unwrap(),
                    1
                );
            } else {
                assert_eq!(accepted.ttl().unwrap(), 1);
            }
        }
    }

    #[test]
    fn groups_by_number_or_name() {
        let table = "root:x:0:\n# comment\nbroken\napp:x:1001:alice,bob\nweird:x:notanumber:\n";
        assert_eq!(id_in(table, "app"), Some(1001));
        assert_eq!(id_in(table, "root"), Some(0));
        assert_eq!(id_in(table, "weird"), None);
        assert_eq!(id_in(table, "ap"), None);
        assert_eq!(group_id("4242").ok(), Some(4242));
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
        let e = bind_unix(&path, 0o660, None).unwrap_err().to_string();
        assert!(e.contains("in use"), "{e}");
        drop(live); // the file stays, as after a crash
        let again = bind_unix(&path, 0o660, None).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o660);
        drop(again);
        // A symlink at the path is refused, and its target left alone.
        let target = dir.join("target");
        std::fs::write(&target, b"x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.join("link.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(bind_unix(&link, 0o666, None)
            .unwrap_err()
            .to_string()
            .contains("not a socket"));
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["agent.sock", "link.sock", "target"],
            "no private directory left"
        );
        let plain = dir.join("plain");
        std::fs::write(&plain, b"keep me").unwrap();
        let e = bind_unix(&plain, 0o660, None).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_say_what_failed_and_what_to_do() {
        let path = PathBuf::from("/run/agent.sock");
        let shown = BindError::NotASocket { path: path.clone() }.to_string();
        assert_eq!(
            shown,
            "unix_socket_path /run/agent.sock exists and is not a socket; remove it or choose \
             another path"
        );
        let denied = || io::Error::from(io::ErrorKind::PermissionDenied);
        let group = BindError::Group {
            path,
            gid: Some(7),
            source: denied(),
        };
        assert!(group.to_string().contains("group Some(7)"), "{group}");
        assert!(group.to_string().contains("must belong to that group"));
        assert!(std::error::Error::source(&group).is_some());
        let unknown = GroupError::Unknown {
            group: "app".into(),
        };
        assert!(unknown.to_string().contains("no such group"), "{unknown}");
        assert!(unknown.to_string().contains("as a number"));
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
