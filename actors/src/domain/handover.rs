//! A connection's handover to a new socket made before the old one is broken: a rotation ahead of Binance's 24 h
//! cut, or the replacement of a zombie (a socket that answers pings but delivers no data). One handover at a time;
//! what follows its success or failure depends on why it was made. Pure: the connection actor holds the sockets.

/// Why a successor socket is being made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoverKind {
    /// Scheduled, ahead of the exchange's 24 h cut.
    Rotation,
    /// Streams stayed silent after a resubscribe: the current socket is a zombie.
    Replacement,
}

/// What to do after a successor's handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoverFailed {
    /// A rotation can wait: try again later, the current socket still delivers.
    RetryLater,
    /// The current socket is a zombie: break it and reconnect under the restart policy.
    Reconnect,
}

/// The handover in progress, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handover {
    pending: Option<HandoverKind>,
}

impl Handover {
    /// Asks for a handover; returns whether a successor must be made now. One in progress already answers a new
    /// request, but a replacement asked during a rotation makes it count as a replacement (its streams are told to
    /// repair once it carries them).
    pub fn begin(&mut self, kind: HandoverKind) -> bool {
        match self.pending {
            None => {
                self.pending = Some(kind);
                true
            }
            Some(_) => {
                if kind == HandoverKind::Replacement {
                    self.pending = Some(kind);
                }
                false
            }
        }
    }

    /// The successor's handshake failed: the handover is over.
    pub fn failed(&mut self) -> HandoverFailed {
        match self.pending.take() {
            Some(HandoverKind::Replacement) => HandoverFailed::Reconnect,
            Some(HandoverKind::Rotation) | None => HandoverFailed::RetryLater,
        }
    }

    /// The successor carries every stream and replaces the current socket: the handover is over. Returns why it
    /// was made.
    pub fn completed(&mut self) -> Option<HandoverKind> {
        self.pending.take()
    }

    /// The connection restarts: whatever was in progress is abandoned with its sockets.
    pub fn abandon(&mut self) {
        self.pending = None;
    }

    pub fn in_progress(&self) -> Option<HandoverKind> {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HandoverKind::*;

    #[test]
    fn one_handover_at_a_time_and_a_replacement_wins() {
        let mut handover = Handover::default();
        // TC0: a rotation starts a successor; another request while it runs does not start a second one.
        assert!(handover.begin(Rotation));
        assert!(!handover.begin(Rotation));
        assert_eq!(handover.in_progress(), Some(Rotation));
        // TC1: a replacement asked during the rotation takes it over instead of making another socket.
        assert!(!handover.begin(Replacement));
        assert_eq!(handover.in_progress(), Some(Replacement));
        // TC2: a rotation asked during a replacement leaves it a replacement.
        assert!(!handover.begin(Rotation));
        assert_eq!(handover.completed(), Some(Replacement));
        // TC3: once completed, the next request starts a successor again.
        assert_eq!(handover.in_progress(), None);
        assert!(handover.begin(Replacement));
    }

    #[test]
    fn a_failed_rotation_waits_and_a_failed_replacement_reconnects() {
        let cases = [
            // TC0: a rotation's successor failed: the current socket still delivers, try later.
            (Some(Rotation), HandoverFailed::RetryLater),
            // TC1: a zombie's replacement failed: break the zombie, reconnect.
            (Some(Replacement), HandoverFailed::Reconnect),
            // TC2: nothing in progress (a stale answer): nothing to break.
            (None, HandoverFailed::RetryLater),
        ];
        for (pending, expected) in cases {
            let mut handover = Handover { pending };
            assert_eq!(handover.failed(), expected, "{pending:?}");
            assert_eq!(handover.in_progress(), None, "{pending:?}: over after a failure");
        }
        // TC3: a restart abandons what was in progress.
        let mut handover = Handover::default();
        handover.begin(Replacement);
        handover.abandon();
        assert_eq!((handover.in_progress(), handover.completed()), (None, None));
    }
}
