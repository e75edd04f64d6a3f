//! The state store (seed records) apart from the cache: full, it refuses seeds with a clear
//! 503; gone, likewise; and tiles never notice either.
//!
//! A test binary of its own: the seed routes' warnings are rate-limited process-wide, and
//! `distributed/seeds.rs` counts them.

// Shares the distributed tests' helpers; not every helper is used here.
#[allow(dead_code, unused_imports)]
#[path = "distributed/helpers.rs"]
mod helpers;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use fractile_render::{MaxZoom, Style, TileKey};

use helpers::*;

/// The state store (seed records) is apart from the cache: when it is full (`noeviction`
/// refuses writes) or gone, a new seed gets a clear 503 with `Retry-After`, and tiles do not
/// notice.
#[tokio::test]
#[ignore = "needs Redis and RabbitMQ: make test (or cargo test -- --include-ignored)"]
async fn a_full_or_unreachable_state_store_refuses_seeds_and_never_tiles() {
    let cluster = Cluster::new().await;
    let mut state = fractile_test_support::PrivateRedis::start_configured(&[
        "--maxmemory",
        "2mb",
        "--maxmemory-policy",
        "noeviction",
    ])
    .await;
    let mut config = cluster.api_config();
    config.state_redis_url = Some(state.url().into());
    let (_, app) = cluster.api(&config).await;
    // A tile in the cache: what a client asks for while seeds are refused.
    let key = TileKey {
        tile: fractile_render::TileId::new(2, 1, 1, MaxZoom::LIMIT).expect("valid"),
        style: Style::Fire,
    };
    let png = fractile_render::render_tile(key.tile, key.style, &|| false).expect("renders");
    cluster.store.put(&key, &png).await.expect("redis");
    let tile = || {
        Request::get("/tiles/2/1/1.png?style=fire")
            .body(Body::empty())
            .expect("valid request")
    };

    // Fill the state store until it refuses writes.
    let mut raw = fractile_test_support::redis_connection(&state.url()).await;
    let filler = vec![b'x'; 64 * 1024];
    let mut full = false;
    for i in 0..1000 {
        let set: Result<(), _> = redis::cmd("SET")
            .arg(format!("filler:{i}"))
            .arg(&filler)
            .query_async(&mut raw)
            .await;
        if set.is_err_and(|e| e.code() == Some("OOM")) {
            full = true;
            break;
        }
    }
    assert!(full, "the state store never filled up");
    let refused = send(
        &app,
        seed_call(
            Method::POST,
            "/v1/seeds",
            r#"{"min_zoom": 0, "max_zoom": 2}"#,
        ),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&refused, "retry-after"), "60");
    assert_eq!(header(&refused, "cache-control"), "no-store");
    assert_eq!(body_json(refused).await["error"]["code"], "seed_store_full");
    assert_eq!(send(&app, tile()).await.status(), StatusCode::OK);

    // Gone: every seed route is 503 `seed_store_unavailable`; tiles are still served.
    state.kill();
    let location = "/v1/seeds/0123456789abcdef0123456789abcdef";
    for request in [
        seed_call(
            Method::POST,
            "/v1/seeds",
            r#"{"min_zoom": 0, "max_zoom": 2}"#,
        ),
        seed_call(Method::GET, location, ""),
    ] {
        let response = send(&app, request).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header(&response, "retry-after"), "1");
        assert_eq!(
            body_json(response).await["error"]["code"],
            "seed_store_unavailable"
        );
    }
    assert_eq!(send(&app, tile()).await.status(), StatusCode::OK);
    cluster.cleanup().await;
}
