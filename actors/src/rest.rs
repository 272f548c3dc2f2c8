//! The Binance REST client: server time, symbol checks and paged kline fetches, under one shared weight budget
//! that honours `Retry-After`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::{
    Candle, ExchangeClock, FetchRange, Gap, KLINES_REQUEST_WEIGHT, KlinesPage, Permit, RejectReason, RequestGate,
    StreamKey, Timeframe, missing_ranges, newest_closed_open, parse_rest_klines,
};
use crate::error_chain;
use crate::metrics::Metrics;
use crate::tasks::unix_ms;

/// Binance allows 6000 request weight per minute per IP.
pub const WEIGHT_PER_MINUTE: u32 = 6000;
/// `GET /api/v3/klines` costs 2 for any limit up to 1000.
const KLINES_WEIGHT: u32 = KLINES_REQUEST_WEIGHT;
const TIME_WEIGHT: u32 = 1;
const EXCHANGE_INFO_WEIGHT: u32 = 20;
/// Symbols asked about in one `exchangeInfo` request.
const EXCHANGE_INFO_CHUNK: usize = 100;
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
            Self::Status { status, .. } => is_transient_status(*status),
            Self::Malformed { .. } | Self::Client(_) => false,
        }
    }
}

/// 429 and 418 (rate limits) and 5xx pass; other statuses are the exchange's final word on that request.
fn is_transient_status(status: u16) -> bool {
    status == 429 || status == 418 || status >= 500
}

/// Why a fetch failed, as the actor that asked for it sees it: whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// A network fault, a timeout, a rate limit, a server error or a garbled answer: retried with back-off.
    #[error("{0}")]
    Transient(String),
    /// The exchange refused the request for good (for example `400 -1121 Invalid symbol.`): retrying cannot help.
    #[error("the exchange refused the request: HTTP {status}, code {code}: {msg}")]
    Refused { status: u16, code: i64, msg: String },
}

impl FetchError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

impl From<RestError> for FetchError {
    fn from(error: RestError) -> Self {
        /// Binance's error body: `{"code":-1121,"msg":"Invalid symbol."}`.
        #[derive(serde::Deserialize)]
        struct ExchangeError {
            code: i64,
            msg: String,
        }
        match &error {
            RestError::Status { status, body, .. } if !is_transient_status(*status) => {
                match serde_json::from_str::<ExchangeError>(body) {
                    Ok(ExchangeError { code, msg }) => Self::Refused { status: *status, code, msg },
                    Err(_) => Self::Refused { status: *status, code: 0, msg: body.chars().take(200).collect() },
                }
            }
            _ => Self::Transient(error_chain(&error)),
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
    clock: Arc<ExchangeClock>,
    /// The exchange's clock was read (`GET /api/v3/time`) since the start or the last failed fetch: fetches plan on
    /// `clock` without asking it again.
    clock_learned: Arc<AtomicBool>,
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
        Ok(Self {
            http,
            base: base.trim_end_matches('/').into(),
            gate: Arc::new(Mutex::new(gate)),
            clock: Arc::default(),
            clock_learned: Arc::default(),
            metrics,
        })
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
        // Read after the answer, so the offset can only understate the exchange's clock, never run ahead of it.
        self.clock.observe(time.server_time, unix_ms());
        self.clock_learned.store(true, Ordering::Relaxed);
        Ok(time.server_time)
    }

    /// The exchange's clock now: the local clock plus the offset learned from the exchange (`GET /api/v3/time`
    /// once at start and again after a failed fetch; every live event's time refines it), so a fetch costs no
    /// request for the time. The offset is taken from answers already received, so it can only understate the
    /// exchange's clock: a candle it calls closed has closed, whatever the skew of the local clock.
    pub async fn exchange_now(&self) -> Result<i64, RestError> {
        if self.clock_learned.load(Ordering::Relaxed)
            && let Some(now) = self.clock.at(unix_ms())
        {
            return Ok(now);
        }
        self.server_time().await
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

    /// One page of klines: `page`'s rows, every row parsed as closed (`page` stops before the candle in progress).
    async fn klines_page(&self, key: &StreamKey, page: KlinesPage) -> Result<Vec<Candle>, RestError> {
        let query = [
            ("symbol", key.symbol.clone()),
            ("interval", key.timeframe.as_str().to_owned()),
            ("startTime", page.start_open.to_string()),
            ("endTime", page.end_open.to_string()),
            ("limit", page.limit.to_string()),
        ];
        let (url, body) = self.get("/api/v3/klines", &query, KLINES_WEIGHT).await?;
        parse_rest_klines(&body, key.timeframe, i64::MAX).map_err(|reason| RestError::Malformed { url, reason })
    }

    /// Every closed candle of `key` with an open time from `from_open` up to `to_open` (inclusive; `None` means up
    /// to the exchange's present), paged by 1000.
    ///
    /// The requests stop at the newest candle closed by the exchange's clock (`endTime`), so 1,000 closed candles
    /// are one request of weight 2, and the clock costs nothing (see [`RestClient::exchange_now`]). That clock can
    /// only be behind the one the answer was served at, so every row it lets through is final; a row that is not
    /// (an exchange ignoring `endTime`) is left for the next fetch, never stored wrong. A failed fetch makes the
    /// next one read the exchange's clock again.
    pub async fn closed_range(
        &self,
        key: &StreamKey,
        from_open: i64,
        to_open: Option<i64>,
    ) -> Result<ClosedRange, RestError> {
        let exchange_now = self.exchange_now().await?;
        self.closed_range_learning(key, from_open, to_open, exchange_now).await
    }

    /// The closed candles of `key` that `range` asks for, planned on one reading of the exchange's clock: a first
    /// history of 1,000 candles is one request of weight 2.
    pub async fn fetch_range(&self, key: &StreamKey, range: FetchRange) -> Result<ClosedRange, RestError> {
        let exchange_now = self.exchange_now().await?;
        let (from_open, to_open) = range.bounds(key.timeframe, exchange_now);
        self.closed_range_learning(key, from_open, to_open, exchange_now).await
    }

    /// [`RestClient::closed_range_at`]; after a failure the next fetch reads the exchange's clock again.
    async fn closed_range_learning(
        &self,
        key: &StreamKey,
        from_open: i64,
        to_open: Option<i64>,
        exchange_now: i64,
    ) -> Result<ClosedRange, RestError> {
        let fetched = self.closed_range_at(key, from_open, to_open, exchange_now).await;
        if fetched.is_err() {
            self.clock_learned.store(false, Ordering::Relaxed);
        }
        fetched
    }

    async fn closed_range_at(
        &self,
        key: &StreamKey,
        from_open: i64,
        to_open: Option<i64>,
        exchange_now: i64,
    ) -> Result<ClosedRange, RestError> {
        let timeframe = key.timeframe;
        let mut candles: Vec<Candle> = Vec::new();
        let mut page = KlinesPage::first(timeframe, from_open, to_open, exchange_now);
        while let Some(asked) = page {
            let rows = self.klines_page(key, asked).await?;
            let served = rows.len();
            let newest = rows.last().map(|candle| candle.open_time);
            let wanted = |candle: &Candle| candle.open_time >= asked.start_open && candle.open_time <= asked.end_open;
            candles.extend(rows.into_iter().filter(wanted));
            page = asked.next(timeframe, served, newest);
        }
        candles.retain(|candle| candle.close_time < exchange_now);
        candles.dedup_by_key(|candle| candle.open_time);
        self.metrics.candles_backfilled.inc_by(candles.len() as u64);
        let newest_closed = newest_closed_open(timeframe, exchange_now);
        let checked_through = to_open.map_or(newest_closed, |to| to.min(newest_closed));
        let through_open = match candles.last() {
            Some(last) => Some(last.open_time.max(checked_through)),
            None => (checked_through >= from_open).then_some(checked_through),
        };
        let exchange_gaps = through_open.map_or_else(Vec::new, |through| {
            missing_ranges(timeframe, from_open, through, candles.iter().map(|c| c.open_time))
        });
        Ok(ClosedRange { candles, through_open, exchange_gaps })
    }

    /// `GET /api/v3/klines` with `query` as given, for the local Binance API's read-through, under the shared weight
    /// budget. A refusal keeps the exchange's status and body. A row is closed when a later row follows it (only the
    /// newest can be in progress), or when it closed before the exchange's clock as read before the request: that
    /// clock can only be behind the one the answer was served at, so an in-progress row is never called closed.
    pub async fn klines_query(&self, timeframe: Timeframe, query: &[(&str, String)]) -> Result<Vec<Candle>, RestError> {
        let before = self.clock.at(unix_ms()).unwrap_or(i64::MIN);
        let url = format!("{}/api/v3/klines", self.base);
        let body = self.klines_raw(query).await?;
        let mut candles =
            parse_rest_klines(&body, timeframe, i64::MAX).map_err(|reason| RestError::Malformed { url, reason })?;
        if let Some(newest) = candles.last_mut() {
            newest.is_closed = newest.close_time < before;
        }
        Ok(candles)
    }

    /// The exchange's `GET /api/v3/klines` body for `query`, as sent, under the shared weight budget.
    pub async fn klines_raw(&self, query: &[(&str, String)]) -> Result<Vec<u8>, RestError> {
        Ok(self.get("/api/v3/klines", query, KLINES_WEIGHT).await?.1)
    }

    /// The exchange's whole `GET /api/v3/exchangeInfo` body, under the shared weight budget.
    pub async fn exchange_info(&self) -> Result<Vec<u8>, RestError> {
        Ok(self.get("/api/v3/exchangeInfo", &[], EXCHANGE_INFO_WEIGHT).await?.1)
    }

    /// The exchange's clock as every fetch observed it.
    pub fn clock(&self) -> &Arc<ExchangeClock> {
        &self.clock
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
                    log::warn!("GET {url} failed (attempt {attempt}): {}", error_chain(&source));
                    drop(permit);
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    continue;
                }
                Err(source) => return Err(RestError::Http { url, source }),
            };
            let status = response.status().as_u16();
            let weight_used = response
                .headers()
                .get("x-mbx-used-weight-1m")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok());
            self.metrics.record_rest_answer(status, weight_used);
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if status == 429 || status == 418 {
                // Nothing goes out before Retry-After expires: sending on after a 429 earns a 418 ban.
                let wait = Duration::from_secs(retry_after.unwrap_or(60));
                log::warn!("{url} answered {status}: no request for {}s", wait.as_secs());
                permit.rate_limited(wait);
            } else {
                permit.answered(weight_used.and_then(|used| u32::try_from(used).ok()));
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
    /// The exchange answered, saying it counts `reported_weight` used in its window (`X-MBX-USED-WEIGHT-1M`).
    fn answered(mut self, reported_weight: Option<u32>) {
        if let Some(permit) = self.permit.take() {
            self.client.gate().answered(permit, Instant::now(), reported_weight);
        }
    }

    /// A 429 or 418 asking for `wait`.
    fn rate_limited(mut self, wait: Duration) {
        if let Some(permit) = self.permit.take() {
            let now = Instant::now();
            self.client.gate().rate_limited(permit, now, now + wait);
        }
    }
}

impl Drop for HeldPermit<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.client.gate().unanswered(permit, Instant::now());
        }
    }
}

/// Binance's "Invalid symbol." (`-1121`).
fn is_unknown_symbol(error: &RestError) -> bool {
    matches!(error, RestError::Status { status: 400, body, .. } if body.contains("-1121"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, body: &str) -> RestError {
        RestError::Status { url: "http://exchange/api/v3/klines".into(), status, body: body.into() }
    }

    #[test]
    fn fetch_errors_say_whether_retrying_can_help() {
        // TC0: Binance's permanent refusal keeps its code and message.
        let refused = FetchError::from(status(400, r#"{"code":-1121,"msg":"Invalid symbol."}"#));
        assert_eq!(refused, FetchError::Refused { status: 400, code: -1121, msg: "Invalid symbol.".into() });
        assert!(!refused.is_transient());
        assert!(refused.to_string().contains("-1121") && refused.to_string().contains("Invalid symbol."));
        // TC1: a 4xx without Binance's body is refused too, with the body as the message.
        assert!(matches!(FetchError::from(status(404, "not found")), FetchError::Refused { code: 0, .. }));
        // TC2: rate limits and server errors are transient.
        for code in [429, 418, 500, 503] {
            assert!(FetchError::from(status(code, r#"{"code":-1003,"msg":"Too many requests."}"#)).is_transient());
        }
        // TC3: a garbled answer is transient: the next try may be whole.
        let garbled = RestError::Malformed { url: "u".into(), reason: RejectReason::InvalidJson };
        assert!(FetchError::from(garbled).is_transient());
    }
}
