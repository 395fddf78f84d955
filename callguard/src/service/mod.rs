//! The rule service: the one way every rule change reaches the store and the kernel.
//!
//! All state sits behind one mutex (the daemon's): every change is store first (one
//! transaction), then kernel, so an acknowledged change is durable and enforced before the
//! answer leaves. Errors are [`ServiceError`]s that know nothing of HTTP; the web layer maps
//! them to statuses in one place (`web::error`).
//!
//! | what | file |
//! |---|---|
//! | the service, its errors, start, the number-level policy, reload, status, counters | `mod.rs` |
//! | network rules, automatic bans, the way of a change to the kernel | `nets.rs` |
//! | scanner signatures | `sigs.rs` |
//! | number-level call rules and authorization codes | `calls.rs` |
//! | accounts: tenants, groups, users, roles, sessions, keys | `accounts.rs` |
//! | who a credential names; sign-in, tokens, password reset | `auth.rs` |
//! | the caller and its rights | `access.rs` |

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use chrono::Utc;
use ipnet::IpNet;

use crate::{
    api::control as api,
    calls::{message, policy, slowpath},
    config::Config,
    kernel::{
        Kernel,
        datapath::{Datapath, KernelError},
    },
    net::{NetAction, NetRule, NewNetRule, Origin, Profile},
    sig::Signature,
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
    pub handup: Option<crate::kernel::datapath::HandUpMaps>,
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

/// Bans stored and lifted since the daemon started, by cause.
#[derive(Clone, Debug, Default)]
pub struct BanCounts {
    /// Stored, by cause: a kernel ban's (`rate`, `enumeration`, `signature`, `authentication`),
    /// `fraud`, or `escalation` (a network whose banned sources reached `rate.escalate_after`).
    pub made: BTreeMap<&'static str, u64>,
    /// Lifted, by cause: `expired`, `evicted` (to make room: `rate.max_auto_bans`), `removed`
    /// (by an operator).
    pub lifted: BTreeMap<&'static str, u64>,
}

impl BanCounts {
    /// Every cause of [`BanCounts::made`].
    pub const CAUSES: [&'static str; 6] =
        ["rate", "enumeration", "signature", "authentication", "fraud", "escalation"];
    /// Every cause of [`BanCounts::lifted`].
    pub const LIFTS: [&'static str; 3] = ["expired", "evicted", "removed"];

    fn made(&mut self, cause: &'static str, n: usize) {
        *self.made.entry(cause).or_default() += n as u64;
    }

    fn lifted(&mut self, cause: &'static str, n: usize) {
        if n > 0 {
            *self.lifted.entry(cause).or_default() += n as u64;
        }
    }
}

/// Configuration reloads (SIGHUP, `callguard reload`) since the daemon started.
#[derive(Clone, Copy, Debug)]
pub struct Reloads {
    /// Reloads applied.
    pub applied: u64,
    /// Reloads refused (an invalid file, a change that needs a restart: nothing changed), or
    /// failed part way (the kernel refused a change; the log says what).
    pub refused: u64,
    /// The last reload applied, or the start.
    pub last: chrono::DateTime<Utc>,
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
    /// The slow path's time per request.
    slow_latency: slowpath::Latency,
    /// Automatic bans evicted to make room (`rate.max_auto_bans`) since the start.
    evicted_bans: u64,
    /// Bans stored and lifted since the start.
    bans: BanCounts,
    /// Configuration reloads since the start.
    reloads: Reloads,
    /// Sources proven to receive at their address (noted by the slow path).
    proven: Arc<crate::calls::proven::Proven>,
    /// The daemon's hold on the pin directory ([`Service::start`]; none over a given datapath).
    _pins: Option<crate::kernel::PinDirLock>,
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
            // A generated password was written to a file: it must be replaced at the first
            // sign-in. One the operator chose is theirs.
            force_reset: given.is_none(),
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
        // First: a second daemon must stop before it touches the store or the maps.
        let pins = crate::kernel::PinDirLock::take(&cfg.pin_dir)?;
        let store = SqliteStore::open(&cfg.database)
            .with_context(|| format!("opening {}", cfg.database.display()))?;
        let mut kernel = Kernel::load(&cfg.pin_dir, &cfg.tables)?;
        kernel.pin_program()?;
        let mut service = Self::with_parts(opts, cfg, Box::new(store), Box::new(kernel))?;
        service._pins = Some(pins);
        Ok(service)
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
        Self::drop_orphan_lists(store.as_mut(), &cfg.feeds)?;
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
            slow_latency: slowpath::Latency::default(),
            proven: Arc::default(),
            evicted_bans: 0,
            bans: BanCounts::default(),
            reloads: Reloads { applied: 0, refused: 0, last: Utc::now() },
            _pins: None,
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
        if let Some(u) = state.kernel.settle()? {
            for c in &u.carried {
                match &c.not_carried {
                    None => tracing::info!(map = c.map, entries = c.entries, "carried over"),
                    Some(why) => tracing::warn!(map = c.map, "not carried over: {why}"),
                }
            }
            let maps: Vec<&str> = u.changed.iter().map(|c| c.map.as_str()).collect();
            tracing::info!(
                ?maps,
                "upgraded in place: the program runs with the new maps, the old ones are gone"
            );
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

    /// The slow path's time per request (a histogram shared with it).
    pub fn slow_latency(&self) -> slowpath::Latency {
        self.slow_latency.clone()
    }

    /// The sources proven to receive at their address, for the slow path to note them in.
    pub fn proven(&self) -> Arc<crate::calls::proven::Proven> {
        self.proven.clone()
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

    /// The fraud thresholds in force: the API's when written (they are kept in the store), else
    /// the configuration file's `[calls.fraud]`.
    pub fn fraud_thresholds(&self) -> Result<api::FraudThresholds> {
        let stored = self.store.fraud_thresholds()?;
        let api = stored.and_then(|(body, at)| match serde_json::from_str::<crate::config::Fraud>(&body) {
            Ok(f) => Some((f, at)),
            Err(e) => {
                tracing::warn!("the fraud thresholds in the store cannot be read ({e}): the file's apply");
                None
            }
        });
        Ok(match api {
            Some((thresholds, at)) => {
                api::FraudThresholds { origin: "api".into(), updated_at: Some(at), thresholds }
            }
            None => api::FraudThresholds {
                origin: "config".into(),
                updated_at: None,
                thresholds: self.cfg.calls.fraud.clone(),
            },
        })
    }

    /// Writes the fraud thresholds (`None`: removes the API's, so that the configuration
    /// file's apply again), then puts them in force for the next call.
    pub fn set_fraud_thresholds(&mut self, t: Option<&crate::config::Fraud>) -> Result<api::FraudThresholds> {
        if let Some(t) = t {
            t.validate().map_err(|m| ServiceError::invalid("thresholds", m))?;
        }
        let body = t
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| ServiceError::invalid("thresholds", e.to_string()))?;
        self.store.set_fraud_thresholds(body.as_deref())?;
        self.refresh_calls()?;
        self.fraud_thresholds()
    }

    /// Compiles the number-level policy from the store and puts it in force.
    fn build_calls(&mut self) -> Result<()> {
        let generation = self.store.calls_generation()?;
        let calls =
            crate::config::Calls { fraud: self.fraud_thresholds()?.thresholds, ..self.cfg.calls.clone() };
        let p = policy::CallPolicy::build(
            &calls,
            self.store.border_rules()?,
            self.store.numbers()?,
            self.store.codes()?,
            &self.store.countries()?,
            self.store.callers()?,
            &[crate::accounts::builtin_roles(), self.store.custom_roles()?].concat(),
            &self.store.nets()?,
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
        let mut facts =
            policy::Facts::read(&m, req.source).map_err(|e| ServiceError::invalid("message", e.0))?;
        let policy = self.calls.get();
        let allowed = self.check(req.source).verdict == api::CheckVerdict::Allow;
        if allowed {
            facts.profile = policy.profile_of(req.source, Utc::now());
        }
        let profiled = matches!(facts.profile, Some(Profile::Trunk | Profile::Phones));
        let handed_up = match facts.method.as_str() {
            // From a profiled network every INVITE goes up (the daemon passes in-dialog ones).
            "INVITE" => policy.wants_invites() && (profiled || (!allowed && !facts.in_dialog)),
            "REGISTER" => !allowed && policy.wants_registers(),
            _ => false,
        };
        let decision = policy.decide(&facts, Utc::now());
        Ok(api::Explained { handed_up, facts: Some(facts), decision })
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
            if self.rules.remove(id).is_some_and(|r| r.origin == Origin::Auto) {
                self.bans.lifted("expired", 1);
            }
        }
        self.sync_nets(&expired.iter().map(|e| e.1).collect())?;
        Ok(ids.len() + numbers)
    }

    /// Re-reads the configuration file and applies only the difference. An invalid file
    /// changes nothing.
    pub fn reload(&mut self) -> anyhow::Result<api::Reloaded> {
        let done = self.apply_reload();
        match done {
            Ok(_) => {
                self.reloads.applied += 1;
                self.reloads.last = Utc::now();
            }
            Err(_) => self.reloads.refused += 1,
        }
        done
    }

    fn apply_reload(&mut self) -> anyhow::Result<api::Reloaded> {
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
            || cfg.metrics != self.cfg.metrics
            || cfg.tables != self.cfg.tables
        {
            anyhow::bail!(
                "pin_dir, database, socket, api.listen/tls_cert/tls_key, [metrics] and [tables] take effect only \
                 on restart (a restart with new [tables] rebuilds them without a moment unfiltered); nothing \
                 was changed"
            );
        }
        self.store.replace_config_nets(&config_rules(&cfg))?;
        Self::drop_orphan_lists(self.store.as_mut(), &cfg.feeds)?;
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

    /// Bans stored and lifted since the start.
    pub const fn ban_counts(&self) -> &BanCounts {
        &self.bans
    }

    /// Configuration reloads since the start.
    pub const fn reloads(&self) -> Reloads {
        self.reloads
    }

    /// When the daemon started.
    pub const fn started(&self) -> Instant {
        self.started
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
            auto_bans: self.rules.values().filter(|r| r.origin == Origin::Auto).count(),
            max_auto_bans: self.cfg.rate.max_auto_bans,
            auto_bans_evicted: self.evicted_bans,
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
        let seen = self.kernel.answers()?;
        let answers = api::AnswerStats {
            responses: seen.counts[callguard_common::answer::counter::RESPONSES as usize],
            registrations: seen.counts[callguard_common::answer::counter::REGISTRATIONS as usize],
            registered_sources: seen.registered,
        };
        let b = self.kernel.event_budget()?;
        let events = api::EventStats { drops: b.drops, written: b.written, suppressed: b.suppressed };
        Ok(api::Stats { reasons, rules, sigs, slow_path, calls: self.calls.get().summary(), answers, events })
    }
}

impl Service {}

fn config_rules(cfg: &Config) -> Vec<NewNetRule> {
    cfg.networks
        .iter()
        .map(|n| NewNetRule {
            cidr: n.cidr,
            action: n.action,
            scope: n.scope,
            profile: n.profile,
            expires_at: n.expires,
            comment: n.comment.clone(),
            origin: Origin::Config,
            list: None,
        })
        .collect()
}

pub mod access;
pub mod accounts;
pub mod auth;
pub mod calls;
pub mod lists;
mod nets;
mod sigs;
pub mod sso;

#[cfg(test)]
mod tests;
