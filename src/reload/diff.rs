//! What an edited config changes compared with the one in force: the keys that need a restart (every `exchange.*`,
//! `storage.*`, `http.*`, `metrics.*`,
//! `api.*` and `nats.*` key), whether anything that reloads live changed, and the symbols to check.

use crate::config::{PostgresSettings, Settings, StorageConfig};

/// The keys, by their `config.toml` names, that differ between `in_force` and `edited` but cannot change while
/// candled runs, in file order.
pub fn restart_only_changes(in_force: &Settings, edited: &Settings) -> Vec<&'static str> {
    let (a, b) = (&in_force.exchange, &edited.exchange);
    [
        ("exchange.ws_url", a.ws_url != b.ws_url),
        ("exchange.rest_url", a.rest_url != b.rest_url),
        ("exchange.ca_file", a.ca_file != b.ca_file),
        ("exchange.max_streams_per_connection", a.max_streams_per_connection != b.max_streams_per_connection),
        ("exchange.stall_timeout_secs", a.stall_timeout != b.stall_timeout),
        ("exchange.connect_timeout_secs", a.connect_timeout != b.connect_timeout),
        ("exchange.max_message_bytes", a.max_message_bytes != b.max_message_bytes),
        ("exchange.backfill_concurrency", a.backfill_concurrency != b.backfill_concurrency),
        ("exchange.close_grace_ms", a.close_grace != b.close_grace),
        ("exchange.stream_stale_secs", a.stream_stale_after != b.stream_stale_after),
        ("exchange.silent_replace_secs", a.silent_replace_after != b.silent_replace_after),
        ("exchange.rotate_after_secs", a.rotate_after != b.rotate_after),
        ("exchange.rotate_stagger_secs", a.rotate_stagger != b.rotate_stagger),
        ("storage.backend", in_force.storage.kind() != edited.storage.kind()),
        // The keys of one backend are compared when both configs have it: a change of backend is named once.
        ("storage.path", both(in_force, edited, |s| s.storage.sqlite_path().map(ToOwned::to_owned))),
        ("storage.url", both(in_force, edited, |s| postgres(s).map(|p| p.url.clone()))),
        ("storage.password_env", both(in_force, edited, |s| postgres(s).map(|p| p.password_env.clone()))),
        ("storage.schema", both(in_force, edited, |s| postgres(s).map(|p| p.schema.clone()))),
        ("storage.pool_size", both(in_force, edited, |s| postgres(s).map(|p| p.pool_size))),
        ("storage.batch_size", in_force.batch_size != edited.batch_size),
        ("storage.flush_interval_ms", in_force.flush_interval != edited.flush_interval),
        ("http.bind", in_force.http_bind != edited.http_bind),
        ("http.admin_token", in_force.admin_token != edited.admin_token),
        ("metrics.per_stream", in_force.metrics != edited.metrics),
        ("api.enabled", in_force.api.enabled != edited.api.enabled),
        ("api.read_through", in_force.api.read_through != edited.api.read_through),
        ("api.cache_mb", in_force.api.cache_bytes != edited.api.cache_bytes),
        ("api.max_ws_clients", in_force.api.max_ws_clients != edited.api.max_ws_clients),
        ("api.weight_per_minute", in_force.api.weight_per_minute != edited.api.weight_per_minute),
        ("nats.enabled", in_force.nats.enabled != edited.nats.enabled),
        ("nats.url", in_force.nats.url != edited.nats.url),
        ("nats.stream", in_force.nats.stream != edited.nats.stream),
        ("nats.subject_prefix", in_force.nats.subject_prefix != edited.nats.subject_prefix),
        ("nats.max_age_secs", in_force.nats.max_age != edited.nats.max_age),
        ("nats.max_bytes", in_force.nats.max_bytes != edited.nats.max_bytes),
        ("nats.duplicate_window_secs", in_force.nats.duplicate_window != edited.nats.duplicate_window),
        ("nats.in_progress", in_force.nats.in_progress != edited.nats.in_progress),
        ("nats.buffer", in_force.nats.buffer != edited.nats.buffer),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// Whether a key that `key` reads when the config has it differs while both configs have it.
fn both<T: PartialEq>(in_force: &Settings, edited: &Settings, key: impl Fn(&Settings) -> Option<T>) -> bool {
    matches!((key(in_force), key(edited)), (Some(a), Some(b)) if a != b)
}

/// The PostgreSQL keys of `[storage]`, when that is the backend.
fn postgres(settings: &Settings) -> Option<&PostgresSettings> {
    match &settings.storage {
        StorageConfig::Postgres(postgres) => Some(postgres),
        StorageConfig::Sqlite { .. } => None,
    }
}

/// `edited` with every restart-only key put back to its value in force.
pub fn keep_restart_only(edited: Settings, in_force: &Settings) -> Settings {
    Settings {
        exchange: in_force.exchange.clone(),
        storage: in_force.storage.clone(),
        batch_size: in_force.batch_size,
        flush_interval: in_force.flush_interval,
        http_bind: in_force.http_bind,
        admin_token: in_force.admin_token.clone(),
        metrics: in_force.metrics,
        api: in_force.api,
        nats: in_force.nats.clone(),
        ..edited
    }
}

/// Whether anything that reloads live differs: the streams, the history, `[indicators]`, `[supervisor]`, `[audit]`,
/// `[cluster]`.
pub fn live_changes(in_force: &Settings, edited: &Settings) -> bool {
    let (a, b) = (&in_force.supervision, &edited.supervision);
    let supervision_changed = a.tasks != b.tasks
        || a.budget != b.budget
        || a.backoff != b.backoff
        || a.run_once_timeout != b.run_once_timeout;
    in_force.streams != edited.streams
        || in_force.cluster != edited.cluster
        || in_force.history != edited.history
        || in_force.indicators != edited.indicators
        || in_force.audit != edited.audit
        || supervision_changed
}

/// The symbols of `edited` that `in_force` does not have, in config order: the ones to check against the exchange.
pub fn new_symbols(in_force: &Settings, edited: &Settings) -> Vec<String> {
    let mut symbols: Vec<String> = edited
        .streams
        .iter()
        .filter(|key| !in_force.streams.iter().any(|known| known.symbol == key.symbol))
        .map(|key| key.symbol.clone())
        .collect();
    symbols.dedup();
    symbols
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[exchange]
ws_url = "ws://127.0.0.1:9"
rest_url = "http://127.0.0.1:9"

[market_data]
symbols = ["BTCUSDT", "ETHUSDT"]
timeframes = ["1m", "5m"]
history = 10

[storage]
path = "data/db.sqlite"

[http]
bind = "127.0.0.1:0"
admin_token = "t0ken"

[audit]
interval_secs = 300
"#;

    fn settings(text: &str) -> Settings {
        Settings::parse(text, "c").expect("a valid config")
    }

    fn edited(from: &str, to: &str) -> Settings {
        assert!(BASE.contains(from), "{from}");
        settings(&BASE.replace(from, to))
    }

    #[test]
    fn restart_only_keys_are_named_and_live_changes_seen() {
        let base = settings(BASE);
        let cases: [(&str, &str, &[&str], bool); 15] = [
            // TC0: the same text: nothing.
            ("history = 10", "history = 10", &[], false),
            // TC1: a comment only.
            ("history = 10", "history = 10 # more later", &[], false),
            // TC2: storage.path: restart only.
            ("data/db.sqlite", "data/other.sqlite", &["storage.path"], false),
            // TC3: two exchange keys and http.bind, in file order.
            (
                "ws_url = \"ws://127.0.0.1:9\"\nrest_url = \"http://127.0.0.1:9\"",
                "ws_url = \"ws://127.0.0.1:10\"\nrest_url = \"http://127.0.0.1:10\"\nstall_timeout_secs = 5",
                &["exchange.ws_url", "exchange.rest_url", "exchange.stall_timeout_secs"],
                false,
            ),
            // TC4: the token, named but never shown.
            ("admin_token = \"t0ken\"", "admin_token = \"other\"", &["http.admin_token"], false),
            // TC5: a symbol added: live.
            ("\"ETHUSDT\"]", "\"ETHUSDT\", \"BNBUSDT\"]", &[], true),
            // TC6: the history: live.
            ("history = 10", "history = 20", &[], true),
            // TC7: the audit interval: live.
            ("interval_secs = 300", "interval_secs = 60", &[], true),
            // TC8: both kinds at once.
            (
                "[storage]\npath = \"data/db.sqlite\"",
                "[supervisor]\nrestart_budget = 9\n\n[storage]\npath = \"x.db\"",
                &["storage.path"],
                true,
            ),
            // TC9: the per-stream metrics: restart only.
            ("[storage]", "[metrics]\nper_stream = false\n\n[storage]", &["metrics.per_stream"], false),
            // TC10: the local Binance API: restart only.
            ("[storage]", "[api]\nweight_per_minute = 10\n\n[storage]", &["api.weight_per_minute"], false),
            // TC11: the shard count: live.
            ("[storage]", "[cluster]\nshards = 2\n\n[storage]", &[], true),
            // TC12: the shard: live.
            ("[storage]", "[cluster]\nshard = 1\nshards = 2\n\n[storage]", &[], true),
            // TC13: another backend: restart only, named once.
            (
                "path = \"data/db.sqlite\"",
                "backend = \"postgres\"\nurl = \"postgres://c@127.0.0.1/test\"",
                &["storage.backend"],
                false,
            ),
            // TC14: NATS publishing: restart only.
            ("[storage]", "[nats]\nenabled = true\nbuffer = 5\n\n[storage]", &["nats.enabled", "nats.buffer"], false),
        ];
        for (index, (from, to, refused, live)) in cases.into_iter().enumerate() {
            let edit = edited(from, to);
            assert_eq!(restart_only_changes(&base, &edit), refused, "TC{index}");
            assert_eq!(live_changes(&base, &edit), live, "TC{index}");
            // Once the refused keys are put back, only the live changes are left.
            let kept = keep_restart_only(edit, &base);
            assert!(restart_only_changes(&base, &kept).is_empty(), "TC{index}");
            assert_eq!(live_changes(&base, &kept), live, "TC{index}");
        }
    }

    #[test]
    fn every_postgres_key_is_restart_only() {
        let postgres = BASE.replace(
            "path = \"data/db.sqlite\"",
            "backend = \"postgres\"\nurl = \"postgres://c@127.0.0.1/test\"\nschema = \"a\"\npool_size = 2",
        );
        let base = settings(&postgres);
        let cases: [(&str, &str, &[&str]); 4] = [
            ("127.0.0.1/test", "127.0.0.1/other", &["storage.url"]),
            ("schema = \"a\"", "schema = \"b\"", &["storage.schema"]),
            ("pool_size = 2", "pool_size = 3", &["storage.pool_size"]),
            ("pool_size = 2", "pool_size = 2\npassword_env = \"PG_PASS\"", &["storage.password_env"]),
        ];
        for (index, (from, to, refused)) in cases.into_iter().enumerate() {
            let edit = settings(&postgres.replace(from, to));
            assert_eq!(restart_only_changes(&base, &edit), refused, "TC{index}");
            assert!(restart_only_changes(&base, &keep_restart_only(edit, &base)).is_empty(), "TC{index}");
        }
    }

    #[test]
    fn new_symbols_are_the_ones_not_in_force() {
        let base = settings(BASE);
        let cases: [(&str, &[&str]); 3] = [
            // TC0: none.
            ("[\"BTCUSDT\", \"ETHUSDT\"]", &[]),
            // TC1: one removed, one added: only the added one, once for its two timeframes.
            ("[\"BTCUSDT\", \"SOLUSDT\"]", &["SOLUSDT"]),
            // TC2: two added, in config order.
            ("[\"XRPUSDT\", \"BTCUSDT\", \"ADAUSDT\"]", &["XRPUSDT", "ADAUSDT"]),
        ];
        for (index, (symbols, want)) in cases.into_iter().enumerate() {
            let edit = edited("[\"BTCUSDT\", \"ETHUSDT\"]", symbols);
            assert_eq!(new_symbols(&base, &edit), want, "TC{index}");
        }
    }
}
