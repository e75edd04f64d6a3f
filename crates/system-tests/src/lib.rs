//! This crate only holds tests (`tests/`): the api and the worker together, against the
//! real Redis and RabbitMQ. It exists so that neither binary crate depends on the other.
