//! Putting a rendered file in place, safely: a reader sees the old file or
//! the new one, never half of one, and never one anybody else could read.
//!
//! A temporary file is made in the destination's directory (so the rename
//! is atomic) with no access for anyone, its mode and owner set before a
//! byte is written, then written, flushed to disk and renamed over the
//! destination, and the directory flushed too. A symlink at the
//! destination is refused, never followed (it could point anywhere the
//! agent may write). Bytes that are already there are not written again, so
//! a rotation rewrites only files whose text changed. The temporary file is
//! removed on every error.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The file was made or replaced.
    Changed,
    /// It already held these bytes with this mode and owner.
    Unchanged,
}

/// Who owns the file; `None` keeps the agent's own user or group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug)]
pub enum WriteError {
    Symlink(PathBuf),
    NoDirectory(PathBuf),
    Io {
        path: PathBuf,
        doing: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Symlink(path) => write!(
                f,
                "{} is a symlink: refused, not followed; remove it or name the real file",
                path.display()
            ),
            WriteError::NoDirectory(path) => write!(
                f,
                "{} has no directory to write into: create it first",
                path.display()
            ),
            WriteError::Io {
                path,
                doing,
                source,
            } => write!(f, "cannot {doing} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for WriteError {}

/// Writes `bytes` to `dest` with `mode` and `owner`, unless they are there
/// already.
pub fn write(dest: &Path, bytes: &[u8], mode: u32, owner: Owner) -> Result<Written, WriteError> {
    let io = |doing, path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError::Io {
            path,
            doing,
            source,
        }
    };
    match fs::symlink_metadata(dest) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(WriteError::Symlink(dest.to_path_buf()))
        }
        Ok(meta) if meta.is_file() && same(dest, &meta, bytes, mode, owner) => {
            return Ok(Written::Unchanged)
        }
        _ => {}
    }
    let dir = match dest.parent() {
        Some(dir) if dir.as_os_str().is_empty() => Path::new("."),
        Some(dir) if dir.is_dir() => dir,
        _ => return Err(WriteError::NoDirectory(dest.to_path_buf())),
    };
    let name = dest
        .file_name()
        .ok_or_else(|| WriteError::NoDirectory(dest.to_path_buf()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp-{}-{:x}",
        std::process::id(),
        (secrets_manager_agent_core::random::unit() * f64::from(u32::MAX)) as u32
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        if owner.uid.is_some() || owner.gid.is_some() {
            std::os::unix::fs::fchown(&file, owner.uid, owner.gid)
                .map_err(io("change the owner of", &tmp))?;
        }
        // The umask does not apply to an explicit chmod: the mode is exact.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io("set the mode of", &tmp))?;
        file.write_all(bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("flush", &tmp))?;
        fs::rename(&tmp, dest).map_err(io("rename onto", dest))?;
        // The rename itself, on disk.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("flush the directory", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| Written::Changed)
}

/// Whether the file at `path` already holds `bytes` with `mode` and `owner`.
fn same(path: &Path, meta: &fs::Metadata, bytes: &[u8], mode: u32, owner: Owner) -> bool {
    if meta.len() != bytes.len() as u64
        || meta.mode() & 0o7777 != mode
        || owner.uid.is_some_and(|uid| uid != meta.uid())
        || owner.gid.is_some_and(|gid| gid != meta.gid())
    {
        return false;
    }
    let mut old = Zeroizing::new(Vec::with_capacity(bytes.len()));
    // O_NOFOLLOW: a symlink swapped in since the check is not read through.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(secrets_manager_agent_os::io::NO_FOLLOW)
        .open(path);
    match opened.and_then(|mut f| f.read_to_end(&mut old)) {
        Ok(_) => old.as_slice() == bytes,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sma-write-{}-{:x}",
            std::process::id(),
            (secrets_manager_agent_core::random::unit() * 1e12) as u64
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn writes_replaces_and_skips_the_same_bytes() {
        let dir = dir();
        let dest = dir.join("db.env");
        assert_eq!(
            write(&dest, b"a=1\n", 0o600, Owner::default()).unwrap(),
            Written::Changed
        );
        assert_eq!(fs::read(&dest).unwrap(), b"a=1\n");
        assert_eq!(mode(&dest), 0o600);
        assert_eq!(
            write(&dest, b"a=1\n", 0o600, Owner::default()).unwrap(),
            Written::Unchanged
        );
        assert_eq!(
            write(&dest, b"a=1\n", 0o640, Owner::default()).unwrap(),
            Written::Changed
        );
        assert_eq!(mode(&dest), 0o640, "the mode is exact, whatever the umask");
        assert_eq!(
            write(&dest, b"a=2\n", 0o640, Owner::default()).unwrap(),
            Written::Changed
        );
        assert_eq!(fs::read(&dest).unwrap(), b"a=2\n");
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("db.env")],
            "no temporary file left"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlink_is_refused_and_its_target_untouched() {
        let dir = dir();
        let target = dir.join("target");
        fs::write(&target, b"keep").unwrap();
        let dest = dir.join("link");
        std::os::unix::fs::symlink(&target, &dest).unwrap();
        let e = write(&dest, b"secret", 0o600, Owner::default()).unwrap_err();
        assert!(matches!(e, WriteError::Symlink(_)), "{e}");
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failures_leave_nothing_behind() {
        let dir = dir();
        let e = write(&dir.join("no/such/dir/f"), b"x", 0o600, Owner::default()).unwrap_err();
        assert!(matches!(e, WriteError::NoDirectory(_)), "{e}");
        // A directory where the file should be: the rename fails.
        let dest = dir.join("taken");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("inside"), b"x").unwrap();
        let e = write(&dest, b"x", 0o600, Owner::default()).unwrap_err();
        assert!(e.to_string().contains("rename"), "{e}");
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("taken")]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
