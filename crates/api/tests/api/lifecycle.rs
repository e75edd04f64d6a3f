//! The real thing on sockets: serving, panics that keep the connection, graceful shutdown
//! of the library server and of the binary on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use fractile_api::AppState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

#[tokio::test]
async fn a_real_server_serves_tiles_probes_and_metrics() {
    let running = spawn_server(config()).await;
    let http = client();
    let tile = http
        .get(format!("{}/tiles/4/5/6.png", running.base))
        .send()
        .await
        .expect("tile");
    assert_eq!(tile.status(), 200);
    let status = tile.headers()["cache-status"].to_str().expect("ascii");
    assert_eq!(fractile_test_support::cache_layer_of(status), "MISS");
    assert!(tile.bytes().await.expect("body").starts_with(b"\x89PNG"));

    for probe in ["livez", "readyz"] {
        let r = http
            .get(format!("{}/{probe}", running.admin))
            .send()
            .await
            .expect("probe");
        assert_eq!(r.status(), 200, "{probe}");
    }
    let metrics = http
        .get(format!("{}/metrics", running.admin))
        .send()
        .await
        .expect("metrics");
    let text = metrics.text().await.expect("text");
    for name in [
        "http_requests_in_flight",
        "http_requests_total{route=\"/tiles/{z}/{x}/{y}\",status=\"2xx\"} 1",
        "http_request_duration_seconds_bucket",
        "http_requests_shed_total",
        "http_requests_timed_out_total",
        "cache_requests_total{layer=\"l1\",result=\"miss\"} 1",
        "cache_bytes{layer=\"l1\"}",
        "cache_entries{layer=\"l1\"} 1",
        "render_duration_seconds_count 1",
        "render_pool_queue_depth 0",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "metrics lack {name}");
    }
    // The admin port does not serve tiles, and the traffic port does not serve metrics.
    let r = http
        .get(format!("{}/tiles/0/0/0.png", running.admin))
        .send()
        .await
        .expect("admin");
    assert_eq!(r.status(), 404);
    let r = http
        .get(format!("{}/metrics", running.base))
        .send()
        .await
        .expect("traffic");
    assert_eq!(r.status(), 404);

    running.stop.send(()).expect("server waits");
    running.task.await.expect("task").expect("clean exit");
}

async fn boom() -> &'static str {
    panic!("deliberate test panic")
}

#[tokio::test]
async fn a_panicking_handler_gives_500_and_the_connection_lives_on() {
    let state = AppState::new(&config()).expect("state");
    let routes = Router::new()
        .route("/boom", get(boom))
        .route("/fine", get(|| async { "fine" }));
    let app = fractile_api::app::stack(routes, state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /boom HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write");
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 500);
    assert!(body.contains("\"internal\""), "JSON error body: {body}");
    assert!(
        !body.contains("deliberate"),
        "5xx bodies say nothing internal"
    );
    // Same connection, next request.
    stream
        .write_all(b"GET /fine HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(read_response(&mut stream).await, (200, "fine".to_owned()));
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_fails_readiness() {
    const REQUESTS: usize = 5;
    let running = spawn_server(config()).await;
    let gate = RenderGate::close(&running.state, 1).await;
    let http = client();
    let requests: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let (http, url) = (http.clone(), format!("{}/tiles/6/{i}/30.png", running.base));
            tokio::spawn(async move { http.get(url).send().await })
        })
        .collect();
    let state = running.state.clone();
    eventually("requests are in flight", || {
        state.metrics.in_flight.get() == REQUESTS as i64
    })
    .await;

    running.stop.send(()).expect("server waits");
    eventually("readiness goes false", || state.readiness.is_draining()).await;
    let ready = http
        .get(format!("{}/readyz", running.admin))
        .send()
        .await
        .expect("admin still up");
    assert_eq!(ready.status(), 503);
    // New connections are refused while the old ones drain (once the accept loop has seen
    // the signal; a connection accepted just before sends nothing and is closed as idle).
    let addr = running.base.trim_start_matches("http://").to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections while draining"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    gate.open();
    for request in requests {
        let response = request
            .await
            .expect("task")
            .expect("in-flight request completes");
        assert_eq!(response.status(), 200);
    }
    let finished = tokio::time::timeout(Duration::from_secs(10), running.task).await;
    finished
        .expect("run returns after draining")
        .expect("task")
        .expect("clean exit");
}

#[tokio::test]
async fn shutdown_gives_up_on_stuck_requests_after_its_deadline() {
    let mut config = config();
    config.process.shutdown_timeout = Duration::from_millis(200);
    let running = spawn_server(config).await;
    let gate = RenderGate::close(&running.state, 1).await;
    let url = format!("{}/tiles/6/1/31.png", running.base);
    let http = client();
    let _stuck = tokio::spawn(async move { http.get(url).send().await });
    let state = running.state.clone();
    eventually("the request is in flight", || {
        state.metrics.in_flight.get() == 1
    })
    .await;
    let started = Instant::now();
    running.stop.send(()).expect("server waits");
    let finished = tokio::time::timeout(Duration::from_secs(5), running.task).await;
    finished
        .expect("run returns despite the stuck request")
        .expect("task")
        .expect("clean exit");
    assert!(started.elapsed() < Duration::from_secs(3));
    gate.open();
}

#[test]
fn the_binary_exits_cleanly_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fractile-api"))
        .env("FRACTILE_LISTEN", "127.0.0.1:0")
        .env("FRACTILE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("FRACTILE_LOG_FORMAT", "json")
        .env("FRACTILE_SHUTDOWN_DELAY", "1s")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("piped");
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let listening = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a 'listening' log line");
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        if event["message"] == "listening" {
            break event;
        }
    };
    let traffic = listening["traffic"]
        .as_str()
        .expect("traffic address")
        .to_owned();

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let status = runtime.block_on(async {
        client()
            .get(format!("http://{traffic}/tiles/1/1/1.png"))
            .send()
            .await
            .expect("tile")
            .status()
    });
    assert_eq!(status, 200);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the binary did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit:?}");
    let logged: Vec<String> = lines.try_iter().collect();
    let delayed = logged.iter().any(|l| l.contains("still serving"));
    assert!(delayed, "the binary served on for FRACTILE_SHUTDOWN_DELAY");
    let drained = logged.iter().any(|l| l.contains("drained"));
    assert!(drained, "the binary logged that it drained");
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    let mut config = config();
    config.header_read_timeout = Duration::from_millis(300);
    let running = spawn_server(config).await;
    let addr = running.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(b"GET /tiles/0/0/0.png HTTP/1.1\r\nHost: test\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    // One header byte every 50 ms never completes the request; the server must hang up.
    let closed_after = loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "connection still open after 5 s"
        );
        if stream.write_all(b"x").await.is_err() {
            break started.elapsed();
        }
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            // hyper may answer 408 before closing; the connection ends either way.
            Ok(Ok(_)) => assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408")),
            Err(_still_open) => {}
        }
    };
    assert!(
        closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}"
    );
    running.stop.send(()).expect("server waits");
    running.task.await.expect("task").expect("clean exit");
}

// Multi-threaded: the subcommand is run with a blocking wait while the server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_subcommand_reports_readiness() {
    let running = spawn_server(config()).await;
    let admin = running.admin.trim_start_matches("http://").to_owned();
    let healthcheck = |addr: &str| {
        Command::new(env!("CARGO_BIN_EXE_fractile-api"))
            .arg("healthcheck")
            .env("FRACTILE_ADMIN_LISTEN", addr)
            .output()
            .expect("binary runs")
            .status
    };
    assert!(healthcheck(&admin).success());
    running.state.readiness.drain();
    assert!(!healthcheck(&admin).success(), "draining is unhealthy");
    assert!(
        !healthcheck("127.0.0.1:1").success(),
        "nothing listening is unhealthy"
    );
    running.stop.send(()).expect("server waits");
    running.task.await.expect("task").expect("clean exit");
}

/// The config of a server that serves on for `delay` after the shutdown signal.
fn config_with_delay(delay: Duration) -> fractile_api::Config {
    let mut config = config();
    config.shutdown_delay = delay;
    config
}

#[tokio::test]
async fn during_the_shutdown_delay_readiness_fails_while_traffic_is_served() {
    const DELAY: Duration = Duration::from_secs(3);
    let running = spawn_server(config_with_delay(DELAY)).await;
    let http = client();
    running.stop.send(()).expect("server waits");
    let stopped = Instant::now();
    let state = running.state.clone();
    eventually("readiness goes false", || state.readiness.is_draining()).await;
    let ready = http
        .get(format!("{}/readyz", running.admin))
        .send()
        .await
        .expect("admin up");
    assert_eq!(ready.status(), 503);
    // A load balancer that has not seen the 503 yet still sends here, on a new connection.
    let tile = client()
        .get(format!("{}/tiles/3/2/1.png", running.base))
        .send()
        .await
        .expect("the traffic port still serves during the delay");
    assert_eq!(tile.status(), 200);
    assert_eq!(tile.headers()["connection"], "close");
    assert!(
        stopped.elapsed() < DELAY,
        "served within the delay, not after"
    );

    // After the delay the listener closes and run returns.
    let finished = tokio::time::timeout(Duration::from_secs(10), running.task).await;
    finished
        .expect("run returns after delay and drain")
        .expect("task")
        .expect("clean exit");
    assert!(
        stopped.elapsed() >= DELAY,
        "returned after {:?}",
        stopped.elapsed()
    );
    let addr = running.base.trim_start_matches("http://").to_owned();
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the listener is closed once run returns"
    );
}

#[tokio::test]
async fn a_keep_alive_response_during_shutdown_says_connection_close() {
    let running = spawn_server(config_with_delay(Duration::from_secs(2))).await;
    let addr = running.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let request = b"GET /tiles/2/1/1.png HTTP/1.1\r\nHost: test\r\n\r\n";
    stream.write_all(request).await.expect("write");
    let (status, head, _) = read_response_head(&mut stream).await;
    assert_eq!(status, 200);
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "before shutdown the connection is kept: {head}"
    );

    running.stop.send(()).expect("server waits");
    let state = running.state.clone();
    eventually("readiness goes false", || state.readiness.is_draining()).await;
    // The same, idle keep-alive connection: served, and told to go elsewhere next time.
    stream.write_all(request).await.expect("write");
    let (status, head, _) = read_response_head(&mut stream).await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "during shutdown the response closes the connection: {head}"
    );
    let mut rest = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut rest))
        .await
        .expect("the server closes the connection after that response");
    assert!(matches!(read, Ok(0) | Err(_)), "closed, got {read:?}");
    running.task.await.expect("task").expect("clean exit");
}

#[tokio::test]
async fn a_keep_alive_client_sending_across_shutdown_loses_no_request() {
    // A bounded run: REQUESTS in a row on one pooled client, the shutdown signal after
    // BEFORE_STOP of them; the rest are sent during the delay, as a load balancer would
    // until it sees readiness fail.
    const REQUESTS: usize = 150;
    const BEFORE_STOP: usize = 50;
    const PACE: Duration = Duration::from_millis(5);
    let running = spawn_server(config_with_delay(Duration::from_secs(5))).await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sender = {
        let (http, done) = (client(), done.clone());
        let url = format!("{}/tiles/1/0/1.png", running.base);
        tokio::spawn(async move {
            let (mut failed, mut told_to_close) = (Vec::new(), 0);
            for i in 0..REQUESTS {
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        if r.headers().get("connection").is_some_and(|v| v == "close") {
                            told_to_close += 1;
                        }
                        // Read the body so the connection goes back to the pool.
                        if let Err(error) = r.bytes().await {
                            failed.push(format!("request {i}: body: {error}"));
                        }
                    }
                    Ok(r) => failed.push(format!("request {i}: status {}", r.status())),
                    Err(error) => failed.push(format!("request {i}: {error:?}")),
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(PACE).await;
            }
            (failed, told_to_close)
        })
    };
    eventually("requests flow before the signal", || {
        done.load(std::sync::atomic::Ordering::SeqCst) >= BEFORE_STOP
    })
    .await;
    running.stop.send(()).expect("server waits");
    let (failed, told_to_close) = sender.await.expect("sender");
    assert!(
        failed.is_empty(),
        "requests lost across shutdown: {failed:?}"
    );
    assert!(
        told_to_close > 0,
        "some requests were served after the signal"
    );
    running.task.await.expect("task").expect("clean exit");
}
