//! The consume half of the render-queue protocol against the real RabbitMQ, without a
//! worker: a delivery leaves its queue only when settled, comes back when dropped unsettled
//! or when its consumer goes, is retried up to the cap and then dead-lettered, and poison is
//! dead-lettered however it is settled; depths are read through the topology's query.
//! Every test has its own queue names and deletes them.

use std::time::{Duration, SystemTime};

use fractile_queue::{
    Broker, Consumer, Delivery, INTERACTIVE_MAX_ATTEMPTS, MAX_ATTEMPTS, Priority, Publisher,
    RenderJob, Settle, Settled, Topology,
};
use fractile_render::{MaxZoom, Style, TileId, TileKey};
use fractile_test_support::{Cleanup, eventually, rabbitmqctl, services, unique_prefix};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};

const TIMEOUT: Duration = Duration::from_secs(10);

/// One test's queues, a publisher and a consuming connection.
struct Env {
    amqp: String,
    topology: Topology,
    publisher: Publisher,
    broker: Broker,
    _cleanup: Cleanup,
}

impl Env {
    async fn new() -> Env {
        let prefix = unique_prefix();
        Env::with(Topology::new(&prefix), &prefix).await
    }

    /// An environment whose queues are `topology`'s, under `prefix` (deleted at the end).
    async fn with(topology: Topology, prefix: &str) -> Env {
        let services = services();
        let cleanup = Cleanup::new(&services, prefix);
        let publisher = Publisher::connect(&services.amqp, "test", topology.clone(), TIMEOUT)
            .await
            .expect("publisher");
        let broker = Broker::connect(&services.amqp, "test-consumer", TIMEOUT)
            .await
            .expect("broker");
        Env {
            amqp: services.amqp,
            topology,
            publisher,
            broker,
            _cleanup: cleanup,
        }
    }

    async fn consumer(&self, broker: &Broker, priority: Priority) -> Consumer {
        broker
            .consumer(&self.topology, priority, 1, "test-worker")
            .await
            .expect("consumer")
    }

    async fn send(&self, job: &RenderJob) {
        let pending = self.publisher.publish(job).await.expect("published");
        pending.confirmed().await.expect("confirmed");
    }

    /// Deletes `queue` from under its consumers (on a connection of its own: lapin
    /// through [`fractile_queue::connect`], the one door for tests that disturb the broker).
    async fn delete_queue(&self, queue: &str) {
        let raw = fractile_queue::connect(&self.amqp, "test-raw", TIMEOUT)
            .await
            .expect("connect");
        let channel = raw.create_channel().await.expect("channel");
        channel
            .queue_delete(queue.into(), Default::default())
            .await
            .expect("deleted");
        let _ = raw.close(200, "done".into()).await;
    }

    /// Messages ready in `queue`, through the probe the worker polls with.
    async fn ready(&self, queue: &str) -> u32 {
        self.broker
            .depths(&self.topology)
            .ready(queue)
            .await
            .expect("depth")
    }
}

async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(TIMEOUT, consumer.next())
        .await
        .expect("a delivery within 10 s")
        .expect("the consumer is healthy")
        .expect("the consumer has not ended")
}

fn key(z: u8, x: u32, y: u32) -> TileKey {
    TileKey {
        tile: TileId::new(z, x, y, MaxZoom::LIMIT).expect("valid"),
        style: Style::Classic,
    }
}

fn interactive(tile: &TileKey) -> RenderJob {
    RenderJob::interactive(tile, SystemTime::now() + Duration::from_secs(60))
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_delivery_leaves_its_queue_only_when_settled() {
    let env = Env::new().await;
    let tile = key(3, 2, 1);
    env.send(&interactive(&tile)).await;

    // A consumer that holds the delivery unsettled and then goes away: the job is back.
    let first = Broker::connect(&env.amqp, "test-doomed", TIMEOUT)
        .await
        .expect("broker");
    let mut doomed = env.consumer(&first, Priority::Interactive).await;
    let held = next(&mut doomed).await;
    let (job, held_key) = held.job().expect("a valid job");
    assert_eq!(held_key, tile);
    assert_eq!(job.priority, Priority::Interactive);
    assert_eq!(held.attempts(), 1);
    assert_eq!(
        env.ready(&env.topology.interactive).await,
        0,
        "held, unacked"
    );
    first.close(TIMEOUT).await;
    eventually(
        "the unsettled job is back in its queue",
        TIMEOUT,
        || async { env.ready(&env.topology.interactive).await == 1 },
    )
    .await;
    drop(held);

    // Settled with an ack: gone for good, also once its consumer goes.
    let second = Broker::connect(&env.amqp, "test-acker", TIMEOUT)
        .await
        .expect("broker");
    let mut consumer = env.consumer(&second, Priority::Interactive).await;
    let again = next(&mut consumer).await;
    assert_eq!(again.job().expect("valid").1, tile);
    assert_eq!(again.attempts(), 2, "the broker counted the first delivery");
    assert_eq!(
        again.settle(Settle::Ack).await.expect("settled"),
        Settled::Acked
    );
    second.close(TIMEOUT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.ready(&env.topology.interactive).await, 0);
    assert_eq!(env.ready(&env.topology.dead).await, 0);
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_delivery_dropped_unsettled_is_requeued_at_once() {
    let env = Env::new().await;
    let tile = key(4, 1, 1);
    env.send(&RenderJob::bulk(&tile, "seed")).await;
    // Prefetch 1: a delivery that stayed unacked would hold the consumer's only slot, and
    // nothing would come after it.
    let mut consumer = env.consumer(&env.broker, Priority::Bulk).await;
    let first = next(&mut consumer).await;
    assert_eq!(first.attempts(), 1);
    drop(first);
    let again = next(&mut consumer).await;
    assert_eq!(again.job().expect("valid").1, tile);
    assert_eq!(
        again.attempts(),
        2,
        "the dropped delivery counted as an attempt"
    );
    again.settle(Settle::Ack).await.expect("settled");
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn retry_requeues_until_the_cap_then_dead_letters() {
    let env = Env::new().await;
    let lanes = [
        (
            Priority::Bulk,
            RenderJob::bulk(&key(2, 1, 0), "seed"),
            MAX_ATTEMPTS,
        ),
        (
            Priority::Interactive,
            interactive(&key(2, 1, 1)),
            INTERACTIVE_MAX_ATTEMPTS,
        ),
    ];
    for (dead, (priority, job, cap)) in (1..).zip(lanes) {
        env.send(&job).await;
        let mut consumer = env.consumer(&env.broker, priority).await;
        for attempt in 1..=cap {
            let delivery = next(&mut consumer).await;
            assert_eq!(delivery.attempts(), attempt, "{priority:?}");
            let last = attempt == cap;
            assert_eq!(delivery.last_attempt(), last, "{priority:?}");
            let expected = if last {
                Settled::DeadLettered
            } else {
                Settled::Requeued
            };
            assert_eq!(
                delivery.settle(Settle::Retry).await.expect("settled"),
                expected
            );
        }
        eventually("the job is dead-lettered", TIMEOUT, || async {
            env.ready(&env.topology.dead).await == dead
        })
        .await;
        assert_eq!(env.ready(env.topology.queue_for(priority)).await, 0);
    }
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn interactive_jobs_are_transient_and_bulk_jobs_durable() {
    let env = Env::new().await;
    env.send(&interactive(&key(1, 0, 0))).await;
    env.send(&RenderJob::bulk(&key(1, 0, 1), "seed")).await;
    let listed = rabbitmqctl(&[
        "list_queues",
        "--quiet",
        "--no-table-headers",
        "name",
        "type",
        "durable",
    ]);
    for (queue, kind) in [
        (&env.topology.interactive, "classic"),
        (&env.topology.bulk, "quorum"),
    ] {
        let line = listed
            .lines()
            .find(|l| l.split('\t').next() == Some(queue.as_str()))
            .unwrap_or_else(|| panic!("{queue} not in {listed}"));
        assert_eq!(
            line,
            format!("{queue}\t{kind}\ttrue"),
            "a durable {kind} queue"
        );
    }
    // What the broker holds: a transient interactive job, a persistent bulk one.
    let raw = fractile_queue::connect(&env.amqp, "test-raw", TIMEOUT)
        .await
        .expect("connect");
    let channel = raw.create_channel().await.expect("channel");
    for (queue, mode) in [(&env.topology.interactive, 1), (&env.topology.bulk, 2)] {
        let message = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
            .expect("the job");
        assert_eq!(
            *message.delivery.properties.delivery_mode(),
            Some(mode),
            "{queue}"
        );
    }
    let _ = raw.close(200, "done".into()).await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn requeue_ignores_the_cap_for_failures_that_are_not_the_jobs() {
    let env = Env::new().await;
    let lanes = [
        (Priority::Bulk, RenderJob::bulk(&key(2, 0, 0), "seed")),
        (Priority::Interactive, interactive(&key(2, 0, 1))),
    ];
    for (priority, job) in lanes {
        env.send(&job).await;
        let mut consumer = env.consumer(&env.broker, priority).await;
        for attempt in 1..=MAX_ATTEMPTS + 1 {
            let delivery = next(&mut consumer).await;
            // The interactive (classic) queue tells only a first delivery from the others.
            let counted = match priority {
                Priority::Bulk => attempt,
                Priority::Interactive => attempt.min(2),
            };
            assert_eq!(delivery.attempts(), counted, "{priority:?}");
            assert_eq!(
                delivery.settle(Settle::Requeue).await.expect("settled"),
                Settled::Requeued
            );
        }
        let delivery = next(&mut consumer).await;
        assert!(
            delivery.last_attempt(),
            "{priority:?}: past its cap, still here"
        );
        delivery.settle(Settle::Ack).await.expect("settled");
    }
    assert_eq!(env.ready(&env.topology.dead).await, 0);
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn poison_is_dead_lettered_however_it_is_settled() {
    let env = Env::new().await;
    env.publisher
        .publish_raw(Priority::Interactive, b"{not json")
        .await
        .expect("sent")
        .confirmed()
        .await
        .expect("confirmed");
    let mut consumer = env.consumer(&env.broker, Priority::Interactive).await;
    let delivery = next(&mut consumer).await;
    assert!(delivery.job().is_err(), "not a job");
    assert_eq!(
        delivery.settle(Settle::Ack).await.expect("settled"),
        Settled::DeadLettered,
        "an ack would lose it without a trace"
    );
    eventually("the poison is dead-lettered", TIMEOUT, || async {
        env.ready(&env.topology.dead).await == 1
    })
    .await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_consumer_ends_when_its_queue_is_deleted_or_it_is_cancelled() {
    let env = Env::new().await;
    let mut interactive = env.consumer(&env.broker, Priority::Interactive).await;
    let mut bulk = env.consumer(&env.broker, Priority::Bulk).await;
    assert_eq!(bulk.tag(), "test-worker-bulk");
    bulk.cancel().await.expect("cancelled");
    let ended = tokio::time::timeout(TIMEOUT, bulk.next())
        .await
        .expect("in time");
    assert!(matches!(ended, Ok(None)), "cancelled: ended");

    env.delete_queue(&env.topology.interactive).await;
    let ended = tokio::time::timeout(TIMEOUT, interactive.next())
        .await
        .expect("in time");
    assert!(matches!(ended, Ok(None)), "queue deleted: ended");
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn depths_are_read_after_a_missing_queue_closed_the_channel() {
    let env = Env::new().await;
    for x in 0..3 {
        env.send(&RenderJob::bulk(&key(2, x, 0), "seed")).await;
    }
    let mut probe = env.broker.depths(&env.topology);
    assert_eq!(probe.ready(&env.topology.bulk).await.expect("depth"), 3);

    env.delete_queue(&env.topology.dead).await;
    assert!(
        probe.ready(&env.topology.dead).await.is_err(),
        "a missing queue is an error, not 0"
    );
    // The broker closed the probe's channel with that error; the next read opens another.
    assert_eq!(probe.ready(&env.topology.bulk).await.expect("depth"), 3);
}

/// Dead-letters each of `bodies` (none is a job: poison is dead-lettered however it is
/// settled).
async fn dead_letter(env: &Env, bodies: &[&[u8]]) {
    let mut consumer = env.consumer(&env.broker, Priority::Interactive).await;
    for body in bodies {
        env.publisher
            .publish_raw(Priority::Interactive, body)
            .await
            .expect("sent")
            .confirmed()
            .await
            .expect("confirmed");
        let delivery = next(&mut consumer).await;
        assert_eq!(
            delivery.settle(Settle::Ack).await.expect("settled"),
            Settled::DeadLettered
        );
    }
}

/// Bodies of the messages in `queue`, oldest first, taken out of it.
async fn drain(env: &Env, queue: &str) -> Vec<Vec<u8>> {
    let raw = fractile_queue::connect(&env.amqp, "test-raw", TIMEOUT)
        .await
        .expect("connect");
    let channel = raw.create_channel().await.expect("channel");
    let mut bodies = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        bodies.push(message.delivery.data.clone());
    }
    let _ = raw.close(200, "done".into()).await;
    bodies
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn the_dead_letter_queue_is_bounded_and_keeps_the_newest() {
    let prefix = unique_prefix();
    let env = Env::with(Topology::new(&prefix).with_dead_max_length(3), &prefix).await;
    dead_letter(
        &env,
        &[
            b"poison-0",
            b"poison-1",
            b"poison-2",
            b"poison-3",
            b"poison-4",
        ],
    )
    .await;
    eventually("the queue holds its bound", TIMEOUT, || async {
        env.ready(&env.topology.dead).await == 3
    })
    .await;
    // Nobody consumes the dead letters: past the bound the oldest make room.
    assert_eq!(
        drain(&env, &env.topology.dead).await,
        [
            b"poison-2".to_vec(),
            b"poison-3".to_vec(),
            b"poison-4".to_vec()
        ]
    );
}

/// A broker set up by a version before the bound has an unbounded `render.dead`, bound to the
/// dead-letter exchange, maybe holding dead letters. A queue's arguments cannot change (the
/// broker refuses the declaration), so the bounded queue has a new name and takes the binding
/// over; the old queue keeps what it holds, for an operator to read, and receives nothing new.
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn an_unbounded_dead_letter_queue_of_an_earlier_version_is_replaced_without_a_step() {
    let prefix = unique_prefix();
    let topology = Topology::new(&prefix);
    // What the earlier version declared, and one dead letter in it.
    let raw = fractile_queue::connect(&services().amqp, "test-earlier", TIMEOUT)
        .await
        .expect("connect");
    let channel = raw.create_channel().await.expect("channel");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            topology.dead_letter_exchange.as_str().into(),
            lapin::ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    let mut quorum = FieldTable::default();
    quorum.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString("quorum".into()),
    );
    let queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(topology.replaced_dead.as_str().into(), queue, quorum)
        .await
        .expect("the earlier dead-letter queue");
    channel
        .queue_bind(
            topology.replaced_dead.as_str().into(),
            topology.dead_letter_exchange.as_str().into(),
            "dead".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("bound");
    channel
        .basic_publish(
            topology.dead_letter_exchange.as_str().into(),
            "dead".into(),
            BasicPublishOptions::default(),
            b"an earlier dead letter",
            Default::default(),
        )
        .await
        .expect("published");
    let _ = raw.close(200, "done".into()).await;

    // This version starts: it declares its topology, twice (two processes), and work goes on.
    let env = Env::with(topology, &prefix).await;
    let again = Publisher::connect(&env.amqp, "test-second", env.topology.clone(), TIMEOUT)
        .await
        .expect("declaring again is no error");
    drop(again);
    dead_letter(&env, &[b"a new dead letter"]).await;
    eventually(
        "the new dead letter is in the new queue",
        TIMEOUT,
        || async { env.ready(&env.topology.dead).await == 1 },
    )
    .await;
    assert_eq!(
        drain(&env, &env.topology.replaced_dead).await,
        [b"an earlier dead letter".to_vec()],
        "the old queue keeps what it held and gets nothing new"
    );
    assert_eq!(
        drain(&env, &env.topology.dead).await,
        [b"a new dead letter".to_vec()]
    );
}
