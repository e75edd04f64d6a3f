//! The vocabulary both fill strategies share: what a fill yields ([`Served`], [`Source`],
//! [`WorkerWait`]) and how it fails ([`FillError`]), and how an L2 outcome is counted and
//! logged (a refused or failed Redis read is a miss, never an error for the client).

use std::time::Duration;

use bytes::Bytes;
use fractile_render::RenderError;
use fractile_render_pool::QueueFull;
use fractile_telemetry::RateLimitedLog;
use fractile_tile_store::{ReadyNote, Refusal, StoreError};

use crate::metrics::Metrics;

/// At most one line per this interval for each warning a failing dependency repeats on
/// every miss.
pub(super) const LOG_EVERY: Duration = Duration::from_secs(10);

/// Where a served tile came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The in-process cache.
    L1,
    /// Redis.
    L2 {
        /// Time of the Redis lookup.
        lookup: Duration,
    },
    /// This request rendered it in this process.
    Rendered {
        /// Time waiting for a render thread.
        queued: Duration,
        /// Time rendering and encoding.
        rendered: Duration,
    },
    /// A worker rendered it; this request waited for the result (boxed: hits should not
    /// carry the size of a queued miss's account).
    Worker(Box<WorkerWait>),
    /// Another request in this process was already fetching it; this one waited.
    Coalesced,
}

/// Where a queued miss's time went, as this request saw it (the response's Server-Timing).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerWait {
    /// The Redis lookup that missed.
    pub lookup: Duration,
    /// Taking the render claim (or finding another replica's).
    pub claim: Duration,
    /// Handing the job to the broker, when this request queued it (not when it joined
    /// another replica's claim). The broker's confirm is not waited for.
    pub publish: Option<Duration>,
    /// From taking the claim to hearing the worker's announcement, when it was heard.
    pub announced: Option<Duration>,
    /// The Redis read that found the tile.
    pub fetch: Duration,
    /// From taking the claim to having the tile.
    pub waited: Duration,
    /// The worker's announcement, when heard.
    pub note: Option<ReadyNote>,
}

impl WorkerWait {
    /// What the broker and the announcement took: the wait up to the announcement less the
    /// claim, the publish and the worker's own time (delivery to tile ready), when this
    /// request published the job (one that joined another replica's claim cannot tell how
    /// long the job had waited before it) and all are known. Clock-free: each part is timed
    /// on one machine.
    pub fn transit(&self) -> Option<Duration> {
        let handled = self.note.as_ref()?.handled_ms?;
        let announced = self.announced?;
        let own = self.claim + self.publish?;
        let handled = Duration::try_from_secs_f64(handled / 1000.0).ok()?;
        Some(announced.saturating_sub(own).saturating_sub(handled))
    }
}

/// A tile's bytes and where they came from.
#[derive(Debug, Clone)]
pub struct Served {
    /// The PNG.
    pub png: Bytes,
    /// Its origin.
    pub source: Source,
    /// Total time spent finding or making it.
    pub elapsed: Duration,
}

/// Why no tile could be served.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    /// Too many distinct misses are being filled already.
    #[error("too many misses in progress")]
    MissesFull,
    /// The local render queue was full.
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
    /// The render did not finish before its deadline.
    #[error("render did not finish within its deadline")]
    Deadline,
    /// The render queue could not take the job and the fallback is to refuse.
    #[error("the render queue is unavailable")]
    QueueUnavailable,
    /// The renderer failed (a PNG could not be encoded).
    #[error("render failed")]
    Render(#[source] RenderError),
    /// The render job ended without a result: it panicked on its thread.
    #[error("the render job ended without a result (it panicked)")]
    Panicked,
}

/// Counts an L2 lookup's `result` in `cache_requests_total{layer="l2"}`.
pub(super) fn l2_result(metrics: &Metrics, result: &str) {
    metrics
        .cache_requests
        .with_label_values(&["l2", result])
        .inc();
}

/// A Redis call that failed: a miss, never an error for the client. Redis down fails every
/// miss: one WARN per interval with the count of the rest.
pub(super) fn store_failed(metrics: &Metrics, operation: &str, error: &StoreError) {
    if matches!(error, StoreError::PoolWaitTimeout) {
        metrics.redis_wait_timeouts.inc();
    }
    static REDIS_FAILED: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
    match REDIS_FAILED.check() {
        Some(suppressed) => {
            tracing::warn!(%error, operation, suppressed, "redis unavailable; treating as a miss");
        }
        None => tracing::debug!(%error, operation, "redis unavailable; treating as a miss"),
    }
}

/// Bytes in the cache that are not the tile: counted (`cache_requests_total{layer="l2",
/// result="invalid"}`) and logged once per interval with the count of the rest, since
/// anyone who can write to Redis can make every lookup meet them.
pub(super) fn l2_refused(metrics: &Metrics, operation: &str, why: Refusal) {
    l2_result(metrics, "invalid");
    static REFUSED: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
    if let Some(suppressed) = REFUSED.check() {
        tracing::warn!(%why, operation, suppressed, "refused bytes read from the Redis cache as a tile; deleted them, rendering it");
    }
}
