//! Configuration: every setting is a `FRACTILE_*` environment variable and a flag of the same
//! name (`--help` lists them). Values are validated into types here, once, at start-up.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use clap::Parser;
use fractile_render::MaxZoom;
use fractile_runtime::{LogFormat, parse_duration};

/// What a miss does when the render queue cannot take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueFallback {
    /// Render in this process.
    Local,
    /// Answer 503 + Retry-After.
    Reject,
}

/// The api's settings.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "fractile-api",
    version,
    about = "fractile's tile api: serves Mandelbrot map tiles."
)]
pub struct Config {
    /// Address for tile traffic and the viewer.
    #[arg(long, env = "FRACTILE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address for /livez, /readyz and /metrics. Never route it through the load balancer.
    #[arg(long, env = "FRACTILE_ADMIN_LISTEN", default_value = "0.0.0.0:9000")]
    pub admin_listen: SocketAddr,

    /// Bytes the in-process tile cache (L1) may hold, entry overhead included.
    #[arg(long, env = "FRACTILE_L1_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub l1_bytes: u64,

    /// Tile requests served at once; more are shed with 503 + Retry-After.
    #[arg(long, env = "FRACTILE_MAX_IN_FLIGHT", default_value_t = NonZeroUsize::new(256).expect("non-zero"))]
    pub max_in_flight: NonZeroUsize,

    /// Distinct tiles being fetched or rendered at once (L1 misses); more are shed with 503 +
    /// Retry-After. Kept below `FRACTILE_MAX_IN_FLIGHT`, so requests waiting on slow misses
    /// can never take every slot from cheap L1 hits.
    #[arg(long, env = "FRACTILE_MAX_PENDING_MISSES", default_value_t = NonZeroUsize::new(128).expect("non-zero"))]
    pub max_pending_misses: NonZeroUsize,

    /// Deepest zoom level served (at most 32: beyond that f64 runs out of precision).
    #[arg(long, env = "FRACTILE_MAX_ZOOM", default_value_t = 24, value_parser = parse_max_zoom_u8)]
    pub max_zoom: u8,

    /// Render threads (default: the CPUs this process may use).
    #[arg(long, env = "FRACTILE_RENDER_THREADS")]
    pub render_threads: Option<NonZeroUsize>,

    /// Renders that may wait for a thread; when full, a miss gets 503 + Retry-After at once.
    #[arg(long, env = "FRACTILE_RENDER_QUEUE", default_value_t = 64)]
    pub render_queue: usize,

    /// How long a request waits for its tile to render before giving up with 503.
    #[arg(long, env = "FRACTILE_RENDER_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub render_timeout: Duration,

    /// Upper bound on any tile request, whatever it waits for.
    #[arg(long, env = "FRACTILE_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How long the traffic port keeps serving after SIGTERM, with `/readyz` already failing
    /// and every response saying `Connection: close`, so load balancers stop sending before
    /// the listener closes. `0s` where something else waits first (a Kubernetes preStop hook).
    #[arg(long, env = "FRACTILE_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// How long in-flight requests may take to finish after SIGTERM before the process exits.
    #[arg(long, env = "FRACTILE_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// How long a client may take to send a request's headers before its connection is
    /// closed (defends against slowloris; also closes idle keep-alive connections).
    #[arg(long, env = "FRACTILE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// `max-age` of tile responses: tiles never change for a given renderer version.
    #[arg(long, env = "FRACTILE_CACHE_MAX_AGE", default_value = "1d", value_parser = parse_duration)]
    pub cache_max_age: Duration,

    /// Redis for the shared tile cache (L2), e.g. `redis://:password@redis:6379`. Unset:
    /// embedded mode, L1 only.
    #[arg(long, env = "FRACTILE_REDIS_URL")]
    pub redis_url: Option<String>,

    /// RabbitMQ to send misses and seeds to workers, e.g. `amqp://user:pass@rabbitmq:5672/%2f`.
    /// Needs `FRACTILE_REDIS_URL` (workers return tiles through Redis). Unset: render here.
    /// Connected in the background with backoff: the api serves without it meanwhile.
    #[arg(long, env = "FRACTILE_AMQP_URL", requires = "redis_url")]
    pub amqp_url: Option<String>,

    /// What a miss does when the queue cannot take it (broker down or recovering): `local`
    /// renders it here, `reject` answers 503.
    #[arg(long, env = "FRACTILE_QUEUE_FALLBACK", value_enum, default_value_t = QueueFallback::Local)]
    pub queue_fallback: QueueFallback,

    /// How long a miss waits for the broker to take its job (the publish and its confirm)
    /// before it is served per `FRACTILE_QUEUE_FALLBACK` instead. Bounds a miss while the
    /// broker blocks publishers (a memory or disk alarm) or is slow to confirm.
    #[arg(long, env = "FRACTILE_PUBLISH_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub publish_timeout: Duration,

    /// Prefix of the Redis keys (deployments sharing a Redis keep apart with it).
    #[arg(long, env = "FRACTILE_KEY_PREFIX", default_value = "fractile:")]
    pub key_prefix: String,

    /// Prefix of the queue names.
    #[arg(long, env = "FRACTILE_QUEUE_PREFIX", default_value = "fractile.")]
    pub queue_prefix: String,

    /// How long tiles live in Redis.
    #[arg(long, env = "FRACTILE_TILE_TTL", default_value = "7d", value_parser = parse_duration)]
    pub tile_ttl: Duration,

    /// Connections in the Redis pool.
    #[arg(long, env = "FRACTILE_REDIS_POOL_SIZE", default_value_t = 16)]
    pub redis_pool_size: usize,

    /// Largest seed accepted, in tiles.
    #[arg(long, env = "FRACTILE_SEED_MAX_TILES", default_value_t = 100_000)]
    pub seed_max_tiles: u64,

    /// Render misses directly on the async executor instead of the render pool. Deliberately
    /// wrong (a render blocks every request on that executor thread): it exists only so the
    /// load-test experiment can show what the render pool buys. Never enable it in production.
    #[arg(long, env = "FRACTILE_RENDER_ON_EXECUTOR", default_value_t = false)]
    pub render_on_executor: bool,

    /// Publish interactive misses to their own queue, ahead of seeds (the default). `false`
    /// sends them to the seed queue, first come first served: only for the load-test
    /// experiment that shows what priority buys.
    #[arg(long, env = "FRACTILE_QUEUE_PRIORITY", default_value_t = true, action = clap::ArgAction::Set)]
    pub queue_priority: bool,

    /// Log format.
    #[arg(long, env = "FRACTILE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

impl Config {
    /// The deepest zoom served, as the render library's validated type.
    pub fn max_zoom(&self) -> MaxZoom {
        // parse_max_zoom_u8 already checked the limit when the value was read.
        MaxZoom::new(self.max_zoom).unwrap_or(MaxZoom::LIMIT)
    }

    /// Render threads: the configured number, or the CPUs available to this process
    /// (cgroup quotas included).
    pub fn render_threads(&self) -> NonZeroUsize {
        self.render_threads
            .or_else(|| std::thread::available_parallelism().ok())
            .unwrap_or(NonZeroUsize::MIN)
    }

    /// Settings for tests: loopback on ephemeral ports, everything else default.
    pub fn for_tests() -> Self {
        let mut config = Config::parse_from(["fractile-api"]);
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.admin_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        // No load balancer to wait for; tests of the delay set their own.
        config.shutdown_delay = Duration::ZERO;
        config
    }
}

fn parse_max_zoom_u8(s: &str) -> Result<u8, String> {
    let z: u8 = s.parse().map_err(|e| format!("{e}"))?;
    MaxZoom::new(z).map(MaxZoom::get).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_zoom_beyond_precision_is_refused() {
        assert!(Config::try_parse_from(["fractile-api", "--max-zoom", "33"]).is_err());
        assert!(Config::try_parse_from(["fractile-api", "--max-zoom", "32"]).is_ok());
    }

    #[test]
    fn a_queue_without_redis_is_refused() {
        assert!(Config::try_parse_from(["fractile-api", "--amqp-url", "amqp://x"]).is_err());
        let both = [
            "fractile-api",
            "--amqp-url",
            "amqp://x",
            "--redis-url",
            "redis://y",
        ];
        assert!(Config::try_parse_from(both).is_ok());
    }

    #[test]
    fn flags_override_defaults() {
        let c = Config::try_parse_from([
            "fractile-api",
            "--max-in-flight",
            "3",
            "--listen",
            "127.0.0.1:1",
        ])
        .expect("valid flags");
        assert_eq!(c.max_in_flight.get(), 3);
        assert_eq!(c.listen.port(), 1);
        assert!(Config::try_parse_from(["fractile-api", "--max-in-flight", "0"]).is_err());
    }
}
