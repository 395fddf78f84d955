//! Network rules as the kernel stores them.
//!
//! One [`NetEntry`] per distinct prefix (or single address) holds both the allow and the deny rule
//! for that prefix, if any: an LPM trie can keep only one value per prefix, and "at equal prefix
//! length allow beats deny" must still hold after the allow rule expires and the deny rule does
//! not. Expiry is enforced by the program itself, so an expired deny stops dropping even while the
//! daemon is down; when the longest match has nothing live left, the program looks again with a
//! shorter prefix (see [`NetEntry::prefix_len`]).

/// Deny scope: drop only packets to guarded (SIP) ports.
pub const SCOPE_SIP: u8 = 0;
/// Deny scope: drop every packet from the network.
pub const SCOPE_ALL: u8 = 1;

/// Call profile of an allow rule ([`NetEntry::allow_profile`]): no call checks; the source is
/// trusted as before profiles existed (the default).
pub const PROFILE_TRUSTED: u8 = 0;
/// Call profile: a trunk. Its initial INVITEs go to the daemon, which applies the rules about
/// callers (blacklisted numbers): inbound calls.
pub const PROFILE_TRUNK: u8 = 1;
/// Call profile: phones. Their initial INVITEs go to the daemon, which applies the rules about
/// dialed numbers, authorization codes, roles and fraud thresholds: outbound calls.
pub const PROFILE_PHONES: u8 = 2;

/// How many times the program retries the LPM lookup with a shorter prefix when the longest match
/// holds only expired rules. Bounded for the verifier; past it the address counts as unmatched.
/// The daemon sweeps expired entries, so more than one retry is needed only while it is down.
pub const EXPIRED_RETRIES: u32 = 4;

/// The rules for one prefix: value type of the exact-match maps and LPM tries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetEntry {
    /// When the allow rule stops applying, in `CLOCK_BOOTTIME` nanoseconds; 0 = never.
    pub allow_expires_ns: u64,
    /// When the deny rule stops applying, in `CLOCK_BOOTTIME` nanoseconds; 0 = never.
    pub deny_expires_ns: u64,
    /// Id of the allow rule for this prefix; 0 = none.
    pub allow_rule: u32,
    /// Id of the deny rule for this prefix; 0 = none.
    pub deny_rule: u32,
    /// Length of this entry's prefix (32/128 in the exact maps). The LPM trie returns only the
    /// value, and the program needs the length to look for a shorter prefix past an expired one.
    pub prefix_len: u8,
    /// [`SCOPE_SIP`] or [`SCOPE_ALL`], for the deny rule.
    pub deny_scope: u8,
    /// The allow rule's slot in [`crate::maps::RULE_STATS`]; 0 = not counted per rule.
    pub allow_slot: u16,
    /// The deny rule's slot in [`crate::maps::RULE_STATS`]; 0 = not counted per rule.
    pub deny_slot: u16,
    /// The allow rule's call profile ([`PROFILE_TRUSTED`], [`PROFILE_TRUNK`],
    /// [`PROFILE_PHONES`]).
    pub allow_profile: u8,
    /// Explicit padding (zero).
    pub _pad: u8,
}

const _: () = assert!(size_of::<NetEntry>() == 32);

#[cfg(feature = "user")]
// SAFETY: repr(C) with explicit padding, only integers, every bit pattern valid.
unsafe impl aya::Pod for NetEntry {}

/// What a [`NetEntry`] says about a source address at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMatch {
    /// A live allow rule (it wins over a deny rule at the same prefix).
    Allow {
        /// The allow rule's id.
        rule: u32,
        /// Its counter slot.
        slot: u16,
        /// Its call profile.
        profile: u8,
    },
    /// A live deny rule and no live allow rule.
    Deny {
        /// The deny rule's id.
        rule: u32,
        /// Its counter slot.
        slot: u16,
        /// [`SCOPE_SIP`] or [`SCOPE_ALL`].
        scope: u8,
    },
    /// Both rules absent or expired: look for a shorter prefix.
    Expired,
}

impl NetEntry {
    /// The verdict of this entry at `now_ns` (`CLOCK_BOOTTIME`): allow beats deny at the same
    /// prefix; an expired rule is as if it were absent.
    #[inline(always)]
    pub const fn decide(&self, now_ns: u64) -> NetMatch {
        if self.allow_rule != 0 && (self.allow_expires_ns == 0 || now_ns < self.allow_expires_ns) {
            return NetMatch::Allow {
                rule: self.allow_rule,
                slot: self.allow_slot,
                profile: self.allow_profile,
            };
        }
        if self.deny_rule != 0 && (self.deny_expires_ns == 0 || now_ns < self.deny_expires_ns) {
            return NetMatch::Deny { rule: self.deny_rule, slot: self.deny_slot, scope: self.deny_scope };
        }
        NetMatch::Expired
    }

    /// Whether any rule here expires: only then does the program need to read the clock.
    #[inline(always)]
    pub const fn expires(&self) -> bool {
        self.allow_expires_ns | self.deny_expires_ns != 0
    }

    /// Whether the entry holds no rule at all (the daemon then deletes it).
    pub const fn is_empty(&self) -> bool {
        self.allow_rule == 0 && self.deny_rule == 0
    }
}

/// Where an IPv4 rule may apply, as bits the program tests before its lookups: most sources
/// match no rule, and the two lookups that say so (the exact hash, the LPM trie) cost about 20
/// and 15 ns each on the development VM, helper calls whose returns each pay the SRSO
/// mitigation; a bit test is a load. One [`NetHints`] value holds [`HINT_WORDS`] words; the
/// map (`maps::NET_V4_HINTS`) holds [`HINT_VALUES`] of them, the bits numbered across them.
/// With more single addresses than the exact region has bits, its bits fill up and the
/// lookups come back: a cost, never a missed rule.
///
/// Two regions: [`HINT_EXACT_BITS`] bits for the exact map, the one [`exact_hint_bit`] of each
/// address in it set (a hash: another address may share the bit, then it is looked up and
/// missed), and one bit per /24 for the LPM trie ([`prefix_hint_bit`]), set for every /24 a
/// prefix in the trie covers or lies in. A clear bit proves that no entry of that map can
/// match; a set one only sends the program to the lookup. So the daemon sets the bits of an
/// entry before it writes the entry, and clears bits only after removing the entries, by
/// computing them again from what the maps hold ([`hint_bits`]).
pub const HINT_EXACT_BITS: u32 = 1 << 20;
/// Bits of the prefix region: one per IPv4 /24.
pub const HINT_PREFIX_BITS: u32 = 1 << 24;
/// Words of one [`NetHints`] value (4 KiB: the daemon writes a changed value in one call).
pub const HINT_WORDS: usize = 512;
/// Bits in one [`NetHints`] value.
const HINT_VALUE_BITS: u32 = (HINT_WORDS * 64) as u32;
/// Values in the hint map: both regions.
pub const HINT_VALUES: u32 = (HINT_EXACT_BITS + HINT_PREFIX_BITS) / HINT_VALUE_BITS;

// `exact_hint_bit` keeps the hash's top bits, as many as the region has; the regions fill whole
// values.
const _: () = assert!(
    HINT_EXACT_BITS.is_power_of_two()
        && HINT_EXACT_BITS.is_multiple_of(HINT_VALUE_BITS)
        && HINT_PREFIX_BITS.is_multiple_of(HINT_VALUE_BITS)
);

/// A slice of the IPv4 rule hints (see [`HINT_EXACT_BITS`]): value type of `maps::NET_V4_HINTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetHints {
    /// Bit `b` of the value is bit `b % 64` of word `b / 64`.
    pub words: [u64; HINT_WORDS],
}

impl Default for NetHints {
    fn default() -> Self {
        Self { words: [0; HINT_WORDS] }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), only integers, every bit pattern valid.
unsafe impl aya::Pod for NetHints {}

/// The bit of the exact region an address in the exact map sets: a multiplicative hash of the
/// address, its top 20 bits.
#[inline(always)]
pub const fn exact_hint_bit(addr: [u8; 4]) -> u32 {
    u32::from_be_bytes(addr).wrapping_mul(0x9e37_79b1) >> (32 - HINT_EXACT_BITS.trailing_zeros())
}

/// Slots of the IPv4 single-address table (`maps::NET_V4_DIRECT`, see [`DirectSlot`]).
pub const DIRECT_SLOTS: u32 = 1 << 16;

// A slot is named by the top bits of the exact hint bit (see `direct_slot`).
const _: () = assert!(DIRECT_SLOTS.is_power_of_two() && DIRECT_SLOTS <= HINT_EXACT_BITS);

/// The slot of the single-address table an IPv4 address has: the top bits of its
/// [`exact_hint_bit`], so that a hint bit and the slot are one multiplication.
#[inline(always)]
pub const fn direct_slot(addr: [u8; 4]) -> u32 {
    exact_hint_bit(addr) >> (HINT_EXACT_BITS.trailing_zeros() - DIRECT_SLOTS.trailing_zeros())
}

/// One slot of the IPv4 single-address table (`maps::NET_V4_DIRECT`): the [`NetEntry`] of one
/// address in the exact map (`maps::NET_V4_EXACT`), direct-mapped by [`direct_slot`], so that
/// the program reads a single address's rule with a load where the exact map needs a lookup —
/// a helper call, about 28 ns of a banned scanner's dropped packet on the development VM,
/// measured in the flood benchmark (the call's return pays this VM's SRSO mitigation). The
/// daemon writes it, and alone: of the addresses that share a slot, one has it, the others are
/// looked up in the exact map as before (a cost, never another verdict).
///
/// The daemon writes a slot in three steps, each a write of the whole value: the version made
/// even (the slot names no address), the new entry, then the address with the version made
/// odd. The program reads the tag, the entry, and the tag again, and takes the entry only when
/// both tags are the same odd version of its address: a read that overlapped a write reads two
/// tags that differ, or an even one, and goes to the exact map. (Each tag is one aligned
/// 8-byte word, which the kernel's copy of a map value writes whole.) A slot names an address
/// only while the exact map holds it: the daemon fills it after writing the exact map and
/// empties it before removing the address from it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectSlot {
    /// The address (its bytes as a native-order word) in the low half, the slot's version in
    /// the high half: odd, the entry is the address's; even, the slot names no address.
    pub tag: u64,
    /// The address's entry, as the exact map holds it.
    pub entry: NetEntry,
}

const _: () = assert!(size_of::<DirectSlot>() == 40);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers and a NetEntry (itself Pod), no padding (40 bytes, asserted).
unsafe impl aya::Pod for DirectSlot {}

impl DirectSlot {
    /// The tag of `addr` at `version`.
    #[inline(always)]
    pub const fn tag_of(addr: [u8; 4], version: u32) -> u64 {
        (version as u64) << 32 | u32::from_ne_bytes(addr) as u64
    }

    /// Whether `tag` says that the slot's entry is `addr`'s.
    #[inline(always)]
    pub const fn names(tag: u64, addr: [u8; 4]) -> bool {
        tag as u32 == u32::from_ne_bytes(addr) && (tag >> 32) & 1 == 1
    }

    /// The slot's version.
    pub const fn version(&self) -> u32 {
        (self.tag >> 32) as u32
    }

    /// The address whose entry the slot holds, if it names one.
    pub const fn address(&self) -> Option<[u8; 4]> {
        if self.version() & 1 == 1 { Some((self.tag as u32).to_ne_bytes()) } else { None }
    }
}

/// The bit of the prefix region for the /24 an address lies in.
#[inline(always)]
pub const fn prefix_hint_bit(addr: [u8; 4]) -> u32 {
    HINT_EXACT_BITS + (u32::from_be_bytes(addr) >> 8)
}

/// Where hint bit `bit` lives: the map value's index, the word in it, the mask in the word.
#[inline(always)]
pub const fn hint_place(bit: u32) -> (u32, usize, u64) {
    (bit / HINT_VALUE_BITS, ((bit / 64) as usize) % HINT_WORDS, 1 << (bit % 64))
}

/// The hint bits an IPv4 entry needs, as a range (`first..first + count`): its exact bit for a
/// single address (`prefix_len` 32), else the prefix bits of every /24 the prefix covers or
/// lies in.
pub const fn hint_bits(addr: [u8; 4], prefix_len: u8) -> (u32, u32) {
    if prefix_len >= 32 {
        return (exact_hint_bit(addr), 1);
    }
    if prefix_len >= 24 {
        return (prefix_hint_bit(addr), 1);
    }
    // The prefix's first address: the host bits of `addr` need not be zero.
    let first = u32::from_be_bytes(addr) & !(u32::MAX >> prefix_len as u32);
    (HINT_EXACT_BITS + (first >> 8), 1 << (24 - prefix_len as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(allow_exp: u64, deny_exp: u64) -> NetEntry {
        NetEntry {
            allow_rule: 1,
            allow_expires_ns: allow_exp,
            deny_rule: 2,
            deny_expires_ns: deny_exp,
            deny_scope: SCOPE_ALL,
            prefix_len: 24,
            ..NetEntry::default()
        }
    }

    #[test]
    fn allow_beats_deny_at_equal_prefix() {
        assert_eq!(both(0, 0).decide(100), NetMatch::Allow { rule: 1, slot: 0, profile: PROFILE_TRUSTED });
    }

    #[test]
    fn expired_allow_uncovers_the_deny() {
        assert_eq!(both(50, 0).decide(100), NetMatch::Deny { rule: 2, slot: 0, scope: SCOPE_ALL });
        assert_eq!(both(50, 0).decide(49), NetMatch::Allow { rule: 1, slot: 0, profile: PROFILE_TRUSTED });
    }

    #[test]
    fn hint_bits_cover_what_a_rule_may_match() {
        // A prefix shorter than /24 sets every /24 it covers, whatever its host bits.
        assert_eq!(hint_bits([10, 1, 2, 3], 16), (HINT_EXACT_BITS + (10 << 16 | 1 << 8), 256));
        assert_eq!(hint_bits([0, 0, 0, 0], 0), (HINT_EXACT_BITS, HINT_PREFIX_BITS));
        // A /24 or longer (but a single address) sets the bit of the /24 it lies in.
        assert_eq!(hint_bits([192, 0, 2, 200], 28), (prefix_hint_bit([192, 0, 2, 0]), 1));
        assert_eq!(hint_bits([192, 0, 2, 0], 24), (prefix_hint_bit([192, 0, 2, 77]), 1));
        // A single address sets its exact bit, in the exact region.
        let (bit, n) = hint_bits([203, 0, 113, 9], 32);
        assert_eq!((bit, n), (exact_hint_bit([203, 0, 113, 9]), 1));
        assert!(bit < HINT_EXACT_BITS);
        // Every bit has a place in the map.
        let (value, word, mask) = hint_place(HINT_EXACT_BITS + HINT_PREFIX_BITS - 1);
        assert_eq!((value, word, mask), (HINT_VALUES - 1, HINT_WORDS - 1, 1 << 63));
    }

    #[test]
    fn exact_hint_bits_spread_neighbours_apart() {
        // The addresses of one /24 (a scanner's, its bans) land on 256 different bits.
        let bits: std::collections::BTreeSet<u32> =
            (0..=255).map(|i| exact_hint_bit([203, 0, 113, i])).collect();
        assert_eq!(bits.len(), 256);
    }

    #[test]
    fn a_slot_names_its_address_only_at_an_odd_version() {
        let a = [203, 0, 113, 9];
        let named = DirectSlot { tag: DirectSlot::tag_of(a, 7), entry: NetEntry::default() };
        assert!(DirectSlot::names(named.tag, a));
        assert_eq!(named.address(), Some(a));
        assert!(!DirectSlot::names(named.tag, [203, 0, 113, 7]));
        let emptied = DirectSlot { tag: DirectSlot::tag_of(a, 8), ..named };
        assert!(!DirectSlot::names(emptied.tag, a));
        assert_eq!(emptied.address(), None);
        // A map's zeroed slot names no address, 0.0.0.0 included.
        assert!(!DirectSlot::names(0, [0, 0, 0, 0]));
        assert_eq!(DirectSlot::default().address(), None);
        // The slot is the top of the hint bit.
        assert_eq!(direct_slot(a), exact_hint_bit(a) >> 4);
        assert!((0..=255).map(|i| direct_slot([203, 0, 113, i])).all(|s| s < DIRECT_SLOTS));
    }

    #[test]
    fn all_expired_means_look_shorter() {
        assert_eq!(both(50, 60).decide(60), NetMatch::Expired);
        assert_eq!(NetEntry::default().decide(0), NetMatch::Expired);
    }
}
