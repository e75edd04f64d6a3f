//! What the service tests configure their apis, workers and stores with: the tiles' MAC
//! key ([`TILE_MAC_KEY`]) and settings under one test's prefix.

/// Command-line arguments of a `fractile-worker` using these services under `prefix` (keys
/// and queues), with `threads` render threads and its admin port on an ephemeral port. The
/// first item is the program name, as `clap::Parser::parse_from` expects.
pub fn worker_args(redis: &str, amqp: &str, prefix: &str, threads: usize) -> Vec<String> {
    let threads = threads.to_string();
    [
        "fractile-worker",
        "--amqp-url",
        amqp,
        "--redis-url",
        redis,
        "--queue-prefix",
        prefix,
        "--key-prefix",
        prefix,
        "--admin-listen",
        "127.0.0.1:0",
        "--render-threads",
        &threads,
        "--tile-mac-key",
        TILE_MAC_KEY,
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// The tiles' MAC key of the service tests' apis, workers and stores: every distributed test
/// signs and checks its tiles as a deployment does.
pub const TILE_MAC_KEY: &str = "tile-mac-key-of-the-service-tests-0123456789abcdef";

/// [`TILE_MAC_KEY`] as a setting.
pub fn tile_mac_key() -> fractile_settings::Secret {
    fractile_settings::Secret::new(TILE_MAC_KEY, fractile_tile_store::mac::MIN_KEY_BYTES)
        .expect("a valid key")
}

/// [`TILE_MAC_KEY`] as the stores take it.
pub fn tile_mac() -> fractile_tile_store::TileMac {
    fractile_tile_store::TileMac::new(tile_mac_key(), None)
}

/// Store settings for `redis` under `prefix`, with [`TILE_MAC_KEY`].
pub fn store_settings(redis: &str, prefix: &str) -> fractile_tile_store::StoreSettings {
    let mut settings = fractile_tile_store::StoreSettings::new(redis, prefix);
    settings.tile_mac = Some(tile_mac());
    settings
}
