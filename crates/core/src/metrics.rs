//! The numbers `/metrics` serves, in Prometheus's text format (0.0.4): what
//! was asked and answered, what the cache did, every upstream call with its
//! outcome and time, and the credential sources' refreshes.
//!
//! Recording must not slow a cache hit (docs/operating.md, "Metrics"), so the counters a
//! request touches are plain atomics in one of [`SHARDS`] blocks, each on its
//! own cache lines; a thread keeps to one block, so two workers rarely write
//! the same line and no lock is taken. A scrape adds the blocks up. Counts that
//! move a few times a minute (upstream calls, credentials) live in one shared
//! block. Label values are fixed names only: a credential source is counted
//! under its kind (`profile`, `AssumeRole`), never with a profile name or a
//! role ARN, since the metrics listener answers without the token.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Blocks of request counters; a thread writes the one its index picks.
pub const SHARDS: usize = 8;

/// The routes requests are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Secret,
    Parameter,
    Ping,
    Ready,
    Metrics,
    /// The AWS SDK's protocol (`POST` with `X-Amz-Target`).
    Sdk,
    Other,
}

const ROUTES: [&str; 7] = [
    "secret",
    "parameter",
    "ping",
    "ready",
    "metrics",
    "sdk",
    "other",
];

/// The statuses requests are counted by; any other counts as `other`.
const STATUSES: [u16; 12] = [200, 400, 401, 403, 404, 405, 429, 500, 502, 503, 504, 0];

/// What the cache did for one request or on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheEvent {
    /// Answered from memory, fresh.
    Hit,
    /// Waited for upstream (not cached, expired, or `refreshNow`).
    Miss,
    /// Answered with an expired value (a refresh was running, or upstream
    /// failed transiently).
    Stale,
    /// A background refresh ahead of expiry finished (one entry or a batch).
    Refresh,
    /// An entry was dropped for room.
    Eviction,
}

const CACHE_EVENTS: [(&str, &str); 5] = [
    (
        "cache_hits_total",
        "Answers served from memory while fresh.",
    ),
    (
        "cache_misses_total",
        "Answers that waited for an upstream call.",
    ),
    (
        "cache_stale_answers_total",
        "Answers served from an expired entry.",
    ),
    (
        "cache_refreshes_total",
        "Background refreshes ahead of expiry, counted when done.",
    ),
    ("cache_evictions_total", "Entries dropped to make room."),
];

/// How an upstream call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Throttled,
    ServerError,
    Timeout,
    ConnectionError,
    ClientError,
    Other,
}

const OUTCOMES: [&str; 7] = [
    "ok",
    "throttled",
    "5xx",
    "timeout",
    "connection_error",
    "4xx",
    "other",
];

/// The operations upstream calls are counted by; any other counts as `other`.
const OPERATIONS: [&str; 9] = [
    "GetSecretValue",
    "DescribeSecret",
    "BatchGetSecretValue",
    "GetParameter",
    "GetParametersByPath",
    "AssumeRole",
    "AssumeRoleWithWebIdentity",
    "GetCallerIdentity",
    "other",
];

/// Histogram bounds in seconds, and the same in nanoseconds for recording.
const BOUNDS: [&str; 16] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "10",
];
const BOUNDS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Counts per bucket (not cumulative; the last is beyond every bound) and
/// the sum of what was observed.
struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOUNDS.len() + 1],
            sum_ns: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let at = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[at].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// What one request touches; one per shard, on its own cache lines.
#[repr(align(128))]
struct Shard {
    requests: [[AtomicU64; STATUSES.len()]; ROUTES.len()],
    cache: [AtomicU64; CACHE_EVENTS.len()],
    /// Time to answer a secret or parameter: [from memory, after upstream].
    answers: [Histogram; 2],
}

impl Shard {
    const fn new() -> Shard {
        Shard {
            requests: [const { [const { AtomicU64::new(0) }; STATUSES.len()] }; ROUTES.len()],
            cache: [const { AtomicU64::new(0) }; CACHE_EVENTS.len()],
            answers: [const { Histogram::new() }; 2],
        }
    }
}

/// The kinds of credential source, by the start of a source's name; any
/// other is `other`.
const SOURCES: [&str; 9] = [
    "environment",
    "profile",
    "web identity",
    "container",
    "IMDS",
    "AssumeRole",
    "credentials_file_path",
    "credential_process",
    "other",
];

struct Metrics {
    shards: [Shard; SHARDS],
    upstream: [[AtomicU64; OUTCOMES.len()]; OPERATIONS.len()],
    upstream_seconds: [Histogram; OPERATIONS.len()],
    /// Per kind of credential source: [handed out, failed].
    credentials: [[AtomicU64; 2]; SOURCES.len()],
}

static METRICS: Metrics = Metrics {
    shards: [const { Shard::new() }; SHARDS],
    upstream: [const { [const { AtomicU64::new(0) }; OUTCOMES.len()] }; OPERATIONS.len()],
    upstream_seconds: [const { Histogram::new() }; OPERATIONS.len()],
    credentials: [const { [const { AtomicU64::new(0) }; 2] }; SOURCES.len()],
};

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// Client connections open now (the server counts them in and out).
static OPEN_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

pub fn connection_opened() {
    OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
}

pub fn connection_closed() {
    OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
}

pub fn open_connections() -> u64 {
    OPEN_CONNECTIONS.load(Ordering::Relaxed)
}

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

fn shard() -> &'static Shard {
    &METRICS.shards[SHARD.with(|s| *s)]
}

/// One answered request.
pub fn request(route: Route, status: u16) {
    let status = STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(STATUSES.len() - 1);
    shard().requests[route as usize][status].fetch_add(1, Ordering::Relaxed);
}

pub fn cache(event: CacheEvent) {
    shard().cache[event as usize].fetch_add(1, Ordering::Relaxed);
}

/// How long a secret or parameter took to answer, from memory or not.
pub fn answer(from_memory: bool, took: Duration) {
    shard().answers[usize::from(!from_memory)].observe(took);
}

/// One upstream HTTP attempt.
pub fn upstream(operation: &str, outcome: Outcome, took: Duration) {
    let op = OPERATIONS
        .iter()
        .position(|&o| o == operation)
        .unwrap_or(OPERATIONS.len() - 1);
    METRICS.upstream[op][outcome as usize].fetch_add(1, Ordering::Relaxed);
    METRICS.upstream_seconds[op].observe(took);
}

/// A credential source asked (`source` as the sources name themselves:
/// `profile ops`, `AssumeRole arn:...`): it answered (`ok`) or failed.
pub fn credentials(source: &str, ok: bool) {
    let kind = SOURCES
        .iter()
        .position(|k| source.starts_with(k))
        .unwrap_or(SOURCES.len() - 1);
    METRICS.credentials[kind][usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
}

/// Values read at scrape time from their owners: (name, help, value).
pub type Gauge<'a> = (&'a str, &'a str, u64);

const PREFIX: &str = "secrets_manager_agent_";

/// The exposition: every family with its `HELP` and `TYPE`, counters summed
/// over the shards; `gauges` are added as they are. `build_info` carries the
/// agent's `version` and its `tls` provider's name.
pub fn render(version: &str, tls: &str, gauges: &[Gauge]) -> String {
    let mut out = String::with_capacity(8 << 10);
    family(
        &mut out,
        "build_info",
        "gauge",
        "The agent's version and TLS provider.",
    );
    let _ = writeln!(
        out,
        "{PREFIX}build_info{{version=\"{version}\",tls=\"{tls}\"}} 1"
    );
    for (name, help, value) in gauges {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{PREFIX}{name} {value}");
    }

    let sum = |read: &dyn Fn(&Shard) -> &AtomicU64| -> u64 {
        METRICS
            .shards
            .iter()
            .map(|s| read(s).load(Ordering::Relaxed))
            .sum()
    };
    family(
        &mut out,
        "requests_total",
        "counter",
        "Requests answered, by route and status.",
    );
    for (r, route) in ROUTES.iter().enumerate() {
        for (s, status) in STATUSES.iter().enumerate() {
            let n = sum(&|shard| &shard.requests[r][s]);
            if n > 0 {
                let status = if *status == 0 {
                    "other".to_string()
                } else {
                    status.to_string()
                };
                let _ = writeln!(
                    out,
                    "{PREFIX}requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
    }
    for (e, (name, help)) in CACHE_EVENTS.iter().enumerate() {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{PREFIX}{name} {}", sum(&|shard| &shard.cache[e]));
    }
    family(
        &mut out,
        "answer_duration_seconds",
        "histogram",
        "Time to answer a secret or parameter request, from memory or after an upstream call.",
    );
    for (i, source) in ["memory", "upstream"].iter().enumerate() {
        let label = format!("source=\"{source}\"");
        let bucket = |b: usize| sum(&|shard: &Shard| &shard.answers[i].buckets[b]);
        let total_ns = sum(&|shard| &shard.answers[i].sum_ns);
        histogram(
            &mut out,
            "answer_duration_seconds",
            &label,
            bucket,
            total_ns,
        );
    }

    family(
        &mut out,
        "upstream_calls_total",
        "counter",
        "Upstream HTTP attempts (retries count), by operation and outcome.",
    );
    for (o, op) in OPERATIONS.iter().enumerate() {
        for (k, outcome) in OUTCOMES.iter().enumerate() {
            let n = METRICS.upstream[o][k].load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "{PREFIX}upstream_calls_total{{operation=\"{op}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
    }
    family(
        &mut out,
        "upstream_call_duration_seconds",
        "histogram",
        "Time of one upstream HTTP attempt, by operation.",
    );
    for (o, op) in OPERATIONS.iter().enumerate() {
        let h = &METRICS.upstream_seconds[o];
        if h.buckets.iter().all(|b| b.load(Ordering::Relaxed) == 0) {
            continue;
        }
        let label = format!("operation=\"{op}\"");
        let bucket = |b: usize| h.buckets[b].load(Ordering::Relaxed);
        histogram(
            &mut out,
            "upstream_call_duration_seconds",
            &label,
            bucket,
            h.sum_ns.load(Ordering::Relaxed),
        );
    }

    for (name, help, pick) in [
        (
            "credential_refreshes_total",
            "Credentials a source handed out, by kind of source.",
            0,
        ),
        (
            "credential_failures_total",
            "Times a kind of source was asked and failed.",
            1,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for (k, kind) in SOURCES.iter().enumerate() {
            let n = METRICS.credentials[k][pick].load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(out, "{PREFIX}{name}{{source=\"{kind}\"}} {n}");
            }
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}{name} {kind}");
}

/// One labelled series of a histogram: cumulative buckets, sum, count.
fn histogram(
    out: &mut String,
    name: &str,
    label: &str,
    bucket: impl Fn(usize) -> u64,
    sum_ns: u64,
) {
    let mut count = 0;
    for (b, bound) in BOUNDS.iter().enumerate() {
        count += bucket(b);
        let _ = writeln!(
            out,
            "{PREFIX}{name}_bucket{{{label},le=\"{bound}\"}} {count}"
        );
    }
    count += bucket(BOUNDS.len());
    let _ = writeln!(out, "{PREFIX}{name}_bucket{{{label},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{PREFIX}{name}_sum{{{label}}} {}", sum_ns as f64 / 1e9);
    let _ = writeln!(out, "{PREFIX}{name}_count{{{label}}} {count}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series whose line starts with `series ` (0 if none).
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.parse().unwrap())
    }

    // The registry is process-wide and tests run in parallel: each test
    // checks how its own recordings moved the totals, with labels no other
    // test uses where it can.

    #[test]
    fn requests_are_counted_by_route_and_status_across_threads() {
        let series = "secrets_manager_agent_requests_total{route=\"metrics\",status=\"429\"}";
        let before = value(&render("0.1.0", "ring", &[]), series);
        let threads: Vec<_> = (0..SHARDS + 3)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..100 {
                        request(Route::Metrics, 429);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            value(&render("0.1.0", "ring", &[]), series) - before,
            (100 * (SHARDS + 3)) as f64
        );
    }

    #[test]
    fn histograms_are_cumulative_and_end_at_the_count() {
        let text = || render("0.1.0", "ring", &[]);
        let bucket = |t: &str, le: &str| {
            value(
                t,
                &format!(
                    "secrets_manager_agent_upstream_call_duration_seconds_bucket{{operation=\"AssumeRoleWithWebIdentity\",le=\"{le}\"}}"
                ),
            )
        };
        let before = text();
        upstream(
            "AssumeRoleWithWebIdentity",
            Outcome::Ok,
            Duration::from_micros(50),
        );
        upstream(
            "AssumeRoleWithWebIdentity",
            Outcome::Timeout,
            Duration::from_millis(3),
        );
        upstream(
            "AssumeRoleWithWebIdentity",
            Outcome::Timeout,
            Duration::from_secs(60),
        );
        let after = text();
        let moved = |le| bucket(&after, le) - bucket(&before, le);
        assert_eq!(moved("0.0001"), 1.0);
        assert_eq!(moved("0.0025"), 1.0);
        assert_eq!(moved("0.005"), 2.0);
        assert_eq!(moved("10"), 2.0);
        assert_eq!(moved("+Inf"), 3.0);
        let calls = "secrets_manager_agent_upstream_calls_total{operation=\"AssumeRoleWithWebIdentity\",outcome=\"timeout\"}";
        assert_eq!(value(&after, calls) - value(&before, calls), 2.0);
        let count = "secrets_manager_agent_upstream_call_duration_seconds_count{operation=\"AssumeRoleWithWebIdentity\"}";
        assert_eq!(value(&after, count) - value(&before, count), 3.0);
        // An unknown operation is `other`, not a new label.
        upstream("Frobnicate", Outcome::Ok, Duration::ZERO);
        assert!(!render("0.1.0", "ring", &[]).contains("Frobnicate"));
    }

    #[test]
    fn every_family_has_help_and_type_and_gauges_come_as_given() {
        credentials("credential_process /opt/get-creds --secret", false);
        credentials("AssumeRole arn:aws:iam::123456789012:role/reader", true);
        let text = render(
            "0.1.0",
            "ring",
            &[("in_flight_requests", "Requests being answered.", 7)],
        );
        assert!(text.contains("secrets_manager_agent_in_flight_requests 7\n"));
        // Kinds only: no command line, no role ARN in a label.
        assert!(text.contains("credential_failures_total{source=\"credential_process\"}"));
        assert!(text.contains("credential_refreshes_total{source=\"AssumeRole\"}"));
        assert!(!text.contains("arn:aws:iam") && !text.contains("/opt/get-creds"));
        assert!(text.contains("secrets_manager_agent_build_info{version=\""));
        let mut typed = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|b| typed.iter().any(|t| t == b))
                    .unwrap_or(name);
                assert_eq!(typed.last().map(String::as_str), Some(base), "{line}");
            }
        }
    }
}
