//! `fractile-load flood`: many connections, each asking for a new tile the moment its last
//! answer arrived, and a probe for one hot tile beside them.
//!
//! This is the hostile client (or a page gone viral), not a traffic model: a closed loop on
//! every connection, so the pressure is as high as the server lets it be. What it measures is
//! not latency but what each answer *was*: a tile, the api's own refusal (`503` with its JSON
//! body and `Retry-After`), or something else — a load balancer's `502`/`504`, another
//! status, a connection that failed. A service that sheds well answers the excess with the
//! second kind and keeps serving cached tiles to the probe; one that does not fails people
//! who asked for a tile it had in memory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::driver;

/// Longest a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one request may take, to its last body byte (above nginx's and the api's own
/// request timeouts, so their answers are seen rather than cut off).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause after a connection attempt failed, so a refusing server does not turn the flood
/// into a busy loop of refusals.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);
/// Requests for the probe's tile before the flood starts, so every replica behind a load
/// balancer holds it (least-connections on idle replicas takes turns).
const WARM_REQUESTS: u32 = 16;

#[derive(clap::Args)]
pub struct FloodArgs {
    /// Base URL, e.g. http://127.0.0.1:8080 (loopback: a flood is for your own servers).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Connections that each ask for new tiles back to back.
    #[arg(long, default_value_t = 1500)]
    connections: usize,
    /// Length of the flood in seconds (requests under way at the end are awaited).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// First flood tile (runs that must not share caches use different offsets).
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// The hot tile the probe asks for (requested first, so it is cached).
    #[arg(long, default_value = "/tiles/3/2/3.png")]
    probe: String,
    /// Milliseconds between two probe requests.
    #[arg(long, default_value_t = 20)]
    probe_every_ms: u64,
    /// Name of the run in the report.
    #[arg(long, default_value = "flood")]
    name: String,
    /// Where to write `flood.json`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exit non-zero unless every flood answer was a tile or the api's own 503, and at least
    /// this share of probes (0-1) got their tile.
    #[arg(long)]
    check_probe_ok: Option<f64>,
}

/// What one answer was.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Answer {
    /// 200 with a body.
    Tile,
    /// The api's refusal: 503, `Retry-After`, and a JSON error body with its code.
    ApiRefusal(String),
    /// Any other status: a load balancer's 502 or 504, a 503 without the api's body, ...
    Status(u16),
    /// The connection or the request failed; the reason.
    Transport(&'static str),
}

impl Answer {
    fn label(&self) -> String {
        match self {
            Answer::Tile => "200".to_owned(),
            Answer::ApiRefusal(code) => format!("503 {code}"),
            Answer::Status(code) => code.to_string(),
            Answer::Transport(why) => format!("transport: {why}"),
        }
    }

    /// A tile or the api's own refusal: what an overloaded service should answer.
    fn is_expected(&self) -> bool {
        matches!(self, Answer::Tile | Answer::ApiRefusal(_))
    }
}

/// Counts of answers by label, and latencies of the tiles.
#[derive(Default)]
struct Tally {
    answers: BTreeMap<String, u64>,
    unexpected: u64,
    tiles: u64,
    total: u64,
    tile_latency: Option<hdrhistogram::Histogram<u64>>,
}

impl Tally {
    fn add(&mut self, answer: &Answer, took: Duration) {
        *self.answers.entry(answer.label()).or_default() += 1;
        self.total += 1;
        if !answer.is_expected() {
            self.unexpected += 1;
        }
        if *answer == Answer::Tile {
            self.tiles += 1;
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            let _ = self
                .tile_latency
                .get_or_insert_with(driver::histogram)
                .record(micros.max(1));
        }
    }

    fn merge(&mut self, other: Tally) {
        for (label, n) in other.answers {
            *self.answers.entry(label).or_default() += n;
        }
        self.unexpected += other.unexpected;
        self.tiles += other.tiles;
        self.total += other.total;
        if let Some(theirs) = other.tile_latency {
            let mine = self.tile_latency.get_or_insert_with(driver::histogram);
            let _ = mine.add(theirs);
        }
    }

    fn side(&self) -> Side {
        let ms = |q: f64| {
            self.tile_latency
                .as_ref()
                .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
        };
        Side {
            requests: self.total,
            answers: self.answers.clone(),
            unexpected: self.unexpected,
            tiles: self.tiles,
            tile_p50_ms: ms(0.5),
            tile_p99_ms: ms(0.99),
            tile_max_ms: ms(1.0),
        }
    }
}

/// One side of the run (the flood, or the probe) as reported.
#[derive(Serialize)]
struct Side {
    requests: u64,
    /// Answers by kind: `200`, `503 <api error code>`, another status, `transport: <why>`.
    answers: BTreeMap<String, u64>,
    /// Answers that were neither a tile nor the api's own refusal.
    unexpected: u64,
    tiles: u64,
    tile_p50_ms: f64,
    tile_p99_ms: f64,
    tile_max_ms: f64,
}

#[derive(Serialize)]
struct FloodReport {
    name: String,
    command: String,
    target: String,
    connections: usize,
    seconds: f64,
    flood: Side,
    probe: Side,
    probe_ok_ratio: f64,
}

/// Where requests go: the address to connect to and the `Host` header.
struct Target {
    addr: SocketAddr,
    host: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Target> {
        let uri: hyper::Uri = url.parse()?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "the flood speaks plain http: {url}"
        );
        let host = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("no host in {url}"))?
            .to_string();
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&host)?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{host} resolves to nothing"))?;
        Ok(Target { addr, host })
    }
}

/// A flood tile: zoom 13 around the set (a 3680×3680 band, then the next style), so a run
/// of millions of requests asks for each tile once, and none the `cold` scenario asks for.
pub fn flood_tile(n: u64) -> String {
    // Canonical URLs: the default style (classic) has no query.
    const STYLES: [&str; 4] = ["", "?style=fire", "?style=ocean", "?style=grayscale"];
    let (x, y) = (2560 + n % 3680, 2248 + (n / 3680) % 3680);
    let style = STYLES[usize::try_from(n / (3680 * 3680) % 4).unwrap_or(0)];
    format!("/tiles/13/{x}/{y}.png{style}")
}

pub async fn run(args: FloodArgs) -> anyhow::Result<ExitCode> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let target = Arc::new(Target::parse(&args.target)?);
    let started = Instant::now();
    for _ in 0..WARM_REQUESTS {
        let mut warm = Connection::default();
        let answer = warm.get(&target, &args.probe).await;
        anyhow::ensure!(
            answer == Answer::Tile,
            "the probe's tile {} answered {} before the flood",
            args.probe,
            answer.label()
        );
    }
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let next = Arc::new(AtomicU64::new(args.offset));
    let mut flooders = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let (target, next) = (Arc::clone(&target), Arc::clone(&next));
        flooders.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut connection = Connection::default();
            while Instant::now() < until {
                let path = flood_tile(next.fetch_add(1, Ordering::Relaxed));
                let sent = Instant::now();
                let answer = connection.get(&target, &path).await;
                tally.add(&answer, sent.elapsed());
            }
            tally
        }));
    }
    let probe = {
        let (target, path) = (Arc::clone(&target), args.probe.clone());
        let every = Duration::from_millis(args.probe_every_ms.max(1));
        tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut connection = Connection::default();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < until {
                tick.tick().await;
                let sent = Instant::now();
                let answer = connection.get(&target, &path).await;
                tally.add(&answer, sent.elapsed());
            }
            tally
        })
    };
    let mut flood = Tally::default();
    for flooder in flooders {
        flood.merge(flooder.await?);
    }
    let probe = probe.await?;
    let report = FloodReport {
        name: args.name.clone(),
        command,
        target: args.target.clone(),
        connections: args.connections,
        seconds: started.elapsed().as_secs_f64(),
        probe_ok_ratio: if probe.total == 0 {
            0.0
        } else {
            probe.tiles as f64 / probe.total as f64
        },
        flood: flood.side(),
        probe: probe.side(),
    };
    println!(
        "{}: {} connections, {:.0} s: flood {} requests {:?}; probe {} requests {:?}, tile p99 {:.1} ms",
        report.name,
        report.connections,
        report.seconds,
        report.flood.requests,
        report.flood.answers,
        report.probe.requests,
        report.probe.answers,
        report.probe.tile_p99_ms,
    );
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(
            out.join("flood.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
    }
    if let Some(required) = args.check_probe_ok {
        let mut failed = Vec::new();
        if report.flood.unexpected > 0 {
            failed.push(format!(
                "{} flood answers were neither a tile nor the api's 503",
                report.flood.unexpected
            ));
        }
        if report.probe_ok_ratio < required {
            failed.push(format!(
                "{:.2} % of probes got their tile, under {:.2} %",
                report.probe_ok_ratio * 100.0,
                required * 100.0
            ));
        }
        if !failed.is_empty() {
            eprintln!("fractile-load flood: {}", failed.join("; "));
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One keep-alive client connection, opened on first use and again whenever the server
/// closed it.
#[derive(Default)]
struct Connection {
    sender: Option<http1::SendRequest<Empty<Bytes>>>,
}

impl Connection {
    async fn get(&mut self, target: &Target, path: &str) -> Answer {
        let reusable = match self.sender.take() {
            Some(mut sender) => sender.ready().await.is_ok().then_some(sender),
            None => None,
        };
        let mut sender = match reusable {
            Some(sender) => sender,
            None => match open(target).await {
                Ok(sender) => sender,
                Err(why) => {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    return Answer::Transport(why);
                }
            },
        };
        let request = match hyper::Request::get(path)
            .header(hyper::header::HOST, &target.host)
            .body(Empty::<Bytes>::new())
        {
            Ok(request) => request,
            Err(_) => return Answer::Transport("invalid request"),
        };
        let answered = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|_| "request failed")?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|_| "body cut off")?.to_bytes();
            Ok::<_, &'static str>(classify(&parts, &body))
        })
        .await;
        match answered {
            Ok(Ok(answer)) => {
                self.sender = Some(sender);
                answer
            }
            Ok(Err(why)) => Answer::Transport(why),
            Err(_) => Answer::Transport("timed out"),
        }
    }
}

async fn open(target: &Target) -> Result<http1::SendRequest<Empty<Bytes>>, &'static str> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target.addr)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) => return Err("connect failed"),
        Err(_) => return Err("connect timed out"),
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| "handshake failed")?;
    tokio::spawn(connection);
    Ok(sender)
}

/// What a response was: a tile, the api's own refusal, or another status.
fn classify(parts: &hyper::http::response::Parts, body: &Bytes) -> Answer {
    match parts.status.as_u16() {
        200 if !body.is_empty() => Answer::Tile,
        503 if parts.headers.contains_key(hyper::header::RETRY_AFTER) => {
            match serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            {
                Some(code) => Answer::ApiRefusal(code),
                None => Answer::Status(503),
            }
        }
        status => Answer::Status(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(status: u16, retry_after: bool) -> hyper::http::response::Parts {
        let mut builder = hyper::Response::builder().status(status);
        if retry_after {
            builder = builder.header("retry-after", "1");
        }
        builder.body(()).expect("valid response").into_parts().0
    }

    #[test]
    fn only_the_apis_own_503_counts_as_a_refusal() {
        let json = Bytes::from_static(br#"{"error":{"code":"overloaded","message":"busy"}}"#);
        assert_eq!(
            classify(&parts(503, true), &json),
            Answer::ApiRefusal("overloaded".into())
        );
        // nginx's own pages: HTML, no Retry-After.
        let html = Bytes::from_static(b"<html><head><title>502 Bad Gateway</title></head></html>");
        assert_eq!(classify(&parts(502, false), &html), Answer::Status(502));
        assert_eq!(classify(&parts(503, false), &html), Answer::Status(503));
        assert_eq!(classify(&parts(503, true), &html), Answer::Status(503));
        assert_eq!(
            classify(&parts(200, false), &Bytes::from_static(b"png")),
            Answer::Tile
        );
        assert!(!Answer::Status(504).is_expected());
    }

    #[test]
    fn flood_tiles_do_not_repeat_within_a_run() {
        let paths: std::collections::HashSet<String> = (0..200_000).map(flood_tile).collect();
        assert_eq!(paths.len(), 200_000);
        assert_ne!(flood_tile(0), flood_tile(3680 * 3680));
    }
}
