//! Pure domain code: no actors, no I/O. Every actor is a thin shell around these types.

mod audit;
mod backoff;
mod candle;
mod clock;
mod control;
mod deferred;
mod fetch;
#[cfg(test)]
pub(crate) mod fixtures;
mod handover;
mod kline;
mod kline_scan;
mod rate;
mod repair;
mod routing;
mod rules;
mod shard;
mod silence;
mod stream_set;
mod timeframe;

pub use audit::{audit_through, holes, missing_ranges};
pub use backoff::{Backoff, BackoffPolicy};
pub use candle::{Candle, StreamId, StreamKey};
pub use clock::ExchangeClock;
pub use control::{Control, ControlQueue};
pub use deferred::{LatestUpdates, PendingUpdate};
pub use fetch::{
    BackfillPurpose, FetchRange, KLINES_PAGE_LIMIT, KLINES_REQUEST_WEIGHT, KlinesPage, closed_end_bound, history_start,
    newest_closed_open,
};
pub use handover::{Handover, HandoverFailed, HandoverKind};
pub use kline::{
    Frame, KlineEvent, RejectReason, parse_decimal, parse_frame, parse_frame_generic, parse_rest_klines, validate,
};
pub use rate::{Permit, RateBudget, RequestGate};
pub use repair::{FailedFetch, Fetch, FetchAnswer, FetchFailure, Landing, StreamRepair, WatchOutcome};
pub use routing::{Routed, Router, route_frame};
pub use rules::{CandleRules, Gap, Verdict};
pub use shard::{Cluster, ClusterError, MAX_SHARDS, owner, stream_hash};
pub use silence::{SilenceStep, SilenceWatch};
pub use stream_set::{StreamChanges, place};
pub use timeframe::{Timeframe, UnknownTimeframe};
