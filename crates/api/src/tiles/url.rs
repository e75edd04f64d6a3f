//! A tile's URL: the one canonical spelling of each tile ([`canonical_url`]) and the pure
//! decision on a request's URI ([`request_key`]), which refuses every other spelling.
//!
//! Syntax errors (not a canonical non-negative integer, percent-encoding, unknown style) are
//! 400; well-formed coordinates that name no tile (too deep, past the edge, too large for the
//! type, not `.png`) are 404.

use std::fmt::{Display, Write as _};

use axum::http::Uri;
use fractile_render::{MaxZoom, Style, TileId};

use crate::error::{ApiError, ErrorCode};
use crate::tile_cache::TileKey;

/// The canonical URL of a tile, the one spelling the api serves it under:
/// `/tiles/{z}/{x}/{y}.png` in plain digits for the default style, with `?style={name}` for
/// any other. [`request_key`] parses it back to `key` and refuses every other spelling.
pub fn canonical_url(key: &TileKey) -> String {
    let t = key.tile;
    tile_url(t.z(), t.x(), t.y(), key.style)
}

/// The canonical spelling of a tile URL's path and query, from any coordinates: numbers for
/// a tile ([`canonical_url`]), or a client's placeholders (`{z}`, `{TileMatrix}`) for the
/// URL templates of the metadata documents.
pub fn tile_url(z: impl Display, x: impl Display, y: impl Display, style: Style) -> String {
    let mut url = format!("/tiles/{z}/{x}/{y}.png");
    if style != Style::default() {
        let _ = write!(url, "?style={}", style.name());
    }
    url
}

/// The style a URL's `style=<name>` names, or the 400 `unknown_style`.
pub fn style_named(name: &str) -> Result<Style, ApiError> {
    name.parse()
        .map_err(|e: fractile_render::UnknownStyle| ApiError::BadRequest {
            code: ErrorCode::UnknownStyle,
            message: e.to_string(),
        })
}

/// Everything the tile route decides about a request's URI once the router has matched
/// `/tiles/{z}/{x}/{y}`: percent-encoding anywhere is refused ([`canonical_uri`]), then the
/// path's three segments are read ([`path_segments`]) and parsed into a tile
/// ([`parse_tile`]), then the query into a style ([`query_style`]). Pure: the handler calls
/// it, and so does the fuzz target `tile_path` (fuzz/), so both make the same decision.
pub fn request_key(uri: &Uri, max_zoom: MaxZoom) -> Result<TileKey, ApiError> {
    canonical_uri(uri)?;
    let (z, x, y) = path_segments(uri.path()).ok_or_else(|| ApiError::BadRequest {
        code: ErrorCode::InvalidPath,
        message: "tile paths are /tiles/{z}/{x}/{y}.png".into(),
    })?;
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
    let style = style_named(name)?;
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

/// The segments `z`, `x` and `y.png` of a tile path, read from the URI rather than through
/// the `Path` extractor, which copies each into a `String` of its own on every request.
/// [`canonical_uri`] refuses percent-encoding first, so the raw segments are what the
/// extractor would have decoded.
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

#[cfg(test)]
mod tests {
    use super::*;

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
        request_key(&uri, max())
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
            assert_eq!(request_key(&uri, max()).ok(), Some(key));
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
}
