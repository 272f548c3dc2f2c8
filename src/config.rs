//! `config.toml`: the typed configuration, validated by parsing into domain types. Every error names the key and
//! the problem.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use candled_actors::actors::supervisor::{SupervisionSettings, TaskPolicy};
use candled_actors::domain::{BackoffPolicy, Cluster, ClusterError, StreamKey, Timeframe};
use candled_actors::indicators::IndicatorConfig;
use candled_actors::store::backend::redacted_url;
use candled_actors::store::{PostgresBackend, PostgresConfig, StoreBackend, StoreError};
use candled_actors::tasks::{Priority, RestartBudget, TaskKind};
use serde::Deserialize;

use crate::admin_token::{ADMIN_TOKEN_ENV, AdminToken, token_in_force};

/// The most closed candles per stream the start-up history may ask for.
pub const MAX_HISTORY: i64 = 100_000;
/// The largest config file read: far above any real one, and a bound on what `--config /dev/zero` can cost.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Binance carries at most 1024 streams on one connection.
pub const MAX_STREAMS_PER_CONNECTION: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is over the {} MiB limit for a config file: is it the right file?", MAX_CONFIG_BYTES >> 20)]
    TooLarge { path: String },
    #[error("config file {path} is not valid: {}", without_token_values(&source.to_string()))]
    Parse { path: String, source: toml::de::Error },
    #[error("config file {path}: `{key}`: {problem}")]
    Invalid { path: String, key: String, problem: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    exchange: RawExchange,
    market_data: RawMarketData,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    supervisor: RawSupervisor,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    nats: RawNats,
    #[serde(default)]
    cluster: RawCluster,
    /// A missing section (or key) takes the default indicator set.
    #[serde(default)]
    indicators: IndicatorConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExchange {
    ws_url: String,
    rest_url: String,
    /// Extra CA certificates (PEM) to trust besides the Mozilla roots.
    ca_file: Option<PathBuf>,
    #[serde(default = "default_streams_per_connection")]
    max_streams_per_connection: usize,
    #[serde(default = "default_stall_timeout_secs")]
    stall_timeout_secs: u64,
    #[serde(default = "default_connect_timeout_secs")]
    connect_timeout_secs: u64,
    #[serde(default = "default_max_message_bytes")]
    max_message_bytes: usize,
    #[serde(default = "default_backfill_concurrency")]
    backfill_concurrency: usize,
    #[serde(default = "default_close_grace_ms")]
    close_grace_ms: u64,
    #[serde(default = "default_stream_stale_secs")]
    stream_stale_secs: u64,
    #[serde(default = "default_silent_replace_secs")]
    silent_replace_secs: u64,
    #[serde(default = "default_rotate_after_secs")]
    rotate_after_secs: u64,
    #[serde(default = "default_rotate_stagger_secs")]
    rotate_stagger_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMarketData {
    symbols: Vec<String>,
    timeframes: Vec<String>,
    #[serde(default = "default_history")]
    history: i64,
}

/// `[storage]`. The backend's own keys are optional here so that a key set for the other backend is refused by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorage {
    backend: String,
    /// SQLite: the database file (default `data/tradingbot.db`).
    path: Option<PathBuf>,
    /// PostgreSQL: `postgres://user@host:port/db`.
    url: Option<String>,
    password_env: Option<String>,
    schema: Option<String>,
    pool_size: Option<usize>,
    batch_size: usize,
    flush_interval_ms: u64,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            backend: "sqlite".into(),
            path: None,
            url: None,
            password_env: None,
            schema: None,
            pool_size: None,
            // A burst (every stream closing at midnight) commits in a few large transactions: a commit's cost is
            // mostly the pages it touches, and a stream's closed candle, its next candle and its indicator row
            // share theirs. Between bursts the flush interval commits first.
            batch_size: 20_000,
            flush_interval_ms: 50,
        }
    }
}

/// The SQLite database file when `[storage] path` is not set.
pub const DEFAULT_STORAGE_PATH: &str = "data/tradingbot.db";
/// The environment variable the PostgreSQL password is read from when `[storage] password_env` is not set.
pub const DEFAULT_PASSWORD_ENV: &str = "CANDLED_POSTGRES_PASSWORD";
/// PostgreSQL connections in the pool when `[storage] pool_size` is not set.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// `[storage]`: the store candled keeps its candles in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// `backend = "sqlite"` (the default): one file.
    Sqlite { path: PathBuf },
    /// `backend = "postgres"`: a PostgreSQL database.
    Postgres(PostgresSettings),
}

/// `[storage] backend = "postgres"`: everything the PostgreSQL store is opened with (its `PostgresConfig`). No
/// `Debug` output, log line or config view shows the password, neither `password` nor one inside `url`.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// `postgres://user@host:port/db`; a password in it is allowed.
    pub url: String,
    /// The environment variable named by `password_env`, read when the config is loaded, if set and not empty.
    pub password: Option<String>,
    /// Where the password is read from.
    pub password_env: String,
    /// The schema candled's tables live in.
    pub schema: String,
    /// The most connections open at once.
    pub pool_size: usize,
}

impl fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &redacted_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("password_env", &self.password_env)
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// The configured store cannot be opened (a PostgreSQL that does not answer, or refuses the migrations).
#[derive(Debug, thiserror::Error)]
#[error("cannot open the store ({described}): {source}")]
pub struct BackendError {
    described: String,
    source: StoreError,
}

impl StorageConfig {
    /// The backend's name, as `[storage] backend` spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// The store to open. PostgreSQL is connected to here, and its migrations run.
    pub fn backend(&self) -> Result<StoreBackend, BackendError> {
        match self {
            Self::Sqlite { path } => Ok(StoreBackend::sqlite(path)),
            Self::Postgres(postgres) => {
                let config = PostgresConfig {
                    url: postgres.url.clone(),
                    password: postgres.password.clone(),
                    pool_size: postgres.pool_size,
                    schema: postgres.schema.clone(),
                };
                PostgresBackend::connect(&config)
                    .map(StoreBackend::Postgres)
                    .map_err(|source| BackendError { described: config.describe(), source })
            }
        }
    }

    /// The SQLite file, if the backend is SQLite.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Self::Sqlite { path } => Some(path),
            Self::Postgres(_) => None,
        }
    }

    /// Reads the PostgreSQL password from its environment variable (`get` looks one up), when set and not empty.
    fn read_password(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Self::Postgres(postgres) = self {
            postgres.password = get(&postgres.password_env).filter(|password| !password.is_empty());
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    bind: String,
    /// Turns the admin endpoints on; `CANDLED_ADMIN_TOKEN` wins over it.
    admin_token: Option<String>,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self { bind: "127.0.0.1:8000".into(), admin_token: None }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSupervisor {
    restart_budget: u32,
    restart_window_secs: u64,
    backoff_initial_ms: u64,
    backoff_max_ms: u64,
    history_timeout_secs: u64,
    /// Per task kind: `{ priority = "critical", auto_restart = true }`.
    tasks: HashMap<String, RawTaskPolicy>,
}

impl Default for RawSupervisor {
    fn default() -> Self {
        Self {
            restart_budget: 5,
            restart_window_secs: 60,
            backoff_initial_ms: 250,
            backoff_max_ms: 30_000,
            history_timeout_secs: 300,
            tasks: HashMap::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAudit {
    interval_secs: u64,
    recheck_empty_secs: u64,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self { interval_secs: 300, recheck_empty_secs: 600 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    per_stream: bool,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self { per_stream: true }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawApi {
    enabled: bool,
    read_through: bool,
    cache_mb: u64,
    max_ws_clients: usize,
    weight_per_minute: u32,
}

impl Default for RawApi {
    fn default() -> Self {
        Self { enabled: true, read_through: true, cache_mb: 64, max_ws_clients: 1024, weight_per_minute: 6000 }
    }
}

/// `[cluster]`: read as signed integers, so that a negative value gets a message naming its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCluster {
    shard: i64,
    shards: i64,
}

impl Default for RawCluster {
    fn default() -> Self {
        Self { shard: 0, shards: 1 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawNats {
    enabled: bool,
    url: String,
    stream: String,
    subject_prefix: String,
    /// 0: kept for ever.
    max_age_secs: u64,
    /// Absent: no size limit.
    max_bytes: Option<i64>,
    duplicate_window_secs: u64,
    in_progress: bool,
    buffer: usize,
}

impl Default for RawNats {
    fn default() -> Self {
        Self {
            enabled: false,
            url: "nats://127.0.0.1:4222".into(),
            stream: "CANDLES".into(),
            subject_prefix: "candles.binance".into(),
            max_age_secs: 0,
            max_bytes: None,
            duplicate_window_secs: 120,
            in_progress: false,
            buffer: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaskPolicy {
    priority: Priority,
    #[serde(default = "default_true")]
    auto_restart: bool,
}

fn default_streams_per_connection() -> usize {
    MAX_STREAMS_PER_CONNECTION
}
fn default_stall_timeout_secs() -> u64 {
    60
}
fn default_connect_timeout_secs() -> u64 {
    10
}
fn default_max_message_bytes() -> usize {
    1 << 20
}
/// Enough fetches in flight to keep the weight budget busy: at 6,000 weight a minute, a 1,000-candle request
/// (weight 2) may go out every 20 ms, so 16 in flight keep pace while each takes up to 320 ms, as it can on a busy
/// machine. The budget, not this, is what holds candled under the exchange's limit.
fn default_backfill_concurrency() -> usize {
    16
}
fn default_close_grace_ms() -> u64 {
    5_000
}
fn default_stream_stale_secs() -> u64 {
    30
}
fn default_silent_replace_secs() -> u64 {
    30
}
/// 23 h: well before Binance's 24 h cut.
fn default_rotate_after_secs() -> u64 {
    23 * 3600
}
fn default_rotate_stagger_secs() -> u64 {
    60
}
fn default_history() -> i64 {
    500
}
fn default_true() -> bool {
    true
}

/// The exchange endpoints and how connections behave.
#[derive(Debug, Clone)]
pub struct ExchangeSettings {
    pub ws_url: String,
    pub rest_url: String,
    pub ca_file: Option<PathBuf>,
    pub max_streams_per_connection: usize,
    pub stall_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_message_bytes: usize,
    pub backfill_concurrency: usize,
    /// How late a candle's final update may be, after its close time, before it is fetched over REST.
    pub close_grace: Duration,
    /// How long a stream may stay silent on a live connection before it is marked stale and resubscribed.
    pub stream_stale_after: Duration,
    /// How long a stream may stay silent after a resubscribe before its connection is replaced.
    pub silent_replace_after: Duration,
    /// When a connection is replaced by a new one (make before break), ahead of Binance's 24 h cut.
    pub rotate_after: Duration,
    /// How much later each further connection rotates.
    pub rotate_stagger: Duration,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub exchange: ExchangeSettings,
    /// Every configured (symbol, timeframe), symbols outer, in config order; this instance runs the ones its shard
    /// owns ([`Settings::owned_streams`]).
    pub streams: Vec<StreamKey>,
    /// `[cluster]`: this instance's shard, of how many.
    pub cluster: Cluster,
    pub history: u32,
    /// `[storage]`'s backend and its keys.
    pub storage: StorageConfig,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub http_bind: SocketAddr,
    /// The admin endpoints' bearer token; `None` turns them off.
    pub admin_token: Option<AdminToken>,
    pub supervision: SupervisionSettings,
    /// The indicators computed on every stream.
    pub indicators: IndicatorConfig,
    pub audit: AuditConfig,
    pub metrics: MetricsConfig,
    pub api: ApiConfig,
    pub nats: NatsConfig,
}

/// `[nats]`: publishing committed closed candles to NATS JetStream (and in-progress updates to core NATS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    pub enabled: bool,
    /// `nats://host:port` (or `tls://`).
    pub url: String,
    /// The JetStream stream's name, created at start if missing.
    pub stream: String,
    /// Subjects are `<prefix>.<SYMBOL>.<timeframe>`; in-progress updates `<prefix>.live.<SYMBOL>.<timeframe>`.
    pub subject_prefix: String,
    /// Retention by age (`None`: kept for ever).
    pub max_age: Option<Duration>,
    /// Retention by size in bytes (`None`: unlimited).
    pub max_bytes: Option<i64>,
    /// The window within which the server drops a message id it saw.
    pub duplicate_window: Duration,
    /// In-progress updates to core NATS, not kept.
    pub in_progress: bool,
    /// The publisher's bounded buffer, in entries.
    pub buffer: usize,
}

/// `[api]`: candled as a local Binance (`/api/v3/*`, `/ws`, `/stream`) on the HTTP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiConfig {
    /// Serve the Binance-compatible REST and WebSocket API.
    pub enabled: bool,
    /// Fetch from the exchange what the store does not hold; `false` answers from the store alone.
    pub read_through: bool,
    /// The bound on candles kept in memory for streams candled does not collect, in bytes.
    pub cache_bytes: u64,
    /// The most local WebSocket clients connected at once.
    pub max_ws_clients: usize,
    /// The request weight one client (IP address) may use per minute, as Binance counts it.
    pub weight_per_minute: u32,
}

/// `[metrics]`: what `/metrics` exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The per-stream series (labelled `symbol` and `timeframe`), about 29 per stream: off for very large stream
    /// sets. Read at start-up only.
    pub per_stream: bool,
}

/// `[audit]`: the anti-entropy pass over the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditConfig {
    /// The time between two passes.
    pub interval: Duration,
    /// How long to wait before asking again for a range the exchange answered empty.
    pub recheck_empty: Duration,
}

impl Settings {
    /// The streams this instance runs: the configured ones its shard owns, in config order. Start-up and every reload
    /// take the engine's stream set from here, and nowhere else.
    pub fn owned_streams(&self) -> Vec<StreamKey> {
        self.cluster.owned(&self.streams)
    }

    /// Reads and validates the file at `path`, reading no more than [`MAX_CONFIG_BYTES`]; `CANDLED_ADMIN_TOKEN`,
    /// when set and not empty, replaces `[http] admin_token`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_file_text(&Self::read(path)?, path)
    }

    /// The text of the file at `path`, no more than [`MAX_CONFIG_BYTES`].
    pub fn read(path: &Path) -> Result<String, ConfigError> {
        use std::io::Read as _;
        let shown = || path.display().to_string();
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
            .map_err(|source| ConfigError::Read { path: shown(), source })?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge { path: shown() });
        }
        Ok(text)
    }

    /// Validates the text [`read`](Self::read) from `path`, as [`load`](Self::load) does.
    pub fn from_file_text(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut settings = Self::parse(text, &path.display().to_string())?;
        settings.admin_token = token_in_force(settings.admin_token, std::env::var(ADMIN_TOKEN_ENV).ok());
        settings.storage.read_password(|name| std::env::var(name).ok());
        Ok(settings)
    }

    /// Validates TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|source| ConfigError::Parse { path: path.into(), source })?;
        let invalid = |key: &str, problem: String| ConfigError::Invalid { path: path.into(), key: key.into(), problem };

        let exchange = raw.exchange;
        check_url(&exchange.ws_url, &["ws://", "wss://"]).map_err(|p| invalid("exchange.ws_url", p))?;
        check_url(&exchange.rest_url, &["http://", "https://"]).map_err(|p| invalid("exchange.rest_url", p))?;
        if exchange.rotate_after_secs >= 24 * 3600 {
            return Err(invalid(
                "exchange.rotate_after_secs",
                "must be below 86400: Binance cuts connections at 24 h".into(),
            ));
        }
        if !(1..=MAX_STREAMS_PER_CONNECTION).contains(&exchange.max_streams_per_connection) {
            let problem = format!("must be between 1 and {MAX_STREAMS_PER_CONNECTION} (Binance's limit)");
            return Err(invalid("exchange.max_streams_per_connection", problem));
        }
        for (key, value) in [
            ("exchange.stall_timeout_secs", exchange.stall_timeout_secs as usize),
            ("exchange.connect_timeout_secs", exchange.connect_timeout_secs as usize),
            ("exchange.max_message_bytes", exchange.max_message_bytes),
            ("exchange.backfill_concurrency", exchange.backfill_concurrency),
            ("exchange.stream_stale_secs", exchange.stream_stale_secs as usize),
            ("exchange.silent_replace_secs", exchange.silent_replace_secs as usize),
            ("exchange.rotate_after_secs", exchange.rotate_after_secs as usize),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }

        let market = raw.market_data;
        if market.symbols.is_empty() {
            return Err(invalid("market_data.symbols", "must name at least one symbol, such as \"BTCUSDT\"".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for (index, symbol) in market.symbols.iter().enumerate() {
            check_symbol(symbol).map_err(|p| invalid(&format!("market_data.symbols[{index}]"), p))?;
            if !seen.insert(symbol) {
                return Err(invalid(&format!("market_data.symbols[{index}]"), format!("{symbol:?} is listed twice")));
            }
        }
        if market.timeframes.is_empty() {
            return Err(invalid("market_data.timeframes", "must name at least one timeframe, such as \"1m\"".into()));
        }
        let mut timeframes = Vec::new();
        for (index, name) in market.timeframes.iter().enumerate() {
            let key = format!("market_data.timeframes[{index}]");
            let timeframe: Timeframe =
                name.parse().map_err(|e: candled_actors::domain::UnknownTimeframe| invalid(&key, e.to_string()))?;
            if timeframes.contains(&timeframe) {
                return Err(invalid(&key, format!("{name:?} is listed twice")));
            }
            timeframes.push(timeframe);
        }
        if !(0..=MAX_HISTORY).contains(&market.history) {
            let problem = format!("{} is out of range: must be between 0 and {MAX_HISTORY}", market.history);
            return Err(invalid("market_data.history", problem));
        }
        let streams = market
            .symbols
            .iter()
            .flat_map(|symbol| timeframes.iter().map(move |&tf| StreamKey::new(symbol.clone(), tf)))
            .collect();

        let storage = raw.storage;
        let storage_config = storage_config(&storage).map_err(|(key, problem)| invalid(key, problem))?;
        if storage.batch_size == 0 {
            return Err(invalid("storage.batch_size", "must be at least 1".into()));
        }
        if storage.flush_interval_ms == 0 {
            return Err(invalid("storage.flush_interval_ms", "must be at least 1".into()));
        }
        let http_bind = raw.http.bind.parse().map_err(|_| {
            invalid("http.bind", format!("{:?} is not an address such as \"127.0.0.1:8000\"", raw.http.bind))
        })?;
        let admin_token = match raw.http.admin_token {
            Some(text) => Some(AdminToken::new(text).ok_or_else(|| {
                invalid("http.admin_token", "must not be empty: remove the key to turn the admin endpoints off".into())
            })?),
            None => None,
        };

        let supervisor = raw.supervisor;
        if supervisor.backoff_max_ms < supervisor.backoff_initial_ms {
            return Err(invalid("supervisor.backoff_max_ms", "must not be below supervisor.backoff_initial_ms".into()));
        }
        if supervisor.restart_window_secs == 0 || supervisor.history_timeout_secs == 0 {
            let key = if supervisor.restart_window_secs == 0 { "restart_window_secs" } else { "history_timeout_secs" };
            return Err(invalid(&format!("supervisor.{key}"), "must be at least 1".into()));
        }
        raw.indicators.validate().map_err(|e| invalid(&format!("indicators.{}", e.key), e.problem))?;
        for (key, value) in [
            ("audit.interval_secs", raw.audit.interval_secs),
            ("audit.recheck_empty_secs", raw.audit.recheck_empty_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }

        let api = raw.api;
        for (key, value) in [
            ("api.cache_mb", api.cache_mb),
            ("api.max_ws_clients", api.max_ws_clients as u64),
            ("api.weight_per_minute", u64::from(api.weight_per_minute)),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if api.cache_mb > 1 << 20 {
            return Err(invalid("api.cache_mb", format!("{} is out of range: must be at most 1048576", api.cache_mb)));
        }

        let nats = check_nats(raw.nats).map_err(|(key, problem)| invalid(&format!("nats.{key}"), problem))?;
        let cluster = Cluster::new(raw.cluster.shard, raw.cluster.shards).map_err(|error| match error {
            ClusterError::ShardsOutOfRange(_) => invalid("cluster.shards", error.to_string()),
            ClusterError::ShardOutOfRange { .. } => invalid("cluster.shard", error.to_string()),
        })?;

        let mut tasks = SupervisionSettings::default_tasks();
        for (name, policy) in supervisor.tasks {
            let kind = task_kind(&name).ok_or_else(|| {
                invalid(
                    &format!("supervisor.tasks.{name}"),
                    "unknown task kind: expected storage, connection, subscription, indicator, backfill, history, audit or publisher"
                        .into(),
                )
            })?;
            tasks.insert(kind, TaskPolicy { priority: policy.priority, auto_restart: policy.auto_restart });
        }

        Ok(Settings {
            exchange: ExchangeSettings {
                ws_url: exchange.ws_url.trim_end_matches('/').to_owned(),
                rest_url: exchange.rest_url.trim_end_matches('/').to_owned(),
                ca_file: exchange.ca_file,
                max_streams_per_connection: exchange.max_streams_per_connection,
                stall_timeout: Duration::from_secs(exchange.stall_timeout_secs),
                connect_timeout: Duration::from_secs(exchange.connect_timeout_secs),
                max_message_bytes: exchange.max_message_bytes,
                backfill_concurrency: exchange.backfill_concurrency,
                close_grace: Duration::from_millis(exchange.close_grace_ms),
                stream_stale_after: Duration::from_secs(exchange.stream_stale_secs),
                silent_replace_after: Duration::from_secs(exchange.silent_replace_secs),
                rotate_after: Duration::from_secs(exchange.rotate_after_secs),
                rotate_stagger: Duration::from_secs(exchange.rotate_stagger_secs),
            },
            streams,
            cluster,
            history: market.history as u32,
            storage: storage_config,
            batch_size: storage.batch_size,
            flush_interval: Duration::from_millis(storage.flush_interval_ms),
            http_bind,
            admin_token,
            supervision: SupervisionSettings {
                tasks,
                budget: RestartBudget {
                    max_restarts: supervisor.restart_budget,
                    window: Duration::from_secs(supervisor.restart_window_secs),
                },
                backoff: BackoffPolicy {
                    initial: Duration::from_millis(supervisor.backoff_initial_ms),
                    max: Duration::from_millis(supervisor.backoff_max_ms),
                },
                run_once_timeout: Duration::from_secs(supervisor.history_timeout_secs),
            },
            indicators: raw.indicators,
            audit: AuditConfig {
                interval: Duration::from_secs(raw.audit.interval_secs),
                recheck_empty: Duration::from_secs(raw.audit.recheck_empty_secs),
            },
            metrics: MetricsConfig { per_stream: raw.metrics.per_stream },
            api: ApiConfig {
                enabled: api.enabled,
                read_through: api.read_through,
                cache_bytes: api.cache_mb << 20,
                max_ws_clients: api.max_ws_clients,
                weight_per_minute: api.weight_per_minute,
            },
            nats,
        })
    }
}

/// Validates `[nats]`: the key at fault (under `nats.`) and the problem.
fn check_nats(raw: RawNats) -> Result<NatsConfig, (&'static str, String)> {
    check_url(&raw.url, &["nats://", "tls://"]).map_err(|p| ("url", p))?;
    let forbidden = |c: char| c.is_whitespace() || ".*>/\\".contains(c);
    if raw.stream.is_empty() || raw.stream.chars().any(forbidden) {
        let problem = format!(
            "{:?} is not a JetStream stream name: non-empty, without spaces, '.', '*', '>', '/' or '\\'",
            raw.stream
        );
        return Err(("stream", problem));
    }
    let bad_token = |t: &str| t.is_empty() || t.chars().any(|c| c.is_whitespace() || c == '*' || c == '>');
    if raw.subject_prefix.split('.').any(bad_token) {
        let problem = format!(
            "{:?} is not a subject prefix: dot-separated non-empty tokens without spaces, '*' or '>', such as \"candles.binance\"",
            raw.subject_prefix
        );
        return Err(("subject_prefix", problem));
    }
    if raw.max_bytes.is_some_and(|bytes| bytes < 1) {
        return Err(("max_bytes", "must be at least 1: remove the key for no size limit".into()));
    }
    if raw.duplicate_window_secs == 0 {
        return Err(("duplicate_window_secs", "must be at least 1".into()));
    }
    if raw.max_age_secs > 0 && raw.duplicate_window_secs > raw.max_age_secs {
        let problem = format!(
            "{} is above nats.max_age_secs ({}): JetStream refuses that",
            raw.duplicate_window_secs, raw.max_age_secs
        );
        return Err(("duplicate_window_secs", problem));
    }
    if raw.buffer == 0 {
        return Err(("buffer", "must be at least 1".into()));
    }
    Ok(NatsConfig {
        enabled: raw.enabled,
        url: raw.url,
        stream: raw.stream,
        subject_prefix: raw.subject_prefix,
        max_age: (raw.max_age_secs > 0).then(|| Duration::from_secs(raw.max_age_secs)),
        max_bytes: raw.max_bytes,
        duplicate_window: Duration::from_secs(raw.duplicate_window_secs),
        in_progress: raw.in_progress,
        buffer: raw.buffer,
    })
}

/// `[storage]`'s backend and its keys, validated: `Err((key, problem))`. A key of the other backend is refused.
fn storage_config(storage: &RawStorage) -> Result<StorageConfig, (&'static str, String)> {
    let only_for = |key: &'static str, backend: &str| {
        let other = if backend == "sqlite" { "postgres" } else { "sqlite" };
        (key, format!("is a key of `backend = \"{other}\"`, and this config's backend is \"{backend}\": remove it"))
    };
    match storage.backend.as_str() {
        "sqlite" => {
            let postgres_keys = [
                ("storage.url", storage.url.is_some()),
                ("storage.password_env", storage.password_env.is_some()),
                ("storage.schema", storage.schema.is_some()),
                ("storage.pool_size", storage.pool_size.is_some()),
            ];
            if let Some((key, _)) = postgres_keys.into_iter().find(|(_, set)| *set) {
                return Err(only_for(key, "sqlite"));
            }
            let path = storage.path.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_STORAGE_PATH));
            if path.as_os_str().is_empty() {
                return Err(("storage.path", "must not be empty".into()));
            }
            Ok(StorageConfig::Sqlite { path })
        }
        "postgres" => {
            if storage.path.is_some() {
                return Err(only_for("storage.path", "postgres"));
            }
            let url = storage.url.clone().ok_or((
                "storage.url",
                "is required with `backend = \"postgres\"`: such as \"postgres://candled@127.0.0.1:5432/candles\""
                    .to_owned(),
            ))?;
            check_postgres_url(&url).map_err(|problem| ("storage.url", problem))?;
            let password_env = storage.password_env.clone().unwrap_or_else(|| DEFAULT_PASSWORD_ENV.into());
            if password_env.is_empty() {
                return Err(("storage.password_env", "must not be empty: remove the key for the default".into()));
            }
            let schema = storage.schema.clone().unwrap_or_else(|| "public".into());
            check_identifier(&schema).map_err(|problem| ("storage.schema", problem))?;
            let pool_size = storage.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
            if pool_size == 0 {
                return Err(("storage.pool_size", "must be at least 1".into()));
            }
            Ok(StorageConfig::Postgres(PostgresSettings { url, password: None, password_env, schema, pool_size }))
        }
        other => Err(("storage.backend", format!("{other:?} is not a backend: expected \"sqlite\" or \"postgres\""))),
    }
}

/// A PostgreSQL URL: `postgres://` or `postgresql://`, a host, a port if any that is a number, and a database. The
/// problem never quotes a password.
fn check_postgres_url(url: &str) -> Result<(), String> {
    let shown = redacted_url(url);
    let rest = ["postgres://", "postgresql://"].iter().find_map(|scheme| url.strip_prefix(scheme));
    let Some(rest) = rest else {
        return Err(format!("{shown:?} must start with postgres:// or postgresql://"));
    };
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let (host, port) = match host_port.strip_prefix('[') {
        // An IPv6 address: `[::1]:5432`.
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']').unwrap_or((bracketed, ""));
            (host, after.strip_prefix(':'))
        }
        None => host_port.split_once(':').map_or((host_port, None), |(host, port)| (host, Some(port))),
    };
    if host.is_empty() {
        return Err(format!("{shown:?} has no host: expected postgres://user@host:port/database"));
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("{shown:?} has a port {port:?} that is not a number from 0 to 65535"));
    }
    let database = database.split(['?', '#']).next().unwrap_or("");
    if database.is_empty() {
        return Err(format!("{shown:?} names no database: expected postgres://user@host:port/database"));
    }
    Ok(())
}

/// A plain SQL identifier, as a schema name: a letter or `_`, then letters, digits or `_`, at most 63 bytes.
fn check_identifier(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let starts_well = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !starts_well || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') || name.len() > 63 {
        return Err(format!(
            "{name:?} is not a plain identifier: a letter or '_', then letters, digits or '_', at most 63 bytes"
        ));
    }
    Ok(())
}

/// A TOML error quotes the line at fault: when that line sets a token or a database URL, its value is left out.
fn without_token_values(error: &str) -> String {
    let masked = |line: &str| {
        let (number, source) = line.split_once(" | ")?;
        let is_quoted_line = !number.trim().is_empty() && number.trim().bytes().all(|b| b.is_ascii_digit());
        let (key, _) = source.split_once('=').filter(|_| is_quoted_line)?;
        // A database URL may hold a password.
        let key_name = key.trim().to_ascii_lowercase();
        (key_name.contains("token") || key_name == "url" || key_name.ends_with(".url"))
            .then(|| format!("{number} | {key}= [redacted]"))
    };
    error.lines().map(|line| masked(line).unwrap_or_else(|| line.to_owned())).collect::<Vec<_>>().join("\n")
}

fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let rest = schemes.iter().find_map(|scheme| url.strip_prefix(scheme));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        Some(_) => Err(format!("{url:?} has no host")),
        None => Err(format!("{url:?} must start with {}", schemes.join(" or "))),
    }
}

/// Binance symbols: 1 to 20 of `A-Z 0-9 - _ .`, upper case as in REST.
fn check_symbol(symbol: &str) -> Result<(), String> {
    if symbol.is_empty() {
        return Err("is empty: expected a symbol such as \"BTCUSDT\"".into());
    }
    if symbol.len() > 20 {
        return Err(format!("{symbol:?} is longer than 20 characters"));
    }
    if symbol.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!("{symbol:?} must be upper case, as in {:?}", symbol.to_ascii_uppercase()));
    }
    if !symbol.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_.".contains(&b)) {
        return Err(format!("{symbol:?} may only hold A-Z, 0-9, '-', '_' and '.'"));
    }
    Ok(())
}

fn task_kind(name: &str) -> Option<TaskKind> {
    use TaskKind::*;
    [Storage, Connection, Subscription, Indicator, Backfill, History, Audit, Publisher]
        .into_iter()
        .find(|kind| kind.as_str() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_defaults_and_each_invalid_key_says_what_is_wrong() {
        let base = "[exchange]\nws_url = \"ws://h\"\nrest_url = \"http://h\"\n[market_data]\nsymbols = [\"BTCUSDT\"]\ntimeframes = [\"1m\"]\n";
        let settings = Settings::parse(base, "c.toml").unwrap();
        let defaults = NatsConfig {
            enabled: false,
            url: "nats://127.0.0.1:4222".into(),
            stream: "CANDLES".into(),
            subject_prefix: "candles.binance".into(),
            max_age: None,
            max_bytes: None,
            duplicate_window: Duration::from_secs(120),
            in_progress: false,
            buffer: 10_000,
        };
        assert_eq!(settings.nats, defaults);
        let set =
            Settings::parse(&format!("{base}[nats]\nenabled = true\nmax_age_secs = 86400\nmax_bytes = 1000000\n"), "c")
                .unwrap();
        assert_eq!((set.nats.max_age, set.nats.max_bytes), (Some(Duration::from_secs(86_400)), Some(1_000_000)));
        let cases = [
            // TC0..: (the [nats] body, the key at fault, a word of the problem)
            ("url = \"http://x\"", "nats.url", "must start with nats://"),
            ("stream = \"A.B\"", "nats.stream", "not a JetStream stream name"),
            ("stream = \"\"", "nats.stream", "not a JetStream stream name"),
            ("subject_prefix = \"a..b\"", "nats.subject_prefix", "not a subject prefix"),
            ("subject_prefix = \"a.>\"", "nats.subject_prefix", "not a subject prefix"),
            ("max_bytes = 0", "nats.max_bytes", "at least 1"),
            ("duplicate_window_secs = 0", "nats.duplicate_window_secs", "at least 1"),
            ("max_age_secs = 60", "nats.duplicate_window_secs", "above nats.max_age_secs"),
            ("buffer = 0", "nats.buffer", "at least 1"),
        ];
        for (i, (body, key, problem)) in cases.iter().enumerate() {
            let error = Settings::parse(&format!("{base}[nats]\n{body}\n"), "c.toml").unwrap_err().to_string();
            assert!(error.contains(&format!("`{key}`")) && error.contains(problem), "TC{i}: {error}");
        }
    }

    const SHIPPED: &str = include_str!("../config.toml");

    #[test]
    fn the_shipped_config_is_valid_and_runs_the_seed_setup() {
        let settings = Settings::parse(SHIPPED, "config.toml").unwrap();
        let streams: Vec<String> = settings.streams.iter().map(ToString::to_string).collect();
        assert_eq!(streams, ["BTCUSDT 1m", "BTCUSDT 5m", "BTCUSDT 15m"]);
        assert_eq!(settings.storage, StorageConfig::Sqlite { path: PathBuf::from("data/tradingbot.db") });
        assert_eq!(settings.http_bind, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(settings.history, 500);
        assert_eq!(settings.exchange.ws_url, "wss://stream.binance.com:9443");
        assert_eq!(settings.indicators, IndicatorConfig::default());
    }

    /// The shipped config with its `[indicators]` section replaced by `section`.
    fn with_indicators(section: &str) -> String {
        let start = SHIPPED.find("[indicators]").expect("the shipped config has an [indicators] section");
        format!("{}[indicators]\n{section}\n", &SHIPPED[..start])
    }

    #[test]
    fn indicator_errors_name_the_key() {
        let cases = [
            // TC0: a period TA-Lib rejects.
            ("rsi = [0]", "config file c: `indicators.rsi`: period 0 must be at least 2"),
            // TC1: a duplicate.
            ("ema = [12, 12]", "config file c: `indicators.ema`: duplicate entry (output `ema_12`)"),
            // TC2: a bad multiplier.
            ("bollinger = [[20, -2.0]]", "config file c: `indicators.bollinger`: multiplier -2 must be finite and > 0"),
        ];
        for (section, want) in cases {
            let error = Settings::parse(&with_indicators(section), "c").expect_err(section);
            assert_eq!(error.to_string(), want);
        }
        // TC3: an unknown key fails at parse time, naming it.
        let error = Settings::parse(&with_indicators("smaa = [20]"), "c").expect_err("unknown key");
        assert!(error.to_string().contains("smaa"), "{error}");
    }

    #[test]
    fn indicators_default_when_the_section_is_missing_and_keys_can_be_turned_off() {
        let start = SHIPPED.find("[indicators]").expect("section");
        let settings = Settings::parse(&SHIPPED[..start], "c").unwrap();
        assert_eq!(settings.indicators, IndicatorConfig::default());
        let settings = Settings::parse(&with_indicators("ema = []\nobv = true"), "c").unwrap();
        assert!(settings.indicators.ema.is_empty() && settings.indicators.obv);
        assert_eq!(settings.indicators.sma, [20]);
    }

    #[test]
    fn load_reads_at_most_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        // TC0: the shipped config padded with comments to exactly the cap is read.
        let padding = MAX_CONFIG_BYTES as usize - SHIPPED.len() - 1;
        std::fs::write(&path, format!("{SHIPPED}#{}", " ".repeat(padding))).unwrap();
        assert!(Settings::load(&path).is_ok());
        // TC1: one byte more is refused, naming the file and the limit.
        std::fs::write(&path, format!("{SHIPPED}#{}", " ".repeat(padding + 1))).unwrap();
        let error = Settings::load(&path).expect_err("over the cap");
        assert!(matches!(error, ConfigError::TooLarge { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()) && message.contains("1 MiB limit"), "{message}");
    }

    #[test]
    fn per_stream_metrics_default_on_and_can_be_turned_off() {
        let with_metrics = |section: &str| format!("{SHIPPED}\n[metrics]\n{section}\n");
        // TC0: no section: on.
        assert!(Settings::parse(SHIPPED, "c").unwrap().metrics.per_stream);
        // TC1: an empty section: on.
        assert!(Settings::parse(&with_metrics(""), "c").unwrap().metrics.per_stream);
        // TC2: turned off.
        assert!(!Settings::parse(&with_metrics("per_stream = false"), "c").unwrap().metrics.per_stream);
        // TC3: an unknown key fails at parse time, naming it.
        let error = Settings::parse(&with_metrics("per_streams = false"), "c").expect_err("unknown key").to_string();
        assert!(error.contains("per_streams"), "{error}");
    }

    #[test]
    fn the_api_section_defaults_and_names_a_bad_key() {
        let with_api = |section: &str| format!("{SHIPPED}\n[api]\n{section}\n");
        // TC0: no section: on, reading through, 64 MiB of cache.
        let api = Settings::parse(SHIPPED, "c").unwrap().api;
        assert!(api.enabled && api.read_through);
        assert_eq!((api.cache_bytes, api.max_ws_clients, api.weight_per_minute), (64 << 20, 1024, 6000));
        // TC1: set.
        let api = Settings::parse(&with_api("enabled = false\nread_through = false\ncache_mb = 1"), "c").unwrap().api;
        assert!(!api.enabled && !api.read_through && api.cache_bytes == 1 << 20);
        // TC2, TC3: zero is refused, naming the key.
        for key in ["weight_per_minute", "max_ws_clients"] {
            let error = Settings::parse(&with_api(&format!("{key} = 0")), "c").expect_err(key).to_string();
            assert!(error.contains(&format!("`api.{key}`: must be at least 1")), "{error}");
        }
        // TC4: an unknown key fails at parse time, naming it.
        let error = Settings::parse(&with_api("cache = 1"), "c").expect_err("unknown key").to_string();
        assert!(error.contains("cache"), "{error}");
    }

    #[test]
    fn the_cluster_section_defaults_to_one_shard_and_names_a_bad_key() {
        let with_cluster = |section: &str| format!("{SHIPPED}\n[cluster]\n{section}\n");
        let text = SHIPPED.replace("symbols = [\"BTCUSDT\"]", "symbols = [\"BTCUSDT\", \"ETHUSDT\", \"SOLUSDT\"]");
        // TC0: no section: shard 0 of 1, which owns every configured stream.
        let settings = Settings::parse(&text, "c").unwrap();
        assert_eq!(settings.cluster, Cluster::default());
        assert_eq!(settings.owned_streams(), settings.streams);
        // TC1: shard 1 of 2 runs the configured streams it owns, in config order, and knows them all.
        let settings = Settings::parse(&format!("{text}\n[cluster]\nshard = 1\nshards = 2\n"), "c").unwrap();
        assert_eq!(settings.cluster, Cluster::new(1, 2).unwrap());
        assert_eq!(settings.streams.len(), 9);
        let owned = settings.owned_streams();
        assert_eq!(
            owned,
            settings.streams.iter().filter(|key| settings.cluster.owns(key)).cloned().collect::<Vec<_>>()
        );
        assert!(!owned.is_empty() && owned.len() < 9, "{owned:?}");
        // TC2..TC6: each bad value is refused, naming its key and the problem.
        let cases = [
            ("shards = 0", "`cluster.shards`: 0 is out of range: must be between 1 and 1024"),
            ("shards = -2", "`cluster.shards`: -2 is out of range: must be between 1 and 1024"),
            ("shards = 2000", "`cluster.shards`: 2000 is out of range: must be between 1 and 1024"),
            ("shard = 3\nshards = 3", "`cluster.shard`: 3 is out of range: shards are numbered from 0 to 2"),
            ("shard = -1\nshards = 3", "`cluster.shard`: -1 is out of range: shards are numbered from 0 to 2"),
            ("shard = 1", "`cluster.shard`: 1 is out of range: shards are numbered from 0 to 0"),
        ];
        for (section, want) in cases {
            let error = Settings::parse(&with_cluster(section), "c").expect_err(section).to_string();
            assert!(error.contains(want), "{section}: {error}");
        }
        // TC7: an unknown key fails at parse time, naming it.
        let error = Settings::parse(&with_cluster("shard_count = 2"), "c").expect_err("unknown key").to_string();
        assert!(error.contains("shard_count"), "{error}");
    }

    #[test]
    fn a_task_kind_mapping_overrides_the_default() {
        let text = SHIPPED.to_owned() + "\n[supervisor.tasks]\nindicator = { priority = \"low\" }\n";
        let settings = Settings::parse(&text, "c").unwrap();
        assert_eq!(settings.supervision.tasks[&TaskKind::Indicator].priority, Priority::Low);
        assert_eq!(settings.supervision.tasks[&TaskKind::Storage].priority, Priority::Critical);
    }

    #[test]
    fn the_storage_backend_takes_its_own_keys_and_names_a_bad_one() {
        let with_storage =
            |keys: &str| SHIPPED.replace("[storage]\npath = \"data/tradingbot.db\"\n", &format!("[storage]\n{keys}\n"));
        // TC0: no backend: SQLite at the path; no section at all: SQLite at the default path.
        let settings = Settings::parse(&with_storage("path = \"x.db\""), "c").unwrap();
        assert_eq!(settings.storage, StorageConfig::Sqlite { path: "x.db".into() });
        assert_eq!(settings.storage.backend().unwrap().sqlite_path(), Some(Path::new("x.db")));
        let settings = Settings::parse(&with_storage(""), "c").unwrap();
        assert_eq!(settings.storage.sqlite_path(), Some(Path::new(DEFAULT_STORAGE_PATH)));
        // TC1: PostgreSQL with its defaults, and with every key set.
        let postgres = |keys: &str| with_storage(&format!("backend = \"postgres\"\n{keys}"));
        let settings = Settings::parse(&postgres("url = \"postgres://candled@127.0.0.1:5432/candles\""), "c").unwrap();
        let want = PostgresSettings {
            url: "postgres://candled@127.0.0.1:5432/candles".into(),
            password: None,
            password_env: DEFAULT_PASSWORD_ENV.into(),
            schema: "public".into(),
            pool_size: DEFAULT_POOL_SIZE,
        };
        assert_eq!(settings.storage, StorageConfig::Postgres(want));
        let keys = "url = \"postgresql://u@[::1]/db\"\npassword_env = \"PG\"\nschema = \"candled_1\"\npool_size = 3";
        let StorageConfig::Postgres(set) = Settings::parse(&postgres(keys), "c").unwrap().storage else { panic!() };
        assert_eq!((set.password_env.as_str(), set.schema.as_str(), set.pool_size), ("PG", "candled_1", 3));
        // TC2: a PostgreSQL that does not answer: the error names the store, never its password.
        let unreachable = postgres("url = \"postgres://u:s3cret@127.0.0.1:1/db\"");
        let error = Settings::parse(&unreachable, "c").unwrap().storage.backend().unwrap_err().to_string();
        assert!(error.starts_with("cannot open the store (host=127.0.0.1 port=1 dbname=db user=u"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        // TC3: every mistake names its key and the problem, and never quotes a password.
        let cases = [
            (
                with_storage("backend = \"mysql\""),
                "`storage.backend`: \"mysql\" is not a backend: expected \"sqlite\" or \"postgres\"",
            ),
            (postgres(""), "`storage.url`: is required with `backend = \"postgres\"`"),
            (
                postgres("url = \"mysql://u:pw1@h/db\""),
                "`storage.url`: \"mysql://u:***@h/db\" must start with postgres://",
            ),
            (postgres("url = \"postgres://u:pw1@/db\""), "`storage.url`: \"postgres://u:***@/db\" has no host"),
            (postgres("url = \"postgres://u:pw1@h:54x/db\""), "has a port \"54x\" that is not a number"),
            (postgres("url = \"postgres://u:pw1@h:5432\""), "names no database"),
            (
                postgres("url = \"postgres://h/db\"\nschema = \"a-b\""),
                "`storage.schema`: \"a-b\" is not a plain identifier",
            ),
            (postgres("url = \"postgres://h/db\"\npool_size = 0"), "`storage.pool_size`: must be at least 1"),
            (
                postgres("url = \"postgres://h/db\"\npath = \"x.db\""),
                "`storage.path`: is a key of `backend = \"sqlite\"`",
            ),
            (
                with_storage("url = \"postgres://h/db\""),
                "`storage.url`: is a key of `backend = \"postgres\"`, and this config's backend is \"sqlite\"",
            ),
            (with_storage("schema = \"s\""), "`storage.schema`: is a key of `backend = \"postgres\"`"),
            // A TOML error on the URL's line quotes it without its value.
            (postgres("url = \"postgres://u:pw1@h/db"), "url = [redacted]"),
            (
                format!("{}\nstorage.url = \"postgres://u:pw1@h/db", SHIPPED.replace("[storage]", "[other]")),
                "[redacted]",
            ),
        ];
        for (index, (text, want)) in cases.iter().enumerate() {
            let error = Settings::parse(text, "c").expect_err(want).to_string();
            assert!(error.contains(want), "TC3.{index}: {error}");
            assert!(!error.contains("pw1"), "TC3.{index}: {error}");
        }
    }

    #[test]
    fn the_postgres_password_comes_from_its_environment_variable_and_is_never_printed() {
        let text = SHIPPED.replace(
            "[storage]\npath = \"data/tradingbot.db\"\n",
            "[storage]\nbackend = \"postgres\"\nurl = \"postgres://u:in-url-pw@h/db\"\npassword_env = \"PG\"\n",
        );
        let mut settings = Settings::parse(&text, "c").unwrap();
        // TC0: an empty variable is no password; a set one is read from the variable `password_env` names.
        settings.storage.read_password(|_| Some(String::new()));
        let StorageConfig::Postgres(postgres) = &settings.storage else { panic!("postgres") };
        assert_eq!(postgres.password, None);
        settings.storage.read_password(|name| (name == "PG").then(|| "env-pw".to_owned()));
        let StorageConfig::Postgres(postgres) = &settings.storage else { panic!("postgres") };
        assert_eq!(postgres.password.as_deref(), Some("env-pw"));
        // TC1: Debug (what a log line prints) shows neither password.
        let debug = format!("{settings:?}");
        assert!(!debug.contains("env-pw") && !debug.contains("in-url-pw") && debug.contains("u:***@h/db"), "{debug}");
    }

    #[test]
    fn the_admin_token_is_read_and_never_quoted_in_an_error() {
        let with_http = |line: &str| SHIPPED.replace("[http]", &format!("[http]\n{line}"));
        // TC0: no key: the admin endpoints are off.
        assert_eq!(Settings::parse(SHIPPED, "c").unwrap().admin_token, None);
        // TC1: a token.
        let settings = Settings::parse(&with_http("admin_token = \"s3cret\""), "c").unwrap();
        assert!(settings.admin_token.is_some_and(|token| token.matches("s3cret")));
        // TC2: an empty token is refused, naming the key.
        let error = Settings::parse(&with_http("admin_token = \"\""), "c").expect_err("empty").to_string();
        assert!(error.contains("`http.admin_token`: must not be empty"), "{error}");
        // TC3, TC4: a TOML error on a token line (bad syntax, a misspelt key) quotes the line without its value.
        for line in ["admin_token = \"s3cret", "admin_tokenn = \"s3cret\""] {
            let error = Settings::parse(&with_http(line), "c").expect_err(line).to_string();
            assert!(!error.contains("s3cret") && error.contains("[redacted]"), "{error}");
        }
        // TC5: other lines are quoted whole.
        let error = Settings::parse(&SHIPPED.replace("history = 500", "history = = 500"), "c").unwrap_err();
        assert!(error.to_string().contains("history = = 500"), "{error}");
    }
}
