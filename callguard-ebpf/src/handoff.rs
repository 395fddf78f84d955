//! The XDP program's hand-off to SIP inspection, which runs in three more programs, each
//! tail-calling the next (slots of `maps::SIP_NEXT`): [`PARSE`] reads the payload, [`JUDGE`]
//! decides from what it found (or passes on what the parse decided alone), [`CONCLUDE`] takes
//! the verdict through the slow path to the exit. What the first program found travels in a
//! per-CPU map, the verdict in `verdict::CG_VERDICT`. Several programs, because each has its
//! own limit of a million instructions the verifier walks, and a tail call starts its walk
//! afresh: in one program, SIP inspection alone went past the limit.
//!
//! Each program tail-calls one slot only. A tail call whose slot the verifier knows is a
//! direct jump in the JIT; one instruction reached with two slots (LLVM merged the parse
//! stage's two calls into one) is an indirect jump, through a retpoline where the kernel
//! mitigates Spectre v2 that way, as on this project's machine.

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use callguard_common::Reason;

use crate::{parse::Src, verdict::Verdict};

/// What the XDP program hands the SIP inspection program for one datagram (per CPU; see
/// `maps::SIP_HANDOFF`).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Handoff {
    /// The datagram's source.
    pub(crate) src: Src,
    /// Offset of the UDP payload in the frame.
    pub(crate) payload_off: u32,
    /// The payload length the UDP header gives.
    pub(crate) udp_payload: u32,
    /// `inspect::ALLOWED` and the rule's slot for an allow rule with a call profile; 0 for
    /// others.
    pub(crate) profiled: u32,
    /// The first fragment of a fragmented datagram.
    pub(crate) fragmented: bool,
    /// What `police::before_reading` learnt of the source's state in `CG_SOURCES`: see
    /// [`looked`]. A byte: a pinned hand-off may hold what an earlier program left there.
    pub(crate) looked: u8,
    /// 1: the parse decided the datagram alone (`inspect::parse_sip`); the judge passes its
    /// verdict on. Written by the parse stage; the XDP program writes 0.
    pub(crate) decided: u8,
}

/// What `police::before_reading` learnt of the source's state ([`Handoff::looked`]).
pub(crate) mod looked {
    /// It found the state, or did not look (a source an allow rule's call profile admits,
    /// which it does not check). A release before [`SKIPPED`] wrote 0 for these too.
    pub(crate) const STATE: u8 = 0;
    /// It looked, and the source has no state: a signature ban need not look again
    /// (`police::ban_for_signature`).
    pub(crate) const NO_STATE: u8 = 1;
    /// It did not look, on its cache slot's note that the state had nothing to decide in this
    /// jiffy (`SourceSlot::clear_jiffy`): `police` makes the check after the read, with the
    /// lookup of its rate limits, and the conclusion for a datagram the read found is no
    /// request and passed (`police::early_after_read`).
    pub(crate) const SKIPPED: u8 = 2;
}

/// The SIP inspection programs by slot (`maps::SIP_NEXT`), set by the daemon at load.
#[map]
static CG_SIP_NEXT: ProgramArray = ProgramArray::pinned(sip_next::COUNT, 0);

pub(crate) use callguard_common::maps::sip_next::{self, CONCLUDE, JUDGE, PARSE};

/// The datagram handed over (`maps::SIP_HANDOFF`).
#[map]
static CG_SIP_HANDOFF: PerCpuArray<Handoff> = PerCpuArray::pinned(1, 0);

/// Hands the datagram to the SIP inspection program, which decides it and ends the run; returns
/// only when it cannot (no program in the slot: the daemon sets it before it attaches), with
/// the verdict on a datagram nothing read.
#[inline(always)]
pub(crate) fn inspect_in_sip_program(ctx: &XdpContext, h: Handoff) -> Verdict {
    if let Some(p) = CG_SIP_HANDOFF.get_ptr_mut(0) {
        // SAFETY: this CPU's value; the tail-called program reads it in this same run.
        unsafe { *p = h };
        next(ctx, PARSE);
    }
    Verdict::pass(Reason::Clean)
}

/// Runs the SIP inspection program in `slot`, which ends the run; returns only when the slot
/// is empty (the daemon fills every slot before it attaches).
#[inline(always)]
pub(crate) fn next(ctx: &XdpContext, slot: u32) {
    // SAFETY: the context is this program's; on success the call does not return.
    unsafe { CG_SIP_NEXT.tail_call(ctx, slot) };
}

/// Notes that the parse stage decided the datagram alone ([`Handoff::decided`]).
#[inline(always)]
pub(crate) fn note_decided() {
    if let Some(p) = CG_SIP_HANDOFF.get_ptr_mut(0) {
        // SAFETY: this CPU's value; the programs of this run use it one after the other.
        unsafe { (*p).decided = 1 };
    }
}

/// What the XDP program handed over for this datagram.
#[inline(always)]
pub(crate) fn taken() -> Option<Handoff> {
    CG_SIP_HANDOFF.get(0).copied()
}

/// The source of the datagram handed over.
#[inline(always)]
pub(crate) fn taken_src() -> Option<Src> {
    CG_SIP_HANDOFF.get(0).map(|h| h.src)
}

/// What `police::before_reading` learnt of the state of the source of the datagram handed
/// over ([`Handoff::looked`]).
#[inline(always)]
pub(crate) fn taken_looked() -> u8 {
    CG_SIP_HANDOFF.get(0).map_or(looked::STATE, |h| h.looked)
}
