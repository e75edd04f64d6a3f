//! The logging settings both binaries share; `fractile_telemetry::init` installs them.

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for containers and log shippers.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// The logging settings both binaries share (a clap argument group: `#[command(flatten)]`).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format: `json` (one object per line, for containers) or `pretty`.
    #[arg(long, env = "FRACTILE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}
