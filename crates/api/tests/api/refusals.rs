//! What refusals and failures look like from outside: 503s are counted, not logged one by
//! one; every 5xx is `Cache-Control: no-store`; a seed body must be a JSON object.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get as route_get;
use tracing::Level;
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::helpers::*;

/// Records the level of every event, whatever its target or level.
#[derive(Clone, Default)]
struct Levels(Arc<Mutex<Vec<Level>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Levels {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(*event.metadata().level());
    }
}

impl Levels {
    fn count(&self, level: Level) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|l| **l == level)
            .count()
    }
}

// Current-thread runtime (the default): the thread-local subscriber sees every request.
#[tokio::test]
async fn a_burst_of_shed_requests_writes_no_warning_but_a_500_does() {
    const SHED: usize = 50;
    let levels = Levels::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(levels.clone()));
    let mut config = config();
    config.max_in_flight = std::num::NonZeroUsize::new(1).expect("non-zero");
    let (state, app) = app_with(&config);
    let gate = RenderGate::close(&state, 1).await;
    let admitted = {
        let app = app.clone();
        tokio::spawn(async move { send(&app, get("/tiles/5/1/9.png")).await })
    };
    eventually("the limit is full", || state.metrics.in_flight.get() == 1).await;
    for i in 0..SHED {
        let response = send(&app, get(&format!("/tiles/5/{i}/10.png"))).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(state.metrics.shed.get(), SHED as u64, "each one counted");
    assert_eq!(levels.count(Level::WARN), 0, "no WARN per refused request");
    assert_eq!(levels.count(Level::ERROR), 0);
    assert!(
        levels.count(Level::DEBUG) >= SHED,
        "each refusal is still there at DEBUG"
    );
    gate.open();
    assert_eq!(
        admitted.await.expect("task").status(),
        StatusCode::OK,
        "the admitted request completes"
    );

    // A real failure is still a WARN: the capture above would have seen one.
    let panics =
        fractile_api::app::stack(Router::new().route("/boom", route_get(boom)), state.clone());
    assert_eq!(
        send(&panics, get("/boom")).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(levels.count(Level::WARN), 1, "the 500 is logged at WARN");
}

#[tokio::test]
async fn every_5xx_says_no_store() {
    let mut config = config();
    config.render_queue = 0;
    let (state, app) = app_with(&config);
    let gate = RenderGate::close(&state, 1).await;
    let refused = send(&app, get("/tiles/7/3/3.png")).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()[header::CACHE_CONTROL], "no-store");
    gate.open();

    // 5xx made without ApiError (a bare status, a handler's own header) are covered too.
    let routes = Router::new()
        .route("/bare", route_get(|| async { StatusCode::BAD_GATEWAY }))
        .route(
            "/cached",
            route_get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CACHE_CONTROL, "public, max-age=86400")],
                )
            }),
        );
    let app = fractile_api::app::stack(routes, state);
    for path in ["/bare", "/cached"] {
        let response = send(&app, get(path)).await;
        assert!(response.status().is_server_error(), "{path}");
        assert_eq!(
            response.headers()[header::CACHE_CONTROL],
            "no-store",
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_seed_body_that_is_not_a_json_object_is_a_400() {
    const TOKEN: &str = "seed-token-for-tests-0123456789";
    let mut config = config();
    config.seed_token = Some(fractile_api::config::SeedToken::new(TOKEN).expect("valid"));
    let (_state, app) = app_with(&config);
    for body in ["[0,2]", "[0,2,null,null]", "null", "3", "\"seed\""] {
        let request = Request::post("/v1/seeds")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("valid request");
        let response = send(&app, request).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, "invalid_body", "{body}");
    }
    // An object still gets past the body check (to 501: no Redis or broker in this test).
    let request = Request::post("/v1/seeds")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"min_zoom":0,"max_zoom":2}"#))
        .expect("valid request");
    assert_eq!(
        send(&app, request).await.status(),
        StatusCode::NOT_IMPLEMENTED
    );
}

async fn boom() -> &'static str {
    panic!("a deliberate failure")
}
