//! Start-up against an exchange that does not answer or does not list the symbols: HTTP is up first, the symbol
//! check is bounded in time and in requests, and its error stays short.

use std::time::{Duration, Instant};

use crate::fake_exchange::{FakeConfig, FakeExchange};
use crate::helpers::{AppOptions, run_to_exit, spawn_app, spawn_in, wait_until, write_config};

/// `count` distinct upper-case symbols starting with `prefix`; leaked because the app options take `&'static str`.
fn many_symbols(prefix: &str, count: usize) -> Vec<&'static str> {
    (0..count).map(|i| &*Box::leak(format!("{prefix}{i:04}USDT").into_boxed_str())).collect()
}

/// The `exchangeInfo` requests the fake answered, by query.
fn exchange_info_queries(fake: &FakeExchange) -> Vec<String> {
    fake.rest_log().into_iter().filter(|r| r.path == "/api/v3/exchangeInfo").map(|r| r.query).collect()
}

#[test]
fn http_is_up_while_a_silent_exchange_is_checked_and_the_app_starts_anyway() {
    let fake = FakeExchange::start(FakeConfig::default());
    // Accepts TCP (the kernel completes the handshake into the backlog) but never reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a silent REST port");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let options =
        AppOptions { symbols: vec!["BTCUSDT", "ETHUSDT", "BNBUSDT"], timeframes: vec!["1m"], ..Default::default() };
    let config = write_config(dir.path(), &fake, &options);
    let text = std::fs::read_to_string(&config).unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    std::fs::write(&config, text.replace(&fake.rest_url(), &silent_url)).unwrap();

    let started = Instant::now();
    let mut app = spawn_in(dir);
    let listening_after = started.elapsed();
    let (status, body) = app.get("/health");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "starting", "{body}");
    assert_eq!(body["detail"], "checking 3 symbols against the exchange", "{body}");
    assert!(listening_after < Duration::from_secs(4), "HTTP listened only after {listening_after:?}");

    app.wait_for_log("could not check the symbols against the exchange", Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(10), "the check took {:?}", started.elapsed());
    let running = wait_until(Duration::from_secs(5), || {
        let (_, body) = app.try_get("/health").ok()?;
        (body["status"] != "starting").then_some(body)
    });
    assert!(running.is_some(), "still starting; log:\n{}", app.log_text());
    let (status, _dir, log) = app.terminate();
    assert!(status.success(), "exit {status:?}; log:\n{}", log.join("\n"));
}

#[test]
fn thousands_of_unlisted_symbols_exit_2_with_a_short_message() {
    let fake = FakeExchange::start(FakeConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = vec!["BTCUSDT"];
    symbols.extend(many_symbols("NL", 5000));
    write_config(dir.path(), &fake, &AppOptions { symbols, timeframes: vec!["1m"], ..Default::default() });
    let (status, stderr) = run_to_exit(dir.path(), &["--config", "config.toml"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    let error = stderr.lines().find(|line| line.starts_with("error: ")).expect("an error line");
    assert!(error.len() < 300, "{} characters: {error}", error.len());
    assert!(
        error.contains("`market_data.symbols`: 5000 symbols are not listed on the exchange: NL0000USDT, "),
        "{error}"
    );
    assert!(error.ends_with("NL0009USDT and 4990 more"), "{error}");
    // One request for the whole list: the exchange's full listing, compared locally.
    assert_eq!(exchange_info_queries(&fake), [""]);
}

#[test]
fn thousands_of_listed_symbols_are_checked_with_one_request() {
    let symbols = many_symbols("LS", 3000);
    let fake = FakeExchange::start(FakeConfig {
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        ..FakeConfig::default()
    });
    let started = Instant::now();
    let mut app = spawn_app(&fake, AppOptions { symbols, timeframes: vec!["1m"], ..Default::default() });
    app.wait_for_log("All 3000 symbol(s) are listed on the exchange", Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(10), "the check took {:?}", started.elapsed());
    assert_eq!(exchange_info_queries(&fake), [""]);
}

#[test]
fn a_few_symbols_are_asked_by_name() {
    let fake = FakeExchange::start(FakeConfig::default());
    let mut app = spawn_app(
        &fake,
        AppOptions { symbols: vec!["BTCUSDT", "ETHUSDT"], timeframes: vec!["1m"], ..Default::default() },
    );
    app.wait_for_log("All 2 symbol(s) are listed on the exchange", Duration::from_secs(10));
    let (status, body) = app.get("/health");
    assert_ne!(body["status"], "starting", "{status} {body}");
    assert_eq!(exchange_info_queries(&fake), ["symbols=%5B%22BTCUSDT%22%2C%22ETHUSDT%22%5D"]);
}

#[test]
fn a_name_list_the_exchange_rejects_is_compared_with_the_full_listing() {
    // Binance answers `symbols=[...]` with -1121 when any name in it is unknown: one more request, not one per name.
    let fake = FakeExchange::start(FakeConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let options =
        AppOptions { symbols: vec!["BTCUSDT", "NOSUCHUSDT", "ETHUSDT"], timeframes: vec!["1m"], ..Default::default() };
    write_config(dir.path(), &fake, &options);
    let (status, stderr) = run_to_exit(dir.path(), &["--config", "config.toml"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("1 symbol is not listed on the exchange: NOSUCHUSDT\n"), "{stderr}");
    let queries = exchange_info_queries(&fake);
    assert_eq!(queries.len(), 2, "{queries:?}");
    assert!(queries[0].starts_with("symbols="), "{queries:?}");
    assert_eq!(queries[1], "", "{queries:?}");
}
