//! The admin port: probes and metrics. It is never behind the load balancer and never shed,
//! so an overloaded instance still answers its probes and its scrape.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, extract::State};
use serde_json::json;

use crate::AppState;

/// `/livez`, `/readyz` and `/metrics`.
pub fn admin_app(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The process is up. Checks no dependency: a restart would not fix one.
async fn livez() -> impl IntoResponse {
    Json(json!({ "status": "alive" }))
}

/// Whether to send traffic here: false once draining. Embedded mode has no dependencies
/// to check.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.readiness.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        )
    } else {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
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
