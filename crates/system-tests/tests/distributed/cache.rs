//! The shared L2 and misses through the queue, on one and on several api replicas.

use std::time::Duration;

use axum::http::StatusCode;
use fractile_render::{MaxZoom, RENDER_VERSION, Style, TileId, TileKey};

use crate::helpers::*;

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn replicas_share_tiles_through_redis() {
    let cluster = Cluster::new().await;
    // Redis only: each replica renders its own misses and shares them through L2.
    let mut config = cluster.api_config();
    config.amqp_url = None;
    let (_, first) = cluster.api(&config).await;
    let (second_state, second) = cluster.api(&config).await;

    let miss = send(&first, get("/tiles/6/10/20.png")).await;
    assert_eq!(
        (miss.status(), header(&miss, "x-cache")),
        (StatusCode::OK, "MISS".into())
    );
    let key = TileKey {
        tile: TileId::new(6, 10, 20, MaxZoom::LIMIT).expect("valid"),
        style: Style::Classic,
    };
    eventually(
        "the render reaches Redis",
        Duration::from_secs(5),
        || async { matches!(cluster.store.get(&key).await, Ok(Some(_))) },
    )
    .await;
    let shared = send(&second, get("/tiles/6/10/20.png")).await;
    assert_eq!(header(&shared, "x-cache"), "L2");
    assert!(header(&shared, "server-timing").starts_with("l2;"));
    let hits = second_state
        .metrics
        .cache_requests
        .with_label_values(&["l2", "hit"])
        .get();
    assert_eq!(hits, 1);

    // Keys carry the renderer version (a new renderer never reads old tiles) and a TTL.
    let mut c = redis_connection(&cluster.redis).await;
    let redis_key = format!("{}tile:{RENDER_VERSION}:classic:6:10:20", cluster.prefix);
    let ttl: i64 = redis::cmd("TTL")
        .arg(&redis_key)
        .query_async(&mut c)
        .await
        .expect("ttl");
    assert!(ttl > 0, "tiles expire (TTL {ttl})");
    cluster.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_tile_rendered_by_the_api_is_announced_with_its_render_time() {
    let cluster = Cluster::new().await;
    // Redis only: the api renders the miss itself, then stores and announces it as a worker
    // would, for replicas that wait on its claim.
    let mut config = cluster.api_config();
    config.amqp_url = None;
    let (state, app) = cluster.api(&config).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let listener = cluster.store.ready_listener(stop.clone());
    assert!(listener.wait_connected(Duration::from_secs(5)).await);
    let key = TileKey {
        tile: TileId::new(7, 30, 40, MaxZoom::LIMIT).expect("valid"),
        style: Style::Classic,
    };
    let mut announcement = listener.register(&key);

    let miss = send(&app, get("/tiles/7/30/40.png")).await;
    assert_eq!(header(&miss, "x-cache"), "MISS");
    let note = tokio::time::timeout(Duration::from_secs(5), announcement.announced())
        .await
        .expect("the api announces its render");
    assert_eq!(note.worker, "api");
    // The render's own time, not a placeholder: it took more than zero and is what the
    // response reported in Server-Timing.
    assert!(note.render_ms > 0.0, "render_ms {}", note.render_ms);
    assert_eq!(state.metrics.renders_with("ok"), 1);
    let timing = header(&miss, "server-timing");
    let reported: f64 = timing
        .split(", ")
        .find_map(|part| part.strip_prefix("render;dur="))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no render time in {timing:?}"));
    assert!(
        (note.render_ms - reported).abs() < 0.01,
        "announced {} ms, Server-Timing says {reported} ms",
        note.render_ms
    );
    stop.cancel();
    cluster.cleanup().await;
}

async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("url");
    client
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_miss_is_rendered_by_a_worker() {
    let cluster = Cluster::new().await;
    let worker = start_worker(cluster.worker_config(2));
    let (state, app) = cluster.api(&cluster.api_config()).await;
    let response = send(&app, get("/tiles/5/7/9.png?style=ocean")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-cache"), "MISS");
    // Every stage of the queued miss, the worker's own account included.
    let timing = header(&response, "server-timing");
    let stages: Vec<&str> = timing
        .split(", ")
        .filter_map(|part| part.split(';').next())
        .collect();
    assert_eq!(
        stages,
        [
            "l2", "claim", "publish", "transit", "worker", "render", "fetch", "wait", "total"
        ],
        "{timing}"
    );
    let dur = |stage: &str| -> f64 {
        timing
            .split(", ")
            .find(|part| part.starts_with(&format!("{stage};")))
            .and_then(|part| part.rsplit_once("dur="))
            .and_then(|(_, ms)| ms.parse().ok())
            .unwrap_or_else(|| panic!("no {stage} time in {timing}"))
    };
    assert!(
        dur("render") > 0.0 && dur("render") <= dur("worker"),
        "{timing}"
    );
    assert!(dur("worker") < dur("wait"), "{timing}");
    assert_eq!(
        state.metrics.renders_with("ok"),
        0,
        "the api rendered nothing itself"
    );
    assert_eq!(worker.metrics.render.count("ok"), 1);
    assert_eq!(
        state
            .metrics
            .publishes
            .with_label_values(&["interactive", "ok"])
            .get(),
        1
    );
    worker.shutdown().await;
    cluster.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_cold_tile_requested_on_three_replicas_renders_once() {
    const REQUESTS: usize = 60;
    let cluster = Cluster::new().await;
    let worker = start_worker(cluster.worker_config(2));
    let config = cluster.api_config();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(cluster.api(&config).await);
    }
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let app = replicas[i % 3].1.clone();
            tokio::spawn(async move { send(&app, get("/tiles/8/128/121.png")).await })
        })
        .collect();
    for task in tasks {
        let response = task.await.expect("task");
        assert_eq!(response.status(), StatusCode::OK);
    }
    // One render claim across the replicas, so one job and one render.
    assert_eq!(worker.metrics.render.count("ok"), 1);
    let published: u64 = replicas
        .iter()
        .map(|(state, _)| {
            state
                .metrics
                .publishes
                .with_label_values(&["interactive", "ok"])
                .get()
        })
        .sum();
    assert_eq!(published, 1);
    let api_renders: u64 = replicas
        .iter()
        .map(|(state, _)| state.metrics.renders_with("ok"))
        .sum();
    assert_eq!(api_renders, 0);
    worker.shutdown().await;
    cluster.cleanup().await;
}
