//! Seeds through the api: accepted, expanded, rendered by workers, reported, re-run,
//! refused when too large, cancelled; interactive misses while a big seed runs; the
//! deployment's quotas, shared by replicas; and 503s while Redis is unreachable (a full state
//! store: `tests/state_store.rs`).

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use fractile_api::seeds::SeedStatus;
use fractile_render::{MaxZoom, Style, TileKey, TileRange};

use crate::helpers::*;

pub(crate) fn post_seed(body: &str) -> Request<Body> {
    seed_call(Method::POST, "/v1/seeds", body)
}

pub(crate) fn get_seed(location: &str) -> Request<Body> {
    seed_call(Method::GET, location, "")
}

pub(crate) fn cancel_seed(location: &str) -> Request<Body> {
    seed_call(Method::DELETE, location, "")
}

async fn status(app: &axum::Router, location: &str) -> SeedStatus {
    let response = send(app, get_seed(location)).await;
    assert_eq!(response.status(), StatusCode::OK);
    serde_json::from_value(body_json(response).await).expect("seed status")
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_seed_renders_every_tile_and_a_rerun_skips_them() {
    let cluster = Cluster::new().await;
    let worker = start_worker(cluster.worker_config(2));
    let (_, app) = cluster.api(&cluster.api_config()).await;

    let accepted = send(
        &app,
        post_seed(r#"{"min_zoom": 0, "max_zoom": 3, "style": "fire"}"#),
    )
    .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let location = header(&accepted, "location");
    assert!(location.starts_with("/v1/seeds/"));
    let first: SeedStatus = serde_json::from_value(body_json(accepted).await).expect("status");
    assert_eq!(first.total, 85);

    eventually("the seed is done", Duration::from_secs(60), || {
        let (app, location) = (app.clone(), location.clone());
        async move { status(&app, &location).await.state == "done" }
    })
    .await;
    let done = status(&app, &location).await;
    assert_eq!((done.done, done.failed, done.queued), (85, 0, 85));
    let tiles: Vec<TileKey> = (0..=3)
        .flat_map(|z| TileRange::whole(z, MaxZoom::LIMIT).expect("valid").tiles())
        .map(|tile| TileKey {
            tile,
            style: Style::Fire,
        })
        .collect();
    assert!(
        cluster
            .store
            .exists(&tiles)
            .await
            .expect("redis")
            .iter()
            .all(|s| *s),
        "every tile stored"
    );

    let rerun = send(
        &app,
        post_seed(r#"{"min_zoom": 0, "max_zoom": 3, "style": "fire"}"#),
    )
    .await;
    let rerun_location = header(&rerun, "location");
    eventually("the re-run is done", Duration::from_secs(30), || {
        let (app, location) = (app.clone(), rerun_location.clone());
        async move { status(&app, &location).await.state == "done" }
    })
    .await;
    let again = status(&app, &rerun_location).await;
    assert_eq!(
        (again.skipped, again.queued, again.done),
        (85, 0, 85),
        "nothing re-queued"
    );
    worker.shutdown().await;
    cluster.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn bad_seeds_are_refused_before_anything_is_queued() {
    let cluster = Cluster::new().await;
    let mut config = cluster.api_config();
    config.seed_max_tiles = 1000;
    let (_, app) = cluster.api(&config).await;
    let too_big = send(&app, post_seed(r#"{"min_zoom": 0, "max_zoom": 6}"#)).await;
    assert_eq!(too_big.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = body_json(too_big).await;
    assert_eq!(body["error"]["code"], "seed_too_large");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("5461") && message.contains("1000"),
        "{message}"
    );
    assert_eq!(
        cluster
            .topology
            .ready_messages(&cluster.channel, &cluster.topology.bulk)
            .await
            .expect("queue"),
        0
    );

    for body in [
        r#"{"min_zoom": 3, "max_zoom": 1}"#,
        r#"{"min_zoom": 0}"#,
        "not json",
        r#"{"min_zoom": 0, "max_zoom": 1, "extra": 1}"#,
    ] {
        let response = send(&app, post_seed(body)).await;
        assert!(
            response.status().is_client_error(),
            "{body}: {}",
            response.status()
        );
        assert!(body_json(response).await["error"]["code"].is_string());
    }
    let unknown = send(&app, get_seed("/v1/seeds/00000000000000000000000000000000")).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let garbage = send(&app, get_seed("/v1/seeds/..%2f..%2fetc")).await;
    assert_eq!(garbage.status(), StatusCode::NOT_FOUND);

    // Embedded mode has nobody to render seeds.
    let embedded =
        fractile_api::app::app(fractile_api::AppState::new(&cluster.api_config()).expect("state"));
    let response = send(&embedded, post_seed(r#"{"min_zoom": 0, "max_zoom": 1}"#)).await;
    assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
    cluster.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn interactive_misses_meet_their_deadline_while_a_big_seed_runs() {
    const INTERACTIVE: u32 = 24;
    let cluster = Cluster::new().await;
    let worker = start_worker(cluster.worker_config(2));
    let config = cluster.api_config();
    let deadline = config.render_timeout;
    let (_, app) = cluster.api(&config).await;

    // Zooms 0-6: 5461 tiles, far more than the worker renders during this test.
    let accepted = send(&app, post_seed(r#"{"min_zoom": 0, "max_zoom": 6}"#)).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let location = header(&accepted, "location");
    eventually(
        "the seed is being worked on",
        Duration::from_secs(30),
        || {
            let (app, location) = (app.clone(), location.clone());
            async move { status(&app, &location).await.done >= 10 }
        },
    )
    .await;

    // Interactive misses, in another style so the seed cannot have rendered them.
    let mut slowest = Duration::ZERO;
    for i in 0..INTERACTIVE {
        let started = Instant::now();
        let response = send(
            &app,
            get(&format!(
                "/tiles/7/{}/{}.png?style=grayscale",
                40 + i,
                50 + i % 5
            )),
        )
        .await;
        let took = started.elapsed();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "interactive miss {i} during the seed"
        );
        assert_eq!(cache_layer(&response).to_owned(), "MISS");
        slowest = slowest.max(took);
    }
    assert!(
        slowest < deadline,
        "slowest interactive miss {slowest:?} within the {deadline:?} deadline"
    );
    let during = status(&app, &location).await;
    assert!(
        during.done < during.total,
        "the seed was still running: {} of {}",
        during.done,
        during.total
    );
    eprintln!(
        "interactive misses during a {}-tile seed: slowest {slowest:?}",
        during.total
    );

    // Cancelling stops the rest: workers skip the remaining jobs.
    let cancelled = send(&app, cancel_seed(&location)).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    eventually(
        "workers skip the cancelled seed's jobs",
        Duration::from_secs(30),
        || async {
            worker
                .metrics
                .skipped
                .with_label_values(&["cancelled"])
                .get()
                > 0
        },
    )
    .await;
    assert_eq!(status(&app, &location).await.state, "cancelled");
    worker.shutdown().await;
    cluster.cleanup().await;
}

/// Two replicas of one deployment (one key prefix, each with its own state), so a quota
/// that held per process only would let twice as much through.
async fn two_replicas(cluster: &Cluster, config: &fractile_api::Config) -> [axum::Router; 2] {
    let (_, first) = cluster.api(config).await;
    let (_, second) = cluster.api(config).await;
    [first, second]
}

async fn assert_quota_refusal(response: axum::http::Response<Body>, code: &str, mentions: &str) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&response, "retry-after"), "60");
    let body = body_json(response).await;
    assert_eq!(body["error"]["code"], code);
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains(mentions), "{message}");
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn the_active_seed_quota_holds_across_replicas_under_concurrent_posts() {
    const MAX_ACTIVE: u32 = 3;
    let cluster = Cluster::new().await;
    let mut config = cluster.api_config();
    config.seed_max_active = NonZeroU32::new(MAX_ACTIVE).expect("non-zero");
    let replicas = two_replicas(&cluster, &config).await;

    // No worker runs: accepted seeds stay unfinished, so each holds its place.
    let posts: Vec<_> = (0..12)
        .map(|i| {
            let app = replicas[i % 2].clone();
            tokio::spawn(
                async move { send(&app, post_seed(r#"{"min_zoom": 0, "max_zoom": 2}"#)).await },
            )
        })
        .collect();
    let mut accepted = Vec::new();
    for post in posts {
        let response = post.await.expect("task");
        if response.status() == StatusCode::ACCEPTED {
            accepted.push(header(&response, "location"));
        } else {
            assert_quota_refusal(response, "seed_quota_active", "FRACTILE_SEED_MAX_ACTIVE=3").await;
        }
    }
    assert_eq!(
        accepted.len(),
        MAX_ACTIVE as usize,
        "accepted: {accepted:?}"
    );

    // Cancelling one (on either replica) frees its place for the next.
    let cancelled = send(&replicas[1], cancel_seed(&accepted[0])).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let again = send(&replicas[0], post_seed(r#"{"min_zoom": 0, "max_zoom": 2}"#)).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let full = send(&replicas[1], post_seed(r#"{"min_zoom": 0, "max_zoom": 2}"#)).await;
    assert_quota_refusal(full, "seed_quota_active", "3 seeds").await;
    cluster.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn the_queued_tiles_quota_counts_unfinished_seeds_of_every_replica() {
    let cluster = Cluster::new().await;
    let mut config = cluster.api_config();
    config.seed_max_active = NonZeroU32::new(10).expect("non-zero");
    config.seed_max_queued_tiles = 100;
    let [first, second] = two_replicas(&cluster, &config).await;

    let big = send(&first, post_seed(r#"{"min_zoom": 0, "max_zoom": 3}"#)).await;
    assert_eq!(big.status(), StatusCode::ACCEPTED, "85 tiles");
    let big_location = header(&big, "location");
    let over = send(&second, post_seed(r#"{"min_zoom": 0, "max_zoom": 2}"#)).await;
    assert_quota_refusal(over, "seed_quota_tiles", "hold 85 tiles").await;
    let fits = send(&second, post_seed(r#"{"min_zoom": 0, "max_zoom": 1}"#)).await;
    assert_eq!(fits.status(), StatusCode::ACCEPTED, "85 + 5 tiles");
    // A seed that could never fit is refused for good, not asked to retry.
    let never = send(&second, post_seed(r#"{"min_zoom": 0, "max_zoom": 4}"#)).await;
    assert_eq!(
        never.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "341 tiles"
    );

    // A worker finishing the seeds gives their tiles back.
    let worker = start_worker(cluster.worker_config(2));
    eventually("the seeds are done", Duration::from_secs(60), || {
        let (app, location) = (first.clone(), big_location.clone());
        async move { status(&app, &location).await.state == "done" }
    })
    .await;
    let after = send(&second, post_seed(r#"{"min_zoom": 0, "max_zoom": 2}"#)).await;
    assert_eq!(after.status(), StatusCode::ACCEPTED);
    worker.shutdown().await;
    cluster.cleanup().await;
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn with_redis_unreachable_every_seed_route_is_503_with_retry_after_logged_once() {
    let cluster = Cluster::new().await;
    // A closed port (Redis down) and a listener that never answers (Redis hung).
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_port = hung.local_addr().expect("addr").port();
    for port in [closed_port(), hung_port] {
        let logs = Captured::default();
        let _guard = logs.start();
        let mut config = cluster.api_config();
        config.redis_url = Some(format!("redis://127.0.0.1:{port}").into());
        let state = fractile_api::AppState::connect(&config)
            .await
            .expect("api starts without Redis");
        // The queue is up: what is refused here is Redis, not the queue (a seed is refused
        // with 503 queue_unavailable until the api's background connection is made).
        let link = state
            .backends
            .as_ref()
            .and_then(|b| b.publisher.clone())
            .expect("a queue is configured");
        assert!(
            link.wait_connected(Duration::from_secs(10)).await,
            "the api connects"
        );
        let app = fractile_api::app::app(state);
        let location = "/v1/seeds/0123456789abcdef0123456789abcdef";
        for _ in 0..2 {
            for request in [
                post_seed(r#"{"min_zoom": 0, "max_zoom": 2}"#),
                get_seed(location),
                cancel_seed(location),
            ] {
                let what = format!("{} {} (port {port})", request.method(), request.uri());
                let started = Instant::now();
                let response = send(&app, request).await;
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "{what} took {:?}",
                    started.elapsed()
                );
                assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
                assert_eq!(header(&response, "retry-after"), "1", "{what}");
                assert_eq!(header(&response, "cache-control"), "no-store", "{what}");
                let body = body_json(response).await;
                assert_eq!(body["error"]["code"], "seed_store_unavailable", "{what}");
            }
        }
        let text = logs.text();
        let lines = text.matches("(Redis) is unavailable").count();
        // One line per interval: the first port's line suppresses the second's.
        let expected = usize::from(port != hung_port);
        assert_eq!(lines, expected, "port {port}; logs:\n{text}");
    }
    drop(hung);
    cluster.cleanup().await;
}

/// The seed-progress SLI (`seed_minutes_total`, sampled once a period for the deployment): a
/// seed whose jobs nobody renders stalls each period, and advances once a worker takes them.
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_seed_without_workers_stalls_and_advances_once_one_runs() {
    let cluster = Cluster::new().await;
    let mut config = cluster.api_config();
    config.seed_progress_period = Duration::from_secs(1);
    let (state, app) = cluster.api(&config).await;
    let minutes = |outcome: &str| {
        state
            .metrics
            .seed_minutes
            .with_label_values(&[outcome])
            .get()
    };

    let accepted = send(
        &app,
        post_seed(r#"{"min_zoom": 0, "max_zoom": 5, "style": "fire"}"#),
    )
    .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let location = header(&accepted, "location");
    eventually(
        "a period counted stalled",
        Duration::from_secs(20),
        || async { minutes("stalled") >= 1 },
    )
    .await;
    assert_eq!(minutes("advanced"), 0, "no worker, no tile finished");

    let worker = start_worker(cluster.worker_config(2));
    eventually(
        "a period counted advanced",
        Duration::from_secs(30),
        || async { minutes("advanced") >= 1 },
    )
    .await;

    assert_eq!(
        send(&app, cancel_seed(&location)).await.status(),
        StatusCode::OK
    );
    worker.shutdown().await;
    cluster.cleanup().await;
}
