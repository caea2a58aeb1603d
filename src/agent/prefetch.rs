//! Prefetching at start (AWS's 3.x agent does it): the secrets the config's
//! `prefetch` table names are read with BatchGetSecretValue on a background
//! thread and kept as ordinary cache entries, so their first requests are
//! hits.
//!
//! Secret IDs go in batches of at most [`BATCH`]; each tag key is one
//! filtered, paged listing. Both are grouped per role (`role_arn`; none: the
//! agent's own identity), and a role goes through the same `Roles` registry
//! as requests, so it counts against `max_roles`. Calls are paced (at most
//! about 30 a second) and prefetching stops once it has stored
//! `cache_buffer_ratio × cache_size` entries. A batch whose answer cannot be
//! taken (too large for the transport) is asked for again in halves. A failure (a secret in the
//! answer's `Errors`, a denied or failed call) is logged and skipped; nothing
//! here stops the agent.
//!
//! A value is stored under the secret ID as configured (what a client sends),
//! and for a tag match under its name and its ARN. `Cache::store` never
//! replaces an entry: a request that fetched the secret meanwhile keeps its
//! answer. A request for a listed secret while its batch is in flight waits
//! for the batch (`Cache::hold`) instead of calling upstream too; if the batch
//! brings no value for it, one GetSecretValue is made for the waiting
//! requests. Tag matches are not known before their answer, so a request for
//! one during its listing fetches it itself (one more call).

use std::fmt;
use std::time::{Duration, Instant};

use crate::config::Prefetch;
use secrets_manager_agent_aws::client::OnThrottle;
use secrets_manager_agent_aws::secrets_manager::{BatchAnswer, BatchInput, BatchValue, BATCH};
use secrets_manager_agent_aws::{SecretQuery, SecretValue, UpstreamError};
use secrets_manager_agent_cache::roles::Roles;
use secrets_manager_agent_cache::{Cache, Clients, Held, Key, Upstream};
use secrets_manager_agent_core::clock::SystemClock;

/// The time between two calls: at most about 30 a second.
pub const PACE: Duration = Duration::from_millis(34);

/// BatchGetSecretValue as some role; a trait so tests can script answers.
pub trait Batch {
    fn batch_get(
        &self,
        role: Option<&str>,
        input: &BatchInput,
    ) -> Result<BatchAnswer, UpstreamError>;
}

impl Batch for Roles<Clients> {
    fn batch_get(
        &self,
        role: Option<&str>,
        input: &BatchInput,
    ) -> Result<BatchAnswer, UpstreamError> {
        self.with_client(role, |client| {
            client
                .secrets_manager
                .batch_get_secret_value(input, OnThrottle::Retry)
        })?
    }
}

/// What to fetch as one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub role: Option<String>,
    pub secret_ids: Vec<String>,
    pub tag_keys: Vec<String>,
}

/// The config's lists grouped per role, in the order roles first appear;
/// an ID or tag key named twice for one role is fetched once.
pub fn plan(prefetch: &Prefetch) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    fn group<'a>(groups: &'a mut Vec<Group>, role: &Option<String>) -> &'a mut Group {
        let at = match groups.iter().position(|g| &g.role == role) {
            Some(at) => at,
            None => {
                groups.push(Group {
                    role: role.clone(),
                    secret_ids: Vec::new(),
                    tag_keys: Vec::new(),
                });
                groups.len() - 1
            }
        };
        &mut groups[at]
    }
    for secret in &prefetch.secrets {
        let ids = &mut group(&mut groups, &secret.role_arn).secret_ids;
        if !ids.contains(&secret.secret_id) {
            ids.push(secret.secret_id.clone());
        }
    }
    for tag in &prefetch.filter_tags {
        let keys = &mut group(&mut groups, &tag.role_arn).tag_keys;
        if !keys.contains(&tag.key) {
            keys.push(tag.key.clone());
        }
    }
    groups
}

/// How many entries prefetching may store: `cache_buffer_ratio` of the cache.
pub fn limit(prefetch: &Prefetch, cache_size: usize) -> usize {
    (prefetch.cache_buffer_ratio * cache_size as f64).floor() as usize
}

/// What a prefetch did, for its closing log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Secrets read and stored (under one key or more).
    pub secrets: usize,
    /// Cache entries stored.
    pub entries: usize,
    pub calls: usize,
    /// Secrets in `Errors`, and failed calls.
    pub failures: usize,
    /// Stopped at `cache_buffer_ratio` with work left.
    pub stopped_at_limit: bool,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "prefetch done: {} secret(s) cached as {} entr{} in {} BatchGetSecretValue call(s), \
             {} failure(s)",
            self.secrets,
            self.entries,
            if self.entries == 1 { "y" } else { "ies" },
            self.calls,
            self.failures
        )?;
        if self.stopped_at_limit {
            f.write_str("; stopped at cache_buffer_ratio of the cache")?;
        }
        Ok(())
    }
}

/// Waits so that calls are at least `interval` apart.
struct Pacer {
    interval: Duration,
    last: Option<Instant>,
}

impl Pacer {
    fn wait(&mut self) {
        if let Some(last) = self.last {
            let next = last + self.interval;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        self.last = Some(Instant::now());
    }
}

/// Where prefetched values go: the cache, or a test's map.
pub trait Sink {
    /// Released (dropped) after a batch of IDs has been stored.
    type Hold<'a>
    where
        Self: 'a;
    /// Keys about to be fetched: requests for them wait for the batch.
    fn hold(&self, keys: &[Key]) -> Self::Hold<'_>;
    /// True if kept.
    fn store(&self, key: &Key, value: SecretValue) -> bool;
}

impl<U: Upstream + 'static> Sink for Cache<U> {
    type Hold<'a> = Held<'a, U, SystemClock>;
    fn hold(&self, keys: &[Key]) -> Held<'_, U, SystemClock> {
        Cache::hold(self, keys)
    }
    fn store(&self, key: &Key, value: SecretValue) -> bool {
        Cache::store(self, key, value)
    }
}

/// Fetches every group into `sink` until `limit` entries are stored.
pub fn run(
    groups: &[Group],
    batch: &impl Batch,
    limit: usize,
    interval: Duration,
    sink: &impl Sink,
) -> Summary {
    let mut run = Run {
        batch,
        limit,
        pacer: Pacer {
            interval,
            last: None,
        },
        sink,
        summary: Summary::default(),
    };
    for group in groups {
        let role = group.role.as_deref();
        for chunk in group.secret_ids.chunks(BATCH) {
            run.ids(role, chunk);
            if run.full() {
                break;
            }
        }
        for tag in &group.tag_keys {
            let mut next_token = None;
            loop {
                let input = BatchInput::tag_key(tag, BATCH as u32, next_token.take());
                let answer = match run.call(role, &input) {
                    Ok(answer) => answer,
                    Err(None) => break,
                    Err(Some(e)) => {
                        run.failed(&format!("tag key {tag}"), role, &e, 1);
                        break;
                    }
                };
                for value in answer.values {
                    let mut ids: Vec<&str> = Vec::new();
                    ids.extend(value.name.as_deref());
                    ids.extend(value.arn.as_deref().filter(|arn| !ids.contains(arn)));
                    run.keep(role, &ids, value.value);
                }
                let previous = input.next_token.as_deref();
                next_token = answer.next_token.filter(|t| !t.is_empty());
                match next_token.as_deref() {
                    None => break,
                    // An upstream repeating its token would page forever.
                    Some(token) if Some(token) == previous => {
                        log::warn!(
                            "prefetch of tag key {tag}: the same page token came back; stopping"
                        );
                        break;
                    }
                    Some(_) => {}
                }
            }
        }
    }
    run.summary
}

struct Run<'a, B, S: Sink> {
    batch: &'a B,
    limit: usize,
    pacer: Pacer,
    sink: &'a S,
    summary: Summary,
}

impl<B: Batch, S: Sink> Run<'_, B, S> {
    fn full(&mut self) -> bool {
        self.summary.entries >= self.limit
    }

    /// One batch of IDs. An answer upstream sent but the agent could not
    /// take (larger than the transport's limit: 20 large secrets can be) is
    /// asked for again in two halves.
    fn ids(&mut self, role: Option<&str>, ids: &[String]) {
        let input = BatchInput {
            secret_id_list: ids.to_vec(),
            ..BatchInput::default()
        };
        let keys: Vec<Key> = ids.iter().map(|id| key(id, role)).collect();
        let _held = self.sink.hold(&keys);
        match self.call(role, &input) {
            Ok(answer) => {
                for value in answer.values {
                    let id = requested_as(ids, &value).or(value.name.as_deref());
                    let Some(id) = id else { continue };
                    self.keep(role, &[id], value.value);
                }
            }
            Err(None) => {}
            Err(Some(UpstreamError::Response(why))) if ids.len() > 1 => {
                log::debug!(
                    "prefetch of {} secret(s): answer not usable ({why}); asking in halves",
                    ids.len()
                );
                let (first, second) = ids.split_at(ids.len() / 2);
                self.ids(role, first);
                self.ids(role, second);
            }
            Err(Some(e)) => {
                let what = format!("{} secret(s) ({})", ids.len(), ids.join(", "));
                self.failed(&what, role, &e, ids.len());
            }
        }
    }

    /// One paced call, its `Errors` logged and counted. `Err(None)`: not made,
    /// the limit is reached; `Err(Some)`: the call failed.
    fn call(
        &mut self,
        role: Option<&str>,
        input: &BatchInput,
    ) -> Result<BatchAnswer, Option<UpstreamError>> {
        if self.full() {
            self.summary.stopped_at_limit = true;
            return Err(None);
        }
        self.pacer.wait();
        self.summary.calls += 1;
        let answer = self.batch.batch_get(role, input).map_err(Some)?;
        for error in &answer.errors {
            log::warn!(
                "prefetch could not read {}{}: {}: {}",
                error.secret_id,
                as_role(role),
                error.code,
                error.message
            );
            self.summary.failures += 1;
        }
        Ok(answer)
    }

    /// A failed call: logged, and counted as `failing` failures.
    fn failed(&mut self, what: &str, role: Option<&str>, e: &UpstreamError, failing: usize) {
        log::warn!("prefetch of {what}{} failed: {e}", as_role(role));
        self.summary.failures += failing;
    }

    /// Stores `value` under each of `ids` while there is room.
    fn keep(&mut self, role: Option<&str>, ids: &[&str], value: SecretValue) {
        let mut stored = false;
        let mut value = Some(value);
        for (at, id) in ids.iter().enumerate() {
            if self.full() {
                self.summary.stopped_at_limit = true;
                break;
            }
            let key = key(id, role);
            // The last key takes the value itself, any other a copy.
            let this = if at + 1 == ids.len() {
                value.take()
            } else {
                value.as_ref().map(SecretValue::copy)
            };
            let Some(this) = this else { break };
            if self.sink.store(&key, this) {
                self.summary.entries += 1;
                stored = true;
            }
        }
        if stored {
            self.summary.secrets += 1;
        }
    }
}

/// The key a request for secret `id` (latest version) as `role` uses.
fn key(id: &str, role: Option<&str>) -> Key {
    Key::Secret {
        query: SecretQuery {
            secret_id: id.to_string(),
            version_id: None,
            version_stage: None,
        },
        role: role.map(String::from),
    }
}

fn as_role(role: Option<&str>) -> String {
    role.map(|r| format!(" (as {r})")).unwrap_or_default()
}

/// Which requested ID an answer's secret is.
fn requested_as<'a>(ids: &'a [String], value: &BatchValue) -> Option<&'a str> {
    ids.iter().find(|id| value.answers(id)).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PrefetchSecret, PrefetchTag};
    use secrets_manager_agent_aws::secrets_manager::render;
    use std::cell::RefCell;
    use std::collections::HashMap;

    const ROLE: &str = "arn:aws:iam::123456789012:role/reader";

    fn arn(name: &str) -> String {
        format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf")
    }

    /// One element of `SecretValues`, as upstream sends it.
    fn element(name: &str) -> String {
        format!(
            r#"{{"ARN":"{}","Name":"{name}","VersionId":"v1","SecretString":"value of {name}","VersionStages":["AWSCURRENT"],"CreatedDate":1.7E9}}"#,
            arn(name)
        )
    }

    fn answer(names: &[&str], errors: &[&str], next: Option<&str>) -> String {
        let values: Vec<String> = names.iter().map(|n| element(n)).collect();
        let errors: Vec<String> = errors
            .iter()
            .map(|id| {
                format!(
                    r#"{{"SecretId":"{id}","ErrorCode":"ResourceNotFoundException","Message":"Secrets Manager can't find the specified secret."}}"#
                )
            })
            .collect();
        let next = next
            .map(|t| format!(r#","NextToken":"{t}""#))
            .unwrap_or_default();
        format!(
            r#"{{"SecretValues":[{}],"Errors":[{}]{next}}}"#,
            values.join(","),
            errors.join(",")
        )
    }

    type Script = Box<dyn Fn(Option<&str>, &BatchInput) -> Result<String, UpstreamError>>;

    /// Answers from a script and records every call (role, input as sent).
    struct Fake {
        script: Script,
        calls: RefCell<Vec<(Option<String>, serde_json::Value)>>,
    }

    impl Fake {
        fn new(
            script: impl Fn(Option<&str>, &BatchInput) -> Result<String, UpstreamError> + 'static,
        ) -> Fake {
            Fake {
                script: Box::new(script),
                calls: RefCell::default(),
            }
        }

        /// Answers every ID list with all its IDs, except those named `gone*`.
        fn echo() -> Fake {
            Fake::new(|_, input| {
                let (found, gone): (Vec<&str>, Vec<&str>) = input
                    .secret_id_list
                    .iter()
                    .map(String::as_str)
                    .partition(|id| !id.starts_with("gone"));
                Ok(answer(&found, &gone, None))
            })
        }

        fn sizes(&self) -> Vec<usize> {
            self.calls
                .borrow()
                .iter()
                .map(|(_, input)| input["SecretIdList"].as_array().map_or(0, Vec::len))
                .collect()
        }
    }

    impl Batch for Fake {
        fn batch_get(
            &self,
            role: Option<&str>,
            input: &BatchInput,
        ) -> Result<BatchAnswer, UpstreamError> {
            self.calls
                .borrow_mut()
                .push((role.map(String::from), serde_json::to_value(input).unwrap()));
            BatchAnswer::parse((self.script)(role, input)?.as_bytes())
        }
    }

    /// A sink that hands each value to a closure and holds nothing.
    struct FnSink<F>(RefCell<F>);

    impl<F: FnMut(&Key, SecretValue) -> bool> Sink for FnSink<F> {
        type Hold<'a>
            = ()
        where
            Self: 'a;
        fn hold(&self, _: &[Key]) {}
        fn store(&self, key: &Key, value: SecretValue) -> bool {
            (self.0.borrow_mut())(key, value)
        }
    }

    /// Runs a prefetch into a map standing in for the cache.
    fn prefetch(groups: &[Group], fake: &Fake, limit: usize) -> (Summary, HashMap<Key, Vec<u8>>) {
        let stored = RefCell::new(HashMap::new());
        let sink = FnSink(RefCell::new(|key: &Key, value: SecretValue| {
            stored
                .borrow_mut()
                .insert(key.clone(), value.body.to_vec())
                .is_none()
        }));
        let summary = run(groups, fake, limit, Duration::ZERO, &sink);
        (summary, stored.take())
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}")).collect()
    }

    fn own(secret_ids: Vec<String>, tag_keys: Vec<String>) -> Vec<Group> {
        vec![Group {
            role: None,
            secret_ids,
            tag_keys,
        }]
    }

    #[test]
    fn ids_go_in_batches_of_twenty() {
        let fake = Fake::echo();
        let (summary, stored) = prefetch(&own(ids(45), vec![]), &fake, 1000);
        assert_eq!(fake.sizes(), [20, 20, 5]);
        assert_eq!(
            summary,
            Summary {
                secrets: 45,
                entries: 45,
                calls: 3,
                failures: 0,
                stopped_at_limit: false
            }
        );
        for id in ids(45) {
            assert!(stored.contains_key(&key(&id, None)), "{id}");
        }
        // The lists are sent in order, each ID once.
        let sent: Vec<String> = fake
            .calls
            .borrow()
            .iter()
            .flat_map(|(_, input)| input["SecretIdList"].as_array().unwrap().clone())
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(sent, ids(45));
    }

    #[test]
    fn the_stored_body_is_what_get_secret_value_serves() {
        let fake = Fake::echo();
        let (_, stored) = prefetch(&own(vec!["db".into()], vec![]), &fake, 10);
        let single = render(element("db").as_bytes()).unwrap();
        assert_eq!(stored[&key("db", None)], single.body.to_vec());
    }

    #[test]
    fn ids_are_stored_as_configured() {
        // A full ARN and a partial ARN (no random suffix) are kept under the
        // ID the config names, which is what a client will ask for.
        let fake = Fake::new(|_, _| Ok(answer(&["a", "b", "c"], &[], None)));
        let partial = "arn:aws:secretsmanager:us-east-1:123456789012:secret:b".to_string();
        let (summary, stored) = prefetch(
            &own(vec![arn("a"), partial.clone(), "c".into()], vec![]),
            &fake,
            10,
        );
        assert_eq!(summary.entries, 3);
        assert!(stored.contains_key(&key(&arn("a"), None)));
        assert!(stored.contains_key(&key(&partial, None)));
        assert!(stored.contains_key(&key("c", None)));
    }

    #[test]
    fn tag_listings_follow_next_token() {
        let fake = Fake::new(|_, input| {
            Ok(match input.next_token.as_deref() {
                None => answer(&["t1", "t2"], &[], Some("page2")),
                Some("page2") => answer(&["t3"], &[], None),
                Some(other) => panic!("unexpected token {other}"),
            })
        });
        let (summary, stored) = prefetch(&own(vec![], vec!["team".into()]), &fake, 100);
        let calls = fake.calls.borrow();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls[0].1,
            serde_json::json!({"Filters": [{"Key": "tag-key", "Values": ["team"]}], "MaxResults": 20})
        );
        assert_eq!(calls[1].1["NextToken"], "page2");
        assert_eq!(calls[1].1["Filters"][0]["Values"][0], "team");
        // Each match under its name and its ARN.
        assert_eq!((summary.secrets, summary.entries, summary.calls), (3, 6, 2));
        for name in ["t1", "t2", "t3"] {
            assert!(stored.contains_key(&key(name, None)));
            assert!(stored.contains_key(&key(&arn(name), None)));
        }
    }

    #[test]
    fn an_answer_too_large_is_asked_for_in_halves() {
        let fake = Fake::new(|_, input| {
            if input.secret_id_list.len() > 5 {
                return Err(UpstreamError::Response(
                    "body larger than 2097152 bytes".into(),
                ));
            }
            let ids: Vec<&str> = input.secret_id_list.iter().map(String::as_str).collect();
            Ok(answer(&ids, &[], None))
        });
        let (summary, stored) = prefetch(&own(ids(20), vec![]), &fake, 100);
        assert_eq!(fake.sizes(), [20, 10, 5, 5, 10, 5, 5]);
        assert_eq!((summary.entries, summary.failures), (20, 0));
        assert_eq!(stored.len(), 20);
        // Any other failure is not retried.
        let fake = Fake::new(|_, _| Err(UpstreamError::Timeout));
        let (summary, _) = prefetch(&own(ids(20), vec![]), &fake, 100);
        assert_eq!(fake.sizes(), [20]);
        assert_eq!(summary.failures, 20);
    }

    #[test]
    fn a_repeated_page_token_ends_the_listing() {
        let fake = Fake::new(|_, input| {
            Ok(match input.next_token.as_deref() {
                None => answer(&["t1"], &[], Some("again")),
                Some(_) => answer(&[], &[], Some("again")),
            })
        });
        let (summary, _) = prefetch(&own(vec![], vec!["team".into()]), &fake, 100);
        assert_eq!(summary.calls, 2);
    }

    #[test]
    fn stops_at_the_limit() {
        let fake = Fake::echo();
        let (summary, stored) = prefetch(&own(ids(45), vec!["team".into()]), &fake, 25);
        assert_eq!(stored.len(), 25);
        assert_eq!(summary.entries, 25);
        assert!(summary.stopped_at_limit);
        assert_eq!(fake.sizes(), [20, 20], "no call once the limit is reached");
        assert!(summary
            .to_string()
            .contains("stopped at cache_buffer_ratio"));
        // Exactly full after a batch: the next is not asked for.
        let fake = Fake::echo();
        let (summary, _) = prefetch(&own(ids(45), vec![]), &fake, 20);
        assert_eq!(fake.sizes(), [20]);
        assert_eq!(summary.entries, 20);
    }

    #[test]
    fn errors_are_counted_and_skipped() {
        // One ID unknown, one call failing as a whole, one role refused:
        // everything else is still fetched.
        let fake = Fake::new(|role, input| {
            if role == Some(ROLE) {
                return Err(UpstreamError::service(
                    400,
                    "AccessDeniedException",
                    "denied",
                ));
            }
            if input.filters.is_some() {
                return Err(UpstreamError::Timeout);
            }
            let (found, gone): (Vec<&str>, Vec<&str>) = input
                .secret_id_list
                .iter()
                .map(String::as_str)
                .partition(|id| !id.starts_with("gone"));
            Ok(answer(&found, &gone, None))
        });
        let groups = vec![
            Group {
                role: None,
                secret_ids: vec!["a".into(), "gone1".into(), "b".into()],
                tag_keys: vec!["team".into()],
            },
            Group {
                role: Some(ROLE.into()),
                secret_ids: vec!["c".into(), "d".into()],
                tag_keys: vec![],
            },
        ];
        let (summary, stored) = prefetch(&groups, &fake, 100);
        assert_eq!(
            summary,
            Summary {
                secrets: 2,
                entries: 2,
                calls: 3,
                failures: 1 + 1 + 2,
                stopped_at_limit: false
            }
        );
        assert!(stored.contains_key(&key("a", None)) && stored.contains_key(&key("b", None)));
        assert!(!stored.contains_key(&key("gone1", None)));
        assert_eq!(fake.calls.borrow()[2].0.as_deref(), Some(ROLE));
    }

    #[test]
    fn entries_already_cached_are_not_counted() {
        let fake = Fake::echo();
        let mut seen = 0;
        let sink = FnSink(RefCell::new(|_: &Key, _: SecretValue| {
            seen += 1;
            seen != 2
        }));
        let summary = run(&own(ids(3), vec![]), &fake, 10, Duration::ZERO, &sink);
        assert_eq!((summary.secrets, summary.entries), (2, 2));
    }

    #[test]
    fn plan_groups_per_role_once_each() {
        let secret = |id: &str, role: Option<&str>| PrefetchSecret {
            secret_id: id.into(),
            role_arn: role.map(String::from),
        };
        let prefetch = Prefetch {
            secrets: vec![
                secret("a", None),
                secret("b", Some(ROLE)),
                secret("a", None),
                secret("c", None),
            ],
            filter_tags: vec![PrefetchTag {
                key: "team".into(),
                role_arn: Some(ROLE.into()),
            }],
            ..Prefetch::default()
        };
        assert_eq!(
            plan(&prefetch),
            [
                Group {
                    role: None,
                    secret_ids: vec!["a".into(), "c".into()],
                    tag_keys: vec![],
                },
                Group {
                    role: Some(ROLE.into()),
                    secret_ids: vec!["b".into()],
                    tag_keys: vec!["team".into()],
                },
            ]
        );
        assert_eq!(limit(&prefetch, 1000), 800);
        let half = Prefetch {
            cache_buffer_ratio: 0.5,
            ..Prefetch::default()
        };
        assert_eq!(limit(&half, 3), 1);
    }

    #[test]
    fn calls_are_paced() {
        let fake = Fake::echo();
        let started = Instant::now();
        run(
            &own(ids(60), vec![]),
            &fake,
            1000,
            Duration::from_millis(30),
            &FnSink(RefCell::new(|_: &Key, _: SecretValue| true)),
        );
        assert!(
            started.elapsed() >= Duration::from_millis(60),
            "three calls, two gaps"
        );
    }
}
