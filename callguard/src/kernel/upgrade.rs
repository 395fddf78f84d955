//! Replacing maps whose layout changed without a moment unfiltered.
//!
//! A map's layout is fixed when the kernel creates it: its type, key and value sizes, capacity
//! and flags. A release that changes one (a value grew, a table became LRU) or a new `[tables]`
//! size cannot reuse what the running program pins. The daemon then loads its program with a
//! complete new set of maps pinned beside the old ones (in [`STAGING`] under the pin directory),
//! writes the rules into them from its store, carries over the state the kernel alone holds
//! (rate state and bans, registered sources, failed authentications, the packet counters) where
//! the old layout can be read as the new one, and then swaps the program into each pinned link
//! with `bpf_link_update`: every packet meets either the old program with the old maps or the
//! new one with the new maps. Last, the new pins are renamed over the old ones (one `rename` each
//! on bpffs) and the old maps go with the old program.
//!
//! What changes in the old maps while the copy runs (a fraction of a second before the swap) is
//! not carried. Counters by rule and by signature start again from zero: their slots are handed
//! out afresh. A state map whose key or value changed size is not carried; the log says so.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};
use aya::maps::{HashMap, Map, MapData, MapType, PerCpuArray};
use callguard_common::{
    Counter,
    auth::{AuthState, UserAuth},
    limits::SourceState,
    maps,
};

use crate::config::TableSizes;

/// The directory under the pin directory where a new set of maps is pinned until the swap.
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

/// Empties (a crashed upgrade's leftovers) or creates the staging directory under `pin_dir`,
/// root's alone like the pin directory, and returns it.
pub fn prepare(pin_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = pin_dir.join(STAGING);
    if dir.exists() {
        remove(&dir)?;
    }
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
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
/// plain or an LRU hash; past the new one's capacity its least recently used make room.
fn carry_hash<K: aya::Pod, V: aya::Pod>(from: &Path, to: &Path) -> anyhow::Result<u64> {
    let old: HashMap<MapData, K, V> = HashMap::try_from(open(from)?)?;
    let mut new: HashMap<MapData, K, V> = HashMap::try_from(open(to)?)?;
    let limit = pinned(from)?.entries as usize * WALK_LIMIT;
    let mut n = 0;
    for entry in old.iter().take(limit) {
        let Ok((k, v)) = entry else { continue };
        new.insert(k, v, 0)?;
        n += 1;
    }
    Ok(n)
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

/// Copies one map's entries from the old pin to the new; returns how many.
type CarryFn = fn(&Path, &Path) -> anyhow::Result<u64>;

/// The maps whose entries are worth carrying: state only the kernel holds. Rules, signatures,
/// limits and ports are written from the store and the configuration instead.
const CARRIED: [(&str, CarryFn); 6] = [
    (maps::SOURCES, carry_hash::<[u8; 16], SourceState>),
    (maps::REGISTERED, carry_hash::<[u8; 16], u64>),
    (maps::AUTH, carry_hash::<[u8; 16], AuthState>),
    (maps::AUTH_USERS, carry_hash::<u64, UserAuth>),
    (maps::STATS, carry_per_cpu::<Counter>),
    (maps::ANSWERS, carry_per_cpu::<u64>),
];

impl Upgrade {
    /// Copies the state worth keeping from the old maps into the new ones, once. A map the old
    /// layout of which cannot be read as the new one (key or value size changed, another kind of
    /// table) is left behind and named.
    pub fn carry(&mut self) -> &[Carried] {
        self.carried.get_or_insert_with(|| {
            CARRIED
                .iter()
                .map(|&(map, copy)| {
                    let (from, to) = (self.pin_dir.join(map), self.staging.join(map));
                    if !from.exists() {
                        return Carried { map, entries: 0, not_carried: Some("nothing pinned".into()) };
                    }
                    match copy(&from, &to) {
                        Ok(entries) => Carried { map, entries, not_carried: None },
                        Err(e) => Carried { map, entries: 0, not_carried: Some(format!("{e:#}")) },
                    }
                })
                .collect()
        })
    }

    /// Moves the new maps' pins over the old ones (each `rename` replaces its target at once),
    /// removes pins of maps this build no longer has, and the staging directory. Call it once
    /// every pinned link runs the new program.
    pub fn commit(&self, object: &[u8]) -> anyhow::Result<()> {
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
            let kept = ours.contains_key(&name)
                || name == "prog"
                || name.starts_with("link_")
                || name.starts_with("egress_");
            if !kept {
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
