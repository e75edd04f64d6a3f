//! A bounded pool of threads for CPU-bound work, kept off the async executor.
//!
//! The api renders misses on it in embedded mode; the worker renders queue jobs on it.
//! Rendering on a tokio worker thread would stall every other request that thread serves
//! (I/O, timers, probes), and `spawn_blocking` queues without bound behind up to 512
//! threads. This pool has a fixed number of threads and a bounded queue in front of them.
//! Work whose caller has gone away (deadline passed, request dropped) is skipped, and running
//! work can poll [`Cancel`] to stop early, because a blocking call cannot otherwise be
//! interrupted.
//!
//! The bound is a semaphore, **room**: a job takes a permit to enter the pool and gives it
//! back only when it leaves, run to its end or skipped, so work whose caller gave up still
//! counts until a thread has dropped it. There are `threads + queue_capacity` permits, and
//! the lanes' channels hold that many jobs each, so a job holding a permit always finds a
//! place in its lane. Callers choose what to do when there is no room:
//!
//! - [`RenderPool::run`] (the api's renders: a request waits) is refused at once, so the
//!   caller answers 503 instead of queueing without bound;
//! - [`RenderPool::run_when_room`] (the worker's jobs: a delivery it holds) waits for a
//!   permit. A worker holds no more deliveries than its prefetch, and its pool has room for
//!   all of them besides its threads, so the wait lasts only while jobs of deliveries already
//!   settled (their requesters gone) are still leaving: back-pressure, never a failure. A
//!   queue that is merely full must not be mistaken for a failed render, which would count
//!   towards the job's attempts and dead-letter a healthy job.
//!
//! Two lanes share the threads: a thread always takes [`Lane::Interactive`] work first, so
//! bulk work (seeding) never delays an interactive render by more than the renders already
//! running.

use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::metrics::PoolMetrics;
use crate::slowdown::Slowdown;

/// A job as the threads see it: type-erased, run once.
type Job = Box<dyn FnOnce() + Send>;

/// Which queue work waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// A user is waiting: taken first.
    Interactive,
    /// Background work (seeding): taken when no interactive work waits.
    Bulk,
}

/// The queue was full; the work was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("render queue is full")]
pub struct QueueFull;

/// Why work given to [`RenderPool::run`] produced no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The pool had no room: refused at once.
    #[error(transparent)]
    Full(#[from] QueueFull),
    /// The deadline passed: skipped while queued, or still running at the deadline.
    #[error("did not finish within its deadline")]
    Deadline,
    /// The work panicked (counted in [`PoolMetrics::panicked`]).
    #[error("the work panicked")]
    Panicked,
}

/// Why work given to [`RenderPool::run_when_room`] produced no result: it is never refused,
/// so only its deadline or a panic end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unfinished {
    /// The deadline passed: while waiting for room, while queued, or while running.
    #[error("did not finish within its deadline")]
    Deadline,
    /// The work panicked (counted in [`PoolMetrics::panicked`]).
    #[error("the work panicked")]
    Panicked,
}

impl From<Unfinished> for RunError {
    fn from(unfinished: Unfinished) -> Self {
        match unfinished {
            Unfinished::Deadline => RunError::Deadline,
            Unfinished::Panicked => RunError::Panicked,
        }
    }
}

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
    interactive: Sender<Job>,
    bulk: Sender<Job>,
    /// One permit per job in the pool, queued or running (see the module docs).
    room: Arc<Semaphore>,
    metrics: Arc<PoolMetrics>,
    /// Injected render slowdown (fault injection); none unless set.
    slowdown: Slowdown,
}

impl RenderPool {
    /// Starts `threads` threads with room for `queue_capacity` jobs waiting for one, both
    /// lanes together (0: a job is accepted only when a thread is free).
    pub fn new(
        threads: NonZeroUsize,
        queue_capacity: usize,
        metrics: PoolMetrics,
    ) -> std::io::Result<Self> {
        let room = threads.get().saturating_add(queue_capacity);
        // Each lane's channel can take every job the permits let in: never full.
        let (interactive, interactive_jobs) = crossbeam_channel::bounded::<Job>(room);
        let (bulk, bulk_jobs) = crossbeam_channel::bounded::<Job>(room);
        let metrics = Arc::new(metrics);
        for i in 0..threads.get() {
            let (interactive_jobs, bulk_jobs) = (interactive_jobs.clone(), bulk_jobs.clone());
            let panicked = metrics.panicked.clone();
            thread::Builder::new()
                .name(format!("render-{i}"))
                .spawn(move || {
                    // Ends when every Sender is gone: the pool was dropped and the queue drained.
                    while let Some(job) = next_job(&interactive_jobs, &bulk_jobs) {
                        // A panicking job must not take the thread with it: the pool would
                        // shrink for good. Its caller sees the result channel close.
                        if panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                            panicked.inc();
                            tracing::error!(thread = i, "render job panicked");
                        }
                    }
                })?;
        }
        Ok(RenderPool {
            interactive,
            bulk,
            room: Arc::new(Semaphore::new(room.min(Semaphore::MAX_PERMITS))),
            metrics,
            slowdown: Slowdown::default(),
        })
    }

    /// Makes every job cost the injected slowdown factor of its CPU time (see
    /// [`Slowdown`]).
    pub fn with_slowdown(mut self, slowdown: Slowdown) -> Self {
        self.slowdown = slowdown;
        self
    }

    /// Jobs waiting for a thread right now, both lanes.
    pub fn queued(&self) -> usize {
        self.interactive.len() + self.bulk.len()
    }

    /// Runs `work` on a pool thread and waits for its result until `deadline`: the api's
    /// renders. Refused at once ([`RunError::Full`]) when the pool has no room.
    pub async fn run<T, F>(&self, lane: Lane, deadline: Instant, work: F) -> Result<T, RunError>
    where
        T: Send + 'static,
        F: FnOnce(&Cancel<'_>) -> T + Send + 'static,
    {
        let rx = self.try_spawn(lane, deadline, work)?;
        Ok(result_by(rx, deadline).await?)
    }

    /// Runs `work` on a pool thread and waits for its result until `deadline`, first waiting
    /// for room if there is none: the worker's jobs, whose deliveries it holds anyway (see
    /// the module docs). Never refused; the deadline covers the wait for room too.
    pub async fn run_when_room<T, F>(
        &self,
        lane: Lane,
        deadline: Instant,
        work: F,
    ) -> Result<T, Unfinished>
    where
        T: Send + 'static,
        F: FnOnce(&Cancel<'_>) -> T + Send + 'static,
    {
        let waited =
            tokio::time::timeout_at(deadline.into(), Arc::clone(&self.room).acquire_owned()).await;
        let permit = match waited {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; its deadline is the only way out.
            Ok(Err(_)) | Err(_) => return Err(Unfinished::Deadline),
        };
        match self.queue(lane, deadline, permit, work) {
            Ok(rx) => result_by(rx, deadline).await,
            // Unreachable while the channels take every permit's job; treated as a job that
            // did not run in time rather than as a failure of the work.
            Err(QueueFull) => Err(Unfinished::Deadline),
        }
    }

    /// Queues `work` to run on a pool thread before `deadline`, if the pool has room. The
    /// result arrives on the returned receiver; if the receiver is dropped or the deadline
    /// passes before a thread picks the job up, the work never runs (the receiver then sees a
    /// closed channel).
    pub fn try_spawn<T, F>(
        &self,
        lane: Lane,
        deadline: Instant,
        work: F,
    ) -> Result<oneshot::Receiver<T>, QueueFull>
    where
        T: Send + 'static,
        F: FnOnce(&Cancel<'_>) -> T + Send + 'static,
    {
        let Ok(permit) = Arc::clone(&self.room).try_acquire_owned() else {
            self.metrics.rejected.inc();
            return Err(QueueFull);
        };
        self.queue(lane, deadline, permit, work)
    }

    /// Puts `work` in its lane with its permit, which goes back when the job leaves the
    /// pool: after it ran, or when a thread skips it, or if the pool drops it.
    fn queue<T, F>(
        &self,
        lane: Lane,
        deadline: Instant,
        permit: OwnedSemaphorePermit,
        work: F,
    ) -> Result<oneshot::Receiver<T>, QueueFull>
    where
        T: Send + 'static,
        F: FnOnce(&Cancel<'_>) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let metrics = Arc::clone(&self.metrics);
        let slowdown = self.slowdown.clone();
        let enqueued = Instant::now();
        let job: Job = Box::new(move || {
            // Returned when this closure ends, however it ends (a panic included).
            let _permit = permit;
            metrics.queue_depth.dec();
            metrics.queue_wait.observe(enqueued.elapsed().as_secs_f64());
            let abandoned = || tx.is_closed();
            let cancel = Cancel {
                deadline,
                abandoned: &abandoned,
            };
            if cancel.is_cancelled() {
                metrics.skipped.inc();
                return;
            }
            let started = Instant::now();
            let result = work(&cancel);
            slowdown.burn(started.elapsed(), || cancel.is_cancelled());
            // The receiver may have gone in the meantime; the result is then simply dropped.
            let _ = tx.send(result);
        });
        self.metrics.queue_depth.inc();
        let queue = match lane {
            Lane::Interactive => &self.interactive,
            Lane::Bulk => &self.bulk,
        };
        match queue.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.queue_depth.dec();
                self.metrics.rejected.inc();
                Err(QueueFull)
            }
        }
    }
}

/// Waits for a queued job's result until `deadline`.
async fn result_by<T>(rx: oneshot::Receiver<T>, deadline: Instant) -> Result<T, Unfinished> {
    match tokio::time::timeout_at(deadline.into(), rx).await {
        Ok(Ok(result)) => Ok(result),
        // Waiting ends at the deadline; the work sees its caller gone and stops.
        Err(_) => Err(Unfinished::Deadline),
        // The pool dropped the job: skipped past its deadline, or it panicked.
        Ok(Err(_closed)) if Instant::now() >= deadline => Err(Unfinished::Deadline),
        Ok(Err(_closed)) => Err(Unfinished::Panicked),
    }
}

/// The next job for a thread: interactive work if any waits, else whichever comes first.
/// `None` once the pool is gone.
fn next_job(interactive: &Receiver<Job>, bulk: &Receiver<Job>) -> Option<Job> {
    match interactive.try_recv() {
        Ok(job) => return Some(job),
        Err(TryRecvError::Disconnected) => return None,
        Err(TryRecvError::Empty) => {}
    }
    crossbeam_channel::select! {
        recv(interactive) -> job => job.ok(),
        recv(bulk) -> job => job.ok(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pool(threads: usize, queue: usize) -> RenderPool {
        let registry = prometheus::Registry::new();
        let render = crate::RenderMetrics::register(&registry).expect("valid names");
        let metrics = PoolMetrics::register(&registry, &render).expect("valid names");
        let threads = NonZeroUsize::new(threads).expect("non-zero");
        RenderPool::new(threads, queue, metrics).expect("threads start")
    }

    fn far_deadline() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// Occupies one pool thread until the returned sender is dropped or sent to.
    fn block_one_thread(pool: &RenderPool) -> (std::sync::mpsc::Sender<()>, oneshot::Receiver<()>) {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let rx = pool
            .try_spawn(Lane::Interactive, far_deadline(), move |_| {
                let _ = gate.recv();
            })
            .expect("idle pool accepts work");
        (release, rx)
    }

    #[tokio::test]
    async fn an_injected_slowdown_stretches_each_job_by_its_factor() {
        let slowdown = Slowdown::default();
        slowdown.set(4.0);
        let pool = pool(1, 1).with_slowdown(slowdown);
        let start = Instant::now();
        pool.try_spawn(Lane::Interactive, far_deadline(), |_| {
            thread::sleep(Duration::from_millis(20));
        })
        .expect("idle pool accepts work")
        .await
        .expect("ran");
        assert!(
            start.elapsed() >= Duration::from_millis(80),
            "{:?}",
            start.elapsed()
        );
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
            .try_spawn(Lane::Interactive, far_deadline(), |_| 2)
            .expect("one slot in the queue");
        assert_eq!(
            pool.try_spawn(Lane::Interactive, far_deadline(), |_| 3)
                .err(),
            Some(QueueFull)
        );
        // `run` maps it to RunError::Full, at once too.
        let full = pool.run(Lane::Interactive, far_deadline(), |_| 4).await;
        assert_eq!(full, Err(RunError::Full(QueueFull)));
        assert_eq!(pool.metrics.rejected.get(), 2);
        release.send(()).expect("job waits");
        running.await.expect("ran");
        assert_eq!(queued.await.expect("ran"), 2);
    }

    #[tokio::test]
    async fn a_job_whose_caller_left_keeps_its_room_until_a_thread_drops_it() {
        let pool = pool(1, 1);
        let (release, running) = block_one_thread(&pool);
        // Its caller gives up at the deadline while the job still waits for the thread.
        let gave_up = pool
            .run(
                Lane::Interactive,
                Instant::now() + Duration::from_millis(20),
                |_| 1,
            )
            .await;
        assert_eq!(gave_up, Err(RunError::Deadline));
        // The abandoned job still holds its place: the api's renders are refused...
        assert_eq!(
            pool.try_spawn(Lane::Interactive, far_deadline(), |_| 2)
                .err(),
            Some(QueueFull)
        );
        // ...and the worker's wait for room instead of failing.
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run_when_room(Lane::Bulk, far_deadline(), |_| 3).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "it waits while there is no room");
        release.send(()).expect("job waits");
        running.await.expect("ran");
        // The thread skips the abandoned job, which gives its room to the waiting one.
        assert_eq!(waiting.await.expect("no panic"), Ok(3));
        assert_eq!(pool.metrics.skipped.get(), 1);
    }

    #[tokio::test]
    async fn waiting_for_room_ends_at_the_deadline() {
        let pool = pool(1, 0);
        let (release, running) = block_one_thread(&pool);
        let started = Instant::now();
        let late = pool
            .run_when_room(
                Lane::Interactive,
                Instant::now() + Duration::from_millis(30),
                |_| 1,
            )
            .await;
        assert_eq!(late, Err(Unfinished::Deadline));
        assert!(started.elapsed() < Duration::from_secs(5));
        release.send(()).expect("job waits");
        running.await.expect("ran");
        // Room again: it runs.
        assert_eq!(
            pool.run_when_room(Lane::Interactive, far_deadline(), |_| 2)
                .await,
            Ok(2)
        );
    }

    #[tokio::test]
    async fn work_past_its_deadline_is_skipped() {
        let pool = pool(1, 4);
        let (release, running) = block_one_thread(&pool);
        let expired = pool
            .try_spawn(
                Lane::Interactive,
                Instant::now() + Duration::from_millis(5),
                |_| 1,
            )
            .expect("queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
        release.send(()).expect("job waits");
        running.await.expect("ran");
        assert!(expired.await.is_err(), "skipped work never sends");
        assert_eq!(pool.metrics.skipped.get(), 1);
    }

    #[tokio::test]
    async fn interactive_work_overtakes_queued_bulk_work() {
        let pool = pool(1, 8);
        let (release, running) = block_one_thread(&pool);
        while pool.queued() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = |name: &'static str| {
            let order = Arc::clone(&order);
            move |_: &Cancel<'_>| order.lock().expect("not poisoned").push(name)
        };
        let bulk = pool
            .try_spawn(Lane::Bulk, far_deadline(), record("bulk"))
            .expect("queued");
        let urgent = pool
            .try_spawn(Lane::Interactive, far_deadline(), record("interactive"))
            .expect("queued");
        release.send(()).expect("job waits");
        running.await.expect("ran");
        bulk.await.expect("ran");
        urgent.await.expect("ran");
        assert_eq!(
            *order.lock().expect("not poisoned"),
            ["interactive", "bulk"]
        );
    }

    #[tokio::test]
    async fn running_work_sees_its_caller_leave() {
        let pool = pool(1, 1);
        let (started_tx, started) = oneshot::channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        let rx = pool
            .try_spawn(Lane::Interactive, far_deadline(), move |cancel| {
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

    #[tokio::test]
    async fn run_maps_a_result_a_deadline_and_a_panic() {
        let pool = pool(1, 1);
        assert_eq!(
            pool.run(Lane::Interactive, far_deadline(), |_| 7).await,
            Ok(7)
        );

        // Still running at the deadline: the wait ends then, not when the work does (the
        // next job then waits for the thread).
        let started = Instant::now();
        let late = pool
            .run(
                Lane::Interactive,
                Instant::now() + Duration::from_millis(50),
                |_| thread::sleep(Duration::from_millis(300)),
            )
            .await;
        assert_eq!(late, Err(RunError::Deadline));
        assert!(started.elapsed() < Duration::from_millis(250));

        let panicked = pool
            .run(Lane::Interactive, far_deadline(), |_| -> u8 {
                panic!("a render bug")
            })
            .await;
        assert_eq!(panicked, Err(RunError::Panicked));
        // The thread survived it (and, having taken the next job, has counted it).
        assert_eq!(
            pool.run(Lane::Interactive, far_deadline(), |_| 8).await,
            Ok(8)
        );
        assert_eq!(pool.metrics.panicked.get(), 1);
    }
}
