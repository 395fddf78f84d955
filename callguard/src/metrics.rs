//! Prometheus metrics: `GET /metrics` on `[metrics] listen` (default `127.0.0.1:9787`), in the
//! Prometheus text format, or OpenMetrics when the scraper asks for it (`Accept:
//! application/openmetrics-text`, as Prometheus does). Encoded by `prometheus-client` from what
//! the daemon already counts, read afresh at each scrape; only the slow path's latency histogram
//! is observed as it happens.
//!
//! Series stay few whatever the rule model holds: per-rule counters go to the `top_rules`
//! busiest rules (kept while they exist, so their counters never jump back) and one
//! `rule="other"`; the kernel's tables of sources are counted off the service's lock, a slow
//! count reused as [`tables::Counted`] says.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    encoding::{prometheus_text, text},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use crate::{
    api::control as api,
    calls::slowpath,
    config::MetricsConfig,
    kernel::{
        datapath::NetMap,
        tables::{self, Tables},
    },
    service::{BanCounts, Reloads},
    web::state::{Shared, lock},
};

/// How long a reading serves further scrapes.
pub const FRESH: Duration = Duration::from_secs(1);

/// One reading's metrics, ready to encode.
#[derive(Debug)]
struct Readout(Registry);

/// A metric's labels.
type Labels = Vec<(&'static str, String)>;

/// The metrics endpoint's state.
#[derive(Debug)]
pub struct Exporter {
    shared: Shared,
    pin_dir: PathBuf,
    cfg: MetricsConfig,
    rules: Mutex<RuleSeries>,
    /// The last reading and when it was made.
    recent: tokio::sync::Mutex<Option<(Instant, Arc<Readout>)>>,
}

/// What one scrape reads under the service's lock.
struct Snapshot {
    stats: api::Stats,
    status: api::Status,
    /// (map, entries, capacity) of the four network maps.
    nets: Vec<(NetMap, usize, u32)>,
    bans: BanCounts,
    reloads: Reloads,
    uptime: Duration,
    latency: slowpath::Latency,
    feeds: Vec<crate::feeds::FeedStatus>,
}

impl Exporter {
    /// The endpoint for the daemon behind `shared`, whose maps are pinned in `pin_dir`.
    pub fn new(shared: Shared, pin_dir: PathBuf, cfg: MetricsConfig) -> Arc<Self> {
        Arc::new(Self {
            shared,
            pin_dir,
            cfg,
            rules: Mutex::new(RuleSeries::default()),
            recent: tokio::sync::Mutex::new(None),
        })
    }

    /// The router: `GET /metrics`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new().route("/metrics", get(scrape)).with_state(self)
    }

    fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let s = lock(&self.shared);
        let nets = [NetMap::V4Exact, NetMap::V6Exact, NetMap::V4Lpm, NetMap::V6Lpm]
            .into_iter()
            .map(|m| {
                let d = s.datapath();
                (m, d.nets().keys().filter(|n| NetMap::of(n) == m).count(), d.capacity(m))
            })
            .collect();
        Ok(Snapshot {
            stats: s.stats()?,
            status: s.status(),
            nets,
            bans: s.ban_counts().clone(),
            reloads: s.reloads(),
            uptime: s.started().elapsed(),
            latency: s.slow_latency(),
            feeds: self.shared.web.feeds.all(),
        })
    }

    /// The kernel's tables of sources (see [`tables::Counted`]); `None` when they cannot be
    /// read (no kernel: a test's fake datapath).
    async fn tables(self: &Arc<Self>) -> Option<Tables> {
        let ex = self.clone();
        match tokio::task::spawn_blocking(move || ex.shared.web.tables.read(&ex.pin_dir)).await {
            Ok(Ok(t)) => Some(t),
            Ok(Err(e)) => {
                tracing::debug!("counting the kernel's tables for the metrics: {e:#}");
                None
            }
            Err(e) => {
                tracing::warn!("counting the kernel's tables for the metrics: {e}");
                None
            }
        }
    }

    /// The metrics as of now, or as of the last reading when it is younger than [`FRESH`]:
    /// scrapers at once, or one in a loop, wait for one reading and share it, so the service's
    /// lock is taken at most once a [`FRESH`] for them.
    async fn reading(self: &Arc<Self>) -> anyhow::Result<Arc<Readout>> {
        let mut recent = self.recent.lock().await;
        if let Some((at, r)) = recent.as_ref()
            && at.elapsed() < FRESH
        {
            return Ok(r.clone());
        }
        let ex = self.clone();
        let snap = tokio::task::spawn_blocking(move || ex.snapshot()).await??;
        let tables = self.tables().await;
        let dir = self.pin_dir.clone();
        let heartbeat =
            tokio::task::spawn_blocking(move || tables::heartbeat_ns(&dir)).await?.ok().filter(|b| *b != 0);
        let registry = {
            let mut rules = self.rules.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            rules.update(&snap.stats.rules, self.cfg.top_rules);
            registry(&snap, &rules, tables.as_ref(), heartbeat)
        };
        let r = Arc::new(Readout(registry));
        *recent = Some((Instant::now(), r.clone()));
        Ok(r)
    }

    /// Whether the request may read the metrics: a bearer token is needed when one is set.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.cfg.token else { return true };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, t)| t.trim());
        crate::accounts::same_secret(given, token)
    }
}

async fn scrape(State(ex): State<Arc<Exporter>>, headers: HeaderMap) -> Response {
    if !ex.admits(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "metrics.token required\n",
        )
            .into_response();
    }
    let registry = match ex.reading().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
    };
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let mut body = String::new();
    let (encoded, content_type) = if openmetrics {
        (text::encode(&mut body, &registry.0), "application/openmetrics-text; version=1.0.0; charset=utf-8")
    } else {
        (prometheus_text::encode(&mut body, &registry.0), prometheus_text::CONTENT_TYPE)
    };
    match encoded {
        Ok(()) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the metrics: {e}\n")).into_response(),
    }
}

/// The per-rule series: the busiest rules, each with its own counters while it exists, and the
/// rest summed under `rule="other"` (its counters only grow: a rule's packets enter it as they
/// are counted, and stay when the rule goes or gets a series of its own).
#[derive(Debug, Default)]
struct RuleSeries {
    /// Rules with a series: id → labels.
    members: BTreeMap<u32, Labels>,
    /// Each rule's counters at the last scrape.
    last: HashMap<u32, (u64, u64)>,
    /// `rule="other"`: packets and bytes.
    other: (u64, u64),
    /// Whether `last` holds a reading: the first only sets it, so that the counters the kernel
    /// kept across a restart of the daemon start `other` at zero (a reset to Prometheus) instead
    /// of jumping up by all that was counted before.
    primed: bool,
}

impl RuleSeries {
    fn update(&mut self, rules: &[api::RuleCount], top: usize) {
        if !self.primed {
            self.last = rules.iter().map(|r| (r.id, (r.packets, r.bytes))).collect();
            self.primed = true;
            return;
        }
        let now: HashMap<u32, &api::RuleCount> = rules.iter().map(|r| (r.id, r)).collect();
        // A rule that is gone (deleted, expired) leaves its series.
        self.members.retain(|id, _| now.get(id).is_some_and(|r| r.cidr.is_some()));
        // (growth, id) of the others; members that counted nothing since the last scrape.
        let (mut grew, mut idle): (Vec<(u64, u32)>, Vec<u32>) = (Vec::new(), Vec::new());
        for r in rules {
            let (p0, b0) = self.last.get(&r.id).copied().unwrap_or_default();
            // A counter that went back (the kernel's were cleared: maps made afresh after
            // `callguard detach`) counts from zero.
            let (dp, db) = if r.packets >= p0 && r.bytes >= b0 {
                (r.packets - p0, r.bytes - b0)
            } else {
                (r.packets, r.bytes)
            };
            if self.members.contains_key(&r.id) {
                if dp == 0 {
                    idle.push(r.id);
                }
            } else {
                self.other.0 += dp;
                self.other.1 += db;
                if r.cidr.is_some() && dp > 0 {
                    grew.push((dp, r.id));
                }
            }
        }
        self.last = rules.iter().map(|r| (r.id, (r.packets, r.bytes))).collect();
        // The busiest of the others take free places, then the places of idle members.
        grew.sort_unstable_by(|a, b| b.cmp(a));
        for (_, id) in grew {
            if top == 0 {
                break;
            }
            if self.members.len() >= top {
                let Some(out) = idle.pop() else { break };
                self.members.remove(&out);
            }
            let r = now[&id];
            self.members.insert(
                id,
                vec![
                    ("rule", id.to_string()),
                    ("network", r.cidr.map(|c| c.to_string()).unwrap_or_default()),
                    ("action", r.action.map(|a| a.as_str().to_string()).unwrap_or_default()),
                ],
            );
        }
    }

    fn rows(&self, rules: &[api::RuleCount], bytes: bool) -> Vec<(Labels, u64)> {
        let mut out: Vec<(Labels, u64)> = rules
            .iter()
            .filter_map(|r| {
                let labels = self.members.get(&r.id)?;
                Some((labels.clone(), if bytes { r.bytes } else { r.packets }))
            })
            .collect();
        let other = if bytes { self.other.1 } else { self.other.0 };
        out.push((
            vec![("rule", "other".into()), ("network", String::new()), ("action", String::new())],
            other,
        ));
        out
    }
}

/// Adds a counter family `name` (exposed as `name_total`).
fn counters(reg: &mut Registry, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, u64)>) {
    let family = Family::<Labels, Counter>::default();
    for (labels, v) in rows {
        family.get_or_create(&labels).inc_by(v);
    }
    reg.register(name, help, family);
}

/// Adds a gauge family `name`, in `unit` when given (exposed as `name_unit`).
fn gauges(
    reg: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    rows: impl IntoIterator<Item = (Labels, f64)>,
) {
    let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (labels, v) in rows {
        family.get_or_create(&labels).set(v);
    }
    match unit {
        Some(u) => reg.register_with_unit(name, help, u, family),
        None => reg.register(name, help, family),
    }
}

/// One gauge without labels.
fn gauge(reg: &mut Registry, name: &str, help: &str, unit: Option<Unit>, v: f64) {
    gauges(reg, name, help, unit, [(Labels::new(), v)]);
}

fn l1(k: &'static str, v: impl Into<String>) -> Labels {
    vec![(k, v.into())]
}

/// Every metric, from one scrape's readings.
fn registry(
    s: &Snapshot,
    rules: &RuleSeries,
    tables: Option<&Tables>,
    heartbeat_ns: Option<u64>,
) -> Registry {
    let mut reg = Registry::default();
    let st = &s.stats;
    let by_reason = |bytes: bool| {
        st.reasons
            .iter()
            .map(move |r| {
                (
                    vec![("action", r.action.clone()), ("reason", r.reason.clone())],
                    if bytes { r.bytes } else { r.packets },
                )
            })
            .collect::<Vec<_>>()
    };
    counters(
        &mut reg,
        "callguard_packets",
        "Packets the XDP program decided, by action (pass, drop, handup) and reason (see `callguard stats`)",
        by_reason(false),
    );
    counters(&mut reg, "callguard_bytes", "Bytes of the packets in callguard_packets_total", by_reason(true));
    counters(
        &mut reg,
        "callguard_rule_packets",
        "Packets decided by a network rule: the busiest rules (metrics.top_rules) by id, all others as rule=\"other\" (a rule's packets from before it got a series of its own stay there)",
        rules.rows(&st.rules, false),
    );
    counters(
        &mut reg,
        "callguard_rule_bytes",
        "Bytes of the packets in callguard_rule_packets_total",
        rules.rows(&st.rules, true),
    );
    let sig_rows = |bytes: bool| {
        st.sigs
            .iter()
            .map(move |g| {
                (
                    vec![
                        ("signature", g.sig.id.to_string()),
                        ("field", g.sig.sig.field.name().to_string()),
                        ("text", g.sig.sig.text.clone()),
                    ],
                    if bytes { g.bytes } else { g.packets },
                )
            })
            .collect::<Vec<_>>()
    };
    counters(
        &mut reg,
        "callguard_signature_packets",
        "Requests a scanner signature matched (enforcing: dropped; dry-run: passed), by signature",
        sig_rows(false),
    );
    counters(
        &mut reg,
        "callguard_signature_bytes",
        "Bytes of the requests in callguard_signature_packets_total",
        sig_rows(true),
    );
    counters(
        &mut reg,
        "callguard_bans",
        "Automatic bans stored as deny rules, by cause (rate, enumeration, signature, authentication, fraud, escalation)",
        BanCounts::CAUSES.map(|c| (l1("cause", c), s.bans.made.get(c).copied().unwrap_or(0))),
    );
    counters(
        &mut reg,
        "callguard_bans_lifted",
        "Automatic bans lifted, by cause (expired, evicted to make room under rate.max_auto_bans, removed by an operator)",
        BanCounts::LIFTS.map(|c| (l1("cause", c), s.bans.lifted.get(c).copied().unwrap_or(0))),
    );
    gauge(
        &mut reg,
        "callguard_auto_bans",
        "Automatic bans in force (deny rules of origin auto)",
        None,
        s.status.auto_bans as f64,
    );
    gauge(
        &mut reg,
        "callguard_auto_bans_limit",
        "rate.max_auto_bans: past it the oldest automatic bans make room",
        None,
        s.status.max_auto_bans as f64,
    );
    gauges(
        &mut reg,
        "callguard_rules",
        "Network rules in the store, by action",
        None,
        [
            (l1("action", "allow"), s.status.allow_rules as f64),
            (l1("action", "deny"), s.status.deny_rules as f64),
        ],
    );
    let decisions = st.slow_path.decisions.iter().map(|(k, n)| {
        let (verdict, step) = k.split_once('/').unwrap_or((k.as_str(), ""));
        (vec![("verdict", verdict.to_string()), ("step", step.to_string())], *n)
    });
    counters(
        &mut reg,
        "callguard_slow_path_decisions",
        "Handed-up requests the daemon decided, by verdict (allow, deny, …) and the step that decided (default, blacklist, …)",
        decisions,
    );
    let sp = &st.slow_path;
    counters(
        &mut reg,
        "callguard_slow_path_events",
        "What else the slow path did, by event (see the slow path's counters in `callguard stats`)",
        [
            ("retransmission", sp.retransmissions),
            ("malformed_frame", sp.malformed_frames),
            ("send_error", sp.send_errors),
            ("not_local", sp.not_local),
            ("unanswered", sp.unanswered),
            ("authcode_lockout", sp.authcode_lockouts),
            ("fraud_refusal", sp.fraud_refusals),
            ("proof", sp.proofs),
            ("false_proof", sp.false_proofs),
            ("registered_queue", sp.registered),
        ]
        .map(|(e, n)| (l1("event", e), n)),
    );
    reg.register_with_unit(
        "callguard_slow_path_latency",
        "Time from the kernel's hand-up of a request to the daemon's verdict carried out (queueing and deciding)",
        Unit::Seconds,
        s.latency.0.clone(),
    );
    let ev = &st.events;
    counters(
        &mut reg,
        "callguard_drop_events",
        "Drop events: drops the sampler saw, events written to the daemon, events suppressed by the budget ([events])",
        [("sampled", ev.drops), ("written", ev.written), ("suppressed", ev.suppressed)]
            .map(|(o, n)| (l1("outcome", o), n)),
    );
    counters(
        &mut reg,
        "callguard_pbx_answers",
        "The PBX's answers seen by the egress program, by kind (response, registration: a 2xx to a REGISTER)",
        [("response", st.answers.responses), ("registration", st.answers.registrations)]
            .map(|(k, n)| (l1("kind", k), n)),
    );
    gauge(
        &mut reg,
        "callguard_registered_sources",
        "Sources the PBX accepted a registration from recently (their requests have a queue of their own)",
        None,
        st.answers.registered_sources as f64,
    );
    let mut maps: Vec<(Labels, f64)> = Vec::new();
    let mut caps: Vec<(Labels, f64)> = Vec::new();
    for (m, n, cap) in &s.nets {
        maps.push((l1("map", m.name()), *n as f64));
        caps.push((l1("map", m.name()), f64::from(*cap)));
    }
    if let Some(t) = tables {
        for tb in &t.tables {
            maps.push((l1("map", tb.map.clone()), tb.entries as f64));
            caps.push((l1("map", tb.map.clone()), f64::from(tb.capacity)));
        }
        gauge(
            &mut reg,
            "callguard_kernel_bans",
            "Sources the kernel bans now (before and besides the stored bans)",
            None,
            t.banned as f64,
        );
    }
    gauges(
        &mut reg,
        "callguard_map_entries",
        "Entries in a kernel map (tables of sources over 16,384 entries in all are counted at most every 15 s)",
        None,
        maps,
    );
    gauges(&mut reg, "callguard_map_capacity", "Entries a kernel map holds at most", None, caps);
    if let Some(beat) = heartbeat_ns {
        let age = crate::clock::boot_ns().saturating_sub(beat) as f64 / 1e9;
        gauge(
            &mut reg,
            "callguard_heartbeat_age",
            "Age of the slow path's heartbeat as the kernel sees it; past 1 s the failure policy (calls.fail) decides handed-up requests",
            Some(Unit::Seconds),
            age,
        );
    }
    counters(
        &mut reg,
        "callguard_reloads",
        "Configuration reloads, by result (applied, refused: nothing changed)",
        [("applied", s.reloads.applied), ("refused", s.reloads.refused)].map(|(r, n)| (l1("result", r), n)),
    );
    gauge(
        &mut reg,
        "callguard_last_reload_timestamp",
        "When the configuration was last applied (the start or the last reload), Unix time",
        Some(Unit::Seconds),
        s.reloads.last.timestamp_millis() as f64 / 1e3,
    );
    gauges(
        &mut reg,
        "callguard_feed_rules",
        "Networks a blocklist feed holds in force, by feed",
        None,
        s.feeds.iter().map(|f| (l1("feed", &f.name), f.rules as f64)),
    );
    counters(
        &mut reg,
        "callguard_feed_refreshes",
        "Refreshes of a blocklist feed, by feed and result (applied; refused: the last good copy kept)",
        s.feeds.iter().flat_map(|f| {
            [("applied", f.refreshes), ("refused", f.failures)]
                .map(|(r, n)| (vec![("feed", f.name.clone()), ("result", r.to_owned())], n))
        }),
    );
    gauges(
        &mut reg,
        "callguard_feed_last_success_timestamp",
        "When a blocklist feed's last good document was applied, Unix time",
        Some(Unit::Seconds),
        s.feeds
            .iter()
            .filter_map(|f| Some((l1("feed", &f.name), f.last_success?.timestamp_millis() as f64 / 1e3))),
    );
    counters(
        &mut reg,
        "callguard_store_errors",
        "Failures of the rule database (SQLite) since the start",
        [(Labels::new(), crate::store::db_failures())],
    );
    gauge(
        &mut reg,
        "callguard_uptime",
        "Time since the daemon started",
        Some(Unit::Seconds),
        s.uptime.as_secs_f64(),
    );
    gauges(
        &mut reg,
        "callguard_guarded_interface",
        "Interfaces the XDP program is attached to (value 1), with how",
        None,
        s.status.interfaces.iter().map(|i| {
            (vec![("interface", i.name.clone()), ("mode", format!("{:?}", i.mode).to_lowercase())], 1.0)
        }),
    );
    gauges(
        &mut reg,
        "callguard_build_info",
        "The running callguard (value 1)",
        None,
        [(l1("version", env!("CARGO_PKG_VERSION")), 1.0)],
    );
    reg
}

/// Serves the metrics on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    exporter: Arc<Exporter>,
    limits: crate::config::ListenerLimits,
    stop: impl Future<Output = ()>,
) {
    crate::web::serve::serve(listener, exporter.router(), limits, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::NetAction;

    fn rule(id: u32, packets: u64) -> api::RuleCount {
        api::RuleCount {
            id,
            cidr: Some(format!("198.51.100.{id}/32").parse().unwrap()),
            action: Some(NetAction::Deny),
            packets,
            bytes: packets * 100,
        }
    }

    /// The packets of `rule=id` (or `other` for 0) as the series would export them.
    fn exported(s: &RuleSeries, rules: &[api::RuleCount]) -> BTreeMap<String, u64> {
        s.rows(rules, false).into_iter().map(|(l, v)| (l[0].1.clone(), v)).collect()
    }

    #[test]
    fn rule_series_keep_the_busiest_and_never_go_back() {
        let mut s = RuleSeries::default();
        // Counters kept across a daemon restart: the first reading only primes.
        let r = [rule(1, 1000), rule(2, 5), rule(3, 0)];
        s.update(&r, 2);
        assert_eq!(exported(&s, &r), BTreeMap::from([("other".into(), 0)]));
        // The two that grew most get series; what they counted since the first reading went to
        // other before, and stays there.
        let r = [rule(1, 1100), rule(2, 5), rule(3, 40), rule(4, 7)];
        s.update(&r, 2);
        let e = exported(&s, &r);
        assert_eq!(e.get("1"), Some(&1100));
        assert_eq!(e.get("3"), Some(&40));
        assert_eq!(e.get("other"), Some(&(100 + 40 + 7)));
        // A member that counted nothing gives its place to a rule that did.
        let r = [rule(1, 1200), rule(2, 5), rule(3, 40), rule(4, 9)];
        s.update(&r, 2);
        let e = exported(&s, &r);
        assert_eq!((e.get("1"), e.get("3"), e.get("4")), (Some(&1200), None, Some(&9)));
        assert_eq!(e.get("other"), Some(&(147 + 2)));
        // A deleted member leaves its series; other does not go back.
        let r = [rule(4, 10)];
        s.update(&r, 2);
        let e = exported(&s, &r);
        assert_eq!((e.get("1"), e.get("4"), e.get("other")), (None, Some(&10), Some(&149)));
        // Counters that went back (maps made afresh) count from zero, adding to other.
        let r = [rule(4, 10), rule(5, 3)];
        s.update(&r, 0);
        assert_eq!(exported(&s, &r).get("other"), Some(&152));
    }
}
