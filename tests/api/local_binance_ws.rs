//! candled as a local Binance, the WebSocket side: plain WebSocket clients (and python-binance's socket manager)
//! against the real binary in front of the fake exchange. Every event a local client receives equals, byte for byte,
//! what the fake sent upstream for that stream; the control messages get Binance's answers; the limits hold; streams
//! no configured pair covers are subscribed upstream on demand and released after their last client; a stalled
//! client is cut without slowing the others; the upstream connections of configured streams never change.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::stream::MaybeTlsStream;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

use crate::fake_exchange::{FakeConfig, FakeExchange};
use crate::helpers::{AppOptions, TestApp, clients_python, spawn_app, wait_until};

/// 60 exchange ms per real ms: a 1m candle closes every real second.
const SPEED: f64 = 60.0;
/// How long any awaited event or answer may take.
const PATIENCE: Duration = Duration::from_secs(10);

pub fn recording_fake() -> FakeExchange {
    FakeExchange::start(FakeConfig { speed: SPEED, record_events: true, ..FakeConfig::default() })
}

pub fn start(fake: &FakeExchange, symbols: &[&'static str], extra: &'static str) -> TestApp {
    let options =
        AppOptions { symbols: symbols.to_vec(), timeframes: vec!["1m"], history: 5, extra, ..Default::default() };
    let mut app = spawn_app(fake, options);
    for symbol in symbols {
        app.wait_for_log(&format!("Subscribed to {symbol} 1m candles"), Duration::from_secs(20));
    }
    app
}

/// A plain, blocking WebSocket client.
pub struct Client {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
}

/// What a client read.
#[derive(Debug, PartialEq)]
pub enum Read {
    Text(String),
    Closed(Option<CloseFrame>),
    /// Nothing within the timeout.
    Nothing,
}

impl Client {
    /// Connects to `path` (such as `/ws/btcusdt@kline_1m`) on `port`.
    pub fn connect(port: u16, path: &str) -> Self {
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (socket, _) = tungstenite::connect(url.as_str()).unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        Self::ready(socket)
    }

    fn ready(socket: WebSocket<MaybeTlsStream<TcpStream>>) -> Self {
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream.set_read_timeout(Some(Duration::from_millis(200))).expect("a read timeout");
        }
        Self { socket }
    }

    pub fn send(&mut self, text: &str) {
        self.socket.send(Message::text(text)).expect("send");
    }

    /// The next text frame, a close, or nothing within `timeout` (pings are answered on the way).
    pub fn read(&mut self, timeout: Duration) -> Read {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.socket.read() {
                Ok(Message::Text(text)) => return Read::Text(text.as_str().to_owned()),
                Ok(Message::Close(frame)) => return Read::Closed(frame),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Read::Closed(None);
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        Read::Nothing
    }

    /// The next text frame; panics on anything else.
    pub fn text(&mut self) -> String {
        match self.read(PATIENCE) {
            Read::Text(text) => text,
            other => panic!("expected a text frame within {PATIENCE:?}, got {other:?}"),
        }
    }

    /// Sends a control message and returns its answer, skipping the events that arrive before it.
    pub fn ask(&mut self, request: &str) -> String {
        self.send(request);
        loop {
            let text = self.text();
            if !is_event(&text) {
                return text;
            }
        }
    }

    /// The next `count` events.
    pub fn events(&mut self, count: usize) -> Vec<String> {
        (0..count).map(|_| self.text()).collect()
    }
}

/// Whether a frame is a kline event (raw or combined), not a control answer.
fn is_event(text: &str) -> bool {
    text.starts_with(r#"{"e":"kline""#) || text.starts_with(r#"{"stream":"#)
}

/// The stream a raw event belongs to, from its `s` and `k.i`.
fn stream_of(event: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(event).expect("an event is JSON");
    let (symbol, interval) = (value["s"].as_str().expect("s"), value["k"]["i"].as_str().expect("k.i"));
    format!("{}@kline_{interval}", symbol.to_ascii_lowercase())
}

/// Asserts that `received`, the events of `stream` a client got in order, are a run of consecutive events of what the
/// fake sent for it, byte for byte: none missing, none changed, none added. Returns how many.
pub fn assert_run_of_sent(fake: &FakeExchange, stream: &str, received: &[String]) -> usize {
    assert!(!received.is_empty(), "{stream}: no event received");
    let sent = fake.sent_events(stream);
    let Some(start) = sent.iter().position(|event| *event == received[0]) else {
        panic!("{stream}: the first event received was never sent by the fake: {}", received[0]);
    };
    let expected = &sent[start..(start + received.len()).min(sent.len())];
    assert_eq!(received, expected, "{stream}: the events received are not the ones the fake sent, in order");
    received.len()
}

/// Splits raw events by stream, keeping their order.
fn by_stream(events: &[String]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut streams: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for event in events {
        streams.entry(stream_of(event)).or_default().push(event.clone());
    }
    streams
}

/// The `data` of a combined frame, checking the envelope is Binance's (`{"stream":<name>,"data":<event>}`) and
/// names the event's stream.
fn unwrap_combined(frame: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(frame).expect("a combined frame is JSON");
    let stream = value["stream"].as_str().expect("a stream name").to_owned();
    let prefix = format!(r#"{{"stream":"{stream}","data":"#);
    let data = frame.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix('}')).expect("Binance's envelope");
    assert_eq!(stream_of(data), stream, "the envelope names the event's stream");
    data.to_owned()
}

#[test]
fn raw_and_combined_clients_get_every_event_byte_for_byte_as_the_fake_sent_it() {
    let fake = recording_fake();
    let app = start(&fake, &["BTCUSDT", "ETHUSDT"], "");
    let upstream = fake.stats();

    let mut raw = Client::connect(app.port, "/ws/btcusdt@kline_1m");
    let mut raw_pair = Client::connect(app.port, "/ws/btcusdt@kline_1m/ethusdt@kline_1m");
    let mut combined = Client::connect(app.port, "/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m");
    let raw_events = raw.events(25);
    let pair_events = raw_pair.events(40);
    let combined_events: Vec<String> = combined.events(40).iter().map(|frame| unwrap_combined(frame)).collect();

    let mut checked = assert_run_of_sent(&fake, "btcusdt@kline_1m", &raw_events);
    for events in [pair_events, combined_events] {
        let streams = by_stream(&events);
        assert_eq!(streams.len(), 2, "both streams arrive on one connection");
        for (stream, events) in streams {
            checked += assert_run_of_sent(&fake, &stream, &events);
        }
    }
    assert!(raw_events.iter().any(|e| e.contains(r#""x":true"#)), "closed events arrive too");

    // The configured streams' upstream is what it was: one connection, two streams, no extra SUBSCRIBE.
    let after = fake.stats();
    assert_eq!(after.ws_connections_accepted, upstream.ws_connections_accepted, "{after:?}");
    assert_eq!(after.ws_streams_per_connection, [2], "{after:?}");
    assert_eq!(after.ws_subscribe_messages_received, upstream.ws_subscribe_messages_received);
    assert!(app.metric("candled_ws_events_sent_total") >= checked as f64);
    assert_eq!(app.metric("candled_ws_clients"), 3.0);
}

/// Sends each request to `client` and collects the answers, paced under the 5-per-second limit.
fn answers(client: &mut Client, requests: &[&str]) -> Vec<String> {
    requests
        .iter()
        .map(|request| {
            let answer = client.ask(request);
            std::thread::sleep(Duration::from_millis(250));
            answer
        })
        .collect()
}

#[test]
fn control_messages_get_the_same_answers_as_from_the_exchange() {
    let fake = recording_fake();
    let app = start(&fake, &["BTCUSDT"], "");
    let requests = [
        r#"{"method":"SUBSCRIBE","params":["btcusdt@kline_1m","ethusdt@kline_1m"],"id":1}"#,
        r#"{"method":"LIST_SUBSCRIPTIONS","id":"list"}"#,
        r#"{"method":"UNSUBSCRIBE","params":["ethusdt@kline_1m"],"id":2}"#,
        r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#,
        r#"{"method":"GET_PROPERTY","params":["combined"],"id":4}"#,
        r#"{"method":"SET_PROPERTY","params":["combined",true],"id":5}"#,
        r#"{"method":"GET_PROPERTY","params":["combined"],"id":6}"#,
        r#"{"method":"SET_PROPERTY","params":["combined","yes"],"id":7}"#,
        r#"{"method":"GET_PROPERTY","params":["colour"],"id":8}"#,
        r#"{"method":"PUBLISH","id":9}"#,
        r#"{"method":"SUBSCRIBE","params":["btcusdt@depth"],"id":10}"#,
        r#"{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":-1}"#,
        r#"{"method":"LIST_SUBSCRIPTIONS""#,
    ];
    let mut local = Client::connect(app.port, "/ws");
    // Asked of another fake, so that its events do not mix with what candled's connection was sent.
    let exchange_fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });
    let mut exchange = Client::connect(exchange_fake.ws_addr().port(), "/ws");
    let local_answers = answers(&mut local, &requests);
    let parsed = |answers: &[String]| -> Vec<serde_json::Value> {
        answers.iter().map(|a| serde_json::from_str(a).expect("an answer is JSON")).collect()
    };
    let exchange_answers = answers(&mut exchange, &requests);
    assert_eq!(parsed(&local_answers), parsed(&exchange_answers), "candled answers as the exchange does");
    // Binance's exact texts (keys in its order) for the common ones.
    assert_eq!(local_answers[0], r#"{"result":null,"id":1}"#);
    assert_eq!(local_answers[1], r#"{"result":["btcusdt@kline_1m","ethusdt@kline_1m"],"id":"list"}"#);
    assert_eq!(local_answers[6], r#"{"result":true,"id":6}"#);
    assert!(local_answers[7].starts_with(r#"{"error":{"code":1,"#), "{}", local_answers[7]);
    assert!(local_answers[12].starts_with(r#"{"error":{"code":3,"msg":"Invalid JSON"#), "{}", local_answers[12]);
    // Combined now: the events arrive wrapped, as sent.
    let events: Vec<String> = (0..5).map(|_| unwrap_combined(&local.text())).collect();
    assert_run_of_sent(&fake, "btcusdt@kline_1m", &events);
}

#[test]
fn more_than_1024_streams_or_5_messages_a_second_are_refused_as_binance_does() {
    let fake = recording_fake();
    let app = start(&fake, &["BTCUSDT"], "");
    let names: Vec<String> = (0..1025).map(|n| format!("\"sym{n}usdt@kline_1m\"")).collect();

    // TC0: 1,025 streams in the URL: the handshake is refused.
    let url = format!("ws://127.0.0.1:{}/stream?streams={}", app.port, names.join("/").replace('"', ""));
    match tungstenite::connect(url.as_str()) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("1,025 streams were accepted: {:?}", other.map(|(_, response)| response.status())),
    }
    // TC1: a SUBSCRIBE taking the connection to 1,025: error 4, nothing subscribed (nor asked upstream).
    let mut client = Client::connect(app.port, "/ws");
    let request = format!(r#"{{"method":"SUBSCRIBE","params":[{}],"id":1}}"#, names.join(","));
    assert_eq!(client.ask(&request), r#"{"error":{"code":4,"msg":"Too many subscriptions"},"id":1}"#);
    assert_eq!(client.ask(r#"{"method":"LIST_SUBSCRIPTIONS","id":2}"#), r#"{"result":[],"id":2}"#);
    assert_eq!(fake.stats().ws_streams_per_connection, [1]);

    // TC2: a sixth message within a second closes the connection with 1008.
    let mut client = Client::connect(app.port, "/ws");
    for id in 0..6 {
        client.send(&format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":{id}}}"#));
    }
    let mut answered = 0;
    let closed = loop {
        match client.read(PATIENCE) {
            Read::Text(_) => answered += 1,
            Read::Closed(frame) => break frame,
            Read::Nothing => panic!("the connection stayed open after 6 messages in a second"),
        }
    };
    assert_eq!(answered, 5);
    let frame = closed.expect("a close frame");
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (1008, "Too many requests"));
}

#[test]
fn a_stream_no_configured_pair_covers_is_subscribed_upstream_on_demand_and_released_after_its_last_client() {
    let fake = recording_fake();
    let app = start(&fake, &["BTCUSDT"], "");
    let subscribes = fake.stats().ws_subscribe_messages_received;

    let mut first = Client::connect(app.port, "/ws/ethusdt@kline_1m");
    let events = first.events(10);
    assert_run_of_sent(&fake, "ethusdt@kline_1m", &events);
    let stats = fake.stats();
    assert_eq!((stats.ws_connections_accepted, stats.ws_streams_per_connection.clone()), (1, vec![2]), "{stats:?}");
    assert_eq!(stats.ws_subscribe_messages_received, subscribes + 1, "one SUBSCRIBE, on the connection with room");

    // A second client of the same stream: nothing more upstream. A client of the configured stream: nothing either.
    let mut second = Client::connect(app.port, "/ws/ethusdt@kline_1m");
    let mut configured = Client::connect(app.port, "/ws/btcusdt@kline_1m");
    assert_run_of_sent(&fake, "ethusdt@kline_1m", &second.events(5));
    assert_run_of_sent(&fake, "btcusdt@kline_1m", &configured.events(5));
    assert_eq!(fake.stats().ws_subscribe_messages_received, subscribes + 1);

    // The first leaves: still wanted. The last leaves: UNSUBSCRIBEd upstream; the configured stream stays.
    drop(first);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fake.stats().ws_streams_per_connection, [2]);
    drop(second);
    let released = wait_until(PATIENCE, || (fake.stats().ws_streams_per_connection == [1]).then_some(()));
    assert!(released.is_some(), "ethusdt@kline_1m still subscribed upstream: {:?}", fake.stats());
    let stats = fake.stats();
    assert_eq!((stats.ws_unsubscribe_messages_received, stats.ws_connections_accepted), (1, 1), "{stats:?}");
    assert_run_of_sent(&fake, "btcusdt@kline_1m", &configured.events(5));
}

#[test]
fn the_api_section_caps_the_clients_and_turns_the_streams_off() {
    let fake = recording_fake();
    // TC0: `max_ws_clients = 1`: a second client is refused with 429 until the first leaves.
    let app = start(&fake, &["BTCUSDT"], "[api]\nmax_ws_clients = 1\n");
    let mut first = Client::connect(app.port, "/ws/btcusdt@kline_1m");
    first.text();
    let url = format!("ws://127.0.0.1:{}/ws/btcusdt@kline_1m", app.port);
    match tungstenite::connect(url.as_str()) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("a second client was accepted: {:?}", other.map(|(_, response)| response.status())),
    }
    drop(first);
    let admitted = wait_until(PATIENCE, || tungstenite::connect(url.as_str()).ok());
    assert!(admitted.is_some(), "the freed slot was not given to the next client");
    drop(app);
    // TC1: `enabled = false`: the paths are not there.
    let app = start(&fake, &["BTCUSDT"], "[api]\nenabled = false\n");
    for path in ["/ws/btcusdt@kline_1m", "/ws", "/stream?streams=btcusdt@kline_1m"] {
        let url = format!("ws://127.0.0.1:{}{path}", app.port);
        match tungstenite::connect(url.as_str()) {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404, "{path}"),
            other => panic!("{path} was served: {:?}", other.map(|(_, response)| response.status())),
        }
    }
}

/// Connects to `path` with a small receive buffer and never reads: the server's writes back up at once.
fn stalled_client(port: u16, path: &str) -> WebSocket<MaybeTlsStream<TcpStream>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.set_recv_buffer_size(4096).expect("a small receive buffer");
        socket.connect(([127, 0, 0, 1], port).into()).await.expect("connect")
    });
    let stream = stream.into_std().expect("a std stream");
    stream.set_nonblocking(false).expect("blocking");
    let url = format!("ws://127.0.0.1:{port}{path}");
    let (socket, _) = tungstenite::client::client(url.as_str(), MaybeTlsStream::Plain(stream)).expect("handshake");
    socket
}

/// `count` configured symbols the fake lists (its presets and derived ones).
pub fn symbols(count: usize) -> Vec<&'static str> {
    let names: Vec<&'static str> = (0..count).map(|n| &*Box::leak(format!("SYM{n}USDT").into_boxed_str())).collect();
    names
}

#[test]
fn a_stalled_client_is_cut_and_counted_while_another_on_the_same_streams_gets_every_event() {
    let fake = FakeExchange::start(FakeConfig {
        speed: SPEED,
        record_events: true,
        update_every: Duration::from_millis(20),
        symbols: symbols(20).iter().map(|s| s.to_string()).collect(),
        ..FakeConfig::default()
    });
    let configured = symbols(20);
    let app = start(&fake, &configured, "");
    let streams: Vec<String> = configured.iter().map(|s| format!("{}@kline_1m", s.to_ascii_lowercase())).collect();
    let path = format!("/stream?streams={}", streams.join("/"));

    let mut reader = Client::connect(app.port, &path);
    let stalled = stalled_client(app.port, &path);
    // 20 streams at 50 updates a second each: the stalled one's buffer overflows within seconds.
    let mut received = Vec::new();
    let cut = wait_until(Duration::from_secs(20), || {
        received.extend((0..50).map(|_| unwrap_combined(&reader.text())));
        (app.metric("candled_hub_slow_disconnected_total") >= 1.0).then_some(())
    });
    assert!(cut.is_some(), "the stalled client was not cut; log:\n{}", app.log_text());
    received.extend((0..200).map(|_| unwrap_combined(&reader.text())));
    let mut checked = 0;
    for (stream, events) in by_stream(&received) {
        checked += assert_run_of_sent(&fake, &stream, &events);
    }
    assert_eq!(app.metric("candled_hub_slow_disconnected_total"), 1.0);
    let alone = wait_until(PATIENCE, || (app.metric("candled_hub_subscribers") == 1.0).then_some(()));
    assert!(alone.is_some(), "the stalled client is still a subscriber");
    assert!(app.log_text().contains("overflowed"), "the cut is logged with its reason");
    println!("the reader got {checked} events, every one as sent, while the stalled client was cut");
    // Reading at last, the stalled client finds what was buffered for it, then the end of the connection.
    let mut stalled = Client::ready(stalled);
    let mut buffered = 0;
    let frame = loop {
        match stalled.read(PATIENCE) {
            Read::Text(_) => buffered += 1,
            Read::Closed(frame) => break frame.expect("a close frame"),
            Read::Nothing => panic!("the server kept the stalled client's connection open after {buffered} events"),
        }
    };
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1008, "Slow consumer: send buffer overflowed"),
        "after {buffered} buffered events"
    );
}

#[test]
fn python_binance_socket_manager_receives_the_fakes_events_through_candled() {
    let Some(python) = clients_python() else { return };
    let fake = recording_fake();
    let app = start(&fake, &["BTCUSDT"], "");
    let script = r#"
import asyncio, json, sys
from binance import AsyncClient, BinanceSocketManager

async def main(port, count):
    client = AsyncClient()
    manager = BinanceSocketManager(client)
    manager.STREAM_URL = f"ws://127.0.0.1:{port}/"
    async with manager.kline_socket("BTCUSDT", interval="1m") as stream:
        for _ in range(count):
            print(json.dumps(await stream.recv(), separators=(",", ":")), flush=True)
    await client.close_connection()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"#;
    let output = std::process::Command::new(python)
        .args(["-c", script, &app.port.to_string(), "8"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "python-binance failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    // python-binance hands over parsed events: compare them parsed, in order, with what the fake sent.
    let received: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(received.len(), 8, "{stdout}");
    let sent: Vec<serde_json::Value> =
        fake.sent_events("btcusdt@kline_1m").iter().map(|e| serde_json::from_str(e).expect("JSON")).collect();
    let start = sent.iter().position(|e| *e == received[0]).expect("the first event was sent by the fake");
    assert_eq!(received, sent[start..start + 8], "python-binance got the fake's events, in order");
}

#[test]
fn config_edits_keep_streams_that_local_clients_watch_upstream_and_never_subscribe_one_twice() {
    let fake = recording_fake();
    let mut app = start(&fake, &["BTCUSDT"], "");
    let options = |symbols: &[&'static str]| AppOptions {
        symbols: symbols.to_vec(),
        timeframes: vec!["1m"],
        history: 5,
        ..Default::default()
    };
    let mut client = Client::connect(app.port, "/ws/btcusdt@kline_1m/ethusdt@kline_1m");
    let before = client.events(10);
    let subscribes = fake.stats().ws_subscribe_messages_received;
    assert_eq!(fake.stats().ws_streams_per_connection, [2]);

    // ETHUSDT, watched on demand, becomes configured: it is stored from now on, with no second SUBSCRIBE.
    app.edit_config(&fake, &options(&["BTCUSDT", "ETHUSDT"]));
    let stored = wait_until(Duration::from_secs(15), || {
        (!crate::helpers::stored_closed(&app.db(), "ETHUSDT", "1m").is_empty()).then_some(())
    });
    assert!(stored.is_some(), "ETHUSDT 1m was not stored after it was configured; log:\n{}", app.log_text());
    // BTCUSDT leaves the config while the client watches it: it stays upstream for the client.
    app.edit_config(&fake, &options(&["ETHUSDT"]));
    app.wait_for_log("BTCUSDT 1m: left the config but local subscribers watch it", PATIENCE);
    let after = client.events(60);

    let stats = fake.stats();
    assert_eq!(stats.ws_subscribe_messages_received, subscribes, "a stream was subscribed twice: {stats:?}");
    assert_eq!((stats.ws_unsubscribe_messages_received, stats.ws_connections_accepted), (0, 1), "{stats:?}");
    assert_eq!(stats.ws_streams_per_connection, [2]);
    // The client saw every event of both streams, before, across and after both edits.
    let mut all = before;
    all.extend(after);
    for (stream, events) in by_stream(&all) {
        assert_run_of_sent(&fake, &stream, &events);
    }
    // The last client leaving releases BTCUSDT, now carried for local clients only.
    drop(client);
    let released = wait_until(PATIENCE, || (fake.stats().ws_streams_per_connection == [1]).then_some(()));
    assert!(released.is_some(), "btcusdt@kline_1m still subscribed upstream: {:?}", fake.stats());
}

/// What a fan-out run measured.
struct FanOut {
    events_checked: usize,
    /// candled's CPU time over the run's wall time (1.0 is one core).
    cpu_share: f64,
    /// The p99 of the upstream-receive-to-local-send delay, as the bucket bound of candled's histogram.
    p99_delay: f64,
}

/// `clients` local clients on `streams` configured streams (client `n` on stream `n % streams`) for `run`, plus one
/// stalled client on every stream, with the fake sending an update of every stream each `update_every`. Every client
/// must get every event of its stream, byte for byte, the stalled one must be cut, and the upstream connections and
/// subscriptions must not change.
fn fan_out(clients: usize, streams: usize, update_every: Duration, run: Duration) -> FanOut {
    let configured = symbols(streams);
    let fake = FakeExchange::start(FakeConfig {
        speed: SPEED,
        record_events: true,
        update_every,
        symbols: configured.iter().map(|s| s.to_string()).collect(),
        ..FakeConfig::default()
    });
    let app = start(&fake, &configured, "[api]\nmax_ws_clients = 1024\n");
    let names: Vec<String> = configured.iter().map(|s| format!("{}@kline_1m", s.to_ascii_lowercase())).collect();
    let upstream = fake.stats();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..clients)
        .map(|n| {
            let (stop, port, stream) = (stop.clone(), app.port, names[n % streams].clone());
            std::thread::spawn(move || {
                let mut client = Client::connect(port, &format!("/ws/{stream}"));
                let mut events = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Read::Text(text) = client.read(Duration::from_millis(200)) {
                        events.push(text);
                    }
                }
                // The fake is silent now: read what is still on the way.
                while let Read::Text(text) = client.read(Duration::from_millis(1000)) {
                    events.push(text);
                }
                (stream, events)
            })
        })
        .collect();
    let stalled = stalled_client(app.port, &format!("/stream?streams={}", names.join("/")));
    let connected = wait_until(PATIENCE, || (app.metric("candled_ws_clients") == (clients + 1) as f64).then_some(()));
    assert!(connected.is_some(), "not every client connected");

    let cpu_before = cpu_ticks(app.pid());
    let started = Instant::now();
    std::thread::sleep(run);
    let cpu_share = (cpu_ticks(app.pid()) - cpu_before) as f64 / 100.0 / started.elapsed().as_secs_f64();
    let cut = wait_until(PATIENCE, || (app.metric("candled_hub_slow_disconnected_total") >= 1.0).then_some(()));
    assert!(cut.is_some(), "the stalled client was not cut");
    // Silence the exchange so that what it sent is final, then let every reader drain.
    fake.stall_for(Duration::from_secs(4));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut events_checked = 0;
    for reader in readers {
        let (stream, events) = reader.join().expect("a reader");
        let sent = fake.sent_events(&stream);
        events_checked += assert_run_of_sent(&fake, &stream, &events);
        assert_eq!(events.last(), sent.last(), "{stream}: a client missed the last events");
    }
    assert_eq!(app.metric("candled_hub_slow_disconnected_total"), 1.0, "only the stalled client was cut");
    drop(stalled);
    let after = fake.stats();
    assert_eq!(after.ws_connections_accepted, upstream.ws_connections_accepted, "{after:?}");
    assert_eq!(after.ws_subscribe_messages_received, upstream.ws_subscribe_messages_received, "{after:?}");
    assert_eq!(after.ws_streams_per_connection, upstream.ws_streams_per_connection, "{after:?}");
    FanOut { events_checked, cpu_share, p99_delay: histogram_quantile(&app, "candled_hub_send_delay_seconds", 0.99) }
}

/// User and system CPU time of a process so far, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("a stat line").1.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// The upper bound of the bucket holding the `quantile` of a Prometheus histogram on `/metrics`.
fn histogram_quantile(app: &TestApp, name: &str, quantile: f64) -> f64 {
    let (_, body) = app.get("/metrics");
    let text = body.as_str().unwrap_or_default().to_owned();
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (bound, count) = rest.split_once("\"} ")?;
            Some((bound.parse().unwrap_or(f64::INFINITY), count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |&(_, count)| count);
    assert!(total > 0.0, "no sample in {name}");
    buckets.iter().find(|&&(_, count)| count >= quantile * total).map_or(f64::INFINITY, |&(bound, _)| bound)
}

#[test]
fn fan_out_40_clients_on_10_streams_every_client_gets_every_event() {
    // 100 updates a second per stream: the stalled client overflows within a second or two.
    let figures = fan_out(40, 10, Duration::from_millis(10), Duration::from_secs(3));
    println!(
        "fan-out 40 clients / 10 streams: {} events checked, candled CPU {:.1} %, p99 receive-to-send <= {} ms",
        figures.events_checked,
        figures.cpu_share * 100.0,
        figures.p99_delay * 1000.0
    );
}

#[test]
#[ignore = "a 60 s load run: cargo test --release -p candled --test api local_binance_ws::fan_out_200 -- --ignored --nocapture"]
fn fan_out_200_clients_on_50_streams_for_60s() {
    let figures = fan_out(200, 50, Duration::from_millis(100), Duration::from_secs(60));
    println!(
        "fan-out 200 clients / 50 streams / 60 s: {} events checked, candled CPU {:.1} % of one core, p99 \
         receive-to-send <= {} ms",
        figures.events_checked,
        figures.cpu_share * 100.0,
        figures.p99_delay * 1000.0
    );
}

/// Builds `examples/strategy.rs` (in this test build's profile and target folder) and returns the executable.
fn build_strategy_example() -> std::path::PathBuf {
    let profile_dir = std::env::current_exe()
        .expect("the test executable")
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("the target folder");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "--quiet", "-p", "candled", "--example", "strategy", "--target-dir"]);
    build.arg(target_dir).current_dir(env!("CARGO_MANIFEST_DIR"));
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    // Without the variables cargo sets for a test run (some build scripts watch them), so that the build is the one
    // `cargo build` makes and nothing is rebuilt.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_tests = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_EXE_", "CARGO_CRATE_", "CARGO_PRIMARY_"]
            .iter()
            .any(|prefix| name.starts_with(prefix));
        if set_for_tests || name == "CARGO_TARGET_TMPDIR" || name == "LD_LIBRARY_PATH" {
            build.env_remove(&*name);
        }
    }
    let status = build.status().expect("run cargo build --example strategy");
    assert!(status.success(), "cargo build --example strategy failed");
    profile_dir.join("examples").join("strategy")
}

/// The simple moving average of the `period` closes ending at `at` (inclusive), from the exchange's ground truth.
fn sma(closes: &[(i64, f64)], at: usize, period: usize) -> Option<f64> {
    (at + 1 >= period).then(|| closes[at + 1 - period..=at].iter().map(|(_, close)| close).sum::<f64>() / period as f64)
}

#[test]
fn the_strategy_example_signals_the_sma_crossovers_of_the_candles_served() {
    // A 1m candle closes every 200 ms: three crossovers come within seconds.
    let fake = FakeExchange::start(FakeConfig { speed: 300.0, ..FakeConfig::default() });
    let example = build_strategy_example();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let options = AppOptions {
        symbols: vec!["BTCUSDT"],
        timeframes: vec!["1m"],
        history: 30,
        extra: "[indicators]\nsma = [3, 7]\n",
        ..Default::default()
    };
    crate::helpers::write_config(dir.path(), &fake, &options);
    let output = std::process::Command::new(&example)
        .args(["--config", "config.toml", "--symbol", "BTCUSDT", "--interval", "1m", "--fast", "sma_3"])
        .args(["--slow", "sma_7", "--signals", "3", "--seconds", "60"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the strategy example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the example failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));

    // Ground truth: the fake's closed candles, with both SMAs computed here.
    let candles: Vec<(i64, f64)> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("candle ")?.split(' ').next()?.parse::<i64>().ok())
        .collect::<Vec<_>>()
        .first()
        .map(|&first| {
            let from = first - 10 * 60_000;
            let to = fake.now_ms();
            let klines = fake.closed_candles("BTCUSDT", "1m", from, to);
            klines.iter().map(|k| (k.open_time, k.close.parse::<f64>().expect("a decimal close"))).collect()
        })
        .expect("the strategy saw no closed candle");
    let mut expected_signals = Vec::new();
    let mut previous: Option<f64> = None;
    let mut seen = 0;
    for line in stdout.lines().filter(|line| line.starts_with("candle ") && !line.ends_with("warming-up")) {
        let fields: Vec<&str> = line.split(' ').collect();
        let open_time: i64 = fields[1].parse().expect("an open time");
        let at = candles.iter().position(|(t, _)| *t == open_time).expect("a candle the exchange closed");
        let (fast, slow) = (sma(&candles, at, 3).expect("warm"), sma(&candles, at, 7).expect("warm"));
        let shown = |field: &str| fields.iter().find_map(|f| f.strip_prefix(field)?.parse::<f64>().ok());
        let (got_fast, got_slow) = (shown("fast=").expect("fast"), shown("slow=").expect("slow"));
        assert!((got_fast - fast).abs() <= 1e-9 * fast.abs() && (got_slow - slow).abs() <= 1e-9 * slow.abs(), "{line}");
        let spread = fast - slow;
        match previous {
            Some(before) if before <= 0.0 && spread > 0.0 => expected_signals.push(format!("BUY {open_time}")),
            Some(before) if before >= 0.0 && spread < 0.0 => expected_signals.push(format!("SELL {open_time}")),
            _ => {}
        }
        previous = Some(spread);
        seen += 1;
    }
    let signals: Vec<String> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("signal "))
        .map(|rest| rest.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(signals.len(), 3, "{stdout}");
    assert_eq!(signals, expected_signals, "the signals are the crossovers of the candles served");
    // Every closed candle from the first one seen on reached the strategy, none skipped.
    let opens: Vec<i64> =
        stdout.lines().filter_map(|l| l.strip_prefix("candle ")?.split(' ').next()?.parse().ok()).collect();
    assert!(opens.windows(2).all(|w| w[1] - w[0] == 60_000), "a closed candle was skipped: {opens:?}");
    println!("the strategy saw {seen} closed candles and gave {} signals, as computed here", signals.len());
}
