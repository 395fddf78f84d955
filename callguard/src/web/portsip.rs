//! PortSIP "Security" seed: allowed country codes, disallowed codes (dialed prefixes) and
//! blacklisted numbers, with their CSV exports. Reading needs `security.read`, writing
//! `security.write`. Paths as the seed's server (`…/api`).

use axum::{
    Json,
    extract::State as AxState,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Caller, JsonBody, PathArgs, QueryArgs, blocking, query};
use crate::api::{
    portsip::{CodeChange, Countries, Created, Empty, NewCode, NewNumber, NumberChange, Page},
    query::ListQuery,
};
use crate::{
    numbers::{BlacklistedNumber, DisallowedCode},
    web::{Failure, Shared},
};

/// The routes.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list_countries, set_countries))
        .routes(routes!(list_codes, create_code))
        .routes(routes!(export_codes))
        .routes(routes!(show_code, update_code))
        .routes(routes!(destroy_code))
        .routes(routes!(list_numbers, create_number))
        .routes(routes!(export_numbers))
        .routes(routes!(show_number, update_number))
        .routes(routes!(destroy_number))
}

/// List allowed region or country codes.
#[utoipa::path(get, path = "/api/allowed_country_codes", tag = "Security", security(("bearer" = [])),
    responses((status = 200, body = Countries), (status = "4XX", body = crate::api::ApiError)))]
pub async fn list_countries(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
) -> Result<Json<Countries>, Failure> {
    blocking(&s, move |st| Ok(Json(Countries { items: st.countries(&p)? }))).await
}

/// Update (replace) allowed region or country codes. Each code is kept as written; `49` and `+49` are one code.
#[utoipa::path(post, path = "/api/allowed_country_codes", tag = "Security", security(("bearer" = [])),
    request_body = Countries, responses((status = 200, body = Empty), (status = "4XX", body = crate::api::ApiError)))]
pub async fn set_countries(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<Countries>,
) -> Result<Json<Empty>, Failure> {
    blocking(&s, move |st| {
        st.set_countries(&p, &req.items)?;
        Ok(Json(Empty {}))
    })
    .await
}

fn parse_id(id: &str) -> Result<u32, Failure> {
    id.trim().parse::<u32>().map_err(|_| Failure::bad("id", format!("Invalid entry ID supplied: `{id}`")))
}

/// The id of an update: the path's, which a body `id` may repeat but not change.
fn update_id(path: &str, body: Option<&str>) -> Result<u32, Failure> {
    let n = parse_id(path)?;
    if body.is_some_and(|b| b.trim() != n.to_string()) {
        return Err(Failure::bad("id", "is immutable (it must equal the id in the path)"));
    }
    Ok(n)
}

const CODE_FIELDS: &[&str] = &["id", "number_prefix", "description"];

/// List block codes.
#[utoipa::path(get, path = "/api/disallowed_codes", tag = "Security", security(("bearer" = [])),
    params(ListQuery), responses((status = 200, body = Page<DisallowedCode>), (status = "4XX", body = crate::api::ApiError)))]
pub async fn list_codes(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    QueryArgs(q): QueryArgs<ListQuery>,
) -> Result<Json<serde_json::Value>, Failure> {
    blocking(&s, move |st| {
        let (count, items) = query::portsip(&st.disallowed_codes(&p)?, &q, CODE_FIELDS)?;
        Ok(Json(serde_json::json!({ "count": count, "items": items })))
    })
    .await
}

/// Create a block code.
#[utoipa::path(post, path = "/api/disallowed_codes", tag = "Security", security(("bearer" = [])),
    request_body = NewCode, responses((status = 201, body = Created), (status = "4XX", body = crate::api::ApiError)))]
pub async fn create_code(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<NewCode>,
) -> Result<(StatusCode, Json<Created>), Failure> {
    blocking(&s, move |st| {
        let c =
            st.add_disallowed_code(&p, &req.number_prefix, req.description.as_deref().unwrap_or_default())?;
        Ok((StatusCode::CREATED, Json(Created { id: c.id })))
    })
    .await
}

/// Retrieve details of blocked code by its unique ID.
#[utoipa::path(get, path = "/api/disallowed_codes/{id}", tag = "Security", security(("bearer" = [])),
    params(("id" = String, Path, description = "The unique ID of the code.")),
    responses((status = 200, body = DisallowedCode), (status = "4XX", body = crate::api::ApiError)))]
pub async fn show_code(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<Json<DisallowedCode>, Failure> {
    let id = parse_id(&id)?;
    blocking(&s, move |st| Ok(Json(st.disallowed_code(&p, id)?))).await
}

/// Update a blocked code by its ID (absent fields are kept).
#[utoipa::path(post, path = "/api/disallowed_codes/{id}", tag = "Security", security(("bearer" = [])),
    params(("id" = String, Path, description = "The unique ID of the code.")), request_body = CodeChange,
    responses((status = 200, body = DisallowedCode), (status = "4XX", body = crate::api::ApiError)))]
pub async fn update_code(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
    JsonBody(req): JsonBody<CodeChange>,
) -> Result<Json<DisallowedCode>, Failure> {
    let n = update_id(&id, req.id.as_deref())?;
    blocking(&s, move |st| {
        Ok(Json(st.update_disallowed_code(
            &p,
            n,
            req.number_prefix.as_deref(),
            req.description.as_deref(),
        )?))
    })
    .await
}

/// Destroy a disallowed code.
#[utoipa::path(post, path = "/api/disallowed_codes/{id}/destroy", tag = "Security", security(("bearer" = [])),
    params(("id" = String, Path, description = "The unique ID of the code.")),
    responses((status = 204, description = "No Content"), (status = 400, description = "Invalid entry ID supplied", body = crate::api::ApiError),
        (status = 404, description = "Not found", body = crate::api::ApiError),
        (status = "4XX", description = "No valid token (401) or no right (403)", body = crate::api::ApiError)))]
pub async fn destroy_code(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<StatusCode, Failure> {
    let n = parse_id(&id)?;
    blocking(&s, move |st| {
        st.delete_disallowed_code(&p, n)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

fn attachment(name: &str, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        body,
    )
        .into_response()
}

/// Free text as a spreadsheet will not run it: a cell starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return is a formula to Excel and LibreOffice, so it gets a leading `'` (OWASP's advice
/// on CSV injection). Only descriptions go through this: numbers and dates are validated and
/// must survive a round trip unchanged.
fn spreadsheet_safe(text: String) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text }
}

fn csv_bytes(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> Result<Vec<u8>, Failure> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| Failure::internal(&e.into());
    w.write_record(header).map_err(fail)?;
    for r in rows {
        w.write_record(&r).map_err(fail)?;
    }
    w.into_inner().map_err(|e| Failure::internal(&anyhow::anyhow!("{e}")))
}

/// Export disallowed codes as CSV (`number_prefix,description`).
#[utoipa::path(get, path = "/api/disallowed_codes/export", tag = "Security", security(("bearer" = [])),
    responses((status = 200, description = "`attachment; filename=\"disallowed_codes.csv\"`", content_type = "application/octet-stream", body = Vec<u8>,
        headers(("Content-Disposition" = String))), (status = "4XX", body = crate::api::ApiError)))]
pub async fn export_codes(AxState(s): AxState<Shared>, Caller(p): Caller) -> Result<Response, Failure> {
    let codes = blocking(&s, move |st| Ok(st.disallowed_codes(&p)?)).await?;
    let body = csv_bytes(
        &["number_prefix", "description"],
        codes.into_iter().map(|c| vec![c.number_prefix, spreadsheet_safe(c.description)]),
    )?;
    Ok(attachment("disallowed_codes.csv", body))
}

const NUMBER_FIELDS: &[&str] = &["id", "number", "expire_at", "created_at", "updated_at", "description"];

/// List blacklisted numbers.
#[utoipa::path(get, path = "/api/blacklisted_numbers", tag = "Security", security(("bearer" = [])),
    params(ListQuery), responses((status = 200, body = Page<BlacklistedNumber>), (status = "4XX", body = crate::api::ApiError)))]
pub async fn list_numbers(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    QueryArgs(q): QueryArgs<ListQuery>,
) -> Result<Json<serde_json::Value>, Failure> {
    blocking(&s, move |st| {
        let (count, items) = query::portsip(&st.blacklisted_numbers(&p)?, &q, NUMBER_FIELDS)?;
        Ok(Json(serde_json::json!({ "count": count, "items": items })))
    })
    .await
}

/// Create a new blacklisted number.
#[utoipa::path(post, path = "/api/blacklisted_numbers", tag = "Security", security(("bearer" = [])),
    request_body = NewNumber, responses((status = 201, body = Created), (status = "4XX", body = crate::api::ApiError)))]
pub async fn create_number(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<NewNumber>,
) -> Result<(StatusCode, Json<Created>), Failure> {
    blocking(&s, move |st| {
        let n = st.add_blacklisted_number(
            &p,
            &req.number,
            req.expire_at,
            req.description.as_deref().unwrap_or_default(),
        )?;
        Ok((StatusCode::CREATED, Json(Created { id: n.id })))
    })
    .await
}

/// Show a blacklisted number.
#[utoipa::path(get, path = "/api/blacklisted_numbers/{id}", tag = "Security", security(("bearer" = [])),
    params(("id" = String, Path, description = "The unique ID of the blacklisted number.")),
    responses((status = 200, body = BlacklistedNumber), (status = "4XX", body = crate::api::ApiError)))]
pub async fn show_number(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<Json<BlacklistedNumber>, Failure> {
    let n = parse_id(&id)?;
    blocking(&s, move |st| Ok(Json(st.blacklisted_number(&p, n)?))).await
}

/// Update a blacklisted number (absent fields are kept).
#[utoipa::path(post, path = "/api/blacklisted_numbers/{id}", tag = "Security", security(("bearer" = [])),
    params(("id" = String, Path, description = "The unique ID of the blacklisted number.")), request_body = NumberChange,
    responses((status = 200, body = BlacklistedNumber), (status = "4XX", body = crate::api::ApiError)))]
pub async fn update_number(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
    JsonBody(req): JsonBody<NumberChange>,
) -> Result<Json<BlacklistedNumber>, Failure> {
    let n = update_id(&id, req.id.as_deref())?;
    blocking(&s, move |st| {
        let x = st.update_blacklisted_number(
            &p,
            n,
            req.number.as_deref(),
            req.expire_at,
            req.description.as_deref(),
        )?;
        Ok(Json(x))
    })
    .await
}

/// Destroy a blacklisted number.
#[utoipa::path(post, path = "/api/blacklisted_numbers/{id}/destroy", tag = "Security", security(("bearer" = [])),
    params(("id" = String, Path, description = "The unique ID of the blacklisted number.")),
    responses((status = 204, description = "No Content"), (status = 400, description = "Invalid entry ID supplied", body = crate::api::ApiError),
        (status = 404, description = "Not found", body = crate::api::ApiError),
        (status = "4XX", description = "No valid token (401) or no right (403)", body = crate::api::ApiError)))]
pub async fn destroy_number(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<StatusCode, Failure> {
    let n = parse_id(&id)?;
    blocking(&s, move |st| {
        st.delete_blacklisted_number(&p, n)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Export blacklisted numbers as CSV (`number,expire_at,description,created_at,updated_at`).
#[utoipa::path(get, path = "/api/blacklisted_numbers/export", tag = "Security", security(("bearer" = [])),
    responses((status = 200, description = "`attachment; filename=\"blacklisted_numbers.csv\"`", content_type = "application/octet-stream", body = Vec<u8>,
        headers(("Content-Disposition" = String))), (status = "4XX", body = crate::api::ApiError)))]
pub async fn export_numbers(AxState(s): AxState<Shared>, Caller(p): Caller) -> Result<Response, Failure> {
    let numbers = blocking(&s, move |st| Ok(st.blacklisted_numbers(&p)?)).await?;
    let t = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let body = csv_bytes(
        &["number", "expire_at", "description", "created_at", "updated_at"],
        numbers.into_iter().map(|n| {
            vec![
                n.number,
                n.expire_at.map(t).unwrap_or_default(),
                spreadsheet_safe(n.description),
                t(n.created_at),
                t(n.updated_at),
            ]
        }),
    )?;
    Ok(attachment("blacklisted_numbers.csv", body))
}
