//! Driving an axum router without a socket: one request through `oneshot`, and reading the
//! response. Every test crate that builds routers uses these.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use tower::ServiceExt;

/// Sends one request through `app` without a socket (a clone: the router stays usable).
pub async fn oneshot(app: &Router, request: Request<Body>) -> Response<Body> {
    match app.clone().oneshot(request).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    }
}

/// A GET request for `uri`.
pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .body(Body::empty())
        .expect("valid request")
}

/// The value of header `name`, or `""`.
pub fn header(response: &Response<Body>, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The layer that served a tile, from this service's entry of its `Cache-Status` header
/// (RFC 9211): `L1`, `L2`, `MISS` (forwarded: rendered here, by a worker, or waited on
/// another request's render), `304`, or `""` without an entry of ours.
pub fn cache_layer(response: &Response<Body>) -> &'static str {
    cache_layer_of(&header(response, "cache-status"))
}

/// [`cache_layer`] of a `Cache-Status` value.
pub fn cache_layer_of(cache_status: &str) -> &'static str {
    let Some(ours) = cache_status
        .split(',')
        .map(str::trim)
        .find(|entry| entry.split(';').next().map(str::trim) == Some("fractile"))
    else {
        return "";
    };
    let params: Vec<&str> = ours.split(';').skip(1).map(str::trim).collect();
    if params.contains(&"detail=l1") {
        "L1"
    } else if params.contains(&"detail=l2") {
        "L2"
    } else if params.contains(&"detail=not_modified") {
        "304"
    } else if params.contains(&"fwd=miss") {
        "MISS"
    } else {
        ""
    }
}

/// The response body as bytes (up to 16 MiB).
pub async fn body_bytes(response: Response<Body>) -> bytes::Bytes {
    axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .expect("body reads")
}

/// The response body as JSON.
pub async fn body_json(response: Response<Body>) -> serde_json::Value {
    serde_json::from_slice(&body_bytes(response).await).expect("JSON body")
}
