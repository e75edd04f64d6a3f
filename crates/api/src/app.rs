//! The traffic router and its middleware stack, built without sockets so tests can call it
//! with `tower::ServiceExt::oneshot`.
//!
//! Read top to bottom, the stack is the path a request takes:
//! request id → trace span → metrics, head limits, JSON error bodies and no-store on 5xx (one
//! middleware) → panic guard → body limit → (tile routes only:)
//! error mapping → load shed → global concurrency limit → timeout → handler (whose first step
//! is the injected faults);
//! (seed routes only:) bearer token → handler.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use fractile_telemetry::{RateLimitedLog, context};
use opentelemetry::trace::SpanContext;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::DeadlineBody;
use tracing::Instrument;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::CorsOrigins;
use crate::error::{ApiError, ErrorCode, Failure};
use crate::metrics::{CacheLabel, InFlightGuard, Metrics, UNMATCHED};
use crate::state::{AppState, Traces};
use crate::tiles::{__path_get_tile, EXPOSED_HEADERS, allow_any_origin, get_tile};
use crate::validator::{weak_etag, with_validator};
use crate::{metadata, pages, seeds};

/// Largest request body accepted (tile requests have none; seeds are small JSON).
const MAX_BODY_BYTES: usize = 16 * 1024;

/// W3C Trace Context Level 2's response header.
const TRACERESPONSE: &str = "traceresponse";

/// The request headers every request's span reads, as names: a lookup by `&str` parses and
/// lower-cases the name on every call, a few hundred instructions per request.
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static(context::TRACEPARENT);
static TRACESTATE: HeaderName = HeaderName::from_static(context::TRACESTATE);

/// The traffic application: tile routes behind admission control, the viewer, and JSON 404/405s.
pub fn app(state: AppState) -> Router {
    let admission = ServiceBuilder::new()
        // Load shedding and the timeout fail with BoxError; turn those into 503 responses.
        // Must sit above them.
        .layer(HandleErrorLayer::new({
            let metrics = state.metrics.clone();
            let any_origin = state.cors == CorsOrigins::Any;
            move |err: BoxError| {
                let metrics = metrics.clone();
                async move {
                    let mut response = admission_error(&metrics, err);
                    if any_origin {
                        allow_any_origin(response.headers_mut());
                    }
                    response
                }
            }
        }))
        // Refuse at once instead of queueing when the limit below is reached.
        .load_shed()
        // One semaphore shared by every clone of the service: a per-clone limit
        // (ConcurrencyLimitLayer) may enforce nothing inside a Router (axum#2582).
        .layer(GlobalConcurrencyLimitLayer::new(state.max_in_flight))
        // Backstop for anything a request might wait on; renders have their own deadline.
        .timeout(state.request_timeout);
    // Forces the document now, so a request never waits for it.
    let _ = document_json();
    // The admission layers wrap the handler itself: a `route_layer` would box the route once
    // more, and every request clones every box of its route. The path and the document entry
    // are the annotation's, as for every route.
    let (schemas, paths, _unlayered) = routes!(get_tile);
    // CORS outermost, so a shed 503 is readable by the page too: tower-http's layer for an
    // allow-list; for `*`, two constant headers set by the handler and by the shed path
    // (`tiles::allow_any_origin`, which says why). The preflight is answered by the layer
    // itself, on an OPTIONS route of its own (the tile route is GET only).
    let cors = cors_layer(&state.cors);
    let layered = cors.clone().filter(|_| state.cors != CorsOrigins::Any);
    let mut tile_route = axum::routing::get(
        get_tile.layer(ServiceBuilder::new().option_layer(layered).layer(admission)),
    );
    if let Some(cors) = &cors {
        tile_route = tile_route.options(preflight.layer(cors.clone()));
    }
    let tiles = Router::from(OpenApiRouter::new().routes((schemas, paths, tile_route)));
    // Operator routes: the bearer token before anything else (body, Redis) is looked at.
    let seeds = Router::from(seed_routes())
        .route_layer(middleware::from_fn_with_state(
            state.seeds.clone(),
            seeds::authorize,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), body_deadline));
    // The pages are text (but the favicon): gzipped for clients that take it. Never the
    // tiles: a PNG does not compress, and the hot path would pay for the negotiation.
    let mut pages = Router::from(page_routes()).layer(CompressionLayer::new());
    if let Some(cors) = cors {
        pages = pages.layer(cors);
    }
    stack(
        tiles
            .merge(seeds)
            .merge(pages)
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed),
        state,
    )
}

/// The CORS layer of the tiles and the document (`FRACTILE_CORS_ALLOW_ORIGINS`): GET and
/// HEAD, the diagnostics exposed, preflights cached for a day. With `*` no `Vary` is sent
/// (the answer is the same for every origin, so shared caches keep one copy; tower-http
/// would otherwise vary every response on the preflight headers); with a list, `Vary:
/// Origin`, since the answer then depends on it. `None` when CORS is off.
fn cors_layer(origins: &CorsOrigins) -> Option<CorsLayer> {
    let (allow, vary): (AllowOrigin, Vec<HeaderName>) = match origins {
        CorsOrigins::Off => return None,
        CorsOrigins::Any => (AllowOrigin::any(), Vec::new()),
        CorsOrigins::List(list) => (
            AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok())),
            vec![header::ORIGIN],
        ),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::HEAD])
            .allow_headers([
                header::IF_NONE_MATCH,
                HeaderName::from_static("traceparent"),
            ])
            .expose_headers(EXPOSED_HEADERS)
            .max_age(Duration::from_secs(86_400))
            .vary(vary),
    )
}

/// Never called: the CORS layer around it answers every OPTIONS request itself.
async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// Every traffic route, each registered from its OpenAPI annotation, without the layers
/// (they need the state): the source of both [`app`] and the document ([`document`]).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    tile_routes().merge(seed_routes()).merge(page_routes())
}

/// The tile route: behind admission control.
fn tile_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_tile))
}

/// The seed routes: behind the bearer token.
fn seed_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(seeds::routes::create))
        .routes(routes!(seeds::routes::show, seeds::routes::cancel))
}

/// The viewer, the document and the map clients' metadata: never shed.
fn page_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(pages::viewer))
        .routes(routes!(openapi_json))
        .routes(routes!(pages::favicon))
        .routes(routes!(metadata::tilejson))
        .routes(routes!(metadata::wmts_capabilities))
}

/// Wraps `routes` in the layers every traffic request goes through. Public so tests can put
/// routes of their own (one that panics, say) behind the same stack.
pub fn stack(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .layer(
            ServiceBuilder::new()
                // Reuse the load balancer's id when it sent one, else make one.
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                // The request's span, metrics, no-store on 5xx, JSON error bodies, the head
                // limits and the log of 5xx: one middleware, since each layer costs every
                // request a boxed clone of everything beneath it, and tower-http's trace layer
                // enters its span on every poll of the response and of its body (three entries
                // an L1 hit, each a walk through every layer of the subscriber).
                .layer(middleware::from_fn_with_state(state.clone(), track_http))
                // A panicking handler becomes a 500; the connection and the process live on.
                .layer(CatchPanicLayer::custom(
                    |_panic: Box<dyn std::any::Any + Send>| {
                        ApiError::internal("a handler panicked").into_response()
                    },
                ))
                .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES)),
        )
        .with_state(state)
}

/// Logs a failed response, the one place every 5xx is logged, whoever made it (a handler's
/// `ApiError`, a panic, a layer):
/// - 503s are refusals (load shed, the pending-miss bound, a full render queue, a render or
///   request timeout, a dependency down): expected under overload, counted in
///   `http_requests_total{status}` and their own counters; a line each would turn an overload
///   into a log flood. DEBUG, as is 501 (seeding asked of an api that has no queue);
/// - every other 5xx is a failure of ours (a bug, a panic, a record this version cannot read):
///   ERROR, with its cause chain when the response carries one ([`Failure`]), once per
///   interval with the count of the rest, since a client that found a way to fail requests
///   must not flood the log either (the counters have every one).
fn log_failure(status: StatusCode, failure: Option<&Failure>, latency: Duration) {
    static FAILED: RateLimitedLog = RateLimitedLog::new(FAILURE_LOG_EVERY);
    let latency_ms = latency.as_secs_f64() * 1000.0;
    let status = status.as_u16();
    if matches!(status, 501 | 503) {
        tracing::debug!(status, latency_ms, "request refused");
        return;
    }
    let error = failure.map(|Failure(cause)| fractile_telemetry::causes(cause.as_ref()));
    match FAILED.check() {
        Some(suppressed) => {
            tracing::error!(status, latency_ms, error, suppressed, "response failed")
        }
        None => tracing::debug!(status, latency_ms, error, "response failed"),
    }
}

/// At most one ERROR line per this interval for failed responses.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a shared cache may keep a 404: a tile past the edge or the deepest zoom stays
/// absent until the deployment's configuration changes, so a minute spares the api a
/// crawler's repeats without keeping a reconfigured zoom away for long.
const NOT_FOUND_CACHE_CONTROL: HeaderValue = HeaderValue::from_static("public, max-age=60");

/// Says how long an error may be kept, so no cache guesses (Varnish kept a bare 404 for
/// 120 s, nginx not at all): every 5xx `no-store`, replacing whatever a handler set (a cached
/// refusal would keep serving the error after the service recovered; `ApiError` sets it too,
/// this also covers 5xx made elsewhere); a 404 briefly and publicly
/// ([`NOT_FOUND_CACHE_CONTROL`]); every other 4xx `no-store` (a malformed request's answer
/// is of no use to anyone else, and 401/403/429 depend on who asks and when). A handler's own
/// `Cache-Control` on a 4xx stays.
fn cache_control_on_errors(mut response: Response) -> Response {
    let status = response.status();
    let value = if status.is_server_error() {
        HeaderValue::from_static("no-store")
    } else if !status.is_client_error() || response.headers().contains_key(header::CACHE_CONTROL) {
        return response;
    } else if status == StatusCode::NOT_FOUND {
        NOT_FOUND_CACHE_CONTROL
    } else {
        HeaderValue::from_static("no-store")
    };
    response.headers_mut().insert(header::CACHE_CONTROL, value);
    response
}

/// Replaces the body of an error response that is not JSON (a bare status or plain text from
/// a layer, such as the body limit's 413) with the JSON error body every error has. The status
/// and other headers stay; handlers' errors are JSON already and pass untouched.
fn json_error_body(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!("the request body exceeds {MAX_BODY_BYTES} bytes"),
        other => other
            .canonical_reason()
            .unwrap_or("request refused")
            .to_ascii_lowercase(),
    };
    let (mut parts, _plain) = response.into_parts();
    let json = ApiError::rejected(status, message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(json.headers().clone());
    Response::from_parts(parts, json.into_body())
}

/// The request's span, named by route template (never the raw path) and carrying the request
/// id, so every log line inside it has both.
fn request_span(request: &Request<Body>, traces: &Traces) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str);
    let headers = request.headers();
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let request_id = header(&REQUEST_ID).unwrap_or("");
    let method = request.method();
    let parent = match traces {
        Traces::Off => None,
        _ => header(&TRACEPARENT)
            .and_then(|parent| context::extract(Some(parent), header(&TRACESTATE))),
    };
    // Whether this span is one OpenTelemetry sees: a caller's context continues (its
    // sampling decision is then the sampler's, from the parent); with nothing to continue,
    // only a request that starts a sampled trace when spans are exported (`RootSampler`:
    // an unsampled span costs as much as a sampled one and nothing would show it).
    let (traced, exported) = match traces {
        Traces::Off => (false, false),
        Traces::Kept => (parent.is_some(), false),
        Traces::Exported(roots) => {
            let traced = parent.is_some() || roots.sample();
            (traced, traced)
        }
    };
    // Log lines show a span's fields (`method`, `route`, `request_id`, as they always have),
    // and every field costs every request twice: the log layer formats it, the OpenTelemetry
    // layer keeps it. What only an exported span needs (its name and kind, the HTTP
    // conventions' attribute names) is added only when it is exported; log lines leave
    // `otel.*` out (see `fractile_telemetry::JsonSpanFields`).
    let span = if exported {
        tracing::info_span!(
            "request",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            method = method.as_str(),
            route,
            request_id,
        )
    } else if traced {
        tracing::info_span!("request", method = method.as_str(), route, request_id)
    } else {
        // Out of OpenTelemetry (see `fractile_telemetry::UNTRACED`): a job this request
        // queues starts the trace.
        tracing::info_span!(
            target: "fractile_api::untraced",
            "request",
            method = method.as_str(),
            route,
            request_id
        )
    };
    // A caller's `traceparent` (nginx passes it on) makes this span its child, and with a
    // parent-based sampler its sampling decision is the caller's.
    if let Some(remote) = parent {
        context::set_parent(&span, remote);
    }
    // The sampling decision is made here (the parent is known): only a span that will be
    // exported is given the conventions' attributes.
    if exported && context::span_context(&span).is_some_and(|sc| sc.is_sampled()) {
        context::http_server(&span, method.as_str(), route);
    }
    span
}

/// `traceresponse` (W3C Trace Context Level 2) naming a sampled request's trace and server
/// span: what a client needs to find the trace.
fn trace_response(server: &SpanContext) -> Option<HeaderValue> {
    let (trace_id, span_id) = (server.trace_id(), server.span_id());
    HeaderValue::from_str(&format!("00-{trace_id}-{span_id}-01")).ok()
}

/// The request's own middleware, in this order:
/// - makes its span ([`request_span`]), in which the rest runs;
/// - counts it in `http_requests_in_flight` (with a drop guard, so shed, timed-out and
///   abandoned requests count down too);
/// - answers 414 / 431 with a JSON body for a head over the limits, before any other work
///   (hyper's own, bodyless refusals sit at twice these limits);
/// - gives every error a JSON body, whoever produced it ([`json_error_body`]);
/// - says how long an error may be cached: 5xx and most 4xx `no-store`, a 404 a minute
///   ([`cache_control_on_errors`]);
/// - records its status and latency by route template;
/// - logs a 5xx, with its cause ([`log_failure`]).
async fn track_http(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let span = request_span(&request, &state.traces);
    track(state, request, next, span.clone())
        .instrument(span)
        .await
}

/// [`track_http`] inside the request's `span`.
async fn track(state: AppState, request: Request, next: Next, span: tracing::Span) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let metrics = &state.metrics;
    let _in_flight = InFlightGuard::new(&metrics.in_flight);
    let start = Instant::now();
    let response = match state.head_limits.check(&request) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    };
    let mut response = cache_control_on_errors(json_error_body(response));
    // An exported request's span, when sampled: its status, and `traceresponse` naming it.
    let exported = matches!(state.traces, Traces::Exported(_));
    if let Some(server) = exported
        .then(|| context::span_context(&span))
        .flatten()
        .filter(SpanContext::is_sampled)
    {
        context::record_status(&span, response.status().as_u16());
        if let Some(value) = trace_response(&server) {
            response.headers_mut().insert(TRACERESPONSE, value);
        }
    }
    let limit = match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Some("body"),
        StatusCode::URI_TOO_LONG => Some("uri"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Some("head"),
        _ => None,
    };
    if let Some(limit) = limit {
        metrics.over_limit.with_label_values(&[limit]).inc();
    }
    let cache = response
        .extensions()
        .get::<CacheLabel>()
        .copied()
        .unwrap_or(CacheLabel::Unset);
    let elapsed = start.elapsed();
    let status = response.status();
    metrics
        .http(
            route.as_ref().map_or(UNMATCHED, MatchedPath::as_str),
            status,
            cache,
        )
        .observe(elapsed);
    if status.is_server_error() {
        log_failure(status, response.extensions().get(), elapsed);
    } else {
        // The per-request line is DEBUG: a log line per hit costs more than the rest of the
        // stack (STACK.md §16). Failures are logged above, with their cause.
        tracing::debug!(
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request finished"
        );
    }
    response
}

/// Gives a request's body `body_read_timeout` to arrive whole, from the moment its head is
/// in. The header-read timeout ends where the body begins, and a body trickled a byte at a
/// time would otherwise hold its connection and task indefinitely; the handler answers 408
/// when the deadline passes (see `seeds::body_error`).
async fn body_deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let deadline = state.body_read_timeout;
    next.run(request.map(|body| Body::new(DeadlineBody::new(deadline, body))))
        .await
}

/// Maps the admission layers' errors to responses.
fn admission_error(metrics: &Metrics, err: BoxError) -> Response {
    if err.is::<tower::load_shed::error::Overloaded>() {
        metrics.shed.inc();
        ApiError::unavailable(
            ErrorCode::Overloaded,
            "too many requests in flight; retry shortly",
        )
        .into_response()
    } else if err.is::<tower::timeout::error::Elapsed>() {
        metrics.timed_out.inc();
        ApiError::unavailable(
            ErrorCode::Timeout,
            "the request took too long; retry shortly",
        )
        .into_response()
    } else {
        ApiError::internal(err).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound {
        code: ErrorCode::NotFound,
        message: "no such resource".into(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The OpenAPI document of every route, the admin port's included, generated from the
/// handlers' annotations ([`crate::openapi`] completes it).
pub fn document() -> utoipa::openapi::OpenApi {
    crate::openapi::document(routes().into_openapi())
}

/// The document as served, serialized once (at start-up: [`app`] forces it).
pub fn document_json() -> &'static Bytes {
    static JSON: LazyLock<Bytes> = LazyLock::new(|| {
        let mut json = serde_json::to_vec_pretty(&document())
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}").into_bytes());
        json.push(b'\n');
        Bytes::from(json)
    });
    &JSON
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "viewer", operation_id = "openapi",
    summary = "This document",
    params(("If-None-Match" = Option<String>, Header, description = "A copy's ETag; a match answers 304.")),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of the api.",
            content_type = "application/json", body = Object,
            headers(
                ("Cache-Control" = String, description = "`no-cache`"),
                ("ETag" = String, description = "Weak validator of the document."),
            )),
        (status = 304, description = "Not modified: `If-None-Match` matched."),
    ))]
pub async fn openapi_json(request: HeaderMap) -> Response {
    static ETAG: LazyLock<HeaderValue> = LazyLock::new(|| weak_etag(document_json()));
    with_validator(
        &request,
        &ETAG,
        document_json().clone(),
        &[
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
    )
}
