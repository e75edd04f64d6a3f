//! What happens to one delivery, from decoding to the ack.
//!
//! The order is the guarantee: render → store in Redis (and announce it, for an interactive
//! job: nobody waits for a seed's tiles) → count seed progress → ack. A crash anywhere
//! before the ack leaves the job with the broker, which redelivers it; redelivery is
//! harmless because the render is deterministic and the store a plain `SET`. Jobs are
//! dropped without rendering when nobody can use the result: an interactive job past its
//! deadline, a job of a cancelled seed, a tile already stored (looked up for seed jobs and
//! redeliveries; see `process`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fractile_http::faults::Faults;
use fractile_queue::{Delivery, Priority, RenderJob, Settle, Settled};
use fractile_render::{RenderError, TileKey, render_tile};
use fractile_render_pool::{Lane, RenderPool, Unfinished};
use fractile_telemetry::{RateLimitedLog, context};
use fractile_tile_store::{ReadyNote, SeedOutcome, SeedState, SeedStore, TileStore};
use tracing::Instrument;

use crate::metrics::WorkerMetrics;

/// The function that turns a tile into PNG bytes; it polls the cancel check it is given.
pub type Renderer =
    Arc<dyn Fn(TileKey, &dyn Fn() -> bool) -> Result<Vec<u8>, RenderError> + Send + Sync>;

/// Longest a seed tile may render before it is abandoned (and retried), counted from when a
/// render thread starts on it: waiting behind interactive work is not rendering.
const BULK_RENDER_BUDGET: Duration = Duration::from_secs(60);
/// Longest a seed job waits for the pool (interactive work goes first) before it goes back
/// to the broker, well inside RabbitMQ's consumer timeout (30 min), which would close the
/// channel under a delivery held longer.
const BULK_WAIT_LIMIT: Duration = Duration::from_secs(600);
/// How long a rendered seed tile keeps trying to reach Redis before its job is requeued.
/// Holding the delivery (rather than requeueing at once) keeps a short Redis outage from
/// burning the job's deliveries against the broker's delivery limit; prefetch meanwhile
/// stops the worker from taking more work than it can store.
const STORE_PATIENCE: Duration = Duration::from_secs(30);
/// First pause between store attempts; it doubles up to [`STORE_BACKOFF_MAX`].
const STORE_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between store attempts.
const STORE_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// While Redis is down every job in hand fails its store attempts together; one line per
/// interval says so, with the count of the lines left out.
const STORE_FAILED_LOG_EVERY: Duration = Duration::from_secs(10);
static STORE_RETRYING: RateLimitedLog = RateLimitedLog::new(STORE_FAILED_LOG_EVERY);
static STORE_GAVE_UP: RateLimitedLog = RateLimitedLog::new(STORE_FAILED_LOG_EVERY);
static SEED_PROGRESS_FAILED: RateLimitedLog = RateLimitedLog::new(STORE_FAILED_LOG_EVERY);
static INVALID_JOB: RateLimitedLog = RateLimitedLog::new(STORE_FAILED_LOG_EVERY);

/// What every job task shares.
pub struct JobContext {
    pub(crate) id: String,
    pub(crate) store: TileStore,
    /// The state store: seed records (cancelled or not, progress).
    pub(crate) seeds: SeedStore,
    pool: RenderPool,
    pub(crate) metrics: Arc<WorkerMetrics>,
    pub(crate) renderer: Renderer,
    /// False only in the priority experiment: seed jobs then share the interactive lane.
    pub(crate) priority: bool,
    /// Injected faults; a paused worker holds its deliveries here (see `handle`).
    pub(crate) faults: Faults,
}

impl JobContext {
    pub(crate) fn new(
        id: String,
        store: TileStore,
        seeds: SeedStore,
        pool: RenderPool,
        metrics: Arc<WorkerMetrics>,
        faults: Faults,
    ) -> Self {
        let renderer: Renderer = Arc::new(|key: TileKey, cancelled: &dyn Fn() -> bool| {
            render_tile(key.tile, key.style, cancelled)
        });
        JobContext {
            id,
            store,
            seeds,
            pool,
            metrics,
            renderer,
            priority: true,
            faults,
        }
    }

    /// Handles one delivery to the end, settling it with the broker.
    pub(crate) async fn handle(self: Arc<Self>, delivery: Delivery) {
        // Paused by fault injection: hold the delivery unacked. Prefetch then stops the
        // broker from sending more, so the queue grows as it would behind a stuck worker.
        self.faults.unpaused().await;
        let span = process_span(&delivery);
        self.handle_in_span(delivery).instrument(span).await;
    }

    async fn handle_in_span(&self, delivery: Delivery) {
        let delivered = Instant::now();
        let queue = match delivery.priority() {
            Priority::Interactive => "interactive",
            Priority::Bulk => "bulk",
        };
        self.metrics.consumed.with_label_values(&[queue]).inc();
        // Decremented when this task ends however it ends: a panic cannot leak it.
        let _in_progress = InProgress::start(&self.metrics.in_progress);
        let settle = match delivery.job() {
            Ok((job, key)) => {
                self.metrics
                    .queue_wait
                    .with_label_values(&[queue])
                    .observe(job.queued_for(SystemTime::now()).as_secs_f64());
                self.process(job, key, &delivery, delivered).await
            }
            Err(error) => {
                // Anyone who can publish to the queue can send these, as fast as they like.
                if let Some(suppressed) = INVALID_JOB.check() {
                    tracing::warn!(
                        error = fractile_telemetry::causes(&error),
                        queue,
                        suppressed,
                        "dead-lettering an invalid job"
                    );
                }
                Settle::DeadLetter
            }
        };
        match delivery.settle(settle).await {
            Ok(Settled::Acked) => {}
            Ok(Settled::Requeued) => self.metrics.retries.inc(),
            Ok(Settled::DeadLettered) => self.metrics.dead_lettered.inc(),
            Err(error) => {
                // The channel was recovered since the delivery: the broker redelivers the job.
                tracing::warn!(%error, ?settle, "settling a delivery failed; it will be redelivered");
            }
        }
    }

    async fn process(
        &self,
        job: &RenderJob,
        key: TileKey,
        delivery: &Delivery,
        delivered: Instant,
    ) -> Settle {
        if job.expired(SystemTime::now()) {
            self.metrics.deadline_drops.inc();
            return Settle::Ack;
        }
        if let Some(seed) = &job.seed
            && let Ok(Some(SeedState::Cancelled)) = self.seeds.seed_state(seed).await
        {
            self.metrics.skipped.with_label_values(&["cancelled"]).inc();
            return Settle::Ack;
        }
        // A seed job, or a redelivered one, first looks whether its tile is stored already
        // (another worker, or this job's earlier delivery, got there). A first delivery of
        // an interactive job does not: the api that queued it looked in Redis a moment before
        // and holds the render claim, so the tile is almost never there, and the look would
        // be a round trip on a waiting request's path. The rare exception (a seed stored the
        // tile meanwhile) renders twice and writes the same bytes.
        let look_first = job.priority == Priority::Bulk || delivery.attempts() > 1;
        if look_first && let Ok([true]) = self.store.exists(&[key]).await.as_deref() {
            // Another worker (or a redelivery) got here first. Waiters still want to hear.
            self.metrics.skipped.with_label_values(&["stored"]).inc();
            if job.priority == Priority::Interactive {
                let note = self.note(&key, Duration::ZERO, delivered);
                let _ = self.store.announce(&note).await;
            }
            return self.seed_progress(job, key, SeedOutcome::Done).await;
        }

        let rendered = self
            .render(job, key)
            .instrument(tracing::info_span!("render", tile = %key))
            .await;
        match rendered {
            Rendered::Png(png, took) => {
                let note = self.note(&key, took, delivered);
                self.store(job, key, &png, &note).await
            }
            // Its requester has given up: nobody can use the tile now.
            Rendered::TooLate | Rendered::NotRun if job.deadline_unix_ms.is_some() => {
                self.metrics.deadline_drops.inc();
                Settle::Ack
            }
            // A seed job that never got a render thread: back to the broker, for this worker
            // or another, without counting as a failed attempt.
            Rendered::NotRun => Settle::Requeue,
            // A seed tile over its render budget is a failure like any other: retried, then
            // dead-lettered, never silently dropped.
            Rendered::TooLate => {
                self.failed(job, key, delivery, &RenderFailure::OverBudget)
                    .await
            }
            Rendered::Failed(why) => self.failed(job, key, delivery, &why).await,
        }
    }

    /// A failed attempt: retried until the protocol's cap, then dead-lettered (and the seed
    /// tile counted as failed first).
    async fn failed(
        &self,
        job: &RenderJob,
        key: TileKey,
        delivery: &Delivery,
        why: &RenderFailure,
    ) -> Settle {
        let attempts = delivery.attempts();
        let why = fractile_telemetry::causes(why);
        if delivery.last_attempt() {
            tracing::error!(%key, attempts, why, "render failed for the last time; dead-lettering");
            // A seed must learn of its failed tile, or it never finishes: unrecorded, the
            // job goes back and the next delivery records it.
            if self.seed_progress(job, key, SeedOutcome::Failed).await == Settle::Requeue {
                return Settle::Requeue;
            }
        } else {
            tracing::warn!(%key, attempts, why, "render failed; requeueing");
        }
        Settle::Retry
    }

    /// Renders on the pool, waiting for room there if it has none: this worker holds the
    /// delivery either way, so a pool still busy with jobs whose requesters left is
    /// back-pressure, not a failed attempt (`RenderPool::run_when_room`).
    async fn render(&self, job: &RenderJob, key: TileKey) -> Rendered {
        let now = Instant::now();
        // An interactive job is worth rendering until its requester's deadline, waiting
        // included; a seed job may wait its turn, and then render for its budget.
        let (lane, deadline, budget) = match job.deadline_unix_ms {
            Some(ms) => {
                let left = ms.saturating_sub(fractile_queue::unix_ms(SystemTime::now()));
                (Lane::Interactive, now + Duration::from_millis(left), None)
            }
            None if self.priority => (Lane::Bulk, now + BULK_WAIT_LIMIT, Some(BULK_RENDER_BUDGET)),
            None => (
                Lane::Interactive,
                now + BULK_WAIT_LIMIT,
                Some(BULK_RENDER_BUDGET),
            ),
        };
        let renderer = Arc::clone(&self.renderer);
        let metrics = self.metrics.render_metrics();
        let ran = self
            .pool
            .run_when_room(lane, deadline, move |cancel| {
                let started = Instant::now();
                let over_budget = || budget.is_some_and(|budget| started.elapsed() > budget);
                metrics.record(|| renderer(key, &|| cancel.is_cancelled() || over_budget()))
            })
            .await;
        match ran {
            Ok((Ok(png), took)) => Rendered::Png(png, took),
            Ok((Err(RenderError::Cancelled), _)) => Rendered::TooLate,
            Ok((Err(error), _)) => Rendered::Failed(RenderFailure::Render(error)),
            // Never started, or not finished, by the deadline: the requester has gone (an
            // interactive job), or the pool stayed busy with interactive work for the whole
            // wait (a seed job). Neither is the render's fault.
            Err(Unfinished::Deadline) => Rendered::NotRun,
            Err(Unfinished::Panicked) => Rendered::Failed(RenderFailure::Panicked),
        }
    }

    async fn store(&self, job: &RenderJob, key: TileKey, png: &[u8], note: &ReadyNote) -> Settle {
        // An interactive tile is worth storing only until its requester gives up.
        let give_up = Instant::now()
            + match job.deadline_unix_ms {
                Some(ms) => Duration::from_millis(
                    ms.saturating_sub(fractile_queue::unix_ms(SystemTime::now())),
                ),
                None => STORE_PATIENCE,
            };
        let mut backoff = STORE_BACKOFF;
        loop {
            // Only a tile a request may be waiting for is announced: a seed's tiles would
            // wake every api replica's listener for nobody.
            let stored = match job.priority {
                Priority::Interactive => {
                    self.store
                        .put_and_announce(&key, png, note)
                        .instrument(tracing::info_span!("store and announce", tile = %key))
                        .await
                }
                Priority::Bulk => {
                    self.store
                        .put(&key, png)
                        .instrument(tracing::info_span!("store", tile = %key))
                        .await
                }
            };
            match stored {
                Ok(()) => return self.seed_progress(job, key, SeedOutcome::Done).await,
                Err(error) if Instant::now() + backoff < give_up => {
                    if let Some(suppressed) = STORE_RETRYING.check() {
                        tracing::warn!(%error, %key, suppressed, "storing a tile failed; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(STORE_BACKOFF_MAX);
                }
                Err(error) if job.priority == Priority::Interactive => {
                    // Its requester has given up: nobody can use it now.
                    if let Some(suppressed) = STORE_GAVE_UP.check() {
                        tracing::warn!(%error, %key, suppressed, "could not store an interactive tile before its deadline");
                    }
                    self.metrics.deadline_drops.inc();
                    return Settle::Ack;
                }
                Err(error) => {
                    if let Some(suppressed) = STORE_GAVE_UP.check() {
                        tracing::error!(%error, %key, suppressed, "storing a tile failed; requeueing the job");
                    }
                    return Settle::Requeue;
                }
            }
        }
    }

    /// Records what became of a seed's tile in the state store, retrying with backoff for
    /// up to [`STORE_PATIENCE`] while it fails: `Ack` once recorded (or for a job of no
    /// seed), `Requeue` if it could not be. A seed whose tile is never recorded never
    /// finishes, and counts against the quotas until its record expires; the requeued job
    /// finds its tile stored next time and records it then.
    async fn seed_progress(&self, job: &RenderJob, key: TileKey, outcome: SeedOutcome) -> Settle {
        let Some(seed) = &job.seed else {
            return Settle::Ack;
        };
        let give_up = Instant::now() + STORE_PATIENCE;
        let mut backoff = STORE_BACKOFF;
        loop {
            match self.seeds.seed_mark(seed, outcome, &[key]).await {
                Ok(()) => return Settle::Ack,
                Err(error) if Instant::now() + backoff < give_up => {
                    if let Some(suppressed) = SEED_PROGRESS_FAILED.check() {
                        tracing::warn!(%error, seed, ?outcome, suppressed, "recording seed progress failed; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(STORE_BACKOFF_MAX);
                }
                Err(error) => {
                    if let Some(suppressed) = SEED_PROGRESS_FAILED.check() {
                        tracing::error!(%error, seed, ?outcome, suppressed, "recording seed progress failed; requeueing the job");
                    }
                    return Settle::Requeue;
                }
            }
        }
    }

    /// The announcement of `key`, rendered in `took` (zero: found stored) from a delivery
    /// received at `delivered`.
    fn note(&self, key: &TileKey, took: Duration, delivered: Instant) -> ReadyNote {
        ReadyNote {
            key: key.to_string(),
            worker: self.id.clone(),
            render_ms: took.as_secs_f64() * 1000.0,
            handled_ms: Some(delivered.elapsed().as_secs_f64() * 1000.0),
            traceparent: context::traceparent(&tracing::Span::current()),
        }
    }
}

/// The outcome of a render attempt.
enum Rendered {
    Png(Vec<u8>, Duration),
    /// Rendering stopped: the deadline passed, or a seed tile ran over its budget.
    TooLate,
    /// The render never got its turn, or did not finish, by the deadline.
    NotRun,
    Failed(RenderFailure),
}

/// Why a render attempt failed: retried, then dead-lettered.
#[derive(Debug, thiserror::Error)]
enum RenderFailure {
    /// The renderer failed (a PNG could not be encoded).
    #[error("render failed")]
    Render(#[source] RenderError),
    /// The render job panicked on its thread.
    #[error("render panicked")]
    Panicked,
    /// A seed tile ran over its render budget.
    #[error("render exceeded its budget")]
    OverBudget,
}

/// Counts one delivery in `worker_jobs_in_progress` for as long as it lives.
struct InProgress(prometheus::IntGauge);

impl InProgress {
    fn start(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        InProgress(gauge.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The CONSUMER span of one delivery, `process <queue>`: the publish span's child when the
/// message carries its context, and linked to it as well (trace views that follow parents,
/// like Jaeger's, draw the job inside the request; those that show links, like Tempo's,
/// keep the two apart and joined). A message without trace headers starts a new trace.
fn process_span(delivery: &Delivery) -> tracing::Span {
    let queue = delivery.queue();
    let span = tracing::info_span!(
        "process",
        otel.name = %format_args!("process {queue}"),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = queue,
        messaging.rabbitmq.destination.routing_key = queue,
        messaging.message.id = tracing::field::Empty,
        attempt = delivery.attempts(),
    );
    if let Ok((job, _)) = delivery.job() {
        span.record("messaging.message.id", job.message_id().as_str());
    }
    if let Some(remote) = delivery.trace_context() {
        context::set_parent(&span, remote.clone());
        context::add_link(&span, remote.clone());
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_that_panics_leaves_the_in_progress_gauge_where_it_was() {
        let gauge = prometheus::IntGauge::new("in_progress", "test").expect("gauge");
        let panicked = std::panic::catch_unwind(|| {
            let _counted = InProgress::start(&gauge);
            assert_eq!(gauge.get(), 1);
            panic!("deliberate test panic mid-job");
        });
        assert!(panicked.is_err());
        assert_eq!(gauge.get(), 0);
    }
}
