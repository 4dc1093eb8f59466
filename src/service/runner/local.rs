//! The local runner: takes queued jobs through a [`BatchExecutor`] in this
//! process, records each state change and the counts while they run, and
//! reaches a running job with `cancel`.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::error::Error;
use crate::executor::{BatchExecutor, Progress, ProgressObserver};
use crate::model::{Job, PredictionOutput, State};
use crate::name::JobName;
use crate::predict::CancelHandle;
use crate::state::Transition;

use crate::service::{JobRecord, JobService, JobStore, ScanOrder, lock, modify, present};

impl JobService {
    /// Runs the oldest `QUEUED` job (of any project) to its end with
    /// `executor`, recording every state change, the counts while it runs
    /// (every [progress interval](crate::service::JobServiceBuilder::with_progress_interval)),
    /// and the final `predictionOutput` in the store. A
    /// [`cancel`](JobService::cancel) from another thread reaches the run.
    /// Returns the finished job, or `None` when no job is queued.
    ///
    /// Several threads may call this at once: each claims a different job.
    ///
    /// # Errors
    /// The store's errors. The job's own failures are in the job.
    pub fn run_next(&self, executor: &BatchExecutor) -> Result<Option<Job>, Error> {
        let clock = &*self.clock;
        loop {
            let Some(record) = self.claim(None)? else {
                return Ok(None);
            };
            let name = record.name.clone();
            let handle = CancelHandle::new();
            let run_id = self.next_run_id.fetch_add(1, Ordering::Relaxed);
            lock(&self.running).insert(name.clone(), (run_id, handle.clone()));
            let _registered = Registered {
                service: self,
                name: &name,
                run_id,
            };
            // A cancel between the claim and the registration wrote its
            // state without seeing this run: look again.
            let record = match self.store.get(&name)? {
                Some(current) => current,
                None => record,
            };
            match record.job.state() {
                State::Cancelling => handle.cancel(),
                State::Preparing => {}
                _ => continue, // cancelled outright before the run began
            }
            let mut job = present(&record);
            let observer = RunObserver {
                store: self.store.clone(),
                clock: self.clock.clone(),
                interval: self.progress_interval,
                name: name.clone(),
                user: executor.observer().cloned(),
                last_write: Mutex::new(Instant::now()),
            };
            let run = executor
                .clone()
                .with_observer(Arc::new(observer))
                .run(&mut job, &handle);
            if let Err(e) = run {
                // Only a job the executor cannot start ends here; record why.
                let _ = job.apply(Transition::fail(e.to_string()), clock);
            }
            // One more try if the store refused the final write; if that
            // fails too, the job stays RUNNING without a run, which a later
            // cancel, or the next opening of the store, ends.
            let record = self
                .finish_run(&name, &job)
                .or_else(|_| self.finish_run(&name, &job))?;
            return Ok(Some(present(&record)));
        }
    }

    /// As [`JobService::run_next`], but when no job is queued, waits up to
    /// `timeout` for one to be created and returns `None`: the body of a
    /// runner thread's loop.
    ///
    /// # Errors
    /// As [`JobService::run_next`].
    pub fn run_next_or_wait(
        &self,
        executor: &BatchExecutor,
        timeout: Duration,
    ) -> Result<Option<Job>, Error> {
        let seen = *lock(&self.created.0);
        if let Some(job) = self.run_next(executor)? {
            return Ok(Some(job));
        }
        let guard = lock(&self.created.0);
        let _ = self
            .created
            .1
            .wait_timeout_while(guard, timeout, |created| *created == seen)
            .unwrap_or_else(|e| e.into_inner());
        Ok(None)
    }

    /// The jobs this service is running now.
    pub fn running_jobs(&self) -> Vec<JobName> {
        let mut names: Vec<JobName> = lock(&self.running).keys().cloned().collect();
        names.sort();
        names
    }

    /// Runs queued jobs until none is left; returns how many ran.
    ///
    /// # Errors
    /// As [`JobService::run_next`].
    pub fn run_until_idle(&self, executor: &BatchExecutor) -> Result<usize, Error> {
        let mut ran = 0;
        while self.run_next(executor)?.is_some() {
            ran += 1;
        }
        Ok(ran)
    }

    pub(super) fn oldest_queued(&self) -> Result<Option<JobName>, Error> {
        let mut found = None;
        self.store
            .scan(None, ScanOrder::OldestFirst, None, &mut |record| {
                if record.job.state() == State::Queued {
                    found = Some(record.name.clone());
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })?;
        Ok(found)
    }

    /// Records the end of a run: the executor's final state, moved through
    /// the stored job's state machine (a cancel asked for during the run
    /// wins over success), and its `predictionOutput`.
    pub(super) fn finish_run(&self, name: &JobName, done: &Job) -> Result<JobRecord, Error> {
        let clock = &*self.clock;
        self.modify(name, |record| {
            let job = &mut record.job;
            if job.state().is_terminal() {
                return Ok(());
            }
            if job.state() == State::Preparing && done.state() == State::Succeeded {
                job.apply(Transition::Run, clock)?;
            }
            let message = done.error_message.clone().unwrap_or_default();
            let transition = match (done.state(), job.state()) {
                (State::Failed, _) => Transition::Fail(message),
                (State::Succeeded, State::Cancelling) => Transition::cancel(),
                (State::Succeeded, _) => Transition::Succeed,
                (_, State::Cancelling) => Transition::Cancel(message),
                _ => {
                    job.apply(Transition::RequestCancel, clock)?;
                    Transition::Cancel(message)
                }
            };
            job.apply(transition, clock)?;
            job.prediction_output = done.prediction_output.clone();
            Ok(())
        })
    }
}

/// Unregisters a run's cancel handle when the run ends, however it ends.
struct Registered<'a> {
    service: &'a JobService,
    name: &'a JobName,
    run_id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut running = lock(&self.service.running);
        if running
            .get(self.name)
            .is_some_and(|(id, _)| *id == self.run_id)
        {
            running.remove(self.name);
        }
    }
}

/// Records a run's moves and counts in the store, and passes progress on
/// to the executor's own observer.
struct RunObserver {
    store: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    name: JobName,
    user: Option<Arc<dyn ProgressObserver>>,
    last_write: Mutex<Instant>,
}

impl ProgressObserver for RunObserver {
    fn on_progress(&self, progress: &Progress<'_>) {
        if let Some(user) = &self.user {
            user.on_progress(progress);
        }
        {
            let mut last = lock(&self.last_write);
            if last.elapsed() < self.interval {
                return;
            }
            *last = Instant::now();
        }
        // The counts of committed shards only, so that predictionCount
        // always equals the lines of the committed result files.
        let (predictions, errors) = progress
            .shards
            .iter()
            .filter(|s| s.done)
            .fold((0, 0), |(p, e), s| (p + s.predictions, e + s.errors));
        let _ = modify(&*self.store, &self.name, |record| {
            if record.job.state() == State::Running {
                let output = record
                    .job
                    .prediction_output
                    .get_or_insert_with(PredictionOutput::default);
                output.prediction_count = Some(predictions as i64);
                output.error_count = Some(errors as i64);
            }
            Ok(())
        });
    }

    fn on_state(&self, job: &Job) {
        if let Some(user) = &self.user {
            user.on_state(job);
        }
        if job.state() == State::Running {
            let clock = &*self.clock;
            let _ = modify(&*self.store, &self.name, |record| {
                if record.job.state() == State::Preparing {
                    record.job.apply(Transition::Run, clock)?;
                }
                Ok(())
            });
        }
    }
}
