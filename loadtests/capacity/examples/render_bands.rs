//! Time of one render (kernel + PNG encode, the whole job of a miss) by zoom band, on one
//! thread, for tiles like the ones browse traffic misses on: around the load generator's
//! points of interest, chosen by the same Zipf weights, panned by up to two tiles.
//!
//! `cargo run --release --example render_bands -- [tiles_per_band]` (default 200); run it
//! pinned to one core (`taskset -c 1`) so the figure is per core.

use std::time::Instant;

use fractile_capacity::{Rng, quantile};
use fractile_render::{MaxZoom, Style, TileId, render_tile};

/// Side of tile 0/0/0 and its top-left corner in the complex plane (as in fractile-render).
const WORLD: f64 = 4.0;
const ORIGIN_RE: f64 = -2.75;
const ORIGIN_IM: f64 = 2.0;

/// The load generator's points of interest (loadtests/src/scenario.rs), most popular first.
const POINTS_OF_INTEREST: &[(f64, f64)] = &[
    (-0.75, 0.1),
    (0.275, 0.0),
    (-0.1, 0.65),
    (-1.25, 0.0),
    (-1.768, 0.0),
    (-0.745_43, 0.113_02),
    (-0.16, 1.04),
    (0.38, 0.33),
    (-1.94, 0.0),
    (-0.53, -0.62),
];

/// Zoom bands as the capacity model groups them.
const BANDS: &[(&str, u8, u8)] = &[
    ("0-6", 0, 6),
    ("7-10", 7, 10),
    ("11-14", 11, 14),
    ("15-20", 15, 20),
];

fn main() -> anyhow::Result<()> {
    let per_band: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 200,
    };
    // Zipf(s = 1.1) over the points, as the generator picks them.
    let weights: Vec<f64> = (1..=POINTS_OF_INTEREST.len())
        .map(|k| 1.0 / (k as f64).powf(1.1))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut rng = Rng::new(42);
    println!(
        "| zoom band | tiles | mean ms | p50 ms | p90 ms | p99 ms | max ms | renders/s per thread |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for &(label, lo, hi) in BANDS {
        let mut times = Vec::with_capacity(per_band);
        for _ in 0..per_band {
            let z = rng.range(i64::from(lo), i64::from(hi)) as u8;
            let mut pick = (rng.next_u64() as f64 / u64::MAX as f64) * total;
            let mut poi = POINTS_OF_INTEREST[0];
            for (point, w) in POINTS_OF_INTEREST.iter().zip(&weights) {
                poi = *point;
                if pick < *w {
                    break;
                }
                pick -= w;
            }
            let side = 1i64 << z;
            let size = WORLD / side as f64;
            let x =
                (((poi.0 - ORIGIN_RE) / size).floor() as i64 + rng.range(-2, 2)).clamp(0, side - 1);
            let y =
                (((ORIGIN_IM - poi.1) / size).floor() as i64 + rng.range(-2, 2)).clamp(0, side - 1);
            let tile = TileId::new(z, u32::try_from(x)?, u32::try_from(y)?, MaxZoom::LIMIT)?;
            let start = Instant::now();
            let png = render_tile(tile, Style::Classic, &|| false)?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            std::hint::black_box(png);
        }
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        let q = |p| quantile(&times, p).unwrap_or(f64::NAN);
        println!(
            "| {label} | {} | {mean:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            times.len(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0),
            1000.0 / mean
        );
    }
    Ok(())
}
