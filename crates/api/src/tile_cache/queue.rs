//! The queue fill: a miss published as a render job for a worker (unless another replica
//! already claimed the render) and waited for until the tile appears in Redis, within the
//! render deadline. Its steps, in order: [`QueueFill::claim`], [`QueueFill::publish`],
//! [`QueueFill::await_tile`]. When the path through the workers is broken (the broker cannot
//! take the job, or Redis, which brings the tile back, is out of reach) it says so
//! ([`QueueMiss::Broken`]) and the shared fill falls back.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use fractile_queue::{PendingConfirm, Priority, Publisher, PublisherLink, QueueError, RenderJob};
use fractile_telemetry::RateLimitedLog;
use fractile_tile_store::{ReadyListener, ReadyNote, ReadyWait, Stored, TileStore};
use tokio::sync::oneshot;

use super::TileKey;
use super::fill::{LOG_EVERY, Source, WorkerWait, l2_refused, store_failed};
use crate::metrics::Metrics;

/// How often a queued miss re-reads Redis while waiting, in case the announcement was lost
/// (pub/sub delivers at most once, and not while its connection is down).
const RESULT_POLL_EVERY: Duration = Duration::from_millis(200);

/// How long a render claim lives until its job is published; then it is held for the render
/// deadline. A replica that dies between claiming and publishing (a SIGKILL, an OOM kill)
/// leaves a claim nobody will honour: it lapses after this, and a replica waiting on it takes
/// the claim over and publishes the job, instead of waiting out the deadline for a render
/// that was never asked for.
const CLAIM_UNTIL_PUBLISHED: Duration = Duration::from_secs(1);

/// Why the workers did not bring a tile back.
#[derive(Debug)]
pub enum QueueMiss {
    /// The render deadline passed (503 `render_timeout`).
    Deadline,
    /// The path through the workers is broken: fall back.
    Broken,
}

/// Misses rendered by the workers through the render queue.
#[derive(Clone)]
pub struct QueueFill {
    /// The cache Redis: render claims, and where the worker's tile appears.
    store: TileStore,
    /// Announcements of tiles the workers rendered.
    ready: ReadyListener,
    /// The render queue (connected in the background: it may have no publisher for a while).
    link: PublisherLink,
    render_timeout: Duration,
    /// How long a miss waits for the broker to take its job (publish and confirm).
    publish_timeout: Duration,
    /// The queue interactive misses go to: their own (the default), or the seeds' for the
    /// priority experiment (`FRACTILE_QUEUE_PRIORITY=false`).
    lane: Priority,
    metrics: Arc<Metrics>,
}

/// A job handed to the broker.
struct Published {
    /// How long the publish took.
    took: Duration,
    /// Gets a value if the broker refuses the job, returns it, or does not confirm it in time.
    refused: oneshot::Receiver<()>,
}

/// What the wait for the worker's tile found.
struct Found {
    png: Bytes,
    /// The Redis read that found it.
    fetch: Duration,
    /// The worker's announcement, and when it was heard, if it was.
    heard: Option<(ReadyNote, Duration)>,
}

impl QueueFill {
    /// A queue fill over `store`, `ready` and `link`, with the render deadline and the
    /// publish timeout; interactive misses go to `lane`.
    pub fn new(
        store: TileStore,
        ready: ReadyListener,
        link: PublisherLink,
        (render_timeout, publish_timeout): (Duration, Duration),
        lane: Priority,
        metrics: Arc<Metrics>,
    ) -> Self {
        QueueFill {
            store,
            ready,
            link,
            render_timeout,
            publish_timeout,
            lane,
            metrics,
        }
    }

    /// The render queue.
    pub fn link(&self) -> &PublisherLink {
        &self.link
    }

    /// Has a worker render `key` (or joins another replica's render of it) and waits for the
    /// tile until the render deadline. `lookup` is the Redis lookup that missed, for the
    /// account.
    pub async fn fill(&self, key: TileKey, lookup: Duration) -> Result<(Bytes, Source), QueueMiss> {
        let Some(publisher) = self.link.publisher() else {
            // Not connected (yet): no claim, so other replicas are not kept waiting.
            self.count_publish("unavailable");
            return Err(QueueMiss::Broken);
        };
        let started = Instant::now();
        let deadline = started + self.render_timeout;
        // Register before publishing, or the announcement could arrive first.
        let announcement = self.ready.register(&key);
        let claimed = self.claim(&key).await?;
        let claim = started.elapsed();
        // The broker's confirm is awaited beside the result, not before it: confirms can
        // take a while under load, and a worker may deliver the tile first.
        let published = if claimed {
            Some(self.publish(&key, &publisher).await?)
        } else {
            self.metrics.coalesced.with_label_values(&["cluster"]).inc();
            None
        };
        let publish = published.as_ref().map(|p| p.took);
        let refused = published.map(|p| p.refused);
        let joined = (!claimed).then_some(&publisher);
        let found = self
            .await_tile(&key, announcement, refused, joined, started, deadline)
            .await?;
        let waited = started.elapsed();
        self.observe_wait("ok", waited);
        let (note, announced) = found.heard.unzip();
        let source = Source::Worker(Box::new(WorkerWait {
            lookup,
            claim,
            publish,
            announced,
            fetch: found.fetch,
            waited,
            note,
        }));
        Ok((found.png, source))
    }

    /// Takes the render claim (`SET NX`, living [`CLAIM_UNTIL_PUBLISHED`] until `publish` holds
    /// it for the render deadline): true if this replica publishes the job, false if another
    /// replica already did.
    async fn claim(&self, key: &TileKey) -> Result<bool, QueueMiss> {
        let until_published = CLAIM_UNTIL_PUBLISHED.min(self.render_timeout);
        match self.store.claim_render(key, until_published).await {
            Ok(claimed) => Ok(claimed),
            Err(error) => {
                // Without Redis no worker can hand the tile back.
                store_failed(&self.metrics, "claim", &error);
                Err(QueueMiss::Broken)
            }
        }
    }

    /// Publishes the job, within the publish timeout: a broker that holds publishes (a
    /// resource alarm) must not hold the miss.
    async fn publish(&self, key: &TileKey, publisher: &Publisher) -> Result<Published, QueueMiss> {
        let job = RenderJob::interactive(key, SystemTime::now() + self.render_timeout);
        let publishing = Instant::now();
        let published =
            tokio::time::timeout(self.publish_timeout, publisher.publish_to(&job, self.lane))
                .await
                .unwrap_or(Err(QueueError::Timeout("publish")));
        let took = publishing.elapsed();
        match published {
            Ok(pending) => {
                // Published: the claim now lives as long as the render may take. Off the
                // request's path; if it fails, the claim lapses and a waiting replica queues
                // the job again (a second render of the same bytes, nothing worse).
                let (store, key, ttl) = (self.store.clone(), *key, self.render_timeout);
                tokio::spawn(async move { store.hold_claim(&key, ttl).await });
                Ok(Published {
                    took,
                    refused: self.watch_confirm(pending, publishing),
                })
            }
            Err(error) => {
                // Every miss fails the same way while the broker is down: one line per
                // interval, the rest counted (and in render_jobs_published_total).
                static PUBLISH_FAILED: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
                if let Some(suppressed) = PUBLISH_FAILED.check() {
                    tracing::warn!(%error, %key, suppressed, "publishing a render job failed");
                }
                self.count_publish(publish_outcome(&error));
                Err(QueueMiss::Broken)
            }
        }
    }

    /// Waits for the tile in Redis: looked up when its announcement is heard, when the
    /// subscription goes down (it would hear of nothing), and every [`RESULT_POLL_EVERY`],
    /// until the deadline ([`QueueMiss::Deadline`]), a refused job or Redis out of reach
    /// ([`QueueMiss::Broken`]).
    ///
    /// A request that joined another replica's claim (`joined`, with the publisher to use)
    /// takes the claim over when it lapses without the tile, and publishes the job itself
    /// (see [`CLAIM_UNTIL_PUBLISHED`]).
    async fn await_tile(
        &self,
        key: &TileKey,
        mut announcement: ReadyWait,
        mut refused: Option<oneshot::Receiver<()>>,
        mut joined: Option<&Publisher>,
        started: Instant,
        deadline: Instant,
    ) -> Result<Found, QueueMiss> {
        let mut poll = tokio::time::interval(RESULT_POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard: Option<(ReadyNote, Duration)> = None;
        // Whether the subscription went down while waiting (then only polling finds the tile).
        let mut deaf = false;
        loop {
            tokio::select! {
                note = announcement.announced(), if heard.is_none() => heard = Some((note, started.elapsed())),
                () = self.ready.disconnected(), if !deaf => deaf = true,
                _ = poll.tick() => {}
                verdict = async { refused.as_mut().expect("guarded by is_some").await }, if refused.is_some() => {
                    refused = None;
                    // A sent value means refused; a dropped sender means confirmed.
                    if verdict.is_ok() {
                        return Err(QueueMiss::Broken);
                    }
                    continue;
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    self.observe_wait("timeout", started.elapsed());
                    return Err(QueueMiss::Deadline);
                }
            }
            // Announced, deaf, or time to poll: look in Redis.
            let fetch = Instant::now();
            match self.store.lookup(key).await {
                Ok(Stored::Tile(png)) => {
                    let fetch = fetch.elapsed();
                    return Ok(Found { png, fetch, heard });
                }
                Ok(Stored::Missing) => {
                    if let Some(publisher) = joined
                        && started.elapsed() >= CLAIM_UNTIL_PUBLISHED
                        && self.claim(key).await?
                    {
                        // The claim lapsed without a tile: its holder never published.
                        joined = None;
                        self.metrics.claims_taken_over.inc();
                        refused = Some(self.publish(key, publisher).await?.refused);
                    }
                }
                // Deleted; the worker's tile, when it comes, replaces nothing.
                Ok(Stored::Refused(why)) => l2_refused(&self.metrics, "result", why),
                Err(error) => {
                    store_failed(&self.metrics, "result", &error);
                    // The worker's tile could not reach this request: stop waiting for it.
                    if error.is_outage() {
                        self.observe_wait("redis_unavailable", started.elapsed());
                        return Err(QueueMiss::Broken);
                    }
                }
            }
        }
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

    fn count_publish(&self, outcome: &str) {
        self.metrics
            .publishes
            .with_label_values(&["interactive", outcome])
            .inc();
    }

    fn observe_wait(&self, result: &str, waited: Duration) {
        self.metrics
            .result_wait
            .with_label_values(&[result])
            .observe(waited.as_secs_f64());
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
