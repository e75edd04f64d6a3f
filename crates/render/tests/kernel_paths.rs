//! Every kernel path this machine can run draws the fixed tile set (`tile_bytes`' 541
//! tiles) with exactly the pixels the renderer drew before the paths existed: the dispatch
//! must never change a tile's bytes, or two machines would serve different tiles under one
//! `RENDER_VERSION`.

use fractile_render::bench_support::fixed_tile_set;
use fractile_render::{KernelPath, Style, TileId, render_pixels_with};

/// FNV-1a, 64 bit, over every tile's palette indices in order (the style only picks the
/// palette the indices name, so one style covers them all).
fn fixed_set_hash(path: KernelPath, tiles: &[TileId]) -> u64 {
    tiles
        .iter()
        .flat_map(|&t| {
            render_pixels_with(path, t, Style::Classic, &|| false)
                .expect("never cancelled")
                .indices()
                .to_vec()
        })
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// The fixed set's hash under `r2`, from the single 8-lane kernel that preceded the paths.
const FIXED_SET_R2: u64 = 0x3e66_c8d3_f605_637e;

#[test]
fn every_kernel_path_draws_the_fixed_set_identically() {
    let tiles = fixed_tile_set();
    assert_eq!(tiles.len(), 541);
    let paths = KernelPath::available();
    assert_eq!(paths.first(), Some(&KernelPath::Baseline));
    let hashes: Vec<(KernelPath, u64)> = paths
        .iter()
        .map(|&p| (p, fixed_set_hash(p, &tiles)))
        .collect();
    eprintln!("fixed-set hashes: {hashes:#x?}");
    for (path, hash) in hashes {
        assert_eq!(hash, FIXED_SET_R2, "{path} changed the pixels");
    }
}

#[test]
fn the_best_path_is_available_and_the_baseline_always_is() {
    assert!(KernelPath::best().is_available());
    assert!(KernelPath::Baseline.is_available());
    assert_eq!(KernelPath::available().last(), Some(&KernelPath::best()));
}
