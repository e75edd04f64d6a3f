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
