//! The tiered tile cache: L1 (moka, in-process, bounded in bytes) → L2 (Redis, shared by
//! every replica) → a render, in this process or by a worker through the queue.
//!
//! Concurrent misses for the same tile in one process share one fill (moka runs a single
//! init future per key and hands its result to every waiter). Across replicas, a render
//! claim in Redis (`SET NX`, a second until its job is published, then the render deadline) lets one replica queue
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
//! This file holds L1 and the bound on misses ([`fill`] the vocabulary the strategies
//! share); a miss is filled by one of two strategies,
//! each a type that owns its settings and has one `fill(key)`: [`LocalFill`] (embedded mode:
//! rendered on this process's pool) or [`SharedFill`] (Redis first, then a worker through
//! the queue, [`QueueFill`], or this process, with the fallback when the workers' path is
//! broken).

mod fill;
mod fill_spans;
mod local;
mod queue;
mod shared;

pub use fill::{FillError, Served, Source, WorkerWait};
pub use local::{LocalFill, Placement};
pub use queue::QueueFill;
pub use shared::SharedFill;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
pub use fractile_render::TileKey;
use moka::future::Cache;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use fill_spans::FillSpans;
use fractile_telemetry::context;

/// moka's own bookkeeping per entry (about 150-180 B on 64-bit, moka-rs/moka#201) plus the
/// key, rounded up: counted in the weight so `FRACTILE_L1_BYTES` bounds real memory.
const ENTRY_OVERHEAD_BYTES: usize = 200;

/// How misses are filled.
#[derive(Clone)]
pub enum Fill {
    /// Embedded mode: rendered here.
    Local(LocalFill),
    /// Distributed mode: Redis, then a worker or here.
    Shared(Box<SharedFill>),
}

/// The cache and the way to fill it. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct TileCache {
    l1: Cache<TileKey, Bytes>,
    fill: Fill,
    /// Permits for misses being filled: the admission bound of the expensive path.
    fills: Arc<Semaphore>,
    /// The span of each recent fill, for the requests that waited on it.
    fill_spans: FillSpans,
    metrics: Arc<Metrics>,
}

impl TileCache {
    /// A cache holding up to `l1_bytes` (tile bytes plus per-entry overhead) in front of
    /// `fill`, with at most `max_pending_misses` misses filled at once.
    pub fn new(
        l1_bytes: u64,
        fill: Fill,
        max_pending_misses: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let l1 = Cache::builder()
            .max_capacity(l1_bytes)
            .weigher(|_key: &TileKey, png: &Bytes| {
                u32::try_from(png.len() + ENTRY_OVERHEAD_BYTES).unwrap_or(u32::MAX)
            })
            .build();
        let fills = Arc::new(Semaphore::new(
            max_pending_misses.min(Semaphore::MAX_PERMITS),
        ));
        TileCache {
            l1,
            fill,
            fills,
            fill_spans: FillSpans::default(),
            metrics,
        }
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
        if let Fill::Shared(shared) = &self.fill {
            let status = shared.store().pool_status();
            m.redis_pool_size.set(saturating_i64(status.size as u64));
            m.redis_pool_available
                .set(saturating_i64(status.available as u64));
            if let Some(queue) = shared.queue() {
                m.queue_connected
                    .set(i64::from(queue.link().is_connected()));
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
        // Only the request whose init future runs fills `source`; the others waited on it,
        // and link their spans to the one that did the work.
        let mut source = None;
        let png = self
            .l1
            .try_get_with(key, async {
                self.fill_spans
                    .started(key, context::span_context(&tracing::Span::current()));
                // Requests waiting on misses hold their admission slot for as long as the
                // render takes; bounding the misses keeps slots free for hits. Refused at
                // once, like the global limit.
                let Ok(_permit) = self.fills.try_acquire() else {
                    self.metrics.misses_shed.inc();
                    return Err(FillError::MissesFull);
                };
                let (png, from) = match &self.fill {
                    Fill::Local(local) => local.fill(key).await?,
                    Fill::Shared(shared) => shared.fill(key).await?,
                };
                source = Some(from);
                Ok::<_, FillError>(png)
            })
            .await?;
        let source = source.unwrap_or_else(|| {
            self.metrics.coalesced.with_label_values(&["local"]).inc();
            if let Some(filler) = self.fill_spans.filler(&key) {
                context::add_link(&tracing::Span::current(), filler);
            }
            Source::Coalesced
        });
        Ok(Served {
            png,
            source,
            elapsed: start.elapsed(),
        })
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
