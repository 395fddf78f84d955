//! How the XDP program bounds its loops, in the two builds the daemon carries.
//!
//! The verifier must see every loop end. It can be told so in three ways, each with its cost:
//! - a loop with a counter it tracks (`for _ in 0..n`): it walks the body once per round, and a
//!   scan inside another loop multiplies those walks past its limit of a million instructions;
//! - a `bpf_loop` callback per round (Linux 5.17+): the body is checked once, but every round
//!   is a call and a return, and on CPUs with return-stack mitigations (the SRSO "safe RET" of
//!   AMD Zen, on by default) a return costs about 7 ns; the header walk took 13 for an INVITE;
//! - `may_goto` (Linux 6.9+), written by [`may_loop`]: a jump the kernel takes once the program
//!   run's loop budget is spent (8 million rounds; on 6.15 and newer, on x86-64 and arm64, a
//!   time limit instead). The verifier checks the body until the states at the loop's head
//!   repeat, as for callbacks, and a round costs a decrement and a branch.
//!
//! The build with the `may-goto` feature (loaded on Linux 6.9+; the daemon needs 5.18 for other
//! helpers) loops with `may_goto` where a loop keeps its count in map memory or needs none: the
//! header-line walks of requests (`sip::Parse`) and of the PBX's answers
//! (`answer::AnswerWalk`), the answers' search for `stale=true` (all three through [`walk`]),
//! and the newline scan (`sip::next_newline`, through [`rounds`]) of every reader, the first
//! line and a value on a continuation line included. The build without it keeps the callbacks
//! and counted loops older kernels verify. Both run the same
//! checks in the same order, so a packet gets the same verdict from either (the differential
//! test runs both). In userspace [`rounds`] counts, and every scan ends by its own test first.
//!
//! A spent budget ends a loop early. The request reader fails closed then: a newline scan that
//! stops finds no line end, so the line runs to the end of the payload and the headers are
//! noted unread; a header walk that stops leaves them unread too. Two would fail open: the
//! first line's scan in `Parse::begin` (the datagram would be "not SIP"), and the answer walk
//! (a CSeq not reached leaves the method unknown, and the failure uncounted; a stale search cut
//! short fails closed, counting a stale challenge as a failure). Neither can happen: a program
//! run loops at most about 1,200 rounds, against a budget of millions.

/// Whether a round of [`walk`] is a call and a return (the `bpf_loop` build): a walk whose
/// rounds are short then does several steps a round.
pub const CALL_PER_ROUND: bool = cfg!(all(target_arch = "bpf", not(feature = "may-goto")));

/// `false` when the kernel's loop budget for this program run is spent (`may_goto` jumps), else
/// `true`. A loop that calls this at its head, and carries nothing the verifier tracks
/// exactly from one round to the next, is checked once instead of once per round.
#[cfg(all(target_arch = "bpf", feature = "may-goto"))]
#[inline(always)]
pub fn may_loop() -> bool {
    // SAFETY: `may_goto` reads and decrements a counter the kernel keeps in the program's stack
    // frame (below what the program sees) and jumps when it is spent; no register or memory of
    // the program changes.
    unsafe {
        core::arch::asm!("may_goto {}", label { return false; }, options(nomem, nostack));
    }
    true
}

/// The rounds of a scan that ends by its own test within `bound` rounds: with `may-goto` in
/// the kernel, as many as [`may_loop`] allows (the verifier tracks no count); elsewhere
/// `0..bound`, counted.
#[inline(always)]
pub fn rounds(bound: usize) -> impl Iterator<Item = ()> {
    #[cfg(all(target_arch = "bpf", feature = "may-goto"))]
    {
        let _ = bound;
        core::iter::from_fn(|| may_loop().then_some(()))
    }
    #[cfg(not(all(target_arch = "bpf", feature = "may-goto")))]
    {
        (0..bound).map(|_| ())
    }
}

/// Steps the state at `state` with `step` until `step` returns `false`, each round checked once
/// by the verifier: with `may-goto` in the kernel, a [`may_loop`] loop; in the other build, a
/// `bpf_loop` callback a round, at most `bound` rounds; in userspace, at most `bound` rounds.
///
/// A walk that must take its state from the verifier's tracking keeps it in map memory (the
/// state is map memory: a per-CPU value), and `step` carries nothing else from one round to the
/// next. In the `may_goto` loop the pointer is read back from the stack each round, so that LLVM
/// keeps no field of the state in a register, where the verifier would track it exactly and see
/// each round's state as new (its walk of the request reader then ran past its limit).
///
/// # Safety
///
/// `state` points to a value that is valid, and used by nothing else, for the whole walk.
#[inline(always)]
pub unsafe fn walk<T, F: FnMut(&mut T) -> bool>(state: *mut T, bound: u32, step: F) {
    #[cfg(all(target_arch = "bpf", feature = "may-goto"))]
    {
        let (_, mut step) = (bound, step);
        while may_loop() {
            // SAFETY: the caller's promise; the read only hides the pointer from LLVM.
            let state = unsafe { &mut *core::ptr::read_volatile(&raw const state) };
            if !step(state) {
                break;
            }
        }
    }
    #[cfg(all(target_arch = "bpf", not(feature = "may-goto")))]
    {
        /// What the callback gets through `bpf_loop`'s context: the state and the step, on the
        /// caller's stack for the loop's length.
        struct Walk<T, F> {
            state: *mut T,
            step: F,
        }
        extern "C" fn round<T, F: FnMut(&mut T) -> bool>(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
            // SAFETY: `ctx` is the Walk that `walk` passed to bpf_loop, alive during the loop;
            // its state is valid and unshared (the caller's promise).
            let w = unsafe { &mut *ctx.cast::<Walk<T, F>>() };
            // SAFETY: as above.
            if (w.step)(unsafe { &mut *w.state }) { 0 } else { 1 }
        }
        let mut w = Walk { state, step };
        // SAFETY: the callback matches bpf_loop's contract and only uses `w` during the call.
        unsafe {
            aya_ebpf::helpers::bpf_loop(
                bound,
                round::<T, F> as *mut core::ffi::c_void,
                (&raw mut w).cast(),
                0,
            );
        }
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        // SAFETY: the caller's promise.
        let (state, mut step) = (unsafe { &mut *state }, step);
        for _ in 0..bound {
            if !step(state) {
                break;
            }
        }
    }
}
