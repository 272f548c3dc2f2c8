//! REST server: a small HTTP/1.1 (keep-alive) server for `/api/v3/{klines,exchangeInfo,time,ping}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use super::RestRecord;
use super::market::Interval;
use super::state::Shared;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEAD_BYTES: u64 = 16 * 1024;
const MAX_BODY_BYTES: u64 = 1 << 20;
const DEFAULT_LIMIT: i64 = 500;
const MAX_LIMIT: i64 = 1000;
const KLINES_WEIGHT: u64 = 2;
const EXCHANGE_INFO_WEIGHT: u64 = 20;
const LIGHT_WEIGHT: u64 = 1;
const SYMBOL_RANGE: &str = "^[A-Z0-9-_.]{1,20}$";

pub(super) async fn serve(shared: Arc<Shared>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                tokio::spawn(handle_socket(shared.clone(), tcp, tls.clone()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn handle_socket(shared: Arc<Shared>, tcp: TcpStream, tls: Option<TlsAcceptor>) {
    let _ = tcp.set_nodelay(true);
    match tls {
        None => serve_connection(&shared, tcp).await,
        Some(acceptor) => {
            if let Ok(Ok(stream)) = timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                serve_connection(&shared, stream).await;
            }
        }
    }
}

/// The parts of a request the fake looks at.
struct RequestHead {
    method: String,
    path: String,
    query: String,
    close: bool,
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(shared: &Shared, stream: S) {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(reader);
    loop {
        let Ok(Ok(Some(head))) = timeout(IDLE_TIMEOUT, read_head(&mut reader)).await else {
            return;
        };
        let response = respond(shared, &head);
        if writer.write_all(response.as_bytes()).await.is_err() || writer.flush().await.is_err() || head.close {
            let _ = writer.shutdown().await;
            return;
        }
    }
}

/// Reads one request head (and skips any body); `Ok(None)` on a clean end of stream or a malformed request.
async fn read_head<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> std::io::Result<Option<RequestHead>> {
    let mut limited = (&mut *reader).take(MAX_HEAD_BYTES);
    let mut line = String::new();
    if limited.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(None);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut head = RequestHead {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        close: version == "HTTP/1.0",
    };
    let mut body_bytes = 0;
    loop {
        line.clear();
        if limited.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_ascii_lowercase());
            if name == "connection" {
                head.close = value == "close";
            } else if name == "content-length" {
                body_bytes = value.parse::<u64>().unwrap_or(u64::MAX);
            }
        }
    }
    if body_bytes > MAX_BODY_BYTES {
        return Ok(None);
    }
    tokio::io::copy(&mut (&mut *reader).take(body_bytes), &mut tokio::io::sink()).await?;
    Ok(Some(head))
}

/// A response before serialisation.
struct Reply {
    status: u16,
    body: String,
    retry_after: Option<u64>,
}

impl Reply {
    fn ok(body: String) -> Reply {
        Reply { status: 200, body, retry_after: None }
    }

    fn error(status: u16, code: i64, msg: &str) -> Reply {
        Reply { status, body: json!({ "code": code, "msg": msg }).to_string(), retry_after: None }
    }
}

fn respond(shared: &Shared, head: &RequestHead) -> String {
    Shared::count(&shared.counters.rest_requests);
    let mut record = RestRecord {
        path: head.path.clone(),
        query: head.query.clone(),
        status: 0,
        kline_open_times: Vec::new(),
        in_progress_open_time: None,
    };
    let now = Instant::now();
    let mut pre_charged = false;
    let (reply, weight) = if shared.faults().is_down(now) {
        Shared::count(&shared.counters.rest_503s);
        (Reply::error(503, -1001, "Internal error; unable to process your request. Please try again."), 0)
    } else if let Some((status, retry_after)) = shared.throttle_rest(now, head.path == "/api/v3/klines") {
        let counter = if status == 418 { &shared.counters.rest_418s } else { &shared.counters.rest_429s };
        Shared::count(counter);
        let msg = if status == 418 {
            "Way too many requests; IP banned. Please use WebSocket Streams for live updates to avoid bans."
        } else {
            "Too many requests; current limit is 6000 request weight per 1 MINUTE. Please use WebSocket Streams \
             for live updates to avoid polling the API."
        };
        (Reply { retry_after: Some(retry_after), ..Reply::error(status, -1003, msg) }, 0)
    } else if let Err(retry_after) = shared.charge_within_weight_limit(request_weight(head)).inspect(|&charged| {
        pre_charged = charged;
    }) {
        Shared::count(&shared.counters.rest_429s);
        Shared::count(&shared.counters.rest_weight_limit_429s);
        let msg = format!(
            "Too many requests; current limit is {} request weight per 1 MINUTE. Please use WebSocket Streams for \
             live updates to avoid polling the API.",
            shared.config.rest_weight_limit_per_minute.unwrap_or_default()
        );
        (Reply { retry_after: Some(retry_after), ..Reply::error(429, -1003, &msg) }, 0)
    } else {
        route(shared, head, &mut record)
    };
    if (400..500).contains(&reply.status) && reply.retry_after.is_none() {
        Shared::count(&shared.counters.rest_client_errors);
    }
    let used_weight = shared.use_rest_weight(if pre_charged { 0 } else { weight });
    record.status = reply.status;
    shared.record_rest(record);
    serialise(&reply, used_weight, head.close)
}

fn serialise(reply: &Reply, used_weight: u64, close: bool) -> String {
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        _ => "Service Unavailable",
    };
    let retry_after = reply.retry_after.map(|secs| format!("Retry-After: {secs}\r\n")).unwrap_or_default();
    let connection = if close { "close" } else { "keep-alive" };
    format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\n\
         x-mbx-used-weight: {used_weight}\r\nx-mbx-used-weight-1m: {used_weight}\r\n{retry_after}\
         Connection: {connection}\r\n\r\n{}",
        reply.status,
        reply.body.len(),
        reply.body
    )
}

/// The weight Binance charges for a request, as [`route`] charges it.
fn request_weight(head: &RequestHead) -> u64 {
    match head.path.as_str() {
        "/api/v3/ping" | "/api/v3/time" => LIGHT_WEIGHT,
        "/api/v3/exchangeInfo" => EXCHANGE_INFO_WEIGHT,
        "/api/v3/klines" | "/api/v3/uiKlines" => KLINES_WEIGHT,
        _ => 0,
    }
}

fn route(shared: &Shared, head: &RequestHead, record: &mut RestRecord) -> (Reply, u64) {
    if head.method != "GET" {
        return (Reply::error(405, -1000, "Only GET is supported by the fake exchange."), 0);
    }
    let params = parse_query(&head.query);
    match head.path.as_str() {
        "/api/v3/ping" => (Reply::ok("{}".to_string()), LIGHT_WEIGHT),
        "/api/v3/time" => (Reply::ok(json!({ "serverTime": shared.clock.now_ms() }).to_string()), LIGHT_WEIGHT),
        "/api/v3/exchangeInfo" => (exchange_info(shared, &params).unwrap_or_else(|e| e), EXCHANGE_INFO_WEIGHT),
        // On spot, uiKlines answers the same rows as klines.
        "/api/v3/klines" | "/api/v3/uiKlines" => (klines(shared, &params, record).unwrap_or_else(|e| e), KLINES_WEIGHT),
        _ => (Reply::error(404, -1000, "Unknown path."), 0),
    }
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes.get(index + 1..index + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[index], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (b'+', _) => {
                decoded.push(b' ');
                index += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().rev().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

fn mandatory_missing(name: &str) -> Reply {
    Reply::error(400, -1102, &format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."))
}

fn illegal_characters(name: &str, range: &str) -> Reply {
    Reply::error(400, -1100, &format!("Illegal characters found in parameter '{name}'; legal range is '{range}'."))
}

fn is_legal_symbol(symbol: &str) -> bool {
    (1..=20).contains(&symbol.len())
        && symbol.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// Binance refuses a parameter sent twice before anything else (`-1101`), then parameters it does not read (`-1104`).
fn reject_unknown_params(params: &[(String, String)], known: &[&str]) -> Result<(), Reply> {
    for (index, (name, _)) in params.iter().enumerate() {
        if params[..index].iter().any(|(earlier, _)| earlier == name) {
            return Err(Reply::error(400, -1101, "Duplicate values for a parameter detected."));
        }
    }
    let read = params.iter().filter(|(key, _)| known.contains(&key.as_str())).count();
    if read == params.len() {
        return Ok(());
    }
    let msg = format!("Not all sent parameters were read; read '{read}' parameter(s) but was sent '{}'.", params.len());
    Err(Reply::error(400, -1104, &msg))
}

fn optional_millis(params: &[(String, String)], name: &str) -> Result<Option<i64>, Reply> {
    match param(params, name) {
        None | Some("") => Ok(None),
        Some(value) => value.parse().map(Some).map_err(|_| illegal_characters(name, "^-?[0-9]{1,20}$")),
    }
}

fn klines(shared: &Shared, params: &[(String, String)], record: &mut RestRecord) -> Result<Reply, Reply> {
    reject_unknown_params(params, &["symbol", "interval", "startTime", "endTime", "limit", "timeZone"])?;
    let symbol = param(params, "symbol").filter(|s| !s.is_empty()).ok_or_else(|| mandatory_missing("symbol"))?;
    if !is_legal_symbol(symbol) {
        return Err(illegal_characters("symbol", SYMBOL_RANGE));
    }
    if shared.market.spec(symbol).is_none() {
        return Err(Reply::error(400, -1121, "Invalid symbol."));
    }
    if shared.faults().rejected_kline_symbols.contains(symbol) {
        Shared::count(&shared.counters.rest_klines_rejected);
        return Err(Reply::error(400, -1121, "Invalid symbol."));
    }
    let interval_name =
        param(params, "interval").filter(|s| !s.is_empty()).ok_or_else(|| mandatory_missing("interval"))?;
    let interval = Interval::parse(interval_name).ok_or_else(|| Reply::error(400, -1120, "Invalid interval."))?;
    let start = optional_millis(params, "startTime")?;
    let end = optional_millis(params, "endTime")?;
    let limit = match param(params, "limit") {
        None | Some("") => DEFAULT_LIMIT,
        Some(value) => value.parse::<i64>().map_err(|_| illegal_characters("limit", "^[0-9]{1,20}$"))?,
    };
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Reply::error(400, -1130, "Data sent for parameter 'limit' is not valid."));
    }
    if let (Some(start), Some(end)) = (start, end)
        && start > end
    {
        return Err(Reply::error(400, -1023, "Start time is greater than end time."));
    }
    if shared.take_empty_klines(symbol, interval.name()) {
        Shared::count(&shared.counters.rest_klines_faked_empty);
        return Ok(Reply::ok("[]".to_string()));
    }
    let now = shared.clock.now_ms();
    let opens = kline_open_times(interval, shared.market.first_open_time(interval), now, start, end, limit);
    let rows: Vec<String> = opens
        .iter()
        .filter_map(|open| shared.market.candle_at(symbol, interval, *open, now))
        .inspect(|kline| {
            record.kline_open_times.push(kline.open_time);
            if !kline.is_closed {
                record.in_progress_open_time = Some(kline.open_time);
            }
        })
        .map(|kline| kline.rest_row_json())
        .collect();
    shared.counters.rest_klines_rows_served.fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(Reply::ok(format!("[{}]", rows.join(","))))
}

/// Open times Binance would return: rows with `start <= open <= end`, never before the first candle nor after the
/// current one; the oldest `limit` rows when `start` is given, otherwise the newest `limit` rows.
fn kline_open_times(
    interval: Interval,
    first_open: i64,
    now: i64,
    start: Option<i64>,
    end: Option<i64>,
    limit: i64,
) -> Vec<i64> {
    let lowest = start.map_or(first_open, |start| interval.first_open_at_or_after(start).max(first_open));
    let current = interval.open_time_at(now);
    let highest = end.map_or(current, |end| interval.open_time_at(end).min(current));
    if lowest > highest {
        return Vec::new();
    }
    let count = (interval.candles_between(lowest, highest) + 1).min(limit) as usize;
    if start.is_some() {
        std::iter::successors(Some(lowest), |open| Some(interval.next_open(*open))).take(count).collect()
    } else {
        let mut newest_first: Vec<i64> =
            std::iter::successors(Some(highest), |open| Some(interval.previous_open(*open))).take(count).collect();
        newest_first.reverse();
        newest_first
    }
}

fn exchange_info(shared: &Shared, params: &[(String, String)]) -> Result<Reply, Reply> {
    reject_unknown_params(params, &["symbol", "symbols", "permissions", "showPermissionSets", "symbolStatus"])?;
    let requested: Option<Vec<String>> = match (param(params, "symbol"), param(params, "symbols")) {
        (Some(_), Some(_)) => {
            return Err(Reply::error(400, -1128, "Combination of optional parameters invalid."));
        }
        (Some(symbol), None) => {
            if !is_legal_symbol(symbol) {
                return Err(illegal_characters("symbol", SYMBOL_RANGE));
            }
            Some(vec![symbol.to_string()])
        }
        (None, Some(list)) => {
            let range = r#"^\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\]$"#;
            let symbols: Vec<String> = serde_json::from_str(list).map_err(|_| illegal_characters("symbols", range))?;
            if symbols.iter().any(|s| !is_legal_symbol(s)) {
                return Err(illegal_characters("symbols", range));
            }
            Some(symbols)
        }
        (None, None) => None,
    };
    let specs = match requested {
        None => shared.market.symbols(),
        Some(names) => {
            let found: Option<Vec<_>> = names.iter().map(|name| shared.market.spec(name)).collect();
            found.ok_or_else(|| Reply::error(400, -1121, "Invalid symbol."))?
        }
    };
    let symbols: Vec<Value> = specs
        .iter()
        .map(|spec| {
            let tick = format!("{:.8}", 10f64.powi(-(spec.tick_decimals as i32)));
            let step = format!("{:.8}", 10f64.powi(-(spec.step_decimals as i32)));
            json!({
                "symbol": spec.symbol,
                "status": "TRADING",
                "baseAsset": spec.base_asset,
                "baseAssetPrecision": 8,
                "quoteAsset": spec.quote_asset,
                "quotePrecision": 8,
                "quoteAssetPrecision": 8,
                "orderTypes": ["LIMIT", "MARKET"],
                "isSpotTradingAllowed": true,
                "isMarginTradingAllowed": false,
                "filters": [
                    { "filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000", "tickSize": tick },
                    { "filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000000000.00000000", "stepSize": step },
                ],
                "permissions": [],
                "permissionSets": [["SPOT"]],
            })
        })
        .collect();
    let body = json!({
        "timezone": "UTC",
        "serverTime": shared.clock.now_ms(),
        "rateLimits": [
            { "rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000 },
            { "rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000 },
        ],
        "exchangeFilters": [],
        "symbols": symbols,
    });
    Ok(Reply::ok(body.to_string()))
}
