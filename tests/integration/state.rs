//! The state machine driven through the public API, as a service would.

use batch_prediction::{Code, Error, Job, ManualClock, State, Transition};
use serde_json::json;

#[test]
fn a_job_moves_through_its_life_and_serializes_each_step() {
    let clock = ManualClock::new("2026-03-01T10:00:00Z".parse().unwrap());
    // Output-only fields sent with a request (here without a state) are dropped when it is queued.
    let mut job = Job::from_value(
        json!({"jobId": "j1", "jobPosition": "2", "createTime": "2030-01-01T00:00:00Z",
        "errorMessage": "x", "predictionOutput": {"predictionCount": "5"}}),
    )
    .unwrap();
    let steps = [
        (
            Transition::Queue,
            json!({"jobId": "j1", "state": "QUEUED", "createTime": "2026-03-01T10:00:00Z"}),
        ),
        (
            Transition::Prepare,
            json!({"jobId": "j1", "state": "PREPARING", "createTime": "2026-03-01T10:00:00Z", "startTime": "2026-03-01T10:00:01.500Z"}),
        ),
        (
            Transition::Run,
            json!({"jobId": "j1", "state": "RUNNING", "createTime": "2026-03-01T10:00:00Z", "startTime": "2026-03-01T10:00:01.500Z"}),
        ),
        (
            Transition::RequestCancel,
            json!({"jobId": "j1", "state": "CANCELLING", "createTime": "2026-03-01T10:00:00Z", "startTime": "2026-03-01T10:00:01.500Z"}),
        ),
        (
            Transition::cancel(),
            json!({"jobId": "j1", "state": "CANCELLED", "createTime": "2026-03-01T10:00:00Z", "startTime": "2026-03-01T10:00:01.500Z",
            "endTime": "2026-03-01T10:00:06Z", "errorMessage": "Job cancelled by request"}),
        ),
    ];
    for (transition, want) in steps {
        job.apply(transition, &clock).unwrap();
        assert_eq!(job.to_json(), want);
        clock.advance(std::time::Duration::from_millis(1500));
    }
}

#[test]
fn illegal_moves_are_failed_precondition_and_change_nothing() {
    let clock = ManualClock::new("2026-03-01T10:00:00Z".parse().unwrap());
    let mut job = Job::default();
    job.apply(Transition::Queue, &clock).unwrap();
    job.apply(Transition::Prepare, &clock).unwrap();
    job.apply(Transition::Run, &clock).unwrap();
    job.apply(Transition::Succeed, &clock).unwrap();
    let done = job.clone();
    for t in [
        Transition::Queue,
        Transition::Run,
        Transition::fail("late"),
        Transition::RequestCancel,
        Transition::cancel(),
    ] {
        let target = t.target();
        let err = job.apply(t, &clock).unwrap_err();
        assert_eq!((err.from(), err.to()), (State::Succeeded, target));
        let err: Error = err.into();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(
            err.to_string(),
            format!("invalid state transition from SUCCEEDED to {target}")
        );
        assert_eq!(job, done);
    }
}
