//! The kernel boundary of the rule service: what the service asks of the XDP program and its
//! maps, as a trait, so that the service and the API run in tests without root or a loaded
//! program ([`fake::FakeDatapath`]), the way aya's `sys/fake.rs` stands in for its syscalls.

use std::collections::{BTreeMap, HashMap};

use aya::maps::{Array, MapData, RingBuf};
use callguard_common::{
    Action, Counter, KernelConfig, NetEntry, Reason, answer, events::EventBudget, limits::Limits, maps,
};
use ipnet::IpNet;

use super::Attached;
use crate::{config::XdpModeSetting, sig::Compiled};

/// The four network maps, by what their keys are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NetMap {
    /// `CG_NET_V4_EXACT`: single IPv4 addresses.
    V4Exact,
    /// `CG_NET_V6_EXACT`: single IPv6 addresses.
    V6Exact,
    /// `CG_NET_V4_LPM`: IPv4 prefixes.
    V4Lpm,
    /// `CG_NET_V6_LPM`: IPv6 prefixes.
    V6Lpm,
}

impl NetMap {
    /// The map a network's entry lives in.
    pub const fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(n) if n.prefix_len() == 32 => Self::V4Exact,
            IpNet::V6(n) if n.prefix_len() == 128 => Self::V6Exact,
            IpNet::V4(_) => Self::V4Lpm,
            IpNet::V6(_) => Self::V6Lpm,
        }
    }

    /// The map's name in the kernel.
    pub const fn name(self) -> &'static str {
        match self {
            Self::V4Exact => maps::NET_V4_EXACT,
            Self::V6Exact => maps::NET_V6_EXACT,
            Self::V4Lpm => maps::NET_V4_LPM,
            Self::V6Lpm => maps::NET_V6_LPM,
        }
    }

    /// How many entries the kernel map holds at most.
    pub const fn capacity(self) -> u32 {
        match self {
            Self::V4Exact | Self::V6Exact => maps::NET_EXACT_MAX,
            Self::V4Lpm | Self::V6Lpm => maps::NET_LPM_MAX,
        }
    }
}

/// Why the kernel refused a change.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A network map would hold more entries than it can.
    #[error("the kernel map {} holds at most {capacity} entries; this change needs {needed}", map.name())]
    Full {
        /// The map.
        map: NetMap,
        /// Its capacity.
        capacity: u32,
        /// The entries it would hold after the change.
        needed: usize,
    },
    /// A map operation or an attachment failed.
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

impl From<aya::maps::MapError> for KernelError {
    fn from(e: aya::maps::MapError) -> Self {
        Self::Failed(e.into())
    }
}

impl From<aya::programs::ProgramError> for KernelError {
    fn from(e: aya::programs::ProgramError) -> Self {
        Self::Failed(e.into())
    }
}

impl From<std::io::Error> for KernelError {
    fn from(e: std::io::Error) -> Self {
        Self::Failed(e.into())
    }
}

/// What the slow path reads and writes in the kernel: the two hand-up queues and the heartbeat.
#[expect(missing_debug_implementations, reason = "aya's RingBuf and Array have no Debug")]
pub struct HandUpMaps {
    /// Requests from any source (`CG_HANDUP`).
    pub common: RingBuf<MapData>,
    /// Requests from sources the PBX accepted a registration from (`CG_HANDUP_REG`).
    pub registered: RingBuf<MapData>,
    /// The daemon's heartbeat (`CG_HEARTBEAT`).
    pub heartbeat: Array<MapData, u64>,
}

/// What the egress program saw of the PBX's answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answers {
    /// Counters by [`answer::counter`] index, summed over CPUs.
    pub counts: [u64; answer::counter::COUNT as usize],
    /// Sources registered now (a `2xx` to their REGISTER within [`answer::REGISTERED_NS`]).
    pub registered: usize,
}

/// What a kernel operation returns.
pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// What the rule service needs of the kernel: network entries, the policy records, signature
/// automata, counters, and attachment. [`super::Kernel`] is the real one.
pub trait Datapath: Send + std::fmt::Debug {
    /// What the network maps hold.
    fn nets(&self) -> &BTreeMap<IpNet, NetEntry>;

    /// How many entries `map` holds at most.
    fn capacity(&self, map: NetMap) -> u32 {
        map.capacity()
    }

    /// Writes (`Some`) or removes (`None`) entries, all writes before any removal (each packet
    /// sees the old verdict or the new one, never a third). `progress` is told how many map
    /// operations are done. Returns (written, removed).
    fn apply_changes(
        &mut self,
        changes: &[(IpNet, Option<NetEntry>)],
        progress: &mut dyn FnMut(usize),
    ) -> Result<(usize, usize)>;

    /// Makes the network maps hold exactly `desired` (startup, reload). Returns (written, removed).
    fn apply_nets(&mut self, desired: &BTreeMap<IpNet, NetEntry>) -> Result<(usize, usize)> {
        let mut changes: Vec<(IpNet, Option<NetEntry>)> = desired
            .iter()
            .filter(|(n, e)| self.nets().get(n) != Some(e))
            .map(|(n, e)| (*n, Some(*e)))
            .collect();
        changes.extend(self.nets().keys().filter(|n| !desired.contains_key(n)).map(|n| (*n, None)));
        self.check_room(&changes)?;
        self.apply_changes(&changes, &mut |_| {})
    }

    /// [`KernelError::Full`] when `changes` would leave a map holding more than it can; the
    /// service asks before it stores anything.
    fn check_room(&self, changes: &[(IpNet, Option<NetEntry>)]) -> Result<()> {
        let mut delta: BTreeMap<NetMap, i64> = BTreeMap::new();
        for (net, entry) in changes {
            let present = self.nets().contains_key(net);
            let wanted = entry.is_some_and(|e| !e.is_empty());
            let d = i64::from(wanted) - i64::from(present);
            *delta.entry(NetMap::of(net)).or_default() += d;
        }
        for (map, d) in delta {
            let held = self.nets().keys().filter(|n| NetMap::of(n) == map).count();
            let needed = usize::try_from(i64::try_from(held).unwrap_or(i64::MAX) + d).unwrap_or(0);
            let capacity = self.capacity(map);
            if d > 0 && needed > capacity as usize {
                return Err(KernelError::Full { map, capacity, needed });
            }
        }
        Ok(())
    }

    /// Makes `CG_PORTS` equal `bits` (65,536 bytes).
    fn set_ports(&mut self, bits: &[u8]) -> Result<()>;
    /// Replaces the policy record (keeping the signature bank in use).
    fn set_config(&mut self, cfg: KernelConfig) -> Result<()>;
    /// Replaces the rate-limit record.
    fn set_limits(&mut self, l: Limits) -> Result<()>;
    /// Installs compiled signature automata in the bank not in use, then switches to it.
    fn set_signatures(&mut self, c: &Compiled) -> Result<()>;
    /// Counters of the given signature slots, summed over CPUs.
    fn sig_stats(&self, slots: &mut dyn Iterator<Item = u16>) -> Result<HashMap<u16, Counter>>;
    /// Zeroes a signature slot's counters (before a new signature takes the slot).
    fn clear_sig_stats(&mut self, slot: u16) -> Result<()>;
    /// Forgets what the kernel tracks about a source (its buckets and its own ban of it).
    fn forget_source(&mut self, key: &[u8; 16]) -> Result<()>;
    /// Counters by (action, reason), summed over CPUs, zero rows left out.
    fn stats(&self) -> Result<Vec<(Action, Reason, Counter)>>;
    /// The rule counted in a slot of `CG_RULE_STATS`.
    fn rule_for_slot(&self, slot: u16) -> Option<u32>;
    /// Counters by rule id, for rules that have a slot and counted something.
    fn rule_stats(&self) -> Result<HashMap<u32, Counter>>;
    /// Attaches the program to an interface.
    fn attach(&mut self, iface: &str, mode: XdpModeSetting) -> Result<Attached>;
    /// Detaches the program from an interface.
    fn detach(&mut self, iface: &str) -> Result<()>;
    /// Ends the start, once every wanted interface is attached: when the load built new maps
    /// beside old ones of another layout, swaps the program into every other pinned link and
    /// puts the new maps' pins in place of the old (see [`super::upgrade`]). `None`: nothing to
    /// do.
    fn settle(&mut self) -> Result<Option<super::upgrade::Upgraded>> {
        Ok(None)
    }
    /// The event ring buffer (once: its reader is single-consumer); `None` without a kernel.
    fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        None
    }
    /// The hand-up ring buffers and the heartbeat map (once); `None` without a kernel.
    fn take_handup(&mut self) -> Option<HandUpMaps> {
        None
    }
    /// What the egress program saw of the PBX's answers; nothing without a kernel.
    fn answers(&self) -> Result<Answers> {
        Ok(Answers::default())
    }

    /// The event budget's counts, summed over CPUs; nothing without a kernel.
    fn event_budget(&self) -> Result<EventBudget> {
        Ok(EventBudget::default())
    }
}
