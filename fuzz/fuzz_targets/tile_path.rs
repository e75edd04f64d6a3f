//! Fuzzes the tile route's decision on a URL: the input is what follows `/tiles/` (path and
//! query, as text). The harness does what the router does before the handler runs (a URI
//! hyper accepts, exactly three non-empty segments after `/tiles/`), then calls
//! [`fractile_api::tiles::request_key`], the function the handler calls. Properties:
//!
//! - an accepted URL is canonical: no percent-encoding, and its path is the path of
//!   [`canonical_url`] of the key it names (plain digits, no sign, no leading zero, `.png`);
//!   a style other than the default was named in the query, and the query names nothing
//!   else;
//! - the canonical URL of an accepted key parses back to the same key;
//! - a canonical path (checked here by an independent reading) without a query is accepted;
//! - a refusal is a 400 or a 404, never anything else.

#![no_main]

use fractile_api::error::ApiError;
use fractile_api::tiles::{canonical_url, request_key};
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
    let [z, x, y] = route(uri)?;
    Some(request_key(uri, z, x, y, max_zoom))
}

/// An independent reading of a canonical coordinate: `0`, or digits not starting with `0`.
fn canonical_number(s: &str) -> Option<u64> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
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
        let expected = expected_tile(segments, max_zoom);
        match decision {
            Ok(key) => {
                let canonical = canonical_url(&key);
                assert!(
                    !uri.to_string().contains('%'),
                    "accepted {uri} with an escape"
                );
                let (path, _) = canonical.split_once('?').expect("a style query");
                assert_eq!(uri.path(), path, "accepted a non-canonical path");
                let t = key.tile;
                assert_eq!(expected, Some((t.z(), t.x(), t.y())), "{uri}");
                if key.style != Style::default() {
                    let named = format!("style={}", key.style.name());
                    assert!(
                        uri.query().is_some_and(|q| q.contains(&named)),
                        "{uri} served as {key} without naming the style"
                    );
                }
                let pairs = uri.query().unwrap_or("").split('&');
                assert!(
                    pairs
                        .filter(|p| !p.is_empty())
                        .all(|p| p.starts_with("style=")),
                    "{uri} accepted with a parameter other than style"
                );
                let again: Uri = canonical.parse().expect("the canonical URL is a URI");
                match decide(&again, max_zoom) {
                    Some(Ok(back)) => assert_eq!(back, key, "{canonical}"),
                    other => panic!("canonical {canonical} of {uri} was not accepted: {other:?}"),
                }
            }
            Err(ApiError::BadRequest { .. } | ApiError::NotFound { .. }) => {
                assert!(
                    expected.is_none() || uri.query().is_some() || uri.to_string().contains('%'),
                    "refused the canonical {uri}"
                );
            }
            Err(other) => panic!("{uri} refused with {other:?}, neither a 400 nor a 404"),
        }
    }
});
