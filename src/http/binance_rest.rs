//! candled as a local Binance, REST side: `GET /api/v3/klines`, `/api/v3/uiKlines`, `/api/v3/exchangeInfo`,
//! `/api/v3/ping` and `/api/v3/time`, with Binance's parameters, answers, error bodies, weights and
//! `X-MBX-USED-WEIGHT-1M`. Klines come from the store when it holds the whole selection, otherwise from the exchange
//! (read-through, under the engine's shared weight budget): closed candles of configured streams are then stored,
//! others kept in a bounded LRU cache. The logic lives in `candled_actors::local_api`; this is the shell.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use candled_actors::actors::supervisor::StoreFetched;
use candled_actors::domain::{Candle, StreamKey};
use candled_actors::local_api::request::{exchange_info_symbols, parse_query};
use candled_actors::local_api::{
    Answer, ApiFault, KlineCache, KlineRequest, Verdict, WeightLimiter, format, has_global_grid, klines_from_store,
    klines_store_alone,
};
use candled_actors::rest::{RestClient, RestError};
use candled_actors::store::Store;
use candled_actors::tasks::unix_ms;
use serde_json::Value;

use super::AppState;

/// Binance's request weights.
const KLINES_WEIGHT: u32 = 2;
const EXCHANGE_INFO_WEIGHT: u32 = 20;
const LIGHT_WEIGHT: u32 = 1;
/// How long the exchange's exchangeInfo is served before it is fetched again.
const EXCHANGE_INFO_TTL: Duration = Duration::from_secs(600);
const JSON: &str = "application/json;charset=UTF-8";

/// The local Binance API's state: settings, the exchange client, per-client weights, the cache.
pub struct LocalBinance {
    read_through: bool,
    weight_per_minute: u32,
    rest: RestClient,
    limiter: Mutex<WeightLimiter<IpAddr>>,
    cache: Mutex<KlineCache>,
    /// The exchange's exchangeInfo and when it was fetched; one refresh at a time.
    exchange_info: tokio::sync::Mutex<Option<(Instant, Arc<ExchangeInfo>)>>,
}

/// The exchange's exchangeInfo body, with its symbols indexed by name.
struct ExchangeInfo {
    body: serde_json::Map<String, Value>,
    symbols: HashMap<String, Value>,
}

impl LocalBinance {
    pub fn new(read_through: bool, cache_bytes: u64, weight_per_minute: u32, rest: RestClient) -> Self {
        Self {
            read_through,
            weight_per_minute,
            rest,
            limiter: Mutex::new(WeightLimiter::new(weight_per_minute)),
            cache: Mutex::new(KlineCache::new(cache_bytes)),
            exchange_info: tokio::sync::Mutex::new(None),
        }
    }

    fn charge(&self, client: IpAddr, weight: u32) -> Verdict {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner()).charge(&client, weight, unix_ms())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, KlineCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exchange's exchangeInfo, fetched when older than [`EXCHANGE_INFO_TTL`]; a stale copy when a refresh
    /// fails, `None` when there never was one.
    async fn exchange_info(&self) -> Option<Arc<ExchangeInfo>> {
        let mut cached = self.exchange_info.lock().await;
        if let Some((fetched, info)) = cached.as_ref()
            && fetched.elapsed() < EXCHANGE_INFO_TTL
        {
            return Some(info.clone());
        }
        match self.rest.exchange_info().await.map(|body| serde_json::from_slice::<Value>(&body)) {
            Ok(Ok(Value::Object(mut body))) => {
                let symbols = match body.remove("symbols") {
                    Some(Value::Array(symbols)) => symbols,
                    _ => Vec::new(),
                };
                let symbols = symbols
                    .into_iter()
                    .filter_map(|s| Some((s.get("symbol")?.as_str()?.to_owned(), s.clone())))
                    .collect();
                let info = Arc::new(ExchangeInfo { body, symbols });
                *cached = Some((Instant::now(), info.clone()));
                Some(info)
            }
            Ok(_) => {
                log::warn!("the exchange's exchangeInfo is not a JSON object");
                cached.as_ref().map(|(_, info)| info.clone())
            }
            Err(error) => {
                log::warn!("cannot fetch the exchange's exchangeInfo: {error}");
                cached.as_ref().map(|(_, info)| info.clone())
            }
        }
    }
}

/// The `/api/v3/*` routes, on GET and HEAD like every query endpoint. Each answers 404 when
/// `[api] enabled = false`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(super::get_and_head("/api/v3/klines", klines))
        .service(super::get_and_head("/api/v3/uiKlines", ui_klines))
        .service(super::get_and_head("/api/v3/exchangeInfo", exchange_info))
        .service(super::get_and_head("/api/v3/ping", ping))
        .service(super::get_and_head("/api/v3/time", time));
}

/// The exchange's clock now, or the local one before the exchange was ever heard.
fn exchange_now(state: &AppState) -> i64 {
    state.exchange_clock.at(unix_ms()).unwrap_or_else(unix_ms)
}

/// Charges the client, runs `answer` if allowed, and writes the answer with Binance's headers.
async fn serve<F, Fut>(
    request: HttpRequest,
    state: web::Data<AppState>,
    endpoint: &str,
    weight: u32,
    answer: F,
) -> HttpResponse
where
    F: FnOnce(web::Data<AppState>, Arc<LocalBinance>) -> Fut,
    Fut: std::future::Future<Output = Result<String, ApiFault>>,
{
    let Some(api) = state.local_binance.clone() else {
        return super::not_found(request).await;
    };
    let client = request.peer_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip());
    let (result, used, retry_after) = match api.charge(client, weight) {
        Verdict::Allowed { used } => (answer(state.clone(), api.clone()).await, used, None),
        Verdict::RateLimited { used, retry_after_secs } => {
            let msg = format!(
                "Too many requests; current limit is {} request weight per 1 MINUTE. Please use WebSocket Streams \
                 for live updates to avoid polling the API.",
                api.weight_per_minute
            );
            (Err(ApiFault::new(429, -1003, msg)), used, Some(retry_after_secs))
        }
        Verdict::Banned { used, retry_after_secs } => {
            let msg = "Way too many requests; IP banned. Please use WebSocket Streams for live updates to avoid bans.";
            (Err(ApiFault::new(418, -1003, msg)), used, Some(retry_after_secs))
        }
    };
    let (status, body) = match result {
        Ok(body) => (StatusCode::OK, body),
        Err(fault) => (StatusCode::from_u16(fault.status).unwrap_or(StatusCode::BAD_REQUEST), fault.body()),
    };
    state.metrics.api_requests.with_label_values(&[endpoint, status.as_str()]).inc();
    let mut response = HttpResponse::build(status);
    response
        .content_type(JSON)
        .insert_header(("x-mbx-used-weight", used.to_string()))
        .insert_header(("x-mbx-used-weight-1m", used.to_string()));
    if let Some(seconds) = retry_after {
        response.insert_header(("Retry-After", seconds.to_string()));
    }
    response.body(body)
}

async fn ping(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    serve(request, state, "ping", LIGHT_WEIGHT, |_, _| async { Ok("{}".to_owned()) }).await
}

async fn time(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    serve(request, state, "time", LIGHT_WEIGHT, |state, _| async move {
        Ok(serde_json::json!({ "serverTime": exchange_now(&state) }).to_string())
    })
    .await
}

async fn exchange_info(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let params = parse_query(request.query_string());
    serve(request, state, "exchangeInfo", EXCHANGE_INFO_WEIGHT, |state, api| async move {
        let requested = exchange_info_symbols(&params)?;
        let info = api.exchange_info().await.ok_or_else(internal_error)?;
        let symbols: Vec<Value> = match requested {
            None => {
                let mut all: Vec<&Value> = info.symbols.values().collect();
                all.sort_by(|a, b| a["symbol"].as_str().cmp(&b["symbol"].as_str()));
                all.into_iter().cloned().collect()
            }
            Some(names) => names
                .iter()
                .map(|name| info.symbols.get(name).cloned().ok_or_else(ApiFault::invalid_symbol))
                .collect::<Result<_, _>>()?,
        };
        let mut body = info.body.clone();
        body.insert("serverTime".into(), exchange_now(&state).into());
        local_weight_limit(&mut body, api.weight_per_minute);
        body.insert("symbols".into(), Value::Array(symbols));
        Ok(Value::Object(body).to_string())
    })
    .await
}

/// The request weight limit a client of candled has: `[api] weight_per_minute`, in place of the exchange's.
fn local_weight_limit(body: &mut serde_json::Map<String, Value>, weight_per_minute: u32) {
    let limits = body.get_mut("rateLimits").and_then(Value::as_array_mut).into_iter().flatten();
    for limit in limits.filter(|limit| limit["rateLimitType"] == "REQUEST_WEIGHT" && limit["interval"] == "MINUTE") {
        limit["limit"] = weight_per_minute.into();
    }
}

async fn klines(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let params = parse_query(request.query_string());
    serve(request, state, "klines", KLINES_WEIGHT, |state, api| klines_body(state, api, params)).await
}

/// `uiKlines`: on spot, the same rows as `klines`.
async fn ui_klines(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let params = parse_query(request.query_string());
    serve(request, state, "uiKlines", KLINES_WEIGHT, |state, api| klines_body(state, api, params)).await
}

/// Binance's `-1001`: what a client sees when the exchange behind candled cannot be reached.
fn internal_error() -> ApiFault {
    ApiFault::new(503, -1001, "Internal error; unable to process your request. Please try again.")
}

/// The exchange's refusal as it was sent, or `-1001` when it did not answer.
fn upstream_fault(error: RestError) -> ApiFault {
    #[derive(serde::Deserialize)]
    struct Refusal {
        code: i64,
        msg: String,
    }
    match &error {
        RestError::Status { status, body, .. } if *status < 500 => match serde_json::from_str::<Refusal>(body) {
            Ok(Refusal { code, msg }) => ApiFault::new(*status, code, msg),
            Err(_) => internal_error(),
        },
        _ => {
            log::warn!("read-through fetch failed: {error}");
            internal_error()
        }
    }
}

async fn read_store<T: Send + 'static>(
    state: &AppState,
    read: impl FnOnce(&dyn Store) -> Result<T, candled_actors::store::StoreError> + Send + 'static,
) -> Result<T, ApiFault> {
    super::params::read(state, read).await.map_err(|error| {
        log::warn!("local Binance API: {error}");
        internal_error()
    })
}

async fn klines_body(
    state: web::Data<AppState>,
    api: Arc<LocalBinance>,
    params: Vec<(String, String)>,
) -> Result<String, ApiFault> {
    let info = api.exchange_info().await;
    let request = KlineRequest::parse(&params, |symbol| match &info {
        Some(info) => info.symbols.contains_key(symbol),
        None => state.streams.has_symbol(symbol),
    })?;
    let on_utc_grid = request.is_utc_grid() == Some(true) && has_global_grid(request.timeframe);
    if !on_utc_grid {
        // A time zone moves the grid of days and longer, and 3d has a grid per symbol: the exchange selects.
        if !api.read_through {
            return Err(ApiFault::new(400, -1101, "timeZone and 3d klines need [api] read_through."));
        }
        let body = api.rest.klines_raw(&request.upstream_query()).await.map_err(upstream_fault)?;
        state.metrics.api_klines_answered.with_label_values(&["exchange"]).inc();
        return String::from_utf8(body).map_err(|_| internal_error());
    }
    let now = exchange_now(&state);
    let from_store = {
        let request = request.clone();
        read_store(&state, move |store| klines_from_store(store, &request, now)).await?
    };
    if let Answer::Complete(candles) = from_store {
        state.metrics.api_klines_answered.with_label_values(&["store"]).inc();
        return Ok(format::rows_json(&candles));
    }
    if !api.read_through {
        let request = request.clone();
        let candles = read_store(&state, move |store| klines_store_alone(store, &request)).await?;
        state.metrics.api_klines_answered.with_label_values(&["store"]).inc();
        return Ok(format::rows_json(&candles));
    }
    let key = StreamKey::new(request.symbol.clone(), request.timeframe);
    let configured = state.streams.active().contains(&key);
    if !configured && let Some(candles) = cached(&api, &request, now) {
        state.metrics.api_klines_answered.with_label_values(&["cache"]).inc();
        return Ok(format::rows_json(&candles));
    }
    let candles = api.rest.klines_query(request.timeframe, &request.upstream_query()).await.map_err(upstream_fault)?;
    state.metrics.api_klines_answered.with_label_values(&["exchange"]).inc();
    let stored = configured
        && match state.startup.engine() {
            Some(engine) => engine.send(StoreFetched { key, candles: candles.clone() }).await.unwrap_or(false),
            None => false,
        };
    if !stored {
        let mut cache = api.cache();
        cache.insert(&request.symbol, request.timeframe, &candles);
        state.metrics.api_cache_bytes.set(cache.bytes() as i64);
    }
    Ok(format::rows_json(&candles))
}

/// The selection from the cache, when it holds every row: only a selection of closed candles can be (the one in
/// progress is never cached).
fn cached(api: &LocalBinance, request: &KlineRequest, now: i64) -> Option<Vec<Candle>> {
    let expected =
        candled_actors::local_api::expected_opens(request.timeframe, now, request.start, request.end, request.limit);
    // Every row of the grid is cached: the exchange has each of them, so it selects exactly these.
    if expected.is_empty() {
        return None;
    }
    api.cache().get_all(&request.symbol, request.timeframe, &expected)
}
