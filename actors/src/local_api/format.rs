//! Kline rows as Binance writes them: `[openTime,"o","h","l","c","v",closeTime,"q",n,"V","Q","0"]`, decimals padded
//! to 8 places.
//!
//! Candles are stored as `f64`. A decimal of up to 15 significant digits survives the trip through `f64` exactly,
//! so writing the double back with at most 8 decimals and at most 15 significant digits gives Binance's string:
//! every price, and every volume of up to 15 significant digits. A longer volume (say `123456789.12345678`, 17
//! digits) comes out rounded to 15 (`123456789.12345700`).

use std::fmt::Write as _;

use crate::domain::Candle;

/// Binance's spot decimals.
const DECIMALS: usize = 8;
/// The digits an `f64` holds exactly for any decimal.
const SIGNIFICANT_DIGITS: usize = 15;

/// Writes `value` with 8 decimals, rounded to at most 15 significant digits.
pub fn write_decimal(out: &mut String, value: f64) {
    let magnitude = value.abs();
    let mut integer_digits = 1;
    let mut power = 10.0;
    while magnitude >= power && integer_digits < 22 {
        integer_digits += 1;
        power *= 10.0;
    }
    let decimals = SIGNIFICANT_DIGITS.saturating_sub(integer_digits).min(DECIMALS);
    let _ = write!(out, "{value:.decimals$}");
    if decimals == 0 {
        out.push('.');
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
        ] {
            assert_eq!(decimal(text.parse().unwrap()), text);
        }
        // More than 15 significant digits: rounded to 15.
        assert_eq!(decimal(123_456_789.123_456_78), "123456789.12345700");
        assert_eq!(decimal(1e15 + 0.5), "1000000000000000.00000000");
    }

    /// Real rows from `GET /api/v3/klines` (15m, January 2026). The last two have quote volumes of 16 and 17
    /// significant digits.
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
        // Every field of the first four rows, and the prices of all: exact.
        assert_eq!(written.as_array().unwrap()[..4], expected.as_array().unwrap()[..4]);
        for row in 4..6 {
            for column in [0, 1, 2, 3, 4, 5, 6, 8, 9, 11] {
                assert_eq!(written[row][column], expected[row][column], "row {row} column {column}");
            }
        }
        // Volumes of more than 15 significant digits: rounded to 15.
        assert_eq!(written[4][7], "137879499.72622600");
        assert_eq!(written[4][10], "104695178.20185000");
        assert_eq!(written[5][7], "117636863.11348200");
        assert_eq!(written[5][10], "72146967.03690980");
    }
}
