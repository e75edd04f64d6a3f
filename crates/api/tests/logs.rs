//! How refusals and failures are logged: 503s are counted, not logged one by one; a real
//! failure is one ERROR line, written by the tracking middleware whoever failed.
//!
//! A test binary of its own: it captures events with a thread-local subscriber, and tracing
//! caches each call site's interest process-wide, so another test hitting the same call sites
//! on another thread at the same moment can make the capture miss an event.

#[allow(dead_code, unused_imports)]
#[path = "api/helpers.rs"]
mod helpers;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get as route_get;
use tracing::Level;
use tracing_subscriber::layer::{Context, SubscriberExt};

use helpers::*;

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

    // A real failure is an ERROR, logged once (by the tracking middleware, not also by the
    // error type): the capture above would have seen one.
    let panics =
        fractile_api::app::stack(Router::new().route("/boom", route_get(boom)), state.clone());
    assert_eq!(
        send(&panics, get("/boom")).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        levels.count(Level::ERROR),
        1,
        "the 500 is logged once, at ERROR"
    );
    assert_eq!(levels.count(Level::WARN), 0);
}

async fn boom() -> &'static str {
    panic!("a deliberate failure")
}
