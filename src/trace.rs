//! Spans and events for the services that embed the crate (feature
//! `tracing`); without the feature every macro here expands to nothing and
//! [`Context`] is empty. The library never prints: what it reports goes to
//! the subscriber the application installs.
//!
//! Spans: `job` (fields `job`, `shard_selection`), around a run and its
//! threads; `merge` (`job`). Events, with indexable fields:
//! - `info`: a job's start (`files`, `shards`, `workers`, `resumed`) and end
//!   (`state`, `predictions`, `errors`, `records`, `retries`,
//!   `deadline_hits`, `elapsed_ms`); each shard's commit (`shard`,
//!   `predictions`, `errors`, `records`); the service's creates, cancels and
//!   state changes (`job`, `state`);
//! - `warn`: a predictor call retried (`attempt`, `wait_ms`, `error`), a
//!   batch failed and split (`instances`, `error`), an instance that failed
//!   alone (`error`), output that could not be committed;
//! - `debug`: the job store's writes (`job`, `op`).

/// An event at `level` (`info`, `warn`, `debug`…), in `tracing`'s syntax.
macro_rules! event {
    ($level:ident, $($rest:tt)*) => {
        #[cfg(feature = "tracing")]
        {
            tracing::$level!(target: "batch_prediction", $($rest)*);
        }
    };
}
pub(crate) use event;

/// A span at `level`, in `tracing`'s syntax, made the current one in the
/// returned [`Context`] (and in the threads it is handed to).
macro_rules! span {
    ($level:ident, $($rest:tt)*) => {{
        #[cfg(feature = "tracing")]
        let context = $crate::trace::Context::with(
            tracing::span!(target: "batch_prediction", tracing::Level::$level, $($rest)*),
        );
        #[cfg(not(feature = "tracing"))]
        let context = $crate::trace::Context::default();
        context
    }};
}
pub(crate) use span;

/// Where events go: the subscriber that was current where the context was
/// made, and a span. Worker threads enter it, so their events reach the
/// caller's subscriber (even a scoped one) inside the job's span.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "tracing"), derive(Default))]
pub(crate) struct Context {
    #[cfg(feature = "tracing")]
    dispatch: tracing::Dispatch,
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl Context {
    /// `span` under the current subscriber.
    #[cfg(feature = "tracing")]
    pub(crate) fn with(span: tracing::Span) -> Context {
        Context {
            dispatch: tracing::dispatcher::get_default(Clone::clone),
            span,
        }
    }

    /// The current subscriber and span.
    pub(crate) fn current() -> Context {
        #[cfg(feature = "tracing")]
        {
            Context::with(tracing::Span::current())
        }
        #[cfg(not(feature = "tracing"))]
        Context::default()
    }

    /// Runs `f` with this context's subscriber and inside its span.
    pub(crate) fn scope<T>(&self, f: impl FnOnce() -> T) -> T {
        #[cfg(feature = "tracing")]
        {
            tracing::dispatcher::with_default(&self.dispatch, || self.span.in_scope(f))
        }
        #[cfg(not(feature = "tracing"))]
        f()
    }
}
