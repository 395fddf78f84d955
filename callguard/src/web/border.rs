//! Border rules (the `borderrules` seed) at `/rest/v1/master/borderrules`: create, list
//! (`filter`, `mask`, `offset`, `limit`, `order`, `flat`), get (`mask`, `flat`), PATCH (id
//! immutable), DELETE and the custom `LOOKUP` method. Errors use this seed's own shape,
//! `{"error_code": 1000 + status, "error_message": …, "field": …}` (its LOOKUP failure is
//! `{"error_code":1404,"error_message":"Lookup failed"}`). Reading needs `security.read`,
//! writing `security.write`.

use axum::{
    Json,
    extract::{Request, State as AxState},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Caller, JsonBody, PathArgs, QueryArgs, blocking, query};
use crate::api::border::{BorderError, BorderQuery, OneQuery};
use crate::{
    accounts::Perm,
    border::{BorderRule, BorderRuleInput},
    web::{Failure, Shared},
};

/// The collection's path.
pub const PATH: &str = "/rest/v1/master/borderrules";

/// The routes. `LOOKUP` is not a method the router knows: [`lookup_layer`] answers it.
pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .route_layer(axum::middleware::from_fn(seed_errors))
}

/// Rewrites the generic error body of this seed's routes into its own shape.
async fn seed_errors(req: Request, next: Next) -> Response {
    super::reshape_error(next.run(req).await, |status, e| {
        serde_json::json!(BorderError { error_code: 1000 + status, error_message: e.error, field: e.field })
    })
    .await
}

/// The entity's fields, dotted, as `filter`, `mask` and `order` accept them.
pub const FIELDS: &[&str] = &[
    "id",
    "enabled",
    "priority",
    "site",
    "service",
    "domain",
    "username",
    "useragent",
    "remoteipmask",
    "action",
    "opts.title",
    "opts.comment",
    "ext.ct",
    "ext.lwt",
];

/// Create a rule. Absent fields take their defaults (`enabled` 1, `priority` 0, `site` `*`,
/// `service` `sip`, empty patterns and mask: any, `action` `allow`); the id is a new UUID
/// unless given.
#[utoipa::path(post, path = "/rest/v1/master/borderrules", tag = "Border rules", security(("bearer" = [])),
    request_body = BorderRuleInput, responses((status = 200, body = BorderRule), (status = "4XX", body = BorderError)))]
pub async fn create(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    JsonBody(req): JsonBody<BorderRuleInput>,
) -> Result<Json<BorderRule>, Failure> {
    blocking(&s, move |st| Ok(Json(st.add_border_rule(&p, req)?))).await
}

/// Get the list of rules (by priority, then id, unless `order` says otherwise). Without `mask`,
/// rules show every field but `opts.comment`, as the seed's example does.
#[utoipa::path(get, path = "/rest/v1/master/borderrules", tag = "Border rules", security(("bearer" = [])),
    params(BorderQuery), responses((status = 200, body = Vec<BorderRule>), (status = "4XX", body = BorderError)))]
pub async fn list(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    QueryArgs(q): QueryArgs<BorderQuery>,
) -> Result<Json<Vec<serde_json::Value>>, Failure> {
    let mut q = q;
    if q.mask.as_deref().is_none_or(|m| m.trim().is_empty()) {
        let shown: Vec<&str> = FIELDS.iter().copied().filter(|f| *f != "opts.comment").collect();
        q.mask = Some(shown.join(","));
    }
    blocking(&s, move |st| Ok(Json(query::border(&st.border_rules(&p)?, &q, FIELDS)?))).await
}

/// Obtain one rule.
#[utoipa::path(get, path = "/rest/v1/master/borderrules/{id}", tag = "Border rules", security(("bearer" = [])),
    params(("id" = String, Path), OneQuery), responses((status = 200, body = BorderRule), (status = "4XX", body = BorderError)))]
pub async fn show(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
    QueryArgs(q): QueryArgs<OneQuery>,
) -> Result<Json<serde_json::Value>, Failure> {
    let mask = query::parse_mask(q.mask.as_deref(), FIELDS)?;
    blocking(&s, move |st| {
        let r = serde_json::to_value(st.border_rule(&p, &id)?).map_err(|e| Failure::internal(&e.into()))?;
        Ok(Json(query::shape(r, mask.as_deref(), q.flat.unwrap_or(false))))
    })
    .await
}

/// Change a rule: the fields given replace the stored ones; `id` may not change.
#[utoipa::path(patch, path = "/rest/v1/master/borderrules/{id}", tag = "Border rules", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = BorderRuleInput,
    responses((status = 200, body = BorderRule), (status = "4XX", body = BorderError)))]
pub async fn update(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
    JsonBody(req): JsonBody<BorderRuleInput>,
) -> Result<Json<BorderRule>, Failure> {
    blocking(&s, move |st| Ok(Json(st.update_border_rule(&p, &id, req)?))).await
}

/// Delete a rule.
#[utoipa::path(delete, path = "/rest/v1/master/borderrules/{id}", tag = "Border rules", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 204, description = "No Content"), (status = "4XX", body = BorderError)))]
pub async fn remove(
    AxState(s): AxState<Shared>,
    Caller(p): Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<StatusCode, Failure> {
    blocking(&s, move |st| {
        st.delete_border_rule(&p, &id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

fn lookup_failed() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(BorderError { error_code: 1404, error_message: "Lookup failed".into(), field: None }),
    )
        .into_response()
}

/// Answers `LOOKUP /rest/v1/master/borderrules` with a JSON string body (the id): `200 [id]`
/// or `404 {"error_code":1404,"error_message":"Lookup failed"}`. A layer, because the router
/// only routes standard methods. (OpenAPI 3.1 has no place for custom methods; the API
/// reference documents it.)
pub async fn lookup_layer(AxState(s): AxState<Shared>, req: Request, next: Next) -> Response {
    if req.method().as_str() != "LOOKUP" {
        return next.run(req).await;
    }
    let path = req.uri().path().trim_end_matches('/');
    if path != PATH {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            Json(BorderError {
                error_code: 1405,
                error_message: format!("LOOKUP is only defined on {PATH}"),
                field: None,
            }),
        )
            .into_response();
    }
    let (mut parts, body) = req.into_parts();
    let caller =
        match <Caller as axum::extract::FromRequestParts<()>>::from_request_parts(&mut parts, &()).await {
            Ok(Caller(p)) => p,
            Err(f) => return seed_errors_now(&f),
        };
    if let Err(e) = caller.need(Perm::SecurityRead) {
        return seed_errors_now(&e.into());
    }
    let bytes = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => b,
        Err(_) => return seed_errors_now(&Failure::bad("body", "larger than 64 KiB")),
    };
    let key = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::String(k)) => k,
        Ok(serde_json::Value::Object(m)) => match m.get("id") {
            Some(serde_json::Value::String(k)) => k.clone(),
            _ => {
                return seed_errors_now(&Failure::bad(
                    "id",
                    "a JSON string (the id) or {\"id\": …} is required",
                ));
            }
        },
        _ => return seed_errors_now(&Failure::bad("body", "a JSON string (the id) is required")),
    };
    match blocking(&s, move |st| {
        Ok(st.border_rules(&caller)?.into_iter().any(|r| r.id == key).then_some(key))
    })
    .await
    {
        Ok(Some(id)) => Json(vec![id]).into_response(),
        Ok(None) => lookup_failed(),
        Err(f) => seed_errors_now(&f),
    }
}

fn seed_errors_now(f: &Failure) -> Response {
    let status = f.status();
    let e = f.body().clone();
    (status, Json(BorderError { error_code: 1000 + status.as_u16(), error_message: e.error, field: e.field }))
        .into_response()
}
