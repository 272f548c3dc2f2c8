//! The actors: thin shells that receive a message, call the pure code in `domain`/`store`, and send the result on.
//! Each file holds one actor, with the messages it receives at the top.

pub mod audit;
pub mod backfill;
pub mod connection;
pub mod health;
pub mod history;
pub mod indicator;
pub mod messages;
pub mod storage;
pub mod subscription;
pub mod supervisor;

use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::prelude::*;

use crate::tasks::TaskStats;

/// The mailbox bound of every engine actor. `do_send` (used for writes that must happen) ignores it; `try_send`
/// honours it.
pub const MAILBOX_CAPACITY: usize = 4096;

/// An actor's address that counts every message sent, so that the mailbox depth can be reported
/// (`sent - handled`; actix exposes no queue length).
pub struct Mailbox<A: Actor> {
    addr: Addr<A>,
    stats: Arc<TaskStats>,
}

impl<A: Actor> Clone for Mailbox<A> {
    fn clone(&self) -> Self {
        Self { addr: self.addr.clone(), stats: self.stats.clone() }
    }
}

impl<A: Actor> Mailbox<A> {
    pub fn new(addr: Addr<A>, stats: Arc<TaskStats>) -> Self {
        Self { addr, stats }
    }

    /// Enqueues `msg` without waiting. Use it for writes that must happen: it never drops the message.
    pub fn do_send<M>(&self, msg: M)
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.stats.record_sent();
        self.addr.do_send(msg);
    }

    /// Enqueues `msg` unless the mailbox is full; gives it back if it is. Use it for updates that may be
    /// coalesced: the mailbox bound is what keeps memory bounded.
    pub fn try_send<M>(&self, msg: M) -> Result<(), M>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        match self.addr.try_send(msg) {
            Ok(()) => {
                self.stats.record_sent();
                Ok(())
            }
            Err(SendError::Full(msg) | SendError::Closed(msg)) => Err(msg),
        }
    }

    /// Sends `msg` and waits for the answer.
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, MailboxError>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.stats.record_sent();
        self.addr.send(msg).await
    }

    pub fn stats(&self) -> &Arc<TaskStats> {
        &self.stats
    }
}
