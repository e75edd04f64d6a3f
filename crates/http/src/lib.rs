//! The HTTP side of a fractile process, shared by `fractile-api` and `fractile-worker`: what
//! serves, answers probes and shuts down, and that neither binary owns. Storage and queue
//! crates never depend on it (`.ci/run` checks that no axum or hyper reaches them).
//!
//! - [`serve`]: the accept loop, with the system's listen backlog, per-connection deadlines
//!   and head limits, a connection cap per listener, and graceful drain;
//! - [`fd_limit`]: the open-file limit raised at start-up, and connection caps fitted under it;
//! - [`admin`]: the admin port's router (`/livez`, `/readyz`, `/metrics`, `/faults`), each
//!   binary plugging in its readiness check and metrics;
//! - [`faults`]: fault injection on the admin port (latency, errors, slow renders, paused
//!   consumption), off unless enabled, changes behind the admin token;
//! - [`bearer`]: the constant-time `Authorization: Bearer` check;
//! - [`error`]: the JSON error body and [`error::ErrorCode`], the one list of error codes;
//! - [`metrics`]: a Prometheus registry with the process collector, its exposition, and the
//!   accept loops' connection metrics;
//! - [`healthcheck`]: the `healthcheck` subcommand both binaries answer (an HTTP GET of
//!   `/readyz`);
//! - [`trace`]: the OpenTelemetry tracer provider, its sampler and the bounded span export
//!   (an HTTP client, hence here and not in the settings or telemetry crates);
//! - [`Readiness`] and [`shutdown_signal`]: the shutdown sequence's two halves.
//!
//! Settings live in `fractile-settings`, logging in `fractile-telemetry`, the render threads
//! in `fractile-render-pool`.

pub mod admin;
pub mod bearer;
pub mod build_info;
pub mod error;
pub mod faults;
pub mod fd_limit;
pub mod healthcheck;
pub mod metrics;
pub mod serve;
pub mod trace;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this process should receive work. Flipped once, when shutdown begins.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the process as draining: readiness probes fail from now on.
    pub fn drain(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// True once [`Readiness::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Marks a response `Cache-Control: no-store`. Every admin-port response is about this moment
/// (a probe's answer, a scrape, the faults in force): a proxy or client that kept one would
/// report a state that has passed. For `axum::middleware::map_response`.
pub async fn no_store<B>(mut response: axum::http::Response<B>) -> axum::http::Response<B> {
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

/// A future that resolves on SIGTERM (how orchestrators stop a process) or Ctrl-C.
///
/// The handlers are installed by this call, not when the future is first polled: call it
/// before the process says it is listening, so a SIGTERM sent the moment a client (or an
/// orchestrator) sees it up starts the graceful shutdown instead of killing the process.
/// Needs a tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (terminate, interrupt) = signals;
            let wait = |sig: Option<tokio::signal::unix::Signal>| async move {
                match sig {
                    Some(mut sig) => {
                        sig.recv().await;
                    }
                    // No handler could be installed: only the other signal stops the process.
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(terminate) => {}
                () = wait(interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_flips_once() {
        let r = Readiness::default();
        assert!(!r.is_draining());
        r.clone().drain();
        assert!(r.is_draining());
    }
}
