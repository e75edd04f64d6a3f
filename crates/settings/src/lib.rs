//! Settings every fractile crate may read, and nothing that serves or connects: the ground
//! floor of the workspace, which `tile-store` and `queue` use, so it depends on no HTTP or
//! async crate.
//!
//! - [`secret`]: secret settings (tokens, keys) that never reach `Debug`, logs or errors;
//! - [`secret_url`]: connection URLs whose passwords never reach `Debug` or logs, checked at
//!   start-up by their client's own parser;
//! - [`duration`]: the `5s` / `250ms` syntax of every duration setting;
//! - [`process`]: the settings every fractile process has ([`ProcessArgs`]: render threads,
//!   shutdown, the admin port's limits, fault injection and its token, logging, tracing);
//! - [`log`]: the logging settings (installed by `fractile-telemetry`);
//! - [`trace`]: tracing's settings, the standard `OTEL_*` variables, checked like the rest.

pub mod duration;
pub mod log;
pub mod process;
pub mod secret;
pub mod secret_url;
pub mod trace;

pub use duration::{parse_duration, parse_nonzero_duration};
pub use log::{LogArgs, LogFormat};
pub use process::{ADMIN_TOKEN_MIN_BYTES, FaultArgs, ProcessArgs};
pub use secret::{Secret, SecretParser, setting_name};
pub use secret_url::{ClientCheck, SecretUrl, UrlParser, redact_url};
pub use trace::{RootSampling, Sampling, TraceArgs};
