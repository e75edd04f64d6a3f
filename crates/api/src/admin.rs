//! The admin port: probes and metrics. It is never behind the load balancer and never shed,
//! so an overloaded instance still answers its probes and its scrape.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, extract::State};
use serde_json::json;

use crate::state::AppState;

/// `/livez`, `/readyz`, `/metrics`, and `/faults` (refused unless fault injection is on).
pub fn admin_app(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .merge(fractile_runtime::faults::router(state.faults))
        .layer(axum::middleware::map_response(fractile_runtime::no_store))
}

/// The process is up. Checks no dependency: a restart would not fix one.
async fn livez() -> impl IntoResponse {
    Json(json!({ "status": "alive" }))
}

/// Whether to send traffic here: false once draining. Redis and RabbitMQ are reported but
/// do not fail readiness, whatever `FRACTILE_QUEUE_FALLBACK` says: without them the api
/// still serves (L1, L2, and local renders or 503s for misses), they are shared by every
/// replica so no other replica would do better, and taking every replica out of the load
/// balancer because a shared dependency is down would turn a degradation into an outage
/// (ARCHITECTURE.md, "Redis outages"). Injected faults are listed, so nobody mistakes a
/// demo's slowness for an incident.
///
/// `redis` is a `PING` through the store's breaker and within its budget, so the probe
/// itself notices a Redis that stopped answering even when no traffic does, and costs at
/// most the budget; `redis_breaker` is `open` while calls fail fast; `announcements` is the
/// tile-ready subscription.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let up = |ok: bool| if ok { "up" } else { "down" };
    let mut body = match state.tiles.backends() {
        None => json!({ "redis": "unused", "queue": "unused" }),
        Some(b) => {
            let redis = up(b.store.ping().await.is_ok());
            json!({
                "redis": redis,
                "redis_breaker": if b.store.breaker_open() { "open" } else { "closed" },
                "announcements": up(b.ready.is_connected()),
                "queue": b.publisher.as_ref().map_or("unused", queue_state),
            })
        }
    };
    let (status, code) = if state.readiness.is_draining() {
        ("draining", StatusCode::SERVICE_UNAVAILABLE)
    } else {
        ("ready", StatusCode::OK)
    };
    body["status"] = json!(status);
    body["faults"] = json!(state.faults.active());
    (code, Json(body))
}

/// `up`, `blocked` (a broker resource alarm), `recovering` (lapin reconnecting) or `down`
/// (not connected yet, or connecting again).
fn queue_state(link: &fractile_queue::PublisherLink) -> &'static str {
    match link.publisher() {
        None => "down",
        Some(p) if p.is_blocked() => "blocked",
        Some(p) if p.is_connected() => "up",
        Some(_) => "recovering",
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.tiles.refresh_gauges().await;
    match state.metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
