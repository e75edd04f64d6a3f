//! Configuration: every setting is a `FRACTILE_*` environment variable and a flag of the same
//! name (`--help` lists them). Values are validated into types here, once, at start-up.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use clap::{CommandFactory, Parser};
use fractile_queue::QueueArgs;
use fractile_render::MaxZoom;
use fractile_settings::{ProcessArgs, Secret, SecretParser, SecretUrl, UrlParser, parse_duration};
use fractile_tile_store::RedisArgs;

mod web;
pub use web::{CorsOrigins, PublicUrl, ViewerAssets, is_authority};

use fractile_queue::AMQP_SCHEMES;
use fractile_tile_store::REDIS_SCHEMES;

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
    version = fractile_http::build_info::VERSION_LINE,
    about = "fractile's tile api: serves Mandelbrot map tiles."
)]
pub struct Config {
    /// Address for tile traffic and the viewer.
    #[arg(long, env = "FRACTILE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address for /livez, /readyz and /metrics. Never route it through the load balancer.
    /// Loopback unless set: a process started by hand exposes nothing but its traffic port;
    /// containers set `0.0.0.0:9000` so probes and Prometheus reach it.
    #[arg(long, env = "FRACTILE_ADMIN_LISTEN", default_value = "127.0.0.1:9000")]
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

    /// Where the viewer loads Leaflet 1.9.4 from: a base URL holding `leaflet.js` and
    /// `leaflet.css`, either `https://…` or a path on this server's origin (`/…`). The page
    /// keeps its SRI hashes, so the files must be byte-identical to the npm package's `dist/`;
    /// the page's CSP allows this origin.
    #[arg(
        long,
        env = "FRACTILE_VIEWER_ASSETS",
        default_value = "https://unpkg.com/leaflet@1.9.4/dist",
        value_parser = ViewerAssets::parse
    )]
    pub viewer_assets: ViewerAssets,

    /// Web origins whose scripts may read the tiles and the API document (CORS): `*` (any
    /// page, the default, as public tile services do), origins separated by commas
    /// (`https://maps.example.com`), or `off`. A list makes every tile vary by `Origin`,
    /// which splits each shared cache's (CDN, proxy) copy of a tile per origin. The seed
    /// routes and the admin port never send CORS headers.
    #[arg(
        long,
        env = "FRACTILE_CORS_ALLOW_ORIGINS",
        default_value = "*",
        value_parser = CorsOrigins::parse
    )]
    pub cors_allow_origins: CorsOrigins,

    /// The URL clients reach the api at, e.g. `https://tiles.example.com` (a path prefix is
    /// kept): the TileJSON and WMTS documents name the tiles under it, and shared caches may
    /// keep them. Unset: built from each request's `Host` as `http://…`, and not cacheable.
    /// Set it behind a proxy that terminates TLS.
    #[arg(long, env = "FRACTILE_PUBLIC_URL", value_parser = PublicUrl::parse)]
    pub public_url: Option<PublicUrl>,

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

    /// How long a client may take to send a request's headers before its connection is
    /// closed (defends against slowloris; also closes idle keep-alive connections).
    #[arg(long, env = "FRACTILE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// How long a request body (a seed's JSON) may take to arrive whole once its head is in;
    /// past it the request is answered 408. A client trickling a body would otherwise hold
    /// its connection and task for as long as it liked.
    #[arg(long, env = "FRACTILE_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,

    /// Traffic connections open at once; more are closed as soon as they are accepted (and
    /// counted in `http_connections_rejected_total`). Lowered at start-up, with a warning, if
    /// the open-file limit cannot hold it.
    #[arg(long, env = "FRACTILE_MAX_CONNECTIONS", default_value_t = NonZeroUsize::new(4096).expect("non-zero"))]
    pub max_connections: NonZeroUsize,

    /// Largest request head (request line and headers), in bytes; larger gets 431 with a JSON
    /// body. Heads over twice this are refused by the HTTP parser itself (431 without a body).
    #[arg(long, env = "FRACTILE_MAX_HEAD_BYTES", default_value_t = 16 * 1024, value_parser = parse_head_bytes)]
    pub max_head_bytes: usize,

    /// Most header lines in a request; more get 431 with a JSON body. Over twice this the
    /// HTTP parser refuses the request itself (431 without a body).
    #[arg(long, env = "FRACTILE_MAX_HEADERS", default_value_t = 100, value_parser = parse_max_headers)]
    pub max_headers: usize,

    /// Longest request target (path and query), in bytes; longer gets 414 with a JSON body.
    /// A tile URI is under 100 bytes; the default is nginx's line buffer.
    #[arg(long, env = "FRACTILE_MAX_URI_BYTES", default_value_t = 8 * 1024, value_parser = parse_uri_bytes)]
    pub max_uri_bytes: usize,

    /// `max-age` of tile responses: tiles never change for a given renderer version.
    #[arg(long, env = "FRACTILE_CACHE_MAX_AGE", default_value = "1d", value_parser = parse_duration)]
    pub cache_max_age: Duration,

    /// Redis for the shared tile cache (L2), e.g. `redis://:password@redis:6379`. Unset or
    /// empty: embedded mode, L1 only.
    #[arg(long, env = "FRACTILE_REDIS_URL", hide_env_values = true, value_parser = UrlParser::optional(REDIS_SCHEMES).checked_by(fractile_tile_store::check_url))]
    pub redis_url: Option<SecretUrl>,

    /// Redis for durable state, seed records and quotas, e.g. `redis://:password@redis-state:6379`:
    /// run it with `maxmemory-policy noeviction` and persistence, apart from the cache.
    /// Unset or empty: the cache's (`FRACTILE_REDIS_URL`), for development.
    #[arg(long, env = "FRACTILE_STATE_REDIS_URL", hide_env_values = true, value_parser = UrlParser::optional(REDIS_SCHEMES).checked_by(fractile_tile_store::check_url))]
    pub state_redis_url: Option<SecretUrl>,

    /// RabbitMQ to send misses and seeds to workers, e.g. `amqp://user:pass@rabbitmq:5672/%2f`.
    /// Needs `FRACTILE_REDIS_URL` (workers return tiles through Redis). Unset: render here.
    /// Connected in the background with backoff: the api serves without it meanwhile.
    /// Unset or empty: render here.
    #[arg(
        long,
        env = "FRACTILE_AMQP_URL",
        hide_env_values = true,
        requires = "redis_url",
        value_parser = UrlParser::optional(AMQP_SCHEMES).checked_by(fractile_queue::check_url)
    )]
    pub amqp_url: Option<SecretUrl>,

    /// What a miss does when the queue cannot take it (broker down or recovering), or when
    /// Redis, which brings the workers' tiles back, is out of reach: `local` renders it here,
    /// `reject` answers 503.
    #[arg(long, env = "FRACTILE_QUEUE_FALLBACK", value_enum, default_value_t = QueueFallback::Local)]
    pub queue_fallback: QueueFallback,

    /// How long a miss waits for the broker to take its job (the publish and its confirm)
    /// before it is served per `FRACTILE_QUEUE_FALLBACK` instead. Bounds a miss while the
    /// broker blocks publishers (a memory or disk alarm) or is slow to confirm.
    #[arg(long, env = "FRACTILE_PUBLISH_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub publish_timeout: Duration,

    /// Key prefix, tile lifetime, pool size, budget and breaker of Redis.
    #[command(flatten)]
    pub redis: RedisArgs,

    /// Queue names.
    #[command(flatten)]
    pub queue: QueueArgs,

    /// Largest seed accepted, in tiles.
    #[arg(long, env = "FRACTILE_SEED_MAX_TILES", default_value_t = 100_000)]
    pub seed_max_tiles: u64,

    /// Bearer token of the seed routes (`/v1/seeds`), at least 16 bytes of visible ASCII,
    /// e.g. `openssl rand -hex 32`. Unset: the seed routes answer 403. A secret: never
    /// printed by `--help` or `Debug`.
    #[arg(long, env = "FRACTILE_SEED_TOKEN", hide_env_values = true, value_parser = SecretParser::at_least(SEED_TOKEN_MIN_BYTES))]
    pub seed_token: Option<Secret>,

    /// Seeds expanding or running at once, across every replica sharing this Redis prefix;
    /// beyond it `POST /v1/seeds` answers 429 + Retry-After.
    #[arg(long, env = "FRACTILE_SEED_MAX_ACTIVE", default_value_t = NonZeroU32::new(4).expect("non-zero"))]
    pub seed_max_active: NonZeroU32,

    /// Tiles of unfinished seeds not yet rendered, summed across every replica sharing this
    /// Redis prefix (the new seed's included); beyond it `POST /v1/seeds` answers 429 +
    /// Retry-After. A single seed larger than this is refused with 422 like one over
    /// `FRACTILE_SEED_MAX_TILES`.
    #[arg(
        long,
        env = "FRACTILE_SEED_MAX_QUEUED_TILES",
        default_value_t = 200_000
    )]
    pub seed_max_queued_tiles: u64,

    /// How long a replica's hold on a seed's expansion lasts without renewal (it renews
    /// every third of it). A replica that dies mid-expansion leaves its seeds to the other
    /// replicas, which look for such seeds as often and continue them where they stood,
    /// within about 1⅓ of this after the death.
    #[arg(long, env = "FRACTILE_SEED_LEASE", default_value = "30s", value_parser = fractile_settings::parse_nonzero_duration)]
    pub seed_lease: Duration,

    /// The seed-progress SLI's period: how often the deployment judges whether its running
    /// seeds advanced (a tile of one finished), counted in `seed_minutes_total`. Every
    /// replica offers a quarter of it apart and the first in each period takes the sample, so
    /// set the same on every replica; the SLO (deploy/slo/) speaks of minutes.
    #[arg(long, env = "FRACTILE_SEED_PROGRESS_PERIOD", default_value = "60s", value_parser = fractile_settings::parse_nonzero_duration)]
    pub seed_progress_period: Duration,

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

    /// The settings of `args` and the environment. An empty `FRACTILE_REDIS_URL` or
    /// `FRACTILE_AMQP_URL` (as a Docker `.env` file writes an unset one) means unset.
    pub fn try_load_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut config = Self::try_parse_from(args)?;
        config.redis_url = config.redis_url.filter(|url| !url.is_empty());
        config.state_redis_url = config.state_redis_url.filter(|url| !url.is_empty());
        config.amqp_url = config.amqp_url.filter(|url| !url.is_empty());
        if config.state_redis_url.is_some() && config.redis_url.is_none() {
            return Err(Self::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "FRACTILE_STATE_REDIS_URL (--state-redis-url) needs FRACTILE_REDIS_URL \
                 (--redis-url): seeds are a distributed-mode feature",
            ));
        }
        // clap's `requires` counts an empty Redis URL as given.
        if config.amqp_url.is_some() && config.redis_url.is_none() {
            return Err(Self::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "FRACTILE_AMQP_URL (--amqp-url) needs FRACTILE_REDIS_URL (--redis-url): \
                 workers return tiles through Redis",
            ));
        }
        config.process.check_for::<Self>()?;
        Ok(config)
    }

    /// The Redis of seed records: `FRACTILE_STATE_REDIS_URL`, else the cache's.
    pub fn state_redis_url(&self) -> Option<&SecretUrl> {
        self.state_redis_url.as_ref().or(self.redis_url.as_ref())
    }

    /// The deepest zoom served, as the render library's validated type.
    pub fn max_zoom(&self) -> MaxZoom {
        // parse_max_zoom_u8 already checked the limit when the value was read.
        MaxZoom::new(self.max_zoom).unwrap_or(MaxZoom::LIMIT)
    }

    /// Settings for tests: loopback on ephemeral ports, everything else default (feature
    /// `test-util`).
    #[cfg(feature = "test-util")]
    pub fn for_tests() -> Self {
        let mut config = Config::try_load_from(["fractile-api"]).unwrap_or_else(|e| e.exit());
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.admin_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        // No load balancer to wait for; tests of the delay set their own.
        config.shutdown_delay = Duration::ZERO;
        config
    }
}

/// Bounds of `FRACTILE_MAX_HEAD_BYTES`: a request line and a `Host` header need far less
/// than the lower one; the upper keeps a slow connection's buffer small.
const HEAD_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=1024 * 1024;

fn parse_head_bytes(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if HEAD_BYTES_RANGE.contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "must be between {} and {}",
            HEAD_BYTES_RANGE.start(),
            HEAD_BYTES_RANGE.end()
        ))
    }
}

fn parse_uri_bytes(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if (256..=64 * 1024).contains(&n) {
        Ok(n)
    } else {
        Err("must be between 256 and 65536".into())
    }
}

fn parse_max_headers(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if (1..=1000).contains(&n) {
        Ok(n)
    } else {
        Err("must be between 1 and 1000".into())
    }
}

/// Shortest seed token accepted: 16 bytes leave nothing to guess online.
pub const SEED_TOKEN_MIN_BYTES: usize = 16;

fn parse_max_zoom_u8(s: &str) -> Result<u8, String> {
    let z: u8 = s.parse().map_err(|e| format!("{e}"))?;
    MaxZoom::new(z).map(MaxZoom::get).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_assets_are_https_or_a_same_origin_path() {
        let cdn = ViewerAssets::parse("https://cdn.example:8443/leaflet/1.9.4/").expect("https");
        assert_eq!(cdn.base(), "https://cdn.example:8443/leaflet/1.9.4");
        assert_eq!(cdn.origin(), Some("https://cdn.example:8443"));
        let local = ViewerAssets::parse("/static/leaflet").expect("path");
        assert_eq!((local.base(), local.origin()), ("/static/leaflet", None));
        for bad in [
            "http://cdn.example/leaflet",
            "//cdn.example/leaflet",
            "https:///leaflet",
            "https://user@cdn.example/leaflet",
            "leaflet/dist",
            "/x\"><script>",
            "/x'; script-src *",
            "/x y",
            "",
        ] {
            assert!(ViewerAssets::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn max_zoom_beyond_precision_is_refused() {
        assert!(Config::try_parse_from(["fractile-api", "--max-zoom", "33"]).is_err());
        assert!(Config::try_parse_from(["fractile-api", "--max-zoom", "32"]).is_ok());
    }

    #[test]
    fn head_limits_outside_their_bounds_are_refused() {
        let parse = |flag: &str, v: &str| Config::try_parse_from(["fractile-api", flag, v]);
        assert!(parse("--max-head-bytes", "1023").is_err());
        assert!(parse("--max-head-bytes", "1024").is_ok());
        assert!(parse("--max-headers", "0").is_err());
        assert!(parse("--max-headers", "1001").is_err());
        assert!(parse("--max-uri-bytes", "255").is_err());
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
    fn empty_urls_mean_unset() {
        let c = Config::try_load_from(["fractile-api", "--redis-url", "", "--amqp-url", ""])
            .expect("empty is unset");
        assert!(c.redis_url.is_none() && c.amqp_url.is_none(), "{c:?}");
        let error =
            Config::try_load_from(["fractile-api", "--redis-url", "", "--amqp-url", "amqp://x"])
                .expect_err("a queue without Redis")
                .to_string();
        assert!(error.contains("FRACTILE_REDIS_URL"), "{error}");
    }

    #[test]
    fn an_invalid_url_names_its_variable_and_hides_the_password() {
        for (flag, bad, variable) in [
            ("--redis-url", "s3cret@redis:6379", "FRACTILE_REDIS_URL"),
            (
                "--redis-url",
                "http://:s3cret@redis:6379",
                "FRACTILE_REDIS_URL",
            ),
            (
                "--amqp-url",
                "guest:s3cret@rabbitmq:5672",
                "FRACTILE_AMQP_URL",
            ),
            (
                "--amqp-url",
                "redis://guest:s3cret@rabbitmq",
                "FRACTILE_AMQP_URL",
            ),
        ] {
            let mut args = vec!["fractile-api", flag, bad];
            if flag == "--amqp-url" {
                args.extend(["--redis-url", "redis://y"]);
            }
            let error = Config::try_load_from(args).expect_err(bad).to_string();
            assert!(error.contains(variable), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
    }

    #[test]
    fn the_admin_port_is_loopback_unless_set() {
        let c = Config::try_parse_from(["fractile-api"]).expect("defaults parse");
        assert!(c.admin_listen.ip().is_loopback(), "{}", c.admin_listen);
        assert!(c.listen.ip().is_unspecified(), "traffic listens everywhere");
    }

    #[test]
    fn debug_never_shows_the_passwords_of_the_urls() {
        let c = Config::try_parse_from([
            "fractile-api",
            "--amqp-url",
            "amqp://fractile:amqp-s3cret@rabbitmq:5672/%2f",
            "--redis-url",
            "redis://:redis-s3cret@redis:6379",
        ])
        .expect("parses");
        let printed = format!("{c:?}");
        assert!(!printed.contains("amqp-s3cret"), "{printed}");
        assert!(!printed.contains("redis-s3cret"), "{printed}");
        assert!(printed.contains("redis://:***@redis:6379"), "{printed}");
        // The clients still get the password.
        let amqp = c.amqp_url.as_ref().map(SecretUrl::expose);
        assert_eq!(amqp, Some("amqp://fractile:amqp-s3cret@rabbitmq:5672/%2f"));
    }

    #[test]
    fn seed_tokens_are_checked_and_never_printed() {
        let secret = "0123456789abcdef-secret";
        let c = Config::try_parse_from(["fractile-api", "--seed-token", secret]).expect("valid");
        let token = c.seed_token.as_ref().expect("set");
        assert_eq!(token.expose(), secret.as_bytes());
        assert!(!format!("{c:?}").contains(secret), "Debug leaks the token");
        assert!(
            Config::try_parse_from(["fractile-api"])
                .expect("valid")
                .seed_token
                .is_none()
        );
        for bad in ["", "short", "sixteen bytes ok", "0123456789abcdef\n"] {
            let error = Config::try_parse_from(["fractile-api", "--seed-token", bad])
                .expect_err("refused")
                .to_string();
            assert!(error.contains("seed-token"), "{error}");
            assert!(
                bad.is_empty() || !error.contains(bad),
                "the error echoes the token: {error}"
            );
        }
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
