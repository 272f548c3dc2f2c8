//! Messages that more than one actor sends or receives. Keeping them here lets the actor modules form a tree:
//! each actor's file imports this one, never another actor's file for a message type.

use actix::prelude::*;

pub use crate::domain::{BackfillPurpose, FetchRange};
use crate::domain::{Candle, Gap, StreamId, StreamKey};
use crate::rest::FetchError;

/// Answers once every message queued before it was handled (used to drain before shutdown).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Drain;

/// Stop this actor: its stream was removed, or a fresh actor replaced it. It writes what it holds back first. An actor
/// under actix supervision (storage, a connection, the audit) is restarted in place instead: that is an operator's
/// restart.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Retire;

/// Closed candles fetched over REST for one stream, or why the fetch failed.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Backfilled {
    pub stream: StreamId,
    pub purpose: BackfillPurpose,
    pub range: FetchRange,
    pub candles: Vec<Candle>,
    /// Every closed candle up to this open time was fetched; missing ones were not on the exchange.
    pub through_open: Option<i64>,
    /// Ranges the exchange answered no candles for.
    pub exchange_gaps: Vec<Gap>,
    pub error: Option<FetchError>,
}

impl Backfilled {
    /// A fetch that failed: nothing learned.
    pub fn failed(stream: StreamId, purpose: BackfillPurpose, range: FetchRange, error: FetchError) -> Self {
        Self {
            stream,
            purpose,
            range,
            candles: Vec::new(),
            through_open: None,
            exchange_gaps: Vec::new(),
            error: Some(error),
        }
    }
}

/// What a silent stream asks of its connection: the steps of [`crate::domain::SilenceStep`].
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StreamSilent {
    pub key: StreamKey,
    pub step: crate::domain::SilenceStep,
}

/// A stream's start-up history (or its catch-up since the last run) landed, or failed for now.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct HistoryLanded {
    pub stream: StreamId,
    /// Candles fetched, or why not (a transient failure is retried by the stream).
    pub outcome: Result<usize, FetchError>,
    /// The stream had candles stored: this was a catch-up since the last run, not a first history load.
    pub caught_up: bool,
}
