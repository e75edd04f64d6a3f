//! L1 behaviour: coalesced misses, metrics of cache layers.

use axum::http::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn cold_tile_requested_concurrently_renders_once() {
    const REQUESTS: usize = 50;
    let (state, app) = app_with(&config());
    // Hold the render thread so every request arrives while the first render is pending.
    let gate = RenderGate::close(&state, 1).await;
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, get("/tiles/6/20/25.png")).await })
        })
        .collect();
    eventually("all requests are in flight", || {
        state.metrics.in_flight.get() == REQUESTS as i64
    })
    .await;
    gate.open();

    let mut sources = Vec::new();
    for task in tasks {
        let response = task.await.expect("task");
        assert_eq!(response.status(), StatusCode::OK);
        sources.push(cache_layer(&response).to_owned());
        assert!(body_bytes(response).await.len() > 1000);
    }
    assert!(
        sources.iter().all(|s| s == "MISS"),
        "all missed L1: {sources:?}"
    );
    assert_eq!(
        state.metrics.renders_with("ok"),
        1,
        "exactly one render for {REQUESTS} requests"
    );
    assert_eq!(state.metrics.in_flight.get(), 0);
}

#[tokio::test]
async fn l1_lookups_are_counted_by_result() {
    let (state, app) = app_with(&config());
    for _ in 0..3 {
        assert_eq!(
            send(&app, get("/tiles/2/1/1.png")).await.status(),
            StatusCode::OK
        );
    }
    let count = |result: &str| {
        state
            .metrics
            .cache_requests
            .with_label_values(&["l1", result])
            .get()
    };
    assert_eq!((count("hit"), count("miss")), (2, 1));
    state.tiles.refresh_gauges().await;
    let bytes = state.metrics.cache_bytes.with_label_values(&["l1"]).get();
    assert!(bytes > 1000, "weighted size counts the tile: {bytes}");
    assert_eq!(
        state.metrics.cache_entries.with_label_values(&["l1"]).get(),
        1
    );
}

#[tokio::test]
async fn l1_stays_within_its_byte_budget() {
    let mut config = config();
    // Well under what the 16 tiles take (about 190 KB as paletted PNGs).
    config.l1_bytes = 48 * 1024;
    let (state, app) = app_with(&config);
    for x in 0..16 {
        assert_eq!(
            send(&app, get(&format!("/tiles/4/{x}/7.png")))
                .await
                .status(),
            StatusCode::OK
        );
    }
    state.tiles.refresh_gauges().await;
    let bytes = state.metrics.cache_bytes.with_label_values(&["l1"]).get();
    assert!(bytes <= 48 * 1024, "L1 holds {bytes} bytes");
    assert!(state.metrics.cache_entries.with_label_values(&["l1"]).get() < 16);
}
