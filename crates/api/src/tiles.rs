//! `GET /tiles/{z}/{x}/{y}.png?style=`: parse and validate once, then serve from the cache
//! with the HTTP caching headers of the contract.
//!
//! Syntax errors (not a canonical non-negative integer, percent-encoding, unknown style) are
//! 400; well-formed coordinates that name no tile (too deep, past the edge, too large for the
//! type, not `.png`) are 404.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use fractile_render::{MaxZoom, RENDER_VERSION, Style, TileId};

use fractile_http::error::ErrorBody;
use fractile_http::faults::Faults;

use crate::error::{ApiError, ErrorCode};
use crate::metrics::CacheLabel;
use crate::state::AppState;
use crate::tile_cache::{FillError, Source, TileKey, WorkerWait};

/// The canonical URL of a tile, the one spelling the api serves it under:
/// `/tiles/{z}/{x}/{y}.png` in plain digits for the default style, with `?style={name}` for
/// any other. [`request_key`] parses it back to `key` and refuses every other spelling.
pub fn canonical_url(key: &TileKey) -> String {
    let t = key.tile;
    let mut url = format!("/tiles/{}/{}/{}.png", t.z(), t.x(), t.y());
    if key.style != Style::default() {
        let _ = write!(url, "?style={}", key.style.name());
    }
    url
}

/// Everything the tile route decides about a request once the router has matched
/// `/tiles/{z}/{x}/{y}`, given the whole URI and the three path segments the router
/// extracted: percent-encoding anywhere is refused ([`canonical_uri`]), then the tile
/// ([`parse_tile`]), then the query ([`query_style`]). Pure: the handler calls it, and so
/// does the fuzz target `tile_path` (fuzz/), so both make the same decision.
pub fn request_key(
    uri: &Uri,
    z: &str,
    x: &str,
    y: &str,
    max_zoom: MaxZoom,
) -> Result<TileKey, ApiError> {
    canonical_uri(uri)?;
    let tile = parse_tile(z, x, y, max_zoom)?;
    let style = query_style(uri.query(), tile)?;
    Ok(TileKey { tile, style })
}

/// The style a tile URL's query names. One spelling per tile, so that a browser or CDN keeps
/// one copy of it: no query at all is the default style, and exactly `style=<name>` names
/// another. Everything else is a 400 naming the canonical URL: the default style named
/// (`non_canonical_url`), an empty query or parameter (`?`, `?&`, `?style=fire&`), or any
/// other parameter (`invalid_query`). A 400 rather than a redirect: a redirect would still
/// answer every spelling, each cached by a CDN under a key of its own, and cost a client
/// that keeps using the wrong template a round trip per tile.
pub fn query_style(query: Option<&str>, tile: TileId) -> Result<Style, ApiError> {
    let Some(query) = query else {
        return Ok(Style::default());
    };
    let canonical = |style: Style| canonical_url(&TileKey { tile, style });
    let name = query
        .strip_prefix("style=")
        .filter(|name| !name.contains('&'))
        .ok_or_else(|| {
            let shown: String = query.chars().take(64).collect();
            ApiError::BadRequest {
                code: ErrorCode::InvalidQuery,
                message: format!(
                    "tile URLs take no query but one `style=<name>` for a style other than \
                     the default, got {shown:?}; this tile's canonical URL is {}",
                    canonical(Style::default())
                ),
            }
        })?;
    let style: Style =
        name.parse()
            .map_err(|e: fractile_render::UnknownStyle| ApiError::BadRequest {
                code: ErrorCode::UnknownStyle,
                message: e.to_string(),
            })?;
    if style == Style::default() {
        return Err(ApiError::BadRequest {
            code: ErrorCode::NonCanonicalUrl,
            message: format!(
                "{} is the default style, served without a query: this tile's canonical URL \
                 is {}",
                style.name(),
                canonical(style)
            ),
        });
    }
    Ok(style)
}

/// Parses the path segments into a tile that exists at this deployment's maximum zoom.
pub fn parse_tile(z: &str, x: &str, y: &str, max_zoom: MaxZoom) -> Result<TileId, ApiError> {
    let y = y.strip_suffix(".png").ok_or_else(|| ApiError::NotFound {
        code: ErrorCode::NotFound,
        message: "tiles are served as .png only".into(),
    })?;
    let z = coordinate("z", z)?;
    let (x, y) = (coordinate("x", x)?, coordinate("y", y)?);
    let too_large = || ApiError::NotFound {
        code: ErrorCode::TileNotFound,
        message: format!(
            "no tile {z}/{x}/{y}: beyond the maximum zoom {}",
            max_zoom.get()
        ),
    };
    let z = u8::try_from(z).map_err(|_| too_large())?;
    let x = u32::try_from(x).map_err(|_| too_large())?;
    let y = u32::try_from(y).map_err(|_| too_large())?;
    TileId::new(z, x, y, max_zoom).map_err(|e| ApiError::NotFound {
        code: ErrorCode::TileNotFound,
        message: e.to_string(),
    })
}

/// A coordinate in canonical form: ASCII digits, no sign, no leading zero. Canonical URLs
/// matter for caching: `/tiles/1/01/0.png` would be a second URL, and a second cache entry in
/// every browser and CDN, for the same tile. Values too large for `u64` saturate; the caller
/// turns them into 404s.
fn coordinate(name: &str, s: &str) -> Result<u64, ApiError> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if !canonical {
        let shown: String = s.chars().take(32).collect();
        return Err(ApiError::BadRequest {
            code: ErrorCode::InvalidCoordinate,
            message: format!(
                "{name} must be a non-negative integer without sign or leading zeros, got {shown:?}"
            ),
        });
    }
    Ok(s.parse().unwrap_or(u64::MAX))
}

/// Refuses percent-encoding anywhere in a tile URL. The router and the extractors decode it,
/// so `/tiles/%33/2/3.png` or `?style=f%69re` would otherwise be served as the tile of the
/// canonical URL: a second cache key in every browser and CDN for the same bytes, and a way
/// to make each request a CDN miss. A canonical tile URL never needs an escape (digits, `/`,
/// `.png`, a style name), so any `%` is refused rather than redirected.
pub fn canonical_uri(uri: &Uri) -> Result<(), ApiError> {
    if uri.path().contains('%') {
        return Err(ApiError::BadRequest {
            code: ErrorCode::NonCanonicalUrl,
            message:
                "tile paths are /tiles/{z}/{x}/{y}.png in plain digits, without percent-encoding"
                    .into(),
        });
    }
    if uri.query().is_some_and(|q| q.contains('%')) {
        return Err(ApiError::BadRequest {
            code: ErrorCode::NonCanonicalUrl,
            message: "the style parameter is a plain style name, without percent-encoding".into(),
        });
    }
    Ok(())
}

/// The strong validator of a tile: rendering is deterministic, so the renderer version and
/// the key identify the bytes exactly, and a 304 needs no cache lookup at all.
fn etag(key: &TileKey) -> HeaderValue {
    let t = key.tile;
    let value = format!(
        "\"{RENDER_VERSION}-{}-{}-{}-{}\"",
        key.style,
        t.z(),
        t.x(),
        t.y()
    );
    // Only ASCII letters, digits, dashes and quotes: always a valid header value.
    header_value(value, "\"invalid\"")
}

/// `If-None-Match` matches when it lists our tag (weak comparison, as RFC 9110 prescribes
/// for this header) or is `*`.
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(Ok(value)) = headers.get(header::IF_NONE_MATCH).map(|v| v.to_str()) else {
        return false;
    };
    let ours = etag.as_bytes();
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).as_bytes() == ours)
}

/// A duration in milliseconds with three decimals, written from integer microseconds: float
/// formatting with a precision cost an L1 hit more than the rest of its headers together.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0.as_micros();
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

/// A header value made from `text` without copying it (`HeaderValue::from_str` copies),
/// or `fallback` if `text` holds a byte no header may (never, for what this module writes).
fn header_value(text: String, fallback: &'static str) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static(fallback))
}

/// `Server-Timing` for a served tile, so a browser's devtools show where the time went.
fn server_timing(source: &Source, elapsed: Duration) -> HeaderValue {
    let mut out = String::with_capacity(96);
    let total = Millis(elapsed);
    let _ = match source {
        Source::L1 => write!(out, "l1;desc=\"L1 hit\";dur={total}"),
        Source::L2 { lookup } => write!(
            out,
            "l2;desc=\"Redis hit\";dur={}, total;dur={total}",
            Millis(*lookup)
        ),
        Source::Rendered { queued, rendered } => write!(
            out,
            "queue;desc=\"render queue\";dur={}, render;dur={}, total;dur={total}",
            Millis(*queued),
            Millis(*rendered)
        ),
        Source::Worker(wait) => {
            worker_timing(&mut out, wait);
            write!(out, ", total;dur={total}")
        }
        Source::Coalesced => write!(
            out,
            "coalesced;desc=\"waited for another request's fetch\";dur={total}"
        ),
    };
    header_value(out, "total")
}

/// The stages of a queued miss: the Redis miss, the claim, the publish, the broker and
/// announcement (`transit`), the worker (its name, and its time from delivery to tile,
/// of which `render`), the read of the stored tile (`fetch`) and the whole wait.
fn worker_timing(out: &mut String, wait: &WorkerWait) {
    let _ = write!(
        out,
        "l2;desc=\"Redis miss\";dur={}, claim;dur={}",
        Millis(wait.lookup),
        Millis(wait.claim)
    );
    if let Some(publish) = wait.publish {
        let _ = write!(out, ", publish;dur={}", Millis(publish));
    }
    if let Some(transit) = wait.transit() {
        let _ = write!(
            out,
            ", transit;desc=\"broker and announcement\";dur={}",
            Millis(transit)
        );
    }
    if let Some(note) = &wait.note {
        // Worker ids are host names; keep the header value plain ASCII regardless.
        let name: String = note
            .worker
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .take(64)
            .collect();
        let _ = write!(out, ", worker;desc=\"{name}\"");
        if let Some(ms) = note.handled_ms.filter(|ms| ms.is_finite() && *ms >= 0.0) {
            let _ = write!(out, ";dur={ms:.3}");
        }
        if note.render_ms.is_finite() && note.render_ms >= 0.0 {
            let _ = write!(out, ", render;dur={:.3}", note.render_ms);
        }
    }
    let _ = write!(
        out,
        ", fetch;dur={}, wait;desc=\"waited for a worker\";dur={}",
        Millis(wait.fetch),
        Millis(wait.waited)
    );
}

/// The segments `z`, `x` and `y.png` of a tile path, read from the URI rather than through
/// the `Path` extractor, which copies each into a `String` of its own on every request. The
/// router matched `/tiles/{z}/{x}/{y}`, and [`canonical_uri`] refuses percent-encoding, so
/// the raw segments are what the extractor would have decoded.
fn path_segments(path: &str) -> Option<(&str, &str, &str)> {
    let mut segments = path.strip_prefix("/tiles/")?.split('/');
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some(z), Some(x), Some(y), None) => Some((z, x, y)),
        _ => None,
    }
}

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

/// The tile handler. axum 0.8 cannot route a parameter with a suffix (`{y}.png`), so the
/// route captures `{y}` whole and [`parse_tile`] strips `.png`; the document shows the URL
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
        ("x" = u32, Path, example = 1,
            description = "Column, from 0 to 2^z − 1; past the edge is 404."),
        ("y" = u32, Path, example = 1,
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
                ("X-Cache" = String, description = "`L1` (this replica's memory), `L2` (Redis) or `MISS` (rendered for this request)."),
                ("Server-Timing" = String, description = "Where the time went (cache lookups, queue wait, render)."),
            )),
        (status = 304, description = "Not modified: `If-None-Match` matched.",
            headers(
                ("Cache-Control" = String, description = "As on 200."),
                ("ETag" = String, description = "As on 200."),
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
            headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ))]
pub async fn get_tile(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    inject_faults(&state.faults).await?;
    canonical_uri(&uri)?;
    let (z, x, y) = path_segments(uri.path()).ok_or_else(|| ApiError::BadRequest {
        code: ErrorCode::InvalidPath,
        message: "tile paths are /tiles/{z}/{x}/{y}.png".into(),
    })?;
    let key = request_key(&uri, z, x, y, state.max_zoom)?;

    let etag = etag(&key);
    let cache_control = state.cache_control.clone();
    if not_modified(&headers, &etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        let h = response.headers_mut();
        h.insert(header::ETAG, etag);
        h.insert(header::CACHE_CONTROL, cache_control);
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

    let (x_cache, label) = match served.source {
        Source::L1 => ("L1", CacheLabel::L1),
        Source::L2 { .. } => ("L2", CacheLabel::L2),
        Source::Rendered { .. } => ("MISS", CacheLabel::Rendered),
        Source::Worker { .. } => ("MISS", CacheLabel::Worker),
        Source::Coalesced => ("MISS", CacheLabel::Coalesced),
    };
    let mut response = served.png.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    h.insert(header::CACHE_CONTROL, cache_control);
    h.insert(header::ETAG, etag);
    h.insert("x-cache", HeaderValue::from_static(x_cache));
    h.insert(
        "server-timing",
        server_timing(&served.source, served.elapsed),
    );
    response.extensions_mut().insert(label);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fractile_tile_store::ReadyNote;

    fn max() -> MaxZoom {
        MaxZoom::new(18).expect("valid")
    }

    fn code_of<T: std::fmt::Debug>(result: Result<T, ApiError>) -> Option<&'static str> {
        match result {
            Ok(_) => None,
            Err(ApiError::BadRequest { code, .. } | ApiError::NotFound { code, .. }) => {
                Some(code.as_str())
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    fn status_of(z: &str, x: &str, y: &str) -> Option<&'static str> {
        code_of(parse_tile(z, x, y, max()))
    }

    /// The decision on `/tiles/5/3/4.png` followed by `rest` (`?…` or nothing).
    fn decide(rest: &str) -> Result<TileKey, ApiError> {
        let uri: Uri = format!("/tiles/5/3/4.png{rest}").parse().expect("a URI");
        request_key(&uri, "5", "3", "4.png", max())
    }

    fn key(z: &str, x: &str, y: &str, style: Style) -> TileKey {
        let tile = parse_tile(z, x, y, max()).expect("valid");
        TileKey { tile, style }
    }

    #[test]
    fn path_segments_are_the_three_after_tiles() {
        assert_eq!(path_segments("/tiles/3/2/1.png"), Some(("3", "2", "1.png")));
        assert_eq!(path_segments("/tiles/3/2"), None);
        assert_eq!(path_segments("/tiles/3/2/1/0.png"), None);
        assert_eq!(path_segments("/other/3/2/1.png"), None);
    }

    #[test]
    fn millis_have_three_decimals() {
        for (micros, shown) in [(0, "0.000"), (12, "0.012"), (1_234_567, "1234.567")] {
            assert_eq!(Millis(Duration::from_micros(micros)).to_string(), shown);
        }
    }

    fn queued_miss(note: Option<ReadyNote>) -> WorkerWait {
        let ms = Duration::from_millis;
        WorkerWait {
            lookup: ms(1),
            claim: ms(2),
            publish: Some(ms(3)),
            announced: Some(ms(20)),
            fetch: ms(1),
            waited: ms(21),
            note,
        }
    }

    #[test]
    fn a_queued_miss_shows_each_stage_and_the_broker_by_difference() {
        let note = ReadyNote {
            key: "classic/1/0/0".into(),
            worker: "worker-1\"; evil".into(),
            render_ms: 6.5,
            handled_ms: Some(10.0),
        };
        let mut out = String::new();
        worker_timing(&mut out, &queued_miss(Some(note)));
        // transit: 20 ms to the announcement, less claim 2, publish 3 and the worker's 10.
        assert_eq!(
            out,
            "l2;desc=\"Redis miss\";dur=1.000, claim;dur=2.000, publish;dur=3.000, \
             transit;desc=\"broker and announcement\";dur=5.000, \
             worker;desc=\"worker-1evil\";dur=10.000, render;dur=6.500, fetch;dur=1.000, \
             wait;desc=\"waited for a worker\";dur=21.000"
        );
        assert!(HeaderValue::from_str(&out).is_ok());
    }

    #[test]
    fn without_the_workers_account_the_broker_is_not_guessed() {
        let old_worker = ReadyNote {
            key: "classic/1/0/0".into(),
            worker: "w".into(),
            render_ms: f64::NAN,
            handled_ms: None,
        };
        let mut out = String::new();
        worker_timing(&mut out, &queued_miss(Some(old_worker)));
        assert!(!out.contains("transit"), "{out}");
        assert!(!out.contains("render"), "{out}");
        let mut unheard = queued_miss(None);
        unheard.announced = None;
        assert_eq!(unheard.transit(), None);
        // Joined another replica's claim: its job had waited an unknown time already.
        let heard = ReadyNote {
            key: "classic/1/0/0".into(),
            worker: "w".into(),
            render_ms: 1.0,
            handled_ms: Some(2.0),
        };
        let mut joined = queued_miss(Some(heard));
        assert!(joined.transit().is_some());
        joined.publish = None;
        assert_eq!(joined.transit(), None);
    }

    #[test]
    fn valid_coordinates_parse() {
        let tile = parse_tile("3", "7", "0.png", max()).expect("valid");
        assert_eq!((tile.z(), tile.x(), tile.y()), (3, 7, 0));
        assert_eq!(decide("").expect("valid").style, Style::Classic);
        assert_eq!(decide("?style=fire").expect("valid").style, Style::Fire);
    }

    #[test]
    fn malformed_coordinates_are_bad_requests() {
        for (z, x, y) in [
            ("-1", "0", "0.png"),
            ("1", "-0", "0.png"),
            ("a", "0", "0.png"),
            ("1", "0", ".png"),
            ("+1", "0", "0.png"),
            ("1", "01", "0.png"),
            ("1", "0", "0x1.png"),
            ("1", " 0", "0.png"),
            ("", "0", "0.png"),
        ] {
            assert_eq!(
                status_of(z, x, y),
                Some("invalid_coordinate"),
                "{z}/{x}/{y}"
            );
        }
    }

    #[test]
    fn coordinates_naming_no_tile_are_not_found() {
        assert_eq!(status_of("19", "0", "0.png"), Some("tile_not_found"));
        assert_eq!(status_of("2", "4", "0.png"), Some("tile_not_found"));
        assert_eq!(status_of("300", "0", "0.png"), Some("tile_not_found"));
        assert_eq!(
            status_of("1", "99999999999999999999999", "0.png"),
            Some("tile_not_found")
        );
        assert_eq!(status_of("1", "0", "0.jpg"), Some("not_found"));
        assert_eq!(status_of("1", "0", "0"), Some("not_found"));
    }

    #[test]
    fn canonical_urls_parse_back() {
        for (style, url) in [
            (Style::Classic, "/tiles/5/3/4.png"),
            (Style::Ocean, "/tiles/5/3/4.png?style=ocean"),
        ] {
            let key = key("5", "3", "4.png", style);
            assert_eq!(canonical_url(&key), url);
            let uri: Uri = url.parse().expect("a URI");
            assert_eq!(request_key(&uri, "5", "3", "4.png", max()).ok(), Some(key));
        }
    }

    /// Found by the hostile trial: each of these answered 200 with the tile, so a CDN kept
    /// one tile under any number of keys.
    #[test]
    fn every_other_spelling_of_a_tile_is_refused() {
        for (rest, code) in [
            ("?style=oc%65an", "non_canonical_url"),
            ("?style=classic", "non_canonical_url"),
            ("?", "invalid_query"),
            ("?&&&&", "invalid_query"),
            ("?&style=fire", "invalid_query"),
            ("?style=fire&&", "invalid_query"),
            ("?style=fire&", "invalid_query"),
            ("?style=fire&style=ocean", "invalid_query"),
            ("?style=fire&style=fire", "invalid_query"),
            ("?Style=fire", "invalid_query"),
            ("?style=fire&v=2", "invalid_query"),
            ("?v=2", "invalid_query"),
            ("?foo", "invalid_query"),
            ("?style", "invalid_query"),
            ("?style=neon", "unknown_style"),
            ("?style=", "unknown_style"),
            ("?style=FIRE", "unknown_style"),
            ("?style=fire=1", "unknown_style"),
        ] {
            assert_eq!(code_of(decide(rest)), Some(code), "{rest:?}");
        }
    }

    #[test]
    fn a_refused_spelling_names_the_canonical_url() {
        for rest in ["?style=classic", "?", "?&style=classic"] {
            let Err(ApiError::BadRequest { message, .. }) = decide(rest) else {
                panic!("{rest:?} accepted");
            };
            assert!(
                message.ends_with("canonical URL is /tiles/5/3/4.png"),
                "{rest:?}: {message}"
            );
        }
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let tag = etag(&key("1", "1", "0.png", Style::Classic));
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::IF_NONE_MATCH,
                HeaderValue::from_str(v).expect("ascii"),
            );
            not_modified(&h, &tag)
        };
        assert!(with(tag.to_str().expect("ascii")));
        assert!(with(&format!(
            "\"other\", W/{}",
            tag.to_str().expect("ascii")
        )));
        assert!(with("*"));
        assert!(!with("\"r0-classic-1-1-0\""));
        assert!(!not_modified(&HeaderMap::new(), &tag));
    }
}
