//! Test-only fault injection: with the `fault-injection` feature (enabled by the integration tests, never by a
//! release build) a named task can be made to panic or stop, to prove that the supervisor notices and restarts it,
//! and storage can be made to find its store unreachable for a while, to prove that nothing is lost meanwhile.
//! Without the feature only [`ENABLED`] (false), [`Fault`] and an [`inject`] that refuses are compiled in.

use std::str::FromStr;

/// Whether this build carries the fault-injection hook.
pub const ENABLED: bool = cfg!(feature = "fault-injection");

/// What to do to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Panic inside a handler: actix drops the actor, and later sends fail.
    Panic,
    /// Stop the actor's context, as an actor that gave up would.
    Stop,
    /// Storage only: every commit fails as if the store were unreachable (a database server restarting) for
    /// [`UNREACHABLE_FOR`].
    Unreachable,
}

/// How long an injected [`Fault::Unreachable`] lasts.
pub const UNREACHABLE_FOR: std::time::Duration = std::time::Duration::from_secs(3);

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "panic" => Ok(Self::Panic),
            "stop" => Ok(Self::Stop),
            "unreachable" => Ok(Self::Unreachable),
            other => Err(format!("unknown fault {other:?}: expected \"panic\", \"stop\" or \"unreachable\"")),
        }
    }
}

/// Makes the task named `task` suffer `fault`. Fails when the hook is not compiled in, the engine is not running,
/// or no task has that name.
pub async fn inject(task: &str, fault: Fault) -> Result<(), String> {
    #[cfg(feature = "fault-injection")]
    {
        hook::inject(task, fault).await
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = fault;
        Err(format!("cannot inject a fault into {task}: this build has no fault-injection hook"))
    }
}

#[cfg(feature = "fault-injection")]
pub use hook::{Inject, InjectFault, register};

#[cfg(feature = "fault-injection")]
mod hook {
    use std::sync::Mutex;

    use actix::prelude::*;

    use super::Fault;

    /// To an actor: suffer this fault now. Each actor handles it with [`Inject::apply`].
    #[derive(Message, Debug, Clone, Copy)]
    #[rtype(result = "()")]
    pub struct Inject(pub Fault);

    impl Inject {
        pub fn apply<A>(self, name: &str, ctx: &mut A::Context)
        where
            A: Actor,
            A::Context: ActorContext,
        {
            match self.0 {
                Fault::Panic => panic!("fault injected: {name} panics"),
                Fault::Stop => {
                    log::warn!("fault injected: {name} stops");
                    ctx.stop();
                }
                Fault::Unreachable => log::warn!("fault injected: {name} has no store to lose; nothing happens"),
            }
        }
    }

    /// To the supervisor: inject `fault` into the task named `task`.
    #[derive(Message, Debug, Clone)]
    #[rtype(result = "Result<(), String>")]
    pub struct InjectFault {
        pub task: String,
        pub fault: Fault,
    }

    static SUPERVISOR: Mutex<Option<Recipient<InjectFault>>> = Mutex::new(None);

    /// The running supervisor takes the injections.
    pub fn register(supervisor: Recipient<InjectFault>) {
        *SUPERVISOR.lock().unwrap_or_else(|e| e.into_inner()) = Some(supervisor);
    }

    pub(super) async fn inject(task: &str, fault: Fault) -> Result<(), String> {
        let supervisor = SUPERVISOR.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let supervisor = supervisor.ok_or("the engine is not running")?;
        let msg = InjectFault { task: task.to_owned(), fault };
        supervisor.send(msg).await.map_err(|e| format!("the supervisor did not answer: {e}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_their_route_names() {
        let cases = [
            // TC0: a panic
            ("panic", Ok(Fault::Panic)),
            // TC1: a stop
            ("stop", Ok(Fault::Stop)),
            // TC2: an unreachable store
            ("unreachable", Ok(Fault::Unreachable)),
            // TC3: anything else is refused with the choices
            ("crash", Err("unknown fault \"crash\": expected \"panic\", \"stop\" or \"unreachable\"".to_owned())),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<Fault>(), expected, "{text}");
        }
    }
}
