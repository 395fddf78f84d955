//! Lists of networks through the service (a blocklist feed's last good document, a country's
//! networks): a new version replaces the list's rules, in one store transaction and one kernel
//! update that writes every new entry before it removes any old one, so the networks a list
//! keeps are never out of the maps.

use std::collections::{BTreeSet, HashMap, HashSet};

use ipnet::IpNet;

use super::{Result, Service, ServiceError};
use crate::{
    api::control as api,
    feeds::Feed,
    geo::CountryRule,
    net::{NetAction, NetRule, NewNetRule, Origin, Scope},
    store::Store,
};

/// A list of networks whose rules are replaced as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct List {
    /// Its name, in the rules' `list`: a feed's name, or `country:CC`.
    pub name: String,
    /// Its rules' origin.
    pub origin: Origin,
    /// Its rules' action.
    pub action: NetAction,
    /// Its rules' scope.
    pub scope: Scope,
    /// Its rules' comment.
    pub comment: String,
}

impl List {
    /// The list of a country rule.
    pub fn country(r: &CountryRule) -> Self {
        Self {
            name: r.list(),
            origin: Origin::Country,
            action: r.action,
            scope: r.scope,
            comment: format!("country {}", r.code),
        }
    }

    /// The list of a blocklist feed.
    pub fn feed(f: &Feed) -> Self {
        Self {
            name: f.name.clone(),
            origin: Origin::Feed,
            action: f.action,
            scope: f.scope,
            comment: format!("feed {}", f.name),
        }
    }
}

/// What one replacement changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListApplied {
    /// The list's rules now.
    pub rules: usize,
    /// Rules it gained.
    pub added: usize,
    /// Rules it lost (no longer in the document).
    pub removed: usize,
    /// Networks left to rules that already held them (an operator's, the file's, a ban's,
    /// another list's).
    pub held_by_others: usize,
}

impl Service {
    /// Makes the rules of `list` exactly `nets` (sorted): store first, then the kernel, undone
    /// in both when the kernel refuses (a map without room). `progress(done, total)` is told how
    /// the kernel update advances.
    pub fn replace_list(
        &mut self,
        list: &List,
        nets: &[IpNet],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<ListApplied> {
        let name = list.name.as_str();
        let new: Vec<NewNetRule> = nets
            .iter()
            .map(|&cidr| NewNetRule {
                cidr,
                action: list.action,
                scope: list.scope,
                profile: crate::net::Profile::Trusted,
                expires_at: None,
                comment: list.comment.clone(),
                origin: list.origin,
                list: Some(list.name.clone()),
            })
            .collect();
        let before: Vec<_> =
            self.rules.values().filter(|r| r.list.as_deref() == Some(name)).cloned().collect();
        // Room first, as if every network were the list's: nothing is stored that the maps
        // cannot hold.
        let mut touched: BTreeSet<IpNet> = nets.iter().copied().collect();
        touched.extend(before.iter().map(|r| r.cidr));
        let mut trial: Vec<_> = self
            .rules
            .values()
            .filter(|r| touched.contains(&r.cidr) && r.list.as_deref() != Some(name))
            .cloned()
            .collect();
        trial.extend(new.iter().map(|n| n.to_rule(u32::MAX)));
        self.kernel.check_room(&Self::changes_for(&trial, &touched))?;
        let done = self.store.replace_list_nets(name, &new)?;
        let added: Vec<u32> =
            done.rules.iter().map(|r| r.id).filter(|id| !self.rules.contains_key(id)).collect();
        for r in &done.removed {
            self.rules.remove(&r.id);
        }
        for r in &done.rules {
            self.rules.insert(r.id, r.clone());
        }
        // Only the networks whose entries change: a refresh that changes nothing writes nothing.
        let was: HashMap<u32, &NetRule> = before.iter().map(|b| (b.id, b)).collect();
        let mut changed: BTreeSet<IpNet> = done.removed.iter().map(|r| r.cidr).collect();
        changed.extend(done.rules.iter().filter(|r| was.get(&r.id) != Some(r)).map(|r| r.cidr));
        let changes = Self::changes_for(self.rules.values(), &changed);
        let total = changes.len();
        if let Err(e) = self.kernel.apply_changes(&changes, &mut |n| progress(n, total)) {
            let now: HashSet<u32> = done.rules.iter().map(|r| r.id).collect();
            let kept: Vec<_> = before.iter().filter(|b| now.contains(&b.id)).cloned().collect();
            let mut previous = done.removed.clone();
            previous.extend(kept);
            return Err(self.undo_nets(&added, &previous, &changed, e));
        }
        Ok(ListApplied {
            rules: done.rules.len(),
            added: added.len(),
            removed: done.removed.len(),
            held_by_others: done.held_by_others,
        })
    }

    /// How many rules list `name` has.
    pub fn list_rules(&self, name: &str) -> usize {
        self.rules.values().filter(|r| r.list.as_deref() == Some(name)).count()
    }

    /// Removes the rules of lists nothing stands for any more (at start and on reload): feeds
    /// the configuration no longer names, countries without a country rule.
    pub(super) fn drop_orphan_lists(store: &mut dyn Store, feeds: &[Feed]) -> anyhow::Result<usize> {
        let countries: BTreeSet<String> = store.country_rules()?.iter().map(CountryRule::list).collect();
        let named: BTreeSet<String> = store
            .nets()?
            .into_iter()
            .filter(|r| match r.origin {
                Origin::Feed => r.list.as_ref().is_some_and(|l| !feeds.iter().any(|f| &f.name == l)),
                Origin::Country => r.list.as_ref().is_some_and(|l| !countries.contains(l)),
                _ => false,
            })
            .filter_map(|r| r.list)
            .collect();
        let mut n = 0;
        for name in named {
            let gone = store.replace_list_nets(&name, &[])?;
            tracing::info!(list = %name, rules = gone.removed.len(), "removed the rules of a list nothing stands for");
            n += gone.removed.len();
        }
        Ok(n)
    }

    /// Every country rule, with its networks in force.
    pub fn country_rules(&self) -> Result<Vec<api::CountryView>> {
        Ok(self
            .store
            .country_rules()?
            .into_iter()
            .map(|rule| api::CountryView { networks: self.list_rules(&rule.list()), rule })
            .collect())
    }

    /// Makes (or changes) a country rule whose country holds `nets` (from the country database):
    /// its networks first, then the rule.
    pub fn set_country(&mut self, rule: &CountryRule, nets: &[IpNet]) -> Result<ListApplied> {
        if nets.is_empty() {
            return Err(ServiceError::invalid(
                "code",
                format!(
                    "the country database names no network of {} (ISO 3166-1 codes: GB, not UK)",
                    rule.code
                ),
            ));
        }
        let applied = self.replace_list(&List::country(rule), nets, &mut |_, _| {})?;
        self.store.put_country_rule(rule)?;
        Ok(applied)
    }

    /// Checks a request for a country rule before its country's networks are read: the code,
    /// the comment, a country database set. The rule it asks for, and the database to read.
    pub fn country_request(&self, req: api::SetCountry) -> Result<(CountryRule, std::path::PathBuf)> {
        let code = crate::geo::parse_code(&req.code).map_err(|m| ServiceError::invalid("code", m))?;
        crate::numbers::check_len(&req.comment, super::COMMENT_MAX)
            .map_err(|m| ServiceError::invalid("comment", m))?;
        let database = self.cfg.geoip.database.clone();
        if database.as_os_str().is_empty() {
            return Err(ServiceError::invalid(
                "code",
                "no country database is set: put a MaxMind-format country database's path in [geoip] database",
            ));
        }
        let rule = CountryRule {
            code,
            action: req.action,
            scope: req.scope,
            comment: req.comment,
            created_at: chrono::Utc::now(),
        };
        Ok((rule, database))
    }

    /// Deletes the country rule of `code` and its networks; how many networks it had.
    pub fn del_country(&mut self, code: &str) -> Result<usize> {
        let Some(rule) = self.store.country_rules()?.into_iter().find(|r| r.code == code) else {
            return Err(ServiceError::not_found("code", format!("no country rule for {code}")));
        };
        let gone = self.list_rules(&rule.list());
        self.replace_list(&List::country(&rule), &[], &mut |_, _| {})?;
        self.store.delete_country_rule(code)?;
        Ok(gone)
    }

    /// Replaces the networks of every country rule with what `by_code` says (the country
    /// database read again). A country it does not name, or names with no network (a database
    /// of another kind, a truncated file), keeps its networks. A network that moved from one
    /// country rule's country to another's is held by the first when the second is replaced:
    /// the countries that found networks held are replaced once more at the end.
    pub fn refresh_countries(
        &mut self,
        by_code: &std::collections::BTreeMap<String, Vec<IpNet>>,
    ) -> Result<Vec<(String, ListApplied)>> {
        let mut out: Vec<(String, ListApplied)> = Vec::new();
        let rules = self.store.country_rules()?;
        for pass in 0..2 {
            for rule in &rules {
                let Some(nets) = by_code.get(&rule.code).filter(|n| !n.is_empty()) else {
                    if pass == 0 {
                        tracing::warn!(country = %rule.code, "the country database names no network of this country; its rule keeps its networks");
                    }
                    continue;
                };
                let again = out.iter().any(|(c, a)| c == &rule.code && a.held_by_others > 0);
                if pass == 1 && !again {
                    continue;
                }
                let applied = self.replace_list(&List::country(rule), nets, &mut |_, _| {})?;
                out.retain(|(c, _)| c != &rule.code);
                out.push((rule.code.clone(), applied));
            }
        }
        Ok(out)
    }
}
