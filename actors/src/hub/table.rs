//! The hub's subscriber table as plain data: who watches which stream, how many watch each, and the overflow rule
//! (a subscriber whose bounded buffer is full is dropped, never waited for).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::domain::StreamKey;
use crate::hub::{CutSignal, Feed, HubMessage};

/// A subscriber's number in the table.
pub type SubscriberId = u64;

struct Entry {
    sender: mpsc::Sender<HubMessage>,
    feed: Feed,
    /// Its streams, in the order it subscribed them.
    streams: Vec<StreamKey>,
    cut: Arc<CutSignal>,
}

/// What one publication did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Subscribers whose buffer took the message.
    pub delivered: usize,
    /// Subscribers dropped because their buffer was full.
    pub overflowed: Vec<SubscriberId>,
    /// Streams nobody watches any more (their last subscriber was dropped).
    pub released: Vec<StreamKey>,
}

/// Subscribers and their streams.
#[derive(Default)]
pub struct SubscriberTable {
    subscribers: HashMap<SubscriberId, Entry>,
    /// Per stream, its subscribers in subscription order.
    watchers: HashMap<StreamKey, Vec<SubscriberId>>,
}

impl SubscriberTable {
    pub fn insert(&mut self, id: SubscriberId, sender: mpsc::Sender<HubMessage>, feed: Feed, cut: Arc<CutSignal>) {
        self.subscribers.insert(id, Entry { sender, feed, streams: Vec::new(), cut });
    }

    /// Adds `keys` to the subscriber's streams. Returns the streams that had no subscriber before (now wanted).
    pub fn subscribe(&mut self, id: SubscriberId, keys: &[StreamKey]) -> Vec<StreamKey> {
        let Some(entry) = self.subscribers.get_mut(&id) else { return Vec::new() };
        let mut wanted = Vec::new();
        for key in keys {
            if entry.streams.contains(key) {
                continue;
            }
            entry.streams.push(key.clone());
            let watchers = self.watchers.entry(key.clone()).or_default();
            if watchers.is_empty() {
                wanted.push(key.clone());
            }
            watchers.push(id);
        }
        wanted
    }

    /// Removes `keys` from the subscriber's streams. Returns the streams nobody watches any more.
    pub fn unsubscribe(&mut self, id: SubscriberId, keys: &[StreamKey]) -> Vec<StreamKey> {
        let Some(entry) = self.subscribers.get_mut(&id) else { return Vec::new() };
        let mut released = Vec::new();
        for key in keys {
            let Some(at) = entry.streams.iter().position(|k| k == key) else { continue };
            entry.streams.remove(at);
            if Self::forget_watcher(&mut self.watchers, key, id) {
                released.push(key.clone());
            }
        }
        released
    }

    /// Drops a subscriber. Returns the streams nobody watches any more.
    pub fn remove(&mut self, id: SubscriberId) -> Vec<StreamKey> {
        let Some(entry) = self.subscribers.remove(&id) else { return Vec::new() };
        (entry.streams.into_iter()).filter(|key| Self::forget_watcher(&mut self.watchers, key, id)).collect()
    }

    /// Removes `id` from the watchers of `key`; whether the stream has none left.
    fn forget_watcher(watchers: &mut HashMap<StreamKey, Vec<SubscriberId>>, key: &StreamKey, id: SubscriberId) -> bool {
        let Some(list) = watchers.get_mut(key) else { return false };
        list.retain(|&w| w != id);
        let empty = list.is_empty();
        if empty {
            watchers.remove(key);
        }
        empty
    }

    /// The subscriber's streams, in the order it subscribed them.
    pub fn streams_of(&self, id: SubscriberId) -> Vec<StreamKey> {
        self.subscribers.get(&id).map(|e| e.streams.clone()).unwrap_or_default()
    }

    /// Every stream someone watches.
    pub fn watched(&self) -> Vec<StreamKey> {
        self.watchers.keys().cloned().collect()
    }

    pub fn watches(&self, key: &StreamKey) -> bool {
        self.watchers.contains_key(key)
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }

    /// Stream subscriptions, over all subscribers.
    pub fn subscription_count(&self) -> usize {
        self.watchers.values().map(Vec::len).sum()
    }

    /// Hands `message` to every subscriber of `key` whose feed takes it, without waiting. A subscriber whose buffer
    /// is full is dropped and told why (`buffer` is its size); one that went away is dropped quietly.
    pub fn publish(&mut self, key: &StreamKey, message: &HubMessage, buffer: usize) -> Published {
        let mut published = Published::default();
        let Some(watchers) = self.watchers.get(key) else { return published };
        let mut gone = Vec::new();
        for id in watchers {
            let Some(entry) = self.subscribers.get(id) else { continue };
            if !entry.feed.takes(message) {
                continue;
            }
            match entry.sender.try_send(message.clone()) {
                Ok(()) => published.delivered += 1,
                Err(TrySendError::Full(_)) => {
                    entry.cut.let_go(super::Disconnected::Overflow(buffer));
                    published.overflowed.push(*id);
                    gone.push(*id);
                }
                Err(TrySendError::Closed(_)) => gone.push(*id),
            }
        }
        for id in gone {
            published.released.extend(self.remove(id));
        }
        published
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timeframe;
    use crate::hub::{ClosedCandle, Disconnected};

    fn key(symbol: &str) -> StreamKey {
        StreamKey::new(symbol, Timeframe::M1)
    }

    fn closed(symbol: &str) -> HubMessage {
        let candle = crate::domain::fixtures::minute_candle(0, 1.0, true);
        HubMessage::Closed(Arc::new(ClosedCandle { key: key(symbol), candle, names: Arc::new([]), values: vec![] }))
    }

    fn add(
        table: &mut SubscriberTable,
        id: SubscriberId,
        buffer: usize,
    ) -> (mpsc::Receiver<HubMessage>, Arc<CutSignal>) {
        let (sender, receiver) = mpsc::channel(buffer);
        let cut = Arc::new(CutSignal::default());
        table.insert(id, sender, Feed::ALL, cut.clone());
        (receiver, cut)
    }

    #[test]
    fn streams_are_wanted_on_the_first_subscriber_and_released_after_the_last() {
        let mut table = SubscriberTable::default();
        let (_a, _) = add(&mut table, 1, 4);
        let (_b, _) = add(&mut table, 2, 4);
        // TC0: the first subscriber of each stream wants it; a repeated key counts once.
        assert_eq!(
            table.subscribe(1, &[key("BTCUSDT"), key("ETHUSDT"), key("BTCUSDT")]),
            [key("BTCUSDT"), key("ETHUSDT")]
        );
        // TC1: a second subscriber of a watched stream wants nothing new.
        assert_eq!(table.subscribe(2, &[key("ETHUSDT"), key("SOLUSDT")]), [key("SOLUSDT")]);
        assert_eq!(table.subscription_count(), 4);
        assert_eq!(table.streams_of(1), [key("BTCUSDT"), key("ETHUSDT")]);
        // TC2: unsubscribing a stream another still watches releases nothing; an unknown one is ignored.
        assert_eq!(table.unsubscribe(1, &[key("ETHUSDT"), key("XRPUSDT")]), Vec::<StreamKey>::new());
        // TC3: removing the last watcher releases its streams.
        let mut released = table.remove(2);
        released.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        assert_eq!(released, [key("ETHUSDT"), key("SOLUSDT")]);
        assert_eq!(table.watched(), [key("BTCUSDT")]);
        assert_eq!(table.subscriber_count(), 1);
    }

    #[test]
    fn a_full_buffer_cuts_its_subscriber_only_and_says_why() {
        let mut table = SubscriberTable::default();
        let (mut slow, slow_cut) = add(&mut table, 1, 2);
        let (mut fast, fast_cut) = add(&mut table, 2, 2);
        table.subscribe(1, &[key("BTCUSDT")]);
        table.subscribe(2, &[key("BTCUSDT")]);
        let message = closed("BTCUSDT");
        for round in 0..3 {
            let published = table.publish(&key("BTCUSDT"), &message, 2);
            if round < 2 {
                assert_eq!(published, Published { delivered: 2, ..Published::default() }, "round {round}");
            } else {
                // The slow one is full at the third; the fast one takes it.
                assert_eq!(published.delivered, 1);
                assert_eq!(published.overflowed, [1]);
                assert!(published.released.is_empty(), "the fast one still watches");
            }
            assert!(fast.try_recv().is_ok());
        }
        assert_eq!(slow_cut.reason(), Some(Disconnected::Overflow(2)));
        assert_eq!(fast_cut.reason(), None);
        // The slow one reads what its buffer held, then learns the hub let go.
        assert!(slow.try_recv().is_ok() && slow.try_recv().is_ok());
        assert!(matches!(slow.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
        assert_eq!(table.subscriber_count(), 1);
        // TC: a subscriber that went away is dropped quietly, and its stream released.
        drop(fast);
        let published = table.publish(&key("BTCUSDT"), &message, 2);
        assert_eq!((published.delivered, published.overflowed.len()), (0, 0));
        assert_eq!(published.released, [key("BTCUSDT")]);
        assert_eq!(fast_cut.reason(), None);
    }

    #[test]
    fn a_publication_reaches_only_the_feeds_that_take_it() {
        let mut table = SubscriberTable::default();
        let (sender, mut events_only) = mpsc::channel(4);
        table.insert(1, sender, Feed::EVENTS, Arc::default());
        let (mut all, _) = add(&mut table, 2, 4);
        table.subscribe(1, &[key("BTCUSDT")]);
        table.subscribe(2, &[key("BTCUSDT")]);
        // TC0: a closed candle goes to the feed that takes closed candles only.
        assert_eq!(table.publish(&key("BTCUSDT"), &closed("BTCUSDT"), 4).delivered, 1);
        assert!(events_only.try_recv().is_err());
        assert!(all.try_recv().is_ok());
        // TC1: a stream nobody watches reaches nobody.
        assert_eq!(table.publish(&key("ETHUSDT"), &closed("ETHUSDT"), 4), Published::default());
    }
}
