//! WebSocket server: handshake routing, subscriptions, kline publication, pings and fault behaviour.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{MissedTickBehavior, timeout};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async_with_config};

use super::MalformedKind;
use super::control::{self, Request as ControlRequest, RequestError, StreamName};
use super::state::{ChaosFault, ConnCommand, DropRule, Faults, Shared};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_INCOMING_MESSAGE_BYTES: usize = 1 << 20;
/// Closed events sent per subscription and tick at most; a backlog continues on the next tick, never skipped.
const MAX_CLOSED_EVENTS_PER_TICK: usize = 600;
const OVERSIZED_PADDING_BYTES: usize = 2 << 20;
/// Real time between a chaos serverShutdown event and the close frame that follows it.
const CHAOS_SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// A transport the fake can reset: plain TCP or TLS over TCP.
trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;
type Source<S> = SplitStream<WebSocketStream<S>>;

pub(super) async fn serve(shared: Arc<Shared>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                tokio::spawn(handle_socket(shared.clone(), tcp, tls.clone()));
            }
            // Typically out of file descriptors: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn handle_socket(shared: Arc<Shared>, tcp: TcpStream, tls: Option<TlsAcceptor>) {
    let _ = tcp.set_nodelay(true);
    match tls {
        None => run_connection(shared, tcp).await,
        Some(acceptor) => {
            if let Ok(Ok(stream)) = timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                run_connection(shared, stream).await;
            }
        }
    }
}

fn http_error(status: u16, reason: String) -> ErrorResponse {
    let mut response = http::Response::new(Some(reason));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    response
}

/// How a connection ends.
enum Exit {
    /// Peer went away or a write failed: just drop the socket.
    Gone,
    /// Drop without a close frame (pong deadline).
    Drop,
    /// TCP reset.
    Reset,
    /// Send a close frame, then wait briefly for the peer's.
    Close(u16, String),
}

#[allow(clippy::result_large_err, reason = "the handshake callback signature is tungstenite's")]
async fn run_connection<S: Socket>(shared: Arc<Shared>, socket: S) {
    let mut route = None;
    let callback = |request: &Request, response: Response| {
        if shared.faults().is_down(Instant::now()) {
            Shared::count(&shared.counters.ws_refused_while_down);
            return Err(http_error(503, "exchange is down".to_string()));
        }
        let uri = request.uri();
        match control::parse_route(uri.path(), uri.query(), shared.config.max_streams_per_connection) {
            Ok(parsed) => {
                route = Some(parsed);
                Ok(response)
            }
            Err(reason) => {
                Shared::count(&shared.counters.ws_handshakes_rejected);
                Err(http_error(400, reason))
            }
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_INCOMING_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_INCOMING_MESSAGE_BYTES));
    let accepted = timeout(HANDSHAKE_TIMEOUT, accept_hdr_async_with_config(socket, callback, Some(config))).await;
    let (Ok(Ok(websocket)), Some(route)) = (accepted, route) else {
        return;
    };
    let (id, chaos) = shared.register_connection();
    let mut connection = Connection::new(shared.clone(), id, route.combined, chaos);
    connection.subscribe(route.streams);
    let (mut sink, mut source) = websocket.split();
    let exit = connection.run(&mut sink, &mut source).await;
    shared.unregister_connection(id);
    finish(&shared, exit, sink, source).await;
}

async fn finish<S: Socket>(shared: &Shared, exit: Exit, mut sink: Sink<S>, mut source: Source<S>) {
    match exit {
        Exit::Gone | Exit::Drop => {}
        Exit::Reset => {
            Shared::count(&shared.counters.ws_abrupt_drops);
            if let Ok(websocket) = source.reunite(sink) {
                let _ = websocket.get_ref().tcp().set_zero_linger();
            }
        }
        Exit::Close(code, reason) => {
            let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
            if sink.send(Message::Close(Some(frame))).await.is_ok() {
                let drain = async { while let Some(Ok(_)) = source.next().await {} };
                let _ = timeout(CLOSE_DRAIN_TIMEOUT, drain).await;
            }
        }
    }
}

struct Subscription {
    stream: StreamName,
    /// Open time of the next candle whose closed event is due.
    next_closed_open: i64,
    last_closed_open: Option<i64>,
}

struct Connection {
    shared: Arc<Shared>,
    id: u64,
    combined: bool,
    subscriptions: Vec<Subscription>,
    outstanding_pings: VecDeque<(Bytes, Instant)>,
    last_ping: Instant,
    recent_messages: VecDeque<Instant>,
    drop_rule: Option<DropRule>,
    frames_under_drop_rule: u64,
    stalled: bool,
    close_after_shutdown: Option<Instant>,
    /// The fault this connection drew from the chaos generator; `Healthy` once it struck.
    chaos: ChaosFault,
    /// Data frames sent on this connection.
    frames_sent: u64,
    /// Ticks so far; with [`super::FakeConfig::update_slots`] the tick picks which streams get an in-progress update.
    ticks: u64,
}

/// Result of one step of the connection loop.
type Step = Result<(), Exit>;

impl Connection {
    fn new(shared: Arc<Shared>, id: u64, combined: bool, chaos: ChaosFault) -> Connection {
        Connection {
            shared,
            id,
            combined,
            subscriptions: Vec::new(),
            outstanding_pings: VecDeque::new(),
            last_ping: Instant::now(),
            recent_messages: VecDeque::new(),
            drop_rule: None,
            frames_under_drop_rule: 0,
            stalled: false,
            close_after_shutdown: None,
            chaos,
            frames_sent: 0,
            ticks: 0,
        }
    }

    async fn run<S: Socket>(&mut self, sink: &mut Sink<S>, source: &mut Source<S>) -> Exit {
        let mut commands = self.shared.commands.subscribe();
        let slots = self.shared.config.update_slots.max(1);
        let period = (self.shared.config.update_every / slots).max(Duration::from_millis(1));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            let stalled = self.shared.faults().is_stalled(Instant::now());
            let step = tokio::select! {
                command = commands.recv() => match command {
                    Ok(command) => self.on_command(command, sink).await,
                    Err(RecvError::Lagged(_)) => Ok(()),
                    Err(RecvError::Closed) => Err(Exit::Gone),
                },
                incoming = source.next(), if !stalled => match incoming {
                    Some(Ok(message)) => self.on_message(message, sink).await,
                    _ => Err(Exit::Gone),
                },
                _ = ticker.tick() => self.on_tick(sink).await,
            };
            if let Err(exit) = step {
                return exit;
            }
        }
    }

    fn subscribe(&mut self, streams: Vec<StreamName>) {
        let now = self.shared.clock.now_ms();
        for stream in streams {
            if self.subscriptions.iter().any(|s| s.stream.name == stream.name) {
                continue;
            }
            let first_open = self.shared.market.first_open_time(stream.interval);
            let next_closed_open = stream.interval.open_time_at(now).max(first_open);
            self.subscriptions.push(Subscription { stream, next_closed_open, last_closed_open: None });
        }
        self.shared.set_connection_streams(self.id, self.subscriptions.len());
    }

    fn sync_drop_rule(&mut self, faults: &Faults) {
        if faults.drop_after_frames != self.drop_rule {
            self.drop_rule = faults.drop_after_frames;
            self.frames_under_drop_rule = 0;
        }
    }

    fn wrap(&self, stream: &str, event: String) -> String {
        if self.combined { format!(r#"{{"stream":"{stream}","data":{event}}}"#) } else { event }
    }

    /// The frame of a kline event, recorded as sent.
    fn kline_frame(&self, stream: &str, event: String) -> String {
        self.shared.record_event(stream, &event);
        self.wrap(stream, event)
    }

    /// Queues one text or binary frame, applying the drop-after-frames fault.
    async fn send_data<S: Socket>(&mut self, sink: &mut Sink<S>, message: Message) -> Step {
        if let Some(rule) = self.drop_rule
            && self.frames_under_drop_rule >= rule.frames
        {
            return Err(Exit::Reset);
        }
        sink.feed(message).await.map_err(|_| Exit::Gone)?;
        Shared::count(&self.shared.counters.ws_data_frames_sent);
        self.frames_sent += 1;
        if let Some(rule) = self.drop_rule {
            self.frames_under_drop_rule += 1;
            if self.frames_under_drop_rule >= rule.frames {
                let _ = sink.flush().await;
                return Err(Exit::Reset);
            }
        }
        Ok(())
    }

    async fn on_tick<S: Socket>(&mut self, sink: &mut Sink<S>) -> Step {
        let now = Instant::now();
        let faults = self.shared.faults();
        if faults.is_down(now) {
            return Err(Exit::Reset);
        }
        if faults.is_stalled(now) {
            if !self.stalled {
                self.stalled = true;
                Shared::count(&self.shared.counters.ws_stalled_connections);
            }
            self.outstanding_pings.clear();
            self.last_ping = now;
            return Ok(());
        }
        self.stalled = false;
        self.sync_drop_rule(&faults);
        if let Some((_, sent)) = self.outstanding_pings.front()
            && now >= *sent + faults.pong_timeout
        {
            Shared::count(&self.shared.counters.ws_pong_deadline_closes);
            return Err(Exit::Drop);
        }
        if self.close_after_shutdown.is_some_and(|at| now >= at) {
            Shared::count(&self.shared.counters.ws_fault_close_frames_sent);
            return Err(Exit::Close(1001, "Server shutdown".to_string()));
        }
        self.strike_chaos(sink).await?;
        if now >= self.last_ping + faults.ping_interval {
            let payload = Bytes::from(self.shared.clock.now_ms().to_string());
            sink.feed(Message::Ping(payload.clone())).await.map_err(|_| Exit::Gone)?;
            Shared::count(&self.shared.counters.ws_pings_sent);
            self.outstanding_pings.push_back((payload, now));
            self.last_ping = now;
        }
        if !self.shared.is_zombie(self.id) {
            self.publish_klines(sink, &faults).await?;
        }
        sink.flush().await.map_err(|_| Exit::Gone)
    }

    /// Applies the connection's chaos fault once it has sent enough data frames.
    async fn strike_chaos<S: Socket>(&mut self, sink: &mut Sink<S>) -> Step {
        if self.chaos.after_frames().is_none_or(|after| self.frames_sent < after) {
            return Ok(());
        }
        let fault = std::mem::replace(&mut self.chaos, ChaosFault::Healthy);
        match fault {
            ChaosFault::Healthy => Ok(()),
            ChaosFault::Reset { .. } => Err(Exit::Reset),
            ChaosFault::Close { .. } => {
                Shared::count(&self.shared.counters.ws_fault_close_frames_sent);
                Err(Exit::Close(1001, "going away".to_string()))
            }
            ChaosFault::ServerShutdown { .. } => {
                self.on_command(ConnCommand::ServerShutdown { close_after: CHAOS_SHUTDOWN_GRACE }, sink).await
            }
            ChaosFault::Zombie { .. } => {
                self.shared.zombify(self.id);
                Ok(())
            }
        }
    }

    /// Sends due closed events of every stream, and in-progress updates of the streams whose slot this tick is.
    async fn publish_klines<S: Socket>(&mut self, sink: &mut Sink<S>, faults: &Faults) -> Step {
        let slots = u64::from(self.shared.config.update_slots.max(1));
        let slot = self.ticks % slots;
        self.ticks += 1;
        let duplicates = faults.duplicate_events;
        let shared = self.shared.clone();
        let market = &shared.market;
        let now_ms = shared.clock.now_ms();
        for index in 0..self.subscriptions.len() {
            let stream = self.subscriptions[index].stream.clone();
            if market.spec(&stream.symbol).is_none() {
                continue;
            }
            let interval = stream.interval;
            let muted = faults.muted_streams.contains_key(&stream.name);
            let mut budget = MAX_CLOSED_EVENTS_PER_TICK;
            while interval.next_open(self.subscriptions[index].next_closed_open) <= now_ms && budget > 0 {
                let open = self.subscriptions[index].next_closed_open;
                if muted || faults.drop_closed_events {
                    let withheld = if muted {
                        &shared.counters.ws_muted_events_withheld
                    } else {
                        &shared.counters.ws_closed_events_withheld
                    };
                    Shared::count(withheld);
                    let subscription = &mut self.subscriptions[index];
                    subscription.last_closed_open = Some(open);
                    subscription.next_closed_open = interval.next_open(open);
                    budget -= 1;
                    continue;
                }
                self.send_closed(sink, &stream, open).await?;
                if duplicates {
                    self.send_closed(sink, &stream, open).await?;
                    Shared::count(&shared.counters.ws_duplicate_events_sent);
                    let stale_at = open + interval.length_at(open) / 2;
                    if let Some(stale) = market.candle_at(&stream.symbol, stream.interval, open, stale_at) {
                        let frame = self.kline_frame(&stream.name, stale.ws_event_json(stale_at));
                        self.send_data(sink, Message::text(frame)).await?;
                        Shared::count(&shared.counters.ws_stale_in_progress_sent);
                    }
                    if interval.previous_open(open) >= market.first_open_time(interval) {
                        self.send_closed(sink, &stream, interval.previous_open(open)).await?;
                        Shared::count(&shared.counters.ws_out_of_order_events_sent);
                    }
                }
                let subscription = &mut self.subscriptions[index];
                subscription.last_closed_open = Some(open);
                subscription.next_closed_open = interval.next_open(open);
                budget -= 1;
            }
            let caught_up = interval.next_open(self.subscriptions[index].next_closed_open) > now_ms;
            let current_open = stream.interval.open_time_at(now_ms);
            if muted {
                Shared::count(&shared.counters.ws_muted_events_withheld);
                continue;
            }
            let slot_due = index as u64 % slots == slot;
            if caught_up
                && slot_due
                && let Some(kline) = market.candle_at(&stream.symbol, stream.interval, current_open, now_ms)
            {
                let frame = self.kline_frame(&stream.name, kline.ws_event_json(now_ms));
                self.send_data(sink, Message::text(frame)).await?;
                Shared::count(&shared.counters.ws_in_progress_events_sent);
            }
        }
        Ok(())
    }

    async fn send_closed<S: Socket>(&mut self, sink: &mut Sink<S>, stream: &StreamName, open: i64) -> Step {
        let Some(kline) = self.shared.market.closed_candle(&stream.symbol, stream.interval, open) else {
            return Ok(());
        };
        let frame = self.kline_frame(&stream.name, kline.ws_event_json(kline.close_time + 2));
        self.send_data(sink, Message::text(frame)).await?;
        self.shared.record_closed_event(&stream.name, open);
        Ok(())
    }

    async fn on_message<S: Socket>(&mut self, message: Message, sink: &mut Sink<S>) -> Step {
        if matches!(message, Message::Close(_) | Message::Frame(_)) {
            return Ok(());
        }
        let shared = self.shared.clone();
        let counters = &shared.counters;
        Shared::count(&counters.ws_messages_received);
        let now = Instant::now();
        let faults = self.shared.faults();
        self.recent_messages.push_back(now);
        while self.recent_messages.front().is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(1)) {
            self.recent_messages.pop_front();
        }
        if faults.enforce_message_rate && self.recent_messages.len() > self.shared.config.max_messages_per_second {
            Shared::count(&counters.ws_rate_limit_closes);
            return Err(Exit::Close(1008, "Too many requests".to_string()));
        }
        self.sync_drop_rule(&faults);
        match message {
            Message::Text(text) => self.on_control(text.as_str(), sink).await,
            Message::Binary(bytes) => match std::str::from_utf8(&bytes) {
                Ok(text) => self.on_control(text, sink).await,
                Err(_) => {
                    let error = RequestError { code: 3, msg: "Invalid JSON: binary frame is not UTF-8".to_string() };
                    self.reply(sink, control::error_response(&Value::Null, &error)).await
                }
            },
            Message::Ping(_) => {
                Shared::count(&counters.ws_client_pings_received);
                Ok(())
            }
            Message::Pong(payload) => {
                match self.outstanding_pings.iter().position(|(sent, _)| *sent == payload) {
                    Some(position) => {
                        self.outstanding_pings.drain(..=position);
                        Shared::count(&counters.ws_pongs_received);
                    }
                    None => Shared::count(&counters.ws_unsolicited_pongs_received),
                }
                Ok(())
            }
            Message::Close(_) | Message::Frame(_) => Ok(()),
        }
    }

    async fn reply<S: Socket>(&mut self, sink: &mut Sink<S>, text: String) -> Step {
        self.send_data(sink, Message::text(text)).await?;
        sink.flush().await.map_err(|_| Exit::Gone)
    }

    async fn on_control<S: Socket>(&mut self, text: &str, sink: &mut Sink<S>) -> Step {
        let shared = self.shared.clone();
        let counters = &shared.counters;
        match control::method_of(text).as_deref() {
            Some("SUBSCRIBE") => Shared::count(&counters.ws_subscribe_messages_received),
            Some("UNSUBSCRIBE") => Shared::count(&counters.ws_unsubscribe_messages_received),
            _ => {}
        }
        let (id, request) = control::parse_request(text);
        let answer = match request.and_then(|request| self.apply(request)) {
            Ok(result) => control::result_response(&id, result),
            Err(error) => {
                Shared::count(&counters.ws_control_errors_sent);
                control::error_response(&id, &error)
            }
        };
        self.reply(sink, answer).await
    }

    fn apply(&mut self, request: ControlRequest) -> Result<Value, RequestError> {
        match request {
            ControlRequest::Subscribe(streams) => {
                let new = streams
                    .iter()
                    .filter(|stream| !self.subscriptions.iter().any(|s| s.stream.name == stream.name))
                    .count();
                if self.subscriptions.len() + new > self.shared.config.max_streams_per_connection {
                    return Err(RequestError { code: 4, msg: "Too many subscriptions".to_string() });
                }
                let muted = self.shared.faults().muted_streams;
                let unmuted = streams.iter().filter(|stream| muted.get(&stream.name) == Some(&true));
                for stream in unmuted.map(|stream| stream.name.clone()).collect::<Vec<_>>() {
                    self.shared.update_faults(|faults| {
                        faults.muted_streams.remove(&stream);
                    });
                    Shared::count(&self.shared.counters.ws_streams_unmuted_by_subscribe);
                }
                self.subscribe(streams);
                Ok(Value::Null)
            }
            ControlRequest::Unsubscribe(streams) => {
                self.subscriptions.retain(|s| !streams.iter().any(|stream| stream.name == s.stream.name));
                self.shared.set_connection_streams(self.id, self.subscriptions.len());
                Ok(Value::Null)
            }
            ControlRequest::ListSubscriptions => {
                Ok(Value::from(self.subscriptions.iter().map(|s| s.stream.name.clone()).collect::<Vec<_>>()))
            }
            ControlRequest::SetCombined(combined) => {
                self.combined = combined;
                Ok(Value::Null)
            }
            ControlRequest::GetCombined => Ok(Value::Bool(self.combined)),
        }
    }

    async fn on_command<S: Socket>(&mut self, command: ConnCommand, sink: &mut Sink<S>) -> Step {
        match command {
            ConnCommand::DropNow => Err(Exit::Reset),
            ConnCommand::Close { code, reason } => {
                Shared::count(&self.shared.counters.ws_fault_close_frames_sent);
                Err(Exit::Close(code, reason))
            }
            ConnCommand::ServerShutdown { close_after } if self.shared.is_zombie(self.id) => {
                self.close_after_shutdown = Some(Instant::now() + close_after);
                Ok(())
            }
            ConnCommand::ServerShutdown { close_after } => {
                let event = format!(r#"{{"e":"serverShutdown","E":{}}}"#, self.shared.clock.now_ms());
                let frame = self.wrap("!serverShutdown", event);
                self.reply(sink, frame).await?;
                Shared::count(&self.shared.counters.ws_server_shutdowns_sent);
                self.close_after_shutdown = Some(Instant::now() + close_after);
                Ok(())
            }
            ConnCommand::Malformed(_) if self.shared.is_zombie(self.id) => Ok(()),
            ConnCommand::Malformed(kind) => {
                let Some(message) = self.malformed_message(kind) else {
                    return Ok(());
                };
                self.send_data(sink, message).await?;
                Shared::count(&self.shared.counters.ws_malformed_frames_sent);
                sink.flush().await.map_err(|_| Exit::Gone)
            }
        }
    }

    /// A corrupted copy of the most recent closed event of the first live subscription.
    fn malformed_message(&self, kind: MalformedKind) -> Option<Message> {
        let market = &self.shared.market;
        let subscription = self.subscriptions.iter().find(|s| market.spec(&s.stream.symbol).is_some())?;
        let stream = &subscription.stream;
        let open = subscription
            .last_closed_open
            .unwrap_or_else(|| stream.interval.previous_open(stream.interval.open_time_at(self.shared.clock.now_ms())));
        let mut kline = market.closed_candle(&stream.symbol, stream.interval, open)?;
        let event_time = kline.close_time + 2;
        let decimal = |text: &str, factor: f64| format!("{:.8}", text.parse::<f64>().unwrap_or(1.0) * factor);
        let event = match kind {
            MalformedKind::NotJson => {
                let full = kline.ws_event_json(event_time);
                full[..full.len() / 2].to_string()
            }
            MalformedKind::NumericOpen => kline.ws_event_json(event_time).replacen(
                &format!(r#""o":"{}""#, kline.open),
                &format!(r#""o":{}"#, kline.open),
                1,
            ),
            MalformedKind::NanPrice => {
                kline.close = "NaN".to_string();
                kline.ws_event_json(event_time)
            }
            MalformedKind::NegativePrice => {
                kline.low = format!("-{}", kline.low);
                kline.ws_event_json(event_time)
            }
            MalformedKind::NonNumericPrice => {
                kline.high = "abc".to_string();
                kline.ws_event_json(event_time)
            }
            MalformedKind::HighBelowLow => {
                kline.high = decimal(&kline.low, 0.5);
                kline.ws_event_json(event_time)
            }
            MalformedKind::OpenOutsideRange => {
                kline.open = decimal(&kline.high, 1.5);
                kline.ws_event_json(event_time)
            }
            MalformedKind::CloseOutsideRange => {
                kline.close = decimal(&kline.low, 0.5);
                kline.ws_event_json(event_time)
            }
            MalformedKind::Binary => {
                let frame = self.wrap(&stream.name, kline.ws_event_json(event_time));
                return Some(Message::Binary(Bytes::from(frame)));
            }
            MalformedKind::UnknownEventType => {
                format!(r#"{{"e":"mysteryEvent","E":{event_time},"s":"{}"}}"#, kline.symbol)
            }
            MalformedKind::Oversized => format!(
                r#"{{"e":"kline","E":{event_time},"s":"{}","k":{},"pad":"{}"}}"#,
                kline.symbol,
                kline.ws_kline_json(),
                "x".repeat(OVERSIZED_PADDING_BYTES)
            ),
        };
        Some(Message::text(self.wrap(&stream.name, event)))
    }
}
