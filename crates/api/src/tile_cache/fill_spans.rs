//! The span that filled each tile lately in this process, so that a request that waited on
//! another's fill (moka runs one init per key, the rest wait) can link its span to the one
//! that did the work: "why did this request wait" leads to the render's trace.
//!
//! A fill records its span as it starts, before its result exists, and a waiter reads it
//! once its wait is over: the record happens before the read, whenever the waiter arrived.
//! Records are bounded in number and age (far longer than any fill); only misses touch them,
//! and only fills whose span has a trace context are recorded.

use std::time::Duration;

use fractile_render::TileKey;
use moka::sync::Cache;
use opentelemetry::trace::SpanContext;

/// Fill spans kept at most.
const KEPT: u64 = 4096;
/// How long a fill's span is kept: longer than any render deadline.
const KEPT_FOR: Duration = Duration::from_secs(60);

/// The span of each recent fill, by tile.
#[derive(Debug, Clone)]
pub(super) struct FillSpans(Cache<TileKey, SpanContext>);

impl Default for FillSpans {
    fn default() -> Self {
        FillSpans(
            Cache::builder()
                .max_capacity(KEPT)
                .time_to_live(KEPT_FOR)
                .build(),
        )
    }
}

impl FillSpans {
    /// Records that the span `cx` fills `key` (nothing for a span without a context).
    pub(super) fn started(&self, key: TileKey, cx: Option<SpanContext>) {
        if let Some(cx) = cx {
            self.0.insert(key, cx);
        }
    }

    /// The span that filled `key` last, if recorded.
    pub(super) fn filler(&self, key: &TileKey) -> Option<SpanContext> {
        self.0.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fractile_render::{MaxZoom, Style, TileId};
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    fn key() -> TileKey {
        TileKey {
            tile: TileId::new(1, 0, 1, MaxZoom::new(18).expect("valid")).expect("a tile"),
            style: Style::Classic,
        }
    }

    fn cx(n: u8) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes([n; 16]),
            SpanId::from_bytes([n; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    }

    #[test]
    fn the_last_fill_of_a_tile_is_its_filler() {
        let spans = FillSpans::default();
        assert!(spans.filler(&key()).is_none());
        spans.started(key(), Some(cx(1)));
        assert_eq!(spans.filler(&key()), Some(cx(1)));
        spans.started(key(), None);
        assert_eq!(
            spans.filler(&key()),
            Some(cx(1)),
            "an untraced fill records nothing"
        );
        spans.started(key(), Some(cx(2)));
        assert_eq!(spans.filler(&key()), Some(cx(2)));
    }
}
