//! Kline frame parsing: a raw WebSocket frame to a typed, validated candle, beside the floor of parsing the same
//! bytes into an untyped `serde_json::Value`.

use std::hint::black_box;

use candled_actors::domain::{Frame, parse_frame};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const RAW: &str = r#"{"e":"kline","E":1631636735735,"s":"BTCUSDT","k":{"t":1631636700000,"T":1631636999999,"s":"BTCUSDT","i":"5m","f":1054217725,"L":1054218306,"o":"46686.15000000","c":"46673.53000000","h":"46686.15000000","l":"46668.45000000","v":"12.26168000","n":582,"x":false,"q":"572337.21655380","V":"3.29093000","Q":"153606.31592330","B":"0"}}"#;

fn parse(c: &mut Criterion) {
    let combined = format!(r#"{{"stream":"btcusdt@kline_5m","data":{RAW}}}"#);
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    for (name, frame) in [("raw", RAW), ("combined", combined.as_str())] {
        group.bench_function(format!("typed_candle/{name}"), |b| {
            b.iter(|| match parse_frame(black_box(frame)) {
                Ok(Frame::Kline(event)) => event.candle.close,
                _ => unreachable!("the bench frame is a valid kline"),
            })
        });
        group.bench_function(format!("floor_serde_value/{name}"), |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(frame.as_bytes())).map(|v| v.is_object()))
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
