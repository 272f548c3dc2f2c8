//! The SQLite store (the embedded default) of candles and indicator values: the schema, the batched upsert that keeps closed candles final
//! (with the indicator values of the same batch in the same transaction), the reads, and the check that the open
//! file is still the one at its path.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, params};

use super::{FileChange, IndicatorPoint, IndicatorRow, Store, StoreError, StoredRange, StoredRanges, Window};
use crate::domain::{Candle, Gap, StreamId, StreamKey, Timeframe};

/// The schema. `candles` is keyed by (symbol, timeframe, open time). A closed candle that is written again with
/// other values is a revision: the trigger keeps the old values in `candle_revisions`, stamped in ms UTC.
///
/// The trigger uses only functions SQLite 3.31 has (`unixepoch('subsec')` needs 3.42: older `sqlite3` tools, such as
/// Debian 12's, evaluate it to NULL and then fail any `UPDATE` of a closed candle). It is dropped and created again
/// on every open, which migrates a database made with the old trigger.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS candles (
    symbol          TEXT    NOT NULL,
    timeframe       TEXT    NOT NULL,
    timestamp       INTEGER NOT NULL,
    open            REAL    NOT NULL,
    high            REAL    NOT NULL,
    low             REAL    NOT NULL,
    close           REAL    NOT NULL,
    volume          REAL    NOT NULL,
    close_time      INTEGER NOT NULL,
    quote_volume    REAL    NOT NULL,
    trades          INTEGER NOT NULL,
    taker_buy_base  REAL    NOT NULL,
    taker_buy_quote REAL    NOT NULL,
    is_closed       INTEGER NOT NULL CHECK (is_closed IN (0, 1)),
    PRIMARY KEY (symbol, timeframe, timestamp)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS candle_revisions (
    symbol          TEXT    NOT NULL,
    timeframe       TEXT    NOT NULL,
    timestamp       INTEGER NOT NULL,
    revised_at      INTEGER NOT NULL,
    open            REAL    NOT NULL,
    high            REAL    NOT NULL,
    low             REAL    NOT NULL,
    close           REAL    NOT NULL,
    volume          REAL    NOT NULL,
    quote_volume    REAL    NOT NULL,
    trades          INTEGER NOT NULL,
    taker_buy_base  REAL    NOT NULL,
    taker_buy_quote REAL    NOT NULL
);

DROP TRIGGER IF EXISTS candle_revision;
CREATE TRIGGER candle_revision AFTER UPDATE ON candles WHEN old.is_closed = 1
BEGIN
    INSERT INTO candle_revisions VALUES (
        old.symbol, old.timeframe, old.timestamp,
        CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER),
        old.open, old.high, old.low, old.close, old.volume, old.quote_volume, old.trades,
        old.taker_buy_base, old.taker_buy_quote);
END;

CREATE TABLE IF NOT EXISTS indicators (
    symbol    TEXT    NOT NULL,
    timeframe TEXT    NOT NULL,
    timestamp INTEGER NOT NULL,
    name      TEXT    NOT NULL,
    value     REAL    NOT NULL,
    PRIMARY KEY (symbol, timeframe, timestamp, name)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS exchange_gaps (
    symbol    TEXT    NOT NULL,
    timeframe TEXT    NOT NULL,
    from_open INTEGER NOT NULL,
    to_open   INTEGER NOT NULL,
    PRIMARY KEY (symbol, timeframe, from_open)
) WITHOUT ROWID;
";

/// The upsert. An in-progress row is replaced by any newer update; a closed row is final: an in-progress update
/// never touches it, and a closed one only when its values differ (a revision).
const UPSERT_CANDLE: &str = "
INSERT INTO candles (symbol, timeframe, timestamp, open, high, low, close, volume, close_time, quote_volume,
                     trades, taker_buy_base, taker_buy_quote, is_closed)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
ON CONFLICT (symbol, timeframe, timestamp) DO UPDATE SET
    open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
    volume = excluded.volume, close_time = excluded.close_time, quote_volume = excluded.quote_volume,
    trades = excluded.trades, taker_buy_base = excluded.taker_buy_base, taker_buy_quote = excluded.taker_buy_quote,
    is_closed = excluded.is_closed
WHERE candles.is_closed = 0
   OR (excluded.is_closed = 1
       AND (candles.open, candles.high, candles.low, candles.close, candles.volume, candles.close_time,
            candles.quote_volume, candles.trades, candles.taker_buy_base, candles.taker_buy_quote)
           IS NOT (excluded.open, excluded.high, excluded.low, excluded.close, excluded.volume, excluded.close_time,
                   excluded.quote_volume, excluded.trades, excluded.taker_buy_base, excluded.taker_buy_quote))
";

/// The indicator upsert. A rebuild recomputes values and overwrites them; an unchanged value is not rewritten.
const UPSERT_INDICATOR: &str = "
INSERT INTO indicators (symbol, timeframe, timestamp, name, value) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (symbol, timeframe, timestamp, name) DO UPDATE SET value = excluded.value
WHERE indicators.value IS NOT excluded.value
";

const CANDLE_COLUMNS: &str = "timestamp, close_time, open, high, low, close, volume, quote_volume, trades, \
                              taker_buy_base, taker_buy_quote, is_closed";

/// A file's identity: the device and inode it lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    device: u64,
    inode: u64,
}

impl FileId {
    fn of(path: &Path) -> std::io::Result<Self> {
        let metadata = std::fs::metadata(path)?;
        Ok(Self { device: metadata.dev(), inode: metadata.ino() })
    }
}

/// One SQLite connection to the candle database.
pub struct SqliteStore {
    conn: Connection,
    /// The path the database was opened at, and the identity of the file it was then: `None` in memory.
    file: Option<(PathBuf, FileId)>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database for writing: WAL, `synchronous=NORMAL`, schema applied.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut store = Self::configure(Connection::open(path)?)?;
        let id = FileId::of(path).map_err(|source| StoreError::File { path: path.to_owned(), source })?;
        store.file = Some((path.to_owned(), id));
        Ok(store)
    }

    /// An in-memory database, for tests and benches.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::configure(Connection::open_in_memory()?)
    }

    /// Opens an existing database read-only, for queries beside the writer.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self { conn, file: None })
    }

    /// WAL, `synchronous=NORMAL`, and the schema in one transaction, so that the trigger is never missing.
    fn configure(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA)?;
        tx.commit()?;
        Ok(Self { conn, file: None })
    }

    /// `Err(FileChanged)` when the file at the path the store was opened at is no longer the one it opened (deleted,
    /// or replaced by another file): its writes would then go to a file nobody can find. A store in memory has no
    /// file and is always fine.
    pub fn check_file(&self) -> Result<(), StoreError> {
        let Some((path, opened)) = &self.file else { return Ok(()) };
        let change = match FileId::of(path) {
            Ok(id) if id == *opened => return Ok(()),
            Ok(_) => FileChange::Replaced,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => FileChange::Deleted,
            Err(source) => return Err(StoreError::File { path: path.clone(), source }),
        };
        Err(StoreError::FileChanged { path: path.clone(), change })
    }

    /// `MIN` or `MAX` of a stream's closed open times: one step down its primary key.
    fn closed_bound(&self, key: &StreamKey, aggregate: &str) -> Result<Option<i64>, StoreError> {
        let sql = format!(
            "SELECT {aggregate}(timestamp) FROM candles WHERE symbol = ?1 AND timeframe = ?2 AND is_closed = 1"
        );
        Ok(self.conn.query_row(&sql, params![key.symbol, key.timeframe.as_str()], |row| row.get(0))?)
    }

    /// Folds the WAL into the main database file and truncates it.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// The underlying connection, for ad-hoc queries in tests and tools.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl Store for SqliteStore {
    /// Upserts a batch in one transaction: the candles, then the indicator values (named by `names`), each with
    /// one cached prepared statement. Returns the rows changed.
    fn write_batch(
        &mut self,
        streams: &[StreamKey],
        names: &[String],
        candles: &[(StreamId, Candle)],
        indicators: &[IndicatorRow],
    ) -> Result<usize, StoreError> {
        let key = |stream: StreamId| streams.get(stream.0 as usize).ok_or(StoreError::UnknownStream(stream));
        let tx = self.conn.transaction()?;
        let mut changed = 0;
        {
            let mut upsert = tx.prepare_cached(UPSERT_CANDLE)?;
            for (stream, c) in candles {
                let key = key(*stream)?;
                changed += upsert.execute(params![
                    key.symbol,
                    key.timeframe.as_str(),
                    c.open_time,
                    c.open,
                    c.high,
                    c.low,
                    c.close,
                    c.volume,
                    c.close_time,
                    c.quote_volume,
                    c.trades as i64,
                    c.taker_buy_base,
                    c.taker_buy_quote,
                    c.is_closed,
                ])?;
            }
        }
        if !indicators.is_empty() {
            let mut upsert = tx.prepare_cached(UPSERT_INDICATOR)?;
            for row in indicators {
                let key = key(row.stream)?;
                let name = names.get(usize::from(row.output)).ok_or(StoreError::UnknownOutput(row.output))?;
                changed +=
                    upsert.execute(params![key.symbol, key.timeframe.as_str(), row.open_time, name, row.value])?;
            }
        }
        tx.commit()?;
        Ok(changed)
    }

    /// The newest closed open time stored for each stream.
    fn last_closed(&self) -> Result<HashMap<(String, Timeframe), i64>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT symbol, timeframe, MAX(timestamp) FROM candles WHERE is_closed = 1 GROUP BY symbol, timeframe",
        )?;
        let rows = stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get(2)?)))?;
        let mut last = HashMap::new();
        for row in rows {
            let (symbol, timeframe, open_time) = row?;
            let timeframe = timeframe.parse().map_err(|_| StoreError::BadTimeframe(timeframe))?;
            last.insert((symbol, timeframe), open_time);
        }
        Ok(last)
    }

    /// Stored candles of one stream with `start <= open time < end`, oldest first: the oldest or the newest
    /// `limit` of them.
    fn candles_window(
        &self,
        symbol: &str,
        timeframe: Timeframe,
        start: i64,
        end: i64,
        limit: usize,
        window: Window,
    ) -> Result<Vec<Candle>, StoreError> {
        let order = match window {
            Window::Oldest => "ASC",
            Window::Newest => "DESC",
        };
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CANDLE_COLUMNS} FROM candles
             WHERE symbol = ?1 AND timeframe = ?2 AND timestamp >= ?3 AND timestamp < ?4
             ORDER BY timestamp {order} LIMIT ?5"
        ))?;
        let rows = stmt.query_map(params![symbol, timeframe.as_str(), start, end, limit as i64], candle_from_row)?;
        let mut candles = rows.collect::<Result<Vec<_>, _>>()?;
        if window == Window::Newest {
            candles.reverse();
        }
        Ok(candles)
    }

    /// Every closed candle of one stream, oldest first: what the indicators are recomputed from.
    fn closed_candles(&self, symbol: &str, timeframe: Timeframe) -> Result<Vec<Candle>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CANDLE_COLUMNS} FROM candles
             WHERE symbol = ?1 AND timeframe = ?2 AND is_closed = 1 ORDER BY timestamp"
        ))?;
        let rows = stmt.query_map(params![symbol, timeframe.as_str()], candle_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stored indicator values of the newest `limit` candles that have any, oldest first, names sorted.
    fn indicator_series(
        &self,
        symbol: &str,
        timeframe: Timeframe,
        limit: usize,
    ) -> Result<Vec<IndicatorPoint>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT timestamp, name, value FROM indicators
             WHERE symbol = ?1 AND timeframe = ?2 AND timestamp >= (
                 SELECT MIN(timestamp) FROM (
                     SELECT DISTINCT timestamp FROM indicators WHERE symbol = ?1 AND timeframe = ?2
                     ORDER BY timestamp DESC LIMIT ?3))
             ORDER BY timestamp, name",
        )?;
        let rows = stmt.query_map(params![symbol, timeframe.as_str(), limit as i64], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, f64>(2)?))
        })?;
        let mut series: Vec<IndicatorPoint> = Vec::new();
        for row in rows {
            let (timestamp, name, value) = row?;
            match series.last_mut() {
                Some(point) if point.timestamp == timestamp => point.values.push((name, value)),
                _ => series.push(IndicatorPoint { timestamp, values: vec![(name, value)] }),
            }
        }
        Ok(series)
    }

    /// The number of revisions recorded for a stream.
    fn revisions(&self, symbol: &str, timeframe: Timeframe) -> Result<u64, StoreError> {
        let count: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM candle_revisions WHERE symbol = ?1 AND timeframe = ?2",
            params![symbol, timeframe.as_str()],
            |row| row.get(0),
        )?;
        Ok(count as u64)
    }

    /// Records ranges `[from_open, to_open)` the exchange confirmed it has no candles for.
    fn record_exchange_gaps(&mut self, key: &StreamKey, gaps: &[Gap]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO exchange_gaps (symbol, timeframe, from_open, to_open) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for gap in gaps {
                insert.execute(params![key.symbol, key.timeframe.as_str(), gap.from_open, gap.to_open])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every recorded exchange gap, by stream, oldest first.
    fn exchange_gaps(&self) -> Result<HashMap<(String, Timeframe), Vec<Gap>>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT symbol, timeframe, from_open, to_open FROM exchange_gaps ORDER BY symbol, timeframe, from_open",
        )?;
        let rows = stmt.query_map([], |row| {
            let gap = Gap { from_open: row.get(2)?, to_open: row.get(3)? };
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, gap))
        })?;
        let mut gaps: HashMap<(String, Timeframe), Vec<Gap>> = HashMap::new();
        for row in rows {
            let (symbol, timeframe, gap) = row?;
            let timeframe = timeframe.parse().map_err(|_| StoreError::BadTimeframe(timeframe))?;
            gaps.entry((symbol, timeframe)).or_default().push(gap);
        }
        Ok(gaps)
    }

    /// The oldest closed open time stored for a stream.
    fn first_closed(&self, key: &StreamKey) -> Result<Option<i64>, StoreError> {
        self.closed_bound(key, "MIN")
    }

    /// The newest closed open time stored for a stream.
    fn last_closed_of(&self, key: &StreamKey) -> Result<Option<i64>, StoreError> {
        self.closed_bound(key, "MAX")
    }

    /// The open times stored for a stream in `[from, to]`, oldest first: closed ones, and ones still in progress.
    fn stored_opens(&self, key: &StreamKey, from: i64, to: i64) -> Result<(Vec<i64>, Vec<i64>), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT timestamp, is_closed FROM candles
             WHERE symbol = ?1 AND timeframe = ?2 AND timestamp >= ?3 AND timestamp <= ?4 ORDER BY timestamp",
        )?;
        let rows = stmt.query_map(params![key.symbol, key.timeframe.as_str(), from, to], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, bool>(1)?))
        })?;
        let (mut closed, mut in_progress) = (Vec::new(), Vec::new());
        for row in rows {
            let (open, is_closed) = row?;
            if is_closed { closed.push(open) } else { in_progress.push(open) }
        }
        Ok((closed, in_progress))
    }

    fn stored_ranges(&self) -> Result<StoredRanges, StoreError> {
        let mut ranges = HashMap::new();
        let mut stmt = self.conn.prepare(
            "SELECT symbol, timeframe, MIN(timestamp), MAX(timestamp), COUNT(*) FROM candles WHERE is_closed = 1
             GROUP BY symbol, timeframe",
        )?;
        let rows = stmt.query_map([], |row| {
            let range = StoredRange {
                first_closed: row.get(2)?,
                last_closed: row.get(3)?,
                present: row.get::<_, i64>(4)? as u64,
                revisions: 0,
            };
            Ok(((row.get(0)?, row.get(1)?), range))
        })?;
        for row in rows {
            let (key, range) = row?;
            ranges.insert(key, range);
        }
        let mut stmt =
            self.conn.prepare("SELECT symbol, timeframe, COUNT(*) FROM candle_revisions GROUP BY symbol, timeframe")?;
        let rows = stmt.query_map([], |row| Ok(((row.get(0)?, row.get(1)?), row.get::<_, i64>(2)? as u64)))?;
        for row in rows {
            let (key, revisions) = row?;
            ranges.entry(key).or_insert_with(StoredRange::default).revisions = revisions;
        }
        Ok(ranges)
    }

    fn has_symbol(&self, symbol: &str) -> Result<bool, StoreError> {
        let exists = "SELECT EXISTS (SELECT 1 FROM candles WHERE symbol = ?1)";
        Ok(self.conn.query_row(exists, [symbol], |row| row.get::<_, bool>(0))?)
    }

    fn indicator_names(&self, key: &StreamKey, from: i64, to: i64) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT name FROM indicators
             WHERE symbol = ?1 AND timeframe = ?2 AND timestamp >= ?3 AND timestamp < ?4 ORDER BY name",
        )?;
        let rows = stmt.query_map(params![key.symbol, key.timeframe.as_str(), from, to], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn for_each_indicator_value(
        &self,
        key: &StreamKey,
        from: i64,
        to: i64,
        each: &mut dyn FnMut(i64, &str, f64),
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT timestamp, name, value FROM indicators
             WHERE symbol = ?1 AND timeframe = ?2 AND timestamp >= ?3 AND timestamp <= ?4",
        )?;
        let mut rows = stmt.query(params![key.symbol, key.timeframe.as_str(), from, to])?;
        // Millions of rows on an export: the name is compared where SQLite holds it, not copied.
        while let Some(row) = rows.next()? {
            let name = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            each(row.get(0)?, name, row.get(2)?);
        }
        Ok(())
    }

    fn check(&self) -> Result<(), StoreError> {
        self.check_file()
    }

    fn close(&mut self) -> Result<(), StoreError> {
        self.checkpoint()
    }
}

/// Reads a row selected with [`CANDLE_COLUMNS`].
fn candle_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Candle> {
    Ok(Candle {
        open_time: row.get(0)?,
        close_time: row.get(1)?,
        open: row.get(2)?,
        high: row.get(3)?,
        low: row.get(4)?,
        close: row.get(5)?,
        volume: row.get(6)?,
        quote_volume: row.get(7)?,
        trades: row.get::<_, i64>(8)? as u64,
        taker_buy_base: row.get(9)?,
        taker_buy_quote: row.get(10)?,
        is_closed: row.get(11)?,
    })
}

#[cfg(test)]
mod tests {
    //! The SQLite-only tests: the trigger, the file checks. The rules and reads are in the conformance suite.

    use super::*;
    use crate::store::conformance::candle;

    fn store() -> (SqliteStore, Vec<StreamKey>) {
        (SqliteStore::open_in_memory().unwrap(), vec![StreamKey::new("BTCUSDT", Timeframe::M1)])
    }

    fn read_all(store: &SqliteStore) -> Vec<Candle> {
        store.candles_window("BTCUSDT", Timeframe::M1, 0, i64::MAX, 100, Window::Oldest).unwrap()
    }

    /// The `revised_at` of every recorded revision.
    fn revised_at(conn: &Connection) -> Vec<Option<i64>> {
        let mut stmt = conn.prepare("SELECT revised_at FROM candle_revisions").unwrap();
        stmt.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
    }

    fn assert_stamped_now(stamps: &[Option<i64>], before: i64) {
        let after = crate::tasks::unix_ms();
        assert_eq!(stamps.len(), 1, "one revision: {stamps:?}");
        assert!(stamps[0].is_some_and(|at| (before..=after).contains(&at)), "{stamps:?} not in {before}..={after}");
    }

    #[test]
    fn a_revision_is_stamped_with_the_time_in_ms() {
        let (mut store, streams) = store();
        let id = StreamId(0);
        store.write_candles(&streams, &[(id, candle(0, 11.5, true))]).unwrap();
        let before = crate::tasks::unix_ms();
        store.write_candles(&streams, &[(id, candle(0, 11.0, true))]).unwrap();
        assert_stamped_now(&revised_at(store.connection()), before);
    }

    /// The trigger as it was before SQLite 3.31 compatibility, which needs 3.42.
    const TRIGGER_NEEDING_3_42: &str = "
        DROP TRIGGER candle_revision;
        CREATE TRIGGER candle_revision AFTER UPDATE ON candles WHEN old.is_closed = 1
        BEGIN
            INSERT INTO candle_revisions VALUES (
                old.symbol, old.timeframe, old.timestamp, CAST(unixepoch('subsec') * 1000 AS INTEGER),
                old.open, old.high, old.low, old.close, old.volume, old.quote_volume, old.trades,
                old.taker_buy_base, old.taker_buy_quote);
        END;";

    /// A database file holding one closed BTCUSDT 1m candle, made with the old trigger.
    fn database_with_the_old_trigger(dir: &Path) -> PathBuf {
        let path = dir.join("candles.db");
        let (_, streams) = store();
        let mut store = SqliteStore::open(&path).unwrap();
        store.write_candles(&streams, &[(StreamId(0), candle(0, 11.5, true))]).unwrap();
        store.connection().execute_batch(TRIGGER_NEEDING_3_42).unwrap();
        path
    }

    fn trigger_sql(conn: &Connection) -> String {
        conn.query_row("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'candle_revision'", [], |r| {
            r.get(0)
        })
        .unwrap()
    }

    #[test]
    fn opening_a_database_replaces_the_trigger_that_needs_sqlite_3_42() {
        let dir = tempfile::tempdir().unwrap();
        let path = database_with_the_old_trigger(dir.path());
        let store = SqliteStore::open(&path).unwrap();
        let sql = trigger_sql(store.connection());
        assert!(!sql.contains("unixepoch") && sql.contains("julianday"), "{sql}");
    }

    /// A user's `sqlite3` tool (3.40 on Debian 12; CI installs it) updates a closed candle of a database made with
    /// the old trigger, once candled has opened it: the revision is recorded with the time.
    #[test]
    fn the_sqlite3_tool_can_update_a_closed_candle() {
        let dir = tempfile::tempdir().unwrap();
        let path = database_with_the_old_trigger(dir.path());
        drop(SqliteStore::open(&path).unwrap());
        let before = crate::tasks::unix_ms();
        let sql = "UPDATE candles SET close = 12.0 WHERE symbol = 'BTCUSDT' AND timestamp = 0;";
        let output = std::process::Command::new("sqlite3")
            .arg(&path)
            .arg(sql)
            .output()
            .expect("the sqlite3 command-line tool is installed (apt-get install sqlite3)");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success() && stderr.is_empty(), "sqlite3 failed: {stderr}");
        let store = SqliteStore::open_read_only(&path).unwrap();
        assert_stamped_now(&revised_at(store.connection()), before);
        assert_eq!(read_all(&store)[0].close, 12.0);
    }

    #[test]
    fn a_deleted_or_replaced_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("candles.db");
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.check_file().is_ok());
        std::fs::remove_file(&path).unwrap();
        let deleted = store.check_file();
        assert!(matches!(deleted, Err(StoreError::FileChanged { change: FileChange::Deleted, .. })), "{deleted:?}");

        let store = SqliteStore::open(&path).unwrap();
        let other = dir.path().join("other.db");
        drop(SqliteStore::open(&other).unwrap());
        std::fs::rename(&other, &path).unwrap();
        let replaced = store.check_file();
        assert!(matches!(replaced, Err(StoreError::FileChanged { change: FileChange::Replaced, .. })), "{replaced:?}");
        assert!(SqliteStore::open_in_memory().unwrap().check_file().is_ok());
    }
}
