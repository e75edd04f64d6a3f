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
#[derive(Debug, Clone)]
pub enum Schedule {
    /// The same rate throughout.
    Constant(f64),
    /// From the first rate to the second, linearly.
    Ramp(f64, f64),
    /// The base rate, multiplied by `factor` between 40 % and 60 % of the run.
    Spike { base: f64, factor: f64 },
    /// A rate given at points in time, straight lines between them (whatever the run's length).
    Profile(Profile),
}

impl Schedule {
    /// The rate at `t` seconds into a run of `duration` seconds.
    pub fn rate_at(&self, t: f64, duration: f64) -> f64 {
        let f = (t / duration).clamp(0.0, 1.0);
        match self {
            Schedule::Constant(r) => *r,
            Schedule::Ramp(from, to) => from + (to - from) * f,
            Schedule::Spike { base, factor } if (0.4..0.6).contains(&f) => base * factor,
            Schedule::Spike { base, .. } => *base,
            Schedule::Profile(profile) => profile.rate_at(t),
        }
    }

    /// When the arrival after the one due at `due` is due, if one is, for arrivals of
    /// `per_arrival` requests each.
    pub fn next_due(&self, due: f64, duration: f64, per_arrival: f64) -> Option<f64> {
        match self {
            // A profile may fall to zero and rise again: the next arrival is where its area
            // reaches one more arrival, not one gap at the current rate (which a zero rate
            // would stretch to the end of the run).
            Schedule::Profile(profile) => profile.time_of_area(due, per_arrival),
            // Each arrival one gap at the current rate after the last, with a floor on the
            // rate so a zero never stalls the run.
            _ => Some(due + per_arrival / self.rate_at(due, duration).max(0.1)),
        }
    }
}

/// Why a `--profile` was refused.
#[derive(Debug, PartialEq)]
pub enum ProfileError {
    /// A point is not `seconds:rate` with two numbers.
    Malformed(String),
    /// A time or rate is negative, infinite or not a number.
    OutOfRange(String),
    /// A point's time is not after the previous point's.
    NotIncreasing(String),
    /// Fewer than two points: no shape to follow.
    TooFewPoints,
}

impl std::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProfileError::Malformed(p) => write!(
                f,
                "profile point `{p}` is not seconds:rate (e.g. 0:40,60:400,120:40)"
            ),
            ProfileError::OutOfRange(p) => write!(
                f,
                "profile point `{p}`: seconds and rate must be finite and not negative"
            ),
            ProfileError::NotIncreasing(p) => write!(
                f,
                "profile point `{p}` is not later than the point before it"
            ),
            ProfileError::TooFewPoints => write!(f, "a profile needs at least two points"),
        }
    }
}

impl std::error::Error for ProfileError {}

/// A piecewise-linear arrival rate: (seconds, requests per second) points with increasing
/// times and rates of zero or more. Before the first point the first rate holds, after the
/// last the last.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    points: Vec<(f64, f64)>,
}

impl std::str::FromStr for Profile {
    type Err = ProfileError;

    /// Parses `seconds:rate,seconds:rate,...`, e.g. `0:40,60:400,180:400,240:40`.
    fn from_str(s: &str) -> Result<Profile, ProfileError> {
        let mut points: Vec<(f64, f64)> = Vec::new();
        for point in s.split(',').map(str::trim) {
            let parsed = point.split_once(':').and_then(|(t, r)| {
                Some((t.trim().parse::<f64>().ok()?, r.trim().parse::<f64>().ok()?))
            });
            let Some((t, rate)) = parsed else {
                return Err(ProfileError::Malformed(point.to_owned()));
            };
            if !(t.is_finite() && rate.is_finite() && t >= 0.0 && rate >= 0.0) {
                return Err(ProfileError::OutOfRange(point.to_owned()));
            }
            if points.last().is_some_and(|&(last, _)| t <= last) {
                return Err(ProfileError::NotIncreasing(point.to_owned()));
            }
            points.push((t, rate));
        }
        if points.len() < 2 {
            return Err(ProfileError::TooFewPoints);
        }
        Ok(Profile { points })
    }
}

impl Profile {
    /// The time of the last point: how long a run following the profile lasts by default.
    pub fn end(&self) -> f64 {
        self.points.last().map_or(0.0, |p| p.0)
    }

    /// The rate at `t` seconds.
    pub fn rate_at(&self, t: f64) -> f64 {
        let (first, last) = (self.points[0], self.points[self.points.len() - 1]);
        if t <= first.0 {
            return first.1;
        }
        self.points
            .windows(2)
            .find(|w| t <= w[1].0)
            .map_or(last.1, |w| {
                let ((t0, r0), (t1, r1)) = (w[0], w[1]);
                r0 + (r1 - r0) * (t - t0) / (t1 - t0)
            })
    }

    /// The earliest time after `from` by which `area` more requests are due (the integral of
    /// the rate from `from` reaches `area`), or `None` if it never does (the rate ends at 0).
    pub fn time_of_area(&self, from: f64, area: f64) -> Option<f64> {
        let mut left = area;
        let mut t = from;
        // Where the rate's slope changes from `from` on; after the last point it is flat.
        let breaks = self.points.iter().map(|p| p.0).filter(|&b| b > from);
        for end in breaks {
            let (r0, r1) = (self.rate_at(t), self.rate_at(end));
            let segment = (r0 + r1) / 2.0 * (end - t);
            if segment >= left {
                // Solve r0·d + k·d²/2 = left for d; this form is stable for any slope k,
                // and its denominator is positive because the segment holds `left` (> 0).
                let k = (r1 - r0) / (end - t);
                let root = (r0 * r0 + 2.0 * k * left).max(0.0).sqrt();
                return Some(t + 2.0 * left / (r0 + root));
            }
            left -= segment;
            t = end;
        }
        let tail = self.rate_at(t);
        (tail > 0.0).then(|| t + left / tail)
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

    fn profile(s: &str) -> Profile {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_profile_interpolates_between_its_points_and_holds_its_ends() {
        let p = profile("10:40, 70:400, 190:400, 250:40");
        assert_eq!(p.rate_at(0.0), 40.0);
        assert_eq!(p.rate_at(40.0), 220.0);
        assert_eq!(p.rate_at(100.0), 400.0);
        assert_eq!(p.rate_at(220.0), 220.0);
        assert_eq!(p.rate_at(1000.0), 40.0);
        assert_eq!(p.end(), 250.0);
    }

    #[test]
    fn a_profile_schedule_ignores_the_run_length() {
        let schedule = Schedule::Profile(profile("0:0,100:100"));
        assert_eq!(schedule.rate_at(50.0, 10.0), 50.0);
        assert_eq!(schedule.rate_at(50.0, 1000.0), 50.0);
    }

    #[test]
    fn profiles_that_are_not_increasing_points_of_two_numbers_are_refused() {
        let refused = |s: &str| s.parse::<Profile>().err();
        assert_eq!(
            refused("0:40,60:400,60:10"),
            Some(ProfileError::NotIncreasing("60:10".into()))
        );
        assert_eq!(
            refused("0:40,30:400,20:10"),
            Some(ProfileError::NotIncreasing("20:10".into()))
        );
        assert_eq!(
            refused("0:40,60:-1"),
            Some(ProfileError::OutOfRange("60:-1".into()))
        );
        assert_eq!(
            refused("-5:40,60:1"),
            Some(ProfileError::OutOfRange("-5:40".into()))
        );
        assert_eq!(
            refused("0:40,60:inf"),
            Some(ProfileError::OutOfRange("60:inf".into()))
        );
        assert_eq!(
            refused("0:40,60"),
            Some(ProfileError::Malformed("60".into()))
        );
        assert_eq!(
            refused("0:40,sixty:4"),
            Some(ProfileError::Malformed("sixty:4".into()))
        );
        assert_eq!(refused("0:40"), Some(ProfileError::TooFewPoints));
        assert!(refused("").is_some());
    }

    #[test]
    fn the_refusal_says_what_a_profile_looks_like() {
        let message = "0:1,x".parse::<Profile>().err().map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some("profile point `x` is not seconds:rate (e.g. 0:40,60:400,120:40)")
        );
    }

    /// Arrivals of `per_arrival` requests from a schedule, as the driver takes them.
    fn arrivals(schedule: &Schedule, duration: f64, per_arrival: f64) -> Vec<f64> {
        let mut due = 0.0;
        let mut times = Vec::new();
        while due < duration {
            times.push(due);
            match schedule.next_due(due, duration, per_arrival) {
                Some(next) => due = next,
                None => break,
            }
        }
        times
    }

    #[test]
    fn arrivals_of_a_profile_add_up_to_its_area() {
        // Rise (60 s averaging 220/s), plateau (120 s at 400/s), fall, then 60 s at 40/s.
        let p = profile("0:40,60:400,180:400,240:40,300:40");
        let area = 60.0 * 220.0 + 120.0 * 400.0 + 60.0 * 220.0 + 60.0 * 40.0;
        for per_arrival in [1.0, 12.0] {
            let n = arrivals(&Schedule::Profile(p.clone()), 300.0, per_arrival).len() as f64;
            let expected = area / per_arrival;
            assert!(
                (n - expected).abs() <= 1.0,
                "{n} arrivals, {expected} expected"
            );
        }
    }

    #[test]
    fn arrivals_of_a_profile_follow_its_rate_second_by_second() {
        let p = profile("0:40,60:400,180:400,240:40,300:40");
        let times = arrivals(&Schedule::Profile(p.clone()), 300.0, 1.0);
        for second in [0u32, 30, 59, 100, 200, 270] {
            let t = f64::from(second);
            let in_second = times.iter().filter(|&&a| a >= t && a < t + 1.0).count() as f64;
            let expected = (p.rate_at(t) + p.rate_at(t + 1.0)) / 2.0;
            assert!(
                (in_second - expected).abs() <= 1.0,
                "second {second}: {in_second} arrivals, {expected} expected"
            );
        }
    }

    #[test]
    fn a_profile_through_zero_pauses_arrivals_and_resumes_them() {
        let p = profile("0:10,10:0,20:0,30:10");
        let times = arrivals(&Schedule::Profile(p), 30.0, 1.0);
        assert!(
            times.iter().all(|&t| !(10.5..20.0).contains(&t)),
            "{times:?}"
        );
        assert!(
            times.iter().any(|&t| t >= 20.0),
            "arrivals resume after the pause"
        );
        // 50 requests before the pause and 50 after it.
        assert!((times.len() as f64 - 100.0).abs() <= 1.0, "{}", times.len());
    }

    #[test]
    fn a_profile_ending_at_zero_ends_the_arrivals() {
        let p = profile("0:10,10:0");
        assert_eq!(p.time_of_area(10.0, 1.0), None);
        let times = arrivals(&Schedule::Profile(p), 1000.0, 1.0);
        assert!(
            times.len() <= 51 && times.iter().all(|&t| t < 10.0),
            "{times:?}"
        );
    }
}
