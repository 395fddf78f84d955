//! Events for the daemon: drop samples and bans, written to `CG_EVENTS` with the source's key,
//! and the per-CPU budget that bounds the ones a flood can cause.

use aya_ebpf::maps::PerCpuArray;
use callguard_common::{
    Reason,
    events::{EVENT_UA, Event, EventBudget},
    limits::{self, Limits},
    sip::{SCAN_LEN, Scratch, Span},
};

use crate::{
    clock::boot_ns,
    maps::{CG_EVBUDGET, CG_EVENTS, CG_SCRATCH},
    parse::Src,
};

/// This CPU's event budget.
#[inline(always)]
pub(crate) fn budget() -> Option<&'static mut EventBudget> {
    // SAFETY: this CPU's copy of a per-CPU value, so no other CPU writes it; XDP runs with
    // preemption disabled.
    CG_EVBUDGET.get_ptr_mut(0).map(|b| unsafe { &mut *b })
}

/// Which of a CPU's event buckets an event draws on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bucket {
    /// Drop samples.
    Drops,
    /// Signature bans.
    Bans,
}

/// Writes a budgeted event (`write`, which says whether the ring buffer took it) when this CPU's
/// `bucket` has room at `now`, and counts it as written or suppressed.
#[inline(always)]
pub(crate) fn within_budget(
    b: &mut EventBudget,
    bucket: Bucket,
    lim: &Limits,
    now: u64,
    write: impl FnOnce() -> bool,
) {
    let tat = if bucket == Bucket::Bans { &mut b.ban_tat } else { &mut b.tat };
    let room = lim.event_interval_ns == 0
        || match limits::gcra(*tat, now, lim.event_interval_ns, lim.event_tau_ns) {
            Some(next) => {
                *tat = next;
                true
            }
            None => false,
        };
    if room && write() {
        b.written += 1;
    } else {
        b.suppressed += 1;
    }
}

/// Writes an event to the ring buffer (dropped, not waited for, when it is full: then `false`);
/// `ua` is a span of the XDP program's scratch buffer.
#[inline(always)]
pub(crate) fn emit(
    src: &[u8; 16],
    kind: u8,
    reason: Reason,
    method: u8,
    rule_slot: u16,
    sig_slot: u16,
    ua: Span,
) -> bool {
    emit_from(&CG_SCRATCH, src, kind, reason, method, rule_slot, sig_slot, ua)
}

/// [`emit`], with `ua` a span of `scratch` (the egress program has its own).
#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "the event's fields, written once here")]
pub(crate) fn emit_from(
    scratch: &PerCpuArray<Scratch>,
    src: &[u8; 16],
    kind: u8,
    reason: Reason,
    method: u8,
    rule_slot: u16,
    sig_slot: u16,
    ua: Span,
) -> bool {
    let Some(mut entry) = CG_EVENTS.reserve::<Event>(0) else { return false };
    let ua_len = if usize::from(ua.len) > EVENT_UA { EVENT_UA } else { usize::from(ua.len) };
    let mut e = Event {
        ts_ns: boot_ns(),
        addr: *src,
        kind,
        reason: reason as u8,
        method,
        ua_len: ua_len as u8,
        rule_slot,
        sig_slot,
        ua: [0; EVENT_UA],
    };
    if ua_len != 0
        && let Some(buf) = scratch.get_ptr(0)
    {
        // SAFETY: this CPU's scratch buffer, filled in this program run.
        let buf = unsafe { &*buf };
        for k in 0..EVENT_UA {
            if k < ua_len {
                e.ua[k] = buf.buf[(usize::from(ua.off) + k) & (SCAN_LEN - 1)];
            }
        }
    }
    entry.write(e);
    entry.submit(0);
    true
}

/// The key of a source in `CG_SOURCES` and in events: built only where one is needed.
#[inline(always)]
pub(crate) fn source_key(src: Src) -> [u8; 16] {
    match src {
        Src::V4(a) => limits::source_key_v4(a),
        Src::V6(a) => limits::source_key_v6(a),
    }
}
