//! A bounded pool of threads for CPU-bound work, kept off the async executor.
//!
//! Rendering on a tokio worker thread would stall every other request that thread serves
//! (I/O, timers, probes), and `spawn_blocking` queues without bound behind up to 512
//! threads. This pool has a fixed number of threads and a bounded queue in front of them:
//! when the queue is full, [`RenderPool::try_spawn`] fails at once so the caller can answer
//! 503 instead of waiting. Work whose caller has gone away (deadline passed, request
//! dropped) is skipped, and running work can poll [`Cancel`] to stop early, because a
//! blocking call cannot otherwise be interrupted.

use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// A job as the threads see it: type-erased, run once.
type Job = Box<dyn FnOnce() + Send>;

/// The queue was full; the work was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("render queue is full")]
pub struct QueueFull;

/// What running work asks to learn whether it should stop: true once its deadline has
/// passed or nobody waits for its result any more.
pub struct Cancel<'a> {
    deadline: Instant,
    abandoned: &'a dyn Fn() -> bool,
}

impl Cancel<'_> {
    /// True when the work's result can no longer be used.
    pub fn is_cancelled(&self) -> bool {
        (self.abandoned)() || Instant::now() >= self.deadline
    }
}

/// A fixed set of threads behind a bounded queue. Cloning shares the same pool; the threads
/// exit when the last clone is dropped and the queue has drained.
#[derive(Clone)]
pub struct RenderPool {
    queue: Sender<Job>,
    metrics: Arc<Metrics>,
}

impl RenderPool {
    /// Starts `threads` threads behind a queue of `queue_capacity` waiting jobs
    /// (0: a job is accepted only when a thread is idle).
    pub fn new(
        threads: NonZeroUsize,
        queue_capacity: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = crossbeam_channel::bounded::<Job>(queue_capacity);
        for i in 0..threads.get() {
            let jobs: Receiver<Job> = jobs.clone();
            thread::Builder::new()
                .name(format!("render-{i}"))
                .spawn(move || {
                    // Ends when every Sender is gone: the pool was dropped and the queue drained.
                    for job in jobs {
                        // A panicking job must not take the thread with it: the pool would shrink
                        // for good. Its caller sees the result channel close and answers 500.
                        if panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                            tracing::error!(thread = i, "render job panicked");
                        }
                    }
                })?;
        }
        Ok(RenderPool { queue, metrics })
    }

    /// Jobs waiting for a thread right now.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Queues `work` to run on a pool thread before `deadline`. The result arrives on the
    /// returned receiver; if the receiver is dropped or the deadline passes before a thread
    /// picks the job up, the work never runs (the receiver then sees a closed channel).
    pub fn try_spawn<T, F>(
        &self,
        deadline: Instant,
        work: F,
    ) -> Result<oneshot::Receiver<T>, QueueFull>
    where
        T: Send + 'static,
        F: FnOnce(&Cancel<'_>) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let metrics = Arc::clone(&self.metrics);
        let enqueued = Instant::now();
        let job: Job = Box::new(move || {
            metrics.render_queue_depth.dec();
            metrics
                .render_queue_wait
                .observe(enqueued.elapsed().as_secs_f64());
            let abandoned = || tx.is_closed();
            let cancel = Cancel {
                deadline,
                abandoned: &abandoned,
            };
            if cancel.is_cancelled() {
                metrics.renders.with_label_values(&["cancelled"]).inc();
                return;
            }
            let result = work(&cancel);
            // The receiver may have gone in the meantime; the result is then simply dropped.
            let _ = tx.send(result);
        });
        self.metrics.render_queue_depth.inc();
        match self.queue.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.render_queue_depth.dec();
                self.metrics.render_rejected.inc();
                Err(QueueFull)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pool(threads: usize, queue: usize) -> RenderPool {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        RenderPool::new(
            NonZeroUsize::new(threads).expect("non-zero"),
            queue,
            metrics,
        )
        .expect("threads start")
    }

    fn far_deadline() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// Occupies one pool thread until the returned sender is dropped or sent to.
    fn block_one_thread(pool: &RenderPool) -> (std::sync::mpsc::Sender<()>, oneshot::Receiver<()>) {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let rx = pool
            .try_spawn(far_deadline(), move |_| {
                let _ = gate.recv();
            })
            .expect("idle pool accepts work");
        (release, rx)
    }

    #[tokio::test]
    async fn a_full_queue_refuses_work_at_once() {
        let pool = pool(1, 1);
        let (release, running) = block_one_thread(&pool);
        // Wait until the thread has taken the blocking job off the queue.
        while pool.queued() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let queued = pool
            .try_spawn(far_deadline(), |_| 2)
            .expect("one slot in the queue");
        assert_eq!(pool.try_spawn(far_deadline(), |_| 3).err(), Some(QueueFull));
        assert_eq!(pool.metrics.render_rejected.get(), 1);
        release.send(()).expect("job waits");
        running.await.expect("ran");
        assert_eq!(queued.await.expect("ran"), 2);
    }

    #[tokio::test]
    async fn work_past_its_deadline_is_skipped() {
        let pool = pool(1, 4);
        let (release, running) = block_one_thread(&pool);
        let expired = pool
            .try_spawn(Instant::now() + Duration::from_millis(5), |_| 1)
            .expect("queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
        release.send(()).expect("job waits");
        running.await.expect("ran");
        assert!(expired.await.is_err(), "skipped work never sends");
        assert_eq!(pool.metrics.renders_with("cancelled"), 1);
    }

    #[tokio::test]
    async fn running_work_sees_its_caller_leave() {
        let pool = pool(1, 1);
        let (started_tx, started) = oneshot::channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        let rx = pool
            .try_spawn(far_deadline(), move |cancel| {
                let _ = started_tx.send(());
                while !cancel.is_cancelled() {
                    thread::sleep(Duration::from_millis(1));
                }
                let _ = done_tx.send(());
            })
            .expect("queued");
        started.await.expect("started");
        drop(rx);
        done.recv_timeout(Duration::from_secs(5))
            .expect("work noticed the caller left");
    }
}
