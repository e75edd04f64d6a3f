//! RabbitMQ force-closing every connection (`rabbitmqctl close_all_connections`): cached
//! tiles keep serving, and the api and the worker reconnect by themselves and render misses
//! through the queue again within seconds.
//!
//! A test binary of its own: closing every connection on the broker would disturb any other
//! test running beside it (cargo runs test binaries one after another); it holds the broker
//! lock while it does.

// Shares the distributed tests' helpers; not every helper is used here.
#[allow(dead_code, unused_imports)]
#[path = "distributed/helpers.rs"]
mod helpers;

use std::process::Command;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fractile_test_support::{BrokerLock, cache_layer};

use helpers::*;

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn api_and_worker_recover_from_force_closed_connections() {
    let cluster = Cluster::new().await;
    let worker = start_worker(cluster.worker_config(2));
    let (state, app) = cluster.api(&cluster.api_config()).await;
    let first = send(&app, get("/tiles/6/1/1.png")).await;
    assert!(
        header(&first, "server-timing").contains("worker;"),
        "rendered by the worker"
    );

    let lock = BrokerLock::acquire(Duration::from_secs(300));
    let closed = Command::new("rabbitmqctl")
        .args(["close_all_connections", "fractile broker-outage test"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        closed.status.success(),
        "rabbitmqctl: {}",
        String::from_utf8_lossy(&closed.stderr)
    );
    let outage = Instant::now();

    // Cached tiles are served throughout.
    let cached = send(&app, get("/tiles/6/1/1.png")).await;
    assert_eq!(
        (cached.status(), cache_layer(&cached).to_owned()),
        (StatusCode::OK, "L1".into())
    );

    // Every miss is answered (by the worker, or rendered here while the queue recovers)
    // until one goes through the worker again.
    let mut x = 2;
    let recovered = loop {
        let response = send(&app, get(&format!("/tiles/6/{x}/1.png"))).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "a miss during the outage"
        );
        if header(&response, "server-timing").contains("worker;") {
            break outage.elapsed();
        }
        assert!(
            outage.elapsed() < Duration::from_secs(30),
            "no recovery within 30 s"
        );
        x += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "misses went through the queue again {recovered:?} after the connections were closed"
    );
    assert!(worker.metrics.render.count("ok") >= 2);
    assert!(
        state
            .metrics
            .publishes
            .with_label_values(&["interactive", "ok"])
            .get()
            >= 2
    );
    drop(lock);
    worker.shutdown().await;
    // The inspection connection was closed too; the guard cleans up on connections of its own.
    cluster.cleanup().await;
}
