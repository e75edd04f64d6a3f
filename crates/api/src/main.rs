//! `fractile-api`: parse the configuration, start logging, serve until SIGTERM or Ctrl-C.
//! `fractile-api healthcheck` checks a running instance's readiness instead.

use std::process::ExitCode;

use fractile_api::{Config, Server, shutdown_signal};

/// mimalloc rather than the system allocator: an L1 hit makes about 65 short-lived
/// allocations (hyper's head, axum's routing and boxed services, the span), and glibc's
/// malloc and free were a quarter of its instructions (loadtests/reports/hot-path/).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = fractile_http::healthcheck::run_if_asked("127.0.0.1:9000") {
        return code;
    }
    let config = Config::load();
    let traces = match fractile_http::trace::Tracing::new(&config.process.trace, "fractile-api") {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("error: tracing: {e}");
            return ExitCode::from(2);
        }
    };
    fractile_telemetry::init(&config.process.log, traces.tracer());
    // Before the listeners exist: a SIGTERM from then on drains instead of killing.
    let shutdown = shutdown_signal();
    let result = async { Server::bind(config).await?.run(shutdown).await }.await;
    // The last spans, a few seconds at most.
    traces.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fractile-api failed");
            ExitCode::FAILURE
        }
    }
}
