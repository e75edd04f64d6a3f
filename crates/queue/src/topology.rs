//! Queue names and declarations.
//!
//! ```text
//! {prefix}render.interactive.v2  classic, durable, transient jobs ─┐ reject
//! {prefix}render.bulk            quorum, durable, persistent jobs ─┴──► {prefix}render.dlx (direct) ──► {prefix}render.dead.v2
//! ```
//!
//! The two lanes keep what each one's jobs are worth:
//!
//! - **bulk** (a seed's tiles): nobody waits for them, and a lost job is a tile a seed never
//!   finishes. A quorum queue, persistent messages: a confirm means the job is on disk (on a
//!   majority, in a cluster), and it outlives a broker restart. Bounded ([`BULK_MAX_LENGTH`]
//!   ready jobs, `x-overflow: reject-publish`): past it the broker refuses a publish with a
//!   nack instead of growing without bound, and the seed expansion that published it backs
//!   off and tries again. Dropping the oldest job (`drop-head`, the default) would lose a
//!   seed's tile silently.
//! - **interactive** (a request waits, until its render deadline, a few seconds): a classic
//!   queue and transient messages. The broker confirms and delivers such a job without
//!   touching the disk; a quorum queue first writes it to its log and syncs it, which on the
//!   load-test machine cost 1.7 ms of the 3.4 ms a queued miss added to a render at the median
//!   (`loadtests/reports/miss-latency/`). What that gives up: a job waiting in this queue
//!   when the broker stops is lost, where a quorum queue would hand it over after the
//!   restart. Either way its requester has given up by then (the deadline is seconds, a
//!   broker restart longer) and its client asks again, so the job is worth nothing after the
//!   restart. Classic queues do not count deliveries: a redelivered job only says it is not
//!   on its first, so interactive jobs get [`INTERACTIVE_MAX_ATTEMPTS`], and the broker's
//!   delivery limit does not apply (a job that kills its worker every time is dropped by the
//!   next worker once its deadline has passed). No bound either: its publishers wait for
//!   their jobs, and are few.
//!
//! The `.v2` in the interactive queue's name: the first one was a quorum queue, and a queue
//! cannot change type (the broker refuses the declaration), so the new one has a new name
//! and an upgrade needs no step; docs/upgrades.md, "Upgrading the interactive queue", says
//! what to do with the old one.
//!
//! The dead-letter queue is where jobs end that failed every attempt, and any message that
//! is not a job: nobody consumes it (an operator reads it, an alert counts it), so it is
//! bounded, [`DEAD_MAX_LENGTH`] messages and [`DEAD_MAX_BYTES`], the oldest dropped first
//! (`drop-head`): what an operator looks at is what is failing now, and a flood of poison
//! cannot fill the broker's disk. The first dead-letter queue, `render.dead`, was declared
//! without a bound, and a queue's arguments cannot change; so the bounded one has a new name,
//! `.v2`, takes the old one's binding on the dead-letter exchange, and the old one (with
//! whatever it holds) receives nothing more: [`Topology::declare`] moves the binding, so an
//! upgrade needs no step. docs/upgrades.md, "Upgrading the dead-letter queue", says how to
//! read and then delete the old one.
//!
//! Interactive and bulk work are separate queues rather than one priority queue: quorum
//! queues have no priorities before RabbitMQ 4.0, and separate queues let a worker hold a
//! small bulk prefetch while interactive jobs keep flowing. Dead-lettering and the bulk
//! queue's delivery limit are declared explicitly, so RabbitMQ 3.x (no default limit) and 4.x
//! (default limit 20, and messages *dropped* past it when no dead-letter exchange is set)
//! behave alike.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection};

use crate::Priority;

/// Attempts a worker makes at a bulk job whose render fails before dead-lettering it itself.
pub const MAX_ATTEMPTS: u32 = 3;

/// Attempts at an interactive job whose render fails: its queue (classic) tells only whether
/// a delivery is the first, so the count stops at two.
pub const INTERACTIVE_MAX_ATTEMPTS: u32 = 2;

/// The broker's own cap on deliveries of one message (it dead-letters past it). Higher than
/// [`MAX_ATTEMPTS`]: it only matters for a job that kills its worker every time (an OOM, a
/// crash), which never gets to count its own attempts.
pub const BROKER_DELIVERY_LIMIT: i64 = 10;

/// Most jobs ready in the bulk queue. Above the seed quota's default (200,000 unfinished
/// tiles, `FRACTILE_SEED_MAX_QUEUED_TILES`) with room for the duplicates a taken-over
/// expansion queues again, so a deployment within its quotas never meets it; at about
/// 200 bytes a job it also bounds what seeds can hold in the broker's memory. A constant,
/// not a setting: every binary declares the queue, and declarations with different
/// arguments are refused by the broker. An operator lowers it without a redeploy with a
/// policy (`max-length`: the lower of policy and argument applies).
pub const BULK_MAX_LENGTH: u32 = 250_000;

/// Most messages the dead-letter queue keeps; past it the oldest are dropped. Far above
/// what a healthy deployment puts there (the `DeadLetterQueueNotEmpty` alert fires on the
/// first), so it only bites on a flood of poison.
pub const DEAD_MAX_LENGTH: u32 = 10_000;

/// Most bytes of message bodies the dead-letter queue keeps; past it the oldest are dropped.
/// A job is about 200 bytes, but whatever reaches a render queue that is not a job ends
/// here whole, up to the broker's largest message (16 MiB by default since RabbitMQ 4.0,
/// 128 MiB before).
pub const DEAD_MAX_BYTES: u64 = 64 * 1024 * 1024;

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
    /// The unbounded dead-letter queue of earlier versions: unbound from the exchange when
    /// the topology is declared, left in place for an operator to read and delete.
    pub replaced_dead: String,
    /// Most jobs ready in the bulk queue; publishes past it are refused (nacked).
    pub bulk_max_length: u32,
    /// Most messages kept in the dead-letter queue, the oldest dropped past it.
    pub dead_max_length: u32,
}

impl Topology {
    /// Names under `prefix` (`fractile.` in deployments).
    pub fn new(prefix: &str) -> Self {
        Topology {
            interactive: format!("{prefix}render.interactive.v2"),
            bulk: format!("{prefix}render.bulk"),
            dead_letter_exchange: format!("{prefix}render.dlx"),
            dead: format!("{prefix}render.dead.v2"),
            replaced_dead: format!("{prefix}render.dead"),
            bulk_max_length: BULK_MAX_LENGTH,
            dead_max_length: DEAD_MAX_LENGTH,
        }
    }

    /// These names with another bound on the dead-letter queue (tests fill a small one).
    pub fn with_dead_max_length(mut self, messages: u32) -> Self {
        self.dead_max_length = messages;
        self
    }

    /// These names with another bound on the bulk queue (tests fill a small one).
    pub fn with_bulk_max_length(mut self, jobs: u32) -> Self {
        self.bulk_max_length = jobs;
        self
    }

    /// The queue for jobs of `priority`.
    pub fn queue_for(&self, priority: Priority) -> &str {
        match priority {
            Priority::Interactive => &self.interactive,
            Priority::Bulk => &self.bulk,
        }
    }

    /// Declares everything on `channel`, and moves the dead-letter binding off the replaced
    /// dead-letter queue (on a channel of its own from `connection`); idempotent (both
    /// binaries call it at start and when a job comes back unroutable, and lapin replays the
    /// declarations made on a channel it recovers). Arguments must stay identical between
    /// versions: the broker refuses a redeclaration with different ones
    /// (`PRECONDITION_FAILED`), which is logged with what to do (a bulk queue declared by a
    /// version before its bound must be deleted once; see docs/upgrades.md, "Upgrading the
    /// bulk queue").
    pub async fn declare(
        &self,
        connection: &Connection,
        channel: &Channel,
    ) -> Result<(), lapin::Error> {
        self.declare_on(channel).await?;
        // Most of the time there is no such queue (a new deployment, or one whose operator
        // deleted the old queue) or no such binding (moved already). RabbitMQ 3.10 answers
        // both with unbind-ok; a broker that answered with a channel error would close only
        // this throwaway channel, so `channel` lives on either way.
        let retiring = connection.create_channel().await?;
        let unbound = retiring
            .queue_unbind(
                self.replaced_dead.as_str().into(),
                self.dead_letter_exchange.as_str().into(),
                DEAD_ROUTING_KEY.into(),
                FieldTable::default(),
            )
            .await;
        if unbound.is_ok() {
            let _ = retiring.close(200, "unbound".into()).await;
        }
        Ok(())
    }

    async fn declare_on(&self, channel: &Channel) -> Result<(), lapin::Error> {
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
        let mut dead = quorum();
        for (name, value) in [
            (
                "x-max-length",
                AMQPValue::LongLongInt(i64::from(self.dead_max_length)),
            ),
            (
                "x-max-length-bytes",
                AMQPValue::LongLongInt(i64::try_from(DEAD_MAX_BYTES).unwrap_or(i64::MAX)),
            ),
            ("x-overflow", AMQPValue::LongString("drop-head".into())),
        ] {
            dead.insert(ShortString::from(name), value);
        }
        channel
            .queue_declare(self.dead.as_str().into(), durable, dead)
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
            let bulk = *queue == self.bulk;
            let mut args = if bulk { quorum() } else { classic() };
            args.insert(
                ShortString::from("x-dead-letter-exchange"),
                AMQPValue::LongString(self.dead_letter_exchange.as_str().into()),
            );
            args.insert(
                ShortString::from("x-dead-letter-routing-key"),
                AMQPValue::LongString(DEAD_ROUTING_KEY.into()),
            );
            if bulk {
                args.insert(
                    ShortString::from("x-delivery-limit"),
                    AMQPValue::LongLongInt(BROKER_DELIVERY_LIMIT),
                );
                args.insert(
                    ShortString::from("x-max-length"),
                    AMQPValue::LongLongInt(i64::from(self.bulk_max_length)),
                );
                args.insert(
                    ShortString::from("x-overflow"),
                    AMQPValue::LongString("reject-publish".into()),
                );
            }
            let declared = channel
                .queue_declare(queue.as_str().into(), durable, args)
                .await;
            if let Err(error) = &declared
                && is_precondition_failed(error)
            {
                tracing::error!(
                    %error,
                    queue = %queue,
                    "the queue exists with other arguments (declared by another version): \
                     delete it once (`rabbitmqctl delete_queue {queue}`, in its vhost) and \
                     restart; see ARCHITECTURE.md, \"Upgrading the bulk queue\""
                );
            }
            declared?;
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

    /// Deletes the queues, the replaced dead-letter queue included, and the exchange (tests
    /// clean up with it). Deleting a queue that does not exist succeeds.
    pub async fn delete(&self, channel: &Channel) -> Result<(), lapin::Error> {
        for queue in [
            &self.interactive,
            &self.bulk,
            &self.dead,
            &self.replaced_dead,
        ] {
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

/// Whether the broker refused a declaration whose arguments differ from the existing
/// queue's.
fn is_precondition_failed(error: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(e)
            if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
    )
}

fn quorum() -> FieldTable {
    queue_type("quorum")
}

fn classic() -> FieldTable {
    queue_type("classic")
}

fn queue_type(name: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(name.into()),
    );
    args
}

/// Whether jobs published to `queue` are persistent (delivery mode 2) or transient (1); see
/// the module's description of the two lanes.
pub fn persistent(queue: Priority) -> bool {
    match queue {
        Priority::Interactive => false,
        Priority::Bulk => true,
    }
}

/// The most attempts a job on `queue`'s queue gets at a failing render.
pub fn max_attempts(queue: Priority) -> u32 {
    match queue {
        Priority::Interactive => INTERACTIVE_MAX_ATTEMPTS,
        Priority::Bulk => MAX_ATTEMPTS,
    }
}

/// How many times this message has been delivered, this delivery included, as far as the
/// broker says: quorum queues count earlier deliveries in the `x-delivery-count` header;
/// classic queues only flag a delivery that is not the first (`redelivered`), which counts
/// here as the second.
pub fn delivery_attempts(properties: &lapin::BasicProperties, redelivered: bool) -> u32 {
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
    earlier.max(u32::from(redelivered)).saturating_add(1)
}
