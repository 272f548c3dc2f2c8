//! The bounded queue between the hub and the publisher. The hub pushes and never waits: when the queue is full the
//! oldest entry is dropped, and a dropped closed candle is remembered (its stream then catches up from the store,
//! where it is committed). In-progress updates dropped are simply gone: they are not kept anywhere.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::domain::{Candle, StreamKey};
use crate::hub::ClosedCandle;

/// One entry of the queue.
#[derive(Debug, Clone)]
pub enum Queued {
    /// A committed closed candle with its indicator values.
    Closed(Arc<ClosedCandle>),
    /// An in-progress update (for the core NATS `live` subjects).
    Live(StreamKey, Candle),
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<Queued>,
    /// Closed candles dropped since the publisher last looked: (stream, open time).
    dropped: Vec<(StreamKey, i64)>,
}

/// The queue. Cheap to clone: clones share it.
#[derive(Debug, Clone)]
pub struct PublishQueue(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    capacity: usize,
    depth: AtomicUsize,
    dropped_total: AtomicUsize,
    notify: Notify,
}

/// What the publisher takes from the queue at once.
#[derive(Debug, Default)]
pub struct Taken {
    pub entries: Vec<Queued>,
    /// Closed candles dropped for want of room: their streams catch up from the store.
    pub dropped: Vec<(StreamKey, i64)>,
}

impl PublishQueue {
    pub fn new(capacity: usize) -> Self {
        Self(Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            depth: AtomicUsize::new(0),
            dropped_total: AtomicUsize::new(0),
            notify: Notify::new(),
        }))
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.0.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an entry; when full, the oldest goes.
    pub fn push(&self, entry: Queued) {
        let mut inner = self.inner();
        if inner.entries.len() >= self.0.capacity
            && let Some(oldest) = inner.entries.pop_front()
        {
            self.0.dropped_total.fetch_add(1, Ordering::Relaxed);
            if let Queued::Closed(closed) = oldest {
                inner.dropped.push((closed.key.clone(), closed.candle.open_time));
            }
        }
        inner.entries.push_back(entry);
        self.0.depth.store(inner.entries.len(), Ordering::Relaxed);
        drop(inner);
        self.0.notify.notify_one();
    }

    /// Everything queued, and what was dropped, in order.
    pub fn take(&self) -> Taken {
        let mut inner = self.inner();
        let taken = Taken { entries: inner.entries.drain(..).collect(), dropped: std::mem::take(&mut inner.dropped) };
        self.0.depth.store(0, Ordering::Relaxed);
        taken
    }

    /// Resolves when something was pushed since the last call (or at once if something was pushed before).
    pub async fn pushed(&self) {
        self.0.notify.notified().await;
    }

    pub fn depth(&self) -> usize {
        self.0.depth.load(Ordering::Relaxed)
    }

    /// Entries dropped for want of room, since the start.
    pub fn dropped_total(&self) -> usize {
        self.0.dropped_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timeframe;
    use crate::domain::fixtures::minute_candle;

    fn closed(minute: i64) -> Queued {
        let key = StreamKey::new("BTCUSDT", Timeframe::M1);
        let candle = minute_candle(minute, 1.0, true);
        Queued::Closed(Arc::new(ClosedCandle { key, candle, names: Arc::from(Vec::new()), values: Vec::new() }))
    }

    fn opens(taken: &Taken) -> Vec<i64> {
        let open = |e: &Queued| match e {
            Queued::Closed(c) => c.candle.open_time,
            Queued::Live(_, c) => c.open_time,
        };
        taken.entries.iter().map(open).collect()
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_remembers_dropped_closed_candles() {
        let queue = PublishQueue::new(2);
        let key = StreamKey::new("BTCUSDT", Timeframe::M1);
        // TC0: within capacity: everything, in order.
        queue.push(closed(0));
        queue.push(closed(1));
        assert_eq!(queue.depth(), 2);
        let taken = queue.take();
        assert_eq!((opens(&taken), taken.dropped.len(), queue.depth()), (vec![0, 60_000], 0, 0));
        // TC1: one over: the oldest closed candle is dropped and remembered.
        for minute in 2..5 {
            queue.push(closed(minute));
        }
        let taken = queue.take();
        assert_eq!(opens(&taken), [3 * 60_000, 4 * 60_000]);
        assert_eq!(taken.dropped, [(key.clone(), 2 * 60_000)]);
        // TC2: a dropped in-progress update is only counted.
        queue.push(Queued::Live(key.clone(), minute_candle(5, 1.0, false)));
        queue.push(closed(6));
        queue.push(closed(7));
        let taken = queue.take();
        assert!(taken.dropped.is_empty());
        assert_eq!(queue.dropped_total(), 2);
    }
}
