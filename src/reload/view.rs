//! The config in force as `/api/v1/config` shows it: normalised, under the `config.toml` key names, the admin token
//! and the database password shown only as whether one is set.

use candled_actors::indicators::IndicatorConfig;
use candled_actors::store::backend::redacted_url;
use serde_json::{Value, json};

use crate::config::{Settings, StorageConfig};

/// The settings, section by section, with every default filled in.
pub fn settings_view(settings: &Settings) -> Value {
    let exchange = &settings.exchange;
    let supervision = &settings.supervision;
    let mut symbols: Vec<&str> = settings.streams.iter().map(|key| key.symbol.as_str()).collect();
    symbols.dedup();
    // Every symbol has every timeframe (symbols outer): the first symbol's streams name them all, in order.
    let timeframes: Vec<&str> = settings
        .streams
        .iter()
        .take_while(|key| Some(key.symbol.as_str()) == symbols.first().copied())
        .map(|key| key.timeframe.as_str())
        .collect();
    let mut tasks: Vec<_> = supervision.tasks.iter().collect();
    tasks.sort_by_key(|(kind, _)| kind.as_str());
    let tasks: serde_json::Map<String, Value> = tasks
        .into_iter()
        .map(|(kind, policy)| {
            (kind.as_str().to_owned(), json!({ "priority": policy.priority, "auto_restart": policy.auto_restart }))
        })
        .collect();
    json!({
        "market_data": {
            "symbols": symbols,
            "timeframes": timeframes,
            "history": settings.history,
            "streams": settings.streams.iter().map(|key| format!("{}:{}", key.symbol, key.timeframe)).collect::<Vec<_>>(),
        },
        "cluster": { "shard": settings.cluster.shard(), "shards": settings.cluster.shards() },
        "indicators": indicators_view(&settings.indicators),
        "supervisor": {
            "restart_budget": supervision.budget.max_restarts,
            "restart_window_secs": supervision.budget.window.as_secs(),
            "backoff_initial_ms": supervision.backoff.initial.as_millis() as u64,
            "backoff_max_ms": supervision.backoff.max.as_millis() as u64,
            "history_timeout_secs": supervision.run_once_timeout.as_secs(),
            "tasks": tasks,
        },
        "audit": {
            "interval_secs": settings.audit.interval.as_secs(),
            "recheck_empty_secs": settings.audit.recheck_empty.as_secs(),
        },
        "exchange": {
            "ws_url": exchange.ws_url,
            "rest_url": exchange.rest_url,
            "ca_file": exchange.ca_file,
            "max_streams_per_connection": exchange.max_streams_per_connection,
            "stall_timeout_secs": exchange.stall_timeout.as_secs(),
            "connect_timeout_secs": exchange.connect_timeout.as_secs(),
            "max_message_bytes": exchange.max_message_bytes,
            "backfill_concurrency": exchange.backfill_concurrency,
            "close_grace_ms": exchange.close_grace.as_millis() as u64,
            "stream_stale_secs": exchange.stream_stale_after.as_secs(),
            "silent_replace_secs": exchange.silent_replace_after.as_secs(),
            "rotate_after_secs": exchange.rotate_after.as_secs(),
            "rotate_stagger_secs": exchange.rotate_stagger.as_secs(),
        },
        "storage": storage_view(settings),
        "http": {
            "bind": settings.http_bind.to_string(),
            "admin_token_set": settings.admin_token.is_some(),
        },
        "metrics": { "per_stream": settings.metrics.per_stream },
        "nats": {
            "enabled": settings.nats.enabled,
            "url": candled_actors::actors::publisher::shown_url(&settings.nats.url),
            "stream": settings.nats.stream,
            "subject_prefix": settings.nats.subject_prefix,
            "max_age_secs": settings.nats.max_age.map_or(0, |age| age.as_secs()),
            "max_bytes": settings.nats.max_bytes,
            "duplicate_window_secs": settings.nats.duplicate_window.as_secs(),
            "in_progress": settings.nats.in_progress,
            "buffer": settings.nats.buffer,
        },
    })
}

/// The `[storage]` section: the backend and its keys. A PostgreSQL password is shown only as whether one is set, in
/// the URL as `***`.
fn storage_view(settings: &Settings) -> Value {
    let mut view = match &settings.storage {
        StorageConfig::Sqlite { path } => json!({ "backend": "sqlite", "path": path }),
        StorageConfig::Postgres(postgres) => json!({
            "backend": "postgres",
            "url": redacted_url(&postgres.url),
            "password_env": postgres.password_env,
            "password_set": postgres.password.is_some(),
            "schema": postgres.schema,
            "pool_size": postgres.pool_size,
        }),
    };
    view["batch_size"] = json!(settings.batch_size);
    view["flush_interval_ms"] = json!(settings.flush_interval.as_millis() as u64);
    view
}

/// The `[indicators]` section as written in the file.
fn indicators_view(config: &IndicatorConfig) -> Value {
    json!({
        "sma": config.sma, "ema": config.ema, "rsi": config.rsi, "macd": config.macd, "bollinger": config.bollinger,
        "atr": config.atr, "wma": config.wma, "dema": config.dema, "tema": config.tema, "stoch": config.stoch,
        "obv": config.obv, "adx": config.adx, "keltner": config.keltner, "vwap": config.vwap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_is_normalised_and_hides_the_token() {
        let text = include_str!("../../config.toml").replace("[http]", "[http]\nadmin_token = \"hunter2-secret\"");
        let settings = Settings::parse(&text, "config.toml").expect("valid");
        let view = settings_view(&settings);
        // TC0: streams, symbols and timeframes in config order.
        assert_eq!(view["market_data"]["streams"], json!(["BTCUSDT:1m", "BTCUSDT:5m", "BTCUSDT:15m"]));
        assert_eq!(view["market_data"]["timeframes"], json!(["1m", "5m", "15m"]));
        // TC1: defaults filled in.
        assert_eq!(view["supervisor"]["tasks"]["storage"], json!({ "priority": "critical", "auto_restart": true }));
        assert_eq!(view["indicators"]["sma"], json!([20]));
        // TC2: the token only as whether one is set.
        assert_eq!(view["http"]["admin_token_set"], true);
        assert_eq!(view["metrics"]["per_stream"], true);
        assert_eq!(view["cluster"], json!({ "shard": 0, "shards": 1 }));
        assert!(!view.to_string().contains("hunter2"), "{view}");
        // TC3: NATS off by default; a URL's credentials are never shown.
        assert_eq!(view["nats"]["enabled"], false);
        let text = format!("{text}\n[nats]\nurl = \"nats://u:hunter2@127.0.0.1:4222\"\n");
        let view = settings_view(&Settings::parse(&text, "config.toml").expect("valid"));
        assert_eq!(view["nats"]["url"], "nats://[credentials]@127.0.0.1:4222");
        assert!(!view.to_string().contains("hunter2"), "{view}");
        assert_eq!(
            view["storage"],
            json!({ "backend": "sqlite", "path": "data/tradingbot.db", "batch_size": 20000, "flush_interval_ms": 50 })
        );
    }

    #[test]
    fn the_view_hides_the_database_password() {
        let storage = "[storage]\nbackend = \"postgres\"\nurl = \"postgres://candled:pg-s3cret@db:5432/candles\"\n";
        let text = include_str!("../../config.toml").replace("[storage]\npath = \"data/tradingbot.db\"\n", storage);
        let mut settings = Settings::parse(&text, "config.toml").expect("valid");
        if let StorageConfig::Postgres(postgres) = &mut settings.storage {
            postgres.password = Some("env-s3cret".into());
        }
        let view = settings_view(&settings);
        // TC0: the URL without its password, the password from the environment as whether one is set.
        assert_eq!(
            view["storage"],
            json!({
                "backend": "postgres", "url": "postgres://candled:***@db:5432/candles",
                "password_env": "CANDLED_POSTGRES_PASSWORD", "password_set": true, "schema": "public", "pool_size": 8,
                "batch_size": 20000, "flush_interval_ms": 50,
            })
        );
        // TC1: neither password anywhere, nor in the settings' Debug output (what a log line could print).
        for shown in [view.to_string(), format!("{settings:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }
}
