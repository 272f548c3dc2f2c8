//! The specialised kline frame parser: one pass over the bytes of a kline event as Binance sends it, with no
//! intermediate tree and no generic deserializer. It answers only for frames it fully understands and hands every
//! other frame (whitespace, escapes, control frames, odd numbers, duplicate or missing keys) back to the generic
//! `serde_json` parser, which stays the reference: on every input both give the same result (checked by the
//! differential tests below and by the `parse_differential` fuzz target).

use std::borrow::Cow;

use crate::domain::kline::{KlineEvent, RejectReason, parse_decimal, validate};
use crate::domain::{Candle, Frame, Timeframe};

/// Parses a kline event, raw (`{"e":"kline",...}`) or combined (`{"stream":..,"data":{..}}`). `None` means "not a
/// frame this parser understands": the caller must ask the reference parser.
pub(crate) fn scan_kline_frame(text: &str) -> Option<Result<Frame<'_>, RejectReason>> {
    let mut scanner = Scanner { text, at: 0 };
    let event = scanner.frame()?;
    (scanner.at == text.len()).then(|| event.into_frame())
}

/// The fields of one event object, as found so far.
#[derive(Default)]
struct EventFields<'a> {
    is_kline: bool,
    event_time: Option<i64>,
    k: Option<KlineFields<'a>>,
}

/// A complete kline event, its decimals still as text.
struct KlineEventText<'a> {
    event_time: i64,
    open_time: i64,
    close_time: i64,
    symbol: &'a str,
    interval: &'a str,
    /// o, h, l, c, v, q, V, Q: the order in which the reference parser reports a bad decimal.
    decimals: [&'a str; 8],
    trades: u64,
    is_closed: bool,
}

/// The `k` object's fields, as found so far.
#[derive(Default)]
struct KlineFields<'a> {
    open_time: Option<i64>,
    close_time: Option<i64>,
    symbol: Option<&'a str>,
    interval: Option<&'a str>,
    decimals: [Option<&'a str>; 8],
    trades: Option<u64>,
    is_closed: Option<bool>,
}

impl<'a> EventFields<'a> {
    /// The event, if it is a kline event with every field the reference parser requires.
    fn complete(self) -> Option<KlineEventText<'a>> {
        let k = self.k.filter(|_| self.is_kline)?;
        let [o, h, l, c, v, q, taker_base, taker_quote] = k.decimals;
        Some(KlineEventText {
            event_time: self.event_time?,
            open_time: k.open_time?,
            close_time: k.close_time?,
            symbol: k.symbol?,
            interval: k.interval?,
            decimals: [o?, h?, l?, c?, v?, q?, taker_base?, taker_quote?],
            trades: k.trades?,
            is_closed: k.is_closed?,
        })
    }
}

impl<'a> KlineEventText<'a> {
    /// Checks in the reference parser's order: the interval, each decimal, then the candle rules.
    fn into_frame(self) -> Result<Frame<'a>, RejectReason> {
        let timeframe: Timeframe = self.interval.parse().map_err(|_| RejectReason::UnknownInterval)?;
        let mut values = [0.0; 8];
        for (value, text) in values.iter_mut().zip(self.decimals) {
            *value = fast_decimal(text)?;
        }
        let [open, high, low, close, volume, quote_volume, taker_buy_base, taker_buy_quote] = values;
        let candle = Candle {
            open_time: self.open_time,
            close_time: self.close_time,
            open,
            high,
            low,
            close,
            volume,
            quote_volume,
            trades: self.trades,
            taker_buy_base,
            taker_buy_quote,
            is_closed: self.is_closed,
        };
        validate(timeframe, &candle)?;
        let symbol = Cow::Borrowed(self.symbol);
        Ok(Frame::Kline(KlineEvent { symbol, timeframe, event_time: self.event_time, candle }))
    }
}

/// A cursor over the frame. Every method returns `None` for anything outside the compact form Binance sends.
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

/// Sets `slot` once: a key seen twice is left to the reference parser (a duplicate field is its error).
fn set_once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn eat_literal(&mut self, literal: &str) -> Option<()> {
        self.text.as_bytes()[self.at..].starts_with(literal.as_bytes()).then(|| self.at += literal.len())
    }

    /// Calls `field` for each key of an object; the cursor is on its `{`.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The top level: the combined form's `stream` and `data`, or the raw event's own keys, never both.
    fn frame(&mut self) -> Option<KlineEventText<'a>> {
        let (mut raw, mut has_raw_keys, mut has_stream, mut data) = (EventFields::default(), false, false, None);
        self.object(|scanner, key| match key {
            "stream" if !has_stream => {
                has_stream = true;
                scanner.string().map(drop)
            }
            "data" => set_once(&mut data, scanner.event()?),
            _ => {
                has_raw_keys = true;
                scanner.event_field(&mut raw, key)
            }
        })?;
        match (data, has_raw_keys, has_stream) {
            (Some(data), false, _) => data.complete(),
            (None, _, false) => raw.complete(),
            _ => None,
        }
    }

    fn event(&mut self) -> Option<EventFields<'a>> {
        let mut event = EventFields::default();
        self.object(|scanner, key| scanner.event_field(&mut event, key))?;
        Some(event)
    }

    fn event_field(&mut self, event: &mut EventFields<'a>, key: &str) -> Option<()> {
        match key {
            "e" => {
                let kind = self.string()?;
                (kind == "kline" && !event.is_kline).then(|| event.is_kline = true)
            }
            "E" => set_once(&mut event.event_time, self.integer()?),
            "k" => {
                let mut k = KlineFields::default();
                self.object(|scanner, key| scanner.kline_field(&mut k, key))?;
                set_once(&mut event.k, k)
            }
            // Keys the reference parser does not read (`s` at this level, and any other) are skipped.
            "result" | "id" | "error" | "data" | "stream" => None,
            _ => self.skip_scalar(),
        }
    }

    fn kline_field(&mut self, k: &mut KlineFields<'a>, key: &str) -> Option<()> {
        let decimal = match key {
            "t" => return set_once(&mut k.open_time, self.integer()?),
            "T" => return set_once(&mut k.close_time, self.integer()?),
            "s" => return set_once(&mut k.symbol, self.string()?),
            "i" => return set_once(&mut k.interval, self.string()?),
            "n" => return set_once(&mut k.trades, self.unsigned()?),
            "x" => return set_once(&mut k.is_closed, self.boolean()?),
            "o" => 0,
            "h" => 1,
            "l" => 2,
            "c" => 3,
            "v" => 4,
            "q" => 5,
            "V" => 6,
            "Q" => 7,
            _ => return self.skip_scalar(),
        };
        set_once(&mut k.decimals[decimal], self.string()?)
    }

    /// A string with no escapes and no control characters, borrowed from the frame.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let bytes = self.text.as_bytes();
        while let Some(&byte) = bytes.get(self.at) {
            match byte {
                b'"' => {
                    self.at += 1;
                    return Some(&self.text[start..self.at - 1]);
                }
                b'\\' | 0..0x20 => return None,
                _ => self.at += 1,
            }
        }
        None
    }

    /// Up to 18 digits, with no sign, no leading zero, no fraction and no exponent: always an `i64`.
    fn digits(&mut self) -> Option<u64> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut value = 0u64;
        while let Some(&byte @ b'0'..=b'9') = bytes.get(self.at) {
            value = value * 10 + u64::from(byte - b'0');
            self.at += 1;
            if self.at - start > 18 {
                return None;
            }
        }
        let length = self.at - start;
        let followed_by_number_byte = matches!(self.peek(), Some(b'.' | b'e' | b'E' | b'-' | b'+'));
        let leading_zero = length > 1 && bytes[start] == b'0';
        (length > 0 && !leading_zero && !followed_by_number_byte).then_some(value)
    }

    fn integer(&mut self) -> Option<i64> {
        self.digits().map(|value| value as i64)
    }

    fn unsigned(&mut self) -> Option<u64> {
        self.digits()
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.eat_literal("true").map(|()| true),
            b'f' => self.eat_literal("false").map(|()| false),
            _ => None,
        }
    }

    /// Skips a value the reference parser ignores: a plain string, a plain number, a boolean or null.
    fn skip_scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'0'..=b'9' => self.digits().map(drop),
            b'n' => self.eat_literal("null"),
            _ => self.boolean().map(drop),
        }
    }
}

/// The largest integer below which every integer is exact in an `f64`.
const EXACT_INTEGER_LIMIT: u64 = 1 << 53;
/// Powers of ten that are exact in an `f64`.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// A decimal such as `"46686.15000000"`, exactly as [`parse_decimal`] reads it. A plain decimal whose digits fit in
/// 53 bits, with at most 22 of them after the point, is one exact integer divided by one exact power of ten: a
/// single correctly rounded division, the same double as Rust's parser (Clinger's fast path). Anything else goes to
/// [`parse_decimal`].
fn fast_decimal(text: &str) -> Result<f64, RejectReason> {
    let bytes = text.as_bytes();
    let mut mantissa = 0u64;
    let mut fraction_digits = None;
    for (index, &byte) in bytes.iter().enumerate() {
        match byte {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(byte - b'0');
                if mantissa >= EXACT_INTEGER_LIMIT {
                    return parse_decimal(text);
                }
            }
            b'.' if fraction_digits.is_none() && index > 0 && index + 1 < bytes.len() => {
                fraction_digits = Some(bytes.len() - index - 1);
            }
            _ => return parse_decimal(text),
        }
    }
    match EXACT_POWERS_OF_TEN.get(fraction_digits.unwrap_or(0)) {
        Some(power) if !bytes.is_empty() => Ok(mantissa as f64 / power),
        _ => parse_decimal(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::kline::parse_frame_generic;

    const EVENT: &str = r#"{"e":"kline","E":1631636735735,"s":"BTCUSDT","k":{"t":1631636700000,"T":1631636999999,"s":"BTCUSDT","i":"5m","f":1054217725,"L":1054218306,"o":"46686.15000000","c":"46673.53000000","h":"46686.15000000","l":"46668.45000000","v":"12.26168000","n":582,"x":false,"q":"572337.21655380","V":"3.29093000","Q":"153606.31592330","B":"0"}}"#;

    fn combined(event: &str) -> String {
        format!(r#"{{"stream":"btcusdt@kline_5m","data":{event}}}"#)
    }

    /// Both parsers agree on `text`; returns whether the specialised one answered it itself.
    fn agree(text: &str) -> bool {
        let scanned = scan_kline_frame(text);
        let reference = parse_frame_generic(text);
        if let Some(scanned) = &scanned {
            assert_eq!(scanned, &reference, "{text}");
        }
        scanned.is_some()
    }

    #[test]
    fn the_real_event_is_scanned_in_both_forms_and_equals_the_reference() {
        assert!(agree(EVENT));
        assert!(agree(&combined(EVENT)));
        // Keys in another order, and a closed candle.
        let reordered = EVENT.replace(r#""E":1631636735735,"s":"BTCUSDT","#, r#""s":"BTCUSDT","E":1631636735735,"#);
        assert!(agree(&reordered.replace(r#""x":false"#, r#""x":true"#)));
        assert!(agree(&format!(r#"{{"data":{EVENT},"stream":"btcusdt@kline_5m"}}"#)));
    }

    #[test]
    fn every_rejection_reason_is_the_reference_one() {
        let cases = [
            (r#""o":"46686.15000000""#, r#""o":"abc""#),
            (r#""o":"46686.15000000""#, r#""o":"NaN""#),
            (r#""o":"46686.15000000""#, r#""o":"1e3""#),
            (r#""o":"46686.15000000""#, r#""o":"""#),
            (r#""o":"46686.15000000""#, r#""o":".5""#),
            (r#""o":"46686.15000000""#, r#""o":"5.""#),
            (r#""o":"46686.15000000""#, r#""o":"1.2.3""#),
            (r#""c":"46673.53000000""#, r#""c":"-1.0""#),
            (r#""l":"46668.45000000""#, r#""l":"46690.00000000""#),
            (r#""c":"46673.53000000""#, r#""c":"46600.00000000""#),
            (r#""T":1631636999999"#, r#""T":1631636999000"#),
            (r#""i":"5m""#, r#""i":"7m""#),
            (r#""l":"46668.45000000""#, r#""l":"0""#),
        ];
        for (from, to) in cases {
            let text = EVENT.replace(from, to);
            assert!(agree(&text), "the specialised parser should answer {to}");
            assert!(parse_frame_generic(&text).is_err(), "{to} should be rejected");
        }
        // Decimals too long for the fast path are still answered, through the generic decimal parser.
        for long in [r#""v":"123456789012345678901234567890""#, r#""v":"0.000000000000000000000001""#] {
            let text = EVENT.replace(r#""v":"12.26168000""#, long);
            assert!(agree(&text) && parse_frame_generic(&text).is_ok(), "{long}");
        }
    }

    #[test]
    fn frames_outside_the_compact_form_go_to_the_reference() {
        let cases = [
            // Whitespace, escapes, duplicates, missing keys, odd numbers, other frames.
            EVENT.replace(r#""E":"#, r#""E": "#),
            EVENT.replace(r#""s":"BTCUSDT","k""#, r#""s":"BTC\u0055SDT","k""#),
            EVENT.replace(r#""n":582"#, r#""n":582,"n":583"#),
            EVENT.replace(r#""n":582,"#, ""),
            EVENT.replace(r#""n":582"#, r#""n":582.0"#),
            EVENT.replace(r#""n":582"#, r#""n":-582"#),
            EVENT.replace(r#""t":1631636700000"#, r#""t":01631636700000"#),
            EVENT.replace(r#""E":1631636735735,"#, ""),
            EVENT.replace(r#""f":1054217725"#, r#""f":[1]"#),
            EVENT.replace(r#""e":"kline""#, r#""e":"trade""#),
            format!("{EVENT} "),
            format!("{EVENT}x"),
            EVENT[..EVENT.len() - 1].to_owned(),
            r#"{"result":null,"id":7}"#.to_owned(),
            r#"{"e":"serverShutdown","E":1}"#.to_owned(),
            format!(r#"{{"stream":"x","data":{EVENT},"e":"kline"}}"#),
            format!(r#"{{"stream":"x","data":{EVENT},"data":{EVENT}}}"#),
        ];
        for text in &cases {
            assert!(!agree(text), "the specialised parser should leave this to the reference: {text}");
        }
    }

    /// Real Binance klines (read in place from `../shared` where it is present), each written as the WebSocket event
    /// Binance sends for it: the specialised parser answers every one, as the reference does.
    #[test]
    fn real_klines_as_events_are_scanned_and_equal_the_reference() {
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/klines/binance-rest-15m");
        let Ok(files) = std::fs::read_dir(folder) else {
            println!("note: {folder} is not here: the real-klines check is skipped");
            return;
        };
        let mut events = 0;
        for file in files {
            let rows: Vec<serde_json::Value> =
                serde_json::from_slice(&std::fs::read(file.expect("entry").path()).expect("read")).expect("JSON");
            for (index, row) in rows.iter().enumerate() {
                let field = |i: usize| row[i].to_string();
                let k = format!(
                    r#"{{"t":{},"T":{},"s":"ABCUSDT","i":"15m","f":1,"L":2,"o":{},"c":{},"h":{},"l":{},"v":{},"n":{},"x":{},"q":{},"V":{},"Q":{},"B":"0"}}"#,
                    field(0),
                    field(6),
                    field(1),
                    field(4),
                    field(2),
                    field(3),
                    field(5),
                    field(8),
                    index % 2 == 0,
                    field(7),
                    field(9),
                    field(10)
                );
                let raw = format!(r#"{{"e":"kline","E":{},"s":"ABCUSDT","k":{k}}}"#, field(6));
                for text in [combined(&raw), raw] {
                    assert!(agree(&text), "not scanned: {text}");
                    assert!(parse_frame_generic(&text).is_ok(), "{text}");
                    events += 1;
                }
            }
        }
        assert!(events > 1000, "only {events} events");
    }

    #[test]
    fn fast_decimals_are_the_correctly_rounded_doubles() {
        let cases = [
            "0",
            "0.0",
            "1",
            "46686.15000000",
            "0.40060000",
            "0.00000001",
            "572337.21655380",
            "9007199254740991",
            "9007199254740992",
            "0.1",
            "0.3",
            "123456.789012345",
            "00012.5",
            "1.0000000000000000000001",
            "99999999.99999999",
        ];
        for text in cases {
            assert_eq!(fast_decimal(text), parse_decimal(text), "{text}");
            assert_eq!(
                fast_decimal(text).map(f64::to_bits),
                text.parse::<f64>().map(f64::to_bits).map_err(|_| RejectReason::NonNumeric),
                "{text}"
            );
        }
    }

    #[test]
    fn random_prices_and_volumes_parse_to_the_same_doubles() {
        let mut random = fastrand::Rng::with_seed(13);
        for _ in 0..100_000 {
            let decimals = random.usize(0..=12);
            let integer_digits = random.u32(1..=12);
            let integer = random.u64(0..10u64.pow(integer_digits));
            let fraction = random.u64(0..10u64.pow(decimals as u32).max(1));
            let text = if decimals == 0 { integer.to_string() } else { format!("{integer}.{fraction:0decimals$}") };
            assert_eq!(fast_decimal(&text).map(f64::to_bits), Ok(text.parse::<f64>().unwrap().to_bits()), "{text}");
        }
    }
}
