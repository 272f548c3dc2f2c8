//! Binance's WebSocket market-stream protocol as plain code: the connect paths (`/ws/<streams>`, `/ws`,
//! `/stream?streams=`), stream names, the live control requests and their answers, the 5-messages-per-second limit
//! and the ping/pong deadline.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use candled_actors::domain::{StreamKey, Timeframe};
use serde_json::Value;

/// Streams one connection may carry.
pub const MAX_STREAMS: usize = 1024;
/// Incoming messages (text, binary, ping, pong) one connection may send per second; one more closes it.
pub const MAX_MESSAGES_PER_SECOND: usize = 5;
/// The longest string id a request may carry.
const MAX_STRING_ID_CHARS: usize = 36;

/// The stream named `name` (`btcusdt@kline_1m`): a kline stream of an alphanumeric symbol and a known interval.
pub fn parse_stream(name: &str) -> Result<StreamKey, String> {
    let invalid = || format!("invalid stream name `{name}`");
    let (symbol, kind) = name.split_once('@').ok_or_else(invalid)?;
    let symbol_ok = !symbol.is_empty() && symbol.len() <= 20 && symbol.bytes().all(|b| b.is_ascii_alphanumeric());
    let interval = kind.strip_prefix("kline_").filter(|_| symbol_ok).ok_or_else(invalid)?;
    let timeframe: Timeframe = interval.parse().map_err(|_| invalid())?;
    Ok(StreamKey::new(symbol.to_ascii_uppercase(), timeframe))
}

/// What a connect URL asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Events wrapped as `{"stream":..,"data":..}` (`/stream`), or raw (`/ws`).
    pub combined: bool,
    pub streams: Vec<StreamKey>,
}

/// Why a connect URL is refused (an HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("{0}")]
    BadStream(String),
    #[error("too many streams: {0} > {MAX_STREAMS}")]
    TooManyStreams(usize),
}

/// Parses the streams of `/ws/<s1>/<s2>` (`raw_path` is what follows `/ws/`) or of `/stream?streams=<s1>/<s2>`.
pub fn route(combined: bool, streams: &str) -> Result<Route, RouteError> {
    let mut keys: Vec<StreamKey> = Vec::new();
    for name in streams.split('/').filter(|s| !s.is_empty()) {
        let key = parse_stream(name).map_err(RouteError::BadStream)?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if keys.len() > MAX_STREAMS {
        return Err(RouteError::TooManyStreams(keys.len()));
    }
    Ok(Route { combined, streams: keys })
}

/// A valid control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Subscribe(Vec<StreamKey>),
    Unsubscribe(Vec<StreamKey>),
    ListSubscriptions,
    SetCombined(bool),
    GetCombined,
}

/// An error answer: Binance's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub code: i64,
    pub msg: String,
}

impl RequestError {
    fn invalid(detail: impl std::fmt::Display) -> Self {
        Self { code: 2, msg: format!("Invalid request: {detail}") }
    }

    /// A SUBSCRIBE that would take the connection past [`MAX_STREAMS`].
    pub fn too_many_subscriptions() -> Self {
        Self { code: 4, msg: "Too many subscriptions".to_owned() }
    }
}

/// A control message's id (when it could be read) and request.
pub fn parse_request(text: &str) -> (Value, Result<Request, RequestError>) {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => return (Value::Null, Err(RequestError { code: 3, msg: format!("Invalid JSON: {error}") })),
    };
    let Some(object) = value.as_object() else {
        return (Value::Null, Err(RequestError::invalid("expected a JSON object")));
    };
    if let Some(unknown) = object.keys().find(|key| !matches!(key.as_str(), "method" | "params" | "id")) {
        return (Value::Null, Err(RequestError::invalid(format!("unknown field `{unknown}`"))));
    }
    let id = object.get("id").cloned().unwrap_or(Value::Null);
    let id_ok = match &id {
        Value::Null => object.contains_key("id"),
        Value::Number(number) => number.is_u64(),
        Value::String(text) => text.chars().count() <= MAX_STRING_ID_CHARS,
        _ => false,
    };
    if !id_ok {
        let detail = "request ID must be an unsigned integer, a string of at most 36 characters or null";
        return (Value::Null, Err(RequestError::invalid(detail)));
    }
    let request = parse_method(object.get("method"), object.get("params"));
    (id, request)
}

fn parse_method(method: Option<&Value>, params: Option<&Value>) -> Result<Request, RequestError> {
    let method = match method {
        Some(Value::String(method)) => method.as_str(),
        Some(_) => return Err(RequestError::invalid("`method` must be a string")),
        None => return Err(RequestError::invalid("missing field `method`")),
    };
    let params = match params {
        Some(Value::Array(params)) => params.as_slice(),
        Some(Value::Null) | None => &[],
        Some(_) => return Err(RequestError::invalid("`params` must be an array")),
    };
    let unknown_property = || RequestError { code: 0, msg: "Unknown property".to_owned() };
    match method {
        "SUBSCRIBE" => stream_params(params).map(Request::Subscribe),
        "UNSUBSCRIBE" => stream_params(params).map(Request::Unsubscribe),
        "LIST_SUBSCRIPTIONS" => Ok(Request::ListSubscriptions),
        "SET_PROPERTY" => match params {
            [Value::String(name), Value::Bool(combined)] if name == "combined" => Ok(Request::SetCombined(*combined)),
            [Value::String(name), _] if name == "combined" => {
                Err(RequestError { code: 1, msg: "Invalid value type: expected Boolean".to_owned() })
            }
            [Value::String(_), _] => Err(unknown_property()),
            _ => Err(RequestError::invalid("SET_PROPERTY expects [name, value]")),
        },
        "GET_PROPERTY" => match params {
            [Value::String(name)] if name == "combined" => Ok(Request::GetCombined),
            [Value::String(_)] => Err(unknown_property()),
            _ => Err(RequestError::invalid("GET_PROPERTY expects [name]")),
        },
        other => Err(RequestError::invalid(format!(
            "unknown variant `{other}`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, \
             `SET_PROPERTY`, `GET_PROPERTY`"
        ))),
    }
}

fn stream_params(params: &[Value]) -> Result<Vec<StreamKey>, RequestError> {
    if params.is_empty() {
        return Err(RequestError::invalid("`params` must list at least one stream"));
    }
    let mut keys: Vec<StreamKey> = Vec::with_capacity(params.len());
    for param in params {
        let Value::String(name) = param else { return Err(RequestError::invalid("stream names must be strings")) };
        let key = parse_stream(name).map_err(RequestError::invalid)?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// `{"result":..,"id":..}`, keys in Binance's order.
pub fn result_answer(id: &Value, result: Value) -> String {
    format!(r#"{{"result":{result},"id":{id}}}"#)
}

/// `{"error":{"code":..,"msg":..},"id":..}`, keys in Binance's order.
pub fn error_answer(id: &Value, error: &RequestError) -> String {
    let msg = Value::from(error.msg.as_str());
    format!(r#"{{"error":{{"code":{},"msg":{msg}}},"id":{id}}}"#, error.code)
}

/// The incoming-message limit over a sliding second.
#[derive(Debug, Default)]
pub struct MessageRate {
    recent: VecDeque<Instant>,
}

impl MessageRate {
    /// Counts a message arriving at `now`; `false` when it is one too many (the connection must close).
    pub fn admit(&mut self, now: Instant) -> bool {
        while self.recent.front().is_some_and(|&at| now.duration_since(at) >= Duration::from_secs(1)) {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.recent.len() <= MAX_MESSAGES_PER_SECOND
    }
}

/// What the heartbeat asks for at a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Beat {
    /// Send a ping with this payload.
    Ping(Vec<u8>),
    Nothing,
    /// A ping went unanswered past the deadline: close the connection.
    Expired,
}

/// Server pings every `interval`; a ping unanswered for `deadline` ends the connection (Binance: 20 s and 1 min).
#[derive(Debug)]
pub struct Heartbeat {
    interval: Duration,
    deadline: Duration,
    last_ping: Instant,
    /// The oldest unanswered ping: its payload and when it was sent.
    awaiting: Option<(Vec<u8>, Instant)>,
    sent: u64,
}

impl Heartbeat {
    pub fn new(interval: Duration, deadline: Duration, now: Instant) -> Self {
        Self { interval, deadline, last_ping: now, awaiting: None, sent: 0 }
    }

    pub fn tick(&mut self, now: Instant) -> Beat {
        if let Some((_, sent)) = &self.awaiting
            && now.duration_since(*sent) >= self.deadline
        {
            return Beat::Expired;
        }
        if now.duration_since(self.last_ping) < self.interval {
            return Beat::Nothing;
        }
        self.last_ping = now;
        self.sent += 1;
        let payload = self.sent.to_string().into_bytes();
        if self.awaiting.is_none() {
            self.awaiting = Some((payload.clone(), now));
        }
        Beat::Ping(payload)
    }

    /// A pong arrived: any pong proves the client alive (clients answer the latest ping, or send unsolicited ones).
    pub fn pong(&mut self) {
        self.awaiting = None;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(symbol: &str, timeframe: Timeframe) -> StreamKey {
        StreamKey::new(symbol, timeframe)
    }

    #[test]
    fn connect_paths_name_their_streams() {
        // TC0: several raw streams, one repeated.
        assert_eq!(
            route(false, "btcusdt@kline_1m/ETHUSDT@kline_1M/btcusdt@kline_1m"),
            Ok(Route { combined: false, streams: vec![key("BTCUSDT", Timeframe::M1), key("ETHUSDT", Timeframe::Mo1)] })
        );
        // TC1: none (`/ws`, then SUBSCRIBE).
        assert_eq!(route(true, ""), Ok(Route { combined: true, streams: vec![] }));
        // TC2: not a kline stream, an unknown interval, a bad symbol.
        for bad in ["btcusdt@trade", "btcusdt@kline_7m", "btc-usdt@kline_1m", "@kline_1m"] {
            assert!(matches!(route(false, bad), Err(RouteError::BadStream(_))), "{bad}");
        }
        // TC3: one stream too many.
        let names: Vec<String> = (0..=MAX_STREAMS).map(|n| format!("s{n}@kline_1m")).collect();
        assert_eq!(route(true, &names.join("/")), Err(RouteError::TooManyStreams(MAX_STREAMS + 1)));
    }

    #[test]
    fn control_requests_parse_or_get_binances_error() {
        let parse = |text: &str| parse_request(text);
        let btc = key("BTCUSDT", Timeframe::M1);
        // TC0: the five requests, with int, string and null ids.
        assert_eq!(
            parse(r#"{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":1}"#),
            (json!(1), Ok(Request::Subscribe(vec![btc.clone()])))
        );
        assert_eq!(
            parse(r#"{"method":"UNSUBSCRIBE","params":["btcusdt@kline_1m"],"id":"a"}"#),
            (json!("a"), Ok(Request::Unsubscribe(vec![btc])))
        );
        assert_eq!(
            parse(r#"{"method":"LIST_SUBSCRIPTIONS","id":null}"#),
            (Value::Null, Ok(Request::ListSubscriptions))
        );
        assert_eq!(
            parse(r#"{"method":"SET_PROPERTY","params":["combined",true],"id":2}"#).1,
            Ok(Request::SetCombined(true))
        );
        assert_eq!(parse(r#"{"method":"GET_PROPERTY","params":["combined"],"id":3}"#).1, Ok(Request::GetCombined));
        // TC1: the error codes.
        let code = |text: &str| parse(text).1.map_err(|e| e.code);
        assert_eq!(code("{"), Err(3));
        assert_eq!(code(r#"{"method":"SET_PROPERTY","params":["other",true],"id":1}"#), Err(0));
        assert_eq!(code(r#"{"method":"SET_PROPERTY","params":["combined","yes"],"id":1}"#), Err(1));
        assert_eq!(code(r#"{"method":"FOO","id":1}"#), Err(2));
        assert_eq!(code(r#"{"method":"SUBSCRIBE","params":["nope"],"id":1}"#), Err(2));
        assert_eq!(code(r#"{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":-1}"#), Err(2));
        assert_eq!(code(r#"{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"]}"#), Err(2), "an id is required");
        // TC2: the answers' shapes.
        assert_eq!(result_answer(&json!(7), Value::Null), r#"{"result":null,"id":7}"#);
        let error = RequestError::too_many_subscriptions();
        assert_eq!(error_answer(&json!(7), &error), r#"{"error":{"code":4,"msg":"Too many subscriptions"},"id":7}"#);
    }

    #[test]
    fn the_sixth_message_within_a_second_is_one_too_many() {
        let start = Instant::now();
        let mut rate = MessageRate::default();
        for n in 0..MAX_MESSAGES_PER_SECOND {
            assert!(rate.admit(start + Duration::from_millis(n as u64 * 10)), "message {n}");
        }
        // TC0: a second after the first, it has left the window.
        assert!(rate.admit(start + Duration::from_millis(1000)));
        // TC1: within the window, one too many.
        assert!(!rate.admit(start + Duration::from_millis(1001)));
    }

    #[test]
    fn a_ping_unanswered_past_the_deadline_expires_the_connection() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut beat = Heartbeat::new(Duration::from_millis(100), Duration::from_millis(250), start);
        assert_eq!(beat.tick(at(50)), Beat::Nothing);
        assert_eq!(beat.tick(at(100)), Beat::Ping(b"1".to_vec()));
        // TC0: answered: the next pings go on.
        beat.pong();
        assert_eq!(beat.tick(at(200)), Beat::Ping(b"2".to_vec()));
        assert_eq!(beat.tick(at(300)), Beat::Ping(b"3".to_vec()));
        // TC1: the deadline counts from the oldest unanswered ping.
        assert_eq!(beat.tick(at(400)), Beat::Ping(b"4".to_vec()));
        assert_eq!(beat.tick(at(449)), Beat::Nothing);
        assert_eq!(beat.tick(at(450)), Beat::Expired);
    }
}
