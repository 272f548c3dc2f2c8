//! Per-stream completeness counters, shared between a stream's subscription and the audit (which write them) and
//! the health actor (which reports them): repairs, audit findings, exchange gaps, missed close deadlines, staleness
//! and the data problem `/health` reports.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::domain::{Gap, StreamKey, Timeframe};

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
    audit_passes: AtomicU64,
    holes_found: AtomicU64,
    candles_repaired: AtomicU64,
    /// The start-up history (or the catch-up since the last run) has landed: the audit may check the stream.
    history_landed: AtomicBool,
    /// The exchange refused this stream's REST requests for good: nothing more is asked for it.
    refused: AtomicBool,
    /// What the last audit pass found wrong past its repair deadline, if anything.
    data_issue: Mutex<Option<DataIssue>>,
    /// Ranges the exchange answered empty once, waiting for their re-check: not holes, not gaps yet.
    suspected_gaps: Mutex<Vec<Gap>>,
}

/// Closed candles the store lacks past their repair deadline: `/health` is degraded while one exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataIssue {
    /// `missing` (no closed candle stored) or `stuck_in_progress` (a row still `is_closed = 0` after its close).
    pub problem: &'static str,
    /// The oldest open time concerned, and how many candles.
    pub from_open: i64,
    pub candles: u64,
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
    /// Audit passes over this stream.
    pub audit_passes: u64,
    /// Holes (ranges of missing or stuck closed candles) the audit found.
    pub holes_found: u64,
    /// Closed candles the audit's fetches brought back.
    pub candles_repaired: u64,
    pub data_issue: Option<DataIssue>,
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
            audit_passes: AtomicU64::new(0),
            holes_found: AtomicU64::new(0),
            candles_repaired: AtomicU64::new(0),
            history_landed: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            data_issue: Mutex::new(None),
            suspected_gaps: Mutex::new(Vec::new()),
        })
    }

    /// Every REST repair so far plus every candle the audit brought back: what a repair storm moves.
    pub fn repair_activity(&self) -> u64 {
        self.repairs.load(Ordering::Relaxed) + self.candles_repaired.load(Ordering::Relaxed)
    }

    pub fn record_audit_pass(&self, holes_found: usize, issue: Option<DataIssue>) {
        self.audit_passes.fetch_add(1, Ordering::Relaxed);
        self.holes_found.fetch_add(holes_found as u64, Ordering::Relaxed);
        *self.data_issue.lock().unwrap_or_else(|e| e.into_inner()) = issue;
    }

    pub fn record_audit_repaired(&self, candles: usize) {
        self.candles_repaired.fetch_add(candles as u64, Ordering::Relaxed);
    }

    pub fn data_issue(&self) -> Option<DataIssue> {
        self.data_issue.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_history_landed(&self) {
        self.history_landed.store(true, Ordering::Relaxed);
    }

    pub fn history_landed(&self) -> bool {
        self.history_landed.load(Ordering::Relaxed)
    }

    pub fn set_refused(&self) {
        self.refused.store(true, Ordering::Relaxed);
    }

    pub fn is_refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// The ranges the exchange is known or suspected to have no candles for (the first 100 known ones): what the
    /// audit must not count as holes.
    pub fn gaps_not_to_fetch(&self) -> Vec<Gap> {
        let mut gaps = self.exchange_gaps.lock().unwrap_or_else(|e| e.into_inner()).clone();
        gaps.extend(self.suspected_gaps.lock().unwrap_or_else(|e| e.into_inner()).iter());
        gaps
    }

    /// A range the exchange answered empty is being re-checked (`true`), or no longer is.
    pub fn set_suspected_gap(&self, gap: Gap, suspected: bool) {
        let mut gaps = self.suspected_gaps.lock().unwrap_or_else(|e| e.into_inner());
        gaps.retain(|g| *g != gap);
        if suspected {
            gaps.push(gap);
        }
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
            audit_passes: self.audit_passes.load(Ordering::Relaxed),
            holes_found: self.holes_found.load(Ordering::Relaxed),
            candles_repaired: self.candles_repaired.load(Ordering::Relaxed),
            data_issue: self.data_issue(),
        }
    }
}

/// Ranges of open times for a log line: `3 candle(s): 2018-01-19 10:15:00 to 10:17:00 UTC`, the first few ranges
/// and a count of the rest.
pub fn describe_gaps(timeframe: Timeframe, gaps: &[Gap]) -> String {
    const SHOWN: usize = 3;
    let candles: u64 = gaps.iter().map(|g| timeframe.count_opens(g.from_open, g.to_open)).sum();
    let ranges: Vec<String> = gaps
        .iter()
        .take(SHOWN)
        .map(|g| {
            let last = timeframe.previous_open(g.to_open);
            if last <= g.from_open { utc(g.from_open) } else { format!("{} to {}", utc(g.from_open), utc(last)) }
        })
        .collect();
    let more = gaps.len().saturating_sub(SHOWN);
    let more = if more > 0 { format!(" and {more} more range(s)") } else { String::new() };
    format!("{candles} candle(s): {}{more}", ranges.join(", "))
}

/// A time as `2018-01-19 10:15:00 UTC`.
pub fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| format!("{ms} ms"), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_described_in_utc_with_counts() {
        // 2018-01-19T10:15:00Z.
        let at = 1_516_356_900_000;
        let minute = 60_000;
        let one = Gap { from_open: at, to_open: at + minute };
        let three = Gap { from_open: at + 10 * minute, to_open: at + 13 * minute };
        // TC0: a single candle shows one time.
        assert_eq!(describe_gaps(Timeframe::M1, &[one]), "1 candle(s): 2018-01-19 10:15:00 UTC");
        // TC1: a range shows its first and last open time, and the total.
        assert_eq!(
            describe_gaps(Timeframe::M1, &[one, three]),
            "4 candle(s): 2018-01-19 10:15:00 UTC, 2018-01-19 10:25:00 UTC to 2018-01-19 10:27:00 UTC"
        );
        // TC2: past three ranges, the rest are counted.
        let many: Vec<Gap> =
            (0..5).map(|i| Gap { from_open: at + 2 * i * minute, to_open: at + (2 * i + 1) * minute }).collect();
        assert!(describe_gaps(Timeframe::M1, &many).ends_with(" and 2 more range(s)"));
    }
}
