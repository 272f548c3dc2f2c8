//! For tests against the real PostgreSQL (the engine's and the root package's): where it is, the rule for when it is
//! unreachable (skip with a message; fail under `CI=true`), and a fresh schema per test, dropped when the test ends,
//! even when it fails.

use std::time::Duration;

use super::PostgresConfig;

/// The environment variable naming the test server; unset, [`DEFAULT_POSTGRES_URL`].
pub const POSTGRES_URL_VAR: &str = "CANDLED_TEST_POSTGRES_URL";

/// The development and CI machines' server: trust auth on loopback, database `test`.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The test server's URL.
pub fn postgres_url() -> String {
    std::env::var(POSTGRES_URL_VAR)
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_owned())
}

/// Whether a missing server fails the test (`CI=true`) instead of skipping it.
pub fn servers_required() -> bool {
    std::env::var("CI").is_ok_and(|ci| ci == "true")
}

/// What a test does when a server it needs is unreachable: under `CI=true` it fails (panics); elsewhere it prints
/// why it is skipped and the caller returns.
pub fn skip_or_fail(test: &str, what: &str, error: &str) {
    if servers_required() {
        panic!("{test}: {what} is unreachable under CI=true, where it must run: {error}");
    }
    eprintln!("SKIPPED {test}: {what} is unreachable ({error}); start it to run this test (see README, \"Tests\")");
}

/// A schema of its own in the test server for one test, `candled_test_<random>`: created by [`TestSchema::create`],
/// dropped with everything in it when this guard is dropped (a failing test's unwinding included).
#[derive(Debug)]
pub struct TestSchema {
    config: PostgresConfig,
}

impl TestSchema {
    /// Creates a fresh schema, or `None` when the server is unreachable and the test should skip (it panics instead
    /// under `CI=true`).
    pub fn create(test: &str) -> Option<Self> {
        let mut config = PostgresConfig::new(postgres_url());
        config.schema = format!("candled_test_{:016x}", fastrand::u64(..));
        match admin(&config.url, format!("CREATE SCHEMA {}", config.schema)) {
            Ok(()) => Some(Self { config }),
            Err(error) => {
                skip_or_fail(test, &format!("PostgreSQL at {}", config.describe()), &error);
                None
            }
        }
    }

    /// The settings of a store in this schema (a pool of 4).
    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    /// The schema's name, for a config file (`[storage] schema`) or a query.
    pub fn name(&self) -> &str {
        &self.config.schema
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// Runs SQL statements on a connection of their own, as a user in `psql` would (the default search path: name
    /// the tables with [`TestSchema::name`]), for what a test does beside the store.
    pub fn execute(&self, sql: &str) -> Result<(), String> {
        admin(&self.config.url, sql.to_owned())
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if let Err(error) = admin(&self.config.url, format!("DROP SCHEMA IF EXISTS {} CASCADE", self.config.schema)) {
            eprintln!("cannot drop the test schema {}: {error}", self.config.schema);
        }
    }
}

/// Runs `sql` on a connection of its own, on a thread of its own (the caller may be inside an async runtime, where
/// blocking on another is not allowed). Errors are text with their causes.
fn admin(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_owned();
    let work = move || -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let mut config: tokio_postgres::Config = url.parse().map_err(|_| "cannot parse the URL".to_owned())?;
            config.connect_timeout(Duration::from_secs(3));
            let chain = |error: tokio_postgres::Error| crate::error_chain(&error);
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(chain)?;
            let connection = tokio::spawn(connection);
            let result = client.batch_execute(&sql).await.map_err(chain);
            drop(client);
            let _ = connection.await;
            result
        })
    };
    std::thread::spawn(work).join().unwrap_or_else(|_| Err("the admin thread panicked".to_owned()))
}
