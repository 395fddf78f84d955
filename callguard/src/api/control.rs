//! The control API's requests and responses (`/v1/…`, JSON over HTTP on the daemon's Unix
//! socket and on `api.listen`): the daemon serves these types and the CLI sends them, one
//! definition for both. The routes are those of `web::control`, listed in the OpenAPI document
//! and the README's API reference.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use crate::{
    events::{EventKind, EventRecord},
    kernel::tables::{Table, Tables},
};
use crate::{
    kernel::Attached,
    net::{NetAction, NetRule, Scope},
    sig::{NewSignature, SigField, SigMatch, SigMode, Signature},
};

/// One guarded interface.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// How it was attached by this daemon.
    pub mode: Attached,
}

/// Daemon status.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// callguard version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Where program links and maps are pinned.
    pub pin_dir: String,
    /// The rule database.
    pub database: String,
    /// The configuration file, if any.
    pub config: Option<String>,
    /// Guarded interfaces.
    pub interfaces: Vec<Interface>,
    /// Allow rules in the store.
    pub allow_rules: usize,
    /// Deny rules in the store.
    pub deny_rules: usize,
    /// Entries in the kernel's network maps.
    pub kernel_entries: usize,
    /// Automatic bans (origin `auto`) in the store, of at most `max_auto_bans`.
    #[serde(default)]
    pub auto_bans: usize,
    /// `rate.max_auto_bans`.
    #[serde(default)]
    pub max_auto_bans: usize,
    /// Automatic bans evicted since the start to make room for newer ones.
    #[serde(default)]
    pub auto_bans_evicted: u64,
    /// Guarded UDP ports (as configured).
    pub udp_ports: Vec<String>,
    /// Guarded TCP ports (as configured).
    pub tcp_ports: Vec<String>,
}

/// One (action, reason) counter.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ReasonCount {
    /// `pass` or `drop`.
    pub action: String,
    /// The reason's name.
    pub reason: String,
    /// What the reason means.
    pub description: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One rule's counter.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RuleCount {
    /// Rule id.
    pub id: u32,
    /// The rule's network, if the rule still exists.
    #[schema(value_type = Option<String>)]
    pub cidr: Option<IpNet>,
    /// The rule's action, if it still exists.
    pub action: Option<NetAction>,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// All counters.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// By action and reason.
    pub reasons: Vec<ReasonCount>,
    /// By rule (rules that decided at least one packet).
    pub rules: Vec<RuleCount>,
    /// By signature (signatures that matched at least one packet).
    #[serde(default)]
    pub sigs: Vec<SigRow>,
    /// The slow path: decisions on handed-up requests.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub slow_path: crate::calls::slowpath::SlowStats,
    /// The number-level rules in force and whether the kernel hands requests up.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub calls: crate::calls::policy::PolicySummary,
    /// What the egress program saw of the PBX's answers.
    #[serde(default)]
    pub answers: AnswerStats,
    /// The kernel's drop samples and signature bans, and the event budget's work.
    #[serde(default)]
    pub events: EventStats,
}

/// The kernel's budgeted events (drop samples and signature bans): the event budget
/// (`[events] per_sec`) bounds them by time, whatever the packet rate.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct EventStats {
    /// Drops seen by the sampler (`[events] sample` picks one in so many).
    pub drops: u64,
    /// Events written to the daemon.
    pub written: u64,
    /// Events not written: over the budget, or the ring buffer full.
    pub suppressed: u64,
}

/// What the egress program saw of the PBX's answers on the guarded interfaces.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AnswerStats {
    /// SIP responses seen leaving a guarded UDP port.
    pub responses: u64,
    /// `2xx` answers to a REGISTER: each notes the source it goes to as registered for a day.
    pub registrations: u64,
    /// Sources registered now. Their requests reach the daemon through a queue of their own,
    /// which a flood from other (spoofed) sources cannot fill.
    pub registered_sources: usize,
}

/// `POST /v1/explain`: a SIP request and the address it would come from.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ExplainRequest {
    /// The message, as it would arrive.
    pub message: String,
    /// Its source address.
    #[schema(value_type = String)]
    pub source: IpAddr,
}

/// What `POST /v1/explain` answers.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Explained {
    /// Whether the kernel would hand this request up at all (an INVITE or REGISTER while rules
    /// ask for it; a request from an authorized network never is).
    pub handed_up: bool,
    /// What the request says, as the checks read it.
    #[schema(value_type = Option<Object>)]
    pub facts: Option<crate::calls::policy::Facts>,
    /// The decision (also for a request that would not be handed up: what the rules say).
    #[schema(value_type = Object)]
    pub decision: crate::calls::policy::Decision,
}

/// A signature with its counters.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct SigRow {
    /// The stored signature.
    #[serde(flatten)]
    pub sig: Signature,
    /// Requests it matched (enforce: dropped; dry-run: passed).
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A signature to add, as the CLI and the API send it (unknown fields refused).
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSig {
    /// `user-agent` or `from-to`.
    pub field: SigField,
    /// `prefix` (default) or `contains`.
    #[serde(rename = "match", default = "default_match")]
    pub matches: SigMatch,
    /// The literal (1 to 64 printable ASCII bytes), matched without regard to case.
    pub text: String,
    /// `enforce` (default) or `dry-run`.
    #[serde(default = "default_mode")]
    pub mode: SigMode,
    /// Free text (at most 256 characters).
    #[serde(default)]
    pub comment: String,
}

const fn default_match() -> SigMatch {
    SigMatch::Prefix
}

const fn default_mode() -> SigMode {
    SigMode::Enforce
}

impl From<AddSig> for NewSignature {
    fn from(a: AddSig) -> Self {
        Self { field: a.field, matches: a.matches, text: a.text, mode: a.mode, comment: a.comment }
    }
}

/// Which signatures to delete.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DelSigs {
    /// Signature ids.
    pub ids: Vec<u32>,
}

/// Switch a signature between enforce and dry-run.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSigMode {
    /// Signature id.
    pub id: u32,
    /// The new mode.
    pub mode: SigMode,
}

/// Filters for listing network rules.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
pub struct NetQuery {
    /// `true`: allow rules only; `false`: deny rules only.
    pub allowed: Option<bool>,
    /// Only rules whose network contains this address.
    #[param(value_type = Option<String>)]
    pub contains: Option<IpAddr>,
}

/// The fraud thresholds in force (`GET /v1/fraud`), and where they come from.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct FraudThresholds {
    /// `config` (the file's `[calls.fraud]`) or `api` (written with `PUT /v1/fraud`, kept in
    /// the store; they win over the file's until `DELETE /v1/fraud`).
    pub origin: String,
    /// When the API's were written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// The thresholds, as the `[calls.fraud]` table writes them.
    #[schema(value_type = Object)]
    pub thresholds: crate::config::Fraud,
}

/// A rule to add, as the CLI and the API send it.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    /// Address or prefix; host bits must be clear.
    pub cidr: String,
    /// `allow` or `deny`.
    pub action: NetAction,
    /// For deny: `sip` (default) or `all`.
    #[serde(default)]
    pub scope: Scope,
    /// For allow: `trusted` (no call checks), `trunk` (caller rules apply to its calls) or
    /// `phones` (dialed-number rules, authorization codes, roles and fraud thresholds apply).
    /// Absent: an existing allow rule for the network keeps its profile, a new one is
    /// `trusted`.
    #[serde(default)]
    pub profile: Option<crate::net::Profile>,
    /// Expiry: RFC 3339.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Free text (at most 256 characters).
    #[serde(default)]
    pub comment: String,
}

/// Add or update rules, all or none.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddNets {
    /// The rules.
    pub rules: Vec<NetSpec>,
    /// Mark them as imported (`net import`) rather than manual.
    #[serde(default)]
    pub import: bool,
}

/// Rules added or updated.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Added {
    /// How many rules were written.
    pub count: usize,
    /// The stored rules (only when fewer than 100, to keep answers small).
    pub rules: Vec<NetRule>,
    /// Milliseconds from request to the kernel holding the change.
    pub applied_ms: u64,
}

/// Which rules to delete: exactly one of `cidr`, `contains`, `all`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DelNets {
    /// The rule(s) for exactly this network.
    pub cidr: Option<String>,
    /// Every rule whose network contains this address.
    pub contains: Option<String>,
    /// Every rule (except those from the configuration file).
    #[serde(default)]
    pub all: bool,
    /// `true`: allow rules only; `false`: deny rules only.
    pub allowed: Option<bool>,
}

/// A country rule to make (or change): the networks the country database places in `code`
/// are allowed or denied.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCountry {
    /// ISO 3166-1 alpha-2 code (`CN`).
    pub code: String,
    /// Allow or deny.
    pub action: NetAction,
    /// For deny: `sip` (guarded ports, the default) or `all`.
    #[serde(default)]
    pub scope: Scope,
    /// Free text.
    #[serde(default)]
    pub comment: String,
}

/// A country rule and the networks of its country in force.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct CountryView {
    /// The rule.
    pub rule: crate::geo::CountryRule,
    /// Its country's networks that are its rules (others' rules may hold some).
    pub networks: usize,
}

/// Rules deleted.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Removed {
    /// How many.
    pub count: usize,
}

/// The verdict for one address.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// The address asked about.
    #[schema(value_type = String)]
    pub ip: IpAddr,
    /// What the network rules say of the address.
    pub verdict: CheckVerdict,
    /// The deciding rule.
    pub rule: Option<NetRule>,
    /// What the kernel map holds for the deciding network (a cross-check of the compiled state).
    pub in_kernel: bool,
}

/// The network rules' verdict on an address.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckVerdict {
    /// An allow rule decides: the address is authorized.
    Allow,
    /// A deny rule decides: the address is blocked.
    Deny,
    /// No rule matches: guarded traffic is inspected, the rest passes.
    None,
}

impl std::fmt::Display for CheckVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::None => "none",
        })
    }
}

/// What a reload changed.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    /// Kernel network entries written.
    pub written: usize,
    /// Kernel network entries removed.
    pub removed: usize,
    /// Interfaces newly attached.
    pub attached: Vec<String>,
    /// Interfaces detached.
    pub detached: Vec<String>,
}

/// `GET /v1/nets/check` parameters.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CheckQuery {
    /// The address to decide.
    pub ip: String,
}

/// `GET /v1/events` parameters.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Stream: the recent events, then live ones as they happen (NDJSON).
    pub follow: Option<bool>,
}
