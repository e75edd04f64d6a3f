//! What a seed covers: the body of `POST /v1/seeds` ([`SeedRequest`]) validated into the
//! tile ranges to render ([`Plan`]). Pure: no store, queue or HTTP type, so the route, the
//! expansion of a stored seed and the fuzz target `seed_request` plan the same way.

use fractile_render::{MaxZoom, Style, TileRange};
pub use fractile_tile_store::SeedBBox as BBox;
use fractile_tile_store::SeedRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Why a seed was refused before anything was queued.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The body is not a JSON object of [`SeedRequest`]'s fields (400 `invalid_body`).
    #[error("{0}")]
    InvalidBody(String),
    /// Zooms out of order or range, an unknown style, an empty or inverted bbox (400
    /// `invalid_seed`).
    #[error("{0}")]
    Invalid(String),
    /// More tiles than the limit (422 `seed_too_large`).
    #[error("this seed covers {total} tiles; the limit is {limit}")]
    TooLarge {
        /// Tiles the seed covers.
        total: u64,
        /// The most one seed may have here.
        limit: u64,
    },
}

/// The body of `POST /v1/seeds`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"min_zoom": 0, "max_zoom": 2, "style": "fire"}))]
pub struct SeedRequest {
    /// Shallowest zoom to render.
    #[schema(maximum = 32)]
    pub min_zoom: u8,
    /// Deepest zoom to render: at least `min_zoom`, at most the deployment's maximum zoom.
    #[schema(maximum = 32)]
    pub max_zoom: u8,
    /// Only tiles intersecting this rectangle of the complex plane (default: everything).
    #[serde(default)]
    #[schema(value_type = Option<crate::schemas::SeedBBox>)]
    pub bbox: Option<BBox>,
    /// Style (default `classic`).
    #[serde(default)]
    #[schema(value_type = Option<crate::schemas::StyleName>)]
    pub style: Option<String>,
}

/// The tile ranges of a request, validated.
#[derive(Debug)]
pub struct Plan {
    /// One range per zoom level that has tiles in the request, shallowest first.
    pub ranges: Vec<TileRange>,
    /// The style every tile is rendered in.
    pub style: Style,
    /// Tiles in all the ranges together: at least 1, at most the limit.
    pub total: u64,
}

/// Validates a seed request into a [`Plan`]: zooms in order and within `max_zoom`, a known
/// style, a finite non-empty bbox, and between 1 and `limit` tiles (over it:
/// [`PlanError::TooLarge`]; anything else wrong: [`PlanError::Invalid`]). Pure: no store or
/// queue is asked, so the fuzz target `seed_request` (fuzz/) calls it directly.
pub fn plan(request: &SeedRequest, max_zoom: MaxZoom, limit: u64) -> Result<Plan, PlanError> {
    let bad = PlanError::Invalid;
    if request.min_zoom > request.max_zoom {
        return Err(bad(format!(
            "min_zoom {} is above max_zoom {}",
            request.min_zoom, request.max_zoom
        )));
    }
    if request.max_zoom > max_zoom.get() {
        return Err(bad(format!(
            "max_zoom {} is beyond the maximum zoom {}",
            request.max_zoom,
            max_zoom.get()
        )));
    }
    let style = match &request.style {
        None => Style::default(),
        Some(name) => name
            .parse()
            .map_err(|e: fractile_render::UnknownStyle| bad(e.to_string()))?,
    };
    let mut ranges = Vec::new();
    for z in request.min_zoom..=request.max_zoom {
        let range = match request.bbox {
            None => Some(TileRange::whole(z, max_zoom)),
            Some(b) => {
                let valid = [b.min_re, b.min_im, b.max_re, b.max_im]
                    .iter()
                    .all(|v| v.is_finite())
                    && b.min_re < b.max_re
                    && b.min_im < b.max_im;
                if !valid {
                    return Err(bad(
                        "bbox must be finite with min_re < max_re and min_im < max_im".into(),
                    ));
                }
                TileRange::covering(z, max_zoom, b.min_re, b.min_im, b.max_re, b.max_im).transpose()
            }
        };
        if let Some(range) = range {
            ranges.push(range.map_err(|e| bad(e.to_string()))?);
        }
    }
    let total = ranges
        .iter()
        .map(TileRange::count)
        .fold(0u64, u64::saturating_add);
    if total > limit {
        return Err(PlanError::TooLarge { total, limit });
    }
    if total == 0 {
        return Err(bad("the bbox contains no tiles".into()));
    }
    Ok(Plan {
        ranges,
        style,
        total,
    })
}

/// The body as a [`SeedRequest`]. Only a JSON object is one: serde's derive also accepts
/// a sequence of the fields in order, so `[0,2]` would otherwise be a seed of zooms 0 to 2.
/// Anything else is [`PlanError::InvalidBody`].
pub fn seed_request(body: serde_json::Value) -> Result<SeedRequest, PlanError> {
    let bad = PlanError::InvalidBody;
    if !body.is_object() {
        return Err(bad(
            "the body must be a JSON object, e.g. {\"min_zoom\": 0, \"max_zoom\": 6}".into(),
        ));
    }
    // The same for the bbox: `[min_re, min_im, max_re, max_im]` is not one.
    if body
        .get("bbox")
        .is_some_and(|b| !b.is_object() && !b.is_null())
    {
        return Err(bad(
            "bbox must be a JSON object {\"min_re\", \"min_im\", \"max_re\", \"max_im\"} or null"
                .into(),
        ));
    }
    serde_json::from_value(body).map_err(|e| bad(format!("invalid seed request: {e}")))
}

/// The plan of a stored seed, rebuilt exactly as it was planned when accepted (no limit: it
/// was within one then).
pub fn plan_of(record: &SeedRecord, max_zoom: MaxZoom) -> Result<Plan, PlanError> {
    let request = SeedRequest {
        min_zoom: record.min_zoom,
        max_zoom: record.max_zoom,
        bbox: record.bbox,
        style: Some(record.style.clone()),
    };
    plan(&request, max_zoom, u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(min_zoom: u8, max_zoom: u8, bbox: Option<BBox>) -> SeedRequest {
        SeedRequest {
            min_zoom,
            max_zoom,
            bbox,
            style: None,
        }
    }

    fn max() -> MaxZoom {
        MaxZoom::new(20).expect("valid")
    }

    #[test]
    fn whole_zoom_levels_count_four_to_the_z() {
        let p = plan(&request(0, 6, None), max(), 10_000).expect("valid");
        assert_eq!(p.total, 5461);
    }

    #[test]
    fn seeds_over_the_limit_state_the_count_and_the_limit() {
        match plan(&request(0, 6, None), max(), 1000) {
            Err(e @ PlanError::TooLarge { total, limit }) => {
                assert_eq!((total, limit), (5461, 1000));
                let message = e.to_string();
                assert!(
                    message.contains("5461") && message.contains("1000"),
                    "{message}"
                );
            }
            other => panic!("expected 422, got {:?}", other.err()),
        }
    }

    #[test]
    fn a_bbox_limits_the_tiles() {
        let bbox = BBox {
            min_re: -0.76,
            min_im: 0.09,
            max_re: -0.74,
            max_im: 0.11,
        };
        let p = plan(&request(8, 8, Some(bbox)), max(), 10_000).expect("valid");
        // Columns 127-128, rows 120-122 of zoom 8.
        assert_eq!(p.total, 6);
        let outside = BBox {
            min_re: 10.0,
            min_im: 10.0,
            max_re: 11.0,
            max_im: 11.0,
        };
        assert!(plan(&request(8, 8, Some(outside)), max(), 10_000).is_err());
    }

    /// serde's derive reads a struct from a JSON array too; the document says object.
    #[test]
    fn only_objects_are_seed_requests_and_bboxes() {
        use serde_json::json;
        assert!(seed_request(json!([0, 2])).is_err());
        assert!(
            seed_request(json!({"min_zoom": 0, "max_zoom": 1, "bbox": [-2.0, -1.0, 1.0, 1.0]}))
                .is_err()
        );
        let bbox = json!({"min_re": -2.0, "min_im": -1.0, "max_re": 1.0, "max_im": 1.0});
        assert!(seed_request(json!({"min_zoom": 0, "max_zoom": 1, "bbox": bbox})).is_ok());
        assert!(seed_request(json!({"min_zoom": 0, "max_zoom": 1, "bbox": null})).is_ok());
    }

    #[test]
    fn a_seed_of_the_deepest_whole_level_is_too_large() {
        // Zoom 32 has 2^64 tiles: counting them overflowed, so with FRACTILE_MAX_ZOOM=32 the
        // seed panicked (debug) or counted 0 tiles and was refused as empty (release).
        match plan(&request(32, 32, None), MaxZoom::LIMIT, 100_000) {
            Err(PlanError::TooLarge { .. }) => {}
            other => panic!("expected 422, got {:?}", other.map(|p| p.total)),
        }
        let everything = plan(&request(0, 32, None), MaxZoom::LIMIT, u64::MAX).expect("valid");
        assert_eq!(everything.total, u64::MAX);
    }

    #[test]
    fn invalid_requests_are_refused() {
        assert!(plan(&request(5, 4, None), max(), 10).is_err());
        assert!(plan(&request(0, 21, None), max(), u64::MAX).is_err());
        let inverted = BBox {
            min_re: 1.0,
            min_im: 0.0,
            max_re: 0.0,
            max_im: 1.0,
        };
        assert!(plan(&request(0, 2, Some(inverted)), max(), 100).is_err());
    }
}
