//! An api whose broker never answers (its URL points at a closed port): it starts at once,
//! serves misses per `FRACTILE_QUEUE_FALLBACK`, refuses seeds with 503, and stays ready.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fractile_api::AppState;
use fractile_api::config::QueueFallback;
use fractile_test_support::closed_port;

use crate::helpers::*;

async fn api_without_broker(
    cluster: &Cluster,
    fallback: QueueFallback,
) -> (AppState, axum::Router) {
    let mut config = cluster.api_config();
    config.amqp_url = Some(format!("amqp://guest:guest@127.0.0.1:{}/%2f", closed_port()).into());
    config.queue_fallback = fallback;
    let state = AppState::connect(&config)
        .await
        .expect("the api starts without its broker");
    let app = fractile_api::app::app(state.clone());
    (state, app)
}

async fn readyz(state: &AppState) -> (StatusCode, serde_json::Value) {
    let response = send(
        &fractile_api::admin::admin_app(state.clone()),
        get("/readyz"),
    )
    .await;
    (response.status(), body_json(response).await)
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn without_its_broker_the_api_renders_misses_here_and_refuses_seeds() {
    let cluster = Cluster::new().await;
    let (state, app) = api_without_broker(&cluster, QueueFallback::Local).await;
    let miss = send(&app, get("/tiles/4/2/2.png")).await;
    assert_eq!(miss.status(), StatusCode::OK);
    assert!(header(&miss, "server-timing").starts_with("queue;"));
    let hit = send(&app, get("/tiles/4/2/2.png")).await;
    assert_eq!(cache_layer(&hit).to_owned(), "L1");
    let (status, body) = readyz(&state).await;
    assert_eq!(
        (status, body["queue"].as_str()),
        (StatusCode::OK, Some("down"))
    );

    let seed = send(
        &app,
        Request::post("/v1/seeds")
            .header(header::AUTHORIZATION, format!("Bearer {SEED_TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {SEED_TOKEN}"))
            .body(Body::from(r#"{"min_zoom": 0, "max_zoom": 1}"#))
            .expect("request"),
    )
    .await;
    assert_eq!(seed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&seed, "retry-after"), "1");
    assert_eq!(body_json(seed).await["error"]["code"], "queue_unavailable");
    state.background.cancel();
    cluster.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn without_its_broker_a_rejecting_api_answers_misses_503_and_stays_ready() {
    let cluster = Cluster::new().await;
    let (state, app) = api_without_broker(&cluster, QueueFallback::Reject).await;
    let miss = send(&app, get("/tiles/4/3/3.png")).await;
    assert_eq!(miss.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&miss, "retry-after"), "1");
    assert_eq!(body_json(miss).await["error"]["code"], "render_unavailable");
    assert_eq!(
        state
            .metrics
            .publishes
            .with_label_values(&["interactive", "unavailable"])
            .get(),
        1
    );
    // Hits are still served, so the replica stays in the load balancer.
    let (status, body) = readyz(&state).await;
    assert_eq!(
        (status, body["queue"].as_str()),
        (StatusCode::OK, Some("down"))
    );
    state.background.cancel();
    cluster.cleanup().await;
}
