//! Mean bytes per tile over a fixed tile set, this renderer's paletted PNG against r1's
//! 24-bit RGB PNG (its colouring and encoder settings are reproduced below as the baseline),
//! and the encode time against the render time of the seahorse tile.
//!
//! The set (`fractile_render::bench_support::fixed_tile_set`): every tile of zooms 0-4 (341)
//! and a seeded sample of 200 tiles at zooms 5-14 on the set's boundary, each in every style.
//!
//! `cargo bench -p fractile-render --bench tile_bytes` prints the table the README quotes.

use std::hint::black_box;
use std::time::Instant;

use fractile_render::bench_support::{fixed_tile_set, for_each_escape};
use fractile_render::{
    Encoding, MaxZoom, Pixels, STYLES, Style, TILE_SIZE, TileId, render_pixels, render_tile,
};

/// r1's bytes for `tile`: its colouring (the same gradient, interpolated continuously
/// instead of sampled in 255 steps) as 24-bit RGB, fdeflate's `Fast` level, the `Up` filter.
fn r1_bytes(tile: TileId, style: Style) -> usize {
    let size = TILE_SIZE as usize;
    let mut rgb = Vec::with_capacity(size * size * 3);
    for_each_escape(tile, size, |smooth| {
        let colour = smooth.map_or([0, 0, 0], |s| style.gradient(Style::cycle_position(s)));
        rgb.extend_from_slice(&colour);
    });
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, TILE_SIZE, TILE_SIZE);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    encoder.set_filter(png::Filter::Up);
    let written = encoder
        .write_header()
        .and_then(|mut w| w.write_image_data(&rgb).and_then(|()| w.finish()));
    written.expect("RGB encodes");
    out.len()
}

/// Median of `runs` timings of `f`, in milliseconds.
fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

/// The encoder settings compared; the first is [`Encoding::default`].
fn candidates() -> Vec<(&'static str, Encoding)> {
    use png::{Compression, Filter};
    let with = |compression, filter| Encoding {
        compression,
        filter,
    };
    vec![
        ("balanced, sub (default)", Encoding::default()),
        ("high, sub (r2)", with(Compression::High, Filter::Sub)),
        ("high, no filter", with(Compression::High, Filter::NoFilter)),
        ("high, adaptive", with(Compression::High, Filter::Adaptive)),
        (
            "balanced, no filter",
            with(Compression::Balanced, Filter::NoFilter),
        ),
        ("fast, no filter", with(Compression::Fast, Filter::NoFilter)),
    ]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, on a smaller set.
    let quick = !std::env::args().any(|a| a == "--bench");
    let mut tiles = fixed_tile_set();
    if quick {
        tiles.truncate(20);
    }
    let candidates = candidates();
    let mut r1 = vec![0usize; STYLES.len()];
    let mut now = vec![vec![0usize; STYLES.len()]; candidates.len()];
    for (s, style) in STYLES.into_iter().enumerate() {
        for &tile in &tiles {
            r1[s] += r1_bytes(tile, style);
            let pixels = render_pixels(tile, style, &|| false).expect("renders");
            for (c, (_, encoding)) in candidates.iter().enumerate() {
                now[c][s] += encoding.encode(&pixels).expect("encodes").len();
            }
        }
    }
    // The default is what render_tile serves.
    let served: usize = STYLES
        .into_iter()
        .flat_map(|style| tiles.iter().map(move |&t| (t, style)))
        .map(|(t, style)| render_tile(t, style, &|| false).expect("renders").len())
        .sum();
    assert_eq!(
        served,
        now[0].iter().sum::<usize>(),
        "the default is what tiles get"
    );

    let seahorse = TileId::new(8, 128, 121, MaxZoom::LIMIT).expect("exists");
    let runs = if quick { 3 } else { 31 };
    let mut pixels: Option<Pixels> = None;
    let render = median_ms(runs, || {
        let rendered = render_pixels(black_box(seahorse), Style::Classic, &|| false);
        pixels = Some(rendered.expect("renders"));
    });
    let pixels = pixels.expect("rendered");

    let per_tile = |bytes: usize| bytes as f64 / (tiles.len() * STYLES.len()) as f64;
    let r1_all: usize = r1.iter().sum();
    println!(
        "tiles: {} per style, {} in all; r1 (24-bit RGB, fast, up): {:.0} bytes a tile",
        tiles.len(),
        tiles.len() * STYLES.len(),
        per_tile(r1_all)
    );
    println!(
        "| encoding | mean bytes | × r1 | {} | seahorse encode ms (% of its render) |",
        STYLES.map(|s| format!("× r1, {s}")).join(" | ")
    );
    println!(
        "| --- | ---: | ---: |{} ---: |",
        " ---: |".repeat(STYLES.len())
    );
    for (c, (name, encoding)) in candidates.iter().enumerate() {
        let all: usize = now[c].iter().sum();
        let styles: Vec<String> = (0..STYLES.len())
            .map(|s| format!("{:.3}", now[c][s] as f64 / r1[s] as f64))
            .collect();
        let encode = median_ms(runs, || {
            black_box(encoding.encode(black_box(&pixels)).expect("encodes"));
        });
        println!(
            "| {name} | {:.0} | {:.3} | {} | {encode:.2} ({:.0} %) |",
            per_tile(all),
            all as f64 / r1_all as f64,
            styles.join(" | "),
            encode / render * 100.0
        );
    }
    println!("seahorse 8/128/121 render: {render:.2} ms");
}
