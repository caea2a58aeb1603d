//! Every open connection, by token: where a connection waits while it is
//! armed in epoll, so that the keeper can close the ones that time out and
//! a worker woken for a token finds the connection it stands for.
//!
//! A token is a slot and the slot's generation. A slot is reused once its
//! connection closed, under a new generation, so an event that was already
//! on its way for the old connection (or that the kernel keeps reporting
//! for a descriptor a forked child still holds) finds nothing and is
//! dropped. Arming happens under the slot's lock, after the connection is
//! back in its slot: the keeper cannot close it in between, so a descriptor
//! number is never armed after it was closed and reused.
//!
//! Connections stay registered for every edge, so an event can come for one
//! a worker is serving (bytes that arrived after its last read, or a
//! wake-up). The slot remembers it, and the worker, when it parks the
//! connection, is told to serve it again instead: no event is lost, and no
//! connection is served by two workers at once.
//!
//! The slots are split into shards, each behind its own mutex: a worker
//! holds one for a map lookup or an `epoll_ctl`, and two workers seldom
//! want the same shard.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use secrets_manager_agent_core::sync::lock;

const SHARDS: usize = 16;

/// Which connection an event is for. Tokens below 2^32 (generation 0) are
/// never handed out, which leaves them to the listeners.
pub type Token = u64;

pub struct Registry<T> {
    shards: Box<[Mutex<Shard<T>>]>,
    open: AtomicUsize,
}

struct Shard<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

struct Slot<T> {
    generation: u32,
    state: State<T>,
}

enum State<T> {
    Free,
    /// A worker serves it; `again` once an event came for it meanwhile.
    Out {
        again: bool,
    },
    /// Armed in epoll, waiting.
    Parked(T),
}

/// What became of an item given back with [`Registry::park`].
#[derive(Debug, PartialEq, Eq)]
pub enum Parked<T> {
    /// Parked, and armed.
    Yes,
    /// An event came for it while it was out: still out, to be served
    /// again.
    Again(T),
    /// Its token is stale, or arming failed (the slot is freed): to be
    /// dropped.
    No(T),
}

fn split(token: Token) -> (usize, usize, u32) {
    let generation = (token >> 32) as u32;
    let at = (token & u64::from(u32::MAX)) as usize;
    (at % SHARDS, at / SHARDS, generation)
}

fn join(shard: usize, index: usize, generation: u32) -> Token {
    (u64::from(generation) << 32) | (index * SHARDS + shard) as u64
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        slots: Vec::new(),
                        free: Vec::new(),
                    })
                })
                .collect(),
            open: AtomicUsize::new(0),
        }
    }
}

impl<T> Registry<T> {
    /// Connections open: waiting, or being served.
    pub fn len(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Adds `item` parked and calls `arm` with its token under the slot's
    /// lock; when arming fails the item is dropped and the error returned.
    pub fn insert(
        &self,
        item: T,
        shard_hint: usize,
        arm: impl FnOnce(&T, Token) -> io::Result<()>,
    ) -> io::Result<()> {
        let s = shard_hint % SHARDS;
        let mut shard = lock(&self.shards[s]);
        let index = match shard.free.pop() {
            Some(index) => index as usize,
            None => {
                if shard.slots.len() >= (u32::MAX as usize) / SHARDS {
                    return Err(io::ErrorKind::OutOfMemory.into());
                }
                shard.slots.push(Slot {
                    generation: 0,
                    state: State::Free,
                });
                shard.slots.len() - 1
            }
        };
        let slot = &mut shard.slots[index];
        // Never 0: that generation is the listeners'.
        slot.generation = slot.generation.checked_add(1).unwrap_or(1);
        let token = join(s, index, slot.generation);
        if let Err(e) = arm(&item, token) {
            shard.free.push(index as u32);
            return Err(e);
        }
        shard.slots[index].state = State::Parked(item);
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Takes the parked item `token` stands for, if it still does. An
    /// event for an item already out is noted for its worker (see
    /// [`Registry::park`]).
    pub fn take(&self, token: Token) -> Option<T> {
        let (mut shard, index) = self.lock_slot(token)?;
        let slot = &mut shard.slots[index];
        match std::mem::replace(&mut slot.state, State::Out { again: false }) {
            State::Parked(item) => Some(item),
            State::Out { .. } => {
                slot.state = State::Out { again: true };
                None
            }
            State::Free => {
                slot.state = State::Free;
                None
            }
        }
    }

    /// Parks a taken item again and calls `arm` under the slot's lock,
    /// unless an event came for it while it was out: then it stays out, to
    /// be served again. When arming fails the slot is freed and the item
    /// given back to be dropped.
    pub fn park(
        &self,
        token: Token,
        mut item: T,
        arm: impl FnOnce(&mut T) -> io::Result<()>,
    ) -> Parked<T> {
        let Some((mut shard, index)) = self.lock_slot(token) else {
            return Parked::No(item);
        };
        match &mut shard.slots[index].state {
            State::Out { again: true } => {
                shard.slots[index].state = State::Out { again: false };
                return Parked::Again(item);
            }
            State::Out { again: false } => {}
            _ => return Parked::No(item),
        }
        if arm(&mut item).is_err() {
            self.release(&mut shard, index);
            return Parked::No(item);
        }
        shard.slots[index].state = State::Parked(item);
        Parked::Yes
    }

    /// An event from outside epoll (a wake-up): calls `arm` on a parked
    /// item, or notes it for the worker of an item that is out. When arming
    /// fails the slot is freed and the item returned, to be dropped; a
    /// stale token does nothing.
    pub fn notify(&self, token: Token, arm: impl FnOnce(&mut T) -> io::Result<()>) -> Option<T> {
        let (mut shard, index) = self.lock_slot(token)?;
        match &mut shard.slots[index].state {
            State::Parked(item) => {
                if arm(item).is_ok() {
                    return None;
                }
            }
            State::Out { .. } => {
                shard.slots[index].state = State::Out { again: true };
                return None;
            }
            State::Free => return None,
        }
        match self.release(&mut shard, index) {
            State::Parked(item) => Some(item),
            _ => None,
        }
    }

    /// Frees the slot of a taken item (whose owner closes it).
    pub fn remove(&self, token: Token) {
        if let Some((mut shard, index)) = self.lock_slot(token) {
            if matches!(shard.slots[index].state, State::Out { .. }) {
                self.release(&mut shard, index);
            }
        }
    }

    /// Removes the parked items `evict` picks and returns them (to be closed
    /// outside the locks). `evict` sees each parked item once.
    pub fn evict(&self, mut evict: impl FnMut(Token, &T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        for (s, mutex) in self.shards.iter().enumerate() {
            let mut shard = lock(mutex);
            for index in 0..shard.slots.len() {
                let slot = &shard.slots[index];
                let State::Parked(item) = &slot.state else {
                    continue;
                };
                if !evict(join(s, index, slot.generation), item) {
                    continue;
                }
                if let State::Parked(item) = self.release(&mut shard, index) {
                    out.push(item);
                }
            }
        }
        out
    }

    /// The shard of `token`'s slot, locked, and the slot's index: if the
    /// slot still has the token's generation.
    fn lock_slot(&self, token: Token) -> Option<(MutexGuard<'_, Shard<T>>, usize)> {
        let (s, index, generation) = split(token);
        let shard = lock(self.shards.get(s)?);
        let current = shard.slots.get(index)?.generation == generation;
        current.then_some((shard, index))
    }

    /// Frees a slot for reuse; returns what it held.
    fn release(&self, shard: &mut Shard<T>, index: usize) -> State<T> {
        shard.free.push(index as u32);
        self.open.fetch_sub(1, Ordering::Relaxed);
        std::mem::replace(&mut shard.slots[index].state, State::Free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &&str, _: Token) -> io::Result<()> {
        Ok(())
    }

    /// Inserts `item` armed without fail; returns its token.
    fn inserted(registry: &Registry<&'static str>, item: &'static str, hint: usize) -> Token {
        let mut token = 0;
        registry
            .insert(item, hint, |_, t| {
                token = t;
                Ok(())
            })
            .unwrap();
        token
    }

    #[test]
    fn a_token_finds_its_item_once_and_never_after_reuse() {
        let registry = Registry::default();
        let token = inserted(&registry, "a", 3);
        assert!(token >> 32 != 0, "generation 0 is the listeners'");
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.take(token), Some("a"));
        assert_eq!(registry.take(token), None, "already out");
        assert_eq!(registry.park(token, "a", |_| Ok(())), Parked::Again("a"));
        assert_eq!(registry.park(token, "a", |_| Ok(())), Parked::Yes);
        assert_eq!(registry.take(token), Some("a"));
        registry.remove(token);
        assert_eq!(registry.len(), 0);

        // The slot is reused under a new generation: the old token is stale.
        let again = inserted(&registry, "b", 3);
        assert_eq!(again & 0xffff_ffff, token & 0xffff_ffff, "same slot");
        assert_ne!(again, token);
        assert_eq!(registry.take(token), None);
        assert_eq!(registry.park(token, "x", |_| Ok(())), Parked::No("x"));
        registry.remove(token);
        assert_eq!(registry.len(), 1, "a stale remove frees nothing");
        assert_eq!(registry.take(again), Some("b"));
        assert_eq!(registry.take(7), None, "a listener's token");
    }

    #[test]
    fn failing_to_arm_frees_the_slot() {
        let registry = Registry::default();
        let refused = registry.insert("a", 0, |_, _| Err(io::ErrorKind::Other.into()));
        assert!(refused.is_err());
        assert_eq!(registry.len(), 0);
        let token = inserted(&registry, "b", 0);
        let b = registry.take(token).unwrap();
        assert_eq!(
            registry.park(token, b, |_| Err(io::ErrorKind::Other.into())),
            Parked::No("b")
        );
        assert_eq!(registry.len(), 0);
        assert_eq!(registry.take(token), None);
    }

    #[test]
    fn an_event_for_an_item_out_has_it_served_again() {
        let registry = Registry::default();
        let token = inserted(&registry, "a", 1);
        let a = registry.take(token).unwrap();
        // An event while "a" is out: nobody else gets it...
        assert_eq!(registry.take(token), None);
        // ... and its worker keeps it instead of parking it, without arming.
        let again = registry.park(token, a, |_| panic!("armed"));
        assert_eq!(again, Parked::Again("a"));
        // Told once: the next park goes through.
        assert_eq!(registry.park(token, "a", |_| Ok(())), Parked::Yes);

        // A wake-up arms a parked item...
        let mut armed = 0;
        assert_eq!(
            registry.notify(token, |_| {
                armed += 1;
                Ok(())
            }),
            None
        );
        assert_eq!(armed, 1);
        // ... and is noted for one that is out.
        let a = registry.take(token).unwrap();
        assert_eq!(registry.notify(token, |_| panic!("armed while out")), None);
        assert_eq!(registry.park(token, a, |_| Ok(())), Parked::Again("a"));
        // A wake-up whose arming fails closes the item.
        assert_eq!(registry.park(token, "a", |_| Ok(())), Parked::Yes);
        let failed = registry.notify(token, |_| Err(io::ErrorKind::Other.into()));
        assert_eq!(failed, Some("a"));
        assert_eq!(registry.len(), 0);
        assert_eq!(registry.notify(token, |_| panic!("stale")), None);
    }

    #[test]
    fn evicts_only_parked_items() {
        let registry = Registry::default();
        for (n, item) in ["keep", "drop", "out"].into_iter().enumerate() {
            registry.insert(item, n, ok).unwrap();
        }
        let out_token = {
            let mut found = 0;
            registry.evict(|t, item| {
                if *item == "out" {
                    found = t;
                }
                false
            });
            found
        };
        assert_eq!(registry.take(out_token), Some("out"));
        // "out" is being served: eviction does not see it.
        let evicted = registry.evict(|_, item| *item != "keep");
        assert_eq!(evicted, vec!["drop"]);
        assert_eq!(registry.len(), 2);
    }
}
