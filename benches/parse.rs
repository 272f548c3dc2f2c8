//! Kline frame parsing: a raw WebSocket frame to a typed, validated candle. candled's parser (`parse_frame`, the
//! specialised single pass) beside the best generic typed parsers doing the same work (`serde_json` and `sonic-rs`
//! into borrowed structs, then the same decimal parsing and candle rules), candled's own `serde_json` reference
//! (`parse_frame_generic`), and the floor of parsing the bytes into an untyped `serde_json::Value`.

use std::hint::black_box;

use candled_actors::domain::{
    Candle, Frame, RejectReason, Timeframe, parse_decimal, parse_frame, parse_frame_generic, validate,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::Deserialize;

const RAW: &str = r#"{"e":"kline","E":1631636735735,"s":"BTCUSDT","k":{"t":1631636700000,"T":1631636999999,"s":"BTCUSDT","i":"5m","f":1054217725,"L":1054218306,"o":"46686.15000000","c":"46673.53000000","h":"46686.15000000","l":"46668.45000000","v":"12.26168000","n":582,"x":false,"q":"572337.21655380","V":"3.29093000","Q":"153606.31592330","B":"0"}}"#;

/// The combined frame, typed for a generic deserializer: only what a candle needs, every string borrowed.
#[derive(Deserialize)]
struct Combined<'a> {
    #[serde(borrow)]
    data: Event<'a>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "E")]
    event_time: i64,
    #[serde(borrow)]
    k: Kline<'a>,
}

#[derive(Deserialize)]
struct Kline<'a> {
    t: i64,
    #[serde(rename = "T")]
    close_time: i64,
    s: &'a str,
    i: &'a str,
    o: &'a str,
    h: &'a str,
    l: &'a str,
    c: &'a str,
    v: &'a str,
    n: u64,
    x: bool,
    q: &'a str,
    #[serde(rename = "V")]
    taker_base: &'a str,
    #[serde(rename = "Q")]
    taker_quote: &'a str,
}

/// What `parse_frame` does after reading the fields: the interval, the decimals and the candle rules.
fn candle(event: Event<'_>) -> Result<(i64, Candle), RejectReason> {
    let k = event.k;
    let timeframe: Timeframe = k.i.parse().map_err(|_| RejectReason::UnknownInterval)?;
    let candle = Candle {
        open_time: k.t,
        close_time: k.close_time,
        open: parse_decimal(k.o)?,
        high: parse_decimal(k.h)?,
        low: parse_decimal(k.l)?,
        close: parse_decimal(k.c)?,
        volume: parse_decimal(k.v)?,
        quote_volume: parse_decimal(k.q)?,
        trades: k.n,
        taker_buy_base: parse_decimal(k.taker_base)?,
        taker_buy_quote: parse_decimal(k.taker_quote)?,
        is_closed: k.x,
    };
    validate(timeframe, &candle)?;
    black_box(k.s);
    Ok((event.event_time, candle))
}

fn close_of(frame: Result<Frame<'_>, RejectReason>) -> f64 {
    match frame {
        Ok(Frame::Kline(event)) => event.candle.close,
        _ => unreachable!("the bench frame is a valid kline"),
    }
}

fn parse(c: &mut Criterion) {
    let combined = format!(r#"{{"stream":"btcusdt@kline_5m","data":{RAW}}}"#);
    let frame = combined.as_str();
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("candled/combined", |b| b.iter(|| close_of(parse_frame(black_box(frame)))));
    group.bench_function("candled/raw", |b| b.iter(|| close_of(parse_frame(black_box(RAW)))));
    group.bench_function("serde_json_typed/combined", |b| {
        b.iter(|| serde_json::from_str::<Combined<'_>>(black_box(frame)).map(|f| candle(f.data)).map(|c| c.is_ok()))
    });
    group.bench_function("sonic_rs_typed/combined", |b| {
        b.iter(|| sonic_rs::from_str::<Combined<'_>>(black_box(frame)).map(|f| candle(f.data)).map(|c| c.is_ok()))
    });
    group.bench_function("candled_reference_serde/combined", |b| {
        b.iter(|| close_of(parse_frame_generic(black_box(frame))))
    });
    group.bench_function("floor_serde_value/combined", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(frame.as_bytes())).map(|v| v.is_object()))
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
