//! The local fill strategy: a miss rendered on this process's pool (or, for the
//! experiment, on the executor), and the tile written to L2 and announced afterwards.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fractile_render::{RenderError, render_tile};
use fractile_render_pool::{Lane, RunError};
use fractile_tile_store::ReadyNote;

use super::{Backends, FillError, Source, TileCache, TileKey};

impl TileCache {
    /// Renders on this process's pool and waits until the deadline.
    pub(super) async fn render_here(&self, key: TileKey) -> Result<(Bytes, Source), FillError> {
        if self.render_on_executor {
            // The classic mistake, kept for the experiment: this blocks the executor thread.
            let (png, rendered) = self
                .metrics
                .render_metrics()
                .record(|| render_tile(key.tile, key.style, &|| false));
            let png = png.map_err(FillError::Render)?;
            return Ok((
                Bytes::from(png),
                Source::Rendered {
                    queued: Duration::ZERO,
                    rendered,
                },
            ));
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

    /// Writes a locally rendered tile to L2 and announces it with its render time, without
    /// holding up the response.
    pub(super) fn store_in_background(
        &self,
        backends: &Backends,
        key: TileKey,
        (png, source): &(Bytes, Source),
    ) {
        let (store, cache, png) = (backends.store.clone(), self.clone(), png.clone());
        let render_ms = match source {
            Source::Rendered { rendered, .. } => rendered.as_secs_f64() * 1000.0,
            _ => 0.0,
        };
        let note = ReadyNote {
            key: key.to_string(),
            worker: "api".into(),
            render_ms,
            handled_ms: None,
        };
        tokio::spawn(async move {
            if let Err(error) = store.put_and_announce(&key, &png, &note).await {
                cache.store_error("put", &error);
            }
        });
    }
}
