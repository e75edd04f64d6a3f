//! Results: the numbers (JSON), a Markdown report, and SVG charts; and comparisons of runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::driver::{Measured, Outcome, by_second, histogram};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// One second of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Second {
    pub t: u64,
    /// Requests due in this second: the arrival rate the schedule or profile asked for
    /// (less what the generator dropped at its in-flight cap). Absent in older results.
    #[serde(default)]
    pub offered: u64,
    pub ok: u64,
    pub shed: u64,
    pub errors: u64,
    pub p50: f64,
    pub p99: f64,
}

/// Everything a report and a comparison need.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub scenario: String,
    pub command: String,
    pub machine: String,
    pub commit: String,
    pub duration_s: f64,
    pub sent: u64,
    pub dropped_by_generator: u64,
    /// 2xx and 304 per second.
    pub goodput_per_s: f64,
    /// Status class (or `503`, `transport`) → count.
    pub status_mix: BTreeMap<String, u64>,
    /// Where successful responses came from (`Cache-Status` detail) → count.
    pub cache_mix: BTreeMap<String, u64>,
    /// Latency of successful responses.
    pub ok_latency: Percentiles,
    /// Latency of successful responses by `Cache-Status` detail.
    pub latency_by_cache: BTreeMap<String, Percentiles>,
    /// 5xx other than 503, and transport errors: what a smoke test fails on.
    pub errors: u64,
    pub timeline: Vec<Second>,
    /// Figures the experiment script adds (peak memory, say).
    #[serde(default)]
    pub extra: BTreeMap<String, f64>,
}

fn class(o: &Outcome) -> String {
    match o.status {
        None => "transport".into(),
        Some(503) => "503".into(),
        Some(s) => format!("{}xx", s / 100),
    }
}

fn is_ok(o: &Outcome) -> bool {
    matches!(o.status, Some(200..=399))
}

fn is_error(o: &Outcome) -> bool {
    match o.status {
        None => true,
        Some(503) => false,
        Some(s) => s >= 500,
    }
}

fn percentiles<'a>(items: impl Iterator<Item = &'a Outcome>) -> Percentiles {
    let mut h = histogram();
    for o in items {
        let _ = h.record(
            u64::try_from(o.latency.as_micros())
                .unwrap_or(u64::MAX)
                .clamp(1, 60_000_000),
        );
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        p50: ms(0.5),
        p90: ms(0.9),
        p99: ms(0.99),
        max: h.max() as f64 / 1000.0,
    }
}

impl Summary {
    /// Summarises a run.
    pub fn new(name: &str, scenario: &str, command: &str, measured: &Measured) -> Summary {
        let outcomes = &measured.outcomes;
        let mut status_mix = BTreeMap::new();
        let mut cache_mix = BTreeMap::new();
        for o in outcomes {
            *status_mix.entry(class(o)).or_insert(0) += 1;
            if is_ok(o) {
                *cache_mix
                    .entry(o.cache.clone().unwrap_or_else(|| "none".into()))
                    .or_insert(0) += 1;
            }
        }
        let latency_by_cache = cache_mix
            .keys()
            .map(|k| {
                let matching = outcomes
                    .iter()
                    .filter(|o| is_ok(o) && o.cache.as_deref().unwrap_or("none") == k);
                (k.clone(), percentiles(matching))
            })
            .collect();
        let timeline = by_second(outcomes)
            .into_iter()
            .map(|(t, items)| {
                let ok: Vec<&Outcome> = items.iter().copied().filter(|o| is_ok(o)).collect();
                let p = percentiles(ok.iter().copied());
                Second {
                    t,
                    offered: items.len() as u64,
                    ok: ok.len() as u64,
                    shed: items.iter().filter(|o| o.status == Some(503)).count() as u64,
                    errors: items.iter().filter(|o| is_error(o)).count() as u64,
                    p50: p.p50,
                    p99: p.p99,
                }
            })
            .collect();
        let duration_s = measured.elapsed.as_secs_f64();
        let ok_count = outcomes.iter().filter(|o| is_ok(o)).count() as f64;
        Summary {
            name: name.to_owned(),
            scenario: scenario.to_owned(),
            command: command.to_owned(),
            machine: machine(),
            commit: commit(),
            duration_s,
            sent: outcomes.len() as u64,
            dropped_by_generator: measured.dropped,
            goodput_per_s: ok_count / duration_s.max(0.001),
            status_mix,
            cache_mix,
            ok_latency: percentiles(outcomes.iter().filter(|o| is_ok(o))),
            latency_by_cache,
            errors: outcomes.iter().filter(|o| is_error(o)).count() as u64,
            timeline,
            extra: BTreeMap::new(),
        }
    }

    /// Writes `results.json`, `report.md` and the charts into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(self)?,
        )?;
        let series = [self.clone()];
        chart(
            dir,
            "latency.svg",
            "latency of successful responses (ms)",
            &series,
            |s| vec![("p50", s.p50), ("p99", s.p99)],
            true,
        )?;
        chart(
            dir,
            "throughput.svg",
            "responses per second",
            &series,
            |s| {
                vec![
                    ("offered", s.offered as f64),
                    ("ok", s.ok as f64),
                    ("503", s.shed as f64),
                    ("errors", s.errors as f64),
                ]
            },
            false,
        )?;
        let mut md = String::new();
        let _ = writeln!(md, "# {}\n", self.name);
        let _ = writeln!(
            md,
            "Scenario `{}`. Command:\n\n```sh\n{}\n```\n",
            self.scenario, self.command
        );
        let _ = writeln!(
            md,
            "Machine: {}. Commit: `{}`.\n",
            self.machine, self.commit
        );
        md.push_str(&table(std::slice::from_ref(self)));
        let _ = writeln!(
            md,
            "\nLatency by `Cache-Status` detail (successful responses):\n"
        );
        let _ = writeln!(
            md,
            "| Cache-Status detail | count | p50 ms | p90 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- | --- |"
        );
        for (cache, p) in &self.latency_by_cache {
            let _ = writeln!(
                md,
                "| {cache} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                p.count, p.p50, p.p90, p.p99, p.max
            );
        }
        let _ = writeln!(
            md,
            "\n![latency](latency.svg)\n\n![throughput](throughput.svg)"
        );
        std::fs::write(dir.join("report.md"), md)?;
        Ok(())
    }
}

/// The comparison table of several runs.
pub fn table(runs: &[Summary]) -> String {
    let extras: Vec<String> = runs
        .iter()
        .flat_map(|r| r.extra.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut md = String::from(
        "| run | sent | goodput/s | p50 ms | p90 ms | p99 ms | max ms | status mix | cache mix | errors |",
    );
    for e in &extras {
        let _ = write!(md, " {e} |");
    }
    md.push_str("\n|---|---|---|---|---|---|---|---|---|---|");
    md.push_str(&"---|".repeat(extras.len()));
    md.push('\n');
    let mix = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for r in runs {
        let p = &r.ok_latency;
        let _ = write!(
            md,
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
            r.name,
            r.sent,
            r.goodput_per_s,
            p.p50,
            p.p90,
            p.p99,
            p.max,
            mix(&r.status_mix),
            mix(&r.cache_mix),
            r.errors
        );
        for e in &extras {
            match r.extra.get(e) {
                Some(v) => {
                    let _ = write!(md, " {v:.1} |");
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }
    if runs.iter().any(|r| r.dropped_by_generator > 0) {
        md.push_str("\nArrivals the generator could not send (in-flight cap reached): ");
        md.push_str(
            &runs
                .iter()
                .map(|r| format!("{}: {}", r.name, r.dropped_by_generator))
                .collect::<Vec<_>>()
                .join(", "),
        );
        md.push('\n');
    }
    md
}

/// A line chart over time of `pick(second)` for each run (one colour per run and series).
pub fn chart(
    dir: &Path,
    file: &str,
    title: &str,
    runs: &[Summary],
    pick: impl Fn(&Second) -> Vec<(&'static str, f64)>,
    log_scale: bool,
) -> anyhow::Result<()> {
    let path = dir.join(file);
    let root = SVGBackend::new(&path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let t_max = runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|s| s.t))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y_max = runs
        .iter()
        .flat_map(|r| {
            r.timeline
                .iter()
                .flat_map(|s| pick(s).into_iter().map(|p| p.1))
        })
        .fold(1.0f64, f64::max)
        * 1.1;
    let colours = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    let mut series = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let names: Vec<&str> = run
            .timeline
            .first()
            .map(|s| pick(s).into_iter().map(|p| p.0).collect())
            .unwrap_or_default();
        for (j, name) in names.iter().enumerate() {
            let points: Vec<(f64, f64)> = run
                .timeline
                .iter()
                .map(|s| (s.t as f64, pick(s)[j].1.max(0.01)))
                .collect();
            let label = if runs.len() > 1 {
                format!("{} {name}", run.name)
            } else {
                (*name).to_owned()
            };
            series.push((
                label,
                points,
                colours[(i * names.len() + j) % colours.len()],
            ));
        }
    }
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("seconds")
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            for (label, points, colour) in series {
                let colour = *colour;
                chart
                    .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()?;
        }};
    }
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60);
    if log_scale {
        draw!(builder.build_cartesian_2d(0.0..t_max, (0.01..y_max).log_scale())?);
    } else {
        draw!(builder.build_cartesian_2d(0.0..t_max, 0.0..y_max)?);
    }
    root.present()?;
    Ok(())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    format!(
        "{cores} cores, {:.0} GiB memory",
        mem_kb as f64 / 1_048_576.0
    )
}

fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    // Say so when the code measured is not exactly a commit.
    let dirty = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "crates",
        "loadtests/src",
    ])
    .is_some_and(|o| !o.stdout.is_empty());
    if dirty {
        format!("{head} with uncommitted changes")
    } else {
        head
    }
}
