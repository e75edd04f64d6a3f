//! The fixed set of colour styles, mapping a smooth escape count to an RGB colour.

use std::fmt;
use std::str::FromStr;

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

    fn stops(self) -> &'static [[u8; 3]] {
        match self {
            Style::Classic => CLASSIC,
            Style::Fire => FIRE,
            Style::Ocean => OCEAN,
            Style::Grayscale => GRAYSCALE,
        }
    }

    /// The colour for a smooth escape count (`None`: the point is in the set).
    ///
    /// The gradient position grows with the square root of the count, so colours cycle
    /// quickly far from the set and slowly near it, where counts run into the thousands.
    /// `sqrt` is correctly rounded by IEEE-754, so this stays deterministic.
    pub fn colour(self, smooth: Option<f64>) -> [u8; 3] {
        let Some(smooth) = smooth else {
            return INTERIOR;
        };
        let stops = self.stops();
        let position = (smooth.max(0.0).sqrt() * 0.25).fract() * stops.len() as f64;
        let index = position as usize % stops.len();
        let t = position.fract();
        let (from, to) = (stops[index], stops[(index + 1) % stops.len()]);
        std::array::from_fn(|c| {
            let (a, b) = (f64::from(from[c]), f64::from(to[c]));
            // In [0, 255] by construction; `as` saturates anyway.
            (a + (b - a) * t + 0.5) as u8
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
            assert_eq!(style.colour(None), INTERIOR);
            let lit = (0..100).map(|n| style.colour(Some(f64::from(n) * 0.7)));
            assert!(
                lit.into_iter()
                    .any(|c| c.iter().map(|&v| u32::from(v)).sum::<u32>() > 200)
            );
        }
    }
}
