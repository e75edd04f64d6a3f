//! Validators of the documents beside the tiles (the viewer, the OpenAPI document, the
//! favicon, the metadata): a weak ETag from the bytes, since the compression layer of
//! `app.rs` may send them gzipped, another representation of the same content; and the 304
//! a matching `If-None-Match` gets ([`not_modified`], which the tiles' strong ETags
//! (`tiles/headers.rs`) share).
//! A leaf: it imports nothing of the api.

use std::fmt::Write as _;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sha2::Digest as _;

/// `W/"<first 16 bytes of the body's SHA-256, hex>"`: the same bytes, the same tag, in every
/// replica and across restarts.
pub fn weak_etag(body: &[u8]) -> HeaderValue {
    let digest = sha2::Sha256::digest(body);
    let mut tag = String::with_capacity(36);
    tag.push_str("W/\"");
    for byte in &digest[..16] {
        let _ = write!(tag, "{byte:02x}");
    }
    tag.push('"');
    HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("W/\"0\""))
}

/// Whether `If-None-Match` lists `etag` or is `*`, by the weak comparison RFC 9110 prescribes
/// for this header (`W/` ignored on both sides). The tiles' strong ETags use it too.
pub fn not_modified(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(Ok(value)) = request.get(header::IF_NONE_MATCH).map(|v| v.to_str()) else {
        return false;
    };
    let ours = etag
        .as_bytes()
        .strip_prefix(b"W/")
        .unwrap_or(etag.as_bytes());
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).as_bytes() == ours)
}

/// `body` with its validator: 304 (no body) when `If-None-Match` lists `etag` (weak
/// comparison) or is `*`, else 200. `headers` are set on both (type, caching, CSP, ...).
pub fn with_validator(
    request: &HeaderMap,
    etag: &HeaderValue,
    body: Bytes,
    headers: &[(header::HeaderName, HeaderValue)],
) -> Response {
    let mut response = if not_modified(request, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let h = response.headers_mut();
    for (name, value) in headers {
        h.insert(name.clone(), value.clone());
    }
    h.insert(header::ETAG, etag.clone());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weak_tag_of_the_bytes_matches_weakly_and_a_star() {
        let etag = weak_etag(b"page");
        assert!(etag.to_str().expect("ascii").starts_with("W/\""));
        assert_eq!(etag, weak_etag(b"page"));
        assert_ne!(etag, weak_etag(b"other"));
        let strong = etag
            .to_str()
            .expect("ascii")
            .trim_start_matches("W/")
            .to_owned();
        for listed in [
            etag.to_str().expect("ascii").to_owned(),
            strong,
            "\"x\", *".into(),
        ] {
            let mut request = HeaderMap::new();
            request.insert(header::IF_NONE_MATCH, listed.parse().expect("value"));
            let response = with_validator(&request, &etag, Bytes::from_static(b"page"), &[]);
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{listed}");
        }
        let response = with_validator(&HeaderMap::new(), &etag, Bytes::from_static(b"page"), &[]);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::ETAG], etag);
    }
}
