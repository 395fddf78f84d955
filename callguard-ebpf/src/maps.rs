//! Every map of the program, pinned where userspace reads or writes it. Names, sizes and value
//! types come from `callguard_common::maps`; each static says what it holds.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use callguard_common::{
    Counter, KernelConfig, NetEntry,
    answer::{self, AnswerWalk},
    auth::{AuthState, UserAuth},
    events::EventBudget,
    limits::{Limits, SOURCE_CACHE_SLOTS, SourceSlot, SourceState},
    maps::{
        AUTH_MAX, AUTH_USERS_MAX, BPF_F_NO_PREALLOC, EVENTS_BYTES, HANDUP_BYTES, HANDUP_REGISTERED_BYTES,
        NET_EXACT_MAX, NET_LPM_MAX, PORT_COUNT, REGISTERED_MAX, RULE_STATS_MAX, SOURCES_MAX,
    },
    net::{DIRECT_SLOTS, DirectSlot, HINT_VALUES, NetHints},
    sig::{self, DfaBank, DfaHead},
    sip::{Parse, Scratch},
    stats::STATS_SLOTS,
};

/// Rules for single IPv4 addresses (`maps::NET_V4_EXACT`).
#[map]
pub(crate) static CG_NET4_EXACT: HashMap<[u8; 4], NetEntry> =
    HashMap::pinned(NET_EXACT_MAX, BPF_F_NO_PREALLOC);

/// Rules for single IPv6 addresses (`maps::NET_V6_EXACT`).
#[map]
pub(crate) static CG_NET6_EXACT: HashMap<[u8; 16], NetEntry> =
    HashMap::pinned(NET_EXACT_MAX, BPF_F_NO_PREALLOC);

/// IPv4 prefix rules (`maps::NET_V4_LPM`).
#[map]
pub(crate) static CG_NET4_LPM: LpmTrie<[u8; 4], NetEntry> = LpmTrie::pinned(NET_LPM_MAX, 0);

/// Where an IPv4 rule may apply (`maps::NET_V4_HINTS`): bits tested before the IPv4 lookups.
#[map]
pub(crate) static CG_NET4_HINTS: Array<NetHints> = Array::pinned(HINT_VALUES, 0);

/// IPv4 single-address rules, direct-mapped (`maps::NET_V4_DIRECT`): read before
/// `CG_NET4_EXACT`, written by the daemon alone.
#[map]
pub(crate) static CG_NET4_DIRECT: Array<DirectSlot> = Array::pinned(DIRECT_SLOTS, 0);

/// IPv6 prefix rules (`maps::NET_V6_LPM`).
#[map]
pub(crate) static CG_NET6_LPM: LpmTrie<[u8; 16], NetEntry> = LpmTrie::pinned(NET_LPM_MAX, 0);

/// Guarded ports (`maps::PORTS`): `PORT_UDP | PORT_TCP` bits by destination port.
#[map]
pub(crate) static CG_PORTS: Array<u8> = Array::pinned(PORT_COUNT, 0);

/// The policy record (`maps::CONFIG`); all zero means the defaults.
#[map]
pub(crate) static CG_CONFIG: Array<KernelConfig> = Array::pinned(1, 0);

/// Counters by (action, reason) (`maps::STATS`); the program writes the first `STATS_LEN`,
/// the daemon the rest (`stats::STATS_SLOTS`).
#[map]
pub(crate) static CG_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(STATS_SLOTS, 0);

/// Counters by rule counter slot (`maps::RULE_STATS`).
#[map]
pub(crate) static CG_RULE_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(RULE_STATS_MAX, 0);

/// Scanner signature automata, both banks (`maps::SIG_DFA`).
#[map]
pub(crate) static CG_SIG_DFA: Array<DfaBank> = Array::pinned(sig::BANKS, 0);

/// Byte classes and start states of each bank (`maps::SIG_HEAD`).
#[map]
pub(crate) static CG_SIG_HEAD: Array<DfaHead> = Array::pinned(sig::BANKS, 0);

/// Counters by signature slot (`maps::SIG_STATS`).
#[map]
pub(crate) static CG_SIG_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(sig::SLOTS, 0);

/// Scratch space for the SIP payload (`maps::SCRATCH`): too large for the 512-byte stack.
#[map]
pub(crate) static CG_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The SIP parse in progress (`sip::Parse`). Kept in map memory rather than on the stack on
/// purpose: the verifier does not track what a map value holds, so the many shapes a parse can
/// take (methods, header combinations, positions) reach the code after it as one state.
#[map]
pub(crate) static CG_PARSE: PerCpuArray<Parse> = PerCpuArray::with_max_entries(1, 0);

/// Per-source rate state (`maps::SOURCES`).
#[map]
pub(crate) static CG_SOURCES: LruHashMap<[u8; 16], SourceState> = LruHashMap::pinned(SOURCES_MAX, 0);

/// What the kernel decided about a source before reading its datagram, direct-mapped by source
/// (`maps::SOURCE_CACHE`): one load where `CG_SOURCES` needs a lookup. Its last entry holds
/// the key of the slots' hash (`limits::SOURCE_CACHE_SEED`). Pinned, so that every
/// program sharing `CG_SOURCES` shares it too, and lifting a ban clears it for all of them.
#[map]
pub(crate) static CG_SOURCE_CACHE: Array<SourceSlot> = Array::pinned(SOURCE_CACHE_SLOTS + 1, 0);

/// A source's state as the ban its source cache slot holds writes it back (`police::keep_ban`):
/// all zero but `banned_until`, written in place before the insert (`maps::SOURCE_NEW`).
#[map]
pub(crate) static CG_SOURCE_NEW: PerCpuArray<SourceState> = PerCpuArray::with_max_entries(1, 0);

/// Rate limits, ban and enumeration settings (`maps::LIMITS`).
#[map]
pub(crate) static CG_LIMITS: Array<Limits> = Array::pinned(1, 0);

/// Drop samples and ban requests for the daemon (`maps::EVENTS`).
#[map]
pub(crate) static CG_EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

/// Each CPU's event sampling and budget state (`maps::EVENT_BUDGET`).
#[map]
pub(crate) static CG_EVBUDGET: PerCpuArray<EventBudget> = PerCpuArray::with_max_entries(1, 0);

/// Requests handed up to the daemon (`maps::HANDUP`).
#[map]
pub(crate) static CG_HANDUP: RingBuf = RingBuf::pinned(HANDUP_BYTES, 0);

/// The daemon's last heartbeat (`maps::HEARTBEAT`).
#[map]
pub(crate) static CG_HEARTBEAT: Array<u64> = Array::pinned(1, 0);

/// Requests from registered sources (`maps::HANDUP_REGISTERED`).
#[map]
pub(crate) static CG_HANDUP_REG: RingBuf = RingBuf::pinned(HANDUP_REGISTERED_BYTES, 0);

/// Sources the PBX accepted a registration from (`maps::REGISTERED`), written by the egress
/// program, read by the hand-up.
#[map]
pub(crate) static CG_REGISTERED: LruHashMap<[u8; 16], u64> = LruHashMap::pinned(REGISTERED_MAX, 0);

/// Counters of the PBX's answers (`maps::ANSWERS`).
#[map]
pub(crate) static CG_ANSWERS: PerCpuArray<u64> = PerCpuArray::pinned(answer::counter::COUNT, 0);

/// The egress program's scratch buffer (`maps::EGRESS_SCRATCH`).
#[map]
pub(crate) static CG_EG_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The egress program's answer being read (`answer::AnswerWalk`), in map memory for the same
/// reason as `CG_PARSE`.
#[map]
pub(crate) static CG_EG_WALK: PerCpuArray<AnswerWalk> = PerCpuArray::with_max_entries(1, 0);

/// Failed authentications by source (`maps::AUTH`): credentialed requests noted by the XDP
/// program, the PBX's answers to them by the egress program.
#[map]
pub(crate) static CG_AUTH: LruHashMap<[u8; 16], AuthState> = LruHashMap::pinned(AUTH_MAX, 0);

/// Failed authentications by user (`maps::AUTH_USERS`): counted by the egress program, read by
/// the XDP program to drop REGISTERs for a guarded user.
#[map]
pub(crate) static CG_AUTH_USERS: LruHashMap<u64, UserAuth> = LruHashMap::pinned(AUTH_USERS_MAX, 0);

/// The flood benchmark's spoofer: the prefix its sources are drawn from, as (address, mask),
/// host-order IPv4 (`maps::BENCH_SPOOF`). Never pinned; only the benchmark fills it.
#[map]
pub(crate) static CG_BENCH_SPOOF: Array<[u32; 2]> = Array::with_max_entries(1, 0);

/// The flood benchmark's spoofer: the filter under test, tail-called (`maps::BENCH_NEXT`).
#[map]
pub(crate) static CG_BENCH_NEXT: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Zeroes the value at `p` (a map value, or one on the stack) with one volatile store per 8-byte
/// word, where a zeroed value the
/// compiler writes is a `memset`: BPF code calls it as a function of its own (a byte loop), and
/// on x86 the return of every call pays the CPU's SRSO mitigation. Volatile, so that the stores
/// are not merged back into one.
///
/// # Safety
///
/// `p` points to a writable value, 8-aligned, that nothing else uses meanwhile (a map value:
/// this CPU's, or one other CPUs may race on as they may on any store to it), of a type that
/// all-zero bytes make valid.
#[inline(always)]
pub(crate) unsafe fn zero_words<T>(p: *mut T) {
    const { assert!(size_of::<T>().is_multiple_of(8)) };
    let words = p.cast::<u64>();
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: word i of the value, inside it (the size is a whole number of words).
        unsafe { words.add(i).write_volatile(0) };
    }
}
