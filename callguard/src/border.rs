//! Border rules (the `borderrules` seed): ordered allow / deny / drop rules on a request's
//! domain, user name and User-Agent (regular expressions) and its source network. The daemon
//! evaluates them for the requests the kernel hands up; this module holds the entity, its
//! validation and its compiled form.

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest pattern, in bytes.
pub const PATTERN_MAX: usize = 256;
/// Largest compiled program a pattern may produce (the `regex` crate's size limit), in bytes:
/// patterns like `(a{100}){100}` are refused on write instead of eating memory.
pub const PATTERN_PROGRAM_MAX: usize = 64 * 1024;
/// Longest `site`, `service`, `opts.title`, `opts.comment`.
pub const TEXT_MAX: usize = 256;
/// Most border rules kept.
pub const RULES_MAX: usize = 10_000;

/// What a matching rule does with the request.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BorderAction {
    /// Let it through (no later rule is consulted).
    Allow,
    /// Answer `403 Forbidden`.
    Deny,
    /// Discard silently.
    Drop,
}

impl BorderAction {
    /// The lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Drop => "drop",
        }
    }
    /// Parses the lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Allow, Self::Deny, Self::Drop].into_iter().find(|a| a.as_str() == s)
    }
}

/// `opts`: operator text.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Opts {
    /// Title.
    #[serde(default)]
    pub title: String,
    /// Comment.
    #[serde(default)]
    pub comment: String,
}

/// `ext`: times kept by the server (read-only).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct Ext {
    /// Creation time.
    #[schema(value_type = String, format = DateTime)]
    pub ct: String,
    /// Last write time.
    #[schema(value_type = String, format = DateTime)]
    pub lwt: String,
}

/// A stored border rule, as the seed shows it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct BorderRule {
    /// Unique id (a UUID unless the creator chose one).
    pub id: String,
    /// 1: enabled, 0: disabled.
    pub enabled: u8,
    /// Lower is consulted first.
    pub priority: u32,
    /// Site name; `*` or empty: every site.
    pub site: String,
    /// Service; `sip`, or `*` / empty: every service.
    pub service: String,
    /// Regular expression on the request's domain; empty: any.
    pub domain: String,
    /// Regular expression on the request's user name; empty: any.
    pub username: String,
    /// Regular expression on the User-Agent; empty: any.
    pub useragent: String,
    /// Source network (CIDR; host bits allowed and ignored); empty: any address.
    pub remoteipmask: String,
    /// What a match does.
    pub action: BorderAction,
    /// Operator text.
    pub opts: Opts,
    /// Server-kept times.
    pub ext: Ext,
}

/// A border rule as written by a client: every field optional (POST fills defaults, PATCH keeps
/// what is absent). `ext` is accepted and ignored, so that a client may send back what it read.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BorderRuleInput {
    /// Id: chosen by the server when absent on create; immutable afterwards.
    pub id: Option<String>,
    /// 1 or 0 (`true`/`false` accepted).
    #[schema(value_type = Option<u8>)]
    pub enabled: Option<Flag>,
    /// 0 to 2^31-1.
    pub priority: Option<u32>,
    /// Site.
    pub site: Option<String>,
    /// Service.
    pub service: Option<String>,
    /// Domain pattern.
    pub domain: Option<String>,
    /// User name pattern.
    pub username: Option<String>,
    /// User-Agent pattern.
    pub useragent: Option<String>,
    /// Source network.
    pub remoteipmask: Option<String>,
    /// `allow`, `deny` or `drop`.
    pub action: Option<BorderAction>,
    /// Operator text.
    pub opts: Option<Opts>,
    /// Ignored.
    #[schema(value_type = Option<Object>)]
    pub ext: Option<serde_json::Value>,
}

/// 0/1, also accepted as `false`/`true`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Flag(pub u8);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(b) => Ok(Self(u8::from(b))),
            serde_json::Value::Number(n) if n.as_u64() == Some(0) => Ok(Self(0)),
            serde_json::Value::Number(n) if n.as_u64() == Some(1) => Ok(Self(1)),
            other => Err(serde::de::Error::custom(format!("expected 0, 1, true or false, got {other}"))),
        }
    }
}

/// Compiles one pattern with the size limits.
pub fn compile_pattern(p: &str) -> Result<Option<regex::Regex>, String> {
    if p.is_empty() {
        return Ok(None);
    }
    if p.len() > PATTERN_MAX {
        return Err(format!("longer than {PATTERN_MAX} bytes"));
    }
    regex::RegexBuilder::new(p)
        .size_limit(PATTERN_PROGRAM_MAX)
        .dfa_size_limit(PATTERN_PROGRAM_MAX)
        .build()
        .map(Some)
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => {
                format!("compiles to more than {PATTERN_PROGRAM_MAX} bytes; simplify the pattern")
            }
            e => format!("not a valid regular expression: {}", e.to_string().replace('\n', " ")),
        })
}

/// Parses `remoteipmask`: empty (any address) or a CIDR prefix / address; host bits are allowed
/// (the seed's own example has them) and ignored when matching.
pub fn parse_mask(s: &str) -> Result<Option<IpNet>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(Some(n.trunc()));
    }
    s.parse::<std::net::IpAddr>()
        .map(|a| Some(IpNet::from(a)))
        .map_err(|_| format!("`{s}` is not an address or CIDR prefix"))
}

/// Checks an id chosen by a client: 1 to 64 of letters, digits, `-` and `_`.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("`{id}`: 1 to 64 letters, digits, - or _"));
    }
    Ok(())
}

/// The time form of `ext` (the seed's: RFC 3339 with hundredths, `Z`).
pub fn ext_time(t: DateTime<Utc>) -> String {
    format!("{}.{:02}Z", t.format("%Y-%m-%dT%H:%M:%S"), t.timestamp_subsec_millis() / 10)
}

impl BorderRuleInput {
    /// Applies this input over `base` (PATCH) or over the defaults (POST), validating every
    /// field. The error names the field.
    pub fn apply(
        self,
        base: Option<&BorderRule>,
        now: DateTime<Utc>,
    ) -> Result<BorderRule, (String, String)> {
        let bad = |f: &str, m: String| (f.to_owned(), m);
        let id = match (base, self.id) {
            (Some(b), Some(id)) if id != b.id => return Err(bad("id", "is immutable".into())),
            (Some(b), _) => b.id.clone(),
            (None, Some(id)) => {
                check_id(&id).map_err(|m| bad("id", m))?;
                id
            }
            (None, None) => uuid::Uuid::new_v4().to_string(),
        };
        let text = |f: &str,
                    v: Option<String>,
                    old: Option<&String>,
                    def: &str|
         -> Result<String, (String, String)> {
            let v = v.or_else(|| old.cloned()).unwrap_or_else(|| def.into());
            if v.chars().count() > TEXT_MAX {
                return Err(bad(f, format!("longer than {TEXT_MAX} characters")));
            }
            Ok(v)
        };
        let pattern =
            |f: &str, v: Option<String>, old: Option<&String>| -> Result<String, (String, String)> {
                let v = v.or_else(|| old.cloned()).unwrap_or_default();
                compile_pattern(&v).map_err(|m| bad(f, m))?;
                Ok(v)
            };
        let remoteipmask =
            self.remoteipmask.or_else(|| base.map(|b| b.remoteipmask.clone())).unwrap_or_default();
        parse_mask(&remoteipmask).map_err(|m| bad("remoteipmask", m))?;
        let priority = self.priority.or(base.map(|b| b.priority)).unwrap_or(0);
        if priority > i32::MAX as u32 {
            return Err(bad("priority", format!("larger than {}", i32::MAX)));
        }
        let opts = self.opts.or_else(|| base.map(|b| b.opts.clone())).unwrap_or_default();
        if opts.title.chars().count() > TEXT_MAX {
            return Err(bad("opts.title", format!("longer than {TEXT_MAX} characters")));
        }
        if opts.comment.chars().count() > TEXT_MAX {
            return Err(bad("opts.comment", format!("longer than {TEXT_MAX} characters")));
        }
        Ok(BorderRule {
            id,
            enabled: self.enabled.map(|f| f.0).or(base.map(|b| b.enabled)).unwrap_or(1),
            priority,
            site: text("site", self.site, base.map(|b| &b.site), "*")?,
            service: text("service", self.service, base.map(|b| &b.service), "sip")?,
            domain: pattern("domain", self.domain, base.map(|b| &b.domain))?,
            username: pattern("username", self.username, base.map(|b| &b.username))?,
            useragent: pattern("useragent", self.useragent, base.map(|b| &b.useragent))?,
            remoteipmask,
            action: self.action.or(base.map(|b| b.action)).unwrap_or(BorderAction::Allow),
            opts,
            ext: Ext { ct: base.map_or_else(|| ext_time(now), |b| b.ext.ct.clone()), lwt: ext_time(now) },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_patterns_compile_and_bombs_do_not() {
        for p in ["docs[.]rootdomain[.]ru", "friendly-scanner.", "^.test.$", "test[A-Z]*", "...endly-scann.."]
        {
            assert!(compile_pattern(p).unwrap().is_some(), "{p}");
        }
        assert!(compile_pattern("(").unwrap_err().contains("regular expression"));
        assert!(compile_pattern("(a{100}){100}").unwrap_err().contains("compiles to more than"));
        assert!(compile_pattern(&"a".repeat(300)).unwrap_err().contains("longer than"));
    }

    #[test]
    fn masks_keep_the_seeds_host_bits_example() {
        assert_eq!(parse_mask("212.53.40.40/4").unwrap().unwrap().to_string(), "208.0.0.0/4");
        assert_eq!(parse_mask("").unwrap(), None);
        assert!(parse_mask("300.1.1.1/8").is_err());
    }

    #[test]
    fn patch_keeps_absent_fields_and_refuses_a_new_id() {
        let now = Utc::now();
        let rule = BorderRuleInput { useragent: Some("friendly".into()), ..Default::default() }
            .apply(None, now)
            .unwrap();
        assert_eq!((rule.enabled, rule.service.as_str(), rule.action), (1, "sip", BorderAction::Allow));
        let patched = BorderRuleInput { action: Some(BorderAction::Drop), ..Default::default() }
            .apply(Some(&rule), now)
            .unwrap();
        assert_eq!(patched.useragent, "friendly");
        assert_eq!(patched.action, BorderAction::Drop);
        assert_eq!(patched.ext.ct, rule.ext.ct);
        let err = BorderRuleInput { id: Some("other".into()), ..Default::default() }
            .apply(Some(&rule), now)
            .unwrap_err();
        assert_eq!(err.0, "id");
    }

    #[test]
    fn ext_times_look_like_the_seeds() {
        let t = DateTime::parse_from_rfc3339("2019-08-26T08:35:13.701Z").unwrap().with_timezone(&Utc);
        assert_eq!(ext_time(t), "2019-08-26T08:35:13.70Z");
    }
}
