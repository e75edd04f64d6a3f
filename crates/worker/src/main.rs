//! `fractile-worker`: parse the configuration, start logging, consume until SIGTERM (losing
//! the broker is not an exit: the worker connects again). Exits non-zero only when it cannot
//! start (bad settings, its admin port taken).
//! `fractile-worker healthcheck` checks a running instance's readiness instead.

use std::process::ExitCode;

use fractile_http::shutdown_signal;
use fractile_worker::{Config, Worker};

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = fractile_http::healthcheck::run_if_asked("127.0.0.1:9001") {
        return code;
    }
    let config = Config::load();
    let traces = match fractile_http::trace::Tracing::new(&config.process.trace, "fractile-worker")
    {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("error: tracing: {e}");
            return ExitCode::from(2);
        }
    };
    fractile_telemetry::init(&config.process.log, traces.tracer());
    // Before the admin listener exists: a SIGTERM from then on drains instead of killing.
    let shutdown = shutdown_signal();
    let result = async { Worker::new(config)?.run(shutdown).await }.await;
    // The last spans, a few seconds at most.
    traces.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fractile-worker failed");
            ExitCode::FAILURE
        }
    }
}
