//! The worker's admin port: its connection cap turns extra connections away at once.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use fractile_worker::Worker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Reads from `stream` until `needle` has arrived or the server closed; returns what came.
async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !got.windows(needle.len()).any(|w| w == needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no answer and no close within 5 s"),
        }
    }
    got
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn admin_connections_beyond_the_cap_are_closed_at_once_and_counted() {
    let env = Env::new().await;
    let mut config = env.worker_config(2);
    // A free port, so the test knows where the admin port is.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    config.admin_listen = ([127, 0, 0, 1], port).into();
    config.process.admin_max_connections = NonZeroUsize::MIN;
    let worker = Worker::new(config).expect("worker");
    let admin = worker.metrics().connections.listener("admin");
    let running = run_worker(worker);

    let addr = format!("127.0.0.1:{port}");
    // The worker binds its admin port once connected to the broker: retry until it answers.
    let probe = b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n";
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        assert!(Instant::now() < deadline, "the admin port never answered");
        if let Ok(mut stream) = TcpStream::connect(&addr).await
            && stream.write_all(probe).await.is_ok()
            && read_until(&mut stream, b"\r\n\r\n")
                .await
                .starts_with(b"HTTP/1.1 200")
        {
            break stream;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The one place is held by `first`, kept alive: the next connection is closed at once.
    let mut second = TcpStream::connect(&addr).await.expect("connect");
    let _ = second.write_all(probe).await;
    let answer = read_until(&mut second, b"\r\n\r\n").await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty(),
        "closed without an answer, got {answer:?}"
    );
    assert_eq!(admin.rejected.get(), 1);
    assert_eq!(admin.open.get(), 1);

    drop(first);
    running.shutdown().await;
    env.cleanup().await;
}
