//! One test's own corner of the shared Redis and RabbitMQ: a [`unique_prefix`] for its keys
//! and queue names, the [`Cleanup`] guard that deletes everything under it, and
//! [`Isolated`], the environment the worker's and the system tests build on (stores, the
//! topology, a connection to inspect the broker).

use std::time::Duration;

use fractile_queue::Topology;
use fractile_tile_store::{SeedStore, TileStore};
use lapin::options::QueueDeclareOptions;
use lapin::{Channel, Connection};

use crate::services::{Services, services};
use crate::settings::{store_settings, worker_args};

/// How long [`Isolated::new`] waits for RabbitMQ.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One test's private Redis prefix and queue names on the shared services, with handles to
/// use and inspect them; everything under the prefix is deleted when it is dropped, however
/// the test ends. The topology is not declared: a test declares it
/// ([`Isolated::declare_topology`]) or leaves it to the worker under test.
pub struct Isolated {
    /// The Redis URL.
    pub redis: String,
    /// The RabbitMQ URL.
    pub amqp: String,
    /// The test's key and queue prefix ([`unique_prefix`]).
    pub prefix: String,
    /// The tile store under the prefix, with the tests' MAC key.
    pub store: TileStore,
    /// Seed records under the prefix (the same Redis here; apart in deployments).
    pub seeds: SeedStore,
    /// The queue names under the prefix.
    pub topology: Topology,
    /// A channel for inspecting (and disturbing) the queues.
    pub channel: Channel,
    connection: Connection,
    /// Deletes the queues and keys when the test ends, however it ends.
    _cleanup: Cleanup,
}

impl Isolated {
    /// A fresh prefix on the services (see [`services`]: only for ignored tests), its stores
    /// and a connection of its own to RabbitMQ.
    pub async fn new() -> Isolated {
        let services = services();
        let prefix = unique_prefix();
        let cleanup = Cleanup::new(&services, &prefix);
        let Services { redis, amqp } = services;
        let settings = store_settings(&redis, &prefix);
        let store = TileStore::new(&settings).expect("store");
        let seeds = SeedStore::new(&settings).expect("seed store");
        let topology = Topology::new(&prefix);
        let connection = fractile_queue::connect(&amqp, "test-inspect", CONNECT_TIMEOUT)
            .await
            .expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        Isolated {
            redis,
            amqp,
            prefix,
            store,
            seeds,
            topology,
            channel,
            connection,
            _cleanup: cleanup,
        }
    }

    /// Declares the topology's queues and exchanges, as the api and the worker do.
    pub async fn declare_topology(&self) {
        self.topology
            .declare(&self.connection, &self.channel)
            .await
            .expect("topology");
    }

    /// Command-line arguments of a worker on this environment, with `threads` render
    /// threads (see [`worker_args`]).
    pub fn worker_args(&self, threads: usize) -> Vec<String> {
        worker_args(&self.redis, &self.amqp, &self.prefix, threads)
    }

    /// Whether `queue` exists.
    pub async fn queue_exists(&self, queue: &str) -> bool {
        self.passive_declare(queue).await.is_some()
    }

    /// Consumers of `queue`, 0 if it does not exist.
    pub async fn consumers(&self, queue: &str) -> u32 {
        self.passive_declare(queue)
            .await
            .map_or(0, |q| q.consumer_count())
    }

    /// `queue` as a passive declare finds it, on a channel of its own (a failed one closes
    /// its channel); `None` if it does not exist.
    async fn passive_declare(&self, queue: &str) -> Option<lapin::Queue> {
        let channel = self.connection.create_channel().await.ok()?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let found = channel
            .queue_declare(queue.into(), passive, Default::default())
            .await
            .ok();
        let _ = channel.close(200, "".into()).await;
        found
    }

    /// Deletes the queues and keys now (the guard also does it if the test fails first).
    pub async fn cleanup(self) {
        drop(self);
    }
}

/// A prefix no other test uses, for key and queue names: `test-<uuid>.`.
pub fn unique_prefix() -> String {
    format!("test-{}.", uuid::Uuid::new_v4().simple())
}

/// Deletes one test's queues, dead-letter exchange and Redis keys (everything under its
/// prefix) when dropped: at the end of the test, and also when it fails half-way. Works on
/// connections of its own, so it cleans up even after the test's were closed under it.
pub struct Cleanup {
    amqp: String,
    redis: String,
    prefix: String,
}

impl Cleanup {
    /// A guard for everything under `prefix` on these services.
    pub fn new(services: &Services, prefix: &str) -> Cleanup {
        Cleanup {
            amqp: services.amqp.clone(),
            redis: services.redis.clone(),
            prefix: prefix.to_owned(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (amqp, redis, prefix) = (self.amqp.clone(), self.redis.clone(), self.prefix.clone());
        // A thread with a runtime of its own: Drop cannot await, and the test's runtime may
        // be the one unwinding.
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let limit = Duration::from_secs(10);
                let work = async {
                    let topology = fractile_queue::Topology::new(&prefix);
                    let connection =
                        fractile_queue::connect(&amqp, "test-cleanup", Duration::from_secs(5))
                            .await
                            .map_err(|e| e.to_string())?;
                    let channel = connection
                        .create_channel()
                        .await
                        .map_err(|e| e.to_string())?;
                    topology.delete(&channel).await.map_err(|e| e.to_string())?;
                    let _ = connection.close(200, "test cleanup".into()).await;
                    let settings = fractile_tile_store::StoreSettings::new(redis, prefix.clone());
                    fractile_tile_store::TileStore::new(&settings)
                        .map_err(|e| e.to_string())?
                        .delete_prefix()
                        .await
                        .map_err(|e| e.to_string())
                };
                match tokio::time::timeout(limit, work).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => eprintln!("cleaning up {prefix} failed: {error}"),
                    Err(_) => eprintln!("cleaning up {prefix} timed out"),
                }
            });
        });
        let _ = cleaned.join();
    }
}
