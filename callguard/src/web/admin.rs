//! Accounts: tenants (SIP domains) and their groups, users, roles, sessions (tokens) and API
//! keys, under `/api/v1/`. The seeds name these resources and their rules (user names,
//! reserved names, built-in roles) but not their paths; the paths here follow the
//! authorization-code seed's `/api/v1/tenants/{tenant}/groups/{group}/users/{user}`.
//!
//! Nobody can give more than they have: a user created or a role defined by a caller never
//! has a permission the caller lacks or a level above the caller's.

use axum::{
    Json, Router,
    extract::State as AxState,
    http::StatusCode,
    routing::{delete, get, post},
};
use chrono::Utc;

use super::{Caller, JsonBody, PathArgs, Principal, QueryArgs, blocking, find_role};
use crate::api::admin::{
    CreatedKey, CreatedUser, NewGroup, NewKey, NewPassword, NewRole, NewTenant, NewUserReq, SessionQuery,
    UserPatch, UserQuery,
};
use crate::{
    accounts::{
        self, ApiKey, Group, Level, NAME_MAX, Perm, Role, Session, Tenant, User, check_domain,
        check_password, check_slug, check_username,
    },
    numbers::check_len,
    service::Service as State,
    store::NewUser,
    web::{Failure, Shared},
};

/// The routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/tenants", get(list_tenants).post(create_tenant))
        .route("/api/v1/tenants/{tenant}", get(show_tenant).delete(delete_tenant))
        .route("/api/v1/tenants/{tenant}/groups", get(list_groups).post(create_group))
        .route("/api/v1/tenants/{tenant}/groups/{group}", delete(delete_group))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{id}", get(show_user).patch(update_user).delete(delete_user))
        .route("/api/v1/users/{id}/password", post(set_password))
        .route("/api/v1/roles", get(list_roles).post(create_role))
        .route("/api/v1/roles/{name}", get(show_role).delete(delete_role))
        .route("/api/v1/sessions", get(list_sessions))
        .route("/api/v1/sessions/{id}", delete(revoke_session))
        .route("/api/v1/api_keys", get(list_keys).post(create_key))
        .route("/api/v1/api_keys/{account_id}", delete(delete_key))
}

fn check_name(field: &str, s: &str) -> Result<(), Failure> {
    if s.trim().is_empty() || s.chars().count() > NAME_MAX {
        return Err(Failure::bad(field, format!("1 to {NAME_MAX} characters")));
    }
    Ok(())
}

/// Every tenant the caller reaches (`tenants.read`).
#[utoipa::path(get, path = "/api/v1/tenants", tag = "Accounts", security(("bearer" = [])),
    responses((status = 200, body = Vec<Tenant>), (status = "4XX", body = crate::api::ApiError)))]
pub async fn list_tenants(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
) -> Result<Json<Vec<Tenant>>, Failure> {
    p.need(Perm::TenantsRead)?;
    blocking(&s, move |st| {
        Ok(Json(st.store().tenants()?.into_iter().filter(|t| p.reaches_tenant(&t.id)).collect()))
    })
    .await
}

/// Create a tenant (`tenants.write`, system level).
#[utoipa::path(post, path = "/api/v1/tenants", tag = "Accounts", security(("bearer" = [])), request_body = NewTenant,
    responses((status = 201, body = Tenant), (status = "4XX", body = crate::api::ApiError)))]
pub async fn create_tenant(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<NewTenant>,
) -> Result<(StatusCode, Json<Tenant>), Failure> {
    p.need(Perm::TenantsWrite)?;
    if p.role.level != Level::System {
        return Err(Failure::forbidden("creating tenants needs a system-level role"));
    }
    check_slug(&req.id).map_err(|m| Failure::bad("id", m))?;
    check_name("name", &req.name)?;
    check_domain(&req.domain).map_err(|m| Failure::bad("domain", m))?;
    check_len(&req.website, 256).map_err(|m| Failure::bad("website", m))?;
    let t = Tenant {
        id: req.id,
        name: req.name,
        domain: req.domain,
        website: req.website,
        created_at: Utc::now(),
    };
    blocking(&s, move |st| {
        st.store().add_tenant(&t)?;
        Ok((StatusCode::CREATED, Json(t)))
    })
    .await
}

fn tenant(st: &mut State, p: &Principal, id: &str) -> Result<Tenant, Failure> {
    let t = st.store().tenants()?.into_iter().find(|t| t.id == id);
    let t = t.ok_or_else(|| Failure::not_found("tenant", format!("no tenant `{id}`")))?;
    if !p.reaches_tenant(&t.id) {
        return Err(Failure::forbidden(format!("tenant `{id}` is outside your reach")));
    }
    Ok(t)
}

/// One tenant.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}", tag = "Accounts", security(("bearer" = [])),
    params(("tenant" = String, Path)), responses((status = 200, body = Tenant), (status = "4XX", body = crate::api::ApiError)))]
pub async fn show_tenant(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<Json<Tenant>, Failure> {
    p.need(Perm::TenantsRead)?;
    blocking(&s, move |st| tenant(st, &p, &id).map(Json)).await
}

/// Delete a tenant with its groups, users, their sessions, keys and codes.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}", tag = "Accounts", security(("bearer" = [])),
    params(("tenant" = String, Path)), responses((status = 204, description = "Deleted"), (status = "4XX", body = crate::api::ApiError)))]
pub async fn delete_tenant(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<StatusCode, Failure> {
    p.need(Perm::TenantsWrite)?;
    blocking(&s, move |st| {
        tenant(st, &p, &id)?;
        st.store().delete_tenant(&id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// The groups of a tenant (`users.read`).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/groups", tag = "Accounts", security(("bearer" = [])),
    params(("tenant" = String, Path)), responses((status = 200, body = Vec<Group>), (status = "4XX", body = crate::api::ApiError)))]
pub async fn list_groups(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<Json<Vec<Group>>, Failure> {
    p.need(Perm::UsersRead)?;
    blocking(&s, move |st| {
        tenant(st, &p, &id)?;
        Ok(Json(st.store().groups(Some(&id))?))
    })
    .await
}

/// Create a group (`users.write`, tenant level or above).
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/groups", tag = "Accounts", security(("bearer" = [])),
    params(("tenant" = String, Path)), request_body = NewGroup,
    responses((status = 201, body = Group), (status = "4XX", body = crate::api::ApiError)))]
pub async fn create_group(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(tid): PathArgs<String>,
    JsonBody(req): JsonBody<NewGroup>,
) -> Result<(StatusCode, Json<Group>), Failure> {
    p.need(Perm::UsersWrite)?;
    if p.role.level < Level::Tenant {
        return Err(Failure::forbidden("creating groups needs a tenant-level role"));
    }
    check_slug(&req.id).map_err(|m| Failure::bad("id", m))?;
    let name = if req.name.is_empty() { req.id.clone() } else { req.name };
    check_name("name", &name)?;
    blocking(&s, move |st| {
        tenant(st, &p, &tid)?;
        let g = Group { tenant: tid, id: req.id, name, created_at: Utc::now() };
        st.store().add_group(&g)?;
        Ok((StatusCode::CREATED, Json(g)))
    })
    .await
}

/// Delete a group with its users.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/groups/{group}", tag = "Accounts", security(("bearer" = [])),
    params(("tenant" = String, Path), ("group" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = crate::api::ApiError)))]
pub async fn delete_group(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs((tid, gid)): PathArgs<(String, String)>,
) -> Result<StatusCode, Failure> {
    p.need(Perm::UsersWrite)?;
    if p.role.level < Level::Tenant {
        return Err(Failure::forbidden("deleting groups needs a tenant-level role"));
    }
    blocking(&s, move |st| {
        tenant(st, &p, &tid)?;
        if st.store().delete_group(&tid, &gid)? {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(Failure::not_found("group", format!("no group `{gid}` in tenant `{tid}`")))
        }
    })
    .await
}

/// The users the caller reaches (`users.read`).
#[utoipa::path(get, path = "/api/v1/users", tag = "Accounts", security(("bearer" = [])), params(UserQuery),
    responses((status = 200, body = Vec<User>), (status = "4XX", body = crate::api::ApiError)))]
pub async fn list_users(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    QueryArgs(q): QueryArgs<UserQuery>,
) -> Result<Json<Vec<User>>, Failure> {
    p.need(Perm::UsersRead)?;
    blocking(&s, move |st| {
        Ok(Json(
            st.store()
                .users()?
                .into_iter()
                .filter(|u| p.reaches_user(u))
                .filter(|u| q.tenant.is_none() || u.tenant == q.tenant)
                .filter(|u| q.group.is_none() || u.group == q.group)
                .collect(),
        ))
    })
    .await
}

/// Checks that the caller may hand out `role`: not above its own level, no right it lacks.
fn may_grant(p: &Principal, role: &Role) -> Result<(), Failure> {
    if role.level > p.role.level {
        return Err(Failure::forbidden(format!(
            "role {} (level {}) reaches further than yours ({})",
            role.name,
            role.level.as_str(),
            p.role.level.as_str()
        )));
    }
    if let Some(x) = role.permissions.iter().find(|x| !p.role.has(**x)) {
        return Err(Failure::forbidden(format!("role {} has {x}, which you lack", role.name)));
    }
    Ok(())
}

/// Where a user of `role` sits: checks tenant and group against the level.
fn placement(st: &mut State, role: &Role, tenant: Option<&str>, group: Option<&str>) -> Result<(), Failure> {
    match (role.level, tenant, group) {
        (Level::System, None, None) => return Ok(()),
        (Level::System, _, _) => {
            return Err(Failure::bad(
                "tenant",
                format!("role {} is system-wide: no tenant or group", role.name),
            ));
        }
        (_, None, _) => return Err(Failure::bad("tenant", format!("role {} needs a tenant", role.name))),
        (Level::Group | Level::User, _, None) => {
            return Err(Failure::bad("group", format!("role {} needs a group", role.name)));
        }
        _ => {}
    }
    let t = tenant.unwrap_or_default();
    if !st.store().tenants()?.iter().any(|x| x.id == t) {
        return Err(Failure::bad("tenant", format!("no tenant `{t}`")));
    }
    if let Some(g) = group
        && !st.store().groups(Some(t))?.iter().any(|x| x.id == g)
    {
        return Err(Failure::bad("group", format!("no group `{g}` in tenant `{t}`")));
    }
    Ok(())
}

fn hash(password: &str) -> Result<String, Failure> {
    accounts::hash_password(password).map_err(|e| Failure::internal(&e))
}

/// Create a user (`users.write`; the new user must be within the caller's reach, and its role
/// no stronger than the caller's).
#[utoipa::path(post, path = "/api/v1/users", tag = "Accounts", security(("bearer" = [])), request_body = NewUserReq,
    responses((status = 201, body = CreatedUser), (status = "4XX", body = crate::api::ApiError)))]
pub async fn create_user(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<NewUserReq>,
) -> Result<(StatusCode, Json<CreatedUser>), Failure> {
    p.need(Perm::UsersWrite)?;
    if let Some(pw) = &req.password {
        check_password(pw).map_err(|m| Failure::bad("password", m))?;
    }
    let generated = req.password.is_none().then(accounts::new_password);
    let password = req.password.clone().or_else(|| generated.clone()).unwrap_or_default();
    blocking(&s, move |st| {
        let role = find_role(st, &req.role)?
            .ok_or_else(|| Failure::bad("role", format!("no role `{}`", req.role)))?;
        check_username(&req.username, role.name == "SystemAdmin").map_err(|m| Failure::bad("username", m))?;
        may_grant(&p, &role)?;
        placement(st, &role, req.tenant.as_deref(), req.group.as_deref())?;
        let probe = User {
            id: 0,
            tenant: req.tenant.clone(),
            group: req.group.clone(),
            username: req.username.clone(),
            role: role.name.clone(),
            force_reset: false,
            created_at: Utc::now(),
        };
        p.reach_user(&probe)?;
        let user = st.store().add_user(&NewUser {
            tenant: req.tenant,
            group: req.group,
            username: req.username,
            password_hash: hash(&password)?,
            role: role.name,
            force_reset: req.force_reset,
        })?;
        Ok((StatusCode::CREATED, Json(CreatedUser { user, password: generated })))
    })
    .await
}

fn user(st: &mut State, p: &Principal, id: u32) -> Result<User, Failure> {
    let u = st
        .store()
        .user(id)?
        .map(|(u, _)| u)
        .ok_or_else(|| Failure::not_found("id", format!("no user {id}")))?;
    p.reach_user(&u)?;
    Ok(u)
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "Accounts", security(("bearer" = [])),
    params(("id" = u32, Path)), responses((status = 200, body = User), (status = "4XX", body = crate::api::ApiError)))]
pub async fn show_user(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<u32>,
) -> Result<Json<User>, Failure> {
    p.need(Perm::UsersRead)?;
    blocking(&s, move |st| user(st, &p, id).map(Json)).await
}

/// Change a user's role, group or reset flag (`users.write`).
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "Accounts", security(("bearer" = [])),
    params(("id" = u32, Path)), request_body = UserPatch,
    responses((status = 200, body = User), (status = "4XX", body = crate::api::ApiError)))]
pub async fn update_user(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<u32>,
    JsonBody(req): JsonBody<UserPatch>,
) -> Result<Json<User>, Failure> {
    p.need(Perm::UsersWrite)?;
    blocking(&s, move |st| {
        let u = user(st, &p, id)?;
        if p.user.as_ref().is_some_and(|me| me.id == id) && req.role.is_some() {
            return Err(Failure::forbidden("you cannot change your own role"));
        }
        let role_name = req.role.clone().unwrap_or_else(|| u.role.clone());
        let role = find_role(st, &role_name)?
            .ok_or_else(|| Failure::bad("role", format!("no role `{role_name}`")))?;
        may_grant(&p, &role)?;
        let group = req.group.clone().or_else(|| u.group.clone());
        placement(st, &role, u.tenant.as_deref(), group.as_deref())?;
        if !reserved_ok(&u.username, &role) {
            return Err(Failure::bad(
                "role",
                format!("`{}` is reserved for the system administrator", u.username),
            ));
        }
        let moved = User { group: group.clone(), ..u.clone() };
        p.reach_user(&moved)?;
        let updated = st.store().update_user(
            id,
            Some(&role.name),
            req.group.as_ref().map(|g| Some(g.as_str())),
            None,
            req.force_reset,
        )?;
        updated.map(Json).ok_or_else(|| Failure::not_found("id", format!("no user {id}")))
    })
    .await
}

/// Whether user name and role fit the reserved-name rule.
fn reserved_ok(username: &str, role: &Role) -> bool {
    check_username(username, role.name == "SystemAdmin").is_ok()
}

/// Delete a user with its sessions, keys and codes (`users.write`). Not oneself.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "Accounts", security(("bearer" = [])),
    params(("id" = u32, Path)), responses((status = 204, description = "Deleted"), (status = "4XX", body = crate::api::ApiError)))]
pub async fn delete_user(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<u32>,
) -> Result<StatusCode, Failure> {
    p.need(Perm::UsersWrite)?;
    if p.user.as_ref().is_some_and(|me| me.id == id) {
        return Err(Failure::forbidden("you cannot delete yourself"));
    }
    blocking(&s, move |st| {
        let u = user(st, &p, id)?;
        let target = find_role(st, &u.role)?;
        if let Some(r) = target {
            may_grant(&p, &r)?;
        }
        st.store().delete_user(id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Set a user's password. One's own needs `old_password` (and clears a forced reset); another
/// user's needs `users.write` over them and forces them to choose a new one. Every session of
/// the user is revoked.
#[utoipa::path(post, path = "/api/v1/users/{id}/password", tag = "Accounts", security(("bearer" = [])),
    params(("id" = u32, Path)), request_body = NewPassword,
    responses((status = 204, description = "Password set"), (status = "4XX", body = crate::api::ApiError)))]
pub async fn set_password(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<u32>,
    JsonBody(req): JsonBody<NewPassword>,
) -> Result<StatusCode, Failure> {
    check_password(&req.password).map_err(|m| Failure::bad("password", m))?;
    let own = p.user.as_ref().is_some_and(|me| me.id == id);
    blocking(&s, move |st| {
        let (target, old_hash) =
            st.store().user(id)?.ok_or_else(|| Failure::not_found("id", format!("no user {id}")))?;
        if own {
            let old = req.old_password.as_deref().ok_or_else(|| Failure::bad("old_password", "required"))?;
            if !accounts::verify_password(old, &old_hash) {
                return Err(Failure::bad("old_password", "does not match"));
            }
        } else {
            p.need(Perm::UsersWrite)?;
            p.reach_user(&target)?;
            if let Some(r) = find_role(st, &target.role)? {
                may_grant(&p, &r)?;
            }
        }
        st.store().update_user(
            id,
            None,
            None,
            Some(&hash(&req.password)?),
            Some(!own && p.user.is_some()),
        )?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Built-in and custom roles (`roles.read`).
#[utoipa::path(get, path = "/api/v1/roles", tag = "Accounts", security(("bearer" = [])),
    responses((status = 200, body = Vec<Role>), (status = "4XX", body = crate::api::ApiError)))]
pub async fn list_roles(AxState(s): AxState<Shared>, Caller(p): Caller) -> Result<Json<Vec<Role>>, Failure> {
    p.need(Perm::RolesRead)?;
    blocking(&s, |st| {
        let mut all = accounts::builtin_roles();
        all.extend(st.store().custom_roles()?);
        Ok(Json(all))
    })
    .await
}

/// One role.
#[utoipa::path(get, path = "/api/v1/roles/{name}", tag = "Accounts", security(("bearer" = [])),
    params(("name" = String, Path)), responses((status = 200, body = Role), (status = "4XX", body = crate::api::ApiError)))]
pub async fn show_role(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(name): PathArgs<String>,
) -> Result<Json<Role>, Failure> {
    p.need(Perm::RolesRead)?;
    blocking(&s, move |st| {
        find_role(st, &name)?.map(Json).ok_or_else(|| Failure::not_found("name", format!("no role `{name}`")))
    })
    .await
}

/// Create a custom role (`roles.write`; no stronger than the caller's own).
#[utoipa::path(post, path = "/api/v1/roles", tag = "Accounts", security(("bearer" = [])), request_body = NewRole,
    responses((status = 201, body = Role), (status = "4XX", body = crate::api::ApiError)))]
pub async fn create_role(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<NewRole>,
) -> Result<(StatusCode, Json<Role>), Failure> {
    p.need(Perm::RolesWrite)?;
    let ok = !req.name.is_empty()
        && req.name.len() <= NAME_MAX
        && req.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if !ok {
        return Err(Failure::bad("name", format!("1 to {NAME_MAX} letters, digits, _ - or .")));
    }
    if accounts::builtin_role(&req.name).is_some() {
        return Err(Failure::bad("name", format!("`{}` is a built-in role's name", req.name)));
    }
    check_len(&req.description, 256).map_err(|m| Failure::bad("description", m))?;
    let role = Role {
        name: req.name,
        level: req.level,
        permissions: req.permissions.into_iter().collect(),
        builtin: false,
        description: req.description,
    };
    may_grant(&p, &role)?;
    blocking(&s, move |st| {
        st.store().add_role(&role)?;
        Ok((StatusCode::CREATED, Json(role)))
    })
    .await
}

/// Delete a custom role (not while a user holds it).
#[utoipa::path(delete, path = "/api/v1/roles/{name}", tag = "Accounts", security(("bearer" = [])),
    params(("name" = String, Path)), responses((status = 204, description = "Deleted"), (status = "4XX", body = crate::api::ApiError)))]
pub async fn delete_role(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(name): PathArgs<String>,
) -> Result<StatusCode, Failure> {
    p.need(Perm::RolesWrite)?;
    if accounts::builtin_role(&name).is_some() {
        return Err(Failure::conflict(format!("{name} is a built-in role: it cannot be deleted")));
    }
    blocking(&s, move |st| {
        let role =
            find_role(st, &name)?.ok_or_else(|| Failure::not_found("name", format!("no role `{name}`")))?;
        may_grant(&p, &role)?;
        st.store().delete_role(&role.name)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Sessions (token pairs): one's own, or another user's.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "Accounts", security(("bearer" = [])), params(SessionQuery),
    responses((status = 200, body = Vec<Session>), (status = "4XX", body = crate::api::ApiError)))]
pub async fn list_sessions(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    QueryArgs(q): QueryArgs<SessionQuery>,
) -> Result<Json<Vec<Session>>, Failure> {
    blocking(&s, move |st| {
        let me = p.user.as_ref().map(|u| u.id);
        let who = match (q.user, me) {
            (Some(id), m) if Some(id) != m => {
                p.need(Perm::UsersRead)?;
                user(st, &p, id)?;
                Some(id)
            }
            (None, None) => None,
            (_, m) => m,
        };
        Ok(Json(st.store().sessions(who)?))
    })
    .await
}

/// Revoke a session: its tokens stop working at once. One's own, or with `users.write` over
/// its user.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "Accounts", security(("bearer" = [])),
    params(("id" = u32, Path)), responses((status = 204, description = "Revoked"), (status = "4XX", body = crate::api::ApiError)))]
pub async fn revoke_session(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<u32>,
) -> Result<StatusCode, Failure> {
    blocking(&s, move |st| {
        let session = st
            .store()
            .sessions(None)?
            .into_iter()
            .find(|x| x.id == id)
            .ok_or_else(|| Failure::not_found("id", format!("no session {id}")))?;
        if p.user.as_ref().is_none_or(|me| me.id != session.user_id) {
            p.need(Perm::UsersWrite)?;
            user(st, &p, session.user_id)?;
        }
        st.store().revoke_session(id, Utc::now())?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// API key filters: none; the caller's own keys, or all with a system-level `users.read`.
#[utoipa::path(get, path = "/api/v1/api_keys", tag = "Accounts", security(("bearer" = [])),
    responses((status = 200, body = Vec<ApiKey>), (status = "4XX", body = crate::api::ApiError)))]
pub async fn list_keys(AxState(s): AxState<Shared>, Caller(p): Caller) -> Result<Json<Vec<ApiKey>>, Failure> {
    blocking(&s, move |st| {
        let all = st.store().api_keys()?;
        let sees_all = p.role.level == Level::System && p.role.has(Perm::UsersRead);
        let me = p.user.as_ref().map(|u| u.id);
        Ok(Json(all.into_iter().filter(|k| sees_all || Some(k.user_id) == me).collect()))
    })
    .await
}

/// Create an API key (for the Voximplant-style calls).
#[utoipa::path(post, path = "/api/v1/api_keys", tag = "Accounts", security(("bearer" = [])), request_body = NewKey,
    responses((status = 201, body = CreatedKey), (status = "4XX", body = crate::api::ApiError)))]
pub async fn create_key(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>), Failure> {
    check_len(&req.comment, 256).map_err(|m| Failure::bad("comment", m))?;
    blocking(&s, move |st| {
        let me = p.user.as_ref().map(|u| u.id);
        let owner = match (req.user_id, me) {
            (Some(id), m) if Some(id) != m => {
                p.need(Perm::UsersWrite)?;
                let u = user(st, &p, id)?;
                if let Some(r) = find_role(st, &u.role)? {
                    may_grant(&p, &r)?;
                }
                id
            }
            (_, Some(m)) => m,
            (_, None) => return Err(Failure::bad("user_id", "required on the control socket")),
        };
        let secret = accounts::new_secret();
        let key = st.store().add_api_key(owner, &accounts::secret_digest(&secret), &req.comment)?;
        Ok((StatusCode::CREATED, Json(CreatedKey { key, api_key: secret })))
    })
    .await
}

/// Delete an API key: one's own, or with `users.write` over its user.
#[utoipa::path(delete, path = "/api/v1/api_keys/{account_id}", tag = "Accounts", security(("bearer" = [])),
    params(("account_id" = u32, Path)), responses((status = 204, description = "Deleted"), (status = "4XX", body = crate::api::ApiError)))]
pub async fn delete_key(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<u32>,
) -> Result<StatusCode, Failure> {
    blocking(&s, move |st| {
        let (k, _) = st
            .store()
            .api_key(id)?
            .ok_or_else(|| Failure::not_found("account_id", format!("no API key {id}")))?;
        if p.user.as_ref().is_none_or(|me| me.id != k.user_id) {
            p.need(Perm::UsersWrite)?;
            user(st, &p, k.user_id)?;
        }
        st.store().delete_api_key(id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
