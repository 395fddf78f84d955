//! The network rule model: authorized (allow) and blocked (deny) networks, and how they compile
//! into the kernel's entries.
//!
//! Semantics (the same in the kernel and here): the longest prefix containing the source wins;
//! at equal length allow beats deny; an expired rule is as if it were absent.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt,
    net::IpAddr,
};

use callguard_common::{
    NetEntry,
    net::{SCOPE_ALL, SCOPE_SIP},
};
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;

/// Allow (authorized network) or deny (blocked network).
#[derive(
    Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum NetAction {
    /// Authorized: skips SIP checks, never rate-limited or banned.
    Allow,
    /// Blocked: dropped at the NIC (on guarded ports, or everywhere with scope `all`).
    Deny,
}

impl NetAction {
    /// The lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
    /// Parses `allow`/`deny`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Self::Allow),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }
}

impl fmt::Display for NetAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a deny rule covers.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Only packets to guarded (SIP) ports.
    #[default]
    Sip,
    /// Every packet from the network.
    All,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Self; 2] = [Self::Sip, Self::All];
    /// The lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sip => "sip",
            Self::All => "all",
        }
    }
    /// Parses `sip`/`all`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sip" => Some(Self::Sip),
            "all" => Some(Self::All),
            _ => None,
        }
    }
}

/// What the number-level call checks do with the calls of an allow rule's sources (issue 17,
/// item 3). Signatures, rate limits and bans never apply to an authorized source, whatever its
/// profile.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// No call checks: nothing from the source goes to the daemon. The default, and what every
    /// allow rule did before profiles existed.
    #[default]
    Trusted,
    /// A trunk: its calls are inbound, and the rules about callers apply (blacklisted
    /// numbers, border rules).
    Trunk,
    /// Phones: their calls are outbound, and the rules about dialed numbers apply (disallowed
    /// codes, allowed country codes, authorization codes, roles, fraud thresholds, border
    /// rules).
    Phones,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Self; 3] = [Self::Trusted, Self::Trunk, Self::Phones];
    /// The lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Trusted => "trusted",
            Self::Trunk => "trunk",
            Self::Phones => "phones",
        }
    }
    /// Parses `trusted`/`trunk`/`phones`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
    /// The kernel's code (`callguard_common::net::PROFILE_*`).
    pub const fn code(self) -> u8 {
        match self {
            Self::Trusted => callguard_common::net::PROFILE_TRUSTED,
            Self::Trunk => callguard_common::net::PROFILE_TRUNK,
            Self::Phones => callguard_common::net::PROFILE_PHONES,
        }
    }
}

/// Where a rule came from.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Added through the CLI or the API.
    Manual,
    /// Written in the configuration file (replaced on reload).
    Config,
    /// Loaded by `net import`.
    Import,
    /// Added by the daemon itself (automatic ban).
    Auto,
    /// Loaded from a blocklist feed (`[[feeds]]`; the rule's `list` names it), replaced at each
    /// refresh.
    Feed,
    /// A network a country rule's country holds (`net deny --country`; the rule's `list` is
    /// `country:CC`), replaced when the country database changes.
    Country,
}

impl Origin {
    /// The lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Config => "config",
            Self::Import => "import",
            Self::Auto => "auto",
            Self::Feed => "feed",
            Self::Country => "country",
        }
    }
    /// Parses the lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "manual" => Some(Self::Manual),
            "config" => Some(Self::Config),
            "import" => Some(Self::Import),
            "auto" => Some(Self::Auto),
            "feed" => Some(Self::Feed),
            "country" => Some(Self::Country),
            _ => None,
        }
    }
}

/// A stored network rule.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct NetRule {
    /// Stable id; the kernel counts per id.
    pub id: u32,
    /// The network (host bits clear).
    #[schema(value_type = String, example = "198.18.0.0/24")]
    pub cidr: IpNet,
    /// Allow or deny.
    pub action: NetAction,
    /// For deny rules: what they cover.
    pub scope: Scope,
    /// For allow rules: what the call checks do with their sources' calls.
    #[serde(default)]
    pub profile: Profile,
    /// When the rule stops applying.
    pub expires_at: Option<DateTime<Utc>>,
    /// Free text.
    pub comment: String,
    /// Where it came from.
    pub origin: Origin,
    /// The list a generated rule belongs to: its feed's name (origin `feed`), or `country:CC`
    /// (origin `country`). The list replaces its rules as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A rule to add (or update, when a rule with the same network and action exists).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct NewNetRule {
    /// The network (host bits clear).
    pub cidr: IpNet,
    /// Allow or deny.
    pub action: NetAction,
    /// For deny rules: what they cover.
    #[serde(default)]
    pub scope: Scope,
    /// For allow rules: what the call checks do with their sources' calls.
    #[serde(default)]
    pub profile: Profile,
    /// When the rule stops applying.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Free text.
    #[serde(default)]
    pub comment: String,
    /// Where it came from.
    pub origin: Origin,
    /// The list a generated rule belongs to (see [`NetRule::list`]).
    #[serde(default)]
    pub list: Option<String>,
}

impl NewNetRule {
    /// The rule as it would be stored with `id`, created now.
    pub fn to_rule(&self, id: u32) -> NetRule {
        NetRule {
            id,
            cidr: self.cidr,
            action: self.action,
            scope: self.scope,
            profile: self.profile,
            expires_at: self.expires_at,
            comment: self.comment.clone(),
            origin: self.origin,
            list: self.list.clone(),
            created_at: Utc::now(),
        }
    }
}

impl NetRule {
    /// Whether the rule applies at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }
}

/// The network a source stands for, as the kernel keys sources and bans them: an IPv4 address
/// (`/32`), an IPv6 `/64` (an attacker's one host holds a whole /64).
pub fn source_net(addr: IpAddr) -> IpNet {
    match addr {
        IpAddr::V4(a) => IpNet::V4(ipnet::Ipv4Net::new_assert(a, 32)),
        IpAddr::V6(a) => IpNet::V6(ipnet::Ipv6Net::new_assert(a, 64)).trunc(),
    }
}

/// Parses one address (surrounding blanks allowed).
pub fn parse_addr(s: &str) -> Result<IpAddr, String> {
    s.trim().parse().map_err(|_| format!("`{s}` is not an IP address"))
}

/// Parses an address or a prefix; a bare address is a /32 or /128.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!("`{s}` has host bits set; did you mean {}?", net.trunc()));
        }
        return Ok(net);
    }
    match s.parse::<IpAddr>() {
        Ok(addr) => Ok(IpNet::from(addr)),
        Err(_) => Err(format!("`{s}` is not an IP address or CIDR prefix")),
    }
}

/// Whether `r` is a deny that comes from a list (a feed, a country). Such a deny never overrides
/// an allow: inside an allowed network, the addresses a list names stay allowed, so that a feed
/// (someone else's list) or a country's networks cannot take a trunk or a phone the operator
/// allowed off the air by naming a part of its network.
pub fn listed_deny(r: &NetRule) -> bool {
    r.list.is_some() && r.action == NetAction::Deny
}

/// The allow a listed deny of `net` yields to: the rule that would decide for `net` without the
/// lists' denies, the longest network strictly containing it (allow before deny at equal
/// length), when that is an allow. `others` holds every live rule but the listed denies, by
/// network.
fn yields_to<'a>(net: &IpNet, others: &HashMap<IpNet, (Option<&'a NetRule>, bool)>) -> Option<&'a NetRule> {
    (0..net.prefix_len()).rev().find_map(|len| {
        let outer = IpNet::new(net.network(), len).ok()?.trunc();
        others.get(&outer).map(|&(allow, _)| allow)
    })?
}

/// Compiles rules into kernel entries, one per distinct network. Rules already expired at
/// `clock` are left out; the others carry their expiry, which the program enforces itself.
pub fn compile<'a>(rules: impl IntoIterator<Item = &'a NetRule>, clock: &Clock) -> BTreeMap<IpNet, NetEntry> {
    compile_nets(rules, None, clock)
}

/// As [`compile`], the entries of `only` alone (all with `None`); every rule still counts for
/// what a listed deny yields to ([`listed_deny`]). A listed deny inside an allow carries that
/// allow in its entry, which the program prefers at equal length, with the allow's expiry: once
/// the allow is over, the deny holds.
pub fn compile_nets<'a>(
    rules: impl IntoIterator<Item = &'a NetRule>,
    only: Option<&BTreeSet<IpNet>>,
    clock: &Clock,
) -> BTreeMap<IpNet, NetEntry> {
    let now = clock.wall();
    let live: Vec<&NetRule> = rules.into_iter().filter(|r| r.is_live(now)).collect();
    let mut out: BTreeMap<IpNet, NetEntry> = BTreeMap::new();
    let mut listed = HashSet::new();
    for r in live.iter().filter(|r| only.is_none_or(|o| o.contains(&r.cidr))) {
        let e = out
            .entry(r.cidr)
            .or_insert_with(|| NetEntry { prefix_len: r.cidr.prefix_len(), ..NetEntry::default() });
        match r.action {
            NetAction::Allow => allow_into(e, r, clock),
            NetAction::Deny => {
                e.deny_rule = r.id;
                e.deny_expires_ns = clock.boot_ns_at(r.expires_at);
                e.deny_scope = match r.scope {
                    Scope::Sip => SCOPE_SIP,
                    Scope::All => SCOPE_ALL,
                };
                if listed_deny(r) {
                    listed.insert(r.cidr);
                }
            }
        }
    }
    if listed.is_empty() {
        return out;
    }
    // Every live rule but the listed denies, by network: what a listed deny yields to.
    let mut others: HashMap<IpNet, (Option<&NetRule>, bool)> = HashMap::new();
    for r in live.iter().filter(|r| !listed_deny(r)) {
        let o = others.entry(r.cidr).or_default();
        match r.action {
            NetAction::Allow => o.0 = Some(r),
            NetAction::Deny => o.1 = true,
        }
    }
    for (net, e) in &mut out {
        if e.allow_rule == 0
            && listed.contains(net)
            && let Some(a) = yields_to(net, &others)
        {
            allow_into(e, a, clock);
        }
    }
    out
}

fn allow_into(e: &mut NetEntry, r: &NetRule, clock: &Clock) {
    e.allow_rule = r.id;
    e.allow_expires_ns = clock.boot_ns_at(r.expires_at);
    e.allow_profile = r.profile.code();
}

/// The networks of the listed denies strictly inside the `changed` networks: their entries carry
/// what they yield to ([`compile_nets`]), so a change there (an allow added or deleted, a deny
/// between) may change theirs. Each listed deny walks up its own prefixes: a refresh that
/// changes a whole feed costs a few lookups a network, not one a pair.
pub fn nested_listed<'a>(
    rules: impl IntoIterator<Item = &'a NetRule>,
    changed: &BTreeSet<IpNet>,
) -> BTreeSet<IpNet> {
    if changed.is_empty() {
        return BTreeSet::new();
    }
    // The prefix lengths that changed, by family: each listed deny probes only those.
    let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
    for n in changed {
        match n {
            IpNet::V4(_) => v4.insert(n.prefix_len()),
            IpNet::V6(_) => v6.insert(n.prefix_len()),
        };
    }
    rules
        .into_iter()
        .filter(|r| listed_deny(r))
        .filter(|r| {
            let lens = if matches!(r.cidr, IpNet::V4(_)) { &v4 } else { &v6 };
            lens.range(..r.cidr.prefix_len()).any(|&len| {
                IpNet::new(r.cidr.network(), len).is_ok_and(|outer| changed.contains(&outer.trunc()))
            })
        })
        .map(|r| r.cidr)
        .collect()
}

/// The rule that decides for `addr` at `now`: the longest live prefix containing it, allow
/// before deny at equal length; a listed deny ([`listed_deny`]) yields to the allow that would
/// decide without the lists' denies. The same semantics as the kernel's lookup.
pub fn decide<'a>(
    rules: impl IntoIterator<Item = &'a NetRule>,
    addr: IpAddr,
    now: DateTime<Utc>,
) -> Option<&'a NetRule> {
    decide_net(rules, &IpNet::from(addr), now)
}

/// As [`decide`], for every address of `net` at once: the rules that contain the whole of it.
pub fn decide_net<'a>(
    rules: impl IntoIterator<Item = &'a NetRule>,
    net: &IpNet,
    now: DateTime<Utc>,
) -> Option<&'a NetRule> {
    winner(&rules.into_iter().filter(|r| r.is_live(now) && r.cidr.contains(net)).collect::<Vec<_>>())
}

/// Of the live rules that contain one network, the one that decides (see [`decide`]).
fn winner<'a>(live: &[&'a NetRule]) -> Option<&'a NetRule> {
    let key = |r: &&NetRule| (r.cidr.prefix_len(), r.action == NetAction::Allow);
    let winner = live.iter().copied().max_by_key(key)?;
    if listed_deny(winner) {
        let without = live
            .iter()
            .copied()
            .filter(|r| !listed_deny(r) && r.cidr.prefix_len() < winner.cidr.prefix_len())
            .max_by_key(key);
        if let Some(a) = without.filter(|r| r.action == NetAction::Allow) {
            return Some(a);
        }
    }
    Some(winner)
}

/// The live rules of one moment by network: [`decide`] for many addresses, each answered in time
/// that grows with the number of distinct prefix lengths rather than of rules (a flood's batch of
/// bans checked against feeds of tens of thousands of networks).
#[derive(Debug)]
pub struct Index<'a> {
    by_net: HashMap<IpNet, Vec<&'a NetRule>>,
    v4: Vec<u8>,
    v6: Vec<u8>,
}

impl<'a> Index<'a> {
    /// Indexes the rules live at `now`.
    pub fn new(rules: impl IntoIterator<Item = &'a NetRule>, now: DateTime<Utc>) -> Self {
        let mut by_net: HashMap<IpNet, Vec<&NetRule>> = HashMap::new();
        let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
        for r in rules.into_iter().filter(|r| r.is_live(now)) {
            match r.cidr {
                IpNet::V4(_) => v4.insert(r.cidr.prefix_len()),
                IpNet::V6(_) => v6.insert(r.cidr.prefix_len()),
            };
            by_net.entry(r.cidr.trunc()).or_default().push(r);
        }
        Self { by_net, v4: v4.into_iter().collect(), v6: v6.into_iter().collect() }
    }

    /// The rule that decides for `addr`, as [`decide`] answers at the index's moment.
    pub fn decide(&self, addr: IpAddr) -> Option<&'a NetRule> {
        let lens = if addr.is_ipv4() { &self.v4 } else { &self.v6 };
        let live: Vec<&NetRule> = lens
            .iter()
            .filter_map(|&len| IpNet::new(addr, len).ok())
            .filter_map(|n| self.by_net.get(&n.trunc()))
            .flatten()
            .copied()
            .collect();
        winner(&live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::boot_ns;

    #[test]
    fn the_index_decides_as_decide_does() {
        // Random rules and addresses from a few small networks, so that they nest and collide;
        // some rules expired, some listed denies.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let now = Utc::now();
        let mut rules = Vec::new();
        for id in 0..3000 {
            let v4 = next(3) != 0;
            let cidr: IpNet = if v4 {
                let a = std::net::Ipv4Addr::new(198, 18, next(4) as u8, next(256) as u8);
                IpNet::new(a.into(), 16 + next(17) as u8).unwrap().trunc()
            } else {
                let a =
                    std::net::Ipv6Addr::new(0x2001, 0xdb8, next(4) as u16, 0, 0, 0, 0, next(65536) as u16);
                IpNet::new(a.into(), 32 + next(97) as u8).unwrap().trunc()
            };
            let mut r =
                rule(id, &cidr.to_string(), if next(2) == 0 { NetAction::Allow } else { NetAction::Deny });
            if next(10) == 0 {
                r.expires_at = Some(now - chrono::Duration::seconds(1));
            }
            if r.action == NetAction::Deny && next(3) == 0 {
                r.list = Some("feed".into());
            }
            rules.push(r);
        }
        let index = Index::new(&rules, now);
        let mut decided = 0;
        for _ in 0..20_000 {
            let addr: IpAddr = if next(3) != 0 {
                std::net::Ipv4Addr::new(198, 18, next(4) as u8, next(256) as u8).into()
            } else {
                std::net::Ipv6Addr::new(0x2001, 0xdb8, next(4) as u16, 0, 0, 0, 0, next(65536) as u16).into()
            };
            let want = decide(&rules, addr, now).map(|r| r.id);
            assert_eq!(index.decide(addr).map(|r| r.id), want, "{addr}");
            decided += usize::from(want.is_some());
        }
        assert!(decided > 10_000, "the addresses fall under rules: {decided}");
    }

    fn rule(id: u32, cidr: &str, action: NetAction) -> NetRule {
        NetRule {
            id,
            cidr: cidr.parse().unwrap(),
            action,
            scope: Scope::Sip,
            profile: Profile::Trusted,
            expires_at: None,
            comment: String::new(),
            origin: Origin::Manual,
            list: None,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn longest_prefix_wins_both_ways() {
        let rules = [
            rule(1, "198.18.0.0/16", NetAction::Deny),
            rule(2, "198.18.5.0/24", NetAction::Allow),
            rule(3, "198.18.5.128/25", NetAction::Deny),
        ];
        let now = Utc::now();
        let at = |s: &str| decide(&rules, s.parse().unwrap(), now).map(|r| r.id);
        assert_eq!(at("198.18.1.1"), Some(1));
        assert_eq!(at("198.18.5.1"), Some(2));
        assert_eq!(at("198.18.5.200"), Some(3));
        assert_eq!(at("198.19.0.1"), None);
        assert_eq!(at("2001:db8::1"), None);
    }

    #[test]
    fn allow_beats_deny_at_equal_prefix_and_expiry_uncovers() {
        let mut allow = rule(2, "198.18.0.0/24", NetAction::Allow);
        let rules = [rule(1, "198.18.0.0/24", NetAction::Deny), allow.clone()];
        let now = Utc::now();
        assert_eq!(decide(&rules, "198.18.0.9".parse().unwrap(), now).map(|r| r.id), Some(2));
        allow.expires_at = Some(now - chrono::Duration::seconds(1));
        let rules = [rule(1, "198.18.0.0/24", NetAction::Deny), allow];
        assert_eq!(decide(&rules, "198.18.0.9".parse().unwrap(), now).map(|r| r.id), Some(1));
    }

    #[test]
    fn compile_merges_allow_and_deny_per_network_and_skips_expired() {
        let clock = Clock::now();
        let mut gone = rule(3, "198.18.9.0/24", NetAction::Deny);
        gone.expires_at = Some(clock.wall() - chrono::Duration::seconds(5));
        let mut soon = rule(4, "2001:db8::/48", NetAction::Deny);
        soon.scope = Scope::All;
        soon.expires_at = Some(clock.wall() + chrono::Duration::seconds(60));
        let rules = [
            rule(1, "198.18.0.0/24", NetAction::Deny),
            rule(2, "198.18.0.0/24", NetAction::Allow),
            gone,
            soon,
        ];
        let out = compile(&rules, &clock);
        assert_eq!(out.len(), 2);
        let e = out[&"198.18.0.0/24".parse::<IpNet>().unwrap()];
        assert_eq!((e.allow_rule, e.deny_rule, e.prefix_len), (2, 1, 24));
        let e6 = out[&"2001:db8::/48".parse::<IpNet>().unwrap()];
        assert_eq!((e6.deny_rule, e6.deny_scope, e6.prefix_len), (4, SCOPE_ALL, 48));
        let left = e6.deny_expires_ns - clock.boot_ns_at(None).max(boot_ns());
        assert!(left > 55_000_000_000 && left <= 60_000_000_000, "{left}");
    }

    fn listed(id: u32, cidr: &str, action: NetAction, list: &str) -> NetRule {
        NetRule { origin: Origin::Feed, list: Some(list.into()), ..rule(id, cidr, action) }
    }

    /// A list's deny inside an allow yields to it (a feed cannot take a trunk off the air by
    /// naming one of its addresses); the operator's own deny inside an allow does not; the
    /// kernel's entries say the same as the model, and a change of the allow reaches them.
    #[test]
    fn a_listed_deny_never_overrides_an_allow() {
        let clock = Clock::now();
        let now = clock.wall();
        let rules = [
            rule(1, "198.51.100.0/24", NetAction::Allow),
            listed(2, "198.51.100.7/32", NetAction::Deny, "firehol"),
            rule(3, "198.51.100.64/26", NetAction::Deny),
            listed(4, "198.51.100.70/32", NetAction::Deny, "firehol"),
            listed(5, "203.0.113.9/32", NetAction::Deny, "firehol"),
            listed(6, "192.0.2.0/24", NetAction::Allow, "trunks"),
            listed(7, "192.0.2.5/32", NetAction::Deny, "country:CN"),
        ];
        let at = |s: &str| decide(&rules, s.parse().unwrap(), now).map(|r| r.id);
        assert_eq!(at("198.51.100.7"), Some(1), "the allow decides for the listed address");
        assert_eq!(at("198.51.100.70"), Some(4), "inside the operator's own deny, the list's deny holds");
        assert_eq!(at("198.51.100.65"), Some(3));
        assert_eq!(at("203.0.113.9"), Some(5), "outside every allow, the list denies");
        assert_eq!(at("192.0.2.5"), Some(6), "an allow list wins over a deny list inside it");
        let out = compile(&rules, &clock);
        let entry = |s: &str| out[&s.parse::<IpNet>().unwrap()];
        assert_eq!((entry("198.51.100.7/32").allow_rule, entry("198.51.100.7/32").deny_rule), (1, 2));
        assert_eq!((entry("198.51.100.70/32").allow_rule, entry("198.51.100.70/32").deny_rule), (0, 4));
        assert_eq!(entry("203.0.113.9/32").allow_rule, 0);
        assert_eq!(entry("192.0.2.5/32").allow_rule, 6);
        // The entry of one network alone carries the same; a change of the allow names every
        // listed network inside it for recompiling (the one under the operator's deny too: its
        // entry comes out the same).
        let one = compile_nets(&rules, Some(&BTreeSet::from(["198.51.100.7/32".parse().unwrap()])), &clock);
        assert_eq!(one.len(), 1);
        assert_eq!(one.values().next().unwrap().allow_rule, 1);
        let nested = nested_listed(&rules, &BTreeSet::from(["198.51.100.0/24".parse().unwrap()]));
        let nested: Vec<String> = nested.iter().map(ToString::to_string).collect();
        assert_eq!(nested, ["198.51.100.7/32", "198.51.100.70/32"]);
        assert!(nested_listed(&rules, &BTreeSet::from(["203.0.113.9/32".parse().unwrap()])).is_empty());
        // A deleted allow's network still names them: their entries must lose the allow.
        let after: Vec<NetRule> = rules.iter().filter(|r| r.id != 1).cloned().collect();
        let nested = nested_listed(&after, &BTreeSet::from(["198.51.100.0/24".parse().unwrap()]));
        assert_eq!(nested.len(), 2);
        let out = compile_nets(&after, Some(&nested), &clock);
        assert_eq!(out[&"198.51.100.7/32".parse::<IpNet>().unwrap()].allow_rule, 0);
    }
}
