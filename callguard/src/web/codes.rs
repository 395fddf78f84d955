//! Outgoing-call-barring authorization codes of one user (the authorization-code seed):
//! `/api/v1/tenants/{tenant}/groups/{group}/users/{user}/services/outgoing_call_barring/codes/`.
//! Reading needs `authcodes.read` ("minimum End User": the user itself), writing
//! `authcodes.write` ("minimum Group Admin"), each within the role's reach. Paths work with
//! and without the trailing slash.

use axum::{Json, extract::State as AxState, http::StatusCode, routing::get};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Caller, JsonBody, PathArgs, blocking};
use crate::api::{
    codes::{AuthCodes, CodeRefs, CreateCodes, Owner, OwnerCode},
    portsip::Empty,
};
use crate::{
    accounts::AuthCode,
    web::{Failure, Shared},
};

const BASE: &str =
    "/api/v1/tenants/{tenant}/groups/{group}/users/{user}/services/outgoing_call_barring/codes";

/// The routes.
/// The documented paths end in `/`, as the seed's; each also answers without it (an alias the
/// OpenAPI document does not repeat).
pub fn routes() -> OpenApiRouter<Shared> {
    let one = format!("{BASE}/{{code}}");
    OpenApiRouter::new()
        .routes(routes!(list, create, delete_many))
        .routes(routes!(show, delete_one))
        .route(BASE, get(list).post(create).delete(delete_many))
        .route(&one, get(show).delete(delete_one))
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
        Ok(Json(AuthCodes { auth_codes: st.auth_codes(&p, &o.tenant, &o.group, &o.user)? }))
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
    blocking(&s, move |st| {
        st.add_auth_codes(&p, (&o.tenant, &o.group, &o.user), &codes, field)?;
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
        let c = st.auth_codes(&p, &o.tenant, &o.group, &o.user)?.into_iter().find(|c| c.code == o.code);
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
    blocking(&s, move |st| {
        let codes: Vec<String> = req.auth_codes.into_iter().map(|c| c.code).collect();
        st.delete_auth_codes(&p, (&o.tenant, &o.group, &o.user), &codes, "authCodes")?;
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
        st.delete_auth_codes(&p, (&o.tenant, &o.group, &o.user), &[o.code], "")?;
        Ok(Json(Empty {}))
    })
    .await
}
