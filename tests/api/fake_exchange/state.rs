//! Shared server state: exchange clock, fault switches, counters and records of what was published.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::market::Market;
use super::{FakeConfig, MalformedKind, RestRecord};

macro_rules! stats {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        #[derive(Default)]
        pub(super) struct Counters {
            $(pub(super) $name: AtomicU64,)*
        }

        /// Snapshot of everything the fake counted since it started.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct FakeStats {
            $($(#[$doc])* pub $name: u64,)*
            /// WebSocket connections open right now.
            pub ws_open_connections: usize,
            /// Number of subscribed streams of each open connection, in connection order.
            pub ws_streams_per_connection: Vec<usize>,
            /// Closed (`x:true`) events sent per stream name, duplicates included.
            pub ws_closed_events_per_stream: HashMap<String, u64>,
            /// REST request weight used in the current real-time minute.
            pub rest_used_weight_1m: u64,
        }

        impl Counters {
            fn fill(&self, stats: &mut FakeStats) {
                $(stats.$name = self.$name.load(Ordering::Relaxed);)*
            }
        }
    };
}

stats! {
    /// WebSocket handshakes completed.
    ws_connections_accepted,
    /// Handshakes refused for a bad path or stream list.
    ws_handshakes_rejected,
    /// Handshakes refused (HTTP 503) while the exchange was down.
    ws_refused_while_down,
    /// Text and binary frames sent, control responses included.
    ws_data_frames_sent,
    /// In-progress (`x:false`) kline events sent.
    ws_in_progress_events_sent,
    /// Closed (`x:true`) kline events sent, duplicates included.
    ws_closed_events_sent,
    /// Incoming messages of any kind (text, binary, ping, pong).
    ws_messages_received,
    /// SUBSCRIBE requests received (valid or not).
    ws_subscribe_messages_received,
    /// UNSUBSCRIBE requests received (valid or not).
    ws_unsubscribe_messages_received,
    /// Error responses sent to control messages.
    ws_control_errors_sent,
    /// Connections closed with 1008 for exceeding the incoming message rate.
    ws_rate_limit_closes,
    /// Server ping frames sent.
    ws_pings_sent,
    /// Pong frames received that answered an outstanding server ping.
    ws_pongs_received,
    /// Pong frames received that matched no outstanding ping.
    ws_unsolicited_pongs_received,
    /// Ping frames received from clients.
    ws_client_pings_received,
    /// Connections dropped for not answering a ping in time.
    ws_pong_deadline_closes,
    /// Connections dropped with a TCP reset (drop-after-frames, drop-now and exchange-down faults).
    ws_abrupt_drops,
    /// Connections that went silent because of a stall fault (once per connection and stall).
    ws_stalled_connections,
    /// serverShutdown events sent.
    ws_server_shutdowns_sent,
    /// Close frames sent by the close-with-code fault or after a serverShutdown grace period.
    ws_fault_close_frames_sent,
    /// Malformed frames injected.
    ws_malformed_frames_sent,
    /// Closed events re-sent immediately after the original.
    ws_duplicate_events_sent,
    /// Older closed events re-sent after a newer one.
    ws_out_of_order_events_sent,
    /// In-progress events sent for an already closed candle.
    ws_stale_in_progress_sent,
    /// Closed (`x:true`) events withheld by the drop-closed-events fault.
    ws_closed_events_withheld,
    /// Events withheld from muted streams.
    ws_muted_events_withheld,
    /// Muted streams that a client's SUBSCRIBE brought back.
    ws_streams_unmuted_by_subscribe,
    /// REST requests received.
    rest_requests,
    /// REST 429 answers.
    rest_429s,
    /// REST 418 answers.
    rest_418s,
    /// REST 503 answers (exchange down).
    rest_503s,
    /// Other REST 4xx answers (bad parameters, unknown paths).
    rest_client_errors,
    /// Kline rows served over REST.
    rest_klines_rows_served,
    /// Connections turned into zombies (pings and control answers, no data), by command or by chaos.
    ws_zombie_connections,
    /// Chaos draws, one per connection accepted while chaos was on.
    ws_chaos_draws,
    /// Chaos draws that left the connection healthy.
    ws_chaos_healthy,
    /// Chaos draws of a TCP reset after N frames.
    ws_chaos_resets,
    /// Chaos draws of a close frame 1001 after N frames.
    ws_chaos_closes,
    /// Chaos draws of a serverShutdown event after N frames.
    ws_chaos_server_shutdowns,
    /// Chaos draws of a zombie after N frames.
    ws_chaos_zombies,
    /// Klines requests answered `200 []` by the empty-once fault although the exchange has the rows.
    rest_klines_faked_empty,
    /// Klines requests answered `400 -1121` by the reject-symbol fault.
    rest_klines_rejected,
    /// Requests answered 429 because they would exceed `rest_weight_limit_per_minute` (also in `rest_429s`).
    rest_weight_limit_429s,
}

/// Reset-after-N-frames rule; `generation` tells connections that a new rule was set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DropRule {
    pub(super) generation: u64,
    pub(super) frames: u64,
}

/// REST throttling fault: the next `remaining_429` requests get 429; requests inside the Retry-After window get 418,
/// except those arriving within [`IN_FLIGHT_GRACE`] of the last 429, which were sent before the client could read it
/// and get 429 as well (without using up `remaining_429`). With `klines_only`, only `GET /api/v3/klines` requests are
/// counted and refused.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RestThrottle {
    pub(super) remaining_429: u32,
    pub(super) retry_after: Duration,
    pub(super) blocked_until: Option<Instant>,
    pub(super) last_429_at: Option<Instant>,
    pub(super) klines_only: bool,
}

/// How soon after a 429 another request may arrive and still count as sent before the client saw the 429.
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(100);

/// The fault one connection drew from the chaos generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChaosFault {
    /// Healthy for its whole life.
    Healthy,
    /// TCP reset after `after_frames` data frames.
    Reset { after_frames: u64 },
    /// Close frame 1001 after `after_frames` data frames.
    Close { after_frames: u64 },
    /// serverShutdown event (then 1001 shortly after) after `after_frames` data frames.
    ServerShutdown { after_frames: u64 },
    /// Zombie (pings and control answers only) after `after_frames` data frames.
    Zombie { after_frames: u64 },
}

impl ChaosFault {
    /// Data frames after which the fault strikes; `None` for a healthy connection.
    pub(super) fn after_frames(self) -> Option<u64> {
        match self {
            ChaosFault::Healthy => None,
            ChaosFault::Reset { after_frames }
            | ChaosFault::Close { after_frames }
            | ChaosFault::ServerShutdown { after_frames }
            | ChaosFault::Zombie { after_frames } => Some(after_frames),
        }
    }
}

/// Fewest and most data frames (inclusive) a chaos connection sends before its fault strikes.
const CHAOS_MIN_FRAMES: u64 = 30;
const CHAOS_MAX_FRAMES: u64 = 200;

/// A seeded SplitMix64 sequence: the same seed draws the same faults in the same connection order.
#[derive(Clone, Copy, Debug)]
pub(super) struct ChaosRng(u64);

impl ChaosRng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn draw(&mut self) -> ChaosFault {
        let after_frames = CHAOS_MIN_FRAMES + self.next() % (CHAOS_MAX_FRAMES - CHAOS_MIN_FRAMES + 1);
        match self.next() % 5 {
            0 => ChaosFault::Healthy,
            1 => ChaosFault::Reset { after_frames },
            2 => ChaosFault::Close { after_frames },
            3 => ChaosFault::ServerShutdown { after_frames },
            _ => ChaosFault::Zombie { after_frames },
        }
    }
}

/// Fault switches and tunables that may change while the fake runs.
#[derive(Clone, Debug)]
pub(super) struct Faults {
    pub(super) drop_after_frames: Option<DropRule>,
    pub(super) stall_until: Option<Instant>,
    pub(super) down_until: Option<Instant>,
    pub(super) duplicate_events: bool,
    /// Withhold every closed (`x:true`) event: only REST can tell the client a candle closed.
    pub(super) drop_closed_events: bool,
    /// Streams that send nothing on any connection; `true` if a client's SUBSCRIBE brings them back.
    pub(super) muted_streams: HashMap<String, bool>,
    pub(super) enforce_message_rate: bool,
    pub(super) ping_interval: Duration,
    pub(super) pong_timeout: Duration,
    pub(super) rest_throttle: RestThrottle,
    /// Klines requests still to answer `200 []`, per (symbol, interval name).
    pub(super) empty_klines: HashMap<(String, String), u32>,
    /// Symbols whose klines requests get `400 -1121` while exchangeInfo still lists them.
    pub(super) rejected_kline_symbols: HashSet<String>,
    /// Draws each new connection's fault while set.
    pub(super) connection_chaos: Option<ChaosRng>,
}

impl Faults {
    pub(super) fn is_down(&self, now: Instant) -> bool {
        self.down_until.is_some_and(|until| now < until)
    }

    pub(super) fn is_stalled(&self, now: Instant) -> bool {
        self.stall_until.is_some_and(|until| now < until)
    }
}

/// One-shot orders broadcast to every open WebSocket connection.
#[derive(Clone, Debug)]
pub(super) enum ConnCommand {
    ServerShutdown { close_after: Duration },
    Close { code: u16, reason: String },
    Malformed(MalformedKind),
    DropNow,
}

/// The exchange clock: `origin_ms + real elapsed * speed`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Clock {
    started: Instant,
    origin_ms: i64,
    speed: f64,
}

impl Clock {
    pub(super) fn now_ms(&self) -> i64 {
        self.origin_ms + (self.started.elapsed().as_secs_f64() * self.speed * 1000.0).floor() as i64
    }
}

pub(super) struct Shared {
    pub(super) config: FakeConfig,
    pub(super) market: Market,
    pub(super) clock: Clock,
    pub(super) counters: Counters,
    pub(super) commands: broadcast::Sender<ConnCommand>,
    faults: Mutex<Faults>,
    next_connection_id: AtomicU64,
    next_drop_generation: AtomicU64,
    open_connections: Mutex<HashMap<u64, usize>>,
    /// Open connections that send no data any more (see [`Shared::zombify_open_connections`]).
    zombie_connections: Mutex<HashSet<u64>>,
    closed_published: Mutex<HashMap<String, Vec<i64>>>,
    /// With `record_events`: every kline event's text sent, per stream.
    events_sent: Mutex<HashMap<String, Vec<String>>>,
    rest_log: Mutex<Vec<RestRecord>>,
    rest_weight: Mutex<(u64, u64)>,
}

/// Locks ignoring poisoning: the protected data stays consistent because no critical section panics midway.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(super) fn new(config: FakeConfig) -> Shared {
        let faults = Faults {
            drop_after_frames: None,
            stall_until: None,
            down_until: None,
            duplicate_events: false,
            drop_closed_events: false,
            muted_streams: HashMap::new(),
            enforce_message_rate: config.enforce_message_rate,
            ping_interval: config.ping_interval,
            pong_timeout: config.pong_timeout,
            rest_throttle: RestThrottle::default(),
            empty_klines: HashMap::new(),
            rejected_kline_symbols: HashSet::new(),
            connection_chaos: None,
        };
        let clock = Clock { started: Instant::now(), origin_ms: config.origin_ms, speed: config.speed };
        Shared {
            market: Market::new(&config.symbols, config.listing_ms),
            config,
            clock,
            counters: Counters::default(),
            commands: broadcast::channel(64).0,
            faults: Mutex::new(faults),
            next_connection_id: AtomicU64::new(1),
            next_drop_generation: AtomicU64::new(1),
            open_connections: Mutex::new(HashMap::new()),
            zombie_connections: Mutex::new(HashSet::new()),
            closed_published: Mutex::new(HashMap::new()),
            events_sent: Mutex::new(HashMap::new()),
            rest_log: Mutex::new(Vec::new()),
            rest_weight: Mutex::new((0, 0)),
        }
    }

    pub(super) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    pub(super) fn update_faults(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut lock(&self.faults));
    }

    pub(super) fn set_drop_after_frames(&self, frames: Option<u64>) {
        let generation = self.next_drop_generation.fetch_add(1, Ordering::Relaxed);
        self.update_faults(|faults| faults.drop_after_frames = frames.map(|frames| DropRule { generation, frames }));
    }

    /// Decides the fate of a REST request under the throttle fault: `Some((status, retry_after_secs))` to refuse.
    pub(super) fn throttle_rest(&self, now: Instant, is_klines: bool) -> Option<(u16, u64)> {
        let mut faults = lock(&self.faults);
        let throttle = &mut faults.rest_throttle;
        if throttle.klines_only && !is_klines {
            return None;
        }
        if let Some(until) = throttle.blocked_until.filter(|until| now < *until) {
            let retry_after = (until - now).as_secs_f64().ceil() as u64;
            let in_flight = throttle.last_429_at.is_some_and(|at| now < at + IN_FLIGHT_GRACE);
            return Some((if in_flight { 429 } else { 418 }, retry_after));
        }
        if throttle.remaining_429 > 0 {
            throttle.remaining_429 -= 1;
            throttle.blocked_until = Some(now + throttle.retry_after);
            throttle.last_429_at = Some(now);
            return Some((429, throttle.retry_after.as_secs_f64().ceil() as u64));
        }
        None
    }

    /// Takes one pending empty answer for (symbol, interval): `true` if this klines request must answer `[]`.
    pub(super) fn take_empty_klines(&self, symbol: &str, interval: &str) -> bool {
        let mut faults = lock(&self.faults);
        let key = (symbol.to_owned(), interval.to_owned());
        let Some(remaining) = faults.empty_klines.get_mut(&key) else {
            return false;
        };
        *remaining -= 1;
        if *remaining == 0 {
            faults.empty_klines.remove(&key);
        }
        true
    }

    /// Registers a new connection and, with chaos on, draws its fault.
    pub(super) fn register_connection(&self) -> (u64, ChaosFault) {
        let id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.open_connections).insert(id, 0);
        Self::count(&self.counters.ws_connections_accepted);
        let drawn = lock(&self.faults).connection_chaos.as_mut().map(ChaosRng::draw);
        if let Some(fault) = drawn {
            Self::count(&self.counters.ws_chaos_draws);
            Self::count(match fault {
                ChaosFault::Healthy => &self.counters.ws_chaos_healthy,
                ChaosFault::Reset { .. } => &self.counters.ws_chaos_resets,
                ChaosFault::Close { .. } => &self.counters.ws_chaos_closes,
                ChaosFault::ServerShutdown { .. } => &self.counters.ws_chaos_server_shutdowns,
                ChaosFault::Zombie { .. } => &self.counters.ws_chaos_zombies,
            });
        }
        (id, drawn.unwrap_or(ChaosFault::Healthy))
    }

    /// Starts (`Some(seed)`) or stops the chaos draws for new connections.
    pub(super) fn set_connection_chaos(&self, seed: Option<u64>) {
        self.update_faults(|faults| faults.connection_chaos = seed.map(ChaosRng));
    }

    /// Turns every open connection into a zombie; returns how many were not zombies yet.
    pub(super) fn zombify_open_connections(&self) -> usize {
        let open: Vec<u64> = lock(&self.open_connections).keys().copied().collect();
        open.into_iter().filter(|&id| self.zombify(id)).count()
    }

    /// Turns one connection into a zombie; `false` if it already was one.
    pub(super) fn zombify(&self, id: u64) -> bool {
        let new = lock(&self.zombie_connections).insert(id);
        if new {
            Self::count(&self.counters.ws_zombie_connections);
        }
        new
    }

    pub(super) fn is_zombie(&self, id: u64) -> bool {
        lock(&self.zombie_connections).contains(&id)
    }

    pub(super) fn set_connection_streams(&self, id: u64, streams: usize) {
        lock(&self.open_connections).insert(id, streams);
    }

    pub(super) fn unregister_connection(&self, id: u64) {
        lock(&self.open_connections).remove(&id);
        lock(&self.zombie_connections).remove(&id);
    }

    pub(super) fn record_closed_event(&self, stream: &str, open_time: i64) {
        Self::count(&self.counters.ws_closed_events_sent);
        lock(&self.closed_published).entry(stream.to_string()).or_default().push(open_time);
    }

    pub(super) fn record_event(&self, stream: &str, event: &str) {
        if self.config.record_events {
            lock(&self.events_sent).entry(stream.to_owned()).or_default().push(event.to_owned());
        }
    }

    pub(super) fn sent_events(&self, stream: &str) -> Vec<String> {
        lock(&self.events_sent).get(stream).cloned().unwrap_or_default()
    }

    pub(super) fn closed_published(&self, stream: &str) -> Vec<i64> {
        lock(&self.closed_published).get(stream).cloned().unwrap_or_default()
    }

    pub(super) fn record_rest(&self, record: RestRecord) {
        lock(&self.rest_log).push(record);
    }

    pub(super) fn rest_log(&self) -> Vec<RestRecord> {
        lock(&self.rest_log).clone()
    }

    /// Under [`super::FakeConfig::rest_weight_limit_per_minute`], charges `weight` to the current real-time minute
    /// if it stays within the limit (`Ok(true)`), or refuses with the seconds to the next minute (`Err`), charging
    /// nothing. Without a limit nothing is charged here (`Ok(false)`).
    pub(super) fn charge_within_weight_limit(&self, weight: u64) -> Result<bool, u64> {
        let Some(limit) = self.config.rest_weight_limit_per_minute else {
            return Ok(false);
        };
        let elapsed = self.clock.started.elapsed();
        let minute = elapsed.as_secs() / 60;
        let mut used = lock(&self.rest_weight);
        if used.0 != minute {
            *used = (minute, 0);
        }
        if used.1 + weight > limit {
            return Err(60 - elapsed.as_secs() % 60);
        }
        used.1 += weight;
        Ok(true)
    }

    /// Adds `weight` to the current real-time minute and returns the minute's total.
    pub(super) fn use_rest_weight(&self, weight: u64) -> u64 {
        let minute = self.clock.started.elapsed().as_secs() / 60;
        let mut used = lock(&self.rest_weight);
        if used.0 != minute {
            *used = (minute, 0);
        }
        used.1 += weight;
        used.1
    }

    pub(super) fn stats(&self) -> FakeStats {
        let mut stats = FakeStats::default();
        self.counters.fill(&mut stats);
        let connections = lock(&self.open_connections);
        let mut ids: Vec<_> = connections.keys().copied().collect();
        ids.sort_unstable();
        stats.ws_open_connections = ids.len();
        stats.ws_streams_per_connection = ids.iter().map(|id| connections[id]).collect();
        drop(connections);
        stats.ws_closed_events_per_stream =
            lock(&self.closed_published).iter().map(|(stream, opens)| (stream.clone(), opens.len() as u64)).collect();
        let minute = self.clock.started.elapsed().as_secs() / 60;
        let used = lock(&self.rest_weight);
        stats.rest_used_weight_1m = if used.0 == minute { used.1 } else { 0 };
        stats
    }
}
