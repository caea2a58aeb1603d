//! Start-up: from a config file to a listening agent, in named steps, and the
//! two ways to run it: as a service (until SIGTERM/SIGINT) and as a Lambda
//! extension (from the first INVOKE until SHUTDOWN).
//!
//! The order of the steps is the order of the checks a user sees fail: the
//! token first (no secret is served without one), then the tuning knobs, the
//! region, endpoints, credentials (checked with STS unless switched off), and
//! last the listening socket, so that "listening" is printed only by an agent
//! that can serve.

mod error;
pub mod lambda;
pub mod prefetch;
pub mod region;

pub use error::Error;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::api;
use crate::config::{CallerAuth, Config};
use crate::logger;
use crate::template;
use crate::token::Token;
use secrets_manager_agent_aws::callers::{AgentKeys, Callers};
use secrets_manager_agent_aws::client::Client;
use secrets_manager_agent_aws::credentials::file::CredentialsFile;
use secrets_manager_agent_aws::credentials::imds::Imds;
use secrets_manager_agent_aws::credentials::shared_config::Profiles;
use secrets_manager_agent_aws::credentials::{self, refresh};
use secrets_manager_agent_aws::endpoint;
use secrets_manager_agent_aws::identity::ProvideCredentials;
use secrets_manager_agent_aws::secrets_manager::BATCH;
use secrets_manager_agent_aws::ssm::Ssm;
use secrets_manager_agent_aws::sts::Sts;
use secrets_manager_agent_aws::transport::{self, Timeouts, Transport};
use secrets_manager_agent_aws::SecretsManager;
use secrets_manager_agent_cache::roles::Roles;
use secrets_manager_agent_cache::{self as cache, Cache, Clients};
use secrets_manager_agent_core::env;
use secrets_manager_agent_core::random;
use secrets_manager_agent_http as server;
use secrets_manager_agent_http::socket::{self, Listener};
use secrets_manager_agent_os as os;
use zeroize::Zeroizing;

pub const NAME: &str = "secrets-manager-agent";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

type Api = api::Api<Roles<Clients>>;

/// Serves until SIGTERM or SIGINT.
pub fn run(config_path: Option<&Path>) -> Result<(), Error> {
    let config = load_config(config_path)?;
    init_logging(&config, config.log_to_file)?;
    let running = Running::new();
    exit_on_signals(running.clone())?;
    let ended = start(&config, &running).and_then(serve);
    // A failed start or a stopped server ends the process too: leave as a
    // signal would (the socket file, the cached secrets).
    running.leave();
    ended
}

/// The Lambda extension's life: register, serve, and return (ending the
/// process) at SHUTDOWN. Serving starts right after registering, so the
/// function's own init code can read secrets, unless the function uses
/// SnapStart: then it starts at the first INVOKE, after the snapshot, so a
/// snapshot never holds a cached secret (or a token).
pub fn run_lambda(config_path: Option<&Path>, argv0: &str) -> Result<(), Error> {
    let config = load_config(config_path)?;
    // Lambda collects stderr into CloudWatch; the function's directory is
    // read-only, so a log file is neither possible nor wanted.
    init_logging(&config, false)?;
    let running = Running::new();
    exit_on_signals(running.clone())?;
    let runtime_api = env::var("AWS_LAMBDA_RUNTIME_API").ok_or(Error::NoRuntimeApi)?;
    let extension = lambda::Extension::register(&runtime_api, &lambda::extension_name(argv0))?;
    let snap_start = env::var("AWS_LAMBDA_INITIALIZATION_TYPE").as_deref() == Some("snap-start");
    let mut serving = false;
    if snap_start {
        log::info!(
            "registered as a Lambda extension; SnapStart: serving starts at the first INVOKE"
        );
    } else {
        log::info!("registered as a Lambda extension; serving from init on");
        serve_in_background(start(&config, &running)?)?;
        serving = true;
    }
    loop {
        match extension.next_event()? {
            lambda::Event::Shutdown => {
                log::info!("Lambda SHUTDOWN: exiting");
                running.leave();
                return Ok(());
            }
            lambda::Event::Invoke if !serving => {
                serve_in_background(start(&config, &running)?)?;
                serving = true;
            }
            lambda::Event::Invoke => {}
        }
    }
}

/// Lambda mode: the server runs on its own thread while the main thread
/// waits for the Extensions API's events.
fn serve_in_background(agent: Agent) -> Result<(), Error> {
    std::thread::Builder::new()
        .name("server".into())
        .spawn(move || {
            if let Err(e) = serve(agent) {
                log::error!("{e}");
                std::process::exit(1);
            }
        })
        .map(drop)
        .map_err(Error::ServerThread)
}

/// What the exit paths (a signal, Lambda's SHUTDOWN) clean up before the
/// process ends: the cached secrets, overwritten, and the unix socket file.
#[derive(Clone, Default)]
struct Running(Arc<(OnceLock<Arc<Api>>, OnceLock<PathBuf>)>);

impl Running {
    fn new() -> Running {
        Running::default()
    }

    fn set(&self, api: Arc<Api>) {
        let _ = self.0 .0.set(api);
    }

    fn set_socket(&self, path: PathBuf) {
        let _ = self.0 .1.set(path);
    }

    fn leave(&self) {
        if let Some(api) = self.0 .0.get() {
            api.wipe();
        }
        if let Some(path) = self.0 .1.get() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The config file, then AWS's Lambda extension's variables for what it
/// leaves unset (docs/configuration.md, "Environment variables").
fn load_config(path: Option<&Path>) -> Result<Config, Error> {
    Config::load_with_env(path, env::var).map_err(Error::Config)
}

fn init_logging(config: &Config, to_file: bool) -> Result<(), Error> {
    logger::init(config.log_level.to_filter(), to_file, config.log_json).map_err(Error::LogFile)
}

/// SIGTERM/SIGINT wipe the cache and end the process with status 0. The
/// signals are blocked before any other thread exists, so every thread
/// inherits the mask and only the waiting thread takes them.
fn exit_on_signals(running: Running) -> Result<(), Error> {
    os::signals::block_termination().map_err(Error::Signals)?;
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let signal = os::signals::wait_for_termination();
            log::info!("signal {signal} received: exiting");
            running.leave();
            log::logger().flush();
            std::process::exit(0);
        })
        .map_err(Error::Signals)?;
    Ok(())
}

/// A started agent: bound, configured, not yet serving.
struct Agent {
    /// The API's listeners: TCP (`bind_address`), and `unix_socket_path`'s.
    listeners: Vec<Listener>,
    /// `metrics_address`'s listener, if configured.
    metrics: Option<TcpListener>,
    /// `cloud_extensions_port`'s listener, if configured.
    cloud_extensions: Option<TcpListener>,
    settings: server::Settings,
    api: Arc<Api>,
}

/// Everything up to the listening socket.
fn start(config: &Config, running: &Running) -> Result<Agent, Error> {
    prepare_process();
    for (level, line) in unserved_settings(config) {
        log::log!(level, "{line}");
    }
    let (token, token_var) = Token::from_env(&config.ssrf_env_variables).map_err(Error::Token)?;
    let CacheParts {
        cache,
        credentials,
        place,
        tuning,
    } = build_upstream(config, config.validate_credentials)?;
    let prefetched = Arc::new(AtomicBool::new(false));
    let ready = readiness(credentials.clone(), prefetched.clone());
    let callers = callers(config, credentials)?;
    let api = Arc::new(build_api(config, token, ready, callers, cache));
    running.set(api.clone());
    let address = SocketAddr::from((config.bind_address, config.http_port));
    let listener = server::bind(config.bind_address, config.http_port)
        .map_err(|source| Error::Listen { address, source })?;
    let tcp_address = listener.local_addr().map_err(Error::LocalAddress)?;
    let mut listeners = vec![Listener::Tcp(listener)];
    if let Some(path) = &config.unix_socket_path {
        let gid = config
            .unix_socket_group
            .as_deref()
            .map(socket::group_id)
            .transpose()
            .map_err(Error::UnixSocketGroup)?;
        let unix =
            socket::bind_unix(path, config.unix_socket_mode, gid).map_err(Error::UnixSocket)?;
        listeners.push(Listener::Unix(unix));
        running.set_socket(path.clone());
    }
    let cloud_extensions = match config.cloud_extensions_port {
        Some(port) => {
            let address = SocketAddr::from((config.bind_address, port));
            Some(
                server::bind(config.bind_address, port)
                    .map_err(|source| Error::CloudExtensionsListen { address, source })?,
            )
        }
        None => None,
    };
    let metrics = match config.metrics_address {
        Some(address) => Some(
            TcpListener::bind(address)
                .map_err(|source| Error::MetricsListen { address, source })?,
        ),
        None => None,
    };
    announce(
        config,
        &place,
        &token_var,
        tcp_address,
        metrics.as_ref(),
        cloud_extensions.as_ref(),
    )?;
    start_prefetch(config, &api, Done(prefetched));
    start_templates(config, &api);
    Ok(Agent {
        listeners,
        metrics,
        cloud_extensions,
        settings: server::Settings {
            client_timeout: tuning.client_timeout,
            max_conn: config.max_conn,
            ttl_one: true,
            max_open: server::MAX_CONNECTIONS,
        },
        api,
    })
}

/// The cache and what start-up needs of its making: the credentials (for
/// `/ready` and the SDK protocol's callers), the place (for the start-up
/// line) and the tuning (for the server).
struct CacheParts {
    cache: Cache<Roles<Clients>>,
    credentials: Arc<dyn ProvideCredentials>,
    place: Place,
    tuning: Tuning,
}

/// The cache over Secrets Manager and Parameter Store, as the agent serves
/// from it: tuning, region, endpoints, credentials, checked with STS when
/// `validate`, roles and TTLs.
fn build_upstream(config: &Config, validate: bool) -> Result<CacheParts, Error> {
    let tuning = Tuning::from_env(env::var).map_err(Error::Tuning)?;
    let place = Place::find(config)?;
    let roots = transport::roots_from_env().map_err(Error::CaBundle)?;
    let transports = Transports::new(&tuning, roots);
    let transport = transports.base.clone();
    let timing = refresh::Timing::from_env().map_err(Error::RefreshTiming)?;
    let credentials = credentials_provider(config, &place, &transport, timing);
    let client = Arc::new(Client::new(
        transport.clone(),
        place.region.clone(),
        credentials.clone(),
    ));
    // The file may legitimately appear later (a rotation tool writes it), so
    // AWS's agent skips the check when it is configured; so do we.
    if validate && config.credentials_file_path.is_none() {
        validate_credentials(&client, &place.sts_endpoint, config.ignore_transient_errors)?;
    }
    let upstream = upstream(
        client,
        credentials.clone(),
        &transports,
        &place,
        timing,
        config.max_roles,
    );
    let cache = Cache::new(
        upstream,
        cache::Settings {
            ttl: Duration::from_secs(config.ttl_seconds),
            parameter_ttl: Duration::from_secs(config.parameter_store_ttl_seconds),
            capacity: config.cache_size,
            ignore_transient_errors: config.ignore_transient_errors,
            refresh_batch: tuning.refresh_batch,
        },
    );
    Ok(CacheParts {
        cache,
        credentials,
        place,
        tuning,
    })
}

/// The agent's cache, built from `config` as `start` builds it (the same
/// credentials chain, region, endpoints, retries and TTLs), without a token,
/// listeners or start-up lines: for `exec`, which fetches a few values and
/// serves nobody. No STS check either: each fetch checks the credentials,
/// and its error names the value it was for.
pub fn cache_for(config: &Config) -> Result<Cache<Roles<Clients>>, Error> {
    build_upstream(config, false).map(|built| built.cache)
}

/// `/ready`'s check: the agent's own credentials resolve (a call to the
/// credential cache, which asks the source only when it must), and the
/// prefetch, if any, has ended.
fn readiness(
    credentials: Arc<dyn ProvideCredentials>,
    prefetched: Arc<AtomicBool>,
) -> api::Readiness {
    Box::new(move || {
        credentials.credentials().map_err(|e| api::NotReady {
            reason: "no AWS credentials",
            detail: Some(e.to_string()),
        })?;
        if !prefetched.load(Ordering::Acquire) {
            return Err(api::NotReady {
                reason: "prefetching the configured secrets",
                detail: None,
            });
        }
        Ok(())
    })
}

/// Marks the prefetch as ended when dropped: on every way out of it,
/// a panic included, so `/ready` never waits for ever.
struct Done(Arc<AtomicBool>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Loads the config's `prefetch` secrets into the cache on a background
/// thread, after the listener is bound (so nothing waits for it) and a random
/// delay of up to `max_jitter_seconds`. Ends with one INFO line.
fn start_prefetch(config: &Config, api: &Arc<Api>, done: Done) {
    let prefetch = &config.prefetch;
    if !prefetch.is_requested() {
        return;
    }
    if config.ttl_seconds == 0 {
        log::info!("prefetch skipped: ttl_seconds = 0 keeps nothing in the cache");
        return;
    }
    let groups = prefetch::plan(prefetch);
    let limit = prefetch::limit(prefetch, api.cache().capacity());
    let jitter = Duration::from_secs_f64(prefetch.max_jitter_seconds as f64 * random::unit());
    let api = api.clone();
    let spawned = std::thread::Builder::new()
        .name("prefetch".into())
        .spawn(move || {
            let _done = done;
            std::thread::sleep(jitter);
            let cache = api.cache();
            let summary = prefetch::run(&groups, cache.upstream(), limit, prefetch::PACE, cache);
            log::info!("{summary}");
        });
    if let Err(e) = spawned {
        log::warn!(
            "cannot start the prefetch thread ({e}); each secret is fetched on its first request"
        );
    }
}

/// Renders the config's `[[templates]]` now and keeps them fresh, on a
/// thread of its own, through the API's cache.
fn start_templates(config: &Config, api: &Arc<Api>) {
    let api = api.clone();
    let resolve: template::Resolve =
        Arc::new(move |reference| template::run::resolve_in(api.cache(), reference));
    template::keep::start(config.templates.clone(), resolve);
}

/// What the config asks for that this agent does not do, so that nobody
/// takes a quiet start for a done job: other capabilities' sections (a note).
fn unserved_settings(config: &Config) -> Vec<(log::Level, String)> {
    let mut lines = Vec::new();
    for name in &config.other_capabilities {
        lines.push((
            log::Level::Info,
            format!(
                "config section [capabilities.{name}] is not read: this agent serves only \
                 Secrets Manager and Parameter Store"
            ),
        ));
    }
    lines
}

/// Hardening and limits for the whole process; failures are reported, not
/// fatal.
fn prepare_process() {
    for why in os::process::forbid_core_dumps() {
        log::warn!("{why}");
    }
    if let Err(e) = os::process::raise_fd_limit() {
        log::debug!("could not raise the open-file limit: {e}");
    }
}

/// Timeouts that only tests and unusual networks change, from `SMA_*`
/// variables (milliseconds, 1 ms to 10 minutes).
#[derive(Debug, Clone, Copy)]
struct Tuning {
    upstream: Timeouts,
    /// Idle or stalled client connections are closed after this long.
    client_timeout: Duration,
    /// The most cached secrets one background refresh reads in one call
    /// (docs/migrating.md, "Caching and refresh"); 1 refreshes each alone.
    refresh_batch: usize,
    /// The call timeouts of Secrets Manager and Parameter Store, by the
    /// variables of AWS's Lambda extension; `upstream.call` where unset.
    secrets_manager_call: Duration,
    ssm_call: Duration,
}

impl Tuning {
    fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Tuning, env::InvalidVar> {
        let millis = |name, default| {
            env::number_in(&get, name, default, 1..=600_000, "milliseconds")
                .map(Duration::from_millis)
        };
        let upstream = Timeouts {
            connect: millis("SMA_UPSTREAM_CONNECT_TIMEOUT_MS", 3_000)?,
            call: millis("SMA_UPSTREAM_TIMEOUT_MS", 10_000)?,
        };
        // The extension's 0 means "no timeout"; a call that never ends would
        // hold its request for ever, so 0 keeps this agent's bound.
        let service = |name| {
            env::number_in(&get, name, 0, 0..=600_000, "milliseconds").map(|ms| match ms {
                0 => upstream.call,
                ms => Duration::from_millis(ms),
            })
        };
        Ok(Tuning {
            secrets_manager_call: service("SECRETS_MANAGER_TIMEOUT_MILLIS")?,
            ssm_call: service("SSM_PARAMETER_STORE_TIMEOUT_MILLIS")?,
            upstream,
            client_timeout: millis("SMA_CLIENT_TIMEOUT_MS", 10_000)?,
            refresh_batch: env::number_in(
                &get,
                "SMA_REFRESH_BATCH",
                BATCH as u64,
                1..=BATCH as u64,
                "a number of secrets",
            )? as usize,
        })
    }
}

/// Where the agent is and whom it calls: profile, region, endpoints.
struct Place {
    profile_name: String,
    profiles: Arc<Profiles>,
    imds: Arc<Imds>,
    region: String,
    endpoint: String,
    ssm_endpoint: String,
    sts_endpoint: String,
}

impl Place {
    fn find(config: &Config) -> Result<Place, Error> {
        let profile_name = env::var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let profiles = Arc::new(Profiles::from_env());
        let imds = Arc::new(Imds::from_env());
        let region = region::resolve(
            config.region.as_deref(),
            env::var,
            &profile_name,
            profiles.region(&profile_name),
            || imds.region(),
        )
        .map_err(Error::Region)?;
        let profile_endpoint = profiles
            .get(&profile_name)
            .and_then(|p| p.get("endpoint_url"))
            .map(String::as_str);
        // The agent's own listeners on loopback, which an endpoint variable
        // set for the applications may name (0: a port the OS picks, which
        // no variable can name before it is picked).
        let own_ports: Vec<u16> = [Some(config.http_port), config.cloud_extensions_port]
            .into_iter()
            .flatten()
            .filter(|port| *port != 0)
            .collect();
        let resolve = |service| {
            endpoint::resolve(service, &region, profile_endpoint, &own_ports)
                .map_err(Error::Endpoint)
        };
        let endpoint = resolve(endpoint::SECRETS_MANAGER)?;
        let ssm_endpoint = resolve(endpoint::SSM)?;
        let sts_endpoint = resolve(endpoint::STS)?;
        Ok(Place {
            profile_name,
            profiles,
            imds,
            region,
            endpoint,
            ssm_endpoint,
            sts_endpoint,
        })
    }
}

/// `credentials_file_path` replaces the default chain, as in AWS's agent.
fn credentials_provider(
    config: &Config,
    place: &Place,
    transport: &Transport,
    timing: refresh::Timing,
) -> Arc<dyn ProvideCredentials> {
    if let Some(path) = &config.credentials_file_path {
        return Arc::new(CredentialsFile::new(
            path.clone(),
            place.profile_name.clone(),
        ));
    }
    let context = Arc::new(credentials::Context::new(
        place.sts_endpoint.clone(),
        place.region.clone(),
        transport.clone(),
        place.imds.clone(),
        place.profiles.clone(),
        place.profile_name.clone(),
    ));
    Arc::new(credentials::default_chain(&context, timing))
}

/// STS GetCallerIdentity with the credentials the agent will use, so a bad
/// key fails at start rather than on the first request.
fn validate_credentials(
    client: &Arc<Client>,
    sts_endpoint: &str,
    ignore_transient: bool,
) -> Result<(), Error> {
    match Sts::new(client.clone(), sts_endpoint.to_string()).get_caller_identity() {
        Ok(arn) => {
            log::info!("credentials validated: calling as {arn}");
            Ok(())
        }
        Err(e) if e.is_transient() && ignore_transient => {
            log::warn!("could not validate credentials ({e}); starting anyway because ignore_transient_errors is on");
            Ok(())
        }
        Err(e) => Err(Error::CredentialsCheck(e)),
    }
}

/// Secrets Manager and Parameter Store as the agent itself (`credentials`)
/// and as each role a request names (`roleArn`): a role's clients sign with
/// credentials from STS AssumeRole, called through `client` (the agent's own
/// identity); all share the transports, so connections are pooled.
fn upstream(
    client: Arc<Client>,
    credentials: Arc<dyn ProvideCredentials>,
    transports: &Transports,
    place: &Place,
    timing: refresh::Timing,
    max_roles: usize,
) -> Roles<Clients> {
    let sts = Arc::new(Sts::new(client, place.sts_endpoint.clone()));
    let (transports, region) = (transports.clone(), place.region.clone());
    let endpoints = (place.endpoint.clone(), place.ssm_endpoint.clone());
    let clients = move |credentials: Arc<dyn ProvideCredentials>| {
        let client = |transport: &Transport| {
            Arc::new(Client::new(
                transport.clone(),
                region.clone(),
                credentials.clone(),
            ))
        };
        Clients {
            secrets_manager: SecretsManager::new(
                client(&transports.secrets_manager),
                endpoints.0.clone(),
            ),
            ssm: Ssm::new(client(&transports.ssm), endpoints.1.clone()),
        }
    };
    let own = clients(credentials);
    Roles::new(own, max_roles, move |role| {
        clients(Arc::new(credentials::role::provider(
            sts.clone(),
            role,
            timing,
        )))
    })
}

/// The HTTPS transports: STS and the credential sources use `base`; Secrets
/// Manager and Parameter Store calls may have timeouts of their own (the
/// Lambda extension's variables). Equal timeouts share one connection pool.
#[derive(Clone)]
struct Transports {
    base: Transport,
    secrets_manager: Transport,
    ssm: Transport,
}

impl Transports {
    fn new(tuning: &Tuning, roots: ureq::tls::RootCerts) -> Transports {
        let base = Transport::new(tuning.upstream, roots.clone());
        let with_call = |call: Duration| {
            if call == tuning.upstream.call {
                base.clone()
            } else {
                Transport::new(
                    Timeouts {
                        call,
                        ..tuning.upstream
                    },
                    roots.clone(),
                )
            }
        };
        Transports {
            secrets_manager: with_call(tuning.secrets_manager_call),
            ssm: with_call(tuning.ssm_call),
            base,
        }
    }
}

/// Who may call through the SDK's protocol (`caller_auth`); a key's secret
/// is read from its file once, here.
fn callers(config: &Config, credentials: Arc<dyn ProvideCredentials>) -> Result<Callers, Error> {
    Ok(match config.caller_auth {
        CallerAuth::Credentials => Callers::Agent(AgentKeys::new(credentials)),
        CallerAuth::None => {
            log::warn!(
                "caller_auth = \"none\": SDK-protocol requests are served unsigned, to any \
                 process that reaches the listener"
            );
            Callers::Anyone
        }
        CallerAuth::Key => {
            let (Some(access_key_id), Some(path)) = (
                config.caller_access_key_id.clone(),
                config.caller_secret_access_key_file.clone(),
            ) else {
                // The config refuses "key" without both.
                return Err(Error::CallerKey {
                    path: Default::default(),
                    reason: "caller_auth = \"key\" needs both keys".into(),
                });
            };
            let text = std::fs::read_to_string(&path).map_err(|e| Error::CallerKey {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let secret = Zeroizing::new(text.trim().to_string());
            drop(Zeroizing::new(text));
            if secret.is_empty() {
                return Err(Error::CallerKey {
                    path,
                    reason: "the file is empty".into(),
                });
            }
            Callers::Key {
                access_key_id,
                secret,
            }
        }
    })
}

/// The request path below the listener: HTTP surface → cache → Secrets Manager.
fn build_api(
    config: &Config,
    token: Token,
    ready: api::Readiness,
    callers: Callers,
    cache: Cache<Roles<Clients>>,
) -> Api {
    api::Api::new(
        api::Settings {
            token,
            ssrf_headers: config.ssrf_headers.clone(),
            path_prefix: config.path_prefix.clone(),
            max_conn: config.max_conn,
            parameters: config.parameter_store,
            ready,
            callers,
        },
        cache,
    )
}

/// The start-up lines: settings to the log, and the listening addresses to
/// stdout (scripts and tests wait for them; with `http_port = 0` it is the
/// only place the port is told), as JSON objects when the log is JSON.
fn announce(
    config: &Config,
    place: &Place,
    token_var: &str,
    address: SocketAddr,
    metrics: Option<&TcpListener>,
    cloud_extensions: Option<&TcpListener>,
) -> Result<(), Error> {
    log::info!(
        "{NAME} {VERSION}: region {}, endpoint {}, token from {token_var}, ttl {}s, cache size {}, max_conn {}",
        place.region,
        place.endpoint,
        config.ttl_seconds,
        config.cache_size,
        config.max_conn
    );
    if !address.ip().is_loopback() {
        log::warn!(
            "listening on {address}, beyond loopback (allow_non_loopback): clients on the \
             network can reach the agent, and their token crosses the network in clear text"
        );
    }
    log::info!("listening on http://{address}");
    let tell = |url: &str, what: &str| {
        let line = logger::announcement(
            module_path!(),
            format_args!("{NAME} {VERSION} {what} on {url}"),
            url,
        );
        let _ = std::io::stdout().write_all(line.as_bytes());
    };
    tell(&format!("http://{address}"), "listening");
    if let Some(path) = &config.unix_socket_path {
        log::info!(
            "listening on unix socket {} (mode {:o})",
            path.display(),
            config.unix_socket_mode
        );
        tell(&format!("unix:{}", path.display()), "listening");
    }
    if let Some(listener) = cloud_extensions {
        let address = listener.local_addr().map_err(Error::LocalAddress)?;
        log::info!("Cloud Extensions interface on http://{address}");
        tell(&format!("http://{address}"), "cloud-extensions");
    }
    if let Some(metrics) = metrics {
        let address = metrics.local_addr().map_err(Error::LocalAddress)?;
        log::info!("metrics on http://{address}/metrics, without a token: it serves /metrics and /ping only");
        tell(&format!("http://{address}/metrics"), "metrics");
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

/// Serves until the process ends.
fn serve(agent: Agent) -> Result<(), Error> {
    let Agent {
        listeners,
        metrics,
        cloud_extensions,
        settings,
        api,
    } = agent;
    if let Some(metrics) = metrics {
        serve_metrics(metrics, &settings, api.clone())?;
    }
    if let Some(listener) = cloud_extensions {
        let api = api.clone();
        let settings = server::Settings {
            client_timeout: settings.client_timeout,
            max_conn: settings.max_conn,
            ttl_one: settings.ttl_one,
            max_open: settings.max_open,
        };
        std::thread::Builder::new()
            .name("cloud-extensions".into())
            .spawn(move || {
                let handler =
                    move |request: &server::http::Request| api.reply_cloud_extensions(request);
                if let Err(e) = server::run(vec![Listener::Tcp(listener)], settings, handler) {
                    log::error!("Cloud Extensions listener stopped: {e}");
                }
            })
            .map_err(Error::CloudExtensionsThread)?;
    }
    server::run(listeners, settings, move |request| api.reply(request)).map_err(Error::Server)
}

/// The metrics listener, on a thread of its own: `/metrics` and `/ping`,
/// GET only, no token (it never serves a secret), everything else `404`.
fn serve_metrics(
    listener: TcpListener,
    api_settings: &server::Settings,
    api: Arc<Api>,
) -> Result<(), Error> {
    let settings = server::Settings {
        client_timeout: api_settings.client_timeout,
        max_conn: 8,
        // Scrapers on other hosts reach it; they need a handful of
        // connections, and the fds it may hold are the API's and AWS's too.
        ttl_one: false,
        max_open: 64,
    };
    let handler = move |request: &server::http::Request| api.handle_metrics(request).into();
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            if let Err(e) = server::run(vec![Listener::Tcp(listener)], settings, handler) {
                log::error!("metrics listener stopped: {e}");
            }
        })
        .map(drop)
        .map_err(Error::MetricsThread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unserved_settings_are_told() {
        assert!(unserved_settings(&Config::default()).is_empty());
        let config = Config::parse(
            "[prefetch]\nsecrets = [{ secret_id = \"a\" }, { secret_id = \"b\" }]\n\
             filter_tags = [{ key = \"t\" }]\n[capabilities.acm]\nenabled = true\n",
        )
        .unwrap();
        let lines = unserved_settings(&config);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].0, log::Level::Info);
        assert!(lines[0].1.contains("[capabilities.acm]"));
    }

    #[test]
    fn tuning_defaults_and_ranges() {
        let t = Tuning::from_env(|_| None).unwrap();
        assert_eq!(t.upstream.connect, Duration::from_secs(3));
        assert_eq!(t.upstream.call, Duration::from_secs(10));
        assert_eq!(t.client_timeout, Duration::from_secs(10));
        assert_eq!(t.refresh_batch, 20);

        assert_eq!(
            (t.secrets_manager_call, t.ssm_call),
            (t.upstream.call, t.upstream.call)
        );
        let t = Tuning::from_env(env::fake(&[
            ("SMA_UPSTREAM_TIMEOUT_MS", "4000"),
            ("SECRETS_MANAGER_TIMEOUT_MILLIS", "0"),
            ("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", "250"),
        ]))
        .unwrap();
        assert_eq!(
            t.secrets_manager_call,
            Duration::from_secs(4),
            "0: our bound"
        );
        assert_eq!(t.ssm_call, Duration::from_millis(250));
        let e = Tuning::from_env(env::fake(&[("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", "-1")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "SSM_PARAMETER_STORE_TIMEOUT_MILLIS=-1 is not valid: expected milliseconds from 0 to 600000"
        );

        let t = Tuning::from_env(|n| (n == "SMA_REFRESH_BATCH").then(|| "1".into())).unwrap();
        assert_eq!(t.refresh_batch, 1);
        let e = Tuning::from_env(|n| (n == "SMA_REFRESH_BATCH").then(|| "21".into()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "SMA_REFRESH_BATCH=21 is not valid: expected a number of secrets from 1 to 20"
        );

        let t =
            Tuning::from_env(|n| (n == "SMA_UPSTREAM_TIMEOUT_MS").then(|| "300".into())).unwrap();
        assert_eq!(t.upstream.call, Duration::from_millis(300));

        let e = Tuning::from_env(|n| (n == "SMA_CLIENT_TIMEOUT_MS").then(|| "600001".into()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "SMA_CLIENT_TIMEOUT_MS=600001 is not valid: expected milliseconds from 1 to 600000"
        );
    }
}
