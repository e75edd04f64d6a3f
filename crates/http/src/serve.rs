//! Serving a router on a listener: hyper's HTTP/1 connection with deadlines and limits on
//! every connection, a cap on open connections, and graceful shutdown.
//!
//! `axum::serve` sets no timer on hyper, so hyper's header-read timeout never fires there: a
//! client that sends a header byte now and then holds its connection (and its task) forever,
//! which is the slowloris attack. This accept loop bounds what one client can hold:
//!
//! - **time to send a head**: hyper's header-read timeout, with a timer. It also closes an
//!   idle keep-alive connection: hyper starts it whenever it waits for the next request head,
//!   so the idle gap between two requests is covered without a second mechanism (tested);
//! - **time a response may make no progress**: the socket is wrapped in
//!   `tokio_io_timeout::TimeoutStream` with a write timeout, so a client that stops reading
//!   (pipelining requests into a full send queue, say) loses its connection instead of
//!   holding it and its kernel buffers forever;
//! - **size of a request head**: hyper's `max_header_size` (bytes of the request line and
//!   headers), `max_headers` (lines) and `max_buf_size` (its read buffer). Beyond them hyper
//!   writes a bodyless `431` itself and closes: there is no hook to give it a body, so an
//!   application that wants JSON errors checks a lower limit of its own in a middleware and
//!   sets these as the hard memory bound above it;
//! - **half-closed clients** are answered: a client that shuts its writing side after its
//!   request (`shutdown(SHUT_WR)`) gets its response before the connection closes;
//! - **connections open at once**: a semaphore per listener. Beyond the cap a connection is
//!   accepted and closed at once (not left in the kernel's backlog, where it would hold a
//!   file descriptor and look like a hung server), and counted.
//!
//! Listeners come from [`bind`], with the kernel's largest listen backlog instead of the 128
//! the standard library asks for: a burst of new connections (a load balancer opening
//! upstream connections under a flood) waits in the kernel's queue for the accept loop
//! rather than having its SYNs dropped, which a client sees as a connect timeout and a load
//! balancer as a dead server.
//!
//! On shutdown it stops accepting, lets requests in flight finish and closes idle keep-alive
//! connections. Shutdown can start earlier with a `closing` token ([`serve_closing`]): from
//! then on every response says `Connection: close`, so a keep-alive client opens its next
//! connection anew (to another replica, once the load balancer has seen readiness fail)
//! instead of sending it down a connection this process is about to close under it.

use std::error::Error as _;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;

use crate::metrics::ListenerMetrics;
use fractile_telemetry::RateLimitedLog;

/// Pause after a failed accept (out of file descriptors, say) before trying again, so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// At most one warning per this interval while the connection cap turns connections away.
const CAP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// hyper's smallest allowed read buffer (`max_buf_size` panics below it).
const MIN_READ_BUFFER: usize = 8192;

/// Listen backlog where the system's limit cannot be read (not Linux): the kernel caps a
/// larger value at its own limit anyway. Linux's default since 5.4.
const FALLBACK_BACKLOG: u32 = 4096;

/// The largest listen backlog this process's network namespace allows
/// (`net.core.somaxconn`; a container or pod has its own, 4096 by default on Linux 5.4 and
/// later). `listen` silently caps anything larger at it.
pub fn listen_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|limit| limit.trim().parse::<u32>().ok())
        .filter(|&limit| limit > 0)
        .unwrap_or(FALLBACK_BACKLOG)
}

/// Binds a listener on `addr` with the system's largest backlog ([`listen_backlog`]).
///
/// `TcpListener::bind` (tokio's and the standard library's) asks for 128. Under a burst of
/// connections that queue overflows and the kernel drops SYNs; the client retries only after
/// a second, past a load balancer's connect timeout, so an overloaded server (which would
/// have answered 503 at once) is taken for a dead one. `SO_REUSEADDR` as `TcpListener::bind`
/// sets it, so a restarted process binds again while old connections linger in `TIME_WAIT`.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(listen_backlog())
}

/// What one listener allows each connection, and how many connections it keeps open.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: NonZeroUsize,
    /// How long a client may take to send a request head, and how long a keep-alive
    /// connection may wait idle for its next request.
    pub header_read_timeout: Duration,
    /// How long a write to the client may make no progress before the connection is closed.
    pub write_timeout: Duration,
    /// Largest request head (request line and headers) hyper reads, in bytes; also its read
    /// buffer (at least 8 KiB). Beyond it hyper answers a bodyless `431` and closes.
    pub max_head_bytes: usize,
    /// Most header lines hyper parses. Beyond it hyper answers a bodyless `431` and closes.
    pub max_headers: usize,
}

impl ConnectionLimits {
    /// Limits for an admin listener (probes and metrics): `max_connections` of its own, the
    /// given deadlines, and a head as large as hyper's smallest read buffer, ample for a probe
    /// or a scrape.
    pub fn admin(
        max_connections: NonZeroUsize,
        header_read_timeout: Duration,
        write_timeout: Duration,
    ) -> Self {
        ConnectionLimits {
            max_connections,
            header_read_timeout,
            write_timeout,
            max_head_bytes: MIN_READ_BUFFER,
            max_headers: 32,
        }
    }

    fn builder(&self) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // A client may shut its writing side once its request is sent (`nc -N`, some
            // scripts and proxies); hyper's default takes that EOF for an abandoned request
            // and closes without answering. With half-close the answer is written, then the
            // connection closed. The price: a client that really went away is noticed only
            // when the answer is written, so its request runs to its end (bounded by the
            // request timeout; a render it started fills the cache for the next client).
            .half_close(true)
            .header_read_timeout(self.header_read_timeout)
            .max_header_size(self.max_head_bytes)
            .max_buf_size(self.max_head_bytes.max(MIN_READ_BUFFER))
            .max_headers(self.max_headers);
        builder
    }
}

/// Serves `app` on `listener` until `stop` is cancelled, then waits for open connections to
/// finish their requests. The caller bounds that wait with its own deadline.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: ListenerMetrics,
    stop: CancellationToken,
) {
    serve_closing(
        listener,
        app,
        limits,
        metrics,
        CancellationToken::new(),
        stop,
    )
    .await;
}

/// As [`serve`], and once `closing` is cancelled (before `stop`, or with it) every response
/// carries `Connection: close`, after which hyper closes that connection.
pub async fn serve_closing(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: ListenerMetrics,
    closing: CancellationToken,
    stop: CancellationToken,
) {
    let app = app.layer(axum::middleware::map_response(move |response: Response| {
        let closing = closing.clone();
        async move { close_when(&closing, response) }
    }));
    let builder = limits.builder();
    // One permit per open connection, held by the connection's task until it ends.
    let open = Arc::new(Semaphore::new(limits.max_connections.get()));
    let cap_reached = RateLimitedLog::new(CAP_LOG_INTERVAL);
    let accept_failed = RateLimitedLog::new(CAP_LOG_INTERVAL);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of descriptors, say: a flood of clients can cause it, so once per
                    // interval with the count of the rest.
                    if let Some(suppressed) = accept_failed.check() {
                        tracing::warn!(%error, suppressed, "accept failed");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            // Over the cap: closing at once frees the descriptor and tells the client now,
            // where leaving it in the backlog would let it wait for a server that never reads.
            metrics.rejected.inc();
            drop(stream);
            if let Some(suppressed) = cap_reached.check() {
                tracing::warn!(
                    listener = metrics.listener,
                    max_connections = limits.max_connections.get(),
                    suppressed,
                    "connection cap reached: closing new connections at once"
                );
            }
            continue;
        };
        // Responses are written whole; Nagle would only delay the last segment.
        let _ = stream.set_nodelay(true);
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        let connection = builder.serve_connection(
            TokioIo::new(Box::pin(stream)),
            TowerToHyperService::new(app.clone()),
        );
        let connection = graceful.watch(connection);
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _open = metrics.open_guard();
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
                if let Some(reason) = close_reason(&error) {
                    metrics.closed(reason).inc();
                }
            }
            drop(permit);
        });
    }
    // Refuse new connections from here on, then drain the open ones.
    drop(listener);
    graceful.shutdown().await;
}

/// Why a connection was closed by one of this module's limits, as a metric label; `None`
/// for an error that is the client's own doing (a reset, a disconnect mid-response).
fn close_reason(error: &hyper::Error) -> Option<&'static str> {
    if error.is_timeout() {
        // hyper's header-read timeout: a head sent too slowly.
        Some("header_timeout")
    } else if error.is_parse_too_large() {
        Some("head_too_large")
    } else if error.is_parse() {
        Some("malformed")
    } else if error
        .source()
        .and_then(|cause| cause.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    {
        // TimeoutStream's write timeout: the client stopped reading.
        Some("write_timeout")
    } else {
        None
    }
}

/// Adds `Connection: close` to `response` once `closing` is cancelled. hyper reads that
/// header: it finishes writing the response, then closes the connection.
fn close_when(closing: &CancellationToken, mut response: Response) -> Response {
    if closing.is_cancelled() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
