//! `GET /api/v1/events?symbol=&timeframe=`: server-sent events carrying one stream's candles as the storage actor
//! commits them, in progress and closed, for the dashboard's live chart.
//!
//! The storage actor publishes each commit on a broadcast channel ([`CommittedCandles`]) and never waits for a
//! listener: a client too slow to keep up loses the oldest commits and is sent a `lagged` event instead, after which
//! it should read `/api/v1/candles` again.
//!
//! [`CommittedCandles`]: candled_actors::actors::storage::CommittedCandles

use std::convert::Infallible;
use std::fmt::Write as _;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use candled_actors::actors::storage::CommitBatch;
use candled_actors::domain::Timeframe;
use tokio::sync::broadcast::{self, error::RecvError};

use super::AppState;
use super::candles::CandleRow;
use super::error::ApiError;
use super::params::{StreamParams, known_symbol};
use crate::startup::StartupState;

/// A comment line this often keeps proxies and the browser from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a browser waits before reconnecting a dropped stream, ms.
const RETRY_MS: u32 = 2000;

/// Answers with an event stream: `candle` events (one [`CandleRow`] each, as `/api/v1/candles` shows it) for the
/// stream asked for, `lagged` when commits were lost to a slow reader, and keep-alive comments.
pub async fn events(state: web::Data<AppState>, params: web::Query<StreamParams>) -> Result<HttpResponse, ApiError> {
    let query = params.parse()?;
    known_symbol(&state, &query.symbol).await?;
    let feed = EventFeed {
        commits: state.committed.subscribe(),
        startup: state.startup.clone(),
        symbol: query.symbol,
        timeframe: query.timeframe,
        keep_alive: tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE),
    };
    let opening = web::Bytes::from(format!("retry: {RETRY_MS}\n: candles of {} {}\n\n", feed.symbol, feed.timeframe));
    let first = futures_util::stream::once(async move { Ok::<_, Infallible>(opening) });
    let rest = futures_util::stream::unfold(feed, |mut feed| async move {
        let chunk = feed.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), feed))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Tells a reverse proxy (nginx) not to buffer the stream.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(futures_util::StreamExt::chain(first, rest)))
}

/// One client's subscription to the commits, filtered to one stream.
struct EventFeed {
    commits: broadcast::Receiver<CommitBatch>,
    /// Ends the stream when candled stops, so that an open dashboard does not hold the HTTP server's stop up.
    startup: StartupState,
    symbol: String,
    timeframe: Timeframe,
    keep_alive: tokio::time::Interval,
}

impl EventFeed {
    /// The next text to send; `None` ends the stream (candled is stopping).
    async fn next_chunk(&mut self) -> Option<web::Bytes> {
        loop {
            tokio::select! {
                () = self.startup.stopping() => return None,
                received = self.commits.recv() => match received {
                    Ok(batch) => {
                        if let Some(text) = self.candle_events(&batch) {
                            return Some(text.into());
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        return Some(format!("event: lagged\ndata: {{\"missed_commits\":{missed}}}\n\n").into());
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.keep_alive.tick() => return Some(web::Bytes::from_static(b": keep-alive\n\n")),
            }
        }
    }

    /// The `candle` events of this stream's rows in one commit, if it has any.
    fn candle_events(&self, batch: &CommitBatch) -> Option<String> {
        let mut text = String::new();
        let ours = batch.iter().filter(|c| c.key.timeframe == self.timeframe && c.key.symbol == self.symbol);
        for committed in ours {
            let row = CandleRow::new(&self.symbol, self.timeframe, &committed.candle);
            let json = serde_json::to_string(&row).unwrap_or_default();
            let _ = write!(text, "event: candle\ndata: {json}\n\n");
        }
        (!text.is_empty()).then_some(text)
    }
}
