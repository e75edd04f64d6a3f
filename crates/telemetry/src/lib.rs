//! How fractile's processes write what happens: the `tracing` subscriber both binaries
//! install ([`init`], JSON for containers or pretty for terminals) and [`RateLimitedLog`],
//! one line per interval for a warning that repeats, with the count of the rest.
//!
//! Storage and queue crates log through it, so it depends on no HTTP crate; an exporter
//! that ships spans over the network belongs with the binaries, not here.

pub mod ratelimited_log;
pub mod subscriber;

pub use ratelimited_log::RateLimitedLog;
pub use subscriber::{JsonSpanFields, init, init_format};
