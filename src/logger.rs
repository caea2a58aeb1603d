//! Log output: one line per event to stderr or to a size-rotated file.
//!
//! Request and upstream data reach log lines: a secret ID as the client sent
//! it (percent-decoded), AWS's error message, a proxy's error page, what a
//! credential source answered. A log is read line by line, by people on a
//! terminal and by pipelines that split on newlines, so a message must not be
//! able to end its line and write a forged one, move the cursor or clear the
//! screen, or fill the disk in one event. So the logger, not each call site,
//! makes every event exactly one line: control characters in the message
//! (C0, DEL, C1) are written escaped (`\n`, `\u{1b}`), and the message is cut
//! at [`MAX_MESSAGE`] bytes with a marker saying how much was left out. The
//! prefix (timestamp, level, target) is the logger's own and stays as is.
//!
//! `log_format = "json"` writes each event as one JSON object instead
//! (`timestamp`, `level`, `target`, `message`, and the event's fields, such
//! as `secret_id`, `status` and `duration_ms` on a failed request), for
//! pipelines that parse logs; the message is made safe the same way first.
//! Then the lines the agent writes outside the log take that form too: the
//! addresses it announces on stdout ([`announcement`]) and the error it
//! stops on ([`fatal_line`]), so that a collector reading both streams reads
//! only JSON.
//!
//! Other crates (rustls, ureq) log through the same facade but only at WARN and
//! above: their debug output includes request headers, and those carry
//! credentials. Our own call sites never format a secret value or the token.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
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
/// Bytes of message (after escaping) one log line carries at most; the cut
/// marker comes on top.
pub const MAX_MESSAGE: usize = 4 * 1024;

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
    json: bool,
    sink: Mutex<Sink>,
}

static TO_FILE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether log lines go to a file (so a fatal error must also reach stderr).
pub fn logs_to_file() -> bool {
    TO_FILE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether the logger writes JSON (`log_format = "json"`); false before
/// [`init`], when the format is not known yet.
fn logs_json() -> bool {
    JSON.load(std::sync::atomic::Ordering::Relaxed)
}

/// A line for stdout that tells where the agent listens: `message` as it is
/// in text mode (scripts match it), and in JSON mode an INFO event of
/// `target` with the address as the field `address`.
pub fn announcement(target: &str, message: fmt::Arguments, address: &str) -> String {
    announcement_as(logs_json(), target, message, address)
}

fn announcement_as(json: bool, target: &str, message: fmt::Arguments, address: &str) -> String {
    if !json {
        return format!("{message}\n");
    }
    let fields: [(&str, log::kv::Value); 1] = [("address", address.into())];
    json_line(
        &Record::builder()
            .level(Level::Info)
            .target(target)
            .args(message)
            .key_values(&fields)
            .build(),
    )
}

/// The line on stderr for the error that ends the process (`name` is the
/// program's): `{name}: error: {message}` in text mode, the message made one
/// line; in JSON mode an ERROR event of this crate. Written whatever the
/// level, even `NONE`: it is the only word of why the process ended.
pub fn fatal_line(name: &str, message: &str) -> String {
    fatal_line_as(logs_json(), name, message)
}

fn fatal_line_as(json: bool, name: &str, message: &str) -> String {
    if !json {
        return format!("{name}: error: {}\n", one_line(message));
    }
    json_line(
        &Record::builder()
            .level(Level::Error)
            .target(env!("CARGO_CRATE_NAME"))
            .args(format_args!("{message}"))
            .build(),
    )
}

/// Installs the global logger, writing text lines or (`json`) JSON objects.
/// Fails only when the log file cannot be opened.
pub fn init(level: LevelFilter, to_file: bool, json: bool) -> io::Result<()> {
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
        json,
        sink: Mutex::new(sink),
    };
    // Only fails if a logger is already set, which `main` never does twice.
    let _ = log::set_boxed_logger(Box::new(logger));
    TO_FILE.store(to_file, std::sync::atomic::Ordering::Relaxed);
    JSON.store(json, std::sync::atomic::Ordering::Relaxed);
    log::set_max_level(level);
    Ok(())
}

/// Whether an event comes from the agent's own code: this crate or one of
/// the workspace's (`secrets_manager_agent_cache`, `_aws`, ...), whose names
/// all start with this crate's (tests/layers.rs holds them to it).
fn is_ours(target: &str) -> bool {
    target.starts_with(env!("CARGO_CRATE_NAME"))
}

impl Log for Logger {
    fn enabled(&self, meta: &Metadata) -> bool {
        let limit = if is_ours(meta.target()) {
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
        let line = if self.json {
            json_line(record)
        } else {
            format_line(record)
        };
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

/// One event as one line: `{timestamp} {level} [{target}] {message}\n`, the
/// message made safe by [`one_line`]. One allocation for a typical line, as
/// with a single `format!`; a second only when the message needed changing.
fn format_line(record: &Record) -> String {
    let mut line = String::with_capacity(256);
    // Writing into a String cannot fail.
    let _ = write!(
        line,
        "{} {:<5} [{}] ",
        secrets_manager_agent_core::iso8601::format(SystemTime::now()),
        level_name(record.level()),
        record.target(),
    );
    let start = line.len();
    let _ = writeln!(line, "{}", record.args());
    let safe = match one_line(&line[start..line.len() - 1]) {
        Cow::Borrowed(_) => None,
        Cow::Owned(safe) => Some(safe),
    };
    if let Some(safe) = safe {
        line.truncate(start);
        line.push_str(&safe);
        line.push('\n');
    }
    line
}

/// One event as one JSON object on one line: `timestamp`, `level`,
/// `target`, `message` (made safe by [`one_line`] as in a text line), then
/// the event's fields, numbers as numbers.
fn json_line(record: &Record) -> String {
    let mut line = String::with_capacity(256);
    line.push_str("{\"timestamp\":");
    push_json(
        &mut line,
        &secrets_manager_agent_core::iso8601::format(SystemTime::now()),
    );
    line.push_str(",\"level\":");
    push_json(&mut line, level_name(record.level()));
    line.push_str(",\"target\":");
    push_json(&mut line, record.target());
    line.push_str(",\"message\":");
    push_json(&mut line, &one_line(&record.args().to_string()));
    let _ = record.key_values().visit(&mut Fields(&mut line));
    line.push_str("}\n");
    line
}

/// Appends the event's fields to a JSON line.
struct Fields<'a>(&'a mut String);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        self.0.push(',');
        push_json(self.0, key.as_str());
        self.0.push(':');
        match value.to_u64() {
            Some(n) => {
                let _ = write!(self.0, "{n}");
            }
            None => push_json(self.0, &one_line(&value.to_string())),
        }
        Ok(())
    }
}

/// `text` as a JSON string (quoted, escaped).
fn push_json(out: &mut String, text: &str) {
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
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

/// `message` as the text of one log line: control characters (C0 including
/// `\n`, `\r` and `\t`, DEL, C1) escaped as `char::escape_debug` writes them,
/// every other character as it is, and at most [`MAX_MESSAGE`] bytes of that,
/// cut between characters and followed by `… [N bytes cut]` (N counts bytes of
/// `message`). Borrowed, without a copy, when nothing needs changing.
pub fn one_line(message: &str) -> Cow<'_, str> {
    if message.len() <= MAX_MESSAGE && !message.chars().any(needs_escape) {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE) + 32);
    for (at, c) in message.char_indices() {
        let before = out.len();
        if needs_escape(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
        if out.len() > MAX_MESSAGE {
            out.truncate(before);
            let _ = write!(out, "… [{} bytes cut]", message.len() - at);
            break;
        }
    }
    Cow::Owned(out)
}

/// Control characters (C0, DEL, C1), the Unicode line and paragraph
/// separators (some viewers break lines there), and the bidirectional
/// overrides and isolates (they reorder what a reader sees).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
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
    fn the_workspace_crates_log_at_the_agents_level_others_at_warn() {
        for ours in [
            "secrets_manager_agent::api",
            "secrets_manager_agent_cache::refresh",
            "secrets_manager_agent_aws::credentials::imds",
        ] {
            assert!(is_ours(ours), "{ours}");
        }
        for theirs in ["rustls::client::hs", "ureq::unversioned", "secrets"] {
            assert!(!is_ours(theirs), "{theirs}");
        }
    }

    #[test]
    fn json_lines_are_one_object_with_the_fields() {
        let fields: [(&str, log::kv::Value); 2] =
            [("secret_id", "prod\n/db".into()), ("status", 404u64.into())];
        let line = json_line(
            &Record::builder()
                .level(Level::Warn)
                .target("secrets_manager_agent::api")
                .args(format_args!("request failed: \u{1b}[2J\nFORGED"))
                .key_values(&fields)
                .build(),
        );
        assert!(
            line.ends_with("}\n") && line.matches('\n').count() == 1,
            "{line}"
        );
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc["level"], "WARN");
        assert_eq!(doc["target"], "secrets_manager_agent::api");
        assert_eq!(doc["message"], "request failed: \\u{1b}[2J\\nFORGED");
        assert_eq!(doc["secret_id"], "prod\\n/db");
        assert_eq!(doc["status"], 404);
        let stamp = doc["timestamp"].as_str().unwrap();
        assert!(stamp.len() == 24 && stamp.ends_with('Z'), "{stamp}");
    }

    #[test]
    fn announcements_are_plain_or_json_with_the_address() {
        let target = "secrets_manager_agent::agent";
        let address = "http://127.0.0.1:2773";
        let message = format_args!("secrets-manager-agent 0.1.0 listening on {address}");
        assert_eq!(
            announcement_as(false, target, message, address),
            "secrets-manager-agent 0.1.0 listening on http://127.0.0.1:2773\n"
        );
        let line = announcement_as(true, target, message, address);
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1);
        // The fields in a log line's order, the address last.
        let at: Vec<usize> = ["timestamp", "level", "target", "message", "address"]
            .iter()
            .map(|key| line.find(&format!("\"{key}\":")).unwrap())
            .collect();
        assert!(at[0] == 1 && at.windows(2).all(|w| w[0] < w[1]), "{line}");
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc.as_object().unwrap().len(), 5, "{line}");
        assert_eq!(doc["level"], "INFO");
        assert_eq!(doc["target"], target);
        assert_eq!(
            doc["message"],
            "secrets-manager-agent 0.1.0 listening on http://127.0.0.1:2773"
        );
        assert_eq!(doc["address"], address);
    }

    #[test]
    fn fatal_lines_are_one_line_in_either_format() {
        let why = "cannot listen on 127.0.0.1:2773: in use\nFORGED";
        assert_eq!(
            fatal_line_as(false, "agent", why),
            "agent: error: cannot listen on 127.0.0.1:2773: in use\\nFORGED\n"
        );
        let line = fatal_line_as(true, "agent", why);
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc["level"], "ERROR");
        assert_eq!(doc["target"], "secrets_manager_agent");
        assert_eq!(
            doc["message"],
            "cannot listen on 127.0.0.1:2773: in use\\nFORGED"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        let forged = "a\n2026-01-01T00:00:00.000Z ERROR [secrets_manager_agent] FORGED";
        assert_eq!(
            one_line(forged),
            "a\\n2026-01-01T00:00:00.000Z ERROR [secrets_manager_agent] FORGED"
        );
        assert_eq!(one_line("a\r\nb"), "a\\r\\nb");
        assert_eq!(one_line("\x1b[2Jx"), "\\u{1b}[2Jx");
        // Line separators and bidi overrides change what a reader sees.
        assert_eq!(
            one_line("a\u{2028}b\u{202e}c\u{2066}d"),
            "a\\u{2028}b\\u{202e}c\\u{2066}d"
        );
        assert_eq!(one_line("a\x7fb"), "a\\u{7f}b");
        assert_eq!(one_line("a\u{85}b\u{9b}c"), "a\\u{85}b\\u{9b}c");
        assert_eq!(one_line("\0\x07"), "\\0\\u{7}");
        assert_eq!(one_line("a\tb"), "a\\tb");
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let out = one_line(&format!("x{c}y")).into_owned();
            assert!(!out.chars().any(char::is_control), "{c:?} -> {out:?}");
        }
    }

    #[test]
    fn other_characters_are_kept() {
        let text = "grüße ✓ \\n \"quoted\" 秘密 \u{a0}";
        assert!(matches!(one_line(text), Cow::Borrowed(t) if t == text));
        assert_eq!(one_line("ü\n✓"), "ü\\n✓");
    }

    #[test]
    fn short_clean_messages_are_not_copied() {
        let text = "request for db-password failed: AWS answered 400";
        let out = one_line(text);
        assert!(matches!(out, Cow::Borrowed(_)));
        assert!(std::ptr::eq(out.as_ref(), text));
        let full = "x".repeat(MAX_MESSAGE);
        assert!(matches!(one_line(&full), Cow::Borrowed(_)));
    }

    #[test]
    fn long_messages_are_cut_with_a_marker() {
        let long = "x".repeat(60_000);
        let out = one_line(&long);
        assert_eq!(
            out,
            format!(
                "{}… [{} bytes cut]",
                "x".repeat(MAX_MESSAGE),
                60_000 - MAX_MESSAGE
            )
        );
        // A 2-byte character straddling the limit is left out whole.
        let straddling = format!("{}ü{}", "x".repeat(MAX_MESSAGE - 1), "y".repeat(10));
        let out = one_line(&straddling);
        assert_eq!(
            out,
            format!("{}… [12 bytes cut]", "x".repeat(MAX_MESSAGE - 1))
        );
        // Escapes count towards the limit and are never split.
        let controls = "\x1b".repeat(MAX_MESSAGE);
        let out = one_line(&controls);
        let kept = MAX_MESSAGE / 6;
        assert_eq!(
            out,
            format!(
                "{}… [{} bytes cut]",
                "\\u{1b}".repeat(kept),
                MAX_MESSAGE - kept
            )
        );
        assert!(out.len() <= MAX_MESSAGE + "… [4096 bytes cut]".len());
    }

    fn warn_line(args: std::fmt::Arguments) -> String {
        format_line(
            &Record::builder()
                .level(Level::Warn)
                .target("secrets_manager_agent::api")
                .args(args)
                .build(),
        )
    }

    #[test]
    fn every_event_is_one_line() {
        let id = "a\n2026-01-01T00:00:00.000Z ERROR [secrets_manager_agent] FORGED\x1b[2J";
        let line = warn_line(format_args!("request for {id} failed: {}", "x\r\ny"));
        let (prefix, message) = line.split_once(" [secrets_manager_agent::api] ").unwrap();
        assert_eq!(prefix.len(), "2026-01-01T00:00:00.000Z WARN ".len());
        assert!(prefix.ends_with("Z WARN "), "{prefix:?}");
        assert_eq!(
            message,
            "request for a\\n2026-01-01T00:00:00.000Z ERROR [secrets_manager_agent] \
             FORGED\\u{1b}[2J failed: x\\r\\ny\n"
        );
        let long = "x".repeat(60_000);
        let line = warn_line(format_args!("request for {long} failed"));
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with(&format!("… [{} bytes cut]\n", 60_019 - MAX_MESSAGE)));
        assert!(line.len() < MAX_MESSAGE + 100, "{}", line.len());
        let plain = warn_line(format_args!("request for {} failed", "db"));
        assert!(plain.ends_with(" WARN  [secrets_manager_agent::api] request for db failed\n"));
    }

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
