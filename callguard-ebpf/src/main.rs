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
//! 7. otherwise → pass `clean`.

mod parse;

use aya_ebpf::{
    helpers::bpf_ktime_get_boot_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use callguard_common::{
    Action, Counter, KernelConfig, NetEntry, NetMatch, Reason,
    config::{CONFIG_KEY, FLAG_DROP_FRAGMENTS, FLAG_DROP_MALFORMED, PORT_TCP, PORT_UDP},
    maps::{BPF_F_NO_PREALLOC, NET_EXACT_MAX, NET_LPM_MAX, PORT_COUNT, RULE_STATS_MAX},
    net::{EXPIRED_RETRIES, SCOPE_ALL},
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

/// A verdict: what to do, why, and the counter slot of the rule that decided (0 = none).
#[derive(Clone, Copy)]
struct Verdict {
    action: Action,
    reason: Reason,
    slot: u16,
}

impl Verdict {
    #[inline(always)]
    const fn pass(reason: Reason) -> Self {
        Self { action: Action::Pass, reason, slot: 0 }
    }
    #[inline(always)]
    const fn by_policy(drop: bool, reason: Reason) -> Self {
        Self { action: if drop { Action::Drop } else { Action::Pass }, reason, slot: 0 }
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
        return Verdict { action: Action::Drop, reason: Reason::Denied, slot };
    }
    if l3.later_fragment {
        return Verdict::by_policy(config_flags() & FLAG_DROP_FRAGMENTS != 0, Reason::Fragment);
    }
    let l4 = parse::parse_l4(ctx, &l3);
    let guarded = match l4.dst_port {
        Some(port) => is_guarded(l3.proto, port),
        None => false,
    };
    if let Some(defect) = l4.defect {
        return Verdict::by_policy(guarded && config_flags() & FLAG_DROP_MALFORMED != 0, defect);
    }
    if !guarded {
        return Verdict::pass(Reason::Unguarded);
    }
    match net {
        Some(NetMatch::Allow { slot, .. }) => Verdict { action: Action::Pass, reason: Reason::Allowed, slot },
        Some(NetMatch::Deny { slot, .. }) => Verdict { action: Action::Drop, reason: Reason::Denied, slot },
        _ => Verdict::pass(Reason::Clean),
    }
}

/// The policy flags, read only on the paths that need them (fragments, malformed headers).
#[inline(always)]
fn config_flags() -> u32 {
    match CG_CONFIG.get(CONFIG_KEY) {
        Some(cfg) => cfg.flags,
        None => 0,
    }
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
