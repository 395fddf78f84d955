//! Number-level call checks: the rules the kernel cannot evaluate, compiled into a [`CallPolicy`]
//! the slow path consults for each request the kernel hands up.
//!
//! Order of evaluation (the first step that decides ends it; documented in the README):
//! 1. **Border rules**, enabled ones in priority order (lower first): site, service, domain,
//!    user name and User-Agent patterns, source network. The first match decides with its
//!    action (`allow`, `deny`, `drop`). REGISTERs are checked against border rules only.
//! 2. **Blacklisted numbers** against the caller: the From user and every P-Asserted-Identity
//!    user, unless the entry's `expire_at` has passed.
//! 3. **Authorization codes**: a dialed number in the configured form (`*{code}*{number}`) is
//!    checked against the caller's codes (caller = From user in the tenant whose SIP domain is
//!    the From host). A valid code allows the call to `{number}` (steps 4 and 5 are skipped)
//!    and is removed from the request; an invalid one is denied.
//! 4. **Disallowed codes** against the dialed number (Request-URI user): a prefix match.
//! 5. **Allowed country codes**: when the list is not empty, an international number whose
//!    country code is not in it is denied; national numbers are unaffected.
//! 6. **The caller's role**: a caller who is a user of the tenant whose role lacks
//!    `calls.international` (StandardUser, PortSIP's meaning) may not dial an international
//!    number. Callers who are no user of a tenant are not checked here.
//! 7. Otherwise the call is allowed.
//!
//! Which steps apply depends on where the call comes from ([`Facts::profile`]): from outside
//! every allow rule, all of them; from an allow rule with profile `trunk` (inbound calls),
//! border rules and blacklisted callers only; with profile `phones` (outbound calls), all but
//! blacklisted callers; with profile `trusted`, none (the kernel never hands such calls up).
//!
//! Numbers are compared normalized ([`normalize`]): visual separators removed, and `+`, `00`
//! and the configured international prefix all read as `+`.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, RwLock},
};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    accounts::{Caller, Perm, Role},
    border::{BorderAction, BorderRule},
    calls::message::{Message, ParseError, Uri},
    config::Calls,
    net::{NetAction, NetRule, Profile},
    numbers::{BlacklistedNumber, DisallowedCode, country_key},
};

/// What happens to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Re-injected to the PBX (rewritten only when an authorization code was removed).
    Allow,
    /// Answered `403 Forbidden`.
    Deny,
    /// Discarded silently.
    Drop,
}

impl Verdict {
    /// The lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Drop => "drop",
        }
    }
}

/// Which step decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// A border rule matched.
    Border,
    /// The caller is blacklisted.
    Blacklist,
    /// An authorization code was dialed (valid or not).
    AuthCode,
    /// The dialed number starts with a disallowed code.
    DisallowedCode,
    /// The destination country is not allowed.
    Country,
    /// The caller's role may not dial this number.
    Role,
    /// The call would cross a fraud threshold (`calls.fraud`).
    Fraud,
    /// No rule objected.
    Default,
    /// An in-dialog request (To tag): not a new call, passed without checks.
    InDialog,
    /// The daemon could not read the request as SIP.
    Unreadable,
}

impl Step {
    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Border => "border",
            Self::Blacklist => "blacklist",
            Self::AuthCode => "authcode",
            Self::DisallowedCode => "disallowed_code",
            Self::Country => "country",
            Self::Role => "role",
            Self::Fraud => "fraud",
            Self::Default => "default",
            Self::InDialog => "in_dialog",
            Self::Unreadable => "unreadable",
        }
    }
}

/// A decision, with what made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// What happens.
    pub verdict: Verdict,
    /// Which step decided.
    pub step: Step,
    /// The rule that decided (its id and what it holds), or a description of the default.
    pub rule: String,
    /// Why, in a sentence.
    pub why: String,
    /// For an allowed call dialed with an authorization code: the number without the code, which
    /// replaces the dialed user in the Request-URI (and the To URI).
    pub dial: Option<String>,
}

impl Decision {
    /// The answer to a call with an authorization code from a source (or for a caller) locked
    /// out for `wait`: a denial like a wrong code's, so the answer tells nothing of the code.
    pub fn authcode_locked(wait: std::time::Duration) -> Self {
        Self::new(
            Verdict::Deny,
            Step::AuthCode,
            "authorization-code lockout (calls.authcode_failures)",
            format!(
                "too many wrong authorization codes from this source or for this caller: codes are refused for {} s",
                wait.as_secs().max(1)
            ),
        )
    }

    fn new(verdict: Verdict, step: Step, rule: impl Into<String>, why: impl Into<String>) -> Self {
        Self { verdict, step, rule: rule.into(), why: why.into(), dial: None }
    }
}

/// What a request says, as far as the checks read it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The method.
    pub method: String,
    /// Request-URI user (the dialed number), when present.
    pub dialed: Option<String>,
    /// The request's domain: the Request-URI host.
    pub domain: String,
    /// The user name border rules match: the From user for INVITE, the To user for REGISTER.
    pub username: String,
    /// The From user and host.
    pub from_user: Option<String>,
    /// The From host.
    pub from_host: String,
    /// P-Asserted-Identity users.
    pub asserted: Vec<String>,
    /// The User-Agent ("" when absent).
    pub user_agent: String,
    /// Whether To carries a tag (an in-dialog request).
    pub in_dialog: bool,
    /// The source address.
    pub source: Option<IpAddr>,
    /// The call profile of the allow rule the source is in; `None`: outside every allow rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
}

impl Facts {
    /// Reads the facts of a request.
    pub fn read(m: &Message<'_>, source: IpAddr) -> Result<Self, ParseError> {
        let method = m.method().ok_or_else(|| ParseError("a response, not a request".into()))?;
        m.check_single_headers()?;
        let ruri = Uri::parse(m.request_uri().unwrap_or_default())?;
        let from = m.from()?;
        let to = m.to()?;
        let username = if method == "REGISTER" { to.uri.user.clone() } else { from.uri.user.clone() };
        Ok(Self {
            method: method.to_owned(),
            // The number without a telephone subscriber's parameters (`;isub=…`, `;phone-context=…`).
            dialed: ruri.user.as_deref().map(|u| u.split([';', '?']).next().unwrap_or_default().to_owned()),
            domain: if ruri.host.is_empty() { to.uri.host.clone() } else { ruri.host.clone() },
            username: username.unwrap_or_default(),
            from_user: from.uri.user.clone(),
            from_host: from.uri.host.clone(),
            asserted: m.asserted_identities().into_iter().filter_map(|n| n.uri.user).collect(),
            user_agent: m.user_agent().unwrap_or_default().to_owned(),
            in_dialog: to.tag().is_some(),
            source: Some(source),
            profile: None,
        })
    }
}

/// A number as dialed, without visual separators (space, `-`, `.`, `(`, `)`), letters lower case.
pub fn clean(number: &str) -> String {
    number
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\t'))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A number in the form it is compared in: [`clean`], and an international prefix (`+`, `00`
/// or `intl`) read as `+`.
pub fn normalize(number: &str, intl: &str) -> String {
    let n = clean(number);
    if let Some(rest) = n.strip_prefix('+') {
        return format!("+{rest}");
    }
    for p in [intl, "00"] {
        if !p.is_empty()
            && let Some(rest) = n.strip_prefix(p)
            && !rest.is_empty()
        {
            return format!("+{rest}");
        }
    }
    n
}

/// A border rule with its patterns compiled.
#[derive(Debug)]
struct Border {
    rule: BorderRule,
    domain: Option<regex::Regex>,
    username: Option<regex::Regex>,
    useragent: Option<regex::Regex>,
    net: Option<IpNet>,
}

impl Border {
    fn compile(rule: BorderRule) -> Result<Self, String> {
        let pat = |p: &str| crate::border::compile_pattern(p);
        let net = crate::border::parse_mask(&rule.remoteipmask)?;
        Ok(Self {
            domain: pat(&rule.domain)?,
            username: pat(&rule.username)?,
            useragent: pat(&rule.useragent)?,
            net,
            rule,
        })
    }

    fn matches(&self, f: &Facts, site: &str) -> bool {
        let any = |s: &str| s.is_empty() || s == "*";
        let re = |r: &Option<regex::Regex>, s: &str| r.as_ref().is_none_or(|r| r.is_match(s));
        self.rule.enabled == 1
            && (any(&self.rule.site) || self.rule.site.eq_ignore_ascii_case(site))
            && (any(&self.rule.service) || self.rule.service.eq_ignore_ascii_case("sip"))
            && re(&self.domain, &f.domain)
            && re(&self.username, &f.username)
            && re(&self.useragent, &f.user_agent)
            && self.net.is_none_or(|n| f.source.is_some_and(|a| n.contains(&a)))
    }
}

/// What a tenant user's calls may do.
#[derive(Debug, Default)]
struct Rights {
    /// The role's name.
    role: String,
    /// Whether the role has [`Perm::CallsInternational`].
    international: bool,
    /// Authorization codes.
    codes: Vec<String>,
}

/// Everything the slow path decides with, compiled from the store.
#[derive(Debug, Default)]
pub struct CallPolicy {
    cfg: Calls,
    border: Vec<Border>,
    blacklist: Vec<(String, BlacklistedNumber)>,
    /// Each disallowed code as dialed ([`clean`]) and normalized, with the code. A code that is
    /// only an international prefix (`00`, the configured one, `+`) normalizes to `+`: every
    /// international number.
    disallowed: Vec<(String, String, DisallowedCode)>,
    countries: Vec<String>,
    /// Tenant users by (SIP domain, user name), both lower case.
    callers: HashMap<(String, String), Rights>,
    /// `calls.authcode_form` split around its placeholders (`None`: an invalid form, which
    /// configuration checks refuse, turns codes off).
    authcode_form: Option<(String, String, String)>,
    /// The allow rules, longest prefix first, with their call profiles and expiry.
    allow: Vec<(IpNet, Profile, Option<DateTime<Utc>>)>,
}

impl CallPolicy {
    /// Compiles a policy. Border rules that no longer compile (they were checked when written)
    /// are skipped with a warning rather than stopping every call.
    #[expect(clippy::too_many_arguments, reason = "one argument per table of the store the policy reads")]
    pub fn build(
        cfg: &Calls,
        border: Vec<BorderRule>,
        blacklist: Vec<BlacklistedNumber>,
        disallowed: Vec<DisallowedCode>,
        countries: &[String],
        callers: Vec<Caller>,
        roles: &[Role],
        nets: &[NetRule],
    ) -> Self {
        let intl = cfg.international_prefix.as_str();
        let mut allow: Vec<_> = nets
            .iter()
            .filter(|r| r.action == NetAction::Allow)
            .map(|r| (r.cidr, r.profile, r.expires_at))
            .collect();
        allow.sort_by_key(|(net, _, _)| std::cmp::Reverse(net.prefix_len()));
        let mut border: Vec<Border> = border
            .into_iter()
            .filter_map(|r| {
                let id = r.id.clone();
                Border::compile(r).map_err(|e| tracing::warn!(rule = id, "border rule skipped: {e}")).ok()
            })
            .collect();
        border.sort_by(|a, b| a.rule.priority.cmp(&b.rule.priority).then_with(|| a.rule.id.cmp(&b.rule.id)));
        let mut by_name: HashMap<(String, String), Rights> = HashMap::new();
        for c in callers {
            // A role that no longer exists grants nothing (roles in use cannot be deleted).
            let international =
                roles.iter().any(|r| r.name.eq_ignore_ascii_case(&c.role) && r.has(Perm::CallsInternational));
            let rights =
                by_name.entry((c.domain.to_ascii_lowercase(), c.username.to_ascii_lowercase())).or_default();
            rights.codes.extend(c.codes);
            rights.international = international;
            rights.role = c.role;
        }
        Self {
            cfg: cfg.clone(),
            border,
            blacklist: blacklist.into_iter().map(|b| (normalize(&b.number, intl), b)).collect(),
            disallowed: disallowed
                .into_iter()
                .map(|d| {
                    let raw = clean(&d.number_prefix);
                    let international = raw == "+" || raw == "00" || (!intl.is_empty() && raw == intl);
                    let norm = if international { "+".to_owned() } else { normalize(&raw, intl) };
                    (raw, norm, d)
                })
                .collect(),
            countries: countries.iter().map(|c| country_key(c).to_owned()).collect(),
            callers: by_name,
            authcode_form: cfg
                .authcode_parts()
                .ok()
                .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned())),
            allow,
        }
    }

    /// The call profile of the live allow rule with the longest prefix holding `addr` (as the
    /// kernel finds it); `None` outside every allow rule.
    pub fn profile_of(&self, addr: IpAddr, now: DateTime<Utc>) -> Option<Profile> {
        self.allow
            .iter()
            .find(|(net, _, expires)| net.contains(&addr) && expires.is_none_or(|t| now < t))
            .map(|(_, p, _)| *p)
    }

    /// Whether the fraud thresholds apply to a call with these facts: not to a trunk's (its
    /// calls are inbound) nor a trusted network's.
    pub fn fraud_applies(f: &Facts) -> bool {
        matches!(f.profile, None | Some(Profile::Phones))
    }

    /// Wrong authorization codes allowed per source or caller, and in what window.
    pub fn authcode_lockout(&self) -> (u32, std::time::Duration) {
        (self.cfg.authcode_failures, std::time::Duration::from_secs(self.cfg.authcode_window_secs))
    }

    /// Whether initial INVITEs need the daemon: some rule could refuse or rewrite a call.
    pub fn wants_invites(&self) -> bool {
        self.border.iter().any(|b| b.rule.enabled == 1)
            || !self.blacklist.is_empty()
            || !self.disallowed.is_empty()
            || !self.countries.is_empty()
            || self.callers.values().any(|r| !r.codes.is_empty() || !r.international)
            || self.cfg.fraud.any()
    }

    /// The fraud thresholds and the international prefix they read numbers with.
    pub fn fraud(&self) -> (&crate::config::Fraud, &str) {
        (&self.cfg.fraud, &self.cfg.international_prefix)
    }

    /// Whether REGISTERs need the daemon: an enabled border rule has a user name or domain
    /// pattern.
    pub fn wants_registers(&self) -> bool {
        self.border.iter().any(|b| b.rule.enabled == 1 && (b.username.is_some() || b.domain.is_some()))
    }

    /// Decides a request.
    pub fn decide(&self, f: &Facts, now: DateTime<Utc>) -> Decision {
        if f.in_dialog {
            return Decision::new(Verdict::Allow, Step::InDialog, "-", "To carries a tag: not a new call");
        }
        if f.profile == Some(Profile::Trusted) {
            return Decision::new(
                Verdict::Allow,
                Step::Default,
                "allow rule (profile trusted)",
                "the source is in an authorized network whose calls are not checked",
            );
        }
        if let Some(b) = self.border.iter().find(|b| b.matches(f, &self.cfg.site)) {
            let verdict = match b.rule.action {
                BorderAction::Allow => Verdict::Allow,
                BorderAction::Deny => Verdict::Deny,
                BorderAction::Drop => Verdict::Drop,
            };
            let title = if b.rule.opts.title.is_empty() {
                String::new()
            } else {
                format!(" ({})", b.rule.opts.title)
            };
            return Decision::new(
                verdict,
                Step::Border,
                format!("border rule {}{title}", b.rule.id),
                format!(
                    "the first matching border rule (priority {}) says {}",
                    b.rule.priority,
                    b.rule.action.as_str()
                ),
            );
        }
        if f.method != "INVITE" {
            return Decision::new(
                Verdict::Allow,
                Step::Default,
                "-",
                format!("no border rule matches this {}", f.method),
            );
        }
        let intl = self.cfg.international_prefix.as_str();
        let callers: Vec<String> =
            f.from_user.iter().chain(&f.asserted).map(|u| normalize(u, intl)).collect();
        // Phones' calls are outbound: their caller is the operator's own extension.
        let blacklist = if f.profile == Some(Profile::Phones) { &[][..] } else { &self.blacklist[..] };
        for (n, b) in blacklist {
            if b.expire_at.is_some_and(|t| t <= now) {
                continue;
            }
            if let Some(c) = callers.iter().find(|c| *c == n) {
                return Decision::new(
                    Verdict::Deny,
                    Step::Blacklist,
                    format!("blacklisted number {} ({})", b.id, b.number),
                    format!("the caller {c} is blacklisted"),
                );
            }
        }
        if f.profile == Some(Profile::Trunk) {
            return Decision::new(
                Verdict::Allow,
                Step::Default,
                "allow rule (profile trunk)",
                "an inbound call from a trunk: only the rules about callers apply",
            );
        }
        let Some(dialed) = f.dialed.as_deref() else {
            return Decision::new(Verdict::Allow, Step::Default, "-", "no dialed user in the Request-URI");
        };
        // The caller as a tenant user: From host (the tenant's SIP domain) and user.
        let caller =
            (f.from_host.to_ascii_lowercase(), f.from_user.clone().unwrap_or_default().to_ascii_lowercase());
        if let Some((code, number)) = self.split_code(dialed) {
            let key = &caller;
            return if self.callers.get(key).is_some_and(|r| r.codes.iter().any(|c| c == code)) {
                Decision {
                    dial: Some(number.to_owned()),
                    ..Decision::new(
                        Verdict::Allow,
                        Step::AuthCode,
                        format!("authorization code of {}@{}", key.1, key.0),
                        format!("a valid authorization code unlocks {number}"),
                    )
                }
            } else {
                Decision::new(
                    Verdict::Deny,
                    Step::AuthCode,
                    format!("authorization codes of {}@{}", key.1, key.0),
                    "the authorization code dialed is not one of the caller's",
                )
            };
        }
        let number = normalize(dialed, intl);
        // A code matches the number as dialed or as normalized, so that it bars what the
        // operator wrote: `0` bars `0049…` too (normalized `+49…`), `00` every international call.
        let as_dialed = clean(dialed);
        if let Some((_, p, d)) = self
            .disallowed
            .iter()
            .filter(|(raw, norm, _)| number.starts_with(norm.as_str()) || as_dialed.starts_with(raw.as_str()))
            .max_by_key(|(raw, norm, _)| raw.len().max(norm.len()))
        {
            return Decision::new(
                Verdict::Deny,
                Step::DisallowedCode,
                format!("disallowed code {} ({})", d.id, d.number_prefix),
                format!("{number} starts with the disallowed code {p}"),
            );
        }
        if let Some(intl_number) = number.strip_prefix('+')
            && !self.countries.is_empty()
            && !self.countries.iter().any(|c| intl_number.starts_with(c.as_str()))
        {
            return Decision::new(
                Verdict::Deny,
                Step::Country,
                format!("allowed country codes (+{})", self.countries.join(", +")),
                format!("{number} is international and its country code is not allowed"),
            );
        }
        if number.starts_with('+')
            && let Some(rights) = self.callers.get(&caller)
            && !rights.international
        {
            return Decision::new(
                Verdict::Deny,
                Step::Role,
                format!("role {} of {}@{}", rights.role, caller.1, caller.0),
                format!("{number} is international and the caller's role may not dial international numbers"),
            );
        }
        Decision::new(Verdict::Allow, Step::Default, "-", "no rule objects to this call")
    }

    /// `(code, number)` when `dialed` has the authorization-code form.
    fn split_code<'d>(&self, dialed: &'d str) -> Option<(&'d str, &'d str)> {
        let (before, between, after) = self.authcode_form.as_ref()?;
        let rest = dialed.strip_prefix(before.as_str())?;
        let rest = rest.strip_suffix(after.as_str())?;
        let (code, number) = rest.split_once(between.as_str())?;
        (!code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()) && !number.is_empty())
            .then_some((code, number))
    }

    /// Numbers of rules by kind, for status.
    pub fn summary(&self) -> PolicySummary {
        PolicySummary {
            border_rules: self.border.len(),
            blacklisted_numbers: self.blacklist.len(),
            disallowed_codes: self.disallowed.len(),
            allowed_countries: self.countries.len(),
            callers_with_codes: self.callers.values().filter(|r| !r.codes.is_empty()).count(),
            national_callers: self.callers.values().filter(|r| !r.international).count(),
            fraud: self.cfg.fraud.clone(),
            hand_up_invites: self.wants_invites(),
            hand_up_registers: self.wants_registers(),
        }
    }
}

/// What the policy in force holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySummary {
    /// Border rules (enabled or not).
    pub border_rules: usize,
    /// Blacklisted numbers.
    pub blacklisted_numbers: usize,
    /// Disallowed codes.
    pub disallowed_codes: usize,
    /// Allowed country codes (0: every country).
    pub allowed_countries: usize,
    /// Users with authorization codes.
    pub callers_with_codes: usize,
    /// Users whose role may not dial international numbers.
    pub national_callers: usize,
    /// The fraud thresholds in force.
    #[serde(default)]
    pub fraud: crate::config::Fraud,
    /// Whether the kernel hands up initial INVITEs.
    pub hand_up_invites: bool,
    /// Whether the kernel hands up REGISTERs.
    pub hand_up_registers: bool,
}

/// The policy in force, shared by the daemon (which replaces it when rules change) and the slow
/// path (which reads it per request without taking the daemon's lock).
#[derive(Debug, Default)]
pub struct Live(RwLock<Arc<CallPolicy>>);

impl Live {
    /// The policy in force.
    pub fn get(&self) -> Arc<CallPolicy> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Puts a new policy in force.
    pub fn set(&self, p: CallPolicy) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::border::{Ext, Opts};

    fn facts(dialed: &str, from: &str) -> Facts {
        Facts {
            method: "INVITE".into(),
            dialed: Some(dialed.into()),
            domain: "pbx.example.com".into(),
            username: from.into(),
            from_user: Some(from.into()),
            from_host: "tenant.example.com".into(),
            user_agent: "PolycomVVX".into(),
            source: Some("198.51.100.7".parse().unwrap()),
            ..Facts::default()
        }
    }

    fn border(id: &str, priority: u32, username: &str, action: BorderAction) -> BorderRule {
        BorderRule {
            id: id.into(),
            enabled: 1,
            priority,
            site: "*".into(),
            service: "sip".into(),
            domain: String::new(),
            username: username.into(),
            useragent: String::new(),
            remoteipmask: String::new(),
            action,
            opts: Opts::default(),
            ext: Ext { ct: String::new(), lwt: String::new() },
        }
    }

    fn policy(border: Vec<BorderRule>) -> CallPolicy {
        let now = Utc::now();
        CallPolicy::build(
            &Calls::default(),
            border,
            vec![BlacklistedNumber {
                id: "1".into(),
                number: "+1 (555) 123-4567".into(),
                expire_at: None,
                created_at: now,
                updated_at: now,
                description: String::new(),
            }],
            vec![
                DisallowedCode { id: "1".into(), number_prefix: "+882".into(), description: String::new() },
                DisallowedCode { id: "2".into(), number_prefix: "1900".into(), description: String::new() },
            ],
            &["+44".into(), "49".into(), "1".into()],
            vec![
                Caller {
                    domain: "Tenant.example.com".into(),
                    username: "101".into(),
                    role: "StandardInternationalUser".into(),
                    codes: vec!["4711".into()],
                },
                Caller {
                    domain: "tenant.example.com".into(),
                    username: "102".into(),
                    role: "standarduser".into(),
                    codes: vec!["4712".into()],
                },
            ],
            &crate::accounts::builtin_roles(),
            &[
                allow_rule("198.18.0.0/24", Profile::Trunk),
                allow_rule("198.18.1.0/24", Profile::Phones),
                allow_rule("198.18.1.7/32", Profile::Trusted),
            ],
        )
    }

    fn allow_rule(cidr: &str, profile: Profile) -> NetRule {
        NetRule {
            id: 1,
            cidr: cidr.parse().unwrap(),
            action: NetAction::Allow,
            scope: crate::net::Scope::Sip,
            profile,
            expires_at: None,
            comment: String::new(),
            origin: crate::net::Origin::Manual,
            list: None,
            created_at: Utc::now(),
        }
    }

    /// Item 3 of issue 17: a trunk's calls meet the rules about callers only, phones' the rules
    /// about dialed numbers only, a trusted network's none; the longest allow rule decides the
    /// profile, as in the kernel.
    #[test]
    fn call_profiles_choose_the_rules_that_apply() {
        let p = policy(vec![]);
        let now = Utc::now();
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        assert_eq!(p.profile_of(ip("198.18.0.9"), now), Some(Profile::Trunk));
        assert_eq!(p.profile_of(ip("198.18.1.9"), now), Some(Profile::Phones));
        assert_eq!(p.profile_of(ip("198.18.1.7"), now), Some(Profile::Trusted), "the longer prefix");
        assert_eq!(p.profile_of(ip("203.0.113.1"), now), None);
        let decide = |profile: Option<Profile>, dialed: &str, from: &str| {
            let f = Facts { profile, ..facts(dialed, from) };
            let d = p.decide(&f, now);
            (d.verdict, d.step)
        };
        // A blacklisted caller dialing a barred number, from each place.
        let (barred, blacklisted) = ("+88212345", "+15551234567");
        assert_eq!(decide(None, barred, blacklisted), (Verdict::Deny, Step::Blacklist));
        assert_eq!(decide(Some(Profile::Trunk), barred, blacklisted), (Verdict::Deny, Step::Blacklist));
        assert_eq!(decide(Some(Profile::Trunk), barred, "100"), (Verdict::Allow, Step::Default));
        assert_eq!(decide(Some(Profile::Phones), barred, blacklisted), (Verdict::Deny, Step::DisallowedCode));
        assert_eq!(decide(Some(Profile::Phones), "+4930123", "102"), (Verdict::Deny, Step::Role));
        assert_eq!(decide(Some(Profile::Phones), "+4930123", blacklisted), (Verdict::Allow, Step::Default));
        assert_eq!(decide(Some(Profile::Trusted), barred, blacklisted), (Verdict::Allow, Step::Default));
        let f = |profile| Facts { profile, ..facts(barred, "100") };
        assert!(CallPolicy::fraud_applies(&f(None)) && CallPolicy::fraud_applies(&f(Some(Profile::Phones))));
        assert!(!CallPolicy::fraud_applies(&f(Some(Profile::Trunk))));
    }

    /// Item 4 of issue 17: PortSIP's StandardUser may not call international numbers, its
    /// StandardInternationalUser may; an authorization code unlocks a call for either, and
    /// callers who are no tenant user are left to the number rules.
    #[test]
    fn roles_decide_international_calls() {
        let p = policy(vec![]);
        let now = Utc::now();
        let decide = |dialed: &str, from: &str| p.decide(&facts(dialed, from), now);
        for dialed in ["+4930123", "004930123", "00 44 20 7946 0000"] {
            let d = decide(dialed, "102");
            assert_eq!((d.verdict, d.step), (Verdict::Deny, Step::Role), "{dialed}");
            assert!(
                d.rule.contains("standarduser") && d.rule.contains("102@tenant.example.com"),
                "{}",
                d.rule
            );
            assert_eq!(decide(dialed, "101").step, Step::Default, "{dialed}");
            assert_eq!(decide(dialed, "103").step, Step::Default, "not a tenant user: {dialed}");
        }
        assert_eq!(decide("0301234", "102").step, Step::Default, "a national call");
        let unlocked = decide("*4712*004930123", "102");
        assert_eq!((unlocked.verdict, unlocked.step), (Verdict::Allow, Step::AuthCode));
        // The country and prefix rules come first: their reasons are the ones reported.
        assert_eq!(decide("+882123", "102").step, Step::DisallowedCode);
        assert_eq!(decide("+86101234", "102").step, Step::Country);
        // A caller of another tenant with the same user name is another caller.
        let mut other = facts("+4930123", "102");
        other.from_host = "other.example.com".into();
        assert_eq!(p.decide(&other, now).step, Step::Default);
        assert!(p.wants_invites());
        let roles_only = CallPolicy::build(
            &Calls::default(),
            vec![],
            vec![],
            vec![],
            &[],
            vec![Caller {
                domain: "t".into(),
                username: "1".into(),
                role: "StandardUser".into(),
                codes: vec![],
            }],
            &crate::accounts::builtin_roles(),
            &[],
        );
        assert!(roles_only.wants_invites(), "a StandardUser's calls need the daemon");
        assert_eq!(roles_only.summary().national_callers, 1);
    }

    /// A policy with these disallowed codes and nothing else.
    fn barring(codes: &[&str]) -> CallPolicy {
        let codes = codes
            .iter()
            .enumerate()
            .map(|(i, c)| DisallowedCode {
                id: i.to_string(),
                number_prefix: (*c).into(),
                description: String::new(),
            })
            .collect();
        CallPolicy::build(&Calls::default(), vec![], vec![], codes, &[], vec![], &[], &[])
    }

    /// Item 6 of issue 16: a disallowed code means what the operator wrote. `00` (or the
    /// configured international prefix, or `+`) bars every international call however it is
    /// dialed; `0` bars national and international numbers alike; a country code bars that
    /// country in every form.
    #[test]
    fn disallowed_codes_bar_what_the_operator_means() {
        let now = Utc::now();
        let step = |p: &CallPolicy, dialed: &str| p.decide(&facts(dialed, "101"), now).step;
        for intl in ["00", "+"] {
            let p = barring(&[intl]);
            for dialed in ["004930123", "+4930123", "00 1 555 0100"] {
                assert_eq!(step(&p, dialed), Step::DisallowedCode, "{intl} bars {dialed}");
            }
            assert_eq!(step(&p, "0301234"), Step::Default, "{intl} leaves national calls");
        }
        let p = barring(&["0"]);
        for dialed in ["0301234", "004930123"] {
            assert_eq!(step(&p, dialed), Step::DisallowedCode, "0 bars {dialed}");
        }
        assert_eq!(step(&p, "+4930123"), Step::Default, "dialed with +, no 0 was dialed");
        assert_eq!(step(&p, "101"), Step::Default);
        let p = barring(&["0049"]);
        for dialed in ["004930123", "+4930123", "+49 30 123"] {
            assert_eq!(step(&p, dialed), Step::DisallowedCode, "0049 bars {dialed}");
        }
        assert_eq!(step(&p, "004430123"), Step::Default);
    }

    /// M1: parameters in the Request-URI user do not hide the dialed number.
    #[test]
    fn the_dialed_number_is_read_past_user_parameters() {
        for ruri in ["sip:+882777;isub=1@pbx.example;user=phone", "sip:+882777?x@pbx.example"] {
            let text = format!(
                "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
                 From: <sip:101@t.example>;tag=1\r\nTo: <sip:+882777@pbx.example>\r\n\
                 Call-ID: a\r\nCSeq: 1 INVITE\r\n\r\n"
            );
            let m = crate::calls::message::parse(text.as_bytes()).unwrap();
            let f = Facts::read(&m, "192.0.2.1".parse().unwrap()).unwrap();
            assert_eq!(f.dialed.as_deref(), Some("+882777"), "{ruri}");
            let d = policy(vec![]).decide(&f, Utc::now());
            assert_eq!((d.verdict, d.step), (Verdict::Deny, Step::DisallowedCode), "{ruri}");
        }
    }

    #[test]
    fn numbers_normalize_to_one_form() {
        assert_eq!(normalize("+49 (30) 123-45.6", "00"), "+4930123456");
        assert_eq!(normalize("0049301234", "00"), "+49301234");
        assert_eq!(normalize("01149301234", "011"), "+49301234");
        assert_eq!(normalize("030 1234", "00"), "0301234");
        assert_eq!(normalize("00", "00"), "00");
    }

    #[test]
    fn each_step_decides_in_order() {
        let now = Utc::now();
        let p = policy(vec![]);
        let d = |dialed: &str, from: &str| p.decide(&facts(dialed, from), now);
        assert_eq!(d("004930123", "101").step, Step::Default);
        assert_eq!(d("0301234", "101").verdict, Verdict::Allow); // national
        let b = d("004930123", "+15551234567");
        assert_eq!((b.verdict, b.step), (Verdict::Deny, Step::Blacklist));
        let pai = Facts { asserted: vec!["001-555-123-4567".into()], ..facts("004930123", "anonymous") };
        assert_eq!(p.decide(&pai, now).step, Step::Blacklist);
        assert_eq!(d("+882 123", "101").step, Step::DisallowedCode);
        assert_eq!(d("1900555", "101").step, Step::DisallowedCode);
        let c = d("0086 10 1234", "101");
        assert_eq!((c.verdict, c.step), (Verdict::Deny, Step::Country));
        assert_eq!(d("+12125551234", "101").verdict, Verdict::Allow);
        // An authorization code unlocks a barred destination and is removed.
        let a = d("*4711*008621234", "101");
        assert_eq!(
            (a.verdict, a.step, a.dial.as_deref()),
            (Verdict::Allow, Step::AuthCode, Some("008621234"))
        );
        let wrong = d("*1234*008621234", "101");
        assert_eq!((wrong.verdict, wrong.step), (Verdict::Deny, Step::AuthCode));
        assert_eq!(d("*4711*008621234", "102").verdict, Verdict::Deny);
        assert!(p.wants_invites() && !p.wants_registers());
    }

    #[test]
    fn border_rules_in_priority_order_and_expiry() {
        let now = Utc::now();
        let mut disabled = border("off", 1, "", BorderAction::Drop);
        disabled.enabled = 0;
        let p = policy(vec![
            border("late", 20, "", BorderAction::Deny),
            border("early", 10, "^10[0-9]$", BorderAction::Allow),
            disabled,
        ]);
        assert_eq!(p.decide(&facts("+882", "101"), now).rule, "border rule early");
        assert_eq!(p.decide(&facts("+882", "+15551234567"), now).rule, "border rule late");
        let mut off = border("off", 1, "", BorderAction::Drop);
        off.enabled = 0;
        off.remoteipmask = "198.51.100.0/24".into();
        let mut p = policy(vec![off]);
        assert_eq!(p.decide(&facts("1", "x"), now).step, Step::Default);
        p.blacklist[0].1.expire_at = Some(now - chrono::Duration::seconds(1));
        assert_eq!(p.decide(&facts("1", "+15551234567"), now).step, Step::Default);
        assert!(p.wants_invites());
        let reg = policy(vec![border("r", 1, "^admin$", BorderAction::Drop)]);
        assert!(reg.wants_registers());
        let f = Facts { method: "REGISTER".into(), username: "admin".into(), ..facts("", "admin") };
        assert_eq!(reg.decide(&f, now).verdict, Verdict::Drop);
        let f = Facts { username: "101".into(), ..f };
        assert_eq!(reg.decide(&f, now).verdict, Verdict::Allow);
    }
}
