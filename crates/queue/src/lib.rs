//! The render queue protocol, shared by the api (publisher) and the worker (consumer).
//!
//! - [`RenderJob`]: the message: which tile, for whom (interactive with a deadline, or a
//!   seed), encoded as JSON;
//! - [`Topology`]: the durable quorum queues, their dead-letter route and retry cap,
//!   declared idempotently by both binaries;
//! - [`connect`] and [`Publisher`]: one auto-recovering connection per process, and a
//!   channel in confirm mode whose publishes are persistent and mandatory;
//! - [`PublisherLink`]: a publisher that connects in the background with backoff and is
//!   replaced if its connection dies for good, for a process that must run without a broker;
//! - [`Broker`], [`Consumer`] and [`Delivery`]: the consume half: deliveries with their
//!   job and attempt count, settled only by an explicit [`Delivery::settle`] with a
//!   [`Settle`], under the retry cap and the poison rule (see the `consume` module); and
//!   [`DepthProbe`], which reads queue depths through [`Topology::ready_messages`].
//!
//! Guarantees: a job is on disk at the broker (quorum queue, persistent) once its publish is
//! confirmed; it leaves the queue only when a consumer settles it, which the worker does
//! after the tile is stored and announced, or when it is dead-lettered. Delivery is
//! at-least-once, and workers are idempotent (a tile's bytes are deterministic and the
//! store is a plain `SET`).
//!
//! lapin stays behind this crate: its types appear only in [`connect`] and the
//! [`Topology`] methods that take a channel (for tests and tools that inspect the broker),
//! and in [`QueueError::Amqp`].
//!
//! Every connection's I/O runs on one tokio runtime owned by this crate for the whole life
//! of the process, not on the caller's: lapin drives a connection from a thread of its own
//! that keeps retrying after every handle to it is gone (an abandoned connect, a connection
//! recovering at exit), and tokio panics when that thread sleeps on a runtime being shut
//! down. A runtime that is never shut down turns that panic into nothing: the process exits
//! and the thread with it.

mod args;
mod connection;
mod consume;
mod job;
mod link;
mod publish;
mod topology;

pub use args::QueueArgs;
pub use connection::{AMQP_SCHEMES, QueueError, check_url, connect};
pub use consume::{
    Broker, BrokerStatus, Consumer, Delivery, DepthProbe, Settle, Settled, consumer_tag,
};
pub use job::{InvalidJob, Priority, RenderJob, TRACE_HEADERS, unix_ms};
pub use link::{MAX_RECONNECT_DELAY, PublisherLink, backoff_delays};
pub use publish::{PendingConfirm, Publisher, REDECLARE_EVERY};
pub use topology::{
    BROKER_DELIVERY_LIMIT, BULK_MAX_LENGTH, DEAD_MAX_BYTES, DEAD_MAX_LENGTH,
    INTERACTIVE_MAX_ATTEMPTS, MAX_ATTEMPTS, Topology, delivery_attempts, max_attempts, persistent,
};

/// `url` with its password replaced by `***`, for logs (owned by `fractile-settings`, with
/// the [`SecretUrl`](fractile_settings::SecretUrl) settings hold URLs in).
pub use fractile_settings::redact_url;
