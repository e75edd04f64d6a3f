//! [`RateLimitedLog`]: lets one log line per interval through and counts the rest, so a
//! failure that repeats on every request (a dependency down under load) costs one line per
//! interval instead of one per request, and the line still says how many were left out.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// A gate for one repeated log line. Put one in a `static` beside the call site:
///
/// ```
/// # use std::time::Duration;
/// # use fractile_telemetry::RateLimitedLog;
/// static REDIS_DOWN: RateLimitedLog = RateLimitedLog::new(Duration::from_secs(10));
/// if let Some(suppressed) = REDIS_DOWN.check() {
///     tracing::warn!(suppressed, "redis unavailable");
/// }
/// ```
///
/// Time is tokio's clock, so tests can pause and advance it.
#[derive(Debug)]
pub struct RateLimitedLog {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the last line was let through; `None` before the first.
    last: Option<Instant>,
    /// Lines refused since then.
    suppressed: u64,
}

impl RateLimitedLog {
    /// A gate letting one line through per `interval`.
    pub const fn new(interval: Duration) -> Self {
        RateLimitedLog {
            interval,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being the similar lines suppressed
    /// since the previous one (write it with the line); `None` when this one is suppressed
    /// (and counted).
    pub fn check(&self) -> Option<u64> {
        let now = Instant::now();
        // A panic while holding this lock leaves the counters consistent: keep going.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                state.suppressed = state.suppressed.saturating_add(1);
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_interval_passes_and_the_rest_are_counted() {
        let gate = RateLimitedLog::new(Duration::from_secs(10));
        assert_eq!(gate.check(), Some(0), "the first line passes");
        for _ in 0..99 {
            assert_eq!(gate.check(), None);
        }
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(gate.check(), None, "still inside the interval");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            gate.check(),
            Some(100),
            "the next line reports what was left out"
        );
        assert_eq!(gate.check(), None);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(gate.check(), Some(1), "the count restarts after each line");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(gate.check(), Some(0));
    }
}
