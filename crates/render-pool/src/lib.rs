//! The render threads both binaries run CPU-bound work on, kept off the async executor:
//!
//! - [`pool`]: [`RenderPool`], a fixed set of threads behind a bounded queue with an
//!   interactive and a bulk lane, work skipped when its caller left or its deadline passed;
//! - [`metrics`]: what they measure, registered once for both binaries under the same names
//!   ([`RenderMetrics`], [`PoolMetrics`]);
//! - [`slowdown`]: the injected cost fault injection puts on every job.
//!
//! It knows nothing of HTTP, Redis or the queue: the api renders misses on it, the worker
//! renders jobs on it.

pub mod metrics;
pub mod pool;
pub mod slowdown;

pub use metrics::{PoolMetrics, RENDER_BUCKETS, RenderMetrics};
pub use pool::{Cancel, Lane, QueueFull, RenderPool, RunError, Unfinished};
pub use slowdown::Slowdown;
