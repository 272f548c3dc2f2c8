//! The advisory lock that keeps a second candled off a database: an exclusive lock on `<database>.lock`, held for
//! the life of the process, with the holder's pid written in the file for the message the next one prints.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// An exclusive lock on a database, released when dropped (or when the process exits, however it exits).
#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the database {} is in use by another candled ({}): it holds the lock {}; stop it or set another \
         `storage.path`",
        .database.display(),
        .holder.map_or("pid unknown".to_owned(), |pid| format!("pid {pid}")),
        .lock.display()
    )]
    InUse { database: PathBuf, lock: PathBuf, holder: Option<u32> },
    #[error("cannot lock the database {}: {}: {source}", .database.display(), .lock.display())]
    Io { database: PathBuf, lock: PathBuf, source: std::io::Error },
    /// The database's folder could not be created (see [`crate::store::StoreBackend::lock`]).
    #[error("cannot create the storage folder {}: {source}", .folder.display())]
    Folder { folder: PathBuf, source: std::io::Error },
}

impl DatabaseLock {
    /// The lock file of a database: `<database>.lock`.
    fn path_for(database: &Path) -> PathBuf {
        let mut path = database.as_os_str().to_owned();
        path.push(".lock");
        PathBuf::from(path)
    }

    /// Takes the lock of `database` without waiting, creating the lock file if needed, and writes this process's
    /// pid into it. Fails with [`LockError::InUse`] while another process holds it.
    pub fn acquire(database: &Path) -> Result<Self, LockError> {
        let lock = Self::path_for(database);
        let io_error = |source| LockError::Io { database: database.to_owned(), lock: lock.clone(), source };
        // Not truncated on open: the file names the holder until the lock is ours.
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock).map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
                return Err(LockError::InUse { database: database.to_owned(), lock, holder });
            }
            Err(TryLockError::Error(source)) => return Err(io_error(source)),
        }
        let pid_written = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| {
            writeln!(file, "{}", std::process::id())?;
            file.flush()
        });
        pid_written.map_err(io_error)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_database_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("candles.db");
        let first = DatabaseLock::acquire(&database).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("candles.db.lock")).unwrap(),
            format!("{}\n", std::process::id())
        );
        let second = DatabaseLock::acquire(&database);
        match &second {
            Err(LockError::InUse { holder, .. }) => assert_eq!(*holder, Some(std::process::id())),
            other => panic!("expected InUse, got {other:?}"),
        }
        let message = second.unwrap_err().to_string();
        assert!(message.contains("candles.db is in use by another candled (pid "), "{message}");
        assert!(DatabaseLock::acquire(&dir.path().join("other.db")).is_ok(), "another database is free");
        drop(first);
        assert!(DatabaseLock::acquire(&database).is_ok());
    }
}
