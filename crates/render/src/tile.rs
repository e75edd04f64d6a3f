//! Slippy-map tile coordinates over the complex plane, and the viewport each tile covers.
//!
//! Tile `0/0/0` covers the square with corners `-2.75 - 2i` and `1.25 + 2i`, which holds the
//! whole Mandelbrot set. Each zoom level splits every tile into four; `x` grows to the right
//! (real axis) and `y` grows downwards (negative imaginary axis), as on web maps.
//!
//! Precision: a tile at zoom `z` is `4 / 2^z` wide, so a pixel is `2^-(z+6)` wide. Near the set,
//! coordinates have magnitude up to 2, where one f64 ulp is `2^-51`: at zoom 45 neighbouring
//! pixels would be the same number, and from about zoom 40 (32 ulps a pixel) the rounding of
//! the iteration shows up as blocks. [`MaxZoom::LIMIT`] stops at 32, which leaves 8192 ulps
//! between neighbouring pixels and keeps `x, y < 2^z` within a `u32`.

/// Width and height of a tile in pixels.
pub const TILE_SIZE: u32 = 256;

/// Real part of the left edge of tile `0/0/0`.
const ORIGIN_RE: f64 = -2.75;
/// Imaginary part of the top edge of tile `0/0/0`.
const ORIGIN_IM: f64 = 2.0;
/// Side of tile `0/0/0` in the complex plane.
const WORLD_SIZE: f64 = 4.0;

/// The deepest zoom a deployment serves: a validated number no larger than [`MaxZoom::LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaxZoom(u8);

impl MaxZoom {
    /// The deepest zoom f64 arithmetic renders faithfully, with margin (see the module docs).
    pub const LIMIT: MaxZoom = MaxZoom(32);

    /// Checks `z` against [`MaxZoom::LIMIT`].
    pub fn new(z: u8) -> Result<Self, TileError> {
        if z > Self::LIMIT.0 {
            return Err(TileError::ZoomTooDeep {
                z,
                max: Self::LIMIT.0,
            });
        }
        Ok(MaxZoom(z))
    }

    /// The zoom level itself.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// Why coordinates do not name a tile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    /// `z` is deeper than this deployment serves.
    #[error("zoom {z} is beyond the maximum zoom {max}")]
    ZoomTooDeep {
        /// The requested zoom.
        z: u8,
        /// The deepest zoom served.
        max: u8,
    },
    /// `x` or `y` is not below `2^z`.
    #[error("tile {x},{y} does not exist at zoom {z} (x and y must be below {})", 1u64 << z)]
    OutOfRange {
        /// The zoom.
        z: u8,
        /// The requested column.
        x: u32,
        /// The requested row.
        y: u32,
    },
}

/// A tile that exists: `z ≤` the deployment's [`MaxZoom`] and `x, y < 2^z`.
///
/// The fields are private and [`TileId::new`] is the only way in, so everything downstream of
/// request parsing can trust a `TileId` without checking it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    z: u8,
    x: u32,
    y: u32,
}

impl TileId {
    /// Validates the coordinates against `max_zoom`.
    pub fn new(z: u8, x: u32, y: u32, max_zoom: MaxZoom) -> Result<Self, TileError> {
        if z > max_zoom.get() {
            return Err(TileError::ZoomTooDeep {
                z,
                max: max_zoom.get(),
            });
        }
        let side = 1u64 << z;
        if u64::from(x) >= side || u64::from(y) >= side {
            return Err(TileError::OutOfRange { z, x, y });
        }
        Ok(TileId { z, x, y })
    }

    /// Zoom level.
    pub fn z(self) -> u8 {
        self.z
    }

    /// Column, growing along the real axis.
    pub fn x(self) -> u32 {
        self.x
    }

    /// Row, growing down the imaginary axis.
    pub fn y(self) -> u32 {
        self.y
    }

    /// The four tiles one zoom level deeper that cover this one, or `None` at `max_zoom`.
    pub fn children(self, max_zoom: MaxZoom) -> Option<[TileId; 4]> {
        let z = self.z.checked_add(1)?;
        let (x, y) = (self.x.checked_mul(2)?, self.y.checked_mul(2)?);
        // x + 1 cannot overflow: x is even.
        let child = |dx, dy| TileId::new(z, x + dx, y + dy, max_zoom).ok();
        Some([child(0, 0)?, child(1, 0)?, child(0, 1)?, child(1, 1)?])
    }

    /// The square of the complex plane this tile covers.
    ///
    /// Edges are computed as `origin + k * size` from integers, so tile `x`'s right edge and
    /// tile `x + 1`'s left edge are the same f64: neighbouring tiles abut exactly.
    pub fn viewport(self) -> Viewport {
        // 2^-z is exact in f64 for every z we accept, and so is k * size for k ≤ 2^32.
        let size = WORLD_SIZE / (1u64 << self.z) as f64;
        let edge_re = |k: u32| ORIGIN_RE + f64::from(k) * size;
        let edge_im = |k: u32| ORIGIN_IM - f64::from(k) * size;
        let (x, y) = (self.x, self.y);
        // x + 1 can be 2^32 at zoom 32: compute that edge in f64 to avoid overflowing u32.
        let right = if x == u32::MAX {
            ORIGIN_RE + WORLD_SIZE
        } else {
            edge_re(x + 1)
        };
        let bottom = if y == u32::MAX {
            ORIGIN_IM - WORLD_SIZE
        } else {
            edge_im(y + 1)
        };
        Viewport {
            min_re: edge_re(x),
            max_re: right,
            min_im: bottom,
            max_im: edge_im(y),
            size,
        }
    }
}

/// An axis-aligned square of the complex plane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Viewport {
    min_re: f64,
    max_re: f64,
    min_im: f64,
    max_im: f64,
    size: f64,
}

impl Viewport {
    /// Left edge (smallest real part).
    pub fn min_re(&self) -> f64 {
        self.min_re
    }
    /// Right edge (largest real part).
    pub fn max_re(&self) -> f64 {
        self.max_re
    }
    /// Bottom edge (smallest imaginary part).
    pub fn min_im(&self) -> f64 {
        self.min_im
    }
    /// Top edge (largest imaginary part).
    pub fn max_im(&self) -> f64 {
        self.max_im
    }
    /// Distance between neighbouring pixel centres.
    pub fn pixel_size(&self) -> f64 {
        self.size / f64::from(TILE_SIZE)
    }
}

/// The tiles of one zoom level that intersect a rectangle of the complex plane: columns
/// `x0..=x1`, rows `y0..=y1`. Seeds expand into these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRange {
    z: u8,
    x0: u32,
    x1: u32,
    y0: u32,
    y1: u32,
}

impl TileRange {
    /// Every tile of zoom `z`.
    pub fn whole(z: u8, max_zoom: MaxZoom) -> Result<Self, TileError> {
        let last = TileId::new(z, 0, 0, max_zoom).map(|_| ((1u64 << z) - 1) as u32)?;
        Ok(TileRange {
            z,
            x0: 0,
            x1: last,
            y0: 0,
            y1: last,
        })
    }

    /// The tiles of zoom `z` that intersect the rectangle `[min_re, max_re] × [min_im, max_im]`,
    /// or `None` when the rectangle misses the world (or is empty or not finite).
    pub fn covering(
        z: u8,
        max_zoom: MaxZoom,
        min_re: f64,
        min_im: f64,
        max_re: f64,
        max_im: f64,
    ) -> Result<Option<Self>, TileError> {
        let whole = Self::whole(z, max_zoom)?;
        let finite = [min_re, min_im, max_re, max_im]
            .iter()
            .all(|v| v.is_finite());
        if !finite || min_re >= max_re || min_im >= max_im {
            return Ok(None);
        }
        let size = WORLD_SIZE / (1u64 << z) as f64;
        let last = f64::from(whole.x1);
        // Tile edges, exact as in `TileId::viewport`.
        let edge_re = |k: u32| ORIGIN_RE + f64::from(k) * size;
        let edge_im = |k: u32| ORIGIN_IM - f64::from(k) * size;
        // The column whose left edge is the last at or left of a real part, the row whose top
        // edge is the last at or above an imaginary part, clamped to the world. The division
        // estimates it; it can round across an edge (`-0.77 .. -7e-70` gave column 11 of zoom
        // 4, which starts at 0), so the exact edges settle it.
        let column = |re: f64| {
            let estimate = ((re - ORIGIN_RE) / size).floor().clamp(0.0, last) as u32;
            settle(estimate, whole.x1, |k| edge_re(k) <= re)
        };
        let row = |im: f64| {
            let estimate = ((ORIGIN_IM - im) / size).floor().clamp(0.0, last) as u32;
            settle(estimate, whole.x1, |k| edge_im(k) >= im)
        };
        let world_misses = max_re <= ORIGIN_RE
            || min_re >= ORIGIN_RE + WORLD_SIZE
            || min_im >= ORIGIN_IM
            || max_im <= ORIGIN_IM - WORLD_SIZE;
        if world_misses {
            return Ok(None);
        }
        Ok(Some(TileRange {
            z,
            x0: column(min_re),
            x1: column(max_re),
            y0: row(max_im),
            y1: row(min_im),
        }))
    }

    /// Tiles in the range, saturating at `u64::MAX`: a whole level at zoom 32 has 2^64
    /// tiles, one more than a `u64` holds (such a range is only ever refused as too large).
    pub fn count(&self) -> u64 {
        (u64::from(self.x1 - self.x0) + 1).saturating_mul(u64::from(self.y1 - self.y0) + 1)
    }

    /// The tiles, row by row. Lazy: a range of millions of tiles costs no memory.
    pub fn tiles(self) -> impl Iterator<Item = TileId> {
        (self.y0..=self.y1)
            .flat_map(move |y| (self.x0..=self.x1).map(move |x| TileId { z: self.z, x, y }))
    }
}

/// The largest `k` in `0..=last` for which `within(k)` holds (`within` holds up to some `k`
/// and not past it), or 0, found from an estimate at most one off.
fn settle(mut k: u32, last: u32, within: impl Fn(u32) -> bool) -> u32 {
    while k > 0 && !within(k) {
        k -= 1;
    }
    while k < last && within(k + 1) {
        k += 1;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bbox_ending_just_before_a_tile_edge_does_not_cover_the_next_tile() {
        // Found by fuzzing seed plans: (-7e-70 + 2.75) / 0.25 rounds to exactly 11, so the
        // range took column 11 of zoom 4, whose left edge is 0, right of the bbox.
        let range = TileRange::covering(4, MaxZoom::LIMIT, -0.77, 0.09, -7e-70, 1.0)
            .expect("zoom 4 is within the limit")
            .expect("the bbox meets the world");
        for tile in range.tiles() {
            assert!(
                tile.viewport().min_re() <= -7e-70,
                "{tile:?} is right of the bbox"
            );
        }
        assert_eq!(range.tiles().map(TileId::x).max(), Some(10));
        // An edge exactly on a tile boundary still takes the tile it touches.
        let touching = TileRange::covering(4, MaxZoom::LIMIT, -0.77, 0.09, 0.0, 1.0)
            .expect("zoom 4 is within the limit")
            .expect("the bbox meets the world");
        assert_eq!(touching.tiles().map(TileId::x).max(), Some(11));
    }

    #[test]
    fn the_count_of_a_whole_level_at_the_deepest_zoom_saturates() {
        // 2^32 columns times 2^32 rows is 2^64: it overflowed (a panic in debug builds, 0 in
        // release ones) before the count saturated.
        let deepest = TileRange::whole(32, MaxZoom::LIMIT).expect("zoom 32 is within the limit");
        assert_eq!(deepest.count(), u64::MAX);
        let below = TileRange::whole(31, MaxZoom::LIMIT).expect("zoom 31 is within the limit");
        assert_eq!(below.count(), 1 << 62);
    }

    #[test]
    fn zoom_zero_covers_the_whole_set() {
        let vp = TileId::new(0, 0, 0, MaxZoom::LIMIT)
            .expect("0/0/0 exists")
            .viewport();
        assert!(vp.min_re() <= -2.0 && vp.max_re() >= 0.25);
        assert!(vp.min_im() <= -1.2 && vp.max_im() >= 1.2);
    }

    #[test]
    fn coordinates_outside_the_zoom_level_are_rejected() {
        let max = MaxZoom::new(10).expect("10 is under the limit");
        assert_eq!(
            TileId::new(2, 4, 0, max),
            Err(TileError::OutOfRange { z: 2, x: 4, y: 0 })
        );
        assert_eq!(
            TileId::new(0, 0, 1, max),
            Err(TileError::OutOfRange { z: 0, x: 0, y: 1 })
        );
        assert_eq!(
            TileId::new(11, 0, 0, max),
            Err(TileError::ZoomTooDeep { z: 11, max: 10 })
        );
        assert!(TileId::new(10, 1023, 1023, max).is_ok());
    }

    #[test]
    fn max_zoom_above_the_precision_limit_is_rejected() {
        assert!(MaxZoom::new(32).is_ok());
        assert_eq!(
            MaxZoom::new(33),
            Err(TileError::ZoomTooDeep { z: 33, max: 32 })
        );
    }

    #[test]
    fn the_last_tile_of_the_deepest_zoom_ends_at_the_world_edge() {
        let last = TileId::new(32, u32::MAX, u32::MAX, MaxZoom::LIMIT).expect("exists");
        let vp = last.viewport();
        assert_eq!(vp.max_re(), ORIGIN_RE + WORLD_SIZE);
        assert_eq!(vp.min_im(), ORIGIN_IM - WORLD_SIZE);
        assert!(vp.min_re() < vp.max_re());
    }

    #[test]
    fn ranges_cover_what_intersects_the_rectangle() {
        let max = MaxZoom::new(10).expect("valid");
        assert_eq!(TileRange::whole(2, max).expect("valid").count(), 16);
        // The whole world at zoom 3 (and beyond it) is every tile.
        let all = TileRange::covering(3, max, -10.0, -10.0, 10.0, 10.0)
            .expect("valid")
            .expect("hits");
        assert_eq!(all.count(), 64);
        assert_eq!(all.tiles().count(), 64);
        // A small box just right of -0.75 + 0.1i at zoom 8 is one tile: 8/128/121.
        let one = TileRange::covering(8, max, -0.7499, 0.0999, -0.7490, 0.1001)
            .expect("valid")
            .expect("hits");
        let tiles: Vec<_> = one.tiles().map(|t| (t.x(), t.y())).collect();
        assert_eq!(tiles, [(128, 121)]);
        assert_eq!(TileRange::covering(3, max, 5.0, 0.0, 6.0, 1.0), Ok(None));
        assert_eq!(TileRange::covering(3, max, 1.0, 0.0, 0.0, 1.0), Ok(None));
        assert_eq!(
            TileRange::covering(3, max, f64::NAN, 0.0, 0.0, 1.0),
            Ok(None)
        );
        assert!(TileRange::whole(11, max).is_err());
    }

    #[test]
    fn children_are_none_at_max_zoom() {
        let max = MaxZoom::new(3).expect("valid");
        let t = TileId::new(3, 1, 1, max).expect("valid");
        assert_eq!(t.children(max), None);
        let parent = TileId::new(2, 1, 1, max).expect("valid");
        let kids = parent.children(max).expect("zoom 3 allowed");
        assert_eq!((kids[3].x(), kids[3].y(), kids[3].z()), (3, 3, 3));
    }
}
