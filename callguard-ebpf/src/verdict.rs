//! The verdict a packet gets on its way through the program, and the verifier-shaped helpers
//! that carry state through map memory so that the many paths join into one.

use callguard_common::{
    Action, KernelConfig, Reason,
    config::CONFIG_KEY,
    sip::{self, Span},
};

use crate::maps::CG_CONFIG;
use aya_ebpf::{macros::map, maps::PerCpuArray};

/// A verdict: what to do, why, the counter slot of the rule that decided (0 = none) and of the
/// signature that matched (0 = none), and for SIP the method and where the User-Agent is.
/// Three words without padding (asserted below), so that [`forget`] copies it as three.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct Verdict {
    pub(crate) action: Action,
    pub(crate) reason: Reason,
    pub(crate) slot: u16,
    pub(crate) sig: u16,
    pub(crate) ua: Span,
    /// For slow-path candidates: the To value.
    pub(crate) to: Span,
    pub(crate) method: u8,
    /// `SLOW_*` bits: a candidate for the slow path, still to be decided by [`slow_path`].
    pub(crate) slow: u8,
    /// Zero: the padding made a field, so that the verdict is three whole words.
    pad: u16,
}

const _: () = assert!(size_of::<Verdict>() == 24 && core::mem::offset_of!(Verdict, pad) == 22);

/// [`Verdict::slow`]: the request may need the daemon (an INVITE or REGISTER it asked for).
pub(crate) const SLOW_CANDIDATE: u8 = 1;

/// [`Verdict::slow`]: the datagram is fragmented.
pub(crate) const SLOW_FRAGMENTED: u8 = 2;

/// [`Verdict::slow`]: the request carries credentials, or headers the parser did not read to the
/// end (`sip::header::CREDENTIALS`, `UNREAD`): the PBX's answer to it may be a failed
/// authentication (`auth.rs`).
pub(crate) const SLOW_CREDENTIALS: u8 = 4;

impl Verdict {
    #[inline(always)]
    pub(crate) const fn new(action: Action, reason: Reason, slot: u16) -> Self {
        Self {
            action,
            reason,
            slot,
            sig: 0,
            method: 0,
            ua: Span { off: 0, len: 0 },
            slow: 0,
            to: Span { off: 0, len: 0 },
            pad: 0,
        }
    }
    #[inline(always)]
    pub(crate) const fn pass(reason: Reason) -> Self {
        Self::new(Action::Pass, reason, 0)
    }
    #[inline(always)]
    pub(crate) const fn by_policy(drop: bool, reason: Reason) -> Self {
        Self::new(if drop { Action::Drop } else { Action::Pass }, reason, 0)
    }
    /// A verdict on a SIP message.
    #[inline(always)]
    pub(crate) const fn sip(action: Action, reason: Reason, sig: u16, info: &sip::Info) -> Self {
        Self {
            action,
            reason,
            slot: 0,
            sig,
            method: info.method,
            ua: info.user_agent,
            // Bits 8 and 9 of the headers to bit 2, without a branch: every SIP verdict is made
            // here, and a branch would double the states the verifier walks after it.
            slow: ((((info.headers >> 8) | (info.headers >> 9)) & 1) as u8) << 2,
            to: Span { off: 0, len: 0 },
            pad: 0,
        }
    }
}

const _: () = assert!(
    sip::header::CREDENTIALS == 1 << 8 && sip::header::UNREAD == 1 << 9 && SLOW_CREDENTIALS == 1 << 2
);

/// The policy record; all defaults when absent.
#[inline(always)]
pub(crate) fn config() -> KernelConfig {
    match CG_CONFIG.get(CONFIG_KEY) {
        Some(cfg) => *cfg,
        None => KernelConfig::default(),
    }
}

/// `v`, with everything the verifier knows about its fields forgotten: written to and read back
/// from map memory, whose contents the verifier does not track. The many paths through
/// [`decide`] end with verdicts the verifier knows exactly, so without this it would walk the
/// code after it (the slow path, the counters) once per path, past its instruction limit; after
/// it, they reach that code as one state.
#[inline(always)]
pub(crate) fn forget(v: Verdict) -> Verdict {
    let Some(p) = CG_VERDICT.get_ptr_mut(0) else { return v };
    let words = p.cast::<[u64; 3]>();
    // SAFETY: this CPU's value, used by nothing else during this program run; volatile, so the
    // compiler does not forward `v` past the map memory. As three words (a verdict is three,
    // without padding), not a store and a load per field: what is read back is what was
    // written, a valid verdict.
    unsafe {
        core::ptr::write_volatile(words, core::mem::transmute::<Verdict, [u64; 3]>(v));
        core::mem::transmute::<[u64; 3], Verdict>(core::ptr::read_volatile(words))
    }
}

/// The verdict [`forget`] last wrote, in map memory, in a program tail-called after the one
/// that made it (not copied: that program's stack is too small to hold it twice).
#[inline(always)]
pub(crate) fn recall() -> Option<&'static mut Verdict> {
    // SAFETY: this CPU's value, written earlier in this program run (see `handoff`); nothing
    // else uses it during the run.
    CG_VERDICT.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Notes whether the datagram is fragmented, for [`slow_path`], in map memory: carried as a
/// variable through SIP inspection, the flag would double the states the verifier walks there.
#[inline(always)]
pub(crate) fn note_fragmented(fragmented: bool) {
    if let Some(p) = CG_VERDICT.get_ptr_mut(0) {
        // SAFETY: this CPU's value, used by nothing else during this program run.
        unsafe {
            core::ptr::write_volatile(&raw mut (*p).slow, if fragmented { SLOW_FRAGMENTED } else { 0 });
        };
    }
}

/// What [`note_fragmented`] noted: [`SLOW_FRAGMENTED`] or 0.
#[inline(always)]
pub(crate) fn noted_fragmented() -> u8 {
    match CG_VERDICT.get_ptr(0) {
        // SAFETY: as in note_fragmented.
        Some(p) => (unsafe { core::ptr::read_volatile(&raw const (*p).slow) }) & SLOW_FRAGMENTED,
        None => 0,
    }
}

/// The verdict of `decide`, passed through map memory (`maps::VERDICT`); see [`forget`].
#[map]
pub(crate) static CG_VERDICT: PerCpuArray<Verdict> = PerCpuArray::with_max_entries(1, 0);
