//! The kernel side as the daemon sees it: the embedded XDP object, loading it with pinned maps,
//! attaching it with pinned links, and typed access to every map.
//!
//! Pin layout under the pin directory (default `/sys/fs/bpf/callguard`):
//! - one file per map, named as in [`callguard_common::maps`];
//! - `link_<interface>`: the XDP link of each guarded interface;
//! - `egress_<interface>`: the TCX link of the egress program on it (Linux 6.6+), which reads
//!   the PBX's answers (`callguard_common::answer`);
//! - `prog`: the program the daemon loaded last;
//! - `upgrade_N/`: during an upgrade that changes a map's layout, the new maps ([`upgrade::prepare`]).
//!
//! Filtering outlives the daemon: a pinned link keeps the program attached and the program keeps
//! its maps. A new daemon loads the (possibly newer) program against the same pinned maps and
//! swaps it into the existing link with `bpf_link_update`, so no packet goes unfiltered during
//! an upgrade or restart; when a map's layout changed, against a new set of maps built beside
//! the old ones ([`upgrade`]). `callguard detach` removes the pins, which detaches everything.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    ffi::CString,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuValues, RingBuf, lpm_trie::Key},
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use callguard_common::{
    Action, Counter, KernelConfig, NetEntry, Reason, answer,
    config::CONFIG_KEY,
    events::EventBudget,
    limits::{self, Limits, SourceSlot, SourceState},
    maps,
    net::{DIRECT_SLOTS, DirectSlot, HINT_VALUES, NetHints},
    sig::{DfaBank, DfaHead},
    stats::{STATS_LEN, stats_index},
};
use ipnet::IpNet;

use self::{
    datapath::{Answers, Datapath, HandUpMaps, KernelError, Result},
    direct::Direct,
    hints::Hints,
    objects::Loops,
    upgrade::{Upgrade, Upgraded},
};
use crate::config::{TableSizes, XdpModeSetting};

pub mod datapath;
mod direct;
pub mod fake;
mod hints;
pub mod objects;
mod syscall;
pub mod tables;
pub mod upgrade;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts bpffs on `/sys/fs/bpf` when it is not mounted (a fresh machine of this kind has none;
/// mode 0700, not the 01777 a bare mount gives) and creates `dir` on it (mode 0700). A pin
/// directory that is there already must belong to root and be writable by nobody else: whoever
/// could write in it could remove the pins and, with them, the filter.
pub fn ensure_pin_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    let root = Path::new("/sys/fs/bpf");
    if dir.starts_with(root) && !is_bpffs(root) {
        std::fs::create_dir_all(root).ok();
        let src = CString::new("bpf")?;
        let target = CString::new("/sys/fs/bpf")?;
        let opts = CString::new("mode=0700")?;
        // SAFETY: valid NUL-terminated strings; bpffs takes `mode=` as its data.
        let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), src.as_ptr(), 0, opts.as_ptr().cast()) };
        if rc != 0 {
            bail!("mounting bpffs on /sys/fs/bpf: {}", std::io::Error::last_os_error());
        }
        tracing::info!("mounted bpffs on /sys/fs/bpf (mode 0700)");
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating pin directory {}", dir.display()))?;
    if !is_bpffs(dir) {
        bail!("{} is not on a BPF file system (bpffs)", dir.display());
    }
    let meta = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        bail!(
            "pin directory {} belongs to uid {} with mode {:o}: it must belong to root and be writable by \
             root only (anyone who can write there can remove the filter); remove it or fix it \
             (chown root {0}; chmod go-w {0})",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// The daemon's hold on its pin directory: an exclusive `flock` on the directory, which the
/// kernel releases when the process ends, however it ends. One daemon at a time owns the maps
/// and links pinned there: a second would write its own store's rules into the same maps (an
/// empty store, none) and swap its program into the first one's links. [`detach_all`] leaves a
/// held directory in place (its pins go), so that no daemon starts on a new one of the same
/// name beside the one that holds it.
#[derive(Debug)]
pub struct PinDirLock {
    _dir: std::fs::File,
}

impl PinDirLock {
    /// Takes the lock on `dir` (made first, as [`ensure_pin_dir`] makes it), or fails naming
    /// the process that holds it.
    pub fn take(dir: &Path) -> anyhow::Result<Self> {
        ensure_pin_dir(dir)?;
        Self::try_take(dir)?.ok_or_else(|| {
            anyhow!(
                "the pin directory {} is held by {}, another callguard daemon: one daemon at a time owns \
                 the filter pinned there (two would write their own rules into the same maps). Stop that \
                 one first (systemctl stop callguard), or give this one a pin_dir of its own",
                dir.display(),
                holder(dir)
            )
        })
    }

    /// The lock on an existing `dir`, or `None` when another process holds it.
    fn try_take(dir: &Path) -> anyhow::Result<Option<Self>> {
        let file = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { _dir: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking the pin directory {}", dir.display()))
            }
        }
    }

    /// Who holds the lock on `dir` ("process N", or "another process" when no process can be
    /// named), when a process other than this one does.
    pub fn holder_of(dir: &Path) -> Option<String> {
        match Self::try_take(dir) {
            Ok(None) => Some(holder(dir)),
            _ => None,
        }
    }
}

/// The processes other than this one with `dir` open, as text, from `/proc/*/fd`: no call says
/// who holds a `flock`, and the pin directory stays open only in a daemon's [`PinDirLock`]
/// (another starting daemon opens it for a moment). Without the capabilities to read another
/// process's descriptors (the unit's set cannot read those of a root process with all of them),
/// "another process".
fn holder(dir: &Path) -> String {
    let me = std::process::id();
    let pids: Vec<String> = match (std::fs::canonicalize(dir), std::fs::read_dir("/proc")) {
        (Ok(dir), Ok(procs)) => {
            let mut pids: Vec<u32> = procs
                .flatten()
                .filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&pid| pid != me)
                .filter(|pid| {
                    std::fs::read_dir(format!("/proc/{pid}/fd"))
                        .into_iter()
                        .flatten()
                        .flatten()
                        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == dir))
                })
                .collect();
            pids.sort_unstable();
            pids.iter().map(ToString::to_string).collect()
        }
        _ => Vec::new(),
    };
    if pids.is_empty() { "another process".to_owned() } else { format!("process {}", pids.join(", ")) }
}

/// Whether the bpffs holding the pins is private to this process's mount namespace, so that its
/// pins, and the filter with them, end with the daemon. `ip netns exec NAME` gives its command a
/// mount namespace with a /sys of its own (mounted with NAME as its source, which is how it is
/// recognised), on which the daemon then mounts a bpffs of its own. Otherwise: true when
/// `/sys/fs/bpf` here is another file system than the one PID 1 sees there; `None` when that
/// cannot be read (PID 1 out of reach, as in a container or under the unit's capabilities).
pub fn pins_are_private() -> Option<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let sys_source = info
        .lines()
        .filter_map(|l| {
            let (mount, fs) = l.split_once(" - ")?;
            let point = mount.split(' ').nth(4)?;
            let mut fs = fs.split(' ');
            let (kind, source) = (fs.next()?, fs.next()?);
            (point == "/sys" && kind == "sysfs").then_some(source)
        })
        .next_back();
    if let Some(name) = sys_source
        && name != "sysfs"
        && Path::new("/run/netns").join(name).exists()
    {
        return Some(true);
    }
    let here = std::fs::metadata("/sys/fs/bpf").ok()?.dev();
    let init = std::fs::metadata("/proc/1/root/sys/fs/bpf").ok()?.dev();
    Some(here != init)
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the struct we own; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statfs(c.as_ptr(), &raw mut st) };
    rc == 0 && st.f_type == BPF_FS_MAGIC
}

fn link_pin(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("link_{iface}"))
}

fn egress_pin(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("egress_{iface}"))
}

/// Removes every pin callguard made in `dir` (links first, so nothing filters against half-removed
/// maps), then the directory, unless a running daemon holds it ([`PinDirLock`]: it stays, empty,
/// so that no second daemon can start beside that one). Each link is detached before its pin
/// goes ([`detach_link`]), so the filter is off when this returns. Returns the interfaces that
/// were detached.
pub fn detach_all(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut detached = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(detached),
        // Not "nothing attached": a user who may not read the pins cannot tell.
        Err(e) => return Err(e).with_context(|| format!("reading the pin directory {}", dir.display())),
    };
    // Held while the pins go: no daemon starts on them half removed.
    let lock = PinDirLock::try_take(dir)?;
    let (mut egress, mut others, mut staging) = (Vec::new(), Vec::new(), Vec::new());
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(iface) = name.strip_prefix("link_") {
            detach_link(&e.path());
            std::fs::remove_file(e.path()).with_context(|| format!("unpinning {}", e.path().display()))?;
            detached.push(iface.to_owned());
        } else if name.starts_with("egress_") {
            egress.push(e.path());
        } else if e.path().is_dir() {
            staging.push(e.path());
        } else {
            others.push(e.path());
        }
    }
    for p in &egress {
        detach_link(p);
    }
    for p in egress.into_iter().chain(others) {
        std::fs::remove_file(&p).with_context(|| format!("unpinning {}", p.display()))?;
    }
    // An upgrade's staging directories.
    for s in staging {
        upgrade::remove(&s)?;
    }
    if lock.is_some() {
        std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(detached)
}

/// Detaches the link pinned at `pin` from its interface at once (`BPF_LINK_DETACH`, Linux 5.9+
/// for XDP links), also when another process holds it. Removing the pin alone is not enough:
/// the kernel lets go of a link whose last reference is gone in a work item of its own, and
/// until that runs the program still filters (a loaded machine took long enough for packets
/// sent right after `callguard detach` to meet it). A kernel that cannot detach the link this
/// way leaves it to the unpin; the log says so. Through [`syscall`]: aya 0.14 has no call for
/// it.
fn detach_link(pin: &Path) {
    use std::os::fd::AsFd as _;
    let Ok(link) = syscall::obj_get(pin) else { return };
    if let Err(error) = syscall::link_detach(link.as_fd()) {
        tracing::info!(pin = %pin.display(), %error, "the kernel did not detach the link at once; it goes with its pin");
    }
}

/// Interfaces with a pinned callguard link in `dir`.
pub fn pinned_interfaces(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("link_").map(str::to_owned))
        .collect();
    out.sort();
    out
}

/// How an interface ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Attached {
    /// Native (driver) XDP.
    Native,
    /// Generic (skb) XDP.
    Generic,
    /// An existing pinned link was adopted; the program in it was replaced atomically.
    Adopted,
}

/// The loaded program and its maps.
pub struct Kernel {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    v4_exact: HashMap<MapData, [u8; 4], NetEntry>,
    v6_exact: HashMap<MapData, [u8; 16], NetEntry>,
    v4_lpm: LpmTrie<MapData, [u8; 4], NetEntry>,
    v6_lpm: LpmTrie<MapData, [u8; 16], NetEntry>,
    ports: Array<MapData, u8>,
    config: Array<MapData, KernelConfig>,
    stats: PerCpuArray<MapData, Counter>,
    rule_stats: PerCpuArray<MapData, Counter>,
    sig_dfa: Array<MapData, DfaBank>,
    sig_head: Array<MapData, DfaHead>,
    sig_stats: PerCpuArray<MapData, Counter>,
    sources: HashMap<MapData, [u8; 16], SourceState>,
    /// What the kernel decided about a source before reading (`CG_SOURCE_CACHE`); a lifted
    /// ban's slot is cleared with it.
    source_cache: Array<MapData, SourceSlot>,
    limits: Array<MapData, Limits>,
    /// The event ring buffer, until the daemon takes it ([`Kernel::take_events`]).
    events: Option<RingBuf<MapData>>,
    /// The hand-up ring buffers and the heartbeat, until the slow path takes them
    /// ([`Kernel::take_handup`]).
    handup: Option<HandUpMaps>,
    /// Sources the PBX accepted a registration from.
    registered: HashMap<MapData, [u8; 16], u64>,
    /// Counters of the PBX's answers.
    answers: PerCpuArray<MapData, u64>,
    /// Each CPU's event budget.
    event_budget: PerCpuArray<MapData, EventBudget>,
    /// What `CG_CONFIG` holds (its `sig_bank` is the signature bank in use).
    kcfg: KernelConfig,
    /// What the network maps hold (read once at load, then kept in step with every write).
    nets: BTreeMap<IpNet, NetEntry>,
    /// Where an IPv4 rule may apply, tested by the program before its IPv4 lookups.
    v4_hints: Array<MapData, NetHints>,
    /// What `v4_hints` holds, unless `hints_unsure`.
    hints: Hints,
    /// A write of `v4_hints` failed: the map may hold less than `hints` says, so the next write
    /// is of every value.
    hints_unsure: bool,
    /// The IPv4 single addresses direct-mapped, read by the program before `v4_exact`.
    v4_direct: Array<MapData, DirectSlot>,
    /// What `v4_direct` holds and should.
    direct: Direct,
    /// Counter slots by rule id, rebuilt from the entries at load.
    slots: Slots,
    /// What `CG_PORTS` holds.
    port_bits: Vec<u8>,
    /// The upgrade under way when some pinned map's layout changed: this program's maps are
    /// pinned beside the old ones until [`Datapath::settle`].
    upgrade: Option<Upgrade>,
    /// Staging directories a crashed upgrade left, removed by [`Datapath::settle`] once every
    /// link runs this program.
    leftovers: Vec<PathBuf>,
    /// Interfaces this daemon attached (or swapped the program into).
    attached: std::collections::BTreeSet<String>,
    /// The build of the object loaded.
    loops: Loops,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("pin_dir", &self.pin_dir)
            .field("nets", &self.nets.len())
            .finish_non_exhaustive()
    }
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> anyhow::Result<T> {
    let map = ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing from the XDP object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

impl Kernel {
    /// Loads the program and verifies it, reusing the maps pinned in `pin_dir` (or creating
    /// and pinning them there), the tables of sources and users sized by `sizes`. When a pinned
    /// map's layout differs from this build's (another release, other sizes), every map is
    /// created anew beside the old ones, and the old program keeps filtering with them until
    /// this one is swapped into each link ([`Datapath::attach`], then [`Datapath::settle`]; see
    /// [`upgrade`]). Nothing is attached yet. The build of the object is the one for this kernel
    /// ([`Loops::of_this_kernel`]), or the one with callbacks when the verifier refuses the
    /// other.
    pub fn load(pin_dir: &Path, sizes: &TableSizes) -> anyhow::Result<Self> {
        let loops = Loops::of_this_kernel();
        match Self::load_build(pin_dir, sizes, loops) {
            Err(e) if loops == Loops::MayGoto => {
                // The kernel knows may_goto, but its verifier (6.9 to 6.17 changed how it
                // checks such loops) may refuse this build's: the other build may load.
                tracing::warn!(
                    "the kernel refused the build with may_goto loops ({e:#}); loading the build with bpf_loop callbacks"
                );
                Self::load_build(pin_dir, sizes, Loops::Callbacks)
            }
            loaded => loaded,
        }
    }

    /// [`Kernel::load`] with the given build of the object, whether or not it is the one this
    /// kernel would be given (the tests run both).
    pub fn load_build(pin_dir: &Path, sizes: &TableSizes, loops: Loops) -> anyhow::Result<Self> {
        let object = loops.object();
        if object.is_empty() {
            bail!("this build has no XDP object (built with AYA_BUILD_SKIP)");
        }
        tracing::info!(build = loops.describe(), "loading the XDP object");
        ensure_pin_dir(pin_dir)?;
        raise_memlock();
        let changed = upgrade::changed(object, pin_dir, sizes)?;
        let upgrade = if changed.is_empty() {
            None
        } else {
            for c in &changed {
                tracing::info!(
                    map = c.map,
                    pinned = %c.pinned,
                    wanted = %c.wanted,
                    "a pinned map has another layout: building a new set of maps beside the old ones"
                );
            }
            let staging = upgrade::prepare(pin_dir)?;
            Some(Upgrade {
                staging,
                pin_dir: pin_dir.to_owned(),
                changed,
                carried: None,
                counters_from: None,
            })
        };
        let maps_dir = upgrade.as_ref().map_or(pin_dir, |u| u.staging.as_path());
        let loaded = Self::load_into(object, maps_dir, sizes);
        let mut k = match loaded {
            Ok(k) => k,
            Err(e) => {
                if let Some(u) = &upgrade {
                    upgrade::remove(&u.staging).ok();
                }
                return Err(e);
            }
        };
        k.pin_dir = pin_dir.to_owned();
        k.leftovers = upgrade::leftovers(pin_dir)
            .into_iter()
            .filter(|d| upgrade.as_ref().is_none_or(|u| *d != u.staging))
            .collect();
        k.upgrade = upgrade;
        k.loops = loops;
        Ok(k)
    }

    /// The build of the object this kernel side was loaded from.
    pub const fn loops(&self) -> Loops {
        self.loops
    }

    /// Loads the program in `object` with its maps pinned in `maps_dir`.
    fn load_into(object: &[u8], maps_dir: &Path, sizes: &TableSizes) -> anyhow::Result<Self> {
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(maps_dir);
        for (name, size) in sizes.by_map() {
            loader.map_max_entries(name, size);
        }
        let mut ebpf = loader
            .load(object)
            .with_context(|| format!("loading the XDP program with maps pinned in {}", maps_dir.display()))?;
        let prog: &mut Xdp = ebpf
            .program_mut(maps::PROGRAM)
            .ok_or_else(|| anyhow!("program {} missing", maps::PROGRAM))?
            .try_into()?;
        prog.load().context("the kernel verifier rejected the XDP program")?;
        let mut stages = Vec::new();
        for name in maps::SIP_PROGRAMS {
            let stage: &mut Xdp =
                ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing"))?.try_into()?;
            stage
                .load()
                .with_context(|| format!("the kernel verifier rejected the SIP inspection program {name}"))?;
            stages.push(stage.fd()?.try_clone()?);
        }
        let mut next: aya::maps::ProgramArray<&mut MapData> = aya::maps::ProgramArray::try_from(
            ebpf.map_mut(maps::SIP_NEXT).ok_or_else(|| anyhow!("map {} missing", maps::SIP_NEXT))?,
        )?;
        for (slot, stage) in (0..).zip(&stages) {
            next.set(slot, stage, 0).context("putting a SIP inspection program in its slot")?;
        }
        let egress: &mut SchedClassifier = ebpf
            .program_mut(maps::EGRESS_PROGRAM)
            .ok_or_else(|| anyhow!("program {} missing", maps::EGRESS_PROGRAM))?
            .try_into()?;
        egress.load().context("the kernel verifier rejected the egress program")?;
        let mut k = Self {
            v4_exact: take(&mut ebpf, maps::NET_V4_EXACT)?,
            v6_exact: take(&mut ebpf, maps::NET_V6_EXACT)?,
            v4_lpm: take(&mut ebpf, maps::NET_V4_LPM)?,
            v6_lpm: take(&mut ebpf, maps::NET_V6_LPM)?,
            v4_hints: take(&mut ebpf, maps::NET_V4_HINTS)?,
            hints: Hints::of(&BTreeMap::new()),
            hints_unsure: false,
            v4_direct: take(&mut ebpf, maps::NET_V4_DIRECT)?,
            // Read from the map by `settle_direct` below.
            direct: Direct::default(),
            ports: take(&mut ebpf, maps::PORTS)?,
            config: take(&mut ebpf, maps::CONFIG)?,
            stats: take(&mut ebpf, maps::STATS)?,
            rule_stats: take(&mut ebpf, maps::RULE_STATS)?,
            sig_dfa: take(&mut ebpf, maps::SIG_DFA)?,
            sig_head: take(&mut ebpf, maps::SIG_HEAD)?,
            sig_stats: take(&mut ebpf, maps::SIG_STATS)?,
            sources: take(&mut ebpf, maps::SOURCES)?,
            source_cache: take(&mut ebpf, maps::SOURCE_CACHE)?,
            limits: take(&mut ebpf, maps::LIMITS)?,
            events: Some(take(&mut ebpf, maps::EVENTS)?),
            handup: Some(HandUpMaps {
                common: take(&mut ebpf, maps::HANDUP)?,
                registered: take(&mut ebpf, maps::HANDUP_REGISTERED)?,
                heartbeat: take(&mut ebpf, maps::HEARTBEAT)?,
            }),
            registered: take(&mut ebpf, maps::REGISTERED)?,
            answers: take(&mut ebpf, maps::ANSWERS)?,
            event_budget: take(&mut ebpf, maps::EVENT_BUDGET)?,
            kcfg: KernelConfig::default(),
            ebpf,
            pin_dir: maps_dir.to_owned(),
            nets: BTreeMap::new(),
            port_bits: Vec::new(),
            slots: Slots::default(),
            upgrade: None,
            leftovers: Vec::new(),
            attached: std::collections::BTreeSet::new(),
            loops: Loops::MayGoto,
        };
        k.nets = k.read_nets()?;
        // Every value: the bits the entries in the maps need (a build without hints may have
        // written entries without theirs), and those the map holds already, which may be a
        // running daemon's (two on one pin directory are a mistake, but one must not clear
        // what the other set). Bits no entry needs go at the next removal.
        k.hints = Hints::of(&k.nets);
        for i in 0..HINT_VALUES {
            if let Ok(held) = k.v4_hints.get(&i, 0) {
                k.hints.merge(i, &held);
            }
        }
        k.write_hints(0..HINT_VALUES)?;
        k.settle_direct()?;
        k.slots = Slots::from_entries(k.nets.values());
        k.port_bits = k.ports.iter().collect::<Result<_, _>>()?;
        k.kcfg = k.config.get(&CONFIG_KEY, 0)?;
        k.seed_source_cache()?;
        Ok(k)
    }

    /// Gives a source cache that has no hash key yet (a map just created) a random one
    /// (`limits::SOURCE_CACHE_SEED`); a map adopted keeps its own, which its slots are placed by.
    fn seed_source_cache(&mut self) -> Result<()> {
        if self.source_cache_seed()? != [0; 2] {
            return Ok(());
        }
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| anyhow!("drawing the source cache's hash key: {e}"))?;
        let (a, b) = bytes.split_at(8);
        // Odd, and so never [0, 0], which means "none yet".
        let word = |w: &[u8]| u64::from_ne_bytes(w.try_into().unwrap_or_default()) | 1;
        let entry = SourceSlot { key: [word(a), word(b)], ..SourceSlot::default() };
        self.source_cache.set(limits::SOURCE_CACHE_SEED, entry, 0)?;
        Ok(())
    }

    /// The source cache's hash key (`[0, 0]`: none yet).
    pub fn source_cache_seed(&self) -> Result<[u64; 2]> {
        Ok(self.source_cache.get(&limits::SOURCE_CACHE_SEED, 0)?.key)
    }

    /// The XDP program (for `BPF_PROG_TEST_RUN`).
    pub fn program(&mut self) -> &mut Xdp {
        // The program was found and converted in `load`; both lookups are infallible here.
        self.ebpf.program_mut(maps::PROGRAM).and_then(|p| p.try_into().ok()).expect("loaded in Kernel::load")
    }

    /// Loads the pass-everything reference program of the same object (benchmarks only).
    pub fn baseline(&mut self) -> anyhow::Result<&mut Xdp> {
        self.reference(maps::BASELINE_PROGRAM)
    }

    /// Loads the drop-everything reference program of the same object (benchmarks only).
    pub fn drop_all(&mut self) -> anyhow::Result<&mut Xdp> {
        self.reference(maps::DROP_ALL_PROGRAM)
    }

    /// Loads the read-once reference program of the same object (benchmarks only).
    pub fn read_once(&mut self) -> anyhow::Result<&mut Xdp> {
        self.reference(maps::READ_ONCE_PROGRAM)
    }

    /// Loads the flood benchmark's spoofer (benchmarks only), set to give every frame a random
    /// source within `net` and then run `target`, an XDP program of any object.
    pub fn spoofer(
        &mut self,
        net: ipnet::Ipv4Net,
        target: &aya::programs::ProgramFd,
    ) -> anyhow::Result<&mut Xdp> {
        let mut prefix: Array<&mut MapData, [u32; 2]> = Array::try_from(
            self.ebpf
                .map_mut(maps::BENCH_SPOOF)
                .ok_or_else(|| anyhow!("map {} missing", maps::BENCH_SPOOF))?,
        )?;
        prefix.set(0, [u32::from(net.network()), u32::from(net.netmask())], 0)?;
        let mut next: aya::maps::ProgramArray<&mut MapData> = aya::maps::ProgramArray::try_from(
            self.ebpf.map_mut(maps::BENCH_NEXT).ok_or_else(|| anyhow!("map {} missing", maps::BENCH_NEXT))?,
        )?;
        next.set(0, target, 0)?;
        self.reference(maps::SPOOF_PROGRAM)
    }

    /// Loads the flood benchmark's generator (benchmarks only): a program that transmits every
    /// frame back out of its interface, after the spoofer (see [`Kernel::spoofer`]) has given
    /// it a random source within `spoof`, if given.
    pub fn transmitter(&mut self, spoof: Option<ipnet::Ipv4Net>) -> anyhow::Result<&mut Xdp> {
        let fd = self.reference(maps::TRANSMIT_PROGRAM)?.fd()?.try_clone()?;
        match spoof {
            Some(net) => self.spoofer(net, &fd),
            None => self.reference(maps::TRANSMIT_PROGRAM),
        }
    }

    /// Loads one of the object's reference programs, once.
    fn reference(&mut self, name: &str) -> anyhow::Result<&mut Xdp> {
        let prog: &mut Xdp =
            self.ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing"))?.try_into()?;
        if prog.fd().is_err() {
            prog.load()?;
        }
        Ok(prog)
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Pins the loaded program as `prog` in the pin directory (replacing an older daemon's pin),
    /// so `bpftool prog show pinned …` finds what is filtering.
    pub fn pin_program(&mut self) -> anyhow::Result<()> {
        let path = self.pin_dir.join("prog");
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
        }
        self.program().pin(&path).with_context(|| format!("pinning {}", path.display()))
    }

    /// Attaches the XDP program to `iface` through a pinned link, or adopts the pinned link an
    /// earlier daemon left.
    fn attach_xdp(&mut self, iface: &str, mode: XdpModeSetting) -> Result<Attached> {
        let pin = link_pin(&self.pin_dir, iface);
        if pin.exists() {
            match self.adopt(&pin) {
                Ok(()) => return Ok(Attached::Adopted),
                Err(e) => {
                    tracing::warn!(iface, "pinned link is stale ({e:#}); attaching afresh");
                    std::fs::remove_file(&pin).ok();
                }
            }
        }
        let attempts: &[(XdpMode, Attached)] = match mode {
            XdpModeSetting::Auto => &[(XdpMode::Driver, Attached::Native), (XdpMode::Skb, Attached::Generic)],
            XdpModeSetting::Native => &[(XdpMode::Driver, Attached::Native)],
            XdpModeSetting::Generic => &[(XdpMode::Skb, Attached::Generic)],
        };
        let prog = self.program();
        let mut last = None;
        for &(xdp_mode, how) in attempts {
            match prog.attach(iface, xdp_mode) {
                Ok(id) => {
                    let link = prog.take_link(id)?;
                    let fd: FdLink = link.try_into().map_err(|e| {
                        anyhow!(
                            "{iface}: the kernel attached without a bpf_link ({e}); Linux 5.9+ is required"
                        )
                    })?;
                    fd.pin(&pin).with_context(|| format!("pinning {}", pin.display()))?;
                    return Ok(how);
                }
                Err(e) => {
                    last = Some(
                        anyhow::Error::from(e).context(format!("attaching to {iface} in {xdp_mode:?} mode")),
                    );
                }
            }
        }
        Err(KernelError::Failed(last.unwrap_or_else(|| anyhow!("no attach mode"))))
    }

    /// The egress program.
    pub fn egress(&mut self) -> &mut SchedClassifier {
        // Found and converted in `load`; infallible here.
        self.ebpf
            .program_mut(maps::EGRESS_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Kernel::load")
    }

    /// Attaches the egress program to `iface` through a pinned TCX link, or swaps the program
    /// into the link an earlier daemon pinned.
    fn attach_egress(&mut self, iface: &str) -> anyhow::Result<()> {
        let pin = egress_pin(&self.pin_dir, iface);
        if let Ok(pinned) = PinnedLink::from_pin(&pin) {
            return self.swap_egress(pinned);
        }
        std::fs::remove_file(&pin).ok();
        let prog = self.egress();
        let id = prog.attach(iface, TcAttachType::Egress)?;
        let fd: FdLink = prog
            .take_link(id)?
            .try_into()
            .map_err(|e| anyhow!("the kernel attached without a TCX link ({e}); Linux 6.6+ is required"))?;
        fd.pin(&pin).with_context(|| format!("pinning {}", pin.display()))?;
        Ok(())
    }

    /// Swaps the egress program into a pinned TCX link.
    fn swap_egress(&mut self, pinned: PinnedLink) -> anyhow::Result<()> {
        let link = SchedClassifierLink::try_from(FdLink::from(pinned))?;
        let prog = self.egress();
        let id = prog.attach_to_link(link)?;
        // The pin file keeps the link.
        let _ = prog.take_link(id)?;
        Ok(())
    }

    /// Swaps the XDP program into the link pinned at `pin` (`bpf_link_update`).
    fn adopt(&mut self, pin: &Path) -> anyhow::Result<()> {
        let pinned = PinnedLink::from_pin(pin)?;
        let fd: FdLink = pinned.into();
        let link = XdpLink::try_from(fd)?;
        let prog = self.program();
        let id = prog.attach_to_link(link)?;
        // The pin file keeps the link; our descriptor may close when the daemon exits.
        let _ = prog.take_link(id)?;
        Ok(())
    }

    /// The counter slot of `rule` (0 for no rule, or when every slot is taken). A new slot's
    /// counters are zeroed first: they may hold the counts of a rule deleted earlier.
    fn slot(&mut self, rule: u32) -> anyhow::Result<u16> {
        if rule == 0 {
            return Ok(0);
        }
        if let Some(s) = self.slots.get(rule) {
            return Ok(s);
        }
        let Some(slot) = self.slots.take(rule) else { return Ok(0) };
        let zero =
            PerCpuValues::try_from(vec![Counter::default(); aya::util::nr_cpus().map_err(|(_, e)| e)?])?;
        self.rule_stats.set(u32::from(slot), zero, 0)?;
        Ok(slot)
    }

    fn write_net(&mut self, net: IpNet, entry: Option<&NetEntry>) -> anyhow::Result<()> {
        let res = match (net, entry) {
            (IpNet::V4(n), e) if n.prefix_len() == 32 => {
                let k = n.addr().octets();
                match e {
                    Some(e) => self.v4_exact.insert(k, e, 0),
                    None => self.v4_exact.remove(&k),
                }
            }
            (IpNet::V6(n), e) if n.prefix_len() == 128 => {
                let k = n.addr().octets();
                match e {
                    Some(e) => self.v6_exact.insert(k, e, 0),
                    None => self.v6_exact.remove(&k),
                }
            }
            (IpNet::V4(n), e) => {
                let k = Key::new(u32::from(n.prefix_len()), n.addr().octets());
                match e {
                    Some(e) => self.v4_lpm.insert(&k, e, 0),
                    None => self.v4_lpm.remove(&k),
                }
            }
            (IpNet::V6(n), e) => {
                let k = Key::new(u32::from(n.prefix_len()), n.addr().octets());
                match e {
                    Some(e) => self.v6_lpm.insert(&k, e, 0),
                    None => self.v6_lpm.remove(&k),
                }
            }
        };
        res.with_context(|| format!("writing {net} to the kernel"))
    }

    /// Writes the values `which` of the hint copy to `CG_NET4_HINTS`, or every value when an
    /// earlier write failed (the map may then lack bits the copy has, which a later change
    /// would not mark as changed).
    fn write_hints(&mut self, which: impl IntoIterator<Item = u32>) -> anyhow::Result<()> {
        let which: Vec<u32> =
            if self.hints_unsure { (0..HINT_VALUES).collect() } else { which.into_iter().collect() };
        self.hints_unsure = true;
        for i in which {
            self.v4_hints.set(i, self.hints.value(i), 0).context("writing the IPv4 rule hints")?;
        }
        self.hints_unsure = false;
        Ok(())
    }

    /// Reads `CG_NET4_DIRECT` and makes every slot hold what the exact map needs (see
    /// [`Direct::settle`]).
    fn settle_direct(&mut self) -> anyhow::Result<()> {
        let held = (0..DIRECT_SLOTS)
            .map(|i| self.v4_direct.get(&i, 0))
            .collect::<Result<Vec<_>, _>>()
            .context("reading the IPv4 single-address table")?;
        let exact: Vec<[u8; 4]> = self.nets.keys().filter_map(|n| single_v4(*n)).collect();
        self.direct = Direct::new(held, exact);
        let (nets, map) = (&self.nets, &mut self.v4_direct);
        self.direct.settle(&|a| exact_entry(nets, a), &mut slot_writer(map))
    }

    fn read_nets(&self) -> anyhow::Result<BTreeMap<IpNet, NetEntry>> {
        let mut out = BTreeMap::new();
        for r in self.v4_exact.iter() {
            let (k, v) = r?;
            out.insert(IpNet::from(IpAddr::from(k)), v);
        }
        for r in self.v6_exact.iter() {
            let (k, v) = r?;
            out.insert(IpNet::from(IpAddr::from(k)), v);
        }
        for r in self.v4_lpm.iter() {
            let (k, v) = r?;
            let (len, data) = (k.prefix_len(), k.data());
            out.insert(IpNet::new(IpAddr::from(data), len as u8)?, v);
        }
        for r in self.v6_lpm.iter() {
            let (k, v) = r?;
            let (len, data) = (k.prefix_len(), k.data());
            out.insert(IpNet::new(IpAddr::from(data), len as u8)?, v);
        }
        Ok(out)
    }

    /// What the kernel tracks about a source, if anything.
    pub fn source(&self, key: &[u8; 16]) -> anyhow::Result<Option<SourceState>> {
        match self.sources.get(key, 0) {
            Ok(s) => Ok(Some(s)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// What writes value `i` of `CG_NET4_DIRECT` for [`Direct`].
fn slot_writer(
    map: &mut Array<MapData, DirectSlot>,
) -> impl FnMut(u32, &DirectSlot) -> anyhow::Result<()> + '_ {
    move |i, v| Ok(map.set(i, v, 0)?)
}

/// The address of `net` when it is a single IPv4 address (an entry of the exact map).
fn single_v4(net: IpNet) -> Option<[u8; 4]> {
    match net {
        IpNet::V4(n) if n.prefix_len() == 32 => Some(n.addr().octets()),
        _ => None,
    }
}

/// The exact map's entry of `addr`, as the copy `nets` holds it.
fn exact_entry(nets: &BTreeMap<IpNet, NetEntry>, addr: [u8; 4]) -> Option<NetEntry> {
    nets.get(&IpNet::V4(ipnet::Ipv4Net::from(std::net::Ipv4Addr::from(addr)))).copied()
}

impl Datapath for Kernel {
    fn nets(&self) -> &BTreeMap<IpNet, NetEntry> {
        &self.nets
    }

    fn apply_changes(
        &mut self,
        changes: &[(IpNet, Option<NetEntry>)],
        progress: &mut dyn FnMut(usize),
    ) -> Result<(usize, usize)> {
        let (mut written, mut removed) = (0, 0);
        // Slots of rules that leave the kernel are freed only after the removals, so no slot is
        // counted for two rules at once.
        let mut released = Vec::new();
        // The hint bits of what is written first: the program skips a lookup whose bit is clear.
        let mut dirty = std::collections::BTreeSet::new();
        for (net, entry) in changes {
            if let (IpNet::V4(n), Some(e)) = (net, entry)
                && !e.is_empty()
            {
                self.hints.set(n, &mut dirty);
            }
        }
        self.write_hints(dirty)?;
        for (net, entry) in changes {
            let Some(mut e) = entry.filter(|e| !e.is_empty()) else { continue };
            e.allow_slot = self.slot(e.allow_rule)?;
            e.deny_slot = self.slot(e.deny_rule)?;
            let old = self.nets.get(net).copied();
            if old == Some(e) {
                continue;
            }
            let single = single_v4(*net);
            if let Some(addr) = single {
                self.direct.changing(addr, &e, &mut slot_writer(&mut self.v4_direct))?;
            }
            self.write_net(*net, Some(&e))?;
            self.nets.insert(*net, e);
            if let Some(addr) = single {
                // A slot left empty costs the exact map's lookup, never a verdict: not an error
                // that should leave the copy and the counters' slots behind the map.
                if let Err(err) = self.direct.written(addr, &e, &mut slot_writer(&mut self.v4_direct)) {
                    tracing::warn!("writing the single-address table: {err:#}");
                }
            }
            self.slots.hold(&e);
            if let Some(old) = old {
                self.slots.let_go(&old, &mut released);
            }
            written += 1;
            if written % 8192 == 0 {
                progress(written);
            }
        }
        for (net, entry) in changes {
            if entry.is_none_or(|e| e.is_empty())
                && let Some(&old) = self.nets.get(net)
            {
                // Out of its direct slot before the exact map (see `direct`).
                if let Some(addr) = single_v4(*net) {
                    self.direct.removing(addr, &mut slot_writer(&mut self.v4_direct))?;
                }
                // Out of the copy only once out of the map: the hints are computed from the copy.
                self.write_net(*net, None)?;
                self.nets.remove(net);
                self.slots.let_go(&old, &mut released);
                removed += 1;
            }
        }
        for rule in released {
            self.slots.release_unused(rule);
        }
        if removed != 0 {
            let (nets, map) = (&self.nets, &mut self.v4_direct);
            self.direct.refill(&|a| exact_entry(nets, a), &mut slot_writer(map))?;
        }
        // Bits cleared only now that no entry needs them: computed again from what is left.
        if removed != 0 {
            let now = Hints::of(&self.nets);
            let lost = now.differing(&self.hints);
            self.hints = now;
            self.write_hints(lost)?;
        }
        progress(written + removed);
        Ok((written, removed))
    }

    fn set_ports(&mut self, bits: &[u8]) -> Result<()> {
        for (port, &b) in bits.iter().enumerate() {
            if self.port_bits.get(port) != Some(&b) {
                self.ports.set(port as u32, b, 0)?;
                self.port_bits[port] = b;
            }
        }
        Ok(())
    }

    fn set_config(&mut self, cfg: KernelConfig) -> Result<()> {
        let cfg = KernelConfig { sig_bank: self.kcfg.sig_bank, ..cfg };
        self.config.set(CONFIG_KEY, cfg, 0)?;
        self.kcfg = cfg;
        Ok(())
    }

    fn set_limits(&mut self, l: Limits) -> Result<()> {
        self.limits.set(0, l, 0)?;
        Ok(())
    }

    fn set_signatures(&mut self, c: &crate::sig::Compiled) -> Result<()> {
        let bank = self.kcfg.sig_bank ^ 1;
        // Half a megabyte: built and handed over on the heap (Box borrows as DfaBank), never on a
        // stack.
        // SAFETY: DfaBank is integers only, for which all-zero bytes are a valid value.
        let mut dfa: Box<DfaBank> = unsafe { Box::new_zeroed().assume_init() };
        dfa.fill(&c.rows);
        self.sig_dfa.set(u32::from(bank), dfa, 0).context("writing CG_SIG_DFA")?;
        self.sig_head.set(u32::from(bank), c.head, 0).context("writing CG_SIG_HEAD")?;
        let cfg = KernelConfig { sig_bank: bank, ..self.kcfg };
        self.config.set(CONFIG_KEY, cfg, 0)?;
        self.kcfg = cfg;
        Ok(())
    }

    fn sig_stats(&self, slots: &mut dyn Iterator<Item = u16>) -> Result<StdHashMap<u16, Counter>> {
        let mut out = StdHashMap::new();
        for slot in slots {
            let per_cpu = self.sig_stats.get(&u32::from(slot), 0)?;
            out.insert(slot, per_cpu.iter().fold(Counter::default(), |a, c| a.add(*c)));
        }
        Ok(out)
    }

    fn clear_sig_stats(&mut self, slot: u16) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let zero = PerCpuValues::try_from(vec![Counter::default(); cpus])?;
        self.sig_stats.set(u32::from(slot), zero, 0)?;
        Ok(())
    }

    fn forget_source(&mut self, key: &[u8; 16]) -> Result<()> {
        // The slot before the state: a packet the slot drops writes its ban into the state
        // (`police::keep_ban` in the program), so a slot cleared after the state could put the
        // ban back. Cleared first, the source's packets in between are looked up in the state,
        // which only drops them as banned until it is removed.
        let cached = limits::cache_key(key);
        let slot = limits::cache_slot(cached, self.source_cache_seed()?);
        if self.source_cache.get(&slot, 0)?.key == cached {
            self.source_cache.set(slot, SourceSlot::default(), 0)?;
        }
        match self.sources.remove(key) {
            Ok(()) => {}
            // The state may be gone already (the LRU map evicted it, or a signature ban was
            // held only by the slot): a delete of no key is ENOENT.
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    fn stats(&self) -> Result<Vec<(Action, Reason, Counter)>> {
        let mut out = Vec::new();
        for action in Action::ALL {
            for &reason in Reason::ALL {
                // The program's count, and what upgrades carried over (`STATS_SLOTS`).
                let index = stats_index(action, reason);
                let (live, carried) = (self.stats.get(&index, 0)?, self.stats.get(&(STATS_LEN + index), 0)?);
                let sum = live.iter().chain(carried.iter()).fold(Counter::default(), |a, c| a.add(*c));
                if sum.packets != 0 {
                    out.push((action, reason, sum));
                }
            }
        }
        Ok(out)
    }

    fn rule_for_slot(&self, slot: u16) -> Option<u32> {
        self.slots.by_rule.iter().find(|(_, (s, _))| *s == slot).map(|(r, _)| *r)
    }

    fn rule_stats(&self) -> Result<StdHashMap<u32, Counter>> {
        let mut out = StdHashMap::new();
        for (&rule, &(slot, _)) in &self.slots.by_rule {
            let per_cpu = self.rule_stats.get(&u32::from(slot), 0)?;
            let sum = per_cpu.iter().fold(Counter::default(), |a, c| a.add(*c));
            if sum.packets != 0 {
                out.insert(rule, sum);
            }
        }
        Ok(out)
    }

    fn attach(&mut self, iface: &str, mode: XdpModeSetting) -> Result<Attached> {
        if let Some(u) = &mut self.upgrade {
            // Right before the first swap, so that little changes in the old maps after the copy.
            u.carry(&self.leftovers);
        }
        let how = self.attach_xdp(iface, mode)?;
        self.attached.insert(iface.to_owned());
        // Without it the filter works as before; only registered sources lose their own queue.
        if let Err(e) = self.attach_egress(iface) {
            tracing::warn!(
                iface,
                "the egress program is not attached ({e:#}): the PBX's answers go unread, so no \
                 source counts as registered and every request shares one hand-up queue"
            );
        }
        Ok(how)
    }

    fn settle(&mut self) -> Result<Option<Upgraded>> {
        if self.upgrade.is_none() && self.leftovers.is_empty() {
            return Ok(None);
        }
        if let Some(u) = &mut self.upgrade {
            u.carry(&self.leftovers);
        }
        // Links an earlier daemon pinned for interfaces this one does not guard keep filtering:
        // they get the new program too, or they would go on with maps that are about to be
        // unpinned and never written again. One that cannot take it (its interface is gone)
        // is let go.
        for iface in pinned_interfaces(&self.pin_dir) {
            if self.attached.contains(&iface) {
                continue;
            }
            let (link, egress) = (link_pin(&self.pin_dir, &iface), egress_pin(&self.pin_dir, &iface));
            let swapped = self.adopt(&link).and_then(|()| match PinnedLink::from_pin(&egress) {
                Ok(pinned) => self.swap_egress(pinned),
                Err(_) => Ok(()),
            });
            if let Err(e) = swapped {
                tracing::warn!(
                    iface,
                    "the link pinned for it cannot take the new program ({e:#}); removing it"
                );
                std::fs::remove_file(&egress).ok();
                std::fs::remove_file(&link).with_context(|| format!("unpinning {}", link.display()))?;
            }
        }
        let done = match self.upgrade.take() {
            Some(mut u) => {
                u.carry_counters();
                u.commit(self.loops.object())?;
                Some(Upgraded { changed: u.changed, carried: u.carried.unwrap_or_default() })
            }
            None => None,
        };
        for dir in std::mem::take(&mut self.leftovers) {
            tracing::info!(dir = %dir.display(), "removing what a crashed upgrade left");
            upgrade::remove(&dir)?;
        }
        Ok(done)
    }

    fn detach(&mut self, iface: &str) -> Result<()> {
        let egress = egress_pin(&self.pin_dir, iface);
        if egress.exists() {
            detach_link(&egress);
            std::fs::remove_file(&egress).ok();
        }
        let pin = link_pin(&self.pin_dir, iface);
        detach_link(&pin);
        Ok(std::fs::remove_file(&pin).with_context(|| format!("unpinning {}", pin.display()))?)
    }

    fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    fn take_handup(&mut self) -> Option<HandUpMaps> {
        self.handup.take()
    }

    fn answers(&self) -> Result<Answers> {
        let mut counts = [0u64; answer::counter::COUNT as usize];
        for (k, c) in counts.iter_mut().enumerate() {
            *c = self.answers.get(&(k as u32), 0)?.iter().sum();
        }
        let now = crate::clock::boot_ns();
        let registered = self
            .registered
            .iter()
            .flatten()
            .filter(|(_, at)| now < at.saturating_add(answer::REGISTERED_NS))
            .count();
        Ok(Answers { counts, registered })
    }

    fn event_budget(&self) -> Result<EventBudget> {
        Ok(self.event_budget.get(&0, 0)?.iter().fold(EventBudget::default(), |a, b| EventBudget {
            drops: a.drops + b.drops,
            tat: a.tat.max(b.tat),
            ban_tat: a.ban_tat.max(b.ban_tat),
            written: a.written + b.written,
            suppressed: a.suppressed + b.suppressed,
            to_sample: 0,
        }))
    }
}

/// Which rule counts in which slot of `CG_RULE_STATS`. A rule's id can be in several entries (an
/// allow is carried into the entries of the listed denies inside it, see
/// [`crate::net::compile_nets`]): a slot is freed only when no entry carries its rule any more.
#[derive(Debug, Default)]
struct Slots {
    /// Each rule's slot and how many entries carry the rule.
    by_rule: StdHashMap<u32, (u16, u32)>,
    /// Unused slots; popped from the end, so low slots go first.
    free: Vec<u16>,
}

impl Slots {
    /// The assignment the kernel entries already carry (after a restart).
    fn from_entries<'a>(entries: impl Iterator<Item = &'a NetEntry>) -> Self {
        let mut by_rule: StdHashMap<u32, (u16, u32)> = StdHashMap::new();
        for e in entries {
            for (rule, slot) in [(e.allow_rule, e.allow_slot), (e.deny_rule, e.deny_slot)] {
                if rule != 0 && slot != 0 {
                    by_rule.entry(rule).or_insert((slot, 0)).1 += 1;
                }
            }
        }
        let used: std::collections::HashSet<u16> = by_rule.values().map(|&(s, _)| s).collect();
        let max = u16::try_from(maps::RULE_STATS_MAX - 1).unwrap_or(u16::MAX);
        let free = (1..=max).rev().filter(|s| !used.contains(s)).collect();
        Self { by_rule, free }
    }

    fn get(&self, rule: u32) -> Option<u16> {
        self.by_rule.get(&rule).map(|&(s, _)| s)
    }

    fn take(&mut self, rule: u32) -> Option<u16> {
        let slot = self.free.pop()?;
        self.by_rule.insert(rule, (slot, 0));
        Some(slot)
    }

    /// An entry carrying `e`'s rules was written.
    fn hold(&mut self, e: &NetEntry) {
        for rule in [e.allow_rule, e.deny_rule] {
            if let Some(r) = self.by_rule.get_mut(&rule) {
                r.1 += 1;
            }
        }
    }

    /// An entry carrying `e`'s rules was replaced or removed; the rules no entry carries any
    /// more go to `unused`.
    fn let_go(&mut self, e: &NetEntry, unused: &mut Vec<u32>) {
        for rule in [e.allow_rule, e.deny_rule] {
            if let Some(r) = self.by_rule.get_mut(&rule) {
                r.1 = r.1.saturating_sub(1);
                if r.1 == 0 {
                    unused.push(rule);
                }
            }
        }
    }

    /// Frees the slot of `rule` when no entry carries it (one written since may have again).
    fn release_unused(&mut self, rule: u32) {
        if self.by_rule.get(&rule).is_some_and(|&(_, refs)| refs == 0)
            && let Some((slot, _)) = self.by_rule.remove(&rule)
        {
            self.free.push(slot);
        }
    }
}

fn raise_memlock() {
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK (https://lwn.net/Articles/837122/);
    // later ones use memory cgroups and ignore it.
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads the struct we own.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const rlim) };
}
