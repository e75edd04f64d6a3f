//! The traffic port's pages beside the tiles: the viewer and the favicon, each with its
//! validator ([`crate::validator`]); the OpenAPI document is served by `app.rs`, which
//! builds it from the routes.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use crate::state::AppState;
use crate::validator::with_validator;

/// The map viewer. It loads Leaflet from `FRACTILE_VIEWER_ASSETS`, pinned by integrity hash;
/// the CSP (built at start-up) allows that origin and the page's own script by its hash.
#[utoipa::path(get, path = "/", tag = "viewer", operation_id = "viewer",
    summary = "The map viewer",
    params(("If-None-Match" = Option<String>, Header, description = "A copy's ETag; a match answers 304.")),
    responses(
        (status = 200, description = "An HTML page showing the tiles on a slippy map.",
            content_type = "text/html; charset=utf-8", body = String,
            headers(
                ("Cache-Control" = String, description = "`no-cache`"),
                ("ETag" = String, description = "Weak validator of the page."),
                ("Content-Security-Policy" = String, description = "Allows the viewer's assets' origin (`FRACTILE_VIEWER_ASSETS`) and the page's own script, by hash."),
            )),
        (status = 304, description = "Not modified: `If-None-Match` matched."),
    ))]
pub async fn viewer(State(state): State<AppState>, request: HeaderMap) -> Response {
    with_validator(
        &request,
        &state.viewer_etag,
        state.viewer.clone(),
        &[
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::CONTENT_SECURITY_POLICY, state.viewer_csp.clone()),
        ],
    )
}

/// `GET /favicon.ico`.
#[utoipa::path(get, path = "/favicon.ico", tag = "viewer", operation_id = "favicon",
    summary = "The site icon",
    params(("If-None-Match" = Option<String>, Header, description = "A copy's ETag; a match answers 304.")),
    responses(
        (status = 200, description = "The whole set at zoom 0, a 256×256 PNG (browsers take a PNG \
            under this name).", content_type = "image/png", body = crate::schemas::Png,
            headers(
                ("Cache-Control" = String, description = "`public, max-age=86400`"),
                ("ETag" = String, description = "Weak validator of the icon."),
            )),
        (status = 304, description = "Not modified: `If-None-Match` matched."),
    ))]
pub async fn favicon(State(state): State<AppState>, request: HeaderMap) -> Response {
    with_validator(
        &request,
        &state.favicon_etag,
        state.favicon.clone(),
        &[
            (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
    )
}
