//! The task table's vocabulary: what a task is (name, kind, priority, restart policy), its live counters, and the
//! restart policies that turn priority and auto-restart into decisions.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::domain::{Backoff, BackoffPolicy, Timeframe};

/// How much the system depends on a task. It picks the task's restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Always restarted, with capped, jittered exponential back-off. `/health` is 503 while one is down.
    Critical,
    /// Restarted within a budget of restarts per window, then marked failed.
    High,
    /// Like `High`.
    Normal,
    /// Never restarted.
    Low,
}

/// What kind of work a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Storage,
    Connection,
    Subscription,
    Indicator,
    Backfill,
    History,
    Audit,
    /// The NATS JetStream publisher (`[nats] enabled`).
    Publisher,
}

impl TaskKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Storage => "storage",
            Self::Connection => "connection",
            Self::Subscription => "subscription",
            Self::Indicator => "indicator",
            Self::Backfill => "backfill",
            Self::History => "history",
            Self::Audit => "audit",
            Self::Publisher => "publisher",
        }
    }
}

/// The limits of the `High`/`Normal` restart budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartBudget {
    pub max_restarts: u32,
    pub window: Duration,
}

/// What happens when a task stops on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart after a back-off, forever.
    Always(BackoffPolicy),
    /// Restart after a back-off while fewer than `budget.max_restarts` happened within `budget.window`.
    Budget(RestartBudget, BackoffPolicy),
    /// Stay down.
    Never,
    /// Run once; finishing is success, and not finishing within `timeout` is failure.
    RunOnce { timeout: Duration },
}

impl RestartPolicy {
    /// The policy that stands for a priority and an auto-restart flag.
    pub fn for_task(
        priority: Priority,
        auto_restart: bool,
        timeout: Duration,
        budget: RestartBudget,
        backoff: BackoffPolicy,
    ) -> Self {
        match (auto_restart, priority) {
            (false, _) => Self::RunOnce { timeout },
            (true, Priority::Critical) => Self::Always(backoff),
            (true, Priority::High | Priority::Normal) => Self::Budget(budget, backoff),
            (true, Priority::Low) => Self::Never,
        }
    }

    /// A short description for the status endpoint, such as `budget(5 in 60s)`.
    pub fn describe(&self) -> String {
        match self {
            Self::Always(_) => "always".to_owned(),
            Self::Budget(budget, _) => format!("budget({} in {}s)", budget.max_restarts, budget.window.as_secs()),
            Self::Never => "never".to_owned(),
            Self::RunOnce { timeout } => format!("run_once(timeout {}s)", timeout.as_secs()),
        }
    }
}

/// The decision after a task stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    RestartAfter(Duration),
    GiveUp,
}

/// Applies a [`RestartPolicy`] to one task's failures: the back-off, the ring of recent restart times, and when
/// the task may work again. A supervised actor calls [`RestartTracker::restarting`] from `Supervised::restarting`
/// and asks [`RestartTracker::resume_after`] in `started`.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    backoff: Option<Backoff>,
    recent: VecDeque<Instant>,
    /// How long to wait before working again; `None` once the policy has given up.
    resume_after: Option<Duration>,
}

impl RestartTracker {
    pub fn new(policy: RestartPolicy) -> Self {
        let backoff = match policy {
            RestartPolicy::Always(backoff) | RestartPolicy::Budget(_, backoff) => Some(Backoff::new(backoff)),
            RestartPolicy::Never | RestartPolicy::RunOnce { .. } => None,
        };
        Self { policy, backoff, recent: VecDeque::new(), resume_after: Some(Duration::ZERO) }
    }

    /// The task stopped at `now`: restart it after a delay, or give up.
    pub fn on_stop(&mut self, now: Instant) -> RestartDecision {
        if let RestartPolicy::Budget(budget, _) = self.policy {
            while self.recent.front().is_some_and(|&t| now.duration_since(t) > budget.window) {
                self.recent.pop_front();
            }
            if self.recent.len() >= budget.max_restarts as usize {
                return RestartDecision::GiveUp;
            }
            self.recent.push_back(now);
        }
        match &mut self.backoff {
            Some(backoff) => RestartDecision::RestartAfter(backoff.next_delay()),
            None => RestartDecision::GiveUp,
        }
    }

    /// The actor stopped and is being restarted: counts it in `stats` and applies the policy. When the policy
    /// gives up, the task is marked failed and must stay idle (actix cannot refuse a restart).
    pub fn restarting(&mut self, stats: &TaskStats) {
        stats.record_restart();
        self.resume_after = match self.on_stop(Instant::now()) {
            RestartDecision::RestartAfter(delay) => Some(delay),
            RestartDecision::GiveUp => {
                stats.set_state(TaskState::Failed);
                None
            }
        };
    }

    /// In `started`: how long to wait before working, or `None` when the task has failed for good.
    pub fn resume_after(&self) -> Option<Duration> {
        self.resume_after
    }

    /// Skip the back-off of the coming restart (the exchange asked for an immediate reconnect).
    pub fn resume_now(&mut self) {
        if let Some(delay) = &mut self.resume_after {
            *delay = Duration::ZERO;
        }
    }

    /// The task has worked since its last restart: the next failure backs off from the start again.
    pub fn on_healthy(&mut self) {
        if let Some(backoff) = &mut self.backoff {
            backoff.reset();
        }
    }
}

/// The life-cycle state of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TaskState {
    Starting = 0,
    Running = 1,
    Restarting = 2,
    Failed = 3,
    Finished = 4,
    Stopped = 5,
    /// Alive, but its data stopped arriving (a stream silent past its cadence).
    Stale = 6,
    /// Alive and keeping its work, but its outside dependency is unreachable for now (storage retrying a database
    /// server that restarts): `/health` is degraded, not unhealthy, while a task is.
    Degraded = 7,
}

impl TaskState {
    pub const ALL: [TaskState; 8] = [
        Self::Starting,
        Self::Running,
        Self::Restarting,
        Self::Failed,
        Self::Finished,
        Self::Stopped,
        Self::Stale,
        Self::Degraded,
    ];

    /// The state's name, as in JSON and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
            Self::Finished => "finished",
            Self::Stopped => "stopped",
            Self::Stale => "stale",
            Self::Degraded => "degraded",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Starting,
            1 => Self::Running,
            2 => Self::Restarting,
            3 => Self::Failed,
            4 => Self::Finished,
            6 => Self::Stale,
            7 => Self::Degraded,
            _ => Self::Stopped,
        }
    }

    /// Not doing its work: restarting, failed, stale, degraded, or stopped before it finished.
    pub fn is_down(self) -> bool {
        matches!(self, Self::Restarting | Self::Failed | Self::Stopped | Self::Stale | Self::Degraded)
    }
}

impl Serialize for TaskState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The static description of a task: its row in the task table.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub name: String,
    pub kind: TaskKind,
    pub symbol: Option<String>,
    pub timeframe: Option<Timeframe>,
    pub priority: Priority,
    pub auto_restart: bool,
    pub policy: RestartPolicy,
    pub timeout: Duration,
    /// Free-form facts about the task, such as a connection's URL and stream count.
    pub metadata: Vec<(String, String)>,
}

/// The live counters of one task, shared between the task, its senders and the health actor.
///
/// actix exposes no queue length, so the mailbox depth is `sent - handled`: senders count `sent`, and the task
/// counts `handled` at the start of every handler.
#[derive(Debug)]
pub struct TaskStats {
    state: AtomicU8,
    restarts: AtomicU64,
    sent: AtomicU64,
    handled: AtomicU64,
    last_message_ms: AtomicI64,
    mailbox_capacity: usize,
    /// The last error the task met, with when (ms UTC).
    last_error: Mutex<Option<(String, i64)>>,
}

impl TaskStats {
    pub fn new(mailbox_capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            state: AtomicU8::new(TaskState::Starting as u8),
            restarts: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            last_message_ms: AtomicI64::new(0),
            mailbox_capacity,
            last_error: Mutex::new(None),
        })
    }

    pub fn set_state(&self, state: TaskState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> TaskState {
        TaskState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.set_state(TaskState::Restarting);
    }

    pub fn record_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// The actor was replaced: what was queued for the old one is gone, so the depth starts from zero again.
    pub fn forget_queued(&self) {
        self.sent.store(self.handled.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Counts one message taken from the mailbox, stamped with the wall-clock time.
    pub fn record_handled(&self) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.last_message_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// Stamps activity that is not a mailbox message, such as a frame read from a socket.
    pub fn record_activity(&self) {
        self.last_message_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// Records the error the task just met (shown on the status endpoint with its time).
    pub fn record_error(&self, error: impl Into<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some((error.into(), unix_ms()));
    }

    /// Marks the task failed for `error`.
    pub fn fail(&self, error: impl Into<String>) {
        self.record_error(error);
        self.set_state(TaskState::Failed);
    }

    pub fn snapshot(&self) -> TaskCounters {
        let handled = self.handled.load(Ordering::Relaxed);
        let sent = self.sent.load(Ordering::Relaxed);
        let last = self.last_message_ms.load(Ordering::Relaxed);
        let last_error = self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        TaskCounters {
            state: self.state(),
            restarts: self.restarts.load(Ordering::Relaxed),
            messages_handled: handled,
            mailbox_depth: sent.saturating_sub(handled),
            mailbox_capacity: self.mailbox_capacity,
            last_message_ms: (last > 0).then_some(last),
            last_error_at: last_error.as_ref().map(|(_, at)| *at),
            last_error: last_error.map(|(error, _)| error),
        }
    }
}

/// A consistent-enough reading of a task's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskCounters {
    pub state: TaskState,
    pub restarts: u64,
    pub messages_handled: u64,
    pub mailbox_depth: u64,
    pub mailbox_capacity: usize,
    /// When the task last took a message (for a connection: read a frame), ms UTC.
    pub last_message_ms: Option<i64>,
    /// The last error the task met, with its causes.
    pub last_error: Option<String>,
    /// When it met it, ms UTC.
    pub last_error_at: Option<i64>,
}

/// Wall-clock now, ms UTC.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: RestartBudget = RestartBudget { max_restarts: 2, window: Duration::from_secs(60) };

    fn policy(priority: Priority, auto_restart: bool) -> RestartPolicy {
        RestartPolicy::for_task(priority, auto_restart, Duration::from_secs(5), BUDGET, BackoffPolicy::default())
    }

    #[test]
    fn priority_and_auto_restart_pick_the_policy() {
        assert!(matches!(policy(Priority::Critical, true), RestartPolicy::Always(_)));
        assert!(matches!(policy(Priority::High, true), RestartPolicy::Budget(..)));
        assert!(matches!(policy(Priority::Normal, true), RestartPolicy::Budget(..)));
        assert_eq!(policy(Priority::Low, true), RestartPolicy::Never);
        assert_eq!(policy(Priority::Critical, false), RestartPolicy::RunOnce { timeout: Duration::from_secs(5) });
    }

    #[test]
    fn budget_gives_up_after_max_restarts_in_the_window_and_recovers_after_it() {
        let mut tracker = RestartTracker::new(policy(Priority::High, true));
        let start = Instant::now();
        assert!(matches!(tracker.on_stop(start), RestartDecision::RestartAfter(_)));
        assert!(matches!(tracker.on_stop(start + Duration::from_secs(1)), RestartDecision::RestartAfter(_)));
        assert_eq!(tracker.on_stop(start + Duration::from_secs(2)), RestartDecision::GiveUp);
        // Outside the window the old restarts no longer count.
        assert!(matches!(tracker.on_stop(start + Duration::from_secs(62)), RestartDecision::RestartAfter(_)));
    }

    #[test]
    fn critical_always_restarts_and_low_never_does() {
        let mut critical = RestartTracker::new(policy(Priority::Critical, true));
        let now = Instant::now();
        for _ in 0..100 {
            assert!(matches!(critical.on_stop(now), RestartDecision::RestartAfter(d) if d <= Duration::from_secs(30)));
        }
        assert_eq!(RestartTracker::new(policy(Priority::Low, true)).on_stop(now), RestartDecision::GiveUp);
        assert_eq!(RestartTracker::new(policy(Priority::High, false)).on_stop(now), RestartDecision::GiveUp);
    }

    #[test]
    fn restarting_sets_when_to_resume_and_marks_a_given_up_task_failed() {
        let stats = TaskStats::new(16);
        let mut tracker = RestartTracker::new(policy(Priority::High, true));
        assert_eq!(tracker.resume_after(), Some(Duration::ZERO), "a fresh task starts at once");
        tracker.restarting(&stats);
        assert!(tracker.resume_after().is_some_and(|d| d <= Duration::from_millis(250)));
        tracker.resume_now();
        assert_eq!(tracker.resume_after(), Some(Duration::ZERO));
        tracker.restarting(&stats);
        tracker.restarting(&stats);
        assert_eq!(tracker.resume_after(), None, "the budget of 2 is spent");
        assert_eq!((stats.state(), stats.snapshot().restarts), (TaskState::Failed, 3));
    }

    #[test]
    fn mailbox_depth_is_sent_minus_handled() {
        let stats = TaskStats::new(16);
        stats.record_sent();
        stats.record_sent();
        stats.record_handled();
        let counters = stats.snapshot();
        assert_eq!((counters.mailbox_depth, counters.messages_handled, counters.mailbox_capacity), (1, 1, 16));
        assert!(counters.last_message_ms.is_some());
        assert_eq!((counters.last_error, counters.last_error_at), (None, None));
    }

    #[test]
    fn a_failure_keeps_its_reason_and_time() {
        let stats = TaskStats::new(16);
        stats.record_error("first");
        stats.fail("HTTP 400, code -1121: Invalid symbol.");
        let counters = stats.snapshot();
        assert_eq!(counters.state, TaskState::Failed);
        assert_eq!(counters.last_error.as_deref(), Some("HTTP 400, code -1121: Invalid symbol."));
        assert!(counters.last_error_at.is_some_and(|at| (at - unix_ms()).abs() < 60_000));
    }
}
