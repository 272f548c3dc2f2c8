//! The in-progress updates waiting for storage's next commit, shared by every subscription (which puts its stream's
//! newest) and the storage actor (which takes them all at each commit). No message crosses threads per update, and
//! what waits is bounded by the number of streams ([`LatestUpdates`]): a storage that falls behind, or an
//! unreachable database, coalesces the updates of a stream instead of queueing them. Closed candles never go this
//! way: they are sent to storage as messages, and never coalesced away.
//!
//! It outlives the storage actor: what waits when storage is replaced is taken by the next one.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::domain::{LatestUpdates, PendingUpdate, StreamId};

#[derive(Debug, Default)]
struct Inner {
    /// What the subscriptions put.
    waiting: Mutex<LatestUpdates>,
    /// Storage's side: the updates taken at a commit, swapped out of `waiting` so that the lock is held only for
    /// the swap. Its room is reused by the next swap.
    taken: Mutex<LatestUpdates>,
}

/// Cheap to clone: every clone shares one set of waiting updates.
#[derive(Debug, Clone, Default)]
pub struct InProgressUpdates(Arc<Inner>);

fn lock(mutex: &Mutex<LatestUpdates>) -> MutexGuard<'_, LatestUpdates> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl InProgressUpdates {
    /// Keeps `update` as `stream`'s newest until storage takes it. Returns whether it replaced one storage had not
    /// taken yet (coalesced away).
    pub fn put(&self, stream: StreamId, update: PendingUpdate) -> bool {
        lock(&self.0.waiting).put(stream, update)
    }

    /// The close of `stream`'s candle opened at `open_time` goes to storage: an older update of it waiting here is
    /// dropped.
    pub fn closed(&self, stream: StreamId, open_time: i64) {
        lock(&self.0.waiting).closed(stream, open_time);
    }

    /// How many streams have an update waiting.
    pub fn len(&self) -> usize {
        lock(&self.0.waiting).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes every waiting update and hands each to `take` (storage, queueing it for the commit it is making).
    pub fn take_all(&self, mut take: impl FnMut(StreamId, PendingUpdate)) {
        let mut taken = lock(&self.0.taken);
        lock(&self.0.waiting).swap(&mut taken);
        for (stream, update) in taken.drain() {
            take(stream, update);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::minute_candle;

    #[test]
    fn storage_takes_the_newest_update_of_each_stream_once() {
        let updates = InProgressUpdates::default();
        let put = |stream: u32, minute: i64, close: f64| {
            let candle = minute_candle(minute, close, false);
            updates.put(StreamId(stream), PendingUpdate { candle, event_time: Some(candle.open_time) })
        };
        assert!(!put(0, 5, 1.0));
        assert!(put(0, 5, 1.5), "a second update before storage took the first coalesces it");
        assert!(!put(1, 5, 2.0));
        let mut taken = Vec::new();
        updates.clone().take_all(|stream, update| taken.push((stream.0, update.candle.close)));
        taken.sort_by_key(|(stream, _)| *stream);
        assert_eq!(taken, [(0, 1.5), (1, 2.0)]);
        // Taken once: nothing waits any more, and the next update coalesces nothing.
        assert!(updates.is_empty());
        updates.take_all(|_, _| panic!("nothing waits"));
        assert!(!put(0, 6, 1.0));
    }
}
