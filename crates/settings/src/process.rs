//! The settings every fractile process has, whatever its work: render threads, how long
//! shutdown may take, the admin port's connection cap and write deadline, fault injection
//! and its token, and logging. Both binaries flatten [`ProcessArgs`] into their `Config`, so
//! each variable is declared, documented and checked once. The admin port's address is not
//! here: each binary has its own default (`127.0.0.1:9000` for the api, `:9001` for the
//! worker), so one `FRACTILE_ADMIN_LISTEN` per binary.

use std::num::NonZeroUsize;
use std::time::Duration;

use crate::duration::parse_duration;
use crate::log::LogArgs;
use crate::secret::{Secret, SecretParser};
use crate::trace::TraceArgs;

/// The settings both binaries share (a clap argument group: `#[command(flatten)]`).
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessArgs {
    /// Render threads (default: the CPUs this process may use, cgroup quotas included).
    #[arg(long, env = "FRACTILE_RENDER_THREADS")]
    pub render_threads: Option<NonZeroUsize>,

    /// How long requests and jobs in progress may take to finish after SIGTERM before the
    /// process exits.
    #[arg(long, env = "FRACTILE_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// How long a response may make no progress (the client not reading) before its
    /// connection is closed.
    #[arg(long, env = "FRACTILE_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Admin connections open at once: a cap of their own, so probes and scrapes are never
    /// crowded out by traffic; more are closed as soon as they are accepted.
    #[arg(long, env = "FRACTILE_ADMIN_MAX_CONNECTIONS", default_value_t = NonZeroUsize::new(64).expect("non-zero"))]
    pub admin_max_connections: NonZeroUsize,

    /// Fault injection (`/faults` on the admin port) and the token it wants.
    #[command(flatten)]
    pub faults: FaultArgs,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,

    /// Tracing (the standard `OTEL_*` variables).
    #[command(flatten)]
    pub trace: TraceArgs,
}

impl ProcessArgs {
    /// The checks that span settings: fault injection on without its token is a
    /// configuration error, and so are tracing settings that contradict each other
    /// ([`ProcessArgs::check_for`] makes the reason a usage error).
    pub fn check(&self) -> Result<(), String> {
        self.faults.injection()?;
        self.trace.check()
    }

    /// [`ProcessArgs::check`] as the usage error of the binary's command `C` (exit 2), what
    /// each binary's `Config` returns.
    pub fn check_for<C: clap::CommandFactory>(&self) -> Result<(), clap::Error> {
        self.check()
            .map_err(|why| C::command().error(clap::error::ErrorKind::MissingRequiredArgument, why))
    }

    /// Render threads: the configured number, or the CPUs available to this process
    /// (cgroup quotas included).
    pub fn render_threads(&self) -> NonZeroUsize {
        self.render_threads
            .or_else(|| std::thread::available_parallelism().ok())
            .unwrap_or(NonZeroUsize::MIN)
    }
}

/// Shortest admin token accepted: 16 bytes leave nothing to guess online.
pub const ADMIN_TOKEN_MIN_BYTES: usize = 16;

/// Fault injection's settings, a clap group both binaries flatten.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FaultArgs {
    /// Accept fault injection (`/faults` on the admin port) for demos, drills and chaos
    /// tests; needs FRACTILE_ADMIN_TOKEN. Never in production.
    #[arg(long, env = "FRACTILE_FAULT_INJECTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub fault_injection: bool,

    /// Bearer token that `PUT` and `DELETE /faults` want (at least 16 bytes, e.g.
    /// `openssl rand -hex 32`). Never printed.
    #[arg(long, env = "FRACTILE_ADMIN_TOKEN", hide_env_values = true, value_parser = SecretParser::at_least(ADMIN_TOKEN_MIN_BYTES))]
    pub admin_token: Option<Secret>,
}

impl FaultArgs {
    /// The token `/faults` wants when fault injection is on (`None`: off). On without a
    /// token is a configuration error: the reason names both settings.
    pub fn injection(&self) -> Result<Option<Secret>, String> {
        match (self.fault_injection, &self.admin_token) {
            (false, _) => Ok(None),
            (true, Some(token)) => Ok(Some(token.clone())),
            (true, None) => Err(
                "FRACTILE_FAULT_INJECTION=true (--fault-injection) needs FRACTILE_ADMIN_TOKEN \
                 (--admin-token), the bearer token /faults wants: at least 16 random bytes, \
                 e.g. `openssl rand -hex 32`"
                    .into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_without_a_token_is_a_configuration_error() {
        let off = FaultArgs::default();
        assert!(off.injection().expect("off is fine").is_none());
        let on_without = FaultArgs {
            fault_injection: true,
            admin_token: None,
        };
        let why = on_without.injection().expect_err("refused");
        assert!(why.contains("FRACTILE_ADMIN_TOKEN"), "{why}");
        let on_with = FaultArgs {
            fault_injection: true,
            admin_token: Some(
                Secret::new("admin-token-for-tests-0123456789", ADMIN_TOKEN_MIN_BYTES)
                    .expect("valid"),
            ),
        };
        assert!(on_with.injection().expect("valid").is_some());
    }
}
