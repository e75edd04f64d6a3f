//! fractile's render worker.
//!
//! Consumes render jobs from RabbitMQ (an interactive and a bulk queue), renders them on a
//! bounded thread pool that always prefers interactive work, stores the PNG in Redis,
//! announces it to the waiting api, and only then acks. Anything that goes wrong before the
//! ack leaves the job with the broker, which redelivers it: delivery is at-least-once and
//! every step is idempotent.
//!
//! - [`config`] holds the settings;
//! - [`metrics`] holds the worker's Prometheus metrics;
//! - [`jobs`] decides what happens to one delivery;
//! - [`Worker::run`] connects (retrying with backoff while the broker is away, not ready
//!   meanwhile), consumes and shuts down.

pub mod config;
pub mod jobs;
pub mod metrics;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use fractile_http::Readiness;
use fractile_http::admin::{AdminProbe, ReadyCheck};
use fractile_http::faults::{Fault, Faults};
use fractile_http::fd_limit;
use fractile_http::serve::ConnectionLimits;
use fractile_queue::{Broker, BrokerStatus, Consumer, DepthProbe, Priority};
use fractile_render_pool::RenderPool;
use fractile_tile_store::{SeedStore, TileStore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use jobs::Renderer;

use crate::jobs::JobContext;
use crate::metrics::WorkerMetrics;

/// Time allowed for one attempt at connecting, lapin's own TCP retries included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest wait between two attempts at connecting.
const MAX_CONNECT_DELAY: Duration = Duration::from_secs(30);
/// How often the broker's queue depths are read for `broker_queue_ready_messages`.
const DEPTH_POLL_EVERY: Duration = Duration::from_secs(5);
/// A broker that refuses depth queries refuses every one: one warning per interval.
static DEPTH_POLL_FAILED: fractile_telemetry::RateLimitedLog =
    fractile_telemetry::RateLimitedLog::new(Duration::from_secs(60));
/// Header-read deadline of the admin port.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The faults a worker can inject: it renders and consumes.
const WORKER_FAULTS: &[Fault] = &[Fault::RenderSlowdown, Fault::PauseConsumption];

/// A configured worker, not yet connected.
pub struct Worker {
    config: Config,
    /// What every job task shares; put behind an `Arc` when [`Worker::run`] starts, so
    /// [`Worker::with_renderer`] always has it to itself.
    context: JobContext,
    readiness: Readiness,
}

impl Worker {
    /// Builds the store, the pool and the metrics. Connects to nothing yet.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let metrics = Arc::new(WorkerMetrics::new().context("registering metrics")?);
        if config.redis.tile_mac_key.is_none() {
            tracing::warn!(
                "FRACTILE_TILE_MAC_KEY is not set: the tiles this worker stores carry no MAC, and \
                 apis with a key refuse them; set the same key on the api and the workers"
            );
        }
        let store_settings = config.redis.settings(&config.redis_url);
        let store = TileStore::new(&store_settings).context("configuring redis")?;
        store
            .register_metrics(metrics.registry())
            .context("registering the Redis breaker's metrics")?;
        let seeds = SeedStore::new(&config.redis.settings(config.state_redis_url()))
            .context("configuring the state store (redis)")?;
        seeds
            .register_metrics(metrics.registry())
            .context("registering the state store breaker's metrics")?;
        // Room in the pool for every delivery the prefetch lets this worker hold, besides
        // its threads: a job waits for room only while jobs of deliveries already settled
        // (their requesters gone) are still leaving it (`RenderPool::run_when_room`).
        let capacity =
            usize::from(config.interactive_prefetch()) + usize::from(config.bulk_prefetch());
        let admin_token = config
            .process
            .faults
            .injection()
            .map_err(anyhow::Error::msg)?;
        let faults = Faults::new(admin_token, WORKER_FAULTS, metrics.registry())
            .context("registering fault metrics")?;
        let pool = RenderPool::new(
            config.process.render_threads(),
            capacity,
            metrics.pool.clone(),
        )
        .context("starting render threads")?
        .with_slowdown(faults.slowdown());
        let mut context = JobContext::new(config.worker_id(), store, seeds, pool, metrics, faults);
        context.priority = config.priority;
        Ok(Worker {
            config,
            context,
            readiness: Readiness::default(),
        })
    }

    /// Replaces the renderer (tests inject failures with it).
    pub fn with_renderer(mut self, renderer: Renderer) -> Self {
        self.context.renderer = renderer;
        self
    }

    /// The worker's injected faults (what `/faults` on its admin port changes).
    pub fn faults(&self) -> Faults {
        self.context.faults.clone()
    }

    /// The worker's metrics.
    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        Arc::clone(&self.context.metrics)
    }

    /// Consumes until `shutdown` resolves, then stops consuming, lets jobs in progress
    /// finish (and be acked), and returns. A consumer that ends by itself is not ignored (a
    /// worker that silently stopped consuming would look healthy while doing nothing): the
    /// worker turns not ready, says so, and sets its consumers up again on a new connection.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Worker {
            config,
            context,
            readiness,
        } = self;
        let context = Arc::new(context);
        let consuming = Consuming::default();
        // The admin port answers from the start: not ready until consuming.
        let admin = AdminServer::start(&config, &context, &readiness, &consuming)?;
        let session = Session {
            config: &config,
            context: &context,
            readiness: &readiness,
            consuming: &consuming,
            tracker: TaskTracker::new(),
        };
        session.consume_until(shutdown).await;
        readiness.drain();
        finish(&session.tracker, config.process.shutdown_timeout).await;
        admin.stop().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The admin port, served from start-up to the end of [`Worker::run`].
struct AdminServer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds the admin listener (the Redis pool set aside in the connection cap; the RabbitMQ
    /// connection comes out of the reserve) and serves the probes, metrics and `/faults`.
    fn start(
        config: &Config,
        context: &Arc<JobContext>,
        readiness: &Readiness,
        consuming: &Consuming,
    ) -> anyhow::Result<Self> {
        let limits = ConnectionLimits::admin(
            fd_limit::fit_connections(
                "admin",
                config.process.admin_max_connections,
                config.redis.redis_pool_size,
                fd_limit::raise_nofile_limit(),
            )
            .map_err(anyhow::Error::msg)?,
            ADMIN_HEADER_TIMEOUT,
            config.process.write_timeout,
        );
        let listener = fractile_http::serve::bind(config.admin_listen)
            .with_context(|| format!("binding admin listener {}", config.admin_listen))?;
        let probe = WorkerProbe {
            consuming: consuming.clone(),
            store: context.store.clone(),
            seeds: context.seeds.clone(),
            metrics: Arc::clone(&context.metrics),
        };
        let app = fractile_http::admin::router(probe, readiness.clone(), context.faults.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn(fractile_http::serve::serve(
            listener,
            app,
            limits,
            context.metrics.connections.listener("admin"),
            stop.clone(),
        ));
        Ok(AdminServer { stop, task })
    }

    /// Stops serving, waiting a moment for the last scrape.
    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
    }
}

/// How one connection's consuming ended.
enum Turn {
    /// Shutdown: the consumers were cancelled and the jobs in progress finished.
    Shutdown,
    /// A consumer ended or could not recover: connect again.
    Lost(anyhow::Error),
}

/// The worker while it runs: one connection per turn, until shutdown.
struct Session<'a> {
    config: &'a Config,
    context: &'a Arc<JobContext>,
    readiness: &'a Readiness,
    consuming: &'a Consuming,
    /// The jobs in progress.
    tracker: TaskTracker,
}

impl Session<'_> {
    /// Connects (with backoff), sets the consumers up and consumes, turn after turn, until
    /// `shutdown` resolves. A turn ends at shutdown, or when consuming stops (a consumer
    /// ended: its queue deleted, or a connection lapin gave up recovering).
    async fn consume_until(&self, shutdown: impl Future<Output = ()> + Send) {
        let name = format!("fractile-worker {}", self.context.id);
        let mut delays = fractile_queue::backoff_delays(MAX_CONNECT_DELAY);
        tokio::pin!(shutdown);
        loop {
            let connection = tokio::select! {
                () = &mut shutdown => return,
                connection = connect_with_backoff(self.config.amqp_url.expose(), &name) => connection,
            };
            let consumers = match self.consumers(&connection).await {
                Ok(consumers) => consumers,
                Err(error) => {
                    let retry_in = delays.next().unwrap_or(MAX_CONNECT_DELAY);
                    tracing::warn!(%error, ?retry_in, "setting up the consumers failed; connecting again");
                    connection.close(Duration::from_secs(2)).await;
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(retry_in) => continue,
                    }
                }
            };
            delays = fractile_queue::backoff_delays(MAX_CONNECT_DELAY);
            match self.consume(&connection, consumers, &mut shutdown).await {
                Turn::Shutdown => {
                    connection.close(Duration::from_secs(2)).await;
                    return;
                }
                Turn::Lost(error) => {
                    // Jobs in progress can no longer be settled on these channels: the broker
                    // redelivers them, and handling a job twice changes nothing.
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "consuming stopped; not ready, connecting again"
                    );
                    connection.close(Duration::from_secs(2)).await;
                }
            }
        }
    }

    /// The interactive and the bulk consumer, each with its prefetch.
    async fn consumers(
        &self,
        connection: &Broker,
    ) -> Result<(Consumer, Consumer), fractile_queue::QueueError> {
        let (config, id) = (self.config, &self.context.id);
        let topology = config.queue.topology();
        let interactive = connection
            .consumer(
                &topology,
                Priority::Interactive,
                config.interactive_prefetch(),
                id,
            )
            .await?;
        let bulk = connection
            .consumer(&topology, Priority::Bulk, config.bulk_prefetch(), id)
            .await?;
        Ok((interactive, bulk))
    }

    /// Hands every delivery to a job task until shutdown or until a consumer is lost; at
    /// shutdown, cancels the consumers and lets the jobs in progress finish.
    async fn consume(
        &self,
        connection: &Broker,
        (mut interactive, mut bulk): (Consumer, Consumer),
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Turn {
        let (config, context) = (self.config, self.context);
        self.consuming.set(Some(connection.status()));
        let stop_polling = CancellationToken::new();
        tokio::spawn(poll_depths(
            connection.depths(&config.queue.topology()),
            Arc::clone(&context.metrics),
            stop_polling.clone(),
        ));
        tracing::info!(
            worker = %context.id,
            admin = %config.admin_listen,
            threads = config.process.render_threads().get(),
            interactive_prefetch = config.interactive_prefetch(),
            bulk_prefetch = config.bulk_prefetch(),
            "consuming"
        );
        let lost = loop {
            tokio::select! {
                () = shutdown.as_mut() => break None,
                next = interactive.next() => if let Err(e) = dispatch(next, Priority::Interactive, context, &self.tracker) {
                    break Some(e);
                },
                next = bulk.next() => if let Err(e) = dispatch(next, Priority::Bulk, context, &self.tracker) {
                    break Some(e);
                },
            }
        };
        stop_polling.cancel();
        self.consuming.set(None);
        if let Some(error) = lost {
            return Turn::Lost(error);
        }
        self.readiness.drain();
        // Deliveries held by an injected pause would otherwise sit out the shutdown timeout.
        context.faults.clear();
        tracing::info!(
            in_progress = self.tracker.len(),
            "shutting down: finishing jobs in progress"
        );
        for consumer in [&mut interactive, &mut bulk] {
            if let Err(error) = consumer.cancel().await {
                tracing::warn!(%error, tag = consumer.tag(), "cancelling a consumer failed");
            }
        }
        finish(&self.tracker, config.process.shutdown_timeout).await;
        Turn::Shutdown
    }
}

/// Waits for the jobs in progress, at most `limit`.
async fn finish(tracker: &TaskTracker, limit: Duration) {
    tracker.close();
    if tokio::time::timeout(limit, tracker.wait()).await.is_err() {
        tracing::warn!(
            in_progress = tracker.len(),
            "shutdown timeout passed with jobs in progress; they will be redelivered"
        );
    }
}

/// The status of the connection the worker consumes on, while it does: what `/readyz`
/// and `queue_connected` report.
#[derive(Clone, Default)]
struct Consuming(Arc<Mutex<Option<BrokerStatus>>>);

impl Consuming {
    fn set(&self, status: Option<BrokerStatus>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = status;
    }

    fn connected(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(BrokerStatus::connected)
    }
}

/// Connects, retrying with capped exponential backoff and jitter until the broker answers;
/// every failed attempt is logged (the URL's password redacted). The caller races it
/// against shutdown.
async fn connect_with_backoff(url: &str, name: &str) -> Broker {
    let redacted = fractile_queue::redact_url(url);
    let mut delays = fractile_queue::backoff_delays(MAX_CONNECT_DELAY);
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        tracing::info!(url = %redacted, attempt, "connecting to RabbitMQ");
        match Broker::connect(url, name, CONNECT_TIMEOUT).await {
            Ok(connection) => {
                tracing::info!(url = %redacted, attempt, "connected to RabbitMQ");
                return connection;
            }
            Err(error) => {
                let retry_in = delays.next().unwrap_or(MAX_CONNECT_DELAY);
                tracing::warn!(url = %redacted, attempt, ?retry_in, %error, "connecting to RabbitMQ failed; not ready until it answers");
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

/// Hands one delivery to a job task, or decides the consumer is dead (it ended, or its
/// connection could not recover). [`fractile_queue::Consumer::next`] waits through recoveries itself.
fn dispatch(
    next: Result<Option<fractile_queue::Delivery>, fractile_queue::QueueError>,
    priority: Priority,
    context: &Arc<JobContext>,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    match next {
        Ok(Some(delivery)) => {
            tracker.spawn(Arc::clone(context).handle(delivery));
            Ok(())
        }
        Err(error) => Err(anyhow::Error::new(error)
            .context(format!("the {priority:?} consumer could not recover"))),
        Ok(None) => {
            anyhow::bail!(
                "the {priority:?} consumer ended (its queue deleted, or the connection lost for good)"
            )
        }
    }
}

/// Reads the broker's ready-message counts into `broker_queue_ready_messages`; a failed read is
/// counted in `worker_queue_depth_poll_failures_total` (the gauge keeps its last value, so
/// it must not go stale unseen).
async fn poll_depths(mut probe: DepthProbe, metrics: Arc<WorkerMetrics>, stop: CancellationToken) {
    let topology = probe.topology().clone();
    loop {
        for (label, queue) in [
            ("interactive", &topology.interactive),
            ("bulk", &topology.bulk),
            ("dead", &topology.dead),
        ] {
            match probe.ready(queue).await {
                Ok(ready) => metrics
                    .queue_depth
                    .with_label_values(&[label])
                    .set(i64::from(ready)),
                Err(error) => {
                    metrics.depth_poll_failures.inc();
                    if let Some(suppressed) = DEPTH_POLL_FAILED.check() {
                        tracing::warn!(%error, queue = label, suppressed, "reading a queue's depth failed");
                    }
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(DEPTH_POLL_EVERY) => {}
        }
    }
}

/// The worker's side of the admin port: `/readyz` is 200 only while consuming on a live
/// connection (`consuming` is set once the consumers are up) and while Redis answers.
struct WorkerProbe {
    consuming: Consuming,
    store: TileStore,
    seeds: SeedStore,
    metrics: Arc<WorkerMetrics>,
}

impl WorkerProbe {
    fn connected(&self) -> bool {
        self.consuming.connected()
    }
}

impl AdminProbe for WorkerProbe {
    async fn check(&self) -> ReadyCheck {
        let connected = self.connected();
        // Every job ends in a Redis write: a worker that cannot reach Redis renders nothing
        // anyone receives. A PING through the breaker, within the budget, so an idle worker
        // notices too.
        let redis = self.store.ping().await.is_ok();
        let failing = match (connected, redis) {
            (false, _) => Some("not consuming: RabbitMQ unreachable or recovering"),
            (true, false) => Some("redis unreachable"),
            (true, true) => None,
        };
        let breaker = if self.store.breaker_open() {
            "open"
        } else {
            "closed"
        };
        // The state store (seed records) only concerns seed jobs, which wait for it while
        // it is away: reported, not a reason to stop consuming.
        let state_redis = self.seeds.ping().await.is_ok();
        let mut details = serde_json::Map::new();
        details.insert("redis".into(), (if redis { "up" } else { "down" }).into());
        details.insert(
            "state_redis".into(),
            (if state_redis { "up" } else { "down" }).into(),
        );
        details.insert("redis_breaker".into(), breaker.into());
        ReadyCheck { failing, details }
    }

    async fn encode_metrics(&self) -> Result<String, prometheus::Error> {
        self.metrics
            .queue_connected
            .set(i64::from(self.connected()));
        self.metrics.encode()
    }
}
