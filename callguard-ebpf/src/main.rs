#![no_std]
#![no_main]
//! callguard's XDP program: the per-packet fast path.
//!
//! For each frame: parse Ethernet, VLAN, IP and the transport header ([`parse`]); look the source
//! up in the network rules (exact hash, then LPM trie, IPv4 and IPv6; for IPv4 each only where
//! the rule hints say a rule may apply); decide with the policy in
//! `CG_CONFIG` and the guarded ports in `CG_PORTS`; count the verdict by (action, reason) and, when
//! a rule decided, by that rule's counter slot. Every exit goes through [`finish`], so every
//! verdict is counted.
//!
//! | file | concern |
//! |---|---|
//! | `main.rs` | the entry points and [`decide`]: the order of decisions below |
//! | `maps.rs` | every map, but two the program keeps to itself: the verdict's scratch map (in `verdict.rs`) and the clock's (in `clock.rs`) |
//! | `clock.rs` | the boot clock, exact or as of this CPU's tick |
//! | `parse.rs` | Ethernet, VLAN, IPv4, IPv6 and its extension headers, UDP/TCP |
//! | `net.rs` | guarded ports and the network-rule lookup |
//! | `verdict.rs` | the verdict and the helpers that join the verifier's paths |
//! | `inspect.rs` | SIP inspection: header lines, signature automata, the To value |
//! | `police.rs` | per-source rate limits, extension-scan detection, bans |
//! | `auth.rs` | failed authentications: credentialed requests here, the PBX's answers in egress |
//! | `handup.rs` | the hand-up to the daemon and its failure policy |
//! | `events.rs` | drop samples and bans for the daemon (`CG_EVENTS`) |
//! | `egress.rs` | the egress program: the PBX's answers, registered sources |
//! | `exit.rs` | the one exit: counters, drop sampling, the XDP return code |
//!
//! Order of decisions (documented in the README):
//! 1. no usable IP header → pass, counted by the defect (`not_ip`, `truncated_*`, ...);
//! 2. source denied with scope `all` → drop `denied`; an IPv6 extension-header chain longer
//!    than the walk (transport unknown) → pass `allowed` if the source is authorized, else the
//!    long-chain policy (`header_chain_too_long`);
//! 3. a later fragment → the fragment policy (`fragment`);
//! 4. a defective transport header → the malformed policy if the port is guarded, else pass;
//! 5. port not guarded → pass `unguarded`;
//! 6. source authorized → pass `allowed`; source denied (scope `sip`) → drop `denied`;
//! 7. UDP from a source in neither list: a source the kernel banned → drop `banned`, unread; a
//!    datagram that begins like a request from a source in an exceeding streak, over its rate
//!    for all requests → drop `rate`, unread (when the source is due for a ban, it is read
//!    instead and banned below);
//!    else SIP inspection ([`parse_sip`], [`judge_sip`], in programs of their own: [`handoff`]) — a first fragment that
//!    is not a SIP response → drop `fragmented` (policy), not SIP → `not_sip` (policy),
//!    keepalive → pass `keepalive`, a request matching an enforcing scanner signature → drop
//!    `signature` (and a ban of the source, when configured), a request with two To, From or
//!    Call-ID headers → drop `duplicate_header`, a header line a PBX may read but this parser
//!    cannot (a colon past eight spaces) → drop `ambiguous_header`, a refused method → drop
//!    `method`, a request
//!    matching only dry-run signatures → pass `signature`; then, for
//!    requests, the per-source state (`police.rs`): a source the kernel banned → drop `banned`;
//!    a request over a rate limit → drop `rate` (a source that keeps exceeding is banned); too
//!    many distinct To values → banned;
//! 8. otherwise → pass `clean`.

mod auth;
mod clock;
mod egress;
mod events;
mod exit;
mod handoff;
mod handup;
mod inspect;
mod maps;
mod net;
mod parse;
mod police;
mod verdict;

use aya_ebpf::{macros::xdp, programs::XdpContext};
use callguard_common::{
    Action, NetMatch, Reason,
    config::{FLAG_DROP_FRAGMENTS, FLAG_DROP_LONG_CHAINS, FLAG_DROP_MALFORMED},
    net::{PROFILE_TRUSTED, SCOPE_ALL},
    sip,
};
use parse::{IPPROTO_UDP, Src};

use crate::{
    auth::note_credentials,
    exit::finish,
    handoff::{Handoff, inspect_in_sip_program},
    handup::slow_path,
    inspect::{ALLOWED, judge_sip, parse_sip},
    net::{is_guarded, lookup_v4, lookup_v6},
    police::{before_reading, early_after_read},
    verdict::{SLOW_CANDIDATE, SLOW_CREDENTIALS, Verdict, config, forget, note_fragmented, recall},
};

#[xdp]
#[expect(clippy::needless_pass_by_value, reason = "the #[xdp] macro hands the context over by value")]
fn callguard(ctx: XdpContext) -> u32 {
    let mut src = None;
    let verdict = forget(decide(&ctx, &mut src));
    finish(&ctx, verdict, src)
}

/// SIP inspection of a UDP datagram to a guarded port, its first stage (see [`handoff`]):
/// tail-called by [`callguard`], it reads the payload, then tail-calls the judge, with the
/// verdict when what it read needed no more.
#[xdp]
#[expect(clippy::needless_pass_by_value, reason = "the #[xdp] macro hands the context over by value")]
fn callguard_sip(ctx: XdpContext) -> u32 {
    let Some(h) = handoff::taken() else { return finish(&ctx, Verdict::pass(Reason::Clean), None) };
    // The verifier knows nothing of map memory: a bound, so that the payload offset may point
    // into the packet (a frame is never this long).
    if h.payload_off > 0xffff {
        return finish(&ctx, Verdict::pass(Reason::Clean), Some(h.src));
    }
    note_fragmented(h.fragmented);
    if let Some(verdict) = parse_sip(&ctx, h.payload_off as usize, h.udp_payload as usize, h.profiled) {
        forget(verdict);
        handoff::note_decided();
    }
    // The judge in either case: one slot, a direct jump (see `handoff`).
    handoff::next(&ctx, handoff::JUDGE);
    finish(&ctx, Verdict::pass(Reason::Clean), Some(h.src))
}

/// SIP inspection, second stage (see [`handoff`]): the verdict on what the parse found, unless
/// the parse decided alone.
#[xdp]
#[expect(clippy::needless_pass_by_value, reason = "the #[xdp] macro hands the context over by value")]
fn callguard_sip_judge(ctx: XdpContext) -> u32 {
    let Some(h) = handoff::taken() else { return finish(&ctx, Verdict::pass(Reason::Clean), None) };
    if h.decided == 0 {
        forget(judge_sip(h.src));
    }
    handoff::next(&ctx, handoff::CONCLUDE);
    finish(&ctx, Verdict::pass(Reason::Clean), Some(h.src))
}

/// The last stage of SIP inspection (see [`handoff`]): the slow path, the credentials noted
/// for the answer, the exit.
#[xdp]
#[expect(clippy::needless_pass_by_value, reason = "the #[xdp] macro hands the context over by value")]
fn callguard_conclude(ctx: XdpContext) -> u32 {
    let (Some(src), Some(verdict)) = (handoff::taken_src(), recall()) else {
        return finish(&ctx, Verdict::pass(Reason::Clean), None);
    };
    // A datagram that began like a request and is none, from a source whose check before the
    // read the source cache's note left for after it (`looked::SKIPPED`): that check, which
    // would have dropped it whatever it held (`police` makes it for requests). Here, not in
    // the judge, whose hot path its code would lengthen.
    if verdict.action == Action::Pass
        && verdict.reason == Reason::NotSip
        && handoff::taken_looked() == handoff::looked::SKIPPED
        && let Some(reason) = early_after_read(src)
    {
        *verdict = Verdict::new(Action::Drop, reason, 0);
    }
    let src = Some(src);
    if verdict.slow & SLOW_CANDIDATE != 0 {
        slow_path(&ctx, verdict, src);
    }
    if verdict.slow & SLOW_CREDENTIALS != 0
        && verdict.action != Action::Drop
        && let Some(src) = src
    {
        note_credentials(src, verdict.method);
    }
    finish(&ctx, *verdict, src)
}

/// A program that passes everything and does nothing else: the reference the benchmark
/// (`cargo xtask bench`) measures callguard against, in the same run. Never attached.
#[xdp]
fn callguard_baseline(_ctx: XdpContext) -> u32 {
    Action::Pass.xdp_action()
}

/// A program that drops everything and does nothing else: in the flood benchmark, what any
/// XDP drop costs in its harness (the floor no XDP filter goes below). Never attached.
#[xdp]
fn callguard_drop_all(_ctx: XdpContext) -> u32 {
    Action::Drop.xdp_action()
}

/// A program that sends every frame back out of the interface it came in on, and does nothing
/// else: the flood benchmark's generator, run in live-frames mode on the sending end of a veth
/// pair (the kernel turns `XDP_TX` there into a transmit to the other end). Attached only by
/// the benchmark, to an idle veth of its own (see `flood_calls::generator` in the tests).
#[xdp]
fn callguard_transmit(_ctx: XdpContext) -> u32 {
    aya_ebpf::bindings::xdp_action::XDP_TX
}

/// Most bytes of UDP payload [`callguard_read_once`] reads (a standard MTU's worth).
const READ_ONCE_MAX: usize = 1536;

/// A program that reads every byte of an IPv4 UDP payload once, with 8-byte loads summed, and
/// does nothing else: what the benchmark's floor adds to the network lookups for reading the
/// packet (`cargo xtask bench --only kernel`). The sum decides the verdict, so that no load can
/// be left out. Never attached; it assumes Ethernet, IPv4 and UDP without checking them.
#[xdp]
#[expect(clippy::needless_pass_by_value, reason = "the #[xdp] macro hands the context over by value")]
fn callguard_read_once(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    let Some(ihl) = parse::ptr_at::<u8>(&ctx, 14) else { return Action::Pass.xdp_action() };
    // SAFETY: ptr_at checked that the byte is inside the packet.
    let ihl = usize::from(unsafe { *ihl } & 0x0f) * 4;
    let mut p = start + 14 + ihl + 8;
    let mut sum: u64 = 0;
    // Bounded: the verifier walks each iteration with the `p + 8 <= end` check before the load.
    for _ in 0..READ_ONCE_MAX / 8 {
        if p + 8 > end {
            break;
        }
        // SAFETY: the eight bytes at p are inside the packet (checked just above). A plain load,
        // not read_unaligned: that is eight byte loads in BPF, and the JIT's loads need no
        // alignment on the machines callguard runs on.
        sum = sum.wrapping_add(unsafe { *(p as *const u64) });
        p += 8;
    }
    for _ in 0..7 {
        if p + 1 > end {
            break;
        }
        // SAFETY: the byte at p is inside the packet (checked just above).
        sum = sum.wrapping_add(u64::from(unsafe { *(p as *const u8) }));
        p += 1;
    }
    if sum == 0x5349_5020_666c_6f6f { Action::Drop.xdp_action() } else { Action::Pass.xdp_action() }
}

/// The flood benchmark's spoofer (never attached): gives each frame a new IPv4 source, random
/// within the prefix in `CG_BENCH_SPOOF`, mends the header checksum, clears the UDP checksum
/// (IPv4 allows none), and tail-calls the filter under test (`CG_BENCH_NEXT`, slot 0). In a
/// live-frames run every packet then comes from a new source, as in a spoofed flood; its own
/// cost is paid alike by every filter. Assumes Ethernet, IPv4 without options and UDP.
#[xdp]
#[expect(clippy::needless_pass_by_value, reason = "the #[xdp] macro hands the context over by value")]
fn callguard_spoof(ctx: XdpContext) -> u32 {
    if let (Some(hdr), Some(net)) = (parse::ptr_at::<[u8; 28]>(&ctx, 14), maps::CG_BENCH_SPOOF.get(0)) {
        // SAFETY: ptr_at checked that the 28 bytes are inside the packet, which this program
        // may write.
        let hdr = unsafe { &mut *hdr.cast_mut() };
        // SAFETY: the helper has no preconditions.
        let r = unsafe { aya_ebpf::helpers::bpf_get_prandom_u32() };
        let old = u32::from_be_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]);
        let new = (net[0] & net[1]) | (r & !net[1]);
        hdr[12..16].copy_from_slice(&new.to_be_bytes());
        // RFC 1624: HC' = ~(~HC + ~m + m'), over the two 16-bit words of the address.
        let mut sum = u32::from(!u16::from_be_bytes([hdr[10], hdr[11]]));
        sum += u32::from(!(old >> 16) as u16) + u32::from(!old as u16);
        sum += (new >> 16) + (new & 0xffff);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        hdr[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        hdr[26] = 0;
        hdr[27] = 0;
    }
    // SAFETY: the context is this program's; on success the call does not return.
    unsafe { maps::CG_BENCH_NEXT.tail_call(&ctx, 0) };
    Action::Pass.xdp_action()
}

/// The verdict on one frame, before the slow path and the exit.
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
    if l3.chain_too_long {
        // The port is out of reach, so this may be SIP to a guarded port that skipped every
        // check below: only an authorized source is given the benefit of the doubt.
        // (Not one whose calls are checked: its INVITEs would pass unread.)
        return match net {
            Some(NetMatch::Allow { slot, profile: PROFILE_TRUSTED, .. }) => {
                Verdict::new(Action::Pass, Reason::Allowed, slot)
            }
            _ => Verdict::by_policy(config().flags & FLAG_DROP_LONG_CHAINS != 0, Reason::HeaderChainTooLong),
        };
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
    // An allow rule with a call profile (a trunk, phones) has its UDP read for initial INVITEs
    // to hand up; nothing from it is dropped for what SIP inspection finds.
    let profiled = match net {
        Some(NetMatch::Allow { slot, profile, .. }) if profile != PROFILE_TRUSTED => {
            u32::from(slot) | ALLOWED
        }
        _ => 0,
    };
    match net {
        Some(NetMatch::Allow { slot, .. }) if profiled == 0 || l3.proto != IPPROTO_UDP => {
            return Verdict::new(Action::Pass, Reason::Allowed, slot);
        }
        Some(NetMatch::Deny { slot, .. }) => return Verdict::new(Action::Drop, Reason::Denied, slot),
        _ => {}
    }
    if l3.proto != IPPROTO_UDP {
        return Verdict::pass(Reason::Clean);
    }
    let payload_off = l3.l4_off + 8;
    // Whatever a banned source sends to a guarded port goes unread, as its stored ban (a deny
    // rule) will treat it; so do the requests of a source over its rate for all requests.
    let mut looked = handoff::looked::STATE;
    if profiled == 0
        && let Some(reason) =
            before_reading(&l3.src, l4.udp_payload >= 4 && begins_like_request(ctx, payload_off), &mut looked)
    {
        return Verdict::new(Action::Drop, reason, 0);
    }
    inspect_in_sip_program(
        ctx,
        Handoff {
            src: l3.src,
            payload_off: payload_off as u32,
            udp_payload: l4.udp_payload as u32,
            profiled,
            fragmented: l3.first_fragment,
            looked,
            decided: 0,
        },
    )
}

/// Whether the UDP payload at `off` begins like a request line ([`sip::looks_like_request`]).
#[inline(always)]
fn begins_like_request(ctx: &XdpContext, off: usize) -> bool {
    // SAFETY: ptr_at checked that the four bytes are inside the packet.
    parse::ptr_at::<[u8; 4]>(ctx, off).is_some_and(|p| sip::looks_like_request(unsafe { *p }))
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
