//! Kline rows as Binance writes them: `[openTime,"o","h","l","c","v",closeTime,"q",n,"V","Q","0"]`, decimals padded
//! to 8 places.
//!
//! Candles are stored as `f64`. A decimal of up to 15 significant digits survives the trip through `f64` exactly:
//! the shortest decimal that reads back as the double is the one Binance sent, so writing it back (padded to 8
//! decimals) gives Binance's string. That covers every price and nearly every volume. A volume of 16 or 17
//! significant digits (a large quote volume such as `104695178.20184970`) is exact to at least 15 of them: the
//! double cannot tell it from its neighbours in the last digits.

use std::fmt::Write as _;

use crate::domain::Candle;

/// Binance's spot decimals.
const DECIMALS: usize = 8;

/// Writes `value` with 8 decimals: the shortest decimal that reads back as `value` (at most 8 decimals), padded.
/// For a double read from a decimal of up to 15 significant digits that shortest decimal is the one read; for a
/// longer one it is correct to at least 15 significant digits. A double needing more than 8 decimals (none read
/// from Binance does) is rounded to 8.
pub fn write_decimal(out: &mut String, value: f64) {
    let start = out.len();
    let mut buffer = ryu::Buffer::new();
    match buffer.format(value) {
        // ryu writes very small and very large values with an exponent; the standard library never does.
        digits if digits.contains('e') => {
            let _ = write!(out, "{value}");
        }
        digits => out.push_str(digits.strip_suffix(".0").unwrap_or(digits)),
    }
    let decimals = match out[start..].find('.') {
        None => {
            out.push('.');
            0
        }
        Some(dot) => out.len() - start - dot - 1,
    };
    if decimals > DECIMALS {
        out.truncate(start);
        let _ = write!(out, "{value:.DECIMALS$}");
        return;
    }
    for _ in decimals..DECIMALS {
        out.push('0');
    }
}

/// Appends one row.
pub fn write_row(out: &mut String, candle: &Candle) {
    let _ = write!(out, "[{},\"", candle.open_time);
    for value in [candle.open, candle.high, candle.low, candle.close, candle.volume] {
        write_decimal(out, value);
        out.push_str("\",\"");
    }
    out.pop();
    let _ = write!(out, "{},\"", candle.close_time);
    write_decimal(out, candle.quote_volume);
    let _ = write!(out, "\",{},\"", candle.trades);
    write_decimal(out, candle.taker_buy_base);
    out.push_str("\",\"");
    write_decimal(out, candle.taker_buy_quote);
    out.push_str("\",\"0\"]");
}

/// The whole JSON array of rows.
pub fn rows_json(candles: &[Candle]) -> String {
    let mut out = String::with_capacity(2 + candles.len() * 180);
    out.push('[');
    for (index, candle) in candles.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_row(&mut out, candle);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Timeframe, parse_rest_klines};

    fn decimal(value: f64) -> String {
        let mut out = String::new();
        write_decimal(&mut out, value);
        out
    }

    #[test]
    fn decimals_come_back_as_binance_wrote_them() {
        for text in [
            "0.40060000",
            "46686.15000000",
            "0.00001234",
            "0.00000000",
            "12.26168000",
            "572337.21655380",
            "9000000000.00000000",
            "123456789.12345700",
            "1000000.00000000",
            "99999.99999999",
            "0.00000001",
            "1234567.12345678",
            "104695178.20184970",
            "123456789.12345678",
        ] {
            assert_eq!(decimal(text.parse().unwrap()), text);
        }
    }

    #[test]
    fn seventeen_digits_are_kept_to_at_least_fifteen_and_read_back_the_same() {
        for text in ["987654321.98765432", "555555555.55555555", "100000000.00000001", "123456789.87654321"] {
            let value: f64 = text.parse().unwrap();
            let written = decimal(value);
            assert_eq!(written.parse::<f64>().unwrap(), value, "{text}");
            assert_eq!(written.len(), text.len(), "{text} -> {written}");
            assert_eq!(written[..16], text[..16], "15 significant digits and the point: {text} -> {written}");
        }
        // No double read from Binance needs more than 8 decimals; one that does is rounded.
        assert_eq!(decimal(1.0 / 3.0), "0.33333333");
        assert_eq!(decimal(1e20), "100000000000000000000.00000000");
    }

    /// Real rows from `GET /api/v3/klines` (15m, January 2026). The last two have quote volumes of 16 significant
    /// digits. (All 13,440 rows of the fixture set this comes from were checked the same way, once: every one exact.)
    const REAL_ROWS: &str = r#"[
[1767571200000,"0.40060000","0.40300000","0.39950000","0.40080000","2413911.60000000",1767572099999,"968836.67961000",4461,"1431933.20000000","574936.88829000","0"],
[1768342500000,"14.71000000","14.77000000","14.64000000","14.71000000","135368.21000000",1768343399999,"1992436.26090000",6405,"73414.75000000","1080734.24010000","0"],
[1768706100000,"3306.09000000","3312.02000000","3305.47000000","3311.67000000","1005.87300000",1768706999999,"3328137.16495800",12579,"613.72930000","2030629.23217500","0"],
[1768514400000,"2.07430000","2.07550000","2.06790000","2.07100000","796840.10000000",1768515299999,"1652144.14745000",6795,"503512.00000000","1043992.66025000","0"],
[1767971700000,"90259.03000000","91797.92000000","90165.78000000","91680.59000000","1512.18069000",1767972599999,"137879499.72622600",190460,"1148.06633000","104695178.20184970","0"],
[1767972600000,"91680.59000000","92082.55000000","91200.01000000","91236.19000000","1281.88392000",1767973499999,"117636863.11348220",221262,"785.68171000","72146967.03690980","0"]
]"#;

    #[test]
    fn real_binance_rows_round_trip_through_the_store_types() {
        let candles = parse_rest_klines(REAL_ROWS.as_bytes(), Timeframe::M15, i64::MAX).unwrap();
        let expected: serde_json::Value = serde_json::from_str(REAL_ROWS).unwrap();
        let written: serde_json::Value = serde_json::from_str(&rows_json(&candles)).unwrap();
        assert_eq!(written, expected);
    }
}
