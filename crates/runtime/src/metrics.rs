//! The Prometheus plumbing every fractile process shares: a registry per process (or per
//! app, in tests) that includes the process collector, and the text exposition.

use prometheus::{Encoder, Registry, TextEncoder};

/// A new registry with the process collector (CPU seconds, resident memory, open fds)
/// registered: only the crate's default registry has it otherwise.
pub fn registry() -> Result<Registry, prometheus::Error> {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(registry)
}

/// The text exposition of everything in `registry`.
pub fn encode(registry: &Registry) -> Result<String, prometheus::Error> {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}
