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
//!    → drop `signature`, a refused method → drop `method`, a request matching only dry-run
//!    signatures → pass `signature`;
//! 8. otherwise → pass `clean`.

mod parse;

use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, bpf_loop, bpf_xdp_load_bytes},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use callguard_common::{
    Action, Counter, KernelConfig, NetEntry, NetMatch, Reason,
    config::{CONFIG_KEY, FLAG_DROP_FRAGMENTS, FLAG_DROP_MALFORMED, FLAG_DROP_NOT_SIP, PORT_TCP, PORT_UDP},
    maps::{BPF_F_NO_PREALLOC, NET_EXACT_MAX, NET_LPM_MAX, PORT_COUNT, RULE_STATS_MAX},
    net::{EXPIRED_RETRIES, SCOPE_ALL},
    sig::{self, DfaHead, DfaRow, Hit, MODE_DRY_RUN, MODE_ENFORCE},
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
static CG_SIG_DFA: Array<DfaRow> = Array::pinned(sig::BANKS * sig::DFA_STATES, 0);
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

/// A verdict: what to do, why, the counter slot of the rule that decided (0 = none) and of the
/// signature that matched (0 = none).
#[derive(Clone, Copy)]
struct Verdict {
    action: Action,
    reason: Reason,
    slot: u16,
    sig: u16,
}

impl Verdict {
    #[inline(always)]
    const fn pass(reason: Reason) -> Self {
        Self { action: Action::Pass, reason, slot: 0, sig: 0 }
    }
    #[inline(always)]
    const fn by_policy(drop: bool, reason: Reason) -> Self {
        Self { action: if drop { Action::Drop } else { Action::Pass }, reason, slot: 0, sig: 0 }
    }
}

#[xdp]
#[expect(clippy::needless_pass_by_value, reason = "the #[xdp] macro hands the context over by value")]
fn callguard(ctx: XdpContext) -> u32 {
    let verdict = decide(&ctx);
    finish(&ctx, verdict)
}

/// A program that passes everything and does nothing else: the reference the benchmark
/// (`cargo xtask bench`) measures callguard against, in the same run. Never attached.
#[xdp]
fn callguard_baseline(_ctx: XdpContext) -> u32 {
    Action::Pass.xdp_action()
}

#[inline(always)]
fn decide(ctx: &XdpContext) -> Verdict {
    let l3 = match parse::parse_l3(ctx) {
        Ok(l3) => l3,
        Err(reason) => return Verdict::pass(reason),
    };
    let net = match l3.src {
        Src::V4(addr) => lookup_v4(addr),
        Src::V6(addr) => lookup_v6(addr),
    };
    if let Some(NetMatch::Deny { slot, scope: SCOPE_ALL, .. }) = net {
        return Verdict { action: Action::Drop, reason: Reason::Denied, slot, sig: 0 };
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
        Some(NetMatch::Allow { slot, .. }) => {
            Verdict { action: Action::Pass, reason: Reason::Allowed, slot, sig: 0 }
        }
        Some(NetMatch::Deny { slot, .. }) => {
            Verdict { action: Action::Drop, reason: Reason::Denied, slot, sig: 0 }
        }
        _ if l3.proto == IPPROTO_UDP => inspect_sip(ctx, l3.l4_off + 8),
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
    let (Some(head), Some(buf)) = (CG_SIG_HEAD.get(walk.bank), CG_SCRATCH.get_ptr(0)) else { return 1 };
    // SAFETY: this CPU's scratch buffer, filled by inspect_sip in this program run.
    let buf = unsafe { &*buf };
    let span = walk.fields[field];
    let start = head.start[field];
    if start == sig::STATE_DEAD || !span.is_some() {
        return 0;
    }
    let base = walk.bank * sig::DFA_STATES;
    let off = usize::from(span.off);
    let hit = sig::walk(
        head,
        start,
        |k| buf.buf[(off + k) & (SCAN_LEN - 1)],
        usize::from(span.len),
        FIELD_MAX,
        |state| CG_SIG_DFA.get(base + u32::from(state)),
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
fn inspect_sip(ctx: &XdpContext, payload_off: usize) -> Verdict {
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
    let buf = unsafe { &*buf };
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
        return Verdict { action: Action::Drop, reason: Reason::Signature, slot: 0, sig: walk.hit.slot };
    }
    let dry_run = walk.hit.slot;
    if info.kind == Kind::Request && cfg.method_drop & (1 << info.method) != 0 {
        return Verdict { action: Action::Drop, reason: Reason::Method, slot: 0, sig: dry_run };
    }
    if dry_run != 0 {
        return Verdict { action: Action::Pass, reason: Reason::Signature, slot: 0, sig: dry_run };
    }
    Verdict::pass(Reason::Clean)
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
fn finish(ctx: &XdpContext, v: Verdict) -> u32 {
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
