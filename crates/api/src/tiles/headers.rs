//! The HTTP caching and timing headers of a served tile: the strong `ETag` and the
//! `If-None-Match` check that answers 304, and `Server-Timing`, which shows in a browser's
//! devtools where a tile's time went.

use std::fmt::Write as _;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use fractile_render::RENDER_VERSION;

use crate::metrics::CacheLabel;
use crate::tile_cache::{Source, TileKey, WorkerWait};

/// RFC 9211's `Cache-Status`: where a tile came from, as this service's entry (`fractile`);
/// a cache in front appends its own, so the last entry is the cache nearest the client.
pub(super) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The entry of a tile that could not be filled (a 503 from the handler).
pub(super) const REFUSED: &str = "fractile; fwd=miss; detail=refused";

/// This service's `Cache-Status` entry for a served tile: a hit when a cache of ours answered
/// (or the client's copy was current), a forward otherwise, with the metric's cache label as
/// `detail`. Static values: no formatting on the hot path.
pub(super) fn cache_status(label: CacheLabel) -> HeaderValue {
    HeaderValue::from_static(match label {
        CacheLabel::L1 => "fractile; hit; detail=l1",
        CacheLabel::L2 => "fractile; hit; detail=l2",
        CacheLabel::NotModified => "fractile; hit; detail=not_modified",
        CacheLabel::Rendered => "fractile; fwd=miss; stored; detail=rendered",
        CacheLabel::Worker => "fractile; fwd=miss; stored; detail=worker",
        CacheLabel::Coalesced => "fractile; fwd=miss; collapsed; detail=coalesced",
        CacheLabel::Unset => "fractile",
    })
}

/// Response headers a script on another origin may read (CORS): the diagnostics the viewer
/// shows.
pub const EXPOSED_HEADERS: [HeaderName; 4] = [
    CACHE_STATUS,
    HeaderName::from_static("server-timing"),
    HeaderName::from_static("traceresponse"),
    HeaderName::from_static("x-request-id"),
];

/// CORS with `FRACTILE_CORS_ALLOW_ORIGINS=*` on a tile response: two constant headers,
/// whoever asks (a shared cache's copy serves every origin, so no `Vary`), what tower-http's
/// layer sends for `*` too. Set here rather than by that layer, which builds a header map
/// and joins the exposed names on every request: about 6,000 instructions per L1 hit against
/// these constants' 630 (callgrind, `loadtests/instructions-per-hit.sh`), an eighth of the
/// hit. The preflight and an allow-list keep the layer.
pub fn allow_any_origin(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("cache-status,server-timing,traceresponse,x-request-id"),
    );
}

/// The strong validator of a tile: rendering is deterministic, so the renderer version and
/// the key identify the bytes exactly, and a 304 needs no cache lookup at all.
pub(super) fn etag(key: &TileKey) -> HeaderValue {
    let t = key.tile;
    let value = format!(
        "\"{RENDER_VERSION}-{}-{}-{}-{}\"",
        key.style,
        t.z(),
        t.x(),
        t.y()
    );
    // Only ASCII letters, digits, dashes and quotes: always a valid header value.
    header_value(value, "\"invalid\"")
}

/// A duration in milliseconds with three decimals, written from integer microseconds: float
/// formatting with a precision cost an L1 hit more than the rest of its headers together.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0.as_micros();
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

/// A header value made from `text` without copying it (`HeaderValue::from_str` copies),
/// or `fallback` if `text` holds a byte no header may (never, for what this module writes).
fn header_value(text: String, fallback: &'static str) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static(fallback))
}

/// `Server-Timing` for a served tile, so a browser's devtools show where the time went.
pub(super) fn server_timing(source: &Source, elapsed: Duration) -> HeaderValue {
    let mut out = String::with_capacity(96);
    let total = Millis(elapsed);
    let _ = match source {
        Source::L1 => write!(out, "l1;desc=\"L1 hit\";dur={total}"),
        Source::L2 { lookup } => write!(
            out,
            "l2;desc=\"Redis hit\";dur={}, total;dur={total}",
            Millis(*lookup)
        ),
        Source::Rendered { queued, rendered } => write!(
            out,
            "queue;desc=\"render queue\";dur={}, render;dur={}, total;dur={total}",
            Millis(*queued),
            Millis(*rendered)
        ),
        Source::Worker(wait) => {
            worker_timing(&mut out, wait);
            write!(out, ", total;dur={total}")
        }
        Source::Coalesced => write!(
            out,
            "coalesced;desc=\"waited for another request's fetch\";dur={total}"
        ),
    };
    header_value(out, "total")
}

/// The stages of a queued miss: the Redis miss, the claim, the publish, the broker and
/// announcement (`transit`), the worker (its name, and its time from delivery to tile,
/// of which `render`), the read of the stored tile (`fetch`) and the whole wait.
fn worker_timing(out: &mut String, wait: &WorkerWait) {
    let _ = write!(
        out,
        "l2;desc=\"Redis miss\";dur={}, claim;dur={}",
        Millis(wait.lookup),
        Millis(wait.claim)
    );
    if let Some(publish) = wait.publish {
        let _ = write!(out, ", publish;dur={}", Millis(publish));
    }
    if let Some(transit) = wait.transit() {
        let _ = write!(
            out,
            ", transit;desc=\"broker and announcement\";dur={}",
            Millis(transit)
        );
    }
    if let Some(note) = &wait.note {
        // Worker ids are host names; keep the header value plain ASCII regardless.
        let name: String = note
            .worker
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .take(64)
            .collect();
        let _ = write!(out, ", worker;desc=\"{name}\"");
        if let Some(ms) = note.handled_ms.filter(|ms| ms.is_finite() && *ms >= 0.0) {
            let _ = write!(out, ";dur={ms:.3}");
        }
        if note.render_ms.is_finite() && note.render_ms >= 0.0 {
            let _ = write!(out, ", render;dur={:.3}", note.render_ms);
        }
    }
    let _ = write!(
        out,
        ", fetch;dur={}, wait;desc=\"waited for a worker\";dur={}",
        Millis(wait.fetch),
        Millis(wait.waited)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validator::not_modified;
    use fractile_render::{MaxZoom, Style, TileId};
    use fractile_tile_store::ReadyNote;

    #[test]
    fn any_origin_exposes_exactly_the_exposed_headers() {
        let mut headers = HeaderMap::new();
        allow_any_origin(&mut headers);
        let exposed = EXPOSED_HEADERS;
        let names: Vec<&str> = exposed.iter().map(HeaderName::as_str).collect();
        assert_eq!(
            headers[header::ACCESS_CONTROL_EXPOSE_HEADERS],
            names.join(",")
        );
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }

    #[test]
    fn millis_have_three_decimals() {
        for (micros, shown) in [(0, "0.000"), (12, "0.012"), (1_234_567, "1234.567")] {
            assert_eq!(Millis(Duration::from_micros(micros)).to_string(), shown);
        }
    }

    fn queued_miss(note: Option<ReadyNote>) -> WorkerWait {
        let ms = Duration::from_millis;
        WorkerWait {
            lookup: ms(1),
            claim: ms(2),
            publish: Some(ms(3)),
            announced: Some(ms(20)),
            fetch: ms(1),
            waited: ms(21),
            note,
        }
    }

    #[test]
    fn a_queued_miss_shows_each_stage_and_the_broker_by_difference() {
        let note = ReadyNote {
            key: "classic/1/0/0".into(),
            worker: "worker-1\"; evil".into(),
            render_ms: 6.5,
            handled_ms: Some(10.0),
            traceparent: None,
        };
        let mut out = String::new();
        worker_timing(&mut out, &queued_miss(Some(note)));
        // transit: 20 ms to the announcement, less claim 2, publish 3 and the worker's 10.
        assert_eq!(
            out,
            "l2;desc=\"Redis miss\";dur=1.000, claim;dur=2.000, publish;dur=3.000, \
             transit;desc=\"broker and announcement\";dur=5.000, \
             worker;desc=\"worker-1evil\";dur=10.000, render;dur=6.500, fetch;dur=1.000, \
             wait;desc=\"waited for a worker\";dur=21.000"
        );
        assert!(HeaderValue::from_str(&out).is_ok());
    }

    #[test]
    fn without_the_workers_account_the_broker_is_not_guessed() {
        let old_worker = ReadyNote {
            key: "classic/1/0/0".into(),
            worker: "w".into(),
            render_ms: f64::NAN,
            handled_ms: None,
            traceparent: None,
        };
        let mut out = String::new();
        worker_timing(&mut out, &queued_miss(Some(old_worker)));
        assert!(!out.contains("transit"), "{out}");
        assert!(!out.contains("render"), "{out}");
        let mut unheard = queued_miss(None);
        unheard.announced = None;
        assert_eq!(unheard.transit(), None);
        // Joined another replica's claim: its job had waited an unknown time already.
        let heard = ReadyNote {
            key: "classic/1/0/0".into(),
            worker: "w".into(),
            render_ms: 1.0,
            handled_ms: Some(2.0),
            traceparent: None,
        };
        let mut joined = queued_miss(Some(heard));
        assert!(joined.transit().is_some());
        joined.publish = None;
        assert_eq!(joined.transit(), None);
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let tile = TileId::new(1, 1, 0, MaxZoom::new(18).expect("valid")).expect("a tile");
        let tag = etag(&TileKey {
            tile,
            style: Style::Classic,
        });
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::IF_NONE_MATCH,
                HeaderValue::from_str(v).expect("ascii"),
            );
            not_modified(&h, &tag)
        };
        assert!(with(tag.to_str().expect("ascii")));
        assert!(with(&format!(
            "\"other\", W/{}",
            tag.to_str().expect("ascii")
        )));
        assert!(with("*"));
        assert!(!with("\"r0-classic-1-1-0\""));
        assert!(!not_modified(&HeaderMap::new(), &tag));
    }
}
