//! The storage conformance suite: every [`Store`] rule and read, written once against the trait and run on each
//! implementation (SQLite in a temporary file; PostgreSQL in a fresh schema per test, skipped when the server is
//! unreachable, failing under `CI=true`).

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::postgres::Revision;
use super::test_support::TestSchema;
use super::{IndicatorPoint, IndicatorRow, PostgresBackend, SqliteStore, Store, StoredRange, Window};
use crate::domain::{Candle, Gap, StreamId, StreamKey, Timeframe};

/// Reads the recorded revisions of a stream, oldest first.
type RevisionHistory = Box<dyn Fn(&str, Timeframe) -> Vec<Revision>>;

/// A store under test, with what the suite needs beside the trait.
pub(crate) struct Subject {
    pub store: Box<dyn Store>,
    /// Opens another handle (another connection) on the same store.
    pub another: Box<dyn Fn() -> Box<dyn Store>>,
    /// The recorded revisions of a stream, oldest first: the open time and the old values.
    pub revision_history: RevisionHistory,
    /// Runs SQL statements on a connection of their own, as a user does with `sqlite3` or `psql` (tables unqualified).
    pub user_sql: Box<dyn Fn(&str)>,
    /// The temporary folder or schema: dropped last.
    _place: Box<dyn Any>,
}

/// SQLite in a file of a temporary folder (a file, so that several connections share it).
pub(crate) fn sqlite() -> Subject {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("candles.db");
    let store = SqliteStore::open(&path).expect("the database opens");
    let (another_path, history_path, user_path) = (path.clone(), path.clone(), path);
    Subject {
        store: Box::new(store),
        another: Box::new(move || Box::new(SqliteStore::open(&another_path).expect("the database opens again"))),
        revision_history: Box::new(move |symbol, timeframe| {
            let store = SqliteStore::open_read_only(&history_path).unwrap();
            let mut stmt = store
                .connection()
                .prepare(
                    "SELECT timestamp, revised_at, open, high, low, close, volume, quote_volume, trades,
                            taker_buy_base, taker_buy_quote
                     FROM candle_revisions WHERE symbol = ?1 AND timeframe = ?2 ORDER BY revised_at, rowid",
                )
                .unwrap();
            let rows = stmt
                .query_map(rusqlite::params![symbol, timeframe.as_str()], |row| {
                    let candle = Candle {
                        open_time: row.get(0)?,
                        close_time: 0,
                        open: row.get(2)?,
                        high: row.get(3)?,
                        low: row.get(4)?,
                        close: row.get(5)?,
                        volume: row.get(6)?,
                        quote_volume: row.get(7)?,
                        trades: row.get::<_, i64>(8)? as u64,
                        taker_buy_base: row.get(9)?,
                        taker_buy_quote: row.get(10)?,
                        is_closed: true,
                    };
                    Ok(Revision { revised_at: row.get(1)?, old: candle })
                })
                .unwrap();
            rows.map(Result::unwrap).collect()
        }),
        user_sql: Box::new(move |sql| {
            rusqlite::Connection::open(&user_path).unwrap().execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
        }),
        _place: Box::new(dir),
    }
}

/// PostgreSQL in a fresh schema, or `None` (the test skips) when the server is unreachable.
pub(crate) fn postgres(test: &str) -> Option<Subject> {
    let schema = TestSchema::create(test)?;
    let backend = PostgresBackend::connect(schema.config()).expect("the PostgreSQL store connects and migrates");
    let (another, history) = (backend.clone(), backend.store());
    let schema = std::rc::Rc::new(schema);
    let user_schema = schema.clone();
    Some(Subject {
        store: Box::new(backend.store()),
        another: Box::new(move || Box::new(another.store())),
        revision_history: Box::new(move |symbol, timeframe| history.revision_history(symbol, timeframe).unwrap()),
        user_sql: Box::new(move |sql| {
            let in_schema = format!("SET search_path TO {}; {sql}", user_schema.name());
            user_schema.execute(&in_schema).unwrap_or_else(|e| panic!("{sql}: {e}"))
        }),
        _place: Box::new(schema),
    })
}

/// Instantiates each suite function as a test on each implementation: `sqlite::name` and `postgres::name`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(super::sqlite()); })*
        }
        mod postgres {
            $(#[test] fn $name() {
                if let Some(subject) = super::postgres(concat!("store::conformance::postgres::", stringify!($name))) {
                    super::$name(subject);
                }
            })*
        }
    };
}

conformance!(
    in_progress_is_replaced_and_closed_is_final,
    an_identical_closed_duplicate_changes_nothing,
    a_differing_closed_candle_is_one_recorded_revision_with_the_old_values,
    a_batch_of_ten_thousand_rows_in_one_call,
    indicator_values_are_overwritten_only_when_they_differ,
    an_output_absent_from_a_later_write_keeps_its_stored_value,
    a_new_output_name_is_stored_and_readable,
    a_changed_indicator_set_leaves_the_old_outputs_values,
    deleting_an_output_through_the_indicators_view_removes_only_it,
    hand_edits_through_the_candles_view_apply_to_the_store,
    changed_counts_count_candle_rows_and_indicator_rows,
    an_unknown_stream_or_output_writes_nothing,
    exchange_gaps_are_recorded_and_replaced,
    every_read,
    concurrent_writers_of_the_same_candles_record_no_spurious_revision,
    concurrent_writers_of_differing_closed_candles_record_exactly_one_revision,
);

/// Candles to write, with their streams.
type Rows = Vec<(StreamId, Candle)>;

const BTC: StreamId = StreamId(0);
const ETH: StreamId = StreamId(1);

fn streams() -> Vec<StreamKey> {
    vec![StreamKey::new("BTCUSDT", Timeframe::M1), StreamKey::new("ETHUSDT", Timeframe::M5)]
}

fn names() -> Vec<String> {
    vec!["sma_2".to_owned(), "rsi_2".to_owned()]
}

/// A one-minute candle opened at `open_time`, with `close` as its close: what every store test writes.
pub(super) fn candle(open_time: i64, close: f64, is_closed: bool) -> Candle {
    Candle {
        open_time,
        close_time: open_time + 59_999,
        open: 10.0,
        high: 12.0,
        low: 9.0,
        close,
        volume: 1.5,
        quote_volume: 15.0,
        trades: 3,
        taker_buy_base: 0.5,
        taker_buy_quote: 5.0,
        is_closed,
    }
}

fn ind(stream: StreamId, open_time: i64, output: u16, value: f64) -> IndicatorRow {
    IndicatorRow { stream, open_time, output, value }
}

fn btc_all(store: &dyn Store) -> Vec<Candle> {
    store.candles_window("BTCUSDT", Timeframe::M1, 0, i64::MAX, 1_000_000, Window::Oldest).unwrap()
}

fn in_progress_is_replaced_and_closed_is_final(mut s: Subject) {
    let store = &mut *s.store;
    let streams = streams();
    // Two updates of one candle in one batch: each counts, the later wins.
    let updates = [(BTC, candle(0, 10.0, false)), (BTC, candle(0, 11.0, false))];
    assert_eq!(store.write_candles(&streams, &updates).unwrap(), 2);
    assert_eq!(btc_all(store), [candle(0, 11.0, false)]);
    assert_eq!(store.write_candles(&streams, &[(BTC, candle(0, 10.5, false))]).unwrap(), 1);
    assert_eq!(btc_all(store), [candle(0, 10.5, false)]);
    // Closing replaces the in-progress row: not a revision.
    assert_eq!(store.write_candles(&streams, &[(BTC, candle(0, 11.5, true))]).unwrap(), 1);
    // A later in-progress update of the closed candle changes nothing, alone or after the close in one batch.
    assert_eq!(store.write_candles(&streams, &[(BTC, candle(0, 10.5, false))]).unwrap(), 0);
    let close_then_update = [(BTC, candle(60_000, 12.0, true)), (BTC, candle(60_000, 13.0, false))];
    assert_eq!(store.write_candles(&streams, &close_then_update).unwrap(), 1);
    assert_eq!(btc_all(store), [candle(0, 11.5, true), candle(60_000, 12.0, true)]);
    assert_eq!(store.revisions("BTCUSDT", Timeframe::M1).unwrap(), 0);
}

fn an_identical_closed_duplicate_changes_nothing(mut s: Subject) {
    let store = &mut *s.store;
    let streams = streams();
    let rows = [(BTC, candle(0, 11.5, true)), (ETH, candle(300_000, 20.0, true))];
    assert_eq!(store.write_candles(&streams, &rows).unwrap(), 2);
    assert_eq!(store.write_candles(&streams, &rows).unwrap(), 0);
    // Twice in one batch: the second is the duplicate.
    let twice = [(BTC, candle(60_000, 11.0, true)), (BTC, candle(60_000, 11.0, true))];
    assert_eq!(store.write_candles(&streams, &twice).unwrap(), 1);
    assert_eq!(btc_all(store), [candle(0, 11.5, true), candle(60_000, 11.0, true)]);
    assert_eq!(store.revisions("BTCUSDT", Timeframe::M1).unwrap(), 0);
    assert_eq!(store.revisions("ETHUSDT", Timeframe::M5).unwrap(), 0);
    assert!((s.revision_history)("BTCUSDT", Timeframe::M1).is_empty());
}

fn a_differing_closed_candle_is_one_recorded_revision_with_the_old_values(mut s: Subject) {
    let store = &mut *s.store;
    let streams = streams();
    store.write_candles(&streams, &[(BTC, candle(0, 11.5, true))]).unwrap();
    let before = crate::tasks::unix_ms();
    assert_eq!(store.write_candles(&streams, &[(BTC, candle(0, 11.0, true))]).unwrap(), 1);
    let after = crate::tasks::unix_ms();
    assert_eq!(btc_all(store), [candle(0, 11.0, true)]);
    assert_eq!(store.revisions("BTCUSDT", Timeframe::M1).unwrap(), 1);
    let history = (s.revision_history)("BTCUSDT", Timeframe::M1);
    assert_eq!(history.len(), 1, "{history:?}");
    let Revision { revised_at, old } = history[0];
    assert_eq!(old.open_time, 0);
    assert!((before..=after).contains(&revised_at), "revised at {revised_at}, not in {before}..={after}");
    assert_eq!(old, Candle { close_time: 0, ..candle(0, 11.5, true) });
    // Two more versions in one batch: two more revisions, each keeping the values it replaced.
    let versions = [(BTC, candle(0, 12.0, true)), (BTC, candle(0, 13.0, true))];
    assert_eq!(store.write_candles(&streams, &versions).unwrap(), 2);
    assert_eq!(btc_all(store), [candle(0, 13.0, true)]);
    let closes: Vec<f64> = (s.revision_history)("BTCUSDT", Timeframe::M1).iter().map(|r| r.old.close).collect();
    assert_eq!(closes, [11.5, 11.0, 12.0]);
    assert_eq!(store.revisions("BTCUSDT", Timeframe::M1).unwrap(), 3);
    assert_eq!(store.revisions("ETHUSDT", Timeframe::M5).unwrap(), 0);
}

/// 10,000 closed candles over two streams, then in-progress updates of the next ones, in one call each.
fn ten_thousand() -> (Rows, Rows) {
    let closed = (0..10_000i64)
        .map(|i| {
            let stream = if i % 2 == 0 { BTC } else { ETH };
            (stream, candle((i / 2) * 60_000, 100.0 + i as f64, true))
        })
        .collect();
    let in_progress = (0..100i64).map(|i| (BTC, candle((5_000 + i) * 60_000, 1.0, false))).collect();
    (closed, in_progress)
}

fn a_batch_of_ten_thousand_rows_in_one_call(mut s: Subject) {
    let store = &mut *s.store;
    let streams = streams();
    let (closed, in_progress) = ten_thousand();
    assert_eq!(store.write_candles(&streams, &closed).unwrap(), 10_000);
    assert_eq!(store.write_candles(&streams, &in_progress).unwrap(), 100);
    // The same again: nothing changes.
    assert_eq!(store.write_candles(&streams, &closed).unwrap(), 0);
    let ranges = store.stored_ranges().unwrap();
    let btc = StoredRange::of(&ranges, &streams[0]);
    assert_eq!(
        (btc.first_closed, btc.last_closed, btc.present, btc.revisions),
        (Some(0), Some(4_999 * 60_000), 5_000, 0)
    );
    assert_eq!(StoredRange::of(&ranges, &streams[1]).present, 5_000);
    let stored = btc_all(store);
    assert_eq!(stored.len(), 5_100);
    let written: Vec<Candle> =
        closed.iter().chain(&in_progress).filter(|(stream, _)| *stream == BTC).map(|(_, c)| *c).collect();
    assert_eq!(stored, written);
}

fn all_indicators(store: &dyn Store, key: &StreamKey) -> BTreeMap<(i64, String), f64> {
    let mut all = BTreeMap::new();
    store
        .for_each_indicator_value(key, i64::MIN, i64::MAX, &mut |t, name, v| {
            all.insert((t, name.to_owned()), v);
        })
        .unwrap();
    all
}

fn indicator_values_are_overwritten_only_when_they_differ(mut s: Subject) {
    let store = &mut *s.store;
    let (streams, names) = (streams(), names());
    let candles = [(BTC, candle(0, 10.0, true)), (BTC, candle(60_000, 11.0, true))];
    let values = [ind(BTC, 60_000, 0, 10.5), ind(BTC, 60_000, 1, 100.0)];
    // Two candle rows and one indicator row (the candle's two values).
    assert_eq!(store.write_batch(&streams, &names, &candles, &values).unwrap(), 3);
    let want = BTreeMap::from([((60_000, "rsi_2".to_owned()), 100.0), ((60_000, "sma_2".to_owned()), 10.5)]);
    assert_eq!(all_indicators(store, &streams[0]), want);
    // A rebuild writes the same keys again: the new value wins; an unchanged one is not rewritten.
    let rebuilt = [ind(BTC, 60_000, 0, 10.75), ind(BTC, 60_000, 1, 100.0)];
    assert_eq!(store.write_batch(&streams, &names, &[], &rebuilt).unwrap(), 1);
    let want = BTreeMap::from([((60_000, "rsi_2".to_owned()), 100.0), ((60_000, "sma_2".to_owned()), 10.75)]);
    assert_eq!(all_indicators(store, &streams[0]), want);
    // The same output twice in one batch: the later value wins, in one row.
    let twice = [ind(BTC, 0, 0, 1.0), ind(BTC, 0, 0, 2.0)];
    assert_eq!(store.write_batch(&streams, &names, &[], &twice).unwrap(), 1);
    assert_eq!(all_indicators(store, &streams[0])[&(0, "sma_2".to_owned())], 2.0);
    assert!(all_indicators(store, &streams[1]).is_empty());
}

fn an_output_absent_from_a_later_write_keeps_its_stored_value(mut s: Subject) {
    let store = &mut *s.store;
    let (streams, names) = (streams(), names());
    store.write_batch(&streams, &names, &[], &[ind(BTC, 0, 0, 1.0), ind(BTC, 0, 1, 50.0)]).unwrap();
    // rsi_2 is absent (warm-up, or a partial rebuild): its stored value stays; sma_2 changes.
    assert_eq!(store.write_batch(&streams, &names, &[], &[ind(BTC, 0, 0, 1.5)]).unwrap(), 1);
    let want = BTreeMap::from([((0, "rsi_2".to_owned()), 50.0), ((0, "sma_2".to_owned()), 1.5)]);
    assert_eq!(all_indicators(store, &streams[0]), want);
    // A value unchanged beside an absent one: nothing is rewritten.
    assert_eq!(store.write_batch(&streams, &names, &[], &[ind(BTC, 0, 1, 50.0)]).unwrap(), 0);
    assert_eq!(all_indicators(store, &streams[0]), want);
    let point = IndicatorPoint { timestamp: 0, values: vec![("rsi_2".to_owned(), 50.0), ("sma_2".to_owned(), 1.5)] };
    assert_eq!(store.indicator_series("BTCUSDT", Timeframe::M1, 5).unwrap(), [point]);
}

fn a_new_output_name_is_stored_and_readable(mut s: Subject) {
    let store = &mut *s.store;
    let streams = streams();
    store.write_batch(&streams, &names(), &[], &[ind(BTC, 0, 0, 1.0)]).unwrap();
    // A set with one more output, ema_3 (a name never stored), written through a new numbering.
    let more = vec!["ema_3".to_owned(), "sma_2".to_owned(), "rsi_2".to_owned()];
    let values = [ind(BTC, 60_000, 0, 3.0), ind(BTC, 60_000, 1, 2.0), ind(ETH, 300_000, 0, 30.0)];
    assert_eq!(store.write_batch(&streams, &more, &[], &values).unwrap(), 2);
    assert_eq!(store.indicator_names(&streams[0], 0, i64::MAX).unwrap(), ["ema_3", "sma_2"]);
    assert_eq!(store.indicator_names(&streams[0], 0, 60_000).unwrap(), ["sma_2"]);
    assert_eq!(store.indicator_names(&streams[1], 0, i64::MAX).unwrap(), ["ema_3"]);
    let points = [
        IndicatorPoint { timestamp: 0, values: vec![("sma_2".to_owned(), 1.0)] },
        IndicatorPoint { timestamp: 60_000, values: vec![("ema_3".to_owned(), 3.0), ("sma_2".to_owned(), 2.0)] },
    ];
    assert_eq!(store.indicator_series("BTCUSDT", Timeframe::M1, 10).unwrap(), points);
    // Another handle (a reader opened beside the writer) reads it too.
    let other = (s.another)();
    assert_eq!(other.indicator_series("ETHUSDT", Timeframe::M5, 10).unwrap().len(), 1);
    assert_eq!(all_indicators(&*other, &streams[0]).len(), 3);
}

fn a_changed_indicator_set_leaves_the_old_outputs_values(mut s: Subject) {
    let store = &mut *s.store;
    let streams = streams();
    let old: Vec<_> = (0..3).flat_map(|i| [ind(BTC, i * 60_000, 0, i as f64), ind(BTC, i * 60_000, 1, 50.0)]).collect();
    store.write_batch(&streams, &names(), &[], &old).unwrap();
    // The new set names output 0 `ema_3` and nothing else; its rebuild rewrites every candle.
    let new_set = vec!["ema_3".to_owned()];
    let new: Vec<_> = (0..4).map(|i| ind(BTC, i * 60_000, 0, 10.0 + i as f64)).collect();
    assert_eq!(store.write_batch(&streams, &new_set, &[], &new).unwrap(), 4);
    let all = all_indicators(store, &streams[0]);
    assert_eq!(all.len(), 3 * 2 + 4, "{all:?}");
    assert_eq!(all[&(120_000, "sma_2".to_owned())], 2.0);
    assert_eq!(all[&(120_000, "rsi_2".to_owned())], 50.0);
    assert_eq!(all[&(180_000, "ema_3".to_owned())], 13.0);
    assert_eq!(store.indicator_names(&streams[0], 0, i64::MAX).unwrap(), ["ema_3", "rsi_2", "sma_2"]);
}

fn deleting_an_output_through_the_indicators_view_removes_only_it(mut s: Subject) {
    let store = &mut *s.store;
    let (streams, names) = (streams(), names());
    let values = [ind(BTC, 0, 0, 1.0), ind(BTC, 0, 1, 50.0), ind(BTC, 60_000, 1, 60.0), ind(ETH, 0, 1, 70.0)];
    store.write_batch(&streams, &names, &[], &values).unwrap();
    // As the README says: DELETE FROM indicators WHERE name = '…', here for one stream.
    (s.user_sql)("DELETE FROM indicators WHERE name = 'rsi_2' AND symbol = 'BTCUSDT'");
    let want = BTreeMap::from([((0, "sma_2".to_owned()), 1.0)]);
    assert_eq!(all_indicators(store, &streams[0]), want);
    assert_eq!(all_indicators(store, &streams[1]), BTreeMap::from([((0, "rsi_2".to_owned()), 70.0)]));
    assert_eq!(store.indicator_names(&streams[0], 0, i64::MAX).unwrap(), ["sma_2"]);
    // The candle left with no value is not in the series.
    let point = IndicatorPoint { timestamp: 0, values: vec![("sma_2".to_owned(), 1.0)] };
    assert_eq!(store.indicator_series("BTCUSDT", Timeframe::M1, 10).unwrap(), [point]);
    // Written again, the output is back.
    store.write_batch(&streams, &names, &[], &[ind(BTC, 60_000, 1, 61.0)]).unwrap();
    assert_eq!(all_indicators(store, &streams[0])[&(60_000, "rsi_2".to_owned())], 61.0);
}

fn hand_edits_through_the_candles_view_apply_to_the_store(mut s: Subject) {
    let store = &mut *s.store;
    let streams = streams();
    let rows: Vec<_> = (0..4).map(|i| (BTC, candle(i * 60_000, 10.0 + i as f64, true))).collect();
    store.write_candles(&streams, &rows).unwrap();
    // As the tests do: reopen a closed candle (a revision), delete a range.
    (s.user_sql)("UPDATE candles SET is_closed = 0 WHERE symbol = 'BTCUSDT' AND timeframe = '1m' AND timestamp = 0");
    (s.user_sql)("DELETE FROM candles WHERE symbol = 'BTCUSDT' AND timestamp BETWEEN 120000 AND 180000");
    assert_eq!(btc_all(store), [candle(0, 10.0, false), rows[1].1]);
    assert_eq!(store.revisions("BTCUSDT", Timeframe::M1).unwrap(), 1);
    assert_eq!(store.last_closed_of(&streams[0]).unwrap(), Some(60_000));
    // The store writes the deleted candles again, and closes the reopened one.
    assert_eq!(store.write_candles(&streams, &rows).unwrap(), 3);
    assert_eq!(btc_all(store), rows.iter().map(|(_, c)| *c).collect::<Vec<_>>());
}

fn changed_counts_count_candle_rows_and_indicator_rows(mut s: Subject) {
    let store = &mut *s.store;
    let (streams, names) = (streams(), names());
    let candles = [(BTC, candle(0, 10.0, true)), (BTC, candle(60_000, 11.0, true)), (ETH, candle(0, 20.0, true))];
    let values = [ind(BTC, 0, 0, 1.0), ind(BTC, 0, 1, 50.0), ind(BTC, 60_000, 0, 2.0), ind(ETH, 0, 1, 40.0)];
    // 3 candle rows, 3 indicator rows (one per candle with values).
    assert_eq!(store.write_batch(&streams, &names, &candles, &values).unwrap(), 6);
    assert_eq!(store.write_batch(&streams, &names, &candles, &values).unwrap(), 0);
    // One value of one candle changed, one added to another: two rows.
    let changed = [ind(BTC, 0, 0, 1.0), ind(BTC, 0, 1, 51.0), ind(BTC, 60_000, 1, 52.0), ind(ETH, 0, 1, 40.0)];
    assert_eq!(store.write_batch(&streams, &names, &[], &changed).unwrap(), 2);
    // Values in no particular order count the same.
    let shuffled = [ind(ETH, 0, 0, 5.0), ind(BTC, 0, 0, 9.0), ind(ETH, 0, 1, 41.0), ind(BTC, 0, 0, 9.0)];
    assert_eq!(store.write_batch(&streams, &names, &[], &shuffled).unwrap(), 2);
    assert_eq!(all_indicators(store, &streams[1]).values().copied().collect::<Vec<_>>(), [41.0, 5.0]);
}

fn an_unknown_stream_or_output_writes_nothing(mut s: Subject) {
    let store = &mut *s.store;
    let (streams, names) = (streams(), names());
    let good = [(BTC, candle(0, 10.0, true))];
    let result = store.write_batch(&streams, &names, &good, &[ind(BTC, 0, 7, 1.0)]);
    assert!(matches!(result, Err(super::StoreError::UnknownOutput(7))), "{result:?}");
    let result = store.write_candles(&streams, &[good[0], (StreamId(9), candle(0, 1.0, true))]);
    assert!(matches!(result, Err(super::StoreError::UnknownStream(StreamId(9)))), "{result:?}");
    assert!(btc_all(store).is_empty());
    assert!(all_indicators(store, &streams[0]).is_empty());
    assert!(!store.has_symbol("BTCUSDT").unwrap());
}

fn exchange_gaps_are_recorded_and_replaced(mut s: Subject) {
    let store = &mut *s.store;
    let streams = streams();
    assert!(store.exchange_gaps().unwrap().is_empty());
    let gap = |from_open, to_open| Gap { from_open, to_open };
    store.record_exchange_gaps(&streams[0], &[gap(600_000, 720_000), gap(0, 120_000)]).unwrap();
    store.record_exchange_gaps(&streams[1], &[gap(0, 300_000)]).unwrap();
    // A gap starting where a recorded one starts replaces it; recording nothing is fine.
    store.record_exchange_gaps(&streams[0], &[gap(0, 180_000)]).unwrap();
    store.record_exchange_gaps(&streams[1], &[]).unwrap();
    let gaps = store.exchange_gaps().unwrap();
    assert_eq!(gaps.len(), 2);
    assert_eq!(gaps[&("BTCUSDT".to_owned(), Timeframe::M1)], [gap(0, 180_000), gap(600_000, 720_000)]);
    assert_eq!(gaps[&("ETHUSDT".to_owned(), Timeframe::M5)], [gap(0, 300_000)]);
}

fn every_read(mut s: Subject) {
    let store = &mut *s.store;
    let (streams, names) = (streams(), names());
    // BTC 1m: closed 0..=3 minutes, minute 4 in progress; ETH 5m: one closed candle. Indicators on minutes 1..=3.
    let mut rows: Vec<_> = (0..5).map(|i| (BTC, candle(i * 60_000, 10.0 + i as f64, i < 4))).collect();
    rows.push((ETH, candle(300_000, 50.0, true)));
    let values: Vec<_> =
        (1..4).flat_map(|i| [ind(BTC, i * 60_000, 0, i as f64), ind(BTC, i * 60_000, 1, 50.0)]).collect();
    store.write_batch(&streams, &names, &rows, &values).unwrap();
    store.write_candles(&streams, &[(BTC, candle(0, 9.0, true))]).unwrap();
    let btc = |i: usize| if i == 0 { candle(0, 9.0, true) } else { rows[i].1 };

    // candles_window: [start, end), the oldest or the newest `limit`, always oldest first.
    let window = |start, end, limit, which| store.candles_window("BTCUSDT", Timeframe::M1, start, end, limit, which);
    assert_eq!(window(0, i64::MAX, 2, Window::Oldest).unwrap(), [btc(0), btc(1)]);
    assert_eq!(window(0, i64::MAX, 2, Window::Newest).unwrap(), [btc(3), btc(4)]);
    assert_eq!(window(60_000, 180_000, 10, Window::Oldest).unwrap(), [btc(1), btc(2)]);
    assert_eq!(window(60_000, 180_000, 10, Window::Newest).unwrap(), [btc(1), btc(2)]);
    assert!(window(0, i64::MAX, 0, Window::Newest).unwrap().is_empty());
    assert!(store.candles_window("BTCUSDT", Timeframe::M5, 0, i64::MAX, 10, Window::Oldest).unwrap().is_empty());

    // closed_candles: closed only, oldest first.
    assert_eq!(store.closed_candles("BTCUSDT", Timeframe::M1).unwrap(), [btc(0), btc(1), btc(2), btc(3)]);
    assert_eq!(store.closed_candles("ETHUSDT", Timeframe::M5).unwrap(), [rows[5].1]);

    // indicator_series: the newest `limit` timestamps, ascending, names sorted.
    let point = |t: i64| IndicatorPoint {
        timestamp: t * 60_000,
        values: vec![("rsi_2".to_owned(), 50.0), ("sma_2".to_owned(), t as f64)],
    };
    assert_eq!(store.indicator_series("BTCUSDT", Timeframe::M1, 2).unwrap(), [point(2), point(3)]);
    assert_eq!(store.indicator_series("BTCUSDT", Timeframe::M1, 10).unwrap(), [point(1), point(2), point(3)]);
    assert!(store.indicator_series("ETHUSDT", Timeframe::M5, 2).unwrap().is_empty());

    // Revisions, per stream.
    assert_eq!(store.revisions("BTCUSDT", Timeframe::M1).unwrap(), 1);
    assert_eq!(store.revisions("ETHUSDT", Timeframe::M5).unwrap(), 0);

    // last_closed: per stream, in-progress ignored; first/last_closed_of.
    let last = store.last_closed().unwrap();
    assert_eq!(
        last,
        HashMap::from([
            (("BTCUSDT".to_owned(), Timeframe::M1), 180_000),
            (("ETHUSDT".to_owned(), Timeframe::M5), 300_000)
        ])
    );
    assert_eq!(store.first_closed(&streams[0]).unwrap(), Some(0));
    assert_eq!(store.last_closed_of(&streams[0]).unwrap(), Some(180_000));
    assert_eq!(store.first_closed(&streams[1]).unwrap(), Some(300_000));
    let absent = StreamKey::new("XRPUSDT", Timeframe::H1);
    assert_eq!(store.first_closed(&absent).unwrap(), None);
    assert_eq!(store.last_closed_of(&absent).unwrap(), None);

    // stored_opens: [from, to], closed and in progress apart.
    assert_eq!(
        store.stored_opens(&streams[0], 60_000, 240_000).unwrap(),
        (vec![60_000, 120_000, 180_000], vec![240_000])
    );
    assert_eq!(store.stored_opens(&streams[0], 0, 60_000).unwrap(), (vec![0, 60_000], vec![]));
    assert_eq!(store.stored_opens(&absent, 0, i64::MAX).unwrap(), (vec![], vec![]));

    // stored_ranges: closed only, with the revisions.
    let ranges = store.stored_ranges().unwrap();
    assert_eq!(ranges.len(), 2);
    let range = StoredRange::of(&ranges, &streams[0]);
    assert_eq!((range.first_closed, range.last_closed, range.present, range.revisions), (Some(0), Some(180_000), 4, 1));
    let range = StoredRange::of(&ranges, &streams[1]);
    assert_eq!(
        (range.first_closed, range.last_closed, range.present, range.revisions),
        (Some(300_000), Some(300_000), 1, 0)
    );

    // has_symbol.
    assert!(store.has_symbol("BTCUSDT").unwrap());
    assert!(store.has_symbol("ETHUSDT").unwrap());
    assert!(!store.has_symbol("XRPUSDT").unwrap());

    // indicator_names: [from, to), sorted.
    assert_eq!(store.indicator_names(&streams[0], 0, i64::MAX).unwrap(), ["rsi_2", "sma_2"]);
    assert!(store.indicator_names(&streams[0], 0, 60_000).unwrap().is_empty());
    assert_eq!(store.indicator_names(&streams[0], 60_000, 60_001).unwrap(), ["rsi_2", "sma_2"]);
    assert!(store.indicator_names(&streams[1], 0, i64::MAX).unwrap().is_empty());

    // for_each_indicator_value: [from, to], every value.
    let mut seen = Vec::new();
    store
        .for_each_indicator_value(&streams[0], 60_000, 120_000, &mut |t, name, v| seen.push((t, name.to_owned(), v)))
        .unwrap();
    seen.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let want = [
        (60_000, "rsi_2".to_owned(), 50.0),
        (60_000, "sma_2".to_owned(), 1.0),
        (120_000, "rsi_2".to_owned(), 50.0),
        (120_000, "sma_2".to_owned(), 2.0),
    ];
    assert_eq!(seen, want);

    // The handle is healthy, and closing it loses nothing.
    store.check().unwrap();
    store.close().unwrap();
    let reopened = (s.another)();
    assert_eq!(reopened.closed_candles("BTCUSDT", Timeframe::M1).unwrap().len(), 4);
}

/// Runs `write` on two threads, each with its own handle (opened beforehand), started together.
fn on_two_writers(s: &Subject, write: fn(usize, &mut dyn Store)) {
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let writers: Vec<_> = (0..2)
        .map(|writer| {
            let (mut store, barrier) = ((s.another)(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                write(writer, &mut *store);
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("a writer panicked");
    }
}

/// 2,000 closed candles per stream.
fn closed_rows(close: f64) -> Vec<(StreamId, Candle)> {
    (0..4_000i64).map(|i| (if i % 2 == 0 { BTC } else { ETH }, candle((i / 2) * 60_000, close, true))).collect()
}

fn concurrent_writers_of_the_same_candles_record_no_spurious_revision(s: Subject) {
    // Two replicas write the same closed candles in overlapping batches, in opposite orders, with in-progress
    // updates of the same candles around them.
    on_two_writers(&s, |writer, store| {
        let streams = streams();
        let mut rows = closed_rows(42.0);
        if writer == 1 {
            rows.reverse();
        }
        for batch in rows.chunks(700) {
            let mut with_updates: Vec<_> =
                batch.iter().map(|(id, c)| (*id, Candle { close: 1.0, is_closed: false, ..*c })).collect();
            with_updates.extend_from_slice(batch);
            store.write_candles(&streams, &with_updates).unwrap();
        }
    });
    let store = &*s.store;
    let mut want: Vec<Candle> = closed_rows(42.0).into_iter().filter(|(id, _)| *id == BTC).map(|(_, c)| c).collect();
    want.sort_by_key(|c| c.open_time);
    assert_eq!(btc_all(store), want);
    assert_eq!(store.closed_candles("ETHUSDT", Timeframe::M5).unwrap().len(), 2_000);
    assert_eq!(store.revisions("BTCUSDT", Timeframe::M1).unwrap(), 0);
    assert_eq!(store.revisions("ETHUSDT", Timeframe::M5).unwrap(), 0);
}

fn concurrent_writers_of_differing_closed_candles_record_exactly_one_revision(s: Subject) {
    // Each writer closes every candle with its own value: whichever comes second revises it, once.
    on_two_writers(&s, |writer, store| {
        let streams = streams();
        for batch in closed_rows(writer as f64).chunks(500) {
            store.write_candles(&streams, batch).unwrap();
        }
    });
    let store = &*s.store;
    assert_eq!(store.revisions("BTCUSDT", Timeframe::M1).unwrap(), 2_000);
    assert_eq!(store.revisions("ETHUSDT", Timeframe::M5).unwrap(), 2_000);
    let kept: HashMap<i64, f64> = btc_all(store).iter().map(|c| (c.open_time, c.close)).collect();
    let history = (s.revision_history)("BTCUSDT", Timeframe::M1);
    assert_eq!(kept.len(), 2_000);
    for Revision { old, .. } in history {
        let open_time = old.open_time;
        // The revision kept the other writer's value.
        assert_eq!(old.close, 1.0 - kept[&open_time], "revision of {open_time}");
    }
}
