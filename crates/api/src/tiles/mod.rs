//! `GET /tiles/{z}/{x}/{y}.png?style=`: parse and validate once ([`url`]), then serve from
//! the cache with the HTTP caching headers of the contract ([`headers`]).

mod headers;
pub mod url;

pub use headers::{EXPOSED_HEADERS, allow_any_origin};
pub use url::{canonical_url, request_key};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use fractile_http::error::ErrorBody;
use fractile_http::faults::Faults;
use fractile_telemetry::context;

use crate::config::CorsOrigins;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::CacheLabel;
use crate::state::AppState;
use crate::tile_cache::{FillError, Source};
use crate::validator::not_modified;
use headers::{CACHE_STATUS, REFUSED, cache_status, etag, server_timing};

/// Injected latency and failures (`/faults` on the admin port, off unless configured), the
/// handler's first step: inside admission, so the added latency holds an in-flight slot and
/// meets the request timeout, as a slow dependency would. (A middleware of its own cost every
/// request a boxed clone of the handler and a boxed future.)
async fn inject_faults(faults: &Faults) -> Result<(), ApiError> {
    if let Some(latency) = faults.tile_latency() {
        tokio::time::sleep(latency).await;
    }
    if faults.fail_tile() {
        return Err(ApiError::internal(
            "injected fault (fault_injection_active)",
        ));
    }
    Ok(())
}

/// A request that waited on a render another request queued (it joined that request's
/// render claim, maybe on another replica) links its span to the worker's span that made
/// the tile, named in the announcement: "why did this request wait" leads to that render's
/// trace. The request that queued the job is in that trace already.
fn link_to_the_render(source: &Source) {
    if let Source::Worker(wait) = source
        && wait.publish.is_none()
        && let Some(parent) = wait.note.as_ref().and_then(|n| n.traceparent.as_deref())
        && let Some(render) = context::extract(Some(parent), None)
    {
        context::add_link(&tracing::Span::current(), render);
    }
}

/// The tile handler. axum 0.8 cannot route a parameter with a suffix (`{y}.png`), so the
/// route captures `{y}` whole and [`url::parse_tile`] strips `.png`; the document shows the URL
/// clients use, `/tiles/{z}/{x}/{y}.png` (see [`crate::openapi`]).
#[utoipa::path(get, path = "/tiles/{z}/{x}/{y}", tag = "tiles", operation_id = "get_tile",
    summary = "A map tile",
    description = "A 256×256 PNG of the Mandelbrot set. Tile URLs are canonical, one per tile: \
        plain digits without sign or leading zeros, no percent-encoding, `.png` only, no query \
        for the default style and exactly `?style=<name>` for another. Rendering is \
        deterministic, so tiles are cacheable for `FRACTILE_CACHE_MAX_AGE` and carry a strong \
        ETag.",
    params(
        ("z" = u8, Path, maximum = 32, example = 2,
            description = "Zoom level, from 0 to the deployment's maximum (`FRACTILE_MAX_ZOOM`, \
                default 24); deeper levels are 404."),
        ("x" = i64, Path, minimum = 0, maximum = 4_294_967_295_i64, example = 1,
            description = "Column, from 0 to 2^z − 1; past the edge is 404."),
        ("y" = i64, Path, minimum = 0, maximum = 4_294_967_295_i64, example = 1,
            description = "Row, from 0 to 2^z − 1; past the edge is 404. The URL segment is \
                `{y}.png`."),
        ("style" = Option<crate::schemas::OtherStyleName>, Query, example = "ocean",
            description = "Palette. Omitted for the default, `classic`: each tile has one URL, \
                so `?style=classic` is a 400 `non_canonical_url`, and so is any other query \
                (an empty one, an empty or second parameter)."),
        ("If-None-Match" = Option<String>, Header,
            description = "ETags of a copy the client holds; a match answers 304."),
    ),
    responses(
        (status = 200, description = "The tile.", body = crate::schemas::Png,
            content_type = "image/png",
            headers(
                ("Cache-Control" = String, description = "`public, max-age=…, immutable`"),
                ("ETag" = String, description = "Strong validator: renderer version, style and coordinates."),
                ("Cache-Status" = String, description = "RFC 9211, this service's entry `fractile`: \
                    `fractile; hit; detail=l1` (this replica's memory), `detail=l2` (Redis), or \
                    `fractile; fwd=miss; stored; detail=rendered` (here) or `detail=worker` (by a \
                    worker), `fractile; fwd=miss; collapsed; detail=coalesced` (waited on another \
                    request's render). Caches in front append their own entries."),
                ("Server-Timing" = String, description = "Where the time went (cache lookups, queue wait, render)."),
                ("traceresponse" = String, description = "W3C Trace Context Level 2, `00-<trace id>-<span id>-01`: the request's trace, on a sampled request when the api exports spans."),
            )),
        (status = 304, description = "Not modified: `If-None-Match` matched.",
            headers(
                ("Cache-Control" = String, description = "As on 200."),
                ("ETag" = String, description = "As on 200."),
                ("Cache-Status" = String, description = "`fractile; hit; detail=not_modified`."),
            )),
        (status = 400, description = "`invalid_coordinate` (sign, leading zero, not digits), \
            `unknown_style`, `non_canonical_url` (percent-encoding, or the default style named), \
            `invalid_path`, `invalid_query` (anything but no query or one `style=<name>`: an \
            empty query, an empty or other parameter); for these two query refusals the message \
            names the tile's canonical URL.", body = ErrorBody),
        (status = 404, description = "`tile_not_found` (deeper than the maximum zoom, past the \
            edge) or `not_found` (not `.png`).", body = ErrorBody),
        (status = 500, description = "`internal`: a render failed, or a fault injected through \
            the admin port's `/faults`.", body = ErrorBody),
        (status = 503, description = "Refused to protect the service; retry after \
            `Retry-After`: `overloaded` (too many requests in flight, or too many misses being \
            filled), `render_queue_full`, `render_timeout`, `render_unavailable`, `timeout`.",
            body = ErrorBody,
            headers(
                ("Retry-After" = u32, description = "Seconds to wait."),
                ("Cache-Status" = String, description = "`fractile; fwd=miss; detail=refused` \
                    when the tile could not be filled (not on a shed request, refused before \
                    the handler)."),
            )),
    ))]
pub async fn get_tile(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let mut response = match serve(&state, &uri, &headers).await {
        Ok(response) => response,
        Err(refused) => {
            let mut response = refused.into_response();
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(CACHE_STATUS, HeaderValue::from_static(REFUSED));
            }
            response
        }
    };
    if state.cors == CorsOrigins::Any {
        allow_any_origin(response.headers_mut());
    }
    response
}

/// The tile, or why not.
async fn serve(state: &AppState, uri: &Uri, headers: &HeaderMap) -> Result<Response, ApiError> {
    inject_faults(&state.faults).await?;
    let key = request_key(uri, state.max_zoom)?;

    let etag = etag(&key);
    let cache_control = state.cache_control.clone();
    if not_modified(headers, &etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        let h = response.headers_mut();
        h.insert(header::ETAG, etag);
        h.insert(header::CACHE_CONTROL, cache_control);
        h.insert(CACHE_STATUS, cache_status(CacheLabel::NotModified));
        response.extensions_mut().insert(CacheLabel::NotModified);
        return Ok(response);
    }

    let served = state.tiles.get(key).await.map_err(|e| match e.as_ref() {
        FillError::MissesFull => ApiError::unavailable(
            ErrorCode::Overloaded,
            "too many tiles are being rendered; retry shortly",
        ),
        FillError::QueueFull(_) => ApiError::unavailable(
            ErrorCode::RenderQueueFull,
            "render queue is full; retry shortly",
        ),
        FillError::Deadline => ApiError::unavailable(
            ErrorCode::RenderTimeout,
            "the tile did not render in time; retry shortly",
        ),
        FillError::QueueUnavailable => ApiError::unavailable(
            ErrorCode::RenderUnavailable,
            "tiles cannot be rendered right now; retry shortly",
        ),
        FillError::Render(_) | FillError::Panicked => ApiError::Internal(e.clone()),
    })?;

    link_to_the_render(&served.source);
    let label = match served.source {
        Source::L1 => CacheLabel::L1,
        Source::L2 { .. } => CacheLabel::L2,
        Source::Rendered { .. } => CacheLabel::Rendered,
        Source::Worker { .. } => CacheLabel::Worker,
        Source::Coalesced => CacheLabel::Coalesced,
    };
    let mut response = served.png.into_response();
    let h = response.headers_mut();
    // Room for every header the stack adds (type, caching, provenance, timing, CORS, the
    // request id, the trace): one allocation instead of the map growing twice on the way.
    h.reserve(12);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    h.insert(header::CACHE_CONTROL, cache_control);
    h.insert(header::ETAG, etag);
    h.insert(CACHE_STATUS, cache_status(label));
    h.insert(
        "server-timing",
        server_timing(&served.source, served.elapsed),
    );
    response.extensions_mut().insert(label);
    Ok(response)
}
