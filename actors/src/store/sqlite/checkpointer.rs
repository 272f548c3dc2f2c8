//! Folds the writer's WAL into the database file from a thread of its own, so that commits never do it.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000 pages: that commit copies the
//! pages into the database file and, with `synchronous=NORMAL`, waits for two `fsync`s. Under a burst (a
//! whole-exchange midnight: 24,000 closed candles, each touching its own pages) that happened every few commits,
//! on the storage actor's thread, while the burst waited behind it. The writer turns it off
//! (`wal_autocheckpoint=0`) and this thread runs a `PASSIVE` checkpoint on its own connection every
//! [`CHECKPOINT_EVERY`]: it copies what no reader still needs, without waiting for readers or the writer, which
//! keeps appending meanwhile. What it leaves is taken by the next pass, or by the writer's `TRUNCATE` checkpoint at
//! close.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How often the WAL is folded into the database file.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The checkpoint thread of one writer. Dropping it stops the thread and waits for it (a pass under way finishes).
#[derive(Debug)]
pub struct Checkpointer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path`, which exists (its writer just opened it). The connection opens
    /// the file without creating it: a file deleted meanwhile is not brought back.
    pub fn start(path: &Path) -> rusqlite::Result<Self> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        // Its own closing must not checkpoint either: the writer's close does, and it may be the last one.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    // PASSIVE never waits for a lock: when the writer is checkpointing or restarting the WAL, the
                    // pass is skipped.
                    if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        log::debug!("sqlite: background checkpoint skipped: {error}");
                    }
                }
            })
            .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_is_folded_in_by_the_thread_not_by_the_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let file_size = || std::fs::metadata(&path).unwrap().len();
        // TC0: without the thread, commits well past the automatic checkpoint's 1,000 pages stay in the WAL.
        for _ in 0..25 {
            writer.execute("INSERT INTO t VALUES (zeroblob(200000))", []).unwrap();
        }
        std::thread::sleep(CHECKPOINT_EVERY * 2);
        assert!(file_size() < 1 << 20, "nothing but the thread checkpoints: {} bytes", file_size());
        // TC1: the thread copies them into the database file within a few periods, while the writer goes on.
        let checkpointer = Checkpointer::start(&path).unwrap();
        writer.execute("INSERT INTO t VALUES (zeroblob(200000))", []).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while file_size() < 5_000_000 {
            assert!(std::time::Instant::now() < deadline, "not checkpointed: {} bytes", file_size());
            std::thread::sleep(CHECKPOINT_EVERY / 5);
        }
        // TC2: dropping it stops and joins the thread; the writer's data is all there.
        drop(checkpointer);
        let rows: i64 = writer.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0)).unwrap();
        assert_eq!(rows, 26);
    }
}
