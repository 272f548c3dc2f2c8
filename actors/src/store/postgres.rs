//! The PostgreSQL store, for several instances sharing one database: the migrations run at start (schema v2: candles
//! and indicator rows keyed by a stream id, behind the v1 `candles` and `indicators` views; TimescaleDB's hypertable
//! when the extension is there), the batched `UNNEST` upserts under the same rules as SQLite, the reads of the
//! physical tables, and the bridge that lets blocking callers (actix arbiters included) run `tokio-postgres` on a
//! runtime of its own.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, NoTls, Row};

use super::{IndicatorPoint, IndicatorRow, Store, StoreError, StoredRange, StoredRanges, Window};
use crate::domain::{Candle, Gap, StreamId, StreamKey, Timeframe};

/// How long connecting, waiting for a pooled connection, or checking one back in may take before the call fails
/// (transiently): a PostgreSQL that is restarting makes writes fail fast, and the storage actor retries.
const TIMEOUT: Duration = Duration::from_secs(5);

/// [`Store::check`] asks the server at most this often; in between it answers what the last check found.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How often a batch is tried again, in the same call, when PostgreSQL aborts it for a deadlock or a serialization
/// failure against another writer.
const CONFLICT_ATTEMPTS: usize = 3;

/// Where the PostgreSQL store is and how many connections it keeps.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/database`, or libpq's `host=... dbname=...` form.
    pub url: String,
    /// Overrides a password in the URL (for example, read from the environment). Never logged.
    pub password: Option<String>,
    /// The most connections open at once.
    pub pool_size: usize,
    /// The schema the tables live in, created if missing: lower-case letters, digits and `_`.
    pub schema: String,
}

impl PostgresConfig {
    pub const DEFAULT_SCHEMA: &str = "public";
    pub const DEFAULT_POOL_SIZE: usize = 4;

    /// `url`, no separate password, the default pool size and schema.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            pool_size: Self::DEFAULT_POOL_SIZE,
            schema: Self::DEFAULT_SCHEMA.to_owned(),
        }
    }

    /// Where this points, for logs: `host=127.0.0.1 port=5432 dbname=candles user=candled schema=public`. Never the
    /// password.
    pub fn describe(&self) -> String {
        let Ok(config) = tokio_postgres::Config::from_str(&self.url) else {
            return format!("an unparseable PostgreSQL URL, schema={}", self.schema);
        };
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|host| match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        let mut text = format!("host={}", if hosts.is_empty() { "localhost".to_owned() } else { hosts.join(",") });
        text += &format!(" port={}", if ports.is_empty() { "5432".to_owned() } else { ports.join(",") });
        if let Some(dbname) = config.get_dbname() {
            text += &format!(" dbname={dbname}");
        }
        if let Some(user) = config.get_user() {
            text += &format!(" user={user}");
        }
        text + &format!(" schema={}", self.schema)
    }

    /// The connection settings: the URL's, the password override, timeouts, and the schema as the search path.
    fn connection_config(&self) -> Result<tokio_postgres::Config, StoreError> {
        validate_schema(&self.schema)?;
        if self.pool_size == 0 {
            return Err(StoreError::PostgresConfig("the pool size must be at least 1".to_owned()));
        }
        // The URL's text is never shown: it may hold a password.
        let mut config = tokio_postgres::Config::from_str(&self.url)
            .map_err(|_| StoreError::PostgresConfig(format!("cannot parse the URL of {}", self.describe())))?;
        if let Some(password) = &self.password {
            config.password(password);
        }
        config.connect_timeout(TIMEOUT);
        config.application_name("candled");
        config.options(format!("-c search_path={}", self.schema));
        Ok(config)
    }
}

/// Shows where the store is, never the password (nor the URL's text, which may hold one).
impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.describe())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("pool_size", &self.pool_size)
            .field("schema", &self.schema)
            .finish()
    }
}

/// A schema name is put into SQL and the connection options as it is: only plain lower-case identifiers.
fn validate_schema(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if first_ok && schema.len() <= 63 && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        Ok(())
    } else {
        Err(StoreError::PostgresConfig(format!(
            "schema {schema:?} is not a plain identifier (lower-case letters, digits and _, at most 63)"
        )))
    }
}

/// The migrations, in order: each runs once per schema, in one transaction, recorded in `schema_migrations`. Add
/// new ones at the end; never edit one that has shipped.
const MIGRATIONS: &[(i32, &str)] = &[(1, MIGRATION_1), (2, MIGRATION_2)];

/// The tables of the SQLite schema with PostgreSQL's types: times in ms UTC as `BIGINT`, prices and volumes as
/// `DOUBLE PRECISION`, and `is_closed` as 0 or 1 (`SMALLINT`), so that SQLite's queries work unchanged. The trigger
/// records a revision whenever a closed row is updated, by candled or by hand, like SQLite's.
const MIGRATION_1: &str = "
CREATE TABLE candles (
    symbol          TEXT             NOT NULL,
    timeframe       TEXT             NOT NULL,
    timestamp       BIGINT           NOT NULL,
    open            DOUBLE PRECISION NOT NULL,
    high            DOUBLE PRECISION NOT NULL,
    low             DOUBLE PRECISION NOT NULL,
    close           DOUBLE PRECISION NOT NULL,
    volume          DOUBLE PRECISION NOT NULL,
    close_time      BIGINT           NOT NULL,
    quote_volume    DOUBLE PRECISION NOT NULL,
    trades          BIGINT           NOT NULL,
    taker_buy_base  DOUBLE PRECISION NOT NULL,
    taker_buy_quote DOUBLE PRECISION NOT NULL,
    is_closed       SMALLINT         NOT NULL CHECK (is_closed IN (0, 1)),
    PRIMARY KEY (symbol, timeframe, timestamp)
);

CREATE TABLE candle_revisions (
    symbol          TEXT             NOT NULL,
    timeframe       TEXT             NOT NULL,
    timestamp       BIGINT           NOT NULL,
    revised_at      BIGINT           NOT NULL,
    open            DOUBLE PRECISION NOT NULL,
    high            DOUBLE PRECISION NOT NULL,
    low             DOUBLE PRECISION NOT NULL,
    close           DOUBLE PRECISION NOT NULL,
    volume          DOUBLE PRECISION NOT NULL,
    quote_volume    DOUBLE PRECISION NOT NULL,
    trades          BIGINT           NOT NULL,
    taker_buy_base  DOUBLE PRECISION NOT NULL,
    taker_buy_quote DOUBLE PRECISION NOT NULL
);
CREATE INDEX candle_revisions_by_candle ON candle_revisions (symbol, timeframe, timestamp);

CREATE FUNCTION candle_revision() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO candle_revisions VALUES (
        OLD.symbol, OLD.timeframe, OLD.timestamp, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT,
        OLD.open, OLD.high, OLD.low, OLD.close, OLD.volume, OLD.quote_volume, OLD.trades,
        OLD.taker_buy_base, OLD.taker_buy_quote);
    RETURN NULL;
END
$$;
CREATE TRIGGER candle_revision AFTER UPDATE ON candles
    FOR EACH ROW WHEN (OLD.is_closed = 1) EXECUTE FUNCTION candle_revision();

CREATE TABLE indicators (
    symbol    TEXT             NOT NULL,
    timeframe TEXT             NOT NULL,
    timestamp BIGINT           NOT NULL,
    name      TEXT             NOT NULL,
    value     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (symbol, timeframe, timestamp, name)
);

CREATE TABLE exchange_gaps (
    symbol    TEXT   NOT NULL,
    timeframe TEXT   NOT NULL,
    from_open BIGINT NOT NULL,
    to_open   BIGINT NOT NULL,
    PRIMARY KEY (symbol, timeframe, from_open)
);
";

/// Schema v2, shaped for the write path: a stream's symbol and timeframe are stored once (`streams`), a candle is one
/// row keyed by `(stream_id, timestamp)` (`candle_rows`), and its indicator outputs one wide row of the same key
/// (`indicator_rows`, one `DOUBLE PRECISION` column per output, added on first write). `candles` and `indicators`
/// become views with `INSTEAD OF` triggers, so that every query and hand edit of v1 keeps working; the revision
/// trigger moves to `candle_rows`. The v1 tables are kept as `candles_v1_backup` and `indicators_v1_backup` (dropped
/// at once when both are empty: a fresh schema) and their rows copied, all in the migration's transaction.
const MIGRATION_2: &str = r#"
CREATE TABLE streams (
    id        INT  GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    symbol    TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    UNIQUE (symbol, timeframe)
);

CREATE TABLE candle_rows (
    stream_id       INT              NOT NULL,
    timestamp       BIGINT           NOT NULL,
    open            DOUBLE PRECISION NOT NULL,
    high            DOUBLE PRECISION NOT NULL,
    low             DOUBLE PRECISION NOT NULL,
    close           DOUBLE PRECISION NOT NULL,
    volume          DOUBLE PRECISION NOT NULL,
    close_time      BIGINT           NOT NULL,
    quote_volume    DOUBLE PRECISION NOT NULL,
    trades          BIGINT           NOT NULL,
    taker_buy_base  DOUBLE PRECISION NOT NULL,
    taker_buy_quote DOUBLE PRECISION NOT NULL,
    is_closed       SMALLINT         NOT NULL CHECK (is_closed IN (0, 1)),
    PRIMARY KEY (stream_id, timestamp)
);

CREATE TABLE indicator_rows (
    stream_id INT    NOT NULL,
    timestamp BIGINT NOT NULL,
    PRIMARY KEY (stream_id, timestamp)
);

-- The v1 tables become the backup; their trigger goes (a backup records no revision).
DROP TRIGGER candle_revision ON candles;
ALTER TABLE candles RENAME TO candles_v1_backup;
ALTER TABLE indicators RENAME TO indicators_v1_backup;

INSERT INTO streams (symbol, timeframe)
SELECT symbol, timeframe FROM candles_v1_backup
UNION
SELECT symbol, timeframe FROM indicators_v1_backup
ORDER BY 1, 2;

INSERT INTO candle_rows
SELECT s.id, c.timestamp, c.open, c.high, c.low, c.close, c.volume, c.close_time, c.quote_volume, c.trades,
       c.taker_buy_base, c.taker_buy_quote, c.is_closed
FROM candles_v1_backup c JOIN streams s USING (symbol, timeframe)
ORDER BY s.id, c.timestamp;

-- One column per distinct output name, then one wide row per candle.
DO $migrate$
DECLARE
    names TEXT[];
BEGIN
    SELECT array_agg(DISTINCT name ORDER BY name) INTO names FROM indicators_v1_backup;
    IF names IS NULL THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(names) n WHERE octet_length(n) > 63 OR n IN ('stream_id', 'timestamp')) THEN
        RAISE EXCEPTION 'an indicator name in indicators is longer than 63 bytes or is stream_id or timestamp: '
                        'it cannot be a column of indicator_rows';
    END IF;
    EXECUTE (SELECT 'ALTER TABLE indicator_rows '
                    || string_agg(format('ADD COLUMN %I DOUBLE PRECISION', n), ', ' ORDER BY n)
             FROM unnest(names) n);
    EXECUTE format(
        'INSERT INTO indicator_rows (stream_id, timestamp, %s) '
        'SELECT s.id, i.timestamp, %s FROM indicators_v1_backup i JOIN streams s USING (symbol, timeframe) '
        'GROUP BY s.id, i.timestamp ORDER BY s.id, i.timestamp',
        (SELECT string_agg(format('%I', n), ', ' ORDER BY n) FROM unnest(names) n),
        (SELECT string_agg(format('MAX(i.value) FILTER (WHERE i.name = %L)', n), ', ' ORDER BY n)
         FROM unnest(names) n));
END
$migrate$;

-- A fresh schema: nothing to keep.
DO $fresh$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM candles_v1_backup) AND NOT EXISTS (SELECT 1 FROM indicators_v1_backup) THEN
        DROP TABLE candles_v1_backup, indicators_v1_backup;
    END IF;
END
$fresh$;

-- The id of a stream, registered if new: for the views' triggers (candled caches ids itself).
CREATE FUNCTION candled_stream_id(p_symbol TEXT, p_timeframe TEXT) RETURNS INT
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    found INT;
BEGIN
    SELECT id INTO found FROM streams WHERE symbol = p_symbol AND timeframe = p_timeframe;
    IF found IS NULL THEN
        INSERT INTO streams (symbol, timeframe) VALUES (p_symbol, p_timeframe) ON CONFLICT DO NOTHING;
        SELECT id INTO found FROM streams WHERE symbol = p_symbol AND timeframe = p_timeframe;
    END IF;
    RETURN found;
END
$$;

CREATE OR REPLACE FUNCTION candle_revision() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO candle_revisions
    SELECT s.symbol, s.timeframe, OLD.timestamp, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT,
           OLD.open, OLD.high, OLD.low, OLD.close, OLD.volume, OLD.quote_volume, OLD.trades,
           OLD.taker_buy_base, OLD.taker_buy_quote
    FROM streams s WHERE s.id = OLD.stream_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER candle_revision AFTER UPDATE ON candle_rows
    FOR EACH ROW WHEN (OLD.is_closed = 1) EXECUTE FUNCTION candle_revision();

CREATE VIEW candles AS
SELECT s.symbol, s.timeframe, c.timestamp, c.open, c.high, c.low, c.close, c.volume, c.close_time, c.quote_volume,
       c.trades, c.taker_buy_base, c.taker_buy_quote, c.is_closed
FROM candle_rows c JOIN streams s ON s.id = c.stream_id;

-- Edits of the view land on candle_rows (an update of a closed candle is thus a recorded revision).
CREATE FUNCTION candles_edit() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO candle_rows VALUES (
            candled_stream_id(NEW.symbol, NEW.timeframe), NEW.timestamp, NEW.open, NEW.high, NEW.low, NEW.close,
            NEW.volume, NEW.close_time, NEW.quote_volume, NEW.trades, NEW.taker_buy_base, NEW.taker_buy_quote,
            NEW.is_closed);
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE candle_rows SET
            stream_id = CASE WHEN (NEW.symbol, NEW.timeframe) IS NOT DISTINCT FROM (OLD.symbol, OLD.timeframe)
                             THEN stream_id ELSE candled_stream_id(NEW.symbol, NEW.timeframe) END,
            timestamp = NEW.timestamp, open = NEW.open, high = NEW.high, low = NEW.low, close = NEW.close,
            volume = NEW.volume, close_time = NEW.close_time, quote_volume = NEW.quote_volume, trades = NEW.trades,
            taker_buy_base = NEW.taker_buy_base, taker_buy_quote = NEW.taker_buy_quote, is_closed = NEW.is_closed
        WHERE stream_id = (SELECT id FROM streams WHERE symbol = OLD.symbol AND timeframe = OLD.timeframe)
          AND timestamp = OLD.timestamp;
        RETURN NEW;
    ELSE
        DELETE FROM candle_rows
        WHERE stream_id = (SELECT id FROM streams WHERE symbol = OLD.symbol AND timeframe = OLD.timeframe)
          AND timestamp = OLD.timestamp;
        RETURN OLD;
    END IF;
END
$$;
CREATE TRIGGER candles_edit INSTEAD OF INSERT OR UPDATE OR DELETE ON candles
    FOR EACH ROW EXECUTE FUNCTION candles_edit();

-- (Re)makes the indicators view with one arm per column of indicator_rows: run whenever a column is added.
CREATE FUNCTION candled_indicators_view() RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    arms TEXT;
BEGIN
    SELECT 'VALUES ' || string_agg(format('(%L::TEXT, r.%I)', attname, attname), ', ' ORDER BY attnum) INTO arms
    FROM pg_attribute
    WHERE attrelid = 'indicator_rows'::regclass AND attnum > 0 AND NOT attisdropped
      AND attname NOT IN ('stream_id', 'timestamp');
    EXECUTE format(
        'CREATE OR REPLACE VIEW indicators AS '
        'SELECT s.symbol, s.timeframe, r.timestamp, v.name, v.value '
        'FROM indicator_rows r JOIN streams s ON s.id = r.stream_id '
        'CROSS JOIN LATERAL (%s) AS v (name, value) WHERE v.value IS NOT NULL',
        COALESCE(arms, 'SELECT NULL::TEXT, NULL::DOUBLE PRECISION WHERE FALSE'));
END
$$;
SELECT candled_indicators_view();

-- Edits of the view set the named column of the candle's row: NULL removes the output (and a row left with no
-- value goes). Inserting an output with no column yet is refused: candled adds columns as it writes them.
CREATE FUNCTION indicators_edit() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    old_id INT;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        SELECT id INTO old_id FROM streams WHERE symbol = OLD.symbol AND timeframe = OLD.timeframe;
        EXECUTE format('UPDATE indicator_rows SET %I = NULL WHERE stream_id = $1 AND timestamp = $2', OLD.name)
            USING old_id, OLD.timestamp;
        DELETE FROM indicator_rows r WHERE r.stream_id = old_id AND r.timestamp = OLD.timestamp
            AND jsonb_strip_nulls(to_jsonb(r) - 'stream_id' - 'timestamp') = '{}'::jsonb;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'indicator_rows'::regclass AND attnum > 0
                       AND NOT attisdropped AND attname = NEW.name AND attname NOT IN ('stream_id', 'timestamp')) THEN
            RAISE EXCEPTION 'no indicator output % is stored yet: indicator_rows has no column for it', NEW.name;
        END IF;
        EXECUTE format('INSERT INTO indicator_rows AS r (stream_id, timestamp, %1$I) VALUES ($1, $2, $3) '
                       'ON CONFLICT (stream_id, timestamp) DO UPDATE SET %1$I = EXCLUDED.%1$I', NEW.name)
            USING candled_stream_id(NEW.symbol, NEW.timeframe), NEW.timestamp, NEW.value;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER indicators_edit INSTEAD OF INSERT OR UPDATE OR DELETE ON indicators
    FOR EACH ROW EXECUTE FUNCTION indicators_edit();
"#;

/// TimescaleDB's chunks of `candle_rows`: a week of open times (ms).
const HYPERTABLE_CHUNK_MS: i64 = 7 * 24 * 3_600_000;

/// The upsert of one batch's candles, given as arrays (one per column), under SQLite's rules: an in-progress row is
/// replaced by any newer update; a closed row is final, updated (a revision, which the trigger records) only by a
/// closed row with other values. Rows go in key order, so that two writers lock shared rows in the same order.
///
/// Two writers upserting the same closed candle at once: the second waits for the first's row, then compares with
/// what the first committed; identical, it changes nothing and no revision is recorded.
const UPSERT_CANDLES: &str = "
INSERT INTO candle_rows AS c (stream_id, timestamp, open, high, low, close, volume, close_time, quote_volume, trades,
                              taker_buy_base, taker_buy_quote, is_closed)
SELECT * FROM unnest($1::INT[], $2::BIGINT[], $3::FLOAT8[], $4::FLOAT8[], $5::FLOAT8[], $6::FLOAT8[], $7::FLOAT8[],
                     $8::BIGINT[], $9::FLOAT8[], $10::BIGINT[], $11::FLOAT8[], $12::FLOAT8[], $13::SMALLINT[])
ORDER BY 1, 2
ON CONFLICT (stream_id, timestamp) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, close_time = EXCLUDED.close_time, quote_volume = EXCLUDED.quote_volume,
    trades = EXCLUDED.trades, taker_buy_base = EXCLUDED.taker_buy_base, taker_buy_quote = EXCLUDED.taker_buy_quote,
    is_closed = EXCLUDED.is_closed
WHERE c.is_closed = 0
   OR (EXCLUDED.is_closed = 1
       AND (c.open, c.high, c.low, c.close, c.volume, c.close_time, c.quote_volume, c.trades, c.taker_buy_base,
            c.taker_buy_quote)
           IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume,
                             EXCLUDED.close_time, EXCLUDED.quote_volume, EXCLUDED.trades, EXCLUDED.taker_buy_base,
                             EXCLUDED.taker_buy_quote))
";

/// The upsert of one batch's indicator rows, one column per output in `columns`, given as arrays (NULL where a row
/// has no value of that output): a value in the batch overwrites the stored one; an output absent from a row (a
/// warm-up) or not in `columns` (the indicator set changed) keeps what is stored; a row whose values are all
/// unchanged is not rewritten. Rows go in key order, as the candles do.
fn upsert_indicators_sql(columns: &[String]) -> String {
    let quoted: Vec<String> = columns.iter().map(|name| quote_identifier(name)).collect();
    let arrays: String = (0..columns.len()).map(|i| format!(", unnest(${}::FLOAT8[])", i + 3)).collect();
    let merged: Vec<String> = quoted.iter().map(|q| format!("COALESCE(EXCLUDED.{q}, r.{q})")).collect();
    let set: Vec<String> = quoted.iter().zip(&merged).map(|(q, merged)| format!("{q} = {merged}")).collect();
    let stored: Vec<String> = quoted.iter().map(|q| format!("r.{q}")).collect();
    format!(
        "INSERT INTO indicator_rows AS r (stream_id, timestamp, {columns})
         SELECT * FROM ROWS FROM (unnest($1::INT[]), unnest($2::BIGINT[]){arrays}) ORDER BY 1, 2
         ON CONFLICT (stream_id, timestamp) DO UPDATE SET {set}
         WHERE ({stored}) IS DISTINCT FROM ({merged})",
        columns = quoted.join(", "),
        set = set.join(", "),
        stored = stored.join(", "),
        merged = merged.join(", "),
    )
}

/// `name` as a quoted SQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An output name must fit a column of `indicator_rows`: PostgreSQL cuts identifiers at 63 bytes, and the key
/// columns are taken.
fn validate_output_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > 63 || name == "stream_id" || name == "timestamp" {
        return Err(StoreError::PostgresConfig(format!(
            "indicator output {name:?} cannot be a column of indicator_rows (1 to 63 bytes, not stream_id or timestamp)"
        )));
    }
    Ok(())
}

/// Selects a stream's rows by its key (`$1` symbol, `$2` timeframe): the id from `streams`, then the primary key.
const OF_STREAM: &str = "stream_id = (SELECT id FROM streams WHERE symbol = $1 AND timeframe = $2)";

/// The output columns of `indicator_rows`, in table order.
const INDICATOR_COLUMNS: &str = "SELECT attname::TEXT FROM pg_attribute
    WHERE attrelid = 'indicator_rows'::regclass AND attnum > 0 AND NOT attisdropped
      AND attname NOT IN ('stream_id', 'timestamp')
    ORDER BY attnum";

const UPSERT_GAPS: &str = "
INSERT INTO exchange_gaps (symbol, timeframe, from_open, to_open)
SELECT $1, $2, * FROM unnest($3::BIGINT[], $4::BIGINT[])
ON CONFLICT (symbol, timeframe, from_open) DO UPDATE SET to_open = EXCLUDED.to_open
";

const CANDLE_COLUMNS: &str = "timestamp, close_time, open, high, low, close, volume, quote_volume, trades, \
                              taker_buy_base, taker_buy_quote, is_closed";

/// The connection pool and the runtime its connections run on, shared by every handle.
struct Shared {
    /// `Some` until dropped: shut down without waiting, so that the last handle may be dropped anywhere, an actix
    /// arbiter included.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    description: String,
    /// When [`Store::check`] last asked the server, and what it found.
    last_check: Mutex<Option<(Instant, Result<(), String>)>>,
    /// What the writes learn about the schema, shared with the runtime's tasks.
    known: Arc<Known>,
}

/// What every handle of a backend has learnt about its schema: stream ids (a stream's id never changes; streams are
/// never deleted) and the output columns `indicator_rows` has (columns are only ever added).
#[derive(Debug, Default)]
struct Known {
    schema: String,
    stream_ids: Mutex<HashMap<StreamKey, i32>>,
    indicator_columns: Mutex<HashSet<String>>,
}

impl Known {
    fn stream_ids(&self) -> std::sync::MutexGuard<'_, HashMap<StreamKey, i32>> {
        self.stream_ids.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn indicator_columns(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.indicator_columns.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.pool.close();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A PostgreSQL database holding candles: a pool of connections on a small runtime of its own. Cheap to clone; every
/// clone and every [`PostgresStore`] from it share the pool.
#[derive(Clone)]
pub struct PostgresBackend {
    shared: Arc<Shared>,
}

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackend").field("at", &self.shared.description).finish()
    }
}

impl PostgresBackend {
    /// Makes the pool, connects, and brings the schema up to date (creating it if missing). Blocking; callable from
    /// anywhere, an async context included.
    pub fn connect(config: &PostgresConfig) -> Result<Self, StoreError> {
        Self::connect_migrated(config, MIGRATIONS)
    }

    /// [`connect`](Self::connect), bringing the schema up to the last of `migrations` (tests make v1 schemas).
    fn connect_migrated(
        config: &PostgresConfig,
        migrations: &'static [(i32, &'static str)],
    ) -> Result<Self, StoreError> {
        let connection = config.connection_config()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("candled-postgres")
            .enable_all()
            .build()
            .map_err(|error| StoreError::PostgresConfig(format!("cannot start the PostgreSQL runtime: {error}")))?;
        let manager =
            Manager::from_config(connection, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = match Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(TIMEOUT))
            .create_timeout(Some(TIMEOUT))
            .recycle_timeout(Some(TIMEOUT))
            .build()
        {
            Ok(pool) => pool,
            Err(error) => {
                // Dropped without waiting: the caller may be on an async runtime, where a blocking drop panics.
                runtime.shutdown_background();
                return Err(StoreError::PostgresConfig(format!("cannot make the connection pool: {error}")));
            }
        };
        let backend = Self {
            shared: Arc::new(Shared {
                handle: runtime.handle().clone(),
                runtime: Some(runtime),
                pool,
                description: config.describe(),
                last_check: Mutex::new(None),
                known: Arc::new(Known { schema: config.schema.clone(), ..Known::default() }),
            }),
        };
        let schema = config.schema.clone();
        backend.run(move |pool| migrate(pool, schema, migrations))?;
        Ok(backend)
    }

    /// A handle on the store, for one user (the storage actor, a reader).
    pub fn store(&self) -> PostgresStore {
        PostgresStore { backend: self.clone() }
    }

    /// Where the store is, for logs (never the password).
    pub fn describe(&self) -> &str {
        &self.shared.description
    }

    /// Runs `task` on the backend's runtime and waits for its result on a plain channel: never `block_on`, so that
    /// the caller may be on any thread, a tokio runtime's included.
    fn run<T, F, Fut>(&self, task: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (reply, result) = std::sync::mpsc::sync_channel(1);
        let future = task(self.shared.pool.clone());
        self.shared.handle.spawn(async move {
            // The caller waits for this; it only goes away if its thread panicked.
            let _ = reply.send(future.await);
        });
        result.recv().map_err(|_| StoreError::PostgresTaskLost)?
    }
}

/// Creates the schema if missing and applies the `migrations` it lacks, one instance at a time (an advisory lock
/// keyed by the schema's name), then makes `candle_rows` a hypertable where TimescaleDB can be had.
async fn migrate(pool: Pool, schema: String, migrations: &'static [(i32, &'static str)]) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('candled migrations ' || $1))", &[&schema]).await?;
    // Created only when missing: a user without the right to create schemas may be given one made for it.
    let missing: bool = tx.query_one("SELECT to_regnamespace($1) IS NULL", &[&schema]).await?.get(0);
    if missing {
        tx.batch_execute(&format!("CREATE SCHEMA {schema}")).await?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let applied: Option<i32> = tx.query_one("SELECT MAX(version) FROM schema_migrations", &[]).await?.get(0);
    for (version, sql) in migrations.iter().filter(|(version, _)| Some(*version) > applied) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT)",
            &[version],
        )
        .await?;
        log::info!("storage: PostgreSQL schema {schema} migrated to version {version}");
        if *version == 2 {
            let kept: bool = tx.query_one("SELECT to_regclass('candles_v1_backup') IS NOT NULL", &[]).await?.get(0);
            if kept {
                log::warn!(
                    "storage: the v1 tables of PostgreSQL schema {schema} are kept as {schema}.candles_v1_backup and \
                     {schema}.indicators_v1_backup (their rows are copied into schema v2); drop them when satisfied"
                );
            }
        }
    }
    tx.commit().await?;
    make_hypertable(&**client, &schema).await;
    Ok(())
}

/// Makes `candle_rows` a TimescaleDB hypertable on its open time, chunked by week, if the extension is installed or can
/// be (it needs to be preloaded by the server). Without it, nothing happens: plain tables work the same.
async fn make_hypertable(client: &impl GenericClient, schema: &str) {
    let installed = "SELECT extnamespace::regnamespace::TEXT FROM pg_extension WHERE extname = 'timescaledb'";
    let mut namespace: Option<String> = match client.query_opt(installed, &[]).await {
        Ok(row) => row.map(|row| row.get(0)),
        Err(_) => return,
    };
    if namespace.is_none() {
        let available = "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'";
        if !matches!(client.query_opt(available, &[]).await, Ok(Some(_))) {
            return;
        }
        if let Err(error) = client.batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb").await {
            log::debug!("storage: TimescaleDB is available but cannot be created ({error}): plain tables");
            return;
        }
        namespace = client.query_opt(installed, &[]).await.ok().flatten().map(|row| row.get(0));
    }
    let Some(namespace) = namespace else { return };
    let sql = format!(
        "SELECT {namespace}.create_hypertable('{schema}.candle_rows', 'timestamp', \
         chunk_time_interval => {HYPERTABLE_CHUNK_MS}::BIGINT, if_not_exists => TRUE, migrate_data => TRUE)"
    );
    match client.batch_execute(&sql).await {
        Ok(()) => log::info!("storage: {schema}.candle_rows is a TimescaleDB hypertable"),
        Err(error) => log::warn!("storage: cannot make {schema}.candle_rows a TimescaleDB hypertable: {error}"),
    }
}

/// Whether a PostgreSQL error is the server or the connection going away (a restart, a network blip) or a conflict
/// with another writer, which trying again later cures, rather than a mistake in what was sent.
pub(crate) fn is_transient(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                ]
                .contains(code)
        }
        // No server answer: connecting or the socket failed.
        None => std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>()),
    }
}

/// One handle on a [`PostgresBackend`]'s store. Every method blocks the calling thread (any thread, an actix
/// arbiter's included) while the backend's runtime does the work.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    backend: PostgresBackend,
}

/// A batch's candles as one array per column, as [`UPSERT_CANDLES`] takes them.
#[derive(Default)]
struct CandleColumns {
    stream_id: Vec<i32>,
    open_time: Vec<i64>,
    open: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    volume: Vec<f64>,
    close_time: Vec<i64>,
    quote_volume: Vec<f64>,
    trades: Vec<i64>,
    taker_buy_base: Vec<f64>,
    taker_buy_quote: Vec<f64>,
    is_closed: Vec<i16>,
}

impl CandleColumns {
    fn push(&mut self, stream_id: i32, c: &Candle) {
        self.stream_id.push(stream_id);
        self.open_time.push(c.open_time);
        self.open.push(c.open);
        self.high.push(c.high);
        self.low.push(c.low);
        self.close.push(c.close);
        self.volume.push(c.volume);
        self.close_time.push(c.close_time);
        self.quote_volume.push(c.quote_volume);
        self.trades.push(c.trades as i64);
        self.taker_buy_base.push(c.taker_buy_base);
        self.taker_buy_quote.push(c.taker_buy_quote);
        self.is_closed.push(i16::from(c.is_closed));
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 13] {
        [
            &self.stream_id,
            &self.open_time,
            &self.open,
            &self.high,
            &self.low,
            &self.close,
            &self.volume,
            &self.close_time,
            &self.quote_volume,
            &self.trades,
            &self.taker_buy_base,
            &self.taker_buy_quote,
            &self.is_closed,
        ]
    }
}

/// One candle's indicator outputs in a batch: a value per output column, `None` where the batch has none.
struct WideRow {
    stream: StreamId,
    open_time: i64,
    values: Vec<Option<f64>>,
}

/// A batch's indicator rows as one array per column, as [`upsert_indicators_sql`] takes them.
struct IndicatorColumns {
    stream_id: Vec<i32>,
    open_time: Vec<i64>,
    values: Vec<Vec<Option<f64>>>,
}

impl IndicatorColumns {
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.stream_id, &self.open_time];
        params.extend(self.values.iter().map(|column| column as &(dyn ToSql + Sync)));
        params
    }
}

/// Splits rows into rounds in which each key appears once: the n-th round holds the n-th occurrence of each key. A
/// multi-row upsert may touch a row only once; rounds applied in order give what one upsert per row would.
fn rounds<K: std::hash::Hash + Eq, T>(rows: impl IntoIterator<Item = (K, T)>) -> Vec<Vec<T>> {
    let mut seen: HashMap<K, usize> = HashMap::new();
    let mut rounds: Vec<Vec<T>> = Vec::new();
    for (key, row) in rows {
        let round = seen.entry(key).or_insert(0);
        if *round == rounds.len() {
            rounds.push(Vec::new());
        }
        rounds[*round].push(row);
        *round += 1;
    }
    rounds
}

/// Gathers indicator values into wide rows, one per candle, in the order candles first appear: each output's last
/// value in the batch wins, as one upsert per value in order would leave it.
fn wide_rows(values: &[IndicatorRow], column_of_output: &[usize], columns: usize) -> Result<Vec<WideRow>, StoreError> {
    let mut row_of: HashMap<(StreamId, i64), usize> = HashMap::new();
    let mut rows: Vec<WideRow> = Vec::new();
    for value in values {
        let column = *column_of_output.get(usize::from(value.output)).ok_or(StoreError::UnknownOutput(value.output))?;
        let index = *row_of.entry((value.stream, value.open_time)).or_insert_with(|| {
            rows.push(WideRow { stream: value.stream, open_time: value.open_time, values: vec![None; columns] });
            rows.len() - 1
        });
        rows[index].values[column] = Some(value.value);
    }
    Ok(rows)
}

/// A batch checked, its candles split into rounds and its indicator values gathered into wide rows, its streams still
/// as indexes into the caller's keys.
struct PreparedBatch {
    /// The streams the batch writes, by index.
    keys: Vec<(StreamId, StreamKey)>,
    candle_rounds: Vec<Vec<(StreamId, Candle)>>,
    /// The output columns written, each once.
    columns: Vec<String>,
    indicator_rows: Vec<WideRow>,
}

impl PreparedBatch {
    fn new(
        streams: &[StreamKey],
        names: &[String],
        candles: &[(StreamId, Candle)],
        indicators: &[IndicatorRow],
    ) -> Result<Self, StoreError> {
        let mut keys: HashMap<StreamId, StreamKey> = HashMap::new();
        for stream in candles.iter().map(|(stream, _)| *stream).chain(indicators.iter().map(|row| row.stream)) {
            if let std::collections::hash_map::Entry::Vacant(entry) = keys.entry(stream) {
                entry.insert(streams.get(stream.0 as usize).ok_or(StoreError::UnknownStream(stream))?.clone());
            }
        }
        let candle_rounds = rounds(candles.iter().map(|(stream, c)| ((*stream, c.open_time), (*stream, *c))));
        let (mut columns, mut column_of_output) = (Vec::new(), Vec::new());
        if !indicators.is_empty() {
            let mut column_of_name: HashMap<&str, usize> = HashMap::new();
            for name in names {
                validate_output_name(name)?;
                let column = *column_of_name.entry(name).or_insert_with(|| {
                    columns.push(name.clone());
                    columns.len() - 1
                });
                column_of_output.push(column);
            }
        }
        let indicator_rows = wide_rows(indicators, &column_of_output, columns.len())?;
        Ok(Self { keys: keys.into_iter().collect(), candle_rounds, columns, indicator_rows })
    }
}

/// The ids of `keys`' streams: from what is known, else registered (`INSERT … ON CONFLICT DO NOTHING`, in key order,
/// so that two instances registering the same new streams do not deadlock) and read back.
async fn stream_ids(
    client: &impl GenericClient,
    known: &Known,
    keys: &[(StreamId, StreamKey)],
) -> Result<HashMap<StreamId, i32>, StoreError> {
    let mut ids = HashMap::new();
    let mut missing = Vec::new();
    {
        let cached = known.stream_ids();
        for (stream, key) in keys {
            match cached.get(key) {
                Some(id) => {
                    ids.insert(*stream, *id);
                }
                None => missing.push((*stream, key)),
            }
        }
    }
    if missing.is_empty() {
        return Ok(ids);
    }
    let symbols: Vec<&str> = missing.iter().map(|(_, key)| key.symbol.as_str()).collect();
    let timeframes: Vec<&str> = missing.iter().map(|(_, key)| key.timeframe.as_str()).collect();
    let register = "INSERT INTO streams (symbol, timeframe)
                    SELECT * FROM unnest($1::TEXT[], $2::TEXT[]) ORDER BY 1, 2 ON CONFLICT DO NOTHING";
    client.execute(register, &[&symbols, &timeframes]).await?;
    let read = "SELECT s.id, s.symbol, s.timeframe
                FROM streams s JOIN unnest($1::TEXT[], $2::TEXT[]) AS k (symbol, timeframe) USING (symbol, timeframe)";
    let rows = client.query(read, &[&symbols, &timeframes]).await?;
    let mut found: HashMap<(String, String), i32> = HashMap::new();
    for row in rows {
        found.insert((row.try_get(1)?, row.try_get(2)?), row.try_get(0)?);
    }
    let mut cached = known.stream_ids();
    for (stream, key) in missing {
        let id = *found
            .get(&(key.symbol.clone(), key.timeframe.as_str().to_owned()))
            .ok_or(StoreError::UnknownStream(stream))?;
        cached.insert(key.clone(), id);
        ids.insert(stream, id);
    }
    Ok(ids)
}

/// Adds the output columns `indicator_rows` lacks, and remakes the `indicators` view over them: one instance at a
/// time (an advisory lock keyed by the schema), in a transaction of its own before the batch's.
async fn ensure_indicator_columns(pool: &Pool, known: &Known, columns: &[String]) -> Result<(), StoreError> {
    if columns.iter().all(|column| known.indicator_columns().contains(column)) {
        return Ok(());
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('candled indicator columns ' || $1))", &[&known.schema]).await?;
    let existing: HashSet<String> =
        tx.query(INDICATOR_COLUMNS, &[]).await?.iter().map(|row| row.try_get(0)).collect::<Result<_, _>>()?;
    let missing: Vec<&String> = columns.iter().filter(|column| !existing.contains(*column)).collect();
    if !missing.is_empty() {
        let additions: Vec<String> = missing
            .iter()
            .map(|column| format!("ADD COLUMN IF NOT EXISTS {} DOUBLE PRECISION", quote_identifier(column)))
            .collect();
        tx.batch_execute(&format!(
            "ALTER TABLE indicator_rows {}; SELECT candled_indicators_view();",
            additions.join(", ")
        ))
        .await?;
        log::info!("storage: indicator_rows has new output columns: {missing:?}");
    }
    tx.commit().await?;
    let mut known_columns = known.indicator_columns();
    known_columns.extend(existing);
    known_columns.extend(columns.iter().cloned());
    Ok(())
}

impl PostgresStore {
    /// Where the store is, for logs.
    pub fn describe(&self) -> &str {
        self.backend.describe()
    }

    /// The backend this handle is on.
    pub fn backend(&self) -> &PostgresBackend {
        &self.backend
    }

    fn run<T, F, Fut>(&self, task: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.backend.run(task)
    }

    /// Runs one query with owned parameters and maps each row.
    fn query_map<T: Send + 'static>(
        &self,
        sql: String,
        params: Vec<Box<dyn ToSql + Send + Sync>>,
        map: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let statement = client.prepare_cached(&sql).await?;
            let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
            let rows = client.query(&statement, &params).await?;
            rows.iter().map(map).collect()
        })
    }

    /// Runs one query on `indicator_rows`, whose columns change, so unprepared: a cached `SELECT *` would fail once
    /// another instance adds a column.
    fn query_indicator_rows<T: Send + 'static>(
        &self,
        sql: String,
        params: Vec<Box<dyn ToSql + Send + Sync>>,
        map: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
            let rows = client.query(sql.as_str(), &params).await?;
            rows.iter().map(map).collect()
        })
    }

    /// `MIN` or `MAX` of a stream's closed open times.
    fn closed_bound(&self, key: &StreamKey, aggregate: &str) -> Result<Option<i64>, StoreError> {
        let sql = format!("SELECT {aggregate}(timestamp) FROM candle_rows WHERE {OF_STREAM} AND is_closed = 1");
        let params = stream_params(&key.symbol, key.timeframe);
        Ok(self.query_map(sql, params, |row| Ok(row.try_get::<_, Option<i64>>(0)?))?.into_iter().next().flatten())
    }

    /// Every recorded revision of a stream, oldest first.
    pub fn revision_history(&self, symbol: &str, timeframe: Timeframe) -> Result<Vec<Revision>, StoreError> {
        let sql = "SELECT timestamp, revised_at, open, high, low, close, volume, quote_volume, trades, taker_buy_base,
                          taker_buy_quote
                   FROM candle_revisions WHERE symbol = $1 AND timeframe = $2 ORDER BY revised_at, timestamp";
        self.query_map(sql.to_owned(), stream_params(symbol, timeframe), |row| {
            let open_time: i64 = row.try_get(0)?;
            let candle = Candle {
                open_time,
                close_time: 0,
                open: row.try_get(2)?,
                high: row.try_get(3)?,
                low: row.try_get(4)?,
                close: row.try_get(5)?,
                volume: row.try_get(6)?,
                quote_volume: row.try_get(7)?,
                trades: row.try_get::<_, i64>(8)? as u64,
                taker_buy_base: row.try_get(9)?,
                taker_buy_quote: row.try_get(10)?,
                is_closed: true,
            };
            Ok(Revision { revised_at: row.try_get(1)?, old: candle })
        })
    }
}

/// A recorded revision: the values a closed candle had before it was revised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Revision {
    /// When, in ms UTC.
    pub revised_at: i64,
    /// The old values (`close_time` is not kept: 0).
    pub old: Candle,
}

fn stream_params(symbol: &str, timeframe: Timeframe) -> Vec<Box<dyn ToSql + Send + Sync>> {
    vec![Box::new(symbol.to_owned()), Box::new(timeframe.as_str())]
}

/// Reads a row selected with [`CANDLE_COLUMNS`].
fn candle_from_row(row: &Row) -> Result<Candle, StoreError> {
    Ok(Candle {
        open_time: row.try_get(0)?,
        close_time: row.try_get(1)?,
        open: row.try_get(2)?,
        high: row.try_get(3)?,
        low: row.try_get(4)?,
        close: row.try_get(5)?,
        volume: row.try_get(6)?,
        quote_volume: row.try_get(7)?,
        trades: row.try_get::<_, i64>(8)? as u64,
        taker_buy_base: row.try_get(9)?,
        taker_buy_quote: row.try_get(10)?,
        is_closed: row.try_get::<_, i16>(11)? == 1,
    })
}

fn timeframe_of(name: String) -> Result<Timeframe, StoreError> {
    name.parse().map_err(|_| StoreError::BadTimeframe(name))
}

/// The open time and the stored outputs (name, value) of an `indicator_rows` row selected with `*`.
fn outputs_of(row: &Row) -> Result<(i64, Vec<(String, f64)>), StoreError> {
    let mut timestamp = None;
    let mut values = Vec::new();
    for (index, column) in row.columns().iter().enumerate() {
        match column.name() {
            "stream_id" => {}
            "timestamp" => timestamp = Some(row.try_get::<_, i64>(index)?),
            name => {
                if let Some(value) = row.try_get::<_, Option<f64>>(index)? {
                    values.push((name.to_owned(), value));
                }
            }
        }
    }
    Ok((timestamp.unwrap_or_default(), values))
}

/// Upserts a prepared batch in one transaction: the candles, one multi-row statement per round, then the indicator
/// rows in one. Returns the rows changed.
async fn upsert_batch(
    pool: &Pool,
    known: &Known,
    batch: &PreparedBatch,
    indicators_sql: &str,
) -> Result<usize, StoreError> {
    let mut client = pool.get().await?;
    let ids = stream_ids(&**client, known, &batch.keys).await?;
    let id = |stream: StreamId| ids.get(&stream).copied().ok_or(StoreError::UnknownStream(stream));
    let mut candle_rounds = Vec::with_capacity(batch.candle_rounds.len());
    for round in &batch.candle_rounds {
        let mut columns = CandleColumns::default();
        for (stream, candle) in round {
            columns.push(id(*stream)?, candle);
        }
        candle_rounds.push(columns);
    }
    let rows = &batch.indicator_rows;
    let mut indicators = IndicatorColumns {
        stream_id: Vec::with_capacity(rows.len()),
        open_time: Vec::with_capacity(rows.len()),
        values: vec![Vec::with_capacity(rows.len()); batch.columns.len()],
    };
    for row in rows {
        indicators.stream_id.push(id(row.stream)?);
        indicators.open_time.push(row.open_time);
        for (column, value) in indicators.values.iter_mut().zip(&row.values) {
            column.push(*value);
        }
    }
    let tx = client.transaction().await?;
    let mut changed = 0;
    if !candle_rounds.is_empty() {
        let upsert = tx.prepare_cached(UPSERT_CANDLES).await?;
        for round in &candle_rounds {
            changed += tx.execute(&upsert, &round.params()).await?;
        }
    }
    if !rows.is_empty() {
        let upsert = tx.prepare_cached(indicators_sql).await?;
        changed += tx.execute(&upsert, &indicators.params()).await?;
    }
    tx.commit().await?;
    Ok(changed as usize)
}

impl Store for PostgresStore {
    /// Upserts a batch in one transaction: the candles (one row each), one multi-row statement per round (one round
    /// unless a candle repeats in the batch), then the indicator values as one wide row per candle (each output's last
    /// value in the batch), in one statement, new output columns added first. A deadlock or serialization failure
    /// against another writer is tried again. Returns the rows changed: candle rows plus indicator rows.
    fn write_batch(
        &mut self,
        streams: &[StreamKey],
        names: &[String],
        candles: &[(StreamId, Candle)],
        indicators: &[IndicatorRow],
    ) -> Result<usize, StoreError> {
        if candles.is_empty() && indicators.is_empty() {
            return Ok(0);
        }
        let batch = PreparedBatch::new(streams, names, candles, indicators)?;
        let known = self.backend.shared.known.clone();
        self.run(move |pool| async move {
            let indicators_sql = if batch.indicator_rows.is_empty() {
                String::new()
            } else {
                ensure_indicator_columns(&pool, &known, &batch.columns).await?;
                upsert_indicators_sql(&batch.columns)
            };
            let mut attempt = 1;
            loop {
                match upsert_batch(&pool, &known, &batch, &indicators_sql).await {
                    Err(StoreError::Postgres(error))
                        if attempt < CONFLICT_ATTEMPTS
                            && matches!(
                                error.code(),
                                Some(&SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE)
                            ) =>
                    {
                        attempt += 1;
                    }
                    result => return result,
                }
            }
        })
    }

    /// Records ranges `[from_open, to_open)` the exchange confirmed it has no candles for (a range starting where a
    /// recorded one starts replaces it).
    fn record_exchange_gaps(&mut self, key: &StreamKey, gaps: &[Gap]) -> Result<(), StoreError> {
        // The last of several gaps starting at the same open time wins, as one insert-or-replace per gap would give.
        let mut by_start: HashMap<i64, i64> = HashMap::new();
        for gap in gaps {
            by_start.insert(gap.from_open, gap.to_open);
        }
        if by_start.is_empty() {
            return Ok(());
        }
        let (from, to): (Vec<i64>, Vec<i64>) = by_start.into_iter().unzip();
        let (symbol, timeframe) = (key.symbol.clone(), key.timeframe.as_str());
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let statement = client.prepare_cached(UPSERT_GAPS).await?;
            client.execute(&statement, &[&symbol, &timeframe, &from, &to]).await?;
            Ok(())
        })
    }

    fn last_closed(&self) -> Result<HashMap<(String, Timeframe), i64>, StoreError> {
        // Per stream, the newest closed row: a walk back along the primary key.
        let sql = "SELECT s.symbol, s.timeframe, newest.timestamp FROM streams s
                   CROSS JOIN LATERAL (SELECT MAX(timestamp) AS timestamp FROM candle_rows
                                       WHERE stream_id = s.id AND is_closed = 1) AS newest
                   WHERE newest.timestamp IS NOT NULL";
        let rows = self.query_map(sql.to_owned(), Vec::new(), |row| {
            Ok(((row.try_get::<_, String>(0)?, timeframe_of(row.try_get(1)?)?), row.try_get::<_, i64>(2)?))
        })?;
        Ok(rows.into_iter().collect())
    }

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
        let sql = format!(
            "SELECT {CANDLE_COLUMNS} FROM candle_rows
             WHERE {OF_STREAM} AND timestamp >= $3 AND timestamp < $4
             ORDER BY timestamp {order} LIMIT $5"
        );
        let mut params = stream_params(symbol, timeframe);
        params.extend([
            Box::new(start) as _,
            Box::new(end) as _,
            Box::new(i64::try_from(limit).unwrap_or(i64::MAX)) as _,
        ]);
        let mut candles = self.query_map(sql, params, candle_from_row)?;
        if window == Window::Newest {
            candles.reverse();
        }
        Ok(candles)
    }

    fn closed_candles(&self, symbol: &str, timeframe: Timeframe) -> Result<Vec<Candle>, StoreError> {
        let sql =
            format!("SELECT {CANDLE_COLUMNS} FROM candle_rows WHERE {OF_STREAM} AND is_closed = 1 ORDER BY timestamp");
        self.query_map(sql, stream_params(symbol, timeframe), candle_from_row)
    }

    fn indicator_series(
        &self,
        symbol: &str,
        timeframe: Timeframe,
        limit: usize,
    ) -> Result<Vec<IndicatorPoint>, StoreError> {
        let sql = format!("SELECT * FROM indicator_rows WHERE {OF_STREAM} ORDER BY timestamp DESC LIMIT $3");
        let mut params = stream_params(symbol, timeframe);
        params.push(Box::new(i64::try_from(limit).unwrap_or(i64::MAX)));
        let mut series = self.query_indicator_rows(sql, params, |row| {
            let (timestamp, mut values) = outputs_of(row)?;
            values.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(IndicatorPoint { timestamp, values })
        })?;
        // Every row holds a value (the view's triggers remove a row left empty), but one emptied otherwise is no point.
        series.retain(|point| !point.values.is_empty());
        series.reverse();
        Ok(series)
    }

    fn revisions(&self, symbol: &str, timeframe: Timeframe) -> Result<u64, StoreError> {
        let sql = "SELECT COUNT(*) FROM candle_revisions WHERE symbol = $1 AND timeframe = $2";
        let count = self.query_map(sql.to_owned(), stream_params(symbol, timeframe), |row| Ok(row.try_get(0)?))?;
        Ok(count.first().copied().unwrap_or(0i64) as u64)
    }

    fn exchange_gaps(&self) -> Result<HashMap<(String, Timeframe), Vec<Gap>>, StoreError> {
        let sql = "SELECT symbol, timeframe, from_open, to_open FROM exchange_gaps
                   ORDER BY symbol, timeframe, from_open";
        let rows = self.query_map(sql.to_owned(), Vec::new(), |row| {
            let gap = Gap { from_open: row.try_get(2)?, to_open: row.try_get(3)? };
            Ok((row.try_get::<_, String>(0)?, timeframe_of(row.try_get(1)?)?, gap))
        })?;
        let mut gaps: HashMap<(String, Timeframe), Vec<Gap>> = HashMap::new();
        for (symbol, timeframe, gap) in rows {
            gaps.entry((symbol, timeframe)).or_default().push(gap);
        }
        Ok(gaps)
    }

    fn first_closed(&self, key: &StreamKey) -> Result<Option<i64>, StoreError> {
        self.closed_bound(key, "MIN")
    }

    fn last_closed_of(&self, key: &StreamKey) -> Result<Option<i64>, StoreError> {
        self.closed_bound(key, "MAX")
    }

    fn stored_opens(&self, key: &StreamKey, from: i64, to: i64) -> Result<(Vec<i64>, Vec<i64>), StoreError> {
        let sql = format!(
            "SELECT timestamp, is_closed FROM candle_rows
             WHERE {OF_STREAM} AND timestamp >= $3 AND timestamp <= $4 ORDER BY timestamp"
        );
        let mut params = stream_params(&key.symbol, key.timeframe);
        params.extend([Box::new(from) as _, Box::new(to) as _]);
        let rows =
            self.query_map(sql, params, |row| Ok((row.try_get::<_, i64>(0)?, row.try_get::<_, i16>(1)? == 1)))?;
        let (closed, in_progress): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(_, is_closed)| *is_closed);
        Ok((
            closed.into_iter().map(|(open, _)| open).collect(),
            in_progress.into_iter().map(|(open, _)| open).collect(),
        ))
    }

    fn stored_ranges(&self) -> Result<StoredRanges, StoreError> {
        let sql = "SELECT s.symbol, s.timeframe, r.first, r.last, r.present FROM streams s JOIN (
                       SELECT stream_id, MIN(timestamp) AS first, MAX(timestamp) AS last, COUNT(*) AS present
                       FROM candle_rows WHERE is_closed = 1 GROUP BY stream_id) AS r ON r.stream_id = s.id";
        let rows = self.query_map(sql.to_owned(), Vec::new(), |row| {
            let range = StoredRange {
                first_closed: row.try_get(2)?,
                last_closed: row.try_get(3)?,
                present: row.try_get::<_, i64>(4)? as u64,
                revisions: 0,
            };
            Ok(((row.try_get(0)?, row.try_get(1)?), range))
        })?;
        let mut ranges: StoredRanges = rows.into_iter().collect();
        let sql = "SELECT symbol, timeframe, COUNT(*) FROM candle_revisions GROUP BY symbol, timeframe";
        let revisions = self.query_map(sql.to_owned(), Vec::new(), |row| {
            Ok(((row.try_get(0)?, row.try_get(1)?), row.try_get::<_, i64>(2)? as u64))
        })?;
        for (key, count) in revisions {
            ranges.entry(key).or_default().revisions = count;
        }
        Ok(ranges)
    }

    fn has_symbol(&self, symbol: &str) -> Result<bool, StoreError> {
        let sql =
            "SELECT EXISTS (SELECT 1 FROM candle_rows WHERE stream_id IN (SELECT id FROM streams WHERE symbol = $1))";
        let exists = self.query_map(sql.to_owned(), vec![Box::new(symbol.to_owned())], |row| Ok(row.try_get(0)?))?;
        Ok(exists.first().copied().unwrap_or(false))
    }

    fn indicator_names(&self, key: &StreamKey, from: i64, to: i64) -> Result<Vec<String>, StoreError> {
        let mut params = stream_params(&key.symbol, key.timeframe);
        params.extend([Box::new(from) as _, Box::new(to) as _]);
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let columns: Vec<String> = client
                .query(INDICATOR_COLUMNS, &[])
                .await?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()?;
            if columns.is_empty() {
                return Ok(Vec::new());
            }
            let present: Vec<String> =
                columns.iter().map(|column| format!("bool_or({} IS NOT NULL)", quote_identifier(column))).collect();
            let sql = format!(
                "SELECT {} FROM indicator_rows WHERE {OF_STREAM} AND timestamp >= $3 AND timestamp < $4",
                present.join(", ")
            );
            let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
            let row = client.query_one(sql.as_str(), &params).await?;
            let mut names = Vec::new();
            for (index, column) in columns.into_iter().enumerate() {
                if row.try_get::<_, Option<bool>>(index)? == Some(true) {
                    names.push(column);
                }
            }
            names.sort();
            Ok(names)
        })
    }

    /// Streams the rows (millions on an export) in chunks through a bounded channel: memory stays small, and
    /// `each` runs on the calling thread.
    fn for_each_indicator_value(
        &self,
        key: &StreamKey,
        from: i64,
        to: i64,
        each: &mut dyn FnMut(i64, &str, f64),
    ) -> Result<(), StoreError> {
        const CHUNK: usize = 4096;
        // The output names (the query's columns), and values as (open time, index into the names, value).
        type Chunk = (Arc<[String]>, Vec<(i64, usize, f64)>);
        let (chunks, received) = std::sync::mpsc::sync_channel::<Result<Chunk, StoreError>>(4);
        let (symbol, timeframe) = (key.symbol.clone(), key.timeframe.as_str());
        let pool = self.backend.shared.pool.clone();
        self.backend.shared.handle.spawn(async move {
            // The reader may be slower than the server: it is waited for without holding up the runtime's other
            // tasks.
            let send = |item| tokio::task::block_in_place(|| chunks.send(item)).is_ok();
            let result: Result<(), StoreError> = async {
                use futures_util::TryStreamExt;
                let client = pool.get().await?;
                let sql =
                    format!("SELECT * FROM indicator_rows WHERE {OF_STREAM} AND timestamp >= $3 AND timestamp <= $4");
                // Not cached: the columns change as outputs are added.
                let statement = client.prepare(&sql).await?;
                let names: Arc<[String]> = statement.columns().iter().map(|column| column.name().to_owned()).collect();
                let timestamp = names.iter().position(|name| name == "timestamp").unwrap_or(1);
                let outputs: Vec<usize> =
                    (0..names.len()).filter(|&i| i != timestamp && names[i] != "stream_id").collect();
                let params: [&(dyn ToSql + Sync); 4] = [&symbol, &timeframe, &from, &to];
                let mut rows = std::pin::pin!(client.query_raw(&statement, params).await?);
                let mut chunk = Vec::with_capacity(CHUNK);
                while let Some(row) = rows.try_next().await? {
                    let open_time: i64 = row.try_get(timestamp)?;
                    for &output in &outputs {
                        if let Some(value) = row.try_get::<_, Option<f64>>(output)? {
                            chunk.push((open_time, output, value));
                        }
                    }
                    if chunk.len() >= CHUNK
                        && !send(Ok((names.clone(), std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))))
                    {
                        return Ok(());
                    }
                }
                if !chunk.is_empty() {
                    send(Ok((names, chunk)));
                }
                Ok(())
            }
            .await;
            if let Err(error) = result {
                send(Err(error));
            }
        });
        // Ends when the task drops its sender.
        for chunk in received {
            let (names, values) = chunk?;
            for (open_time, output, value) in values {
                each(open_time, &names[output], value);
            }
        }
        Ok(())
    }

    /// Asks the server (`SELECT 1` on a pooled connection) at most once per [`CHECK_INTERVAL`]; in between, answers
    /// what the last check found.
    fn check(&self) -> Result<(), StoreError> {
        let shared = &self.backend.shared;
        if let Some((at, found)) = &*shared.last_check.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < CHECK_INTERVAL
        {
            return found.clone().map_err(StoreError::Unreachable);
        }
        let result = self.run(|pool| async move {
            let client = pool.get().await?;
            client.simple_query("SELECT 1").await?;
            Ok(())
        });
        let found = result.as_ref().map(|_| ()).map_err(|error| crate::error_chain(error));
        *shared.last_check.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), found));
        result
    }

    /// Everything is committed by the time a write returns: nothing to do. The pool stays for other handles.
    fn close(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The PostgreSQL-only tests: settings, errors, migrations, the runtime bridge. The rules and reads are in the
    //! conformance suite.

    use super::*;
    use crate::store::conformance::candle;
    use crate::store::test_support::TestSchema;

    fn streams() -> Vec<StreamKey> {
        vec![StreamKey::new("BTCUSDT", Timeframe::M1)]
    }

    #[test]
    fn the_settings_never_show_the_password() {
        let mut config = PostgresConfig::new("postgres://candled:s3cret@db.internal:6543/candles");
        config.password = Some("hunter2".to_owned());
        let shown = format!("{config:?} {config:#?} {}", config.describe());
        assert!(!shown.contains("s3cret") && !shown.contains("hunter2"), "{shown}");
        assert_eq!(config.describe(), "host=db.internal port=6543 dbname=candles user=candled schema=public");
        let key_value = PostgresConfig::new("host=127.0.0.1 dbname=test password=s3cret");
        assert!(!format!("{key_value:?}").contains("s3cret"));
        let broken = PostgresConfig::new("postgres://u:s3cret@[bad");
        assert!(!format!("{broken:?} {}", PostgresBackend::connect(&broken).unwrap_err()).contains("s3cret"));
    }

    #[test]
    fn a_schema_must_be_a_plain_identifier_and_the_pool_not_empty() {
        for schema in ["", "Candles", "candles; DROP TABLE x", "1st", &"a".repeat(64)] {
            let config =
                PostgresConfig { schema: schema.to_owned(), ..PostgresConfig::new("postgres://u@127.0.0.1/t") };
            let error = PostgresBackend::connect(&config).unwrap_err();
            assert!(matches!(error, StoreError::PostgresConfig(_)) && !error.is_transient(), "{schema:?}: {error}");
        }
        let config = PostgresConfig { pool_size: 0, ..PostgresConfig::new("postgres://u@127.0.0.1/t") };
        assert!(matches!(PostgresBackend::connect(&config), Err(StoreError::PostgresConfig(_))));
    }

    /// Nothing listens on loopback port 1: what a restarting server looks like.
    #[test]
    fn an_unreachable_server_is_a_transient_error() {
        let error = PostgresBackend::connect(&PostgresConfig::new("postgres://postgres@127.0.0.1:1/test")).unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert!(error.to_string().contains("refused"), "{error}");
    }

    #[test]
    fn an_sql_error_is_not_transient() {
        let Some(schema) = TestSchema::create("store::postgres::tests::an_sql_error_is_not_transient") else { return };
        let backend = PostgresBackend::connect(schema.config()).unwrap();
        let error = backend
            .run(|pool| async move {
                pool.get().await?.execute("INSERT INTO candles (symbol) VALUES ('BTCUSDT')", &[]).await?;
                Ok(())
            })
            .unwrap_err();
        assert!(!error.is_transient(), "{error}");
        assert!(error.to_string().contains("null value"), "{error}");
    }

    fn migrations(backend: &PostgresBackend) -> (i64, Option<i32>) {
        backend
            .run(|pool| async move {
                let row =
                    pool.get().await?.query_one("SELECT COUNT(*), MAX(version) FROM schema_migrations", &[]).await?;
                Ok((row.get(0), row.get(1)))
            })
            .unwrap()
    }

    #[test]
    fn migrations_run_once_even_when_instances_start_together() {
        let test = "store::postgres::tests::migrations_run_once_even_when_instances_start_together";
        let Some(schema) = TestSchema::create(test) else { return };
        let starts: Vec<_> = (0..3)
            .map(|_| {
                let config = schema.config().clone();
                std::thread::spawn(move || PostgresBackend::connect(&config).map(|_| ()))
            })
            .collect();
        for start in starts {
            start.join().unwrap().unwrap();
        }
        let backend = PostgresBackend::connect(schema.config()).unwrap();
        let latest = MIGRATIONS.last().map(|(version, _)| *version);
        assert_eq!(migrations(&backend), (MIGRATIONS.len() as i64, latest));
    }

    /// The actix arbiters run a current-thread tokio runtime, where blocking on another runtime panics: the store
    /// works there, and the last handle may be dropped there.
    #[test]
    fn the_store_works_inside_an_actix_system() {
        let Some(schema) = TestSchema::create("store::postgres::tests::the_store_works_inside_an_actix_system") else {
            return;
        };
        let config = schema.config().clone();
        actix::System::new().block_on(async move {
            // A failed connect lets go of its runtime there too.
            let unreachable = PostgresConfig::new("postgres://postgres@127.0.0.1:1/test");
            assert!(PostgresBackend::connect(&unreachable).unwrap_err().is_transient());
            let backend = PostgresBackend::connect(&config).unwrap();
            let mut store = backend.store();
            assert_eq!(store.write_candles(&streams(), &[(StreamId(0), candle(0, 11.0, true))]).unwrap(), 1);
            store.check().unwrap();
            // On an arbiter of its own, too.
            let (done, result) = std::sync::mpsc::channel();
            let arbiter = actix::Arbiter::new();
            let mut on_arbiter = backend.store();
            arbiter.spawn(async move {
                let written = on_arbiter.write_candles(&streams(), &[(StreamId(0), candle(60_000, 12.0, true))]);
                done.send(written.map(|_| on_arbiter.closed_candles("BTCUSDT", Timeframe::M1))).unwrap();
            });
            let closed = result.recv_timeout(Duration::from_secs(30)).unwrap().unwrap().unwrap();
            assert_eq!(closed, [candle(0, 11.0, true), candle(60_000, 12.0, true)]);
            arbiter.stop();
            drop((store, backend));
        });
    }

    /// `psql` users update by hand with their own search path: the trigger still records the revision.
    #[test]
    fn a_closed_candle_updated_by_hand_is_a_recorded_revision() {
        let test = "store::postgres::tests::a_closed_candle_updated_by_hand_is_a_recorded_revision";
        let Some(schema) = TestSchema::create(test) else { return };
        let mut store = PostgresBackend::connect(schema.config()).unwrap().store();
        store.write_candles(&streams(), &[(StreamId(0), candle(0, 11.0, true))]).unwrap();
        let before = crate::tasks::unix_ms();
        schema.execute(&format!("UPDATE {}.candles SET close = 12 WHERE symbol = 'BTCUSDT'", schema.name())).unwrap();
        let history = store.revision_history("BTCUSDT", Timeframe::M1).unwrap();
        assert_eq!(history.len(), 1);
        assert!((before..=crate::tasks::unix_ms()).contains(&history[0].revised_at), "{history:?}");
        assert_eq!(history[0].old.close, 11.0);
        assert_eq!(store.closed_candles("BTCUSDT", Timeframe::M1).unwrap()[0].close, 12.0);
    }

    /// An export reads millions of values: they come through in chunks, every one of them.
    #[test]
    fn every_indicator_value_comes_through_the_chunks() {
        let test = "store::postgres::tests::every_indicator_value_comes_through_the_chunks";
        let Some(schema) = TestSchema::create(test) else { return };
        let mut store = PostgresBackend::connect(schema.config()).unwrap().store();
        let names: Vec<String> = (0..10).map(|i| format!("out_{i}")).collect();
        let values: Vec<_> = (0..10_000)
            .map(|i| IndicatorRow {
                stream: StreamId(0),
                open_time: (i / 10) * 60_000,
                output: (i % 10) as u16,
                value: i as f64,
            })
            .collect();
        // One wide row per candle.
        assert_eq!(store.write_batch(&streams(), &names, &[], &values).unwrap(), 1_000);
        let (mut count, mut sum) = (0, 0.0);
        store
            .for_each_indicator_value(&streams()[0], 0, i64::MAX, &mut |_, _, value| {
                count += 1;
                sum += value;
            })
            .unwrap();
        assert_eq!((count, sum), (10_000, (0..10_000).map(f64::from).sum()));
    }

    /// The v1 candle upsert, as the release before schema v2 wrote: for writing real v1 schemas to migrate.
    const V1_UPSERT_CANDLES: &str = "
INSERT INTO candles AS c (symbol, timeframe, timestamp, open, high, low, close, volume, close_time, quote_volume,
                          trades, taker_buy_base, taker_buy_quote, is_closed)
SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::FLOAT8[], $5::FLOAT8[], $6::FLOAT8[], $7::FLOAT8[],
                     $8::FLOAT8[], $9::BIGINT[], $10::FLOAT8[], $11::BIGINT[], $12::FLOAT8[], $13::FLOAT8[],
                     $14::SMALLINT[])
ORDER BY 1, 2, 3
ON CONFLICT (symbol, timeframe, timestamp) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, close_time = EXCLUDED.close_time, quote_volume = EXCLUDED.quote_volume,
    trades = EXCLUDED.trades, taker_buy_base = EXCLUDED.taker_buy_base, taker_buy_quote = EXCLUDED.taker_buy_quote,
    is_closed = EXCLUDED.is_closed
WHERE c.is_closed = 0
   OR (EXCLUDED.is_closed = 1
       AND (c.open, c.high, c.low, c.close, c.volume, c.close_time, c.quote_volume, c.trades, c.taker_buy_base,
            c.taker_buy_quote)
           IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume,
                             EXCLUDED.close_time, EXCLUDED.quote_volume, EXCLUDED.trades, EXCLUDED.taker_buy_base,
                             EXCLUDED.taker_buy_quote))
";

    /// The v1 indicator upsert, as the release before schema v2 wrote.
    const V1_UPSERT_INDICATORS: &str = "
INSERT INTO indicators AS i (symbol, timeframe, timestamp, name, value)
SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::FLOAT8[])
ORDER BY 1, 2, 3, 4
ON CONFLICT (symbol, timeframe, timestamp, name) DO UPDATE SET value = EXCLUDED.value
WHERE i.value IS DISTINCT FROM EXCLUDED.value
";

    /// Writes candles then indicator values into a v1 schema with the v1 upserts, one statement per row (so that a
    /// key may repeat: a revision).
    fn write_v1(
        backend: &PostgresBackend,
        candles: Vec<(StreamKey, Candle)>,
        values: Vec<(StreamKey, i64, String, f64)>,
    ) {
        backend
            .run(move |pool| async move {
                let client = pool.get().await?;
                for (key, c) in &candles {
                    let params: [&(dyn ToSql + Sync); 14] = [
                        &vec![key.symbol.as_str()],
                        &vec![key.timeframe.as_str()],
                        &vec![c.open_time],
                        &vec![c.open],
                        &vec![c.high],
                        &vec![c.low],
                        &vec![c.close],
                        &vec![c.volume],
                        &vec![c.close_time],
                        &vec![c.quote_volume],
                        &vec![c.trades as i64],
                        &vec![c.taker_buy_base],
                        &vec![c.taker_buy_quote],
                        &vec![i16::from(c.is_closed)],
                    ];
                    client.execute(V1_UPSERT_CANDLES, &params).await?;
                }
                let symbols: Vec<&str> = values.iter().map(|v| v.0.symbol.as_str()).collect();
                let timeframes: Vec<&str> = values.iter().map(|v| v.0.timeframe.as_str()).collect();
                let opens: Vec<i64> = values.iter().map(|v| v.1).collect();
                let names: Vec<&str> = values.iter().map(|v| v.2.as_str()).collect();
                let numbers: Vec<f64> = values.iter().map(|v| v.3).collect();
                client.execute(V1_UPSERT_INDICATORS, &[&symbols, &timeframes, &opens, &names, &numbers]).await?;
                client
                    .execute(
                        UPSERT_GAPS,
                        &[&"BTCUSDT", &"1m", &vec![600_000_000i64, 0], &vec![600_060_000i64, 120_000]],
                    )
                    .await?;
                Ok(())
            })
            .unwrap();
    }

    /// Runs `sql` through the real `psql` on the schema (`PGOPTIONS=-csearch_path=<schema>`), as the README says:
    /// its rows, unaligned. Panics with psql's message if the query fails.
    fn psql(schema: &TestSchema, sql: &str) -> Vec<String> {
        let output = std::process::Command::new("psql")
            .args(["-d", schema.url(), "-X", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .env("PGOPTIONS", format!("-csearch_path={}", schema.name()))
            .output()
            .expect("run psql (the PostgreSQL client)");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success() && stderr.is_empty(), "psql -c {sql:?} failed: {stderr}");
        String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
    }

    /// A query's rows as psql shows them; sorted when the query leaves their order to the server.
    fn psql_rows(schema: &TestSchema, sql: &str) -> Vec<String> {
        let mut rows = psql(schema, sql);
        if !sql.contains("ORDER BY") {
            rows.sort();
        }
        rows
    }

    /// The `psql` queries of README "Scaling out" → PostgreSQL, as written there (without `psql candles -c`).
    fn readme_psql_queries() -> Vec<String> {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("the README");
        let section = readme.split("### PostgreSQL").nth(1).expect("README has a PostgreSQL section");
        let section = section.split("\n### ").next().unwrap_or(section);
        let queries: Vec<String> = section
            .lines()
            .filter_map(|line| line.strip_prefix("psql candles -c \"")?.strip_suffix('"').map(str::to_owned))
            .collect();
        assert!(queries.len() >= 6, "the README's psql queries: {queries:?}");
        queries
    }

    /// What a user sees through the v1 names, every row.
    const WHOLE_TABLES: [&str; 4] = [
        "SELECT * FROM candles ORDER BY symbol, timeframe, timestamp",
        "SELECT * FROM indicators ORDER BY symbol, timeframe, timestamp, name",
        "SELECT * FROM candle_revisions ORDER BY symbol, timeframe, timestamp, revised_at",
        "SELECT * FROM exchange_gaps ORDER BY symbol, timeframe, from_open",
    ];

    /// A database written by the v1 release (its DDL and upserts), then opened by three instances at once: migrated
    /// once, the v1 tables kept as the backup, every README query and every v1 row the same through the views, and
    /// the store reads and writes the migrated rows.
    #[test]
    fn a_v1_schema_is_migrated_in_place_with_a_backup_and_the_readme_queries_answer_the_same() {
        let test = "store::postgres::tests::a_v1_schema_is_migrated_in_place_with_a_backup_and_the_readme_queries_answer_the_same";
        let Some(schema) = TestSchema::create(test) else { return };
        let v1 = PostgresBackend::connect_migrated(schema.config(), &MIGRATIONS[..1]).unwrap();
        assert_eq!(migrations(&v1), (1, Some(1)));
        let (btc, eth) = (StreamKey::new("BTCUSDT", Timeframe::M1), StreamKey::new("ETHUSDT", Timeframe::M5));
        let mut candles: Vec<(StreamKey, Candle)> =
            (0..30).map(|i| (btc.clone(), candle(i * 60_000, 100.0 + i as f64 / 3.0, i < 29))).collect();
        candles.extend((0..6).map(|i| (eth.clone(), candle(i * 300_000, 7.0 / (i + 1) as f64, true))));
        // A revision: minute 3 closed again with another close.
        candles.push((btc.clone(), candle(3 * 60_000, 1.0 / 7.0, true)));
        // Warm-up: sma_5 from the 5th candle on, rsi_3 from the 4th, a Bollinger band from the 10th.
        let mut values = Vec::new();
        for i in 0..29i64 {
            let t = i * 60_000;
            if i >= 4 {
                values.push((btc.clone(), t, "sma_5".to_owned(), 100.0 + i as f64 / 7.0));
            }
            if i >= 3 {
                values.push((btc.clone(), t, "rsi_3".to_owned(), (i as f64).sqrt()));
            }
            if i >= 9 {
                values.push((btc.clone(), t, "bb_20_2_upper".to_owned(), 1e-20 * i as f64));
            }
        }
        values.extend((0..6).map(|i| (eth.clone(), i * 300_000, "sma_5".to_owned(), i as f64 * 0.1)));
        write_v1(&v1, candles, values);
        drop(v1);
        let queries = readme_psql_queries();
        let readme_before: Vec<Vec<String>> = queries.iter().map(|q| psql_rows(&schema, q)).collect();
        let tables_before: Vec<Vec<String>> = WHOLE_TABLES.iter().map(|q| psql(&schema, q)).collect();
        assert_eq!(tables_before[0].len(), 36);
        assert_eq!(tables_before[1].len(), 25 + 26 + 20 + 6);
        assert_eq!(tables_before[2].len(), 1);
        assert!(readme_before.iter().all(|rows| !rows.is_empty()), "{readme_before:?}");

        // Three instances start together on the v1 schema.
        let starts: Vec<_> = (0..3)
            .map(|_| {
                let config = schema.config().clone();
                std::thread::spawn(move || PostgresBackend::connect(&config))
            })
            .collect();
        let backends: Vec<PostgresBackend> = starts.into_iter().map(|start| start.join().unwrap().unwrap()).collect();
        assert_eq!(migrations(&backends[0]), (2, Some(2)));

        // The backup is the v1 data; the views show it unchanged; the README's queries answer the same.
        let backup = [
            "SELECT * FROM candles_v1_backup ORDER BY symbol, timeframe, timestamp",
            "SELECT * FROM indicators_v1_backup ORDER BY symbol, timeframe, timestamp, name",
        ];
        assert_eq!(psql(&schema, backup[0]), tables_before[0]);
        assert_eq!(psql(&schema, backup[1]), tables_before[1]);
        for (query, before) in WHOLE_TABLES.iter().zip(&tables_before) {
            assert_eq!(&psql(&schema, query), before, "{query}");
        }
        for (query, before) in queries.iter().zip(&readme_before) {
            assert_eq!(&psql_rows(&schema, query), before, "{query}");
        }
        // Two B-tree rows per candle with indicators: one in candle_rows, one in indicator_rows.
        assert_eq!(psql(&schema, "SELECT COUNT(*) FROM candle_rows"), ["36"]);
        assert_eq!(psql(&schema, "SELECT COUNT(*) FROM indicator_rows"), ["32"]);
        assert_eq!(
            psql(&schema, "SELECT id, symbol, timeframe FROM streams ORDER BY id"),
            ["1|BTCUSDT|1m", "2|ETHUSDT|5m"]
        );

        // The store reads the migrated rows and writes on: a new output becomes a column.
        let mut store = backends[1].store();
        let closed = store.closed_candles("BTCUSDT", Timeframe::M1).unwrap();
        assert_eq!(closed.len(), 29);
        assert_eq!(closed[3].close, 1.0 / 7.0);
        assert_eq!(store.revisions("BTCUSDT", Timeframe::M1).unwrap(), 1);
        let newest = store.indicator_series("BTCUSDT", Timeframe::M1, 1).unwrap();
        assert_eq!(newest[0].timestamp, 28 * 60_000);
        assert_eq!(
            newest[0].values,
            [
                ("bb_20_2_upper".to_owned(), 1e-20 * 28.0),
                ("rsi_3".to_owned(), 28f64.sqrt()),
                ("sma_5".to_owned(), 100.0 + 28.0 / 7.0)
            ]
        );
        let names = vec!["sma_5".to_owned(), "ema_9".to_owned()];
        let rows = [
            IndicatorRow { stream: StreamId(0), open_time: 29 * 60_000, output: 0, value: 1.5 },
            IndicatorRow { stream: StreamId(0), open_time: 29 * 60_000, output: 1, value: 2.5 },
        ];
        let closing = [(StreamId(0), candle(29 * 60_000, 130.0, true))];
        assert_eq!(store.write_batch(std::slice::from_ref(&btc), &names, &closing, &rows).unwrap(), 2);
        let last = psql(&schema, "SELECT name, value FROM indicators WHERE timestamp = 1740000 ORDER BY name");
        assert_eq!(last, ["ema_9|2.5", "sma_5|1.5"]);
        assert_eq!(store.indicator_names(&btc, 0, i64::MAX).unwrap(), ["bb_20_2_upper", "ema_9", "rsi_3", "sma_5"]);
        // Started again: nothing more to migrate, and the backup is left alone.
        let again = PostgresBackend::connect(schema.config()).unwrap();
        assert_eq!(migrations(&again), (2, Some(2)));
        assert_eq!(psql(&schema, backup[0]), tables_before[0]);
    }

    /// A fresh schema goes straight to v2 with nothing to back up.
    #[test]
    fn a_fresh_schema_keeps_no_backup_tables() {
        let Some(schema) = TestSchema::create("store::postgres::tests::a_fresh_schema_keeps_no_backup_tables") else {
            return;
        };
        let _backend = PostgresBackend::connect(schema.config()).unwrap();
        let sql = "SELECT table_name, table_type FROM information_schema.tables
                   WHERE table_schema = current_schema() ORDER BY table_name";
        let tables = psql(&schema, sql);
        assert_eq!(
            tables,
            [
                "candle_revisions|BASE TABLE",
                "candle_rows|BASE TABLE",
                "candles|VIEW",
                "exchange_gaps|BASE TABLE",
                "indicator_rows|BASE TABLE",
                "indicators|VIEW",
                "schema_migrations|BASE TABLE",
                "streams|BASE TABLE"
            ]
        );
        assert!(psql(&schema, "SELECT * FROM indicators").is_empty());
    }

    /// A closed candle with its outputs is two rows; an output missing from a later batch (warm-up, or a changed
    /// indicator set) keeps its stored value.
    #[test]
    fn a_candle_and_its_outputs_are_two_rows_and_absent_outputs_keep_their_values() {
        let test = "store::postgres::tests::a_candle_and_its_outputs_are_two_rows_and_absent_outputs_keep_their_values";
        let Some(schema) = TestSchema::create(test) else { return };
        let mut store = PostgresBackend::connect(schema.config()).unwrap().store();
        let names: Vec<String> = (0..11).map(|i| format!("out_{i}")).collect();
        let all: Vec<IndicatorRow> = (0..11)
            .map(|i| IndicatorRow { stream: StreamId(0), open_time: 0, output: i, value: f64::from(i) })
            .collect();
        let closed = [(StreamId(0), candle(0, 11.0, true))];
        assert_eq!(store.write_batch(&streams(), &names, &closed, &all).unwrap(), 2);
        assert_eq!(psql(&schema, "SELECT COUNT(*) FROM candle_rows"), ["1"]);
        assert_eq!(psql(&schema, "SELECT COUNT(*) FROM indicator_rows"), ["1"]);
        assert_eq!(psql(&schema, "SELECT COUNT(*) FROM indicators"), ["11"]);
        // The same again: nothing rewritten.
        assert_eq!(store.write_batch(&streams(), &names, &closed, &all).unwrap(), 0);
        // Another set of outputs (out_0 renamed away, new_0 added): only the named columns change.
        let other = vec!["new_0".to_owned(), "out_1".to_owned()];
        let rows = [
            IndicatorRow { stream: StreamId(0), open_time: 0, output: 0, value: 100.0 },
            IndicatorRow { stream: StreamId(0), open_time: 0, output: 1, value: 1.0 },
        ];
        assert_eq!(store.write_batch(&streams(), &other, &[], &rows).unwrap(), 1);
        let point = &store.indicator_series("BTCUSDT", Timeframe::M1, 1).unwrap()[0];
        assert_eq!(point.values.len(), 12);
        assert!(
            point.values.contains(&("out_0".to_owned(), 0.0)) && point.values.contains(&("new_0".to_owned(), 100.0))
        );
        // A name PostgreSQL cannot hold as a column is refused, nothing written.
        let long = vec!["x".repeat(64)];
        let one = [IndicatorRow { stream: StreamId(0), open_time: 60_000, output: 0, value: 1.0 }];
        let error = store.write_batch(&streams(), &long, &[], &one).unwrap_err();
        assert!(!error.is_transient(), "{error}");
        assert_eq!(psql(&schema, "SELECT COUNT(*) FROM indicator_rows"), ["1"]);
    }

    /// Hand edits through the views land on the physical tables: INSERT, UPDATE (a closed candle's is a revision),
    /// DELETE of candles; UPDATE and DELETE of one output.
    #[test]
    fn hand_edits_through_the_views_change_the_rows() {
        let test = "store::postgres::tests::hand_edits_through_the_views_change_the_rows";
        let Some(schema) = TestSchema::create(test) else { return };
        let mut store = PostgresBackend::connect(schema.config()).unwrap().store();
        let names = vec!["ema_26".to_owned(), "sma_20".to_owned()];
        let candles: Vec<_> = (0..3).map(|i| (StreamId(0), candle(i * 60_000, 10.0, true))).collect();
        let values: Vec<_> = (0..3)
            .flat_map(|i| {
                (0..2).map(move |output| IndicatorRow {
                    stream: StreamId(0),
                    open_time: i * 60_000,
                    output,
                    value: (i * 10 + i64::from(output)) as f64,
                })
            })
            .collect();
        store.write_batch(&streams(), &names, &candles, &values).unwrap();
        let s = schema.name();
        schema
            .execute(&format!(
                "UPDATE {s}.candles SET is_closed = 0 WHERE timestamp = 120000;
                 DELETE FROM {s}.candles WHERE symbol = 'BTCUSDT' AND timestamp = 60000;
                 INSERT INTO {s}.candles VALUES ('ETHUSDT', '5m', 0, 1, 2, 0.5, 1.5, 10, 299999, 15, 3, 5, 7.5, 1);
                 DELETE FROM {s}.indicators WHERE name = 'ema_26';
                 UPDATE {s}.indicators SET value = 99 WHERE timestamp = 0 AND name = 'sma_20';"
            ))
            .unwrap();
        assert_eq!(store.revisions("BTCUSDT", Timeframe::M1).unwrap(), 1);
        let btc = store.candles_window("BTCUSDT", Timeframe::M1, 0, i64::MAX, 10, Window::Oldest).unwrap();
        assert_eq!(btc, [candle(0, 10.0, true), candle(120_000, 10.0, false)]);
        assert_eq!(store.closed_candles("ETHUSDT", Timeframe::M5).unwrap().len(), 1);
        let series = store.indicator_series("BTCUSDT", Timeframe::M1, 10).unwrap();
        let values: Vec<(i64, Vec<(String, f64)>)> = series.into_iter().map(|p| (p.timestamp, p.values)).collect();
        assert_eq!(
            values,
            [
                (0, vec![("sma_20".to_owned(), 99.0)]),
                (60_000, vec![("sma_20".to_owned(), 11.0)]),
                (120_000, vec![("sma_20".to_owned(), 21.0)])
            ]
        );
        // An output removed everywhere from a row leaves no empty row behind.
        schema.execute(&format!("DELETE FROM {s}.indicators WHERE timestamp = 0")).unwrap();
        assert_eq!(psql(&schema, "SELECT timestamp FROM indicator_rows ORDER BY timestamp"), ["60000", "120000"]);
        assert_eq!(store.indicator_names(&streams()[0], 0, 60_000).unwrap(), Vec::<String>::new());
    }

    /// Instances that meet new outputs at the same moment each add the columns they lack, one at a time: every
    /// write succeeds and each column exists once.
    #[test]
    fn instances_adding_the_same_output_columns_at_once_all_succeed() {
        let test = "store::postgres::tests::instances_adding_the_same_output_columns_at_once_all_succeed";
        let Some(schema) = TestSchema::create(test) else { return };
        let backends: Vec<PostgresBackend> =
            (0..3).map(|_| PostgresBackend::connect(schema.config()).unwrap()).collect();
        let barrier = Arc::new(std::sync::Barrier::new(3));
        let writers: Vec<_> = backends
            .iter()
            .enumerate()
            .map(|(writer, backend)| {
                let (mut store, barrier) = (backend.store(), barrier.clone());
                std::thread::spawn(move || {
                    // Overlapping sets: a shared name and one of each writer's own.
                    let names = vec!["shared_out".to_owned(), format!("own_{writer}")];
                    let keys = vec![StreamKey::new(format!("SYM{writer}USDT"), Timeframe::M1), streams()[0].clone()];
                    let rows: Vec<IndicatorRow> = (0..2)
                        .flat_map(|stream| {
                            (0..2).map(move |output| IndicatorRow {
                                stream: StreamId(stream),
                                open_time: 0,
                                output,
                                value: writer as f64,
                            })
                        })
                        .collect();
                    barrier.wait();
                    store.write_batch(&keys, &names, &[], &rows)
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap().unwrap();
        }
        let columns = psql(&schema, INDICATOR_COLUMNS);
        let mut sorted = columns.clone();
        sorted.sort();
        assert_eq!(sorted, ["own_0", "own_1", "own_2", "shared_out"]);
        assert_eq!(psql(&schema, "SELECT COUNT(*) FROM streams"), ["4"]);
        assert_eq!(psql(&schema, "SELECT COUNT(DISTINCT name) FROM indicators"), ["4"]);
        assert_eq!(psql(&schema, "SELECT COUNT(*) FROM indicators WHERE symbol = 'BTCUSDT'"), ["4"]);
    }
}
