//! The newest in-progress update of a stream that storage had no room for. It waits until storage has room, is
//! replaced by a newer update, and is dropped once the close of its candle is stored. Closed candles are never
//! deferred: they are always sent.

use crate::domain::Candle;

/// An in-progress update waiting for room in storage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PendingUpdate {
    pub candle: Candle,
    /// `E` of the update that carried it, ms UTC, if it came live.
    pub event_time: Option<i64>,
}

/// At most one update waits: only the newest matters, the upsert of a candle overwrites its older values.
#[derive(Debug, Clone, Default)]
pub struct DeferredUpdate {
    newest: Option<PendingUpdate>,
}

impl DeferredUpdate {
    /// Keeps `update` until storage has room. Returns whether it replaced an older one (which is coalesced away).
    pub fn defer(&mut self, update: PendingUpdate) -> bool {
        self.newest.replace(update).is_some()
    }

    /// The close of the candle opened at `open_time` goes to storage: an update of that candle still waiting
    /// would only overwrite it with older values.
    pub fn closed(&mut self, open_time: i64) {
        if self.newest.is_some_and(|update| update.candle.open_time == open_time) {
            self.newest = None;
        }
    }

    /// The update waiting, if any; none waits afterwards.
    pub fn take(&mut self) -> Option<PendingUpdate> {
        self.newest.take()
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

    #[test]
    fn only_the_newest_update_waits_and_a_close_of_its_candle_drops_it() {
        let mut deferred = DeferredUpdate::default();
        // TC0: nothing waits.
        assert_eq!(deferred.take(), None);
        // TC1: the first update deferred replaces nothing.
        assert!(!deferred.defer(update(10, 1.1)));
        // TC2: a newer one replaces it (coalesced): only the newest is written.
        assert!(deferred.defer(update(10, 1.2)));
        assert_eq!(deferred.take(), Some(update(10, 1.2)));
        // TC3: taken: nothing waits, and the next deferral replaces nothing.
        assert_eq!(deferred.take(), None);
        assert!(!deferred.defer(update(11, 1.3)));
        // TC4: the close of another candle leaves it waiting.
        deferred.closed(10 * MIN);
        assert_eq!(deferred.take(), Some(update(11, 1.3)));
        // TC5: the close of its own candle drops it.
        deferred.defer(update(11, 1.4));
        deferred.closed(11 * MIN);
        assert_eq!(deferred.take(), None);
        // TC6: a close with nothing waiting changes nothing.
        deferred.closed(12 * MIN);
        assert!(!deferred.defer(update(12, 1.5)));
    }
}
