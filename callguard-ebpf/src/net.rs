//! Network rules: whether a port is guarded, and the source's rule (exact hash first, for IPv4
//! its direct-mapped slot before it, then the LPM trie, past expired entries; for IPv4 each only
//! where the hints say a rule may be).

use aya_ebpf::maps::lpm_trie::Key;
use callguard_common::{
    NetEntry, NetMatch,
    config::{PORT_TCP, PORT_UDP},
    net::{DirectSlot, EXPIRED_RETRIES, direct_slot, exact_hint_bit, hint_place, prefix_hint_bit},
};

use crate::{
    clock::tick_ns,
    maps::{CG_NET4_DIRECT, CG_NET4_EXACT, CG_NET4_HINTS, CG_NET4_LPM, CG_NET6_EXACT, CG_NET6_LPM, CG_PORTS},
    parse::{IPPROTO_TCP, IPPROTO_UDP},
};

#[inline(always)]
pub(crate) fn is_guarded(proto: u8, port: u16) -> bool {
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

/// Whether IPv4 hint bit `bit` is set (see `callguard_common::net::HINT_EXACT_BITS`): clear, no
/// entry of the map it stands for can match. Set when the value cannot be read: then the lookup
/// decides.
#[inline(always)]
fn hinted(bit: u32) -> bool {
    let (value, word, mask) = hint_place(bit);
    match CG_NET4_HINTS.get(value) {
        Some(h) => h.words[word] & mask != 0,
        None => true,
    }
}

/// The rule of a single IPv4 address as its slot of `CG_NET4_DIRECT` holds it, at the clock
/// `now` (read here first when the entry expires). `None`: the slot names another address or
/// none, or was being written: the exact map decides. The tag is read before and after the
/// entry, as `DirectSlot` says; the three reads are volatile so that the compiler keeps their
/// order (and x86 keeps loads in order).
#[inline(always)]
fn direct_v4(addr: [u8; 4], now: &mut u64) -> Option<NetMatch> {
    let slot = CG_NET4_DIRECT.get_ptr(direct_slot(addr))?;
    // SAFETY: a value of the array, valid for this program run; the daemon may rewrite it
    // meanwhile, which the second read of the tag detects.
    let (before, words, after) = unsafe {
        let tag = &raw const (*slot).tag;
        let before = tag.read_volatile();
        if !DirectSlot::names(before, addr) {
            return None;
        }
        let words = (&raw const (*slot).entry).cast::<[u64; 4]>();
        (before, words.read_volatile(), tag.read_volatile())
    };
    if before != after {
        return None;
    }
    // SAFETY: NetEntry is repr(C), 32 bytes of integers: any four words are one.
    let entry: NetEntry = unsafe { core::mem::transmute(words) };
    if entry.expires() {
        *now = tick_ns();
    }
    Some(entry.decide(*now))
}

/// Generates the lookup for one address family: the exact map first (a single address is the
/// longest prefix there is; for IPv4 its slot of `CG_NET4_DIRECT` before it), then the LPM
/// trie, retrying with a shorter prefix past entries whose rules have all expired; each only
/// where `$exact_hint` and `$lpm_hint` say an entry may be.
macro_rules! lookup_fn {
    ($name:ident, $n:literal, $exact:ident, $lpm:ident, $exact_hint:expr, $direct:expr, $lpm_hint:expr) => {
        #[inline(always)]
        pub(crate) fn $name(addr: [u8; $n]) -> Option<NetMatch> {
            // The clock is read only for entries that expire (most do not; but every ban the
            // daemon stores does), and as of this CPU's tick: a rule lasts up to a tick longer
            // (4 ms at `HZ=250`), and a banned scanner's flood is not charged a clock read a packet.
            let mut now = 0u64;
            if $exact_hint(addr) {
                let exact = match $direct(addr, &mut now) {
                    Some(decided) => decided,
                    // SAFETY: the exact maps are BPF_F_NO_PREALLOC: elements are freed after RCU
                    // grace.
                    None => match unsafe { $exact.get(&addr) } {
                        Some(entry) => {
                            if entry.expires() {
                                now = tick_ns();
                            }
                            entry.decide(now)
                        }
                        None => NetMatch::Expired,
                    },
                };
                if !matches!(exact, NetMatch::Expired) {
                    return Some(exact);
                }
            }
            if !$lpm_hint(addr) {
                return None;
            }
            let mut prefix_len = $n * 8;
            // Bounded for the verifier; see EXPIRED_RETRIES.
            for _ in 0..=EXPIRED_RETRIES {
                let entry = $lpm.get(Key::new(prefix_len, addr))?;
                if now == 0 && entry.expires() {
                    now = tick_ns();
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

lookup_fn!(lookup_v4, 4, CG_NET4_EXACT, CG_NET4_LPM, |a| hinted(exact_hint_bit(a)), direct_v4, |a| hinted(
    prefix_hint_bit(a)
));
lookup_fn!(lookup_v6, 16, CG_NET6_EXACT, CG_NET6_LPM, |_| true, |_, _| None, |_| true);
