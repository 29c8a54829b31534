//! What a quota allows: the limits of one scope (a tenant, or a key), the
//! overrides stored for it, and the cost of each call in units.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

/// The limits of one scope; `None`: no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Units a second, refilled continuously (GCRA).
    pub(crate) rate: Option<NonZeroU32>,
    /// Units that may be spent at once from a full bucket (with a rate;
    /// without one, the rate itself: a second's worth).
    pub(crate) burst: Option<NonZeroU32>,
    /// Calls in flight at once (every call but WatchNotes).
    pub(crate) calls: Option<NonZeroU32>,
    /// WatchNotes streams open at once.
    pub(crate) watchers: Option<NonZeroU32>,
    /// Database connections held at once by the scope's calls.
    pub(crate) connections: Option<NonZeroU32>,
}

impl Limits {
    /// No limit at all.
    pub(crate) const NONE: Self = Self {
        rate: None,
        burst: None,
        calls: None,
        watchers: None,
        connections: None,
    };

    /// The units a full bucket holds: the burst, else the rate.
    pub(crate) fn bucket(&self) -> Option<(NonZeroU32, NonZeroU32)> {
        self.rate.map(|rate| (rate, self.burst.unwrap_or(rate)))
    }

    /// These limits with the `changes` of an override applied.
    pub(crate) fn with(self, changes: &Override) -> Self {
        let apply = |default: Option<NonZeroU32>, stored: Option<u32>| match stored {
            None => default,
            Some(value) => NonZeroU32::new(value),
        };
        Self {
            rate: apply(self.rate, changes.rate),
            burst: apply(self.burst, changes.burst),
            calls: apply(self.calls, changes.calls),
            watchers: apply(self.watchers, changes.watchers),
            connections: apply(self.connections, changes.connections),
        }
    }
}

/// The names of the limits, as `--tenant-quota`, `--key-quota` and
/// `notesd quotas set` spell them.
const NAMES: [&str; 5] = ["rate", "burst", "calls", "watchers", "connections"];

/// `rate=1000,burst=2000,calls=64,watchers=100,connections=4`; a limit
/// left out stays as it was, `none` (or 0) lifts it.
impl FromStr for Override {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut changes = Self::default();
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not name=value"))?;
            let value = match value.trim() {
                "none" => 0,
                number => number.parse::<u32>().map_err(|_| {
                    format!(
                        "{name}: `{number}` is not a whole number from 0 to 4294967295 or `none`"
                    )
                })?,
            };
            let slot = match name.trim() {
                "rate" => &mut changes.rate,
                "burst" => &mut changes.burst,
                "calls" => &mut changes.calls,
                "watchers" => &mut changes.watchers,
                "connections" => &mut changes.connections,
                other => {
                    return Err(format!(
                        "unknown limit `{other}`: the limits are {}",
                        NAMES.join(", ")
                    ));
                }
            };
            *slot = Some(value);
        }
        Ok(changes)
    }
}

/// Changes to the limits of a scope, as stored (`quota_overrides`): each
/// `None` keeps the default, `Some(0)` lifts the limit, `Some(n)` sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Override {
    pub rate: Option<u32>,
    pub burst: Option<u32>,
    pub calls: Option<u32>,
    pub watchers: Option<u32>,
    pub connections: Option<u32>,
}

/// `rate=1000 burst=default ...`, as `notesd quotas show` prints it.
impl fmt::Display for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = [
            self.rate,
            self.burst,
            self.calls,
            self.watchers,
            self.connections,
        ];
        for (i, (name, value)) in NAMES.iter().zip(values).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            match value {
                None => write!(f, "{name}=default")?,
                Some(0) => write!(f, "{name}=none")?,
                Some(value) => write!(f, "{name}={value}")?,
            }
        }
        Ok(())
    }
}

/// Units of a call that reads or writes `items` notes (a batch, a page),
/// `per_unit` of them a unit: at least one.
pub(crate) fn units_for(items: usize, per_unit: usize) -> u32 {
    u32::try_from(items.div_ceil(per_unit).max(1)).unwrap_or(u32::MAX)
}

/// The cost table (docs/quotas.md, "What a call costs"). Every call takes
/// one unit before its body is read; these take the rest once it is.
pub(crate) mod cost {
    /// A search (either order).
    pub(crate) const SEARCH: u32 = 10;
    /// A purge.
    pub(crate) const PURGE: u32 = 10;
    /// Notes of a batch call in one unit.
    pub(crate) const BATCH_NOTES_PER_UNIT: usize = 10;
    /// Notes of a page (page_size) in one unit.
    pub(crate) const PAGE_NOTES_PER_UNIT: usize = 100;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(value: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(value)
    }

    #[test]
    fn overrides_parse_apply_and_print() {
        let changes: Override = "rate=100, burst=200,calls=none".parse().unwrap();
        assert_eq!(
            changes,
            Override {
                rate: Some(100),
                burst: Some(200),
                calls: Some(0),
                watchers: None,
                connections: None,
            }
        );
        let defaults = Limits {
            calls: n(64),
            watchers: n(10),
            ..Limits::NONE
        };
        let limits = defaults.with(&changes);
        assert_eq!(limits.rate, n(100));
        assert_eq!(limits.bucket(), Some((n(100).unwrap(), n(200).unwrap())));
        assert_eq!(limits.calls, None, "none lifts the default");
        assert_eq!(limits.watchers, n(10), "left out keeps the default");
        assert_eq!(
            changes.to_string(),
            "rate=100 burst=200 calls=none watchers=default connections=default"
        );
        assert!(
            "speed=4"
                .parse::<Override>()
                .unwrap_err()
                .contains("unknown limit")
        );
        assert!("rate=-1".parse::<Override>().is_err());
        assert!("rate".parse::<Override>().is_err());
    }

    #[test]
    fn a_rate_without_a_burst_bursts_a_seconds_worth() {
        let limits = Limits {
            rate: n(50),
            ..Limits::NONE
        };
        assert_eq!(limits.bucket(), Some((n(50).unwrap(), n(50).unwrap())));
        assert_eq!(units_for(0, 10), 1);
        assert_eq!(units_for(10, 10), 1);
        assert_eq!(units_for(11, 10), 2);
        assert_eq!(units_for(1000, 100), 10);
    }
}
