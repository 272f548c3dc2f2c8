//! The application: builds the engine and the HTTP server from validated settings, and runs them until asked to
//! stop.

use std::fmt;
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::rt::task::{JoinError, JoinHandle};
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use candled_actors::actors::audit::AuditSettings;
use candled_actors::actors::connection::ConnectionSettings;
use candled_actors::actors::health::HealthActor;
use candled_actors::actors::publisher::{PublisherFeed, PublisherSettings};
use candled_actors::actors::storage::{CommittedCandles, StorageSettings};
use candled_actors::actors::subscription::SubscriptionSettings;
use candled_actors::actors::supervisor::{EngineSettings, Shutdown, SupervisorActor};
use candled_actors::domain::RateBudget;
use candled_actors::hub::{self, Hub};
use candled_actors::indicators::{IndicatorSet, ProvisionalBoard};
use candled_actors::lock::DatabaseLock;
use candled_actors::metrics::Metrics;
use candled_actors::publish::Subjects;
use candled_actors::registry::StreamRegistry;
use candled_actors::rest::RestClient;
use candled_actors::store::{Store, StoreBackend};
use candled_actors::tls;
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::http::binance_ws::LocalStreams;
use crate::http::{self, AppState};
use crate::reload::{
    ConfigWatch, LiveConfig, ReloadHandle, ReloadRequest, Reloader, reload_on_sighup, watch_config_file,
};

/// Streams in the connect URL and in each SUBSCRIBE message.
const STREAMS_PER_MESSAGE: usize = 100;
/// One control message every 250 ms: 4 per second, under Binance's 5, leaving room for pongs.
const CONTROL_INTERVAL: Duration = Duration::from_millis(250);
/// Binance allows 300 connection attempts per 5 minutes per IP.
const CONNECTS_PER_WINDOW: u32 = 300;
const CONNECT_WINDOW: Duration = Duration::from_secs(300);

/// How long start-up waits for the exchange to answer the symbol check before it starts anyway.
const SYMBOL_CHECK_DEADLINE: Duration = Duration::from_secs(5);
/// How long a stopping HTTP server lets requests in flight (and idle keep-alive connections) finish.
const HTTP_SHUTDOWN_TIMEOUT_SECS: u64 = 2;
/// Unlisted symbols named in the error; the rest are counted.
const UNLISTED_SHOWN: usize = 10;

/// The config names symbols the exchange does not list: Binance would accept their streams and send nothing.
#[derive(Debug, thiserror::Error)]
pub struct UnlistedSymbols(pub Vec<String>);

impl fmt::Display for UnlistedSymbols {
    /// The count and the first few names: thousands of them would make one unreadable line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        let subject = if count == 1 { "1 symbol is".to_owned() } else { format!("{count} symbols are") };
        let shown = &self.0[..count.min(UNLISTED_SHOWN)];
        write!(f, "`market_data.symbols`: {subject} not listed on the exchange: {}", shown.join(", "))?;
        if count > shown.len() {
            write!(f, " and {} more", count - shown.len())?;
        }
        Ok(())
    }
}

/// What start-up still waits for before the engine runs, shown by `/health`, the engine once it runs, and whether
/// the application is stopping. Cheap to clone: every clone shares one state. The default has nothing to wait for
/// and no engine.
#[derive(Clone, Default)]
pub struct StartupState(Arc<StartupInner>);

#[derive(Default)]
struct StartupInner {
    waiting: Mutex<Option<String>>,
    engine: OnceLock<Addr<SupervisorActor>>,
    /// Turns true when the application starts stopping: long-lived responses (event streams) end then.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl StartupState {
    fn waiting_for(detail: String) -> Self {
        Self(Arc::new(StartupInner { waiting: Mutex::new(Some(detail)), ..StartupInner::default() }))
    }

    /// Resolves once the application starts stopping.
    pub async fn stopping(&self) {
        let mut stopping = self.0.stopping.subscribe();
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }

    fn stop(&self) {
        self.0.stopping.send_replace(true);
    }

    /// What start-up is waiting for; `None` once the engine runs.
    pub fn waiting(&self) -> Option<String> {
        self.0.waiting.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The engine's supervisor, once it runs.
    pub fn engine(&self) -> Option<Addr<SupervisorActor>> {
        self.0.engine.get().cloned()
    }

    fn finished(&self, supervisor: Addr<SupervisorActor>) {
        let _ = self.0.engine.set(supervisor);
        *self.0.waiting.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// What the engine is started from once the symbols are checked.
struct PendingEngine {
    settings: EngineSettings,
    store: Box<dyn Store>,
    rest: RestClient,
    health: Addr<HealthActor>,
    metrics: Metrics,
    symbols: Vec<String>,
    /// The reload owner, started with the engine, and its queue (filled from `build` on).
    reloader: Reloader,
    reload_requests: mpsc::Receiver<ReloadRequest>,
}

pub struct Application {
    port: u16,
    /// The HTTP server, running on its own task from `build` on.
    serving: JoinHandle<std::io::Result<()>>,
    server: ServerHandle,
    engine: PendingEngine,
    startup: StartupState,
    hub: Hub,
    /// Watches the config file for as long as the application runs; `None` when the watch could not be set up.
    _config_watch: Option<ConfigWatch>,
    /// Held until the application is dropped: no second candled writes the same SQLite database (`None` for a
    /// database server, which replicas share by design).
    _lock: Option<DatabaseLock>,
}

impl Application {
    /// Opens storage and starts serving HTTP, with `/health` answering 503 `starting` until the engine runs, and
    /// takes reload requests for `config_path` (the file `settings` come from) from the file watcher and `SIGHUP`.
    /// Must run inside an actix system.
    pub async fn build(settings: Settings, config_path: PathBuf) -> anyhow::Result<Self> {
        let backend = settings.storage.backend()?;
        let lock = backend.lock()?;
        let store = backend.open_writer().with_context(|| format!("cannot open {}", backend.describe()))?;
        log::info!("Storing in {}", backend.describe());
        let tls = tls::client_config(settings.exchange.ca_file.as_deref())?;
        let metrics = Metrics::with_per_stream(settings.metrics.per_stream);
        let rest = RestClient::new(&settings.exchange.rest_url, tls.clone(), metrics.clone())?;

        let listener = TcpListener::bind(settings.http_bind)
            .with_context(|| format!("cannot listen on {} (http.bind)", settings.http_bind))?;
        let port = listener.local_addr()?.port();

        let mut symbols: Vec<String> = settings.streams.iter().map(|key| key.symbol.clone()).collect();
        symbols.dedup();
        let startup = StartupState::waiting_for(match symbols.len() {
            1 => "checking 1 symbol against the exchange".to_owned(),
            count => format!("checking {count} symbols against the exchange"),
        });
        let health = HealthActor::new(metrics.clone()).start();
        let names = IndicatorSet::new(&settings.indicators).names().into();
        let provisional = ProvisionalBoard::new(names);
        let registry = StreamRegistry::new(&settings.owned_streams());
        log::info!("{}", crate::cluster::describe(&settings, registry.active_count()));
        if registry.active_count() == 0 {
            log::warn!("This shard owns none of the configured streams: it collects nothing until the config changes");
        }
        let live = LiveConfig::new(config_path, settings.clone());
        let reloader = Reloader::new(
            live.clone(),
            rest.clone(),
            tls.clone(),
            provisional.clone(),
            registry.clone(),
            backend.clone(),
            &metrics,
        )?;
        let (reload, reload_requests) = ReloadHandle::channel();
        let hub = Hub::new(hub::DEFAULT_BUFFER, metrics.hub.clone());
        let committed = CommittedCandles::with_hub(hub.clone());
        let state = web::Data::new(AppState {
            health: health.clone(),
            metrics: metrics.clone(),
            store: backend.clone(),
            provisional: provisional.clone(),
            streams: registry.clone(),
            startup: startup.clone(),
            config: live.clone(),
            reload: reload.clone(),
            admin_token: settings.admin_token.clone(),
            committed: committed.clone(),
            exchange_clock: rest.clock().clone(),
            local_streams: LocalStreams::new(hub.clone(), settings.api.enabled, settings.api.max_ws_clients),
            local_binance: settings.api.enabled.then(|| {
                let api = &settings.api;
                Arc::new(http::binance_rest::LocalBinance::new(
                    api.read_through,
                    api.cache_bytes,
                    api.weight_per_minute,
                    rest.clone(),
                ))
            }),
        });
        let server = HttpServer::new(move || App::new().app_data(state.clone()).configure(http::routes))
            .workers(2)
            .disable_signals()
            .shutdown_timeout(HTTP_SHUTDOWN_TIMEOUT_SECS)
            .listen(listener)?
            .run();
        // An actix server serves only while its future is polled.
        let (server, serving) = (server.handle(), actix_web::rt::spawn(server));
        log::info!("HTTP listening on http://{}:{port}", settings.http_bind.ip());
        let config_watch = start_reload_triggers(live.path(), reload);
        let mut engine_config = engine_settings(&settings, backend, tls, provisional, registry);
        // The storage actor publishes to the channel HTTP follows (a reload keeps the running storage's).
        engine_config.storage.committed = committed;
        engine_config.connection.hub = hub.clone();
        engine_config.publisher = settings.nats.enabled.then(|| {
            let feed = PublisherFeed::tap(&hub, settings.nats.buffer, settings.nats.in_progress);
            (publisher_settings(&settings, engine_config.storage.backend.clone()), feed)
        });
        let engine =
            PendingEngine { settings: engine_config, store, rest, health, metrics, symbols, reloader, reload_requests };
        Ok(Self { port, serving, server, engine, startup, hub, _config_watch: config_watch, _lock: lock })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The fan-out hub: subscribe to streams in process (closed candles with their indicator values, and the
    /// exchange's events as received).
    pub fn hub(&self) -> Hub {
        self.hub.clone()
    }

    /// Checks the symbols against the exchange (within a deadline), starts the engine and serves until `shutdown`
    /// resolves; then stops HTTP, stops the streams and flushes storage. Unlisted symbols stop HTTP and return
    /// [`UnlistedSymbols`].
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self { mut serving, server, engine, startup, .. } = self;
        let mut shutdown = std::pin::pin!(shutdown);
        let checked = tokio::select! {
            checked = check_symbols(&engine.rest, &engine.symbols) => checked,
            result = &mut serving => return served(result),
            () = &mut shutdown => {
                log::info!("Shutting down before the engine started");
                return stop_http(&startup, server, serving).await;
            }
        };
        if let Err(unlisted) = checked {
            stop_http(&startup, server, serving).await?;
            return Err(unlisted.into());
        }
        let PendingEngine { settings, store, rest, health, metrics, reloader, reload_requests, .. } = engine;
        let supervisor = SupervisorActor::new(settings, store, rest, health, metrics).start();
        let reloading = reloader.run(supervisor.clone(), reload_requests);
        startup.finished(supervisor.clone());
        tokio::select! {
            result = &mut serving => served(result)?,
            () = &mut shutdown => log::info!("Shutting down"),
        }
        reloading.abort();
        stop_http(&startup, server, serving).await?;
        supervisor.send(Shutdown).await??;
        log::info!("Stopped cleanly");
        Ok(())
    }
}

/// Ends the event streams, stops accepting, lets the requests in flight finish (within
/// [`HTTP_SHUTDOWN_TIMEOUT_SECS`]) and waits for the server's task.
async fn stop_http(
    startup: &StartupState,
    server: ServerHandle,
    serving: JoinHandle<std::io::Result<()>>,
) -> anyhow::Result<()> {
    startup.stop();
    server.stop(true).await;
    served(serving.await)
}

/// The outcome of the HTTP server's task.
fn served(result: Result<std::io::Result<()>, JoinError>) -> anyhow::Result<()> {
    result.context("the HTTP server's task failed")?.context("the HTTP server failed")
}

/// Starts the reload triggers: `SIGHUP` (which no longer ends the process) and a watcher on the config file. Either
/// failing is logged, not fatal: the others still reload.
fn start_reload_triggers(config_path: &std::path::Path, reload: ReloadHandle) -> Option<ConfigWatch> {
    if let Err(error) = reload_on_sighup(reload.clone()) {
        log::error!("cannot listen for SIGHUP, so it cannot reload the config: {error}");
    }
    watch_config_file(config_path, reload)
        .inspect_err(|error| log::warn!("cannot watch {} for changes: {error}", config_path.display()))
        .ok()
}

/// Fails on symbols the exchange does not list. An exchange that cannot be asked, or does not answer within
/// [`SYMBOL_CHECK_DEADLINE`], is no reason not to start.
pub(crate) async fn check_symbols(rest: &RestClient, symbols: &[String]) -> Result<(), UnlistedSymbols> {
    let deadline = SYMBOL_CHECK_DEADLINE.as_secs();
    match tokio::time::timeout(SYMBOL_CHECK_DEADLINE, rest.unlisted_symbols(symbols)).await {
        Ok(Ok(unlisted)) if unlisted.is_empty() => {
            log::info!("All {} symbol(s) are listed on the exchange", symbols.len());
            Ok(())
        }
        Ok(Ok(unlisted)) => Err(UnlistedSymbols(unlisted)),
        Ok(Err(error)) => {
            let error = candled_actors::error_chain(&error);
            log::warn!("could not check the symbols against the exchange, starting anyway: {error}");
            Ok(())
        }
        Err(_) => {
            log::warn!(
                "could not check the symbols against the exchange: no answer within {deadline}s, starting anyway"
            );
            Ok(())
        }
    }
}

/// The engine's settings from the config's; `backend` is the store `settings.storage` opened at start.
pub(crate) fn engine_settings(
    settings: &Settings,
    backend: StoreBackend,
    tls: Arc<rustls::ClientConfig>,
    provisional: ProvisionalBoard,
    registry: StreamRegistry,
) -> EngineSettings {
    let exchange = &settings.exchange;
    EngineSettings {
        streams: settings.owned_streams(),
        connection: ConnectionSettings {
            ws_base: exchange.ws_url.clone(),
            tls,
            stall_timeout: exchange.stall_timeout,
            max_message_size: exchange.max_message_bytes,
            streams_per_message: STREAMS_PER_MESSAGE,
            control_interval: CONTROL_INTERVAL,
            connect_timeout: exchange.connect_timeout,
            rotate_after: exchange.rotate_after,
            rotate_stagger: exchange.rotate_stagger,
            connect_budget: Arc::new(Mutex::new(RateBudget::new(CONNECTS_PER_WINDOW, CONNECT_WINDOW))),
            hub: Hub::default(),
        },
        max_streams_per_connection: exchange.max_streams_per_connection,
        rest_url: exchange.rest_url.clone(),
        storage: StorageSettings {
            backend: backend.clone(),
            batch_size: settings.batch_size,
            flush_interval: settings.flush_interval,
            committed: CommittedCandles::default(),
            // An unreachable database is retried as the supervisor restarts tasks.
            retry: settings.supervision.backoff,
            in_progress: Default::default(),
        },
        history: settings.history,
        backfill_concurrency: exchange.backfill_concurrency,
        subscription: SubscriptionSettings {
            close_grace: exchange.close_grace,
            stale_after: exchange.stream_stale_after,
            replace_after: exchange.silent_replace_after,
            recheck_empty: settings.audit.recheck_empty,
            history: settings.history,
        },
        audit: AuditSettings {
            interval: settings.audit.interval,
            close_grace: exchange.close_grace,
            history: settings.history,
            store: backend,
        },
        indicators: settings.indicators.clone(),
        provisional,
        registry,
        supervision: settings.supervision.clone(),
        // Set at start-up, where the hub is (never changed by a reload).
        publisher: None,
    }
}

/// The publisher's settings from `[nats]`; its catch-ups read `store`.
fn publisher_settings(settings: &Settings, store: StoreBackend) -> PublisherSettings {
    let nats = &settings.nats;
    PublisherSettings {
        url: nats.url.clone(),
        stream: nats.stream.clone(),
        subjects: Subjects::new(nats.subject_prefix.clone()),
        max_age: nats.max_age,
        max_bytes: nats.max_bytes,
        duplicate_window: nats.duplicate_window,
        in_progress: nats.in_progress,
        buffer: nats.buffer,
        store,
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            log::error!("cannot listen for SIGTERM: {error}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => log::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT received"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_symbols_are_counted_and_the_first_few_named() {
        let names = |count: usize| (0..count).map(|i| format!("S{i}")).collect::<Vec<_>>();
        // TC0: one symbol, named.
        assert_eq!(
            UnlistedSymbols(names(1)).to_string(),
            "`market_data.symbols`: 1 symbol is not listed on the exchange: S0"
        );
        // TC1: exactly as many as are shown: no remainder.
        assert!(UnlistedSymbols(names(UNLISTED_SHOWN)).to_string().ends_with("S8, S9"));
        // TC2: more: the first ten and a count of the rest.
        assert_eq!(
            UnlistedSymbols(names(5000)).to_string(),
            "`market_data.symbols`: 5000 symbols are not listed on the exchange: \
             S0, S1, S2, S3, S4, S5, S6, S7, S8, S9 and 4990 more"
        );
    }
}
