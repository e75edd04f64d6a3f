//! The consume half of the protocol: [`Broker`], [`Consumer`], [`Delivery`], [`Settle`].
//!
//! The at-least-once rules live here, whoever consumes:
//!
//! - a delivery leaves the queue only through [`Delivery::settle`], which the caller makes
//!   after its work is done (the worker: after the tile is stored and announced). Nothing
//!   here acks by itself, and a delivery dropped unsettled (a task that panicked, or was
//!   abandoned) is handed back to the broker for another attempt;
//! - [`Settle::Retry`] (the job failed) requeues until the delivery's attempt count reaches
//!   its queue's cap ([`crate::MAX_ATTEMPTS`] for bulk jobs,
//!   [`crate::INTERACTIVE_MAX_ATTEMPTS`] for interactive ones), then dead-letters: the cap is
//!   the protocol's, not each caller's; [`Settle::Requeue`] (a dependency failed) requeues up
//!   to the broker's own limit (bulk) or the job's deadline (interactive). A retry is a
//!   `basic.reject` and a requeue a `basic.nack`: RabbitMQ up to 4.2 counts both in a quorum
//!   queue's `x-delivery-count`, 4.3 and later only the rejection, so on those a dependency's
//!   failure no longer uses up a job's attempts;
//! - a message that is not a valid job is dead-lettered however it is settled: a redelivery
//!   cannot fix it, and acking it would lose it without a trace.
//!
//! The broker adds its own cap ([`crate::BROKER_DELIVERY_LIMIT`]) for jobs that kill their
//! consumer before it can settle them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fractile_render::TileKey;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Acker, Channel, Connection, ConnectionStatus};
use opentelemetry::trace::SpanContext;

use crate::{InvalidJob, Priority, QueueError, RenderJob, Topology};
use crate::{connect, delivery_attempts, max_attempts};

/// Time allowed for settling one delivery with the broker.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one depth query.
const DEPTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for setting up a consumer (channel, topology, QoS, `basic.consume`).
const CONSUMER_SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// The consumer tag of worker `id` on `priority`'s queue: `{id}-interactive`, `{id}-bulk`
/// (what the management UI and `rabbitmqctl list_consumers` show).
pub fn consumer_tag(id: &str, priority: Priority) -> String {
    match priority {
        Priority::Interactive => format!("{id}-interactive"),
        Priority::Bulk => format!("{id}-bulk"),
    }
}

/// How the caller wants a delivery settled, once its work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Done (or nothing to do): remove it from the queue.
    Ack,
    /// This attempt failed because of the job (its render failed): try again later, or
    /// dead-letter it if this was the last attempt ([`Delivery::last_attempt`]).
    Retry,
    /// Not the job's fault (a dependency is down): try again later, whatever the attempt
    /// count. Only the broker's own limit ([`crate::BROKER_DELIVERY_LIMIT`], bulk) or the
    /// job's deadline (interactive: a worker drops an expired job) bounds it.
    Requeue,
    /// Give up now: to the dead-letter queue.
    DeadLetter,
}

/// What settling a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Removed from the queue.
    Acked,
    /// Back in the queue for another attempt.
    Requeued,
    /// In the dead-letter queue.
    DeadLettered,
}

/// A consuming connection (the worker's): auto-recovering, like [`connect`]'s. Cheap to
/// clone.
#[derive(Clone)]
pub struct Broker {
    connection: Arc<Connection>,
}

/// Whether a [`Broker`]'s connection is up, readable without holding the broker.
#[derive(Clone)]
pub struct BrokerStatus(ConnectionStatus);

impl BrokerStatus {
    /// True while connected (false while recovering or after it gave up).
    pub fn connected(&self) -> bool {
        self.0.connected()
    }
}

impl Broker {
    /// Connects to `url` (one attempt, at most `timeout`); `name` shows in the management UI.
    pub async fn connect(url: &str, name: &str, timeout: Duration) -> Result<Broker, QueueError> {
        Ok(Broker {
            connection: Arc::new(connect(url, name, timeout).await?),
        })
    }

    /// The connection's status.
    pub fn status(&self) -> BrokerStatus {
        BrokerStatus(self.connection.status().clone())
    }

    /// A consumer of `priority`'s queue on a channel of its own, holding at most `prefetch`
    /// unsettled deliveries, tagged [`consumer_tag`]`(worker_id, priority)`. Declares the
    /// topology first (idempotent), so a worker may start before any publisher.
    pub async fn consumer(
        &self,
        topology: &Topology,
        priority: Priority,
        prefetch: u16,
        worker_id: &str,
    ) -> Result<Consumer, QueueError> {
        let tag = consumer_tag(worker_id, priority);
        let setup = async {
            let channel = self.connection.create_channel().await?;
            topology.declare(&self.connection, &channel).await?;
            // Per-consumer prefetch (global = false: RabbitMQ 4.3 refuses global QoS).
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await?;
            let inner = channel
                .basic_consume(
                    topology.queue_for(priority).into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, inner))
        };
        let (channel, inner) = tokio::time::timeout(CONSUMER_SETUP_TIMEOUT, setup)
            .await
            .map_err(|_| QueueError::Timeout("consumer setup"))??;
        Ok(Consumer {
            channel,
            inner,
            priority,
            queue: Arc::from(topology.queue_for(priority)),
            tag,
            recovering: None,
        })
    }

    /// A handle that reads the topology's queue depths.
    pub fn depths(&self, topology: &Topology) -> DepthProbe {
        DepthProbe {
            connection: Arc::clone(&self.connection),
            topology: topology.clone(),
            channel: None,
        }
    }

    /// Closes the connection (at shutdown), waiting at most `timeout`. Unsettled deliveries
    /// go back to their queues.
    pub async fn close(&self, timeout: Duration) {
        let _ =
            tokio::time::timeout(timeout, self.connection.close(200, "shutting down".into())).await;
    }
}

type Recovery = Pin<Box<dyn Future<Output = Result<(), lapin::Error>> + Send>>;

/// The span context a message's trace headers name, if valid (long or short strings).
fn trace_context(headers: Option<&FieldTable>) -> Option<SpanContext> {
    let headers = headers?;
    let text = |name: &str| match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => std::str::from_utf8(s.as_bytes()).ok(),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str()),
        _ => None,
    };
    let [parent, state] = crate::TRACE_HEADERS;
    fractile_telemetry::context::extract(text(parent), text(state))
}

/// Deliveries of one queue, with manual settling.
pub struct Consumer {
    channel: Channel,
    inner: lapin::Consumer,
    priority: Priority,
    queue: Arc<str>,
    tag: String,
    /// A recovery being waited for, kept here so [`Consumer::next`] is cancel-safe.
    recovering: Option<Recovery>,
}

impl Consumer {
    /// The next delivery. Waits through a connection's recovery (lapin brings the channel
    /// and the consumer back); `Err` when it cannot recover; `Ok(None)` when the consumer
    /// ended (cancelled by the broker, e.g. its queue was deleted, or by [`Self::cancel`]).
    ///
    /// Cancel-safe: dropping the future loses no delivery and no recovery in progress.
    pub async fn next(&mut self) -> Result<Option<Delivery>, QueueError> {
        loop {
            if let Some(recovery) = self.recovering.as_mut() {
                let recovered = recovery.await;
                self.recovering = None;
                recovered?;
                tracing::info!(priority = ?self.priority, "consumer recovered");
            }
            match self.inner.next().await {
                Some(Ok(delivery)) => {
                    let queue = Arc::clone(&self.queue);
                    return Ok(Some(Delivery::new(delivery, self.priority, queue)));
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, priority = ?self.priority, "consumer error; waiting for the connection to recover");
                    let channel = self.channel.clone();
                    self.recovering =
                        Some(Box::pin(
                            async move { channel.wait_for_recovery(error).await },
                        ));
                }
                None => return Ok(None),
            }
        }
    }

    /// Asks the broker to stop sending deliveries (at shutdown); those already received can
    /// still be settled. (`&mut`: a consumer is `Send` but not `Sync`.)
    pub async fn cancel(&mut self) -> Result<(), QueueError> {
        tokio::time::timeout(
            SETTLE_TIMEOUT,
            self.channel
                .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default()),
        )
        .await
        .map_err(|_| QueueError::Timeout("basic.cancel"))??;
        Ok(())
    }

    /// The consumer tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

/// One delivery: the job (or why it is not one), its attempt count, and the one way to
/// settle it ([`Delivery::settle`]). Dropped unsettled, it goes back to the queue.
#[must_use = "a delivery is settled only by Delivery::settle"]
pub struct Delivery {
    acker: Option<Acker>,
    priority: Priority,
    queue: Arc<str>,
    attempts: u32,
    trace_context: Option<SpanContext>,
    job: Result<(RenderJob, TileKey), InvalidJob>,
}

impl Delivery {
    fn new(delivery: lapin::message::Delivery, priority: Priority, queue: Arc<str>) -> Self {
        let job = RenderJob::decode(&delivery.data).and_then(|job| job.key().map(|key| (job, key)));
        Delivery {
            attempts: delivery_attempts(&delivery.properties, delivery.redelivered),
            trace_context: trace_context(delivery.properties.headers().as_ref()),
            acker: Some(delivery.acker),
            priority,
            queue,
            job,
        }
    }

    /// The publisher's span, from the message's trace headers ([`crate::TRACE_HEADERS`]);
    /// `None` for a job published without them.
    pub fn trace_context(&self) -> Option<&SpanContext> {
        self.trace_context.as_ref()
    }

    /// The queue the delivery came from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The job and its validated tile, or why the message is not a valid job (it is then
    /// dead-lettered however it is settled).
    pub fn job(&self) -> Result<(&RenderJob, TileKey), &InvalidJob> {
        self.job.as_ref().map(|(job, key)| (job, *key))
    }

    /// Deliveries of this message so far, this one included (on the interactive queue, which
    /// counts none, 1 for a first delivery and 2 for any other: [`delivery_attempts`]).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether [`Settle::Retry`] would dead-letter this delivery rather than requeue it
    /// (its queue's [`max_attempts`]).
    pub fn last_attempt(&self) -> bool {
        self.attempts >= max_attempts(self.priority)
    }

    /// The queue it came from.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// What `settle` becomes under the protocol's rules (retry cap, poison).
    pub fn outcome(&self, settle: Settle) -> Settled {
        match settle {
            _ if self.job.is_err() => Settled::DeadLettered,
            Settle::Ack => Settled::Acked,
            Settle::Retry if self.last_attempt() => Settled::DeadLettered,
            Settle::Retry | Settle::Requeue => Settled::Requeued,
            Settle::DeadLetter => Settled::DeadLettered,
        }
    }

    /// Settles the delivery: call it after the work (for the worker: after the tile is
    /// stored and announced). Returns what was done ([`Delivery::outcome`]). An error means
    /// the broker did not hear it (the channel recovered or closed since the delivery):
    /// the broker then redelivers the job.
    pub async fn settle(mut self, settle: Settle) -> Result<Settled, QueueError> {
        let outcome = self.outcome(settle);
        let Some(acker) = self.acker.take() else {
            return Ok(outcome);
        };
        let sent = async {
            match outcome {
                Settled::Acked => acker.ack(BasicAckOptions::default()).await,
                // The job failed: `basic.reject`, which RabbitMQ 4.3 and later count in the
                // quorum queue's delivery count (and so in the attempts and the delivery
                // limit), as every earlier version counts any requeue.
                Settled::Requeued if settle == Settle::Retry => {
                    acker.reject(BasicRejectOptions { requeue: true }).await
                }
                // Not the job's fault: `basic.nack`, which RabbitMQ 4.3 and later do not
                // count (earlier versions count it like any requeue).
                Settled::Requeued => {
                    acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            multiple: false,
                        })
                        .await
                }
                Settled::DeadLettered => acker.reject(BasicRejectOptions { requeue: false }).await,
            }
        };
        let heard = tokio::time::timeout(SETTLE_TIMEOUT, sent)
            .await
            .map_err(|_| QueueError::Timeout("settling a delivery"))??;
        if heard {
            Ok(outcome)
        } else {
            // lapin refuses an acker whose channel closed since: the broker already put the
            // message back.
            Err(QueueError::NotConnected)
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        // Unsettled: hand it back now rather than hold a prefetch slot until the channel
        // closes. A rejection, so it counts as an attempt on every RabbitMQ version (4.3
        // and later count `basic.reject` but not `basic.nack`): a job that keeps crashing
        // its task still meets the retry cap and the broker's delivery limit.
        let Some(acker) = self.acker.take() else {
            return;
        };
        tracing::warn!(priority = ?self.priority, attempts = self.attempts, "a delivery was dropped unsettled; requeueing it");
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let requeue = acker.reject(BasicRejectOptions { requeue: true });
                let _ = tokio::time::timeout(SETTLE_TIMEOUT, requeue).await;
            });
        }
        // Without a runtime the process is ending: the channel closes and the broker
        // requeues the message then.
    }
}

/// Reads queue depths ([`Topology::ready_messages`]) on a channel of its own, replaced when
/// the broker closes it (a passive declare of a missing queue closes its channel).
pub struct DepthProbe {
    connection: Arc<Connection>,
    topology: Topology,
    channel: Option<Channel>,
}

impl DepthProbe {
    /// Messages ready in `queue`, within a short timeout.
    pub async fn ready(&mut self, queue: &str) -> Result<u32, QueueError> {
        let usable = self.channel.as_ref().is_some_and(|channel| {
            let status = channel.status();
            status.connected() || status.reconnecting() || status.initializing()
        });
        if !usable {
            self.channel = None;
        }
        let query = async {
            let channel = match &self.channel {
                Some(channel) => channel.clone(),
                None => {
                    let channel = self.connection.create_channel().await?;
                    self.channel = Some(channel.clone());
                    channel
                }
            };
            self.topology.ready_messages(&channel, queue).await
        };
        tokio::time::timeout(DEPTH_TIMEOUT, query)
            .await
            .map_err(|_| QueueError::Timeout("queue depth"))?
            .map_err(QueueError::from)
    }

    /// The topology whose queues it reads.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_tags_name_the_worker_and_the_queue() {
        assert_eq!(consumer_tag("w1", Priority::Interactive), "w1-interactive");
        assert_eq!(consumer_tag("w1", Priority::Bulk), "w1-bulk");
    }
}
