//! What makes bytes read back from the cache a tile this deployment rendered.
//!
//! Anything that can write to the cache Redis could otherwise make every replica serve its
//! bytes as a tile, `immutable`, to browsers and CDNs for a day: `SET
//! fractile:tile:r3:fire:5:9:13 '<script>…'` was served as `200 image/png` by every replica,
//! and kept in their L1 after the key was deleted. Two checks, on every value read:
//!
//! - **its shape** ([`fractile_render::check_tile`]): a 256 × 256 8-bit paletted PNG of at
//!   most the largest size the encoder writes, ending with `IEND`. Always.
//! - **a keyed MAC** ([`TileMac`], when `FRACTILE_TILE_MAC_KEY` is set, as the compose stack,
//!   the local topology and the Kubernetes manifests do): HMAC-SHA256 under a key the api
//!   and the workers share, over the render version, the tile's key and its bytes, stored
//!   after the PNG. Only a holder of the key can make a value pass, and a real tile copied
//!   under another key fails. It costs about 9 µs per 13 KB tile on the machine the
//!   figures are from, paid when an L2 hit fills L1 (`loadtests/reports/l2-hit/`).
//!
//! A value is a PNG, or a PNG followed by its 32-byte tag: the PNG's last chunk (`IEND`)
//! tells where it ends. A reader with the key refuses a value without a valid tag; one
//! without a key checks the shape and drops a tag it cannot verify. A refused value is a
//! miss: the caller renders the tile again, and the value is deleted.

use bytes::Bytes;
use fractile_render::{IEND, NotATile, RENDER_VERSION, TileKey, check_tile};
use fractile_settings::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of the tag stored after a tile's PNG.
pub const TAG_BYTES: usize = 32;

/// Shortest MAC key accepted: 32 bytes, the hash's own size.
pub const MIN_KEY_BYTES: usize = 32;

/// Why a value read from the cache is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a tile's shape (garbage, another image, cut short).
    #[error("not a tile: {0}")]
    NotATile(#[from] NotATile),
    /// A tile without a tag, where the deployment has a key (written by a process without
    /// it, or before it had one).
    #[error("no MAC, and this deployment signs its tiles")]
    Unsigned,
    /// A tag that no key of this deployment made for this tile (written by someone without
    /// the key, or copied from another tile).
    #[error("its MAC does not match")]
    WrongMac,
}

/// The MAC key of a deployment's tiles, and the one it replaces while a rotation rolls out.
#[derive(Clone, Debug)]
pub struct TileMac {
    current: Secret,
    previous: Option<Secret>,
}

impl TileMac {
    /// Signs with `current`; accepts tags of `current` or of `previous`.
    pub fn new(current: Secret, previous: Option<Secret>) -> Self {
        TileMac { current, previous }
    }

    /// `png` with its tag appended: what the cache stores.
    pub fn seal(&self, key: &TileKey, png: &[u8]) -> Vec<u8> {
        let mut value = Vec::with_capacity(png.len() + TAG_BYTES);
        value.extend_from_slice(png);
        value.extend_from_slice(&tag(&self.current, key, png).finalize().into_bytes());
        value
    }

    /// The PNG of `value` if its tag is one this deployment made for `key`.
    pub fn open(&self, key: &TileKey, value: Bytes) -> Result<Bytes, Refusal> {
        let (png, tag_bytes) = split(&value)?;
        let Some(tag_bytes) = tag_bytes else {
            return Err(Refusal::Unsigned);
        };
        let made_by = |secret: &Secret| tag(secret, key, png).verify_slice(tag_bytes).is_ok();
        if !made_by(&self.current) && !self.previous.as_ref().is_some_and(made_by) {
            return Err(Refusal::WrongMac);
        }
        check_tile(png)?;
        Ok(value.slice(..png.len()))
    }
}

/// The PNG of `value` for a reader without a key: its shape is checked, a tag it cannot
/// verify is dropped.
pub fn open_unkeyed(value: Bytes) -> Result<Bytes, Refusal> {
    let (png, _) = split(&value)?;
    check_tile(png)?;
    Ok(value.slice(..png.len()))
}

/// The PNG of a value and its tag, if it has one.
fn split(value: &[u8]) -> Result<(&[u8], Option<&[u8]>), Refusal> {
    if value.ends_with(IEND) {
        return Ok((value, None));
    }
    match value.split_at_checked(value.len().saturating_sub(TAG_BYTES)) {
        Some((png, tag)) if png.ends_with(IEND) => Ok((png, Some(tag))),
        _ => Err(Refusal::NotATile(NotATile::End)),
    }
}

/// The MAC of `png` as the tile `key` of this render version, under `secret`, ready to be
/// finished or verified.
fn tag(secret: &Secret, key: &TileKey, png: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose())
        .expect("HMAC accepts a key of any length");
    mac.update(b"fractile tile\0");
    mac.update(RENDER_VERSION.as_bytes());
    mac.update(b"\0");
    mac.update(key.to_string().as_bytes());
    mac.update(b"\0");
    mac.update(png);
    mac
}

#[cfg(test)]
mod tests {
    use fractile_render::{MaxZoom, Style, TileId, render_tile};

    use super::*;

    fn key(x: u32) -> TileKey {
        TileKey {
            tile: TileId::new(3, x, 2, MaxZoom::LIMIT).expect("valid"),
            style: Style::Fire,
        }
    }

    fn secret(fill: char) -> Secret {
        Secret::new(&fill.to_string().repeat(MIN_KEY_BYTES), MIN_KEY_BYTES).expect("valid")
    }

    fn png(k: &TileKey) -> Bytes {
        Bytes::from(render_tile(k.tile, k.style, &|| false).expect("renders"))
    }

    #[test]
    fn a_sealed_tile_opens_under_its_key_only() {
        let mac = TileMac::new(secret('a'), None);
        let (here, there) = (key(1), key(2));
        let sealed = Bytes::from(mac.seal(&here, &png(&here)));
        assert_eq!(mac.open(&here, sealed.clone()), Ok(png(&here)));
        // The same bytes under another tile's key: refused.
        assert_eq!(mac.open(&there, sealed.clone()), Err(Refusal::WrongMac));
        // Another deployment's key: refused; this one's while it rotates: accepted.
        let other = TileMac::new(secret('b'), None);
        assert_eq!(other.open(&here, sealed.clone()), Err(Refusal::WrongMac));
        let rotating = TileMac::new(secret('b'), Some(secret('a')));
        assert_eq!(rotating.open(&here, sealed.clone()), Ok(png(&here)));
        // No tag, or garbage: refused.
        assert_eq!(mac.open(&here, png(&here)), Err(Refusal::Unsigned));
        assert_eq!(
            mac.open(&here, Bytes::from_static(b"<script>alert(1)</script>")),
            Err(Refusal::NotATile(NotATile::End))
        );
        // A changed byte of the picture: refused.
        let mut tampered = sealed.to_vec();
        tampered[100] ^= 1;
        assert_eq!(
            mac.open(&here, Bytes::from(tampered)),
            Err(Refusal::WrongMac)
        );
    }

    #[test]
    fn a_reader_without_a_key_checks_the_shape_and_drops_the_tag() {
        let k = key(1);
        let sealed = Bytes::from(TileMac::new(secret('a'), None).seal(&k, &png(&k)));
        assert_eq!(open_unkeyed(sealed), Ok(png(&k)));
        assert_eq!(open_unkeyed(png(&k)), Ok(png(&k)));
        let mut html = b"<html>".to_vec();
        html.resize(4000, b' ');
        html.extend_from_slice(IEND);
        assert_eq!(
            open_unkeyed(Bytes::from(html)),
            Err(Refusal::NotATile(NotATile::Signature))
        );
    }
}
