//! The tiered tile cache: L1 (moka, in-process, bounded in bytes) in front of rendering.
//!
//! A miss renders on the [`RenderPool`]; concurrent misses for the same tile share one render
//! (moka runs a single init future per key and hands its result to every waiter). Failed
//! renders are not cached. The result says where the bytes came from and what it cost, for
//! `X-Cache`, `Server-Timing` and metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
pub use fractile_render::TileKey;
use fractile_render::{RenderError, render_tile};
use moka::future::Cache;

use crate::metrics::Metrics;
use fractile_runtime::pool::{Lane, QueueFull, RenderPool};

/// moka's own bookkeeping per entry (about 150-180 B on 64-bit, moka-rs/moka#201) plus the
/// key, rounded up: counted in the weight so `FRACTILE_L1_BYTES` bounds real memory.
const ENTRY_OVERHEAD_BYTES: usize = 200;

/// Where a served tile came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    /// The in-process cache.
    L1,
    /// This request rendered it.
    Rendered {
        /// Time waiting for a render thread.
        queued: Duration,
        /// Time rendering and encoding.
        rendered: Duration,
    },
    /// Another request was already rendering it; this one waited for that render.
    Coalesced,
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
#[derive(Debug, Clone, thiserror::Error)]
pub enum FillError {
    /// The render queue was full.
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
    /// The render did not finish before its deadline.
    #[error("render did not finish within its deadline")]
    Deadline,
    /// The renderer failed or panicked.
    #[error("render failed: {0}")]
    Render(String),
}

/// L1 plus the way to fill it. Cheap to clone: clones share the cache and the pool.
#[derive(Clone)]
pub struct TileCache {
    l1: Cache<TileKey, Bytes>,
    pool: RenderPool,
    metrics: Arc<Metrics>,
    render_timeout: Duration,
}

impl TileCache {
    /// A cache holding up to `l1_bytes` (tile bytes plus per-entry overhead).
    pub fn new(
        l1_bytes: u64,
        pool: RenderPool,
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
            metrics,
            render_timeout,
        }
    }

    /// The render pool behind the cache.
    pub fn pool(&self) -> &RenderPool {
        &self.pool
    }

    /// Publishes the cache's size to the gauges (called before each scrape).
    pub async fn refresh_gauges(&self) {
        self.l1.run_pending_tasks().await;
        let l1 = ["l1"];
        self.metrics
            .cache_bytes
            .with_label_values(&l1)
            .set(saturating_i64(self.l1.weighted_size()));
        self.metrics
            .cache_entries
            .with_label_values(&l1)
            .set(saturating_i64(self.l1.entry_count()));
        self.metrics
            .render_queue_depth
            .set(saturating_i64(self.pool.queued() as u64));
    }

    /// The tile from L1, or rendered (once, however many requests ask at the same time).
    pub async fn get(&self, key: TileKey) -> Result<Served, Arc<FillError>> {
        let start = Instant::now();
        if let Some(png) = self.l1.get(&key).await {
            self.count("l1", "hit");
            return Ok(Served {
                png,
                source: Source::L1,
                elapsed: start.elapsed(),
            });
        }
        self.count("l1", "miss");
        // Only the request whose init future runs fills `timing`; the others waited on it.
        let mut timing = None;
        let png = self
            .l1
            .try_get_with(key, async {
                let (png, queued, rendered) = self.render(key).await?;
                timing = Some(Source::Rendered { queued, rendered });
                Ok::<_, FillError>(png)
            })
            .await?;
        Ok(Served {
            png,
            source: timing.unwrap_or(Source::Coalesced),
            elapsed: start.elapsed(),
        })
    }

    /// Renders on the pool and waits until the deadline.
    async fn render(&self, key: TileKey) -> Result<(Bytes, Duration, Duration), FillError> {
        let enqueued = Instant::now();
        let deadline = enqueued + self.render_timeout;
        let metrics = Arc::clone(&self.metrics);
        let rx = self
            .pool
            .try_spawn(Lane::Interactive, deadline, move |cancel| {
                let started = Instant::now();
                let result = render_tile(key.tile, key.style, &|| cancel.is_cancelled());
                let rendered = started.elapsed();
                let outcome = match &result {
                    Ok(_) => {
                        metrics.render_duration.observe(rendered.as_secs_f64());
                        "ok"
                    }
                    Err(RenderError::Cancelled) => "cancelled",
                    Err(RenderError::Encode(_)) => "error",
                };
                metrics.renders.with_label_values(&[outcome]).inc();
                (result, started - enqueued, rendered)
            })?;
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok((Ok(png), queued, rendered))) => Ok((Bytes::from(png), queued, rendered)),
            Ok(Ok((Err(RenderError::Cancelled), ..))) | Err(_) => Err(FillError::Deadline),
            Ok(Ok((Err(e @ RenderError::Encode(_)), ..))) => Err(FillError::Render(e.to_string())),
            // The pool dropped the job: skipped past its deadline, or it panicked.
            Ok(Err(_closed)) if Instant::now() >= deadline => Err(FillError::Deadline),
            Ok(Err(_closed)) => {
                self.metrics.renders.with_label_values(&["error"]).inc();
                Err(FillError::Render(
                    "render job ended without a result".into(),
                ))
            }
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
