//! The render queue protocol, shared by the api (publisher) and the worker (consumer).
//!
//! - [`RenderJob`]: the message: which tile, for whom (interactive with a deadline, or a
//!   seed), encoded as JSON;
//! - [`Topology`]: the durable quorum queues, their dead-letter route and retry cap,
//!   declared idempotently by both binaries;
//! - [`connect`] and [`Publisher`]: one auto-recovering connection per process, and a
//!   channel in confirm mode whose publishes are persistent and mandatory;
//! - [`PublisherLink`]: a publisher that connects in the background with backoff and is
//!   replaced if its connection dies for good, for a process that must run without a broker;
//! - [`Broker`], [`Consumer`] and [`Delivery`]: the consume half: deliveries with their
//!   job and attempt count, settled only by an explicit [`Delivery::settle`] with a
//!   [`Settle`], under the retry cap and the poison rule (see the `consume` module); and
//!   [`DepthProbe`], which reads queue depths through [`Topology::ready_messages`].
//!
//! Guarantees: a job is on disk at the broker (quorum queue, persistent) once its publish is
//! confirmed; it leaves the queue only when a consumer settles it, which the worker does
//! after the tile is stored and announced, or when it is dead-lettered. Delivery is
//! at-least-once, and workers are idempotent (a tile's bytes are deterministic and the
//! store is a plain `SET`).
//!
//! lapin stays behind this crate: its types appear only in [`connect`] and the
//! [`Topology`] methods that take a channel (for tests and tools that inspect the broker),
//! and in [`QueueError::Amqp`].
//!
//! Every connection's I/O runs on one tokio runtime owned by this crate for the whole life
//! of the process, not on the caller's: lapin drives a connection from a thread of its own
//! that keeps retrying after every handle to it is gone (an abandoned connect, a connection
//! recovering at exit), and tokio panics when that thread sleeps on a runtime being shut
//! down. A runtime that is never shut down turns that panic into nothing: the process exits
//! and the thread with it.

mod args;
mod consume;
mod job;
mod link;
mod topology;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use backon::ExponentialBuilder;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

pub use args::QueueArgs;
pub use consume::{
    Broker, BrokerStatus, Consumer, Delivery, DepthProbe, Settle, Settled, consumer_tag,
};
pub use job::{InvalidJob, Priority, RenderJob, unix_ms};
pub use link::{MAX_RECONNECT_DELAY, PublisherLink, backoff_delays};
pub use topology::{
    BROKER_DELIVERY_LIMIT, BULK_MAX_LENGTH, DEAD_MAX_BYTES, DEAD_MAX_LENGTH,
    INTERACTIVE_MAX_ATTEMPTS, MAX_ATTEMPTS, Topology, delivery_attempts, max_attempts, persistent,
};

/// The schemes of an AMQP URL the settings take (`amqps://` is refused by [`check_url`]:
/// this build of lapin has no TLS).
pub const AMQP_SCHEMES: &[&str] = &["amqp", "amqps"];

/// Whether lapin takes `url` (its own parser: port, vhost, query parameters), and can
/// connect to it: the settings' check at start-up, so a URL it would refuse stops the
/// process at once instead of failing every connection attempt.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: lapin::uri::AMQPUri = url.parse()?;
    if uri.scheme == lapin::uri::AMQPScheme::AMQPS {
        return Err("amqps:// needs TLS, which this build does not include".into());
    }
    Ok(())
}

/// AMQP's delivery mode for a job on `queue`'s queue: 2 (persistent) or 1 (transient).
fn delivery_mode(queue: Priority) -> u8 {
    if persistent(queue) { 2 } else { 1 }
}

/// At most one re-declaration of the topology per this interval, however many publishes
/// come back unroutable meanwhile.
pub const REDECLARE_EVERY: Duration = Duration::from_secs(5);

/// Why talking to the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker did not answer in time.
    #[error("timed out talking to RabbitMQ ({0})")]
    Timeout(&'static str),
    /// The AMQP layer failed (connection lost, channel closed, recovering...).
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused the message (nack).
    #[error("the broker did not accept the job: {0}")]
    Rejected(&'static str),
    /// The broker had no queue to route the job to and returned it (the queue was deleted):
    /// the topology is being declared again.
    #[error("the job was unroutable and came back; re-declaring the queues")]
    Unroutable,
    /// The broker has blocked publishing (a memory or disk alarm).
    #[error("RabbitMQ blocks publishers (resource alarm)")]
    Blocked,
    /// No connection to the broker yet (or any more).
    #[error("not connected to RabbitMQ")]
    NotConnected,
    /// Nothing accepts a TCP connection at the broker's address (checked before a connect).
    #[error("RabbitMQ is unreachable at {0}")]
    Unreachable(String),
    /// The AMQP runtime could not be started.
    #[error("starting the AMQP runtime: {0}")]
    Runtime(String),
}

/// The runtime every connection's I/O runs on (see the module docs): one worker thread,
/// created on first use, never shut down.
fn amqp_runtime() -> Result<async_rs::TokioRuntime, QueueError> {
    static RUNTIME: OnceLock<Result<async_rs::TokioRuntime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("amqp-io")
                .enable_all()
                .build()
                .map(async_rs::TokioRuntime::tokio_with_runtime)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(QueueError::Runtime)
}

/// lapin's own reconnect schedule, for a connection that was up and dropped (and for the
/// TCP attempts of a first connect): ten attempts from 250 ms, doubling, capped at 4 s,
/// with jitter: 30 to 55 s, enough for a broker restart. Past that the connection reports
/// an error and stays down; longer outages are [`PublisherLink`]'s (or the worker's
/// orchestrator's) business, which start a fresh connection.
fn recovery_backoff() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(4))
        .with_max_times(10)
        .with_jitter()
}

/// How long the reachability check before a connect waits for the TCP handshake.
const REACHABLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Fails at once, naming the address and the cause, when nothing accepts a TCP connection
/// at the broker's address. Without it a first connect to a broker that is down spends
/// `recovery_backoff` (30 to 55 s) in lapin's silent TCP retries before it reports anything;
/// with it each attempt of the caller's own loop fails fast and is logged with its next
/// retry time. The probe connection is closed at once.
async fn check_reachable(url: &str) -> Result<(), QueueError> {
    let uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e: String| QueueError::Unreachable(format!("invalid AMQP URL: {e}")))?;
    let (host, port) = (uri.authority.host.as_str(), uri.authority.port);
    match tokio::time::timeout(
        REACHABLE_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    {
        Ok(Ok(_probe)) => Ok(()),
        Ok(Err(e)) => Err(QueueError::Unreachable(format!("{host}:{port}: {e}"))),
        Err(_) => Err(QueueError::Unreachable(format!(
            "{host}:{port}: no TCP answer within {REACHABLE_TIMEOUT:?}"
        ))),
    }
}

/// Opens a connection with automatic recovery (the connection, its channels, their
/// consumers and the declared topology come back after a broker restart or a network
/// blip, for as long as `recovery_backoff` allows). `name` shows in the management UI.
/// A broker nobody answers for fails at once ([`QueueError::Unreachable`]).
pub async fn connect(url: &str, name: &str, timeout: Duration) -> Result<Connection, QueueError> {
    check_reachable(url).await?;
    let properties = ConnectionProperties::default()
        .with_connection_name(name.into())
        .with_backoff(recovery_backoff())
        .enable_auto_recover();
    let runtime = amqp_runtime()?;
    tokio::time::timeout(
        timeout,
        Connection::connect_with_runtime(url, properties, runtime),
    )
    .await
    .map_err(|_| QueueError::Timeout("connect"))?
    .map_err(QueueError::from)
}

/// `url` with its password replaced by `***`, for logs (owned by `fractile-settings`, with
/// the [`SecretUrl`](fractile_settings::SecretUrl) settings hold URLs in).
pub use fractile_settings::redact_url;

/// Re-declares the topology after a publish came back unroutable, at most once per
/// [`REDECLARE_EVERY`] (every publish fails the same way until it is done).
#[derive(Clone)]
struct Redeclare {
    connection: Arc<Connection>,
    channel: Channel,
    topology: Topology,
    last: Arc<Mutex<Option<Instant>>>,
}

impl Redeclare {
    fn request(&self) {
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < REDECLARE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let this = self.clone();
        tokio::spawn(async move {
            let declared = this.topology.declare(&this.connection, &this.channel);
            match tokio::time::timeout(REDECLARE_EVERY, declared).await {
                Ok(Ok(())) => tracing::warn!(
                    queue = %this.topology.interactive,
                    "a job came back unroutable (were the queues deleted?); declared the topology again"
                ),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "declaring the topology again failed");
                }
                Err(_) => tracing::warn!("declaring the topology again timed out"),
            }
        });
    }
}

/// Publishes jobs on one long-lived channel in confirm mode. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    topology: Topology,
    redeclare: Redeclare,
    // Kept so the connection lives as long as any clone of the publisher.
    connection: Arc<Connection>,
}

/// A published job whose broker confirmation is still outstanding.
pub struct PendingConfirm {
    confirm: lapin::PublisherConfirm,
    redeclare: Redeclare,
}

impl PendingConfirm {
    /// Waits for the broker's verdict: Ok once the job is safely queued. A job that came
    /// back unroutable is [`QueueError::Unroutable`], and the topology is declared again.
    pub async fn confirmed(self) -> Result<(), QueueError> {
        let confirmation = self.confirm.await?;
        if confirmation.is_nack() {
            return Err(QueueError::Rejected("nack"));
        }
        // A returned message is acked too (RabbitMQ sends basic.return, then basic.ack).
        if confirmation.take_message().is_some() {
            self.redeclare.request();
            return Err(QueueError::Unroutable);
        }
        Ok(())
    }
}

impl Publisher {
    /// Connects (see [`connect`]), opens the publishing channel, declares the topology, and
    /// turns on publisher confirms.
    pub async fn connect(
        url: &str,
        name: &str,
        topology: Topology,
        timeout: Duration,
    ) -> Result<Self, QueueError> {
        let connection = Arc::new(connect(url, name, timeout).await?);
        let setup = async {
            let channel = connection.create_channel().await?;
            topology.declare(&connection, &channel).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(channel)
        };
        let channel = tokio::time::timeout(timeout, setup)
            .await
            .map_err(|_| QueueError::Timeout("publisher setup"))??;
        Ok(Publisher {
            redeclare: Redeclare {
                connection: Arc::clone(&connection),
                channel: channel.clone(),
                topology: topology.clone(),
                last: Arc::default(),
            },
            channel,
            topology,
            connection,
        })
    }

    /// Sends `job` to its queue: persistent, mandatory (an unroutable job comes back
    /// instead of vanishing). Returns once the frame is written; the caller decides when to
    /// await the confirm, so confirms need not be awaited in series.
    pub async fn publish(&self, job: &RenderJob) -> Result<PendingConfirm, QueueError> {
        self.publish_to(job, job.priority).await
    }

    /// Sends `job` to the queue of `queue` rather than its own priority's. Only the
    /// load-test experiment without priority uses it: interactive jobs then wait in the
    /// bulk queue, first come first served, behind every seed job.
    pub async fn publish_to(
        &self,
        job: &RenderJob,
        queue: Priority,
    ) -> Result<PendingConfirm, QueueError> {
        self.ready_to_publish()?;
        let properties = BasicProperties::default()
            .with_delivery_mode(delivery_mode(queue))
            .with_content_type("application/json".into())
            .with_message_id(job.message_id().into())
            .with_headers(FieldTable::default());
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                self.topology.queue_for(queue).into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &job.encode(),
                properties,
            )
            .await?;
        Ok(self.pending(confirm))
    }

    /// Publishes raw bytes to `priority`'s queue (tests send poison with it; feature
    /// `test-util`).
    #[cfg(feature = "test-util")]
    pub async fn publish_raw(
        &self,
        priority: Priority,
        payload: &[u8],
    ) -> Result<PendingConfirm, QueueError> {
        self.ready_to_publish()?;
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                self.topology.queue_for(priority).into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                payload,
                BasicProperties::default().with_delivery_mode(delivery_mode(priority)),
            )
            .await?;
        Ok(self.pending(confirm))
    }

    fn pending(&self, confirm: lapin::PublisherConfirm) -> PendingConfirm {
        PendingConfirm {
            confirm,
            redeclare: self.redeclare.clone(),
        }
    }

    /// Refuses at once what the broker would hold: while it blocks publishers (a resource
    /// alarm) a publish is never written, and its caller would wait for nothing.
    fn ready_to_publish(&self) -> Result<(), QueueError> {
        if self.is_blocked() {
            return Err(QueueError::Blocked);
        }
        Ok(())
    }

    /// Whether the channel can publish right now (false while recovering or blocked).
    pub fn is_connected(&self) -> bool {
        self.channel.status().connected() && !self.is_blocked()
    }

    /// Whether the broker blocks this connection's publishes (`connection.blocked`: a memory
    /// or disk alarm).
    pub fn is_blocked(&self) -> bool {
        self.connection.status().blocked()
    }

    /// Whether this publisher can never publish again: its connection gave up recovering,
    /// or its channel was closed (by the broker or at shutdown). A publisher that is only
    /// recovering is not dead.
    pub fn is_dead(&self) -> bool {
        let connection = self.connection.status();
        let channel = self.channel.status();
        let connection_dead = connection.closed() || connection.errored();
        let channel_dead =
            !(channel.connected() || channel.reconnecting() || channel.initializing());
        connection_dead || channel_dead
    }

    /// Closes the connection (at shutdown), waiting at most `timeout`.
    pub async fn close(&self, timeout: Duration) {
        if self.connection.status().connected() {
            let _ =
                tokio::time::timeout(timeout, self.connection.close(200, "shutting down".into()))
                    .await;
        }
    }

    /// The topology this publisher targets.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }
}
