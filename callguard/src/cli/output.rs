//! What the CLI prints: tables for people, JSON for scripts, one line per event. Requests are
//! built in [`super::client`]; [`Out`] sends a resource command's request and prints the answer.

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use hyper::{Method, body::Bytes};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::{
    args::ListArgs,
    client::{Client, query, typed},
};
use crate::{
    accounts::{ApiKey, AuthCode, Group, Role, Session, Tenant, User},
    api::{self, portsip::Page, query::ListQuery},
    border::BorderRule,
    net::NetRule,
    numbers::{BlacklistedNumber, DisallowedCode},
};

pub(crate) fn expiry_note(r: &NetRule) -> String {
    match r.expires_at {
        None => String::new(),
        Some(t) => format!(", expires {}", t.to_rfc3339_opts(SecondsFormat::Secs, true)),
    }
}

pub(crate) fn event_line(r: &api::control::EventRecord) -> String {
    let mut l = format!(
        "{} {:<4} {:<10} {:<24} {}",
        r.time.to_rfc3339_opts(SecondsFormat::Millis, true),
        r.kind,
        r.reason,
        r.source,
        r.method
    );
    if let Some(id) = r.rule {
        l += &format!(" rule={id}");
    }
    if let Some(id) = r.signature {
        l += &format!(" sig={id}");
    }
    if !r.user_agent.is_empty() {
        l += &format!(" ua={:?}", r.user_agent);
    }
    if !r.user.is_empty() {
        l += &format!(" user={:?}", r.user);
    }
    if !r.detail.is_empty() {
        l += &format!(" — {}", r.detail);
    }
    l
}

pub(crate) fn sig_table(rows: &[api::control::SigRow]) -> Table {
    let mut t = table(&["sig", "field", "match", "text", "mode", "matched", "origin", "comment"]);
    for r in rows {
        t.add_row(vec![
            r.sig.id.to_string(),
            r.sig.sig.field.name().into(),
            r.sig.sig.matches.name().into(),
            r.sig.sig.text.clone(),
            r.sig.sig.mode.name().into(),
            r.packets.to_string(),
            r.sig.origin.clone(),
            r.sig.sig.comment.clone(),
        ]);
    }
    t
}

pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    t
}

pub(crate) fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn plural(n: usize, one: &str) -> String {
    format!("{n} {one}{}", if n == 1 { "" } else { "s" })
}

/// Sends a request and prints the answer: JSON as the API gave it, or what `show` makes of it.
pub(crate) struct Out<'a> {
    /// Where requests go.
    pub(crate) client: &'a Client,
    /// Print the API's JSON instead of a table.
    pub(crate) json: bool,
}

impl Out<'_> {
    pub(crate) async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<Bytes> {
        self.client.send(method, path, body).await
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Bytes> {
        self.send(Method::GET, path, None::<&()>).await
    }

    /// Prints `body` as pretty JSON when `--json`, else what `human` returns.
    pub(crate) fn print<T: DeserializeOwned>(
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
    pub(crate) fn done(&self, body: &Bytes, text: &str) -> anyhow::Result<()> {
        if self.json {
            return self.print_json(body);
        }
        println!("{text}");
        Ok(())
    }

    /// The API's answer as pretty JSON (`{}` when it had no body).
    pub(crate) fn print_json(&self, body: &Bytes) -> anyhow::Result<()> {
        let v: Value = if body.is_empty() { json!({}) } else { typed(body, "JSON")? };
        println!("{}", serde_json::to_string_pretty(&v)?);
        Ok(())
    }

    /// Sends `method` to the path of each id in turn (with `body`), stopping at the first one
    /// the API refuses; the error says the ones before it are done. `verb` and `noun` make the
    /// confirmation ("deleted 2 numbers").
    pub(crate) async fn each<I: std::fmt::Display>(
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
    pub(crate) async fn export(&self, base: &str) -> anyhow::Result<()> {
        print!("{}", String::from_utf8_lossy(&self.get(&format!("{base}/export")).await?));
        Ok(())
    }

    /// Every page of a PortSIP collection (or the one asked for), as one page.
    pub(crate) async fn pages<T: DeserializeOwned + Serialize>(
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

    pub(crate) fn page<T: Serialize>(
        &self,
        page: &Page<T>,
        rows: impl FnOnce(&[T]) -> Table,
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

pub(crate) fn numbers_table(rows: &[BlacklistedNumber]) -> Table {
    let mut t = table(&["id", "number", "expires", "description", "updated"]);
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

pub(crate) fn prefixes_table(rows: &[DisallowedCode]) -> Table {
    let mut t = table(&["id", "prefix", "description"]);
    for c in rows {
        t.add_row(vec![c.id.clone(), c.number_prefix.clone(), c.description.clone()]);
    }
    t
}

pub(crate) fn border_table(rows: &[BorderRule]) -> Table {
    let mut t = table(&[
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

pub(crate) fn border_detail(r: &BorderRule) -> String {
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

pub(crate) fn codes_table(rows: &[AuthCode]) -> Table {
    let mut t = table(&["code", "description"]);
    for c in rows {
        t.add_row(vec![c.code.clone(), c.description.clone()]);
    }
    t
}

pub(crate) fn tenants_table(rows: &[Tenant]) -> Table {
    let mut t = table(&["id", "name", "domain", "website", "created"]);
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

pub(crate) fn groups_table(rows: &[Group]) -> Table {
    let mut t = table(&["tenant", "id", "name", "created"]);
    for g in rows {
        t.add_row(vec![g.tenant.clone(), g.id.clone(), g.name.clone(), time(&g.created_at)]);
    }
    t
}

pub(crate) fn users_table(rows: &[User]) -> Table {
    let mut t = table(&["id", "username", "tenant", "group", "role", "must reset", "created"]);
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

pub(crate) fn roles_table(rows: &[Role]) -> Table {
    let mut t = table(&["name", "level", "built-in", "permissions", "description"]);
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

pub(crate) fn sessions_table(rows: &[Session]) -> Table {
    let now = Utc::now();
    let mut t = table(&["id", "user", "state", "started", "access until", "refresh until"]);
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

pub(crate) fn keys_table(rows: &[ApiKey]) -> Table {
    let mut t = table(&["account_id", "user", "comment", "created"]);
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

pub(crate) fn with_count(table: &Table, n: usize, one: &str) -> String {
    format!("{table}\n{}", plural(n, one))
}
