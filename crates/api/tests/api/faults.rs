//! Fault injection through the admin port's `/faults`: off unless configured; when on,
//! latency and failures land on tile responses inside admission, show in `/readyz` and the
//! metrics, and lift on `DELETE`. Changes want `Authorization: Bearer $FRACTILE_ADMIN_TOKEN`.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};

use crate::helpers::*;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

fn put(json: serde_json::Value) -> Request<Body> {
    put_as(Some(&format!("Bearer {ADMIN_TOKEN}")), json)
}

fn put_as(authorization: Option<&str>, json: serde_json::Value) -> Request<Body> {
    let mut request = Request::put("/faults").header(header::CONTENT_TYPE, "application/json");
    if let Some(authorization) = authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    request
        .body(Body::from(json.to_string()))
        .expect("valid request")
}

fn delete() -> Request<Body> {
    Request::delete("/faults")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .body(Body::empty())
        .expect("valid request")
}

/// Settings with fault injection on and its token.
fn with_faults() -> fractile_api::Config {
    let mut config = config();
    config.process.faults.fault_injection = true;
    config.process.faults.admin_token = Some(
        fractile_settings::Secret::new(ADMIN_TOKEN, fractile_settings::ADMIN_TOKEN_MIN_BYTES)
            .expect("valid token"),
    );
    config
}

/// Found by the hostile trial: whoever reached an admin port could fail every tile of the
/// replica for an hour. Without the token nothing is injected and tiles are untouched.
#[tokio::test]
async fn a_change_without_the_admin_token_is_refused_and_injects_nothing() {
    let (state, app) = app_with(&with_faults());
    let admin = fractile_api::admin::admin_app(state);
    let fault = serde_json::json!({
        "tile_error_ratio": 1, "tile_latency_ms": 60_000, "duration_s": 3600
    });
    for authorization in [None, Some("Bearer not-the-admin-token-at-all")] {
        let response = send(&admin, put_as(authorization, fault.clone())).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{authorization:?}"
        );
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        let expected = if authorization.is_some() {
            "invalid_token"
        } else {
            "missing_token"
        };
        assert_eq!(error_code(response).await, expected);
    }
    let faults = body_json(send(&admin, get("/faults")).await).await;
    assert_eq!(faults["active"], serde_json::json!([]), "{faults}");
    assert_eq!(
        send(&app, get("/tiles/0/0/0.png")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn faults_are_refused_unless_enabled() {
    let (state, _app) = app_with(&config());
    let admin = fractile_api::admin::admin_app(state);
    let response = send(&admin, put(serde_json::json!({ "tile_error_ratio": 1.0 }))).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(response).await, "faults_disabled");
    assert_eq!(send(&admin, delete()).await.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn injected_failures_and_latency_reach_tiles_and_show_everywhere() {
    let mut config = with_faults();
    config.request_timeout = Duration::from_millis(300);
    let (state, app) = app_with(&config);
    let admin = fractile_api::admin::admin_app(state.clone());

    let set = send(&admin, put(serde_json::json!({ "tile_error_ratio": 0.5 }))).await;
    assert_eq!(set.status(), StatusCode::OK);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(&app, get("/tiles/0/0/0.png")).await.status());
    }
    let failed = statuses
        .iter()
        .filter(|s| **s == StatusCode::INTERNAL_SERVER_ERROR)
        .count();
    assert_eq!(failed, 2, "{statuses:?}");

    let ready = send(&admin, get("/readyz")).await;
    assert_eq!(
        ready.headers()[header::CACHE_CONTROL],
        "no-store",
        "no probe answer is cached"
    );
    let ready = body_json(ready).await;
    assert_eq!(
        ready["faults"],
        serde_json::json!(["tile_errors"]),
        "{ready}"
    );
    let metrics = String::from_utf8(
        body_bytes(send(&admin, get("/metrics")).await)
            .await
            .to_vec(),
    )
    .expect("utf-8");
    assert!(
        metrics.contains("fault_injection_active{fault=\"tile_errors\"} 1"),
        "{metrics}"
    );

    // Latency sits inside admission: past the request timeout it is a 503 timeout.
    let set = send(&admin, put(serde_json::json!({ "tile_latency_ms": 100 }))).await;
    assert_eq!(set.status(), StatusCode::OK);
    let start = Instant::now();
    let slow = send(&app, get("/tiles/0/0/0.png")).await;
    assert_eq!(slow.status(), StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(100));
    send(&admin, put(serde_json::json!({ "tile_latency_ms": 1_000 }))).await;
    let timed_out = send(&app, get("/tiles/0/0/0.png")).await;
    assert_eq!(timed_out.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(timed_out).await, "timeout");

    assert_eq!(send(&admin, delete()).await.status(), StatusCode::OK);
    let ready = body_json(send(&admin, get("/readyz")).await).await;
    assert_eq!(ready["faults"], serde_json::json!([]));
    assert_eq!(
        send(&app, get("/tiles/0/0/0.png")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_bad_fault_request_is_a_json_400() {
    let (state, _app) = app_with(&with_faults());
    let admin = fractile_api::admin::admin_app(state);
    for (body, code) in [
        (
            serde_json::json!({ "tile_error_ratio": 2 }),
            "invalid_fault",
        ),
        (
            serde_json::json!({ "pause_consumption": true }),
            "unsupported_fault",
        ),
        (serde_json::json!({ "tile_latncy_ms": 5 }), "invalid_body"),
    ] {
        let response = send(&admin, put(body.clone())).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, code, "{body}");
    }
}
