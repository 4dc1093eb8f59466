//! Runners: where a [`JobService`]'s jobs run. [`LocalRunner`] runs them
//! in this process through a [`BatchExecutor`]; [`SlurmRunner`] hands each
//! to a Slurm cluster as an array of parts plus a merge, and follows it.
//!
//! A runner is driven by one thread calling [`Runner::run_once`] in a
//! loop, as `batch-prediction serve` does:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use batch_prediction::service::{LocalRunner, Runner};
//! use batch_prediction::{BatchExecutor, EchoResolver, InMemoryJobStore, InMemoryStorage, JobService};
//!
//! let service = JobService::new(InMemoryJobStore::new())?;
//! let runner = LocalRunner::new(BatchExecutor::new(
//!     Arc::new(InMemoryStorage::new()),
//!     Arc::new(EchoResolver),
//! ));
//! // Nothing is queued: the call waits (at most 10 ms here) for a create.
//! runner.run_once(&service, Duration::from_millis(10))?;
//! # Ok::<(), batch_prediction::Error>(())
//! ```

mod local;
mod slurm;

use std::fmt;
use std::ops::ControlFlow;
use std::time::Duration;

use serde_json::Value;

use crate::error::Error;
use crate::executor::BatchExecutor;
use crate::model::{Job, State};
use crate::name::JobName;
use crate::state::Transition;

use super::{JobRecord, JobService, ScanOrder, lock, present};

pub use slurm::{SlurmOptions, SlurmRunner};

/// Where a [`JobService`]'s jobs run: one round of work at a time.
pub trait Runner: Send + Sync + fmt::Debug {
    /// One round of work for `service`: starts queued jobs, and advances
    /// the jobs it follows. When there is nothing to do, waits at most
    /// `wait` for a job to be created or cancelled.
    ///
    /// # Errors
    /// The store's errors, or the runner's own (a job's failures are
    /// recorded in the job).
    fn run_once(&self, service: &JobService, wait: Duration) -> Result<(), Error>;

    /// For a runner whose jobs run outside this process: the name that
    /// the [`JobRecord::runner`] state of its jobs carries, which the
    /// service must be [built with](super::JobServiceBuilder::with_external_runner)
    /// so that it leaves those jobs to it. `None` (the default) for a
    /// runner that runs jobs in this process.
    fn external(&self) -> Option<&str> {
        None
    }
}

/// Runs jobs in this process, one at a time per calling thread, through a
/// [`BatchExecutor`]: [`JobService::run_next_or_wait`] as a [`Runner`].
#[derive(Debug, Clone)]
pub struct LocalRunner {
    executor: BatchExecutor,
}

impl LocalRunner {
    /// A runner of jobs through `executor`.
    pub fn new(executor: BatchExecutor) -> Self {
        LocalRunner { executor }
    }

    /// The executor it runs jobs with.
    pub fn executor(&self) -> &BatchExecutor {
        &self.executor
    }
}

impl Runner for LocalRunner {
    fn run_once(&self, service: &JobService, wait: Duration) -> Result<(), Error> {
        service.run_next_or_wait(&self.executor, wait).map(drop)
    }
}

/// What a runner that runs jobs outside this process uses to claim,
/// follow and end them.
impl JobService {
    /// A number that grows with every create and cancel: pass it to
    /// [`wait_for_change`](Self::wait_for_change).
    pub fn changes(&self) -> u64 {
        *lock(&self.created.0)
    }

    /// Waits until a job was created or cancelled after [`changes`](Self::changes)
    /// answered `seen`, or `timeout` passed.
    pub fn wait_for_change(&self, seen: u64, timeout: Duration) {
        let guard = lock(&self.created.0);
        let _ = self
            .created
            .1
            .wait_timeout_while(guard, timeout, |changes| *changes == seen)
            .unwrap_or_else(|e| e.into_inner());
    }

    /// Claims the oldest `QUEUED` job (of any project) for a runner: moves
    /// it to `PREPARING` with `runner` as its [`JobRecord::runner`] state,
    /// in one write, and returns the record; `None` when no job is queued.
    /// Several runners may call this at once: each claims a different job.
    ///
    /// # Errors
    /// The store's errors.
    pub fn claim_next(&self, runner: Value) -> Result<Option<JobRecord>, Error> {
        self.claim(Some(runner))
    }

    /// [`claim_next`](Self::claim_next), with `runner` as the state.
    pub(super) fn claim(&self, runner: Option<Value>) -> Result<Option<JobRecord>, Error> {
        let clock = &*self.clock;
        loop {
            let Some(name) = self.oldest_queued()? else {
                return Ok(None);
            };
            let mut claimed = false;
            let record = self.modify(&name, |record| {
                claimed = record.job.state() == State::Queued;
                if claimed {
                    record.job.apply(Transition::Prepare, clock)?;
                    record.runner.clone_from(&runner);
                }
                Ok(())
            })?;
            if claimed {
                return Ok(Some(record));
            }
            // Another runner, or a cancel, was first.
        }
    }

    /// The unfinished jobs (`PREPARING`, `RUNNING`, `CANCELLING`) whose
    /// [`JobRecord::runner`] state names `runner`, oldest first.
    ///
    /// # Errors
    /// The store's errors.
    pub fn followed_jobs(&self, runner: &str) -> Result<Vec<JobRecord>, Error> {
        let mut found = Vec::new();
        self.store
            .scan(None, ScanOrder::OldestFirst, None, &mut |record| {
                let ours = record
                    .runner
                    .as_ref()
                    .is_some_and(|r| r["runner"].as_str() == Some(runner));
                if ours && !record.job.state().is_terminal() && record.job.state() != State::Queued
                {
                    found.push(record.clone());
                }
                ControlFlow::Continue(())
            })?;
        Ok(found)
    }

    /// Changes the record of `name` with `change` and writes it back
    /// (again if another writer got there first); returns what was
    /// written. For a runner's own state ([`JobRecord::runner`]) and the
    /// job's moves ([`Job::apply`]).
    ///
    /// # Errors
    /// `NOT_FOUND`, `change`'s errors, or the store's.
    pub fn update_record(
        &self,
        name: &JobName,
        change: impl FnMut(&mut JobRecord) -> Result<(), Error>,
    ) -> Result<JobRecord, Error> {
        self.modify(name, change)
    }

    /// Records the end of a job that a runner ran: `done` (a copy of the
    /// job that reached `SUCCEEDED`, `FAILED` or `CANCELLED`, with its
    /// `predictionOutput` and `errorMessage`) moved through the stored
    /// job's state machine, where a cancel asked for meanwhile wins over
    /// success. A job already finished is left as it is.
    ///
    /// # Errors
    /// The store's errors.
    pub fn record_end(&self, name: &JobName, done: &Job) -> Result<Job, Error> {
        self.finish_run(name, done).map(|record| present(&record))
    }
}
