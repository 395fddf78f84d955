//! The rule service: the one way every rule change reaches the store and the kernel.
//!
//! All state sits behind one mutex (the daemon's): every change is store first (one
//! transaction), then kernel, so an acknowledged change is durable and enforced before the
//! answer leaves. Errors are [`ServiceError`]s that know nothing of HTTP; the web layer maps
//! them to statuses in one place (`web::error`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::Context as _;
use aya::maps::{Array, MapData, RingBuf};
use callguard_common::{NetEntry, events::event};
use chrono::Utc;
use ipnet::IpNet;

use crate::{
    api::control as api,
    calls::{message, policy, slowpath},
    clock::Clock,
    config::Config,
    events,
    kernel::{
        Kernel,
        datapath::{Datapath, KernelError},
    },
    net::{self, NetAction, NetRule, NewNetRule, Origin, parse_addr, parse_net},
    sig::{self, Signature},
    store::{SqliteStore, Store, StoreError},
};

/// Why the service refused or failed a change. Nothing was changed unless the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// An input is not acceptable; `field` names it (`cidr`, `rules[3].comment`).
    #[error("{field}: {msg}")]
    Invalid {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        msg: String,
    },
    /// What `field` names does not exist.
    #[error("{field}: {msg}")]
    NotFound {
        /// The field that named it.
        field: String,
        /// What is missing.
        msg: String,
    },
    /// The change conflicts with what is stored (a rule of the configuration file, a limit).
    #[error("{0}")]
    Conflict(String),
    /// The caller's role lacks the right, or what they name is beyond its reach.
    #[error("{0}")]
    Forbidden(String),
    /// The credentials presented are not (or no longer) valid.
    #[error("{0}")]
    Unauthorized(String),
    /// A fault of callguard's own (hashing a password, a poisoned thread).
    #[error("{0:#}")]
    Internal(anyhow::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The kernel refused the change (a full map, a failed write); nothing was stored.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

impl ServiceError {
    /// An invalid input.
    pub fn invalid(field: &str, msg: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), msg: msg.into() }
    }
    /// A missing resource.
    pub fn not_found(field: &str, msg: impl Into<String>) -> Self {
        Self::NotFound { field: field.into(), msg: msg.into() }
    }
}

/// The kernel's ring buffers the daemon reads.
#[expect(missing_debug_implementations, reason = "aya's RingBuf and Array have no Debug")]
pub struct Rings {
    /// Sampled drops and bans (`CG_EVENTS`).
    pub events: Option<RingBuf<MapData>>,
    /// Handed-up requests, and the heartbeat the daemon keeps for the kernel.
    pub handup: Option<(RingBuf<MapData>, Array<MapData, u64>)>,
}

/// What a service operation returns.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Longest comment accepted on a rule.
pub const COMMENT_MAX: usize = 256;

/// How the daemon was started.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The configuration file (`None`: built-in defaults).
    pub config_path: Option<PathBuf>,
    /// Interfaces named on the command line, guarded in addition to the file's.
    pub interfaces: Vec<String>,
}

/// Everything the daemon owns: the configuration, the store, the kernel program and maps, and
/// the number-level policy the slow path decides with.
#[derive(Debug)]
pub struct Service {
    opts: Options,
    cfg: Config,
    store: Box<dyn Store>,
    kernel: Box<dyn Datapath>,
    /// The store's rules by id (a cache: the store is the truth).
    rules: BTreeMap<u32, NetRule>,
    /// The store's signatures by id (a cache, as `rules`).
    sigs: BTreeMap<u32, Signature>,
    interfaces: Vec<api::Interface>,
    started: Instant,
    /// The number-level policy in force, shared with the slow path.
    calls: Arc<policy::Live>,
    /// The store's `calls_generation` the policy in force was built at.
    calls_gen: u64,
    /// The slow path's counters.
    slow_stats: Arc<Mutex<slowpath::SlowStats>>,
}

impl Service {
    /// Creates the system administrator `admin` when there is no user at all; returns the
    /// password when it was generated (to be shown once).
    pub fn bootstrap_admin(&mut self) -> anyhow::Result<Option<String>> {
        if !self.store.users()?.is_empty() {
            return Ok(None);
        }
        let given =
            self.cfg().api.admin_password.clone().or_else(|| std::env::var("CALLGUARD_ADMIN_PASSWORD").ok());
        if let Some(p) = &given {
            crate::accounts::check_password(p)
                .map_err(|m| anyhow::anyhow!("the administrator password: {m}"))?;
        }
        let password = given.clone().unwrap_or_else(crate::accounts::new_password);
        let hash = crate::accounts::hash_password(&password)?;
        self.store.add_user(&crate::store::NewUser {
            tenant: None,
            group: None,
            username: "admin".into(),
            password_hash: hash,
            role: "SystemAdmin".into(),
            force_reset: false,
        })?;
        Ok(given.is_none().then_some(password))
    }

    /// Opens the store, loads (or adopts) the kernel program and maps, brings the maps in step
    /// with the store, and attaches to the configured interfaces.
    pub fn start(opts: Options) -> anyhow::Result<Self> {
        let cfg = match &opts.config_path {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        let store = SqliteStore::open(&cfg.database)
            .with_context(|| format!("opening {}", cfg.database.display()))?;
        let mut kernel = Kernel::load(&cfg.pin_dir)?;
        kernel.pin_program()?;
        Self::with_parts(opts, cfg, Box::new(store), Box::new(kernel))
    }

    /// The service over a given store and datapath: [`Service::start`] with the real ones, tests
    /// with [`SqliteStore::memory`] and [`crate::kernel::fake::FakeDatapath`].
    pub fn with_parts(
        opts: Options,
        cfg: Config,
        mut store: Box<dyn Store>,
        kernel: Box<dyn Datapath>,
    ) -> anyhow::Result<Self> {
        store.replace_config_nets(&config_rules(&cfg))?;
        let rules = store.nets()?.into_iter().map(|r| (r.id, r)).collect();
        let sigs = store.sigs()?.into_iter().map(|s| (s.id, s)).collect();
        let mut state = Self {
            opts,
            cfg,
            store,
            kernel,
            rules,
            sigs,
            interfaces: Vec::new(),
            started: Instant::now(),
            calls: Arc::default(),
            calls_gen: 0,
            slow_stats: Arc::default(),
        };
        state.build_calls()?;
        state.push_policy()?;
        state.push_sigs()?;
        tracing::info!(signatures = state.sigs.len(), "signature automata in the kernel");
        let (written, removed) = state.sync_all()?;
        tracing::info!(rules = state.rules.len(), written, removed, "kernel maps in step with the store");
        for iface in state.wanted_interfaces() {
            let mode = state.kernel.attach(&iface, state.cfg.xdp_mode)?;
            tracing::info!(iface, ?mode, "guarding");
            state.interfaces.push(api::Interface { name: iface, mode });
        }
        Ok(state)
    }

    /// The datapath (tests look into a fake one through it).
    pub fn datapath(&self) -> &dyn Datapath {
        self.kernel.as_ref()
    }

    /// The store, for the service's tests.
    #[cfg(test)]
    pub(crate) fn store(&mut self) -> &mut dyn Store {
        self.store.as_mut()
    }

    /// The kernel's event ring and the slow path's hand-up ring with its heartbeat, for the
    /// daemon's reader tasks (each can be taken once).
    pub fn take_rings(&mut self) -> Rings {
        Rings { events: self.kernel.take_events(), handup: self.kernel.take_handup() }
    }

    /// The number-level policy in force, shared with the slow path.
    pub fn live_calls(&self) -> Arc<policy::Live> {
        self.calls.clone()
    }

    /// The slow path's counters.
    pub fn slow_stats(&self) -> Arc<Mutex<slowpath::SlowStats>> {
        self.slow_stats.clone()
    }

    /// The configuration in force.
    pub const fn cfg(&self) -> &Config {
        &self.cfg
    }

    fn wanted_interfaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.cfg.interfaces.iter().chain(&self.opts.interfaces).cloned().collect();
        v.sort();
        v.dedup();
        v
    }

    fn push_policy(&mut self) -> Result<()> {
        self.kernel.set_ports(&self.cfg.port_bits())?;
        self.kernel.set_limits(self.cfg.kernel_limits())?;
        Ok(self.kernel.set_config(self.kernel_config())?)
    }

    /// The kernel's policy record: the configuration's, plus the hand-up flags the number-level
    /// rules in force ask for.
    fn kernel_config(&self) -> callguard_common::KernelConfig {
        use callguard_common::config::{FLAG_HANDUP_INVITE, FLAG_HANDUP_REGISTER};
        let mut k = self.cfg.kernel_config();
        let p = self.calls.get();
        if p.wants_invites() {
            k.flags |= FLAG_HANDUP_INVITE;
        }
        if p.wants_registers() {
            k.flags |= FLAG_HANDUP_REGISTER;
        }
        k
    }

    /// Compiles the number-level policy from the store and puts it in force.
    fn build_calls(&mut self) -> Result<()> {
        let generation = self.store.calls_generation()?;
        let p = policy::CallPolicy::build(
            &self.cfg.calls,
            self.store.border_rules()?,
            self.store.numbers()?,
            self.store.codes()?,
            &self.store.countries()?,
            self.store.code_owners()?,
        );
        tracing::info!(policy = ?p.summary(), "number-level call checks in force");
        self.calls.set(p);
        self.calls_gen = generation;
        Ok(())
    }

    /// Rebuilds the number-level policy when its rules changed in the store (whoever changed
    /// them), and tells the kernel whether to hand requests up. Called after every API request.
    pub fn refresh_calls(&mut self) -> Result<()> {
        if self.store.calls_generation()? == self.calls_gen {
            return Ok(());
        }
        self.build_calls()?;
        Ok(self.kernel.set_config(self.kernel_config())?)
    }

    /// What the rules in force would do with `message` from `source` (`callguard explain`).
    pub fn explain(&self, req: &api::ExplainRequest) -> Result<api::Explained> {
        let m = message::parse(req.message.as_bytes()).map_err(|e| ServiceError::invalid("message", e.0))?;
        let facts = policy::Facts::read(&m, req.source).map_err(|e| ServiceError::invalid("message", e.0))?;
        let policy = self.calls.get();
        let allowed = self.check(req.source).verdict == api::CheckVerdict::Allow;
        let handed_up = !allowed
            && match facts.method.as_str() {
                "INVITE" => policy.wants_invites() && !facts.in_dialog,
                "REGISTER" => policy.wants_registers(),
                _ => false,
            };
        let decision = policy.decide(&facts, Utc::now());
        Ok(api::Explained { handed_up, facts: Some(facts), decision })
    }

    /// Compiles the signatures and installs them (the bank switch makes it atomic).
    fn push_sigs(&mut self) -> Result<()> {
        let all: Vec<Signature> = self.sigs.values().cloned().collect();
        let compiled = sig::compile(&all).map_err(|e| ServiceError::invalid("text", e.to_string()))?;
        Ok(self.kernel.set_signatures(&compiled)?)
    }

    /// Adds one signature: store, then kernel. Its counter starts from zero.
    pub fn add_sig(&mut self, new: &sig::NewSignature) -> Result<api::SigRow> {
        new.validate().map_err(|m| ServiceError::invalid("text", m))?;
        if new.comment.chars().count() > COMMENT_MAX {
            return Err(ServiceError::invalid("comment", format!("longer than {COMMENT_MAX} characters")));
        }
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

    /// Stores the ban the kernel imposed on a source (event kind `BAN_*`) as a deny rule with
    /// expiry, origin `auto`, then bans its /24 or /48 when enough of its neighbours are banned.
    /// Returns what was done, for the event's detail.
    pub fn auto_ban(&mut self, source: IpAddr, kind: u8, sig_slot: u16) -> String {
        let now = Utc::now();
        let single = match source {
            IpAddr::V4(a) => IpNet::new(IpAddr::V4(a), 32),
            IpAddr::V6(a) => IpNet::new(IpAddr::V6(a), 64),
        };
        let Ok(single) = single else { return "bad address".into() };
        if let Some(r) = net::decide(self.rules.values(), source, now) {
            return match r.action {
                NetAction::Allow => format!("not stored: {} is authorized (rule {})", r.cidr, r.id),
                NetAction::Deny => format!("already denied by {} (rule {})", r.cidr, r.id),
            };
        }
        let why = match kind {
            event::BAN_ENUM => format!(
                "auto: more than {} distinct To values in {} s",
                self.cfg.enumeration.users, self.cfg.enumeration.window_secs
            ),
            event::BAN_SIGNATURE => match self.sigs.values().find(|s| s.slot == sig_slot) {
                Some(s) => format!(
                    "auto: matched signature {} ({} {} `{}`)",
                    s.id,
                    s.sig.field.name(),
                    s.sig.matches.name(),
                    s.sig.text
                ),
                None => "auto: matched a signature since deleted".into(),
            },
            _ => format!("auto: kept exceeding rate limits for {} s", self.cfg.rate.ban_after_secs),
        };
        let secs = i64::try_from(self.cfg.rate.ban_secs).unwrap_or(i64::MAX);
        let mut detail = match self.add_auto(single, secs, why) {
            Ok(id) => format!("deny {single} for {secs} s (rule {id})"),
            Err(e) => return format!("storing the ban failed: {e:#}"),
        };
        // Subnet escalation.
        let n = self.cfg.rate.escalate_after;
        let wide = match source {
            IpAddr::V4(a) => IpNet::new(IpAddr::V4(a), 24).ok().map(|n| n.trunc()),
            IpAddr::V6(a) => IpNet::new(IpAddr::V6(a), 48).ok().map(|n| n.trunc()),
        };
        if n > 0
            && let Some(wide) = wide
        {
            let banned = self
                .rules
                .values()
                .filter(|r| r.origin == Origin::Auto && r.action == NetAction::Deny && r.is_live(now))
                .filter(|r| r.cidr.prefix_len() > wide.prefix_len() && wide.contains(&r.cidr))
                .count();
            let covered = self.rules.values().any(|r| r.cidr == wide && r.is_live(now));
            if banned >= n as usize && !covered {
                let secs = i64::try_from(self.cfg.rate.escalate_ban_secs).unwrap_or(i64::MAX);
                let why = format!("auto: {banned} banned sources in this /{}", wide.prefix_len());
                match self.add_auto(wide, secs, why) {
                    Ok(id) => detail += &format!("; escalated: deny {wide} for {secs} s (rule {id})"),
                    Err(e) => detail += &format!("; escalating to {wide} failed: {e:#}"),
                }
            }
        }
        detail
    }

    fn add_auto(&mut self, cidr: IpNet, secs: i64, comment: String) -> anyhow::Result<u32> {
        let rule = NewNetRule {
            cidr,
            action: NetAction::Deny,
            scope: net::Scope::Sip,
            expires_at: Some(Utc::now() + chrono::Duration::seconds(secs)),
            comment,
            origin: Origin::Auto,
        };
        let stored = self.store.upsert_nets(std::slice::from_ref(&rule))?.remove(0);
        let id = stored.id;
        self.rules.insert(id, stored);
        self.sync_nets(&BTreeSet::from([cidr]))?;
        Ok(id)
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

    fn sync_all(&mut self) -> Result<(usize, usize)> {
        let compiled = net::compile(self.rules.values(), &Clock::now());
        Ok(self.kernel.apply_nets(&compiled)?)
    }

    /// The kernel changes that bring the entries of `nets` in step with `rules`.
    fn changes_for<'a>(
        rules: impl IntoIterator<Item = &'a NetRule>,
        nets: &BTreeSet<IpNet>,
    ) -> Vec<(IpNet, Option<NetEntry>)> {
        let affected = rules.into_iter().filter(|r| nets.contains(&r.cidr));
        let compiled = net::compile(affected, &Clock::now());
        nets.iter().map(|n| (*n, compiled.get(n).copied())).collect()
    }

    /// Recompiles the kernel entries of the given networks only.
    fn sync_nets(&mut self, nets: &BTreeSet<IpNet>) -> Result<(), KernelError> {
        let changes = Self::changes_for(self.rules.values(), nets);
        self.kernel.check_room(&changes)?;
        self.kernel.apply_changes(&changes, &mut |_| {})?;
        Ok(())
    }

    /// Puts the store and the cache back as they were before a change whose kernel half failed:
    /// removes the rules the change created (`added`), puts `previous` back with their ids, and
    /// rewrites the kernel entries of `nets` from the restored rules, so what the kernel took of
    /// the change is undone too. Returns the kernel's error, for the caller.
    fn undo_nets(
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
            if spec.comment.chars().count() > COMMENT_MAX {
                return Err(ServiceError::invalid(
                    &field("comment"),
                    format!("longer than {COMMENT_MAX} characters"),
                ));
            }
            if spec.expires_at.is_some_and(|t| t <= Utc::now()) {
                return Err(ServiceError::invalid(&field("expires_at"), "already in the past"));
            }
            new.push(NewNetRule {
                cidr,
                action: spec.action,
                scope: spec.scope,
                expires_at: spec.expires_at,
                comment: spec.comment.clone(),
                origin,
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
        let victims: Vec<(u32, IpNet)> =
            victims.iter().filter(|r| r.origin != Origin::Config).map(|r| (r.id, r.cidr)).collect();
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
        }
        Ok(api::Removed { count })
    }

    /// Removes rules and blacklisted numbers whose expiry has passed (the kernel already
    /// ignores expired rules), and sessions whose refresh token expired.
    pub fn sweep(&mut self) -> anyhow::Result<usize> {
        let now = Utc::now();
        let numbers = self.store.sweep_numbers(now)?;
        self.store.purge_sessions(now)?;
        self.refresh_calls()?;
        let expired: Vec<(u32, IpNet)> =
            self.rules.values().filter(|r| !r.is_live(now)).map(|r| (r.id, r.cidr)).collect();
        if expired.is_empty() {
            return Ok(numbers);
        }
        let ids: Vec<u32> = expired.iter().map(|e| e.0).collect();
        self.store.delete_nets(&ids)?;
        for id in &ids {
            self.rules.remove(id);
        }
        self.sync_nets(&expired.iter().map(|e| e.1).collect())?;
        Ok(ids.len() + numbers)
    }

    /// Re-reads the configuration file and applies only the difference. An invalid file
    /// changes nothing.
    pub fn reload(&mut self) -> anyhow::Result<api::Reloaded> {
        let cfg = match &self.opts.config_path {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        if cfg.pin_dir != self.cfg.pin_dir
            || cfg.database != self.cfg.database
            || cfg.socket != self.cfg.socket
            || cfg.api.listen != self.cfg.api.listen
            || cfg.api.tls_cert != self.cfg.api.tls_cert
            || cfg.api.tls_key != self.cfg.api.tls_key
        {
            anyhow::bail!(
                "pin_dir, database, socket and api.listen/tls_cert/tls_key take effect only on restart; nothing was changed"
            );
        }
        self.store.replace_config_nets(&config_rules(&cfg))?;
        self.rules = self.store.nets()?.into_iter().map(|r| (r.id, r)).collect();
        self.cfg = cfg;
        let (written, removed) = self.sync_all()?;
        self.build_calls()?;
        self.push_policy()?;
        let wanted = self.wanted_interfaces();
        let mut attached = Vec::new();
        for iface in &wanted {
            if !self.interfaces.iter().any(|i| &i.name == iface) {
                let mode = self.kernel.attach(iface, self.cfg.xdp_mode)?;
                self.interfaces.push(api::Interface { name: iface.clone(), mode });
                attached.push(iface.clone());
            }
        }
        let detached: Vec<String> =
            self.interfaces.iter().filter(|i| !wanted.contains(&i.name)).map(|i| i.name.clone()).collect();
        for iface in &detached {
            self.kernel.detach(iface)?;
        }
        self.interfaces.retain(|i| wanted.contains(&i.name));
        tracing::info!(written, removed, ?attached, ?detached, "configuration reloaded");
        Ok(api::Reloaded { written, removed, attached, detached })
    }

    pub fn status(&self) -> api::Status {
        let allow = self.rules.values().filter(|r| r.action == NetAction::Allow).count();
        api::Status {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            pin_dir: self.cfg.pin_dir.display().to_string(),
            database: self.cfg.database.display().to_string(),
            config: self.opts.config_path.as_ref().map(|p| p.display().to_string()),
            interfaces: self.interfaces.clone(),
            allow_rules: allow,
            deny_rules: self.rules.len() - allow,
            kernel_entries: self.kernel.nets().len(),
            udp_ports: self.cfg.ports.udp.iter().map(ToString::to_string).collect(),
            tcp_ports: self.cfg.ports.tcp.iter().map(ToString::to_string).collect(),
        }
    }

    pub fn stats(&self) -> anyhow::Result<api::Stats> {
        let reasons = self
            .kernel
            .stats()?
            .into_iter()
            .map(|(a, r, c)| api::ReasonCount {
                action: a.name().into(),
                reason: r.name().into(),
                description: r.describe().trim().into(),
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect();
        let mut rules: Vec<api::RuleCount> = self
            .kernel
            .rule_stats()?
            .into_iter()
            .map(|(id, c)| {
                let r = self.rules.get(&id);
                api::RuleCount {
                    id,
                    cidr: r.map(|r| r.cidr),
                    action: r.map(|r| r.action),
                    packets: c.packets,
                    bytes: c.bytes,
                }
            })
            .collect();
        rules.sort_by_key(|r| std::cmp::Reverse(r.packets));
        let mut sigs: Vec<api::SigRow> = self.sig_rows()?.into_iter().filter(|s| s.packets != 0).collect();
        sigs.sort_by_key(|s| std::cmp::Reverse(s.packets));
        let slow_path = self.slow_stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        Ok(api::Stats { reasons, rules, sigs, slow_path, calls: self.calls.get().summary() })
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
}

impl Service {
    fn forget_source(&mut self, net: IpNet) {
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

fn config_rules(cfg: &Config) -> Vec<NewNetRule> {
    cfg.networks
        .iter()
        .map(|n| NewNetRule {
            cidr: n.cidr,
            action: n.action,
            scope: n.scope,
            expires_at: n.expires,
            comment: n.comment.clone(),
            origin: Origin::Config,
        })
        .collect()
}

pub mod access;
pub mod accounts;
pub mod auth;
pub mod calls;

#[cfg(test)]
mod tests;
