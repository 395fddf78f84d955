//! Network rules through the service: add, delete, list, check; the bans the kernel imposes,
//! stored as rules with expiry (and escalated to the /24 or /48); and how a change reaches the
//! kernel, room checked first and undone when the kernel refuses.

use std::{collections::BTreeSet, net::IpAddr, time::Instant};

use callguard_common::{NetEntry, events::event};
use chrono::Utc;
use ipnet::IpNet;

use super::{COMMENT_MAX, Result, Service, ServiceError};
use crate::{
    api::control as api,
    clock::Clock,
    kernel::datapath::KernelError,
    net::{self, NetAction, NetRule, NewNetRule, Origin, Profile, parse_addr, parse_net},
};

/// How the comment of a signature ban begins: a ban one packet can cause, which escalation
/// does not count.
const ONE_PACKET_BAN: &str = "auto: matched";

impl Service {
    /// Stores the bans the kernel imposed (events of kind `BAN_*`: source, kind, signature slot)
    /// as deny rules with expiry, origin `auto`, in one store transaction and one kernel update
    /// for the whole batch, however many sources a flood brings; then bans a /24 or /48 when
    /// enough of its sources are banned (`rate.escalate_after`, off by default). At most
    /// `rate.max_auto_bans` automatic bans are kept: the oldest make room, never a manual rule.
    /// Returns, per ban, what was done, for the event's detail.
    pub fn auto_bans(&mut self, bans: &[(IpAddr, u8, u16)]) -> Vec<String> {
        let now = Utc::now();
        // A signature ban needs one packet, which anyone can forge: it is short.
        let (sig_secs, rate_secs, auth_secs, fraud_secs) = (
            self.cfg.sip.signature_ban_secs,
            self.cfg.rate.ban_secs,
            self.cfg.auth.ban_secs,
            self.cfg.calls.fraud.ban_secs,
        );
        let secs_for = move |kind: u8| {
            let s = match kind {
                event::BAN_SIGNATURE => sig_secs,
                event::BAN_AUTH => auth_secs,
                event::BAN_FRAUD => fraud_secs,
                _ => rate_secs,
            };
            i64::try_from(s).unwrap_or(i64::MAX)
        };
        let mut details = vec![String::new(); bans.len()];
        // (index in `bans`, the rule to store)
        let mut new: Vec<(usize, NewNetRule)> = Vec::new();
        let mut batch: BTreeSet<IpNet> = BTreeSet::new();
        // Built once for the batch: a rule lookup per ban that does not grow with the rules.
        let index = net::Index::new(self.rules.values(), now);
        for (i, &(source, kind, sig_slot)) in bans.iter().enumerate() {
            let single = net::source_net(source);
            if let Some(r) = index.decide(source) {
                details[i] = match r.action {
                    NetAction::Allow => format!("not stored: {} is authorized (rule {})", r.cidr, r.id),
                    NetAction::Deny => format!("already denied by {} (rule {})", r.cidr, r.id),
                };
                continue;
            }
            if !batch.insert(single) {
                details[i] = format!("{single}: banned by an earlier event of this batch");
                continue;
            }
            let comment = self.ban_reason(kind, sig_slot);
            new.push((
                i,
                NewNetRule {
                    cidr: single,
                    action: NetAction::Deny,
                    scope: net::Scope::Sip,
                    profile: Profile::Trusted,
                    expires_at: Some(now + chrono::Duration::seconds(secs_for(kind))),
                    comment,
                    origin: Origin::Auto,
                    list: None,
                },
            ));
        }
        if new.is_empty() {
            return details;
        }
        // The cap: a flood of new (spoofed) sources must fill neither the store nor the kernel's
        // maps. The newest bans win; the oldest automatic ones make room.
        let cap = self.cfg.rate.max_auto_bans;
        if new.len() > cap {
            for (i, r) in new.drain(..new.len() - cap) {
                details[i] = format!("not stored: {cap} newer bans in this batch fill rate.max_auto_bans");
                batch.remove(&r.cidr);
            }
        }
        let mut autos: Vec<&NetRule> =
            self.rules.values().filter(|r| r.origin == Origin::Auto && r.action == NetAction::Deny).collect();
        let evict = (autos.len() + new.len()).saturating_sub(cap);
        autos.sort_by_key(|r| (r.created_at, r.id));
        let evicted: Vec<NetRule> = autos.into_iter().take(evict).cloned().collect();
        let mut nets = batch;
        nets.extend(evicted.iter().map(|r| r.cidr));
        if !evicted.is_empty() {
            let ids: Vec<u32> = evicted.iter().map(|r| r.id).collect();
            if let Err(e) = self.store.delete_nets(&ids) {
                tracing::error!("evicting the oldest automatic bans: {e}; the new bans are not stored");
                return details;
            }
            for id in &ids {
                self.rules.remove(id);
            }
            self.evicted_bans += evicted.len() as u64;
            self.bans.lifted("evicted", evicted.len());
            tracing::warn!(
                evicted = evicted.len(),
                max = cap,
                "automatic bans at rate.max_auto_bans: the oldest made room"
            );
        }
        let rows: Vec<NewNetRule> = new.iter().map(|(_, r)| r.clone()).collect();
        let stored = match self.store.upsert_nets(&rows) {
            Ok(s) => s,
            Err(e) => {
                for (i, _) in &new {
                    details[*i] = format!("storing the ban failed: {e}");
                }
                return details;
            }
        };
        let added: Vec<u32> = stored.iter().map(|r| r.id).collect();
        for r in &stored {
            self.rules.insert(r.id, r.clone());
        }
        if let Err(e) = self.sync_nets(&nets) {
            let err = self.undo_nets(&added, &evicted, &nets, e);
            for (i, _) in &new {
                details[*i] = format!("storing the ban failed: {err}");
            }
            return details;
        }
        let mut wides: BTreeSet<IpNet> = BTreeSet::new();
        for ((i, _), r) in new.iter().zip(&stored) {
            self.bans.made(event::ban_cause(bans[*i].1).unwrap_or("rate"), 1);
            let secs = secs_for(bans[*i].1);
            details[*i] = format!("deny {} for {secs} s (rule {})", r.cidr, r.id);
            if !evicted.is_empty() {
                details[*i] +=
                    &format!("; {} oldest automatic bans evicted (rate.max_auto_bans)", evicted.len());
            }
            let wide = match r.cidr.addr() {
                IpAddr::V4(a) => IpNet::new(IpAddr::V4(a), 24).ok().map(|n| n.trunc()),
                IpAddr::V6(a) => IpNet::new(IpAddr::V6(a), 48).ok().map(|n| n.trunc()),
            };
            if let Some(w) = wide
                && wides.insert(w)
                && let Some(more) = self.escalate(w, now)
            {
                details[*i] += &more;
            }
        }
        details
    }

    /// What the kernel does for a user it guarded (`auth.user_failures`), for the event's
    /// detail and the log.
    pub fn guard_detail(&self, user: &str) -> String {
        let who = if user.is_empty() {
            "users whose To cannot be read".to_string()
        } else {
            format!("user {user}")
        };
        format!(
            "{} failed authentications within {} s from any sources: for {} s, REGISTERs for {who} \
             are dropped from sources outside the authorized networks that the PBX has not registered",
            self.cfg.auth.user_failures, self.cfg.auth.window_secs, self.cfg.auth.user_guard_secs
        )
    }

    /// Why the kernel banned: the rule's comment.
    fn ban_reason(&self, kind: u8, sig_slot: u16) -> String {
        match kind {
            event::BAN_ENUM => format!(
                "auto: more than {} distinct To values in {} s",
                self.cfg.enumeration.users, self.cfg.enumeration.window_secs
            ),
            event::BAN_AUTH => format!(
                "auto: {} failed authentications within {} s (the PBX's answers)",
                self.cfg.auth.failures, self.cfg.auth.window_secs
            ),
            event::BAN_FRAUD => "auto: a call past a fraud threshold (calls.fraud)".into(),
            event::BAN_SIGNATURE => match self.sigs.values().find(|s| s.slot == sig_slot) {
                Some(s) => format!(
                    "{ONE_PACKET_BAN} signature {} ({} {} `{}`)",
                    s.id,
                    s.sig.field.name(),
                    s.sig.matches.name(),
                    s.sig.text
                ),
                None => format!("{ONE_PACKET_BAN} a signature since deleted"),
            },
            _ => format!("auto: kept exceeding rate limits for {} s", self.cfg.rate.ban_after_secs),
        }
    }

    /// Bans the prefix `wide` when `rate.escalate_after` of its sources are banned for what many
    /// packets did (rate, enumeration; not a signature, which one forged packet matches) and
    /// proven to receive at their address (review finding M2), and nothing covers it yet; what
    /// was done, for the detail.
    fn escalate(&mut self, wide: IpNet, now: chrono::DateTime<Utc>) -> Option<String> {
        let n = self.cfg.rate.escalate_after;
        if n == 0 {
            return None;
        }
        let banned = self
            .rules
            .values()
            .filter(|r| r.origin == Origin::Auto && r.action == NetAction::Deny && r.is_live(now))
            .filter(|r| r.cidr.prefix_len() > wide.prefix_len() && wide.contains(&r.cidr))
            .filter(|r| !r.comment.starts_with(ONE_PACKET_BAN) && self.proven.contains(&r.cidr))
            .count();
        let covered = self.rules.values().any(|r| r.cidr == wide && r.is_live(now));
        if banned < n as usize || covered {
            return None;
        }
        let secs = i64::try_from(self.cfg.rate.escalate_ban_secs).unwrap_or(i64::MAX);
        let why = format!("auto: {banned} banned sources proven real in this /{}", wide.prefix_len());
        Some(match self.add_auto(wide, secs, why) {
            Ok(id) => {
                self.bans.made("escalation", 1);
                format!("; escalated: deny {wide} for {secs} s (rule {id})")
            }
            Err(e) => format!("; escalating to {wide} failed: {e:#}"),
        })
    }

    pub(super) fn add_auto(&mut self, cidr: IpNet, secs: i64, comment: String) -> anyhow::Result<u32> {
        let rule = NewNetRule {
            cidr,
            action: NetAction::Deny,
            scope: net::Scope::Sip,
            profile: Profile::Trusted,
            expires_at: Some(Utc::now() + chrono::Duration::seconds(secs)),
            comment,
            origin: Origin::Auto,
            list: None,
        };
        let stored = self.store.upsert_nets(std::slice::from_ref(&rule))?.remove(0);
        let id = stored.id;
        self.rules.insert(id, stored);
        self.sync_nets(&BTreeSet::from([cidr]))?;
        Ok(id)
    }

    pub(super) fn sync_all(&mut self) -> Result<(usize, usize)> {
        let compiled = net::compile(self.rules.values(), &Clock::now());
        Ok(self.kernel.apply_nets(&compiled)?)
    }

    /// The kernel changes that bring the entries of `nets` in step with `rules`, and those of
    /// the listed denies nested in them, which carry the allow they yield to
    /// ([`net::listed_deny`]).
    pub(super) fn changes_for<'a>(
        rules: impl IntoIterator<Item = &'a NetRule> + Clone,
        nets: &BTreeSet<IpNet>,
    ) -> Vec<(IpNet, Option<NetEntry>)> {
        // (Listed denies inside a network that changed may yield to something else now.)
        let mut all = nets.clone();
        all.extend(net::nested_listed(rules.clone(), nets));
        let compiled = net::compile_nets(rules, Some(&all), &Clock::now());
        all.iter().map(|n| (*n, compiled.get(n).copied())).collect()
    }

    /// Recompiles the kernel entries of the given networks only.
    pub(super) fn sync_nets(&mut self, nets: &BTreeSet<IpNet>) -> Result<(), KernelError> {
        let changes = Self::changes_for(self.rules.values(), nets);
        self.kernel.check_room(&changes)?;
        self.kernel.apply_changes(&changes, &mut |_| {})?;
        Ok(())
    }

    /// Puts the store and the cache back as they were before a change whose kernel half failed:
    /// removes the rules the change created (`added`), puts `previous` back with their ids, and
    /// rewrites the kernel entries of `nets` from the restored rules, so what the kernel took of
    /// the change is undone too. Returns the kernel's error, for the caller.
    pub(super) fn undo_nets(
        &mut self,
        added: &[u32],
        previous: &[NetRule],
        nets: &BTreeSet<IpNet>,
        cause: KernelError,
    ) -> ServiceError {
        if let Err(e) = self.store.revert_nets(added, previous) {
            tracing::error!("undoing a change the kernel refused: {e}; the store keeps it");
            return ServiceError::Kernel(cause);
        }
        for id in added {
            self.rules.remove(id);
        }
        for r in previous {
            self.rules.insert(r.id, r.clone());
        }
        let changes = Self::changes_for(self.rules.values(), nets);
        if let Err(e) = self.kernel.apply_changes(&changes, &mut |_| {}) {
            tracing::error!("restoring kernel entries after a refused change: {e}");
        }
        ServiceError::Kernel(cause)
    }

    /// Adds or updates rules: store (one transaction), then kernel.
    pub fn add_nets(&mut self, req: &api::AddNets) -> Result<api::Added> {
        let t0 = Instant::now();
        let origin = if req.import { Origin::Import } else { Origin::Manual };
        let mut new = Vec::with_capacity(req.rules.len());
        for (i, spec) in req.rules.iter().enumerate() {
            let field = |name: &str| {
                if req.rules.len() == 1 { name.to_owned() } else { format!("rules[{i}].{name}") }
            };
            let cidr = parse_net(&spec.cidr).map_err(|m| ServiceError::invalid(&field("cidr"), m))?;
            crate::numbers::check_len(&spec.comment, COMMENT_MAX)
                .map_err(|m| ServiceError::invalid(&field("comment"), m))?;
            if spec.expires_at.is_some_and(|t| t <= Utc::now()) {
                return Err(ServiceError::invalid(&field("expires_at"), "already in the past"));
            }
            if spec.action == NetAction::Deny && spec.profile.is_some_and(|p| p != Profile::Trusted) {
                return Err(ServiceError::invalid(
                    &field("profile"),
                    "a call profile belongs to allow rules: a deny rule's sources make no calls",
                ));
            }
            new.push(NewNetRule {
                cidr,
                action: spec.action,
                scope: spec.scope,
                // Left out, an allow rule's profile stays what it is: re-adding a rule to change
                // its comment or expiry must not switch its calls' checks off.
                profile: spec.profile.unwrap_or_else(|| {
                    self.rules
                        .values()
                        .find(|r| r.cidr == cidr && r.action == NetAction::Allow)
                        .map_or(Profile::Trusted, |r| r.profile)
                }),
                expires_at: spec.expires_at,
                comment: spec.comment.clone(),
                origin,
                list: None,
            });
        }
        // Refuse what the kernel cannot hold before anything is stored.
        let nets: BTreeSet<IpNet> = new.iter().map(|r| r.cidr).collect();
        let mut trial: Vec<NetRule> = self
            .rules
            .values()
            .filter(|r| {
                nets.contains(&r.cidr) && !new.iter().any(|n| n.cidr == r.cidr && n.action == r.action)
            })
            .cloned()
            .collect();
        trial.extend(new.iter().map(|n| n.to_rule(u32::MAX)));
        self.kernel.check_room(&Self::changes_for(&trial, &nets))?;
        let previous: Vec<NetRule> = self
            .rules
            .values()
            .filter(|r| new.iter().any(|n| n.cidr == r.cidr && n.action == r.action))
            .cloned()
            .collect();
        let stored = self.store.upsert_nets(&new)?;
        let count = stored.len();
        let added: Vec<u32> = stored.iter().map(|r| r.id).filter(|id| !self.rules.contains_key(id)).collect();
        for r in &stored {
            self.rules.insert(r.id, r.clone());
        }
        if let Err(e) = self.sync_nets(&nets) {
            return Err(self.undo_nets(&added, &previous, &nets, e));
        }
        let rules = if count < 100 { stored } else { Vec::new() };
        Ok(api::Added { count, rules, applied_ms: t0.elapsed().as_millis() as u64 })
    }

    /// Deletes rules chosen by network, containment or all.
    pub fn del_nets(&mut self, req: &api::DelNets) -> Result<api::Removed> {
        let chosen = [req.cidr.is_some(), req.contains.is_some(), req.all].iter().filter(|b| **b).count();
        if chosen != 1 {
            return Err(ServiceError::invalid("cidr", "give exactly one of cidr, contains, all"));
        }
        let cidr =
            req.cidr.as_deref().map(parse_net).transpose().map_err(|m| ServiceError::invalid("cidr", m))?;
        let contains = req
            .contains
            .as_deref()
            .map(|s| parse_addr(s).map_err(|m| ServiceError::invalid("contains", m)))
            .transpose()?;
        let kind = req.allowed.map(|a| if a { NetAction::Allow } else { NetAction::Deny });
        let victims: Vec<&NetRule> = self
            .rules
            .values()
            .filter(|r| kind.is_none_or(|k| r.action == k))
            .filter(|r| cidr.is_none_or(|c| r.cidr == c))
            .filter(|r| contains.is_none_or(|ip| r.cidr.contains(&ip)))
            .collect();
        if let Some(r) = victims.iter().find(|r| r.origin == Origin::Config && !req.all) {
            return Err(ServiceError::Conflict(format!(
                "{} {} is set in the configuration file; remove it there",
                r.action, r.cidr
            )));
        }
        // A list's rules come and go with the list: deleted here they would return at its next
        // refresh (a feed) or stay away until the database changes (a country).
        if let Some(r) = victims.iter().find(|r| r.list.is_some() && cidr.is_some()) {
            return Err(ServiceError::Conflict(format!(
                "{} {} belongs to {} {}; remove it there, or add an allow rule for it",
                r.action,
                r.cidr,
                r.origin.as_str(),
                r.list.as_deref().unwrap_or_default().trim_start_matches("country:")
            )));
        }
        let victims: Vec<(u32, IpNet)> = victims
            .iter()
            .filter(|r| r.origin != Origin::Config && r.list.is_none())
            .map(|r| (r.id, r.cidr))
            .collect();
        if victims.is_empty() && cidr.is_some() {
            return Err(ServiceError::not_found("cidr", "no such rule"));
        }
        let ids: Vec<u32> = victims.iter().map(|v| v.0).collect();
        let previous: Vec<NetRule> = ids.iter().filter_map(|id| self.rules.get(id).cloned()).collect();
        let count = self.store.delete_nets(&ids)?;
        for id in &ids {
            self.rules.remove(id);
        }
        let nets: BTreeSet<IpNet> = victims.iter().map(|v| v.1).collect();
        if let Err(e) = self.sync_nets(&nets) {
            return Err(self.undo_nets(&[], &previous, &nets, e));
        }
        for r in previous.iter().filter(|r| r.origin == Origin::Auto) {
            // Deleting an automatic ban lifts the kernel's own ban of that source too.
            self.forget_source(r.cidr);
            self.bans.lifted("removed", 1);
        }
        Ok(api::Removed { count })
    }

    pub(crate) fn list(&self, q: &api::NetQuery) -> Vec<NetRule> {
        let kind = q.allowed.map(|a| if a { NetAction::Allow } else { NetAction::Deny });
        self.rules
            .values()
            .filter(|r| kind.is_none_or(|k| r.action == k))
            .filter(|r| q.contains.is_none_or(|ip| r.cidr.contains(&ip)))
            .cloned()
            .collect()
    }

    pub(crate) fn check(&self, ip: IpAddr) -> api::Check {
        let rule = net::decide(self.rules.values(), ip, Utc::now());
        let in_kernel = rule.is_some_and(|r| self.kernel.nets().contains_key(&r.cidr));
        api::Check {
            ip,
            verdict: match rule.map(|r| r.action) {
                Some(NetAction::Allow) => api::CheckVerdict::Allow,
                Some(NetAction::Deny) => api::CheckVerdict::Deny,
                None => api::CheckVerdict::None,
            },
            rule: rule.cloned(),
            in_kernel,
        }
    }

    pub(super) fn forget_source(&mut self, net: IpNet) {
        let key = match net {
            IpNet::V4(n) if n.prefix_len() == 32 => {
                callguard_common::limits::source_key_v4(n.addr().octets())
            }
            IpNet::V6(n) if n.prefix_len() >= 64 => {
                callguard_common::limits::source_key_v6(n.addr().octets())
            }
            _ => return,
        };
        if let Err(e) = self.kernel.forget_source(&key) {
            tracing::warn!("forgetting source {net} in the kernel: {e:#}");
        }
    }
}
