//! The worker against the real Redis and RabbitMQ: the ack protocol, deadlines, poison,
//! a killed worker, a consumer that ends, graceful shutdown, the admin port's connection
//! cap, seed jobs. Each test uses its own key prefix and queue names.

mod admin;
mod exits;
mod helpers;
mod protocol;
mod resilience;
mod seeds;
