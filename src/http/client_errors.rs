//! Malformed HTTP requests and broken client connections are the client's fault, yet actix-http's HTTP/1
//! dispatcher logs each one at ERROR (`stream error: request parse error: ...`, target
//! `actix_http::h1::dispatcher`), with no setting to change that. [`ClientErrorLog`] wraps the real logger and turns
//! them into one WARN line at most every [`REPORT_EVERY`], with a count of the ones in between; every one is
//! counted in [`CLIENT_ERRORS`] (`candled_http_client_errors_total` on `/metrics`).

use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};
use prometheus::IntCounter;

/// Every client error actix-http reported, logged or not.
pub static CLIENT_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    let help = "Malformed HTTP requests and broken client connections (logged at most once a minute)";
    IntCounter::new("candled_http_client_errors_total", help).expect("a valid metric name")
});

/// Where actix-http logs its per-connection errors.
const DISPATCHER_TARGET: &str = "actix_http::h1";
/// How often a stream of client errors is reported.
pub const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Installs `inner` as the global logger, with actix-http's client errors rate-limited and at WARN.
pub fn install<L: Log + 'static>(inner: L, max_level: LevelFilter) -> Result<(), log::SetLoggerError> {
    log::set_boxed_logger(Box::new(ClientErrorLog::new(inner, REPORT_EVERY)))?;
    log::set_max_level(max_level);
    Ok(())
}

/// A logger that passes every record to `inner`, except actix-http's client errors, which it rate-limits.
pub struct ClientErrorLog<L> {
    inner: L,
    limit: RateLimit,
}

impl<L: Log> ClientErrorLog<L> {
    pub fn new(inner: L, every: Duration) -> Self {
        Self { inner, limit: RateLimit::new(every) }
    }
}

fn is_client_error(metadata: &Metadata<'_>) -> bool {
    metadata.level() == Level::Error && metadata.target().starts_with(DISPATCHER_TARGET)
}

impl<L: Log> Log for ClientErrorLog<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Client errors are always taken, to be counted; `log` decides whether the report is written.
        is_client_error(metadata) || self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !is_client_error(record.metadata()) {
            return self.inner.log(record);
        }
        CLIENT_ERRORS.inc();
        let Some(more) = self.limit.admit(Instant::now()) else { return };
        let every = self.limit.every.as_secs();
        let message = match more {
            0 => format!(
                "HTTP client error: {} (further ones are counted, reported at most every {every} s)",
                record.args()
            ),
            more => format!("HTTP client error: {} (and {more} more since the last report)", record.args()),
        };
        let demoted = Metadata::builder().level(Level::Warn).target(record.target()).build();
        if self.inner.enabled(&demoted) {
            self.inner.log(
                &Record::builder()
                    .metadata(demoted)
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .args(format_args!("{message}"))
                    .build(),
            );
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Lets one event through per period, and counts the ones it holds back.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    /// When the last event was let through, and how many were held back since.
    state: Mutex<Option<(Instant, u64)>>,
}

impl RateLimit {
    pub fn new(every: Duration) -> Self {
        Self { every, state: Mutex::new(None) }
    }

    /// `Some(held back since the last one let through)` if the event at `now` goes through, `None` if it is held.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *state {
            Some((last, held)) if now.saturating_duration_since(*last) < self.every => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                let released = *held;
                *last = now;
                *held = 0;
                Some(released)
            }
            None => {
                *state = Some((now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn rate_limit_lets_one_through_per_period_and_counts_the_rest() {
        let limit = RateLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limit.admit(t0), Some(0));
        assert_eq!(limit.admit(t0 + Duration::from_secs(1)), None);
        assert_eq!(limit.admit(t0 + Duration::from_secs(59)), None);
        assert_eq!(limit.admit(t0 + Duration::from_secs(60)), Some(2));
        assert_eq!(limit.admit(t0 + Duration::from_secs(61)), None);
        assert_eq!(limit.admit(t0 + Duration::from_secs(200)), Some(1));
    }

    /// Keeps (level, target, message) of what it is given.
    #[derive(Default, Clone)]
    struct Capture(Arc<Mutex<Vec<(Level, String, String)>>>);

    impl Log for Capture {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.level() <= Level::Info
        }
        fn log(&self, record: &Record<'_>) {
            self.0.lock().unwrap().push((record.level(), record.target().into(), record.args().to_string()));
        }
        fn flush(&self) {}
    }

    fn record(level: Level, target: &str, message: &str, logger: &impl Log) {
        logger.log(&Record::builder().level(level).target(target).args(format_args!("{message}")).build());
    }

    #[test]
    fn client_errors_become_one_warning_and_everything_else_passes() {
        let capture = Capture::default();
        let logger = ClientErrorLog::new(capture.clone(), Duration::from_secs(60));
        let dispatcher = "actix_http::h1::dispatcher";
        assert!(logger.enabled(&Metadata::builder().level(Level::Error).target(dispatcher).build()));
        for _ in 0..100 {
            record(Level::Error, dispatcher, "stream error: request parse error: invalid Header provided", &logger);
        }
        record(Level::Error, "candled::startup", "a real error", &logger);
        record(Level::Info, dispatcher, "not an error", &logger);
        let seen = capture.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!((seen[0].0, seen[0].1.as_str()), (Level::Warn, dispatcher));
        assert!(seen[0].2.starts_with("HTTP client error: stream error: request parse error"), "{}", seen[0].2);
        assert_eq!(seen[1], (Level::Error, "candled::startup".into(), "a real error".into()));
        assert_eq!(seen[2].0, Level::Info);
    }
}
