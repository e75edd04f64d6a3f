//! Helpers for the tests that run against the real Redis and RabbitMQ (a dev-dependency
//! only; nothing here ships in a binary).

use std::future::Future;
use std::time::{Duration, Instant};

/// Where the service tests find Redis and RabbitMQ.
pub struct Services {
    /// `FRACTILE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`.
    pub redis: String,
    /// `FRACTILE_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub amqp: String,
}

/// The services, or `None` (with the reason printed) when one is not reachable. Under `CI`
/// a missing service fails the test instead: CI must never skip these tests.
pub fn services() -> Option<Services> {
    let redis = std::env::var("FRACTILE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let amqp = std::env::var("FRACTILE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    for (name, url) in [("redis", &redis), ("rabbitmq", &amqp)] {
        let addr = host_port(url);
        let reachable = std::net::ToSocketAddrs::to_socket_addrs(&addr)
            .ok()
            .and_then(|mut addrs| addrs.next())
            .is_some_and(|a| {
                std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok()
            });
        if !reachable {
            assert!(
                std::env::var_os("CI").is_none(),
                "{name} is not reachable at {addr}, and CI is set"
            );
            eprintln!(
                "skipping: {name} is not reachable at {addr} (start it, or set CI to make this fail)"
            );
            return None;
        }
    }
    Some(Services { redis, amqp })
}

/// `host:port` of a `scheme://[user[:pass]@]host:port[/...]` URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// A prefix no other test uses, for key and queue names: `test-<uuid>.`.
pub fn unique_prefix() -> String {
    format!("test-{}.", uuid::Uuid::new_v4().simple())
}

/// Command-line arguments of a `fractile-worker` using these services under `prefix` (keys
/// and queues), with `threads` render threads and its admin port on an ephemeral port. The
/// first item is the program name, as `clap::Parser::parse_from` expects.
pub fn worker_args(redis: &str, amqp: &str, prefix: &str, threads: usize) -> Vec<String> {
    let threads = threads.to_string();
    [
        "fractile-worker",
        "--amqp-url",
        amqp,
        "--redis-url",
        redis,
        "--queue-prefix",
        prefix,
        "--key-prefix",
        prefix,
        "--admin-listen",
        "127.0.0.1:0",
        "--render-threads",
        &threads,
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// A redis-server of one test's own, on a free loopback port: a test may kill it, pause it
/// (`SIGSTOP`, a Redis that stalls without closing its connections) or restart it without
/// any other test noticing. Dropping it resumes and kills the process.
pub struct PrivateRedis {
    child: std::process::Child,
    port: u16,
    /// False once killed and reaped: its pid may belong to another process by then.
    alive: bool,
}

impl PrivateRedis {
    /// Starts one on a free port, or `None` (with the reason printed; a failure under `CI`)
    /// when `redis-server` is not installed.
    pub async fn start() -> Option<PrivateRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::start_on(port).await
    }

    /// Starts one on `port` (a restart after [`Self::kill`]).
    pub async fn start_on(port: u16) -> Option<PrivateRedis> {
        let spawned = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "redis-server cannot be started ({error}), and CI is set"
                );
                eprintln!("skipping: redis-server cannot be started ({error})");
                return None;
            }
        };
        let redis = PrivateRedis {
            child,
            port,
            alive: true,
        };
        eventually(
            "the private redis-server accepts connections",
            Duration::from_secs(10),
            || async { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() },
        )
        .await;
        Some(redis)
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the process (`SIGSTOP`): connections stay open and nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process run again (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the process (paused or not) and waits for it: its connections close.
    pub fn kill(&mut self) {
        if self.alive {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.alive = false;
        }
    }

    fn signal(&self, signal: &str) {
        assert!(self.alive, "the private redis-server was killed");
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill {signal} {}", self.child.id());
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` until it returns true; fails the test after `limit`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_is_found_in_urls() {
        assert_eq!(host_port("redis://127.0.0.1:6379"), "127.0.0.1:6379");
        assert_eq!(
            host_port("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "127.0.0.1:5672"
        );
        assert_eq!(host_port("redis://:p@ss@redis:6379/0"), "redis:6379");
    }
}
