//! What one client, or many, can hold of a real server: connections beyond the cap, a client
//! that stops reading, an idle keep-alive connection, oversized request heads, and the
//! memory of thousands of slow connections to the built binary.

use std::io::{BufRead, BufReader};
use std::num::NonZeroUsize;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::*;

const TILE_REQUEST: &[u8] = b"GET /tiles/1/0/0.png HTTP/1.1\r\nHost: test\r\n\r\n";

/// Waits until the server closes `stream` (EOF or reset), failing after `limit`. Anything the
/// server sent first is read and dropped.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

/// A raw request, its response read back: (status, head, body).
async fn exchange(addr: &str, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_response_head(&mut stream).await
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_counted_while_admin_answers() {
    const CAP: usize = 3;
    const EXTRA: usize = 5;
    let mut config = config();
    config.max_connections = NonZeroUsize::new(CAP).expect("non-zero");
    let running = spawn_server(config).await;
    let addr = running.base.trim_start_matches("http://").to_owned();
    let traffic = running.state.metrics.connections.listener("traffic");

    // Fill the cap with keep-alive connections that each got an answer.
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        stream.write_all(TILE_REQUEST).await.expect("write");
        assert_eq!(read_response_head(&mut stream).await.0, 200);
        held.push(stream);
    }
    assert_eq!(traffic.open.get(), CAP as i64);

    // Further connections are accepted by the kernel, then closed by the server at once.
    for _ in 0..EXTRA {
        let mut extra = TcpStream::connect(&addr).await.expect("connect");
        let _ = extra.write_all(TILE_REQUEST).await;
        closed_within(&mut extra, Duration::from_secs(2)).await;
    }
    assert_eq!(traffic.rejected.get(), EXTRA as u64);

    // The admin port has a cap of its own: probes still answer.
    let ready = client()
        .get(format!("{}/readyz", running.admin))
        .send()
        .await
        .expect("admin answers while traffic is at its cap");
    assert_eq!(ready.status(), 200);
    let metrics = client()
        .get(format!("{}/metrics", running.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(&format!(
            "http_connections_rejected_total{{listener=\"traffic\"}} {EXTRA}"
        )),
        "rejections are exported"
    );
    assert!(metrics.contains(&format!(
        "http_connections_open{{listener=\"traffic\"}} {CAP}"
    )));

    // A closed connection frees its place.
    drop(held.pop());
    eventually("the closed connection is counted out", || {
        traffic.open.get() == CAP as i64 - 1
    })
    .await;
    assert_eq!(exchange(&addr, TILE_REQUEST).await.0, 200);

    running.stop.send(()).expect("server waits");
    drop(held);
    running.task.await.expect("task").expect("clean exit");
}

#[tokio::test]
async fn the_admin_port_has_its_own_cap() {
    let mut config = config();
    config.process.admin_max_connections = NonZeroUsize::new(1).expect("non-zero");
    let running = spawn_server(config).await;
    let admin_addr = running.admin.trim_start_matches("http://").to_owned();
    let admin = running.state.metrics.connections.listener("admin");
    let probe = b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n";
    let mut first = TcpStream::connect(&admin_addr).await.expect("connect");
    first.write_all(probe).await.expect("write");
    assert_eq!(read_response_head(&mut first).await.0, 200);
    let mut second = TcpStream::connect(&admin_addr).await.expect("connect");
    closed_within(&mut second, Duration::from_secs(2)).await;
    assert_eq!(admin.rejected.get(), 1);
    // The traffic port is not affected by the admin port's cap.
    let addr = running.base.trim_start_matches("http://").to_owned();
    assert_eq!(exchange(&addr, TILE_REQUEST).await.0, 200);
    drop(first);
    running.stop.send(()).expect("server waits");
    running.task.await.expect("task").expect("clean exit");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_after_the_write_timeout() {
    const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
    let mut config = config();
    config.process.write_timeout = WRITE_TIMEOUT;
    let running = spawn_server(config).await;
    let addr = running.base.trim_start_matches("http://").to_owned();
    let traffic = running.state.metrics.connections.listener("traffic");
    // Warm the tile, so the responses below are cache hits written back to back.
    assert_eq!(exchange(&addr, TILE_REQUEST).await.0, 200);

    // A small receive buffer, requests pipelined and never read: the responses (tens of KB
    // each) fill the client's buffer and the server's send queue, and the server's write
    // stops making progress.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stream = socket
        .connect(addr.parse().expect("addr"))
        .await
        .expect("connect");
    let pipelined = TILE_REQUEST.repeat(2000);
    // The server stops reading too once it cannot write; send what it takes.
    let writer = tokio::spawn(async move {
        let _ = stream.write_all(&pipelined).await;
        stream
    });
    eventually("the stalled connection is open", || traffic.open.get() == 1).await;
    let started = Instant::now();
    let deadline = Duration::from_secs(10);
    while traffic.closed("write_timeout").get() == 0 {
        assert!(
            started.elapsed() < deadline,
            "a client that stopped reading still holds its connection after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually("the connection is counted out", || traffic.open.get() == 0).await;
    writer.abort();
    running.stop.send(()).expect("server waits");
    running.task.await.expect("task").expect("clean exit");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_by_the_header_read_timeout() {
    let mut config = config();
    config.header_read_timeout = Duration::from_millis(300);
    let running = spawn_server(config).await;
    let addr = running.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream.write_all(TILE_REQUEST).await.expect("write");
    let (status, head, _) = read_response_head(&mut stream).await;
    assert_eq!(status, 200);
    assert!(!head.to_ascii_lowercase().contains("connection: close"));
    // Kept alive, then idle: hyper's header-read timer runs while it waits for the next head.
    let closed_after = closed_within(&mut stream, Duration::from_secs(5)).await;
    assert!(
        closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}"
    );
    running.stop.send(()).expect("server waits");
    running.task.await.expect("task").expect("clean exit");
}

/// The kernel's queue of connections not yet accepted, as `ss` reports it for a listening
/// socket (its `Send-Q`).
fn listen_backlog_of(addr: &str) -> u32 {
    let port = addr.rsplit(':').next().expect("a port");
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) runs");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no listening socket on {addr} in ss: {line:?}"))
}

/// Both listeners queue as many pending connections as the system allows, not the 128 of
/// `TcpListener::bind`: under a burst of new connections (a load balancer opening upstream
/// connections during a flood) a short queue drops SYNs, and the client's retry a second
/// later comes after the load balancer has given up on a replica that was only busy.
#[tokio::test]
async fn both_listeners_queue_as_many_connections_as_the_system_allows() {
    let system = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("Linux")
        .trim()
        .parse::<u32>()
        .expect("a number");
    assert!(
        system > 128,
        "this machine allows only {system}: the test proves nothing"
    );
    let running = spawn_server(config()).await;
    for addr in [&running.base, &running.admin] {
        let addr = addr.trim_start_matches("http://");
        assert_eq!(listen_backlog_of(addr), system, "{addr}");
    }
    running.stop.send(()).expect("server waits");
    running.task.await.expect("task").expect("clean exit");
}

/// A client that sends its request and then shuts its side down (`shutdown(SHUT_WR)`, as
/// `nc -N` and some HTTP/1.0-era clients do) still gets its answer: the half-closed read side
/// says no further request will come, not that nobody waits for this one.
#[tokio::test]
async fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    let running = spawn_server(config()).await;
    let addr = running.base.trim_start_matches("http://").to_owned();
    // Tiles not rendered yet (the answer takes a render) and one cached (it does not).
    let paths = [
        "/tiles/9/130/180.png",
        "/tiles/9/131/181.png",
        "/tiles/1/0/0.png",
    ];
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream.write_all(TILE_REQUEST).await.expect("write");
    assert_eq!(read_response_head(&mut stream).await.0, 200, "warmed");
    for path in paths {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        stream.shutdown().await.expect("half-close");
        let (status, head, _) = read_response_head(&mut stream).await;
        assert_eq!(status, 200, "{path}: {head}");
        // Then the server closes its side too: no other request can come.
        closed_within(&mut stream, Duration::from_secs(5)).await;
    }
    running.stop.send(()).expect("server waits");
    running.task.await.expect("task").expect("clean exit");
}

/// A GET of `/` with `extra` header lines, ending the head.
fn request_with(extra: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: test\r\n{extra}\r\n").into_bytes()
}

/// The `error.code` of a JSON body.
fn code_of(body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).expect("JSON error body");
    json["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned()
}

#[tokio::test]
async fn heads_over_the_limits_get_json_431_or_414() {
    let config = config();
    let (max_bytes, max_headers, max_uri) = (
        config.max_head_bytes,
        config.max_headers,
        config.max_uri_bytes,
    );
    let running = spawn_server(config).await;
    let addr = running.base.trim_start_matches("http://").to_owned();

    // Just under the byte limit: served.
    let (status, _, _) = exchange(
        &addr,
        &request_with(&format!("X-Fill: {}\r\n", "a".repeat(max_bytes - 100))),
    )
    .await;
    assert_eq!(status, 200);

    // Over it (but under hyper's hard limit, twice as large): 431 with a JSON body.
    let big = format!("Cookie: {}\r\n", "a".repeat(max_bytes + 1000));
    let (status, head, body) = exchange(&addr, &request_with(&big)).await;
    assert_eq!(status, 431);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    assert_eq!(code_of(&body), "head_too_large");

    // Too many lines.
    let lines: String = (0..=max_headers)
        .map(|i| format!("X-H{i}: 1\r\n"))
        .collect();
    let (status, _, body) = exchange(&addr, &request_with(&lines)).await;
    assert_eq!(status, 431);
    assert_eq!(code_of(&body), "head_too_large");

    // A target over its limit: 414.
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: test\r\n\r\n",
        "x".repeat(max_uri)
    );
    let (status, _, body) = exchange(&addr, long.as_bytes()).await;
    assert_eq!(status, 414);
    assert_eq!(code_of(&body), "uri_too_long");

    let over = |limit: &str| {
        running
            .state
            .metrics
            .over_limit
            .with_label_values(&[limit])
            .get()
    };
    assert_eq!(
        (over("head"), over("uri")),
        (2, 1),
        "the refusals are counted"
    );

    running.stop.send(()).expect("server waits");
    running.task.await.expect("task").expect("clean exit");
}

#[tokio::test]
async fn a_head_over_the_hard_limit_is_refused_by_the_parser_and_counted() {
    let config = config();
    let hard = config.max_head_bytes * 2;
    let running = spawn_server(config).await;
    let addr = running.base.trim_start_matches("http://").to_owned();
    let traffic = running.state.metrics.connections.listener("traffic");
    // An unfinished head past the hard limit: hyper stops reading at the limit.
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "GET / HTTP/1.1\r\nHost: test\r\nCookie: {}",
        "a".repeat(hard + 1024)
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 431"), "got {text:?}");
    eventually("the refusal is counted", || {
        traffic.closed("head_too_large").get() == 1
    })
    .await;
    running.stop.send(()).expect("server waits");
    running.task.await.expect("task").expect("clean exit");
}

/// A child process killed when the test ends, whether it passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Resident memory of process `pid`, in bytes, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kb * 1024
}

#[cfg(target_os = "linux")]
#[test]
fn thousands_of_slow_heads_keep_the_binary_under_a_memory_bound() {
    const CONNECTIONS: usize = 2000;
    /// Measured here: 14 MB at rest, 104 MB with 2,000 connections holding 31 KiB heads and
    /// 2,000 more sending 390 KB ones. Before the head limits, 1,400 connections sending
    /// 390 KB heads took 557 MB.
    const RSS_BOUND: u64 = 200 * 1024 * 1024;
    let nofile = fractile_http::fd_limit::raise_nofile_limit().unwrap_or(0);
    assert!(
        nofile > 2 * CONNECTIONS as u64 + 200,
        "this test needs more than {} open files (ulimit -n is {nofile})",
        2 * CONNECTIONS
    );
    let child = Command::new(env!("CARGO_BIN_EXE_fractile-api"))
        .env("FRACTILE_LISTEN", "127.0.0.1:0")
        .env("FRACTILE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("FRACTILE_LOG_FORMAT", "json")
        .env("FRACTILE_SHUTDOWN_DELAY", "0s")
        .env("FRACTILE_HEADER_READ_TIMEOUT", "60s")
        .env("FRACTILE_RENDER_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let mut child = KillOnDrop(child);
    let pid = child.0.id();
    let stdout = child.0.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let traffic = loop {
        let line = lines.next().expect("a 'listening' line").expect("read");
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if event["message"] == "listening" {
            break event["traffic"].as_str().expect("traffic").to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let before = rss_bytes(pid);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (held, refused, during) = runtime.block_on(async {
        // Heads just under the hard limit (twice the default 16 KiB), never finished: the
        // most a slow connection may make the server hold.
        let slow = format!(
            "GET / HTTP/1.1\r\nHost: test\r\nCookie: {}",
            "a".repeat(31 * 1024)
        );
        // And heads as large as the finding's (390 KB), never finished: refused at the hard
        // limit. Without it each would hold its 390 KB.
        let huge = format!(
            "GET / HTTP/1.1\r\nHost: test\r\nCookie: {}",
            "a".repeat(390 * 1024)
        );
        let mut held = Vec::with_capacity(2 * CONNECTIONS);
        for head in [&slow, &huge] {
            for _ in 0..CONNECTIONS {
                let mut stream = TcpStream::connect(&traffic).await.expect("connect");
                // The server may refuse (and reset) before the client has sent it all.
                let _ = stream.write_all(head.as_bytes()).await;
                held.push(stream);
            }
        }
        // Let the server read what was sent.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let during = rss_bytes(pid);
        let mut refused = 0;
        let answers = held
            .split_off(CONNECTIONS)
            .into_iter()
            .map(|mut stream| async move {
                let mut response = [0u8; 12];
                let read =
                    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut response))
                        .await;
                matches!(read, Ok(Ok(_))) && response.starts_with(b"HTTP/1.1 431")
            });
        for answered in futures_join_all(answers).await {
            refused += usize::from(answered);
        }
        (held, refused, during)
    });
    drop(held);
    drop(child);
    eprintln!(
        "RSS before {} MB, with {CONNECTIONS} slow heads held and {CONNECTIONS} huge ones sent {} MB",
        before / 1_000_000,
        during / 1_000_000
    );
    assert!(
        during < RSS_BOUND,
        "RSS {} MB with {CONNECTIONS} slow and {CONNECTIONS} huge heads, bound {} MB",
        during / 1_000_000,
        RSS_BOUND / 1_000_000
    );
    assert_eq!(
        refused, CONNECTIONS,
        "every 390 KB head is refused with 431"
    );
}

/// Runs `futures` concurrently and returns their outputs in order.
async fn futures_join_all<F: std::future::Future<Output = bool> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<bool> {
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.unwrap_or(false));
    }
    out
}

#[tokio::test]
async fn a_body_over_the_limit_gets_json_413() {
    let (state, app) = app_with(&config());
    let body = vec![b'{'; 20 * 1024];
    let request = axum::http::Request::post("/v1/seeds")
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(axum::body::Body::from(body))
        .expect("valid request");
    let response = send(&app, request).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "the body limit's plain-text 413 is given a JSON body"
    );
    assert_eq!(error_code(response).await, "body_too_large");
    let counted = state.metrics.over_limit.with_label_values(&["body"]).get();
    assert_eq!(counted, 1, "the refusal is counted");
}

/// The binary with `ulimit -n` (soft and hard) set to `nofile`, and the traffic and admin
/// addresses from its `listening` line, which is returned too.
fn spawn_limited_binary(nofile: u32) -> (KillOnDrop, String, String, serde_json::Value) {
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\"",))
        .arg(env!("CARGO_BIN_EXE_fractile-api"))
        .env("FRACTILE_LISTEN", "127.0.0.1:0")
        .env("FRACTILE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("FRACTILE_LOG_FORMAT", "json")
        .env("FRACTILE_SHUTDOWN_DELAY", "0s")
        .env("FRACTILE_HEADER_READ_TIMEOUT", "60s")
        .env("FRACTILE_RENDER_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut warned = false;
    let listening = loop {
        let line = lines.next().expect("a 'listening' line").expect("read");
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        warned |= event["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("connection cap lowered"));
        if event["message"] == "listening" {
            break event;
        }
    };
    assert!(warned, "lowering the cap is logged");
    std::thread::spawn(move || for _ in lines {});
    let traffic = listening["traffic"].as_str().expect("traffic").to_owned();
    let admin = listening["admin"].as_str().expect("admin").to_owned();
    (child, traffic, admin, listening)
}

/// The value of the sample `series` (name and labels, exactly) in an exposition.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[cfg(target_os = "linux")]
#[test]
fn under_ulimit_1024_a_flood_of_connections_leaves_the_admin_port_answering() {
    // The finding: with `ulimit -n 1024`, 1,100 clients that held their connections blocked
    // every new connection, `/readyz` included. Now the traffic cap is lowered to fit under
    // the limit beside the admin port's cap and a reserve, and the rest are turned away.
    const FLOOD: usize = 1100;
    let nofile = fractile_http::fd_limit::raise_nofile_limit().unwrap_or(0);
    assert!(
        nofile > FLOOD as u64 + 200,
        "this test needs more than {FLOOD} open files (ulimit -n is {nofile})"
    );
    let (_child, traffic, admin, listening) = spawn_limited_binary(1024);
    let cap = listening["max_connections"]
        .as_u64()
        .expect("max_connections");
    let admin_cap = listening["admin_max_connections"]
        .as_u64()
        .expect("admin cap");
    assert!(
        cap + admin_cap < 1024,
        "the caps ({cap} + {admin_cap}) fit under the open-file limit"
    );

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut held = Vec::with_capacity(FLOOD);
        for _ in 0..FLOOD {
            let mut stream = TcpStream::connect(&traffic).await.expect("connect");
            // A head begun and never finished: the connection stays until the header timeout.
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n").await;
            held.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let ready = http
            .get(format!("http://{admin}/readyz"))
            .send()
            .await
            .expect("/readyz answers during the flood");
        assert_eq!(ready.status(), 200);
        let metrics = http
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let open = sample(&metrics, "http_connections_open{listener=\"traffic\"}");
        let rejected = sample(
            &metrics,
            "http_connections_rejected_total{listener=\"traffic\"}",
        );
        assert_eq!(open, Some(cap as f64), "the cap is full");
        assert_eq!(
            rejected,
            Some((FLOOD as u64 - cap) as f64),
            "the rest were turned away"
        );
        drop(held);
    });
}
