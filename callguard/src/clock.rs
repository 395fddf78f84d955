//! Time as the kernel sees it: `CLOCK_BOOTTIME`, which the XDP program reads for expiries,
//! heartbeats and event stamps, and its mapping to wall-clock time for people.

use chrono::{DateTime, Utc};

/// Maps wall-clock expiry times to the kernel's `CLOCK_BOOTTIME`, which does not jump when the
/// wall clock is set. Taken once per compilation so every entry uses the same offset.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall: DateTime<Utc>,
    boot_ns: u64,
}

impl Clock {
    /// The clocks now.
    pub fn now() -> Self {
        Self { wall: Utc::now(), boot_ns: boot_ns() }
    }

    /// The wall-clock instant of a `CLOCK_BOOTTIME` instant (a kernel timestamp).
    pub fn wall_at(&self, boot_ns: u64) -> DateTime<Utc> {
        let delta = i64::try_from(self.boot_ns.abs_diff(boot_ns)).unwrap_or(i64::MAX);
        let d = chrono::Duration::nanoseconds(delta);
        if boot_ns <= self.boot_ns { self.wall - d } else { self.wall + d }
    }

    /// Wall-clock now.
    pub const fn wall(&self) -> DateTime<Utc> {
        self.wall
    }

    /// The boot-time instant matching a wall-clock instant; 0 (never) for `None`. A time already
    /// past maps to 1 ns, which every later reading of the clock is beyond.
    pub fn boot_ns_at(&self, t: Option<DateTime<Utc>>) -> u64 {
        let Some(t) = t else { return 0 };
        let delta = t.signed_duration_since(self.wall).num_nanoseconds().unwrap_or(i64::MAX);
        if delta <= 0 { 1 } else { self.boot_ns.saturating_add(delta.unsigned_abs()) }
    }
}

/// `CLOCK_BOOTTIME` in nanoseconds (what `bpf_ktime_get_boot_ns` reads).
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_BOOTTIME exists since Linux 2.6.39.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}
