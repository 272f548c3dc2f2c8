//! The application: builds the engine and the HTTP server from validated settings, and runs them until asked to
//! stop.

use std::future::Future;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use candled_actors::actors::audit::AuditSettings;
use candled_actors::actors::connection::ConnectionSettings;
use candled_actors::actors::health::HealthActor;
use candled_actors::actors::storage::StorageSettings;
use candled_actors::actors::subscription::SubscriptionSettings;
use candled_actors::actors::supervisor::{EngineSettings, Shutdown, SupervisorActor};
use candled_actors::domain::RateBudget;
use candled_actors::indicators::{IndicatorSet, ProvisionalBoard};
use candled_actors::lock::DatabaseLock;
use candled_actors::metrics::Metrics;
use candled_actors::rest::RestClient;
use candled_actors::store::CandleStore;
use candled_actors::tls;

use crate::config::Settings;
use crate::http::{self, AppState};

/// Streams in the connect URL and in each SUBSCRIBE message.
const STREAMS_PER_MESSAGE: usize = 100;
/// One control message every 250 ms: 4 per second, under Binance's 5, leaving room for pongs.
const CONTROL_INTERVAL: Duration = Duration::from_millis(250);
/// Binance allows 300 connection attempts per 5 minutes per IP.
const CONNECTS_PER_WINDOW: u32 = 300;
const CONNECT_WINDOW: Duration = Duration::from_secs(300);

/// The config names symbols the exchange does not list: Binance would accept their streams and send nothing.
#[derive(Debug, thiserror::Error)]
#[error("`market_data.symbols`: not listed on the exchange: {}", .0.join(", "))]
pub struct UnlistedSymbols(pub Vec<String>);

pub struct Application {
    port: u16,
    server: Server,
    supervisor: Addr<SupervisorActor>,
    /// Held until the application is dropped: no second candled writes the same database.
    _lock: DatabaseLock,
}

impl Application {
    /// Opens storage, starts the engine's actors and binds the HTTP listener. Must run inside an actix system.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        if let Some(parent) = settings.storage_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create the storage folder {}", parent.display()))?;
        }
        let lock = DatabaseLock::acquire(&settings.storage_path)?;
        let store = CandleStore::open(&settings.storage_path)
            .with_context(|| format!("cannot open the database {}", settings.storage_path.display()))?;
        let tls = tls::client_config(settings.exchange.ca_file.as_deref())?;
        let metrics = Metrics::new();
        let rest = RestClient::new(&settings.exchange.rest_url, tls.clone(), metrics.clone())?;
        check_symbols(&rest, &settings).await?;

        let listener = TcpListener::bind(settings.http_bind)
            .with_context(|| format!("cannot listen on {} (http.bind)", settings.http_bind))?;
        let port = listener.local_addr()?.port();

        let health = HealthActor::new(metrics.clone()).start();
        let names = IndicatorSet::new(&settings.indicators).names().into();
        let provisional = ProvisionalBoard::new(&settings.streams, names);
        let engine = engine_settings(&settings, tls, provisional.clone());
        let supervisor = SupervisorActor::new(engine, store, rest, health.clone(), metrics.clone()).start();

        let db_path = settings.storage_path.clone();
        let state =
            web::Data::new(AppState { health, metrics, db_path, provisional, streams: settings.streams.clone() });
        let server = HttpServer::new(move || App::new().app_data(state.clone()).configure(http::routes))
            .workers(2)
            .disable_signals()
            .listen(listener)?
            .run();
        log::info!("HTTP listening on http://{}:{port}", settings.http_bind.ip());
        Ok(Self { port, server, supervisor, _lock: lock })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` resolves, then stops HTTP, stops the streams and flushes storage.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = self.server;
        tokio::select! {
            result = server => result.context("the HTTP server failed")?,
            () = shutdown => log::info!("Shutting down"),
        }
        handle.stop(true).await;
        self.supervisor.send(Shutdown).await?.map_err(anyhow::Error::msg)?;
        log::info!("Stopped cleanly");
        Ok(())
    }
}

/// Fails on symbols the exchange does not list. An exchange that cannot be asked is no reason not to start.
async fn check_symbols(rest: &RestClient, settings: &Settings) -> Result<(), UnlistedSymbols> {
    let mut symbols: Vec<String> = settings.streams.iter().map(|key| key.symbol.clone()).collect();
    symbols.dedup();
    match rest.unlisted_symbols(&symbols).await {
        Ok(unlisted) if unlisted.is_empty() => Ok(()),
        Ok(unlisted) => Err(UnlistedSymbols(unlisted)),
        Err(error) => {
            log::warn!("could not check the symbols against the exchange, starting anyway: {error}");
            Ok(())
        }
    }
}

fn engine_settings(
    settings: &Settings,
    tls: Arc<rustls::ClientConfig>,
    provisional: ProvisionalBoard,
) -> EngineSettings {
    let exchange = &settings.exchange;
    EngineSettings {
        streams: settings.streams.clone(),
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
        },
        max_streams_per_connection: exchange.max_streams_per_connection,
        rest_url: exchange.rest_url.clone(),
        storage: StorageSettings {
            path: settings.storage_path.clone(),
            batch_size: settings.batch_size,
            flush_interval: settings.flush_interval,
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
            db_path: settings.storage_path.clone(),
        },
        indicators: settings.indicators.clone(),
        provisional,
        supervision: settings.supervision.clone(),
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
