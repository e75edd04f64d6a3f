//! Test plumbing: finding the services, an isolated environment per test, and a worker
//! running in-process.

use std::time::{Duration, Instant};

use fractile_queue::lapin::Channel;
use fractile_queue::{Publisher, Topology};
use fractile_render::{MaxZoom, Style, TileId, TileKey};
use fractile_tile_store::{StoreSettings, TileStore};
use fractile_worker::{Config, Worker};
use tokio::sync::oneshot;

/// Redis and RabbitMQ URLs, or `None` (with the reason printed) when they are not running.
/// Under `CI` a missing service fails the test instead: CI must never skip these.
pub fn services() -> Option<(String, String)> {
    let redis = std::env::var("FRACTILE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let amqp = std::env::var("FRACTILE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    for (name, addr) in [("redis", "127.0.0.1:6379"), ("rabbitmq", "127.0.0.1:5672")] {
        let addr = addr.parse().expect("valid address");
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            assert!(std::env::var_os("CI").is_none(), "{name} is not reachable at {addr}, and CI is set");
            eprintln!("skipping: {name} is not reachable at {addr} (start it, or set CI to make this fail)");
            return None;
        }
    }
    Some((redis, amqp))
}

/// One test's private corner of Redis and RabbitMQ.
pub struct Env {
    pub redis: String,
    pub amqp: String,
    pub prefix: String,
    pub store: TileStore,
    pub publisher: Publisher,
    pub topology: Topology,
    /// A channel for inspecting queues.
    pub channel: Channel,
    _connection: fractile_queue::lapin::Connection,
}

impl Env {
    pub async fn new() -> Option<Env> {
        let (redis, amqp) = services()?;
        let prefix = format!("test-{}.", uuid::Uuid::new_v4().simple());
        let store = TileStore::new(&StoreSettings::new(redis.clone(), prefix.clone())).expect("store");
        let topology = Topology::new(&prefix);
        let timeout = Duration::from_secs(10);
        let publisher = Publisher::connect(&amqp, "test", topology.clone(), timeout).await.expect("publisher");
        let connection = fractile_queue::connect(&amqp, "test-inspect", timeout).await.expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        Some(Env { redis, amqp, prefix, store, publisher, topology, channel, _connection: connection })
    }

    /// Worker settings for this environment: 2 render threads, admin on an ephemeral port.
    pub fn worker_args(&self) -> Vec<String> {
        [
            "fractile-worker",
            "--amqp-url",
            &self.amqp,
            "--redis-url",
            &self.redis,
            "--queue-prefix",
            &self.prefix,
            "--key-prefix",
            &self.prefix,
            "--admin-listen",
            "127.0.0.1:0",
            "--render-threads",
            "2",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    pub fn worker_config(&self) -> Config {
        <Config as clap::Parser>::parse_from(self.worker_args())
    }

    pub async fn ready(&self, queue: &str) -> u32 {
        self.topology.ready_messages(&self.channel, queue).await.expect("queue exists")
    }

    pub async fn cleanup(self) {
        let _ = self.topology.delete(&self.channel).await;
        let _ = self.store.delete_prefix().await;
    }
}

/// A worker running in this process until `stop` is sent.
pub struct Running {
    pub stop: oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub fn start(worker: Worker) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("worker stops")
            .expect("task")
            .expect("clean exit");
    }
}

pub fn key(z: u8, x: u32, y: u32) -> TileKey {
    TileKey { tile: TileId::new(z, x, y, MaxZoom::LIMIT).expect("valid"), style: Style::Classic }
}

/// Polls `check` until it returns true, for at most `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
