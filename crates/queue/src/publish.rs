//! The publishing half: [`Publisher`], a channel in confirm mode whose publishes are
//! persistent (bulk) and mandatory, which re-declares the topology when a publish comes back
//! unroutable; [`PendingConfirm`], a publish whose confirm is awaited apart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use tracing::Instrument;

use crate::connection::{QueueError, connect};
use crate::job::{Priority, RenderJob};
use crate::topology::{Topology, persistent};

/// AMQP's delivery mode for a job on `queue`'s queue: 2 (persistent) or 1 (transient).
fn delivery_mode(queue: Priority) -> u8 {
    if persistent(queue) { 2 } else { 1 }
}

/// At most one re-declaration of the topology per this interval, however many publishes
/// come back unroutable meanwhile.
pub const REDECLARE_EVERY: Duration = Duration::from_secs(5);

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
        let queue_name = self.topology.queue_for(queue);
        let body = job.encode();
        let message_id = job.message_id();
        let span = publish_span(queue_name, &message_id, body.len(), queue);
        let properties = BasicProperties::default()
            .with_delivery_mode(delivery_mode(queue))
            .with_content_type("application/json".into())
            .with_message_id(message_id.into())
            .with_headers(trace_headers(&span));
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                queue_name.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                properties,
            )
            .instrument(span)
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

/// The PRODUCER span of a publish, with the messaging conventions' attributes. Jobs go
/// through the default exchange, which routes by queue name, so the queue is the
/// destination that means something (and the routing key).
///
/// An interactive job's span is the current span's child: the request waiting for it. A
/// bulk job's starts a trace of its own, linked to the current span (a seed's expansion
/// batch): a seed of 100,000 tiles would otherwise be one trace of 100,000 renders, which no
/// trace view can show.
fn publish_span(
    queue: &str,
    message_id: &str,
    body_size: usize,
    priority: Priority,
) -> tracing::Span {
    macro_rules! span {
        ($($parent:tt)*) => {
            tracing::info_span!(
                $($parent)*
                "publish",
                otel.name = %format_args!("publish {queue}"),
                otel.kind = "producer",
                messaging.system = "rabbitmq",
                messaging.operation.type = "send",
                messaging.operation.name = "publish",
                messaging.destination.name = queue,
                messaging.rabbitmq.destination.routing_key = queue,
                messaging.message.id = message_id,
                messaging.message.body.size = body_size,
            )
        };
    }
    match priority {
        Priority::Interactive => span!(),
        Priority::Bulk => {
            let span = span!(parent: None,);
            if let Some(cause) =
                fractile_telemetry::context::span_context(&tracing::Span::current())
            {
                fractile_telemetry::context::add_link(&span, cause);
            }
            span
        }
    }
}

/// The message headers that carry `span`'s context to the consumer ([`crate::TRACE_HEADERS`]).
fn trace_headers(span: &tracing::Span) -> FieldTable {
    let mut headers = FieldTable::default();
    for (name, value) in fractile_telemetry::context::inject(span) {
        headers.insert(name.into(), AMQPValue::LongString(value.into()));
    }
    headers
}
