//! candled as a local Binance: the pure logic behind `/api/v3/*` (request validation with Binance's error codes,
//! the selection of kline rows, their decimal formatting, per-client weight accounting and the bounded
//! read-through cache). The HTTP handlers in the root package are thin shells around it.

pub mod cache;
pub mod format;
pub mod request;
pub mod selection;
pub mod serve;
pub mod weight;

pub use cache::KlineCache;
pub use request::{ApiFault, KlineRequest, TimeZone};
pub use selection::{Answer, answer_from, expected_opens};
pub use serve::{has_global_grid, klines_from_store, klines_store_alone};
pub use weight::{Verdict, WeightLimiter};
