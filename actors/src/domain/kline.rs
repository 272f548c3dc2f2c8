//! The Binance kline wire format: WebSocket frames and REST rows, parsed once into typed, validated candles.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::domain::kline_scan::scan_kline_frame;
use crate::domain::{Candle, Timeframe};

/// Why a frame or row was rejected. Each reason is counted separately on the health endpoint and in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum RejectReason {
    #[error("not valid JSON")]
    InvalidJson,
    #[error("a field has the wrong type or is missing")]
    WrongType,
    #[error("a price or volume is not a decimal number")]
    NonNumeric,
    #[error("a price or volume is NaN or infinite")]
    NonFinite,
    #[error("a price is zero or negative, or a volume is negative")]
    Negative,
    #[error("high is below low")]
    HighBelowLow,
    #[error("open or close lies outside [low, high]")]
    OutsideRange,
    #[error("close time does not match the open time and interval")]
    BadTimes,
    #[error("unknown interval")]
    UnknownInterval,
    #[error("binary frame")]
    Binary,
}

impl RejectReason {
    pub const ALL: [RejectReason; 10] = [
        Self::InvalidJson,
        Self::WrongType,
        Self::NonNumeric,
        Self::NonFinite,
        Self::Negative,
        Self::HighBelowLow,
        Self::OutsideRange,
        Self::BadTimes,
        Self::UnknownInterval,
        Self::Binary,
    ];

    /// A short label for metrics and JSON.
    pub const fn label(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::WrongType => "wrong_type",
            Self::NonNumeric => "non_numeric",
            Self::NonFinite => "non_finite",
            Self::Negative => "negative",
            Self::HighBelowLow => "high_below_low",
            Self::OutsideRange => "outside_range",
            Self::BadTimes => "bad_times",
            Self::UnknownInterval => "unknown_interval",
            Self::Binary => "binary",
        }
    }
}

/// One kline event, parsed and validated. The symbol borrows from the frame.
#[derive(Debug, Clone, PartialEq)]
pub struct KlineEvent<'a> {
    pub symbol: Cow<'a, str>,
    pub timeframe: Timeframe,
    /// `E`: when the exchange sent the event, ms UTC.
    pub event_time: i64,
    pub candle: Candle,
}

/// Everything a kline connection can receive as a text frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame<'a> {
    Kline(KlineEvent<'a>),
    /// `serverShutdown`: the server is going away; reconnect at once.
    ServerShutdown,
    /// The answer to a control message: `{"result":...,"id":N}`.
    Ack {
        id: Option<i64>,
    },
    /// `{"error":{"code":..,"msg":..},"id":..}`.
    Error {
        code: i64,
        msg: String,
    },
    /// Valid JSON of another kind (other event types): ignored.
    Other,
}

/// One frame in either the raw (`/ws`) or the combined (`/stream`) form, in a single pass.
#[derive(Deserialize)]
struct WireFrame<'a> {
    /// The event, when the frame is in the combined form.
    #[serde(borrow)]
    data: Option<WireEvent<'a>>,
    /// The event's own fields, when the frame is in the raw form (listed here rather than flattened, which
    /// would buffer every frame).
    #[serde(borrow)]
    e: Option<Cow<'a, str>>,
    #[serde(rename = "E")]
    event_time: Option<i64>,
    #[serde(borrow)]
    k: Option<WireKline<'a>>,
    id: Option<IdValue>,
    result: Option<IgnoredAny>,
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(borrow)]
    e: Option<Cow<'a, str>>,
    #[serde(rename = "E")]
    event_time: Option<i64>,
    #[serde(borrow)]
    k: Option<WireKline<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Int(i64),
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct WireError {
    code: i64,
    msg: String,
}

/// The `k` object of a kline event. Numbers are numbers, prices and volumes are decimal strings.
#[derive(Deserialize)]
struct WireKline<'a> {
    t: i64,
    #[serde(rename = "T")]
    close_time: i64,
    #[serde(borrow)]
    s: Cow<'a, str>,
    #[serde(borrow)]
    i: Cow<'a, str>,
    #[serde(borrow)]
    o: Cow<'a, str>,
    #[serde(borrow)]
    h: Cow<'a, str>,
    #[serde(borrow)]
    l: Cow<'a, str>,
    #[serde(borrow)]
    c: Cow<'a, str>,
    #[serde(borrow)]
    v: Cow<'a, str>,
    n: u64,
    x: bool,
    #[serde(borrow)]
    q: Cow<'a, str>,
    #[serde(rename = "V", borrow)]
    taker_base: Cow<'a, str>,
    #[serde(rename = "Q", borrow)]
    taker_quote: Cow<'a, str>,
}

/// Parses one WebSocket text frame. A frame that is rejected must be counted and dropped by the caller.
///
/// Kline events in Binance's compact form take the specialised single-pass parser; every other frame, and anything
/// unusual about a kline event, takes [`parse_frame_generic`]. Both give the same result on every input.
pub fn parse_frame(text: &str) -> Result<Frame<'_>, RejectReason> {
    scan_kline_frame(text).unwrap_or_else(|| parse_frame_generic(text))
}

/// The reference parser: `serde_json` into typed, borrowed structs. It reads every frame [`parse_frame`] can be given
/// and decides what the specialised parser leaves to it.
///
/// A real event: `{"e":"kline","E":1631636735735,"s":"BTCUSDT","k":{"t":1631636700000,"T":1631636999999,
/// "s":"BTCUSDT","i":"5m","f":1054217725,"L":1054218306,"o":"46686.15000000","c":"46673.53000000",
/// "h":"46686.15000000","l":"46668.45000000","v":"12.26168000","n":582,"x":false,"q":"572337.21655380",
/// "V":"3.29093000","Q":"153606.31592330","B":"0"}}`. The combined form wraps it as `{"stream":..,"data":{..}}`.
pub fn parse_frame_generic(text: &str) -> Result<Frame<'_>, RejectReason> {
    let frame: WireFrame<'_> = serde_json::from_str(text).map_err(json_reason)?;
    if let Some(error) = frame.error {
        return Ok(Frame::Error { code: error.code, msg: error.msg });
    }
    if frame.result.is_some() || frame.id.is_some() {
        let id = match frame.id {
            Some(IdValue::Int(id)) => Some(id),
            _ => None,
        };
        return Ok(Frame::Ack { id });
    }
    let event = frame.data.unwrap_or(WireEvent { e: frame.e, event_time: frame.event_time, k: frame.k });
    match (event.e.as_deref(), event.k) {
        (Some("kline"), Some(k)) => {
            let event_time = event.event_time.ok_or(RejectReason::WrongType)?;
            let (symbol, timeframe, candle) = kline_candle(k)?;
            Ok(Frame::Kline(KlineEvent { symbol, timeframe, event_time, candle }))
        }
        (Some("kline"), None) => Err(RejectReason::WrongType),
        (Some("serverShutdown"), _) => Ok(Frame::ServerShutdown),
        _ => Ok(Frame::Other),
    }
}

fn kline_candle(k: WireKline<'_>) -> Result<(Cow<'_, str>, Timeframe, Candle), RejectReason> {
    let timeframe: Timeframe = k.i.parse().map_err(|_| RejectReason::UnknownInterval)?;
    let candle = Candle {
        open_time: k.t,
        close_time: k.close_time,
        open: parse_decimal(&k.o)?,
        high: parse_decimal(&k.h)?,
        low: parse_decimal(&k.l)?,
        close: parse_decimal(&k.c)?,
        volume: parse_decimal(&k.v)?,
        quote_volume: parse_decimal(&k.q)?,
        trades: k.n,
        taker_buy_base: parse_decimal(&k.taker_base)?,
        taker_buy_quote: parse_decimal(&k.taker_quote)?,
        is_closed: k.x,
    };
    validate(timeframe, &candle)?;
    Ok((k.s, timeframe, candle))
}

/// One row of `GET /api/v3/klines`:
/// `[openTime, "open", "high", "low", "close", "volume", closeTime, "quoteVolume", trades, "takerBuyBase",
/// "takerBuyQuote", "0"]`.
#[derive(Deserialize)]
struct WireRestRow<'a>(
    i64,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    i64,
    #[serde(borrow)] Cow<'a, str>,
    u64,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    IgnoredAny,
);

/// Parses a `GET /api/v3/klines` response body. A row is closed when its close time is before `server_time`;
/// the exchange's own clock decides, never ours.
pub fn parse_rest_klines(body: &[u8], timeframe: Timeframe, server_time: i64) -> Result<Vec<Candle>, RejectReason> {
    let rows: Vec<WireRestRow<'_>> = serde_json::from_slice(body).map_err(json_reason)?;
    rows.into_iter()
        .map(|row| {
            let candle = Candle {
                open_time: row.0,
                close_time: row.6,
                open: parse_decimal(&row.1)?,
                high: parse_decimal(&row.2)?,
                low: parse_decimal(&row.3)?,
                close: parse_decimal(&row.4)?,
                volume: parse_decimal(&row.5)?,
                quote_volume: parse_decimal(&row.7)?,
                trades: row.8,
                taker_buy_base: parse_decimal(&row.9)?,
                taker_buy_quote: parse_decimal(&row.10)?,
                is_closed: row.6 < server_time,
            };
            validate(timeframe, &candle)?;
            Ok(candle)
        })
        .collect()
}

fn json_reason(error: serde_json::Error) -> RejectReason {
    match error.classify() {
        serde_json::error::Category::Data => RejectReason::WrongType,
        _ => RejectReason::InvalidJson,
    }
}

/// Parses a decimal string with Rust's correctly rounded parser. Only plain decimals are accepted: `NaN`, `inf`
/// and exponents are not Binance numbers.
pub fn parse_decimal(text: &str) -> Result<f64, RejectReason> {
    let plain = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
    if !plain {
        return Err(if text.eq_ignore_ascii_case("nan") || text.to_ascii_lowercase().contains("inf") {
            RejectReason::NonFinite
        } else {
            RejectReason::NonNumeric
        });
    }
    text.parse::<f64>().map_err(|_| RejectReason::NonNumeric)
}

/// The rules every candle from the exchange obeys. A candle that breaks one is corrupt and must not be stored.
pub fn validate(timeframe: Timeframe, c: &Candle) -> Result<(), RejectReason> {
    let prices = [c.open, c.high, c.low, c.close];
    let volumes = [c.volume, c.quote_volume, c.taker_buy_base, c.taker_buy_quote];
    if prices.iter().chain(&volumes).any(|v| !v.is_finite()) {
        return Err(RejectReason::NonFinite);
    }
    if prices.iter().any(|&p| p <= 0.0) || volumes.iter().any(|&v| v < 0.0) {
        return Err(RejectReason::Negative);
    }
    if c.high < c.low {
        return Err(RejectReason::HighBelowLow);
    }
    if !(c.low..=c.high).contains(&c.open) || !(c.low..=c.high).contains(&c.close) {
        return Err(RejectReason::OutsideRange);
    }
    if c.close_time != timeframe.close_time(c.open_time) {
        return Err(RejectReason::BadTimes);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"e":"kline","E":1631636735735,"s":"BTCUSDT","k":{"t":1631636700000,"T":1631636999999,"s":"BTCUSDT","i":"5m","f":1054217725,"L":1054218306,"o":"46686.15000000","c":"46673.53000000","h":"46686.15000000","l":"46668.45000000","v":"12.26168000","n":582,"x":false,"q":"572337.21655380","V":"3.29093000","Q":"153606.31592330","B":"0"}}"#;

    fn expected_candle() -> Candle {
        Candle {
            open_time: 1_631_636_700_000,
            close_time: 1_631_636_999_999,
            open: 46686.15,
            high: 46686.15,
            low: 46668.45,
            close: 46673.53,
            volume: 12.26168,
            quote_volume: 572337.2165538,
            trades: 582,
            taker_buy_base: 3.29093,
            taker_buy_quote: 153606.3159233,
            is_closed: false,
        }
    }

    #[test]
    fn parses_the_real_raw_and_combined_event() {
        let combined = format!(r#"{{"stream":"btcusdt@kline_5m","data":{EVENT}}}"#);
        for text in [EVENT, combined.as_str()] {
            let Ok(Frame::Kline(event)) = parse_frame(text) else { panic!("not a kline: {text}") };
            assert_eq!(event.symbol, "BTCUSDT");
            assert_eq!(event.timeframe, Timeframe::M5);
            assert_eq!(event.event_time, 1_631_636_735_735);
            assert_eq!(event.candle, expected_candle());
        }
    }

    #[test]
    fn classifies_control_and_other_frames() {
        // TC0: subscription ack.
        assert_eq!(parse_frame(r#"{"result":null,"id":7}"#), Ok(Frame::Ack { id: Some(7) }));
        // TC1: ack with a string id.
        assert_eq!(parse_frame(r#"{"result":null,"id":"abc"}"#), Ok(Frame::Ack { id: None }));
        // TC2: error object.
        assert_eq!(
            parse_frame(r#"{"error":{"code":2,"msg":"Invalid request"},"id":1}"#),
            Ok(Frame::Error { code: 2, msg: "Invalid request".into() })
        );
        // TC3: server shutdown, raw and combined.
        assert_eq!(parse_frame(r#"{"e":"serverShutdown","E":1}"#), Ok(Frame::ServerShutdown));
        assert_eq!(
            parse_frame(r#"{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}"#),
            Ok(Frame::ServerShutdown)
        );
        // TC4: another event type.
        assert_eq!(parse_frame(r#"{"e":"trade","E":1,"s":"BTCUSDT"}"#), Ok(Frame::Other));
    }

    #[test]
    fn rejects_malformed_frames_with_their_reason() {
        let cases = [
            ("not json", RejectReason::InvalidJson),
            (r#"{"e":"kline","E":1,"k":{"t":"x"}}"#, RejectReason::WrongType),
            (r#"{"e":"kline","E":1}"#, RejectReason::WrongType),
            (&EVENT.replace(r#""o":"46686.15000000""#, r#""o":46686.15"#), RejectReason::WrongType),
            (&EVENT.replace(r#""o":"46686.15000000""#, r#""o":"abc""#), RejectReason::NonNumeric),
            (&EVENT.replace(r#""o":"46686.15000000""#, r#""o":"NaN""#), RejectReason::NonFinite),
            (&EVENT.replace(r#""o":"46686.15000000""#, r#""o":"1e3""#), RejectReason::NonNumeric),
            (&EVENT.replace(r#""c":"46673.53000000""#, r#""c":"-1.0""#), RejectReason::Negative),
            (&EVENT.replace(r#""l":"46668.45000000""#, r#""l":"46690.00000000""#), RejectReason::HighBelowLow),
            (&EVENT.replace(r#""c":"46673.53000000""#, r#""c":"46600.00000000""#), RejectReason::OutsideRange),
            (&EVENT.replace(r#""T":1631636999999"#, r#""T":1631636999000"#), RejectReason::BadTimes),
            (&EVENT.replace(r#""i":"5m""#, r#""i":"7m""#), RejectReason::UnknownInterval),
            (&EVENT.replace(r#""o":"46686.15000000""#, r#""o":"inf""#), RejectReason::NonFinite),
            (&EVENT.replace(r#""o":"46686.15000000""#, r#""o":"-Infinity""#), RejectReason::NonFinite),
            (&EVENT.replace(r#""o":"46686.15000000""#, r#""o":"""#), RejectReason::NonNumeric),
            // A price of zero is no price; a volume of zero is a quiet candle.
            (&EVENT.replace(r#""l":"46668.45000000""#, r#""l":"0""#), RejectReason::Negative),
        ];
        for (text, reason) in cases {
            assert_eq!(parse_frame(text), Err(reason), "{text}");
        }
    }

    #[test]
    fn parses_rest_rows_and_decides_closed_by_server_time() {
        let body = br#"[[1631636700000,"46686.15000000","46686.15000000","46668.45000000","46673.53000000","12.26168000",1631636999999,"572337.21655380",582,"3.29093000","153606.31592330","0"],
                        [1631637000000,"1.0","1.0","1.0","1.0","0",1631637299999,"0",0,"0","0","0"]]"#;
        let candles = parse_rest_klines(body, Timeframe::M5, 1_631_637_000_100).unwrap();
        assert_eq!(candles.len(), 2);
        assert_eq!(candles[0], Candle { is_closed: true, ..expected_candle() });
        assert!(!candles[1].is_closed, "the row whose close time is still ahead is in progress");
        // A candle is closed only once the server's clock is past its close time.
        let at_close = parse_rest_klines(body, Timeframe::M5, 1_631_636_999_999).unwrap();
        assert!(!at_close[0].is_closed, "at its close time the candle is still in progress");
        assert_eq!(parse_rest_klines(b"[]", Timeframe::M5, 0), Ok(vec![]));
        assert_eq!(parse_rest_klines(b"{\"code\":-1121}", Timeframe::M5, 0), Err(RejectReason::WrongType));
    }

    #[test]
    fn every_reason_has_its_own_label() {
        let labels: Vec<&str> = RejectReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            [
                "invalid_json",
                "wrong_type",
                "non_numeric",
                "non_finite",
                "negative",
                "high_below_low",
                "outside_range",
                "bad_times",
                "unknown_interval",
                "binary"
            ]
        );
    }
}
