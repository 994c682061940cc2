//! Tracking-API bodies (`POST /v1/<kind>` and `POST /v1/batch`) as the routes parse them.
#![no_main]
mod common;

use consentry::profiles::segment::{self, Kind};
use libfuzzer_sys::fuzz_target;

/// 2000-01-01T00:00:00Z, the earliest time a message may claim.
const EARLIEST_US: i64 = 946_684_800_000_000;

fn sane(m: &segment::Message) {
    let now = common::now();
    assert!(!m.message_id.is_empty());
    assert!(m.timestamp.unix_micros() >= EARLIEST_US);
    assert!(m.timestamp <= now.plus_seconds(24 * 3600));
    assert!(m.user_id.is_some() || m.anonymous_id.is_some());
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let now = common::now();
    match Kind::ALL.get(usize::from(selector) % 7) {
        Some(&kind) => {
            if let Ok(m) = segment::parse_single(kind, body, now) {
                assert_eq!(m.kind, kind);
                sane(&m);
            }
        }
        None => {
            if let Ok(batch) = segment::parse_batch(body, now) {
                assert!(!batch.is_empty());
                batch.iter().for_each(sane);
            }
        }
    }
});
