//! The daemon: owns the rule store and the kernel maps, keeps them in step, serves the control
//! API on a root-only Unix socket, sweeps expired rules, and reloads its configuration on SIGHUP.
//!
//! All state sits behind one mutex ([`State`]): every change is store first (one transaction),
//! then kernel, so an acknowledged change is durable and enforced before the answer leaves.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{Query, State as AxState, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use callguard_common::{NetEntry, limits::event};
use chrono::Utc;
use ipnet::IpNet;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    api::{self, ApiError},
    calls::{message, policy, slowpath},
    clock::Clock,
    config::Config,
    events::{self, Hub},
    kernel::{self, Kernel},
    net::{self, NetAction, NetRule, NewNetRule, Origin, parse_net},
    sig::{self, Signature},
    store::{SqliteStore, Store, StoreError},
};

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

/// Everything the daemon owns.
#[derive(Debug)]
pub struct State {
    opts: Options,
    cfg: Config,
    store: Box<dyn Store>,
    kernel: Kernel,
    /// The store's rules by id (a cache: the store is the truth).
    rules: BTreeMap<u32, NetRule>,
    /// The store's signatures by id (a cache, as `rules`).
    sigs: BTreeMap<u32, Signature>,
    interfaces: Vec<api::control::Interface>,
    started: Instant,
    /// The number-level policy in force, shared with the slow path.
    calls: Arc<policy::Live>,
    /// The store's `calls_generation` the policy in force was built at.
    calls_gen: u64,
    /// The slow path's counters.
    slow_stats: Arc<Mutex<slowpath::SlowStats>>,
}

/// A failed request: status and body.
#[derive(Debug)]
pub struct Failure(pub(crate) StatusCode, pub(crate) ApiError);

impl Failure {
    /// 400, naming the offending field.
    pub fn bad(field: &str, msg: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, ApiError { error: msg.into(), field: Some(field.into()) })
    }
    /// 404, naming the field that named what is missing.
    pub fn not_found(field: &str, msg: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, ApiError { error: msg.into(), field: Some(field.into()) })
    }
    /// 401: no valid credentials.
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self(StatusCode::UNAUTHORIZED, ApiError { error: msg.into(), field: None })
    }
    /// 403: valid credentials without the right.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self(StatusCode::FORBIDDEN, ApiError { error: msg.into(), field: None })
    }
    /// 409: the request conflicts with what is stored.
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self(StatusCode::CONFLICT, ApiError { error: msg.into(), field: None })
    }
    /// The status.
    pub const fn status(&self) -> StatusCode {
        self.0
    }
    /// The body.
    pub const fn body(&self) -> &ApiError {
        &self.1
    }
    /// 500, logged.
    pub fn internal(e: &anyhow::Error) -> Self {
        tracing::error!("{e:#}");
        Self(StatusCode::INTERNAL_SERVER_ERROR, ApiError { error: format!("{e:#}"), field: None })
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self(StatusCode::CONFLICT, ApiError { error: m, field: None }),
            e => Self::internal(&e.into()),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut res = (self.0, Json(self.1)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        res
    }
}

type Answer<T> = Result<Json<T>, Failure>;

impl State {
    /// Opens the store, loads (or adopts) the kernel program and maps, brings the maps in step
    /// with the store, and attaches to the configured interfaces.
    pub fn start(opts: Options) -> anyhow::Result<Self> {
        let cfg = match &opts.config_path {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        let mut store: Box<dyn Store> = Box::new(
            SqliteStore::open(&cfg.database)
                .with_context(|| format!("opening {}", cfg.database.display()))?,
        );
        store.replace_config_nets(&config_rules(&cfg))?;
        let rules = store.nets()?.into_iter().map(|r| (r.id, r)).collect();
        let mut kernel = Kernel::load(&cfg.pin_dir)?;
        kernel.pin_program()?;
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
            state.interfaces.push(api::control::Interface { name: iface, mode });
        }
        Ok(state)
    }

    /// The store (for the management API).
    pub(crate) fn store(&mut self) -> &mut dyn Store {
        self.store.as_mut()
    }

    /// The configuration in force.
    pub(crate) const fn cfg(&self) -> &Config {
        &self.cfg
    }

    fn wanted_interfaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.cfg.interfaces.iter().chain(&self.opts.interfaces).cloned().collect();
        v.sort();
        v.dedup();
        v
    }

    fn push_policy(&mut self) -> anyhow::Result<()> {
        self.kernel.set_ports(&self.cfg.port_bits())?;
        self.kernel.set_limits(self.cfg.kernel_limits())?;
        self.kernel.set_config(self.kernel_config())
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
    fn build_calls(&mut self) -> anyhow::Result<()> {
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
    pub(crate) fn refresh_calls(&mut self) -> anyhow::Result<()> {
        if self.store.calls_generation()? == self.calls_gen {
            return Ok(());
        }
        self.build_calls()?;
        self.kernel.set_config(self.kernel_config())
    }

    /// What the rules in force would do with `message` from `source` (`callguard explain`).
    pub fn explain(&self, req: &api::control::ExplainRequest) -> Result<api::control::Explained, Failure> {
        let m = message::parse(req.message.as_bytes()).map_err(|e| Failure::bad("message", e.0))?;
        let facts = policy::Facts::read(&m, req.source).map_err(|e| Failure::bad("message", e.0))?;
        let policy = self.calls.get();
        let allowed = self.check(req.source).verdict == "allow";
        let handed_up = !allowed
            && match facts.method.as_str() {
                "INVITE" => policy.wants_invites() && !facts.in_dialog,
                "REGISTER" => policy.wants_registers(),
                _ => false,
            };
        let decision = policy.decide(&facts, Utc::now());
        Ok(api::control::Explained { handed_up, facts: Some(facts), decision })
    }

    /// Compiles the signatures and installs them (the bank switch makes it atomic).
    fn push_sigs(&mut self) -> anyhow::Result<()> {
        let all: Vec<Signature> = self.sigs.values().cloned().collect();
        let compiled = sig::compile(&all)?;
        self.kernel.set_signatures(&compiled)
    }

    /// Adds one signature: store, then kernel. Its counter starts from zero.
    pub fn add_sig(&mut self, new: &sig::NewSignature) -> Result<api::control::SigRow, Failure> {
        new.validate().map_err(|m| Failure::bad("text", m))?;
        if new.comment.chars().count() > COMMENT_MAX {
            return Err(Failure::bad("comment", format!("longer than {COMMENT_MAX} characters")));
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
        sig::compile(&trial).map_err(|e| Failure::bad("text", e.to_string()))?;
        let stored = self.store.add_sigs(std::slice::from_ref(new), "operator")?.remove(0);
        self.kernel.clear_sig_stats(stored.slot).map_err(|e| Failure::internal(&e))?;
        self.sigs.insert(stored.id, stored.clone());
        self.push_sigs().map_err(|e| Failure::internal(&e))?;
        Ok(api::control::SigRow { sig: stored, packets: 0, bytes: 0 })
    }

    /// Deletes signatures by id (404 when none of them exists).
    pub fn del_sigs(&mut self, req: &api::control::DelSigs) -> Result<api::control::Removed, Failure> {
        let ids: Vec<u32> = req.ids.iter().copied().filter(|id| self.sigs.contains_key(id)).collect();
        if ids.is_empty() {
            return Err(Failure::not_found("ids", "no such signature"));
        }
        let count = self.store.delete_sigs(&ids)?;
        for id in &ids {
            self.sigs.remove(id);
        }
        self.push_sigs().map_err(|e| Failure::internal(&e))?;
        Ok(api::control::Removed { count })
    }

    /// Switches a signature between enforce and dry-run.
    pub fn set_sig_mode(&mut self, req: &api::control::SetSigMode) -> Result<api::control::SigRow, Failure> {
        let Some(stored) = self.store.set_sig_mode(req.id, req.mode)? else {
            return Err(Failure::not_found("id", "no such signature"));
        };
        self.sigs.insert(stored.id, stored.clone());
        self.push_sigs().map_err(|e| Failure::internal(&e))?;
        let c = self.kernel.sig_stats([stored.slot]).map_err(|e| Failure::internal(&e))?;
        let c = c.get(&stored.slot).copied().unwrap_or_default();
        Ok(api::control::SigRow { sig: stored, packets: c.packets, bytes: c.bytes })
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
    fn name_slots(&self, e: &callguard_common::limits::Event, rec: &mut events::EventRecord) {
        if e.rule_slot != 0 {
            rec.rule = self.kernel.rule_for_slot(e.rule_slot);
        }
        if e.sig_slot != 0 {
            rec.signature = self.sigs.values().find(|s| s.slot == e.sig_slot).map(|s| s.id);
        }
    }

    /// Every signature with its counters.
    fn sig_rows(&self) -> anyhow::Result<Vec<api::control::SigRow>> {
        let counts = self.kernel.sig_stats(self.sigs.values().map(|s| s.slot))?;
        Ok(self
            .sigs
            .values()
            .map(|s| {
                let c = counts.get(&s.slot).copied().unwrap_or_default();
                api::control::SigRow { sig: s.clone(), packets: c.packets, bytes: c.bytes }
            })
            .collect())
    }

    fn sync_all(&mut self) -> anyhow::Result<(usize, usize)> {
        let compiled = net::compile(self.rules.values(), &Clock::now());
        self.kernel.apply_nets(&compiled)
    }

    /// Recompiles the kernel entries of the given networks only.
    fn sync_nets(&mut self, nets: &BTreeSet<IpNet>) -> anyhow::Result<()> {
        let affected = self.rules.values().filter(|r| nets.contains(&r.cidr));
        let compiled = net::compile(affected, &Clock::now());
        let changes: Vec<(IpNet, Option<NetEntry>)> =
            nets.iter().map(|n| (*n, compiled.get(n).copied())).collect();
        self.kernel.apply_changes(&changes, |_| {})?;
        Ok(())
    }

    /// Adds or updates rules: store (one transaction), then kernel.
    pub fn add_nets(&mut self, req: &api::control::AddNets) -> Result<api::control::Added, Failure> {
        let t0 = Instant::now();
        let origin = if req.import { Origin::Import } else { Origin::Manual };
        let mut new = Vec::with_capacity(req.rules.len());
        for (i, spec) in req.rules.iter().enumerate() {
            let field = |name: &str| {
                if req.rules.len() == 1 { name.to_owned() } else { format!("rules[{i}].{name}") }
            };
            let cidr = parse_net(&spec.cidr).map_err(|m| Failure::bad(&field("cidr"), m))?;
            if spec.comment.chars().count() > COMMENT_MAX {
                return Err(Failure::bad(&field("comment"), format!("longer than {COMMENT_MAX} characters")));
            }
            if spec.expires_at.is_some_and(|t| t <= Utc::now()) {
                return Err(Failure::bad(&field("expires_at"), "already in the past"));
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
        let stored = self.store.upsert_nets(&new)?;
        let nets: BTreeSet<IpNet> = stored.iter().map(|r| r.cidr).collect();
        let count = stored.len();
        for r in &stored {
            self.rules.insert(r.id, r.clone());
        }
        self.sync_nets(&nets).map_err(|e| Failure::internal(&e))?;
        let rules = if count < 100 { stored } else { Vec::new() };
        Ok(api::control::Added { count, rules, applied_ms: t0.elapsed().as_millis() as u64 })
    }

    /// Deletes rules chosen by network, containment or all.
    pub fn del_nets(&mut self, req: &api::control::DelNets) -> Result<api::control::Removed, Failure> {
        let chosen = [req.cidr.is_some(), req.contains.is_some(), req.all].iter().filter(|b| **b).count();
        if chosen != 1 {
            return Err(Failure::bad("cidr", "give exactly one of cidr, contains, all"));
        }
        let cidr = req.cidr.as_deref().map(parse_net).transpose().map_err(|m| Failure::bad("cidr", m))?;
        let contains = req
            .contains
            .as_deref()
            .map(|s| {
                s.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| Failure::bad("contains", format!("`{s}` is not an IP address")))
            })
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
            return Err(Failure(
                StatusCode::CONFLICT,
                ApiError {
                    error: format!(
                        "{} {} is set in the configuration file; remove it there",
                        r.action, r.cidr
                    ),
                    field: None,
                },
            ));
        }
        let victims: Vec<(u32, IpNet)> =
            victims.iter().filter(|r| r.origin != Origin::Config).map(|r| (r.id, r.cidr)).collect();
        if victims.is_empty() && cidr.is_some() {
            return Err(Failure::not_found("cidr", "no such rule"));
        }
        let ids: Vec<u32> = victims.iter().map(|v| v.0).collect();
        let count = self.store.delete_nets(&ids)?;
        for id in &ids {
            if let Some(r) = self.rules.remove(id)
                && r.origin == Origin::Auto
            {
                // Deleting an automatic ban lifts the kernel's own ban of that source too.
                self.forget_source(r.cidr);
            }
        }
        let nets: BTreeSet<IpNet> = victims.iter().map(|v| v.1).collect();
        self.sync_nets(&nets).map_err(|e| Failure::internal(&e))?;
        Ok(api::control::Removed { count })
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
    pub fn reload(&mut self) -> anyhow::Result<api::control::Reloaded> {
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
                self.interfaces.push(api::control::Interface { name: iface.clone(), mode });
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
        Ok(api::control::Reloaded { written, removed, attached, detached })
    }

    fn status(&self) -> api::control::Status {
        let allow = self.rules.values().filter(|r| r.action == NetAction::Allow).count();
        api::control::Status {
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

    fn stats(&self) -> anyhow::Result<api::control::Stats> {
        let reasons = self
            .kernel
            .stats()?
            .into_iter()
            .map(|(a, r, c)| api::control::ReasonCount {
                action: a.name().into(),
                reason: r.name().into(),
                description: r.describe().trim().into(),
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect();
        let mut rules: Vec<api::control::RuleCount> = self
            .kernel
            .rule_stats()?
            .into_iter()
            .map(|(id, c)| {
                let r = self.rules.get(&id);
                api::control::RuleCount {
                    id,
                    cidr: r.map(|r| r.cidr),
                    action: r.map(|r| r.action),
                    packets: c.packets,
                    bytes: c.bytes,
                }
            })
            .collect();
        rules.sort_by_key(|r| std::cmp::Reverse(r.packets));
        let mut sigs: Vec<api::control::SigRow> =
            self.sig_rows()?.into_iter().filter(|s| s.packets != 0).collect();
        sigs.sort_by_key(|s| std::cmp::Reverse(s.packets));
        let slow_path = self.slow_stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        Ok(api::control::Stats { reasons, rules, sigs, slow_path, calls: self.calls.get().summary() })
    }

    pub(crate) fn list(&self, q: &api::control::NetQuery) -> Vec<NetRule> {
        let kind = q.allowed.map(|a| if a { NetAction::Allow } else { NetAction::Deny });
        self.rules
            .values()
            .filter(|r| kind.is_none_or(|k| r.action == k))
            .filter(|r| q.contains.is_none_or(|ip| r.cidr.contains(&ip)))
            .cloned()
            .collect()
    }

    pub(crate) fn check(&self, ip: IpAddr) -> api::control::Check {
        let rule = net::decide(self.rules.values(), ip, Utc::now());
        let in_kernel = rule.is_some_and(|r| self.kernel.nets().contains_key(&r.cidr));
        api::control::Check {
            ip,
            verdict: rule.map_or("none", |r| r.action.as_str()).into(),
            rule: rule.cloned(),
            in_kernel,
        }
    }
}

impl State {
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

/// What the API handlers share: the state behind its lock, and the event hub.
#[derive(Clone, Debug)]
pub struct Shared {
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) web: Arc<crate::web::Runtime>,
}

pub(crate) fn lock(s: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves state that is still consistent with the store
    // (store first, kernel second); keep serving.
    s.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `GET /v1/events`: the recent events, or with `follow=true` an NDJSON stream of the recent
/// events followed by live ones.
async fn events_route(AxState(s): AxState<Shared>, q: Query<HashMap<String, String>>) -> Response {
    use futures_util::StreamExt as _;
    let recent = s.hub.recent();
    if q.get("follow").is_none_or(|v| v != "true") {
        return Json(recent).into_response();
    }
    let line = |r: &events::EventRecord| {
        let mut v = serde_json::to_vec(r).unwrap_or_default();
        v.push(b'\n');
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(v))
    };
    let head: Vec<_> = recent.iter().map(line).collect();
    let live = futures_util::stream::unfold(s.hub.subscribe(), move |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(r) => return Some((line(&r), rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let body = axum::body::Body::from_stream(futures_util::stream::iter(head).chain(live));
    ([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// Reads the kernel's events until the daemon stops: bans become rules, everything is published.
async fn event_loop(s: Shared, ring: aya::maps::RingBuf<aya::maps::MapData>) {
    // SAFETY: the ring buffer owns its map fd, which stays open and the same for as long as
    // the RingBuf lives, and the AsyncFd owns the RingBuf.
    let registered =
        unsafe { tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) };
    let mut ring = match registered {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("watching the event ring buffer: {e}; bans will not be stored as rules");
            return;
        }
    };
    loop {
        let batch = match events::read_ring(&mut ring).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("reading the event ring buffer: {e}");
                return;
            }
        };
        let clock = Clock::now();
        for e in batch {
            let mut rec = events::record(&e, &clock);
            {
                let mut st = lock(&s);
                st.name_slots(&e, &mut rec);
                if e.kind != event::DROP {
                    rec.detail = st.auto_ban(rec.source, e.kind, e.sig_slot);
                }
            }
            s.hub.publish(rec);
        }
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Failure> {
    body.map(|Json(b)| b).map_err(|e| Failure(e.status(), ApiError { error: e.body_text(), field: None }))
}

/// The control API routes of the CLI (`/v1/…`); [`crate::web::router`] serves them with the
/// management API, behind its authentication.
pub fn router() -> Router<Shared> {
    Router::new()
        .route("/v1/status", get(|AxState(s): AxState<Shared>| async move { Json(lock(&s).status()) }))
        .route(
            "/v1/stats",
            get(|AxState(s): AxState<Shared>| async move {
                let st = lock(&s).stats().map_err(|e| Failure::internal(&e))?;
                Answer::Ok(Json(st))
            }),
        )
        .route(
            "/v1/nets",
            get(|AxState(s): AxState<Shared>, q: Result<Query<api::control::NetQuery>, _>| async move {
                let Query(q) = q.map_err(|e: axum::extract::rejection::QueryRejection| {
                    Failure(StatusCode::BAD_REQUEST, ApiError { error: e.body_text(), field: None })
                })?;
                Answer::Ok(Json(lock(&s).list(&q)))
            })
            .post(
                |AxState(s): AxState<Shared>, body: Result<Json<api::control::AddNets>, JsonRejection>| async move {
                    let req = json_body(body)?;
                    // Large imports take seconds: keep them off the async workers.
                    let added = tokio::task::spawn_blocking(move || lock(&s).add_nets(&req))
                        .await
                        .map_err(|e| Failure::internal(&e.into()))??;
                    Answer::Ok(Json(added))
                },
            ),
        )
        .route(
            "/v1/nets/delete",
            post(|AxState(s): AxState<Shared>, body: Result<Json<api::control::DelNets>, JsonRejection>| async move {
                let req = json_body(body)?;
                Answer::Ok(Json(lock(&s).del_nets(&req)?))
            }),
        )
        .route(
            "/v1/nets/check",
            get(|AxState(s): AxState<Shared>, q: Query<HashMap<String, String>>| async move {
                let ip = q.get("ip").ok_or_else(|| Failure::bad("ip", "missing"))?;
                let ip: IpAddr = ip
                    .trim()
                    .parse()
                    .map_err(|_| Failure::bad("ip", format!("`{ip}` is not an IP address")))?;
                Answer::Ok(Json(lock(&s).check(ip)))
            }),
        )
        .route(
            "/v1/sigs",
            get(|AxState(s): AxState<Shared>| async move {
                Answer::Ok(Json(lock(&s).sig_rows().map_err(|e| Failure::internal(&e))?))
            })
            .post(
                |AxState(s): AxState<Shared>, body: Result<Json<api::control::AddSig>, JsonRejection>| async move {
                    let req = json_body(body)?;
                    Answer::Ok(Json(lock(&s).add_sig(&req.into())?))
                },
            ),
        )
        .route(
            "/v1/explain",
            post(
                |AxState(s): AxState<Shared>, body: Result<Json<api::control::ExplainRequest>, JsonRejection>| async move {
                    let req = json_body(body)?;
                    Answer::Ok(Json(lock(&s).explain(&req)?))
                },
            ),
        )
        .route(
            "/v1/sigs/delete",
            post(|AxState(s): AxState<Shared>, body: Result<Json<api::control::DelSigs>, JsonRejection>| async move {
                let req = json_body(body)?;
                Answer::Ok(Json(lock(&s).del_sigs(&req)?))
            }),
        )
        .route(
            "/v1/sigs/mode",
            post(
                |AxState(s): AxState<Shared>, body: Result<Json<api::control::SetSigMode>, JsonRejection>| async move {
                    let req = json_body(body)?;
                    Answer::Ok(Json(lock(&s).set_sig_mode(&req)?))
                },
            ),
        )
        .route("/v1/events", get(events_route))
        .route(
            "/v1/reload",
            post(|AxState(s): AxState<Shared>| async move {
                let r = lock(&s).reload().map_err(|e| {
                    Failure(StatusCode::BAD_REQUEST, ApiError { error: format!("{e:#}"), field: None })
                })?;
                Answer::Ok(Json(r))
            }),
        )
}

fn bind_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        // A live daemon answers on it; a stale file from a killed one does not.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another callguard daemon is serving {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener =
        tokio::net::UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Runs the daemon until SIGTERM or SIGINT. Filtering stays in place after it exits.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let mut state = State::start(opts)?;
    if let Some(password) = crate::web::bootstrap_admin(&mut state)? {
        // Shown once: only its hash is stored.
        println!(
            "callguard: created the system administrator `admin` with password {password}\n\
             callguard: (shown once; change it: callguard api POST /api/v1/users/1/password '{{\"password\": \"…\"}}')"
        );
    }
    let socket = state.cfg.socket.clone();
    let listen = state.cfg.api.listen.clone();
    let sweep_every = Duration::from_secs(state.cfg.sweep_interval_secs);
    let ring = state.kernel.take_events();
    let handup = state.kernel.take_handup();
    let hub = Hub::new(state.cfg.events.log_per_sec);
    let slow = match handup {
        Some((ring, heartbeat)) => {
            let sp = slowpath::SlowPath::new(
                state.calls.clone(),
                hub.clone(),
                Duration::from_secs(state.cfg.calls.retransmit_secs),
                state.slow_stats.clone(),
            )
            .context("opening the raw sockets of the slow path (needs CAP_NET_RAW)")?;
            Some(slowpath::spawn(sp, ring, heartbeat).context("starting the slow path's thread")?)
        }
        None => None,
    };
    let tls = match (&state.cfg.api.tls_cert, &state.cfg.api.tls_key) {
        (Some(cert), Some(key)) if !listen.is_empty() => Some(crate::web::tls::acceptor(cert, key)?),
        _ => None,
    };
    let shared = Shared { state: Arc::new(Mutex::new(state)), hub, web: Arc::default() };
    let reader = ring.map(|r| tokio::spawn(event_loop(shared.clone(), r)));
    let listener = bind_socket(&socket)?;
    tracing::info!(socket = %socket.display(), "control API listening");
    let tcp = if listen.is_empty() {
        None
    } else {
        let l = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("binding the API to {listen} (api.listen)"))?;
        tracing::info!(address = %listen, https = tls.is_some(), "management API listening");
        Some(l)
    };

    let sweeper = {
        let s = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(sweep_every);
            loop {
                tick.tick().await;
                match lock(&s).sweep() {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "removed expired rules"),
                    Err(e) => tracing::error!("sweeping expired rules: {e:#}"),
                }
            }
        })
    };
    let hup = {
        let s = shared.clone();
        let mut sig = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while sig.recv().await.is_some() {
                if let Err(e) = lock(&s).reload() {
                    tracing::error!("reload refused, nothing changed: {e:#}");
                }
            }
        })
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let app = crate::web::router(shared);
    let unix_app = app.clone().layer(axum::Extension(crate::web::Transport::Unix));
    let unix = axum::serve(listener, unix_app).with_graceful_shutdown(stopped(stop_rx.clone()));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let http: Option<std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>> = match (tcp, tls) {
        (None, _) => None,
        (Some(l), None) => Some(Box::pin(
            axum::serve(l, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        )),
        (Some(l), Some(tls)) => {
            // tap_io: axum gives `ConnectInfo<SocketAddr>` to any tapped listener whose address
            // is a SocketAddr, so the routes see the client's address as over plain HTTP.
            let l = axum::serve::ListenerExt::tap_io(crate::web::tls::TlsListener::new(l, tls)?, |_| {});
            Some(Box::pin(
                axum::serve(l, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                    .with_graceful_shutdown(stopped(stop_rx.clone()))
                    .into_future(),
            ))
        }
    };
    println!(
        "callguard: ready (control socket {}{})",
        socket.display(),
        if listen.is_empty() { String::new() } else { format!(", API {scheme}://{listen}") }
    );
    let signals = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        let _ = stop_tx.send(true);
    };
    let http = async move {
        match http {
            Some(h) => h.await,
            None => Ok(()),
        }
    };
    let (u, h, ()) = tokio::join!(async move { unix.await }, http, signals);
    u?;
    h?;
    sweeper.abort();
    hup.abort();
    if let Some(r) = reader {
        r.abort();
    }
    if let Some(s) = slow {
        // The heartbeat stops with it: within a second the kernel applies the failure policy.
        s.stop();
    }
    std::fs::remove_file(&socket).ok();
    tracing::info!(
        "stopped; the XDP program stays attached and keeps enforcing (callguard detach removes it)"
    );
    Ok(())
}

/// `callguard detach`: removes links, maps and the pin directory.
pub fn detach(pin_dir: &Path) -> anyhow::Result<Vec<String>> {
    kernel::detach_all(pin_dir)
}
