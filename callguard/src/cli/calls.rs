//! The CLI's commands for the number-level call rules: blacklisted numbers, disallowed
//! prefixes, allowed countries, border rules and authorization codes. Each command calls the API route of the seed
//! document over the control socket (as system administrator), prints a table for people or,
//! with `--json`, the API's own answer for scripts. `callguard api` stays for anything else.

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::json;

use super::{
    args::{ListArgs, Resource, parse_expiry},
    client::{Client, query, seg, typed},
    output::{
        Out, border_detail, border_table, codes_table, numbers_table, plural, prefixes_table, with_count,
    },
};
use crate::{
    accounts::AuthCode,
    api::{
        border::BorderQuery,
        codes::{AuthCodes, CodeRef, CodeRefs},
        control::FraudThresholds,
        portsip::{CodeChange, Countries, Created, NewCode, NewNumber, NumberChange},
    },
    border::{BorderAction, BorderRule, BorderRuleInput, Flag, Opts},
    numbers::{BlacklistedNumber, DisallowedCode, country_key},
};

/// `callguard numbers …`: caller numbers that are refused.
#[derive(Debug, Subcommand)]
pub enum NumbersCommand {
    /// List blacklisted numbers.
    List(ListArgs),
    /// Blacklist a caller number (`+4930123456`; letters, digits, an optional leading `+`).
    Add {
        /// The number.
        number: String,
        /// When the entry stops applying: a duration (`90s`, `12h`, `7d`) or an RFC 3339 time.
        #[arg(long, value_parser = parse_expiry, value_name = "DURATION|RFC3339")]
        expires: Option<DateTime<Utc>>,
        /// Remarks (at most 255 characters).
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show one entry.
    Show {
        /// The entry's id.
        id: String,
    },
    /// Change an entry: only what is given changes.
    #[command(group(clap::ArgGroup::new("expiry").args(["expires", "never"])))]
    Update {
        /// The entry's id.
        id: String,
        /// A new number.
        #[arg(long)]
        number: Option<String>,
        /// A new expiry.
        #[arg(long, value_parser = parse_expiry, value_name = "DURATION|RFC3339")]
        expires: Option<DateTime<Utc>>,
        /// Remove the expiry.
        #[arg(long)]
        never: bool,
        /// New remarks.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete entries.
    Del {
        /// Entry ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Print every entry as CSV (the API's export).
    Export,
}

/// `callguard prefixes …`: dialed-number prefixes outside callers may not reach.
#[derive(Debug, Subcommand)]
pub enum PrefixesCommand {
    /// List disallowed prefixes.
    List(ListArgs),
    /// Disallow a prefix (`+882`, `0049`; 1 to 16 letters or digits after an optional `+`).
    Add {
        /// The prefix.
        prefix: String,
        /// Description (at most 1024 characters).
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show one prefix.
    Show {
        /// Its id.
        id: String,
    },
    /// Change a prefix: only what is given changes.
    Update {
        /// Its id.
        id: String,
        /// A new prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// A new description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete prefixes.
    Del {
        /// Their ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Print every prefix as CSV (the API's export).
    Export,
}

/// `callguard countries …`: the country calling codes international calls may reach. While the
/// list is empty every country may be called.
#[derive(Debug, Subcommand)]
pub enum CountriesCommand {
    /// List allowed country codes.
    List,
    /// Replace the whole list (no codes: allow every country).
    Set {
        /// Country calling codes (`44`, `+49`).
        codes: Vec<String>,
    },
    /// Add codes to the list.
    Add {
        /// Country calling codes.
        #[arg(required = true)]
        codes: Vec<String>,
    },
    /// Remove codes from the list.
    Del {
        /// Country calling codes.
        #[arg(required = true)]
        codes: Vec<String>,
    },
}

/// The fields of a border rule that a command may set.
#[derive(Debug, Args)]
pub struct BorderFields {
    /// What a match does: allow (skip the later checks), deny (403), drop (no answer).
    #[arg(long, value_parser = ["allow", "deny", "drop"])]
    pub action: Option<String>,
    /// Lower is consulted first (0 to 2^31-1).
    #[arg(long)]
    pub priority: Option<u32>,
    /// Source network (CIDR or address); absent: any.
    #[arg(long, value_name = "CIDR")]
    pub remote: Option<String>,
    /// Regular expression on the request's domain.
    #[arg(long, value_name = "REGEX")]
    pub domain: Option<String>,
    /// Regular expression on the request's user name.
    #[arg(long, value_name = "REGEX")]
    pub username: Option<String>,
    /// Regular expression on the User-Agent.
    #[arg(long, value_name = "REGEX")]
    pub useragent: Option<String>,
    /// Site name (`*`: every site).
    #[arg(long)]
    pub site: Option<String>,
    /// Service (`sip`, or `*`: every service).
    #[arg(long)]
    pub service: Option<String>,
    /// Enable (true) or disable (false) the rule.
    #[arg(long)]
    pub enabled: Option<bool>,
    /// Title.
    #[arg(long)]
    pub title: Option<String>,
    /// Comment.
    #[arg(long)]
    pub comment: Option<String>,
}

impl BorderFields {
    /// The rule as the API takes it; `current` is the `opts` the rule has, which the API
    /// replaces whole, so that `--title` alone keeps the comment and `--comment` the title.
    fn input(&self, id: Option<&str>, current: Opts) -> BorderRuleInput {
        let opts = (self.title.is_some() || self.comment.is_some()).then(|| Opts {
            title: self.title.clone().unwrap_or(current.title),
            comment: self.comment.clone().unwrap_or(current.comment),
        });
        BorderRuleInput {
            id: id.map(str::to_owned),
            enabled: self.enabled.map(|e| Flag(u8::from(e))),
            priority: self.priority,
            site: self.site.clone(),
            service: self.service.clone(),
            domain: self.domain.clone(),
            username: self.username.clone(),
            useragent: self.useragent.clone(),
            remoteipmask: self.remote.clone(),
            action: self.action.as_deref().and_then(BorderAction::parse),
            opts,
            ext: None,
        }
    }
}

/// `callguard border …`: border rules, consulted by priority for every request the kernel
/// hands up; the first match decides.
#[derive(Debug, Subcommand)]
pub enum BorderCommand {
    /// List rules (by priority).
    List {
        /// A JSON object of field values that must all be equal: `'{"action": "deny"}'`.
        #[arg(long)]
        filter: Option<String>,
        /// Sort order: `field` or `-field` (descending).
        #[arg(long)]
        order: Option<String>,
        /// Rules to skip.
        #[arg(long)]
        offset: Option<u32>,
        /// Most rules to show.
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Create a rule.
    ///
    /// Example: callguard border add --action deny --useragent '(?i)sipvicious' --priority 10
    #[command(verbatim_doc_comment)]
    Add {
        /// An id of your choosing (default: a UUID).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        fields: BorderFields,
    },
    /// Show one rule with every field.
    Show {
        /// The rule's id.
        id: String,
    },
    /// Change a rule: only what is given changes (the id cannot).
    Update {
        /// The rule's id.
        id: String,
        #[command(flatten)]
        fields: BorderFields,
    },
    /// Delete rules.
    Del {
        /// Their ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Whether a rule with this id exists (the seed's LOOKUP method); exit status 1 if not.
    Lookup {
        /// The id.
        id: String,
    },
}

/// Whose authorization codes.
#[derive(Debug, Args)]
pub struct CodeOwner {
    /// The user's tenant.
    #[arg(long, short)]
    pub tenant: String,
    /// The user's group.
    #[arg(long, short)]
    pub group: String,
    /// The user name.
    #[arg(long, short)]
    pub user: String,
}

impl CodeOwner {
    fn path(&self) -> String {
        format!(
            "/api/v1/tenants/{}/groups/{}/users/{}/services/outgoing_call_barring/codes/",
            seg(&self.tenant),
            seg(&self.group),
            seg(&self.user)
        )
    }
}

/// `callguard codes …`: outgoing-call-barring authorization codes of one user. A caller dials
/// `*CODE*NUMBER` to reach a number the prefix and country rules would bar.
#[derive(Debug, Subcommand)]
pub enum CodesCommand {
    /// List a user's codes.
    List {
        #[command(flatten)]
        owner: CodeOwner,
    },
    /// Give a user codes: `CODE` or `CODE:DESCRIPTION`, 1 to 16 digits each, all or none.
    Add {
        #[command(flatten)]
        owner: CodeOwner,
        /// The codes.
        #[arg(required = true, value_name = "CODE[:DESCRIPTION]")]
        codes: Vec<String>,
    },
    /// Take codes away (codes the user does not have are fine).
    Del {
        #[command(flatten)]
        owner: CodeOwner,
        /// The codes.
        #[arg(required = true)]
        codes: Vec<String>,
    },
}

/// `callguard numbers …`
pub(super) async fn numbers(client: &Client, r: &Resource<NumbersCommand>) -> anyhow::Result<()> {
    const BASE: &str = "/api/blacklisted_numbers";
    let o = Out { client, json: r.json };
    match &r.command {
        NumbersCommand::List(a) => {
            let page = o.pages::<BlacklistedNumber>(BASE, a).await?;
            o.page(&page, numbers_table)
        }
        NumbersCommand::Add { number, expires, description } => {
            let body = NewNumber {
                number: number.clone(),
                expire_at: *expires,
                description: Some(description.clone()),
            };
            let b = o.send(Method::POST, BASE, Some(&body)).await?;
            o.print(&b, |c: Created| format!("blacklisted {number} (id {})", c.id))
        }
        NumbersCommand::Show { id } => {
            let b = o.get(&format!("{BASE}/{}", seg(id))).await?;
            o.print(&b, |n: BlacklistedNumber| numbers_table(&[n]).to_string())
        }
        NumbersCommand::Update { id, number, expires, never, description } => {
            let body = NumberChange {
                id: None,
                number: number.clone(),
                expire_at: if *never { Some(None) } else { expires.map(Some) },
                description: description.clone(),
            };
            let b = o.send(Method::POST, &format!("{BASE}/{}", seg(id)), Some(&body)).await?;
            o.print(&b, |n: BlacklistedNumber| numbers_table(&[n]).to_string())
        }
        NumbersCommand::Del { ids } => {
            let destroy = |id: &String| format!("{BASE}/{}/destroy", seg(id));
            o.each(Method::POST, ids, destroy, Some(&json!({})), ("deleted", "number")).await
        }
        NumbersCommand::Export => o.export(BASE).await,
    }
}

/// `callguard prefixes …`
pub(super) async fn prefixes(client: &Client, r: &Resource<PrefixesCommand>) -> anyhow::Result<()> {
    const BASE: &str = "/api/disallowed_codes";
    let o = Out { client, json: r.json };
    match &r.command {
        PrefixesCommand::List(a) => {
            let page = o.pages::<DisallowedCode>(BASE, a).await?;
            o.page(&page, prefixes_table)
        }
        PrefixesCommand::Add { prefix, description } => {
            let body = NewCode { number_prefix: prefix.clone(), description: Some(description.clone()) };
            let b = o.send(Method::POST, BASE, Some(&body)).await?;
            o.print(&b, |c: Created| format!("disallowed {prefix} (id {})", c.id))
        }
        PrefixesCommand::Show { id } => {
            let b = o.get(&format!("{BASE}/{}", seg(id))).await?;
            o.print(&b, |c: DisallowedCode| prefixes_table(&[c]).to_string())
        }
        PrefixesCommand::Update { id, prefix, description } => {
            let body =
                CodeChange { id: None, number_prefix: prefix.clone(), description: description.clone() };
            let b = o.send(Method::POST, &format!("{BASE}/{}", seg(id)), Some(&body)).await?;
            o.print(&b, |c: DisallowedCode| prefixes_table(&[c]).to_string())
        }
        PrefixesCommand::Del { ids } => {
            let destroy = |id: &String| format!("{BASE}/{}/destroy", seg(id));
            o.each(Method::POST, ids, destroy, Some(&json!({})), ("deleted", "prefix")).await
        }
        PrefixesCommand::Export => o.export(BASE).await,
    }
}

/// `callguard countries …`
pub(super) async fn countries(client: &Client, r: &Resource<CountriesCommand>) -> anyhow::Result<()> {
    const BASE: &str = "/api/allowed_country_codes";
    let o = Out { client, json: r.json };
    let current = || async { typed::<Countries>(&o.get(BASE).await?, BASE).map(|c| c.items) };
    let items = match &r.command {
        CountriesCommand::List => None,
        CountriesCommand::Set { codes } => Some(codes.clone()),
        CountriesCommand::Add { codes } => {
            let mut items = current().await?;
            for c in codes {
                if !items.iter().any(|i| country_key(i) == country_key(c)) {
                    items.push(c.clone());
                }
            }
            Some(items)
        }
        CountriesCommand::Del { codes } => {
            let drop: Vec<&str> = codes.iter().map(|c| country_key(c)).collect();
            Some(current().await?.into_iter().filter(|i| !drop.contains(&country_key(i))).collect())
        }
    };
    if let Some(items) = items {
        o.send(Method::POST, BASE, Some(&Countries { items })).await?;
    }
    let b = o.get(BASE).await?;
    o.print(&b, |c: Countries| {
        if c.items.is_empty() {
            "no allowed country codes: international calls may reach every country".into()
        } else {
            format!(
                "international calls may reach: {}",
                c.items.iter().map(|i| format!("+{}", country_key(i))).collect::<Vec<_>>().join(" ")
            )
        }
    })
}

/// `callguard border …`
pub(super) async fn border(client: &Client, r: &Resource<BorderCommand>) -> anyhow::Result<()> {
    const BASE: &str = "/rest/v1/master/borderrules";
    let o = Out { client, json: r.json };
    match &r.command {
        BorderCommand::List { filter, order, offset, limit } => {
            let q = BorderQuery {
                filter: filter.clone(),
                mask: None,
                offset: *offset,
                limit: *limit,
                order: order.clone(),
                flat: None,
            };
            let b = o.get(&format!("{BASE}{}", query(&q)?)).await?;
            o.print(&b, |rules: Vec<BorderRule>| with_count(&border_table(&rules), rules.len(), "rule"))
        }
        BorderCommand::Add { id, fields } => {
            if fields.action.is_none() {
                bail!("--action: give allow, deny or drop");
            }
            let b = o.send(Method::POST, BASE, Some(&fields.input(id.as_deref(), Opts::default()))).await?;
            o.print(&b, |rule: BorderRule| {
                format!("created border rule {}\n{}", rule.id, border_detail(&rule))
            })
        }
        BorderCommand::Show { id } => {
            let b = o.get(&format!("{BASE}/{}", seg(id))).await?;
            o.print(&b, |rule: BorderRule| border_detail(&rule))
        }
        BorderCommand::Update { id, fields } => {
            let one = format!("{BASE}/{}", seg(id));
            let current = if fields.title.is_some() || fields.comment.is_some() {
                typed::<BorderRule>(&o.get(&one).await?, &one)?.opts
            } else {
                Opts::default()
            };
            let b = o.send(Method::PATCH, &one, Some(&fields.input(None, current))).await?;
            o.print(&b, |rule: BorderRule| border_detail(&rule))
        }
        BorderCommand::Del { ids } => {
            let one = |id: &String| format!("{BASE}/{}", seg(id));
            o.each(Method::DELETE, ids, one, None, ("deleted", "border rule")).await
        }
        BorderCommand::Lookup { id } => {
            let method = Method::from_bytes(b"LOOKUP").context("the LOOKUP method")?;
            let b = o.send(method, BASE, Some(id)).await?;
            o.print(&b, |ids: Vec<String>| format!("border rule {} exists", ids.join(", ")))
        }
    }
}

/// `callguard codes …`
pub(super) async fn codes(client: &Client, r: &Resource<CodesCommand>) -> anyhow::Result<()> {
    let o = Out { client, json: r.json };
    match &r.command {
        CodesCommand::List { owner } => {
            let b = o.get(&owner.path()).await?;
            o.print(&b, |c: AuthCodes| with_count(&codes_table(&c.auth_codes), c.auth_codes.len(), "code"))
        }
        CodesCommand::Add { owner, codes } => {
            let auth_codes: Vec<AuthCode> = codes
                .iter()
                .map(|c| match c.split_once(':') {
                    Some((code, d)) => AuthCode { code: code.to_owned(), description: d.to_owned() },
                    None => AuthCode { code: c.clone(), description: String::new() },
                })
                .collect();
            let b = o.send(Method::POST, &owner.path(), Some(&AuthCodes { auth_codes })).await?;
            o.done(&b, &format!("{} added for {}", plural(codes.len(), "code"), owner.user))
        }
        CodesCommand::Del { owner, codes } => {
            let refs = CodeRefs {
                auth_codes: codes.iter().map(|c| CodeRef { code: c.clone(), description: None }).collect(),
            };
            let b = o.send(Method::DELETE, &owner.path(), Some(&refs)).await?;
            o.done(&b, &format!("{} removed from {}", plural(codes.len(), "code"), owner.user))
        }
    }
}

/// `callguard fraud …`: the fraud thresholds (`[calls.fraud]`), shown and changed while the
/// daemon runs.
#[derive(Debug, Subcommand)]
pub enum FraudCommand {
    /// Show the thresholds in force and where they come from (the file, or the API).
    Show {
        /// The API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change thresholds: each SETTING is `KEY=VALUE` with a key of the `[calls.fraud]` table,
    /// the others are kept as they are in force. Written to the store and in force for the next
    /// call; they win over the configuration file's until `callguard fraud reset`.
    ///
    /// Keys: enabled, ban_secs, premium (prefixes, comma-separated), and caller.KEY or
    /// source.KEY with KEY one of calls_per_minute, international_per_hour, parallel,
    /// sequential (0 turns a limit off).
    ///
    /// Example: callguard fraud set caller.international_per_hour=3 premium=0900,0137
    #[command(verbatim_doc_comment)]
    Set {
        /// `KEY=VALUE`, one or more.
        #[arg(required = true, value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// Forget the thresholds written with `set`: the configuration file's apply again.
    Reset,
}

/// `callguard fraud …`
pub(super) async fn fraud(client: &Client, cmd: &FraudCommand) -> anyhow::Result<()> {
    let shown = match cmd {
        FraudCommand::Show { json: true } => {
            let body = client.send::<()>(Method::GET, "/v1/fraud", None).await?;
            println!("{}", String::from_utf8_lossy(&body));
            return Ok(());
        }
        FraudCommand::Show { json: false } => client.get("/v1/fraud").await?,
        FraudCommand::Set { settings } => {
            let now: FraudThresholds = client.get("/v1/fraud").await?;
            let mut t = serde_json::to_value(&now.thresholds)?;
            for s in settings {
                set_threshold(&mut t, s)?;
            }
            typed(&client.send(Method::PUT, "/v1/fraud", Some(&t)).await?, "the thresholds")?
        }
        FraudCommand::Reset => {
            typed(&client.send::<()>(Method::DELETE, "/v1/fraud", None).await?, "the thresholds")?
        }
    };
    print_fraud(&shown);
    Ok(())
}

/// Applies one `KEY=VALUE` to the thresholds as JSON.
fn set_threshold(t: &mut serde_json::Value, setting: &str) -> anyhow::Result<()> {
    const LIMITS: [&str; 4] = ["calls_per_minute", "international_per_hour", "parallel", "sequential"];
    let Some((key, value)) = setting.split_once('=') else {
        bail!("`{setting}`: write KEY=VALUE, say caller.international_per_hour=3");
    };
    let (key, value) = (key.trim(), value.trim());
    let number = || value.parse::<u64>().with_context(|| format!("{key}: `{value}` is not a whole number"));
    let (slot, v) = match key.split_once('.') {
        Some((table @ ("caller" | "source"), limit)) if LIMITS.contains(&limit) => {
            let n = u32::try_from(number()?).with_context(|| format!("{key}: `{value}` is too large"))?;
            (&mut t[table][limit], json!(n))
        }
        None if key == "ban_secs" => (&mut t[key], json!(number()?)),
        None if key == "enabled" => {
            let b =
                value.parse::<bool>().with_context(|| format!("enabled: `{value}` is not true or false"))?;
            (&mut t[key], json!(b))
        }
        None if key == "premium" => {
            let list: Vec<&str> = value.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
            (&mut t[key], json!(list))
        }
        _ => bail!(
            "`{key}` is not a fraud setting: enabled, ban_secs, premium, or caller./source. followed by {}",
            LIMITS.join(", ")
        ),
    };
    *slot = v;
    Ok(())
}

fn print_fraud(t: &FraudThresholds) {
    let f = &t.thresholds;
    let origin = match t.updated_at {
        Some(at) => format!(
            "written through the API at {} (`callguard fraud reset` returns to the file's)",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => "the configuration file's [calls.fraud]".into(),
    };
    println!("fraud thresholds: {} ({origin})", if f.enabled { "on" } else { "off" });
    let mut table = super::output::table(&[
        "per",
        "calls/minute",
        "international/hour",
        "in setup at once",
        "in sequence",
    ]);
    for (who, l) in [("caller", &f.caller), ("source", &f.source)] {
        table.add_row(vec![
            who.to_string(),
            l.calls_per_minute.to_string(),
            l.international_per_hour.to_string(),
            l.parallel.to_string(),
            l.sequential.to_string(),
        ]);
    }
    println!("{table}");
    println!(
        "premium prefixes: {}; ban of a source past a source threshold: {}",
        if f.premium.is_empty() { "none".into() } else { f.premium.join(", ") },
        if f.ban_secs == 0 { "off".into() } else { format!("{} s", f.ban_secs) }
    );
    println!("0 turns a limit off");
}
