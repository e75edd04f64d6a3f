//! The queue settings both binaries share, short of the URL (the api may run without
//! RabbitMQ, the worker may not, so each declares its own): a clap argument group that
//! builds the [`Topology`] in one place.

use crate::Topology;

/// `#[command(flatten)]` into a binary's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct QueueArgs {
    /// Prefix of the queue names (deployments sharing a broker keep apart with it).
    #[arg(long, env = "FRACTILE_QUEUE_PREFIX", default_value = "fractile.")]
    pub queue_prefix: String,
}

impl QueueArgs {
    /// The queues and exchanges these settings name.
    pub fn topology(&self) -> Topology {
        Topology::new(&self.queue_prefix)
    }
}
