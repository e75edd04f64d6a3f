//! Helpers for the tests that run against the real Redis and RabbitMQ (a dev-dependency
//! only; nothing here ships in a binary).
//!
//! With the `worker` feature, [`worker`] runs a `fractile-worker` in the test's process.

#[cfg(feature = "worker")]
pub mod worker;

pub mod http;

pub use http::{body_bytes, body_json, get, header, oneshot};

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a plain `cargo test` leaves out every test that needs Redis and RabbitMQ (or a
/// `redis-server` of its own): each such test is `#[ignore = "…"]` with exactly this text
/// (an attribute takes a literal, not this constant; `every_ignored_test_gives_the_reason`
/// holds them to it), so the summary counts them as ignored, never as passed. `make test`
/// runs them.
pub const NEEDS_SERVICES: &str =
    "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)";

/// Where the service tests find Redis and RabbitMQ.
pub struct Services {
    /// `FRACTILE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`.
    pub redis: String,
    /// `FRACTILE_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub amqp: String,
}

/// The services. A test that calls this is an ignored one being run (see
/// [`NEEDS_SERVICES`]); one that cannot reach a service fails, saying which and where:
/// nothing is skipped silently.
pub fn services() -> Services {
    assert_ignored_test_run();
    let redis = std::env::var("FRACTILE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let amqp = std::env::var("FRACTILE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    for (name, variable, url) in [
        ("Redis", "FRACTILE_TEST_REDIS_URL", &redis),
        ("RabbitMQ", "FRACTILE_TEST_AMQP_URL", &amqp),
    ] {
        if let Some(why) = unreachable(name, variable, url) {
            panic!("{why}");
        }
    }
    Services { redis, amqp }
}

/// Why the service `name` at `url` (from `variable`) cannot be used, or `None` when
/// something accepts a TCP connection there.
fn unreachable(name: &str, variable: &str, url: &str) -> Option<String> {
    let addr = host_port(url);
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok());
    (!reachable).then(|| {
        format!(
            "{name} is not reachable at {addr} (set by {variable}, or the default): this test \
             needs Redis and RabbitMQ running (README.md, Development). A plain `cargo test` \
             leaves it out."
        )
    })
}

/// Fails the test unless the test binary runs ignored tests (`--ignored` or
/// `--include-ignored`): a test that needs the services without being `#[ignore]`d would be
/// reported as failed by every plain `cargo test` on a machine without them.
fn assert_ignored_test_run() {
    assert!(
        std::env::args().any(|a| a == "--include-ignored" || a == "--ignored"),
        "this test needs Redis and RabbitMQ but is not ignored: give it the attribute \
         ignore = \"{NEEDS_SERVICES}\""
    );
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
        "--tile-mac-key",
        TILE_MAC_KEY,
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// The tiles' MAC key of the service tests' apis, workers and stores: every distributed test
/// signs and checks its tiles as a deployment does.
pub const TILE_MAC_KEY: &str = "tile-mac-key-of-the-service-tests-0123456789abcdef";

/// [`TILE_MAC_KEY`] as a setting.
pub fn tile_mac_key() -> fractile_settings::Secret {
    fractile_settings::Secret::new(TILE_MAC_KEY, fractile_tile_store::mac::MIN_KEY_BYTES)
        .expect("a valid key")
}

/// [`TILE_MAC_KEY`] as the stores take it.
pub fn tile_mac() -> fractile_tile_store::TileMac {
    fractile_tile_store::TileMac::new(tile_mac_key(), None)
}

/// Store settings for `redis` under `prefix`, with [`TILE_MAC_KEY`].
pub fn store_settings(redis: &str, prefix: &str) -> fractile_tile_store::StoreSettings {
    let mut settings = fractile_tile_store::StoreSettings::new(redis, prefix);
    settings.tile_mac = Some(tile_mac());
    settings
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
    /// Starts one on a free port; fails the test when `redis-server` cannot be started. Only
    /// for ignored tests, like [`services`].
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

/// A connection of the test's own to the Redis at `url`, to do to it what an operator or a
/// fault would (fill it, delete a key).
pub async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis")
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

/// The lock every test (and script) that disturbs the shared broker for everyone holds for
/// the duration: a restart, a memory alarm, closing every connection.
pub const BROKER_LOCK: &str = "/tmp/fractile-broker.lock";

/// Holds [`BROKER_LOCK`] until dropped, through `flock(1)`: a shell opens the lock file,
/// takes the lock on it and becomes `cat` reading this process's pipe, so the lock goes
/// when the guard drops the pipe, and also when this process dies without dropping it.
pub struct BrokerLock {
    holder: Child,
}

impl BrokerLock {
    /// Waits for the lock, at most `limit`.
    pub fn acquire(limit: Duration) -> BrokerLock {
        Self::acquire_file(BROKER_LOCK, limit)
    }

    fn acquire_file(path: &str, limit: Duration) -> BrokerLock {
        let script =
            "exec 9>>\"$0\" && flock --timeout \"$1\" 9 && echo locked && exec cat > /dev/null";
        let mut holder = Command::new("sh")
            .args(["-c", script, path, &limit.as_secs().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let stdout = holder.stdout.take().expect("piped");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        assert_eq!(
            line.trim(),
            "locked",
            "could not take {path} within {limit:?}"
        );
        BrokerLock { holder }
    }
}

impl Drop for BrokerLock {
    fn drop(&mut self) {
        // End of input: `cat` exits, and the lock with it.
        drop(self.holder.stdin.take());
        let _ = self.holder.wait();
    }
}

/// Runs `rabbitmqctl` with `args` and returns its output; fails the test if it fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A loopback port nothing listens on (bound, then released): connecting to it is refused.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// The path of a binary of this workspace, built first (`cargo build -p PACKAGE`, a no-op
/// when it is up to date): a package's tests get only their own binaries from Cargo
/// (`CARGO_BIN_EXE_*`), and the system tests run the api's and the worker's. Uses the
/// `cargo` and target directory of the test run.
pub fn workspace_binary(package: &str) -> std::path::PathBuf {
    // The test binary is `<target>/<profile>/deps/<name>-<hash>`; binaries sit in
    // `<target>/<profile>`.
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("<target>/<profile>/deps");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build.args(["build", "--quiet", "-p", package, "--bin", package]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let built = build.status().expect("cargo runs");
    assert!(built.success(), "cargo build -p {package} failed");
    let binary = profile_dir.join(package);
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}

/// A binary run for its exit: stdout and stderr collected line by line as they come, so a
/// test can wait for a log line, signal the process, and check what it printed on the way
/// out.
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `command` with both streams captured.
    pub fn spawn(mut command: Command) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        collect(stdout, Arc::clone(&lines));
        collect(stderr, Arc::clone(&lines));
        Process { child, lines }
    }

    /// Everything printed so far, one line per item.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().expect("not poisoned").clone()
    }

    /// The first line printed that satisfies `matches`, waiting up to `limit`.
    pub fn wait_for_line(&self, limit: Duration, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.output().into_iter().find(|l| matches(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no matching line within {limit:?}; output:\n{}",
                self.output().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it with SIGKILL (`kill -9`: no shutdown code runs) and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM failed");
    }

    /// Waits for the exit as [`Process::wait_exit`] does and returns everything printed
    /// with it: for a process expected to stop on its own, as at a configuration error.
    pub fn wait_exit_with_output(self, limit: Duration) -> (ExitStatus, String) {
        let lines = Arc::clone(&self.lines);
        let status = self.wait_exit(limit);
        let output = lines.lock().expect("not poisoned").join("\n");
        (status, output)
    }

    /// Waits for the exit, at most `limit` (the process is killed past it and the test
    /// fails), and checks that nothing panicked on the way: a panic at exit is a bug even
    /// when the exit status looks right.
    pub fn wait_exit(mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "still running after {limit:?}; output:\n{}",
                    self.output().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The collecting threads read to the end of the pipes; give them a moment.
        std::thread::sleep(Duration::from_millis(200));
        let output = self.output().join("\n");
        assert!(
            !output.contains("panicked"),
            "the process panicked ({status:?}):\n{output}"
        );
        status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn collect(stream: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            lines.lock().expect("not poisoned").push(line);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_lock_is_held_until_dropped() {
        let path = std::env::temp_dir().join(format!("{}lock", unique_prefix()));
        let path = path.to_str().expect("utf-8").to_owned();
        let free = || {
            Command::new("flock")
                .args(["--nonblock", &path, "true"])
                .status()
                .expect("flock runs")
                .success()
        };
        let lock = BrokerLock::acquire_file(&path, Duration::from_secs(5));
        assert!(!free(), "held");
        drop(lock);
        assert!(free(), "released");
        let _ = std::fs::remove_file(&path);
    }

    /// The `.rs` files under `dir`, recursively (build output and npm folders left out).
    fn rust_files(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable").flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() && name != "target" && name != "node_modules" {
                rust_files(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }

    #[test]
    fn every_ignored_test_gives_the_reason() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = Vec::new();
        rust_files(&root.join("crates"), &mut files);
        rust_files(&root.join("loadtests"), &mut files);
        let wanted = format!("#[ignore = \"{NEEDS_SERVICES}\"]");
        let mut ignored = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).expect("utf-8");
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.starts_with("#[ignore") {
                    assert_eq!(line, wanted, "{}:{}", file.display(), number + 1);
                    ignored += 1;
                }
            }
        }
        assert!(
            ignored > 0,
            "no ignored test found under {}",
            root.display()
        );
    }

    #[test]
    fn a_missing_service_is_named_with_where_and_what_to_do() {
        let url = format!("redis://:pw@127.0.0.1:{}", closed_port());
        let why = unreachable("Redis", "FRACTILE_TEST_REDIS_URL", &url).expect("unreachable");
        assert!(
            why.starts_with("Redis is not reachable at 127.0.0.1:")
                && why.contains("(set by FRACTILE_TEST_REDIS_URL, or the default)")
                && why.contains("A plain `cargo test` leaves it out")
                && !why.contains("pw"),
            "{why}"
        );
        let open = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("redis://{}", open.local_addr().expect("addr"));
        assert_eq!(unreachable("Redis", "FRACTILE_TEST_REDIS_URL", &url), None);
    }

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
