//! The Redis side of fractile, shared by the api and the worker. Two roles, which may be two
//! servers or one:
//!
//! - the **cache** ([`TileStore`]): tiles (the shared L2), render claims and tile-ready
//!   announcements. Anything in it may be evicted at any moment; it runs `allkeys-lru`;
//! - the **state store** ([`SeedStore`], [`seed`]): seed records, their progress and the
//!   quotas' registry, which must not vanish one key at a time. It runs `noeviction` and
//!   persists (see [`seed`] for why and what a full one answers).
//!
//! [`ReadyListener`] is the one pub/sub connection per process that wakes the requests
//! waiting for a worker's render. Each role is a pool with every timeout set (`client.rs`).
//!
//! Keys are versioned with [`fractile_render::RENDER_VERSION`], so a new renderer never
//! serves an old tile, and prefixed, so tests (and deployments) sharing a Redis stay apart.
//! Redis is a cache here: every caller treats an error as a miss. Two things bound what a
//! sick Redis costs a caller:
//!
//! - the **budget**: one deadline around a whole operation, taking a pooled connection
//!   included. The pool re-checks a connection idle for over a second (`UNWATCH` + `PING`,
//!   up to its recycle timeout; `pool.rs`) and moves on to the next when one does not
//!   answer, so against a paused Redis a single `get()` used to walk the whole pool:
//!   16 × 0.5 s;
//! - the **breaker** ([`breaker`]): after a few consecutive outages calls fail at once, and
//!   one background probe finds out when Redis is back.
//!
//! **Where each part lives.** `settings.rs`: the settings and their clap groups;
//! `error.rs`: [`StoreError`]; `client.rs`, `pool.rs`, `breaker.rs`: one Redis behind its
//! budget and breaker; `keys.rs` and `cache.rs`: the cache's key names and [`TileStore`];
//! `ready.rs`: the announcements and their listener; [`mac`]: what read from the cache is a
//! tile; [`seed`]: the state store.

mod breaker;
mod cache;
mod client;
mod error;
mod keys;
pub mod mac;
mod pool;
mod ready;
pub mod seed;
mod settings;

pub use crate::pool::RECHECK_IDLE_AFTER;
pub use breaker::{DEFAULT_BREAKER_THRESHOLD, DEFAULT_PROBE_INTERVAL};
pub use cache::{Stored, TileStore};
pub use client::PoolStatus;
pub use error::StoreError;
pub use mac::{Refusal, TileMac};
pub use ready::{ReadyListener, ReadyNote, ReadyWait};
pub use seed::{
    LeaseStep, NewSeed, ProgressSample, SeedAdmission, SeedBBox, SeedOutcome, SeedQuotas,
    SeedRecord, SeedState, SeedStore,
};
pub use settings::{
    DEFAULT_BUDGET, REDIS_SCHEMES, RedisArgs, RedisLimits, StoreSettings, check_url,
};
