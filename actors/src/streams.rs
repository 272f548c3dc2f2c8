//! Per-stream completeness counters, shared between a subscription actor (which writes them) and the health actor
//! (which reports them): repairs, exchange gaps, missed close deadlines and staleness.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::domain::{Gap, StreamKey};

/// The most exchange gaps kept per stream; the count goes on beyond it.
const MAX_GAPS_KEPT: usize = 100;

#[derive(Debug)]
pub struct StreamHealth {
    pub key: StreamKey,
    repairs: AtomicU64,
    candles_backfilled: AtomicU64,
    missed_close_deadlines: AtomicU64,
    stale: AtomicBool,
    stale_episodes: AtomicU64,
    exchange_gap_count: AtomicU64,
    exchange_gaps: Mutex<Vec<Gap>>,
}

/// A reading of one stream's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamCounters {
    /// REST repairs completed (after (re)connects, gaps and missed close deadlines).
    pub repairs: u64,
    /// Closed candles fetched over REST, history included.
    pub candles_backfilled: u64,
    /// Candles whose `x:true` did not arrive within the grace period after their close time.
    pub missed_close_deadlines: u64,
    pub stale: bool,
    pub stale_episodes: u64,
    pub exchange_gap_count: u64,
    /// Ranges `[from_open, to_open)` the exchange has no candles for (the first 100).
    pub exchange_gaps: Vec<ExchangeGap>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExchangeGap {
    pub from_open: i64,
    pub to_open: i64,
}

impl StreamHealth {
    pub fn new(key: StreamKey) -> Arc<Self> {
        Arc::new(Self {
            key,
            repairs: AtomicU64::new(0),
            candles_backfilled: AtomicU64::new(0),
            missed_close_deadlines: AtomicU64::new(0),
            stale: AtomicBool::new(false),
            stale_episodes: AtomicU64::new(0),
            exchange_gap_count: AtomicU64::new(0),
            exchange_gaps: Mutex::new(Vec::new()),
        })
    }

    pub fn record_backfill(&self, candles: usize, is_repair: bool) {
        self.candles_backfilled.fetch_add(candles as u64, Ordering::Relaxed);
        if is_repair {
            self.repairs.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn record_missed_close(&self) {
        self.missed_close_deadlines.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the stream stale or live again; returns whether that changed anything.
    pub fn set_stale(&self, stale: bool) -> bool {
        let changed = self.stale.swap(stale, Ordering::Relaxed) != stale;
        if changed && stale {
            self.stale_episodes.fetch_add(1, Ordering::Relaxed);
        }
        changed
    }

    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Records ranges the exchange has no candles for. Each is reported once: it is never fetched again.
    pub fn record_exchange_gaps(&self, gaps: &[Gap]) {
        if gaps.is_empty() {
            return;
        }
        self.exchange_gap_count.fetch_add(gaps.len() as u64, Ordering::Relaxed);
        let mut kept = self.exchange_gaps.lock().unwrap_or_else(|e| e.into_inner());
        let room = MAX_GAPS_KEPT.saturating_sub(kept.len());
        kept.extend(gaps.iter().take(room));
    }

    pub fn snapshot(&self) -> StreamCounters {
        let gaps = self.exchange_gaps.lock().unwrap_or_else(|e| e.into_inner());
        StreamCounters {
            repairs: self.repairs.load(Ordering::Relaxed),
            candles_backfilled: self.candles_backfilled.load(Ordering::Relaxed),
            missed_close_deadlines: self.missed_close_deadlines.load(Ordering::Relaxed),
            stale: self.is_stale(),
            stale_episodes: self.stale_episodes.load(Ordering::Relaxed),
            exchange_gap_count: self.exchange_gap_count.load(Ordering::Relaxed),
            exchange_gaps: gaps.iter().map(|g| ExchangeGap { from_open: g.from_open, to_open: g.to_open }).collect(),
        }
    }
}
