//! The connection actor: one WebSocket connection carrying up to 1024 kline streams. It parses every frame once,
//! routes each kline to its subscription actor, and on any failure stops so that supervision reconnects it with
//! back-off. Streams are added (a paced SUBSCRIBE) and removed (UNSUBSCRIBE) while it runs. tungstenite answers
//! server pings on the next read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::io::{SinkWrite, WriteHandler};
use actix::prelude::*;
use futures_util::StreamExt;
use futures_util::stream::SplitSink;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::actors::MAILBOX_CAPACITY;
use crate::actors::Mailbox;
use crate::actors::messages::{Retire, StreamSilent};
use crate::actors::subscription::{KlineUpdate, StreamLive, SubscriptionActor};
use crate::domain::{
    Control, ControlQueue, Frame, Handover, HandoverFailed, HandoverKind, RateBudget, RejectReason, Routed, Router,
    SilenceStep, StreamKey, route_frame,
};
use crate::error_chain;
use crate::hub::{Hub, UpstreamEvent};
use crate::metrics::Metrics;
use crate::tasks::{RestartTracker, TaskState, TaskStats};

/// Close the connection and stay down (shutdown).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Stop;

/// The subscription of `key` was restarted: tell the new one it is live (if it is), so that it learns where to
/// send its requests and repairs what it missed.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Reannounce {
    pub key: StreamKey,
}

/// Carry these streams too: they are SUBSCRIBEd (paced) on the open socket, or named when it next connects. A stream
/// already carried is only routed anew (no SUBSCRIBE): to its subscription when a configured stream takes over one
/// that only local subscribers watched, or to the hub alone when it is the other way round.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddStreams(pub Vec<RoutedStream>);

/// Stop carrying these streams: they are UNSUBSCRIBEd, and their events no longer routed.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RemoveStreams(pub Vec<StreamKey>);

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;
type WsSink = SplitSink<WsStream, Message>;

/// How a connection talks to the exchange.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Base URL such as `wss://stream.binance.com:9443`; `/stream?streams=...` is appended.
    pub ws_base: String,
    pub tls: Arc<rustls::ClientConfig>,
    /// A connection that delivers no frame (data or ping) for this long is closed and reopened.
    pub stall_timeout: Duration,
    /// Frames larger than this close the connection (a kline event is about 1 KB).
    pub max_message_size: usize,
    /// Streams named in the connect URL, and in each SUBSCRIBE message after it.
    pub streams_per_message: usize,
    /// The gap between two control messages: Binance allows 5 incoming messages per second per connection.
    pub control_interval: Duration,
    pub connect_timeout: Duration,
    /// Binance cuts every connection at 24 h: a new one is made, and the old one dropped, before that.
    pub rotate_after: Duration,
    /// How much later each further connection rotates, so that they do not all rotate together.
    pub rotate_stagger: Duration,
    /// Connection attempts, shared by every connection: Binance allows 300 per 5 minutes per IP.
    pub connect_budget: Arc<Mutex<RateBudget>>,
    /// Where every kline event goes too, as received, for local subscribers.
    pub hub: Hub,
}

/// One open WebSocket: its reader, its writer, and its own control messages (the 5-per-second limit is per
/// connection).
struct Socket {
    reader: SpawnHandle,
    writer: SinkWrite<Message, WsSink>,
    /// Its SUBSCRIBE/UNSUBSCRIBE messages, paced and awaiting their acks.
    controls: ControlQueue<StreamKey>,
}

impl Socket {
    fn close(mut self, ctx: &mut Context<ConnectionActor>) {
        ctx.cancel_future(self.reader);
        self.writer.close();
    }
}

/// Which socket a handshake is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The connection's first socket, or the one after a reconnect.
    Primary,
    /// A new socket made before the old one is broken: a rotation ahead of the 24 h cut, or the replacement of
    /// a zombie (a socket that answers pings but delivers no data).
    Successor,
}

/// A stream carried by a connection, and where its events go: its subscription (a configured stream), and the hub.
pub struct RoutedStream {
    pub key: StreamKey,
    /// `None` for a stream carried for local subscribers only: its events go to the hub alone.
    pub subscription: Option<Mailbox<SubscriptionActor>>,
}

/// How long the same kind of malformed frame is not logged again.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How long to wait before trying a failed rotation again.
const ROTATION_RETRY: Duration = Duration::from_secs(60);
/// How often the stall watchdog looks.
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(1);

pub struct ConnectionActor {
    name: String,
    settings: ConnectionSettings,
    streams: Vec<RoutedStream>,
    /// Symbol and timeframe → index into `streams`: routing without formatting a string per frame.
    routes: Router,
    /// The socket carrying the streams.
    current: Option<Socket>,
    /// During a rotation: the new socket, subscribing to every stream while `current` still delivers.
    successor: Option<Socket>,
    next_request_id: i64,
    last_frame: Instant,
    last_reject_log: HashMap<RejectReason, Instant>,
    reconnect_now: bool,
    /// The successor being made, if any, and why.
    handover: Handover,
    stopping: bool,
    stats: Arc<TaskStats>,
    restarts: RestartTracker,
    metrics: Metrics,
}

impl ConnectionActor {
    pub fn new(
        name: String,
        settings: ConnectionSettings,
        streams: Vec<RoutedStream>,
        stats: Arc<TaskStats>,
        restarts: RestartTracker,
        metrics: Metrics,
    ) -> Self {
        let routes = Router::new(streams.iter().map(|s| &s.key));
        Self {
            name,
            settings,
            streams,
            routes,
            current: None,
            successor: None,
            next_request_id: 1,
            last_frame: Instant::now(),
            last_reject_log: HashMap::new(),
            reconnect_now: false,
            handover: Handover::default(),
            stopping: false,
            stats,
            restarts,
            metrics,
        }
    }

    /// The connect URL, a combined-stream URL naming the first chunk of streams (the rest are SUBSCRIBEd), and the
    /// streams it names.
    fn connect_url(&self) -> (String, Vec<StreamKey>) {
        let first: Vec<StreamKey> =
            self.streams.iter().take(self.settings.streams_per_message.max(1)).map(|s| s.key.clone()).collect();
        let names: Vec<String> = first.iter().map(StreamKey::stream_name).collect();
        (format!("{}/stream?streams={}", self.settings.ws_base.trim_end_matches('/'), names.join("/")), first)
    }

    fn reroute(&mut self) {
        self.routes = Router::new(self.streams.iter().map(|s| &s.key));
    }

    /// The sockets open now: the current one, and a successor being made.
    fn sockets(&mut self) -> impl Iterator<Item = &mut Socket> {
        [&mut self.current, &mut self.successor].into_iter().flatten()
    }

    fn connect(&mut self, role: Role, ctx: &mut Context<Self>) {
        let verdict =
            self.settings.connect_budget.lock().unwrap_or_else(|e| e.into_inner()).try_spend(Instant::now(), 1);
        if let Err(wait) = verdict {
            log::warn!("{}: connection budget spent, next attempt in {} ms", self.name, wait.as_millis());
            ctx.run_later(wait, move |act, ctx| act.connect(role, ctx));
            return;
        }
        let (url, in_url) = self.connect_url();
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.settings.max_message_size))
            .max_frame_size(Some(self.settings.max_message_size));
        let connector = Connector::Rustls(self.settings.tls.clone());
        log::debug!("{}: connecting to {url}", self.name);
        let handshake = tokio_tungstenite::connect_async_tls_with_config(url, Some(config), false, Some(connector));
        let handshake = tokio::time::timeout(self.settings.connect_timeout, handshake);
        ctx.spawn(handshake.into_actor(self).map(move |result, act, ctx| {
            let error = match result {
                Ok(Ok((socket, _response))) => return act.connected(socket, role, in_url, ctx),
                Ok(Err(error)) => error_chain(&error),
                Err(_) => format!("timed out after {:?}", act.settings.connect_timeout),
            };
            act.fail(format!("connect failed: {error}"));
            if role == Role::Primary {
                return ctx.stop();
            }
            match act.handover.failed() {
                // A zombie being replaced is worth nothing: break it, and reconnect under the restart policy.
                HandoverFailed::Reconnect => ctx.stop(),
                HandoverFailed::RetryLater => {
                    ctx.run_later(ROTATION_RETRY, |act, ctx| act.hand_over(HandoverKind::Rotation, ctx));
                }
            }
        }));
    }

    /// A socket is open, subscribed to `in_url` by its URL. Streams added since the URL was made are SUBSCRIBEd, and
    /// the ones removed since UNSUBSCRIBEd.
    fn connected(&mut self, socket: WsStream, role: Role, in_url: Vec<StreamKey>, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let (sink, stream) = socket.split();
        let rest: Vec<StreamKey> =
            self.streams.iter().map(|s| s.key.clone()).filter(|key| !in_url.contains(key)).collect();
        let removed: Vec<StreamKey> = in_url.iter().filter(|key| self.index_of(key).is_none()).cloned().collect();
        let mut controls = ControlQueue::new(self.settings.control_interval);
        controls.subscribe(&rest, self.settings.streams_per_message);
        controls.unsubscribe(&removed, self.settings.streams_per_message);
        let socket = Socket { reader: ctx.add_stream(stream), writer: SinkWrite::new(sink, ctx), controls };
        self.last_frame = Instant::now();
        ctx.run_later(self.settings.rotate_after, |act, ctx| act.hand_over(HandoverKind::Rotation, ctx));
        match role {
            Role::Primary => {
                log::info!("{}: connected with {} stream(s)", self.name, self.streams.len());
                self.current = Some(socket);
                self.stats.set_state(TaskState::Running);
                for key in &in_url {
                    self.announce_live(key, ctx);
                }
            }
            Role::Successor => {
                log::info!("{}: rotating: a new connection subscribes while the old one delivers", self.name);
                if let Some(unfinished) = self.successor.replace(socket) {
                    unfinished.close(ctx);
                }
                self.promote_if_settled(ctx);
            }
        }
    }

    /// Makes a successor socket, unless one is being made already (which then serves this request too).
    fn hand_over(&mut self, kind: HandoverKind, ctx: &mut Context<Self>) {
        if self.handover.begin(kind) {
            self.connect(Role::Successor, ctx);
        }
    }

    /// Once the successor carries every stream, it replaces the current socket (make before break).
    fn promote_if_settled(&mut self, ctx: &mut Context<Self>) {
        if !self.successor.as_ref().is_some_and(|socket| socket.controls.settled()) {
            return;
        }
        let old = std::mem::replace(&mut self.current, self.successor.take());
        if let Some(old) = old {
            old.close(ctx);
        }
        if self.handover.completed() == Some(HandoverKind::Replacement) {
            log::info!("{}: replaced the silent connection; its streams repair what they missed", self.name);
            for subscription in self.streams.iter().filter_map(|s| s.subscription.as_ref()) {
                subscription.do_send(StreamLive { connection: ctx.address().recipient() });
            }
        } else {
            log::info!("{}: rotated to the new connection", self.name);
        }
    }

    /// Logs a failure and keeps it as the task's last error.
    fn fail(&self, error: String) {
        log::warn!("{}: {error}", self.name);
        self.stats.record_error(error);
    }

    fn index_of(&self, key: &StreamKey) -> Option<usize> {
        self.routes.index(&key.symbol, key.timeframe)
    }

    /// Tells `key`'s subscription that it is live here (if the stream is still carried).
    fn announce_live(&self, key: &StreamKey, ctx: &mut Context<Self>) {
        if let Some(subscription) = self.index_of(key).and_then(|index| self.streams[index].subscription.as_ref()) {
            subscription.do_send(StreamLive { connection: ctx.address().recipient() });
        }
    }

    /// Sends each socket's next control message, at most one per control interval (Binance closes a connection
    /// that sends more than 5 messages a second). The interval counts from the last message sent, not from timer
    /// ticks: after a stalled arbiter, missed ticks fire back to back and must not become a burst.
    fn send_next_controls(&mut self) {
        let now = Instant::now();
        let mut next_id = self.next_request_id;
        for socket in self.sockets() {
            let Some(control) = socket.controls.next_due(now, next_id) else { continue };
            let id = next_id;
            next_id += 1;
            let (method, streams) = match &control {
                Control::Subscribe(streams) => ("SUBSCRIBE", streams),
                Control::Unsubscribe(streams) => ("UNSUBSCRIBE", streams),
            };
            let params: Vec<String> = streams.iter().map(StreamKey::stream_name).collect();
            let request = serde_json::json!({ "method": method, "params": params, "id": id });
            // A write fails only on a socket already closing; the next socket subscribes every stream again.
            let _ = socket.writer.write(Message::Text(request.to_string().into()));
        }
        self.next_request_id = next_id;
    }

    fn on_text(&mut self, frame: &Utf8Bytes, received: Instant, ctx: &mut Context<Self>) {
        self.metrics.frames_received.inc();
        let text = frame.as_str();
        match route_frame(&self.routes, text) {
            Ok(Routed::Kline { index, event_time, candle }) => {
                let stream = &self.streams[index];
                self.settings.hub.publish_event(&stream.key, || {
                    UpstreamEvent::from_frame(stream.key.clone(), frame.clone().into(), event_time, candle, received)
                });
                let update = KlineUpdate { candle, event_time };
                let Some(subscription) = &stream.subscription else { return };
                if candle.is_closed {
                    subscription.do_send(update);
                } else if let Err(SendError::Full(_)) = subscription.try_send(update) {
                    // The subscription is behind: a later update (or the close) supersedes this one. (One that is
                    // gone is being restarted: it repairs what it missed.)
                    self.metrics.in_progress_coalesced.inc();
                }
            }
            Ok(Routed::Unrouted(event)) => {
                log::debug!("{}: event for unsubscribed {} {}", self.name, event.symbol, event.timeframe);
            }
            Ok(Routed::Other(Frame::Ack { id: Some(id) })) => {
                let acked = self.current.as_mut().and_then(|socket| socket.controls.acknowledged(id));
                for key in acked.unwrap_or_default() {
                    self.announce_live(&key, ctx);
                }
                if let Some(successor) = &mut self.successor
                    && successor.controls.acknowledged(id).is_some()
                {
                    self.promote_if_settled(ctx);
                }
            }
            Ok(Routed::Other(Frame::Ack { id: None })) => {}
            Ok(Routed::Other(Frame::ServerShutdown)) => {
                log::info!("{}: server shutdown announced, reconnecting now", self.name);
                self.reconnect_now = true;
                ctx.stop();
            }
            Ok(Routed::Other(Frame::Error { code, msg })) => log::warn!("{}: exchange error {code}: {msg}", self.name),
            Ok(Routed::Other(Frame::Other | Frame::Kline(_))) => {}
            Err(reason) => {
                if let Some(key) = self.carried_stream_named_in(text) {
                    self.metrics.stream_frames_rejected(&key).inc();
                }
                self.reject(reason, text);
            }
        }
    }

    /// The carried stream a rejected frame's envelope names, if any: the frame is then counted against it too.
    fn carried_stream_named_in(&self, text: &str) -> Option<StreamKey> {
        stream_named_in(text).filter(|key| self.index_of(key).is_some())
    }

    /// Counts a malformed frame and logs it with its payload, at most once per reason per interval.
    fn reject(&mut self, reason: RejectReason, payload: &str) {
        self.metrics.record_rejected(reason);
        let now = Instant::now();
        let last = self.last_reject_log.get(&reason);
        if last.is_none_or(|&at| now.duration_since(at) >= REJECT_LOG_INTERVAL) {
            self.last_reject_log.insert(reason, now);
            let shown: String = payload.chars().take(512).collect();
            log::warn!("{}: dropped a malformed frame ({reason}): {shown}", self.name);
        }
    }

    fn disconnect(&mut self, ctx: &mut Context<Self>) {
        for socket in [self.current.take(), self.successor.take()].into_iter().flatten() {
            socket.close(ctx);
        }
    }
}

/// The kline stream a frame's combined-stream envelope names (`{"stream":"btcusdt@kline_1m","data":...}`), if the
/// envelope parses, whatever its `data` holds. Parsed again only for rejected frames.
fn stream_named_in(text: &str) -> Option<StreamKey> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        stream: std::borrow::Cow<'a, str>,
    }
    let envelope: Envelope<'_> = serde_json::from_str(text).ok()?;
    let (symbol, interval) = envelope.stream.split_once("@kline_")?;
    Some(StreamKey::new(symbol.to_ascii_uppercase(), interval.parse().ok()?))
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(delay) = self.restarts.resume_after().filter(|_| !self.stopping) else { return };
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_later(delay, |act, ctx| act.connect(Role::Primary, ctx));
        // Ticks faster than the interval; `send_next_controls` paces from the last message sent.
        ctx.run_interval(self.settings.control_interval / 5, |act, _ctx| act.send_next_controls());
        ctx.run_interval(WATCHDOG_INTERVAL, |act, ctx| {
            if act.current.is_some() && act.last_frame.elapsed() > act.settings.stall_timeout {
                act.fail(format!("no frame for {:?}, reconnecting", act.settings.stall_timeout));
                ctx.stop();
            }
        });
    }
}

impl Supervised for ConnectionActor {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        self.disconnect(ctx);
        self.handover.abandon();
        if self.stopping {
            return;
        }
        self.restarts.restarting(&self.stats);
        self.metrics.reconnects.inc();
        if std::mem::take(&mut self.reconnect_now) {
            self.restarts.resume_now();
        }
        match self.restarts.resume_after() {
            Some(delay) => log::info!("{}: reconnecting in {} ms", self.name, delay.as_millis()),
            None => log::error!("{}: restart policy gave up; the connection stays down", self.name),
        }
    }
}

impl StreamHandler<Result<Message, tungstenite::Error>> for ConnectionActor {
    fn handle(&mut self, item: Result<Message, tungstenite::Error>, ctx: &mut Context<Self>) {
        self.last_frame = Instant::now();
        self.stats.record_activity();
        match item {
            Ok(Message::Text(text)) => {
                self.restarts.on_healthy();
                self.on_text(&text, self.last_frame, ctx);
            }
            Ok(Message::Binary(bytes)) => self.reject(RejectReason::Binary, &format!("<{} binary bytes>", bytes.len())),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Ok(Message::Close(frame)) => {
                let reason = frame.map_or_else(|| "no reason".to_owned(), |f| format!("{} {}", f.code, f.reason));
                self.fail(format!("closed by the exchange: {reason}"));
                ctx.stop();
            }
            Err(error) => {
                self.fail(format!("connection error: {}", error_chain(&error)));
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if !self.stopping {
            log::warn!("{}: connection ended", self.name);
            ctx.stop();
        }
    }
}

impl WriteHandler<tungstenite::Error> for ConnectionActor {
    fn error(&mut self, error: tungstenite::Error, _ctx: &mut Context<Self>) -> Running {
        self.fail(format!("write failed: {}", error_chain(&error)));
        Running::Stop
    }

    /// A writer finishes when we close it (a rotation's old socket, or shutdown). The default would stop the actor;
    /// whether the connection lives is the reader's business.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl Handler<StreamSilent> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, msg: StreamSilent, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        if self.index_of(&msg.key).is_none() {
            return;
        }
        let Some(socket) = &mut self.current else { return };
        match msg.step {
            SilenceStep::Resubscribe => {
                // One resubscribe per stream at a time: a stream that stays silent asks again, and the queue drains
                // at only 4 messages a second.
                socket.controls.resubscribe(msg.key);
            }
            // Every silent stream asks; one replacement (or rotation) at a time answers them all.
            SilenceStep::ReplaceConnection => {
                if self.handover.in_progress() == Some(HandoverKind::Replacement) {
                    return;
                }
                log::warn!(
                    "{}: {} still silent after a resubscribe; replacing the connection (the new one is made before the \
                     old one is broken)",
                    self.name,
                    msg.key
                );
                self.stats.record_error(format!("{} silent after a resubscribe: connection replaced", msg.key));
                self.metrics.connection_replacements.inc();
                self.hand_over(HandoverKind::Replacement, ctx);
            }
        }
    }
}

impl Handler<Reannounce> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, msg: Reannounce, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        // Not connected yet, or its SUBSCRIBE still waits for its ack: it is announced when that happens.
        let awaiting = self.current.as_ref().is_none_or(|socket| socket.controls.subscribing(&msg.key));
        if !awaiting {
            self.announce_live(&msg.key, ctx);
        }
    }
}

impl Handler<AddStreams> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, AddStreams(streams): AddStreams, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        let (carried, streams): (Vec<RoutedStream>, Vec<RoutedStream>) =
            streams.into_iter().partition(|s| self.index_of(&s.key).is_some());
        for stream in carried {
            let Some(index) = self.index_of(&stream.key) else { continue };
            let upgraded = stream.subscription.is_some();
            self.streams[index].subscription = stream.subscription;
            // Already subscribed upstream: its new subscription learns it is live (once its SUBSCRIBE is acked, if
            // that is still awaited).
            let awaiting = self.current.as_ref().is_none_or(|socket| socket.controls.subscribing(&stream.key));
            if upgraded && !awaiting {
                self.announce_live(&stream.key, ctx);
            }
        }
        if streams.is_empty() {
            return;
        }
        let keys: Vec<StreamKey> = streams.iter().map(|s| s.key.clone()).collect();
        self.streams.extend(streams);
        self.reroute();
        let per_message = self.settings.streams_per_message;
        for socket in self.sockets() {
            socket.controls.subscribe(&keys, per_message);
        }
        log::info!("{}: subscribing {} more stream(s), {} in all", self.name, keys.len(), self.streams.len());
    }
}

impl Handler<RemoveStreams> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, RemoveStreams(keys): RemoveStreams, _ctx: &mut Context<Self>) {
        self.stats.record_handled();
        self.streams.retain(|s| !keys.contains(&s.key));
        self.reroute();
        let per_message = self.settings.streams_per_message;
        for socket in self.sockets() {
            socket.controls.unsubscribe(&keys, per_message);
        }
        log::info!("{}: unsubscribing {} stream(s), {} left", self.name, keys.len(), self.streams.len());
    }
}

impl Handler<Retire> for ConnectionActor {
    type Result = ();

    /// An operator's restart: a fresh connection (actix supervision reconnects at once).
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        log::info!("{}: restarting on request", self.name);
        self.reconnect_now = true;
        ctx.stop();
    }
}

impl Handler<Stop> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        self.stopping = true;
        self.disconnect(ctx);
        self.stats.set_state(TaskState::Stopped);
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::fault_injection::Inject> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, fault: crate::fault_injection::Inject, ctx: &mut Context<Self>) {
        fault.apply::<Self>(&self.name, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timeframe;

    #[test]
    fn a_rejected_frame_is_attributed_to_the_stream_its_envelope_names() {
        let btc = Some(StreamKey::new("BTCUSDT", Timeframe::M1));
        let cases: [(&str, Option<StreamKey>); 5] = [
            // TC0: a valid envelope around an invalid candle (high below low): its stream.
            (r#"{"stream":"btcusdt@kline_1m","data":{"e":"kline","k":{"h":"1","l":"2"}}}"#, btc.clone()),
            // TC1: the stream field after the data: the same.
            (r#"{"data":{"k":{"o":1}},"stream":"btcusdt@kline_1m"}"#, btc),
            // TC2: truncated JSON: no stream.
            (r#"{"stream":"btcusdt@kline_1m","data":{"e":"kl"#, None),
            // TC3: no envelope (a raw event): no stream.
            (r#"{"e":"kline","s":"BTCUSDT","k":{"i":"1m"}}"#, None),
            // TC4: an unknown interval or a non-kline stream: no stream.
            (r#"{"stream":"btcusdt@kline_7m","data":{}}"#, None),
        ];
        for (index, (text, want)) in cases.into_iter().enumerate() {
            assert_eq!(stream_named_in(text), want, "TC{index}");
        }
    }
}
