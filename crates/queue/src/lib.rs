//! The render queue protocol, shared by the api (publisher) and the worker (consumer).
//!
//! - [`RenderJob`]: the message: which tile, for whom (interactive with a deadline, or a
//!   seed), encoded as JSON;
//! - [`Topology`]: the durable quorum queues, their dead-letter route and retry cap,
//!   declared idempotently by both binaries;
//! - [`connect`] and [`Publisher`]: one auto-recovering connection per process, and a
//!   channel in confirm mode whose publishes are persistent and mandatory.
//!
//! Guarantees: a job is on disk at the broker (quorum queue, persistent) once its publish is
//! confirmed; it leaves the queue only when a worker acks it, which the worker does after
//! the tile is stored, or when it is dead-lettered. Delivery is at-least-once, and workers
//! are idempotent (a tile's bytes are deterministic and the store is a plain `SET`).

mod job;
mod topology;

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

pub use job::{InvalidJob, Priority, RenderJob, unix_ms};
pub use lapin;
pub use topology::{BROKER_DELIVERY_LIMIT, MAX_ATTEMPTS, Topology, delivery_attempts};

/// Why talking to the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker did not answer in time.
    #[error("timed out talking to RabbitMQ ({0})")]
    Timeout(&'static str),
    /// The AMQP layer failed (connection lost, channel closed, recovering...).
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused the message (nack) or could not route it (returned).
    #[error("the broker did not accept the job: {0}")]
    Rejected(&'static str),
}

/// Opens a connection with automatic recovery (the connection, its channels, their
/// consumers and the declared topology come back after a broker restart or a network
/// blip). `name` shows in the management UI.
pub async fn connect(url: &str, name: &str, timeout: Duration) -> Result<Connection, QueueError> {
    let properties = ConnectionProperties::default()
        .with_connection_name(name.into())
        .enable_auto_recover();
    tokio::time::timeout(timeout, Connection::connect(url, properties))
        .await
        .map_err(|_| QueueError::Timeout("connect"))?
        .map_err(QueueError::from)
}

/// Publishes jobs on one long-lived channel in confirm mode. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    topology: Topology,
    // Kept so the connection lives as long as any clone of the publisher.
    _connection: std::sync::Arc<Connection>,
}

/// A published job whose broker confirmation is still outstanding.
pub struct PendingConfirm(lapin::PublisherConfirm);

impl PendingConfirm {
    /// Waits for the broker's verdict: Ok once the job is safely queued.
    pub async fn confirmed(self) -> Result<(), QueueError> {
        let confirmation = self.0.await?;
        if confirmation.is_nack() {
            return Err(QueueError::Rejected("nack"));
        }
        if confirmation.take_message().is_some() {
            return Err(QueueError::Rejected("unroutable (returned)"));
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
        let connection = connect(url, name, timeout).await?;
        let setup = async {
            let channel = connection.create_channel().await?;
            topology.declare(&channel).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(channel)
        };
        let channel = tokio::time::timeout(timeout, setup)
            .await
            .map_err(|_| QueueError::Timeout("publisher setup"))??;
        Ok(Publisher {
            channel,
            topology,
            _connection: std::sync::Arc::new(connection),
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
        let queue = self.topology.queue_for(queue);
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(job.message_id().into())
            .with_headers(FieldTable::default());
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &job.encode(),
                properties,
            )
            .await?;
        Ok(PendingConfirm(confirm))
    }

    /// Publishes raw bytes to the interactive queue (tests send poison with it).
    pub async fn publish_raw(
        &self,
        priority: Priority,
        payload: &[u8],
    ) -> Result<PendingConfirm, QueueError> {
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
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        Ok(PendingConfirm(confirm))
    }

    /// Whether the channel can publish right now (false while recovering).
    pub fn is_connected(&self) -> bool {
        self.channel.status().connected()
    }

    /// The topology this publisher targets.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }
}
