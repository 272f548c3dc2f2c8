//! The fake's own faults behave as documented: checked with plain WebSocket and HTTP clients, without candled.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket, stream::MaybeTlsStream};

use super::{FakeConfig, FakeExchange, FakeStats};
use crate::helpers::wait_until;

type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// 60 exchange ms per real ms: a 1m candle closes every real second; pings every 400 ms (pongs and control messages
/// share the limit of 5 incoming messages a second).
fn fake() -> FakeExchange {
    FakeExchange::start(FakeConfig { speed: 60.0, ping_interval: Duration::from_millis(400), ..FakeConfig::default() })
}

fn connect(fake: &FakeExchange, path: &str) -> Client {
    let (client, _) = tungstenite::connect(format!("{}{path}", fake.ws_url())).expect("connect to the fake");
    if let MaybeTlsStream::Plain(tcp) = client.get_ref() {
        tcp.set_read_timeout(Some(Duration::from_millis(50))).expect("a read timeout");
    }
    client
}

/// What a client read during a period.
#[derive(Debug, Default)]
struct Received {
    kline_events: usize,
    pings: usize,
    texts: Vec<String>,
    /// The close frame's code, or `None` if the socket failed without one (a reset).
    ended: Option<Option<u16>>,
}

/// Reads everything for `period` (pings are answered by tungstenite on the next read), or until the connection ends.
fn read_for(client: &mut Client, period: Duration) -> Received {
    let mut received = Received::default();
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        match client.read() {
            Ok(Message::Text(text)) if text.as_str().contains(r#""e":"kline""#) => received.kline_events += 1,
            Ok(Message::Text(text)) => received.texts.push(text.as_str().to_owned()),
            Ok(Message::Ping(_)) => received.pings += 1,
            Ok(Message::Close(frame)) => {
                received.ended = Some(frame.map(|f| u16::from(f.code)));
                return received;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => {
                received.ended = Some(None);
                return received;
            }
        }
    }
    received
}

#[test]
fn a_zombie_connection_pings_and_acks_but_sends_no_kline_until_a_new_connection() {
    let fake = fake();
    let mut zombie = connect(&fake, "/ws/btcusdt@kline_1m");
    assert!(read_for(&mut zombie, Duration::from_millis(500)).kline_events >= 1, "healthy before the fault");
    fake.zombify_open_connections();
    // Frames already queued before the fault may still arrive.
    read_for(&mut zombie, Duration::from_millis(300));
    let pongs_before = fake.stats().ws_pongs_received;
    let silent = read_for(&mut zombie, Duration::from_secs(2));
    assert_eq!(silent.kline_events, 0, "a zombie sends no kline event");
    assert!(silent.pings >= 3, "a zombie keeps pinging: {silent:?}");
    assert_eq!(silent.ended, None, "a zombie stays open");
    zombie
        .send(Message::text(r#"{"method":"UNSUBSCRIBE","params":["btcusdt@kline_1m"],"id":1}"#))
        .expect("unsubscribe");
    zombie
        .send(Message::text(r#"{"method":"SUBSCRIBE","params":["btcusdt@kline_1m","ethusdt@kline_1m"],"id":2}"#))
        .expect("subscribe");
    let resubscribed = read_for(&mut zombie, Duration::from_millis(1500));
    assert_eq!(resubscribed.texts, [r#"{"id":1,"result":null}"#, r#"{"id":2,"result":null}"#], "acks");
    assert_eq!(resubscribed.kline_events, 0, "a resubscribe does not bring data back");
    assert!(fake.stats().ws_pongs_received > pongs_before, "the zombie reads pongs");
    let mut fresh = connect(&fake, "/ws/btcusdt@kline_1m");
    assert!(read_for(&mut fresh, Duration::from_millis(500)).kline_events >= 1, "a new connection is healthy");
    assert_eq!(fake.stats().ws_zombie_connections, 1);
}

fn get(fake: &FakeExchange, path_and_query: &str) -> (u16, Value) {
    // reqwest is built without a default TLS provider, even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::blocking::get(format!("{}{path_and_query}", fake.rest_url())).expect("GET the fake");
    let status = response.status().as_u16();
    (status, response.json().expect("a JSON body"))
}

#[test]
fn rest_faults_empty_once_rejected_symbol_and_klines_only_throttle() {
    let fake = fake();
    fake.reject_klines_for("ETHUSDT");
    let (status, body) = get(&fake, "/api/v3/klines?symbol=ETHUSDT&interval=1m&limit=5");
    assert_eq!((status, body["code"].as_i64()), (400, Some(-1121)), "{body}");
    let (status, body) = get(&fake, "/api/v3/exchangeInfo?symbol=ETHUSDT");
    assert_eq!((status, body["symbols"][0]["symbol"].as_str()), (200, Some("ETHUSDT")), "still listed: {body}");
    assert_eq!(fake.stats().rest_klines_rejected, 1);

    fake.answer_klines_empty_once("BTCUSDT", "1m");
    let (status, body) = get(&fake, "/api/v3/klines?symbol=BTCUSDT&interval=5m&limit=5");
    assert_eq!((status, body.as_array().map(Vec::len)), (200, Some(5)), "another stream is unaffected");
    let (status, body) = get(&fake, "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=5");
    assert_eq!((status, body), (200, serde_json::json!([])));
    let (status, body) = get(&fake, "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=5");
    assert_eq!((status, body.as_array().map(Vec::len)), (200, Some(5)), "only once");
    let empty = fake
        .rest_log()
        .into_iter()
        .filter(|r| r.path == "/api/v3/klines" && r.status == 200 && r.kline_open_times.is_empty())
        .count();
    assert_eq!((empty, fake.stats().rest_klines_faked_empty), (1, 1), "logged as an answer like any other");

    fake.rest_rate_limit_klines(1, Duration::from_secs(5));
    assert_eq!(get(&fake, "/api/v3/time").0, 200, "not a klines request");
    assert_eq!(get(&fake, "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=5").0, 429);
    // Past the 100 ms in which a request counts as sent before the client could read the 429.
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(get(&fake, "/api/v3/time").0, 200, "the klines-only window lets other requests through");
    assert_eq!(get(&fake, "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=5").0, 418);
    let stats = fake.stats();
    assert_eq!((stats.rest_429s, stats.rest_418s), (1, 1));
}

/// Opens `count` connections on four streams each and reads them until they end or `period` passes.
fn observe_connections(fake: &FakeExchange, count: usize, period: Duration) -> Vec<Received> {
    let path = "/stream?streams=btcusdt@kline_1m/btcusdt@kline_3m/btcusdt@kline_5m/btcusdt@kline_15m";
    let clients: Vec<Client> = (0..count).map(|_| connect(fake, path)).collect();
    let readers: Vec<_> =
        clients.into_iter().map(|mut client| std::thread::spawn(move || read_for(&mut client, period))).collect();
    readers.into_iter().map(|reader| reader.join().expect("a reader thread")).collect()
}

fn chaos_draws(stats: &FakeStats) -> [u64; 5] {
    [
        stats.ws_chaos_healthy,
        stats.ws_chaos_resets,
        stats.ws_chaos_closes,
        stats.ws_chaos_server_shutdowns,
        stats.ws_chaos_zombies,
    ]
}

#[test]
fn connection_chaos_draws_one_seeded_fault_per_new_connection_and_applies_it() {
    let fake = fake();
    let before = connect(&fake, "/ws/btcusdt@kline_1m");
    // The client's handshake can return before the server registered the connection: wait until it sends data.
    let registered = wait_until(Duration::from_secs(5), || (fake.stats().ws_data_frames_sent >= 1).then_some(()));
    assert!(registered.is_some(), "the first connection never sent data");
    fake.set_connection_chaos(Some(42));
    let outcomes = observe_connections(&fake, 12, Duration::from_secs(8));
    let stats = fake.stats();
    assert_eq!(stats.ws_chaos_draws, 12, "one draw per new connection, none for the one opened before");
    assert_eq!(chaos_draws(&stats).iter().sum::<u64>(), 12);
    assert!(chaos_draws(&stats).iter().filter(|&&n| n > 0).count() >= 3, "a mix of faults: {stats:?}");
    assert_eq!(stats.ws_abrupt_drops, stats.ws_chaos_resets);
    assert_eq!(stats.ws_server_shutdowns_sent, stats.ws_chaos_server_shutdowns);
    assert_eq!(stats.ws_fault_close_frames_sent, stats.ws_chaos_closes + stats.ws_chaos_server_shutdowns);
    assert_eq!(stats.ws_zombie_connections, stats.ws_chaos_zombies);
    let closed_1001 = outcomes.iter().filter(|o| o.ended == Some(Some(1001))).count() as u64;
    let reset = outcomes.iter().filter(|o| o.ended == Some(None)).count() as u64;
    let open = outcomes.iter().filter(|o| o.ended.is_none()).count() as u64;
    assert_eq!(closed_1001, stats.ws_chaos_closes + stats.ws_chaos_server_shutdowns, "{outcomes:?}");
    assert_eq!(reset, stats.ws_chaos_resets, "{outcomes:?}");
    assert_eq!(open, stats.ws_chaos_healthy + stats.ws_chaos_zombies, "{outcomes:?}");
    drop(before);

    // The same seed draws the same faults; turning chaos off stops the draws.
    let again = self::fake();
    again.set_connection_chaos(Some(42));
    let _held: Vec<Client> = (0..12).map(|_| connect(&again, "/ws/btcusdt@kline_1m")).collect();
    let drawn = wait_until(Duration::from_secs(5), || (again.stats().ws_chaos_draws == 12).then(|| again.stats()));
    assert_eq!(chaos_draws(&drawn.expect("12 draws")), chaos_draws(&stats));
    again.set_connection_chaos(None);
    let _calm = connect(&again, "/ws/btcusdt@kline_1m");
    let accepted = wait_until(Duration::from_secs(5), || (again.stats().ws_connections_accepted == 13).then_some(()));
    assert!(accepted.is_some());
    assert_eq!(again.stats().ws_chaos_draws, 12);
}
