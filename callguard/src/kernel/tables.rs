//! What the kernel's tables of sources hold, read from their pins without the rule service: the
//! metrics count them on a blocking thread, because a full table (a quarter of a million
//! sources under a spoofed flood, one system call each, and the source cache's 65,536 slots)
//! must not hold the service's lock.

use std::{
    collections::HashSet,
    path::Path,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{Array, HashMap, Map, MapData};
use callguard_common::{
    auth::{AuthState, UserAuth},
    limits::{self, SourceSlot, SourceState},
    maps,
};

/// One table: its name (as in [`callguard_common::maps`]), the entries it holds and how many it
/// can hold.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Table {
    /// The map's name.
    pub map: String,
    /// Entries held (approximate while the program adds and evicts: the walk follows the keys as
    /// they are).
    pub entries: u64,
    /// Entries it holds at most; past that, the least recently used make room.
    pub capacity: u32,
}

/// The tables the program keeps of sources and users.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Tables {
    /// Per-source rate state ([`maps::SOURCES`]), registered sources, failed authentications by
    /// source and by user.
    pub tables: Vec<Table>,
    /// Sources the kernel bans now: a ban not yet over in [`maps::SOURCES`], or held only by
    /// the source's slot of [`maps::SOURCE_CACHE`] (a signature ban of a source that has not
    /// sent again).
    pub banned: u64,
}

impl Tables {
    /// Entries counted, all tables together: what a walk over them costs.
    pub fn walked(&self) -> u64 {
        self.tables.iter().map(|t| t.entries).sum()
    }
}

/// The table pinned in `pin_dir` as `name`, and its capacity (`[tables]` sizes it).
fn open<K: aya::Pod, V: aya::Pod>(
    pin_dir: &Path,
    name: &str,
) -> anyhow::Result<(HashMap<MapData, K, V>, u32)> {
    let path = pin_dir.join(name);
    let data =
        MapData::from_pin(&path).with_context(|| format!("opening the map pinned at {}", path.display()))?;
    let capacity = data.info()?.max_entries();
    let map = HashMap::try_from(Map::LruHashMap(data))
        .with_context(|| format!("map {name} has an unexpected type"))?;
    Ok((map, capacity))
}

/// Keys of `map`, at most twice its capacity: a key the program evicts during the walk sends the
/// kernel's next-key back to the start, and a flood must not keep the walk going for ever.
fn count<K: aya::Pod, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    capacity: u32,
    mut each: impl FnMut(&K),
) -> anyhow::Result<u64> {
    let mut n = 0;
    for key in map.keys().take(capacity as usize * 2) {
        each(&key?);
        n += 1;
    }
    Ok(n.min(u64::from(capacity)))
}

/// Bans the source cache pinned in `pin_dir` holds for sources not in `banned` (source keys as
/// the cache holds them): the signature bans of sources that have not sent again.
fn cached_bans(pin_dir: &Path, now_ns: u64, banned: &HashSet<[u64; 2]>) -> anyhow::Result<u64> {
    let slots = source_cache_slots(&pin_dir.join(maps::SOURCE_CACHE))?;
    Ok(slots.iter().filter(|s| s.banned_until > now_ns && !banned.contains(&s.key)).count() as u64)
}

/// The slots of the source cache pinned at `path` (not the hash key past them), read with one
/// system call, not one a slot: the metrics read them once a second, an upgrade carries them.
pub fn source_cache_slots(path: &Path) -> anyhow::Result<Vec<SourceSlot>> {
    use std::os::fd::AsFd as _;
    let data =
        MapData::from_pin(path).with_context(|| format!("opening the map pinned at {}", path.display()))?;
    let len = data.info()?.max_entries().min(limits::SOURCE_CACHE_SLOTS);
    super::syscall::array_values(data.fd().as_fd(), len)
        .with_context(|| format!("reading {}", path.display()))
}

/// Counts the tables pinned in `pin_dir`; `now_ns` is `CLOCK_BOOTTIME`, the clock of the bans.
pub fn read(pin_dir: &Path, now_ns: u64) -> anyhow::Result<Tables> {
    let mut out = Tables::default();
    let (sources, capacity): (HashMap<MapData, [u8; 16], SourceState>, _) = open(pin_dir, maps::SOURCES)?;
    let mut banned = HashSet::new();
    let entries = count(&sources, capacity, |key| {
        if sources.get(key, 0).is_ok_and(|s| s.banned_until > now_ns) {
            banned.insert(limits::cache_key(key));
        }
    })?;
    out.banned = banned.len() as u64 + cached_bans(pin_dir, now_ns, &banned)?;
    out.tables.push(Table { map: maps::SOURCES.into(), entries, capacity });
    let (registered, capacity): (HashMap<MapData, [u8; 16], u64>, _) = open(pin_dir, maps::REGISTERED)?;
    let entries = count(&registered, capacity, |_| ())?;
    out.tables.push(Table { map: maps::REGISTERED.into(), entries, capacity });
    let (auth, capacity): (HashMap<MapData, [u8; 16], AuthState>, _) = open(pin_dir, maps::AUTH)?;
    let entries = count(&auth, capacity, |_| ())?;
    out.tables.push(Table { map: maps::AUTH.into(), entries, capacity });
    let (users, capacity): (HashMap<MapData, u64, UserAuth>, _) = open(pin_dir, maps::AUTH_USERS)?;
    let entries = count(&users, capacity, |_| ())?;
    out.tables.push(Table { map: maps::AUTH_USERS.into(), entries, capacity });
    Ok(out)
}

/// A count that walked more entries than this (a table of sources under a flood: one system call
/// per key and per value, tens of milliseconds) is reused by later readers for [`REUSE`]. Decided
/// by the entries walked, not the time the walk took, so a busy machine does not turn a handful of
/// entries into a stale count.
pub const LARGE: u64 = 16_384;
/// How long the count of a large table is reused.
pub const REUSE: Duration = Duration::from_secs(15);

/// The tables' last count, shared by every reader (the metrics, `GET /v1/tables` and through it
/// `callguard top`): a large walk is reused for [`REUSE`], so readers in a loop cannot make the
/// daemon walk a quarter of a million entries a second under a spoofed flood; a small one is
/// made afresh. Readers at once wait for one walk.
#[derive(Debug, Default)]
pub struct Counted(Mutex<Option<(Instant, Tables)>>);

impl Counted {
    /// The tables pinned in `pin_dir`, counted now or reused. Blocking: call it off the runtime.
    pub fn read(&self, pin_dir: &Path) -> anyhow::Result<Tables> {
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, t)) = last.as_ref()
            && t.walked() > LARGE
            && at.elapsed() < REUSE
        {
            return Ok(t.clone());
        }
        let t = read(pin_dir, crate::clock::boot_ns())?;
        *last = Some((Instant::now(), t.clone()));
        Ok(t)
    }
}

/// The daemon's last heartbeat (`CLOCK_BOOTTIME` ns) as the kernel sees it in
/// [`maps::HEARTBEAT`]: 0 when none was written.
pub fn heartbeat_ns(pin_dir: &Path) -> anyhow::Result<u64> {
    let path = pin_dir.join(maps::HEARTBEAT);
    let data =
        MapData::from_pin(&path).with_context(|| format!("opening the map pinned at {}", path.display()))?;
    let beat: Array<MapData, u64> =
        Array::try_from(Map::Array(data)).context("the heartbeat map has an unexpected type")?;
    Ok(beat.get(&0, 0)?)
}
