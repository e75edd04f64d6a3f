//! The circuit breaker in front of Redis.
//!
//! Closed, every call goes to Redis and outages (timeouts, refused or dropped connections,
//! a loading server) are counted; a call that Redis answered, even with an error, resets
//! the count. At `threshold` consecutive outages it opens: calls fail at once with
//! [`StoreError::Unavailable`] instead of each waiting out the budget, and the store starts
//! one background probe (`PING` under the budget, once per probe interval). The probe is the
//! half-open state: it is the only call that reaches Redis while the breaker is open, and
//! its first success closes the breaker. Calls that were already running when it opened do
//! not close it, whatever their outcome: only the probe does.
//!
//! The state is a small mutex-guarded enum rather than a crate: the probe runs in the
//! background instead of on a request's path, which the breaker crates on crates.io
//! (failsafe and its kin, built around letting a caller's call through half-open) do not do.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge, Opts, Registry};

use crate::error::StoreError;

/// Default consecutive outages that open the breaker.
pub const DEFAULT_BREAKER_THRESHOLD: NonZeroU32 = NonZeroU32::new(3).expect("3 is not zero");
/// Default pause between two probes of an open breaker.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Closed (counting consecutive outages) or open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { outages: u32 },
    Open,
}

/// The breaker's state and its two metrics.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: Mutex<State>,
    threshold: NonZeroU32,
    /// Which Redis it guards: `cache` or `state` (the metrics' `store` label).
    store: &'static str,
    /// `redis_breaker_open{store}`: 1 while open.
    open: IntGauge,
    /// `redis_breaker_opens_total{store}`: closed → open transitions.
    opens: IntCounter,
}

impl Breaker {
    pub(crate) fn new(threshold: NonZeroU32, store: &'static str) -> Self {
        // Valid constant names, help texts and label: creating the metrics cannot fail.
        let open = IntGauge::with_opts(
            Opts::new(
                "redis_breaker_open",
                "1 while the Redis circuit breaker is open (calls fail fast, a probe runs), by store: cache or state.",
            )
            .const_label("store", store),
        );
        let opens = IntCounter::with_opts(
            Opts::new(
                "redis_breaker_opens_total",
                "Times the Redis circuit breaker opened, by store: cache or state.",
            )
            .const_label("store", store),
        );
        Breaker {
            state: Mutex::new(State::Closed { outages: 0 }),
            threshold,
            store,
            open: open.expect("a valid gauge name and help"),
            opens: opens.expect("a valid counter name and help"),
        }
    }

    /// Which Redis it guards.
    pub(crate) fn store(&self) -> &'static str {
        self.store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether calls fail fast right now.
    pub(crate) fn is_open(&self) -> bool {
        *self.lock() == State::Open
    }

    /// `Err(Unavailable)` while open.
    pub(crate) fn allow(&self) -> Result<(), StoreError> {
        if self.is_open() {
            Err(StoreError::Unavailable)
        } else {
            Ok(())
        }
    }

    /// Counts a finished call (`outage`: Redis did not answer it). True when this call
    /// opened the breaker: the caller then starts the probe.
    pub(crate) fn record(&self, outage: bool) -> bool {
        let mut state = self.lock();
        match *state {
            State::Open => false,
            State::Closed { .. } if !outage => {
                *state = State::Closed { outages: 0 };
                false
            }
            State::Closed { outages } => {
                let outages = outages.saturating_add(1);
                if outages < self.threshold.get() {
                    *state = State::Closed { outages };
                    return false;
                }
                *state = State::Open;
                self.open.set(1);
                self.opens.inc();
                true
            }
        }
    }

    /// The probe succeeded.
    pub(crate) fn close(&self) {
        *self.lock() = State::Closed { outages: 0 };
        self.open.set(0);
    }

    /// Consecutive outages that open it.
    pub(crate) fn threshold(&self) -> u32 {
        self.threshold.get()
    }

    /// Times the breaker opened so far.
    pub(crate) fn opens(&self) -> u64 {
        self.opens.get()
    }

    /// Registers the two metrics on `registry`.
    pub(crate) fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.open.clone()))?;
        registry.register(Box::new(self.opens.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> Breaker {
        Breaker::new(NonZeroU32::new(threshold).expect("not zero"), "cache")
    }

    #[test]
    fn opens_after_the_threshold_of_consecutive_outages_and_counts_it() {
        let b = breaker(3);
        assert!(!b.record(true));
        assert!(!b.record(true));
        assert!(b.allow().is_ok(), "two outages of three: still closed");
        assert!(b.record(true), "the third opens it");
        assert!(matches!(b.allow(), Err(StoreError::Unavailable)));
        assert_eq!((b.open.get(), b.opens()), (1, 1));
    }

    #[test]
    fn an_answered_call_resets_the_count() {
        let b = breaker(2);
        assert!(!b.record(true));
        assert!(!b.record(false));
        assert!(!b.record(true), "the count started again");
        assert!(!b.is_open());
    }

    #[test]
    fn while_open_only_the_probe_closes_it() {
        let b = breaker(1);
        assert!(b.record(true));
        // A call that started before the breaker opened finishes: nothing changes.
        assert!(!b.record(false));
        assert!(!b.record(true), "opening again is not a second transition");
        assert!(b.is_open());
        b.close();
        assert!(b.allow().is_ok());
        assert_eq!((b.open.get(), b.opens()), (0, 1));
        assert!(b.record(true), "and it can open again");
        assert_eq!(b.opens(), 2);
    }
}
