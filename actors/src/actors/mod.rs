//! The actors: thin shells that receive a message, call the pure code in `domain`/`store`, and send the result on.
//! Each file holds one actor, with the messages it receives at the top.

pub mod audit;
pub mod backfill;
pub mod connection;
pub mod health;
pub mod history;
pub mod indicator;
pub mod messages;
pub mod publisher;
pub mod storage;
pub mod subscription;
pub mod supervisor;

use std::sync::{Arc, RwLock};

use actix::dev::ToEnvelope;
use actix::prelude::*;

use crate::tasks::TaskStats;

/// The mailbox bound of every engine actor. `do_send` (used for writes that must happen) ignores it; `try_send`
/// honours it.
pub const MAILBOX_CAPACITY: usize = 4096;

/// An actor's address that counts every message sent, so that the mailbox depth can be reported
/// (`sent - handled`; actix exposes no queue length).
///
/// Every clone shares one cell holding the address: when the supervisor replaces a dead actor with a fresh one
/// ([`Mailbox::repoint`]), every holder reaches the new actor.
pub struct Mailbox<A: Actor> {
    addr: Arc<RwLock<Addr<A>>>,
    stats: Arc<TaskStats>,
}

impl<A: Actor> Clone for Mailbox<A> {
    fn clone(&self) -> Self {
        Self { addr: self.addr.clone(), stats: self.stats.clone() }
    }
}

impl<A: Actor> Mailbox<A> {
    pub fn new(addr: Addr<A>, stats: Arc<TaskStats>) -> Self {
        Self { addr: Arc::new(RwLock::new(addr)), stats }
    }

    /// The current address.
    pub fn addr(&self) -> Addr<A> {
        self.with_addr(Addr::clone)
    }

    /// Calls `f` with the current address, without cloning it (the send path).
    fn with_addr<R>(&self, f: impl FnOnce(&Addr<A>) -> R) -> R {
        f(&self.addr.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Points every clone of this mailbox at `addr`, a fresh actor replacing a dead one. What was queued for the
    /// dead actor is lost: it no longer counts in the mailbox depth.
    pub fn repoint(&self, addr: Addr<A>) {
        *self.addr.write().unwrap_or_else(|e| e.into_inner()) = addr;
        self.stats.forget_queued();
    }

    /// The actor is alive: its mailbox still takes messages. `false` once it stopped for good or panicked.
    pub fn connected(&self) -> bool {
        self.with_addr(Addr::connected)
    }

    /// The current actor as a recipient of `M` (not counted: use it for replies).
    pub fn recipient<M>(&self) -> Recipient<M>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.addr().recipient()
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
        self.with_addr(|addr| addr.do_send(msg));
    }

    /// Enqueues `msg` unless the mailbox is full (or the actor is gone); gives it back, saying which. Use it for
    /// updates that may be coalesced: the mailbox bound is what keeps memory bounded.
    pub fn try_send<M>(&self, msg: M) -> Result<(), SendError<M>>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        match self.with_addr(|addr| addr.try_send(msg)) {
            Ok(()) => {
                self.stats.record_sent();
                Ok(())
            }
            Err(error) => Err(error),
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
        let request = self.with_addr(|addr| addr.send(msg));
        request.await
    }

    pub fn stats(&self) -> &Arc<TaskStats> {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An actor that says which one it is.
    struct Numbered(u32);

    impl Actor for Numbered {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Which;

    impl Handler<Which> for Numbered {
        type Result = u32;

        fn handle(&mut self, _: Which, _ctx: &mut Context<Self>) -> u32 {
            self.0
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Quit;

    impl Handler<Quit> for Numbered {
        type Result = ();

        fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }

    #[test]
    fn a_repointed_mailbox_reaches_the_new_actor_from_every_clone() {
        System::new().block_on(async {
            let stats = TaskStats::new(16);
            let mailbox = Mailbox::new(Numbered(1).start(), stats.clone());
            let holder = mailbox.clone();
            assert_eq!(holder.send(Which).await, Ok(1));
            holder.send(Quit).await.expect("handled");
            for _ in 0..100 {
                if !mailbox.connected() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            assert!(!holder.connected(), "a stopped actor is noticed through any clone");
            assert!(holder.try_send(Which).is_err(), "a dead actor takes nothing");
            assert!(stats.snapshot().mailbox_depth > 0, "nothing counts the sends as handled");

            mailbox.repoint(Numbered(2).start());
            assert_eq!(stats.snapshot().mailbox_depth, 0, "what the dead actor never took is forgotten");
            assert!(holder.connected());
            assert_eq!(holder.send(Which).await, Ok(2), "the clone reaches the new actor");
            assert_eq!(holder.recipient::<Which>().send(Which).await, Ok(2));
        });
    }
}
