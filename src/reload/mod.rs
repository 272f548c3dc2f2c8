//! Hot reload of `config.toml`. One owner task applies reloads one at a time, asked by the file watcher, `SIGHUP`
//! or `POST /api/v1/reload`: it validates the file like start-up, refuses the keys that need a restart (keeping
//! their values in force), checks new symbols against the exchange, and hands the rest to the engine
//! (`Reconfigure`). Every reload is counted by result in `candled_config_reloads_total`.
//!
//! Requests made before the engine runs (during the start-up symbol check) wait in the queue and are applied once
//! it runs; `POST /api/v1/reload` answers 503 then instead of waiting.

mod diff;
mod triggers;
mod view;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use actix::Addr;
use actix_web::rt::task::JoinHandle;
use candled_actors::actors::supervisor::{Reconfigure, Reconfigured, SupervisorActor};
use candled_actors::indicators::ProvisionalBoard;
use candled_actors::metrics::Metrics;
use candled_actors::registry::StreamRegistry;
use candled_actors::rest::RestClient;
use candled_actors::store::StoreBackend;
use candled_actors::tasks::unix_ms;
use prometheus::{IntCounterVec, Opts};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::cluster::{self, ClusterMetrics};
use crate::config::Settings;
use crate::startup::{check_symbols, engine_settings};
use diff::{keep_restart_only, live_changes, new_symbols, restart_only_changes};
pub use triggers::{ConfigWatch, reload_on_sighup, watch_config_file};
pub use view::settings_view;

/// Reload requests queued at most: one more changes nothing, since a queued reload reads the file when it runs.
const QUEUED_REQUESTS: usize = 8;
/// Streams named in a log line; the rest are counted.
const STREAMS_SHOWN: usize = 10;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The file watcher saw the file change.
    File,
    /// `SIGHUP`.
    Signal,
    /// `POST /api/v1/reload`.
    Http,
}

impl Trigger {
    fn describe(self) -> &'static str {
        match self {
            Self::File => "file changed",
            Self::Signal => "SIGHUP",
            Self::Http => "POST /api/v1/reload",
        }
    }
}

/// How a reload ended: the `result` label of `candled_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    /// Every change is in force.
    Applied,
    /// Keys that cannot change while running were refused (named in `restart_needed`); the rest is in force.
    RestartNeeded,
    /// The file holds the config in force, or a file event names a file whose text the last reload already read:
    /// nothing to do. Counted, but logged at debug only and not kept as the last result.
    Unchanged,
    /// The file is not a valid config, or names a symbol the exchange does not list: nothing changed.
    Invalid,
    /// The engine could not apply the change: nothing changed.
    Failed,
}

impl ReloadResult {
    const ALL: [Self; 5] = [Self::Applied, Self::RestartNeeded, Self::Unchanged, Self::Invalid, Self::Failed];

    fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::RestartNeeded => "restart_needed",
            Self::Unchanged => "unchanged",
            Self::Invalid => "invalid",
            Self::Failed => "failed",
        }
    }
}

/// One reload, as `/api/v1/config` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub at_ms: i64,
    pub at: String,
    pub trigger: Trigger,
    pub result: ReloadResult,
    /// Why an invalid or failed reload changed nothing.
    pub error: Option<String>,
    /// The keys refused because they need a restart.
    pub restart_needed: Vec<&'static str>,
    #[serde(flatten)]
    pub changes: Reconfigured,
}

/// What a reload came to, before it is reported.
enum Outcome {
    Unchanged,
    /// `settings` is `None` when only restart-only keys changed: nothing new is in force.
    Applied {
        settings: Option<Box<Settings>>,
        restart_needed: Vec<&'static str>,
        changes: Reconfigured,
    },
    Invalid(String),
    Failed(String),
}

impl ReloadReport {
    fn new(trigger: Trigger, outcome: &Outcome) -> Self {
        let at_ms = unix_ms();
        let mut report = Self {
            at_ms,
            at: utc_text(at_ms),
            trigger,
            result: ReloadResult::Unchanged,
            error: None,
            restart_needed: Vec::new(),
            changes: Reconfigured::default(),
        };
        match outcome {
            Outcome::Unchanged => {}
            Outcome::Applied { restart_needed, changes, .. } => {
                report.result =
                    if restart_needed.is_empty() { ReloadResult::Applied } else { ReloadResult::RestartNeeded };
                report.restart_needed = restart_needed.clone();
                report.changes = changes.clone();
            }
            Outcome::Invalid(error) | Outcome::Failed(error) => {
                let invalid = matches!(outcome, Outcome::Invalid(_));
                report.result = if invalid { ReloadResult::Invalid } else { ReloadResult::Failed };
                report.error = Some(one_line(error));
            }
        }
        report
    }

    /// One line per reload: info when applied, warn when refused, invalid or failed, debug when unchanged.
    fn log(&self) {
        let trigger = self.trigger.describe();
        match self.result {
            ReloadResult::Unchanged => log::debug!("Config reload ({trigger}): the file holds the config in force"),
            ReloadResult::Applied => log::info!("Config reloaded ({trigger}): {}", self.changes_text()),
            ReloadResult::RestartNeeded => log::warn!(
                "Config reloaded ({trigger}) except {}: cannot change while candled runs, restart candled to apply; \
                 the rest of the edit is in force: {}",
                self.restart_needed.join(", "),
                self.changes_text()
            ),
            ReloadResult::Invalid | ReloadResult::Failed => log::warn!(
                "Config reload ({trigger}): {}, nothing changed: {}",
                self.result.label(),
                self.error.as_deref().unwrap_or_default()
            ),
        }
    }

    fn changes_text(&self) -> String {
        let Reconfigured { added, removed, indicators_rebuilt } = &self.changes;
        let rebuilt = if *indicators_rebuilt { "rebuilt" } else { "unchanged" };
        format!("streams added: {}; removed: {}; indicators {rebuilt}", list_text(added), list_text(removed))
    }
}

/// An error on one line (a TOML error quotes the line at fault under its position, with a caret under the column):
/// its lines joined by ` / `, without the lines that only draw.
fn one_line(error: &str) -> String {
    let drawn_only = |line: &str| line.chars().all(|c| matches!(c, '|' | '^' | ' '));
    error.lines().map(str::trim).filter(|line| !drawn_only(line)).collect::<Vec<_>>().join(" / ")
}

/// `none`, or the count and the first few names.
fn list_text(names: &[String]) -> String {
    let shown = names[..names.len().min(STREAMS_SHOWN)].join(", ");
    match names.len() {
        0 => "none".into(),
        count if count > STREAMS_SHOWN => format!("{count} ({shown} and {} more)", count - STREAMS_SHOWN),
        count => format!("{count} ({shown})"),
    }
}

/// Milliseconds since the epoch as UTC text, e.g. `2026-11-30T22:35:37.123Z`.
fn utc_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(String::new, |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// The config in force, shared by the reload owner (the one writer) and HTTP. Cheap to clone.
#[derive(Clone)]
pub struct LiveConfig {
    path: Arc<Path>,
    in_force: Arc<RwLock<InForce>>,
}

struct InForce {
    settings: Settings,
    loaded_at_ms: i64,
    last_reload: Option<ReloadReport>,
}

impl LiveConfig {
    /// The config just loaded from `path` at start-up.
    pub fn new(path: PathBuf, settings: Settings) -> Self {
        let in_force = InForce { settings, loaded_at_ms: unix_ms(), last_reload: None };
        Self { path: path.into(), in_force: Arc::new(RwLock::new(in_force)) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn settings(&self) -> Settings {
        self.read(Settings::clone)
    }

    /// `f` of the settings in force, without copying them.
    pub fn read<R>(&self, f: impl FnOnce(&Settings) -> R) -> R {
        f(&self.in_force.read().unwrap_or_else(PoisonError::into_inner).settings)
    }

    /// What `/api/v1/config` shows.
    pub fn view(&self) -> Value {
        let in_force = self.in_force.read().unwrap_or_else(PoisonError::into_inner);
        json!({
            "path": self.path.display().to_string(),
            "loaded_at_ms": in_force.loaded_at_ms,
            "loaded_at": utc_text(in_force.loaded_at_ms),
            "config": view::settings_view(&in_force.settings),
            "last_reload": in_force.last_reload,
        })
    }

    /// Keeps `report` as the last reload (unless nothing changed) and `applied` as the config in force.
    fn record(&self, report: &ReloadReport, applied: Option<Settings>) {
        let mut in_force = self.in_force.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(settings) = applied {
            in_force.settings = settings;
            in_force.loaded_at_ms = report.at_ms;
        }
        if report.result != ReloadResult::Unchanged {
            in_force.last_reload = Some(report.clone());
        }
    }
}

/// A request to the reload owner; `reply` gets the report.
pub struct ReloadRequest {
    trigger: Trigger,
    reply: Option<oneshot::Sender<ReloadReport>>,
}

/// Asks the reload owner for reloads. Cheap to clone.
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<ReloadRequest>);

impl ReloadHandle {
    /// A handle and the queue its owner reads.
    pub fn channel() -> (Self, mpsc::Receiver<ReloadRequest>) {
        let (sender, receiver) = mpsc::channel(QUEUED_REQUESTS);
        (Self(sender), receiver)
    }

    /// Queues a reload without waiting for it. A full queue already holds a reload that will read the file.
    pub fn request(&self, trigger: Trigger) {
        let _ = self.0.try_send(ReloadRequest { trigger, reply: None });
    }

    /// Reloads and answers the report; `None` once the owner has stopped (shutting down).
    pub async fn reload(&self, trigger: Trigger) -> Option<ReloadReport> {
        let (reply, report) = oneshot::channel();
        self.0.send(ReloadRequest { trigger, reply: Some(reply) }).await.ok()?;
        report.await.ok()
    }
}

/// `candled_config_reloads_total{result}`, every result shown from the start (at zero).
fn reload_counter(metrics: &Metrics) -> prometheus::Result<IntCounterVec> {
    let opts = Opts::new("config_reloads_total", "Config reloads, by result");
    let counter = IntCounterVec::new(opts, &["result"])?;
    metrics.registry.register(Box::new(counter.clone()))?;
    for result in ReloadResult::ALL {
        counter.with_label_values(&[result.label()]);
    }
    Ok(counter)
}

/// The reload owner, until the engine runs: what it builds the engine's settings from.
pub struct Reloader {
    live: LiveConfig,
    rest: RestClient,
    tls: Arc<rustls::ClientConfig>,
    provisional: ProvisionalBoard,
    registry: StreamRegistry,
    /// The store opened at start: `[storage]` changes only with a restart.
    backend: StoreBackend,
    counter: IntCounterVec,
    /// `candled_cluster_*`: updated when a reload changes the shard or the streams it owns.
    cluster: ClusterMetrics,
    /// The text the last reload read, unless it failed: a file event on the same text (editors touch files, and a
    /// save can be seen twice) is `unchanged` without a second look.
    last_text: Option<String>,
}

impl Reloader {
    /// Registers the reload counter and the cluster's series in `metrics`.
    pub fn new(
        live: LiveConfig,
        rest: RestClient,
        tls: Arc<rustls::ClientConfig>,
        provisional: ProvisionalBoard,
        registry: StreamRegistry,
        backend: StoreBackend,
        metrics: &Metrics,
    ) -> prometheus::Result<Self> {
        let cluster = ClusterMetrics::register(metrics, live.read(|s| s.cluster), registry.active_count())?;
        let counter = reload_counter(metrics)?;
        Ok(Self { live, rest, tls, provisional, registry, backend, counter, cluster, last_text: None })
    }

    /// Applies the queued requests, one at a time, on the actix runtime, until the task is aborted.
    pub fn run(
        mut self,
        supervisor: Addr<SupervisorActor>,
        mut requests: mpsc::Receiver<ReloadRequest>,
    ) -> JoinHandle<()> {
        actix_web::rt::spawn(async move {
            while let Some(ReloadRequest { trigger, reply }) = requests.recv().await {
                let report = self.reload(&supervisor, trigger).await;
                if let Some(reply) = reply {
                    let _ = reply.send(report);
                }
            }
        })
    }

    async fn reload(&mut self, supervisor: &Addr<SupervisorActor>, trigger: Trigger) -> ReloadReport {
        let mut outcome = match Settings::read(self.live.path()) {
            Ok(text) if trigger == Trigger::File && self.last_text.as_ref() == Some(&text) => Outcome::Unchanged,
            Ok(text) => {
                let outcome = self.outcome(&text, supervisor).await;
                self.last_text = (!matches!(outcome, Outcome::Failed(_))).then_some(text);
                outcome
            }
            Err(error) => Outcome::Invalid(error.to_string()),
        };
        let report = ReloadReport::new(trigger, &outcome);
        report.log();
        self.counter.with_label_values(&[report.result.label()]).inc();
        let applied = match &mut outcome {
            Outcome::Applied { settings, .. } => settings.take().map(|settings| *settings),
            _ => None,
        };
        self.live.record(&report, applied);
        report
    }

    /// Validates `text` like start-up, and applies it.
    async fn outcome(&self, text: &str, supervisor: &Addr<SupervisorActor>) -> Outcome {
        let in_force = &self.live.settings();
        let edited = match Settings::from_file_text(text, self.live.path()) {
            Ok(edited) => edited,
            Err(error) => return Outcome::Invalid(error.to_string()),
        };
        let restart_needed = restart_only_changes(in_force, &edited);
        let edited = keep_restart_only(edited, in_force);
        if !live_changes(in_force, &edited) {
            return match restart_needed.is_empty() {
                true => Outcome::Unchanged,
                false => Outcome::Applied { settings: None, restart_needed, changes: Reconfigured::default() },
            };
        }
        let symbols = new_symbols(in_force, &edited);
        if !symbols.is_empty()
            && let Err(unlisted) = check_symbols(&self.rest, &symbols).await
        {
            return Outcome::Invalid(format!("config file {}: {unlisted}", self.live.path().display()));
        }
        let (tls, provisional, registry) = (self.tls.clone(), self.provisional.clone(), self.registry.clone());
        let engine = engine_settings(&edited, self.backend.clone(), tls, provisional, registry);
        match supervisor.send(Reconfigure(engine)).await {
            Ok(Ok(changes)) => {
                // The engine has applied the stream set: the registry holds the streams it now runs.
                let owned = self.registry.active_count();
                self.cluster.show(edited.cluster, owned);
                if edited.cluster != in_force.cluster {
                    log::info!(
                        "{} (was shard {} of {})",
                        cluster::describe(&edited, owned),
                        in_force.cluster.shard(),
                        in_force.cluster.shards()
                    );
                }
                Outcome::Applied { settings: Some(Box::new(edited)), restart_needed, changes }
            }
            Ok(Err(error)) => Outcome::Failed(format!("the engine refused the change: {error}")),
            Err(error) => Outcome::Failed(format!("the engine did not answer: {error}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_lists_are_counted_and_the_first_few_named() {
        let names = |count: usize| (0..count).map(|i| format!("S{i}:1m")).collect::<Vec<_>>();
        // TC0: none.
        assert_eq!(list_text(&[]), "none");
        // TC1: a few, all named.
        assert_eq!(list_text(&names(2)), "2 (S0:1m, S1:1m)");
        // TC2: more than are shown: a count of the rest.
        assert!(
            list_text(&names(12)).starts_with("12 (S0:1m,") && list_text(&names(12)).ends_with("S9:1m and 2 more)")
        );
    }

    #[test]
    fn errors_are_put_on_one_line() {
        // TC0: one line stays as it is.
        assert_eq!(one_line("config file c: `http.bind`: bad"), "config file c: `http.bind`: bad");
        // TC1: a TOML error: its position, the quoted line and the problem; the drawing left out.
        let toml = "config file c is not valid: TOML parse error at line 9, column 11\n  |\n9 | history = = 5\n  |           ^\nexpected `\"`\n";
        assert_eq!(
            one_line(toml),
            "config file c is not valid: TOML parse error at line 9, column 11 / 9 | history = = 5 / expected `\"`"
        );
    }

    #[test]
    fn utc_text_is_iso_8601_with_milliseconds() {
        // TC0: the epoch; TC1: a moment with milliseconds.
        assert_eq!(utc_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_text(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
