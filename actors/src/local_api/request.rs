//! Validation of `/api/v3/klines` and `/api/v3/exchangeInfo` requests, in the order Binance checks them, with
//! Binance's error codes, HTTP statuses and messages.

use crate::domain::Timeframe;

/// The default and largest `limit` of `/api/v3/klines`.
pub const DEFAULT_LIMIT: usize = 500;
pub const MAX_LIMIT: usize = 1000;
/// Binance's legal range for symbols, as its `-1100` message quotes it.
const SYMBOL_RANGE: &str = "^[A-Z0-9-_.]{1,20}$";
/// The legal range of `symbols=[...]`, as Binance's `-1100` message quotes it.
const SYMBOLS_RANGE: &str = r#"^\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\]$"#;
const KLINE_PARAMS: [&str; 6] = ["symbol", "interval", "startTime", "endTime", "limit", "timeZone"];
const EXCHANGE_INFO_PARAMS: [&str; 5] = ["symbol", "symbols", "permissions", "showPermissionSets", "symbolStatus"];

/// A Binance error answer: HTTP status, `code` and `msg`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP {status}, code {code}: {msg}")]
pub struct ApiFault {
    pub status: u16,
    pub code: i64,
    pub msg: String,
}

impl ApiFault {
    pub fn new(status: u16, code: i64, msg: impl Into<String>) -> Self {
        Self { status, code, msg: msg.into() }
    }

    /// `-1121 Invalid symbol.`
    pub fn invalid_symbol() -> Self {
        Self::new(400, -1121, "Invalid symbol.")
    }

    fn mandatory_missing(name: &str) -> Self {
        Self::new(400, -1102, format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."))
    }

    fn illegal_characters(name: &str, range: &str) -> Self {
        Self::new(400, -1100, format!("Illegal characters found in parameter '{name}'; legal range is '{range}'."))
    }

    /// The `{"code":..,"msg":..}` body.
    pub fn body(&self) -> String {
        serde_json::json!({ "code": self.code, "msg": self.msg }).to_string()
    }
}

/// A `timeZone` parameter: an offset from UTC in minutes, within Binance's range [-12:00, +14:00].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone {
    pub offset_minutes: i32,
}

impl TimeZone {
    /// Parses `0`, `8`, `+8`, `-1`, `05:45`, `-01:00`, `+14:00`; `None` for anything else or out of range.
    pub fn parse(text: &str) -> Option<Self> {
        let (sign, rest) = match text.as_bytes().first()? {
            b'+' => (1, &text[1..]),
            b'-' => (-1, &text[1..]),
            _ => (1, text),
        };
        let (hours, minutes) = match rest.split_once(':') {
            Some((hours, minutes)) if minutes.len() == 2 => (hours, minutes),
            Some(_) => return None,
            None => (rest, "0"),
        };
        let digits = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(hours) || !digits(minutes) {
            return None;
        }
        let (hours, minutes): (i32, i32) = (hours.parse().ok()?, minutes.parse().ok()?);
        if minutes >= 60 {
            return None;
        }
        let offset_minutes = sign * (hours * 60 + minutes);
        (-12 * 60..=14 * 60).contains(&offset_minutes).then_some(Self { offset_minutes })
    }

    pub fn is_utc(self) -> bool {
        self.offset_minutes == 0
    }
}

/// A valid `/api/v3/klines` (or `uiKlines`) request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KlineRequest {
    pub symbol: String,
    pub timeframe: Timeframe,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub limit: usize,
    /// `timeZone` as sent, when sent and not empty.
    pub time_zone: Option<String>,
}

impl KlineRequest {
    /// Validates `params` (decoded query pairs, in order) as Binance does, asking `is_listed` whether the exchange
    /// lists a well-formed symbol. Checks run in Binance's order: duplicates, unknown parameters, `symbol`,
    /// `interval`, the times, `limit`, then the time order.
    pub fn parse(params: &[(String, String)], is_listed: impl FnOnce(&str) -> bool) -> Result<Self, ApiFault> {
        check_names(params, &KLINE_PARAMS)?;
        let symbol = value(params, "symbol").ok_or_else(|| ApiFault::mandatory_missing("symbol"))?;
        if !is_legal_symbol(symbol) {
            return Err(ApiFault::illegal_characters("symbol", SYMBOL_RANGE));
        }
        if !is_listed(symbol) {
            return Err(ApiFault::invalid_symbol());
        }
        let interval = value(params, "interval").ok_or_else(|| ApiFault::mandatory_missing("interval"))?;
        let timeframe: Timeframe = interval.parse().map_err(|_| ApiFault::new(400, -1120, "Invalid interval."))?;
        let start = millis(params, "startTime")?;
        let end = millis(params, "endTime")?;
        let limit = match value(params, "limit") {
            None => DEFAULT_LIMIT as i64,
            Some(text) => text.parse::<i64>().map_err(|_| ApiFault::illegal_characters("limit", "^[0-9]{1,20}$"))?,
        };
        if !(1..=MAX_LIMIT as i64).contains(&limit) {
            return Err(ApiFault::new(400, -1130, "Data sent for parameter 'limit' is not valid."));
        }
        if let (Some(start), Some(end)) = (start, end)
            && start > end
        {
            return Err(ApiFault::new(400, -1023, "Start time is greater than end time."));
        }
        let time_zone = value(params, "timeZone").map(str::to_owned);
        Ok(Self { symbol: symbol.to_owned(), timeframe, start, end, limit: limit as usize, time_zone })
    }

    /// Whether the request can be answered on the UTC grid candled stores: no `timeZone`, a UTC one, or an
    /// interval below a day (which `timeZone` does not move). `None` when `timeZone` is not valid.
    pub fn is_utc_grid(&self) -> Option<bool> {
        match &self.time_zone {
            None => Some(true),
            Some(text) => {
                let zone = TimeZone::parse(text)?;
                Some(zone.is_utc() || self.timeframe.fixed_ms().is_some_and(|ms| ms < 86_400_000))
            }
        }
    }

    /// The query to ask the exchange for exactly this request.
    pub fn upstream_query(&self) -> Vec<(&'static str, String)> {
        let mut query = vec![
            ("symbol", self.symbol.clone()),
            ("interval", self.timeframe.as_str().to_owned()),
            ("limit", self.limit.to_string()),
        ];
        if let Some(start) = self.start {
            query.push(("startTime", start.to_string()));
        }
        if let Some(end) = self.end {
            query.push(("endTime", end.to_string()));
        }
        if let Some(zone) = &self.time_zone {
            query.push(("timeZone", zone.clone()));
        }
        query
    }
}

/// Which symbols an `/api/v3/exchangeInfo` request asks for: `None` for all.
pub fn exchange_info_symbols(params: &[(String, String)]) -> Result<Option<Vec<String>>, ApiFault> {
    check_names(params, &EXCHANGE_INFO_PARAMS)?;
    match (raw(params, "symbol"), raw(params, "symbols")) {
        (Some(_), Some(_)) => Err(ApiFault::new(400, -1128, "Combination of optional parameters invalid.")),
        (Some(symbol), None) if is_legal_symbol(symbol) => Ok(Some(vec![symbol.to_owned()])),
        (Some(_), None) => Err(ApiFault::illegal_characters("symbol", SYMBOL_RANGE)),
        (None, Some(list)) => {
            let symbols: Vec<String> =
                serde_json::from_str(list).map_err(|_| ApiFault::illegal_characters("symbols", SYMBOLS_RANGE))?;
            if symbols.iter().any(|s| !is_legal_symbol(s)) {
                return Err(ApiFault::illegal_characters("symbols", SYMBOLS_RANGE));
            }
            Ok(Some(symbols))
        }
        (None, None) => Ok(None),
    }
}

/// Splits a raw query string into decoded pairs, in order (`+` is a space, `%XX` a byte).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    let bytes = spaced.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes.get(index + 1..index + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[index], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// `-1101` for a parameter sent twice, `-1104` for parameters the endpoint does not read.
fn check_names(params: &[(String, String)], known: &[&str]) -> Result<(), ApiFault> {
    for (index, (name, _)) in params.iter().enumerate() {
        if params[..index].iter().any(|(earlier, _)| earlier == name) {
            return Err(ApiFault::new(400, -1101, "Duplicate values for a parameter detected."));
        }
    }
    let read = params.iter().filter(|(name, _)| known.contains(&name.as_str())).count();
    if read == params.len() {
        return Ok(());
    }
    let msg = format!("Not all sent parameters were read; read '{read}' parameter(s) but was sent '{}'.", params.len());
    Err(ApiFault::new(400, -1104, msg))
}

fn raw<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

/// A parameter's value; an empty one counts as not sent.
fn value<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    raw(params, name).filter(|value| !value.is_empty())
}

fn millis(params: &[(String, String)], name: &str) -> Result<Option<i64>, ApiFault> {
    value(params, name)
        .map(|text| text.parse().map_err(|_| ApiFault::illegal_characters(name, "^-?[0-9]{1,20}$")))
        .transpose()
}

fn is_legal_symbol(symbol: &str) -> bool {
    (1..=20).contains(&symbol.len())
        && symbol.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        parse_query(query)
    }

    fn parse(query: &str) -> Result<KlineRequest, ApiFault> {
        KlineRequest::parse(&pairs(query), |symbol| symbol == "BTCUSDT")
    }

    fn code(query: &str) -> i64 {
        parse(query).expect_err(query).code
    }

    #[test]
    fn a_full_request_is_read_with_defaults() {
        let request = parse("symbol=BTCUSDT&interval=1m").unwrap();
        assert_eq!((request.timeframe, request.start, request.end, request.limit), (Timeframe::M1, None, None, 500));
        let request = parse("symbol=BTCUSDT&interval=1M&startTime=-5&endTime=7&limit=1000&timeZone=%2B08:00").unwrap();
        assert_eq!(
            (request.timeframe, request.start, request.end, request.limit),
            (Timeframe::Mo1, Some(-5), Some(7), 1000)
        );
        assert_eq!(request.time_zone.as_deref(), Some("+08:00"));
        assert_eq!(request.is_utc_grid(), Some(false));
        assert_eq!(parse("symbol=BTCUSDT&interval=1h&timeZone=8").unwrap().is_utc_grid(), Some(true));
        assert_eq!(parse("symbol=BTCUSDT&interval=1d&timeZone=0").unwrap().is_utc_grid(), Some(true));
        assert_eq!(parse("symbol=BTCUSDT&interval=1d&timeZone=15").unwrap().is_utc_grid(), None);
    }

    #[test]
    fn each_fault_has_binances_code_in_binances_order() {
        assert_eq!(code("symbol=BTCUSDT&symbol=BTCUSDT&interval=1m"), -1101);
        assert_eq!(code("symbol=BTCUSDT&interval=1m&foo=1"), -1104);
        assert_eq!(code("interval=1m"), -1102);
        assert_eq!(code("symbol=&interval=1m"), -1102);
        assert_eq!(code("symbol=btcusdt&interval=1m"), -1100);
        assert_eq!(code("symbol=ETHUSDT"), -1121, "an unknown symbol is found before a missing interval");
        assert_eq!(code("symbol=BTCUSDT"), -1102);
        assert_eq!(code("symbol=BTCUSDT&interval=2m"), -1120);
        assert_eq!(code("symbol=BTCUSDT&interval=1m&startTime=x"), -1100);
        assert_eq!(code("symbol=BTCUSDT&interval=1m&limit=1001"), -1130);
        assert_eq!(code("symbol=BTCUSDT&interval=1m&limit=0"), -1130);
        assert_eq!(code("symbol=BTCUSDT&interval=1m&startTime=2&endTime=1"), -1023);
        let missing = parse("symbol=BTCUSDT").unwrap_err();
        assert_eq!(missing.msg, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.");
        assert_eq!(
            missing.body(),
            r#"{"code":-1102,"msg":"Mandatory parameter 'interval' was not sent, was empty/null, or malformed."}"#
        );
    }

    #[test]
    fn time_zones_follow_binances_forms_and_range() {
        for (text, minutes) in
            [("0", 0), ("8", 480), ("+8", 480), ("-1:00", -60), ("05:45", 345), ("+14:00", 840), ("-12:00", -720)]
        {
            assert_eq!(TimeZone::parse(text), Some(TimeZone { offset_minutes: minutes }), "{text}");
        }
        for text in ["", "+", "15", "-13", "+14:01", "5:4", "05:60", "abc", "1.5"] {
            assert_eq!(TimeZone::parse(text), None, "{text}");
        }
    }

    #[test]
    fn exchange_info_takes_one_symbol_a_list_or_none() {
        assert_eq!(exchange_info_symbols(&pairs("")).unwrap(), None);
        assert_eq!(exchange_info_symbols(&pairs("symbol=BTCUSDT")).unwrap(), Some(vec!["BTCUSDT".into()]));
        let list = exchange_info_symbols(&pairs("symbols=%5B%22BTCUSDT%22,%22ETHUSDT%22%5D")).unwrap();
        assert_eq!(list, Some(vec!["BTCUSDT".into(), "ETHUSDT".into()]));
        assert_eq!(exchange_info_symbols(&pairs("symbol=A&symbols=[]")).unwrap_err().code, -1128);
        assert_eq!(exchange_info_symbols(&pairs("symbols=BTCUSDT")).unwrap_err().code, -1100);
        assert_eq!(exchange_info_symbols(&pairs("symbol=btc")).unwrap_err().code, -1100);
    }
}
