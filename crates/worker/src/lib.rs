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
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use fractile_queue::lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use fractile_queue::lapin::types::FieldTable;
use fractile_queue::lapin::{Channel, Connection, ConnectionStatus, Consumer};
use fractile_queue::{Priority, Topology};
use fractile_runtime::Readiness;
use fractile_runtime::admin::{AdminProbe, ReadyCheck};
use fractile_runtime::faults::{Fault, Faults};
use fractile_runtime::fd_limit;
use fractile_runtime::pool::RenderPool;
use fractile_runtime::serve::ConnectionLimits;
use fractile_tile_store::TileStore;
use futures_lite::StreamExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use jobs::Renderer;

use crate::jobs::JobContext;
use crate::metrics::WorkerMetrics;

/// Time allowed for setting up the channels and consumers once connected.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Time allowed for one attempt at connecting, lapin's own TCP retries included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest wait between two attempts at connecting.
const MAX_CONNECT_DELAY: Duration = Duration::from_secs(30);
/// How often the broker's queue depths are read for `broker_queue_ready_messages`.
const DEPTH_POLL_EVERY: Duration = Duration::from_secs(5);
/// Header-read deadline of the admin port.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The faults a worker can inject: it renders and consumes.
const WORKER_FAULTS: &[Fault] = &[Fault::RenderSlowdown, Fault::PauseConsumption];

/// A configured worker, not yet connected.
pub struct Worker {
    config: Config,
    context: Arc<JobContext>,
    readiness: Readiness,
}

impl Worker {
    /// Builds the store, the pool and the metrics. Connects to nothing yet.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let metrics = Arc::new(WorkerMetrics::new().context("registering metrics")?);
        let store_settings = config.redis.settings(&config.redis_url);
        let store = TileStore::new(&store_settings).context("configuring redis")?;
        store
            .register_metrics(metrics.registry())
            .context("registering the Redis breaker's metrics")?;
        // Prefetch bounds the jobs held at once, so the pool's queues never fill; the
        // capacity is a safety margin, not a limit the worker relies on.
        let capacity =
            usize::from(config.interactive_prefetch()) + usize::from(config.bulk_prefetch());
        let faults = Faults::new(config.fault_injection, WORKER_FAULTS, metrics.registry())
            .context("registering fault metrics")?;
        let pool = RenderPool::new(config.render_threads(), capacity, metrics.pool_metrics())
            .context("starting render threads")?
            .with_slowdown(faults.slowdown());
        let mut context = JobContext::new(config.worker_id(), store, pool, metrics, faults);
        context.priority = config.priority;
        let context = Arc::new(context);
        Ok(Worker {
            config,
            context,
            readiness: Readiness::default(),
        })
    }

    /// Replaces the renderer (tests inject failures with it).
    pub fn with_renderer(mut self, renderer: Renderer) -> Self {
        if let Some(context) = Arc::get_mut(&mut self.context) {
            context.renderer = renderer;
        }
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
    /// finish (and be acked), and returns. Returns an error if a consumer ends by itself:
    /// a worker that silently stopped consuming would look healthy while doing nothing.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Worker {
            config,
            context,
            readiness,
        } = self;
        // The Redis pool is set aside; the RabbitMQ connection comes out of the reserve.
        let admin_limits = ConnectionLimits::admin(
            fd_limit::fit_connections(
                "admin",
                config.admin_max_connections,
                config.redis.redis_pool_size,
                fd_limit::raise_nofile_limit(),
            )
            .map_err(anyhow::Error::msg)?,
            ADMIN_HEADER_TIMEOUT,
            config.write_timeout,
        );
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("binding admin listener {}", config.admin_listen))?;
        // The admin port answers from the start: not ready until consuming.
        let consuming: Arc<OnceLock<ConnectionStatus>> = Arc::default();
        let stop_admin = CancellationToken::new();
        let probe = WorkerProbe {
            consuming: Arc::clone(&consuming),
            store: context.store.clone(),
            metrics: Arc::clone(&context.metrics),
        };
        let admin_app =
            fractile_runtime::admin::router(probe, readiness.clone(), context.faults.clone());
        let admin_server = tokio::spawn(fractile_runtime::serve::serve(
            admin,
            admin_app,
            admin_limits,
            context.metrics.connections.listener("admin"),
            stop_admin.clone(),
        ));
        let name = format!("fractile-worker {}", context.id);
        tokio::pin!(shutdown);
        let connection = tokio::select! {
            () = &mut shutdown => {
                tracing::info!("shut down before RabbitMQ was reached");
                stop_admin.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(1), admin_server).await;
                return Ok(());
            }
            connection = connect_with_backoff(config.amqp_url.expose(), &name) => connection,
        };
        let topology = config.queue.topology();
        let setup = async {
            let interactive = consumer(
                &connection,
                &topology,
                Priority::Interactive,
                config.interactive_prefetch(),
                &context.id,
            )
            .await?;
            let bulk = consumer(
                &connection,
                &topology,
                Priority::Bulk,
                config.bulk_prefetch(),
                &context.id,
            )
            .await?;
            let depth = connection.create_channel().await?;
            Ok::<_, fractile_queue::lapin::Error>((interactive, bulk, depth))
        };
        let ((interactive_ch, mut interactive), (bulk_ch, mut bulk), depth_ch) =
            tokio::time::timeout(SETUP_TIMEOUT, setup)
                .await
                .context("setting up consumers timed out")??;
        let _ = consuming.set(connection.status().clone());

        let stop_polling = CancellationToken::new();
        tokio::spawn(poll_depths(
            depth_ch,
            topology.clone(),
            Arc::clone(&context.metrics),
            stop_polling.clone(),
        ));
        tracing::info!(
            worker = %context.id,
            admin = %config.admin_listen,
            threads = config.render_threads().get(),
            interactive_prefetch = config.interactive_prefetch(),
            bulk_prefetch = config.bulk_prefetch(),
            "consuming"
        );

        let tracker = TaskTracker::new();
        let outcome: anyhow::Result<()> = loop {
            tokio::select! {
                () = &mut shutdown => break Ok(()),
                next = interactive.next() => if let Err(e) = dispatch(next, &interactive_ch, Priority::Interactive, &context, &tracker).await {
                    break Err(e);
                },
                next = bulk.next() => if let Err(e) = dispatch(next, &bulk_ch, Priority::Bulk, &context, &tracker).await {
                    break Err(e);
                },
            }
        };

        readiness.drain();
        // Deliveries held by an injected pause would otherwise sit out the shutdown timeout.
        context.faults.clear();
        stop_polling.cancel();
        if outcome.is_ok() {
            tracing::info!(
                in_progress = tracker.len(),
                "shutting down: finishing jobs in progress"
            );
            for (channel, tag) in [
                (&interactive_ch, tag(&context.id, Priority::Interactive)),
                (&bulk_ch, tag(&context.id, Priority::Bulk)),
            ] {
                if let Err(error) = channel
                    .basic_cancel(tag.into(), BasicCancelOptions::default())
                    .await
                {
                    tracing::warn!(%error, "cancelling a consumer failed");
                }
            }
        }
        tracker.close();
        if tokio::time::timeout(config.shutdown_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_progress = tracker.len(),
                "shutdown timeout passed with jobs in progress; they will be redelivered"
            );
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            connection.close(200, "worker shutting down".into()),
        )
        .await;
        stop_admin.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), admin_server).await;
        if outcome.is_ok() {
            tracing::info!("stopped");
        }
        outcome
    }
}

/// Connects, retrying with capped exponential backoff and jitter until the broker answers;
/// every failed attempt is logged (the URL's password redacted). The caller races it
/// against shutdown.
async fn connect_with_backoff(url: &str, name: &str) -> Connection {
    let redacted = fractile_queue::redact_url(url);
    let mut delays = fractile_queue::backoff_delays(MAX_CONNECT_DELAY);
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        tracing::info!(url = %redacted, attempt, "connecting to RabbitMQ");
        match fractile_queue::connect(url, name, CONNECT_TIMEOUT).await {
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

fn tag(id: &str, priority: Priority) -> String {
    match priority {
        Priority::Interactive => format!("{id}-interactive"),
        Priority::Bulk => format!("{id}-bulk"),
    }
}

/// A channel with its prefetch set, the topology declared, and a consumer on `priority`'s
/// queue with manual acks.
async fn consumer(
    connection: &Connection,
    topology: &Topology,
    priority: Priority,
    prefetch: u16,
    id: &str,
) -> Result<(Channel, Consumer), fractile_queue::lapin::Error> {
    let channel = connection.create_channel().await?;
    topology.declare(&channel).await?;
    // Per-consumer prefetch (global = false: RabbitMQ 4.3 refuses global QoS).
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            topology.queue_for(priority).into(),
            tag(id, priority).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}

/// Hands one item of a consumer stream to a job task, or decides the consumer is dead.
async fn dispatch(
    next: Option<Result<fractile_queue::lapin::message::Delivery, fractile_queue::lapin::Error>>,
    channel: &Channel,
    priority: Priority,
    context: &Arc<JobContext>,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    match next {
        Some(Ok(delivery)) => {
            tracker.spawn(Arc::clone(context).handle(delivery, priority));
            Ok(())
        }
        Some(Err(error)) => {
            tracing::warn!(%error, ?priority, "consumer error; waiting for the connection to recover");
            channel
                .wait_for_recovery(error)
                .await
                .context("consumer could not recover")?;
            tracing::info!(?priority, "consumer recovered");
            Ok(())
        }
        None => anyhow::bail!("the {priority:?} consumer ended: no more deliveries would arrive"),
    }
}

/// Reads the broker's ready-message counts into `broker_queue_ready_messages` (passive declares).
async fn poll_depths(
    channel: Channel,
    topology: Topology,
    metrics: Arc<WorkerMetrics>,
    stop: CancellationToken,
) {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    loop {
        for (label, queue) in [
            ("interactive", &topology.interactive),
            ("bulk", &topology.bulk),
            ("dead", &topology.dead),
        ] {
            let declared = tokio::time::timeout(
                Duration::from_secs(2),
                channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()),
            )
            .await;
            if let Ok(Ok(q)) = declared {
                metrics
                    .queue_depth
                    .with_label_values(&[label])
                    .set(i64::from(q.message_count()));
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
    consuming: Arc<OnceLock<ConnectionStatus>>,
    store: TileStore,
    metrics: Arc<WorkerMetrics>,
}

impl WorkerProbe {
    fn connected(&self) -> bool {
        self.consuming
            .get()
            .is_some_and(ConnectionStatus::connected)
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
        let mut details = serde_json::Map::new();
        details.insert("redis".into(), (if redis { "up" } else { "down" }).into());
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
