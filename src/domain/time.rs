//! The instants a note may name: those of a protobuf `Timestamp`, from
//! 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z, on every edge.
//! PostgreSQL's `timestamptz` holds more (and chrono more still), but a
//! time outside this range cannot be answered to a gRPC client, and one
//! outside PostgreSQL's failed as an internal error: so every edge checks
//! it, naming its field.

use chrono::{DateTime, Utc};

/// The first second of year 1, as a Unix time.
const EARLIEST_SECONDS: i64 = -62_135_596_800;
/// The last second of year 9999, as a Unix time.
const LATEST_SECONDS: i64 = 253_402_300_799;

/// Whether `t` is within the range above.
pub(crate) fn in_range(t: DateTime<Utc>) -> bool {
    (EARLIEST_SECONDS..=LATEST_SECONDS).contains(&t.timestamp())
}

/// The range, for the message of a time outside it.
pub(crate) const RANGE: &str = "between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_a_protobuf_timestamp_s() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert!(in_range(at("0001-01-01T00:00:00Z")));
        assert!(in_range(at("9999-12-31T23:59:59.999999999Z")));
        assert!(!in_range(at("0000-12-31T23:59:59Z")));
        assert!(!in_range(
            DateTime::from_timestamp(LATEST_SECONDS + 1, 0).unwrap()
        ));
        assert!(!in_range(
            DateTime::from_timestamp(-8_000_000_000_000, 0).unwrap()
        ));
    }
}
