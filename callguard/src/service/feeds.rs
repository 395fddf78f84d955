//! Blocklist feeds through the service: a refreshed document replaces the feed's rules, in one
//! store transaction and one kernel update that writes every new entry before it removes any
//! old one, so the networks a feed keeps are never out of the maps.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::{Result, Service};
use crate::{
    feeds::Feed,
    net::{NewNetRule, Origin},
    store::Store,
};

/// What one refresh changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedApplied {
    /// The feed's rules now.
    pub rules: usize,
    /// Rules it gained.
    pub added: usize,
    /// Rules it lost (no longer in the document).
    pub removed: usize,
    /// Networks left to rules that already held them (an operator's, the file's, a ban's,
    /// another feed's).
    pub held_by_others: usize,
}

impl Service {
    /// Makes the rules of `feed` exactly `nets` (its last good document, sorted): store first,
    /// then the kernel, undone in both when the kernel refuses (a map without room).
    /// `progress(done, total)` is told how the kernel update advances.
    pub fn replace_feed(
        &mut self,
        feed: &Feed,
        nets: &[IpNet],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<FeedApplied> {
        let new: Vec<NewNetRule> = nets
            .iter()
            .map(|&cidr| NewNetRule {
                cidr,
                action: feed.action,
                scope: feed.scope,
                profile: crate::net::Profile::Trusted,
                expires_at: None,
                comment: format!("feed {}", feed.name),
                origin: Origin::Feed,
                feed: Some(feed.name.clone()),
            })
            .collect();
        let before: Vec<_> =
            self.rules.values().filter(|r| r.feed.as_deref() == Some(feed.name.as_str())).cloned().collect();
        // Room first, as if every network were the feed's: nothing is stored that the maps
        // cannot hold.
        let mut touched: BTreeSet<IpNet> = nets.iter().copied().collect();
        touched.extend(before.iter().map(|r| r.cidr));
        let mut trial: Vec<_> = self
            .rules
            .values()
            .filter(|r| touched.contains(&r.cidr) && r.feed.as_deref() != Some(feed.name.as_str()))
            .cloned()
            .collect();
        trial.extend(new.iter().map(|n| n.to_rule(u32::MAX)));
        self.kernel.check_room(&Self::changes_for(&trial, &touched))?;
        let done = self.store.replace_feed_nets(&feed.name, &new)?;
        let added: Vec<u32> =
            done.rules.iter().map(|r| r.id).filter(|id| !self.rules.contains_key(id)).collect();
        for r in &done.removed {
            self.rules.remove(&r.id);
        }
        for r in &done.rules {
            self.rules.insert(r.id, r.clone());
        }
        // Only the networks whose entries change: a refresh that changes nothing writes nothing.
        let mut changed: BTreeSet<IpNet> = done.removed.iter().map(|r| r.cidr).collect();
        changed.extend(done.rules.iter().filter(|r| !before.iter().any(|b| b == *r)).map(|r| r.cidr));
        let changes = Self::changes_for(self.rules.values(), &changed);
        let total = changes.len();
        if let Err(e) = self.kernel.apply_changes(&changes, &mut |n| progress(n, total)) {
            let kept: Vec<_> =
                before.into_iter().filter(|b| done.rules.iter().any(|r| r.id == b.id)).collect();
            let mut previous = done.removed.clone();
            previous.extend(kept);
            return Err(self.undo_nets(&added, &previous, &changed, e));
        }
        Ok(FeedApplied {
            rules: done.rules.len(),
            added: added.len(),
            removed: done.removed.len(),
            held_by_others: done.held_by_others,
        })
    }

    /// How many rules feed `name` has.
    pub fn feed_rules(&self, name: &str) -> usize {
        self.rules.values().filter(|r| r.feed.as_deref() == Some(name)).count()
    }

    /// Removes the rules of feeds the configuration no longer names (at start and on reload).
    pub(super) fn drop_unconfigured_feeds(store: &mut dyn Store, feeds: &[Feed]) -> anyhow::Result<usize> {
        let named: BTreeSet<String> = store
            .nets()?
            .into_iter()
            .filter_map(|r| r.feed)
            .filter(|f| !feeds.iter().any(|c| &c.name == f))
            .collect();
        let mut n = 0;
        for name in named {
            let gone = store.replace_feed_nets(&name, &[])?;
            tracing::info!(feed = %name, rules = gone.removed.len(), "removed the rules of a feed no longer configured");
            n += gone.removed.len();
        }
        Ok(n)
    }
}
