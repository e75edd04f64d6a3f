//! Helpers shared by the capacity examples: a process's CPU time from `/proc`, percentiles
//! of a sample, and a small deterministic random sequence (the runs must be repeatable).

use std::time::Duration;

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
/// `ticks_per_second` is `getconf CLK_TCK` (100 on Linux unless the kernel says otherwise).
pub fn process_cpu(pid: u32, ticks_per_second: f64) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; the fields after its closing ')' do not.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat format"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
        anyhow::bail!("/proc/{pid}/stat has too few fields");
    };
    let ticks: f64 = utime.parse::<f64>()? + stime.parse::<f64>()?;
    Ok(Duration::from_secs_f64(ticks / ticks_per_second))
}

/// The `q` quantile (0..=1) of `sorted` by nearest rank; `None` for an empty sample.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// xorshift64*: enough randomness to pick sample tiles, and the same tiles on every run.
pub struct Rng(u64);

impl Rng {
    /// A sequence from `seed` (a zero seed is replaced: xorshift would stay at zero).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi - lo + 1) as u64;
        lo + (self.next_u64() % span) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_by_nearest_rank() {
        let sample: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&sample, 0.5), Some(50.0));
        assert_eq!(quantile(&sample, 0.99), Some(99.0));
        assert_eq!(quantile(&sample, 1.0), Some(100.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn ranges_stay_inside_their_bounds() {
        let mut rng = Rng::new(0);
        for _ in 0..10_000 {
            let v = rng.range(-2, 2);
            assert!((-2..=2).contains(&v));
        }
    }

    #[test]
    fn own_cpu_time_is_readable_and_grows() {
        let pid = std::process::id();
        let before = process_cpu(pid, 100.0).ok();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let after = process_cpu(pid, 100.0).ok();
        assert!(x > 0);
        assert!(after > before, "{before:?} then {after:?}");
    }
}
