//! A `redis-server` of one test's own ([`PrivateRedis`]), to kill, pause or restart
//! without disturbing any other test.

use std::time::Duration;

use crate::poll::eventually;
use crate::services::assert_ignored_test_run;

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
    /// Starts one on a free port; fails the test when `redis-server` cannot be started. Only
    /// for ignored tests, like [`services()`](crate::services::services).
    pub async fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::start_on(port).await
    }

    /// Starts one on `port` (a restart after [`Self::kill`]).
    pub async fn start_on(port: u16) -> PrivateRedis {
        Self::start_with(port, &[]).await
    }

    /// Starts one on a free port with `extra` arguments (`--maxmemory 2mb`, ...).
    pub async fn start_configured(extra: &[&str]) -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::start_with(port, extra).await
    }

    async fn start_with(port: u16, extra: &[&str]) -> PrivateRedis {
        assert_ignored_test_run();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "redis-server cannot be started ({error}): this test needs Redis installed \
                     (Debian redis-server). A plain `cargo test` leaves it out."
                )
            });
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
        redis
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
