//! The state every handler can reach ([`AppState`]) and how it is built from the
//! configuration: metrics, fault injection, the render pool, the tile cache and, when
//! configured, Redis and the render queue.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::FromRef;
use axum::http::HeaderValue;
use base64::Engine as _;
use fractile_http::Readiness;
use fractile_http::faults::{Fault, Faults};
use fractile_queue::{Priority, PublisherLink};
use fractile_render::MaxZoom;
use fractile_render_pool::RenderPool;
use fractile_tile_store::{ReadyListener, SeedQuotas, SeedStore, TileStore};
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, CorsOrigins, PublicUrl};
use crate::head_limits::HeadLimits;
use crate::metrics::Metrics;
use crate::seeds::{self, Expansions, SeedSettings, Seeds};
use crate::tile_cache::{Fill, LocalFill, Placement, QueueFill, SharedFill, TileCache};

/// The viewer page; `{{MAX_ZOOM}}` and `{{LEAFLET_BASE}}` are filled in at start-up.
const VIEWER_HTML: &str = include_str!("viewer/index.html");

/// What every handler can reach: one reference-counted [`SharedState`], so a clone is one atomic
/// increment. The router and its middleware clone the state several times per request, and
/// cloning the fields one by one (each cache, channel and token its own `Arc`) was a tenth
/// of an L1 hit's instructions.
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct SharedState {
    /// L1 and the way misses are filled.
    pub tiles: TileCache,
    /// The render threads (shared with the tile cache's local fill).
    pub pool: RenderPool,
    /// Redis and the render queue, in distributed mode.
    pub backends: Option<Backends>,
    /// This process's metrics.
    pub metrics: Arc<Metrics>,
    /// Deepest zoom served.
    pub max_zoom: MaxZoom,
    /// The `Cache-Control` value of tile responses, built once.
    pub cache_control: HeaderValue,
    /// Tile requests admitted at once.
    pub max_in_flight: usize,
    /// Origins allowed to read the tiles and the document from a script (CORS).
    pub cors: CorsOrigins,
    /// Where clients reach the api (`FRACTILE_PUBLIC_URL`), for the metadata's URLs.
    pub public_url: Option<PublicUrl>,
    /// Upper bound on a tile request.
    pub request_timeout: Duration,
    /// Flipped when shutdown starts.
    pub readiness: Readiness,
    /// The viewer page, rendered once.
    pub viewer: bytes::Bytes,
    /// The viewer page's Content-Security-Policy (it allows the Leaflet asset origin).
    pub viewer_csp: HeaderValue,
    /// The viewer page's validator.
    pub viewer_etag: HeaderValue,
    /// `/favicon.ico`: a PNG of the whole set.
    pub favicon: bytes::Bytes,
    /// The favicon's validator.
    pub favicon_etag: HeaderValue,
    /// How long a request body may take to arrive.
    pub body_read_timeout: Duration,
    /// The seed routes' state: settings, and the expansions in distributed mode.
    pub seeds: Seeds,
    /// Cancelled at shutdown: stops background work (seed expansion, the ready listener).
    pub background: CancellationToken,
    /// Injected faults (`/faults` on the admin port), off unless configured.
    pub faults: Faults,
    /// Request-head limits answered with JSON.
    pub head_limits: HeadLimits,
    /// What tracing does for a request: nothing (`OTEL_SDK_DISABLED`), spans kept for their
    /// context only, or spans exported (only then does a sampled response name its trace in
    /// `traceresponse`).
    pub traces: Traces,
}

/// What tracing does for each request, from the settings.
#[derive(Debug, Clone)]
pub enum Traces {
    /// Off (`OTEL_SDK_DISABLED=true`): no span context, in or out.
    Off,
    /// Spans have a context (it travels, logs carry its ids) but are not exported.
    Kept,
    /// Spans are exported; a request without a caller's context is traced when this
    /// sampler picks it.
    Exported(fractile_http::trace::RootSampler),
}

impl Traces {
    fn of(settings: &fractile_settings::TraceArgs) -> Traces {
        if settings.sdk_disabled {
            Traces::Off
        } else if settings.traces_url().is_some() {
            Traces::Exported(fractile_http::trace::RootSampler::new(settings.sampling()))
        } else {
            Traces::Kept
        }
    }
}

/// The distributed-mode dependencies, connected (or connecting) in the background.
#[derive(Clone)]
pub struct Backends {
    /// The cache Redis: L2, render claims, announcements.
    pub store: TileStore,
    /// The state store: seed records (the same server as `store` unless
    /// `FRACTILE_STATE_REDIS_URL` names another).
    pub seeds: SeedStore,
    /// Announcements of tiles rendered by workers.
    pub ready: ReadyListener,
    /// The render queue, when `FRACTILE_AMQP_URL` is set (connected in the background: it
    /// may have no publisher yet, or none for a while).
    pub publisher: Option<PublisherLink>,
}

/// How misses are filled under `config`: here in embedded mode; Redis first in distributed
/// mode, then the workers when there is a queue.
fn fill(
    config: &Config,
    pool: RenderPool,
    backends: Option<&Backends>,
    metrics: &Arc<Metrics>,
) -> Fill {
    let placement = if config.render_on_executor {
        Placement::Executor
    } else {
        Placement::Pool
    };
    let local =
        LocalFill::new(pool, config.render_timeout, Arc::clone(metrics)).placement(placement);
    let Some(backends) = backends else {
        return Fill::Local(local);
    };
    let lane = if config.queue_priority {
        Priority::Interactive
    } else {
        Priority::Bulk
    };
    let queue = backends.publisher.clone().map(|link| {
        QueueFill::new(
            backends.store.clone(),
            backends.ready.clone(),
            link,
            (config.render_timeout, config.publish_timeout),
            lane,
            Arc::clone(metrics),
        )
    });
    Fill::Shared(Box::new(SharedFill::new(
        backends.store.clone(),
        local,
        queue,
        config.queue_fallback,
        Arc::clone(metrics),
    )))
}

/// The faults the api can inject: it serves tiles and renders them.
const API_FAULTS: &[Fault] = &[Fault::TileLatency, Fault::TileErrors, Fault::RenderSlowdown];

impl AppState {
    /// Builds the state for embedded mode (metrics, render pool, L1), whatever the
    /// configuration says about Redis and RabbitMQ.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        Self::build(config, None, CancellationToken::new())
    }

    /// Builds the state with the dependencies the configuration names: Redis (L2) when
    /// `FRACTILE_REDIS_URL` is set, and the render queue when `FRACTILE_AMQP_URL` is set.
    /// Neither has to answer now: Redis is connected lazily, and RabbitMQ in the background
    /// with backoff (misses are served per `FRACTILE_QUEUE_FALLBACK` until it is up), so a
    /// replica restarted during a broker outage serves instead of crash-looping.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        if config.redis_url.is_some() && config.redis.tile_mac_key.is_none() {
            tracing::warn!(
                "FRACTILE_TILE_MAC_KEY is not set: tiles read from Redis are checked for their \
                 shape only, so anything that can write to Redis can have its bytes served as a \
                 tile; set the same key (`openssl rand -hex 32`) on the api and the workers"
            );
        }
        let background = CancellationToken::new();
        let backends = match (&config.redis_url, config.state_redis_url()) {
            (Some(cache), Some(state)) => {
                let store =
                    TileStore::new(&config.redis.settings(cache)).context("configuring Redis")?;
                let seeds = SeedStore::new(&config.redis.settings(state))
                    .context("configuring the state store (Redis)")?;
                let publisher = config.amqp_url.as_ref().map(|url| {
                    PublisherLink::start(
                        url.expose().into(),
                        "fractile-api".into(),
                        config.queue.topology(),
                        background.clone(),
                    )
                });
                Some(Backends {
                    ready: store.ready_listener(background.clone()),
                    store,
                    seeds,
                    publisher,
                })
            }
            _ => None,
        };
        let state = Self::build(config, backends, background)?;
        // Expansions whose replica died are continued here (see `seeds`), and the running
        // seeds' progress is sampled for the seed-progress SLO.
        if let Ok(expansions) = state.seeds.expansions() {
            expansions.start_takeover();
            expansions.start_progress_sampling(
                state.metrics.seed_minutes.clone(),
                config.seed_progress_period,
            );
        }
        Ok(state)
    }

    fn build(
        config: &Config,
        backends: Option<Backends>,
        background: CancellationToken,
    ) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new().context("registering metrics")?);
        let admin_token = config
            .process
            .faults
            .injection()
            .map_err(anyhow::Error::msg)?;
        let faults = Faults::new(admin_token, API_FAULTS, metrics.registry())
            .context("registering fault metrics")?;
        let pool = RenderPool::new(
            config.process.render_threads(),
            config.render_queue,
            metrics.pool.clone(),
        )
        .context("starting render threads")?
        .with_slowdown(faults.slowdown());
        if let Some(backends) = &backends {
            backends
                .store
                .register_metrics(metrics.registry())
                .context("registering the Redis breaker's metrics")?;
            backends
                .seeds
                .register_metrics(metrics.registry())
                .context("registering the state store breaker's metrics")?;
        }
        let tiles = TileCache::new(
            config.l1_bytes,
            fill(config, pool.clone(), backends.as_ref(), &metrics),
            config.max_pending_misses.get(),
            Arc::clone(&metrics),
        );
        let cache_control = HeaderValue::from_str(&format!(
            "public, max-age={}, immutable",
            config.cache_max_age.as_secs()
        ))
        .context("building Cache-Control")?;
        let max_zoom = config.max_zoom();
        let expansions = backends.as_ref().and_then(|b| {
            let backends = seeds::Backends {
                seeds: b.seeds.clone(),
                tiles: b.store.clone(),
                link: b.publisher.clone()?,
            };
            Some(Expansions::new(
                backends,
                config.seed_lease,
                max_zoom,
                background.clone(),
            ))
        });
        let seeds = Seeds::new(
            SeedSettings {
                token: config.seed_token.clone(),
                max_zoom,
                max_tiles: config.seed_max_tiles,
                quotas: SeedQuotas {
                    max_active: config.seed_max_active.get(),
                    max_queued_tiles: config.seed_max_queued_tiles,
                },
            },
            expansions,
        );
        let favicon = favicon()?;
        let viewer = VIEWER_HTML
            .replace("{{MAX_ZOOM}}", &max_zoom.get().to_string())
            .replace("{{LEAFLET_BASE}}", config.viewer_assets.base());
        Ok(AppState(Arc::new(SharedState {
            tiles,
            pool,
            backends,
            metrics,
            max_zoom,
            cache_control,
            max_in_flight: config.max_in_flight.get(),
            cors: config.cors_allow_origins.clone(),
            public_url: config.public_url.clone(),
            request_timeout: config.request_timeout,
            readiness: Readiness::default(),
            viewer_csp: viewer_csp(&viewer, &config.viewer_assets)?,
            viewer_etag: crate::validator::weak_etag(viewer.as_bytes()),
            viewer: viewer.into(),
            favicon_etag: crate::validator::weak_etag(&favicon),
            favicon,
            body_read_timeout: config.body_read_timeout,
            seeds,
            background,
            faults,
            head_limits: HeadLimits::new(config),
            traces: Traces::of(&config.process.trace),
        })))
    }
}

/// The viewer's CSP: its own origin, plus the origin of the Leaflet assets when they are
/// off-site. Scripts run only from those origins and as the page's own inline scripts, each
/// allowed by its SHA-256 (`'unsafe-inline'` would let any injected script run too); styles
/// keep `'unsafe-inline'` (Leaflet positions its panes and tiles with style attributes).
fn viewer_csp(page: &str, assets: &crate::config::ViewerAssets) -> anyhow::Result<HeaderValue> {
    let cdn = assets.origin().map(|o| format!(" {o}")).unwrap_or_default();
    let scripts: String = inline_scripts(page)
        .map(|script| {
            let digest = sha2::Sha256::digest(script.as_bytes());
            format!(
                " 'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        })
        .collect();
    HeaderValue::from_str(&format!(
        "default-src 'self'; script-src 'self'{scripts}{cdn}; \
         style-src 'self' 'unsafe-inline'{cdn}; img-src 'self' blob: data:{cdn}; \
         connect-src 'self'; frame-ancestors 'none'"
    ))
    .context("building the viewer's Content-Security-Policy")
}

/// The bodies of `page`'s inline scripts (`<script>…</script>`, no attributes), as a CSP hash
/// covers them: exactly the text between the tags.
fn inline_scripts(page: &str) -> impl Iterator<Item = &str> {
    page.split("<script>")
        .skip(1)
        .filter_map(|rest| rest.split_once("</script>").map(|(body, _)| body))
}

/// `/favicon.ico`: the classic zoom-0 tile, rendered once at start-up (a PNG; browsers take
/// one under that name).
fn favicon() -> anyhow::Result<bytes::Bytes> {
    let tile = fractile_render::TileId::new(0, 0, 0, MaxZoom::LIMIT).context("tile 0/0/0")?;
    let png = fractile_render::render_tile(tile, fractile_render::Style::Classic, &|| false)
        .context("rendering the favicon")?;
    Ok(png.into())
}

impl AppState {
    /// Stops background work (seed expansions and their takeover, the ready listener) and
    /// waits, at most `limit`, for expansions to give their leases back; false if some were
    /// still running at `limit`.
    pub async fn stop_background(&self, limit: Duration) -> bool {
        self.background.cancel();
        match self.seeds.expansions() {
            Ok(expansions) => expansions.wait(limit).await,
            Err(_) => true,
        }
    }
}

/// The seed routes take their own state, not [`AppState`]: they never see the tile cache.
impl FromRef<AppState> for Seeds {
    fn from_ref(state: &AppState) -> Seeds {
        state.seeds.clone()
    }
}
