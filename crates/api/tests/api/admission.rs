//! Admission control: the global in-flight limit, load shedding, the render queue bound and
//! the render deadline, all answered with 503 + Retry-After at once.

use std::time::Duration;

use axum::http::{StatusCode, header};

use crate::helpers::*;

#[tokio::test]
async fn requests_beyond_the_limit_are_shed_immediately() {
    const LIMIT: usize = 4;
    const EXTRA: usize = 3;
    let mut config = config();
    config.max_in_flight = std::num::NonZeroUsize::new(LIMIT).expect("non-zero");
    let (state, app) = app_with(&config);
    // Admitted requests wait on the gated render thread, so they stay in flight.
    let gate = RenderGate::close(&state, 1).await;
    let admitted: Vec<_> = (0..LIMIT)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, get(&format!("/tiles/5/{i}/9.png"))).await })
        })
        .collect();
    eventually("the limit is full", || {
        state.metrics.in_flight.get() == LIMIT as i64
    })
    .await;

    for i in 0..EXTRA {
        let response = send(&app, get(&format!("/tiles/5/{i}/10.png"))).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        // Readable by a page on another origin: CORS sits outside admission.
        assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        // Shed before any cache was asked: no Cache-Status entry.
        assert!(response.headers().get("cache-status").is_none());
        assert_eq!(error_code(response).await, "overloaded");
    }
    assert_eq!(state.metrics.shed.get(), EXTRA as u64);

    // Probes live on the admin router, which has no limit: still answered.
    let admin = fractile_api::admin::admin_app(state.clone());
    assert_eq!(send(&admin, get("/readyz")).await.status(), StatusCode::OK);
    assert_eq!(send(&admin, get("/metrics")).await.status(), StatusCode::OK);

    gate.open();
    for task in admitted {
        assert_eq!(task.await.expect("task").status(), StatusCode::OK);
    }
    assert_eq!(
        state.metrics.in_flight.get(),
        0,
        "the gauge returns to zero"
    );
}

#[tokio::test]
async fn a_full_render_queue_answers_503_at_once() {
    let mut config = config();
    config.render_queue = 0;
    let (state, app) = app_with(&config);
    let gate = RenderGate::close(&state, 1).await;
    // Closing the gate may itself have been refused while the thread was starting.
    let rejected_before = state.metrics.pool.rejected.get();
    let response = send(&app, get("/tiles/7/3/3.png")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    assert_eq!(error_code(response).await, "render_queue_full");
    assert_eq!(state.metrics.pool.rejected.get(), rejected_before + 1);
    gate.open();
}

#[tokio::test]
async fn a_render_past_its_deadline_gives_503_and_frees_the_request() {
    let mut config = config();
    config.render_timeout = Duration::from_millis(50);
    let (state, app) = app_with(&config);
    let gate = RenderGate::close(&state, 1).await;
    let started = std::time::Instant::now();
    let response = send(&app, get("/tiles/9/100/200.png")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(response).await, "render_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered near the deadline, not when the render ran"
    );
    gate.open();
    // The abandoned job is skipped, not rendered for nobody.
    eventually("the expired job is dropped", || {
        state.metrics.renders_with("cancelled") == 1
    })
    .await;
    assert_eq!(state.metrics.renders_with("ok"), 0);
}

#[tokio::test]
async fn the_request_timeout_is_a_backstop_with_503() {
    let mut config = config();
    config.request_timeout = Duration::from_millis(50);
    let (state, app) = app_with(&config);
    let gate = RenderGate::close(&state, 1).await;
    let response = send(&app, get("/tiles/9/100/201.png")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(response).await, "timeout");
    assert_eq!(state.metrics.timed_out.get(), 1);
    assert_eq!(
        state.metrics.in_flight.get(),
        0,
        "a timed-out request counts down"
    );
    gate.open();
}

#[tokio::test]
async fn slow_misses_cannot_take_every_slot_from_cached_tiles() {
    let mut config = config();
    config.max_pending_misses = std::num::NonZeroUsize::new(2).expect("non-zero");
    let (state, app) = app_with(&config);
    assert_eq!(
        send(&app, get("/tiles/1/0/0.png")).await.status(),
        StatusCode::OK
    );
    let gate = RenderGate::close(&state, 1).await;
    let pending: Vec<_> = (0..2)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, get(&format!("/tiles/6/{i}/40.png"))).await })
        })
        .collect();
    eventually("two misses are pending", || {
        state.metrics.in_flight.get() == 2
    })
    .await;

    let third = send(&app, get("/tiles/6/9/40.png")).await;
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(third.headers()[header::RETRY_AFTER], "1");
    assert_eq!(
        third.headers()["cache-status"],
        "fractile; fwd=miss; detail=refused"
    );
    assert_eq!(third.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(error_code(third).await, "overloaded");
    assert_eq!(state.metrics.misses_shed.get(), 1);
    let hit = send(&app, get("/tiles/1/0/0.png")).await;
    assert_eq!((hit.status(), cache_layer(&hit)), (StatusCode::OK, "L1"));

    gate.open();
    for miss in pending {
        assert_eq!(miss.await.expect("task").status(), StatusCode::OK);
    }
}
