//! Rendering the config's `[[templates]]` once (`render`): each template's
//! text read, rendered with values from the cache, written in place if its
//! bytes changed, and its `command` run after a change, under a timeout.
//!
//! One template's failure does not stop the others, and leaves its old file
//! as it was; the caller gets every outcome and exits non-zero if any
//! failed. A line per template says what happened, never a value.

use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use std::path::Path;
use std::sync::Arc;

use super::write::{self, Owner, Written};
use super::{Failure, Resolve};
use crate::config::{Config, Template, TemplateText};
use crate::reference::{pick, Picked, Reference};
use crate::{agent, logger};
use secrets_manager_agent_cache::{Cache, Upstream};
use secrets_manager_agent_core::env;

/// What became of one template.
pub struct Outcome {
    pub destination: PathBuf,
    pub result: Result<Written, Failed>,
}

/// Why a template was not put in place, or its command failed.
#[derive(Debug)]
pub enum Failed {
    Source {
        path: PathBuf,
        why: String,
    },
    Render(String),
    Owner(String),
    Write(write::WriteError),
    /// The file was written; its command then failed.
    Command(String),
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failed::Source { path, why } => {
                write!(f, "cannot read the template {}: {why}", path.display())
            }
            Failed::Render(why) => write!(f, "cannot render it (the old file is kept): {why}"),
            Failed::Owner(why) => f.write_str(why),
            Failed::Write(e) => write!(f, "{e}"),
            Failed::Command(why) => write!(f, "written, but its command failed: {why}"),
        }
    }
}

/// `render [--config FILE]`: every template of the config once, one line per
/// template on stdout (what was written) or stderr (why not). `Ok(false)`
/// when any failed; `Err` when nothing could be tried.
pub fn run(config_path: Option<&Path>) -> Result<bool, String> {
    let config = Config::load_with_env(config_path, env::var).map_err(|e| e.to_string())?;
    // Warnings and errors only, on stderr (no log file in the caller's
    // directory): `render` runs in init containers and ExecStartPre=.
    let level = config.log_level.to_filter().min(log::LevelFilter::Warn);
    logger::init(level, false, config.log_json).map_err(|e| e.to_string())?;
    if config.templates.is_empty() {
        return Err("the config has no [[templates]]: nothing to render (docs/programs.md)".into());
    }
    let cache = Arc::new(agent::cache_for(&config).map_err(|e| e.to_string())?);
    let from_cache = cache.clone();
    let resolve: Resolve =
        Arc::new(move |reference: &Reference| resolve_in(&from_cache, reference));
    let outcomes = render_all(&config.templates, &resolve);
    cache.wipe();
    let mut all_ok = true;
    for outcome in outcomes {
        let dest = outcome.destination.display();
        match outcome.result {
            Ok(Written::Changed) => println!("rendered {dest}"),
            Ok(Written::Unchanged) => println!("unchanged {dest}"),
            Err(why) => {
                all_ok = false;
                eprintln!(
                    "{}",
                    logger::one_line(&format!("cannot render {dest}: {why}"))
                );
            }
        }
    }
    Ok(all_ok)
}

/// A reference's value through `cache`: the template functions' way to the
/// cache, in `render` and in the running agent alike.
pub fn resolve_in<U: Upstream + 'static>(
    cache: &Cache<U>,
    reference: &Reference,
) -> Result<Picked, Failure> {
    let served = cache
        .get(&reference.key, false)
        .map_err(|e| Failure::Other(e.to_string()))?;
    pick(&reference.key, &served, reference.json_key.as_deref()).map_err(Failure::from)
}

/// Renders every template, in order.
pub fn render_all(templates: &[Template], resolve: &Resolve) -> Vec<Outcome> {
    templates
        .iter()
        .map(|t| Outcome {
            destination: t.destination.clone(),
            result: render_one(t, resolve),
        })
        .collect()
}

fn render_one(t: &Template, resolve: &Resolve) -> Result<Written, Failed> {
    let source = match &t.text {
        TemplateText::Contents(text) => text.clone(),
        TemplateText::Source(path) => {
            std::fs::read_to_string(path).map_err(|e| Failed::Source {
                path: path.clone(),
                why: e.to_string(),
            })?
        }
    };
    let owner = Owner {
        uid: t
            .user
            .as_deref()
            .map(user_id)
            .transpose()
            .map_err(Failed::Owner)?,
        gid: t
            .group
            .as_deref()
            .map(group_id)
            .transpose()
            .map_err(Failed::Owner)?,
    };
    let text =
        super::render(&source, resolve.clone(), t.error_on_missing_key).map_err(Failed::Render)?;
    let written =
        write::write(&t.destination, text.as_bytes(), t.perms, owner).map_err(Failed::Write)?;
    if written == Written::Changed && !t.command.is_empty() {
        run_command(&t.command, Duration::from_secs(t.command_timeout_seconds))
            .map_err(Failed::Command)?;
    }
    Ok(written)
}

/// Runs `argv` (no shell), its output to the agent's; ends it at `timeout`.
fn run_command(argv: &[String], timeout: Duration) -> Result<(), String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| "an empty command".to_string())?;
    // A group of its own, so that a timeout ends what it started too.
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let pid = child.id();
    // The wait on a thread of its own, so that this one can give up on it.
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    match finished.recv_timeout(timeout) {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{program} ended with {status}")),
        Ok(Err(e)) => Err(format!("cannot wait for {program}: {e}")),
        Err(_) => {
            secrets_manager_agent_os::process::kill_process_group(pid);
            Err(format!(
                "{program} did not end within {} s and was killed",
                timeout.as_secs()
            ))
        }
    }
}

/// A user's id: a number as it is, a name looked up in `/etc/passwd`.
fn user_id(user: &str) -> Result<u32, String> {
    if let Ok(uid) = user.parse() {
        return Ok(uid);
    }
    let table = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| format!("cannot look up user {user:?} in /etc/passwd: {e}; give a number"))?;
    secrets_manager_agent_http::socket::id_in(&table, user)
        .ok_or_else(|| format!("no user {user:?} in /etc/passwd; give a number"))
}

fn group_id(group: &str) -> Result<u32, String> {
    secrets_manager_agent_http::socket::group_id(group).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_by_name_or_number() {
        let table = "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1001::/home/app:/bin/sh\n";
        let id_in = secrets_manager_agent_http::socket::id_in;
        assert_eq!(id_in(table, "app"), Some(1001));
        assert_eq!(id_in(table, "root"), Some(0));
        assert_eq!(id_in(table, "nobody"), None);
        assert_eq!(user_id("42"), Ok(42));
    }

    #[test]
    fn commands_are_bounded() {
        assert_eq!(
            run_command(&["true".into()], Duration::from_secs(10)),
            Ok(())
        );
        let failed = run_command(&["false".into()], Duration::from_secs(10)).unwrap_err();
        assert!(failed.contains("false ended with"), "{failed}");
        let slow =
            run_command(&["sleep".into(), "30".into()], Duration::from_millis(200)).unwrap_err();
        assert!(slow.contains("killed"), "{slow}");
        assert!(run_command(&["/no/such/program".into()], Duration::from_secs(1)).is_err());
    }
}
