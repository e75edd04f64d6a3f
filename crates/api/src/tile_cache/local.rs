//! The local fill: a miss rendered in this process, on the render pool. Embedded mode fills
//! every miss this way; the shared fill uses it when there is no queue, and as the fallback
//! when the path through the workers is broken.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fractile_render::{RenderError, render_tile};
use fractile_render_pool::{Lane, RenderPool, RunError};

use super::TileKey;
use super::fill::{FillError, Source};
use crate::metrics::Metrics;

/// Where a local render runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On the render pool: the production path.
    Pool,
    /// On the async executor, blocking the thread that serves other requests: deliberately
    /// wrong, only for the placement experiment (`FRACTILE_RENDER_ON_EXECUTOR`). The one place
    /// the invariant "renders run only on the pool" is broken, and only when asked.
    Executor,
}

/// Renders misses on this process's pool, each within the render deadline.
#[derive(Clone)]
pub struct LocalFill {
    pool: RenderPool,
    render_timeout: Duration,
    placement: Placement,
    metrics: Arc<Metrics>,
}

impl LocalFill {
    /// Renders on `pool`, giving up after `render_timeout`.
    pub fn new(pool: RenderPool, render_timeout: Duration, metrics: Arc<Metrics>) -> Self {
        LocalFill {
            pool,
            render_timeout,
            placement: Placement::Pool,
            metrics,
        }
    }

    /// Renders where `placement` says (experiments only: the default is the pool).
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Renders `key` here and waits until the deadline.
    pub async fn fill(&self, key: TileKey) -> Result<(Bytes, Source), FillError> {
        if self.placement == Placement::Executor {
            return self.fill_on_executor(key);
        }
        let enqueued = Instant::now();
        let deadline = enqueued + self.render_timeout;
        let metrics = self.metrics.render_metrics();
        let ran = self
            .pool
            .run(Lane::Interactive, deadline, move |cancel| {
                let started = Instant::now();
                let (result, rendered) =
                    metrics.record(|| render_tile(key.tile, key.style, &|| cancel.is_cancelled()));
                (result, started - enqueued, rendered)
            })
            .await;
        match ran {
            Ok((Ok(png), queued, rendered)) => {
                Ok((Bytes::from(png), Source::Rendered { queued, rendered }))
            }
            Ok((Err(RenderError::Cancelled), ..)) | Err(RunError::Deadline) => {
                Err(FillError::Deadline)
            }
            Ok((Err(e @ RenderError::Encode(_)), ..)) => Err(FillError::Render(e)),
            Err(RunError::Full(full)) => Err(FillError::QueueFull(full)),
            Err(RunError::Panicked) => Err(FillError::Panicked),
        }
    }

    /// The classic mistake, kept for the experiment: this blocks the executor thread.
    fn fill_on_executor(&self, key: TileKey) -> Result<(Bytes, Source), FillError> {
        let (png, rendered) = self
            .metrics
            .render_metrics()
            .record(|| render_tile(key.tile, key.style, &|| false));
        let png = png.map_err(FillError::Render)?;
        let queued = Duration::ZERO;
        Ok((Bytes::from(png), Source::Rendered { queued, rendered }))
    }
}
