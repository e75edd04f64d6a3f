//! The tiered tile cache: L1 (moka, in-process, bounded in bytes) → L2 (Redis, shared by
//! every replica) → a render, in this process or by a worker through the queue.
//!
//! Concurrent misses for the same tile in one process share one fill (moka runs a single
//! init future per key and hands its result to every waiter). Across replicas, a render
//! claim in Redis (`SET NX` with the render deadline as its lifetime) lets one replica queue
//! the job while the others only wait for its announcement. Failed fills are not cached.
//!
//! Degradation: a Redis error is a miss (counted). Every Redis call is bounded by the
//! store's budget, and fails at once while its breaker is open. Without a queue the fill
//! then renders in this process. With one, a miss whose path through the workers is broken
//! falls back, per `FRACTILE_QUEUE_FALLBACK`, to rendering here or to a prompt 503: when the
//! broker cannot take the job, and when Redis is out of reach, since the worker's tile comes
//! back through Redis. That holds for a request already waiting, too: losing the
//! announcements makes it look in Redis at once, and a look that finds Redis out of reach
//! ends the wait within the budget, not at the render deadline. Nothing in this path turns a
//! dependency failure into a 500.
//!
//! This file holds L1, the L2 lookup and the choice of fill; the fills themselves are in
//! `local` (render on this process's pool) and `queue` (a worker through RabbitMQ, with the
//! fallback when that path is broken).

mod local;
mod queue;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fractile_queue::PublisherLink;
use fractile_render::RenderError;
pub use fractile_render::TileKey;
use fractile_render_pool::{QueueFull, RenderPool};
use fractile_telemetry::RateLimitedLog;
use fractile_tile_store::{
    ReadyListener, ReadyNote, Refusal, SeedStore, StoreError, Stored, TileStore,
};
use moka::future::Cache;
use tokio::sync::Semaphore;

use crate::config::QueueFallback;
use crate::metrics::Metrics;

/// moka's own bookkeeping per entry (about 150-180 B on 64-bit, moka-rs/moka#201) plus the
/// key, rounded up: counted in the weight so `FRACTILE_L1_BYTES` bounds real memory.
const ENTRY_OVERHEAD_BYTES: usize = 200;

/// How often a queued miss re-reads Redis while waiting, in case the announcement was lost
/// (pub/sub delivers at most once, and not while its connection is down).
const RESULT_POLL_EVERY: Duration = Duration::from_millis(200);

/// At most one line per this interval for each warning a failing dependency repeats on
/// every miss.
const LOG_EVERY: Duration = Duration::from_secs(10);

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

/// The distributed-mode dependencies.
#[derive(Clone)]
pub struct Backends {
    /// The cache Redis: L2, claims, announcements.
    pub store: TileStore,
    /// The state store: seed records (the same server as `store` unless
    /// `FRACTILE_STATE_REDIS_URL` names another).
    pub seeds: SeedStore,
    /// Announcements of tiles rendered by workers.
    pub ready: ReadyListener,
    /// The render queue, when `FRACTILE_AMQP_URL` is set (connected in the background: it
    /// may have no publisher yet, or none for a while).
    pub publisher: Option<PublisherLink>,
    /// What a miss does when the queue cannot take it.
    pub fallback: QueueFallback,
    /// Interactive jobs to their own queue (the default); false only for the experiment.
    pub queue_priority: bool,
}

/// The cache and the way to fill it. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct TileCache {
    l1: Cache<TileKey, Bytes>,
    pool: RenderPool,
    backends: Option<Backends>,
    metrics: Arc<Metrics>,
    render_timeout: Duration,
    /// The deliberately wrong placement of the CPU-placement experiment (see `Config`).
    render_on_executor: bool,
    /// Permits for misses being filled: the admission bound of the expensive path.
    fills: Arc<Semaphore>,
    /// How long a queued miss waits for the broker to take its job before falling back.
    publish_timeout: Duration,
}

impl TileCache {
    /// A cache holding up to `l1_bytes` (tile bytes plus per-entry overhead) in front of
    /// `backends` (none: embedded mode).
    pub fn new(
        l1_bytes: u64,
        pool: RenderPool,
        backends: Option<Backends>,
        metrics: Arc<Metrics>,
        render_timeout: Duration,
    ) -> Self {
        let l1 = Cache::builder()
            .max_capacity(l1_bytes)
            .weigher(|_key: &TileKey, png: &Bytes| {
                u32::try_from(png.len() + ENTRY_OVERHEAD_BYTES).unwrap_or(u32::MAX)
            })
            .build();
        TileCache {
            l1,
            pool,
            backends,
            metrics,
            render_timeout,
            render_on_executor: false,
            fills: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
            publish_timeout: Duration::from_secs(2),
        }
    }

    /// Bounds the wait for the broker to take a job (publish and confirm); past it the miss
    /// is served per the queue fallback.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Bounds the misses filled at once (the default is unbounded).
    pub fn max_pending_misses(mut self, n: usize) -> Self {
        self.fills = Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)));
        self
    }

    /// Renders misses on the async executor from now on (experiments only).
    pub fn render_on_executor(mut self, yes: bool) -> Self {
        self.render_on_executor = yes;
        self
    }

    /// The render pool behind the cache.
    pub fn pool(&self) -> &RenderPool {
        &self.pool
    }

    /// The distributed-mode dependencies, if configured.
    pub fn backends(&self) -> Option<&Backends> {
        self.backends.as_ref()
    }

    /// Publishes the cache's and pools' sizes to the gauges (called before each scrape).
    pub async fn refresh_gauges(&self) {
        self.l1.run_pending_tasks().await;
        let l1 = ["l1"];
        let m = &self.metrics;
        m.cache_bytes
            .with_label_values(&l1)
            .set(saturating_i64(self.l1.weighted_size()));
        m.cache_entries
            .with_label_values(&l1)
            .set(saturating_i64(self.l1.entry_count()));
        if let Some(backends) = &self.backends {
            let status = backends.store.pool_status();
            m.redis_pool_size.set(saturating_i64(status.size as u64));
            m.redis_pool_available
                .set(saturating_i64(status.available as u64));
            if let Some(link) = &backends.publisher {
                m.queue_connected.set(i64::from(link.is_connected()));
            }
        }
    }

    /// The tile from L1, L2, or rendered (once per process, however many requests ask at
    /// the same time).
    pub async fn get(&self, key: TileKey) -> Result<Served, Arc<FillError>> {
        let start = Instant::now();
        if let Some(png) = self.l1.get(&key).await {
            self.metrics.l1_lookup(true);
            return Ok(Served {
                png,
                source: Source::L1,
                elapsed: start.elapsed(),
            });
        }
        // Boxed: the miss path's future (L2, claim, publish, render) is kilobytes, and inline
        // it would make every request's future that size, hits included, moved into a box by
        // the router on each request (the largest cost of an L1 hit before it was split off).
        Box::pin(self.miss(key, start)).await
    }

    /// An L1 miss: one fill per key in this process, shared by every request waiting on it.
    async fn miss(&self, key: TileKey, start: Instant) -> Result<Served, Arc<FillError>> {
        self.metrics.l1_lookup(false);
        // Only the request whose init future runs fills `source`; the others waited on it.
        let mut source = None;
        let png = self
            .l1
            .try_get_with(key, async {
                // Requests waiting on misses hold their admission slot for as long as the
                // render takes; bounding the misses keeps slots free for hits. Refused at
                // once, like the global limit.
                let Ok(_permit) = self.fills.try_acquire() else {
                    self.metrics.misses_shed.inc();
                    return Err(FillError::MissesFull);
                };
                let (png, from) = self.fill(key).await?;
                source = Some(from);
                Ok::<_, FillError>(png)
            })
            .await?;
        let source = source.unwrap_or_else(|| {
            self.metrics.coalesced.with_label_values(&["local"]).inc();
            Source::Coalesced
        });
        Ok(Served {
            png,
            source,
            elapsed: start.elapsed(),
        })
    }

    /// L2, then a render.
    async fn fill(&self, key: TileKey) -> Result<(Bytes, Source), FillError> {
        let Some(backends) = &self.backends else {
            return self.render_here(key).await;
        };
        let lookup = Instant::now();
        match backends.store.lookup(&key).await {
            Ok(Stored::Tile(png)) => {
                self.count("l2", "hit");
                return Ok((
                    png,
                    Source::L2 {
                        lookup: lookup.elapsed(),
                    },
                ));
            }
            Ok(Stored::Missing) => self.count("l2", "miss"),
            // A miss: rendered again (and stored over the refused bytes, which are gone).
            Ok(Stored::Refused(why)) => self.refused("get", why),
            Err(error) => {
                self.store_error("get", &error);
                // Redis out of reach: no worker could hand the tile back; do not queue it.
                if error.is_outage() && backends.publisher.is_some() {
                    return self.queue_fallback(key).await;
                }
            }
        }
        match &backends.publisher {
            Some(link) => match link.publisher() {
                // Boxed: the queued miss's future (the claim, the publish, the wait) is over a
                // kilobyte, and inline it would be part of every L1 miss's future, L2 hits
                // included, which is copied whenever the miss path moves it (into its box,
                // into moka's init).
                Some(publisher) => {
                    let lookup = lookup.elapsed();
                    Box::pin(self.render_by_worker(key, backends, &publisher, lookup)).await
                }
                // Not connected (yet): no claim, so other replicas are not kept waiting.
                None => {
                    self.metrics
                        .publishes
                        .with_label_values(&["interactive", "unavailable"])
                        .inc();
                    self.queue_fallback(key).await
                }
            },
            None => {
                let rendered = self.render_here(key).await?;
                self.store_in_background(backends, key, &rendered);
                Ok(rendered)
            }
        }
    }

    fn store_error(&self, operation: &str, error: &StoreError) {
        if matches!(error, StoreError::PoolWaitTimeout) {
            self.metrics.redis_wait_timeouts.inc();
        }
        if operation == "get" {
            self.count("l2", "error");
        }
        // Redis down fails every miss: one WARN per interval with the count of the rest.
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
    fn refused(&self, operation: &str, why: Refusal) {
        self.count("l2", "invalid");
        static REFUSED: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
        if let Some(suppressed) = REFUSED.check() {
            tracing::warn!(%why, operation, suppressed, "refused bytes read from the Redis cache as a tile; deleted them, rendering it");
        }
    }

    fn count(&self, layer: &str, result: &str) {
        self.metrics
            .cache_requests
            .with_label_values(&[layer, result])
            .inc();
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
