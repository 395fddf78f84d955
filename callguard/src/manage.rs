//! The CLI's typed commands for the management API's resources: blacklisted numbers,
//! disallowed prefixes, allowed countries, border rules, authorization codes, tenants, groups,
//! users, roles, sessions (tokens) and API keys. Each command calls the API route of the seed
//! document over the control socket (as system administrator), prints a table for people or,
//! with `--json`, the API's own answer for scripts. `callguard api` stays for anything else.

use std::io::{BufRead as _, IsTerminal as _};

use anyhow::{Context as _, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand, builder::PossibleValuesParser};
use hyper::{Method, body::Bytes};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::{
    accounts::{ApiKey, AuthCode, Group, Perm, Role, Session, Tenant, User},
    api::{
        admin::{
            CreatedKey, CreatedUser, NewGroup, NewKey, NewPassword, NewRole, NewTenant, NewUserReq, UserPatch,
        },
        border::BorderQuery,
        codes::{AuthCodes, CodeRef, CodeRefs},
        portsip::{CodeChange, Countries, Created, NewCode, NewNumber, NumberChange, Page},
        query::ListQuery,
    },
    border::{BorderAction, BorderRule, BorderRuleInput, Flag, Opts},
    client::Client,
    numbers::{BlacklistedNumber, DisallowedCode, country_key},
};

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
        #[arg(long, value_parser = crate::cli::parse_expiry, value_name = "DURATION|RFC3339")]
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
        #[arg(long, value_parser = crate::cli::parse_expiry, value_name = "DURATION|RFC3339")]
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

/// `callguard tenants …`: tenants, one SIP domain each.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// List tenants.
    List,
    /// Create a tenant.
    Add {
        /// The id used in paths: 1 to 64 of a-z 0-9 _ -.
        id: String,
        /// The SIP domain (host name or address), unique.
        #[arg(long)]
        domain: String,
        /// Display name (default: the id).
        #[arg(long)]
        name: Option<String>,
        /// Website.
        #[arg(long, default_value = "")]
        website: String,
    },
    /// Show one tenant.
    Show {
        /// Its id.
        id: String,
    },
    /// Delete a tenant (refused while it has users or groups).
    Del {
        /// Its id.
        id: String,
    },
}

/// `callguard groups …`: groups of users inside a tenant.
#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List a tenant's groups.
    List {
        /// The tenant.
        #[arg(long, short)]
        tenant: String,
    },
    /// Create a group.
    Add {
        /// The tenant.
        #[arg(long, short)]
        tenant: String,
        /// The id used in paths: 1 to 64 of a-z 0-9 _ -.
        id: String,
        /// Display name (default: the id).
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Delete a group (refused while it has users).
    Del {
        /// The tenant.
        #[arg(long, short)]
        tenant: String,
        /// The group's id.
        id: String,
    },
}

/// `callguard users …`: accounts of the API.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List users.
    List {
        /// Only this tenant's users.
        #[arg(long, short)]
        tenant: Option<String>,
        /// Only this group's users.
        #[arg(long, short)]
        group: Option<String>,
    },
    /// Create a user. Without --password-stdin a random password is made and shown once.
    Add {
        /// Account name: letters, digits, `_ - ' .`.
        username: String,
        /// The role (`callguard roles list`).
        #[arg(long)]
        role: String,
        /// The tenant (required unless the role is system-level).
        #[arg(long, short)]
        tenant: Option<String>,
        /// The group (required for group- and user-level roles).
        #[arg(long, short)]
        group: Option<String>,
        /// Read the password (8 to 128 characters) from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// The user must choose a new password at the first sign-in.
        #[arg(long)]
        force_reset: bool,
    },
    /// Show one user.
    Show {
        /// The user's id.
        id: u32,
    },
    /// Change a user's role, group or reset flag.
    Update {
        /// The user's id.
        id: u32,
        /// A new role.
        #[arg(long)]
        role: Option<String>,
        /// A new group in the same tenant.
        #[arg(long, short)]
        group: Option<String>,
        /// Whether the user must set a new password at the next sign-in.
        #[arg(long)]
        force_reset: Option<bool>,
    },
    /// Delete a user (their sessions and keys end with them).
    Del {
        /// The user's id.
        id: u32,
    },
    /// Set a user's password (asked for on a terminal, else the first line of standard input).
    /// The user must choose a new one at the next sign-in, and every session of theirs ends.
    Password {
        /// The user's id.
        id: u32,
    },
}

/// `callguard roles …`: built-in and custom roles.
#[derive(Debug, Subcommand)]
pub enum RolesCommand {
    /// List roles.
    List,
    /// Show one role.
    Show {
        /// Its name.
        name: String,
    },
    /// Create a custom role.
    ///
    /// Example: callguard roles add Auditor --level tenant --permission security.read --permission users.read
    #[command(verbatim_doc_comment)]
    Add {
        /// Unique name (not a built-in role's): letters, digits, `_ - .`.
        name: String,
        /// How far its rights reach.
        #[arg(long, value_parser = ["user", "group", "tenant", "system"])]
        level: String,
        /// A right (repeatable).
        #[arg(long = "permission", short, required = true, value_parser = PossibleValuesParser::new(Perm::ALL.map(Perm::as_str)))]
        permissions: Vec<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a custom role (refused while users have it).
    Del {
        /// Its name.
        name: String,
    },
}

/// `callguard tokens …`: sign-in sessions (an access and a refresh token each).
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// List sessions, of every user or one.
    List {
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<u32>,
    },
    /// Revoke sessions: their tokens stop working at once.
    Revoke {
        /// Session ids.
        #[arg(required = true)]
        ids: Vec<u32>,
    },
}

/// `callguard keys …`: API keys for the Voximplant-style calls (`account_id` + `api_key`).
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List API keys.
    List,
    /// Make a key acting as a user; the secret is shown once.
    Add {
        /// The user whose rights the key carries.
        #[arg(long)]
        user: u32,
        /// Free text.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Delete keys.
    Del {
        /// Their account ids.
        #[arg(required = true)]
        account_ids: Vec<u32>,
    },
}

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

/// A query string (`?a=1&b=2`, or nothing) of a query struct; absent fields are left out.
fn query<T: Serialize>(q: &T) -> anyhow::Result<String> {
    let s = serde_urlencoded::to_string(q)?;
    Ok(if s.is_empty() { s } else { format!("?{s}") })
}

/// A query string of the pairs that have a value.
fn pairs(p: &[(&str, Option<String>)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in p {
        if let Some(v) = v {
            s.append_pair(k, v);
        }
    }
    let s = s.finish();
    if s.is_empty() { s } else { format!("?{s}") }
}

fn typed<T: DeserializeOwned>(body: &Bytes, what: &str) -> anyhow::Result<T> {
    serde_json::from_slice(body).with_context(|| format!("reading the daemon's answer ({what})"))
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn plural(n: usize, one: &str) -> String {
    format!("{n} {one}{}", if n == 1 { "" } else { "s" })
}

/// Sends a request and prints the answer: JSON as the API gave it, or what `show` makes of it.
struct Out<'a> {
    client: &'a Client,
    json: bool,
}

impl Out<'_> {
    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<Bytes> {
        self.client.send(method, path, body).await
    }

    async fn get(&self, path: &str) -> anyhow::Result<Bytes> {
        self.send(Method::GET, path, None::<&()>).await
    }

    /// Prints `body` as pretty JSON when `--json`, else what `human` returns.
    fn print<T: DeserializeOwned>(
        &self,
        body: &Bytes,
        human: impl FnOnce(T) -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            return self.print_json(body);
        }
        println!("{}", human(typed(body, std::any::type_name::<T>())?));
        Ok(())
    }

    /// Prints a fixed confirmation, or the API's answer (`{}` when it had no body) for scripts.
    fn done(&self, body: &Bytes, text: &str) -> anyhow::Result<()> {
        if self.json {
            return self.print_json(body);
        }
        println!("{text}");
        Ok(())
    }

    /// The API's answer as pretty JSON (`{}` when it had no body).
    fn print_json(&self, body: &Bytes) -> anyhow::Result<()> {
        let v: Value = if body.is_empty() { json!({}) } else { typed(body, "JSON")? };
        println!("{}", serde_json::to_string_pretty(&v)?);
        Ok(())
    }

    /// Sends `method` to the path of each id in turn (with `body`), stopping at the first one
    /// the API refuses; the error says the ones before it are done. `verb` and `noun` make the
    /// confirmation ("deleted 2 numbers").
    async fn each<I: std::fmt::Display>(
        &self,
        method: Method,
        ids: &[I],
        path: impl Fn(&I) -> String,
        body: Option<&Value>,
        (verb, noun): (&str, &str),
    ) -> anyhow::Result<()> {
        for id in ids {
            self.send(method.clone(), &path(id), body)
                .await
                .with_context(|| format!("{id}: not {verb} (the ones before it are)"))?;
        }
        self.done(&Bytes::new(), &format!("{verb} {}", plural(ids.len(), noun)))
    }

    /// Prints a collection's CSV export as the API gives it.
    async fn export(&self, base: &str) -> anyhow::Result<()> {
        print!("{}", String::from_utf8_lossy(&self.get(&format!("{base}/export")).await?));
        Ok(())
    }

    /// Every page of a PortSIP collection (or the one asked for), as one page.
    async fn pages<T: DeserializeOwned + Serialize>(
        &self,
        base: &str,
        a: &ListArgs,
    ) -> anyhow::Result<Page<T>> {
        let mut q = ListQuery {
            filter: a.filter.clone(),
            search: a.search.clone(),
            orderby: a.order.clone(),
            skip: a.skip,
            top: a.top,
        };
        let one_page = a.skip.is_some() || a.top.is_some();
        let mut all = Page { count: 0, items: Vec::new() };
        loop {
            let page: Page<T> = typed(&self.get(&format!("{base}{}", query(&q)?)).await?, base)?;
            let got = page.items.len();
            all.count = page.count;
            all.items.extend(page.items);
            if one_page || got == 0 || all.items.len() as u64 >= all.count {
                return Ok(all);
            }
            q.skip = Some(all.items.len() as u32);
        }
    }

    fn page<T: Serialize>(
        &self,
        page: &Page<T>,
        rows: impl FnOnce(&[T]) -> comfy_table::Table,
    ) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(page)?);
        } else {
            println!("{}", rows(&page.items));
            println!("{} of {} shown", page.items.len(), page.count);
        }
        Ok(())
    }
}

fn numbers_table(rows: &[BlacklistedNumber]) -> comfy_table::Table {
    let mut t = crate::cli::table(&["id", "number", "expires", "description", "updated"]);
    for n in rows {
        t.add_row(vec![
            n.id.clone(),
            n.number.clone(),
            n.expire_at.as_ref().map_or("never".into(), time),
            n.description.clone(),
            time(&n.updated_at),
        ]);
    }
    t
}

fn prefixes_table(rows: &[DisallowedCode]) -> comfy_table::Table {
    let mut t = crate::cli::table(&["id", "prefix", "description"]);
    for c in rows {
        t.add_row(vec![c.id.clone(), c.number_prefix.clone(), c.description.clone()]);
    }
    t
}

fn border_table(rows: &[BorderRule]) -> comfy_table::Table {
    let mut t = crate::cli::table(&[
        "id",
        "on",
        "prio",
        "action",
        "remote",
        "domain",
        "username",
        "useragent",
        "site/service",
        "title",
    ]);
    let any = |s: &str| if s.is_empty() { "*".to_owned() } else { s.to_owned() };
    for r in rows {
        t.add_row(vec![
            r.id.clone(),
            if r.enabled == 1 { "yes" } else { "no" }.into(),
            r.priority.to_string(),
            r.action.as_str().into(),
            any(&r.remoteipmask),
            any(&r.domain),
            any(&r.username),
            any(&r.useragent),
            format!("{}/{}", any(&r.site), any(&r.service)),
            r.opts.title.clone(),
        ]);
    }
    t
}

fn border_detail(r: &BorderRule) -> String {
    let any = |s: &str| if s.is_empty() { "(any)".to_owned() } else { s.to_owned() };
    [
        format!("id:        {}", r.id),
        format!("enabled:   {}", if r.enabled == 1 { "yes" } else { "no" }),
        format!("priority:  {}", r.priority),
        format!("action:    {}", r.action.as_str()),
        format!("remote:    {}", any(&r.remoteipmask)),
        format!("domain:    {}", any(&r.domain)),
        format!("username:  {}", any(&r.username)),
        format!("useragent: {}", any(&r.useragent)),
        format!("site:      {}", any(&r.site)),
        format!("service:   {}", any(&r.service)),
        format!("title:     {}", r.opts.title),
        format!("comment:   {}", r.opts.comment),
        format!("created:   {}", r.ext.ct),
        format!("written:   {}", r.ext.lwt),
    ]
    .join("\n")
}

fn codes_table(rows: &[AuthCode]) -> comfy_table::Table {
    let mut t = crate::cli::table(&["code", "description"]);
    for c in rows {
        t.add_row(vec![c.code.clone(), c.description.clone()]);
    }
    t
}

fn tenants_table(rows: &[Tenant]) -> comfy_table::Table {
    let mut t = crate::cli::table(&["id", "name", "domain", "website", "created"]);
    for x in rows {
        t.add_row(vec![
            x.id.clone(),
            x.name.clone(),
            x.domain.clone(),
            x.website.clone(),
            time(&x.created_at),
        ]);
    }
    t
}

fn groups_table(rows: &[Group]) -> comfy_table::Table {
    let mut t = crate::cli::table(&["tenant", "id", "name", "created"]);
    for g in rows {
        t.add_row(vec![g.tenant.clone(), g.id.clone(), g.name.clone(), time(&g.created_at)]);
    }
    t
}

fn users_table(rows: &[User]) -> comfy_table::Table {
    let mut t = crate::cli::table(&["id", "username", "tenant", "group", "role", "must reset", "created"]);
    for u in rows {
        t.add_row(vec![
            u.id.to_string(),
            u.username.clone(),
            u.tenant.clone().unwrap_or_else(|| "-".into()),
            u.group.clone().unwrap_or_else(|| "-".into()),
            u.role.clone(),
            if u.force_reset { "yes" } else { "no" }.into(),
            time(&u.created_at),
        ]);
    }
    t
}

fn roles_table(rows: &[Role]) -> comfy_table::Table {
    let mut t = crate::cli::table(&["name", "level", "built-in", "permissions", "description"]);
    for r in rows {
        t.add_row(vec![
            r.name.clone(),
            r.level.as_str().into(),
            if r.builtin { "yes" } else { "no" }.into(),
            r.permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(" "),
            r.description.clone(),
        ]);
    }
    t
}

fn sessions_table(rows: &[Session]) -> comfy_table::Table {
    let now = Utc::now();
    let mut t = crate::cli::table(&["id", "user", "state", "started", "access until", "refresh until"]);
    for s in rows {
        let state = match s.revoked_at {
            Some(r) => format!("revoked {}", time(&r)),
            None if s.refresh_expires <= now => "expired".into(),
            None if s.access_expires <= now => "refreshable".into(),
            None => "active".into(),
        };
        t.add_row(vec![
            s.id.to_string(),
            s.user_id.to_string(),
            state,
            time(&s.created_at),
            time(&s.access_expires),
            time(&s.refresh_expires),
        ]);
    }
    t
}

fn keys_table(rows: &[ApiKey]) -> comfy_table::Table {
    let mut t = crate::cli::table(&["account_id", "user", "comment", "created"]);
    for k in rows {
        t.add_row(vec![
            k.account_id.to_string(),
            k.user_id.to_string(),
            k.comment.clone(),
            time(&k.created_at),
        ]);
    }
    t
}

fn with_count(table: &comfy_table::Table, n: usize, one: &str) -> String {
    format!("{table}\n{}", plural(n, one))
}

/// A password: asked for twice on a terminal (not echoed), else the first line of stdin.
fn read_password(prompt: &str) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password(format!("{prompt}: "))?;
        let b = rpassword::prompt_password(format!("{prompt} (again): "))?;
        if a != b {
            bail!("the two entries differ; nothing was changed");
        }
        return Ok(a);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
    let p = line.trim_end_matches(['\r', '\n']).to_owned();
    if p.is_empty() {
        bail!("standard input holds no password; nothing was changed");
    }
    Ok(p)
}

/// `callguard numbers …`
pub async fn numbers(client: &Client, r: &Resource<NumbersCommand>) -> anyhow::Result<()> {
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
pub async fn prefixes(client: &Client, r: &Resource<PrefixesCommand>) -> anyhow::Result<()> {
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
pub async fn countries(client: &Client, r: &Resource<CountriesCommand>) -> anyhow::Result<()> {
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
                c.items.iter().map(|i| format!("+{i}")).collect::<Vec<_>>().join(" ")
            )
        }
    })
}

/// `callguard border …`
pub async fn border(client: &Client, r: &Resource<BorderCommand>) -> anyhow::Result<()> {
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
pub async fn codes(client: &Client, r: &Resource<CodesCommand>) -> anyhow::Result<()> {
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

/// `callguard tenants …`
pub async fn tenants(client: &Client, r: &Resource<TenantsCommand>) -> anyhow::Result<()> {
    const BASE: &str = "/api/v1/tenants";
    let o = Out { client, json: r.json };
    match &r.command {
        TenantsCommand::List => {
            let b = o.get(BASE).await?;
            o.print(&b, |t: Vec<Tenant>| with_count(&tenants_table(&t), t.len(), "tenant"))
        }
        TenantsCommand::Add { id, domain, name, website } => {
            let body = NewTenant {
                id: id.clone(),
                name: name.clone().unwrap_or_else(|| id.clone()),
                domain: domain.clone(),
                website: website.clone(),
            };
            let b = o.send(Method::POST, BASE, Some(&body)).await?;
            o.print(&b, |t: Tenant| tenants_table(&[t]).to_string())
        }
        TenantsCommand::Show { id } => {
            let b = o.get(&format!("{BASE}/{}", seg(id))).await?;
            o.print(&b, |t: Tenant| tenants_table(&[t]).to_string())
        }
        TenantsCommand::Del { id } => {
            let b = o.send(Method::DELETE, &format!("{BASE}/{}", seg(id)), None::<&()>).await?;
            o.done(&b, &format!("deleted tenant {id}"))
        }
    }
}

/// `callguard groups …`
pub async fn groups(client: &Client, r: &Resource<GroupsCommand>) -> anyhow::Result<()> {
    let o = Out { client, json: r.json };
    let base = |t: &str| format!("/api/v1/tenants/{}/groups", seg(t));
    match &r.command {
        GroupsCommand::List { tenant } => {
            let b = o.get(&base(tenant)).await?;
            o.print(&b, |g: Vec<Group>| with_count(&groups_table(&g), g.len(), "group"))
        }
        GroupsCommand::Add { tenant, id, name } => {
            let body = NewGroup { id: id.clone(), name: name.clone() };
            let b = o.send(Method::POST, &base(tenant), Some(&body)).await?;
            o.print(&b, |g: Group| groups_table(&[g]).to_string())
        }
        GroupsCommand::Del { tenant, id } => {
            let b = o.send(Method::DELETE, &format!("{}/{}", base(tenant), seg(id)), None::<&()>).await?;
            o.done(&b, &format!("deleted group {id} of {tenant}"))
        }
    }
}

/// `callguard users …`
pub async fn users(client: &Client, r: &Resource<UsersCommand>) -> anyhow::Result<()> {
    const BASE: &str = "/api/v1/users";
    let o = Out { client, json: r.json };
    match &r.command {
        UsersCommand::List { tenant, group } => {
            let q = pairs(&[("tenant", tenant.clone()), ("group", group.clone())]);
            let b = o.get(&format!("{BASE}{q}")).await?;
            o.print(&b, |u: Vec<User>| with_count(&users_table(&u), u.len(), "user"))
        }
        UsersCommand::Add { username, role, tenant, group, password_stdin, force_reset } => {
            let password = if *password_stdin { Some(read_password("password")?) } else { None };
            let body = NewUserReq {
                tenant: tenant.clone(),
                group: group.clone(),
                username: username.clone(),
                password,
                role: role.clone(),
                force_reset: *force_reset,
            };
            let b = o.send(Method::POST, BASE, Some(&body)).await?;
            o.print(&b, |c: CreatedUser| {
                let mut s = users_table(&[c.user]).to_string();
                if let Some(p) = c.password {
                    s += &format!("\npassword (shown once): {p}");
                }
                s
            })
        }
        UsersCommand::Show { id } => {
            let b = o.get(&format!("{BASE}/{id}")).await?;
            o.print(&b, |u: User| users_table(&[u]).to_string())
        }
        UsersCommand::Update { id, role, group, force_reset } => {
            let body = UserPatch { role: role.clone(), group: group.clone(), force_reset: *force_reset };
            let b = o.send(Method::PATCH, &format!("{BASE}/{id}"), Some(&body)).await?;
            o.print(&b, |u: User| users_table(&[u]).to_string())
        }
        UsersCommand::Del { id } => {
            let b = o.send(Method::DELETE, &format!("{BASE}/{id}"), None::<&()>).await?;
            o.done(&b, &format!("deleted user {id}"))
        }
        UsersCommand::Password { id } => {
            let body = NewPassword { password: read_password("new password")?, old_password: None };
            let b = o.send(Method::POST, &format!("{BASE}/{id}/password"), Some(&body)).await?;
            o.done(&b, &format!("password of user {id} set; they must choose a new one at the next sign-in"))
        }
    }
}

/// `callguard roles …`
pub async fn roles(client: &Client, r: &Resource<RolesCommand>) -> anyhow::Result<()> {
    const BASE: &str = "/api/v1/roles";
    let o = Out { client, json: r.json };
    match &r.command {
        RolesCommand::List => {
            let b = o.get(BASE).await?;
            o.print(&b, |x: Vec<Role>| with_count(&roles_table(&x), x.len(), "role"))
        }
        RolesCommand::Show { name } => {
            let b = o.get(&format!("{BASE}/{}", seg(name))).await?;
            o.print(&b, |x: Role| roles_table(&[x]).to_string())
        }
        RolesCommand::Add { name, level, permissions, description } => {
            let body = NewRole {
                name: name.clone(),
                level: crate::accounts::Level::parse(level).context("--level")?,
                permissions: permissions.iter().filter_map(|p| Perm::parse(p)).collect(),
                description: description.clone(),
            };
            let b = o.send(Method::POST, BASE, Some(&body)).await?;
            o.print(&b, |x: Role| roles_table(&[x]).to_string())
        }
        RolesCommand::Del { name } => {
            let b = o.send(Method::DELETE, &format!("{BASE}/{}", seg(name)), None::<&()>).await?;
            o.done(&b, &format!("deleted role {name}"))
        }
    }
}

/// `callguard tokens …`
pub async fn tokens(client: &Client, r: &Resource<TokensCommand>) -> anyhow::Result<()> {
    const BASE: &str = "/api/v1/sessions";
    let o = Out { client, json: r.json };
    match &r.command {
        TokensCommand::List { user } => {
            let b = o.get(&format!("{BASE}{}", pairs(&[("user", user.map(|u| u.to_string()))]))).await?;
            o.print(&b, |s: Vec<Session>| with_count(&sessions_table(&s), s.len(), "session"))
        }
        TokensCommand::Revoke { ids } => {
            o.each(Method::DELETE, ids, |id| format!("{BASE}/{id}"), None, ("revoked", "session")).await
        }
    }
}

/// `callguard keys …`
pub async fn keys(client: &Client, r: &Resource<KeysCommand>) -> anyhow::Result<()> {
    const BASE: &str = "/api/v1/api_keys";
    let o = Out { client, json: r.json };
    match &r.command {
        KeysCommand::List => {
            let b = o.get(BASE).await?;
            o.print(&b, |k: Vec<ApiKey>| with_count(&keys_table(&k), k.len(), "key"))
        }
        KeysCommand::Add { user, comment } => {
            let body = NewKey { user_id: Some(*user), comment: comment.clone() };
            let b = o.send(Method::POST, BASE, Some(&body)).await?;
            o.print(&b, |k: CreatedKey| {
                format!(
                    "{}\naccount_id={} api_key={} (the key is shown once)",
                    keys_table(std::slice::from_ref(&k.key)),
                    k.key.account_id,
                    k.api_key
                )
            })
        }
        KeysCommand::Del { account_ids } => {
            o.each(Method::DELETE, account_ids, |id| format!("{BASE}/{id}"), None, ("deleted", "key")).await
        }
    }
}
