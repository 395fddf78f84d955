//! Per-source rate limits, automatic bans and enumeration detection, as the XDP program
//! applies them to SIP requests from sources outside the authorized networks.
//!
//! A source is an IPv4 address or an IPv6 /64 ([`source_key`]). Each source has, in
//! [`crate::maps::SOURCES`] (an LRU hash: the least recently seen sources make room), three token
//! buckets kept as GCRA "theoretical arrival times" — all requests, REGISTER, INVITE — a record of
//! how long it has kept exceeding them, and a 256-bit sketch of the To values it has sent in the
//! current enumeration window. Updates race between CPUs without locks; a lost update lets one
//! request more through, never fewer, which is acceptable for a rate limit.

/// Bucket index: every request.
pub const BUCKET_ALL: usize = 0;
/// Bucket index: REGISTER.
pub const BUCKET_REGISTER: usize = 1;
/// Bucket index: INVITE.
pub const BUCKET_INVITE: usize = 2;
/// Number of buckets.
pub const BUCKETS: usize = 3;

/// Bits in the enumeration sketch.
pub const SKETCH_BITS: usize = 256;
/// Most To values hashed, in bytes (the value up to `>` or `;`).
pub const TO_HASH_MAX: usize = 64;
/// An exceeding streak ends after this long without exceeding.
pub const STREAK_GAP_NS: u64 = 1_000_000_000;

/// The limits record: the single value of [`crate::maps::LIMITS`]. A bucket with `interval_ns
/// == 0` is off; `ban_after_ns == 0` turns bans for rate off; `enum_users == 0` turns
/// enumeration detection off. All zero (the map's initial state) means no limits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Nanoseconds between requests at the sustained rate (1e9 / rate), by bucket.
    pub interval_ns: [u64; BUCKETS],
    /// Burst tolerance: `interval_ns * (burst - 1)`, by bucket.
    pub tau_ns: [u64; BUCKETS],
    /// A source exceeding a bucket without a pause longer than [`STREAK_GAP_NS`] for this long
    /// is banned.
    pub ban_after_ns: u64,
    /// How long the kernel itself keeps a rate or enumeration ban (the daemon's deny rule takes
    /// over when it lands).
    pub ban_ns: u64,
    /// How long the kernel keeps a ban for a signature match: short, since one packet with a
    /// spoofed source is enough for it.
    pub sig_ban_ns: u64,
    /// Enumeration window.
    pub enum_window_ns: u64,
    /// A source whose requests carry more than this many distinct To values in one window is
    /// banned.
    pub enum_users: u32,
    /// Of the drops, one in `event_sample` is offered as an event (0: none), subject to the
    /// event budget (`event_interval_ns`).
    pub event_sample: u32,
    /// Failed authentications ([`crate::auth`]) are counted within this window.
    pub auth_window_ns: u64,
    /// How long the kernel keeps a ban for failed authentications.
    pub auth_ban_ns: u64,
    /// A source whose failed authentications within the window reach this many is banned (0:
    /// not counted).
    pub auth_failures: u32,
    /// A user whose failed authentications within the window, from any sources, reach this
    /// many is guarded ([`crate::auth::UserAuth`]); 0: users are not counted.
    pub auth_user_failures: u32,
    /// How long a user stays guarded.
    pub auth_user_guard_ns: u64,
    /// The event budget of each CPU, two GCRA buckets ([`gcra`]) kept in
    /// [`crate::maps::EVENT_BUDGET`]: drop samples, and apart from them signature bans (one
    /// packet, forged at no cost, makes either), are each written at most once per
    /// `event_interval_ns` on average, the rest counted as suppressed; 0: no budget. Bans for rate, extension scans and failed
    /// authentications, and guarded users, take sustained traffic from one source and are
    /// always written.
    pub event_interval_ns: u64,
    /// The budget's burst tolerance ([`Limits::tau_ns`] for the event bucket).
    pub event_tau_ns: u64,
}

const _: () = assert!(size_of::<Limits>() == 8 * 15 + 16);

/// A GCRA bucket step: `Some(new tat)` when a request at `now` conforms, `None` when it exceeds.
#[inline(always)]
pub const fn gcra(tat: u64, now: u64, interval: u64, tau: u64) -> Option<u64> {
    let t = if tat > now { tat } else { now };
    if t - now > tau { None } else { Some(t + interval) }
}

/// Per-source state: the value of [`crate::maps::SOURCES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceState {
    /// GCRA theoretical arrival time by bucket (`CLOCK_BOOTTIME` ns).
    pub tat: [u64; BUCKETS],
    /// Start of the current exceeding streak (0: none).
    pub over_since: u64,
    /// Last time a bucket was exceeded.
    pub last_over: u64,
    /// Banned by the kernel until then (0: not banned).
    pub banned_until: u64,
    /// Start of the current enumeration window.
    pub enum_start: u64,
    /// The sketch of To values seen in the window.
    pub sketch: [u64; SKETCH_BITS / 64],
}

const _: () = assert!(size_of::<SourceState>() == 8 * 11);

#[cfg(feature = "user")]
// SAFETY: repr(C), u64 fields only, no padding; every bit pattern valid.
unsafe impl aya::Pod for Limits {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for SourceState {}

/// Slots of the source cache ([`crate::maps::SOURCE_CACHE`]) that hold sources.
pub const SOURCE_CACHE_SLOTS: u32 = 1 << 16;

/// The index of the source cache's one further entry, which holds the key of its hash (see
/// [`cache_slot`]) in `key`: written by the daemon, at random, when it creates the map, and
/// kept with the map (a program that adopts the map adopts its key; an upgrade's new map draws
/// its own and the carried bans are placed by it). The map has `SOURCE_CACHE_SLOTS + 1`
/// entries.
pub const SOURCE_CACHE_SEED: u32 = SOURCE_CACHE_SLOTS;

/// What the kernel decided about a source before reading its datagram, in the source cache
/// ([`crate::maps::SOURCE_CACHE`]): its ban, the tick in which its requests were over its
/// rate, and the tick in which its state had nothing to decide before a request's read,
/// direct-mapped by source and read with one load where [`crate::maps::SOURCES`] needs a
/// lookup. A slot holds the last source written of those that share it; a source not in its
/// slot is looked up in the sources' map as before.
///
/// A signature ban of a source without state (a scanner's first request, each packet of a
/// spoofed flood) is written only here; the first packet the slot then drops writes it into
/// the source's state (inserted banned), so a source that sends again holds its ban in both.
/// A ban's slot may also outlive its source's state when the LRU map evicts it (a flood of
/// new sources): the slot keeps the ban, and the next of the source's packets to look its
/// state up (every [`TOUCH_EVERY`]th the slot drops) writes the state back, banned. A ban held
/// only by its slot ends early when another source's ban takes the slot: the source's next
/// request is read again (and banned again, if it is a scanner's); the daemon's stored ban,
/// once stored, holds regardless.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceSlot {
    /// The source's key ([`source_key_v4`], [`source_key_v6`]) as two native-order words. One
    /// of them is always zero (an IPv4 key's first, a /64 key's second), so a key torn between
    /// two writers is one of theirs, or `[0, 0]` (the key of `::/64`, no source on the
    /// Internet's).
    pub key: [u64; 2],
    /// Banned until then (`CLOCK_BOOTTIME` ns), as in [`SourceState::banned_until`]; 0: not
    /// banned.
    pub banned_until: u64,
    /// The jiffy (as [`jiffy32`] gives it) in which the source's state, looked up, found a
    /// request over its rate for all requests in a streak not yet due for a ban (before the
    /// read, or after it, where the rate limits take their tokens): its other requests in
    /// that jiffy are dropped alike, unread, without the lookup. The limits run at the
    /// tick's grain, so the lookup would mostly decide the same; but each CPU reads the clock
    /// once a jiffy, and another CPU's later reading (or a change of the limits) could have let
    /// a request through or found the ban due: then the note holds them one jiffy longer. 0:
    /// none. (A note left 2^32 jiffies ago, 50 days at `HZ=1000`, reads as this jiffy's: one
    /// tick of one source's requests dropped as over its rate.)
    pub over_jiffy: u32,
    /// Packets the slot's ban has dropped (wrapping; 2^16 is a multiple of [`TOUCH_EVERY`]):
    /// the first, and every [`TOUCH_EVERY`]th after it, looks the source's state up, which keeps
    /// it recently used in the LRU map, and writes the ban into it (inserting the state if
    /// there is none).
    pub hits: u16,
    /// The jiffy (as [`jiffy16`] gives it) in which the source's state, looked up for a
    /// request, had nothing to decide before the read: no ban, no used-up bucket for all
    /// requests. The source's other requests in that jiffy leave that check for after the
    /// read, where the rate limits look the state up anyway: so a note, even a stale one (a
    /// 16-bit jiffy reads as this one's again after 2^16 jiffies) or one torn between two
    /// writers, changes when the check is made, never lets by what it would drop (only, at
    /// times, the reason: a request the check would drop may be dropped for what the read
    /// finds first, such as a scanner's signature, which then bans the scanner).
    /// Replaced by the over-rate note when a request in a streak uses up the bucket for all
    /// requests, and cleared by a ban (the slot is rewritten). 0: none. (Where a release before this field
    /// kept a 32-bit `hits`, this is its upper half: a slot whose ban dropped 65,536 packets or
    /// more under that release reads as noted in some jiffy, which changes nothing more.)
    pub clear_jiffy: u16,
}

/// How often a banned source that keeps sending has its state looked up, in packets its
/// source cache slot drops: see [`SourceSlot::hits`]. An entry the LRU map has not seen used
/// for a while is the first that new sources' states evict (a spoofed flood of requests that
/// match no signature inserts one a packet). Counted in packets, not time: a lookup
/// once a period would cost each rarely seen source (a spoofed flood's repeats) a lookup for
/// nearly every packet.
pub const TOUCH_EVERY: u16 = 256;

// 32 bytes, so that a slot never straddles two cache lines.
const _: () = assert!(size_of::<SourceSlot>() == 32);

/// `jiffies_64` as the source cache keeps it: its low 32 bits, never 0 (which means "none";
/// the jiffy whose low bits are 0 reads as the next, once every 2^32 jiffies).
#[inline(always)]
pub const fn jiffy32(jiffies: u64) -> u32 {
    let j = jiffies as u32;
    if j == 0 { 1 } else { j }
}

impl SourceSlot {
    /// A slot that holds the source key `key`'s ban until `until` (`CLOCK_BOOTTIME` ns), and
    /// nothing else: no note, no hits counted.
    pub const fn ban(key: [u64; 2], until: u64) -> Self {
        Self { key, banned_until: until, over_jiffy: 0, hits: 0, clear_jiffy: 0 }
    }
}

/// `jiffies_64` as [`SourceSlot::clear_jiffy`] keeps it: its low 16 bits, never 0 (as in
/// [`jiffy32`]).
#[inline(always)]
pub const fn jiffy16(jiffies: u64) -> u16 {
    let j = jiffies as u16;
    if j == 0 { 1 } else { j }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), integer fields only, no padding (32 bytes, asserted); every bit pattern valid.
unsafe impl aya::Pod for SourceSlot {}

/// A source key as the source cache holds it.
#[inline(always)]
pub const fn cache_key(key: &[u8; 16]) -> [u64; 2] {
    let (a, b) = key.split_at(8);
    // Infallible: both halves are 8 bytes.
    match (a.first_chunk::<8>(), b.first_chunk::<8>()) {
        (Some(a), Some(b)) => [u64::from_ne_bytes(*a), u64::from_ne_bytes(*b)],
        _ => [0; 2],
    }
}

/// The source cache slot of a source key under the cache's hash key `seed` (see
/// [`SOURCE_CACHE_SEED`]): each word of the key times an odd multiplier of its own drawn from
/// the seed, summed, the top 16 bits (multiply-shift hashing, universal over random
/// multipliers: two keys share a slot for about one pair of multipliers in 32,768). The key
/// goes into each word before anything is merged, so no two keys share a slot whatever the
/// seed: an IPv4 key's one word and a /64 key's other each meet their own multiplier. Within
/// an IPv4 /16, and among the /64s of one /48, each slot holds exactly one source (their
/// varying bytes are the word's top 16 bits). A seed of `[0, 0]` (a map not given one yet)
/// uses fixed multipliers.
#[inline(always)]
pub const fn cache_slot(key: [u64; 2], seed: [u64; 2]) -> u32 {
    let (m0, m1) = if seed[0] == 0 && seed[1] == 0 {
        (0x9e37_79b9_7f4a_7c15, 0xc2b2_ae3d_27d4_eb4f)
    } else {
        (seed[0] | 1, seed[1] | 1)
    };
    let h = key[0].wrapping_mul(m0).wrapping_add(key[1].wrapping_mul(m1));
    (h >> (64 - SOURCE_CACHE_SLOTS.trailing_zeros())) as u32
}

/// The key of a source: an IPv4 address as `::ffff:a.b.c.d`, an IPv6 address cut to its /64.
pub const fn source_key_v4(a: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]
}

/// See [`source_key_v4`].
pub const fn source_key_v6(a: [u8; 16]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], 0, 0, 0, 0, 0, 0, 0, 0]
}

/// FNV-1a step (the To value hash).
#[inline(always)]
pub const fn fnv1a(h: u32, byte: u8) -> u32 {
    (h ^ byte as u32).wrapping_mul(0x0100_0193)
}

/// FNV-1a initial value.
pub const FNV_INIT: u32 = 0x811c_9dc5;

/// The sketch bit of a To value: its FNV-1a hash up to the first `>` or `;` (at most
/// [`TO_HASH_MAX`] bytes), folded to [`SKETCH_BITS`].
pub fn to_bit(value: &[u8]) -> usize {
    to_bit_with(|k| value[k], value.len())
}

/// [`to_bit`] over a value of `len` bytes read with `byte(k)`: the form the kernel calls on its
/// scan buffer, so both sides hash the same way.
#[inline(always)]
pub fn to_bit_with(mut byte: impl FnMut(usize) -> u8, len: usize) -> usize {
    let mut h = FNV_INIT;
    for k in 0..TO_HASH_MAX {
        if k >= len {
            break;
        }
        let c = byte(k);
        if c == b'>' || c == b';' {
            break;
        }
        h = fnv1a(h, c);
    }
    fold(h)
}

/// A hash folded to a sketch bit index.
#[inline(always)]
pub const fn fold(h: u32) -> usize {
    ((h ^ (h >> 8) ^ (h >> 16) ^ (h >> 24)) & (SKETCH_BITS as u32 - 1)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_the_burst_then_the_rate() {
        let (interval, burst) = (100, 5u64);
        let tau = interval * (burst - 1);
        let mut tat = 0;
        let now = 1_000;
        for _ in 0..burst {
            tat = gcra(tat, now, interval, tau).expect("within the burst");
        }
        assert_eq!(gcra(tat, now, interval, tau), None, "burst used up");
        assert_eq!(gcra(tat, now + 99, interval, tau), None);
        assert!(gcra(tat, now + 100, interval, tau).is_some(), "one interval later: one more");
    }

    #[test]
    fn to_values_hash_without_tags_and_keys_cut_ipv6_to_64() {
        assert_eq!(to_bit(b"\"100\"<sip:100@h>;tag=1"), to_bit(b"\"100\"<sip:100@h>;tag=2"));
        assert_ne!(to_bit(b"<sip:100@h>"), to_bit(b"<sip:101@h>"));
        let a = source_key_v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9]);
        assert_eq!(a[8..], [0; 8]);
        assert_eq!(source_key_v4([198, 18, 0, 1])[10..], [0xff, 0xff, 198, 18, 0, 1]);
    }
}
