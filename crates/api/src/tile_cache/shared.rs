//! The shared fill (distributed mode): Redis (L2) first, shared by every replica; a miss is
//! rendered by a worker through the queue when there is one ([`QueueFill`]), else here
//! ([`LocalFill`]) and written to Redis for the others. When the path through the workers is
//! broken the miss follows `FRACTILE_QUEUE_FALLBACK`: rendered here (and stored, since other
//! replicas may be waiting on this replica's render claim) or refused with a prompt 503.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fractile_tile_store::{ReadyNote, Stored, TileStore};

use super::TileKey;
use super::fill::{FillError, Source, l2_refused, l2_result, store_failed};
use super::local::LocalFill;
use super::queue::{QueueFill, QueueMiss};
use crate::config::QueueFallback;
use crate::metrics::Metrics;

/// Misses looked up in Redis, then rendered by a worker or here.
#[derive(Clone)]
pub struct SharedFill {
    /// The cache Redis (L2).
    store: TileStore,
    /// Renders here: without a queue, and as the fallback.
    local: LocalFill,
    /// The workers, when `FRACTILE_AMQP_URL` is set.
    queue: Option<QueueFill>,
    /// What a miss does when the path through the workers is broken.
    fallback: QueueFallback,
    metrics: Arc<Metrics>,
}

impl SharedFill {
    /// Redis `store` in front of `queue` (none: Redis-only mode, every miss rendered here),
    /// `local` rendering what the workers do not.
    pub fn new(
        store: TileStore,
        local: LocalFill,
        queue: Option<QueueFill>,
        fallback: QueueFallback,
        metrics: Arc<Metrics>,
    ) -> Self {
        SharedFill {
            store,
            local,
            queue,
            fallback,
            metrics,
        }
    }

    /// The cache Redis.
    pub fn store(&self) -> &TileStore {
        &self.store
    }

    /// The workers' queue, if there is one.
    pub fn queue(&self) -> Option<&QueueFill> {
        self.queue.as_ref()
    }

    /// L2, then a render by a worker or here.
    pub async fn fill(&self, key: TileKey) -> Result<(Bytes, Source), FillError> {
        let lookup = Instant::now();
        match self.store.lookup(&key).await {
            Ok(Stored::Tile(png)) => {
                l2_result(&self.metrics, "hit");
                let lookup = lookup.elapsed();
                return Ok((png, Source::L2 { lookup }));
            }
            Ok(Stored::Missing) => l2_result(&self.metrics, "miss"),
            // A miss: rendered again (and stored over the refused bytes, which are gone).
            Ok(Stored::Refused(why)) => l2_refused(&self.metrics, "get", why),
            Err(error) => {
                l2_result(&self.metrics, "error");
                store_failed(&self.metrics, "get", &error);
                // Redis out of reach: no worker could hand the tile back; do not queue it.
                if error.is_outage() && self.queue.is_some() {
                    return self.fall_back(key).await;
                }
            }
        }
        let Some(queue) = &self.queue else {
            return self.render_and_store(key).await;
        };
        // Boxed: the queued miss's future (the claim, the publish, the wait) is over a
        // kilobyte, and inline it would be part of every L1 miss's future, L2 hits included,
        // which is copied whenever the miss path moves it (into its box, into moka's init).
        match Box::pin(queue.fill(key, lookup.elapsed())).await {
            Ok(filled) => Ok(filled),
            Err(QueueMiss::Deadline) => Err(FillError::Deadline),
            Err(QueueMiss::Broken) => self.fall_back(key).await,
        }
    }

    /// The path through the workers is broken (the queue could not take the job, or Redis,
    /// which brings the tile back, is out of reach): render here, or refuse, per
    /// configuration.
    async fn fall_back(&self, key: TileKey) -> Result<(Bytes, Source), FillError> {
        if self.fallback == QueueFallback::Reject {
            return Err(FillError::QueueUnavailable);
        }
        // Other replicas may be waiting on this replica's render claim: store and announce
        // the tile as a worker would, so they get it instead of their deadline.
        self.render_and_store(key).await
    }

    /// Renders here, then writes the tile to L2 and announces it, without holding up the
    /// response.
    async fn render_and_store(&self, key: TileKey) -> Result<(Bytes, Source), FillError> {
        let rendered = self.local.fill(key).await?;
        let render_ms = match &rendered.1 {
            Source::Rendered { rendered, .. } => rendered.as_secs_f64() * 1000.0,
            _ => 0.0,
        };
        let note = ReadyNote {
            key: key.to_string(),
            worker: "api".into(),
            render_ms,
            handled_ms: None,
            traceparent: fractile_telemetry::context::traceparent(&tracing::Span::current()),
        };
        let (store, metrics, png) = (
            self.store.clone(),
            Arc::clone(&self.metrics),
            rendered.0.clone(),
        );
        tokio::spawn(async move {
            if let Err(error) = store.put_and_announce(&key, &png, &note).await {
                store_failed(&metrics, "put", &error);
            }
        });
        Ok(rendered)
    }
}
