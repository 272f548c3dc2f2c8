//! SIGTERM mid-stream: the streams stop, storage is flushed, and the process exits 0 with nothing lost.

use std::time::Duration;

use crate::fake_exchange::{FakeConfig, FakeExchange};
use crate::helpers::{
    AppOptions, assert_closed_candles_exact, open_db, published_closed, spawn_app, stored_closed, wait_until,
};

#[test]
fn sigterm_flushes_everything_received_and_exits_0() {
    let fake = FakeExchange::start(FakeConfig { speed: 300.0, ..FakeConfig::default() });
    // Nothing is committed on a timer or by batch size: only the shutdown flush can store these candles.
    let mut app = spawn_app(
        &fake,
        AppOptions {
            symbols: vec!["BTCUSDT", "ETHUSDT"],
            timeframes: vec!["1m", "5m"],
            history: 10,
            storage_extra: "batch_size = 1000000\nflush_interval_ms = 3600000",
            ..AppOptions::default()
        },
    );
    app.wait_for_log("Subscribed to ETHUSDT 5m candles", Duration::from_secs(20));
    let live_closes = wait_until(Duration::from_secs(30), || {
        (fake.published_closed_open_times("btcusdt@kline_1m").len() >= 3).then_some(())
    });
    assert!(live_closes.is_some(), "no live candles; log:\n{}", app.log_text());

    // Stop the exchange from sending, then wait until candled has received every frame it sent.
    fake.stall_for(Duration::from_secs(30));
    let received_all = wait_until(Duration::from_secs(10), || {
        let sent = fake.stats().ws_data_frames_sent as f64;
        (app.metric("candled_frames_received_total") == sent).then_some(())
    });
    assert!(received_all.is_some(), "candled did not receive every frame sent");
    let committed: i64 = app.db().query_row("SELECT COUNT(*) FROM candles", [], |r| r.get(0)).unwrap();
    assert_eq!(committed, 0, "nothing should be committed before the shutdown flush");

    let db_path = app.db_path.clone();
    let (status, _dir, log) = app.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", log.join("\n"));
    assert!(log.iter().any(|l| l.contains("SIGTERM received")), "log:\n{}", log.join("\n"));
    assert!(log.iter().any(|l| l.contains("Stopped cleanly")), "log:\n{}", log.join("\n"));

    let wal = db_path.with_extension("db-wal");
    assert!(std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0, "the WAL is folded into the database at shutdown");
    let db = open_db(&db_path);
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        for timeframe in ["1m", "5m"] {
            let published = published_closed(&fake, symbol, timeframe);
            let stored = stored_closed(&db, symbol, timeframe);
            let lost: Vec<_> = published.difference(&stored).collect();
            assert!(lost.is_empty(), "{symbol} {timeframe}: received but not stored: {lost:?}");
            assert_closed_candles_exact(&fake, &db, symbol, timeframe);
        }
    }
    let in_progress: i64 = db.query_row("SELECT COUNT(*) FROM candles WHERE is_closed = 0", [], |r| r.get(0)).unwrap();
    assert_eq!(in_progress, 4, "the latest in-progress candle of each stream is kept");
}
