//! What a REST fetch of klines is for, and which candles it asks for.

/// Why candles were fetched over REST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillPurpose {
    /// The start-up history load, or the catch-up since the last run.
    History,
    /// A repair after a (re)connect, a gap, a missed close or a stale spell.
    Repair,
    /// A hole or a stuck in-progress row the audit found in the store.
    Audit,
    /// A second look at a range the exchange answered empty, before it is recorded as an exchange gap.
    Recheck,
}

impl BackfillPurpose {
    /// How logs name such a fetch.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::History => "history load",
            Self::Repair => "REST repair",
            Self::Audit => "audit fetch",
            Self::Recheck => "re-check",
        }
    }
}

/// Which candles a fetch asks for, by open time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchRange {
    /// From this open time up to the exchange's present.
    From(i64),
    /// From `from` to `to`, both included.
    Between { from: i64, to: i64 },
    /// Everything after `after` (the newest closed candle already stored), however old; or, with nothing stored,
    /// the last `count` closed candles.
    History { count: u32, after: Option<i64> },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_purpose_is_named_for_the_logs() {
        use BackfillPurpose::*;
        let names = [History, Repair, Audit, Recheck].map(BackfillPurpose::describe);
        assert_eq!(names, ["history load", "REST repair", "audit fetch", "re-check"]);
    }
}
