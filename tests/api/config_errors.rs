//! A malformed config fails fast: exit code 2 and a message naming the key and the problem.

use crate::fake_exchange::{FakeConfig, FakeExchange};
use crate::helpers::{AppOptions, run_to_exit, write_config};

/// A valid config; each case breaks one thing in it.
const VALID: &str = r#"
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
"#;

fn rejected(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let (status, stderr) = run_to_exit(dir.path(), &["--config", "config.toml"]);
    assert_eq!(status.code(), Some(2), "expected exit 2 for:\n{config}\nstderr:\n{stderr}");
    assert!(!dir.path().join("data").exists(), "a rejected config must not create storage");
    stderr
}

fn assert_mentions(stderr: &str, needles: &[&str]) {
    for needle in needles {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}:\n{stderr}");
    }
}

#[test]
fn each_config_error_names_the_key_and_the_problem() {
    let cases: &[(&str, String, &[&str])] = &[
        ("toml syntax", VALID.replace("history = 10", "history = = 10"), &["line 9", "history"]),
        ("unknown key", VALID.replace("history = 10", "history = 10\nsymbol = \"X\""), &["unknown field", "symbol"]),
        ("unknown section", format!("{VALID}\n[extra]\nx = 1\n"), &["unknown field", "extra"]),
        ("unknown timeframe", VALID.replace(r#""5m"]"#, r#""7m"]"#), &["market_data.timeframes[1]", "7m"]),
        ("empty symbol", VALID.replace(r#""ETHUSDT""#, r#""""#), &["market_data.symbols[1]", "empty"]),
        ("lower-case symbol", VALID.replace("ETHUSDT", "ethusdt"), &["market_data.symbols[1]", "upper case"]),
        ("malformed symbol", VALID.replace("ETHUSDT", "ETH/USDT"), &["market_data.symbols[1]", "ETH/USDT"]),
        ("duplicate symbol", VALID.replace("ETHUSDT", "BTCUSDT"), &["market_data.symbols[1]", "twice"]),
        ("duplicate timeframe", VALID.replace(r#""5m"]"#, r#""1m"]"#), &["market_data.timeframes[1]", "twice"]),
        ("no symbols", VALID.replace(r#"["BTCUSDT", "ETHUSDT"]"#, "[]"), &["market_data.symbols", "at least one"]),
        ("history too large", VALID.replace("history = 10", "history = 1000000"), &["market_data.history", "range"]),
        ("negative history", VALID.replace("history = 10", "history = -1"), &["market_data.history", "range"]),
        ("bad bind", VALID.replace("127.0.0.1:0\"", "localhost:port\""), &["http.bind", "localhost:port"]),
        ("bad ws url", VALID.replace("ws://127.0.0.1:9", "http://127.0.0.1:9"), &["exchange.ws_url", "ws://"]),
        ("missing section", VALID.replace("[exchange]", "[exchange_]"), &["exchange"]),
        ("no shards", format!("{VALID}\n[cluster]\nshards = 0\n"), &["`cluster.shards`", "between 1 and 1024"]),
        (
            "shard past the count",
            format!("{VALID}\n[cluster]\nshard = 3\nshards = 3\n"),
            &["`cluster.shard`", "3 is out of range", "numbered from 0 to 2"],
        ),
        ("negative shard", format!("{VALID}\n[cluster]\nshard = -1\nshards = 2\n"), &["`cluster.shard`", "-1"]),
        ("unknown cluster key", format!("{VALID}\n[cluster]\nreplica = 1\n"), &["unknown field", "replica"]),
        (
            "unknown backend",
            VALID.replace("path = \"data/db.sqlite\"", "backend = \"mysql\""),
            &["storage.backend", "\"mysql\" is not a backend", "\"sqlite\" or \"postgres\""],
        ),
        (
            "postgres without url",
            VALID.replace("path = \"data/db.sqlite\"", "backend = \"postgres\""),
            &["storage.url", "is required with `backend = \"postgres\"`"],
        ),
        (
            "bad postgres url",
            VALID.replace("path = \"data/db.sqlite\"", "backend = \"postgres\"\nurl = \"postgres://u:pw@db:port/x\""),
            &["storage.url", "u:***@db:port", "not a number"],
        ),
        (
            "postgres url on sqlite",
            VALID.replace("path = \"data/db.sqlite\"", "path = \"data/db.sqlite\"\nurl = \"postgres://db/x\""),
            &["storage.url", "is a key of `backend = \"postgres\"`", "backend is \"sqlite\""],
        ),
    ];
    for (name, config, needles) in cases {
        let stderr = rejected(config);
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        assert_mentions(&stderr, needles);
        // A database password is never shown.
        assert!(!stderr.contains(":pw@"), "{name}: {stderr}");
    }
}

#[test]
fn import_refuses_a_store_that_is_not_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let config = VALID.replace("path = \"data/db.sqlite\"", "backend = \"postgres\"\nurl = \"postgres://u:pw@db/x\"");
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    std::fs::write(dir.path().join("BTCUSDT-1m-2026-01-01.csv"), "").unwrap();
    let (status, stderr) = run_to_exit(dir.path(), &["import", "BTCUSDT-1m-2026-01-01.csv"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_mentions(&stderr, &["candled import works on the SQLite backend only", "\"postgres\""]);
    assert!(!stderr.contains(":pw@") && !dir.path().join("data").exists(), "{stderr}");
}

#[test]
fn a_missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = run_to_exit(dir.path(), &["--config", "nowhere.toml"]);
    assert_eq!(status.code(), Some(2));
    assert_mentions(&stderr, &["nowhere.toml"]);
    // Without --config, ./config.toml is read.
    let (status, stderr) = run_to_exit(dir.path(), &[]);
    assert_eq!(status.code(), Some(2));
    assert_mentions(&stderr, &["config.toml"]);
}

#[test]
fn a_symbol_the_exchange_does_not_list_is_refused_at_start() {
    // Binance accepts a stream for an unknown symbol and then sends nothing: refuse it up front.
    let fake = FakeExchange::start(FakeConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let options =
        AppOptions { symbols: vec!["BTCUSDT", "NOSUCHUSDT"], timeframes: vec!["1m"], ..AppOptions::default() };
    write_config(dir.path(), &fake, &options);
    let (status, stderr) = run_to_exit(dir.path(), &["--config", "config.toml"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_mentions(&stderr, &["market_data.symbols", "not listed on the exchange: NOSUCHUSDT"]);
    assert!(!stderr.contains("BTCUSDT"), "only the unlisted symbol is named: {stderr}");
}
