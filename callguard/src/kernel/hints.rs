//! The IPv4 rule hints (`CG_NET4_HINTS`) as the daemon keeps them: a copy of the map's bits,
//! the bits each network entry needs (`callguard_common::net::hint_bits`), and which of the
//! map's values a change touched, so that only those are written.
//!
//! The kernel skips a lookup when the entry's bit is clear, so a bit must be set before its
//! entry is written, and may be cleared only once no entry needs it: [`Kernel`] sets the bits
//! of what it is about to write, writes, removes, then computes the bits again from what the
//! maps hold and writes the values that lost some.
//!
//! [`Kernel`]: super::Kernel

use std::collections::{BTreeMap, BTreeSet};

use callguard_common::{
    NetEntry,
    net::{HINT_VALUES, NetHints, hint_bits, hint_place},
};
use ipnet::{IpNet, Ipv4Net};

/// The hint bits: [`HINT_VALUES`] values of the map, in order.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Hints {
    values: Vec<NetHints>,
}

impl Hints {
    /// The bits every IPv4 entry of `nets` needs, and no other.
    pub(super) fn of(nets: &BTreeMap<IpNet, NetEntry>) -> Self {
        let mut h = Self { values: vec![NetHints::default(); HINT_VALUES as usize] };
        let mut changed = BTreeSet::new();
        for net in nets.keys() {
            if let IpNet::V4(n) = net {
                h.set(n, &mut changed);
            }
        }
        h
    }

    /// Adds the bits of `held` (what value `i` of the map holds) to value `i`.
    pub(super) fn merge(&mut self, i: u32, held: &NetHints) {
        for (w, h) in self.values[i as usize].words.iter_mut().zip(held.words) {
            *w |= h;
        }
    }

    /// Sets the bits `net` needs; the values that changed go into `dirty`.
    pub(super) fn set(&mut self, net: &Ipv4Net, dirty: &mut BTreeSet<u32>) {
        let (first, count) = hint_bits(net.addr().octets(), net.prefix_len());
        if count >= 64 {
            // Whole words: a range of 64 bits or more starts on a word (its count is a power of
            // two and its first bit a multiple of it).
            for bit in (first..first + count).step_by(64) {
                let (value, word, _) = hint_place(bit);
                let w = &mut self.values[value as usize].words[word];
                if *w != u64::MAX {
                    *w = u64::MAX;
                    dirty.insert(value);
                }
            }
        } else {
            for bit in first..first + count {
                let (value, word, mask) = hint_place(bit);
                let w = &mut self.values[value as usize].words[word];
                if *w & mask == 0 {
                    *w |= mask;
                    dirty.insert(value);
                }
            }
        }
    }

    /// The values that differ from `other`'s.
    pub(super) fn differing(&self, other: &Self) -> BTreeSet<u32> {
        (0..HINT_VALUES).filter(|&i| self.values[i as usize] != other.values[i as usize]).collect()
    }

    /// Value `i` of the map.
    pub(super) fn value(&self, i: u32) -> &NetHints {
        &self.values[i as usize]
    }
}

#[cfg(test)]
mod tests {
    use callguard_common::net::{exact_hint_bit, prefix_hint_bit};

    use super::*;

    fn is_set(h: &Hints, bit: u32) -> bool {
        let (value, word, mask) = hint_place(bit);
        h.value(value).words[word] & mask != 0
    }

    fn nets(list: &[&str]) -> BTreeMap<IpNet, NetEntry> {
        list.iter().map(|n| (n.parse().expect("a network"), NetEntry::default())).collect()
    }

    #[test]
    fn every_address_a_rule_may_match_has_its_bits_set() {
        let h = Hints::of(&nets(&["203.0.113.9/32", "10.0.0.0/8", "192.0.2.64/26", "2001:db8::/32"]));
        assert!(is_set(&h, exact_hint_bit([203, 0, 113, 9])));
        // A neighbour of the single address: its exact bit is another, and no prefix covers it.
        assert!(!is_set(&h, exact_hint_bit([203, 0, 113, 7])));
        assert!(!is_set(&h, prefix_hint_bit([203, 0, 113, 7])));
        for a in [[10, 0, 0, 1], [10, 255, 255, 255], [10, 77, 3, 0]] {
            assert!(is_set(&h, prefix_hint_bit(a)), "{a:?}");
        }
        assert!(!is_set(&h, prefix_hint_bit([11, 0, 0, 0])));
        assert!(!is_set(&h, prefix_hint_bit([9, 255, 255, 255])));
        // A prefix longer than /24 sets its /24.
        assert!(is_set(&h, prefix_hint_bit([192, 0, 2, 1])));
        assert!(!is_set(&h, prefix_hint_bit([192, 0, 3, 1])));
    }

    #[test]
    fn a_change_reports_the_values_it_touched_and_removal_is_computed_again() {
        let mut h = Hints::of(&BTreeMap::new());
        let mut dirty = BTreeSet::new();
        h.set(&"10.0.0.0/8".parse().expect("a network"), &mut dirty);
        // 65,536 /24s: 1,024 words, two values.
        assert_eq!(dirty.len(), 2);
        let mut again = BTreeSet::new();
        h.set(&"10.1.0.0/16".parse().expect("a network"), &mut again);
        assert!(again.is_empty(), "already set: {again:?}");
        // What a removal leaves: computed from what is left, the values that lost bits differ.
        let after = Hints::of(&nets(&["10.1.0.0/16"]));
        assert_eq!(after.differing(&h), dirty);
        assert!(is_set(&after, prefix_hint_bit([10, 1, 2, 3])));
        assert!(!is_set(&after, prefix_hint_bit([10, 2, 2, 3])));
    }

    #[test]
    fn the_default_route_sets_every_prefix_bit() {
        let h = Hints::of(&nets(&["0.0.0.0/0"]));
        for a in [[0, 0, 0, 0], [128, 0, 0, 1], [255, 255, 255, 255]] {
            assert!(is_set(&h, prefix_hint_bit(a)), "{a:?}");
        }
    }
}
