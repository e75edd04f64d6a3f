//! Seeds: bulk pre-rendering of a zoom range, optionally inside a bounding box.
//!
//! `POST /v1/seeds` counts the tiles first (cheap: one multiplication per zoom level) and
//! refuses a seed over `FRACTILE_SEED_MAX_TILES` before anything is queued. An accepted seed
//! is recorded in the state store, a Redis that neither evicts nor forgets
//! (`FRACTILE_STATE_REDIS_URL`; [`fractile_tile_store::seed`] owns the record and every
//! change to it), so any replica can report on it, and expanded into jobs by a background
//! task, one bounded batch at a time: tiles already in the cache are skipped (counted as
//! done), the rest published to the bulk queue with confirms. Workers record each finished
//! tile (a redelivered job is not counted twice) and skip the jobs of a cancelled seed.
//!
//! Expansion is durable. The accepting replica holds a lease on it (`FRACTILE_SEED_LEASE`),
//! renews it while it works and records a cursor with each batch; every replica looks for
//! expansions whose lease ran out ([`Expansions::start_takeover`]) and continues them from the cursor,
//! so a seed whose replica is killed still finishes, without anyone asking. A clean
//! shutdown gives the lease up at once. When the bulk queue is full (the broker refuses
//! publishes past its maximum length with a nack), expansion backs off and retries the
//! refused jobs, for as long as it takes: a full queue drains as workers render.
//!
//! Seeding is an operator action, so every seed route sits behind [`authorize`]: the bearer
//! token of `FRACTILE_SEED_TOKEN`, compared in constant time; without one configured the
//! routes answer 403. Seeds of a deployment are limited together, whichever replica took
//! them: `FRACTILE_SEED_MAX_ACTIVE` seeds at once and `FRACTILE_SEED_MAX_QUEUED_TILES`
//! tiles not yet rendered, checked and recorded in one Redis script
//! ([`fractile_tile_store::SeedStore::seed_admit`]); beyond them, 429 + Retry-After. With the state store
//! unreachable every seed route answers 503 + Retry-After, and with it full (it refuses
//! writes rather than evict) `POST` answers 503 `seed_store_full`; each failure is logged
//! once per interval. Tiles never depend on the state store.
//!
//! Three rooms: [`plan`] (what a seed covers, pure), [`routes`] (the HTTP routes and their
//! state, [`Seeds`]) and [`expansion`] (the durable background work, [`Expansions`]).

pub mod expansion;
pub mod plan;
pub mod routes;

pub use expansion::{Backends, Expander, Expansions};
pub use plan::{BBox, Plan, PlanError, SeedRequest, plan, seed_request};
pub use routes::{
    QUOTA_RETRY_AFTER_SECONDS, STORE_FULL_RETRY_AFTER_SECONDS, SeedSettings, SeedStatus, Seeds,
    authorize,
};
