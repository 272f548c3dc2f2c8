//! Per-candle cost of `IndicatorSet::update` with the default indicator set.

use std::hint::black_box;

use candled_actors::domain::Candle;
use candled_actors::indicators::{IndicatorConfig, IndicatorSet};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A deterministic random walk of closed 1m candles.
fn candles(n: usize) -> Vec<Candle> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut close = 50_000.0;
    (0..n)
        .map(|i| {
            let open = close;
            close = open * (1.0 + (next() - 0.5) * 0.004);
            let high = open.max(close) * (1.0 + next() * 0.001);
            let low = open.min(close) * (1.0 - next() * 0.001);
            let volume = 1.0 + next() * 100.0;
            let open_time = 1_700_000_000_000 + i as i64 * 60_000;
            Candle {
                open_time,
                close_time: open_time + 59_999,
                open,
                high,
                low,
                close,
                volume,
                quote_volume: volume * close,
                trades: 100,
                taker_buy_base: volume / 2.0,
                taker_buy_quote: volume * close / 2.0,
                is_closed: true,
            }
        })
        .collect()
}

fn bench_update(c: &mut Criterion) {
    const N: usize = 10_000;
    let data = candles(N);
    let config = IndicatorConfig::default();
    let mut group = c.benchmark_group("indicators");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("update_default_set", |b| {
        let mut set = IndicatorSet::new(&config);
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            set.reset();
            for candle in &data {
                out.clear();
                set.update(black_box(candle), &mut out);
            }
            black_box(out.len())
        });
    });
    group.finish();
}

criterion_group!(benches, bench_update);
criterion_main!(benches);
