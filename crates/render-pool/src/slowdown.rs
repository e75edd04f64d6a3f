//! An injected cost on every job: fault injection (`/faults`, `render_slowdown`) makes each
//! render burn `factor` times its CPU time, so a slower render looks to CPU-based autoscaling
//! exactly as a real one would. Idle, it costs one relaxed atomic load per job.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A slowdown factor on every job, for fault injection: shared between the pool and
/// whoever sets it. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Slowdown(Arc<AtomicU32>);

impl Default for Slowdown {
    fn default() -> Self {
        Slowdown(Arc::new(AtomicU32::new(PER_MILLE)))
    }
}

const PER_MILLE: u32 = 1000;

impl Slowdown {
    /// The extra CPU time owed after work that took `took`: `(factor - 1) × took`.
    pub fn extra(&self, took: Duration) -> Duration {
        let factor = self.0.load(Ordering::Relaxed);
        if factor <= PER_MILLE {
            return Duration::ZERO;
        }
        took.saturating_mul(factor - PER_MILLE) / PER_MILLE
    }

    /// Burns `extra(took)` of CPU on this thread, stopping early once `stop` says so. A
    /// slower render costs CPU, not idle time, so CPU-based autoscaling sees it as it would
    /// see a real one.
    pub fn burn(&self, took: Duration, stop: impl Fn() -> bool) {
        let extra = self.extra(took);
        if extra.is_zero() {
            return;
        }
        let until = std::time::Instant::now() + extra;
        let mut x = 0u64;
        while std::time::Instant::now() < until && !stop() {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
    }

    /// Sets the factor: every job then costs `factor` times its CPU time (1: no slowdown).
    /// Fault injection checks the range (1 to 100) before it calls this.
    pub fn set(&self, factor: f64) {
        // In range already (1 ..= MAX_SLOWDOWN): the cast cannot overflow.
        self.0
            .store((factor * f64::from(PER_MILLE)) as u32, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowdown_owes_the_factor_minus_one() {
        let slowdown = Slowdown::default();
        assert_eq!(slowdown.extra(Duration::from_millis(10)), Duration::ZERO);
        slowdown.set(3.0);
        assert_eq!(
            slowdown.extra(Duration::from_millis(10)),
            Duration::from_millis(20)
        );
        let start = std::time::Instant::now();
        slowdown.burn(Duration::from_millis(10), || false);
        assert!(start.elapsed() >= Duration::from_millis(20));
        let start = std::time::Instant::now();
        slowdown.burn(Duration::from_secs(60), || true);
        assert!(start.elapsed() < Duration::from_secs(10), "stops when told");
    }
}
