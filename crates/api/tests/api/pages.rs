//! The documents beside the tiles: each has a validator (304 on a match), the text ones are
//! gzipped for clients that take it, the tiles never are; the favicon is a PNG.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};

use crate::helpers::*;

fn with(uri: &str, name: header::HeaderName, value: &str) -> Request<Body> {
    Request::get(uri)
        .header(name, value)
        .header(header::HOST, "maps.local")
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn every_document_has_a_validator_and_revalidates_to_304() {
    let (_state, app) = app_with(&config());
    for uri in [
        "/",
        "/openapi.json",
        "/favicon.ico",
        "/tilejson.json",
        "/wmts/1.0.0/WMTSCapabilities.xml",
    ] {
        let first = send(&app, with(uri, header::ACCEPT, "*/*")).await;
        assert_eq!(first.status(), StatusCode::OK, "{uri}");
        let etag = first.headers()[header::ETAG]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(etag.starts_with("W/\""), "{uri}: {etag}");
        let again = send(&app, with(uri, header::IF_NONE_MATCH, &etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{uri}");
        assert_eq!(again.headers()[header::ETAG], etag.as_str(), "{uri}");
        assert!(body_bytes(again).await.is_empty(), "{uri}");
    }
}

#[tokio::test]
async fn text_documents_are_gzipped_and_tiles_never() {
    let (_state, app) = app_with(&config());
    for uri in [
        "/",
        "/openapi.json",
        "/tilejson.json",
        "/wmts/1.0.0/WMTSCapabilities.xml",
    ] {
        let response = send(&app, with(uri, header::ACCEPT_ENCODING, "gzip")).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        assert_eq!(
            response.headers()[header::CONTENT_ENCODING],
            "gzip",
            "{uri}"
        );
        let vary = response.headers()[header::VARY]
            .to_str()
            .expect("ascii")
            .to_lowercase();
        assert!(vary.contains("accept-encoding"), "{uri}: {vary}");
        let gzipped = body_bytes(response).await;
        assert_eq!(&gzipped[..2], b"\x1f\x8b", "{uri}");
    }
    // The document, 60 KB as JSON, is a fraction of that gzipped.
    let plain = body_bytes(send(&app, get("/openapi.json")).await)
        .await
        .len();
    let gzipped =
        body_bytes(send(&app, with("/openapi.json", header::ACCEPT_ENCODING, "gzip")).await)
            .await
            .len();
    assert!(gzipped * 4 < plain, "{gzipped} of {plain} bytes");

    for uri in ["/tiles/2/1/1.png", "/favicon.ico"] {
        let response = send(&app, with(uri, header::ACCEPT_ENCODING, "gzip")).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        assert!(
            response.headers().get(header::CONTENT_ENCODING).is_none(),
            "{uri}"
        );
        assert!(body_bytes(response).await.starts_with(b"\x89PNG"), "{uri}");
    }
}

#[tokio::test]
async fn the_favicon_is_a_cacheable_png() {
    let (_state, app) = app_with(&config());
    let response = send(&app, get("/favicon.ico")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "image/png");
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "public, max-age=86400"
    );
    assert!(body_bytes(response).await.starts_with(b"\x89PNG\r\n\x1a\n"));
}
