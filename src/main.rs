//! secrets-manager-agent: serves AWS Secrets Manager secrets, cached, on
//! http://127.0.0.1:2773, as a drop-in replacement for AWS's agent.
//!
//! This file is start-up only: read the command line and config, find the
//! token, region, endpoint and credentials, then hand over to the server.
//! A request's path: `server` (socket) → `api` (checks, routes) → `cache` →
//! `aws::secrets_manager` (signed call) and back.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use secrets_manager_agent::{
    api, aws, cache, config, credentials, lambda, logger, os, server, token,
};

use aws::endpoint;
use aws::transport::{Timeouts, Transport};
use config::Config;
use credentials::file::CredentialsFile;
use credentials::ProvideCredentials;

const NAME: &str = "secrets-manager-agent";
const VERSION: &str = env!("CARGO_PKG_VERSION");

const USAGE: &str = "\
Serves AWS Secrets Manager secrets, cached, on http://127.0.0.1:2773.

Usage: secrets-manager-agent [--config FILE]
       secrets-manager-agent token     Print a fresh random token (64 hex digits)
       secrets-manager-agent lambda-extension [--config FILE]
                                       Run as an AWS Lambda extension (automatic
                                       when started from /opt/extensions/)

Options:
  --config FILE   TOML config file (keys as AWS's agent; all optional)
  -h, --help      Print this help
  -V, --version   Print the version

Requests need the token from AWS_TOKEN (or AWS_SESSION_TOKEN,
AWS_CONTAINER_AUTHORIZATION_TOKEN; `file:///path` reads it from a file) in the
X-Aws-Parameters-Secrets-Token header:
  curl -H \"X-Aws-Parameters-Secrets-Token: $AWS_TOKEN\" \\
       'http://localhost:2773/secretsmanager/get?secretId=MySecret'
";

#[derive(Debug)]
enum Command {
    Run { config: Option<PathBuf> },
    Lambda { config: Option<PathBuf> },
    Token,
    Help,
    Version,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut config = None;
    let mut lambda = false;
    let mut args = args.peekable();
    let mut first = true;
    while let Some(arg) = args.next() {
        let is_first = std::mem::replace(&mut first, false);
        match arg.as_str() {
            "lambda-extension" if is_first => lambda = true,
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
    } else {
        Command::Run { config }
    })
}

fn main() -> ExitCode {
    let argv0 = std::env::args().next().unwrap_or_default();
    let runtime_api = std::env::var("AWS_LAMBDA_RUNTIME_API").ok();
    let command = if lambda::launched_as_extension(&argv0, runtime_api.as_deref()) {
        // Lambda starts extensions without arguments; a config file can be
        // named by SECRETS_MANAGER_AGENT_CONFIG instead.
        Ok(Command::Lambda {
            config: credentials::env_var("SECRETS_MANAGER_AGENT_CONFIG").map(PathBuf::from),
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
        Ok(Command::Lambda { config }) => report(run_lambda(config, &argv0)),
        Ok(Command::Run { config }) => report(run(config)),
        Err(message) => {
            eprintln!("{NAME}: error: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(config_path: Option<PathBuf>) -> Result<(), String> {
    let config = load_config(config_path.as_deref())?;
    init_logging(&config, config.log_to_file)?;
    exit_on_signals()?;
    serve(start(&config)?)
}

/// The running agent's API, for the exit paths that wipe its cache.
static RUNNING: OnceLock<Arc<Api>> = OnceLock::new();

type Api = api::Api<aws::SecretsManager>;

/// Overwrites the cached secrets; the last thing before a normal exit.
fn wipe_cache() {
    if let Some(api) = RUNNING.get() {
        api.wipe();
    }
}

/// SIGTERM/SIGINT wipe the cache and end the process with status 0.
fn exit_on_signals() -> Result<(), String> {
    let failed = |e: std::io::Error| format!("cannot set up signal handling: {e}");
    os::signals::block_termination().map_err(failed)?;
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(|| {
            let signal = os::signals::wait_for_termination();
            log::info!("signal {signal} received: exiting");
            wipe_cache();
            log::logger().flush();
            std::process::exit(0);
        })
        .map_err(failed)?;
    Ok(())
}

/// The Lambda extension's life: register, wait for the first INVOKE, start
/// serving, and return (ending the process) at SHUTDOWN.
fn run_lambda(config_path: Option<PathBuf>, argv0: &str) -> Result<(), String> {
    let config = load_config(config_path.as_deref())?;
    // Lambda collects stderr into CloudWatch; the function's directory is
    // read-only, so a log file is neither possible nor wanted.
    init_logging(&config, false)?;
    exit_on_signals()?;
    let runtime_api = credentials::env_var("AWS_LAMBDA_RUNTIME_API")
        .ok_or("AWS_LAMBDA_RUNTIME_API is not set: lambda-extension only runs inside AWS Lambda")?;
    let extension = lambda::Extension::register(&runtime_api, &lambda::extension_name(argv0))?;
    log::info!("registered as a Lambda extension; serving starts at the first INVOKE");
    let mut serving = false;
    loop {
        match extension.next_event()? {
            lambda::Event::Shutdown => {
                log::info!("Lambda SHUTDOWN: exiting");
                wipe_cache();
                return Ok(());
            }
            lambda::Event::Invoke if !serving => {
                let agent = start(&config)?;
                std::thread::Builder::new()
                    .name("server".into())
                    .spawn(move || {
                        if let Err(e) = serve(agent) {
                            log::error!("{e}");
                            std::process::exit(1);
                        }
                    })
                    .map_err(|e| format!("cannot start the server thread: {e}"))?;
                serving = true;
            }
            lambda::Event::Invoke => {}
        }
    }
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Logged too when the log is a file; on stderr once is enough.
            if logger::logs_to_file() {
                log::error!("{message}");
            }
            eprintln!("{NAME}: error: {message}");
            ExitCode::from(1)
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, String> {
    match path {
        Some(path) => Config::load(path).map_err(|e| e.to_string()),
        None => Ok(Config::default()),
    }
}

fn init_logging(config: &Config, to_file: bool) -> Result<(), String> {
    logger::init(config.log_level.to_filter(), to_file).map_err(|e| {
        format!(
            "cannot open the log file {}/{}: {e} (set log_to_file = false to log to stderr)",
            logger::LOG_DIR,
            logger::LOG_FILE
        )
    })
}

/// A started agent: bound, configured, not yet serving.
struct Agent {
    listener: std::net::TcpListener,
    settings: server::Settings,
    api: Arc<Api>,
}

/// Everything up to the listening socket: token, region, endpoints,
/// credentials (checked with STS when asked), cache, bind, start-up line.
fn start(config: &Config) -> Result<Agent, String> {
    prepare_process();

    let (token, token_var) =
        token::Token::from_env(&config.ssrf_env_variables).map_err(|e| e.to_string())?;
    let timeouts = Timeouts {
        connect: env_millis("SMA_UPSTREAM_CONNECT_TIMEOUT_MS", 3_000)?,
        call: env_millis("SMA_UPSTREAM_TIMEOUT_MS", 10_000)?,
    };
    let profile_name = credentials::env_var("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let profiles = Arc::new(credentials::profile::Profiles::from_env());
    let imds = Arc::new(credentials::imds::Imds::from_env());
    let region = resolve_region(config, &profiles, &profile_name, &imds)?;
    let profile_endpoint = profiles
        .get(&profile_name)
        .and_then(|p| p.get("endpoint_url"))
        .map(String::as_str);
    let endpoint = endpoint::resolve(endpoint::SECRETS_MANAGER, &region, profile_endpoint)
        .map_err(|e| e.to_string())?;
    let sts_endpoint =
        endpoint::resolve(endpoint::STS, &region, profile_endpoint).map_err(|e| e.to_string())?;
    let client_timeout = env_millis("SMA_CLIENT_TIMEOUT_MS", 10_000)?;

    let transport = Transport::new(timeouts, aws::transport::roots_from_env()?);
    let credentials: Arc<dyn ProvideCredentials> = match &config.credentials_file_path {
        Some(path) => Arc::new(CredentialsFile::new(path.clone(), profile_name)),
        None => {
            let context = Arc::new(credentials::Context {
                sts_endpoint: sts_endpoint.clone(),
                region: region.clone(),
                transport: transport.clone(),
                imds,
                profiles,
                profile_name,
                retry: Default::default(),
            });
            let timing = credentials::refresh::Timing::from_env()?;
            Arc::new(credentials::default_chain(&context, timing))
        }
    };
    let client = Arc::new(aws::client::Client::new(
        transport,
        region.clone(),
        credentials,
    ));
    // The file may legitimately appear later (a rotation tool writes it), so
    // AWS's agent skips the check when it is configured; so do we.
    if config.validate_credentials && config.credentials_file_path.is_none() {
        validate_credentials(&client, sts_endpoint, config.ignore_transient_errors)?;
    }
    let client = aws::SecretsManager::new(client, endpoint.clone());
    let cache = cache::Cache::new(
        client,
        cache::Settings {
            ttl: Duration::from_secs(config.ttl_seconds),
            capacity: config.cache_size,
            ignore_transient_errors: config.ignore_transient_errors,
        },
    );
    let api = Arc::new(api::Api::new(
        api::Settings {
            token,
            ssrf_headers: config.ssrf_headers.clone(),
            path_prefix: config.path_prefix.clone(),
            max_conn: config.max_conn,
        },
        cache,
    ));
    let _ = RUNNING.set(api.clone());

    let listener = server::bind(config.http_port)
        .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", config.http_port))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    log::info!(
        "{NAME} {VERSION}: region {region}, endpoint {endpoint}, token from {token_var}, ttl {}s, cache size {}, max_conn {}",
        config.ttl_seconds,
        config.cache_size,
        config.max_conn
    );
    log::info!("listening on http://127.0.0.1:{port}");
    let mut stdout = std::io::stdout();
    let _ = writeln!(
        stdout,
        "{NAME} {VERSION} listening on http://127.0.0.1:{port}"
    );
    let _ = stdout.flush();
    Ok(Agent {
        listener,
        settings: server::Settings {
            client_timeout,
            max_conn: config.max_conn,
        },
        api,
    })
}

/// Serves until the process ends.
fn serve(agent: Agent) -> Result<(), String> {
    let Agent {
        listener,
        settings,
        api,
    } = agent;
    server::run(listener, settings, move |request| api.handle(request))
        .map_err(|e| format!("server stopped: {e}"))
}

/// STS GetCallerIdentity with the credentials the agent will use, so a bad
/// key fails at start rather than on the first request.
fn validate_credentials(
    client: &Arc<aws::client::Client>,
    endpoint: String,
    ignore_transient: bool,
) -> Result<(), String> {
    match aws::sts::Sts::new(client.clone(), endpoint).get_caller_identity() {
        Ok(arn) => {
            log::info!("credentials validated: calling as {arn}");
            Ok(())
        }
        Err(e) if e.is_transient() && ignore_transient => {
            log::warn!("could not validate credentials ({e}); starting anyway because ignore_transient_errors is on");
            Ok(())
        }
        Err(e) => Err(format!(
            "credentials check (STS GetCallerIdentity) failed: {e} (set validate_credentials = false to skip it)"
        )),
    }
}

/// Config `region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's
/// `region`, then the instance's region from IMDS.
fn resolve_region(
    config: &Config,
    profiles: &credentials::profile::Profiles,
    profile_name: &str,
    imds: &credentials::imds::Imds,
) -> Result<String, String> {
    let found = config
        .region
        .clone()
        .or_else(|| credentials::env_var("AWS_REGION"))
        .or_else(|| credentials::env_var("AWS_DEFAULT_REGION"))
        .or_else(|| profiles.region(profile_name));
    if let Some(region) = found {
        return Ok(region);
    }
    imds.region().map_err(|why| {
        format!(
            "no AWS region: set `region` in the config file, AWS_REGION, or `region` in profile {profile_name} (IMDS: {why})"
        )
    })
}

/// A duration knob in milliseconds from the environment; 1 ms to 10 minutes.
fn env_millis(name: &str, default: u64) -> Result<Duration, String> {
    match credentials::env_var(name) {
        None => Ok(Duration::from_millis(default)),
        Some(v) => match v.parse::<u64>() {
            Ok(ms) if (1..=600_000).contains(&ms) => Ok(Duration::from_millis(ms)),
            _ => Err(format!(
                "{name}={v} is not valid: expected milliseconds from 1 to 600000"
            )),
        },
    }
}

/// Hardening and limits that apply to the whole process; failures are
/// reported, not fatal.
fn prepare_process() {
    if let Err(why) = os::process::forbid_core_dumps() {
        log::warn!("{why}");
    }
    if let Err(e) = os::process::raise_fd_limit() {
        log::debug!("could not raise the open-file limit: {e}");
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
}
