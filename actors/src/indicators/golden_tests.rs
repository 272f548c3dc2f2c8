//! Golden tests: every output of every indicator against TA-Lib, from generated fixtures and, when available,
//! from real Binance klines run through TA-Lib on the spot.
//!
//! A value matches when `|a − b| ≤ 1e-9 · max(|a|, |b|)`; where TA-Lib's value is exactly 0 the relative test
//! cannot work, so `|a| ≤ 1e-12` is used instead. The first emitted index and the number of values must be equal.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::{IndicatorConfig, IndicatorSet, IndicatorValue};
use crate::domain::Candle;

const GOLDEN: [(&str, &str); 6] = [
    ("random_walk", include_str!("golden/random_walk.json")),
    ("flat_runs", include_str!("golden/flat_runs.json")),
    ("zero_volume", include_str!("golden/zero_volume.json")),
    ("extreme_moves", include_str!("golden/extreme_moves.json")),
    ("large_prices", include_str!("golden/large_prices.json")),
    ("tiny_prices", include_str!("golden/tiny_prices.json")),
];

const REAL_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/klines/binance-rest-15m");
const REFERENCE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/indicators/golden/talib_reference.py");

fn close_enough(ours: f64, talib: f64) -> bool {
    if talib == 0.0 { ours.abs() <= 1e-12 } else { (ours - talib).abs() <= 1e-9 * ours.abs().max(talib.abs()) }
}

fn candle(open_time: i64, o: f64, h: f64, l: f64, c: f64, v: f64) -> Candle {
    Candle {
        open_time,
        close_time: open_time + 899_999,
        open: o,
        high: h,
        low: l,
        close: c,
        volume: v,
        quote_volume: 0.0,
        trades: 0,
        taker_buy_base: 0.0,
        taker_buy_quote: 0.0,
        is_closed: true,
    }
}

fn expected_outputs(outputs: &Value) -> BTreeMap<String, Vec<Option<f64>>> {
    let Some(map) = outputs.as_object() else { panic!("outputs is not an object") };
    map.iter()
        .map(|(name, values)| {
            let values = values.as_array().map(|a| a.iter().map(Value::as_f64).collect()).unwrap_or_default();
            (name.clone(), values)
        })
        .collect()
}

/// Feeds `candles`, checking `provisional` against `update` on every candle, and returns per output the value
/// emitted at each index.
fn run(set: &mut IndicatorSet, candles: &[Candle]) -> Vec<Vec<Option<f64>>> {
    let mut per_output = vec![vec![None; candles.len()]; set.names().len()];
    let (mut out, mut peeked) = (Vec::new(), Vec::new());
    for (i, c) in candles.iter().enumerate() {
        out.clear();
        peeked.clear();
        set.provisional(c, &mut peeked);
        set.update(c, &mut out);
        assert_eq!(peeked, out, "provisional differs from update at index {i}");
        for &IndicatorValue { output, value } in &out {
            let slot = &mut per_output[usize::from(output)][i];
            assert!(slot.is_none(), "output {output} emitted twice at index {i}");
            *slot = Some(value);
        }
    }
    per_output
}

/// Compares every output; returns the number of values compared, or the failures.
fn compare(
    label: &str,
    config: &IndicatorConfig,
    candles: &[Candle],
    expected: &BTreeMap<String, Vec<Option<f64>>>,
) -> Result<usize, Vec<String>> {
    let mut set = IndicatorSet::new(config);
    let got = run(&mut set, candles);
    set.reset();
    assert_eq!(run(&mut set, candles), got, "{label}: replay after reset differs");

    let mut failures = Vec::new();
    let mut compared = 0;
    assert_eq!(set.names().len(), expected.len(), "{label}: output count");
    for (name, ours) in set.names().iter().zip(&got) {
        let Some(theirs) = expected.get(name) else {
            failures.push(format!("{label}: {name} has no TA-Lib reference"));
            continue;
        };
        let first = |v: &[Option<f64>]| v.iter().position(Option::is_some);
        let count = |v: &[Option<f64>]| v.iter().filter(|x| x.is_some()).count();
        if first(ours) != first(theirs) || count(ours) != count(theirs) {
            failures.push(format!(
                "{label}: {name}: first/count ours {:?}/{} talib {:?}/{}",
                first(ours),
                count(ours),
                first(theirs),
                count(theirs)
            ));
            continue;
        }
        for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
            match (a, b) {
                (Some(a), Some(b)) => {
                    compared += 1;
                    if !close_enough(*a, *b) {
                        failures.push(format!("{label}: {name}[{i}]: ours {a:e} talib {b:e}"));
                    }
                }
                (None, None) => {}
                _ => failures.push(format!("{label}: {name}[{i}]: ours {a:?} talib {b:?}")),
            }
        }
    }
    if failures.is_empty() { Ok(compared) } else { Err(failures) }
}

fn report(results: Vec<Result<usize, Vec<String>>>) -> usize {
    let failures: Vec<String> = results.iter().filter_map(|r| r.as_ref().err()).flatten().cloned().collect();
    if !failures.is_empty() {
        let shown: Vec<&str> = failures.iter().take(40).map(String::as_str).collect();
        panic!("{} mismatches, first ones:\n{}", failures.len(), shown.join("\n"));
    }
    results.into_iter().filter_map(Result::ok).sum()
}

#[test]
fn generated_series_match_talib() {
    let mut results = Vec::new();
    for (name, text) in GOLDEN {
        let doc: Value = serde_json::from_str(text).expect("fixture parses");
        let config: IndicatorConfig = serde_json::from_value(doc["config"].clone()).expect("fixture config parses");
        config.validate().expect("fixture config is valid");
        let candles: Vec<Candle> = doc["candles"]
            .as_array()
            .expect("candles")
            .iter()
            .map(|r| {
                let f = |i: usize| r[i].as_f64().expect("number");
                candle(r[0].as_i64().expect("open time"), f(1), f(2), f(3), f(4), f(5))
            })
            .collect();
        results.push(compare(name, &config, &candles, &expected_outputs(&doc["outputs"])));
    }
    let compared = report(results);
    println!("golden: {compared} values compared against TA-Lib");
    assert!(compared > 40_000);
}

fn binance_rows(path: &Path) -> Vec<Candle> {
    let text = std::fs::read_to_string(path).expect("fixture readable");
    let rows: Vec<Value> = serde_json::from_str(&text).expect("fixture parses");
    let num = |v: &Value| v.as_str().and_then(|s| s.parse::<f64>().ok()).expect("decimal string");
    rows.iter()
        .map(|r| candle(r[0].as_i64().expect("open time"), num(&r[1]), num(&r[2]), num(&r[3]), num(&r[4]), num(&r[5])))
        .collect()
}

#[test]
fn real_binance_klines_match_talib() {
    let dir = Path::new(REAL_FIXTURES);
    if !dir.is_dir() {
        println!("skipped real_binance_klines_match_talib: {REAL_FIXTURES} does not exist");
        return;
    }
    let talib = Command::new("python3").args(["-c", "import talib"]).output();
    if !talib.as_ref().is_ok_and(|o| o.status.success()) {
        println!("skipped real_binance_klines_match_talib: `python3 -c \"import talib\"` failed");
        return;
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("fixture dir readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut results = Vec::new();
    for file in &files {
        let output = Command::new("python3").arg(REFERENCE_SCRIPT).arg(file).output().expect("python3 runs");
        assert!(output.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&output.stderr));
        let doc: Value = serde_json::from_slice(&output.stdout).expect("reference output parses");
        let config: IndicatorConfig = serde_json::from_value(doc["config"].clone()).expect("config parses");
        let label = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        results.push(compare(&label, &config, &binance_rows(file), &expected_outputs(&doc["outputs"])));
    }
    let compared = report(results);
    println!("real klines: {} files, {compared} values compared against TA-Lib", files.len());
}

#[test]
fn odd_candles_are_skipped_without_state_change() {
    let mut set = IndicatorSet::new(&IndicatorConfig { obv: true, vwap: true, ..IndicatorConfig::default() });
    let good: Vec<Candle> = (0..60).map(|i| candle(i * 900_000, 10.0, 11.0, 9.0, 10.0 + (i % 7) as f64, 5.0)).collect();
    let mut reference = set.clone();
    let mut out = Vec::new();
    for (i, c) in good.iter().enumerate() {
        set.update(c, &mut out);
        if i == 30 {
            // NaN, infinite and out-of-order candles are ignored.
            let before = out.len();
            set.update(&Candle { close: f64::NAN, ..*c }, &mut out);
            set.update(&Candle { open_time: c.open_time + 1, volume: f64::INFINITY, ..*c }, &mut out);
            set.update(c, &mut out);
            set.provisional(&Candle { high: f64::NAN, ..*c }, &mut out);
            assert_eq!(out.len(), before);
        }
    }
    let mut expected = Vec::new();
    for c in &good {
        reference.update(c, &mut expected);
    }
    assert_eq!(out, expected);
}

#[test]
fn names_follow_config_order() {
    let set = IndicatorSet::new(&IndicatorConfig::default());
    let want = [
        "sma_20",
        "ema_12",
        "ema_26",
        "rsi_14",
        "macd_12_26_9",
        "macd_12_26_9_signal",
        "macd_12_26_9_hist",
        "bb_20_2_upper",
        "bb_20_2_middle",
        "bb_20_2_lower",
        "atr_14",
    ];
    assert_eq!(set.names(), want);
    // Invalid entries are left out instead of panicking.
    let bad = IndicatorConfig { rsi: vec![0, 14, 14], bollinger: vec![(20, f64::NAN)], ..IndicatorConfig::default() };
    let set = IndicatorSet::new(&bad);
    assert_eq!(set.names().iter().filter(|n| n.starts_with("rsi")).count(), 1);
    assert!(!set.names().iter().any(|n| n.starts_with("bb")));
}
