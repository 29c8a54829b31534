//! One rate: a GCRA (generic cell rate algorithm) bucket of `burst` units
//! refilled at `rate` units a second, kept as one atomic "theoretical
//! arrival time" (TAT), lock-free.
//!
//! Besides taking units only when they are there ([`Bucket::take`]), a
//! bucket can be charged after the fact ([`Bucket::owe`]): the rest of a
//! call's cost, known only once its body is decoded, is taken whatever the
//! bucket holds, and a bucket charged past empty refuses every call until
//! the refill has paid for it. The `governor` crate's GCRA has no such
//! charge (a check that does not conform takes nothing), and with it the
//! rest of a costly call had to be refused after the call's first unit was
//! spent: a client retrying at full speed spent each refilled unit on a
//! call that was then refused, and its costly calls never ran.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A bucket; `Sync`, shared by every call of its scope.
#[derive(Debug)]
pub(super) struct Bucket {
    /// The origin of the times below.
    start: Instant,
    /// Nanoseconds a unit takes to come back (1 s / rate).
    unit_ns: u64,
    /// Nanoseconds a full bucket is worth (burst × `unit_ns`).
    full_ns: u64,
    burst: u32,
    /// When the bucket will be full again, in nanoseconds from `start`: at
    /// or before now, it is full.
    tat: AtomicU64,
}

/// What a bucket holds after a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Level {
    /// Units a full bucket holds.
    pub(super) burst: u32,
    /// Units left (0 when in debt).
    pub(super) remaining: u32,
    /// Until the bucket is full again.
    pub(super) full_in: Duration,
}

impl Bucket {
    pub(super) fn new(rate: u32, burst: u32) -> Self {
        let unit_ns = (1_000_000_000 / u64::from(rate.max(1))).max(1);
        let burst = burst.max(1);
        Self {
            start: Instant::now(),
            unit_ns,
            full_ns: unit_ns.saturating_mul(u64::from(burst)),
            burst,
            tat: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn cost_ns(&self, units: u32) -> u64 {
        self.unit_ns.saturating_mul(u64::from(units))
    }

    fn level(&self, tat: u64, now: u64) -> Level {
        let used = tat.saturating_sub(now);
        Level {
            burst: self.burst,
            remaining: u32::try_from(self.full_ns.saturating_sub(used) / self.unit_ns)
                .unwrap_or(u32::MAX)
                .min(self.burst),
            full_in: Duration::from_nanos(used),
        }
    }

    /// Takes `units` if the bucket holds them; else takes nothing and says
    /// how long until it will.
    pub(super) fn take(&self, units: u32) -> Result<Level, Duration> {
        let cost = self.cost_ns(units);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let now = self.now();
            let new = tat.max(now).saturating_add(cost);
            let used = new - now;
            if used > self.full_ns {
                return Err(Duration::from_nanos(used - self.full_ns));
            }
            match self
                .tat
                .compare_exchange_weak(tat, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(self.level(new, now)),
                Err(current) => tat = current,
            }
        }
    }

    /// Takes `units` whatever the bucket holds (see the module's comment).
    pub(super) fn owe(&self, units: u32) -> Level {
        let cost = self.cost_ns(units);
        let now = self.now();
        let previous = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.max(now).saturating_add(cost))
            })
            .unwrap_or_else(|tat| tat);
        self.level(previous.max(now).saturating_add(cost), now)
    }

    /// Gives back `units` taken for a call that another bucket refused.
    pub(super) fn give_back(&self, units: u32) {
        let cost = self.cost_ns(units);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.saturating_sub(cost))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_a_refusal_then_the_refill() {
        let bucket = Bucket::new(10, 3);
        for left in [2, 1, 0] {
            assert_eq!(bucket.take(1).unwrap().remaining, left);
        }
        let wait = bucket.take(1).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // A refusal takes nothing: it can be asked again and again.
        for _ in 0..100 {
            assert!(bucket.take(1).is_err());
        }
        std::thread::sleep(wait + Duration::from_millis(5));
        assert!(bucket.take(1).is_ok(), "one unit came back");
        assert!(bucket.take(1).is_err());
    }

    #[test]
    fn a_debt_refuses_until_it_is_paid() {
        let bucket = Bucket::new(1_000, 10);
        bucket.take(1).unwrap();
        let level = bucket.owe(29);
        assert_eq!(level.remaining, 0);
        assert!(level.full_in >= Duration::from_millis(29), "{level:?}");
        let wait = bucket.take(1).unwrap_err();
        assert!(
            wait >= Duration::from_millis(20) && wait <= Duration::from_millis(21),
            "30 units taken from 10: 20 ms of debt, then one unit: {wait:?}"
        );
        bucket.give_back(25);
        assert!(bucket.take(1).is_ok(), "a unit given back is there again");
    }

    #[test]
    fn levels_count_what_is_left() {
        let bucket = Bucket::new(100, 50);
        let level = bucket.take(20).unwrap();
        assert_eq!(level.burst, 50);
        assert_eq!(level.remaining, 30);
        assert!(level.full_in <= Duration::from_millis(200), "{level:?}");
        assert!(bucket.take(31).is_err(), "31 of the 30 left");
        assert_eq!(bucket.take(30).unwrap().remaining, 0);
    }
}
