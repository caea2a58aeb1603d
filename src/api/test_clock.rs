//! The integration tests' hold on the agent's clock: in debug builds started
//! with `SMA_TEST_CLOCK=true`, `POST /test/clock?advance=SECONDS` (with the
//! token) moves the clock the caches run on forward, so that a test steps
//! past a TTL, into a refresh window or past a credential's expiry at once
//! instead of sleeping for it. The answer comes after the clock has moved:
//! the next request sees the new time.
//!
//! Release builds have neither the route nor the clock's skew
//! (`secrets_manager_agent_core::clock`): there the path is a 404 like any
//! other unknown one.

use super::owned_text as text;
use secrets_manager_agent_http::http::{Request, Response};

/// The route's path.
pub const PATH: &str = "/test/clock";
/// The longest one step may move the clock: a year, past any TTL (at most an
/// hour) or credential lifetime (at most 12 hours).
const MAX_STEP_SECONDS: f64 = 366.0 * 86_400.0;

/// Whether this process serves the route: a debug build, started with
/// `SMA_TEST_CLOCK=true`.
pub fn enabled() -> bool {
    cfg!(debug_assertions) && secrets_manager_agent_core::env::flag("SMA_TEST_CLOCK")
}

/// The answer to a request for [`PATH`] with `query`: the clock moved on by
/// `advance` seconds, and the total skew in seconds as the body.
pub fn handle(request: &Request, query: &str) -> Response {
    if request.method != "POST" {
        return text(405, "Not allowed: POST /test/clock?advance=SECONDS".into());
    }
    let step = match parse_step(query) {
        Ok(step) => step,
        Err(why) => return text(400, why.to_string()),
    };
    match move_clock(step) {
        Some(ahead) => text(200, format!("{:.3}", ahead.as_secs_f64())),
        None => text(404, "Not found".into()),
    }
}

/// Why a step was refused.
#[derive(Debug, PartialEq)]
enum StepError {
    Missing,
    NotSeconds(String),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Missing => write!(f, "give the step as advance=SECONDS"),
            StepError::NotSeconds(v) => write!(
                f,
                "advance={v}: give a number of seconds from 0 to {MAX_STEP_SECONDS}"
            ),
        }
    }
}

fn parse_step(query: &str) -> Result<std::time::Duration, StepError> {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("advance="))
        .ok_or(StepError::Missing)?;
    value
        .parse::<f64>()
        .ok()
        .filter(|s| (0.0..=MAX_STEP_SECONDS).contains(s))
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| StepError::NotSeconds(value.chars().take(32).collect()))
}

#[cfg(debug_assertions)]
fn move_clock(step: std::time::Duration) -> Option<std::time::Duration> {
    Some(secrets_manager_agent_core::clock::advance(step))
}

#[cfg(not(debug_assertions))]
fn move_clock(_: std::time::Duration) -> Option<std::time::Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_step_is_seconds_within_a_year() {
        assert_eq!(parse_step("advance=2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_step("x=1&advance=0"), Ok(Duration::ZERO));
        assert_eq!(parse_step(""), Err(StepError::Missing));
        for bad in ["-1", "1e9", "NaN", "inf", "soon", ""] {
            let refused = parse_step(&format!("advance={bad}"));
            assert_eq!(refused, Err(StepError::NotSeconds(bad.into())), "{bad}");
        }
    }
}
