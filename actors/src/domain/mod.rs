//! Pure domain code: no actors, no I/O. Every actor is a thin shell around these types.

mod backoff;
mod candle;
mod kline;
mod rate;
mod routing;
mod rules;
mod timeframe;

pub use backoff::{Backoff, BackoffPolicy};
pub use candle::{Candle, StreamId, StreamKey};
pub use kline::{Frame, KlineEvent, RejectReason, parse_frame, parse_rest_klines, validate};
pub use rate::{Permit, RateBudget, RequestGate};
pub use routing::{Routed, Router, route_frame};
pub use rules::{CandleRules, Gap, Verdict};
pub use timeframe::{Timeframe, UnknownTimeframe};
