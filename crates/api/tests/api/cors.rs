//! CORS on the tiles and the document (`FRACTILE_CORS_ALLOW_ORIGINS`): a page on another
//! origin can read them (MapLibre requires it for raster tiles), the preflight is answered,
//! `*` adds no `Vary` (one copy per shared cache) and a list varies on `Origin`; the seed
//! routes never answer CORS.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use fractile_api::config::CorsOrigins;

use crate::helpers::*;

fn from(origin: &str, method: Method, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::ORIGIN, origin)
        .body(Body::empty())
        .expect("request")
}

fn preflight(origin: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri(uri)
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "if-none-match")
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn any_origin_reads_tiles_and_the_document_without_a_vary() {
    let (_state, app) = app_with(&config());
    for uri in ["/tiles/2/1/1.png", "/openapi.json"] {
        let response = send(&app, from("https://maps.example", Method::GET, uri)).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        let h = response.headers();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*", "{uri}");
        let exposed = h[header::ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .expect("ascii");
        for name in [
            "server-timing",
            "cache-status",
            "traceresponse",
            "x-request-id",
        ] {
            assert!(exposed.contains(name), "{uri}: {exposed}");
        }
        // No Vary on Origin: one copy per shared cache (the document varies on
        // Accept-Encoding only, for its gzipped form).
        assert!(
            h.get_all(header::VARY)
                .iter()
                .all(|v| !v.to_str().unwrap_or_default().contains("origin")),
            "{uri}: {:?}",
            h.get(header::VARY)
        );
    }
    // A shed or failed tile is readable too: CORS sits outside admission.
    let response = send(
        &app,
        from("https://maps.example", Method::GET, "/tiles/40/1/1.png"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
}

#[tokio::test]
async fn a_preflight_is_answered_for_tiles_and_never_for_seeds() {
    let (_state, app) = app_with(&config());
    let response = send(&app, preflight("https://maps.example", "/tiles/2/1/1.png")).await;
    assert!(response.status().is_success(), "{}", response.status());
    let h = response.headers();
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let methods = h[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .expect("ascii");
    assert!(
        methods.contains("GET") && methods.contains("HEAD"),
        "{methods}"
    );
    assert!(!methods.contains("POST"), "{methods}");
    assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "86400");
    let allowed = h[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .expect("ascii");
    assert!(allowed.contains("if-none-match"), "{allowed}");

    // Operator routes: no CORS, whatever the origin asks.
    let seeds = send(
        &app,
        from("https://maps.example", Method::GET, "/v1/seeds/x"),
    )
    .await;
    assert!(
        seeds
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    let seeds = send(&app, preflight("https://maps.example", "/v1/seeds")).await;
    assert_eq!(seeds.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        seeds
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
}

#[tokio::test]
async fn a_list_allows_its_origins_only_and_varies_on_origin() {
    let mut config = config();
    config.cors_allow_origins =
        CorsOrigins::parse("https://maps.example, http://localhost:5173").expect("valid");
    let (_state, app) = app_with(&config);
    let allowed = send(
        &app,
        from("http://localhost:5173", Method::GET, "/tiles/2/1/1.png"),
    )
    .await;
    assert_eq!(
        allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://localhost:5173"
    );
    assert_eq!(allowed.headers()[header::VARY], "origin");
    let other = send(
        &app,
        from("https://evil.example", Method::GET, "/tiles/2/1/1.png"),
    )
    .await;
    assert_eq!(other.status(), StatusCode::OK);
    assert!(
        other
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    // Without an Origin (a CDN filling its cache) the copy still says it varies.
    let plain = send(&app, get("/tiles/2/1/1.png")).await;
    assert_eq!(plain.headers()[header::VARY], "origin");
}

#[tokio::test]
async fn off_sends_no_cors_and_refuses_the_preflight() {
    let mut config = config();
    config.cors_allow_origins = CorsOrigins::Off;
    let (_state, app) = app_with(&config);
    let response = send(
        &app,
        from("https://maps.example", Method::GET, "/tiles/2/1/1.png"),
    )
    .await;
    assert!(
        response
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    let response = send(&app, preflight("https://maps.example", "/tiles/2/1/1.png")).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn the_setting_takes_a_star_off_or_origins_and_refuses_anything_else() {
    assert_eq!(CorsOrigins::parse("*"), Ok(CorsOrigins::Any));
    assert_eq!(CorsOrigins::parse("off"), Ok(CorsOrigins::Off));
    assert_eq!(
        CorsOrigins::parse("https://a.example,http://b.example:8080"),
        Ok(CorsOrigins::List(vec![
            "https://a.example".into(),
            "http://b.example:8080".into()
        ]))
    );
    for bad in [
        "",
        "a.example",
        "https://a.example/",
        "https://a.example/path",
        "ftp://a.example",
        "https://",
        "https://a.example,*",
    ] {
        assert!(CorsOrigins::parse(bad).is_err(), "{bad:?} accepted");
    }
}
