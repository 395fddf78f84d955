//! The program's one exit: counting the verdict (by reason, rule and signature), sampling drops
//! into the event ring within the event budget, and the XDP return code.

use aya_ebpf::programs::XdpContext;
use callguard_common::{Action, Counter, events::event, stats::stats_index};

use crate::{
    clock::tick_ns,
    events::{Bucket, budget, emit, source_key, within_budget},
    maps::{CG_LIMITS, CG_RULE_STATS, CG_SIG_STATS, CG_STATS},
    parse::Src,
    verdict::Verdict,
};

/// Counts one packet of `bytes` in a per-CPU counter, when there is one.
#[inline(always)]
fn bump(counter: Option<*mut Counter>, bytes: u64) {
    if let Some(c) = counter {
        // SAFETY: this CPU's copy of a per-CPU value, so no other CPU writes it; XDP runs with
        // preemption disabled.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Counts the verdict and turns it into the XDP return code. The only exit of the program.
#[inline(always)]
pub(crate) fn finish(ctx: &XdpContext, v: Verdict, src: Option<Src>) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    bump(CG_STATS.get_ptr_mut(stats_index(v.action, v.reason)), bytes);
    if v.slot != 0 {
        bump(CG_RULE_STATS.get_ptr_mut(u32::from(v.slot)), bytes);
    }
    if v.sig != 0 {
        bump(CG_SIG_STATS.get_ptr_mut(u32::from(v.sig)), bytes);
    }
    if v.action == Action::Drop
        && let Some(src) = src
        && let Some(lim) = CG_LIMITS.get(0)
        && lim.event_sample != 0
        && let Some(b) = budget()
    {
        b.drops += 1;
        // One in `event_sample`, as `drops % event_sample == 0` would pick them from a fresh
        // start; a countdown longer than the setting (lowered since) is cut to it.
        let every = u64::from(lim.event_sample);
        let left = if b.to_sample == 0 || b.to_sample > every { every } else { b.to_sample } - 1;
        b.to_sample = left;
        if left == 0 {
            // The budget at the tick's grain: the same rate, and no clock read per sample.
            within_budget(b, Bucket::Drops, lim, tick_ns(), || {
                emit(&source_key(src), event::DROP, v.reason, v.method, v.slot, v.sig, v.ua)
            });
        }
    }
    v.action.xdp_action()
}
