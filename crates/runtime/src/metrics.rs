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
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(registry)
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
