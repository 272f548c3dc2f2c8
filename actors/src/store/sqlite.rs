//! The SQLite store (the embedded default) of candles and indicator values: the schema (version 2, in [`schema`];
//! version 1 databases are migrated at open by [`migrate`]), the batched upsert that keeps closed candles final
//! (with the indicator values of the same batch in the same transaction, one row per candle), the reads of the
//! physical tables, and the check that the open file is still the one at its path.

use std::borrow::Cow;
use std::cell::{Ref, RefCell};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use super::{FileChange, IndicatorPoint, IndicatorRow, Store, StoreError, StoredRange, StoredRanges, Window};
use crate::domain::{Candle, Gap, StreamId, StreamKey, Timeframe};

mod checkpointer;
pub mod migrate;
pub mod schema;

use checkpointer::Checkpointer;

pub use schema::SCHEMA;

/// The candle upsert's column list.
const CANDLE_INSERT: &str = "INSERT INTO candle_rows (stream_id, timestamp, open, high, low, close, volume, close_time, \
                             quote_volume, trades, taker_buy_base, taker_buy_quote, is_closed) VALUES ";

/// The candle upsert's conflict clause. An in-progress row is replaced by any newer update; a closed row is final: an
/// in-progress update never touches it, and a closed one only when its values differ (a revision, recorded by the
/// trigger). SQLite applies the rows of a multi-row `VALUES` one after another, so a key repeated in one statement is
/// upserted in order, as with one statement per row.
const CANDLE_CONFLICT: &str = "
ON CONFLICT (stream_id, timestamp) DO UPDATE SET
    open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
    volume = excluded.volume, close_time = excluded.close_time, quote_volume = excluded.quote_volume,
    trades = excluded.trades, taker_buy_base = excluded.taker_buy_base, taker_buy_quote = excluded.taker_buy_quote,
    is_closed = excluded.is_closed
WHERE candle_rows.is_closed = 0
   OR (excluded.is_closed = 1
       AND (candle_rows.open, candle_rows.high, candle_rows.low, candle_rows.close, candle_rows.volume,
            candle_rows.close_time, candle_rows.quote_volume, candle_rows.trades, candle_rows.taker_buy_base,
            candle_rows.taker_buy_quote)
           IS NOT (excluded.open, excluded.high, excluded.low, excluded.close, excluded.volume, excluded.close_time,
                   excluded.quote_volume, excluded.trades, excluded.taker_buy_base, excluded.taker_buy_quote))
";

/// The parameters of one candle row.
const CANDLE_PARAMS: usize = 13;

/// Rows per multi-row upsert statement: a batch is written in statements of this many rows, its remainder one row
/// at a time.
const ROWS_PER_STATEMENT: usize = 32;

/// The most parameters a statement may have (SQLite's default `SQLITE_MAX_VARIABLE_NUMBER` since 3.32).
const MAX_PARAMS: usize = 32_766;

/// `(?1, ?2, …), (…), …`: `rows` row tuples of `width` numbered parameters.
fn values_list(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|row| {
            let params: Vec<String> = (1..=width).map(|i| format!("?{}", row * width + i)).collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The candle upsert of `rows` rows (see [`CANDLE_CONFLICT`]).
fn upsert_candles_sql(rows: usize) -> String {
    format!("{CANDLE_INSERT}{}{CANDLE_CONFLICT}", values_list(rows, CANDLE_PARAMS))
}

/// The candle upsert of one row, and of [`ROWS_PER_STATEMENT`] rows.
static UPSERT_CANDLE: std::sync::LazyLock<(String, String)> =
    std::sync::LazyLock::new(|| (upsert_candles_sql(1), upsert_candles_sql(ROWS_PER_STATEMENT)));

/// A stream's id, from its `?1` symbol and `?2` timeframe (NULL when it has none: it was never written).
const STREAM: &str = "(SELECT id FROM streams WHERE symbol = ?1 AND timeframe = ?2)";

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

/// The output columns of `indicator_rows` as this connection last read them.
#[derive(Debug, Default)]
struct Columns {
    /// `PRAGMA schema_version` when they were read: `None` before the first read, or after a failed write.
    schema_version: Option<i64>,
    /// In table order.
    names: Vec<String>,
    /// Indexes into `names`, ordered by name.
    sorted: Vec<usize>,
    /// `"a", "b", …`: the quoted columns, in table order.
    select_list: String,
}

impl Columns {
    fn read(schema_version: i64, names: Vec<String>) -> Self {
        let mut sorted: Vec<usize> = (0..names.len()).collect();
        sorted.sort_by(|&a, &b| names[a].cmp(&names[b]));
        let select_list = names.iter().map(|n| schema::quote_identifier(n)).collect::<Vec<_>>().join(", ");
        Self { schema_version: Some(schema_version), names, sorted, select_list }
    }

    /// `"a" IS NOT NULL OR "b" IS NOT NULL …`: the row holds a value.
    fn any_value(&self) -> String {
        self.names
            .iter()
            .map(|n| format!("{} IS NOT NULL", schema::quote_identifier(n)))
            .collect::<Vec<_>>()
            .join(" OR ")
    }
}

/// The columns of `indicator_rows` as the database holds them now, read again only when its schema changed.
fn current_columns<'a>(conn: &Connection, columns: &'a RefCell<Columns>) -> rusqlite::Result<Ref<'a, Columns>> {
    let version: i64 = conn.pragma_query_value(None, "schema_version", |row| row.get(0))?;
    if columns.borrow().schema_version != Some(version) {
        let names = schema::indicator_columns(conn)?;
        *columns.borrow_mut() = Columns::read(version, names);
    }
    Ok(columns.borrow())
}

/// The indicator upserts for a list of output names: of one candle's row, and of [`Self::rows_per_statement`] rows.
#[derive(Debug, Default)]
struct IndicatorUpsert {
    names: Vec<String>,
    single: String,
    multi: String,
}

impl IndicatorUpsert {
    /// Rows per multi-row statement for `outputs` output columns: [`ROWS_PER_STATEMENT`], fewer when its parameters
    /// would pass SQLite's limit.
    fn rows_per_statement(outputs: usize) -> usize {
        ROWS_PER_STATEMENT.min(MAX_PARAMS / (outputs + 2)).max(1)
    }

    /// `INSERT … ON CONFLICT DO UPDATE` of `rows` rows of (stream id, open time, the columns of `names`): an absent
    /// value (NULL) keeps what is stored, and a row whose values all stay the same is not rewritten.
    fn sql(names: &[String], rows: usize) -> String {
        let columns: Vec<String> = names.iter().map(|n| schema::quote_identifier(n)).collect();
        let merged: Vec<String> =
            columns.iter().map(|c| format!("COALESCE(excluded.{c}, indicator_rows.{c})")).collect();
        let stored: Vec<String> = columns.iter().map(|c| format!("indicator_rows.{c}")).collect();
        let set: Vec<String> = columns.iter().zip(&merged).map(|(c, m)| format!("{c} = {m}")).collect();
        format!(
            "INSERT INTO indicator_rows (stream_id, timestamp, {}) VALUES {}
             ON CONFLICT (stream_id, timestamp) DO UPDATE SET {}
             WHERE ({}) IS NOT ({})",
            columns.join(", "),
            values_list(rows, names.len() + 2),
            set.join(", "),
            stored.join(", "),
            merged.join(", "),
        )
    }

    /// The single-row and the multi-row statement for `names`, made again only when they changed.
    fn sql_for(&mut self, names: &[String]) -> (&str, &str) {
        if self.names != names || self.single.is_empty() {
            self.single = Self::sql(names, 1);
            self.multi = Self::sql(names, Self::rows_per_statement(names.len()));
            self.names = names.to_vec();
        }
        (&self.single, &self.multi)
    }
}

/// How long a statement waits for another connection's lock before it fails.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One SQLite connection to the candle database.
pub struct SqliteStore {
    /// A file's writer: folds the WAL in from its own thread. First, so that it stops before `conn` closes.
    checkpointer: Option<Checkpointer>,
    conn: Connection,
    /// The path the database was opened at, and the identity of the file it was then: `None` in memory.
    file: Option<(PathBuf, FileId)>,
    /// The id of every stream this handle wrote or looked up, by key (streams are never deleted).
    stream_ids: HashMap<StreamKey, i64>,
    columns: RefCell<Columns>,
    indicator_upsert: IndicatorUpsert,
}

impl SqliteStore {
    /// Opens (creating if needed) the database for writing: WAL, `synchronous=NORMAL`, the schema brought to the
    /// current version (a version 1 database is backed up beside it, then migrated).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut store = Self::configure(Connection::open(path)?, Some(path))?;
        let id = FileId::of(path).map_err(|source| StoreError::File { path: path.to_owned(), source })?;
        store.file = Some((path.to_owned(), id));
        store.start_checkpointer()?;
        Ok(store)
    }

    /// An in-memory database, for tests and benches.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::configure(Connection::open_in_memory()?, None)
    }

    /// Opens an existing database read-only, for queries beside the writer. A version 1 database is refused: the
    /// writer migrates it when it opens it.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if migrate::inspect(&conn)? == migrate::Found::Version1 {
            return Err(StoreError::Schema(format!(
                "{} is at schema version 1 (made by an older candled); open it for writing (start candled) to migrate it",
                path.display()
            )));
        }
        Ok(Self::with(conn))
    }

    fn with(conn: Connection) -> Self {
        Self {
            checkpointer: None,
            conn,
            file: None,
            stream_ids: HashMap::new(),
            columns: RefCell::default(),
            indicator_upsert: IndicatorUpsert::default(),
        }
    }

    /// WAL, `synchronous=NORMAL`, and the schema at the current version (see [`migrate::to_current`]).
    fn configure(mut conn: Connection, path: Option<&Path>) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        migrate::to_current(&mut conn, path)?;
        Ok(Self::with(conn))
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
        let sql =
            format!("SELECT {aggregate}(timestamp) FROM candle_rows WHERE stream_id = {STREAM} AND is_closed = 1");
        Ok(self.conn.query_row(&sql, params![key.symbol, key.timeframe.as_str()], |row| row.get(0))?)
    }

    /// Folds the WAL into the main database file and truncates it.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Readies the database for a bulk load by its only writer (`candled import`, which holds the lock): a rollback
    /// journal instead of the WAL, so that the pages a load adds are written once, not to the WAL and again at each
    /// checkpoint. A crash still rolls back to the last commit. Returns whether it switched: it cannot while another
    /// connection has the file open (a `sqlite3` shell, say), and the load then goes through the WAL as usual.
    /// [`Self::end_bulk_load`] goes back to WAL, and so does [`Self::open`] after a crash.
    pub fn begin_bulk_load(&mut self) -> Result<bool, StoreError> {
        // The checkpointer's connection is another one: it closes first, and comes back if the switch fails.
        self.checkpointer = None;
        // Another connection would hold its lock until it closes: do not wait for it.
        self.conn.busy_timeout(std::time::Duration::ZERO)?;
        let switched = self.conn.query_row("PRAGMA journal_mode = DELETE", [], |row| row.get::<_, String>(0));
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        let switched = match switched {
            Ok(mode) => mode.eq_ignore_ascii_case("delete"),
            Err(rusqlite::Error::SqliteFailure(error, _)) if error.code == rusqlite::ErrorCode::DatabaseBusy => false,
            Err(error) => return Err(error.into()),
        };
        if !switched {
            self.start_checkpointer()?;
        }
        Ok(switched)
    }

    /// Back to the WAL, and its checkpointer, after [`Self::begin_bulk_load`].
    pub fn end_bulk_load(&mut self) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "journal_mode", "WAL")?;
        self.start_checkpointer()
    }

    /// A file's writer folds its WAL in from a thread of its own (see [`checkpointer`]); commits never do.
    fn start_checkpointer(&mut self) -> Result<(), StoreError> {
        if let Some((path, _)) = &self.file {
            self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            self.checkpointer = Some(Checkpointer::start(path)?);
        }
        Ok(())
    }

    /// The underlying connection, for ad-hoc queries in tests and tools.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The output columns of `indicator_rows`, current.
    fn columns(&self) -> Result<Ref<'_, Columns>, StoreError> {
        Ok(current_columns(&self.conn, &self.columns)?)
    }
}

/// The database ids of a batch's streams, looked up (or created) once each per batch.
struct BatchStreams<'a> {
    keys: &'a [StreamKey],
    known: &'a HashMap<StreamKey, i64>,
    /// By [`StreamId`]: the id, once looked up in this batch.
    ids: Vec<Option<i64>>,
    /// Streams looked up in the database in this batch: remembered once it commits.
    found: Vec<(StreamKey, i64)>,
}

impl<'a> BatchStreams<'a> {
    fn new(keys: &'a [StreamKey], known: &'a HashMap<StreamKey, i64>) -> Self {
        Self { keys, known, ids: vec![None; keys.len()], found: Vec::new() }
    }

    /// The id of `stream`, creating its `streams` row on its first write.
    fn id(&mut self, conn: &Connection, stream: StreamId) -> Result<i64, StoreError> {
        let index = stream.0 as usize;
        if let Some(Some(id)) = self.ids.get(index) {
            return Ok(*id);
        }
        let key = self.keys.get(index).ok_or(StoreError::UnknownStream(stream))?;
        let id = match self.known.get(key) {
            Some(id) => *id,
            None => {
                let (symbol, timeframe) = (key.symbol.as_str(), key.timeframe.as_str());
                conn.prepare_cached("INSERT INTO streams (symbol, timeframe) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?
                    .execute([symbol, timeframe])?;
                let id = conn
                    .prepare_cached("SELECT id FROM streams WHERE symbol = ?1 AND timeframe = ?2")?
                    .query_row([symbol, timeframe], |row| row.get(0))?;
                self.found.push((key.clone(), id));
                id
            }
        };
        self.ids[index] = Some(id);
        Ok(id)
    }
}

/// Adds the columns of `names` that `indicator_rows` lacks, and makes the `indicators` view again if it did.
fn ensure_columns(conn: &Connection, columns: &RefCell<Columns>, names: &[String]) -> Result<(), StoreError> {
    let missing: Vec<String> = {
        let current = current_columns(conn, columns)?;
        let mut missing: Vec<String> = Vec::new();
        for name in names {
            if !current.names.contains(name) && !missing.contains(name) {
                missing.push(name.clone());
            }
        }
        missing
    };
    if missing.is_empty() {
        return Ok(());
    }
    schema::add_indicator_columns(conn, &missing)?;
    conn.execute_batch(&schema::indicators_view(&schema::indicator_columns(conn)?))?;
    current_columns(conn, columns)?;
    Ok(())
}

/// Upserts the indicator rows, one per (stream, open time) of `rows` (the later of two values of one output wins).
/// Returns the rows changed.
fn upsert_indicators(
    conn: &Connection,
    streams: &mut BatchStreams<'_>,
    upsert: &mut IndicatorUpsert,
    names: &[String],
    rows: &[IndicatorRow],
) -> Result<usize, StoreError> {
    let key = |row: &IndicatorRow| (row.stream, row.open_time);
    let rows: Cow<'_, [IndicatorRow]> = if rows.windows(2).all(|pair| key(&pair[0]) <= key(&pair[1])) {
        Cow::Borrowed(rows)
    } else {
        let mut sorted = rows.to_vec();
        sorted.sort_by_key(key);
        Cow::Owned(sorted)
    };
    let (single_sql, multi_sql) = upsert.sql_for(names);
    let width = names.len() + 2;
    let per_statement = IndicatorUpsert::rows_per_statement(names.len());
    let mut multi = conn.prepare_cached(multi_sql)?;
    // The parameters of the rows not yet written, `width` a row: fewer than `per_statement` rows between statements.
    let mut pending: Vec<Option<f64>> = Vec::with_capacity(width * per_statement);
    let mut pending_keys: Vec<(i64, i64)> = Vec::with_capacity(per_statement);
    let mut values: Vec<Option<f64>> = vec![None; names.len()];
    let mut changed = 0;
    for candle in rows.chunk_by(|a, b| key(a) == key(b)) {
        values.iter_mut().for_each(|value| *value = None);
        for row in candle {
            values[usize::from(row.output)] = Some(row.value).filter(|v| !v.is_nan());
        }
        if values.iter().all(Option::is_none) {
            continue;
        }
        pending_keys.push((streams.id(conn, candle[0].stream)?, candle[0].open_time));
        pending.extend_from_slice(&values);
        if pending_keys.len() == per_statement {
            changed += execute_indicator_rows(&mut multi, &pending_keys, &pending, names.len())?;
            pending_keys.clear();
            pending.clear();
        }
    }
    if !pending_keys.is_empty() {
        let mut single = conn.prepare_cached(single_sql)?;
        for (key, values) in pending_keys.iter().zip(pending.chunks_exact(names.len().max(1))) {
            changed += execute_indicator_rows(&mut single, std::slice::from_ref(key), values, names.len())?;
        }
    }
    Ok(changed)
}

/// Binds the indicator rows of `keys` (stream id, open time) with their `values` (`outputs` of them per key) to
/// `stmt`, made for exactly that many rows, and runs it. Returns the rows changed.
fn execute_indicator_rows(
    stmt: &mut rusqlite::CachedStatement<'_>,
    keys: &[(i64, i64)],
    values: &[Option<f64>],
    outputs: usize,
) -> Result<usize, StoreError> {
    let mut index = 1;
    for (&(stream_id, open_time), values) in keys.iter().zip(values.chunks_exact(outputs.max(1))) {
        stmt.raw_bind_parameter(index, stream_id)?;
        stmt.raw_bind_parameter(index + 1, open_time)?;
        index += 2;
        for value in values {
            stmt.raw_bind_parameter(index, value)?;
            index += 1;
        }
    }
    Ok(stmt.raw_execute()?)
}

/// Binds one candle row at parameter `first` (its stream id, then the columns in [`CANDLE_INSERT`]'s order).
fn bind_candle(
    stmt: &mut rusqlite::CachedStatement<'_>,
    first: usize,
    stream_id: i64,
    c: &Candle,
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(first, stream_id)?;
    stmt.raw_bind_parameter(first + 1, c.open_time)?;
    stmt.raw_bind_parameter(first + 2, c.open)?;
    stmt.raw_bind_parameter(first + 3, c.high)?;
    stmt.raw_bind_parameter(first + 4, c.low)?;
    stmt.raw_bind_parameter(first + 5, c.close)?;
    stmt.raw_bind_parameter(first + 6, c.volume)?;
    stmt.raw_bind_parameter(first + 7, c.close_time)?;
    stmt.raw_bind_parameter(first + 8, c.quote_volume)?;
    stmt.raw_bind_parameter(first + 9, c.trades as i64)?;
    stmt.raw_bind_parameter(first + 10, c.taker_buy_base)?;
    stmt.raw_bind_parameter(first + 11, c.taker_buy_quote)?;
    stmt.raw_bind_parameter(first + 12, c.is_closed)
}

/// Upserts the candles in order, [`ROWS_PER_STATEMENT`] rows a statement, the remainder one row a statement.
/// Returns the rows changed.
fn upsert_candles(
    conn: &Connection,
    streams: &mut BatchStreams<'_>,
    candles: &[(StreamId, Candle)],
) -> Result<usize, StoreError> {
    let (single_sql, multi_sql) = &*UPSERT_CANDLE;
    let mut changed = 0;
    let mut chunks = candles.chunks_exact(ROWS_PER_STATEMENT);
    if chunks.len() > 0 {
        let mut multi = conn.prepare_cached(multi_sql)?;
        for chunk in &mut chunks {
            for (row, (stream, candle)) in chunk.iter().enumerate() {
                bind_candle(&mut multi, row * CANDLE_PARAMS + 1, streams.id(conn, *stream)?, candle)?;
            }
            changed += multi.raw_execute()?;
        }
    }
    let remainder = chunks.remainder();
    if !remainder.is_empty() {
        let mut single = conn.prepare_cached(single_sql)?;
        for (stream, candle) in remainder {
            bind_candle(&mut single, 1, streams.id(conn, *stream)?, candle)?;
            changed += single.raw_execute()?;
        }
    }
    Ok(changed)
}

/// The writes of [`Store::write_batch`], in its transaction `tx`.
fn write_rows(
    tx: &Connection,
    batch: &mut BatchStreams<'_>,
    columns: &RefCell<Columns>,
    indicator_upsert: &mut IndicatorUpsert,
    names: &[String],
    candles: &[(StreamId, Candle)],
    indicators: &[IndicatorRow],
) -> Result<usize, StoreError> {
    let mut changed = 0;
    if !candles.is_empty() {
        changed += upsert_candles(tx, batch, candles)?;
    }
    if !indicators.is_empty() {
        ensure_columns(tx, columns, names)?;
        changed += upsert_indicators(tx, batch, indicator_upsert, names, indicators)?;
    }
    Ok(changed)
}

impl Store for SqliteStore {
    /// Upserts a batch in one transaction: the candles (one row each), then the indicator values (one row per
    /// candle, a column per output; a missing column is added first). Returns the rows changed: candle rows plus
    /// indicator rows, each counted once however many of its values changed.
    fn write_batch(
        &mut self,
        streams: &[StreamKey],
        names: &[String],
        candles: &[(StreamId, Candle)],
        indicators: &[IndicatorRow],
    ) -> Result<usize, StoreError> {
        if let Some(row) = indicators.iter().find(|row| usize::from(row.output) >= names.len()) {
            return Err(StoreError::UnknownOutput(row.output));
        }
        let Self { conn, stream_ids, columns, indicator_upsert, .. } = self;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut batch = BatchStreams::new(streams, stream_ids);
        let written = write_rows(&tx, &mut batch, columns, indicator_upsert, names, candles, indicators);
        let found = batch.found;
        match written.and_then(|changed| Ok(tx.commit().map(|()| changed)?)) {
            Ok(changed) => {
                stream_ids.extend(found);
                Ok(changed)
            }
            Err(error) => {
                // Columns it added are gone with the transaction: read them again next time.
                columns.borrow_mut().schema_version = None;
                Err(error)
            }
        }
    }

    /// The newest closed open time stored for each stream.
    fn last_closed(&self) -> Result<HashMap<(String, Timeframe), i64>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT s.symbol, s.timeframe, MAX(c.timestamp) FROM candle_rows c JOIN streams s ON s.id = c.stream_id
             WHERE c.is_closed = 1 GROUP BY c.stream_id",
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
            "SELECT {CANDLE_COLUMNS} FROM candle_rows
             WHERE stream_id = {STREAM} AND timestamp >= ?3 AND timestamp < ?4
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
            "SELECT {CANDLE_COLUMNS} FROM candle_rows WHERE stream_id = {STREAM} AND is_closed = 1 ORDER BY timestamp"
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
        let columns = self.columns()?;
        if columns.names.is_empty() {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT timestamp, {} FROM indicator_rows WHERE stream_id = {STREAM} AND ({})
             ORDER BY timestamp DESC LIMIT ?3",
            columns.select_list,
            columns.any_value(),
        ))?;
        let mut rows = stmt.query(params![symbol, timeframe.as_str(), limit as i64])?;
        let mut series: Vec<IndicatorPoint> = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns.names.len());
            for &index in &columns.sorted {
                if let Some(value) = row.get::<_, Option<f64>>(index + 1)? {
                    values.push((columns.names[index].clone(), value));
                }
            }
            series.push(IndicatorPoint { timestamp: row.get(0)?, values });
        }
        series.reverse();
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
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
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
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT timestamp, is_closed FROM candle_rows
             WHERE stream_id = {STREAM} AND timestamp >= ?3 AND timestamp <= ?4 ORDER BY timestamp"
        ))?;
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
            "SELECT s.symbol, s.timeframe, MIN(c.timestamp), MAX(c.timestamp), COUNT(*)
             FROM candle_rows c JOIN streams s ON s.id = c.stream_id WHERE c.is_closed = 1 GROUP BY c.stream_id",
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
        let exists = "SELECT EXISTS (SELECT 1 FROM streams s JOIN candle_rows c ON c.stream_id = s.id
                      WHERE s.symbol = ?1)";
        Ok(self.conn.query_row(exists, [symbol], |row| row.get::<_, bool>(0))?)
    }

    fn indicator_names(&self, key: &StreamKey, from: i64, to: i64) -> Result<Vec<String>, StoreError> {
        let columns = self.columns()?;
        if columns.names.is_empty() {
            return Ok(Vec::new());
        }
        let present: Vec<String> =
            columns.names.iter().map(|n| format!("MAX({} IS NOT NULL)", schema::quote_identifier(n))).collect();
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {} FROM indicator_rows WHERE stream_id = {STREAM} AND timestamp >= ?3 AND timestamp < ?4",
            present.join(", ")
        ))?;
        let mut rows = stmt.query(params![key.symbol, key.timeframe.as_str(), from, to])?;
        let mut names = Vec::new();
        if let Some(row) = rows.next()? {
            for &index in &columns.sorted {
                if row.get::<_, Option<bool>>(index)? == Some(true) {
                    names.push(columns.names[index].clone());
                }
            }
        }
        Ok(names)
    }

    fn for_each_indicator_value(
        &self,
        key: &StreamKey,
        from: i64,
        to: i64,
        each: &mut dyn FnMut(i64, &str, f64),
    ) -> Result<(), StoreError> {
        let columns = self.columns()?;
        if columns.names.is_empty() {
            return Ok(());
        }
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT timestamp, {} FROM indicator_rows WHERE stream_id = {STREAM} AND timestamp >= ?3 AND timestamp <= ?4",
            columns.select_list
        ))?;
        let mut rows = stmt.query(params![key.symbol, key.timeframe.as_str(), from, to])?;
        while let Some(row) = rows.next()? {
            let open_time = row.get(0)?;
            for (index, name) in columns.names.iter().enumerate() {
                if let Some(value) = row.get::<_, Option<f64>>(index + 1)? {
                    each(open_time, name, value);
                }
            }
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
    //! The SQLite-only tests: the trigger, hand edits through the views, the file checks. The rules and reads are in
    //! the conformance suite; the migration from version 1 is tested in `migrate`.

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

    /// Every candle row, revision (without its stamp) and indicator row stored, by key.
    fn dump(store: &SqliteStore) -> (Vec<String>, Vec<String>, Vec<String>) {
        let rows = |sql: &str| -> Vec<String> {
            let mut stmt = store.conn.prepare(sql).unwrap();
            let width = stmt.column_count();
            stmt.query_map([], |row| {
                (0..width).map(|i| row.get::<_, rusqlite::types::Value>(i).map(|v| format!("{v:?}"))).collect()
            })
            .unwrap()
            .map(|row| row.unwrap())
            .collect()
        };
        (
            rows("SELECT * FROM candle_rows ORDER BY stream_id, timestamp"),
            rows(
                "SELECT symbol, timeframe, timestamp, open, high, low, close, volume, quote_volume, trades, \
                 taker_buy_base, taker_buy_quote FROM candle_revisions ORDER BY rowid",
            ),
            rows("SELECT * FROM indicator_rows ORDER BY stream_id, timestamp"),
        )
    }

    #[test]
    fn multi_row_statements_write_what_one_row_statements_write() {
        let streams = vec![StreamKey::new("BTCUSDT", Timeframe::M1), StreamKey::new("ETHUSDT", Timeframe::M1)];
        let names = vec!["a".to_owned(), "b".to_owned()];
        let minute = |i: i64| i * 60_000;
        // Stored before: closed candles on stream 0, in-progress ones on stream 1.
        let stored: Vec<(StreamId, Candle)> = (0..50)
            .map(|i| (StreamId(0), candle(minute(i), 10.0, true)))
            .chain((0..50).map(|i| (StreamId(1), candle(minute(i), 10.0, false))))
            .collect();
        // Several full statements and a remainder, with keys repeated within a statement: revisions (a closed value
        // that differs, then differs again), closed rows rewritten unchanged, in-progress updates of closed rows
        // (ignored), in-progress rows closed then updated again, and new rows.
        let mut batch = Vec::new();
        for i in 0..70 {
            let (closed, open) = (StreamId(0), StreamId(1));
            batch.push((closed, candle(minute(i), 10.0 + (i % 3) as f64, true)));
            batch.push((closed, candle(minute(i), 20.0, i % 2 == 0)));
            batch.push((open, candle(minute(i), 11.0, i % 4 == 0)));
            batch.push((open, candle(minute(i), 12.0, i % 5 == 0)));
        }
        let indicators: Vec<IndicatorRow> = (0..80)
            .flat_map(|i| {
                let stream = StreamId((i % 2) as u32);
                let value = if i % 7 == 0 { f64::NAN } else { i as f64 };
                [
                    IndicatorRow { stream, open_time: minute(i), output: 0, value },
                    IndicatorRow { stream, open_time: minute(i), output: (i % 2) as u16, value: value + 0.5 },
                ]
            })
            .collect();
        assert!(batch.len() > 2 * ROWS_PER_STATEMENT && batch.len() % ROWS_PER_STATEMENT != 0);
        assert!(indicators.len() / 2 > 2 * ROWS_PER_STATEMENT);

        let (mut multi, mut single) = (SqliteStore::open_in_memory().unwrap(), SqliteStore::open_in_memory().unwrap());
        for store in [&mut multi, &mut single] {
            store.write_batch(&streams, &names, &stored, &indicators[..20]).unwrap();
        }
        let candles_at_once = multi.write_candles(&streams, &batch).unwrap();
        let candles_one_by_one: usize =
            batch.iter().map(|row| single.write_candles(&streams, std::slice::from_ref(row)).unwrap()).sum();
        assert_eq!(candles_at_once, candles_one_by_one);
        // The values of one candle go together: one row each, however many outputs.
        let indicators_at_once = multi.write_batch(&streams, &names, &[], &indicators).unwrap();
        let indicators_one_by_one: usize =
            indicators.chunks(2).map(|rows| single.write_batch(&streams, &names, &[], rows).unwrap()).sum();
        assert_eq!(indicators_at_once, indicators_one_by_one);
        assert!(candles_at_once > 0 && indicators_at_once > 0);
        assert_eq!(dump(&multi), dump(&single));
        assert!(!dump(&multi).1.is_empty(), "the batch revised closed candles");
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

    /// The version 1 trigger as it was before SQLite 3.31 compatibility, which needs 3.42.
    const TRIGGER_NEEDING_3_42: &str = "
        DROP TRIGGER candle_revision;
        CREATE TRIGGER candle_revision AFTER UPDATE ON candles WHEN old.is_closed = 1
        BEGIN
            INSERT INTO candle_revisions VALUES (
                old.symbol, old.timeframe, old.timestamp, CAST(unixepoch('subsec') * 1000 AS INTEGER),
                old.open, old.high, old.low, old.close, old.volume, old.quote_volume, old.trades,
                old.taker_buy_base, old.taker_buy_quote);
        END;";

    /// A version 1 database file holding one closed BTCUSDT 1m candle, made with the old trigger.
    fn database_with_the_old_trigger(dir: &Path) -> PathBuf {
        let path = dir.join("candles.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(migrate::version_1::SCHEMA).unwrap();
        migrate::version_1::upsert_candle(&conn, "BTCUSDT", "1m", &candle(0, 11.5, true));
        conn.execute_batch(TRIGGER_NEEDING_3_42).unwrap();
        path
    }

    fn trigger_sql(conn: &Connection) -> String {
        conn.query_row("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'candle_revision'", [], |r| {
            r.get(0)
        })
        .unwrap()
    }

    #[test]
    fn migrating_a_database_with_the_trigger_that_needs_sqlite_3_42_leaves_the_compatible_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = database_with_the_old_trigger(dir.path());
        let store = SqliteStore::open(&path).unwrap();
        let sql = trigger_sql(store.connection());
        assert!(!sql.contains("unixepoch") && sql.contains("julianday") && sql.contains("candle_rows"), "{sql}");
        assert_eq!(read_all(&store), [candle(0, 11.5, true)]);
    }

    /// Runs SQL through the real `sqlite3` tool, as a user would; returns its output.
    fn sqlite3(path: &Path, sql: &str) -> String {
        migrate::tests::sqlite3(&[], path, sql)
    }

    /// A user's `sqlite3` tool (3.40 on Debian 12; CI installs it) updates a closed candle of a database made with
    /// the old trigger, once candled has opened (migrated) it: the revision is recorded with the time.
    #[test]
    fn the_sqlite3_tool_can_update_a_closed_candle() {
        let dir = tempfile::tempdir().unwrap();
        let path = database_with_the_old_trigger(dir.path());
        drop(SqliteStore::open(&path).unwrap());
        let before = crate::tasks::unix_ms();
        sqlite3(&path, "UPDATE candles SET close = 12.0 WHERE symbol = 'BTCUSDT' AND timestamp = 0;");
        let store = SqliteStore::open_read_only(&path).unwrap();
        assert_stamped_now(&revised_at(store.connection()), before);
        assert_eq!(read_all(&store)[0].close, 12.0);
    }

    /// Hand edits through the `candles` view, as the tests and users make them with the `sqlite3` tool: INSERT
    /// (a new stream gets an id; `INSERT OR REPLACE` keeps the stream's id), UPDATE (of a closed candle: a
    /// revision), DELETE.
    #[test]
    fn the_candles_view_takes_inserts_updates_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("candles.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let streams = vec![StreamKey::new("BTCUSDT", Timeframe::M1)];
        store.write_candles(&streams, &[(StreamId(0), candle(0, 11.5, true))]).unwrap();
        let columns = "symbol, timeframe, timestamp, open, high, low, close, volume, close_time, quote_volume, \
                       trades, taker_buy_base, taker_buy_quote, is_closed";
        let values = |symbol: &str, open_time: i64, close: f64| {
            format!(
                "('{symbol}', '1m', {open_time}, 10, 12, 9, {close}, 1.5, {}, 15, 3, 0.5, 5, 1)",
                open_time + 59_999
            )
        };
        // TC0: inserts, of a known stream and of a new one; INSERT OR REPLACE of an existing candle.
        sqlite3(&path, &format!("INSERT INTO candles ({columns}) VALUES {};", values("BTCUSDT", 60_000, 11.0)));
        sqlite3(&path, &format!("INSERT INTO candles ({columns}) VALUES {};", values("ETHUSDT", 0, 20.0)));
        sqlite3(&path, &format!("INSERT OR REPLACE INTO candles ({columns}) VALUES {};", values("BTCUSDT", 0, 11.25)));
        assert_eq!(read_all(&store), [candle(0, 11.25, true), candle(60_000, 11.0, true)]);
        assert_eq!(store.closed_candles("ETHUSDT", Timeframe::M1).unwrap(), [candle(0, 20.0, true)]);
        assert_eq!(sqlite3(&path, "SELECT id, symbol FROM streams ORDER BY id;"), "1|BTCUSDT\n2|ETHUSDT\n");
        // TC1: an update of a closed candle is a revision; reopening the candle too.
        sqlite3(&path, "UPDATE candles SET is_closed = 0 WHERE symbol = 'BTCUSDT' AND timestamp = 60000;");
        assert_eq!(read_all(&store)[1], candle(60_000, 11.0, false));
        assert_eq!(store.revisions("BTCUSDT", Timeframe::M1).unwrap(), 1);
        // TC2: a delete removes exactly the rows selected.
        sqlite3(&path, "DELETE FROM candles WHERE symbol = 'BTCUSDT' AND timestamp >= 60000;");
        assert_eq!(read_all(&store), [candle(0, 11.25, true)]);
        assert_eq!(sqlite3(&path, "SELECT COUNT(*) FROM candles;"), "2\n");
    }

    /// The `indicators` view: one row per stored value; a DELETE by name clears that output only (and a row left
    /// empty goes), an UPDATE sets a value, an INSERT sets an existing output's value and refuses an unknown name.
    #[test]
    fn the_indicators_view_takes_deletes_updates_and_inserts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("candles.db");
        let mut store = SqliteStore::open(&path).unwrap();
        // TC0: before any output, the view is empty, and a DELETE through it is fine.
        assert_eq!(sqlite3(&path, "SELECT COUNT(*) FROM indicators;"), "0\n");
        sqlite3(&path, "DELETE FROM indicators WHERE name = 'ema_26';");
        let streams = vec![StreamKey::new("BTCUSDT", Timeframe::M1)];
        let names = vec!["sma_2".to_owned(), "ema_26".to_owned()];
        let value = |open_time, output, value| IndicatorRow { stream: StreamId(0), open_time, output, value };
        let values = [value(0, 0, 1.0), value(0, 1, 2.0), value(60_000, 1, 3.0)];
        store.write_batch(&streams, &names, &[], &values).unwrap();
        let all = "SELECT symbol, timeframe, timestamp, name, value FROM indicators ORDER BY timestamp, name;";
        assert_eq!(
            sqlite3(&path, all),
            "BTCUSDT|1m|0|ema_26|2.0\nBTCUSDT|1m|0|sma_2|1.0\nBTCUSDT|1m|60000|ema_26|3.0\n"
        );
        // TC1: DELETE by name: the other output stays; the row of 60000, left with no value, goes.
        sqlite3(&path, "DELETE FROM indicators WHERE name = 'ema_26';");
        assert_eq!(sqlite3(&path, all), "BTCUSDT|1m|0|sma_2|1.0\n");
        assert_eq!(sqlite3(&path, "SELECT COUNT(*) FROM indicator_rows;"), "1\n");
        // TC2: UPDATE of a value, INSERT of a value of an existing output; an unknown name is refused.
        sqlite3(&path, "UPDATE indicators SET value = 1.5 WHERE name = 'sma_2';");
        sqlite3(&path, "INSERT INTO indicators VALUES ('BTCUSDT', '1m', 120000, 'ema_26', 4.0);");
        assert_eq!(sqlite3(&path, all), "BTCUSDT|1m|0|sma_2|1.5\nBTCUSDT|1m|120000|ema_26|4.0\n");
        let refused =
            store.connection().execute("INSERT INTO indicators VALUES ('BTCUSDT', '1m', 0, 'rsi_9', 1.0)", []);
        assert!(refused.is_err_and(|e| e.to_string().contains("no indicator output column")));
        // The store reads what the view shows.
        let mut seen = Vec::new();
        store
            .for_each_indicator_value(&streams[0], 0, i64::MAX, &mut |t, n, v| seen.push((t, n.to_owned(), v)))
            .unwrap();
        seen.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(seen, [(0, "sma_2".to_owned(), 1.5), (120_000, "ema_26".to_owned(), 4.0)]);
    }

    /// A reader opened before the writer added an output column sees the new output.
    #[test]
    fn a_reader_sees_columns_added_after_it_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("candles.db");
        let mut writer = SqliteStore::open(&path).unwrap();
        let reader = SqliteStore::open_read_only(&path).unwrap();
        let streams = vec![StreamKey::new("BTCUSDT", Timeframe::M1)];
        assert!(reader.indicator_series("BTCUSDT", Timeframe::M1, 10).unwrap().is_empty());
        let row = |output, value| IndicatorRow { stream: StreamId(0), open_time: 0, output, value };
        writer.write_batch(&streams, &["sma_2".to_owned()], &[], &[row(0, 1.0)]).unwrap();
        assert_eq!(reader.indicator_names(&streams[0], 0, 1).unwrap(), ["sma_2"]);
        writer.write_batch(&streams, &["rsi_2".to_owned()], &[], &[row(0, 2.0)]).unwrap();
        let point = IndicatorPoint { timestamp: 0, values: vec![("rsi_2".to_owned(), 2.0), ("sma_2".to_owned(), 1.0)] };
        assert_eq!(reader.indicator_series("BTCUSDT", Timeframe::M1, 10).unwrap(), [point]);
    }

    /// A failed batch that added a column leaves no trace of it: the next batch adds it again.
    #[test]
    fn a_failed_batch_forgets_the_columns_it_added() {
        let (mut store, streams) = store();
        let row = |stream, value| IndicatorRow { stream: StreamId(stream), open_time: 0, output: 0, value };
        let names = ["sma_2".to_owned()];
        let failed = store.write_batch(&streams, &names, &[], &[row(0, 1.0), row(7, 1.0)]);
        assert!(matches!(failed, Err(StoreError::UnknownStream(StreamId(7)))), "{failed:?}");
        assert!(schema::indicator_columns(store.connection()).unwrap().is_empty());
        assert_eq!(store.write_batch(&streams, &names, &[], &[row(0, 1.0)]).unwrap(), 1);
        assert_eq!(store.indicator_names(&streams[0], 0, 1).unwrap(), ["sma_2"]);
    }

    fn journal_mode(conn: &Connection) -> String {
        conn.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap()
    }

    /// A bulk load goes through a rollback journal when the writer is alone on the file, stays in WAL beside a
    /// reader, and its rows are there either way; the file is in WAL again after it.
    #[test]
    fn a_bulk_load_uses_a_rollback_journal_only_when_alone_and_ends_in_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("candles.db");
        let streams = vec![StreamKey::new("BTCUSDT", Timeframe::M1)];
        let mut store = SqliteStore::open(&path).unwrap();
        for (alone, open_time) in [(true, 0), (false, 60_000)] {
            let reader = (!alone).then(|| SqliteStore::open_read_only(&path).unwrap());
            assert_eq!(store.begin_bulk_load().unwrap(), alone, "alone: {alone}");
            let want = if alone { "delete" } else { "wal" };
            assert_eq!(journal_mode(store.connection()), want);
            store.write_batch(&streams, &[], &[(StreamId(0), candle(open_time, 1.0, true))], &[]).unwrap();
            store.end_bulk_load().unwrap();
            assert_eq!(journal_mode(store.connection()), "wal");
            drop(reader);
        }
        drop(store);
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(read_all(&reopened), [candle(0, 1.0, true), candle(60_000, 1.0, true)]);
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
