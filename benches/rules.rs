//! The subscription's candle rules: classifying a stream of updates (29 in-progress updates, then the close).

use std::hint::black_box;

use candled_actors::domain::{Candle, CandleRules, Timeframe};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const UPDATES_PER_CANDLE: i64 = 30;

fn updates(candles: i64) -> Vec<Candle> {
    (0..candles)
        .flat_map(|i| {
            (0..UPDATES_PER_CANDLE).map(move |u| Candle {
                open_time: i * 60_000,
                close_time: i * 60_000 + 59_999,
                open: 100.0,
                high: 101.0,
                low: 99.0,
                close: 100.0 + (u as f64) / 100.0,
                volume: u as f64,
                quote_volume: u as f64 * 100.0,
                trades: u as u64,
                taker_buy_base: 0.0,
                taker_buy_quote: 0.0,
                is_closed: u == UPDATES_PER_CANDLE - 1,
            })
        })
        .collect()
}

fn rules(c: &mut Criterion) {
    let stream = updates(1_000);
    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements(stream.len() as u64));
    group.bench_function("apply", |b| {
        b.iter(|| {
            let mut rules = CandleRules::new(Timeframe::M1, None);
            for candle in &stream {
                black_box(rules.apply(black_box(candle)));
            }
            rules.contiguous()
        })
    });
    group.finish();
}

criterion_group!(benches, rules);
criterion_main!(benches);
