//! The worker's Prometheus metrics, on a registry of its own (with the process collector).

use fractile_render_pool::{PoolMetrics, RENDER_BUCKETS, RenderMetrics};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The worker's metrics.
pub struct WorkerMetrics {
    registry: Registry,
    /// `worker_jobs_consumed_total{queue}`: deliveries received.
    pub consumed: IntCounterVec,
    /// `render_duration_seconds` and `renders_total{result}` (ok, error, cancelled: deadline
    /// passed while rendering), as the api has them.
    pub render: RenderMetrics,
    /// `worker_queue_wait_seconds{queue}`: time from publish to delivery.
    pub queue_wait: HistogramVec,
    /// `worker_deadline_drops_total`: interactive jobs dropped because their requester gave up.
    pub deadline_drops: IntCounter,
    /// `worker_jobs_skipped_total{reason}`: `stored` (already in Redis), `cancelled` (seed cancelled).
    pub skipped: IntCounterVec,
    /// `worker_retries_total`: jobs requeued for another attempt.
    pub retries: IntCounter,
    /// `worker_dead_lettered_total`: jobs rejected to the dead-letter queue.
    pub dead_lettered: IntCounter,
    /// `broker_queue_ready_messages{queue}`: jobs ready in the broker's queue (polled); named
    /// apart from `render_pool_queue_depth` (renders waiting for this process's threads).
    pub queue_depth: IntGaugeVec,
    /// `worker_queue_depth_poll_failures_total`: reads of a broker queue's depth that failed
    /// (`broker_queue_ready_messages` then keeps its last value).
    pub depth_poll_failures: IntCounter,
    /// `worker_jobs_in_progress`: deliveries being handled.
    pub in_progress: IntGauge,
    /// `render_pool_queue_depth`, `render_pool_wait_seconds`, `render_pool_rejected_total`:
    /// the render pool's, as the api has them.
    pub pool: PoolMetrics,
    /// `http_connections_open{listener}`, `http_connections_rejected_total{listener}`,
    /// `http_connections_closed_total{listener, reason}`: the admin port's connections.
    pub connections: fractile_http::metrics::ConnectionMetrics,
    /// `queue_connected`: 1 while connected to RabbitMQ and consuming, else 0 (the api's
    /// gauge of the same name means its queue can take jobs).
    pub queue_connected: IntGauge,
}

impl WorkerMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = fractile_http::metrics::registry()?;
        let connections = fractile_http::metrics::ConnectionMetrics::register(&registry)?;
        let render = RenderMetrics::register(&registry)?;
        let pool = PoolMetrics::register(&registry, &render)?;
        let m = WorkerMetrics {
            connections,
            pool,
            render,
            consumed: IntCounterVec::new(
                Opts::new(
                    "worker_jobs_consumed_total",
                    "Render jobs delivered, by queue.",
                ),
                &["queue"],
            )?,
            queue_wait: HistogramVec::new(
                HistogramOpts::new(
                    "worker_queue_wait_seconds",
                    "Time from publish to delivery, by queue.",
                )
                .buckets(RENDER_BUCKETS.to_vec()),
                &["queue"],
            )?,
            deadline_drops: IntCounter::new(
                "worker_deadline_drops_total",
                "Interactive jobs dropped past their deadline.",
            )?,
            skipped: IntCounterVec::new(
                Opts::new(
                    "worker_jobs_skipped_total",
                    "Jobs acked without rendering, by reason.",
                ),
                &["reason"],
            )?,
            retries: IntCounter::new("worker_retries_total", "Jobs requeued for another attempt.")?,
            dead_lettered: IntCounter::new(
                "worker_dead_lettered_total",
                "Jobs rejected to the dead-letter queue.",
            )?,
            queue_depth: IntGaugeVec::new(
                Opts::new(
                    "broker_queue_ready_messages",
                    "Messages ready in the broker's render queue, by queue (polled).",
                ),
                &["queue"],
            )?,
            depth_poll_failures: IntCounter::new(
                "worker_queue_depth_poll_failures_total",
                "Reads of a broker queue's depth that failed (the depth gauge keeps its last value).",
            )?,
            in_progress: IntGauge::new("worker_jobs_in_progress", "Deliveries being handled.")?,
            queue_connected: IntGauge::new(
                "queue_connected",
                "1 while connected to RabbitMQ and consuming, else 0.",
            )?,
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.consumed.clone()))?;
        r.register(Box::new(m.queue_wait.clone()))?;
        r.register(Box::new(m.deadline_drops.clone()))?;
        r.register(Box::new(m.skipped.clone()))?;
        r.register(Box::new(m.retries.clone()))?;
        r.register(Box::new(m.dead_lettered.clone()))?;
        r.register(Box::new(m.queue_depth.clone()))?;
        r.register(Box::new(m.depth_poll_failures.clone()))?;
        r.register(Box::new(m.in_progress.clone()))?;
        r.register(Box::new(m.queue_connected.clone()))?;
        Ok(m)
    }

    /// The handles render jobs record their outcome and time in.
    pub fn render_metrics(&self) -> RenderMetrics {
        self.render.clone()
    }

    /// The registry, for collectors other crates own (the Redis breaker's, injected faults').
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The exposition text of every metric.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        fractile_http::metrics::encode(&self.registry)
    }
}
