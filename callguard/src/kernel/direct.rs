//! The IPv4 single-address table (`CG_NET4_DIRECT`) as the daemon keeps it: what each slot
//! holds, the addresses of the exact map by slot, and the writes that change a slot while the
//! program reads it, in the order `callguard_common::net::DirectSlot` gives.
//!
//! A slot names an address only while the exact map holds it, with the entry the exact map
//! holds: [`Kernel`] writes the exact map, then the slot ([`Direct::written`]); empties the
//! slot, then removes the address ([`Direct::removing`]); and once the removals are done, gives
//! each slot it emptied another address of the exact map that has it ([`Direct::refill`]).
//!
//! [`Kernel`]: super::Kernel

use std::collections::{BTreeMap, BTreeSet};

use callguard_common::{
    NetEntry,
    net::{DIRECT_SLOTS, DirectSlot, direct_slot},
};

/// Writes value `i` of the map (the daemon's `CG_NET4_DIRECT`; in the tests, a copy).
pub(super) type Write<'a> = dyn FnMut(u32, &DirectSlot) -> anyhow::Result<()> + 'a;

/// What the daemon knows of `CG_NET4_DIRECT` (the default: nothing yet, until [`Direct::new`]
/// has what the map holds).
#[derive(Default)]
pub(super) struct Direct {
    /// What each slot of the map holds: what was read at load, then every write that succeeded.
    held: Vec<DirectSlot>,
    /// The addresses in the exact map, by slot.
    by_slot: BTreeMap<u32, BTreeSet<[u8; 4]>>,
    /// Slots emptied since the last [`Direct::refill`].
    emptied: BTreeSet<u32>,
}

impl Direct {
    /// The table as the map holds it (`held`, every slot), for the addresses of the exact map
    /// in `exact`; [`Direct::settle`] then makes the map agree with them.
    pub(super) fn new(held: Vec<DirectSlot>, exact: impl IntoIterator<Item = [u8; 4]>) -> Self {
        debug_assert_eq!(held.len(), DIRECT_SLOTS as usize);
        let mut by_slot: BTreeMap<u32, BTreeSet<[u8; 4]>> = BTreeMap::new();
        for addr in exact {
            by_slot.entry(direct_slot(addr)).or_default().insert(addr);
        }
        Self { held, by_slot, emptied: BTreeSet::new() }
    }

    /// Makes every slot hold what the exact map needs (`entries`: the exact map's entry of an
    /// address): a slot some addresses have, one of them (the one it names, if it names one of
    /// them with its entry), every other slot none. At load: a map adopted may hold what a
    /// daemon of an older release left as it wrote the exact map without it.
    pub(super) fn settle(
        &mut self,
        entries: &dyn Fn([u8; 4]) -> Option<NetEntry>,
        write: &mut Write<'_>,
    ) -> anyhow::Result<()> {
        for slot in 0..DIRECT_SLOTS {
            let held = self.held[slot as usize];
            let wanted = self.by_slot.get(&slot).and_then(|addrs| {
                let named = held.address().filter(|a| addrs.contains(a));
                named.or_else(|| addrs.first().copied()).and_then(|a| Some((a, entries(a)?)))
            });
            match wanted {
                Some((addr, entry)) if self.holds(slot, addr, &entry) => {}
                Some((addr, entry)) => self.fill(slot, addr, &entry, write)?,
                None if held.address().is_some() => self.empty(slot, write)?,
                None => {}
            }
        }
        Ok(())
    }

    /// `addr` is about to get `entry` in the exact map: its slot, if it names it with another
    /// entry, is emptied first, so that it never holds the old entry once the exact map has the
    /// new one (a daemon killed in between, a later write that fails).
    pub(super) fn changing(
        &mut self,
        addr: [u8; 4],
        entry: &NetEntry,
        write: &mut Write<'_>,
    ) -> anyhow::Result<()> {
        let slot = direct_slot(addr);
        if self.held[slot as usize].address() == Some(addr) && !self.holds(slot, addr, entry) {
            self.empty(slot, write)?;
        }
        Ok(())
    }

    /// `addr` now has `entry` in the exact map: its slot holds it too, when the slot is its or
    /// names no address. A slot this fails to fill names no address (see [`Direct::changing`]):
    /// the exact map decides.
    pub(super) fn written(
        &mut self,
        addr: [u8; 4],
        entry: &NetEntry,
        write: &mut Write<'_>,
    ) -> anyhow::Result<()> {
        let slot = direct_slot(addr);
        self.by_slot.entry(slot).or_default().insert(addr);
        match self.held[slot as usize].address() {
            Some(a) if a != addr || self.holds(slot, addr, entry) => Ok(()),
            _ => self.fill(slot, addr, entry, write),
        }
    }

    /// `addr` is about to leave the exact map: its slot, if it names it, is emptied first.
    pub(super) fn removing(&mut self, addr: [u8; 4], write: &mut Write<'_>) -> anyhow::Result<()> {
        let slot = direct_slot(addr);
        if self.held[slot as usize].address() == Some(addr) {
            self.empty(slot, write)?;
            self.emptied.insert(slot);
        }
        if let Some(addrs) = self.by_slot.get_mut(&slot) {
            addrs.remove(&addr);
            if addrs.is_empty() {
                self.by_slot.remove(&slot);
            }
        }
        Ok(())
    }

    /// Gives each slot emptied since the last call another address of the exact map that has
    /// it, if any (`entries` as in [`Direct::settle`]).
    pub(super) fn refill(
        &mut self,
        entries: &dyn Fn([u8; 4]) -> Option<NetEntry>,
        write: &mut Write<'_>,
    ) -> anyhow::Result<()> {
        while let Some(slot) = self.emptied.pop_first() {
            if self.held[slot as usize].address().is_some() {
                continue;
            }
            let next = self.by_slot.get(&slot).and_then(|a| a.first().copied());
            if let Some((addr, entry)) = next.and_then(|a| Some((a, entries(a)?))) {
                // Put back on failure: the next refill tries again.
                if let Err(e) = self.fill(slot, addr, &entry, write) {
                    self.emptied.insert(slot);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Whether slot `slot` names `addr` with `entry`, as the daemon last wrote it.
    fn holds(&self, slot: u32, addr: [u8; 4], entry: &NetEntry) -> bool {
        let held = &self.held[slot as usize];
        held.address() == Some(addr) && held.entry == *entry
    }

    /// The address slot `slot` names, as the daemon last wrote it.
    #[cfg(test)]
    fn names(&self, slot: u32) -> Option<[u8; 4]> {
        self.held[slot as usize].address()
    }

    /// Makes the slot name no address: its version made even, its entry left as it is, so that
    /// a read that began before sees two tags that differ.
    fn empty(&mut self, slot: u32, write: &mut Write<'_>) -> anyhow::Result<()> {
        let mut v = self.held[slot as usize];
        v.tag = DirectSlot::tag_of((v.tag as u32).to_ne_bytes(), v.version().wrapping_add(1) & !1);
        write(slot, &v)?;
        self.held[slot as usize] = v;
        Ok(())
    }

    /// Writes `entry` into the slot, named `addr`'s: emptied first if it names an address, the
    /// entry written while it names none, then the address at the next (odd) version.
    fn fill(
        &mut self,
        slot: u32,
        addr: [u8; 4],
        entry: &NetEntry,
        write: &mut Write<'_>,
    ) -> anyhow::Result<()> {
        if self.held[slot as usize].address().is_some() {
            self.empty(slot, write)?;
        }
        let version = self.held[slot as usize].version();
        for v in [
            DirectSlot { tag: DirectSlot::tag_of(addr, version), entry: *entry },
            DirectSlot { tag: DirectSlot::tag_of(addr, version | 1), entry: *entry },
        ] {
            write(slot, &v)?;
            self.held[slot as usize] = v;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two addresses that share a slot, and one that has a slot of its own.
    fn sharing() -> ([u8; 4], [u8; 4], [u8; 4]) {
        let a = [203, 0, 113, 9];
        let twin = (0..=u32::MAX)
            .map(|i| (i.wrapping_mul(2_654_435_761) ^ 0x0a00_0000).to_be_bytes())
            .find(|&b| b != a && direct_slot(b) == direct_slot(a))
            .expect("a twin");
        let other = [198, 51, 100, 7];
        assert_ne!(direct_slot(other), direct_slot(a));
        (a, twin, other)
    }

    fn deny(rule: u32) -> NetEntry {
        NetEntry { deny_rule: rule, prefix_len: 32, ..NetEntry::default() }
    }

    /// The map as a copy, with the writes it saw.
    struct Map {
        values: Vec<DirectSlot>,
        writes: Vec<(u32, DirectSlot)>,
    }

    impl Map {
        fn new() -> Self {
            Self { values: vec![DirectSlot::default(); DIRECT_SLOTS as usize], writes: Vec::new() }
        }

        fn write(&mut self) -> impl FnMut(u32, &DirectSlot) -> anyhow::Result<()> + '_ {
            |i, v| {
                self.values[i as usize] = *v;
                self.writes.push((i, *v));
                Ok(())
            }
        }
    }

    #[test]
    fn an_address_takes_a_free_slot_in_two_writes_and_a_shared_one_stays_the_first_s() {
        let (a, twin, _) = sharing();
        let mut map = Map::new();
        let mut d = Direct::new(map.values.clone(), []);
        d.written(a, &deny(1), &mut map.write()).unwrap();
        let slot = direct_slot(a);
        // The entry written while the slot names nobody, then named.
        assert_eq!(map.writes.len(), 2);
        assert_eq!(map.writes[0].1.address(), None);
        assert_eq!(map.writes[0].1.entry, deny(1));
        assert_eq!(map.writes[1].1.address(), Some(a));
        assert_eq!(map.values[slot as usize].entry, deny(1));
        // The twin is left to the exact map.
        d.written(twin, &deny(2), &mut map.write()).unwrap();
        assert_eq!(map.writes.len(), 2);
        assert_eq!(d.names(slot), Some(a));
    }

    #[test]
    fn a_changed_entry_is_written_while_its_slot_names_nobody() {
        let (a, _, _) = sharing();
        let mut map = Map::new();
        let mut d = Direct::new(map.values.clone(), []);
        d.written(a, &deny(1), &mut map.write()).unwrap();
        map.writes.clear();
        d.written(a, &deny(1), &mut map.write()).unwrap();
        assert!(map.writes.is_empty(), "an unchanged entry is not written");
        d.changing(a, &deny(7), &mut map.write()).unwrap();
        assert_eq!(
            map.values[direct_slot(a) as usize].address(),
            None,
            "emptied before the exact map changes"
        );
        d.written(a, &deny(7), &mut map.write()).unwrap();
        let steps: Vec<(Option<[u8; 4]>, u32)> =
            map.writes.iter().map(|(_, v)| (v.address(), v.entry.deny_rule)).collect();
        // Emptied with the old entry, the new entry written, then named: no read of the slot
        // sees the address with an entry half written, or with the old one after the new.
        assert_eq!(steps, [(None, 1), (None, 7), (Some(a), 7)]);
        // Each step a new version, so that a read across them sees two tags that differ.
        let versions: Vec<u32> = map.writes.iter().map(|(_, v)| v.version()).collect();
        assert_eq!(versions, [2, 2, 3]);
    }

    #[test]
    fn a_removed_address_leaves_its_slot_before_the_exact_map_and_a_twin_takes_it() {
        let (a, twin, other) = sharing();
        let mut map = Map::new();
        let mut d = Direct::new(map.values.clone(), []);
        for (addr, rule) in [(a, 1), (twin, 2), (other, 3)] {
            d.written(addr, &deny(rule), &mut map.write()).unwrap();
        }
        let slot = direct_slot(a);
        map.writes.clear();
        d.removing(a, &mut map.write()).unwrap();
        assert_eq!(map.writes.len(), 1);
        assert_eq!(map.values[slot as usize].address(), None);
        let entries = |addr: [u8; 4]| (addr == twin).then(|| deny(2));
        d.refill(&entries, &mut map.write()).unwrap();
        assert_eq!(map.values[slot as usize].address(), Some(twin));
        assert_eq!(map.values[slot as usize].entry, deny(2));
        // Removing an address its slot does not name writes nothing.
        map.writes.clear();
        d.written(a, &deny(1), &mut map.write()).unwrap();
        d.removing(a, &mut map.write()).unwrap();
        assert!(map.writes.is_empty());
        assert_eq!(d.names(slot), Some(twin));
    }

    #[test]
    fn a_failed_write_leaves_the_slot_as_the_map_holds_it() {
        let (a, twin, _) = sharing();
        let mut map = Map::new();
        let mut d = Direct::new(map.values.clone(), []);
        d.written(a, &deny(1), &mut map.write()).unwrap();
        d.written(twin, &deny(2), &mut map.write()).unwrap();
        // The emptying fails: the caller must not remove the address from the exact map.
        let mut failing = |_: u32, _: &DirectSlot| -> anyhow::Result<()> { anyhow::bail!("no") };
        assert!(d.removing(a, &mut failing).is_err());
        assert_eq!(d.names(direct_slot(a)), Some(a));
        // Emptied, then the refill fails: retried by the next.
        d.removing(a, &mut map.write()).unwrap();
        let entries = |addr: [u8; 4]| (addr == twin).then(|| deny(2));
        assert!(d.refill(&entries, &mut failing).is_err());
        assert_eq!(d.names(direct_slot(a)), None);
        d.refill(&entries, &mut map.write()).unwrap();
        assert_eq!(map.values[direct_slot(a) as usize].address(), Some(twin));
    }

    #[test]
    fn settling_rewrites_what_an_older_daemon_left() {
        let (a, twin, other) = sharing();
        let mut map = Map::new();
        // Left behind: a slot naming an address no longer in the exact map, one naming an
        // address with an entry since changed, one naming an address correctly.
        let stale = [192, 0, 2, 1];
        assert!(![a, other].iter().any(|&x| direct_slot(x) == direct_slot(stale)));
        for (addr, rule) in [(stale, 9), (a, 1), (other, 3)] {
            map.values[direct_slot(addr) as usize] =
                DirectSlot { tag: DirectSlot::tag_of(addr, 1), entry: deny(rule) };
        }
        let exact: BTreeMap<[u8; 4], NetEntry> = [(a, deny(4)), (twin, deny(2)), (other, deny(3))].into();
        let mut d = Direct::new(map.values.clone(), exact.keys().copied());
        let entries = |addr: [u8; 4]| exact.get(&addr).copied();
        d.settle(&entries, &mut map.write()).unwrap();
        assert_eq!(map.values[direct_slot(stale) as usize].address(), None);
        assert_eq!(map.values[direct_slot(a) as usize].address(), Some(a));
        assert_eq!(map.values[direct_slot(a) as usize].entry, deny(4));
        assert_eq!(map.values[direct_slot(other) as usize].entry, deny(3));
        // What was right is not written again; the stale slot is emptied, a's rewritten.
        let touched: BTreeSet<u32> = map.writes.iter().map(|&(i, _)| i).collect();
        assert_eq!(touched, BTreeSet::from([direct_slot(stale), direct_slot(a)]));
        map.writes.clear();
        d.settle(&entries, &mut map.write()).unwrap();
        assert!(map.writes.is_empty(), "settled");
    }
}
