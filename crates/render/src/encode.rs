//! RGB pixels to PNG bytes.
//!
//! The default settings were chosen by the `encode` benchmark (figures in the README): see
//! [`Encoding::default`] for the trade-off.

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
    /// fdeflate's `Fast` level with the `Up` filter: about 0.1 ms a tile, under 1 % of the
    /// cheapest render. Adaptive filtering saves under 1 % of the bytes for twice the time;
    /// zlib's `Balanced` level makes tiles about a quarter smaller but takes 3.5-4.5 ms, as
    /// long as a cheap render. Misses are the expensive path, so encoding stays cheap.
    fn default() -> Self {
        Encoding {
            compression: png::Compression::Fast,
            filter: png::Filter::Up,
        }
    }
}

/// The encoder failed.
#[derive(Debug, thiserror::Error)]
#[error("png encoding failed: {0}")]
pub struct EncodeError(#[from] png::EncodingError);

impl Encoding {
    /// Encodes a tile's pixels as an 8-bit RGB PNG.
    pub fn encode(&self, pixels: &Pixels) -> Result<Vec<u8>, EncodeError> {
        // Rendered tiles compress to 10-40 % of the raw size; start with room for most.
        let mut out = Vec::with_capacity(pixels.as_rgb().len() / 4);
        let mut encoder = png::Encoder::new(&mut out, TILE_SIZE, TILE_SIZE);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(self.compression);
        encoder.set_filter(self.filter);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(pixels.as_rgb())?;
        writer.finish()?;
        Ok(out)
    }
}
