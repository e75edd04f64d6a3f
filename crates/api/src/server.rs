//! The api process: [`Server`] binds the traffic and admin listeners, serves until the
//! shutdown future resolves, then drains in order (not ready, `Connection: close`, stop
//! accepting, finish in-flight requests, stop background work, last scrape).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use fractile_http::fd_limit;
use fractile_http::serve::{self, ConnectionLimits};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::head_limits::HeadLimits;
use crate::state::AppState;
use crate::{admin, app};

/// How long the admin port stays up after traffic has drained, so a last scrape can
/// see the final counters.
const ADMIN_LINGER: Duration = Duration::from_millis(500);

/// A bound but not yet serving api: listeners are open, so tests can read the ports.
pub struct Server {
    traffic: Bound,
    admin: Bound,
    state: AppState,
    shutdown_delay: Duration,
    shutdown_timeout: Duration,
    traffic_limits: ConnectionLimits,
    admin_limits: ConnectionLimits,
}

/// A listener and the address it is bound to, read once when it is bound: what
/// [`Server::traffic_addr`] and [`Server::admin_addr`] give is always the real one.
struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Bound {
    /// Binds the `what` listener to `addr`.
    fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<Bound> {
        let listener =
            serve::bind(addr).with_context(|| format!("binding {what} listener {addr}"))?;
        let addr = listener
            .local_addr()
            .with_context(|| format!("reading the address of {what} listener {addr}"))?;
        Ok(Bound { listener, addr })
    }
}

impl Server {
    /// Opens both listeners and builds the state.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        let (traffic_limits, admin_limits) = connection_limits(&config)?;
        let state = AppState::connect(&config).await?;
        let traffic = Bound::bind("traffic", config.listen)?;
        let admin = Bound::bind("admin", config.admin_listen)?;
        Ok(Server {
            traffic,
            admin,
            state,
            shutdown_delay: config.shutdown_delay,
            shutdown_timeout: config.process.shutdown_timeout,
            traffic_limits,
            admin_limits,
        })
    }

    /// The traffic listener's address (the real port when bound to port 0).
    pub fn traffic_addr(&self) -> SocketAddr {
        self.traffic.addr
    }

    /// The admin listener's address (the real port when bound to port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr
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
            traffic = %traffic.addr,
            admin = %admin.addr,
            max_zoom = state.max_zoom.get(),
            max_connections = traffic_limits.max_connections.get(),
            admin_max_connections = admin_limits.max_connections.get(),
            listen_backlog = serve::listen_backlog(),
            "listening"
        );
        let closing_traffic = CancellationToken::new();
        let stop_traffic = CancellationToken::new();
        let stop_admin = CancellationToken::new();
        let mut traffic_server = tokio::spawn(serve::serve_closing(
            traffic.listener,
            app::app(state.clone()),
            traffic_limits,
            state.metrics.connections.listener("traffic"),
            closing_traffic.clone(),
            stop_traffic.clone(),
        ));
        let mut admin_server = tokio::spawn(serve::serve(
            admin.listener,
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
        if !state.stop_background(ADMIN_LINGER).await {
            tracing::warn!(
                "seed expansions still running at exit; their leases run out and another replica takes them over"
            );
        }
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
        config.process.admin_max_connections,
        config.redis.redis_pool_size,
        nofile,
    )
    .map_err(anyhow::Error::msg)?;
    let traffic_max = fd_limit::fit_connections(
        "traffic",
        config.max_connections,
        admin_max.get().saturating_add(config.redis.redis_pool_size),
        nofile,
    )
    .map_err(anyhow::Error::msg)?;
    let traffic = HeadLimits::new(config).connection_limits(
        traffic_max,
        config.header_read_timeout,
        config.process.write_timeout,
    );
    let admin = ConnectionLimits::admin(
        admin_max,
        config.header_read_timeout,
        config.process.write_timeout,
    );
    Ok((traffic, admin))
}
