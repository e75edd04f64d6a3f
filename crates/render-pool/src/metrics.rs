//! What the render threads measure, registered once for both binaries: the renders
//! themselves ([`RenderMetrics`]: `render_duration_seconds`, `renders_total{result}`) and the
//! pool in front of them ([`PoolMetrics`]).

use std::time::{Duration, Instant};

use fractile_render::RenderError;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Buckets of every render-time histogram, in seconds: a cheap tile takes a few ms, a deep
/// one up to seconds in debug builds, a job that waited behind a backlog tens of seconds.
/// One list, so the api's and the worker's `render_duration_seconds` can be compared and
/// aggregated bucket by bucket.
pub const RENDER_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The two render metrics the api and the worker both keep: `render_duration_seconds` and
/// `renders_total{result}`, registered here for both.
#[derive(Clone)]
pub struct RenderMetrics {
    /// Time of successful renders.
    pub duration: Histogram,
    /// Renders by result: `ok`, `cancelled`, `error`.
    pub renders: IntCounterVec,
}

impl RenderMetrics {
    /// Creates both metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = RenderMetrics {
            duration: Histogram::with_opts(
                HistogramOpts::new(
                    "render_duration_seconds",
                    "Time to render and encode one tile.",
                )
                .buckets(RENDER_BUCKETS.to_vec()),
            )?,
            renders: IntCounterVec::new(
                Opts::new("renders_total", "Renders by result: ok, cancelled, error."),
                &["result"],
            )?,
        };
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.renders.clone()))?;
        Ok(metrics)
    }

    /// Renders finished with `result` so far (tests assert on it).
    pub fn count(&self, result: &str) -> u64 {
        self.renders.with_label_values(&[result]).get()
    }

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

/// The pool's own metrics, the same names in both binaries (Prometheus's `job` label tells
/// them apart): `render_pool_queue_depth`, `render_pool_wait_seconds`,
/// `render_pool_rejected_total`; a job skipped or panicked counts in `renders_total` as
/// `cancelled` or `error`.
#[derive(Clone)]
pub struct PoolMetrics {
    /// Jobs waiting for a thread.
    pub queue_depth: IntGauge,
    /// Time a job waited for a thread.
    pub queue_wait: Histogram,
    /// Jobs refused because their lane's queue was full.
    pub rejected: IntCounter,
    /// Jobs skipped because their caller left or their deadline passed before they started.
    pub skipped: IntCounter,
    /// Jobs that panicked (contained: the thread lives on).
    pub panicked: IntCounter,
}

impl PoolMetrics {
    /// Creates the pool's metrics and registers them on `registry`; skipped and panicked jobs
    /// count in `render`'s `renders_total`.
    pub fn register(
        registry: &Registry,
        render: &RenderMetrics,
    ) -> Result<Self, prometheus::Error> {
        let metrics = PoolMetrics {
            queue_depth: IntGauge::new(
                "render_pool_queue_depth",
                "Renders waiting for a render thread.",
            )?,
            queue_wait: Histogram::with_opts(
                HistogramOpts::new(
                    "render_pool_wait_seconds",
                    "Time a render waited for a thread.",
                )
                .buckets(RENDER_BUCKETS.to_vec()),
            )?,
            rejected: IntCounter::new(
                "render_pool_rejected_total",
                "Renders refused because the render pool's queue was full.",
            )?,
            skipped: render.renders.with_label_values(&["cancelled"]),
            panicked: render.renders.with_label_values(&["error"]),
        };
        registry.register(Box::new(metrics.queue_depth.clone()))?;
        registry.register(Box::new(metrics.queue_wait.clone()))?;
        registry.register(Box::new(metrics.rejected.clone()))?;
        Ok(metrics)
    }
}
