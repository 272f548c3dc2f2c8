//! The fan-out hub: every kline event of a stream, exactly as the exchange sent it, and every committed closed
//! candle of a configured stream with its indicator values, handed to each local subscriber of that stream through
//! its own bounded buffer. A subscriber whose buffer overflows is dropped and told why; nothing ever waits for one,
//! so ingestion and the other subscribers never slow down. The first subscriber of a stream makes it wanted
//! upstream, the last one leaving releases it ([`UpstreamDemand`], applied by the supervisor).
//!
//! The local WebSocket API serves from it, and Rust code (a strategy) subscribes in process:
//! [`Hub::subscribe`] gives a [`HubSubscription`] (also a `futures::Stream`), [`Hub::subscribe_actor`] delivers to an
//! actor's [`Recipient`].

mod metrics;
mod table;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use actix::prelude::*;
use bytestring::ByteString;
use tokio::sync::{Notify, mpsc};

pub use self::metrics::HubMetrics;
pub use self::table::{Published, SubscriberId, SubscriberTable};
use crate::domain::{Candle, StreamKey};
use crate::indicators::IndicatorValue;

/// A subscriber's buffer, in messages, unless said otherwise.
pub const DEFAULT_BUFFER: usize = 1024;

/// The streams local subscribers started or stopped watching: the first subscriber of a stream wants it upstream,
/// the last one leaving releases it. Sent in the order the changes happened.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct UpstreamDemand {
    pub wanted: Vec<StreamKey>,
    pub released: Vec<StreamKey>,
}

/// What a subscriber receives.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum HubMessage {
    /// A kline event of a subscribed stream, in progress or closed, exactly as the exchange sent it.
    Event(Arc<UpstreamEvent>),
    /// A closed candle of a configured stream, after it was committed, with its indicator values.
    Closed(Arc<ClosedCandle>),
    /// The last message an actor subscriber gets: why the hub let go of it.
    Disconnected(Disconnected),
}

/// Why the hub let go of a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Disconnected {
    #[error("disconnected: its buffer of {0} messages overflowed (it read too slowly)")]
    Overflow(usize),
}

/// One kline event as the exchange sent it.
#[derive(Debug)]
pub struct UpstreamEvent {
    pub key: StreamKey,
    /// The event object (the `data` of the exchange's combined frame), byte for byte.
    pub raw: ByteString,
    /// The event in the combined form, `{"stream":"btcusdt@kline_1m","data":<raw>}`.
    pub combined: ByteString,
    /// `E`, ms UTC.
    pub event_time: i64,
    /// The event's candle, parsed (once, by the connection).
    pub candle: Candle,
    /// When the connection received the frame.
    pub received: Instant,
}

/// A committed closed candle and the indicator values computed on it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedCandle {
    pub key: StreamKey,
    pub candle: Candle,
    /// The indicator output names ([`crate::indicators::IndicatorSet::names`]); `values[i].output` indexes them.
    pub names: Arc<[String]>,
    /// The values computed on this candle (none while the indicators warm up).
    pub values: Vec<IndicatorValue>,
}

impl ClosedCandle {
    /// The value of the output named `name` (such as `sma_20`) on this candle, if it has one.
    pub fn indicator(&self, name: &str) -> Option<f64> {
        let output = self.names.iter().position(|n| n == name)?;
        self.values.iter().find(|v| usize::from(v.output) == output).map(|v| v.value)
    }
}

/// Which messages a subscriber takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feed {
    /// Every kline event as received (in-progress updates and closes).
    pub events: bool,
    /// Committed closed candles with their indicator values.
    pub closed: bool,
}

impl Feed {
    pub const EVENTS: Feed = Feed { events: true, closed: false };
    pub const CLOSED: Feed = Feed { events: false, closed: true };
    pub const ALL: Feed = Feed { events: true, closed: true };

    fn takes(self, message: &HubMessage) -> bool {
        match message {
            HubMessage::Event(_) => self.events,
            HubMessage::Closed(_) => self.closed,
            HubMessage::Disconnected(_) => true,
        }
    }
}

/// Tells a subscriber that the hub let go of it, and why.
#[derive(Debug, Default)]
pub struct CutSignal {
    reason: OnceLock<Disconnected>,
    notify: Notify,
}

impl CutSignal {
    fn let_go(&self, reason: Disconnected) {
        if self.reason.set(reason).is_ok() {
            self.notify.notify_one();
        }
    }

    pub fn reason(&self) -> Option<Disconnected> {
        self.reason.get().copied()
    }

    /// Resolves as soon as the hub lets go of the subscriber, with the reason.
    pub async fn wait(&self) -> Disconnected {
        loop {
            if let Some(reason) = self.reason() {
                return reason;
            }
            self.notify.notified().await;
        }
    }
}

/// A tap: sees every message of every stream that its feed takes, without subscribing to any (so it never makes a
/// stream wanted upstream). Called under the hub's lock: it must only hand the message on, never wait.
pub type Tap = Arc<dyn Fn(&HubMessage) + Send + Sync>;

struct HubState {
    table: SubscriberTable,
    upstream: Option<Recipient<UpstreamDemand>>,
    taps: Vec<(u64, Feed, Tap)>,
}

impl HubState {
    fn tapped(&self, message: &HubMessage) -> bool {
        self.taps.iter().any(|(_, feed, _)| feed.takes(message))
    }

    fn tap(&self, message: &HubMessage) {
        for (_, feed, tap) in &self.taps {
            if feed.takes(message) {
                tap(message);
            }
        }
    }
}

struct HubInner {
    state: Mutex<HubState>,
    next_id: AtomicU64,
    buffer: usize,
    metrics: HubMetrics,
}

/// The hub. Cheap to clone: every clone shares one table.
#[derive(Clone)]
pub struct Hub(Arc<HubInner>);

impl Default for Hub {
    /// A hub with [`DEFAULT_BUFFER`] and metrics registered nowhere.
    fn default() -> Self {
        Self::new(DEFAULT_BUFFER, HubMetrics::unregistered())
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("buffer", &self.0.buffer).finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub giving each subscriber a buffer of `buffer` messages.
    pub fn new(buffer: usize, metrics: HubMetrics) -> Self {
        let state = HubState { table: SubscriberTable::default(), upstream: None, taps: Vec::new() };
        Self(Arc::new(HubInner {
            state: Mutex::new(state),
            next_id: AtomicU64::new(1),
            buffer: buffer.max(1),
            metrics,
        }))
    }

    pub fn metrics(&self) -> &HubMetrics {
        &self.0.metrics
    }

    fn state(&self) -> MutexGuard<'_, HubState> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new subscriber with no stream yet: add streams with [`SubscriptionHandle::subscribe`].
    pub fn subscribe(&self, feed: Feed) -> HubSubscription {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel(self.0.buffer);
        let cut = Arc::new(CutSignal::default());
        let mut state = self.state();
        state.table.insert(id, sender, feed, cut.clone());
        self.0.metrics.subscribers.set(state.table.subscriber_count() as i64);
        drop(state);
        HubSubscription { handle: SubscriptionHandle { id, hub: self.clone() }, receiver, cut }
    }

    /// Delivers the messages of `keys` to `recipient`, one at a time: each is sent when the actor has handled the
    /// one before, so an actor that falls more than the buffer behind is cut (it then gets
    /// [`HubMessage::Disconnected`]). Runs on the current actix arbiter; ends when the actor is gone or
    /// [`SubscriptionHandle::close`] is called.
    pub fn subscribe_actor(
        &self,
        recipient: Recipient<HubMessage>,
        feed: Feed,
        keys: &[StreamKey],
    ) -> SubscriptionHandle {
        let mut subscription = self.subscribe(feed);
        subscription.subscribe(keys);
        let handle = subscription.handle().clone();
        actix::spawn(async move {
            while let Some(message) = subscription.recv().await {
                if recipient.send(message).await.is_err() {
                    return;
                }
            }
            if let Some(reason) = subscription.disconnected() {
                let _ = recipient.send(HubMessage::Disconnected(reason)).await;
            }
        });
        handle
    }

    /// Lets the supervisor learn which streams local subscribers want upstream: returns those wanted now; every
    /// later change is sent to `upstream`, in order.
    pub fn attach_upstream(&self, upstream: Recipient<UpstreamDemand>) -> Vec<StreamKey> {
        let mut state = self.state();
        state.upstream = Some(upstream);
        state.table.watched()
    }

    /// Hands every message that `feed` takes, of every stream, to `tap` (the NATS publisher), until
    /// [`Hub::untap`]. Returns the tap's id.
    pub fn tap(&self, feed: Feed, tap: Tap) -> u64 {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        self.state().taps.push((id, feed, tap));
        id
    }

    /// Removes a tap.
    pub fn untap(&self, id: u64) {
        self.state().taps.retain(|(tap, _, _)| *tap != id);
    }

    /// Whether someone watches `key`.
    pub fn watches(&self, key: &StreamKey) -> bool {
        self.state().table.watches(key)
    }

    /// Hands a kline event of `key` to its subscribers; `event` builds it only if there are any.
    pub fn publish_event(&self, key: &StreamKey, event: impl FnOnce() -> Option<UpstreamEvent>) {
        let mut state = self.state();
        let tapped = state.taps.iter().any(|(_, feed, _)| feed.events);
        let watched = state.table.watches(key);
        if !watched && !tapped {
            return;
        }
        let Some(event) = event() else { return };
        let message = HubMessage::Event(Arc::new(event));
        state.tap(&message);
        if watched {
            self.publish_locked(&mut state, key, &message);
        }
    }

    /// Hands a committed closed candle to the subscribers of its stream.
    pub fn publish_closed(&self, closed: ClosedCandle) {
        let mut state = self.state();
        let key = closed.key.clone();
        let watched = state.table.watches(&key);
        let message = HubMessage::Closed(Arc::new(closed));
        if !watched && !state.tapped(&message) {
            return;
        }
        state.tap(&message);
        if watched {
            self.publish_locked(&mut state, &key, &message);
        }
    }

    fn publish_locked(&self, state: &mut HubState, key: &StreamKey, message: &HubMessage) {
        let published = state.table.publish(key, message, self.0.buffer);
        if !published.overflowed.is_empty() {
            self.0.metrics.slow_disconnected.inc_by(published.overflowed.len() as u64);
            log::warn!(
                "hub: {} subscriber(s) of {key} disconnected: buffer of {} messages overflowed",
                published.overflowed.len(),
                self.0.buffer
            );
        }
        if published.overflowed.is_empty() && published.released.is_empty() && published.delivered > 0 {
            return;
        }
        self.changed(state, Vec::new(), published.released);
    }

    /// Updates the gauges and tells upstream what changed (under the lock, so that changes arrive in order).
    fn changed(&self, state: &HubState, wanted: Vec<StreamKey>, released: Vec<StreamKey>) {
        self.0.metrics.subscribers.set(state.table.subscriber_count() as i64);
        self.0.metrics.subscriptions.set(state.table.subscription_count() as i64);
        if wanted.is_empty() && released.is_empty() {
            return;
        }
        if let Some(upstream) = &state.upstream {
            upstream.do_send(UpstreamDemand { wanted, released });
        }
    }
}

/// Adds and removes the streams of one subscriber. Cheap to clone.
#[derive(Clone)]
pub struct SubscriptionHandle {
    id: SubscriberId,
    hub: Hub,
}

impl SubscriptionHandle {
    pub fn id(&self) -> SubscriberId {
        self.id
    }

    pub fn hub_metrics(&self) -> &HubMetrics {
        self.hub.metrics()
    }

    /// Adds streams (already subscribed ones are ignored).
    pub fn subscribe(&self, keys: &[StreamKey]) {
        let mut state = self.hub.state();
        let wanted = state.table.subscribe(self.id, keys);
        self.hub.changed(&state, wanted, Vec::new());
    }

    /// Removes streams (others are ignored).
    pub fn unsubscribe(&self, keys: &[StreamKey]) {
        let mut state = self.hub.state();
        let released = state.table.unsubscribe(self.id, keys);
        self.hub.changed(&state, Vec::new(), released);
    }

    /// The streams subscribed, in the order they were subscribed.
    pub fn streams(&self) -> Vec<StreamKey> {
        self.hub.state().table.streams_of(self.id)
    }

    /// Leaves the hub: no more messages, and the streams are released.
    pub fn close(&self) {
        let mut state = self.hub.state();
        let released = state.table.remove(self.id);
        self.hub.changed(&state, Vec::new(), released);
    }
}

/// One subscriber's end: its messages, in order, and why they ended if the hub let go. Dropping it leaves the
/// hub. A `futures::Stream` of [`HubMessage`]s.
pub struct HubSubscription {
    handle: SubscriptionHandle,
    receiver: mpsc::Receiver<HubMessage>,
    cut: Arc<CutSignal>,
}

impl HubSubscription {
    pub fn handle(&self) -> &SubscriptionHandle {
        &self.handle
    }

    pub fn subscribe(&self, keys: &[StreamKey]) {
        self.handle.subscribe(keys);
    }

    pub fn unsubscribe(&self, keys: &[StreamKey]) {
        self.handle.unsubscribe(keys);
    }

    pub fn streams(&self) -> Vec<StreamKey> {
        self.handle.streams()
    }

    /// The next message; `None` once the hub let go (see [`HubSubscription::disconnected`]) and the buffer is read.
    pub async fn recv(&mut self) -> Option<HubMessage> {
        self.receiver.recv().await
    }

    /// The next message if one is buffered, without waiting.
    pub fn try_recv(&mut self) -> Option<HubMessage> {
        self.receiver.try_recv().ok()
    }

    /// Why the hub let go of this subscriber, if it did.
    pub fn disconnected(&self) -> Option<Disconnected> {
        self.cut.reason()
    }

    /// What tells this subscriber, as soon as it happens, that the hub let go of it (before its buffer is read).
    pub fn cut_signal(&self) -> Arc<CutSignal> {
        self.cut.clone()
    }
}

impl Drop for HubSubscription {
    fn drop(&mut self) {
        self.handle.close();
    }
}

impl futures_util::Stream for HubSubscription {
    type Item = HubMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<HubMessage>> {
        self.receiver.poll_recv(cx)
    }
}

/// The event object inside a frame as the exchange sent it: the `data` of a combined frame
/// (`{"stream":..,"data":{..}}`), or the whole frame in the raw form. Sliced, never re-serialised. `None` when the
/// frame is not valid JSON of either form.
pub fn event_text(frame: &str) -> Option<&str> {
    const PREFIX: &str = r#"{"stream":""#;
    const DATA: &str = r#"","data":"#;
    // The exchange's own layout: sliced without parsing (the connection has parsed the frame already).
    if let Some(rest) = frame.strip_prefix(PREFIX)
        && let Some(name_end) = rest.find('"')
        && rest[name_end..].starts_with(DATA)
        && let Some(body) = rest[name_end + DATA.len()..].strip_suffix('}')
        && body.starts_with('{')
        && body.ends_with('}')
    {
        return Some(body);
    }
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        data: Option<&'a serde_json::value::RawValue>,
    }
    let envelope: Envelope<'_> = serde_json::from_str(frame).ok()?;
    Some(envelope.data.map_or(frame.trim(), |data| data.get()))
}

impl UpstreamEvent {
    /// The event of `key` carried by `frame` (the exchange's text frame, shared, not copied): its event object sliced
    /// out, and the combined form (the frame itself when the exchange sent exactly that form).
    pub fn from_frame(
        key: StreamKey,
        frame: bytes::Bytes,
        event_time: i64,
        candle: Candle,
        received: Instant,
    ) -> Option<Self> {
        let frame = ByteString::try_from(frame).ok()?;
        let raw = frame.slice_ref(event_text(&frame)?);
        let stream = key.stream_name();
        let exchange_layout = format!(r#"{{"stream":"{stream}","data":"#);
        let combined = if frame.len() == exchange_layout.len() + raw.len() + 1 && frame.starts_with(&exchange_layout) {
            frame.clone()
        } else {
            ByteString::from(format!(r#"{{"stream":"{stream}","data":{}}}"#, &*raw))
        };
        Some(Self { key, raw, combined, event_time, candle, received })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timeframe;

    const EVENT: &str = r#"{"e":"kline","E":1,"s":"BTCUSDT","k":{"t":0,"x":false}}"#;

    #[test]
    fn the_event_text_is_sliced_from_the_frame_as_sent() {
        let combined = format!(r#"{{"stream":"btcusdt@kline_1m","data":{EVENT}}}"#);
        // TC0: the exchange's layout.
        assert_eq!(event_text(&combined), Some(EVENT));
        // TC1: the raw form is the event itself.
        assert_eq!(event_text(EVENT), Some(EVENT));
        // TC2: another key order and spacing: found by parsing, still as sent.
        let spaced = format!(r#"{{ "data" : {EVENT} , "stream":"btcusdt@kline_1m" }}"#);
        assert_eq!(event_text(&spaced), Some(EVENT));
        // TC3: not JSON.
        assert_eq!(event_text(r#"{"stream":"x","data":{"#), None);
    }

    #[test]
    fn an_upstream_event_shares_the_frame_and_keeps_or_builds_the_combined_form() {
        let key = StreamKey::new("BTCUSDT", Timeframe::M1);
        let candle = crate::domain::fixtures::minute_candle(0, 1.0, true);
        let combined = format!(r#"{{"stream":"btcusdt@kline_1m","data":{EVENT}}}"#);
        let event = UpstreamEvent::from_frame(key.clone(), combined.clone().into(), 1, candle, Instant::now()).unwrap();
        assert_eq!((&*event.raw, &*event.combined), (EVENT, combined.as_str()));
        // A raw frame: the combined form is built around it.
        let event = UpstreamEvent::from_frame(key, EVENT.into(), 1, candle, Instant::now()).unwrap();
        assert_eq!((&*event.raw, &*event.combined), (EVENT, combined.as_str()));
    }

    #[test]
    fn a_closed_candle_names_its_indicator_values() {
        let names: Arc<[String]> = vec!["sma_5".to_owned(), "sma_20".to_owned()].into();
        let closed = ClosedCandle {
            key: StreamKey::new("BTCUSDT", Timeframe::M1),
            candle: crate::domain::fixtures::minute_candle(0, 1.0, true),
            names,
            values: vec![IndicatorValue { output: 1, value: 2.5 }],
        };
        assert_eq!(closed.indicator("sma_20"), Some(2.5));
        assert_eq!(closed.indicator("sma_5"), None, "still warming up");
        assert_eq!(closed.indicator("rsi_14"), None, "not computed");
    }

    #[test]
    fn a_tap_sees_every_stream_without_wanting_any_upstream() {
        let hub = Hub::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tap = {
            let seen = seen.clone();
            hub.tap(Feed::CLOSED, Arc::new(move |m| seen.lock().unwrap().push(matches!(m, HubMessage::Closed(_)))))
        };
        let closed = |symbol: &str| ClosedCandle {
            key: StreamKey::new(symbol, Timeframe::M1),
            candle: crate::domain::fixtures::minute_candle(0, 1.0, true),
            names: Arc::from(Vec::new()),
            values: Vec::new(),
        };
        // TC0: closed candles of streams nobody subscribed to reach the tap; no stream becomes watched.
        hub.publish_closed(closed("BTCUSDT"));
        hub.publish_closed(closed("ETHUSDT"));
        assert_eq!(*seen.lock().unwrap(), [true, true]);
        assert!(!hub.watches(&StreamKey::new("BTCUSDT", Timeframe::M1)));
        // TC1: a closed-only tap takes no events, so none is built for it.
        let key = StreamKey::new("BTCUSDT", Timeframe::M1);
        hub.publish_event(&key, || panic!("built for nobody"));
        // TC2: untapped: nothing more.
        hub.untap(tap);
        hub.publish_closed(closed("BTCUSDT"));
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[actix::test]
    async fn demand_reaches_upstream_in_order_and_a_dropped_subscription_releases_its_streams() {
        struct Upstream(Vec<UpstreamDemand>);
        impl Actor for Upstream {
            type Context = actix::Context<Self>;
        }
        impl Handler<UpstreamDemand> for Upstream {
            type Result = ();
            fn handle(&mut self, msg: UpstreamDemand, _: &mut actix::Context<Self>) {
                self.0.push(msg);
            }
        }
        #[derive(Message)]
        #[rtype(result = "Vec<UpstreamDemand>")]
        struct Seen;
        impl Handler<Seen> for Upstream {
            type Result = Vec<UpstreamDemand>;
            fn handle(&mut self, _: Seen, _: &mut actix::Context<Self>) -> Vec<UpstreamDemand> {
                self.0.clone()
            }
        }
        let hub = Hub::default();
        let btc = StreamKey::new("BTCUSDT", Timeframe::M1);
        let early = hub.subscribe(Feed::EVENTS);
        early.subscribe(std::slice::from_ref(&btc));
        let upstream = Upstream(Vec::new()).start();
        // What was wanted before the supervisor attached is handed over at once.
        assert_eq!(hub.attach_upstream(upstream.clone().recipient()), std::slice::from_ref(&btc));
        let eth = StreamKey::new("ETHUSDT", Timeframe::M1);
        let second = hub.subscribe(Feed::ALL);
        second.subscribe(&[btc.clone(), eth.clone()]);
        drop(early);
        drop(second);
        let seen = upstream.send(Seen).await.unwrap();
        let wanted = UpstreamDemand { wanted: vec![eth.clone()], released: vec![] };
        let released = UpstreamDemand { wanted: vec![], released: vec![btc, eth] };
        assert_eq!(seen, [wanted, released]);
        assert_eq!(hub.metrics().subscribers.get(), 0);
    }
}
