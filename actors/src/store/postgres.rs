//! The PostgreSQL store, for several instances sharing one database: the migrations run at start (TimescaleDB's
//! hypertable when the extension is there), the batched multi-row upserts under the same rules as SQLite, the reads,
//! and the bridge that lets blocking callers (actix arbiters included) run `tokio-postgres` on a runtime of its own.

use std::collections::HashMap;
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
const MIGRATIONS: &[(i32, &str)] = &[(1, MIGRATION_1)];

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

/// TimescaleDB's chunks of `candles`: a week of open times (ms).
const HYPERTABLE_CHUNK_MS: i64 = 7 * 24 * 3_600_000;

/// The upsert of one batch's candles, given as arrays (one per column), under SQLite's rules: an in-progress row is
/// replaced by any newer update; a closed row is final, updated (a revision, which the trigger records) only by a
/// closed row with other values. Rows go in key order, so that two writers lock shared rows in the same order.
///
/// Two writers upserting the same closed candle at once: the second waits for the first's row, then compares with
/// what the first committed; identical, it changes nothing and no revision is recorded.
const UPSERT_CANDLES: &str = "
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

/// The indicator upsert: a rebuild's new value overwrites; an unchanged value is not rewritten.
const UPSERT_INDICATORS: &str = "
INSERT INTO indicators AS i (symbol, timeframe, timestamp, name, value)
SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::FLOAT8[])
ORDER BY 1, 2, 3, 4
ON CONFLICT (symbol, timeframe, timestamp, name) DO UPDATE SET value = EXCLUDED.value
WHERE i.value IS DISTINCT FROM EXCLUDED.value
";

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
            }),
        };
        let schema = config.schema.clone();
        backend.run(move |pool| migrate(pool, schema))?;
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

/// Creates the schema if missing and applies the migrations it lacks, one instance at a time (an advisory lock
/// keyed by the schema's name), then makes `candles` a hypertable where TimescaleDB can be had.
async fn migrate(pool: Pool, schema: String) -> Result<(), StoreError> {
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
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| Some(*version) > applied) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT)",
            &[version],
        )
        .await?;
        log::info!("storage: PostgreSQL schema {schema} migrated to version {version}");
    }
    tx.commit().await?;
    make_hypertable(&**client, &schema).await;
    Ok(())
}

/// Makes `candles` a TimescaleDB hypertable on its open time, chunked by week, if the extension is installed or can
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
        "SELECT {namespace}.create_hypertable('{schema}.candles', 'timestamp', \
         chunk_time_interval => {HYPERTABLE_CHUNK_MS}::BIGINT, if_not_exists => TRUE, migrate_data => TRUE)"
    );
    match client.batch_execute(&sql).await {
        Ok(()) => log::info!("storage: {schema}.candles is a TimescaleDB hypertable"),
        Err(error) => log::warn!("storage: cannot make {schema}.candles a TimescaleDB hypertable: {error}"),
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
    symbol: Vec<String>,
    timeframe: Vec<&'static str>,
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
    fn push(&mut self, key: &StreamKey, c: &Candle) {
        self.symbol.push(key.symbol.clone());
        self.timeframe.push(key.timeframe.as_str());
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

    fn params(&self) -> [&(dyn ToSql + Sync); 14] {
        [
            &self.symbol,
            &self.timeframe,
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

/// A batch's indicator values as one array per column, as [`UPSERT_INDICATORS`] takes them.
#[derive(Default)]
struct IndicatorColumns {
    symbol: Vec<String>,
    timeframe: Vec<&'static str>,
    open_time: Vec<i64>,
    name: Vec<String>,
    value: Vec<f64>,
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

    /// `MIN` or `MAX` of a stream's closed open times.
    fn closed_bound(&self, key: &StreamKey, aggregate: &str) -> Result<Option<i64>, StoreError> {
        let sql = format!(
            "SELECT {aggregate}(timestamp) FROM candles WHERE symbol = $1 AND timeframe = $2 AND is_closed = 1"
        );
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

/// Upserts the rounds of candles, then of indicator values, in one transaction. Returns the rows changed.
async fn upsert_batch(
    pool: &Pool,
    candles: &[CandleColumns],
    indicators: &[IndicatorColumns],
) -> Result<usize, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut changed = 0;
    if !candles.is_empty() {
        let upsert = tx.prepare_cached(UPSERT_CANDLES).await?;
        for round in candles {
            changed += tx.execute(&upsert, &round.params()).await?;
        }
    }
    if !indicators.is_empty() {
        let upsert = tx.prepare_cached(UPSERT_INDICATORS).await?;
        for round in indicators {
            let params: [&(dyn ToSql + Sync); 5] =
                [&round.symbol, &round.timeframe, &round.open_time, &round.name, &round.value];
            changed += tx.execute(&upsert, &params).await?;
        }
    }
    tx.commit().await?;
    Ok(changed as usize)
}

impl Store for PostgresStore {
    /// Upserts a batch in one transaction, one multi-row statement per round (one round unless a key repeats in the
    /// batch): the candles, then the indicator values. A deadlock or serialization failure against another writer
    /// is tried again. Returns the rows changed.
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
        let key = |stream: StreamId| streams.get(stream.0 as usize).ok_or(StoreError::UnknownStream(stream));
        let mut candle_rounds = Vec::new();
        for round in rounds(candles.iter().map(|(stream, c)| ((*stream, c.open_time), (*stream, c)))) {
            let mut columns = CandleColumns::default();
            for (stream, candle) in round {
                columns.push(key(stream)?, candle);
            }
            candle_rounds.push(columns);
        }
        let mut indicator_rounds = Vec::new();
        for round in rounds(indicators.iter().map(|row| ((row.stream, row.open_time, row.output), row))) {
            let mut columns = IndicatorColumns::default();
            for row in round {
                let key = key(row.stream)?;
                let name = names.get(usize::from(row.output)).ok_or(StoreError::UnknownOutput(row.output))?;
                columns.symbol.push(key.symbol.clone());
                columns.timeframe.push(key.timeframe.as_str());
                columns.open_time.push(row.open_time);
                columns.name.push(name.clone());
                columns.value.push(row.value);
            }
            indicator_rounds.push(columns);
        }
        self.run(move |pool| async move {
            let mut attempt = 1;
            loop {
                match upsert_batch(&pool, &candle_rounds, &indicator_rounds).await {
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
        let sql =
            "SELECT symbol, timeframe, MAX(timestamp) FROM candles WHERE is_closed = 1 GROUP BY symbol, timeframe";
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
            "SELECT {CANDLE_COLUMNS} FROM candles
             WHERE symbol = $1 AND timeframe = $2 AND timestamp >= $3 AND timestamp < $4
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
        let sql = format!(
            "SELECT {CANDLE_COLUMNS} FROM candles
             WHERE symbol = $1 AND timeframe = $2 AND is_closed = 1 ORDER BY timestamp"
        );
        self.query_map(sql, stream_params(symbol, timeframe), candle_from_row)
    }

    fn indicator_series(
        &self,
        symbol: &str,
        timeframe: Timeframe,
        limit: usize,
    ) -> Result<Vec<IndicatorPoint>, StoreError> {
        let sql = "SELECT timestamp, name, value FROM indicators
                   WHERE symbol = $1 AND timeframe = $2 AND timestamp >= (
                       SELECT MIN(timestamp) FROM (
                           SELECT DISTINCT timestamp FROM indicators WHERE symbol = $1 AND timeframe = $2
                           ORDER BY timestamp DESC LIMIT $3) AS newest)
                   ORDER BY timestamp, name";
        let mut params = stream_params(symbol, timeframe);
        params.push(Box::new(i64::try_from(limit).unwrap_or(i64::MAX)));
        let rows = self.query_map(sql.to_owned(), params, |row| {
            Ok((row.try_get::<_, i64>(0)?, row.try_get::<_, String>(1)?, row.try_get::<_, f64>(2)?))
        })?;
        let mut series: Vec<IndicatorPoint> = Vec::new();
        for (timestamp, name, value) in rows {
            match series.last_mut() {
                Some(point) if point.timestamp == timestamp => point.values.push((name, value)),
                _ => series.push(IndicatorPoint { timestamp, values: vec![(name, value)] }),
            }
        }
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
        let sql = "SELECT timestamp, is_closed FROM candles
                   WHERE symbol = $1 AND timeframe = $2 AND timestamp >= $3 AND timestamp <= $4 ORDER BY timestamp";
        let mut params = stream_params(&key.symbol, key.timeframe);
        params.extend([Box::new(from) as _, Box::new(to) as _]);
        let rows = self
            .query_map(sql.to_owned(), params, |row| Ok((row.try_get::<_, i64>(0)?, row.try_get::<_, i16>(1)? == 1)))?;
        let (closed, in_progress): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(_, is_closed)| *is_closed);
        Ok((
            closed.into_iter().map(|(open, _)| open).collect(),
            in_progress.into_iter().map(|(open, _)| open).collect(),
        ))
    }

    fn stored_ranges(&self) -> Result<StoredRanges, StoreError> {
        let sql = "SELECT symbol, timeframe, MIN(timestamp), MAX(timestamp), COUNT(*) FROM candles WHERE is_closed = 1
                   GROUP BY symbol, timeframe";
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
        let sql = "SELECT EXISTS (SELECT 1 FROM candles WHERE symbol = $1)";
        let exists = self.query_map(sql.to_owned(), vec![Box::new(symbol.to_owned())], |row| Ok(row.try_get(0)?))?;
        Ok(exists.first().copied().unwrap_or(false))
    }

    fn indicator_names(&self, key: &StreamKey, from: i64, to: i64) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT DISTINCT name FROM indicators
                   WHERE symbol = $1 AND timeframe = $2 AND timestamp >= $3 AND timestamp < $4 ORDER BY name";
        let mut params = stream_params(&key.symbol, key.timeframe);
        params.extend([Box::new(from) as _, Box::new(to) as _]);
        self.query_map(sql.to_owned(), params, |row| Ok(row.try_get(0)?))
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
        type Chunk = Vec<(i64, String, f64)>;
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
                let sql = "SELECT timestamp, name, value FROM indicators
                           WHERE symbol = $1 AND timeframe = $2 AND timestamp >= $3 AND timestamp <= $4";
                let statement = client.prepare_cached(sql).await?;
                let params: [&(dyn ToSql + Sync); 4] = [&symbol, &timeframe, &from, &to];
                let mut rows = std::pin::pin!(client.query_raw(&statement, params).await?);
                let mut chunk = Vec::with_capacity(CHUNK);
                while let Some(row) = rows.try_next().await? {
                    chunk.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
                    if chunk.len() == CHUNK && !send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))) {
                        return Ok(());
                    }
                }
                if !chunk.is_empty() {
                    send(Ok(chunk));
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
            for (open_time, name, value) in chunk? {
                each(open_time, &name, value);
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
        assert_eq!(store.write_batch(&streams(), &names, &[], &values).unwrap(), 10_000);
        let (mut count, mut sum) = (0, 0.0);
        store
            .for_each_indicator_value(&streams()[0], 0, i64::MAX, &mut |_, _, value| {
                count += 1;
                sum += value;
            })
            .unwrap();
        assert_eq!((count, sum), (10_000, (0..10_000).map(f64::from).sum()));
    }
}
