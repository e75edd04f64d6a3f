//! Benchmarks of the two costs of a cache miss: the escape-time kernel and the PNG encoder.
//!
//! `cargo bench -p fractile-render` prints, per tile and per kernel path the CPU can run
//! (`baseline`, `avx2`, `avx512`), "pixel-iterations" per second (useful
//! iterations: pixels the cardioid/bulb shortcut settled are not counted, so the figure does
//! not flatter the shortcut) and, per encoder setting, raw megabytes (one palette index per
//! pixel) encoded per second and the compressed size.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fractile_render::bench_support::fixed_tile_set;
use fractile_render::{
    Encoding, KernelPath, MaxZoom, Style, TILE_SIZE, TileId, kernel, render_pixels,
    render_pixels_with,
};

/// Representative tiles: mostly interior, boundary-heavy, and deep near the boundary.
fn tiles() -> [(&'static str, TileId); 3] {
    let tile = |z, x, y| TileId::new(z, x, y, MaxZoom::LIMIT).expect("bench tiles exist");
    [
        ("whole-set-z0", tile(0, 0, 0)),
        ("seahorse-valley-z8", tile(8, 128, 121)),
        ("deep-z16", tile(16, 32873, 30568)),
    ]
}

/// Iterations the kernel really performs for useful work on `tile`.
fn useful_iterations(tile: TileId) -> u64 {
    let vp = tile.viewport();
    let max = kernel::max_iterations(tile.z());
    let step = vp.pixel_size();
    let mut total = 0u64;
    for row in 0..TILE_SIZE {
        let ci = vp.max_im() - (f64::from(row) + 0.5) * step;
        for block in 0..TILE_SIZE as usize / kernel::LANES {
            let cr = std::array::from_fn(|l| {
                vp.min_re() + ((block * kernel::LANES + l) as f64 + 0.5) * step
            });
            let e = kernel::escape_lanes(cr, ci, max);
            total += (0..kernel::LANES)
                .map(|l| u64::from(e.iterations(l).min(max)))
                .sum::<u64>();
        }
    }
    total
}

fn kernel_bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("kernel");
    for (name, tile) in tiles() {
        group.throughput(Throughput::Elements(useful_iterations(tile)));
        for path in KernelPath::available() {
            group.bench_function(format!("{name}/{path}"), |b| {
                b.iter(|| render_pixels_with(path, black_box(tile), Style::Classic, &|| false))
            });
        }
    }
    group.finish();
}

/// The fixed tile set of `tile_bytes` (541 tiles, zooms 0-14), rendered once per iteration
/// in one style (the style does not change the render time).
fn fixed_set_bench(c: &mut Criterion) {
    let tiles = fixed_tile_set();
    let mut group = c.benchmark_group("fixed-set");
    group.sample_size(10);
    group.throughput(Throughput::Elements(
        tiles.iter().map(|&t| useful_iterations(t)).sum(),
    ));
    for path in KernelPath::available() {
        group.bench_function(path.name(), |b| {
            b.iter(|| {
                for &tile in &tiles {
                    black_box(render_pixels_with(
                        path,
                        black_box(tile),
                        Style::Classic,
                        &|| false,
                    ))
                    .expect("never cancelled");
                }
            })
        });
    }
    group.finish();
}

fn encode_bench(c: &mut Criterion) {
    let (_, tile) = tiles()[1];
    let pixels = render_pixels(tile, Style::Classic, &|| false).expect("never cancelled");
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Bytes(pixels.indices().len() as u64));
    let levels = [
        ("fast", png::Compression::Fast),
        ("balanced", png::Compression::Balanced),
        ("high", png::Compression::High),
    ];
    let filters = [
        ("none", png::Filter::NoFilter),
        ("sub", png::Filter::Sub),
        ("up", png::Filter::Up),
        ("paeth", png::Filter::Paeth),
        ("adaptive", png::Filter::Adaptive),
    ];
    for (level_name, compression) in levels {
        for (filter_name, filter) in filters {
            let encoding = Encoding {
                compression,
                filter,
            };
            let size = encoding.encode(&pixels).map(|png| png.len()).unwrap_or(0);
            let id = format!("{level_name}/{filter_name}");
            eprintln!("encode {id}: {size} bytes");
            group.bench_function(&id, |b| b.iter(|| encoding.encode(black_box(&pixels))));
        }
    }
    group.finish();
}

criterion_group!(benches, kernel_bench, fixed_set_bench, encode_bench);
criterion_main!(benches);
