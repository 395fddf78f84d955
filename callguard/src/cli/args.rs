//! Arguments shared by several commands: rule options, expiry times, list paging, the
//! `--json` switch of the resource commands.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use crate::net::{Profile, Scope};

/// Options common to rules.
#[derive(Debug, Args)]
pub struct RuleOpts {
    /// When the rule stops applying: a duration (`90s`, `12h`, `7d`) or an RFC 3339 time.
    #[arg(long, value_parser = parse_expiry, value_name = "DURATION|RFC3339")]
    pub expires: Option<DateTime<Utc>>,
    /// For deny rules: drop only SIP traffic (guarded ports) or everything.
    #[arg(long, value_parser = named(&Scope::ALL, Scope::as_str), default_value = "sip")]
    pub scope: Scope,
    /// For allow rules: what the number-level call checks do with their sources' calls:
    /// `trusted` (none), `trunk` (inbound: blacklisted callers are refused) or `phones`
    /// (outbound: disallowed codes, country codes, authorization codes, roles and fraud
    /// thresholds apply). Signatures and rate limits never apply to an allow rule. Left out:
    /// a rule for the network keeps its profile, a new one is `trusted`.
    #[arg(long, value_parser = named(&Profile::ALL, Profile::as_str))]
    pub profile: Option<Profile>,
    /// Free text shown in `net list`.
    #[arg(long, default_value = "")]
    pub comment: String,
}

/// `net allow|deny CIDR …` or `net allow|deny --country CC …`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["cidr", "country"])))]
pub struct NetAdd {
    /// Address or prefix (`198.18.0.0/15`, `2001:db8::/32`, `198.18.0.7`).
    pub cidr: Option<String>,
    /// Instead of a network, a country (ISO 3166-1 code: `CN`): every network the country
    /// database (`[geoip] database`) places there, following the database when it changes.
    #[arg(long, value_name = "CC")]
    pub country: Option<String>,
    #[command(flatten)]
    pub opts: RuleOpts,
}

pub(crate) fn parse_expiry(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is neither a duration (90s, 12h, 7d) nor an RFC 3339 time: {e}"))?;
    let d = chrono::Duration::from_std(d).map_err(|e| e.to_string())?;
    Ok(Utc::now() + d)
}

/// A resource's command with the output switch every command of it shares.
#[derive(Debug, Args)]
pub struct Resource<C: Subcommand> {
    /// Print the API's answer as JSON (for scripts) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: C,
}

/// Paging and filtering of the PortSIP collections; without `--skip`/`--top` every page is
/// fetched.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Conditions `FIELD OP VALUE [and …]`; OP: eq ne lt le gt ge startswith contains.
    /// Example: `--filter "number startswith '+49'"`.
    #[arg(long)]
    pub filter: Option<String>,
    /// A case-insensitive substring of any text field.
    #[arg(long)]
    pub search: Option<String>,
    /// `FIELD [asc|desc]`, comma-separated. Example: `--order "updated_at desc"`.
    #[arg(long)]
    pub order: Option<String>,
    /// Entries to skip.
    #[arg(long)]
    pub skip: Option<u32>,
    /// Page size, 1 to 100.
    #[arg(long)]
    pub top: Option<u32>,
}

/// A value parser for an enum of the model, by the names the API uses (listed by `--help`): the
/// model stays free of the CLI library.
pub(crate) fn named<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(all.iter().map(|t| name(*t)))
        .map(move |s| all.iter().copied().find(|t| name(*t) == s).unwrap_or(all[0]))
}
