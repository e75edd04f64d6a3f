//! Test plumbing: test-support's isolated environment with a publisher, and what the
//! worker's tests do with its queues (the in-process worker is test-support's).

use std::time::Duration;

use fractile_queue::{Publisher, RenderJob};
use fractile_render::{MaxZoom, Style, TileId, TileKey};
use fractile_test_support::Isolated;
pub use fractile_test_support::eventually;
pub use fractile_test_support::worker::run_worker;

/// One test's isolated environment ([`Isolated`], whose fields and methods it derefs to),
/// with a publisher; the topology is left for the worker under test to declare.
pub struct Env {
    env: Isolated,
    pub publisher: Publisher,
}

impl std::ops::Deref for Env {
    type Target = Isolated;

    fn deref(&self) -> &Isolated {
        &self.env
    }
}

impl Env {
    pub async fn new() -> Env {
        let env = Isolated::new().await;
        let publisher = Publisher::connect(
            &env.amqp,
            "test",
            env.topology.clone(),
            Duration::from_secs(10),
        )
        .await
        .expect("publisher");
        Env { env, publisher }
    }

    /// Publishes `job` and waits for the broker's confirm.
    pub async fn send(&self, job: &RenderJob) {
        let pending = self.publisher.publish(job).await.expect("published");
        pending.confirmed().await.expect("confirmed");
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
        self.env.cleanup().await;
    }
}

pub fn key(z: u8, x: u32, y: u32) -> TileKey {
    TileKey {
        tile: TileId::new(z, x, y, MaxZoom::LIMIT).expect("valid"),
        style: Style::Classic,
    }
}
