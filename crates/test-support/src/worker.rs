//! A `fractile-worker` running in the test's process (feature `worker`), and its settings on
//! an [`Isolated`] environment: what the worker's own tests and the system tests share.

use std::sync::Arc;
use std::time::Duration;

use fractile_worker::metrics::WorkerMetrics;
use fractile_worker::{Config, Worker};
use tokio::sync::oneshot;

use crate::isolation::Isolated;

/// A worker running on the test's runtime until [`RunningWorker::shutdown`].
pub struct RunningWorker {
    /// The worker's metrics, readable while it runs.
    pub metrics: Arc<WorkerMetrics>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Runs `worker` as configured (e.g. with a renderer or faults of the test's).
pub fn run_worker(worker: Worker) -> RunningWorker {
    let metrics = worker.metrics();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    RunningWorker {
        metrics,
        stop,
        task,
    }
}

/// Builds a worker from `config` and runs it.
pub fn start_worker(config: Config) -> RunningWorker {
    run_worker(Worker::new(config).expect("the worker is configured"))
}

impl RunningWorker {
    /// Stops it as SIGTERM would and fails the test unless it exits cleanly within 30 s.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the worker stops within 30 s")
            .expect("the worker's task did not panic")
            .expect("the worker exits cleanly");
    }
}

impl Isolated {
    /// Settings of a worker on this environment, with `threads` render threads (from
    /// [`Isolated::worker_args`]).
    pub fn worker_config(&self, threads: usize) -> Config {
        <Config as clap::Parser>::parse_from(self.worker_args(threads))
    }
}
