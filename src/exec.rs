//! `exec`: runs a program with secrets in its environment, and stays beside
//! it as its supervisor, so that it can be a container's entry point.
//!
//! Programs that read their settings from the environment (most twelve-factor
//! apps) get their secrets without code of their own and without the secret
//! ever being written to an image, a task definition or a file. The steps:
//!
//! 1. every `--env NAME=REF` is parsed (`reference`) before anything is
//!    fetched, so a typo stops at once;
//! 2. the values are fetched in parallel through the agent's own cache
//!    machinery (`agent::cache_for`: the same config, credentials, region,
//!    endpoints, retries), and each picked out of its answer; any failure
//!    stops with one line naming the variable and the reference, and the
//!    program never starts half configured;
//! 3. the program starts with the current environment plus those variables,
//!    and the copies held here are overwritten;
//! 4. until it ends, the signals a supervisor is sent (see [`FORWARDED`]) are
//!    passed on to it, every child that ends is reaped (this process is a
//!    child subreaper, and PID 1 in a container), and its status becomes
//!    ours: its exit status, or 128 + the signal that killed it.
//!
//! The policy (which signals, which statuses) is plain Rust here; the OS
//! calls are crates/os's `supervise`.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;

use crate::agent;
use crate::config::{Config, ConfigError};
use crate::logger;
use crate::reference::{self, BadReference, PickError, Picked, Reference};
use secrets_manager_agent_aws::UpstreamError;
use secrets_manager_agent_cache::roles::Roles;
use secrets_manager_agent_cache::{Answer, Cache, Clients};
use secrets_manager_agent_core::env;
use secrets_manager_agent_core::secret::SecretBytes;
use secrets_manager_agent_os::supervise::{self, Ended, SignalSet};
use secrets_manager_agent_os::supervise::{
    SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH,
};

/// The signals passed on to the program: those that container runtimes,
/// orchestrators and terminals send to stop, reload or resize it.
pub const FORWARDED: [i32; 7] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH];

/// Before the program starts, these end `exec` (with 128 + the signal, as
/// if the program had been killed by it); the other forwarded signals have
/// nobody to go to yet and are dropped.
const STOP_BEFORE_START: [i32; 4] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT];

/// How many values are fetched at once: each missing one is an upstream
/// call on a thread of its own.
const PARALLEL: usize = 16;

/// The status of a program that could not be found, and of one found but
/// not runnable (not executable, a bad interpreter), as env(1) and shells
/// exit.
pub const NOT_FOUND: u8 = 127;
pub const NOT_RUNNABLE: u8 = 126;

/// One `--env NAME=REF`, parsed.
struct Variable {
    name: String,
    text: String,
    reference: Reference,
}

/// Why the program did not start (or `exec` could not supervise it). Each
/// says what to do; none holds a value.
#[derive(Debug)]
pub enum Error {
    Config(ConfigError),
    /// Logging could not be set up.
    Logging(io::Error),
    /// A REF that is no reference.
    Reference {
        name: String,
        bad: BadReference,
    },
    /// The cache could not be built (region, endpoints, tuning variables).
    Setup(agent::Error),
    /// AWS (or the credentials chain) refused or failed the fetch.
    Fetch {
        name: String,
        reference: String,
        error: UpstreamError,
    },
    /// The answer holds no value for the variable.
    Pick {
        name: String,
        reference: String,
        error: PickError,
    },
    /// The value holds a NUL byte, which no environment variable can.
    Nul {
        name: String,
        reference: String,
    },
    /// Blocking the signals, the subreaper flag, or the fetching thread.
    Signals(io::Error),
    /// The fetching thread ended without an answer (it panicked).
    NoAnswer,
    /// A signal to stop came before the program started.
    Stopped(i32),
    /// The program could not be started.
    Spawn {
        program: String,
        error: io::Error,
    },
    /// Waiting for the program failed.
    Wait(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "{e}"),
            Error::Logging(e) => write!(f, "cannot set up logging: {e}"),
            Error::Reference { name, bad } => write!(f, "--env {name}: {bad}"),
            Error::Setup(e) => write!(f, "{e}"),
            Error::Fetch {
                name,
                reference,
                error,
            } => {
                write!(f, "{name} ({reference}): {error}")?;
                if let UpstreamError::Service { .. } = error {
                    f.write_str(
                        " (check the reference, the region and that the credentials may read it)",
                    )?;
                }
                f.write_str("; the command was not started")
            }
            Error::Pick {
                name,
                reference,
                error,
            } => write!(
                f,
                "{name} ({reference}): {error}; the command was not started"
            ),
            Error::Nul { name, reference } => write!(
                f,
                "{name} ({reference}): the value holds a NUL byte, which an environment \
                 variable cannot; the command was not started"
            ),
            Error::Signals(e) => write!(f, "cannot set up signal handling: {e}"),
            Error::NoAnswer => f.write_str(
                "fetching the values failed without an answer (a bug: please report it); \
                 the command was not started",
            ),
            Error::Stopped(signal) => write!(
                f,
                "signal {signal} came before the command started; it was not started"
            ),
            Error::Spawn { program, error } => match error.kind() {
                io::ErrorKind::NotFound => {
                    write!(f, "{program}: command not found (check the name and PATH)")
                }
                _ => write!(f, "{program}: cannot run it: {error}"),
            },
            Error::Wait(e) => write!(f, "cannot wait for the command: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The exit status `exec` ends with: 127/126 for a program that could
    /// not be started, 128 + the signal for a stop before it, 1 otherwise.
    pub fn status(&self) -> u8 {
        match self {
            Error::Spawn { error, .. } if error.kind() == io::ErrorKind::NotFound => NOT_FOUND,
            Error::Spawn { .. } => NOT_RUNNABLE,
            Error::Stopped(signal) => killed_status(*signal),
            _ => 1,
        }
    }
}

/// `exec`'s exit status for how the program ended: its own, or 128 + the
/// signal that killed it (as shells report it).
pub fn exit_status(ended: Ended) -> u8 {
    match ended {
        Ended::Exited(code) => (code & 0xff) as u8,
        Ended::Killed(signal) => killed_status(signal),
    }
}

fn killed_status(signal: i32) -> u8 {
    u8::try_from(128 + signal.clamp(0, 127)).unwrap_or(u8::MAX)
}

/// What a signal means once the program runs.
#[derive(Debug, PartialEq, Eq)]
pub enum OnSignal {
    /// Pass it on to the program.
    Forward,
    /// A child ended: reap.
    Reap,
}

pub fn on_signal(signal: i32) -> Option<OnSignal> {
    if signal == SIGCHLD {
        Some(OnSignal::Reap)
    } else if FORWARDED.contains(&signal) {
        Some(OnSignal::Forward)
    } else {
        None
    }
}

/// Runs `command` with `env`'s values in its environment; returns its exit
/// status once it ends.
pub fn run(
    config_path: Option<&Path>,
    env: &[(String, String)],
    command: &[String],
) -> Result<u8, Error> {
    let Some((program, arguments)) = command.split_first() else {
        // The command line refuses an empty command; this is for other callers.
        return Err(Error::Spawn {
            program: String::new(),
            error: io::Error::from(io::ErrorKind::NotFound),
        });
    };
    let variables = parse_all(env)?;
    let config = Config::load_with_env(config_path, env::var).map_err(Error::Config)?;
    // Warnings and errors only, on stderr: the program's output is shared
    // with ours, and a log file would land in the program's directory.
    let level = config.log_level.to_filter().min(log::LevelFilter::Warn);
    logger::init(level, false, config.log_json).map_err(Error::Logging)?;
    // Before any thread exists, so that every thread inherits the mask and
    // only this one takes the signals.
    let signals = SignalSet::new(&[&FORWARDED[..], &[SIGCHLD]].concat());
    signals.block().map_err(Error::Signals)?;
    supervise::become_subreaper().map_err(Error::Signals)?;
    let values = fetch_while_listening(&signals, config, variables)?;
    let mut child = Command::new(program);
    child.args(arguments);
    supervise::unblock_signals_in_child(&mut child);
    for (name, value) in &values {
        child.env(name, OsStr::from_bytes(value));
    }
    let spawned = child.spawn();
    // The copies held here; std's own (in `child`) are freed, not overwritten.
    drop(values);
    drop(child);
    let child = spawned.map_err(|error| Error::Spawn {
        program: program.clone(),
        error,
    })?;
    supervise_child(&signals, child.id())
}

/// Every REF parsed, before anything is fetched.
fn parse_all(env: &[(String, String)]) -> Result<Vec<Variable>, Error> {
    env.iter()
        .map(|(name, text)| match Reference::parse(text) {
            Ok(reference) => Ok(Variable {
                name: name.clone(),
                text: text.clone(),
                reference,
            }),
            Err(bad) => Err(Error::Reference {
                name: name.clone(),
                bad,
            }),
        })
        .collect()
}

/// The values, fetched on a thread of their own while this one takes the
/// signals: a stop signal during a slow fetch ends `exec` at once. The
/// fetching thread wakes this one with a SIGCHLD to the process when done.
fn fetch_while_listening(
    signals: &SignalSet,
    config: Config,
    variables: Vec<Variable>,
) -> Result<Vec<(String, SecretBytes)>, Error> {
    if variables.is_empty() {
        // Nothing to fetch: no region or credentials needed.
        return Ok(Vec::new());
    }
    let (done, fetched) = mpsc::channel();
    std::thread::Builder::new()
        .name("fetch".into())
        .spawn(move || {
            // Dropped last, after the answer is sent, or when the thread
            // panics: the waiting thread wakes either way.
            let _wake = WakeOnDrop;
            let values = agent::cache_for(&config)
                .map_err(Error::Setup)
                .and_then(|cache| {
                    let values = fetch_all(&cache, &variables);
                    cache.wipe();
                    values
                });
            let _ = done.send(values);
        })
        .map_err(Error::Signals)?;
    loop {
        let signal = signals.wait();
        match fetched.try_recv() {
            Ok(values) => return values,
            Err(mpsc::TryRecvError::Disconnected) => return Err(Error::NoAnswer),
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if STOP_BEFORE_START.contains(&signal) {
            return Err(Error::Stopped(signal));
        }
    }
}

/// Wakes the thread taking the signals with a SIGCHLD to this process.
struct WakeOnDrop;

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        let _ = supervise::send_self(SIGCHLD);
    }
}

/// Each variable's value, in the order given; the first failure (in that
/// order) is the error. Up to [`PARALLEL`] fetches run at once.
fn fetch_all(
    cache: &Cache<Roles<Clients>>,
    variables: &[Variable],
) -> Result<Vec<(String, SecretBytes)>, Error> {
    let mut values = Vec::with_capacity(variables.len());
    for batch in variables.chunks(PARALLEL) {
        // Every fetch of the batch started before the first is waited for.
        let answers: Vec<Answer> = batch
            .iter()
            .map(|v| cache.answer_or_wait(&v.reference.key, false))
            .collect();
        for (variable, answer) in batch.iter().zip(answers) {
            let served = match answer {
                Answer::Now(served, _) => served,
                Answer::Later(waiting) => waiting.result(),
            };
            let body = served.map_err(|error| Error::Fetch {
                name: variable.name.clone(),
                reference: variable.text.clone(),
                error,
            })?;
            let picked = reference::pick(
                &variable.reference.key,
                &body,
                variable.reference.json_key.as_deref(),
            )
            .map_err(|error| Error::Pick {
                name: variable.name.clone(),
                reference: variable.text.clone(),
                error,
            })?;
            values.push((variable.name.clone(), environment_value(variable, picked)?));
        }
    }
    Ok(values)
}

/// A picked value as an environment variable's: a string's bytes, or the
/// JSON of anything else; refused if it holds a NUL byte.
fn environment_value(variable: &Variable, picked: Picked) -> Result<SecretBytes, Error> {
    let (Picked::Text(value) | Picked::Json(value)) = picked;
    if value.contains(&0) {
        return Err(Error::Nul {
            name: variable.name.clone(),
            reference: variable.text.clone(),
        });
    }
    Ok(value)
}

/// Until the program ends: forwards [`FORWARDED`] signals to it, reaps every
/// child that ends, and returns the program's status.
fn supervise_child(signals: &SignalSet, child: u32) -> Result<u8, Error> {
    loop {
        let signal = signals.wait();
        match on_signal(signal) {
            Some(OnSignal::Forward) => {
                // It may have ended already: its SIGCHLD is next.
                if let Err(e) = supervise::send(child, signal) {
                    log::debug!("could not pass signal {signal} on: {e}");
                }
            }
            Some(OnSignal::Reap) => {
                // One SIGCHLD may stand for several children.
                while let Some((pid, ended)) = supervise::reap().map_err(Error::Wait)? {
                    if pid == child {
                        return Ok(exit_status(ended));
                    }
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_as_shells_report_them() {
        assert_eq!(exit_status(Ended::Exited(0)), 0);
        assert_eq!(exit_status(Ended::Exited(7)), 7);
        assert_eq!(exit_status(Ended::Exited(255)), 255);
        assert_eq!(exit_status(Ended::Killed(SIGTERM)), 143);
        assert_eq!(exit_status(Ended::Killed(SIGINT)), 130);
        assert_eq!(exit_status(Ended::Killed(9)), 137);
        assert_eq!(exit_status(Ended::Killed(200)), 255);
        let spawn = |kind| Error::Spawn {
            program: "app".into(),
            error: io::Error::from(kind),
        };
        assert_eq!(spawn(io::ErrorKind::NotFound).status(), 127);
        assert_eq!(
            spawn(io::ErrorKind::NotFound).to_string(),
            "app: command not found (check the name and PATH)"
        );
        assert_eq!(spawn(io::ErrorKind::PermissionDenied).status(), 126);
        assert_eq!(Error::Stopped(SIGTERM).status(), 143);
        assert_eq!(Error::Signals(io::Error::other("x")).status(), 1);
    }

    #[test]
    fn which_signals_do_what() {
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH] {
            assert_eq!(on_signal(signal), Some(OnSignal::Forward), "{signal}");
        }
        assert_eq!(on_signal(SIGCHLD), Some(OnSignal::Reap));
        assert_eq!(on_signal(9), None);
        assert!(STOP_BEFORE_START.iter().all(|s| FORWARDED.contains(s)));
    }

    fn variable(name: &str, text: &str) -> Variable {
        Variable {
            name: name.into(),
            text: text.into(),
            reference: Reference::parse(text).unwrap(),
        }
    }

    #[test]
    fn values_for_the_environment() {
        let v = variable("DB", "prod/db#port");
        let text = environment_value(&v, Picked::Text(SecretBytes::new(b"p w".to_vec()))).unwrap();
        assert_eq!(&*text, b"p w");
        let json = environment_value(&v, Picked::Json(SecretBytes::new(b"5432".to_vec()))).unwrap();
        assert_eq!(&*json, b"5432");
        let e = environment_value(&v, Picked::Text(SecretBytes::new(b"a\0secret".to_vec())))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "DB (prod/db#port): the value holds a NUL byte, which an environment variable \
             cannot; the command was not started"
        );
        assert!(!e.contains("secret\""));
    }

    #[test]
    fn every_reference_is_parsed_first() {
        let env = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(n, r)| (n.to_string(), r.to_string()))
                .collect()
        };
        let parsed = parse_all(&env(&[("A", "x"), ("B", "ssm:/p")])).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            parsed[1].reference.key,
            Reference::parse("ssm:/p").unwrap().key
        );
        let e = parse_all(&env(&[("A", "x"), ("B", "ssm:"), ("C", "#k")]))
            .err()
            .unwrap();
        assert_eq!(e.status(), 1);
        assert!(
            e.to_string()
                .starts_with("--env B: \"ssm:\" is not a reference"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_variable_and_reference() {
        let e = Error::Fetch {
            name: "DB".into(),
            reference: "prod/db".into(),
            error: UpstreamError::service(
                400,
                "ResourceNotFoundException",
                "Secrets Manager can't find the specified secret.",
            ),
        };
        assert_eq!(
            e.to_string(),
            "DB (prod/db): AWS answered 400 ResourceNotFoundException: Secrets Manager can't \
             find the specified secret. (check the reference, the region and that the \
             credentials may read it); the command was not started"
        );
        let e = Error::Pick {
            name: "PW".into(),
            reference: "prod/db#pw".into(),
            error: PickError::NoKey("pw".into()),
        };
        assert_eq!(
            e.to_string(),
            "PW (prod/db#pw): the secret has no JSON key \"pw\"; the command was not started"
        );
    }

    /// The program must not inherit the signals blocked here, and std's
    /// `Command` would pass them on (crates/os: supervise).
    #[test]
    fn the_program_gets_no_blocked_signals() {
        let blocked_in_child = |unblock: bool| {
            std::thread::spawn(move || {
                SignalSet::new(&[SIGTERM, SIGUSR1]).block().unwrap();
                let mut grep = Command::new("grep");
                grep.args(["^SigBlk:", "/proc/self/status"]);
                if unblock {
                    supervise::unblock_signals_in_child(&mut grep);
                }
                let out = grep.output().unwrap();
                String::from_utf8(out.stdout).unwrap().trim().to_string()
            })
            .join()
            .unwrap()
        };
        assert_eq!(blocked_in_child(true), "SigBlk:\t0000000000000000");
        // Why the helper is there: without it, both stay blocked.
        assert_eq!(blocked_in_child(false), "SigBlk:\t0000000000004200");
    }
}
