//! Redis going away and coming back, on a private redis-server so no other test notices.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::http::StatusCode;

use crate::helpers::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn redis_server(port: u16) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed")
}

#[tokio::test]
async fn losing_redis_degrades_to_l1_and_local_renders_then_recovers() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let port = free_port();
    let mut redis = redis_server(port);
    let url = format!("redis://127.0.0.1:{port}");
    eventually(
        "the private redis answers",
        Duration::from_secs(10),
        || async { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() },
    )
    .await;
    let mut config = cluster.api_config();
    config.redis_url = Some(url);
    config.amqp_url = None;
    let (state, app) = cluster.api(&config).await;
    assert_eq!(
        send(&app, get("/tiles/4/1/1.png")).await.status(),
        StatusCode::OK
    );

    redis.kill().expect("kill redis");
    let _ = redis.wait();
    // Cached tiles still come from L1; misses are rendered here; nothing is a 500.
    let hit = send(&app, get("/tiles/4/1/1.png")).await;
    assert_eq!(
        (hit.status(), header(&hit, "x-cache")),
        (StatusCode::OK, "L1".into())
    );
    for x in 2..6 {
        let miss = send(&app, get(&format!("/tiles/4/{x}/1.png"))).await;
        assert_eq!(
            (miss.status(), header(&miss, "x-cache")),
            (StatusCode::OK, "MISS".into())
        );
    }
    assert!(
        state
            .metrics
            .cache_requests
            .with_label_values(&["l2", "error"])
            .get()
            > 0,
        "errors are counted"
    );

    // Redis returns on the same port: the same process uses it again, no restart.
    let mut redis = redis_server(port);
    let (_, fresh) = cluster.api(&config).await;
    // Each round renders a new tile on the first api (its write to Redis happens in the
    // background, and fails while the breaker is still open), then reads it through a replica
    // with a cold L1: once that is an L2 hit, the first api is writing to Redis again.
    let next = AtomicU32::new(0);
    eventually(
        "a replica reads the first api's new renders from L2",
        Duration::from_secs(15),
        || {
            let (app, fresh) = (app.clone(), fresh.clone());
            let uri = format!("/tiles/7/{}/3.png", next.fetch_add(1, Ordering::Relaxed));
            async move {
                assert_eq!(send(&app, get(&uri)).await.status(), StatusCode::OK);
                tokio::time::sleep(Duration::from_millis(100)).await;
                header(&send(&fresh, get(&uri)).await, "x-cache") == "L2"
            }
        },
    )
    .await;
    let _ = redis.kill();
    let _ = redis.wait();
    cluster.cleanup().await;
}
