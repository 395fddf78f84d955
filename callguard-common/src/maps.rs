//! Map names and sizes. The kernel program declares its maps with these names and sizes; the
//! daemon finds them, pins them and sizes them by the same constants.
//!
//! Names stay within the kernel's 15-character limit for map names (`BPF_OBJ_NAME_LEN` - 1), so
//! the name the kernel reports is the name written here.

/// Exact-match rules for single IPv4 addresses (/32): `HashMap<[u8; 4], NetEntry>`.
pub const NET_V4_EXACT: &str = "CG_NET4_EXACT";
/// Exact-match rules for single IPv6 addresses (/128): `HashMap<[u8; 16], NetEntry>`.
pub const NET_V6_EXACT: &str = "CG_NET6_EXACT";
/// IPv4 prefix rules (/0 to /31): `LpmTrie<[u8; 4], NetEntry>`.
pub const NET_V4_LPM: &str = "CG_NET4_LPM";
/// Where an IPv4 rule may apply, tested before the two IPv4 lookups: `Array<NetHints>` of
/// [`crate::net::HINT_VALUES`]; see [`crate::net::HINT_EXACT_BITS`].
pub const NET_V4_HINTS: &str = "CG_NET4_HINTS";
/// IPv4 single-address rules direct-mapped, read before `NET_V4_EXACT`: `Array<DirectSlot>`
/// of [`crate::net::DIRECT_SLOTS`]; see [`crate::net::DirectSlot`].
pub const NET_V4_DIRECT: &str = "CG_NET4_DIRECT";
/// IPv6 prefix rules (/0 to /127): `LpmTrie<[u8; 16], NetEntry>`.
pub const NET_V6_LPM: &str = "CG_NET6_LPM";
/// Guarded ports: `Array<u8>` indexed by destination port, [`crate::config::PORT_UDP`] and
/// [`crate::config::PORT_TCP`] bits.
pub const PORTS: &str = "CG_PORTS";
/// The single [`crate::KernelConfig`] record: `Array<KernelConfig>` of one slot.
pub const CONFIG: &str = "CG_CONFIG";
/// Per-CPU packet and byte counters by action and reason: `PerCpuArray<Counter>` indexed by
/// [`crate::stats::stats_index`].
pub const STATS: &str = "CG_STATS";
/// Per-CPU packet and byte counters by rule counter slot: `PerCpuArray<Counter>` indexed by
/// [`crate::NetEntry::allow_slot`] / [`crate::NetEntry::deny_slot`]. Slot 0 is never counted.
pub const RULE_STATS: &str = "CG_RULE_STATS";

/// Scanner signature automata: `Array<DfaBank>`, one value per bank; see [`crate::sig`].
pub const SIG_DFA: &str = "CG_SIG_DFA";
/// Scanner signature automata, per-bank header (byte classes, start states): `Array<DfaHead>`
/// of [`crate::sig::BANKS`].
pub const SIG_HEAD: &str = "CG_SIG_HEAD";
/// Per-CPU counters by signature slot: `PerCpuArray<Counter>` of [`crate::sig::SLOTS`].
pub const SIG_STATS: &str = "CG_SIG_STATS";
/// Per-CPU scratch buffer the SIP payload is copied into: `PerCpuArray<sip::Scratch>`.
pub const SCRATCH: &str = "CG_SCRATCH";
/// Per-CPU SIP parse in progress: `PerCpuArray<sip::Parse>`.
pub const PARSE: &str = "CG_PARSE";

/// Per-CPU verdict in progress (private to the program): passed through map memory so the
/// verifier walks the code after the decision once, not once per path.
pub const VERDICT: &str = "CG_VERDICT";

/// Per-source rate state: `LruHashMap<[u8; 16], limits::SourceState>`; see [`crate::limits`].
pub const SOURCES: &str = "CG_SOURCES";
/// Scratch for a new source's state (a ban the source cache holds writes it):
/// `PerCpuArray<limits::SourceState>` of one slot.
pub const SOURCE_NEW: &str = "CG_SOURCE_NEW";
/// What the kernel decided about a source before reading its datagram (its ban, its requests
/// over the rate), direct-mapped by source (`limits::SourceSlot`, `limits::SOURCE_CACHE_SLOTS`
/// slots and, past them, the key of the slots' hash, `limits::SOURCE_CACHE_SEED`).
pub const SOURCE_CACHE: &str = "CG_SOURCE_CACHE";
/// Rate limits and ban settings: `Array<limits::Limits>` of one slot.
pub const LIMITS: &str = "CG_LIMITS";
/// Each CPU's last `CLOCK_BOOTTIME` reading and the jiffy it was made in (private to the
/// program): a flood from a banned source reads the clock once a tick, not once a packet.
pub const TICK_CLOCK: &str = "CG_TICK_CLOCK";
/// Drop samples and ban requests: a ring buffer of `events::Event`.
pub const EVENTS: &str = "CG_EVENTS";
/// Each CPU's event sampling and budget state: `PerCpuArray<events::EventBudget>` of one slot.
pub const EVENT_BUDGET: &str = "CG_EVBUDGET";

/// Requests handed up to the daemon: a ring buffer of [`crate::handup::HandUp`]; see
/// [`crate::handup`]. When it is full the failure policy decides.
pub const HANDUP: &str = "CG_HANDUP";
/// Requests from registered sources ([`REGISTERED`]), handed up as to [`HANDUP`] but through a
/// queue of their own: a flood from other sources, spoofed or not, cannot fill it.
pub const HANDUP_REGISTERED: &str = "CG_HANDUP_REG";
/// Sources the PBX accepted a registration from (a `2xx` to a REGISTER, seen by the egress
/// program): `LruHashMap<[u8; 16], u64>` by source key ([`crate::limits::source_key_v4`]), the
/// `CLOCK_BOOTTIME` of the last such answer in nanoseconds; see [`crate::answer`].
pub const REGISTERED: &str = "CG_REGISTERED";
/// Failed authentications by source: `LruHashMap<[u8; 16], auth::AuthState>` by source key,
/// written by the XDP program (credentialed requests) and the egress program (the PBX's
/// answers); see [`crate::auth`].
pub const AUTH: &str = "CG_AUTH";
/// Failed authentications by user, from any source: `LruHashMap<u64, auth::UserAuth>` keyed
/// by `auth::UserWalk::key`; written by the egress program, read by the XDP program.
pub const AUTH_USERS: &str = "CG_AUTH_USERS";
/// Per-CPU counters of the PBX's answers: `PerCpuArray<u64>` indexed by
/// [`crate::answer::counter`].
pub const ANSWERS: &str = "CG_ANSWERS";
/// Per-CPU scratch buffer of the egress program: `PerCpuArray<sip::Scratch>` (its own, so the
/// XDP program's buffer is never shared).
pub const EGRESS_SCRATCH: &str = "CG_EG_SCRATCH";
/// The daemon's heartbeat: `Array<u64>` of one slot, `CLOCK_BOOTTIME` in nanoseconds of its
/// last beat. The program hands nothing up while it is stale.
pub const HEARTBEAT: &str = "CG_HEARTBEAT";

/// The XDP program's function name (and its ELF symbol).
/// (Maps are listed in the program; `callguard detach` removes every pin in the directory.)
pub const PROGRAM: &str = "callguard";
/// The SIP inspection programs: the XDP program tail-calls the first (through [`SIP_NEXT`]) for
/// every UDP datagram to a guarded port it leaves to SIP inspection, and each the next, so that
/// the verifier checks each within its own instruction limit. Function names, by slot.
pub const SIP_PROGRAMS: [&str; sip_next::COUNT as usize] =
    ["callguard_sip", "callguard_sip_judge", "callguard_conclude"];
/// The program array holding [`SIP_PROGRAMS`] by slot, which the daemon fills at load. Pinned: a
/// program array is emptied when its last user reference goes, and the kernel must go on
/// inspecting while the daemon is down.
pub const SIP_NEXT: &str = "CG_SIP_NEXT";

/// The slots of [`SIP_NEXT`].
pub mod sip_next {
    /// Reads the payload into the parse state.
    pub const PARSE: u32 = 0;
    /// Decides from what the parse found.
    pub const JUDGE: u32 = 1;
    /// Takes a verdict through the slow path to the exit.
    pub const CONCLUDE: u32 = 2;
    /// Number of slots.
    pub const COUNT: u32 = 3;
}
/// What the XDP program hands the first of [`SIP_PROGRAMS`] (per CPU: the source, where the payload is and
/// how long, the allow rule's profile, whether the datagram is fragmented). Pinned so that a
/// program adopted from an earlier daemon and this daemon's SIP programs share it.
pub const SIP_HANDOFF: &str = "CG_SIP_HANDOFF";
/// The egress program's function name (a TC classifier reading the PBX's answers).
pub const EGRESS_PROGRAM: &str = "callguard_egress";
/// A pass-everything program in the same object, loaded only by the benchmark as its reference.
pub const BASELINE_PROGRAM: &str = "callguard_baseline";
/// A program that reads every byte of the UDP payload once and does nothing else, in the same
/// object, loaded only by the benchmark: the cost of reading the packet, for the floor of each
/// SIP row.
pub const READ_ONCE_PROGRAM: &str = "callguard_read_once";
/// A drop-everything program in the same object, loaded only by the flood benchmark: what any
/// XDP drop costs in its harness.
pub const DROP_ALL_PROGRAM: &str = "callguard_drop_all";
/// The flood benchmark's generator, in the same object, loaded only by the benchmark: sends
/// every frame out of the interface it came in on (`XDP_TX`).
pub const TRANSMIT_PROGRAM: &str = "callguard_transmit";
/// The flood benchmark's spoofer, in the same object, loaded only by the benchmark: each frame
/// a new random IPv4 source within [`BENCH_SPOOF`]'s prefix, then the filter in [`BENCH_NEXT`].
pub const SPOOF_PROGRAM: &str = "callguard_spoof";
/// The spoofer's prefix: `Array<[u32; 2]>` of one slot, (address, mask) in host order.
pub const BENCH_SPOOF: &str = "CG_BENCH_SPOOF";
/// The filter the spoofer tail-calls: a program array of one slot.
pub const BENCH_NEXT: &str = "CG_BENCH_NEXT";

/// Capacity of each exact-match map. Entries are allocated on insert (`BPF_F_NO_PREALLOC`), so an
/// empty map costs nothing.
pub const NET_EXACT_MAX: u32 = 1 << 21;
/// Capacity of each LPM trie (LPM tries never preallocate).
pub const NET_LPM_MAX: u32 = 1 << 21;
/// Number of destination ports (the size of [`PORTS`]).
pub const PORT_COUNT: u32 = 1 << 16;
/// Counter slots for rules (1 MiB per CPU). Slots are handed out as rules are written to the
/// kernel; rules written once all are taken are counted by reason only.
pub const RULE_STATS_MAX: u32 = 1 << 16;

/// Sources tracked for rate limits (LRU: the least recently seen make room).
pub const SOURCES_MAX: u32 = 1 << 18;
/// Size of the event ring buffer in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 20;

/// Size of the hand-up ring buffer in bytes: room for about 2,000 requests waiting for the
/// daemon (a power of two, a multiple of the page size).
pub const HANDUP_BYTES: u32 = 1 << 22;

/// Size of the registered sources' hand-up ring buffer in bytes: room for about 500 requests.
pub const HANDUP_REGISTERED_BYTES: u32 = 1 << 20;
/// Sources whose authentications are counted (LRU: the least recently seen make room).
pub const AUTH_MAX: u32 = 1 << 16;
/// Users whose failed authentications are counted (LRU: the least recently failing make room).
pub const AUTH_USERS_MAX: u32 = 1 << 16;
/// Registered sources remembered (LRU: the least recently registered make room).
pub const REGISTERED_MAX: u32 = 1 << 16;

/// `BPF_F_NO_PREALLOC`: allocate hash entries on insert. Besides saving memory, it makes an
/// update of an existing key replace the element under RCU, so a reader sees the old or the new
/// value, never a mix.
pub const BPF_F_NO_PREALLOC: u32 = 1;
