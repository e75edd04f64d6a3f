//! The map clients' metadata: TileJSON 3.0.0 per style and the WMTS 1.0.0 capabilities name
//! the canonical tile URLs, this deployment's zoom range and the Web Mercator grid; absolute
//! URLs come from `FRACTILE_PUBLIC_URL` (cacheable) or the request's `Host` (`no-store`).

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fractile_api::config::PublicUrl;

use crate::helpers::*;

fn with_host(uri: &str, host: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, host)
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn tilejson_names_the_canonical_tiles_of_each_style_under_the_host() {
    let mut config = config();
    config.max_zoom = 18;
    let (_state, app) = app_with(&config);
    let response = send(&app, with_host("/tilejson.json", "maps.local:8080")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    // Built from the Host: no shared cache may hand it to another host's clients.
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let doc = body_json(response).await;
    assert_eq!(doc["tilejson"], "3.0.0");
    assert_eq!(
        doc["tiles"][0],
        "http://maps.local:8080/tiles/{z}/{x}/{y}.png"
    );
    assert_eq!(
        (doc["minzoom"].as_u64(), doc["maxzoom"].as_u64()),
        (Some(0), Some(18))
    );
    assert_eq!(doc["bounds"][0], -180.0);
    assert!(doc["attribution"].is_string());

    let fire =
        body_json(send(&app, with_host("/tilejson.json?style=fire", "maps.local")).await).await;
    assert_eq!(
        fire["tiles"][0],
        "http://maps.local/tiles/{z}/{x}/{y}.png?style=fire"
    );

    for (uri, code) in [
        ("/tilejson.json?style=plaid", "unknown_style"),
        ("/tilejson.json?style=fire&x=1", "invalid_query"),
        ("/tilejson.json?cb=1", "invalid_query"),
    ] {
        let response = send(&app, with_host(uri, "maps.local")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(error_code(response).await, code, "{uri}");
    }
    // A Host that is no host: refused, never echoed into a document.
    let response = send(&app, with_host("/tilejson.json", "evil\"<x>")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn with_a_public_url_the_documents_are_the_same_for_everyone_and_cacheable() {
    let mut config = config();
    config.public_url =
        Some(PublicUrl::parse("https://tiles.example.com/fractile/").expect("valid"));
    let (_state, app) = app_with(&config);
    let response = send(
        &app,
        with_host("/tilejson.json?style=ocean", "10.0.0.7:8080"),
    )
    .await;
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "public, max-age=300"
    );
    let doc = body_json(response).await;
    assert_eq!(
        doc["tiles"][0],
        "https://tiles.example.com/fractile/tiles/{z}/{x}/{y}.png?style=ocean"
    );
    let caps = send(
        &app,
        with_host("/wmts/1.0.0/WMTSCapabilities.xml", "10.0.0.7"),
    )
    .await;
    assert_eq!(caps.headers()[header::CACHE_CONTROL], "public, max-age=300");
    let xml = String::from_utf8(body_bytes(caps).await.to_vec()).expect("utf-8");
    assert!(xml.contains(
        "template=\"https://tiles.example.com/fractile/tiles/{TileMatrix}/{TileCol}/{TileRow}.png\""
    ));
    assert!(!xml.contains("10.0.0.7"));
}

#[tokio::test]
async fn wmts_capabilities_have_a_layer_per_style_and_a_matrix_per_zoom() {
    let mut config = config();
    config.max_zoom = 5;
    let (_state, app) = app_with(&config);
    let response = send(
        &app,
        with_host("/wmts/1.0.0/WMTSCapabilities.xml", "maps.local"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/xml");
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let xml = String::from_utf8(body_bytes(response).await.to_vec()).expect("utf-8");
    assert!(xml.starts_with("<?xml"));
    assert_eq!(xml.matches("<Layer>").count(), 4);
    assert_eq!(xml.matches("<TileMatrix>").count(), 6);
    assert!(xml.contains("<MatrixWidth>32</MatrixWidth>"));
    assert!(xml.contains(
        "template=\"http://maps.local/tiles/{TileMatrix}/{TileCol}/{TileRow}.png?style=grayscale\""
    ));
}

#[test]
fn the_public_url_is_an_http_url_without_query_or_user() {
    assert_eq!(
        PublicUrl::parse("https://t.example/")
            .expect("valid")
            .as_str(),
        "https://t.example"
    );
    assert!(PublicUrl::parse("http://t.example:8080/a/b").is_ok());
    for bad in [
        "t.example",
        "ftp://t.example",
        "https://",
        "https://u@t.example",
        "https://t.example/?a=1",
        "https://t.example/#x",
    ] {
        assert!(PublicUrl::parse(bad).is_err(), "{bad:?} accepted");
    }
}
