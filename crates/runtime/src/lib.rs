//! Process plumbing shared by `fractile-api` and `fractile-worker`: what every long-running
//! fractile process needs and neither binary owns.
//!
//! - [`admin`]: the admin port's router (`/livez`, `/readyz`, `/metrics`, `/faults`), each
//!   binary plugging in its readiness check and metrics;
//! - [`telemetry`]: the `tracing` subscriber (JSON or pretty);
//! - [`faults`]: fault injection on the admin port (latency, errors, slow renders, paused
//!   consumption), off unless enabled;
//! - [`fd_limit`]: the open-file limit raised at start-up, and connection caps fitted under it;
//! - [`healthcheck`]: the `healthcheck` subcommand both binaries answer;
//! - [`metrics`]: a Prometheus registry with the process collector, and its exposition;
//! - [`openapi`]: the JSON error body and the admin tag both OpenAPI documents share;
//! - [`pool`]: the bounded render thread pool, with interactive and bulk lanes;
//! - [`ratelimited_log`]: one line per interval for warnings that repeat, with a count of the rest;
//! - [`secret`]: secret settings (tokens, keys) that never reach `Debug`, logs or errors, and
//!   the constant-time bearer check;
//! - [`secret_url`]: connection URLs whose passwords never reach `Debug` or logs;
//! - [`serve`]: an HTTP accept loop with per-connection deadlines and head limits, a
//!   connection cap per listener, and graceful drain;
//! - [`Readiness`] and [`shutdown_signal`]: the shutdown sequence's two halves;
//! - [`parse_duration`]: the `5s` / `250ms` syntax of every duration setting.

pub mod admin;
pub mod faults;
pub mod fd_limit;
pub mod healthcheck;
pub mod metrics;
pub mod openapi;
pub mod pool;
pub mod ratelimited_log;
pub mod secret;
pub mod secret_url;
pub mod serve;
pub mod telemetry;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use secret::{Secret, SecretParser};
pub use secret_url::{SecretUrl, UrlParser, redact_url};
pub use telemetry::{LogArgs, LogFormat};

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

/// Parses `250ms`, `5s`, `2m`, `1h` or `1d` (a clap `value_parser`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, e.g. 5s"))?;
    let seconds = |mult: u64| Duration::from_secs(n.saturating_mul(mult));
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(seconds(1)),
        "m" => Ok(seconds(60)),
        "h" => Ok(seconds(3600)),
        "d" => Ok(seconds(86_400)),
        _ => Err(format!("{s:?}: unit must be one of ms, s, m, h, d")),
    }
}

/// [`parse_duration`] for settings where zero would disable the thing they bound.
pub fn parse_nonzero_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err(format!("{s:?}: must be more than zero")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 s").is_err());
        assert!(parse_nonzero_duration("0ms").is_err());
        assert_eq!(parse_nonzero_duration("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn readiness_flips_once() {
        let r = Readiness::default();
        assert!(!r.is_draining());
        r.clone().drain();
        assert!(r.is_draining());
    }
}
