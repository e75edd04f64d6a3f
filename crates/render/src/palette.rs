//! The fixed set of colour styles. Each is a palette of 256 colours (index 0 for points
//! inside the set, 1..=255 a cyclic gradient sampled finely enough that no banding shows),
//! and the colouring maps a smooth escape count to an index: tiles are 8-bit paletted PNGs,
//! as map tile servers serve them.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

/// A colour scheme. The set is fixed so every (tile, style) pair can be cached and seeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Style {
    /// Deep blue through white to gold: the familiar look.
    #[default]
    Classic,
    /// Black through red and orange to pale yellow.
    Fire,
    /// Navy through teal to foam.
    Ocean,
    /// Shades of grey.
    Grayscale,
}

/// Every style, in a stable order.
pub const STYLES: [Style; 4] = [Style::Classic, Style::Fire, Style::Ocean, Style::Grayscale];

/// Gradient stops of each style, cycled as the escape count grows.
const CLASSIC: &[[u8; 3]] = &[
    [0, 7, 100],
    [32, 107, 203],
    [237, 255, 255],
    [255, 170, 0],
    [0, 2, 0],
];
const FIRE: &[[u8; 3]] = &[
    [20, 0, 0],
    [150, 20, 0],
    [240, 110, 10],
    [255, 230, 120],
    [120, 10, 0],
];
const OCEAN: &[[u8; 3]] = &[
    [2, 12, 40],
    [0, 80, 120],
    [40, 170, 170],
    [220, 250, 245],
    [10, 50, 90],
];
const GRAYSCALE: &[[u8; 3]] = &[[10, 10, 10], [128, 128, 128], [245, 245, 245], [90, 90, 90]];

/// Colour of points inside the set.
const INTERIOR: [u8; 3] = [0, 0, 0];

/// Entries in a style's palette: the interior colour and [`GRADIENT_STEPS`] gradient colours.
pub const PALETTE_SIZE: usize = 256;
/// The palette index of points inside the set.
pub const INTERIOR_INDEX: u8 = 0;
/// Gradient entries (indices 1..=255): one gradient cycle in 255 steps, so neighbouring
/// entries differ by at most a few levels per channel (`palette_steps_are_small` holds it).
const GRADIENT_STEPS: usize = PALETTE_SIZE - 1;

/// A style's colours, indexed by what [`Style::index`] returns.
pub type Palette = [[u8; 3]; PALETTE_SIZE];

static PALETTES: LazyLock<[Palette; STYLES.len()]> =
    LazyLock::new(|| STYLES.map(|style| style.build_palette()));

impl Style {
    /// The name used in URLs (`?style=`), cache keys and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Style::Classic => "classic",
            Style::Fire => "fire",
            Style::Ocean => "ocean",
            Style::Grayscale => "grayscale",
        }
    }

    /// The gradient's stops, cycled as the escape count grows.
    fn stops(self) -> &'static [[u8; 3]] {
        match self {
            Style::Classic => CLASSIC,
            Style::Fire => FIRE,
            Style::Ocean => OCEAN,
            Style::Grayscale => GRAYSCALE,
        }
    }

    /// The style's 256 colours (the PNG's `PLTE`).
    pub fn palette(self) -> &'static Palette {
        &PALETTES[self as usize]
    }

    /// The palette index for a smooth escape count (`None`: the point is in the set): the
    /// gradient step its [`Style::cycle_position`] falls in.
    pub fn index(smooth: Option<f64>) -> u8 {
        let Some(smooth) = smooth else {
            return INTERIOR_INDEX;
        };
        let position = Style::cycle_position(smooth);
        // In [0, 254]: `fract` is below 1, and `as` saturates anyway.
        let step = ((position * GRADIENT_STEPS as f64) as usize).min(GRADIENT_STEPS - 1);
        // At most 255 by the line above.
        (step + 1) as u8
    }

    /// Where in the gradient's cycle, in [0, 1), a smooth escape count falls. The position
    /// grows with the square root of the count, so colours cycle quickly far from the set and
    /// slowly near it, where counts run into the thousands. `sqrt` is correctly rounded by
    /// IEEE-754, so this stays deterministic.
    pub fn cycle_position(smooth: f64) -> f64 {
        (smooth.max(0.0).sqrt() * 0.25).fract()
    }

    /// The gradient's colour at `position` in [0, 1) of its cycle, interpolated between the
    /// two stops around it. The palette samples it at the middle of each of its 255 steps.
    pub fn gradient(self, position: f64) -> [u8; 3] {
        let stops = self.stops();
        let position = position * stops.len() as f64;
        let index = position as usize % stops.len();
        let t = position.fract();
        let (from, to) = (stops[index], stops[(index + 1) % stops.len()]);
        std::array::from_fn(|c| {
            let (a, b) = (f64::from(from[c]), f64::from(to[c]));
            // In [0, 255] by construction; `as` saturates anyway.
            (a + (b - a) * t + 0.5) as u8
        })
    }

    /// Entry 0 is the interior; entry `i` is the gradient at the middle of step `i - 1`.
    fn build_palette(self) -> Palette {
        std::array::from_fn(|i| {
            if i == usize::from(INTERIOR_INDEX) {
                return INTERIOR;
            }
            self.gradient(((i - 1) as f64 + 0.5) / GRADIENT_STEPS as f64)
        })
    }
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A style name that is not one of [`STYLES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown style {0:?}; expected one of classic, fire, ocean, grayscale")]
pub struct UnknownStyle(pub String);

impl FromStr for Style {
    type Err = UnknownStyle;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        STYLES
            .into_iter()
            .find(|style| style.name() == s)
            .ok_or_else(|| UnknownStyle(s.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_style_round_trips_through_its_name() {
        for style in STYLES {
            assert_eq!(style.name().parse::<Style>(), Ok(style));
        }
        assert!("Classic".parse::<Style>().is_err());
        assert!("".parse::<Style>().is_err());
    }

    #[test]
    fn interior_points_are_black_and_escaped_points_are_not_all_black() {
        for style in STYLES {
            let palette = style.palette();
            assert_eq!(palette[usize::from(Style::index(None))], INTERIOR);
            let lit =
                (0..100).map(|n| palette[usize::from(Style::index(Some(f64::from(n) * 0.7)))]);
            assert!(
                lit.into_iter()
                    .any(|c| c.iter().map(|&v| u32::from(v)).sum::<u32>() > 200)
            );
        }
    }

    #[test]
    fn each_style_has_its_own_palette() {
        // `palette` indexes the palettes built in `STYLES` order by the enum's discriminant.
        for (i, style) in STYLES.into_iter().enumerate() {
            assert_eq!(style as usize, i);
            assert_eq!(style.palette(), &style.build_palette());
        }
        assert_ne!(Style::Classic.palette(), Style::Fire.palette());
    }

    #[test]
    fn escaped_points_never_take_the_interior_index() {
        for n in 0..100_000 {
            let smooth = f64::from(n) * 0.173;
            assert_ne!(Style::index(Some(smooth)), INTERIOR_INDEX, "{smooth}");
        }
        assert_ne!(Style::index(Some(-1.0)), INTERIOR_INDEX);
        assert_ne!(Style::index(Some(f64::MAX)), INTERIOR_INDEX);
    }

    /// No banding: neighbouring gradient entries, the wrap from the last back to the first
    /// included (the gradient is cyclic), differ by at most 6 levels in any channel.
    #[test]
    fn palette_steps_are_small() {
        const MAX_STEP: u8 = 6;
        for style in STYLES {
            let gradient = &style.palette()[1..];
            let wrap = [gradient[gradient.len() - 1], gradient[0]];
            for (i, pair) in gradient.windows(2).chain([&wrap[..]]).enumerate() {
                for (c, (a, b)) in pair[0].iter().zip(pair[1]).enumerate() {
                    let step = a.abs_diff(b);
                    assert!(
                        step <= MAX_STEP,
                        "{style}: entries {} and {} differ by {step} in channel {c}",
                        i + 1,
                        i + 2
                    );
                }
            }
        }
    }
}
