//! secrets-manager-agent: serves AWS Secrets Manager secrets, cached, on
//! http://127.0.0.1:2773, as a drop-in replacement for AWS's agent.
//!
//! This file only starts: it takes the command `cli` reads and hands over to
//! the library (`agent::run`, `agent::run_lambda`, `probe`, `exec`), then turns
//! the outcome into an exit status: 0, 1 for a failure, 2 for a command line
//! it does not take (`exec`: its program's status, docs/programs.md).
//! docs/design.md's "Code map" follows a request from there.

#![forbid(unsafe_code)]

mod cli;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cli::Command;
use secrets_manager_agent::agent::{self, lambda, NAME, VERSION};
use secrets_manager_agent::config::Config;
use secrets_manager_agent::{exec, logger, probe, template, token};
use secrets_manager_agent_core::env;

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
        cli::parse(std::env::args().skip(1))
    };
    let command = match command {
        Ok(command) => command,
        Err(usage) => {
            eprintln!("{NAME}: error: {usage}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("{NAME} {VERSION}");
            ExitCode::SUCCESS
        }
        Command::Token => match token::generate() {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => failed(&format_args!("cannot generate a token: {e}")),
        },
        Command::Ping {
            config,
            port,
            probe,
        } => ask_agent(config.as_deref(), |config| {
            println!("{}", probe::ping(probe::address(config, port), probe)?);
            Ok(())
        }),
        Command::Get {
            config,
            port,
            target,
            json,
        } => ask_agent(config.as_deref(), |config| {
            let agent = probe::address(config, port);
            probe::get(config, agent, &target, json, &mut std::io::stdout().lock())
        }),
        Command::Exec {
            config,
            env,
            command,
        } => match exec::run(config.as_deref(), &env, &command) {
            Ok(status) => ExitCode::from(status),
            Err(e) => {
                eprint!("{}", logger::fatal_line(NAME, &e.to_string()));
                ExitCode::from(e.status())
            }
        },
        Command::Render { config } => match template::run::run(config.as_deref()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(why) => failed(&why),
        },
        Command::Lambda { config } => report(agent::run_lambda(config.as_deref(), &argv0)),
        Command::Run { config } => report(agent::run(config.as_deref())),
        Command::SmStart { config } => {
            let config = cli::sm_config(config, Path::exists);
            report(agent::run(config.as_deref()))
        }
    }
}

/// A command that is not the agent failed: one line on stderr, status 1.
fn failed(why: &dyn fmt::Display) -> ExitCode {
    eprintln!("{NAME}: error: {}", logger::one_line(&why.to_string()));
    ExitCode::from(1)
}

/// `ping` and `get`: the config (for the port and the token settings), then
/// the call.
fn ask_agent(
    config: Option<&Path>,
    ask: impl FnOnce(&Config) -> Result<(), probe::Failed>,
) -> ExitCode {
    match Config::load_with_env(config, env::var) {
        Err(e) => failed(&e),
        Ok(config) => match ask(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(probe::Failed(why)) => failed(&why),
        },
    }
}

/// The agent's end: status 0 after a signal or Lambda's SHUTDOWN, else the
/// error, once on stderr (in the log's format) and in the log file if any.
fn report(result: Result<(), agent::Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = e.to_string();
            if logger::logs_to_file() {
                log::error!("{message}");
            }
            // Start-up errors can quote upstream text (an STS error message):
            // one line, escaped, like every log line.
            eprint!("{}", logger::fatal_line(NAME, &message));
            ExitCode::from(1)
        }
    }
}
