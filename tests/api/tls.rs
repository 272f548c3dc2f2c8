//! `wss://` and `https://` through rustls, on loopback, with a self-signed CA: the only proof that real users'
//! TLS connections work, since nothing here reaches the internet.

use std::time::Duration;

use crate::fake_exchange::{FakeConfig, FakeExchange};
use crate::helpers::{AppOptions, assert_closed_candles_exact, published_closed, spawn_app, stored_closed, wait_until};

#[test]
fn candles_arrive_over_wss_and_https_when_the_ca_is_trusted() {
    let fake = FakeExchange::start_tls(FakeConfig { speed: 300.0, ..FakeConfig::default() });
    assert!(fake.ws_url().starts_with("wss://") && fake.rest_url().starts_with("https://"));
    let mut app = spawn_app(
        &fake,
        AppOptions { symbols: vec!["BTCUSDT"], timeframes: vec!["1m"], history: 10, ..AppOptions::default() },
    );
    app.wait_for_log("Subscribed to BTCUSDT 1m candles", Duration::from_secs(20));
    let stored = wait_until(Duration::from_secs(30), || {
        let published = published_closed(&fake, "BTCUSDT", "1m");
        let live = fake.published_closed_open_times("btcusdt@kline_1m").len();
        (live >= 2 && published.is_subset(&stored_closed(&app.db(), "BTCUSDT", "1m"))).then_some(())
    });
    assert!(stored.is_some(), "log:\n{}", app.log_text());
    assert_closed_candles_exact(&fake, &app.db(), "BTCUSDT", "1m");
    assert_eq!(app.get("/health").0, 200);
}

#[test]
fn an_untrusted_certificate_is_refused() {
    let fake = FakeExchange::start_tls(FakeConfig { speed: 300.0, ..FakeConfig::default() });
    let mut app = spawn_app(
        &fake,
        AppOptions {
            symbols: vec!["BTCUSDT"],
            timeframes: vec!["1m"],
            history: 10,
            without_ca: true,
            ..AppOptions::default()
        },
    );
    app.wait_for_log("connect failed", Duration::from_secs(20));
    assert!(app.log_text().contains("UnknownIssuer"), "log:\n{}", app.log_text());
    assert_eq!(fake.stats().ws_connections_accepted, 0);
    let (status, health) = app.get("/health");
    assert_eq!(status, 503, "a critical connection that cannot connect is down: {health}");
}
