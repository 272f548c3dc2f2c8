//! What each stream has published to JetStream, and what it still has to: the publisher's bookkeeping, pure.
//!
//! Per stream:
//! - a *floor*: every closed candle opened at or before it counts as published. At start it is the open time of the
//!   last message JetStream holds on the stream's subject (so a restart or a replica continues where the stream
//!   is); it rises as old entries leave the bounded memory of recent publications;
//! - the *recent* publications above the floor, each with a fingerprint of the candle and its revision number, so
//!   that a replay of the same candle is skipped and a differing one is published as the next revision;
//! - a *catch-up* mark: the earliest open time to read again from the store, in order (after an outage, at start,
//!   after the queue dropped a candle, after a failed publication). While a stream is marked, live candles at or
//!   after the mark wait for the catch-up, which reads them from the store;
//! - *unchecked* commits: closed candles the store committed that did not come through the hub (REST backfills,
//!   audit repairs, revisions). After a short settle time (their indicator values land a little later), those
//!   still not published as they are turn into a catch-up mark.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::domain::{Candle, StreamKey};

/// Publications remembered per stream above its floor; older ones raise the floor.
pub const RECENT_PER_STREAM: usize = 512;

/// What to do with a closed candle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Publish it, as revision `revision` (0: the first publication).
    Publish { revision: u32 },
    /// Already published, with these values (or at or below the floor).
    Skip,
    /// The stream is catching up from the store, which will publish it in order.
    Defer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Published {
    fingerprint: u64,
    revision: u32,
}

#[derive(Debug, Default)]
struct StreamLedger {
    floor: Option<i64>,
    recent: BTreeMap<i64, Published>,
    catch_up: Option<i64>,
    /// Commits not seen published yet: open time → the committed candle's fingerprint.
    unchecked: BTreeMap<i64, u64>,
    unchecked_since: Option<Instant>,
}

impl StreamLedger {
    fn published(&self, open_time: i64) -> bool {
        self.recent.contains_key(&open_time) || self.floor.is_some_and(|floor| open_time <= floor)
    }

    /// Whether the candle opened at `open_time` with `fingerprint` was published as it is (a differing one in the
    /// recent memory is a revision still to publish; one at or below the floor counts as published).
    fn published_as(&self, open_time: i64, fingerprint: u64) -> bool {
        match self.recent.get(&open_time) {
            Some(published) => published.fingerprint == fingerprint,
            None => self.published(open_time),
        }
    }
}

/// Every stream's bookkeeping.
#[derive(Debug)]
pub struct Ledger {
    streams: HashMap<StreamKey, StreamLedger>,
    recent_per_stream: usize,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new(RECENT_PER_STREAM)
    }
}

/// A fingerprint of a candle's values: two candles with one differ in some field.
pub fn fingerprint(candle: &Candle) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let floats = [
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        candle.volume,
        candle.quote_volume,
        candle.taker_buy_base,
        candle.taker_buy_quote,
    ];
    for value in floats {
        value.to_bits().hash(&mut hasher);
    }
    (candle.open_time, candle.close_time, candle.trades).hash(&mut hasher);
    hasher.finish()
}

impl Ledger {
    pub fn new(recent_per_stream: usize) -> Self {
        Self { streams: HashMap::new(), recent_per_stream: recent_per_stream.max(1) }
    }

    /// Whether the stream was seeded.
    pub fn knows(&self, key: &StreamKey) -> bool {
        self.streams.contains_key(key)
    }

    /// Starts following a stream whose last published open time is `floor` (what JetStream holds, if anything):
    /// everything stored after it is to be published, so the stream starts catching up from just after it.
    pub fn seed(&mut self, key: StreamKey, floor: Option<i64>) {
        let from = floor.map_or(i64::MIN, |floor| floor + 1);
        let stream = StreamLedger { floor, catch_up: Some(from), ..StreamLedger::default() };
        self.streams.insert(key, stream);
    }

    /// Stops following a stream (removed from the config).
    pub fn forget(&mut self, key: &StreamKey) {
        self.streams.remove(key);
    }

    pub fn keys(&self) -> impl Iterator<Item = &StreamKey> {
        self.streams.keys()
    }

    /// What to do with `candle`, closed and committed, of a seeded stream. `live`: it came through the hub (a
    /// catch-up's own reads are not deferred).
    pub fn decide(&self, key: &StreamKey, candle: &Candle, live: bool) -> Decision {
        let Some(stream) = self.streams.get(key) else { return Decision::Defer };
        if live && stream.catch_up.is_some_and(|from| candle.open_time >= from) {
            return Decision::Defer;
        }
        match stream.recent.get(&candle.open_time) {
            Some(published) if published.fingerprint == fingerprint(candle) => Decision::Skip,
            Some(published) => Decision::Publish { revision: published.revision + 1 },
            None if stream.published(candle.open_time) => Decision::Skip,
            None => Decision::Publish { revision: 0 },
        }
    }

    /// `candle` was sent as `revision`: it counts as published unless [`Ledger::failed`] says otherwise.
    pub fn record(&mut self, key: &StreamKey, candle: &Candle, revision: u32) {
        let capacity = self.recent_per_stream;
        let Some(stream) = self.streams.get_mut(key) else { return };
        stream.recent.insert(candle.open_time, Published { fingerprint: fingerprint(candle), revision });
        stream.unchecked.remove(&candle.open_time);
        while stream.recent.len() > capacity {
            let Some((oldest, _)) = stream.recent.pop_first() else { break };
            stream.floor = Some(stream.floor.map_or(oldest, |floor| floor.max(oldest)));
        }
    }

    /// The publication of `open_time` was not acknowledged: it is read from the store again.
    pub fn failed(&mut self, key: &StreamKey, open_time: i64) {
        if let Some(stream) = self.streams.get_mut(key) {
            stream.recent.remove(&open_time);
            if stream.floor.is_some_and(|floor| open_time <= floor) {
                stream.floor = Some(open_time - 1);
            }
        }
        self.catch_up(key, open_time);
    }

    /// The stream has to read again from the store from `open_time` on (a candle of it was dropped).
    pub fn catch_up(&mut self, key: &StreamKey, open_time: i64) {
        if let Some(stream) = self.streams.get_mut(key) {
            stream.catch_up = Some(stream.catch_up.map_or(open_time, |from| from.min(open_time)));
        }
    }

    /// Every stream reads again from the store from its oldest remembered publication on (the commits it was told
    /// of were lost).
    pub fn catch_up_all(&mut self) {
        for stream in self.streams.values_mut() {
            let from = stream.recent.keys().next().copied().or(stream.floor.map(|f| f + 1)).unwrap_or(i64::MIN);
            stream.catch_up = Some(stream.catch_up.map_or(from, |mark| mark.min(from)));
        }
    }

    /// The store committed `candle`, closed, of `key` at `now` (a revision too: revisions reach the store, not the
    /// hub): unless it gets published as it is within the settle time, it is caught up ([`Ledger::settle`]).
    pub fn committed(&mut self, key: &StreamKey, candle: &Candle, now: Instant) {
        let Some(stream) = self.streams.get_mut(key) else { return };
        let fingerprint = fingerprint(candle);
        if stream.published_as(candle.open_time, fingerprint) {
            return;
        }
        stream.unchecked.insert(candle.open_time, fingerprint);
        stream.unchecked_since.get_or_insert(now);
    }

    /// Turns commits unchecked for at least `settle` and still not published as they are into catch-up marks.
    pub fn settle(&mut self, now: Instant, settle: Duration) {
        for stream in self.streams.values_mut() {
            let Some(since) = stream.unchecked_since else { continue };
            if now.duration_since(since) < settle {
                continue;
            }
            let unchecked = std::mem::take(&mut stream.unchecked);
            stream.unchecked_since = None;
            if let Some((&from, _)) = unchecked.iter().find(|&(&open, &f)| !stream.published_as(open, f)) {
                stream.catch_up = Some(stream.catch_up.map_or(from, |mark| mark.min(from)));
            }
        }
    }

    /// The streams to catch up, each with the open time to read the store from.
    pub fn catching_up(&self) -> Vec<(StreamKey, i64)> {
        let marked = self.streams.iter().filter_map(|(key, s)| Some((key.clone(), s.catch_up?)));
        let mut marked: Vec<_> = marked.collect();
        marked.sort_by(|a, b| (&a.0.symbol, a.0.timeframe, a.1).cmp(&(&b.0.symbol, b.0.timeframe, b.1)));
        marked
    }

    /// The catch-up of `key` from `from` read the store to its end: done, unless a mark placed meanwhile moved it
    /// (that one stays).
    pub fn caught_up(&mut self, key: &StreamKey, from: i64) {
        if let Some(stream) = self.streams.get_mut(key)
            && stream.catch_up == Some(from)
        {
            stream.catch_up = None;
        }
    }

    /// The catch-up of `key` read the store up to `through` but not past it yet: it goes on after it.
    pub fn caught_up_through(&mut self, key: &StreamKey, from: i64, through: i64) {
        if let Some(stream) = self.streams.get_mut(key)
            && stream.catch_up == Some(from)
        {
            stream.catch_up = Some(through + 1);
        }
    }

    /// Whether any stream is catching up.
    pub fn has_catch_up(&self) -> bool {
        self.streams.values().any(|s| s.catch_up.is_some())
    }

    /// Whether the stream is catching up.
    pub fn is_catching_up(&self, key: &StreamKey) -> bool {
        self.streams.get(key).is_some_and(|s| s.catch_up.is_some())
    }

    /// The newest published open time of a stream (the floor if nothing newer was published in this run).
    pub fn last_published(&self, key: &StreamKey) -> Option<i64> {
        let stream = self.streams.get(key)?;
        stream.recent.keys().next_back().copied().or(stream.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timeframe;
    use crate::domain::fixtures::minute_candle;

    const MIN: i64 = 60_000;

    fn btc() -> StreamKey {
        StreamKey::new("BTCUSDT", Timeframe::M1)
    }

    fn candle(minute: i64) -> Candle {
        minute_candle(minute, 100.0 + minute as f64, true)
    }

    /// A ledger following BTCUSDT 1m that published minutes `0..n` in this run.
    fn published(n: i64) -> Ledger {
        let mut ledger = Ledger::new(4);
        ledger.seed(btc(), None);
        ledger.caught_up(&btc(), i64::MIN);
        for minute in 0..n {
            ledger.record(&btc(), &candle(minute), 0);
        }
        ledger
    }

    #[test]
    fn a_seeded_stream_catches_up_from_just_after_what_jetstream_holds() {
        let mut ledger = Ledger::default();
        // TC0: JetStream holds nothing: everything stored is published.
        ledger.seed(btc(), None);
        assert_eq!(ledger.catching_up(), [(btc(), i64::MIN)]);
        // TC1: it holds minute 9: the store is read from minute 9 + 1 ms, and 9 itself counts as published.
        ledger.seed(btc(), Some(9 * MIN));
        assert_eq!(ledger.catching_up(), [(btc(), 9 * MIN + 1)]);
        assert_eq!(ledger.decide(&btc(), &candle(9), false), Decision::Skip);
        assert_eq!(ledger.decide(&btc(), &candle(10), false), Decision::Publish { revision: 0 });
        assert_eq!(ledger.last_published(&btc()), Some(9 * MIN));
        // TC2: a live candle waits for the catch-up, which publishes in order.
        assert_eq!(ledger.decide(&btc(), &candle(10), true), Decision::Defer);
        ledger.caught_up(&btc(), 9 * MIN + 1);
        assert!(!ledger.is_catching_up(&btc()));
        assert_eq!(ledger.decide(&btc(), &candle(10), true), Decision::Publish { revision: 0 });
        // TC3: a stream never seeded is deferred (the publisher seeds it first).
        let eth = StreamKey::new("ETHUSDT", Timeframe::M1);
        assert_eq!(ledger.decide(&eth, &candle(1), true), Decision::Defer);
    }

    #[test]
    fn replays_are_skipped_and_differing_candles_are_numbered_revisions() {
        let mut ledger = published(3);
        let mut revised = candle(2);
        revised.close += 1.0;
        let cases = [
            // TC0: the same candle again.
            (candle(2), Decision::Skip),
            // TC1: different values: the first revision.
            (revised, Decision::Publish { revision: 1 }),
            // TC2: a new candle.
            (candle(3), Decision::Publish { revision: 0 }),
        ];
        for (i, (c, want)) in cases.iter().enumerate() {
            assert_eq!(ledger.decide(&btc(), c, true), *want, "TC{i}");
        }
        ledger.record(&btc(), &revised, 1);
        // TC3: the revision replayed is skipped; another change is the second revision.
        assert_eq!(ledger.decide(&btc(), &revised, true), Decision::Skip);
        let mut again = revised;
        again.volume += 1.0;
        assert_eq!(ledger.decide(&btc(), &again, true), Decision::Publish { revision: 2 });
    }

    #[test]
    fn the_memory_is_bounded_and_what_leaves_it_raises_the_floor() {
        // Capacity 4: minutes 0..6 published, 0 and 1 left the memory.
        let ledger = published(6);
        assert_eq!(ledger.last_published(&btc()), Some(5 * MIN));
        assert_eq!(ledger.decide(&btc(), &candle(0), true), Decision::Skip, "below the floor");
        assert_eq!(ledger.streams[&btc()].floor, Some(MIN));
        assert_eq!(ledger.streams[&btc()].recent.len(), 4);
    }

    #[test]
    fn a_failed_publication_and_a_dropped_candle_are_caught_up_from_the_earliest() {
        let mut ledger = published(4);
        // TC0: the queue dropped minute 3's replay and minute 5: read from 3 on... the earliest mark wins.
        ledger.catch_up(&btc(), 5 * MIN);
        ledger.catch_up(&btc(), 3 * MIN);
        assert_eq!(ledger.catching_up(), [(btc(), 3 * MIN)]);
        // Minute 3 is still published: the catch-up skips it.
        assert_eq!(ledger.decide(&btc(), &candle(3), false), Decision::Skip);
        // TC1: minute 2's ack failed: not published any more, and the mark moves back to it.
        ledger.failed(&btc(), 2 * MIN);
        assert_eq!(ledger.catching_up(), [(btc(), 2 * MIN)]);
        assert_eq!(ledger.decide(&btc(), &candle(2), false), Decision::Publish { revision: 0 });
        // TC2: a page read through minute 4 moves the mark on; the last page ends it.
        ledger.caught_up_through(&btc(), 2 * MIN, 4 * MIN);
        assert_eq!(ledger.catching_up(), [(btc(), 4 * MIN + 1)]);
        // A mark placed meanwhile is not lost by a finishing catch-up of another mark.
        ledger.catch_up(&btc(), MIN);
        ledger.caught_up(&btc(), 4 * MIN + 1);
        assert_eq!(ledger.catching_up(), [(btc(), MIN)]);
        assert!(ledger.has_catch_up());
        ledger.caught_up(&btc(), MIN);
        assert!(ledger.catching_up().is_empty());
        assert!(!ledger.has_catch_up());
        // TC3: the commits were lost: everything from the oldest remembered is read again.
        ledger.catch_up_all();
        assert_eq!(ledger.catching_up(), [(btc(), 0)]);
    }

    #[test]
    fn commits_that_did_not_come_through_the_hub_are_caught_up_after_the_settle_time() {
        let settle = Duration::from_secs(2);
        let start = Instant::now();
        let mut ledger = published(4);
        // TC0: a commit of a published candle needs nothing.
        ledger.committed(&btc(), &candle(3), start);
        ledger.settle(start + settle, settle);
        assert!(ledger.catching_up().is_empty());
        // TC1: minute 4 (live: it comes through the hub within the settle time) and minute 9 (a REST fill).
        ledger.committed(&btc(), &candle(4), start);
        ledger.committed(&btc(), &candle(9), start);
        ledger.record(&btc(), &candle(4), 0);
        ledger.settle(start + Duration::from_secs(1), settle);
        assert!(ledger.catching_up().is_empty(), "not settled yet");
        ledger.settle(start + settle, settle);
        assert_eq!(ledger.catching_up(), [(btc(), 9 * MIN)]);
        ledger.caught_up(&btc(), 9 * MIN);
        // TC2: a revision of published minute 2 is committed: caught up, and published as revision 1.
        let mut revised = candle(2);
        revised.close += 1.0;
        ledger.committed(&btc(), &revised, start);
        ledger.settle(start + settle, settle);
        assert_eq!(ledger.catching_up(), [(btc(), 2 * MIN)]);
        assert_eq!(ledger.decide(&btc(), &revised, false), Decision::Publish { revision: 1 });
        assert_eq!(ledger.decide(&btc(), &candle(3), false), Decision::Skip);
        // TC3: a stream not followed is ignored.
        ledger.committed(&StreamKey::new("ETHUSDT", Timeframe::M1), &candle(0), start);
        ledger.forget(&btc());
        assert!(ledger.keys().next().is_none());
    }
}
