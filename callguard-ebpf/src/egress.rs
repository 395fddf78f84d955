//! The egress program (`callguard_egress`, a TC classifier on the guarded interfaces): reads
//! the PBX's own answers as they leave a guarded UDP port, and notes the sources it accepted a
//! registration from (`CG_REGISTERED`), whose requests then go to the daemon through a queue of
//! their own (`handup.rs`), and the failed authentications of each source (`auth.rs`). It never
//! changes, holds back or drops what the host sends.

use aya_ebpf::{bindings::TC_ACT_OK, helpers::bpf_skb_load_bytes, macros::classifier, programs::TcContext};
use callguard_common::{
    answer::{AnswerWalk, CALLGUARD_MARK, counter},
    limits, loops,
    sip::{self, HEADER_LINES, SCAN_LEN, Scratch},
};

use crate::{
    auth::note_answer,
    clock::boot_ns,
    maps::{CG_ANSWERS, CG_EG_SCRATCH, CG_EG_WALK, CG_REGISTERED, zero_words},
    net::is_guarded,
    parse::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP},
};

#[classifier]
#[expect(clippy::needless_pass_by_value, reason = "the #[classifier] macro hands the context over by value")]
fn callguard_egress(ctx: TcContext) -> i32 {
    let _ = read_answer(&ctx);
    TC_ACT_OK
}

#[inline(always)]
fn count(index: u32) {
    if let Some(c) = CG_ANSWERS.get_ptr_mut(index) {
        // SAFETY: this CPU's counter.
        unsafe { *c += 1 };
    }
}

/// Reads a UDP datagram leaving a guarded port; a `2xx` to a REGISTER notes its destination as
/// registered. `None` for anything else (not IP, not UDP, a fragment, an IPv6 extension header,
/// not from a guarded port, not a SIP response).
#[inline(always)]
fn read_answer(ctx: &TcContext) -> Option<()> {
    let mut off = 14;
    let mut ether_type = u16::from_be(ctx.load::<u16>(12).ok()?);
    // Tags are usually offloaded (skb->vlan_tci) by the time egress runs; one or two in the frame
    // are read past. Written out instead of looped, for constant offsets.
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        ether_type = u16::from_be(ctx.load::<u16>(off + 2).ok()?);
        off += 4;
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            ether_type = u16::from_be(ctx.load::<u16>(off + 2).ok()?);
            off += 4;
        }
    }
    let (dst, l4_off) = match ether_type {
        ETH_P_IP => {
            let vihl = ctx.load::<u8>(off).ok()?;
            let ihl = usize::from(vihl & 0xf) * 4;
            // More-fragments or a fragment offset: not the PBX's answer whole.
            let frag = u16::from_be(ctx.load::<u16>(off + 6).ok()?) & 0x3fff;
            if vihl >> 4 != 4 || ihl < 20 || frag != 0 || ctx.load::<u8>(off + 9).ok()? != IPPROTO_UDP {
                return None;
            }
            (limits::source_key_v4(ctx.load::<[u8; 4]>(off + 16).ok()?), off + ihl)
        }
        ETH_P_IPV6 => {
            if ctx.load::<u8>(off + 6).ok()? != IPPROTO_UDP {
                return None;
            }
            (limits::source_key_v6(ctx.load::<[u8; 16]>(off + 24).ok()?), off + 40)
        }
        _ => return None,
    };
    if !is_guarded(IPPROTO_UDP, u16::from_be(ctx.load::<u16>(l4_off).ok()?)) {
        return None;
    }
    let payload = l4_off + 8;
    let total = ctx.len() as usize;
    let udp_len = usize::from(u16::from_be(ctx.load::<u16>(l4_off + 4).ok()?));
    if udp_len < 8 || payload >= total {
        return None;
    }
    let mut n = udp_len - 8;
    if n > total - payload {
        n = total - payload;
    }
    if n > SCAN_LEN {
        n = SCAN_LEN;
    }
    // Checked again on a value LLVM cannot reason about, so the verifier sees a length in
    // [1, SCAN_LEN] for the helper.
    let n = sip::opaque(n);
    if n == 0 || n > SCAN_LEN {
        return None;
    }
    let buf = CG_EG_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: `buf` is this CPU's scratch value, whose first SCAN_LEN bytes are the buffer, and
    // `n <= SCAN_LEN`; the context is this program's.
    let rc = unsafe { bpf_skb_load_bytes(ctx.skb.skb as *const _, payload as u32, buf.cast(), n as u32) };
    if rc != 0 {
        return None;
    }
    // SAFETY: the helper filled the first `n` bytes; the value lives as long as the program run.
    let buf = unsafe { &mut *buf };
    buf.clear_tail(n);
    let walk = CG_EG_WALK.get_ptr_mut(0)?;
    // SAFETY: this CPU's walk; nothing else uses it during this program run. Kept in map memory,
    // whose contents the verifier does not track, so the shapes a walk can take reach the code
    // after it as one state (as `CG_PARSE` in the XDP program).
    let status = unsafe {
        zero_words(walk);
        (*walk).begin_zeroed(buf, n);
        (*walk).status
    };
    if status == 0 {
        return None;
    }
    count(counter::RESPONSES);
    let challenge = status == 401 || status == 407;
    if !((200..300).contains(&status) || challenge || status == 403) {
        return None;
    }
    walk_answer(buf, walk, challenge);
    // SAFETY: as above; copied out of map memory once.
    let read = unsafe { *walk };
    if read.registered() {
        let _ = CG_REGISTERED.insert(dst, boot_ns(), 0);
        count(counter::REGISTRATIONS);
    }
    // callguard's own 403s (the slow path's) carry its mark: they are not the PBX's answers.
    // SAFETY: a field of this program's context, read as the verifier allows.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark != CALLGUARD_MARK {
        note_answer(&dst, read.method(), status, read.stale != 0, read.to);
    }
    Some(())
}

/// Reads the answer's header lines into `walk`, then, for a challenge, searches it for
/// `stale=true`, a line or a position a round (see `callguard_common::loops::walk`). The walk
/// keeps its counts.
#[inline(always)]
fn walk_answer(buf: &Scratch, walk: *mut AnswerWalk, challenge: bool) {
    // SAFETY: this CPU's walk, filled by read_answer in this run; nothing else uses it.
    unsafe { loops::walk(walk, HEADER_LINES, |w| w.step(buf)) };
    if challenge {
        // The step written in the call: bound to a name first, with its argument's type spelled
        // out, the same closure made the may_goto build read a 401 in 1,240 ns, not 805 (kernel
        // bench, paired runs; the code LLVM gives it differs, the cause is not known).
        // SAFETY: as above.
        unsafe {
            loops::walk(walk, (SCAN_LEN / STALE_ROUND) as u32, move |w| {
                (0..STALE_ROUND).all(|_| !w.stale_step(buf))
            });
        }
    }
}

/// Positions of the `stale=true` search a round: eight where a round is a call, which costs
/// more than a position's test (a challenge line is 150 positions or so), else one.
const STALE_ROUND: usize = if loops::CALL_PER_ROUND { 8 } else { 1 };
