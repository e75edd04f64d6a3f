//! The recorded metrics the model is fed (`loadtests/autoscaling/record.sh` writes them), and
//! the one figure estimated from them: how fast one worker drains the queue.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// A recording: one sample per `step_seconds` of a fixed topology under a varying load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    pub command: String,
    pub machine: String,
    pub commit: String,
    pub step_seconds: f64,
    pub api_replicas: u32,
    pub worker_replicas: u32,
    pub worker_render_threads: u32,
    /// Messages each worker may hold unacknowledged (all its consumers together).
    pub worker_prefetch: u32,
    pub samples: Vec<Sample>,
}

/// One sample; per-process figures are lists, one entry per replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub t: f64,
    pub arrival_rate: f64,
    pub api_in_flight: Vec<f64>,
    pub api_cpu_cores: Vec<f64>,
    pub queue_ready: f64,
    pub queue_unacked: f64,
    pub jobs_published_per_s: f64,
    pub jobs_completed_per_s: f64,
    pub renders_per_s: Vec<f64>,
    pub worker_jobs_in_progress: Vec<f64>,
}

impl Sample {
    /// The api fleet's requests in flight, all replicas together.
    pub fn in_flight_total(&self) -> f64 {
        self.api_in_flight.iter().sum()
    }

    /// The api fleet's CPU in cores, all replicas together.
    pub fn cpu_total(&self) -> f64 {
        self.api_cpu_cores.iter().sum()
    }

    /// Messages in the render queues, ready and unacknowledged.
    pub fn queue_depth(&self) -> f64 {
        self.queue_ready + self.queue_unacked
    }
}

impl Series {
    pub fn load(path: &Path) -> Result<Series> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let series: Series =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        series.validate()?;
        Ok(series)
    }

    pub fn validate(&self) -> Result<()> {
        if self.samples.len() < 2 {
            bail!(
                "the series has {} samples: too few to model",
                self.samples.len()
            );
        }
        if self.step_seconds.is_nan() || self.step_seconds <= 0.0 {
            bail!("step_seconds {} is not positive", self.step_seconds);
        }
        if self.api_replicas == 0 || self.worker_replicas == 0 || self.worker_render_threads == 0 {
            bail!("the recorded topology has no api, worker or render thread");
        }
        for pair in self.samples.windows(2) {
            if pair[1].t <= pair[0].t {
                bail!("sample times do not increase at t = {}", pair[1].t);
            }
        }
        for s in &self.samples {
            let values = [
                s.arrival_rate,
                s.queue_ready,
                s.queue_unacked,
                s.jobs_published_per_s,
                s.jobs_completed_per_s,
            ];
            let lists = s.api_in_flight.iter().chain(&s.api_cpu_cores);
            if values
                .iter()
                .chain(lists)
                .any(|v| !v.is_finite() || *v < 0.0)
            {
                bail!("a negative or non-finite figure at t = {}", s.t);
            }
        }
        Ok(())
    }

    /// The sample in force at `t`: the last one taken at or before it (the first before the
    /// recording starts, the last after it ends: the model's tail holds the final load).
    pub fn at(&self, t: f64) -> &Sample {
        let i = self.samples.partition_point(|s| s.t <= t);
        &self.samples[i.saturating_sub(1)]
    }

    pub fn start(&self) -> f64 {
        self.samples.first().map_or(0.0, |s| s.t)
    }

    pub fn end(&self) -> f64 {
        self.samples.last().map_or(0.0, |s| s.t)
    }
}

/// The drain rate of one worker, and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRate {
    /// Jobs completed per second by one busy worker.
    pub jobs_per_s: f64,
    pub source: String,
}

/// Fewest backlog samples the estimate is made from.
const MIN_BACKLOG_SAMPLES: usize = 10;

/// Jobs per second per worker while every worker was busy: over the longest unbroken stretch
/// of samples with ready messages waiting, (jobs published − growth of the queue) ÷ (the
/// stretch's length × workers). The published counter and the depth are conserved quantities;
/// RabbitMQ's ack rate is a smoothed rate that lags, so it is only reported beside.
pub fn estimate_worker_rate(series: &Series) -> Result<WorkerRate> {
    let mut best: &[Sample] = &[];
    let mut start = None;
    for (i, s) in series.samples.iter().enumerate() {
        if s.queue_ready >= 1.0 {
            let from = *start.get_or_insert(i);
            if i + 1 - from > best.len() {
                best = &series.samples[from..=i];
            }
        } else {
            start = None;
        }
    }
    let (Some(first), Some(last)) = (best.first(), best.last()) else {
        bail!("the recording never has ready messages waiting: pass --worker-jobs-per-second");
    };
    if best.len() < MIN_BACKLOG_SAMPLES {
        bail!(
            "the longest stretch with a backlog (ready messages waiting) has {} samples, fewer than {MIN_BACKLOG_SAMPLES}: \
             the workers were never saturated long enough to read their rate; pass --worker-jobs-per-second",
            best.len()
        );
    }
    let seconds = last.t - first.t;
    // Each sample's rate covers the step before it, so the first sample's is outside.
    let published: f64 = best[1..]
        .iter()
        .map(|s| s.jobs_published_per_s * series.step_seconds)
        .sum();
    let completed = published - (last.queue_depth() - first.queue_depth());
    let workers = f64::from(series.worker_replicas);
    let per_worker = completed / seconds / workers;
    if per_worker.is_nan() || per_worker <= 0.0 {
        bail!("no job completed while there was a backlog: the workers' rate is 0");
    }
    let acks =
        best.iter().map(|s| s.jobs_completed_per_s).sum::<f64>() / best.len() as f64 / workers;
    Ok(WorkerRate {
        jobs_per_s: per_worker,
        source: format!(
            "estimated from the recording: (jobs published − queue growth) ÷ ({seconds:.0} s × {} workers) \
             over the longest stretch with ready messages waiting, {:.0}–{:.0} s; RabbitMQ's smoothed ack rate there gives {acks:.2}",
            series.worker_replicas, first.t, last.t
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn fixture() -> Result<Series> {
        let series: Series = serde_json::from_str(include_str!("testdata/series.json"))?;
        series.validate()?;
        Ok(series)
    }

    #[test]
    fn the_sample_in_force_is_the_last_one_at_or_before_t() -> Result<()> {
        let s = fixture()?;
        assert_eq!(s.at(-5.0).t, 0.0);
        assert_eq!(s.at(0.0).t, 0.0);
        assert_eq!(s.at(10.5).t, 10.0);
        assert_eq!(s.at(1e9).t, s.end());
        Ok(())
    }

    #[test]
    fn the_worker_rate_comes_from_the_backlog_samples() -> Result<()> {
        let s = fixture()?;
        let rate = estimate_worker_rate(&s)?;
        // The fixture's workers complete 6 jobs/s together while a backlog waits: 3 each.
        assert!((rate.jobs_per_s - 3.0).abs() < 1e-9, "{rate:?}");
        Ok(())
    }

    #[test]
    fn no_backlog_means_no_estimate() -> Result<()> {
        let mut s = fixture()?;
        for sample in &mut s.samples {
            sample.queue_ready = 0.0;
        }
        assert!(estimate_worker_rate(&s).is_err());
        Ok(())
    }
}
