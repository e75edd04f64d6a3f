//! What checking a tile read from the cache costs: its shape alone (a deployment without a
//! MAC key), and its shape and HMAC-SHA256 tag (one with), on the tiles of the render crate's
//! fixed set (mean 12.9 KB) and on the seahorse tile, one of the larger.
//!
//! `cargo bench -p fractile-tile-store --bench mac` prints the figures docs/cross-cutting.md
//! ("Trust in shared stores") and the l2-hit report quote.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fractile_render::bench_support::fixed_tile_set;
use fractile_render::{MaxZoom, Style, TileId, TileKey, render_tile};
use fractile_settings::Secret;
use fractile_tile_store::TileMac;
use fractile_tile_store::mac::{MIN_KEY_BYTES, open_unkeyed};

fn mac_bench(c: &mut Criterion) {
    let key = Secret::new(&"k".repeat(MIN_KEY_BYTES), MIN_KEY_BYTES).expect("valid");
    let mac = TileMac::new(key, None);
    let keyed = |tile: TileId| {
        let key = TileKey {
            tile,
            style: Style::Classic,
        };
        let png = render_tile(tile, key.style, &|| false).expect("renders");
        (key, Bytes::from(mac.seal(&key, &png)), png.len())
    };
    let set: Vec<_> = fixed_tile_set().into_iter().map(keyed).collect();
    let set_bytes: usize = set.iter().map(|(_, _, len)| len).sum();
    let seahorse = keyed(TileId::new(8, 128, 121, MaxZoom::LIMIT).expect("a tile"));

    let mut group = c.benchmark_group("mac");
    group.throughput(Throughput::Bytes(set_bytes as u64));
    group.bench_function(format!("fixed-set-{}-tiles/shape", set.len()), |b| {
        b.iter(|| {
            for (_, value, _) in &set {
                black_box(open_unkeyed(value.clone()).expect("a tile"));
            }
        })
    });
    group.bench_function(format!("fixed-set-{}-tiles/shape+hmac", set.len()), |b| {
        b.iter(|| {
            for (key, value, _) in &set {
                black_box(mac.open(key, value.clone()).expect("a tile"));
            }
        })
    });
    group.throughput(Throughput::Bytes(seahorse.2 as u64));
    group.bench_function(format!("seahorse-{}-bytes/shape+hmac", seahorse.2), |b| {
        b.iter(|| black_box(mac.open(&seahorse.0, seahorse.1.clone()).expect("a tile")))
    });
    group.finish();
}

criterion_group!(benches, mac_bench);
criterion_main!(benches);
