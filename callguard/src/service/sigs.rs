//! Scanner signatures through the service: add (refused with nothing stored when the kernel
//! cannot hold the set), delete, switch mode, list with counters; compiled and installed whole.

use chrono::Utc;

use super::{COMMENT_MAX, Result, Service, ServiceError};
use crate::{
    api::control as api,
    events,
    sig::{self, Signature},
};

impl Service {
    /// Compiles the signatures and installs them (the bank switch makes it atomic).
    pub(super) fn push_sigs(&mut self) -> Result<()> {
        let all: Vec<Signature> = self.sigs.values().cloned().collect();
        let compiled = sig::compile(&all).map_err(|e| ServiceError::invalid("text", e.to_string()))?;
        Ok(self.kernel.set_signatures(&compiled)?)
    }

    /// Adds one signature: store, then kernel. Its counter starts from zero.
    pub fn add_sig(&mut self, new: &sig::NewSignature) -> Result<api::SigRow> {
        new.validate().map_err(|m| ServiceError::invalid("text", m))?;
        crate::numbers::check_len(&new.comment, COMMENT_MAX)
            .map_err(|m| ServiceError::invalid("comment", m))?;
        // Compile with the newcomer before storing it, so that a set the kernel cannot hold
        // is refused with nothing stored.
        let mut trial: Vec<Signature> = self.sigs.values().cloned().collect();
        trial.push(Signature {
            id: u32::MAX,
            sig: new.clone(),
            slot: 0,
            origin: String::new(),
            created_at: Utc::now(),
        });
        sig::compile(&trial).map_err(|e| ServiceError::invalid("text", e.to_string()))?;
        let stored = self.store.add_sigs(std::slice::from_ref(new), "operator")?.remove(0);
        self.kernel.clear_sig_stats(stored.slot)?;
        self.sigs.insert(stored.id, stored.clone());
        self.push_sigs()?;
        Ok(api::SigRow { sig: stored, packets: 0, bytes: 0 })
    }

    /// Deletes signatures by id (404 when none of them exists).
    pub fn del_sigs(&mut self, req: &api::DelSigs) -> Result<api::Removed> {
        let ids: Vec<u32> = req.ids.iter().copied().filter(|id| self.sigs.contains_key(id)).collect();
        if ids.is_empty() {
            return Err(ServiceError::not_found("ids", "no such signature"));
        }
        let count = self.store.delete_sigs(&ids)?;
        for id in &ids {
            self.sigs.remove(id);
        }
        self.push_sigs()?;
        Ok(api::Removed { count })
    }

    /// Switches a signature between enforce and dry-run.
    pub fn set_sig_mode(&mut self, req: &api::SetSigMode) -> Result<api::SigRow> {
        let Some(stored) = self.store.set_sig_mode(req.id, req.mode)? else {
            return Err(ServiceError::not_found("id", "no such signature"));
        };
        self.sigs.insert(stored.id, stored.clone());
        self.push_sigs()?;
        let c = self.kernel.sig_stats(&mut std::iter::once(stored.slot))?;
        let c = c.get(&stored.slot).copied().unwrap_or_default();
        Ok(api::SigRow { sig: stored, packets: c.packets, bytes: c.bytes })
    }

    /// Fills in the rule and signature ids of a kernel event.
    pub fn name_slots(&self, e: &callguard_common::events::Event, rec: &mut events::EventRecord) {
        if e.rule_slot != 0 {
            rec.rule = self.kernel.rule_for_slot(e.rule_slot);
        }
        if e.sig_slot != 0 {
            rec.signature = self.sigs.values().find(|s| s.slot == e.sig_slot).map(|s| s.id);
        }
    }

    /// Every signature with its counters.
    pub fn sig_rows(&self) -> anyhow::Result<Vec<api::SigRow>> {
        let counts = self.kernel.sig_stats(&mut self.sigs.values().map(|s| s.slot))?;
        Ok(self
            .sigs
            .values()
            .map(|s| {
                let c = counts.get(&s.slot).copied().unwrap_or_default();
                api::SigRow { sig: s.clone(), packets: c.packets, bytes: c.bytes }
            })
            .collect())
    }
}
