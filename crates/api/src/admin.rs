//! The api's side of the admin port (the router itself is `fractile_http::admin`): its
//! readiness details and its metrics.

use axum::Router;
use fractile_http::admin::{AdminProbe, ReadyCheck};
use serde_json::{Map, json};

use crate::state::AppState;

/// `/livez`, `/readyz`, `/metrics`, and `/faults` (refused unless fault injection is on).
pub fn admin_app(state: AppState) -> Router {
    let (readiness, faults) = (state.readiness.clone(), state.faults.clone());
    fractile_http::admin::router(ApiProbe(state), readiness, faults)
}

struct ApiProbe(AppState);

impl AdminProbe for ApiProbe {
    /// Ready unless draining. Redis and RabbitMQ are reported but do not fail readiness,
    /// whatever `FRACTILE_QUEUE_FALLBACK` says: without them the api still serves (L1, L2,
    /// and local renders or 503s for misses), they are shared by every replica so no other
    /// replica would do better, and taking every replica out of the load balancer because a
    /// shared dependency is down would turn a degradation into an outage
    /// (docs/redis-outages.md, "Budget, breaker, misses, readiness").
    ///
    /// `redis` is a `PING` through the store's breaker and within its budget, so the probe
    /// itself notices a Redis that stopped answering even when no traffic does, and costs
    /// at most the budget; `redis_breaker` is `open` while calls fail fast;
    /// `announcements` is the tile-ready subscription; `state_redis` is the same `PING` to
    /// the state store (seed records: without it seeds get 503, tiles nothing).
    async fn check(&self) -> ReadyCheck {
        let up = |ok: bool| if ok { "up" } else { "down" };
        let mut details = Map::new();
        match &self.0.backends {
            None => {
                details.insert("redis".into(), json!("unused"));
                details.insert("state_redis".into(), json!("unused"));
                details.insert("queue".into(), json!("unused"));
            }
            Some(b) => {
                let (redis, state_redis) = tokio::join!(b.store.ping(), b.seeds.ping());
                let (redis, state_redis) = (up(redis.is_ok()), up(state_redis.is_ok()));
                let breaker = if b.store.breaker_open() {
                    "open"
                } else {
                    "closed"
                };
                let queue = b.publisher.as_ref().map_or("unused", queue_state);
                details.insert("redis".into(), json!(redis));
                details.insert("redis_breaker".into(), json!(breaker));
                details.insert("state_redis".into(), json!(state_redis));
                details.insert("announcements".into(), json!(up(b.ready.is_connected())));
                details.insert("queue".into(), json!(queue));
            }
        }
        ReadyCheck {
            failing: None,
            details,
        }
    }

    async fn encode_metrics(&self) -> Result<String, prometheus::Error> {
        self.0.tiles.refresh_gauges().await;
        self.0.metrics.encode()
    }
}

/// `up`, `blocked` (a broker resource alarm), `recovering` (lapin reconnecting) or `down`
/// (not connected yet, or connecting again).
fn queue_state(link: &fractile_queue::PublisherLink) -> &'static str {
    match link.publisher() {
        None => "down",
        Some(p) if p.is_blocked() => "blocked",
        Some(p) if p.is_connected() => "up",
        Some(_) => "recovering",
    }
}
