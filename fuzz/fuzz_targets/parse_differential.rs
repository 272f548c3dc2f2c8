//! Differential fuzzing of the kline frame parser: on any text, the specialised parser (`parse_frame`) must give
//! exactly what the `serde_json` reference (`parse_frame_generic`) gives, and neither may panic. Seeded with kline
//! events in Binance's own layout (see `seed_corpus.py`); libFuzzer mutates them byte by byte.

#![no_main]

use candled_actors::domain::{parse_frame, parse_frame_generic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    assert_eq!(parse_frame(text), parse_frame_generic(text), "the parsers disagree on {text:?}");
});
