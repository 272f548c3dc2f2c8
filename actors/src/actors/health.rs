//! The health actor: keeps the live task table (specs from the supervisor, counters shared with the tasks) and
//! answers the HTTP layer's questions about it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use serde::Serialize;

use crate::domain::StreamKey;
use crate::metrics::Metrics;
use crate::streams::{DataIssue, StreamCounters, StreamHealth};
use crate::tasks::{Priority, TaskCounters, TaskKind, TaskSpec, TaskState, TaskStats};

/// Add a task to the table, or replace the spec of the task of that name (its counters stay).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RegisterTask {
    pub spec: Arc<TaskSpec>,
    pub stats: Arc<TaskStats>,
}

/// Remove tasks from the table, by name: their streams were removed from the config, or their connection closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnregisterTasks(pub Vec<String>);

/// Add a stream's completeness counters.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RegisterStream(pub Arc<StreamHealth>);

/// Remove streams' completeness counters: the streams were removed from the config.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnregisterStreams(pub Vec<StreamKey>);

/// Every stream's completeness counters, in registration order.
#[derive(Message)]
#[rtype(result = "Vec<(StreamKey, StreamCounters)>")]
pub struct GetStreams;

/// A snapshot of every task and the overall verdict.
#[derive(Message)]
#[rtype(result = "HealthReport")]
pub struct GetHealth;

/// Healthy: everything runs. Degraded: a non-critical task is down, a task is degraded (storage retrying an
/// unreachable database), or a stream lacks closed candles past their repair deadline. Unhealthy: a critical task
/// is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TaskCounts {
    pub total: usize,
    pub starting: usize,
    pub running: usize,
    pub restarting: usize,
    pub failed: usize,
    pub finished: usize,
    pub stopped: usize,
    pub stale: usize,
    pub degraded: usize,
}

impl TaskCounts {
    /// The count of tasks in `state`.
    fn of(&mut self, state: TaskState) -> &mut usize {
        match state {
            TaskState::Starting => &mut self.starting,
            TaskState::Running => &mut self.running,
            TaskState::Restarting => &mut self.restarting,
            TaskState::Failed => &mut self.failed,
            TaskState::Finished => &mut self.finished,
            TaskState::Stopped => &mut self.stopped,
            TaskState::Stale => &mut self.stale,
            TaskState::Degraded => &mut self.degraded,
        }
    }
}

/// One row of `/api/v1/tasks/status`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskStatus {
    pub name: String,
    pub kind: TaskKind,
    pub symbol: Option<String>,
    pub timeframe: Option<String>,
    pub priority: Priority,
    pub auto_restart: bool,
    pub restart_policy: String,
    /// The time limit of a run-once task.
    pub timeout_secs: Option<u64>,
    #[serde(flatten)]
    pub counters: TaskCounters,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub status: HealthStatus,
    pub uptime_secs: u64,
    pub tasks: TaskCounts,
    pub mailbox_depth: u64,
    /// Streams whose stored closed candles the audit found wrong past their repair deadline.
    pub data_issues: Vec<StreamIssue>,
    #[serde(skip)]
    pub task_list: Vec<TaskStatus>,
}

/// A stream with a [`DataIssue`].
#[derive(Debug, Clone, Serialize)]
pub struct StreamIssue {
    pub symbol: String,
    pub timeframe: String,
    #[serde(flatten)]
    pub issue: DataIssue,
}

struct TaskEntry {
    spec: Arc<TaskSpec>,
    stats: Arc<TaskStats>,
}

pub struct HealthActor {
    tasks: Vec<TaskEntry>,
    /// Task name → index into `tasks`.
    task_index: HashMap<String, usize>,
    streams: Vec<Arc<StreamHealth>>,
    started_at: Instant,
    metrics: Metrics,
}

impl HealthActor {
    pub fn new(metrics: Metrics) -> Self {
        Self { tasks: Vec::new(), task_index: HashMap::new(), streams: Vec::new(), started_at: Instant::now(), metrics }
    }
}

/// The overall verdict from the tasks' states.
pub fn verdict(tasks: impl IntoIterator<Item = (Priority, bool, TaskState)>) -> HealthStatus {
    let mut status = HealthStatus::Healthy;
    for (priority, auto_restart, state) in tasks {
        // A run-once task that finished did its job; one still running is not down either.
        if !state.is_down() {
            continue;
        }
        // Alive and keeping its work: degraded whatever its priority.
        if state == TaskState::Degraded {
            status = HealthStatus::Degraded;
            continue;
        }
        if priority == Priority::Critical && auto_restart {
            return HealthStatus::Unhealthy;
        }
        status = HealthStatus::Degraded;
    }
    status
}

impl Actor for HealthActor {
    type Context = Context<Self>;
}

impl Handler<RegisterTask> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: RegisterTask, _ctx: &mut Context<Self>) {
        match self.task_index.get(&msg.spec.name) {
            Some(&index) => self.tasks[index].spec = msg.spec,
            None => {
                self.task_index.insert(msg.spec.name.clone(), self.tasks.len());
                self.tasks.push(TaskEntry { spec: msg.spec, stats: msg.stats });
            }
        }
    }
}

impl Handler<UnregisterTasks> for HealthActor {
    type Result = ();

    fn handle(&mut self, UnregisterTasks(names): UnregisterTasks, _ctx: &mut Context<Self>) {
        let names: HashSet<String> = names.into_iter().collect();
        self.tasks.retain(|entry| !names.contains(&entry.spec.name));
        self.task_index =
            self.tasks.iter().enumerate().map(|(index, entry)| (entry.spec.name.clone(), index)).collect();
    }
}

impl Handler<UnregisterStreams> for HealthActor {
    type Result = ();

    fn handle(&mut self, UnregisterStreams(keys): UnregisterStreams, _ctx: &mut Context<Self>) {
        let keys: HashSet<StreamKey> = keys.into_iter().collect();
        self.streams.retain(|stream| !keys.contains(&stream.key));
    }
}

impl Handler<RegisterStream> for HealthActor {
    type Result = ();

    fn handle(&mut self, RegisterStream(stream): RegisterStream, _ctx: &mut Context<Self>) {
        self.streams.push(stream);
    }
}

impl Handler<GetStreams> for HealthActor {
    type Result = MessageResult<GetStreams>;

    fn handle(&mut self, _: GetStreams, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.streams.iter().map(|s| (s.key.clone(), s.snapshot())).collect())
    }
}

impl Handler<GetHealth> for HealthActor {
    type Result = MessageResult<GetHealth>;

    fn handle(&mut self, _: GetHealth, _ctx: &mut Context<Self>) -> Self::Result {
        let task_list: Vec<TaskStatus> = self
            .tasks
            .iter()
            .map(|entry| {
                let spec = &entry.spec;
                TaskStatus {
                    name: spec.name.clone(),
                    kind: spec.kind,
                    symbol: spec.symbol.clone(),
                    timeframe: spec.timeframe.map(|tf| tf.to_string()),
                    priority: spec.priority,
                    auto_restart: spec.auto_restart,
                    restart_policy: spec.policy.describe(),
                    timeout_secs: (!spec.auto_restart).then_some(spec.timeout.as_secs()),
                    counters: entry.stats.snapshot(),
                    metadata: spec.metadata.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect(),
                }
            })
            .collect();
        let mut counts = TaskCounts { total: task_list.len(), ..TaskCounts::default() };
        for task in &task_list {
            *counts.of(task.counters.state) += 1;
        }
        let mailbox_depth = task_list.iter().map(|t| t.counters.mailbox_depth).sum();
        let data_issues: Vec<StreamIssue> = self
            .streams
            .iter()
            .filter_map(|stream| {
                let issue = stream.data_issue()?;
                Some(StreamIssue {
                    symbol: stream.key.symbol.clone(),
                    timeframe: stream.key.timeframe.to_string(),
                    issue,
                })
            })
            .collect();
        let status = match verdict(task_list.iter().map(|t| (t.priority, t.auto_restart, t.counters.state))) {
            HealthStatus::Healthy if !data_issues.is_empty() => HealthStatus::Degraded,
            status => status,
        };
        for state in TaskState::ALL {
            self.metrics.tasks.with_label_values(&[state.as_str()]).set(*counts.of(state) as i64);
        }
        self.metrics.mailbox_depth.set(mailbox_depth as i64);
        MessageResult(HealthReport {
            status,
            uptime_secs: self.started_at.elapsed().as_secs(),
            tasks: counts,
            mailbox_depth,
            data_issues,
            task_list,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_down_critical_task_is_unhealthy_and_others_degrade() {
        use Priority::*;
        use TaskState::*;
        // TC0: all running.
        assert_eq!(verdict([(Critical, true, Running), (Normal, true, Running)]), HealthStatus::Healthy);
        // TC1: a finished run-once task is fine.
        assert_eq!(verdict([(High, false, Finished)]), HealthStatus::Healthy);
        // TC2: a failed normal task degrades.
        assert_eq!(verdict([(Critical, true, Running), (Normal, true, Failed)]), HealthStatus::Degraded);
        // TC3: a restarting critical task is unhealthy.
        assert_eq!(verdict([(Critical, true, Restarting), (Normal, true, Failed)]), HealthStatus::Unhealthy);
        // TC4: a run-once task that timed out degrades, whatever its priority.
        assert_eq!(verdict([(Critical, false, Failed)]), HealthStatus::Degraded);
        // TC5: a degraded critical task (storage retrying its database) degrades; a down one still wins.
        assert_eq!(verdict([(Critical, true, Degraded), (Normal, true, Running)]), HealthStatus::Degraded);
        assert_eq!(verdict([(Critical, true, Degraded), (Critical, true, Failed)]), HealthStatus::Unhealthy);
    }

    #[actix::test]
    async fn tasks_and_streams_come_and_go_by_name() {
        let health = HealthActor::new(Metrics::new()).start();
        let spec = |name: &str, metadata: &str| TaskSpec {
            name: name.to_owned(),
            kind: TaskKind::Connection,
            symbol: None,
            timeframe: None,
            priority: Priority::Critical,
            auto_restart: true,
            policy: crate::tasks::RestartPolicy::Never,
            timeout: std::time::Duration::from_secs(1),
            metadata: vec![("streams".to_owned(), metadata.to_owned())],
        };
        let first = TaskStats::new(8);
        for (name, streams) in [("connection-0", "2"), ("connection-1", "1"), ("connection-0", "5")] {
            health.send(RegisterTask { spec: spec(name, streams).into(), stats: first.clone() }).await.expect("alive");
        }
        let key = |symbol: &str| StreamKey::new(symbol, crate::domain::Timeframe::M1);
        for symbol in ["BTCUSDT", "ETHUSDT"] {
            health.send(RegisterStream(StreamHealth::new(key(symbol)))).await.expect("alive");
        }
        // TC0: a task registered again under its name is replaced, not listed twice.
        let report = health.send(GetHealth).await.expect("alive");
        let names: Vec<(String, serde_json::Value)> =
            report.task_list.iter().map(|t| (t.name.clone(), t.metadata["streams"].clone())).collect();
        assert_eq!(names, [("connection-0".to_owned(), "5".into()), ("connection-1".to_owned(), "1".into())]);
        // TC1: removed tasks and streams are gone; the others stay, and can still be replaced by name.
        health.send(UnregisterTasks(vec!["connection-0".to_owned()])).await.expect("alive");
        health.send(UnregisterStreams(vec![key("BTCUSDT")])).await.expect("alive");
        health.send(RegisterTask { spec: spec("connection-1", "3").into(), stats: first }).await.expect("alive");
        let report = health.send(GetHealth).await.expect("alive");
        assert_eq!(report.task_list.len(), 1);
        assert_eq!(report.task_list[0].metadata["streams"], "3");
        let streams = health.send(GetStreams).await.expect("alive");
        assert_eq!(streams.iter().map(|(key, _)| key.symbol.as_str()).collect::<Vec<_>>(), ["ETHUSDT"]);
    }
}
