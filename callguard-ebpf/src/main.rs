#![no_std]
#![no_main]
//! callguard's XDP program: the per-packet fast path.
//!
//! For each frame: parse Ethernet, VLAN, IP and the transport header ([`parse`]); look the source
//! up in the network rules (exact hash, then LPM trie, IPv4 and IPv6); decide with the policy in
//! `CG_CONFIG` and the guarded ports in `CG_PORTS`; count the verdict by (action, reason) and, when
//! a rule decided, by that rule's counter slot. Every exit goes through [`finish`], so every verdict is counted.
//!
//! Order of decisions (documented in the README):
//! 1. no usable IP header → pass, counted by the defect (`not_ip`, `truncated_*`, ...);
//! 2. source denied with scope `all` → drop `denied`;
//! 3. a later fragment → the fragment policy (`fragment`);
//! 4. a defective transport header → the malformed policy if the port is guarded, else pass;
//! 5. port not guarded → pass `unguarded`;
//! 6. source authorized → pass `allowed`; source denied (scope `sip`) → drop `denied`;
//! 7. UDP from a source in neither list: SIP inspection ([`inspect_sip`]) — not SIP → `not_sip`
//!    (policy), keepalive → pass `keepalive`, a request matching an enforcing scanner signature
//!    → drop `signature` (and a ban of the source, when configured), a refused method → drop
//!    `method`, a request matching only dry-run signatures → pass `signature`; then, for requests, the per-source state ([`police`]): a
//!    source the kernel banned → drop `banned`; a request over a rate limit → drop `rate` (a
//!    source that keeps exceeding is banned); too many distinct To values → banned;
//! 8. otherwise → pass `clean`.

mod parse;

use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, bpf_loop, bpf_xdp_load_bytes},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use callguard_common::{
    Action, Counter, KernelConfig, NetEntry, NetMatch, Reason,
    config::{
        CONFIG_KEY, FLAG_BAN_SIGNATURE, FLAG_DROP_FRAGMENTS, FLAG_DROP_MALFORMED, FLAG_DROP_NOT_SIP,
        FLAG_FAIL_CLOSED, FLAG_HANDUP_INVITE, FLAG_HANDUP_REGISTER, PORT_TCP, PORT_UDP,
    },
    handup::{FRAME_MAX, HEARTBEAT_TIMEOUT_NS, HandUp},
    limits::{
        self, BUCKET_ALL, BUCKET_INVITE, BUCKET_REGISTER, EVENT_UA, Event, Limits, STREAK_GAP_NS,
        SourceState, event,
    },
    maps::{
        BPF_F_NO_PREALLOC, EVENTS_BYTES, HANDUP_BYTES, NET_EXACT_MAX, NET_LPM_MAX, PORT_COUNT,
        RULE_STATS_MAX, SOURCES_MAX,
    },
    net::{EXPIRED_RETRIES, SCOPE_ALL},
    sig::{self, DfaBank, DfaHead, Hit, MODE_DRY_RUN, MODE_ENFORCE},
    sip::{self, FIELD_MAX, HEADER_LINES, Kind, Parse, SCAN_LEN, Scratch, Span},
    stats::{STATS_LEN, stats_index},
};
use parse::{IPPROTO_TCP, IPPROTO_UDP, Src};

/// Rules for single IPv4 addresses (`maps::NET_V4_EXACT`).
#[map]
static CG_NET4_EXACT: HashMap<[u8; 4], NetEntry> = HashMap::pinned(NET_EXACT_MAX, BPF_F_NO_PREALLOC);
/// Rules for single IPv6 addresses (`maps::NET_V6_EXACT`).
#[map]
static CG_NET6_EXACT: HashMap<[u8; 16], NetEntry> = HashMap::pinned(NET_EXACT_MAX, BPF_F_NO_PREALLOC);
/// IPv4 prefix rules (`maps::NET_V4_LPM`).
#[map]
static CG_NET4_LPM: LpmTrie<[u8; 4], NetEntry> = LpmTrie::pinned(NET_LPM_MAX, 0);
/// IPv6 prefix rules (`maps::NET_V6_LPM`).
#[map]
static CG_NET6_LPM: LpmTrie<[u8; 16], NetEntry> = LpmTrie::pinned(NET_LPM_MAX, 0);
/// Guarded ports (`maps::PORTS`): `PORT_UDP | PORT_TCP` bits by destination port.
#[map]
static CG_PORTS: Array<u8> = Array::pinned(PORT_COUNT, 0);
/// The policy record (`maps::CONFIG`); all zero means the defaults.
#[map]
static CG_CONFIG: Array<KernelConfig> = Array::pinned(1, 0);
/// Counters by (action, reason) (`maps::STATS`).
#[map]
static CG_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(STATS_LEN, 0);
/// Counters by rule counter slot (`maps::RULE_STATS`).
#[map]
static CG_RULE_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(RULE_STATS_MAX, 0);

/// Scanner signature automata, both banks (`maps::SIG_DFA`).
#[map]
static CG_SIG_DFA: Array<DfaBank> = Array::pinned(sig::BANKS, 0);
/// Byte classes and start states of each bank (`maps::SIG_HEAD`).
#[map]
static CG_SIG_HEAD: Array<DfaHead> = Array::pinned(sig::BANKS, 0);
/// Counters by signature slot (`maps::SIG_STATS`).
#[map]
static CG_SIG_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(sig::SLOTS, 0);
/// Scratch space for the SIP payload (`maps::SCRATCH`): too large for the 512-byte stack.
#[map]
static CG_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The SIP parse in progress (`sip::Parse`). Kept in map memory rather than on the stack on
/// purpose: the verifier does not track what a map value holds, so the many shapes a parse can
/// take (methods, header combinations, positions) reach the code after it as one state.
#[map]
static CG_PARSE: PerCpuArray<Parse> = PerCpuArray::with_max_entries(1, 0);

/// Per-source rate state (`maps::SOURCES`).
#[map]
static CG_SOURCES: LruHashMap<[u8; 16], SourceState> = LruHashMap::pinned(SOURCES_MAX, 0);
/// Rate limits, ban and enumeration settings (`maps::LIMITS`).
#[map]
static CG_LIMITS: Array<Limits> = Array::pinned(1, 0);
/// Drop samples and ban requests for the daemon (`maps::EVENTS`).
#[map]
static CG_EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);
/// Per-CPU drop sequence, for sampling (`maps::EVENT_SEQ`).
#[map]
static CG_EVSEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The verdict of `decide`, passed through map memory (`maps::VERDICT`); see [`forget`].
#[map]
static CG_VERDICT: PerCpuArray<Verdict> = PerCpuArray::with_max_entries(1, 0);

/// Requests handed up to the daemon (`maps::HANDUP`).
#[map]
static CG_HANDUP: RingBuf = RingBuf::pinned(HANDUP_BYTES, 0);
/// The daemon's last heartbeat (`maps::HEARTBEAT`).
#[map]
static CG_HEARTBEAT: Array<u64> = Array::pinned(1, 0);

/// A verdict: what to do, why, the counter slot of the rule that decided (0 = none) and of the
/// signature that matched (0 = none), and for SIP the method and where the User-Agent is.
#[derive(Clone, Copy)]
struct Verdict {
    action: Action,
    reason: Reason,
    slot: u16,
    sig: u16,
    method: u8,
    ua: Span,
    /// `SLOW_*` bits: a candidate for the slow path, still to be decided by [`slow_path`].
    slow: u8,
    /// For slow-path candidates: the To value.
    to: Span,
}

/// [`Verdict::slow`]: the request may need the daemon (an INVITE or REGISTER it asked for).
const SLOW_CANDIDATE: u8 = 1;
/// [`Verdict::slow`]: the datagram is fragmented.
const SLOW_FRAGMENTED: u8 = 2;

impl Verdict {
    #[inline(always)]
    const fn new(action: Action, reason: Reason, slot: u16) -> Self {
        Self {
            action,
            reason,
            slot,
            sig: 0,
            method: 0,
            ua: Span { off: 0, len: 0 },
            slow: 0,
            to: Span { off: 0, len: 0 },
        }
    }
    #[inline(always)]
    const fn pass(reason: Reason) -> Self {
        Self::new(Action::Pass, reason, 0)
    }
    #[inline(always)]
    const fn by_policy(drop: bool, reason: Reason) -> Self {
        Self::new(if drop { Action::Drop } else { Action::Pass }, reason, 0)
    }
    /// A verdict on a SIP message.
    #[inline(always)]
    const fn sip(action: Action, reason: Reason, sig: u16, info: &sip::Info) -> Self {
        Self {
            action,
            reason,
            slot: 0,
            sig,
            method: info.method,
            ua: info.user_agent,
            slow: 0,
            to: Span { off: 0, len: 0 },
        }
    }
}

#[xdp]
#[expect(clippy::needless_pass_by_value, reason = "the #[xdp] macro hands the context over by value")]
fn callguard(ctx: XdpContext) -> u32 {
    let mut src = None;
    let mut verdict = forget(decide(&ctx, &mut src));
    if verdict.slow & SLOW_CANDIDATE != 0 {
        slow_path(&ctx, &mut verdict);
    }
    finish(&ctx, verdict, src)
}

/// A program that passes everything and does nothing else: the reference the benchmark
/// (`cargo xtask bench`) measures callguard against, in the same run. Never attached.
#[xdp]
fn callguard_baseline(_ctx: XdpContext) -> u32 {
    Action::Pass.xdp_action()
}

#[inline(always)]
fn decide(ctx: &XdpContext, src: &mut Option<Src>) -> Verdict {
    let l3 = match parse::parse_l3(ctx) {
        Ok(l3) => l3,
        Err(reason) => return Verdict::pass(reason),
    };
    *src = Some(l3.src);
    let net = match l3.src {
        Src::V4(addr) => lookup_v4(addr),
        Src::V6(addr) => lookup_v6(addr),
    };
    if let Some(NetMatch::Deny { slot, scope: SCOPE_ALL, .. }) = net {
        return Verdict::new(Action::Drop, Reason::Denied, slot);
    }
    if l3.later_fragment {
        return Verdict::by_policy(config().flags & FLAG_DROP_FRAGMENTS != 0, Reason::Fragment);
    }
    let l4 = parse::parse_l4(ctx, &l3);
    let guarded = match l4.dst_port {
        Some(port) => is_guarded(l3.proto, port),
        None => false,
    };
    if let Some(defect) = l4.defect {
        return Verdict::by_policy(guarded && config().flags & FLAG_DROP_MALFORMED != 0, defect);
    }
    if !guarded {
        return Verdict::pass(Reason::Unguarded);
    }
    match net {
        Some(NetMatch::Allow { slot, .. }) => Verdict::new(Action::Pass, Reason::Allowed, slot),
        Some(NetMatch::Deny { slot, .. }) => Verdict::new(Action::Drop, Reason::Denied, slot),
        _ if l3.proto == IPPROTO_UDP => {
            note_fragmented(l3.first_fragment);
            inspect_sip(ctx, l3.l4_off + 8, l3.src)
        }
        _ => Verdict::pass(Reason::Clean),
    }
}

/// One header line per call (`bpf_loop` callback): the verifier checks this body once instead of
/// every iteration of a 64-line loop, which is what keeps SIP inspection within its limits.
extern "C" fn header_step(_index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let (Some(buf), Some(parse)) = (CG_SCRATCH.get_ptr(0), CG_PARSE.get_ptr_mut(0)) else { return 1 };
    // SAFETY: this CPU's scratch buffer and parse state, filled by inspect_sip in this run.
    let (parse, buf) = unsafe { (&mut *parse, &*buf) };
    if parse.step(buf) { 0 } else { 1 }
}

/// The signature walk of one packet: the inputs of [`sig_step`] and its result. Lives on the
/// caller's stack; `bpf_loop` hands the callback a pointer to it.
struct SigWalk {
    /// Values by `sig::field` index.
    fields: [Span; sig::field::COUNT],
    /// The bank in use.
    bank: u32,
    /// The enforcing match, or else the last dry-run match.
    hit: Hit,
}

/// Walks the signature automaton over one field (`bpf_loop` callback, index = field): checked
/// once by the verifier instead of once per field.
extern "C" fn sig_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the SigWalk that inspect_sip passed to bpf_loop, alive during the loop.
    let walk = unsafe { &mut *ctx.cast::<SigWalk>() };
    let field = index as usize;
    if field >= sig::field::COUNT {
        return 1;
    }
    let (Some(head), Some(bank), Some(buf)) =
        (CG_SIG_HEAD.get(walk.bank), CG_SIG_DFA.get(walk.bank), CG_SCRATCH.get_ptr(0))
    else {
        return 1;
    };
    // SAFETY: this CPU's scratch buffer, filled by inspect_sip in this program run.
    let buf = unsafe { &*buf };
    let span = walk.fields[field];
    let start = head.start[field];
    if start == sig::STATE_DEAD || !span.is_some() {
        return 0;
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
    0
}

/// The policy record; all defaults when absent.
#[inline(always)]
fn config() -> KernelConfig {
    match CG_CONFIG.get(CONFIG_KEY) {
        Some(cfg) => *cfg,
        None => KernelConfig::default(),
    }
}

/// SIP inspection of a UDP datagram to a guarded port from a source in neither list.
#[inline(always)]
fn inspect_sip(ctx: &XdpContext, payload_off: usize, src: Src) -> Verdict {
    let cfg = config();
    let not_sip = Verdict::by_policy(cfg.flags & FLAG_DROP_NOT_SIP != 0, Reason::NotSip);
    let total = ctx.data_end() - ctx.data();
    if payload_off >= total {
        return not_sip;
    }
    let mut n = total - payload_off;
    if n > SCAN_LEN {
        n = SCAN_LEN;
    }
    // Checked again on a value LLVM cannot reason about, so that the check stays in the program
    // and the verifier sees a length in [1, SCAN_LEN] for the helper.
    let n = sip::opaque(n);
    if n == 0 || n > SCAN_LEN {
        return not_sip;
    }
    let Some(buf) = CG_SCRATCH.get_ptr_mut(0) else { return Verdict::pass(Reason::Clean) };
    // SAFETY: `buf` is this CPU's scratch value, whose first SCAN_LEN bytes are the buffer, and
    // `n <= SCAN_LEN`.
    let rc = unsafe { bpf_xdp_load_bytes(ctx.ctx, payload_off as u32, buf.cast(), n as u32) };
    if rc != 0 {
        return Verdict::pass(Reason::Clean);
    }
    // SAFETY: the helper filled the first `n` bytes; the value lives as long as the program run.
    let buf = unsafe { &mut *buf };
    // The parser may read sip::TAIL bytes past the payload: zero, not an earlier packet's bytes.
    buf.clear_tail(n);
    let buf = &*buf;
    let Some(parse) = CG_PARSE.get_ptr_mut(0) else { return Verdict::pass(Reason::Clean) };
    // SAFETY: this CPU's parse state; nothing else uses it during this program run.
    unsafe { *parse = Parse::begin(buf, n) };
    // SAFETY: the callback matches bpf_loop's contract; it finds its state in the maps.
    unsafe {
        bpf_loop(HEADER_LINES, header_step as *mut core::ffi::c_void, core::ptr::null_mut(), 0);
    }
    // SAFETY: as above.
    let info = unsafe { (*parse).info() };
    match info.kind {
        Kind::NotSip => return not_sip,
        Kind::Keepalive => return Verdict::pass(Reason::Keepalive),
        Kind::Request | Kind::Response => {}
    }
    let mut walk = SigWalk {
        fields: [info.user_agent, info.from, info.to],
        bank: u32::from(cfg.sig_bank & 1),
        hit: Hit::default(),
    };
    // SAFETY: the callback matches bpf_loop's contract and only uses `walk` during the call.
    unsafe {
        bpf_loop(sig::field::COUNT as u32, sig_step as *mut core::ffi::c_void, (&raw mut walk).cast(), 0);
    }
    if walk.hit.mode == MODE_ENFORCE {
        if info.kind == Kind::Request && cfg.flags & FLAG_BAN_SIGNATURE != 0 {
            ban_for_signature(src, walk.hit.slot, &info);
        }
        return Verdict::sip(Action::Drop, Reason::Signature, walk.hit.slot, &info);
    }
    let dry_run = walk.hit.slot;
    if info.kind == Kind::Request {
        if cfg.method_drop & (1 << info.method) != 0 {
            return Verdict::sip(Action::Drop, Reason::Method, dry_run, &info);
        }
        if let Some(reason) = police(src, &info, cfg.flags & FLAG_BAN_SIGNATURE != 0) {
            return Verdict::sip(Action::Drop, reason, dry_run, &info);
        }
        let slow = match info.method {
            sip::method::INVITE => cfg.flags & FLAG_HANDUP_INVITE != 0,
            sip::method::REGISTER => cfg.flags & FLAG_HANDUP_REGISTER != 0,
            _ => false,
        };
        if slow {
            // Decided in `callguard` once this path has joined the others: see `slow_path`.
            let mut v = Verdict::sip(Action::HandUp, Reason::HandedUp, dry_run, &info);
            v.slow = SLOW_CANDIDATE | noted_fragmented();
            v.to = info.to;
            return v;
        }
    }
    if dry_run != 0 {
        return Verdict::sip(Action::Pass, Reason::Signature, dry_run, &info);
    }
    Verdict::sip(Action::Pass, Reason::Clean, 0, &info)
}

/// The To value hash (`bpf_loop` callback, one iteration): its own verifier pass, like
/// [`sig_step`].
extern "C" fn to_hash_step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the ToHash that police passed to bpf_loop, alive during the loop.
    let th = unsafe { &mut *ctx.cast::<ToHash>() };
    let Some(buf) = CG_SCRATCH.get_ptr(0) else { return 1 };
    // SAFETY: this CPU's scratch buffer, filled by inspect_sip in this program run.
    let buf = unsafe { &*buf };
    let off = usize::from(th.span.off);
    th.bit = limits::to_bit_with(|k| buf.buf[(off + k) & (SCAN_LEN - 1)], usize::from(th.span.len));
    1
}

/// Input and output of [`to_hash_step`].
struct ToHash {
    span: Span,
    bit: usize,
}

/// Whether the To value carries a tag (`bpf_loop` callback, one iteration): an in-dialog request,
/// which the slow path leaves alone.
extern "C" fn to_tag_step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the ToTag that to_tagged passed to bpf_loop, alive during the loop.
    let tt = unsafe { &mut *ctx.cast::<ToTag>() };
    let Some(buf) = CG_SCRATCH.get_ptr(0) else { return 1 };
    // SAFETY: this CPU's scratch buffer, filled by inspect_sip in this program run.
    let buf = unsafe { &*buf };
    tt.tagged = sip::has_tag(buf, tt.span);
    1
}

/// Input and output of [`to_tag_step`].
struct ToTag {
    span: Span,
    tagged: bool,
}

/// Whether the To value `span` carries a tag.
#[inline(always)]
fn to_tagged(span: Span) -> bool {
    let mut tt = ToTag { span, tagged: false };
    // SAFETY: the callback matches bpf_loop's contract and only uses `tt` during the call.
    unsafe {
        bpf_loop(1, to_tag_step as *mut core::ffi::c_void, (&raw mut tt).cast(), 0);
    }
    tt.tagged
}

/// `v`, with everything the verifier knows about its fields forgotten: written to and read back
/// from map memory, whose contents the verifier does not track. The many paths through
/// [`decide`] end with verdicts the verifier knows exactly, so without this it would walk the
/// code after it (the slow path, the counters) once per path, past its instruction limit; after
/// it, they reach that code as one state.
#[inline(always)]
fn forget(v: Verdict) -> Verdict {
    let Some(p) = CG_VERDICT.get_ptr_mut(0) else { return v };
    // SAFETY: this CPU's value, used by nothing else during this program run; volatile, so the
    // compiler does not forward `v` past the map memory.
    unsafe {
        core::ptr::write_volatile(p, v);
        core::ptr::read_volatile(p)
    }
}

/// Notes whether the datagram is fragmented, for [`slow_path`], in map memory: carried as a
/// variable through SIP inspection, the flag would double the states the verifier walks there.
#[inline(always)]
fn note_fragmented(fragmented: bool) {
    if let Some(p) = CG_VERDICT.get_ptr_mut(0) {
        // SAFETY: this CPU's value, used by nothing else during this program run.
        unsafe {
            core::ptr::write_volatile(&raw mut (*p).slow, if fragmented { SLOW_FRAGMENTED } else { 0 });
        };
    }
}

/// What [`note_fragmented`] noted: [`SLOW_FRAGMENTED`] or 0.
#[inline(always)]
fn noted_fragmented() -> u8 {
    match CG_VERDICT.get_ptr(0) {
        // SAFETY: as in note_fragmented.
        Some(p) => (unsafe { core::ptr::read_volatile(&raw const (*p).slow) }) & SLOW_FRAGMENTED,
        None => 0,
    }
}

/// Decides a slow-path candidate, once every path through SIP inspection has joined (so the
/// verifier walks this once, not once per path): an in-dialog INVITE (To tag) passes `clean`
/// (or `signature` for a dry-run match); anything else is handed up or meets the failure policy.
#[inline(always)]
fn slow_path(ctx: &XdpContext, v: &mut Verdict) {
    if v.method == sip::method::INVITE && to_tagged(v.to) {
        v.action = Action::Pass;
        v.reason = if v.sig != 0 { Reason::Signature } else { Reason::Clean };
        return;
    }
    let (action, reason) =
        hand_up(ctx, config().flags & FLAG_FAIL_CLOSED != 0, v.slow & SLOW_FRAGMENTED != 0);
    v.action = action;
    v.reason = reason;
}

/// Copies the whole frame to the daemon's hand-up queue (`HandUp`, `handed_up`), or, when the
/// daemon is gone, its queue is full or the frame does not fit, lets the failure policy decide:
/// pass (fail-open) or drop (fail-closed).
#[inline(always)]
fn hand_up(ctx: &XdpContext, fail_closed: bool, fragmented: bool) -> (Action, Reason) {
    let fail = if fail_closed { Action::Drop } else { Action::Pass };
    let now = boot_ns();
    let beat = match CG_HEARTBEAT.get(0) {
        Some(b) => *b,
        None => 0,
    };
    if beat == 0 || now > beat + HEARTBEAT_TIMEOUT_NS {
        return (fail, Reason::DaemonGone);
    }
    let total = ctx.data_end() - ctx.data();
    if fragmented || total > FRAME_MAX {
        return (fail, Reason::Oversize);
    }
    let Some(mut entry) = CG_HANDUP.reserve::<HandUp>(0) else { return (fail, Reason::QueueFull) };
    let rec = entry.as_mut_ptr();
    // Checked again on a value LLVM cannot reason about, so the verifier sees the length the
    // helper gets bounded to [1, FRAME_MAX].
    let n = sip::opaque(total);
    if n == 0 || n > FRAME_MAX {
        entry.discard(0);
        return (fail, Reason::Oversize);
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
        return (fail, Reason::Oversize);
    }
    entry.submit(0);
    (Action::HandUp, Reason::HandedUp)
}

/// Bans a source whose request matched an enforcing signature, unless it is banned already (so a
/// scanner's later requests raise no further events).
#[inline(always)]
fn ban_for_signature(src: Src, sig_slot: u16, info: &sip::Info) {
    let Some(lim) = CG_LIMITS.get(0) else { return };
    if lim.ban_ns == 0 {
        return;
    }
    let src = &source_key(src);
    let Some(st) = source_state(src) else { return };
    // SAFETY: as in `police`: an LRU value, valid for this program run.
    let st = unsafe { &mut *st };
    let now = boot_ns();
    if st.banned_until <= now {
        ban(st, src, now, lim.ban_ns, event::BAN_SIGNATURE, sig_slot, info);
    }
}

/// This source's state in `CG_SOURCES`, inserted (evicting the least recently seen) on its first
/// request.
#[inline(always)]
fn source_state(src: &[u8; 16]) -> Option<*mut SourceState> {
    if let Some(st) = CG_SOURCES.get_ptr_mut(src) {
        return Some(st);
    }
    let _ = CG_SOURCES.insert(src, SourceState::default(), 0);
    CG_SOURCES.get_ptr_mut(src)
}

/// Rate limits, bans and enumeration detection for a request from a source in neither list.
/// `None`: within limits.
#[inline(always)]
fn police(src: Src, info: &sip::Info, sig_bans: bool) -> Option<Reason> {
    let lim = CG_LIMITS.get(0)?;
    if lim.interval_ns == [0; limits::BUCKETS] && lim.enum_users == 0 {
        // Nothing to count: only a signature ban to honour, on a source that already has state.
        if !sig_bans {
            return None;
        }
        // SAFETY: a value of the LRU hash, read once during this program run (RCU).
        let banned_until = unsafe { CG_SOURCES.get(source_key(src))?.banned_until };
        return (banned_until > boot_ns()).then_some(Reason::Banned);
    }
    let src = &source_key(src);
    let now = boot_ns();
    let st = source_state(src)?;
    // SAFETY: a value of the LRU hash, valid for this program run (RCU); racing CPUs may lose
    // an update, which only lets a request more through.
    let st = unsafe { &mut *st };
    if st.banned_until > now {
        return Some(Reason::Banned);
    }
    // Every request takes from the bucket for all requests, REGISTER and INVITE also from their own.
    let own = match info.method {
        sip::method::REGISTER => Some(BUCKET_REGISTER),
        sip::method::INVITE => Some(BUCKET_INVITE),
        _ => None,
    };
    let mut over = !take(st, lim, BUCKET_ALL, now);
    if let Some(b) = own {
        over |= !take(st, lim, b, now);
    }
    if over {
        if st.over_since == 0 || now - st.last_over > STREAK_GAP_NS {
            st.over_since = now;
        }
        st.last_over = now;
        if lim.ban_after_ns != 0 && now - st.over_since >= lim.ban_after_ns {
            ban(st, src, now, lim.ban_ns, event::BAN_RATE, 0, info);
            return Some(Reason::Banned);
        }
        return Some(Reason::Rate);
    }
    if lim.enum_users != 0 && info.to.is_some() {
        if now - st.enum_start > lim.enum_window_ns {
            st.enum_start = now;
            st.sketch = [0; 4];
        }
        let mut th = ToHash { span: info.to, bit: 0 };
        // SAFETY: the callback matches bpf_loop's contract and only uses `th` during the call.
        unsafe {
            bpf_loop(1, to_hash_step as *mut core::ffi::c_void, (&raw mut th).cast(), 0);
        }
        let bit = th.bit & (limits::SKETCH_BITS - 1);
        st.sketch[bit / 64] |= 1 << (bit % 64);
        let seen: u32 = st.sketch.iter().map(|w| w.count_ones()).sum();
        if seen > lim.enum_users {
            ban(st, src, now, lim.ban_ns, event::BAN_ENUM, 0, info);
            return Some(Reason::Banned);
        }
    }
    None
}

/// Takes a token from bucket `b` (GCRA); `false` when the request exceeds it. A bucket that is
/// off always conforms.
#[inline(always)]
fn take(st: &mut SourceState, lim: &Limits, b: usize, now: u64) -> bool {
    if lim.interval_ns[b] == 0 {
        return true;
    }
    match limits::gcra(st.tat[b], now, lim.interval_ns[b], lim.tau_ns[b]) {
        Some(tat) => {
            st.tat[b] = tat;
            true
        }
        None => false,
    }
}

/// Bans a source in the kernel and asks the daemon (an event) to store the ban as a rule.
#[inline(always)]
fn ban(
    st: &mut SourceState,
    src: &[u8; 16],
    now: u64,
    ban_ns: u64,
    kind: u8,
    sig_slot: u16,
    info: &sip::Info,
) {
    st.banned_until = now + ban_ns;
    st.over_since = 0;
    st.sketch = [0; 4];
    emit(src, kind, Reason::Banned, info.method, 0, sig_slot, info.user_agent);
}

/// The key of a source in `CG_SOURCES` and in events: built only where one is needed.
#[inline(always)]
fn source_key(src: Src) -> [u8; 16] {
    match src {
        Src::V4(a) => limits::source_key_v4(a),
        Src::V6(a) => limits::source_key_v6(a),
    }
}

/// Writes an event to the ring buffer (dropped, not waited for, when it is full).
#[inline(always)]
fn emit(src: &[u8; 16], kind: u8, reason: Reason, method: u8, rule_slot: u16, sig_slot: u16, ua: Span) {
    let Some(mut entry) = CG_EVENTS.reserve::<Event>(0) else { return };
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
        && let Some(buf) = CG_SCRATCH.get_ptr(0)
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
}

#[inline(always)]
fn is_guarded(proto: u8, port: u16) -> bool {
    let bit = match proto {
        IPPROTO_UDP => PORT_UDP,
        IPPROTO_TCP => PORT_TCP,
        _ => return false,
    };
    match CG_PORTS.get(u32::from(port)) {
        Some(bits) => *bits & bit != 0,
        None => false,
    }
}

/// Generates the lookup for one address family: the exact map first (a single address is the
/// longest prefix there is), then the LPM trie, retrying with a shorter prefix past entries whose
/// rules have all expired.
macro_rules! lookup_fn {
    ($name:ident, $n:literal, $exact:ident, $lpm:ident) => {
        #[inline(always)]
        fn $name(addr: [u8; $n]) -> Option<NetMatch> {
            // The clock is read only for entries that expire (most do not).
            let mut now = 0u64;
            // SAFETY: the exact maps are BPF_F_NO_PREALLOC: elements are freed after RCU grace.
            if let Some(entry) = unsafe { $exact.get(&addr) } {
                if entry.expires() {
                    now = boot_ns();
                }
                match entry.decide(now) {
                    NetMatch::Expired => {}
                    decided => return Some(decided),
                }
            }
            let mut prefix_len = $n * 8;
            // Bounded for the verifier; see EXPIRED_RETRIES.
            for _ in 0..=EXPIRED_RETRIES {
                let entry = $lpm.get(Key::new(prefix_len, addr))?;
                if now == 0 && entry.expires() {
                    now = boot_ns();
                }
                match entry.decide(now) {
                    NetMatch::Expired if entry.prefix_len > 0 => prefix_len = u32::from(entry.prefix_len) - 1,
                    NetMatch::Expired => return None,
                    decided => return Some(decided),
                }
            }
            None
        }
    };
}

lookup_fn!(lookup_v4, 4, CG_NET4_EXACT, CG_NET4_LPM);
lookup_fn!(lookup_v6, 16, CG_NET6_EXACT, CG_NET6_LPM);

#[inline(always)]
fn boot_ns() -> u64 {
    // SAFETY: a helper call with no arguments; available to XDP programs since Linux 5.8.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Counts the verdict and turns it into the XDP return code. The only exit of the program.
#[inline(always)]
fn finish(ctx: &XdpContext, v: Verdict, src: Option<Src>) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    if let Some(c) = CG_STATS.get_ptr_mut(stats_index(v.action, v.reason)) {
        // SAFETY: per-CPU slot, so no other CPU writes it; XDP runs with preemption disabled.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
    if v.slot != 0
        && let Some(c) = CG_RULE_STATS.get_ptr_mut(u32::from(v.slot))
    {
        // SAFETY: this CPU's copy of a per-CPU value, as above.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
    if v.sig != 0
        && let Some(c) = CG_SIG_STATS.get_ptr_mut(u32::from(v.sig))
    {
        // SAFETY: this CPU's copy of a per-CPU value, as above.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
    if v.action == Action::Drop
        && let Some(src) = src
        && let Some(lim) = CG_LIMITS.get(0)
        && lim.event_sample != 0
        && let Some(seq) = CG_EVSEQ.get_ptr_mut(0)
    {
        // SAFETY: this CPU's sequence number.
        let n = unsafe {
            *seq += 1;
            *seq
        };
        if n % u64::from(lim.event_sample) == 0 {
            emit(&source_key(src), event::DROP, v.reason, v.method, v.slot, v.sig, v.ua);
        }
    }
    v.action.xdp_action()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier proves the program cannot panic (a reachable `loop {}` would be
    // rejected), so this is never reached.
    unsafe { core::hint::unreachable_unchecked() }
}

/// The program's license: GPL-compatible, so GPL-only helpers may be called.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
