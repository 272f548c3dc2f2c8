//! Bringing a database to the current schema at open: a new one is created at version 2; a version 1 database (a
//! `candles` TABLE keyed by text, one `indicators` row per value) is first backed up beside itself with
//! `VACUUM INTO`, then migrated in place in one transaction; a version 2 one is only checked.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, TransactionBehavior};

use super::schema::{self, VERSION, quote_identifier, quote_literal};
use crate::store::StoreError;

/// What the database at hand is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No candled table: a new database.
    Empty,
    /// A `candles` table: made by a candled before schema version 2.
    Version1,
    /// Already at [`VERSION`].
    Current,
}

/// What `conn`'s database holds: refuses a version newer than this code knows.
pub fn inspect(conn: &Connection) -> Result<Found, StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > VERSION {
        return Err(StoreError::Schema(format!(
            "the database is at schema version {version}, made by a newer candled; this one knows version {VERSION}"
        )));
    }
    let candles_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'candles')",
        [],
        |row| row.get(0),
    )?;
    Ok(match (version, candles_table) {
        (_, true) => Found::Version1,
        (VERSION, false) => Found::Current,
        _ => Found::Empty,
    })
}

/// Brings the database of a writing connection to [`VERSION`]: creates it, or backs up and migrates a version 1
/// database (`path` is its file; `None` in memory, where no backup is written).
pub fn to_current(conn: &mut Connection, path: Option<&Path>) -> Result<(), StoreError> {
    match inspect(conn)? {
        Found::Current => Ok(()),
        Found::Empty => {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Another connection may have created it meanwhile.
            if inspect(&tx)? == Found::Empty {
                schema::create(&tx)?;
            }
            tx.commit()?;
            Ok(())
        }
        Found::Version1 => {
            if let Some(path) = path {
                let backup = backup(conn, path)?;
                log::warn!(
                    "storage: {} is at schema version 1; backed it up to {} before migrating it to version {VERSION}",
                    path.display(),
                    backup.display()
                );
            }
            let started = Instant::now();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if inspect(&tx)? != Found::Version1 {
                return Ok(());
            }
            let moved = from_version_1(&tx)?;
            tx.commit()?;
            log::warn!(
                "storage: migrated {} to schema version {VERSION} in {:.1} s: {} stream(s), {} candle(s), {} indicator \
                 value(s) in {} output column(s)",
                path.map_or_else(|| "the database".to_owned(), |p| p.display().to_string()),
                started.elapsed().as_secs_f64(),
                moved.streams,
                moved.candles,
                moved.values,
                moved.columns,
            );
            Ok(())
        }
    }
}

/// The file a version 1 database at `path` is backed up to: `<path>.v1-backup`, or when that exists
/// `<path>.v1-backup-<unix ms>`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut first = path.as_os_str().to_owned();
    first.push(".v1-backup");
    let first = PathBuf::from(first);
    if !first.exists() {
        return first;
    }
    let mut other = first.into_os_string();
    other.push(format!("-{}", crate::tasks::unix_ms()));
    PathBuf::from(other)
}

/// Writes a copy of the database beside it (`VACUUM INTO`, which never overwrites) and returns its path.
fn backup(conn: &Connection, path: &Path) -> Result<PathBuf, StoreError> {
    let backup = backup_path(path);
    let target = backup
        .to_str()
        .ok_or_else(|| StoreError::Schema(format!("cannot back up to {}: the path is not UTF-8", backup.display())))?;
    conn.execute("VACUUM INTO ?1", [target])?;
    Ok(backup)
}

/// What a migration moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub streams: usize,
    pub candles: usize,
    pub values: usize,
    pub columns: usize,
}

/// The migration from version 1, in the caller's transaction: the new tables, streams numbered in (symbol,
/// timeframe) order, the candles copied, the indicator values pivoted to one column per name, the old tables
/// dropped (with the old revision trigger), the views and triggers created, the version set.
fn from_version_1(conn: &Connection) -> Result<Moved, StoreError> {
    let exec = |sql: &str| conn.execute_batch(sql);
    exec(
        "ALTER TABLE candles RENAME TO candles_v1;
         ALTER TABLE indicators RENAME TO indicators_v1;
         DROP TRIGGER IF EXISTS candle_revision;",
    )?;
    // The old tables are out of the way: the new tables and the `candles` view can take their places.
    exec(schema::SCHEMA)?;
    let mut moved = Moved {
        streams: conn.execute(
            "INSERT INTO streams (symbol, timeframe)
             SELECT symbol, timeframe FROM candles_v1 UNION SELECT symbol, timeframe FROM indicators_v1
             ORDER BY symbol, timeframe",
            [],
        )?,
        ..Moved::default()
    };
    moved.candles = conn.execute(
        "INSERT INTO candle_rows (stream_id, timestamp, open, high, low, close, volume, close_time, quote_volume,
                                  trades, taker_buy_base, taker_buy_quote, is_closed)
         SELECT s.id, c.timestamp, c.open, c.high, c.low, c.close, c.volume, c.close_time, c.quote_volume, c.trades,
                c.taker_buy_base, c.taker_buy_quote, c.is_closed
         FROM candles_v1 c JOIN streams s ON s.symbol = c.symbol AND s.timeframe = c.timeframe
         ORDER BY s.id, c.timestamp",
        [],
    )?;
    let names: Vec<String> = {
        let mut stmt = conn.prepare("SELECT DISTINCT name FROM indicators_v1 ORDER BY name")?;
        let names = stmt.query_map([], |row| row.get(0))?;
        names.collect::<Result<_, _>>()?
    };
    schema::add_indicator_columns(conn, &names)?;
    moved.columns = names.len();
    if !names.is_empty() {
        let columns = names.iter().map(|n| quote_identifier(n)).collect::<Vec<_>>().join(", ");
        let pivots = names
            .iter()
            .map(|n| format!("MAX(CASE WHEN i.name = {} THEN i.value END)", quote_literal(n)))
            .collect::<Vec<_>>()
            .join(", ");
        conn.execute(
            &format!(
                "INSERT INTO indicator_rows (stream_id, timestamp, {columns})
                 SELECT s.id, i.timestamp, {pivots}
                 FROM indicators_v1 i JOIN streams s ON s.symbol = i.symbol AND s.timeframe = i.timeframe
                 GROUP BY s.id, i.timestamp ORDER BY s.id, i.timestamp"
            ),
            [],
        )?;
    }
    moved.values = conn.query_row("SELECT COUNT(*) FROM indicators_v1", [], |row| row.get::<_, i64>(0))? as usize;
    exec("DROP TABLE candles_v1; DROP TABLE indicators_v1;")?;
    schema::create(conn)?;
    Ok(moved)
}

/// The version 1 schema and statements, as the last release before version 2 wrote them: what the migration tests
/// make databases with.
#[cfg(test)]
pub mod version_1 {
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

    pub const UPSERT_CANDLE: &str = "
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

    pub const UPSERT_INDICATOR: &str = "
INSERT INTO indicators (symbol, timeframe, timestamp, name, value) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (symbol, timeframe, timestamp, name) DO UPDATE SET value = excluded.value
WHERE indicators.value IS NOT excluded.value
";

    /// Writes one candle through [`UPSERT_CANDLE`], as version 1 did.
    pub fn upsert_candle(conn: &rusqlite::Connection, symbol: &str, timeframe: &str, c: &crate::domain::Candle) {
        let mut upsert = conn.prepare_cached(UPSERT_CANDLE).expect("the version 1 upsert");
        upsert
            .execute(rusqlite::params![
                symbol,
                timeframe,
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
                c.is_closed
            ])
            .expect("a version 1 candle written");
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! A version 1 database, written with the version 1 statements, migrated at open: the backup holds the version 1
    //! data, and every `sqlite3` query of the README answers the same on the version 1 file and on the migrated one.

    use std::process::Command;

    use rusqlite::params;

    use super::*;
    use crate::domain::{Candle, StreamKey, Timeframe};
    use crate::indicators::{IndicatorConfig, recompute};
    use crate::store::{SqliteStore, Store};

    /// `count` closed candles of a stream from `first_open` on, with prices that move, then one in progress.
    fn series(timeframe: Timeframe, first_open: i64, count: usize, base: f64) -> Vec<Candle> {
        let mut open_time = first_open;
        let mut candles = Vec::new();
        for i in 0..=count {
            let open = base + (i as f64 * 0.7).sin() * base * 0.01;
            let close = base + ((i + 1) as f64 * 0.7).sin() * base * 0.01;
            candles.push(Candle {
                open_time,
                close_time: timeframe.close_time(open_time),
                open,
                high: open.max(close) + 0.5,
                low: open.min(close) - 0.5,
                close,
                volume: 10.0 + (i % 13) as f64,
                quote_volume: (10.0 + (i % 13) as f64) * close,
                trades: 100 + i as u64,
                taker_buy_base: 4.0,
                taker_buy_quote: 4.0 * close,
                is_closed: i < count,
            });
            open_time = timeframe.next_open(open_time);
        }
        candles
    }

    /// A version 1 database at `path` as the last version 1 release wrote it: three streams of candles (one with a
    /// revision), their default indicators, exchange gaps.
    fn version_1_database(path: &Path) {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(version_1::SCHEMA).unwrap();
        // 2023-11-14T22:00:00Z, on every grid used here.
        let start = 1_699_999_200_000;
        let streams = [
            (StreamKey::new("BTCUSDT", Timeframe::M1), series(Timeframe::M1, start, 120, 37_000.0)),
            (StreamKey::new("ETHUSDT", Timeframe::M5), series(Timeframe::M5, start, 60, 2_000.0)),
            (StreamKey::new("BTCUSDT", Timeframe::H1), series(Timeframe::H1, start, 40, 37_000.0)),
        ];
        let mut upsert_indicator = conn.prepare(version_1::UPSERT_INDICATOR).unwrap();
        for (key, candles) in &streams {
            let tf = key.timeframe.as_str();
            for c in candles {
                version_1::upsert_candle(&conn, &key.symbol, tf, c);
            }
            let closed: Vec<Candle> = candles.iter().filter(|c| c.is_closed).copied().collect();
            for (open_time, name, value) in recompute(&IndicatorConfig::default(), &closed) {
                upsert_indicator.execute(params![key.symbol, tf, open_time, name, value]).unwrap();
            }
        }
        // A revision of a closed BTCUSDT 1m candle.
        let revised = streams[0].1[5];
        let revised = Candle { close: revised.close + 1.0, ..revised };
        version_1::upsert_candle(&conn, "BTCUSDT", "1m", &revised);
        conn.execute_batch(
            "INSERT INTO exchange_gaps VALUES ('BTCUSDT', '1m', 1699000000000, 1699000120000);
             INSERT INTO exchange_gaps VALUES ('ETHUSDT', '5m', 1698000000000, 1698000300000);",
        )
        .unwrap();
    }

    /// Every `sqlite3` query of the README, as its lines write them (`sqlite3 [flags] data/tradingbot.db "<sql>"`,
    /// the SQL possibly over several lines): the flags and the SQL.
    fn readme_queries() -> Vec<(Vec<String>, String)> {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README");
        let mut queries = Vec::new();
        let mut rest = readme.as_str();
        while let Some(at) = rest.find("\nsqlite3 ") {
            rest = &rest[at + "\nsqlite3 ".len()..];
            let (head, after) = rest.split_once('"').expect("a quoted query");
            let flags: Vec<String> =
                head.split_whitespace().filter(|w| w.starts_with('-')).map(str::to_owned).collect();
            assert!(head.contains("data/tradingbot.db"), "a query of the README's database: {head}");
            let (sql, after) = after.split_once('"').expect("the query's closing quote");
            queries.push((flags, sql.to_owned()));
            rest = after;
        }
        queries
    }

    pub(in crate::store) fn sqlite3(flags: &[String], path: &Path, sql: &str) -> String {
        let output = Command::new("sqlite3")
            .args(flags)
            .arg(path)
            .arg(sql)
            .output()
            .expect("the sqlite3 command-line tool is installed (apt-get install sqlite3)");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success() && stderr.is_empty(), "sqlite3 failed on {sql}: {stderr}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    #[test]
    fn a_version_1_database_is_backed_up_then_migrated_and_answers_every_readme_query_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (path, version_1_copy) = (dir.path().join("candles.db"), dir.path().join("version-1.db"));
        version_1_database(&path);
        std::fs::copy(&path, &version_1_copy).unwrap();

        let store = SqliteStore::open(&path).expect("opens, migrating");
        // TC0: the backup is beside it and holds the version 1 data, row for row.
        let backup = dir.path().join("candles.db.v1-backup");
        let dump = |file: &Path| sqlite3(&[], file, ".dump");
        assert_eq!(dump(&backup), dump(&version_1_copy));
        assert!(dump(&backup).contains("CREATE TABLE candles"));
        // TC1: the migrated file is at version 2, `candles` and `indicators` are views.
        assert_eq!(inspect(store.connection()).unwrap(), Found::Current);
        let kinds =
            sqlite3(&[], &path, "SELECT type, name FROM sqlite_master WHERE name IN ('candles', 'indicators');");
        assert_eq!(kinds, "view|candles\nview|indicators\n");
        // TC2: every README query answers the same; the data exercises them (each has an answer).
        let queries = readme_queries();
        assert!(queries.len() >= 10, "the README's sqlite3 queries: {queries:?}");
        assert!(queries.iter().any(|(_, sql)| sql.contains("LEFT JOIN indicators")), "the query over several lines");
        for (flags, sql) in &queries {
            let (before, after) = (sqlite3(flags, &version_1_copy, sql), sqlite3(flags, &path, sql));
            assert_eq!(after, before, "{sql}");
            assert!(!before.trim().is_empty(), "the test data answers {sql}");
        }
        // TC3: the store reads what was written: the rows, the indicator values, the revision.
        let btc = StreamKey::new("BTCUSDT", Timeframe::M1);
        assert_eq!(store.closed_candles("BTCUSDT", Timeframe::M1).unwrap().len(), 120);
        assert_eq!(store.revisions("BTCUSDT", Timeframe::M1).unwrap(), 1);
        let mut values = 0;
        store.for_each_indicator_value(&btc, i64::MIN, i64::MAX, &mut |_, _, _| values += 1).unwrap();
        let stored: usize = sqlite3(
            &[],
            &version_1_copy,
            "SELECT COUNT(*) FROM indicators WHERE symbol = 'BTCUSDT' \
            AND timeframe = '1m';",
        )
        .trim()
        .parse()
        .unwrap();
        assert_eq!(values, stored);
        // TC4: opening it again changes nothing and writes no other backup.
        drop(store);
        let migrated = dump(&path);
        drop(SqliteStore::open(&path).unwrap());
        assert_eq!(dump(&path), migrated);
        let backups = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("v1-backup"));
        assert_eq!(backups.count(), 1);
    }

    #[test]
    fn a_backup_never_overwrites_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("candles.db");
        version_1_database(&path);
        std::fs::write(dir.path().join("candles.db.v1-backup"), "an earlier backup").unwrap();
        let before = crate::tasks::unix_ms();
        drop(SqliteStore::open(&path).unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("candles.db.v1-backup")).unwrap(), "an earlier backup");
        let stamped: Vec<i64> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| {
                e.unwrap().file_name().to_string_lossy().strip_prefix("candles.db.v1-backup-")?.parse().ok()
            })
            .collect();
        assert!(matches!(stamped[..], [at] if at >= before), "{stamped:?}");
    }

    #[test]
    fn a_version_1_database_is_refused_read_only_and_a_newer_version_always() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("candles.db");
        version_1_database(&path);
        let refused = SqliteStore::open_read_only(&path).err().expect("refused");
        assert!(matches!(&refused, StoreError::Schema(why) if why.contains("version 1")), "{refused}");
        let newer = dir.path().join("newer.db");
        Connection::open(&newer).unwrap().pragma_update(None, "user_version", 3).unwrap();
        let refused = SqliteStore::open(&newer).err().expect("refused");
        assert!(matches!(&refused, StoreError::Schema(why) if why.contains("newer candled")), "{refused}");
    }
}
