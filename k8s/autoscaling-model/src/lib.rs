//! `fractile-autoscaling-model`: a model of the autoscalers in `k8s/` (KEDA ScaledObjects
//! driving HorizontalPodAutoscalers), fed by metrics recorded from the real processes.
//!
//! It is a model of the controller, not the controller: it replays the HPA's documented
//! arithmetic and KEDA's documented semantics on a recorded load, so that the settings in the
//! manifests can be judged (how soon a new pod serves, whether the replica count flaps) on a
//! machine with no Kubernetes. Layout:
//! - `manifests.rs`: the parameters, read from `kubectl kustomize k8s/overlays/kind`;
//! - `series.rs`: the recording, and the worker drain rate estimated from it;
//! - `hpa.rs`: the controller's algorithm (tested against the Kubernetes documentation's
//!   worked examples);
//! - `sim.rs`: the metric pipelines, the pods and the workload, second by second;
//! - `report.rs`: key moments, README.md, model.json and the charts.

mod hpa;
mod manifests;
mod report;
mod series;
mod sim;

use std::path::PathBuf;

use anyhow::Context as _;

use self::manifests::Manifests;
use self::series::{Series, WorkerRate, estimate_worker_rate};
use self::sim::{Clocks, Drain, Workload};

/// Arguments of `fractile-autoscaling-model`.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// The rendered manifests: the output of `kubectl kustomize k8s/overlays/kind`.
    #[arg(long)]
    manifests: PathBuf,
    /// The recorded metrics (series.json written by loadtests/autoscaling/record.sh).
    #[arg(long)]
    series: PathBuf,
    /// Measured seconds from exec to the api's first 200 on /readyz.
    #[arg(long)]
    api_startup_seconds: f64,
    /// Measured seconds from exec to the worker's first 200 on /readyz.
    #[arg(long)]
    worker_startup_seconds: f64,
    /// Where the start-up figures come from, quoted in the report.
    #[arg(long, default_value = "")]
    startup_source: String,
    /// Jobs per second one busy worker completes; estimated from the recording's backlog when
    /// omitted.
    #[arg(long)]
    worker_jobs_per_second: Option<f64>,
    /// Seconds simulated after the recording ends, holding its last sample, so scale-downs
    /// can finish.
    #[arg(long, default_value_t = 0.0)]
    tail_seconds: f64,
    /// Where to write README.md, model.json, api.svg and worker.svg.
    #[arg(long)]
    out: PathBuf,
}

/// Runs the model and writes its report.
pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    for (what, v) in [
        ("--api-startup-seconds", args.api_startup_seconds),
        ("--worker-startup-seconds", args.worker_startup_seconds),
        ("--tail-seconds", args.tail_seconds),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            anyhow::bail!("{what} {v} is not a non-negative number of seconds");
        }
    }
    let text = std::fs::read_to_string(&args.manifests)
        .with_context(|| format!("reading {}", args.manifests.display()))?;
    let manifests = Manifests::parse(&text)
        .with_context(|| format!("reading the manifests in {}", args.manifests.display()))?;
    let series = Series::load(&args.series)?;
    let worker_rate = match args.worker_jobs_per_second {
        Some(r) if r.is_finite() && r > 0.0 => WorkerRate {
            jobs_per_s: r,
            source: "given with --worker-jobs-per-second".into(),
        },
        Some(r) => anyhow::bail!("--worker-jobs-per-second {r} is not a positive rate"),
        None => estimate_worker_rate(&series)?,
    };
    let drain = Drain {
        jobs_per_worker_s: worker_rate.jobs_per_s,
        render_threads: series.worker_render_threads,
        prefetch: series.worker_prefetch,
    };
    let clocks = |startup_s| Clocks {
        scrape_interval_s: manifests.api_scrape_interval_s,
        rabbitmq_stats_interval_s: manifests.rabbitmq_stats_interval_s,
        startup_s,
        tail_s: args.tail_seconds,
    };
    let api = sim::simulate(
        &manifests.api,
        &series,
        Workload::Api,
        &clocks(args.api_startup_seconds),
    )?;
    let worker = sim::simulate(
        &manifests.worker,
        &series,
        Workload::Worker(drain),
        &clocks(args.worker_startup_seconds),
    )?;
    let fluid = sim::check_fluid_model(&series, &drain, manifests.rabbitmq_stats_interval_s);
    // The binary by its name, not the path it was run from.
    let command = std::iter::once("fractile-autoscaling-model".to_owned())
        .chain(std::env::args().skip(1))
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    let model = report::Model::new(report::Inputs {
        command,
        manifests_path: args.manifests.display().to_string(),
        series_path: args.series.display().to_string(),
        series: &series,
        manifests: &manifests,
        api_startup_s: args.api_startup_seconds,
        worker_startup_s: args.worker_startup_seconds,
        startup_source: args.startup_source,
        worker_rate,
        tail_s: args.tail_seconds,
        api,
        worker,
        fluid,
    });
    model.write(&args.out)?;
    println!("{}", model.summary_line());
    println!("{}", args.out.join("README.md").display());
    Ok(())
}
