//! Test plumbing: finding the services and an isolated environment per test (the
//! in-process worker is test-support's).

use std::time::Duration;

use fractile_queue::{Publisher, RenderJob, Topology};
use fractile_render::{MaxZoom, Style, TileId, TileKey};
pub use fractile_test_support::eventually;
pub use fractile_test_support::worker::run_worker;
use fractile_test_support::{Cleanup, Services, services, unique_prefix};
use fractile_tile_store::{SeedStore, TileStore};
use fractile_worker::Config;
use lapin::Channel;

/// One test's private corner of Redis and RabbitMQ.
pub struct Env {
    pub redis: String,
    pub amqp: String,
    pub prefix: String,
    pub store: TileStore,
    /// Seed records (the same Redis here).
    pub seeds: SeedStore,
    pub publisher: Publisher,
    pub topology: Topology,
    /// A channel for inspecting queues.
    pub channel: Channel,
    _connection: lapin::Connection,
    /// Deletes the queues and keys when the test ends, however it ends.
    _cleanup: Cleanup,
}

impl Env {
    pub async fn new() -> Env {
        let services = services();
        let prefix = unique_prefix();
        let cleanup = Cleanup::new(&services, &prefix);
        let Services { redis, amqp } = services;
        let settings = fractile_test_support::store_settings(&redis, &prefix);
        let store = TileStore::new(&settings).expect("store");
        let seeds = SeedStore::new(&settings).expect("seed store");
        let topology = Topology::new(&prefix);
        let timeout = Duration::from_secs(10);
        let publisher = Publisher::connect(&amqp, "test", topology.clone(), timeout)
            .await
            .expect("publisher");
        let connection = fractile_queue::connect(&amqp, "test-inspect", timeout)
            .await
            .expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        Env {
            redis,
            amqp,
            prefix,
            store,
            seeds,
            publisher,
            topology,
            channel,
            _connection: connection,
            _cleanup: cleanup,
        }
    }

    /// Worker arguments for this environment, with `threads` render threads.
    pub fn worker_args(&self, threads: usize) -> Vec<String> {
        fractile_test_support::worker_args(&self.redis, &self.amqp, &self.prefix, threads)
    }

    /// Worker settings for this environment: 2 render threads.
    pub fn worker_config(&self) -> Config {
        <Config as clap::Parser>::parse_from(self.worker_args(2))
    }

    /// Publishes `job` and waits for the broker's confirm.
    pub async fn send(&self, job: &RenderJob) {
        let pending = self.publisher.publish(job).await.expect("published");
        pending.confirmed().await.expect("confirmed");
    }

    /// Consumers of `queue`, 0 if it does not exist (a passive declare on a channel of its
    /// own: a failed one closes its channel).
    pub async fn consumers(&self, queue: &str) -> u32 {
        let Ok(channel) = self._connection.create_channel().await else {
            return 0;
        };
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let count = channel
            .queue_declare(queue.into(), passive, Default::default())
            .await
            .map_or(0, |q| q.consumer_count());
        let _ = channel.close(200, "".into()).await;
        count
    }

    pub async fn ready(&self, queue: &str) -> u32 {
        self.topology
            .ready_messages(&self.channel, queue)
            .await
            .expect("queue exists")
    }

    /// Waits until a worker consumes from `queue`.
    pub async fn wait_consuming(&self, queue: &str) {
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        eventually("the worker consumes", Duration::from_secs(20), || async {
            self.channel
                .queue_declare(queue.into(), passive, Default::default())
                .await
                .is_ok_and(|q| q.consumer_count() > 0)
        })
        .await;
    }

    /// Deletes `queue` from under whoever consumes it.
    pub async fn delete_queue(&self, queue: &str) {
        self.channel
            .queue_delete(queue.into(), Default::default())
            .await
            .expect("deleted");
    }

    /// Deletes the queues and keys now (the guard also does it if the test fails first).
    pub async fn cleanup(self) {
        drop(self);
    }
}

pub fn key(z: u8, x: u32, y: u32) -> TileKey {
    TileKey {
        tile: TileId::new(z, x, y, MaxZoom::LIMIT).expect("valid"),
        style: Style::Classic,
    }
}
