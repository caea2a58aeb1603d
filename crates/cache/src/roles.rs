//! Per-request roles (`roleArn`): one upstream client per IAM role, made on
//! first use and kept for the agent's life, at most `max_roles` of them. The
//! cache keys answers by role (`cache::Key`), so only its misses and
//! revalidations come here: a cache hit takes no lock of this registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{Key, Upstream};
use secrets_manager_agent_aws::{SecretValue, UpstreamError};
use secrets_manager_agent_core::sync::lock;

/// Makes the client for a role (no I/O: credentials are asked on first use).
type Make<U> = Box<dyn Fn(&str) -> U + Send + Sync>;

/// The agent's own client and the clients of the roles seen so far.
pub struct Roles<U> {
    own: U,
    make: Make<U>,
    max_roles: usize,
    clients: Mutex<HashMap<String, Arc<U>>>,
}

impl<U: Upstream> Roles<U> {
    pub fn new(
        own: U,
        max_roles: usize,
        make: impl Fn(&str) -> U + Send + Sync + 'static,
    ) -> Roles<U> {
        Roles {
            own,
            make: Box::new(make),
            max_roles,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `call` with the client for `role` (`None`: the agent's own), made
    /// now if it is new and there is room (prefetching, which calls
    /// operations the cache does not know).
    pub fn with_client<R>(
        &self,
        role: Option<&str>,
        call: impl FnOnce(&U) -> R,
    ) -> Result<R, UpstreamError> {
        match role {
            None => Ok(call(&self.own)),
            Some(role) => Ok(call(&*self.client(role)?)),
        }
    }

    /// The client for `role`, made now if it is new and there is room.
    fn client(&self, role: &str) -> Result<Arc<U>, UpstreamError> {
        let mut clients = lock(&self.clients);
        if let Some(client) = clients.get(role) {
            return Ok(client.clone());
        }
        if clients.len() >= self.max_roles {
            return Err(UpstreamError::Refused {
                code: "TooManyRoles",
                message: format!(
                    "this agent already serves {} roles, its limit (max_roles = {}); {role} is not added",
                    clients.len(),
                    self.max_roles
                ),
            });
        }
        log::info!(
            "serving role {role} ({} of max_roles {})",
            clients.len() + 1,
            self.max_roles
        );
        let client = Arc::new((self.make)(role));
        clients.insert(role.to_string(), client.clone());
        Ok(client)
    }
}

impl<U: Upstream> Upstream for Roles<U> {
    fn fetch(&self, key: &Key) -> Result<SecretValue, UpstreamError> {
        match key.role() {
            None => self.own.fetch(key),
            Some(role) => self.client(role)?.fetch(key),
        }
    }

    fn still_current(&self, key: &Key, cached_version: &str) -> Result<bool, UpstreamError> {
        match key.role() {
            None => self.own.still_current(key, cached_version),
            Some(role) => self.client(role)?.still_current(key, cached_version),
        }
    }

    fn batch_limit(&self) -> usize {
        self.own.batch_limit()
    }

    /// The cache batches keys of one role only: the first key's role is
    /// every key's.
    fn fetch_batch(&self, keys: &[Key]) -> Result<Vec<(usize, SecretValue)>, UpstreamError> {
        let role = keys.first().and_then(Key::role);
        self.with_client(role, |client| client.fetch_batch(keys))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrets_manager_agent_aws::{ReadCall, SecretQuery};
    use secrets_manager_agent_core::secret::SecretBytes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers with the identity it was made for.
    struct As(String);

    impl Upstream for As {
        fn fetch(&self, _: &Key) -> Result<SecretValue, UpstreamError> {
            Ok(SecretValue {
                body: SecretBytes::new(self.0.clone().into_bytes()),
                version_id: "v1".into(),
            })
        }
        fn still_current(&self, _: &Key, _: &str) -> Result<bool, UpstreamError> {
            Ok(true)
        }
    }

    fn key(role: Option<&str>) -> Key {
        Key::Secret {
            query: SecretQuery {
                secret_id: "s".into(),
                version_id: None,
                version_stage: None,
            },
            role: role.map(String::from),
        }
    }

    fn answer(roles: &Roles<As>, role: Option<&str>) -> Result<String, UpstreamError> {
        roles
            .fetch(&key(role))
            .map(|v| String::from_utf8(v.body.to_vec()).unwrap())
    }

    #[test]
    fn each_role_has_its_client_and_the_bound_holds() {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let roles = Roles::new(As("own".into()), 2, move |role| {
            counter.fetch_add(1, Ordering::SeqCst);
            As(role.into())
        });
        let (a, b, c) = ("role-a", "role-b", "role-c");
        assert_eq!(answer(&roles, None).unwrap(), "own");
        assert_eq!(answer(&roles, Some(a)).unwrap(), a);
        assert_eq!(answer(&roles, Some(b)).unwrap(), b);
        assert_eq!(answer(&roles, Some(a)).unwrap(), a);
        assert!(roles.still_current(&key(Some(b)), "v1").unwrap());
        assert_eq!(
            made.load(Ordering::SeqCst),
            2,
            "one client per role, made once"
        );

        let Err(UpstreamError::Refused { code, message }) = answer(&roles, Some(c)) else {
            panic!("a third role must be refused");
        };
        assert_eq!(code, "TooManyRoles");
        assert!(
            message.contains("max_roles = 2") && message.contains(c),
            "{message}"
        );
        assert!(roles.still_current(&key(Some(c)), "v1").is_err());
        assert_eq!(made.load(Ordering::SeqCst), 2);
        // Known roles and the agent's own identity still answer.
        assert_eq!(answer(&roles, Some(b)).unwrap(), b);
        assert_eq!(answer(&roles, None).unwrap(), "own");
    }

    #[test]
    fn calls_passed_through_go_to_their_roles_client() {
        let roles = Roles::new(As("own".into()), 1, |role| As(role.into()));
        let call = |role: Option<&str>| {
            let key = Key::Call {
                call: ReadCall::BatchGetSecretValue,
                input: r#"{"SecretIdList":["s"]}"#.into(),
                role: role.map(String::from),
            };
            roles
                .fetch(&key)
                .map(|v| String::from_utf8(v.body.to_vec()).unwrap())
        };
        assert_eq!(call(None).unwrap(), "own");
        assert_eq!(call(Some("role-a")).unwrap(), "role-a");
        assert!(matches!(
            call(Some("role-b")),
            Err(UpstreamError::Refused { .. })
        ));
    }
}
