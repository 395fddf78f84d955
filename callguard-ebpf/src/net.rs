//! Network rules: whether a port is guarded, and the source's rule (exact hash first, then the
//! LPM trie, past expired entries; for IPv4 each only where the hints say a rule may be).

use aya_ebpf::maps::lpm_trie::Key;
use callguard_common::{
    NetMatch,
    config::{PORT_TCP, PORT_UDP},
    net::{EXPIRED_RETRIES, exact_hint_bit, hint_place, prefix_hint_bit},
};

use crate::{
    clock::tick_ns,
    maps::{CG_NET4_EXACT, CG_NET4_HINTS, CG_NET4_LPM, CG_NET6_EXACT, CG_NET6_LPM, CG_PORTS},
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

/// Generates the lookup for one address family: the exact map first (a single address is the
/// longest prefix there is), then the LPM trie, retrying with a shorter prefix past entries whose
/// rules have all expired; each only where `$exact_hint` and `$lpm_hint` say an entry may be.
macro_rules! lookup_fn {
    ($name:ident, $n:literal, $exact:ident, $lpm:ident, $exact_hint:expr, $lpm_hint:expr) => {
        #[inline(always)]
        pub(crate) fn $name(addr: [u8; $n]) -> Option<NetMatch> {
            // The clock is read only for entries that expire (most do not; but every ban the
            // daemon stores does), and as of this CPU's tick: a rule lasts up to a tick longer
            // (4 ms at `HZ=250`), and a banned scanner's flood is not charged a clock read a packet.
            let mut now = 0u64;
            let exact = if $exact_hint(addr) {
                // SAFETY: the exact maps are BPF_F_NO_PREALLOC: elements are freed after RCU grace.
                unsafe { $exact.get(&addr) }
            } else {
                None
            };
            if let Some(entry) = exact {
                if entry.expires() {
                    now = tick_ns();
                }
                match entry.decide(now) {
                    NetMatch::Expired => {}
                    decided => return Some(decided),
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

lookup_fn!(lookup_v4, 4, CG_NET4_EXACT, CG_NET4_LPM, |a| hinted(exact_hint_bit(a)), |a| hinted(
    prefix_hint_bit(a)
));
lookup_fn!(lookup_v6, 16, CG_NET6_EXACT, CG_NET6_LPM, |_| true, |_| true);
