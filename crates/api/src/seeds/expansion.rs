//! Durable expansion of accepted seeds into render jobs, in the background.
//!
//! An expansion holds a lease on its seed (`FRACTILE_SEED_LEASE`), renews it while it works
//! and records a cursor with each batch of [`BATCH`] tiles: tiles already in the cache are
//! marked done, the rest published to the bulk queue with confirms. Every replica looks for
//! expansions whose lease ran out ([`Expansions::start_takeover`]) and continues them from
//! the cursor, so a seed whose replica is killed still finishes. A clean shutdown gives the
//! lease up at once. A full bulk queue (publishes nacked) is waited out, for as long as it
//! takes; any other failure is retried for [`BATCH_RETRY_FOR`], then the seed fails.
//!
//! [`Expansions`] is everything this needs, built once by `state.rs`: the stores, the queue
//! link, this replica's lease holder, the tasks and the stop signal. It knows nothing of HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fractile_queue::{Publisher, PublisherLink, QueueError, RenderJob};
use fractile_render::{MaxZoom, TileKey, TileRange};
use fractile_telemetry::{RateLimitedLog, context};
use fractile_tile_store::{LeaseStep, SeedOutcome, SeedState, SeedStore, StoreError, TileStore};
use prometheus::IntCounterVec;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::plan::{Plan, plan_of};

/// Tiles checked against Redis and published per round trip.
const BATCH: usize = 500;
/// How long one batch is retried (the broker may be restarting or recovering) before the
/// seed is marked failed.
const BATCH_RETRY_FOR: Duration = Duration::from_secs(120);
/// Time allowed for a batch's confirms: a broker that takes jobs but never confirms them
/// (a resource alarm) must not stall the expansion for ever.
const BATCH_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest pause between two attempts at jobs the full bulk queue refused.
const QUEUE_FULL_MAX_DELAY: Duration = Duration::from_secs(5);
/// At most one log line per this interval for failures that repeat.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What an expansion works with: the state store for the records, the tile cache to skip
/// stored tiles, and the render queue.
#[derive(Clone)]
pub struct Backends {
    /// Seed records (the state store).
    pub seeds: SeedStore,
    /// The tile cache, to skip what is stored.
    pub tiles: TileStore,
    /// The render queue.
    pub link: PublisherLink,
}

/// This replica's expansions: where they run and what they use. Cheap to clone.
#[derive(Clone)]
pub struct Expansions {
    backends: Backends,
    expander: Expander,
    max_zoom: MaxZoom,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Expansions {
    /// Expansions over `backends`, holding leases of `lease`, planning with `max_zoom`, and
    /// stopping when `stop` is cancelled.
    pub fn new(
        backends: Backends,
        lease: Duration,
        max_zoom: MaxZoom,
        stop: CancellationToken,
    ) -> Self {
        Expansions {
            backends,
            expander: Expander::new(lease),
            max_zoom,
            tasks: TaskTracker::new(),
            stop,
        }
    }

    /// The stores and the queue link.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// This replica as a lease holder.
    pub fn expander(&self) -> &Expander {
        &self.expander
    }

    /// Waits, at most `limit`, for the expansions to stop once `stop` was cancelled (each
    /// gives its lease up on the way out); false if some were still running at `limit`.
    pub async fn wait(&self, limit: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(limit, self.tasks.wait()).await.is_ok()
    }

    /// Expands seed `id` from `cursor` in the background, under this replica's lease, in the
    /// seed's trace (`traceparent`, kept in its record).
    pub fn spawn(&self, id: String, plan: Plan, cursor: u64, traceparent: Option<&str>) {
        let expansion = Expansion {
            backends: self.backends.clone(),
            id,
            expander: self.expander.clone(),
        };
        let stop = self.stop.clone();
        // A child of the span that accepted the seed (the `POST /v1/seeds`), whether this
        // replica accepted it or took it over from one that stopped: the seed is one trace.
        // Without that context (an untraced request, a record of an earlier version) the
        // expansion starts a trace.
        let span =
            tracing::info_span!(parent: None, "seed expansion", seed = %expansion.id, cursor);
        if let Some(seed) = traceparent.and_then(|t| context::extract(Some(t), None)) {
            context::set_parent(&span, seed);
        }
        self.tasks
            .spawn(async move { expansion.run(plan, cursor, stop).await }.instrument(span));
    }

    /// Looks for expansions whose holder stopped renewing its lease (a replica killed or cut
    /// off) every third of a lease, and continues each from its cursor. Runs until shutdown.
    pub fn start_takeover(&self) {
        let this = self.clone();
        self.tasks.spawn(async move { this.take_over().await });
    }

    /// Judges once a `period` (`FRACTILE_SEED_PROGRESS_PERIOD`, a minute), for the whole
    /// deployment, whether bulk rendering moves: every replica offers four times a period, the
    /// first in each period samples ([`SeedStore::seed_progress_sample`]) and counts the
    /// period in `minutes` (`seed_minutes_total{outcome}`) if seeds ran through it:
    /// `advanced` if a tile of any of them finished, `stalled` if none did. Each period is
    /// counted once, by whichever replica took the sample, so the fleet's sum is the
    /// seed-progress SLI. Any seed, not every seed: one bulk queue serves the seeds' jobs in
    /// the order they were queued, so a seed queued behind another waits by design; a seed
    /// whose jobs were lost stalls every minute once it runs alone. Runs until shutdown.
    pub fn start_progress_sampling(&self, minutes: IntCounterVec, period: Duration) {
        let this = self.clone();
        self.tasks
            .spawn(async move { this.sample_progress(minutes, period).await });
    }

    async fn sample_progress(self, minutes: IntCounterVec, period: Duration) {
        static FAILED: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
        let [advanced, stalled] =
            ["advanced", "stalled"].map(|outcome| minutes.with_label_values(&[outcome]));
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(period / 4) => {}
            }
            match self.backends.seeds.seed_progress_sample(period).await {
                Ok(Some(sample)) if sample.advanced > 0 => advanced.inc(),
                Ok(Some(sample)) if sample.stalled > 0 => stalled.inc(),
                Ok(_) => {}
                Err(error) => {
                    if let Some(suppressed) = FAILED.check() {
                        tracing::warn!(%error, suppressed, "sampling the seeds' progress failed");
                    }
                }
            }
        }
    }

    async fn take_over(self) {
        static FAILED: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
        let (seeds, link, expander) = (&self.backends.seeds, &self.backends.link, &self.expander);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(expander.every()) => {}
            }
            // Taking a seed over while its jobs cannot be queued would only fail it.
            if !link.is_connected() {
                continue;
            }
            let taken = seeds.seed_take_over(&expander.holder, expander.lease).await;
            let id = match taken {
                Ok(Some(id)) => id,
                Ok(None) => continue,
                Err(error) => {
                    if let Some(suppressed) = FAILED.check() {
                        tracing::warn!(%error, suppressed, "looking for orphaned seed expansions failed");
                    }
                    continue;
                }
            };
            let record = match seeds.seed_get(&id).await {
                Ok(Some(record)) => record,
                // Gone meanwhile, or Redis failed: the lease runs out and it is found again.
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(seed = %id, %error, "reading a taken-over seed failed");
                    continue;
                }
            };
            let cursor = record.cursor.unwrap_or(0);
            match plan_of(&record, self.max_zoom) {
                Ok(plan) => {
                    tracing::info!(seed = %id, cursor, total = plan.total, "taking over a seed's expansion whose holder stopped");
                    self.spawn(id, plan, cursor, record.traceparent.as_deref());
                }
                Err(error) => {
                    // Accepted by a replica configured differently (a deeper maximum zoom):
                    // this one cannot expand it; nor could it ever.
                    tracing::error!(seed = %id, %error, "a taken-over seed cannot be planned here; marking it failed");
                    let _ = seeds
                        .seed_finish_expansion(&id, &expander.holder, SeedState::Failed)
                        .await;
                }
            }
        }
    }
}

/// This replica as a holder of expansion leases.
#[derive(Clone, Debug)]
pub struct Expander {
    /// The holder id written into the leases this replica takes: unique per process.
    pub holder: Arc<str>,
    /// How long a lease holds without renewal.
    pub lease: Duration,
}

impl Expander {
    /// A fresh holder id with leases of `lease`.
    pub fn new(lease: Duration) -> Self {
        Expander {
            holder: format!("api-{}", uuid::Uuid::new_v4().simple()).into(),
            lease,
        }
    }

    /// Pause between lease renewals, and between two looks for orphaned expansions.
    fn every(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(50))
    }
}

/// One expansion: what it needs, shared by its work and its lease keeper.
struct Expansion {
    backends: Backends,
    id: String,
    expander: Expander,
}

/// How an expansion ended.
enum Ended {
    /// Every tile is queued or found stored.
    Expanded,
    /// The broker refused the jobs for longer than [`BATCH_RETRY_FOR`].
    GaveUp,
    /// The lease is not ours any more (cancelled, or taken over): stop without a word.
    Lost(Option<SeedState>),
    /// Redis would not record progress: stop; the lease runs out and the expansion is
    /// taken over, by this replica or another, once Redis answers.
    Abandoned,
}

impl Expansion {
    /// Expands, keeping the lease, until done, stopped by shutdown (the lease is then
    /// released for another replica), or the lease is lost.
    async fn run(self, plan: Plan, cursor: u64, stop: CancellationToken) {
        let id = &self.id;
        let ended = tokio::select! {
            ended = self.expand(plan, cursor) => ended,
            lost = self.keep_lease() => Ended::Lost(lost),
            () = stop.cancelled() => {
                let released = self.backends.seeds.seed_release(id, &self.expander.holder).await;
                tracing::info!(seed = %id, ?released, "shutting down mid-expansion; lease released for another replica");
                return;
            }
        };
        let to = match ended {
            Ended::Expanded => SeedState::Running,
            Ended::GaveUp => SeedState::Failed,
            Ended::Lost(state) => {
                tracing::info!(seed = %id, ?state, "stopped expanding: the seed is cancelled or another replica holds it");
                return;
            }
            Ended::Abandoned => {
                tracing::warn!(seed = %id, "stopped expanding: progress could not be recorded; the expansion will be taken over when Redis answers");
                return;
            }
        };
        match self
            .backends
            .seeds
            .seed_finish_expansion(id, &self.expander.holder, to)
            .await
        {
            Ok(LeaseStep::Held) => tracing::info!(seed = %id, state = to.as_str(), "seed expanded"),
            Ok(LeaseStep::Lost(state)) => {
                tracing::info!(seed = %id, ?state, "expansion ended, but the seed was cancelled or taken over meanwhile");
            }
            // The lease runs out, another replica finds nothing left past the cursor and
            // finishes the expansion.
            Err(error) => {
                tracing::warn!(seed = %id, %error, "recording the end of an expansion failed")
            }
        }
    }

    /// Renews the lease every third of its length; returns when it is lost. A failed
    /// renewal is retried: the lease only runs out if Redis stays unreachable for longer.
    async fn keep_lease(&self) -> Option<SeedState> {
        static FAILED: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
        loop {
            tokio::time::sleep(self.expander.every()).await;
            match self
                .backends
                .seeds
                .seed_renew(&self.id, &self.expander.holder, self.expander.lease)
                .await
            {
                Ok(LeaseStep::Held) => {}
                Ok(LeaseStep::Lost(state)) => return state,
                Err(error) => {
                    if let Some(suppressed) = FAILED.check() {
                        tracing::warn!(seed = %self.id, %error, suppressed, "renewing a seed lease failed");
                    }
                }
            }
        }
    }

    /// Queues the plan's tiles from `cursor`, a batch at a time, recording the cursor with
    /// each batch.
    async fn expand(&self, plan: Plan, mut cursor: u64) -> Ended {
        let style = plan.style;
        let mut tiles = plan
            .ranges
            .into_iter()
            .flat_map(TileRange::tiles)
            .skip(usize::try_from(cursor).unwrap_or(usize::MAX))
            .map(|tile| TileKey { tile, style });
        loop {
            let batch: Vec<TileKey> = tiles.by_ref().take(BATCH).collect();
            if batch.is_empty() {
                return Ended::Expanded;
            }
            let Some((queued, skipped)) = self.queue_batch(batch.clone()).await else {
                return Ended::GaveUp;
            };
            cursor += batch.len() as u64;
            if let Some(ended) = self.advance(cursor, queued, skipped).await {
                return ended;
            }
        }
    }

    /// Records a queued batch (cursor, counters, lease in one step), retrying while Redis
    /// fails for up to [`BATCH_RETRY_FOR`]. `None` to go on.
    async fn advance(&self, cursor: u64, queued: u64, skipped: u64) -> Option<Ended> {
        let started = Instant::now();
        let mut delays = fractile_queue::backoff_delays(Duration::from_secs(5));
        loop {
            let (id, holder, lease) = (&self.id, &self.expander.holder, self.expander.lease);
            match self
                .backends
                .seeds
                .seed_advance(id, holder, lease, cursor, queued, skipped)
                .await
            {
                Ok(LeaseStep::Held) => return None,
                Ok(LeaseStep::Lost(state)) => return Some(Ended::Lost(state)),
                Err(error) if started.elapsed() < BATCH_RETRY_FOR => {
                    tracing::warn!(seed = %id, %error, "recording seed progress failed; retrying");
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
                }
                Err(_) => return Some(Ended::Abandoned),
            }
        }
    }

    /// Queues one batch: skips (and marks done) what Redis has, publishes the rest and
    /// waits for every confirm. Jobs the broker refuses because the bulk queue is full are
    /// published again after a pause, for as long as it stays full; other failures are
    /// retried for up to [`BATCH_RETRY_FOR`] (`None` past it). Answers the jobs queued and
    /// the tiles skipped.
    async fn queue_batch(&self, batch: Vec<TileKey>) -> Option<(u64, u64)> {
        static FULL: RateLimitedLog = RateLimitedLog::new(LOG_EVERY);
        let mut progress = BatchProgress {
            unchecked: Some(batch),
            left: Vec::new(),
            queued: 0,
            skipped: 0,
        };
        let mut failing_since: Option<Instant> = None;
        let mut delays = fractile_queue::backoff_delays(Duration::from_secs(5));
        let mut full_delays = fractile_queue::backoff_delays(QUEUE_FULL_MAX_DELAY);
        loop {
            let queued_before = progress.queued;
            let delay = match self
                .batch_step(&mut progress)
                .instrument(tracing::info_span!("seed batch", seed = %self.id))
                .await
            {
                Ok(()) => return Some((progress.queued, progress.skipped)),
                Err(BatchFailure::QueueFull) => {
                    // Not a failure: workers drain the queue. Wait as long as that takes,
                    // pausing longer only while no job at all gets in.
                    failing_since = None;
                    if progress.queued > queued_before {
                        full_delays = fractile_queue::backoff_delays(QUEUE_FULL_MAX_DELAY);
                    }
                    if let Some(suppressed) = FULL.check() {
                        tracing::warn!(seed = %self.id, refused = progress.left.len(), suppressed, "the bulk queue is full (publishes nacked); backing off");
                    }
                    full_delays.next().unwrap_or(QUEUE_FULL_MAX_DELAY)
                }
                Err(error) => {
                    tracing::warn!(seed = %self.id, %error, "queueing a seed batch failed");
                    full_delays = fractile_queue::backoff_delays(QUEUE_FULL_MAX_DELAY);
                    if failing_since.get_or_insert_with(Instant::now).elapsed() >= BATCH_RETRY_FOR {
                        return None;
                    }
                    delays.next().unwrap_or(Duration::from_secs(5))
                }
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt at what is left of a batch.
    async fn batch_step(&self, p: &mut BatchProgress) -> Result<(), BatchFailure> {
        if let Some(batch) = p.unchecked.take() {
            let stored = match self.backends.tiles.exists(&batch).await {
                Ok(stored) => stored,
                Err(error) => {
                    p.unchecked = Some(batch);
                    return Err(error.into());
                }
            };
            let (already, rest): (Vec<_>, Vec<_>) =
                batch.iter().zip(&stored).partition(|(_, stored)| **stored);
            let already: Vec<TileKey> = already.into_iter().map(|(k, _)| *k).collect();
            if let Err(error) = self
                .backends
                .seeds
                .seed_mark(&self.id, SeedOutcome::Done, &already)
                .await
            {
                p.unchecked = Some(batch);
                return Err(error.into());
            }
            p.skipped = already.len() as u64;
            p.left = rest.into_iter().map(|(k, _)| *k).collect();
        }
        if p.left.is_empty() {
            return Ok(());
        }
        // Fetched on every attempt: the link replaces a dead publisher.
        let publisher: Publisher = self
            .backends
            .link
            .publisher()
            .ok_or(QueueError::NotConnected)?;
        let mut sent = Vec::new();
        let mut failure: Option<QueueError> = None;
        let mut tiles = std::mem::take(&mut p.left).into_iter();
        for key in tiles.by_ref() {
            match publisher.publish(&RenderJob::bulk(&key, &self.id)).await {
                Ok(confirm) => sent.push((key, confirm)),
                Err(error) => {
                    p.left.push(key);
                    failure = Some(error);
                    break;
                }
            }
        }
        p.left.extend(tiles);
        // A broker that takes jobs but never confirms them (a resource alarm) must not
        // stall the expansion for ever.
        let deadline = tokio::time::Instant::now() + BATCH_CONFIRM_TIMEOUT;
        for (key, confirm) in sent {
            let verdict = tokio::time::timeout_at(deadline, confirm.confirmed())
                .await
                .unwrap_or(Err(QueueError::Timeout("confirms")));
            match verdict {
                Ok(()) => p.queued += 1,
                Err(error) => {
                    p.left.push(key);
                    // A refusal for a full queue is only reported if nothing worse happened.
                    if failure
                        .as_ref()
                        .is_none_or(|f| matches!(f, QueueError::Rejected(_)))
                    {
                        failure = Some(error);
                    }
                }
            }
        }
        match failure {
            None => Ok(()),
            Some(QueueError::Rejected(_)) => Err(BatchFailure::QueueFull),
            Some(error) => Err(error.into()),
        }
    }
}

/// Where a batch stands: not yet checked against Redis, or the jobs still to queue.
struct BatchProgress {
    unchecked: Option<Vec<TileKey>>,
    left: Vec<TileKey>,
    queued: u64,
    skipped: u64,
}

/// Why an attempt at a batch did not queue all of it.
#[derive(Debug, thiserror::Error)]
enum BatchFailure {
    /// The broker refused jobs with a nack: the bulk queue is at its maximum length.
    #[error("the bulk queue is full")]
    QueueFull,
    /// Redis would not say which tiles are stored, or would not record them.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker could not take or confirm the jobs (not connected, a timeout, an error).
    #[error(transparent)]
    Queue(#[from] QueueError),
}
