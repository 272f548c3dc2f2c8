//! The stream registry: which streams are configured now, and the [`StreamId`] of every stream configured since
//! the process started. The supervisor adds and removes streams as the config changes; storage resolves ids to
//! keys through it, and HTTP reads the configured set from it.
//!
//! Ids are never reused for another key: a write still queued for a stream that was just removed lands under the
//! right key. A stream removed and added back gets its old id again.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::domain::{StreamId, StreamKey};

#[derive(Debug, Default)]
struct Inner {
    /// Every key ever registered, indexed by its id.
    keys: Vec<StreamKey>,
    ids: HashMap<StreamKey, StreamId>,
    /// Configured now, by id.
    active: Vec<bool>,
}

/// Cheap to clone: every clone shares one registry.
#[derive(Debug, Clone, Default)]
pub struct StreamRegistry {
    inner: Arc<RwLock<Inner>>,
}

impl StreamRegistry {
    /// A registry with `keys` configured, with ids 0, 1, ... in their order.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a StreamKey>) -> Self {
        let registry = Self::default();
        for key in keys {
            registry.activate(key);
        }
        registry
    }

    /// Marks `key` configured; returns its id (the one it had before, if it was ever registered).
    pub fn activate(&self, key: &StreamKey) -> StreamId {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let id = match inner.ids.get(key) {
            Some(&id) => id,
            None => {
                let id = StreamId(inner.keys.len() as u32);
                inner.keys.push(key.clone());
                inner.active.push(false);
                inner.ids.insert(key.clone(), id);
                id
            }
        };
        inner.active[id.0 as usize] = true;
        id
    }

    /// Marks the stream no longer configured. Its id still resolves.
    pub fn deactivate(&self, id: StreamId) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(active) = inner.active.get_mut(id.0 as usize) {
            *active = false;
        }
    }

    /// The key of `id`, configured or not.
    pub fn key(&self, id: StreamId) -> Option<StreamKey> {
        self.read().keys.get(id.0 as usize).cloned()
    }

    /// Calls `f` with every key ever registered, indexed by id: resolving a batch of ids under one lock.
    pub fn with_keys<R>(&self, f: impl FnOnce(&[StreamKey]) -> R) -> R {
        f(&self.read().keys)
    }

    /// The configured streams, in the order they were first registered.
    pub fn active(&self) -> Vec<StreamKey> {
        let inner = self.read();
        inner.keys.iter().zip(&inner.active).filter(|(_, active)| **active).map(|(key, _)| key.clone()).collect()
    }

    /// How many streams are configured now.
    pub fn active_count(&self) -> usize {
        self.read().active.iter().filter(|active| **active).count()
    }

    /// Whether a configured stream has this symbol.
    pub fn has_symbol(&self, symbol: &str) -> bool {
        let inner = self.read();
        inner.keys.iter().zip(&inner.active).any(|(key, active)| *active && key.symbol == symbol)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timeframe;

    #[test]
    fn ids_stay_with_their_keys_through_removal_and_return() {
        let btc = StreamKey::new("BTCUSDT", Timeframe::M1);
        let eth = StreamKey::new("ETHUSDT", Timeframe::M1);
        let sol = StreamKey::new("SOLUSDT", Timeframe::M5);
        let registry = StreamRegistry::new([&btc, &eth]);
        // TC0: start-up keys get ids in order.
        assert_eq!(registry.active(), [btc.clone(), eth.clone()]);
        assert_eq!(registry.key(StreamId(1)), Some(eth.clone()));
        // TC1: a removed stream leaves the configured set, but its id still resolves (for writes still queued).
        registry.deactivate(StreamId(0));
        assert_eq!(registry.active(), std::slice::from_ref(&eth));
        assert_eq!(registry.active_count(), 1);
        assert!(!registry.has_symbol("BTCUSDT"));
        assert_eq!(registry.key(StreamId(0)), Some(btc.clone()));
        // TC2: a new key gets the next id; a returning key its old one, and its old place in the order.
        assert_eq!(registry.activate(&sol), StreamId(2));
        assert_eq!(registry.activate(&btc), StreamId(0));
        assert_eq!(registry.active(), [btc, eth, sol]);
        assert_eq!(registry.active_count(), 3);
        assert!(registry.has_symbol("SOLUSDT"));
        assert_eq!(registry.with_keys(<[StreamKey]>::len), 3);
        // TC3: an id never registered resolves to nothing.
        assert_eq!(registry.key(StreamId(3)), None);
    }
}
