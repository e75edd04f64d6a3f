//! What refusals and failures look like from outside (how they are logged is in
//! `tests/logs.rs`): every 5xx is `Cache-Control: no-store`; a seed body must be a JSON object.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get as route_get;

use crate::helpers::*;

#[tokio::test]
async fn every_5xx_says_no_store() {
    let mut config = config();
    config.render_queue = 0;
    let (state, app) = app_with(&config);
    let gate = RenderGate::close(&state, 1).await;
    let refused = send(&app, get("/tiles/7/3/3.png")).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()[header::CACHE_CONTROL], "no-store");
    gate.open();

    // 5xx made without ApiError (a bare status, a handler's own header) are covered too.
    let routes = Router::new()
        .route("/bare", route_get(|| async { StatusCode::BAD_GATEWAY }))
        .route(
            "/cached",
            route_get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CACHE_CONTROL, "public, max-age=86400")],
                )
            }),
        );
    let app = fractile_api::app::stack(routes, state);
    for path in ["/bare", "/cached"] {
        let response = send(&app, get(path)).await;
        assert!(response.status().is_server_error(), "{path}");
        assert_eq!(
            response.headers()[header::CACHE_CONTROL],
            "no-store",
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_seed_body_that_is_not_a_json_object_is_a_400() {
    const TOKEN: &str = "seed-token-for-tests-0123456789";
    let mut config = config();
    config.seed_token = Some(
        fractile_settings::Secret::new(TOKEN, fractile_api::config::SEED_TOKEN_MIN_BYTES)
            .expect("valid"),
    );
    let (_state, app) = app_with(&config);
    for body in ["[0,2]", "[0,2,null,null]", "null", "3", "\"seed\""] {
        let request = Request::post("/v1/seeds")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("valid request");
        let response = send(&app, request).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, "invalid_body", "{body}");
    }
    // An object still gets past the body check (to 501: no Redis or broker in this test).
    let request = Request::post("/v1/seeds")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"min_zoom":0,"max_zoom":2}"#))
        .expect("valid request");
    assert_eq!(
        send(&app, request).await.status(),
        StatusCode::NOT_IMPLEMENTED
    );
}
