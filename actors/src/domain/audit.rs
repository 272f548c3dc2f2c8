//! The audit's arithmetic: how far a pass may expect stored closes, and which open times the store lacks.

use crate::domain::{Gap, Timeframe};

/// The newest open time whose candle closed before `exchange_now - margin_ms`: how far an audit pass expects
/// stored closed candles. Newer ones are the forward path's business (live closes, close deadlines).
pub fn audit_through(timeframe: Timeframe, exchange_now: i64, margin_ms: i64) -> i64 {
    timeframe.previous_open(timeframe.open_time_containing(exchange_now - margin_ms))
}

/// The ranges within `[from_open, through_open]` that `opens` (ascending) does not cover.
pub fn missing_ranges(
    timeframe: Timeframe,
    from_open: i64,
    through_open: i64,
    opens: impl Iterator<Item = i64>,
) -> Vec<Gap> {
    let mut gaps = Vec::new();
    let mut expected = from_open;
    for open in opens {
        if open > expected {
            gaps.push(Gap { from_open: expected, to_open: open });
        }
        expected = expected.max(timeframe.next_open(open));
    }
    if expected <= through_open {
        gaps.push(Gap { from_open: expected, to_open: timeframe.next_open(through_open) });
    }
    gaps
}

/// The holes in `[from_open, through_open]`: open times with no stored closed candle (`closed`, ascending) that
/// no range in `known` (exchange gaps, confirmed or being re-checked) accounts for.
pub fn holes(timeframe: Timeframe, from_open: i64, through_open: i64, closed: &[i64], known: &[Gap]) -> Vec<Gap> {
    let mut holes = missing_ranges(timeframe, from_open, through_open, closed.iter().copied());
    for known in known {
        holes = holes.into_iter().flat_map(|hole| cut(hole, known)).collect();
    }
    holes
}

/// `hole` without the part `known` covers: nothing, itself, or one or two pieces. The pieces before and after
/// `known` are clipped to `hole`; one that ends up empty (known covers that side, or lies wholly on the other) drops.
fn cut(hole: Gap, known: &Gap) -> impl Iterator<Item = Gap> {
    let before = Gap { from_open: hole.from_open, to_open: known.from_open.min(hole.to_open) };
    let after = Gap { from_open: known.to_open.max(hole.from_open), to_open: hole.to_open };
    [before, after].into_iter().filter(|g| g.from_open < g.to_open)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn gap(from: i64, to: i64) -> Gap {
        Gap { from_open: from * MIN, to_open: to * MIN }
    }

    #[test]
    fn missing_ranges_finds_every_hole() {
        let gaps = |opens: &[i64], from, through| missing_ranges(Timeframe::M1, from, through, opens.iter().copied());
        // TC0: complete.
        assert_eq!(gaps(&[0, MIN, 2 * MIN], 0, 2 * MIN), []);
        // TC1: a hole in the middle.
        assert_eq!(gaps(&[0, 3 * MIN], 0, 3 * MIN), [gap(1, 3)]);
        // TC2: holes at both ends.
        assert_eq!(gaps(&[2 * MIN], 0, 4 * MIN), [gap(0, 2), gap(3, 5)]);
        // TC3: nothing at all.
        assert_eq!(gaps(&[], 0, MIN), [gap(0, 2)]);
    }

    #[test]
    fn holes_leave_out_known_exchange_gaps() {
        let closed = [0, MIN, 9 * MIN];
        // TC0: no known gap: minutes 2..=8 and 10..=11 are holes.
        assert_eq!(holes(Timeframe::M1, 0, 11 * MIN, &closed, &[]), [gap(2, 9), gap(10, 12)]);
        // TC1: a known gap inside a hole splits it.
        assert_eq!(holes(Timeframe::M1, 0, 11 * MIN, &closed, &[gap(4, 6)]), [gap(2, 4), gap(6, 9), gap(10, 12)]);
        // TC2: known gaps covering holes entirely, or overlapping their ends, or elsewhere.
        assert_eq!(holes(Timeframe::M1, 0, 11 * MIN, &closed, &[gap(2, 9), gap(11, 20), gap(30, 31)]), [gap(10, 11)]);
        // TC3: a known gap that starts before the hole.
        assert_eq!(holes(Timeframe::M1, 0, 11 * MIN, &closed, &[gap(0, 5)]), [gap(5, 9), gap(10, 12)]);
    }

    #[test]
    fn a_pass_expects_only_candles_closed_before_the_margin() {
        // Exchange time 10:03:30 with a 10 s margin: the 10:02 candle (closed 10:02:59.999) is due, 10:03 is not.
        let now = 10 * 60 * MIN + 3 * MIN + 30_000;
        assert_eq!(audit_through(Timeframe::M1, now, 10_000), 10 * 60 * MIN + 2 * MIN);
        // At 10:03:05 with the same margin the 10:02 candle is not due yet.
        assert_eq!(audit_through(Timeframe::M1, now - 25_000, 10_000), 10 * 60 * MIN + MIN);
    }
}
