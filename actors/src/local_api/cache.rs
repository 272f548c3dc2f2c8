//! The bounded read-through cache: closed candles fetched from the exchange for streams candled does not collect,
//! kept by (symbol, timeframe, open time) and evicted least recently used once the byte bound is reached.

use lru::LruCache;

use crate::domain::{Candle, Timeframe};

/// The bytes one entry costs, counted generously: the key with a symbol of up to 20 bytes on the heap, the
/// candle, and the LRU list's and hash table's own pointers.
pub const ENTRY_BYTES: usize =
    std::mem::size_of::<(String, Timeframe, i64)>() + 20 + std::mem::size_of::<Candle>() + 48;

/// Closed candles by stream and open time, at most `capacity_bytes / ENTRY_BYTES` of them.
pub struct KlineCache {
    /// Grown as candles come (a bounded `LruCache` allocates its whole table up front, megabytes for nothing).
    entries: Option<LruCache<(String, Timeframe, i64), Candle>>,
    /// The most entries kept.
    limit: usize,
}

impl KlineCache {
    /// A cache of at most `capacity_bytes`; 0 keeps nothing.
    pub fn new(capacity_bytes: u64) -> Self {
        let limit = usize::try_from(capacity_bytes / ENTRY_BYTES as u64).unwrap_or(usize::MAX);
        Self { entries: (limit > 0).then(LruCache::unbounded), limit }
    }

    /// Keeps the closed ones of `candles`; in-progress candles are never cached.
    pub fn insert(&mut self, symbol: &str, timeframe: Timeframe, candles: &[Candle]) {
        let Some(entries) = &mut self.entries else { return };
        for candle in candles.iter().filter(|c| c.is_closed) {
            entries.put((symbol.to_owned(), timeframe, candle.open_time), *candle);
            if entries.len() > self.limit {
                entries.pop_lru();
            }
        }
    }

    /// The cached candles at `opens`, oldest first, if every one is cached (each becomes the most recently used);
    /// `None` at the first one missing.
    pub fn get_all(&mut self, symbol: &str, timeframe: Timeframe, opens: &[i64]) -> Option<Vec<Candle>> {
        let entries = self.entries.as_mut()?;
        let mut key = (symbol.to_owned(), timeframe, 0);
        opens
            .iter()
            .map(|&open| {
                key.2 = open;
                entries.get(&key).copied()
            })
            .collect()
    }

    /// The bytes held, as [`ENTRY_BYTES`] counts them.
    pub fn bytes(&self) -> u64 {
        self.entries.as_ref().map_or(0, |e| (e.len() * ENTRY_BYTES) as u64)
    }

    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, LruCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::minute_candle;

    #[test]
    fn the_least_recently_used_candle_goes_first_and_the_bound_holds() {
        let mut cache = KlineCache::new(3 * ENTRY_BYTES as u64);
        let candles: Vec<Candle> = (0..3).map(|m| minute_candle(m, 1.0, true)).collect();
        cache.insert("ABCUSDT", Timeframe::M1, &candles);
        let opens: Vec<i64> = candles.iter().map(|c| c.open_time).collect();
        // Reading the oldest makes it the most recently used: the next insert evicts the second.
        assert_eq!(cache.get_all("ABCUSDT", Timeframe::M1, &opens[..1]), Some(candles[..1].to_vec()));
        cache.insert("ABCUSDT", Timeframe::M1, &[minute_candle(3, 1.0, true)]);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.bytes(), 3 * ENTRY_BYTES as u64);
        assert_eq!(cache.get_all("ABCUSDT", Timeframe::M1, &opens[1..2]), None);
        assert!(cache.get_all("ABCUSDT", Timeframe::M1, &[opens[0], opens[2]]).is_some());
        // Another stream's candles are other entries.
        assert_eq!(cache.get_all("ABCUSDT", Timeframe::M3, &opens[..1]), None);
    }

    #[test]
    fn in_progress_candles_are_never_kept_and_zero_bytes_keeps_nothing() {
        let mut cache = KlineCache::new(1 << 20);
        cache.insert("ABCUSDT", Timeframe::M1, &[minute_candle(0, 1.0, false)]);
        assert!(cache.is_empty());
        let mut none = KlineCache::new(0);
        none.insert("ABCUSDT", Timeframe::M1, &[minute_candle(0, 1.0, true)]);
        assert_eq!((none.len(), none.bytes()), (0, 0));
    }
}
