//! How fractile's processes write what happens: the `tracing` subscriber both binaries
//! install ([`init`], JSON for containers or pretty for terminals) and [`RateLimitedLog`],
//! one line per interval for a warning that repeats, with the count of the rest, and
//! [`causes`], an error's whole chain as one field.
//!
//! [`context`] carries trace context across processes (W3C `traceparent`, in HTTP headers,
//! AMQP message headers and Redis values).
//!
//! Storage and queue crates log through it, so it depends on no HTTP crate; the exporter
//! that ships spans over the network is `fractile-http`'s.

pub mod context;
pub mod ratelimited_log;
pub mod subscriber;

pub use ratelimited_log::RateLimitedLog;
pub use subscriber::{JsonSpanFields, UNTRACED, init};

/// An error and its sources, `outer: inner: root`, as `anyhow`'s `{:#}` writes them: the
/// value of an `error` field, since `%error` shows only the outermost message.
pub fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_are_written_outermost_first() {
        let error = Outer(std::io::Error::other("root"));
        assert_eq!(super::causes(&error), "outer: root");
    }
}
