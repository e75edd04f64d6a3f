//! Names of the cache's keys and its channel: prefixed, so deployments (and tests) sharing a
//! Redis stay apart, and versioned with [`RENDER_VERSION`], so a new renderer never serves
//! an old tile. The seed keys in the state store are named in `seed/keys.rs`.

use fractile_render::{RENDER_VERSION, TileKey};

/// Key and channel names in the cache.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) prefix: String,
}

impl Keys {
    pub(crate) fn tile(&self, key: &TileKey) -> String {
        let t = key.tile;
        let (p, s) = (&self.prefix, key.style);
        format!("{p}tile:{RENDER_VERSION}:{s}:{}:{}:{}", t.z(), t.x(), t.y())
    }

    pub(crate) fn claim(&self, key: &TileKey) -> String {
        let t = key.tile;
        let (p, s) = (&self.prefix, key.style);
        format!(
            "{p}rendering:{RENDER_VERSION}:{s}:{}:{}:{}",
            t.z(),
            t.x(),
            t.y()
        )
    }

    pub(crate) fn ready_channel(&self) -> String {
        format!("{}tile-ready", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use fractile_render::{MaxZoom, Style, TileId};

    use super::*;

    #[test]
    fn keys_carry_the_prefix_the_render_version_and_the_whole_tile() {
        let keys = Keys {
            prefix: "fractile:".into(),
        };
        let key = TileKey {
            tile: TileId::new(5, 3, 4, MaxZoom::LIMIT).expect("valid"),
            style: Style::Fire,
        };
        let v = RENDER_VERSION;
        assert_eq!(keys.tile(&key), format!("fractile:tile:{v}:fire:5:3:4"));
        assert_eq!(
            keys.claim(&key),
            format!("fractile:rendering:{v}:fire:5:3:4")
        );
        assert_eq!(keys.ready_channel(), "fractile:tile-ready");
    }
}
