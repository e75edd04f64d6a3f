//! Fuzzes seed validation: the input is a `POST /v1/seeds` body, read as the route reads it
//! (JSON, then [`seed_request`], then [`plan`]) under several deployments' settings.
//! Properties, for every accepted plan:
//!
//! - it is within the limits: 1 to `limit` tiles, zooms in order and within the maximum
//!   zoom, a known style (the one asked for, or the default);
//! - its total is the exact sum of its ranges (saturating at `u64::MAX`), each counted
//!   without overflow;
//! - the same request with no limit plans the same tiles (so a refusal for size is only
//!   ever for size, and a stored seed re-plans as accepted);
//! - for small plans, every tile is a valid tile of a requested zoom, listed once, and
//!   intersecting the bbox when there is one.
//!
//! A refusal is [`PlanError::InvalidBody`] (400 `invalid_body`), [`PlanError::Invalid`]
//! (400 `invalid_seed`) or [`PlanError::TooLarge`] (422 `seed_too_large`), and too large only
//! when the unlimited plan really has more tiles than the limit.

#![no_main]

use fractile_api::seeds::{Plan, PlanError, SeedRequest, plan, seed_request};
use fractile_render::{MaxZoom, Style, TileId};
use libfuzzer_sys::fuzz_target;

/// (`FRACTILE_MAX_ZOOM`, seed limit): the defaults (the limit is the smaller of
/// `FRACTILE_SEED_MAX_TILES` and `FRACTILE_SEED_MAX_QUEUED_TILES`), the deepest zoom a
/// deployment may serve, the unlimited re-planning of a stored seed, and a tiny deployment.
const SETTINGS: [(u8, u64); 4] = [(24, 100_000), (32, 100_000), (32, u64::MAX), (0, 1)];

/// Plans at most this large are walked tile by tile.
const WALK: u64 = 4096;

fn check(request: &SeedRequest, max_zoom: MaxZoom, limit: u64, plan: &Plan) {
    assert!(
        plan.total >= 1 && plan.total <= limit,
        "{} tiles",
        plan.total
    );
    assert!(request.min_zoom <= request.max_zoom && request.max_zoom <= max_zoom.get());
    let style = match &request.style {
        None => Style::default(),
        Some(name) => name.parse().expect("an accepted style is known"),
    };
    assert_eq!(plan.style, style);
    // The targets build with overflow checks, so a count that overflows panics; the sum is
    // taken wide, so the total must be it exactly, or saturated at u64::MAX (2^64 tiles and
    // more: a whole level at zoom 32).
    let counted: u128 = plan.ranges.iter().map(|r| u128::from(r.count())).sum();
    assert_eq!(
        u128::from(plan.total),
        counted.min(u128::from(u64::MAX)),
        "the total is not the sum of the ranges"
    );
    if plan.total > WALK {
        return;
    }
    let mut seen = 0u64;
    let mut last: Option<TileId> = None;
    for range in &plan.ranges {
        for tile in range.tiles() {
            seen += 1;
            assert!((request.min_zoom..=request.max_zoom).contains(&tile.z()));
            assert!(TileId::new(tile.z(), tile.x(), tile.y(), max_zoom).is_ok());
            if let Some(prev) = last {
                let order = |t: TileId| (t.z(), t.y(), t.x());
                assert!(order(prev) < order(tile), "{prev:?} then {tile:?}");
            }
            last = Some(tile);
            if let Some(b) = request.bbox {
                let v = tile.viewport();
                let meets = v.min_re() <= b.max_re
                    && v.max_re() >= b.min_re
                    && v.min_im() <= b.max_im
                    && v.max_im() >= b.min_im;
                assert!(meets, "{tile:?} is outside {b:?}");
            }
        }
    }
    assert_eq!(seen, plan.total, "the ranges list another number of tiles");
}

fuzz_target!(|data: &[u8]| {
    // axum's `Json` extractor: a body that is not JSON is refused before the handler.
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let request = match seed_request(body) {
        Ok(request) => request,
        Err(PlanError::InvalidBody(_)) => return,
        Err(other) => panic!("the body was refused with {other:?}"),
    };
    for (max_zoom, limit) in SETTINGS {
        let max_zoom = MaxZoom::new(max_zoom).expect("a zoom within the limit");
        let unlimited = plan(&request, max_zoom, u64::MAX);
        match plan(&request, max_zoom, limit) {
            Ok(p) => {
                check(&request, max_zoom, limit, &p);
                let all = unlimited.expect("accepted under a limit, so without one");
                assert_eq!((all.total, &all.ranges), (p.total, &p.ranges));
            }
            Err(PlanError::TooLarge {
                total,
                limit: refused_at,
            }) => {
                assert_eq!(refused_at, limit);
                let all = unlimited.expect("refused only for its size");
                check(&request, max_zoom, u64::MAX, &all);
                assert_eq!(all.total, total, "the refusal states the count");
                assert!(
                    all.total > limit,
                    "{} tiles refused for a limit of {limit}",
                    all.total
                );
            }
            Err(PlanError::Invalid(_)) => {
                assert!(unlimited.is_err(), "refused as invalid only under a limit");
            }
            Err(other @ PlanError::InvalidBody(_)) => panic!("plan answered {other:?}"),
        }
    }
});
