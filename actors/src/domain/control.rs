//! One WebSocket's control messages (SUBSCRIBE/UNSUBSCRIBE): queued, paced under Binance's 5 incoming messages a
//! second per connection, and tracked until acknowledged. Pure: the caller passes the time and the request ids.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A control message, naming streams by `S` (their key on a connection; an index in the tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control<S> {
    Subscribe(Vec<S>),
    Unsubscribe(Vec<S>),
}

/// The control messages of one socket.
#[derive(Debug, Clone)]
pub struct ControlQueue<S> {
    /// The least time between two messages sent.
    interval: Duration,
    pending: VecDeque<Control<S>>,
    /// SUBSCRIBE request ids awaiting their acknowledgement, with the streams they cover.
    awaiting_ack: HashMap<i64, Vec<S>>,
    last_sent: Option<Instant>,
}

impl<S: Clone + PartialEq> ControlQueue<S> {
    pub fn new(interval: Duration) -> Self {
        Self { interval, pending: VecDeque::new(), awaiting_ack: HashMap::new(), last_sent: None }
    }

    /// Queues SUBSCRIBEs for `streams`, `per_message` of them in each.
    pub fn subscribe(&mut self, streams: &[S], per_message: usize) {
        let chunks = streams.chunks(per_message.max(1));
        self.pending.extend(chunks.map(|chunk| Control::Subscribe(chunk.to_vec())));
    }

    /// Queues UNSUBSCRIBEs for `streams`, `per_message` of them in each, and drops them from the SUBSCRIBEs still
    /// queued (a stream removed before its SUBSCRIBE went out is never subscribed).
    pub fn unsubscribe(&mut self, streams: &[S], per_message: usize) {
        for control in &mut self.pending {
            if let Control::Subscribe(queued) = control {
                queued.retain(|s| !streams.contains(s));
            }
        }
        self.pending.retain(|c| !matches!(c, Control::Subscribe(s) if s.is_empty()));
        let chunks = streams.chunks(per_message.max(1));
        self.pending.extend(chunks.map(|chunk| Control::Unsubscribe(chunk.to_vec())));
    }

    /// Queues an UNSUBSCRIBE and a SUBSCRIBE of one stream, unless its resubscribe is queued already (a silent stream
    /// asks again while the queue drains slowly). Returns whether it queued them.
    pub fn resubscribe(&mut self, stream: S) -> bool {
        let queued = self.pending.iter().any(|c| matches!(c, Control::Subscribe(s) if s.len() == 1 && s[0] == stream));
        if !queued {
            self.pending.push_back(Control::Unsubscribe(vec![stream.clone()]));
            self.pending.push_back(Control::Subscribe(vec![stream]));
        }
        !queued
    }

    /// The next message to send at `now` with request id `id`, if one is queued and the pacing allows it. The
    /// interval counts from the last message sent, not from the caller's ticks: missed ticks never make a burst.
    /// A SUBSCRIBE is then awaited under `id`.
    pub fn next_due(&mut self, now: Instant, id: i64) -> Option<Control<S>> {
        if self.last_sent.is_some_and(|at| now.saturating_duration_since(at) < self.interval) {
            return None;
        }
        let control = self.pending.pop_front()?;
        self.last_sent = Some(now);
        if let Control::Subscribe(streams) = &control {
            self.awaiting_ack.insert(id, streams.clone());
        }
        Some(control)
    }

    /// The streams whose SUBSCRIBE `id` acknowledges, if it was awaited here.
    pub fn acknowledged(&mut self, id: i64) -> Option<Vec<S>> {
        self.awaiting_ack.remove(&id)
    }

    /// Whether `stream`'s SUBSCRIBE is queued or awaits its acknowledgement.
    pub fn subscribing(&self, stream: &S) -> bool {
        self.awaiting_ack.values().any(|streams| streams.contains(stream))
            || self.pending.iter().any(|c| matches!(c, Control::Subscribe(s) if s.contains(stream)))
    }

    /// Every stream is subscribed and acknowledged.
    pub fn settled(&self) -> bool {
        self.pending.is_empty() && self.awaiting_ack.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(250);

    #[test]
    fn messages_are_paced_from_the_last_one_sent() {
        let start = Instant::now();
        let mut queue = ControlQueue::new(INTERVAL);
        queue.subscribe(&[0, 1, 2, 3, 4], 2);
        // TC0: the first goes at once, in chunks of two.
        assert_eq!(queue.next_due(start, 1), Some(Control::Subscribe(vec![0, 1])));
        // TC1: within the interval, nothing; missed ticks later do not burst.
        assert_eq!(queue.next_due(start + Duration::from_millis(249), 2), None);
        let late = start + Duration::from_secs(5);
        assert_eq!(queue.next_due(late, 2), Some(Control::Subscribe(vec![2, 3])));
        assert_eq!(queue.next_due(late, 3), None);
        assert_eq!(queue.next_due(late + INTERVAL, 3), Some(Control::Subscribe(vec![4])));
        // TC2: an empty queue sends nothing, and does not move the pacing.
        assert_eq!(queue.next_due(late + 3 * INTERVAL, 4), None);
    }

    #[test]
    fn subscribes_are_awaited_until_acknowledged() {
        let now = Instant::now();
        let mut queue = ControlQueue::new(INTERVAL);
        queue.subscribe(&[0, 1], 100);
        assert!(!queue.settled() && queue.subscribing(&1));
        assert!(queue.next_due(now, 7).is_some());
        // TC0: sent but not acknowledged: still subscribing, not settled.
        assert!(!queue.settled() && queue.subscribing(&0) && !queue.subscribing(&2));
        // TC1: an unknown id acknowledges nothing; the right one names the streams.
        assert_eq!(queue.acknowledged(8), None);
        assert_eq!(queue.acknowledged(7), Some(vec![0, 1]));
        assert!(queue.settled() && !queue.subscribing(&0));
    }

    #[test]
    fn a_resubscribe_is_queued_once_and_unsubscribes_first() {
        let now = Instant::now();
        let mut queue = ControlQueue::new(INTERVAL);
        // TC0: queued as UNSUBSCRIBE then SUBSCRIBE.
        assert!(queue.resubscribe(3));
        // TC1: asked again while queued: nothing more.
        assert!(!queue.resubscribe(3));
        assert!(queue.resubscribe(4));
        assert_eq!(queue.next_due(now, 1), Some(Control::Unsubscribe(vec![3])));
        // An UNSUBSCRIBE awaits no acknowledgement.
        assert_eq!(queue.acknowledged(1), None);
        assert_eq!(queue.next_due(now + INTERVAL, 2), Some(Control::Subscribe(vec![3])));
        // TC2: once its SUBSCRIBE went out, a new resubscribe may be queued.
        assert!(queue.resubscribe(3));
    }

    #[test]
    fn an_unsubscribe_drops_the_streams_still_queued_to_subscribe() {
        let now = Instant::now();
        let mut queue = ControlQueue::new(INTERVAL);
        queue.subscribe(&[0, 1, 2], 2);
        // TC0: a stream whose SUBSCRIBE is still queued leaves it; one is UNSUBSCRIBEd after, chunked.
        queue.unsubscribe(&[1, 2], 1);
        assert!(!queue.subscribing(&1) && queue.subscribing(&0));
        assert_eq!(queue.next_due(now, 1), Some(Control::Subscribe(vec![0])));
        // TC1: a SUBSCRIBE emptied by it is not sent at all.
        assert_eq!(queue.next_due(now + INTERVAL, 2), Some(Control::Unsubscribe(vec![1])));
        assert_eq!(queue.next_due(now + 2 * INTERVAL, 3), Some(Control::Unsubscribe(vec![2])));
        assert_eq!(queue.next_due(now + 3 * INTERVAL, 4), None);
        // TC2: an UNSUBSCRIBE awaits no acknowledgement: the queue settles once the SUBSCRIBE is acknowledged.
        assert_eq!(queue.acknowledged(1), Some(vec![0]));
        assert!(queue.settled());
    }
}
