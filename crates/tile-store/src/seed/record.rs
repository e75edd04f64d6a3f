//! What a seed is: what became of a tile ([`SeedOutcome`]), the one list of states
//! ([`SeedState`]), and the record ([`SeedRecord`]) with the hash fields it is stored as.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// What became of a seed's tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedOutcome {
    /// Rendered and stored, or found already stored.
    Done,
    /// Dead-lettered after its last attempt.
    Failed,
}

impl SeedOutcome {
    /// The name of its count field in the record, and of its set (`{prefix}seed:{id}:{name}`).
    pub(super) const fn name(self) -> &'static str {
        match self {
            SeedOutcome::Done => "done",
            SeedOutcome::Failed => "failed",
        }
    }
}

/// A seed's stored `state`: the one list of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedState {
    /// Its jobs are being queued (by whichever replica holds its lease).
    Expanding,
    /// Every job is queued; workers are rendering.
    Running,
    /// Every tile is accounted for (rendered, found stored, or failed for good). Final.
    Done,
    /// Cancelled by the operator: workers skip its remaining jobs. Final.
    Cancelled,
    /// Its jobs could not all be queued.
    Failed,
    /// Written only by versions before durable expansion, when the accepting replica shut
    /// down mid-expansion; still read (and counted by admission) for their records.
    Interrupted,
}

impl SeedState {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            SeedState::Expanding => "expanding",
            SeedState::Running => "running",
            SeedState::Done => "done",
            SeedState::Cancelled => "cancelled",
            SeedState::Failed => "failed",
            SeedState::Interrupted => "interrupted",
        }
    }

    /// The state stored as `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        [
            SeedState::Expanding,
            SeedState::Running,
            SeedState::Done,
            SeedState::Cancelled,
            SeedState::Failed,
            SeedState::Interrupted,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// The rectangle of the complex plane a seed covers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedBBox {
    /// Left edge.
    pub min_re: f64,
    /// Bottom edge.
    pub min_im: f64,
    /// Right edge.
    pub max_re: f64,
    /// Top edge.
    pub max_im: f64,
}

/// A seed's record. What was asked (zooms, bbox, style) is kept so that any replica can
/// rebuild the plan and continue the expansion from `cursor`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedRecord {
    /// The stored state.
    pub state: SeedState,
    /// Tiles in the seed.
    pub total: u64,
    /// Jobs queued (confirmed by the broker) so far.
    pub queued: u64,
    /// Tiles found already stored while expanding (counted in `done`).
    pub skipped: u64,
    /// Tiles finished: rendered, or found already stored.
    pub done: u64,
    /// Tiles that failed for good.
    pub failed: u64,
    /// Tiles of the plan expanded so far, in plan order; `None` in records of versions
    /// before durable expansion, which are never taken over.
    pub cursor: Option<u64>,
    /// Shallowest zoom.
    pub min_zoom: u8,
    /// Deepest zoom.
    pub max_zoom: u8,
    /// Only tiles intersecting this rectangle (`None`: whole zoom levels).
    pub bbox: Option<SeedBBox>,
    /// Style name.
    pub style: String,
    /// When it was accepted (ms since the Unix epoch).
    pub created_unix_ms: u64,
    /// The W3C `traceparent` of the span that accepted it (the `POST`), so the expansion is
    /// part of the seed's trace whichever replica runs it; `None` when that span had no
    /// context, and in records of versions before traces (their expansion starts a trace).
    pub traceparent: Option<String>,
}

impl SeedRecord {
    /// A new seed's record: `expanding`, nothing queued, cursor at the start.
    pub fn new(
        total: u64,
        zooms: (u8, u8),
        bbox: Option<SeedBBox>,
        style: &str,
        created_unix_ms: u64,
    ) -> Self {
        SeedRecord {
            state: SeedState::Expanding,
            total,
            queued: 0,
            skipped: 0,
            done: 0,
            failed: 0,
            cursor: Some(0),
            min_zoom: zooms.0,
            max_zoom: zooms.1,
            bbox,
            style: style.to_owned(),
            created_unix_ms,
            traceparent: None,
        }
    }

    /// The state a client is told: the stored one, and `done` for a `running` record of an
    /// earlier version (which derived it) with every tile accounted for.
    pub fn reported_state(&self) -> &'static str {
        match self.state {
            SeedState::Running if self.done + self.failed >= self.total => "done",
            other => other.as_str(),
        }
    }

    /// The hash fields it is stored as (the lease is written by the scripts).
    pub(super) fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("state", self.state.as_str().to_owned()),
            ("total", self.total.to_string()),
            ("queued", self.queued.to_string()),
            ("skipped", self.skipped.to_string()),
            ("done", self.done.to_string()),
            ("failed", self.failed.to_string()),
            ("min_zoom", self.min_zoom.to_string()),
            ("max_zoom", self.max_zoom.to_string()),
            ("style", self.style.clone()),
            ("created_unix_ms", self.created_unix_ms.to_string()),
        ];
        if let Some(cursor) = self.cursor {
            fields.push(("cursor", cursor.to_string()));
        }
        if let Some(traceparent) = &self.traceparent {
            fields.push(("traceparent", traceparent.clone()));
        }
        if let Some(b) = self.bbox {
            // `Display` of an f64 is the shortest text that parses back to the same value.
            let text = format!("{},{},{},{}", b.min_re, b.min_im, b.max_re, b.max_im);
            fields.push(("bbox", text));
        }
        fields
    }

    /// The record stored as `fields`. `sets` are the sizes of its `:done` and `:failed` sets,
    /// read for records of earlier versions, which kept the counts only there.
    pub(super) fn from_fields(
        fields: &HashMap<String, String>,
        sets: (u64, u64),
    ) -> Result<Self, StoreError> {
        let malformed = |what: &str| StoreError::Malformed(format!("seed record: {what}"));
        let text = |k: &str| fields.get(k).map(String::as_str);
        let number = |k: &str| -> Result<u64, StoreError> {
            text(k).map_or(Ok(0), |v| v.parse().map_err(|_| malformed(k)))
        };
        let zoom = |k: &str| -> Result<u8, StoreError> {
            text(k).map_or(Ok(0), |v| v.parse().map_err(|_| malformed(k)))
        };
        let state = text("state")
            .and_then(SeedState::parse)
            .ok_or_else(|| malformed("state"))?;
        let bbox = match text("bbox") {
            None => None,
            Some(v) => {
                let parts: Vec<f64> = v
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|_| malformed("bbox"))?;
                let [min_re, min_im, max_re, max_im] = parts[..] else {
                    return Err(malformed("bbox"));
                };
                Some(SeedBBox {
                    min_re,
                    min_im,
                    max_re,
                    max_im,
                })
            }
        };
        let counted = |k: &str, set: u64| -> Result<u64, StoreError> {
            match text(k) {
                Some(_) => number(k),
                None => Ok(set),
            }
        };
        Ok(SeedRecord {
            state,
            total: number("total")?,
            queued: number("queued")?,
            skipped: number("skipped")?,
            done: counted("done", sets.0)?,
            failed: counted("failed", sets.1)?,
            cursor: text("cursor")
                .map(|v| v.parse().map_err(|_| malformed("cursor")))
                .transpose()?,
            min_zoom: zoom("min_zoom")?,
            max_zoom: zoom("max_zoom")?,
            bbox,
            style: text("style").unwrap_or_default().to_owned(),
            created_unix_ms: number("created_unix_ms")?,
            traceparent: text("traceparent").map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for state in [
            SeedState::Expanding,
            SeedState::Running,
            SeedState::Done,
            SeedState::Cancelled,
            SeedState::Failed,
            SeedState::Interrupted,
        ] {
            assert_eq!(SeedState::parse(state.as_str()), Some(state));
        }
        assert_eq!(SeedState::parse("paused"), None);
    }

    #[test]
    fn records_round_trip_through_their_fields() {
        let bbox = SeedBBox {
            min_re: -0.1,
            min_im: 1.0 / 3.0,
            max_re: 0.7,
            max_im: 1.2,
        };
        let mut record = SeedRecord::new(20_000, (3, 9), Some(bbox), "fire", 1_700_000_000_000);
        record.cursor = Some(1500);
        record.queued = 1400;
        record.skipped = 100;
        record.done = 7;
        record.failed = 2;
        record.traceparent =
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned());
        let fields: HashMap<String, String> = record
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        // The stored counts, not the sets' sizes (those are for earlier versions' records).
        let back = SeedRecord::from_fields(&fields, (0, 0)).expect("valid");
        assert_eq!(back, record);
    }

    #[test]
    fn a_running_seed_with_every_tile_accounted_for_reports_done() {
        let mut record = SeedRecord::new(10, (0, 1), None, "classic", 0);
        assert_eq!(record.reported_state(), "expanding");
        record.state = SeedState::Running;
        record.done = 9;
        assert_eq!(record.reported_state(), "running");
        record.failed = 1;
        assert_eq!(record.reported_state(), "done");
        record.state = SeedState::Cancelled;
        assert_eq!(record.reported_state(), "cancelled");
    }

    #[test]
    fn records_of_other_writers_are_malformed_not_guessed() {
        let fields = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(SeedRecord::from_fields(&fields(&[("state", "paused")]), (0, 0)).is_err());
        assert!(
            SeedRecord::from_fields(&fields(&[("state", "running"), ("total", "x")]), (0, 0))
                .is_err()
        );
        assert!(
            SeedRecord::from_fields(&fields(&[("state", "running"), ("bbox", "1,2,3")]), (0, 0))
                .is_err()
        );
        // A record of a version before durable expansion: no cursor, never taken over.
        let old = SeedRecord::from_fields(
            &fields(&[("state", "interrupted"), ("total", "85"), ("queued", "40")]),
            (3, 1),
        )
        .expect("valid");
        assert_eq!((old.cursor, old.queued), (None, 40));
        // Its counts come from its sets.
        assert_eq!((old.done, old.failed), (3, 1));
    }
}
