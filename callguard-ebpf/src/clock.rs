//! The program's clock: `CLOCK_BOOTTIME` in nanoseconds, read exactly ([`boot_ns`]) or as of
//! this CPU's first reading in the current jiffy ([`tick_ns`]).

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_boot_ns},
    macros::map,
    maps::PerCpuArray,
};

/// `CLOCK_BOOTTIME` now, in nanoseconds. On a VM this read is one of the dearest steps of a
/// dropped packet (about 30 ns in `read_tsc`, measured in the flood benchmark).
#[inline(always)]
pub(crate) fn boot_ns() -> u64 {
    // SAFETY: a helper call with no arguments; available to XDP programs since Linux 5.8.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// One CPU's last reading of [`boot_ns`] and the jiffy it was made in.
#[derive(Clone, Copy)]
struct TickClock {
    /// `jiffies_64` when `boot_ns` was read.
    jiffies: u64,
    /// The reading.
    boot_ns: u64,
}

/// Each CPU's [`TickClock`] (`maps::TICK_CLOCK`), private to the program (and so kept here,
/// as the verdict's map is in `verdict.rs`).
#[map]
static CG_TICK_CLOCK: PerCpuArray<TickClock> = PerCpuArray::with_max_entries(1, 0);

/// [`boot_ns`] as this CPU read it first in the current jiffy: never ahead of the clock, behind
/// it by about a tick (4 ms at `HZ=250`), longer only while `jiffies` lags the clock (a stalled
/// timekeeping CPU on a VM, the moment after a resume from suspend). For the kernel's bans
/// (a ban holds that much longer) and per-source rate state (rates measured at the tick's
/// grain), where each difference with a reading another CPU wrote must saturate: that reading
/// may be ahead of this one. A flood then reads the clock once a tick instead of once a
/// packet (`jiffies_64` is one load: the verifier inlines `bpf_jiffies64`).
#[inline(always)]
pub(crate) fn tick_ns() -> u64 {
    // SAFETY: the helper has no arguments; the verifier replaces the call with a load.
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(c) = CG_TICK_CLOCK.get_ptr_mut(0) else { return boot_ns() };
    // SAFETY: this CPU's copy of a per-CPU value, so no other CPU writes it; XDP runs with
    // preemption disabled.
    let c = unsafe { &mut *c };
    if c.jiffies != jiffies || c.boot_ns == 0 {
        *c = TickClock { jiffies, boot_ns: boot_ns() };
    }
    c.boot_ns
}
