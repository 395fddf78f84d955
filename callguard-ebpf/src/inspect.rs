//! SIP inspection of a UDP datagram to a guarded port: the header-line walk (a `may_goto` loop,
//! or in the build for kernels before 6.9 a `bpf_loop` callback per line; see
//! `callguard_common::loops::walk`), the signature automata and the To value (hash and tag),
//! each a `bpf_loop` callback the verifier checks once.

use aya_ebpf::{
    helpers::{bpf_loop, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use callguard_common::{
    Action, Reason,
    config::{
        FLAG_BAN_SIGNATURE, FLAG_DROP_FRAGMENTED_SIP, FLAG_DROP_NOT_SIP, FLAG_HANDUP_INVITE,
        FLAG_HANDUP_REGISTER,
    },
    loops,
    sig::{self, DfaBank, DfaHead, Hit, MODE_DRY_RUN, MODE_ENFORCE},
    sip::{self, FIELD_MAX, HEADER_LINES, Kind, Parse, SCAN_LEN, Scratch, Span},
};

use crate::{
    auth::guarded_user,
    handoff::{looked, taken_looked},
    maps::{CG_PARSE, CG_SCRATCH, CG_SIG_DFA, CG_SIG_HEAD, zero_words},
    parse::Src,
    police::{ban_for_signature, police},
    verdict::{SLOW_CANDIDATE, Verdict, config, noted_fragmented},
};

/// The signature walk of one packet: the inputs of [`sig_step`] and its result. Lives on the
/// caller's stack; `bpf_loop` hands the callback a pointer to it.
pub(crate) struct SigWalk {
    /// Values by `sig::field` index.
    pub(crate) fields: [Span; sig::field::COUNT],
    /// The bank in use: its header and automata, and this CPU's scratch buffer, looked up once
    /// by [`judge_sip`] instead of once a field.
    pub(crate) head: *const DfaHead,
    pub(crate) bank: *const DfaBank,
    pub(crate) buf: *const Scratch,
    /// The enforcing match, or else the last dry-run match.
    pub(crate) hit: Hit,
}

/// Walks the signature automaton over each field in turn (`bpf_loop` callback, one call),
/// stopping at an enforcing match: the verifier checks this body once, apart from the program,
/// and the three fields cost one call and return (a call a field cost about 8 ns more a
/// request on this project's development machine).
pub(crate) extern "C" fn sig_step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the SigWalk that judge_sip passed to bpf_loop, alive during the loop.
    let walk = unsafe { &mut *ctx.cast::<SigWalk>() };
    // SAFETY: map values judge_sip looked up in this program run: the bank's header and
    // automata, this CPU's scratch buffer (filled by parse_sip).
    let (head, bank, buf) = unsafe { (&*walk.head, &*walk.bank, &*walk.buf) };
    for field in 0..sig::field::COUNT {
        let span = walk.fields[field];
        let start = head.start[field];
        if start == sig::STATE_DEAD || !span.is_some() {
            continue;
        }
        let off = usize::from(span.off);
        let hit = sig::walk(
            head,
            start,
            |k| buf.buf[(off + k) & (SCAN_LEN - 1)],
            usize::from(span.len),
            FIELD_MAX,
            |state, class| bank.next(state, class),
            |state| bank.meta(state),
        );
        if hit.mode == MODE_ENFORCE {
            walk.hit = hit;
            return 1;
        }
        if hit.mode == MODE_DRY_RUN {
            walk.hit = hit;
        }
    }
    1
}

/// [`parse_sip`]'s `profiled` for a source an allow rule with a call profile matched: this bit
/// and the rule's counter slot.
pub(crate) const ALLOWED: u32 = 1 << 16;

/// SIP inspection of a UDP datagram to a guarded port from a source in neither list, or in an
/// allow rule with a call profile (`profiled`: [`ALLOWED`] and the rule's slot; 0 for others).
/// `udp_payload` is the payload length the UDP header gives: bytes past it (which the stack
/// trims) are not read.
///
/// In two stages, each a program of its own (see `handoff`): [`parse_sip`] reads the payload
/// into the parse state and decides what needs no more than that (`Some`); [`judge_sip`]
/// decides the rest from what the parse found.
#[inline(always)]
pub(crate) fn parse_sip(
    ctx: &XdpContext,
    payload_off: usize,
    udp_payload: usize,
    profiled: u32,
) -> Option<Verdict> {
    let cfg = config();
    if profiled != 0 {
        // Its own path, apart from the checks below: the verifier walks it once, not every
        // path below twice.
        let allowed = Verdict::new(Action::Pass, Reason::Allowed, profiled as u16);
        return Some(profiled_sip(ctx, payload_off, udp_payload, cfg.flags, allowed));
    }
    let not_sip = Verdict::by_policy(cfg.flags & FLAG_DROP_NOT_SIP != 0, Reason::NotSip);
    let total = ctx.data_end() - ctx.data();
    if payload_off >= total {
        return Some(not_sip);
    }
    let mut n = total - payload_off;
    if n > udp_payload {
        n = udp_payload;
    }
    if n > SCAN_LEN {
        n = SCAN_LEN;
    }
    // Checked again on a value LLVM cannot reason about, so that the check stays in the program
    // and the verifier sees a length in [1, SCAN_LEN] for the helper.
    let n = sip::opaque(n);
    if n == 0 || n > SCAN_LEN {
        return Some(not_sip);
    }
    let Some(buf) = CG_SCRATCH.get_ptr_mut(0) else { return Some(Verdict::pass(Reason::Clean)) };
    // SAFETY: `buf` is this CPU's scratch value, whose first SCAN_LEN bytes are the buffer, and
    // `n <= SCAN_LEN`.
    let rc = unsafe { bpf_xdp_load_bytes(ctx.ctx, payload_off as u32, buf.cast(), n as u32) };
    if rc != 0 {
        return Some(Verdict::pass(Reason::Clean));
    }
    // SAFETY: the helper filled the first `n` bytes; the value lives as long as the program run.
    let buf = unsafe { &mut *buf };
    // The parser may read sip::TAIL bytes past the payload: zero, not an earlier packet's bytes.
    buf.clear_tail(n);
    let buf = &*buf;
    let Some(parse) = CG_PARSE.get_ptr_mut(0) else { return Some(Verdict::pass(Reason::Clean)) };
    // SAFETY: this CPU's parse state; nothing else uses it during this program run. Zeroed by
    // words and begun in place: see `Parse::begin_zeroed`.
    unsafe {
        zero_words(parse);
        (*parse).begin_zeroed(buf, n);
    }
    walk_lines(buf, parse);
    None
}

/// Reads the header lines into the parse state, a line a round (see
/// `callguard_common::loops::walk`). `Parse::step` counts the lines in map memory.
#[inline(always)]
fn walk_lines(buf: &Scratch, parse: *mut Parse) {
    // SAFETY: this CPU's parse state, filled by parse_sip in this run; nothing else uses it.
    unsafe { loops::walk(parse, HEADER_LINES, |p| p.step(buf)) };
}

/// The second stage of SIP inspection: the verdict on what [`parse_sip`] left in the parse
/// state.
#[inline(always)]
pub(crate) fn judge_sip(src: Src) -> Verdict {
    let cfg = config();
    // The rest of a fragmented datagram is out of sight: whatever it says is unchecked.
    let fragmented = noted_fragmented() != 0 && cfg.flags & FLAG_DROP_FRAGMENTED_SIP != 0;
    let not_sip = Verdict::by_policy(cfg.flags & FLAG_DROP_NOT_SIP != 0, Reason::NotSip);
    let Some(parse) = CG_PARSE.get_ptr(0) else { return Verdict::pass(Reason::Clean) };
    // SAFETY: this CPU's parse state, which parse_sip filled earlier in this run.
    let info = unsafe { (*parse).info() };
    let refuse_fragment = Verdict::new(Action::Drop, Reason::Fragmented, 0);
    match info.kind {
        Kind::NotSip | Kind::Keepalive if fragmented => return refuse_fragment,
        Kind::NotSip => return not_sip,
        Kind::Keepalive => return Verdict::pass(Reason::Keepalive),
        Kind::Request | Kind::Response => {}
    }
    let bank = u32::from(cfg.sig_bank & 1);
    let (Some(head), Some(dfa), Some(buf)) =
        (CG_SIG_HEAD.get_ptr(bank), CG_SIG_DFA.get_ptr(bank), CG_SCRATCH.get_ptr(0))
    else {
        return Verdict::pass(Reason::Clean);
    };
    let mut walk =
        SigWalk { fields: [info.user_agent, info.from, info.to], head, bank: dfa, buf, hit: Hit::default() };
    // SAFETY: the callback matches bpf_loop's contract and only uses `walk` during the call.
    unsafe {
        bpf_loop(1, sig_step as *mut core::ffi::c_void, (&raw mut walk).cast(), 0);
    }
    if walk.hit.mode == MODE_ENFORCE {
        if info.kind == Kind::Request && cfg.flags & FLAG_BAN_SIGNATURE != 0 {
            ban_for_signature(src, taken_looked() == looked::NO_STATE, walk.hit.slot, &info);
        }
        return Verdict::sip(Action::Drop, Reason::Signature, walk.hit.slot, &info);
    }
    let dry_run = walk.hit.slot;
    if info.kind == Kind::Request {
        if fragmented {
            return Verdict::sip(Action::Drop, Reason::Fragmented, dry_run, &info);
        }
        if info.headers & (sip::header::DUPLICATE | sip::header::AMBIGUOUS) != 0 {
            return Verdict::sip(Action::Drop, header_defect(info.headers), dry_run, &info);
        }
        if cfg.method_drop & (1 << info.method) != 0 {
            return Verdict::sip(Action::Drop, Reason::Method, dry_run, &info);
        }
        if let Some(reason) = police(src, &info, cfg.flags & FLAG_BAN_SIGNATURE != 0) {
            return Verdict::sip(Action::Drop, reason, dry_run, &info);
        }
        if info.method == sip::method::REGISTER && guarded_user(src, info.to) {
            return Verdict::sip(Action::Drop, Reason::GuardedUser, dry_run, &info);
        }
        let slow = match info.method {
            // An ACK may answer one of the daemon's 403s: see `slow_path`.
            sip::method::INVITE | sip::method::ACK => cfg.flags & FLAG_HANDUP_INVITE != 0,
            sip::method::REGISTER => cfg.flags & FLAG_HANDUP_REGISTER != 0,
            _ => false,
        };
        if slow {
            // Decided in `callguard` once this path has joined the others: see `slow_path`.
            let mut v = Verdict::sip(Action::HandUp, Reason::HandedUp, dry_run, &info);
            v.slow |= SLOW_CANDIDATE | noted_fragmented();
            v.to = info.to;
            return v;
        }
    }
    if dry_run != 0 {
        return Verdict::sip(Action::Pass, Reason::Signature, dry_run, &info);
    }
    Verdict::sip(Action::Pass, Reason::Clean, 0, &info)
}

/// A datagram from an allow rule with a call profile, while the daemon asks for INVITEs: what
/// begins as a request that is no INVITE, or a response, passes as `allowed`; anything else (an
/// INVITE, a message in a form the first bytes do not tell, CRLF before a request) is handed
/// up, where the daemon's full parser reads it: a caller in the network cannot slip an INVITE
/// past its checks by writing it oddly. An in-dialog INVITE is handed up too, and passed on by
/// the daemon. A fragmented datagram is handed up, which drops it (`oversize`): its rest would
/// pass unread. Shorter than 16 bytes (a CRLF keepalive) passes. Nothing is dropped here:
/// signatures, rate limits and the method policy do not apply to an authorized source.
#[inline(always)]
fn profiled_sip(
    ctx: &XdpContext,
    payload_off: usize,
    udp_payload: usize,
    flags: u16,
    allowed: Verdict,
) -> Verdict {
    if flags & FLAG_HANDUP_INVITE == 0 || udp_payload < 16 {
        return allowed;
    }
    let total = ctx.data_end() - ctx.data();
    // Not zeroed first: that is a memset, a call in BPF (see `sip::Parse::begin_zeroed`); the
    // helper writes all 16 bytes when it succeeds, and nothing reads them when it fails.
    let mut head = core::mem::MaybeUninit::<[u8; 16]>::uninit();
    // A first fragment, or one too short to tell, goes up too: the hand-up drops what it
    // cannot take whole (`oversize`), so no part of an INVITE passes unread.
    let readable = noted_fragmented() == 0
        && payload_off + 16 <= total
        // SAFETY: 16 bytes into a 16-byte stack buffer; the context is this program's.
        && unsafe { bpf_xdp_load_bytes(ctx.ctx, payload_off as u32, head.as_mut_ptr().cast(), 16) } == 0;
    // SAFETY: read only when the helper filled it (`readable`).
    if readable && sip::passes_unread(unsafe { head.assume_init_ref() }) {
        return allowed;
    }
    let mut v = allowed;
    v.action = Action::HandUp;
    v.reason = Reason::HandedUp;
    v.method = sip::method::INVITE;
    v.slow = SLOW_CANDIDATE | noted_fragmented();
    v
}

const _: () = assert!(Reason::AmbiguousHeader as u32 == Reason::DuplicateHeader as u32 + 1);

/// `duplicate_header` when the headers hold a duplicate, else `ambiguous_header`: computed, not
/// chosen by a branch, so the verifier walks on with one state instead of two (its budget for
/// the whole program is nearly spent by the paths into SIP inspection).
#[inline(always)]
fn header_defect(headers: u16) -> Reason {
    let ambiguous_only = u32::from(headers & sip::header::DUPLICATE == 0);
    // SAFETY: DuplicateHeader + 0 or 1 is DuplicateHeader or AmbiguousHeader (asserted above),
    // both variants of this repr(u32) enum.
    unsafe { core::mem::transmute::<u32, Reason>(Reason::DuplicateHeader as u32 + ambiguous_only) }
}

/// One byte of the To tag walk (`bpf_loop` callback, index = byte): a request with a tag is in a
/// dialog, which the slow path leaves alone, unless it is an ACK to one of the daemon's 403s.
/// Checked by the verifier once, not once per byte.
pub(crate) extern "C" fn to_tag_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the ToTag that to_tag passed to bpf_loop, alive during the loop.
    let tt = unsafe { &mut *ctx.cast::<ToTag>() };
    let k = index as usize;
    if k >= usize::from(tt.span.len) || k >= FIELD_MAX {
        tt.kind = sip::to_tag_end(tt.span, &tt.walk);
        return 1;
    }
    let Some(buf) = CG_SCRATCH.get_ptr(0) else { return 1 };
    // SAFETY: this CPU's scratch buffer, filled by parse_sip in this program run.
    let buf = unsafe { &*buf };
    match sip::to_tag_step(buf, tt.span, k, &mut tt.walk) {
        None => 0,
        Some(kind) => {
            tt.kind = kind;
            1
        }
    }
}

/// Input, state and output of [`to_tag_step`].
pub(crate) struct ToTag {
    pub(crate) span: Span,
    pub(crate) walk: sip::TagWalk,
    pub(crate) kind: u8,
}

/// The kind of the To value's tag: `sip::TAG_NONE`, `TAG_OTHER` or `TAG_CALLGUARD`.
#[inline(always)]
pub(crate) fn to_tag(span: Span) -> u8 {
    let mut tt = ToTag { span, walk: sip::TagWalk::START, kind: sip::TAG_NONE };
    // SAFETY: the callback matches bpf_loop's contract and only uses `tt` during the call.
    unsafe {
        // One more iteration than bytes: the last settles a walk that ran through the value.
        bpf_loop(FIELD_MAX as u32 + 1, to_tag_step as *mut core::ffi::c_void, (&raw mut tt).cast(), 0);
    }
    tt.kind
}
