//! `bare-tile-server`: the smallest hyper server that answers every request with one file's
//! bytes, as `image/png`. It is the yardstick of `loadtests/hot-path.sh`: what a cached tile
//! costs with nothing in front of the bytes but HTTP/1 itself (no routing, request id, span,
//! metrics or admission), on the same runtime and hyper version as the api.
//!
//! Usage: `bare-tile-server ADDRESS FILE`, e.g. `bare-tile-server 127.0.0.1:18700 tile.png`.

use std::convert::Infallible;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, file] = args.as_slice() else {
        eprintln!("usage: bare-tile-server ADDRESS FILE");
        return ExitCode::from(2);
    };
    match serve(address, file).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bare-tile-server: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(address: &str, file: &str) -> std::io::Result<()> {
    let body = Bytes::from(std::fs::read(file)?);
    let listener = TcpListener::bind(address).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_: Request<hyper::body::Incoming>| {
                let mut response = Response::new(Full::new(body.clone()));
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("image/png"));
                headers.insert(
                    CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                );
                async move { Ok::<_, Infallible>(response) }
            });
            // Errors here are clients going away mid-response: nothing to do but drop them.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
