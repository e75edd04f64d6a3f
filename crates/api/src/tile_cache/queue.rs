//! The queue fill strategy: a miss is published as a render job for a worker (unless
//! another replica already claimed it) and waited for until the tile appears in Redis;
//! when that path is broken the miss follows `FRACTILE_QUEUE_FALLBACK`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use fractile_queue::{PendingConfirm, Priority, Publisher, QueueError, RenderJob};
use fractile_telemetry::RateLimitedLog;
use fractile_tile_store::{ReadyNote, Stored};
use tokio::sync::oneshot;

use super::{
    Backends, FillError, LOG_EVERY, RESULT_POLL_EVERY, Source, TileCache, TileKey, WorkerWait,
};
use crate::config::QueueFallback;

impl TileCache {
    /// Queues the render for a worker (unless another replica already did) and waits for
    /// the tile to appear in Redis, until the render deadline.
    pub(super) async fn render_by_worker(
        &self,
        key: TileKey,
        backends: &Backends,
        publisher: &Publisher,
        lookup: Duration,
    ) -> Result<(Bytes, Source), FillError> {
        let started = Instant::now();
        let deadline = started + self.render_timeout;
        // Register before publishing, or the announcement could arrive first.
        let mut announcement = backends.ready.register(&key);
        let claimed = backends.store.claim_render(&key, self.render_timeout).await;
        let claim = started.elapsed();
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(error) => {
                // Without Redis no worker can hand the tile back.
                self.store_error("claim", &error);
                return self.queue_fallback(key).await;
            }
        };
        // The broker's confirm is awaited beside the result, not before it: confirms can
        // take a while under load, and a worker may deliver the tile first. A task of its
        // own records every confirm's latency and outcome, and reports a refusal here.
        let mut refused = None;
        let mut publish = None;
        if claimed {
            let job = RenderJob::interactive(&key, SystemTime::now() + self.render_timeout);
            let queue = if backends.queue_priority {
                Priority::Interactive
            } else {
                Priority::Bulk
            };
            // A publish the broker holds (a resource alarm) must not hold the miss.
            let publishing = Instant::now();
            let published =
                tokio::time::timeout(self.publish_timeout, publisher.publish_to(&job, queue))
                    .await
                    .unwrap_or(Err(QueueError::Timeout("publish")));
            publish = Some(publishing.elapsed());
            match published {
                Ok(pending) => refused = Some(self.watch_confirm(pending, publishing)),
                Err(error) => {
                    // Every miss fails the same way while the broker is down: one line per
                    // interval, the rest counted (and in render_jobs_published_total).
                    static PUBLISH_FAILED: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
                    if let Some(suppressed) = PUBLISH_FAILED.check() {
                        tracing::warn!(%error, %key, suppressed, "publishing a render job failed");
                    }
                    self.metrics
                        .publishes
                        .with_label_values(&["interactive", publish_outcome(&error)])
                        .inc();
                    return self.queue_fallback(key).await;
                }
            }
        } else {
            self.metrics.coalesced.with_label_values(&["cluster"]).inc();
        }

        let mut poll = tokio::time::interval(RESULT_POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard: Option<(ReadyNote, Duration)> = None;
        // Whether the subscription went down while waiting (then only polling finds the tile).
        let mut deaf = false;
        let outcome = loop {
            tokio::select! {
                note = announcement.announced(), if heard.is_none() => heard = Some((note, started.elapsed())),
                () = backends.ready.disconnected(), if !deaf => deaf = true,
                _ = poll.tick() => {}
                verdict = async { refused.as_mut().expect("guarded by is_some").await }, if refused.is_some() => {
                    refused = None;
                    // A sent value means refused; a dropped sender means confirmed.
                    if verdict.is_ok() {
                        break None;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    self.metrics.result_wait.with_label_values(&["timeout"]).observe(started.elapsed().as_secs_f64());
                    return Err(FillError::Deadline);
                }
            }
            // Announced, deaf, or time to poll: look in Redis.
            let fetch = Instant::now();
            match backends.store.lookup(&key).await {
                Ok(Stored::Tile(png)) => break Some((png, fetch.elapsed())),
                Ok(Stored::Missing) => {}
                // Deleted; the worker's tile, when it comes, replaces nothing.
                Ok(Stored::Refused(why)) => self.refused("result", why),
                Err(error) => {
                    self.store_error("result", &error);
                    // The worker's tile could not reach this request: stop waiting for it.
                    if error.is_outage() {
                        self.metrics
                            .result_wait
                            .with_label_values(&["redis_unavailable"])
                            .observe(started.elapsed().as_secs_f64());
                        break None;
                    }
                }
            }
        };
        let Some((png, fetch)) = outcome else {
            return self.queue_fallback(key).await;
        };
        let waited = started.elapsed();
        self.metrics
            .result_wait
            .with_label_values(&["ok"])
            .observe(waited.as_secs_f64());
        let (note, announced) = heard.unzip();
        let source = Source::Worker(Box::new(WorkerWait {
            lookup,
            claim,
            publish,
            announced,
            fetch,
            waited,
            note,
        }));
        Ok((png, source))
    }

    /// Waits for a publish's confirm in a task of its own, recording its latency and
    /// outcome; the receiver gets a value only if the broker refused the job, returned it
    /// unroutable, or did not confirm it within the publish timeout.
    fn watch_confirm(&self, pending: PendingConfirm, published: Instant) -> oneshot::Receiver<()> {
        let (refused, verdict) = oneshot::channel();
        let metrics = Arc::clone(&self.metrics);
        let deadline = published + self.publish_timeout;
        tokio::spawn(async move {
            let result = tokio::time::timeout_at(deadline.into(), pending.confirmed())
                .await
                .unwrap_or(Err(QueueError::Timeout("confirm")));
            metrics
                .confirm_latency
                .observe(published.elapsed().as_secs_f64());
            let outcome = match &result {
                Ok(()) => "ok",
                Err(error) => publish_outcome(error),
            };
            metrics
                .publishes
                .with_label_values(&["interactive", outcome])
                .inc();
            if let Err(error) = result {
                static REFUSED: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
                if let Some(suppressed) = REFUSED.check() {
                    tracing::warn!(%error, suppressed, "the broker did not take a render job");
                }
                let _ = refused.send(());
            }
        });
        verdict
    }

    /// The path through the workers is broken (the queue could not take the job, or Redis,
    /// which brings the tile back, is out of reach): render here, or refuse, per
    /// configuration.
    pub(super) async fn queue_fallback(&self, key: TileKey) -> Result<(Bytes, Source), FillError> {
        let Some(backends) = &self.backends else {
            return self.render_here(key).await;
        };
        if backends.fallback == QueueFallback::Reject {
            return Err(FillError::QueueUnavailable);
        }
        let rendered = self.render_here(key).await?;
        // Other replicas may be waiting on this replica's render claim: store and announce
        // the tile as a worker would, so they get it instead of their deadline.
        self.store_in_background(backends, key, &rendered);
        Ok(rendered)
    }
}

/// The `result` label of `render_jobs_published_total` for a failed publish.
fn publish_outcome(error: &QueueError) -> &'static str {
    match error {
        QueueError::Rejected(_) => "rejected",
        QueueError::Unroutable => "returned",
        QueueError::Timeout(_) => "timeout",
        QueueError::Blocked => "blocked",
        QueueError::NotConnected | QueueError::Unreachable(_) => "unavailable",
        QueueError::Amqp(_) | QueueError::Runtime(_) => "error",
    }
}
