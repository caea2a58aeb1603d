//! Keeping `[[templates]]` fresh from the running agent: every template is
//! rendered once at start, then again every [`EVERY`] of the caches' clock.
//! Values come through the cache, so a render costs lookups, not calls to
//! AWS, until a value's TTL has passed; then the cache asks AWS (a
//! DescribeSecret when the version is still current), and a rotation
//! reaches the files within a TTL and [`EVERY`]. Only files whose bytes
//! changed are written, and only their commands run.
//!
//! The thread checks the clock every [`TICK`] of real time: the tests step
//! the caches' clock past a TTL and see the file change within a tick.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::run::{render_all, Outcome};
use super::write::Written;
use super::Resolve;
use crate::config::Template;
use secrets_manager_agent_core::clock::{Clock, SystemClock};

/// How often the templates are rendered again (caches' clock). Short
/// beside a TTL (300 s by default), long beside a render, which is a few
/// cache lookups and a read of each file.
pub const EVERY: Duration = Duration::from_secs(10);
/// How often the thread looks at the clock (real time).
const TICK: Duration = Duration::from_millis(250);

/// Starts the thread; a failure to start it is logged and the agent serves
/// on without it.
pub fn start(templates: Vec<Template>, resolve: Resolve) {
    if templates.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("templates".into())
        .spawn(move || keep(&templates, &resolve));
    if let Err(e) = spawned {
        log::error!("cannot start the templates thread ({e}): [[templates]] are not rendered");
    }
}

fn keep(templates: &[Template], resolve: &Resolve) {
    let clock = SystemClock;
    // The last failure told for each file, so that one that keeps failing
    // is told once, and again when it changes or ends.
    let mut told: HashMap<PathBuf, String> = HashMap::new();
    let mut due = clock.now();
    loop {
        if clock.now() >= due {
            for outcome in render_all(templates, resolve) {
                tell(outcome, &mut told);
            }
            due = clock.now() + EVERY;
        }
        std::thread::sleep(TICK);
    }
}

fn tell(outcome: Outcome, told: &mut HashMap<PathBuf, String>) {
    let dest = outcome.destination;
    match outcome.result {
        Ok(written) => {
            if told.remove(&dest).is_some() {
                log::info!("template {} renders again", dest.display());
            }
            if written == Written::Changed {
                log::info!("template rendered: {}", dest.display());
            }
        }
        Err(why) => {
            let why = why.to_string();
            if told.get(&dest) != Some(&why) {
                log::warn!("template {}: {why}", dest.display());
                told.insert(dest, why);
            }
        }
    }
}
