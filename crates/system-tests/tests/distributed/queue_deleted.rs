//! The render queue deleted while the api runs: publishes are mandatory, so the broker
//! returns the job instead of dropping it; the api counts it, serves the miss itself, and
//! declares the topology again, after which misses go through the queue once more.

use std::time::Duration;

use axum::http::StatusCode;

use crate::helpers::*;

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_deleted_queue_is_detected_served_around_and_declared_again() {
    let cluster = Cluster::new().await;
    let (state, app) = cluster.api(&cluster.api_config()).await;
    cluster
        .channel
        .queue_delete(
            cluster.topology.interactive.as_str().into(),
            Default::default(),
        )
        .await
        .expect("queue deleted");
    assert!(!cluster.queue_exists(&cluster.topology.interactive).await);

    // The job comes back unroutable: the miss is rendered here, not lost to a deadline.
    let miss = send(&app, get("/tiles/5/3/3.png")).await;
    assert_eq!(miss.status(), StatusCode::OK);
    assert!(
        header(&miss, "server-timing").starts_with("queue;"),
        "rendered here: {}",
        header(&miss, "server-timing")
    );
    let returned = || {
        state
            .metrics
            .publishes
            .with_label_values(&["interactive", "returned"])
            .get()
    };
    assert_eq!(returned(), 1, "the returned job is counted");

    // The api declared the queue again by itself.
    eventually(
        "the queue exists again",
        Duration::from_secs(10),
        || async { cluster.queue_exists(&cluster.topology.interactive).await },
    )
    .await;
    let worker = start_worker(cluster.worker_config(1));
    let queued = send(&app, get("/tiles/5/4/3.png")).await;
    assert_eq!(queued.status(), StatusCode::OK);
    assert!(
        header(&queued, "server-timing").contains("worker;"),
        "through the queue again: {}",
        header(&queued, "server-timing")
    );
    assert_eq!(returned(), 1);
    worker.shutdown().await;
    cluster.cleanup().await;
}
