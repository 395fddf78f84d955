//! A datapath in memory, for tests that run without root or a loaded program: it keeps the
//! network entries and records every other write. A test keeps a [`FakeKernel`] handle to make
//! maps small or refuse writes, and to read what the service wrote, while the service owns the
//! [`FakeDatapath`].

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use callguard_common::{Action, Counter, KernelConfig, NetEntry, Reason, limits::Limits};
use ipnet::IpNet;

use super::datapath::{Datapath, KernelError, NetMap, Result};
use crate::{config::XdpModeSetting, kernel::Attached, sig::Compiled};

/// What the fake kernel was told, and how it is to behave.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Capacities that differ from the kernel's.
    pub capacities: HashMap<NetMap, u32>,
    /// Writes to refuse from now on (each refusal uses one up).
    pub fail_writes: u32,
    /// The policy record last written.
    pub config: Option<KernelConfig>,
    /// The rate-limit record last written.
    pub limits: Option<Limits>,
    /// The guarded-port bitmap last written.
    pub ports: Vec<u8>,
    /// How many times signature automata were installed.
    pub signature_loads: usize,
    /// Sources forgotten (keys as the kernel's source map has them).
    pub forgotten: Vec<[u8; 16]>,
    /// Attached interfaces.
    pub interfaces: BTreeSet<String>,
}

/// A test's handle on a [`FakeDatapath`] it gave away.
#[derive(Clone, Debug, Default)]
pub struct FakeKernel(Arc<Mutex<FakeState>>);

impl FakeKernel {
    /// A fake kernel and the datapath to hand to the service.
    pub fn new() -> (Self, FakeDatapath) {
        let me = Self::default();
        (me.clone(), FakeDatapath { nets: BTreeMap::new(), state: me })
    }

    /// The state, to read or change.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The in-memory datapath the service owns.
#[derive(Debug)]
pub struct FakeDatapath {
    nets: BTreeMap<IpNet, NetEntry>,
    state: FakeKernel,
}

impl FakeDatapath {
    fn refuse(&self) -> Result<()> {
        let mut st = self.state.state();
        if st.fail_writes > 0 {
            st.fail_writes -= 1;
            return Err(KernelError::Failed(anyhow::anyhow!("map update refused (a test's fake kernel)")));
        }
        Ok(())
    }
}

impl Datapath for FakeDatapath {
    fn nets(&self) -> &BTreeMap<IpNet, NetEntry> {
        &self.nets
    }

    fn capacity(&self, map: NetMap) -> u32 {
        self.state.state().capacities.get(&map).copied().unwrap_or_else(|| map.capacity())
    }

    fn apply_changes(
        &mut self,
        changes: &[(IpNet, Option<NetEntry>)],
        progress: &mut dyn FnMut(usize),
    ) -> Result<(usize, usize)> {
        let (mut written, mut removed) = (0, 0);
        for (net, entry) in changes {
            if let Some(e) = entry.filter(|e| !e.is_empty())
                && self.nets.get(net) != Some(&e)
            {
                self.refuse()?;
                let map = NetMap::of(net);
                let held = self.nets.keys().filter(|n| NetMap::of(n) == map).count();
                if !self.nets.contains_key(net) && held >= self.capacity(map) as usize {
                    return Err(KernelError::Full { map, capacity: self.capacity(map), needed: held + 1 });
                }
                self.nets.insert(*net, e);
                written += 1;
            }
        }
        for (net, entry) in changes {
            if entry.is_none_or(|e| e.is_empty()) && self.nets.contains_key(net) {
                self.refuse()?;
                self.nets.remove(net);
                removed += 1;
            }
        }
        progress(written + removed);
        Ok((written, removed))
    }

    fn set_ports(&mut self, bits: &[u8]) -> Result<()> {
        self.refuse()?;
        self.state.state().ports = bits.to_vec();
        Ok(())
    }

    fn set_config(&mut self, cfg: KernelConfig) -> Result<()> {
        self.refuse()?;
        self.state.state().config = Some(cfg);
        Ok(())
    }

    fn set_limits(&mut self, l: Limits) -> Result<()> {
        self.refuse()?;
        self.state.state().limits = Some(l);
        Ok(())
    }

    fn set_signatures(&mut self, _c: &Compiled) -> Result<()> {
        self.refuse()?;
        self.state.state().signature_loads += 1;
        Ok(())
    }

    fn sig_stats(&self, slots: &mut dyn Iterator<Item = u16>) -> Result<HashMap<u16, Counter>> {
        Ok(slots.map(|s| (s, Counter::default())).collect())
    }

    fn clear_sig_stats(&mut self, _slot: u16) -> Result<()> {
        Ok(())
    }

    fn forget_source(&mut self, key: &[u8; 16]) -> Result<()> {
        self.state.state().forgotten.push(*key);
        Ok(())
    }

    fn stats(&self) -> Result<Vec<(Action, Reason, Counter)>> {
        Ok(Vec::new())
    }

    fn rule_for_slot(&self, _slot: u16) -> Option<u32> {
        None
    }

    fn rule_stats(&self) -> Result<HashMap<u32, Counter>> {
        Ok(HashMap::new())
    }

    fn attach(&mut self, iface: &str, _mode: XdpModeSetting) -> Result<Attached> {
        self.state.state().interfaces.insert(iface.to_owned());
        Ok(Attached::Generic)
    }

    fn detach(&mut self, iface: &str) -> Result<()> {
        self.state.state().interfaces.remove(iface);
        Ok(())
    }
}
