//! `fractile-worker`: parse the configuration, start logging, consume until SIGTERM. Exits
//! non-zero when consuming stops by itself, so the orchestrator restarts it.
//! `fractile-worker healthcheck` checks a running instance's readiness instead.

use std::process::ExitCode;

use clap::Parser;
use fractile_runtime::shutdown_signal;
use fractile_worker::{Config, Worker};

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = fractile_runtime::healthcheck::run_if_asked("127.0.0.1:9001") {
        return code;
    }
    let config = Config::parse();
    config.log.init();
    let result = async { Worker::new(config)?.run(shutdown_signal()).await }.await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fractile-worker failed");
            ExitCode::FAILURE
        }
    }
}
