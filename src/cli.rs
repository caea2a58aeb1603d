//! The command line: from the arguments to a [`Command`], as plain data, so
//! that every spelling the binary accepts (its own, and AWS's 3.x agent's
//! `sm start`) is pinned by a unit test and `main` only dispatches.
//!
//! Written by hand: the grammar is a handful of words and flags whose error
//! texts scripts and tests read, and a parser crate would need the same
//! mapping of its own errors to these texts.

use std::fmt;
use std::path::{Path, PathBuf};

use secrets_manager_agent::probe::{Probe, Target};

pub const USAGE: &str = "\
Serves AWS Secrets Manager secrets, cached, on http://127.0.0.1:2773.

Usage: secrets-manager-agent [--config FILE]
       secrets-manager-agent sm start [--config FILE]
                                       The same, spelled as AWS's 3.x agent's;
                                       without --config it reads this file if
                                       it exists, else uses the defaults:
                                       /etc/aws-workload-credentials-provider/config.toml
       secrets-manager-agent token     Print a fresh random token (64 hex digits)
       secrets-manager-agent ping [--ready] [--port N] [--config FILE]
                                       Exit 0 if the agent answers /ping (with
                                       --ready: /ready) with 200: for health
                                       checks, no curl needed
       secrets-manager-agent get ID [--version-stage S] [--version-id V] [--json]
       secrets-manager-agent get --parameter NAME [--with-decryption] [--json]
                   [--port N] [--config FILE]
                                       Print a secret's SecretString (the bytes of
                                       SecretBinary) or a parameter's Value,
                                       fetched through the running agent with
                                       the token from the token variables
       secrets-manager-agent exec [--config FILE] --env NAME=REF [--env NAME=REF ...]
                   -- COMMAND [ARGS...]
                                       Run COMMAND with secrets in its
                                       environment, fetched with the agent's
                                       config and credentials (REF: ID, ID#KEY,
                                       ssm:NAME or ECS's ARN form); passes
                                       signals on, reaps zombies (fit to be a
                                       container's PID 1) and exits with
                                       COMMAND's status (docs/programs.md)
       secrets-manager-agent render [--config FILE]
                                       Render the config's [[templates]] into
                                       their files once, then exit (non-zero
                                       if any could not be rendered)
       secrets-manager-agent lambda-extension [--config FILE]
                                       Run as an AWS Lambda extension (automatic
                                       when started from /opt/extensions/)

Options:
  --config FILE   TOML config file (keys as AWS's agent, flat or 3.x's nested
                  layout; all optional)
  -h, --help      Print this help
  -V, --version   Print the version

Requests need the token from AWS_TOKEN (or AWS_SESSION_TOKEN,
AWS_CONTAINER_AUTHORIZATION_TOKEN; `file:///path` reads it from a file) in the
X-Aws-Parameters-Secrets-Token header:
  curl -H \"X-Aws-Parameters-Secrets-Token: $AWS_TOKEN\" \\
       'http://localhost:2773/secretsmanager/get?secretId=MySecret'
";

/// Where AWS's 3.x agent reads its config when `sm start` names none; its
/// systemd unit relies on that.
pub const SM_DEFAULT_CONFIG: &str = "/etc/aws-workload-credentials-provider/config.toml";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run {
        config: Option<PathBuf>,
    },
    /// `sm start`: `Run`, but without `--config` the 3.x default file is read
    /// when it exists ([`sm_config`]).
    SmStart {
        config: Option<PathBuf>,
    },
    Lambda {
        config: Option<PathBuf>,
    },
    Token,
    /// `ping` and `get`: ask a running agent.
    Ping {
        config: Option<PathBuf>,
        port: Option<u16>,
        probe: Probe,
    },
    Get {
        config: Option<PathBuf>,
        port: Option<u16>,
        target: Target,
        json: bool,
    },
    /// `render`: every `[[templates]]` of the config rendered once.
    Render {
        config: Option<PathBuf>,
    },
    /// `exec`: COMMAND with each `--env NAME=REF`'s value in its environment.
    Exec {
        config: Option<PathBuf>,
        /// (NAME, REF) in the order given; names checked and unique.
        env: Vec<(String, String)>,
        /// The program and its arguments; never empty.
        command: Vec<String>,
    },
    Help,
    Version,
}

/// A command line the binary does not take; `main` prints it before the
/// usage text and exits with status 2.
#[derive(Debug, PartialEq, Eq)]
pub enum UsageError {
    Unknown(String),
    /// `sm` followed by something other than `start`.
    SmAction(String),
    SmNoAction,
    /// `--config` or `-c` last, before `ping`/`get`'s words or without them.
    NoConfigPath,
    /// A flag of `ping` or `get` last.
    NoValue(String),
    BadPort(String),
    GetWhat,
    GetBoth,
    /// A secret's flag with `--parameter`, or `--with-decryption` with a secret.
    GetMixed,
    /// `exec` without `--` before its command.
    ExecNoSeparator,
    /// `exec ... --` and nothing after it.
    ExecNoCommand,
    /// `--env` whose value has no `=`.
    EnvNoEquals(String),
    /// `--env NAME=REF` whose NAME is no variable name.
    EnvBadName(String),
    /// The same NAME in two `--env`s.
    EnvTwice(String),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::Unknown(arg) => write!(f, "unknown argument `{arg}`"),
            UsageError::SmAction(other) => write!(
                f,
                "unknown action `sm {other}`: the only action is `sm start [--config FILE]`"
            ),
            UsageError::SmNoAction => {
                f.write_str("`sm` needs an action: `sm start [--config FILE]`")
            }
            UsageError::NoConfigPath => f.write_str("--config needs a file path"),
            UsageError::NoValue(flag) => write!(f, "{flag} needs a value"),
            UsageError::BadPort(text) => {
                write!(f, "--port {text}: expected a port from 1 to 65535")
            }
            UsageError::GetWhat => f.write_str("get needs a secret ID or --parameter NAME"),
            UsageError::GetBoth => {
                f.write_str("get takes a secret ID or --parameter NAME, not both")
            }
            UsageError::GetMixed => f.write_str(
                "--version-id and --version-stage are for secrets, \
                 --with-decryption for parameters",
            ),
            UsageError::ExecNoSeparator => f.write_str(
                "exec needs `--` before the command: exec --env NAME=REF -- COMMAND [ARGS...]",
            ),
            UsageError::ExecNoCommand => f.write_str("exec needs a command after `--`"),
            UsageError::EnvNoEquals(value) => {
                write!(
                    f,
                    "--env {value}: expected NAME=REF, e.g. --env DB_PASSWORD=prod/db#password"
                )
            }
            UsageError::EnvBadName(name) if name.is_empty() => {
                f.write_str("--env =...: the variable name before `=` is empty")
            }
            UsageError::EnvBadName(name) => write!(
                f,
                "--env {name}=...: {name:?} is not a variable name (letters, digits and _, \
                 not starting with a digit)"
            ),
            UsageError::EnvTwice(name) => {
                write!(
                    f,
                    "--env {name}=... is given twice: give each variable once"
                )
            }
        }
    }
}

impl std::error::Error for UsageError {}

/// The arguments after the program's name. `ping` and `get` must come first;
/// `lambda-extension` and `sm start` too, followed only by `--config`;
/// `token` stands alone; `--help` and `--version` win wherever they come.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, UsageError> {
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some("exec") {
        args.next();
        return parse_exec(args);
    }
    if let Some(which @ ("ping" | "get")) = args.peek().map(String::as_str) {
        let get = which == "get";
        args.next();
        return parse_client(get, args);
    }
    let (mut config, mut lambda, mut sm_start, mut render) = (None, false, false, false);
    let mut first = true;
    while let Some(arg) = args.next() {
        let is_first = std::mem::replace(&mut first, false);
        match arg.as_str() {
            "lambda-extension" if is_first => lambda = true,
            "render" if is_first => render = true,
            // AWS's 3.x agent: `sm start`, the only action of `sm` there.
            "sm" if is_first => match args.next() {
                Some(action) if action == "start" => sm_start = true,
                Some(other) => return Err(UsageError::SmAction(other)),
                None => return Err(UsageError::SmNoAction),
            },
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "token" if config.is_none() && args.peek().is_none() => return Ok(Command::Token),
            "--config" | "-c" => config = Some(args.next().ok_or(UsageError::NoConfigPath)?),
            _ => match arg.strip_prefix("--config=") {
                Some(path) => config = Some(path.to_string()),
                None => return Err(UsageError::Unknown(arg)),
            },
        }
    }
    let config = config.map(PathBuf::from);
    Ok(if lambda {
        Command::Lambda { config }
    } else if render {
        Command::Render { config }
    } else if sm_start {
        Command::SmStart { config }
    } else {
        Command::Run { config }
    })
}

/// The arguments of `ping` (`get` false) and `get`.
fn parse_client(get: bool, mut args: impl Iterator<Item = String>) -> Result<Command, UsageError> {
    let (mut config, mut port, mut json, mut decrypt) = (None, None, false, false);
    let mut probe = Probe::Alive;
    let (mut id, mut parameter, mut version_id, mut version_stage) = (None, None, None, None);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| UsageError::NoValue(arg.clone()));
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--config" | "-c" => config = Some(PathBuf::from(value()?)),
            "--port" => {
                let text = value()?;
                match text.parse::<u16>() {
                    Ok(n) if n != 0 => port = Some(n),
                    _ => return Err(UsageError::BadPort(text)),
                }
            }
            "--ready" if !get => probe = Probe::Ready,
            "--json" if get => json = true,
            "--with-decryption" if get => decrypt = true,
            "--parameter" if get => parameter = Some(value()?),
            "--version-id" if get => version_id = Some(value()?),
            "--version-stage" if get => version_stage = Some(value()?),
            other if get && id.is_none() && !other.starts_with('-') => id = Some(arg),
            _ => return Err(UsageError::Unknown(arg)),
        }
    }
    if !get {
        return Ok(Command::Ping {
            config,
            port,
            probe,
        });
    }
    let target = match (id, parameter) {
        (Some(id), None) if !decrypt => Target::Secret {
            id,
            version_id,
            version_stage,
        },
        (None, Some(name)) if version_id.is_none() && version_stage.is_none() => {
            Target::Parameter {
                name,
                with_decryption: decrypt,
            }
        }
        (None, None) => return Err(UsageError::GetWhat),
        (Some(_), Some(_)) => return Err(UsageError::GetBoth),
        _ => return Err(UsageError::GetMixed),
    };
    Ok(Command::Get {
        config,
        port,
        target,
        json,
    })
}

/// `exec`'s arguments: options up to `--`, the command after it.
fn parse_exec(mut args: impl Iterator<Item = String>) -> Result<Command, UsageError> {
    let (mut config, mut env) = (None, Vec::<(String, String)>::new());
    loop {
        let Some(arg) = args.next() else {
            return Err(UsageError::ExecNoSeparator);
        };
        let mut value = || args.next().ok_or_else(|| UsageError::NoValue(arg.clone()));
        let assignment = match arg.as_str() {
            "--" => break,
            "-h" | "--help" => return Ok(Command::Help),
            "--config" | "-c" => {
                config = Some(PathBuf::from(value()?));
                continue;
            }
            "--env" | "-e" => value()?,
            _ => match (arg.strip_prefix("--config="), arg.strip_prefix("--env=")) {
                (Some(path), _) => {
                    config = Some(PathBuf::from(path));
                    continue;
                }
                (_, Some(assignment)) => assignment.to_string(),
                _ => return Err(UsageError::Unknown(arg)),
            },
        };
        let Some((name, reference)) = assignment.split_once('=') else {
            return Err(UsageError::EnvNoEquals(assignment));
        };
        if !is_variable_name(name) {
            return Err(UsageError::EnvBadName(name.to_string()));
        }
        if env.iter().any(|(seen, _)| seen == name) {
            return Err(UsageError::EnvTwice(name.to_string()));
        }
        env.push((name.to_string(), reference.to_string()));
    }
    let command: Vec<String> = args.collect();
    if command.is_empty() {
        return Err(UsageError::ExecNoCommand);
    }
    Ok(Command::Exec {
        config,
        env,
        command,
    })
}

/// `[A-Za-z_][A-Za-z0-9_]*`: what a shell takes as a name, and so what a
/// program can read back from its environment by name.
fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'A'..=b'Z' | b'a'..=b'z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `sm start`'s config: the one named, else 3.x's default file if it exists.
pub fn sm_config(named: Option<PathBuf>, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    named.or_else(|| {
        let default = Path::new(SM_DEFAULT_CONFIG);
        exists(default).then(|| default.to_path_buf())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Command, UsageError> {
        parse(list.iter().map(|s| s.to_string()))
    }

    fn error(list: &[&str]) -> String {
        args(list).unwrap_err().to_string()
    }

    fn path(p: &str) -> Option<PathBuf> {
        Some(PathBuf::from(p))
    }

    #[test]
    fn command_line() {
        assert_eq!(args(&[]), Ok(Command::Run { config: None }));
        for (list, config) in [
            (&["--config", "a.toml"][..], "a.toml"),
            (&["-c", "a.toml"], "a.toml"),
            (&["--config=b.toml"], "b.toml"),
            (&["--config", "a.toml", "--config=b.toml"], "b.toml"),
        ] {
            assert_eq!(
                args(list),
                Ok(Command::Run {
                    config: path(config)
                })
            );
        }
        assert_eq!(args(&["--help"]), Ok(Command::Help));
        assert_eq!(args(&["-h"]), Ok(Command::Help));
        assert_eq!(args(&["--version"]), Ok(Command::Version));
        assert_eq!(args(&["-V"]), Ok(Command::Version));
        assert_eq!(
            args(&["--bogus", "--help"]),
            Err(UsageError::Unknown("--bogus".into()))
        );
        assert_eq!(args(&["--config", "a.toml", "--help"]), Ok(Command::Help));
        assert_eq!(args(&["token"]), Ok(Command::Token));
        assert_eq!(
            args(&["lambda-extension"]),
            Ok(Command::Lambda { config: None })
        );
        assert_eq!(
            args(&["lambda-extension", "--config", "c.toml"]),
            Ok(Command::Lambda {
                config: path("c.toml")
            })
        );
        assert!(args(&["--config", "c.toml", "lambda-extension"]).is_err());
        assert_eq!(
            args(&["render", "--config", "t.toml"]),
            Ok(Command::Render {
                config: path("t.toml")
            })
        );
        assert_eq!(args(&["render"]), Ok(Command::Render { config: None }));
        assert!(args(&["--config", "t.toml", "render"]).is_err());
        assert!(args(&["token", "extra"]).is_err());
        assert!(args(&["--config", "c.toml", "token"]).is_err());
        assert_eq!(error(&["--config"]), "--config needs a file path");
        assert_eq!(error(&["-c"]), "--config needs a file path");
        assert_eq!(error(&["--bogus"]), "unknown argument `--bogus`");
    }

    #[test]
    fn ping_and_get_arguments() {
        assert_eq!(
            args(&["ping"]),
            Ok(Command::Ping {
                config: None,
                port: None,
                probe: Probe::Alive
            })
        );
        assert_eq!(
            args(&["ping", "--port", "2800", "--config", "a.toml", "--ready"]),
            Ok(Command::Ping {
                config: path("a.toml"),
                port: Some(2800),
                probe: Probe::Ready
            })
        );
        assert_eq!(args(&["ping", "--help"]), Ok(Command::Help));
        assert_eq!(
            args(&["get", "prod/db", "--version-stage", "AWSPREVIOUS", "--json"]),
            Ok(Command::Get {
                config: None,
                port: None,
                target: Target::Secret {
                    id: "prod/db".into(),
                    version_id: None,
                    version_stage: Some("AWSPREVIOUS".into())
                },
                json: true
            })
        );
        assert_eq!(
            args(&[
                "get",
                "--parameter",
                "/a",
                "--with-decryption",
                "-c",
                "x.toml"
            ]),
            Ok(Command::Get {
                config: path("x.toml"),
                port: None,
                target: Target::Parameter {
                    name: "/a".into(),
                    with_decryption: true
                },
                json: false
            })
        );
        for (list, expected) in [
            (&["get"][..], "get needs a secret ID or --parameter NAME"),
            (
                &["get", "a", "--parameter", "b"],
                "get takes a secret ID or --parameter NAME, not both",
            ),
            (
                &["get", "a", "--with-decryption"],
                "--version-id and --version-stage are for secrets, --with-decryption for parameters",
            ),
            (
                &["get", "--parameter", "b", "--version-stage", "S"],
                "--version-id and --version-stage are for secrets, --with-decryption for parameters",
            ),
            (&["get", "a", "b"], "unknown argument `b`"),
            (&["ping", "a"], "unknown argument `a`"),
            (&["ping", "--json"], "unknown argument `--json`"),
            (&["get", "a", "--ready"], "unknown argument `--ready`"),
            (&["ping", "--config=a.toml"], "unknown argument `--config=a.toml`"),
            (&["ping", "--port", "0"], "--port 0: expected a port from 1 to 65535"),
            (&["ping", "--port", "65536"], "--port 65536: expected a port from 1 to 65535"),
            (&["ping", "--port"], "--port needs a value"),
            (&["ping", "-c"], "-c needs a value"),
            (&["get", "--parameter"], "--parameter needs a value"),
        ] {
            assert_eq!(error(list), expected, "{list:?}");
        }
    }

    #[test]
    fn sm_start_as_aws_3x_starts() {
        for (list, config) in [
            (&["sm", "start", "--config", "a.toml"][..], "a.toml"),
            (&["sm", "start", "-c", "a.toml"], "a.toml"),
            (&["sm", "start", "--config=b.toml"], "b.toml"),
        ] {
            assert_eq!(
                args(list),
                Ok(Command::SmStart {
                    config: path(config)
                })
            );
        }
        assert_eq!(
            args(&["sm", "start"]),
            Ok(Command::SmStart { config: None })
        );
        assert_eq!(args(&["sm", "start", "--help"]), Ok(Command::Help));
        for (list, expected) in [
            (
                &["sm"][..],
                "`sm` needs an action: `sm start [--config FILE]`",
            ),
            (
                &["sm", "stop"],
                "unknown action `sm stop`: the only action is `sm start [--config FILE]`",
            ),
            (
                &["sm", "--config", "a.toml"],
                "unknown action `sm --config`: the only action is `sm start [--config FILE]`",
            ),
            (&["sm", "start", "extra"], "unknown argument `extra`"),
            (&["sm", "start", "sm", "start"], "unknown argument `sm`"),
            (
                &["--config", "a.toml", "sm", "start"],
                "unknown argument `sm`",
            ),
            (&["acm", "start"], "unknown argument `acm`"),
        ] {
            assert_eq!(error(list), expected, "{list:?}");
        }
        // Without --config: 3.x's default file when it exists, else defaults.
        let named = path("a.toml");
        assert_eq!(sm_config(named.clone(), |_| true), named);
        assert_eq!(
            sm_config(None, |p| p == Path::new(SM_DEFAULT_CONFIG)),
            path(SM_DEFAULT_CONFIG)
        );
        assert_eq!(sm_config(None, |_| false), None);
    }

    fn exec(config: Option<&str>, env: &[(&str, &str)], command: &[&str]) -> Command {
        Command::Exec {
            config: config.map(PathBuf::from),
            env: env
                .iter()
                .map(|(n, r)| (n.to_string(), r.to_string()))
                .collect(),
            command: command.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn exec_arguments() {
        for (list, want) in [
            (
                &[
                    "exec",
                    "--env",
                    "DB=prod/db#password",
                    "--",
                    "app",
                    "--port",
                    "80",
                ][..],
                exec(
                    None,
                    &[("DB", "prod/db#password")],
                    &["app", "--port", "80"],
                ),
            ),
            (
                &[
                    "exec",
                    "--config",
                    "a.toml",
                    "--env=A=x",
                    "-e",
                    "_b9=ssm:/p=q",
                    "--",
                    "sh",
                    "-c",
                    "env",
                ],
                exec(
                    Some("a.toml"),
                    &[("A", "x"), ("_b9", "ssm:/p=q")],
                    &["sh", "-c", "env"],
                ),
            ),
            (
                &["exec", "-c", "b.toml", "--", "app"],
                exec(Some("b.toml"), &[], &["app"]),
            ),
            (
                &["exec", "--config=c.toml", "--env", "K=", "--", "app"],
                exec(Some("c.toml"), &[("K", "")], &["app"]),
            ),
            // After `--` everything is the command's, flags and `--` included.
            (
                &["exec", "--", "app", "--env", "X=y", "--", "--help"],
                exec(None, &[], &["app", "--env", "X=y", "--", "--help"]),
            ),
            (&["exec", "--help", "--", "app"], Command::Help),
        ] {
            assert_eq!(args(list), Ok(want), "{list:?}");
        }
        for (list, expected) in [
            (
                &["exec", "--env", "A=b", "app"][..],
                "unknown argument `app`",
            ),
            (
                &["exec", "--env", "A=b"],
                "exec needs `--` before the command: exec --env NAME=REF -- COMMAND [ARGS...]",
            ),
            (
                &["exec"],
                "exec needs `--` before the command: exec --env NAME=REF -- COMMAND [ARGS...]",
            ),
            (
                &["exec", "--env", "A=b", "--"],
                "exec needs a command after `--`",
            ),
            (
                &["exec", "--env", "A", "--", "app"],
                "--env A: expected NAME=REF, e.g. --env DB_PASSWORD=prod/db#password",
            ),
            (
                &["exec", "--env", "=x", "--", "app"],
                "--env =...: the variable name before `=` is empty",
            ),
            (
                &["exec", "--env", "9A=x", "--", "app"],
                "--env 9A=...: \"9A\" is not a variable name (letters, digits and _, \
                 not starting with a digit)",
            ),
            (
                &["exec", "--env", "A-B=x", "--", "app"],
                "--env A-B=...: \"A-B\" is not a variable name (letters, digits and _, \
                 not starting with a digit)",
            ),
            (
                &["exec", "--env", "É=x", "--", "app"],
                "--env É=...: \"É\" is not a variable name (letters, digits and _, \
                 not starting with a digit)",
            ),
            (
                &["exec", "--env", "A=x", "--env=A=y", "--", "app"],
                "--env A=... is given twice: give each variable once",
            ),
            (&["exec", "--env"], "--env needs a value"),
            (&["exec", "--config"], "--config needs a value"),
            (
                &["exec", "--bogus", "--", "app"],
                "unknown argument `--bogus`",
            ),
        ] {
            assert_eq!(error(list), expected, "{list:?}");
        }
        // `exec` only as the first word.
        assert_eq!(
            error(&["--config", "a.toml", "exec"]),
            "unknown argument `exec`"
        );
    }

    #[test]
    fn variable_names() {
        for good in ["A", "_", "a_1", "_9", "PATH"] {
            assert!(is_variable_name(good), "{good}");
        }
        for bad in ["", "1A", "A-B", "A B", "A.B", "Ä"] {
            assert!(!is_variable_name(bad), "{bad}");
        }
    }
}
