//! The connection actor: one WebSocket connection carrying up to 1024 kline streams. It parses every frame once,
//! routes each kline to its subscription actor, and on any failure stops so that supervision reconnects it with
//! back-off. tungstenite answers server pings on the next read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::io::{SinkWrite, WriteHandler};
use actix::prelude::*;
use futures_util::StreamExt;
use futures_util::stream::SplitSink;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::actors::MAILBOX_CAPACITY;
use crate::actors::Mailbox;
use crate::actors::subscription::{KlineUpdate, StreamLive, SubscriptionActor};
use crate::domain::{Frame, RejectReason, Routed, Router, StreamKey, route_frame};
use crate::metrics::Metrics;
use crate::tasks::{RestartDecision, RestartTracker, TaskState, TaskStats};

/// Close the connection and stay down (shutdown).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Stop;

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
}

/// A stream carried by a connection, and where its events go.
pub struct RoutedStream {
    pub key: StreamKey,
    pub subscription: Mailbox<SubscriptionActor>,
}

/// How long the same kind of malformed frame is not logged again.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How often the stall watchdog looks.
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(1);

pub struct ConnectionActor {
    name: String,
    settings: ConnectionSettings,
    streams: Vec<RoutedStream>,
    /// Symbol and timeframe → index into `streams`.
    routes: Router,
    reader: Option<SpawnHandle>,
    writer: Option<SinkWrite<Message, WsSink>>,
    /// Stream indexes still to SUBSCRIBE on this connection, in message-sized chunks.
    to_subscribe: Vec<Vec<usize>>,
    /// SUBSCRIBE ids awaiting their ack, with the streams they cover.
    awaiting_ack: HashMap<i64, Vec<usize>>,
    next_request_id: i64,
    last_frame: Instant,
    last_reject_log: HashMap<RejectReason, Instant>,
    reconnect_now: bool,
    restart_delay: Duration,
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
            reader: None,
            writer: None,
            to_subscribe: Vec::new(),
            awaiting_ack: HashMap::new(),
            next_request_id: 1,
            last_frame: Instant::now(),
            last_reject_log: HashMap::new(),
            reconnect_now: false,
            restart_delay: Duration::ZERO,
            stopping: false,
            stats,
            restarts,
            metrics,
        }
    }

    /// The connect URL: a combined-stream URL naming the first chunk of streams; the rest are SUBSCRIBEd.
    fn connect_url(&self) -> String {
        let first = self.streams.iter().take(self.settings.streams_per_message.max(1));
        let names: Vec<String> = first.map(|s| s.key.stream_name()).collect();
        format!("{}/stream?streams={}", self.settings.ws_base.trim_end_matches('/'), names.join("/"))
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        let url = self.connect_url();
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.settings.max_message_size))
            .max_frame_size(Some(self.settings.max_message_size));
        let connector = Connector::Rustls(self.settings.tls.clone());
        log::debug!("{}: connecting to {url}", self.name);
        let handshake = tokio_tungstenite::connect_async_tls_with_config(url, Some(config), false, Some(connector));
        let handshake = tokio::time::timeout(self.settings.connect_timeout, handshake);
        ctx.spawn(handshake.into_actor(self).map(|result, act, ctx| match result {
            Ok(Ok((socket, _response))) => act.connected(socket, ctx),
            Ok(Err(error)) => {
                log::warn!("{}: connect failed: {error}", act.name);
                ctx.stop();
            }
            Err(_) => {
                log::warn!("{}: connect timed out after {:?}", act.name, act.settings.connect_timeout);
                ctx.stop();
            }
        }));
    }

    fn connected(&mut self, socket: WsStream, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let (sink, stream) = socket.split();
        self.reader = Some(ctx.add_stream(stream));
        self.writer = Some(SinkWrite::new(sink, ctx));
        self.last_frame = Instant::now();
        self.stats.set_state(TaskState::Running);
        let in_url = self.settings.streams_per_message.max(1).min(self.streams.len());
        log::info!("{}: connected with {} stream(s)", self.name, self.streams.len());
        for stream in &self.streams[..in_url] {
            stream.subscription.do_send(StreamLive);
        }
        let rest: Vec<usize> = (in_url..self.streams.len()).collect();
        self.to_subscribe =
            rest.chunks(self.settings.streams_per_message.max(1)).rev().map(<[usize]>::to_vec).collect();
        if !self.to_subscribe.is_empty() {
            ctx.run_interval(self.settings.control_interval, |act, _ctx| act.subscribe_next());
        }
    }

    /// Sends the next SUBSCRIBE, at most one per control interval.
    fn subscribe_next(&mut self) {
        let Some(writer) = &mut self.writer else { return };
        let Some(chunk) = self.to_subscribe.pop() else { return };
        let id = self.next_request_id;
        self.next_request_id += 1;
        let params: Vec<String> = chunk.iter().map(|&i| self.streams[i].key.stream_name()).collect();
        let request = serde_json::json!({ "method": "SUBSCRIBE", "params": params, "id": id });
        if writer.write(Message::Text(request.to_string().into())).is_ok() {
            self.awaiting_ack.insert(id, chunk);
        }
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        self.metrics.frames_received.inc();
        match route_frame(&self.routes, text) {
            Ok(Routed::Kline { index, event_time, candle }) => {
                self.streams[index].subscription.do_send(KlineUpdate { candle, event_time })
            }
            Ok(Routed::Unrouted(event)) => {
                log::debug!("{}: event for unsubscribed {} {}", self.name, event.symbol, event.timeframe)
            }
            Ok(Routed::Other(Frame::Ack { id })) => {
                for index in id.and_then(|id| self.awaiting_ack.remove(&id)).unwrap_or_default() {
                    self.streams[index].subscription.do_send(StreamLive);
                }
            }
            Ok(Routed::Other(Frame::ServerShutdown)) => {
                log::info!("{}: server shutdown announced, reconnecting now", self.name);
                self.reconnect_now = true;
                ctx.stop();
            }
            Ok(Routed::Other(Frame::Error { code, msg })) => log::warn!("{}: exchange error {code}: {msg}", self.name),
            // route_frame never returns a kline as `Other`.
            Ok(Routed::Other(Frame::Other | Frame::Kline(_))) => {}
            Err(reason) => self.reject(reason, text),
        }
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
        if let Some(reader) = self.reader.take() {
            ctx.cancel_future(reader);
        }
        if let Some(mut writer) = self.writer.take() {
            writer.close();
        }
        self.to_subscribe.clear();
        self.awaiting_ack.clear();
    }
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.stats.state() == TaskState::Failed {
            return;
        }
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_later(self.restart_delay, |act, ctx| act.connect(ctx));
        ctx.run_interval(WATCHDOG_INTERVAL, |act, ctx| {
            if act.writer.is_some() && act.last_frame.elapsed() > act.settings.stall_timeout {
                log::warn!("{}: no frame for {:?}, reconnecting", act.name, act.settings.stall_timeout);
                ctx.stop();
            }
        });
    }
}

impl Supervised for ConnectionActor {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        self.disconnect(ctx);
        if self.stopping {
            return;
        }
        self.stats.record_restart();
        self.metrics.reconnects.inc();
        let decision = self.restarts.on_stop(Instant::now());
        match decision {
            RestartDecision::RestartAfter(_) if self.reconnect_now => self.restart_delay = Duration::ZERO,
            RestartDecision::RestartAfter(delay) => self.restart_delay = delay,
            RestartDecision::GiveUp => self.stats.set_state(TaskState::Failed),
        }
        self.reconnect_now = false;
        log::info!("{}: reconnecting in {} ms", self.name, self.restart_delay.as_millis());
    }
}

impl StreamHandler<Result<Message, tungstenite::Error>> for ConnectionActor {
    fn handle(&mut self, item: Result<Message, tungstenite::Error>, ctx: &mut Context<Self>) {
        self.last_frame = Instant::now();
        match item {
            Ok(Message::Text(text)) => {
                self.restarts.on_healthy();
                self.on_text(text.as_str(), ctx);
            }
            Ok(Message::Binary(bytes)) => self.reject(RejectReason::Binary, &format!("<{} binary bytes>", bytes.len())),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Ok(Message::Close(frame)) => {
                log::warn!("{}: closed by the exchange: {frame:?}", self.name);
                ctx.stop();
            }
            Err(error) => {
                log::warn!("{}: connection error: {error}", self.name);
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
        log::warn!("{}: write failed: {error}", self.name);
        Running::Stop
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
