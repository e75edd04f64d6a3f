//! The api and the worker together against the real Redis and RabbitMQ: the shared L2,
//! misses through the queue, coalescing across replicas, seeds, and a Redis outage.
//! Every test has its own key prefix and queue names.

mod cache;
mod helpers;
mod queue_deleted;
mod redis_outage;
mod seeds;
