//! Accounts: tenants (SIP domains) and their groups, users, roles, sessions (tokens) and API
//! keys, under `/api/v1/`. The seeds name these resources and their rules (user names,
//! reserved names, built-in roles) but not their paths; the paths here follow the
//! authorization-code seed's `/api/v1/tenants/{tenant}/groups/{group}/users/{user}`.
//!
//! Nobody can give more than they have: a user created or a role defined by a caller never
//! has a permission the caller lacks or a level above the caller's.

use axum::{Json, extract::State as AxState, http::StatusCode};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Caller, JsonBody, PathArgs, QueryArgs, blocking, off_lock};
use crate::api::admin::{
    CreatedKey, CreatedUser, NewGroup, NewKey, NewPassword, NewRole, NewTenant, NewUserReq, SessionQuery,
    UserPatch, UserQuery,
};
use crate::{
    accounts::{self, ApiKey, Group, Perm, Role, Session, Tenant, User},
    service::accounts::Hashed,
    web::{Failure, Shared},
};

/// The routes.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(show_tenant, delete_tenant))
        .routes(routes!(set_avatar, delete_avatar))
        .routes(routes!(list_groups, create_group))
        .routes(routes!(delete_group))
        .routes(routes!(list_users, create_user))
        .routes(routes!(show_user, update_user, delete_user))
        .routes(routes!(set_password))
        .routes(routes!(list_roles, create_role))
        .routes(routes!(show_role, delete_role))
        .routes(routes!(list_sessions))
        .routes(routes!(revoke_session))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(delete_key))
}

/// Every tenant the caller reaches (`tenants.read`).
#[utoipa::path(get, path = "/api/v1/tenants", tag = "Accounts", security(("bearer" = [])),
    responses((status = 200, body = Vec<Tenant>), (status = "4XX", body = crate::api::ApiError)))]
pub async fn list_tenants(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
) -> Result<Json<Vec<Tenant>>, Failure> {
    blocking(&s, move |st| Ok(Json(st.tenants(&p)?))).await
}

/// Create a tenant (`tenants.write`, system level).
#[utoipa::path(post, path = "/api/v1/tenants", tag = "Accounts", security(("bearer" = [])), request_body = NewTenant,
    responses((status = 201, body = Tenant), (status = "4XX", body = crate::api::ApiError)))]
pub async fn create_tenant(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<NewTenant>,
) -> Result<(StatusCode, Json<Tenant>), Failure> {
    blocking(&s, move |st| Ok((StatusCode::CREATED, Json(st.add_tenant(&p, req)?)))).await
}

/// One tenant.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}", tag = "Accounts", security(("bearer" = [])),
    params(("tenant" = String, Path)), responses((status = 200, body = Tenant), (status = "4XX", body = crate::api::ApiError)))]
pub async fn show_tenant(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<Json<Tenant>, Failure> {
    blocking(&s, move |st| Ok(Json(st.tenant(&p, &id)?))).await
}

/// Delete a tenant with its groups, users, their sessions, keys and codes.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}", tag = "Accounts", security(("bearer" = [])),
    params(("tenant" = String, Path)), responses((status = 204, description = "Deleted"), (status = "4XX", body = crate::api::ApiError)))]
pub async fn delete_tenant(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<StatusCode, Failure> {
    blocking(&s, move |st| {
        st.delete_tenant(&p, &id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Upload the tenant's avatar (`tenants.write`): the image as the body, PNG, JPEG, GIF or WebP,
/// at most 256 KiB. Its type is found from its content; a `Content-Type` that says otherwise is
/// refused. The tenant's `avatar_url` (also in `GET /api/info?domain=…`) then downloads it; the
/// avatar it replaces is deleted.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/avatar", tag = "Accounts", security(("bearer" = [])),
    params(("tenant" = String, Path)),
    request_body(content = Vec<u8>, content_type = "image/png", description = "The image"),
    responses((status = 200, body = Tenant), (status = "4XX", body = crate::api::ApiError)))]
pub async fn set_avatar(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Tenant>, Failure> {
    let declared =
        headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    blocking(&s, move |st| Ok(Json(st.set_tenant_avatar(&p, &id, declared.as_deref(), body.to_vec())?))).await
}

/// Remove the tenant's avatar (`tenants.write`).
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/avatar", tag = "Accounts", security(("bearer" = [])),
    params(("tenant" = String, Path)),
    responses((status = 204, description = "Removed (or there was none)"), (status = "4XX", body = crate::api::ApiError)))]
pub async fn delete_avatar(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<StatusCode, Failure> {
    blocking(&s, move |st| {
        st.delete_tenant_avatar(&p, &id)?;
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
    blocking(&s, move |st| Ok(Json(st.groups(&p, &id)?))).await
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
    blocking(&s, move |st| Ok((StatusCode::CREATED, Json(st.add_group(&p, &tid, req)?)))).await
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
    blocking(&s, move |st| {
        st.delete_group(&p, &tid, &gid)?;
        Ok(StatusCode::NO_CONTENT)
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
    blocking(&s, move |st| Ok(Json(st.users(&p, q.tenant.as_deref(), q.group.as_deref())?))).await
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
    // The right first, so that nobody without it gets Argon2 work done; the hash off the lock.
    p.need(Perm::UsersWrite)?;
    let generated = req.password.is_none().then(accounts::new_password);
    let password = req.password.clone().or_else(|| generated.clone()).unwrap_or_default();
    let hashed = off_lock(move || Ok(Hashed::new(&password)?)).await?;
    blocking(&s, move |st| Ok((StatusCode::CREATED, Json(st.add_user(&p, req, hashed, generated)?)))).await
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "Accounts", security(("bearer" = [])),
    params(("id" = u32, Path)), responses((status = 200, body = User), (status = "4XX", body = crate::api::ApiError)))]
pub async fn show_user(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<u32>,
) -> Result<Json<User>, Failure> {
    blocking(&s, move |st| Ok(Json(st.user(&p, id)?))).await
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
    blocking(&s, move |st| Ok(Json(st.update_user(&p, id, &req)?))).await
}

/// Delete a user with its sessions, keys and codes (`users.write`). Not oneself.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "Accounts", security(("bearer" = [])),
    params(("id" = u32, Path)), responses((status = 204, description = "Deleted"), (status = "4XX", body = crate::api::ApiError)))]
pub async fn delete_user(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<u32>,
) -> Result<StatusCode, Failure> {
    blocking(&s, move |st| {
        st.delete_user(&p, id)?;
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
    let change = blocking(&s, move |st| Ok(st.plan_password(&p, id, &req)?)).await?;
    let (change, hashed) = off_lock(move || {
        let hashed = change.hash()?;
        Ok((change, hashed))
    })
    .await?;
    blocking(&s, move |st| {
        st.set_password(&change, hashed)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Built-in and custom roles (`roles.read`).
#[utoipa::path(get, path = "/api/v1/roles", tag = "Accounts", security(("bearer" = [])),
    responses((status = 200, body = Vec<Role>), (status = "4XX", body = crate::api::ApiError)))]
pub async fn list_roles(AxState(s): AxState<Shared>, Caller(p): Caller) -> Result<Json<Vec<Role>>, Failure> {
    blocking(&s, move |st| Ok(Json(st.roles(&p)?))).await
}

/// One role.
#[utoipa::path(get, path = "/api/v1/roles/{name}", tag = "Accounts", security(("bearer" = [])),
    params(("name" = String, Path)), responses((status = 200, body = Role), (status = "4XX", body = crate::api::ApiError)))]
pub async fn show_role(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(name): PathArgs<String>,
) -> Result<Json<Role>, Failure> {
    blocking(&s, move |st| Ok(Json(st.role(&p, &name)?))).await
}

/// Create a custom role (`roles.write`; no stronger than the caller's own).
#[utoipa::path(post, path = "/api/v1/roles", tag = "Accounts", security(("bearer" = [])), request_body = NewRole,
    responses((status = 201, body = Role), (status = "4XX", body = crate::api::ApiError)))]
pub async fn create_role(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<NewRole>,
) -> Result<(StatusCode, Json<Role>), Failure> {
    blocking(&s, move |st| Ok((StatusCode::CREATED, Json(st.add_role(&p, req)?)))).await
}

/// Delete a custom role (not while a user holds it).
#[utoipa::path(delete, path = "/api/v1/roles/{name}", tag = "Accounts", security(("bearer" = [])),
    params(("name" = String, Path)), responses((status = 204, description = "Deleted"), (status = "4XX", body = crate::api::ApiError)))]
pub async fn delete_role(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(name): PathArgs<String>,
) -> Result<StatusCode, Failure> {
    blocking(&s, move |st| {
        st.delete_role(&p, &name)?;
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
    blocking(&s, move |st| Ok(Json(st.sessions(&p, q.user)?))).await
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
        st.revoke_session(&p, id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// API key filters: none; the caller's own keys, or all with a system-level `users.read`.
#[utoipa::path(get, path = "/api/v1/api_keys", tag = "Accounts", security(("bearer" = [])),
    responses((status = 200, body = Vec<ApiKey>), (status = "4XX", body = crate::api::ApiError)))]
pub async fn list_keys(AxState(s): AxState<Shared>, Caller(p): Caller) -> Result<Json<Vec<ApiKey>>, Failure> {
    blocking(&s, move |st| Ok(Json(st.api_keys(&p)?))).await
}

/// Create an API key (for the Voximplant-style calls).
#[utoipa::path(post, path = "/api/v1/api_keys", tag = "Accounts", security(("bearer" = [])), request_body = NewKey,
    responses((status = 201, body = CreatedKey), (status = "4XX", body = crate::api::ApiError)))]
pub async fn create_key(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>), Failure> {
    blocking(&s, move |st| Ok((StatusCode::CREATED, Json(st.add_api_key(&p, &req)?)))).await
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
        st.delete_api_key(&p, id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
