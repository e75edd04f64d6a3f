//! Shared test plumbing: building apps and servers, driving requests (through `oneshot` or
//! raw sockets), occupying the render pool so that "concurrent" is a fact rather than a hope.

use std::num::NonZeroUsize;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Response;
use fractile_api::{AppState, Config, Server};
use fractile_render_pool::Lane;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Test settings: loopback on port 0, one render thread, everything else default.
pub fn config() -> Config {
    let mut config = Config::for_tests();
    config.process.render_threads = NonZeroUsize::new(1);
    config
}

/// State and traffic app for `config`.
pub fn app_with(config: &Config) -> (AppState, Router) {
    let state = AppState::new(config).expect("state builds");
    let app = fractile_api::app::app(state.clone());
    (state, app)
}

/// Sends one request through `app` without a socket.
pub use fractile_test_support::oneshot as send;
pub use fractile_test_support::{body_bytes, body_json, cache_layer, get};

/// The `error.code` of a JSON error response.
pub async fn error_code(response: Response<Body>) -> String {
    body_json(response).await["error"]["code"]
        .as_str()
        .expect("error.code is a string")
        .to_owned()
}

/// Waits (bounded) until `condition` holds.
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Holds every render thread of `state` busy until dropped (or `release`d), so renders
/// queued meanwhile wait. Returns once the threads are really occupied.
pub struct RenderGate {
    release: Vec<mpsc::Sender<()>>,
    // The pool skips work nobody waits for, so the gate jobs' receivers must stay alive.
    _results: Vec<tokio::sync::oneshot::Receiver<()>>,
}

impl RenderGate {
    pub async fn close(state: &AppState, threads: usize) -> Self {
        let pool = &state.pool;
        let (mut release, mut results) = (Vec::new(), Vec::new());
        let far = Instant::now() + Duration::from_secs(60);
        for _ in 0..threads {
            // With a zero-length queue a job is only taken while a thread waits in recv, and
            // a fresh thread may not be there yet: retry briefly.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (tx, rx) = mpsc::channel::<()>();
                if let Ok(result) = pool.try_spawn(Lane::Interactive, far, move |_| {
                    let _ = rx.recv();
                }) {
                    release.push(tx);
                    results.push(result);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the render pool never accepted the gate job"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        eventually("the gate jobs occupy the render threads", || {
            pool.queued() == 0
        })
        .await;
        RenderGate {
            release,
            _results: results,
        }
    }

    pub fn open(self) {
        drop(self.release);
    }
}

/// A started server: its addresses, state, a trigger for shutdown and the run task.
pub struct Running {
    pub base: String,
    pub admin: String,
    pub state: AppState,
    pub stop: oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_server(config: fractile_api::Config) -> Running {
    let server = Server::bind(config).await.expect("binds");
    let base = format!("http://{}", server.traffic_addr());
    let admin = format!("http://{}", server.admin_addr());
    let state = server.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Running {
        base,
        admin,
        state,
        stop,
        task,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Reads one HTTP/1.1 response (headers plus a Content-Length body) off `stream`.
pub async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let (status, _head, body) = read_response_head(stream).await;
    (status, body)
}

/// As [`read_response`], with the head (status line and headers) too.
pub async fn read_response_head(stream: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("response arrives")
            .expect("read");
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        // Offsets in bytes: a binary body (a PNG) is not UTF-8.
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let status = head[9..12].parse().expect("status code");
                return (
                    status,
                    head,
                    String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned(),
                );
            }
        }
    }
}
