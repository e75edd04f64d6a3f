//! The HTTP contract of the tile route, through `oneshot`, and its URLs over a real server.

use axum::http::{StatusCode, header};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::*;

/// Found by the hostile trial: every spelling below answered 200 with the same tile, so a
/// CDN or proxy in front stored one tile under any number of keys. Sent as raw request lines
/// to a real server, so nothing between the client and the handler tidies the URL.
#[tokio::test]
async fn a_tile_has_one_url_and_every_other_spelling_is_a_400() {
    let mut server = spawn_server(config()).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut refused = 0;
    for (target, status, code) in [
        ("/tiles/3/2/3.png", 200, None),
        ("/tiles/3/2/3.png?style=fire", 200, None),
        (
            "/tiles/3/2/3.png?style=classic",
            400,
            Some("non_canonical_url"),
        ),
        ("/tiles/3/2/3.png?", 400, Some("invalid_query")),
        ("/tiles/3/2/3.png?&&&&", 400, Some("invalid_query")),
        ("/tiles/3/2/3.png?&style=fire", 400, Some("invalid_query")),
        ("/tiles/3/2/3.png?style=fire&&", 400, Some("invalid_query")),
        (
            "/tiles/3/2/3.png?style=fire&cb=1",
            400,
            Some("invalid_query"),
        ),
    ] {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let request = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let (got, head, body) = read_response_head(&mut stream).await;
        assert_eq!(got, status, "{target}: {head}");
        if let Some(code) = code {
            refused += 1;
            let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
            assert_eq!(body["error"]["code"], code, "{target}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("/tiles/3/2/3.png"), "{target}: {message}");
        }
    }
    assert_eq!(refused, 6);
    let _ = server.stop.send(());
    let _ = (&mut server.task).await;
}

#[tokio::test]
async fn a_tile_is_a_256_png_with_caching_headers() {
    let (_state, app) = app_with(&config());
    let response = send(&app, get("/tiles/3/2/3.png?style=fire")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let h = response.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "image/png");
    assert_eq!(h[header::CACHE_CONTROL], "public, max-age=86400, immutable");
    assert_eq!(h[header::ETAG], "\"r3-fire-3-2-3\"");
    assert_eq!(
        h["cache-status"],
        "fractile; fwd=miss; stored; detail=rendered"
    );
    let timing = h["server-timing"].to_str().expect("ascii");
    assert!(timing.contains("render;dur="), "{timing}");
    assert!(h.contains_key("x-request-id"));

    let png = body_bytes(response).await;
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let info = decoder.read_info().expect("valid png").info().clone();
    assert_eq!((info.width, info.height), (256, 256));

    let again = send(&app, get("/tiles/3/2/3.png?style=fire")).await;
    assert_eq!(cache_layer(&again), "L1");
    assert!(
        again.headers()["server-timing"]
            .to_str()
            .expect("ascii")
            .starts_with("l1;")
    );
}

#[tokio::test]
async fn a_matching_if_none_match_gets_304_without_a_body() {
    let (state, app) = app_with(&config());
    let request = axum::http::Request::get("/tiles/1/0/1.png")
        .header(header::IF_NONE_MATCH, "\"r3-classic-1-0-1\"")
        .body(axum::body::Body::empty())
        .expect("valid");
    let response = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(response.headers()[header::ETAG], "\"r3-classic-1-0-1\"");
    assert_eq!(
        response.headers()["cache-status"],
        "fractile; hit; detail=not_modified"
    );
    assert!(body_bytes(response).await.is_empty());
    assert_eq!(
        state.metrics.renders_with("ok"),
        0,
        "revalidation needs no render"
    );
}

#[tokio::test]
async fn bad_coordinates_get_json_errors() {
    let (_state, app) = app_with(&config());
    let cases = [
        (
            "/tiles/-1/0/0.png",
            StatusCode::BAD_REQUEST,
            "invalid_coordinate",
        ),
        (
            "/tiles/1/x/0.png",
            StatusCode::BAD_REQUEST,
            "invalid_coordinate",
        ),
        (
            "/tiles/1/0/01.png",
            StatusCode::BAD_REQUEST,
            "invalid_coordinate",
        ),
        (
            "/tiles/1/0/0.png?style=neon",
            StatusCode::BAD_REQUEST,
            "unknown_style",
        ),
        (
            "/tiles/1/0/0.png?style=fire&style=ocean",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        // Percent-encoded forms decode to a valid tile, but would be extra cache keys.
        (
            "/tiles/%33/2/3.png",
            StatusCode::BAD_REQUEST,
            "non_canonical_url",
        ),
        (
            "/tiles/3/2/3%2epng",
            StatusCode::BAD_REQUEST,
            "non_canonical_url",
        ),
        (
            "/tiles/3/2/3.png?style=f%69re",
            StatusCode::BAD_REQUEST,
            "non_canonical_url",
        ),
        ("/tiles/25/0/0.png", StatusCode::NOT_FOUND, "tile_not_found"),
        ("/tiles/2/4/0.png", StatusCode::NOT_FOUND, "tile_not_found"),
        (
            "/tiles/1/0/4294967296.png",
            StatusCode::NOT_FOUND,
            "tile_not_found",
        ),
        ("/tiles/1/0/0.jpg", StatusCode::NOT_FOUND, "not_found"),
        ("/tiles/1/0.png", StatusCode::NOT_FOUND, "not_found"),
        ("/tiles/1/0/0/0.png", StatusCode::NOT_FOUND, "not_found"),
        ("/elsewhere", StatusCode::NOT_FOUND, "not_found"),
    ];
    for (uri, status, code) in cases {
        let response = send(&app, get(uri)).await;
        assert_eq!(response.status(), status, "{uri}");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/json",
            "{uri}"
        );
        assert_eq!(error_code(response).await, code, "{uri}");
    }
}

#[tokio::test]
async fn other_methods_get_a_json_405() {
    let (_state, app) = app_with(&config());
    let request = axum::http::Request::post("/tiles/1/0/0.png")
        .body(axum::body::Body::empty())
        .expect("valid");
    let response = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(response).await, "method_not_allowed");
}

#[tokio::test]
async fn an_incoming_request_id_is_kept_and_returned() {
    let (_state, app) = app_with(&config());
    let request = axum::http::Request::get("/tiles/0/0/0.png")
        .header("x-request-id", "lb-1234")
        .body(axum::body::Body::empty())
        .expect("valid");
    let response = send(&app, request).await;
    assert_eq!(response.headers()["x-request-id"], "lb-1234");
}

/// The viewer page and its CSP for the given `FRACTILE_VIEWER_ASSETS`.
async fn viewer_with_assets(assets: &str) -> (String, String) {
    let mut config = config();
    config.viewer_assets = fractile_api::config::ViewerAssets::parse(assets).expect("valid");
    let (_state, app) = app_with(&config);
    let response = send(&app, get("/")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("ascii")
        .to_owned();
    let html = String::from_utf8(body_bytes(response).await.to_vec()).expect("utf-8");
    (html, csp)
}

/// The `script-src` and `style-src` directives of a CSP.
fn asset_directives(csp: &str) -> Vec<&str> {
    csp.split(';')
        .map(str::trim)
        .filter(|d| d.starts_with("script-src ") || d.starts_with("style-src "))
        .collect()
}

#[tokio::test]
async fn the_viewer_loads_leaflet_from_the_configured_asset_base_and_its_csp_allows_it() {
    let (html, csp) = viewer_with_assets("https://assets.example:8443/vendor/leaflet/").await;
    assert!(html.contains(r#"src="https://assets.example:8443/vendor/leaflet/leaflet.js""#));
    assert!(html.contains(r#"href="https://assets.example:8443/vendor/leaflet/leaflet.css""#));
    assert!(!html.contains("unpkg.com") && !html.contains("{{LEAFLET_BASE}}"));
    assert_eq!(
        html.matches("integrity=\"sha256-").count(),
        2,
        "SRI hashes kept"
    );
    let directives = asset_directives(&csp);
    assert_eq!(directives.len(), 2, "{csp}");
    for d in directives {
        assert!(
            d.split(' ').any(|s| s == "https://assets.example:8443"),
            "{csp}"
        );
    }
    assert!(!csp.contains("unpkg.com"), "{csp}");

    // A path on the api's own origin: 'self' covers it, no other origin is allowed.
    let (html, csp) = viewer_with_assets("/static/leaflet").await;
    assert!(html.contains(r#"src="/static/leaflet/leaflet.js""#));
    for d in asset_directives(&csp) {
        assert!(!d.contains("https:"), "{csp}");
    }

    // The default is unpkg, as before.
    let (html, csp) = viewer_with_assets("https://unpkg.com/leaflet@1.9.4/dist").await;
    assert!(html.contains(r#"src="https://unpkg.com/leaflet@1.9.4/dist/leaflet.js""#));
    // Scripts: the page's own inline script by its hash, never 'unsafe-inline'.
    let script = html
        .split("<script>")
        .nth(1)
        .and_then(|rest| rest.split_once("</script>"))
        .map(|(body, _)| body)
        .expect("an inline script");
    let hash = {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script.as_bytes()))
    };
    assert!(
        csp.contains(&format!(
            "script-src 'self' 'sha256-{hash}' https://unpkg.com;"
        )),
        "{csp}"
    );
    let scripts = asset_directives(&csp)[0];
    assert!(!scripts.contains("unsafe-inline"), "{csp}");
}

#[tokio::test]
async fn the_viewer_page_is_served_with_the_max_zoom() {
    let mut config = config();
    config.max_zoom = 17;
    let (_state, app) = app_with(&config);
    let response = send(&app, get("/")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let html = String::from_utf8(body_bytes(response).await.to_vec()).expect("utf-8");
    assert!(html.contains("content=\"17\""), "max zoom filled in");
    assert!(
        html.contains("integrity=\"sha256-"),
        "CDN assets pinned by hash"
    );
}

/// Found behind shared caches: a 404 had no `Cache-Control`, so Varnish kept it 120 s and
/// nginx not at all. Now every error says: a 404 a minute, publicly (a crawler's repeats stop
/// at the cache); other 4xx and every 5xx never.
#[tokio::test]
async fn every_error_says_how_long_it_may_be_cached() {
    let (_state, app) = app_with(&config());
    for (uri, status, cache_control) in [
        ("/tiles/40/1/1.png", 404, "public, max-age=60"),
        ("/tiles/3/9/1.png", 404, "public, max-age=60"),
        ("/no/such/page", 404, "public, max-age=60"),
        ("/tiles/3/02/3.png", 400, "no-store"),
        ("/tiles/3/2/3.png?style=plaid", 400, "no-store"),
        ("/v1/seeds/abc", 403, "no-store"),
    ] {
        let response = send(&app, get(uri)).await;
        assert_eq!(response.status().as_u16(), status, "{uri}");
        assert_eq!(
            response.headers()[header::CACHE_CONTROL],
            cache_control,
            "{uri}"
        );
    }
    let post = axum::http::Request::builder()
        .method("POST")
        .uri("/tiles/3/2/3.png")
        .body(axum::body::Body::empty())
        .expect("request");
    let response = send(&app, post).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
}
