//! Log output: one line per event to stderr or to a size-rotated file.
//!
//! Other crates (rustls, ureq) log through the same facade but only at WARN and
//! above: their debug output includes request headers, and those carry
//! credentials. Our own call sites never format a secret value or the token.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

pub const LOG_DIR: &str = "logs";
pub const LOG_FILE: &str = "secrets_manager_agent.log";
const ROTATE_BYTES: u64 = 10 * 1024 * 1024;
const KEEP_FILES: u32 = 5;

enum Sink {
    Stderr,
    File {
        path: PathBuf,
        file: File,
        size: u64,
    },
}

struct Logger {
    level: LevelFilter,
    sink: Mutex<Sink>,
}

static TO_FILE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether log lines go to a file (so a fatal error must also reach stderr).
pub fn logs_to_file() -> bool {
    TO_FILE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Installs the global logger. Fails only when the log file cannot be opened.
pub fn init(level: LevelFilter, to_file: bool) -> io::Result<()> {
    let sink = if to_file {
        let dir = Path::new(LOG_DIR);
        fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Sink::File { path, file, size }
    } else {
        Sink::Stderr
    };
    let logger = Logger {
        level,
        sink: Mutex::new(sink),
    };
    // Only fails if a logger is already set, which `main` never does twice.
    let _ = log::set_boxed_logger(Box::new(logger));
    TO_FILE.store(to_file, std::sync::atomic::Ordering::Relaxed);
    log::set_max_level(level);
    Ok(())
}

impl Log for Logger {
    fn enabled(&self, meta: &Metadata) -> bool {
        let ours = meta.target().starts_with(env!("CARGO_CRATE_NAME"));
        let limit = if ours {
            self.level
        } else {
            self.level.min(LevelFilter::Warn)
        };
        meta.level() <= limit
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {:<5} [{}] {}\n",
            crate::iso8601::format(SystemTime::now()),
            level_name(record.level()),
            record.target(),
            record.args()
        );
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        match &mut *sink {
            Sink::Stderr => {
                let _ = io::stderr().write_all(line.as_bytes());
            }
            Sink::File { path, file, size } => {
                if *size + line.len() as u64 > ROTATE_BYTES {
                    if let Ok(fresh) = rotate(path) {
                        *file = fresh;
                        *size = 0;
                    }
                }
                if file.write_all(line.as_bytes()).is_ok() {
                    *size += line.len() as u64;
                }
            }
        }
    }

    fn flush(&self) {
        if let Ok(mut sink) = self.sink.lock() {
            if let Sink::File { file, .. } = &mut *sink {
                let _ = file.flush();
            }
        }
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "ERROR",
        Level::Warn => "WARN",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

/// `x.log` → `x.log.1` → ... → `x.log.5`; the oldest falls off.
fn rotate(path: &Path) -> io::Result<File> {
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    let _ = fs::remove_file(numbered(KEEP_FILES));
    for n in (1..KEEP_FILES).rev() {
        let _ = fs::rename(numbered(n), numbered(n + 1));
    }
    fs::rename(path, numbered(1))?;
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_five_old_files() {
        let dir = std::env::temp_dir().join(format!("sma-log-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        for i in 0..8 {
            fs::write(&path, format!("gen{i}")).unwrap();
            rotate(&path).unwrap();
        }
        assert_eq!(fs::read_to_string(dir.join("a.log.1")).unwrap(), "gen7");
        assert_eq!(fs::read_to_string(dir.join("a.log.5")).unwrap(), "gen3");
        assert!(!dir.join("a.log.6").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
