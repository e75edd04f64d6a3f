//! RabbitMQ stopped (`rabbitmqctl stop_app`) and started again (`start_app`):
//!
//! - while a seed renders: the jobs are in durable quorum queues and were confirmed before
//!   they counted as queued, the worker's connection recovers its consumers, deliveries whose
//!   acks were lost are redelivered and count once, so the seed finishes with every tile done;
//! - before the api and a worker start: the api serves at once (misses rendered here, seeds
//!   refused with 503), the worker waits not ready, and both connect by themselves when the
//!   broker is back.
//!
//! A test binary of its own, each test holding the broker lock from the start: stopping the
//! broker drops every connection on it. A guard starts the broker again if a test fails
//! while it is stopped.

// Shares the distributed tests' helpers; not every helper is used here.
#[allow(dead_code, unused_imports)]
#[path = "distributed/helpers.rs"]
mod helpers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fractile_api::seeds::SeedStatus;
use fractile_render::{RenderError, TileKey, render_tile};
use fractile_test_support::{BrokerLock, rabbitmqctl};
use fractile_worker::{Renderer, Worker};

use helpers::*;

/// The broker application stopped; started again by [`Stopped::start`], or when dropped.
struct Stopped {
    started: bool,
}

impl Stopped {
    fn stop_app() -> Stopped {
        rabbitmqctl(&["stop_app"]);
        Stopped { started: false }
    }

    fn start(mut self) {
        self.started = true;
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if !self.started {
            let _ = std::process::Command::new("rabbitmqctl")
                .arg("start_app")
                .status();
        }
    }
}

fn post_seed(body: &'static str) -> Request<Body> {
    Request::post("/v1/seeds")
        .header(header::AUTHORIZATION, format!("Bearer {SEED_TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {SEED_TOKEN}"))
        .body(Body::from(body))
        .expect("request")
}

/// The seed's status, as a client reads it: a 503 says retry (Redis past its budget on a
/// loaded machine opens the breaker for a moment), anything else but 200 fails the test.
async fn status(app: &axum::Router, location: &str) -> SeedStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let request = Request::get(location)
            .header(header::AUTHORIZATION, format!("Bearer {SEED_TOKEN}"))
            .body(Body::empty())
            .expect("request");
        let response = send(app, request).await;
        let code = response.status();
        if code == StatusCode::SERVICE_UNAVAILABLE && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let body = body_json(response).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        return serde_json::from_value(body).expect("seed status");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_seed_survives_a_broker_restart_with_every_tile_done() {
    let lock = BrokerLock::acquire(Duration::from_secs(300));
    let cluster = Cluster::new().await;
    // Slow renders, so the seed is still running when the broker goes.
    let slow: Renderer = Arc::new(
        |k: TileKey, cancelled: &dyn Fn() -> bool| -> Result<Vec<u8>, RenderError> {
            std::thread::sleep(Duration::from_millis(40));
            render_tile(k.tile, k.style, cancelled)
        },
    );
    let worker = run_worker(
        Worker::new(cluster.worker_config(2))
            .expect("worker")
            .with_renderer(slow),
    );
    let (state, app) = cluster.api(&cluster.api_config()).await;

    let accepted = send(&app, post_seed(r#"{"min_zoom": 0, "max_zoom": 4}"#)).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let location = header(&accepted, "location");
    eventually("the seed is under way", Duration::from_secs(30), || {
        let (app, location) = (app.clone(), location.clone());
        async move { status(&app, &location).await.done >= 20 }
    })
    .await;

    let restart = Instant::now();
    let stopped = Stopped::stop_app();
    let during = status(&app, &location).await;
    stopped.start();
    eprintln!(
        "broker restarted in {:?} with the seed at {}/{}",
        restart.elapsed(),
        during.done,
        during.total
    );
    assert!(during.done < during.total, "the restart was mid-seed");

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = status(&app, &location).await;
        if now.state == "done" {
            break;
        }
        if Instant::now() > deadline {
            let ready = cluster
                .topology
                .ready_messages(&cluster.channel, &cluster.topology.bulk)
                .await;
            panic!(
                "the seed did not finish: {now:?}; bulk queue ready: {ready:?}; worker consumed {}, rendered {}, skipped {}",
                worker.metrics.consumed.with_label_values(&["bulk"]).get(),
                worker
                    .metrics
                    .render
                    .renders
                    .with_label_values(&["ok"])
                    .get(),
                worker.metrics.skipped.with_label_values(&["stored"]).get(),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let done = status(&app, &location).await;
    eprintln!("seed done {:?} after the restart began", restart.elapsed());
    assert_eq!(
        (done.done, done.failed, done.total),
        (341, 0, 341),
        "every tile done once"
    );
    // The api's queue came back too: a miss goes through the worker again.
    let link = state
        .backends
        .as_ref()
        .and_then(|b| b.publisher.clone())
        .expect("a queue");
    assert!(link.wait_connected(Duration::from_secs(60)).await);
    let miss = send(&app, get("/tiles/6/9/9.png")).await;
    assert!(header(&miss, "server-timing").contains("worker;"));
    drop(lock);
    worker.shutdown().await;
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn an_api_and_a_worker_started_during_an_outage_serve_then_connect() {
    let lock = BrokerLock::acquire(Duration::from_secs(300));
    let cluster = Cluster::new().await;
    let stopped = Stopped::stop_app();

    // Both start without the broker: nothing waits for it, nothing fails.
    let worker = start_worker(cluster.worker_config(1));
    let state = fractile_api::AppState::connect(&cluster.api_config())
        .await
        .expect("the api starts without the broker");
    let app = fractile_api::app::app(state.clone());
    let admin = fractile_api::admin::admin_app(state.clone());
    let miss = send(&app, get("/tiles/5/1/2.png")).await;
    assert_eq!(miss.status(), StatusCode::OK);
    assert!(
        header(&miss, "server-timing").starts_with("queue;"),
        "rendered here"
    );
    let ready = send(&admin, get("/readyz")).await;
    assert_eq!(ready.status(), StatusCode::OK, "ready: misses are served");
    assert_eq!(body_json(ready).await["queue"], "down");
    let seed = send(&app, post_seed(r#"{"min_zoom": 0, "max_zoom": 1}"#)).await;
    assert_eq!(seed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&seed, "retry-after"), "1");
    assert_eq!(body_json(seed).await["error"]["code"], "queue_unavailable");

    let restarted = Instant::now();
    stopped.start();
    let link = state
        .backends
        .as_ref()
        .and_then(|b| b.publisher.clone())
        .expect("a queue");
    assert!(
        link.wait_connected(Duration::from_secs(60)).await,
        "the api connects by itself"
    );
    let mut x = 0;
    loop {
        let response = send(&app, get(&format!("/tiles/7/{x}/9.png"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        if header(&response, "server-timing").contains("worker;") {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(60),
            "misses did not reach the worker within 60 s of the broker's return"
        );
        x += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "misses went through the worker {:?} after the broker came back",
        restarted.elapsed()
    );
    let ready = send(&admin, get("/readyz")).await;
    assert_eq!(body_json(ready).await["queue"], "up");
    drop(lock);
    worker.shutdown().await;
    state.background.cancel();
    cluster.cleanup().await;
}
