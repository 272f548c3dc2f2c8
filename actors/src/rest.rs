//! The Binance REST client: server time, symbol checks and paged kline fetches, under one shared weight budget
//! that honours `Retry-After`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::{Candle, Gap, Permit, RejectReason, RequestGate, StreamKey, Timeframe, parse_rest_klines};
use crate::metrics::Metrics;

/// Binance allows 6000 request weight per minute per IP.
pub const WEIGHT_PER_MINUTE: u32 = 6000;
/// `GET /api/v3/klines` costs 2 for any limit up to 1000.
const KLINES_WEIGHT: u32 = 2;
const TIME_WEIGHT: u32 = 1;
const EXCHANGE_INFO_WEIGHT: u32 = 20;
/// Symbols asked about in one `exchangeInfo` request.
const EXCHANGE_INFO_CHUNK: usize = 100;
/// The largest page `GET /api/v3/klines` serves.
pub const KLINES_PAGE: usize = 1000;
/// How often one request is tried before the error is returned.
const ATTEMPTS: u32 = 5;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("HTTP request to {url} failed: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url} answered {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("{url} answered with a malformed body: {reason}")]
    Malformed { url: String, reason: RejectReason },
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

impl RestError {
    /// Worth retrying later: a network fault, a rate limit or a server error, not a bad request.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Http { .. } => true,
            Self::Status { status, .. } => *status == 429 || *status == 418 || *status >= 500,
            Self::Malformed { .. } | Self::Client(_) => false,
        }
    }
}

/// What a range fetch found: every closed candle from `from_open` up to the exchange's present.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedRange {
    pub candles: Vec<Candle>,
    /// The newest open time whose candle is closed on the exchange (whether or not a row exists for it).
    pub through_open: Option<i64>,
    /// Ranges the exchange has no rows for: candles that do not exist, to be reported, not fetched again.
    pub exchange_gaps: Vec<Gap>,
}

/// A cheap-to-clone REST client. Every clone shares one request gate (weight budget, `Retry-After`, probing).
#[derive(Clone)]
pub struct RestClient {
    http: reqwest::Client,
    base: Arc<str>,
    gate: Arc<Mutex<RequestGate>>,
    metrics: Metrics,
}

impl RestClient {
    pub fn new(base: &str, tls: Arc<rustls::ClientConfig>, metrics: Metrics) -> Result<Self, RestError> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(RestError::Client)?;
        let gate = RequestGate::new(WEIGHT_PER_MINUTE, Duration::from_secs(60));
        Ok(Self { http, base: base.trim_end_matches('/').into(), gate: Arc::new(Mutex::new(gate)), metrics })
    }

    /// The exchange's clock, ms UTC.
    pub async fn server_time(&self) -> Result<i64, RestError> {
        #[derive(serde::Deserialize)]
        struct ServerTime {
            #[serde(rename = "serverTime")]
            server_time: i64,
        }
        let (url, body) = self.get("/api/v3/time", &[], TIME_WEIGHT).await?;
        let time: ServerTime =
            serde_json::from_slice(&body).map_err(|_| RestError::Malformed { url, reason: RejectReason::WrongType })?;
        Ok(time.server_time)
    }

    /// The symbols among `symbols` that the exchange does not list. Binance accepts a stream for an unlisted
    /// symbol and then never sends anything, so this is checked at start. At most two requests of weight 20,
    /// whatever the number of symbols: up to 100 are asked by name (`symbols=[...]`, a small answer); more, or a
    /// list the exchange rejects with -1121 (some symbol in it is unknown), are compared with the full listing
    /// (`exchangeInfo` without parameters: every symbol, the same weight). Asking 800,000 symbols 100 at a time
    /// would cost 160,000 weight, 27 minutes of the budget; the full listing costs 20.
    pub async fn unlisted_symbols(&self, symbols: &[String]) -> Result<Vec<String>, RestError> {
        if symbols.is_empty() {
            return Ok(Vec::new());
        }
        let not_listed = |listed: std::collections::HashSet<String>| {
            symbols.iter().filter(|symbol| !listed.contains(*symbol)).cloned().collect()
        };
        if symbols.len() <= EXCHANGE_INFO_CHUNK {
            let list = serde_json::to_string(symbols).unwrap_or_default();
            match self.listed_symbols(&[("symbols", list)]).await {
                Ok(listed) => return Ok(not_listed(listed)),
                Err(error) if is_unknown_symbol(&error) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(not_listed(self.listed_symbols(&[]).await?))
    }

    /// The symbols one `GET /api/v3/exchangeInfo` with `query` lists.
    async fn listed_symbols(&self, query: &[(&str, String)]) -> Result<std::collections::HashSet<String>, RestError> {
        #[derive(serde::Deserialize)]
        struct ExchangeInfo {
            symbols: Vec<Listed>,
        }
        #[derive(serde::Deserialize)]
        struct Listed {
            symbol: String,
        }
        let (url, body) = self.get("/api/v3/exchangeInfo", query, EXCHANGE_INFO_WEIGHT).await?;
        let info: ExchangeInfo =
            serde_json::from_slice(&body).map_err(|_| RestError::Malformed { url, reason: RejectReason::WrongType })?;
        Ok(info.symbols.into_iter().map(|listed| listed.symbol).collect())
    }

    /// One page of klines starting at `start_open`, with closedness decided by `server_time`.
    pub async fn klines_page(
        &self,
        key: &StreamKey,
        start_open: i64,
        server_time: i64,
    ) -> Result<Vec<Candle>, RestError> {
        let query = [
            ("symbol", key.symbol.clone()),
            ("interval", key.timeframe.as_str().to_owned()),
            ("startTime", start_open.to_string()),
            ("limit", KLINES_PAGE.to_string()),
        ];
        let (url, body) = self.get("/api/v3/klines", &query, KLINES_WEIGHT).await?;
        parse_rest_klines(&body, key.timeframe, server_time).map_err(|reason| RestError::Malformed { url, reason })
    }

    /// Every closed candle of `key` from `from_open` to the exchange's present (`server_time`, asked just before),
    /// paged by 1000.
    pub async fn closed_since(
        &self,
        key: &StreamKey,
        from_open: i64,
        server_time: i64,
    ) -> Result<ClosedRange, RestError> {
        let mut candles = Vec::new();
        let mut start = from_open;
        loop {
            let page = self.klines_page(key, start, server_time).await?;
            let full = page.len() == KLINES_PAGE;
            let mut reached_present = !full;
            for candle in page {
                if candle.open_time < start {
                    continue;
                }
                if !candle.is_closed {
                    reached_present = true;
                    break;
                }
                start = key.timeframe.next_open(candle.open_time);
                candles.push(candle);
            }
            if reached_present {
                break;
            }
        }
        self.metrics.candles_backfilled.inc_by(candles.len() as u64);
        // Everything that closed before the server time we asked at is now known.
        let current_open = key.timeframe.open_time_containing(server_time);
        let last_closed_on_exchange = previous_open(key, current_open);
        let through_open = match candles.last() {
            Some(last) => Some(last.open_time.max(last_closed_on_exchange)),
            None => (last_closed_on_exchange >= from_open).then_some(last_closed_on_exchange),
        };
        let exchange_gaps = through_open.map_or_else(Vec::new, |through| {
            missing_ranges(key.timeframe, from_open, through, candles.iter().map(|c| c.open_time))
        });
        Ok(ClosedRange { candles, through_open, exchange_gaps })
    }

    async fn get(&self, path: &str, query: &[(&str, String)], weight: u32) -> Result<(String, Vec<u8>), RestError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = self.acquire(weight).await;
            let response = match self.http.get(&url).query(query).send().await {
                Ok(response) => response,
                Err(source) if attempt < ATTEMPTS => {
                    log::warn!("GET {url} failed (attempt {attempt}): {source}");
                    drop(permit);
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    continue;
                }
                Err(source) => return Err(RestError::Http { url, source }),
            };
            let status = response.status().as_u16();
            self.metrics.rest_requests.with_label_values(&[&status.to_string()]).inc();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if status == 429 || status == 418 {
                // Nothing goes out before Retry-After expires: sending on after a 429 earns a 418 ban.
                let wait = Duration::from_secs(retry_after.unwrap_or(60));
                log::warn!("{url} answered {status}: no request for {}s", wait.as_secs());
                permit.rate_limited(Instant::now() + wait);
            } else {
                permit.answered();
            }
            let body = response.bytes().await.map_err(|source| RestError::Http { url: url.clone(), source })?;
            if status == 200 {
                return Ok((url, body.to_vec()));
            }
            let error = RestError::Status { url: url.clone(), status, body: String::from_utf8_lossy(&body).into() };
            if !error.is_transient() || attempt >= ATTEMPTS {
                return Err(error);
            }
            if status >= 500 {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        }
    }

    /// Waits until the shared gate lets a request of `weight` go out.
    async fn acquire(&self, weight: u32) -> HeldPermit<'_> {
        loop {
            let verdict = self.gate().try_acquire(Instant::now(), weight);
            match verdict {
                Ok(permit) => return HeldPermit { client: self, permit: Some(permit) },
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, RequestGate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A permit while its request is out. Whatever ends it without an answer (an error, a dropped future) settles it
/// as unanswered, so a probe can never stay in flight forever.
struct HeldPermit<'a> {
    client: &'a RestClient,
    permit: Option<Permit>,
}

impl HeldPermit<'_> {
    fn answered(mut self) {
        if let Some(permit) = self.permit.take() {
            self.client.gate().answered(permit);
        }
    }

    fn rate_limited(mut self, until: Instant) {
        self.permit = None;
        self.client.gate().rate_limited(until);
    }
}

impl Drop for HeldPermit<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.client.gate().unanswered(permit);
        }
    }
}

/// Binance's "Invalid symbol." (`-1121`).
fn is_unknown_symbol(error: &RestError) -> bool {
    matches!(error, RestError::Status { status: 400, body, .. } if body.contains("-1121"))
}

/// The ranges within `[from_open, through_open]` that `opens` (ascending) does not cover.
pub fn missing_ranges(
    timeframe: Timeframe,
    from_open: i64,
    through_open: i64,
    opens: impl Iterator<Item = i64>,
) -> Vec<Gap> {
    let mut gaps = Vec::new();
    let mut expected = from_open;
    for open in opens {
        if open > expected {
            gaps.push(Gap { from_open: expected, to_open: open });
        }
        expected = expected.max(timeframe.next_open(open));
    }
    if expected <= through_open {
        gaps.push(Gap { from_open: expected, to_open: timeframe.next_open(through_open) });
    }
    gaps
}

/// The open time `count` candles before the one current at `server_time`: where a history of `count` closed
/// candles starts.
pub fn history_start(key: &StreamKey, server_time: i64, count: u32) -> i64 {
    let mut open = key.timeframe.open_time_containing(server_time);
    for _ in 0..count {
        open = previous_open(key, open);
    }
    open
}

/// The open time of the candle before the one opening at `open`.
fn previous_open(key: &StreamKey, open: i64) -> i64 {
    match key.timeframe.fixed_ms() {
        Some(ms) => open - ms,
        None => key.timeframe.open_time_containing(open - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn missing_ranges_finds_every_hole() {
        let gaps = |opens: &[i64], from, through| missing_ranges(Timeframe::M1, from, through, opens.iter().copied());
        // TC0: complete.
        assert_eq!(gaps(&[0, MIN, 2 * MIN], 0, 2 * MIN), []);
        // TC1: a hole in the middle.
        assert_eq!(gaps(&[0, 3 * MIN], 0, 3 * MIN), [Gap { from_open: MIN, to_open: 3 * MIN }]);
        // TC2: holes at both ends.
        assert_eq!(
            gaps(&[2 * MIN], 0, 4 * MIN),
            [Gap { from_open: 0, to_open: 2 * MIN }, Gap { from_open: 3 * MIN, to_open: 5 * MIN }]
        );
        // TC3: nothing at all.
        assert_eq!(gaps(&[], 0, MIN), [Gap { from_open: 0, to_open: 2 * MIN }]);
    }
}
