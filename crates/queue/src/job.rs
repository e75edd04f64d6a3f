//! The render job message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fractile_render::{MaxZoom, TileId, TileKey};
use serde::{Deserialize, Serialize};

/// Version of the message format; a worker dead-letters formats it does not know.
const FORMAT: u8 = 1;

/// The AMQP message headers that carry a job's trace context beside its body: W3C Trace
/// Context's `traceparent` and `tracestate`, as long strings. Optional: a job without them
/// (another publisher, an older api) is processed as a root trace.
pub const TRACE_HEADERS: [&str; 2] = [
    fractile_telemetry::context::TRACEPARENT,
    fractile_telemetry::context::TRACESTATE,
];

/// Who waits for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// A request is waiting, until a deadline.
    Interactive,
    /// A seed: nobody waits; rendered when no interactive work is queued.
    Bulk,
}

/// One tile to render.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderJob {
    /// Message format version.
    pub format: u8,
    /// Zoom.
    pub z: u8,
    /// Column.
    pub x: u32,
    /// Row.
    pub y: u32,
    /// Style name.
    pub style: String,
    /// Interactive or bulk.
    pub priority: Priority,
    /// For interactive jobs: when the waiting request gives up (ms since the Unix epoch).
    /// A worker drops the job after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_unix_ms: Option<u64>,
    /// For bulk jobs: the seed they belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    /// When the job was published (ms since the Unix epoch), for queue-wait metrics.
    pub enqueued_unix_ms: u64,
}

/// A message that is not a valid job: it is dead-lettered, never retried.
#[derive(Debug, thiserror::Error)]
pub enum InvalidJob {
    /// Not JSON of the expected shape.
    #[error("undecodable job: {0}")]
    Undecodable(#[from] serde_json::Error),
    /// A format this worker does not know.
    #[error("unknown job format {0}")]
    UnknownFormat(u8),
    /// The tile does not exist.
    #[error("invalid tile")]
    InvalidTile(#[source] fractile_render::TileError),
    /// The style does not exist.
    #[error("invalid style")]
    InvalidStyle(#[source] fractile_render::UnknownStyle),
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

impl RenderJob {
    fn new(key: &TileKey, priority: Priority) -> Self {
        let t = key.tile;
        RenderJob {
            format: FORMAT,
            z: t.z(),
            x: t.x(),
            y: t.y(),
            style: key.style.name().to_owned(),
            priority,
            deadline_unix_ms: None,
            seed: None,
            enqueued_unix_ms: unix_ms(SystemTime::now()),
        }
    }

    /// A job a request waits for until `deadline`.
    pub fn interactive(key: &TileKey, deadline: SystemTime) -> Self {
        RenderJob {
            deadline_unix_ms: Some(unix_ms(deadline)),
            ..Self::new(key, Priority::Interactive)
        }
    }

    /// A job of seed `seed`.
    pub fn bulk(key: &TileKey, seed: &str) -> Self {
        RenderJob {
            seed: Some(seed.to_owned()),
            ..Self::new(key, Priority::Bulk)
        }
    }

    /// The tile, validated (against the renderer's hard limit: a worker renders whatever
    /// zoom an api was configured to serve).
    pub fn key(&self) -> Result<TileKey, InvalidJob> {
        if self.format != FORMAT {
            return Err(InvalidJob::UnknownFormat(self.format));
        }
        let tile =
            TileId::new(self.z, self.x, self.y, MaxZoom::LIMIT).map_err(InvalidJob::InvalidTile)?;
        let style = self.style.parse().map_err(InvalidJob::InvalidStyle)?;
        Ok(TileKey { tile, style })
    }

    /// True when this is an interactive job whose requester has given up by `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.deadline_unix_ms
            .is_some_and(|deadline| unix_ms(now) >= deadline)
    }

    /// Time since publication.
    pub fn queued_for(&self, now: SystemTime) -> Duration {
        Duration::from_millis(unix_ms(now).saturating_sub(self.enqueued_unix_ms))
    }

    /// A stable id for the broker's `message-id`: the tile.
    pub fn message_id(&self) -> String {
        format!("{}/{}/{}/{}", self.style, self.z, self.x, self.y)
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing a struct of plain fields into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the wire form (validating the tile is left to [`RenderJob::key`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, InvalidJob> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use fractile_render::Style;

    use super::*;

    fn key(z: u8, x: u32, y: u32) -> TileKey {
        TileKey {
            tile: TileId::new(z, x, y, MaxZoom::LIMIT).expect("valid"),
            style: Style::Fire,
        }
    }

    #[test]
    fn jobs_round_trip_through_the_wire_form() {
        let job = RenderJob::interactive(&key(5, 3, 4), SystemTime::now() + Duration::from_secs(2));
        let back = RenderJob::decode(&job.encode()).expect("decodes");
        assert_eq!(back, job);
        assert_eq!(back.key().expect("valid"), key(5, 3, 4));
        assert!(!back.expired(SystemTime::now()));
        assert!(back.expired(SystemTime::now() + Duration::from_secs(3)));
        let bulk = RenderJob::bulk(&key(1, 0, 1), "abc");
        assert_eq!(bulk.seed.as_deref(), Some("abc"));
        assert!(!bulk.expired(SystemTime::now() + Duration::from_secs(3600)));
    }

    #[test]
    fn poison_is_recognised() {
        assert!(matches!(
            RenderJob::decode(b"not json"),
            Err(InvalidJob::Undecodable(_))
        ));
        let mut job = RenderJob::bulk(&key(1, 0, 1), "abc");
        job.x = 7;
        assert!(matches!(job.key(), Err(InvalidJob::InvalidTile(_))));
        job.x = 0;
        job.style = "neon".into();
        assert!(matches!(job.key(), Err(InvalidJob::InvalidStyle(_))));
        job.style = "fire".into();
        job.format = 9;
        assert!(matches!(job.key(), Err(InvalidJob::UnknownFormat(9))));
    }
}
