//! Outgoing-call-barring authorization codes of one user (the authorization-code seed):
//! `/api/v1/tenants/{tenant}/groups/{group}/users/{user}/services/outgoing_call_barring/codes/`.
//! Reading needs `authcodes.read` ("minimum End User": the user itself), writing
//! `authcodes.write` ("minimum Group Admin"), each within the role's reach. Paths work with
//! and without the trailing slash.

use axum::{Json, Router, extract::State as AxState, http::StatusCode, routing::get};

use super::{Caller, JsonBody, PathArgs, Principal, blocking};
use crate::api::{
    codes::{AuthCodes, CodeRefs, CreateCodes, Owner, OwnerCode},
    portsip::Empty,
};
use crate::{
    accounts::{AuthCode, Perm, User, check_auth_code},
    numbers::check_len,
    service::Service as State,
    web::{Failure, Shared},
};

const BASE: &str =
    "/api/v1/tenants/{tenant}/groups/{group}/users/{user}/services/outgoing_call_barring/codes";

/// The routes.
pub fn routes() -> Router<Shared> {
    let one = format!("{BASE}/{{code}}");
    Router::new()
        .route(&format!("{BASE}/"), get(list).post(create).delete(delete_many))
        .route(BASE, get(list).post(create).delete(delete_many))
        .route(&format!("{one}/"), get(show).delete(delete_one))
        .route(&one, get(show).delete(delete_one))
}

/// Most codes per user.
pub const CODES_MAX: usize = 1000;
/// Longest description.
pub const DESCRIPTION_MAX: usize = 256;

/// Resolves the path's user and checks `perm` and reach.
fn owner(
    st: &mut State,
    p: &Principal,
    perm: Perm,
    tenant: &str,
    group: &str,
    user: &str,
) -> Result<User, Failure> {
    p.need(perm)?;
    if !st.store().tenants()?.iter().any(|t| t.id == tenant) {
        return Err(Failure::not_found("tenant", format!("no tenant `{tenant}`")));
    }
    if !st.store().groups(Some(tenant))?.iter().any(|g| g.id == group) {
        return Err(Failure::not_found("group", format!("no group `{group}` in tenant `{tenant}`")));
    }
    let found = st
        .store()
        .find_user(Some(tenant), user)?
        .map(|(u, _)| u)
        .filter(|u| u.group.as_deref() == Some(group));
    let u =
        found.ok_or_else(|| Failure::not_found("user", format!("no user `{user}` in group `{group}`")))?;
    p.reach_user(&u)?;
    Ok(u)
}

fn check_codes(codes: &[AuthCode], field: &str) -> Result<(), Failure> {
    if codes.is_empty() {
        return Err(Failure::bad(field, "give at least one code"));
    }
    if codes.len() > CODES_MAX {
        return Err(Failure::bad(field, format!("at most {CODES_MAX} codes")));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in codes.iter().enumerate() {
        let at = |f: &str| if field.is_empty() { f.to_owned() } else { format!("{field}[{i}].{f}") };
        check_auth_code(&c.code).map_err(|m| Failure::bad(&at("code"), m))?;
        check_len(&c.description, DESCRIPTION_MAX).map_err(|m| Failure::bad(&at("description"), m))?;
        if !seen.insert(&c.code) {
            return Err(Failure::bad(&at("code"), format!("`{}` is given twice", c.code)));
        }
    }
    Ok(())
}

/// List all authorization codes of the end user.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/groups/{group}/users/{user}/services/outgoing_call_barring/codes/",
    tag = "Authorization codes", security(("bearer" = [])),
    params(("tenant" = String, Path), ("group" = String, Path), ("user" = String, Path, description = "The user's account name")),
    responses((status = 200, body = AuthCodes), (status = "4XX", body = crate::api::ApiError)))]
pub async fn list(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(o): PathArgs<Owner>,
) -> Result<Json<AuthCodes>, Failure> {
    blocking(&s, move |st| {
        let u = owner(st, &p, Perm::AuthCodesRead, &o.tenant, &o.group, &o.user)?;
        Ok(Json(AuthCodes { auth_codes: st.store().auth_codes(u.id)? }))
    })
    .await
}

/// Create one authorization code (`{code, description}`) or many (`{"authCodes": [...]}`);
/// all or none. A code the user has already: 409.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/groups/{group}/users/{user}/services/outgoing_call_barring/codes/",
    tag = "Authorization codes", security(("bearer" = [])),
    params(("tenant" = String, Path), ("group" = String, Path), ("user" = String, Path)), request_body = CreateCodes,
    responses((status = 201, body = Empty), (status = "4XX", body = crate::api::ApiError)))]
pub async fn create(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(o): PathArgs<Owner>,
    JsonBody(req): JsonBody<serde_json::Value>,
) -> Result<(StatusCode, Json<Empty>), Failure> {
    // Untagged enums lose the field of an error: decide the form first, then parse it.
    let (codes, field) = if req.get("authCodes").is_some() {
        let many: AuthCodes = super::from_value(req)?;
        (many.auth_codes, "authCodes")
    } else {
        let one: AuthCode = super::from_value(req)?;
        (vec![one], "")
    };
    check_codes(&codes, field)?;
    blocking(&s, move |st| {
        let u = owner(st, &p, Perm::AuthCodesWrite, &o.tenant, &o.group, &o.user)?;
        if st.store().auth_codes(u.id)?.len() + codes.len() > CODES_MAX {
            return Err(Failure::bad(
                if field.is_empty() { "code" } else { field },
                format!("a user has at most {CODES_MAX} codes"),
            ));
        }
        st.store().add_auth_codes(u.id, &codes)?;
        Ok((StatusCode::CREATED, Json(Empty {})))
    })
    .await
}

/// Get one authorization code.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/groups/{group}/users/{user}/services/outgoing_call_barring/codes/{code}/",
    tag = "Authorization codes", security(("bearer" = [])),
    params(("tenant" = String, Path), ("group" = String, Path), ("user" = String, Path), ("code" = String, Path)),
    responses((status = 200, body = AuthCode), (status = "4XX", body = crate::api::ApiError)))]
pub async fn show(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(o): PathArgs<OwnerCode>,
) -> Result<Json<AuthCode>, Failure> {
    blocking(&s, move |st| {
        let u = owner(st, &p, Perm::AuthCodesRead, &o.tenant, &o.group, &o.user)?;
        let c = st.store().auth_codes(u.id)?.into_iter().find(|c| c.code == o.code);
        c.map(Json)
            .ok_or_else(|| Failure::not_found("code", format!("user `{}` has no code `{}`", o.user, o.code)))
    })
    .await
}

/// Remove a list of authorization codes. Codes the user does not have are no error.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/groups/{group}/users/{user}/services/outgoing_call_barring/codes/",
    tag = "Authorization codes", security(("bearer" = [])),
    params(("tenant" = String, Path), ("group" = String, Path), ("user" = String, Path)), request_body = CodeRefs,
    responses((status = 200, body = Empty), (status = "4XX", body = crate::api::ApiError)))]
pub async fn delete_many(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(o): PathArgs<Owner>,
    JsonBody(req): JsonBody<CodeRefs>,
) -> Result<Json<Empty>, Failure> {
    for (i, c) in req.auth_codes.iter().enumerate() {
        check_auth_code(&c.code).map_err(|m| Failure::bad(&format!("authCodes[{i}].code"), m))?;
    }
    blocking(&s, move |st| {
        let u = owner(st, &p, Perm::AuthCodesWrite, &o.tenant, &o.group, &o.user)?;
        let codes: Vec<String> = req.auth_codes.into_iter().map(|c| c.code).collect();
        st.store().delete_auth_codes(u.id, &codes)?;
        Ok(Json(Empty {}))
    })
    .await
}

/// Remove one authorization code. A code the user does not have is no error.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/groups/{group}/users/{user}/services/outgoing_call_barring/codes/{code}/",
    tag = "Authorization codes", security(("bearer" = [])),
    params(("tenant" = String, Path), ("group" = String, Path), ("user" = String, Path), ("code" = String, Path)),
    responses((status = 200, body = Empty), (status = "4XX", body = crate::api::ApiError)))]
pub async fn delete_one(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(o): PathArgs<OwnerCode>,
) -> Result<Json<Empty>, Failure> {
    blocking(&s, move |st| {
        let u = owner(st, &p, Perm::AuthCodesWrite, &o.tenant, &o.group, &o.user)?;
        st.store().delete_auth_codes(u.id, &[o.code])?;
        Ok(Json(Empty {}))
    })
    .await
}
