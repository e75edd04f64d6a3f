//! Seeds through the api: accepted, expanded, rendered by workers, reported, re-run,
//! refused when too large, cancelled; and interactive misses while a big seed runs.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fractile_api::seeds::SeedStatus;
use fractile_render::{MaxZoom, Style, TileKey, TileRange};

use crate::helpers::*;

fn post_seed(body: &str) -> Request<Body> {
    Request::post("/v1/seeds")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .expect("valid request")
}

async fn status(app: &axum::Router, location: &str) -> SeedStatus {
    let response = send(app, get(location)).await;
    assert_eq!(response.status(), StatusCode::OK);
    serde_json::from_value(body_json(response).await).expect("seed status")
}

#[tokio::test]
async fn a_seed_renders_every_tile_and_a_rerun_skips_them() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
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
async fn bad_seeds_are_refused_before_anything_is_queued() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
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
    let unknown = send(&app, get("/v1/seeds/00000000000000000000000000000000")).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let garbage = send(&app, get("/v1/seeds/..%2f..%2fetc")).await;
    assert_eq!(garbage.status(), StatusCode::NOT_FOUND);

    // Embedded mode has nobody to render seeds.
    let embedded = fractile_api::app::app(
        fractile_api::AppState::new(&fractile_api::Config::for_tests()).expect("state"),
    );
    let response = send(&embedded, post_seed(r#"{"min_zoom": 0, "max_zoom": 1}"#)).await;
    assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
    cluster.cleanup().await;
}

#[tokio::test]
async fn interactive_misses_meet_their_deadline_while_a_big_seed_runs() {
    const INTERACTIVE: u32 = 24;
    let Some(cluster) = Cluster::new().await else {
        return;
    };
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
        assert_eq!(header(&response, "x-cache"), "MISS");
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
    let cancelled = send(
        &app,
        Request::delete(location.as_str())
            .body(Body::empty())
            .expect("valid"),
    )
    .await;
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
