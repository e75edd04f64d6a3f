//! Fuzzes the render-job decoder, [`RenderJob::decode`], on arbitrary message bodies (a
//! worker reads them off the broker). Properties:
//!
//! - a decoded job re-encodes to bytes that decode to the same job, and encoding is stable
//!   (encode, decode, encode gives the same bytes);
//! - a job whose tile validates ([`RenderJob::key`]) names exactly that tile and style, and a
//!   job built from the key validates to the same key;
//! - the time helpers a worker calls on any job never panic.

#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fractile_queue::{InvalidJob, RenderJob};
use fractile_render::{MaxZoom, TileId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(job) = RenderJob::decode(data) else {
        return;
    };
    let bytes = job.encode();
    let back = RenderJob::decode(&bytes).expect("a re-encoded job decodes");
    assert_eq!(back, job, "the wire form lost something");
    assert_eq!(back.encode(), bytes, "encoding is not stable");

    match job.key() {
        Ok(key) => {
            let t = key.tile;
            assert_eq!((t.z(), t.x(), t.y()), (job.z, job.x, job.y));
            assert_eq!(key.style.name(), job.style);
            assert!(TileId::new(job.z, job.x, job.y, MaxZoom::LIMIT).is_ok());
            assert_eq!(job.message_id(), key.to_string());
            let rebuilt = RenderJob::bulk(&key, "seed");
            let rebuilt = RenderJob::decode(&rebuilt.encode()).expect("a new job decodes");
            assert_eq!(rebuilt.key().expect("a new job validates"), key);
        }
        Err(InvalidJob::UnknownFormat(format)) => assert_ne!(format, 1),
        Err(InvalidJob::InvalidTile(_)) => {
            let tile_ok = TileId::new(job.z, job.x, job.y, MaxZoom::LIMIT).is_ok();
            assert!(!tile_ok, "a valid tile refused: {job:?}");
        }
        Err(InvalidJob::InvalidStyle(_)) => {
            let tile_ok = TileId::new(job.z, job.x, job.y, MaxZoom::LIMIT).is_ok();
            let style_ok = job.style.parse::<fractile_render::Style>().is_ok();
            assert!(tile_ok && !style_ok, "a valid style refused: {job:?}");
        }
        Err(other) => panic!("key() answered {other}"),
    }

    for now in [
        UNIX_EPOCH,
        SystemTime::now(),
        UNIX_EPOCH + Duration::from_secs(1 << 40),
    ] {
        let _ = job.expired(now);
        let _ = job.queued_for(now);
    }
});
