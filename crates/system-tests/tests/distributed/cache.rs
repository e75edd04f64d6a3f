//! The shared L2 and misses through the queue, on one and on several api replicas.

use std::time::Duration;

use axum::http::StatusCode;
use fractile_render::{MaxZoom, RENDER_VERSION, Style, TileId, TileKey};

use fractile_test_support::redis_connection;

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
        (miss.status(), cache_layer(&miss).to_owned()),
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
    assert_eq!(cache_layer(&shared).to_owned(), "L2");
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
    assert_eq!(cache_layer(&miss).to_owned(), "MISS");
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

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_miss_is_rendered_by_a_worker() {
    let cluster = Cluster::new().await;
    let worker = start_worker(cluster.worker_config(2));
    let (state, app) = cluster.api(&cluster.api_config()).await;
    let response = send(&app, get("/tiles/5/7/9.png?style=ocean")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(cache_layer(&response).to_owned(), "MISS");
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

/// Found by the SIGKILL step of the end-to-end test: a replica killed between taking a
/// render claim and publishing its job left a claim that lived for the render deadline, and
/// every replica that joined it waited the whole deadline for a render nobody had asked for
/// (503 `render_timeout` after 5 s). Now a claim lives a second until its job is published,
/// and a waiting miss takes a lapsed one over and publishes the job.
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_claim_whose_replica_died_before_publishing_is_taken_over() {
    let cluster = Cluster::new().await;
    let worker = start_worker(cluster.worker_config(2));
    let mut config = cluster.api_config();
    config.render_timeout = Duration::from_secs(5);
    let (state, app) = cluster.api(&config).await;
    // The claim a dead replica left: taken, never published, never held for longer.
    let tile = TileId::new(8, 100, 121, MaxZoom::LIMIT).expect("valid");
    let claim = format!(
        "{}rendering:{RENDER_VERSION}:classic:{}:{}:{}",
        cluster.prefix,
        tile.z(),
        tile.x(),
        tile.y()
    );
    let mut c = redis_connection(&cluster.redis).await;
    let _: () = redis::cmd("SET")
        .arg(&claim)
        .arg(1)
        .arg("PX")
        .arg(1000)
        .query_async(&mut c)
        .await
        .expect("SET");
    let started = std::time::Instant::now();
    let response = send(&app, get("/tiles/8/100/121.png")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?} on a claim nobody would honour",
        started.elapsed()
    );
    assert_eq!(state.metrics.claims_taken_over.get(), 1);
    assert_eq!(worker.metrics.render.count("ok"), 1);
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

/// Anything that can write to the cache Redis used to make every replica serve its bytes as
/// a tile (`SET …:tile:r3:fire:5:9:13 '<script>…'` was served as `200 image/png`,
/// `immutable`, and stayed in L1). Now a value is checked before it is served or kept:
/// bytes that are not a tile are refused, and so, with the deployment's MAC key, is a real
/// tile copied under another tile's key. Each is counted, deleted, and the tile rendered.
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn bytes_in_redis_that_are_not_the_tile_are_refused_and_the_tile_rendered() {
    let cluster = Cluster::new().await;
    // Redis only: the replica renders what it refuses.
    let mut config = cluster.api_config();
    config.amqp_url = None;
    let key = |z, x, y| TileKey {
        tile: TileId::new(z, x, y, MaxZoom::LIMIT).expect("valid"),
        style: Style::Fire,
    };
    let redis_key = |k: &TileKey| {
        let t = k.tile;
        let p = &cluster.prefix;
        format!(
            "{p}tile:{RENDER_VERSION}:fire:{}:{}:{}",
            t.z(),
            t.x(),
            t.y()
        )
    };
    let render =
        |k: &TileKey| fractile_render::render_tile(k.tile, k.style, &|| false).expect("renders");
    let mut c = redis_connection(&cluster.redis).await;
    let mut set = async |k: &TileKey, value: &[u8]| {
        let _: () = redis::cmd("SET")
            .arg(redis_key(k))
            .arg(value)
            .query_async(&mut c)
            .await
            .expect("SET");
    };
    // A script where a tile should be, and a real tile (stored under its own key, as a
    // worker stores it) copied under another tile's key.
    let (scripted, real, copied) = (key(5, 9, 13), key(2, 1, 1), key(3, 2, 2));
    set(&scripted, b"<script>alert(1)</script>").await;
    cluster
        .store
        .put(&real, &render(&real))
        .await
        .expect("redis");
    let real_value: Vec<u8> = redis::cmd("GET")
        .arg(redis_key(&real))
        .query_async(&mut redis_connection(&cluster.redis).await)
        .await
        .expect("GET");
    set(&copied, &real_value).await;

    let (state, app) = cluster.api(&config).await;
    for (victim, path) in [
        (scripted, "/tiles/5/9/13.png?style=fire"),
        (copied, "/tiles/3/2/2.png?style=fire"),
    ] {
        let response = send(&app, get(path)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        assert_eq!(
            body.as_ref(),
            render(&victim).as_slice(),
            "{path}: the tile itself"
        );
    }
    let invalid = state
        .metrics
        .cache_requests
        .with_label_values(&["l2", "invalid"])
        .get();
    assert_eq!(invalid, 2);
    // The refused values are gone; the renders took their place.
    for victim in [scripted, copied] {
        eventually(
            "the render replaced the refused bytes",
            Duration::from_secs(5),
            || async {
                cluster.store.get(&victim).await.expect("redis").as_deref()
                    == Some(render(&victim).as_slice())
            },
        )
        .await;
    }

    // A deployment without a key still refuses what is not a tile's shape.
    config.redis.tile_mac_key = None;
    let (_, unkeyed) = cluster.api(&config).await;
    let other = key(5, 9, 14);
    set(&other, b"<script>alert(1)</script>").await;
    let response = send(&unkeyed, get("/tiles/5/9/14.png?style=fire")).await;
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    assert_eq!(body.as_ref(), render(&other).as_slice());
    cluster.cleanup().await;
}

/// Anyone who can publish to the tile-ready channel can send it garbage, as fast as they
/// like: each replica says so once per interval, not once per message (20,000 malformed
/// announcements wrote 60,000 WARN lines on three replicas), and keeps waking waiters.
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn malformed_announcements_are_logged_once_per_interval() {
    let cluster = Cluster::new().await;
    let logs = Captured::default();
    let _guard = logs.start();
    let stop = tokio_util::sync::CancellationToken::new();
    let ready = cluster.store.ready_listener(stop.clone());
    assert!(ready.wait_connected(Duration::from_secs(5)).await);
    let tile = TileKey {
        tile: TileId::new(1, 1, 1, MaxZoom::LIMIT).expect("valid"),
        style: Style::Classic,
    };
    let mut wait = ready.register(&tile);
    let channel = format!("{}tile-ready", cluster.prefix);
    let mut c = redis_connection(&cluster.redis).await;
    for i in 0..500 {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(format!("not json {i}"))
            .query_async(&mut c)
            .await
            .expect("PUBLISH");
    }
    let note = serde_json::json!({"key": tile.to_string(), "worker": "w", "render_ms": 1.0});
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(note.to_string())
        .query_async(&mut c)
        .await
        .expect("PUBLISH");
    tokio::time::timeout(Duration::from_secs(5), wait.announced())
        .await
        .expect("a good announcement still wakes its waiter after the garbage");
    let text = logs.text();
    assert_eq!(
        text.matches("malformed tile-ready announcement").count(),
        1,
        "{text}"
    );
    stop.cancel();
    cluster.cleanup().await;
}

/// Anyone who can publish to a render queue can send it garbage: the worker dead-letters
/// every message and says so once per interval, not once per message.
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_flood_of_invalid_jobs_is_dead_lettered_and_logged_once_per_interval() {
    let cluster = Cluster::new().await;
    let logs = Captured::default();
    let _guard = logs.start();
    let worker = start_worker(cluster.worker_config(1));
    const GARBAGE: u32 = 200;
    for i in 0..GARBAGE {
        cluster
            .channel
            .basic_publish(
                "".into(),
                cluster.topology.interactive.as_str().into(),
                Default::default(),
                format!("not a job {i}").as_bytes(),
                Default::default(),
            )
            .await
            .expect("published");
    }
    eventually(
        "every message is dead-lettered",
        Duration::from_secs(30),
        || async {
            cluster
                .topology
                .ready_messages(&cluster.channel, &cluster.topology.dead)
                .await
                .is_ok_and(|n| n == GARBAGE)
        },
    )
    .await;
    worker.shutdown().await;
    let text = logs.text();
    assert_eq!(
        text.matches("dead-lettering an invalid job").count(),
        1,
        "{text}"
    );
    cluster.cleanup().await;
}
