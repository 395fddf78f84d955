//! The hand-up: requests that need number-level checks go to the daemon's queue, or meet the
//! failure policy when the daemon is gone or its queue is full.

use aya_ebpf::{helpers::bpf_xdp_load_bytes, programs::XdpContext};
use callguard_common::{
    Action, Reason,
    answer::REGISTERED_NS,
    config::{FLAG_FAIL_CLOSED, FLAG_QUEUE_FULL_OPEN},
    handup::{FRAME_MAX, HEARTBEAT_TIMEOUT_NS, HandUp},
    sip,
};

use crate::{
    clock::boot_ns,
    events::source_key,
    inspect::to_tag,
    maps::{CG_HANDUP, CG_HANDUP_REG, CG_HEARTBEAT, CG_REGISTERED},
    parse::Src,
    verdict::{SLOW_FRAGMENTED, Verdict, config},
};

/// Decides a slow-path candidate, once every path through SIP inspection has joined (so the
/// verifier walks this once, not once per path): an in-dialog INVITE (To tag), and an ACK whose
/// To tag is not one of the daemon's, pass `clean` (or `signature` for a dry-run match); an
/// ACK to the daemon's 403 is handed up, as the daemon's, like anything else (the proof that its
/// sender receives what is sent to it); anything else is handed up or meets the failure policy.
#[inline(always)]
pub(crate) fn slow_path(ctx: &XdpContext, v: &mut Verdict, src: Option<Src>) {
    let ack = v.method == sip::method::ACK;
    if ack || v.method == sip::method::INVITE {
        let tag = to_tag(v.to);
        if (ack && tag != sip::TAG_CALLGUARD) || (!ack && tag != sip::TAG_NONE) {
            v.action = Action::Pass;
            v.reason = if v.sig != 0 { Reason::Signature } else { Reason::Clean };
            return;
        }
    }
    let (action, reason) = hand_up(ctx, config().flags, v.slow & SLOW_FRAGMENTED != 0, src);
    v.action = action;
    v.reason = reason;
}

/// Copies the whole frame to the daemon's hand-up queue (`HandUp`, `handed_up`): the queue of
/// registered sources when the PBX accepted a registration from this one within
/// `REGISTERED_NS`, else the common queue, which anyone (spoofing too) can fill. When the daemon
/// is gone, the failure policy decides: pass (fail-open) or drop (fail-closed). When its queue
/// is full, the queue policy: drop by default, since a sender can fill it. A request that cannot
/// be handed up whole (fragmented, or longer than a record) is dropped whatever the policies
/// say: its sender chose that, and its numbers would go unchecked.
#[inline(always)]
pub(crate) fn hand_up(ctx: &XdpContext, flags: u16, fragmented: bool, src: Option<Src>) -> (Action, Reason) {
    let fail = if flags & FLAG_FAIL_CLOSED != 0 { Action::Drop } else { Action::Pass };
    let full = if flags & FLAG_QUEUE_FULL_OPEN != 0 { Action::Pass } else { Action::Drop };
    let oversize = (Action::Drop, Reason::Oversize);
    let total = ctx.data_end() - ctx.data();
    if fragmented || total > FRAME_MAX {
        return oversize;
    }
    let now = boot_ns();
    let beat = match CG_HEARTBEAT.get(0) {
        Some(b) => *b,
        None => 0,
    };
    if beat == 0 || now > beat + HEARTBEAT_TIMEOUT_NS {
        return (fail, Reason::DaemonGone);
    }
    let registered = match src {
        // SAFETY: a plain u64 value of this map, read once.
        Some(src) => match unsafe { CG_REGISTERED.get(source_key(src)) } {
            Some(at) => now < *at + REGISTERED_NS,
            None => false,
        },
        None => false,
    };
    let reserved =
        if registered { CG_HANDUP_REG.reserve::<HandUp>(0) } else { CG_HANDUP.reserve::<HandUp>(0) };
    let Some(mut entry) = reserved else { return (full, Reason::QueueFull) };
    let rec = entry.as_mut_ptr();
    // Checked again on a value LLVM cannot reason about, so the verifier sees the length the
    // helper gets bounded to [1, FRAME_MAX].
    let n = sip::opaque(total);
    if n == 0 || n > FRAME_MAX {
        entry.discard(0);
        return oversize;
    }
    // SAFETY: `rec` points to the reserved record, FRAME_MAX bytes of frame after the header,
    // and `n <= FRAME_MAX`; the context is this program's.
    let rc = unsafe {
        (*rec).ts_ns = now;
        (*rec).ifindex = (*ctx.ctx).ingress_ifindex;
        (*rec).len = n as u16;
        (*rec)._pad = 0;
        bpf_xdp_load_bytes(ctx.ctx, 0, (&raw mut (*rec).frame).cast(), n as u32)
    };
    if rc != 0 {
        entry.discard(0);
        return oversize;
    }
    entry.submit(0);
    (Action::HandUp, Reason::HandedUp)
}
