//! Serving a router on a listener: hyper's HTTP/1 connection with a header-read deadline,
//! and graceful shutdown.
//!
//! `axum::serve` sets no timer on hyper, so hyper's header-read timeout never fires there: a
//! client that sends a header byte now and then holds its connection (and its task) forever,
//! which is the slowloris attack. This accept loop sets a timer and a header-read deadline,
//! and on shutdown stops accepting, lets requests in flight finish and closes idle
//! keep-alive connections.
//!
//! Shutdown can start earlier with a `closing` token ([`serve_closing`]): from then on every
//! response says `Connection: close`, so a keep-alive client opens its next connection anew
//! (to another replica, once the load balancer has seen readiness fail) instead of sending
//! it down a connection this process is about to close under it.

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Pause after a failed accept (out of file descriptors, say) before trying again, so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `stop` is cancelled, then waits for open connections to
/// finish their requests. The caller bounds that wait with its own deadline.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
) {
    serve_closing(
        listener,
        app,
        header_read_timeout,
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
    header_read_timeout: Duration,
    closing: CancellationToken,
    stop: CancellationToken,
) {
    let app = app.layer(axum::middleware::map_response(move |response: Response| {
        let closing = closing.clone();
        async move { close_when(&closing, response) }
    }));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Responses are written whole; Nagle would only delay the last segment.
        let _ = stream.set_nodelay(true);
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    // Refuse new connections from here on, then drain the open ones.
    drop(listener);
    graceful.shutdown().await;
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
