//! Fuzzes the tile route's decision on a URL: the input is what follows `/tiles/` (path and
//! query, as text). The harness does what the router does before the handler runs (a URI
//! hyper accepts, exactly three non-empty segments after `/tiles/`), then calls
//! [`fractile_api::tiles::request_key`], the function the handler calls. Properties:
//!
//! - one URL per tile: an accepted URL is exactly [`canonical_url`] of the key it names
//!   (plain digits, no sign, no leading zero, `.png`, no query for the default style and
//!   exactly `?style=<name>` for another), so it parses back to the same key;
//! - an independent reading of the URL (a canonical path naming a tile at this maximum zoom,
//!   then no query or one `style=` naming a style other than the default, no `%` anywhere)
//!   decides the same: what it reads as a tile is accepted as that tile, anything else is
//!   refused;
//! - a refusal is a 400 or a 404, never anything else.

#![no_main]

use fractile_api::error::ApiError;
use fractile_api::tiles::{canonical_url, request_key};
use fractile_render::palette::STYLES;
use fractile_render::{MaxZoom, Style, TileKey};
use http::Uri;
use libfuzzer_sys::fuzz_target;

/// The default `FRACTILE_MAX_ZOOM` and the hard limit.
const MAX_ZOOMS: [u8; 2] = [24, 32];

/// What the router matches as `/tiles/{z}/{x}/{y}`: the three segments, or `None` when the
/// request never reaches the tile handler (another route, or the 404 fallback).
fn route(uri: &Uri) -> Option<[&str; 3]> {
    let rest = uri.path().strip_prefix("/tiles/")?;
    let mut segments = rest.split('/');
    let matched = [segments.next()?, segments.next()?, segments.next()?];
    if segments.next().is_some() || matched.iter().any(|s| s.is_empty()) {
        return None;
    }
    Some(matched)
}

/// The tile route's decision on `uri`, as the handler makes it; `None` when the router does
/// not send it to the handler.
fn decide(uri: &Uri, max_zoom: MaxZoom) -> Option<Result<TileKey, ApiError>> {
    route(uri)?;
    Some(request_key(uri, max_zoom))
}

/// An independent reading of a canonical coordinate: `0`, or digits not starting with `0`.
fn canonical_number(s: &str) -> Option<u64> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// The style a canonical query names: none for the default, `style=<name>` for another.
fn expected_style(query: Option<&str>) -> Option<Style> {
    let Some(query) = query else {
        return Some(Style::default());
    };
    let name = query.strip_prefix("style=")?;
    STYLES
        .into_iter()
        .find(|style| style.name() == name && *style != Style::default())
}

/// The tile a canonical path names, if any.
fn expected_tile(segments: [&str; 3], max_zoom: MaxZoom) -> Option<(u8, u32, u32)> {
    let z = canonical_number(segments[0])?;
    let x = canonical_number(segments[1])?;
    let y = canonical_number(segments[2].strip_suffix(".png")?)?;
    if z > u64::from(max_zoom.get()) || x >= 1u64 << z || y >= 1u64 << z {
        return None;
    }
    Some((z as u8, x as u32, y as u32))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // hyper refuses what is not a valid request target before any route sees it.
    let Ok(uri) = format!("/tiles/{text}").parse::<Uri>() else {
        return;
    };
    for max_zoom in MAX_ZOOMS {
        let max_zoom = MaxZoom::new(max_zoom).expect("a zoom within the limit");
        let Some(decision) = decide(&uri, max_zoom) else {
            continue;
        };
        let segments = route(&uri).expect("decided, so routed");
        let expected = if uri.to_string().contains('%') {
            None
        } else {
            expected_tile(segments, max_zoom).zip(expected_style(uri.query()))
        };
        match decision {
            Ok(key) => {
                let t = key.tile;
                assert_eq!(
                    expected,
                    Some(((t.z(), t.x(), t.y()), key.style)),
                    "{uri} accepted as {key}"
                );
                let canonical = canonical_url(&key);
                assert_eq!(uri.to_string(), canonical, "accepted a second spelling");
                let again: Uri = canonical.parse().expect("the canonical URL is a URI");
                match decide(&again, max_zoom) {
                    Some(Ok(back)) => assert_eq!(back, key, "{canonical}"),
                    other => panic!("canonical {canonical} of {uri} was not accepted: {other:?}"),
                }
            }
            Err(ApiError::BadRequest { .. } | ApiError::NotFound { .. }) => {
                assert!(expected.is_none(), "refused the canonical {uri}");
            }
            Err(other) => panic!("{uri} refused with {other:?}, neither a 400 nor a 404"),
        }
    }
});
