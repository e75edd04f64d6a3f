//! The span of each fill in progress in this process, by tile, so that a request that waits
//! on another's fill (moka runs one init per key, the rest wait) can link its span to the
//! one doing the work: "why did this request wait" leads to the render's trace. Only misses
//! touch it, and only fills whose span has a trace context are kept.

use std::collections::HashMap;
use std::sync::Mutex;

use fractile_render::TileKey;
use opentelemetry::trace::SpanContext;

/// Fills in progress, each with its span's context.
#[derive(Debug, Default)]
pub(super) struct InFlight(Mutex<HashMap<TileKey, SpanContext>>);

impl InFlight {
    /// The span filling `key` now, if one is.
    pub(super) fn filling(&self, key: &TileKey) -> Option<SpanContext> {
        self.0.lock().ok()?.get(key).cloned()
    }

    /// Records that the span `cx` fills `key`, until the returned guard is dropped.
    pub(super) fn start(&self, key: TileKey, cx: Option<SpanContext>) -> Filling<'_> {
        if let Some(cx) = cx
            && let Ok(mut map) = self.0.lock()
        {
            map.insert(key, cx);
        }
        Filling { map: self, key }
    }
}

/// A fill in progress; it is forgotten when this is dropped, however the fill ends.
pub(super) struct Filling<'a> {
    map: &'a InFlight,
    key: TileKey,
}

impl Drop for Filling<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.map.0.lock() {
            map.remove(&self.key);
        }
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

    #[test]
    fn a_fill_is_known_while_it_runs_and_forgotten_after() {
        let in_flight = InFlight::default();
        let cx = SpanContext::new(
            TraceId::from_bytes([1; 16]),
            SpanId::from_bytes([2; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        assert!(in_flight.filling(&key()).is_none());
        {
            let _filling = in_flight.start(key(), Some(cx.clone()));
            assert_eq!(in_flight.filling(&key()), Some(cx));
        }
        assert!(in_flight.filling(&key()).is_none());
        let _untraced = in_flight.start(key(), None);
        assert!(in_flight.filling(&key()).is_none());
    }
}
