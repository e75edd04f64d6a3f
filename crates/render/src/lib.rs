//! Pure Mandelbrot tile rendering: a [`TileId`] and a [`Style`] in, a 256×256 PNG out.
//!
//! This crate does no I/O and knows nothing of async, HTTP, caches or queues; the api and
//! the worker both call [`render_tile`]. Output is byte-for-byte deterministic for a given
//! [`RENDER_VERSION`]: the kernel uses only IEEE-754 arithmetic (no libm calls, no fused
//! multiply-add), so the same tile renders to the same bytes on every machine, which is what
//! lets caches and strong ETags key on the tile id alone. That holds across the kernel's
//! instruction-set paths too ([`KernelPath`]: baseline SSE2, AVX2, AVX-512, picked at run
//! time by CPU feature detection): they differ only in how many pixels share a vector, and
//! `tests/kernel_paths.rs` renders the fixed tile set through each and compares.
//!
//! Layout:
//! - [`tile`]: slippy-map coordinates, their validation, and the viewport each one covers;
//! - [`kernel`]: the escape-time iteration, several pixels at a time, and its run-time
//!   choice of SIMD path (the crate's only `unsafe`);
//! - [`palette`]: the fixed set of colour styles, each a palette of 256 colours;
//! - [`Pixels`] (`pixels.rs`): one rendered image, palette indices and their style;
//! - [`encode`]: palette indices to an 8-bit paletted PNG.

#[doc(hidden)]
pub mod bench_support;
pub mod encode;
pub mod kernel;
pub mod palette;
mod pixels;
pub mod tile;

pub use encode::{EncodeError, Encoding, IEND, MAX_TILE_BYTES, NotATile, check_tile};
pub use kernel::KernelPath;
pub use palette::{PALETTE_SIZE, Palette, STYLES, Style, UnknownStyle};
pub use pixels::Pixels;
pub use tile::{MaxZoom, TILE_SIZE, TileError, TileId, TileRange, Viewport};

/// Identifies the renderer's output. Bump it whenever a change alters any tile's bytes
/// (kernel, iteration budget, palette, encoder settings): caches key on it, and the ETag
/// carries it, so clients and shared caches never mix tiles from two renderers.
/// The golden-hash test in `tests/golden.rs` fails when the bytes change, as a reminder.
/// `r3`: 8-bit paletted PNG, DEFLATE `Balanced` (r2: the same pixels at `High`, whose encode
/// grew to a third of a render once the kernel got faster; r1 was 24-bit RGB).
pub const RENDER_VERSION: &str = "r3";

/// What a render is keyed on everywhere (caches, queue messages, seeds): a tile and the
/// style it is drawn in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileKey {
    /// The tile.
    pub tile: TileId,
    /// Its colour style.
    pub style: Style,
}

impl std::fmt::Display for TileKey {
    /// `style/z/x/y`, as in logs and Redis keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.tile;
        write!(f, "{}/{}/{}/{}", self.style, t.z(), t.x(), t.y())
    }
}

/// Why a render produced no tile.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The caller's cancellation check returned true part-way through.
    #[error("render cancelled")]
    Cancelled,
    /// The PNG encoder failed (it does not for valid RGB buffers; kept for honesty).
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Renders the tile's pixels, calling `cancelled` once per row and giving up with
/// [`RenderError::Cancelled`] as soon as it returns true. The check is how a caller whose
/// deadline passed (or whose client went away) reclaims the CPU: a blocking render cannot
/// otherwise be interrupted. Runs the fastest kernel path the CPU has ([`KernelPath::best`]).
pub fn render_pixels(
    tile: TileId,
    style: Style,
    cancelled: &dyn Fn() -> bool,
) -> Result<Pixels, RenderError> {
    render_pixels_with(KernelPath::best(), tile, style, cancelled)
}

/// [`render_pixels`] on a chosen kernel path (for tests and benchmarks: every path gives the
/// same pixels). A path this machine cannot run falls back to [`KernelPath::Baseline`].
pub fn render_pixels_with(
    path: KernelPath,
    tile: TileId,
    style: Style,
    cancelled: &dyn Fn() -> bool,
) -> Result<Pixels, RenderError> {
    let viewport = tile.viewport();
    let step = viewport.pixel_size();
    let size = TILE_SIZE as usize;
    let mut indices = vec![0u8; size * size];
    for (row, out) in indices.chunks_exact_mut(size).enumerate() {
        if cancelled() {
            return Err(RenderError::Cancelled);
        }
        let row = kernel::Row {
            min_re: viewport.min_re(),
            step,
            // Pixel centres: row 0 is the top (largest imaginary part), as on a slippy map.
            ci: viewport.max_im() - (row as f64 + 0.5) * step,
            max_iterations: kernel::max_iterations(tile.z()),
        };
        path.row_indices(&row, out);
    }
    Ok(Pixels::new(indices, style))
}

/// Renders and encodes one tile with the default [`Encoding`]: the whole job a cache miss does.
pub fn render_tile(
    tile: TileId,
    style: Style,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<u8>, RenderError> {
    let pixels = render_pixels(tile, style, cancelled)?;
    Ok(Encoding::default().encode(&pixels)?)
}
