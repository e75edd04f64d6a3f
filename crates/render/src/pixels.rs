//! One rendered tile image: a palette index per pixel and the style whose palette they
//! name, what the kernel produces and the encoder turns into a PNG.

use crate::palette::Style;

/// One tile's image: a palette index per pixel, row-major, and the style whose palette
/// the indices name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels {
    indices: Vec<u8>,
    style: Style,
}

impl Pixels {
    /// The image of `indices` (`TILE_SIZE * TILE_SIZE` of them, row-major) in `style`.
    pub(crate) fn new(indices: Vec<u8>, style: Style) -> Self {
        Self { indices, style }
    }

    /// The palette indices, `TILE_SIZE * TILE_SIZE` of them.
    pub fn indices(&self) -> &[u8] {
        &self.indices
    }

    /// The style whose palette the indices name.
    pub fn style(&self) -> Style {
        self.style
    }

    /// The image as RGB, 3 bytes per pixel (for tests and comparisons; tiles are encoded
    /// from the indices).
    pub fn to_rgb(&self) -> Vec<u8> {
        let palette = self.style.palette();
        self.indices
            .iter()
            .flat_map(|&i| palette[usize::from(i)])
            .collect()
    }
}
