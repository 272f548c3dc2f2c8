//! Binance kline intervals and the calendar arithmetic that places candles on them.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, TimeZone, Utc};

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// A Binance kline interval. The names are case-sensitive: `1m` is a minute, `1M` a month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timeframe {
    S1,
    M1,
    M3,
    M5,
    M15,
    M30,
    H1,
    H2,
    H4,
    H6,
    H8,
    H12,
    D1,
    D3,
    W1,
    Mo1,
}

/// The interval string is not one Binance serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown timeframe {0:?}: expected one of 1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M")]
pub struct UnknownTimeframe(pub String);

impl Timeframe {
    pub const ALL: [Timeframe; 16] = [
        Self::S1,
        Self::M1,
        Self::M3,
        Self::M5,
        Self::M15,
        Self::M30,
        Self::H1,
        Self::H2,
        Self::H4,
        Self::H6,
        Self::H8,
        Self::H12,
        Self::D1,
        Self::D3,
        Self::W1,
        Self::Mo1,
    ];

    /// The name Binance uses in stream names, REST queries and the `i` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::S1 => "1s",
            Self::M1 => "1m",
            Self::M3 => "3m",
            Self::M5 => "5m",
            Self::M15 => "15m",
            Self::M30 => "30m",
            Self::H1 => "1h",
            Self::H2 => "2h",
            Self::H4 => "4h",
            Self::H6 => "6h",
            Self::H8 => "8h",
            Self::H12 => "12h",
            Self::D1 => "1d",
            Self::D3 => "3d",
            Self::W1 => "1w",
            Self::Mo1 => "1M",
        }
    }

    /// Position in [`Timeframe::ALL`]: a dense index for per-timeframe tables.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The length of every candle, or `None` for `1M`, whose length depends on the month.
    pub const fn fixed_ms(self) -> Option<i64> {
        Some(match self {
            Self::S1 => SECOND,
            Self::M1 => MINUTE,
            Self::M3 => 3 * MINUTE,
            Self::M5 => 5 * MINUTE,
            Self::M15 => 15 * MINUTE,
            Self::M30 => 30 * MINUTE,
            Self::H1 => HOUR,
            Self::H2 => 2 * HOUR,
            Self::H4 => 4 * HOUR,
            Self::H6 => 6 * HOUR,
            Self::H8 => 8 * HOUR,
            Self::H12 => 12 * HOUR,
            Self::D1 => DAY,
            Self::D3 => 3 * DAY,
            Self::W1 => 7 * DAY,
            Self::Mo1 => return None,
        })
    }

    /// The longest a candle of this timeframe can last (31 days for `1M`).
    pub const fn max_ms(self) -> i64 {
        match self.fixed_ms() {
            Some(ms) => ms,
            None => 31 * DAY,
        }
    }

    /// The open time of the candle after the one that opens at `open_time`.
    ///
    /// Every step is fixed except `1M`, which steps to the 1st of the next month. `3d` steps by 3 days from the
    /// series' own origin, so this is right for it although `3d` is not on a global grid.
    pub fn next_open(self, open_time: i64) -> i64 {
        match self.fixed_ms() {
            Some(ms) => open_time + ms,
            None => {
                let date = Utc.timestamp_millis_opt(open_time).single().map(|t| t.date_naive());
                let Some(date) = date else { return open_time + 31 * DAY };
                let (year, month) =
                    if date.month() == 12 { (date.year() + 1, 1) } else { (date.year(), date.month() + 1) };
                Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
                    .single()
                    .map_or(open_time + 31 * DAY, |t| t.timestamp_millis())
            }
        }
    }

    /// The open time of the candle before the one that opens at `open_time`.
    pub fn previous_open(self, open_time: i64) -> i64 {
        match self.fixed_ms() {
            Some(ms) => open_time - ms,
            None => self.open_time_containing(open_time - 1),
        }
    }

    /// How many candle open times of this timeframe lie in `[from, to)`, counting on from `from`.
    pub fn count_opens(self, from: i64, to: i64) -> u64 {
        match self.fixed_ms() {
            Some(ms) => ((to - from + ms - 1) / ms).max(0) as u64,
            None => std::iter::successors(Some(from), |&open| Some(self.next_open(open)))
                .take_while(|&open| open < to)
                .count() as u64,
        }
    }

    /// The close time Binance reports for the candle opening at `open_time`: the next open minus 1 ms.
    pub fn close_time(self, open_time: i64) -> i64 {
        self.next_open(open_time) - 1
    }

    /// The open time of the candle containing `time`, on the global grid (intervals up to `1d` align to 00:00 UTC,
    /// `1w` to Monday, `1M` to the 1st). `3d` has no global grid; this aligns it to the Unix epoch.
    pub fn open_time_containing(self, time: i64) -> i64 {
        match self {
            // 1970-01-01 was a Thursday; Binance weeks open on Monday, 4 days later.
            Self::W1 => (time - 4 * DAY).div_euclid(7 * DAY) * 7 * DAY + 4 * DAY,
            Self::Mo1 => {
                let date = Utc.timestamp_millis_opt(time).single().map(|t| t.date_naive());
                date.and_then(|d| Utc.with_ymd_and_hms(d.year(), d.month(), 1, 0, 0, 0).single())
                    .map_or(time, |t| t.timestamp_millis())
            }
            _ => {
                let ms = self.max_ms();
                time.div_euclid(ms) * ms
            }
        }
    }
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Timeframe {
    type Err = UnknownTimeframe;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|tf| tf.as_str() == s).ok_or_else(|| UnknownTimeframe(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for tf in Timeframe::ALL {
            assert_eq!(tf.as_str().parse::<Timeframe>(), Ok(tf));
            assert_eq!(Timeframe::ALL[tf.index()], tf);
        }
        assert_eq!("1M".parse::<Timeframe>(), Ok(Timeframe::Mo1));
        assert_eq!("1m".parse::<Timeframe>(), Ok(Timeframe::M1));
        assert!("7m".parse::<Timeframe>().is_err());
        assert!("".parse::<Timeframe>().is_err());
    }

    #[test]
    fn close_time_is_next_open_minus_one() {
        // TC0: the real 5m event from the protocol notes.
        assert_eq!(Timeframe::M5.close_time(1_631_636_700_000), 1_631_636_999_999);
        // TC1: 1M across a year end: 2025-12-01 -> 2026-01-01.
        assert_eq!(Timeframe::Mo1.next_open(1_764_547_200_000), 1_767_225_600_000);
        // TC2: 1M in February of a leap year: 2028-02-01 -> 2028-03-01 is 29 days.
        assert_eq!(Timeframe::Mo1.next_open(1_832_976_000_000) - 1_832_976_000_000, 29 * DAY);
    }

    #[test]
    fn previous_open_and_count_opens_walk_the_grid() {
        let new_year = 1_767_225_600_000;
        // TC0: fixed steps.
        assert_eq!(Timeframe::M5.previous_open(new_year), new_year - 5 * MINUTE);
        // TC1: 1M steps back to the 1st of the previous month (2025-12-01).
        assert_eq!(Timeframe::Mo1.previous_open(new_year), 1_764_547_200_000);
        // TC2: counts in a half-open range; an empty or reversed range counts nothing.
        assert_eq!(Timeframe::M1.count_opens(0, MINUTE), 1);
        assert_eq!(Timeframe::M1.count_opens(0, 60 * MINUTE), 60);
        assert_eq!(Timeframe::M1.count_opens(MINUTE, 0), 0);
        // TC3: 2025-12-01 up to 2026-03-01: three monthly candles.
        assert_eq!(Timeframe::Mo1.count_opens(1_764_547_200_000, 1_772_323_200_000), 3);
    }

    #[test]
    fn open_time_containing_aligns_to_the_binance_grid() {
        // 2026-01-01 00:00 UTC is a Thursday; the containing week opened Monday 2025-12-29.
        let new_year = 1_767_225_600_000;
        assert_eq!(Timeframe::W1.open_time_containing(new_year), new_year - 3 * DAY);
        assert_eq!(Timeframe::Mo1.open_time_containing(new_year + 5 * DAY + 7), new_year);
        assert_eq!(Timeframe::M15.open_time_containing(new_year + 16 * MINUTE), new_year + 15 * MINUTE);
        assert_eq!(Timeframe::D1.open_time_containing(new_year - 1), new_year - DAY);
    }

    #[test]
    fn every_timeframe_has_its_binance_length() {
        use Timeframe::*;
        let seconds = [
            (S1, 1),
            (M1, 60),
            (M3, 180),
            (M5, 300),
            (M15, 900),
            (M30, 1_800),
            (H1, 3_600),
            (H2, 7_200),
            (H4, 14_400),
            (H6, 21_600),
            (H8, 28_800),
            (H12, 43_200),
            (D1, 86_400),
            (D3, 259_200),
            (W1, 604_800),
        ];
        for (timeframe, secs) in seconds {
            assert_eq!(timeframe.fixed_ms(), Some(secs * 1000), "{timeframe}");
            assert_eq!(timeframe.max_ms(), secs * 1000, "{timeframe}");
            assert_eq!(timeframe.next_open(0), secs * 1000, "{timeframe}");
        }
        // TC0: a month has no fixed length; its longest is 31 days.
        assert_eq!((Mo1.fixed_ms(), Mo1.max_ms()), (None, 31 * DAY));
        // TC1: a reversed range of several candles still counts nothing.
        assert_eq!(M1.count_opens(3 * MINUTE, 0), 0);
        // TC2: a month past the calendar's end (none is ever stored) steps by the longest month rather than failing.
        let last = chrono::DateTime::<Utc>::MAX_UTC.timestamp_millis();
        assert_eq!(Mo1.next_open(last), last + 31 * DAY);
        assert_eq!(Mo1.next_open(last + DAY), last + 32 * DAY);
        // TC3: a timeframe shows as its Binance name.
        assert_eq!((M1.to_string(), Mo1.to_string()), ("1m".to_owned(), "1M".to_owned()));
    }

    #[test]
    fn weeks_open_on_monday() {
        // Monday 2025-12-29 00:00 UTC.
        let monday = 1_766_966_400_000;
        for (time, expected) in [
            // TC0: the Monday itself.
            (monday, monday),
            // TC1: the last millisecond of that week (Sunday).
            (monday + 7 * DAY - 1, monday),
            // TC2: the next Monday opens the next week.
            (monday + 7 * DAY, monday + 7 * DAY),
            // TC3: before the epoch's first Monday (1970-01-05), weeks still open on Mondays.
            (0, -3 * DAY),
        ] {
            assert_eq!(Timeframe::W1.open_time_containing(time), expected, "{time}");
        }
    }
}
