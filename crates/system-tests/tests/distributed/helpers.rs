//! Test plumbing: a cluster per test on test-support's isolated environment, api apps
//! in-process (workers run through test-support's helper).

use std::num::NonZeroUsize;
use std::time::Duration;

use axum::Router;
use fractile_api::{AppState, Config};
use fractile_test_support::Isolated;
pub use fractile_test_support::eventually;
#[allow(unused_imports)] // each test binary uses some of them
pub use fractile_test_support::worker::{run_worker, start_worker};
use tracing_subscriber::util::SubscriberInitExt;

/// The seed routes' bearer token in these tests.
pub const SEED_TOKEN: &str = "seed-token-for-tests-0123456789";

/// A seed route request with the operator's token.
pub fn seed_call(
    method: axum::http::Method,
    uri: &str,
    body: &str,
) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {SEED_TOKEN}"),
        )
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(body.to_owned()))
        .expect("valid request")
}

/// One test's isolated environment ([`Isolated`], whose fields and methods it derefs to),
/// its topology declared, with api replicas and workers on it.
pub struct Cluster {
    env: Isolated,
}

impl std::ops::Deref for Cluster {
    type Target = Isolated;

    fn deref(&self) -> &Isolated {
        &self.env
    }
}

impl Cluster {
    pub async fn new() -> Cluster {
        let env = Isolated::new().await;
        env.declare_topology().await;
        Cluster { env }
    }

    /// Api settings for this cluster: Redis and the queue, one render thread, the seed
    /// routes open to [`SEED_TOKEN`].
    pub fn api_config(&self) -> Config {
        let mut config = Config::for_tests();
        config.seed_token = Some(
            fractile_settings::Secret::new(SEED_TOKEN, fractile_api::config::SEED_TOKEN_MIN_BYTES)
                .expect("valid token"),
        );
        config.redis_url = Some(self.redis.as_str().into());
        config.redis.tile_mac_key = Some(fractile_test_support::tile_mac_key());
        config.amqp_url = Some(self.amqp.as_str().into());
        config.redis.key_prefix = self.prefix.clone();
        config.queue.queue_prefix = self.prefix.clone();
        config.process.render_threads = NonZeroUsize::new(1);
        config
    }

    /// An api replica (its own state: L1, pools, connections), ready to take requests.
    pub async fn api(&self, config: &Config) -> (AppState, Router) {
        let state = AppState::connect(config).await.expect("api connects");
        if let Some(backends) = state.backends.as_ref() {
            assert!(
                backends.ready.wait_connected(Duration::from_secs(5)).await,
                "ready listener subscribes"
            );
            if let Some(link) = &backends.publisher {
                assert!(
                    link.wait_connected(Duration::from_secs(10)).await,
                    "the publisher connects"
                );
            }
        }
        let app = fractile_api::app::app(state.clone());
        (state, app)
    }

    /// Deletes the queues and keys now (the guard also does it if the test fails first).
    pub async fn cleanup(self) {
        self.env.cleanup().await;
    }
}

/// Sends one request through `app` without a socket.
pub use fractile_test_support::oneshot as send;
pub use fractile_test_support::{body_json, cache_layer, get, header};

/// Log lines written while the guard lives, on this thread (a current-thread runtime runs
/// the handlers here).
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }

    /// Captures this thread's log lines until the guard is dropped.
    pub fn start(&self) -> impl Drop {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .set_default()
    }
}
