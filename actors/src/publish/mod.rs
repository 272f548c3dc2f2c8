//! Publishing committed closed candles to NATS JetStream: the subjects, message ids and JSON payload
//! ([`message`]), the bounded queue between the hub and the publisher ([`queue`]), and what each stream has
//! published and still has to ([`ledger`]). Pure code: the publisher actor (`actors::publisher`) talks to the broker.

pub mod ledger;
pub mod message;
pub mod queue;

pub use ledger::{Decision, Ledger, RECENT_PER_STREAM};
pub use message::{CandlePayload, Subjects, msg_id};
pub use queue::PublishQueue;
