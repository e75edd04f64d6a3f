//! The fixed tile set that the benchmarks time and the cross-path test hashes, shared here so
//! `benches/` and `tests/` draw exactly the same tiles. Not part of the renderer's API.
//!
//! The set: every tile of zooms 0-4 (341) and 200 tiles at zooms 5-14 on the set's
//! boundary. The deep tiles are chosen by a fixed walk: a target zoom from a seeded
//! splitmix64 (written out here, so the set never changes with a crate's generator), then
//! from the root down, a child whose 16×16 probe has points both inside and outside the set,
//! picked in a seeded order.

use crate::{MaxZoom, TILE_SIZE, TileId, TileRange, kernel};

/// splitmix64: a fixed, tiny generator, so the sample is the same on every machine forever.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Calls `each` with the smooth escape count (`None`: inside the set) of the centre of every
/// cell of a `grid`×`grid` division of `tile`, row by row; `grid` = `TILE_SIZE` is its pixels.
/// `grid` must be a multiple of [`kernel::LANES`].
pub fn for_each_escape(tile: TileId, grid: usize, mut each: impl FnMut(Option<f64>)) {
    let vp = tile.viewport();
    let max = kernel::max_iterations(tile.z());
    let step = vp.pixel_size() * (f64::from(TILE_SIZE) / grid as f64);
    for row in 0..grid {
        let ci = vp.max_im() - (row as f64 + 0.5) * step;
        for block in 0..grid / kernel::LANES {
            let cr = std::array::from_fn(|l| {
                vp.min_re() + ((block * kernel::LANES + l) as f64 + 0.5) * step
            });
            let e = kernel::escape_lanes(cr, ci, max);
            for l in 0..kernel::LANES {
                each(e.smooth(l, max));
            }
        }
    }
}

/// Whether a 16×16 grid of the tile's points has points both inside and outside the set.
fn on_boundary(tile: TileId) -> bool {
    let (mut inside, mut outside) = (false, false);
    for_each_escape(tile, 16, |smooth| match smooth {
        None => inside = true,
        Some(_) => outside = true,
    });
    inside && outside
}

/// The fixed tile set: 541 tiles, zooms 0-4 in full, then the seeded boundary sample.
pub fn fixed_tile_set() -> Vec<TileId> {
    let limit = MaxZoom::LIMIT;
    let mut tiles: Vec<TileId> = (0..=4)
        .flat_map(|z| TileRange::whole(z, limit).expect("zooms 0-4 exist").tiles())
        .collect();
    let mut rng = SplitMix(20_261_129);
    let root = TileId::new(0, 0, 0, limit).expect("the root exists");
    let mut deep = 0;
    while deep < 200 {
        let target = 5 + rng.below(10) as u8;
        let mut tile = root;
        while tile.z() < target {
            let Some(children) = tile.children(limit) else {
                break;
            };
            let start = rng.below(4) as usize;
            let Some(next) = (0..4)
                .map(|i| children[(start + i) % 4])
                .find(|&c| on_boundary(c))
            else {
                break;
            };
            tile = next;
        }
        if tile.z() == target {
            tiles.push(tile);
            deep += 1;
        }
    }
    tiles
}
