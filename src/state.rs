//! The job state machine: the one table of legal [`State`] moves, and
//! [`Job::apply`], which moves a job and keeps its timestamps and
//! `errorMessage` consistent.
//!
//! ```text
//! STATE_UNSPECIFIED ─▶ QUEUED ─▶ PREPARING ─▶ RUNNING ─▶ SUCCEEDED
//!                        │  │        │           │
//!                        │  └────────┴───────────┴─▶ CANCELLING ─▶ CANCELLED
//!                        └──────────────────────────────────────▶ CANCELLED
//! QUEUED, PREPARING, RUNNING, CANCELLING ─▶ FAILED   SUCCEEDED, FAILED, CANCELLED are final
//! ```

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::error::InvalidTransition;
use crate::model::{Job, State};

impl State {
    /// Whether the state is final: `SUCCEEDED`, `FAILED` or `CANCELLED`.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Cancelled)
    }

    /// Whether a job in this state may move to `next`. This `match` is the
    /// only place that decides it.
    ///
    /// # Example
    /// ```
    /// use batch_prediction::State;
    ///
    /// assert!(State::Queued.can_transition_to(State::Cancelled));
    /// assert!(!State::Running.can_transition_to(State::Cancelled)); // through CANCELLING
    /// assert!(!State::Succeeded.can_transition_to(State::Failed));
    /// ```
    pub fn can_transition_to(self, next: State) -> bool {
        use State::*;
        matches!(
            (self, next),
            (Unspecified, Queued)
                | (Queued, Preparing)
                | (Preparing, Running)
                | (Running, Succeeded)
                | (Queued | Preparing | Running, Cancelling)
                | (Queued | Cancelling, Cancelled)
                | (Queued | Preparing | Running | Cancelling, Failed)
        )
    }

    /// Every state this one may move to, in wire order.
    pub fn successors(self) -> impl Iterator<Item = State> {
        State::ALL
            .iter()
            .copied()
            .filter(move |&next| self.can_transition_to(next))
    }
}

/// A move of the job state machine, with what the target state needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transition {
    /// To `QUEUED`: the job was created. Clears every output-only field the
    /// request carried and sets `createTime`.
    Queue,
    /// To `PREPARING`.
    Prepare,
    /// To `RUNNING`.
    Run,
    /// To `SUCCEEDED`.
    Succeed,
    /// To `FAILED`, with the message that explains the failure (an empty one
    /// becomes [`Transition::FAILED_MESSAGE`]).
    Fail(String),
    /// To `CANCELLING`: a cancel was asked for while the job is not yet stopped.
    RequestCancel,
    /// To `CANCELLED`, with the reason (an empty one becomes
    /// [`Transition::CANCELLED_MESSAGE`]).
    Cancel(String),
}

impl Transition {
    /// The message a cancelled job gets from [`Transition::cancel`].
    pub const CANCELLED_MESSAGE: &'static str = "Job cancelled by request";

    /// The message a failed job gets when [`Transition::Fail`] carries none.
    pub const FAILED_MESSAGE: &'static str = "Job failed for an unknown reason";

    /// A [`Transition::Cancel`] with [`Transition::CANCELLED_MESSAGE`].
    pub fn cancel() -> Self {
        Transition::Cancel(Self::CANCELLED_MESSAGE.to_owned())
    }

    /// A [`Transition::Fail`] with `message`.
    pub fn fail(message: impl Into<String>) -> Self {
        Transition::Fail(message.into())
    }

    /// The state this move leads to.
    pub fn target(&self) -> State {
        match self {
            Transition::Queue => State::Queued,
            Transition::Prepare => State::Preparing,
            Transition::Run => State::Running,
            Transition::Succeed => State::Succeeded,
            Transition::Fail(_) => State::Failed,
            Transition::RequestCancel => State::Cancelling,
            Transition::Cancel(_) => State::Cancelled,
        }
    }
}

impl Job {
    /// Moves the job to the transition's target state, if the state machine
    /// allows it, and sets the fields that go with it:
    ///
    /// - `QUEUED` (creation): clears the output-only fields a request may
    ///   carry ([`Job::clear_output_only`]) and sets `createTime`;
    /// - `PREPARING` or `RUNNING`: `startTime` (unless already set);
    ///   leaving `QUEUED` clears `jobPosition`, which only means something there;
    /// - `SUCCEEDED`: `endTime`, and no `errorMessage`;
    /// - `FAILED` and `CANCELLED`: `endTime` and a non-empty `errorMessage`.
    ///
    /// Times come from `clock`, never earlier than a time the job already
    /// has, so `createTime ≤ startTime ≤ endTime` holds even when the clock
    /// steps back.
    ///
    /// # Errors
    /// [`InvalidTransition`] naming both states when the move is illegal; the
    /// job is then unchanged.
    ///
    /// # Example
    /// ```
    /// use batch_prediction::{Job, ManualClock, State, Transition};
    ///
    /// let clock = ManualClock::new("2026-01-01T00:00:00Z".parse()?);
    /// let mut job = Job::default().set_job_id("j1");
    /// job.apply(Transition::Queue, &clock)?;
    /// job.apply(Transition::Prepare, &clock)?;
    /// job.apply(Transition::fail("model failed to load"), &clock)?;
    /// assert_eq!(job.state(), State::Failed);
    /// assert_eq!(job.error_message.as_deref(), Some("model failed to load"));
    ///
    /// let err = job.apply(Transition::Run, &clock).unwrap_err();
    /// assert_eq!(err.to_string(), "invalid state transition from FAILED to RUNNING");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply(
        &mut self,
        transition: Transition,
        clock: &dyn Clock,
    ) -> Result<(), InvalidTransition> {
        let from = self.state();
        let to = transition.target();
        if !from.can_transition_to(to) {
            return Err(InvalidTransition { from, to });
        }
        if transition == Transition::Queue {
            self.clear_output_only();
        }
        let now = [self.create_time, self.start_time, self.end_time]
            .into_iter()
            .flatten()
            .fold(clock.now(), DateTime::<Utc>::max);
        match transition {
            Transition::Queue => self.create_time = Some(now),
            Transition::Prepare | Transition::Run => {
                self.start_time.get_or_insert(now);
            }
            Transition::RequestCancel => {}
            Transition::Succeed => {
                self.end_time = Some(now);
                self.error_message = None;
            }
            Transition::Fail(message) => {
                self.end_time = Some(now);
                self.error_message = Some(non_empty(message, Transition::FAILED_MESSAGE));
            }
            Transition::Cancel(message) => {
                self.end_time = Some(now);
                self.error_message = Some(non_empty(message, Transition::CANCELLED_MESSAGE));
            }
        }
        if from == State::Queued {
            self.job_position = None;
        }
        self.state = Some(to);
        Ok(())
    }
}

fn non_empty(message: String, default: &str) -> String {
    if message.is_empty() {
        default.to_owned()
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    /// The whole table, written out: (from, [legal targets]).
    #[test]
    fn transition_table() {
        use State::*;
        let table: [(State, &[State]); 8] = [
            (Unspecified, &[Queued]),
            (Queued, &[Preparing, Failed, Cancelling, Cancelled]),
            (Preparing, &[Running, Failed, Cancelling]),
            (Running, &[Succeeded, Failed, Cancelling]),
            (Succeeded, &[]),
            (Failed, &[]),
            (Cancelling, &[Failed, Cancelled]),
            (Cancelled, &[]),
        ];
        for (from, legal) in table {
            let got: Vec<State> = from.successors().collect();
            assert_eq!(got, legal, "from {from}");
            for &to in State::ALL {
                assert_eq!(
                    from.can_transition_to(to),
                    legal.contains(&to),
                    "{from} -> {to}"
                );
            }
            assert_eq!(from.is_terminal(), legal.is_empty(), "{from}");
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn timestamps_and_messages_follow_the_path() {
        let clock = ManualClock::new(at("2026-01-01T00:00:00Z"));
        let mut job = Job {
            create_time: Some(at("2999-01-01T00:00:00Z")),
            state: None,
            error_message: Some("sent by a client".into()),
            job_position: Some(9),
            ..Job::default()
        };
        job.apply(Transition::Queue, &clock).unwrap();
        assert_eq!(
            job.create_time,
            Some(at("2026-01-01T00:00:00Z")),
            "a client's createTime is ignored"
        );
        assert_eq!(
            (job.error_message.as_deref(), job.job_position),
            (None, None),
            "output-only fields cleared"
        );
        job.job_position = Some(3);
        clock.advance(std::time::Duration::from_secs(60));
        job.apply(Transition::Prepare, &clock).unwrap();
        assert_eq!(job.start_time, Some(at("2026-01-01T00:01:00Z")));
        assert_eq!(job.job_position, None);
        clock.advance(std::time::Duration::from_secs(60));
        job.apply(Transition::Run, &clock).unwrap();
        assert_eq!(
            job.start_time,
            Some(at("2026-01-01T00:01:00Z")),
            "start kept"
        );
        clock.advance(std::time::Duration::from_secs(60));
        job.apply(Transition::Succeed, &clock).unwrap();
        assert_eq!(job.end_time, Some(at("2026-01-01T00:03:00Z")));
        assert_eq!(job.error_message, None);
        assert_eq!(job.state(), State::Succeeded);
    }

    #[test]
    fn cancel_paths() {
        let clock = ManualClock::new(at("2026-01-01T00:00:00Z"));
        let mut queued = Job::default();
        queued.apply(Transition::Queue, &clock).unwrap();
        queued.apply(Transition::cancel(), &clock).unwrap();
        assert_eq!(queued.state(), State::Cancelled);
        assert_eq!(
            queued.error_message.as_deref(),
            Some("Job cancelled by request")
        );
        assert_eq!(queued.end_time, Some(at("2026-01-01T00:00:00Z")));
        assert_eq!(queued.start_time, None);

        let mut running = Job::default();
        for t in [Transition::Queue, Transition::Prepare, Transition::Run] {
            running.apply(t, &clock).unwrap();
        }
        let before = running.clone();
        let err = running.apply(Transition::cancel(), &clock).unwrap_err();
        assert_eq!((err.from(), err.to()), (State::Running, State::Cancelled));
        assert_eq!(running, before, "an illegal move changes nothing");
        running.apply(Transition::RequestCancel, &clock).unwrap();
        assert_eq!(running.end_time, None);
        running
            .apply(Transition::Cancel("stopped by operator".into()), &clock)
            .unwrap();
        assert_eq!(
            running.error_message.as_deref(),
            Some("stopped by operator")
        );
        assert!(running.end_time.is_some());
    }

    #[test]
    fn times_never_go_backwards() {
        let clock = ManualClock::new(at("2026-01-01T12:00:00Z"));
        let mut job = Job::default();
        job.apply(Transition::Queue, &clock).unwrap();
        clock.set(at("2026-01-01T11:00:00Z"));
        job.apply(Transition::Prepare, &clock).unwrap();
        job.apply(Transition::fail("boom"), &clock).unwrap();
        assert_eq!(job.start_time, job.create_time);
        assert_eq!(job.end_time, job.create_time);
    }
}
