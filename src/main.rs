//! secrets-manager-agent: serves AWS Secrets Manager secrets, cached, on
//! http://127.0.0.1:2773, as a drop-in replacement for AWS's agent.
//!
//! This file reads the command line and hands over to the library
//! (`agent::run`, `agent::run_lambda`); docs/design.md's "Code map" follows a request
//! from there.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use secrets_manager_agent::agent::{self, lambda, NAME, VERSION};
use secrets_manager_agent::config::Config;
use secrets_manager_agent::{logger, probe, token};
use secrets_manager_agent_core::env;

const USAGE: &str = "\
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
const SM_DEFAULT_CONFIG: &str = "/etc/aws-workload-credentials-provider/config.toml";

#[derive(Debug)]
enum Command {
    Run {
        config: Option<PathBuf>,
    },
    /// `sm start`: `Run`, but without `--config` the 3.x default file is read
    /// when it exists.
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
        probe: probe::Probe,
    },
    Get {
        config: Option<PathBuf>,
        port: Option<u16>,
        target: probe::Target,
        json: bool,
    },
    Help,
    Version,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut args = args.peekable();
    if let Some(which @ ("ping" | "get")) = args.peek().map(String::as_str) {
        let get = which == "get";
        args.next();
        return parse_client(get, args);
    }
    let mut config = None;
    let mut lambda = false;
    let mut sm_start = false;
    let mut first = true;
    while let Some(arg) = args.next() {
        let is_first = std::mem::replace(&mut first, false);
        match arg.as_str() {
            "lambda-extension" if is_first => lambda = true,
            // AWS's 3.x agent: `sm start`, the only action of `sm` there.
            "sm" if is_first => match args.next().as_deref() {
                Some("start") => sm_start = true,
                Some(other) => {
                    return Err(format!(
                        "unknown action `sm {other}`: the only action is `sm start [--config FILE]`"
                    ))
                }
                None => return Err("`sm` needs an action: `sm start [--config FILE]`".into()),
            },
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "token" if config.is_none() && args.peek().is_none() => return Ok(Command::Token),
            "--config" | "-c" => {
                let path = args.next().ok_or("--config needs a file path")?;
                config = Some(PathBuf::from(path));
            }
            _ => match arg.strip_prefix("--config=") {
                Some(path) => config = Some(PathBuf::from(path)),
                None => return Err(format!("unknown argument `{arg}`")),
            },
        }
    }
    Ok(if lambda {
        Command::Lambda { config }
    } else if sm_start {
        Command::SmStart { config }
    } else {
        Command::Run { config }
    })
}

/// The arguments of `ping` (`get` false) and `get`.
fn parse_client(get: bool, mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let (mut config, mut port, mut json, mut decrypt) = (None, None, false, false);
    let mut probe = probe::Probe::Alive;
    let (mut id, mut parameter, mut version_id, mut version_stage) = (None, None, None, None);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--config" | "-c" => config = Some(PathBuf::from(value(&arg)?)),
            "--port" => {
                let text = value(&arg)?;
                let n = text.parse::<u16>().ok().filter(|&n| n != 0);
                port =
                    Some(n.ok_or_else(|| {
                        format!("--port {text}: expected a port from 1 to 65535")
                    })?);
            }
            "--ready" if !get => probe = probe::Probe::Ready,
            "--json" if get => json = true,
            "--with-decryption" if get => decrypt = true,
            "--parameter" if get => parameter = Some(value(&arg)?),
            "--version-id" if get => version_id = Some(value(&arg)?),
            "--version-stage" if get => version_stage = Some(value(&arg)?),
            other if get && id.is_none() && !other.starts_with('-') => id = Some(arg),
            other => return Err(format!("unknown argument `{other}`")),
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
        (Some(id), None) if !decrypt => probe::Target::Secret {
            id,
            version_id,
            version_stage,
        },
        (None, Some(name)) if version_id.is_none() && version_stage.is_none() => {
            probe::Target::Parameter {
                name,
                with_decryption: decrypt,
            }
        }
        (None, None) => return Err("get needs a secret ID or --parameter NAME".into()),
        (Some(_), Some(_)) => {
            return Err("get takes a secret ID or --parameter NAME, not both".into())
        }
        _ => {
            return Err("--version-id and --version-stage are for secrets, \
                        --with-decryption for parameters"
                .into())
        }
    };
    Ok(Command::Get {
        config,
        port,
        target,
        json,
    })
}

/// `ping` and `get`: the config (for the port and the token settings), then
/// the call; a failure is one line on stderr and exit status 1.
fn ask_agent(
    config: Option<&Path>,
    ask: impl FnOnce(&Config) -> Result<(), probe::Failed>,
) -> ExitCode {
    let result = Config::load_with_env(config, env::var)
        .map_err(|e| e.to_string())
        .and_then(|config| ask(&config).map_err(|probe::Failed(why)| why));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("{NAME}: error: {}", logger::one_line(&why));
            ExitCode::from(1)
        }
    }
}

/// `sm start`'s config: the one named, else 3.x's default file if it exists.
fn sm_config(named: Option<PathBuf>, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    named.or_else(|| {
        let default = Path::new(SM_DEFAULT_CONFIG);
        exists(default).then(|| default.to_path_buf())
    })
}

fn main() -> ExitCode {
    let argv0 = std::env::args().next().unwrap_or_default();
    let runtime_api = env::var("AWS_LAMBDA_RUNTIME_API");
    let command = if lambda::launched_as_extension(&argv0, runtime_api.as_deref()) {
        // Lambda starts extensions without arguments; a config file can be
        // named by SECRETS_MANAGER_AGENT_CONFIG instead.
        Ok(Command::Lambda {
            config: env::var("SECRETS_MANAGER_AGENT_CONFIG").map(PathBuf::from),
        })
    } else {
        parse_args(std::env::args().skip(1))
    };
    match command {
        Ok(Command::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("{NAME} {VERSION}");
            ExitCode::SUCCESS
        }
        Ok(Command::Token) => match token::generate() {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{NAME}: error: cannot generate a token: {e}");
                ExitCode::from(1)
            }
        },
        Ok(Command::Ping {
            config,
            port,
            probe,
        }) => ask_agent(config.as_deref(), |config| {
            println!("{}", probe::ping(probe::address(config, port), probe)?);
            Ok(())
        }),
        Ok(Command::Get {
            config,
            port,
            target,
            json,
        }) => ask_agent(config.as_deref(), |config| {
            let agent = probe::address(config, port);
            probe::get(config, agent, &target, json, &mut std::io::stdout().lock())
        }),
        Ok(Command::Lambda { config }) => report(agent::run_lambda(config.as_deref(), &argv0)),
        Ok(Command::Run { config }) => report(agent::run(config.as_deref())),
        Ok(Command::SmStart { config }) => {
            let config = sm_config(config, Path::exists);
            report(agent::run(config.as_deref()))
        }
        Err(message) => {
            eprintln!("{NAME}: error: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn report(result: Result<(), agent::Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = e.to_string();
            // Logged too when the log is a file; on stderr once is enough.
            if logger::logs_to_file() {
                log::error!("{message}");
            }
            // Start-up errors can quote upstream text (an STS error message):
            // one line, escaped, like every log line.
            eprintln!("{NAME}: error: {}", logger::one_line(&message));
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Command, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn command_line() {
        assert!(matches!(args(&[]), Ok(Command::Run { config: None })));
        assert!(
            matches!(args(&["--config", "a.toml"]), Ok(Command::Run { config: Some(p) }) if p.as_os_str() == "a.toml")
        );
        assert!(
            matches!(args(&["--config=b.toml"]), Ok(Command::Run { config: Some(p) }) if p.as_os_str() == "b.toml")
        );
        assert!(matches!(args(&["--help"]), Ok(Command::Help)));
        assert!(matches!(args(&["--version"]), Ok(Command::Version)));
        assert!(matches!(args(&["token"]), Ok(Command::Token)));
        assert!(matches!(
            args(&["lambda-extension"]),
            Ok(Command::Lambda { config: None })
        ));
        assert!(matches!(
            args(&["lambda-extension", "--config", "c.toml"]),
            Ok(Command::Lambda { config: Some(_) })
        ));
        assert!(args(&["--config", "c.toml", "lambda-extension"]).is_err());
        assert!(args(&["token", "extra"]).is_err());
        assert!(args(&["--config"]).is_err());
        assert!(args(&["--bogus"]).unwrap_err().contains("--bogus"));
    }

    #[test]
    fn ping_and_get_arguments() {
        assert!(matches!(
            args(&["ping"]),
            Ok(Command::Ping {
                config: None,
                port: None,
                probe: probe::Probe::Alive
            })
        ));
        assert!(matches!(
            args(&["ping", "--port", "2800", "--config", "a.toml", "--ready"]),
            Ok(Command::Ping {
                config: Some(_),
                port: Some(2800),
                probe: probe::Probe::Ready
            })
        ));
        let Ok(Command::Get { target, json, .. }) =
            args(&["get", "prod/db", "--version-stage", "AWSPREVIOUS", "--json"])
        else {
            panic!("not a get");
        };
        assert!(json);
        assert_eq!(
            target,
            probe::Target::Secret {
                id: "prod/db".into(),
                version_id: None,
                version_stage: Some("AWSPREVIOUS".into())
            }
        );
        let Ok(Command::Get { target, .. }) =
            args(&["get", "--parameter", "/a", "--with-decryption"])
        else {
            panic!("not a get");
        };
        assert_eq!(
            target,
            probe::Target::Parameter {
                name: "/a".into(),
                with_decryption: true
            }
        );
        for (list, must_name) in [
            (&["get"][..], "secret ID or --parameter"),
            (&["get", "a", "--parameter", "b"], "not both"),
            (&["get", "a", "--with-decryption"], "for parameters"),
            (
                &["get", "--parameter", "b", "--version-stage", "S"],
                "for secrets",
            ),
            (&["get", "a", "b"], "`b`"),
            (&["ping", "a"], "`a`"),
            (&["ping", "--json"], "--json"),
            (&["get", "a", "--ready"], "--ready"),
            (&["ping", "--port", "0"], "from 1 to 65535"),
            (&["ping", "--port"], "needs a value"),
        ] {
            let e = args(list).unwrap_err();
            assert!(e.contains(must_name), "{list:?}: {e}");
        }
    }

    #[test]
    fn sm_start_as_aws_3x_starts() {
        assert!(
            matches!(args(&["sm", "start", "--config", "a.toml"]), Ok(Command::SmStart { config: Some(p) }) if p.as_os_str() == "a.toml")
        );
        assert!(
            matches!(args(&["sm", "start", "-c", "a.toml"]), Ok(Command::SmStart { config: Some(p) }) if p.as_os_str() == "a.toml")
        );
        assert!(
            matches!(args(&["sm", "start", "--config=b.toml"]), Ok(Command::SmStart { config: Some(p) }) if p.as_os_str() == "b.toml")
        );
        assert!(matches!(
            args(&["sm", "start"]),
            Ok(Command::SmStart { config: None })
        ));
        assert!(matches!(
            args(&["sm", "start", "--help"]),
            Ok(Command::Help)
        ));
        for (list, must_name) in [
            (&["sm"][..], "sm start"),
            (&["sm", "stop"], "sm stop"),
            (&["sm", "--config", "a.toml"], "sm --config"),
            (&["sm", "start", "extra"], "extra"),
            (&["sm", "start", "sm", "start"], "sm"),
            (&["--config", "a.toml", "sm", "start"], "sm"),
            (&["acm", "start"], "acm"),
        ] {
            let e = args(list).unwrap_err();
            assert!(e.contains(must_name), "{list:?}: {e}");
        }
        assert!(args(&["sm", "stop"])
            .unwrap_err()
            .contains("sm start [--config FILE]"));
        // Without --config: 3.x's default file when it exists, else defaults.
        let named = Some(PathBuf::from("a.toml"));
        assert_eq!(sm_config(named.clone(), |_| true), named);
        assert_eq!(
            sm_config(None, |p| p == Path::new(SM_DEFAULT_CONFIG)),
            Some(PathBuf::from(SM_DEFAULT_CONFIG))
        );
        assert_eq!(sm_config(None, |_| false), None);
    }
}
