//! Queue names and declarations.
//!
//! ```text
//! {prefix}render.interactive  quorum, durable ─┐ reject / delivery limit
//! {prefix}render.bulk         quorum, durable ─┴──► {prefix}render.dlx (direct) ──► {prefix}render.dead
//! ```
//!
//! Interactive and bulk work are separate queues rather than one priority queue: quorum
//! queues have no priorities before RabbitMQ 4.0, and separate queues let a worker hold a
//! small bulk prefetch while interactive jobs keep flowing. Dead-lettering and the delivery
//! limit are declared explicitly, so RabbitMQ 3.x (no default limit) and 4.x (default limit
//! 20, and messages *dropped* past it when no dead-letter exchange is set) behave alike.

use lapin::Channel;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};

use crate::Priority;

/// Attempts a worker makes at a job whose render fails before dead-lettering it itself.
pub const MAX_ATTEMPTS: u32 = 3;

/// The broker's own cap on deliveries of one message (it dead-letters past it). Higher than
/// [`MAX_ATTEMPTS`]: it only matters for a job that kills its worker every time (an OOM, a
/// crash), which never gets to count its own attempts.
pub const BROKER_DELIVERY_LIMIT: i64 = 10;

/// Routing key of dead-lettered jobs.
const DEAD_ROUTING_KEY: &str = "dead";

/// The names of one deployment's queues (tests use their own prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Queue of jobs a request waits for.
    pub interactive: String,
    /// Queue of seed jobs.
    pub bulk: String,
    /// Where rejected and over-delivered jobs go.
    pub dead_letter_exchange: String,
    /// The dead-letter queue.
    pub dead: String,
}

impl Topology {
    /// Names under `prefix` (`fractile.` in deployments).
    pub fn new(prefix: &str) -> Self {
        Topology {
            interactive: format!("{prefix}render.interactive"),
            bulk: format!("{prefix}render.bulk"),
            dead_letter_exchange: format!("{prefix}render.dlx"),
            dead: format!("{prefix}render.dead"),
        }
    }

    /// The queue for jobs of `priority`.
    pub fn queue_for(&self, priority: Priority) -> &str {
        match priority {
            Priority::Interactive => &self.interactive,
            Priority::Bulk => &self.bulk,
        }
    }

    /// Declares everything; idempotent (both binaries call it at start and lapin replays it
    /// after a reconnect). Arguments must stay identical between versions: the broker refuses
    /// a redeclaration with different ones.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.dead_letter_exchange.as_str().into(),
                lapin::ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(self.dead.as_str().into(), durable, quorum())
            .await?;
        channel
            .queue_bind(
                self.dead.as_str().into(),
                self.dead_letter_exchange.as_str().into(),
                DEAD_ROUTING_KEY.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        for queue in [&self.interactive, &self.bulk] {
            let mut args = quorum();
            args.insert(
                ShortString::from("x-dead-letter-exchange"),
                AMQPValue::LongString(self.dead_letter_exchange.as_str().into()),
            );
            args.insert(
                ShortString::from("x-dead-letter-routing-key"),
                AMQPValue::LongString(DEAD_ROUTING_KEY.into()),
            );
            args.insert(
                ShortString::from("x-delivery-limit"),
                AMQPValue::LongLongInt(BROKER_DELIVERY_LIMIT),
            );
            channel
                .queue_declare(queue.as_str().into(), durable, args)
                .await?;
        }
        Ok(())
    }
}

impl Topology {
    /// Messages ready in `queue` (a passive declare: fails if the queue does not exist).
    pub async fn ready_messages(
        &self,
        channel: &Channel,
        queue: &str,
    ) -> Result<u32, lapin::Error> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await?;
        Ok(q.message_count())
    }

    /// Deletes the queues and the exchange (tests clean up with it).
    pub async fn delete(&self, channel: &Channel) -> Result<(), lapin::Error> {
        for queue in [&self.interactive, &self.bulk, &self.dead] {
            channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await?;
        }
        channel
            .exchange_delete(
                self.dead_letter_exchange.as_str().into(),
                Default::default(),
            )
            .await
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

/// How many times this message has been delivered, this delivery included: quorum queues
/// count earlier deliveries in the `x-delivery-count` header.
pub fn delivery_attempts(properties: &lapin::BasicProperties) -> u32 {
    let earlier = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned())
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongUInt(n) => Some(n),
            AMQPValue::ShortInt(n) => u32::try_from(n).ok(),
            AMQPValue::ShortUInt(n) => Some(u32::from(n)),
            _ => None,
        })
        .unwrap_or(0);
    earlier.saturating_add(1)
}
