//! Who may use the seed routes: nobody until `FRACTILE_SEED_TOKEN` is set (403), then only
//! requests carrying it as a bearer token (401 otherwise), checked before the body or any
//! backend is looked at.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use fractile_api::config::SEED_TOKEN_MIN_BYTES;
use fractile_settings::Secret;

use crate::helpers::*;

const TOKEN: &str = "seed-token-for-tests-0123456789";
const SEED_ID: &str = "0123456789abcdef0123456789abcdef";

/// POST, GET and DELETE of the seed routes, with `authorization` when given.
fn seed_requests(authorization: Option<&str>) -> Vec<Request<Body>> {
    let item = format!("/v1/seeds/{SEED_ID}");
    [
        (Method::POST, "/v1/seeds"),
        (Method::GET, item.as_str()),
        (Method::DELETE, item.as_str()),
    ]
    .into_iter()
    .map(|(method, uri)| {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        request
            .body(Body::from(r#"{"min_zoom":0,"max_zoom":2}"#))
            .expect("valid request")
    })
    .collect()
}

fn with_token() -> fractile_api::Config {
    let mut config = config();
    config.seed_token = Some(Secret::new(TOKEN, SEED_TOKEN_MIN_BYTES).expect("valid token"));
    config
}

#[tokio::test]
async fn without_a_configured_token_every_seed_route_is_403_saying_how_to_enable_it() {
    let (_state, app) = app_with(&config());
    for request in seed_requests(Some(&format!("Bearer {TOKEN}"))) {
        let what = format!("{} {}", request.method(), request.uri());
        let response = send(&app, request).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], "seeding_disabled", "{what}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("FRACTILE_SEED_TOKEN"), "{what}: {message}");
    }
}

#[tokio::test]
async fn a_missing_malformed_or_wrong_token_is_401_with_a_bearer_challenge() {
    let (_state, app) = app_with(&with_token());
    let wrong_same_length = format!("Bearer {}", "x".repeat(TOKEN.len()));
    let cases = [
        (None, "missing_token"),
        (Some("Bearer"), "invalid_token"),
        (Some("Basic c2VlZDpzZWVk"), "invalid_token"),
        (Some("Bearer seed-token-for-tests"), "invalid_token"),
        (Some(wrong_same_length.as_str()), "invalid_token"),
        (Some(&format!("Bearer {TOKEN}x")), "invalid_token"),
    ];
    for (authorization, code) in cases {
        for request in seed_requests(authorization) {
            let what = format!(
                "{} {} with {authorization:?}",
                request.method(),
                request.uri()
            );
            let response = send(&app, request).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
            let challenge = response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .expect("ascii")
                .to_owned();
            assert!(challenge.starts_with("Bearer "), "{what}: {challenge}");
            let body = body_json(response).await;
            assert_eq!(body["error"]["code"], code, "{what}");
            let message = body["error"]["message"].as_str().expect("message");
            assert!(!message.contains(TOKEN), "{what}: the token is echoed");
        }
    }
}

#[tokio::test]
async fn the_token_is_checked_before_the_body() {
    let (_state, app) = app_with(&with_token());
    let request = Request::post("/v1/seeds")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("not json"))
        .expect("valid request");
    assert_eq!(send(&app, request).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_right_token_passes_in_any_scheme_case() {
    // Embedded mode has no Redis or broker, so a request that passes the gate gets 501:
    // what matters is that it is neither 401 nor 403.
    let (_state, app) = app_with(&with_token());
    for authorization in [format!("Bearer {TOKEN}"), format!("bearer  {TOKEN} ")] {
        for request in seed_requests(Some(&authorization)) {
            let what = format!("{} {}", request.method(), request.uri());
            let response = send(&app, request).await;
            assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED, "{what}");
            assert_eq!(error_code(response).await, "seeding_unavailable", "{what}");
        }
    }
}

#[tokio::test]
async fn unknown_paths_under_v1_stay_404_without_a_token() {
    let (_state, app) = app_with(&with_token());
    let response = send(&app, get("/v1/nothing")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// A POST of `chunks` as a streamed body (no Content-Length), with the token.
fn streamed_post(
    chunks: impl futures_lite::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
) -> Request<Body> {
    Request::post("/v1/seeds")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from_stream(chunks))
        .expect("valid request")
}

#[tokio::test]
async fn a_streamed_body_past_the_limit_is_a_json_413() {
    let (_state, app) = app_with(&with_token());
    let chunk = bytes::Bytes::from(vec![b' '; 8 * 1024]);
    let chunks = futures_lite::stream::iter((0..4).map(move |_| Ok(chunk.clone())));
    let response = send(&app, streamed_post(chunks)).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(response).await, "body_too_large");
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_a_json_408_at_the_body_deadline() {
    let mut config = with_token();
    config.body_read_timeout = std::time::Duration::from_millis(300);
    let (_state, app) = app_with(&config);
    let first = futures_lite::stream::once(Ok(bytes::Bytes::from_static(b"{\"min_zoom\"")));
    let chunks = futures_lite::StreamExt::chain(first, futures_lite::stream::pending());
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        send(&app, streamed_post(chunks)),
    )
    .await
    .expect("answered at the body deadline, not never");
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(error_code(response).await, "request_timeout");
}
