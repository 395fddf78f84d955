//! The CLI's account commands: tenants, groups, users, roles, sessions (tokens) and API keys,
//! each over the API route of the authentication seed on the control socket.

use std::io::{BufRead as _, IsTerminal as _};

use anyhow::{Context as _, bail};
use clap::{Subcommand, builder::PossibleValuesParser};
use hyper::Method;

use super::{
    args::Resource,
    client::{Client, pairs, seg},
    output::{
        Out, groups_table, keys_table, roles_table, sessions_table, tenants_table, users_table, with_count,
    },
};
use crate::{
    accounts::{ApiKey, Group, Perm, Role, Session, Tenant, User},
    api::admin::{
        CreatedKey, CreatedUser, NewGroup, NewKey, NewPassword, NewRole, NewTenant, NewUserReq, UserPatch,
    },
};

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

/// `callguard tenants …`
pub(super) async fn tenants(client: &Client, r: &Resource<TenantsCommand>) -> anyhow::Result<()> {
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
pub(super) async fn groups(client: &Client, r: &Resource<GroupsCommand>) -> anyhow::Result<()> {
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
pub(super) async fn users(client: &Client, r: &Resource<UsersCommand>) -> anyhow::Result<()> {
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
pub(super) async fn roles(client: &Client, r: &Resource<RolesCommand>) -> anyhow::Result<()> {
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
pub(super) async fn tokens(client: &Client, r: &Resource<TokensCommand>) -> anyhow::Result<()> {
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
pub(super) async fn keys(client: &Client, r: &Resource<KeysCommand>) -> anyhow::Result<()> {
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
