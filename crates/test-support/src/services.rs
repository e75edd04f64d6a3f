//! Finding the shared Redis and RabbitMQ of the service tests: [`NEEDS_SERVICES`], the
//! reason every such test is ignored by a plain `cargo test`; [`services`], which fails a
//! test that cannot reach them; a connection of the test's own to a Redis; a port where
//! nothing listens.

use std::time::Duration;

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
pub(crate) fn assert_ignored_test_run() {
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

/// A connection of the test's own to the Redis at `url`, to do to it what an operator or a
/// fault would (fill it, delete a key).
pub async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis")
}

/// A loopback port nothing listens on (bound, then released): connecting to it is refused.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

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
