//! The newest in-progress update of each stream that storage has not taken yet. Only the newest of a stream waits
//! (the upsert of a candle overwrites its older values), so what waits is bounded by the number of streams whatever
//! storage's pace. An update is dropped once the close of its candle goes to storage. Closed candles never wait
//! here: they are always sent.

use std::collections::HashMap;

use crate::domain::{Candle, StreamId};

/// An in-progress update waiting for storage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PendingUpdate {
    pub candle: Candle,
    /// `E` of the update that carried it, ms UTC, if it came live.
    pub event_time: Option<i64>,
}

/// At most one update per stream: the newest.
#[derive(Debug, Clone, Default)]
pub struct LatestUpdates {
    newest: HashMap<StreamId, PendingUpdate>,
}

impl LatestUpdates {
    /// Keeps `update` as `stream`'s newest. Returns whether it replaced one not taken yet (which is coalesced away).
    pub fn put(&mut self, stream: StreamId, update: PendingUpdate) -> bool {
        self.newest.insert(stream, update).is_some()
    }

    /// The close of `stream`'s candle opened at `open_time` goes to storage: an update of that candle (or an older
    /// one) still waiting would only overwrite it with older values.
    pub fn closed(&mut self, stream: StreamId, open_time: i64) {
        if self.newest.get(&stream).is_some_and(|update| update.candle.open_time <= open_time) {
            self.newest.remove(&stream);
        }
    }

    pub fn len(&self) -> usize {
        self.newest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.newest.is_empty()
    }

    /// Swaps the waiting updates with `other`'s (an emptied map whose room is reused): the caller takes them all.
    pub fn swap(&mut self, other: &mut LatestUpdates) {
        std::mem::swap(&mut self.newest, &mut other.newest);
    }

    /// Takes every waiting update, in no particular order; the room stays for the next ones.
    pub fn drain(&mut self) -> impl Iterator<Item = (StreamId, PendingUpdate)> + '_ {
        self.newest.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::fixtures::{MIN, minute_candle};

    fn update(open_minute: i64, close: f64) -> PendingUpdate {
        let candle = minute_candle(open_minute, close, false);
        PendingUpdate { candle, event_time: Some(candle.open_time + 1_000) }
    }

    fn taken(latest: &mut LatestUpdates) -> Vec<(StreamId, PendingUpdate)> {
        let mut all: Vec<_> = latest.drain().collect();
        all.sort_by_key(|(stream, _)| *stream);
        all
    }

    #[test]
    fn only_the_newest_update_of_a_stream_waits_and_a_close_of_its_candle_drops_it() {
        let (a, b) = (StreamId(0), StreamId(1));
        let mut latest = LatestUpdates::default();
        // TC0: nothing waits.
        assert!(taken(&mut latest).is_empty());
        // TC1: the first update of each stream replaces nothing.
        assert!(!latest.put(a, update(10, 1.1)));
        assert!(!latest.put(b, update(10, 2.1)));
        // TC2: a newer one of the same stream replaces it (coalesced): only the newest is written.
        assert!(latest.put(a, update(10, 1.2)));
        assert_eq!(latest.len(), 2);
        assert_eq!(taken(&mut latest), [(a, update(10, 1.2)), (b, update(10, 2.1))]);
        // TC3: taken: nothing waits, and the next update replaces nothing.
        assert!(latest.is_empty());
        assert!(!latest.put(a, update(11, 1.3)));
        // TC4: the close of an older candle, or of another stream's, leaves it waiting.
        latest.closed(a, 10 * MIN);
        latest.closed(b, 11 * MIN);
        assert_eq!(taken(&mut latest), [(a, update(11, 1.3))]);
        // TC5: the close of its own candle drops it.
        latest.put(a, update(11, 1.4));
        latest.closed(a, 11 * MIN);
        assert!(latest.is_empty());
        // TC6: swapping hands the waiting updates over and leaves the other side's (empty) map in place.
        latest.put(b, update(12, 2.2));
        let mut other = LatestUpdates::default();
        latest.swap(&mut other);
        assert!(latest.is_empty());
        assert_eq!(taken(&mut other), [(b, update(12, 2.2))]);
    }
}
