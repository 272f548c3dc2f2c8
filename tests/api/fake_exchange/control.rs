//! Parsing of WebSocket URLs, stream names and live control messages (SUBSCRIBE and friends).

use serde_json::{Value, json};

use super::market::Interval;

const MAX_STRING_ID_CHARS: usize = 36;

/// A parsed `<symbol>@kline_<interval>` stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct StreamName {
    pub(super) name: String,
    pub(super) symbol: String,
    pub(super) interval: Interval,
}

pub(super) fn parse_stream(name: &str) -> Result<StreamName, String> {
    let invalid = || format!("invalid stream name `{name}`");
    let (symbol, kind) = name.split_once('@').ok_or_else(invalid)?;
    let valid_symbol = !symbol.is_empty()
        && symbol.len() <= 20
        && symbol.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let interval_name = kind.strip_prefix("kline_").filter(|_| valid_symbol).ok_or_else(invalid)?;
    let interval = Interval::parse(interval_name).ok_or_else(invalid)?;
    Ok(StreamName { name: name.to_string(), symbol: symbol.to_ascii_uppercase(), interval })
}

/// What the handshake URL asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Route {
    pub(super) combined: bool,
    pub(super) streams: Vec<StreamName>,
}

/// Parses `/ws`, `/ws/<s1>/<s2>`, `/stream` and `/stream?streams=<s1>/<s2>`; `Err` holds an HTTP 400 reason.
pub(super) fn parse_route(path: &str, query: Option<&str>, max_streams: usize) -> Result<Route, String> {
    let (combined, names): (bool, Vec<&str>) = match path {
        "/ws" | "/ws/" => (false, Vec::new()),
        "/stream" | "/stream/" => {
            let streams = query.into_iter().flat_map(|q| q.split('&')).find_map(|pair| pair.strip_prefix("streams="));
            (true, streams.map(|s| s.split('/').filter(|s| !s.is_empty()).collect()).unwrap_or_default())
        }
        _ => match path.strip_prefix("/ws/") {
            Some(rest) => (false, rest.split('/').filter(|s| !s.is_empty()).collect()),
            None => return Err(format!("unknown path {path}")),
        },
    };
    let mut streams: Vec<StreamName> = Vec::new();
    for name in names {
        let stream = parse_stream(name)?;
        if !streams.contains(&stream) {
            streams.push(stream);
        }
    }
    if streams.len() > max_streams {
        return Err(format!("too many streams: {} > {max_streams}", streams.len()));
    }
    Ok(Route { combined, streams })
}

/// A valid live control request.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Request {
    Subscribe(Vec<StreamName>),
    Unsubscribe(Vec<StreamName>),
    ListSubscriptions,
    SetCombined(bool),
    GetCombined,
}

/// An error answer: Binance error code and message.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RequestError {
    pub(super) code: i64,
    pub(super) msg: String,
}

impl RequestError {
    fn invalid(detail: impl std::fmt::Display) -> RequestError {
        RequestError { code: 2, msg: format!("Invalid request: {detail}") }
    }
}

/// The method name of a request as sent, for counting (even when the request is invalid).
pub(super) fn method_of(text: &str) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    value.get("method")?.as_str().map(str::to_string)
}

/// Parses a control message into its id and request; the id is `null` when it could not be read.
pub(super) fn parse_request(text: &str) -> (Value, Result<Request, RequestError>) {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => return (Value::Null, Err(RequestError { code: 3, msg: format!("Invalid JSON: {error}") })),
    };
    let Some(object) = value.as_object() else {
        return (Value::Null, Err(RequestError::invalid("expected a JSON object")));
    };
    let id = object.get("id").cloned().unwrap_or(Value::Null);
    if let Some(unknown) = object.keys().find(|key| !["method", "params", "id"].contains(&key.as_str())) {
        return (Value::Null, Err(RequestError::invalid(format!("unknown field `{unknown}`"))));
    }
    let id_valid = match &id {
        Value::Null => object.contains_key("id"),
        Value::Number(number) => number.is_u64(),
        Value::String(text) => text.chars().count() <= MAX_STRING_ID_CHARS,
        _ => false,
    };
    if !id_valid {
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
    match method {
        "SUBSCRIBE" => stream_params(params).map(Request::Subscribe),
        "UNSUBSCRIBE" => stream_params(params).map(Request::Unsubscribe),
        "LIST_SUBSCRIPTIONS" => Ok(Request::ListSubscriptions),
        "SET_PROPERTY" => match params {
            [Value::String(name), value] if name == "combined" => match value {
                Value::Bool(combined) => Ok(Request::SetCombined(*combined)),
                _ => Err(RequestError { code: 1, msg: "Invalid value type: expected Boolean".to_string() }),
            },
            [Value::String(_), _] => Err(RequestError { code: 0, msg: "Unknown property".to_string() }),
            _ => Err(RequestError::invalid("SET_PROPERTY expects [name, value]")),
        },
        "GET_PROPERTY" => match params {
            [Value::String(name)] if name == "combined" => Ok(Request::GetCombined),
            [Value::String(_)] => Err(RequestError { code: 0, msg: "Unknown property".to_string() }),
            _ => Err(RequestError::invalid("GET_PROPERTY expects [name]")),
        },
        other => Err(RequestError::invalid(format!(
            "unknown variant `{other}`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, \
             `SET_PROPERTY`, `GET_PROPERTY`"
        ))),
    }
}

fn stream_params(params: &[Value]) -> Result<Vec<StreamName>, RequestError> {
    if params.is_empty() {
        return Err(RequestError::invalid("`params` must list at least one stream"));
    }
    params
        .iter()
        .map(|param| match param {
            Value::String(name) => parse_stream(name).map_err(RequestError::invalid),
            _ => Err(RequestError::invalid("stream names must be strings")),
        })
        .collect()
}

pub(super) fn result_response(id: &Value, result: Value) -> String {
    json!({ "result": result, "id": id }).to_string()
}

pub(super) fn error_response(id: &Value, error: &RequestError) -> String {
    json!({ "error": { "code": error.code, "msg": error.msg }, "id": id }).to_string()
}
