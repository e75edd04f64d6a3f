//! The api and the worker together against the real Redis and RabbitMQ: the shared L2,
//! misses through the queue, coalescing across replicas, seeds (durable: a killed expanding
//! replica, a cancel mid-expansion, a full bulk queue), a Redis outage, the render queue
//! deleted at runtime, a broker that never answers, and the metric names both share.
//! Every test has its own key prefix and queue names.

mod cache;
mod durable_seeds;
mod helpers;
mod metric_names;
mod queue_deleted;
mod queue_unreachable;
mod redis_outage;
mod seeds;
