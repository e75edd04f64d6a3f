//! fractile's tile api.
//!
//! Layout:
//! - [`config`]: settings from `FRACTILE_*` variables and flags;
//! - [`state`]: [`AppState`], what every handler can reach, and how it is built;
//! - [`server`]: [`Server`], the two listeners, serving and the ordered drain;
//! - [`app`]: the traffic router and its admission-control stack;
//! - [`tiles`]: the tile route's parsing, validation and caching headers;
//! - [`tile_cache`]: L1 (moka) → L2 (Redis) → render here or by a worker, with coalesced misses;
//! - [`seeds`]: bulk pre-rendering jobs;
//! - [`admin`]: probes and metrics on their own port;
//! - [`openapi`]: the OpenAPI 3.1 document, generated from the handlers' annotations;
//! - [`head_limits`]: JSON 414 / 431 for request heads over the limits;
//! - [`metrics`], [`error`]: the cross-cutting parts; process plumbing (logging, the
//!   accept loop, signals) lives in `fractile-http`, `fractile-telemetry` and `fractile-settings`.
//!
//! The entry point is [`Server`]: `bind` the two listeners, then `run` until the shutdown
//! future resolves; tests pass their own future, the binary passes [`shutdown_signal`].

pub mod admin;
pub mod app;
pub mod config;
pub mod error;
pub mod head_limits;
pub mod metadata;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod schemas;
pub mod seeds;
pub mod server;
pub mod state;
pub mod tile_cache;
pub mod tiles;
pub mod validator;

pub use config::Config;
pub use fractile_http::{Readiness, shutdown_signal};
pub use server::Server;
pub use state::AppState;
