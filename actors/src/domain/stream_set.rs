//! Changing the stream set while running: what an edited config adds and removes, and which connection carries each
//! new stream (the ones with room first, a new connection only when all are full).

use std::collections::{BTreeMap, HashSet};

use super::StreamKey;

/// The difference between the streams carried and the streams wanted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamChanges {
    /// Wanted and not carried, in the wanted order.
    pub added: Vec<StreamKey>,
    /// Carried and not wanted, in the carried order.
    pub removed: Vec<StreamKey>,
}

impl StreamChanges {
    pub fn between(carried: &[StreamKey], wanted: &[StreamKey]) -> Self {
        let carried_set: HashSet<&StreamKey> = carried.iter().collect();
        let wanted_set: HashSet<&StreamKey> = wanted.iter().collect();
        Self {
            added: wanted.iter().filter(|key| !carried_set.contains(key)).cloned().collect(),
            removed: carried.iter().filter(|key| !wanted_set.contains(key)).cloned().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Where `adding` new streams go, given how many streams each connection (by number) carries: as many as fit on
/// each connection with room, lowest number first, then on new connections numbered after the highest. Returns
/// (connection number, streams placed there) in order; a number not in `carried` is a new connection.
pub fn place(carried: &BTreeMap<u32, usize>, adding: usize, per_connection: usize) -> Vec<(u32, usize)> {
    let per_connection = per_connection.max(1);
    let mut left = adding;
    let mut placed = Vec::new();
    for (&number, &count) in carried {
        let room = per_connection.saturating_sub(count).min(left);
        if room > 0 {
            placed.push((number, room));
            left -= room;
        }
    }
    let mut next = carried.keys().next_back().map_or(0, |last| last + 1);
    while left > 0 {
        let count = left.min(per_connection);
        placed.push((next, count));
        left -= count;
        next += 1;
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timeframe;

    fn keys(names: &[&str]) -> Vec<StreamKey> {
        names.iter().map(|s| StreamKey::new(*s, Timeframe::M1)).collect()
    }

    #[test]
    fn changes_keep_the_wanted_and_carried_orders() {
        let cases = [
            // TC0: nothing changes.
            (keys(&["A", "B"]), keys(&["B", "A"]), keys(&[]), keys(&[])),
            // TC1: added in the wanted order, removed in the carried order.
            (keys(&["A", "B", "C"]), keys(&["E", "B", "D"]), keys(&["E", "D"]), keys(&["A", "C"])),
            // TC2: from nothing, everything is added.
            (keys(&[]), keys(&["A"]), keys(&["A"]), keys(&[])),
        ];
        for (carried, wanted, added, removed) in cases {
            let changes = StreamChanges::between(&carried, &wanted);
            assert_eq!(changes, StreamChanges { added: added.clone(), removed: removed.clone() });
            assert_eq!(changes.is_empty(), added.is_empty() && removed.is_empty());
        }
        let timeframes = StreamChanges::between(
            &[StreamKey::new("A", Timeframe::M1)],
            &[StreamKey::new("A", Timeframe::M1), StreamKey::new("A", Timeframe::M5)],
        );
        // TC3: a new timeframe of a carried symbol is a new stream.
        assert_eq!(timeframes.added, [StreamKey::new("A", Timeframe::M5)]);
    }

    #[test]
    fn new_streams_fill_connections_with_room_before_opening_new_ones() {
        let carried = |counts: &[(u32, usize)]| counts.iter().copied().collect::<BTreeMap<_, _>>();
        // (carried, adding, per connection, placed)
        type Case = (BTreeMap<u32, usize>, usize, usize, Vec<(u32, usize)>);
        let cases: [Case; 6] = [
            // TC0: no connection yet: full ones, then the remainder.
            (carried(&[]), 2500, 1024, vec![(0, 1024), (1, 1024), (2, 452)]),
            // TC1: room on the first connection takes everything.
            (carried(&[(0, 6)]), 2, 1024, vec![(0, 2)]),
            // TC2: a full connection is skipped; a later one with room is used, lowest number first.
            (carried(&[(0, 1024), (3, 1000), (5, 10)]), 50, 1024, vec![(3, 24), (5, 26)]),
            // TC3: all full: a new connection after the highest number.
            (carried(&[(0, 4), (2, 4)]), 5, 4, vec![(3, 4), (4, 1)]),
            // TC4: exactly filling leaves no new connection.
            (carried(&[(0, 1020)]), 4, 1024, vec![(0, 4)]),
            // TC5: nothing to add places nothing.
            (carried(&[(0, 1)]), 0, 1024, vec![]),
        ];
        for (index, (carried, adding, per_connection, expected)) in cases.into_iter().enumerate() {
            assert_eq!(place(&carried, adding, per_connection), expected, "TC{index}");
        }
        // TC6: a limit of 0 is taken as 1.
        assert_eq!(place(&BTreeMap::new(), 2, 0), vec![(0, 1), (1, 1)]);
    }
}
