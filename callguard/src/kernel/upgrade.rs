//! Replacing maps whose layout changed without a moment unfiltered.
//!
//! A map's layout is fixed when the kernel creates it: its type, key and value sizes, capacity
//! and flags. A release that changes one (a value grew, a table became LRU) or a new `[tables]`
//! size cannot reuse what the running program pins. The daemon then loads its program with a
//! complete new set of maps pinned beside the old ones (in `upgrade_N` under the pin directory),
//! writes the rules into them from its store, carries over the state the kernel alone holds
//! (rate state and bans, the bans the source cache holds, registered sources, failed
//! authentications, the packet counters) where the old layout can be read as the new one, and then swaps the program into each pinned link
//! with `bpf_link_update`: every packet meets either the old program with the old maps or the
//! new one with the new maps. Last, the new pins are renamed over the old ones (one `rename` each
//! on bpffs) and the old maps go with the old program.
//!
//! What changes in the old state maps after the copy (it runs right before the first swap; the
//! last swap follows once every guarded interface is attached) is not carried. The counters by
//! (action, reason) are copied then too, into a half of the new array that no program writes
//! (`STATS_SLOTS`), and copied again over that after the last swap, once the old program's last
//! runs have ended (20 ms later: a run takes microseconds). A daemon killed half
//! way leaves the old program or the new one filtering with complete maps; the next start
//! carries from whichever maps the links use and removes the crashed attempt's only after its
//! own swap. Counters by rule and by signature start again from zero: their slots are handed
//! out afresh. A state map whose key or value changed size is not carried; the log says so.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};
use aya::maps::{Array, HashMap, Map, MapData, MapType, PerCpuArray, PerCpuValues};
use callguard_common::{
    Counter,
    auth::{AuthState, UserAuth},
    limits::{self, SourceSlot, SourceState},
    maps,
    stats::{STATS_LEN, STATS_SLOTS},
};

use crate::config::TableSizes;

/// How the directories under the pin directory where a new set of maps is pinned until the swap
/// begin (`upgrade_1`, `upgrade_2`, …; bpffs allows no dot in a name).
pub const STAGING: &str = "upgrade";

/// What the kernel says of a map's layout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    /// The map's type.
    pub map_type: MapType,
    /// Key size in bytes.
    pub key: u32,
    /// Value size in bytes.
    pub value: u32,
    /// Capacity in entries.
    pub entries: u32,
    /// Creation flags.
    pub flags: u32,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}, key size {}, value size {}, {} entries",
            self.map_type, self.key, self.value, self.entries
        )?;
        if self.flags != 0 {
            write!(f, ", flags {:#x}", self.flags)?;
        }
        Ok(())
    }
}

/// A pinned map this build cannot reuse: its name and both layouts.
#[derive(Clone, Debug, PartialEq)]
pub struct Changed {
    /// The map's name (as in [`callguard_common::maps`]).
    pub map: String,
    /// The layout of the map pinned now.
    pub pinned: Shape,
    /// The layout this build gives it.
    pub wanted: Shape,
}

/// The layout this build's program gives each of its pinned maps, with the sizes of `[tables]`.
fn wanted(object: &[u8], sizes: &TableSizes) -> anyhow::Result<BTreeMap<String, Shape>> {
    let obj = aya_obj::Object::parse(object).context("reading the XDP object")?;
    let mut out = BTreeMap::new();
    for (name, m) in &obj.maps {
        if !matches!(m.pinning(), aya_obj::maps::PinningType::ByName) {
            continue;
        }
        let raw = aya_obj::generated::bpf_map_type::try_from(m.map_type())
            .map_err(|_| anyhow!("map {name} has an unknown type {}", m.map_type()))?;
        let entries =
            sizes.by_map().iter().find(|(n, _)| n == name).map_or(m.max_entries(), |&(_, size)| size);
        let shape = Shape {
            map_type: MapType::try_from(raw).with_context(|| format!("map {name}"))?,
            key: m.key_size(),
            value: m.value_size(),
            entries,
            flags: m.map_flags(),
        };
        out.insert(name.clone(), shape);
    }
    Ok(out)
}

/// The layout of the map pinned at `path`.
fn pinned(path: &Path) -> anyhow::Result<Shape> {
    let info = aya::maps::MapInfo::from_pin(path)
        .with_context(|| format!("reading the map pinned at {}", path.display()))?;
    Ok(Shape {
        map_type: info.map_type().with_context(|| format!("the map pinned at {}", path.display()))?,
        key: info.key_size(),
        value: info.value_size(),
        entries: info.max_entries(),
        flags: info.map_flags(),
    })
}

/// The maps pinned in `pin_dir` whose layout differs from the one this build gives them (aya
/// would reuse a pinned map by name without comparing, and the verifier's complaint about the
/// program would name neither the map nor the cause). Empty: every pinned map can be reused.
pub fn changed(object: &[u8], pin_dir: &Path, sizes: &TableSizes) -> anyhow::Result<Vec<Changed>> {
    let mut out = Vec::new();
    for (name, want) in wanted(object, sizes)? {
        let path = pin_dir.join(&name);
        if !path.exists() {
            continue;
        }
        let have = pinned(&path)?;
        if have != want {
            out.push(Changed { map: name, pinned: have, wanted: want });
        }
    }
    Ok(out)
}

/// Creates a staging directory under `pin_dir` (`upgrade_N`, the first N free), root's alone
/// like the pin directory, and returns it. One a crashed upgrade left is not touched: the links
/// may run the program of its maps, and a program array loses its programs when its last pin
/// goes. [`leftovers`] finds it; [`remove`] it once every link runs the new program.
pub fn prepare(pin_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = (1..)
        .map(|n| pin_dir.join(format!("{STAGING}_{n}")))
        .find(|p| !p.exists())
        .ok_or_else(|| anyhow!("no free name for a staging directory in {}", pin_dir.display()))?;
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The staging directories in `pin_dir` (`upgrade_N`): those of crashed upgrades, and the one
/// under way if any.
pub fn leftovers(pin_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(pin_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name == STAGING || name.strip_prefix(STAGING).is_some_and(|n| n.starts_with('_'))
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// The ids of the maps the program in the first XDP link pinned in `pin_dir` uses: which of
/// several maps of one name holds the state that is live. Empty when no link is pinned.
fn live_map_ids(pin_dir: &Path) -> std::collections::BTreeSet<u32> {
    let live = || -> anyhow::Result<std::collections::BTreeSet<u32>> {
        let Some(link) = std::fs::read_dir(pin_dir)?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("link_"))
        else {
            return Ok(Default::default());
        };
        let fd: aya::programs::links::FdLink =
            aya::programs::links::PinnedLink::from_pin(link.path())?.into();
        let prog = fd.info()?.program_id();
        let info = aya::programs::loaded_programs()
            .flatten()
            .find(|p| p.id() == prog)
            .ok_or_else(|| anyhow!("program {prog} of the pinned link is gone"))?;
        Ok(info.map_ids()?.unwrap_or_default().into_iter().collect())
    };
    live().unwrap_or_else(|e| {
        tracing::warn!("reading which maps the pinned program uses: {e:#}");
        Default::default()
    })
}

/// Removes a staging directory and the pins in it.
pub fn remove(dir: &Path) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
        std::fs::remove_file(e.path()).with_context(|| format!("unpinning {}", e.path().display()))?;
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))
}

/// What was carried from one old map into its replacement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carried {
    /// The map's name.
    pub map: &'static str,
    /// Entries copied (for a counter array: the slots).
    pub entries: u64,
    /// Why nothing was copied, when nothing could be.
    pub not_carried: Option<String>,
}

/// An upgrade under way: the new maps are pinned in `staging`, the old ones still in `pin_dir`,
/// where the links are.
#[derive(Debug)]
pub struct Upgrade {
    /// The pin directory, holding the old maps and the links.
    pub pin_dir: PathBuf,
    /// Where the new maps are pinned until [`Upgrade::commit`].
    pub staging: PathBuf,
    /// The maps whose layout changed.
    pub changed: Vec<Changed>,
    /// What [`Upgrade::carry`] copied; `None` until it ran.
    pub carried: Option<Vec<Carried>>,
    /// The old counters by (action, reason): the map the links' program used when
    /// [`Upgrade::carry`] copied them, which [`Upgrade::carry_counters`] copies again.
    pub counters_from: Option<PathBuf>,
}

/// Keys of a table walked at most this many times its capacity: a key the old program evicts
/// during the walk sends the kernel's next-key back to the start.
const WALK_LIMIT: usize = 2;

fn open(path: &Path) -> anyhow::Result<Map> {
    let data =
        MapData::from_pin(path).with_context(|| format!("opening the map pinned at {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("the map pinned at {}", path.display()))
}

/// Copies a hash table's entries from `from` to `to` (both pinned): the old table may be a
/// plain or an LRU hash. The entries `last` picks are inserted after the others, so that when
/// the new table is smaller they are the ones kept (an LRU table makes room by its own use
/// order, which for a copy is the order of insertion).
fn carry_hash_ordered<K: aya::Pod, V: aya::Pod>(
    from: &Path,
    to: &Path,
    last: impl Fn(&V) -> bool,
) -> anyhow::Result<u64> {
    let old: HashMap<MapData, K, V> = HashMap::try_from(open(from)?)?;
    let mut new: HashMap<MapData, K, V> = HashMap::try_from(open(to)?)?;
    let limit = pinned(from)?.entries as usize * WALK_LIMIT;
    let mut n = 0;
    for pass in [false, true] {
        for entry in old.iter().take(limit) {
            let Ok((k, v)) = entry else { continue };
            if last(&v) == pass {
                new.insert(k, v, 0).with_context(|| format!("after {n} entries"))?;
                n += 1;
            }
        }
    }
    Ok(n)
}

fn carry_hash<K: aya::Pod, V: aya::Pod>(from: &Path, to: &Path) -> anyhow::Result<u64> {
    carry_hash_ordered::<K, V>(from, to, |_| false)
}

/// Sources' states, the kernel's bans last (see [`carry_hash_ordered`]).
fn carry_sources(from: &Path, to: &Path) -> anyhow::Result<u64> {
    let now = crate::clock::boot_ns();
    carry_hash_ordered::<[u8; 16], SourceState>(from, to, |s| s.banned_until > now)
}

/// The source cache's live bans (a signature ban of a source that has not sent again is held
/// only there), each placed by the new map's hash key (a release before the key had one
/// fixed; see `limits::cache_slot`); of two that meet in a slot, the later ban. The notes of
/// a jiffy (a source over its rate, or with nothing to decide before a read) are left.
fn carry_source_cache(from: &Path, to: &Path) -> anyhow::Result<u64> {
    let now = crate::clock::boot_ns();
    let mut new: Array<MapData, SourceSlot> = Array::try_from(open(to)?)?;
    let held = super::tables::source_cache_slots(from)?;
    let seed = new.get(&limits::SOURCE_CACHE_SEED, 0)?.key;
    let mut placed: BTreeMap<u32, SourceSlot> = BTreeMap::new();
    for slot in held.iter().filter(|s| s.banned_until > now) {
        let at = limits::cache_slot(slot.key, seed);
        let ban = SourceSlot::ban(slot.key, slot.banned_until);
        let e = placed.entry(at).or_insert(ban);
        if slot.banned_until > e.banned_until {
            *e = ban;
        }
    }
    for (&at, slot) in &placed {
        new.set(at, *slot, 0)?;
    }
    Ok(placed.len() as u64)
}

/// Copies each CPU's counters slot by slot, as many slots as both arrays have.
fn carry_per_cpu<V: aya::Pod>(from: &Path, to: &Path) -> anyhow::Result<u64> {
    let old: PerCpuArray<MapData, V> = PerCpuArray::try_from(open(from)?)?;
    let mut new: PerCpuArray<MapData, V> = PerCpuArray::try_from(open(to)?)?;
    let slots = old.len().min(new.len());
    for i in 0..slots {
        new.set(i, old.get(&i, 0)?, 0)?;
    }
    Ok(u64::from(slots))
}

/// The kernel's id of the map pinned at `path`.
fn pinned_id(path: &Path) -> Option<u32> {
    aya::maps::MapInfo::from_pin(path).ok().map(|i| i.id())
}

/// Copies one map's entries from the old pin to the new; returns how many.
type CarryFn = fn(&Path, &Path) -> anyhow::Result<u64>;

/// The maps whose entries are worth carrying: state only the kernel holds. Rules, signatures,
/// limits and ports are written from the store and the configuration instead. The counters by
/// (action, reason) are copied again after the last swap ([`Upgrade::carry_counters`]).
const CARRIED: [(&str, CarryFn); 7] = [
    (maps::SOURCES, carry_sources),
    (maps::SOURCE_CACHE, carry_source_cache),
    (maps::STATS, carry_stats),
    (maps::REGISTERED, carry_hash::<[u8; 16], u64>),
    (maps::AUTH, carry_hash::<[u8; 16], AuthState>),
    (maps::AUTH_USERS, carry_hash::<u64, UserAuth>),
    (maps::ANSWERS, carry_per_cpu::<u64>),
];

/// How long [`Upgrade::carry_counters`] lets runs of the old program that began before the
/// swap end: an XDP run takes microseconds, the kernel lets go of the old program after an RCU
/// grace period.
const OLD_RUNS_END: std::time::Duration = std::time::Duration::from_millis(20);

/// The old counters by (action, reason), per slot and CPU: the program's, plus what earlier
/// upgrades carried into the second half (an older layout has none; one of another size is
/// read for the slots both have).
fn old_totals(from: &Path) -> anyhow::Result<Vec<Vec<Counter>>> {
    let old: PerCpuArray<MapData, Counter> = PerCpuArray::try_from(open(from)?)?;
    let slots = STATS_LEN.min(old.len());
    (0..slots)
        .map(|i| {
            let mut sum: Vec<Counter> = old.get(&i, 0)?.iter().copied().collect();
            if old.len() == STATS_SLOTS {
                for (s, c) in sum.iter_mut().zip(old.get(&(STATS_LEN + i), 0)?.iter()) {
                    *s = s.add(*c);
                }
            }
            Ok(sum)
        })
        .collect()
}

/// Writes the old counters' totals ([`old_totals`] of `from`) into the second half of the new
/// counters at `to`, which only this writes (`STATS_SLOTS`; no program does): run again, it
/// replaces what it wrote before. Returns the slots written.
fn carry_stats(from: &Path, to: &Path) -> anyhow::Result<u64> {
    let totals = old_totals(from)?;
    let mut new: PerCpuArray<MapData, Counter> = PerCpuArray::try_from(open(to)?)?;
    anyhow::ensure!(new.len() == STATS_SLOTS, "the new counters have no half for carried counts");
    let slots = totals.len() as u64;
    for (i, per_cpu) in (0..).zip(totals) {
        new.set(STATS_LEN + i, PerCpuValues::try_from(per_cpu)?, 0)?;
    }
    Ok(slots)
}

impl Upgrade {
    /// Copies the state worth keeping from the old maps into the new ones, once: from the
    /// map of each name that the pinned links' program uses (the pin directory's, or a crashed
    /// upgrade's that got as far as a swap). A map whose old layout cannot be read as the new
    /// one (key or value size changed, another kind of table) is left behind and named. Only
    /// sizes can be compared: a release that changes a state's fields without changing its
    /// size must rename the map.
    /// `leftovers` are the staging directories of crashed upgrades ([`leftovers`]): some of
    /// their maps may be the ones the links use, and so the ones to carry from.
    pub fn carry(&mut self, leftovers: &[PathBuf]) -> &[Carried] {
        let live = live_map_ids(&self.pin_dir);
        let dirs: Vec<&Path> =
            std::iter::once(self.pin_dir.as_path()).chain(leftovers.iter().map(PathBuf::as_path)).collect();
        // The pin of `map` the links' program uses, else the first there is.
        let source = |map: &str| {
            let mut candidates = dirs.iter().map(|d| d.join(map)).filter(|p| p.exists());
            let first = candidates.next();
            std::iter::once(first.clone())
                .flatten()
                .chain(candidates)
                .find(|p| pinned_id(p).is_some_and(|id| live.contains(&id)))
                .or(first)
        };
        if self.carried.is_none() {
            self.counters_from = source(maps::STATS);
        }
        self.carried.get_or_insert_with(|| {
            CARRIED
                .iter()
                .map(|&(map, copy)| {
                    let Some(from) = source(map) else {
                        return Carried { map, entries: 0, not_carried: Some("nothing pinned".into()) };
                    };
                    match copy(&from, &self.staging.join(map)) {
                        Ok(entries) => Carried { map, entries, not_carried: None },
                        Err(e) => Carried { map, entries: 0, not_carried: Some(format!("{e:#}")) },
                    }
                })
                .collect()
        })
    }

    /// Copies the old counters by (action, reason) again, as [`Upgrade::carry`] did, once every
    /// link runs the new program and the old one's last runs have ended (after
    /// [`OLD_RUNS_END`]): what the old program counted between the two copies is kept, and the
    /// new program's counts are not touched (the copy goes to the half no program writes).
    /// A failure replaces the note of the first copy.
    pub fn carry_counters(&mut self) {
        let Some(from) = self.counters_from.take() else { return };
        std::thread::sleep(OLD_RUNS_END);
        if let Err(e) = carry_stats(&from, &self.staging.join(maps::STATS)) {
            let note = Carried { map: maps::STATS, entries: 0, not_carried: Some(format!("{e:#}")) };
            let carried = self.carried.get_or_insert_with(Vec::new);
            carried.retain(|c| c.map != maps::STATS);
            carried.push(note);
        }
    }

    /// Moves the new maps' pins over the old ones (each `rename` replaces its target at once),
    /// removes the staging directory and the pins of maps this build no longer has (`CG_*`
    /// files only: nothing else in the directory is callguard's to remove). Call it once every
    /// pinned link runs the new program; then remove the [`leftovers`].
    pub fn commit(&self, object: &[u8]) -> anyhow::Result<()> {
        // Only the names count here; any sizes give the same.
        let ours = wanted(object, &TableSizes::default())?;
        for e in std::fs::read_dir(&self.staging)
            .with_context(|| format!("reading {}", self.staging.display()))?
            .flatten()
        {
            let to = self.pin_dir.join(e.file_name());
            std::fs::rename(e.path(), &to)
                .with_context(|| format!("moving {} to {}", e.path().display(), to.display()))?;
        }
        std::fs::remove_dir(&self.staging).with_context(|| format!("removing {}", self.staging.display()))?;
        for e in std::fs::read_dir(&self.pin_dir)
            .with_context(|| format!("reading {}", self.pin_dir.display()))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            // Only maps of an older callguard: its map names all begin so.
            let stale = name.starts_with("CG_") && !ours.contains_key(&name) && e.path().is_file();
            if stale {
                tracing::info!(map = name, "removing the pin of a map this callguard no longer has");
                std::fs::remove_file(e.path())
                    .with_context(|| format!("unpinning {}", e.path().display()))?;
            }
        }
        Ok(())
    }
}

/// What an upgrade in place did, for the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Upgraded {
    /// The maps whose layout changed.
    pub changed: Vec<Changed>,
    /// What was carried from each map holding state.
    pub carried: Vec<Carried>,
}
