//! Helpers for the tests that run against the real Redis and RabbitMQ (a dev-dependency
//! only; nothing here ships in a binary).
//!
//! - [`services`](mod@services): finding Redis and RabbitMQ, and why the tests that need them are ignored
//!   by a plain `cargo test` ([`NEEDS_SERVICES`]);
//! - [`isolation`]: one test's own prefix, its cleanup, and [`Isolated`], the environment
//!   built on them;
//! - [`settings`]: the tiles' MAC key and the settings of stores and workers under a prefix;
//! - [`poll`]: waiting until a condition holds;
//! - [`private_redis`]: a `redis-server` of one test's own;
//! - [`broker`]: disturbing the shared RabbitMQ under a lock;
//! - [`process`]: the workspace's binaries run as processes;
//! - [`http`]: driving a router without a socket;
//! - [`otlp`]: an OTLP/HTTP trace receiver that a binary's spans are exported to.
//!
//! With the `worker` feature, [`worker`] runs a `fractile-worker` in the test's process.
//! Everything is re-exported at the root.

pub mod broker;
pub mod http;
pub mod isolation;
pub mod otlp;
pub mod poll;
pub mod private_redis;
pub mod process;
pub mod services;
pub mod settings;
#[cfg(feature = "worker")]
pub mod worker;

pub use broker::{BROKER_LOCK, BrokerLock, rabbitmqctl};
pub use http::{body_bytes, body_json, cache_layer, cache_layer_of, get, header, oneshot};
pub use isolation::{Cleanup, Isolated, unique_prefix};
pub use poll::eventually;
pub use private_redis::PrivateRedis;
pub use process::{Process, workspace_binary};
pub use services::{NEEDS_SERVICES, Services, closed_port, redis_connection, services};
pub use settings::{TILE_MAC_KEY, store_settings, tile_mac, tile_mac_key, worker_args};
