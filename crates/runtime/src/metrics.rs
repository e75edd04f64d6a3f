//! The Prometheus plumbing every fractile process shares: a registry per process (or per
//! app, in tests) that includes the process collector, and the text exposition.

use std::time::{Duration, Instant};

use fractile_render::RenderError;
use prometheus::{Encoder, Histogram, IntCounterVec, Registry, TextEncoder};

/// A new registry with the process collector (CPU seconds, resident memory, open fds)
/// registered: only the crate's default registry has it otherwise.
pub fn registry() -> Result<Registry, prometheus::Error> {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(process::ProcessMetrics::for_self()))?;
    Ok(registry)
}

#[cfg(target_os = "linux")]
mod process {
    //! The prometheus crate's process collector, with `process_cpu_seconds_total` at the
    //! kernel's tick resolution: the crate divides ticks by ticks-per-second in integers, so
    //! its counter moves in whole seconds, and a rate over a short window (a dashboard's,
    //! an autoscaler model's) reads 0 or 1 core for a process using 0.1.

    use prometheus::core::{Collector, Desc};
    use prometheus::process_collector::ProcessCollector;
    use prometheus::proto::{Counter, MetricFamily};

    /// The name of the family this collector corrects.
    const CPU_SECONDS: &str = "process_cpu_seconds_total";

    /// [`ProcessCollector`] with CPU seconds read to the tick.
    pub struct ProcessMetrics {
        inner: ProcessCollector,
    }

    impl ProcessMetrics {
        /// Metrics of this process.
        pub fn for_self() -> ProcessMetrics {
            ProcessMetrics {
                inner: ProcessCollector::for_self(),
            }
        }
    }

    /// User plus system CPU time of this process, in seconds; `None` if /proc is unreadable.
    pub fn cpu_seconds() -> Option<f64> {
        let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
        let ticks = stat.utime.saturating_add(stat.stime);
        Some(ticks as f64 / procfs::ticks_per_second() as f64)
    }

    impl Collector for ProcessMetrics {
        fn desc(&self) -> Vec<&Desc> {
            self.inner.desc()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let mut families = self.inner.collect();
            // Without /proc the inner collector has nothing either; keep what it has.
            if let Some(seconds) = cpu_seconds() {
                for family in families.iter_mut().filter(|f| f.name() == CPU_SECONDS) {
                    for metric in family.mut_metric() {
                        let mut counter = Counter::default();
                        counter.set_value(seconds);
                        metric.set_counter(counter);
                    }
                }
            }
            families
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn cpu_seconds_are_exported_to_the_tick_not_in_whole_seconds() {
            // Burn CPU until this process's time is well inside a second, so a value
            // truncated to whole seconds would be visibly below it.
            let mut x = 0u64;
            let before = loop {
                for i in 0..100_000u64 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                }
                let Some(now) = cpu_seconds() else {
                    panic!("/proc/self/stat is unreadable on Linux");
                };
                if (0.1..0.9).contains(&now.fract()) {
                    break now;
                }
            };
            let exported = ProcessMetrics::for_self()
                .collect()
                .into_iter()
                .find(|f| f.name() == CPU_SECONDS)
                .and_then(|f| f.get_metric().first().map(|m| m.get_counter().get_value()));
            let Some(exported) = exported else {
                panic!("{CPU_SECONDS} is not exported");
            };
            assert!(exported >= before, "{exported} < {before}: truncated");
            assert!(exported < before + 0.5, "{exported} is far past {before}");
        }
    }
}

/// The text exposition of everything in `registry`.
pub fn encode(registry: &Registry) -> Result<String, prometheus::Error> {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// The two render metrics the api and the worker both keep: `render_duration_seconds` and
/// `renders_total{result}`.
#[derive(Clone)]
pub struct RenderMetrics {
    /// Time of successful renders.
    pub duration: Histogram,
    /// Renders by result: `ok`, `cancelled`, `error`.
    pub renders: IntCounterVec,
}

impl RenderMetrics {
    /// Runs `render`, records its outcome and (when it succeeded) its time, and returns
    /// both.
    pub fn record<T>(
        &self,
        render: impl FnOnce() -> Result<T, RenderError>,
    ) -> (Result<T, RenderError>, Duration) {
        let started = Instant::now();
        let result = render();
        let took = started.elapsed();
        let outcome = match &result {
            Ok(_) => {
                self.duration.observe(took.as_secs_f64());
                "ok"
            }
            Err(RenderError::Cancelled) => "cancelled",
            Err(RenderError::Encode(_)) => "error",
        };
        self.renders.with_label_values(&[outcome]).inc();
        (result, took)
    }
}
