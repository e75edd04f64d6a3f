//! Palette indices to an 8-bit paletted PNG (colour type 3, with `PLTE`).
//!
//! A tile is encoded once and then served many times, from L1, Redis, browsers' and CDNs'
//! caches: its bytes are paid on every request and in every cache slot, its encode time
//! once. So the settings favour bytes: see [`Encoding::default`] for the trade-off, chosen by
//! the `encode` benchmark and the `tile_bytes` example (figures in the README).

use crate::{Pixels, TILE_SIZE};

/// PNG encoder settings.
#[derive(Debug, Clone, Copy)]
pub struct Encoding {
    /// DEFLATE effort.
    pub compression: png::Compression,
    /// Per-row prediction filter.
    pub filter: png::Filter,
}

impl Default for Encoding {
    /// DEFLATE at `Balanced` with the `Sub` filter. The gradient's indices mostly step by
    /// one from a pixel to the next, so `Sub` turns them into long runs of a few small
    /// values: over the `tile_bytes` set it makes tiles 11 % smaller than no filter. `High`
    /// saves another 1.3 % of bytes but takes twice the time, a third of the seahorse tile's
    /// render since the kernel's SIMD paths (r2 used it); `Balanced` keeps the encode at
    /// about a sixth, inside the quarter the renderer allows it.
    fn default() -> Self {
        Encoding {
            compression: png::Compression::Balanced,
            filter: png::Filter::Sub,
        }
    }
}

/// The encoder failed.
#[derive(Debug, thiserror::Error)]
#[error("png encoding failed: {0}")]
pub struct EncodeError(#[from] png::EncodingError);

impl Encoding {
    /// Encodes a tile's indices as an 8-bit paletted PNG. The `PLTE` holds the style's
    /// palette up to the highest index the tile uses (a PNG's indices must all name an
    /// entry; the rest would be bytes no pixel needs).
    pub fn encode(&self, pixels: &Pixels) -> Result<Vec<u8>, EncodeError> {
        let used = pixels
            .indices()
            .iter()
            .copied()
            .max()
            .map_or(1, |m| usize::from(m) + 1);
        let palette = pixels.style().palette()[..used].as_flattened();
        // Paletted tiles compress to a few to 40 % of the raw size; start with room for most.
        let mut out = Vec::with_capacity(pixels.indices().len() / 4);
        let mut encoder = png::Encoder::new(&mut out, TILE_SIZE, TILE_SIZE);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(palette);
        encoder.set_compression(self.compression);
        encoder.set_filter(self.filter);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(pixels.indices())?;
        writer.finish()?;
        Ok(out)
    }
}

/// The largest tile this encoder can write: 256 rows of a filter byte and 256 indices
/// (65,792 bytes), which DEFLATE's stored blocks grow by a few bytes per 64 KiB at worst,
/// plus a full palette and the chunk framing. Anything longer is not one of its tiles.
pub const MAX_TILE_BYTES: usize = 72 * 1024;

/// The PNG signature.
const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// The `IHDR` chunk every tile starts with: length 13, 256 × 256, bit depth 8, colour type 3
/// (indexed), compression 0, filter 0, no interlace, then its CRC.
const TILE_IHDR: [u8; 25] = {
    let mut chunk = [0u8; 25];
    let head: [u8; 21] = [
        0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0, 1, 0, 0, 0, 1, 0, 8, 3, 0, 0, 0,
    ];
    let mut i = 0;
    while i < head.len() {
        chunk[i] = head[i];
        i += 1;
    }
    chunk
};

/// The `IEND` chunk every PNG ends with (empty, with its fixed CRC).
pub const IEND: &[u8; 12] = b"\0\0\0\0IEND\xae\x42\x60\x82";

/// Why bytes are not a tile this renderer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotATile {
    /// Shorter than the smallest PNG, or longer than [`MAX_TILE_BYTES`].
    #[error("length {0} is not a tile's")]
    Length(usize),
    /// No PNG signature.
    #[error("not a PNG")]
    Signature,
    /// Not a 256 × 256, 8-bit paletted PNG.
    #[error("not a 256 x 256 8-bit paletted PNG")]
    Header,
    /// Does not end with `IEND`.
    #[error("does not end where a PNG ends")]
    End,
}

/// Checks that `png` has the shape of a tile this encoder writes: the PNG signature, a
/// 256 × 256 8-bit paletted `IHDR` as its first chunk, at most [`MAX_TILE_BYTES`], ending
/// with `IEND`. A few comparisons, no decoding: what a reader of a shared cache checks before
/// it serves bytes it did not make (the pixels are not checked; a keyed MAC vouches for
/// those, where a deployment has one).
pub fn check_tile(png: &[u8]) -> Result<(), NotATile> {
    let min = SIGNATURE.len() + TILE_IHDR.len() + IEND.len();
    if png.len() < min || png.len() > MAX_TILE_BYTES {
        return Err(NotATile::Length(png.len()));
    }
    if !png.starts_with(SIGNATURE) {
        return Err(NotATile::Signature);
    }
    // The IHDR up to its CRC: the CRC follows from the rest, which is what is compared.
    let ihdr = &png[SIGNATURE.len()..SIGNATURE.len() + 21];
    if ihdr != &TILE_IHDR[..21] {
        return Err(NotATile::Header);
    }
    if !png.ends_with(IEND) {
        return Err(NotATile::End);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MaxZoom, Style, TileId, render_tile};

    #[test]
    fn every_tile_passes_and_other_bytes_do_not() {
        for (z, x, y) in [(0, 0, 0), (8, 128, 121), (3, 5, 2)] {
            let tile = TileId::new(z, x, y, MaxZoom::LIMIT).expect("valid");
            for style in [Style::Classic, Style::Fire] {
                let png = render_tile(tile, style, &|| false).expect("renders");
                assert_eq!(check_tile(&png), Ok(()), "{z}/{x}/{y} {style}");
                assert!(png.len() <= MAX_TILE_BYTES);
            }
        }
        let tile = TileId::new(2, 1, 1, MaxZoom::LIMIT).expect("valid");
        let png = render_tile(tile, Style::Classic, &|| false).expect("renders");
        assert_eq!(
            check_tile(b"<script>alert(1)</script>"),
            Err(NotATile::Length(25))
        );
        let mut html = b"<html>".to_vec();
        html.resize(png.len(), b' ');
        assert_eq!(check_tile(&html), Err(NotATile::Signature));
        // A PNG, but not a tile: another size (the width's last byte), another colour type.
        for (at, value) in [(8 + 8 + 2, 0u8), (8 + 8 + 9, 2u8)] {
            let mut other = png.clone();
            other[at] = value;
            assert_eq!(check_tile(&other), Err(NotATile::Header), "byte {at}");
        }
        // Cut short, or with something after its end.
        assert_eq!(check_tile(&png[..png.len() - 1]), Err(NotATile::End));
        let mut longer = png.clone();
        longer.extend_from_slice(b"more");
        assert_eq!(check_tile(&longer), Err(NotATile::End));
        assert_eq!(
            check_tile(&vec![0u8; MAX_TILE_BYTES + 1]),
            Err(NotATile::Length(MAX_TILE_BYTES + 1))
        );
    }
}
