//! `fractile-api`: parse the configuration, start logging, serve until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use fractile_api::{Config, Server, shutdown_signal};
use fractile_runtime::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init(config.log_format);
    let result = async { Server::bind(config).await?.run(shutdown_signal()).await }.await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fractile-api failed");
            ExitCode::FAILURE
        }
    }
}
