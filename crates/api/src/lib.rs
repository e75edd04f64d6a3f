//! fractile's tile api.
//!
//! Layout:
//! - [`config`]: settings from `FRACTILE_*` variables and flags;
//! - [`app`]: the traffic router and its admission-control stack;
//! - [`tiles`]: the tile route's parsing, validation and caching headers;
//! - [`tile_cache`]: L1 (moka) → L2 (Redis) → render here or by a worker, with coalesced misses;
//! - [`seeds`]: bulk pre-rendering jobs;
//! - [`admin`]: probes and metrics on their own port;
//! - [`head_limits`]: JSON 414 / 431 for request heads over the limits;
//! - [`metrics`], [`error`]: the cross-cutting parts; process plumbing (logging, the
//!   accept loop, signals) lives in `fractile-runtime`.
//!
//! The entry point is [`Server`]: `bind` the two listeners, then `run` until the shutdown
//! future resolves; tests pass their own future, the binary passes [`shutdown_signal`].

pub mod admin;
pub mod app;
pub mod config;
pub mod error;
pub mod head_limits;
pub mod metrics;
pub mod seeds;
pub mod tile_cache;
pub mod tiles;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::HeaderValue;
use fractile_queue::PublisherLink;
use fractile_render::MaxZoom;
use fractile_runtime::faults::{Fault, Faults};
use fractile_runtime::fd_limit;
use fractile_runtime::pool::RenderPool;
use fractile_runtime::serve::{self, ConnectionLimits};
use fractile_tile_store::{SeedQuotas, StoreSettings, TileStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use fractile_runtime::{Readiness, shutdown_signal};

use crate::config::QueueFallback;
use crate::head_limits::HeadLimits;
use crate::metrics::Metrics;
use crate::tile_cache::{Backends, TileCache};

/// The viewer page; `{{MAX_ZOOM}}` is filled in at start-up.
const VIEWER_HTML: &str = include_str!("viewer/index.html");

/// How long the admin port stays up after traffic has drained, so a last scrape can
/// see the final counters.
const ADMIN_LINGER: Duration = Duration::from_millis(500);

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// L1 and rendering.
    pub tiles: TileCache,
    /// This process's metrics.
    pub metrics: Arc<Metrics>,
    /// Deepest zoom served.
    pub max_zoom: MaxZoom,
    /// The `Cache-Control` value of tile responses, built once.
    pub cache_control: HeaderValue,
    /// Tile requests admitted at once.
    pub max_in_flight: usize,
    /// Upper bound on a tile request.
    pub request_timeout: Duration,
    /// Flipped when shutdown starts.
    pub readiness: Readiness,
    /// The viewer page, rendered once.
    pub viewer: bytes::Bytes,
    /// How long a request body may take to arrive.
    pub body_read_timeout: Duration,
    /// Largest seed accepted, in tiles.
    pub seed_max_tiles: u64,
    /// Who may use the seed routes.
    pub seed_gate: seeds::SeedGate,
    /// Limits on the seeds of the deployment (enforced in Redis, across replicas).
    pub seed_quotas: SeedQuotas,
    /// Cancelled at shutdown: stops background work (seed expansion, the ready listener).
    pub background: CancellationToken,
    /// Seed expansions in progress, and the task that takes over orphaned ones.
    pub seed_tasks: TaskTracker,
    /// This replica as a holder of seed expansion leases, and how long a lease lasts.
    pub seed_expander: seeds::Expander,
    /// Injected faults (`/faults` on the admin port), off unless configured.
    pub faults: Faults,
    /// Request-head limits answered with JSON.
    pub head_limits: HeadLimits,
}

/// The faults the api can inject: it serves tiles and renders them.
const API_FAULTS: &[Fault] = &[Fault::TileLatency, Fault::TileErrors, Fault::RenderSlowdown];

impl AppState {
    /// Builds the state for embedded mode (metrics, render pool, L1), whatever the
    /// configuration says about Redis and RabbitMQ.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        Self::with_backends(config, |_, _| None)
    }

    /// Builds the state with the dependencies the configuration names: Redis (L2) when
    /// `FRACTILE_REDIS_URL` is set, and the render queue when `FRACTILE_AMQP_URL` is set.
    /// Neither has to answer now: Redis is connected lazily, and RabbitMQ in the background
    /// with backoff (misses are served per `FRACTILE_QUEUE_FALLBACK` until it is up), so a
    /// replica restarted during a broker outage serves instead of crash-looping.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let amqp_url = config.amqp_url.clone();
        let topology = fractile_queue::Topology::new(&config.queue_prefix);
        let store = match &config.redis_url {
            Some(url) => {
                let mut settings = StoreSettings::new(url.clone(), config.key_prefix.clone());
                settings.tile_ttl = config.tile_ttl;
                settings.pool_size = config.redis_pool_size;
                let settings = settings.with_limits(&config.redis_limits);
                Some(TileStore::new(&settings).context("configuring Redis")?)
            }
            None => None,
        };
        let queue_priority = config.queue_priority;
        let state = Self::with_backends(config, move |stop, fallback| {
            let publisher = amqp_url.map(|url| {
                PublisherLink::start(url, "fractile-api".into(), topology, stop.clone())
            });
            store.map(|store| Backends {
                ready: store.ready_listener(stop),
                store,
                publisher,
                fallback,
                queue_priority,
            })
        })?;
        // Expansions whose replica died are continued here (see `seeds`).
        seeds::start_takeover(&state);
        Ok(state)
    }

    fn with_backends(
        config: &Config,
        backends: impl FnOnce(CancellationToken, QueueFallback) -> Option<Backends>,
    ) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new().context("registering metrics")?);
        let faults = Faults::new(config.fault_injection, API_FAULTS, metrics.registry())
            .context("registering fault metrics")?;
        let pool = RenderPool::new(
            config.render_threads(),
            config.render_queue,
            metrics.pool_metrics(),
        )
        .context("starting render threads")?
        .with_slowdown(faults.slowdown());
        let background = CancellationToken::new();
        let backends = backends(background.clone(), config.queue_fallback);
        if let Some(backends) = &backends {
            backends
                .store
                .register_metrics(metrics.registry())
                .context("registering the Redis breaker's metrics")?;
        }
        let tiles = TileCache::new(
            config.l1_bytes,
            pool,
            backends,
            Arc::clone(&metrics),
            config.render_timeout,
        )
        .render_on_executor(config.render_on_executor)
        .max_pending_misses(config.max_pending_misses.get())
        .publish_timeout(config.publish_timeout);
        let cache_control = HeaderValue::from_str(&format!(
            "public, max-age={}, immutable",
            config.cache_max_age.as_secs()
        ))
        .context("building Cache-Control")?;
        let max_zoom = config.max_zoom();
        Ok(AppState {
            tiles,
            metrics,
            max_zoom,
            cache_control,
            max_in_flight: config.max_in_flight.get(),
            request_timeout: config.request_timeout,
            readiness: Readiness::default(),
            viewer: VIEWER_HTML
                .replace("{{MAX_ZOOM}}", &max_zoom.get().to_string())
                .into(),
            body_read_timeout: config.body_read_timeout,
            seed_max_tiles: config.seed_max_tiles,
            seed_gate: seeds::SeedGate::new(config.seed_token.clone()),
            seed_quotas: SeedQuotas {
                max_active: config.seed_max_active.get(),
                max_queued_tiles: config.seed_max_queued_tiles,
            },
            background,
            seed_tasks: TaskTracker::new(),
            seed_expander: seeds::Expander::new(config.seed_lease),
            faults,
            head_limits: HeadLimits::new(config),
        })
    }
}

/// A bound but not yet serving api: listeners are open, so tests can read the ports.
pub struct Server {
    traffic: TcpListener,
    admin: TcpListener,
    state: AppState,
    shutdown_delay: Duration,
    shutdown_timeout: Duration,
    traffic_limits: ConnectionLimits,
    admin_limits: ConnectionLimits,
}

impl Server {
    /// Opens both listeners and builds the state.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        let (traffic_limits, admin_limits) = connection_limits(&config)?;
        let state = AppState::connect(&config).await?;
        let traffic = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding traffic listener {}", config.listen))?;
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("binding admin listener {}", config.admin_listen))?;
        Ok(Server {
            traffic,
            admin,
            state,
            shutdown_delay: config.shutdown_delay,
            shutdown_timeout: config.shutdown_timeout,
            traffic_limits,
            admin_limits,
        })
    }

    /// The traffic listener's address (the real port when bound to port 0).
    pub fn traffic_addr(&self) -> SocketAddr {
        self.traffic
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The shared state, for tests that inspect metrics or occupy the render pool.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains: readiness goes false and responses
    /// say `Connection: close` while the traffic port serves on for the shutdown delay; then
    /// no new connections are accepted, in-flight requests finish, and the call returns, at
    /// the latest after the shutdown timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Server {
            traffic,
            admin,
            state,
            shutdown_delay,
            shutdown_timeout,
            traffic_limits,
            admin_limits,
        } = self;
        tracing::info!(
            traffic = %traffic.local_addr()?,
            admin = %admin.local_addr()?,
            max_zoom = state.max_zoom.get(),
            max_connections = traffic_limits.max_connections.get(),
            admin_max_connections = admin_limits.max_connections.get(),
            "listening"
        );
        let closing_traffic = CancellationToken::new();
        let stop_traffic = CancellationToken::new();
        let stop_admin = CancellationToken::new();
        let mut traffic_server = tokio::spawn(serve::serve_closing(
            traffic,
            app::app(state.clone()),
            traffic_limits,
            state.metrics.connections.listener("traffic"),
            closing_traffic.clone(),
            stop_traffic.clone(),
        ));
        let mut admin_server = tokio::spawn(serve::serve(
            admin,
            admin::admin_app(state.clone()),
            admin_limits,
            state.metrics.connections.listener("admin"),
            stop_admin.clone(),
        ));

        tokio::select! {
            () = shutdown => {}
            ended = &mut traffic_server => anyhow::bail!("traffic server stopped unexpectedly: {ended:?}"),
            ended = &mut admin_server => anyhow::bail!("admin server stopped unexpectedly: {ended:?}"),
        }

        // Not ready first, listener closed later: a load balancer takes a few seconds to see
        // `/readyz` fail, and what it sends meanwhile must still be served. Keep-alive clients
        // are told to reconnect, so none sends into a connection closed under it.
        state.readiness.drain();
        closing_traffic.cancel();
        if !shutdown_delay.is_zero() {
            tracing::info!(
                delay = ?shutdown_delay,
                "shutting down: not ready, still serving for the shutdown delay"
            );
            tokio::select! {
                () = tokio::time::sleep(shutdown_delay) => {}
                ended = &mut traffic_server => anyhow::bail!("traffic server stopped unexpectedly: {ended:?}"),
            }
        }
        tracing::info!(
            in_flight = state.metrics.in_flight.get(),
            "shutting down: draining"
        );
        stop_traffic.cancel();
        match tokio::time::timeout(shutdown_timeout, traffic_server).await {
            Ok(Ok(())) => tracing::info!("drained"),
            Ok(Err(panicked)) => tracing::error!(%panicked, "traffic server failed while draining"),
            Err(_) => tracing::warn!(
                in_flight = state.metrics.in_flight.get(),
                "shutdown timeout passed with requests in flight; exiting anyway"
            ),
        }
        // Background work stops only now: requests still draining may have needed it.
        state.background.cancel();
        state.seed_tasks.close();
        let _ = tokio::time::timeout(ADMIN_LINGER, state.seed_tasks.wait()).await;
        tokio::time::sleep(ADMIN_LINGER).await;
        stop_admin.cancel();
        let _ = tokio::time::timeout(ADMIN_LINGER, admin_server).await;
        Ok(())
    }
}

/// The limits of the traffic and admin listeners, with the connection caps fitted under the
/// open-file limit (raised to the hard limit first): the traffic cap gives way, so the admin
/// port, the Redis pool and the reserve always have their descriptors.
fn connection_limits(config: &Config) -> anyhow::Result<(ConnectionLimits, ConnectionLimits)> {
    let nofile = fd_limit::raise_nofile_limit();
    let admin_max = fd_limit::fit_connections(
        "admin",
        config.admin_max_connections,
        config.redis_pool_size,
        nofile,
    )
    .map_err(anyhow::Error::msg)?;
    let traffic_max = fd_limit::fit_connections(
        "traffic",
        config.max_connections,
        admin_max.get().saturating_add(config.redis_pool_size),
        nofile,
    )
    .map_err(anyhow::Error::msg)?;
    let traffic = HeadLimits::new(config).connection_limits(
        traffic_max,
        config.header_read_timeout,
        config.write_timeout,
    );
    let admin =
        ConnectionLimits::admin(admin_max, config.header_read_timeout, config.write_timeout);
    Ok((traffic, admin))
}
