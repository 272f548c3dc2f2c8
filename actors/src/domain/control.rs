//! One WebSocket's control messages (SUBSCRIBE/UNSUBSCRIBE): queued, paced under Binance's 5 incoming messages a
//! second per connection, and tracked until acknowledged. Pure: the caller passes the time and the request ids.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A control message, naming streams by their index on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Subscribe(Vec<usize>),
    Unsubscribe(Vec<usize>),
}

/// The control messages of one socket.
#[derive(Debug, Clone)]
pub struct ControlQueue {
    /// The least time between two messages sent.
    interval: Duration,
    pending: VecDeque<Control>,
    /// SUBSCRIBE request ids awaiting their acknowledgement, with the streams they cover.
    awaiting_ack: HashMap<i64, Vec<usize>>,
    last_sent: Option<Instant>,
}

impl ControlQueue {
    pub fn new(interval: Duration) -> Self {
        Self { interval, pending: VecDeque::new(), awaiting_ack: HashMap::new(), last_sent: None }
    }

    /// Queues SUBSCRIBEs for `streams`, `per_message` of them in each.
    pub fn subscribe(&mut self, streams: &[usize], per_message: usize) {
        let chunks = streams.chunks(per_message.max(1));
        self.pending.extend(chunks.map(|chunk| Control::Subscribe(chunk.to_vec())));
    }

    /// Queues an UNSUBSCRIBE and a SUBSCRIBE of one stream, unless its resubscribe is queued already (a silent stream
    /// asks again while the queue drains slowly). Returns whether it queued them.
    pub fn resubscribe(&mut self, stream: usize) -> bool {
        let queued = self.pending.iter().any(|c| matches!(c, Control::Subscribe(s) if s.as_slice() == [stream]));
        if !queued {
            self.pending.push_back(Control::Unsubscribe(vec![stream]));
            self.pending.push_back(Control::Subscribe(vec![stream]));
        }
        !queued
    }

    /// The next message to send at `now` with request id `id`, if one is queued and the pacing allows it. The
    /// interval counts from the last message sent, not from the caller's ticks: missed ticks never make a burst.
    /// A SUBSCRIBE is then awaited under `id`.
    pub fn next_due(&mut self, now: Instant, id: i64) -> Option<Control> {
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
    pub fn acknowledged(&mut self, id: i64) -> Option<Vec<usize>> {
        self.awaiting_ack.remove(&id)
    }

    /// Whether `stream`'s SUBSCRIBE is queued or awaits its acknowledgement.
    pub fn subscribing(&self, stream: usize) -> bool {
        self.awaiting_ack.values().any(|streams| streams.contains(&stream))
            || self.pending.iter().any(|c| matches!(c, Control::Subscribe(s) if s.contains(&stream)))
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
        assert!(!queue.settled() && queue.subscribing(1));
        assert!(queue.next_due(now, 7).is_some());
        // TC0: sent but not acknowledged: still subscribing, not settled.
        assert!(!queue.settled() && queue.subscribing(0) && !queue.subscribing(2));
        // TC1: an unknown id acknowledges nothing; the right one names the streams.
        assert_eq!(queue.acknowledged(8), None);
        assert_eq!(queue.acknowledged(7), Some(vec![0, 1]));
        assert!(queue.settled() && !queue.subscribing(0));
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
}
