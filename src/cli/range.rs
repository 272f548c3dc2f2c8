//! The stream and time range that `export` and `backfill` take: `--symbol`, `--timeframe`, and `--from`/`--to` as
//! ms UTC, a date or an RFC 3339 time.

use candled_actors::domain::{StreamKey, Timeframe};
use chrono::{DateTime, NaiveDate, SecondsFormat};

/// `--symbol` and `--timeframe`, shared by the subcommands that work on one stream.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamArgs {
    /// The symbol, as Binance lists it (`BTCUSDT`; lower case is accepted).
    #[arg(long, value_parser = parse_symbol)]
    pub symbol: String,
    /// The timeframe: 1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M.
    #[arg(long)]
    pub timeframe: Timeframe,
}

impl StreamArgs {
    pub fn key(&self) -> StreamKey {
        StreamKey::new(self.symbol.clone(), self.timeframe)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error(
        "{0:?} is not a time: expected ms since the Unix epoch (1704067200000), a date (2024-01-01) or an \
         RFC 3339 time (2024-01-01T00:00:00Z)"
    )]
    NotATime(String),
    #[error("{0:?} is not a symbol: expected 1 to 20 letters, digits, `-`, `_` or `.`")]
    NotASymbol(String),
    #[error("--from ({from}) must be before --to ({to})")]
    Empty { from: i64, to: i64 },
}

/// A symbol as Binance spells it: upper case, 1 to 20 of `A-Z 0-9 - _ .`.
pub fn parse_symbol(text: &str) -> Result<String, RangeError> {
    let symbol = text.trim().to_ascii_uppercase();
    let legal = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.');
    if symbol.is_empty() || symbol.len() > 20 || !symbol.chars().all(legal) {
        return Err(RangeError::NotASymbol(text.to_owned()));
    }
    Ok(symbol)
}

/// A point in time, ms UTC: plain ms (`1704067200000`), a date at 00:00 UTC (`2024-01-01`), or an RFC 3339 time
/// with its offset (`2024-01-01T00:00:00Z`, `2024-01-01T02:00:00+02:00`, fractions of a second kept to the ms).
pub fn parse_time(text: &str) -> Result<i64, RangeError> {
    let text = text.trim();
    let not_a_time = || RangeError::NotATime(text.to_owned());
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| not_a_time());
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).ok_or_else(not_a_time)?.and_utc().timestamp_millis());
    }
    DateTime::parse_from_rfc3339(text).map(|time| time.timestamp_millis()).map_err(|_| not_a_time())
}

/// `ms` as an RFC 3339 UTC time (`2024-01-01T00:00:00Z`), or the number itself when out of chrono's range.
pub fn format_time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// `[from, to)` in ms UTC: the candles whose open time lies in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: i64,
    pub to: i64,
}

impl TimeRange {
    /// The range from optional bounds: an open end reaches to the first or the last candle there is.
    pub fn new(from: Option<i64>, to: Option<i64>) -> Result<Self, RangeError> {
        let (from, to) = (from.unwrap_or(0), to.unwrap_or(i64::MAX));
        if from >= to {
            return Err(RangeError::Empty { from, to });
        }
        Ok(Self { from, to })
    }

    /// The open times of `timeframe` in the range, as `(first, last)` (both inclusive); `None` if none opens in it.
    pub fn opens(&self, timeframe: Timeframe) -> Option<(i64, i64)> {
        let containing = timeframe.open_time_containing(self.from);
        let first = if containing == self.from { containing } else { timeframe.next_open(containing) };
        let last = timeframe.open_time_containing(self.to - 1);
        (first <= last).then_some((first, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_1_2024: i64 = 1_704_067_200_000;

    #[test]
    fn times_parse_as_ms_dates_and_rfc_3339() {
        let cases: &[(&str, Option<i64>)] = &[
            // TC0: plain ms.
            ("1704067200000", Some(JAN_1_2024)),
            // TC1: a date is 00:00 UTC.
            ("2024-01-01", Some(JAN_1_2024)),
            // TC2: RFC 3339 in UTC, with a fraction kept to the ms.
            ("2024-01-01T00:00:00Z", Some(JAN_1_2024)),
            ("2024-01-01T00:00:01.250Z", Some(JAN_1_2024 + 1_250)),
            // TC3: an offset is applied.
            ("2024-01-01T02:00:00+02:00", Some(JAN_1_2024)),
            // TC4: surrounding blanks are ignored.
            (" 2024-01-01 ", Some(JAN_1_2024)),
            // TC5: not times.
            ("", None),
            ("yesterday", None),
            ("2024-13-01", None),
            ("2024-01-01T00:00:00", None),
            ("-5", None),
            ("99999999999999999999", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_time(text).ok(), *want, "{text:?}");
        }
        assert!(parse_time("soon").unwrap_err().to_string().contains("2024-01-01T00:00:00Z"));
        // TC6: a parsed time prints back as RFC 3339.
        assert_eq!(format_time(JAN_1_2024), "2024-01-01T00:00:00Z");
    }

    #[test]
    fn symbols_are_upper_case_binance_names() {
        // TC0: lower case is raised; TC1: Binance's extra characters pass; TC2: others, empty and too long fail.
        assert_eq!(parse_symbol("btcusdt"), Ok("BTCUSDT".to_owned()));
        assert_eq!(parse_symbol("BTC-USD_1.X"), Ok("BTC-USD_1.X".to_owned()));
        for bad in ["", "BTC/USDT", "BTC USDT", &"A".repeat(21)] {
            assert!(parse_symbol(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_range_holds_the_open_times_in_from_to() {
        const MIN: i64 = 60_000;
        let range = |from, to| TimeRange::new(Some(from), Some(to)).unwrap();
        // TC0: aligned bounds: `to` is excluded.
        assert_eq!(range(0, 3 * MIN).opens(Timeframe::M1), Some((0, 2 * MIN)));
        // TC1: a `from` inside a candle starts at the next one; a `to` inside one includes it.
        assert_eq!(range(1, 3 * MIN + 1).opens(Timeframe::M1), Some((MIN, 3 * MIN)));
        // TC2: a range inside one candle holds no open time.
        assert_eq!(range(1, MIN).opens(Timeframe::M1), None);
        // TC3: open ends reach from the epoch to the end of time.
        assert_eq!(TimeRange::new(None, None), Ok(TimeRange { from: 0, to: i64::MAX }));
        // TC4: an empty or reversed range is refused.
        assert_eq!(TimeRange::new(Some(5), Some(5)), Err(RangeError::Empty { from: 5, to: 5 }));
        assert!(TimeRange::new(Some(6), Some(5)).is_err());
    }
}
