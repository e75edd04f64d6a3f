//! What the load generator asks for (tile pickers) and when (arrival schedules).
//!
//! Map traffic is not uniform: a few places and shallow zoom levels get most views, and a
//! browser asks for a whole view of neighbouring tiles at once. `Browse` models that with
//! a Zipf choice of points of interest, a power law over zoom levels, small pans around the
//! point, and a 4×3 view per arrival.

use rand::RngExt;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};

/// Side of tile 0/0/0 and its top-left corner in the complex plane (as in fractile-render).
const WORLD: f64 = 4.0;
const ORIGIN_RE: f64 = -2.75;
const ORIGIN_IM: f64 = 2.0;

/// Places people look at, most popular first.
const POINTS_OF_INTEREST: &[(f64, f64)] = &[
    (-0.75, 0.1),          // seahorse valley
    (0.275, 0.0),          // elephant valley
    (-0.1, 0.65),          // the upper bulb's rim
    (-1.25, 0.0),          // the period-2 bulb's edge
    (-1.768, 0.0),         // the main antenna's mini-brot
    (-0.745_43, 0.113_02), // a spiral
    (-0.16, 1.04),         // the top antenna
    (0.38, 0.33),          // the right side
    (-1.94, 0.0),          // the antenna tip
    (-0.53, -0.62),        // the lower bulb
];

/// Which tiles a request asks for.
pub enum Picker {
    /// Map sessions: Zipf over points of interest, power law over zoom, 4×3 views.
    Browse {
        poi: Zipf<f64>,
        zooms: Vec<(u8, f64)>,
    },
    /// A small set of shallow tiles: all cached after the first requests.
    Hot,
    /// Every request a different deep tile: all misses.
    Cold { next: u64 },
}

impl Picker {
    /// Map sessions.
    pub fn browse() -> Picker {
        // P(z) ∝ 1 / (z + 1)^1.3 for z in 1..=14: shallow zooms dominate, deep ones still occur.
        let zooms = (1..=14u8)
            .map(|z| (z, 1.0 / f64::from(z + 1).powf(1.3)))
            .collect();
        let poi =
            Zipf::new(POINTS_OF_INTEREST.len() as f64, 1.1).expect("n ≥ 1 and s ≥ 0 are valid");
        Picker::Browse { poi, zooms }
    }

    /// Cold tiles starting at `offset`.
    pub fn cold(offset: u64) -> Picker {
        Picker::Cold { next: offset }
    }

    /// The paths of the next arrival: a whole view for browse, one tile otherwise.
    pub fn next(&mut self, rng: &mut SmallRng) -> Vec<String> {
        match self {
            Picker::Hot => {
                let i = rng.random_range(0..16u32);
                vec![format!("/tiles/2/{}/{}.png", i % 4, i / 4)]
            }
            Picker::Cold { next } => {
                // Zoom 11 around the set: a 920×920 band of tiles, each visited once.
                let n = *next;
                *next += 1;
                let (x, y) = (640 + n % 920, 562 + (n / 920) % 920);
                vec![format!("/tiles/11/{x}/{y}.png?style=ocean")]
            }
            Picker::Browse { poi, zooms } => {
                let (re, im) = POINTS_OF_INTEREST[(poi.sample(rng) as usize)
                    .saturating_sub(1)
                    .min(POINTS_OF_INTEREST.len() - 1)];
                let z = weighted(zooms, rng);
                let side = 1u64 << z;
                let size = WORLD / side as f64;
                // The tile under the point, panned by up to two tiles either way.
                let last = side as i64 - 1;
                let cx = (((re - ORIGIN_RE) / size).floor() as i64 + rng.random_range(-2..=2))
                    .clamp(0, last);
                let cy = (((ORIGIN_IM - im) / size).floor() as i64 + rng.random_range(-2..=2))
                    .clamp(0, last);
                let style = if rng.random_range(0..10) == 0 {
                    "?style=fire"
                } else {
                    ""
                };
                let mut view = Vec::with_capacity(12);
                for dy in -1..=1 {
                    for dx in -2..=1 {
                        let (x, y) = (cx + dx, cy + dy);
                        if (0..side as i64).contains(&x) && (0..side as i64).contains(&y) {
                            view.push(format!("/tiles/{z}/{x}/{y}.png{style}"));
                        }
                    }
                }
                view
            }
        }
    }
}

fn weighted(choices: &[(u8, f64)], rng: &mut SmallRng) -> u8 {
    let total: f64 = choices.iter().map(|c| c.1).sum();
    let mut pick = rng.random::<f64>() * total;
    for &(value, weight) in choices {
        if pick < weight {
            return value;
        }
        pick -= weight;
    }
    choices.last().map_or(0, |c| c.0)
}

/// Arrivals per second over the run.
#[derive(Debug, Clone, Copy)]
pub enum Schedule {
    /// The same rate throughout.
    Constant(f64),
    /// From the first rate to the second, linearly.
    Ramp(f64, f64),
    /// The base rate, multiplied by `factor` between 40 % and 60 % of the run.
    Spike { base: f64, factor: f64 },
}

impl Schedule {
    /// The rate at `t` seconds into a run of `duration` seconds.
    pub fn rate_at(&self, t: f64, duration: f64) -> f64 {
        let f = (t / duration).clamp(0.0, 1.0);
        match *self {
            Schedule::Constant(r) => r,
            Schedule::Ramp(from, to) => from + (to - from) * f,
            Schedule::Spike { base, factor } if (0.4..0.6).contains(&f) => base * factor,
            Schedule::Spike { base, .. } => base,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn browse_views_are_neighbouring_valid_tiles() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut picker = Picker::browse();
        for _ in 0..200 {
            let view = picker.next(&mut rng);
            assert!(!view.is_empty() && view.len() <= 12);
            for path in &view {
                let parts: Vec<&str> = path
                    .trim_start_matches("/tiles/")
                    .split(['/', '.'])
                    .collect();
                let (z, x, y): (u32, u64, u64) = (
                    parts[0].parse().unwrap_or(99),
                    parts[1].parse().unwrap_or(0),
                    parts[2].parse().unwrap_or(0),
                );
                assert!(z <= 14 && x < 1 << z && y < 1 << z, "{path}");
            }
        }
    }

    #[test]
    fn cold_tiles_never_repeat() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut picker = Picker::cold(0);
        let paths: std::collections::HashSet<String> =
            (0..5000).flat_map(|_| picker.next(&mut rng)).collect();
        assert_eq!(paths.len(), 5000);
    }

    #[test]
    fn schedules_shape_the_rate() {
        assert_eq!(Schedule::Ramp(10.0, 30.0).rate_at(5.0, 10.0), 20.0);
        let spike = Schedule::Spike {
            base: 10.0,
            factor: 5.0,
        };
        assert_eq!(spike.rate_at(1.0, 10.0), 10.0);
        assert_eq!(spike.rate_at(5.0, 10.0), 50.0);
    }
}
