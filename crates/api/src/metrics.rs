//! Prometheus metrics of one api process.
//!
//! Each [`Metrics`] owns its own registry, so tests (many apps in one process) never share
//! counters; the process collector (CPU, memory, fds) is added to it explicitly because only
//! the crate's default registry would otherwise have it. Label values are bounded: route
//! templates (never raw paths), status classes, cache layers and results.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use fractile_http::metrics::ConnectionMetrics;
use fractile_render_pool::{PoolMetrics, RENDER_BUCKETS, RenderMetrics};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Latency buckets for HTTP requests: from an L1 hit (tens of µs) to a slow render.
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The traffic routes' templates (`MatchedPath`), and the label of a request that matched none:
/// their series are resolved once each ([`Metrics::http`]). A route missing here is still
/// counted, only through a label lookup per request.
const ROUTES: &[&str] = &[
    "/tiles/{z}/{x}/{y}",
    "/",
    "/openapi.json",
    "/v1/seeds",
    "/v1/seeds/{id}",
    UNMATCHED,
];

/// Route label for requests that matched no route, so probes of random paths cannot blow up
/// the metrics' cardinality.
pub const UNMATCHED: &str = "unmatched";

/// A status code's class, the `status` label.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The cache outcome of a response, left in its extensions by the tile handler for the
/// `cache` label of `http_request_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLabel {
    /// Not a tile served from a cache (every other route, and errors): `none`.
    Unset,
    /// `l1`.
    L1,
    /// `l2`.
    L2,
    /// `rendered`: rendered in this process for this request.
    Rendered,
    /// `worker`: rendered by a worker for this request.
    Worker,
    /// `coalesced`: waited for another request's fill.
    Coalesced,
    /// `not_modified`: a 304.
    NotModified,
}

impl CacheLabel {
    const ALL: [CacheLabel; 7] = [
        CacheLabel::Unset,
        CacheLabel::L1,
        CacheLabel::L2,
        CacheLabel::Rendered,
        CacheLabel::Worker,
        CacheLabel::Coalesced,
        CacheLabel::NotModified,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheLabel::Unset => "none",
            CacheLabel::L1 => "l1",
            CacheLabel::L2 => "l2",
            CacheLabel::Rendered => "rendered",
            CacheLabel::Worker => "worker",
            CacheLabel::Coalesced => "coalesced",
            CacheLabel::NotModified => "not_modified",
        }
    }
}

/// One request's series: `http_requests_total{route, status}` and
/// `http_request_duration_seconds{route, status, cache}`.
#[derive(Clone)]
pub struct HttpSeries {
    requests: IntCounter,
    duration: Histogram,
}

impl HttpSeries {
    /// Counts a request that took `elapsed`.
    pub fn observe(&self, elapsed: Duration) {
        self.requests.inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// The api's metrics. Names other tools rely on are fixed by DESIGN.md.
pub struct Metrics {
    registry: Registry,
    /// `http_requests_in_flight`: traffic requests being served (the autoscaler's signal).
    pub in_flight: IntGauge,
    /// `http_requests_total{route, status}` with `status` a class: 2xx, 3xx, 4xx, 5xx.
    pub requests: IntCounterVec,
    /// `http_request_duration_seconds{route, status, cache}`.
    pub duration: HistogramVec,
    /// `http_requests_shed_total`: refused at the concurrency limit.
    pub shed: IntCounter,
    /// `http_requests_timed_out_total`: cut off by the request timeout.
    pub timed_out: IntCounter,
    /// `cache_requests_total{layer, result}`.
    pub cache_requests: IntCounterVec,
    /// `cache_bytes{layer}`: weighted size of the cache.
    pub cache_bytes: IntGaugeVec,
    /// `cache_entries{layer}`.
    pub cache_entries: IntGaugeVec,
    /// `render_duration_seconds` (time of one render on the pool) and `renders_total{result}`
    /// (ok, cancelled: deadline passed or caller gone, error), as the worker has them.
    pub render: RenderMetrics,
    /// `render_pool_queue_depth`, `render_pool_wait_seconds`, `render_pool_rejected_total`:
    /// the render pool's, as the worker has them.
    pub pool: PoolMetrics,
    /// `render_jobs_published_total{priority, result}`: ok (confirmed), rejected (nack),
    /// returned (unroutable: the queue was gone), timeout (not confirmed within
    /// `FRACTILE_PUBLISH_TIMEOUT`), blocked (broker resource alarm), unavailable (not
    /// connected), error.
    pub publishes: IntCounterVec,
    /// `queue_connected`: 1 while the render queue can take jobs (connected, not blocked),
    /// else 0. Set before each scrape; absent when no queue is configured.
    pub queue_connected: IntGauge,
    /// `render_job_confirm_seconds`: publish to broker confirm.
    pub confirm_latency: Histogram,
    /// `render_job_wait_seconds{result}`: a queued miss's wait for the worker's tile: `ok`,
    /// `timeout` (the render deadline passed), `redis_unavailable` (Redis went out of reach
    /// while waiting; the miss fell back).
    pub result_wait: HistogramVec,
    /// `coalesced_waits_total{scope}`: misses that waited for a render another request (this
    /// process: `local`) or another replica (`cluster`) had started.
    pub coalesced: IntCounterVec,
    /// `seed_minutes_total{outcome}`: minutes through which seeds ran, `advanced` (a tile of
    /// one of them finished in the minute) or `stalled` (none did); each minute counted by
    /// one replica (see `seeds::Expansions::start_progress_sampling`).
    pub seed_minutes: IntCounterVec,
    /// `render_claims_taken_over_total`: render claims another replica took and let lapse
    /// without publishing the job (it died in between), taken over by a waiting miss.
    pub claims_taken_over: IntCounter,
    /// `redis_pool_connections`: open connections.
    pub redis_pool_size: IntGauge,
    /// `redis_pool_available`: idle connections.
    pub redis_pool_available: IntGauge,
    /// `redis_pool_wait_timeouts_total`: no connection became free in time.
    pub redis_wait_timeouts: IntCounter,
    /// `misses_shed_total`: misses refused because `FRACTILE_MAX_PENDING_MISSES` were in
    /// progress.
    pub misses_shed: IntCounter,
    /// `http_requests_over_limit_total{limit}`: requests refused for their size, `limit` being
    /// `body` (413), `uri` (414) or `head` (431, the JSON refusals; hyper's own are in
    /// `http_connections_closed_total{reason="head_too_large"}`).
    pub over_limit: IntCounterVec,
    /// `http_connections_open{listener}`, `http_connections_rejected_total{listener}`,
    /// `http_connections_closed_total{listener, reason}`: the accept loops' connections.
    pub connections: ConnectionMetrics,
    /// [`HttpSeries`] of the known routes, by route, status class and cache label, each
    /// resolved on first use: a label lookup hashes every value under a lock, and the
    /// stack did three on every request.
    http_series: Box<[OnceLock<HttpSeries>]>,
    /// `cache_requests_total{layer="l1"}` by result: `hit`, `miss`.
    l1_lookups: [IntCounter; 2],
}

impl Metrics {
    /// Creates the metrics and registers them (and the process collector) on a new registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = fractile_http::metrics::registry()?;

        let in_flight = IntGauge::new("http_requests_in_flight", "Traffic requests being served.")?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "Traffic requests by route template and status class.",
            ),
            &["route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "Traffic request latency.")
                .buckets(HTTP_BUCKETS.to_vec()),
            &["route", "status", "cache"],
        )?;
        let shed = IntCounter::new(
            "http_requests_shed_total",
            "Requests refused with 503 because the concurrency limit was reached.",
        )?;
        let timed_out = IntCounter::new(
            "http_requests_timed_out_total",
            "Requests cut off by the request timeout.",
        )?;
        let cache_requests = IntCounterVec::new(
            Opts::new(
                "cache_requests_total",
                "Tile cache lookups by layer and result: hit, miss, error (Redis failed), invalid (bytes in Redis that are not the tile: refused, deleted, rendered again).",
            ),
            &["layer", "result"],
        )?;
        let cache_bytes = IntGaugeVec::new(
            Opts::new("cache_bytes", "Bytes held by a cache layer."),
            &["layer"],
        )?;
        let cache_entries = IntGaugeVec::new(
            Opts::new("cache_entries", "Entries in a cache layer."),
            &["layer"],
        )?;

        let publishes = IntCounterVec::new(
            Opts::new(
                "render_jobs_published_total",
                "Render jobs published, by priority and result.",
            ),
            &["priority", "result"],
        )?;
        let queue_connected = IntGauge::new(
            "queue_connected",
            "1 while connected to RabbitMQ and able to use it, else 0.",
        )?;
        let confirm_latency = Histogram::with_opts(
            HistogramOpts::new(
                "render_job_confirm_seconds",
                "Time from publish to broker confirm.",
            )
            .buckets(RENDER_BUCKETS.to_vec()),
        )?;
        let result_wait = HistogramVec::new(
            HistogramOpts::new(
                "render_job_wait_seconds",
                "Time a queued miss waited for its tile.",
            )
            .buckets(RENDER_BUCKETS.to_vec()),
            &["result"],
        )?;
        let coalesced = IntCounterVec::new(
            Opts::new(
                "coalesced_waits_total",
                "Misses that waited for a render already under way.",
            ),
            &["scope"],
        )?;
        let seed_minutes = IntCounterVec::new(
            Opts::new(
                "seed_minutes_total",
                "Minutes through which seeds ran: advanced (a tile of one finished in the minute) or stalled (none did). Each minute is counted by one replica.",
            ),
            &["outcome"],
        )?;
        for outcome in ["advanced", "stalled"] {
            seed_minutes.with_label_values(&[outcome]);
        }
        let claims_taken_over = IntCounter::new(
            "render_claims_taken_over_total",
            "Render claims that lapsed unpublished (their replica died) and were taken over by a waiting miss.",
        )?;
        let redis_pool_size = IntGauge::new("redis_pool_connections", "Open Redis connections.")?;
        let redis_pool_available =
            IntGauge::new("redis_pool_available", "Idle Redis connections.")?;
        let redis_wait_timeouts = IntCounter::new(
            "redis_pool_wait_timeouts_total",
            "Redis calls that found no free pooled connection in time.",
        )?;

        let misses_shed = IntCounter::new(
            "misses_shed_total",
            "Misses refused with 503 because too many were being filled already.",
        )?;

        let connections = ConnectionMetrics::register(&registry)?;
        let render = RenderMetrics::register(&registry)?;
        let pool = PoolMetrics::register(&registry, &render)?;
        let over_limit = IntCounterVec::new(
            Opts::new(
                "http_requests_over_limit_total",
                "Requests refused for their size: body (413), uri (414), head (431).",
            ),
            &["limit"],
        )?;
        for limit in ["body", "uri", "head"] {
            over_limit.with_label_values(&[limit]);
        }

        let http_series = (0..ROUTES.len() * STATUS_CLASSES.len() * CacheLabel::ALL.len())
            .map(|_| OnceLock::new())
            .collect();
        let l1_lookups =
            ["hit", "miss"].map(|result| cache_requests.with_label_values(&["l1", result]));
        let metrics = Metrics {
            http_series,
            l1_lookups,
            over_limit,
            connections,
            misses_shed,
            publishes,
            queue_connected,
            confirm_latency,
            result_wait,
            coalesced,
            seed_minutes,
            claims_taken_over,
            redis_pool_size,
            redis_pool_available,
            redis_wait_timeouts,
            registry,
            in_flight,
            requests,
            duration,
            shed,
            timed_out,
            cache_requests,
            cache_bytes,
            cache_entries,
            pool,
            render,
        };
        metrics.register_all()?;
        Ok(metrics)
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let r = &self.registry;
        r.register(Box::new(self.in_flight.clone()))?;
        r.register(Box::new(self.requests.clone()))?;
        r.register(Box::new(self.duration.clone()))?;
        r.register(Box::new(self.shed.clone()))?;
        r.register(Box::new(self.timed_out.clone()))?;
        r.register(Box::new(self.cache_requests.clone()))?;
        r.register(Box::new(self.cache_bytes.clone()))?;
        r.register(Box::new(self.cache_entries.clone()))?;
        r.register(Box::new(self.publishes.clone()))?;
        r.register(Box::new(self.queue_connected.clone()))?;
        r.register(Box::new(self.confirm_latency.clone()))?;
        r.register(Box::new(self.result_wait.clone()))?;
        r.register(Box::new(self.coalesced.clone()))?;
        r.register(Box::new(self.seed_minutes.clone()))?;
        r.register(Box::new(self.claims_taken_over.clone()))?;
        r.register(Box::new(self.redis_pool_size.clone()))?;
        r.register(Box::new(self.redis_pool_available.clone()))?;
        r.register(Box::new(self.redis_wait_timeouts.clone()))?;
        r.register(Box::new(self.misses_shed.clone()))?;
        r.register(Box::new(self.over_limit.clone()))?;
        Ok(())
    }

    /// The series of a request to `route` (a template, or [`UNMATCHED`]) answered `status`.
    pub fn http(&self, route: &str, status: StatusCode, cache: CacheLabel) -> Cow<'_, HttpSeries> {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        let resolve = || {
            let (status, cache) = (STATUS_CLASSES[class], cache.as_str());
            HttpSeries {
                requests: self.requests.with_label_values(&[route, status]),
                duration: self.duration.with_label_values(&[route, status, cache]),
            }
        };
        let Some(r) = ROUTES.iter().position(|known| *known == route) else {
            return Cow::Owned(resolve());
        };
        let c = CacheLabel::ALL
            .iter()
            .position(|l| *l == cache)
            .unwrap_or(0);
        let cell =
            &self.http_series[(r * STATUS_CLASSES.len() + class) * CacheLabel::ALL.len() + c];
        Cow::Borrowed(cell.get_or_init(resolve))
    }

    /// Counts an L1 lookup: a hit or a miss.
    pub fn l1_lookup(&self, hit: bool) {
        self.l1_lookups[usize::from(!hit)].inc();
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

    /// Renders finished with `result` so far (tests assert on it).
    pub fn renders_with(&self, result: &str) -> u64 {
        self.render.count(result)
    }
}

/// Keeps `http_requests_in_flight` true: incremented on creation, decremented on drop, so a
/// request future dropped by a timeout, load shedding or a client disconnect still counts down.
pub struct InFlightGuard(IntGauge);

impl InFlightGuard {
    /// Counts one request in.
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        InFlightGuard(gauge.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
