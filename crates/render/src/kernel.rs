//! The escape-time kernel: iterate `z ← z² + c` for many pixels at once.
//!
//! Pixels stream through a fixed number of lanes (plain arrays updated in lock-step, which
//! the compiler turns into SIMD); a lane whose pixel escapes or runs out of budget takes the
//! next pixel, so one slow pixel never holds idle lanes back. Iterations run in rounds of
//! [`ROUND`]: each round first runs without any per-iteration test and is kept if no lane
//! crossed the bailout; otherwise it is redone one iteration at a time, so every pixel sees
//! exactly the floating-point operations of a naive loop and gets exactly its escape count
//! and final `z` (see [`iterate`]). Points in the main cardioid or the period-2 bulb never
//! escape: a closed-form test settles them without iterating, which is where a naive
//! renderer spends most of its time at low zoom.
//!
//! The lane loops are compiled once per [`KernelPath`]: for the target's baseline (SSE2 on
//! x86-64, what the release binary targets) and, chosen at run time, for AVX2 and AVX-512.
//! Only IEEE-754 `+ - × ÷` and `sqrt` are used, never a fused multiply-add (no path enables
//! the `fma` feature, and Rust never contracts `a * b + c` on its own), so every path and
//! platform computes the same bits.

/// Lanes of the baseline path, and of [`escape_lanes`].
pub const LANES: usize = 8;

/// Lanes of the AVX2 path (four vectors of four f64: enough independent work to hide the
/// latency of each iteration's dependent multiply and adds).
const AVX2_LANES: usize = 16;

/// Lanes of the AVX-512 path (two vectors of eight f64).
const AVX512_LANES: usize = 16;

/// Iterations per round: how often the lanes are checked for escape.
const ROUND: u32 = 8;

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

/// A point to iterate, `cr + ci·i`; `id` comes back with its [`Escape`].
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// The caller's name for the point (a pixel's index, say).
    pub id: usize,
    /// Real part of `c`.
    pub cr: f64,
    /// Imaginary part of `c`.
    pub ci: f64,
}

/// One point's outcome: iterations before escape and `|z|²` at escape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Escape {
    iterations: u32,
    norm_sq: f64,
}

impl Escape {
    /// Iterations the point took to escape; the budget or more means it never did.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The smooth (continuous) escape count, or `None` for points in the set.
    ///
    /// `n + 1 - log2(log2 |z|)`: removes the banding of the integer count. Computed with
    /// [`log2`] below rather than `f64::log2`, whose libm implementation may differ
    /// between platforms in the last bit, which would break byte-for-byte determinism.
    pub fn smooth(&self, max_iterations: u32) -> Option<f64> {
        let n = self.iterations;
        if n >= max_iterations {
            return None;
        }
        let log2_abs_z = 0.5 * log2(self.norm_sq);
        Some(f64::from(n) + 1.0 - log2(log2_abs_z))
    }
}

/// The outcome for each of [`LANES`] points.
#[derive(Debug, Clone, Copy)]
pub struct Escapes([Escape; LANES]);

impl Escapes {
    /// Iterations lane `l` took to escape; `max_iterations` or more means it never did.
    pub fn iterations(&self, l: usize) -> u32 {
        self.0[l].iterations()
    }

    /// The smooth escape count of lane `l`, or `None` for points in the set
    /// ([`Escape::smooth`]).
    pub fn smooth(&self, l: usize, max_iterations: u32) -> Option<f64> {
        self.0[l].smooth(max_iterations)
    }
}

/// Iterates the [`LANES`] points `cr[l] + ci·i` for up to `max_iterations`, on the
/// baseline path.
pub fn escape_lanes(cr: [f64; LANES], ci: f64, max_iterations: u32) -> Escapes {
    let never = Escape {
        iterations: max_iterations,
        norm_sq: 0.0,
    };
    let mut escapes = [never; LANES];
    let mut points = cr
        .into_iter()
        .enumerate()
        .map(|(id, cr)| Point { id, cr, ci });
    KernelPath::Baseline.iterate(max_iterations, &mut || points.next(), &mut |id, e| {
        escapes[id] = e
    });
    Escapes(escapes)
}

/// Which instruction set the kernel runs with. Every path computes exactly the same
/// IEEE-754 operations on every pixel (wider vectors only run more pixels at once, and no
/// path fuses a multiply and an add), so all give byte-for-byte the same tiles;
/// `tests/kernel_paths.rs` checks it on the fixed tile set.
///
/// The release binary targets baseline x86-64 (SSE2); the wider paths are compiled as
/// `#[target_feature]` functions and chosen at run time by [`KernelPath::best`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// The target's baseline vectors (SSE2 on x86-64: two f64 a vector), [`LANES`] lanes.
    Baseline,
    /// AVX2 (four f64 a vector), 16 lanes. x86-64 only.
    Avx2,
    /// AVX-512F (eight f64 a vector), 16 lanes. x86-64 only.
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

    /// Iterates every point `points` yields (until it yields `None`) for up to
    /// `max_iterations`, handing each outcome to `results` with the point's id, in no
    /// particular order. A path this machine cannot run falls back to the baseline.
    ///
    /// The crate's only `unsafe`: calling a `#[target_feature]` function is sound only on a
    /// CPU with that feature, which is detected right before each call.
    #[allow(unsafe_code)]
    pub fn iterate(
        self,
        max_iterations: u32,
        points: &mut dyn FnMut() -> Option<Point>,
        results: &mut dyn FnMut(usize, Escape),
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 if std::arch::is_x86_feature_detected!("avx512f") => {
                // SAFETY: the CPU supports AVX-512F, checked on the line above.
                unsafe { iterate_avx512(max_iterations, points, results) }
            }
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 if std::arch::is_x86_feature_detected!("avx2") => {
                // SAFETY: the CPU supports AVX2, checked on the line above.
                unsafe { iterate_avx2(max_iterations, points, results) }
            }
            _ => iterate::<LANES>(max_iterations, points, results),
        }
    }
}

impl std::fmt::Display for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn iterate_avx2(
    max_iterations: u32,
    points: &mut dyn FnMut() -> Option<Point>,
    results: &mut dyn FnMut(usize, Escape),
) {
    iterate::<AVX2_LANES>(max_iterations, points, results);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn iterate_avx512(
    max_iterations: u32,
    points: &mut dyn FnMut() -> Option<Point>,
    results: &mut dyn FnMut(usize, Escape),
) {
    iterate::<AVX512_LANES>(max_iterations, points, results);
}

/// The next point that needs iterating; points the cardioid/bulb test settles go straight
/// to `results`.
#[inline(always)]
fn next_outside(
    max_iterations: u32,
    points: &mut dyn FnMut() -> Option<Point>,
    results: &mut dyn FnMut(usize, Escape),
) -> Option<Point> {
    loop {
        let p = points()?;
        if !in_cardioid_or_bulb(p.cr, p.ci) {
            return Some(p);
        }
        let never = Escape {
            iterations: max_iterations,
            norm_sq: 0.0,
        };
        results(p.id, never);
    }
}

/// An idle lane's count: it iterates `z = 0, c = 0` (which stays 0) and never reaches any
/// budget, so it is never taken for finished.
const IDLE: f64 = -1e300;

/// The kernel proper, for `N` lanes; `#[inline(always)]` so that each path's
/// `#[target_feature]` function compiles its own copy with that path's vector width.
///
/// Exactness: a round runs [`ROUND`] iterations on every lane with no test (a lane past the
/// bailout runs off to infinity or NaN). A lane that ends the round inside the bailout never
/// left it on the way: past the bailout `|z| > 256`, and with `|c| < 4` (every tile lies
/// within 4 of 0) `|z² + c| > |z|`, so a lane past it stays past it. A lane that ends the
/// round outside (or NaN) escaped during it: [`replay`] redoes its round one iteration at a
/// time from the round's start to find the exact count and `z`. Every busy lane starts each
/// round inside the bailout, since a lane hands in its result and takes the next point as
/// soon as its pixel escapes or uses its budget.
#[inline(always)]
fn iterate<const N: usize>(
    max_iterations: u32,
    points: &mut dyn FnMut() -> Option<Point>,
    results: &mut dyn FnMut(usize, Escape),
) {
    const { assert!(N <= 64, "the finished lanes are a u64's bits") };
    let max = f64::from(max_iterations);
    let round = f64::from(ROUND);
    let mut zr = [0.0f64; N];
    let mut zi = [0.0f64; N];
    let mut cr = [0.0f64; N];
    let mut ci = [0.0f64; N];
    // Iterations so far, as f64 (exact far beyond any budget) to stay in f64 vectors.
    let mut n = [IDLE; N];
    let mut id = [0usize; N];
    let mut busy = 0;
    for l in 0..N {
        if let Some(p) = next_outside(max_iterations, points, results) {
            (cr[l], ci[l], n[l], id[l]) = (p.cr, p.ci, 0.0, p.id);
            busy += 1;
        }
    }
    while busy > 0 {
        let (mut x, mut y) = (zr, zi);
        for _ in 0..ROUND {
            for l in 0..N {
                let (a, b) = (x[l], y[l]);
                x[l] = a * a - b * b + cr[l];
                y[l] = 2.0 * a * b + ci[l];
            }
        }
        // The lanes that escaped (a NaN counts: hence `!(<=)`) or used their budget.
        let mut finished = 0u64;
        for l in 0..N {
            let escaped = !(x[l] * x[l] + y[l] * y[l] <= BAILOUT_SQ);
            finished |= u64::from(escaped | (n[l] + round >= max)) << l;
        }
        let (start_r, start_i) = (zr, zi);
        (zr, zi) = (x, y);
        for count in &mut n {
            *count += round;
        }
        while finished != 0 {
            let l = finished.trailing_zeros() as usize;
            finished &= finished - 1;
            let mut norm_sq = zr[l] * zr[l] + zi[l] * zi[l];
            if !(norm_sq <= BAILOUT_SQ) {
                let steps;
                (steps, norm_sq) = replay(start_r[l], start_i[l], cr[l], ci[l]);
                n[l] += f64::from(steps) - round;
            }
            // A count in [0, budget + ROUND]: the cast is exact.
            let iterations = n[l] as u32;
            results(
                id[l],
                Escape {
                    iterations,
                    norm_sq,
                },
            );
            (zr[l], zi[l]) = (0.0, 0.0);
            if let Some(p) = next_outside(max_iterations, points, results) {
                (cr[l], ci[l], n[l], id[l]) = (p.cr, p.ci, 0.0, p.id);
            } else {
                (cr[l], ci[l], n[l]) = (0.0, 0.0, IDLE);
                busy -= 1;
            }
        }
    }
}

/// Redoes one round of a lane that escaped during it, from the round's start `a + b·i`
/// (inside the bailout), one checked iteration at a time: the iterations it took before
/// its `z` passed the bailout, and that `z`'s `|z|²`.
#[inline(always)]
fn replay(mut a: f64, mut b: f64, cr: f64, ci: f64) -> (u32, f64) {
    let mut steps = 0;
    while steps < ROUND {
        let (a2, b2) = (a * a, b * b);
        if a2 + b2 > BAILOUT_SQ {
            break;
        }
        (a, b) = (a2 - b2 + cr, 2.0 * a * b + ci);
        steps += 1;
    }
    (steps, a * a + b * b)
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
