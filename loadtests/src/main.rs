//! `fractile-load`: fractile's load generator.
//!
//! `fractile-load run` drives one scenario against a target with an open arrival model and
//! writes `results.json`, `report.md` and SVG charts; `fractile-load compare` puts several
//! runs side by side for an experiment. `loadtests/run-experiments.sh` runs the checklist
//! experiments with it. Everything is bounded in time and requests. `fractile-load flood` is
//! the hostile client: many connections asking for new tiles back to back, counting what each
//! answer was (`flood.rs`).

mod driver;
mod flood;
mod report;
mod scenario;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::report::Summary;
use crate::scenario::{Picker, Profile, Schedule};

/// Length of a run without --seconds or --profile.
const DEFAULT_SECONDS: u64 = 30;

#[derive(Parser)]
#[command(
    name = "fractile-load",
    version,
    about = "Load generator for fractile: open-model map traffic, reports, comparisons."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one scenario and writes its report.
    Run(RunArgs),
    /// Compares runs (directories written by `run`) in one report with shared charts.
    Compare(CompareArgs),
    /// Floods a target from many connections, each asking for new tiles back to back, with
    /// a hot-tile probe beside them; counts what every answer was.
    Flood(flood::FloodArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Map sessions: popular places, shallow zooms, 4×3 views of neighbouring tiles.
    Browse,
    /// A few shallow tiles: all cached.
    Hot,
    /// Every request a new deep tile: all misses.
    Cold,
    /// Browse while a seed pre-renders zooms 0..--seed-max-zoom (seed cancelled at the end).
    SeedWhileBrowsing,
    /// Cold traffic at a rate ramped from --rate to --rate-to: past capacity on purpose.
    Overload,
    /// Browse at --rate with a --spike-factor burst in the middle fifth of the run.
    Spike,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Base URL, e.g. http://127.0.0.1:8080 (loopback only in this repository's scripts).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Tile requests per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Tile requests per second over time instead of --rate: `seconds:rate` points with
    /// straight lines between them, e.g. `0:40,60:400,180:400,240:40,300:40` (browse, hot,
    /// cold, seed-while-browsing). The run lasts until the last point unless --seconds is given.
    #[arg(long, conflicts_with = "rate")]
    profile: Option<Profile>,
    /// Final rate of the overload ramp.
    #[arg(long)]
    rate_to: Option<f64>,
    /// Rate multiplier of the spike.
    #[arg(long, default_value_t = 5.0)]
    spike_factor: f64,
    /// Length of the run in seconds (default: 30, or the profile's last point).
    #[arg(long)]
    seconds: Option<u64>,
    /// Requests outstanding at most; arrivals beyond are counted as dropped by the generator.
    #[arg(long, default_value_t = 2000)]
    max_in_flight: usize,
    /// Requests sent at most.
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: u64,
    /// First cold tile (runs that must not share caches use different offsets).
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Deepest zoom of the seed in `seed-while-browsing`.
    #[arg(long, default_value_t = 7)]
    seed_max_zoom: u8,
    /// The api's seed token (`FRACTILE_SEED_TOKEN`), sent as `Authorization: Bearer` by
    /// `seed-while-browsing`. Best set in the environment: the flag's value would be
    /// recorded with the command line in the report.
    #[arg(long, env = "FRACTILE_SEED_TOKEN", hide_env_values = true)]
    seed_token: Option<String>,
    /// Name of the run in reports.
    #[arg(long)]
    name: Option<String>,
    /// Where to write the report.
    #[arg(long)]
    out: PathBuf,
    /// Exit non-zero on any 5xx other than 503 or any transport error (smoke tests).
    #[arg(long)]
    fail_on_errors: bool,
}

#[derive(clap::Args)]
struct CompareArgs {
    /// Title of the comparison.
    #[arg(long)]
    title: String,
    /// A paragraph of context (what differs between the runs, what stays equal).
    #[arg(long, default_value = "")]
    note: String,
    /// Where to write README.md and the charts.
    #[arg(long)]
    out: PathBuf,
    /// Run directories, in the order to show them.
    runs: Vec<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args).await,
        Command::Compare(args) => compare(args),
        Command::Flood(args) => flood::run(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fractile-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let command = std::env::args()
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    // The scenarios that send at one rate send at the profile's instead when one is given.
    let steady = match &args.profile {
        Some(profile) => Schedule::Profile(profile.clone()),
        None => Schedule::Constant(args.rate),
    };
    if args.profile.is_some() && matches!(args.scenario, Scenario::Overload | Scenario::Spike) {
        anyhow::bail!(
            "--profile replaces --rate in browse, hot, cold and seed-while-browsing; overload and spike shape their own rate"
        );
    }
    let (picker, schedule, label) = match args.scenario {
        Scenario::Browse => (Picker::browse(), steady, "browse"),
        Scenario::Hot => (Picker::Hot, steady, "hot"),
        Scenario::Cold => (Picker::cold(args.offset), steady, "cold"),
        Scenario::SeedWhileBrowsing => (Picker::browse(), steady, "seed-while-browsing"),
        Scenario::Overload => {
            let to = args.rate_to.unwrap_or(args.rate * 3.0);
            (
                Picker::cold(args.offset),
                Schedule::Ramp(args.rate, to),
                "overload",
            )
        }
        Scenario::Spike => (
            Picker::browse(),
            Schedule::Spike {
                base: args.rate,
                factor: args.spike_factor,
            },
            "spike",
        ),
    };
    let seed = if args.scenario == Scenario::SeedWhileBrowsing {
        let token = args.seed_token.as_deref().ok_or_else(|| {
            anyhow::anyhow!("seed-while-browsing needs the api's seed token in FRACTILE_SEED_TOKEN")
        })?;
        Some(start_seed(&args.target, token, args.seed_max_zoom).await?)
    } else {
        None
    };
    let plan = driver::Plan {
        target: args.target.clone(),
        picker,
        schedule,
        duration: match (args.seconds, &args.profile) {
            (Some(seconds), _) => Duration::from_secs(seconds),
            (None, Some(profile)) => Duration::from_secs_f64(profile.end()),
            (None, None) => Duration::from_secs(DEFAULT_SECONDS),
        },
        max_in_flight: args.max_in_flight,
        max_requests: args.max_requests,
        seed: 42,
    };
    let measured = driver::run(plan).await?;
    let name = args.name.clone().unwrap_or_else(|| label.to_owned());
    let mut summary = Summary::new(&name, label, &command, &measured);
    if let (Some(location), Some(token)) = (seed, args.seed_token.as_deref()) {
        let status =
            seed_request(&args.target, token, hyper::Method::DELETE, &location, None).await?;
        let progress: serde_json::Value = serde_json::from_slice(&status).unwrap_or_default();
        for key in ["total", "done"] {
            if let Some(v) = progress[key].as_f64() {
                summary.extra.insert(format!("seed_{key}"), v);
            }
        }
    }
    summary.write(&args.out)?;
    let p = &summary.ok_latency;
    println!(
        "{name}: sent {} in {:.1}s, goodput {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, status {:?}, errors {}",
        summary.sent,
        summary.duration_s,
        summary.goodput_per_s,
        p.p50,
        p.p99,
        summary.status_mix,
        summary.errors
    );
    if args.fail_on_errors && summary.errors > 0 {
        eprintln!(
            "fractile-load: {} responses were 5xx (not 503) or transport errors",
            summary.errors
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts a seed of zooms 0..=max_zoom; returns its location.
async fn start_seed(target: &str, token: &str, max_zoom: u8) -> anyhow::Result<String> {
    let body = format!(r#"{{"min_zoom": 0, "max_zoom": {max_zoom}}}"#);
    let location =
        seed_request(target, token, hyper::Method::POST, "/v1/seeds", Some(body)).await?;
    let status: serde_json::Value = serde_json::from_slice(&location)?;
    let id = status["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the seed was not accepted: {status}"))?;
    Ok(format!("/v1/seeds/{id}"))
}

async fn seed_request(
    target: &str,
    token: &str,
    method: hyper::Method,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<Bytes> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", target.trim_end_matches('/')))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request)).await??;
    Ok(response.into_body().collect().await?.to_bytes())
}

fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let mut runs = Vec::new();
    for dir in &args.runs {
        let mut summary: Summary =
            serde_json::from_str(&std::fs::read_to_string(dir.join("results.json"))?)?;
        if let Ok(extra) = std::fs::read_to_string(dir.join("extra.json")) {
            let extra: BTreeMap<String, f64> = serde_json::from_str(&extra)?;
            summary.extra.extend(extra);
        }
        runs.push(summary);
    }
    std::fs::create_dir_all(&args.out)?;
    report::chart(
        &args.out,
        "p99.svg",
        "p99 latency of successful responses (ms)",
        &runs,
        |s| vec![("p99", s.p99)],
        true,
    )?;
    report::chart(
        &args.out,
        "goodput.svg",
        "successful responses per second",
        &runs,
        |s| vec![("ok", s.ok as f64)],
        false,
    )?;
    let mut md = format!("# {}\n\n", args.title);
    if !args.note.is_empty() {
        let _ = writeln!(md, "{}\n", args.note);
    }
    if let Some(first) = runs.first() {
        let _ = writeln!(
            md,
            "Machine: {}. Commit: `{}`.\n",
            first.machine, first.commit
        );
    }
    md.push_str(&report::table(&runs));
    md.push_str(
        "\n![p99 over time](p99.svg)\n\n![goodput over time](goodput.svg)\n\nCommands:\n\n",
    );
    for (run, dir) in runs.iter().zip(&args.runs) {
        let rel = dir
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "- **{}** ([report]({rel}/report.md)): `{}`",
            run.name, run.command
        );
    }
    std::fs::write(args.out.join("README.md"), md)?;
    println!("{}", args.out.join("README.md").display());
    Ok(ExitCode::SUCCESS)
}
