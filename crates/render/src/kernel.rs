//! The escape-time kernel: iterate `z ← z² + c` for a group of pixels at once.
//!
//! The lanes are plain arrays updated in lock-step, which the compiler turns into SIMD.
//! Iterations run in rounds of `CHECK_EVERY` (8): a round first runs with no per-iteration
//! test and is kept if no lane crossed the bailout; only a round in which some lane escaped
//! is redone one iteration at a time with branch-free selects that freeze each lane at its
//! first `z` past the bailout (`escape` explains why this is exact). The group leaves the
//! loop once every lane has escaped or the budget is spent. Points in the main cardioid or
//! the period-2 bulb never escape: they are found with a closed-form test and never
//! iterated, which is where a naive renderer spends most of its time at low zoom.
//!
//! The same loop is compiled once per [`KernelPath`]: for the target's baseline (SSE2 on
//! x86-64, which the release binary targets; 8 lanes in 2-wide vectors) and, as
//! `#[target_feature]` functions chosen at run time, for AVX2 (8 lanes in 4-wide vectors)
//! and AVX-512F (16 lanes in 8-wide vectors). The lane counts are measured
//! (`loadtests/reports/kernel/`): more vectors per group keep more independent multiply/add
//! chains in flight, until the group's slowest pixel holds the others back or, with AVX2's
//! 16 registers, the arrays spill. Only IEEE-754 `+ - × ÷` and `sqrt` are used,
//! never a fused multiply-add (no path enables the `fma` feature, and Rust never contracts
//! `a * b + c` on its own), so every path and platform computes the same bits.

use crate::Style;

/// Pixels iterated together on the baseline path.
pub const LANES: usize = 8;

/// Iterations between "has every lane escaped?" checks.
const CHECK_EVERY: u32 = 8;

/// Squared escape radius. A large radius (256 rather than 2) makes the smooth colouring
/// continuous across iteration bands.
const BAILOUT_SQ: f64 = 256.0 * 256.0;

/// The iteration budget at zoom `z`: deeper tiles sit closer to the boundary, where points
/// take longer to escape, so the budget grows with zoom.
pub fn max_iterations(z: u8) -> u32 {
    256 + 96 * u32::from(z)
}

/// True when `c` lies in the main cardioid or the period-2 bulb (both never escape).
fn in_cardioid_or_bulb(re: f64, im: f64) -> bool {
    let im2 = im * im;
    let q = (re - 0.25) * (re - 0.25) + im2;
    let cardioid = q * (q + (re - 0.25)) <= 0.25 * im2;
    let bulb = (re + 1.0) * (re + 1.0) + im2 <= 1.0 / 16.0;
    cardioid || bulb
}

/// The outcome for each lane: iterations before escape and `|z|²` at escape.
#[derive(Debug, Clone, Copy)]
pub struct Escapes<const N: usize = LANES> {
    iterations: [u32; N],
    norm_sq: [f64; N],
}

impl<const N: usize> Escapes<N> {
    /// Iterations lane `l` took to escape; `max_iterations` or more means it never did.
    pub fn iterations(&self, l: usize) -> u32 {
        self.iterations[l]
    }

    /// The smooth (continuous) escape count of lane `l`, or `None` for points in the set.
    ///
    /// `n + 1 - log2(log2 |z|)`: removes the banding of the integer count. Computed with
    /// `log2` below rather than `f64::log2`, whose libm implementation may differ
    /// between platforms in the last bit, which would break byte-for-byte determinism.
    pub fn smooth(&self, l: usize, max_iterations: u32) -> Option<f64> {
        let n = self.iterations[l];
        if n >= max_iterations {
            return None;
        }
        let log2_abs_z = 0.5 * log2(self.norm_sq[l]);
        Some(f64::from(n) + 1.0 - log2(log2_abs_z))
    }
}

/// Iterates the [`LANES`] points `cr[l] + ci·i` for up to `max_iterations` (rounded up to a
/// multiple of `CHECK_EVERY` (8)) on the baseline path.
pub fn escape_lanes(cr: [f64; LANES], ci: f64, max_iterations: u32) -> Escapes {
    escape(&cr, ci, max_iterations)
}

/// Where a lane the cardioid/bulb test settled keeps its `z`: past the bailout, so every
/// step treats it as escaped and leaves it alone (its count is set to the budget instead).
const SETTLED: f64 = 1e10;

/// The kernel proper, for `N` lanes; `#[inline(always)]` so that each dispatch path's
/// `#[target_feature]` function compiles its own copy with that path's vector width.
///
/// Each round of `CHECK_EVERY` (8) iterations is first run without any per-iteration test
/// (escaped lanes run off to infinity or NaN in a scratch copy). If no lane that was still
/// iterating crossed the bailout by the end, the round is kept: a lane past the bailout only
/// moves further out (`|z| > 256` and `|c| < 4` give `|z² + c| > |z|`), so none crossed it
/// on the way either. Otherwise the round is redone one iteration at a time, freezing each
/// lane at its first `z` past the bailout. Either way every lane sees exactly the same
/// floating-point operations as a naive loop, so the results are identical.
#[inline(always)]
fn escape<const N: usize>(cr: &[f64; N], ci: f64, max_iterations: u32) -> Escapes<N> {
    let mut zr = [0.0f64; N];
    let mut zi = [0.0f64; N];
    let mut iterations = [0u64; N];
    let mut any_active = false;
    for l in 0..N {
        if in_cardioid_or_bulb(cr[l], ci) {
            zr[l] = SETTLED;
            iterations[l] = u64::from(max_iterations);
        } else {
            any_active = true;
        }
    }
    let mut done = 0;
    while done < max_iterations && any_active {
        let (mut x, mut y) = (zr, zi);
        for _ in 0..CHECK_EVERY {
            for l in 0..N {
                let (a, b) = (x[l], y[l]);
                x[l] = a * a - b * b + cr[l];
                y[l] = 2.0 * a * b + ci;
            }
        }
        // Whether some lane that was iterating is now past the bailout (or NaN).
        let mut crossed = false;
        for l in 0..N {
            let was = zr[l] * zr[l] + zi[l] * zi[l] <= BAILOUT_SQ;
            let is = x[l] * x[l] + y[l] * y[l] <= BAILOUT_SQ;
            crossed |= was & !is;
        }
        // The selects below write fresh arrays: written back in place (`zr[l] = if was {
        // x[l] } else { zr[l] }`), LLVM turns them into masked stores, which are slow on
        // AMD's AVX2 (`vmaskmovpd`).
        let (mut next_r, mut next_i, mut next_n) = ([0.0f64; N], [0.0f64; N], [0u64; N]);
        if !crossed {
            for l in 0..N {
                let was = zr[l] * zr[l] + zi[l] * zi[l] <= BAILOUT_SQ;
                next_r[l] = if was { x[l] } else { zr[l] };
                next_i[l] = if was { y[l] } else { zi[l] };
                next_n[l] = iterations[l] + if was { u64::from(CHECK_EVERY) } else { 0 };
            }
            (zr, zi, iterations) = (next_r, next_i, next_n);
        } else {
            for _ in 0..CHECK_EVERY {
                for l in 0..N {
                    let (a, b) = (zr[l], zi[l]);
                    let (a2, b2) = (a * a, b * b);
                    // A lane past the bailout stays past it, so `still` never turns true
                    // again: the lane's z freezes at its first value past the radius.
                    let still = a2 + b2 <= BAILOUT_SQ;
                    let (na, nb) = (a2 - b2 + cr[l], 2.0 * a * b + ci);
                    next_r[l] = if still { na } else { a };
                    next_i[l] = if still { nb } else { b };
                    next_n[l] = iterations[l] + u64::from(still);
                }
                (zr, zi, iterations) = (next_r, next_i, next_n);
            }
            any_active = false;
            for l in 0..N {
                any_active |= zr[l] * zr[l] + zi[l] * zi[l] <= BAILOUT_SQ;
            }
        }
        done += CHECK_EVERY;
    }
    Escapes {
        // At most the budget rounded up to a round of iterations, which fits a u32.
        iterations: iterations.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        norm_sq: std::array::from_fn(|l| zr[l] * zr[l] + zi[l] * zi[l]),
    }
}

/// Lanes per group on the AVX2 path (two vectors: 16 lanes spill AVX2's 16 registers).
const AVX2_LANES: usize = 8;

/// Lanes per group on the AVX-512 path (two vectors; one or four are slower).
const AVX512_LANES: usize = 16;

/// Which instruction set the kernel runs with. Every path computes exactly the same
/// IEEE-754 operations on every pixel (wider vectors only run more pixels at once, and no
/// path fuses a multiply and an add), so all give byte-for-byte the same tiles; the cross-path
/// test in `tests/kernel_paths.rs` checks it on the fixed tile set.
///
/// The release binary targets baseline x86-64 (SSE2); the wider paths are compiled as
/// `#[target_feature]` functions and chosen at run time by [`KernelPath::best`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// The target's baseline vectors (SSE2 on x86-64: two f64 lanes), [`LANES`] pixels a group.
    Baseline,
    /// AVX2 (four f64 lanes), 8 pixels a group (two vectors). x86-64 only.
    Avx2,
    /// AVX-512F (eight f64 lanes), 16 pixels a group (two vectors). x86-64 only.
    Avx512,
}

impl KernelPath {
    /// Every path, slowest first.
    pub const ALL: [KernelPath; 3] = [KernelPath::Baseline, KernelPath::Avx2, KernelPath::Avx512];

    /// Whether this machine can run the path (`std` caches the CPU feature detection, so
    /// this is a few loads).
    pub fn is_available(self) -> bool {
        match self {
            KernelPath::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            KernelPath::Avx2 | KernelPath::Avx512 => false,
        }
    }

    /// The paths this machine can run, slowest first.
    pub fn available() -> Vec<KernelPath> {
        KernelPath::ALL
            .into_iter()
            .filter(|p| p.is_available())
            .collect()
    }

    /// The fastest path this machine can run: what [`render_pixels`](crate::render_pixels)
    /// uses.
    pub fn best() -> KernelPath {
        KernelPath::ALL
            .into_iter()
            .rev()
            .find(|p| p.is_available())
            .unwrap_or(KernelPath::Baseline)
    }

    /// A short lower-case name (`baseline`, `avx2`, `avx512`), as in bench ids.
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Baseline => "baseline",
            KernelPath::Avx2 => "avx2",
            KernelPath::Avx512 => "avx512",
        }
    }

    /// Writes the palette index of each pixel of `row` to `out` (one per pixel, `out.len()`
    /// a multiple of 16). A path the machine cannot run falls back to the baseline.
    ///
    /// The only `unsafe` in the crate: calling a `#[target_feature]` function is sound only
    /// on a CPU with that feature, which is detected right before each call.
    #[allow(unsafe_code)]
    pub(crate) fn row_indices(self, row: &Row, out: &mut [u8]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => {
                // SAFETY: the CPU supports AVX-512F, checked on the line above.
                unsafe { row_indices_avx512(row, out) }
            }
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 if std::arch::is_x86_feature_detected!("avx2") => {
                // SAFETY: the CPU supports AVX2, checked on the line above.
                unsafe { row_indices_avx2(row, out) }
            }
            _ => row_indices::<LANES>(row, out),
        }
    }
}

impl std::fmt::Display for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One row of a tile: pixel `k`'s point is `min_re + (k + 0.5)·step + ci·i`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    /// Left edge of the row.
    pub min_re: f64,
    /// Distance between neighbouring pixel centres.
    pub step: f64,
    /// The row's imaginary part.
    pub ci: f64,
    /// The tile's iteration budget.
    pub max_iterations: u32,
}

/// The whole row in groups of `N` pixels; inlined into each path's function so that the
/// kernel is compiled with that path's instructions.
#[inline(always)]
fn row_indices<const N: usize>(row: &Row, out: &mut [u8]) {
    for (group, out) in out.chunks_exact_mut(N).enumerate() {
        let first = group * N;
        let cr: [f64; N] =
            std::array::from_fn(|l| row.min_re + ((first + l) as f64 + 0.5) * row.step);
        let escapes = escape(&cr, row.ci, row.max_iterations);
        for (l, px) in out.iter_mut().enumerate() {
            *px = Style::index(escapes.smooth(l, row.max_iterations));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_indices_avx2(row: &Row, out: &mut [u8]) {
    row_indices::<AVX2_LANES>(row, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn row_indices_avx512(row: &Row, out: &mut [u8]) {
    row_indices::<AVX512_LANES>(row, out);
}

/// `log2(x)` for finite `x > 0`, from the exponent bits and a polynomial for the mantissa
/// (error below 1e-4, plenty for choosing a colour). Only +, × and bit operations, so the
/// result is identical on every IEEE-754 platform.
fn log2(x: f64) -> f64 {
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    // Mantissa m in [1, 2): keep the fraction bits, force the exponent to 0.
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    // log2(m) on [1, 2) via t = (m - 1) / (m + 1): log2(m) = 2/ln2 · (t + t³/3 + t⁵/5 + t⁷/7).
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let series = t * (1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0))));
    exponent as f64 + series * (2.0 / std::f64::consts::LN_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_is_close_to_the_real_thing() {
        for x in [1.0, 1.5, 1.999, 2.0, 3.7, 17.0, 65536.5, 1e9, 1e300, 0.3] {
            assert!((log2(x) - x.log2()).abs() < 1e-4, "log2({x})");
        }
    }

    #[test]
    fn points_in_the_set_never_escape_and_points_outside_do() {
        let max = max_iterations(0);
        // 0 and -0.1 lie in the cardioid, -1 in the period-2 bulb; 1, -2.5, 0.3 and 0.5
        // lie outside the set (0.3 only just, so it takes many iterations).
        let cr = [0.0, -1.0, 1.0, -2.5, 0.3, -0.1, 0.5, -0.75];
        let e = escape_lanes(cr, 0.0, max);
        assert!(e.iterations(0) >= max && e.iterations(1) >= max);
        assert_eq!(e.smooth(0, max), None);
        assert!(e.iterations(2) < 8, "1 escapes fast");
        assert!(e.iterations(3) < 8, "-2.5 escapes fast");
        assert!(e.iterations(6) < max, "0.5 is outside the set");
        let s = e.smooth(2, max).expect("escaped");
        assert!(s.is_finite() && s > 0.0);
    }

    #[test]
    fn the_shortcut_agrees_with_iteration() {
        // Points the closed-form test claims must really stay bounded for a long time.
        for (re, im) in [(0.2, 0.1), (-0.5, 0.5), (-1.1, 0.1), (0.0, 0.6)] {
            assert!(in_cardioid_or_bulb(re, im));
            let (mut x, mut y) = (0.0f64, 0.0f64);
            for _ in 0..10_000 {
                (x, y) = (x * x - y * y + re, 2.0 * x * y + im);
            }
            assert!(x * x + y * y <= 4.0, "{re}+{im}i");
        }
        assert!(!in_cardioid_or_bulb(0.3, 0.0));
    }
}
