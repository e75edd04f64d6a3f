//! The escape-time kernel: iterate `z ← z² + c` for [`LANES`] pixels at once.
//!
//! The lanes are plain arrays updated in lock-step with branch-free selects, which the
//! compiler turns into SIMD (two f64 lanes with SSE2, four with AVX2). Lanes that escape stop
//! changing but stay in the loop; the group leaves the loop once every lane has escaped,
//! checked only every [`CHECK_EVERY`] iterations so the test does not dominate. Points in the
//! main cardioid or the period-2 bulb never escape: they are found with a closed-form test and
//! never iterated, which is where a naive renderer spends most of its time at low zoom.

/// Pixels iterated together.
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
pub struct Escapes {
    iterations: [u32; LANES],
    norm_sq: [f64; LANES],
}

impl Escapes {
    /// Iterations lane `l` took to escape; `max_iterations` or more means it never did.
    pub fn iterations(&self, l: usize) -> u32 {
        self.iterations[l]
    }

    /// The smooth (continuous) escape count of lane `l`, or `None` for points in the set.
    ///
    /// `n + 1 - log2(log2 |z|)`: removes the banding of the integer count. Computed with
    /// [`log2`] below rather than `f64::log2`, whose libm implementation may differ
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
/// multiple of [`CHECK_EVERY`]).
pub fn escape_lanes(cr: [f64; LANES], ci: f64, max_iterations: u32) -> Escapes {
    let mut zr = [0.0f64; LANES];
    let mut zi = [0.0f64; LANES];
    let mut iterations = [0u32; LANES];
    let mut active = [false; LANES];
    for l in 0..LANES {
        if in_cardioid_or_bulb(cr[l], ci) {
            iterations[l] = max_iterations;
        } else {
            active[l] = true;
        }
    }
    let mut done = 0;
    while done < max_iterations && active.contains(&true) {
        for _ in 0..CHECK_EVERY {
            for l in 0..LANES {
                let (x, y) = (zr[l], zi[l]);
                let (x2, y2) = (x * x, y * y);
                // Once a lane's |z| passes the bailout it only grows, so `still` never
                // turns true again; the lane's z freezes at its first value past the radius.
                let still = active[l] && x2 + y2 <= BAILOUT_SQ;
                let (nx, ny) = (x2 - y2 + cr[l], 2.0 * x * y + ci);
                zr[l] = if still { nx } else { x };
                zi[l] = if still { ny } else { y };
                iterations[l] += u32::from(still);
                active[l] = still;
            }
        }
        done += CHECK_EVERY;
    }
    let norm_sq = std::array::from_fn(|l| zr[l] * zr[l] + zi[l] * zi[l]);
    Escapes {
        iterations,
        norm_sq,
    }
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
