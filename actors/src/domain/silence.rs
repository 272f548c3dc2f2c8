//! The escalation ladder of a silent stream: resubscribe first; if the data does not come back, replace the
//! connection; then start over. Pure: the caller passes the time.

use std::time::{Duration, Instant};

/// What a silent stream asks its connection to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceStep {
    /// UNSUBSCRIBE and SUBSCRIBE the stream again.
    Resubscribe,
    /// A resubscribe did not bring the data back: the connection is a zombie (it may still answer pings).
    /// Replace it, making the new one before breaking the old.
    ReplaceConnection,
}

/// Watches one stream's silence.
#[derive(Debug, Clone)]
pub struct SilenceWatch {
    /// Silence before the stream is stale and resubscribed (Binance sends an update every 2 s per stream).
    stale_after: Duration,
    /// Silence after a resubscribe before the connection is replaced.
    replace_after: Duration,
    last_update: Instant,
    /// The last step taken in this silent spell, and when.
    last_step: Option<(SilenceStep, Instant)>,
}

impl SilenceWatch {
    pub fn new(stale_after: Duration, replace_after: Duration, now: Instant) -> Self {
        Self { stale_after, replace_after, last_update: now, last_step: None }
    }

    /// Data arrived: the silent spell, if any, is over.
    pub fn on_update(&mut self, now: Instant) {
        self.last_update = now;
        self.last_step = None;
    }

    /// The stream was (re)announced live on a connection. A new connection gets a full cadence before the first
    /// step; a resubscribe's acknowledgement is no data, so a silent spell climbs on.
    pub fn on_live(&mut self, now: Instant) {
        if self.last_step.is_none() {
            self.last_update = now;
        }
    }

    /// The next step of the ladder: since when the silence is counted, how long it may last, and the step then.
    fn next_step(&self) -> (Instant, Duration, SilenceStep) {
        match self.last_step {
            None => (self.last_update, self.stale_after, SilenceStep::Resubscribe),
            Some((SilenceStep::Resubscribe, at)) => (at, self.replace_after, SilenceStep::ReplaceConnection),
            Some((SilenceStep::ReplaceConnection, at)) => (at, self.stale_after, SilenceStep::Resubscribe),
        }
    }

    /// The step due at `now`, if any. Each step is returned once; the ladder climbs while the silence lasts.
    pub fn check(&mut self, now: Instant) -> Option<SilenceStep> {
        let (since, wait, step) = self.next_step();
        if now.saturating_duration_since(since) <= wait {
            return None;
        }
        self.last_step = Some((step, now));
        Some(step)
    }

    /// The instant the next step falls due unless data arrives meanwhile: [`check`](Self::check) returns it at any
    /// time after this one.
    pub fn next_step_at(&self) -> Instant {
        let (since, wait, _) = self.next_step();
        since + wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn silence_climbs_from_resubscribe_to_replacement_and_data_resets_it() {
        let start = Instant::now();
        let mut watch = SilenceWatch::new(2 * SECOND, 3 * SECOND, start);
        // TC0: within the cadence, nothing.
        assert_eq!(watch.check(start + 2 * SECOND), None);
        // TC1: stale: resubscribe, once.
        assert_eq!(watch.check(start + 3 * SECOND), Some(SilenceStep::Resubscribe));
        assert_eq!(watch.check(start + 5 * SECOND), None);
        // TC2: still silent after the resubscribe: replace the connection, once.
        assert_eq!(watch.check(start + 6 * SECOND + Duration::from_millis(1)), Some(SilenceStep::ReplaceConnection));
        assert_eq!(watch.check(start + 7 * SECOND), None);
        // TC3: still silent after the replacement: the ladder starts over.
        assert_eq!(watch.check(start + 9 * SECOND), Some(SilenceStep::Resubscribe));
        // TC4: a resubscribe's acknowledgement (the stream announced live again) does not stop the climb.
        watch.on_live(start + 9 * SECOND + Duration::from_millis(500));
        assert_eq!(watch.check(start + 12 * SECOND + Duration::from_millis(1)), Some(SilenceStep::ReplaceConnection));
        // TC5: data resets it; the next silence starts from the bottom.
        watch.on_update(start + 10 * SECOND);
        assert_eq!(watch.check(start + 12 * SECOND), None);
        assert_eq!(watch.check(start + 12 * SECOND + Duration::from_millis(1)), Some(SilenceStep::Resubscribe));
        // TC6: outside a silent spell, a new connection starts the cadence afresh.
        watch.on_update(start + 20 * SECOND);
        watch.on_live(start + 21 * SECOND);
        assert_eq!(watch.check(start + 23 * SECOND), None);
        assert_eq!(watch.check(start + 23 * SECOND + Duration::from_millis(1)), Some(SilenceStep::Resubscribe));
    }

    #[test]
    fn the_next_step_falls_due_right_after_the_instant_it_names() {
        let start = Instant::now();
        let mut watch = SilenceWatch::new(2 * SECOND, 3 * SECOND, start);
        // TC0: the first step counts from the last update; data moves it.
        assert_eq!(watch.next_step_at(), start + 2 * SECOND);
        watch.on_update(start + SECOND);
        assert_eq!(watch.next_step_at(), start + 3 * SECOND);
        assert_eq!(watch.check(watch.next_step_at()), None);
        // TC1: right after it, the step is taken; the next one counts from it.
        let at = watch.next_step_at() + Duration::from_millis(1);
        assert_eq!(watch.check(at), Some(SilenceStep::Resubscribe));
        assert_eq!(watch.next_step_at(), at + 3 * SECOND);
        assert_eq!(watch.check(at + 3 * SECOND), None);
        assert_eq!(watch.check(at + 3 * SECOND + Duration::from_millis(1)), Some(SilenceStep::ReplaceConnection));
    }
}
