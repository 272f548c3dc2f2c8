//! Binance's kline WebSocket streams on the HTTP port (`[api] enabled`): `/ws/<stream>[/<stream>..]`, `/ws`, and
//! `/stream?streams=a/b` (combined form), with SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY and
//! GET_PROPERTY, server pings with a pong deadline, 1,024 streams and 5 incoming messages a second per connection.
//! Each client is one hub subscriber: it gets every event of its streams exactly as the exchange sent it, and is cut
//! when its buffer overflows.

pub mod protocol;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Session};
use candled_actors::hub::{CutSignal, Feed, Hub, HubMessage, HubSubscription};
use serde_json::Value;

use self::protocol::{Beat, Heartbeat, MessageRate, Request, RequestError, Route, route};
use crate::http::AppState;

/// How often the server pings each client (Binance: every 20 s).
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long a client has to answer a ping (Binance: 1 minute).
const PONG_DEADLINE: Duration = Duration::from_secs(60);
/// How often the heartbeat is looked at.
const HEARTBEAT_TICK: Duration = Duration::from_secs(1);
/// The largest message a client may send (a SUBSCRIBE of 1,024 streams is about 25 KB).
const MAX_INCOMING_BYTES: usize = 64 * 1024;
/// How long a close frame may wait to be queued (behind what a slow client has not read yet) before the connection
/// is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The local WebSocket API's state: the hub it serves from, and the client limit.
pub struct LocalStreams {
    pub hub: Hub,
    /// `[api] enabled`.
    pub enabled: bool,
    /// `[api] max_ws_clients`.
    pub max_clients: usize,
    clients: Arc<AtomicUsize>,
}

impl LocalStreams {
    pub fn new(hub: Hub, enabled: bool, max_clients: usize) -> Self {
        Self { hub, enabled, max_clients, clients: Arc::default() }
    }

    /// Takes a client slot, unless all are taken.
    fn admit(&self) -> Option<ClientSlot> {
        let taken =
            self.clients.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_clients).then_some(n + 1));
        taken.ok()?;
        self.hub.metrics().ws_clients.inc();
        Some(ClientSlot { clients: self.clients.clone(), hub: self.hub.clone() })
    }
}

/// A connected client's slot, given back when dropped.
struct ClientSlot {
    clients: Arc<AtomicUsize>,
    hub: Hub,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.clients.fetch_sub(1, Ordering::AcqRel);
        self.hub.metrics().ws_clients.dec();
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws", web::get().to(raw))
        .route("/ws/{streams:.*}", web::get().to(raw))
        .route("/stream", web::get().to(combined));
}

async fn raw(request: HttpRequest, body: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let streams = request.match_info().get("streams").unwrap_or_default().to_owned();
    connect(&request, body, &state, route(false, &streams))
}

async fn combined(request: HttpRequest, body: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let streams = web::Query::<Vec<(String, String)>>::from_query(request.query_string())
        .ok()
        .and_then(|query| query.0.into_iter().find(|(name, _)| name == "streams").map(|(_, value)| value))
        .unwrap_or_default();
    connect(&request, body, &state, route(true, &streams))
}

fn connect(
    request: &HttpRequest,
    body: web::Payload,
    state: &AppState,
    route: Result<Route, protocol::RouteError>,
) -> HttpResponse {
    let local = &state.local_streams;
    if !local.enabled {
        return actix_web::ResponseError::error_response(&crate::http::ApiError::NotFound(request.path().to_owned()));
    }
    let route = match route {
        Ok(route) => route,
        Err(error) => return HttpResponse::BadRequest().body(error.to_string()),
    };
    let Some(slot) = local.admit() else {
        return HttpResponse::TooManyRequests()
            .body(format!("too many WebSocket clients: at most {} at once ([api] max_ws_clients)", local.max_clients));
    };
    let (response, session, messages) = match actix_ws::handle(request, body) {
        Ok(handshake) => handshake,
        Err(error) => return HttpResponse::from_error(error),
    };
    let messages = messages.max_frame_size(MAX_INCOMING_BYTES).aggregate_continuations();
    let subscription = local.hub.subscribe(Feed::EVENTS);
    subscription.subscribe(&route.streams);
    let client = Client {
        cut: subscription.cut_signal(),
        session,
        subscription,
        combined: route.combined,
        rate: MessageRate::default(),
        heartbeat: Heartbeat::new(PING_INTERVAL, PONG_DEADLINE, Instant::now()),
        _slot: slot,
    };
    actix_web::rt::spawn(client.run(messages));
    response
}

/// Why a client's connection ends.
enum End {
    /// The client closed it, or it broke.
    Gone,
    /// Close with this code and reason.
    Close(CloseCode, &'static str),
}

/// One connected client.
struct Client {
    session: Session,
    subscription: HubSubscription,
    /// Fires when the hub cuts this client.
    cut: Arc<CutSignal>,
    combined: bool,
    rate: MessageRate,
    heartbeat: Heartbeat,
    _slot: ClientSlot,
}

impl Client {
    async fn run(mut self, mut messages: actix_ws::AggregatedMessageStream) {
        let mut beat = tokio::time::interval(HEARTBEAT_TICK);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let end = loop {
            let step = tokio::select! {
                biased;
                reason = self.cut.wait() => {
                    log::info!("local WebSocket client {}: {reason}", self.subscription.handle().id());
                    Err(End::Close(CloseCode::Policy, "Slow consumer: send buffer overflowed"))
                }
                message = messages.recv() => match message {
                    Some(Ok(message)) => self.on_message(message).await,
                    Some(Err(_)) | None => Err(End::Gone),
                },
                event = self.subscription.recv() => match event {
                    Some(message) => self.forward(message).await,
                    // Cut: the first branch says why.
                    None => Ok(()),
                },
                _ = beat.tick() => self.on_beat().await,
            };
            if let Err(end) = step {
                break end;
            }
        };
        let Self { session, subscription, _slot, .. } = self;
        // The client is gone from the hub and the client count now; the close frame may still wait.
        drop((subscription, _slot));
        if let End::Close(code, description) = end {
            let reason = CloseReason { code, description: Some(description.to_owned()) };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.close(Some(reason))).await;
        }
    }

    /// Writes one hub event to the socket, unless the hub cuts the client meanwhile (its socket is full).
    async fn forward(&mut self, message: HubMessage) -> Result<(), End> {
        let HubMessage::Event(event) = message else { return Ok(()) };
        let text = if self.combined { event.combined.clone() } else { event.raw.clone() };
        let metrics = self.subscription.handle().hub_metrics();
        tokio::select! {
            biased;
            sent = self.session.text(text) => sent.map_err(|_| End::Gone)?,
            _ = self.cut.wait() => return Ok(()),
        }
        metrics.events_sent.inc();
        metrics.send_delay.observe(event.received.elapsed().as_secs_f64());
        Ok(())
    }

    async fn on_beat(&mut self) -> Result<(), End> {
        match self.heartbeat.tick(Instant::now()) {
            Beat::Nothing => Ok(()),
            Beat::Ping(payload) => self.session.ping(&payload).await.map_err(|_| End::Gone),
            Beat::Expired => Err(End::Close(CloseCode::Policy, "Pong timeout")),
        }
    }

    async fn on_message(&mut self, message: AggregatedMessage) -> Result<(), End> {
        if matches!(message, AggregatedMessage::Close(_)) {
            return Err(End::Gone);
        }
        if !self.rate.admit(Instant::now()) {
            return Err(End::Close(CloseCode::Policy, "Too many requests"));
        }
        match message {
            AggregatedMessage::Text(text) => self.on_control(&text).await,
            AggregatedMessage::Binary(bytes) => match std::str::from_utf8(&bytes) {
                Ok(text) => self.on_control(text).await,
                Err(_) => {
                    let error = RequestError { code: 3, msg: "Invalid JSON: binary frame is not UTF-8".to_owned() };
                    self.answer(protocol::error_answer(&Value::Null, &error)).await
                }
            },
            AggregatedMessage::Ping(payload) => self.session.pong(&payload).await.map_err(|_| End::Gone),
            AggregatedMessage::Pong(_) => {
                self.heartbeat.pong();
                Ok(())
            }
            AggregatedMessage::Close(_) => Err(End::Gone),
        }
    }

    async fn on_control(&mut self, text: &str) -> Result<(), End> {
        let (id, request) = protocol::parse_request(text);
        let answer = match request.and_then(|request| self.apply(request)) {
            Ok(result) => protocol::result_answer(&id, result),
            Err(error) => protocol::error_answer(&id, &error),
        };
        self.answer(answer).await
    }

    fn apply(&mut self, request: Request) -> Result<Value, RequestError> {
        match request {
            Request::Subscribe(keys) => {
                let current = self.subscription.streams();
                let new = keys.iter().filter(|key| !current.contains(key)).count();
                if current.len() + new > protocol::MAX_STREAMS {
                    return Err(RequestError::too_many_subscriptions());
                }
                self.subscription.subscribe(&keys);
                Ok(Value::Null)
            }
            Request::Unsubscribe(keys) => {
                self.subscription.unsubscribe(&keys);
                Ok(Value::Null)
            }
            Request::ListSubscriptions => {
                Ok(Value::from(self.subscription.streams().iter().map(|key| key.stream_name()).collect::<Vec<_>>()))
            }
            Request::SetCombined(combined) => {
                self.combined = combined;
                Ok(Value::Null)
            }
            Request::GetCombined => Ok(Value::Bool(self.combined)),
        }
    }

    async fn answer(&mut self, text: String) -> Result<(), End> {
        self.session.text(text).await.map_err(|_| End::Gone)
    }
}
