//! The worker's settings: `FRACTILE_*` environment variables and flags of the same names.

use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroUsize};

use clap::Parser;
use fractile_queue::QueueArgs;
use fractile_settings::{ProcessArgs, SecretUrl, UrlParser};
use fractile_tile_store::RedisArgs;

/// The worker's settings.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "fractile-worker",
    version = fractile_http::build_info::VERSION_LINE,
    about = "fractile's render worker: renders queued tiles into Redis."
)]
pub struct Config {
    /// RabbitMQ to consume render jobs from, e.g. `amqp://user:pass@rabbitmq:5672/%2f`.
    /// Required: empty is an error.
    #[arg(long, env = "FRACTILE_AMQP_URL", hide_env_values = true, value_parser = UrlParser::required(fractile_queue::AMQP_SCHEMES).checked_by(fractile_queue::check_url))]
    pub amqp_url: SecretUrl,

    /// Redis to store rendered tiles in, e.g. `redis://:password@redis:6379`. Required:
    /// empty is an error.
    #[arg(long, env = "FRACTILE_REDIS_URL", hide_env_values = true, value_parser = UrlParser::required(fractile_tile_store::REDIS_SCHEMES).checked_by(fractile_tile_store::check_url))]
    pub redis_url: SecretUrl,

    /// Redis of seed records (`maxmemory-policy noeviction`, persistent), e.g.
    /// `redis://:password@redis-state:6379`. Unset or empty: the cache's
    /// (`FRACTILE_REDIS_URL`), for development.
    #[arg(long, env = "FRACTILE_STATE_REDIS_URL", hide_env_values = true, value_parser = UrlParser::optional(fractile_tile_store::REDIS_SCHEMES).checked_by(fractile_tile_store::check_url))]
    pub state_redis_url: Option<SecretUrl>,

    /// Key prefix, tile lifetime, pool size, budget and breaker of Redis.
    #[command(flatten)]
    pub redis: RedisArgs,

    /// Queue names.
    #[command(flatten)]
    pub queue: QueueArgs,

    /// Address for /livez, /readyz and /metrics. Loopback unless set; containers set
    /// `0.0.0.0:9001` so probes and Prometheus reach it.
    #[arg(long, env = "FRACTILE_ADMIN_LISTEN", default_value = "127.0.0.1:9001")]
    pub admin_listen: SocketAddr,

    /// Interactive jobs held unacknowledged at once (default: 2 per render thread, so a
    /// thread finds the next job waiting). At least 1: AMQP reads 0 as no limit at all.
    #[arg(long, env = "FRACTILE_INTERACTIVE_PREFETCH")]
    pub interactive_prefetch: Option<NonZeroU16>,

    /// Seed jobs held unacknowledged at once (default: 1 per render thread: the rest stay in
    /// the broker, where other workers can take them). At least 1.
    #[arg(long, env = "FRACTILE_BULK_PREFETCH")]
    pub bulk_prefetch: Option<NonZeroU16>,

    /// This worker's name in metrics and `Server-Timing` (default: the host name).
    #[arg(long, env = "FRACTILE_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Keep interactive jobs ahead of seed jobs (the default). `false` puts both through one
    /// first-come-first-served lane with the same prefetch: only for the load-test experiment
    /// that shows what priority buys.
    #[arg(long, env = "FRACTILE_PRIORITY", default_value_t = true, action = clap::ArgAction::Set)]
    pub priority: bool,

    /// What every fractile process has: render threads, shutdown timeout, the admin port's
    /// limits, fault injection and its token, logging.
    #[command(flatten)]
    pub process: ProcessArgs,
}

impl Config {
    /// The settings of this process's flags and environment; a bad one exits with clap's
    /// usage error (status 2).
    pub fn load() -> Self {
        Self::try_load_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// The settings of `args` and the environment, with the checks that span settings.
    pub fn try_load_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let config = Self::try_parse_from(args)?;
        config.process.check_for::<Self>()?;
        Ok(config)
    }

    /// Prefetch of the interactive consumer.
    pub fn interactive_prefetch(&self) -> u16 {
        self.interactive_prefetch.map_or_else(
            || per_thread(self.process.render_threads(), 2),
            NonZeroU16::get,
        )
    }

    /// Prefetch of the bulk consumer.
    pub fn bulk_prefetch(&self) -> u16 {
        let per = if self.priority { 1 } else { 2 };
        self.bulk_prefetch.map_or_else(
            || per_thread(self.process.render_threads(), per),
            NonZeroU16::get,
        )
    }

    /// The Redis of seed records: `FRACTILE_STATE_REDIS_URL`, else the cache's.
    pub fn state_redis_url(&self) -> &SecretUrl {
        self.state_redis_url
            .as_ref()
            .filter(|url| !url.is_empty())
            .unwrap_or(&self.redis_url)
    }

    /// The worker's id.
    pub fn worker_id(&self) -> String {
        self.worker_id
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("worker-{}", std::process::id()))
    }
}

fn per_thread(threads: NonZeroUsize, n: usize) -> u16 {
    u16::try_from(threads.get().saturating_mul(n))
        .unwrap_or(u16::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker's settings with these URLs and `extra` flags.
    fn parse(amqp: &str, redis: &str, extra: &[&str]) -> Config {
        let args = ["fractile-worker", "--amqp-url", amqp, "--redis-url", redis];
        Config::try_parse_from(args.iter().chain(extra)).expect("parses")
    }

    #[test]
    fn an_empty_or_invalid_url_names_its_variable_and_hides_the_password() {
        let refused = |amqp: &str, redis: &str| {
            let args = ["fractile-worker", "--amqp-url", amqp, "--redis-url", redis];
            Config::try_parse_from(args)
                .expect_err("refused")
                .to_string()
        };
        for (error, variable) in [
            (refused("", "redis://y"), "FRACTILE_AMQP_URL"),
            (refused("amqp://x", ""), "FRACTILE_REDIS_URL"),
            (
                refused("guest:s3cret@rabbitmq", "redis://y"),
                "FRACTILE_AMQP_URL",
            ),
            (
                refused("amqp://x", "http://:s3cret@redis"),
                "FRACTILE_REDIS_URL",
            ),
        ] {
            assert!(error.contains(variable), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
        assert!(refused("", "redis://y").contains("empty"));
    }

    #[test]
    fn a_prefetch_of_zero_is_refused_because_amqp_reads_it_as_unlimited() {
        for flag in ["--interactive-prefetch", "--bulk-prefetch"] {
            let args = [
                "fractile-worker",
                "--amqp-url",
                "amqp://x",
                "--redis-url",
                "redis://y",
                flag,
                "0",
            ];
            assert!(Config::try_parse_from(args).is_err(), "{flag} 0 accepted");
        }
        let c = parse("amqp://x", "redis://y", &["--interactive-prefetch", "5"]);
        assert_eq!(c.interactive_prefetch(), 5);
    }

    #[test]
    fn the_admin_port_is_loopback_unless_set() {
        let c = parse("amqp://x", "redis://y", &[]);
        assert!(c.admin_listen.ip().is_loopback(), "{}", c.admin_listen);
    }

    #[test]
    fn debug_never_shows_the_passwords_of_the_urls() {
        let c = parse(
            "amqp://fractile:amqp-s3cret@rabbitmq:5672/%2f",
            "redis://:redis-s3cret@redis:6379",
            &[],
        );
        let printed = format!("{c:?}");
        for secret in ["amqp-s3cret", "redis-s3cret"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(
            printed.contains("amqp://fractile:***@rabbitmq"),
            "{printed}"
        );
        // The clients still get the password.
        assert_eq!(c.redis_url.expose(), "redis://:redis-s3cret@redis:6379");
    }

    #[test]
    fn the_redis_pool_size_is_a_setting() {
        let c = parse("amqp://x", "redis://y", &["--redis-pool-size", "3"]);
        assert_eq!(c.redis.settings(&c.redis_url).pool_size, 3);
    }
}
