//! Which store candled keeps its candles in, as the config's `[storage]` section chose it, and how to open it: a
//! writer for the storage actor and the bulk tools, readers for HTTP, the audit and start-up, a description for
//! logs that never holds a password, and the single-writer lock the store needs (SQLite's `<database>.lock`).
//!
//! Every method is one `match` over the backends: a new backend is a new variant and one arm in each.

use std::path::{Path, PathBuf};

use super::{PostgresBackend, SqliteStore, Store, StoreError};
use crate::lock::{DatabaseLock, LockError};

/// The store the config names.
#[derive(Clone, Debug)]
pub enum StoreBackend {
    /// One SQLite file, written by one candled at a time.
    Sqlite { path: PathBuf },
    /// A PostgreSQL database (its pool, shared by every clone), which several candled may write at once.
    Postgres(PostgresBackend),
}

impl StoreBackend {
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        Self::Sqlite { path: path.into() }
    }

    /// The backend's name, as `[storage] backend` spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Opens the store for writing, its schema applied (SQLite: creating the file if needed; its folder must
    /// exist, see [`lock`](Self::lock)).
    pub fn open_writer(&self) -> Result<Box<dyn Store>, StoreError> {
        match self {
            Self::Sqlite { path } => Ok(Box::new(SqliteStore::open(path)?)),
            Self::Postgres(backend) => Ok(Box::new(backend.store())),
        }
    }

    /// Opens the store for reading beside the writer (SQLite: a read-only connection to an existing file).
    pub fn open_reader(&self) -> Result<Box<dyn Store>, StoreError> {
        match self {
            Self::Sqlite { path } => Ok(Box::new(SqliteStore::open_read_only(path)?)),
            Self::Postgres(backend) => Ok(Box::new(backend.store())),
        }
    }

    /// The store for logs and errors: the SQLite path (a server's URL would be shown without its password).
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite { path } => format!("the SQLite database {}", path.display()),
            Self::Postgres(backend) => format!("the PostgreSQL database {}", backend.describe()),
        }
    }

    /// The SQLite file, for the SQLite-only bulk tools (`candled import`); `None` on another backend.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Self::Sqlite { path } => Some(path),
            Self::Postgres(_) => None,
        }
    }

    /// Takes what keeps a second writer off the store, held until dropped. SQLite: creates the database's folder
    /// if needed and takes the lock on `<database>.lock`, failing with [`LockError::InUse`] while another candled
    /// holds it. A database server needs none (`Ok(None)`): replicas share one database by design.
    pub fn lock(&self) -> Result<Option<DatabaseLock>, LockError> {
        match self {
            Self::Sqlite { path } => {
                if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(folder)
                        .map_err(|source| LockError::Folder { folder: folder.to_owned(), source })?;
                }
                DatabaseLock::acquire(path).map(Some)
            }
            Self::Postgres(_) => Ok(None),
        }
    }
}

/// `url` with the password of its user info, if any, replaced by `***`: what logs, errors and the config views
/// show of a database URL (`postgres://candled:s3cret@db:5432/candles` → `postgres://candled:***@db:5432/candles`).
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    // The user info ends at the last `@` before the path: a password may hold `@`, a host may not.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Candle, StreamId, StreamKey, Timeframe};

    #[test]
    fn a_url_is_shown_without_its_password() {
        let cases = [
            // TC0: user and password.
            ("postgres://candled:s3cret@db:5432/candles", "postgres://candled:***@db:5432/candles"),
            // TC1: a password holding `@` and `:`.
            ("postgres://u:p@ss:w@rd@127.0.0.1/test", "postgres://u:***@127.0.0.1/test"),
            // TC2: a user without password, no user, no scheme: unchanged.
            ("postgres://postgres@127.0.0.1:5432/test", "postgres://postgres@127.0.0.1:5432/test"),
            ("postgres://127.0.0.1/test", "postgres://127.0.0.1/test"),
            ("not a url", "not a url"),
            // TC3: an `@` in the query is not user info.
            ("postgres://h/db?application_name=a@b", "postgres://h/db?application_name=a@b"),
        ];
        for (index, (url, shown)) in cases.into_iter().enumerate() {
            assert_eq!(redacted_url(url), shown, "TC{index}");
        }
    }

    #[test]
    fn the_sqlite_backend_locks_writes_and_reads_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/folder/candles.db");
        let backend = StoreBackend::sqlite(&path);
        assert_eq!((backend.kind(), backend.sqlite_path()), ("sqlite", Some(path.as_path())));
        assert!(backend.describe().contains(&path.display().to_string()));
        // TC0: the lock creates the folder; a second one is refused while the first is held.
        let lock = backend.lock().expect("the first lock").expect("SQLite has a lock");
        assert!(matches!(backend.lock(), Err(LockError::InUse { .. })));
        // TC1: what the writer commits, a reader sees.
        let key = StreamKey::new("BTCUSDT", Timeframe::M1);
        let candle = Candle {
            open_time: 0,
            close_time: 59_999,
            open: 1.0,
            high: 2.0,
            low: 0.5,
            close: 1.5,
            volume: 1.0,
            quote_volume: 1.5,
            trades: 1,
            taker_buy_base: 0.5,
            taker_buy_quote: 0.75,
            is_closed: true,
        };
        let mut writer = backend.open_writer().expect("writer");
        writer.write_candles(std::slice::from_ref(&key), &[(StreamId(0), candle)]).expect("write");
        let reader = backend.open_reader().expect("reader");
        assert_eq!(reader.closed_candles("BTCUSDT", Timeframe::M1).expect("read"), [candle]);
        writer.close().expect("close");
        drop(lock);
        assert!(backend.lock().is_ok(), "free once dropped");
    }
}
