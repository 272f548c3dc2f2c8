//! A fake Binance spot exchange (kline WebSocket streams + REST) on loopback, with deterministic data on an
//! accelerated clock, ground truth for assertions and fault switches for reliability tests.
//!
//! Independent oracle: it shares no code with candled. Start with [`FakeExchange::start`] and [`FakeConfig`].
#![allow(dead_code, reason = "a test-support API: each test binary uses only part of it")]

mod control;
#[cfg(test)]
mod fault_checks;
mod market;
mod rest;
mod state;
mod tls;
#[cfg(test)]
mod whole_exchange_checks;
mod ws;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

#[allow(unused_imports, reason = "re-exports for test binaries, each using a different subset")]
pub use self::market::{FakeKline, Interval, Market, SymbolSpec};
#[allow(unused_imports, reason = "re-exports for test binaries, each using a different subset")]
pub use self::state::FakeStats;
use self::state::{ConnCommand, Shared};

/// 2026-01-05T00:00:00Z plus 17.345 s: deliberately not on a candle boundary.
pub const DEFAULT_ORIGIN_MS: i64 = 1_767_571_217_345;
/// 2025-01-01T00:00:00Z.
pub const DEFAULT_LISTING_MS: i64 = 1_735_689_600_000;

/// Every kline interval Binance serves, shortest first; the fake serves them all.
pub const ALL_INTERVALS: [&str; 16] =
    ["1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"];
/// 2027-02-01T00:00:00Z: a Monday, the first of a month and on the Unix-epoch 3-day grid, so every one of the 16
/// intervals closes a candle at this instant (the whole exchange's midnight burst).
pub const ALL_INTERVALS_CLOSE_MS: i64 = 1_801_440_000_000;

/// Configuration of a fake exchange.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// Exchange milliseconds per real millisecond (60.0 closes a 1m candle every real second).
    pub speed: f64,
    /// Exchange time at start.
    pub origin_ms: i64,
    /// No candle exists before the one containing this time.
    pub listing_ms: i64,
    /// Listed symbols (upper case). Presets exist for common names; others get derived parameters.
    pub symbols: Vec<String>,
    /// Real time between two in-progress updates of a stream.
    pub update_every: Duration,
    /// The in-progress updates of a connection's streams are spread over this many evenly spaced ticks per
    /// `update_every` (stream `i` of a connection updates on tick `i mod update_slots`), as Binance's streams are not
    /// in lockstep; closed events go out on every tick. 1 sends every stream's update on one tick.
    pub update_slots: u32,
    /// Real time between two server pings.
    pub ping_interval: Duration,
    /// Real time a client has to answer a ping before the connection is dropped.
    pub pong_timeout: Duration,
    /// Close with 1008 when a client sends more than `max_messages_per_second` messages within a second.
    pub enforce_message_rate: bool,
    pub max_messages_per_second: usize,
    pub max_streams_per_connection: usize,
    /// Enforce Binance's REST request-weight limit per real-time minute: a request that would exceed it gets 429
    /// with `Retry-After` (seconds to the next minute). `None` never refuses for weight.
    pub rest_weight_limit_per_minute: Option<u64>,
    /// Keep the text of every kline event sent, per stream (see [`FakeExchange::sent_events`]).
    pub record_events: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            speed: 1.0,
            origin_ms: DEFAULT_ORIGIN_MS,
            listing_ms: DEFAULT_LISTING_MS,
            symbols: ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "SHIBUSDT", "PAXGBTC"]
                .map(String::from)
                .to_vec(),
            update_every: Duration::from_millis(100),
            update_slots: 1,
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(60),
            enforce_message_rate: true,
            max_messages_per_second: 5,
            max_streams_per_connection: 1024,
            rest_weight_limit_per_minute: None,
            record_events: false,
        }
    }
}

/// Kinds of malformed frames the fake can inject into streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MalformedKind {
    /// Truncated JSON text.
    NotJson,
    /// `"o"` as a JSON number instead of a string.
    NumericOpen,
    /// `"c":"NaN"`.
    NanPrice,
    /// Negative low price.
    NegativePrice,
    /// `"h":"abc"`.
    NonNumericPrice,
    /// High below low.
    HighBelowLow,
    /// Open above the high.
    OpenOutsideRange,
    /// Close below the low.
    CloseOutsideRange,
    /// A valid event sent as a binary frame.
    Binary,
    /// `{"e":"mysteryEvent",...}`.
    UnknownEventType,
    /// A valid event padded to about 2 MiB.
    Oversized,
}

impl MalformedKind {
    pub const ALL: [MalformedKind; 11] = [
        MalformedKind::NotJson,
        MalformedKind::NumericOpen,
        MalformedKind::NanPrice,
        MalformedKind::NegativePrice,
        MalformedKind::NonNumericPrice,
        MalformedKind::HighBelowLow,
        MalformedKind::OpenOutsideRange,
        MalformedKind::CloseOutsideRange,
        MalformedKind::Binary,
        MalformedKind::UnknownEventType,
        MalformedKind::Oversized,
    ];
}

/// One REST request as the fake answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestRecord {
    pub path: String,
    pub query: String,
    pub status: u16,
    /// Open times of the kline rows served (klines requests only).
    pub kline_open_times: Vec<i64>,
    /// Open time of the in-progress row if the answer included one.
    pub in_progress_open_time: Option<i64>,
}

/// A running fake exchange; dropping it stops the servers and closes every connection.
pub struct FakeExchange {
    shared: Arc<Shared>,
    ws_addr: SocketAddr,
    rest_addr: SocketAddr,
    ca_pem: Option<String>,
    ca_pem_path: Option<PathBuf>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeExchange {
    /// Starts plain `ws://` and `http://` servers; panics if the loopback listeners cannot be bound.
    pub fn start(config: FakeConfig) -> FakeExchange {
        Self::try_start(config, false).expect("fake exchange failed to start")
    }

    /// Starts `wss://` and `https://` servers with a certificate for `localhost` and `127.0.0.1` signed by a
    /// fresh CA (see [`FakeExchange::ca_cert_pem_path`]).
    pub fn start_tls(config: FakeConfig) -> FakeExchange {
        Self::try_start(config, true).expect("fake exchange (TLS) failed to start")
    }

    pub fn try_start(config: FakeConfig, with_tls: bool) -> io::Result<FakeExchange> {
        let ws_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let rest_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        ws_listener.set_nonblocking(true)?;
        rest_listener.set_nonblocking(true)?;
        let (ws_addr, rest_addr) = (ws_listener.local_addr()?, rest_listener.local_addr()?);
        let material = if with_tls { Some(tls::generate().map_err(io::Error::other)?) } else { None };
        let acceptor = material.as_ref().map(|m| tokio_rustls::TlsAcceptor::from(m.server_config.clone()));
        let ca_pem_path = match &material {
            Some(material) => Some(write_ca_pem(&material.ca_pem)?),
            None => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-exchange")
            .enable_all()
            .build()?;
        let (ws_listener, rest_listener) = {
            let _context = runtime.enter();
            (tokio::net::TcpListener::from_std(ws_listener)?, tokio::net::TcpListener::from_std(rest_listener)?)
        };
        let shared = Arc::new(Shared::new(config));
        let (shutdown, shutdown_requested) = oneshot::channel();
        let server_shared = shared.clone();
        let thread = std::thread::Builder::new().name("fake-exchange-main".into()).spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(ws::serve(server_shared.clone(), ws_listener, acceptor.clone()));
                tokio::spawn(rest::serve(server_shared, rest_listener, acceptor));
                let _ = shutdown_requested.await;
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;
        Ok(FakeExchange {
            shared,
            ws_addr,
            rest_addr,
            ca_pem: material.map(|m| m.ca_pem),
            ca_pem_path,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    fn is_tls(&self) -> bool {
        self.ca_pem.is_some()
    }

    /// `ws://127.0.0.1:PORT` (or `wss://`); append `/ws/<stream>`, `/ws`, `/stream?streams=...` or `/stream`.
    pub fn ws_url(&self) -> String {
        format!("{}://{}", if self.is_tls() { "wss" } else { "ws" }, self.ws_addr)
    }

    /// `http://127.0.0.1:PORT` (or `https://`).
    pub fn rest_url(&self) -> String {
        format!("{}://{}", if self.is_tls() { "https" } else { "http" }, self.rest_addr)
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    pub fn rest_addr(&self) -> SocketAddr {
        self.rest_addr
    }

    /// Exchange time in milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    pub fn config(&self) -> &FakeConfig {
        &self.shared.config
    }

    /// The pure candle generator (ground truth).
    pub fn market(&self) -> &Market {
        &self.shared.market
    }

    /// Ground truth for a closed candle. Panics on an unknown symbol or interval, a misaligned or pre-listing
    /// open time.
    pub fn closed_candle(&self, symbol: &str, interval: &str, open_time: i64) -> FakeKline {
        let parsed = Interval::parse(interval).unwrap_or_else(|| panic!("unsupported interval {interval:?}"));
        self.shared
            .market
            .closed_candle(symbol, parsed, open_time)
            .unwrap_or_else(|| panic!("no candle {symbol} {interval} opening at {open_time}"))
    }

    /// Ground truth for closed candles with open time in `[from_ms, to_ms)`. Panics on an unknown interval.
    pub fn closed_candles(&self, symbol: &str, interval: &str, from_ms: i64, to_ms: i64) -> Vec<FakeKline> {
        let parsed = Interval::parse(interval).unwrap_or_else(|| panic!("unsupported interval {interval:?}"));
        self.shared.market.closed_candles(symbol, parsed, from_ms, to_ms)
    }

    /// Open times of closed events published over WebSocket for `stream` (e.g. `btcusdt@kline_1m`), in send order
    /// across all connections, duplicates included.
    pub fn published_closed_open_times(&self, stream: &str) -> Vec<i64> {
        self.shared.closed_published(stream)
    }

    /// The text of every kline event sent for `stream` (e.g. `btcusdt@kline_1m`), the event object as it went out
    /// inside the frame (the `data` of a combined frame), in send order across all connections (so have one client
    /// connection carry a stream whose events are compared). Needs
    /// [`FakeConfig::record_events`].
    pub fn sent_events(&self, stream: &str) -> Vec<String> {
        self.shared.sent_events(stream)
    }

    /// Every REST request answered so far.
    pub fn rest_log(&self) -> Vec<RestRecord> {
        self.shared.rest_log()
    }

    pub fn stats(&self) -> FakeStats {
        self.shared.stats()
    }

    /// PEM of the CA that signed the TLS certificate (`None` for a plain fake).
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Path of a file holding the CA PEM, removed when the fake drops. Panics for a plain (non-TLS) fake.
    pub fn ca_cert_pem_path(&self) -> PathBuf {
        self.ca_pem_path.clone().expect("ca_cert_pem_path needs a fake started with start_tls")
    }

    /// Resets every WebSocket connection (current and future) after it sent `frames` more data frames;
    /// `None` turns the fault off.
    pub fn drop_connections_after_frames(&self, frames: Option<u64>) {
        self.shared.set_drop_after_frames(frames);
    }

    /// Resets every open WebSocket connection now.
    pub fn drop_all_connections(&self) {
        self.broadcast(ConnCommand::DropNow);
    }

    /// Every connection goes silent (no data, no pings, nothing read) for `duration` of real time.
    pub fn stall_for(&self, duration: Duration) {
        let until = Instant::now() + duration;
        self.shared.update_faults(|faults| faults.stall_until = Some(until));
    }

    /// Sends a serverShutdown event on every open connection, then closes each with 1001 after `close_after`.
    pub fn send_server_shutdown(&self, close_after: Duration) {
        self.broadcast(ConnCommand::ServerShutdown { close_after });
    }

    /// Sends a close frame with `code` and `reason` on every open connection.
    pub fn send_close(&self, code: u16, reason: &str) {
        self.broadcast(ConnCommand::Close { code, reason: reason.to_string() });
    }

    /// Injects one malformed frame of `kind` into every open connection that has a subscription.
    pub fn inject_malformed(&self, kind: MalformedKind) {
        self.broadcast(ConnCommand::Malformed(kind));
    }

    pub fn set_ping_interval(&self, interval: Duration) {
        self.shared.update_faults(|faults| faults.ping_interval = interval);
    }

    pub fn set_pong_timeout(&self, timeout: Duration) {
        self.shared.update_faults(|faults| faults.pong_timeout = timeout);
    }

    pub fn set_enforce_message_rate(&self, enforce: bool) {
        self.shared.update_faults(|faults| faults.enforce_message_rate = enforce);
    }

    /// With duplicates on, each closed event is followed by a duplicate of itself, a stale in-progress event of
    /// the same candle and the previous candle's closed event (out of order).
    pub fn set_duplicate_events(&self, enabled: bool) {
        self.shared.update_faults(|faults| faults.duplicate_events = enabled);
    }

    /// With this on, no closed (`x:true`) event is sent: clients learn of closes only over REST.
    pub fn set_drop_closed_events(&self, enabled: bool) {
        self.shared.update_faults(|faults| faults.drop_closed_events = enabled);
    }

    /// Silences a stream (e.g. `btcusdt@kline_1m`) on every connection while the connections stay up, as a stuck
    /// exchange-side stream would. With `until_resubscribed`, a client's SUBSCRIBE to it brings it back; otherwise
    /// only [`FakeExchange::unmute_stream`] does. Nothing missed is replayed.
    pub fn mute_stream(&self, stream: &str, until_resubscribed: bool) {
        self.shared.update_faults(|faults| {
            faults.muted_streams.insert(stream.to_owned(), until_resubscribed);
        });
    }

    pub fn unmute_stream(&self, stream: &str) {
        self.shared.update_faults(|faults| {
            faults.muted_streams.remove(stream);
        });
    }

    /// The next `requests` REST requests get 429 with `Retry-After`; any request arriving before that window
    /// expires gets 418, unless it arrives within 100 ms of the 429 (sent concurrently, before the client could
    /// read the 429): such a request gets 429 too.
    pub fn rest_rate_limit(&self, requests: u32, retry_after: Duration) {
        self.set_rest_throttle(requests, retry_after, false);
    }

    /// As [`FakeExchange::rest_rate_limit`], counting and refusing `GET /api/v3/klines` requests only: the
    /// server time and exchangeInfo keep answering, so a client can ask the time just before a refused fetch.
    pub fn rest_rate_limit_klines(&self, requests: u32, retry_after: Duration) {
        self.set_rest_throttle(requests, retry_after, true);
    }

    fn set_rest_throttle(&self, requests: u32, retry_after: Duration, klines_only: bool) {
        self.shared.update_faults(|faults| {
            faults.rest_throttle.remaining_429 = requests;
            faults.rest_throttle.retry_after = retry_after;
            faults.rest_throttle.klines_only = klines_only;
        });
    }

    /// The next `GET /api/v3/klines` for (symbol, interval), e.g. `("BTCUSDT", "1m")`, answers `200 []` although
    /// the exchange has the rows; each call adds one such answer.
    pub fn answer_klines_empty_once(&self, symbol: &str, interval: &str) {
        self.shared.update_faults(|faults| {
            *faults.empty_klines.entry((symbol.to_owned(), interval.to_owned())).or_default() += 1;
        });
    }

    /// Every `GET /api/v3/klines` for `symbol` answers `400 {"code":-1121,"msg":"Invalid symbol."}`, while
    /// exchangeInfo still lists the symbol (so a start-up check passes).
    pub fn reject_klines_for(&self, symbol: &str) {
        self.shared.update_faults(|faults| {
            faults.rejected_kline_symbols.insert(symbol.to_owned());
        });
    }

    /// Every WebSocket connection open now turns into a zombie: it keeps sending pings, reading pongs and
    /// answering SUBSCRIBE/UNSUBSCRIBE, but sends no kline event (nor an injected frame) any more, whatever the
    /// client subscribes to. Only a new connection brings data back; connections opened later are healthy.
    pub fn zombify_open_connections(&self) {
        self.shared.zombify_open_connections();
    }

    /// With `Some(seed)`, each NEW WebSocket connection draws one fault from a generator seeded with `seed`:
    /// none, a TCP reset, a close frame 1001, a serverShutdown event (then 1001), or a zombie, striking after 30 to
    /// 200 data frames. `None` stops the draws (connections keep what they drew). Draws are counted in
    /// [`FakeStats`] (`ws_chaos_*`).
    pub fn set_connection_chaos(&self, seed: Option<u64>) {
        self.shared.set_connection_chaos(seed);
    }

    /// For `duration` of real time: WebSocket handshakes get 503, open connections are reset, REST answers 503.
    pub fn set_down_for(&self, duration: Duration) {
        let until = Instant::now() + duration;
        self.shared.update_faults(|faults| faults.down_until = Some(until));
    }

    fn broadcast(&self, command: ConnCommand) {
        // An error only means no connection is listening, which is fine.
        let _ = self.shared.commands.send(command);
    }
}

impl Drop for FakeExchange {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(path) = self.ca_pem_path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn write_ca_pem(pem: &str) -> io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT_FILE: AtomicU64 = AtomicU64::new(0);
    let name = format!("fake-exchange-ca-{}-{}.pem", std::process::id(), NEXT_FILE.fetch_add(1, Ordering::Relaxed));
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, pem)?;
    Ok(path)
}
